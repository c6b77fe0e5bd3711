//! `geopath continual`: learning a sequence of tasks without forgetting the earlier ones.
//!
//! Every method starts the second task from the same network, trained on the first task. The
//! geodesic method then walks, for each new task, a path whose steps keep the network's function
//! on a small buffer of stored old-task inputs (the metric, measured on that buffer, and for the
//! penalty step the Bhattacharyya distance to the network at the start of the task) while pulling
//! toward a low loss on the new task. Beside it, in the same run and with the same steps per task:
//! plain fine-tuning, EWC (diagonal empirical Fisher, one anchor per task) and replay (each batch
//! joined by a batch of the same buffer, with its labels); their learning rate (and EWC's λ) are
//! picked from a grid by the final average accuracy on held-out training data of every task.

use super::step::{batch_at, path_step, Reference, StepSettings};
use crate::autodiff;
use crate::data::{self, Dataset, DatasetName, EpochBatches};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::network::Network;
use crate::ops::{elementwise as ew, flat};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind, Schedule};
use crate::report::{write_csv, write_plot, Series};
use crate::tensor::Tensor;
use crate::train::{evaluate_among, json_str, write_atomic};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

/// The task sequences of `geopath continual`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSequence {
    /// Five tasks of two MNIST digits each: {0,1}, {2,3}, …, {8,9}, one 10-way head.
    SplitMnist,
    /// MNIST, then MNIST under fixed random pixel permutations, one 10-way head.
    PermutedMnist,
    /// MNIST (labels 0–9), then Fashion-MNIST (labels 10–19), one 20-way head.
    MnistFashion,
}

impl FromStr for TaskSequence {
    type Err = Error;
    fn from_str(s: &str) -> Result<TaskSequence> {
        match s {
            "split-mnist" => Ok(TaskSequence::SplitMnist),
            "permuted-mnist" => Ok(TaskSequence::PermutedMnist),
            "mnist-fashion" => Ok(TaskSequence::MnistFashion),
            other => Err(Error::Invalid(format!(
                "unknown task sequence `{other}` (split-mnist, permuted-mnist, mnist-fashion)"
            ))),
        }
    }
}

impl TaskSequence {
    /// The name [`FromStr`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSequence::SplitMnist => "split-mnist",
            TaskSequence::PermutedMnist => "permuted-mnist",
            TaskSequence::MnistFashion => "mnist-fashion",
        }
    }
}

/// Settings of `geopath continual` that depend on the task sequence: what the command uses
/// where its options leave them out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceDefaults {
    /// Epochs of every task after the first.
    pub epochs: usize,
    /// Weight λ of the new-task loss in the geodesic method's penalty step.
    pub lambda: f32,
    /// Step length of the geodesic method (annealed to 0 over each task).
    pub eps: f32,
    /// EWC's λ values to pick from: a grid whose pick lies inside it on the measured runs.
    pub ewc_lambdas: &'static [f32],
}

impl TaskSequence {
    /// The defaults measured best for this sequence. Split MNIST: 3 epochs, λ 30, ε 0.1.
    /// MNIST → Fashion-MNIST, whose second task is harder and larger: 8 epochs, λ 300, ε 0.3.
    /// Permuted MNIST takes split MNIST's (not tuned for it). EWC's λ grid: {3, 10, 30, 100}
    /// (λ ≥ 300 diverges under SGD on split MNIST), but {1000, 3000, 10000} for MNIST →
    /// Fashion-MNIST, where EWC keeps more of MNIST the larger λ is, up to 3000 (10000
    /// diverges at every learning rate of the grid).
    pub fn defaults(self) -> SequenceDefaults {
        match self {
            TaskSequence::SplitMnist | TaskSequence::PermutedMnist => {
                SequenceDefaults { epochs: 3, lambda: 30.0, eps: 0.1, ewc_lambdas: &[3.0, 10.0, 30.0, 100.0] }
            }
            TaskSequence::MnistFashion => {
                SequenceDefaults { epochs: 8, lambda: 300.0, eps: 0.3, ewc_lambdas: &[1000.0, 3000.0, 10000.0] }
            }
        }
    }
}

