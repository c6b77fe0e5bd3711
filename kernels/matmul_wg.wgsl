// Matrix product for hardware GPUs, any shape and layout, staged through workgroup memory:
// C = epilogue(alpha * op(A) op(B)) with op(A)[i,k] = a[i * sa_row + k * sa_col] and
// op(B)[k,j] = b[k * sb_row + j * sb_col] (AB, A^T B and A B^T from one entry point).
//
// A workgroup of 16 x 16 invocations computes a BM x BN block of C (BM = 16 TM, BN = 16 TN).
// For each slice of BK = 16 along k, the workgroup first copies the A block (BM x BK) and the
// B block (BK x BN) into workgroup memory, each invocation TM (resp. TN) elements, numbered so
// that neighbouring invocations read neighbouring addresses whichever of the operand's strides
// is 1 (coalesced loads in every layout); outside the matrices it stores zeros. Then each
// invocation accumulates its TM x TN outputs, rows ty + 16 i and columns tx + 16 j, from
// registers: per k, TM + TN reads of workgroup memory for TM TN FMAs. A block row of the
// workgroup reads one A element (a broadcast) and consecutive B elements (no bank conflicts);
// the stores of C are consecutive along a row.
//
// Epilogue flags as in matmul.wgsl: FLAG_BIAS, FLAG_RELU, FLAG_ACCUMULATE (+ beta * cin),
// FLAG_MASK (zero where cin <= 0), FLAG_COL_SUMS (also write the column sums of op(B), the sum
// over k of op(B)[k, col], to c2, by the workgroups of the first block row).
// FLAG_ROWS_ON_LANES (the row/column layout of the register-tiled kernels) does not apply here.

const TM: u32 = 4u;
const TN: u32 = 4u;
const BK: u32 = 16u;
const BM: u32 = 16u * TM;
const BN: u32 = 16u * TN;

// Operand: f32, or f16 in the family matmul_wg_f16 (kernels/include/operand_*.wgsl), which
// converts each element to f32 exactly as it is staged and offers bias and ReLU only.
@group(0) @binding(1) var<storage, read> a: array<Operand>;
@group(0) @binding(2) var<storage, read> b: array<Operand>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> cin: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> c2: array<f32>;

// As[kk * BM + i] = op(A)[row0 + i, k0 + kk]; Bs[kk * BN + j] = op(B)[k0 + kk, col0 + j].
var<workgroup> As: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BN>;

@compute @workgroup_size(16, 16)
fn matmul_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let t = lid.y * 16u + lid.x;
    // Which index of each operand is contiguous in memory.
    let a_k_fastest = p.sa_col == 1u;
    let b_n_fastest = p.sb_col == 1u;
    let sums = (p.flags & FLAG_COL_SUMS) != 0u && wid.y == 0u;
    var acc: array<f32, TM * TN>;
    var colsum: array<f32, TN>;
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
            if (sums && lid.y == 0u) {
                for (var j = 0u; j < TN; j++) { colsum[j] += bv[j]; }
            }
        }
        workgroupBarrier();
    }
    if (sums && lid.y == 0u) {
        for (var j = 0u; j < TN; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col < p.n) { c2[col] = colsum[j]; }
        }
    }
    for (var i = 0u; i < TM; i++) {
        let row = row0 + lid.y + 16u * i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < TN; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col >= p.n) { continue; }
            var v = p.alpha * acc[i * TN + j];
            if ((p.flags & FLAG_BIAS) != 0u) { v += bias[col]; }
            if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += p.beta * cin[row * p.n + col]; }
            if ((p.flags & FLAG_MASK) != 0u) { v = select(0.0, v, cin[row * p.n + col] > 0.0); }
            if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
            c[row * p.n + col] = v;
        }
    }
}
