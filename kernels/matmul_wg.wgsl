// Matrix product for hardware GPUs, any shape and layout, staged through workgroup memory:
// C = epilogue(alpha * op(A) op(B)) with op(A)[i,k] = a[i * sa_row + k * sa_col] and
// op(B)[k,j] = b[k * sb_row + j * sb_col] (AB, A^T B and A B^T from one entry point).
//
// A workgroup of 16 x 16 invocations computes a BM x BN block of C (BM = 16 TM, BN = 16 TN).
// For each slice of BK = 16 along k, the workgroup first copies the A block (BM x BK) and the
// B block (BK x BN) into workgroup memory (`stage_a`, `stage_b`: scalar loads in family
// matmul_wg, kernels/include/matmul_wg_scalar.wgsl; one vec4 per load where the operands'
// contiguous sides are multiples of 4, family matmul_wg_vec4, matmul_wg_vec4.wgsl); outside
// the matrices it stores zeros. The blocks are held as vec4 along rows of C (As) and columns
// of C (Bs). Then invocation (tx, ty) accumulates its TM x TN outputs, the rows
// 4 (ty + 16 i) + 0..3 and columns 4 (tx + 16 j) + 0..3, from registers: per k, TM / 4 + TN / 4
// vec4 reads of workgroup memory for TM TN FMAs. The invocations of a block row read one As
// vec4 (a broadcast) and consecutive Bs vec4s (no bank conflicts).
//
// Epilogue flags as in matmul.wgsl: FLAG_BIAS, FLAG_RELU, FLAG_ACCUMULATE (+ beta * cin),
// FLAG_MASK (zero where cin <= 0), FLAG_COL_SUMS (also write the column sums of op(B), the sum
// over k of op(B)[k, col], to c2, by the workgroups of the first block row).
// FLAG_ROWS_ON_LANES (the row/column layout of the register-tiled kernels) does not apply here.

// Outputs per invocation along rows and columns of C, in vec4s: the tunables (1 or 2), which
// the host specialises; the constants derived from them are declared without a type.
const TM4: u32 = 1u;
const TN4: u32 = 1u;
const TM = 4u * TM4;
const TN = 4u * TN4;
const BK = 16u;
const BM = 16u * TM;
const BN = 16u * TN;
// The blocks' sides in vec4s.
const BM4 = BM / 4u;
const BN4 = BN / 4u;

// Bindings 1 (a) and 2 (b) are declared by the staging include.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> cin: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> c2: array<f32>;

// As[kk * BM4 + i / 4][i % 4] = op(A)[row0 + i, k0 + kk];
// Bs[kk * BN4 + j / 4][j % 4] = op(B)[k0 + kk, col0 + j].
var<workgroup> As: array<vec4<f32>, BK * BM4>;
var<workgroup> Bs: array<vec4<f32>, BK * BN4>;

@compute @workgroup_size(16, 16)
fn matmul_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;
    let sums = (p.flags & FLAG_COL_SUMS) != 0u && wid.y == 0u;
    // acc[(4 i + q) * TN4 + j]: row 4 (ty + 16 i) + q, columns 4 (tx + 16 j) + 0..3.
    var acc: array<vec4<f32>, TM * TN4>;
    var colsum: array<vec4<f32>, TN4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        stage_a(row0, k0, t);
        stage_b(col0, k0, t);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<vec4<f32>, TM4>;
            var bv: array<vec4<f32>, TN4>;
            for (var i = 0u; i < TM4; i++) { av[i] = As[kk * BM4 + lid.y + 16u * i]; }
            for (var j = 0u; j < TN4; j++) { bv[j] = Bs[kk * BN4 + lid.x + 16u * j]; }
            for (var i = 0u; i < TM4; i++) {
                for (var q = 0u; q < 4u; q++) {
                    let x = vec4<f32>(av[i][q]);
                    for (var j = 0u; j < TN4; j++) {
                        let o = (4u * i + q) * TN4 + j;
                        acc[o] = fma(x, bv[j], acc[o]);
                    }
                }
            }
            if (sums && lid.y == 0u) {
                for (var j = 0u; j < TN4; j++) { colsum[j] += bv[j]; }
            }
        }
        workgroupBarrier();
    }
    if (sums && lid.y == 0u) {
        for (var j = 0u; j < TN4; j++) {
            for (var r = 0u; r < 4u; r++) {
                let col = col0 + 4u * (lid.x + 16u * j) + r;
                if (col < p.n) { c2[col] = colsum[j][r]; }
            }
        }
    }
    for (var i = 0u; i < TM4; i++) {
        for (var q = 0u; q < 4u; q++) {
            let row = row0 + 4u * (lid.y + 16u * i) + q;
            if (row >= p.m) { return; }
            for (var j = 0u; j < TN4; j++) {
                for (var r = 0u; r < 4u; r++) {
                    let col = col0 + 4u * (lid.x + 16u * j) + r;
                    if (col >= p.n) { break; }
                    var v = p.alpha * acc[(4u * i + q) * TN4 + j][r];
                    if ((p.flags & FLAG_BIAS) != 0u) { v += bias[col]; }
                    if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += p.beta * cin[row * p.n + col]; }
                    if ((p.flags & FLAG_MASK) != 0u) { v = select(0.0, v, cin[row * p.n + col] > 0.0); }
                    if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
                    c[row * p.n + col] = v;
                }
            }
        }
    }
}
