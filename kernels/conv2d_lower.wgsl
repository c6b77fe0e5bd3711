// Lowering of 2-D convolutions to matrix products (src/ops/conv.rs drives it): the layout
// passes around the matmul kernels. NCHW activations, weights [O, C, KH, KW]; one batch chunk
// of images [n0, n0 + nb) at a time. Q = C KH KW rows of the patch matrix, P = nb OH OW
// columns padded to npc (a multiple of 4; padded columns are zero), O padded to op (a multiple
// of 4; padded rows or columns are zero). Lanes t = gid.x + gid.y * num_workgroups.x * LANE_WG
// (lane in include/index.wgsl), t < total, as each entry point says; no integer division per
// element (slow on lavapipe). Patch columns: cols_of in include/patch_columns.wgsl.
//
//   (im2col, in conv2d_im2col.wgsl: patches [qp, npc], rows from Q up zero, with
//                    patches[(c, ky, kx), (n, oy, ox)] = x[n0 + n, c, oy s - pad + ky, ...])
//   lower_weights_t  w [O, Q] (, dw)                -> wt [qp, op] (, dwt), zero-padded
//   lower_pad_q      w [O, Q]                       -> [op, qp], zero-padded
//   lower_gy         gy [N, O, OH, OW]              -> g [op, npc]
//   lower_col2im     gp [Q, npc]                    -> gx [N, C, H, W] at image n0: the sum of
//                    the patch entries that read each input pixel (a gather, no atomics)
//   lower_sum_wt     partials [splits, Q, op]       -> gw [O, Q], summed over splits
//
// Bindings: 1 in0, 2 in1, 3 in2, 4 in3 (read); 5 out0, 6 out1 (read_write).

@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read> in3: array<f32>;
@group(0) @binding(5) var<storage, read_write> out0: array<f32>;
@group(0) @binding(6) var<storage, read_write> out1: array<f32>;

// in0 = w, in1 = dw (FLAG_HAS_DW) -> out0 = wt, out1 = dwt; one lane per element (small).
@compute @workgroup_size(LANE_WG)
fn lower_weights_t(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let o = t % p.op;
    let q = t / p.op;
    let wi = min(o, p.o - 1u) * p.q + min(q, p.q - 1u);
    let ok = o < p.o && q < p.q;
    out0[t] = select(0.0, in0[wi], ok);
    if ((p.flags & FLAG_HAS_DW) != 0u) {
        out1[t] = select(0.0, in1[wi], ok);
    }
}

// in0 = gy -> out0 = g. Lanes: groups of 4 consecutive columns, each looping over the op
// rows; total = npc / 4.
@compute @workgroup_size(LANE_WG)
fn lower_gy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let cl = cols_of(t);
    let ohw = p.oh * p.ow;
    let pix = cl.oy * p.ow + cl.ox;
    let j = t * 4u;
    for (var o = 0u; o < p.op; o++) {
        let ok = select(vec4<bool>(false), cl.ok, o < p.o);
        let gi = (cl.n * p.o + vec4<u32>(min(o, p.o - 1u))) * ohw + pix;
        let v = select(vec4<f32>(0.0), vec4<f32>(in0[gi.x], in0[gi.y], in0[gi.z], in0[gi.w]), ok);
        let d = o * p.npc + j;
        out0[d] = v.x;
        out0[d + 1u] = v.y;
        out0[d + 2u] = v.z;
        out0[d + 3u] = v.w;
    }
}

// in0 = gp -> out0 = gx. Lanes: groups of 4 consecutive input pixels (n, c, iy, ix .. ix + 3)
// of one input row (W4 = ceil(W / 4) groups per row), each gathering, per pixel, the patch
// entries of every tap that reads it (no atomics); total = nb C H W4.
@compute @workgroup_size(LANE_WG)
fn lower_col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let w4 = (p.w + 3u) / 4u;
    let ix0 = (t % w4) * 4u;
    let r = t / w4;
    let iy = r % p.h;
    let r2 = r / p.h;
    let c = r2 % p.c;
    let n = r2 / p.c;
    let s = p.stride;
    let col0 = n * p.oh * p.ow;
    let ixv = vec4<i32>(vec4<u32>(ix0) + vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(p.pad));
    let owv = vec4<i32>(i32(p.ow));
    let zero = vec4<i32>(0);
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = i32(iy + p.pad) - i32(ky);
        if (ty < 0) { break; }
        if (u32(ty) % s != 0u || u32(ty) / s >= p.oh) { continue; }
        let rowq = (c * p.kh + ky) * p.kw;
        let col = col0 + (u32(ty) / s) * p.ow;
        for (var kx = 0u; kx < p.kw; kx++) {
            let tx = ixv - vec4<i32>(i32(kx));
            var ox = tx;
            var ok = (tx >= zero);
            if (s != 1u) {
                let txu = vec4<u32>(max(tx, zero));
                ok = select(vec4<bool>(false), ok, (txu % vec4<u32>(s)) == vec4<u32>(0u));
                ox = vec4<i32>(txu / vec4<u32>(s));
            }
            ok = select(vec4<bool>(false), ok, (ox < owv));
            let gi = vec4<u32>((rowq + kx) * p.npc + col) + vec4<u32>(clamp(ox, zero, owv - 1));
            acc += select(vec4<f32>(0.0), vec4<f32>(in0[gi.x], in0[gi.y], in0[gi.z], in0[gi.w]), ok);
        }
    }
    let xb = ((p.n0 + n) * p.c + c) * p.h * p.w + iy * p.w;
    for (var e = 0u; e < 4u; e++) {
        if (ix0 + e < p.w) { out0[xb + ix0 + e] = acc[e]; }
    }
}

// in0 = partials -> out0 = gw; total = O Q.
@compute @workgroup_size(LANE_WG)
fn lower_sum_wt(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let q = t % p.q;
    let o = t / p.q;
    let stride = p.q * p.op;
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += in0[s * stride + q * p.op + o];
    }
    out0[t] = acc;
}

// in0 = w [O, Q] -> out0 = [total / op, op]: w with zero rows below O and zero columns right
// of Q (here op is the padded Q).
@compute @workgroup_size(LANE_WG)
fn lower_pad_q(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let s = t % p.op;
    let r = t / p.op;
    out0[t] = select(0.0, in0[min(r, p.o - 1u) * p.q + min(s, p.q - 1u)], s < p.q && r < p.o);
}
