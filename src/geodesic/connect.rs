//! `geopath connect`: a path from optimum A to optimum B (objective `½‖w − w_B‖²`) whose steps
//! keep the network's function, with the test accuracy along it, beside straight linear
//! interpolation between A and B.
//!
//! Keeping each step small in the metric is not enough on its own: the metric of a 200-input
//! batch has rank at most 1800 of LeNet-300-100's 266 610 dimensions, so the trust-region steps
//! head nearly straight to B, and the small changes of function add up. Each step therefore
//! follows `(w − w_B) + γ ∇R(w)`, where the restoring term `R` (the training cross-entropy by
//! default, see [`Restore`]) is measured on the step's batch: the path is a normalised,
//! metric-damped descent of `½‖w − w_B‖² + γ R`, which bends around the loss barrier of the
//! straight line. At B (an optimum) `∇R` nearly vanishes, so the path still ends there; a path
//! that stops short is closed by the straight segment to B.
//!
//! The path is checkpointed at every logged point (DIR/path.ckpt); an interrupted run
//! continues from there with [`ConnectConfig::resume`] (see [`super::resume`]).

use super::metric::MetricKind;
use super::path::{integrate, Ending, PathConfig, PathRow, Step, ToTarget};
use super::resume::{data_identity, network_identity, LoggedRow, PathRecord};
use super::solver::bhattacharyya;
use super::step::{batch_of, path_step, step_batch_seed, Reference, StepMethod, StepSettings};
use crate::autodiff::{self, backward_flat, record, Dual, Model};
use crate::data::Dataset;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::network::Network;
use crate::ops::{elementwise as ew, flat};
use crate::report::{write_csv, write_plot, Series};
use crate::tensor::Tensor;
use crate::train::evaluate;
use crate::train::write_atomic;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

/// Options of a connection run.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Step rule.
    pub method: StepMethod,
    /// Metric of the trust-region rules.
    pub metric: MetricKind,
    /// Step length `ε`.
    pub eps: f32,
    /// Weight `β` of the pull toward B.
    pub beta: f32,
    /// Weight `γ` of the restoring term: each step's gradient is `(w − w_B) + γ ∇R(w)` with `R`
    /// measured on the step's metric batch (see [`step_gradient`]; 0: the plain pull toward B).
    pub loss_weight: f32,
    /// The restoring term weighted by `γ`.
    pub restore: Restore,
    /// Maximum steps.
    pub steps: usize,
    /// Inputs per metric batch.
    pub batch: usize,
    /// CG iterations per solve.
    pub cg_iter: usize,
    /// Evaluate every this many steps.
    pub log_every: usize,
    /// Seed of the metric batches.
    pub seed: u64,
    /// Test examples of the accuracies along the path and the line.
    pub eval_examples: usize,
    /// Points of the linear interpolation (including A and B).
    pub line_points: usize,
    /// Continue the run whose DIR/path.ckpt is in the output folder (its options and networks
    /// must be these; `steps` may be raised to extend a finished path).
    pub resume: bool,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            method: StepMethod::TrustRegion,
            metric: MetricKind::Fisher,
            eps: 0.1,
            beta: 1.0,
            loss_weight: 200.0,
            restore: Restore::Loss,
            steps: 2000,
            batch: 200,
            cg_iter: 10,
            log_every: 25,
            seed: 0,
            eval_examples: 10_000,
            line_points: 11,
            resume: false,
        }
    }
}

/// What a connection run reports (DIR/summary.json).
#[derive(Debug, Clone)]
pub struct ConnectResult {
    /// The lower of the two endpoints' test accuracies.
    pub endpoint_accuracy: f64,
    /// Test accuracy of A.
    pub accuracy_a: f64,
    /// Test accuracy of B.
    pub accuracy_b: f64,
    /// Lowest test accuracy along the path (its logged points, A and B included; a path that
    /// stopped short of B is closed by the straight segment from its end to B).
    pub min_path_accuracy: f64,
    /// Lowest test accuracy along the straight line from A to B.
    pub linear_min_accuracy: f64,
    /// Distance `‖w − w_B‖` at the path's end, and at its start.
    pub final_distance: f64,
    /// `‖w_A − w_B‖`.
    pub start_distance: f64,
    /// Steps taken.
    pub steps: usize,
    /// How the path ended.
    pub ending: String,
    /// Seconds of the path (a resumed path's earlier runs counted up to the point it resumed
    /// from).
    pub seconds: f64,
}

