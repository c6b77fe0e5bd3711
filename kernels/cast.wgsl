// Conversion of f32 tensors to f16 storage (two halves a word, the first element in the low
// half), by integer arithmetic: round to nearest, ties to even, overflow to infinity, f16
// subnormals kept, NaN quieted with its top payload bits (as the `half` crate converts), the
// same on every adapter whatever its conversion instructions round to.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

// Adds 1 to `m` when the dropped bits `rem` are above half of their range, `mid`, or equal to
// it with `m` odd.
fn round_even(m: u32, rem: u32, mid: u32) -> u32 {
    return m + select(0u, 1u, rem > mid || (rem == mid && (m & 1u) == 1u));
}

// The f16 bits of `v`.
fn f16_bits(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    let sign = (bits >> 16u) & 0x8000u;
    let mag = bits & 0x7fffffffu;
    if (mag >= 0x7f800000u) {
        // Infinity, or NaN keeping its top 10 payload bits, quieted.
        return sign | 0x7c00u | select(0u, 0x200u | ((mag >> 13u) & 0x3ffu), mag > 0x7f800000u);
    }
    if (mag >= 0x477ff000u) {
        // At or above 65520, halfway between the largest f16 (65504) and 2^16.
        return sign | 0x7c00u;
    }
    if (mag >= 0x38800000u) {
        // Normal in f16 (at least 2^-14): rebias the exponent by 127 - 15; a carry out of the
        // mantissa rounds into the exponent.
        let r = mag - 0x38000000u;
        return sign | round_even(r >> 13u, r & 0x1fffu, 0x1000u);
    }
    if (mag < 0x33000000u) {
        // At most 2^-25, half the smallest f16 subnormal: rounds to zero.
        return sign;
    }
    // Subnormal in f16: the value in units of 2^-24, from the 24-bit significand.
    let shift = 126u - (mag >> 23u);
    let significand = (mag & 0x7fffffu) | 0x800000u;
    let rem = significand & ((1u << shift) - 1u);
    return sign | round_even(significand >> shift, rem, 1u << (shift - 1u));
}

// Word i of y: elements 2i and 2i + 1 of x (zero past the end).
@compute @workgroup_size(ELEMENT_WG)
fn cast_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (2u * i >= p.n) { return; }
    var hi = 0u;
    if (2u * i + 1u < p.n) { hi = f16_bits(x[2u * i + 1u]); }
    y[i] = f16_bits(x[2u * i]) | (hi << 16u);
}
