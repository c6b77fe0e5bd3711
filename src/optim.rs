//! Optimisers over one flat parameter vector: SGD (momentum, Nesterov, L2 weight decay), Adam
//! and AdamW, with PyTorch's update rules, and learning-rate schedules with linear warmup.
//!
//! An [`Optimizer`] holds its state tensors (momentum buffer, or Adam's two moments) on the
//! device of the parameters and runs one fused kernel per [`Optimizer::step`]
//! ([`crate::ops::optim`]); the parameters and gradient may live on the CPU reference or a GPU.
//!
//! NaN or infinity in the gradient is **not** filtered or skipped: it propagates into the
//! returned parameters (and into the state, where every later step inherits it). Check the loss
//! or the gradient norm before stepping when that can happen; the optimiser does not.
//!
//! To checkpoint an optimiser, store [`Optimizer::steps`] and each tensor of
//! [`Optimizer::state`] (e.g. as named buffers of a [`crate::checkpoint::Checkpoint`]) and give
//! them back to [`Optimizer::set_state`].

use crate::error::{shape_err, Error, Result};
use crate::ops::optim as ops;
use crate::reference::optim::{AdamStep, SgdStep};
use crate::tensor::Tensor;

/// The shape of a learning-rate schedule after warmup, as a factor of the base rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Factor 1 throughout.
    Constant,
    /// Factor `gamma^(s / every)` (integer division) at schedule step `s`; `every == 0` means
    /// no decay.
    Step {
        /// Steps between decays.
        every: usize,
        /// Multiplier applied at each decay.
        gamma: f32,
    },
    /// Cosine annealing from factor 1 at schedule step 0 to `min_factor` at step `total`, then
    /// `min_factor` (`total == 0`: `min_factor` throughout).
    Cosine {
        /// Steps of the half cosine.
        total: usize,
        /// Final factor of the base rate.
        min_factor: f32,
    },
}

/// A learning rate per step: a linear warmup, then a [`Schedule`].
///
/// Step `k` (counting from 0) has rate `base * (k + 1) / warmup` while `k < warmup`, then
/// `base * factor(k - warmup)`: the schedule's own step count starts when warmup ends, so the
/// rate is continuous (it reaches `base` at the last warmup step) and `Cosine::total` counts
/// steps after warmup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The base learning rate.
    pub base: f32,
    /// The shape after warmup.
    pub schedule: Schedule,
    /// Length of the linear warmup in steps (0: none).
    pub warmup: usize,
}

impl LrSchedule {
    /// A constant rate `base` without warmup.
    pub fn constant(base: f32) -> Self {
        LrSchedule { base, schedule: Schedule::Constant, warmup: 0 }
    }

    /// The learning rate of step `step` (counting from 0).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup {
            return (self.base as f64 * (step + 1) as f64 / self.warmup as f64) as f32;
        }
        let s = step - self.warmup;
        let factor = match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Step { every: 0, .. } => 1.0,
            Schedule::Step { every, gamma } => {
                let k = (s / every).min(i32::MAX as usize) as i32;
                (gamma as f64).powi(k)
            }
            Schedule::Cosine { total, min_factor } => {
                let progress = if total == 0 { 1.0 } else { s.min(total) as f64 / total as f64 };
                let min = min_factor as f64;
                min + (1.0 - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        (self.base as f64 * factor) as f32
    }
}

/// The update rule and its hyperparameters (all PyTorch's, with dampening 0 for SGD).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// SGD: `g' = g + λ w`, `b = μ b + g'`, `d = g' + μ b` (Nesterov) or `b`, `w -= lr d`;
    /// `momentum == 0` is plain SGD without state.
    Sgd {
        /// Momentum μ ≥ 0.
        momentum: f32,
        /// Nesterov momentum (needs `momentum > 0`).
        nesterov: bool,
        /// L2 weight decay λ ≥ 0, added to the gradient.
        weight_decay: f32,
    },
    /// Adam with bias correction; with `decoupled`, AdamW (`w *= 1 - lr λ` instead of adding
    /// `λ w` to the gradient).
    Adam {
        /// First-moment decay β1 in [0, 1).
        beta1: f32,
        /// Second-moment decay β2 in [0, 1).
        beta2: f32,
        /// ε ≥ 0 added to the denominator.
        eps: f32,
        /// Weight decay λ ≥ 0.
        weight_decay: f32,
        /// Decoupled weight decay (AdamW).
        decoupled: bool,
    },
}

