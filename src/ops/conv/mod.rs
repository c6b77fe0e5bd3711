//! 2-D convolutions, NCHW with weights `[O, C, KH, KW]` (`kernels/conv2d.wgsl`,
//! `kernels/conv2d_3x3.wgsl`, and the lowering's `conv2d_lower.wgsl`, `conv2d_im2col.wgsl`,
//! `conv2d_gemm.wgsl`).
//!
//! Variant choice. On software adapters (lavapipe) a layer large enough (at least 2^18
//! multiply-adds) is lowered to register-tiled matrix products: an im2col pass writes the patch
//! matrix `[C KH KW, N OH OW]` (in batch chunks of at most 32 MiB), then
//! - forward / JVP: `y = act(Wᵀ patches + bias)` stored straight into NCHW by `gemm_fwd*`
//!   (the JVP adds a second product pass for `dW patches + W dpatches`, masked by the ReLU);
//! - backward data, stride 1 and a square kernel: the forward convolution of `gy` with the
//!   rotated, transposed weights (lowered or direct by the forward rule); otherwise `W gy` into
//!   patch gradients, then a col2im gather;
//! - backward weight: split-K products `patches · gyᵀ` over the long `N OH OW` reduction into
//!   partial sums, then one summing pass.
//!
//! The lowered forward replaces the 3x3 fast kernel only where it measured faster (many patch
//! rows on small images, see `lower_forward_wins`); it always replaces the general kernels.
//!
//! On hardware GPUs every non-empty convolution runs as an implicit GEMM staged through
//! workgroup memory ([`igemm`], `kernels/conv2d_igemm.wgsl`): forward and fused JVP; backward
//! data, stride 1 and a square kernel, as the forward convolution of `gy` with the rotated,
//! transposed weights (other strides: the direct kernel); backward weight as a split-K product.
//!
//! Otherwise (tiny layers on software adapters, empty shapes): 3x3 stride-1 pad-1 convolutions
//! use register-tiled fast paths: forward and fused JVP in `conv2d_3x3`, backward-data as a
//! forward 3x3 convolution of `gy` with rotated, transposed weights, and backward-weight in
//! `conv2d_bwd_weight_3x3`. Every other geometry uses the general direct (gather) kernels of
//! `conv2d.wgsl`. The weight and bias gradients split their reduction over `(n, oy)` rows into
//! partial sums (then one summing dispatch) when the gradient alone would give too few
//! invocations.

mod igemm;

