//! Forward mode, reverse mode, forward-over-reverse HVP and Gauss–Newton products of an MLP and
//! a small CNN (conv, ReLU, max pooling, dense), against finite differences, adjoint
//! identities, explicit Jacobians and the CPU device.

mod common;
use common::*;
use geopath::autodiff::{self, Model, Tape, Var};
use geopath::nn::mlp::Mlp;
use geopath::ops::conv::Conv2dGeometry;
use geopath::{Device, Result, Tensor};

/// conv3x3(2->4, pad 1) ReLU, maxpool 2, conv3x3(4->4, stride 1, pad 1) ReLU, maxpool(3, stride
/// 1, overlapping windows), flatten, dense -> 3 classes. Input [B, 2, 6, 6].
struct SmallCnn;

impl Model for SmallCnn {
    fn param_shapes(&self) -> Vec<Vec<usize>> {
        vec![vec![4, 2, 3, 3], vec![4], vec![4, 4, 3, 3], vec![4], vec![4, 3], vec![3]]
    }

    fn forward(&self, tape: &mut Tape, p: &[Var], x: Var) -> Result<Var> {
        let same = Conv2dGeometry { stride: 1, pad: 1 };
        let h = tape.conv2d(x, p[0], Some(p[1]), same, true)?;
        let h = tape.maxpool2d(h, 2, 2)?;
        let h = tape.conv2d(h, p[2], Some(p[3]), same, true)?;
        let h = tape.maxpool2d(h, 3, 1)?;
        let batch = tape.value(h).primal.shape()[0];
        let h = tape.reshape(h, &[batch, 4])?;
        tape.linear(h, p[4], Some(p[5]), false)
    }
}

struct Problem<'a> {
    model: &'a dyn Model,
    x_shape: Vec<usize>,
    classes: usize,
    w: Vec<f32>,
    x: Vec<f32>,
    labels: Vec<u32>,
}

