//! `geopath sparsify`: sparsification through the comparison protocol. From the same start
//! network (per seed), at the same cost on the engine's counter, three arms each run every
//! configuration of a declared search space, pick one on the validation split, and report its
//! test accuracy:
//! - `geodesic`: penalty steps (the gradient of the Bhattacharyya distance to the start
//!   network's outputs on the step's batch, plus λ times the gradient of `½‖w − P_p(w)‖²`,
//!   scaled to length ε; the fraction `p` ramps up along the first 70% of the path by the cubic
//!   schedule) for the first [`PATH_SHARE`] of the budget, then the hard-pruned path end
//!   fine-tuned by masked SGD for the rest;
//! - `one-shot-magnitude`: magnitude pruning of the start network, then masked SGD;
//! - `gradual-magnitude`: gradual magnitude pruning (cubic schedule over the first 60% of the
//!   steps, mask updated every 50 steps), then masked SGD.
//!
//! Every arm's run stops when it has spent the budget (in forward passes of one batch); the
//! frozen start network's forward passes of the geodesic arm are counted like every other pass.
//! Evaluations (validation scores, the curve, the final test accuracy) are not part of any
//! arm's cost.

use super::compare::{ArmReport, Compare, OverSeeds, Paired};
use super::pruning::{MaskSchedule, SgdRun};
use super::runner::{write_json, Budget, Output, Progress, RunDir};
use crate::checkpoint::Checkpoint;
use crate::cost::{self, Meter};
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::geodesic::path::{integrate, PathConfig, Step, ToPruned};
use crate::geodesic::step::{batch_of, path_step, step_batch_seed, Reference, StepMethod, StepSettings};
use crate::geodesic::MetricKind;
use crate::nn::network::Network;
use crate::ops::flat;
use crate::report::{write_plot, Series};
use crate::tensor::Tensor;
use crate::train::evaluate;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;

/// Share of the geodesic arm's budget spent on the path (the rest: masked SGD from its end).
pub const PATH_SHARE: f64 = 0.6;

/// Validation images behind each point of the accuracy-versus-cost curves.
const CURVE_IMAGES: usize = 1000;

/// Points of each run's curve.
const CURVE_POINTS: usize = 10;

/// Arm names, in report order.
pub const ARMS: [&str; 3] = ["geodesic", "one-shot-magnitude", "gradual-magnitude"];

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

/// The declared search space of `arm`: four configurations each.
pub fn search_space(arm: &str) -> Vec<Config> {
    match arm {
        "geodesic" => [(0.1, 0.01), (0.1, 0.03), (0.3, 0.01), (0.3, 0.03)]
            .into_iter()
            .map(|(lambda, lr)| Config::Geodesic { lambda, eps: 0.05, lr })
            .collect(),
        _ => [0.003, 0.01, 0.03, 0.1].into_iter().map(|lr| Config::Baseline { lr }).collect(),
    }
}

/// Options of a sparsification comparison.
#[derive(Debug, Clone)]
pub struct SparsifyExperiment {
    /// Target fraction of zero weights, in (0, 1).
    pub sparsity: f32,
    /// Cost of every configuration run, in forward passes of one batch of `batch` examples.
    pub budget: f64,
    /// Examples per step (every arm) and per cost unit.
    pub batch: usize,
    /// Arms to run (default: [`ARMS`]).
    pub arms: Vec<String>,
    /// Configurations per arm: the first this many of [`search_space`] (default 4, all).
    pub configurations: usize,
    /// For tests: fail after this many configuration runs, as a crash would.
    pub abort_after_runs: Option<usize>,
}

impl Default for SparsifyExperiment {
    fn default() -> Self {
        SparsifyExperiment {
            sparsity: 0.95,
            budget: 12_000.0,
            batch: 128,
            arms: ARMS.iter().map(|s| s.to_string()).collect(),
            configurations: 4,
            abort_after_runs: None,
        }
    }
}

/// One seed's start network and data.
pub struct SeedRun<'a> {
    /// Seed of batches and shuffles (and of the start network's training).
    pub seed: u64,
    /// The start network.
    pub net: &'a Network,
    /// Its parameters.
    pub w0: &'a Tensor,
    /// Where it came from (for the report).
    pub source: String,
}

/// The record of one finished configuration run (DIR/.partial/runs/KEY.json, its network
/// beside it as KEY.ckpt).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConfigRun {
    config: Config,
    validation_accuracy: f64,
    cost: f64,
    seconds: f64,
    sparsity: f64,
    curve: Vec<(f64, f64)>,
}

/// The output files of a comparison (besides the picked networks).
const OUTPUTS: [&str; 3] = ["compare.json", "compare.md", "compare.svg"];

/// What one configuration run needs.
struct Ctx<'a> {
    exp: &'a SparsifyExperiment,
    split: &'a Split,
    curve_set: Dataset,
    device: &'a Device,
    unit_flops: u64,
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

