//! Batch normalisation (`kernels/norm.wgsl`, `kernels/norm_split.wgsl`).
//!
//! BatchNorm takes `x` `[N, C, H, W]` (statistics per channel over `N`, `H`, `W`) or `[N, C]`
//! (dense layers, treated as `H = W = 1`); `gamma`, `beta` and the statistics are `[C]`. On a
//! GPU every training-mode op takes one of the variants of [`BnVariant`]: one dispatch with one
//! workgroup per channel (two-pass statistics, mean then centred sums, as per-invocation serial
//! sums plus a tree in workgroup memory, then the elementwise epilogue), or on hardware GPUs
//! each channel spread over several workgroups ([`split`]). Notation in the docs below, per channel:
//! `M = N·H·W`, `s = invstd = 1 / sqrt(var + eps)` (biased batch variance),
//! `xh = (x - mean) s`, `mean(.)` a per-channel mean over the `M` elements.
//!
//! Autodiff: eval-mode BatchNorm, `y = gamma (x - rm) s_r + beta`
//! with fixed running statistics (`s_r = 1 / sqrt(rv + eps)`), is affine in each of `x`,
//! `gamma` and `beta`: its JVP is `dy = dgamma (x - rm) s_r + gamma s_r dx + dbeta` and its
//! backward is [`batchnorm_eval_backward`] (`gx = gy gamma s_r`, `ggamma = sum(gy (x - rm) s_r)`,
//! `gbeta = sum(gy)`), itself bilinear in `gy` and `(x, gamma)`.

mod split;

pub use split::{BnVariant, SplitPlan};

use super::{buf, common_device, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{GpuContext, KernelKey};
use crate::kernels::{u32_of, NormParams, ELEMENT_WG};
use crate::reference::norm::BnShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// The per-channel entry point `entry` of `norm.wgsl`, with its workgroup size `WG`
/// specialised to the channel length: 64 invocations for channels of at most 4096 elements
/// (dense layers, small images: a wider workgroup would idle), 256 above. In one noisy
/// lavapipe run (2 cores, other builds running) 64 ran `[200, 512]` about 2x faster and 256
/// ran `[200, 16, 32, 32]` about 2x faster than the other choice.
fn channel_kernel(entry: &'static str, s: &BnShape) -> (KernelKey, [u32; 3]) {
    let wg = channel_workgroup(s.count());
    let key = KernelKey { family: "norm", entry, specialise: vec![("WG", wg)] };
    (key, groups_1d(s.c * wg as usize, wg))
}

/// Invocations per workgroup summing a channel (or a chunk of one) of `count` elements: 64 up
/// to 4096 elements, 256 above.
fn channel_workgroup(count: usize) -> u32 {
    if count <= 4096 {
        64
    } else {
        256
    }
}

/// The geometry of `x` (`[N, C, H, W]` or `[N, C]`, non-empty).
fn dims(op: &'static str, x: &Tensor) -> Result<BnShape> {
    let s = match *x.shape() {
        [n, c, h, w] => BnShape { n, c, hw: h * w },
        [n, c] => BnShape { n, c, hw: 1 },
        _ => return Err(shape_err(op, format!("needs x [N, C, H, W] or [N, C], got {:?}", x.shape()))),
    };
    if s.numel() == 0 {
        return Err(shape_err(op, format!("empty x {:?}", x.shape())));
    }
    Ok(s)
}

/// Checks that per-channel tensor `t` (named `what`) is `[C]` for `x`.
fn check_channel(op: &'static str, what: &str, t: &Tensor, s: &BnShape, x: &Tensor) -> Result<()> {
    if t.shape() != [s.c] {
        return Err(shape_err(op, format!("{what} {:?} vs x {:?} (needs [{}])", t.shape(), x.shape(), s.c)));
    }
    Ok(())
}

/// Checks that `t` (named `what`) has the shape of `x`.
fn check_like(op: &'static str, what: &str, t: &Tensor, x: &Tensor) -> Result<()> {
    if t.shape() != x.shape() {
        return Err(shape_err(op, format!("{what} {:?} vs x {:?}", t.shape(), x.shape())));
    }
    Ok(())
}

/// The uniform block of `norm.wgsl`.
fn params(s: &BnShape, eps: f32, momentum: f32, unbias: f32) -> NormParams {
    NormParams {
        c: u32_of(s.c),
        hw: u32_of(s.hw),
        count: u32_of(s.count()),
        total: u32_of(s.numel()),
        eps,
        momentum,
        unbias,
        splits: 1,
        chunk: 0,
        kind: 0,
        inputs: 0,
        outputs: 0,
    }
}

/// Records a per-channel entry point of `norm.wgsl` (one workgroup per channel) with `ins`,
/// producing one tensor of the shape of `ins[0]` (x-shaped) followed by `n_channel` `[C]` tensors.
fn per_channel(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    entry: &'static str,
    s: &BnShape,
    eps: f32,
    ins: &[&Tensor],
    n_channel: usize,
) -> Result<Vec<Tensor>> {
    let mut outs = vec![Tensor::gpu_uninit(ctx, op, ins[0].shape())?];
    for _ in 0..n_channel {
        outs.push(Tensor::gpu_uninit(ctx, op, &[s.c])?);
    }
    let in_bufs: Vec<_> = ins.iter().map(|t| buf(t)).collect();
    let out_bufs: Vec<_> = outs.iter().map(buf).collect();
    let (key, groups) = channel_kernel(entry, s);
    ctx.dispatch(op, &key, &params(s, eps, 0.0, 0.0), &in_bufs, &out_bufs, groups)?;
    Ok(outs)
}

/// Three outputs of a dispatch, in order.
fn three(v: Vec<Tensor>) -> (Tensor, Tensor, Tensor) {
    let mut it = v.into_iter();
    let a = it.next().unwrap();
    let b = it.next().unwrap();
    (a, b, it.next().unwrap())
}

/// Host slices of CPU tensors (callers have checked the device).
fn h(t: &Tensor) -> &[f32] {
    t.host().expect("CPU op on a GPU tensor")
}

/// Training mode: batch statistics. Returns `(y, mean [C], invstd [C])` with
/// `y = gamma (x - mean) invstd + beta`, `invstd = 1 / sqrt(var + eps)`, `var` the biased batch
/// variance.
pub fn batchnorm_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batchnorm_train";
    let s = dims(OP, x)?;
    check_channel(OP, "gamma", gamma, &s, x)?;
    check_channel(OP, "beta", beta, &s, x)?;
    let dev = common_device(OP, &[x, gamma, beta])?;
    cost::per_element(s.numel(), 6);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, m, is) = host_impl!(dev, norm::batchnorm_train)(&s, h(x), h(gamma), h(beta), eps);
            Ok((
                Tensor::host_result(&dev, x.shape(), y),
                Tensor::host_result(&dev, &[s.c], m),
                Tensor::host_result(&dev, &[s.c], is),
            ))
        }
        Device::Gpu(ctx) => match BnVariant::select(&ctx, &s) {
            BnVariant::PerChannel => per_channel(&ctx, OP, "bn_train", &s, eps, &[x, gamma, beta], 2).map(three),
            BnVariant::Split(plan) => split::train(&ctx, OP, &plan, &s, eps, x, gamma, beta),
        },
    }
}

