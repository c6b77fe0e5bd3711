//! Solvers for one path step, the trust-region subproblem
//!
//! ```text
//! min_θ  q(θ) = θᵀ G θ + β ⟨θ, g⟩   subject to  ‖θ‖ ≤ ε
//! ```
//!
//! (no ½ on the quadratic: the model's gradient is `2 G θ + β g`, and the unconstrained
//! minimiser solves `2 G θ = −β g`), with `G` given only through products `v ↦ G v`. The
//! multiplier `μ` of every report is the one of the KKT conditions
//! `2 (G + μ I) θ = −β g, μ ≥ 0, μ (‖θ‖ − ε) = 0`.
//!
//! Vector updates run on the device of `g` (axpy, axpby, scale). Where CG's scalars live is a
//! variant ([`CgScalars`]): on host devices and software GPUs, scalars (dots, norms) are read
//! back to the host, those needed at the same point in one wait ([`flat::dot_values`]): per CG
//! iteration two waits on a GPU (`pᵀAp`, then `‖x‖²` and `‖r‖²`; three while a ball bounds the
//! solve), per Steihaug–Toint iteration two. On hardware GPUs both solvers keep them on the
//! device (`device_cg.rs`): two waits per Steihaug–Toint solve, one per CG solve of the
//! multiplier form (whose search on `μ` reads each solve's `‖θ‖`).

use crate::autodiff::{backward_flat, record};
use crate::autodiff::{Dual, Model};
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::AdapterClass;
use crate::ops::{elementwise as ew, flat};
use crate::tensor::Tensor;

/// The outcome of one step solve.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step `θ` (flat, on the device of the gradient).
    pub theta: Tensor,
    /// `‖θ‖`.
    pub norm: f32,
    /// Whether the step lies on the trust-region boundary `‖θ‖ = ε` (always for the penalty step).
    pub boundary: bool,
    /// Metric products spent (CG iterations, summed over all solves; 1 for the penalty step).
    pub iterations: usize,
    /// The model value `q(θ) = θᵀ G θ + β ⟨θ, g⟩` (for the penalty step: `−η ‖d‖`, the
    /// first-order change of the penalised objective).
    pub model_value: f32,
    /// The multiplier `μ ≥ 0` of the KKT conditions (0 for interior steps; see each solver).
    pub multiplier: f32,
}

/// Where a CG solve keeps its scalars (chosen by [`CgScalars::select`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgScalars {
    /// Read back to the host where they are needed (two waits per iteration on a GPU).
    Host,
    /// On the device, each iteration a gated region (`device_cg.rs`): two waits per
    /// Steihaug–Toint solve, one per solve of the multiplier form.
    Device,
}

impl CgScalars {
    /// The variant for a solve on `device`: on the device for hardware GPUs, where a wait
    /// stalls the GPU; on the host elsewhere (host devices wait for nothing; a software GPU
    /// runs the gated regions' skipped dispatches no faster than the waits).
    pub fn select(device: &Device) -> CgScalars {
        match device {
            Device::Gpu(ctx) if ctx.class == AdapterClass::Hardware => CgScalars::Device,
            _ => CgScalars::Host,
        }
    }
}

/// Checks the radius and `β`.
fn check_args(op: &str, beta: f32, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::Invalid(format!("{op}: the trust radius must be finite and > 0, got {eps}")));
    }
    if !beta.is_finite() {
        return Err(Error::Invalid(format!("{op}: beta must be finite, got {beta}")));
    }
    Ok(())
}

/// Applies `G` and checks that the product has the shape of `v`.
pub(super) fn apply(apply_g: &dyn Fn(&Tensor) -> Result<Tensor>, v: &Tensor) -> Result<Tensor> {
    let gv = apply_g(v)?;
    if gv.shape() != v.shape() {
        return Err(shape_err("step solver", format!("G v has shape {:?}, v has {:?}", gv.shape(), v.shape())));
    }
    Ok(gv)
}

/// A zero step.
pub(super) fn zero_report(like: &Tensor, iterations: usize) -> Result<StepReport> {
    Ok(StepReport {
        theta: ew::fill(&like.device(), like.shape(), 0.0)?,
        norm: 0.0,
        boundary: false,
        iterations,
        model_value: 0.0,
        multiplier: 0.0,
    })
}