/// How a task's accuracy is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Task-incremental: the task is known at test time; the prediction is the most likely of
    /// that task's classes.
    Task,
    /// Class-incremental: the prediction is the most likely of all classes of the head.
    Class,
}

impl FromStr for Scenario {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scenario> {
        match s {
            "task" => Ok(Scenario::Task),
            "class" => Ok(Scenario::Class),
            other => Err(Error::Invalid(format!("unknown scenario `{other}` (task, class)"))),
        }
    }
}

impl Scenario {
    /// The name [`FromStr`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Task => "task",
            Scenario::Class => "class",
        }
    }
}

/// One task of a sequence: its data (labels already in the shared head's label space) and the
/// classes it uses.
pub struct Task {
    /// Short name, e.g. `digits 2-3`.
    pub name: String,
    /// Training images.
    pub train: Dataset,
    /// Test images.
    pub test: Dataset,
    /// The head's classes this task uses.
    pub classes: Vec<u32>,
}

/// Builds the tasks of `sequence` (`count` tasks for permuted MNIST: the plain images, then
/// `count - 1` permutations) and returns them with the width of the shared head. MNIST is read
/// from data/mnist (or `data_dir` for the MNIST-only sequences); Fashion-MNIST from `data_dir`
/// or the system data folder.
pub fn build_tasks(sequence: TaskSequence, count: usize, data_dir: Option<&Path>) -> Result<(Vec<Task>, usize)> {
    let mnist_dir = if sequence == TaskSequence::MnistFashion { None } else { data_dir };
    let mnist = (data::load(DatasetName::Mnist, true, mnist_dir)?, data::load(DatasetName::Mnist, false, mnist_dir)?);
    match sequence {
        TaskSequence::SplitMnist => {
            let tasks = (0..5u32)
                .map(|k| {
                    let classes = vec![2 * k, 2 * k + 1];
                    Task {
                        name: format!("digits {}-{}", 2 * k, 2 * k + 1),
                        train: mnist.0.filter_classes(&classes),
                        test: mnist.1.filter_classes(&classes),
                        classes,
                    }
                })
                .collect();
            Ok((tasks, 10))
        }
        TaskSequence::PermutedMnist => {
            if count < 2 {
                return Err(Error::Invalid(format!("permuted MNIST needs at least 2 tasks, got {count}")));
            }
            let tasks = (0..count)
                .map(|k| {
                    let (train, test, name) = if k == 0 {
                        (mnist.0.clone(), mnist.1.clone(), "MNIST".to_string())
                    } else {
                        (mnist.0.permute_pixels(k as u64), mnist.1.permute_pixels(k as u64), format!("permutation {k}"))
                    };
                    Task { name, train, test, classes: (0..10).collect() }
                })
                .collect();
            Ok((tasks, 10))
        }
        TaskSequence::MnistFashion => {
            let fashion = (
                data::load(DatasetName::FashionMnist, true, data_dir)?,
                data::load(DatasetName::FashionMnist, false, data_dir)?,
            );
            let tasks = vec![
                Task {
                    name: "MNIST".into(),
                    train: mnist.0.relabel(|l| l, 20),
                    test: mnist.1.relabel(|l| l, 20),
                    classes: (0..10).collect(),
                },
                Task {
                    name: "Fashion-MNIST".into(),
                    train: fashion.0.relabel(|l| l + 10, 20),
                    test: fashion.1.relabel(|l| l + 10, 20),
                    classes: (10..20).collect(),
                },
            ];
            Ok((tasks, 20))
        }
    }
}

/// A way of learning the tasks after the first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Path steps (the step rule of [`ContinualConfig::step`]) with the metric on the buffer.
    Geodesic,
    /// Plain SGD on the new task.
    FineTune,
    /// SGD plus `λ/2 Σ_t Σ_i F_t,i (w_i − w_t,i)²` over the finished tasks `t`.
    Ewc {
        /// Weight `λ` of the quadratic penalty.
        lambda: f32,
    },
    /// SGD on each new-task batch joined by a batch drawn from the buffer.
    Replay,
}

