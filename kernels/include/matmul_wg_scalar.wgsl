// Staging of matmul_wg.wgsl by scalar loads (family matmul_wg; matmul_wg_f16 on f16
// operands): any shape and layout. Each invocation copies TM elements of the A block and TN of
// the B block, numbered so that neighbouring invocations read neighbouring addresses whichever
// of the operand's strides is 1 (coalesced loads in every layout), zeros outside the matrices.
@group(0) @binding(1) var<storage, read> a: array<Operand>;
@group(0) @binding(2) var<storage, read> b: array<Operand>;

fn stage_a(row0: u32, k0: u32, t: u32) {
    let k_fastest = p.sa_col == 1u;
    for (var r = 0u; r < TM; r++) {
        let e = t + 256u * r;
        var i = e / BK;
        var kk = e % BK;
        if (!k_fastest) {
            i = e % BM;
            kk = e / BM;
        }
        let row = row0 + i;
        let k = k0 + kk;
        var v = 0.0;
        if (row < p.m && k < p.k) { v = f32(a[row * p.sa_row + k * p.sa_col]); }
        As[kk * BM4 + i / 4u][i % 4u] = v;
    }
}

fn stage_b(col0: u32, k0: u32, t: u32) {
    let n_fastest = p.sb_col == 1u;
    for (var r = 0u; r < TN; r++) {
        let e = t + 256u * r;
        var j = e % BN;
        var kk = e / BN;
        if (!n_fastest) {
            j = e / BK;
            kk = e % BK;
        }
        let col = col0 + j;
        let k = k0 + kk;
        var v = 0.0;
        if (col < p.n && k < p.k) { v = f32(b[k * p.sb_row + col * p.sb_col]); }
        Bs[kk * BN4 + j / 4u][j % 4u] = v;
    }
}
