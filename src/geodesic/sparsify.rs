//! `geopath sparsify`: a path from a trained network toward the set of networks with a given
//! fraction of zero weights (objective `½‖w − P_p(w)‖²`), each step small in the metric, and the
//! hard-pruned network `P_p(w)` at the end; beside it, in the same run, the baseline of magnitude
//! pruning followed by masked fine-tuning with the same number of gradient evaluations.
//!
//! Two options shape the path: a ramp (the objective's fraction grows from 0 to `p` along the
//! first steps, the cubic schedule of gradual magnitude pruning, see [`ToPruned`]) and a last
//! stretch on the sparse set (the mask of the hard-pruned path end fixed, the weights outside
//! it held at zero, masked SGD on the training loss: the baseline's fine-tuning, started from
//! the path's end instead of the magnitude-pruned start network). The budget is counted over
//! both: every metric product and gradient of the path plus every gradient of the last
//! stretch, and the baseline fine-tunes for exactly that many gradient evaluations.
//!
//! Measured on LeNet-300-100 (MNIST, 98.54% dense, 95% zeros; README): the penalty path with
//! the ramp ends at a better hard-pruned network than one-shot magnitude pruning (97.35% vs
//! 96.39%); without the last stretch it stays far below the baseline (the metric of a 200-input
//! batch leaves most directions free and the path never sees the labels), with it the result
//! is level with the baseline (98.30% vs 98.23% for one seed, within noise).
//!
//! An interrupted run continues from its DIR/path.ckpt with [`SparsifyConfig::resume`] (see
//! [`super::resume`]): same path, same rows, same count of gradient evaluations; the last
//! stretch and the baseline then run as usual.

use super::metric::MetricKind;
use super::path::{integrate, Ending, PathConfig, PathRow, Step, ToPruned};
use super::resume::{data_identity, network_identity, LoggedRow, PathRecord};
use super::step::{batch_at, batch_of, path_step, step_batch_seed, Reference, StepMethod, StepSettings};
use crate::autodiff;
use crate::checkpoint::Checkpoint;
use crate::data::{self, Dataset, Split};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::network::Network;
use crate::ops::flat;
use crate::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::report::{write_csv, write_plot, Series};
use crate::tensor::Tensor;
use crate::train::evaluate;
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::Cell;
use std::path::Path;
use std::time::Instant;

/// Options of a sparsification run.
#[derive(Debug, Clone)]
pub struct SparsifyConfig {
    /// Target fraction of zero weights, in (0, 1).
    pub sparsity: f32,
    /// Step rule.
    pub method: StepMethod,
    /// Metric of the trust-region rules.
    pub metric: MetricKind,
    /// Step length (trust radius) `ε`.
    pub eps: f32,
    /// Weight `β` of the objective in the step subproblem.
    pub beta: f32,
    /// Maximum path steps.
    pub steps: usize,
    /// Inputs per metric batch.
    pub batch: usize,
    /// CG iterations per solve.
    pub cg_iter: usize,
    /// Rank the weights once at the start (else re-rank every step).
    pub fixed_mask: bool,
    /// Log (and checkpoint) every this many steps.
    pub log_every: usize,
    /// Seed of the metric batches and of the baseline's shuffling.
    pub seed: u64,
    /// Test examples used for the accuracies logged along the path (the final ones use all).
    pub eval_examples: usize,
    /// Learning rates the baseline's fine-tuning (and the last stretch) picks from (by
    /// validation accuracy).
    pub baseline_lrs: Vec<f32>,
    /// Steps over which the target sparsity ramps from 0 to `sparsity` (0: the full target from
    /// the first step).
    pub ramp: usize,
    /// Gradient evaluations of the last stretch on the sparse set (masked SGD on the training
    /// loss from the hard-pruned path end; 0: none).
    pub finetune: usize,
    /// Continue the run whose DIR/path.ckpt is in the output folder (its options and start
    /// network must be these; `steps` may be raised to extend a finished path).
    pub resume: bool,
}

impl Default for SparsifyConfig {
    fn default() -> Self {
        SparsifyConfig {
            sparsity: 0.95,
            method: StepMethod::TrustRegion,
            metric: MetricKind::Fisher,
            eps: 0.05,
            beta: 1.0,
            steps: 400,
            batch: 200,
            cg_iter: 10,
            fixed_mask: false,
            log_every: 20,
            seed: 0,
            eval_examples: 2000,
            baseline_lrs: vec![0.003, 0.01, 0.03],
            ramp: 0,
            finetune: 0,
            resume: false,
        }
    }
}