/// Runs the comparison for every seed of `seeds` into `out.dir` and returns it (also written as
/// OUT/compare.json, compare.md, compare.svg and each arm's picked network per seed,
/// OUT/ARM-seedS.ckpt). `test` is read once per arm and seed, for the picked configuration.
pub fn run(
    exp: &SparsifyExperiment,
    seeds: &[SeedRun<'_>],
    split: &Split,
    test: &Dataset,
    device: &Device,
    out: Output<'_>,
) -> Result<Compare> {
    check(exp, seeds)?;
    let outputs: Vec<String> = OUTPUTS
        .iter()
        .map(|s| s.to_string())
        .chain(seeds.iter().flat_map(|s| exp.arms.iter().map(move |a| format!("{a}-seed{}.ckpt", s.seed))))
        .collect();
    let output_refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let dir = RunDir::open(out.dir, &output_refs, out.existing)?;
    let ctx = Ctx {
        exp,
        split,
        curve_set: split.validation.subset(&(0..CURVE_IMAGES.min(split.validation.len())).collect::<Vec<_>>()),
        device,
        unit_flops: forward_flops(seeds[0].net, exp.batch, device)?,
    };
    let configs = exp.configurations.min(4);
    let total_runs = seeds.len() * exp.arms.len() * configs;
    let progress = Progress::new(out.progress, total_runs);
    let mut done = 0usize;
    let mut ran_here = 0usize;
    // per arm: per seed (picked run, test accuracy)
    let mut per_arm: Vec<Vec<(ConfigRun, f64)>> = vec![Vec::new(); exp.arms.len()];
    let mut curves: Vec<Series> = Vec::new();
    for s in seeds {
        for (a, arm) in exp.arms.iter().enumerate() {
            let mut runs = Vec::new();
            for (i, config) in search_space(arm).into_iter().take(configs).enumerate() {
                let key = format!("seed{}-{arm}-{i}", s.seed);
                let what = format!("seed {} · {arm} · configuration {}/{configs}", s.seed, i + 1);
                progress.at(done, &what, 0.0);
                let record = match dir.load_record::<ConfigRun>(&key)? {
                    Some(r) if r.config == config => {
                        progress.finished(done, &what, true);
                        r
                    }
                    _ => {
                        if exp.abort_after_runs == Some(ran_here) {
                            return Err(Error::Invalid(format!(
                                "aborted after {ran_here} configuration runs (test hook)"
                            )));
                        }
                        let mut tick = |f: f64| progress.at(done, &what, f);
                        let (r, w) = run_config(&ctx, s, arm, config, &mut tick)?;
                        save_params(&dir.record_path(&key, "ckpt"), s.net, &w)?;
                        dir.save_record(&key, &r)?;
                        ran_here += 1;
                        let line =
                            format!("{what} (validation {:.2}%, {:.0} s)", 100.0 * r.validation_accuracy, r.seconds);
                        progress.finished(done, &line, false);
                        r
                    }
                };
                done += 1;
                runs.push((key, record));
            }
            // Pick on validation (the first configuration on a tie), then read the test set once.
            let (key, picked) = runs
                .iter()
                .fold(None::<&(String, ConfigRun)>, |best, r| match best {
                    Some(b) if b.1.validation_accuracy >= r.1.validation_accuracy => Some(b),
                    _ => Some(r),
                })
                .cloned()
                .ok_or_else(|| Error::Invalid("an arm needs at least one configuration".into()))?;
            let w = load_params(&dir.record_path(&key, "ckpt"), device)?;
            let test_accuracy = cost::uncounted(|| evaluate(s.net, &w, test, test.len(), device))?;
            save_params(&dir.staged(&format!("{arm}-seed{}.ckpt", s.seed)), s.net, &w)?;
            if s.seed == seeds[0].seed {
                curves.push(Series { name: arm.clone(), points: picked.curve.clone(), dashed: a > 0 });
            }
            progress.say(format!(
                "seed {} · {arm}: picked {} (validation {:.2}%), test {:.2}%, sparsity {:.2}%",
                s.seed,
                super::compare::compact(&serde_json::to_value(picked.config).unwrap_or_default()),
                100.0 * picked.validation_accuracy,
                100.0 * test_accuracy,
                100.0 * picked.sparsity
            ));
            per_arm[a].push((picked, test_accuracy));
        }
    }
    progress.finish();
    let arms: Vec<ArmReport> =
        exp.arms.iter().zip(&per_arm).map(|(name, picks)| arm_report(name, picks, configs)).collect();
    let paired = arms.iter().position(|a| a.name == "geodesic").and_then(|g| {
        let best = arms
            .iter()
            .filter(|a| a.name != "geodesic")
            .max_by(|x, y| x.test_accuracy.mean.total_cmp(&y.test_accuracy.mean))?;
        Some(Paired::of(&arms[g], best))
    });
    let compare = Compare {
        experiment: "sparsify".into(),
        setting: json!({
            "model": seeds[0].net.spec.name,
            "dataset": split.fit.name.split(['-', ' ']).next().unwrap_or(""),
            "sparsity": (exp.sparsity as f64 * 1e6).round() / 1e6,
            "budget": exp.budget,
            "start_networks": seeds.iter().map(|s| s.source.clone()).collect::<Vec<_>>(),
        }),
        seeds: seeds.iter().map(|s| s.seed).collect(),
        cost_unit: format!("forward passes of one batch of {} examples", exp.batch),
        cost_unit_flops: ctx.unit_flops,
        arms,
        paired_difference: paired,
        device: device.name(),
        date: today(),
    };
    write_json(&dir.staged("compare.json"), &compare)?;
    crate::train::write_atomic(&dir.staged("compare.md"), compare.markdown().as_bytes())?;
    write_plot(
        &dir.staged("compare.svg"),
        &format!(
            "sparsify to {:.0}%: validation accuracy of the network pruned to the target, seed {}",
            100.0 * exp.sparsity,
            seeds[0].seed
        ),
        &format!("cost ({})", compare.cost_unit),
        "validation accuracy",
        &curves,
    )?;
    dir.finish(&output_refs, "compare.json")?;
    Ok(compare)
}

/// Refuses options that cannot run, before anything is written.
fn check(exp: &SparsifyExperiment, seeds: &[SeedRun<'_>]) -> Result<()> {
    if !(exp.sparsity > 0.0 && exp.sparsity < 1.0) {
        return Err(Error::Invalid(format!("--sparsity must be in (0, 1), got {}", exp.sparsity)));
    }
    if !(exp.budget >= 1.0 && exp.budget.is_finite()) || exp.batch == 0 || exp.configurations == 0 {
        return Err(Error::Invalid(
            "--budget must be at least 1 forward pass; --batch and configurations positive".into(),
        ));
    }
    if seeds.is_empty() {
        return Err(Error::Invalid("--seeds needs at least one seed".into()));
    }
    let mut sorted: Vec<u64> = seeds.iter().map(|s| s.seed).collect();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != seeds.len() {
        return Err(Error::Invalid("--seeds lists a seed twice".into()));
    }
    for arm in &exp.arms {
        if !ARMS.contains(&arm.as_str()) {
            return Err(Error::Invalid(format!("unknown arm `{arm}` (arms: {})", ARMS.join(", "))));
        }
    }
    if exp.arms.is_empty() {
        return Err(Error::Invalid("no arm to run".into()));
    }
    Ok(())
}

/// FLOPs of one forward pass of `batch` examples of `net`, as the engine counts them.
pub fn forward_flops(net: &Network, batch: usize, device: &Device) -> Result<u64> {
    let [c, h, w] = net.input;
    let x = Tensor::from_vec(device, &[batch, c, h, w], vec![0.0; batch * c * h * w])?;
    let params = net.init_params(0)?;
    let meter = Meter::start();
    crate::autodiff::forward(net, &params, &x)?;
    Ok(meter.flops())
}

/// Runs one configuration of `arm` from the seed's start network until the budget is spent;
/// `tick(fraction)` reports progress. Returns its record and its final (sparse) parameters.
fn run_config(
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
        let (st, _) = path_step(s.net, w, Reference::Params(s.w0), &x, &labels, g, &settings)?;
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

/// Saves flat parameters (with the network's spec and buffers) as a checkpoint.
fn save_params(path: &std::path::Path, net: &Network, w: &Tensor) -> Result<()> {
    Checkpoint {
        spec: net.spec.text.clone(),
        params: w.to_vec()?,
        buffers: net.buffers()?,
        metadata: vec![
            ("classes".into(), net.classes.to_string()),
            ("input".into(), format!("{} {} {}", net.input[0], net.input[1], net.input[2])),
        ],
    }
    .save(path)
}

/// Loads the flat parameters of a checkpoint written by [`save_params`].
fn load_params(path: &std::path::Path, device: &Device) -> Result<Tensor> {
    let c = Checkpoint::load(path)?;
    Tensor::from_vec(device, &[c.params.len()], c.params)
}

/// The report of one arm from its picked run and test accuracy per seed.
fn arm_report(name: &str, picks: &[(ConfigRun, f64)], tried: usize) -> ArmReport {
    let configs: Vec<serde_json::Value> =
        picks.iter().map(|(r, _)| serde_json::to_value(r.config).unwrap_or_default()).collect();
    let picked = configs
        .iter()
        .max_by_key(|c| {
            (configs.iter().filter(|d| d == c).count(), std::cmp::Reverse(configs.iter().position(|d| d == *c)))
        })
        .cloned()
        .unwrap_or_default();
    let mut extra = serde_json::Map::new();
    extra.insert("sparsity".into(), json!(OverSeeds::of(picks.iter().map(|(r, _)| r.sparsity).collect())));
    ArmReport {
        name: name.to_string(),
        test_accuracy: OverSeeds::of(picks.iter().map(|(_, t)| *t).collect()),
        cost: OverSeeds::of(picks.iter().map(|(r, _)| r.cost).collect()),
        device_seconds: OverSeeds::of(picks.iter().map(|(r, _)| r.seconds).collect()),
        selected_on: "validation".into(),
        configurations_tried: tried,
        picked,
        picked_per_seed: configs,
        validation_accuracy: OverSeeds::of(picks.iter().map(|(r, _)| r.validation_accuracy).collect()).mean,
        extra,
    }
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
