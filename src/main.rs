//! The `geopath` command line.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use geopath::bench::{self, BenchResult};
use geopath::data::split::SPLIT_KEY;
use geopath::data::{self, DatasetName, Split, SplitRecord};
use geopath::geodesic;
use geopath::gpu::ContextOptions;
use geopath::optim::OptimizerKind;
use geopath::train::{self, json_str, Recipe, TrainArgs};
use geopath::{Device, DeviceChoice};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "geopath", version, about = "Weight-space geodesics for neural networks on a WGSL tensor engine")]
struct Cli {
    /// Compute device: auto takes a hardware GPU when there is one, else the native CPU backend;
    /// gpu takes any wgpu adapter (software Vulkan too); reference runs the plain-Rust oracle.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto, global = true)]
    device: DeviceChoice,
    /// Threads of the native CPU backend (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Use subgroup operations where the adapter offers them (false: every kernel takes its
    /// subgroup-free variant, e.g. to compare speeds).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, global = true)]
    subgroups: bool,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the path commands (`connect`, `continual`).
#[derive(clap::Args)]
struct PathArgs {
    /// Step rule: trust-region, steihaug or penalty.
    #[arg(long, default_value = "trust-region")]
    method: String,
    /// Weight λ of the objective's gradient in the penalty step.
    #[arg(long, default_value_t = 0.1)]
    lambda: f32,
    /// Metric of the trust-region rules: fisher, logits or hessian.
    #[arg(long, default_value = "fisher")]
    metric: String,
    /// Step length (trust radius).
    #[arg(long, default_value_t = 0.05)]
    eps: f32,
    /// Weight of the objective (sparsity, or the pull toward B) in each step.
    #[arg(long, default_value_t = 1.0)]
    beta: f32,
    /// Inputs per metric batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// CG iterations per step.
    #[arg(long, default_value_t = 10)]
    cg_iter: usize,
    /// Log, evaluate (and checkpoint) every this many steps.
    #[arg(long, default_value_t = 20)]
    log_every: usize,
    /// Seed of the metric batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the interrupted run in --out from OUT/path.ckpt (same options and networks;
    /// --steps may be raised to extend a finished path). Not for continual.
    #[arg(long)]
    resume: bool,
}

impl PathArgs {
    /// The step rule, with `--lambda` for the penalty step.
    fn step_method(&self) -> geopath::Result<geodesic::step::StepMethod> {
        Ok(match self.method.parse()? {
            geodesic::step::StepMethod::Penalty { .. } => geodesic::step::StepMethod::Penalty { lambda: self.lambda },
            other => other,
        })
    }
}

/// What a comparing command does with an output folder that holds an earlier run.
#[derive(clap::Args)]
struct ExistingArgs {
    /// Continue the earlier (interrupted) run in --out: its finished configuration runs are
    /// reused.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Replace the earlier run's outputs in --out (when this run ends).
    #[arg(long)]
    force: bool,
}

impl ExistingArgs {
    /// The runner's choice.
    fn choice(&self) -> geopath::experiments::runner::Existing {
        use geopath::experiments::runner::Existing;
        match (self.resume, self.force) {
            (true, _) => Existing::Resume,
            (_, true) => Existing::Force,
            _ => Existing::Refuse,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every device geopath could use, then the chosen one: name, backend, device type,
    /// driver, limits, features (threads and SIMD for the CPU backend).
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure kernel and autodiff throughput (all benchmarks when no NAME is given).
    Bench {
        /// Benchmarks to run: matmul, matmul-512, matmul-256, mlp-forward, mlp-jvp, mlp-grad, mlp-hvp, mlp-gn, train-step, fip-step, fip-penalty-step.
        names: Vec<String>,
        /// Print one JSON object {"adapter": {...}, "results": [...]}.
        #[arg(long)]
        json: bool,
        /// Model of the train-step benchmark.
        #[arg(long, default_value = "lenet-300-100")]
        model: String,
        /// Batch of the train-step benchmark.
        #[arg(long, default_value_t = 200)]
        batch: usize,
    },
    /// Train a model on a data set; writes OUT/model.ckpt and OUT/summary.json.
    Train {
        /// Model: a name from models/ (lenet-300-100, mlp-2x400, vgg11, vgg11-bn, vgg16, vgg16-bn, vgg11-bn-w8, …) or a spec file.
        #[arg(long, default_value = "lenet-300-100")]
        model: String,
        /// Data set: mnist, fashion-mnist, cifar10, cifar100.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// Folder holding the data set files (default: data/ and the system data folders).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Epochs (default: the model's recipe).
        #[arg(long)]
        epochs: Option<usize>,
        /// Mini-batch size (default: the recipe's).
        #[arg(long)]
        batch: Option<usize>,
        /// Peak learning rate (default: the recipe's).
        #[arg(long)]
        lr: Option<f32>,
        /// Optimiser: sgd (Nesterov momentum 0.9) or adam.
        #[arg(long)]
        optimizer: Option<String>,
        /// Weight decay (default: the recipe's).
        #[arg(long)]
        weight_decay: Option<f32>,
        /// Seed of initialisation, shuffling, augmentation and dropout.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare sparsification methods like for like: the geodesic path (+ masked SGD from its
    /// end), one-shot magnitude pruning + masked SGD, and gradual magnitude pruning, from the same
    /// start network, at the same cost, each arm's configuration picked on the validation split;
    /// writes OUT/compare.json, OUT/compare.md, OUT/compare.svg and each arm's picked network
    /// per seed (OUT/ARM-seedS.ckpt).
    Sparsify {
        /// Start network for every seed (trained with the validation split held out); default:
        /// LeNet-300-100 trained per seed on --dataset (cached in runs/cache).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Target fraction of zero weights.
        #[arg(long, default_value_t = 0.95)]
        sparsity: f32,
        /// Seeds (comma-separated): batches, shuffles, and the start network when trained here.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        seeds: Vec<u64>,
        /// Cost of every configuration run of every arm, in forward passes of one batch.
        #[arg(long, default_value_t = 12_000.0)]
        budget: f64,
        /// Examples per step of every arm, and per cost unit.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Arms (comma-separated): geodesic, one-shot-magnitude, gradual-magnitude.
        #[arg(long, value_delimiter = ',', default_value = "geodesic,one-shot-magnitude,gradual-magnitude")]
        arms: Vec<String>,
        /// Data set of the network.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// Folder holding the data set files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "runs/sparsify")]
        out: PathBuf,
        #[command(flatten)]
        existing: ExistingArgs,
    },
    /// Gather finished comparisons (DIR/compare.json) into one Markdown table.
    Report {
        /// Run folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Connect two trained networks of one architecture by a path that keeps the function;
    /// reports the test accuracy along it beside linear interpolation (OUT/path.csv,
    /// OUT/linear.csv, OUT/path.svg, OUT/summary.json).
    Connect {
        /// Checkpoint of optimum A (the start).
        #[arg(long)]
        a: PathBuf,
        /// Checkpoint of optimum B (the target).
        #[arg(long)]
        b: PathBuf,
        #[command(flatten)]
        path: PathArgs,
        /// Weight γ of the restoring term's gradient added to the pull toward B (0: the plain pull).
        #[arg(long, default_value_t = 200.0)]
        loss_weight: f32,
        /// Restoring term weighted by --loss-weight: loss (cross-entropy on the labels) or ensemble (Bhattacharyya distance to the mixture of A's and B's outputs, moving from A's to B's along the path).
        #[arg(long, default_value = "loss")]
        restore: String,
        /// Maximum steps.
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        /// Data set (default: the one A was trained on).
        #[arg(long)]
        dataset: Option<String>,
        /// Folder holding the data set files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "runs/connect")]
        out: PathBuf,
    },
    /// Learn a sequence of tasks: the geodesic method (metric on a buffer of old-task inputs)
    /// beside fine-tuning, EWC and replay with the same buffer; prints the accuracy matrices and
    /// writes OUT/path.csv, OUT/path.svg, OUT/summary.json.
    Continual {
        /// Task sequence: split-mnist, permuted-mnist or mnist-fashion.
        #[arg(long, default_value = "split-mnist")]
        tasks: String,
        /// task (the task is known at test time) or class (one prediction over the whole head).
        #[arg(long, default_value = "class")]
        scenario: String,
        /// Stored inputs per class of every finished task.
        #[arg(long, default_value_t = 50)]
        buffer_per_class: usize,
        /// Number of tasks of permuted MNIST (the plain images, then permutations).
        #[arg(long, default_value_t = 5)]
        num_tasks: usize,
        /// Model: a name from models/ or a spec file.
        #[arg(long, default_value = "lenet-300-100")]
        model: String,
        #[command(flatten)]
        path: PathArgs,
        /// Epochs of every task after the first (every method takes the same steps); default:
        /// 3, or 8 for mnist-fashion.
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Epochs of the first task (shared by every method).
        #[arg(long, default_value_t = 5)]
        first_epochs: usize,
        /// Training batch.
        #[arg(long, default_value_t = 128)]
        train_batch: usize,
        /// Learning rates the baselines pick from (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "0.01,0.03,0.1")]
        lrs: Vec<f32>,
        /// EWC λ values to pick from (comma-separated); default: 3,10,30,100, or
        /// 1000,3000,10000 for mnist-fashion.
        #[arg(long, value_delimiter = ',', default_value = "3,10,30,100")]
        ewc_lambdas: Vec<f32>,
        /// The geodesic method's objective: the loss on the new-task batch joined by a labelled
        /// buffer batch (true), or on the new-task batch alone (false).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        replay_objective: bool,
        /// Shift the labelled buffer batches of replay and of the geodesic objective by up to
        /// two pixels.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        augment_buffer: bool,
        /// Baselines run beside the geodesic method (comma-separated; empty for none).
        #[arg(long, value_delimiter = ',', default_value = "finetune,ewc,replay")]
        baselines: Vec<String>,
        /// Folder holding the data set files (Fashion-MNIST for mnist-fashion).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "runs/continual")]
        out: PathBuf,
    },
    /// Evaluate a checkpoint's test accuracy.
    Eval {
        /// Checkpoint written by `geopath train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data set (default: the one the checkpoint was trained on).
        #[arg(long)]
        dataset: Option<String>,
        /// Folder holding the data set files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// The device description as a JSON object.
fn adapter_json(device: &Device) -> String {
    match device {
        Device::Reference => "{\"name\": \"cpu-reference\", \"backend\": \"none\", \"device_type\": \"Cpu\", \"driver\": \"\", \"driver_info\": \"\"}".into(),
        Device::Cpu => {
            let c = geopath::cpu::describe();
            format!(
                "{{\"name\": \"cpu\", \"backend\": \"native\", \"device_type\": \"Cpu\", \"driver\": {}, \"driver_info\": {}, \"threads\": {}}}",
                json_str(&c.processor),
                json_str(&c.simd),
                c.threads
            )
        }
        Device::Gpu(ctx) => {
            let i = &ctx.info;
            let l = &ctx.limits;
            let features: Vec<String> = ctx.adapter.features().iter_names().map(|(n, _)| json_str(n)).collect();
            format!(
                "{{\"name\": {}, \"backend\": {}, \"device_type\": {}, \"driver\": {}, \"driver_info\": {}, \"limits\": {{\"max_storage_buffer_binding_size\": {}, \"max_buffer_size\": {}, \"max_compute_workgroup_storage_size\": {}, \"max_compute_invocations_per_workgroup\": {}, \"max_compute_workgroups_per_dimension\": {}, \"max_storage_buffers_per_shader_stage\": {}}}, \"features\": [{}]}}",
                json_str(&i.name),
                json_str(&format!("{:?}", i.backend)),
                json_str(&format!("{:?}", i.device_type)),
                json_str(&i.driver),
                json_str(&i.driver_info),
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.max_compute_workgroup_storage_size,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroups_per_dimension,
                l.max_storage_buffers_per_shader_stage,
                features.join(", ")
            )
        }
    }
}

/// Every device this machine offers, one `(--device value, description)` per line.
fn available_devices() -> Vec<(String, String)> {
    let c = geopath::cpu::describe();
    let mut rows = vec![
        ("cpu".to_string(), format!("native CPU backend: {}, {} threads, {}", c.processor, c.threads, c.simd)),
        ("reference".to_string(), "plain-Rust reference loops (the tests' oracle; slow)".to_string()),
    ];
    for a in geopath::gpu::adapters() {
        let i = a.get_info();
        let kind = if geopath::gpu::is_software(i.device_type) {
            "software adapter: taken only with --device gpu"
        } else {
            "hardware GPU: taken by --device auto"
        };
        rows.push(("gpu".to_string(), format!("{} ({:?}, {:?}): {kind}", i.name, i.backend, i.device_type)));
    }
    rows
}

fn print_info(device: &Device, json: bool) {
    let available = available_devices();
    if json {
        let rows: Vec<String> = available
            .iter()
            .map(|(d, what)| format!("{{\"device\": {}, \"description\": {}}}", json_str(d), json_str(what)))
            .collect();
        println!("{{\"chosen\": {}, \"available\": [{}]}}", adapter_json(device), rows.join(", "));
        return;
    }
    println!("available devices (--device):");
    for (d, what) in &available {
        println!("  {d:<10} {what}");
    }
    println!("chosen: {}", device.name());
    if let Device::Gpu(ctx) = device {
        let i = &ctx.info;
        let l = &ctx.limits;
        println!("adapter:      {}", i.name);
        println!("backend:      {:?}", i.backend);
        println!("device type:  {:?} ({:?} kernel variants)", i.device_type, ctx.class);
        println!("driver:       {} {}", i.driver, i.driver_info);
        println!("limits:       storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations/workgroup, {} workgroups/dim, {} storage buffers/stage",
            l.max_storage_buffer_binding_size >> 20, l.max_buffer_size >> 20, l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup, l.max_compute_workgroups_per_dimension, l.max_storage_buffers_per_shader_stage);
        let f: Vec<&str> = ctx.adapter.features().iter_names().map(|(n, _)| n).collect();
        println!("features:     {}", f.join(" "));
    }
}

fn print_bench(device: &Device, results: &[BenchResult], json: bool) {
    if json {
        let rows: Vec<String> = results
            .iter()
            .map(|r| {
                format!(
                    "{{\"name\": {}, \"shape\": {}, \"ms\": {:.4}, \"gflops\": {}}}",
                    json_str(&r.name),
                    json_str(&r.shape),
                    r.ms,
                    r.gflops.map_or("null".into(), |g| format!("{g:.3}"))
                )
            })
            .collect();
        println!("{{\"adapter\": {}, \"results\": [{}]}}", adapter_json(device), rows.join(", "));
        return;
    }
    println!("device: {}", device.name());
    println!("{:<14} {:<28} {:>10} {:>10}", "name", "shape", "ms", "GFLOP/s");
    for r in results {
        println!(
            "{:<14} {:<28} {:>10.3} {:>10}",
            r.name,
            r.shape,
            r.ms,
            r.gflops.map_or("-".into(), |g| format!("{g:.2}"))
        );
    }
}

fn run(cli: Cli) -> geopath::Result<()> {
    geopath::cpu::start_pool(cli.threads)?;
    geopath::cpu::on_pool(move || run_command(cli))
}

/// Runs the command of `cli` (on a thread of the CPU backend's pool).
fn run_command(cli: Cli) -> geopath::Result<()> {
    if let Command::Report { dirs } = &cli.command {
        // Reads files only: no device to open.
        let runs = dirs
            .iter()
            .map(|d| geopath::experiments::compare::Compare::load(&d.join("compare.json")))
            .collect::<geopath::Result<Vec<_>>>()?;
        print!("{}", geopath::experiments::compare::gather(&runs));
        return Ok(());
    }
    let device = Device::open_with(cli.device, ContextOptions { subgroups: cli.subgroups })?;
    match cli.command {
        Command::Info { json } => print_info(&device, json),
        Command::Bench { names, json, model, batch } => {
            let results = bench::run(&device, &names, &bench::TrainStepConfig { model, batch })?;
            print_bench(&device, &results, json);
        }
        Command::Train { model, dataset, data_dir, epochs, batch, lr, optimizer, weight_decay, seed, out } => {
            let dataset: DatasetName = dataset.parse()?;
            let mut recipe = Recipe::default_for(&model, dataset);
            if let Some(e) = epochs {
                recipe.epochs = e;
            }
            if let Some(b) = batch {
                recipe.batch = b;
            }
            if let Some(l) = lr {
                recipe.lr = l;
            }
            if let Some(o) = optimizer {
                let wd = match recipe.optimizer {
                    OptimizerKind::Sgd { weight_decay, .. } | OptimizerKind::Adam { weight_decay, .. } => weight_decay,
                };
                recipe.optimizer = match o.as_str() {
                    "sgd" => OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: wd },
                    "adam" => {
                        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd, decoupled: true }
                    }
                    other => return Err(geopath::Error::Invalid(format!("unknown optimiser `{other}` (sgd, adam)"))),
                };
                if o == "adam" && lr.is_none() {
                    recipe.lr = 1e-3;
                }
            }
            if let Some(wd) = weight_decay {
                match &mut recipe.optimizer {
                    OptimizerKind::Sgd { weight_decay, .. } | OptimizerKind::Adam { weight_decay, .. } => {
                        *weight_decay = wd
                    }
                }
            }
            if recipe.epochs == 0 || recipe.batch == 0 || recipe.lr.is_nan() || recipe.lr <= 0.0 {
                return Err(geopath::Error::Invalid("epochs, batch and lr must be positive".into()));
            }
            println!(
                "training {model} on {dataset} ({} epochs, batch {}, lr {}) on {}",
                recipe.epochs,
                recipe.batch,
                recipe.lr,
                device.name()
            );
            let args = TrainArgs { model, dataset, data_dir, recipe, seed, out: out.clone(), progress: true };
            let s = train::train(&args, &device)?;
            println!(
                "test accuracy {:.2}% after {} epochs in {:.1} s; wrote {} and {}",
                100.0 * s.test_accuracy,
                s.epochs,
                s.train_seconds,
                out.join("model.ckpt").display(),
                out.join("summary.json").display()
            );
        }
        Command::Sparsify { checkpoint, sparsity, seeds, budget, batch, arms, dataset, data_dir, out, existing } => {
            use geopath::experiments::runner::Output;
            use geopath::experiments::sparsify::{self, SeedRun, SparsifyExperiment};
            let dataset: DatasetName = dataset.parse()?;
            let exp = SparsifyExperiment { sparsity, budget, batch, arms, ..Default::default() };
            let split = Split::of(&data::load(dataset, true, data_dir.as_deref())?)?;
            let test_set = data::load(dataset, false, data_dir.as_deref())?;
            // Every start network is checked (and trained where needed) before anything runs.
            let mut starts = Vec::new();
            for &seed in &seeds {
                let path = match &checkpoint {
                    Some(c) => c.clone(),
                    None => default_checkpoint(&device, dataset, data_dir.as_deref(), seed)?,
                };
                let (net, w0, ckpt) = train::load_checkpoint(&path, &device)?;
                SplitRecord::check(&format!("checkpoint {}", path.display()), ckpt.meta(SPLIT_KEY), &split)?;
                starts.push((seed, net, w0, path));
            }
            let runs: Vec<SeedRun> = starts
                .iter()
                .map(|(seed, net, w0, path)| SeedRun { seed: *seed, net, w0, source: path.display().to_string() })
                .collect();
            println!(
                "sparsify {} to {:.1}% zeros on {}: seeds {seeds:?}, {} forward passes of {batch} per configuration run",
                runs[0].net.spec.name,
                100.0 * sparsity,
                device.name(),
                budget
            );
            let output = Output { dir: &out, existing: existing.choice(), progress: true };
            let c = sparsify::run(&exp, &runs, &split, &test_set, &device, output)?;
            println!("{}", c.markdown());
            println!("(wrote {})", out.display());
        }
        Command::Report { .. } => unreachable!("handled before the device is opened"),
        Command::Connect { a, b, path, loss_weight, restore, steps, dataset, data_dir, out } => {
            let (net, wa, ckpt_a) = train::load_checkpoint(&a, &device)?;
            let (_, wb, ckpt_b) = train::load_checkpoint(&b, &device)?;
            if ckpt_a.spec != ckpt_b.spec || wa.shape() != wb.shape() {
                return Err(geopath::Error::Invalid(format!(
                    "{} and {} are different architectures ({} and {} parameters)",
                    a.display(),
                    b.display(),
                    wa.numel(),
                    wb.numel()
                )));
            }
            let name = match dataset {
                Some(d) => d,
                None => ckpt_a.meta("dataset").map(str::to_string).unwrap_or_else(|| "mnist".into()),
            };
            let dataset: DatasetName = name.parse()?;
            let split = Split::of(&data::load(dataset, true, data_dir.as_deref())?)?;
            for (path, ckpt) in [(&a, &ckpt_a), (&b, &ckpt_b)] {
                SplitRecord::check(&format!("checkpoint {}", path.display()), ckpt.meta(SPLIT_KEY), &split)?;
            }
            let train_set = split.fit;
            let test_set = data::load(dataset, false, data_dir.as_deref())?;
            let cfg = geodesic::connect::ConnectConfig {
                method: path.step_method()?,
                metric: path.metric.parse()?,
                eps: path.eps,
                beta: path.beta,
                loss_weight,
                restore: restore.parse()?,
                steps,
                batch: path.batch,
                cg_iter: path.cg_iter,
                log_every: path.log_every,
                seed: path.seed,
                resume: path.resume,
                ..Default::default()
            };
            println!("connecting {} and {} ({}) on {}", a.display(), b.display(), net.spec.name, device.name());
            let r = geodesic::connect::run(&net, &wa, &wb, &train_set, &test_set, &cfg, &device, &out, true)?;
            println!("{:<36} {:>10}", "", "test acc");
            println!("{:<36} {:>9.2}%", "A", 100.0 * r.accuracy_a);
            println!("{:<36} {:>9.2}%", "B", 100.0 * r.accuracy_b);
            println!("{:<36} {:>9.2}%", "linear interpolation, minimum", 100.0 * r.linear_min_accuracy);
            println!("{:<36} {:>9.2}%", format!("path ({} steps), minimum", r.steps), 100.0 * r.min_path_accuracy);
            println!(
                "(distance to B {:.3} of {:.3} at the end: {}; {:.0} s; wrote {})",
                r.final_distance,
                r.start_distance,
                r.ending,
                r.seconds,
                out.display()
            );
        }
        Command::Continual {
            tasks,
            scenario,
            buffer_per_class,
            num_tasks,
            model,
            path,
            epochs,
            first_epochs,
            train_batch,
            lrs,
            ewc_lambdas,
            replay_objective,
            augment_buffer,
            baselines,
            data_dir,
            out,
        } => {
            use geodesic::continual::{self, ContinualConfig, TaskSequence};
            if path.resume {
                return Err(geopath::Error::Invalid(
                    "continual has no --resume (connect resumes a path; sparsify resumes its configuration runs)"
                        .into(),
                ));
            }
            let sequence: TaskSequence = tasks.parse()?;
            let (task_list, classes) = continual::build_tasks(sequence, num_tasks, data_dir.as_deref())?;
            let spec = geopath::nn::spec::load(&model)?;
            let net = geopath::nn::network::Network::new(&spec, [1, 28, 28], classes, &device)?;
            let cfg = ContinualConfig {
                scenario: scenario.parse()?,
                buffer_per_class,
                first_epochs,
                first_lr: 0.05,
                epochs,
                batch: train_batch,
                lrs,
                ewc_lambdas,
                baselines: baselines
                    .iter()
                    .filter(|b| !b.is_empty())
                    .map(|b| b.parse())
                    .collect::<geopath::Result<_>>()?,
                fisher_examples: 500,
                step: geodesic::step::StepSettings {
                    method: path.step_method()?,
                    metric: path.metric.parse()?,
                    eps: path.eps,
                    beta: path.beta,
                    cg_iter: path.cg_iter,
                },
                metric_batch: path.batch,
                replay_objective,
                augment_buffer,
                log_every: path.log_every,
                eval_examples: 1000,
                seed: path.seed,
            };
            println!(
                "continual {} ({} scenario, {} stored inputs per class, {} epoch{} per task, {} steps of length {}) with {} on {}",
                sequence.as_str(),
                cfg.scenario.as_str(),
                buffer_per_class,
                cfg.epochs,
                if cfg.epochs == 1 { "" } else { "s" },
                cfg.step.method,
                cfg.step.eps,
                spec.name,
                device.name()
            );
            let list = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
            println!(
                "baselines: {}; learning rates from {{{}}}, EWC's λ from {{{}}}",
                cfg.baselines.iter().map(|b| b.key()).collect::<Vec<_>>().join(", "),
                list(&cfg.lrs),
                list(&cfg.ewc_lambdas)
            );
            let r = continual::run(&net, &task_list, &cfg, &device, &out, true)?;
            for m in &r.methods {
                println!(
                    "\n{} (average {:.2}%): after task i (rows), test accuracy on task j",
                    m.method.key(),
                    100.0 * m.average_accuracy
                );
                for (i, row) in m.matrix.iter().enumerate() {
                    let cells: Vec<String> = row.iter().map(|v| format!("{:>7.2}", 100.0 * v)).collect();
                    println!("  {:>2}: {}", i + 1, cells.join(" "));
                }
            }
            println!("\n{:<10} {:>10}", "method", "average");
            for m in &r.methods {
                println!("{:<10} {:>9.2}%", m.method.key(), 100.0 * m.average_accuracy);
            }
            println!("({:.0} s; wrote {})", r.seconds, out.display());
        }
        Command::Eval { checkpoint, dataset, data_dir, json } => {
            let (net, params, ckpt) = train::load_checkpoint(&checkpoint, &device)?;
            let name = match dataset {
                Some(d) => d,
                None => {
                    ckpt.metadata.iter().find(|(k, _)| k == "dataset").map(|(_, v)| v.clone()).ok_or_else(|| {
                        geopath::Error::Invalid(format!(
                            "{}: no data set recorded; pass --dataset",
                            checkpoint.display()
                        ))
                    })?
                }
            };
            let dataset: DatasetName = name.parse()?;
            let test = data::load(dataset, false, data_dir.as_deref())?;
            if [test.channels, test.height, test.width] != net.input || test.classes != net.classes {
                return Err(geopath::Error::Invalid(format!(
                    "{} was trained on inputs {:?} with {} classes; {dataset} has {:?} and {}",
                    checkpoint.display(),
                    net.input,
                    net.classes,
                    [test.channels, test.height, test.width],
                    test.classes
                )));
            }
            let acc = train::evaluate(&net, &params, &test, test.len(), &device)?;
            if json {
                println!("{{\"checkpoint\": {}, \"model\": {}, \"dataset\": {}, \"test_accuracy\": {acc:.6}, \"examples\": {}}}",
                    json_str(&checkpoint.display().to_string()), json_str(&net.spec.name), json_str(&dataset.to_string()), test.len());
            } else {
                println!(
                    "{}: {} on {dataset} test: accuracy {:.2}% ({} examples)",
                    checkpoint.display(),
                    net.spec.name,
                    100.0 * acc,
                    test.len()
                );
            }
        }
    }
    Ok(())
}

/// The default start network of `sparsify` for `seed`: LeNet-300-100 trained with the default
/// recipe and that seed (validation split held out), cached in runs/cache/ for the next run.
fn default_checkpoint(
    device: &Device,
    dataset: DatasetName,
    data_dir: Option<&std::path::Path>,
    seed: u64,
) -> geopath::Result<PathBuf> {
    // (`-heldout`: trained with the validation split held out; earlier caches were not.)
    let dir = PathBuf::from(format!("runs/cache/lenet-300-100-{dataset}-heldout-seed{seed}"));
    let ckpt = dir.join("model.ckpt");
    if ckpt.is_file() {
        println!("using the cached starting network {}", ckpt.display());
        return Ok(ckpt);
    }
    println!(
        "no --checkpoint: training lenet-300-100 on {dataset} with seed {seed} first (cached in {})",
        dir.display()
    );
    let args = TrainArgs {
        model: "lenet-300-100".into(),
        dataset,
        data_dir: data_dir.map(|p| p.to_path_buf()),
        recipe: Recipe::default_for("lenet-300-100", dataset),
        seed,
        out: dir,
        progress: true,
    };
    let s = train::train(&args, device)?;
    println!("starting network: test accuracy {:.2}%", 100.0 * s.test_accuracy);
    Ok(ckpt)
}

/// The command line with the path options' defaults of each path command: `connect` takes
/// steps of length 0.1; `continual` penalty steps (λ 30, length 0.1 annealed over each task, or
/// the task sequence's own [`TaskSequence::defaults`] of these, `--epochs` and
/// `--ewc-lambdas`). Options given on the command line always win.
///
/// [`TaskSequence::defaults`]: geodesic::continual::TaskSequence::defaults
fn parse_cli() -> Cli {
    let command = Cli::command()
        .mut_subcommand("continual", |c| {
            c.mut_arg("method", |a| a.default_value("penalty"))
                .mut_arg("lambda", |a| a.default_value("30"))
                .mut_arg("eps", |a| a.default_value("0.1"))
        })
        .mut_subcommand("connect", |c| c.mut_arg("eps", |a| a.default_value("0.1")));
    let matches = command.get_matches();
    if let Some((name @ ("connect" | "continual"), sub)) = matches.subcommand() {
        if let Err(why) = check_step_options(sub) {
            eprintln!("error: {name}: {why}");
            std::process::exit(2);
        }
    }
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Some(("continual", sub)), Command::Continual { tasks, epochs, path, ewc_lambdas, .. }) =
        (matches.subcommand(), &mut cli.command)
    {
        // An unknown sequence is reported when the command runs.
        if let Ok(sequence) = tasks.parse::<geodesic::continual::TaskSequence>() {
            let d = sequence.defaults();
            let left_out = |id: &str| sub.value_source(id) == Some(clap::parser::ValueSource::DefaultValue);
            if left_out("epochs") {
                *epochs = d.epochs;
            }
            if left_out("lambda") {
                path.lambda = d.lambda;
            }
            if left_out("eps") {
                path.eps = d.eps;
            }
            if left_out("ewc_lambdas") {
                *ewc_lambdas = d.ewc_lambdas.to_vec();
            }
        }
    }
    cli
}

/// Refuses step options given on the command line that the chosen step rule does not use:
/// `--metric`, `--beta` and `--cg-iter` with the penalty step (whose distance term is the
/// Bhattacharyya distance to the start network's outputs), `--lambda` with the trust-region
/// rules.
fn check_step_options(sub: &clap::ArgMatches) -> Result<(), String> {
    let method = sub.get_one::<String>("method").map_or("", String::as_str);
    let unused: &[&str] = if method == "penalty" { &["metric", "beta", "cg_iter"] } else { &["lambda"] };
    for id in unused {
        if sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            return Err(format!(
                "--{} has no effect with --method {method}; leave it out (the summary records the options the step uses)",
                id.replace('_', "-")
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(parse_cli()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
