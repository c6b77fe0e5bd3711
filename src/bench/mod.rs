//! `geopath bench`: throughput of the engine's hot paths, as a table or one JSON object.
//!
//! Each benchmark records its work once to warm pipelines and the buffer pool, then times
//! repeated runs, each ended by a device sync, and reports the median wall time and, on a wgpu
//! device with timestamp queries, the median GPU time of the same runs.

mod layers;
pub mod report;

pub use layers::{conv_layers, ConvLayer};

use crate::autodiff::Model;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::mlp::Mlp;
use crate::ops::matmul::matmul;
use crate::tensor::Tensor;
use std::time::Instant;

/// One measured benchmark.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Benchmark name (e.g. `matmul`).
    pub name: String,
    /// Problem shape, e.g. `1024x1024x1024`.
    pub shape: String,
    /// Median milliseconds per run (wall time, device sync included).
    pub ms: f64,
    /// Median GPU milliseconds per run: the compute passes' own time from timestamp queries
    /// (`None` off a wgpu device, or where the adapter has no timestamps).
    pub gpu_ms: Option<f64>,
    /// GFLOP/s at that median: the FLOPs the engine's cost counter counts for one run
    /// (as the kernels execute them, see [`crate::cost`]) per second.
    pub gflops: Option<f64>,
}

/// Names `geopath bench` knows, in the order they run (all but the large ones, [`LARGE`], when
/// none are named, and but the f16 ones where the device holds no f16). A name ending in `-f16`
/// multiplies operands in f16 storage (converted before the timing), accumulating in f32.
pub const NAMES: &[&str] = &[
    "matmul",
    "matmul-512",
    "matmul-256",
    "matmul-1024-f16",
    "matmul-4096",
    "matmul-4096-tn",
    "matmul-4096-nt",
    "matmul-4096-f16",
    "matmul-4096-tn-f16",
    "matmul-4096-nt-f16",
    "conv-layers",
    "mlp-forward",
    "mlp-jvp",
    "mlp-grad",
    "mlp-hvp",
    "mlp-gn",
    "train-step",
    "fip-step",
    "fip-penalty-step",
];

/// The benchmarks that run only when named: the GPU check's (minutes on a CPU).
pub const LARGE: &[&str] = &[
    "matmul-4096",
    "matmul-4096-tn",
    "matmul-4096-nt",
    "matmul-4096-f16",
    "matmul-4096-tn-f16",
    "matmul-4096-nt-f16",
    "conv-layers",
];

/// Model and batch of the `train-step` benchmark (and of `conv-layers`).
#[derive(Debug, Clone)]
pub struct TrainStepConfig {
    /// Model name or spec path.
    pub model: String,
    /// Batch size.
    pub batch: usize,
}

/// One full training step (forward, backward, SGD-momentum update) of `cfg.model` on random
/// inputs: MNIST-shaped for models without convolutions, CIFAR-shaped otherwise.
fn bench_train_step(device: &Device, cfg: &TrainStepConfig) -> Result<BenchResult> {
    let spec = crate::nn::spec::load(&cfg.model)?;
    let conv = spec.layers.iter().any(|l| matches!(l, crate::nn::spec::LayerSpec::Conv { .. }));
    let input = if conv { [3, 32, 32] } else { [1, 28, 28] };
    let net = crate::nn::network::Network::new(&spec, input, 10, device)?;
    let mut params = net.init_params(1)?;
    let b = cfg.batch;
    let x = seeded(device, &[b, input[0], input[1], input[2]], 2)?;
    let labels = Tensor::from_u32(device, &[b], &(0..b as u32).map(|i| i % 10).collect::<Vec<_>>())?;
    let kind = crate::optim::OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
    let mut opt = crate::optim::Optimizer::new(kind, crate::optim::LrSchedule::constant(0.01));
    net.set_train(true);
    let m = time_median(
        device,
        || {
            let (_, g) = crate::autodiff::loss_grad(&net, &params, &x, &labels)?;
            net.update_running_stats()?;
            params = opt.step(&params, &g)?;
            device.sync()
        },
        3,
        10,
        3.0,
    )?;
    Ok(result("train-step", format!("{} batch {b}", spec.name), m))
}

/// What [`time_median`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Median wall milliseconds of the timed runs.
    pub ms: f64,
    /// Median GPU milliseconds of the same runs, where the device times its passes.
    pub gpu_ms: Option<f64>,
    /// FLOPs of one run, as the cost counter counts them.
    pub flops: u64,
}

