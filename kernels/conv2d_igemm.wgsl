// Implicit-GEMM convolutions for hardware GPUs (NCHW, weights [O, C, KH, KW], any geometry),
// staged through workgroup memory as in matmul_wg.wgsl. With Q = C KH KW patch rows and
// P = N OH OW output pixels, patches[q, p] is the input value under tap q of output pixel p
// (zero in the padding), computed on the fly while a block is staged: nothing is lowered to
// memory.
//
// - conv_igemm_fwd:  y[n, o, oy, ox] = act(sum_q W[o, q] patches[q, p] + bias[o]) — a GEMM
//   of M = O, N = P, K = Q;
// - conv_igemm_jvp:  also dy = act'(.) (W dpatches + dW patches + dbias) (dpatches from dx;
//   FLAG_HAS_DX says there is one);
// - conv_igemm_bwd_weight: partial[split, o, q] = sum_p gy[o, p] patches[q, p] over the
//   split's range of p (rows_per_split pixels, a multiple of BK): a split-K GEMM of M = O,
//   N = Q, K = P; the splits are summed by conv2d.wgsl's conv2d_sum_splits. With FLAG_BIAS
//   the bias gradient comes along: the workgroups of the first column block add up the gy
//   block they stage, bias_partial[split, o] = sum_p gy[o, p], into the second output.
//
// A workgroup of 16 x 16 invocations computes a 64 x 64 block of the product, 4 x 4 outputs
// per invocation (rows ty + 16 i, columns tx + 16 j). For each slice of BK = 16 along the
// reduction it stages its blocks, each invocation TM elements of each, numbered so that
// neighbouring invocations read neighbouring addresses (weights along q, gy and patches along
// pixels where the reduction runs over pixels, patches along pixels otherwise). Flags: FLAG_BIAS,
// FLAG_RELU, FLAG_HAS_DX (the JVP has dx).

const TM: u32 = 4u;
const BK: u32 = 16u;
const BM: u32 = 16u * TM;

// Operand: f32, or f16 in the family conv2d_igemm_f16 (kernels/include/operand_*.wgsl), which
// converts each element of x and w to f32 exactly as it is staged (its forward only).
@group(0) @binding(1) var<storage, read> x: array<Operand>;
// The weights; in conv_igemm_bwd_weight, the output gradient gy [N, O, OH, OW].
@group(0) @binding(2) var<storage, read> w: array<Operand>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> dx: array<f32>;
@group(0) @binding(5) var<storage, read> dw: array<f32>;
@group(0) @binding(6) var<storage, read> dbias: array<f32>;
// The output y; in conv_igemm_bwd_weight, the partial sums [splits, O, Q].
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
// The tangent dy; in conv_igemm_bwd_weight, the bias gradient's partial sums [splits, O].
@group(0) @binding(8) var<storage, read_write> dy: array<f32>;

// As[kk * BM + i]: row i of the left operand's block, step kk of the reduction; Bs[kk * BM + j]:
// column j of the right operand's block (dAs, dBs: their tangents).
var<workgroup> As: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BM>;
var<workgroup> dAs: array<f32, BK * BM>;
var<workgroup> dBs: array<f32, BK * BM>;

// Index into x (or dx) of patches[q, pix], or -1 in the padding.
fn patch_index(q: u32, pix: u32) -> i32 {
    let khw = p.kh * p.kw;
    let c = q / khw;
    let tap = q % khw;
    let ohw = p.oh * p.ow;
    let n = pix / ohw;
    let at = pix % ohw;
    let iy = i32((at / p.ow) * p.stride + tap / p.kw) - i32(p.pad);
    let ix = i32((at % p.ow) * p.stride + tap % p.kw) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) { return -1; }
    return i32(((n * p.c + c) * p.h + u32(iy)) * p.w + u32(ix));
}

// Index of output pixel pix of channel o in an [N, O, OH, OW] tensor.
fn output_index(o: u32, pix: u32) -> u32 {
    let ohw = p.oh * p.ow;
    return ((pix / ohw) * p.o + o) * ohw + pix % ohw;
}

