//! The arms of the continual comparison: their declared search spaces, and one configuration
//! run over the tasks after the first, each task's learning stopped when the task's budget is
//! spent. Everything an arm does for a task — EWC's Fisher, DER++'s stored logits, the geodesic
//! arm's reference outputs — is counted in that task's budget.

use super::losses::{logit_matching, EwcMemory};
use super::tasks::{Scenario, TaskSequence, TaskSplit};
use super::ContinualExperiment;
use crate::autodiff;
use crate::cost;
use crate::data::{Dataset, EpochBatches};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::runner::{Budget, Snapshot};
use crate::experiments::search::ConfigRecord;
use crate::geodesic::penalty_step;
use crate::geodesic::step::batch_at;
use crate::nn::network::Network;
use crate::ops::{elementwise as ew, flat};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind, Schedule};
use crate::tensor::Tensor;
use crate::train::evaluate_among;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Arm names, in report order.
pub const ARMS: [&str; 6] = ["geodesic", "fine-tune", "ewc", "replay", "der++", "joint"];

/// What the geodesic arm does at each step, for the report.
pub const GEODESIC_OBJECTIVE: &str = "penalty step of length ε (cosine-annealed over the task, floored at ε/1000): \
    θ = −ε d/‖d‖, d = ∇_w Σ_x BD(softmax f(x; w), softmax f(x; w_task_start)) over a buffer batch x \
    + λ ∇_w CE on the new-task batch joined by a second, labelled buffer batch (as replay's)";

/// One configuration of one arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Config {
    /// The geodesic arm: weight λ of the loss, step length ε.
    Geodesic {
        /// λ.
        lambda: f64,
        /// ε (cosine-annealed over each task, floored at ε/1000).
        eps: f64,
    },
    /// EWC: learning rate and penalty weight.
    Ewc {
        /// Learning rate.
        lr: f64,
        /// λ of the quadratic penalty.
        ewc_lambda: f64,
    },
    /// DER++: learning rate, weight α of the logit matching, β of the replayed labels.
    DerPlusPlus {
        /// Learning rate.
        lr: f64,
        /// α.
        alpha: f64,
        /// β.
        beta: f64,
    },
    /// Fine-tuning, replay, joint training: the learning rate.
    Sgd {
        /// Learning rate.
        lr: f64,
    },
}

/// Whether `arm` reads the buffer (replay, DER++ and the geodesic arm); the others learn the
/// same way whatever its size, so one run of theirs serves every buffer size of an experiment.
pub fn uses_buffer(arm: &str) -> bool {
    matches!(arm, "geodesic" | "replay" | "der++")
}

/// The declared search space of `arm` on `sequence`. The MNIST sequences take the small-rate
/// grids below; split CIFAR (a VGG whose first task learns at rate 0.05) takes two points per
/// arm, sized by one-seed validation pilots on split CIFAR-10 (README): the learning rates 0.01
/// and 0.03 of every SGD arm (replay learned less at 0.1 than at 0.03 and barely learned new
/// tasks at 0.001), and the geodesic arm's larger λ (at λ 3 it learned no new task). EWC takes
/// λ 1 and 10 at rate 0.01: at λ 100 it diverged on split CIFAR-10 at both rates 0.01 and 0.03.
pub fn search_space(arm: &str, sequence: TaskSequence) -> Vec<Config> {
    let cifar = matches!(sequence, TaskSequence::SplitCifar10 | TaskSequence::SplitCifar100);
    let geodesic = |grid: &[(f64, f64)]| grid.iter().map(|&(lambda, eps)| Config::Geodesic { lambda, eps }).collect();
    let ewc = |grid: &[(f64, f64)]| grid.iter().map(|&(lr, ewc_lambda)| Config::Ewc { lr, ewc_lambda }).collect();
    let der = |grid: &[(f64, f64, f64)]| {
        grid.iter().map(|&(lr, alpha, beta)| Config::DerPlusPlus { lr, alpha, beta }).collect()
    };
    let sgd = |grid: &[f64]| grid.iter().map(|&lr| Config::Sgd { lr }).collect();
    match (arm, cifar) {
        ("geodesic", false) => {
            geodesic(&[(3.0, 0.02), (3.0, 0.05), (10.0, 0.02), (10.0, 0.05), (30.0, 0.02), (30.0, 0.05)])
        }
        ("geodesic", true) => geodesic(&[(30.0, 0.1), (100.0, 0.05)]),
        ("ewc", false) => {
            ewc(&[(0.003, 10.0), (0.003, 100.0), (0.003, 1000.0), (0.01, 10.0), (0.01, 100.0), (0.01, 1000.0)])
        }
        ("ewc", true) => ewc(&[(0.01, 1.0), (0.01, 10.0)]),
        ("der++", false) => der(&[
            (0.001, 0.03, 0.5),
            (0.001, 0.1, 0.5),
            (0.001, 0.1, 1.0),
            (0.001, 0.3, 0.5),
            (0.003, 0.03, 0.5),
            (0.003, 0.1, 0.5),
            (0.003, 0.1, 1.0),
            (0.003, 0.3, 0.5),
        ]),
        ("der++", true) => der(&[(0.01, 0.1, 0.5), (0.03, 0.1, 0.5)]),
        (_, false) => sgd(&[0.001, 0.003, 0.01, 0.03, 0.1]),
        (_, true) => sgd(&[0.01, 0.03]),
    }
}

