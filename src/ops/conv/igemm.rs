//! Implicit-GEMM convolutions for hardware GPUs (`kernels/conv2d_igemm.wgsl`): the forward
//! pass and its fused JVP as products of the weights `[O, C KH KW]` by patches
//! `[C KH KW, N OH OW]` read on the fly from the input, and the weight gradient as a split-K
//! product of the output gradient by the patches over the long `N OH OW` reduction.

use super::{buf, forward_bindings, params, sum_splits, target_invocations, ForwardOperands};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, KernelKey};
use crate::kernels::{FLAG_BIAS, STAGED_WG};
use crate::reference::conv::ConvShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Side of the output block of one workgroup ([`STAGED_WG`], 4 × 4 outputs per invocation).
const BLOCK: usize = 4 * STAGED_WG[0] as usize;
/// Steps of the reduction staged at a time (`BK` in the kernel).
const BK: usize = 16;
/// Invocations per workgroup.
const INVOCATIONS: usize = (STAGED_WG[0] * STAGED_WG[1]) as usize;

/// Workgroups `[x, y, z]`, each count checked against the dispatch limit.
fn grid(x: usize, y: usize, z: usize) -> Result<[u32; 3]> {
    let count = |v: usize| {
        u32::try_from(v)
            .ok()
            .filter(|&v| v <= 65_535)
            .ok_or_else(|| Error::Invalid(format!("conv2d: {v} workgroups along one axis is too many")))
    };
    Ok([count(x)?, count(y)?, count(z)?])
}

/// The forward convolution or its JVP into fresh outputs; without a tangent `x` and `w` may be
/// in f16 storage (`conv2d_igemm_f16`).
pub(super) fn forward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    f: ForwardOperands,
) -> Result<(Tensor, Option<Tensor>)> {
    let (y, dy) = f.outputs(ctx, op, s)?;
    let (flags, inputs, outputs) = (f.flags(), f.inputs(), forward_bindings(&y, &dy));
    let pixels = s.n * s.oh * s.ow;
    let entry = if f.jvp() { "conv_igemm_jvp" } else { "conv_igemm_fwd" };
    // f16 operands (the forward only; the dispatch refuses f16 in any other binding).
    let family = if !f.jvp() && f.x.dtype() == DType::F16 { "conv2d_igemm_f16" } else { "conv2d_igemm" };
    let p = params(s, flags, 0, pixels, 1, 0);
    let groups = grid(pixels.div_ceil(BLOCK), s.o.div_ceil(BLOCK), 1)?;
    ctx.dispatch(op, &KernelKey::new(family, entry), &p, &inputs, &outputs, groups)?;
    Ok((y, dy))
}

/// The weight gradient `[O, C, KH, KW]` from `x` and `gy`: blocks of the `O × C KH KW` product
/// times splits of the pixels, enough workgroups in all to fill the GPU, then one summing pass;
/// with `bias`, the bias gradient `[O]` too, summed from the staged `gy` blocks.
pub(super) fn backward_weight(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    x: &Tensor,
    gy: &Tensor,
    bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let q = s.c * s.kh * s.kw;
    let pixels = s.n * s.oh * s.ow;
    let blocks = q.div_ceil(BLOCK) * s.o.div_ceil(BLOCK);
    // Splits of at least 8 staged slices each, as many as fill the GPU's wanted invocations.
    let wanted = target_invocations(ctx.class).div_ceil(blocks * INVOCATIONS).max(1);
    let most = pixels.div_ceil(8 * BK).clamp(1, 65_535);
    let per_split = pixels.div_ceil(wanted.min(most)).div_ceil(BK) * BK;
    let splits = pixels.div_ceil(per_split.max(1)).max(1);
    let shape = if splits == 1 { s.w_shape().to_vec() } else { vec![splits, s.o * q] };
    let out = Tensor::gpu_uninit(ctx, op, &shape)?;
    let bias_out = if bias { Some(Tensor::gpu_uninit(ctx, op, &[splits, s.o])?) } else { None };
    let p = params(s, if bias { FLAG_BIAS } else { 0 }, 0, pixels, splits, per_split);
    let groups = grid(q.div_ceil(BLOCK), s.o.div_ceil(BLOCK), splits)?;
    let key = KernelKey::new("conv2d_igemm", "conv_igemm_bwd_weight");
    let mut outputs = vec![buf(&out)];
    outputs.extend(bias_out.as_ref().map(buf));
    ctx.dispatch(op, &key, &p, &[buf(x), buf(gy)], &outputs, groups)?;
    let summed = |partials: Tensor, shape: &[usize]| {
        if splits == 1 {
            partials.reshape(shape)
        } else {
            sum_splits(ctx, op, s, &partials, splits, shape)
        }
    };
    Ok((summed(out, &s.w_shape())?, bias_out.map(|b| summed(b, &[s.o])).transpose()?))
}
