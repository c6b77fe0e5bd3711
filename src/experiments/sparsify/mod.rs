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

use super::compare::{ArmReport, Compare, OverSeeds, Paired, SeedPick};
use super::runner::{
    data_identity, forward_flops, load_params, network_identity, save_params, today, write_json, Output, RunDir,
};
use super::search::{check_common, CommonOptions, Search};
use crate::cost;
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
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
    /// Factor on the learning rate of every configuration of every arm (1: the grids of
    /// [`search_space`]; 0.1 moves each grid a decade lower, e.g. for fine-tuning a network
    /// trained at a decayed rate).
    pub lr_scale: f64,
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
            lr_scale: 1.0,
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
    let mut search = Search::new(&dir, seeds.len() * exp.arms.len() * configs, out.progress, exp.abort_after_runs);
    // per arm: per seed (picked run, test accuracy)
    let mut per_arm: Vec<Vec<(ConfigRun, f64)>> = vec![Vec::new(); exp.arms.len()];
    let mut curves: Vec<Series> = Vec::new();
    // Every configuration run starts from its start network's running statistics: those each
    // seed's network holds now.
    let start_stats = seeds.iter().map(|s| s.net.buffers()).collect::<Result<Vec<_>>>()?;
    for (s, start_buffers) in seeds.iter().zip(&start_stats) {
        for (a, arm) in exp.arms.iter().enumerate() {
            let space: Vec<Config> =
                search_space(arm).into_iter().take(configs).map(|c| c.with_lr_scale(exp.lr_scale)).collect();
            let (key, picked) = search.pick(s.seed, arm, &space, &mut |key, config, tick| {
                s.net.set_buffers(start_buffers)?;
                let (r, w) = run_config(&ctx, s, arm, config, tick)?;
                save_params(&dir.record_path(key, "ckpt"), s.net, &w)?;
                Ok(r)
            })?;
            let w = load_params(&dir.record_path(&key, "ckpt"), s.net, device)?;
            let test_accuracy = cost::uncounted(|| evaluate(s.net, &w, test, test.len(), device))?;
            save_params(&dir.staged(&format!("{arm}-seed{}.ckpt", s.seed)), s.net, &w)?;
            if s.seed == seeds[0].seed {
                curves.push(Series { name: arm.clone(), points: picked.curve.clone(), dashed: a > 0 });
            }
            search.progress.say(format!(
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
    search.finish();
    let arms: Vec<ArmReport> =
        exp.arms.iter().zip(&per_arm).map(|(name, picks)| arm_report(name, picks, configs)).collect();
    let paired = Paired::against_best(&arms, &[]);
    let compare = Compare {
        experiment: "sparsify".into(),
        setting: json!({
            "model": seeds[0].net.spec.name,
            "dataset": split.fit.name.split(['-', ' ']).next().unwrap_or(""),
            "sparsity": (exp.sparsity as f64 * 1e6).round() / 1e6,
            "budget": exp.budget,
            "lr_scale": exp.lr_scale,
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
    if !(exp.lr_scale.is_finite() && exp.lr_scale > 0.0) {
        return Err(Error::Invalid(format!("--lr-scale must be a positive number, got {}", exp.lr_scale)));
    }
    check_common(&CommonOptions {
        budget: exp.budget,
        batch: exp.batch,
        configurations: exp.configurations,
        seeds: &seeds.iter().map(|s| s.seed).collect::<Vec<_>>(),
        arms: &exp.arms,
        known: &ARMS,
    })
}

/// The report of one arm from its picked run and test accuracy per seed.
fn arm_report(name: &str, picks: &[(ConfigRun, f64)], tried: usize) -> ArmReport {
    let seeds: Vec<SeedPick> = picks
        .iter()
        .map(|(r, t)| SeedPick {
            config: serde_json::to_value(r.config).unwrap_or_default(),
            validation_accuracy: r.validation_accuracy,
            test_accuracy: *t,
            cost: r.cost,
            seconds: r.seconds,
        })
        .collect();
    let mut extra = serde_json::Map::new();
    extra.insert("sparsity".into(), json!(OverSeeds::of(picks.iter().map(|(r, _)| r.sparsity).collect())));
    ArmReport::of(name, &seeds, tried, extra)
}
