//! 2-D convolutions, NCHW with weights `[O, C, KH, KW]` (`kernels/conv2d.wgsl`,
//! `kernels/conv2d_3x3.wgsl`).
//!
//! Variant choice: 3x3 stride-1 pad-1 convolutions use register-tiled fast paths (big tiles on
//! software adapters, small ones on hardware GPUs): forward and fused JVP in `conv2d_3x3`,
//! backward-data as a forward 3x3 convolution of `gy` with rotated, transposed weights, and
//! backward-weight in `conv2d_bwd_weight_3x3`. Every other geometry uses the general direct
//! (gather) kernels of `conv2d.wgsl`. The weight and bias gradients split their reduction over
//! `(n, oy)` rows into partial sums (then one summing dispatch) when the gradient alone would
//! give too few invocations.

use super::{buf, common_device, groups_1d, Params};
use crate::cpu::conv::{self as cpu, ConvShape};
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
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

/// Epilogue flag bits of the conv kernels.
const FLAG_BIAS: usize = 1;
const FLAG_RELU: usize = 2;
const FLAG_HAS_DX: usize = 8;
/// Invocations per workgroup of every conv entry point.
const WG: usize = 64;
/// Output pixels per invocation of the general kernels (`PX` in conv2d.wgsl).
const PX: usize = 4;

/// Checks `x_shape` against `w_shape` and the geometry; returns the full convolution shape.
fn conv_shape(
    op: &'static str,
    x_shape: &[usize],
    w_shape: &[usize],
    g: Conv2dGeometry,
) -> Result<ConvShape> {
    if g.stride == 0 {
        return Err(Error::Invalid(format!("{op}: stride must be at least 1")));
    }
    if x_shape.len() != 4 || w_shape.len() != 4 {
        return Err(shape_err(op, format!("needs 4-D x [N, C, H, W] and w [O, C, KH, KW], got x {x_shape:?} and w {w_shape:?}")));
    }
    if x_shape[1] != w_shape[1] {
        return Err(shape_err(
            op,
            format!("input channels differ: x {x_shape:?} vs w {w_shape:?}"),
        ));
    }
    ConvShape::new(x_shape, w_shape, g.stride, g.pad).ok_or_else(|| {
        shape_err(
            op,
            format!(
                "kernel of w {w_shape:?} does not fit x {x_shape:?} padded by {} (or is empty)",
                g.pad
            ),
        )
    })
}

