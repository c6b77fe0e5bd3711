//! Inverted dropout (`kernels/dropout.wgsl`). Its backward and forward mode are products with
//! its mask ([`crate::ops::elementwise::mul`]).

use super::{buf, groups_1d, host_impl};
use crate::cost;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::kernels::{u32_of, DropoutParams, ELEMENT_WG};
use crate::reference::norm as reference;
use crate::tensor::Tensor;

/// Inverted dropout: `(y, mask)` with `mask[i]` in `{0, 1/(1-p)}` and `y = x * mask`. The mask
/// comes from a counter-based hash of `(seed, i)` (see [`crate::reference::norm::dropout_bits`]):
/// element `i` is dropped with probability `round(p·2^24) / 2^24`, and GPU and CPU draw
/// identical masks. `p` must be in `[0, 1)`. Its backward and forward mode are products with
/// the same mask ([`crate::ops::elementwise::mul`]).
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<(Tensor, Tensor)> {
    const OP: &str = "dropout";
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid(format!("{OP}: drop probability p must be in [0, 1), got {p}")));
    }
    cost::per_element(x.numel(), 2);
    match x.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            let (y, m) = host_impl!(dev, norm::dropout)(x.host().expect("host device"), p, seed);
            Ok((Tensor::host_result(&dev, x.shape(), y), Tensor::host_result(&dev, x.shape(), m)))
        }
        Device::Gpu(ctx) => {
            let y = Tensor::gpu_uninit(&ctx, OP, x.shape())?;
            let mask = Tensor::gpu_uninit(&ctx, OP, x.shape())?;
            let (k0, k1) = reference::dropout_keys(seed);
            let pr = DropoutParams {
                n: u32_of(x.numel()),
                k0,
                k1,
                threshold: reference::dropout_threshold(p),
                keep: 1.0 / (1.0 - p),
            };
            ctx.dispatch(
                OP,
                &KernelKey::new("dropout", "dropout"),
                &pr,
                &[buf(x)],
                &[buf(&y), buf(&mask)],
                groups_1d(x.numel(), ELEMENT_WG),
            )?;
            Ok((y, mask))
        }
    }
}
