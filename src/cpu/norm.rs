//! Batch normalisation of the CPU backend: per-channel sums of f32 lanes added in f64 over the
//! (image, channel) planes, images over threads, and the per-element formulas in f32. The
//! forward-mode and eval-mode backward rules, used only by metric products of BatchNorm
//! networks, are the reference's.

use super::parallel::{rows_mut, zeros, PAR_MIN};
use crate::reference::norm::BnShape;
use rayon::prelude::*;

/// `Σ f(a_i, b_i)` over two planes in 16 f32 lanes, then f64.
fn lanes2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += f(x[l], y[l]);
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Per channel, `Σ_images plane_sum(c, plane range)`, images over threads when large.
fn channel_sums(s: &BnShape, plane_sum: impl Fn(usize, std::ops::Range<usize>) -> f64 + Sync) -> Vec<f64> {
    let image = |n: usize| -> Vec<f64> {
        (0..s.c)
            .map(|c| {
                let start = (n * s.c + c) * s.hw;
                plane_sum(c, start..start + s.hw)
            })
            .collect()
    };
    let add = |mut a: Vec<f64>, b: Vec<f64>| {
        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
        a
    };
    if s.numel() < PAR_MIN {
        (0..s.n).map(image).fold(vec![0.0; s.c], add)
    } else {
        (0..s.n).into_par_iter().map(image).reduce(|| vec![0.0; s.c], add)
    }
}

/// `(mean, invstd)` per channel, two passes (mean, then centred variance).
fn stats(s: &BnShape, x: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let m = s.count() as f64;
    let mean: Vec<f64> = channel_sums(s, |_, r| lanes2(&x[r.clone()], &x[r], |v, _| v)).iter().map(|v| v / m).collect();
    let mean32: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let var = channel_sums(s, |c, r| {
        let mu = mean32[c];
        lanes2(&x[r.clone()], &x[r], |v, _| (v - mu) * (v - mu))
    });
    let invstd = var.iter().map(|v| (1.0 / (v / m + eps as f64).sqrt()) as f32).collect();
    (mean32, invstd)
}

/// `y = scale[c] x + shift[c]` over the planes.
fn affine(s: &BnShape, x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = zeros(s.numel());
    rows_mut(&mut y, s.hw.max(1), |plane, row| {
        let c = plane % s.c;
        let src = &x[plane * s.hw..][..s.hw];
        row.iter_mut().zip(src).for_each(|(o, &v)| *o = scale[c] * v + shift[c]);
    });
    y
}

/// Training mode: `(y, mean, invstd)` with batch statistics (biased variance).
pub fn batchnorm_train(
    s: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mean, invstd) = stats(s, x, eps);
    let scale: Vec<f32> = (0..s.c).map(|c| gamma[c] * invstd[c]).collect();
    let shift: Vec<f32> = (0..s.c).map(|c| beta[c] - mean[c] * scale[c]).collect();
    (affine(s, x, &scale, &shift), mean, invstd)
}

/// Eval mode with the running statistics.
pub fn batchnorm_eval(
    s: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Vec<f32> {
    let scale: Vec<f32> =
        (0..s.c).map(|c| (gamma[c] as f64 / (running_var[c] as f64 + eps as f64).sqrt()) as f32).collect();
    let shift: Vec<f32> = (0..s.c).map(|c| beta[c] - running_mean[c] * scale[c]).collect();
    affine(s, x, &scale, &shift)
}

/// Training-mode backward `(gx, ggamma, gbeta)` from the saved `mean` and `invstd`.
pub fn batchnorm_backward(
    s: &BnShape,
    gy: &[f32],
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = s.count() as f64;
    let sg = channel_sums(s, |_, r| lanes2(&gy[r.clone()], &gy[r], |g, _| g));
    let sgx = channel_sums(s, |c, r| {
        let (mu, is) = (mean[c], invstd[c]);
        lanes2(&gy[r.clone()], &x[r], |g, v| g * (v - mu) * is)
    });
    let mut gx = zeros(s.numel());
    rows_mut(&mut gx, s.hw.max(1), |plane, row| {
        let c = plane % s.c;
        let (mu, is, k) = (mean[c], invstd[c], gamma[c] * invstd[c]);
        let (a, b) = ((sg[c] / m) as f32, (sgx[c] / m) as f32);
        let (g, v) = (&gy[plane * s.hw..][..s.hw], &x[plane * s.hw..][..s.hw]);
        for ((o, &gi), &xi) in row.iter_mut().zip(g).zip(v) {
            *o = k * (gi - a - (xi - mu) * is * b);
        }
    });
    (gx, sgx.iter().map(|&v| v as f32).collect(), sg.iter().map(|&v| v as f32).collect())
}

pub use crate::reference::norm::{
    batchnorm_backward_jvp, batchnorm_eval_backward, batchnorm_jvp, batchnorm_update_running, dropout, dropout_keys,
    dropout_threshold,
};
