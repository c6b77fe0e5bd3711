//! Elementwise ops (`kernels/elementwise.wgsl`).

use super::{common_device, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::gpu::KernelKey;
use crate::kernels::{u32_of, ElementwiseParams, ELEMENT_WG, FLAG_RELU};
use crate::tensor::Tensor;

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(shape_err(op, format!("{:?} vs {:?}", a.shape(), b.shape())));
    }
    Ok(())
}

/// [`ElementwiseParams`] over `n` elements, the other fields zero.
fn over(n: usize) -> ElementwiseParams {
    ElementwiseParams { n: u32_of(n), ..Default::default() }
}

/// Runs elementwise entry point `entry` with inputs `ins`, producing `n_out` tensors of the
/// shape of `ins[0]`.
fn launch(
    op: &'static str,
    entry: &'static str,
    params: ElementwiseParams,
    ins: &[&Tensor],
    n_out: usize,
) -> Result<Vec<Tensor>> {
    let dev = common_device(op, ins)?;
    let ctx = dev.gpu().expect("launch on GPU only");
    let shape = ins[0].shape();
    let outs: Vec<Tensor> = (0..n_out).map(|_| Tensor::gpu_uninit(ctx, op, shape)).collect::<Result<_>>()?;
    let in_bufs: Vec<_> = ins.iter().map(|t| super::buf(t)).collect();
    let out_bufs: Vec<_> = outs.iter().map(|t| super::buf(t)).collect();
    ctx.dispatch(
        op,
        &KernelKey::new("elementwise", entry),
        &params,
        &in_bufs,
        &out_bufs,
        groups_1d(ins[0].numel(), ELEMENT_WG),
    )?;
    Ok(outs)
}

fn one(mut v: Vec<Tensor>) -> Tensor {
    v.swap_remove(0)
}

/// `alpha * a + beta * b`.
pub fn axpby(alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
    axpby_counted(alpha, a, beta, b, 3)
}

/// [`axpby`] counted as `per` FLOPs per element: the ops built on it count what they compute
/// (an add 1, an axpy 2).
pub(super) fn axpby_counted(alpha: f32, a: &Tensor, beta: f32, b: &Tensor, per: u64) -> Result<Tensor> {
    same_shape("axpby", a, b)?;
    let dev = common_device("axpby", &[a, b])?;
    cost::per_element(a.numel(), per);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            a.shape(),
            host_impl!(dev, elementwise::axpby)(alpha, a.host().unwrap(), beta, b.host().unwrap()),
        )),
        Device::Gpu(_) => {
            let p = ElementwiseParams { alpha, beta, ..over(a.numel()) };
            launch("axpby", "axpby", p, &[a, b], 1).map(one)
        }
    }
}

/// `a + b`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby_counted(1.0, a, 1.0, b, 1)
}

/// `a - b`.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby_counted(1.0, a, -1.0, b, 1)
}

/// `a * b` elementwise.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape("mul", a, b)?;
    let dev = common_device("mul", &[a, b])?;
    cost::per_element(a.numel(), 1);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            a.shape(),
            host_impl!(dev, elementwise::mul)(a.host().unwrap(), b.host().unwrap()),
        )),
        Device::Gpu(_) => launch("mul", "mul", over(a.numel()), &[a, b], 1).map(one),
    }
}

/// `alpha * a`.
pub fn scale(alpha: f32, a: &Tensor) -> Result<Tensor> {
    cost::per_element(a.numel(), 1);
    match a.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            Ok(Tensor::host_result(&dev, a.shape(), host_impl!(dev, elementwise::scale)(alpha, a.host().unwrap())))
        }
        Device::Gpu(_) => launch("scale", "scale", ElementwiseParams { alpha, ..over(a.numel()) }, &[a], 1).map(one),
    }
}

/// A tensor of `shape` filled with `value`, made on the device (no upload).
pub fn fill(device: &Device, shape: &[usize], value: f32) -> Result<Tensor> {
    match device {
        Device::Reference | Device::Cpu => Tensor::full(device, shape, value),
        Device::Gpu(ctx) => {
            let out = Tensor::gpu_uninit(ctx, "fill", shape)?;
            ctx.dispatch(
                "fill",
                &KernelKey::new("elementwise", "fill"),
                &ElementwiseParams { alpha: value, ..over(out.numel()) },
                &[],
                &[super::buf(&out)],
                groups_1d(out.numel(), ELEMENT_WG),
            )?;
            Ok(out)
        }
    }
}

/// `max(a, 0)`.
pub fn relu(a: &Tensor) -> Result<Tensor> {
    cost::per_element(a.numel(), 1);
    match a.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            Ok(Tensor::host_result(&dev, a.shape(), host_impl!(dev, elementwise::relu)(a.host().unwrap())))
        }
        Device::Gpu(_) => launch("relu", "relu", over(a.numel()), &[a], 1).map(one),
    }
}

/// The ReLU backward rule `g * [x > 0]` (`x` the ReLU input or its output).
pub fn relu_backward(g: &Tensor, x: &Tensor) -> Result<Tensor> {
    same_shape("relu_backward", g, x)?;
    let dev = common_device("relu_backward", &[g, x])?;
    cost::per_element(g.numel(), 1);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            g.shape(),
            host_impl!(dev, elementwise::relu_backward)(g.host().unwrap(), x.host().unwrap()),
        )),
        Device::Gpu(_) => launch("relu_backward", "relu_backward", over(g.numel()), &[g, x], 1).map(one),
    }
}

