// Register-tiled matrix product C = epilogue(alpha * op(A) op(B)), row-major, vec4 loads.
// Each invocation owns a TM x (4*TN4) tile of C held in registers; no workgroup memory
// (fastest on CPU-emulated drivers; hardware GPUs get smaller tiles via specialisation).
// Epilogue: + bias[col] (flag 1), + beta * cin (flag 4), ReLU (flag 2).
// Entry points:  matmul_nn: A [M,K], B [K,N]    needs K % 4 == 0, N % 4 == 0
//                matmul_tn: A [K,M], B [K,N]    needs M % 4 == 0, N % 4 == 0   (C = A^T B)
//                matmul_nt: A [M,K], B [N,K]    needs K % 4 == 0, N % 4 == 0   (C = A B^T)

const TM: u32 = 16u;   // rows of C per invocation (multiple of 4)
const TN4: u32 = 4u;   // vec4 columns of C per invocation
const WG: u32 = 8u;    // workgroup is WG x WG invocations

struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cin: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> c: array<vec4<f32>>;

fn store_tile(row0: u32, col4_0: u32, acc: ptr<function, array<vec4<f32>, TM * TN4>>) {
    let n4 = p.n / 4u;
    for (var r = 0u; r < TM; r++) {
        let row = row0 + r;
        if (row >= p.m) { break; }
        for (var j = 0u; j < TN4; j++) {
            let col4 = col4_0 + j;
            if (col4 >= n4) { break; }
            var v = p.alpha * (*acc)[r * TN4 + j];
            if ((p.flags & 1u) != 0u) { v += bias[col4]; }
            if ((p.flags & 4u) != 0u) { v += p.beta * cin[row * n4 + col4]; }
            if ((p.flags & 2u) != 0u) { v = max(v, vec4<f32>(0.0)); }
            c[row * n4 + col4] = v;
        }
    }
}

@compute @workgroup_size(WG, WG)
fn matmul_nn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * TM;
    let col4_0 = gid.x * TN4;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, TM * TN4>;
    var bt: array<vec4<f32>, 4u * TN4>;
    for (var kk = 0u; kk < k4; kk++) {
        for (var q = 0u; q < 4u; q++) {
            let base = (kk * 4u + q) * n4;
            for (var j = 0u; j < TN4; j++) {
                bt[q * TN4 + j] = b[base + min(col4_0 + j, n4 - 1u)];
            }
        }
        for (var r = 0u; r < TM; r++) {
            let av = a[min(row0 + r, p.m - 1u) * k4 + kk];
            for (var j = 0u; j < TN4; j++) {
                var s = acc[r * TN4 + j];
                s = fma(vec4<f32>(av.x), bt[j], s);
                s = fma(vec4<f32>(av.y), bt[TN4 + j], s);
                s = fma(vec4<f32>(av.z), bt[2u * TN4 + j], s);
                s = fma(vec4<f32>(av.w), bt[3u * TN4 + j], s);
                acc[r * TN4 + j] = s;
            }
        }
    }
    store_tile(row0, col4_0, &acc);
}

@compute @workgroup_size(WG, WG)
fn matmul_tn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * TM;
    let col4_0 = gid.x * TN4;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let n4 = p.n / 4u;
    let m4 = p.m / 4u;
    var acc: array<vec4<f32>, TM * TN4>;
    var bt: array<vec4<f32>, TN4>;
    for (var k = 0u; k < p.k; k++) {
        for (var j = 0u; j < TN4; j++) {
            bt[j] = b[k * n4 + min(col4_0 + j, n4 - 1u)];
        }
        for (var r4 = 0u; r4 < TM / 4u; r4++) {
            let av = a[k * m4 + min(row0 / 4u + r4, m4 - 1u)];
            for (var j = 0u; j < TN4; j++) {
                let base = 4u * r4 * TN4 + j;
                acc[base] = fma(vec4<f32>(av.x), bt[j], acc[base]);
                acc[base + TN4] = fma(vec4<f32>(av.y), bt[j], acc[base + TN4]);
                acc[base + 2u * TN4] = fma(vec4<f32>(av.z), bt[j], acc[base + 2u * TN4]);
                acc[base + 3u * TN4] = fma(vec4<f32>(av.w), bt[j], acc[base + 3u * TN4]);
            }
        }
    }
    store_tile(row0, col4_0, &acc);
}

@compute @workgroup_size(WG, WG)
fn matmul_nt(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * TM;
    let col4_0 = gid.x * TN4;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, TM * TN4>;
    var bt: array<vec4<f32>, 4u * TN4>;
    for (var kk = 0u; kk < k4; kk++) {
        for (var j = 0u; j < 4u * TN4; j++) {
            bt[j] = b[min(col4_0 * 4u + j, p.n - 1u) * k4 + kk];
        }
        for (var r = 0u; r < TM; r++) {
            let av = a[min(row0 + r, p.m - 1u) * k4 + kk];
            for (var j = 0u; j < TN4; j++) {
                acc[r * TN4 + j] += vec4<f32>(
                    dot(av, bt[4u * j]),
                    dot(av, bt[4u * j + 1u]),
                    dot(av, bt[4u * j + 2u]),
                    dot(av, bt[4u * j + 3u]),
                );
            }
        }
    }
    store_tile(row0, col4_0, &acc);
}