/// The record of one finished configuration run (DIR/.partial/runs/KEY.json, the network after
/// every task beside it as KEY.ckpt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConfigRun {
    pub(super) config: Config,
    /// Validation accuracy on every task after the last one, under each scenario of the
    /// experiment (in its order).
    pub(super) validation: Vec<Vec<f64>>,
    /// Cost of every task after the first, in cost units.
    pub(super) cost_per_task: Vec<f64>,
    /// Steps taken on every task after the first.
    pub(super) steps_per_task: Vec<usize>,
    pub(super) seconds: f64,
    /// Whether the parameters (or the geodesic arm's gradient) became non-finite: the run is
    /// kept as it is and never picked.
    pub(super) diverged: bool,
}

impl ConfigRun {
    /// Mean validation accuracy over the tasks after the last one, under the experiment's
    /// scenario `s` (an index into its scenarios).
    pub(super) fn validation_mean(&self, s: usize) -> f64 {
        let v = self.validation.get(s).map_or(&[][..], Vec::as_slice);
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// What picks among an arm's runs under scenario `s`: the mean validation accuracy; a
    /// diverged run never wins.
    pub(super) fn score(&self, s: usize) -> f64 {
        if self.diverged {
            f64::NEG_INFINITY
        } else {
            self.validation_mean(s)
        }
    }
}

impl ConfigRecord for ConfigRun {
    type Config = Config;
    fn config(&self) -> &Config {
        &self.config
    }
    /// The score under the experiment's first scenario ([`ConfigRun::score`]).
    fn validation_score(&self) -> f64 {
        self.score(0)
    }
    fn describe(&self) -> String {
        let means: Vec<String> =
            (0..self.validation.len()).map(|s| format!("{:.2}%", 100.0 * self.validation_mean(s))).collect();
        format!("validation {}, {:.0} s", means.join(" / "), self.seconds)
    }
}

/// What the configuration runs of one seed share.
pub(super) struct Ctx<'a> {
    pub(super) exp: &'a ContinualExperiment,
    pub(super) net: &'a Network,
    pub(super) tasks: &'a [TaskSplit<'a>],
    /// `buffers[t]`: the stored examples of tasks `0..=t` (per class, from their fit images).
    pub(super) buffers: Vec<Dataset>,
    pub(super) seed: u64,
    pub(super) device: &'a Device,
    pub(super) unit_flops: u64,
}

impl Ctx<'_> {
    /// Accuracy of `w` on `data` of task `t` under `scenario` (not counted).
    pub(super) fn accuracy(&self, w: &Tensor, data: &Dataset, t: usize, scenario: Scenario) -> Result<f64> {
        let among = (scenario == Scenario::Task).then_some(self.tasks[t].task.classes.as_slice());
        cost::uncounted(|| evaluate_among(self.net, w, data, usize::MAX, among, self.device))
    }

    /// A batch of `buffer` (at most the whole of it) for `step` of stream `stream`.
    fn buffer_batch(&self, buffer: &Dataset, step: usize, stream: u64) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let size = self.exp.batch.min(buffer.len());
        let rows = EpochBatches::new(buffer.len(), size, self.seed ^ stream).at(step).to_vec();
        let (x, y) = batch_at(buffer, &rows, self.device)?;
        Ok((x, y, rows))
    }
}

/// SGD with Nesterov momentum 0.9, no weight decay, at the constant rate `lr` (annealed once
/// the task's steps are known).
fn sgd(lr: f32) -> Optimizer {
    Optimizer::new(OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 }, LrSchedule::constant(lr))
}

