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
    // 3 matrix products, 5 LeNet cases, VGG's logits and JVP, 9 ops for each of 8 conv layers.
    assert_eq!(cases.len(), 3 + 5 + 2 + 9 * 8, "{stdout}");
    assert!(cases.iter().all(|c| c["relative_error"].as_f64().unwrap() <= 1e-3));
}

/// A second device on the adapter, so that a test sees only its own batches, bind groups and
/// timings (tests running in parallel share `wgpu_device()`).
fn own_device() -> Option<std::sync::Arc<geopath::gpu::GpuContext>> {
    wgpu_device()?;
    match geopath::Device::open(geopath::DeviceChoice::Gpu).unwrap() {
        geopath::Device::Gpu(ctx) => Some(ctx),
        _ => unreachable!("--device gpu opens a wgpu device"),
    }
}

#[test]
fn dependent_dispatches_in_one_pass_match_the_cpu_reference() {
    let Some(dev) = wgpu_device() else { return };
    let mut rng = Rng::new(5);
    let (xv, av, mv) = (rng.vec(2048), rng.vec(32 * 64), rng.vec(64 * 64));
    let run = |d: &geopath::Device| -> Vec<f32> {
        let x = Tensor::from_vec(d, &[2048], xv.clone()).unwrap();
        let a = Tensor::from_vec(d, &[32, 64], av.clone()).unwrap();
        let m = ew::scale(0.1, &Tensor::from_vec(d, &[64, 64], mv.clone()).unwrap()).unwrap();
        // From here to the readback nothing is uploaded or read: the 6 x 40 dispatches are
        // recorded in batches of FLUSH_EVERY, each one compute pass, each dispatch reading what
        // the one before it wrote, and the buffers of the tensors dropped along the way
        // recycled as outputs of later dispatches of the same pass (write after read).
        let (mut y, mut c) = (x.clone(), a.clone());
        for _ in 0..40 {
            y = ew::axpby(0.9, &y, 0.1, &x).unwrap();
            y = ew::relu(&ew::sub(&y, &ew::scale(0.01, &x).unwrap()).unwrap()).unwrap();
            c = ew::axpby(0.5, &c, 0.5, &matmul::matmul(&c, &m).unwrap()).unwrap();
        }
        // Three dispatches writing ranges of one buffer, then one reading all of it.
        let z = ew::concat(&[&y, &c.reshape(&[2048]).unwrap(), &y]).unwrap();
        ew::mul(&z, &z).unwrap().to_vec().unwrap()
    };
    assert_close("dependent dispatches", &run(&dev), &run(&geopath::Device::Reference), 1e-4, 1e-6);
}

#[test]
fn cached_bind_groups_bind_recycled_buffers_to_their_new_contents() {
    let Some(ctx) = own_device() else { return };
    assert!(ctx.checked_shaders, "the tests run every kernel checked");
    let n = 1000usize;
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    // out = 2 a through the raw dispatch path, binding exactly these two buffers.
    let double = |a: &geopath::gpu::GpuBuffer, out: &geopath::gpu::GpuBuffer, v: &[f32]| {
        let p = ElementwiseParams { n: n as u32, alpha: 2.0, ..Default::default() };
        ctx.dispatch("double", &KernelKey::new("elementwise", "scale"), &p, &[a.view()], &[out.view()], [4, 1, 1])
            .unwrap();
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&ctx.read(out.view(), 4 * n as u64).unwrap());
        assert_eq!(got, v.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
    };
    let mut rng = Rng::new(6);
    let v1 = rng.vec(n);
    let (a, out) = (ctx.upload("test", &bytes(&v1)).unwrap(), ctx.alloc("test", 4 * n as u64).unwrap());
    let ids = (a.id(), out.id());
    double(&a, &out, &v1);
    let cached = ctx.cached_bind_groups();
    // Freed (out, then a) and allocated again in that order, the same buffers come back in the
    // same roles with other contents: the cached bind group is hit, and reads the new values.
    drop(out);
    drop(a);
    let v2 = rng.vec(n);
    let (a, out) = (ctx.upload("test", &bytes(&v2)).unwrap(), ctx.alloc("test", 4 * n as u64).unwrap());
    assert_eq!((a.id(), out.id()), ids, "the pool recycles the same buffers");
    double(&a, &out, &v2);
    assert_eq!(ctx.cached_bind_groups(), cached, "a cache hit");
    // In swapped roles the same buffers make another bind group.
    drop(a);
    drop(out);
    let v3 = rng.vec(n);
    let (a, out) = (ctx.upload("test", &bytes(&v3)).unwrap(), ctx.alloc("test", 4 * n as u64).unwrap());
    assert_eq!((a.id(), out.id()), (ids.1, ids.0));
    double(&a, &out, &v3);
    assert_eq!(ctx.cached_bind_groups(), cached + 1);
}

