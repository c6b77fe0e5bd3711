// Reductions. Bindings: a, b (read), out, out_u32 (read_write; only argmax_rows writes out_u32).
//
// reduce_pass: one pass of a tree reduction (p.op: REDUCE_*). Workgroup g reduces the chunk
// [g * LANE_WG * per, (g + 1) * LANE_WG * per) of `a` (and `b` for dot) to one partial out[g]:
// each invocation first accumulates `per` elements serially (strided by LANE_WG so that
// neighbouring invocations read neighbouring words), then the workgroup combines its LANE_WG
// values in a tree in workgroup memory. The host repeats passes over the partials (REDUCE_SUM or
// REDUCE_MAX) until one value remains; `scale` multiplies the partial (1 except on the last pass
// of a mean-like reduction).
//
// col_sum_pass: out[blk, c] = sum of a[r, c] for r in [blk * per, min(rows, (blk + 1) * per)):
// one pass of a blocked column sum; the host repeats it until one row remains.
//
// argmax_rows: out_u32[r] = first index of the largest value of row r (the op returns it as a
// tensor of u32 words).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_u32: array<u32>;

var<workgroup> sh: array<f32, LANE_WG>;

fn combine(x: f32, y: f32) -> f32 {
    if (p.op == REDUCE_MAX) {
        return max(x, y);
    }
    return x + y;
}

@compute @workgroup_size(LANE_WG)
fn reduce_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    let start = g * LANE_WG * p.per + lid;
    // Elements this invocation owns: start + k * LANE_WG for k < cnt.
    var cnt = 0u;
    if (start < p.n) {
        cnt = min(p.per, (p.n - start + LANE_WG - 1u) / LANE_WG);
    }
    var acc = p.identity;
    switch p.op {
        case REDUCE_MAX: {
            for (var k = 0u; k < cnt; k++) {
                acc = max(acc, a[start + k * LANE_WG]);
            }
        }
        case REDUCE_DOT: {
            for (var k = 0u; k < cnt; k++) {
                let i = start + k * LANE_WG;
                acc = acc + a[i] * b[i];
            }
        }
        case REDUCE_SQNORM: {
            for (var k = 0u; k < cnt; k++) {
                let v = a[start + k * LANE_WG];
                acc = acc + v * v;
            }
        }
        case REDUCE_SUM, default: {
            for (var k = 0u; k < cnt; k++) {
                acc = acc + a[start + k * LANE_WG];
            }
        }
    }
    sh[lid] = acc;
    workgroupBarrier();
    for (var s = LANE_WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sh[lid] = combine(sh[lid], sh[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u && g < p.groups) {
        out[g] = sh[0] * p.scale;
    }
}

@compute @workgroup_size(ELEMENT_WG)
fn col_sum_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.groups) {
        return;
    }
    let blk = i / p.cols;
    let c = i % p.cols;
    let r0 = blk * p.per;
    let r1 = min(p.n, r0 + p.per);
    var acc = 0.0;
    for (var r = r0; r < r1; r++) {
        acc = acc + a[r * p.cols + c];
    }
    out[i] = acc;
}

@compute @workgroup_size(LANE_WG)
fn argmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lane(gid, nwg);
    if (r >= p.n || p.cols == 0u) {
        return;
    }
    let base = r * p.cols;
    var best = 0u;
    var bv = a[base];
    for (var c = 1u; c < p.cols; c++) {
        let v = a[base + c];
        if (v > bv) {
            bv = v;
            best = c;
        }
    }
    out_u32[r] = best;
}