/// The `τ ≥ 0` with `‖z + τ d‖ = ε`, from `zz = ‖z‖²`, `zd = ⟨z, d⟩`, `dd = ‖d‖²`, `zz ≤ ε²`.
fn boundary_tau(zz: f64, zd: f64, dd: f64, eps: f64) -> f64 {
    let gap = (eps * eps - zz).max(0.0);
    let root = (zd * zd + dd * gap).sqrt();
    if zd > 0.0 {
        gap / (zd + root)
    } else {
        (root - zd) / dd
    }
}

/// Steihaug–Toint truncated CG on `q(θ) = θᵀ G θ + β⟨θ, g⟩` within the ball `‖θ‖ ≤ ε`,
/// started from `θ = 0`. It stops on the boundary when it meets a direction of non-positive
/// curvature (`dᵀ G d ≤ 0`) or when an iterate would leave the ball; otherwise after
/// `max_iter` iterations or once `‖2 G θ + β g‖ ≤ tol · ‖β g‖`.
///
/// The first iterate is the Cauchy point and `q` decreases monotonically, so `q(θ)` is never
/// worse than the Cauchy point's. `multiplier` is 0 inside the ball and, on the boundary, the
/// least-squares estimate `max(0, −⟨θ, r⟩ / (2‖θ‖²))` from the residual `r = 2Gθ + βg` (exact
/// only when `θ` is the exact solution). With `β g = 0` the step is zero, even for an
/// indefinite `G`. `model_value` comes from CG's recursive residual, not an extra product.
/// On hardware GPUs the scalars stay on the device ([`CgScalars`]).
pub fn steihaug_cg(
    apply_g: &dyn Fn(&Tensor) -> Result<Tensor>,
    grad: &Tensor,
    beta: f32,
    eps: f32,
    max_iter: usize,
    tol: f32,
) -> Result<StepReport> {
    check_args("steihaug_cg", beta, eps)?;
    // The model in standard form: ½ θᵀ B θ + cᵀ θ with B = 2G, c = β g; r = B θ + c.
    let c = ew::scale(beta, grad)?;
    let rr0 = flat::dot_value(&c, &c)? as f64;
    if rr0 == 0.0 || max_iter == 0 {
        return zero_report(grad, 0);
    }
    if !rr0.is_finite() {
        return Err(Error::Invalid("steihaug_cg: the gradient is not finite".into()));
    }
    if CgScalars::select(&grad.device()) == CgScalars::Device {
        return super::device_cg::steihaug_cg(apply_g, &c, rr0, eps, max_iter, tol);
    }
    let eps64 = eps as f64;
    let stop = (tol as f64).powi(2) * rr0;
    let mut z = ew::fill(&grad.device(), grad.shape(), 0.0)?;
    let mut r = c.clone();
    let mut d = ew::scale(-1.0, &c)?;
    let (mut rr, mut zz) = (rr0, 0.0f64);
    let mut boundary = false;
    let mut iterations = 0;
    for it in 0..max_iter {
        iterations += 1;
        let gd = apply(apply_g, &d)?;
        let mut pairs = vec![(&d, &gd), (&d, &d)];
        if it > 0 {
            pairs.push((&z, &d));
        }
        let v = flat::dot_values(&pairs)?;
        let (dbd, dd) = (2.0 * v[0] as f64, v[1] as f64);
        let zd = v.get(2).map_or(0.0, |&zd| zd as f64);
        let alpha = rr / dbd;
        if dbd <= 0.0 || dbd.is_nan() || zz + 2.0 * alpha * zd + alpha * alpha * dd >= eps64 * eps64 {
            let tau = boundary_tau(zz, zd, dd, eps64);
            z = flat::axpy(tau as f32, &d, &z)?;
            r = flat::axpy((2.0 * tau) as f32, &gd, &r)?;
            boundary = true;
            break;
        }
        z = flat::axpy(alpha as f32, &d, &z)?;
        r = flat::axpy((2.0 * alpha) as f32, &gd, &r)?;
        let v = flat::dot_values(&[(&z, &z), (&r, &r)])?;
        zz = v[0] as f64;
        let rr_new = v[1] as f64;
        if rr_new <= stop {
            break;
        }
        d = ew::axpby(-1.0, &r, (rr_new / rr) as f32, &d)?;
        rr = rr_new;
    }
    let v = flat::dot_values(&[(&z, &z), (&z, &r), (&c, &z)])?;
    Ok(steihaug_report(z, [v[0], v[1], v[2]], boundary, iterations))
}

