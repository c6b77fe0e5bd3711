// Shared part of the register-tiled matrix products: the bindings, the 16 x 16 tile of C an
// invocation owns (4 x 4 blocks, each a mat4x4 whose columns are the block's rows, so a block
// update is one mat4x4 product the compiler fully unrolls), the epilogue and the A^T / B^T
// operand loads (the plain ones are in vec4_rows.wgsl). Not a family of its own: the families
// matmul and matmul_subgroup include it (src/kernels/families.rs).
// Epilogue: + bias[col] (FLAG_BIAS), + beta * cin (FLAG_ACCUMULATE), zero where cin <= 0
// (FLAG_MASK: the ReLU mask of the layer whose output cin is, in a backward product), ReLU
// (FLAG_RELU). Aᵀ B products with FLAG_COL_SUMS also write the column sums of B (sum over k of
// B[k, col]) to c2.
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cin: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> c2: array<vec4<f32>>;

// The 16 x 16 tile: t[i][j] is the block of rows 4i.., vec4-columns j; column r of a block is
// row 4i + r of C.
struct Tile {
    t00: mat4x4<f32>, t01: mat4x4<f32>, t02: mat4x4<f32>, t03: mat4x4<f32>,
    t10: mat4x4<f32>, t11: mat4x4<f32>, t12: mat4x4<f32>, t13: mat4x4<f32>,
    t20: mat4x4<f32>, t21: mat4x4<f32>, t22: mat4x4<f32>, t23: mat4x4<f32>,
    t30: mat4x4<f32>, t31: mat4x4<f32>, t32: mat4x4<f32>, t33: mat4x4<f32>,
}

// Four A rows (columns over k) and four B vec4-columns (columns over k, rows over C columns).
// t + b * a with explicit fused multiply-adds: column r of the result is
// t[r] + sum_q a[r][q] * b[q] (a's columns are rows of A over k, b's columns rows of B).
fn mac(t: mat4x4<f32>, a: mat4x4<f32>, b: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma(vec4<f32>(a[0].x), b[0], fma(vec4<f32>(a[0].y), b[1], fma(vec4<f32>(a[0].z), b[2], fma(vec4<f32>(a[0].w), b[3], t[0])))),
        fma(vec4<f32>(a[1].x), b[0], fma(vec4<f32>(a[1].y), b[1], fma(vec4<f32>(a[1].z), b[2], fma(vec4<f32>(a[1].w), b[3], t[1])))),
        fma(vec4<f32>(a[2].x), b[0], fma(vec4<f32>(a[2].y), b[1], fma(vec4<f32>(a[2].z), b[2], fma(vec4<f32>(a[2].w), b[3], t[2])))),
        fma(vec4<f32>(a[3].x), b[0], fma(vec4<f32>(a[3].y), b[1], fma(vec4<f32>(a[3].z), b[2], fma(vec4<f32>(a[3].w), b[3], t[3])))),
    );
}

fn update(t: ptr<function, Tile>, a0: mat4x4<f32>, a1: mat4x4<f32>, a2: mat4x4<f32>, a3: mat4x4<f32>,
          b0: mat4x4<f32>, b1: mat4x4<f32>, b2: mat4x4<f32>, b3: mat4x4<f32>) {
    (*t).t00 = mac((*t).t00, a0, b0); (*t).t01 = mac((*t).t01, a0, b1); (*t).t02 = mac((*t).t02, a0, b2); (*t).t03 = mac((*t).t03, a0, b3);
    (*t).t10 = mac((*t).t10, a1, b0); (*t).t11 = mac((*t).t11, a1, b1); (*t).t12 = mac((*t).t12, a1, b2); (*t).t13 = mac((*t).t13, a1, b3);
    (*t).t20 = mac((*t).t20, a2, b0); (*t).t21 = mac((*t).t21, a2, b1); (*t).t22 = mac((*t).t22, a2, b2); (*t).t23 = mac((*t).t23, a2, b3);
    (*t).t30 = mac((*t).t30, a3, b0); (*t).t31 = mac((*t).t31, a3, b1); (*t).t32 = mac((*t).t32, a3, b2); (*t).t33 = mac((*t).t33, a3, b3);
}