use super::{buf, common_device, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{
    u32_of, ConvGemmParams, ConvLowerParams, ConvParams, FLAG_BIAS, FLAG_HAS_DW, FLAG_HAS_DX, FLAG_MASK,
    FLAG_PLAIN_OUTPUT, FLAG_RELU, FLAG_SECOND_PRODUCT, LANE_WG,
};
use crate::reference::conv::ConvShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Square stride and zero padding of a convolution; the kernel size comes from the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Stride along both spatial axes (at least 1).
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

/// Output pixels per invocation of the general kernels (`PX` in conv2d.wgsl).
const PX: usize = 4;

/// Checks `x_shape` against `w_shape` and the geometry; returns the full convolution shape.
fn conv_shape(op: &'static str, x_shape: &[usize], w_shape: &[usize], g: Conv2dGeometry) -> Result<ConvShape> {
    if g.stride == 0 {
        return Err(Error::Invalid(format!("{op}: stride must be at least 1")));
    }
    if x_shape.len() != 4 || w_shape.len() != 4 {
        return Err(shape_err(
            op,
            format!("needs 4-D x [N, C, H, W] and w [O, C, KH, KW], got x {x_shape:?} and w {w_shape:?}"),
        ));
    }
    if x_shape[1] != w_shape[1] {
        return Err(shape_err(op, format!("input channels differ: x {x_shape:?} vs w {w_shape:?}")));
    }
    ConvShape::new(x_shape, w_shape, g.stride, g.pad).ok_or_else(|| {
        shape_err(op, format!("kernel of w {w_shape:?} does not fit x {x_shape:?} padded by {} (or is empty)", g.pad))
    })
}

/// Counts `count` products of the size of the convolution `s`: weights `[O, C KH KW]` by
/// patches `[C KH KW, N OH OW]` (its data and weight gradients have the same size).
fn count_products(s: &ConvShape, count: usize) {
    cost::product(s.o, s.n * s.oh * s.ow, count * s.c * s.kh * s.kw);
}

/// Checks a bias-like tensor is `[o]`.
fn check_vec(op: &'static str, what: &str, t: &Tensor, o: usize, w_shape: &[usize]) -> Result<()> {
    if t.shape() != [o] {
        return Err(shape_err(op, format!("{what} must be [{o}] for w {w_shape:?}, got {:?}", t.shape())));
    }
    Ok(())
}

/// The uniform block of conv2d.wgsl, conv2d_3x3.wgsl and conv2d_igemm.wgsl.
fn params(s: &ConvShape, flags: u32, tiles_x: usize, total: usize, splits: usize, rows_per_split: usize) -> ConvParams {
    ConvParams {
        n: u32_of(s.n),
        c: u32_of(s.c),
        h: u32_of(s.h),
        w: u32_of(s.w),
        o: u32_of(s.o),
        kh: u32_of(s.kh),
        kw: u32_of(s.kw),
        stride: u32_of(s.stride),
        pad: u32_of(s.pad),
        oh: u32_of(s.oh),
        ow: u32_of(s.ow),
        flags,
        tiles_x: u32_of(tiles_x),
        total: u32_of(total),
        splits: u32_of(splits),
        rows_per_split: u32_of(rows_per_split),
    }
}

/// Workgroups for `lanes` flattened invocations (x, y) times `z` channel blocks.
fn groups(lanes: usize, z: usize) -> Result<[u32; 3]> {
    let mut g = groups_1d(lanes, LANE_WG);
    g[2] = u32::try_from(z).map_err(|_| Error::Invalid(format!("conv2d: {z} channel blocks is too many")))?;
    Ok(g)
}

fn is_fast_3x3(s: &ConvShape) -> bool {
    s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad == 1
}

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

/// Invocations wanted for a reduction to keep the adapter busy.
fn target_invocations(class: AdapterClass) -> usize {
    match class {
        AdapterClass::Software => 1024,
        AdapterClass::Hardware => 65_536,
    }
}

/// Whether `s` runs as an implicit GEMM on `ctx`: hardware GPUs, non-empty shapes.
fn implicit_gemm(ctx: &GpuContext, s: &ConvShape) -> bool {
    ctx.class == AdapterClass::Hardware && s.n > 0 && s.o > 0 && s.c > 0 && s.oh > 0 && s.ow > 0
}

/// The output `y` of a forward pass, and `dy` too for a JVP.
fn forward_outputs(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    jvp: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let y = Tensor::gpu_uninit(ctx, op, &s.y_shape())?;
    let dy = if jvp { Some(Tensor::gpu_uninit(ctx, op, &s.y_shape())?) } else { None };
    Ok((y, dy))
}

/// The epilogue flags of a forward or JVP kernel.
fn forward_flags(
    bias: Option<&Tensor>,
    tangent: Option<(Option<&Tensor>, &Tensor, Option<&Tensor>)>,
    relu: bool,
) -> u32 {
    let has_dx = matches!(tangent, Some((Some(_), _, _)));
    (if bias.is_some() { FLAG_BIAS } else { 0 })
        | if relu { FLAG_RELU } else { 0 }
        | if has_dx { FLAG_HAS_DX } else { 0 }
}

/// The read bindings of a forward or JVP kernel: x, w, bias, then dx, dw, dbias for a JVP
/// (absent ones bound to `x`, unread).
fn forward_inputs<'t>(
    x: &'t Tensor,
    w: &'t Tensor,
    bias: Option<&'t Tensor>,
    tangent: Option<(Option<&'t Tensor>, &'t Tensor, Option<&'t Tensor>)>,
) -> Vec<crate::gpu::BufferView<'t>> {
    let mut inputs = vec![buf(x), buf(w), bias.map_or(buf(x), buf)];
    if let Some((dx, dw, dbias)) = tangent {
        inputs.extend([dx.map_or(buf(x), buf), buf(dw), dbias.map_or(buf(x), buf)]);
    }
    inputs
}

/// Records the forward or JVP kernel. `tangent` is `(dx, dw, dbias)` for the JVP.
#[allow(clippy::too_many_arguments)]
fn gpu_forward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    tangent: Option<(Option<&Tensor>, &Tensor, Option<&Tensor>)>,
    relu: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    if implicit_gemm(ctx, s) {
        return igemm::forward(ctx, op, s, x, w, bias, tangent, relu);
    }
    if let Some(l) = lowering(ctx, s).filter(|l| lower_forward_wins(s, l, tangent.is_some())) {
        return lowered_forward(ctx, op, s, &l, x, w, bias, tangent, relu);
    }
    let (y, dy) = forward_outputs(ctx, op, s, tangent.is_some())?;
    let flags = forward_flags(bias, tangent, relu);
    let inputs = forward_inputs(x, w, bias, tangent);
    let mut outputs = vec![buf(&y)];
    outputs.extend(dy.as_ref().map(buf));
    let jvp = tangent.is_some();
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

