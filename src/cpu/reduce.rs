//! Reductions of the CPU backend: SIMD-friendly f32 partial sums over blocks of [`BLOCK`]
//! elements (16 independent lanes each), added in f64 across blocks and threads.

use rayon::prelude::*;

/// Elements per partial sum.
const BLOCK: usize = 1024;

/// `Σ` over `0..len` of the block sums `f(range)`, added in f64, over threads when large.
fn block_sum(len: usize, f: impl Fn(std::ops::Range<usize>) -> f64 + Sync) -> f32 {
    let blocks = len.div_ceil(BLOCK);
    let block = |b: usize| f(b * BLOCK..((b + 1) * BLOCK).min(len));
    let total: f64 = if len < super::parallel::PAR_MIN {
        (0..blocks).map(block).sum()
    } else {
        (0..blocks).into_par_iter().map(block).sum()
    };
    total as f32
}

/// `Σ a_i b_i` of two short slices in 16 f32 lanes, then f64.
fn dot_lanes(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// `Σ x_i` of a short slice in 16 f32 lanes, then f64.
fn sum_lanes(x: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Sum of all elements (0 for an empty slice).
pub fn sum(x: &[f32]) -> f32 {
    block_sum(x.len(), |r| sum_lanes(&x[r]))
}

/// `Σ a_i b_i` over slices of equal length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    block_sum(a.len(), |r| dot_lanes(&a[r.clone()], &b[r]))
}

/// `Σ x_i²`.
pub fn sqnorm(x: &[f32]) -> f32 {
    block_sum(x.len(), |r| dot_lanes(&x[r.clone()], &x[r]))
}

pub use crate::reference::reduce::{argmax_rows, max, sum_rows};