/// The report of a Steihaug–Toint solve ending at `z` from `[‖z‖², ⟨z, r⟩, ⟨c, z⟩]`: the
/// model value from the recursive residual and, on the boundary, the least-squares multiplier.
pub(super) fn steihaug_report(z: Tensor, dots: [f32; 3], boundary: bool, iterations: usize) -> StepReport {
    let [zz, zr, cz] = dots.map(|v| v as f64);
    let multiplier = if boundary && zz > 0.0 { (-zr / (2.0 * zz)).max(0.0) } else { 0.0 };
    StepReport {
        theta: z,
        norm: zz.sqrt() as f32,
        boundary,
        iterations,
        model_value: (0.5 * (zr + cz)) as f32,
        multiplier: multiplier as f32,
    }
}

/// How a CG solve ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CgEnd {
    /// Relative residual reached the tolerance.
    Converged,
    /// Ran out of iterations.
    MaxIter,
    /// Met `pᵀ (G + μI) p ≤ 0`: `G + μI` is not positive definite (on the Krylov space).
    NegativeCurvature,
    /// An iterate's norm exceeded the given radius (norms grow monotonically in CG from 0).
    LeftBall,
}

/// One CG solve of `(G + μI) x = b` from `x = 0`.
pub(super) struct CgSolve {
    pub(super) x: Tensor,
    /// The recursive residual `b − (G + μI) x`.
    pub(super) r: Tensor,
    /// `‖x‖`.
    pub(super) norm: f64,
    pub(super) iterations: usize,
    pub(super) end: CgEnd,
}

/// CG on `(G + μI) x = b` from `x = 0`: at most `max_iter` iterations, until the relative
/// residual reaches `tol`, `pᵀ(G + μI)p ≤ 0`, or (with `radius`) an iterate leaves the ball.
/// Its scalars on the host or the device ([`CgScalars`]).
fn cg(
    apply_g: &dyn Fn(&Tensor) -> Result<Tensor>,
    b: &Tensor,
    mu: f32,
    max_iter: usize,
    tol: f32,
    radius: Option<f64>,
) -> Result<CgSolve> {
    match CgScalars::select(&b.device()) {
        CgScalars::Device => super::device_cg::cg(apply_g, b, mu, max_iter, tol, radius),
        CgScalars::Host => cg_host(apply_g, b, mu, max_iter, tol, radius),
    }
}

/// [`cg`] with its scalars on the host.
fn cg_host(
    apply_g: &dyn Fn(&Tensor) -> Result<Tensor>,
    b: &Tensor,
    mu: f32,
    max_iter: usize,
    tol: f32,
    radius: Option<f64>,
) -> Result<CgSolve> {
    let mut x = ew::fill(&b.device(), b.shape(), 0.0)?;
    let mut r = b.clone();
    let mut p = b.clone();
    let mut rr = flat::dot_value(b, b)? as f64;
    let stop = (tol as f64).powi(2) * rr;
    let mut xx = 0.0f64;
    let mut iterations = 0;
    let mut end = CgEnd::MaxIter;
    while iterations < max_iter {
        iterations += 1;
        let gp = apply(apply_g, &p)?;
        let ap = if mu != 0.0 { flat::axpy(mu, &p, &gp)? } else { gp };
        let pap = flat::dot_value(&p, &ap)? as f64;
        if pap <= 0.0 || pap.is_nan() {
            end = CgEnd::NegativeCurvature;
            break;
        }
        let alpha = rr / pap;
        x = flat::axpy(alpha as f32, &p, &x)?;
        r = flat::axpy(-alpha as f32, &ap, &r)?;
        let rr_new = if let Some(e) = radius {
            // ‖x‖ first: a solve that leaves the ball ends without ‖r‖.
            xx = flat::dot_value(&x, &x)? as f64;
            if xx > e * e {
                end = CgEnd::LeftBall;
                break;
            }
            flat::dot_value(&r, &r)? as f64
        } else {
            let v = flat::dot_values(&[(&x, &x), (&r, &r)])?;
            xx = v[0] as f64;
            v[1] as f64
        };
        if rr_new <= stop {
            end = CgEnd::Converged;
            break;
        }
        p = ew::axpby(1.0, &r, (rr_new / rr) as f32, &p)?;
        rr = rr_new;
    }
    Ok(CgSolve { x, r, norm: xx.sqrt(), iterations, end })
}

