// Optimiser updates over a flat parameter vector, one dispatch per step (PyTorch semantics,
// see src/cpu/optim.rs for the reference each entry point must match operation for operation).
// Bindings: w, g, s1, s2 (read: parameters, gradient, first and second state vectors);
// out, out2, out3 (read_write: new parameters, new first and second state vectors).
// Invocation i handles elements 4i .. 4i + 3, i = gid.x + gid.y * (num_workgroups.x * 256), as
// one vec4 (fewer, wider loads: what CPU-emulated drivers run fastest). When n is not a
// multiple of 4 the last vec4 reaches past n: inputs are bound in 16-byte multiples, so it
// reads padding, and the outputs (fresh buffers, likewise padded) get values there that no
// tensor exposes.
// NaN or infinity in g is not filtered: it propagates into the outputs (the caller checks).

struct Params {
    n: u32,          // elements
    flags: u32,      // bit 0: s1 (and s2) hold state (else: first step, state starts at zero)
                     // bit 1: Nesterov momentum (sgd_momentum)
                     // bit 2: decoupled weight decay (adam: AdamW)
    pad0: u32,
    pad1: u32,
    lr: f32,         // learning rate (sgd*); step size lr / (1 - beta1^t) (adam)
    a: f32,          // momentum (sgd_momentum); beta1 (adam)
    b: f32,          // beta2 (adam)
    eps: f32,        // epsilon (adam)
    wd: f32,         // L2 weight decay added to the gradient (sgd*, adam without flag 4)
    decay: f32,      // multiplier 1 - lr * weight_decay of w (adam with flag 4)
    bc2_sqrt: f32,   // sqrt(1 - beta2^t) (adam)
    pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> g: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> s1: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> s2: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out2: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out3: array<vec4<f32>>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Plain SGD: out = w - lr * (g + wd * w)
@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= (p.n + 3u) / 4u) { return; }
    let wi = w[i];
    let gi = g[i] + p.wd * wi;
    out[i] = wi - p.lr * gi;
}

// SGD with momentum: g' = g + wd * w; buf = momentum * s1 + g' (buf = g' on the first step);
// d = g' + momentum * buf (Nesterov) or buf; out = w - lr * d, out2 = buf
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= (p.n + 3u) / 4u) { return; }
    let wi = w[i];
    let gi = g[i] + p.wd * wi;
    var bi = gi;
    if ((p.flags & 1u) != 0u) { bi = p.a * s1[i] + gi; }
    var d = bi;
    if ((p.flags & 2u) != 0u) { d = gi + p.a * bi; }
    out[i] = wi - p.lr * d;
    out2[i] = bi;
}

// Adam / AdamW: w *= decay (AdamW) or g' = g + wd * w (Adam);
// m = beta1 * s1 + (1 - beta1) * g'; v = beta2 * s2 + (1 - beta2) * g'^2 (s1 = s2 = 0 on the
// first step); out = w - step * m / (sqrt(v) / bc2_sqrt + eps), out2 = m, out3 = v
@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= (p.n + 3u) / 4u) { return; }
    var wi = w[i];
    var gi = g[i];
    if ((p.flags & 4u) != 0u) {
        wi = wi * p.decay;
    } else {
        gi = gi + p.wd * wi;
    }
    var m0 = vec4<f32>(0.0);
    var v0 = vec4<f32>(0.0);
    if ((p.flags & 1u) != 0u) {
        m0 = s1[i];
        v0 = s2[i];
    }
    let m = p.a * m0 + (1.0 - p.a) * gi;
    let v = p.b * v0 + (1.0 - p.b) * (gi * gi);
    let denom = sqrt(v) / p.bc2_sqrt + p.eps;
    out[i] = wi - p.lr * (m / denom);
    out2[i] = m;
    out3[i] = v;
}
