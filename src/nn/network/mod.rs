//! A network built from a [`Spec`]: layers over one flat parameter vector, with BatchNorm
//! running statistics as buffers and a train/eval mode.

mod half;

pub use half::HalfParams;

use super::spec::{LayerSpec, Spec};
use crate::autodiff::dual::RunningStats;
use crate::autodiff::{Model, Tape, Var};
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::ops::conv::Conv2dGeometry;
use crate::ops::norm;
use crate::tensor::Tensor;
use std::cell::RefCell;

/// A layer with its parameter indices resolved (a ReLU right after a conv or linear is fused).
#[derive(Debug, Clone)]
enum Layer {
    Conv { w: usize, b: usize, geometry: Conv2dGeometry, relu: bool },
    Linear { w: usize, b: usize, relu: bool },
    BatchNorm { gamma: usize, beta: usize, index: usize, eps: f32, momentum: f32 },
    Relu,
    MaxPool { kernel: usize, stride: usize },
    Dropout { p: f32 },
    Flatten,
}

/// Mutable state of a network between steps.
struct State {
    train: bool,
    dropout_seed: u64,
    /// Running (mean, var) of each BatchNorm layer.
    running: Vec<(Tensor, Tensor)>,
    /// Eval-mode statistics derived from `running`, built on first use.
    eval_stats: Option<Vec<RunningStats>>,
    /// Batch (mean, invstd, count) of each BatchNorm layer from the last training forward pass.
    batch_stats: Vec<Option<(Tensor, Tensor, usize)>>,
}

/// A network: resolved layers, parameter shapes, and mode.
pub struct Network {
    /// The spec it was built from.
    pub spec: Spec,
    /// Input `(C, H, W)`.
    pub input: [usize; 3],
    /// Number of classes (logits).
    pub classes: usize,
    layers: Vec<Layer>,
    shapes: Vec<Vec<usize>>,
    /// `(param index, fan-in)` of each weight tensor, for initialisation.
    weights: Vec<(usize, usize)>,
    bn_eps: Vec<f32>,
    state: RefCell<State>,
    device: Device,
}

