//! The report of a continual comparison under one scenario: each arm's picked runs with their
//! test accuracy matrices, as compare.json, a Markdown table with the matrices, and a plot.

use super::arms::{ConfigRun, GEODESIC_OBJECTIVE};
use super::tasks::{Scenario, Task};
use super::ContinualExperiment;
use crate::device::Device;
use crate::error::Result;
use crate::experiments::compare::{ArmReport, Compare, OverSeeds, Paired, SeedPick};
use crate::experiments::runner::{today, write_json, RunDir};
use crate::nn::network::Network;
use crate::report::{write_plot, Series};
use serde_json::json;
use std::fmt::Write as _;

/// What the report of one scenario is made of.
pub(super) struct Report<'a> {
    pub(super) exp: &'a ContinualExperiment,
    pub(super) net: &'a Network,
    pub(super) tasks: &'a [Task],
    pub(super) seeds: &'a [u64],
    /// Stored inputs per class of the report's runs.
    pub(super) buffer_per_class: usize,
    pub(super) scenario: Scenario,
    /// Per arm (in `exp.arms` order): the picked run of every seed.
    pub(super) per_arm: &'a [Vec<Picked>],
    /// Per arm: the configurations it tried.
    pub(super) tried: &'a [usize],
    pub(super) unit_flops: u64,
    pub(super) device: &'a Device,
}

impl Report<'_> {
    /// Writes the report into `dir`'s staging folder under `names` (JSON, Markdown, SVG) and
    /// returns it.
    pub(super) fn write(&self, dir: &RunDir, names: &[String; 3]) -> Result<Compare> {
        let exp = self.exp;
        let arms: Vec<ArmReport> = exp
            .arms
            .iter()
            .zip(self.per_arm)
            .zip(self.tried)
            .map(|((name, picks), &tried)| {
                let mut report = arm_report(name, picks, tried);
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
                "model": self.net.spec.name,
                "tasks": exp.sequence.as_str(),
                "scenario": self.scenario.as_str(),
                "buffer_per_class": self.buffer_per_class,
                "budget_per_task": exp.budget,
                "task_names": self.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            }),
            seeds: self.seeds.to_vec(),
            cost_unit: format!("forward passes of one batch of {} examples, per task", exp.batch),
            cost_unit_flops: self.unit_flops,
            arms,
            paired_difference: paired,
            device: self.device.name(),
            date: today(),
        };
        write_json(&dir.staged(&names[0]), &compare)?;
        let objective = if exp.arms.iter().any(|a| a == "geodesic") {
            format!("\nThe geodesic arm's step: {GEODESIC_OBJECTIVE}.\n")
        } else {
            String::new()
        };
        let markdown = compare.markdown() + &objective + &matrices_markdown(&exp.arms, self.per_arm);
        crate::train::write_atomic(&dir.staged(&names[1]), markdown.as_bytes())?;
        let series: Vec<Series> = exp
            .arms
            .iter()
            .zip(self.per_arm)
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
            &dir.staged(&names[2]),
            &format!(
                "continual {} ({}-incremental, buffer {} per class): seed {}",
                exp.sequence.as_str(),
                self.scenario.as_str(),
                self.buffer_per_class,
                self.seeds[0]
            ),
            "tasks learned",
            "mean test accuracy over the tasks seen so far",
            &series,
        )?;
        Ok(compare)
    }
}

/// One seed's picked run of one arm with its test accuracy matrix (row `i`: after task `i`;
/// column `j`: on task `j`).
#[derive(Clone)]
pub(super) struct Picked {
    /// The picked configuration run.
    pub(super) run: ConfigRun,
    /// Its mean validation accuracy under the report's scenario (what picked it).
    pub(super) validation: f64,
    /// Its test accuracy matrix under the report's scenario.
    pub(super) matrix: Vec<Vec<f64>>,
}

impl Picked {
    /// Mean test accuracy over all tasks after the last one.
    pub(super) fn average(&self) -> f64 {
        let last = self.matrix.last().map_or(&[][..], Vec::as_slice);
        last.iter().sum::<f64>() / last.len().max(1) as f64
    }

    /// Average forgetting of its matrix ([`forgetting`]).
    pub(super) fn forgetting(&self) -> f64 {
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
            validation_accuracy: p.validation,
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
fn matrices_markdown(arms: &[String], per_arm: &[Vec<Picked>]) -> String {
    let mut s = String::from("\nTest accuracy after task i (rows) on task j (columns), mean over the seeds:\n");
    for (name, picks) in arms.iter().zip(per_arm) {
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
