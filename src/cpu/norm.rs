//! Batch normalisation of the CPU backend: per-channel sums of f32 lanes added in f64 over the
//! (image, channel) planes, images over threads, and the per-element formulas in f32. The
//! forward-mode and eval-mode backward rules, used only by metric products of BatchNorm
//! networks, are the reference's.

use super::parallel::{new_rows, PAR_MIN};
use super::simd::vectorized_fn;
use crate::reference::norm::BnShape;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `Σ f(a_i, b_i)` over two planes, in 16 f32 lanes, then f64 (planes under 16 elements: f64).
#[inline(always)]
fn lanes2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y) as f64).sum();
    if a.len() < 16 {
        // The 2- to 8-pixel planes of deep layers: reducing empty lanes would cost more.
        return tail;
    }
    let mut lanes = [0f32; 16];
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += f(x[l], y[l]);
        }
    }
    tail + lanes.iter().map(|&v| v as f64).sum::<f64>()
}

vectorized_fn! {
    /// `Σ x`.
    fn plane_total(x: &[f32]) -> [f64; 1] {
        [lanes2(x, x, |v, _| v)]
    }
}

vectorized_fn! {
    /// `Σ (x - mu)²`.
    fn centered_squares(x: &[f32], mu: f32) -> [f64; 1] {
        [lanes2(x, x, |v, _| (v - mu) * (v - mu))]
    }
}

vectorized_fn! {
    /// `(Σ g, Σ g (x - mu) invstd)`: the sums of BatchNorm's backward pass.
    fn gradient_sums(g: &[f32], x: &[f32], mu: f32, invstd: f32) -> [f64; 2] {
        // Two passes: the plane is in L1 for the second, and each loop vectorises on its own.
        [lanes2(g, g, |g, _| g), lanes2(g, x, |g, v| g * (v - mu)) * invstd as f64]
    }
}

vectorized_fn! {
    /// `out = scale x + shift`.
    fn affine_row(out: &mut [MaybeUninit<f32>], x: &[f32], scale: f32, shift: f32) {
        out.iter_mut().zip(x).for_each(|(o, &v)| {
            o.write(scale * v + shift);
        });
    }
}

vectorized_fn! {
    /// `out = k (g - a - (x - mu) invstd b)` with `consts = [k, a, b, mu, invstd]`: one plane
    /// of BatchNorm's input gradient.
    fn backward_row(out: &mut [MaybeUninit<f32>], g: &[f32], x: &[f32], consts: [f32; 5]) {
        let [k, a, b, mu, invstd] = consts;
        for ((o, &gi), &xi) in out.iter_mut().zip(g).zip(x) {
            o.write(k * (gi - a - (xi - mu) * invstd * b));
        }
    }
}

/// Per channel, `Σ_images plane_sum(c, plane range)` (`K` sums at once), images over threads
/// when large.
fn channel_sums<const K: usize>(
    s: &BnShape,
    plane_sum: impl Fn(usize, std::ops::Range<usize>) -> [f64; K] + Sync,
) -> Vec<[f64; K]> {
    let image = |n: usize| -> Vec<[f64; K]> {
        (0..s.c)
            .map(|c| {
                let start = (n * s.c + c) * s.hw;
                plane_sum(c, start..start + s.hw)
            })
            .collect()
    };
    let add = |mut a: Vec<[f64; K]>, b: Vec<[f64; K]>| {
        a.iter_mut().zip(&b).for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(x, y)| *x += y));
        a
    };
    if s.numel() < PAR_MIN {
        (0..s.n).map(image).fold(vec![[0.0; K]; s.c], add)
    } else {
        (0..s.n).into_par_iter().map(image).reduce(|| vec![[0.0; K]; s.c], add)
    }
}

/// `(mean, invstd)` per channel, two passes (mean, then centred variance).
fn stats(s: &BnShape, x: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let m = s.count() as f64;
    let mean32: Vec<f32> = channel_sums(s, |_, r| plane_total(&x[r])).iter().map(|[v]| (v / m) as f32).collect();
    let var = channel_sums(s, |c, r| centered_squares(&x[r], mean32[c]));
    let invstd = var.iter().map(|[v]| (1.0 / (v / m + eps as f64).sqrt()) as f32).collect();
    (mean32, invstd)
}

/// `y = scale[c] x + shift[c]` over the planes.
fn affine(s: &BnShape, x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    new_rows(s.numel(), s.hw, |plane, row| {
        let c = plane % s.c;
        affine_row(row, &x[plane * s.hw..][..s.hw], scale[c], shift[c]);
    })
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
    let sums = channel_sums(s, |c, r| gradient_sums(&gy[r.clone()], &x[r], mean[c], invstd[c]));
    let (sg, sgx): (Vec<f64>, Vec<f64>) = sums.iter().map(|&[a, b]| (a, b)).unzip();
    let gx = new_rows(s.numel(), s.hw, |plane, row| {
        let c = plane % s.c;
        let (a, b) = ((sg[c] / m) as f32, (sgx[c] / m) as f32);
        let (g, v) = (&gy[plane * s.hw..][..s.hw], &x[plane * s.hw..][..s.hw]);
        backward_row(row, g, v, [gamma[c] * invstd[c], a, b, mean[c], invstd[c]]);
    });
    (gx, sgx.iter().map(|&v| v as f32).collect(), sg.iter().map(|&v| v as f32).collect())
}

pub use crate::reference::norm::{
    batchnorm_backward_jvp, batchnorm_eval_backward, batchnorm_jvp, batchnorm_update_running, dropout, dropout_keys,
    dropout_threshold,
};
