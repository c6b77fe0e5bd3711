//! The wgpu runtime: adapter selection, one device with the adapter's own limits, a pipeline
//! cache, a buffer pool, batched command recording and the one readback path.
//!
//! Every op records its dispatch through [`GpuContext::dispatch`]; dispatches collect in one
//! command encoder that is submitted every [`FLUSH_EVERY`] dispatches or when a result is read
//! back, so ops never wait on the GPU one by one.

mod pipelines;
mod pool;

pub use pipelines::KernelKey;
pub use pool::{BufferView, GpuBuffer};

use crate::error::{Error, Result};
use crate::kernels::KernelParams;
use pipelines::PipelineCache;
use pool::BufferPool;
use std::sync::{Arc, Mutex};

/// Dispatches recorded before the encoder is submitted.
pub const FLUSH_EVERY: u32 = 48;
/// Bytes of uniform parameters one dispatch may pass.
pub const MAX_PARAM_BYTES: usize = 256;
const UNIFORM_RING_BYTES: u64 = 256 * 1024;

/// Bytes of the uniform binding a dispatch with `param_bytes` of parameters binds: at least 64,
/// a multiple of 16 (the parameters, then zeros).
pub fn uniform_binding_bytes(param_bytes: usize) -> usize {
    param_bytes.max(64).div_ceil(16) * 16
}

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

/// Open commands not yet submitted, and the uniform bytes they refer to.
struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: u32,
    params: Vec<u8>,
}

/// One wgpu device and everything cached for it.
pub struct GpuContext {
    /// The adapter the device was created from.
    pub adapter: wgpu::Adapter,
    /// The logical device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Adapter name, backend, driver, device type.
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    /// The features enabled on the device.
    pub features: wgpu::Features,
    /// Software or hardware, for kernel-variant choice (the adapter's own unless
    /// [`PROFILE_VAR`] forces one).
    pub class: AdapterClass,
    /// Whether kernels may share loads among the SIMD lanes of a CPU-emulated driver through
    /// subgroup broadcasts: a software adapter whose subgroups are exactly 8 lanes, with the
    /// subgroup feature enabled.
    pub lane_sharing: bool,
    pipelines: PipelineCache,
    pool: Arc<BufferPool>,
    batch: Mutex<Batch>,
    uniforms: wgpu::Buffer,
    uniform_align: usize,
    dummy_read: GpuBuffer,
    dummy_write: GpuBuffer,
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

impl GpuContext {
    /// Finds the best adapter (hardware before software) and creates a device on it.
    pub fn new() -> Result<Arc<GpuContext>> {
        Self::with_options(ContextOptions::default())
    }

    /// [`GpuContext::new`] with `options`.
    pub fn with_options(options: ContextOptions) -> Result<Arc<GpuContext>> {
        let mut adapters = adapters();
        if adapters.is_empty() {
            return Err(Error::NoAdapter(
                "wgpu found no Vulkan/Metal/DX12 adapter (install a GPU driver, or \
                 `apt-get install mesa-vulkan-drivers` for software Vulkan)"
                    .into(),
            ));
        }
        Self::from_adapter(adapters.swap_remove(0), options)
    }