/// Eval mode with running statistics:
/// `y = gamma (x - running_mean) / sqrt(running_var + eps) + beta` (one invocation per element
/// on a GPU). Affine in `x`, `gamma` and `beta`; see the module docs for its JVP and backward.
pub fn batchnorm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "batchnorm_eval";
    let s = dims(OP, x)?;
    check_channel(OP, "gamma", gamma, &s, x)?;
    check_channel(OP, "beta", beta, &s, x)?;
    check_channel(OP, "running_mean", running_mean, &s, x)?;
    check_channel(OP, "running_var", running_var, &s, x)?;
    let all = [x, gamma, beta, running_mean, running_var];
    let dev = common_device(OP, &all)?;
    cost::per_element(s.numel(), 2);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            x.shape(),
            host_impl!(dev, norm::batchnorm_eval)(&s, h(x), h(gamma), h(beta), h(running_mean), h(running_var), eps),
        )),
        Device::Gpu(ctx) => {
            let y = Tensor::gpu_uninit(&ctx, OP, x.shape())?;
            let ins: Vec<_> = all.iter().map(|t| buf(t)).collect();
            ctx.dispatch(
                OP,
                &KernelKey::new("norm", "bn_eval"),
                &params(&s, eps, 0.0, 0.0),
                &ins,
                &[buf(&y)],
                groups_1d(s.numel(), ELEMENT_WG),
            )?;
            Ok(y)
        }
    }
}

