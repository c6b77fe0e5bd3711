//! The wgpu runtime: adapter selection, one device with the adapter's own limits, a pipeline
//! cache, a bind-group cache, a buffer pool, batched command recording and the one readback
//! path.
//!
//! Every op records its dispatch through [`GpuContext::dispatch`]; dispatches collect in a
//! batch that is encoded as one compute pass and submitted every [`FLUSH_EVERY`] dispatches or
//! when a result is read back, so ops never wait on the GPU one by one (`batch.rs`).

mod adapter;
mod batch;
mod bind_groups;
mod gate;
mod pipelines;
mod pool;
mod timing;

pub use adapter::{
    adapters, checked_shaders_forced, is_software, AdapterClass, ContextOptions, DeviceChoice, CHECKED_SHADERS_VAR,
    PROFILE_VAR,
};
pub use bind_groups::MAX_ENTRIES as MAX_CACHED_BIND_GROUPS;
pub use pipelines::KernelKey;
pub use pool::{BufferView, GpuBuffer};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::KernelParams;
use batch::Batch;
use bind_groups::BindGroupCache;
use pipelines::PipelineCache;
use pool::BufferPool;
use std::sync::{Arc, Mutex};

/// Dispatches recorded before the batch is submitted.
pub const FLUSH_EVERY: u32 = 48;
/// Bytes of uniform parameters one dispatch may pass; also the size of the uniform binding,
/// which a dynamic offset moves to each dispatch's slot.
pub const MAX_PARAM_BYTES: usize = 256;
const UNIFORM_RING_BYTES: u64 = 256 * 1024;

