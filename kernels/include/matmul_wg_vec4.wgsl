// Staging of matmul_wg.wgsl by vec4 loads (family matmul_wg_vec4; matmul_wg_f16_vec4 on f16
// operands): for shapes whose operands' contiguous sides are multiples of 4 (A: K, or M for
// A^T; B: N, or K for B^T), so that each vec4 lies wholly inside or outside its matrix. Each
// invocation copies TM / 4 vec4s of the A block and TN / 4 of the B block, neighbouring
// invocations reading neighbouring vec4s along the contiguous side; a vec4 along the block's
// own vec4 side is stored whole, one across it as four scalars.
@group(0) @binding(1) var<storage, read> a: array<vec4<Operand>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<Operand>>;

// The vec4s of a block's BK side.
const BK4 = BK / 4u;

fn stage_a(row0: u32, k0: u32, t: u32) {
    let k_fastest = p.sa_col == 1u;
    for (var r = 0u; r < TM4; r++) {
        let e = t + 256u * r;
        if (k_fastest) {
            // A row-major [M, K]: a vec4 holds k .. k + 3 of one row.
            let i = e / BK4;
            let kk = 4u * (e % BK4);
            let row = row0 + i;
            let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (row < p.m && k < p.k) { v = vec4<f32>(a[(row * p.sa_row + k) / 4u]); }
            for (var q = 0u; q < 4u; q++) { As[(kk + q) * BM4 + i / 4u][i % 4u] = v[q]; }
        } else {
            // A stored [K, M]: a vec4 holds rows i .. i + 3 at one k.
            let i4 = e % BM4;
            let kk = e / BM4;
            let row = row0 + 4u * i4;
            let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (row < p.m && k < p.k) { v = vec4<f32>(a[(k * p.sa_col + row) / 4u]); }
            As[kk * BM4 + i4] = v;
        }
    }
}

fn stage_b(col0: u32, k0: u32, t: u32) {
    let n_fastest = p.sb_col == 1u;
    for (var r = 0u; r < TN4; r++) {
        let e = t + 256u * r;
        if (n_fastest) {
            // B row-major [K, N]: a vec4 holds columns j .. j + 3 at one k.
            let j4 = e % BN4;
            let kk = e / BN4;
            let col = col0 + 4u * j4;
            let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (col < p.n && k < p.k) { v = vec4<f32>(b[(k * p.sb_row + col) / 4u]); }
            Bs[kk * BN4 + j4] = v;
        } else {
            // B stored [N, K]: a vec4 holds k .. k + 3 of one column.
            let j = e / BK4;
            let kk = 4u * (e % BK4);
            let col = col0 + j;
            let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (col < p.n && k < p.k) { v = vec4<f32>(b[(col * p.sb_col + k) / 4u]); }
            for (var q = 0u; q < 4u; q++) { Bs[(kk + q) * BN4 + j / 4u][j % 4u] = v[q]; }
        }
    }
}
