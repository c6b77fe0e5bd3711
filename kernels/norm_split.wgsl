// Training-mode batch normalisation with each channel spread over several workgroups (hardware
// GPUs, where norm.wgsl's one workgroup per channel would leave most of the GPU idle on layers
// with few channels and many pixels; src/ops/norm/split.rs picks it). Notation and element
// numbering as in norm.wgsl. Bindings (include/batchnorm.wgsl): a0..a5 (read), o0..o2
// (read_write); each entry point lists what it binds. An op is up to four dispatches:
//
// 1. bn_sums, kind p.kind (BN_SUMS_*): workgroup (split wid.x, channel wid.y) adds up to eight
//    per-element terms over its chunk of the channel, elements [split chunk, (split + 1) chunk),
//    into the partials o0[(c splits + split) 8 + t] (serial sums per invocation, then a tree in
//    workgroup memory, as norm.wgsl). The first pass's term 0 is always x.
// 2. Two-pass statistics: bn_sums again over terms centred on the mean, which every
//    invocation first recomputes from the first pass's partials.
// 3. bn_finish_<op>: one invocation per channel adds the partials, writes the channel's outputs
//    (mean and invstd, or the parameter gradients) and the channel's affine coefficients:
//    o0[c COEFFS + ...]: the centres of up to four inputs, then per output four weights and a
//    constant.
// 4. bn_apply: one invocation per element, out_j = sum_m w_jm (in_m - centre_m) + b_j, for
//    p.inputs inputs a0..a3 (the coefficients in a4) and p.outputs outputs o0, o1.
//
// The formulas are those of norm.wgsl's entry points, rearranged as affine maps of the inputs.

// Invocations per workgroup of bn_sums, a power of two (the host specialises it).
const WG: u32 = 256u;
// Terms per partial.
const TERMS: u32 = 8u;
// Coefficients per channel: 4 centres, then 5 per output (4 weights, 1 constant) for 2 outputs.
const COEFFS: u32 = 16u;

// First word of the partial of channel c and split `split`.
fn partial_at(c: u32, split: u32) -> u32 {
    return (c * p.splits + split) * TERMS;
}

// The channel's mean of x from the first pass's partials in a4 (term 0 is x), added in the
// order of first_means so that the finish kernels see the same mean.
fn first_pass_mean(c: u32) -> f32 {
    var s = 0.0;
    for (var k = 0u; k < p.splits; k++) {
        s += a4[partial_at(c, k)];
    }
    return s * (1.0 / f32(p.count));
}

// Partial sums over one chunk. By kind (inputs; terms):
// BN_SUMS_X (a0 x; x), BN_SUMS_X_DX (a0 x, a1 dx; x, dx),
// BN_SUMS_BACKWARD (a0 gy, a1 dgy, a2 x, a3 dx; x, gy, dx, dgy, gy dx),
// BN_SUMS_GY_XC (a0 gy, a1 x, a4 centre m [C]; gy, gy (x - m)), and with d = x - mean, the
// mean from the first pass's partials in a4: BN_SUMS_CENTRED (a0 x; d^2),
// BN_SUMS_CENTRED_DX (a0 x, a1 dx; d^2, d dx),
// BN_SUMS_CENTRED_BACKWARD (a0 gy, a1 dgy, a2 x, a3 dx; d^2, gy d, d dx, dgy d) -> o0 partials.
@compute @workgroup_size(WG)
fn bn_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let split = wid.x;
    let c = wid.y;
    if (c >= p.c || split >= p.splits) {
        return;
    }
    let k1 = min(p.count, (split + 1u) * p.chunk);
    let k0 = split * p.chunk + lid;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    switch p.kind {
        case BN_SUMS_X: {
            for (var k = k0; k < k1; k += WG) {
                lo.x += a0[at(c, k)];
            }
        }
        case BN_SUMS_X_DX: {
            for (var k = k0; k < k1; k += WG) {
                let i = at(c, k);
                lo += vec4<f32>(a0[i], a1[i], 0.0, 0.0);
            }
        }
        case BN_SUMS_BACKWARD: {
            for (var k = k0; k < k1; k += WG) {
                let i = at(c, k);
                let gy = a0[i];
                let dx = a3[i];
                lo += vec4<f32>(a2[i], gy, dx, a1[i]);
                hi.x += gy * dx;
            }
        }
        case BN_SUMS_GY_XC: {
            let m = a4[c];
            for (var k = k0; k < k1; k += WG) {
                let i = at(c, k);
                let gy = a0[i];
                lo += vec4<f32>(gy, gy * (a1[i] - m), 0.0, 0.0);
            }
        }
        case BN_SUMS_CENTRED: {
            let mu = first_pass_mean(c);
            for (var k = k0; k < k1; k += WG) {
                let d = a0[at(c, k)] - mu;
                lo.x += d * d;
            }
        }
        case BN_SUMS_CENTRED_DX: {
            let mu = first_pass_mean(c);
            for (var k = k0; k < k1; k += WG) {
                let i = at(c, k);
                let d = a0[i] - mu;
                lo += vec4<f32>(d * d, d * a1[i], 0.0, 0.0);
            }
        }
        case BN_SUMS_CENTRED_BACKWARD: {
            let mu = first_pass_mean(c);
            for (var k = k0; k < k1; k += WG) {
                let i = at(c, k);
                let d = a2[i] - mu;
                lo += vec4<f32>(d * d, a0[i] * d, d * a3[i], a1[i] * d);
            }
        }
        default: {}
    }
    let t_lo = wg_sum(lid, lo);
    var t_hi = vec4<f32>(0.0);
    if (p.kind == BN_SUMS_BACKWARD) {
        t_hi = wg_sum(lid, hi);
    }
    if (lid == 0u) {
        let o = partial_at(c, split);
        for (var t = 0u; t < 4u; t++) {
            o0[o + t] = t_lo[t];
            o0[o + 4u + t] = t_hi[t];
        }
    }
}

