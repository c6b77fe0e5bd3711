//! Forward mode, reverse mode, forward-over-reverse HVP and Gauss–Newton products of an MLP,
//! against finite differences, adjoint identities, explicit Jacobians and the CPU device.

mod common;
use common::*;
use geopath::autodiff::{self, Model};
use geopath::nn::mlp::Mlp;
use geopath::{Device, Tensor};

struct Problem {
    mlp: Mlp,
    w: Vec<f32>,
    x: Vec<f32>,
    labels: Vec<u32>,
    batch: usize,
}

fn problem(sizes: &[usize], batch: usize, seed: u64) -> Problem {
    let mlp = Mlp::new(sizes);
    let mut rng = Rng::new(seed);
    let w = mlp.init(&Device::Cpu, seed).unwrap().to_vec().unwrap();
    // Non-zero biases so that no pre-activation sits exactly on a ReLU kink.
    let w = w.iter().map(|v| v + 0.05 * rng.uniform()).collect();
    let x = rng.vec(batch * sizes[0]);
    let classes = *sizes.last().unwrap();
    let labels = (0..batch).map(|_| rng.below(classes) as u32).collect();
    Problem { mlp, w, x, labels, batch }
}

fn t(dev: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(dev, shape, v.to_vec()).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    d.extend(gpu());
    d
}

fn logits(p: &Problem, dev: &Device, w: &[f32]) -> Vec<f32> {
    let x = t(dev, &[p.batch, p.mlp.param_shapes()[0][0]], &p.x);
    p.mlp.forward(&t(dev, &[w.len()], w), &x).unwrap().to_vec().unwrap()
}

fn grad(p: &Problem, dev: &Device, w: &[f32]) -> Vec<f32> {
    let x = t(dev, &[p.batch, p.mlp.param_shapes()[0][0]], &p.x);
    let labels = Tensor::from_u32(dev, &[p.batch], &p.labels).unwrap();
    p.mlp.loss_grad(&t(dev, &[w.len()], w), &x, &labels).unwrap().1.to_vec().unwrap()
}

fn shifted(w: &[f32], v: &[f32], eps: f32) -> Vec<f32> {
    w.iter().zip(v).map(|(a, b)| a + eps * b).collect()
}

#[test]
fn jvp_matches_central_finite_differences() {
    let p = problem(&[12, 9, 7, 5], 6, 1);
    let v = Rng::new(11).vec(p.w.len());
    for dev in devices() {
        let x = t(&dev, &[p.batch, 12], &p.x);
        let (z, jv) = p.mlp.jvp(&t(&dev, &[p.w.len()], &p.w), &t(&dev, &[p.w.len()], &v), &x).unwrap();
        let eps = 1e-3;
        let plus = logits(&p, &dev, &shifted(&p.w, &v, eps));
        let minus = logits(&p, &dev, &shifted(&p.w, &v, -eps));
        let fd: Vec<f32> = plus.iter().zip(&minus).map(|(a, b)| (a - b) / (2.0 * eps)).collect();
        assert_close(&format!("jvp on {dev:?}"), &jv.to_vec().unwrap(), &fd, 2e-2, 2e-3);
        assert_close(&format!("jvp primal on {dev:?}"), &z.to_vec().unwrap(), &logits(&p, &dev, &p.w), 1e-5, 1e-5);
    }
}

#[test]
fn vjp_is_the_adjoint_of_jvp() {
    // <u, J v> = <J^T u, v> on random u, v.
    let p = problem(&[16, 12, 8, 4], 5, 2);
    let mut rng = Rng::new(12);
    let v = rng.vec(p.w.len());
    let u = rng.vec(p.batch * 4);
    for dev in devices() {
        let w = t(&dev, &[p.w.len()], &p.w);
        let x = t(&dev, &[p.batch, 16], &p.x);
        let (_, jv) = p.mlp.jvp(&w, &t(&dev, &[p.w.len()], &v), &x).unwrap();
        let jtu = autodiff::vjp(&p.mlp, &w, &x, &t(&dev, &[p.batch, 4], &u)).unwrap();
        let lhs = dot(&u, &jv.to_vec().unwrap());
        let rhs = dot(&jtu.to_vec().unwrap(), &v);
        assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "{dev:?}: <u,Jv> = {lhs}, <J^T u, v> = {rhs}");
    }
}

#[test]
fn gradient_matches_finite_differences_of_the_loss() {
    let p = problem(&[10, 8, 6], 7, 3);
    let v = Rng::new(13).vec(p.w.len());
    for dev in devices() {
        let x = t(&dev, &[p.batch, 10], &p.x);
        let labels = Tensor::from_u32(&dev, &[p.batch], &p.labels).unwrap();
        let loss = |w: &[f32]| p.mlp.loss_grad(&t(&dev, &[w.len()], w), &x, &labels).unwrap().0.to_vec().unwrap()[0];
        let eps = 1e-3;
        let fd = (loss(&shifted(&p.w, &v, eps)) - loss(&shifted(&p.w, &v, -eps))) / (2.0 * eps);
        let g = grad(&p, &dev, &p.w);
        let gv = dot(&g, &v) as f32;
        assert!((gv - fd).abs() <= 1e-2 * fd.abs().max(0.1), "{dev:?}: <grad, v> = {gv}, finite difference {fd}");
    }
}

