// matmul_jvp_nn of matmul_jvp.wgsl for drivers that run 8-lane subgroups as the SIMD lanes of a
// CPU (lavapipe); the tile, loads and epilogue are in include/matmul_jvp_tile.wgsl and
// include/vec4_rows.wgsl, the sharing helpers in include/lane_share.wgsl. The 8 lanes of a subgroup take 8 consecutive
// column tiles of the same 16 rows, so the rows of A and dA are the same for all of them: lane l
// loads rows 2l and 2l + 1 of each and subgroupBroadcast hands them to the others.
// Workgroups are 8 subgroups of 8 lanes: tile (x, y) = (8 wg.x + lane, 8 wg.y + subgroup).

@compute @workgroup_size(64)
fn matmul_jvp_nn_cols(@builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_id) sg: u32,
                      @builtin(subgroup_invocation_id) lane: u32) {
    let row0 = (wg.y * 8u + sg) * 16u;
    let col4_0 = (wg.x * 8u + lane) * 2u;
    if (row0 >= p.m) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let last = p.m - 1u;
    let mine0 = min(row0 + 2u * lane, last) * k4;
    let mine1 = min(row0 + 2u * lane + 1u, last) * k4;
    var y: JvpTile;
    var dy: JvpTile;
    for (var kk = 0u; kk < k4; kk++) {
        let k = kk * 4u;
        let v0 = a[mine0 + kk];
        let v1 = a[mine1 + kk];
        let a0 = shared_rows0(v0, v1);
        let a1 = shared_rows1(v0, v1);
        let a2 = shared_rows2(v0, v1);
        let a3 = shared_rows3(v0, v1);
        let b0 = b_rows(k, col4_0, n4);
        let b1 = b_rows(k, col4_0 + 1u, n4);
        update_jvp(&y, a0, a1, a2, a3, b0, b1);
        update_jvp(&dy, a0, a1, a2, a3, load_db(k, col4_0, n4), load_db(k, col4_0 + 1u, n4));
        if (HAS_DA != 0u) {
            let u0 = da[mine0 + kk];
            let u1 = da[mine1 + kk];
            update_jvp(&dy, shared_rows0(u0, u1), shared_rows1(u0, u1), shared_rows2(u0, u1), shared_rows3(u0, u1), b0, b1);
        }
    }
    store_jvp_tile(row0, col4_0, &y, &dy);
}