impl<'a> Problem<'a> {
    fn new(model: &'a dyn Model, x_shape: &[usize], classes: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let shapes = model.param_shapes();
        // Uniform weights scaled by fan-in, and non-zero biases so that no pre-activation sits
        // exactly on a ReLU kink.
        let mut w = Vec::new();
        for s in &shapes {
            let fan_in: usize = if s.len() == 1 { 1 } else { s.iter().product::<usize>() / s[s.len() - 1].min(s[0]) };
            let scale = if s.len() == 1 { 0.1 } else { (3.0 / fan_in as f32).sqrt() };
            w.extend((0..s.iter().product::<usize>()).map(|_| scale * rng.uniform()));
        }
        let batch = x_shape[0];
        let x = rng.vec(x_shape.iter().product());
        let labels = (0..batch).map(|_| rng.below(classes) as u32).collect();
        Problem { model, x_shape: x_shape.to_vec(), classes, w, x, labels }
    }
    fn batch(&self) -> usize {
        self.x_shape[0]
    }
    fn t(&self, dev: &Device, v: &[f32]) -> Tensor {
        Tensor::from_vec(dev, &[v.len()], v.to_vec()).unwrap()
    }
    fn x(&self, dev: &Device) -> Tensor {
        Tensor::from_vec(dev, &self.x_shape, self.x.clone()).unwrap()
    }
    fn labels(&self, dev: &Device) -> Tensor {
        Tensor::from_u32(dev, &[self.batch()], &self.labels).unwrap()
    }
    fn logits(&self, dev: &Device, w: &[f32]) -> Vec<f32> {
        autodiff::forward(self.model, &self.t(dev, w), &self.x(dev)).unwrap().to_vec().unwrap()
    }
    fn loss_grad(&self, dev: &Device, w: &[f32]) -> (f32, Vec<f32>) {
        let (l, g) = autodiff::loss_grad(self.model, &self.t(dev, w), &self.x(dev), &self.labels(dev)).unwrap();
        (l.to_vec().unwrap()[0], g.to_vec().unwrap())
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn shifted(w: &[f32], v: &[f32], eps: f32) -> Vec<f32> {
    w.iter().zip(v).map(|(a, b)| a + eps * b).collect()
}

/// The reference, then every device under test.
fn devices() -> Vec<Device> {
    std::iter::once(Device::Reference).chain(common::devices()).collect()
}

const EPS: f32 = 1e-3;

fn check_jvp(p: &Problem, name: &str) {
    let v = Rng::new(11).vec(p.w.len());
    for dev in devices() {
        let (z, jv) = autodiff::jvp(p.model, &p.t(&dev, &p.w), &p.t(&dev, &v), &p.x(&dev)).unwrap();
        let plus = p.logits(&dev, &shifted(&p.w, &v, EPS));
        let minus = p.logits(&dev, &shifted(&p.w, &v, -EPS));
        let fd: Vec<f32> = plus.iter().zip(&minus).map(|(a, b)| (a - b) / (2.0 * EPS)).collect();
        assert_close(&format!("{name} jvp on {dev:?}"), &jv.to_vec().unwrap(), &fd, 2e-2, 2e-3);
        assert_close(&format!("{name} jvp primal on {dev:?}"), &z.to_vec().unwrap(), &p.logits(&dev, &p.w), 1e-5, 1e-5);
    }
}

fn check_adjoint(p: &Problem, name: &str) {
    let mut rng = Rng::new(12);
    let v = rng.vec(p.w.len());
    let u = rng.vec(p.batch() * p.classes);
    for dev in devices() {
        let w = p.t(&dev, &p.w);
        let (_, jv) = autodiff::jvp(p.model, &w, &p.t(&dev, &v), &p.x(&dev)).unwrap();
        let ut = Tensor::from_vec(&dev, &[p.batch(), p.classes], u.clone()).unwrap();
        let jtu = autodiff::vjp(p.model, &w, &p.x(&dev), &ut).unwrap();
        let lhs = dot(&u, &jv.to_vec().unwrap());
        let rhs = dot(&jtu.to_vec().unwrap(), &v);
        assert!(
            (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
            "{name} on {dev:?}: <u,Jv> = {lhs}, <J^T u, v> = {rhs}"
        );
    }
}

fn check_grad(p: &Problem, name: &str) {
    let v = Rng::new(13).vec(p.w.len());
    for dev in devices() {
        let fd = (p.loss_grad(&dev, &shifted(&p.w, &v, EPS)).0 - p.loss_grad(&dev, &shifted(&p.w, &v, -EPS)).0)
            / (2.0 * EPS);
        let gv = dot(&p.loss_grad(&dev, &p.w).1, &v) as f32;
        assert!(
            (gv - fd).abs() <= 1e-2 * fd.abs().max(0.1),
            "{name} on {dev:?}: <grad, v> = {gv}, finite difference {fd}"
        );
    }
}

fn check_hvp(p: &Problem, name: &str) {
    let mut rng = Rng::new(14);
    let v = rng.vec(p.w.len());
    let u = rng.vec(p.w.len());
    for dev in devices() {
        let w = p.t(&dev, &p.w);
        let (g, hv) = autodiff::loss_hvp(p.model, &w, &p.t(&dev, &v), &p.x(&dev), &p.labels(&dev)).unwrap();
        let (_, hu) = autodiff::loss_hvp(p.model, &w, &p.t(&dev, &u), &p.x(&dev), &p.labels(&dev)).unwrap();
        let hv = hv.to_vec().unwrap();
        let gp = p.loss_grad(&dev, &shifted(&p.w, &v, EPS)).1;
        let gm = p.loss_grad(&dev, &shifted(&p.w, &v, -EPS)).1;
        let fd: Vec<f32> = gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * EPS)).collect();
        let scale = fd.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{name} hvp on {dev:?}"), &hv, &fd, 2e-2, 2e-3 * scale);
        assert_close(
            &format!("{name} hvp's gradient on {dev:?}"),
            &g.to_vec().unwrap(),
            &p.loss_grad(&dev, &p.w).1,
            1e-5,
            1e-6,
        );
        let uhv = dot(&u, &hv);
        let vhu = dot(&v, &hu.to_vec().unwrap());
        assert!((uhv - vhu).abs() <= 1e-4 * uhv.abs().max(1e-2), "{name} on {dev:?}: <u,Hv> = {uhv}, <v,Hu> = {vhu}");
    }
}

fn check_gauss_newton(p: &Problem, name: &str) {
    // J built column by column with JVPs along basis vectors; G v = (1/B) J^T J v.
    let n = p.w.len();
    let v = Rng::new(15).vec(n);
    for dev in devices() {
        let w = p.t(&dev, &p.w);
        let outs = p.batch() * p.classes;
        let mut jac = vec![0f32; outs * n];
        for col in 0..n {
            let mut e = vec![0f32; n];
            e[col] = 1.0;
            let (_, je) = autodiff::jvp(p.model, &w, &p.t(&dev, &e), &p.x(&dev)).unwrap();
            for (r, val) in je.to_vec().unwrap().into_iter().enumerate() {
                jac[r * n + col] = val;
            }
        }
        let jv: Vec<f32> = (0..outs).map(|r| (0..n).map(|c| jac[r * n + c] * v[c]).sum()).collect();
        let want: Vec<f32> =
            (0..n).map(|c| (0..outs).map(|r| jac[r * n + c] * jv[r]).sum::<f32>() / p.batch() as f32).collect();
        let got = autodiff::gauss_newton(p.model, &w, &p.t(&dev, &v), &p.x(&dev)).unwrap().to_vec().unwrap();
        assert_close(&format!("{name} Gauss-Newton on {dev:?}"), &got, &want, 1e-4, 1e-5);
    }
}

fn check_gpu_matches_cpu(p: &Problem, name: &str) {
    let Some(dev) = test_device() else { return };
    let v = Rng::new(16).vec(p.w.len());
    let run = |d: &Device| {
        let w = p.t(d, &p.w);
        let vv = p.t(d, &v);
        let (z, jv) = autodiff::jvp(p.model, &w, &vv, &p.x(d)).unwrap();
        let (g, hv) = autodiff::loss_hvp(p.model, &w, &vv, &p.x(d), &p.labels(d)).unwrap();
        let gn = autodiff::gauss_newton(p.model, &w, &vv, &p.x(d)).unwrap();
        [z, jv, g, hv, gn].map(|t| t.to_vec().unwrap())
    };
    let want = run(&Device::Reference);
    let got = run(&dev);
    for (i, what) in ["logits", "jvp", "grad", "hvp", "gauss-newton"].iter().enumerate() {
        let scale = want[i].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("{name} {what}"), &got[i], &want[i], 1e-3, 1e-4 * scale.max(1e-3));
    }
}

