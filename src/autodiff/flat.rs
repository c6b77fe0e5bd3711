//! Flat gradient vectors without a concatenation pass: the first-order backward pass writes
//! each parameter's cotangent straight into its slice of one pre-allocated vector where the
//! device can bind that slice ([`GradSinks`]), and [`backward_flat`] copies only the rest.

use super::tape::{Tape, Var};
use super::{flatten_grads, Dual, Model};
use crate::device::Device;
use crate::error::Result;
use crate::ops::elementwise as ew;
use crate::tensor::Tensor;

/// One flat gradient vector on a GPU and, per parameter leaf, the view of its slice when the
/// adapter can bind it at that offset.
pub(crate) struct GradSinks {
    flat: Tensor,
    /// Indexed by the leaves' [`Var`] index.
    views: Vec<Option<Tensor>>,
}

impl GradSinks {
    /// An uninitialised flat vector for `params` (leaves of `shapes`, in their flat order);
    /// `None` on the CPU device.
    fn new(device: &Device, params: &[Var], shapes: &[Vec<usize>]) -> Result<Option<GradSinks>> {
        let Device::Gpu(ctx) = device else { return Ok(None) };
        let total = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        let flat = Tensor::gpu_uninit(ctx, "gradient", &[total])?;
        let mut views = vec![None; params.iter().map(|v| v.index() + 1).max().unwrap_or(0)];
        let mut off = 0;
        for (v, s) in params.iter().zip(shapes) {
            views[v.index()] = flat.gpu_view(off, s);
            off += s.iter().product::<usize>();
        }
        Ok(Some(GradSinks { flat, views }))
    }

    /// The view that leaf `v`'s cotangent may be written into.
    pub(crate) fn get(&self, v: Var) -> Option<&Tensor> {
        self.views.get(v.index()).and_then(|t| t.as_ref())
    }
}

/// The first-order gradient of `out` with respect to the parameter leaves `params` as one flat
/// vector: the backward pass from `out` seeded with `seed` (`None`: `out` is a loss recorded
/// by [`Tape::cross_entropy`], differentiated as by [`Tape::grad`]).
pub(crate) fn backward_flat<M: Model + ?Sized>(
    model: &M,
    tape: &Tape,
    params: &[Var],
    out: Var,
    seed: Option<Dual>,
) -> Result<Tensor> {
    let shapes = model.param_shapes();
    let device = tape.value(params[0]).primal.device();
    let Some(sinks) = GradSinks::new(&device, params, &shapes)? else {
        let grads = match seed {
            Some(seed) => tape.backward(out, seed, false)?,
            None => tape.grad(out, false)?,
        };
        return flatten_grads(model, tape, &grads, params, false);
    };
    let grads = match seed {
        Some(seed) => tape.backward_into(out, seed, &sinks)?,
        None => tape.grad_into(out, &sinks)?,
    };
    let mut off = 0;
    for (v, s) in params.iter().zip(&shapes) {
        let n: usize = s.iter().product();
        let in_place = matches!((grads.get(*v), sinks.get(*v)), (Some(g), Some(view)) if g.primal.same_gpu_range(view));
        if !in_place {
            let g = match grads.get(*v) {
                Some(g) => g.primal.clone(),
                None => ew::fill(&device, s, 0.0)?,
            };
            ew::copy_into(&g, &sinks.flat, off)?;
        }
        off += n;
    }
    Ok(sinks.flat)
}
