//! GPU time from timestamp queries, for `geopath bench`: while timing, every submitted compute
//! pass (one per batch, `batch.rs`) writes a timestamp at its beginning and at its end, and the
//! GPU time is the sum over passes of end minus beginning (idle gaps between submissions, and
//! readback copies, are not counted). Needs the adapter's `TIMESTAMP_QUERY` feature.

use super::GpuContext;
use crate::error::Result;

/// Passes one timing can hold (two queries each, in one query set of the largest size).
const MAX_PASSES: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

/// The timestamp queries of one timing.
pub(crate) struct Timer {
    queries: wgpu::QuerySet,
    passes: u32,
    overflowed: bool,
}

impl Timer {
    fn new(device: &wgpu::Device) -> Timer {
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * MAX_PASSES,
        });
        Timer { queries, passes: 0, overflowed: false }
    }

    /// The index of the next pass to time, or `None` once the query set is full (the timing
    /// then reports no result).
    pub(crate) fn next_pass(&mut self) -> Option<u32> {
        if self.passes == MAX_PASSES {
            self.overflowed = true;
            return None;
        }
        self.passes += 1;
        Some(self.passes - 1)
    }

    /// The timestamp writes of pass `index`.
    pub(crate) fn writes(&self, index: u32) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * index),
            end_of_pass_write_index: Some(2 * index + 1),
        }
    }
}

impl GpuContext {
    /// Whether the device can time its passes (the adapter has `TIMESTAMP_QUERY`).
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Submits what is recorded, then times every pass submitted until [`GpuContext::stop_timing`];
    /// returns whether it does (false without timestamps).
    pub fn start_timing(&self) -> Result<bool> {
        if !self.has_timestamps() {
            return Ok(false);
        }
        let mut batch = self.batch.lock().unwrap();
        batch.submit(&self.device, &self.queue, &self.uniforms, None)?;
        batch.timer = Some(Timer::new(&self.device));
        Ok(true)
    }

    /// Submits what is recorded, waits for it, and returns the GPU milliseconds of the passes
    /// submitted since [`GpuContext::start_timing`]: `None` when not timing, or when more passes
    /// ran than one timing holds.
    pub fn stop_timing(&self) -> Result<Option<f64>> {
        let mut batch = self.batch.lock().unwrap();
        batch.submit(&self.device, &self.queue, &self.uniforms, None)?;
        let Some(timer) = batch.timer.take() else { return Ok(None) };
        if timer.overflowed {
            return Ok(None);
        }
        if timer.passes == 0 {
            return Ok(Some(0.0));
        }
        let queries = 2 * timer.passes;
        let bytes = u64::from(queries) * u64::from(wgpu::QUERY_SIZE);
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.staging(bytes);
        batch.submit(
            &self.device,
            &self.queue,
            &self.uniforms,
            Some(&mut |encoder: &mut wgpu::CommandEncoder| {
                encoder.resolve_query_set(&timer.queries, 0..queries, &resolved, 0);
                encoder.copy_buffer_to_buffer(&resolved, 0, &staging, 0, bytes);
            }),
        )?;
        drop(batch);
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_staging(&staging, bytes)?);
        let total: u64 = ticks.chunks_exact(2).map(|t| t[1].saturating_sub(t[0])).sum();
        Ok(Some(total as f64 * f64::from(self.queue.get_timestamp_period()) / 1e6))
    }
}
