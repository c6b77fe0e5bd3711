//! Reductions (`kernels/reduce.wgsl`): whole-tensor sum, max, dot and squared norm as tree
//! reductions that stay on the device, plus per-column sums and per-row argmax of matrices.
//!
//! A whole-tensor reduction records `ceil(log_{WG·per}(n))` passes (two for up to ~16 M
//! elements on a software adapter) in the open command encoder, with no host readback between
//! passes; the result is a `[1]` tensor on the device.

use super::{buf, common_device, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{u32_of, ReduceParams, ELEMENT_WG, LANE_WG, REDUCE_DOT, REDUCE_MAX, REDUCE_SQNORM, REDUCE_SUM};
use crate::reference::reduce as reference;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Rows per block of one `col_sum_pass`.
const ROWS_PER_BLOCK: usize = 64;

/// Which whole-tensor reduction a first pass computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReduceOp {
    Sum,
    Max,
    Dot,
    SqNorm,
}

impl ReduceOp {
    /// Its `REDUCE_*` code, the `op` of `reduce_pass`.
    fn code(self) -> u32 {
        match self {
            ReduceOp::Sum => REDUCE_SUM,
            ReduceOp::Max => REDUCE_MAX,
            ReduceOp::Dot => REDUCE_DOT,
            ReduceOp::SqNorm => REDUCE_SQNORM,
        }
    }
}

/// Elements each invocation accumulates serially before the workgroup tree. Software adapters
/// pay for every workgroup barrier, so they get long serial runs; hardware GPUs want more
/// workgroups in flight.
fn per_invocation(ctx: &GpuContext) -> usize {
    match ctx.class {
        AdapterClass::Software => 256,
        AdapterClass::Hardware => 32,
    }
}

/// Records the passes of a whole-tensor reduction of `a` (and `b` for [`ReduceOp::Dot`]) and
/// returns the `[1]` result, multiplied by `scale`. `a` (and `b`) must be GPU tensors on `ctx`.
pub(crate) fn reduce_gpu(
    ctx: &Arc<GpuContext>,
    op_name: &'static str,
    op: ReduceOp,
    a: &Tensor,
    b: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    let per = per_invocation(ctx);
    // A workgroup of LANE_WG invocations reduces LANE_WG * per elements.
    let wg = LANE_WG as usize;
    let chunk = wg * per;
    let identity = if op == ReduceOp::Max { f32::NEG_INFINITY } else { 0.0 };
    let combine = if op == ReduceOp::Max { ReduceOp::Max } else { ReduceOp::Sum };
    let key = KernelKey::new("reduce", "reduce_pass");
    let mut n = a.numel();
    let mut cur: Option<Tensor> = None;
    let mut first = true;
    loop {
        let groups = n.div_ceil(chunk).max(1);
        let last = groups == 1;
        let out = Tensor::gpu_uninit(ctx, op_name, &[groups])?;
        let p = ReduceParams {
            n: u32_of(n),
            per: u32_of(per),
            op: if first { op } else { combine }.code(),
            groups: u32_of(groups),
            scale: if last { scale } else { 1.0 },
            identity,
            ..Default::default()
        };
        let src = cur.as_ref().unwrap_or(a);
        let mut inputs = vec![buf(src)];
        if first {
            if let Some(b) = b {
                inputs.push(buf(b));
            }
        }
        ctx.dispatch(op_name, &key, &p, &inputs, &[buf(&out)], groups_1d(groups * wg, LANE_WG))?;
        if last {
            return Ok(out);
        }
        n = groups;
        cur = Some(out);
        first = false;
    }
}

/// Runs a whole-tensor reduction on either device, counted as 1 FLOP per element of `a` for
/// a sum or max and 2 for a dot or squared norm (multiply and add).
fn whole(op_name: &'static str, op: ReduceOp, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let mut all = vec![a];
    all.extend(b);
    let dev = common_device(op_name, &all)?;
    cost::per_element(a.numel(), if matches!(op, ReduceOp::Dot | ReduceOp::SqNorm) { 2 } else { 1 });
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let x = a.host().unwrap();
            let v = match op {
                ReduceOp::Sum => host_impl!(dev, reduce::sum)(x),
                ReduceOp::Max => host_impl!(dev, reduce::max)(x),
                ReduceOp::Dot => host_impl!(dev, reduce::dot)(x, b.unwrap().host().unwrap()),
                ReduceOp::SqNorm => host_impl!(dev, reduce::sqnorm)(x),
            };
            Ok(Tensor::host_result(&dev, &[1], vec![v]))
        }
        Device::Gpu(ctx) => reduce_gpu(&ctx, op_name, op, a, b, 1.0),
    }
}

