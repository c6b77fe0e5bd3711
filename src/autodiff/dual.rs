//! Forward mode: a [`Dual`] carries a primal value and (optionally) its tangent, and every op
//! here maps primal and tangent together, using the fused JVP kernels where they exist.
//!
//! The reverse-mode rules of [`super::tape`] are written with these same ops, so running the
//! backward pass on duals differentiates the gradient itself: forward-over-reverse, which is
//! how Hessian-vector products are computed.

use crate::error::Result;
use crate::ops::conv::{self, Conv2dGeometry};
use crate::ops::elementwise as ew;
use crate::ops::matmul::{matmul_ex, matmul_jvp, MatmulOpts};
use crate::ops::{norm, pool, reduce, softmax};
use crate::tensor::Tensor;

/// A value and its directional derivative (`None` means a zero tangent).
#[derive(Clone, Debug)]
pub struct Dual {
    /// The value.
    pub primal: Tensor,
    /// Its tangent, or `None` for zero.
    pub tangent: Option<Tensor>,
}

impl Dual {
    /// A constant (zero tangent).
    pub fn constant(primal: Tensor) -> Dual {
        Dual { primal, tangent: None }
    }

    /// A value with tangent.
    pub fn new(primal: Tensor, tangent: Tensor) -> Dual {
        Dual { primal, tangent: Some(tangent) }
    }

    /// The same primal without its tangent.
    pub fn primal_only(&self) -> Dual {
        Dual::constant(self.primal.clone())
    }

    /// The tangent, or zeros of the primal's shape.
    pub fn tangent_or_zeros(&self) -> Result<Tensor> {
        match &self.tangent {
            Some(t) => Ok(t.clone()),
            None => ew::fill(&self.primal.device(), self.primal.shape(), 0.0),
        }
    }
}

/// Adds two optional tangents.
fn add_tangents(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(ew::add(&a, &b)?),
        (a, None) => a,
        (None, b) => b,
    })
}

/// `a + b`.
pub fn add(a: &Dual, b: &Dual) -> Result<Dual> {
    Ok(Dual { primal: ew::add(&a.primal, &b.primal)?, tangent: add_tangents(a.tangent.clone(), b.tangent.clone())? })
}

/// `alpha * a`.
pub fn scale(alpha: f32, a: &Dual) -> Result<Dual> {
    Ok(Dual {
        primal: ew::scale(alpha, &a.primal)?,
        tangent: a.tangent.as_ref().map(|t| ew::scale(alpha, t)).transpose()?,
    })
}

/// `op(a) op(b)` with transposes; tangent `op(da) op(b) + op(a) op(db)`, accumulated in the
/// second product's epilogue.
pub fn matmul(a: &Dual, b: &Dual, trans_a: bool, trans_b: bool) -> Result<Dual> {
    let o = MatmulOpts { trans_a, trans_b, ..Default::default() };
    let primal = matmul_ex(&a.primal, &b.primal, o)?;
    let first = a.tangent.as_ref().map(|da| matmul_ex(da, &b.primal, o)).transpose()?;
    let tangent = match (&b.tangent, first) {
        (Some(db), Some(first)) => Some(matmul_ex(&a.primal, db, MatmulOpts { accumulate: Some((1.0, &first)), ..o })?),
        (Some(db), None) => Some(matmul_ex(&a.primal, db, o)?),
        (None, first) => first,
    };
    Ok(Dual { primal, tangent })
}

/// A dense layer `act(x W + b)` (W stored `[in, out]`), in one fused dispatch for primal and
/// tangent when any tangent is present.
pub fn linear(x: &Dual, w: &Dual, b: Option<&Dual>, relu: bool) -> Result<Dual> {
    let any_tangent = x.tangent.is_some() || w.tangent.is_some() || b.is_some_and(|b| b.tangent.is_some());
    if !any_tangent {
        let o = MatmulOpts { bias: b.map(|b| &b.primal), relu, ..Default::default() };
        return Ok(Dual::constant(matmul_ex(&x.primal, &w.primal, o)?));
    }
    let dw = w.tangent_or_zeros()?;
    let db = b.map(|b| b.tangent_or_zeros()).transpose()?;
    let bias = b.map(|b| &b.primal).zip(db.as_ref());
    let (y, dy) = matmul_jvp(&x.primal, x.tangent.as_ref(), &w.primal, &dw, bias, relu)?;
    Ok(Dual::new(y, dy))
}

