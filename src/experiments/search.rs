//! The selection loop every comparison shares: for one seed and one arm, run each
//! configuration of the arm's declared search space (or reuse its record from an earlier,
//! resumed run), then pick the configuration with the best validation score. The test set
//! plays no part here; the caller reads it once, for the picked run.

use super::progress::Progress;
use super::runner::RunDir;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record of one finished configuration run (DIR/.partial/runs/KEY.json): what the loop
/// needs to reuse it and to pick among an arm's runs.
pub trait ConfigRecord: Serialize + DeserializeOwned + Clone {
    /// The configuration type of the arm.
    type Config: PartialEq + Serialize + Clone + std::fmt::Debug;
    /// The configuration this run used.
    fn config(&self) -> &Self::Config;
    /// The score the pick maximises, measured on the validation split only.
    fn validation_score(&self) -> f64;
    /// A short account for the progress line, e.g. `validation 97.51%, 12 s`.
    fn describe(&self) -> String;
    /// What decides between equal scores (also measured on validation only); 0 by default.
    fn tie_break(&self) -> f64 {
        0.0
    }
}

/// One configuration run: `run(key, config, tick)` runs `config`, saves whatever companion
/// files it needs under `key` ([`RunDir::record_path`]) and reports progress through
/// `tick(fraction)`.
pub type RunConfig<'f, R> = dyn FnMut(&str, <R as ConfigRecord>::Config, &mut dyn FnMut(f64)) -> Result<R> + 'f;

/// The selection loop over every (seed, arm) of a comparison, with its progress.
pub struct Search<'a> {
    dir: &'a RunDir,
    /// The comparison's progress display.
    pub progress: Progress,
    done: usize,
    ran_here: usize,
    abort_after_runs: Option<usize>,
}

impl<'a> Search<'a> {
    /// A loop over `runs` configuration runs in all, writing records into `dir`; progress shown
    /// when `show`. `abort_after_runs` (for tests) fails the run after that many computed
    /// configuration runs, as a crash would.
    pub fn new(dir: &'a RunDir, runs: usize, show: bool, abort_after_runs: Option<usize>) -> Search<'a> {
        Search { dir, progress: Progress::new(show, runs), done: 0, ran_here: 0, abort_after_runs }
    }

    /// Runs (or reuses) every configuration of `configs` for `arm` and `seed`, and returns the
    /// picked run's key and record: the best validation score, the first configuration on a
    /// tie.
    pub fn pick<R: ConfigRecord>(
        &mut self,
        seed: u64,
        arm: &str,
        configs: &[R::Config],
        run: &mut RunConfig<'_, R>,
    ) -> Result<(String, R)> {
        let runs = self.run_all(seed, arm, configs, run)?;
        best_by(&runs, R::validation_score)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("arm {arm} has no configuration to run")))
    }

    /// Runs (or reuses) every configuration of `configs` for `arm` and `seed`; returns each
    /// run's key and record, in the order of `configs`.
    pub fn run_all<R: ConfigRecord>(
        &mut self,
        seed: u64,
        arm: &str,
        configs: &[R::Config],
        run: &mut RunConfig<'_, R>,
    ) -> Result<Vec<(String, R)>> {
        let mut runs = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let key = format!("seed{seed}-{arm}-{i}");
            let what = format!("seed {seed} · {arm} · configuration {}/{}", i + 1, configs.len());
            self.progress.at(self.done, &what, 0.0);
            let record = match self.dir.load_record::<R>(&key)? {
                Some(r) if r.config() == config => {
                    self.progress.finished(self.done, &what, true);
                    r
                }
                _ => {
                    if self.abort_after_runs == Some(self.ran_here) {
                        return Err(Error::Invalid(format!(
                            "aborted after {} configuration runs (test hook)",
                            self.ran_here
                        )));
                    }
                    let (progress, done) = (&self.progress, self.done);
                    let r = run(&key, config.clone(), &mut |f| progress.at(done, &what, f))?;
                    self.dir.save_record(&key, &r)?;
                    self.ran_here += 1;
                    self.progress.finished(self.done, &format!("{what} ({})", r.describe()), false);
                    r
                }
            };
            self.done += 1;
            runs.push((key, record));
        }
        Ok(runs)
    }

    /// Removes the progress display.
    pub fn finish(&self) {
        self.progress.finish();
    }
}

/// The run of `runs` with the best `score` (measured on validation only): a score that is not a
/// number never wins; equal scores go to the record's tie-break, then to the earlier run. None
/// when `runs` is empty.
pub fn best_by<R: ConfigRecord>(runs: &[(String, R)], score: impl Fn(&R) -> f64) -> Option<&(String, R)> {
    let rank = |r: &R| {
        let s = score(r);
        (if s.is_nan() { f64::NEG_INFINITY } else { s }, r.tie_break())
    };
    let mut best: Option<&(String, R)> = None;
    for run in runs {
        if best.is_none_or(|(_, b)| rank(&run.1).partial_cmp(&rank(b)) == Some(std::cmp::Ordering::Greater)) {
            best = Some(run);
        }
    }
    best
}

/// The options every comparison shares: the budget of a configuration run (in forward passes
/// of one batch), the batch, the configurations per arm, the seeds and the arms.
pub struct CommonOptions<'a> {
    /// Budget, in forward passes of one batch.
    pub budget: f64,
    /// Examples per batch.
    pub batch: usize,
    /// Configurations per arm.
    pub configurations: usize,
    /// Seeds.
    pub seeds: &'a [u64],
    /// Arms to run.
    pub arms: &'a [String],
    /// The arms the comparison knows.
    pub known: &'a [&'a str],
}

/// Refuses a budget under one forward pass, a zero batch or configuration count, an empty or
/// repeated seed list, an empty or repeated arm list, and arms not in `known`.
pub fn check_common(o: &CommonOptions<'_>) -> Result<()> {
    if !(o.budget >= 1.0 && o.budget.is_finite()) {
        return Err(Error::Invalid(format!("--budget must be at least 1 forward pass, got {}", o.budget)));
    }
    if o.batch == 0 || o.configurations == 0 {
        return Err(Error::Invalid("--batch and --configurations must be positive".into()));
    }
    let (seeds, arms, known) = (o.seeds, o.arms, o.known);
    if seeds.is_empty() {
        return Err(Error::Invalid("--seeds needs at least one seed".into()));
    }
    let mut sorted = seeds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != seeds.len() {
        return Err(Error::Invalid("--seeds lists a seed twice".into()));
    }
    if arms.is_empty() {
        return Err(Error::Invalid("no arm to run".into()));
    }
    if let Some(arm) = arms.iter().enumerate().find(|(i, a)| arms[..*i].contains(a)).map(|(_, a)| a) {
        return Err(Error::Invalid(format!("--arms lists `{arm}` twice")));
    }
    match arms.iter().find(|a| !known.contains(&a.as_str())) {
        Some(arm) => Err(Error::Invalid(format!("unknown arm `{arm}` (arms: {})", known.join(", ")))),
        None => Ok(()),
    }
}
