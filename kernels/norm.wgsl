// Batch normalisation over NCHW, or [N, C] with hw = 1. Bindings (include/batchnorm.wgsl):
// a0..a5 (read), o0..o2 (read_write); each entry point lists what it binds.
//
// Channel entry points (bn_train, bn_jvp, bn_backward, bn_backward_jvp, bn_eval_backward): one
// workgroup per channel c = wid.x + wid.y * nwg.x. The channel's count = n * hw elements are
// numbered k = nn * hw + j (sample nn, pixel j; `at` of include/batchnorm.wgsl gives the
// flat index); invocation lid owns k = lid, lid + WG, ... and accumulates its sums serially,
// then the workgroup adds its WG partials in a tree in workgroup memory (wg_sum, four sums at a
// time). norm_split.wgsl spreads each channel over several workgroups instead (hardware GPUs).
// Statistics are two-pass: the mean first, then sums of centred values.
//
// Notation: mu mean, s = 1 / sqrt(var + eps) (invstd, var biased), xh = (x - mu) s,
// mean(.) a mean over the channel's count elements.
//
// Elementwise entry points: bn_eval over all elements, bn_update_running over channels, one
// invocation each (flat_index, include/index.wgsl).

// Invocations per workgroup of the channel entry points, a power of two (the host specialises it
// to 64 or 256 by channel length).
const WG: u32 = 256u;

// The channel's mean of a0 (x).
fn channel_mean(c: u32, lid: u32) -> f32 {
    var s1 = 0.0;
    for (var k = lid; k < p.count; k += WG) {
        s1 += a0[at(c, k)];
    }
    return wg_sum(lid, vec4<f32>(s1, 0.0, 0.0, 0.0)).x / f32(p.count);
}

// Training forward. a0 x, a1 gamma, a2 beta -> o0 y, o1 mean [C], o2 invstd [C].
@compute @workgroup_size(WG)
fn bn_train(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.c) {
        return;
    }
    let inv_m = 1.0 / f32(p.count);
    let mu = channel_mean(c, lid);
    var s2 = 0.0;
    for (var k = lid; k < p.count; k += WG) {
        let d = a0[at(c, k)] - mu;
        s2 += d * d;
    }
    let variance = wg_sum(lid, vec4<f32>(s2, 0.0, 0.0, 0.0)).x * inv_m;
    let s = 1.0 / sqrt(variance + p.eps);
    let gs = a1[c] * s;
    let b = a2[c];
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        o0[i] = (a0[i] - mu) * gs + b;
    }
    if (lid == 0u) {
        o1[c] = mu;
        o2[c] = s;
    }
}

// Training forward mode. a0 x, a1 dx, a2 gamma, a3 dgamma, a4 beta, a5 dbeta -> o0 y, o1 dy:
// dxh = s (dx - mean(dx) - xh mean(xh dx)), dy = dgamma xh + gamma dxh + dbeta.
@compute @workgroup_size(WG)
fn bn_jvp(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.c) {
        return;
    }
    let inv_m = 1.0 / f32(p.count);
    var s1 = vec2<f32>(0.0);
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        s1 += vec2<f32>(a0[i], a1[i]);
    }
    let t1 = wg_sum(lid, vec4<f32>(s1, 0.0, 0.0)) * inv_m;
    let mu = t1.x;
    let mdx = t1.y;
    var s2 = vec2<f32>(0.0);
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let d = a0[i] - mu;
        s2 += vec2<f32>(d * d, d * a1[i]);
    }
    let t2 = wg_sum(lid, vec4<f32>(s2, 0.0, 0.0)) * inv_m;
    let s = 1.0 / sqrt(t2.x + p.eps);
    let mxdx = t2.y * s;
    let g = a2[c];
    let dg = a3[c];
    let b = a4[c];
    let db = a5[c];
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let h = (a0[i] - mu) * s;
        let dh = s * (a1[i] - mdx - h * mxdx);
        o0[i] = g * h + b;
        o1[i] = dg * h + g * dh + db;
    }
}

// Training backward. a0 gy, a1 x, a2 gamma, a3 mean [C], a4 invstd [C] -> o0 gx, o1 ggamma,
// o2 gbeta: gbeta = sum(gy), ggamma = sum(gy xh), gx = gamma s (gy - mean(gy) - xh mean(gy xh)).
@compute @workgroup_size(WG)
fn bn_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.c) {
        return;
    }
    let inv_m = 1.0 / f32(p.count);
    let mu = a3[c];
    let s = a4[c];
    var s1 = vec2<f32>(0.0);
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let gy = a0[i];
        s1 += vec2<f32>(gy, gy * (a1[i] - mu));
    }
    let t = wg_sum(lid, vec4<f32>(s1, 0.0, 0.0));
    let sg = t.x;
    let sgx = t.y * s;
    let a = sg * inv_m;
    let b = sgx * inv_m;
    let gs = a2[c] * s;
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let h = (a1[i] - mu) * s;
        o0[i] = gs * (a0[i] - a - h * b);
    }
    if (lid == 0u) {
        o1[c] = sgx;
        o2[c] = sg;
    }
}