impl Network {
    /// Builds `spec` for inputs of `input` = `(C, H, W)` and `classes` outputs on `device`.
    pub fn new(spec: &Spec, input: [usize; 3], classes: usize, device: &Device) -> Result<Network> {
        if let Some(declared) = spec.input {
            if declared != input {
                return Err(shape_err(
                    "model input",
                    format!("spec {} declares input {declared:?}, the data is {input:?}", spec.name),
                ));
            }
        }
        let mut shape: Vec<usize> = input.to_vec();
        let mut layers = Vec::new();
        let mut shapes: Vec<Vec<usize>> = Vec::new();
        let mut weights = Vec::new();
        let mut bn_eps = Vec::new();
        let mut i = 0;
        let specs = &spec.layers;
        let err =
            |i: usize, msg: String| Error::Invalid(format!("{} layer {} ({:?}): {msg}", spec.name, i + 1, specs[i]));
        while i < specs.len() {
            let fuse_relu = matches!(specs.get(i + 1), Some(LayerSpec::Relu));
            let layer = match &specs[i] {
                LayerSpec::Conv { out, kernel, stride, pad } => {
                    let [c, h, w] = shape[..] else {
                        return Err(err(i, format!("needs a [C, H, W] input, got {shape:?}")));
                    };
                    if h + 2 * pad < *kernel || w + 2 * pad < *kernel {
                        return Err(err(i, format!("kernel {kernel} does not fit input {shape:?} with padding {pad}")));
                    }
                    shape = vec![*out, (h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1];
                    weights.push((shapes.len(), c * kernel * kernel));
                    shapes.push(vec![*out, c, *kernel, *kernel]);
                    shapes.push(vec![*out]);
                    Layer::Conv {
                        w: shapes.len() - 2,
                        b: shapes.len() - 1,
                        geometry: Conv2dGeometry { stride: *stride, pad: *pad },
                        relu: fuse_relu,
                    }
                }
                LayerSpec::Linear { out } => {
                    let [inputs] = shape[..] else {
                        return Err(err(i, format!("needs a flat input (add `flatten`), got {shape:?}")));
                    };
                    let out = out.unwrap_or(classes);
                    shape = vec![out];
                    weights.push((shapes.len(), inputs));
                    shapes.push(vec![inputs, out]);
                    shapes.push(vec![out]);
                    Layer::Linear { w: shapes.len() - 2, b: shapes.len() - 1, relu: fuse_relu }
                }
                LayerSpec::BatchNorm { eps, momentum } => {
                    let c = shape[0];
                    shapes.push(vec![c]);
                    shapes.push(vec![c]);
                    bn_eps.push(*eps);
                    Layer::BatchNorm {
                        gamma: shapes.len() - 2,
                        beta: shapes.len() - 1,
                        index: bn_eps.len() - 1,
                        eps: *eps,
                        momentum: *momentum,
                    }
                }
                LayerSpec::Relu => Layer::Relu,
                LayerSpec::MaxPool { kernel, stride } => {
                    let [c, h, w] = shape[..] else {
                        return Err(err(i, format!("needs a [C, H, W] input, got {shape:?}")));
                    };
                    if h < *kernel || w < *kernel {
                        return Err(err(i, format!("window {kernel} larger than input {shape:?}")));
                    }
                    shape = vec![c, (h - kernel) / stride + 1, (w - kernel) / stride + 1];
                    Layer::MaxPool { kernel: *kernel, stride: *stride }
                }
                LayerSpec::Dropout { p } => Layer::Dropout { p: *p },
                LayerSpec::Flatten => {
                    shape = vec![shape.iter().product()];
                    Layer::Flatten
                }
            };
            let fused = matches!(layer, Layer::Conv { relu: true, .. } | Layer::Linear { relu: true, .. });
            layers.push(layer);
            i += if fused { 2 } else { 1 };
        }
        if shape != [classes] {
            return Err(Error::Invalid(format!(
                "{}: the last layer gives {shape:?}, not the {classes} class logits",
                spec.name
            )));
        }
        let mut running = Vec::new();
        for l in &layers {
            if let Layer::BatchNorm { gamma, .. } = l {
                let c = shapes[*gamma][0];
                running.push((Tensor::zeros(device, &[c])?, Tensor::full(device, &[c], 1.0)?));
            }
        }
        let bn = running.len();
        Ok(Network {
            spec: spec.clone(),
            input,
            classes,
            layers,
            shapes,
            weights,
            bn_eps,
            state: RefCell::new(State {
                train: false,
                dropout_seed: 0,
                running,
                eval_stats: None,
                batch_stats: vec![None; bn],
            }),
            device: device.clone(),
        })
    }

    /// He-uniform weights (bound `sqrt(6 / fan_in)`), zero biases, BatchNorm scale 1 and shift 0;
    /// the running statistics go back to mean 0, variance 1, as for a new network.
    pub fn init_params(&self, seed: u64) -> Result<Tensor> {
        {
            let mut st = self.state.borrow_mut();
            for (mean, var) in st.running.iter_mut() {
                let c = mean.numel();
                *mean = Tensor::zeros(&self.device, &[c])?;
                *var = Tensor::full(&self.device, &[c], 1.0)?;
            }
            st.eval_stats = None;
            st.batch_stats.iter_mut().for_each(|b| *b = None);
        }
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut uniform = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut pieces: Vec<Vec<f32>> = self.shapes.iter().map(|s| vec![0.0; s.iter().product()]).collect();
        for (idx, fan_in) in &self.weights {
            let bound = (6.0 / *fan_in as f32).sqrt();
            pieces[*idx].iter_mut().for_each(|v| *v = uniform() * bound);
        }
        for l in &self.layers {
            if let Layer::BatchNorm { gamma, .. } = l {
                pieces[*gamma].iter_mut().for_each(|v| *v = 1.0);
            }
        }
        let flat: Vec<f32> = pieces.concat();
        Tensor::from_vec(&self.device, &[flat.len()], flat)
    }

    /// Switches between training mode (batch statistics, dropout) and eval mode.
    pub fn set_train(&self, train: bool) {
        self.state.borrow_mut().train = train;
    }

    /// Seed of the dropout masks of the next forward pass.
    pub fn set_dropout_seed(&self, seed: u64) {
        self.state.borrow_mut().dropout_seed = seed;
    }

    /// Runs the computations of one training step, `f`, in training mode (batch statistics,
    /// dropout masks drawn from `seed`), then returns to eval mode and folds the batch statistics
    /// of the last training forward pass into the running statistics. Every training step of
    /// the experiments goes through here, so a BatchNorm network's running statistics follow its
    /// weights, and evaluations between steps see eval mode. (Connect's bends train in
    /// `curves::train_bend`, whose points get fresh statistics where they are evaluated.)
    pub fn training_step<T>(&self, seed: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.set_train(true);
        self.set_dropout_seed(seed);
        let out = f();
        self.set_train(false);
        let out = out?;
        self.update_running_stats()?;
        Ok(out)
    }

    /// Runs `f` (passes of a training step on other data than the step's own batch: a buffer
    /// batch, a reference network's outputs) without letting its training passes decide the
    /// running statistics: the batch statistics pending before `f` are pending again after it.
    pub fn keeping_batch_stats<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let kept = self.state.borrow().batch_stats.clone();
        let out = f();
        self.state.borrow_mut().batch_stats = kept;
        out
    }

