// Reductions. Bindings: a, b (read), out, out_u32 (read_write; only argmax_rows writes out_u32).
//
// reduce_pass: one pass of a tree reduction. Workgroup g reduces the chunk
// [g * WG * per, (g + 1) * WG * per) of `a` (and `b` for dot) to one partial out[g]: each
// invocation first accumulates `per` elements serially (strided by WG so that neighbouring
// invocations read neighbouring words), then the workgroup combines its WG values in a tree in
// workgroup memory. The host repeats passes over the partials (op SUM or MAX) until one value
// remains; `scale` multiplies the partial (1 except on the last pass of a mean-like reduction).
//
// col_sum_pass: out[blk, c] = sum of a[r, c] for r in [blk * per, min(rows, (blk + 1) * per)):
// one pass of a blocked column sum; the host repeats it until one row remains.
//
// argmax_rows: out_u32[r] = first index of the largest value of row r (the op returns it as a
// tensor of u32 words).

const WG: u32 = 64u;

const OP_SUM = 0u;
const OP_MAX = 1u;
const OP_DOT = 2u;
const OP_SQNORM = 3u;

struct Params {
    n: u32,        // elements in (reduce_pass) or rows (col_sum_pass, argmax_rows)
    cols: u32,     // row length (col_sum_pass, argmax_rows)
    per: u32,      // elements per invocation (reduce_pass) or rows per block (col_sum_pass)
    op: u32,       // OP_* (reduce_pass)
    groups: u32,   // partials written (reduce_pass) or output elements (col_sum_pass)
    pad: u32,
    scale: f32,    // multiplies each partial (reduce_pass)
    identity: f32, // identity of the op: 0 for sums, -inf for max
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_u32: array<u32>;

var<workgroup> sh: array<f32, WG>;

fn combine(x: f32, y: f32) -> f32 {
    if (p.op == OP_MAX) {
        return max(x, y);
    }
    return x + y;
}

@compute @workgroup_size(WG)
fn reduce_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    let start = g * WG * p.per + lid;
    // Elements this invocation owns: start + k * WG for k < cnt.
    var cnt = 0u;
    if (start < p.n) {
        cnt = min(p.per, (p.n - start + WG - 1u) / WG);
    }
    var acc = p.identity;
    switch p.op {
        case OP_MAX: {
            for (var k = 0u; k < cnt; k++) {
                acc = max(acc, a[start + k * WG]);
            }
        }
        case OP_DOT: {
            for (var k = 0u; k < cnt; k++) {
                let i = start + k * WG;
                acc = acc + a[i] * b[i];
            }
        }
        case OP_SQNORM: {
            for (var k = 0u; k < cnt; k++) {
                let v = a[start + k * WG];
                acc = acc + v * v;
            }
        }
        case OP_SUM, default: {
            for (var k = 0u; k < cnt; k++) {
                acc = acc + a[start + k * WG];
            }
        }
    }
    sh[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sh[lid] = combine(sh[lid], sh[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u && g < p.groups) {
        out[g] = sh[0] * p.scale;
    }
}

@compute @workgroup_size(256)
fn col_sum_pass(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
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

@compute @workgroup_size(64)
fn argmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
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
