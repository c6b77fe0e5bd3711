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
mod report;
pub mod tasks;

pub use arms::{search_space, uses_buffer, Config, ARMS, GEODESIC_OBJECTIVE};
pub use losses::{logit_matching, EwcMemory};
pub use report::forgetting;
pub use tasks::{build_tasks, Scenario, Task, TaskSequence, TaskSplit};

use super::compare::Compare;
use super::runner::{data_identity, forward_flops, load_stack, save_stack, Output, RunDir, Snapshot};
use super::search::{best_by, check_common, CommonOptions, Search};
use crate::autodiff;
use crate::data::{self, Dataset, EpochBatches};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::geodesic::step::batch_at;
use crate::nn::network::Network;
use crate::optim::{LrSchedule, Optimizer, OptimizerKind, Schedule};
use arms::{run_config, Ctx};
use report::{Picked, Report};
use serde_json::json;

/// Options of a continual comparison.
#[derive(Debug, Clone)]
pub struct ContinualExperiment {
    /// The task sequence (for the report).
    pub sequence: TaskSequence,
    /// How accuracy is measured: one report per scenario, every one from the same
    /// configuration runs (a scenario changes the measurement, not the training).
    pub scenarios: Vec<Scenario>,
    /// Stored inputs per class of every finished task: one report per size (per scenario),
    /// the arms that do not read the buffer ([`uses_buffer`]) run once for all of them.
    pub buffer_per_class: Vec<usize>,
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
            scenarios: vec![Scenario::Class],
            buffer_per_class: vec![50],
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

/// The output files of the report of `scenario` with `per_class` stored inputs per class:
/// compare.json, compare.md and compare.svg when the experiment makes one report; with several
/// scenarios the stem gains `-SCENARIO`, with several buffer sizes `-bufferN`.
fn output_names(exp: &ContinualExperiment, per_class: usize, scenario: Scenario) -> [String; 3] {
    let mut stem = "compare".to_string();
    if exp.scenarios.len() > 1 {
        stem += &format!("-{}", scenario.as_str());
    }
    if exp.buffer_per_class.len() > 1 {
        stem += &format!("-buffer{per_class}");
    }
    ["json", "md", "svg"].map(|ext| format!("{stem}.{ext}"))
}

/// The name under which `arm`'s configuration runs with `per_class` stored inputs per class are
/// recorded: the arm's own when the experiment has one buffer size or the arm does not read
/// the buffer, else `ARM-bufferN`.
fn run_label(exp: &ContinualExperiment, arm: &str, per_class: usize) -> String {
    if exp.buffer_per_class.len() > 1 && uses_buffer(arm) {
        format!("{arm}-buffer{per_class}")
    } else {
        arm.to_string()
    }
}

/// Runs the comparison for every seed of `seeds` (initialisation, batches, buffers) on `tasks`
/// into `out.dir` and returns one report per scenario of `exp.scenarios`, in its order (also
/// written as JSON, Markdown with the accuracy matrices, and SVG: [`output_names`]). Every
/// scenario's picks and test accuracies come from the same configuration runs: a scenario only
/// changes how accuracy is measured.
pub fn run(
    exp: &ContinualExperiment,
    net: &Network,
    tasks: &[Task],
    seeds: &[u64],
    device: &Device,
    out: Output<'_>,
) -> Result<Vec<Compare>> {
    check(exp, net, tasks, seeds)?;
    let splits = TaskSplit::all(tasks)?;
    // The reports, buffer size by buffer size, each with every scenario.
    let reports: Vec<(usize, Scenario)> =
        exp.buffer_per_class.iter().flat_map(|&b| exp.scenarios.iter().map(move |&s| (b, s))).collect();
    let names: Vec<[String; 3]> = reports.iter().map(|&(b, s)| output_names(exp, b, s)).collect();
    let outputs: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
    let dir = RunDir::open(out.dir, &outputs, out.existing, &identity(exp, net, &splits, seeds))?;
    let unit_flops = forward_flops(net, exp.batch, device)?;
    let space =
        |arm: &str| -> Vec<Config> { search_space(arm, exp.sequence).into_iter().take(exp.configurations).collect() };
    let sizes = exp.buffer_per_class.len();
    let total: usize =
        exp.arms.iter().map(|a| space(a).len() * if uses_buffer(a) { sizes } else { 1 }).sum::<usize>() * seeds.len();
    let mut search = Search::new(&dir, total, out.progress, exp.abort_after_runs);
    // per report, per arm: per seed
    let mut picks: Vec<Vec<Vec<Picked>>> = vec![vec![Vec::new(); exp.arms.len()]; reports.len()];
    for &seed in seeds {
        let w1 = first_task(exp, net, &splits[0].split.fit, seed, device)?;
        let contexts = exp
            .buffer_per_class
            .iter()
            .map(|&per_class| {
                let buffers = buffers(per_class, &splits, seed)?;
                Ok(Ctx { exp, net, tasks: &splits, buffers, seed, device, unit_flops })
            })
            .collect::<Result<Vec<Ctx<'_>>>>()?;
        for (a, arm) in exp.arms.iter().enumerate() {
            let scenarios = exp.scenarios.len();
            for (b, (&per_class, ctx)) in exp.buffer_per_class.iter().zip(&contexts).enumerate() {
                if b > 0 && !uses_buffer(arm) {
                    // An arm that never reads the buffer: its runs and picks of the first size
                    // serve every size.
                    for s in 0..scenarios {
                        let first = picks[s][a].last().cloned().expect("picked at the first size");
                        picks[b * scenarios + s][a].push(first);
                    }
                    continue;
                }
                let runs =
                    search.run_all(seed, &run_label(exp, arm, per_class), &space(arm), &mut |key, config, tick| {
                        let (r, nets) = run_config(ctx, &w1, arm, config, tick)?;
                        save_stack(&dir.record_path(key, "ckpt"), &nets)?;
                        Ok(r)
                    })?;
                for (s, &scenario) in exp.scenarios.iter().enumerate() {
                    let p = pick(ctx, &dir, &runs, s, scenario)?;
                    search.progress.say(format!(
                        "seed {seed} · {} ({}-incremental): picked {} (validation {:.2}%), test: average accuracy {:.2}%, forgetting {:.2}%",
                        run_label(exp, arm, per_class),
                        scenario.as_str(),
                        super::compare::compact(&serde_json::to_value(p.run.config).unwrap_or_default()),
                        100.0 * p.validation,
                        100.0 * p.average(),
                        100.0 * p.forgetting()
                    ));
                    picks[b * scenarios + s][a].push(p);
                }
            }
        }
    }
    search.finish();
    let tried: Vec<usize> = exp.arms.iter().map(|a| space(a).len()).collect();
    let compares = reports
        .iter()
        .zip(&picks)
        .zip(&names)
        .map(|((&(buffer_per_class, scenario), per_arm), names)| {
            let report = Report {
                exp,
                net,
                tasks,
                seeds,
                buffer_per_class,
                scenario,
                per_arm,
                tried: &tried,
                unit_flops,
                device,
            };
            report.write(&dir, names)
        })
        .collect::<Result<Vec<Compare>>>()?;
    let last = outputs.iter().rev().find(|f| f.ends_with(".json")).copied().unwrap_or("compare.json");
    dir.finish(&outputs, last)?;
    Ok(compares)
}

/// The run of `runs` picked on validation under scenario `s` (`scenario`), with its test
/// accuracy matrix: the test set is read here, for the picked run only.
fn pick(
    ctx: &Ctx<'_>,
    dir: &RunDir,
    runs: &[(String, arms::ConfigRun)],
    s: usize,
    scenario: Scenario,
) -> Result<Picked> {
    let (key, run) = best_by(runs, |r| r.score(s))
        .cloned()
        .ok_or_else(|| Error::Invalid("an arm has no configuration to run".into()))?;
    let nets = load_stack(&dir.record_path(&key, "ckpt"), ctx.device)?;
    let matrix = nets
        .iter()
        .map(|n| {
            let w = n.restore(ctx.net)?;
            (0..ctx.tasks.len()).map(|t| ctx.accuracy(w, &ctx.tasks[t].task.test, t, scenario)).collect()
        })
        .collect::<Result<Vec<Vec<f64>>>>()?;
    Ok(Picked { validation: run.validation_mean(s), run, matrix })
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

/// The buffer after each task: `per_class` seeded random fit images of every class of every
/// task so far (a smaller buffer is the start of a larger one).
fn buffers(per_class: usize, splits: &[TaskSplit<'_>], seed: u64) -> Result<Vec<Dataset>> {
    let mut out: Vec<Dataset> = Vec::new();
    for (t, s) in splits.iter().enumerate() {
        let fit = &s.split.fit;
        let order = data::shuffled_indices(fit.len(), seed ^ (0xB0F + t as u64));
        let mut rows = Vec::new();
        for &c in &s.task.classes {
            rows.extend(order.iter().copied().filter(|&i| fit.labels[i] == c).take(per_class));
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
        "scenarios": exp.scenarios.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
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
    if exp.scenarios.is_empty() || exp.scenarios.iter().enumerate().any(|(i, s)| exp.scenarios[..i].contains(s)) {
        return Err(Error::Invalid("--scenario needs one or more scenarios (task, class), each once".into()));
    }
    let sizes = &exp.buffer_per_class;
    if sizes.is_empty() || sizes.contains(&0) || sizes.iter().enumerate().any(|(i, b)| sizes[..i].contains(b)) {
        return Err(Error::Invalid("--buffer-per-class needs one or more sizes, each at least 1 and each once".into()));
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
