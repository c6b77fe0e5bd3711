//! The `geopath` command line.

use clap::{Parser, Subcommand};
use geopath::bench::{self, BenchResult};
use geopath::data::split::SPLIT_KEY;
use geopath::data::{self, DatasetName, Split, SplitRecord};
use geopath::dtype::Precision;
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
    /// Check the chosen device against the native CPU backend (matrix products; LeNet-300-100
    /// end to end; VGG11-BN's logits and JVP, then each of its layers' ops); fails when a case
    /// is off.
    Selftest {
        /// Print one JSON object {"adapter": {...}, "tolerance": T, "cases": [...], "pass": B}.
        #[arg(long)]
        json: bool,
    },
    /// Measure kernel and autodiff throughput (all benchmarks but the large ones, and the f16
    /// ones off an f16 GPU, when no NAME is given).
    Bench {
        /// Benchmarks to run: matmul, matmul-512, matmul-256, matmul-1024-f16 (operands in f16 storage, GPUs with SHADER_F16), matmul-4096, matmul-4096-tn, matmul-4096-nt, matmul-4096-f16, matmul-4096-tn-f16, matmul-4096-nt-f16, conv-layers (every conv layer of --model at --batch: forward, data and weight gradients, and the forward on f16 operands on GPUs with SHADER_F16), mlp-forward, mlp-jvp, mlp-grad, mlp-hvp, mlp-gn, train-step, fip-step, fip-penalty-step.
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
        /// Model: a name from models/ (lenet-300-100, mlp-2x400, vgg11, vgg11-bn, vgg16, vgg16-bn) or a spec file, optionally at a width multiplier (`vgg11-bn@0.25`).
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
        /// --model trained per seed on --dataset with its default recipe (cached in runs/cache).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Model of the start networks trained here when no --checkpoint is given (e.g.
        /// vgg11-bn@0.25 on cifar10).
        #[arg(long, conflicts_with = "checkpoint", default_value = "lenet-300-100")]
        model: String,
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
        /// Factor on the learning rate of every configuration of every arm (default: 0.1 on
        /// CIFAR, where every arm picked the lowest rate of the unscaled grids on the
        /// validation split; 1 otherwise).
        #[arg(long)]
        lr_scale: Option<f64>,
        /// Data set of the network.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// Folder holding the data set files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "runs/sparsify")]
        out: PathBuf,
        /// Configurations per arm: the first N of each arm's search space (default: all), e.g.
        /// for a quick pilot; compare.json records how many each arm tried.
        #[arg(long)]
        configurations: Option<usize>,
        #[command(flatten)]
        existing: ExistingArgs,
    },
    /// Gather finished comparisons (DIR/compare.json) into one Markdown table.
    Report {
        /// Run folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Compare paths between two optima like for like: the geodesic path, linear
    /// interpolation, and Garipov et al.'s trained Bezier curve and polygonal chain, from the
    /// same pair (A, B) per seed, the trained arms at the same cost, each arm's configuration
    /// picked on the validation split by the lowest accuracy along its curve; writes
    /// OUT/compare.json, compare.md, compare.svg, curves.csv (test accuracy at every point) and
    /// the picked curves' networks.
    Connect {
        /// Optimum A for every seed (trained with the validation split held out); default:
        /// --model trained on --dataset with seed 2S for seed S (cached in runs/cache).
        #[arg(long, requires = "b")]
        a: Option<PathBuf>,
        /// Optimum B for every seed; default: --model trained with seed 2S + 1.
        #[arg(long, requires = "a")]
        b: Option<PathBuf>,
        /// Model of the optima trained here when --a/--b are not given (e.g. vgg16@0.25 on
        /// cifar10).
        #[arg(long, conflicts_with = "a", default_value = "lenet-300-100")]
        model: String,
        /// Seeds (comma-separated): batches, and the pair (A, B) when trained here.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        seeds: Vec<u64>,
        /// Cost of every configuration run of a trained arm, in forward passes of one batch.
        #[arg(long, default_value_t = 20_000.0)]
        budget: f64,
        /// Examples per step of every arm, and per cost unit.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Evaluation points along every curve, both ends included.
        #[arg(long, default_value_t = 21)]
        points: usize,
        /// Arms (comma-separated): geodesic, linear, bezier, polychain.
        #[arg(long, value_delimiter = ',', default_value = "geodesic,linear,bezier,polychain")]
        arms: Vec<String>,
        /// Data set of the networks (default: the one A was trained on, or mnist).
        #[arg(long)]
        dataset: Option<String>,
        /// Folder holding the data set files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "runs/connect")]
        out: PathBuf,
        /// Configurations per arm: the first N of each arm's search space (default: all), e.g.
        /// for a quick pilot; compare.json records how many each arm tried.
        #[arg(long)]
        configurations: Option<usize>,
        #[command(flatten)]
        existing: ExistingArgs,
    },
    /// Compare continual-learning methods like for like: the geodesic arm beside fine-tuning,
    /// EWC, experience replay, DER++ and joint training, with the same buffer and the same cost
    /// per task, each arm's configuration picked on validation images held out of every task;
    /// writes OUT/compare.json, compare.md (with the accuracy matrices) and compare.svg (with
    /// several scenarios: compare-SCENARIO.json, .md and .svg each).
    Continual {
        /// Task sequence: split-mnist, permuted-mnist, mnist-fashion, split-cifar10 (five tasks of two classes) or split-cifar100 (five tasks of twenty).
        #[arg(long, default_value = "split-mnist")]
        tasks: String,
        /// Scenarios (comma-separated): task (the task is known at test time) or class (one
        /// prediction over the whole head); several are measured on the same configuration runs,
        /// each with its own picks and report.
        #[arg(long, value_delimiter = ',', default_value = "class")]
        scenario: Vec<String>,
        /// Stored inputs per class of every finished task (every arm's buffer); several sizes
        /// (comma-separated) make one report each, the arms that do not read the buffer
        /// (fine-tune, EWC, joint) running once for all of them.
        #[arg(long, value_delimiter = ',', default_value = "50")]
        buffer_per_class: Vec<usize>,
        /// Number of tasks of permuted MNIST (the plain images, then permutations).
        #[arg(long, default_value_t = 5)]
        num_tasks: usize,
        /// Model: a name from models/ or a spec file.
        #[arg(long, default_value = "lenet-300-100")]
        model: String,
        /// Seeds (comma-separated): initialisation, first task, buffers and batches.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        seeds: Vec<u64>,
        /// Cost of each task after the first, per arm and configuration, in forward passes of
        /// one batch.
        #[arg(long, default_value_t = 2000.0)]
        budget: f64,
        /// Examples per batch (new-task and buffer batches), and per cost unit.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Epochs of the first task (learned once per seed, shared by every arm).
        #[arg(long, default_value_t = 5)]
        first_epochs: usize,
        /// Arms (comma-separated): geodesic, fine-tune, ewc, replay, der++, joint.
        #[arg(long, value_delimiter = ',', default_value = "geodesic,fine-tune,ewc,replay,der++,joint")]
        arms: Vec<String>,
        /// Folder holding the data set files (Fashion-MNIST for mnist-fashion, CIFAR for split-cifar10/100).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "runs/continual")]
        out: PathBuf,
        /// Configurations per arm: the first N of each arm's search space (default: all), e.g.
        /// for a quick pilot; compare.json records how many each arm tried.
        #[arg(long)]
        configurations: Option<usize>,
        #[command(flatten)]
        existing: ExistingArgs,
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
        /// Storage precision: f32, or f16 (convolution and dense weights and their inputs in
        /// f16, f32 accumulation; GPU adapters with SHADER_F16).
        #[arg(long, default_value = "f32")]
        precision: String,
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
        println!("{}", bench::report::json(&adapter_json(device), device, results));
    } else {
        print!("{}", bench::report::table(device, results));
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
        let mut runs = Vec::new();
        for d in dirs {
            for path in geopath::experiments::compare::reports_in(d)? {
                runs.push(geopath::experiments::compare::Compare::load(&path)?);
            }
        }
        print!("{}", geopath::experiments::compare::gather(&runs));
        return Ok(());
    }
    let device = Device::open_with(cli.device, ContextOptions { subgroups: cli.subgroups, class: None })?;
    match cli.command {
        Command::Info { json } => print_info(&device, json),
        Command::Selftest { json } => {
            let cases = geopath::selftest::run(&device)?;
            let pass = cases.iter().all(|c| c.pass);
            if json {
                let cases = serde_json::to_string(&cases).map_err(|e| geopath::Error::Invalid(e.to_string()))?;
                println!(
                    "{{\"adapter\": {}, \"tolerance\": {}, \"cases\": {cases}, \"pass\": {pass}}}",
                    adapter_json(&device),
                    geopath::selftest::TOLERANCE
                );
            } else {
                println!("device: {} against the native CPU backend", device.name());
                for c in &cases {
                    let verdict = if c.pass { "ok" } else { "FAIL" };
                    println!("{verdict:>4}  {:.2e}  {}", c.relative_error, c.name);
                }
            }
            if !pass {
                return Err(geopath::Error::Invalid(format!(
                    "selftest: {} of {} cases beyond relative error {}",
                    cases.iter().filter(|c| !c.pass).count(),
                    cases.len(),
                    geopath::selftest::TOLERANCE
                )));
            }
        }
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
        Command::Sparsify {
            checkpoint,
            model,
            sparsity,
            seeds,
            budget,
            batch,
            arms,
            lr_scale,
            dataset,
            data_dir,
            out,
            configurations,
            existing,
        } => {
            use geopath::experiments::runner::Output;
            use geopath::experiments::sparsify::{self, SeedRun, SparsifyExperiment};
            let dataset: DatasetName = dataset.parse()?;
            let lr_scale = lr_scale.unwrap_or(match dataset {
                DatasetName::Cifar10 | DatasetName::Cifar100 => 0.1,
                _ => 1.0,
            });
            let mut exp = SparsifyExperiment { sparsity, budget, batch, arms, lr_scale, ..Default::default() };
            exp.configurations = configurations.unwrap_or(exp.configurations);
            let split = Split::of(&data::load(dataset, true, data_dir.as_deref())?)?;
            let test_set = data::load(dataset, false, data_dir.as_deref())?;
            // Every start network is checked (and trained where needed) before anything runs.
            let mut starts = Vec::new();
            for &seed in &seeds {
                let path = match &checkpoint {
                    Some(c) => c.clone(),
                    None => default_checkpoint(&device, &model, dataset, data_dir.as_deref(), seed)?,
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
                "sparsify {} to {:.1}% zeros on {}: seeds {seeds:?}, {} forward passes of {batch} per configuration run, learning rates × {lr_scale}",
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
        Command::Connect {
            a,
            b,
            model,
            seeds,
            budget,
            batch,
            points,
            arms,
            dataset,
            data_dir,
            out,
            configurations,
            existing,
        } => {
            use geopath::experiments::connect::{self, ConnectExperiment, PairRun};
            use geopath::experiments::runner::Output;
            let dataset: DatasetName = match (dataset, &a) {
                (Some(d), _) => d.parse()?,
                (None, Some(a)) => {
                    geopath::checkpoint::Checkpoint::load(a)?.meta("dataset").unwrap_or("mnist").parse()?
                }
                (None, None) => DatasetName::Mnist,
            };
            let mut exp = ConnectExperiment { budget, batch, points, arms, ..Default::default() };
            exp.configurations = configurations.unwrap_or(exp.configurations);
            let split = Split::of(&data::load(dataset, true, data_dir.as_deref())?)?;
            let test_set = data::load(dataset, false, data_dir.as_deref())?;
            // Every pair is checked (and trained where needed) before anything runs.
            let mut nets = Vec::new();
            for &seed in &seeds {
                let (pa, pb) = match (&a, &b) {
                    (Some(a), Some(b)) => (a.clone(), b.clone()),
                    _ => (
                        default_checkpoint(&device, &model, dataset, data_dir.as_deref(), 2 * seed)?,
                        default_checkpoint(&device, &model, dataset, data_dir.as_deref(), 2 * seed + 1)?,
                    ),
                };
                let load = |path: &PathBuf| -> geopath::Result<_> {
                    let (net, w, ckpt) = train::load_checkpoint(path, &device)?;
                    SplitRecord::check(&format!("checkpoint {}", path.display()), ckpt.meta(SPLIT_KEY), &split)?;
                    Ok((net, w))
                };
                let source = format!("{} & {}", pa.display(), pb.display());
                nets.push((seed, load(&pa)?, load(&pb)?, source));
            }
            let pairs: Vec<PairRun> = nets
                .iter()
                .map(|(seed, (net_a, wa), (net_b, wb), source)| PairRun {
                    seed: *seed,
                    net_a,
                    wa,
                    net_b,
                    wb,
                    source: source.clone(),
                })
                .collect();
            println!(
                "connect pairs of {} on {}: seeds {seeds:?}, {budget} forward passes of {batch} per configuration run",
                pairs[0].net_a.spec.name,
                device.name()
            );
            let output = Output { dir: &out, existing: existing.choice(), progress: true };
            let c = connect::run(&exp, &pairs, &split, &test_set, &device, output)?;
            println!("{}", c.markdown());
            println!("(wrote {})", out.display());
        }
        Command::Continual {
            tasks,
            scenario,
            buffer_per_class,
            num_tasks,
            model,
            seeds,
            budget,
            batch,
            first_epochs,
            arms,
            data_dir,
            out,
            configurations,
            existing,
        } => {
            use geopath::experiments::continual::{self, ContinualExperiment, TaskSequence};
            use geopath::experiments::runner::Output;
            let sequence: TaskSequence = tasks.parse()?;
            let exp = ContinualExperiment {
                sequence,
                scenarios: scenario.iter().map(|s| s.parse()).collect::<geopath::Result<_>>()?,
                buffer_per_class: buffer_per_class.clone(),
                budget,
                batch,
                first_epochs,
                arms,
                ..Default::default()
            };
            let exp = ContinualExperiment { configurations: configurations.unwrap_or(exp.configurations), ..exp };
            let (task_list, classes) = continual::build_tasks(sequence, num_tasks, data_dir.as_deref())?;
            let spec = geopath::nn::spec::load(&model)?;
            let first = &task_list[0].train;
            let net = geopath::nn::network::Network::new(
                &spec,
                [first.channels, first.height, first.width],
                classes,
                &device,
            )?;
            println!(
                "continual {} ({}-incremental, {} stored inputs per class, {budget} forward passes of {batch} per task) with {} on {}: seeds {seeds:?}",
                sequence.as_str(),
                scenario.join(" and "),
                buffer_per_class.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" or "),
                spec.name,
                device.name()
            );
            let output = Output { dir: &out, existing: existing.choice(), progress: true };
            for c in continual::run(&exp, &net, &task_list, &seeds, &device, output)? {
                println!("{}", c.markdown());
            }
            println!("(wrote {})", out.display());
        }
        Command::Eval { checkpoint, dataset, data_dir, precision, json } => {
            let precision: Precision = precision.parse()?;
            if precision == Precision::F16 && !geopath::ops::cast::holds_f16(&device) {
                return Err(geopath::Error::Invalid(format!(
                    "--precision f16 needs a GPU adapter with SHADER_F16 (`geopath info` lists the features); the {} device holds f32 only",
                    device.name()
                )));
            }
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
            let acc = train::evaluate_at(&net, &params, &test, test.len(), precision, &device)?;
            if json {
                println!("{{\"checkpoint\": {}, \"model\": {}, \"dataset\": {}, \"precision\": \"{precision}\", \"test_accuracy\": {acc:.6}, \"examples\": {}}}",
                    json_str(&checkpoint.display().to_string()), json_str(&net.spec.name), json_str(&dataset.to_string()), test.len());
            } else {
                println!(
                    "{}: {} on {dataset} test ({precision}): accuracy {:.2}% ({} examples)",
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

/// The start network `model` trained on `dataset` with `seed` and its default recipe, the
/// validation split held out: cached in runs/cache, trained there first when missing.
fn default_checkpoint(
    device: &Device,
    model: &str,
    dataset: DatasetName,
    data_dir: Option<&std::path::Path>,
    seed: u64,
) -> geopath::Result<PathBuf> {
    // The spec is checked before anything is trained.
    geopath::nn::spec::load(model)?;
    // (`-heldout`: trained with the validation split held out; earlier caches were not.)
    let name = model.replace(['/', '\\'], "_");
    let dir = PathBuf::from(format!("runs/cache/{name}-{dataset}-heldout-seed{seed}"));
    let ckpt = dir.join("model.ckpt");
    if ckpt.is_file() {
        println!("using the cached starting network {}", ckpt.display());
        return Ok(ckpt);
    }
    let recipe = Recipe::default_for(model, dataset);
    println!(
        "no start network given: training {model} on {dataset} with seed {seed} first ({} epochs; cached in {})",
        recipe.epochs,
        dir.display()
    );
    let args = TrainArgs {
        model: model.to_string(),
        dataset,
        data_dir: data_dir.map(|p| p.to_path_buf()),
        recipe,
        seed,
        out: dir,
        progress: true,
    };
    let s = train::train(&args, device)?;
    println!("starting network: test accuracy {:.2}%", 100.0 * s.test_accuracy);
    Ok(ckpt)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
