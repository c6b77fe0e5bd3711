// What the batch-norm kernels (norm.wgsl, norm_split.wgsl) share: their bindings a0..a5
// (read) and o0..o2 (read_write), each entry point listing what it binds, and the per-channel
// sums. The files declare `const WG` (invocations per workgroup, a power of two).

@group(0) @binding(1) var<storage, read> a0: array<f32>;
@group(0) @binding(2) var<storage, read> a1: array<f32>;
@group(0) @binding(3) var<storage, read> a2: array<f32>;
@group(0) @binding(4) var<storage, read> a3: array<f32>;
@group(0) @binding(5) var<storage, read> a4: array<f32>;
@group(0) @binding(6) var<storage, read> a5: array<f32>;
@group(0) @binding(7) var<storage, read_write> o0: array<f32>;
@group(0) @binding(8) var<storage, read_write> o1: array<f32>;
@group(0) @binding(9) var<storage, read_write> o2: array<f32>;

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