/// Times `f` (which must end with a device sync): `warmup` untimed runs (at least one, whose
/// FLOPs the cost counter measures), then the median of runs until `min_runs` and about
/// `budget_s` seconds are spent. On a wgpu device with timestamp queries each timed run is also
/// timed on the GPU (the timestamps are read back after the run's wall time is taken).
pub fn time_median<F: FnMut() -> Result<()>>(
    device: &Device,
    mut f: F,
    warmup: usize,
    min_runs: usize,
    budget_s: f64,
) -> Result<Measured> {
    let meter = crate::cost::Meter::start();
    f()?;
    let flops = meter.flops();
    for _ in 1..warmup {
        f()?;
    }
    let gpu = device.gpu().filter(|c| c.has_timestamps());
    let start = Instant::now();
    let mut times = Vec::new();
    let mut gpu_times = Vec::new();
    while times.len() < min_runs || (start.elapsed().as_secs_f64() < budget_s && times.len() < 200) {
        if let Some(ctx) = gpu {
            ctx.start_timing()?;
        }
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(ctx) = gpu {
            gpu_times.extend(ctx.stop_timing()?);
        }
    }
    let gpu_ms = (gpu.is_some() && gpu_times.len() == times.len()).then(|| median(&mut gpu_times));
    Ok(Measured { ms: median(&mut times), gpu_ms, flops })
}

/// The median of `v` (not empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The result `name` on `shape` of a measurement.
fn result(name: &str, shape: String, m: Measured) -> BenchResult {
    BenchResult { name: name.into(), shape, ms: m.ms, gpu_ms: m.gpu_ms, gflops: gflops(m.flops, m.ms) }
}

/// GFLOP/s of `flops` in `ms` milliseconds.
fn gflops(flops: u64, ms: f64) -> Option<f64> {
    Some(flops as f64 / ms / 1e6)
}

/// `n` seeded values in [-1, 1) (xorshift).
pub(crate) fn seeded_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor of `shape` on `device` holding [`seeded_values`].
fn seeded(device: &Device, shape: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::from_vec(device, shape, seeded_values(shape.iter().product(), seed))
}

/// `A B` at `n`³, in f16 storage when `dtype` says so.
fn bench_matmul(device: &Device, n: usize, dtype: DType, name: &str) -> Result<BenchResult> {
    let a = stored(seeded(device, &[n, n], 1)?, dtype)?;
    let b = stored(seeded(device, &[n, n], 2)?, dtype)?;
    let m = time_median(
        device,
        || {
            let c = matmul(&a, &b)?;
            device.sync()?;
            drop(c);
            Ok(())
        },
        2,
        5,
        2.0,
    )?;
    Ok(result(name, format!("{n}x{n}x{n}{}", suffix(dtype)), m))
}

/// `t` in `dtype` storage.
fn stored(t: Tensor, dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::F32 => Ok(t),
        DType::F16 => t.to_f16(),
    }
}

/// What a shape's description adds for operands in `dtype`.
fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "",
        DType::F16 => " f16",
    }
}

/// One path step on lenet-300-100 at batch 200 toward 95% sparsity: `fip-step` is a
/// trust-region step by Steihaug–Toint CG with 10 iterations (10 Fisher products), the
/// objective's gradient included; `fip-penalty-step` is the authors' penalty step.
fn bench_fip_step(device: &Device, name: &str) -> Result<BenchResult> {
    use crate::geodesic::path::{Objective, ToPruned};
    use crate::geodesic::{penalty_step, steihaug_cg, Metric, MetricKind};
    let spec = crate::nn::spec::load("lenet-300-100")?;
    let net = crate::nn::network::Network::new(&spec, [1, 28, 28], 10, device)?;
    let w = net.init_params(1)?;
    let w0 = crate::ops::elementwise::scale(1.01, &w)?;
    let x = seeded(device, &[MLP_BATCH, 1, 28, 28], 2)?;
    let labels = Tensor::from_u32(device, &[MLP_BATCH], &(0..MLP_BATCH as u32).map(|i| i % 10).collect::<Vec<_>>())?;
    let mut objective = ToPruned::new(0.95);
    let mut iterations = 0;
    let m = time_median(
        device,
        || {
            let (_, g) = objective.value_grad(&w)?;
            let report = if name == "fip-step" {
                // Damping 1 keeps the solve interior, so it runs all 10 iterations.
                let metric = Metric::new(&net, w.clone(), x.clone(), Some(labels.clone()), MetricKind::Fisher, 1.0)?;
                steihaug_cg(&|v: &Tensor| metric.apply(v), &g, 1e-3, 0.05, 10, 0.0)?
            } else {
                let z0 = crate::autodiff::forward(&net, &w0, &x)?;
                penalty_step(&net, &w, &z0, &x, &g, 0.1, 0.01)?
            };
            iterations = report.iterations;
            device.sync()
        },
        2,
        5,
        3.0,
    )?;
    let shape = if name == "fip-step" {
        format!("lenet-300-100 batch {MLP_BATCH}, {iterations} CG products")
    } else {
        format!("lenet-300-100 batch {MLP_BATCH}")
    };
    Ok(result(name, shape, m))
}

