//! Shared test helpers: the GPU device, seeded random data, tolerant comparisons, a toy data
//! set and network.
#![allow(dead_code)]

use geopath::data::Dataset;
use geopath::gpu::{AdapterClass, ContextOptions, GpuContext};
use geopath::nn::network::Network;
use geopath::optim::{LrSchedule, Optimizer, OptimizerKind};
use geopath::{Device, DeviceChoice, Tensor};
use std::sync::OnceLock;

/// The wgpu device, with `GEOPATH_REQUIRE_GPU=1` a missing adapter failing the test;
/// otherwise `None` (GPU tests skipped) with a note. Every wgpu device of the tests is created
/// after this one, and with every kernel under wgpu's runtime checks: this first sets
/// `GEOPATH_CHECKED_SHADERS=1` for the process (and the commands it spawns).
pub fn wgpu_device() -> Option<Device> {
    static DEV: OnceLock<Option<Device>> = OnceLock::new();
    DEV.get_or_init(|| {
        std::env::set_var(geopath::gpu::CHECKED_SHADERS_VAR, "1");
        open_wgpu_device()
    })
    .clone()
}

/// Opens the wgpu device of [`wgpu_device`].
fn open_wgpu_device() -> Option<Device> {
    match Device::open(DeviceChoice::Gpu) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("GEOPATH_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("GEOPATH_REQUIRE_GPU=1 but no wgpu adapter: {e}");
            }
            eprintln!("note: no wgpu adapter ({e}); GPU tests skipped");
            None
        }
    }
}

/// Whether `GEOPATH_TEST_DEVICE=cpu` asks to run the device tests on the native CPU backend.
fn testing_cpu_backend() -> bool {
    match std::env::var("GEOPATH_TEST_DEVICE").as_deref() {
        Ok("cpu") => true,
        Ok("gpu") | Err(_) => false,
        Ok(other) => panic!("GEOPATH_TEST_DEVICE={other}: expected cpu or gpu"),
    }
}

/// The device the device tests check against the reference: the wgpu adapter (default), or the
/// native CPU backend with `GEOPATH_TEST_DEVICE=cpu` (CI runs the suite both ways).
pub fn test_device() -> Option<Device> {
    if testing_cpu_backend() {
        Some(Device::Cpu)
    } else {
        wgpu_device()
    }
}

/// The devices the device tests of one op check: [`test_device`], and unless
/// `GEOPATH_TEST_DEVICE=cpu`, the device taking the hardware variants.
pub fn test_devices() -> Vec<Device> {
    let hardware = if testing_cpu_backend() { None } else { gpu_hardware_variants() };
    test_device().into_iter().chain(hardware).collect()
}

/// A second wgpu device on the same adapter with subgroup operations turned off, so that the
/// kernels' subgroup-free variants are checked too (`None` where [`wgpu_device`] is).
pub fn gpu_without_subgroups() -> Option<Device> {
    static DEV: OnceLock<Option<Device>> = OnceLock::new();
    DEV.get_or_init(|| {
        wgpu_device()?;
        let ctx =
            GpuContext::with_options(ContextOptions { subgroups: false, class: None }).expect("second wgpu device");
        assert!(!ctx.lane_sharing);
        Some(Device::Gpu(ctx))
    })
    .clone()
}

/// A wgpu device on the same adapter that takes the kernel variants of a hardware GPU, so that
/// they are checked on a software driver too (`None` where [`wgpu_device`] is, or where the
/// adapter is hardware already: [`wgpu_device`] covers it).
pub fn gpu_hardware_variants() -> Option<Device> {
    static DEV: OnceLock<Option<Device>> = OnceLock::new();
    DEV.get_or_init(|| {
        let Device::Gpu(native) = wgpu_device()? else { return None };
        if native.class == AdapterClass::Hardware {
            return None;
        }
        let options = ContextOptions { subgroups: true, class: Some(AdapterClass::Hardware) };
        let ctx = GpuContext::with_options(options).expect("wgpu device with hardware variants");
        assert!(ctx.class == AdapterClass::Hardware && !ctx.lane_sharing);
        Some(Device::Gpu(ctx))
    })
    .clone()
}