impl OptimizerKind {
    /// Plain SGD with `momentum` (0 for none), no Nesterov, no weight decay.
    pub fn sgd(momentum: f32) -> Self {
        OptimizerKind::Sgd { momentum, nesterov: false, weight_decay: 0.0 }
    }

    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay).
    pub fn adam() -> Self {
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }

    /// AdamW with PyTorch's defaults and decoupled weight decay `weight_decay`.
    pub fn adamw(weight_decay: f32) -> Self {
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled: true }
    }

    /// The names of the state tensors this rule keeps, in the order of [`Optimizer::state`].
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            OptimizerKind::Sgd { .. } => &["momentum_buffer"],
            OptimizerKind::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }

    /// Checks the hyperparameters, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32, need: &str| {
            Err(Error::Invalid(format!("optimizer: {what} = {v} is invalid (needs {need})")))
        };
        match *self {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                if !(momentum >= 0.0 && momentum.is_finite()) {
                    return bad("momentum", momentum, "a finite value >= 0");
                }
                if nesterov && momentum == 0.0 {
                    return bad("momentum", momentum, "> 0 with Nesterov");
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad("weight_decay", weight_decay, "a finite value >= 0");
                }
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay, .. } => {
                for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return bad(name, b, "0 <= beta < 1");
                    }
                }
                if !(eps >= 0.0 && eps.is_finite()) {
                    return bad("eps", eps, "a finite value >= 0");
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad("weight_decay", weight_decay, "a finite value >= 0");
                }
            }
        }
        Ok(())
    }
}

/// An optimiser over one parameter tensor: rule, schedule, step count and state tensors.
#[derive(Debug, Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    schedule: LrSchedule,
    steps: usize,
    /// Empty before the first step (the kernels then start from zero state), else one tensor
    /// per name of `kind.state_names()`.
    state: Vec<Tensor>,
}

impl Optimizer {
    /// A fresh optimiser (step 0, no state). Hyperparameters are checked at the first step.
    pub fn new(kind: OptimizerKind, schedule: LrSchedule) -> Self {
        Optimizer { kind, schedule, steps: 0, state: Vec::new() }
    }

    /// The update rule.
    pub fn kind(&self) -> &OptimizerKind {
        &self.kind
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Replaces the learning-rate schedule (from the next step on; the step count stays).
    pub fn set_schedule(&mut self, schedule: LrSchedule) {
        self.schedule = schedule;
    }

    /// The learning rate the next step will use.
    pub fn lr(&self) -> f32 {
        self.schedule.lr(self.steps)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One step from parameters `w` with gradient `g` (same shape, same device): returns the
    /// new parameters and keeps the new state. Errors (leaving the optimiser unchanged) on
    /// bad hyperparameters, a non-finite learning rate, a shape mismatch between `w`, `g` and
    /// the state, or operands on different devices. State restored by [`Self::set_state`] on
    /// another device is moved to the device of `w` first.
    pub fn step(&mut self, w: &Tensor, g: &Tensor) -> Result<Tensor> {
        self.kind.validate()?;
        let lr = self.lr();
        if !lr.is_finite() {
            return Err(Error::Invalid(format!("optimizer: learning rate of step {} is {lr}", self.steps)));
        }
        if w.shape() != g.shape() {
            return Err(shape_err("optimizer step", format!("parameters {:?} vs gradient {:?}", w.shape(), g.shape())));
        }
        let dev = w.device();
        let state: Vec<Tensor> = self.state.iter().map(|t| t.to_device(&dev)).collect::<Result<_>>()?;
        let (new_w, new_state) = match self.kind {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                let h = SgdStep { lr, momentum, nesterov, weight_decay };
                let (nw, nb) = ops::sgd(w, g, state.first(), &h)?;
                (nw, nb.into_iter().collect())
            }
            OptimizerKind::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
                let h = AdamStep { lr, beta1, beta2, eps, weight_decay, decoupled, t: self.steps + 1 };
                let st = match state.as_slice() {
                    [m, v] => Some((m, v)),
                    _ => None,
                };
                let (nw, m, v) = ops::adam(w, g, st, &h)?;
                (nw, vec![m, v])
            }
        };
        self.state = new_state;
        self.steps += 1;
        Ok(new_w)
    }

    /// The state tensors with their names ([`OptimizerKind::state_names`]); empty before the
    /// first step and for plain SGD.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.kind.state_names().iter().zip(&self.state).map(|(n, t)| (n.to_string(), t.clone())).collect()
    }

    /// Restores the step count and state (as returned by [`Self::steps`] and [`Self::state`]),
    /// in any order of names. `state` must hold exactly the tensors of
    /// [`OptimizerKind::state_names`], all of one shape, or be empty when `steps == 0`.
    pub fn set_state(&mut self, steps: usize, state: Vec<(String, Tensor)>) -> Result<()> {
        let names = self.kind.state_names();
        if state.is_empty() && steps == 0 {
            self.steps = 0;
            self.state.clear();
            return Ok(());
        }
        let given: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        let mut ordered = Vec::with_capacity(names.len());
        for name in names {
            match state.iter().find(|(n, _)| n == name) {
                Some((_, t)) => ordered.push(t.clone()),
                None => {
                    return Err(Error::Invalid(format!(
                        "optimizer state: expected tensors {names:?} after {steps} steps, got {given:?}"
                    )))
                }
            }
        }
        if state.len() != names.len() {
            return Err(Error::Invalid(format!("optimizer state: expected tensors {names:?}, got {given:?}")));
        }
        if let Some(first) = ordered.first() {
            for (name, t) in names.iter().zip(&ordered) {
                if t.shape() != first.shape() {
                    return Err(shape_err(
                        "optimizer set_state",
                        format!("{} {:?} vs {name} {:?}", names[0], first.shape(), t.shape()),
                    ));
                }
            }
        }
        self.steps = steps;
        self.state = ordered;
        Ok(())
    }
}
