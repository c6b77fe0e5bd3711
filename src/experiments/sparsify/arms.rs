//! The arms of the sparsification comparison: their declared search spaces, and one
//! configuration run from a seed's start network until the budget is spent.

use super::{SeedRun, SparsifyExperiment};
use crate::cost::{self, Meter};
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::pruning::{MaskSchedule, SgdRun};
use crate::experiments::runner::Budget;
use crate::experiments::search::ConfigRecord;
use crate::geodesic::path::{integrate, PathConfig, Step, ToPruned};
use crate::geodesic::step::{batch_of, path_step, step_batch_seed, StepMethod, StepSettings};
use crate::geodesic::MetricKind;
use crate::nn::network::Network;
use crate::ops::flat;
use crate::tensor::Tensor;
use crate::train::evaluate;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Share of the geodesic arm's budget spent on the path (the rest: masked SGD from its end).
pub const PATH_SHARE: f64 = 0.6;

/// Validation images behind each point of the accuracy-versus-cost curves.
pub(super) const CURVE_IMAGES: usize = 1000;

/// Points of each run's curve.
const CURVE_POINTS: usize = 10;

/// One configuration of one arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Config {
    /// The geodesic arm: penalty weight λ, step length ε, learning rate of the last stretch.
    Geodesic {
        /// λ.
        lambda: f64,
        /// ε.
        eps: f64,
        /// Learning rate of the masked SGD after the path.
        lr: f64,
    },
    /// A baseline: its learning rate.
    Baseline {
        /// Learning rate.
        lr: f64,
    },
}

impl Config {
    /// This configuration with its learning rate multiplied by `scale` (λ and ε unchanged).
    pub fn with_lr_scale(self, scale: f64) -> Config {
        // Rounded to 9 significant digits, so that 0.003 × 0.1 reads 0.0003.
        let scaled = |lr: f64| format!("{:.8e}", lr * scale).parse().unwrap_or(lr * scale);
        match self {
            Config::Geodesic { lambda, eps, lr } => Config::Geodesic { lambda, eps, lr: scaled(lr) },
            Config::Baseline { lr } => Config::Baseline { lr: scaled(lr) },
        }
    }
}

/// The declared search space of `arm`: four configurations each (their learning rates are
/// multiplied by the experiment's `lr_scale`).
pub fn search_space(arm: &str) -> Vec<Config> {
    match arm {
        "geodesic" => [(0.1, 0.01), (0.1, 0.03), (0.3, 0.01), (0.3, 0.03)]
            .into_iter()
            .map(|(lambda, lr)| Config::Geodesic { lambda, eps: 0.05, lr })
            .collect(),
        _ => [0.003, 0.01, 0.03, 0.1].into_iter().map(|lr| Config::Baseline { lr }).collect(),
    }
}

/// The record of one finished configuration run (DIR/.partial/runs/KEY.json, its network
/// beside it as KEY.ckpt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConfigRun {
    pub(super) config: Config,
    pub(super) validation_accuracy: f64,
    pub(super) cost: f64,
    pub(super) seconds: f64,
    pub(super) sparsity: f64,
    pub(super) curve: Vec<(f64, f64)>,
}

impl ConfigRecord for ConfigRun {
    type Config = Config;
    fn config(&self) -> &Config {
        &self.config
    }
    fn validation_score(&self) -> f64 {
        self.validation_accuracy
    }
    fn describe(&self) -> String {
        format!("validation {:.2}%, {:.0} s", 100.0 * self.validation_accuracy, self.seconds)
    }
}

/// What one configuration run needs.
pub(super) struct Ctx<'a> {
    pub(super) exp: &'a SparsifyExperiment,
    pub(super) split: &'a Split,
    pub(super) curve_set: Dataset,
    pub(super) device: &'a Device,
    pub(super) unit_flops: u64,
}

impl Ctx<'_> {
    /// Validation accuracy of `w` hard-pruned to the target, on the curve's images (not
    /// counted in any arm's cost).
    fn curve_point(&self, net: &Network, w: &Tensor) -> Result<f64> {
        cost::uncounted(|| {
            let pruned = flat::prune(w, flat::magnitude_threshold(w, self.exp.sparsity)?)?;
            evaluate(net, &pruned, &self.curve_set, CURVE_IMAGES, self.device)
        })
    }
}

