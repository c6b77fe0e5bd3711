//! The scalar updates and state-scaled vector updates of the device-resident conjugate
//! gradients, Steihaug–Toint and CG on `(G + μI) x = b` (`kernels/cg.wgsl`; the solvers are in
//! `geodesic/device_cg.rs`), and the gated regions their iterations run in. GPU only:
//! host devices keep CG's scalars on the host. The state is a `[CG_STATE_LEN]` tensor
//! (indices `CG_*` of [`crate::kernels`]); every op here updates its first argument in place,
//! so that the iterations of a gated region that did not run leave the solve as it was.

use super::buf;
use crate::cost;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{GpuContext, KernelKey};
use crate::kernels::{u32_of, CgParams, CG_ACTIVE, CG_STATE_LEN, ELEMENT_WG};
use crate::tensor::Tensor;
use std::sync::Arc;

/// The GPU context of `t`, or a shape error when `t` is not a `[len]` GPU tensor.
fn gpu_of(op: &'static str, t: &Tensor, len: usize) -> Result<Arc<GpuContext>> {
    if t.shape() != [len] {
        return Err(shape_err(op, format!("expected [{len}], got {:?}", t.shape())));
    }
    t.device().gpu().cloned().ok_or_else(|| Error::Invalid(format!("{op}: the device-resident CG runs on a GPU only")))
}

/// Records what `region` dispatches as a gated region of `state`'s device
/// (`GpuContext::gated`): it runs only if the solve is still active (`state[CG_ACTIVE] ≠ 0`)
/// when the region starts on the GPU.
pub fn while_active<R>(state: &Tensor, region: impl FnOnce() -> Result<R>) -> Result<R> {
    let ctx = gpu_of("while_active", state, CG_STATE_LEN as usize)?;
    let (view, _) = state.buffer().expect("a GPU tensor");
    ctx.gated(view, CG_ACTIVE, region)
}

/// Records scalar entry `entry` reading `dots` (each `[1]`) into `state`. Not counted: a few
/// scalar operations, as the host solver's scalar arithmetic is not.
fn scalar_update(op: &'static str, entry: &'static str, state: &Tensor, dots: &[&Tensor], scale: f32) -> Result<()> {
    let ctx = gpu_of(op, state, CG_STATE_LEN as usize)?;
    for d in dots {
        gpu_of(op, d, 1)?;
    }
    let inputs: Vec<_> = dots.iter().map(|t| buf(t)).collect();
    let p = CgParams { scale, ..Default::default() };
    ctx.dispatch(op, &KernelKey::new("cg", entry), &p, &inputs, &[buf(state)], [1, 1, 1])
}

/// A CG solve on `(G + μI) x = b` starts: `‖r‖² = bb` and the residual target `tol² bb`.
pub fn cg_init(state: &Tensor, bb: &Tensor, tol: f32) -> Result<()> {
    scalar_update("cg_init", "cg_init", state, &[bb], tol * tol)
}

/// CG's step from `pᵀ(G + μI)p`, or its end on non-positive curvature (`cg_alpha`); counts
/// the iteration.
pub fn cg_alpha(state: &Tensor, pap: &Tensor) -> Result<()> {
    scalar_update("cg_alpha", "cg_alpha", state, &[pap], 0.0)
}

/// CG's end tests (left the ball, converged) and `β` from `‖x‖²`, `‖r‖²` (`cg_beta`).
pub fn cg_beta(state: &Tensor, xx: &Tensor, rr: &Tensor) -> Result<()> {
    scalar_update("cg_beta", "cg_beta", state, &[xx, rr], 0.0)
}

/// Steihaug–Toint's step along `d` into the state from `dᵀGd`, `dᵀd`, `zᵀd` (see
/// `kernels/cg.wgsl`, `steihaug_alpha`); counts the iteration.
pub fn steihaug_alpha(state: &Tensor, dgd: &Tensor, dd: &Tensor, zd: &Tensor) -> Result<()> {
    scalar_update("steihaug_alpha", "steihaug_alpha", state, &[dgd, dd, zd], 0.0)
}

/// Steihaug–Toint's convergence test and `β` from `‖z‖²`, `‖r‖²` (`steihaug_beta`).
pub fn steihaug_beta(state: &Tensor, zz: &Tensor, rr: &Tensor) -> Result<()> {
    scalar_update("steihaug_beta", "steihaug_beta", state, &[zz, rr], 0.0)
}

/// Records vector entry `entry` updating `y` in place from `x` and `state[slot]`.
fn vector_update(
    op: &'static str,
    entry: &'static str,
    y: &Tensor,
    x: &Tensor,
    state: &Tensor,
    slot: u32,
    scale: f32,
) -> Result<()> {
    let n = y.numel();
    let ctx = gpu_of(op, y, n)?;
    gpu_of(op, x, n)?;
    gpu_of(op, state, CG_STATE_LEN as usize)?;
    let p = CgParams { n: u32_of(n), slot, scale };
    let key = KernelKey::new("cg", entry);
    ctx.dispatch(op, &key, &p, &[buf(x), buf(state)], &[buf(y)], super::groups_1d(n, ELEMENT_WG))
}

/// `y += scale · state[slot] · x` in place (flat `[n]` tensors); counted as an axpy.
pub fn axpy_state(y: &Tensor, scale: f32, state: &Tensor, slot: u32, x: &Tensor) -> Result<()> {
    cost::per_element(y.numel(), 2);
    vector_update("axpy_state", "axpy_state", y, x, state, slot, scale)
}

/// `y = scale · x + state[slot] · y` in place (flat `[n]` tensors); counted as an axpby.
pub fn xpby_state(y: &Tensor, scale: f32, x: &Tensor, state: &Tensor, slot: u32) -> Result<()> {
    cost::per_element(y.numel(), 3);
    vector_update("xpby_state", "xpby_state", y, x, state, slot, scale)
}