impl FromStr for Method {
    type Err = Error;
    /// Parses a method key (`ewc` with its λ still to be picked from the grid).
    fn from_str(s: &str) -> Result<Method> {
        match s {
            "geodesic" => Ok(Method::Geodesic),
            "finetune" => Ok(Method::FineTune),
            "ewc" => Ok(Method::Ewc { lambda: 0.0 }),
            "replay" => Ok(Method::Replay),
            other => Err(Error::Invalid(format!("unknown method `{other}` (geodesic, finetune, ewc, replay)"))),
        }
    }
}

impl Method {
    /// The key of the method in summaries and tables.
    pub fn key(&self) -> &'static str {
        match self {
            Method::Geodesic => "geodesic",
            Method::FineTune => "finetune",
            Method::Ewc { .. } => "ewc",
            Method::Replay => "replay",
        }
    }
}

/// Options of a continual-learning run.
#[derive(Debug, Clone)]
pub struct ContinualConfig {
    /// How accuracy is measured.
    pub scenario: Scenario,
    /// Stored inputs per class of every finished task.
    pub buffer_per_class: usize,
    /// Epochs of the first task (shared by all methods).
    pub first_epochs: usize,
    /// Learning rate of the first task.
    pub first_lr: f32,
    /// Epochs of every later task (the steps every method takes on it).
    pub epochs: usize,
    /// Training batch.
    pub batch: usize,
    /// Learning rates the baselines pick from.
    pub lrs: Vec<f32>,
    /// EWC's λ values to pick from.
    pub ewc_lambdas: Vec<f32>,
    /// Baselines to run beside the geodesic method (fine-tuning, EWC, replay).
    pub baselines: Vec<Method>,
    /// Examples of a finished task whose per-example gradients make EWC's Fisher diagonal.
    pub fisher_examples: usize,
    /// Step rule of the geodesic method.
    pub step: StepSettings,
    /// Buffer inputs per metric batch of the geodesic method.
    pub metric_batch: usize,
    /// The geodesic method's objective is the loss on the new-task batch joined by a labelled
    /// buffer batch (as replay's), not on the new-task batch alone.
    pub replay_objective: bool,
    /// Shift labelled buffer batches (replay's and the geodesic objective's) by up to two
    /// pixels.
    pub augment_buffer: bool,
    /// Evaluate along the paths every this many steps.
    pub log_every: usize,
    /// Test examples per task of the accuracies logged along the paths (the matrix uses all).
    pub eval_examples: usize,
    /// Seed of initialisation, shuffling, the buffer and the held-out split.
    pub seed: u64,
}

/// One method's outcome (with its picked hyper-parameters).
#[derive(Debug, Clone)]
pub struct MethodResult {
    /// The method, with the picked λ for EWC.
    pub method: Method,
    /// Picked learning rate (the step length `ε` for the geodesic method).
    pub lr: f32,
    /// Test accuracy after task `i` (row) on task `j` (column).
    pub matrix: Vec<Vec<f64>>,
    /// Mean of the last row.
    pub average_accuracy: f64,
    /// Final average accuracy on the held-out training data (what the pick used).
    pub validation_accuracy: f64,
    /// Gradient evaluations per step (objective gradients plus metric products).
    pub evaluations_per_step: f64,
    /// Seconds of this setting's run.
    pub seconds: f64,
    /// `(global step, mean test accuracy over the tasks seen so far)` along the run.
    pub curve: Vec<(f64, f64)>,
}

/// What a continual run reports (DIR/summary.json).
#[derive(Debug, Clone)]
pub struct ContinualResult {
    /// Task names, in order.
    pub tasks: Vec<String>,
    /// The geodesic method first, then the baselines.
    pub methods: Vec<MethodResult>,
    /// Seconds of the whole run.
    pub seconds: f64,
}

/// A task split into the part methods train on and the held-out part used to pick
/// hyper-parameters.
struct Split<'a> {
    task: &'a Task,
    fit: Dataset,
    validation: Dataset,
}