/// Sum of all elements, as a `[1]` tensor on the operand's device (0 for an empty tensor).
pub fn sum(x: &Tensor) -> Result<Tensor> {
    whole("sum", ReduceOp::Sum, x, None)
}

/// Largest element, as a `[1]` tensor. An error for an empty tensor. NaN handling follows the
/// device's `max` (the CPU reference skips NaNs; WGSL leaves it to the implementation).
pub fn max(x: &Tensor) -> Result<Tensor> {
    if x.numel() == 0 {
        return Err(Error::Invalid(format!("max: empty tensor {:?} has no maximum", x.shape())));
    }
    whole("max", ReduceOp::Max, x, None)
}

/// `Σ a_i b_i` over tensors of the same shape, as a `[1]` tensor.
pub fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(shape_err("dot", format!("{:?} vs {:?}", a.shape(), b.shape())));
    }
    whole("dot", ReduceOp::Dot, a, Some(b))
}

/// `Σ x_i²`, as a `[1]` tensor.
pub fn sqnorm(x: &Tensor) -> Result<Tensor> {
    whole("sqnorm", ReduceOp::SqNorm, x, None)
}

/// The `(rows, cols)` of a 2-D tensor, or a shape error naming `op`.
fn dims2(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    match *x.shape() {
        [r, c] => Ok((r, c)),
        ref s => Err(shape_err(op, format!("needs a 2-D [rows, cols] tensor, got {s:?}"))),
    }
}

/// Column sums of `x` `[rows, cols]`: a `[cols]` tensor (the bias gradient over a batch).
/// Blocks of 64 rows are summed per pass until one row remains.
pub fn sum_rows(x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = dims2("sum_rows", x)?;
    cost::per_element(rows * cols, 1);
    match x.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            Ok(Tensor::host_result(&dev, &[cols], reference::sum_rows(x.host().unwrap(), cols)))
        }
        Device::Gpu(ctx) => {
            let key = KernelKey::new("reduce", "col_sum_pass");
            let mut rows = rows;
            let mut cur: Option<Tensor> = None;
            loop {
                let blocks = rows.div_ceil(ROWS_PER_BLOCK).max(1);
                let shape = if blocks == 1 { vec![cols] } else { vec![blocks, cols] };
                let out = Tensor::gpu_uninit(&ctx, "sum_rows", &shape)?;
                let p = ReduceParams {
                    n: u32_of(rows),
                    cols: u32_of(cols),
                    per: u32_of(ROWS_PER_BLOCK),
                    groups: u32_of(blocks * cols),
                    ..Default::default()
                };
                let src = cur.as_ref().unwrap_or(x);
                let groups = groups_1d(blocks * cols, ELEMENT_WG);
                ctx.dispatch("sum_rows", &key, &p, &[buf(src)], &[buf(&out)], groups)?;
                if blocks == 1 {
                    return Ok(out);
                }
                rows = blocks;
                cur = Some(out);
            }
        }
    }
}

/// Per row of `x` `[rows, cols]`, the index of its largest value (the first one on ties): a
/// `[rows]` tensor of u32 stored bitwise (read with [`Tensor::to_u32`]). An error when
/// `cols == 0`.
pub fn argmax_rows(x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = dims2("argmax_rows", x)?;
    if cols == 0 && rows > 0 {
        return Err(shape_err("argmax_rows", format!("rows of {:?} are empty", x.shape())));
    }
    cost::per_element(rows * cols, 1);
    match x.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            let idx = if rows == 0 { Vec::new() } else { reference::argmax_rows(x.host().unwrap(), cols) };
            Ok(Tensor::host_result(&dev, &[rows], idx.into_iter().map(f32::from_bits).collect()))
        }
        Device::Gpu(ctx) => {
            let out = Tensor::gpu_uninit(&ctx, "argmax_rows", &[rows])?;
            // The f32 output binding is unused; a small scratch buffer fills it.
            let unused = Tensor::gpu_uninit(&ctx, "argmax_rows", &[1])?;
            ctx.dispatch(
                "argmax_rows",
                &KernelKey::new("reduce", "argmax_rows"),
                &ReduceParams { n: u32_of(rows), cols: u32_of(cols), ..Default::default() },
                &[buf(x)],
                &[buf(&unused), buf(&out)],
                groups_1d(rows, LANE_WG),
            )?;
            Ok(out)
        }
    }
}
