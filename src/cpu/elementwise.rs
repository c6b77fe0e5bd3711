//! Elementwise ops of the CPU backend: the reference formulas over zipped slices (so that the
//! compiler vectorises them), split over threads for large arrays.

use super::parallel::{map2, map_slice};

/// `alpha * a + beta * b`.
pub fn axpby(alpha: f32, a: &[f32], beta: f32, b: &[f32]) -> Vec<f32> {
    map2(a, b, |x, y| alpha * x + beta * y)
}

/// `a * b` elementwise.
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    map2(a, b, |x, y| x * y)
}

/// `alpha * a`.
pub fn scale(alpha: f32, a: &[f32]) -> Vec<f32> {
    map_slice(a, |x| alpha * x)
}

/// `max(a, 0)`.
pub fn relu(a: &[f32]) -> Vec<f32> {
    map_slice(a, |x| x.max(0.0))
}

/// `g * [x > 0]`.
pub fn relu_backward(g: &[f32], x: &[f32]) -> Vec<f32> {
    map2(g, x, |g, x| if x > 0.0 { g } else { 0.0 })
}

/// Primal and tangent of ReLU.
pub fn relu_jvp(x: &[f32], dx: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (relu(x), relu_backward(dx, x))
}

/// `x[r, c] + b[c]`, then ReLU when `relu`.
pub fn add_bias(x: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    let mut out = x.to_vec();
    super::parallel::rows_mut(&mut out, b.len().max(1), |_, row| {
        for (v, &bias) in row.iter_mut().zip(b) {
            *v += bias;
            if relu {
                *v = v.max(0.0);
            }
        }
    });
    out
}

pub use crate::reference::elementwise::split;
