//! Optimisers: GPU kernels against the CPU reference, the CPU reference against a scalar
//! re-implementation of PyTorch's update formulas, schedules, convergence, NaN behaviour,
//! errors, and state save/restore.

mod common;
use common::*;
use geopath::checkpoint::Checkpoint;
use geopath::ops::elementwise as ew;
use geopath::optim::{LrSchedule, Optimizer, OptimizerKind, Schedule};
use geopath::{Device, Error, Tensor};

/// The configurations every kernel test runs: plain SGD (with and without weight decay),
/// momentum, Nesterov with weight decay, Adam (with and without L2), AdamW.
fn kinds() -> Vec<(&'static str, OptimizerKind)> {
    vec![
        ("sgd", OptimizerKind::sgd(0.0)),
        ("sgd+wd", OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.01 }),
        ("momentum", OptimizerKind::sgd(0.9)),
        ("nesterov+wd", OptimizerKind::Sgd { momentum: 0.8, nesterov: true, weight_decay: 0.05 }),
        ("adam", OptimizerKind::adam()),
        ("adam+l2", OptimizerKind::Adam { beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.1, decoupled: false }),
        ("adamw", OptimizerKind::adamw(0.05)),
    ]
}

/// Runs `grads.len()` steps from `w0` on `dev`; returns the parameters and the state (as host
/// vectors) after each step.
#[allow(clippy::type_complexity)]
fn run(
    dev: &Device,
    kind: OptimizerKind,
    sched: LrSchedule,
    w0: &[f32],
    grads: &[Vec<f32>],
) -> Vec<(Vec<f32>, Vec<(String, Vec<f32>)>)> {
    let mut opt = Optimizer::new(kind, sched);
    let mut w = Tensor::from_vec(dev, &[w0.len()], w0.to_vec()).unwrap();
    let mut out = Vec::new();
    for g in grads {
        let g = Tensor::from_vec(dev, &[g.len()], g.clone()).unwrap();
        w = opt.step(&w, &g).unwrap();
        assert!(w.device().same(dev));
        let state = opt
            .state()
            .into_iter()
            .map(|(n, t)| {
                assert!(t.device().same(dev), "state {n} on the wrong device");
                (n, t.to_vec().unwrap())
            })
            .collect();
        out.push((w.to_vec().unwrap(), state));
    }
    out
}

#[test]
fn gpu_kernels_match_the_cpu_reference() {
    let Some(dev) = test_device() else { return };
    let sched = LrSchedule { base: 0.05, schedule: Schedule::Constant, warmup: 2 };
    for n in [1usize, 7, 1000, 100_003] {
        let mut rng = Rng::new(n as u64);
        let w0 = rng.vec(n);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n)).collect();
        for (name, kind) in kinds() {
            let cpu = run(&Device::Reference, kind, sched, &w0, &grads);
            let gpu = run(&dev, kind, sched, &w0, &grads);
            for (step, ((cw, cs), (gw, gs))) in cpu.iter().zip(&gpu).enumerate() {
                let what = format!("{name}, n = {n}, step {step}");
                assert_close(&format!("{what}: w"), gw, cw, 1e-5, 1e-6);
                assert_eq!(cs.len(), gs.len(), "{what}: state tensors");
                for ((cn, cv), (gn, gv)) in cs.iter().zip(gs) {
                    assert_eq!(cn, gn);
                    assert_close(&format!("{what}: {cn}"), gv, cv, 1e-5, 1e-7);
                }
            }
        }
    }
}

