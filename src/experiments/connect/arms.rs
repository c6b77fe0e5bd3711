//! The arms of the connection comparison: their declared search spaces, and one configuration
//! run from a seed's pair (A, B) until the budget is spent, ending in the curve's evaluation
//! points.

use super::points::{ArcSampler, PairRun};
use super::ConnectExperiment;
use crate::cost;
use crate::data::{EpochBatches, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::curves::{train_bend, BendTraining, Curve, CurveKind};
use crate::experiments::runner::Budget;
use crate::experiments::search::ConfigRecord;
use crate::geodesic::connect::step_gradient;
use crate::geodesic::step::{batch_at, path_step, StepMethod, StepSettings};
use crate::geodesic::MetricKind;
use crate::ops::{elementwise as ew, flat};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One configuration of one arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Config {
    /// The geodesic path: weight γ of the restoring cross-entropy, and the step radius as
    /// `stretch × ‖A − B‖ / N` for the `N` steps the budget affords (the path may be up to
    /// `stretch` times longer than the straight line before the budget runs out).
    Geodesic {
        /// γ.
        gamma: f64,
        /// How much longer than the straight line the steps could make the path.
        stretch: f64,
    },
    /// A trained curve (Bezier or polygonal chain): the bend's learning rate and schedule.
    Curve {
        /// Base learning rate (SGD, Nesterov momentum 0.9).
        lr: f64,
        /// Cosine annealing of the rate to 0 over the budget (else constant).
        cosine: bool,
    },
    /// Linear interpolation: nothing to choose or train.
    Linear {},
}

/// The declared search space of `arm`: four configurations for the trained arms, one for the
/// linear interpolation.
pub fn search_space(arm: &str) -> Vec<Config> {
    match arm {
        "geodesic" => [(100.0, 1.5), (100.0, 3.0), (300.0, 1.5), (300.0, 3.0)]
            .into_iter()
            .map(|(gamma, stretch)| Config::Geodesic { gamma, stretch })
            .collect(),
        "linear" => vec![Config::Linear {}],
        _ => [(0.01, false), (0.01, true), (0.05, false), (0.05, true)]
            .into_iter()
            .map(|(lr, cosine)| Config::Curve { lr, cosine })
            .collect(),
    }
}

/// The record of one finished configuration run (DIR/.partial/runs/KEY.json, what defines its
/// curve beside it as KEY.ckpt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConfigRun {
    pub(super) config: Config,
    /// Validation accuracy at each evaluation point.
    pub(super) validation: Vec<f64>,
    pub(super) cost: f64,
    pub(super) seconds: f64,
    /// Euclidean length of the curve.
    pub(super) length: f64,
    /// How the run ended (the geodesic path: `budget`, or why it stopped early).
    pub(super) ending: String,
    /// BatchNorm statistics recomputed at the interior validation points, in cost units (not
    /// part of `cost`).
    pub(super) refresh_cost: f64,
}