// Totals of channel c's partials in a0 (first pass), over the count: means of the terms.
fn first_means(c: u32) -> array<vec4<f32>, 2> {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var k = 0u; k < p.splits; k++) {
        let i = partial_at(c, k);
        lo += vec4<f32>(a0[i], a0[i + 1u], a0[i + 2u], a0[i + 3u]);
        hi += vec4<f32>(a0[i + 4u], a0[i + 5u], a0[i + 6u], a0[i + 7u]);
    }
    let inv_m = 1.0 / f32(p.count);
    return array<vec4<f32>, 2>(lo * inv_m, hi * inv_m);
}

// Means of channel c's second-pass terms (partials in a1).
fn second_means(c: u32) -> vec4<f32> {
    var lo = vec4<f32>(0.0);
    for (var k = 0u; k < p.splits; k++) {
        let i = partial_at(c, k);
        lo += vec4<f32>(a1[i], a1[i + 1u], a1[i + 2u], a1[i + 3u]);
    }
    return lo / f32(p.count);
}

// Writes channel c's coefficients: input centres, then output 0's weights w0 and constant b0,
// output 1's w1 and b1.
fn put_coefficients(c: u32, centre: vec4<f32>, w0: vec4<f32>, b0: f32, w1: vec4<f32>, b1: f32) {
    let o = c * COEFFS;
    for (var t = 0u; t < 4u; t++) {
        o0[o + t] = centre[t];
        o0[o + 4u + t] = w0[t];
        o0[o + 9u + t] = w1[t];
    }
    o0[o + 8u] = b0;
    o0[o + 13u] = b1;
}

// Training forward. a0 partials of x, a1 partials of d^2, a2 gamma, a3 beta -> o0
// coefficients (input x: y = gamma s (x - mu) + beta), o1 mean [C], o2 invstd [C].
@compute @workgroup_size(ELEMENT_WG)
fn bn_finish_train(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) {
        return;
    }
    let mu = first_means(c)[0].x;
    let s = 1.0 / sqrt(second_means(c).x + p.eps);
    let zero = vec4<f32>(0.0);
    put_coefficients(c, vec4<f32>(mu, 0.0, 0.0, 0.0), vec4<f32>(a2[c] * s, 0.0, 0.0, 0.0), a3[c], zero, 0.0);
    o1[c] = mu;
    o2[c] = s;
}

// Training forward mode. a0 partials of (x, dx), a1 partials of (d^2, d dx), a2 gamma,
// a3 dgamma, a4 beta, a5 dbeta -> o0 coefficients (inputs x, dx): y = g s (x - mu) + b,
// dy = g dxh + dg xh + db = (dg - g s mxdx) s (x - mu) + g s dx + db - g s mean(dx), with
// mxdx = mean(xh dx).
@compute @workgroup_size(ELEMENT_WG)
fn bn_finish_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) {
        return;
    }
    let t1 = first_means(c)[0];
    let t2 = second_means(c);
    let s = 1.0 / sqrt(t2.x + p.eps);
    let mxdx = t2.y * s;
    let gs = a2[c] * s;
    let wx = (a3[c] - gs * mxdx) * s;
    put_coefficients(
        c,
        vec4<f32>(t1.x, 0.0, 0.0, 0.0),
        vec4<f32>(gs, 0.0, 0.0, 0.0),
        a4[c],
        vec4<f32>(wx, gs, 0.0, 0.0),
        a5[c] - gs * t1.y,
    );
}