/// The devices to check kernels on against the reference: the native CPU backend, and unless
/// `GEOPATH_TEST_DEVICE=cpu`, the wgpu device, the one without subgroup operations and the one
/// taking the hardware variants.
pub fn devices() -> Vec<Device> {
    let gpus = if testing_cpu_backend() {
        Vec::new()
    } else {
        wgpu_device().into_iter().chain(gpu_without_subgroups()).chain(gpu_hardware_variants()).collect()
    };
    std::iter::once(Device::Cpu).chain(gpus).collect()
}

/// Deterministic xorshift generator for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Asserts |a - b| <= abs + rel * |b| elementwise, naming the first offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs() && g.is_finite() == w.is_finite(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// A tensor of random values on `dev` and its host copy.
pub fn rand_tensor(dev: &Device, rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let v = rng.vec(shape.iter().product());
    (Tensor::from_vec(dev, shape, v.clone()).unwrap(), v)
}

/// The small MLP of the generated-data tests (16 inputs, 24 hidden, `classes` outputs).
pub fn toy_mlp(dev: &Device, classes: usize) -> Network {
    let spec = geopath::nn::spec::parse("flatten\nlinear 24\nrelu\nlinear classes\n", "test", "toy-mlp").unwrap();
    Network::new(&spec, [1, 4, 4], classes, dev).unwrap()
}

/// Ten classes of 4x4 single-channel images: a bright pixel at the class's position plus noise.
pub fn toy_dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = rng.below(10);
        for p in 0..16 {
            images.push(if p == label { 2.0 } else { 0.0 } + 0.3 * rng.uniform());
        }
        labels.push(label as u32);
    }
    Dataset { images, labels, channels: 1, height: 4, width: 4, classes: 10, name: "toy".into() }
}

/// Trains the toy network from `seed` for a few steps.
pub fn toy_network(net: &Network, train: &Dataset, seed: u64, dev: &Device) -> Tensor {
    trained(net, train, seed, 150, 50, 0.1, dev)
}

/// `net` trained from initialisation `seed` by `steps` SGD steps (momentum 0.9, rate `lr`) on
/// consecutive batches of `batch` images of `train`, each step in training mode with its
/// BatchNorm statistics folded into the running statistics.
pub fn trained(net: &Network, train: &Dataset, seed: u64, steps: usize, batch: usize, lr: f32, dev: &Device) -> Tensor {
    let mut w = net.init_params(seed).unwrap();
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.9), LrSchedule::constant(lr));
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let idx: Vec<usize> = (0..batch).map(|i| (step * batch + i) % train.len()).collect();
        train.gather(&idx, &mut images, &mut labels);
        let x = Tensor::from_vec(dev, &[batch, train.channels, train.height, train.width], images.clone()).unwrap();
        let y = Tensor::from_u32(dev, &[batch], &labels).unwrap();
        let g = net.training_step(step as u64, || Ok(geopath::autodiff::loss_grad(net, &w, &x, &y)?.1)).unwrap();
        w = opt.step(&w, &g).unwrap();
    }
    w
}

/// `n` CIFAR-shaped images (3x32x32) of ten classes: class `c` brightens the 8x8 block `c` of a
/// 4x4 grid in channel `c % 3`, over uniform noise.
pub fn cifar_like(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.below(10);
        for ch in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let lit = ch == c % 3 && y / 8 == c / 4 && x / 8 == c % 4;
                    images.push(if lit { 1.5 } else { 0.0 } + 0.5 * rng.uniform());
                }
            }
        }
        labels.push(c as u32);
    }
    Dataset { images, labels, channels: 3, height: 32, width: 32, classes: 10, name: "cifar-like".into() }
}
