//! Automatic differentiation over the flat parameter vector of a [`Model`]: forward mode
//! ([`jvp`]), reverse mode ([`vjp`], [`loss_grad`]), forward-over-reverse Hessian-vector
//! products ([`loss_hvp`]) and Gauss–Newton products ([`gauss_newton`]).

pub mod dual;
mod flat;
pub mod tape;

pub(crate) use flat::backward_flat;

pub use dual::Dual;
pub use tape::{Tape, Var};

use crate::error::{shape_err, Result};
use crate::ops::elementwise as ew;
use crate::tensor::Tensor;

/// A network whose parameters form one flat vector, split into tensors of `param_shapes`.
pub trait Model {
    /// Shapes of the parameter tensors, in their order in the flat vector.
    fn param_shapes(&self) -> Vec<Vec<usize>>;

    /// Records the forward pass of input `x` on `tape`, returning the logits.
    fn forward(&self, tape: &mut Tape, params: &[Var], x: Var) -> Result<Var>;

    /// Length of the flat parameter vector.
    fn num_params(&self) -> usize {
        self.param_shapes().iter().map(|s| s.iter().product::<usize>()).sum()
    }
}

/// Records parameters (with tangent `v` if given) and input on a fresh tape.
pub(crate) fn record<M: Model + ?Sized>(
    model: &M,
    params: &Tensor,
    v: Option<&Tensor>,
    x: &Tensor,
) -> Result<(Tape, Vec<Var>, Var)> {
    let n = model.num_params();
    if params.shape() != [n] {
        return Err(shape_err(
            "model parameters",
            format!("model needs a flat vector [{n}], got {:?}", params.shape()),
        ));
    }
    if let Some(v) = v {
        if v.shape() != [n] {
            return Err(shape_err("tangent", format!("tangent {:?} vs parameters [{n}]", v.shape())));
        }
    }
    let shapes = model.param_shapes();
    let pieces = ew::split(params, &shapes)?;
    let tangents = v.map(|v| ew::split(v, &shapes)).transpose()?;
    let mut tape = Tape::new();
    let vars = pieces
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let t = tangents.as_ref().map(|t| t[i].clone());
            tape.leaf(Dual { primal: p, tangent: t }, true)
        })
        .collect();
    let xv = tape.leaf(Dual::constant(x.clone()), false);
    Ok((tape, vars, xv))
}

/// Concatenates per-parameter cotangents (primal, or tangent with `tangent`) into one flat vector.
pub(crate) fn flatten_grads<M: Model + ?Sized>(
    model: &M,
    tape: &Tape,
    grads: &tape::Cotangents,
    params: &[Var],
    tangent: bool,
) -> Result<Tensor> {
    let shapes = model.param_shapes();
    let device = tape.value(params[0]).primal.device();
    let mut parts = Vec::with_capacity(params.len());
    for (v, s) in params.iter().zip(&shapes) {
        let g = grads.get(*v);
        let t = match g {
            Some(d) if !tangent => d.primal.clone(),
            Some(d) => d.tangent_or_zeros()?,
            None => ew::fill(&device, s, 0.0)?,
        };
        parts.push(t);
    }
    ew::concat(&parts.iter().collect::<Vec<_>>())
}

/// The logits `f(x; w)`.
pub fn forward<M: Model + ?Sized>(model: &M, params: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (mut tape, vars, xv) = record(model, params, None, x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    Ok(tape.value(z).primal.clone())
}

/// Forward mode: the logits and `J v`, their derivative along parameter direction `v`.
pub fn jvp<M: Model + ?Sized>(model: &M, params: &Tensor, v: &Tensor, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (mut tape, vars, xv) = record(model, params, Some(v), x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    let d = tape.value(z);
    Ok((d.primal.clone(), d.tangent_or_zeros()?))
}

/// Reverse mode: `Jᵀ u` for a cotangent `u` of the logits' shape, as a flat vector.
pub fn vjp<M: Model + ?Sized>(model: &M, params: &Tensor, x: &Tensor, u: &Tensor) -> Result<Tensor> {
    let (mut tape, vars, xv) = record(model, params, None, x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    if u.shape() != tape.value(z).primal.shape() {
        return Err(shape_err(
            "vjp",
            format!("cotangent {:?} vs logits {:?}", u.shape(), tape.value(z).primal.shape()),
        ));
    }
    backward_flat(model, &tape, &vars, z, Some(Dual::constant(u.clone())))
}

/// Mean cross-entropy loss (a `[1]` tensor) and its gradient (flat).
pub fn loss_grad<M: Model + ?Sized>(
    model: &M,
    params: &Tensor,
    x: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (mut tape, vars, xv) = record(model, params, None, x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    let loss = tape.cross_entropy(z, labels)?;
    let g = backward_flat(model, &tape, &vars, loss, None)?;
    Ok((tape.value(loss).primal.clone(), g))
}

/// Gradient of the mean cross-entropy and the Hessian-vector product `H v`, by
/// forward-over-reverse: the backward pass runs on duals seeded with tangent `v`.
pub fn loss_hvp<M: Model + ?Sized>(
    model: &M,
    params: &Tensor,
    v: &Tensor,
    x: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (mut tape, vars, xv) = record(model, params, Some(v), x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    let loss = tape.cross_entropy(z, labels)?;
    let g = tape.grad(loss, true)?;
    Ok((flatten_grads(model, &tape, &g, &vars, false)?, flatten_grads(model, &tape, &g, &vars, true)?))
}

/// The Gauss–Newton (output-metric) product `(1/B) Σ_x J_xᵀ J_x v` on a batch of `B` inputs:
/// one JVP, then one VJP of the result.
pub fn gauss_newton<M: Model + ?Sized>(model: &M, params: &Tensor, v: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (mut tape, vars, xv) = record(model, params, Some(v), x)?;
    let z = model.forward(&mut tape, &vars, xv)?;
    let jv = tape.value(z).tangent_or_zeros()?;
    let batch = jv.shape()[0].max(1) as f32;
    let u = ew::scale(1.0 / batch, &jv)?;
    backward_flat(model, &tape, &vars, z, Some(Dual::constant(u)))
}
