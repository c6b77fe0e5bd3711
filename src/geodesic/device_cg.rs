//! Steihaug–Toint CG with its scalars on the device, for hardware GPUs: no readback inside
//! the CG loop. Each iteration is a gated region (`GpuContext::gated`) that runs while the
//! state's `CG_ACTIVE` is set: the metric product, the dots, the step and `β` computed by one
//! invocation each (`ops::cg`, `kernels/cg.wgsl`) and the vector updates scaled by them, in
//! place. All `max_iter` iterations are recorded; those after the solve ended run no
//! workgroup, and the work counted for them is taken back once the state is read, at the end,
//! with the final dots in the same wait. So a solve waits twice (`‖β g‖²` before the loop and
//! the state after it) instead of twice per iteration, and does, and counts, the iterations
//! [`super::solver::steihaug_cg`] does on the host; its scalars are f32 instead of f64.

use super::solver::{apply, StepReport};
use crate::cost;
use crate::error::{Error, Result};
use crate::kernels::{CG_ACTIVE, CG_BETA, CG_BOUNDARY, CG_ITERATIONS, CG_STATE_LEN, CG_STEP};
use crate::ops::{cg, elementwise as ew, reduce};
use crate::tensor::Tensor;

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
    let dev = c.device();
    let stop = (tol as f64).powi(2) * rr0;
    let mut init = vec![0.0f32; CG_STATE_LEN as usize];
    init[CG_ACTIVE as usize] = 1.0;
    init[crate::kernels::CG_RR as usize] = rr0 as f32;
    init[crate::kernels::CG_EPS2 as usize] = eps * eps;
    init[crate::kernels::CG_STOP as usize] = stop as f32;
    let state = Tensor::from_vec(&dev, &[CG_STATE_LEN as usize], init)?;
    // z, r, d: private tensors, updated in place (r starts as a copy of c: moving data, 0 FLOPs).
    let z = ew::fill(&dev, c.shape(), 0.0)?;
    let r = cost::uncounted(|| ew::scale(1.0, c))?;
    let d = ew::scale(-1.0, c)?;
    let mut counted = Vec::with_capacity(max_iter);
    for _ in 0..max_iter {
        let before = cost::counted();
        cg::while_active(&state, || {
            let gd = apply(apply_g, &d)?;
            let (dgd, dd, zd) = (reduce::dot(&d, &gd)?, reduce::dot(&d, &d)?, reduce::dot(&z, &d)?);
            cg::steihaug_alpha(&state, &dgd, &dd, &zd)?;
            cg::axpy_state(&z, 1.0, &state, CG_STEP, &d)?;
            cg::axpy_state(&r, 2.0, &state, CG_STEP, &gd)?;
            let (zz, rr) = (reduce::dot(&z, &z)?, reduce::dot(&r, &r)?);
            cg::steihaug_beta(&state, &zz, &rr)?;
            cg::xpby_state(&d, -1.0, &r, &state, CG_BETA)
        })?;
        let after = cost::counted();
        counted.push([after[0] - before[0], after[1] - before[1]]);
    }
    let (zz, zr, cz) = (reduce::dot(&z, &z)?, reduce::dot(&z, &r)?, reduce::dot(c, &z)?);
    let v = ew::concat(&[&state, &zz, &zr, &cz])?.to_vec()?;
    let iterations = v[CG_ITERATIONS as usize] as usize;
    if iterations == 0 || iterations > max_iter {
        return Err(Error::Device {
            op: "steihaug_cg".into(),
            message: format!("the device state reports {iterations} iterations of {max_iter}"),
        });
    }
    for skipped in &counted[iterations..] {
        cost::retract(*skipped);
    }
    let boundary = v[CG_BOUNDARY as usize] != 0.0;
    let tail = &v[CG_STATE_LEN as usize..];
    let (zz, zr, cz) = (tail[0] as f64, tail[1] as f64, tail[2] as f64);
    let multiplier = if boundary && zz > 0.0 { (-zr / (2.0 * zz)).max(0.0) } else { 0.0 };
    Ok(StepReport {
        theta: z,
        norm: zz.sqrt() as f32,
        boundary,
        iterations,
        model_value: (0.5 * (zr + cz)) as f32,
        multiplier: multiplier as f32,
    })
}
