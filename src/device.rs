//! Where tensors live: on a wgpu device, or in host memory for the CPU reference.

use crate::error::{Error, Result};
use crate::gpu::{ContextOptions, DeviceChoice, GpuContext};
use std::sync::Arc;

/// A compute device: a wgpu adapter or the plain-Rust CPU reference.
#[derive(Clone)]
pub enum Device {
    /// The CPU reference implementation (the oracle of the tests).
    Cpu,
    /// A wgpu device.
    Gpu(Arc<GpuContext>),
}

impl Device {
    /// Opens the device `choice` asks for. `Auto` falls back to the CPU with a warning on stderr.
    pub fn open(choice: DeviceChoice) -> Result<Device> {
        Self::open_with(choice, ContextOptions::default())
    }

    /// [`Device::open`] with the GPU device created with `options`.
    pub fn open_with(choice: DeviceChoice, options: ContextOptions) -> Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Gpu => Ok(Device::Gpu(GpuContext::with_options(options)?)),
            DeviceChoice::Auto => match GpuContext::with_options(options) {
                Ok(ctx) => Ok(Device::Gpu(ctx)),
                Err(e) => {
                    eprintln!("warning: {e}; falling back to the CPU reference (slow)");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    /// A short human-readable name.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu-reference".into(),
            Device::Gpu(ctx) => format!("{} ({:?})", ctx.info.name, ctx.info.backend),
        }
    }

    /// The GPU context, if this is a GPU device.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        match self {
            Device::Gpu(c) => Some(c),
            Device::Cpu => None,
        }
    }

    /// Waits for all submitted GPU work (no-op on the CPU).
    pub fn sync(&self) -> Result<()> {
        match self {
            Device::Gpu(c) => c.sync(),
            Device::Cpu => Ok(()),
        }
    }

    /// True when both handles name the same device.
    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.name())
    }
}

/// Checks that every tensor of an op lives on `dev`.
pub(crate) fn check_same(op: &'static str, dev: &Device, others: &[&Device]) -> Result<()> {
    if others.iter().all(|d| d.same(dev)) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch(op))
    }
}