/// Checks a bias-like tensor is `[o]`.
fn check_vec(op: &'static str, what: &str, t: &Tensor, o: usize, w_shape: &[usize]) -> Result<()> {
    if t.shape() != [o] {
        return Err(shape_err(
            op,
            format!(
                "{what} must be [{o}] for w {w_shape:?}, got {:?}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// The uniform block shared by conv2d.wgsl and conv2d_3x3.wgsl.
fn params(
    s: &ConvShape,
    flags: usize,
    tiles_x: usize,
    total: usize,
    splits: usize,
    rows_per_split: usize,
) -> Params {
    Params::new()
        .u(s.n)
        .u(s.c)
        .u(s.h)
        .u(s.w)
        .u(s.o)
        .u(s.kh)
        .u(s.kw)
        .u(s.stride)
        .u(s.pad)
        .u(s.oh)
        .u(s.ow)
        .u(flags)
        .u(tiles_x)
        .u(total)
        .u(splits)
        .u(rows_per_split)
}

/// Workgroups for `lanes` flattened invocations (x, y) times `z` channel blocks.
fn groups(lanes: usize, z: usize) -> Result<[u32; 3]> {
    let mut g = groups_1d(lanes, WG);
    g[2] = u32::try_from(z)
        .map_err(|_| Error::Invalid(format!("conv2d: {z} channel blocks is too many")))?;
    Ok(g)
}

fn is_fast_3x3(s: &ConvShape) -> bool {
    s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad == 1
}

/// Tile `(OT, PX4)` of the 3x3 kernels: output channels and vec4 pixel groups per invocation.
/// On lavapipe (2 cores, N = 16, 64 -> 64 channels, 32 x 32) 16 channels x 16 pixels ran about
/// 10 GFLOP/s forward against about 7 for 8 x 8 and 2.7 for the general kernel (32 x 16 was
/// no better by much); the tile shrinks for small layers so that they waste little work.
fn tiles_3x3(class: AdapterClass, o: usize, w: usize) -> (u32, u32) {
    match class {
        AdapterClass::Software => {
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
        AdapterClass::Hardware => (4, 1),
    }
}

/// Output and input channels per invocation of `conv2d_bwd_weight_3x3` (`BW_OT`, `BW_CT`):
/// 8 x 8 (576 accumulators) ran about 1.3x faster than 4 x 4 on lavapipe; hardware GPUs get a
/// register-friendly 2 x 4.
fn bw_tiles(class: AdapterClass) -> (usize, usize) {
    match class {
        AdapterClass::Software => (8, 8),
        AdapterClass::Hardware => (2, 4),
    }
}

/// Invocations wanted for a reduction to keep the adapter busy.
fn target_invocations(class: AdapterClass) -> usize {
    match class {
        AdapterClass::Software => 1024,
        AdapterClass::Hardware => 65_536,
    }
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
    let y = Tensor::gpu_uninit(ctx, op, &s.y_shape())?;
    let dy = match tangent {
        Some(_) => Some(Tensor::gpu_uninit(ctx, op, &s.y_shape())?),
        None => None,
    };
    let has_dx = matches!(tangent, Some((Some(_), _, _)));
    let flags = if bias.is_some() { FLAG_BIAS } else { 0 }
        | if relu { FLAG_RELU } else { 0 }
        | if has_dx { FLAG_HAS_DX } else { 0 };
    let mut inputs = vec![buf(x), buf(w), bias.map_or(buf(x), buf)];
    if let Some((dx, dw, dbias)) = tangent {
        inputs.push(dx.map_or(buf(x), buf));
        inputs.push(buf(dw));
        inputs.push(dbias.map_or(buf(x), buf));
    }
    let mut outputs = vec![buf(&y)];
    outputs.extend(dy.as_ref().map(buf));
    let jvp = tangent.is_some();
    if is_fast_3x3(s) {
        let (ot, px4) = tiles_3x3(ctx.class, s.o, s.ow);
        let tiles_x = s.ow.div_ceil(4 * px4 as usize);
        let total = s.n * s.oh * tiles_x;
        let key = KernelKey {
            family: "conv2d_3x3",
            entry: if jvp { "conv3x3_jvp" } else { "conv3x3_fwd" },
            specialise: vec![("OT", ot), ("PX4", px4)],
        };
        let p = params(s, flags, tiles_x, total, 1, 0);
        ctx.dispatch(
            op,
            &key,
            p.bytes(),
            &inputs,
            &outputs,
            groups(total, s.o.div_ceil(ot as usize))?,
        )?;
    } else {
        let tiles_x = s.ow.div_ceil(PX);
        let total = s.n * s.oh * tiles_x;
        let key = KernelKey::new("conv2d", if jvp { "conv2d_jvp" } else { "conv2d_fwd" });
        let p = params(s, flags, tiles_x, total, 1, 0);
        ctx.dispatch(
            op,
            &key,
            p.bytes(),
            &inputs,
            &outputs,
            groups(total, s.o.div_ceil(4))?,
        )?;
    }
    Ok((y, dy))
}

/// `act(conv(x, w) + bias)` for `x` `[N, C, H, W]` and `w` `[O, C, KH, KW]`: the output is
/// `[N, O, OH, OW]` with `OH = (H + 2 pad - KH) / stride + 1`; `bias` is `[O]`, `relu` fuses
/// a ReLU.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    g: Conv2dGeometry,
    relu: bool,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let s = conv_shape(OP, x.shape(), w.shape(), g)?;
    if let Some(b) = bias {
        check_vec(OP, "bias", b, s.o, w.shape())?;
    }
    let mut all = vec![x, w];
    all.extend(bias);
    match common_device(OP, &all)? {
        Device::Cpu => Ok(Tensor::cpu(
            &s.y_shape(),
            cpu::conv2d(
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
pub fn conv2d_backward_data(
    gy: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    g: Conv2dGeometry,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_data";
    let s = conv_shape(OP, x_shape, w.shape(), g)?;
    check_gy(OP, gy, &s)?;
    match common_device(OP, &[gy, w])? {
        Device::Cpu => Ok(Tensor::cpu(
            &s.x_shape(),
            cpu::conv2d_backward_data(&s, gy.host().unwrap(), w.host().unwrap()),
        )),
        Device::Gpu(ctx) if is_fast_3x3(&s) => {
            // Stride 1, pad 1: gx = conv(gy, w rotated by 180 degrees and transposed to
            // [C, O, 3, 3]), through the 3x3 fast path.
            let wt = Tensor::gpu_uninit(&ctx, OP, &[s.c, s.o, 3, 3])?;
            let p = params(&s, 0, 0, wt.numel(), 1, 0);
            let key = KernelKey::new("conv2d", "conv2d_flip_weights");
            ctx.dispatch(
                OP,
                &key,
                p.bytes(),
                &[buf(w)],
                &[buf(&wt)],
                groups(wt.numel(), 1)?,
            )?;
            let st = ConvShape {
                c: s.o,
                o: s.c,
                ..s
            };
            Ok(gpu_forward(&ctx, OP, &st, gy, &wt, None, None, false)?.0)
        }
        Device::Gpu(ctx) => {
            let gx = Tensor::gpu_uninit(&ctx, OP, &s.x_shape())?;
            let tiles_x = s.w.div_ceil(PX);
            let total = s.n * s.h * tiles_x;
            let p = params(&s, 0, tiles_x, total, 1, 0);
            let key = KernelKey::new("conv2d", "conv2d_bwd_data");
            ctx.dispatch(
                OP,
                &key,
                p.bytes(),
                &[buf(gy), buf(w)],
                &[buf(&gx)],
                groups(total, s.c.div_ceil(4))?,
            )?;
            Ok(gx)
        }
    }
}

/// Splits of a reduction over the `rows` flattened `(n, oy)` rows for `base` invocations, each
/// split taking `z_per_split` workgroups along z: `(splits, rows_per_split)`.
fn reduction_splits(
    class: AdapterClass,
    base: usize,
    z_per_split: usize,
    rows: usize,
) -> (usize, usize) {
    let max_splits = (65_535 / z_per_split.max(1)).max(1);
    let want = target_invocations(class)
        .div_ceil(base.max(1))
        .min(max_splits)
        .clamp(1, rows.max(1));
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
    ctx.dispatch(
        op,
        &key,
        p.bytes(),
        &[buf(partials)],
        &[buf(&out)],
        groups(len, 1)?,
    )?;
    Ok(out)
}

/// Gradient of a convolution with respect to its weights, `[O, C, KH, KW]` = `w_shape`, from
/// the input `x` and the output gradient `gy`.
pub fn conv2d_backward_weight(
    x: &Tensor,
    gy: &Tensor,
    w_shape: &[usize],
    g: Conv2dGeometry,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    let s = conv_shape(OP, x.shape(), w_shape, g)?;
    check_gy(OP, gy, &s)?;
    match common_device(OP, &[x, gy])? {
        Device::Cpu => Ok(Tensor::cpu(
            &s.w_shape(),
            cpu::conv2d_backward_weight(&s, x.host().unwrap(), gy.host().unwrap()),
        )),
        Device::Gpu(ctx) => {
            let nq = s.c * s.kh * s.kw;
            // Lanes (blocks of taps or input channels) and output-channel blocks per split.
            let (bw_ot, bw_ct) = bw_tiles(ctx.class);
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
            let (splits, rows_per_split) =
                reduction_splits(ctx.class, lanes * oblocks, oblocks, s.n * s.oh);
            let target_shape = if splits == 1 {
                s.w_shape().to_vec()
            } else {
                vec![splits, s.o * nq]
            };
            let out = Tensor::gpu_uninit(&ctx, OP, &target_shape)?;
            let p = params(&s, 0, 0, lanes, splits, rows_per_split);
            ctx.dispatch(
                OP,
                &key,
                p.bytes(),
                &[buf(x), buf(gy)],
                &[buf(&out)],
                groups(lanes, splits * oblocks)?,
            )?;
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
        return Err(shape_err(
            OP,
            format!("needs a 4-D gy [N, O, OH, OW], got {:?}", gy.shape()),
        ));
    };
    match gy.device() {
        Device::Cpu => Ok(Tensor::cpu(
            &[o],
            cpu::conv2d_backward_bias(n, o, oh * ow, gy.host().unwrap()),
        )),
        Device::Gpu(ctx) => {
            // Only n, o, oh, ow of the geometry are read by the bias kernels.
            let s = ConvShape {
                n,
                c: 0,
                h: 0,
                w: 0,
                o,
                kh: 0,
                kw: 0,
                stride: 1,
                pad: 0,
                oh,
                ow,
            };
            let (splits, rows_per_split) = reduction_splits(ctx.class, o, 1, n * oh);
            let out = Tensor::gpu_uninit(&ctx, OP, &[splits, o])?;
            let p = params(&s, 0, 0, o, splits, rows_per_split);
            let key = KernelKey::new("conv2d", "conv2d_bwd_bias");
            ctx.dispatch(
                OP,
                &key,
                p.bytes(),
                &[buf(gy)],
                &[buf(&out)],
                groups(o, splits)?,
            )?;
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
/// `dx = None` means `dx = 0` (e.g. for the input layer); `bias` is `(bias, dbias)`.
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
        return Err(shape_err(
            OP,
            format!("tangent dw {:?} vs w {:?}", dw.shape(), w.shape()),
        ));
    }
    if let Some(dx) = dx {
        if dx.shape() != x.shape() {
            return Err(shape_err(
                OP,
                format!("tangent dx {:?} vs x {:?}", dx.shape(), x.shape()),
            ));
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
    match common_device(OP, &all)? {
        Device::Cpu => {
            let (y, dy) = cpu::conv2d_jvp(
                &s,
                x.host().unwrap(),
                dx.map(|t| t.host().unwrap()),
                w.host().unwrap(),
                dw.host().unwrap(),
                bias.map(|(b, db)| (b.host().unwrap(), db.host().unwrap())),
                relu,
            );
            Ok((Tensor::cpu(&s.y_shape(), y), Tensor::cpu(&s.y_shape(), dy)))
        }
        Device::Gpu(ctx) => {
            let tangent = Some((dx, dw, bias.map(|(_, db)| db)));
            let (y, dy) = gpu_forward(&ctx, OP, &s, x, w, bias.map(|(b, _)| b), tangent, relu)?;
            Ok((y, dy.expect("JVP has a tangent output")))
        }
    }
}