/// Accuracy of `w` on the first `limit` examples of `data` under `scenario` (restricted to
/// `classes` for the task-incremental scenario).
fn accuracy(
    net: &Network,
    w: &Tensor,
    data: &Dataset,
    classes: &[u32],
    scenario: Scenario,
    limit: usize,
    device: &Device,
) -> Result<f64> {
    let among = (scenario == Scenario::Task).then_some(classes);
    evaluate_among(net, w, data, limit, among, device)
}

/// `buffer_per_class` seeded random examples of every class of `data`.
fn sample_buffer(data: &Dataset, classes: &[u32], per_class: usize, seed: u64) -> Dataset {
    let order = data::shuffled_indices(data.len(), seed);
    let mut picked = Vec::new();
    for &c in classes {
        picked.extend(order.iter().copied().filter(|&i| data.labels[i] == c).take(per_class));
    }
    data.subset(&picked)
}

/// A rate `base` annealed to zero over `steps` by a half cosine: every method's learning rate
/// on a task, and the geodesic method's step length.
fn annealed(base: f32, steps: usize) -> LrSchedule {
    LrSchedule { base, schedule: Schedule::Cosine { total: steps, min_factor: 0.0 }, warmup: 0 }
}

/// SGD with Nesterov momentum 0.9, no weight decay, following `schedule`.
fn sgd(schedule: LrSchedule) -> Optimizer {
    Optimizer::new(OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 }, schedule)
}

/// EWC's memory: `Σ_t F_t` and `Σ_t F_t ⊙ w_t` over the finished tasks.
struct EwcMemory {
    fisher_sum: Tensor,
    anchored: Tensor,
}

impl EwcMemory {
    /// Adds the diagonal empirical Fisher of `w` on `examples` (mean of squared per-example
    /// gradients), anchored at `w`.
    fn add_task(&mut self, net: &Network, w: &Tensor, examples: &Dataset, device: &Device) -> Result<()> {
        let mut fisher = ew::fill(device, w.shape(), 0.0)?;
        for i in 0..examples.len() {
            let (x, y) = batch_at(examples, &[i], device)?;
            let (_, g) = autodiff::loss_grad(net, w, &x, &y)?;
            fisher = ew::add(&fisher, &ew::mul(&g, &g)?)?;
        }
        let fisher = ew::scale(1.0 / examples.len().max(1) as f32, &fisher)?;
        self.anchored = ew::add(&self.anchored, &ew::mul(&fisher, w)?)?;
        self.fisher_sum = ew::add(&self.fisher_sum, &fisher)?;
        Ok(())
    }

    /// The penalty's gradient `λ (Σ F_t ⊙ w − Σ F_t ⊙ w_t)`.
    fn penalty_grad(&self, w: &Tensor, lambda: f32) -> Result<Tensor> {
        ew::scale(lambda, &ew::sub(&ew::mul(&self.fisher_sum, w)?, &self.anchored)?)
    }
}

/// Everything one run of one method needs that does not change between settings.
struct Context<'a> {
    net: &'a Network,
    splits: &'a [Split<'a>],
    /// `buffers[t]`: the stored examples of tasks `0..=t`.
    buffers: &'a [Dataset],
    cfg: &'a ContinualConfig,
    device: &'a Device,
    bar: &'a ProgressBar,
}