#[test]
fn hvp_matches_finite_differences_of_gradients_and_is_symmetric() {
    let p = problem(&[12, 10, 8, 5], 6, 4);
    let mut rng = Rng::new(14);
    let v = rng.vec(p.w.len());
    let u = rng.vec(p.w.len());
    for dev in devices() {
        let w = t(&dev, &[p.w.len()], &p.w);
        let x = t(&dev, &[p.batch, 12], &p.x);
        let labels = Tensor::from_u32(&dev, &[p.batch], &p.labels).unwrap();
        let (g, hv) = p.mlp.loss_hvp(&w, &t(&dev, &[p.w.len()], &v), &x, &labels).unwrap();
        let (_, hu) = p.mlp.loss_hvp(&w, &t(&dev, &[p.w.len()], &u), &x, &labels).unwrap();
        let hv = hv.to_vec().unwrap();
        let eps = 1e-3;
        let gp = grad(&p, &dev, &shifted(&p.w, &v, eps));
        let gm = grad(&p, &dev, &shifted(&p.w, &v, -eps));
        let fd: Vec<f32> = gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * eps)).collect();
        let scale = fd.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("hvp on {dev:?}"), &hv, &fd, 2e-2, 2e-3 * scale);
        assert_close(&format!("hvp's gradient on {dev:?}"), &g.to_vec().unwrap(), &grad(&p, &dev, &p.w), 1e-5, 1e-6);
        let uhv = dot(&u, &hv);
        let vhu = dot(&v, &hu.to_vec().unwrap());
        assert!((uhv - vhu).abs() <= 1e-4 * uhv.abs().max(1e-2), "{dev:?}: <u,Hv> = {uhv}, <v,Hu> = {vhu}");
    }
}

#[test]
fn gauss_newton_matches_an_explicit_jacobian() {
    // J built column by column with JVPs along basis vectors; G v = (1/B) J^T J v.
    let p = problem(&[5, 4, 3], 3, 5);
    let n = p.w.len();
    let v = Rng::new(15).vec(n);
    for dev in devices() {
        let w = t(&dev, &[n], &p.w);
        let x = t(&dev, &[p.batch, 5], &p.x);
        let outs = p.batch * 3;
        let mut jac = vec![0f32; outs * n];
        for col in 0..n {
            let mut e = vec![0f32; n];
            e[col] = 1.0;
            let (_, je) = p.mlp.jvp(&w, &t(&dev, &[n], &e), &x).unwrap();
            for (r, val) in je.to_vec().unwrap().into_iter().enumerate() {
                jac[r * n + col] = val;
            }
        }
        let jv: Vec<f32> = (0..outs).map(|r| (0..n).map(|c| jac[r * n + c] * v[c]).sum()).collect();
        let want: Vec<f32> = (0..n).map(|c| (0..outs).map(|r| jac[r * n + c] * jv[r]).sum::<f32>() / p.batch as f32).collect();
        let got = p.mlp.gauss_newton(&w, &t(&dev, &[n], &v), &x).unwrap().to_vec().unwrap();
        assert_close(&format!("Gauss-Newton on {dev:?}"), &got, &want, 1e-4, 1e-5);
    }
}

#[test]
fn gpu_autodiff_matches_the_cpu_device_on_lenet_shapes() {
    let Some(dev) = gpu() else { return };
    let p = problem(&[784, 300, 100, 10], 20, 6);
    let mut rng = Rng::new(16);
    let v = rng.vec(p.w.len());
    let run = |d: &Device| {
        let w = t(d, &[p.w.len()], &p.w);
        let x = t(d, &[p.batch, 784], &p.x);
        let labels = Tensor::from_u32(d, &[p.batch], &p.labels).unwrap();
        let vv = t(d, &[p.w.len()], &v);
        let (z, jv) = p.mlp.jvp(&w, &vv, &x).unwrap();
        let (g, hv) = p.mlp.loss_hvp(&w, &vv, &x, &labels).unwrap();
        let gn = p.mlp.gauss_newton(&w, &vv, &x).unwrap();
        [z, jv, g, hv, gn].map(|t| t.to_vec().unwrap())
    };
    let want = run(&Device::Cpu);
    let got = run(&dev);
    for (i, name) in ["logits", "jvp", "grad", "hvp", "gauss-newton"].iter().enumerate() {
        let scale = want[i].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(name, &got[i], &want[i], 1e-3, 1e-4 * scale.max(1e-3));
    }
}

#[test]
fn wrong_parameter_length_is_a_shape_error() {
    let mlp = Mlp::new(&[4, 3, 2]);
    let w = Tensor::zeros(&Device::Cpu, &[7]).unwrap();
    let x = Tensor::zeros(&Device::Cpu, &[2, 4]).unwrap();
    let e = mlp.forward(&w, &x).unwrap_err().to_string();
    assert!(e.contains("[7]") && e.contains(&mlp.num_params().to_string()), "{e}");
}
