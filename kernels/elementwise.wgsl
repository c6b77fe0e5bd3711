// Elementwise ops over flat f32 arrays. Bindings: a, b (read), out, out2 (read_write).
// Invocation i handles element i = gid.x + gid.y * (num_workgroups.x * 256).

struct Params {
    n: u32,       // elements
    cols: u32,    // row length for the broadcast ops
    flag: u32,    // 1: apply ReLU after the op (add_bias)
    pad: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out2: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// out = alpha * a + beta * b
@compute @workgroup_size(256)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.alpha * a[i] + p.beta * b[i];
}

// out = a * b
@compute @workgroup_size(256)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = a[i] * b[i];
}

// out = alpha * a
@compute @workgroup_size(256)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.alpha * a[i];
}

// out = alpha
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.alpha;
}

// out = max(a, 0)
@compute @workgroup_size(256)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = max(a[i], 0.0);
}

// out = a * [b > 0]   (the ReLU backward rule: a is the cotangent, b the ReLU input or output)
@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = select(0.0, a[i], b[i] > 0.0);
}

// Fused forward mode: out = max(a, 0), out2 = b * [a > 0]   (a primal, b tangent)
@compute @workgroup_size(256)
fn relu_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let x = a[i];
    out[i] = max(x, 0.0);
    out2[i] = select(0.0, b[i], x > 0.0);
}

// out[r, c] = a[r, c] + b[c], then ReLU when flag == 1
@compute @workgroup_size(256)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    var v = a[i] + b[i % p.cols];
    if (p.flag == 1u) { v = max(v, 0.0); }
    out[i] = v;
}

// out[dst + i] = a[src + i] for i < n  (src = p.cols, dst = p.flag): slices of a flat vector.
// Writes only its range of `out`, so several dispatches can assemble one vector.
@compute @workgroup_size(256)
fn copy_range(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[p.flag + i] = a[p.cols + i];
}
