//! Optimiser update kernels over a parameter tensor (`kernels/optim.wgsl`): one dispatch per
//! step reads the parameters, the gradient and the state, and writes new parameters and new
//! state (tensors are immutable). The hyperparameter structs are those of the CPU reference,
//! [`crate::reference::optim`]; the optimiser objects and schedules are in [`crate::optim`].
//!
//! NaN or infinity in the gradient is not filtered: it propagates into the new parameters and
//! state, and it is the caller's job to check (e.g. the loss) before stepping.

use super::{buf, common_device, groups_1d};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::gpu::KernelKey;
use crate::kernels::{u32_of, OptimParams, ELEMENT_WG, FLAG_DECOUPLED, FLAG_HAS_STATE, FLAG_NESTEROV};
use crate::reference::optim as reference;
pub use crate::reference::optim::{AdamStep, SgdStep};
use crate::tensor::Tensor;

fn check_shapes(op: &'static str, w: &Tensor, others: &[(&str, Option<&Tensor>)]) -> Result<()> {
    for (name, t) in others {
        if let Some(t) = t {
            if t.shape() != w.shape() {
                return Err(shape_err(op, format!("parameters {:?} vs {name} {:?}", w.shape(), t.shape())));
            }
        }
    }
    Ok(())
}

/// Records `entry` of `optim.wgsl` with `ins` bound in order and `n_out` fresh outputs of the
/// shape of `w` (one invocation per 4 elements).
fn launch(
    op: &'static str,
    entry: &'static str,
    params: OptimParams,
    w: &Tensor,
    ins: &[&Tensor],
    n_out: usize,
) -> Result<Vec<Tensor>> {
    let Device::Gpu(ctx) = w.device() else { unreachable!("launch on GPU only") };
    let outs: Vec<Tensor> = (0..n_out).map(|_| Tensor::gpu_uninit(&ctx, op, w.shape())).collect::<Result<_>>()?;
    let in_bufs: Vec<_> = ins.iter().map(|t| buf(t)).collect();
    let out_bufs: Vec<_> = outs.iter().map(buf).collect();
    ctx.dispatch(
        op,
        &KernelKey::new("optim", entry),
        &params,
        &in_bufs,
        &out_bufs,
        groups_1d(w.numel().div_ceil(4), ELEMENT_WG),
    )?;
    Ok(outs)
}

/// One SGD step (PyTorch semantics, dampening 0): `g' = g + λ w`; with momentum μ,
/// `b = μ b + g'` (`b = g'` when `buf` is `None`, the first step) and `d = g' + μ b`
/// (Nesterov) or `d = b`; without momentum `d = g'`. Returns `(w - lr d, new b)`; the buffer is
/// `None` exactly when `h.momentum == 0` (then `buf` is ignored).
pub fn sgd(w: &Tensor, g: &Tensor, buf_in: Option<&Tensor>, h: &SgdStep) -> Result<(Tensor, Option<Tensor>)> {
    let momentum = h.momentum != 0.0;
    let state = if momentum { buf_in } else { None };
    check_shapes("sgd", w, &[("gradient", Some(g)), ("momentum buffer", state)])?;
    let mut all = vec![w, g];
    all.extend(state);
    let dev = common_device("sgd", &all)?;
    cost::per_element(w.numel(), 5);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (nw, nb) = reference::sgd(w.host().unwrap(), g.host().unwrap(), state.map(|b| b.host().unwrap()), h);
            Ok((Tensor::host_result(&dev, w.shape(), nw), nb.map(|b| Tensor::host_result(&dev, w.shape(), b))))
        }
        Device::Gpu(_) => {
            let flags = if state.is_some() { FLAG_HAS_STATE } else { 0 } | if h.nesterov { FLAG_NESTEROV } else { 0 };
            let p = OptimParams {
                n: u32_of(w.numel()),
                flags,
                lr: h.lr,
                beta1: h.momentum,
                wd: h.weight_decay,
                ..Default::default()
            };
            if momentum {
                let mut v = launch("sgd", "sgd_momentum", p, w, &all, 2)?;
                let b = v.pop().unwrap();
                Ok((v.pop().unwrap(), Some(b)))
            } else {
                let mut v = launch("sgd", "sgd", p, w, &[w, g], 1)?;
                Ok((v.pop().unwrap(), None))
            }
        }
    }
}

/// One Adam (or, with `h.decoupled`, AdamW) step with bias correction for step `h.t`
/// (counting from 1). `state` is the previous `(m, v)`, `None` on the first step (zeros).
/// Returns `(new w, new m, new v)`.
pub fn adam(
    w: &Tensor,
    g: &Tensor,
    state: Option<(&Tensor, &Tensor)>,
    h: &AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    check_shapes(
        "adam",
        w,
        &[("gradient", Some(g)), ("first moment", state.map(|s| s.0)), ("second moment", state.map(|s| s.1))],
    )?;
    let mut all = vec![w, g];
    if let Some((m, v)) = state {
        all.extend([m, v]);
    }
    let dev = common_device("adam", &all)?;
    cost::per_element(w.numel(), 12);
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (nw, m, v) = reference::adam(
                w.host().unwrap(),
                g.host().unwrap(),
                state.map(|(m, v)| (m.host().unwrap(), v.host().unwrap())),
                h,
            );
            Ok((
                Tensor::host_result(&dev, w.shape(), nw),
                Tensor::host_result(&dev, w.shape(), m),
                Tensor::host_result(&dev, w.shape(), v),
            ))
        }
        Device::Gpu(_) => {
            let (step, bc2_sqrt, decay) = h.scalars();
            let flags = if state.is_some() { FLAG_HAS_STATE } else { 0 } | if h.decoupled { FLAG_DECOUPLED } else { 0 };
            let p = OptimParams {
                n: u32_of(w.numel()),
                flags,
                lr: step,
                beta1: h.beta1,
                beta2: h.beta2,
                eps: h.eps,
                wd: h.weight_decay,
                decay,
                bc2_sqrt,
            };
            let mut v = launch("adam", "adam", p, w, &all, 3)?;
            let nv = v.pop().unwrap();
            let nm = v.pop().unwrap();
            Ok((v.pop().unwrap(), nm, nv))
        }
    }
}