/// ReLU, fused primal and tangent.
pub fn relu(x: &Dual) -> Result<Dual> {
    match &x.tangent {
        None => Ok(Dual::constant(ew::relu(&x.primal)?)),
        Some(t) => {
            let (y, dy) = ew::relu_jvp(&x.primal, t)?;
            Ok(Dual::new(y, dy))
        }
    }
}

/// The ReLU backward rule `g * [y > 0]` on a dual cotangent; the mask depends on the primal
/// only (its derivative is zero almost everywhere).
pub fn relu_backward(g: &Dual, y: &Tensor) -> Result<Dual> {
    Ok(Dual {
        primal: ew::relu_backward(&g.primal, y)?,
        tangent: g.tangent.as_ref().map(|t| ew::relu_backward(t, y)).transpose()?,
    })
}

/// Column sums `[rows, cols] -> [cols]` (linear, so the tangent is the column sums of the tangent).
pub fn sum_rows(g: &Dual) -> Result<Dual> {
    Ok(Dual { primal: reduce::sum_rows(&g.primal)?, tangent: g.tangent.as_ref().map(reduce::sum_rows).transpose()? })
}

/// `scale * (softmax(z) - onehot)`, the gradient of the summed cross-entropy with respect to the
/// logits, with its tangent along `z`'s tangent in the same dispatch.
pub fn cross_entropy_backward(z: &Dual, labels: &Tensor, scale: f32) -> Result<Dual> {
    match &z.tangent {
        None => Ok(Dual::constant(softmax::cross_entropy_backward(&z.primal, labels, scale)?)),
        Some(dz) => {
            let (g, dg) = softmax::cross_entropy_backward_jvp(&z.primal, dz, labels, scale)?;
            Ok(Dual::new(g, dg))
        }
    }
}

/// Reshape of primal and tangent.
pub fn reshape(x: &Dual, shape: &[usize]) -> Result<Dual> {
    Ok(Dual { primal: x.primal.reshape(shape)?, tangent: x.tangent.as_ref().map(|t| t.reshape(shape)).transpose()? })
}

/// A convolution `act(conv(x, w) + b)`, in one fused dispatch for primal and tangent when any
/// tangent is present.
pub fn conv2d(x: &Dual, w: &Dual, b: Option<&Dual>, g: Conv2dGeometry, relu: bool) -> Result<Dual> {
    let any_tangent = x.tangent.is_some() || w.tangent.is_some() || b.is_some_and(|b| b.tangent.is_some());
    if !any_tangent {
        return Ok(Dual::constant(conv::conv2d(&x.primal, &w.primal, b.map(|b| &b.primal), g, relu)?));
    }
    let dw = w.tangent_or_zeros()?;
    let db = b.map(|b| b.tangent_or_zeros()).transpose()?;
    let bias = b.map(|b| &b.primal).zip(db.as_ref());
    let (y, dy) = conv::conv2d_jvp(&x.primal, x.tangent.as_ref(), &w.primal, &dw, bias, g, relu)?;
    Ok(Dual::new(y, dy))
}

/// The input cotangent of a convolution, bilinear in `(gy, w)`.
pub fn conv2d_backward_data(gy: &Dual, w: &Dual, x_shape: &[usize], g: Conv2dGeometry) -> Result<Dual> {
    let primal = conv::conv2d_backward_data(&gy.primal, &w.primal, x_shape, g)?;
    let first = gy.tangent.as_ref().map(|t| conv::conv2d_backward_data(t, &w.primal, x_shape, g)).transpose()?;
    let second = w.tangent.as_ref().map(|t| conv::conv2d_backward_data(&gy.primal, t, x_shape, g)).transpose()?;
    Ok(Dual { primal, tangent: add_tangents(first, second)? })
}