#[test]
fn gpu_adam_on_a_vector_wider_than_one_dispatch_row() {
    // 65535 workgroups of 256 is the most one row of the dispatch grid holds: this vector
    // (~16.8 M parameters, above the ~15 M networks the optimisers are meant for) needs a
    // second row.
    let Some(dev) = test_device() else { return };
    let n = 65_535 * 256 + 7;
    let mut rng = Rng::new(7);
    let w0 = rng.vec(n);
    let grads: Vec<Vec<f32>> = (0..2).map(|_| rng.vec(n)).collect();
    let kind = OptimizerKind::adamw(0.01);
    let sched = LrSchedule::constant(1e-3);
    let cpu = run(&Device::Reference, kind, sched, &w0, &grads);
    let gpu = run(&dev, kind, sched, &w0, &grads);
    let (cw, cs) = &cpu[1];
    let (gw, gs) = &gpu[1];
    assert_close("w", gw, cw, 1e-5, 1e-6);
    assert_close("exp_avg_sq", &gs[1].1, &cs[1].1, 1e-5, 1e-7);
    // The last elements live in the second row of workgroups.
    assert_eq!(gw[n - 1], cw[n - 1]);
    assert_ne!(gw[n - 1], w0[n - 1]);
}

/// PyTorch's `torch.optim.SGD` (`_single_tensor_sgd`, maximize = False, dampening = 0),
/// line by line, in f64.
fn torch_sgd(w: &mut [f64], g: &[f64], buf: &mut Option<Vec<f64>>, lr: f64, momentum: f64, nesterov: bool, wd: f64) {
    let mut d_p: Vec<f64> = g.to_vec();
    if wd != 0.0 {
        d_p = d_p.iter().zip(w.iter()).map(|(d, p)| d + wd * p).collect();
    }
    if momentum != 0.0 {
        let b = match buf.take() {
            None => d_p.clone(),
            Some(b) => b.iter().zip(&d_p).map(|(b, d)| b * momentum + d).collect(),
        };
        if nesterov {
            d_p = d_p.iter().zip(&b).map(|(d, b)| d + momentum * b).collect();
        } else {
            d_p = b.clone();
        }
        *buf = Some(b);
    }
    for (p, d) in w.iter_mut().zip(&d_p) {
        *p += -lr * d;
    }
}