/// Builds the report of a solve of `(G + μI) x = −(β/2) g`, scaling `x` down onto the ball if
/// it lies (within the radius tolerance) just outside.
fn multiplier_report(s: CgSolve, grad: &Tensor, beta: f32, mu: f64, eps: f64, iterations: usize) -> Result<StepReport> {
    // θᵀGθ = ⟨θ, b⟩ − ⟨θ, r⟩ − μ‖θ‖² with b = −(β/2) g, r = b − (G + μI) θ.
    let v = flat::dot_values(&[(&s.x, grad), (&s.x, &s.r)])?;
    let (xg, xr) = (v[0] as f64, v[1] as f64);
    let xx = s.norm * s.norm;
    let xgx = -0.5 * beta as f64 * xg - xr - mu * xx;
    let (theta, k) = if s.norm > eps { (ew::scale((eps / s.norm) as f32, &s.x)?, eps / s.norm) } else { (s.x, 1.0) };
    Ok(StepReport {
        theta,
        norm: (s.norm * k) as f32,
        boundary: mu > 0.0,
        iterations,
        model_value: (k * k * xgx + k * beta as f64 * xg) as f32,
        multiplier: mu as f32,
    })
}

/// The trust-region step in multiplier form: CG on `(G + μI) θ = −(β/2) g` (at most `cg_iter`
/// iterations, relative residual `tol`), with a 1-D search on `μ ≥ 0` until `‖θ(μ)‖ = ε`
/// within relative tolerance `max(tol, 1e-6)`, or `μ = 0` when the unconstrained solution lies
/// inside the ball.
///
/// The search first tries `μ = 0` (stopping CG as soon as an iterate leaves the ball), then
/// brackets the root of the secular function `φ(μ) = 1/‖θ(μ)‖ − 1/ε` (nearly linear in `μ`)
/// between `μ = 0` and `μ = ‖β g‖ / (2ε)` (where `‖θ‖ ≤ ε` for a PSD `G`; the upper end is
/// quadrupled while that fails) and narrows it with Illinois-safeguarded secant steps, falling
/// back to bisection; `max_search` bounds the solves after the first. A solve that meets
/// non-positive curvature counts as `‖θ‖ = ∞` (μ too small), so an indefinite `G` outside the
/// "hard case" is handled too, but `G` is assumed PSD (logits, fisher). If the tolerance is not
/// reached, the evaluated step nearest the boundary is returned; a step a hair outside the ball
/// is scaled onto it. If CG at `μ = 0` runs out of iterations with its iterate still inside
/// the ball, that iterate is returned as the interior step. Each CG solve starts from zero (no
/// warm start); `model_value` uses CG's recursive residual, not an extra product.
pub fn trust_region_multiplier(
    apply_g: &dyn Fn(&Tensor) -> Result<Tensor>,
    grad: &Tensor,
    beta: f32,
    eps: f32,
    cg_iter: usize,
    tol: f32,
    max_search: usize,
) -> Result<StepReport> {
    check_args("trust_region_multiplier", beta, eps)?;
    if cg_iter == 0 {
        return Err(Error::Invalid("trust_region_multiplier: cg_iter must be > 0".into()));
    }
    let b = ew::scale(-0.5 * beta, grad)?;
    let bnorm = flat::norm(&b)? as f64;
    if bnorm == 0.0 {
        return zero_report(grad, 0);
    }
    if !bnorm.is_finite() {
        return Err(Error::Invalid("trust_region_multiplier: the gradient is not finite".into()));
    }
    let eps64 = eps as f64;
    let rtol = (tol as f64).max(1e-6);
    let mut iterations = 0;

    // μ = 0: the interior solution, if it exists.
    let s0 = cg(apply_g, &b, 0.0, cg_iter, tol, Some(eps64))?;
    iterations += s0.iterations;
    if matches!(s0.end, CgEnd::Converged | CgEnd::MaxIter) && s0.norm <= eps64 {
        return multiplier_report(s0, grad, beta, 0.0, eps64, iterations);
    }

    let phi = |s: &CgSolve| -> f64 {
        if s.end == CgEnd::NegativeCurvature || s.norm == 0.0 {
            -1.0 / eps64
        } else {
            1.0 / s.norm - 1.0 / eps64
        }
    };
    let (mut lo, mut phi_lo) = (0.0f64, -1.0 / eps64);
    let mut hi = bnorm / eps64;
    let mut searches = 0;
    // Upper end: a μ with ‖θ(μ)‖ ≤ ε.
    let (mut phi_hi, mut best) = loop {
        let s = cg(apply_g, &b, hi as f32, cg_iter, tol, None)?;
        iterations += s.iterations;
        searches += 1;
        let f = phi(&s);
        if s.end != CgEnd::NegativeCurvature && (s.norm - eps64).abs() <= rtol * eps64 {
            return multiplier_report(s, grad, beta, hi, eps64, iterations);
        }
        if f >= 0.0 {
            break (f, (hi, s));
        }
        if searches > max_search {
            return Err(Error::Invalid(format!(
                "trust_region_multiplier: no multiplier up to {hi} puts the step inside the ball (is G PSD?)"
            )));
        }
        lo = hi;
        phi_lo = f;
        hi *= 4.0;
    };
    // Which end moved last: -1 low, +1 high (for the Illinois modification).
    let mut last = 0i32;
    while searches <= max_search && hi - lo > 1e-7 * hi {
        let secant = hi - phi_hi * (hi - lo) / (phi_hi - phi_lo);
        let mu = if secant > lo && secant < hi && secant.is_finite() { secant } else { 0.5 * (lo + hi) };
        let s = cg(apply_g, &b, mu as f32, cg_iter, tol, None)?;
        iterations += s.iterations;
        searches += 1;
        let f = phi(&s);
        if s.end != CgEnd::NegativeCurvature && (s.norm - eps64).abs() <= rtol * eps64 {
            return multiplier_report(s, grad, beta, mu, eps64, iterations);
        }
        if f < 0.0 {
            lo = mu;
            phi_lo = f;
            if last == -1 {
                phi_hi *= 0.5;
            }
            last = -1;
        } else {
            if last == 1 {
                phi_lo *= 0.5;
            }
            last = 1;
            hi = mu;
            phi_hi = f;
            best = (mu, s);
        }
    }
    // Tolerance not reached: the feasible step nearest the boundary (the high end).
    let (mu, s) = best;
    multiplier_report(s, grad, beta, mu, eps64, iterations)
}