/// What a sparsification run reports (DIR/summary.json).
#[derive(Debug, Clone)]
pub struct SparsifyResult {
    /// Measured fraction of zero weights of the hard-pruned path result.
    pub sparsity: f64,
    /// Test accuracy of the hard-pruned path result (after the last stretch, if any).
    pub test_accuracy: f64,
    /// Test accuracy of the hard-pruned path end, before the last stretch.
    pub path_test_accuracy: f64,
    /// Learning rate the last stretch picked (0 without one).
    pub finetune_lr: f32,
    /// Test accuracy of the magnitude-prune + masked-fine-tune baseline.
    pub baseline_test_accuracy: f64,
    /// Measured sparsity of the baseline.
    pub baseline_sparsity: f64,
    /// Learning rate the baseline picked.
    pub baseline_lr: f32,
    /// Test accuracy of the starting (dense) network.
    pub start_test_accuracy: f64,
    /// Test accuracy of magnitude pruning alone (no fine-tuning).
    pub pruned_only_test_accuracy: f64,
    /// Path steps taken.
    pub steps: usize,
    /// Gradient evaluations (metric products) spent by the path itself (by all its runs, when
    /// resumed).
    pub path_evaluations: usize,
    /// Gradient evaluations of the path and its last stretch, also given to the baseline.
    pub gradient_evaluations: usize,
    /// How the path ended.
    pub ending: String,
    /// Seconds of the path, its last stretch included (all learning rates; a resumed path's
    /// earlier runs counted up to the point it resumed from).
    pub path_seconds: f64,
    /// Seconds of the baseline (all learning rates).
    pub baseline_seconds: f64,
}

/// Fraction of exact zeros.
fn zero_fraction(w: &Tensor) -> Result<f64> {
    Ok(flat::count_zeros(w)? as f64 / w.numel().max(1) as f64)
}

/// Masked fine-tuning (SGD, Nesterov momentum 0.9) of `start` on the training loss: for
/// `budget` gradient evaluations at each learning rate of `lrs`, gradients and parameters
/// multiplied by the keep-mask `mask` after every step (the weights outside it stay zero when
/// they start at zero); the rate is picked by accuracy on `validation`. Returns (parameters,
/// picked rate, validation accuracy of each rate).
#[allow(clippy::too_many_arguments)]
pub fn masked_finetune(
    net: &Network,
    start: &Tensor,
    mask: &Tensor,
    train: &Dataset,
    validation: &Dataset,
    budget: usize,
    lrs: &[f32],
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<(Tensor, f32, Vec<f64>)> {
    let mut best: Option<(f64, Tensor, f32)> = None;
    let mut scores = Vec::new();
    let steps_per_epoch = (train.len() / batch).max(1);
    for &lr in lrs {
        let mut w = start.clone();
        let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 };
        let mut opt = Optimizer::new(kind, LrSchedule::constant(lr));
        let mut order = Vec::new();
        for step in 0..budget {
            if step % steps_per_epoch == 0 {
                order = data::shuffled_indices(train.len(), seed ^ (step / steps_per_epoch) as u64);
            }
            let b = step % steps_per_epoch;
            let (x, y) = batch_at(train, &order[b * batch..((b + 1) * batch).min(train.len())], device)?;
            let (_, g) = autodiff::loss_grad(net, &w, &x, &y)?;
            w = flat::mask(&opt.step(&w, &flat::mask(&g, mask)?)?, mask)?;
        }
        let score = evaluate(net, &w, validation, validation.len(), device)?;
        scores.push(score);
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, w, lr));
        }
    }
    let (_, w, lr) = best.ok_or_else(|| Error::Invalid("fine-tuning needs at least one learning rate".into()))?;
    Ok((w, lr, scores))
}

