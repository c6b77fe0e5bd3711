// Shared part of the fused dense-layer JVP kernels (the families matmul_jvp and
// matmul_jvp_subgroup include it): the bindings, the 16 x 8 tiles of C and of dC an invocation
// owns (4 x 2 blocks of mat4x4 whose columns are rows of the block, as in matmul_tile.wgsl), the
// tangent loads and the epilogue (A and B loads: vec4_rows.wgsl). Flags: FLAG_BIAS (with dbias),
// FLAG_RELU. Whether dA is present (else dA = 0, e.g. for the input layer) is the specialisation
// constant HAS_DA, so that neither variant carries a branch in its inner loop (which costs
// lavapipe ~20%).

const HAS_DA: u32 = 1u;

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> da: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> db: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> dbias: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dc: array<vec4<f32>>;

// Eight blocks: row blocks 0..3 of the tile, vec4-columns 0 and 1.
struct JvpTile {
    t00: mat4x4<f32>, t01: mat4x4<f32>,
    t10: mat4x4<f32>, t11: mat4x4<f32>,
    t20: mat4x4<f32>, t21: mat4x4<f32>,
    t30: mat4x4<f32>, t31: mat4x4<f32>,
}

fn update_jvp(t: ptr<function, JvpTile>, a0: mat4x4<f32>, a1: mat4x4<f32>, a2: mat4x4<f32>, a3: mat4x4<f32>,
              b0: mat4x4<f32>, b1: mat4x4<f32>) {
    (*t).t00 += b0 * a0; (*t).t01 += b1 * a0;
    (*t).t10 += b0 * a1; (*t).t11 += b1 * a1;
    (*t).t20 += b0 * a2; (*t).t21 += b1 * a2;
    (*t).t30 += b0 * a3; (*t).t31 += b1 * a3;
}

fn load_da(r0: u32, kk: u32, k4: u32) -> mat4x4<f32> {
    let last = p.m - 1u;
    return mat4x4<f32>(da[min(r0, last) * k4 + kk], da[min(r0 + 1u, last) * k4 + kk],
                       da[min(r0 + 2u, last) * k4 + kk], da[min(r0 + 3u, last) * k4 + kk]);
}

fn load_db(k: u32, col4: u32, n4: u32) -> mat4x4<f32> {
    let c4 = min(col4, n4 - 1u);
    return mat4x4<f32>(db[k * n4 + c4], db[(k + 1u) * n4 + c4], db[(k + 2u) * n4 + c4], db[(k + 3u) * n4 + c4]);
}

fn store_jvp_block(row0: u32, col4: u32, v: mat4x4<f32>, t: mat4x4<f32>) {
    let n4 = p.n / 4u;
    if (col4 >= n4) { return; }
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + r;
        if (row >= p.m) { return; }
        var x = v[r];
        var dx = t[r];
        if ((p.flags & FLAG_BIAS) != 0u) {
            x += bias[col4];
            dx += dbias[col4];
        }
        if ((p.flags & FLAG_RELU) != 0u) {
            dx = select(vec4<f32>(0.0), dx, x > vec4<f32>(0.0));
            x = max(x, vec4<f32>(0.0));
        }
        c[row * n4 + col4] = x;
        dc[row * n4 + col4] = dx;
    }
}

// Both tiles, through the epilogue.
fn store_jvp_tile(row0: u32, col4_0: u32, y: ptr<function, JvpTile>, dy: ptr<function, JvpTile>) {
    store_jvp_block(row0, col4_0, (*y).t00, (*dy).t00);
    store_jvp_block(row0, col4_0 + 1u, (*y).t01, (*dy).t01);
    store_jvp_block(row0 + 4u, col4_0, (*y).t10, (*dy).t10);
    store_jvp_block(row0 + 4u, col4_0 + 1u, (*y).t11, (*dy).t11);
    store_jvp_block(row0 + 8u, col4_0, (*y).t20, (*dy).t20);
    store_jvp_block(row0 + 8u, col4_0 + 1u, (*y).t21, (*dy).t21);
    store_jvp_block(row0 + 12u, col4_0, (*y).t30, (*dy).t30);
    store_jvp_block(row0 + 12u, col4_0 + 1u, (*y).t31, (*dy).t31);
}
