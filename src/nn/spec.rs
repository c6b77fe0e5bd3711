//! Architecture specs: the line-based text format of `models/*.txt` (see `models/README.md`).

use crate::error::{Error, Result};
use std::path::Path;

/// One layer of a spec.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// 2-D convolution.
    Conv {
        /// Output channels.
        out: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        pad: usize,
    },
    /// Dense layer; `out = None` means "the data set's class count".
    Linear {
        /// Output features (None: classes).
        out: Option<usize>,
    },
    /// Batch normalisation.
    BatchNorm {
        /// Variance epsilon.
        eps: f32,
        /// Running-statistics momentum.
        momentum: f32,
    },
    /// ReLU.
    Relu,
    /// Max pooling.
    MaxPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Inverted dropout.
    Dropout {
        /// Drop probability.
        p: f32,
    },
    /// `[N, C, H, W]` → `[N, C·H·W]`.
    Flatten,
}

/// A parsed spec: name, optional declared input shape, layers, and the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Model name.
    pub name: String,
    /// Declared input `(C, H, W)`, if any.
    pub input: Option<[usize; 3]>,
    /// Layers from input to logits.
    pub layers: Vec<LayerSpec>,
    /// The spec text (stored in checkpoints).
    pub text: String,
}

/// Specs shipped in `models/`, compiled into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("lenet-300-100", include_str!("../../models/lenet-300-100.txt")),
    ("mlp-2x400", include_str!("../../models/mlp-2x400.txt")),
    ("vgg11", include_str!("../../models/vgg11.txt")),
    ("vgg11-bn", include_str!("../../models/vgg11-bn.txt")),
    ("vgg16", include_str!("../../models/vgg16.txt")),
    ("vgg16-bn", include_str!("../../models/vgg16-bn.txt")),
];

/// The largest width multiplier `NAME@W` accepts.
pub const MAX_WIDTH: f64 = 64.0;

/// Loads `--model NAME_OR_PATH[@WIDTH]`: an existing file path, else a built-in spec by name;
/// a suffix `@WIDTH` (e.g. `vgg11-bn@0.25`) scales the spec's widths with [`Spec::at_width`]
/// (the name shows the multiplier as a number: `vgg11-bn@.5` is `vgg11-bn@0.5`).
pub fn load(name_or_path: &str) -> Result<Spec> {
    if !Path::new(name_or_path).is_file() {
        if let Some((base, width)) = name_or_path.rsplit_once('@') {
            let multiplier = width.parse::<f64>().ok().filter(|w| *w > 0.0 && *w <= MAX_WIDTH).ok_or_else(|| {
                Error::Invalid(format!(
                    "model `{name_or_path}` is not a file, and the width after `@` must be a positive number \
                     up to {MAX_WIDTH} (e.g. `{base}@0.25`), got `{width}`"
                ))
            })?;
            return load_unscaled(base)?.at_width(multiplier);
        }
    }
    load_unscaled(name_or_path)
}