impl Context<'_> {
    /// Test accuracy of `w` on every task (the first `limit` examples of each).
    fn test_row(&self, w: &Tensor, limit: usize) -> Result<Vec<f64>> {
        self.splits
            .iter()
            .map(|s| accuracy(self.net, w, &s.task.test, &s.task.classes, self.cfg.scenario, limit, self.device))
            .collect()
    }

    /// Mean held-out accuracy of `w` over all tasks.
    fn validation_mean(&self, w: &Tensor) -> Result<f64> {
        let mut sum = 0.0;
        for s in self.splits {
            sum += accuracy(self.net, w, &s.validation, &s.task.classes, self.cfg.scenario, usize::MAX, self.device)?;
        }
        Ok(sum / self.splits.len() as f64)
    }

    /// The labelled buffer batch of `step` (as many as a training batch, at most the whole
    /// buffer) of replay and of the geodesic objective.
    fn replay_batch(&self, buffer: &Dataset, step: usize, seed: u64) -> Dataset {
        self.buffer_batch(buffer, self.cfg.batch, step, seed ^ 0xBEEF)
    }

    /// `size` buffer examples (at most the whole buffer) for `step`, shifted by up to two
    /// pixels when the config asks for it.
    fn buffer_batch(&self, buffer: &Dataset, size: usize, step: usize, seed: u64) -> Dataset {
        // The buffer is small: drawing its order afresh for each step costs nothing.
        let pick = EpochBatches::new(buffer.len(), size.min(buffer.len()), seed).at(step).to_vec();
        let mut batch = buffer.subset(&pick);
        if self.cfg.augment_buffer {
            // Pixels shifted in take the background value, the smallest normalised value.
            let fill = batch.images.iter().copied().fold(f32::INFINITY, f32::min);
            let shift_seed = seed ^ (step as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            data::augment_shift(&mut batch.images, batch.channels, batch.height, batch.width, 2, fill, shift_seed);
        }
        batch
    }

    /// Steps every method takes on task `t` (`t ≥ 1`).
    fn steps_on(&self, t: usize) -> usize {
        self.cfg.epochs * (self.splits[t].fit.len() / self.cfg.batch).max(1)
    }

    /// Learns tasks `1..` from `w1` (the network after task 0) with `method` at rate `lr`
    /// (step length for the geodesic method). `path_log` receives the geodesic method's logged
    /// rows `(global step, task, accuracy per task)`.
    fn run_method(
        &self,
        method: Method,
        lr: f32,
        w1: &Tensor,
        row0: &[f64],
        path_log: &mut Vec<(usize, usize, Vec<f64>, f64)>,
    ) -> Result<MethodResult> {
        let (cfg, net, device) = (self.cfg, self.net, self.device);
        let start = Instant::now();
        let mut w = w1.clone();
        let mut matrix = vec![row0.to_vec()];
        let mut curve = vec![(0.0, row0[0])];
        let mut ewc =
            EwcMemory { fisher_sum: ew::fill(device, w.shape(), 0.0)?, anchored: ew::fill(device, w.shape(), 0.0)? };
        let mut global = 0usize;
        let mut evaluations = 0usize;
        for t in 1..self.splits.len() {
            let fit = &self.splits[t].fit;
            let buffer = &self.buffers[t - 1];
            if let Method::Ewc { .. } = method {
                let prev = &self.splits[t - 1].fit;
                let n = cfg.fisher_examples.min(prev.len());
                let examples = prev.subset(&data::shuffled_indices(prev.len(), cfg.seed ^ 0xF15E)[..n]);
                ewc.add_task(net, &w, &examples, device)?;
            }
            // The geodesic method's reference function: the network at the start of the task.
            let task_start = w.clone();
            let steps = self.steps_on(t);
            let schedule = annealed(lr, steps);
            let mut opt = sgd(schedule);
            let seed = cfg.seed.wrapping_add(1000 * t as u64);
            let mut batches = EpochBatches::new(fit.len(), cfg.batch, seed);
            for step in 0..steps {
                let idx = batches.at(step).to_vec();
                match method {
                    Method::FineTune | Method::Ewc { .. } => {
                        let (x, y) = batch_at(fit, &idx, device)?;
                        let (_, mut g) = autodiff::loss_grad(net, &w, &x, &y)?;
                        if let Method::Ewc { lambda } = method {
                            g = ew::add(&g, &ewc.penalty_grad(&w, lambda)?)?;
                        }
                        w = opt.step(&w, &g)?;
                        evaluations += 1;
                    }
                    Method::Replay => {
                        let mut joined = fit.subset(&idx);
                        joined.append(&self.replay_batch(buffer, step, seed))?;
                        let (x, y) = batch_at(&joined, &(0..joined.len()).collect::<Vec<_>>(), device)?;
                        let (_, g) = autodiff::loss_grad(net, &w, &x, &y)?;
                        w = opt.step(&w, &g)?;
                        evaluations += joined.len().div_ceil(cfg.batch);
                    }
                    Method::Geodesic => {
                        let mut objective_batch = fit.subset(&idx);
                        if cfg.replay_objective {
                            objective_batch.append(&self.replay_batch(buffer, step, seed))?;
                        }
                        let all: Vec<usize> = (0..objective_batch.len()).collect();
                        let (x, y) = batch_at(&objective_batch, &all, device)?;
                        let (_, g) = autodiff::loss_grad(net, &w, &x, &y)?;
                        let metric_batch = self.buffer_batch(buffer, cfg.metric_batch, step, seed ^ 0xFACE);
                        let (xb, yb) = batch_at(&metric_batch, &(0..metric_batch.len()).collect::<Vec<_>>(), device)?;
                        // The step length follows the baselines' learning-rate schedule.
                        let settings = StepSettings { eps: schedule.lr(step), ..cfg.step };
                        let (s, products) =
                            path_step(net, &w, Reference::Params(&task_start), &xb, &yb, &g, &settings)?;
                        w = ew::add(&w, &s.theta)?;
                        evaluations += objective_batch.len().div_ceil(cfg.batch) + products;
                    }
                }
                global += 1;
                self.bar.inc(1);
                if global.is_multiple_of(cfg.log_every) {
                    let row = self.test_row(&w, cfg.eval_examples)?;
                    let seen = row[..=t].iter().sum::<f64>() / (t + 1) as f64;
                    curve.push((global as f64, seen));
                    if method == Method::Geodesic {
                        path_log.push((global, t, row, start.elapsed().as_secs_f64()));
                    }
                }
            }
            // One readback per task, not per step. A diverged setting is reported and kept
            // (its accuracies are what its parameters give), so a grid is never cut short.
            if !flat::norm(&w)?.is_finite() {
                let line = format!(
                    "warning: {} ({}) made the parameters non-finite on task {}",
                    method.key(),
                    describe(method, lr),
                    t + 1
                );
                if self.bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    self.bar.println(line);
                }
            }
            let row = self.test_row(&w, usize::MAX)?;
            let seen = row[..=t].iter().sum::<f64>() / (t + 1) as f64;
            curve.push((global as f64, seen));
            if method == Method::Geodesic {
                path_log.push((global, t, row.clone(), start.elapsed().as_secs_f64()));
            }
            matrix.push(row);
        }
        let last = matrix.last().map_or(0.0, |r| r.iter().sum::<f64>() / r.len() as f64);
        Ok(MethodResult {
            method,
            lr,
            average_accuracy: last,
            validation_accuracy: self.validation_mean(&w)?,
            matrix,
            evaluations_per_step: evaluations as f64 / global.max(1) as f64,
            seconds: start.elapsed().as_secs_f64(),
            curve,
        })
    }
}

