//! `geopath selftest`: the chosen device against the native CPU backend on the shapes the
//! experiments run, for a machine where the test suite cannot run (no Rust toolchain on a lent
//! GPU): each layout of a matrix product; LeNet-300-100 at batch 200 end to end (logits, JVP,
//! loss gradient, Hessian-vector product, a Steihaug–Toint step); VGG11-BN at batch 8 (logits and JVP end to end,
//! then each layer's ops on the same inputs: every convolution forward, JVP, data and weight
//! gradient, BatchNorm's training forward and backward, max pooling and its backward). Each
//! case reports the relative error `‖device − cpu‖ / ‖cpu‖`.
//!
//! VGG's gradients are checked op by op, not end to end: max pooling's argmax flips where two
//! inputs of a window lie within rounding of each other, and one flip changes the gradient of
//! every layer below it (VGG11-BN at batch 8, the CPU backend against the reference loops:
//! relative error 1.4e-2 in the loss gradient while the logits agreed to 6e-6).

use crate::autodiff;
use crate::device::Device;
use crate::error::Result;
use crate::geodesic::{steihaug_cg, Metric, MetricKind};
use crate::nn::network::Network;
use crate::ops::conv::{conv2d, conv2d_backward_data, conv2d_backward_weight, conv2d_jvp};
use crate::ops::matmul::{matmul_ex, MatmulOpts};
use crate::ops::norm::{batchnorm_backward, batchnorm_train};
use crate::ops::pool::{maxpool2d, maxpool2d_backward};
use crate::tensor::Tensor;
use serde::Serialize;

/// Largest relative error a case may have (f32 sums in another order).
pub const TOLERANCE: f64 = 1e-3;

/// One compared result.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// What was compared, e.g. `vgg11-bn batch 8: loss gradient`.
    pub name: String,
    /// `‖device − cpu‖ / ‖cpu‖` (∞ when the device's result is not finite or of another size).
    pub relative_error: f64,
    /// Whether it is within [`TOLERANCE`].
    pub pass: bool,
}

impl Case {
    /// `got` (the device's result) against `want` (the CPU backend's).
    fn compare(name: String, got: &Tensor, want: &Tensor) -> Result<Case> {
        let (g, w) = (got.to_vec()?, want.to_vec()?);
        let relative_error = if g.len() != w.len() || g.iter().any(|v| !v.is_finite()) {
            f64::INFINITY
        } else {
            let diff: f64 = g.iter().zip(&w).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
            let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum();
            (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
        };
        Ok(Case { name, relative_error, pass: relative_error <= TOLERANCE })
    }
}

/// Seeded values in [-1, 1) on `device` and on the CPU backend.
fn pair(device: &Device, shape: &[usize], seed: u64) -> Result<(Tensor, Tensor)> {
    let v = crate::bench::seeded_values(shape.iter().product(), seed);
    Ok((Tensor::from_vec(device, shape, v.clone())?, Tensor::from_vec(&Device::Cpu, shape, v)?))
}

/// Runs every case on `device` and on the CPU backend.
pub fn run(device: &Device) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    let mut push = |name: String, got: &Tensor, want: &Tensor| -> Result<()> {
        cases.push(Case::compare(name, got, want)?);
        Ok(())
    };
    for (trans_a, trans_b, layout) in [(false, false, "NN"), (true, false, "TN"), (false, true, "NT")] {
        let (a, ac) = pair(device, &[515, 1027], 1)?;
        let (b, bc) = pair(device, &[1027, 515], 2)?;
        let o = MatmulOpts { trans_a, trans_b, ..Default::default() };
        let (a, ac) = if trans_a { (a.reshape(&[1027, 515])?, ac.reshape(&[1027, 515])?) } else { (a, ac) };
        let (b, bc) = if trans_b { (b.reshape(&[515, 1027])?, bc.reshape(&[515, 1027])?) } else { (b, bc) };
        let (m, n, k) = (515, 515, 1027);
        push(format!("matmul {layout} {m}x{n}x{k}"), &matmul_ex(&a, &b, o)?, &matmul_ex(&ac, &bc, o)?)?;
    }
    for (model, input, batch) in [("lenet-300-100", [1, 28, 28], 200), ("vgg11-bn", [3, 32, 32], VGG_BATCH)] {
        let spec = crate::nn::spec::load(model)?;
        let net = Network::new(&spec, input, 10, device)?;
        let cpu = Network::new(&spec, input, 10, &Device::Cpu)?;
        let w = net.init_params(1)?;
        let wc = w.to_device(&Device::Cpu)?;
        let (x, xc) = pair(device, &[batch, input[0], input[1], input[2]], 3)?;
        let (v, vc) = pair(device, &[w.numel()], 4)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
        let (y, yc) =
            (Tensor::from_u32(device, &[batch], &labels)?, Tensor::from_u32(&Device::Cpu, &[batch], &labels)?);
        let what = |s: &str| format!("{model} batch {batch}: {s}");
        push(what("logits"), &autodiff::forward(&net, &w, &x)?, &autodiff::forward(&cpu, &wc, &xc)?)?;
        let (_, dz) = autodiff::jvp(&net, &w, &v, &x)?;
        let (_, dzc) = autodiff::jvp(&cpu, &wc, &vc, &xc)?;
        push(what("JVP"), &dz, &dzc)?;
        if model != "lenet-300-100" {
            continue;
        }
        for n in [&net, &cpu] {
            n.set_train(true);
        }
        let (_, g) = autodiff::loss_grad(&net, &w, &x, &y)?;
        let (_, gc) = autodiff::loss_grad(&cpu, &wc, &xc, &yc)?;
        push(what("loss gradient (training mode)"), &g, &gc)?;
        let (_, h) = autodiff::loss_hvp(&net, &w, &v, &x, &y)?;
        let (_, hc) = autodiff::loss_hvp(&cpu, &wc, &vc, &xc, &yc)?;
        push(what("Hessian-vector product (training mode)"), &h, &hc)?;
        for n in [&net, &cpu] {
            n.set_train(false);
        }
        // Ten Steihaug–Toint iterations in the Fisher metric, inside the ball (scalars on the
        // device on hardware GPUs, on the host on the CPU backend).
        let step = |n: &Network, w: &Tensor, x: &Tensor, g: &Tensor| -> Result<Tensor> {
            let metric = Metric::new(n, w.clone(), x.clone(), None, MetricKind::Fisher, 1e-3)?;
            Ok(steihaug_cg(&|v: &Tensor| metric.apply(v), g, 1.0, 1e3, 10, 0.0)?.theta)
        };
        push(what("Steihaug-Toint step (10 Fisher products)"), &step(&net, &w, &x, &g)?, &step(&cpu, &wc, &xc, &gc)?)?;
    }
    vgg_layers(device, &mut push)?;
    Ok(cases)
}

