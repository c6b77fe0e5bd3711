//! 2-D max pooling, NCHW, square window and stride, no padding (`kernels/pool.wgsl`).
//!
//! The argmax indices are flat input offsets (u32, stored bitwise in a [`Tensor`] of the
//! output's shape); the backward rule scatters through them, so it needs neither the window
//! nor the stride and is exact for overlapping windows.

use super::{buf, common_device, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::KernelKey;
use crate::kernels::{u32_of, PoolParams, LANE_WG};
use crate::reference::pool::PoolShape;
use crate::tensor::Tensor;

/// Checks the input shape and window; returns the pooling geometry.
fn pool_shape(op: &'static str, x_shape: &[usize], k: usize, stride: usize) -> Result<PoolShape> {
    if k == 0 || stride == 0 {
        return Err(Error::Invalid(format!("{op}: window ({k}) and stride ({stride}) must be at least 1")));
    }
    let s = PoolShape::new(x_shape, k, stride)
        .ok_or_else(|| shape_err(op, format!("needs a 4-D x [N, C, H, W] with H, W >= window {k}, got {x_shape:?}")))?;
    if s.n * s.c * s.h * s.w > u32::MAX as usize {
        return Err(Error::Invalid(format!("{op}: x {x_shape:?} has too many elements for u32 indices")));
    }
    Ok(s)
}

/// The uniform block of the forward kernels: `total` output elements of pooling `s`.
fn params(total: usize, s: &PoolShape) -> PoolParams {
    PoolParams {
        total: u32_of(total),
        h: u32_of(s.h),
        w: u32_of(s.w),
        oh: u32_of(s.oh),
        ow: u32_of(s.ow),
        k: u32_of(s.k),
        stride: u32_of(s.stride),
    }
}

fn idx_tensor(dev: &Device, shape: &[usize], idx: Vec<u32>) -> Tensor {
    Tensor::host_result(dev, shape, idx.into_iter().map(f32::from_bits).collect())
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.host().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Max pooling with a `k` x `k` window: returns `(y, argmax)`, both `[N, C, OH, OW]` with
/// `OH = (H - k) / stride + 1`; `argmax` holds the flat input offset of each window's first
/// maximum as u32 (read it with [`Tensor::to_u32`]). Counted as `k²` FLOPs per output element.
pub fn maxpool2d(x: &Tensor, k: usize, stride: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "maxpool2d";
    let s = pool_shape(OP, x.shape(), k, stride)?;
    let shape = s.y_shape();
    cost::per_element(shape.iter().product(), (k * k) as u64);
    match x.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, idx) = host_impl!(dev, pool::maxpool2d)(&s, x.host().unwrap());
            Ok((Tensor::host_result(&dev, &shape, y), idx_tensor(&dev, &shape, idx)))
        }
        Device::Gpu(ctx) => {
            let y = Tensor::gpu_uninit(&ctx, OP, &shape)?;
            let idx = Tensor::gpu_uninit(&ctx, OP, &shape)?;
            let total = y.numel();
            let key = KernelKey::new("pool", "maxpool2d_fwd");
            let p = params(total, &s);
            ctx.dispatch(OP, &key, &p, &[buf(x)], &[buf(&y), buf(&idx)], groups_1d(total, LANE_WG))?;
            Ok((y, idx))
        }
    }
}

/// Checks `gy`, `indices` and `x_shape` agree; returns `(planes, h * w, oh * ow)`.
fn backward_dims(op: &'static str, gy: &Tensor, indices: &Tensor, x_shape: &[usize]) -> Result<(usize, usize, usize)> {
    let (&[n, c, h, w], &[gn, gc, oh, ow]) = (x_shape, gy.shape()) else {
        return Err(shape_err(op, format!("needs 4-D gy and x shapes, got gy {:?} and x {x_shape:?}", gy.shape())));
    };
    if indices.shape() != gy.shape() {
        return Err(shape_err(op, format!("indices {:?} vs gy {:?}", indices.shape(), gy.shape())));
    }
    if gn != n || gc != c || oh > h || ow > w || (h * w > 0 && oh * ow == 0 && n * c > 0) {
        return Err(shape_err(op, format!("gy {:?} is not a pooling of x {x_shape:?}", gy.shape())));
    }
    if n * c * h * w > u32::MAX as usize {
        return Err(Error::Invalid(format!("{op}: x {x_shape:?} has too many elements for u32 indices")));
    }
    Ok((n * c, h * w, oh * ow))
}

/// Max-pooling backward: the input gradient of shape `x_shape`, with `gy[j]` added at the
/// input offset `indices[j]` (summed where overlapping windows share an argmax). Indices
/// outside the plane of their window are ignored.
pub fn maxpool2d_backward(gy: &Tensor, indices: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "maxpool2d_backward";
    let (planes, hw, ohw) = backward_dims(OP, gy, indices, x_shape)?;
    let dev = common_device(OP, &[gy, indices])?;
    cost::per_element(gy.numel(), 1);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            x_shape,
            host_impl!(dev, pool::maxpool2d_backward)(planes, hw, ohw, gy.host().unwrap(), &bits(indices)),
        )),
        Device::Gpu(ctx) => {
            let gx = Tensor::gpu_uninit(&ctx, OP, x_shape)?;
            // One invocation per (n, c) plane scatters that plane's gradients serially: exact
            // for overlapping windows without atomics, and independent of window and stride.
            let p = PoolParams { total: u32_of(planes), h: u32_of(hw), w: u32_of(ohw), ..Default::default() };
            let key = KernelKey::new("pool", "maxpool2d_bwd");
            let inputs = [buf(gy), buf(gy), buf(indices)];
            ctx.dispatch(OP, &key, &p, &inputs, &[buf(&gx)], groups_1d(planes, LANE_WG))?;
            Ok(gx)
        }
    }
}

/// Fused forward mode of max pooling in one dispatch: `(y, dy, argmax)` with
/// `dy[j] = dx[argmax[j]]`, shapes and indices as in [`maxpool2d`]. Counted as `k² + 1` FLOPs
/// per output element.
pub fn maxpool2d_jvp(x: &Tensor, dx: &Tensor, k: usize, stride: usize) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "maxpool2d_jvp";
    if dx.shape() != x.shape() {
        return Err(shape_err(OP, format!("tangent dx {:?} vs x {:?}", dx.shape(), x.shape())));
    }
    let s = pool_shape(OP, x.shape(), k, stride)?;
    let shape = s.y_shape();
    let dev = common_device(OP, &[x, dx])?;
    cost::per_element(shape.iter().product(), (k * k + 1) as u64);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, dy, idx) = host_impl!(dev, pool::maxpool2d_jvp)(&s, x.host().unwrap(), dx.host().unwrap());
            Ok((
                Tensor::host_result(&dev, &shape, y),
                Tensor::host_result(&dev, &shape, dy),
                idx_tensor(&dev, &shape, idx),
            ))
        }
        Device::Gpu(ctx) => {
            let y = Tensor::gpu_uninit(&ctx, OP, &shape)?;
            let dy = Tensor::gpu_uninit(&ctx, OP, &shape)?;
            let idx = Tensor::gpu_uninit(&ctx, OP, &shape)?;
            let total = y.numel();
            let key = KernelKey::new("pool", "maxpool2d_jvp");
            let p = params(total, &s);
            ctx.dispatch(OP, &key, &p, &[buf(x), buf(dx)], &[buf(&y), buf(&idx), buf(&dy)], groups_1d(total, LANE_WG))?;
            Ok((y, dy, idx))
        }
    }
}