/// Trains the first task, then runs the geodesic method and the baselines over the rest.
/// Writes DIR/path.csv (the geodesic run's accuracies per task along its path), DIR/path.svg
/// (mean accuracy over the tasks seen so far, every method) and DIR/summary.json.
pub fn run(
    net: &Network,
    tasks: &[Task],
    cfg: &ContinualConfig,
    device: &Device,
    out: &Path,
    progress: bool,
) -> Result<ContinualResult> {
    if tasks.len() < 2 {
        return Err(Error::Invalid("a continual run needs at least two tasks".into()));
    }
    if cfg.batch == 0 || cfg.epochs == 0 || cfg.first_epochs == 0 || cfg.log_every == 0 || cfg.metric_batch == 0 {
        return Err(Error::Invalid(
            "batch, epochs, first-epochs, log-every and the metric batch must be positive".into(),
        ));
    }
    if cfg.buffer_per_class == 0 {
        return Err(Error::Invalid("--buffer-per-class must be at least 1".into()));
    }
    if cfg.lrs.is_empty() || cfg.ewc_lambdas.is_empty() {
        return Err(Error::Invalid("the learning-rate and EWC λ grids need at least one value each".into()));
    }
    if cfg.baselines.contains(&Method::Geodesic) {
        return Err(Error::Invalid("the geodesic method always runs; it is not a baseline".into()));
    }
    for t in tasks {
        if t.train.classes != net.classes || t.test.classes != net.classes {
            return Err(Error::Invalid(format!(
                "task {} has {} classes but the network's head has {}",
                t.name, t.train.classes, net.classes
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    let run_start = Instant::now();
    net.set_train(false);
    let splits: Vec<Split> = tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            let order = data::shuffled_indices(task.train.len(), cfg.seed ^ (0x5EED + t as u64));
            let n_val = task.train.len() / 6;
            Split { task, fit: task.train.subset(&order[n_val..]), validation: task.train.subset(&order[..n_val]) }
        })
        .collect();
    let mut buffers: Vec<Dataset> = Vec::new();
    for (t, s) in splits.iter().enumerate() {
        let stored = sample_buffer(&s.fit, &s.task.classes, cfg.buffer_per_class, cfg.seed ^ (0xB0F + t as u64));
        match buffers.last() {
            Some(prev) => {
                let mut all = prev.clone();
                all.append(&stored)?;
                buffers.push(all);
            }
            None => buffers.push(stored),
        }
    }

    let first_steps = cfg.first_epochs * (splits[0].fit.len() / cfg.batch).max(1);
    let mut settings: Vec<(Method, f32)> = vec![(Method::Geodesic, cfg.step.eps)];
    for baseline in &cfg.baselines {
        match baseline {
            Method::Ewc { .. } => {
                for &lambda in &cfg.ewc_lambdas {
                    settings.extend(cfg.lrs.iter().map(|&lr| (Method::Ewc { lambda }, lr)));
                }
            }
            other => settings.extend(cfg.lrs.iter().map(|&lr| (*other, lr))),
        }
    }
    let later_steps: usize =
        (1..splits.len()).map(|t| cfg.epochs * (splits[t].fit.len() / cfg.batch).max(1)).sum::<usize>();
    let total = first_steps + settings.len() * later_steps;
    let bar = if progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("continual [{bar:30}] {pos}/{len} steps {msg} ({eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    let say = |line: String| if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) };

    // The first task, shared by every method.
    bar.set_message(format!("task 1 ({})", splits[0].task.name));
    let mut w = net.init_params(cfg.seed)?;
    let mut opt = sgd(annealed(cfg.first_lr, first_steps));
    let mut batches = EpochBatches::new(splits[0].fit.len(), cfg.batch, cfg.seed);
    for step in 0..first_steps {
        let (x, y) = batch_at(&splits[0].fit, batches.at(step), device)?;
        let (_, g) = autodiff::loss_grad(net, &w, &x, &y)?;
        w = opt.step(&w, &g)?;
        bar.inc(1);
    }
    let ctx = Context { net, splits: &splits, buffers: &buffers, cfg, device, bar: &bar };
    let row0 = ctx.test_row(&w, usize::MAX)?;
    say(format!("after task 1 ({}): test accuracy {:.2}%", splits[0].task.name, 100.0 * row0[0]));

    let mut best: Vec<MethodResult> = Vec::new();
    let mut path_log = Vec::new();
    for &(method, lr) in &settings {
        bar.set_message(format!("{} {}", method.key(), describe(method, lr)));
        let mut log = Vec::new();
        let r = ctx.run_method(method, lr, &w, &row0, &mut log)?;
        say(format!(
            "{:<9} {:<22} average test accuracy {:.2}%, held-out {:.2}% ({:.0} s)",
            method.key(),
            describe(method, lr),
            100.0 * r.average_accuracy,
            100.0 * r.validation_accuracy,
            r.seconds
        ));
        if method == Method::Geodesic {
            path_log = log;
        }
        match best.iter_mut().find(|b| b.method.key() == method.key()) {
            Some(b) if r.validation_accuracy > b.validation_accuracy => *b = r,
            Some(_) => {}
            None => best.push(r),
        }
    }
    bar.finish_and_clear();

    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut header = vec!["step".to_string(), "task".to_string()];
    header.extend((0..tasks.len()).map(|j| format!("accuracy_task{}", j + 1)));
    header.push("seconds".into());
    let rows: Vec<Vec<f64>> = path_log
        .iter()
        .map(|(step, t, accs, secs)| {
            let mut r = vec![*step as f64, (*t + 1) as f64];
            r.extend(accs);
            r.push(*secs);
            r
        })
        .collect();
    write_csv(&out.join("path.csv"), &header.iter().map(String::as_str).collect::<Vec<_>>(), &rows)?;
    let series: Vec<Series> = best
        .iter()
        .map(|b| Series { name: b.method.key().into(), points: b.curve.clone(), dashed: b.method != Method::Geodesic })
        .collect();
    write_plot(
        &out.join("path.svg"),
        "continual learning: mean test accuracy over the tasks seen so far",
        "step (after the first task)",
        "mean test accuracy",
        &series,
    )?;
    let result = ContinualResult { tasks: names, methods: best, seconds: run_start.elapsed().as_secs_f64() };
    write_atomic(&out.join("summary.json"), summary_json(&result, cfg).as_bytes())?;
    Ok(result)
}

/// The hyper-parameters of one setting, for logs.
fn describe(method: Method, lr: f32) -> String {
    match method {
        Method::Geodesic => format!("step {lr}"),
        Method::Ewc { lambda } => format!("lr {lr} lambda {lambda}"),
        _ => format!("lr {lr}"),
    }
}

/// A matrix as a JSON array of rows.
fn matrix_json(m: &[Vec<f64>]) -> String {
    let rows: Vec<String> =
        m.iter().map(|r| format!("[{}]", r.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", "))).collect();
    format!("[{}]", rows.join(", "))
}

fn summary_json(r: &ContinualResult, cfg: &ContinualConfig) -> String {
    let geodesic = &r.methods[0];
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"average_accuracy\": {:.6},", geodesic.average_accuracy);
    let baselines: Vec<String> =
        r.methods[1..].iter().map(|m| format!("{}: {:.6}", json_str(m.method.key()), m.average_accuracy)).collect();
    let _ = writeln!(s, "  \"baselines\": {{{}}},", baselines.join(", "));
    let _ = writeln!(s, "  \"final_accuracy\": [{}],", {
        let last = geodesic.matrix.last().map(Vec::as_slice).unwrap_or(&[]);
        last.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", ")
    });
    let _ = writeln!(s, "  \"scenario\": {},", json_str(cfg.scenario.as_str()));
    let _ = writeln!(s, "  \"tasks\": [{}],", r.tasks.iter().map(|t| json_str(t)).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "  \"buffer_per_class\": {},", cfg.buffer_per_class);
    let _ = writeln!(s, "  \"epochs_per_task\": {},", cfg.epochs);
    let step = &cfg.step;
    let mut used = step.used();
    used["metric_batch"] = cfg.metric_batch.into();
    used["replay_objective"] = cfg.replay_objective.into();
    used["augment_buffer"] = cfg.augment_buffer.into();
    let _ = writeln!(s, "  \"geodesic_step\": {used},");
    let methods: Vec<String> = r
        .methods
        .iter()
        .map(|m| {
            let lambda = match m.method {
                Method::Ewc { lambda } => format!(", \"lambda\": {lambda}"),
                _ => String::new(),
            };
            format!(
                "    {}: {{\"average_accuracy\": {:.6}, \"held_out_accuracy\": {:.6}, \"{}\": {}{lambda}, \"gradient_evaluations_per_step\": {:.2}, \"seconds\": {:.1}, \"accuracy_matrix\": {}}}",
                json_str(m.method.key()),
                m.average_accuracy,
                m.validation_accuracy,
                if m.method == Method::Geodesic { "step_length" } else { "lr" },
                m.lr,
                m.evaluations_per_step,
                m.seconds,
                matrix_json(&m.matrix)
            )
        })
        .collect();
    let _ = writeln!(s, "  \"methods\": {{\n{}\n  }},", methods.join(",\n"));
    let _ = writeln!(s, "  \"seconds\": {:.1}", r.seconds);
    s.push_str("}\n");
    s
}