/// Eval-mode backward `(gx, ggamma, gbeta)` with fixed running statistics:
/// `gx = gy gamma s_r`, `ggamma = sum(gy (x - running_mean) s_r)`, `gbeta = sum(gy)`,
/// `s_r = 1 / sqrt(running_var + eps)`. Linear in `gy`, so its JVP along `dgy` alone is itself;
/// along `dx` and `dgamma` it adds `gy dgamma s_r` to `dgx` and `sum(gy dx s_r)` to `dggamma`.
pub fn batchnorm_eval_backward(
    gy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batchnorm_eval_backward";
    let s = dims(OP, x)?;
    check_like(OP, "gy", gy, x)?;
    check_channel(OP, "gamma", gamma, &s, x)?;
    check_channel(OP, "running_mean", running_mean, &s, x)?;
    check_channel(OP, "running_var", running_var, &s, x)?;
    let all = [gy, x, gamma, running_mean, running_var];
    let dev = common_device(OP, &all)?;
    cost::per_element(s.numel(), 2);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (gx, gg, gb) = host_impl!(dev, norm::batchnorm_eval_backward)(
                &s,
                h(gy),
                h(x),
                h(gamma),
                h(running_mean),
                h(running_var),
                eps,
            );
            Ok((
                Tensor::host_result(&dev, x.shape(), gx),
                Tensor::host_result(&dev, &[s.c], gg),
                Tensor::host_result(&dev, &[s.c], gb),
            ))
        }
        Device::Gpu(ctx) => match BnVariant::select(&ctx, &s) {
            BnVariant::PerChannel => per_channel(&ctx, OP, "bn_eval_backward", &s, eps, &all, 2).map(three),
            BnVariant::Split(plan) => split::eval_backward(&ctx, OP, &plan, &s, eps, &all),
        },
    }
}

/// Running-statistics update: `new = (1 - momentum) old + momentum batch`, the running variance
/// taking the unbiased batch variance (as PyTorch) recovered from `invstd`:
/// `max(1 / invstd² - eps, 0) · count / (count - 1)`. `count` is the number of elements per
/// channel in the batch (`N·H·W`), at least 2. Returns `(new_mean, new_var)`.
pub fn batchnorm_update_running(
    running_mean: &Tensor,
    running_var: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    count: usize,
    momentum: f32,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "batchnorm_update_running";
    if count < 2 {
        return Err(Error::Invalid(format!(
            "{OP}: the unbiased variance needs at least 2 values per channel, got count {count}"
        )));
    }
    let c = running_mean.numel();
    if running_mean.shape() != [c] {
        return Err(shape_err(OP, format!("running_mean {:?} must be 1-D [C]", running_mean.shape())));
    }
    for (what, t) in [("running_var", running_var), ("mean", mean), ("invstd", invstd)] {
        if t.shape() != running_mean.shape() {
            return Err(shape_err(OP, format!("{what} {:?} vs running_mean {:?}", t.shape(), running_mean.shape())));
        }
    }
    let all = [running_mean, running_var, mean, invstd];
    let dev = common_device(OP, &all)?;
    cost::per_element(c, 4);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (m, v) = host_impl!(dev, norm::batchnorm_update_running)(
                h(running_mean),
                h(running_var),
                h(mean),
                h(invstd),
                count,
                momentum,
                eps,
            );
            Ok((Tensor::host_result(&dev, &[c], m), Tensor::host_result(&dev, &[c], v)))
        }
        Device::Gpu(ctx) => {
            let nm = Tensor::gpu_uninit(&ctx, OP, &[c])?;
            let nv = Tensor::gpu_uninit(&ctx, OP, &[c])?;
            let s = BnShape { n: 1, c, hw: 1 };
            let unbias = (count as f64 / (count as f64 - 1.0)) as f32;
            let ins: Vec<_> = all.iter().map(|t| buf(t)).collect();
            ctx.dispatch(
                OP,
                &KernelKey::new("norm", "bn_update_running"),
                &params(&s, eps, momentum, unbias),
                &ins,
                &[buf(&nm), buf(&nv)],
                groups_1d(c, ELEMENT_WG),
            )?;
            Ok((nm, nv))
        }
    }
}

/// Training-mode backward `(gx, ggamma, gbeta)` from the saved `mean` and `invstd` of
/// [`batchnorm_train`]: `gbeta = sum(gy)`, `ggamma = sum(gy xh)`,
/// `gx = gamma s (gy - mean(gy) - xh mean(gy xh))`.
pub fn batchnorm_backward(
    gy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batchnorm_backward";
    let s = dims(OP, x)?;
    check_like(OP, "gy", gy, x)?;
    check_channel(OP, "gamma", gamma, &s, x)?;
    check_channel(OP, "mean", mean, &s, x)?;
    check_channel(OP, "invstd", invstd, &s, x)?;
    let all = [gy, x, gamma, mean, invstd];
    let dev = common_device(OP, &all)?;
    cost::per_element(s.numel(), 8);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (gx, gg, gb) = host_impl!(dev, norm::batchnorm_backward)(&s, h(gy), h(x), h(gamma), h(mean), h(invstd));
            Ok((
                Tensor::host_result(&dev, x.shape(), gx),
                Tensor::host_result(&dev, &[s.c], gg),
                Tensor::host_result(&dev, &[s.c], gb),
            ))
        }
        Device::Gpu(ctx) => match BnVariant::select(&ctx, &s) {
            BnVariant::PerChannel => per_channel(&ctx, OP, "bn_backward", &s, 0.0, &all, 2).map(three),
            BnVariant::Split(plan) => split::backward(&ctx, OP, &plan, &s, &all),
        },
    }
}

