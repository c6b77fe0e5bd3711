//! Row-wise softmax and cross-entropy (`kernels/softmax.wgsl`) over logits `z` of
//! `[rows, cols]`, with labels a `[rows]` tensor of u32 stored bitwise
//! ([`Tensor::from_u32`]).
//!
//! Label range: labels on the CPU device are checked (a label `>= cols` is an error). Labels
//! on a GPU are not read back; the kernels clamp a label `>= cols` to `cols - 1`, so a bad label
//! gives a wrong loss for its row but never an out-of-bounds read.

use super::reduce::{reduce_gpu, ReduceOp};
use super::{buf, common_device, groups_1d};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::KernelKey;
use crate::kernels::{u32_of, SoftmaxParams, LANE_WG};
use crate::reference::softmax as reference;
use crate::tensor::Tensor;

/// The `(rows, cols)` of 2-D logits, or a shape error naming `op`.
fn dims(op: &'static str, z: &Tensor) -> Result<(usize, usize)> {
    match *z.shape() {
        [r, c] => Ok((r, c)),
        ref s => Err(shape_err(op, format!("logits must be 2-D [rows, cols], got {s:?}"))),
    }
}

/// Checks that `t` has the shape of the logits `z`.
fn same_shape(op: &'static str, z: &Tensor, t: &Tensor) -> Result<()> {
    if z.shape() != t.shape() {
        return Err(shape_err(op, format!("logits {:?} vs tangent {:?}", z.shape(), t.shape())));
    }
    Ok(())
}

/// Checks the labels' shape `[rows]` and that there is a class to pick; on the CPU device also
/// that every label is `< cols`. Returns the host labels when they live on the CPU.
fn check_labels(op: &'static str, z: &Tensor, labels: &Tensor) -> Result<Option<Vec<u32>>> {
    let (rows, cols) = dims(op, z)?;
    if labels.shape() != [rows] {
        return Err(shape_err(op, format!("logits {:?} need labels [{rows}], got {:?}", z.shape(), labels.shape())));
    }
    if cols == 0 && rows > 0 {
        return Err(shape_err(op, format!("logits {:?} have no classes", z.shape())));
    }
    let Some(host) = labels.host() else {
        return Ok(None);
    };
    let l: Vec<u32> = host.iter().map(|v| v.to_bits()).collect();
    if let Some((r, &bad)) = l.iter().enumerate().find(|(_, &v)| v as usize >= cols) {
        return Err(Error::Invalid(format!("{op}: label {bad} of row {r} is out of range for {cols} classes")));
    }
    Ok(Some(l))
}

/// Records `entry` over the rows of `z`, binding z, the tangent `dz` and the labels in order
/// (missing ones as `z`), producing `n_out` tensors of `out_shape`.
fn launch(
    op: &'static str,
    entry: &'static str,
    z: &Tensor,
    (dz, labels): (Option<&Tensor>, Option<&Tensor>),
    scale: f32,
    out_shape: &[usize],
    n_out: usize,
) -> Result<Vec<Tensor>> {
    let (rows, cols) = dims(op, z)?;
    let ctx = z.device().gpu().expect("launch on GPU only").clone();
    let outs: Vec<Tensor> = (0..n_out).map(|_| Tensor::gpu_uninit(&ctx, op, out_shape)).collect::<Result<_>>()?;
    let inputs = [buf(z), buf(dz.unwrap_or(z)), buf(labels.unwrap_or(z))];
    let out_bufs: Vec<_> = outs.iter().map(buf).collect();
    let p = SoftmaxParams { rows: u32_of(rows), cols: u32_of(cols), scale };
    ctx.dispatch(op, &KernelKey::new("softmax", entry), &p, &inputs, &out_bufs, groups_1d(rows, LANE_WG))?;
    Ok(outs)
}

/// Row-wise softmax of `z` `[rows, cols]`.
pub fn softmax(z: &Tensor) -> Result<Tensor> {
    let (_, cols) = dims("softmax", z)?;
    cost::per_element(z.numel(), 4);
    match z.device() {
        _ if z.numel() == 0 => Tensor::zeros(&z.device(), z.shape()),
        dev @ (Device::Reference | Device::Cpu) => {
            Ok(Tensor::host_result(&dev, z.shape(), reference::softmax(z.host().unwrap(), cols)))
        }
        Device::Gpu(_) => Ok(launch("softmax", "softmax", z, (None, None), 1.0, z.shape(), 1)?.remove(0)),
    }
}

/// Row-wise `log_softmax(z) = z - max - log Σ exp(z - max)` of `z` `[rows, cols]`.
pub fn log_softmax(z: &Tensor) -> Result<Tensor> {
    let (_, cols) = dims("log_softmax", z)?;
    cost::per_element(z.numel(), 4);
    match z.device() {
        _ if z.numel() == 0 => Tensor::zeros(&z.device(), z.shape()),
        dev @ (Device::Reference | Device::Cpu) => {
            Ok(Tensor::host_result(&dev, z.shape(), reference::log_softmax(z.host().unwrap(), cols)))
        }
        Device::Gpu(_) => Ok(launch("log_softmax", "log_softmax", z, (None, None), 1.0, z.shape(), 1)?.remove(0)),
    }
}