/// Stable `(log_softmax, softmax)` of one row, in f64.
fn log_softmax_row(z: impl Iterator<Item = f64> + Clone) -> (Vec<f64>, Vec<f64>) {
    let m = z.clone().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.clone().map(|v| (v - m).exp()).sum::<f64>().ln();
    let lp: Vec<f64> = z.map(|v| v - lse).collect();
    let p = lp.iter().map(|v| v.exp()).collect();
    (lp, p)
}

/// The summed Bhattacharyya distance `Σ_rows BD(softmax z, softmax z0)`,
/// `BD(p, q) = −ln Σ_k sqrt(p_k q_k)`, of logits `z` and `z0` (`[B, k]`), computed on the host
/// in f64, and its gradient with respect to `z`, `½ (p − r)` row by row with
/// `r = softmax(½ (log p + log q))`, as a tensor on the device of `z`. The gradient is exactly
/// zero where `z = z0`.
pub fn bhattacharyya(z: &Tensor, z0: &Tensor) -> Result<(f64, Tensor)> {
    let (rows, cols) = match *z.shape() {
        [r, c] => (r, c),
        ref s => return Err(shape_err("bhattacharyya", format!("logits must be 2-D [rows, cols], got {s:?}"))),
    };
    if z0.shape() != z.shape() {
        return Err(shape_err("bhattacharyya", format!("logits {:?} vs reference logits {:?}", z.shape(), z0.shape())));
    }
    let (zh, z0h) = (z.to_vec()?, z0.to_vec()?);
    let mut total = 0.0f64;
    let mut grad = Vec::with_capacity(rows * cols);
    for row in 0..rows {
        let span = row * cols..(row + 1) * cols;
        let (lp, _) = log_softmax_row(zh[span.clone()].iter().map(|&v| v as f64));
        let (lq, _) = log_softmax_row(z0h[span].iter().map(|&v| v as f64));
        // p as softmax(log p), so that r == p to the last bit when log p == log q.
        let (_, p) = log_softmax_row(lp.iter().copied());
        let mid: Vec<f64> = lp.iter().zip(&lq).map(|(a, b)| 0.5 * (a + b)).collect();
        let m = mid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        total -= m + mid.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let (_, r) = log_softmax_row(mid.iter().copied());
        grad.extend(p.iter().zip(&r).map(|(p, r)| (0.5 * (p - r)) as f32));
    }
    if !total.is_finite() {
        return Err(Error::Invalid("bhattacharyya: the distance is not finite".into()));
    }
    Ok((total, Tensor::from_vec(&z.device(), z.shape(), grad)?))
}

