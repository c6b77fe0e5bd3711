//! The element types a tensor's storage may hold.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// 32-bit floats, one per word (or u32 labels stored bitwise): every device, every op.
    #[default]
    F32,
    /// IEEE half floats, two per 32-bit word (the first element in the low half): GPU tensors
    /// on adapters with `SHADER_F16` only ([`crate::Tensor::to_f16`]), read by the matrix
    /// products ([`crate::ops::matmul`]).
    F16,
}

impl DType {
    /// Bytes of `n` elements in a device buffer (f16: rounded up to whole 32-bit words).
    pub fn bytes(self, n: usize) -> u64 {
        match self {
            DType::F32 => 4 * n as u64,
            DType::F16 => 4 * n.div_ceil(2) as u64,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        })
    }
}

/// The storage precision of inference (`geopath eval --precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Convolution and dense weights and their inputs in f16 storage, f32 accumulation
    /// ([`crate::nn::network::HalfParams`]): GPU adapters with `SHADER_F16`.
    F16,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            other => Err(Error::Invalid(format!("unknown precision {other:?} (f32 or f16)"))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}