/// Fused forward mode of ReLU: `(max(x, 0), dx * [x > 0])` in one dispatch.
pub fn relu_jvp(x: &Tensor, dx: &Tensor) -> Result<(Tensor, Tensor)> {
    same_shape("relu_jvp", x, dx)?;
    let dev = common_device("relu_jvp", &[x, dx])?;
    cost::per_element(x.numel(), 2);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, dy) = host_impl!(dev, elementwise::relu_jvp)(x.host().unwrap(), dx.host().unwrap());
            Ok((Tensor::host_result(&dev, x.shape(), y), Tensor::host_result(&dev, x.shape(), dy)))
        }
        Device::Gpu(_) => {
            let mut v = launch("relu_jvp", "relu_jvp", over(x.numel()), &[x, dx], 2)?;
            let dy = v.pop().unwrap();
            Ok((v.pop().unwrap(), dy))
        }
    }
}

/// `x[r, c] + b[c]` for a 2-D `x` of `[rows, cols]` and `b` of `[cols]`, then ReLU if `relu`
/// (1 FLOP per element each, as the epilogues of a product).
pub fn add_bias(x: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let cols = *x.shape().last().unwrap_or(&0);
    if b.shape() != [cols] {
        return Err(shape_err("add_bias", format!("x {:?} needs bias [{cols}], got {:?}", x.shape(), b.shape())));
    }
    let dev = common_device("add_bias", &[x, b])?;
    cost::per_element(x.numel(), 1 + relu as u64);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            x.shape(),
            host_impl!(dev, elementwise::add_bias)(x.host().unwrap(), b.host().unwrap(), relu),
        )),
        Device::Gpu(_) => {
            let flags = if relu { FLAG_RELU } else { 0 };
            let p = ElementwiseParams { cols: u32_of(cols), flags, ..over(x.numel()) };
            launch("add_bias", "add_bias", p, &[x, b], 1).map(one)
        }
    }
}

/// Splits flat vector `x` into consecutive tensors of `shapes` (their sizes must add up to
/// `x.numel()`). On a GPU, pieces whose start the adapter can bind directly are views sharing
/// `x`'s buffer (no copy); the others are copied.
pub fn split(x: &Tensor, shapes: &[Vec<usize>]) -> Result<Vec<Tensor>> {
    let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let total: usize = lens.iter().sum();
    if total != x.numel() {
        return Err(shape_err(
            "split",
            format!("pieces {shapes:?} hold {total} elements, vector {:?} has {}", x.shape(), x.numel()),
        ));
    }
    match x.device() {
        dev @ (Device::Reference | Device::Cpu) => Ok(host_impl!(dev, elementwise::split)(x.host().unwrap(), &lens)
            .into_iter()
            .zip(shapes)
            .map(|(v, s)| Tensor::host_result(&dev, s, v))
            .collect()),
        Device::Gpu(ctx) => {
            let mut off = 0;
            let mut out = Vec::with_capacity(shapes.len());
            for (s, &n) in shapes.iter().zip(&lens) {
                if let Some(view) = x.gpu_view(off, s) {
                    off += n;
                    out.push(view);
                    continue;
                }
                let piece = Tensor::gpu_uninit(&ctx, "split", s)?;
                ctx.dispatch(
                    "split",
                    &KernelKey::new("elementwise", "copy_range"),
                    &ElementwiseParams { src_offset: u32_of(off), ..over(n) },
                    &[super::buf(x)],
                    &[super::buf(&piece)],
                    groups_1d(n, ELEMENT_WG),
                )?;
                off += n;
                out.push(piece);
            }
            Ok(out)
        }
    }
}

/// Copies GPU tensor `src`, flattened, into the elements `[offset, offset + src.numel())` of
/// GPU tensor `dst`: for assembling a vector whose other elements are written elsewhere.
pub(crate) fn copy_into(src: &Tensor, dst: &Tensor, offset: usize) -> Result<()> {
    if offset + src.numel() > dst.numel() {
        return Err(shape_err("copy_into", format!("{:?} at offset {offset} overruns {:?}", src.shape(), dst.shape())));
    }
    let Device::Gpu(ctx) = common_device("copy_into", &[src, dst])? else {
        return Err(crate::error::Error::Invalid("copy_into: tensors are immutable on the CPU device".into()));
    };
    ctx.dispatch(
        "copy_into",
        &KernelKey::new("elementwise", "copy_range"),
        &ElementwiseParams { dst_offset: u32_of(offset), ..over(src.numel()) },
        &[super::buf(src)],
        &[super::buf(dst)],
        groups_1d(src.numel(), ELEMENT_WG),
    )
}

/// Concatenates tensors, flattened, into one vector.
pub fn concat(parts: &[&Tensor]) -> Result<Tensor> {
    if parts.is_empty() {
        return Err(crate::error::Error::Invalid("concat of no tensors".into()));
    }
    let total: usize = parts.iter().map(|t| t.numel()).sum();
    match common_device("concat", parts)? {
        dev @ (Device::Reference | Device::Cpu) => {
            let mut v = Vec::with_capacity(total);
            for t in parts {
                v.extend_from_slice(t.host().unwrap());
            }
            Ok(Tensor::host_result(&dev, &[total], v))
        }
        Device::Gpu(ctx) => {
            let out = Tensor::gpu_uninit(&ctx, "concat", &[total])?;
            let mut off = 0;
            for t in parts {
                ctx.dispatch(
                    "concat",
                    &KernelKey::new("elementwise", "copy_range"),
                    &ElementwiseParams { dst_offset: u32_of(off), ..over(t.numel()) },
                    &[super::buf(t)],
                    &[super::buf(&out)],
                    groups_1d(t.numel(), ELEMENT_WG),
                )?;
                off += t.numel();
            }
            Ok(out)
        }
    }
}