/// Runs one configuration of `arm` from the seed's start network until the budget is spent;
/// `tick(fraction)` reports progress. Returns its record and its final (sparse) parameters.
pub(super) fn run_config(
    ctx: &Ctx<'_>,
    s: &SeedRun<'_>,
    arm: &str,
    config: Config,
    tick: &mut dyn FnMut(f64),
) -> Result<(ConfigRun, Tensor)> {
    let exp = ctx.exp;
    let start = Instant::now();
    let mut eval_seconds = 0.0;
    let budget = Budget::start((exp.budget * ctx.unit_flops as f64) as u64);
    let every = (budget.total() / CURVE_POINTS as u64).max(1);
    let mut next_point = 0u64;
    let mut curve = Vec::new();
    let mut on_point = |w: &Tensor, curve: &mut Vec<(f64, f64)>| -> Result<()> {
        tick(budget.fraction());
        if budget.spent() >= next_point {
            let t = Instant::now();
            curve.push((budget.spent() as f64 / ctx.unit_flops as f64, ctx.curve_point(s.net, w)?));
            eval_seconds += t.elapsed().as_secs_f64();
            next_point = budget.spent() + every;
        }
        Ok(())
    };
    let sgd = |lr: f64| SgdRun {
        net: s.net,
        fit: &ctx.split.fit,
        batch: exp.batch,
        lr: lr as f32,
        seed: s.seed.wrapping_mul(0x9E37_79B9).wrapping_add(1),
        device: ctx.device,
    };
    let ones = || flat::prune_mask(s.w0, 0.0);
    let (w, mask) = match (arm, config) {
        ("geodesic", Config::Geodesic { lambda, eps, lr }) => {
            let end = geodesic_path(ctx, s, lambda as f32, eps as f32, &budget, &mut |w| on_point(w, &mut curve))?;
            let mask = flat::prune_mask(&end, flat::magnitude_threshold(&end, exp.sparsity)?)?;
            sgd(lr).run(end, mask, MaskSchedule::Fixed, &budget, &mut |w| on_point(w, &mut curve))?
        }
        ("one-shot-magnitude", Config::Baseline { lr }) => {
            let mask = flat::prune_mask(s.w0, flat::magnitude_threshold(s.w0, exp.sparsity)?)?;
            sgd(lr).run(s.w0.clone(), mask, MaskSchedule::Fixed, &budget, &mut |w| on_point(w, &mut curve))?
        }
        ("gradual-magnitude", Config::Baseline { lr }) => {
            let schedule = MaskSchedule::Gradual { fraction: exp.sparsity, ramp_share: 0.6, every: 50 };
            sgd(lr).run(s.w0.clone(), ones()?, schedule, &budget, &mut |w| on_point(w, &mut curve))?
        }
        _ => return Err(Error::Invalid(format!("configuration {config:?} is not one of arm {arm}"))),
    };
    let cost = budget.spent() as f64 / ctx.unit_flops as f64;
    let w = flat::mask(&w, &mask)?;
    let t = Instant::now();
    let validation_accuracy =
        cost::uncounted(|| evaluate(s.net, &w, &ctx.split.validation, ctx.split.validation.len(), ctx.device))?;
    curve.push((cost, cost::uncounted(|| evaluate(s.net, &w, &ctx.curve_set, CURVE_IMAGES, ctx.device))?));
    eval_seconds += t.elapsed().as_secs_f64();
    let sparsity = flat::count_zeros(&w)? as f64 / w.numel().max(1) as f64;
    let seconds = start.elapsed().as_secs_f64() - eval_seconds;
    Ok((ConfigRun { config, validation_accuracy, cost, seconds, sparsity, curve }, w))
}

/// The geodesic arm's path: penalty steps from the start network toward `P_p(w)` until
/// [`PATH_SHARE`] of the budget is spent (the number of steps, and the 70% ramp of the target
/// fraction along them, planned from the cost of the first step). Returns the path's end.
fn geodesic_path(
    ctx: &Ctx<'_>,
    s: &SeedRun<'_>,
    lambda: f32,
    eps: f32,
    budget: &Budget,
    on_step: &mut dyn FnMut(&Tensor) -> Result<()>,
) -> Result<Tensor> {
    let exp = ctx.exp;
    // The distance term is the Bhattacharyya distance to the start network's outputs; the
    // metric only measures each step's functional length (for the record).
    let settings =
        StepSettings { method: StepMethod::Penalty { lambda }, metric: MetricKind::Fisher, eps, beta: 1.0, cg_iter: 1 };
    let seed = s.seed;
    let mut rule = |step: usize, w: &Tensor, g: &Tensor| -> Result<Step> {
        let (x, labels) = batch_of(&ctx.split.fit, exp.batch, step_batch_seed(seed, step), ctx.device)?;
        let (st, _) = s
            .net
            .training_step(step_batch_seed(seed, step), || path_step(s.net, w, s.w0, &x, &labels, g, &settings))?;
        on_step(w)?;
        Ok(st)
    };
    let path_flops = (budget.total() as f64 * PATH_SHARE) as u64;
    // Plan the steps from the cost of one step (of the objective and the rule, counted).
    let meter = Meter::start();
    let mut probe = ToPruned::new(exp.sparsity);
    let (_, g) = crate::geodesic::path::Objective::value_grad(&mut probe, s.w0)?;
    let first = rule(0, s.w0, &g)?;
    let step_flops = meter.flops().max(1);
    let steps = ((path_flops.saturating_sub(budget.spent())) / step_flops) as usize;
    let mut objective = ToPruned::gradual(exp.sparsity, ((steps as f64 * 0.7) as usize).max(1));
    let w1 = crate::ops::elementwise::add(s.w0, &first.theta)?;
    if steps == 0 {
        return Ok(w1);
    }
    let cfg = PathConfig { steps, stop_below: 0.0, log_every: steps + 1 };
    // The probe step is the path's first: the walk continues from it as step 1.
    let mut shifted = |step: usize, w: &Tensor, g: &Tensor| rule(step + 1, w, g);
    let result = integrate(w1, None, &mut objective, &mut shifted, &cfg, &mut |_, _, _| Ok(()))?;
    Ok(result.params)
}
