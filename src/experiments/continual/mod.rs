//! `geopath continual`: learning a sequence of tasks through the comparison protocol. Per seed
//! the first task is learned once (SGD), and every arm learns the later tasks from that network
//! with the same buffer (stored inputs per class of every finished task, drawn from their fit
//! images) and the same budget per task on the engine's counter:
//! - `geodesic`: penalty steps whose distance term keeps the outputs on buffer inputs close to
//!   those of the network at the task's start ([`arms::GEODESIC_OBJECTIVE`]);
//! - `fine-tune`: SGD on the new task;
//! - `ewc`: SGD plus EWC's quadratic penalty (diagonal empirical Fisher per finished task);
//! - `replay`: SGD on each new-task batch joined by a labelled buffer batch;
//! - `der++`: SGD on the new-task batch, plus α times the squared error between the outputs on a
//!   buffer batch and the outputs stored with it, plus β times the cross-entropy on another
//!   labelled buffer batch (Buzzega et al. 2020);
//! - `joint`: SGD on all the tasks seen so far (the upper reference).
//!
//! Each arm picks its configuration by the mean validation accuracy over all tasks after the
//! last one (validation images held out of every task's training images); the test set is read
//! for the picked run only, for its accuracy matrix.

mod arms;
mod losses;
pub mod tasks;

pub use arms::{search_space, Config, ARMS, GEODESIC_OBJECTIVE};
pub use losses::{logit_matching, EwcMemory};
pub use tasks::{build_tasks, Scenario, Task, TaskSequence, TaskSplit};

use super::compare::{ArmReport, Compare, OverSeeds, Paired, SeedPick};
use super::runner::{
    data_identity, forward_flops, load_stack, save_stack, today, write_json, Output, RunDir, Snapshot,
};
use super::search::{check_common, CommonOptions, Search};
use crate::autodiff;
use crate::data::{self, Dataset, EpochBatches};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::geodesic::step::batch_at;
use crate::nn::network::Network;
use crate::optim::{LrSchedule, Optimizer, OptimizerKind, Schedule};
use crate::report::{write_plot, Series};
use arms::{run_config, ConfigRun, Ctx};
use serde_json::json;
use std::fmt::Write as _;

/// Options of a continual comparison.
#[derive(Debug, Clone)]
pub struct ContinualExperiment {
    /// The task sequence (for the report).
    pub sequence: TaskSequence,
    /// How accuracy is measured.
    pub scenario: Scenario,
    /// Stored inputs per class of every finished task.
    pub buffer_per_class: usize,
    /// Cost of each task after the first, per arm, in forward passes of one batch.
    pub budget: f64,
    /// Examples per step (every arm: new-task batches, buffer batches) and per cost unit.
    pub batch: usize,
    /// Epochs of the first task (learned once per seed, shared by every arm, not counted).
    pub first_epochs: usize,
    /// Examples of a finished task whose per-example gradients make EWC's Fisher diagonal.
    pub fisher_examples: usize,
    /// Arms to run (default: [`ARMS`]).
    pub arms: Vec<String>,
    /// Configurations per arm: the first this many of [`search_space`] (default: all).
    pub configurations: usize,
    /// For tests: fail after this many configuration runs, as a crash would.
    pub abort_after_runs: Option<usize>,
}

impl Default for ContinualExperiment {
    fn default() -> Self {
        ContinualExperiment {
            sequence: TaskSequence::SplitMnist,
            scenario: Scenario::Class,
            buffer_per_class: 50,
            budget: 2000.0,
            batch: 128,
            first_epochs: 5,
            fisher_examples: 500,
            arms: ARMS.iter().map(|s| s.to_string()).collect(),
            configurations: usize::MAX,
            abort_after_runs: None,
        }
    }
}

/// The output files of a comparison.
const OUTPUTS: [&str; 3] = ["compare.json", "compare.md", "compare.svg"];