/// The weight cotangent of a convolution, bilinear in `(x, gy)`, and with `bias` the bias
/// cotangent, linear in `gy` (each product of `gy` fused as [`conv::conv2d_backward_params`]).
pub fn conv2d_backward_params(
    x: &Dual,
    gy: &Dual,
    w_shape: &[usize],
    g: Conv2dGeometry,
    bias: bool,
) -> Result<(Dual, Option<Dual>)> {
    let (dw, db) = conv::conv2d_backward_params(&x.primal, &gy.primal, w_shape, g, bias)?;
    let first = x.tangent.as_ref().map(|t| conv::conv2d_backward_weight(t, &gy.primal, w_shape, g)).transpose()?;
    let (second, db_tangent) = match &gy.tangent {
        Some(t) => {
            let (dw_t, db_t) = conv::conv2d_backward_params(&x.primal, t, w_shape, g, bias)?;
            (Some(dw_t), db_t)
        }
        None => (None, None),
    };
    let weight = Dual { primal: dw, tangent: add_tangents(first, second)? };
    Ok((weight, db.map(|primal| Dual { primal, tangent: db_tangent })))
}

/// The bias cotangent of a convolution (linear in `gy`).
pub fn conv2d_backward_bias(gy: &Dual) -> Result<Dual> {
    Ok(Dual {
        primal: conv::conv2d_backward_bias(&gy.primal)?,
        tangent: gy.tangent.as_ref().map(conv::conv2d_backward_bias).transpose()?,
    })
}

/// Max pooling; returns the pooled dual and the argmax indices (primal and tangent fused in
/// one dispatch when a tangent is present).
pub fn maxpool2d(x: &Dual, k: usize, stride: usize) -> Result<(Dual, Tensor)> {
    match &x.tangent {
        None => {
            let (y, idx) = pool::maxpool2d(&x.primal, k, stride)?;
            Ok((Dual::constant(y), idx))
        }
        Some(dx) => {
            let (y, dy, idx) = pool::maxpool2d_jvp(&x.primal, dx, k, stride)?;
            Ok((Dual::new(y, dy), idx))
        }
    }
}

/// The max-pooling backward rule: scatter through the argmax indices (linear in `gy`).
pub fn maxpool2d_backward(gy: &Dual, indices: &Tensor, x_shape: &[usize]) -> Result<Dual> {
    Ok(Dual {
        primal: pool::maxpool2d_backward(&gy.primal, indices, x_shape)?,
        tangent: gy.tangent.as_ref().map(|t| pool::maxpool2d_backward(t, indices, x_shape)).transpose()?,
    })
}

/// Training-mode batch normalisation: the normalised dual and the batch statistics
/// `(mean, invstd)` (which depend on x; their derivative is part of the tangent).
pub fn batchnorm_train(x: &Dual, gamma: &Dual, beta: &Dual, eps: f32) -> Result<(Dual, Tensor, Tensor)> {
    let (y, mean, invstd) = norm::batchnorm_train(&x.primal, &gamma.primal, &beta.primal, eps)?;
    if x.tangent.is_none() && gamma.tangent.is_none() && beta.tangent.is_none() {
        return Ok((Dual::constant(y), mean, invstd));
    }
    let (_, dy) = norm::batchnorm_jvp(
        &x.primal,
        &x.tangent_or_zeros()?,
        &gamma.primal,
        &gamma.tangent_or_zeros()?,
        &beta.primal,
        &beta.tangent_or_zeros()?,
        eps,
    )?;
    Ok((Dual::new(y, dy), mean, invstd))
}

/// Cotangents `(gx, ggamma, gbeta)` of training-mode batch normalisation, with their tangents
/// (the JVP of the backward rule) when any input carries one.
pub fn batchnorm_train_backward(
    gy: &Dual,
    x: &Dual,
    gamma: &Dual,
    mean: &Tensor,
    invstd: &Tensor,
    eps: f32,
) -> Result<(Dual, Dual, Dual)> {
    let (gx, ggamma, gbeta) = norm::batchnorm_backward(&gy.primal, &x.primal, &gamma.primal, mean, invstd)?;
    if gy.tangent.is_none() && x.tangent.is_none() && gamma.tangent.is_none() {
        return Ok((Dual::constant(gx), Dual::constant(ggamma), Dual::constant(gbeta)));
    }
    let (dgx, dggamma, dgbeta) = norm::batchnorm_backward_jvp(
        &gy.primal,
        &gy.tangent_or_zeros()?,
        &x.primal,
        &x.tangent_or_zeros()?,
        &gamma.primal,
        &gamma.tangent_or_zeros()?,
        eps,
    )?;
    Ok((Dual::new(gx, dgx), Dual::new(ggamma, dggamma), Dual::new(gbeta, dgbeta)))
}

