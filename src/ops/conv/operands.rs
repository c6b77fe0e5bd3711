//! The operands and bindings of a forward convolution or its fused JVP, shared by every
//! forward kernel (direct, lowered, implicit GEMM).

use super::buf;
use crate::error::Result;
use crate::gpu::{BufferView, GpuContext};
use crate::kernels::{FLAG_BIAS, FLAG_HAS_DX, FLAG_RELU};
use crate::reference::conv::ConvShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// The operands of a forward convolution, `act(conv(x, w) + bias)`, and with
/// `tangent = (dx, dw, dbias)` of its fused JVP (`dx`, `dbias` absent: zero).
#[derive(Clone, Copy)]
pub(super) struct ForwardOperands<'t> {
    pub(super) x: &'t Tensor,
    pub(super) w: &'t Tensor,
    pub(super) bias: Option<&'t Tensor>,
    pub(super) tangent: Option<(Option<&'t Tensor>, &'t Tensor, Option<&'t Tensor>)>,
    pub(super) relu: bool,
}

impl<'t> ForwardOperands<'t> {
    /// Whether it is a JVP.
    pub(super) fn jvp(&self) -> bool {
        self.tangent.is_some()
    }

    /// The input tangent `dx`, if any.
    pub(super) fn dx(&self) -> Option<&'t Tensor> {
        self.tangent.and_then(|t| t.0)
    }

    /// Fresh outputs `y` and, for a JVP, `dy`.
    pub(super) fn outputs(
        &self,
        ctx: &Arc<GpuContext>,
        op: &'static str,
        s: &ConvShape,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let y = Tensor::gpu_uninit(ctx, op, &s.y_shape())?;
        let dy = if self.jvp() { Some(Tensor::gpu_uninit(ctx, op, &s.y_shape())?) } else { None };
        Ok((y, dy))
    }

    /// The epilogue flags of its kernel.
    pub(super) fn flags(&self) -> u32 {
        (if self.bias.is_some() { FLAG_BIAS } else { 0 })
            | if self.relu { FLAG_RELU } else { 0 }
            | if self.dx().is_some() { FLAG_HAS_DX } else { 0 }
    }

    /// The read bindings of its kernel: x, w, bias, then dx, dw, dbias for a JVP (absent ones
    /// bound to `x`, unread; without a bias or tangent the dispatch binds its placeholders, so
    /// that `x` may be f16).
    pub(super) fn inputs(&self) -> Vec<BufferView<'t>> {
        let x = self.x;
        let mut inputs = vec![buf(x), buf(self.w)];
        if self.bias.is_some() || self.jvp() {
            inputs.push(self.bias.map_or(buf(x), buf));
        }
        if let Some((dx, dw, dbias)) = self.tangent {
            inputs.extend([dx.map_or(buf(x), buf), buf(dw), dbias.map_or(buf(x), buf)]);
        }
        inputs
    }
}

/// The write bindings of a forward or JVP kernel: `y`, then `dy` for a JVP.
pub(super) fn forward_bindings<'a>(y: &'a Tensor, dy: &'a Option<Tensor>) -> Vec<BufferView<'a>> {
    std::iter::once(buf(y)).chain(dy.as_ref().map(buf)).collect()
}