/// A half cosine from `base` to 0 over `total` steps.
fn annealed(base: f32, total: usize) -> LrSchedule {
    LrSchedule { base, schedule: Schedule::Cosine { total, min_factor: 0.0 }, warmup: 0 }
}

/// What one step of an arm does to the weights.
enum Update {
    /// A gradient for the arm's optimiser.
    Gradient(Tensor),
    /// A displacement added as it is (the geodesic arm's penalty step).
    Displacement(Tensor),
    /// The gradient was not finite: the run stops.
    Diverged,
}

/// Runs one configuration of `arm` over tasks `1..` from `w1` (the network after the first
/// task, shared by every arm; its running statistics restored first); `tick` reports progress.
/// Returns the record and the network after every task (`w1` first).
pub(super) fn run_config(
    ctx: &Ctx<'_>,
    w1: &Snapshot,
    arm: &str,
    config: Config,
    tick: &mut dyn FnMut(f64),
) -> Result<(ConfigRun, Vec<Snapshot>)> {
    let (exp, net, device) = (ctx.exp, ctx.net, ctx.device);
    let start = Instant::now();
    let mut w = w1.restore(net)?.clone();
    let mut nets = vec![w1.clone()];
    let mut ewc = EwcMemory::new(&w)?;
    // DER++'s stored logits, in the order of the buffer's examples.
    let mut stored_logits: Vec<f32> = Vec::new();
    let (mut cost_per_task, mut steps_per_task) = (Vec::new(), Vec::new());
    let mut diverged = false;
    let tasks = ctx.tasks.len();
    for t in 1..tasks {
        let fit = &ctx.tasks[t].split.fit;
        let buffer = &ctx.buffers[t - 1];
        let budget = Budget::start((exp.budget * ctx.unit_flops as f64) as u64);
        // What the arm does once per task, inside the task's budget.
        match (arm, config) {
            ("ewc", _) => {
                let prev = &ctx.tasks[t - 1].split.fit;
                let n = exp.fisher_examples.min(prev.len());
                let rows = crate::data::shuffled_indices(prev.len(), ctx.seed ^ 0xF15E ^ t as u64);
                ewc.add_task(net, &w, &prev.subset(&rows[..n]), device)?;
            }
            ("der++", _) => {
                let new_rows: Vec<usize> = (stored_logits.len() / net.classes..buffer.len()).collect();
                let (x, _) = batch_at(buffer, &new_rows, device)?;
                stored_logits.extend(autodiff::forward(net, &w, &x)?.to_vec()?);
            }
            _ => {}
        }
        let joint_data = if arm == "joint" { Some(seen_tasks(ctx, t)?) } else { None };
        let data = joint_data.as_ref().unwrap_or(fit);
        let task_start = w.clone();
        let lr = match config {
            Config::Geodesic { eps, .. } => eps as f32,
            Config::Ewc { lr, .. } | Config::DerPlusPlus { lr, .. } | Config::Sgd { lr } => lr as f32,
        };
        let mut opt = sgd(lr);
        let mut schedule = LrSchedule::constant(lr);
        let mut batches =
            EpochBatches::new(data.len(), exp.batch.min(data.len()), ctx.seed.wrapping_add(1000 * t as u64));
        let mut step = 0usize;
        while !budget.exhausted() {
            let before = budget.spent();
            let rows = batches.at(step).to_vec();
            let new_grad = |w: &Tensor| -> Result<Tensor> {
                let (x, y) = batch_at(data, &rows, device)?;
                Ok(autodiff::loss_grad(net, w, &x, &y)?.1)
            };
            let step_seed = ctx.seed ^ ((t as u64) << 40) ^ step as u64;
            let update = net.training_step(step_seed, || -> Result<Update> {
                Ok(match (arm, config) {
                    ("fine-tune" | "joint", _) => Update::Gradient(new_grad(&w)?),
                    ("ewc", Config::Ewc { ewc_lambda, .. }) => {
                        Update::Gradient(ew::add(&new_grad(&w)?, &ewc.penalty_grad(&w, ewc_lambda as f32)?)?)
                    }
                    ("replay", _) => Update::Gradient(replay_grad(ctx, &w, data, &rows, buffer, step)?),
                    ("der++", Config::DerPlusPlus { alpha, beta, .. }) => {
                        let g_new = new_grad(&w)?;
                        // The running statistics follow the new-task batch, not the buffer's.
                        let (g_logits, g_labels) = net.keeping_batch_stats(|| {
                            let (xm, _, rows) = ctx.buffer_batch(buffer, step, 0xD1)?;
                            let k = net.classes;
                            let z: Vec<f32> =
                                rows.iter().flat_map(|&r| stored_logits[r * k..(r + 1) * k].iter().copied()).collect();
                            let z = Tensor::from_vec(device, &[rows.len(), k], z)?;
                            let g_logits = logit_matching(net, &w, &xm, &z)?.1;
                            let (xb, yb, _) = ctx.buffer_batch(buffer, step, 0xD2)?;
                            Ok((g_logits, autodiff::loss_grad(net, &w, &xb, &yb)?.1))
                        })?;
                        Update::Gradient(flat::axpy(
                            beta as f32,
                            &g_labels,
                            &flat::axpy(alpha as f32, &g_logits, &g_new)?,
                        )?)
                    }
                    ("geodesic", Config::Geodesic { lambda, .. }) => {
                        let g = replay_grad(ctx, &w, data, &rows, buffer, step)?;
                        if !flat::norm(&g)?.is_finite() {
                            return Ok(Update::Diverged);
                        }
                        // The running statistics follow the joined batch, not the buffer batch
                        // of the distance term.
                        let eps = schedule.lr(step).max(1e-3 * lr);
                        Update::Displacement(net.keeping_batch_stats(|| {
                            let (xm, _, _) = ctx.buffer_batch(buffer, step, 0xFACE)?;
                            let reference = autodiff::forward(net, &task_start, &xm)?;
                            Ok(penalty_step(net, &w, &reference, &xm, &g, lambda as f32, eps)?.theta)
                        })?)
                    }
                    _ => return Err(Error::Invalid(format!("configuration {config:?} is not one of arm {arm}"))),
                })
            })?;
            w = match update {
                Update::Gradient(g) => opt.step(&w, &g)?,
                Update::Displacement(theta) => ew::add(&w, &theta)?,
                Update::Diverged => {
                    // The run is kept as it is, and never picked.
                    diverged = true;
                    break;
                }
            };
            step += 1;
            plan(&mut schedule, &mut opt, lr, step, before, &budget);
            tick(((t - 1) as f64 + budget.fraction().min(1.0)) / (tasks - 1) as f64);
        }
        cost_per_task.push(budget.spent() as f64 / ctx.unit_flops as f64);
        steps_per_task.push(step);
        nets.push(Snapshot::of(net, &w)?);
    }
    let diverged = diverged || !flat::norm(&w)?.is_finite();
    let validation = exp
        .scenarios
        .iter()
        .map(|&scenario| (0..tasks).map(|t| ctx.accuracy(&w, &ctx.tasks[t].split.validation, t, scenario)).collect())
        .collect::<Result<Vec<Vec<f64>>>>()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((ConfigRun { config, validation, cost_per_task, steps_per_task, seconds, diverged }, nets))
}

