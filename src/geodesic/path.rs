//! The path integrator: repeated steps `w ← w + θ` where each step `θ` keeps the network's
//! function nearly unchanged (small in the metric) while pulling toward a secondary objective
//! `L`; with logging, checkpoints along the path, NaN/Inf detection and resumption from a
//! logged point.

use crate::error::{Error, Result};
use crate::ops::{elementwise as ew, flat};
use crate::tensor::Tensor;
use std::time::Instant;

/// The secondary objective `L` a path pulls toward.
pub trait Objective {
    /// Short name for logs.
    fn name(&self) -> String;
    /// `L(w)` and `∇L(w)`.
    fn value_grad(&mut self, w: &Tensor) -> Result<(f32, Tensor)>;
    /// Told by [`integrate`] the index of the step about to be taken (and, at the end, the
    /// number of steps taken) before each [`Objective::value_grad`]: for objectives that change
    /// along the path. Nothing by default.
    fn begin_step(&mut self, _step: usize) {}
}

/// `L = ½‖w − target‖²`: toward a second optimum (mode connectivity).
pub struct ToTarget {
    /// The target parameters `w_B`.
    pub target: Tensor,
}

impl Objective for ToTarget {
    fn name(&self) -> String {
        "distance to target".into()
    }

    fn value_grad(&mut self, w: &Tensor) -> Result<(f32, Tensor)> {
        let d = ew::sub(w, &self.target)?;
        let n = flat::norm(&d)?;
        Ok((0.5 * n * n, d))
    }
}

/// `L = ½‖w − P_p(w)‖²`, where `P_p` zeroes the fraction `p` of smallest-magnitude weights
/// (global ranking): toward a sparse network. The ranking is redone every step unless a mask
/// was fixed with [`ToPruned::fix_mask`]. With a ramp of `R > 0` steps the fraction of the
/// objective grows along the path as in gradual magnitude pruning (Zhu & Gupta 2017),
/// `p_t = p (1 − (1 − min(t/R, 1))³)`, from 0 at the start to `p` after `R` steps; the
/// hard-pruned result [`ToPruned::project`] always uses the final `p`.
pub struct ToPruned {
    /// Final fraction of weights to zero, in [0, 1].
    pub fraction: f32,
    /// A fixed keep-mask (1 keep, 0 prune), if any.
    pub mask: Option<Tensor>,
    /// Steps over which the objective's fraction ramps up to `fraction` (0: from the first step).
    pub ramp: usize,
    /// The step the objective is evaluated at (set by [`Objective::begin_step`]).
    step: usize,
}

impl ToPruned {
    /// The objective toward `fraction` zeros from the first step, ranking every step.
    pub fn new(fraction: f32) -> ToPruned {
        ToPruned { fraction, mask: None, ramp: 0, step: 0 }
    }

    /// The objective whose fraction ramps from 0 to `fraction` over `ramp` steps.
    pub fn gradual(fraction: f32, ramp: usize) -> ToPruned {
        ToPruned { fraction, mask: None, ramp, step: 0 }
    }

    /// The fraction the objective prunes at step `t`: `p (1 − (1 − min(t/R, 1))³)`, or `p`
    /// without a ramp.
    pub fn fraction_at(&self, t: usize) -> f32 {
        if self.ramp == 0 {
            return self.fraction;
        }
        let left = 1.0 - (t as f64 / self.ramp as f64).min(1.0);
        (self.fraction as f64 * (1.0 - left * left * left)) as f32
    }

    /// Fixes the mask to the ranking at `w` (the "mask fixed at the start" variant; no ramp).
    pub fn fix_mask(&mut self, w: &Tensor) -> Result<()> {
        if self.ramp > 0 {
            return Err(Error::Invalid("a fixed mask and a sparsity ramp do not go together".into()));
        }
        self.mask = Some(self.keep_mask(w)?);
        Ok(())
    }

    /// The keep-mask of [`ToPruned::project`] at `w` (1 keep, 0 prune): the fixed one, or the
    /// ranking of `w` at the final fraction.
    pub fn keep_mask(&self, w: &Tensor) -> Result<Tensor> {
        match &self.mask {
            Some(m) => Ok(m.clone()),
            None => flat::prune_mask(w, flat::magnitude_threshold(w, self.fraction)?),
        }
    }

    /// `P_p(w)`: the hard-pruned parameters at the final fraction.
    pub fn project(&self, w: &Tensor) -> Result<Tensor> {
        match &self.mask {
            Some(m) => flat::mask(w, m),
            None => flat::prune(w, flat::magnitude_threshold(w, self.fraction)?),
        }
    }
}

impl Objective for ToPruned {
    fn name(&self) -> String {
        format!("distance to {:.1}% sparse", 100.0 * self.fraction)
    }

    fn begin_step(&mut self, step: usize) {
        self.step = step;
    }

    fn value_grad(&mut self, w: &Tensor) -> Result<(f32, Tensor)> {
        let p = match &self.mask {
            Some(m) => flat::mask(w, m)?,
            None => flat::prune(w, flat::magnitude_threshold(w, self.fraction_at(self.step))?)?,
        };
        let d = ew::sub(w, &p)?;
        let n = flat::norm(&d)?;
        Ok((0.5 * n * n, d))
    }
}

/// One step's result from a step rule.
pub struct Step {
    /// The move `θ`.
    pub theta: Tensor,
    /// `θᵀ G θ`, the squared functional length of the step.
    pub metric_sq: f32,
}