/// `act(conv(x, w) + bias)` for `x` `[N, C, H, W]` and `w` `[O, C, KH, KW]`: the output is
/// `[N, O, OH, OW]` with `OH = (H + 2 pad - KH) / stride + 1`; `bias` is `[O]`, `relu` fuses
/// a ReLU.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: Conv2dGeometry, relu: bool) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let s = conv_shape(OP, x.shape(), w.shape(), g)?;
    if let Some(b) = bias {
        check_vec(OP, "bias", b, s.o, w.shape())?;
    }
    let mut all = vec![x, w];
    all.extend(bias);
    let dev = common_device(OP, &all)?;
    count_products(&s, 1);
    cost::per_element(s.n * s.o * s.oh * s.ow, bias.is_some() as u64 + relu as u64);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            &s.y_shape(),
            host_impl!(dev, conv::conv2d)(
                &s,
                x.host().unwrap(),
                w.host().unwrap(),
                bias.map(|b| b.host().unwrap()),
                relu,
            ),
        )),
        Device::Gpu(ctx) => Ok(gpu_forward(&ctx, OP, &s, x, w, bias, None, relu)?.0),
    }
}

/// Checks `gy` against the output shape of `s`.
fn check_gy(op: &'static str, gy: &Tensor, s: &ConvShape) -> Result<()> {
    if gy.shape() != s.y_shape() {
        return Err(shape_err(
            op,
            format!(
                "gy {:?} vs output shape {:?} of x {:?} with w {:?}",
                gy.shape(),
                s.y_shape(),
                s.x_shape(),
                s.w_shape()
            ),
        ));
    }
    Ok(())
}

/// Gradient of a convolution with respect to its input, `[N, C, H, W]` = `x_shape`, from the
/// output gradient `gy` `[N, O, OH, OW]` and the weights `w`.
pub fn conv2d_backward_data(gy: &Tensor, w: &Tensor, x_shape: &[usize], g: Conv2dGeometry) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_data";
    let s = conv_shape(OP, x_shape, w.shape(), g)?;
    check_gy(OP, gy, &s)?;
    let dev = common_device(OP, &[gy, w])?;
    count_products(&s, 1);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            &s.x_shape(),
            host_impl!(dev, conv::conv2d_backward_data)(&s, gy.host().unwrap(), w.host().unwrap()),
        )),
        Device::Gpu(ctx) if is_fast_3x3(&s) || flipped_backward_data(&ctx, &s).is_some() => {
            // Stride 1: gx = conv(gy, w rotated by 180 degrees and transposed to
            // [C, O, KH, KW], padded by K - 1 - pad), through the forward paths (the 3x3 fast
            // kernel or the lowering).
            let st = flipped_backward_data(&ctx, &s).unwrap_or(ConvShape { c: s.o, o: s.c, ..s });
            let wt = Tensor::gpu_uninit(&ctx, OP, &[s.c, s.o, s.kh, s.kw])?;
            let p = params(&s, 0, 0, wt.numel(), 1, 0);
            let key = KernelKey::new("conv2d", "conv2d_flip_weights");
            ctx.dispatch(OP, &key, &p, &[buf(w)], &[buf(&wt)], groups(wt.numel(), 1)?)?;
            Ok(gpu_forward(&ctx, OP, &st, gy, &wt, None, None, false)?.0)
        }
        Device::Gpu(ctx) if lowering(&ctx, &s).is_some() => {
            let l = lowering(&ctx, &s).expect("checked");
            lowered_backward_data(&ctx, OP, &s, &l, gy, w)
        }
        Device::Gpu(ctx) => {
            let gx = Tensor::gpu_uninit(&ctx, OP, &s.x_shape())?;
            let tiles_x = s.w.div_ceil(PX);
            let total = s.n * s.h * tiles_x;
            let p = params(&s, 0, tiles_x, total, 1, 0);
            let key = KernelKey::new("conv2d", "conv2d_bwd_data");
            ctx.dispatch(OP, &key, &p, &[buf(gy), buf(w)], &[buf(&gx)], groups(total, s.c.div_ceil(4))?)?;
            Ok(gx)
        }
    }
}

/// Splits of a reduction over the `rows` flattened `(n, oy)` rows for `base` invocations, each
/// split taking `z_per_split` workgroups along z: `(splits, rows_per_split)`.
fn reduction_splits(class: AdapterClass, base: usize, z_per_split: usize, rows: usize) -> (usize, usize) {
    let max_splits = (65_535 / z_per_split.max(1)).max(1);
    let want = target_invocations(class).div_ceil(base.max(1)).min(max_splits).clamp(1, rows.max(1));
    let rows_per_split = rows.div_ceil(want).max(1);
    (rows.div_ceil(rows_per_split).max(1), rows_per_split)
}