/// Training-mode forward mode `(y, dy)` along tangents `dx`, `dgamma`, `dbeta`, the batch
/// statistics differentiated too: `dxh = s (dx - mean(dx) - xh mean(xh dx))`,
/// `dy = dgamma xh + gamma dxh + dbeta`. On a GPU one dispatch (one workgroup per channel: two
/// reduction passes, then `y` and `dy` together), or four where [`BnVariant`] splits channels.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_jvp(
    x: &Tensor,
    dx: &Tensor,
    gamma: &Tensor,
    dgamma: &Tensor,
    beta: &Tensor,
    dbeta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "batchnorm_jvp";
    let s = dims(OP, x)?;
    check_like(OP, "dx", dx, x)?;
    check_channel(OP, "gamma", gamma, &s, x)?;
    check_channel(OP, "dgamma", dgamma, &s, x)?;
    check_channel(OP, "beta", beta, &s, x)?;
    check_channel(OP, "dbeta", dbeta, &s, x)?;
    let all = [x, dx, gamma, dgamma, beta, dbeta];
    let dev = common_device(OP, &all)?;
    cost::per_element(s.numel(), 10);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, dy) =
                host_impl!(dev, norm::batchnorm_jvp)(&s, h(x), h(dx), h(gamma), h(dgamma), h(beta), h(dbeta), eps);
            Ok((Tensor::host_result(&dev, x.shape(), y), Tensor::host_result(&dev, x.shape(), dy)))
        }
        Device::Gpu(ctx) => match BnVariant::select(&ctx, &s) {
            BnVariant::PerChannel => {
                let y = Tensor::gpu_uninit(&ctx, OP, x.shape())?;
                let dy = Tensor::gpu_uninit(&ctx, OP, x.shape())?;
                let ins: Vec<_> = all.iter().map(|t| buf(t)).collect();
                let (key, groups) = channel_kernel("bn_jvp", &s);
                ctx.dispatch(OP, &key, &params(&s, eps, 0.0, 0.0), &ins, &[buf(&y), buf(&dy)], groups)?;
                Ok((y, dy))
            }
            BnVariant::Split(plan) => split::jvp(&ctx, OP, &plan, &s, eps, &all),
        },
    }
}

/// The JVP of the training-mode backward rule (for forward-over-reverse Hessian-vector
/// products): tangents `(dgx, dggamma, dgbeta)` of [`batchnorm_backward`] along `dgy`, `dx`
/// and `dgamma`, the statistics recomputed from `x` with `eps`. With `a = mean(gy)`,
/// `b = mean(gy xh)`, `ds = -s² mean(xh dx)`, `dxh` as in [`batchnorm_jvp`],
/// `da = mean(dgy)`, `db = mean(dgy xh) + s (mean(gy dx) - a mean(dx) - b mean(xh dx))`:
/// `dgx = (dgamma s + gamma ds)(gy - a - xh b) + gamma s (dgy - da - dxh b - xh db)`,
/// `dggamma = M db`, `dgbeta = M da`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_jvp(
    gy: &Tensor,
    dgy: &Tensor,
    x: &Tensor,
    dx: &Tensor,
    gamma: &Tensor,
    dgamma: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batchnorm_backward_jvp";
    let s = dims(OP, x)?;
    check_like(OP, "gy", gy, x)?;
    check_like(OP, "dgy", dgy, x)?;
    check_like(OP, "dx", dx, x)?;
    check_channel(OP, "gamma", gamma, &s, x)?;
    check_channel(OP, "dgamma", dgamma, &s, x)?;
    let all = [gy, dgy, x, dx, gamma, dgamma];
    let dev = common_device(OP, &all)?;
    cost::per_element(s.numel(), 16);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (dgx, dgg, dgb) =
                host_impl!(dev, norm::batchnorm_backward_jvp)(&s, h(gy), h(dgy), h(x), h(dx), h(gamma), h(dgamma), eps);
            Ok((
                Tensor::host_result(&dev, x.shape(), dgx),
                Tensor::host_result(&dev, &[s.c], dgg),
                Tensor::host_result(&dev, &[s.c], dgb),
            ))
        }
        Device::Gpu(ctx) => match BnVariant::select(&ctx, &s) {
            BnVariant::PerChannel => per_channel(&ctx, OP, "bn_backward_jvp", &s, eps, &all, 2).map(three),
            BnVariant::Split(plan) => split::backward_jvp(&ctx, OP, &plan, &s, eps, &all),
        },
    }
}
