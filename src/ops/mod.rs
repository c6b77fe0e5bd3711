//! Tensor ops: one module per kernel family. Each op checks shapes and devices, then runs the
//! host implementation (the CPU backend `crate::cpu`, or the reference loops
//! `crate::reference`) or records its WGSL kernel (`kernels/<family>.wgsl`).

pub mod cast;
pub mod cg;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod flat;
pub mod matmul;
mod matmul_f16;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;

use crate::device::{check_same, Device};
use crate::error::Result;
use crate::tensor::Tensor;

/// The host implementation of `<module>::<function>` for the host device `dev`: the CPU
/// backend's (`crate::cpu`) or the reference loops' (`crate::reference`), which share
/// signatures.
macro_rules! host_impl {
    ($dev:expr, $module:ident :: $f:ident) => {
        if matches!($dev, crate::device::Device::Cpu) {
            crate::cpu::$module::$f
        } else {
            crate::reference::$module::$f
        }
    };
}
pub(crate) use host_impl;

/// Workgroup counts for `n` invocations in workgroups of `size` (`ELEMENT_WG` or `LANE_WG` of
/// [`crate::kernels`], which `flat_index` and `lane` of `kernels/include/index.wgsl` assume),
/// split over x and y so that neither exceeds 65535.
pub(crate) fn groups_1d(n: usize, size: u32) -> [u32; 3] {
    let groups = n.div_ceil(size as usize).max(1);
    let x = groups.min(65_535);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

/// The device shared by all operands of `op`, or a device-mismatch error.
pub(crate) fn common_device(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let dev = tensors[0].device();
    let others: Vec<Device> = tensors[1..].iter().map(|t| t.device()).collect();
    check_same(op, &dev, &others.iter().collect::<Vec<_>>())?;
    Ok(dev)
}

/// The device buffer range of a GPU tensor (callers have checked the device).
pub(crate) fn buf(t: &Tensor) -> crate::gpu::BufferView<'_> {
    t.buffer().expect("GPU op on a CPU tensor").0
}