/// The authors' penalty step: `d = ∇_w Σ_x BD(softmax f(x; w), softmax f(x; w₀)) + λ ∇L`
/// (summed over the batch, see [`bhattacharyya`]), returning `θ = −η d / ‖d‖`.
/// `params0_logits` are the reference logits `f(x; w₀)` (`[B, k]`), `grad_l` is `∇L` (flat).
/// The BD gradient is formed on the host from the logits of one forward pass and pulled back
/// with a VJP on the same tape. When `d = 0` (e.g. `λ = 0` at `w = w₀`) the step is zero
/// (with `boundary = false`). Otherwise the report has `norm = ‖θ‖` (`η`), `boundary = true`, `iterations = 1`,
/// `model_value = −η ‖d‖` and `multiplier = 0`.
pub fn penalty_step<M: Model + ?Sized>(
    model: &M,
    params: &Tensor,
    params0_logits: &Tensor,
    x: &Tensor,
    grad_l: &Tensor,
    lambda: f32,
    eta: f32,
) -> Result<StepReport> {
    if !(eta.is_finite() && eta > 0.0) {
        return Err(Error::Invalid(format!("penalty_step: the step length must be finite and > 0, got {eta}")));
    }
    if !lambda.is_finite() {
        return Err(Error::Invalid(format!("penalty_step: lambda must be finite, got {lambda}")));
    }
    if grad_l.shape() != params.shape() {
        return Err(shape_err(
            "penalty_step",
            format!("gradient {:?} vs parameters {:?}", grad_l.shape(), params.shape()),
        ));
    }
    let (mut tape, vars, xv) = record(model, params, None, x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    let (_, gz) = bhattacharyya(&tape.value(z).primal, params0_logits)?;
    let bd_grad = backward_flat(model, &tape, &vars, z, Some(Dual::constant(gz)))?;
    let d = if lambda != 0.0 { flat::axpy(lambda, grad_l, &bd_grad)? } else { bd_grad };
    let dn = flat::norm(&d)?;
    if !dn.is_finite() {
        return Err(Error::Invalid("penalty_step: the direction is not finite".into()));
    }
    if dn == 0.0 {
        return zero_report(params, 1);
    }
    let theta = ew::scale(-eta / dn, &d)?;
    Ok(StepReport { theta, norm: eta, boundary: true, iterations: 1, model_value: -eta * dn, multiplier: 0.0 })
}