/// Sums `partials` `[splits, len]` into a fresh `[len]`-element tensor of `shape`.
fn sum_splits(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    partials: &Tensor,
    splits: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let out = Tensor::gpu_uninit(ctx, op, shape)?;
    let len = out.numel();
    let p = params(s, 0, 0, len, splits, 0);
    let key = KernelKey::new("conv2d", "conv2d_sum_splits");
    ctx.dispatch(op, &key, &p, &[buf(partials)], &[buf(&out)], groups(len, 1)?)?;
    Ok(out)
}

/// Gradient of a convolution with respect to its weights, `[O, C, KH, KW]` = `w_shape`, from
/// the input `x` and the output gradient `gy`.
pub fn conv2d_backward_weight(x: &Tensor, gy: &Tensor, w_shape: &[usize], g: Conv2dGeometry) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    let s = conv_shape(OP, x.shape(), w_shape, g)?;
    check_gy(OP, gy, &s)?;
    let dev = common_device(OP, &[x, gy])?;
    count_products(&s, 1);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            &s.w_shape(),
            host_impl!(dev, conv::conv2d_backward_weight)(&s, x.host().unwrap(), gy.host().unwrap()),
        )),
        Device::Gpu(ctx) if implicit_gemm(&ctx, &s) => igemm::backward_weight(&ctx, OP, &s, x, gy),
        Device::Gpu(ctx) if lowering(&ctx, &s).is_some() => {
            let l = lowering(&ctx, &s).expect("checked");
            lowered_backward_weight(&ctx, OP, &s, &l, x, gy)
        }
        Device::Gpu(ctx) => {
            let nq = s.c * s.kh * s.kw;
            // Lanes (blocks of taps or input channels) and output-channel blocks per split.
            let (bw_ot, bw_ct) = BW_TILES;
            let (key, lanes, oblocks) = if is_fast_3x3(&s) {
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
            let out = Tensor::gpu_uninit(&ctx, OP, &target_shape)?;
            let p = params(&s, 0, 0, lanes, splits, rows_per_split);
            ctx.dispatch(OP, &key, &p, &[buf(x), buf(gy)], &[buf(&out)], groups(lanes, splits * oblocks)?)?;
            if splits == 1 {
                Ok(out)
            } else {
                sum_splits(&ctx, OP, &s, &out, splits, &s.w_shape())
            }
        }
    }
}

/// Gradient of a convolution with respect to its bias: `[O]`, the sum of `gy` `[N, O, OH, OW]`
/// over `N`, `OH` and `OW`.
pub fn conv2d_backward_bias(gy: &Tensor) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_bias";
    let &[n, o, oh, ow] = gy.shape() else {
        return Err(shape_err(OP, format!("needs a 4-D gy [N, O, OH, OW], got {:?}", gy.shape())));
    };
    cost::per_element(gy.numel(), 1);
    match gy.device() {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            &[o],
            host_impl!(dev, conv::conv2d_backward_bias)(n, o, oh * ow, gy.host().unwrap()),
        )),
        Device::Gpu(ctx) => {
            // Only n, o, oh, ow of the geometry are read by the bias kernels.
            let s = ConvShape { n, c: 0, h: 0, w: 0, o, kh: 0, kw: 0, stride: 1, pad: 0, oh, ow };
            let (splits, rows_per_split) = reduction_splits(ctx.class, o, 1, n * oh);
            let out = Tensor::gpu_uninit(&ctx, OP, &[splits, o])?;
            let p = params(&s, 0, 0, o, splits, rows_per_split);
            let key = KernelKey::new("conv2d", "conv2d_bwd_bias");
            ctx.dispatch(OP, &key, &p, &[buf(gy)], &[buf(&out)], groups(o, splits)?)?;
            if splits == 1 {
                out.reshape(&[o])
            } else {
                sum_splits(&ctx, OP, &s, &out, splits, &[o])
            }
        }
    }
}

