//! A dense row-major tensor of 32-bit words (f32 values, or u32 labels/indices stored bitwise)
//! on a [`Device`]; on a GPU with `SHADER_F16`, optionally of f16 values, two per word
//! ([`DType`]).

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{shape_err, Result};
use crate::gpu::{BufferView, GpuBuffer, GpuContext};
use std::sync::Arc;

#[derive(Clone)]
enum Storage {
    /// Host memory, of the native CPU backend or (`reference`) of the reference loops.
    Host { data: Arc<Vec<f32>>, reference: bool },
    /// A buffer, its device, the byte offset where this tensor starts in it, and the element
    /// type of its words.
    Gpu(Arc<GpuBuffer>, Arc<GpuContext>, u64, DType),
}

/// An immutable dense tensor; clones share storage.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl Tensor {
    /// Uploads `data` with `shape` to `device`; errors when the sizes disagree.
    pub fn from_vec(device: &Device, shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(shape_err("from_vec", format!("shape {shape:?} has {n} elements, data has {}", data.len())));
        }
        let storage = match device {
            Device::Cpu => Storage::Host { data: Arc::new(data), reference: false },
            Device::Reference => Storage::Host { data: Arc::new(data), reference: true },
            Device::Gpu(ctx) => {
                let buf = ctx.upload("from_vec", bytemuck::cast_slice(&data))?;
                Storage::Gpu(Arc::new(buf), ctx.clone(), 0, DType::F32)
            }
        };
        Ok(Tensor { shape: shape.to_vec(), storage })
    }

    /// Uploads 32-bit unsigned integers (labels, indices), stored bitwise.
    pub fn from_u32(device: &Device, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Tensor::from_vec(device, shape, data.iter().map(|&u| f32::from_bits(u)).collect())
    }

    /// A tensor of zeros.
    pub fn zeros(device: &Device, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(device, shape, vec![0.0; shape.iter().product()])
    }

    /// A tensor filled with `value`.
    pub fn full(device: &Device, shape: &[usize], value: f32) -> Result<Tensor> {
        Tensor::from_vec(device, shape, vec![value; shape.iter().product()])
    }

    /// Wraps host data an op computed on `device`, a host device (CPU backend or reference).
    pub(crate) fn host_result(device: &Device, shape: &[usize], data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        let reference = match device {
            Device::Reference => true,
            Device::Cpu => false,
            Device::Gpu(_) => unreachable!("host_result on a GPU device"),
        };
        Tensor { shape: shape.to_vec(), storage: Storage::Host { data: Arc::new(data), reference } }
    }

    /// An uninitialised device tensor for an op's output; checks the binding limit first.
    pub(crate) fn gpu_uninit(ctx: &Arc<GpuContext>, op: &'static str, shape: &[usize]) -> Result<Tensor> {
        Tensor::gpu_uninit_of(ctx, op, shape, DType::F32)
    }

    /// [`Tensor::gpu_uninit`] holding `dtype` elements (f16: the element count padded to an
    /// even one in the buffer).
    pub(crate) fn gpu_uninit_of(
        ctx: &Arc<GpuContext>,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let buf = ctx.alloc(op, dtype.bytes(shape.iter().product()))?;
        Ok(Tensor { shape: shape.to_vec(), storage: Storage::Gpu(Arc::new(buf), ctx.clone(), 0, dtype) })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The element type of its storage: f32 unless made by [`Tensor::to_f16`].
    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Gpu(.., dtype) => *dtype,
            Storage::Host { .. } => DType::F32,
        }
    }

    /// The same values (rounded to nearest, ties to even) in f16 storage, converted on the GPU.
    /// Errors off a GPU adapter with `SHADER_F16`: host devices keep f32 only.
    pub fn to_f16(&self) -> Result<Tensor> {
        crate::ops::cast::to_f16(self)
    }

    /// The device the tensor lives on.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host { reference: true, .. } => Device::Reference,
            Storage::Host { reference: false, .. } => Device::Cpu,
            Storage::Gpu(_, ctx, ..) => Device::Gpu(ctx.clone()),
        }
    }

    /// The data when on a host device (CPU backend or reference).
    pub(crate) fn host(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Host { data, .. } => Some(data),
            Storage::Gpu(..) => None,
        }
    }

    /// The bytes of this tensor in its device buffer, and the context, when on a GPU. A tensor
    /// that owns its buffer binds all of it; a view binds its own range.
    pub(crate) fn buffer(&self) -> Option<(BufferView<'_>, &Arc<GpuContext>)> {
        match &self.storage {
            Storage::Gpu(b, ctx, 0, dtype) => Some((BufferView { dtype: *dtype, ..b.view() }, ctx)),
            Storage::Gpu(b, ctx, offset, dtype) => {
                let bytes = dtype.bytes(self.numel()).div_ceil(16).max(1) * 16;
                let size = bytes.min(b.capacity() - offset);
                Some((BufferView { buffer: b, offset: *offset, size, dtype: *dtype }, ctx))
            }
            Storage::Host { .. } => None,
        }
    }

    /// The elements `[start, start + numel(shape))` as a tensor of `shape` that shares this
    /// tensor's buffer, when the GPU can bind that range (its byte offset is a multiple of the
    /// adapter's storage offset alignment); `None` otherwise, on the CPU device, or in f16.
    pub(crate) fn gpu_view(&self, start: usize, shape: &[usize]) -> Option<Tensor> {
        let Storage::Gpu(b, ctx, base, DType::F32) = &self.storage else {
            return None;
        };
        let offset = base + 4 * start as u64;
        let n: usize = shape.iter().product();
        if !offset.is_multiple_of(ctx.offset_alignment()) || start + n > self.numel() || n == 0 {
            return None;
        }
        Some(Tensor { shape: shape.to_vec(), storage: Storage::Gpu(b.clone(), ctx.clone(), offset, DType::F32) })
    }

    /// True when both tensors are the same range of the same device buffer (e.g. a view and a
    /// tensor an op wrote into it).
    pub(crate) fn same_gpu_range(&self, other: &Tensor) -> bool {
        match (&self.storage, &other.storage) {
            (Storage::Gpu(a, _, oa, _), Storage::Gpu(b, _, ob, _)) => {
                Arc::ptr_eq(a, b) && oa == ob && self.numel() == other.numel()
            }
            _ => false,
        }
    }

    /// Copies the values back to the host, as f32 (f16 storage converted exactly).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Host { data, .. } => Ok(data.as_ref().clone()),
            Storage::Gpu(.., dtype) => {
                let (view, ctx) = self.buffer().unwrap();
                let bytes = ctx.read(view, dtype.bytes(self.numel()))?;
                Ok(match dtype {
                    DType::F32 => bytemuck::pod_collect_to_vec(&bytes),
                    DType::F16 => {
                        let halves: Vec<half::f16> = bytemuck::pod_collect_to_vec(&bytes);
                        halves[..self.numel()].iter().map(|h| h.to_f32()).collect()
                    }
                })
            }
        }
    }

    /// Copies 32-bit unsigned integers back to the host.
    pub fn to_u32(&self) -> Result<Vec<u32>> {
        Ok(self.to_vec()?.into_iter().map(f32::to_bits).collect())
    }

    /// The same data with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(shape_err("reshape", format!("cannot reshape {:?} to {shape:?}", self.shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), storage: self.storage.clone() })
    }

    /// Moves (copies) the tensor to another device (f16 storage arrives there as f32).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device().same(device) {
            return Ok(self.clone());
        }
        Tensor::from_vec(device, &self.shape, self.to_vec()?)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dtype() {
            DType::F32 => write!(f, "Tensor({:?} on {})", self.shape, self.device().name()),
            dtype => write!(f, "Tensor({:?} {dtype} on {})", self.shape, self.device().name()),
        }
    }
}
