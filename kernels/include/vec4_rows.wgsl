// Operand loads of the register-tiled products (matmul_tile.wgsl, matmul_jvp_tile.wgsl), from
// the vec4 bindings `a` and `b` that those declare: blocks of 4 x 4 as mat4x4, clamped at the
// last row or column (the stores skip what lies outside C).

// Four consecutive A rows from row r0 at vec4 k-index kk (A row-major, k4 vec4s per row).
fn a_rows(r0: u32, kk: u32, k4: u32) -> mat4x4<f32> {
    let last = p.m - 1u;
    return mat4x4<f32>(a[min(r0, last) * k4 + kk], a[min(r0 + 1u, last) * k4 + kk],
                       a[min(r0 + 2u, last) * k4 + kk], a[min(r0 + 3u, last) * k4 + kk]);
}

// B rows k..k+4 at vec4 column col4 (B row-major [K, N]).
fn b_rows(k: u32, col4: u32, n4: u32) -> mat4x4<f32> {
    let c4 = min(col4, n4 - 1u);
    return mat4x4<f32>(b[k * n4 + c4], b[(k + 1u) * n4 + c4], b[(k + 2u) * n4 + c4], b[(k + 3u) * n4 + c4]);
}