    /// Creates the device on `adapter` with the adapter's own limits.
    pub fn from_adapter(adapter: wgpu::Adapter, options: ContextOptions) -> Result<Arc<GpuContext>> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mut wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16;
        if options.subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("geopath"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::NoAdapter(format!("request_device on {}: {e}", info.name)))?;
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("geopath: uncaptured wgpu error: {e}");
        }));
        let class = match options.class {
            Some(c) => c,
            None => AdapterClass::of(&info)?,
        };
        let lane_sharing = class == AdapterClass::Software
            && features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == 8
            && info.subgroup_max_size == 8;
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: UNIFORM_RING_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let uniform_align = (limits.min_uniform_buffer_offset_alignment as usize).max(16);
        let pool = Arc::new(BufferPool::new(device.clone()));
        Ok(Arc::new(GpuContext {
            pipelines: PipelineCache::new(),
            dummy_read: pool.acquire(256),
            dummy_write: pool.acquire(256),
            pool,
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            class,
            lane_sharing,
            batch: Mutex::new(Batch { encoder: None, dispatches: 0, params: Vec::new() }),
            uniforms,
            uniform_align,
        }))
    }

    /// Byte alignment of a storage binding's offset: views into a buffer start on it.
    pub fn offset_alignment(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment as u64
    }

    /// The largest tensor, in bytes, one storage binding can hold.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// A device buffer of at least `bytes` bytes, from the pool; errors before any dispatch when
    /// the adapter could not bind it.
    pub fn alloc(&self, op: &'static str, bytes: u64) -> Result<GpuBuffer> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge { op, bytes, limit });
        }
        Ok(self.pool.acquire(bytes.max(4)))
    }

    /// Uploads `data` into a fresh pooled buffer.
    pub fn upload(&self, op: &'static str, data: &[u8]) -> Result<GpuBuffer> {
        let buf = self.alloc(op, data.len() as u64)?;
        // A pooled buffer may still be read by recorded, unsubmitted commands: submit those
        // first so that this write lands after them in queue order.
        self.flush();
        if !data.is_empty() {
            self.queue.write_buffer(buf.raw(), 0, data);
        }
        Ok(buf)
    }

    /// Records one compute dispatch of `kernel` with uniform `params`, read-only `inputs` and
    /// read-write `outputs` (bound in that order after the uniform at binding 0). Bindings of
    /// the family that the op leaves out are bound to small dummy buffers. Panics when `P` is
    /// not the parameter struct of the kernel's family.
    pub fn dispatch<P: KernelParams>(
        &self,
        op: &str,
        kernel: &KernelKey,
        params: &P,
        inputs: &[BufferView],
        outputs: &[BufferView],
        workgroups: [u32; 3],
    ) -> Result<()> {
        const { assert!(std::mem::size_of::<P>() <= MAX_PARAM_BYTES, "parameter struct too large") };
        let family = crate::kernels::family(kernel.family);
        assert!(
            family.params.name == P::LAYOUT.name,
            "{op}: family {} takes {}, not {}",
            family.name,
            family.params.name,
            P::LAYOUT.name
        );
        let params = bytemuck::bytes_of(params);
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::TooLarge {
                op: "dispatch",
                bytes: workgroups.iter().map(|&w| w as u64).product(),
                limit: max as u64,
            });
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        assert!(
            inputs.len() <= family.reads as usize && outputs.len() <= family.writes as usize,
            "{op}: too many bindings for family {}",
            family.name
        );
        let (pipeline, layout) = self.pipelines.get(&self.device, kernel, family.reads, family.writes)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut batch = self.batch.lock().unwrap();
        if (batch.params.len() + MAX_PARAM_BYTES) as u64 > UNIFORM_RING_BYTES || batch.dispatches >= FLUSH_EVERY {
            self.submit_locked(&mut batch);
        }
        let offset = batch.params.len();
        let bound = uniform_binding_bytes(params.len());
        batch.params.extend_from_slice(params);
        let padded = offset + bound.div_ceil(self.uniform_align) * self.uniform_align;
        batch.params.resize(padded, 0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.uniforms,
                offset: offset as u64,
                size: std::num::NonZeroU64::new(bound as u64),
            }),
        }];
        let reads = (0..family.reads as usize).map(|i| inputs.get(i).copied().unwrap_or(self.dummy_read.view()));
        let writes = (0..family.writes as usize).map(|i| outputs.get(i).copied().unwrap_or(self.dummy_write.view()));
        for (i, v) in reads.chain(writes).enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: v.buffer.raw(),
                    offset: v.offset,
                    size: std::num::NonZeroU64::new(v.size),
                }),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let encoder = batch
            .encoder
            .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        batch.dispatches += 1;
        drop(batch);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device { op: op.to_string(), message: e.to_string() });
        }
        Ok(())
    }

    /// Submits every recorded dispatch (without waiting for it).
    pub fn flush(&self) {
        let mut batch = self.batch.lock().unwrap();
        self.submit_locked(&mut batch);
    }

    fn submit_locked(&self, batch: &mut Batch) {
        if let Some(encoder) = batch.encoder.take() {
            if !batch.params.is_empty() {
                self.queue.write_buffer(&self.uniforms, 0, &batch.params);
            }
            self.queue.submit([encoder.finish()]);
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        batch.params.clear();
        batch.dispatches = 0;
    }

    /// Waits until the GPU has finished all submitted work.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device { op: "sync".into(), message: e.to_string() })?;
        Ok(())
    }

    /// Reads `bytes` bytes from the start of `view` back to the host: the one readback path.
    pub fn read(&self, view: BufferView, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let size = bytes.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        {
            let mut batch = self.batch.lock().unwrap();
            let encoder = batch.encoder.get_or_insert_with(|| {
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            encoder.copy_buffer_to_buffer(view.buffer.raw(), view.offset, &staging, 0, size);
            self.submit_locked(&mut batch);
        }
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device { op: "readback".into(), message: e.to_string() })?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device { op: "readback".into(), message: e.to_string() });
        }
        let mapped = rx.recv().map_err(|e| Error::Device { op: "readback".into(), message: e.to_string() })?;
        mapped.map_err(|e| Error::Device { op: "readback".into(), message: e.to_string() })?;
        let view =
            slice.get_mapped_range().map_err(|e| Error::Device { op: "readback".into(), message: e.to_string() })?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Bytes currently held by the buffer pool (free and in use).
    pub fn pool_bytes(&self) -> u64 {
        self.pool.total_bytes()
    }
}
