// im2col of 2-D convolutions lowered to products (src/ops/conv.rs; see conv2d_lower.wgsl for
// the layouts): patches [qp, npc] of images [n0, n0 + nb) of x (and of dx, FLAG_HAS_DX),
// written as vec4 (a file of its own for the vec4-typed outputs). Patch columns: cols_of in
// include/patch_columns.wgsl; lanes: lane in include/index.wgsl.
// Bindings: 1 x, 2 dx (read); 3 patches, 4 dpatches (read_write).

@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out1: array<vec4<f32>>;

// in0 = x, in1 = dx (FLAG_HAS_DX) -> out0 = patches, out1 = dpatches. Lanes: groups of 4
// consecutive patch columns (so a SIMD batch reads and writes contiguous memory), each looping
// over all qp rows; total = npc / 4.
@compute @workgroup_size(LANE_WG)
fn lower_im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let cl = cols_of(t);
    let has_dx = (p.flags & FLAG_HAS_DX) != 0u;
    let hw = p.h * p.w;
    let iy0 = vec4<i32>(cl.oy * p.stride) - vec4<i32>(i32(p.pad));
    let ix0 = vec4<i32>(cl.ox * p.stride) - vec4<i32>(i32(p.pad));
    let hi = vec4<i32>(i32(p.h));
    let wi = vec4<i32>(i32(p.w));
    let zero = vec4<i32>(0);
    let n4 = p.npc / 4u;
    var q = 0u;
    for (var c = 0u; c < p.c; c++) {
        let plane = (cl.n * p.c + vec4<u32>(c)) * hw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = iy0 + vec4<i32>(i32(ky));
            let yok = select(vec4<bool>(false), (iy < hi), (iy >= zero));
            let rowb = plane + vec4<u32>(clamp(iy, zero, hi - 1)) * p.w;
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = ix0 + vec4<i32>(i32(kx));
                let ok = select(vec4<bool>(false), select(vec4<bool>(false), (ix < wi), (ix >= zero)),
                                select(vec4<bool>(false), yok, cl.ok));
                let xi = rowb + vec4<u32>(clamp(ix, zero, wi - 1));
                let o = q * n4 + t;
                out0[o] = select(vec4<f32>(0.0), vec4<f32>(in0[xi.x], in0[xi.y], in0[xi.z], in0[xi.w]), ok);
                if (has_dx) {
                    out1[o] = select(vec4<f32>(0.0), vec4<f32>(in1[xi.x], in1[xi.y], in1[xi.z], in1[xi.w]), ok);
                }
                q += 1u;
            }
        }
    }
    let qp = p.qp;
    for (; q < qp; q++) {
        out0[q * n4 + t] = vec4<f32>(0.0);
        if (has_dx) { out1[q * n4 + t] = vec4<f32>(0.0); }
    }
}