/// PyTorch's `torch.optim.Adam` / `AdamW` (`_single_tensor_adam`, amsgrad = False, not
/// capturable), line by line, in f64.
#[allow(clippy::too_many_arguments)]
fn torch_adam(
    w: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    step: i32,
    lr: f64,
    (beta1, beta2, eps, wd): (f64, f64, f64, f64),
    decoupled: bool,
) {
    let mut grad = g.to_vec();
    if wd != 0.0 {
        if decoupled {
            for p in w.iter_mut() {
                *p *= 1.0 - lr * wd;
            }
        } else {
            grad = grad.iter().zip(w.iter()).map(|(g, p)| g + wd * p).collect();
        }
    }
    for i in 0..w.len() {
        // exp_avg.lerp_(grad, 1 - beta1)
        m[i] += (1.0 - beta1) * (grad[i] - m[i]);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
        v[i] = v[i] * beta2 + (1.0 - beta2) * grad[i] * grad[i];
    }
    let bias_correction1 = 1.0 - beta1.powi(step);
    let bias_correction2 = 1.0 - beta2.powi(step);
    let step_size = lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.sqrt();
    for i in 0..w.len() {
        let denom = v[i].sqrt() / bias_correction2_sqrt + eps;
        w[i] += -step_size * m[i] / denom;
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn cpu_reference_matches_pytorch_formulas_over_three_steps() {
    let n = 257;
    let mut rng = Rng::new(42);
    let w0 = rng.vec(n);
    // Gradients of mixed scales, so that Adam's ε and the bias corrections matter.
    let grads: Vec<Vec<f32>> = (0..3).map(|k| rng.vec(n).iter().map(|x| x * 10f32.powi(k - 1)).collect()).collect();
    // A schedule whose rate changes every step (warmup), to check the per-step rate too.
    let sched = LrSchedule { base: 0.1, schedule: Schedule::Constant, warmup: 3 };
    for (name, kind) in kinds() {
        let ours = run(&Device::Reference, kind, sched, &w0, &grads);
        let mut w = f64s(&w0);
        let mut buf = None;
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        for (step, g) in grads.iter().enumerate() {
            let lr = sched.lr(step) as f64;
            let g = f64s(g);
            match kind {
                OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                    torch_sgd(&mut w, &g, &mut buf, lr, momentum as f64, nesterov, weight_decay as f64)
                }
                OptimizerKind::Adam { beta1, beta2, eps, weight_decay, decoupled } => torch_adam(
                    &mut w,
                    &g,
                    &mut m,
                    &mut v,
                    step as i32 + 1,
                    lr,
                    (beta1 as f64, beta2 as f64, eps as f64, weight_decay as f64),
                    decoupled,
                ),
            }
            let (ow, os) = &ours[step];
            let what = format!("{name}, step {step}");
            assert_close(&format!("{what}: w"), ow, &f32s(&w), 1e-5, 1e-6);
            match kind {
                OptimizerKind::Sgd { momentum: 0.0, .. } => assert!(os.is_empty()),
                OptimizerKind::Sgd { .. } => {
                    assert_eq!(os[0].0, "momentum_buffer");
                    let b = buf.as_ref().unwrap();
                    assert_close(&format!("{what}: buf"), &os[0].1, &f32s(b), 1e-5, 1e-6);
                }
                OptimizerKind::Adam { .. } => {
                    assert_eq!((os[0].0.as_str(), os[1].0.as_str()), ("exp_avg", "exp_avg_sq"));
                    assert_close(&format!("{what}: m"), &os[0].1, &f32s(&m), 1e-5, 1e-7);
                    assert_close(&format!("{what}: v"), &os[1].1, &f32s(&v), 1e-5, 1e-9);
                }
            }
        }
    }
}

#[test]
fn first_adam_step_moves_each_weight_by_about_lr() {
    // A known property of bias-corrected Adam: the first step is lr * sign(g) (for |g| >> ε).
    let w0 = vec![1.0f32, -2.0, 0.5];
    let g = vec![3.0f32, -0.01, 1e3];
    let out = run(&Device::Reference, OptimizerKind::adam(), LrSchedule::constant(0.01), &w0, &[g]);
    assert_close("w", &out[0].0, &[0.99, -1.99, 0.49], 1e-6, 1e-6);
}

#[test]
fn step_decay_values() {
    let s = LrSchedule { base: 1.0, schedule: Schedule::Step { every: 10, gamma: 0.5 }, warmup: 0 };
    for (step, want) in [(0, 1.0), (9, 1.0), (10, 0.5), (19, 0.5), (20, 0.25), (35, 0.125)] {
        assert_eq!(s.lr(step), want, "step {step}");
    }
    let never = LrSchedule { schedule: Schedule::Step { every: 0, gamma: 0.5 }, ..s };
    assert_eq!(never.lr(1000), 1.0);
    assert_eq!(LrSchedule::constant(0.3).lr(12345), 0.3);
}

#[test]
fn cosine_endpoints_and_midpoint() {
    let s = LrSchedule { base: 2.0, schedule: Schedule::Cosine { total: 100, min_factor: 0.1 }, warmup: 0 };
    assert_eq!(s.lr(0), 2.0);
    assert!((s.lr(50) - 2.0 * 0.55).abs() < 1e-6, "{}", s.lr(50));
    assert!((s.lr(100) - 0.2).abs() < 1e-6);
    assert!((s.lr(1000) - 0.2).abs() < 1e-6, "stays at the minimum");
    for k in 0..100 {
        assert!(s.lr(k + 1) <= s.lr(k), "monotone at {k}");
    }
    let zero = LrSchedule { schedule: Schedule::Cosine { total: 0, min_factor: 0.25 }, ..s };
    assert_eq!(zero.lr(0), 0.5);
}

#[test]
fn warmup_ramps_linearly_then_hands_over_to_the_schedule() {
    let s = LrSchedule { base: 1.0, schedule: Schedule::Cosine { total: 10, min_factor: 0.0 }, warmup: 4 };
    let ramp: Vec<f32> = (0..4).map(|k| s.lr(k)).collect();
    assert_eq!(ramp, vec![0.25, 0.5, 0.75, 1.0]);
    assert_eq!(s.lr(4), 1.0, "schedule step 0 after warmup");
    assert!(s.lr(5) < 1.0);
    assert!((s.lr(14)).abs() < 1e-7, "cosine ends `total` steps after warmup");
    let step = LrSchedule { base: 0.1, schedule: Schedule::Step { every: 2, gamma: 0.1 }, warmup: 2 };
    let got: Vec<f32> = (0..6).map(|k| step.lr(k)).collect();
    let want = [0.05, 0.1, 0.1, 0.1, 0.01, 0.01];
    assert_close("step after warmup", &got, &want, 1e-6, 0.0);
}

#[test]
fn optimizer_reports_the_rate_of_the_next_step_and_counts_steps() {
    let sched = LrSchedule { base: 1.0, schedule: Schedule::Constant, warmup: 2 };
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.0), sched);
    let w = Tensor::from_vec(&Device::Reference, &[1], vec![0.0]).unwrap();
    let g = Tensor::from_vec(&Device::Reference, &[1], vec![1.0]).unwrap();
    assert_eq!((opt.steps(), opt.lr()), (0, 0.5));
    let w1 = opt.step(&w, &g).unwrap();
    assert_eq!(w1.to_vec().unwrap(), vec![-0.5]);
    assert_eq!((opt.steps(), opt.lr()), (1, 1.0));
    let w2 = opt.step(&w1, &g).unwrap();
    assert_eq!(w2.to_vec().unwrap(), vec![-1.5]);
    assert_eq!(opt.steps(), 2);
}

