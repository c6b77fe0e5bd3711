//! Adapter choice: the adapters of the system, their class (which kernel variants run), the
//! options a device is created with, and the environment variables that override them.

use crate::error::{Error, Result};

/// Broad kind of adapter, used to choose kernel variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterClass {
    /// A CPU-emulated driver such as lavapipe/llvmpipe: register tiles win, workgroup memory loses.
    Software,
    /// A hardware GPU (discrete, integrated or virtual).
    Hardware,
}

impl AdapterClass {
    /// The class of the adapter, or the one `GEOPATH_ADAPTER_PROFILE` forces (`hardware`,
    /// `software`; `native` or unset: the adapter's own), so that the kernel variants of a
    /// hardware GPU run, and are tested, on a software driver too. An unknown value is an error.
    pub fn of(info: &wgpu::AdapterInfo) -> Result<AdapterClass> {
        let native = if is_software(info.device_type) { AdapterClass::Software } else { AdapterClass::Hardware };
        match std::env::var(PROFILE_VAR).as_deref() {
            Err(_) | Ok("") | Ok("native") => Ok(native),
            Ok("hardware") => Ok(AdapterClass::Hardware),
            Ok("software") => Ok(AdapterClass::Software),
            Ok(other) => Err(Error::Invalid(format!(
                "{PROFILE_VAR}={other}: unknown adapter profile (native, hardware, software)"
            ))),
        }
    }
}

/// The environment variable that forces the kernel variants of an adapter class.
pub const PROFILE_VAR: &str = "GEOPATH_ADAPTER_PROFILE";

/// The environment variable that, set to `1`, compiles every kernel with wgpu's full runtime
/// checks (the tests set it); unset, `0` or empty, the families whose indexing is bounded by
/// construction ([`crate::kernels::Family::trusted`]) compile without them.
pub const CHECKED_SHADERS_VAR: &str = "GEOPATH_CHECKED_SHADERS";

/// Whether [`CHECKED_SHADERS_VAR`] asks for checked shader modules everywhere; any value other
/// than `1`, `0` or empty is an error.
pub fn checked_shaders_forced() -> Result<bool> {
    match std::env::var(CHECKED_SHADERS_VAR).as_deref() {
        Err(_) | Ok("") | Ok("0") => Ok(false),
        Ok("1") => Ok(true),
        Ok(other) => Err(Error::Invalid(format!("{CHECKED_SHADERS_VAR}={other}: expected 1 or 0"))),
    }
}

/// Which device `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU when there is one, otherwise the native CPU backend; a software Vulkan
    /// driver (lavapipe) is never picked here: the CPU backend is several times faster.
    Auto,
    /// Any wgpu adapter, hardware before software (lavapipe included); an error if there is none.
    Gpu,
    /// The native CPU backend (GEMM crate, threads).
    Cpu,
    /// The plain-Rust reference loops (the tests' oracle; slow).
    Reference,
}

/// Whether an adapter of this type is a CPU emulation (lavapipe/llvmpipe, WARP, SwiftShader).
pub fn is_software(t: wgpu::DeviceType) -> bool {
    t == wgpu::DeviceType::Cpu
}

/// Every wgpu adapter of the system, hardware first, software last.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| adapter_rank(a.get_info().device_type));
    adapters
}

/// Orders adapters: hardware first, software last.
fn adapter_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Choices made when a device is created.
#[derive(Debug, Clone, Copy)]
pub struct ContextOptions {
    /// Enable subgroup operations where the adapter offers them (default); off, every kernel
    /// takes its subgroup-free variant.
    pub subgroups: bool,
    /// The class whose kernel variants run, whatever the adapter (None: [`AdapterClass::of`]).
    pub class: Option<AdapterClass>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions { subgroups: true, class: None }
    }
}
