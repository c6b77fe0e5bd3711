//! CPU reference of row-wise softmax and cross-entropy (`kernels/softmax.wgsl`). Logits are
//! row-major `[rows, cols]`; each row is shifted by its max and accumulated in f64.

/// The row max and `log Σ exp(z - max)` of one row, in f64.
fn row_stats(row: &[f32]) -> (f64, f64) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    (m, s.ln())
}

/// The probabilities of one row, in f64.
fn row_probs(row: &[f32]) -> Vec<f64> {
    let (m, ls) = row_stats(row);
    row.iter().map(|&v| (v as f64 - m - ls).exp()).collect()
}

/// Row-wise softmax of `z` with rows of `cols` (`cols >= 1`).
pub fn softmax(z: &[f32], cols: usize) -> Vec<f32> {
    z.chunks_exact(cols).flat_map(|row| row_probs(row).into_iter().map(|p| p as f32)).collect()
}

/// Row-wise log-softmax `z - max - log Σ exp(z - max)`.
pub fn log_softmax(z: &[f32], cols: usize) -> Vec<f32> {
    z.chunks_exact(cols)
        .flat_map(|row| {
            let (m, ls) = row_stats(row);
            row.iter().map(move |&v| (v as f64 - m - ls) as f32)
        })
        .collect()
}

/// Mean over rows of `-log_softmax(z)[row, labels[row]]`. Labels must be `< cols` (the op
/// checks them) and there must be at least one row.
pub fn cross_entropy(z: &[f32], cols: usize, labels: &[u32]) -> f32 {
    let total: f64 = z
        .chunks_exact(cols)
        .zip(labels)
        .map(|(row, &l)| {
            let (m, ls) = row_stats(row);
            m + ls - row[l as usize] as f64
        })
        .sum();
    (total / labels.len() as f64) as f32
}

/// `scale * (softmax(z) - onehot(labels))`.
pub fn cross_entropy_backward(z: &[f32], cols: usize, labels: &[u32], scale: f32) -> Vec<f32> {
    z.chunks_exact(cols)
        .zip(labels)
        .flat_map(|(row, &l)| {
            row_probs(row)
                .into_iter()
                .enumerate()
                .map(move |(c, p)| (scale as f64 * (p - if c == l as usize { 1.0 } else { 0.0 })) as f32)
        })
        .collect()
}

/// `(p, p ⊙ (dz - <p, dz>_row))` with `p = softmax(z)`, before scaling.
fn jvp_f64(z: &[f32], dz: &[f32], cols: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    z.chunks_exact(cols)
        .zip(dz.chunks_exact(cols))
        .map(|(row, drow)| {
            let p = row_probs(row);
            let pd: f64 = p.iter().zip(drow).map(|(&a, &b)| a * b as f64).sum();
            let dp = p.iter().zip(drow).map(|(&a, &b)| a * (b as f64 - pd)).collect();
            (p, dp)
        })
        .collect()
}

/// Forward mode of softmax: `(p, p ⊙ (dz - <p, dz>_row))`.
pub fn softmax_jvp(z: &[f32], dz: &[f32], cols: usize) -> (Vec<f32>, Vec<f32>) {
    let mut p = Vec::with_capacity(z.len());
    let mut dp = Vec::with_capacity(z.len());
    for (pr, dr) in jvp_f64(z, dz, cols) {
        p.extend(pr.into_iter().map(|v| v as f32));
        dp.extend(dr.into_iter().map(|v| v as f32));
    }
    (p, dp)
}

/// Forward mode of [`cross_entropy_backward`]: `(g, dg)` with
/// `g = scale * (p - onehot)` and `dg = scale * p ⊙ (dz - <p, dz>_row)`.
pub fn cross_entropy_backward_jvp(
    z: &[f32],
    dz: &[f32],
    cols: usize,
    labels: &[u32],
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let s = scale as f64;
    let mut g = Vec::with_capacity(z.len());
    let mut dg = Vec::with_capacity(z.len());
    for ((pr, dr), &l) in jvp_f64(z, dz, cols).into_iter().zip(labels) {
        g.extend(pr.iter().enumerate().map(|(c, &p)| (s * (p - if c == l as usize { 1.0 } else { 0.0 })) as f32));
        dg.extend(dr.into_iter().map(|v| (s * v) as f32));
    }
    (g, dg)
}