/// Mean over rows of `-log_softmax(z)[row, labels[row]]`: a `[1]` tensor on the device. An
/// error for zero rows, for labels not of shape `[rows]`, and (labels on the CPU) for a label
/// `>= cols`; see the module doc for GPU labels.
pub fn cross_entropy(z: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (rows, cols) = dims("cross_entropy", z)?;
    let dev = common_device("cross_entropy", &[z, labels])?;
    let host_labels = check_labels("cross_entropy", z, labels)?;
    if rows == 0 {
        return Err(shape_err("cross_entropy", format!("logits {:?} have no rows to average", z.shape())));
    }
    cost::per_element(z.numel(), 4);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            &[1],
            vec![reference::cross_entropy(z.host().unwrap(), cols, &host_labels.unwrap())],
        )),
        Device::Gpu(ctx) => {
            let per_row =
                launch("cross_entropy", "cross_entropy_rows", z, (None, Some(labels)), 1.0, &[rows], 1)?.remove(0);
            reduce_gpu(&ctx, "cross_entropy", ReduceOp::Sum, &per_row, None, 1.0 / rows as f32)
        }
    }
}

/// The gradient of `scale`·(summed cross-entropy) with respect to the logits:
/// `scale * (softmax(z) - onehot(labels))`, `[rows, cols]`. With `scale = 1 / rows` it is the
/// gradient of [`cross_entropy`].
pub fn cross_entropy_backward(z: &Tensor, labels: &Tensor, scale: f32) -> Result<Tensor> {
    let (_, cols) = dims("cross_entropy_backward", z)?;
    let dev = common_device("cross_entropy_backward", &[z, labels])?;
    let host_labels = check_labels("cross_entropy_backward", z, labels)?;
    cost::per_element(z.numel(), 4);
    match dev {
        _ if z.numel() == 0 => Tensor::zeros(&z.device(), z.shape()),
        dev @ (Device::Reference | Device::Cpu) => Ok(Tensor::host_result(
            &dev,
            z.shape(),
            reference::cross_entropy_backward(z.host().unwrap(), cols, &host_labels.unwrap(), scale),
        )),
        Device::Gpu(_) => Ok(launch(
            "cross_entropy_backward",
            "cross_entropy_backward",
            z,
            (None, Some(labels)),
            scale,
            z.shape(),
            1,
        )?
        .remove(0)),
    }
}

/// Fused forward mode of [`cross_entropy_backward`] in one dispatch: `(g, dg)` with
/// `g = scale * (p - onehot(labels))` and `dg = scale * p ⊙ (dz - <p, dz>_row)`,
/// `p = softmax(z)`.
pub fn cross_entropy_backward_jvp(z: &Tensor, dz: &Tensor, labels: &Tensor, scale: f32) -> Result<(Tensor, Tensor)> {
    let op = "cross_entropy_backward_jvp";
    let (_, cols) = dims(op, z)?;
    same_shape(op, z, dz)?;
    let dev = common_device(op, &[z, dz, labels])?;
    let host_labels = check_labels(op, z, labels)?;
    cost::per_element(z.numel(), 6);
    match dev {
        _ if z.numel() == 0 => Ok((Tensor::zeros(&z.device(), z.shape())?, Tensor::zeros(&z.device(), z.shape())?)),
        dev @ (Device::Reference | Device::Cpu) => {
            let (g, dg) = reference::cross_entropy_backward_jvp(
                z.host().unwrap(),
                dz.host().unwrap(),
                cols,
                &host_labels.unwrap(),
                scale,
            );
            Ok((Tensor::host_result(&dev, z.shape(), g), Tensor::host_result(&dev, z.shape(), dg)))
        }
        Device::Gpu(_) => {
            let mut v = launch(op, "cross_entropy_backward_jvp", z, (Some(dz), Some(labels)), scale, z.shape(), 2)?;
            let dg = v.pop().unwrap();
            Ok((v.pop().unwrap(), dg))
        }
    }
}

/// Forward mode of softmax in one dispatch: `(p, p ⊙ (dz - <p, dz>_row))`, `p = softmax(z)`.
pub fn softmax_jvp(z: &Tensor, dz: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, cols) = dims("softmax_jvp", z)?;
    same_shape("softmax_jvp", z, dz)?;
    let dev = common_device("softmax_jvp", &[z, dz])?;
    cost::per_element(z.numel(), 5);
    match dev {
        _ if z.numel() == 0 => Ok((Tensor::zeros(&z.device(), z.shape())?, Tensor::zeros(&z.device(), z.shape())?)),
        dev @ (Device::Reference | Device::Cpu) => {
            let (p, dp) = reference::softmax_jvp(z.host().unwrap(), dz.host().unwrap(), cols);
            Ok((Tensor::host_result(&dev, z.shape(), p), Tensor::host_result(&dev, z.shape(), dp)))
        }
        Device::Gpu(_) => {
            let mut v = launch("softmax_jvp", "softmax_jvp", z, (Some(dz), None), 1.0, z.shape(), 2)?;
            let dp = v.pop().unwrap();
            Ok((v.pop().unwrap(), dp))
        }
    }
}