#[test]
fn mlp_jvp_vjp_grad_hvp_and_gauss_newton() {
    let mlp = Mlp::new(&[12, 9, 7, 5]);
    let p = Problem::new(&mlp, &[6, 12], 5, 1);
    check_jvp(&p, "mlp");
    check_adjoint(&p, "mlp");
    check_grad(&p, "mlp");
    check_hvp(&p, "mlp");
    let tiny = Mlp::new(&[5, 4, 3]);
    check_gauss_newton(&Problem::new(&tiny, &[3, 5], 3, 5), "tiny mlp");
}

#[test]
fn cnn_jvp_vjp_grad_hvp_and_gauss_newton() {
    let p = Problem::new(&SmallCnn, &[3, 2, 6, 6], 3, 2);
    check_jvp(&p, "cnn");
    check_adjoint(&p, "cnn");
    check_grad(&p, "cnn");
    check_hvp(&p, "cnn");
    check_gauss_newton(&p, "cnn");
    check_gpu_matches_cpu(&p, "cnn");
}

#[test]
fn gpu_autodiff_matches_the_cpu_device_on_lenet_shapes() {
    let mlp = Mlp::new(&[784, 300, 100, 10]);
    check_gpu_matches_cpu(&Problem::new(&mlp, &[20, 784], 10, 6), "lenet-300-100");
}

