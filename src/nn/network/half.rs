//! Mixed-precision inference (`geopath eval --precision f16`): the weights of every
//! convolution and dense layer, and each such layer's input, in f16 storage; products
//! accumulated in f32 into f32 outputs; biases, BatchNorm (running statistics), ReLU, pooling
//! and the logits in f32. GPU adapters with `SHADER_F16` only.

use super::{Layer, Network};
use crate::error::Result;
use crate::ops::matmul::{matmul_ex, MatmulOpts};
use crate::ops::{conv, elementwise as ew, norm, pool};
use crate::tensor::Tensor;

/// A network's parameters for [`Network::logits_f16`]: convolution and dense weights in f16
/// storage, the rest in f32.
pub struct HalfParams {
    params: Vec<Tensor>,
}

impl Network {
    /// `params` (the flat f32 vector) split per tensor, the convolution and dense weights cast
    /// to f16 (rounded to nearest). Errors off a GPU adapter with `SHADER_F16`.
    pub fn half_params(&self, params: &Tensor) -> Result<HalfParams> {
        let mut pieces = ew::split(params, &self.shapes)?;
        for layer in &self.layers {
            if let Layer::Conv { w, .. } | Layer::Linear { w, .. } = layer {
                pieces[*w] = pieces[*w].to_f16()?;
            }
        }
        Ok(HalfParams { params: pieces })
    }

    /// Eval-mode logits `[N, classes]` (f32) of `x` (`[N, C, H, W]` or flattened, f32) with
    /// [`HalfParams`]: each convolution and dense layer casts its input to f16 and multiplies
    /// with f32 accumulation; every other layer runs in f32 as in eval mode.
    pub fn logits_f16(&self, half: &HalfParams, x: &Tensor) -> Result<Tensor> {
        let p = &half.params;
        let batch = x.shape().first().copied().unwrap_or(0);
        let mut h = x.reshape(&[batch, self.input[0], self.input[1], self.input[2]])?;
        for layer in &self.layers {
            h = match layer {
                Layer::Conv { w, b, geometry, relu } => {
                    conv::conv2d(&h.to_f16()?, &p[*w], Some(&p[*b]), *geometry, *relu)?
                }
                Layer::Linear { w, b, relu } => matmul_ex(
                    &h.to_f16()?,
                    &p[*w],
                    MatmulOpts { bias: Some(&p[*b]), relu: *relu, ..Default::default() },
                )?,
                Layer::BatchNorm { gamma, beta, index, .. } => {
                    let s = self.eval_stats(*index, &h.device())?;
                    norm::batchnorm_eval(&h, &p[*gamma], &p[*beta], &s.mean, &s.var, s.eps)?
                }
                Layer::Relu => ew::relu(&h)?,
                Layer::MaxPool { kernel, stride } => pool::maxpool2d(&h, *kernel, *stride)?.0,
                Layer::Dropout { .. } => h,
                Layer::Flatten => {
                    let n = h.numel() / batch.max(1);
                    h.reshape(&[batch, n])?
                }
            };
        }
        Ok(h)
    }
}
