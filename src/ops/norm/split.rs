//! Training-mode BatchNorm with each channel spread over several workgroups
//! (`kernels/norm_split.wgsl`): on a hardware GPU one workgroup per channel leaves most of the
//! GPU idle wherever a layer has few channels and many pixels (VGG's first BatchNorm at batch
//! 128: 64 workgroups of 131,072 elements each). Each op is a few dispatches: partial sums per
//! chunk of a channel (`bn_sums`, twice for two-pass statistics), one invocation per channel
//! adding the partials into the channel's outputs and the affine coefficients of its epilogue
//! (`bn_finish_*`), then the epilogue with one invocation per element (`bn_apply`).

use super::{buf, channel_workgroup, groups_1d, params};
use crate::error::{Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{
    u32_of, NormParams, BN_SUMS_BACKWARD, BN_SUMS_CENTRED, BN_SUMS_CENTRED_BACKWARD, BN_SUMS_CENTRED_DX, BN_SUMS_GY_XC,
    BN_SUMS_X, BN_SUMS_X_DX, ELEMENT_WG,
};
use crate::reference::norm::BnShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Workgroups that keep a hardware GPU busy (a few per compute unit on large GPUs).
const TARGET_WORKGROUPS: usize = 512;
/// Terms per partial (`TERMS` in the kernel).
const TERMS: usize = 8;
/// Coefficients per channel (`COEFFS` in the kernel).
const COEFFS: usize = 16;

/// How a channel's elements are spread over workgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPlan {
    /// Workgroups per channel.
    pub splits: usize,
    /// Elements per workgroup, a multiple of the workgroup size.
    pub chunk: usize,
}

/// The kernel variants of the training-mode BatchNorm ops on a wgpu device (chosen by
/// [`BnVariant::select`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnVariant {
    /// One workgroup per channel, one dispatch (`kernels/norm.wgsl`).
    PerChannel,
    /// Several workgroups per channel (`kernels/norm_split.wgsl`).
    Split(SplitPlan),
}

impl BnVariant {
    /// The variant for `s` on `ctx`: on a hardware GPU, when the channels alone give fewer than
    /// [`TARGET_WORKGROUPS`] workgroups, each channel is split into chunks of at least one
    /// element per invocation until about that many are running; otherwise (and on software
    /// drivers, whose few cores one workgroup per channel already fills) one per channel.
    pub fn select(ctx: &GpuContext, s: &BnShape) -> BnVariant {
        if ctx.class != AdapterClass::Hardware {
            return BnVariant::PerChannel;
        }
        let count = s.count();
        let wg = channel_workgroup(count) as usize;
        let wanted = TARGET_WORKGROUPS.div_ceil(s.c.max(1));
        let chunk = count.div_ceil(wanted).max(wg).next_multiple_of(wg);
        let splits = count.div_ceil(chunk);
        // At most TARGET_WORKGROUPS splits; the channels index workgroups along y.
        if splits <= 1 || s.c > 65_535 {
            BnVariant::PerChannel
        } else {
            BnVariant::Split(SplitPlan { splits, chunk })
        }
    }
}

/// The uniform block of a `norm_split.wgsl` dispatch.
fn split_params(s: &BnShape, plan: &SplitPlan, eps: f32, kind: u32, inputs: u32, outputs: u32) -> NormParams {
    NormParams {
        splits: u32_of(plan.splits),
        chunk: u32_of(plan.chunk),
        kind,
        inputs,
        outputs,
        ..params(s, eps, 0.0, 0.0)
    }
}

/// Partial sums of kind `kind` over `data` (up to four tensors; `centre` the fifth input slot
/// `a4`: a per-channel centre or the first pass's partials), `[C, splits, 8]`.
fn sums(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    kind: u32,
    data: &[&Tensor],
    centre: Option<&Tensor>,
) -> Result<Tensor> {
    let partials = Tensor::gpu_uninit(ctx, op, &[s.c, plan.splits, TERMS])?;
    // Unused slots before a4 repeat the first input (bound, never read).
    let mut ins: Vec<_> = (0..4).map(|i| buf(data.get(i).unwrap_or(&data[0]))).collect();
    ins.extend(centre.map(buf));
    let key =
        KernelKey { family: "norm_split", entry: "bn_sums", specialise: vec![("WG", channel_workgroup(s.count()))] };
    let p = split_params(s, plan, 0.0, kind, 0, 0);
    let groups = [u32_of(plan.splits), u32_of(s.c), 1];
    ctx.dispatch(op, &key, &p, &ins, &[buf(&partials)], groups)?;
    Ok(partials)
}

/// Runs the `bn_finish_*` entry point `entry` on `ins`: the `[C, 16]` coefficients and the
/// channel's two `[C]` outputs (unwritten by `bn_finish_jvp`).
fn finish(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    entry: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    eps: f32,
    ins: &[&Tensor],
) -> Result<(Tensor, Tensor, Tensor)> {
    let coefficients = Tensor::gpu_uninit(ctx, op, &[s.c, COEFFS])?;
    let first = Tensor::gpu_uninit(ctx, op, &[s.c])?;
    let second = Tensor::gpu_uninit(ctx, op, &[s.c])?;
    let ins: Vec<_> = ins.iter().map(|t| buf(t)).collect();
    let outs = [buf(&coefficients), buf(&first), buf(&second)];
    let p = split_params(s, plan, eps, 0, 0, 0);
    ctx.dispatch(op, &KernelKey::new("norm_split", entry), &p, &ins, &outs, groups_1d(s.c, ELEMENT_WG))?;
    Ok((coefficients, first, second))
}

