// Fused forward mode of a dense layer for any shape (the fallback of matmul_jvp.wgsl, which
// needs K and N multiples of 4): primal and tangent of
//     C = act(A B + bias),   dC = act'(.) * (dA B + A dB + dbias)
// with A [M,K], B [K,N] row-major, in one dispatch. Each invocation computes a 4 x 4 tile of C
// and of dC with scalar loads. Flags: FLAG_BIAS (with dbias), FLAG_RELU; HAS_DA as in
// include/matmul_jvp_tile.wgsl.

const HAS_DA: u32 = 1u;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> da: array<f32>;
@group(0) @binding(5) var<storage, read> db: array<f32>;
@group(0) @binding(6) var<storage, read> dbias: array<f32>;
@group(0) @binding(7) var<storage, read_write> c: array<f32>;
@group(0) @binding(8) var<storage, read_write> dc: array<f32>;

@compute @workgroup_size(8, 8)
fn matmul_jvp_general(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    var acc: array<vec4<f32>, 4>;
    var dacc: array<vec4<f32>, 4>;
    var rows: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        rows[i] = min(row0 + i, p.m - 1u) * p.k;
    }
    let c1 = min(col0 + 1u, p.n - 1u);
    let c2 = min(col0 + 2u, p.n - 1u);
    let c3 = min(col0 + 3u, p.n - 1u);
    for (var k = 0u; k < p.k; k++) {
        let kb = k * p.n;
        let bv = vec4<f32>(b[kb + col0], b[kb + c1], b[kb + c2], b[kb + c3]);
        let dbv = vec4<f32>(db[kb + col0], db[kb + c1], db[kb + c2], db[kb + c3]);
        for (var i = 0u; i < 4u; i++) {
            let av = a[rows[i] + k];
            acc[i] = fma(vec4<f32>(av), bv, acc[i]);
            dacc[i] = fma(vec4<f32>(av), dbv, dacc[i]);
            if (HAS_DA != 0u) {
                dacc[i] = fma(vec4<f32>(da[rows[i] + k]), bv, dacc[i]);
            }
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if (col >= p.n) { break; }
            var v = acc[i][j];
            var t = dacc[i][j];
            if ((p.flags & FLAG_BIAS) != 0u) {
                v += bias[col];
                t += dbias[col];
            }
            if ((p.flags & FLAG_RELU) != 0u) {
                t = select(0.0, t, v > 0.0);
                v = max(v, 0.0);
            }
            c[row * p.n + col] = v;
            dc[row * p.n + col] = t;
        }
    }
}
