// matmul_nn, matmul_tn and matmul_nt of matmul.wgsl for drivers that run 8-lane subgroups as
// the SIMD lanes of a CPU (lavapipe); the tile, epilogue and loads are in include/matmul_tile.wgsl
// and include/vec4_rows.wgsl, the sharing helpers in include/lane_share.wgsl. The 8
// lanes of a subgroup take 8 consecutive tiles along one axis, so the operand block along the
// other axis is the same for all of them: instead of 8 identical loads, each lane loads 1/8 of
// that block and subgroupBroadcast hands it to the others, which halves the loads per step.
// `_cols` entries lay lanes along column tiles (the A block is shared), `_rows` entries along
// row tiles (the B block is shared); the host picks whichever leaves fewer lanes idle. A shared
// block of 4 k-rows x 4 vec4s is loaded as lane l: k-row l / 2, vec4s 2 (l % 2) and 2 (l % 2) + 1.
// Needs subgroup size 8 and, besides matmul.wgsl's alignment, K % 4 == 0 for matmul_tn.
// Workgroups are 2 subgroups of 8 lanes, tile (x, y) = (8 wg.x + lane, 2 wg.y + subgroup):
// small workgroups spread better over the CPU's cores than 8 subgroups did.

// Columns on lanes: the 16 A rows are shared; lane l loads rows 2l and 2l + 1.
@compute @workgroup_size(16)
fn matmul_nn_cols(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let xy = tile_xy(wg, sg, lane);
    let row0 = xy.y * 16u;
    let col4_0 = xy.x * 4u;
    if (row0 >= p.m) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let last = p.m - 1u;
    let mine0 = min(row0 + 2u * lane, last) * k4;
    let mine1 = min(row0 + 2u * lane + 1u, last) * k4;
    var t: Tile;
    for (var kk = 0u; kk < k4; kk++) {
        let v0 = a[mine0 + kk];
        let v1 = a[mine1 + kk];
        let k = kk * 4u;
        update(&t, shared_rows0(v0, v1), shared_rows1(v0, v1), shared_rows2(v0, v1), shared_rows3(v0, v1),
               b_rows(k, col4_0, n4), b_rows(k, col4_0 + 1u, n4), b_rows(k, col4_0 + 2u, n4), b_rows(k, col4_0 + 3u, n4));
    }
    store_tile(row0, col4_0, &t);
}

// Rows on lanes: the 4 x 4 vec4 block of B is shared.
@compute @workgroup_size(16)
fn matmul_nn_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let xy = tile_xy(wg, sg, lane);
    let row0 = xy.x * 16u;
    let col4_0 = xy.y * 4u;
    let n4 = p.n / 4u;
    if (col4_0 >= n4) { return; }
    let k4 = p.k / 4u;
    let mine0 = min(col4_0 + 2u * (lane & 1u), n4 - 1u);
    let mine1 = min(col4_0 + 2u * (lane & 1u) + 1u, n4 - 1u);
    var t: Tile;
    for (var kk = 0u; kk < k4; kk++) {
        let krow = (kk * 4u + (lane >> 1u)) * n4;
        let v0 = b[krow + mine0];
        let v1 = b[krow + mine1];
        update(&t, a_rows(row0, kk, k4), a_rows(row0 + 4u, kk, k4), a_rows(row0 + 8u, kk, k4), a_rows(row0 + 12u, kk, k4),
               shared_col0(v0), shared_col0(v1), shared_col2(v0), shared_col2(v1));
    }
    store_tile(row0, col4_0, &t);
}

// Columns on lanes, C = Aᵀ B: the 4 x 4 vec4 block of A (k-rows k.., vec4s of the tile's
// rows) is shared.
@compute @workgroup_size(16)
fn matmul_tn_cols(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let xy = tile_xy(wg, sg, lane);
    let row0 = xy.y * 16u;
    let col4_0 = xy.x * 4u;
    if (row0 >= p.m) { return; }
    let n4 = p.n / 4u;
    let m4 = p.m / 4u;
    let r4 = row0 / 4u;
    let mine0 = min(r4 + 2u * (lane & 1u), m4 - 1u);
    let mine1 = min(r4 + 2u * (lane & 1u) + 1u, m4 - 1u);
    let sums = (p.flags & FLAG_COL_SUMS) != 0u && row0 == 0u;
    var t: Tile;
    var s: ColSums;
    for (var k = 0u; k < p.k; k += 4u) {
        let krow = (k + (lane >> 1u)) * m4;
        let v0 = a[krow + mine0];
        let v1 = a[krow + mine1];
        let b0 = b_rows(k, col4_0, n4);
        let b1 = b_rows(k, col4_0 + 1u, n4);
        let b2 = b_rows(k, col4_0 + 2u, n4);
        let b3 = b_rows(k, col4_0 + 3u, n4);
        update(&t, transpose(shared_col0(v0)), transpose(shared_col0(v1)), transpose(shared_col2(v0)),
               transpose(shared_col2(v1)), b0, b1, b2, b3);
        if (sums) {
            s.s0 = add_rows(s.s0, b0); s.s1 = add_rows(s.s1, b1); s.s2 = add_rows(s.s2, b2); s.s3 = add_rows(s.s3, b3);
        }
    }
    store_tile(row0, col4_0, &t);
    if (sums) { store_col_sums(col4_0, s); }
}