/// The affine epilogue over `inputs` (1, 2 or 4, each x-shaped) into `outputs` fresh tensors.
fn apply(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    inputs: &[&Tensor],
    coefficients: &Tensor,
    outputs: usize,
) -> Result<Vec<Tensor>> {
    if !matches!(inputs.len(), 1 | 2 | 4) || !matches!(outputs, 1 | 2) {
        return Err(Error::Invalid(format!("{op}: bn_apply takes 1, 2 or 4 inputs and 1 or 2 outputs")));
    }
    let outs = (0..outputs).map(|_| Tensor::gpu_uninit(ctx, op, inputs[0].shape())).collect::<Result<Vec<_>>>()?;
    let mut ins: Vec<_> = (0..4).map(|i| buf(inputs.get(i).unwrap_or(&inputs[0]))).collect();
    ins.push(buf(coefficients));
    let out_bufs: Vec<_> = outs.iter().map(buf).collect();
    let p = split_params(s, plan, 0.0, 0, inputs.len() as u32, outputs as u32);
    let key = KernelKey::new("norm_split", "bn_apply");
    ctx.dispatch(op, &key, &p, &ins, &out_bufs, groups_1d(s.numel(), ELEMENT_WG))?;
    Ok(outs)
}

/// The single output of an epilogue.
fn only(mut v: Vec<Tensor>) -> Tensor {
    v.pop().expect("one output")
}

/// `batchnorm_train`: `(y, mean, invstd)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn train(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    eps: f32,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let first = sums(ctx, op, plan, s, BN_SUMS_X, &[x], None)?;
    let second = sums(ctx, op, plan, s, BN_SUMS_CENTRED, &[x], Some(&first))?;
    let (k, mean, invstd) = finish(ctx, op, "bn_finish_train", plan, s, eps, &[&first, &second, gamma, beta])?;
    Ok((only(apply(ctx, op, plan, s, &[x], &k, 1)?), mean, invstd))
}

/// `batchnorm_jvp` on `[x, dx, gamma, dgamma, beta, dbeta]`: `(y, dy)`.
pub(super) fn jvp(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    eps: f32,
    all: &[&Tensor; 6],
) -> Result<(Tensor, Tensor)> {
    let [x, dx, gamma, dgamma, beta, dbeta] = *all;
    let first = sums(ctx, op, plan, s, BN_SUMS_X_DX, &[x, dx], None)?;
    let second = sums(ctx, op, plan, s, BN_SUMS_CENTRED_DX, &[x, dx], Some(&first))?;
    let ins = [&first, &second, gamma, dgamma, beta, dbeta];
    let (k, _, _) = finish(ctx, op, "bn_finish_jvp", plan, s, eps, &ins)?;
    let mut outs = apply(ctx, op, plan, s, &[x, dx], &k, 2)?.into_iter();
    Ok((outs.next().expect("y"), outs.next().expect("dy")))
}

/// The backward rules whose sums are `gy` and `gy (x - m)` for a given centre `m`, on
/// `[gy, x, gamma, m, scale]`: the training backward (`m` the batch mean, `scale` the batch
/// invstd; epilogue over `gy` and `x`) and with `eval` the eval backward (`m` the running mean,
/// `scale` the running variance; epilogue over `gy`). `(gx, ggamma, gbeta)`.
fn centred_backward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    eps: f32,
    all: &[&Tensor; 5],
    eval: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let [gy, x, gamma, centre, scale] = *all;
    let (entry, epilogue) =
        if eval { ("bn_finish_eval_backward", &[gy][..]) } else { ("bn_finish_backward", &[gy, x][..]) };
    let first = sums(ctx, op, plan, s, BN_SUMS_GY_XC, &[gy, x], Some(centre))?;
    let (k, gg, gb) = finish(ctx, op, entry, plan, s, eps, &[&first, &first, gamma, centre, scale])?;
    Ok((only(apply(ctx, op, plan, s, epilogue, &k, 1)?), gg, gb))
}

/// `batchnorm_backward` on `[gy, x, gamma, mean, invstd]`: `(gx, ggamma, gbeta)`.
pub(super) fn backward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    all: &[&Tensor; 5],
) -> Result<(Tensor, Tensor, Tensor)> {
    centred_backward(ctx, op, plan, s, 0.0, all, false)
}

/// `batchnorm_backward_jvp` on `[gy, dgy, x, dx, gamma, dgamma]`: `(dgx, dggamma, dgbeta)`.
pub(super) fn backward_jvp(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    eps: f32,
    all: &[&Tensor; 6],
) -> Result<(Tensor, Tensor, Tensor)> {
    let [gy, dgy, x, dx, gamma, dgamma] = *all;
    let data = [gy, dgy, x, dx];
    let first = sums(ctx, op, plan, s, BN_SUMS_BACKWARD, &data, None)?;
    let second = sums(ctx, op, plan, s, BN_SUMS_CENTRED_BACKWARD, &data, Some(&first))?;
    let (k, dgg, dgb) = finish(ctx, op, "bn_finish_backward_jvp", plan, s, eps, &[&first, &second, gamma, dgamma])?;
    Ok((only(apply(ctx, op, plan, s, &data, &k, 1)?), dgg, dgb))
}

/// `batchnorm_eval_backward` on `[gy, x, gamma, running_mean, running_var]`:
/// `(gx, ggamma, gbeta)`.
pub(super) fn eval_backward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    plan: &SplitPlan,
    s: &BnShape,
    eps: f32,
    all: &[&Tensor; 5],
) -> Result<(Tensor, Tensor, Tensor)> {
    centred_backward(ctx, op, plan, s, eps, all, true)
}