    /// True when the network has BatchNorm layers.
    pub fn has_batchnorm(&self) -> bool {
        !self.bn_eps.is_empty()
    }

    /// Folds the batch statistics of the last training forward pass into the running statistics.
    pub fn update_running_stats(&self) -> Result<()> {
        self.update_running_stats_with(None)
    }

    /// [`Network::update_running_stats`] with every BatchNorm layer's momentum replaced by
    /// `momentum` when given (e.g. `1/k` for the `k`-th batch of a cumulative average).
    pub fn update_running_stats_with(&self, momentum: Option<f32>) -> Result<()> {
        let mut st = self.state.borrow_mut();
        let momenta: Vec<f32> = self
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::BatchNorm { momentum: own, .. } => Some(momentum.unwrap_or(*own)),
                _ => None,
            })
            .collect();
        for (i, momentum) in momenta.into_iter().enumerate() {
            if let Some((mean, invstd, count)) = st.batch_stats[i].take() {
                let (rm, rv) = &st.running[i];
                let updated = norm::batchnorm_update_running(rm, rv, &mean, &invstd, count, momentum, self.bn_eps[i])?;
                st.running[i] = updated;
                st.eval_stats = None;
            }
        }
        Ok(())
    }

    /// Running statistics as named buffers (`bn<i>.running_mean`, `bn<i>.running_var`).
    pub fn buffers(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let st = self.state.borrow();
        let mut out = Vec::new();
        for (i, (m, v)) in st.running.iter().enumerate() {
            out.push((format!("bn{i}.running_mean"), m.to_vec()?));
            out.push((format!("bn{i}.running_var"), v.to_vec()?));
        }
        Ok(out)
    }

    /// Restores buffers written by [`Network::buffers`]; errors on a missing or misshapen one.
    pub fn set_buffers(&self, buffers: &[(String, Vec<f32>)]) -> Result<()> {
        let mut st = self.state.borrow_mut();
        for i in 0..st.running.len() {
            let c = st.running[i].0.numel();
            let find = |name: String| -> Result<Tensor> {
                let (_, v) = buffers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| Error::Invalid(format!("checkpoint lacks buffer {name}")))?;
                if v.len() != c {
                    return Err(shape_err(
                        "set_buffers",
                        format!("buffer {name} has {} values, the network needs {c}", v.len()),
                    ));
                }
                Tensor::from_vec(&self.device, &[c], v.clone())
            };
            st.running[i] = (find(format!("bn{i}.running_mean"))?, find(format!("bn{i}.running_var"))?);
        }
        st.eval_stats = None;
        Ok(())
    }

    /// Eval-mode statistics of BatchNorm layer `index` on `device` (rebuilt when the running
    /// statistics changed or the device differs).
    fn eval_stats(&self, index: usize, device: &Device) -> Result<RunningStats> {
        let mut st = self.state.borrow_mut();
        let stale = match &st.eval_stats {
            Some(all) => !all[index].mean.device().same(device),
            None => true,
        };
        if stale {
            let mut all = Vec::new();
            for (i, (m, v)) in st.running.iter().enumerate() {
                let eps = self.bn_eps[i];
                let invstd: Vec<f32> = v.to_vec()?.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                let c = invstd.len();
                all.push(RunningStats {
                    mean: m.to_device(device)?,
                    var: v.to_device(device)?,
                    invstd: Tensor::from_vec(device, &[c], invstd)?,
                    zeros: Tensor::zeros(device, &[c])?,
                    eps,
                });
            }
            st.eval_stats = Some(all);
        }
        Ok(st.eval_stats.as_ref().unwrap()[index].clone())
    }
}