fn forward(wid: vec3<u32>, lid: vec3<u32>, jvp: bool) {
    let q_len = p.c * p.kh * p.kw;
    let row0 = wid.y * BM;
    let col0 = wid.x * BM;
    let t = lid.y * 16u + lid.x;
    let has_dx = jvp && (p.flags & FLAG_HAS_DX) != 0u;
    var acc: array<f32, TM * TM>;
    var dacc: array<f32, TM * TM>;
    for (var k0 = 0u; k0 < q_len; k0 += BK) {
        for (var r = 0u; r < TM; r++) {
            let e = t + 256u * r;
            // Weights, along q.
            let i = e / BK;
            let qa = k0 + e % BK;
            var v = 0.0;
            var dv = 0.0;
            if (row0 + i < p.o && qa < q_len) {
                v = f32(w[(row0 + i) * q_len + qa]);
                if (jvp) { dv = dw[(row0 + i) * q_len + qa]; }
            }
            As[(e % BK) * BM + i] = v;
            // Patches, along pixels.
            let j = e % BM;
            let qb = k0 + e / BM;
            var xv = 0.0;
            var dxv = 0.0;
            if (col0 + j < p.total && qb < q_len) {
                let at = patch_index(qb, col0 + j);
                if (at >= 0) {
                    xv = f32(x[at]);
                    if (has_dx) { dxv = dx[at]; }
                }
            }
            Bs[(e / BM) * BM + j] = xv;
            if (jvp) {
                dAs[(e % BK) * BM + i] = dv;
                dBs[(e / BM) * BM + j] = dxv;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, TM>;
            var bv: array<f32, TM>;
            var dav: array<f32, TM>;
            var dbv: array<f32, TM>;
            for (var i = 0u; i < TM; i++) {
                av[i] = As[kk * BM + lid.y + 16u * i];
                bv[i] = Bs[kk * BM + lid.x + 16u * i];
                if (jvp) {
                    dav[i] = dAs[kk * BM + lid.y + 16u * i];
                    dbv[i] = dBs[kk * BM + lid.x + 16u * i];
                }
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TM; j++) {
                    acc[i * TM + j] = fma(av[i], bv[j], acc[i * TM + j]);
                    if (jvp) {
                        dacc[i * TM + j] = fma(av[i], dbv[j], fma(dav[i], bv[j], dacc[i * TM + j]));
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let o = row0 + lid.y + 16u * i;
        if (o >= p.o) { break; }
        for (var j = 0u; j < TM; j++) {
            let pix = col0 + lid.x + 16u * j;
            if (pix >= p.total) { continue; }
            var v = acc[i * TM + j];
            var tangent = dacc[i * TM + j];
            if ((p.flags & FLAG_BIAS) != 0u) {
                v += bias[o];
                if (jvp) { tangent += dbias[o]; }
            }
            if ((p.flags & FLAG_RELU) != 0u) {
                tangent = select(0.0, tangent, v > 0.0);
                v = max(v, 0.0);
            }
            y[output_index(o, pix)] = v;
            if (jvp) { dy[output_index(o, pix)] = tangent; }
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv_igemm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    forward(wid, lid, false);
}

@compute @workgroup_size(16, 16)
fn conv_igemm_jvp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    forward(wid, lid, true);
}

@compute @workgroup_size(16, 16)
fn conv_igemm_bwd_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let q_len = p.c * p.kh * p.kw;
    let row0 = wid.y * BM;
    let col0 = wid.x * BM;
    let t = lid.y * 16u + lid.x;
    let first = wid.z * p.rows_per_split;
    let last = min(first + p.rows_per_split, p.total);
    // The invocations of the first block column that add up the bias gradient of rows
    // row0 + lid.y + 16 i.
    let bias_sums = (p.flags & FLAG_BIAS) != 0u && wid.x == 0u && lid.x == 0u;
    var acc: array<f32, TM * TM>;
    var gy_sums: array<f32, TM>;
    for (var k0 = first; k0 < last; k0 += BK) {
        for (var r = 0u; r < TM; r++) {
            let e = t + 256u * r;
            // gy and patches, both along pixels (the reduction).
            let i = e / BK;
            let j = e / BK;
            let pix = k0 + e % BK;
            var g = 0.0;
            var xv = 0.0;
            if (pix < last) {
                if (row0 + i < p.o) { g = f32(w[output_index(row0 + i, pix)]); }
                if (col0 + j < q_len) {
                    let at = patch_index(col0 + j, pix);
                    if (at >= 0) { xv = f32(x[at]); }
                }
            }
            As[(e % BK) * BM + i] = g;
            Bs[(e % BK) * BM + j] = xv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, TM>;
            var bv: array<f32, TM>;
            for (var i = 0u; i < TM; i++) {
                av[i] = As[kk * BM + lid.y + 16u * i];
                bv[i] = Bs[kk * BM + lid.x + 16u * i];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TM; j++) {
                    acc[i * TM + j] = fma(av[i], bv[j], acc[i * TM + j]);
                }
            }
            if (bias_sums) {
                for (var i = 0u; i < TM; i++) { gy_sums[i] += av[i]; }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let o = row0 + lid.y + 16u * i;
        if (o >= p.o) { break; }
        if (bias_sums) { dy[wid.z * p.o + o] = gy_sums[i]; }
        for (var j = 0u; j < TM; j++) {
            let q = col0 + lid.x + 16u * j;
            if (q < q_len) { y[(wid.z * p.o + o) * q_len + q] = acc[i * TM + j]; }
        }
    }
}
