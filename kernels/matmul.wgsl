// Register-tiled matrix product C = epilogue(alpha * op(A) op(B)), row-major, vec4 loads; the
// tile, epilogue and loads are in include/matmul_tile.wgsl and include/vec4_rows.wgsl. Each invocation owns a 16 x 16
// tile of C. No workgroup memory: on CPU-emulated drivers (lavapipe) per-invocation register
// work is what gets vectorised. Consecutive invocations along x (the SIMD lanes of a
// CPU-emulated driver) take consecutive column tiles, or with FLAG_ROWS_ON_LANES consecutive
// row tiles: the host picks whichever leaves fewer lanes idle for the shape. Where the driver offers 8-lane
// subgroups, matmul_subgroup.wgsl replaces these entry points.
// Entry points:  matmul_nn: A [M,K], B [K,N]    needs K % 4 == 0, N % 4 == 0
//                matmul_tn: A [K,M], B [K,N]    needs M % 4 == 0, N % 4 == 0   (C = A^T B)
//                matmul_nt: A [M,K], B [N,K]    needs K % 4 == 0, N % 4 == 0   (C = A B^T)

// The invocation's tile: its first row and first vec4 column.
fn tile_origin(gid: vec3<u32>) -> vec2<u32> {
    if ((p.flags & FLAG_ROWS_ON_LANES) != 0u) {
        return vec2<u32>(gid.x * 16u, gid.y * 4u);
    }
    return vec2<u32>(gid.y * 16u, gid.x * 4u);
}

@compute @workgroup_size(8, 8)
fn matmul_nn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let origin = tile_origin(gid);
    let row0 = origin.x;
    let col4_0 = origin.y;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    var t: Tile;
    for (var kk = 0u; kk < k4; kk++) {
        let k = kk * 4u;
        update(&t, a_rows(row0, kk, k4), a_rows(row0 + 4u, kk, k4), a_rows(row0 + 8u, kk, k4), a_rows(row0 + 12u, kk, k4),
               b_rows(k, col4_0, n4), b_rows(k, col4_0 + 1u, n4), b_rows(k, col4_0 + 2u, n4), b_rows(k, col4_0 + 3u, n4));
    }
    store_tile(row0, col4_0, &t);
}

@compute @workgroup_size(8, 8)
fn matmul_tn(@builtin(global_invocation_id) gid: vec3<u32>) {
    let origin = tile_origin(gid);
    let row0 = origin.x;
    let col4_0 = origin.y;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let n4 = p.n / 4u;
    let m4 = p.m / 4u;
    let r4 = row0 / 4u;
    let k_main = p.k / 4u * 4u;
    let sums = (p.flags & FLAG_COL_SUMS) != 0u && row0 == 0u;
    var t: Tile;
    var s: ColSums;
    for (var k = 0u; k < k_main; k += 4u) {
        let b0 = b_rows(k, col4_0, n4);
        let b1 = b_rows(k, col4_0 + 1u, n4);
        let b2 = b_rows(k, col4_0 + 2u, n4);
        let b3 = b_rows(k, col4_0 + 3u, n4);
        update(&t, at_rows(k, r4, m4), at_rows(k, r4 + 1u, m4), at_rows(k, r4 + 2u, m4), at_rows(k, r4 + 3u, m4),
               b0, b1, b2, b3);
        if (sums) {
            s.s0 = add_rows(s.s0, b0); s.s1 = add_rows(s.s1, b1); s.s2 = add_rows(s.s2, b2); s.s3 = add_rows(s.s3, b3);
        }
    }
    // Remaining k (K not a multiple of 4): rank-1 updates with zero-padded matrices.
    for (var k = k_main; k < p.k; k++) {
        let z = vec4<f32>(0.0);
        var bs: array<mat4x4<f32>, 4>;
        for (var j = 0u; j < 4u; j++) {
            bs[j] = mat4x4<f32>(b[k * n4 + min(col4_0 + j, n4 - 1u)], z, z, z);
        }
        var as_: array<mat4x4<f32>, 4>;
        for (var i = 0u; i < 4u; i++) {
            as_[i] = transpose(mat4x4<f32>(a[k * m4 + min(r4 + i, m4 - 1u)], z, z, z));
        }
        update(&t, as_[0], as_[1], as_[2], as_[3], bs[0], bs[1], bs[2], bs[3]);
        if (sums) {
            s.s0 += bs[0][0]; s.s1 += bs[1][0]; s.s2 += bs[2][0]; s.s3 += bs[3][0];
        }
    }
    store_tile(row0, col4_0, &t);
    if (sums) { store_col_sums(col4_0, s); }
}

@compute @workgroup_size(8, 8)
fn matmul_nt(@builtin(global_invocation_id) gid: vec3<u32>) {
    let origin = tile_origin(gid);
    let row0 = origin.x;
    let col4_0 = origin.y;
    if (row0 >= p.m || col4_0 * 4u >= p.n) { return; }
    let k4 = p.k / 4u;
    var t: Tile;
    for (var kk = 0u; kk < k4; kk++) {
        update(&t, a_rows(row0, kk, k4), a_rows(row0 + 4u, kk, k4), a_rows(row0 + 8u, kk, k4), a_rows(row0 + 12u, kk, k4),
               bt_rows(kk, col4_0, k4), bt_rows(kk, col4_0 + 1u, k4), bt_rows(kk, col4_0 + 2u, k4), bt_rows(kk, col4_0 + 3u, k4));
    }
    store_tile(row0, col4_0, &t);
}
