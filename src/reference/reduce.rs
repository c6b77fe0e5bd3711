//! CPU reference of the reductions (`kernels/reduce.wgsl`). Sums accumulate in f64 and round
//! once, so the reference is at least as accurate as the GPU's tree order.

/// Sum of all elements (0 for an empty slice).
pub fn sum(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64).sum::<f64>() as f32
}

/// Largest element (`-inf` for an empty slice; NaNs are skipped, as by `f32::max`).
pub fn max(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `Σ a_i b_i` over slices of equal length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() as f32
}

/// `Σ x_i²`.
pub fn sqnorm(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32
}

/// Column sums of a row-major `[rows, cols]` matrix: a vector of `cols`.
pub fn sum_rows(x: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0f64; cols];
    for row in x.chunks_exact(cols.max(1)) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Per row of a `[rows, cols]` matrix (`cols >= 1`), the first index of its largest value
/// (compared with `>`, so a leading NaN wins and later NaNs never do).
pub fn argmax_rows(x: &[f32], cols: usize) -> Vec<u32> {
    x.chunks_exact(cols)
        .map(|row| {
            let mut best = 0;
            for (c, &v) in row.iter().enumerate().skip(1) {
                if v > row[best] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}