// Training backward. a0 partials of (gy, gy (x - mean)), a2 gamma, a3 mean, a4 invstd -> o0
// coefficients (inputs gy, x): gx = g s (gy - a - xh b) with a = mean(gy), b = mean(gy xh);
// o1 ggamma = sum(gy xh), o2 gbeta = sum(gy).
@compute @workgroup_size(ELEMENT_WG)
fn bn_finish_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) {
        return;
    }
    let t = first_means(c)[0];
    let s = a4[c];
    let b = t.y * s;
    let gs = a2[c] * s;
    let zero = vec4<f32>(0.0);
    put_coefficients(c, vec4<f32>(0.0, a3[c], 0.0, 0.0), vec4<f32>(gs, -gs * b * s, 0.0, 0.0), -gs * t.x, zero, 0.0);
    let m = f32(p.count);
    o1[c] = m * b;
    o2[c] = m * t.x;
}

// Tangents of the training backward. a0 partials of (x, gy, dx, dgy, gy dx), a1 partials of
// (d^2, gy d, d dx, dgy d), a2 gamma, a3 dgamma -> o0 coefficients (inputs gy, dgy, x, dx),
// o1 dggamma, o2 dgbeta. With a, b, ds, da, db, dxh as in norm.wgsl's bn_backward_jvp,
// dgx = r (gy - a - xh b) + g s (dgy - da - dxh b - xh db), r = dg s + g ds, is affine:
// xh's weight is h = -r b - g s db + g s b s mean(xh dx).
@compute @workgroup_size(ELEMENT_WG)
fn bn_finish_backward_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) {
        return;
    }
    let t1 = first_means(c);
    let mu = t1[0].x;
    let a = t1[0].y;
    let mdx = t1[0].z;
    let da = t1[0].w;
    let mgdx = t1[1].x;
    let t2 = second_means(c);
    let s = 1.0 / sqrt(t2.x + p.eps);
    let b = t2.y * s;
    let mxdx = t2.z * s;
    let mdgx = t2.w * s;
    let ds = -s * s * mxdx;
    let db = mdgx + s * (mgdx - a * mdx - b * mxdx);
    let gs = a2[c] * s;
    let r = a3[c] * s + a2[c] * ds;
    let h = -r * b - gs * db + gs * b * s * mxdx;
    let zero = vec4<f32>(0.0);
    put_coefficients(
        c,
        vec4<f32>(0.0, 0.0, mu, 0.0),
        vec4<f32>(r, gs, h * s, -gs * b * s),
        -r * a - gs * da + gs * b * s * mdx,
        zero,
        0.0,
    );
    let m = f32(p.count);
    o1[c] = m * db;
    o2[c] = m * da;
}

// Eval backward. a0 partials of (gy, gy (x - running_mean)), a2 gamma, a4 running_var -> o0
// coefficients (input gy: gx = gy g s, s = 1 / sqrt(running_var + eps)), o1 ggamma =
// sum(gy xh), o2 gbeta = sum(gy).
@compute @workgroup_size(ELEMENT_WG)
fn bn_finish_eval_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) {
        return;
    }
    let t = first_means(c)[0];
    let s = 1.0 / sqrt(a4[c] + p.eps);
    let zero = vec4<f32>(0.0);
    put_coefficients(c, zero, vec4<f32>(a2[c] * s, 0.0, 0.0, 0.0), 0.0, zero, 0.0);
    let m = f32(p.count);
    o1[c] = m * t.y * s;
    o2[c] = m * t.x;
}

// The affine epilogue: a0..a3 the first p.inputs inputs, a4 the coefficients -> o0 (and o1
// when p.outputs is 2).
@compute @workgroup_size(ELEMENT_WG)
fn bn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let o = ((i / p.hw) % p.c) * COEFFS;
    var v = vec4<f32>(a0[i] - a4[o], 0.0, 0.0, 0.0);
    if (p.inputs > 1u) {
        v.y = a1[i] - a4[o + 1u];
    }
    if (p.inputs > 2u) {
        v.z = a2[i] - a4[o + 2u];
        v.w = a3[i] - a4[o + 3u];
    }
    o0[i] = dot(v, vec4<f32>(a4[o + 4u], a4[o + 5u], a4[o + 6u], a4[o + 7u])) + a4[o + 8u];
    if (p.outputs > 1u) {
        o1[i] = dot(v, vec4<f32>(a4[o + 9u], a4[o + 10u], a4[o + 11u], a4[o + 12u])) + a4[o + 13u];
    }
}
