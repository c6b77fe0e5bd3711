//! A multilayer perceptron with ReLU hidden layers (e.g. LeNet-300-100 = 784-300-100-10).

use crate::autodiff::{self, Model, Tape, Var};
use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// Dense layers of the given widths; parameters `[W1 (in×out), b1, W2, b2, …]` in one vector.
#[derive(Debug, Clone)]
pub struct Mlp {
    sizes: Vec<usize>,
}

impl Mlp {
    /// An MLP with layer widths `sizes` (input first, classes last).
    pub fn new(sizes: &[usize]) -> Mlp {
        assert!(sizes.len() >= 2, "an MLP needs at least input and output widths");
        Mlp { sizes: sizes.to_vec() }
    }

    /// Number of weights (not biases): the multiply-adds of one forward pass per input.
    pub fn num_weights(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// He-uniform weights and zero biases from a seeded generator.
    pub fn init(&self, device: &Device, seed: u64) -> Result<Tensor> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut v = Vec::with_capacity(self.num_params());
        for w in self.sizes.windows(2) {
            let bound = (6.0 / w[0] as f32).sqrt();
            for _ in 0..w[0] * w[1] {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                v.push(((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound);
            }
            v.extend(std::iter::repeat_n(0.0, w[1]));
        }
        Tensor::from_vec(device, &[v.len()], v)
    }

    /// Logits for a batch `x` of `[B, in]`.
    pub fn forward(&self, params: &Tensor, x: &Tensor) -> Result<Tensor> {
        autodiff::forward(self, params, x)
    }

    /// Logits and their derivative along parameter direction `v`.
    pub fn jvp(&self, params: &Tensor, v: &Tensor, x: &Tensor) -> Result<(Tensor, Tensor)> {
        autodiff::jvp(self, params, v, x)
    }

    /// Mean cross-entropy and its gradient.
    pub fn loss_grad(&self, params: &Tensor, x: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        autodiff::loss_grad(self, params, x, labels)
    }

    /// Gradient and Hessian-vector product of the mean cross-entropy.
    pub fn loss_hvp(&self, params: &Tensor, v: &Tensor, x: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        autodiff::loss_hvp(self, params, v, x, labels)
    }

    /// Gauss–Newton product `(1/B) Jᵀ J v`.
    pub fn gauss_newton(&self, params: &Tensor, v: &Tensor, x: &Tensor) -> Result<Tensor> {
        autodiff::gauss_newton(self, params, v, x)
    }
}

impl Model for Mlp {
    fn param_shapes(&self) -> Vec<Vec<usize>> {
        self.sizes.windows(2).flat_map(|w| [vec![w[0], w[1]], vec![w[1]]]).collect()
    }

    fn forward(&self, tape: &mut Tape, params: &[Var], x: Var) -> Result<Var> {
        let layers = self.sizes.len() - 1;
        let mut h = x;
        for l in 0..layers {
            h = tape.linear(h, params[2 * l], Some(params[2 * l + 1]), l + 1 < layers)?;
        }
        Ok(h)
    }
}
