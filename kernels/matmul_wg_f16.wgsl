enable f16;

// Matrix product of f16 operands with f32 accumulation and an f32 result, any shape and
// layout: C = epilogue(alpha * op(A) op(B)) with op(A)[i,k] = a[i * sa_row + k * sa_col] and
// op(B)[k,j] = b[k * sb_row + j * sb_col] (AB, A^T B and A B^T from one entry point).
//
// The blocking of matmul_wg.wgsl: a workgroup of 16 x 16 invocations computes a BM x BN block
// of C (BM = 16 TM, BN = 16 TN), staging for each slice of BK = 16 along k the A block and the
// B block in workgroup memory, loads numbered so that neighbouring invocations read
// neighbouring halves whichever stride is 1. Each half is converted to f32 (exactly) as it is
// staged, once, rather than at each of the 16 reads of it in the product loop: the tiles and
// the inner loop are those of the f32 kernel, and the f16 storage halves the operands' memory
// traffic.
//
// Epilogue flags: FLAG_BIAS (f32 bias[col]), FLAG_RELU. The accumulating, masking and
// column-sum epilogues of matmul_wg are not offered (the host refuses them).

const TM: u32 = 4u;
const TN: u32 = 4u;
const BK: u32 = 16u;
const BM: u32 = 16u * TM;
const BN: u32 = 16u * TN;

@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// As[kk * BM + i] = op(A)[row0 + i, k0 + kk]; Bs[kk * BN + j] = op(B)[k0 + kk, col0 + j].
var<workgroup> As: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BN>;

@compute @workgroup_size(16, 16)
fn matmul_wg_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;
    let a_k_fastest = p.sa_col == 1u;
    let b_n_fastest = p.sb_col == 1u;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var r = 0u; r < TM; r++) {
            let e = t + 256u * r;
            var i = e / BK;
            var kk = e % BK;
            if (!a_k_fastest) {
                i = e % BM;
                kk = e / BM;
            }
            let row = row0 + i;
            let k = k0 + kk;
            var v = 0.0;
            if (row < p.m && k < p.k) { v = f32(a[row * p.sa_row + k * p.sa_col]); }
            As[kk * BM + i] = v;
        }
        for (var r = 0u; r < TN; r++) {
            let e = t + 256u * r;
            var j = e % BN;
            var kk = e / BN;
            if (!b_n_fastest) {
                j = e / BK;
                kk = e % BK;
            }
            let col = col0 + j;
            let k = k0 + kk;
            var v = 0.0;
            if (col < p.n && k < p.k) { v = f32(b[k * p.sb_row + col * p.sb_col]); }
            Bs[kk * BN + j] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, TM>;
            var bv: array<f32, TN>;
            for (var i = 0u; i < TM; i++) { av[i] = As[kk * BM + lid.y + 16u * i]; }
            for (var j = 0u; j < TN; j++) { bv[j] = Bs[kk * BN + lid.x + 16u * j]; }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let row = row0 + lid.y + 16u * i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < TN; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col >= p.n) { continue; }
            var v = p.alpha * acc[i * TN + j];
            if ((p.flags & FLAG_BIAS) != 0u) { v += bias[col]; }
            if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
            c[row * p.n + col] = v;
        }
    }
}