/// [`load`] without the width suffix.
fn load_unscaled(name_or_path: &str) -> Result<Spec> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        return parse(&text, &path.display().to_string(), stem);
    }
    match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        Some((n, text)) => parse(text, &format!("models/{n}.txt"), n),
        None => Err(Error::Invalid(format!(
            "unknown model `{name_or_path}`: not a file, and not one of {}",
            BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Parses spec `text`; `origin` names it in errors (`file:line: …`), `default_name` is used
/// without a `name` line.
pub fn parse(text: &str, origin: &str, default_name: &str) -> Result<Spec> {
    let mut name = default_name.to_string();
    let mut input = None;
    let mut layers = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| Error::Invalid(format!("{origin}:{}: {msg}", i + 1));
        let mut words = line.split_whitespace();
        let head = words.next().unwrap();
        let mut positional = Vec::new();
        let mut named = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => named.push((k, v)),
                None => positional.push(w),
            }
        }
        let num = |s: &str, what: &str| -> Result<usize> {
            s.parse::<usize>().map_err(|_| err(format!("{what} must be a non-negative integer, got `{s}`")))
        };
        let real = |s: &str, what: &str| -> Result<f32> {
            s.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(format!("{what} must be a number, got `{s}`")))
        };
        let arity = |min: usize, max: usize| -> Result<()> {
            if positional.len() < min || positional.len() > max {
                Err(err(format!("`{head}` takes {min}..={max} values, got {}", positional.len())))
            } else {
                Ok(())
            }
        };
        let mut option = |key: &str| named.iter().position(|(k, _)| *k == key).map(|i| named.remove(i).1);
        let layer = match head {
            "name" => {
                arity(1, 1)?;
                name = positional[0].to_string();
                None
            }
            "input" => {
                arity(3, 3)?;
                input = Some([num(positional[0], "channels")?, num(positional[1], "height")?, num(positional[2], "width")?]);
                None
            }
            "conv" => {
                arity(2, 2)?;
                let out = num(positional[0], "output channels")?;
                let kernel = num(positional[1], "kernel size")?;
                let stride = option("stride").map(|v| num(v, "stride")).transpose()?.unwrap_or(1);
                let pad = option("pad").map(|v| num(v, "pad")).transpose()?.unwrap_or(0);
                if out == 0 || kernel == 0 || stride == 0 {
                    return Err(err("conv channels, kernel and stride must be at least 1".into()));
                }
                Some(LayerSpec::Conv { out, kernel, stride, pad })
            }
            "linear" => {
                arity(1, 1)?;
                let out = if positional[0] == "classes" { None } else { Some(num(positional[0], "output features")?) };
                if out == Some(0) {
                    return Err(err("linear needs at least 1 output".into()));
                }
                Some(LayerSpec::Linear { out })
            }
            "batchnorm" => {
                arity(0, 0)?;
                let eps = option("eps").map(|v| real(v, "eps")).transpose()?.unwrap_or(1e-5);
                let momentum = option("momentum").map(|v| real(v, "momentum")).transpose()?.unwrap_or(0.1);
                Some(LayerSpec::BatchNorm { eps, momentum })
            }
            "relu" => {
                arity(0, 0)?;
                Some(LayerSpec::Relu)
            }
            "flatten" => {
                arity(0, 0)?;
                Some(LayerSpec::Flatten)
            }
            "maxpool" => {
                arity(1, 1)?;
                let kernel = num(positional[0], "window")?;
                let stride = option("stride").map(|v| num(v, "stride")).transpose()?.unwrap_or(kernel);
                if kernel == 0 || stride == 0 {
                    return Err(err("maxpool window and stride must be at least 1".into()));
                }
                Some(LayerSpec::MaxPool { kernel, stride })
            }
            "dropout" => {
                arity(1, 1)?;
                let p = real(positional[0], "dropout probability")?;
                if !(0.0..1.0).contains(&p) {
                    return Err(err(format!("dropout probability must be in [0, 1), got {p}")));
                }
                Some(LayerSpec::Dropout { p })
            }
            other => return Err(err(format!("unknown layer `{other}` (known: conv, linear, batchnorm, relu, maxpool, dropout, flatten, name, input)"))),
        };
        if let Some((k, _)) = named.first() {
            return Err(err(format!("unknown option `{k}` for `{head}`")));
        }
        layers.extend(layer);
    }
    if layers.is_empty() {
        return Err(Error::Invalid(format!("{origin}: the spec has no layers")));
    }
    Ok(Spec { name, input, layers, text: text.to_string() })
}

impl Spec {
    /// The same architecture with every width scaled by `multiplier`: the output channels of
    /// each conv and the output features of each linear layer except the class layer become
    /// `max(1, round(width · multiplier))`. The result is named `NAME@LABEL` and its text is the
    /// scaled spec written out in full (see [`Spec::render`]), so a checkpoint rebuilds it
    /// without knowing the multiplier. `multiplier` is in `(0, MAX_WIDTH]`.
    pub fn at_width(&self, multiplier: f64) -> Result<Spec> {
        if !(multiplier > 0.0 && multiplier <= MAX_WIDTH) {
            return Err(Error::Invalid(format!("width multiplier must be in (0, {MAX_WIDTH}], got {multiplier}")));
        }
        let scale = |w: usize| ((w as f64 * multiplier).round() as usize).max(1);
        let layers = self
            .layers
            .iter()
            .map(|l| match *l {
                LayerSpec::Conv { out, kernel, stride, pad } => {
                    LayerSpec::Conv { out: scale(out), kernel, stride, pad }
                }
                LayerSpec::Linear { out } => LayerSpec::Linear { out: out.map(scale) },
                ref other => other.clone(),
            })
            .collect();
        let mut scaled =
            Spec { name: format!("{}@{multiplier}", self.name), input: self.input, layers, text: String::new() };
        scaled.text = scaled.render();
        Ok(scaled)
    }

    /// The spec in the text format of `models/` (name, input, one layer per line), which
    /// [`parse`] reads back to the same spec (whitespace in the name becomes `_`).
    pub fn render(&self) -> String {
        let mut lines = vec![format!("name {}", self.name.split_whitespace().collect::<Vec<_>>().join("_"))];
        if let Some([c, h, w]) = self.input {
            lines.push(format!("input {c} {h} {w}"));
        }
        for layer in &self.layers {
            lines.push(match *layer {
                LayerSpec::Conv { out, kernel, stride, pad } => {
                    format!("conv {out} {kernel} stride={stride} pad={pad}")
                }
                LayerSpec::Linear { out: Some(out) } => format!("linear {out}"),
                LayerSpec::Linear { out: None } => "linear classes".to_string(),
                LayerSpec::BatchNorm { eps, momentum } => format!("batchnorm eps={eps:e} momentum={momentum:e}"),
                LayerSpec::Relu => "relu".to_string(),
                LayerSpec::MaxPool { kernel, stride } => format!("maxpool {kernel} stride={stride}"),
                LayerSpec::Dropout { p } => format!("dropout {p:e}"),
                LayerSpec::Flatten => "flatten".to_string(),
            });
        }
        lines.join("\n") + "\n"
    }
}
