//! What the path commands share: the step rule of one path step (trust region, Steihaug or
//! penalty, with its length in the metric) and the seeded batches it measures the metric on.

use super::metric::{Metric, MetricKind};
use super::path::Step;
use super::solver::{penalty_step, steihaug_cg, trust_region_multiplier};
use crate::autodiff::{self, Model};
use crate::data::{self, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::flat;
use crate::tensor::Tensor;
use std::str::FromStr;

/// How each path step is computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepMethod {
    /// CG on `(G + μI)θ = −(β/2)∇L` with a search on `μ` until `‖θ‖ = ε`.
    TrustRegion,
    /// Steihaug–Toint truncated CG in the ball `‖θ‖ ≤ ε`.
    Steihaug,
    /// The authors' penalty step: normalised gradient of the summed Bhattacharyya distance to
    /// the start network plus `λ∇L`, length `ε`.
    Penalty {
        /// Weight `λ` of the objective's gradient.
        lambda: f32,
    },
}

impl FromStr for StepMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<StepMethod> {
        match s {
            "trust-region" => Ok(StepMethod::TrustRegion),
            "steihaug" => Ok(StepMethod::Steihaug),
            "penalty" => Ok(StepMethod::Penalty { lambda: 0.1 }),
            other => Err(Error::Invalid(format!("unknown method `{other}` (trust-region, steihaug, penalty)"))),
        }
    }
}

impl StepMethod {
    /// The name [`FromStr`] accepts (`trust-region`, `steihaug`, `penalty`), without λ.
    pub fn name(&self) -> &'static str {
        match self {
            StepMethod::TrustRegion => "trust-region",
            StepMethod::Steihaug => "steihaug",
            StepMethod::Penalty { .. } => "penalty",
        }
    }
}

impl std::fmt::Display for StepMethod {
    /// The name [`FromStr`] accepts, with λ for the penalty step.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepMethod::Penalty { lambda } => write!(f, "penalty (lambda {lambda})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The settings of [`path_step`].
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    /// Step rule.
    pub method: StepMethod,
    /// Metric of the trust-region rules (and of the step's functional length).
    pub metric: MetricKind,
    /// Step length (trust radius) `ε`.
    pub eps: f32,
    /// Weight `β` of the objective in the trust-region subproblem.
    pub beta: f32,
    /// CG iterations per solve.
    pub cg_iter: usize,
}

impl StepSettings {
    /// The settings this step rule actually uses, for a run's summary: the penalty step's λ
    /// and ε (its distance term is the Bhattacharyya distance to the start network's outputs;
    /// the metric only measures the logged functional length), or the trust-region rules'
    /// metric, ε, β and CG iterations.
    pub fn used(&self) -> serde_json::Value {
        match self.method {
            StepMethod::Penalty { lambda } => serde_json::json!({
                "method": "penalty",
                "lambda": lambda,
                "eps": self.eps,
                "length_measured_in": self.metric.to_string(),
            }),
            other => serde_json::json!({
                "method": other.name(),
                "metric": self.metric.to_string(),
                "eps": self.eps,
                "beta": self.beta,
                "cg_iter": self.cg_iter,
            }),
        }
    }
}

/// One path step at `w` with objective gradient `g`, the metric measured on the batch
/// `(x, labels)`; `start` is the path's start (the penalty step's reference function: its
/// outputs on the batch are computed, and counted, here). Returns
/// the step, with `θᵀGθ`, and the metric products (gradient evaluations) it spent, the penalty
/// rule's measuring product included.
pub fn path_step<M: Model + ?Sized>(
    model: &M,
    w: &Tensor,
    start: &Tensor,
    x: &Tensor,
    labels: &Tensor,
    g: &Tensor,
    s: &StepSettings,
) -> Result<(Step, usize)> {
    let metric = Metric::new(model, w.clone(), x.clone(), Some(labels.clone()), s.metric, 0.0)?;
    let apply = |v: &Tensor| metric.apply(v);
    let report = match s.method {
        StepMethod::TrustRegion => trust_region_multiplier(&apply, g, s.beta, s.eps, s.cg_iter, 1e-3, 30)?,
        StepMethod::Steihaug => steihaug_cg(&apply, g, s.beta, s.eps, s.cg_iter, 1e-3)?,
        StepMethod::Penalty { lambda } => {
            let start_logits = autodiff::forward(model, start, x)?;
            penalty_step(model, w, &start_logits, x, g, lambda, s.eps)?
        }
    };
    let metric_sq = match s.method {
        // The penalty rule has no metric model value: measure the step (one extra product,
        // not counted as a gradient evaluation).
        StepMethod::Penalty { .. } => metric.quadratic(&report.theta)?,
        // q(θ) = θᵀGθ + β⟨θ, g⟩, so θᵀGθ follows from the solver's model value.
        _ => (report.model_value - s.beta * flat::dot_value(&report.theta, g)?).max(0.0),
    };
    // The penalty rule's measuring product counts as one more evaluation.
    let measuring = usize::from(matches!(s.method, StepMethod::Penalty { .. }));
    Ok((Step { theta: report.theta, metric_sq }, report.iterations.max(1) + measuring))
}

/// The seed of the metric batch of a path's step after `step` steps, for the run seed `seed`:
/// a function of the step index alone, so that a resumed path draws the batches the
/// uninterrupted one would have.
pub fn step_batch_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(step as u64 + 1)
}

/// A seeded batch of `batch` training inputs (and labels) on `device`.
pub fn batch_of(data: &Dataset, batch: usize, seed: u64, device: &Device) -> Result<(Tensor, Tensor)> {
    let order = data::shuffled_indices(data.len(), seed);
    batch_at(data, &order[..batch.min(data.len())], device)
}

/// The inputs and labels of `data` at `indices`, uploaded to `device`.
///
/// # Panics
/// When an index is `>= data.len()`.
pub fn batch_at(data: &Dataset, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    data.gather(indices, &mut images, &mut labels);
    let x = Tensor::from_vec(device, &[indices.len(), data.channels, data.height, data.width], images)?;
    Ok((x, Tensor::from_u32(device, &[indices.len()], &labels)?))
}
