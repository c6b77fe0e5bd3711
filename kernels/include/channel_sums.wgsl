// The per-channel sums of the batch-norm kernels (norm.wgsl, norm_split.wgsl), whose files
// declare `const WG` (invocations per workgroup, a power of two) and `p` with c, hw.

var<workgroup> sh: array<vec4<f32>, WG>;

// Flat index of element k of channel c: k = nn * hw + j (sample nn, pixel j) sits at
// (nn * c_total + c) * hw + j.
fn at(c: u32, k: u32) -> u32 {
    let nn = k / p.hw;
    return (nn * p.c + c) * p.hw + (k - nn * p.hw);
}

// The workgroup total of every invocation's v (called in uniform control flow).
fn wg_sum(lid: u32, v: vec4<f32>) -> vec4<f32> {
    sh[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sh[lid] = sh[lid] + sh[lid + s];
        }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}
