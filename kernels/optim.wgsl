// Optimiser updates over a flat parameter vector, one dispatch per step (PyTorch semantics,
// see src/cpu/optim.rs for the reference each entry point must match operation for operation).
// Bindings: w, g, s1, s2 (read: parameters, gradient, first and second state vectors);
// out, out2, out3 (read_write: new parameters, new first and second state vectors).
// Invocation i handles elements 4i .. 4i + 3, i = flat_index(gid, nwg) (include/index.wgsl), as
// one vec4 (fewer, wider loads: what CPU-emulated drivers run fastest). When n is not a
// multiple of 4 the last vec4 reaches past n: inputs are bound in 16-byte multiples, so it
// reads padding, and the outputs (fresh buffers, likewise padded) get values there that no
// tensor exposes.
// NaN or infinity in g is not filtered: it propagates into the outputs (the caller checks).

@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> g: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> s1: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> s2: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out2: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out3: array<vec4<f32>>;

// Plain SGD: out = w - lr * (g + wd * w)
@compute @workgroup_size(ELEMENT_WG)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= (p.n + 3u) / 4u) { return; }
    let wi = w[i];
    let gi = g[i] + p.wd * wi;
    out[i] = wi - p.lr * gi;
}

// SGD with momentum: g' = g + wd * w; buf = momentum * s1 + g' (buf = g' on the first step);
// d = g' + momentum * buf (Nesterov) or buf; out = w - lr * d, out2 = buf
@compute @workgroup_size(ELEMENT_WG)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= (p.n + 3u) / 4u) { return; }
    let wi = w[i];
    let gi = g[i] + p.wd * wi;
    var bi = gi;
    if ((p.flags & FLAG_HAS_STATE) != 0u) { bi = p.beta1 * s1[i] + gi; }
    var d = bi;
    if ((p.flags & FLAG_NESTEROV) != 0u) { d = gi + p.beta1 * bi; }
    out[i] = wi - p.lr * d;
    out2[i] = bi;
}

// Adam / AdamW: w *= decay (AdamW) or g' = g + wd * w (Adam);
// m = beta1 * s1 + (1 - beta1) * g'; v = beta2 * s2 + (1 - beta2) * g'^2 (s1 = s2 = 0 on the
// first step); out = w - step * m / (sqrt(v) / bc2_sqrt + eps), out2 = m, out3 = v
@compute @workgroup_size(ELEMENT_WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= (p.n + 3u) / 4u) { return; }
    var wi = w[i];
    var gi = g[i];
    if ((p.flags & FLAG_DECOUPLED) != 0u) {
        wi = wi * p.decay;
    } else {
        gi = gi + p.wd * wi;
    }
    var m0 = vec4<f32>(0.0);
    var v0 = vec4<f32>(0.0);
    if ((p.flags & FLAG_HAS_STATE) != 0u) {
        m0 = s1[i];
        v0 = s2[i];
    }
    let m = p.beta1 * m0 + (1.0 - p.beta1) * gi;
    let v = p.beta2 * v0 + (1.0 - p.beta2) * (gi * gi);
    let denom = sqrt(v) / p.bc2_sqrt + p.eps;
    out[i] = wi - p.lr * (m / denom);
    out2[i] = m;
    out3[i] = v;
}