/// Fused forward mode of a convolution layer in one dispatch: `(y, dy)` for
/// `y = act(conv(x, w) + bias)` and `dy = act'·(conv(dx, w) + conv(x, dw) + dbias)`.
/// `dx = None` means `dx = 0` (e.g. for the input layer); `bias` is `(bias, dbias)`. Counted
/// as two products (`conv(x, w)`, `conv(x, dw)`), or three with `dx`, and 2 FLOPs per output
/// element for each of bias and ReLU (primal and tangent).
pub fn conv2d_jvp(
    x: &Tensor,
    dx: Option<&Tensor>,
    w: &Tensor,
    dw: &Tensor,
    bias: Option<(&Tensor, &Tensor)>,
    g: Conv2dGeometry,
    relu: bool,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "conv2d_jvp";
    let s = conv_shape(OP, x.shape(), w.shape(), g)?;
    if dw.shape() != w.shape() {
        return Err(shape_err(OP, format!("tangent dw {:?} vs w {:?}", dw.shape(), w.shape())));
    }
    if let Some(dx) = dx {
        if dx.shape() != x.shape() {
            return Err(shape_err(OP, format!("tangent dx {:?} vs x {:?}", dx.shape(), x.shape())));
        }
    }
    if let Some((b, db)) = bias {
        check_vec(OP, "bias", b, s.o, w.shape())?;
        check_vec(OP, "bias tangent", db, s.o, w.shape())?;
    }
    let mut all = vec![x, w, dw];
    all.extend(dx);
    if let Some((b, db)) = bias {
        all.push(b);
        all.push(db);
    }
    let dev = common_device(OP, &all)?;
    count_products(&s, if dx.is_some() { 3 } else { 2 });
    cost::per_element(s.n * s.o * s.oh * s.ow, 2 * (bias.is_some() as u64 + relu as u64));
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, dy) = host_impl!(dev, conv::conv2d_jvp)(
                &s,
                x.host().unwrap(),
                dx.map(|t| t.host().unwrap()),
                w.host().unwrap(),
                dw.host().unwrap(),
                bias.map(|(b, db)| (b.host().unwrap(), db.host().unwrap())),
                relu,
            );
            Ok((Tensor::host_result(&dev, &s.y_shape(), y), Tensor::host_result(&dev, &s.y_shape(), dy)))
        }
        Device::Gpu(ctx) => {
            let tangent = Some((dx, dw, bias.map(|(_, db)| db)));
            let (y, dy) = gpu_forward(&ctx, OP, &s, x, w, bias.map(|(b, _)| b), tangent, relu)?;
            Ok((y, dy.expect("JVP has a tangent output")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lowering to matrix products (`kernels/conv2d_lower.wgsl`, `conv2d_im2col.wgsl`,
// `conv2d_gemm.wgsl`).
// ---------------------------------------------------------------------------------------------

/// Bytes one lowered matrix (patches, products) of a batch chunk may take at most; larger
/// batches are lowered in chunks of images. Well under the 128 MiB binding limit of lavapipe,
/// and small enough that the pooled scratch buffers stay modest.
const LOWER_CHUNK_BYTES: u64 = 32 << 20;
/// Multiply-adds below which the direct kernels run instead of the lowering: there the three
/// or four dispatches of the lowering cost more than they save.
const LOWER_MIN_MACS: usize = 1 << 18;
/// Invocations wanted from the split-K weight-gradient product.
const GEMM_TARGET_INVOCATIONS: usize = 256;
/// Fewest vec4 reduction steps per split of that product.
const GEMM_MIN_K4: usize = 16;

/// How a convolution is lowered: padded sizes and the batch chunk.
#[derive(Debug, Clone, Copy)]
struct Lowering {
    /// Rows of the patch matrix, `C KH KW`.
    q: usize,
    /// `q` padded to a multiple of 4 (the patch matrices have `qp` rows, zero below `q`).
    qp: usize,
    /// Output channels padded to a multiple of 4.
    op: usize,
    /// Output pixels per image, `OH OW`.
    ohw: usize,
    /// Images per chunk.
    chunk: usize,
}

impl Lowering {
    /// Padded columns of a chunk of `nb` images.
    fn npc(&self, nb: usize) -> usize {
        (nb * self.ohw).div_ceil(4) * 4
    }
    /// The chunks `(n0, nb)` covering `n` images.
    fn chunks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n).step_by(self.chunk).map(move |n0| (n0, self.chunk.min(n - n0)))
    }
}

/// The lowering of `s` when it should run on `ctx` (software adapters, large enough layers,
/// chunks that fit a binding); `None` selects the direct kernels.
fn lowering(ctx: &GpuContext, s: &ConvShape) -> Option<Lowering> {
    if ctx.class != AdapterClass::Software || s.n == 0 || s.o == 0 || s.c == 0 {
        return None;
    }
    let q = s.c * s.kh * s.kw;
    let ohw = s.oh * s.ow;
    if s.n * ohw * q * s.o < LOWER_MIN_MACS || ohw == 0 {
        return None;
    }
    let op = s.o.div_ceil(4) * 4;
    let cap = ctx.max_binding_bytes().min(LOWER_CHUNK_BYTES) as usize;
    // Rows of the largest matrix of a chunk, then images per chunk (leaving room for padding).
    let row_bytes = 4 * (q + 3).max(op);
    let cols = (cap / row_bytes).checked_sub(3)?;
    let chunk = (cols / ohw).min(s.n);
    let qp = q.div_ceil(4) * 4;
    (chunk > 0).then_some(Lowering { q, qp, op, ohw, chunk })
}

/// Whether the lowered forward (or JVP) beats the direct kernels: always against the general
/// kernels; against the 3x3 fast path for many patch rows on small images, where its row tiles
/// are short (on lavapipe, batch 128: 64 -> 64 channels at 4 x 4 ran 11 ms lowered vs 26
/// direct, 16 -> 32 at 8 x 8 8.5 vs 9.5; but 16 -> 8 at 16 x 16 25 vs 11 and 8 -> 16 at
/// 16 x 16 12.5 vs 8.7: there the im2col pass costs more than the product saves). The fused
/// JVP kernel holds up a little longer (at 8 x 8 it ran about 5% faster than two products).
fn lower_forward_wins(s: &ConvShape, l: &Lowering, jvp: bool) -> bool {
    !is_fast_3x3(s) || (l.q >= 128 && s.ow <= if jvp { 4 } else { 8 })
}

/// The forward convolution whose output is the input gradient of `s` (stride 1, square
/// kernel, `pad < K`: `gy` convolved with the rotated, transposed weights, padded by
/// `K - 1 - pad`), when that is how `ctx` should run it (hardware GPUs: as an implicit GEMM);
/// `None` otherwise.
fn flipped_backward_data(ctx: &GpuContext, s: &ConvShape) -> Option<ConvShape> {
    if s.stride != 1 || s.kh != s.kw || s.pad >= s.kh {
        return None;
    }
    let st = ConvShape {
        n: s.n,
        c: s.o,
        h: s.oh,
        w: s.ow,
        o: s.c,
        kh: s.kh,
        kw: s.kw,
        stride: 1,
        pad: s.kh - 1 - s.pad,
        oh: s.h,
        ow: s.w,
    };
    // Through the implicit GEMM, the lowering, or the 3x3 fast path; otherwise the direct
    // backward kernel (which equals the general forward kernel in cost) is as good.
    let lowered = lowering(ctx, &st).is_some_and(|l| lower_forward_wins(&st, &l, false));
    (implicit_gemm(ctx, &st) || lowered || is_fast_3x3(&st)).then_some(st)
}

/// The uniform block of `conv2d_lower.wgsl` and `conv2d_im2col.wgsl`.
#[allow(clippy::too_many_arguments)]
fn lower_params(
    s: &ConvShape,
    l: &Lowering,
    n0: usize,
    nb: usize,
    flags: u32,
    total: usize,
    splits: usize,
) -> ConvLowerParams {
    ConvLowerParams {
        n0: u32_of(n0),
        nb: u32_of(nb),
        c: u32_of(s.c),
        h: u32_of(s.h),
        w: u32_of(s.w),
        o: u32_of(s.o),
        kh: u32_of(s.kh),
        kw: u32_of(s.kw),
        stride: u32_of(s.stride),
        pad: u32_of(s.pad),
        oh: u32_of(s.oh),
        ow: u32_of(s.ow),
        q: u32_of(l.q),
        op: u32_of(l.op),
        npc: u32_of(l.npc(nb)),
        flags,
        total: u32_of(total),
        splits: u32_of(splits),
        qp: u32_of(l.qp),
    }
}

/// Records one `conv2d_lower` entry point over `p`'s `total` lanes.
fn lower_dispatch(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    entry: &'static str,
    p: ConvLowerParams,
    total: usize,
    inputs: &[crate::gpu::BufferView],
    outputs: &[crate::gpu::BufferView],
) -> Result<()> {
    let key = KernelKey::new("conv2d_lower", entry);
    ctx.dispatch(op, &key, &p, inputs, outputs, groups(total, 1)?)
}

/// `w` `[O, Q]` (and `dw`) transposed to `[qp, op]`, zero-padded.
fn lowered_weights(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    w: &Tensor,
    dw: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let wt = Tensor::gpu_uninit(ctx, op, &[l.qp, l.op])?;
    let dwt = match dw {
        Some(_) => Some(Tensor::gpu_uninit(ctx, op, &[l.qp, l.op])?),
        None => None,
    };
    let total = l.qp * l.op;
    let flags = if dw.is_some() { FLAG_HAS_DW } else { 0 };
    let mut outputs = vec![buf(&wt)];
    outputs.extend(dwt.as_ref().map(buf));
    lower_dispatch(
        ctx,
        op,
        "lower_weights_t",
        lower_params(s, l, 0, 1, flags, total, 1),
        total,
        &[buf(w), dw.map_or(buf(w), buf)],
        &outputs,
    )?;
    Ok((wt, dwt))
}

/// The patch matrix `[qp, npc]` of images `[n0, n0 + nb)` of `x` (and of `dx`).
#[allow(clippy::too_many_arguments)]
fn im2col(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    n0: usize,
    nb: usize,
    x: &Tensor,
    dx: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let shape = [l.qp, l.npc(nb)];
    let pm = Tensor::gpu_uninit(ctx, op, &shape)?;
    let dpm = match dx {
        Some(_) => Some(Tensor::gpu_uninit(ctx, op, &shape)?),
        None => None,
    };
    let total = l.npc(nb) / 4;
    let flags = if dx.is_some() { FLAG_HAS_DX } else { 0 };
    let mut outputs = vec![buf(&pm)];
    outputs.extend(dpm.as_ref().map(buf));
    let p = lower_params(s, l, n0, nb, flags, total, 1);
    let key = KernelKey::new("conv2d_im2col", "lower_im2col");
    ctx.dispatch(op, &key, &p, &[buf(x), dx.map_or(buf(x), buf)], &outputs, groups(total, 1)?)?;
    Ok((pm, dpm))
}

/// `gy` of images `[n0, n0 + nb)` as `[op, npc]`, zero-padded.
fn lowered_gy(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    n0: usize,
    nb: usize,
    gy: &Tensor,
) -> Result<Tensor> {
    let g = Tensor::gpu_uninit(ctx, op, &[l.op, l.npc(nb)])?;
    let total = l.npc(nb) / 4;
    lower_dispatch(ctx, op, "lower_gy", lower_params(s, l, n0, nb, 0, total, 1), total, &[buf(gy)], &[buf(&g)])
        .map(|_| g)
}

/// Operands and destination of one `gemm_fwd` product `C = a0ᵀ b0 (+ a1ᵀ b1)`.
struct GemmFwd<'a> {
    /// `[K, rp]` row-major, `rp` a multiple of 4.
    a0: &'a Tensor,
    /// `[K, npc]`.
    b0: &'a Tensor,
    /// The optional second product.
    second: Option<(&'a Tensor, &'a Tensor)>,
    bias: Option<&'a Tensor>,
    /// Zero the result where this forward output is `<= 0`.
    mask: Option<&'a Tensor>,
    relu: bool,
    /// Rows stored (`O` for a convolution output, `Q` for a plain matrix).
    rows: usize,
    /// `(n0, nb)` of a convolution output, or `None` for a plain `[rows, npc]` matrix.
    image: Option<(usize, usize)>,
    out: &'a Tensor,
}

/// Records `gemm_fwd` (see `kernels/conv2d_gemm.wgsl`).
fn gemm_fwd(ctx: &Arc<GpuContext>, op: &'static str, l: &Lowering, g: GemmFwd) -> Result<()> {
    let (k, rp) = (g.a0.shape()[0], g.a0.shape()[1]);
    let npc = g.b0.shape()[1];
    let rp4 = rp / 4;
    let (entry, z) = if rp4 <= 2 { ("gemm_fwd8", 1) } else { ("gemm_fwd16", rp4.div_ceil(4)) };
    let lanes = (npc / 4).div_ceil(4);
    let flags = if g.bias.is_some() { FLAG_BIAS } else { 0 }
        | if g.relu { FLAG_RELU } else { 0 }
        | if g.mask.is_some() { FLAG_MASK } else { 0 }
        | if g.second.is_some() { FLAG_SECOND_PRODUCT } else { 0 }
        | if g.image.is_none() { FLAG_PLAIN_OUTPUT } else { 0 };
    let (n0, nb) = g.image.unwrap_or((0, 0));
    let p = ConvGemmParams {
        q: u32_of(k),
        op: u32_of(rp),
        npc: u32_of(npc),
        total: u32_of(lanes),
        o: u32_of(g.rows),
        ohw: u32_of(l.ohw),
        n0: u32_of(n0),
        nb: u32_of(nb),
        flags,
        ..Default::default()
    };
    let key = KernelKey::new("conv2d_gemm", entry);
    let d = buf(g.a0);
    ctx.dispatch(
        op,
        &key,
        &p,
        &[
            d,
            buf(g.b0),
            g.second.map_or(d, |s| buf(s.0)),
            g.second.map_or(d, |s| buf(s.1)),
            g.bias.map_or(d, buf),
            g.mask.map_or(d, buf),
        ],
        &[buf(g.out)],
        groups(lanes, z)?,
    )
}

/// Forward or JVP through the lowering; arguments as [`gpu_forward`].
#[allow(clippy::too_many_arguments)]
fn lowered_forward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    tangent: Option<(Option<&Tensor>, &Tensor, Option<&Tensor>)>,
    relu: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (y, dy) = forward_outputs(ctx, op, s, tangent.is_some())?;
    let dx = tangent.and_then(|t| t.0);
    let (wt, dwt) = lowered_weights(ctx, op, s, l, w, tangent.map(|t| t.1))?;
    for (n0, nb) in l.chunks(s.n) {
        let (pm, dpm) = im2col(ctx, op, s, l, n0, nb, x, dx)?;
        let image = Some((n0, nb));
        gemm_fwd(
            ctx,
            op,
            l,
            GemmFwd { a0: &wt, b0: &pm, second: None, bias, mask: None, relu, rows: s.o, image, out: &y },
        )?;
        if let (Some(dwt), Some(dy)) = (&dwt, &dy) {
            gemm_fwd(
                ctx,
                op,
                l,
                GemmFwd {
                    a0: dwt,
                    b0: &pm,
                    second: dpm.as_ref().map(|d| (&wt, d)),
                    bias: tangent.and_then(|t| t.2),
                    mask: relu.then_some(&y),
                    relu: false,
                    rows: s.o,
                    image,
                    out: dy,
                },
            )?;
        }
    }
    Ok((y, dy))
}