/// What holds a connect path to low loss between the endpoints: the restoring term that each
/// step adds, with weight `γ`, to the pull `w − w_B` toward B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// The mean cross-entropy on the batch's labels.
    Loss,
    /// The mean Bhattacharyya distance on the batch to the endpoints' mixture
    /// `(1 − t) softmax f(x; w_A) + t softmax f(x; w_B)`, where `t = 1 − ‖w − w_B‖ / ‖w_A − w_B‖`
    /// (clamped to [0, 1]) is the fraction of the distance covered, held fixed within a step: the
    /// reference function moves from A's to B's along the path, and the term vanishes at A and B.
    Ensemble,
}

impl Restore {
    /// The name [`FromStr`] accepts (`loss`, `ensemble`).
    pub fn name(self) -> &'static str {
        match self {
            Restore::Loss => "loss",
            Restore::Ensemble => "ensemble",
        }
    }
}

impl FromStr for Restore {
    type Err = Error;
    fn from_str(s: &str) -> Result<Restore> {
        match s {
            "loss" => Ok(Restore::Loss),
            "ensemble" => Ok(Restore::Ensemble),
            other => Err(Error::Invalid(format!("unknown restoring term `{other}` (loss, ensemble)"))),
        }
    }
}

/// The logits `log((1 − t) softmax za + t softmax zb)` of the mixture of two networks' outputs
/// (`[B, k]` logits), computed on the host in f64.
pub fn mixture_logits(za: &Tensor, zb: &Tensor, t: f64) -> Result<Tensor> {
    if za.shape() != zb.shape() || za.shape().len() != 2 {
        return Err(Error::Invalid(format!("mixture_logits: logits {:?} and {:?}", za.shape(), zb.shape())));
    }
    let cols = za.shape()[1];
    let (a, b) = (za.to_vec()?, zb.to_vec()?);
    let softmax = |z: &[f32]| -> Vec<f64> {
        let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|v| v / sum).collect()
    };
    let mut out = Vec::with_capacity(a.len());
    for (ra, rb) in a.chunks(cols).zip(b.chunks(cols)) {
        let (pa, pb) = (softmax(ra), softmax(rb));
        out.extend(pa.iter().zip(&pb).map(|(pa, pb)| ((1.0 - t) * pa + t * pb).max(1e-30).ln() as f32));
    }
    Tensor::from_vec(&za.device(), za.shape(), out)
}

/// The gradient a connect step follows at `w`: `(w − w_B) + γ ∇R(w)`, where `R` is the
/// restoring term on the batch `(x, labels)` (see [`Restore`]); for [`Restore::Loss`] it is the
/// gradient of `½‖w − w_B‖² + γ CE(w)`. With `γ = 0` it is `w − w_B` alone.
#[allow(clippy::too_many_arguments)]
pub fn step_gradient<M: Model + ?Sized>(
    model: &M,
    w: &Tensor,
    wa: &Tensor,
    wb: &Tensor,
    x: &Tensor,
    labels: &Tensor,
    restore: Restore,
    gamma: f32,
) -> Result<Tensor> {
    let to_b = ew::sub(w, wb)?;
    if gamma == 0.0 {
        return Ok(to_b);
    }
    let restoring = match restore {
        Restore::Loss => autodiff::loss_grad(model, w, x, labels)?.1,
        Restore::Ensemble => {
            let total = flat::norm(&ew::sub(wa, wb)?)? as f64;
            let t = (1.0 - flat::norm(&to_b)? as f64 / total.max(1e-30)).clamp(0.0, 1.0);
            let reference = mixture_logits(&autodiff::forward(model, wa, x)?, &autodiff::forward(model, wb, x)?, t)?;
            let (mut tape, vars, xv) = record(model, w, None, x)?;
            let z = model.forward(&mut tape, &vars, xv)?;
            let (_, gz) = bhattacharyya(&tape.value(z).primal, &reference)?;
            let gz = ew::scale(1.0 / x.shape()[0].max(1) as f32, &gz)?;
            backward_flat(model, &tape, &vars, z, Some(Dual::constant(gz)))?
        }
    };
    flat::axpy(gamma, &restoring, &to_b)
}

