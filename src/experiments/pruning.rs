//! Masked SGD on the training loss, the engine of sparsification's baselines and of the
//! geodesic arm's last stretch: one-shot magnitude pruning then masked fine-tuning, and
//! gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the fraction of
//! zeros follows `p_t = p (1 − (1 − t/T)³)` over the first `T` steps, the mask recomputed by
//! global magnitude every `k` steps, masked SGD in between and after.

use super::runner::Budget;
use crate::autodiff;
use crate::data::{Dataset, EpochBatches};
use crate::device::Device;
use crate::error::Result;
use crate::geodesic::step::batch_at;
use crate::nn::network::Network;
use crate::ops::flat;
use crate::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::tensor::Tensor;

/// How the keep-mask of masked SGD evolves.
#[derive(Debug, Clone, Copy)]
pub enum MaskSchedule {
    /// One mask, given at the start.
    Fixed,
    /// Gradual magnitude pruning to `fraction` over the first `ramp_share` of the steps the
    /// budget allows, the mask recomputed every `every` steps.
    Gradual {
        /// Final fraction of zeros.
        fraction: f32,
        /// Share of the run's steps over which the fraction ramps up, in (0, 1].
        ramp_share: f64,
        /// Steps between mask updates.
        every: usize,
    },
}

/// The cubic sparsity schedule of gradual magnitude pruning at step `t` of a ramp of `ramp`
/// steps: `p (1 − (1 − min(t/ramp, 1))³)`.
pub fn cubic_fraction(fraction: f32, t: usize, ramp: usize) -> f32 {
    let left = 1.0 - (t as f64 / ramp.max(1) as f64).min(1.0);
    (fraction as f64 * (1.0 - left * left * left)) as f32
}

/// The data, batch and learning rate of a masked SGD run.
pub struct SgdRun<'a> {
    /// The network.
    pub net: &'a Network,
    /// Training images.
    pub fit: &'a Dataset,
    /// Examples per step.
    pub batch: usize,
    /// Learning rate (SGD, Nesterov momentum 0.9, no weight decay).
    pub lr: f32,
    /// Seed of the shuffling.
    pub seed: u64,
    /// The device.
    pub device: &'a Device,
}

impl SgdRun<'_> {
    /// Masked SGD from `w` with keep-mask `mask` (all ones for none) until `budget` is spent:
    /// gradients and parameters masked after every step. `on_step(w)` runs after every step
    /// (for the caller's curve and progress). Returns the parameters and their final mask.
    pub fn run(
        &self,
        w: Tensor,
        mask: Tensor,
        schedule: MaskSchedule,
        budget: &Budget,
        on_step: &mut dyn FnMut(&Tensor) -> Result<()>,
    ) -> Result<(Tensor, Tensor)> {
        let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 };
        let mut opt = Optimizer::new(kind, LrSchedule::constant(self.lr));
        let (mut w, mut mask) = (flat::mask(&w, &mask)?, mask);
        let mut batches = EpochBatches::new(self.fit.len(), self.batch, self.seed);
        // Steps the budget allows, estimated from the first step's cost (for the ramp).
        let mut planned: Option<usize> = None;
        let mut step = 0usize;
        while !budget.exhausted() {
            if let (MaskSchedule::Gradual { fraction, ramp_share, every }, Some(total)) = (schedule, planned) {
                let ramp = ((total as f64 * ramp_share) as usize).max(1);
                if step.is_multiple_of(every.max(1)) && step <= ramp + every {
                    let p = cubic_fraction(fraction, step, ramp);
                    mask = flat::prune_mask(&w, flat::magnitude_threshold(&w, p)?)?;
                    w = flat::mask(&w, &mask)?;
                }
            }
            let (x, y) = batch_at(self.fit, batches.at(step), self.device)?;
            let g =
                self.net.training_step(self.seed ^ step as u64, || Ok(autodiff::loss_grad(self.net, &w, &x, &y)?.1))?;
            w = flat::mask(&opt.step(&w, &flat::mask(&g, &mask)?)?, &mask)?;
            step += 1;
            if planned.is_none() {
                planned = Some(((1.0 / budget.fraction().max(1e-9)) as usize).max(1));
            }
            on_step(&w)?;
        }
        if let MaskSchedule::Gradual { fraction, .. } = schedule {
            // A budget too small for the ramp to finish still ends at the target fraction.
            mask = flat::prune_mask(&w, flat::magnitude_threshold(&w, fraction)?)?;
            w = flat::mask(&w, &mask)?;
        }
        Ok((w, mask))
    }
}