/// Runs the comparison for every seed of `seeds` (initialisation, batches, buffers) on `tasks`
/// into `out.dir` and returns it (also written as OUT/compare.json, compare.md with the accuracy
/// matrices, and compare.svg).
pub fn run(
    exp: &ContinualExperiment,
    net: &Network,
    tasks: &[Task],
    seeds: &[u64],
    device: &Device,
    out: Output<'_>,
) -> Result<Compare> {
    check(exp, net, tasks, seeds)?;
    let splits = TaskSplit::all(tasks)?;
    let dir = RunDir::open(out.dir, &OUTPUTS, out.existing, &identity(exp, net, &splits, seeds))?;
    let unit_flops = forward_flops(net, exp.batch, device)?;
    let space = |arm: &str| -> Vec<Config> { search_space(arm).into_iter().take(exp.configurations).collect() };
    let total: usize = exp.arms.iter().map(|a| space(a).len()).sum::<usize>() * seeds.len();
    let mut search = Search::new(&dir, total, out.progress, exp.abort_after_runs);
    let mut per_arm: Vec<Vec<Picked>> = vec![Vec::new(); exp.arms.len()];
    for &seed in seeds {
        let w1 = first_task(exp, net, &splits[0].split.fit, seed, device)?;
        let ctx = Ctx { exp, net, tasks: &splits, buffers: buffers(exp, &splits, seed)?, seed, device, unit_flops };
        for (a, arm) in exp.arms.iter().enumerate() {
            let (key, picked) = search.pick(seed, arm, &space(arm), &mut |key, config, tick| {
                let (r, nets) = run_config(&ctx, &w1, arm, config, tick)?;
                save_stack(&dir.record_path(key, "ckpt"), &nets)?;
                Ok(r)
            })?;
            let nets = load_stack(&dir.record_path(&key, "ckpt"), device)?;
            let matrix = nets
                .iter()
                .map(|s| {
                    let w = s.restore(net)?;
                    (0..splits.len()).map(|t| ctx.accuracy(w, &splits[t].task.test, t)).collect()
                })
                .collect::<Result<Vec<Vec<f64>>>>()?;
            let p = Picked { run: picked, matrix };
            search.progress.say(format!(
                "seed {seed} · {arm}: picked {} (validation {:.2}%), test: average accuracy {:.2}%, forgetting {:.2}%",
                super::compare::compact(&serde_json::to_value(p.run.config).unwrap_or_default()),
                100.0 * p.run.validation_mean(),
                100.0 * p.average(),
                100.0 * p.forgetting()
            ));
            per_arm[a].push(p);
        }
    }
    search.finish();
    let arms: Vec<ArmReport> = exp
        .arms
        .iter()
        .zip(&per_arm)
        .map(|(name, picks)| {
            let mut report = arm_report(name, picks, space(name).len());
            if name == "geodesic" {
                report.extra.insert("objective".into(), json!(GEODESIC_OBJECTIVE));
            }
            report
        })
        .collect();
    // The geodesic arm against the best continual baseline on validation (joint training,
    // which sees every task's data, is the reference, not a baseline).
    let paired = Paired::against_best(&arms, &["joint"]);
    let compare = Compare {
        experiment: "continual".into(),
        setting: json!({
            "model": net.spec.name,
            "tasks": exp.sequence.as_str(),
            "scenario": exp.scenario.as_str(),
            "buffer_per_class": exp.buffer_per_class,
            "budget_per_task": exp.budget,
            "task_names": tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        }),
        seeds: seeds.to_vec(),
        cost_unit: format!("forward passes of one batch of {} examples, per task", exp.batch),
        cost_unit_flops: unit_flops,
        arms,
        paired_difference: paired,
        device: device.name(),
        date: today(),
    };
    write_json(&dir.staged("compare.json"), &compare)?;
    let objective = if exp.arms.iter().any(|a| a == "geodesic") {
        format!("\nThe geodesic arm's step: {GEODESIC_OBJECTIVE}.\n")
    } else {
        String::new()
    };
    let markdown = compare.markdown() + &objective + &matrices_markdown(exp, &per_arm);
    crate::train::write_atomic(&dir.staged("compare.md"), markdown.as_bytes())?;
    let series: Vec<Series> = exp
        .arms
        .iter()
        .zip(&per_arm)
        .enumerate()
        .map(|(a, (name, picks))| Series {
            name: name.clone(),
            points: picks[0]
                .matrix
                .iter()
                .enumerate()
                .map(|(t, row)| ((t + 1) as f64, row[..=t].iter().sum::<f64>() / (t + 1) as f64))
                .collect(),
            dashed: a > 0,
        })
        .collect();
    write_plot(
        &dir.staged("compare.svg"),
        &format!("continual {} ({}): seed {}", exp.sequence.as_str(), exp.scenario.as_str(), seeds[0]),
        "tasks learned",
        "mean test accuracy over the tasks seen so far",
        &series,
    )?;
    dir.finish(&OUTPUTS, "compare.json")?;
    Ok(compare)
}

