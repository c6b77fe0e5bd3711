//! The conjugate gradients with their scalars on the device, for hardware GPUs: no readback
//! inside the CG loop. Each iteration is a gated region (`ops::cg::while_active`) that runs
//! while the state's `CG_ACTIVE` is set: the metric product, the dots, the scalars computed by
//! one invocation each (`ops::cg`, `kernels/cg.wgsl`) and the vector updates scaled by them, in
//! place. All `max_iter` iterations are recorded; those after the solve ended run no workgroup,
//! and the work counted for them is taken back once the state is read, at the end, with the
//! final values in the same wait. So a Steihaug–Toint solve waits twice (`‖β g‖²` before the
//! loop, the state after it) and a solve on `(G + μI) x = b` once, instead of two or three
//! times per iteration; both run the iterations the host solvers run (`solver.rs`), with f32
//! scalars instead of f64, and count them with a few vector ops more (the first Steihaug
//! iteration's `zᵀd`; in the last iteration, the dots and updates after its end test). The
//! metric product must leave no host state behind (it does not in eval mode): an iteration
//! that does not run leaves what its ops recorded on the host uncomputed.

use super::solver::{apply, steihaug_report, CgEnd, CgSolve, StepReport};
use crate::cost;
use crate::error::{Error, Result};
use crate::kernels::{
    CG_ACTIVE, CG_BETA, CG_BOUNDARY, CG_END, CG_END_CONVERGED, CG_END_LEFT_BALL, CG_END_NEGATIVE_CURVATURE, CG_EPS2,
    CG_ITERATIONS, CG_RR, CG_STATE_LEN, CG_STEP, CG_STOP, CG_ZZ,
};
use crate::ops::{cg, elementwise as ew, flat, reduce};
use crate::tensor::Tensor;

/// A fresh state on the device of `like`: active, with the given `(slot, value)` pairs.
fn new_state(like: &Tensor, values: &[(u32, f32)]) -> Result<Tensor> {
    let mut init = vec![0.0f32; CG_STATE_LEN as usize];
    init[CG_ACTIVE as usize] = 1.0;
    for &(slot, v) in values {
        init[slot as usize] = v;
    }
    Tensor::from_vec(&like.device(), &[CG_STATE_LEN as usize], init)
}

/// Records `max_iter` gated iterations of `iteration` on `state`; returns the work counted for
/// each, for [`read_state`].
fn gated_iterations(state: &Tensor, max_iter: usize, iteration: impl Fn() -> Result<()>) -> Result<Vec<[u64; 2]>> {
    let mut counted = Vec::with_capacity(max_iter);
    for _ in 0..max_iter {
        let before = cost::counted();
        cg::while_active(state, &iteration)?;
        let after = cost::counted();
        counted.push([after[0] - before[0], after[1] - before[1]]);
    }
    Ok(counted)
}

/// Reads the state and `extra` (`[1]` tensors) back in one wait; takes back the work counted
/// for the iterations that did not run. Returns the state, then the extra values.
fn read_state(state: &Tensor, extra: &[&Tensor], counted: &[[u64; 2]]) -> Result<(Vec<f32>, usize)> {
    let mut parts = vec![state];
    parts.extend_from_slice(extra);
    let v = ew::concat(&parts)?.to_vec()?;
    let iterations = v[CG_ITERATIONS as usize] as usize;
    if iterations == 0 || iterations > counted.len() {
        return Err(Error::Device {
            op: "cg".into(),
            message: format!("the device state reports {iterations} iterations of {}", counted.len()),
        });
    }
    for skipped in &counted[iterations..] {
        cost::retract(*skipped);
    }
    Ok((v, iterations))
}