impl Model for Network {
    fn param_shapes(&self) -> Vec<Vec<usize>> {
        self.shapes.clone()
    }

    fn forward(&self, tape: &mut Tape, p: &[Var], x: Var) -> Result<Var> {
        let (train, seed) = {
            let st = self.state.borrow();
            (st.train, st.dropout_seed)
        };
        let batch = tape.value(x).primal.shape()[0];
        let want: Vec<usize> = std::iter::once(batch).chain(self.input).collect();
        let got = tape.value(x).primal.shape().to_vec();
        let mut h = if got == want {
            x
        } else if got.iter().product::<usize>() == want.iter().product::<usize>() && got[0] == batch {
            tape.reshape(x, &want)?
        } else {
            return Err(shape_err(
                "network input",
                format!("{} expects [{batch}, {:?}], got {got:?}", self.spec.name, self.input),
            ));
        };
        for (li, layer) in self.layers.iter().enumerate() {
            h = match layer {
                Layer::Conv { w, b, geometry, relu } => tape.conv2d(h, p[*w], Some(p[*b]), *geometry, *relu)?,
                Layer::Linear { w, b, relu } => tape.linear(h, p[*w], Some(p[*b]), *relu)?,
                Layer::BatchNorm { gamma, beta, index, eps, .. } => {
                    if train {
                        let (y, mean, invstd) = tape.batchnorm_train(h, p[*gamma], p[*beta], *eps)?;
                        let shape = tape.value(h).primal.shape();
                        let count = shape[0] * shape[2..].iter().product::<usize>();
                        self.state.borrow_mut().batch_stats[*index] = Some((mean, invstd, count));
                        y
                    } else {
                        let stats = self.eval_stats(*index, &tape.value(h).primal.device())?;
                        tape.batchnorm_eval(h, p[*gamma], p[*beta], &stats)?
                    }
                }
                Layer::Relu => tape.relu(h)?,
                Layer::MaxPool { kernel, stride } => tape.maxpool2d(h, *kernel, *stride)?,
                Layer::Dropout { p: prob } => {
                    if train && *prob > 0.0 {
                        tape.dropout(h, *prob, seed.wrapping_mul(1000).wrapping_add(li as u64))?
                    } else {
                        h
                    }
                }
                Layer::Flatten => {
                    let n = tape.value(h).primal.numel() / batch.max(1);
                    tape.reshape(h, &[batch, n])?
                }
            };
        }
        Ok(h)
    }
}