#[test]
fn wrong_parameter_length_is_a_shape_error() {
    let mlp = Mlp::new(&[4, 3, 2]);
    let w = Tensor::zeros(&Device::Reference, &[7]).unwrap();
    let x = Tensor::zeros(&Device::Reference, &[2, 4]).unwrap();
    let e = mlp.forward(&w, &x).unwrap_err().to_string();
    assert!(e.contains("[7]") && e.contains(&mlp.num_params().to_string()), "{e}");
}

fn spec_network(text: &str, input: [usize; 3], classes: usize) -> geopath::nn::network::Network {
    let spec = geopath::nn::spec::parse(text, "test", "test").unwrap();
    geopath::nn::network::Network::new(&spec, input, classes, &Device::Reference).unwrap()
}

#[test]
fn spec_network_with_batchnorm_and_dropout_in_train_and_eval_mode() {
    // Train mode: batch statistics (their derivative is part of every rule) and a fixed dropout
    // mask; eval mode: running statistics. Both must pass every autodiff check.
    let text =
        "conv 3 3 pad=1\nbatchnorm\nrelu\nmaxpool 2\nflatten\ndropout 0.3\nlinear 6\nbatchnorm\nrelu\nlinear classes\n";
    let net = spec_network(text, [2, 4, 4], 3);
    net.set_dropout_seed(7);
    for train in [true, false] {
        net.set_train(train);
        let p = Problem::new(&net, &[5, 2, 4, 4], 3, 21);
        let name = if train { "bn/dropout net (train)" } else { "bn/dropout net (eval)" };
        check_jvp(&p, name);
        check_adjoint(&p, name);
        check_grad(&p, name);
        check_hvp(&p, name);
        check_gauss_newton(&p, name);
    }
}

#[test]
fn spec_network_gpu_matches_cpu_with_batchnorm() {
    let Some(dev) = test_device() else { return };
    let text = "conv 4 3 pad=1\nbatchnorm\nrelu\nmaxpool 2\nconv 5 3 pad=1\nrelu\nflatten\nlinear 7\nbatchnorm\nrelu\nlinear classes\n";
    let spec = geopath::nn::spec::parse(text, "test", "test").unwrap();
    for train in [true, false] {
        let cpu_net = geopath::nn::network::Network::new(&spec, [3, 6, 6], 4, &Device::Reference).unwrap();
        let gpu_net = geopath::nn::network::Network::new(&spec, [3, 6, 6], 4, &dev).unwrap();
        cpu_net.set_train(train);
        gpu_net.set_train(train);
        let p = Problem::new(&cpu_net, &[6, 3, 6, 6], 4, 22);
        let v = Rng::new(23).vec(p.w.len());
        let run = |net: &geopath::nn::network::Network, d: &Device| {
            let w = p.t(d, &p.w);
            let vv = p.t(d, &v);
            let (z, jv) = autodiff::jvp(net, &w, &vv, &p.x(d)).unwrap();
            let (g, hv) = autodiff::loss_hvp(net, &w, &vv, &p.x(d), &p.labels(d)).unwrap();
            [z, jv, g, hv].map(|t| t.to_vec().unwrap())
        };
        let want = run(&cpu_net, &Device::Reference);
        let got = run(&gpu_net, &dev);
        for (i, what) in ["logits", "jvp", "grad", "hvp"].iter().enumerate() {
            let scale = want[i].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_close(&format!("bn net train={train} {what}"), &got[i], &want[i], 1e-3, 2e-4 * scale.max(1e-3));
        }
    }
}
