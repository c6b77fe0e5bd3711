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

mod arms;

pub use arms::{search_space, Config, PATH_SHARE};

use super::compare::{ArmReport, Compare, OverSeeds, Paired};
use super::runner::{forward_flops, load_params, save_params, today, write_json, Output, Progress, RunDir};
use crate::cost;
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::geodesic::resume::{data_identity, network_identity};
use crate::nn::network::Network;
use crate::report::{write_plot, Series};
use crate::tensor::Tensor;
use crate::train::evaluate;
use arms::{run_config, ConfigRun, Ctx, CURVE_IMAGES};
use serde_json::json;

/// Arm names, in report order.
pub const ARMS: [&str; 3] = ["geodesic", "one-shot-magnitude", "gradual-magnitude"];

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

/// The output files of a comparison (besides the picked networks).
const OUTPUTS: [&str; 3] = ["compare.json", "compare.md", "compare.svg"];

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
    let dir = RunDir::open(out.dir, &output_refs, out.existing, &identity(exp, seeds, split)?)?;
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
            .max_by(|x, y| x.validation_accuracy.total_cmp(&y.validation_accuracy))?;
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

/// What the configuration runs depend on, checked when a run is resumed: the settings, each
/// seed's start network and the data.
fn identity(exp: &SparsifyExperiment, seeds: &[SeedRun<'_>], split: &Split) -> Result<serde_json::Value> {
    let networks = seeds
        .iter()
        .map(|s| Ok(json!({"seed": s.seed, "network": network_identity(s.w0, &s.net.buffers()?)?})))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "experiment": "sparsify",
        "sparsity": exp.sparsity,
        "budget": exp.budget,
        "batch": exp.batch,
        "start_networks": networks,
        "fit": data_identity(&split.fit),
        "validation": data_identity(&split.validation),
    }))
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