/// Backward data through the lowering: `wᵀ gy` per chunk into patch gradients, then the
/// col2im gather.
fn lowered_backward_data(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    gy: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let gx = Tensor::gpu_uninit(ctx, op, &s.x_shape())?;
    let qp = l.qp;
    let wp = if qp == l.q && l.op == s.o {
        w.reshape(&[s.o, l.q])?
    } else {
        let wp = Tensor::gpu_uninit(ctx, op, &[l.op, qp])?;
        let lp = Lowering { op: qp, ..*l };
        let total = l.op * qp;
        lower_dispatch(ctx, op, "lower_pad_q", lower_params(s, &lp, 0, 1, 0, total, 1), total, &[buf(w)], &[buf(&wp)])?;
        wp
    };
    for (n0, nb) in l.chunks(s.n) {
        let g = lowered_gy(ctx, op, s, l, n0, nb, gy)?;
        let gp = Tensor::gpu_uninit(ctx, op, &[l.q, l.npc(nb)])?;
        gemm_fwd(
            ctx,
            op,
            l,
            GemmFwd {
                a0: &wp,
                b0: &g,
                second: None,
                bias: None,
                mask: None,
                relu: false,
                rows: l.q,
                image: None,
                out: &gp,
            },
        )?;
        drop(g);
        let total = nb * s.c * s.h * s.w.div_ceil(4);
        lower_dispatch(
            ctx,
            op,
            "lower_col2im",
            lower_params(s, l, n0, nb, 0, total, 1),
            total,
            &[buf(&gp)],
            &[buf(&gx)],
        )?;
    }
    Ok(gx)
}

