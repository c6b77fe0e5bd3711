//! Reverse mode: a [`Tape`] records each op with the values it needs, and [`Tape::backward`]
//! runs the recorded rules in reverse. The rules are written with the dual ops of
//! [`super::dual`], so when the forward values carry tangents, the backward pass yields the
//! gradient and its directional derivative (a Hessian-vector product) at once.

use super::dual::{self, Dual, RunningStats};
use super::flat::GradSinks;
use crate::error::{Error, Result};
use crate::ops::conv::Conv2dGeometry;
use crate::ops::matmul::{linear_param_grads_into, matmul_ex, matmul_into, MatmulOpts};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// A handle to a value recorded on a [`Tape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var(usize);

impl Var {
    /// Position of the value on its tape.
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// What produced a recorded value, with what its backward rule needs.
enum Op {
    Leaf,
    /// `act(x W + b)`.
    Linear {
        x: Var,
        w: Var,
        b: Option<Var>,
        relu: bool,
    },
    /// `act(conv(x, w) + b)`.
    Conv2d {
        x: Var,
        w: Var,
        b: Option<Var>,
        geometry: Conv2dGeometry,
        relu: bool,
    },
    /// Max pooling, with the argmax indices of the forward pass.
    MaxPool2d {
        x: Var,
        indices: Tensor,
    },
    /// Training-mode batch normalisation, with the batch statistics of the forward pass.
    BatchNormTrain {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Tensor,
        invstd: Tensor,
        eps: f32,
    },
    /// Eval-mode batch normalisation with running statistics.
    BatchNormEval {
        x: Var,
        gamma: Var,
        beta: Var,
        stats: RunningStats,
    },
    /// Multiplication by a fixed dropout mask.
    Dropout {
        x: Var,
        mask: Tensor,
    },
    /// `max(x, 0)`.
    Relu {
        x: Var,
    },
    /// Same data, new shape.
    Reshape {
        x: Var,
    },
    /// Mean cross-entropy of logits `z` against `labels`.
    CrossEntropy {
        z: Var,
        labels: Tensor,
    },
}

struct Node {
    value: Dual,
    op: Op,
    needs_grad: bool,
}

/// The recorded computation.
#[derive(Default)]
pub struct Tape {
    nodes: Vec<Node>,
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Tape {
        Tape::default()
    }

    fn push(&mut self, value: Dual, op: Op, needs_grad: bool) -> Var {
        self.nodes.push(Node { value, op, needs_grad });
        Var(self.nodes.len() - 1)
    }

    fn needs(&self, v: Var) -> bool {
        self.nodes[v.0].needs_grad
    }

    /// Records an input. `needs_grad` marks parameters (whose gradients are wanted) apart from data.
    pub fn leaf(&mut self, value: Dual, needs_grad: bool) -> Var {
        self.push(value, Op::Leaf, needs_grad)
    }

    /// The recorded value of `v`.
    pub fn value(&self, v: Var) -> &Dual {
        &self.nodes[v.0].value
    }

    /// Records `act(x W + b)` (W `[in, out]`).
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>, relu: bool) -> Result<Var> {
        let value = dual::linear(self.value(x), self.value(w), b.map(|b| self.value(b)), relu)?;
        let needs = self.needs(x) || self.needs(w) || b.is_some_and(|b| self.needs(b));
        Ok(self.push(value, Op::Linear { x, w, b, relu }, needs))
    }