/// Running statistics of an eval-mode batch normalisation: mean, variance, `1/sqrt(var + eps)`,
/// and zeros of the channel count.
#[derive(Clone, Debug)]
pub struct RunningStats {
    /// Running mean `[C]`.
    pub mean: Tensor,
    /// Running (unbiased) variance `[C]`.
    pub var: Tensor,
    /// `1 / sqrt(var + eps)` `[C]`.
    pub invstd: Tensor,
    /// Zeros `[C]`.
    pub zeros: Tensor,
    /// Variance epsilon.
    pub eps: f32,
}

/// Eval-mode batch normalisation `gamma * (x - mean) * invstd + beta`, affine in `x`, `gamma`
/// and `beta`: `dy = gamma * invstd * dx + dgamma * xhat + dbeta`.
pub fn batchnorm_eval(x: &Dual, gamma: &Dual, beta: &Dual, s: &RunningStats) -> Result<Dual> {
    let y = norm::batchnorm_eval(&x.primal, &gamma.primal, &beta.primal, &s.mean, &s.var, s.eps)?;
    let mut tangent = None;
    if let Some(dx) = &x.tangent {
        tangent = Some(norm::batchnorm_eval(dx, &gamma.primal, &s.zeros, &s.zeros, &s.var, s.eps)?);
    }
    if gamma.tangent.is_some() || beta.tangent.is_some() {
        let t = norm::batchnorm_eval(
            &x.primal,
            &gamma.tangent_or_zeros()?,
            &beta.tangent_or_zeros()?,
            &s.mean,
            &s.var,
            s.eps,
        )?;
        tangent = add_tangents(tangent, Some(t))?;
    }
    Ok(Dual { primal: y, tangent })
}

/// Cotangents `(gx, ggamma, gbeta)` of eval-mode batch normalisation: `gx = gamma·invstd·gy`,
/// `ggamma = Σ gy·xhat`, `gbeta = Σ gy` (per channel), with tangents when inputs carry them.
pub fn batchnorm_eval_backward(gy: &Dual, x: &Dual, gamma: &Dual, s: &RunningStats) -> Result<(Dual, Dual, Dual)> {
    let gx = norm::batchnorm_eval(&gy.primal, &gamma.primal, &s.zeros, &s.zeros, &s.var, s.eps)?;
    // The channel sums of the training-mode rule, evaluated at the running statistics.
    let (_, ggamma, gbeta) = norm::batchnorm_backward(&gy.primal, &x.primal, &gamma.primal, &s.mean, &s.invstd)?;
    let mut dgx = None;
    let mut dggamma = None;
    let mut dgbeta = None;
    if let Some(dgy) = &gy.tangent {
        dgx = Some(norm::batchnorm_eval(dgy, &gamma.primal, &s.zeros, &s.zeros, &s.var, s.eps)?);
        let (_, a, b) = norm::batchnorm_backward(dgy, &x.primal, &gamma.primal, &s.mean, &s.invstd)?;
        dggamma = Some(a);
        dgbeta = Some(b);
    }
    if let Some(dgamma) = &gamma.tangent {
        let t = norm::batchnorm_eval(&gy.primal, dgamma, &s.zeros, &s.zeros, &s.var, s.eps)?;
        dgx = add_tangents(dgx, Some(t))?;
    }
    if let Some(dx) = &x.tangent {
        // d(Σ gy·(x - mean)·invstd) = Σ gy·dx·invstd: the same sum with x := dx, mean := 0.
        let (_, a, _) = norm::batchnorm_backward(&gy.primal, dx, &gamma.primal, &s.zeros, &s.invstd)?;
        dggamma = add_tangents(dggamma, Some(a))?;
    }
    Ok((
        Dual { primal: gx, tangent: dgx },
        Dual { primal: ggamma, tangent: dggamma },
        Dual { primal: gbeta, tangent: dgbeta },
    ))
}

/// Multiplication by a fixed mask (dropout's forward, backward and JVP rule).
pub fn mul_mask(x: &Dual, mask: &Tensor) -> Result<Dual> {
    Ok(Dual { primal: ew::mul(&x.primal, mask)?, tangent: x.tangent.as_ref().map(|t| ew::mul(t, mask)).transpose()? })
}