/// The command's record of the path's options, checked on resumption: the step rule's
/// (`settings`), γ, the
/// restoring term, batch, seed, the networks A (parameters `wa` and buffers of `net`) and B,
/// the data sets and the examples of the logged accuracies.
fn path_record(
    net: &Network,
    wa: &Tensor,
    wb: &Tensor,
    settings: &StepSettings,
    train: &Dataset,
    test: &Dataset,
    cfg: &ConnectConfig,
) -> Result<PathRecord> {
    Ok(PathRecord::new("connect", settings)
        .with("loss-weight", cfg.loss_weight)
        .with("restore", cfg.restore.name())
        .with("batch", cfg.batch)
        .with("seed", cfg.seed)
        .with("network-a", network_identity(wa, &net.buffers()?)?)
        .with("network-b", network_identity(wb, &[])?)
        .with("training-data", data_identity(train))
        .with("test-data", data_identity(test))
        .with("eval-examples", cfg.eval_examples))
}

/// Runs the path from `wa` toward `wb` and the linear interpolation; writes DIR/path.csv,
/// DIR/linear.csv, DIR/path.svg, DIR/summary.json and DIR/path.ckpt (the path's last logged
/// point, with what [`ConnectConfig::resume`] needs).
#[allow(clippy::too_many_arguments)]
pub fn run(
    net: &Network,
    wa: &Tensor,
    wb: &Tensor,
    train: &Dataset,
    test: &Dataset,
    cfg: &ConnectConfig,
    device: &Device,
    out: &Path,
    progress: bool,
) -> Result<ConnectResult> {
    if wa.shape() != wb.shape() {
        return Err(Error::Invalid(format!("connect: A has {:?} parameters, B {:?}", wa.shape(), wb.shape())));
    }
    if !(cfg.eps > 0.0 && cfg.eps.is_finite())
        || cfg.steps == 0
        || cfg.batch == 0
        || cfg.log_every == 0
        || cfg.line_points < 2
        || !cfg.loss_weight.is_finite()
    {
        return Err(Error::Invalid("eps, steps, batch and log-every must be positive, line points at least 2".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    net.set_train(false);
    let settings =
        StepSettings { method: cfg.method, metric: cfg.metric, eps: cfg.eps, beta: cfg.beta, cg_iter: cfg.cg_iter };
    let record = path_record(net, wa, wb, &settings, train, test, cfg)?;
    let checkpoint_path = out.join("path.ckpt");
    let resumed = if cfg.resume { Some(record.resume::<1>(&checkpoint_path, net, cfg.steps, device)?) } else { None };
    let acc = |w: &Tensor| evaluate(net, w, test, cfg.eval_examples, device);
    let accuracy_a = acc(wa)?;
    let accuracy_b = acc(wb)?;

    // Straight line.
    let mut line = Vec::new();
    for i in 0..cfg.line_points {
        let t = i as f32 / (cfg.line_points - 1) as f32;
        let w = ew::axpby(1.0 - t, wa, t, wb)?;
        line.push((t as f64, acc(&w)?));
    }
    let linear_min_accuracy = line.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);

    let start_distance = flat::norm(&ew::sub(wa, wb)?)? as f64;
    // Where the path starts: A, or the last logged point of the run it resumes.
    let resume_row = resumed.as_ref().map(|r| r.last_row().clone());
    let (w_start, mut logged): (Tensor, Vec<LoggedRow<1>>) = match resumed {
        Some(r) => (r.params, r.rows),
        None => (wa.clone(), Vec::new()),
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
    let start = Instant::now();
    let mut rule = |step: usize, w: &Tensor, _to_b: &Tensor| -> Result<Step> {
        let (x, labels) = batch_of(train, cfg.batch, step_batch_seed(cfg.seed, step), device)?;
        let g = step_gradient(net, w, wa, wb, &x, &labels, cfg.restore, cfg.loss_weight)?;
        let (s, _) = path_step(net, w, Reference::Params(wa), &x, &labels, &g, &settings)?;
        bar.inc(1);
        Ok(s)
    };
    let mut on_log = |step: usize, w: &Tensor, row: &PathRow| -> Result<()> {
        let a = acc(w)?;
        let line = format!(
            "step {step}: distance to B {:.4}, test accuracy {:.2}%, functional length {:.4}",
            (2.0 * row.objective).sqrt(),
            100.0 * a,
            row.functional_length
        );
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        logged.push((row.clone(), [a]));
        record.save(&checkpoint_path, net, w, &logged, &[])
    };
    // Stop within one step of B; the rest is a straight segment shorter than ε.
    let path_cfg = PathConfig { steps: cfg.steps, stop_below: 0.5 * cfg.eps * cfg.eps, log_every: cfg.log_every };
    let mut objective = ToTarget { target: wb.clone() };
    let result = integrate(w_start, resume_row.as_ref(), &mut objective, &mut rule, &path_cfg, &mut on_log)?;
    bar.finish_and_clear();
    let seconds = earlier_seconds + start.elapsed().as_secs_f64();
    let final_distance = flat::norm(&ew::sub(&result.params, wb)?)? as f64;
    // A path that stopped short of B is closed by the straight segment from its end to B,
    // evaluated like the line, so that the minimum covers a whole curve from A to B.
    let mut closing = Vec::new();
    if final_distance > cfg.eps as f64 {
        for i in 1..cfg.line_points {
            let t = i as f32 / (cfg.line_points - 1) as f32;
            let w = ew::axpby(1.0 - t, &result.params, t, wb)?;
            closing.push(((1.0 - t as f64) * final_distance, acc(&w)?));
        }
    }
    let min_path_accuracy =
        logged.iter().map(|(_, [a])| *a).chain(closing.iter().map(|c| c.1)).fold(accuracy_b, f64::min);

    let header = ["step", "distance_to_b", "step_norm", "functional_length", "test_accuracy", "seconds"];
    let rows: Vec<Vec<f64>> = logged
        .iter()
        .map(|(r, [a])| {
            vec![r.step as f64, (2.0 * r.objective).sqrt(), r.step_norm, r.functional_length, *a, r.seconds]
        })
        .collect();
    write_csv(&out.join("path.csv"), &header, &rows)?;
    write_csv(
        &out.join("linear.csv"),
        &["t", "test_accuracy"],
        &line.iter().map(|p| vec![p.0, p.1]).collect::<Vec<_>>(),
    )?;
    // Both curves against the fraction of the A–B distance covered.
    let progress_of = |d: f64| 1.0 - d / start_distance.max(1e-12);
    let mut path_points: Vec<(f64, f64)> =
        logged.iter().map(|(r, [a])| (progress_of((2.0 * r.objective).sqrt()), *a)).collect();
    path_points.extend(closing.iter().map(|(d, a)| (progress_of(*d), *a)));
    path_points.push((1.0, accuracy_b));
    write_plot(
        &out.join("path.svg"),
        "connect: test accuracy from A to B",
        "fraction of the distance from A to B",
        "test accuracy",
        &[
            Series { name: "geodesic path".into(), points: path_points, dashed: false },
            Series { name: "linear interpolation".into(), points: line.clone(), dashed: true },
        ],
    )?;
    let ending = match &result.ending {
        Ending::Steps => "steps".to_string(),
        Ending::Converged => "reached B".to_string(),
        Ending::NonFinite(why) => format!("non-finite: {why}"),
    };
    let r = ConnectResult {
        endpoint_accuracy: accuracy_a.min(accuracy_b),
        accuracy_a,
        accuracy_b,
        min_path_accuracy,
        linear_min_accuracy,
        final_distance,
        start_distance,
        steps: result.steps,
        ending,
        seconds,
    };
    let json = serde_json::json!({
        "endpoint_accuracy": r.endpoint_accuracy,
        "accuracy_a": r.accuracy_a,
        "accuracy_b": r.accuracy_b,
        "min_path_accuracy": r.min_path_accuracy,
        "linear_min_accuracy": r.linear_min_accuracy,
        "start_distance": r.start_distance,
        "final_distance": r.final_distance,
        "steps": r.steps,
        "step": settings.used(),
        "loss_weight": cfg.loss_weight,
        "ending": r.ending,
        "seconds": r.seconds,
    });
    let json = serde_json::to_string_pretty(&json).expect("a summary serialises") + "\n";
    write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(r)
}
