//! The wgpu runtime: limits checked before dispatch, device errors as `Result`s, buffer reuse,
//! batched recording with one readback.

mod common;
use common::*;
use geopath::gpu::KernelKey;
use geopath::kernels::ElementwiseParams;
use geopath::ops::{elementwise as ew, matmul};
use geopath::{Error, Tensor};

#[test]
fn tensor_over_the_binding_limit_is_an_error_before_any_dispatch() {
    let Some(dev) = wgpu_device() else { return };
    let ctx = dev.gpu().unwrap();
    let limit = ctx.max_binding_bytes();
    // [rows, 1] x [1, 1024] has an output of rows * 4 KiB: pick rows just over the limit.
    let rows = (limit / 4096 + 1) as usize;
    let a = Tensor::zeros(&dev, &[rows, 1]).unwrap();
    let b = Tensor::zeros(&dev, &[1, 1024]).unwrap();
    match matmul::matmul(&a, &b) {
        Err(Error::TooLarge { op, bytes, limit: l }) => {
            assert_eq!(op, "matmul");
            assert!(bytes > l && l == limit, "{bytes} vs {l}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let msg = matmul::matmul(&a, &b).unwrap_err().to_string();
    assert!(msg.contains("storage-binding limit"), "{msg}");
}

#[test]
fn device_errors_become_results_that_name_the_op() {
    let Some(dev) = wgpu_device() else { return };
    let ctx = dev.gpu().unwrap();
    let out = ctx.alloc("test", 1024).unwrap();
    let err = ctx
        .dispatch(
            "my_op",
            &KernelKey::new("elementwise", "no_such_entry"),
            &ElementwiseParams::default(),
            &[],
            &[out.view()],
            [1, 1, 1],
        )
        .unwrap_err();
    match &err {
        Error::Device { op, .. } => assert!(op.contains("no_such_entry"), "{err}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    // The device stays usable afterwards.
    let x = Tensor::from_vec(&dev, &[3], vec![1.0, -2.0, 3.0]).unwrap();
    assert_eq!(ew::relu(&x).unwrap().to_vec().unwrap(), vec![1.0, 0.0, 3.0]);
}

#[test]
fn pooled_buffers_are_reused_across_steps() {
    if wgpu_device().is_none() {
        return;
    }
    // A context of its own: tests running in parallel share `wgpu_device()`'s pool.
    let dev = geopath::Device::open(geopath::DeviceChoice::Gpu).unwrap();
    let ctx = dev.gpu().unwrap();
    let x = Tensor::from_vec(&dev, &[1000], vec![1.0; 1000]).unwrap();
    let step = || {
        let mut y = x.clone();
        for _ in 0..10 {
            y = ew::axpby(0.5, &y, 0.5, &x).unwrap();
        }
        y.to_vec().unwrap()
    };
    step();
    let held = ctx.pool_bytes();
    for _ in 0..5 {
        assert_eq!(step(), vec![1.0; 1000]);
    }
    assert_eq!(ctx.pool_bytes(), held, "steady-state steps must not allocate");
}

#[test]
fn many_recorded_dispatches_flush_in_batches_and_read_back_once() {
    let Some(dev) = wgpu_device() else { return };
    let mut rng = Rng::new(3);
    let v = rng.vec(777);
    let x = Tensor::from_vec(&dev, &[777], v.clone()).unwrap();
    let mut y = x.clone();
    // 300 dispatches: several flushes of the command encoder before the one readback.
    for _ in 0..150 {
        y = ew::scale(-1.0, &y).unwrap();
        y = ew::add(&y, &x).unwrap();
        y = ew::sub(&y, &x).unwrap();
    }
    assert_close("300 chained ops", &y.to_vec().unwrap(), &v, 0.0, 0.0);
}

#[test]
fn elementwise_ops_match_the_cpu_reference() {
    let Some(dev) = wgpu_device() else { return };
    let cpu = geopath::Device::Reference;
    let mut rng = Rng::new(4);
    for n in [1usize, 7, 255, 257, 70_001] {
        let a = rng.vec(n);
        let b = rng.vec(n);
        let g = |v: &[f32]| Tensor::from_vec(&dev, &[n], v.to_vec()).unwrap();
        let c = |v: &[f32]| Tensor::from_vec(&cpu, &[n], v.to_vec()).unwrap();
        let pairs: Vec<(&str, Tensor, Tensor)> = vec![
            ("axpby", ew::axpby(0.3, &g(&a), -1.7, &g(&b)).unwrap(), ew::axpby(0.3, &c(&a), -1.7, &c(&b)).unwrap()),
            ("mul", ew::mul(&g(&a), &g(&b)).unwrap(), ew::mul(&c(&a), &c(&b)).unwrap()),
            ("scale", ew::scale(2.5, &g(&a)).unwrap(), ew::scale(2.5, &c(&a)).unwrap()),
            ("relu", ew::relu(&g(&a)).unwrap(), ew::relu(&c(&a)).unwrap()),
            ("relu_backward", ew::relu_backward(&g(&a), &g(&b)).unwrap(), ew::relu_backward(&c(&a), &c(&b)).unwrap()),
            ("relu_jvp.0", ew::relu_jvp(&g(&a), &g(&b)).unwrap().0, ew::relu_jvp(&c(&a), &c(&b)).unwrap().0),
            ("relu_jvp.1", ew::relu_jvp(&g(&a), &g(&b)).unwrap().1, ew::relu_jvp(&c(&a), &c(&b)).unwrap().1),
            ("fill", ew::fill(&dev, &[n], 0.25).unwrap(), ew::fill(&cpu, &[n], 0.25).unwrap()),
        ];
        for (name, got, want) in pairs {
            assert_close(&format!("{name} n={n}"), &got.to_vec().unwrap(), &want.to_vec().unwrap(), 1e-6, 1e-7);
        }
        let cols = [1usize, 3, 7].into_iter().find(|c| n % c == 0).unwrap();
        let bias = rng.vec(cols);
        for relu in [false, true] {
            let got = ew::add_bias(
                &g(&a).reshape(&[n / cols, cols]).unwrap(),
                &Tensor::from_vec(&dev, &[cols], bias.clone()).unwrap(),
                relu,
            )
            .unwrap();
            let want = ew::add_bias(
                &c(&a).reshape(&[n / cols, cols]).unwrap(),
                &Tensor::from_vec(&cpu, &[cols], bias.clone()).unwrap(),
                relu,
            )
            .unwrap();
            assert_close("add_bias", &got.to_vec().unwrap(), &want.to_vec().unwrap(), 1e-6, 1e-7);
        }
        let shapes = vec![vec![n / 2], vec![n - n / 2]];
        let parts = ew::split(&g(&a), &shapes).unwrap();
        assert_eq!(parts[0].to_vec().unwrap(), a[..n / 2].to_vec());
        let joined = ew::concat(&[&parts[1], &parts[0]]).unwrap().to_vec().unwrap();
        assert_eq!(joined, [&a[n / 2..], &a[..n / 2]].concat());
    }
    let e = ew::add(&Tensor::zeros(&dev, &[3]).unwrap(), &Tensor::zeros(&dev, &[4]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("[3]") && e.contains("[4]"), "{e}");
    let e = ew::add(&Tensor::zeros(&dev, &[3]).unwrap(), &Tensor::zeros(&cpu, &[3]).unwrap()).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch(_)), "{e}");
}

#[test]
fn the_adapter_profile_forces_the_hardware_variants_and_an_unknown_one_is_refused() {
    if wgpu_device().is_none() {
        return;
    }
    let info = |profile: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_geopath"))
            .args(["--device", "gpu", "info"])
            .env("GEOPATH_ADAPTER_PROFILE", profile)
            .output()
            .unwrap()
    };
    let hardware = info("hardware");
    let stdout = String::from_utf8_lossy(&hardware.stdout);
    assert!(hardware.status.success() && stdout.contains("(Hardware kernel variants)"), "{stdout}");
    let bogus = info("fastest");
    let stderr = String::from_utf8_lossy(&bogus.stderr);
    assert!(!bogus.status.success() && stderr.contains("GEOPATH_ADAPTER_PROFILE=fastest"), "{stderr}");
    // The hardware-variant test device really takes them (on a software adapter).
    if let Some(geopath::Device::Gpu(ctx)) = gpu_hardware_variants() {
        assert_eq!(ctx.class, geopath::gpu::AdapterClass::Hardware);
    }
}

#[test]
fn the_selftest_passes_on_the_wgpu_adapter_and_reports_every_case() {
    if wgpu_device().is_none() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geopath"))
        .args(["--device", "gpu", "selftest", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pass"], true);
    let cases = report["cases"].as_array().unwrap();
    // 3 matrix products, 4 LeNet cases, VGG's logits and JVP, 9 ops for each of 8 conv layers.
    assert_eq!(cases.len(), 3 + 4 + 2 + 9 * 8, "{stdout}");
    assert!(cases.iter().all(|c| c["relative_error"].as_f64().unwrap() <= 1e-3));
}