/// Minimises `f(w) = ½ Σ a_i (w_i − c_i)²` (gradient `a ⊙ (w − c)`, computed on the device)
/// for `steps` steps; returns the final distance to the minimum `c`.
fn minimise_quadratic(dev: &Device, kind: OptimizerKind, sched: LrSchedule, steps: usize) -> f32 {
    let n = 300;
    let mut rng = Rng::new(3);
    // Curvatures in [0.5, 2]: condition number 4.
    let a: Vec<f32> = (0..n).map(|_| 1.25 + 0.75 * rng.uniform()).collect();
    let c = rng.vec(n);
    let a_t = Tensor::from_vec(dev, &[n], a).unwrap();
    let c_t = Tensor::from_vec(dev, &[n], c.clone()).unwrap();
    let mut w = Tensor::zeros(dev, &[n]).unwrap();
    let mut opt = Optimizer::new(kind, sched);
    for _ in 0..steps {
        let g = ew::mul(&a_t, &ew::sub(&w, &c_t).unwrap()).unwrap();
        w = opt.step(&w, &g).unwrap();
    }
    let w = w.to_vec().unwrap();
    w.iter().zip(&c).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

#[test]
fn sgd_minimises_a_quadratic() {
    let mut devices = vec![Device::Reference];
    devices.extend(test_device());
    for dev in &devices {
        let start = minimise_quadratic(dev, OptimizerKind::sgd(0.0), LrSchedule::constant(0.0), 1);
        assert!(start > 1.0, "initial distance {start}");
        let plain = minimise_quadratic(dev, OptimizerKind::sgd(0.0), LrSchedule::constant(0.5), 100);
        assert!(plain < 1e-4, "{}: plain SGD ends {plain} away", dev.name());
        let nesterov = OptimizerKind::Sgd { momentum: 0.5, nesterov: true, weight_decay: 0.0 };
        let d = minimise_quadratic(dev, nesterov, LrSchedule::constant(0.3), 100);
        assert!(d < 1e-4, "{}: Nesterov ends {d} away", dev.name());
        let d = minimise_quadratic(dev, OptimizerKind::sgd(0.9), LrSchedule::constant(0.05), 300);
        assert!(d < 1e-3, "{}: heavy-ball momentum ends {d} away", dev.name());
        let adam_sched =
            LrSchedule { base: 0.05, schedule: Schedule::Cosine { total: 400, min_factor: 0.0 }, warmup: 10 };
        let d = minimise_quadratic(dev, OptimizerKind::adam(), adam_sched, 410);
        assert!(d < 1e-2, "{}: Adam ends {d} away", dev.name());
    }
}

#[test]
fn nan_in_the_gradient_propagates_and_is_not_ignored() {
    // Documented behaviour: the optimiser neither skips nor sanitises a non-finite gradient;
    // the NaN reaches the parameters (and the state, so later steps keep it). Callers check.
    let mut devices = vec![Device::Reference];
    devices.extend(test_device());
    for dev in &devices {
        for (name, kind) in kinds() {
            let mut g0 = vec![0.5f32; 8];
            g0[3] = f32::NAN;
            let grads = vec![g0, vec![0.5; 8]];
            let out = run(dev, kind, LrSchedule::constant(0.1), &[1.0; 8], &grads);
            let what = format!("{name} on {}", dev.name());
            for (step, (w, state)) in out.iter().enumerate() {
                assert!(w[3].is_nan(), "{what}, step {step}: w[3] = {}", w[3]);
                for (i, x) in w.iter().enumerate() {
                    if i != 3 {
                        assert!(x.is_finite(), "{what}, step {step}: w[{i}] = {x}");
                    }
                }
                for (sn, s) in state {
                    assert!(s[3].is_nan(), "{what}, step {step}: {sn}[3] = {}", s[3]);
                }
            }
        }
    }
}

#[test]
fn shape_mismatches_are_errors_that_leave_the_optimizer_unchanged() {
    let mut devices = vec![Device::Reference];
    devices.extend(test_device());
    for dev in &devices {
        for (name, kind) in kinds() {
            let mut opt = Optimizer::new(kind, LrSchedule::constant(0.1));
            let w = Tensor::zeros(dev, &[10]).unwrap();
            let g = Tensor::zeros(dev, &[11]).unwrap();
            let err = opt.step(&w, &g).unwrap_err();
            assert!(matches!(err, Error::Shape { .. }), "{name}: {err}");
            assert!(err.to_string().contains("[10]") && err.to_string().contains("[11]"));
            assert_eq!(opt.steps(), 0);
            let g = Tensor::zeros(dev, &[10]).unwrap();
            let w = opt.step(&w, &g).unwrap();
            // The state now has 10 elements: a parameter vector of another size is an error.
            let state_len = opt.state().len();
            let w12 = Tensor::zeros(dev, &[12]).unwrap();
            let r = opt.step(&w12, &w12);
            if state_len > 0 {
                let err = r.unwrap_err();
                assert!(err.to_string().contains("[12]"), "{name}: {err}");
                assert_eq!(opt.steps(), 1, "{name}");
            } else {
                r.unwrap();
            }
            drop(w);
        }
    }
}

#[test]
fn operands_on_different_devices_are_an_error() {
    let Some(dev) = test_device() else { return };
    let mut opt = Optimizer::new(OptimizerKind::adam(), LrSchedule::constant(0.1));
    let w = Tensor::zeros(&Device::Reference, &[4]).unwrap();
    let g = Tensor::zeros(&dev, &[4]).unwrap();
    assert!(matches!(opt.step(&w, &g).unwrap_err(), Error::DeviceMismatch(_)));
    assert_eq!(opt.steps(), 0);
}

#[test]
fn invalid_hyperparameters_are_errors() {
    let bad = [
        OptimizerKind::Sgd { momentum: 0.0, nesterov: true, weight_decay: 0.0 },
        OptimizerKind::Sgd { momentum: -0.1, nesterov: false, weight_decay: 0.0 },
        OptimizerKind::Adam { beta1: 1.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false },
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: f32::NAN, weight_decay: 0.0, decoupled: true },
    ];
    let w = Tensor::zeros(&Device::Reference, &[2]).unwrap();
    for kind in bad {
        let mut opt = Optimizer::new(kind, LrSchedule::constant(0.1));
        let err = opt.step(&w, &w).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{kind:?}: {err}");
    }
    let mut opt = Optimizer::new(OptimizerKind::sgd(0.0), LrSchedule::constant(f32::NAN));
    assert!(opt.step(&w, &w).is_err());
}