/// Splits of the weight-gradient product over `npc` columns for `tiles` tiles:
/// `(splits, vec4 steps per split)`.
fn gemm_splits(tiles: usize, npc: usize) -> (usize, usize) {
    let k4 = npc / 4;
    let want = GEMM_TARGET_INVOCATIONS.div_ceil(tiles).min(k4.div_ceil(GEMM_MIN_K4)).max(1);
    let per = k4.div_ceil(want).max(1);
    (k4.div_ceil(per).max(1), per)
}

/// Backward weight through the lowering: split-K products of the patches and `gy` per chunk
/// into partial sums, then one summing and transposing pass.
fn lowered_backward_weight(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    x: &Tensor,
    gy: &Tensor,
) -> Result<Tensor> {
    let (entry, o_tile) = if l.op <= 8 { ("gemm_bwd_weight8", 8) } else { ("gemm_bwd_weight16", 16) };
    let tiles_q = l.q.div_ceil(16);
    let tiles_o = l.op.div_ceil(o_tile);
    let tiles = tiles_q * tiles_o;
    let chunks: Vec<(usize, usize)> = l.chunks(s.n).collect();
    let slots: usize = chunks.iter().map(|&(_, nb)| gemm_splits(tiles, l.npc(nb)).0).sum();
    let partial = Tensor::gpu_uninit(ctx, op, &[slots, l.q, l.op])?;
    let key = KernelKey::new("conv2d_gemm", entry);
    let mut slot0 = 0;
    for (n0, nb) in chunks {
        let (pm, _) = im2col(ctx, op, s, l, n0, nb, x, None)?;
        let g = lowered_gy(ctx, op, s, l, n0, nb, gy)?;
        let npc = l.npc(nb);
        let (splits, per) = gemm_splits(tiles, npc);
        let total = splits * tiles;
        let p = ConvGemmParams {
            q: u32_of(l.q),
            op: u32_of(l.op),
            npc: u32_of(npc),
            k4_split: u32_of(per),
            tiles_q: u32_of(tiles_q),
            tiles_o: u32_of(tiles_o),
            total: u32_of(total),
            slot0: u32_of(slot0),
            ..Default::default()
        };
        ctx.dispatch(op, &key, &p, &[buf(&pm), buf(&g)], &[buf(&partial)], groups(total, 1)?)?;
        slot0 += splits;
    }
    let gw = Tensor::gpu_uninit(ctx, op, &s.w_shape())?;
    let total = s.o * l.q;
    lower_dispatch(
        ctx,
        op,
        "lower_sum_wt",
        lower_params(s, l, 0, 1, 0, total, slots),
        total,
        &[buf(&partial)],
        &[buf(&gw)],
    )?;
    Ok(gw)
}
