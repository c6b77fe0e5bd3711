//! A pool of storage buffers by size class, so that steady-state steps allocate nothing.
//!
//! The pool never destroys a buffer: a released buffer goes back on its free list with its
//! wgpu buffer and its id ([`GpuBuffer::id`], unique for the pool's lifetime) and is handed out
//! again as is. The bind-group cache (`bind_groups.rs`) relies on this: a bind group cached for
//! an id binds that very wgpu buffer, which stays alive and keeps its size, so after recycling
//! the bind group refers to exactly the memory a fresh one would, now holding the new tensor.

use crate::dtype::DType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Usage of every pooled buffer: bound as storage, copied to and from, and read as the
/// workgroup counts of indirect dispatches (the gated regions' arguments, `gate.rs`).
const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::INDIRECT);

/// Rounds `bytes` up to its size class: 256-byte multiples below 4 KiB, then steps of 1/8 of
/// the next lower power of two (at most 12.5% waste).
pub(crate) fn size_class(bytes: u64) -> u64 {
    if bytes <= 4096 {
        return bytes.div_ceil(256).max(1) * 256;
    }
    let step = (1u64 << (63 - bytes.leading_zeros())) / 8;
    bytes.div_ceil(step) * step
}

/// Free buffers (with their ids) by size class.
pub(crate) struct BufferPool {
    device: wgpu::Device,
    free: Mutex<HashMap<u64, Vec<(u64, wgpu::Buffer)>>>,
    total: Mutex<u64>,
    next_id: AtomicU64,
}

impl BufferPool {
    pub(crate) fn new(device: wgpu::Device) -> Self {
        BufferPool { device, free: Mutex::new(HashMap::new()), total: Mutex::new(0), next_id: AtomicU64::new(1) }
    }

    /// A buffer of at least `bytes` bytes; returns to the pool when the handle drops.
    pub(crate) fn acquire(self: &Arc<Self>, bytes: u64) -> GpuBuffer {
        let class = size_class(bytes);
        let reused = self.free.lock().unwrap().get_mut(&class).and_then(|v| v.pop());
        let (id, buf) = reused.unwrap_or_else(|| {
            *self.total.lock().unwrap() += class;
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: class,
                usage: USAGE,
                mapped_at_creation: false,
            });
            (self.next_id.fetch_add(1, Ordering::Relaxed), buf)
        });
        GpuBuffer { buf: Some(buf), id, class, pool: self.clone() }
    }

    fn release(&self, class: u64, id: u64, buf: wgpu::Buffer) {
        self.free.lock().unwrap().entry(class).or_default().push((id, buf));
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        *self.total.lock().unwrap()
    }
}

/// A pooled device buffer; dropping it returns the buffer to its pool.
pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    id: u64,
    class: u64,
    pool: Arc<BufferPool>,
}

impl GpuBuffer {
    /// The underlying wgpu buffer.
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer taken")
    }

    /// Its allocated size in bytes (the size class, at least what was asked for).
    pub fn capacity(&self) -> u64 {
        self.class
    }

    /// The pool's id of the underlying wgpu buffer: unique among the pool's buffers, and kept
    /// when the buffer is recycled (see the module documentation).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// A byte range of a pooled buffer, as bound to one kernel binding.
#[derive(Debug, Clone, Copy)]
pub struct BufferView<'a> {
    /// The buffer.
    pub buffer: &'a GpuBuffer,
    /// Start in bytes (a multiple of the adapter's storage offset alignment).
    pub offset: u64,
    /// Length in bytes bound (the rest of the buffer for whole-buffer views).
    pub size: u64,
    /// The element type of the tensor it holds, which [`super::GpuContext::dispatch`] checks
    /// against the binding's (f32 unless the family lists it in
    /// [`Family::half`](crate::kernels::Family::half)).
    pub dtype: DType,
}

impl GpuBuffer {
    /// The whole buffer, as f32 storage.
    pub fn view(&self) -> BufferView<'_> {
        BufferView { buffer: self, offset: 0, size: self.class, dtype: DType::F32 }
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.release(self.class, self.id, b);
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.class)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_little_waste() {
        for bytes in [1u64, 255, 256, 257, 4095, 4097, 10_000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c.is_multiple_of(256), "{bytes} -> {c} not 256-aligned");
            assert!((c - bytes) as f64 <= 0.125 * bytes as f64 + 256.0, "{bytes} -> {c}");
        }
    }
}
