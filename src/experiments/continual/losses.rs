//! The regularisers of the continual baselines: EWC's quadratic penalty (Kirkpatrick et al.
//! 2017) and the logit-matching term of DER++ (Buzzega et al. 2020).

use crate::autodiff::{self, backward_flat, record, Dual, Model};
use crate::data::Dataset;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::geodesic::step::batch_at;
use crate::ops::elementwise as ew;
use crate::tensor::Tensor;

/// EWC's memory: `Σ_t F_t` and `Σ_t F_t ⊙ w_t` over the finished tasks `t` (diagonal
/// empirical Fisher `F_t` at the task's end `w_t`).
pub struct EwcMemory {
    fisher_sum: Tensor,
    anchored: Tensor,
}

impl EwcMemory {
    /// An empty memory for parameters shaped like `w`.
    pub fn new(w: &Tensor) -> Result<EwcMemory> {
        let zeros = ew::fill(&w.device(), w.shape(), 0.0)?;
        Ok(EwcMemory { fisher_sum: zeros.clone(), anchored: zeros })
    }

    /// Adds the diagonal empirical Fisher of `w` on `examples` (mean of squared per-example
    /// gradients, one backward pass each, counted), anchored at `w`.
    pub fn add_task<M: Model + ?Sized>(
        &mut self,
        net: &M,
        w: &Tensor,
        examples: &Dataset,
        device: &Device,
    ) -> Result<()> {
        let mut fisher = ew::fill(device, w.shape(), 0.0)?;
        for i in 0..examples.len() {
            let (x, y) = batch_at(examples, &[i], device)?;
            let (_, g) = autodiff::loss_grad(net, w, &x, &y)?;
            fisher = ew::add(&fisher, &ew::mul(&g, &g)?)?;
        }
        let fisher = ew::scale(1.0 / examples.len().max(1) as f32, &fisher)?;
        self.anchored = ew::add(&self.anchored, &ew::mul(&fisher, w)?)?;
        self.fisher_sum = ew::add(&self.fisher_sum, &fisher)?;
        Ok(())
    }

    /// The gradient of the penalty `λ/2 Σ_t Σ_i F_t,i (w_i − w_t,i)²`:
    /// `λ (Σ F_t ⊙ w − Σ F_t ⊙ w_t)`.
    pub fn penalty_grad(&self, w: &Tensor, lambda: f32) -> Result<Tensor> {
        ew::scale(lambda, &ew::sub(&ew::mul(&self.fisher_sum, w)?, &self.anchored)?)
    }
}

/// DER's logit-matching term on a batch of stored inputs `x` with their stored logits `z`
/// (`[B, k]`, the network's outputs when they were stored): the mean squared error
/// `(1 / (B k)) Σ (f(x; w) − z)²` over all batch entries and classes (as PyTorch's
/// `mse_loss`), and its gradient in `w` (one forward and one backward pass).
pub fn logit_matching<M: Model + ?Sized>(model: &M, w: &Tensor, x: &Tensor, z: &Tensor) -> Result<(f64, Tensor)> {
    let (mut tape, vars, xv) = record(model, w, None, x)?;
    let out = model.forward(&mut tape, &vars, xv)?;
    let f = tape.value(out).primal.clone();
    if f.shape() != z.shape() {
        return Err(Error::Invalid(format!("stored logits {:?} for outputs {:?}", z.shape(), f.shape())));
    }
    let (fv, zv) = (f.to_vec()?, z.to_vec()?);
    let scale = 1.0 / fv.len().max(1) as f64;
    let value = fv.iter().zip(&zv).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>() * scale;
    let gz: Vec<f32> = fv.iter().zip(&zv).map(|(a, b)| (2.0 * (*a as f64 - *b as f64) * scale) as f32).collect();
    let gz = Tensor::from_vec(&f.device(), f.shape(), gz)?;
    let grad = backward_flat(model, &tape, &vars, out, Some(Dual::constant(gz)))?;
    Ok((value, grad))
}
