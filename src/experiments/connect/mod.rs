//! `geopath connect`: mode connectivity through the comparison protocol. For each seed's pair
//! of optima (A, B), at the same cost on the engine's counter, each trained arm runs every
//! configuration of a declared search space and picks the one whose curve has the highest
//! lowest validation accuracy; the picked curve is then evaluated once on the test set at
//! [`ConnectExperiment::points`] evenly spaced points:
//! - `geodesic`: the path whose trust-region steps (Fisher metric of the step's batch) follow
//!   `(w − w_B) + γ ∇CE(w)`, of radius `stretch × ‖A − B‖ / N` for the `N` steps the budget
//!   affords (see [`geodesic::connect`](crate::geodesic::connect)); it stops at B or when the
//!   budget is spent; points evenly spaced by arc length;
//! - `bezier`, `polychain`: Garipov et al.'s trained curves with one bend
//!   ([`curves`](super::curves)); points evenly spaced in `t`;
//! - `linear`: the straight line from A to B, which has nothing to train (cost 0; the
//!   reference every curve should beat).
//!
//! Evaluations (validation scores, the test curve) are not part of any arm's cost; the
//! BatchNorm statistics recomputed at each interior point are counted and reported apart
//! (`refresh_cost`).

mod arms;
mod points;

pub use arms::{search_space, Config};
pub use points::{ArcSampler, PairRun, REFRESH_IMAGES};

