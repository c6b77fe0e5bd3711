//! Conversion of tensors to f16 storage (`kernels/cast.wgsl`), on GPU adapters with
//! `SHADER_F16`; host devices keep f32 only.

use super::{buf, groups_1d};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, KernelKey};
use crate::kernels::{u32_of, ElementwiseParams, ELEMENT_WG};
use crate::tensor::Tensor;
use std::sync::Arc;

/// `x` in f16 storage, rounded to nearest with ties to even (as `half::f16::from_f32`); `x`
/// itself when already f16. Errors off a GPU adapter with `SHADER_F16`.
pub fn to_f16(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F16 {
        return Ok(x.clone());
    }
    let ctx = f16_context("to_f16", &x.device())?;
    let y = Tensor::gpu_uninit_of(&ctx, "to_f16", x.shape(), DType::F16)?;
    let n = x.numel();
    if n > 0 {
        let p = ElementwiseParams { n: u32_of(n), ..Default::default() };
        let key = KernelKey::new("cast", "cast_f16");
        ctx.dispatch("to_f16", &key, &p, &[buf(x)], &[buf(&y)], groups_1d(n.div_ceil(2), ELEMENT_WG))?;
    }
    Ok(y)
}

/// Whether `device` can hold f16 storage: a GPU adapter with `SHADER_F16`.
pub fn holds_f16(device: &Device) -> bool {
    device.gpu().is_some_and(|ctx| ctx.features.contains(wgpu::Features::SHADER_F16))
}

/// The GPU context of `device` when it can hold f16 storage, else an error naming `op`.
pub(crate) fn f16_context(op: &str, device: &Device) -> Result<Arc<GpuContext>> {
    match device {
        Device::Gpu(ctx) if holds_f16(device) => Ok(ctx.clone()),
        Device::Gpu(ctx) => Err(Error::Invalid(format!(
            "{op}: f16 storage needs a GPU adapter with SHADER_F16, which {} lacks",
            ctx.info.name
        ))),
        other => Err(Error::Invalid(format!(
            "{op}: f16 storage needs a GPU adapter with SHADER_F16; the {} device holds f32 only",
            other.name()
        ))),
    }
}
