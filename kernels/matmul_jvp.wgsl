// Fused forward mode of a dense layer in one dispatch: primal and tangent of
//     C = act(A B + bias),   dC = act'(.) * (dA B + A dB + dbias)
// with A [M,K], B [K,N] row-major (needs K % 4 == 0, N % 4 == 0). The A and B tiles loaded for
// the primal are reused for the tangent, so the JVP reads each operand once. The tile, loads and
// epilogue are in include/matmul_jvp_tile.wgsl and include/vec4_rows.wgsl; each invocation owns
// a 16 x 8 tile of C and of dC. Where the driver offers 8-lane subgroups, matmul_jvp_subgroup.wgsl replaces it.

@compute @workgroup_size(8, 8)
fn matmul_jvp_nn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 16u;
    let col4_0 = gid.x * 2u;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    var y: JvpTile;
    var dy: JvpTile;
    for (var kk = 0u; kk < k4; kk++) {
        let k = kk * 4u;
        let a0 = a_rows(row0, kk, k4);
        let a1 = a_rows(row0 + 4u, kk, k4);
        let a2 = a_rows(row0 + 8u, kk, k4);
        let a3 = a_rows(row0 + 12u, kk, k4);
        let b0 = b_rows(k, col4_0, n4);
        let b1 = b_rows(k, col4_0 + 1u, n4);
        update_jvp(&y, a0, a1, a2, a3, b0, b1);
        update_jvp(&dy, a0, a1, a2, a3, load_db(k, col4_0, n4), load_db(k, col4_0 + 1u, n4));
        if (HAS_DA != 0u) {
            update_jvp(&dy, load_da(row0, kk, k4), load_da(row0 + 4u, kk, k4), load_da(row0 + 8u, kk, k4), load_da(row0 + 12u, kk, k4), b0, b1);
        }
    }
    store_jvp_tile(row0, col4_0, &y, &dy);
}
