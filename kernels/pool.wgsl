// 2-D max pooling, layout NCHW, square window k, square stride, no padding:
// OH = (H - k) / stride + 1. The argmax of a window is its first maximum in row-major window
// order, stored as the flat offset of the input element (u32).
//
// Bindings:      maxpool2d_fwd  maxpool2d_jvp  maxpool2d_bwd
//   1 x          x              x              -
//   2 b          -              dx             gy
//   3 idx_in     -              -              argmax
//   4 y          y              y              gx
//   5 idx_out    argmax         argmax         -
//   6 dy         -              dy             -
// Invocation i = lane(gid, nwg) (include/index.wgsl) handles one output element (fwd, jvp)
// or one (n, c) plane (bwd).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> idx_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> idx_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> dy: array<f32>;

// The first maximum of the window of output element i: (value, flat input offset).
fn window_max(i: u32) -> vec2<u32> {
    let ohw = p.oh * p.ow;
    let plane = i / ohw;
    let r = i % ohw;
    let oy = r / p.ow;
    let ox = r % p.ow;
    let base = plane * p.h * p.w + oy * p.stride * p.w + ox * p.stride;
    var best_i = base;
    var best = x[base];
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            let j = base + ky * p.w + kx;
            let v = x[j];
            if (v > best) {
                best = v;
                best_i = j;
            }
        }
    }
    return vec2<u32>(bitcast<u32>(best), best_i);
}

@compute @workgroup_size(LANE_WG)
fn maxpool2d_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.total) { return; }
    let m = window_max(i);
    y[i] = bitcast<f32>(m.x);
    idx_out[i] = m.y;
}

// Fused forward mode: y, dy = dx[argmax], argmax.
@compute @workgroup_size(LANE_WG)
fn maxpool2d_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.total) { return; }
    let m = window_max(i);
    y[i] = bitcast<f32>(m.x);
    dy[i] = b[m.y];
    idx_out[i] = m.y;
}

// One invocation per (n, c) plane: zero the plane of gx, then gx[argmax[j]] += gy[j] over the
// plane's outputs j in order. Exact for overlapping windows without atomics (planes are
// disjoint), and independent of window and stride. Params: total = planes, h = H * W,
// w = OH * OW. An index outside its plane is ignored.
@compute @workgroup_size(LANE_WG)
fn maxpool2d_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = lane(gid, nwg);
    if (plane >= p.total) { return; }
    let hw = p.h;
    let ohw = p.w;
    let xb = plane * hw;
    for (var i = 0u; i < hw; i++) {
        y[xb + i] = 0.0;
    }
    let ob = plane * ohw;
    for (var j = 0u; j < ohw; j++) {
        let i = idx_in[ob + j];
        if (i >= xb && i - xb < hw) {
            y[i] += b[ob + j];
        }
    }
}