/// Bytes of the uniform slot a dispatch with `param_bytes` of parameters fills: at least 64,
/// a multiple of 16 (the parameters, then zeros), before rounding up to the device's uniform
/// offset alignment.
pub fn uniform_binding_bytes(param_bytes: usize) -> usize {
    param_bytes.max(64).div_ceil(16) * 16
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
    /// Whether every kernel runs with wgpu's runtime checks ([`CHECKED_SHADERS_VAR`] set when
    /// the device was created); otherwise the trusted families run without them.
    pub checked_shaders: bool,
    pipelines: PipelineCache,
    bind_groups: BindGroupCache,
    pool: Arc<BufferPool>,
    batch: Mutex<Batch>,
    uniforms: wgpu::Buffer,
    uniform_align: usize,
    dummy_read: GpuBuffer,
    dummy_write: GpuBuffer,
    readbacks: std::sync::atomic::AtomicU64,
    gate_buffers: std::sync::OnceLock<gate::GateBuffers>,
    /// Held while a thread records a gated region (one region at a time per context).
    gate_lock: Mutex<()>,
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
        let class = match options.class {
            Some(c) => c,
            None => AdapterClass::of(&info)?,
        };
        let checked_shaders = checked_shaders_forced()?;
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
            pipelines: PipelineCache::new(checked_shaders),
            bind_groups: BindGroupCache::new(uniforms.clone(), MAX_PARAM_BYTES as u64),
            dummy_read: pool.acquire(256),
            dummy_write: pool.acquire(256),
            readbacks: std::sync::atomic::AtomicU64::new(0),
            gate_buffers: std::sync::OnceLock::new(),
            gate_lock: Mutex::new(()),
            pool,
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            class,
            lane_sharing,
            checked_shaders,
            batch: Mutex::new(Batch::new()),
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
        self.flush()?;
        if !data.is_empty() {
            self.queue.write_buffer(buf.raw(), 0, data);
        }
        Ok(buf)
    }

    /// Records one compute dispatch of `kernel` with uniform `params`, read-only `inputs` and
    /// read-write `outputs` (bound in that order after the uniform at binding 0). Bindings of
    /// the family that the op leaves out are bound to small dummy buffers. Panics when `P` is
    /// not the parameter struct of the kernel's family. An error may also come from the
    /// submission of the batch recorded before it (see `batch.rs`).
    pub fn dispatch<P: KernelParams>(
        &self,
        op: &str,
        kernel: &KernelKey,
        params: &P,
        inputs: &[BufferView],
        outputs: &[BufferView],
        workgroups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_then(op, kernel, params, inputs, outputs, workgroups, |_| {})
    }

    /// [`GpuContext::dispatch`], then `then` on the batch under the same lock as the recording
    /// (no other thread's dispatch or submission comes between; the gate of a gated region).
    #[allow(clippy::too_many_arguments)]
    fn dispatch_then<P: KernelParams>(
        &self,
        op: &str,
        kernel: &KernelKey,
        params: &P,
        inputs: &[BufferView],
        outputs: &[BufferView],
        workgroups: [u32; 3],
        then: impl FnOnce(&mut Batch),
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
        check_dtypes(op, family, inputs, outputs)?;
        let (pipeline, layout) = self.pipelines.get(&self.device, kernel, family.reads, family.writes)?;
        let reads = (0..family.reads as usize).map(|i| inputs.get(i).copied().unwrap_or(self.dummy_read.view()));
        let writes = (0..family.writes as usize).map(|i| outputs.get(i).copied().unwrap_or(self.dummy_write.view()));
        let views: Vec<BufferView> = reads.chain(writes).collect();
        let bind_group = self.bind_groups.get(&self.device, op, &layout, (family.reads, family.writes), &views)?;
        let slot = uniform_binding_bytes(params.len()).div_ceil(self.uniform_align) * self.uniform_align;
        let mut batch = self.batch.lock().unwrap();
        if batch.is_full() {
            batch.submit(&self.device, &self.queue, &self.uniforms, None)?;
        }
        batch.record(op, pipeline, bind_group, params, slot, workgroups);
        then(&mut batch);
        Ok(())
    }

    /// Submits every recorded dispatch (without waiting for it).
    pub fn flush(&self) -> Result<()> {
        self.batch.lock().unwrap().submit(&self.device, &self.queue, &self.uniforms, None)
    }

    /// Waits until the GPU has finished all submitted work.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device { op: "sync".into(), message: e.to_string() })?;
        Ok(())
    }

    /// Reads `bytes` bytes from the start of `view` back to the host: the one readback path
    /// (each a wait for everything recorded so far; counted by [`GpuContext::readbacks`]).
    pub fn read(&self, view: BufferView, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        self.readbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let size = bytes.div_ceil(4) * 4;
        let staging = self.staging(size);
        let mut copy = |encoder: &mut wgpu::CommandEncoder| {
            encoder.copy_buffer_to_buffer(view.buffer.raw(), view.offset, &staging, 0, size);
        };
        self.batch.lock().unwrap().submit(&self.device, &self.queue, &self.uniforms, Some(&mut copy))?;
        let mut out = self.map_staging(&staging, size)?;
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// A host-mappable buffer of `bytes` bytes to copy results into.
    fn staging(&self, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Waits for the copies into `staging` submitted so far, maps it and returns its first
    /// `bytes` bytes.
    fn map_staging(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let device_err = |e: String| Error::Device { op: "readback".into(), message: e };
        let slice = staging.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| device_err(e.to_string()))?;
        rx.recv().map_err(|e| device_err(e.to_string()))?.map_err(|e| device_err(e.to_string()))?;
        let out = slice.get_mapped_range().map_err(|e| device_err(e.to_string()))?.to_vec();
        staging.unmap();
        Ok(out)
    }

    /// Readbacks so far on this context (host waits on the GPU; for tests of how often a loop
    /// waits).
    pub fn readbacks(&self) -> u64 {
        self.readbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes currently held by the buffer pool (free and in use).
    pub fn pool_bytes(&self) -> u64 {
        self.pool.total_bytes()
    }

    /// Bind groups currently cached (at most [`MAX_CACHED_BIND_GROUPS`]).
    pub fn cached_bind_groups(&self) -> usize {
        self.bind_groups.len()
    }
}

/// Refuses a dispatch of `op` that binds a tensor of another element type than the binding
/// holds ([`crate::kernels::Family::half`]): the one check that keeps every op from misreading
/// f16 words as f32 (or the reverse).
fn check_dtypes(
    op: &str,
    family: &crate::kernels::Family,
    inputs: &[BufferView],
    outputs: &[BufferView],
) -> Result<()> {
    let bindings = (1..).zip(inputs).chain((1 + family.reads..).zip(outputs));
    for (binding, view) in bindings {
        let wanted = if family.half.contains(&binding) { DType::F16 } else { DType::F32 };
        if view.dtype != wanted {
            return Err(Error::Invalid(format!(
                "{op}: does not take {} tensors (binding {binding} of kernels/{}.wgsl holds {wanted}; \
                 f16 storage is read by the matrix products and the forward convolution only)",
                view.dtype, family.name
            )));
        }
    }
    Ok(())
}
