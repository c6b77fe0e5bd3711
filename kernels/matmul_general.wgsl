// Matrix product for any shape and layout: C = epilogue(alpha * op(A) op(B)) with op(A)[i,k] =
// a[i * sa_row + k * sa_col] and op(B)[k,j] = b[k * sb_row + j * sb_col], so one entry point
// serves AB, A^T B and A B^T. Each invocation computes a 4 x 4 tile with scalar loads.
// Epilogue flags as in matmul.wgsl: FLAG_BIAS, FLAG_RELU, FLAG_ACCUMULATE (+ beta * cin),
// FLAG_MASK (zero where cin <= 0), FLAG_COL_SUMS (also write the column sums of op(B), the sum
// over k of op(B)[k, col], to c2), FLAG_ROWS_ON_LANES (consecutive invocations along x take
// consecutive row tiles instead of column tiles, as in matmul.wgsl: the host picks the layout
// that leaves fewer SIMD lanes idle).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> cin: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> c2: array<f32>;

@compute @workgroup_size(8, 8)
fn matmul_general(@builtin(global_invocation_id) gid: vec3<u32>) {
    var row0 = gid.y * 4u;
    var col0 = gid.x * 4u;
    if ((p.flags & FLAG_ROWS_ON_LANES) != 0u) {
        row0 = gid.x * 4u;
        col0 = gid.y * 4u;
    }
    if (row0 >= p.m || col0 >= p.n) { return; }
    let sums = (p.flags & FLAG_COL_SUMS) != 0u && row0 == 0u;
    var acc: array<f32, 16>;
    var colsum: array<f32, 4>;
    for (var k = 0u; k < p.k; k++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            av[i] = a[min(row0 + i, p.m - 1u) * p.sa_row + k * p.sa_col];
            bv[i] = b[k * p.sb_row + min(col0 + i, p.n - 1u) * p.sb_col];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
            }
        }
        if (sums) {
            for (var j = 0u; j < 4u; j++) {
                colsum[j] += bv[j];
            }
        }
    }
    if (sums) {
        for (var j = 0u; j < 4u; j++) {
            if (col0 + j < p.n) { c2[col0 + j] = colsum[j]; }
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if (col >= p.n) { break; }
            var v = p.alpha * acc[i * 4u + j];
            if ((p.flags & FLAG_BIAS) != 0u) { v += bias[col]; }
            if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += p.beta * cin[row * p.n + col]; }
            if ((p.flags & FLAG_MASK) != 0u) { v = select(0.0, v, cin[row * p.n + col] > 0.0); }
            if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
            c[row * p.n + col] = v;
        }
    }
}
