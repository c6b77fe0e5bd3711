//! Where tensors live: on a wgpu device, or in host memory for the native CPU backend and the
//! plain-Rust reference.

use crate::error::{Error, Result};
use crate::gpu::{self, ContextOptions, DeviceChoice, GpuContext};
use std::sync::Arc;

/// A compute device: the native CPU backend, the plain-Rust reference, or a wgpu adapter.
#[derive(Clone)]
pub enum Device {
    /// The plain-Rust reference loops: the oracle of the tests (`--device reference`).
    Reference,
    /// The native CPU backend ([`crate::cpu`]): GEMM-crate products and threads over
    /// [`crate::cpu::threads`] cores.
    Cpu,
    /// A wgpu device.
    Gpu(Arc<GpuContext>),
}

impl Device {
    /// Opens the device `choice` asks for (see [`DeviceChoice`]). `Auto` says on stderr which
    /// device it took and why.
    pub fn open(choice: DeviceChoice) -> Result<Device> {
        Self::open_with(choice, ContextOptions::default())
    }

    /// [`Device::open`] with a GPU device created with `options`.
    pub fn open_with(choice: DeviceChoice, options: ContextOptions) -> Result<Device> {
        match choice {
            DeviceChoice::Reference => Ok(Device::Reference),
            DeviceChoice::Cpu => {
                crate::cpu::tune_allocator();
                Ok(Device::Cpu)
            }
            DeviceChoice::Gpu => Ok(Device::Gpu(GpuContext::with_options(options)?)),
            DeviceChoice::Auto => {
                let adapters = gpu::adapters();
                let software: Vec<String> = adapters
                    .iter()
                    .map(|a| a.get_info())
                    .filter(|i| gpu::is_software(i.device_type))
                    .map(|i| i.name)
                    .collect();
                match adapters.into_iter().find(|a| !gpu::is_software(a.get_info().device_type)) {
                    Some(adapter) => {
                        let ctx = GpuContext::from_adapter(adapter, options)?;
                        eprintln!("device: {} (hardware GPU)", Device::Gpu(ctx.clone()).name());
                        Ok(Device::Gpu(ctx))
                    }
                    None => {
                        let why = if software.is_empty() {
                            "no wgpu adapter found".to_string()
                        } else {
                            format!(
                                "no hardware GPU; the software adapter {} is slower than native code \
                                 (--device gpu uses it)",
                                software.join(", ")
                            )
                        };
                        eprintln!("device: native CPU backend, {} threads ({why})", crate::cpu::threads());
                        crate::cpu::tune_allocator();
                        Ok(Device::Cpu)
                    }
                }
            }
        }
    }

    /// A short human-readable name.
    pub fn name(&self) -> String {
        match self {
            Device::Reference => "cpu-reference".into(),
            Device::Cpu => format!("cpu ({} threads)", crate::cpu::threads()),
            Device::Gpu(ctx) => format!("{} ({:?})", ctx.info.name, ctx.info.backend),
        }
    }

    /// The GPU context, if this is a GPU device.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        match self {
            Device::Gpu(c) => Some(c),
            Device::Reference | Device::Cpu => None,
        }
    }

    /// Waits for all submitted GPU work (no-op on the host devices).
    pub fn sync(&self) -> Result<()> {
        match self {
            Device::Gpu(c) => c.sync(),
            Device::Reference | Device::Cpu => Ok(()),
        }
    }

    /// True when both handles name the same device.
    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Reference, Device::Reference) | (Device::Cpu, Device::Cpu) => true,
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
