// Fused forward mode of a dense layer in one dispatch: primal and tangent of
//     C = act(A B + bias),   dC = act'(.) * (dA B + A dB + dbias)
// with A [M,K], B [K,N] row-major (needs K % 4 == 0, N % 4 == 0). The A and B tiles loaded for
// the primal are reused for the tangent, so the JVP reads each operand once.
// Flags: 1 bias (with dbias), 2 ReLU, 8 dA present (else dA = 0, e.g. for the input layer).

const TM: u32 = 8u;    // rows per invocation
const TN4: u32 = 4u;   // vec4 columns per invocation
const WG: u32 = 8u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> da: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> db: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> dbias: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dc: array<vec4<f32>>;

@compute @workgroup_size(WG, WG)
fn matmul_jvp_nn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * TM;
    let col4_0 = gid.x * TN4;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let has_da = (p.flags & 8u) != 0u;
    var acc: array<vec4<f32>, TM * TN4>;
    var dacc: array<vec4<f32>, TM * TN4>;
    var bt: array<vec4<f32>, 4u * TN4>;
    var dbt: array<vec4<f32>, 4u * TN4>;
    for (var kk = 0u; kk < k4; kk++) {
        for (var q = 0u; q < 4u; q++) {
            let base = (kk * 4u + q) * n4;
            for (var j = 0u; j < TN4; j++) {
                let idx = base + min(col4_0 + j, n4 - 1u);
                bt[q * TN4 + j] = b[idx];
                dbt[q * TN4 + j] = db[idx];
            }
        }
        for (var r = 0u; r < TM; r++) {
            let ai = min(row0 + r, p.m - 1u) * k4 + kk;
            let av = a[ai];
            for (var j = 0u; j < TN4; j++) {
                var s = acc[r * TN4 + j];
                var t = dacc[r * TN4 + j];
                s = fma(vec4<f32>(av.x), bt[j], s);
                t = fma(vec4<f32>(av.x), dbt[j], t);
                s = fma(vec4<f32>(av.y), bt[TN4 + j], s);
                t = fma(vec4<f32>(av.y), dbt[TN4 + j], t);
                s = fma(vec4<f32>(av.z), bt[2u * TN4 + j], s);
                t = fma(vec4<f32>(av.z), dbt[2u * TN4 + j], t);
                s = fma(vec4<f32>(av.w), bt[3u * TN4 + j], s);
                t = fma(vec4<f32>(av.w), dbt[3u * TN4 + j], t);
                acc[r * TN4 + j] = s;
                dacc[r * TN4 + j] = t;
            }
            if (has_da) {
                let dav = da[ai];
                for (var j = 0u; j < TN4; j++) {
                    var t = dacc[r * TN4 + j];
                    t = fma(vec4<f32>(dav.x), bt[j], t);
                    t = fma(vec4<f32>(dav.y), bt[TN4 + j], t);
                    t = fma(vec4<f32>(dav.z), bt[2u * TN4 + j], t);
                    t = fma(vec4<f32>(dav.w), bt[3u * TN4 + j], t);
                    dacc[r * TN4 + j] = t;
                }
            }
        }
    }
    for (var r = 0u; r < TM; r++) {
        let row = row0 + r;
        if (row >= p.m) { break; }
        for (var j = 0u; j < TN4; j++) {
            let col4 = col4_0 + j;
            if (col4 >= n4) { break; }
            var v = acc[r * TN4 + j];
            var t = dacc[r * TN4 + j];
            if ((p.flags & 1u) != 0u) {
                v += bias[col4];
                t += dbias[col4];
            }
            if ((p.flags & 2u) != 0u) {
                t = select(vec4<f32>(0.0), t, v > vec4<f32>(0.0));
                v = max(v, vec4<f32>(0.0));
            }
            c[row * n4 + col4] = v;
            dc[row * n4 + col4] = t;
        }
    }
}
