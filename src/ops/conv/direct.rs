//! The direct (gather) convolution kernels of `kernels/conv2d.wgsl` and the register-tiled 3x3
//! stride-1 pad-1 fast paths (`kernels/conv2d_3x3.wgsl`, `conv2d_bwd_weight_3x3`): the forward
//! pass and fused JVP, the data and weight gradients of layers too small to lower on software
//! adapters (and of empty shapes everywhere, and the data gradient of strides above 1 on
//! hardware GPUs), and the bias gradient on every adapter. The weight and bias gradients split
//! their reduction over `(n, oy)` rows into partial sums when the gradient alone would give
//! too few invocations.

use super::{buf, forward_bindings, groups, is_fast_3x3, params, sum_splits, target_invocations, ForwardOperands};
use crate::error::Result;
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::reference::conv::ConvShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Output pixels per invocation of the general kernels (`PX` in conv2d.wgsl).
const PX: usize = 4;

/// Tile `(OT, PX4)` of the 3x3 kernels: output channels and vec4 pixel groups per invocation.
/// On lavapipe (2 cores, N = 16, 64 -> 64 channels, 32 x 32) 16 channels x 16 pixels ran about
/// 10 GFLOP/s forward against about 7 for 8 x 8 and 2.7 for the general kernel (32 x 16 was
/// no better by much); the tile shrinks for small layers so that they waste little work.
/// Tuned for software adapters: hardware GPUs run every non-empty convolution as an implicit
/// GEMM, and reach these kernels only with an empty batch or no input channels, where the tile
/// does not matter.
fn tiles_3x3(o: usize, w: usize) -> (u32, u32) {
    let ot = match o {
        0..=4 => 4,
        5..=8 => 8,
        _ => 16,
    };
    let px4 = match w {
        0..=4 => 1,
        5..=8 => 2,
        _ => 4,
    };
    (ot, px4)
}

/// Output and input channels per invocation of `conv2d_bwd_weight_3x3` (`BW_OT`, `BW_CT`):
/// 8 x 8 (576 accumulators) ran about 1.3x faster than 4 x 4 on lavapipe. Hardware GPUs reach
/// this kernel only for empty shapes (see [`tiles_3x3`]).
const BW_TILES: (usize, usize) = (8, 8);

/// Splits of a reduction over the `rows` flattened `(n, oy)` rows for `base` invocations, each
/// split taking `z_per_split` workgroups along z: `(splits, rows_per_split)`.
fn reduction_splits(class: AdapterClass, base: usize, z_per_split: usize, rows: usize) -> (usize, usize) {
    let max_splits = (65_535 / z_per_split.max(1)).max(1);
    let want = target_invocations(class).div_ceil(base.max(1)).min(max_splits).clamp(1, rows.max(1));
    let rows_per_split = rows.div_ceil(want).max(1);
    (rows.div_ceil(rows_per_split).max(1), rows_per_split)
}

/// The forward convolution or its JVP into fresh outputs: the 3x3 fast kernel where it
/// applies, otherwise the general kernel.
pub(super) fn forward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    f: ForwardOperands,
) -> Result<(Tensor, Option<Tensor>)> {
    let (y, dy) = f.outputs(ctx, op, s)?;
    let (flags, inputs, outputs) = (f.flags(), f.inputs(), forward_bindings(&y, &dy));
    let jvp = f.jvp();
    if is_fast_3x3(s) {
        let (ot, px4) = tiles_3x3(s.o, s.ow);
        let tiles_x = s.ow.div_ceil(4 * px4 as usize);
        let total = s.n * s.oh * tiles_x;
        let key = KernelKey {
            family: "conv2d_3x3",
            entry: if jvp { "conv3x3_jvp" } else { "conv3x3_fwd" },
            specialise: vec![("OT", ot), ("PX4", px4)],
        };
        let p = params(s, flags, tiles_x, total, 1, 0);
        ctx.dispatch(op, &key, &p, &inputs, &outputs, groups(total, s.o.div_ceil(ot as usize))?)?;
    } else {
        let tiles_x = s.ow.div_ceil(PX);
        let total = s.n * s.oh * tiles_x;
        let key = KernelKey::new("conv2d", if jvp { "conv2d_jvp" } else { "conv2d_fwd" });
        let p = params(s, flags, tiles_x, total, 1, 0);
        ctx.dispatch(op, &key, &p, &inputs, &outputs, groups(total, s.o.div_ceil(4))?)?;
    }
    Ok((y, dy))
}