/// Options of a path run.
#[derive(Debug, Clone)]
pub struct PathConfig {
    /// Maximum number of steps.
    pub steps: usize,
    /// Stop when the objective falls below this value.
    pub stop_below: f32,
    /// Log every this many steps (and at the end).
    pub log_every: usize,
}

/// One logged row of a path.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRow {
    /// Step index (after that many steps).
    pub step: usize,
    /// `L(w)` before the step.
    pub objective: f64,
    /// `‖θ‖` of the last step.
    pub step_norm: f64,
    /// Accumulated `Σ sqrt(θᵀGθ)`: the functional path length so far.
    pub functional_length: f64,
    /// Seconds spent on the path so far (for a resumed path, the seconds of the earlier runs up
    /// to the point it resumed from included).
    pub seconds: f64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// All steps taken.
    Steps,
    /// The objective fell below `stop_below`.
    Converged,
    /// A step produced a non-finite value; the parameters are the last finite ones.
    NonFinite(String),
}

/// The outcome of [`integrate`].
pub struct PathResult {
    /// Final (last good) parameters.
    pub params: Tensor,
    /// Steps taken in total (for a resumed path, the earlier runs' steps included).
    pub steps: usize,
    /// The rows logged by this call (a resumed path's earlier rows are not repeated).
    pub rows: Vec<PathRow>,
    /// Why it stopped.
    pub ending: Ending,
}

/// Walks from `w` for up to `cfg.steps` steps in total. A fresh path (`resume` is `None`)
/// starts at step 0 and logs that point; a resumed one continues from `resume`, the last row an
/// earlier run logged, at the point `w`: its step index, functional length, last step norm and
/// seconds carry on, and its point is not logged again. Each step asks `objective` for `∇L`,
/// `step_rule(step, w, ∇L)` for `θ` (`step` is the number of steps taken before this one, so
/// that whatever the rule draws, e.g. its batch, can depend on the step index alone and a
/// resumed path takes the steps the uninterrupted one would have), and moves `w ← w + θ`.
/// `on_log(step, w, row)` runs every `cfg.log_every` steps and at the end (write checkpoints
/// and evaluate accuracies there). A non-finite objective, gradient or step stops the run with
/// the last finite parameters.
pub fn integrate(
    w: Tensor,
    resume: Option<&PathRow>,
    objective: &mut dyn Objective,
    step_rule: &mut dyn FnMut(usize, &Tensor, &Tensor) -> Result<Step>,
    cfg: &PathConfig,
    on_log: &mut dyn FnMut(usize, &Tensor, &PathRow) -> Result<()>,
) -> Result<PathResult> {
    if cfg.log_every == 0 {
        return Err(Error::Invalid("log_every must be at least 1".into()));
    }
    let start = Instant::now();
    let earlier_seconds = resume.map_or(0.0, |r| r.seconds);
    let mut w = w;
    let mut rows = Vec::new();
    let mut length = resume.map_or(0.0, |r| r.functional_length);
    let mut last_norm = resume.map_or(0.0, |r| r.step_norm);
    let mut step = resume.map_or(0, |r| r.step);
    // The step of the last logged point: a resumed path's start was logged by an earlier run.
    let mut last_logged = resume.map(|r| r.step);
    let mut ending = Ending::Steps;
    let mut log = |step: usize, w: &Tensor, objective: f64, last_norm: f64, length: f64, rows: &mut Vec<PathRow>| {
        let row = PathRow {
            step,
            objective,
            step_norm: last_norm,
            functional_length: length,
            seconds: earlier_seconds + start.elapsed().as_secs_f64(),
        };
        on_log(step, w, &row)?;
        rows.push(row);
        Ok::<(), Error>(())
    };
    // The state before the last step, to fall back to if that step made the parameters
    // non-finite: (parameters, path length, last step norm).
    let mut previous: Option<(Tensor, f64, f64)> = None;
    loop {
        objective.begin_step(step);
        let (value, grad) = objective.value_grad(&w)?;
        if !value.is_finite() {
            ending = Ending::NonFinite(format!("objective is {value} after step {step}"));
            if let Some((p, l, n)) = previous.take() {
                (w, length, last_norm) = (p, l, n);
                step -= 1;
            }
            break;
        }
        let due = step.is_multiple_of(cfg.log_every) || step >= cfg.steps || value < cfg.stop_below;
        if due && last_logged != Some(step) {
            log(step, &w, value as f64, last_norm, length, &mut rows)?;
            last_logged = Some(step);
        }
        if value < cfg.stop_below {
            ending = Ending::Converged;
            break;
        }
        if step >= cfg.steps {
            break;
        }
        let s = step_rule(step, &w, &grad)?;
        let norm = flat::norm(&s.theta)?;
        if !norm.is_finite() || !s.metric_sq.is_finite() {
            ending = Ending::NonFinite(format!("step {} has norm {norm} and metric length² {}", step + 1, s.metric_sq));
            break;
        }
        previous = Some((w.clone(), length, last_norm));
        w = ew::add(&w, &s.theta)?;
        step += 1;
        last_norm = norm as f64;
        length += (s.metric_sq.max(0.0) as f64).sqrt();
    }
    if last_logged != Some(step) {
        objective.begin_step(step);
        let (value, _) = objective.value_grad(&w)?;
        log(step, &w, value as f64, last_norm, length, &mut rows)?;
    }
    Ok(PathResult { params: w, steps: step, rows, ending })
}
