//! CPU reference of the flat weight-vector ops (`kernels/flat.wgsl`).

/// `alpha * x + y`.
pub fn axpy(alpha: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&a, &b)| alpha * a + b).collect()
}

/// `x * m` elementwise (`m` a 0/1 mask).
pub fn mask(x: &[f32], m: &[f32]) -> Vec<f32> {
    x.iter().zip(m).map(|(&a, &b)| a * b).collect()
}

/// 1.0 where `|x| >= threshold`, else 0.0.
pub fn prune_mask(x: &[f32], threshold: f32) -> Vec<f32> {
    x.iter().map(|&v| if v.abs() >= threshold { 1.0 } else { 0.0 }).collect()
}

/// `x` where `|x| >= threshold`, else 0.
pub fn prune(x: &[f32], threshold: f32) -> Vec<f32> {
    x.iter().map(|&v| if v.abs() >= threshold { v } else { 0.0 }).collect()
}

/// Number of elements equal to zero (either sign).
pub fn count_zeros(x: &[f32]) -> usize {
    x.iter().filter(|&&v| v == 0.0).count()
}

/// The sort key of `|v|`: non-negative floats order like their bit patterns (NaNs above +inf).
pub fn magnitude_key(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// The pruning threshold for the smallest `k` magnitudes of `n`, given the key of the
/// `rank`-th smallest magnitude (`rank = min(k, n - 1)`): the [`magnitude_threshold`] rule.
pub fn threshold_from_key(key: u32, k: usize, n: usize) -> f32 {
    if k == 0 {
        0.0
    } else if k >= n {
        // Everything is pruned: the smallest float above the largest magnitude (+inf at most).
        f32::from_bits((key + 1).min(0x7f80_0000))
    } else {
        f32::from_bits(key)
    }
}

/// `k = floor(fraction * n)`, the number of magnitudes [`magnitude_threshold`] puts below its
/// threshold. The product is taken in f64 and snapped to the nearest integer when it lies
/// within the f32 rounding error of `fraction` of it, so that e.g. 0.7 of 10 is 7 although
/// `0.7f32` is slightly below 0.7. The result is clamped to `[0, n]`.
pub fn prune_count(fraction: f32, n: usize) -> usize {
    let prod = fraction as f64 * n as f64;
    let near = prod.round();
    let k = if (prod - near).abs() <= prod.abs() * f32::EPSILON as f64 { near } else { prod.floor() };
    (k.max(0.0) as usize).min(n)
}

/// The threshold `t` below which the `k = prune_count(fraction, n)` smallest magnitudes lie: with
/// `s` the magnitudes `|x|` sorted ascending, `t = s[k]` (the 0-based k-th order statistic,
/// exactly the value of an element), so `#{|x| < t} = k` when `s[k-1] < s[k]` and fewer on ties
/// (elements equal to `t` are kept by [`prune`]). `k = 0` gives 0; `k = n` gives the next float
/// above the largest magnitude, so that everything is pruned. Uses a linear-time selection,
/// not a sort. `fraction` must be in `[0, 1]` (the op checks).
pub fn magnitude_threshold(x: &[f32], fraction: f32) -> f32 {
    let n = x.len();
    let k = prune_count(fraction, n);
    if k == 0 {
        return 0.0;
    }
    let rank = k.min(n - 1);
    let mut keys: Vec<u32> = x.iter().map(|&v| magnitude_key(v)).collect();
    let (_, &mut key, _) = keys.select_nth_unstable(rank);
    threshold_from_key(key, k, n)
}