/// The input gradient `[N, C, H, W]` from `gy` and `w` by the general gather kernel.
pub(super) fn backward_data(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    gy: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let gx = Tensor::gpu_uninit(ctx, op, &s.x_shape())?;
    let tiles_x = s.w.div_ceil(PX);
    let total = s.n * s.h * tiles_x;
    let p = params(s, 0, tiles_x, total, 1, 0);
    let key = KernelKey::new("conv2d", "conv2d_bwd_data");
    ctx.dispatch(op, &key, &p, &[buf(gy), buf(w)], &[buf(&gx)], groups(total, s.c.div_ceil(4))?)?;
    Ok(gx)
}

/// The weight gradient `[O, C, KH, KW]` from `x` and `gy`: the 3x3 kernel where it applies,
/// otherwise the general kernel, split over `(n, oy)` rows when needed.
pub(super) fn backward_weight(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    x: &Tensor,
    gy: &Tensor,
) -> Result<Tensor> {
    let nq = s.c * s.kh * s.kw;
    // Lanes (blocks of taps or input channels) and output-channel blocks per split.
    let (bw_ot, bw_ct) = BW_TILES;
    let (key, lanes, oblocks) = if is_fast_3x3(s) {
        let key = KernelKey {
            family: "conv2d",
            entry: "conv2d_bwd_weight_3x3",
            specialise: vec![("BW_OT", bw_ot as u32), ("BW_CT", bw_ct as u32)],
        };
        (key, s.c.div_ceil(bw_ct), s.o.div_ceil(bw_ot))
    } else {
        let key = KernelKey::new("conv2d", "conv2d_bwd_weight");
        (key, nq.div_ceil(4), s.o.div_ceil(4))
    };
    let (splits, rows_per_split) = reduction_splits(ctx.class, lanes * oblocks, oblocks, s.n * s.oh);
    let target_shape = if splits == 1 { s.w_shape().to_vec() } else { vec![splits, s.o * nq] };
    let out = Tensor::gpu_uninit(ctx, op, &target_shape)?;
    let p = params(s, 0, 0, lanes, splits, rows_per_split);
    ctx.dispatch(op, &key, &p, &[buf(x), buf(gy)], &[buf(&out)], groups(lanes, splits * oblocks)?)?;
    if splits == 1 {
        Ok(out)
    } else {
        sum_splits(ctx, op, s, &out, splits, &s.w_shape())
    }
}

/// The bias gradient `[O]` of `gy` `[N, O, OH, OW]`, split over `(n, oy)` rows when needed.
pub(super) fn backward_bias(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    gy: &Tensor,
    n: usize,
    o: usize,
    oh: usize,
    ow: usize,
) -> Result<Tensor> {
    // Only n, o, oh, ow of the geometry are read by the bias kernels.
    let s = ConvShape { n, c: 0, h: 0, w: 0, o, kh: 0, kw: 0, stride: 1, pad: 0, oh, ow };
    let (splits, rows_per_split) = reduction_splits(ctx.class, o, 1, n * oh);
    let out = Tensor::gpu_uninit(ctx, op, &[splits, o])?;
    let p = params(&s, 0, 0, o, splits, rows_per_split);
    let key = KernelKey::new("conv2d", "conv2d_bwd_bias");
    ctx.dispatch(op, &key, &p, &[buf(gy)], &[buf(&out)], groups(o, splits)?)?;
    if splits == 1 {
        out.reshape(&[o])
    } else {
        sum_splits(ctx, op, &s, &out, splits, &[o])
    }
}