/// Runs the named benchmarks (when none are named, all of [`NAMES`] but the [`LARGE`] ones).
pub fn run(device: &Device, names: &[String], train_step: &TrainStepConfig) -> Result<Vec<BenchResult>> {
    let wanted: Vec<&str> = if names.is_empty() {
        let f16 = crate::ops::cast::holds_f16(device);
        NAMES.iter().copied().filter(|n| !LARGE.contains(n) && (f16 || !n.ends_with("-f16"))).collect()
    } else {
        names.iter().map(|s| s.as_str()).collect()
    };
    for w in &wanted {
        if !NAMES.contains(w) {
            return Err(Error::Invalid(format!("unknown benchmark `{w}`; known: {}", NAMES.join(", "))));
        }
    }
    let mut out = Vec::new();
    let mlp_needed = wanted.iter().any(|w| w.starts_with("mlp-"));
    let mlp = if mlp_needed { Some(MlpBench::new(device)?) } else { None };
    for w in wanted {
        let r = match w {
            "matmul" => bench_matmul(device, 1024, DType::F32, w)?,
            "matmul-512" => bench_matmul(device, 512, DType::F32, w)?,
            "matmul-256" => bench_matmul(device, 256, DType::F32, w)?,
            "matmul-1024-f16" => bench_matmul(device, 1024, DType::F16, w)?,
            "matmul-4096" => layers::matmul_large(device, "nn", DType::F32, w)?,
            "matmul-4096-tn" => layers::matmul_large(device, "tn", DType::F32, w)?,
            "matmul-4096-nt" => layers::matmul_large(device, "nt", DType::F32, w)?,
            "matmul-4096-f16" => layers::matmul_large(device, "nn", DType::F16, w)?,
            "matmul-4096-tn-f16" => layers::matmul_large(device, "tn", DType::F16, w)?,
            "matmul-4096-nt-f16" => layers::matmul_large(device, "nt", DType::F16, w)?,
            "conv-layers" => {
                out.extend(layers::conv_layer_benches(device, &train_step.model, train_step.batch)?);
                continue;
            }
            "train-step" => bench_train_step(device, train_step)?,
            "fip-step" | "fip-penalty-step" => bench_fip_step(device, w)?,
            other => mlp.as_ref().unwrap().run(device, other)?,
        };
        out.push(r);
    }
    Ok(out)
}

/// The LeNet-300-100 setting of the `mlp-*` benchmarks: batch 200 of 784 inputs.
struct MlpBench {
    mlp: Mlp,
    params: Tensor,
    tangent: Tensor,
    x: Tensor,
    labels: Tensor,
}

const MLP_BATCH: usize = 200;

impl MlpBench {
    fn new(device: &Device) -> Result<Self> {
        let mlp = Mlp::new(&[784, 300, 100, 10]);
        let params = mlp.init(device, 7)?;
        let tangent = seeded(device, &[mlp.num_params()], 8)?;
        let x = seeded(device, &[MLP_BATCH, 784], 9)?;
        let labels =
            Tensor::from_u32(device, &[MLP_BATCH], &(0..MLP_BATCH as u32).map(|i| i % 10).collect::<Vec<_>>())?;
        Ok(MlpBench { mlp, params, tangent, x, labels })
    }

    fn run(&self, device: &Device, name: &str) -> Result<BenchResult> {
        let m = &self.mlp;
        let mut f: Box<dyn FnMut() -> Result<()>> = match name {
            "mlp-forward" => Box::new(|| {
                let z = m.forward(&self.params, &self.x)?;
                device.sync()?;
                drop(z);
                Ok(())
            }),
            "mlp-jvp" => Box::new(|| {
                let z = m.jvp(&self.params, &self.tangent, &self.x)?;
                device.sync()?;
                drop(z);
                Ok(())
            }),
            "mlp-grad" => Box::new(|| {
                let g = m.loss_grad(&self.params, &self.x, &self.labels)?;
                device.sync()?;
                drop(g);
                Ok(())
            }),
            "mlp-hvp" => Box::new(|| {
                let h = m.loss_hvp(&self.params, &self.tangent, &self.x, &self.labels)?;
                device.sync()?;
                drop(h);
                Ok(())
            }),
            "mlp-gn" => Box::new(|| {
                let h = m.gauss_newton(&self.params, &self.tangent, &self.x)?;
                device.sync()?;
                drop(h);
                Ok(())
            }),
            _ => unreachable!(),
        };
        let m = time_median(device, &mut f, 3, 10, 2.0)?;
        Ok(result(name, format!("784-300-100-10 batch {MLP_BATCH}"), m))
    }
}