impl ConfigRun {
    /// Lowest validation accuracy along the curve.
    pub(super) fn validation_min(&self) -> f64 {
        self.validation.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

impl ConfigRecord for ConfigRun {
    type Config = Config;
    fn config(&self) -> &Config {
        &self.config
    }
    /// The lowest validation accuracy along the curve (the report's headline is the lowest
    /// test accuracy).
    fn validation_score(&self) -> f64 {
        self.validation_min()
    }
    fn describe(&self) -> String {
        format!("lowest validation accuracy {:.2}%, {:.0} s", 100.0 * self.validation_min(), self.seconds)
    }
    /// The mean validation accuracy along the curve (the ends, shared by every curve, can make
    /// the lowest accuracies equal).
    fn tie_break(&self) -> f64 {
        self.validation.iter().sum::<f64>() / self.validation.len().max(1) as f64
    }
}

/// What one configuration run needs.
pub(super) struct Ctx<'a> {
    pub(super) exp: &'a ConnectExperiment,
    pub(super) split: &'a Split,
    pub(super) device: &'a Device,
    pub(super) unit_flops: u64,
}

/// Runs one configuration of `arm` for the seed's pair until the budget is spent; `tick`
/// reports progress. Returns the record (its validation scores still empty), the curve's
/// evaluation points (`exp.points`, evenly spaced: in `t` for the curves, by arc length for the
/// path) and the network worth keeping (a curve's bend, the path's middle; none for the line).
pub(super) fn run_config(
    ctx: &Ctx<'_>,
    pair: &PairRun<'_>,
    arm: &str,
    config: Config,
    tick: &mut dyn FnMut(f64),
) -> Result<(ConfigRun, Vec<Tensor>, Option<Tensor>)> {
    let start = Instant::now();
    let budget = Budget::start((ctx.exp.budget * ctx.unit_flops as f64) as u64);
    let points = ctx.exp.points;
    let (curve, ending, network) = match (arm, config) {
        ("linear", Config::Linear {}) => {
            let line = cost::uncounted(|| Curve::new(CurveKind::Bezier, pair.wa, pair.wb))?;
            (even_points(&line, points)?, "nothing to train".into(), None)
        }
        ("bezier" | "polychain", Config::Curve { lr, cosine }) => {
            let mut curve = Curve::new(arm.parse()?, pair.wa, pair.wb)?;
            let o = BendTraining {
                net: pair.net_a,
                fit: &ctx.split.fit,
                batch: ctx.exp.batch,
                lr: lr as f32,
                cosine,
                seed: pair.seed.wrapping_mul(0x9E37_79B9).wrapping_add(2),
                device: ctx.device,
            };
            train_bend(&mut curve, &o, &budget, &mut |_| {
                tick(budget.fraction());
                Ok(())
            })?;
            (even_points(&curve, points)?, "budget".to_string(), Some(curve.bend))
        }
        ("geodesic", Config::Geodesic { gamma, stretch }) => {
            let (curve, ending) = geodesic_path(ctx, pair, gamma as f32, stretch, &budget, tick)?;
            let middle = curve[curve.len() / 2].clone();
            (curve, ending, Some(middle))
        }
        _ => return Err(Error::Invalid(format!("configuration {config:?} is not one of arm {arm}"))),
    };
    let cost = budget.spent() as f64 / ctx.unit_flops as f64;
    let length = cost::uncounted(|| {
        curve.windows(2).map(|w| Ok(flat::norm(&ew::sub(&w[1], &w[0])?)? as f64)).sum::<Result<f64>>()
    })?;
    let record = ConfigRun {
        config,
        validation: Vec::new(),
        cost,
        seconds: start.elapsed().as_secs_f64(),
        length,
        ending,
        refresh_cost: 0.0,
    };
    Ok((record, curve, network))
}

/// `n` points of `curve` at evenly spaced `t` from 0 to 1 (for the evaluation: not counted).
fn even_points(curve: &Curve, n: usize) -> Result<Vec<Tensor>> {
    cost::uncounted(|| (0..n).map(|i| curve.point(i as f32 / (n - 1).max(1) as f32)).collect())
}

/// CG iterations of each trust-region step of the geodesic arm.
pub const CG_ITER: usize = 10;

/// The geodesic arm's path from A toward B (the network in eval mode: a BatchNorm network
/// uses A's running statistics along the whole path): each step follows `(w − w_B) + γ ∇CE(w)` on the
/// step's batch through the trust-region step ([`CG_ITER`] CG iterations) in the Fisher metric
/// of that batch, of radius `ε = stretch × ‖A − B‖ / N`, `N` the steps the budget affords at
/// the cost of the first. The path stops within `ε` of B, or when the budget is spent; a path
/// that stopped short of B is closed by the straight segment to B. Returns the evaluation
/// points, evenly spaced by arc length, and how the path ended.
fn geodesic_path(
    ctx: &Ctx<'_>,
    pair: &PairRun<'_>,
    gamma: f32,
    stretch: f64,
    budget: &Budget,
    tick: &mut dyn FnMut(f64),
) -> Result<(Vec<Tensor>, String)> {
    let (wa, wb, net) = (pair.wa, pair.wb, pair.net_a);
    let distance = flat::norm(&ew::sub(wa, wb)?)? as f64;
    let mut sampler = ArcSampler::new(wa, distance / 64.0);
    let seed = pair.seed.wrapping_mul(0x9E37_79B9).wrapping_add(3);
    let mut batches = EpochBatches::new(ctx.split.fit.len(), ctx.exp.batch, seed);
    let mut w = wa.clone();
    let mut step = 0usize;
    // The first step's radius is a guess; the rest follow from its cost.
    let mut eps = (stretch * distance / 1000.0) as f32;
    let ending = loop {
        if budget.exhausted() {
            break format!("budget spent after {step} steps");
        }
        let left = flat::norm(&ew::sub(&w, wb)?)?;
        if left <= eps {
            break format!("reached B after {step} steps");
        }
        let (x, y) = batch_at(&ctx.split.fit, batches.at(step), ctx.device)?;
        let g = step_gradient(net, &w, wb, &x, &y, gamma)?;
        let settings = StepSettings {
            method: StepMethod::TrustRegion,
            metric: MetricKind::Fisher,
            eps,
            beta: 1.0,
            cg_iter: CG_ITER,
        };
        let theta = path_step(net, &w, wa, &x, &y, &g, &settings)?.0.theta;
        let next = ew::add(&w, &theta)?;
        if !flat::norm(&next)?.is_finite() {
            break format!("non-finite step at step {step}");
        }
        w = next;
        sampler.push(&w)?;
        step += 1;
        if step == 1 {
            let steps = (1.0 / budget.fraction().max(1e-9)).max(1.0);
            eps = (stretch * distance / steps) as f32;
        }
        tick(budget.fraction());
    };
    let points = cost::uncounted(|| sampler.finish(&w, wb)?.even_points(ctx.exp.points))?;
    Ok((points, ending))
}
