//! Matrix-free metric products `G v` over the flat parameter vector, measured on a batch of
//! `B` inputs (DESIGN.md §1):
//!
//! - [`MetricKind::Logits`]: `G = (1/B) Σ_x J_xᵀ J_x` (Gauss–Newton, [`autodiff::gauss_newton`]);
//! - [`MetricKind::Fisher`]: `G = (1/B) Σ_x J_xᵀ (diag p − p pᵀ) J_x`, `p = softmax(z)`;
//! - [`MetricKind::Hessian`]: the Hessian of the mean cross-entropy ([`autodiff::loss_hvp`]);
//!   not positive semi-definite in general.
//!
//! Each product costs one forward pass carrying the tangent `v` (which yields `z` and `J v`
//! together) and one backward pass; the Fisher product records both on one tape, so the
//! primal forward is not run a second time for the VJP.

use std::fmt;
use std::str::FromStr;

use crate::autodiff::{self, record, Dual, Model};
use crate::error::{shape_err, Error, Result};
use crate::ops::{elementwise as ew, flat, softmax};
use crate::tensor::Tensor;

/// Which metric a [`Metric`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Euclidean output metric `(1/B) Σ J_xᵀ J_x` (Gauss–Newton).
    Logits,
    /// Fisher information of the softmax outputs, `(1/B) Σ J_xᵀ (diag p − p pᵀ) J_x`.
    Fisher,
    /// Hessian of the mean cross-entropy loss (needs labels; indefinite in general).
    Hessian,
}

impl MetricKind {
    /// Every kind, in declaration order.
    pub const ALL: [MetricKind; 3] = [MetricKind::Logits, MetricKind::Fisher, MetricKind::Hessian];

    /// The lower-case name (`"logits"`, `"fisher"`, `"hessian"`), as parsed by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Logits => "logits",
            MetricKind::Fisher => "fisher",
            MetricKind::Hessian => "hessian",
        }
    }

    /// Whether the metric is positive semi-definite by construction (logits and fisher).
    pub fn is_psd(self) -> bool {
        !matches!(self, MetricKind::Hessian)
    }

    /// Whether products need labels (only the Hessian).
    pub fn needs_labels(self) -> bool {
        matches!(self, MetricKind::Hessian)
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MetricKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<MetricKind> {
        MetricKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::Invalid(format!("unknown metric {s:?}: expected logits, fisher or hessian")))
    }
}

/// A metric `G(w)` at parameters `w`, measured on inputs `x`, applied matrix-free; products
/// add `damping · v` (Levenberg–Marquardt damping).
pub struct Metric<'a, M: Model + ?Sized> {
    model: &'a M,
    params: Tensor,
    x: Tensor,
    labels: Option<Tensor>,
    kind: MetricKind,
    damping: f32,
}

impl<'a, M: Model + ?Sized> Metric<'a, M> {
    /// The metric `kind` of `model` at flat parameters `params` (`[num_params]`) on the batch
    /// `x` (`[B, …]`, `B > 0`). `labels` (u32 `[B]`) are required for the Hessian and ignored
    /// otherwise; `damping` must be finite and `>= 0`. All tensors must live on one device.
    pub fn new(
        model: &'a M,
        params: Tensor,
        x: Tensor,
        labels: Option<Tensor>,
        kind: MetricKind,
        damping: f32,
    ) -> Result<Self> {
        let n = model.num_params();
        if params.shape() != [n] {
            return Err(shape_err("metric", format!("model needs flat parameters [{n}], got {:?}", params.shape())));
        }
        let batch = match x.shape().first() {
            Some(&b) if b > 0 => b,
            _ => return Err(shape_err("metric", format!("inputs need a non-empty batch, got {:?}", x.shape()))),
        };
        if !x.device().same(&params.device()) {
            return Err(Error::DeviceMismatch("metric"));
        }
        if let Some(l) = &labels {
            if l.shape() != [batch] {
                return Err(shape_err(
                    "metric",
                    format!("inputs {:?} need labels [{batch}], got {:?}", x.shape(), l.shape()),
                ));
            }
            if !l.device().same(&params.device()) {
                return Err(Error::DeviceMismatch("metric"));
            }
        } else if kind.needs_labels() {
            return Err(Error::Invalid(format!("metric {kind}: the loss Hessian needs labels")));
        }
        if !(damping.is_finite() && damping >= 0.0) {
            return Err(Error::Invalid(format!("metric {kind}: damping must be finite and >= 0, got {damping}")));
        }
        Ok(Metric { model, params, x, labels, kind, damping })
    }

    /// The metric's kind.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// The damping added to every product.
    pub fn damping(&self) -> f32 {
        self.damping
    }

    /// The parameters `w` the metric is measured at.
    pub fn params(&self) -> &Tensor {
        &self.params
    }

    /// The inputs the metric is measured on.
    pub fn inputs(&self) -> &Tensor {
        &self.x
    }

    /// Length of the flat vectors the metric acts on.
    pub fn dim(&self) -> usize {
        self.params.numel()
    }

    /// Number of inputs `B` in the batch.
    pub fn batch(&self) -> usize {
        self.x.shape()[0]
    }

    /// `G v + damping · v` for a flat `v` of the parameters' shape, on their device.
    pub fn apply(&self, v: &Tensor) -> Result<Tensor> {
        if v.shape() != self.params.shape() {
            return Err(shape_err("metric", format!("vector {:?} vs parameters {:?}", v.shape(), self.params.shape())));
        }
        if !v.device().same(&self.params.device()) {
            return Err(Error::DeviceMismatch("metric"));
        }
        let gv = match self.kind {
            MetricKind::Logits => autodiff::gauss_newton(self.model, &self.params, v, &self.x)?,
            MetricKind::Fisher => self.fisher(v)?,
            MetricKind::Hessian => {
                let labels = self.labels.as_ref().expect("checked in Metric::new");
                autodiff::loss_hvp(self.model, &self.params, v, &self.x, labels)?.1
            }
        };
        if self.damping != 0.0 {
            flat::axpy(self.damping, v, &gv)
        } else {
            Ok(gv)
        }
    }

    /// The quadratic form `vᵀ (G + damping·I) v`, read back to the host.
    pub fn quadratic(&self, v: &Tensor) -> Result<f32> {
        flat::dot_value(v, &self.apply(v)?)
    }

    /// `(1/B) Σ_x J_xᵀ (diag p − p pᵀ) J_x v` on one tape: the forward pass carries `v`, giving
    /// `z` and `J v`; `softmax_jvp` gives `(diag p − p pᵀ) J v` row by row; the backward pass
    /// pulls it back.
    fn fisher(&self, v: &Tensor) -> Result<Tensor> {
        let (mut tape, vars, xv) = record(self.model, &self.params, Some(v), &self.x)?;
        let z = self.model.forward(&mut tape, &vars, xv)?;
        let zd = tape.value(z);
        let jv = zd.tangent_or_zeros()?;
        let (_, dp) = softmax::softmax_jvp(&zd.primal, &jv)?;
        let batch = jv.shape()[0].max(1) as f32;
        let u = ew::scale(1.0 / batch, &dp)?;
        autodiff::backward_flat(self.model, &tape, &vars, z, Some(Dual::constant(u)))
    }
}