    /// Records `act(conv(x, w) + b)` (x `[N, C, H, W]`, w `[O, C, KH, KW]`).
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, geometry: Conv2dGeometry, relu: bool) -> Result<Var> {
        let value = dual::conv2d(self.value(x), self.value(w), b.map(|b| self.value(b)), geometry, relu)?;
        let needs = self.needs(x) || self.needs(w) || b.is_some_and(|b| self.needs(b));
        Ok(self.push(value, Op::Conv2d { x, w, b, geometry, relu }, needs))
    }

    /// Records `k` x `k` max pooling with the given stride.
    pub fn maxpool2d(&mut self, x: Var, k: usize, stride: usize) -> Result<Var> {
        let (value, indices) = dual::maxpool2d(self.value(x), k, stride)?;
        let needs = self.needs(x);
        Ok(self.push(value, Op::MaxPool2d { x, indices }, needs))
    }

    /// Records training-mode batch normalisation; returns the output and the batch statistics
    /// `(mean, invstd)` (for the running-statistics update).
    pub fn batchnorm_train(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Result<(Var, Tensor, Tensor)> {
        let (value, mean, invstd) = dual::batchnorm_train(self.value(x), self.value(gamma), self.value(beta), eps)?;
        let needs = self.needs(x) || self.needs(gamma) || self.needs(beta);
        let op = Op::BatchNormTrain { x, gamma, beta, mean: mean.clone(), invstd: invstd.clone(), eps };
        Ok((self.push(value, op, needs), mean, invstd))
    }

    /// Records eval-mode batch normalisation with running statistics.
    pub fn batchnorm_eval(&mut self, x: Var, gamma: Var, beta: Var, stats: &RunningStats) -> Result<Var> {
        let value = dual::batchnorm_eval(self.value(x), self.value(gamma), self.value(beta), stats)?;
        let needs = self.needs(x) || self.needs(gamma) || self.needs(beta);
        Ok(self.push(value, Op::BatchNormEval { x, gamma, beta, stats: stats.clone() }, needs))
    }

    /// Records inverted dropout with drop probability `p` and mask seed `seed`.
    pub fn dropout(&mut self, x: Var, p: f32, seed: u64) -> Result<Var> {
        let (_, mask) = crate::ops::dropout::dropout(&self.value(x).primal, p, seed)?;
        let value = dual::mul_mask(self.value(x), &mask)?;
        let needs = self.needs(x);
        Ok(self.push(value, Op::Dropout { x, mask }, needs))
    }

    /// Records `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let value = dual::relu(self.value(x))?;
        let needs = self.needs(x);
        Ok(self.push(value, Op::Relu { x }, needs))
    }

    /// Records a reshape.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let value = dual::reshape(self.value(x), shape)?;
        let needs = self.needs(x);
        Ok(self.push(value, Op::Reshape { x }, needs))
    }

    /// Records the mean cross-entropy of logits `z` (`[B, C]`) against u32 `labels` (`[B]`).
    /// Its value has no tangent: the loss is only differentiated in reverse.
    pub fn cross_entropy(&mut self, z: Var, labels: &Tensor) -> Result<Var> {
        let value = Dual::constant(softmax::cross_entropy(&self.value(z).primal, labels)?);
        let needs = self.needs(z);
        Ok(self.push(value, Op::CrossEntropy { z, labels: labels.clone() }, needs))
    }

    /// Runs the backward pass from `out` seeded with cotangent `seed`; returns the cotangent of
    /// every recorded value that needs one (indexed by [`Var`]). With `second_order`, the
    /// recorded tangents take part and each cotangent carries its tangent (forward-over-reverse);
    /// without, tangents are ignored (a plain VJP).
    pub fn backward(&self, out: Var, seed: Dual, second_order: bool) -> Result<Cotangents> {
        self.run_backward(out, seed, second_order, None)
    }

    /// A first-order [`Tape::backward`] that writes the cotangent of each leaf with a view in
    /// `sinks` straight into that view when the leaf receives a single contribution
    /// ([`super::flat::flatten_into`] then skips its copy).
    pub(crate) fn backward_into(&self, out: Var, seed: Dual, sinks: &GradSinks) -> Result<Cotangents> {
        self.run_backward(out, seed, false, Some(sinks))
    }

    /// The ReLU output whose mask `v`'s cotangent needs: `v` itself when it is produced by a
    /// ReLU (alone or fused into a linear or convolution layer).
    fn relu_output(&self, v: Var) -> Option<&Tensor> {
        match &self.nodes[v.0].op {
            Op::Linear { relu: true, .. } | Op::Conv2d { relu: true, .. } | Op::Relu { .. } => {
                Some(&self.nodes[v.0].value.primal)
            }
            _ => None,
        }
    }

    fn run_backward(&self, out: Var, seed: Dual, second_order: bool, sinks: Option<&GradSinks>) -> Result<Cotangents> {
        let mut grads: Vec<Option<Dual>> = vec![None; out.0 + 1];
        // masked[i]: every contribution to grads[i] so far already carries the ReLU mask of
        // node i's output (applied by the producing product), so node i need not apply it.
        // Masking is idempotent, so applying it again would only cost time.
        let mut masked = vec![false; out.0 + 1];
        grads[out.0] = Some(seed);
        let val = |v: Var| -> Dual {
            let d = &self.nodes[v.0].value;
            if second_order {
                d.clone()
            } else {
                d.primal_only()
            }
        };
        for i in (0..=out.0).rev() {
            let Some(g) = grads[i].take() else { continue };
            let node = &self.nodes[i];
            let mut contributions: Vec<(Var, Dual)> = Vec::new();
            // Inputs whose contribution from this node is already ReLU-masked.
            let mut premasked: Option<Var> = None;
            // A view to write a first contribution into (never one already holding a value).
            let sink = |v: Var| sinks.and_then(|s| s.get(v)).filter(|_| grads[v.0].is_none());
            match &node.op {
                Op::Leaf => {
                    grads[i] = Some(g);
                    continue;
                }
                Op::Linear { x, w, b, relu } => {
                    let gz = if *relu && !masked[i] { dual::relu_backward(&g, &node.value.primal)? } else { g };
                    let need_b = b.filter(|b| self.needs(*b));
                    if second_order {
                        if self.needs(*w) {
                            contributions.push((*w, dual::matmul(&val(*x), &gz, true, false)?));
                        }
                        if let Some(b) = need_b {
                            contributions.push((b, dual::sum_rows(&gz)?));
                        }
                    } else {
                        let (x_val, gy) = (&self.nodes[x.0].value.primal, &gz.primal);
                        match need_b {
                            Some(b) if self.needs(*w) => {
                                // Weight and bias gradients from one dispatch.
                                let (dw, db) = linear_param_grads_into(x_val, gy, sink(*w), sink(b))?;
                                contributions.push((*w, Dual::constant(dw)));
                                contributions.push((b, Dual::constant(db)));
                            }
                            _ => {
                                if self.needs(*w) {
                                    let o = MatmulOpts { trans_a: true, ..Default::default() };
                                    contributions.push((*w, Dual::constant(matmul_into(x_val, gy, o, sink(*w))?)));
                                }
                                if let Some(b) = need_b {
                                    contributions.push((b, dual::sum_rows(&gz)?));
                                }
                            }
                        }
                    }
                    if self.needs(*x) {
                        let w_val = &self.nodes[w.0].value.primal;
                        let mask = if second_order { None } else { self.relu_output(*x) };
                        if let Some(mask) = mask {
                            // The cotangent of x, masked by x's own ReLU as it is produced.
                            let o = MatmulOpts { trans_b: true, mask: Some(mask), ..Default::default() };
                            contributions.push((*x, Dual::constant(matmul_ex(&gz.primal, w_val, o)?)));
                            premasked = Some(*x);
                        } else {
                            contributions.push((*x, dual::matmul(&gz, &val(*w), false, true)?));
                        }
                    }
                }
                Op::Conv2d { x, w, b, geometry, relu } => {
                    let gz = if *relu && !masked[i] { dual::relu_backward(&g, &node.value.primal)? } else { g };
                    let b = b.filter(|b| self.needs(*b));
                    if self.needs(*w) {
                        let w_shape = self.nodes[w.0].value.primal.shape().to_vec();
                        let (gw, gb) = dual::conv2d_backward_params(&val(*x), &gz, &w_shape, *geometry, b.is_some())?;
                        contributions.push((*w, gw));
                        contributions.extend(b.zip(gb));
                    } else if let Some(b) = b {
                        contributions.push((b, dual::conv2d_backward_bias(&gz)?));
                    }
                    if self.needs(*x) {
                        let x_shape = self.nodes[x.0].value.primal.shape().to_vec();
                        contributions.push((*x, dual::conv2d_backward_data(&gz, &val(*w), &x_shape, *geometry)?));
                    }
                }
                Op::MaxPool2d { x, indices } => {
                    let x_shape = self.nodes[x.0].value.primal.shape().to_vec();
                    contributions.push((*x, dual::maxpool2d_backward(&g, indices, &x_shape)?));
                }
                Op::BatchNormTrain { x, gamma, beta, mean, invstd, eps } => {
                    let (gx, ggamma, gbeta) =
                        dual::batchnorm_train_backward(&g, &val(*x), &val(*gamma), mean, invstd, *eps)?;
                    self.push_param_grads(&mut contributions, [(*x, gx), (*gamma, ggamma), (*beta, gbeta)]);
                }
                Op::BatchNormEval { x, gamma, beta, stats } => {
                    let (gx, ggamma, gbeta) = dual::batchnorm_eval_backward(&g, &val(*x), &val(*gamma), stats)?;
                    self.push_param_grads(&mut contributions, [(*x, gx), (*gamma, ggamma), (*beta, gbeta)]);
                }
                Op::Dropout { x, mask } => contributions.push((*x, dual::mul_mask(&g, mask)?)),
                Op::Relu { x } if masked[i] => contributions.push((*x, g)),
                Op::Relu { x } => contributions.push((*x, dual::relu_backward(&g, &node.value.primal)?)),
                Op::Reshape { x } => {
                    let shape = self.nodes[x.0].value.primal.shape().to_vec();
                    contributions.push((*x, dual::reshape(&g, &shape)?));
                }
                Op::CrossEntropy { z, labels } => {
                    // d(mean CE)/dz = (softmax - onehot) / B, times the incoming scalar seed,
                    // which must be the plain 1 of a loss (checked by `grad`).
                    let batch = labels.numel().max(1) as f32;
                    contributions.push((*z, dual::cross_entropy_backward(&val(*z), labels, 1.0 / batch)?));
                }
            }
            for (v, c) in contributions {
                let pre = premasked == Some(v);
                grads[v.0] = Some(match grads[v.0].take() {
                    Some(prev) => {
                        masked[v.0] &= pre;
                        dual::add(&prev, &c)?
                    }
                    None => {
                        masked[v.0] = pre;
                        c
                    }
                });
            }
        }
        Ok(Cotangents(grads))
    }

    /// Keeps the cotangents of the inputs that need one.
    fn push_param_grads<const N: usize>(&self, out: &mut Vec<(Var, Dual)>, grads: [(Var, Dual); N]) {
        out.extend(grads.into_iter().filter(|(v, _)| self.needs(*v)));
    }

    /// Gradient (with tangent when `second_order`) of a scalar loss recorded by
    /// [`Tape::cross_entropy`].
    pub fn grad(&self, loss: Var, second_order: bool) -> Result<Cotangents> {
        if !matches!(self.nodes[loss.0].op, Op::CrossEntropy { .. }) {
            return Err(Error::Invalid("Tape::grad needs a loss recorded by cross_entropy".into()));
        }
        self.backward(loss, self.loss_seed(loss), second_order)
    }

    /// [`Tape::grad`] of the first order, writing parameter cotangents into `sinks` as
    /// [`Tape::backward_into`] does.
    pub(crate) fn grad_into(&self, loss: Var, sinks: &GradSinks) -> Result<Cotangents> {
        if !matches!(self.nodes[loss.0].op, Op::CrossEntropy { .. }) {
            return Err(Error::Invalid("Tape::grad needs a loss recorded by cross_entropy".into()));
        }
        self.backward_into(loss, self.loss_seed(loss), sinks)
    }

    /// The seed of a loss's backward pass. The cross-entropy rule takes its seed to be the
    /// plain 1 of a loss and never reads it, so the loss value stands in for it (no dispatch).
    fn loss_seed(&self, loss: Var) -> Dual {
        self.value(loss).primal_only()
    }
}

/// The result of a backward pass.
pub struct Cotangents(Vec<Option<Dual>>);

impl Cotangents {
    /// The cotangent of `v` (zero — `None` — when nothing flowed into it).
    pub fn get(&self, v: Var) -> Option<&Dual> {
        self.0.get(v.0).and_then(|g| g.as_ref())
    }
}