/// One seed's picked run of one arm with its test accuracy matrix (row `i`: after task `i`;
/// column `j`: on task `j`).
#[derive(Clone)]
struct Picked {
    run: ConfigRun,
    matrix: Vec<Vec<f64>>,
}

impl Picked {
    /// Mean test accuracy over all tasks after the last one.
    fn average(&self) -> f64 {
        let last = self.matrix.last().map_or(&[][..], Vec::as_slice);
        last.iter().sum::<f64>() / last.len().max(1) as f64
    }

    /// Average forgetting of its matrix ([`forgetting`]).
    fn forgetting(&self) -> f64 {
        forgetting(&self.matrix)
    }
}

/// Average forgetting (Chaudhry et al. 2018) of an accuracy matrix (row `i`: after task `i`;
/// column `j`: on task `j`): over the tasks before the last, the best accuracy an earlier row
/// had on the task minus the last row's; 0 for fewer than two rows.
pub fn forgetting(matrix: &[Vec<f64>]) -> f64 {
    let n = matrix.len();
    if n < 2 {
        return 0.0;
    }
    let last = &matrix[n - 1];
    let drops: f64 =
        (0..n - 1).map(|j| (j..n - 1).map(|i| matrix[i][j]).fold(f64::NEG_INFINITY, f64::max) - last[j]).sum();
    drops / (n - 1) as f64
}

/// The report of one arm: `test_accuracy` is the average accuracy over all tasks after the
/// last one; `cost` the mean cost per task after the first.
fn arm_report(name: &str, picks: &[Picked], tried: usize) -> ArmReport {
    let seeds: Vec<SeedPick> = picks
        .iter()
        .map(|p| SeedPick {
            config: serde_json::to_value(p.run.config).unwrap_or_default(),
            validation_accuracy: p.run.validation_mean(),
            test_accuracy: p.average(),
            cost: p.run.cost_per_task.iter().sum::<f64>() / p.run.cost_per_task.len().max(1) as f64,
            seconds: p.run.seconds,
        })
        .collect();
    let mut extra = serde_json::Map::new();
    extra.insert("forgetting".into(), json!(OverSeeds::of(picks.iter().map(Picked::forgetting).collect())));
    extra.insert("accuracy_matrix".into(), json!(picks.iter().map(|p| p.matrix.clone()).collect::<Vec<_>>()));
    extra.insert("cost_per_task".into(), json!(picks.iter().map(|p| p.run.cost_per_task.clone()).collect::<Vec<_>>()));
    extra
        .insert("steps_per_task".into(), json!(picks.iter().map(|p| p.run.steps_per_task.clone()).collect::<Vec<_>>()));
    extra.insert("diverged".into(), json!(picks.iter().map(|p| p.run.diverged).collect::<Vec<_>>()));
    ArmReport::of(name, &seeds, tried, extra)
}

