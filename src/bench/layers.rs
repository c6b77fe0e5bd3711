//! The benchmarks of a GPU check: matrix products of 4096³ in each layout, and every
//! convolution layer of a model (forward, data gradient, weight gradient) at a batch.

use super::{result, seeded, stored, suffix, time_median, BenchResult};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::nn::spec::{self, LayerSpec};
use crate::ops::cast::holds_f16;
use crate::ops::conv::{conv2d, conv2d_backward_data, conv2d_backward_weight, Conv2dGeometry};
use crate::ops::matmul::{matmul_ex, MatmulOpts};

/// Side of the large matrix products.
pub const LARGE: usize = 4096;

/// `C = op(A) op(B)` at 4096³ in the layout `layout` (`nn`, `tn`, `nt`), the operands in
/// `dtype` storage.
pub fn matmul_large(device: &Device, layout: &str, dtype: DType, name: &str) -> Result<BenchResult> {
    let (trans_a, trans_b) = match layout {
        "tn" => (true, false),
        "nt" => (false, true),
        _ => (false, false),
    };
    let a = stored(seeded(device, &[LARGE, LARGE], 1)?, dtype)?;
    let b = stored(seeded(device, &[LARGE, LARGE], 2)?, dtype)?;
    let m = time_median(
        device,
        || {
            let c = matmul_ex(&a, &b, MatmulOpts { trans_a, trans_b, ..Default::default() })?;
            device.sync()?;
            drop(c);
            Ok(())
        },
        1,
        3,
        2.0,
    )?;
    let shape = format!("{LARGE}x{LARGE}x{LARGE} {}{}", layout.to_uppercase(), suffix(dtype));
    Ok(result(name, shape, m))
}

/// One convolution layer of a model.
#[derive(Debug, Clone, Copy)]
pub struct ConvLayer {
    /// Its input `[C, H, W]`.
    pub input: [usize; 3],
    /// Output channels.
    pub out: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride and padding.
    pub geometry: Conv2dGeometry,
}

/// The convolution layers of `model` on CIFAR-shaped `[3, 32, 32]` inputs, in order.
pub fn conv_layers(model: &str) -> Result<Vec<ConvLayer>> {
    let spec = spec::load(model)?;
    let mut shape = [3usize, 32, 32];
    let mut layers = Vec::new();
    for layer in &spec.layers {
        match *layer {
            LayerSpec::Conv { out, kernel, stride, pad } => {
                let geometry = Conv2dGeometry { stride, pad };
                layers.push(ConvLayer { input: shape, out, kernel, geometry });
                let side = |s: usize| (s + 2 * pad - kernel) / stride + 1;
                shape = [out, side(shape[1]), side(shape[2])];
            }
            LayerSpec::MaxPool { kernel, stride } => {
                let side = |s: usize| (s - kernel) / stride + 1;
                shape = [shape[0], side(shape[1]), side(shape[2])];
            }
            LayerSpec::Linear { .. } | LayerSpec::Flatten => break,
            _ => {}
        }
    }
    Ok(layers)
}

/// One timed pass of a benchmark.
type Pass<'a> = Box<dyn Fn() -> Result<()> + 'a>;

/// Every convolution layer of `model` at `batch`: three results each (`conv-fwd`,
/// `conv-data`, `conv-weight`), and `conv-fwd-f16` on adapters with `SHADER_F16`, the shape
/// naming the layer.
pub fn conv_layer_benches(device: &Device, model: &str, batch: usize) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    for (i, l) in conv_layers(model)?.iter().enumerate() {
        let [c, h, w] = l.input;
        let x = seeded(device, &[batch, c, h, w], 3)?;
        let wt = seeded(device, &[l.out, c, l.kernel, l.kernel], 4)?;
        let y = conv2d(&x, &wt, None, l.geometry, false)?;
        let gy = seeded(device, y.shape(), 5)?;
        let shape = format!("{model} conv {}: {c}→{} {h}x{w} batch {batch}", i + 1, l.out);
        let half = if holds_f16(device) { Some((x.to_f16()?, wt.to_f16()?)) } else { None };
        let mut runs: Vec<(&str, Pass<'_>)> = vec![
            ("conv-fwd", Box::new(|| conv2d(&x, &wt, None, l.geometry, false).map(drop))),
            ("conv-data", Box::new(|| conv2d_backward_data(&gy, &wt, x.shape(), l.geometry).map(drop))),
            ("conv-weight", Box::new(|| conv2d_backward_weight(&x, &gy, wt.shape(), l.geometry).map(drop))),
        ];
        // The forward on f16 operands (f32 accumulation) where the adapter holds f16.
        if let Some((x16, w16)) = &half {
            runs.push(("conv-fwd-f16", Box::new(move || conv2d(x16, w16, None, l.geometry, false).map(drop))));
        }
        for (name, run) in runs {
            let m = time_median(
                device,
                || {
                    run()?;
                    device.sync()
                },
                1,
                3,
                1.0,
            )?;
            out.push(result(name, shape.clone(), m));
        }
    }
    Ok(out)
}
