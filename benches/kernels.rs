//! Criterion benchmarks of the engine's kernels on the default wgpu adapter, reporting
//! throughput in FLOP/s (criterion's "elements" are floating-point operations here).
//! Run with `cargo bench`; `geopath bench --json` reports the same hot paths as one JSON object.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geopath::autodiff::Model;
use geopath::nn::mlp::Mlp;
use geopath::ops::conv::{conv2d, Conv2dGeometry};
use geopath::ops::matmul::matmul;
use geopath::{Device, DeviceChoice, Tensor};
use std::time::Duration;

fn device() -> Device {
    Device::open(DeviceChoice::Auto).expect("device")
}

fn filled(dev: &Device, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    Tensor::from_vec(dev, shape, v).unwrap()
}

fn bench_matmul(c: &mut Criterion) {
    let dev = device();
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for n in [256usize, 512, 1024] {
        let a = filled(&dev, &[n, n], 1);
        let b = filled(&dev, &[n, n], 2);
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{n}x{n}x{n}")), &n, |bch, _| {
            bch.iter(|| {
                let c = matmul(&a, &b).unwrap();
                dev.sync().unwrap();
                c
            })
        });
    }
    g.finish();
}

fn bench_conv(c: &mut Criterion) {
    let dev = device();
    let mut g = c.benchmark_group("conv2d_3x3");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    // VGG layer shapes at batch 8: (channels in, channels out, spatial size).
    for (ci, co, hw) in [(64usize, 64usize, 32usize), (128, 128, 16), (256, 256, 8), (512, 512, 4)] {
        let x = filled(&dev, &[8, ci, hw, hw], 3);
        let w = filled(&dev, &[co, ci, 3, 3], 4);
        let geom = Conv2dGeometry { stride: 1, pad: 1 };
        g.throughput(Throughput::Elements(2 * (8 * co * hw * hw * ci * 9) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("8x{ci}x{hw}x{hw}->{co}")), &ci, |bch, _| {
            bch.iter(|| {
                let y = conv2d(&x, &w, None, geom, true).unwrap();
                dev.sync().unwrap();
                y
            })
        });
    }
    g.finish();
}

fn bench_autodiff(c: &mut Criterion) {
    let dev = device();
    let mut g = c.benchmark_group("autodiff");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let batch = 200;
    // JVP of a Linear+ReLU stack (LeNet-300-100 widths) and HVP of a small MLP.
    for (name, sizes) in [("jvp_784-300-100-10", vec![784usize, 300, 100, 10]), ("hvp_256-128-10", vec![256, 128, 10])]
    {
        let mlp = Mlp::new(&sizes);
        let w = mlp.init(&dev, 1).unwrap();
        let v = filled(&dev, &[mlp.num_params()], 5);
        let x = filled(&dev, &[batch, sizes[0]], 6);
        let labels = Tensor::from_u32(&dev, &[batch], &(0..batch as u32).map(|i| i % 10).collect::<Vec<_>>()).unwrap();
        let fwd = 2 * batch * mlp.num_weights();
        if name.starts_with("jvp") {
            g.throughput(Throughput::Elements(3 * fwd as u64));
            g.bench_function(name, |bch| {
                bch.iter(|| {
                    let r = mlp.jvp(&w, &v, &x).unwrap();
                    dev.sync().unwrap();
                    r
                })
            });
        } else {
            g.throughput(Throughput::Elements(9 * fwd as u64));
            g.bench_function(name, |bch| {
                bch.iter(|| {
                    let r = mlp.loss_hvp(&w, &v, &x, &labels).unwrap();
                    dev.sync().unwrap();
                    r
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_matmul, bench_conv, bench_autodiff);
criterion_main!(benches);