/// Batch of the VGG11-BN cases.
const VGG_BATCH: usize = 8;

/// Every layer of VGG11-BN at [`VGG_BATCH`], op by op on the same inputs.
fn vgg_layers(device: &Device, push: &mut dyn FnMut(String, &Tensor, &Tensor) -> Result<()>) -> Result<()> {
    let mut seed = 10;
    let mut pair = |shape: &[usize]| {
        seed += 1;
        pair(device, shape, seed)
    };
    for (i, l) in crate::bench::conv_layers("vgg11-bn")?.iter().enumerate() {
        let [c, h, w] = l.input;
        let what = |s: &str| format!("vgg11-bn conv {}: {c}→{} {h}x{w} batch {VGG_BATCH}: {s}", i + 1, l.out);
        let g = l.geometry;
        let (x, xc) = pair(&[VGG_BATCH, c, h, w])?;
        let (dx, dxc) = pair(&[VGG_BATCH, c, h, w])?;
        let (wt, wc) = pair(&[l.out, c, l.kernel, l.kernel])?;
        let (dw, dwc) = pair(&[l.out, c, l.kernel, l.kernel])?;
        let (b, bc) = pair(&[l.out])?;
        let (db, dbc) = pair(&[l.out])?;
        push(what("forward"), &conv2d(&x, &wt, Some(&b), g, true)?, &conv2d(&xc, &wc, Some(&bc), g, true)?)?;
        let (_, dy) = conv2d_jvp(&x, Some(&dx), &wt, &dw, Some((&b, &db)), g, true)?;
        let (_, dyc) = conv2d_jvp(&xc, Some(&dxc), &wc, &dwc, Some((&bc, &dbc)), g, true)?;
        push(what("JVP"), &dy, &dyc)?;
        let y_shape = conv2d(&xc, &wc, None, g, false)?.shape().to_vec();
        let (gy, gyc) = pair(&y_shape)?;
        push(
            what("data gradient"),
            &conv2d_backward_data(&gy, &wt, x.shape(), g)?,
            &conv2d_backward_data(&gyc, &wc, xc.shape(), g)?,
        )?;
        push(
            what("weight gradient"),
            &conv2d_backward_weight(&x, &gy, wt.shape(), g)?,
            &conv2d_backward_weight(&xc, &gyc, wc.shape(), g)?,
        )?;
        // BatchNorm over the layer's output channels, then 2x2 max pooling.
        let (gamma, gammac) = pair(&[l.out])?;
        let (y, yc) = pair(&y_shape)?;
        let (out, mean, invstd) = batchnorm_train(&y, &gamma, &b, 1e-5)?;
        let (outc, meanc, invstdc) = batchnorm_train(&yc, &gammac, &bc, 1e-5)?;
        push(what("BatchNorm training forward"), &out, &outc)?;
        let (gx, ggamma, _) = batchnorm_backward(&gy, &y, &gamma, &mean, &invstd)?;
        let (gxc, ggammac, _) = batchnorm_backward(&gyc, &yc, &gammac, &meanc, &invstdc)?;
        push(what("BatchNorm backward (input)"), &gx, &gxc)?;
        push(what("BatchNorm backward (scale)"), &ggamma, &ggammac)?;
        if y_shape[2] >= 2 {
            let (pooled, at) = maxpool2d(&y, 2, 2)?;
            let (pooledc, atc) = maxpool2d(&yc, 2, 2)?;
            push(what("max pooling"), &pooled, &pooledc)?;
            let (gp, gpc) = pair(pooled.shape())?;
            push(
                what("max pooling backward"),
                &maxpool2d_backward(&gp, &at, &y_shape)?,
                &maxpool2d_backward(&gpc, &atc, &y_shape)?,
            )?;
        }
    }
    Ok(())
}