// Tangents of the training backward (statistics recomputed from x). a0 gy, a1 dgy, a2 x, a3 dx,
// a4 gamma, a5 dgamma -> o0 dgx, o1 dggamma, o2 dgbeta. With a = mean(gy), b = mean(gy xh),
// ds = -s^2 mean(xh dx), da = mean(dgy), db = mean(dgy xh) + s (mean(gy dx) - a mean(dx) -
// b mean(xh dx)) and dxh as in bn_jvp:
// dgx = (dgamma s + gamma ds)(gy - a - xh b) + gamma s (dgy - da - dxh b - xh db),
// dggamma = count db, dgbeta = count da.
@compute @workgroup_size(WG)
fn bn_backward_jvp(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.c) {
        return;
    }
    let inv_m = 1.0 / f32(p.count);
    // Pass 1: sums that need no statistics.
    var u1 = vec4<f32>(0.0);
    var u2 = 0.0;
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let gy = a0[i];
        let dx = a3[i];
        u1 += vec4<f32>(a2[i], gy, dx, a1[i]);
        u2 += gy * dx;
    }
    let t1 = wg_sum(lid, u1) * inv_m;
    let mgdx = wg_sum(lid, vec4<f32>(u2, 0.0, 0.0, 0.0)).x * inv_m;
    let mu = t1.x;
    let a = t1.y;
    let mdx = t1.z;
    let da = t1.w;
    // Pass 2: centred sums.
    var v = vec4<f32>(0.0);
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let d = a2[i] - mu;
        v += vec4<f32>(d * d, a0[i] * d, d * a3[i], a1[i] * d);
    }
    let t2 = wg_sum(lid, v) * inv_m;
    let s = 1.0 / sqrt(t2.x + p.eps);
    let b = t2.y * s;
    let mxdx = t2.z * s;
    let mdgx = t2.w * s;
    let ds = -s * s * mxdx;
    let db = mdgx + s * (mgdx - a * mdx - b * mxdx);
    let g = a4[c];
    let dg = a5[c];
    let coef_r = dg * s + g * ds;
    let gs = g * s;
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let h = (a2[i] - mu) * s;
        let dh = s * (a3[i] - mdx - h * mxdx);
        let r = a0[i] - a - h * b;
        let dr = a1[i] - da - dh * b - h * db;
        o0[i] = coef_r * r + gs * dr;
    }
    if (lid == 0u) {
        o1[c] = f32(p.count) * db;
        o2[c] = f32(p.count) * da;
    }
}

// Eval backward. a0 gy, a1 x, a2 gamma, a3 running_mean, a4 running_var -> o0 gx, o1 ggamma,
// o2 gbeta: s = 1 / sqrt(running_var + eps), gx = gy gamma s, ggamma = sum(gy xh),
// gbeta = sum(gy).
@compute @workgroup_size(WG)
fn bn_eval_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.c) {
        return;
    }
    let mu = a3[c];
    let s = 1.0 / sqrt(a4[c] + p.eps);
    let gs = a2[c] * s;
    var s1 = vec2<f32>(0.0);
    for (var k = lid; k < p.count; k += WG) {
        let i = at(c, k);
        let gy = a0[i];
        o0[i] = gy * gs;
        s1 += vec2<f32>(gy, gy * (a1[i] - mu));
    }
    let t = wg_sum(lid, vec4<f32>(s1, 0.0, 0.0));
    if (lid == 0u) {
        o1[c] = t.y * s;
        o2[c] = t.x;
    }
}

// Eval forward, one invocation per element. a0 x, a1 gamma, a2 beta, a3 running_mean,
// a4 running_var -> o0 y = gamma (x - running_mean) / sqrt(running_var + eps) + beta.
@compute @workgroup_size(ELEMENT_WG)
fn bn_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.total) {
        return;
    }
    let c = (i / p.hw) % p.c;
    let s = 1.0 / sqrt(a4[c] + p.eps);
    o0[i] = (a0[i] - a3[c]) * (a1[c] * s) + a2[c];
}

// Running statistics, one invocation per channel. a0 running_mean, a1 running_var, a2 mean,
// a3 invstd -> o0 new mean, o1 new var:
// new = (1 - momentum) old + momentum batch, the batch variance unbiased:
// max(1 / invstd^2 - eps, 0) * unbias.
@compute @workgroup_size(ELEMENT_WG)
fn bn_update_running(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) {
        return;
    }
    let mo = p.momentum;
    let s = a3[c];
    let var_b = max(1.0 / (s * s) - p.eps, 0.0);
    o0[c] = (1.0 - mo) * a0[c] + mo * a2[c];
    o1[c] = (1.0 - mo) * a1[c] + mo * var_b * p.unbias;
}