#[test]
fn state_survives_a_checkpoint_round_trip_and_a_device_change() {
    let n = 1000;
    let mut rng = Rng::new(11);
    let w0 = rng.vec(n);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n)).collect();
    let sched = LrSchedule { base: 0.01, schedule: Schedule::Cosine { total: 5, min_factor: 0.1 }, warmup: 1 };
    // The second device: the GPU when there is one (state moves CPU -> GPU), else the CPU.
    let resume_dev = test_device().unwrap_or(Device::Reference);
    for (name, kind) in kinds() {
        let want = run(&Device::Reference, kind, sched, &w0, &grads);
        // Two steps on the CPU ...
        let mut opt = Optimizer::new(kind, sched);
        let mut w = Tensor::from_vec(&Device::Reference, &[n], w0.clone()).unwrap();
        for g in &grads[..2] {
            w = opt.step(&w, &Tensor::from_vec(&Device::Reference, &[n], g.clone()).unwrap()).unwrap();
        }
        // ... saved in a checkpoint ...
        let ck = Checkpoint {
            spec: "test".into(),
            params: w.to_vec().unwrap(),
            buffers: opt.state().into_iter().map(|(k, t)| (format!("optim.{k}"), t.to_vec().unwrap())).collect(),
            metadata: vec![("optim.steps".into(), opt.steps().to_string())],
        };
        let ck = Checkpoint::from_bytes(&ck.to_bytes().unwrap()).unwrap();
        // ... restored into a fresh optimiser whose state is on the host, stepping on the
        // resume device.
        let mut resumed = Optimizer::new(kind, sched);
        let state = ck
            .buffers
            .iter()
            .map(|(k, v)| {
                let name = k.strip_prefix("optim.").unwrap().to_string();
                (name, Tensor::from_vec(&Device::Reference, &[n], v.clone()).unwrap())
            })
            .collect();
        resumed.set_state(ck.meta("optim.steps").unwrap().parse().unwrap(), state).unwrap();
        assert_eq!(resumed.lr(), opt.lr());
        let w = Tensor::from_vec(&resume_dev, &[n], ck.params.clone()).unwrap();
        let g = Tensor::from_vec(&resume_dev, &[n], grads[2].clone()).unwrap();
        let w3 = resumed.step(&w, &g).unwrap();
        assert_close(&format!("{name}: resumed step"), &w3.to_vec().unwrap(), &want[2].0, 1e-5, 1e-6);
        assert_eq!(resumed.steps(), 3);
    }
}