#[test]
fn the_bind_group_cache_stays_bounded_and_right_past_its_size() {
    let Some(ctx) = own_device() else { return };
    let dev = geopath::Device::Gpu(ctx.clone());
    let count = geopath::gpu::MAX_CACHED_BIND_GROUPS + 100;
    // Every tensor alive at once: each dispatch binds buffers no other one does.
    let filled: Vec<Tensor> = (0..count).map(|i| ew::fill(&dev, &[1], i as f32).unwrap()).collect();
    let doubled: Vec<Tensor> = filled.iter().map(|t| ew::scale(2.0, t).unwrap()).collect();
    assert!(ctx.cached_bind_groups() <= geopath::gpu::MAX_CACHED_BIND_GROUPS);
    let all = ew::concat(&doubled.iter().collect::<Vec<_>>()).unwrap().to_vec().unwrap();
    assert_eq!(all, (0..count).map(|i| 2.0 * i as f32).collect::<Vec<_>>());
}

#[test]
fn an_invalid_dispatch_fails_its_batch_naming_the_first_op() {
    let Some(ctx) = own_device() else { return };
    let first = ctx.alloc("test", 1024).unwrap();
    let aliased = ctx.alloc("test", 1024).unwrap();
    let p = ElementwiseParams { n: 256, alpha: 1.0, ..Default::default() };
    let key = KernelKey::new("elementwise", "scale");
    ctx.dispatch("first_op", &key, &p, &[first.view()], &[aliased.view()], [1, 1, 1]).unwrap();
    // One buffer bound read-only and read-write in one dispatch: wgpu finds the conflict when
    // the pass is encoded, so the error comes with the batch's submission.
    ctx.dispatch("aliasing_op", &key, &p, &[aliased.view()], &[aliased.view()], [1, 1, 1]).unwrap();
    match ctx.flush() {
        Err(Error::Device { op, message }) => {
            assert!(op.contains("first_op") && op.contains("batch of 2 dispatches"), "{op}: {message}")
        }
        other => panic!("expected a device error, got {other:?}"),
    }
    // The batch is dropped; the device stays usable.
    let dev = geopath::Device::Gpu(ctx.clone());
    let x = Tensor::from_vec(&dev, &[3], vec![1.0, -2.0, 3.0]).unwrap();
    assert_eq!(ew::relu(&x).unwrap().to_vec().unwrap(), vec![1.0, 0.0, 3.0]);
}

#[test]
fn bench_reports_gpu_time_where_the_adapter_has_timestamps() {
    let Some(ctx) = own_device() else { return };
    let dev = geopath::Device::Gpu(ctx.clone());
    let x = Tensor::from_vec(&dev, &[64, 64], vec![0.5; 64 * 64]).unwrap();
    let m = geopath::bench::time_median(
        &dev,
        || {
            for _ in 0..60 {
                matmul::matmul(&x, &x)?;
            }
            dev.sync()
        },
        1,
        3,
        0.0,
    )
    .unwrap();
    assert_eq!(m.gpu_ms.is_some(), ctx.has_timestamps());
    if let Some(gpu) = m.gpu_ms {
        assert!(gpu > 0.0 && gpu <= 1.5 * m.ms, "GPU {gpu} ms of {} ms", m.ms);
    }
    assert!(ctx.stop_timing().unwrap().is_none(), "not timing any more");
    let result = geopath::bench::BenchResult {
        name: "matmul".into(),
        shape: "64x64x64".into(),
        ms: m.ms,
        gpu_ms: m.gpu_ms,
        gflops: None,
    };
    let json: serde_json::Value =
        serde_json::from_str(&geopath::bench::report::json("{}", &dev, std::slice::from_ref(&result))).unwrap();
    assert_eq!(json["gpu_timestamps"], ctx.has_timestamps());
    let row = &json["results"][0];
    assert!(row["ms"].is_number() && row["gflops"].is_null() && row["name"] == "matmul");
    assert_eq!(row["gpu_ms"].is_number(), ctx.has_timestamps());
    let table = geopath::bench::report::table(&dev, &[result]);
    assert!(table.contains("GPU ms"), "{table}");
}

#[test]
fn an_unknown_checked_shaders_value_is_refused() {
    if wgpu_device().is_none() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geopath"))
        .args(["--device", "gpu", "info"])
        .env(geopath::gpu::CHECKED_SHADERS_VAR, "yes")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("GEOPATH_CHECKED_SHADERS=yes"), "{stderr}");
}
