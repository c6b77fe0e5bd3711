//! Compute pipelines, created once per (kernel family, entry point, specialisation) and cached:
//! pipeline creation costs tens of milliseconds, a dispatch microseconds.
//!
//! Shader modules of the families marked trusted in `kernels/families.rs` are created without
//! wgpu's runtime checks (see [`crate::kernels::Family::trusted`]), unless the cache was made
//! with every module checked (`GEOPATH_CHECKED_SHADERS=1`, as the tests run).

use crate::error::{Error, Result};
use crate::kernels;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Names one compiled kernel: a WGSL family file, an entry point in it, and template
/// substitutions (e.g. tile sizes) applied to the source before compilation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelKey {
    /// File stem under `kernels/` (e.g. `"matmul"`).
    pub family: &'static str,
    /// Entry point in that file.
    pub entry: &'static str,
    /// `(placeholder, value)` pairs substituted in the source.
    pub specialise: Vec<(&'static str, u32)>,
}

impl KernelKey {
    /// A kernel without specialisation.
    pub fn new(family: &'static str, entry: &'static str) -> Self {
        KernelKey { family, entry, specialise: Vec::new() }
    }
}

type Layouts = (wgpu::BindGroupLayout, wgpu::PipelineLayout);
/// A shader module: its family and specialisation.
type ModuleKey = (&'static str, Vec<(&'static str, u32)>);

pub(crate) struct PipelineCache {
    pipelines: Mutex<HashMap<KernelKey, wgpu::ComputePipeline>>,
    modules: Mutex<HashMap<ModuleKey, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<(u32, u32), Arc<Layouts>>>,
    checked: bool,
}

impl PipelineCache {
    /// An empty cache; `checked`: every module with wgpu's runtime checks, trusted or not.
    pub(crate) fn new(checked: bool) -> Self {
        PipelineCache {
            pipelines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            checked,
        }
    }

    /// Bind-group layout: binding 0 a uniform bound at a dynamic offset (one bind group serves
    /// every slot of the uniform ring), then `reads` read-only and `writes` read-write storage
    /// buffers.
    fn layouts(&self, device: &wgpu::Device, reads: u32, writes: u32) -> Arc<Layouts> {
        let mut map = self.layouts.lock().unwrap();
        map.entry((reads, writes))
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                for i in 0..reads + writes {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: i + 1,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: i < reads },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                }
                let bgl = device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: None,
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                Arc::new((bgl, pl))
            })
            .clone()
    }

    /// The pipeline for `key` and its bind-group layout, compiled on first use.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        key: &KernelKey,
        reads: u32,
        writes: u32,
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let layouts = self.layouts(device, reads, writes);
        if let Some(p) = self.pipelines.lock().unwrap().get(key) {
            return Ok((p.clone(), layouts.0.clone()));
        }
        let trusted = !self.checked && kernels::family(key.family).trusted;
        let device_err =
            |message: String| Error::Device { op: format!("compile {}::{}", key.family, key.entry), message };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry((key.family, key.specialise.clone()))
                .or_insert_with(|| {
                    let src = kernels::specialised_source(key.family, &key.specialise);
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(key.family),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    };
                    if trusted {
                        // SAFETY: the family is marked trusted in kernels/families.rs only where
                        // its WGSL bounds every index by construction, every loop by a trip
                        // count from its parameters, and divides only by constants or by
                        // parameters that a bounds guard proves non-zero (the conditions of
                        // `ShaderRuntimeChecks::unchecked`, see `Family::trusted`).
                        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
                    } else {
                        device.create_shader_module(desc)
                    }
                })
                .clone()
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: Some(&layouts.1),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.modules.lock().unwrap().remove(&(key.family, key.specialise.clone()));
            return Err(device_err(e.to_string()));
        }
        self.pipelines.lock().unwrap().insert(key.clone(), pipeline.clone());
        Ok((pipeline, layouts.0.clone()))
    }
}