#[test]
fn set_state_rejects_missing_or_unknown_tensors() {
    let t = Tensor::zeros(&Device::Reference, &[3]).unwrap();
    let mut adam = Optimizer::new(OptimizerKind::adam(), LrSchedule::constant(0.1));
    let err = adam.set_state(5, vec![("exp_avg".into(), t.clone())]).unwrap_err();
    assert!(err.to_string().contains("exp_avg_sq"), "{err}");
    let err = adam
        .set_state(
            5,
            vec![
                ("exp_avg".into(), t.clone()),
                ("exp_avg_sq".into(), t.clone()),
                ("momentum_buffer".into(), t.clone()),
            ],
        )
        .unwrap_err();
    assert!(err.to_string().contains("momentum_buffer"), "{err}");
    let t4 = Tensor::zeros(&Device::Reference, &[4]).unwrap();
    let err = adam.set_state(5, vec![("exp_avg".into(), t.clone()), ("exp_avg_sq".into(), t4)]).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert_eq!(adam.steps(), 0, "failed set_state changes nothing");
    adam.set_state(5, vec![("exp_avg_sq".into(), t.clone()), ("exp_avg".into(), t.clone())]).unwrap();
    assert_eq!(adam.steps(), 5);
    let names: Vec<String> = adam.state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["exp_avg", "exp_avg_sq"]);
}