/// After the first step of a task: the steps the budget affords at that step's cost, and the
/// learning rate (the geodesic arm's ε) annealed by a half cosine over them.
fn plan(schedule: &mut LrSchedule, opt: &mut Optimizer, base: f32, step: usize, before: u64, budget: &Budget) {
    if step == 1 {
        let per_step = (budget.spent() - before).max(1);
        let total = 1 + (budget.total().saturating_sub(budget.spent()) / per_step) as usize;
        *schedule = annealed(base, total);
        opt.set_schedule(*schedule);
    }
}

/// The gradient of the cross-entropy on the new-task batch `rows` of `data` joined by a
/// labelled batch of `buffer` (one pass over both).
fn replay_grad(
    ctx: &Ctx<'_>,
    w: &Tensor,
    data: &Dataset,
    rows: &[usize],
    buffer: &Dataset,
    step: usize,
) -> Result<Tensor> {
    let mut joined = data.subset(rows);
    let size = ctx.exp.batch.min(buffer.len());
    let buffer_rows = EpochBatches::new(buffer.len(), size, ctx.seed ^ 0xBEEF).at(step).to_vec();
    joined.append(&buffer.subset(&buffer_rows))?;
    let (x, y) = batch_at(&joined, &(0..joined.len()).collect::<Vec<_>>(), ctx.device)?;
    Ok(autodiff::loss_grad(ctx.net, w, &x, &y)?.1)
}

/// The fit images of tasks `0..=t` together (joint training's data).
fn seen_tasks(ctx: &Ctx<'_>, t: usize) -> Result<Dataset> {
    let mut all = ctx.tasks[0].split.fit.clone();
    for s in &ctx.tasks[1..=t] {
        all.append(&s.split.fit)?;
    }
    Ok(all)
}
