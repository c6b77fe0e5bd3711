//! The comparison an experiment reports (DIR/compare.json, DIR/compare.md): every arm's test
//! accuracy, cost and device seconds over the seeds, the configuration each arm picked on the
//! validation split, and the paired difference between the geodesic arm and the best baseline.

use super::runner::mean_std;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One number over the seeds of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverSeeds {
    /// Mean over the seeds.
    pub mean: f64,
    /// Sample standard deviation over the seeds (0 for one seed).
    pub std: f64,
    /// The value of each seed, in the order of [`Compare::seeds`].
    pub per_seed: Vec<f64>,
}

impl OverSeeds {
    /// The statistics of `per_seed`.
    pub fn of(per_seed: Vec<f64>) -> OverSeeds {
        let (mean, std) = mean_std(&per_seed);
        OverSeeds { mean, std, per_seed }
    }
}

/// One arm of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmReport {
    /// Arm name, e.g. `geodesic`, `gradual-magnitude`.
    pub name: String,
    /// Test accuracy of the picked configuration, per seed.
    pub test_accuracy: OverSeeds,
    /// Cost of the picked configuration's run, in the comparison's cost unit.
    pub cost: OverSeeds,
    /// Seconds of the picked configuration's run on the device.
    pub device_seconds: OverSeeds,
    /// Where the configuration was picked: always `validation`.
    pub selected_on: String,
    /// Configurations run (and scored on validation) per seed.
    pub configurations_tried: usize,
    /// The configuration picked most often over the seeds (the first seed's on a tie).
    pub picked: serde_json::Value,
    /// The configuration picked for each seed.
    pub picked_per_seed: Vec<serde_json::Value>,
    /// Validation accuracy of the picked configuration, mean over the seeds.
    pub validation_accuracy: f64,
    /// Fields of one experiment (e.g. sparsify: `sparsity`, the measured fraction of zeros).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What one seed contributes to an arm's report: the picked run's configuration, its
/// validation score, test accuracy, cost and device seconds.
#[derive(Debug, Clone)]
pub struct SeedPick {
    /// The picked configuration.
    pub config: serde_json::Value,
    /// Its validation accuracy (the score it was picked by).
    pub validation_accuracy: f64,
    /// Its test accuracy (read once).
    pub test_accuracy: f64,
    /// Its cost, in the comparison's unit.
    pub cost: f64,
    /// Its device seconds.
    pub seconds: f64,
}

impl ArmReport {
    /// The report of arm `name` from its pick per seed, `tried` configurations per seed, and
    /// the experiment's own fields (`extra`). `picked` is the configuration picked most often
    /// (the earliest seed's on a tie).
    pub fn of(name: &str, picks: &[SeedPick], tried: usize, extra: serde_json::Map<String, serde_json::Value>) -> Self {
        let configs: Vec<serde_json::Value> = picks.iter().map(|p| p.config.clone()).collect();
        let count = |c: &serde_json::Value| configs.iter().filter(|d| *d == c).count();
        let picked = configs
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (count(c), std::cmp::Reverse(*i)))
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let over = |f: fn(&SeedPick) -> f64| OverSeeds::of(picks.iter().map(f).collect());
        ArmReport {
            name: name.to_string(),
            test_accuracy: over(|p| p.test_accuracy),
            cost: over(|p| p.cost),
            device_seconds: over(|p| p.seconds),
            selected_on: "validation".into(),
            configurations_tried: tried,
            picked,
            picked_per_seed: configs,
            validation_accuracy: over(|p| p.validation_accuracy).mean,
            extra,
        }
    }
}

/// The paired difference `geodesic − against` over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paired {
    /// The baseline compared with: the one with the best mean validation accuracy (so that
    /// the test set plays no part in choosing it).
    pub against: String,
    /// Mean of the per-seed differences of test accuracy.
    pub mean: f64,
    /// Standard error of that mean (0 with one seed).
    pub stderr: f64,
    /// `geodesic`, the baseline's name, or `none` when |mean| is not above twice the standard
    /// error (always `none` with one seed).
    pub winner: String,
}

impl Paired {
    /// The paired difference of the `geodesic` arm of `arms` and the baseline with the best
    /// validation accuracy among the others but those named in `excluded` (the first on a tie);
    /// none without a geodesic arm or a baseline.
    pub fn against_best(arms: &[ArmReport], excluded: &[&str]) -> Option<Paired> {
        let geodesic = arms.iter().find(|a| a.name == "geodesic")?;
        let best = arms.iter().filter(|a| a.name != "geodesic" && !excluded.contains(&a.name.as_str())).fold(
            None::<&ArmReport>,
            |best, a| match best {
                Some(b) if b.validation_accuracy >= a.validation_accuracy => Some(b),
                _ => Some(a),
            },
        )?;
        Some(Paired::of(geodesic, best))
    }

    /// The paired difference of `geodesic` and `baseline` test accuracies (same seed order).
    pub fn of(geodesic: &ArmReport, baseline: &ArmReport) -> Paired {
        let d: Vec<f64> =
            geodesic.test_accuracy.per_seed.iter().zip(&baseline.test_accuracy.per_seed).map(|(g, b)| g - b).collect();
        let (mean, std) = mean_std(&d);
        let stderr = if d.len() > 1 { std / (d.len() as f64).sqrt() } else { 0.0 };
        let winner = if d.len() > 1 && mean.abs() > 2.0 * stderr {
            if mean > 0.0 {
                geodesic.name.clone()
            } else {
                baseline.name.clone()
            }
        } else {
            "none".to_string()
        };
        Paired { against: baseline.name.clone(), mean, stderr, winner }
    }
}

