//! The step direction of a connecting path from optimum A to optimum B (objective
//! `½‖w − w_B‖²`), used by the geodesic arm of `geopath connect`
//! ([`experiments::connect`](crate::experiments::connect)).
//!
//! Keeping each step small in the metric is not enough on its own: the metric of a batch of a
//! few hundred inputs has rank at most a few thousand of LeNet-300-100's 266 610 dimensions,
//! so trust-region steps toward B head nearly straight to it, and the small changes of function
//! add up. Each step therefore follows `(w − w_B) + γ ∇CE(w)`, the cross-entropy measured on
//! the step's batch: the path is a normalised, metric-damped descent of
//! `½‖w − w_B‖² + γ CE`, which bends around the loss barrier of the straight line. At B (an
//! optimum) `∇CE` nearly vanishes, so the path still ends there.

use crate::autodiff::{self, Model};
use crate::error::Result;
use crate::ops::{elementwise as ew, flat};
use crate::tensor::Tensor;

/// The gradient a connect step follows at `w`: `(w − w_B) + γ ∇CE(w)` with the cross-entropy
/// on the batch `(x, labels)`, i.e. the gradient of `½‖w − w_B‖² + γ CE(w)`; with `γ = 0`,
/// `w − w_B` alone.
pub fn step_gradient<M: Model + ?Sized>(
    model: &M,
    w: &Tensor,
    wb: &Tensor,
    x: &Tensor,
    labels: &Tensor,
    gamma: f32,
) -> Result<Tensor> {
    let to_b = ew::sub(w, wb)?;
    if gamma == 0.0 {
        return Ok(to_b);
    }
    let (_, restoring) = autodiff::loss_grad(model, w, x, labels)?;
    flat::axpy(gamma, &restoring, &to_b)
}