/// The baseline: magnitude pruning of `w0` to `fraction` zeros, then [`masked_finetune`] for
/// `budget` gradient evaluations per learning rate. Returns (parameters, picked rate,
/// validation accuracy of each rate).
#[allow(clippy::too_many_arguments)]
pub fn prune_and_finetune(
    net: &Network,
    w0: &Tensor,
    fraction: f32,
    train: &Dataset,
    validation: &Dataset,
    budget: usize,
    lrs: &[f32],
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<(Tensor, f32, Vec<f64>)> {
    let mask = flat::prune_mask(w0, flat::magnitude_threshold(w0, fraction)?)?;
    let start = flat::mask(w0, &mask)?;
    masked_finetune(net, &start, &mask, train, validation, budget, lrs, batch, seed, device)
}

/// The command's record of the path's options, checked on resumption: the step rule's
/// (`settings`), the target sparsity, fixed mask, ramp, batch, seed, the start network
/// (parameters of `w0` and buffers of `net`), the data sets and the examples of the logged
/// accuracies.
fn path_record(
    net: &Network,
    w0: &Tensor,
    settings: &StepSettings,
    train: &Dataset,
    test: &Dataset,
    cfg: &SparsifyConfig,
) -> Result<PathRecord> {
    Ok(PathRecord::new("sparsify", settings)
        .with("sparsity", cfg.sparsity)
        .with("fixed-mask", cfg.fixed_mask)
        .with("ramp", cfg.ramp)
        .with("batch", cfg.batch)
        .with("seed", cfg.seed)
        .with("start-network", network_identity(w0, &net.buffers()?)?)
        .with("training-data", data_identity(train))
        .with("test-data", data_identity(test))
        .with("eval-examples", cfg.eval_examples))
}

/// Metadata key of the gradient evaluations the path has spent, in DIR/path.ckpt.
const EVALUATIONS_KEY: &str = "evaluations";

/// Runs the path and the baseline; writes DIR/path.csv, DIR/path.svg, DIR/summary.json,
/// DIR/path.ckpt (the path's last logged point, with what [`SparsifyConfig::resume`] needs) and
/// DIR/sparse.ckpt (the hard-pruned result).
#[allow(clippy::too_many_arguments)]
pub fn run(
    net: &Network,
    w0: &Tensor,
    split: &Split,
    test: &Dataset,
    cfg: &SparsifyConfig,
    device: &Device,
    out: &Path,
    progress: bool,
) -> Result<SparsifyResult> {
    if !(cfg.sparsity > 0.0 && cfg.sparsity < 1.0) {
        return Err(Error::Invalid(format!("--sparsity must be in (0, 1), got {}", cfg.sparsity)));
    }
    if !(cfg.eps > 0.0 && cfg.eps.is_finite()) || cfg.steps == 0 || cfg.batch == 0 || cfg.log_every == 0 {
        return Err(Error::Invalid("eps, steps, batch and log-every must be positive".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    net.set_train(false);
    let settings =
        StepSettings { method: cfg.method, metric: cfg.metric, eps: cfg.eps, beta: cfg.beta, cg_iter: cfg.cg_iter };
    let record = path_record(net, w0, &settings, &split.fit, test, cfg)?;
    let checkpoint_path = out.join("path.ckpt");
    let resumed = if cfg.resume { Some(record.resume::<3>(&checkpoint_path, net, cfg.steps, device)?) } else { None };
    // The gradient evaluations the path has spent (by its earlier runs, when resumed).
    let spent = match &resumed {
        Some(r) => r.state::<usize>(EVALUATIONS_KEY)?,
        None => 0,
    };
    // The path and every fine-tuning fit on `split.fit`; learning rates are picked on the
    // held-out validation images (the start network never saw them either).
    let (fit, validation) = (&split.fit, &split.validation);

    let start_test_accuracy = evaluate(net, w0, test, test.len(), device)?;
    let mut objective = ToPruned::gradual(cfg.sparsity, cfg.ramp);
    if cfg.fixed_mask {
        objective.fix_mask(w0)?;
    }
    let pruned_only_test_accuracy = evaluate(net, &objective.project(w0)?, test, test.len(), device)?;

    // Where the path starts: w0, or the last logged point of the run it resumes.
    let resume_row = resumed.as_ref().map(|r| r.last_row().clone());
    let (w_start, mut logged): (Tensor, Vec<LoggedRow<3>>) = match resumed {
        Some(r) => (r.params, r.rows),
        None => (w0.clone(), Vec::new()),
    };
    let bar = if progress { ProgressBar::new(cfg.steps as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("path [{bar:30}] {pos}/{len} {msg} ({eta})").unwrap().progress_chars("=> "),
    );
    if let Some(row) = &resume_row {
        eprintln!("resuming the path of {} at step {}", checkpoint_path.display(), row.step);
        bar.set_position(row.step as u64);
    }
    let earlier_seconds = resume_row.as_ref().map_or(0.0, |r| r.seconds);
    // Read by the checkpoints of `on_log` while `rule` counts: shared through a cell.
    let evaluations = Cell::new(spent);
    let start = Instant::now();
    let mut rule = |step: usize, w: &Tensor, g: &Tensor| -> Result<Step> {
        let (x, labels) = batch_of(fit, cfg.batch, step_batch_seed(cfg.seed, step), device)?;
        let (s, products) = path_step(net, w, Reference::Params(w0), &x, &labels, g, &settings)?;
        // The penalty step's gradient, plus the metric product that measures its functional
        // length: counted too, so that the baseline gets every product the path spent.
        evaluations.set(evaluations.get() + products);
        bar.inc(1);
        Ok(s)
    };
    // With a ramp the objective starts at 0: no early stop (stop_below 0 never triggers).
    let stop_below = if cfg.ramp > 0 { 0.0 } else { 1e-10 };
    let path_cfg = PathConfig { steps: cfg.steps, stop_below, log_every: cfg.log_every };
    let fixed_mask = objective.mask.clone();
    let mut on_log = |step: usize, w: &Tensor, row: &PathRow| -> Result<()> {
        let pruned = match &fixed_mask {
            Some(m) => flat::mask(w, m)?,
            None => flat::prune(w, flat::magnitude_threshold(w, cfg.sparsity)?)?,
        };
        let acc_pruned = evaluate(net, &pruned, test, cfg.eval_examples, device)?;
        let acc_dense = evaluate(net, w, test, cfg.eval_examples, device)?;
        let zeros = zero_fraction(w)?;
        let line = format!(
            "step {step}: objective {:.4e}, pruned accuracy {:.2}%, path accuracy {:.2}%, functional length {:.4}",
            row.objective,
            100.0 * acc_pruned,
            100.0 * acc_dense,
            row.functional_length
        );
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        bar.set_message(format!("pruned acc {:.2}%", 100.0 * acc_pruned));
        logged.push((row.clone(), [acc_pruned, acc_dense, zeros]));
        record.save(&checkpoint_path, net, w, &logged, &[(EVALUATIONS_KEY, evaluations.get().to_string())])
    };
    let result = integrate(w_start, resume_row.as_ref(), &mut objective, &mut rule, &path_cfg, &mut on_log)?;
    bar.finish_and_clear();
    let path_evaluations = evaluations.get();
    let path_end = objective.project(&result.params)?;
    let path_test_accuracy = evaluate(net, &path_end, test, test.len(), device)?;
    let (sparse, finetune_lr) = if cfg.finetune > 0 {
        eprintln!(
            "last stretch: masked fine-tuning of the path's end for {} gradient evaluations per learning rate",
            cfg.finetune
        );
        let mask = objective.keep_mask(&result.params)?;
        let (w, lr, _) = masked_finetune(
            net,
            &path_end,
            &mask,
            fit,
            validation,
            cfg.finetune,
            &cfg.baseline_lrs,
            cfg.batch,
            cfg.seed,
            device,
        )?;
        (w, lr)
    } else {
        (path_end, 0.0)
    };
    let path_seconds = earlier_seconds + start.elapsed().as_secs_f64();
    let sparsity = zero_fraction(&sparse)?;
    let test_accuracy = evaluate(net, &sparse, test, test.len(), device)?;
    let meta = |k: &str, v: String| (k.to_string(), v);
    Checkpoint {
        spec: net.spec.text.clone(),
        params: sparse.to_vec()?,
        buffers: net.buffers()?,
        metadata: vec![
            meta("classes", net.classes.to_string()),
            meta("input", format!("{} {} {}", net.input[0], net.input[1], net.input[2])),
            meta("dataset", test.name.split('/').next().unwrap_or("mnist").to_string()),
            meta("sparsity", sparsity.to_string()),
        ],
    }
    .save(&out.join("sparse.ckpt"))?;

    let baseline_start = Instant::now();
    let budget = (path_evaluations + cfg.finetune).max(1);
    eprintln!("baseline: magnitude pruning + masked fine-tuning for {budget} gradient evaluations per learning rate");
    let (baseline, baseline_lr, _) = prune_and_finetune(
        net,
        w0,
        cfg.sparsity,
        fit,
        validation,
        budget,
        &cfg.baseline_lrs,
        cfg.batch,
        cfg.seed,
        device,
    )?;
    let baseline_seconds = baseline_start.elapsed().as_secs_f64();
    let baseline_test_accuracy = evaluate(net, &baseline, test, test.len(), device)?;
    let baseline_sparsity = zero_fraction(&baseline)?;

    let header = [
        "step",
        "objective",
        "step_norm",
        "functional_length",
        "pruned_accuracy",
        "path_accuracy",
        "zero_fraction",
        "seconds",
    ];
    let rows: Vec<Vec<f64>> = logged
        .iter()
        .map(|(r, [ap, ad, z])| {
            vec![r.step as f64, r.objective, r.step_norm, r.functional_length, *ap, *ad, *z, r.seconds]
        })
        .collect();
    write_csv(&out.join("path.csv"), &header, &rows)?;
    let last_step = logged.last().map_or(0.0, |l| l.0.step as f64);
    write_plot(
        &out.join("path.svg"),
        &format!("sparsify to {:.0}%: test accuracy along the path", 100.0 * cfg.sparsity),
        "step",
        "test accuracy",
        &[
            Series {
                name: "hard-pruned P(w)".into(),
                points: logged.iter().map(|(r, [pruned, _, _])| (r.step as f64, *pruned)).collect(),
                dashed: false,
            },
            Series {
                name: "path w".into(),
                points: logged.iter().map(|(r, [_, dense, _])| (r.step as f64, *dense)).collect(),
                dashed: false,
            },
            Series {
                name: "prune + fine-tune".into(),
                points: vec![(0.0, baseline_test_accuracy), (last_step, baseline_test_accuracy)],
                dashed: true,
            },
        ],
    )?;
    let ending = match &result.ending {
        Ending::Steps => "steps".to_string(),
        Ending::Converged => "converged".to_string(),
        Ending::NonFinite(why) => format!("non-finite: {why}"),
    };
    let r = SparsifyResult {
        sparsity,
        test_accuracy,
        path_test_accuracy,
        finetune_lr,
        baseline_test_accuracy,
        baseline_sparsity,
        baseline_lr,
        start_test_accuracy,
        pruned_only_test_accuracy,
        steps: result.steps,
        path_evaluations,
        gradient_evaluations: budget,
        ending,
        path_seconds,
        baseline_seconds,
    };
    crate::train::write_atomic(&out.join("summary.json"), summary_json(&r, cfg).as_bytes())?;
    Ok(r)
}

fn summary_json(r: &SparsifyResult, cfg: &SparsifyConfig) -> String {
    let method = match cfg.method {
        StepMethod::TrustRegion => "trust-region".to_string(),
        StepMethod::Steihaug => "steihaug".to_string(),
        StepMethod::Penalty { lambda } => format!("penalty (lambda {lambda})"),
    };
    format!(
        "{{\n  \"sparsity\": {:.6},\n  \"test_accuracy\": {:.6},\n  \"path_test_accuracy\": {:.6},\n  \"finetune_lr\": {},\n  \"baseline_test_accuracy\": {:.6},\n  \"baseline_sparsity\": {:.6},\n  \"baseline_lr\": {},\n  \"start_test_accuracy\": {:.6},\n  \"pruned_only_test_accuracy\": {:.6},\n  \"target_sparsity\": {},\n  \"method\": {},\n  \"metric\": \"{}\",\n  \"eps\": {},\n  \"beta\": {},\n  \"steps\": {},\n  \"ramp\": {},\n  \"path_evaluations\": {},\n  \"finetune_evaluations\": {},\n  \"gradient_evaluations\": {},\n  \"ending\": {},\n  \"path_seconds\": {:.2},\n  \"baseline_seconds\": {:.2}\n}}\n",
        r.sparsity,
        r.test_accuracy,
        r.path_test_accuracy,
        r.finetune_lr,
        r.baseline_test_accuracy,
        r.baseline_sparsity,
        r.baseline_lr,
        r.start_test_accuracy,
        r.pruned_only_test_accuracy,
        cfg.sparsity,
        crate::train::json_str(&method),
        cfg.metric,
        cfg.eps,
        cfg.beta,
        r.steps,
        cfg.ramp,
        r.path_evaluations,
        cfg.finetune,
        r.gradient_evaluations,
        crate::train::json_str(&r.ending),
        r.path_seconds,
        r.baseline_seconds
    )
}