/// [`super::solver::steihaug_cg`] with its scalars on the device of `c` (a GPU); arguments
/// checked by the caller, `c = β g` with `rr0 = ‖c‖² > 0` finite.
pub(super) fn steihaug_cg(
    apply_g: &dyn Fn(&Tensor) -> Result<Tensor>,
    c: &Tensor,
    rr0: f64,
    eps: f32,
    max_iter: usize,
    tol: f32,
) -> Result<StepReport> {
    let stop = (tol as f64).powi(2) * rr0;
    let state = new_state(c, &[(CG_RR, rr0 as f32), (CG_EPS2, eps * eps), (CG_STOP, stop as f32)])?;
    // z, r, d: private tensors, updated in place (r starts as a copy of c: moving data, 0 FLOPs).
    let z = ew::fill(&c.device(), c.shape(), 0.0)?;
    let r = cost::uncounted(|| ew::scale(1.0, c))?;
    let d = ew::scale(-1.0, c)?;
    let counted = gated_iterations(&state, max_iter, || {
        let gd = apply(apply_g, &d)?;
        let (dgd, dd, zd) = (reduce::dot(&d, &gd)?, reduce::dot(&d, &d)?, reduce::dot(&z, &d)?);
        cg::steihaug_alpha(&state, &dgd, &dd, &zd)?;
        cg::axpy_state(&z, 1.0, &state, CG_STEP, &d)?;
        cg::axpy_state(&r, 2.0, &state, CG_STEP, &gd)?;
        let (zz, rr) = (reduce::dot(&z, &z)?, reduce::dot(&r, &r)?);
        cg::steihaug_beta(&state, &zz, &rr)?;
        cg::xpby_state(&d, -1.0, &r, &state, CG_BETA)
    })?;
    let (zz, zr, cz) = (reduce::dot(&z, &z)?, reduce::dot(&z, &r)?, reduce::dot(c, &z)?);
    let (v, iterations) = read_state(&state, &[&zz, &zr, &cz], &counted)?;
    let boundary = v[CG_BOUNDARY as usize] != 0.0;
    let tail = &v[CG_STATE_LEN as usize..];
    Ok(steihaug_report(z, [tail[0], tail[1], tail[2]], boundary, iterations))
}

/// The CG solve of `(G + μI) x = b` from `x = 0` (`solver::cg`) with its scalars on the device
/// of `b` (a GPU): one wait.
pub(super) fn cg(
    apply_g: &dyn Fn(&Tensor) -> Result<Tensor>,
    b: &Tensor,
    mu: f32,
    max_iter: usize,
    tol: f32,
    radius: Option<f64>,
) -> Result<CgSolve> {
    let eps2 = radius.map_or(-1.0, |e| (e * e) as f32);
    let state = new_state(b, &[(CG_EPS2, eps2)])?;
    cg::cg_init(&state, &reduce::dot(b, b)?, tol)?;
    let x = ew::fill(&b.device(), b.shape(), 0.0)?;
    let r = cost::uncounted(|| ew::scale(1.0, b))?;
    let p = cost::uncounted(|| ew::scale(1.0, b))?;
    let counted = gated_iterations(&state, max_iter, || {
        let gp = apply(apply_g, &p)?;
        let ap = if mu != 0.0 { flat::axpy(mu, &p, &gp)? } else { gp };
        cg::cg_alpha(&state, &reduce::dot(&p, &ap)?)?;
        cg::axpy_state(&x, 1.0, &state, CG_STEP, &p)?;
        cg::axpy_state(&r, -1.0, &state, CG_STEP, &ap)?;
        let (xx, rr) = (reduce::dot(&x, &x)?, reduce::dot(&r, &r)?);
        cg::cg_beta(&state, &xx, &rr)?;
        cg::xpby_state(&p, 1.0, &r, &state, CG_BETA)
    })?;
    let (v, iterations) = read_state(&state, &[], &counted)?;
    let end = match v[CG_END as usize] as u32 {
        CG_END_CONVERGED => CgEnd::Converged,
        CG_END_NEGATIVE_CURVATURE => CgEnd::NegativeCurvature,
        CG_END_LEFT_BALL => CgEnd::LeftBall,
        _ => CgEnd::MaxIter,
    };
    Ok(CgSolve { x, r, norm: (v[CG_ZZ as usize] as f64).sqrt(), iterations, end })
}
