// Inverted dropout. Bindings: x (read), y, mask (read_write). One invocation per element
// i = flat_index(gid, nwg) (include/index.wgsl).
//
// The random word of element i is hash32(hash32(i ^ k0) ^ k1), hash32 the "lowbias32"
// integer finaliser and (k0, k1) derived from the 64-bit seed on the host
// (cpu::norm::dropout_keys), so the CPU reference draws the identical mask. Element i is
// dropped when (word >> 8) < threshold (threshold = round(p * 2^24)); mask = 0 or keep =
// 1 / (1 - p), y = x * mask.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;

fn hash32(v: u32) -> u32 {
    var h = v;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}

@compute @workgroup_size(ELEMENT_WG)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let word = hash32(hash32(i ^ p.k0) ^ p.k1);
    var m = p.keep;
    if ((word >> 8u) < p.threshold) {
        m = 0.0;
    }
    mask[i] = m;
    y[i] = x[i] * m;
}
