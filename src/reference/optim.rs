//! CPU reference of the optimiser updates (`kernels/optim.wgsl`), with PyTorch's semantics
//! (`torch.optim.SGD` with dampening 0, `torch.optim.Adam`, `torch.optim.AdamW`).
//!
//! Each function does, per element and in the same order, the f32 operations of the matching
//! WGSL entry point. A state of `None` means the first step: the state starts at zero (which for
//! SGD equals PyTorch's "buffer = gradient on the first step", since dampening is 0).
//! NaN or infinity in the gradient is not filtered: it propagates into the new parameters and
//! the new state.

/// Hyperparameters of one SGD step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Learning rate of this step.
    pub lr: f32,
    /// Momentum factor μ (0: plain SGD, no state).
    pub momentum: f32,
    /// Nesterov momentum (needs `momentum > 0`).
    pub nesterov: bool,
    /// L2 weight decay λ, added to the gradient as `λ w`.
    pub weight_decay: f32,
}

/// Hyperparameters of one Adam / AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate of this step.
    pub lr: f32,
    /// Decay rate β1 of the first moment.
    pub beta1: f32,
    /// Decay rate β2 of the second moment.
    pub beta2: f32,
    /// ε added to the denominator.
    pub eps: f32,
    /// Weight decay λ: added to the gradient as `λ w` (Adam), or `w *= 1 - lr λ` (AdamW).
    pub weight_decay: f32,
    /// Decoupled weight decay (AdamW).
    pub decoupled: bool,
    /// Step number `t`, counting from 1, for the bias corrections.
    pub t: usize,
}

impl AdamStep {
    /// The host-side scalars of the update: `(step size lr / (1 - β1^t), sqrt(1 - β2^t),
    /// decay 1 - lr λ)`, computed in f64 as PyTorch does, then rounded to f32.
    pub fn scalars(&self) -> (f32, f32, f32) {
        let t = self.t.min(i32::MAX as usize) as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t);
        let step = self.lr as f64 / bc1;
        let decay = 1.0 - self.lr as f64 * self.weight_decay as f64;
        (step as f32, bc2.sqrt() as f32, decay as f32)
    }
}

/// `v`, or 0 where `v` is subnormal. Optimiser state decays geometrically where the gradient
/// is zero (the masked weights of pruning): its subnormal tail changes nothing, yet each
/// operation on it costs about a hundred times a normal one on x86 (measured: 84% of a gradual
/// pruning run in this loop), so it is flushed to zero, as GPUs do.
fn flushed(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        v
    }
}

/// One SGD step: returns the new parameters and, when `momentum != 0`, the new momentum
/// buffer (subnormal values flushed to zero). `buf` is the previous buffer (`None` on the first
/// step); it is ignored without momentum.
pub fn sgd(w: &[f32], g: &[f32], buf: Option<&[f32]>, h: &SgdStep) -> (Vec<f32>, Option<Vec<f32>>) {
    let n = w.len();
    let mut out = Vec::with_capacity(n);
    if h.momentum == 0.0 {
        for (&wi, &gi) in w.iter().zip(g) {
            let gi = gi + h.weight_decay * wi;
            out.push(wi - h.lr * gi);
        }
        return (out, None);
    }
    let mut out2 = Vec::with_capacity(n);
    for i in 0..n {
        let wi = w[i];
        let gi = g[i] + h.weight_decay * wi;
        let bi = flushed(match buf {
            Some(b) => h.momentum * b[i] + gi,
            None => gi,
        });
        let d = if h.nesterov { gi + h.momentum * bi } else { bi };
        out.push(wi - h.lr * d);
        out2.push(bi);
    }
    (out, Some(out2))
}

/// One Adam / AdamW step: returns the new parameters, first moment and second moment. `state`
/// is the previous `(m, v)` (`None` on the first step).
pub fn adam(w: &[f32], g: &[f32], state: Option<(&[f32], &[f32])>, h: &AdamStep) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = w.len();
    let (step, bc2_sqrt, decay) = h.scalars();
    let (mut out, mut m_out, mut v_out) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let mut wi = w[i];
        let mut gi = g[i];
        if h.decoupled {
            wi *= decay;
        } else {
            gi += h.weight_decay * wi;
        }
        let (m0, v0) = match state {
            Some((m, v)) => (m[i], v[i]),
            None => (0.0, 0.0),
        };
        let m = flushed(h.beta1 * m0 + (1.0 - h.beta1) * gi);
        let v = flushed(h.beta2 * v0 + (1.0 - h.beta2) * (gi * gi));
        let denom = v.sqrt() / bc2_sqrt + h.eps;
        out.push(wi - step * (m / denom));
        m_out.push(m);
        v_out.push(v);
    }
    (out, m_out, v_out)
}
