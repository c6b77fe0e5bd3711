// Row-wise softmax and cross-entropy over logits z [rows, cols]. One invocation per row
// (r = lane(gid, nwg), include/index.wgsl), which makes three serial passes over its row: the
// row max m, the sum s = Σ exp(z - m), then the outputs (numerically stable: every exponent is
// <= 0).
// Bindings: z, dz, labels (read; labels are u32), out, out2 (read_write).
//
// Labels are not validated on the device: a label >= cols is clamped to cols - 1 so that no
// read goes out of bounds (the host checks labels that live on the CPU and the op refuses
// cols == 0).

@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> dz: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;

fn row_max(base: u32) -> f32 {
    var m = z[base];
    for (var c = 1u; c < p.cols; c++) {
        m = max(m, z[base + c]);
    }
    return m;
}

fn row_expsum(base: u32, m: f32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        s = s + exp(z[base + c] - m);
    }
    return s;
}

fn label_of(r: u32) -> u32 {
    return min(labels[r], p.cols - 1u);
}

// out = softmax(z) row-wise
@compute @workgroup_size(LANE_WG)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.rows || p.cols == 0u) { return; }
    let base = r * p.cols;
    let m = row_max(base);
    let inv = 1.0 / row_expsum(base, m);
    for (var c = 0u; c < p.cols; c++) {
        out[base + c] = exp(z[base + c] - m) * inv;
    }
}

// out = log_softmax(z) = z - m - log(s) row-wise
@compute @workgroup_size(LANE_WG)
fn log_softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.rows || p.cols == 0u) { return; }
    let base = r * p.cols;
    let m = row_max(base);
    let lse = m + log(row_expsum(base, m));
    for (var c = 0u; c < p.cols; c++) {
        out[base + c] = z[base + c] - lse;
    }
}

// out = p = softmax(z), out2 = p ⊙ (dz - <p, dz>) row-wise
@compute @workgroup_size(LANE_WG)
fn softmax_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.rows || p.cols == 0u) { return; }
    let base = r * p.cols;
    let m = row_max(base);
    let inv = 1.0 / row_expsum(base, m);
    var pd = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        pd = pd + exp(z[base + c] - m) * inv * dz[base + c];
    }
    for (var c = 0u; c < p.cols; c++) {
        let pc = exp(z[base + c] - m) * inv;
        out[base + c] = pc;
        out2[base + c] = pc * (dz[base + c] - pd);
    }
}

// out[r] = -log_softmax(z)[r, label[r]] (per-row loss; the op averages it with a reduction)
@compute @workgroup_size(LANE_WG)
fn cross_entropy_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.rows || p.cols == 0u) { return; }
    let base = r * p.cols;
    let m = row_max(base);
    let lse = m + log(row_expsum(base, m));
    out[r] = lse - z[base + label_of(r)];
}

// out = scale * (softmax(z) - onehot(label))
@compute @workgroup_size(LANE_WG)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.rows || p.cols == 0u) { return; }
    let base = r * p.cols;
    let m = row_max(base);
    let inv = 1.0 / row_expsum(base, m);
    let l = label_of(r);
    for (var c = 0u; c < p.cols; c++) {
        let pc = exp(z[base + c] - m) * inv;
        out[base + c] = p.scale * (pc - select(0.0, 1.0, c == l));
    }
}

// Fused forward mode of the cross-entropy gradient:
// out = scale * (p - onehot(label)), out2 = scale * p ⊙ (dz - <p, dz>), p = softmax(z)
@compute @workgroup_size(LANE_WG)
fn cross_entropy_backward_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.rows || p.cols == 0u) { return; }
    let base = r * p.cols;
    let m = row_max(base);
    let inv = 1.0 / row_expsum(base, m);
    let l = label_of(r);
    var pd = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        pd = pd + exp(z[base + c] - m) * inv * dz[base + c];
    }
    for (var c = 0u; c < p.cols; c++) {
        let pc = exp(z[base + c] - m) * inv;
        out[base + c] = p.scale * (pc - select(0.0, 1.0, c == l));
        out2[base + c] = p.scale * pc * (dz[base + c] - pd);
    }
}
