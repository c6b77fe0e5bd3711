// Elementwise ops over flat f32 arrays. Bindings: a, b (read), out, out2 (read_write).
// Invocation i handles element i = flat_index(gid, nwg) (include/index.wgsl).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out2: array<f32>;

// out = alpha * a + beta * b
@compute @workgroup_size(ELEMENT_WG)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.alpha * a[i] + p.beta * b[i];
}

// out = a * b
@compute @workgroup_size(ELEMENT_WG)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = a[i] * b[i];
}

// out = alpha * a
@compute @workgroup_size(ELEMENT_WG)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.alpha * a[i];
}

// out = alpha
@compute @workgroup_size(ELEMENT_WG)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = p.alpha;
}

// out = max(a, 0)
@compute @workgroup_size(ELEMENT_WG)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = max(a[i], 0.0);
}

// out = a * [b > 0]   (the ReLU backward rule: a is the cotangent, b the ReLU input or output)
@compute @workgroup_size(ELEMENT_WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = select(0.0, a[i], b[i] > 0.0);
}

// Fused forward mode: out = max(a, 0), out2 = b * [a > 0]   (a primal, b tangent)
@compute @workgroup_size(ELEMENT_WG)
fn relu_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let x = a[i];
    out[i] = max(x, 0.0);
    out2[i] = select(0.0, b[i], x > 0.0);
}

// out[r, c] = a[r, c] + b[c], then ReLU with FLAG_RELU
@compute @workgroup_size(ELEMENT_WG)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    var v = a[i] + b[i % p.cols];
    if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
    out[i] = v;
}

// out[dst_offset + i] = a[src_offset + i] for i < n: slices of a flat vector.
// Writes only its range of `out`, so several dispatches can assemble one vector.
@compute @workgroup_size(ELEMENT_WG)
fn copy_range(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[p.dst_offset + i] = a[p.src_offset + i];
}