/// Each arm's accuracy matrix, mean over the seeds, as Markdown.
fn matrices_markdown(exp: &ContinualExperiment, per_arm: &[Vec<Picked>]) -> String {
    let mut s = String::from("\nTest accuracy after task i (rows) on task j (columns), mean over the seeds:\n");
    for (name, picks) in exp.arms.iter().zip(per_arm) {
        let n = picks[0].matrix.len();
        let _ = writeln!(s, "\n{name}:\n");
        let _ = writeln!(s, "| after | {} |", (1..=n).map(|j| format!("task {j}")).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(n));
        for i in 0..n {
            let cells: Vec<String> = (0..n)
                .map(|j| {
                    let mean = picks.iter().map(|p| p.matrix[i][j]).sum::<f64>() / picks.len() as f64;
                    format!("{:.2}", 100.0 * mean)
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", i + 1, cells.join(" | "));
        }
    }
    s
}

/// The network after the first task, learned from `seed`'s initialisation by SGD (rate 0.05,
/// Nesterov momentum 0.9, cosine-annealed over `exp.first_epochs` epochs of `fit`); shared by
/// every arm and not part of any arm's cost.
fn first_task(exp: &ContinualExperiment, net: &Network, fit: &Dataset, seed: u64, device: &Device) -> Result<Snapshot> {
    let steps = exp.first_epochs * (fit.len() / exp.batch).max(1);
    let schedule = LrSchedule { base: 0.05, schedule: Schedule::Cosine { total: steps, min_factor: 0.0 }, warmup: 0 };
    let mut opt = Optimizer::new(OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 }, schedule);
    let mut w = net.init_params(seed)?;
    let mut batches = EpochBatches::new(fit.len(), exp.batch.min(fit.len()), seed);
    crate::cost::uncounted(|| {
        for step in 0..steps {
            let (x, y) = batch_at(fit, batches.at(step), device)?;
            let g = net.training_step(seed ^ step as u64, || Ok(autodiff::loss_grad(net, &w, &x, &y)?.1))?;
            w = opt.step(&w, &g)?;
        }
        Snapshot::of(net, &w)
    })
}

/// The buffer after each task: `exp.buffer_per_class` seeded random fit images of every class
/// of every task so far.
fn buffers(exp: &ContinualExperiment, splits: &[TaskSplit<'_>], seed: u64) -> Result<Vec<Dataset>> {
    let mut out: Vec<Dataset> = Vec::new();
    for (t, s) in splits.iter().enumerate() {
        let fit = &s.split.fit;
        let order = data::shuffled_indices(fit.len(), seed ^ (0xB0F + t as u64));
        let mut rows = Vec::new();
        for &c in &s.task.classes {
            rows.extend(order.iter().copied().filter(|&i| fit.labels[i] == c).take(exp.buffer_per_class));
        }
        let stored = fit.subset(&rows);
        out.push(match out.last() {
            Some(prev) => {
                let mut all = prev.clone();
                all.append(&stored)?;
                all
            }
            None => stored,
        });
    }
    Ok(out)
}

/// What the configuration runs depend on, checked when a run is resumed.
fn identity(exp: &ContinualExperiment, net: &Network, splits: &[TaskSplit<'_>], seeds: &[u64]) -> serde_json::Value {
    json!({
        "experiment": "continual",
        "model": net.spec.text,
        "classes": net.classes,
        "input": net.input,
        "tasks": exp.sequence.as_str(),
        "scenario": exp.scenario.as_str(),
        "buffer_per_class": exp.buffer_per_class,
        "budget": exp.budget,
        "batch": exp.batch,
        "first_epochs": exp.first_epochs,
        "fisher_examples": exp.fisher_examples,
        "seeds": seeds,
        "data": splits.iter().map(|s| format!("{} / {}", data_identity(&s.split.fit), data_identity(&s.split.validation))).collect::<Vec<_>>(),
    })
}

/// Refuses options that cannot run, before anything is written.
fn check(exp: &ContinualExperiment, net: &Network, tasks: &[Task], seeds: &[u64]) -> Result<()> {
    if tasks.len() < 2 {
        return Err(Error::Invalid("a continual run needs at least two tasks".into()));
    }
    if exp.first_epochs == 0 || exp.fisher_examples == 0 {
        return Err(Error::Invalid("--first-epochs and the EWC Fisher's examples must be positive".into()));
    }
    if exp.buffer_per_class == 0 {
        return Err(Error::Invalid("--buffer-per-class must be at least 1".into()));
    }
    for t in tasks {
        for d in [&t.train, &t.test] {
            if [d.channels, d.height, d.width] != net.input {
                return Err(Error::Invalid(format!(
                    "task {} has images of shape {:?} but the network takes {:?}",
                    t.name,
                    [d.channels, d.height, d.width],
                    net.input
                )));
            }
        }
        if t.train.classes != net.classes || t.test.classes != net.classes {
            return Err(Error::Invalid(format!(
                "task {} has {} classes but the network's head has {}",
                t.name, t.train.classes, net.classes
            )));
        }
    }
    check_common(&CommonOptions {
        budget: exp.budget,
        batch: exp.batch,
        configurations: exp.configurations,
        seeds,
        arms: &exp.arms,
        known: &ARMS,
    })
}