/// A finished comparison: DIR/compare.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compare {
    /// Experiment name (`sparsify`, …).
    pub experiment: String,
    /// What was compared (model, data set, sparsity, …).
    pub setting: serde_json::Value,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// The unit of every arm's `cost`.
    pub cost_unit: String,
    /// FLOPs (as the engine counts them) of one cost unit.
    pub cost_unit_flops: u64,
    /// Every arm, the geodesic method first.
    pub arms: Vec<ArmReport>,
    /// `geodesic` − the best baseline.
    pub paired_difference: Option<Paired>,
    /// The device the arms ran on.
    pub device: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
}

impl Compare {
    /// Reads a compare.json.
    pub fn load(path: &Path) -> Result<Compare> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: not a compare.json ({e})", path.display())))
    }

    /// The comparison as a Markdown table with a heading line of the setting.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} — {} — seeds {:?} — {} — {}\n",
            self.experiment,
            compact(&self.setting),
            self.seeds,
            self.device,
            self.date
        );
        if let Some(starts) = self.setting.get("start_networks").and_then(|v| v.as_array()) {
            let names: Vec<&str> = starts.iter().map(|v| v.as_str().unwrap_or_default()).collect();
            let _ = writeln!(s, "start networks (one a seed): {}\n", names.join(", "));
        }
        let _ = writeln!(
            s,
            "| arm | test accuracy (mean ± std) | cost ({}) | device seconds | picked configuration | validation accuracy |",
            self.cost_unit
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---|---:|");
        for a in &self.arms {
            let _ = writeln!(
                s,
                "| {} | {:.2} ± {:.2}% | {:.0} | {:.1} | {} ({} tried) | {:.2}% |",
                a.name,
                100.0 * a.test_accuracy.mean,
                100.0 * a.test_accuracy.std,
                a.cost.mean,
                a.device_seconds.mean,
                compact(&a.picked),
                a.configurations_tried,
                100.0 * a.validation_accuracy
            );
        }
        s.push_str(&self.extra_table());
        if let Some(p) = &self.paired_difference {
            let _ = writeln!(
                s,
                "\ngeodesic − {}: {:+.2} ± {:.2} points (standard error over {} seeds); winner: {}",
                p.against,
                100.0 * p.mean,
                100.0 * p.stderr,
                self.seeds.len(),
                p.winner
            );
        }
        s
    }
}

impl Compare {
    /// The arms' experiment-specific numbers over the seeds (their `extra` fields of mean and
    /// standard deviation) as a second table; empty when there are none.
    fn extra_table(&self) -> String {
        let over = |v: &serde_json::Value| serde_json::from_value::<OverSeeds>(v.clone()).ok();
        let mut columns: Vec<&String> =
            self.arms.iter().flat_map(|a| a.extra.iter().filter(|(_, v)| over(v).is_some()).map(|(k, _)| k)).collect();
        columns.dedup();
        let mut seen = std::collections::HashSet::new();
        columns.retain(|c| seen.insert(*c));
        if columns.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "\n| arm | {} |\n|---|{}\n",
            columns.iter().map(|c| c.replace('_', " ")).collect::<Vec<_>>().join(" | "),
            "---:|".repeat(columns.len())
        );
        for a in &self.arms {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match a.extra.get(c.as_str()).and_then(over) {
                    Some(o) if c.contains("accuracy") || c.contains("forgetting") || c == &"sparsity" => {
                        format!("{:.2} ± {:.2}%", 100.0 * o.mean, 100.0 * o.std)
                    }
                    Some(o) => format!("{:.4} ± {:.4}", o.mean, o.std),
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", a.name, cells.join(" | "));
        }
        s
    }
}

/// `{"a": 1, "b": "x", "c": [..]}` as `a 1, b x` (a JSON object's scalars as they read; lists
/// are left out).
pub fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_array())
            .map(|(k, v)| format!("{k} {}", compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The reports of the run folder `dir`: its compare.json, or else its compare-NAME.json files
/// (one per scenario of a continual run), in name order; an error naming the folder when it
/// holds none.
pub fn reports_in(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let single = dir.join("compare.json");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("compare-") && n.ends_with(".json"))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::Invalid(format!("{} holds no compare.json (not a finished run folder)", dir.display())));
    }
    Ok(found)
}

/// One Markdown table of the arms of several finished comparisons (`geopath report`): a row per
/// (comparison, arm).
pub fn gather(runs: &[Compare]) -> String {
    let mut s = String::from(
        "| experiment | setting | seeds | arm | test accuracy (mean ± std) | cost | picked | winner |\n|---|---|---:|---|---:|---:|---|---|\n",
    );
    for c in runs {
        let winner = c.paired_difference.as_ref().map_or("–".to_string(), |p| p.winner.clone());
        for a in &c.arms {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} ± {:.2}% | {:.0} | {} | {} |",
                c.experiment,
                compact(&c.setting),
                c.seeds.len(),
                a.name,
                100.0 * a.test_accuracy.mean,
                100.0 * a.test_accuracy.std,
                a.cost.mean,
                compact(&a.picked),
                winner
            );
        }
    }
    s
}
