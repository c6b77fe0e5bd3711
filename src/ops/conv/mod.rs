//! 2-D convolutions, NCHW with weights `[O, C, KH, KW]` (`kernels/conv2d.wgsl`,
//! `kernels/conv2d_3x3.wgsl`, and the lowering's `conv2d_lower.wgsl`, `conv2d_im2col.wgsl`,
//! `conv2d_gemm.wgsl`).
//!
//! Variant choice. On software adapters (lavapipe) a layer large enough (at least 2^18
//! multiply-adds) is lowered to register-tiled matrix products ([`lowered`]): an im2col pass
//! writes the patch matrix `[C KH KW, N OH OW]` (in batch chunks of at most 32 MiB), then
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
//! Otherwise (tiny layers on software adapters, empty shapes; [`direct`]): 3x3 stride-1 pad-1
//! convolutions use register-tiled fast paths: forward and fused JVP in `conv2d_3x3`,
//! backward-data as a forward 3x3 convolution of `gy` with rotated, transposed weights, and
//! backward-weight in `conv2d_bwd_weight_3x3`. Every other geometry uses the general direct
//! (gather) kernels of `conv2d.wgsl`. The weight and bias gradients split their reduction over
//! `(n, oy)` rows into partial sums (then one summing dispatch) when the gradient alone would
//! give too few invocations.

mod direct;
mod igemm;
mod lowered;
mod operands;

use super::cast::f16_context;
use super::{buf, common_device, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{u32_of, ConvParams, LANE_WG};
use crate::reference::conv::ConvShape;
use crate::tensor::Tensor;
use lowered::{lower_forward_wins, lowered_backward_data, lowered_backward_weight, lowered_forward, lowering};
use operands::{forward_bindings, ForwardOperands};
use std::sync::Arc;

/// Square stride and zero padding of a convolution; the kernel size comes from the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Stride along both spatial axes (at least 1).
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

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

/// Records the forward or JVP kernel.
fn gpu_forward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    f: ForwardOperands,
) -> Result<(Tensor, Option<Tensor>)> {
    if implicit_gemm(ctx, s) {
        return igemm::forward(ctx, op, s, f);
    }
    if let Some(l) = lowering(ctx, s).filter(|l| lower_forward_wins(s, l, f.jvp())) {
        return lowered_forward(ctx, op, s, &l, f);
    }
    direct::forward(ctx, op, s, f)
}

/// `act(conv(x, w) + bias)` for `x` `[N, C, H, W]` and `w` `[O, C, KH, KW]`: the output is
/// `[N, O, OH, OW]` with `OH = (H + 2 pad - KH) / stride + 1`; `bias` is `[O]`, `relu` fuses
/// a ReLU. With `x` and `w` both in f16 storage (GPU adapters with `SHADER_F16`) it runs the
/// implicit GEMM on f16 operands with f32 accumulation, on every adapter class, into an f32
/// output (`bias` f32).
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, g: Conv2dGeometry, relu: bool) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let s = conv_shape(OP, x.shape(), w.shape(), g)?;
    if let Some(b) = bias {
        check_vec(OP, "bias", b, s.o, w.shape())?;
    }
    let mut all = vec![x, w];
    all.extend(bias);
    let dev = common_device(OP, &all)?;
    let half = [x, w].map(|t| t.dtype() == DType::F16);
    if half != [false, false] {
        if half != [true, true] {
            return Err(Error::Invalid(format!(
                "{OP}: x in {} and w in {}: an f16 convolution needs both in f16 (Tensor::to_f16)",
                x.dtype(),
                w.dtype()
            )));
        }
        let ctx = f16_context(OP, &dev)?;
        count_products(&s, 1);
        cost::per_element(s.n * s.o * s.oh * s.ow, bias.is_some() as u64 + relu as u64);
        return Ok(igemm::forward(&ctx, OP, &s, ForwardOperands { x, w, bias, tangent: None, relu })?.0);
    }
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
        Device::Gpu(ctx) => Ok(gpu_forward(&ctx, OP, &s, ForwardOperands { x, w, bias, tangent: None, relu })?.0),
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
            Ok(gpu_forward(&ctx, OP, &st, ForwardOperands { x: gy, w: &wt, bias: None, tangent: None, relu: false })?.0)
        }
        Device::Gpu(ctx) if lowering(&ctx, &s).is_some() => {
            let l = lowering(&ctx, &s).expect("checked");
            lowered_backward_data(&ctx, OP, &s, &l, gy, w)
        }
        Device::Gpu(ctx) => direct::backward_data(&ctx, OP, &s, gy, w),
    }
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
        Device::Gpu(ctx) if implicit_gemm(&ctx, &s) => Ok(igemm::backward_weight(&ctx, OP, &s, x, gy, false)?.0),
        Device::Gpu(ctx) if lowering(&ctx, &s).is_some() => {
            let l = lowering(&ctx, &s).expect("checked");
            lowered_backward_weight(&ctx, OP, &s, &l, x, gy)
        }
        Device::Gpu(ctx) => direct::backward_weight(&ctx, OP, &s, x, gy),
    }
}

/// Gradients of a convolution with respect to its weights and, with `bias`, its bias:
/// [`conv2d_backward_weight`] and [`conv2d_backward_bias`] in one call, counted as those two.
/// On hardware GPUs the split-K weight gradient sums the bias gradient from the `gy` blocks it
/// stages anyway (one read of `gy` fewer); elsewhere it runs the two ops.
pub fn conv2d_backward_params(
    x: &Tensor,
    gy: &Tensor,
    w_shape: &[usize],
    g: Conv2dGeometry,
    bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    const OP: &str = "conv2d_backward_params";
    let s = conv_shape(OP, x.shape(), w_shape, g)?;
    check_gy(OP, gy, &s)?;
    match common_device(OP, &[x, gy])? {
        Device::Gpu(ctx) if bias && implicit_gemm(&ctx, &s) => {
            count_products(&s, 1);
            cost::per_element(gy.numel(), 1);
            igemm::backward_weight(&ctx, OP, &s, x, gy, true)
        }
        _ => {
            let dw = conv2d_backward_weight(x, gy, w_shape, g)?;
            Ok((dw, if bias { Some(conv2d_backward_bias(gy)?) } else { None }))
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
        Device::Gpu(ctx) => direct::backward_bias(&ctx, OP, gy, n, o, oh, ow),
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
            let f = ForwardOperands { x, w, bias: bias.map(|(b, _)| b), tangent, relu };
            let (y, dy) = gpu_forward(&ctx, OP, &s, f)?;
            Ok((y, dy.expect("JVP has a tangent output")))
        }
    }
}
