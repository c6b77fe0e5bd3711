//! Trained curves between two optima (Garipov et al. 2018, "Loss surfaces, mode connectivity,
//! and fast ensembling of DNNs"), the established baseline of mode connectivity: a quadratic
//! Bezier curve `φ(t) = (1−t)² A + 2t(1−t) θ + t² B` or a polygonal chain through one bend
//! (`A → θ → B`, the bend at `t = ½`), the bend `θ` trained by drawing `t ~ U(0, 1)` each step
//! and descending the training loss at `φ(t)`: `∂L(φ(t))/∂θ = c(t) ∇L(φ(t))` with `c(t)` the
//! bend's coefficient in `φ(t)`.

use super::runner::Budget;
use crate::autodiff;
use crate::data::{Dataset, EpochBatches};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::geodesic::step::batch_at;
use crate::nn::network::Network;
use crate::ops::{elementwise as ew, flat};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind, Schedule};
use crate::tensor::Tensor;
use std::str::FromStr;

/// The shape of a curve with one bend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurveKind {
    /// Quadratic Bezier curve with control point `θ`.
    Bezier,
    /// Two straight segments `A → θ → B`, the bend at `t = ½`.
    Polychain,
}

impl FromStr for CurveKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<CurveKind> {
        match s {
            "bezier" => Ok(CurveKind::Bezier),
            "polychain" => Ok(CurveKind::Polychain),
            other => Err(Error::Invalid(format!("unknown curve `{other}` (bezier, polychain)"))),
        }
    }
}

/// A curve from `A` to `B` through the trainable bend `θ`.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Its shape.
    pub kind: CurveKind,
    /// The start `A` (flat parameters).
    pub a: Tensor,
    /// The end `B`.
    pub b: Tensor,
    /// The bend `θ`.
    pub bend: Tensor,
}

impl Curve {
    /// The curve of `kind` from `a` to `b` with its bend at their midpoint (a straight line).
    pub fn new(kind: CurveKind, a: &Tensor, b: &Tensor) -> Result<Curve> {
        if a.shape() != b.shape() {
            return Err(Error::Invalid(format!("curve ends of shapes {:?} and {:?}", a.shape(), b.shape())));
        }
        let bend = ew::axpby(0.5, a, 0.5, b)?;
        Ok(Curve { kind, a: a.clone(), b: b.clone(), bend })
    }

    /// The coefficients `(of A, of θ, of B)` of `φ(t)`, `t` in [0, 1].
    pub fn coefficients(&self, t: f32) -> [f32; 3] {
        match self.kind {
            CurveKind::Bezier => [(1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t],
            CurveKind::Polychain if t < 0.5 => [1.0 - 2.0 * t, 2.0 * t, 0.0],
            CurveKind::Polychain => [0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0],
        }
    }

    /// The point `φ(t)`.
    pub fn point(&self, t: f32) -> Result<Tensor> {
        let [ca, cb, cz] = self.coefficients(t);
        ew::axpby(cz, &self.b, 1.0, &ew::axpby(ca, &self.a, cb, &self.bend)?)
    }

    /// Euclidean length, summed over `pieces` equal steps of `t`.
    pub fn length(&self, pieces: usize) -> Result<f64> {
        let mut total = 0.0;
        let mut prev = self.point(0.0)?;
        for i in 1..=pieces.max(1) {
            let next = self.point(i as f32 / pieces.max(1) as f32)?;
            total += flat::norm(&ew::sub(&next, &prev)?)? as f64;
            prev = next;
        }
        Ok(total)
    }
}

/// Options of [`train_bend`].
pub struct BendTraining<'a> {
    /// The network.
    pub net: &'a Network,
    /// Training images.
    pub fit: &'a Dataset,
    /// Examples per step.
    pub batch: usize,
    /// Learning rate (SGD, Nesterov momentum 0.9).
    pub lr: f32,
    /// Anneal the rate to 0 by a half cosine over the budget (its steps estimated from the
    /// cost of the first); else constant.
    pub cosine: bool,
    /// Seed of the batches and of the drawn `t`.
    pub seed: u64,
    /// The device.
    pub device: &'a Device,
}

/// Trains the bend of `curve` until `budget` is spent: each step draws `t ~ U(0, 1)` and a
/// batch, and moves `θ` against `c(t) ∇L(φ(t))`. A network with BatchNorm is trained in
/// training mode (batch statistics) and left in eval mode. `on_step(curve)` runs after every
/// step.
pub fn train_bend(
    curve: &mut Curve,
    o: &BendTraining<'_>,
    budget: &Budget,
    on_step: &mut dyn FnMut(&Curve) -> Result<()>,
) -> Result<()> {
    let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 };
    let mut opt = Optimizer::new(kind, LrSchedule::constant(o.lr));
    let mut batches = EpochBatches::new(o.fit.len(), o.batch.max(1), o.seed);
    let mut rng = o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut step = 0usize;
    o.net.set_train(o.net.has_batchnorm());
    let result = (|| {
        while !budget.exhausted() {
            let (x, y) = batch_at(o.fit, batches.at(step), o.device)?;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let t = (rng >> 40) as f32 / (1u64 << 24) as f32;
            let (_, g) = autodiff::loss_grad(o.net, &curve.point(t)?, &x, &y)?;
            curve.bend = opt.step(&curve.bend, &ew::scale(curve.coefficients(t)[1], &g)?)?;
            step += 1;
            if step == 1 && o.cosine {
                let total = ((1.0 / budget.fraction().max(1e-9)) as usize).max(1);
                opt.set_schedule(LrSchedule {
                    base: o.lr,
                    schedule: Schedule::Cosine { total, min_factor: 0.0 },
                    warmup: 0,
                });
            }
            on_step(curve)?;
        }
        Ok(())
    })();
    o.net.set_train(false);
    result
}

/// Recomputes the BatchNorm running statistics of `net` for the parameters `w` (a point of a
/// path or curve, whose statistics no training produced) as the cumulative average over the
/// first `batches` batches of `batch` images of `data` (as Garipov et al. do for curve
/// points); leaves `net` in eval mode. The forward passes count on the cost counter like any
/// other. Nothing to do for a network without BatchNorm.
pub fn refresh_batchnorm(
    net: &Network,
    w: &Tensor,
    data: &Dataset,
    batches: usize,
    batch: usize,
    device: &Device,
) -> Result<()> {
    if !net.has_batchnorm() {
        return Ok(());
    }
    net.set_train(true);
    let order: Vec<usize> = (0..data.len()).collect();
    let result = (|| {
        for (k, rows) in order.chunks(batch.max(1)).take(batches.max(1)).enumerate() {
            let (x, _) = batch_at(data, rows, device)?;
            autodiff::forward(net, w, &x)?;
            net.update_running_stats_with(Some(1.0 / (k + 1) as f32))?;
        }
        Ok(())
    })();
    net.set_train(false);
    result
}