// Rows on lanes, C = Aᵀ B: the 4 x 4 vec4 block of B is shared.
@compute @workgroup_size(16)
fn matmul_tn_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let xy = tile_xy(wg, sg, lane);
    let row0 = xy.x * 16u;
    let col4_0 = xy.y * 4u;
    let n4 = p.n / 4u;
    if (col4_0 >= n4) { return; }
    let m4 = p.m / 4u;
    let r4 = row0 / 4u;
    let mine0 = min(col4_0 + 2u * (lane & 1u), n4 - 1u);
    let mine1 = min(col4_0 + 2u * (lane & 1u) + 1u, n4 - 1u);
    let sums = (p.flags & FLAG_COL_SUMS) != 0u && row0 == 0u;
    var t: Tile;
    var s: ColSums;
    for (var k = 0u; k < p.k; k += 4u) {
        let krow = (k + (lane >> 1u)) * n4;
        let v0 = b[krow + mine0];
        let v1 = b[krow + mine1];
        let b0 = shared_col0(v0);
        let b1 = shared_col0(v1);
        let b2 = shared_col2(v0);
        let b3 = shared_col2(v1);
        update(&t, at_rows(k, r4, m4), at_rows(k, r4 + 1u, m4), at_rows(k, r4 + 2u, m4), at_rows(k, r4 + 3u, m4),
               b0, b1, b2, b3);
        if (sums) {
            s.s0 = add_rows(s.s0, b0); s.s1 = add_rows(s.s1, b1); s.s2 = add_rows(s.s2, b2); s.s3 = add_rows(s.s3, b3);
        }
    }
    store_tile(row0, col4_0, &t);
    if (sums) { store_col_sums(col4_0, s); }
}

// Columns on lanes, C = A Bᵀ: the 16 A rows are shared, as in matmul_nn_cols.
@compute @workgroup_size(16)
fn matmul_nt_cols(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let xy = tile_xy(wg, sg, lane);
    let row0 = xy.y * 16u;
    let col4_0 = xy.x * 4u;
    if (row0 >= p.m) { return; }
    let k4 = p.k / 4u;
    let last = p.m - 1u;
    let mine0 = min(row0 + 2u * lane, last) * k4;
    let mine1 = min(row0 + 2u * lane + 1u, last) * k4;
    var t: Tile;
    for (var kk = 0u; kk < k4; kk++) {
        let v0 = a[mine0 + kk];
        let v1 = a[mine1 + kk];
        update(&t, shared_rows0(v0, v1), shared_rows1(v0, v1), shared_rows2(v0, v1), shared_rows3(v0, v1),
               bt_rows(kk, col4_0, k4), bt_rows(kk, col4_0 + 1u, k4), bt_rows(kk, col4_0 + 2u, k4), bt_rows(kk, col4_0 + 3u, k4));
    }
    store_tile(row0, col4_0, &t);
}

// Rows on lanes, C = A Bᵀ: the 16 rows of B (columns of C) are shared; lane l loads B rows 2l
// and 2l + 1 of the tile.
@compute @workgroup_size(16)
fn matmul_nt_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let xy = tile_xy(wg, sg, lane);
    let row0 = xy.x * 16u;
    let col4_0 = xy.y * 4u;
    if (col4_0 * 4u >= p.n) { return; }
    let k4 = p.k / 4u;
    let last = p.n - 1u;
    let mine0 = min(col4_0 * 4u + 2u * lane, last) * k4;
    let mine1 = min(col4_0 * 4u + 2u * lane + 1u, last) * k4;
    var t: Tile;
    for (var kk = 0u; kk < k4; kk++) {
        let v0 = b[mine0 + kk];
        let v1 = b[mine1 + kk];
        update(&t, a_rows(row0, kk, k4), a_rows(row0 + 4u, kk, k4), a_rows(row0 + 8u, kk, k4), a_rows(row0 + 12u, kk, k4),
               transpose(shared_rows0(v0, v1)), transpose(shared_rows1(v0, v1)), transpose(shared_rows2(v0, v1)),
               transpose(shared_rows3(v0, v1)));
    }
    store_tile(row0, col4_0, &t);
}
