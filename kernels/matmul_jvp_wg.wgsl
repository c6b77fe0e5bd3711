// Fused forward mode of a dense layer for hardware GPUs, any shape, staged through workgroup
// memory: primal and tangent of
//     C = act(A B + bias),   dC = act'(.) * (dA B + A dB + dbias)
// with A [M,K], B [K,N] row-major, in one dispatch. Flags: FLAG_BIAS (with dbias), FLAG_RELU;
// HAS_DA as in include/matmul_jvp_tile.wgsl (0: dA = 0, its block is neither loaded nor used).
//
// As in matmul_wg.wgsl: a workgroup of 16 x 16 invocations computes a 64 x 64 block of C and
// of dC; for each slice of 16 along k it stages the blocks of A, dA, B and dB in workgroup
// memory (16 KiB, coalesced loads, zeros outside the matrices), then each invocation updates
// its 4 x 4 outputs of C and of dC (rows ty + 16 i, columns tx + 16 j) from registers: 32
// accumulators, where the register-tiled kernel of the software drivers holds 256.

const HAS_DA: u32 = 1u;
const TM: u32 = 4u;
const BK: u32 = 16u;
const BM: u32 = 16u * TM;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> da: array<f32>;
@group(0) @binding(5) var<storage, read> db: array<f32>;
@group(0) @binding(6) var<storage, read> dbias: array<f32>;
@group(0) @binding(7) var<storage, read_write> c: array<f32>;
@group(0) @binding(8) var<storage, read_write> dc: array<f32>;

// As[kk * BM + i] = A[row0 + i, k0 + kk] (dAs alike); Bs[kk * BM + j] = B[k0 + kk, col0 + j]
// (dBs alike).
var<workgroup> As: array<f32, BK * BM>;
var<workgroup> dAs: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BM>;
var<workgroup> dBs: array<f32, BK * BM>;

@compute @workgroup_size(16, 16)
fn matmul_jvp_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BM;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, TM * TM>;
    var dacc: array<f32, TM * TM>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var r = 0u; r < TM; r++) {
            let e = t + 256u * r;
            // A and dA: neighbouring invocations along k; B and dB: along n.
            let i = e / BK;
            let ka = k0 + e % BK;
            let row = row0 + i;
            var v = 0.0;
            var dv = 0.0;
            if (row < p.m && ka < p.k) {
                v = a[row * p.k + ka];
                if (HAS_DA != 0u) { dv = da[row * p.k + ka]; }
            }
            As[(e % BK) * BM + i] = v;
            dAs[(e % BK) * BM + i] = dv;
            let j = e % BM;
            let kb = k0 + e / BM;
            let col = col0 + j;
            var w = 0.0;
            var dw = 0.0;
            if (col < p.n && kb < p.k) {
                w = b[kb * p.n + col];
                dw = db[kb * p.n + col];
            }
            Bs[(e / BM) * BM + j] = w;
            dBs[(e / BM) * BM + j] = dw;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, TM>;
            var dav: array<f32, TM>;
            var bv: array<f32, TM>;
            var dbv: array<f32, TM>;
            for (var i = 0u; i < TM; i++) {
                av[i] = As[kk * BM + lid.y + 16u * i];
                if (HAS_DA != 0u) { dav[i] = dAs[kk * BM + lid.y + 16u * i]; }
                bv[i] = Bs[kk * BM + lid.x + 16u * i];
                dbv[i] = dBs[kk * BM + lid.x + 16u * i];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TM; j++) {
                    acc[i * TM + j] = fma(av[i], bv[j], acc[i * TM + j]);
                    dacc[i * TM + j] = fma(av[i], dbv[j], dacc[i * TM + j]);
                    if (HAS_DA != 0u) { dacc[i * TM + j] = fma(dav[i], bv[j], dacc[i * TM + j]); }
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let row = row0 + lid.y + 16u * i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < TM; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col >= p.n) { continue; }
            var v = acc[i * TM + j];
            var tangent = dacc[i * TM + j];
            if ((p.flags & FLAG_BIAS) != 0u) {
                v += bias[col];
                tangent += dbias[col];
            }
            if ((p.flags & FLAG_RELU) != 0u) {
                tangent = select(0.0, tangent, v > 0.0);
                v = max(v, 0.0);
            }
            c[row * p.n + col] = v;
            dc[row * p.n + col] = tangent;
        }
    }
}
