//! Bind groups, created once per set of storage bindings and cached.
//!
//! The uniform parameters are bound with a dynamic offset (`has_dynamic_offset`, see
//! `pipelines.rs`): one bind group serves every slot of the uniform ring, so a bind group is
//! named by its layout and its storage bindings alone: (pool id, offset, size) of each buffer.
//!
//! Why a cached bind group never binds the wrong memory: ids are the buffer pool's, unique for
//! the pool's lifetime, and the pool never destroys a buffer, it recycles it with its id and its
//! wgpu buffer (`pool.rs`). A key therefore always names the same wgpu buffer ranges, and the
//! cached bind group holds exactly the ranges a freshly created one would; what a recycled
//! buffer now contains is the new tensor's data, read through the same binding. (Were the pool
//! ever to destroy buffers, it would have to clear this cache, or retire the ids, first.)
//!
//! The cache is bounded: past [`MAX_ENTRIES`] bind groups it is emptied and refills with what
//! runs next (steady-state training steps bind a few hundred distinct sets).

use super::BufferView;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

/// Bind groups kept before the cache is emptied.
pub const MAX_ENTRIES: usize = 4096;
/// Storage bindings a family may declare (reads plus writes): the widest, norm, has 9.
const MAX_STORAGE: usize = 9;

/// One storage binding: pool id of the buffer, offset and size in bytes.
type Binding = (u64, u64, u64);

/// Names a bind group: its layout (read-only and read-write binding counts) and its bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    reads: u32,
    writes: u32,
    storage: [Binding; MAX_STORAGE],
}

/// The cache of one device.
pub(crate) struct BindGroupCache {
    groups: Mutex<HashMap<Key, wgpu::BindGroup>>,
    uniforms: wgpu::Buffer,
    uniform_bytes: u64,
}

impl BindGroupCache {
    /// An empty cache whose bind groups bind the first `uniform_bytes` of `uniforms` at a
    /// dynamic offset.
    pub(crate) fn new(uniforms: wgpu::Buffer, uniform_bytes: u64) -> Self {
        BindGroupCache { groups: Mutex::new(HashMap::new()), uniforms, uniform_bytes }
    }

    /// The bind group of `layout` (`reads` + `writes` storage bindings after the uniform)
    /// binding `views`, created on first use; a creation error is reported as a device error
    /// of `op`.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        op: &str,
        layout: &wgpu::BindGroupLayout,
        (reads, writes): (u32, u32),
        views: &[BufferView<'_>],
    ) -> Result<wgpu::BindGroup> {
        assert!(views.len() <= MAX_STORAGE, "{op}: {} storage bindings", views.len());
        let mut storage = [(0, 0, 0); MAX_STORAGE];
        for (slot, v) in storage.iter_mut().zip(views) {
            *slot = (v.buffer.id(), v.offset, v.size);
        }
        let key = Key { reads, writes, storage };
        if let Some(group) = self.groups.lock().unwrap().get(&key) {
            return Ok(group.clone());
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.uniforms,
                offset: 0,
                size: std::num::NonZeroU64::new(self.uniform_bytes),
            }),
        }];
        for (i, v) in views.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: v.buffer.raw(),
                    offset: v.offset,
                    size: std::num::NonZeroU64::new(v.size),
                }),
            });
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device { op: op.to_string(), message: e.to_string() });
        }
        let mut groups = self.groups.lock().unwrap();
        if groups.len() >= MAX_ENTRIES {
            groups.clear();
        }
        groups.insert(key, group.clone());
        Ok(group)
    }

    /// Bind groups held.
    pub(crate) fn len(&self) -> usize {
        self.groups.lock().unwrap().len()
    }
}