use super::compare::{ArmReport, Compare, OverSeeds, Paired, SeedPick};
use super::runner::{
    data_identity, forward_flops, load_stack, network_identity, save_params, save_stack, today, write_json, Output,
    RunDir, Snapshot,
};
use super::search::{check_common, CommonOptions, Search};
use crate::data::{Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::report::{write_csv, write_plot, Series};
use arms::{run_config, ConfigRun, Ctx};
use serde_json::json;

/// Arm names, in report order.
pub const ARMS: [&str; 4] = ["geodesic", "linear", "bezier", "polychain"];

/// Options of a connection comparison.
#[derive(Debug, Clone)]
pub struct ConnectExperiment {
    /// Cost of every configuration run of a trained arm, in forward passes of one batch of
    /// `batch` examples.
    pub budget: f64,
    /// Examples per step (every arm) and per cost unit.
    pub batch: usize,
    /// Evaluation points along every curve, both ends included (at least 21 for a report).
    pub points: usize,
    /// Arms to run (default: [`ARMS`]).
    pub arms: Vec<String>,
    /// Configurations per trained arm: the first this many of [`search_space`] (default 4).
    pub configurations: usize,
    /// For tests: fail after this many configuration runs, as a crash would.
    pub abort_after_runs: Option<usize>,
}

impl Default for ConnectExperiment {
    fn default() -> Self {
        ConnectExperiment {
            budget: 20_000.0,
            batch: 128,
            points: 21,
            arms: ARMS.iter().map(|s| s.to_string()).collect(),
            configurations: 4,
            abort_after_runs: None,
        }
    }
}

/// The output files of a comparison (besides the picked curves' networks).
const OUTPUTS: [&str; 4] = ["compare.json", "compare.md", "compare.svg", "curves.csv"];

/// The network file of `arm`'s picked curve for `seed`: the bend of a trained curve, the
/// middle (by arc length) of the geodesic path; none for the line. A BatchNorm network's file
/// carries A's running statistics (recompute them before evaluating it, as the report did).
fn network_output(arm: &str, seed: u64) -> Option<String> {
    match arm {
        "geodesic" => Some(format!("geodesic-seed{seed}-middle.ckpt")),
        "bezier" | "polychain" => Some(format!("{arm}-seed{seed}-bend.ckpt")),
        _ => None,
    }
}

/// Runs the comparison for every pair of `pairs` into `out.dir` and returns it (also written
/// as OUT/compare.json, compare.md, compare.svg, curves.csv (test accuracy at every point of
/// every picked curve) and the picked curves' networks). `test` is read once per arm and seed.
pub fn run(
    exp: &ConnectExperiment,
    pairs: &[PairRun<'_>],
    split: &Split,
    test: &Dataset,
    device: &Device,
    out: Output<'_>,
) -> Result<Compare> {
    check(exp, pairs)?;
    let fit = &split.fit;
    if [fit.channels, fit.height, fit.width] != pairs[0].net_a.input || fit.classes != pairs[0].net_a.classes {
        return Err(Error::Invalid(format!(
            "the networks take inputs {:?} with {} classes; {} has {:?} and {}",
            pairs[0].net_a.input,
            pairs[0].net_a.classes,
            fit.name,
            [fit.channels, fit.height, fit.width],
            fit.classes
        )));
    }
    let outputs: Vec<String> = OUTPUTS
        .iter()
        .map(|s| s.to_string())
        .chain(pairs.iter().flat_map(|p| exp.arms.iter().filter_map(move |a| network_output(a, p.seed))))
        .collect();
    let output_refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let dir = RunDir::open(out.dir, &output_refs, out.existing, &identity(exp, pairs, split)?)?;
    let ctx = Ctx { exp, split, device, unit_flops: forward_flops(pairs[0].net_a, exp.batch, device)? };
    let space = |arm: &str| -> Vec<Config> { search_space(arm).into_iter().take(exp.configurations).collect() };
    let total: usize = exp.arms.iter().map(|a| space(a).len()).sum::<usize>() * pairs.len();
    let mut search = Search::new(&dir, total, out.progress, exp.abort_after_runs);
    let mut per_arm: Vec<Vec<Picked>> = vec![Vec::new(); exp.arms.len()];
    for p in pairs {
        for (a, arm) in exp.arms.iter().enumerate() {
            let (key, picked) = search.pick(p.seed, arm, &space(arm), &mut |key, config, tick| {
                let (mut r, curve, network) = run_config(&ctx, p, arm, config, tick)?;
                let (validation, refresh) =
                    p.accuracies(&curve, &split.fit, &split.validation, split.validation.len(), exp.batch, device)?;
                r.validation = validation;
                r.refresh_cost = refresh as f64 / ctx.unit_flops as f64;
                save_stack(&dir.record_path(key, "ckpt"), &curve.iter().map(Snapshot::bare).collect::<Vec<_>>())?;
                if let Some(w) = network {
                    save_params(&dir.record_path(&format!("{key}-network"), "ckpt"), p.net_a, &w)?;
                }
                Ok(r)
            })?;
            let curve: Vec<crate::tensor::Tensor> =
                load_stack(&dir.record_path(&key, "ckpt"), device)?.into_iter().map(|s| s.params).collect();
            let (along, _) = p.accuracies(&curve, &split.fit, test, test.len(), exp.batch, device)?;
            if let Some(name) = network_output(arm, p.seed) {
                let from = dir.record_path(&format!("{key}-network"), "ckpt");
                std::fs::copy(&from, dir.staged(&name)).map_err(|e| Error::Io(format!("{}: {e}", from.display())))?;
            }
            let min = along.iter().copied().fold(f64::INFINITY, f64::min);
            search.progress.say(format!(
                "seed {} · {arm}: picked {} (lowest validation accuracy {:.2}%), test accuracy along the curve: lowest {:.2}%, mean {:.2}%",
                p.seed,
                super::compare::compact(&serde_json::to_value(picked.config).unwrap_or_default()),
                100.0 * picked.validation_min(),
                100.0 * min,
                100.0 * along.iter().sum::<f64>() / along.len() as f64
            ));
            per_arm[a].push(Picked { run: picked, test: along });
        }
    }
    search.finish();
    let arms: Vec<ArmReport> =
        exp.arms.iter().zip(&per_arm).map(|(name, picks)| arm_report(name, picks, space(name).len())).collect();
    let paired = Paired::against_best(&arms, &[]);
    let compare = Compare {
        experiment: "connect".into(),
        setting: json!({
            "model": pairs[0].net_a.spec.name,
            "dataset": split.fit.name.split(['-', ' ']).next().unwrap_or(""),
            "budget": exp.budget,
            "points": exp.points,
            "start_networks": pairs.iter().map(|p| p.source.clone()).collect::<Vec<_>>(),
        }),
        seeds: pairs.iter().map(|p| p.seed).collect(),
        cost_unit: format!("forward passes of one batch of {} examples", exp.batch),
        cost_unit_flops: ctx.unit_flops,
        arms,
        paired_difference: paired,
        device: device.name(),
        date: today(),
    };
    write_outputs(&dir, exp, pairs, &per_arm, &compare)?;
    dir.finish(&output_refs, "compare.json")?;
    Ok(compare)
}

/// One seed's picked run of one arm, with its test accuracy at every point.
#[derive(Clone)]
struct Picked {
    run: ConfigRun,
    test: Vec<f64>,
}

/// Writes compare.json, compare.md, curves.csv and compare.svg (the first seed's curves) into
/// the staging folder.
fn write_outputs(
    dir: &RunDir,
    exp: &ConnectExperiment,
    pairs: &[PairRun<'_>],
    per_arm: &[Vec<Picked>],
    compare: &Compare,
) -> Result<()> {
    write_json(&dir.staged("compare.json"), compare)?;
    crate::train::write_atomic(&dir.staged("compare.md"), compare.markdown().as_bytes())?;
    let position = |i: usize| i as f64 / (exp.points - 1) as f64;
    let mut header = vec!["seed".to_string(), "position".to_string()];
    header.extend(exp.arms.iter().map(|a| format!("{a}_test_accuracy")));
    let mut rows = Vec::new();
    for (s, p) in pairs.iter().enumerate() {
        for i in 0..exp.points {
            let mut row = vec![p.seed as f64, position(i)];
            row.extend(per_arm.iter().map(|picks| picks[s].test[i]));
            rows.push(row);
        }
    }
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    write_csv(&dir.staged("curves.csv"), &header_refs, &rows)?;
    let series: Vec<Series> = exp
        .arms
        .iter()
        .zip(per_arm)
        .enumerate()
        .map(|(a, (name, picks))| Series {
            name: name.clone(),
            points: picks[0].test.iter().enumerate().map(|(i, v)| (position(i), *v)).collect(),
            dashed: a > 0,
        })
        .collect();
    write_plot(
        &dir.staged("compare.svg"),
        &format!("connect: test accuracy along each picked curve, seed {}", pairs[0].seed),
        "position along the curve (t; the geodesic path: fraction of its arc length)",
        "test accuracy",
        &series,
    )
}

/// The report of one arm: `test_accuracy` is the lowest test accuracy along the curve.
fn arm_report(name: &str, picks: &[Picked], tried: usize) -> ArmReport {
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let seeds: Vec<SeedPick> = picks
        .iter()
        .map(|p| SeedPick {
            config: serde_json::to_value(p.run.config).unwrap_or_default(),
            validation_accuracy: p.run.validation_min(),
            test_accuracy: min(&p.test),
            cost: p.run.cost,
            seconds: p.run.seconds,
        })
        .collect();
    let over = |f: &dyn Fn(&Picked) -> f64| json!(OverSeeds::of(picks.iter().map(f).collect()));
    let mut extra = serde_json::Map::new();
    extra.insert("min_test_accuracy".into(), over(&|p| min(&p.test)));
    extra.insert("mean_test_accuracy".into(), over(&|p| mean(&p.test)));
    extra.insert("mean_validation_accuracy".into(), over(&|p| mean(&p.run.validation)));
    extra.insert("length".into(), over(&|p| p.run.length));
    extra.insert("refresh_cost".into(), over(&|p| p.run.refresh_cost));
    extra.insert("test_accuracy_along".into(), json!(picks.iter().map(|p| p.test.clone()).collect::<Vec<_>>()));
    extra.insert("ending".into(), json!(picks.iter().map(|p| p.run.ending.clone()).collect::<Vec<_>>()));
    ArmReport::of(name, &seeds, tried, extra)
}

/// What the configuration runs depend on, checked when a run is resumed.
fn identity(exp: &ConnectExperiment, pairs: &[PairRun<'_>], split: &Split) -> Result<serde_json::Value> {
    let networks = pairs
        .iter()
        .map(|p| {
            Ok(json!({
                "seed": p.seed,
                "a": network_identity(p.wa, &p.net_a.buffers()?)?,
                "b": network_identity(p.wb, &p.net_b.buffers()?)?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "experiment": "connect",
        "budget": exp.budget,
        "batch": exp.batch,
        "points": exp.points,
        "pairs": networks,
        "fit": data_identity(&split.fit),
        "validation": data_identity(&split.validation),
    }))
}

/// Refuses options that cannot run, before anything is written.
fn check(exp: &ConnectExperiment, pairs: &[PairRun<'_>]) -> Result<()> {
    if exp.points < 3 {
        return Err(Error::Invalid(format!("--points must be at least 3 (21 for a report), got {}", exp.points)));
    }
    for p in pairs {
        if p.wa.shape() != p.wb.shape() || p.net_a.spec.text != p.net_b.spec.text {
            return Err(Error::Invalid(format!(
                "seed {}: A and B are different architectures ({} and {} parameters)",
                p.seed,
                p.wa.numel(),
                p.wb.numel()
            )));
        }
    }
    check_common(&CommonOptions {
        budget: exp.budget,
        batch: exp.batch,
        configurations: exp.configurations,
        seeds: &pairs.iter().map(|p| p.seed).collect::<Vec<_>>(),
        arms: &exp.arms,
        known: &ARMS,
    })
}
