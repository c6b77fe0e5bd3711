//! geopath: weight-space geodesics for neural networks, on a WGSL tensor engine of its own.
//!
//! Layers, bottom to top: [`gpu`] (wgpu runtime), `kernels/*.wgsl` ([`kernels`]), [`cpu`]
//! (reference implementation), [`ops`] (tensor ops on either device), [`autodiff`] (forward,
//! reverse and forward-over-reverse modes), [`nn`] (networks over one flat parameter vector).
#![warn(missing_docs)]

pub mod autodiff;
pub mod bench;
pub mod checkpoint;
pub mod cost;
pub mod cpu;
pub mod data;
pub mod device;
pub mod dtype;
pub mod error;
pub mod experiments;
pub mod geodesic;
pub mod gpu;
pub mod kernels;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod reference;
pub mod report;
pub mod selftest;
pub mod tensor;
pub mod train;

pub use device::Device;
pub use dtype::DType;
pub use error::{Error, Result};
pub use gpu::DeviceChoice;
pub use tensor::Tensor;