fn store_block(row0: u32, col4: u32, blk: mat4x4<f32>) {
    let n4 = p.n / 4u;
    if (col4 >= n4) { return; }
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + r;
        if (row >= p.m) { return; }
        var v = p.alpha * blk[r];
        if ((p.flags & FLAG_BIAS) != 0u) { v += bias[col4]; }
        if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += p.beta * cin[row * n4 + col4]; }
        if ((p.flags & FLAG_MASK) != 0u) { v = select(vec4<f32>(0.0), v, cin[row * n4 + col4] > vec4<f32>(0.0)); }
        if ((p.flags & FLAG_RELU) != 0u) { v = max(v, vec4<f32>(0.0)); }
        c[row * n4 + col4] = v;
    }
}

fn store_tile(row0: u32, col4_0: u32, t: ptr<function, Tile>) {
    store_block(row0, col4_0, (*t).t00); store_block(row0, col4_0 + 1u, (*t).t01);
    store_block(row0, col4_0 + 2u, (*t).t02); store_block(row0, col4_0 + 3u, (*t).t03);
    store_block(row0 + 4u, col4_0, (*t).t10); store_block(row0 + 4u, col4_0 + 1u, (*t).t11);
    store_block(row0 + 4u, col4_0 + 2u, (*t).t12); store_block(row0 + 4u, col4_0 + 3u, (*t).t13);
    store_block(row0 + 8u, col4_0, (*t).t20); store_block(row0 + 8u, col4_0 + 1u, (*t).t21);
    store_block(row0 + 8u, col4_0 + 2u, (*t).t22); store_block(row0 + 8u, col4_0 + 3u, (*t).t23);
    store_block(row0 + 12u, col4_0, (*t).t30); store_block(row0 + 12u, col4_0 + 1u, (*t).t31);
    store_block(row0 + 12u, col4_0 + 2u, (*t).t32); store_block(row0 + 12u, col4_0 + 3u, (*t).t33);
}

// Column sums of four B vec4-columns over rows k..k+4 (FLAG_COL_SUMS), kept by the invocations of
// the first row tile.
struct ColSums {
    s0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>, s3: vec4<f32>,
}

fn add_rows(s: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    return s + ((b[0] + b[1]) + (b[2] + b[3]));
}

fn store_col_sums(col4_0: u32, s: ColSums) {
    let n4 = p.n / 4u;
    if (col4_0 < n4) { c2[col4_0] = s.s0; }
    if (col4_0 + 1u < n4) { c2[col4_0 + 1u] = s.s1; }
    if (col4_0 + 2u < n4) { c2[col4_0 + 2u] = s.s2; }
    if (col4_0 + 3u < n4) { c2[col4_0 + 3u] = s.s3; }
}

// A^T rows: A stored [K, M]; columns of the result are rows r0.. of A^T (over k = k..k+4).
fn at_rows(k: u32, r4: u32, m4: u32) -> mat4x4<f32> {
    let c4 = min(r4, m4 - 1u);
    return transpose(mat4x4<f32>(a[k * m4 + c4], a[(k + 1u) * m4 + c4], a[(k + 2u) * m4 + c4], a[(k + 3u) * m4 + c4]));
}

// B^T columns: B stored [N, K]; the result's columns are over k, its rows over C columns.
fn bt_rows(kk: u32, col4: u32, k4: u32) -> mat4x4<f32> {
    let last = p.n - 1u;
    let c0 = col4 * 4u;
    return transpose(mat4x4<f32>(b[min(c0, last) * k4 + kk], b[min(c0 + 1u, last) * k4 + kk],
                                 b[min(c0 + 2u, last) * k4 + kk], b[min(c0 + 3u, last) * k4 + kk]));
}
