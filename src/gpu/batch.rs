//! Recorded dispatches not yet submitted, and their submission: one command encoder with one
//! compute pass per batch.
//!
//! Why one pass is as safe as one pass per dispatch: wgpu gives every dispatch of a compute
//! pass its own usage scope and, before the dispatch, transitions each bound buffer from its
//! previous use (wgpu-core `compute.rs`, `State::flush_bindings` then `drain_barriers`). A
//! read-write storage use is never an "ordered" use (`BufferUses::STORAGE_READ_WRITE` is
//! exclusive), so a dispatch that reads, or writes, a buffer that an earlier dispatch of the
//! pass wrote gets a pipeline barrier (on Vulkan `vkCmdPipelineBarrier` with a buffer memory
//! barrier, compute-write to compute-read/write) between the two: read-after-write and
//! write-after-write are ordered as across passes. Only read-only uses after read-only uses
//! go without a barrier, which needs none. Copies and readbacks are recorded after the pass
//! has ended, host writes (`Queue::write_buffer`) land before the submission (`upload` submits
//! what is recorded first).
//!
//! Errors: wgpu reports what is wrong with a pass's commands when the encoder is finished, and
//! error scopes are per thread, so one validation scope is pushed around the encoding and
//! submission of the whole batch, on the thread that submits it; its error names the first op
//! of the batch and how many dispatches it held (creation errors of pipelines and bind groups
//! are caught where they happen, naming their op).

use super::timing::Timer;
use super::{FLUSH_EVERY, MAX_PARAM_BYTES, UNIFORM_RING_BYTES};
use crate::error::{Error, Result};

/// One recorded dispatch: its pipeline, its bind group, the offset of its parameters in the
/// uniform ring and its workgroup counts.
struct Recorded {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params_offset: u32,
    workgroups: [u32; 3],
}

/// Dispatches recorded since the last submission, with the uniform bytes they read.
pub(crate) struct Batch {
    commands: Vec<Recorded>,
    params: Vec<u8>,
    first_op: String,
    /// Timestamp queries around each submitted pass while a bench measures (`timing.rs`).
    pub(crate) timer: Option<Timer>,
}

/// What a submission does after the batch's pass, in the same command encoder.
pub(crate) type After<'a> = &'a mut dyn FnMut(&mut wgpu::CommandEncoder);

impl Batch {
    pub(crate) fn new() -> Self {
        Batch { commands: Vec::new(), params: Vec::new(), first_op: String::new(), timer: None }
    }

    /// Whether one more dispatch must wait for a submission: [`FLUSH_EVERY`] recorded, or the
    /// uniform ring could not take another parameter block.
    pub(crate) fn is_full(&self) -> bool {
        self.commands.len() >= FLUSH_EVERY as usize || (self.params.len() + MAX_PARAM_BYTES) as u64 > UNIFORM_RING_BYTES
    }

    /// Records a dispatch of `op` whose parameters `params` take a slot of `slot_bytes`.
    pub(crate) fn record(
        &mut self,
        op: &str,
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        params: &[u8],
        slot_bytes: usize,
        workgroups: [u32; 3],
    ) {
        if self.commands.is_empty() {
            self.first_op.clear();
            self.first_op.push_str(op);
        }
        let params_offset = self.params.len();
        self.params.extend_from_slice(params);
        self.params.resize(params_offset + slot_bytes, 0);
        self.commands.push(Recorded { pipeline, bind_group, params_offset: params_offset as u32, workgroups });
    }

    /// Encodes the recorded dispatches in one compute pass, then `after` (a copy for a
    /// readback), and submits them, writing the parameters to `uniforms` first; nothing when
    /// there is neither. Leaves the batch empty, also on error.
    pub(crate) fn submit(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        uniforms: &wgpu::Buffer,
        after: Option<After<'_>>,
    ) -> Result<()> {
        if self.commands.is_empty() && after.is_none() {
            return Ok(());
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        if !self.commands.is_empty() {
            queue.write_buffer(uniforms, 0, &self.params);
            let timed = self.timer.as_mut().and_then(Timer::next_pass);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&self.first_op),
                timestamp_writes: timed.and_then(|i| Some(self.timer.as_ref()?.writes(i))),
            });
            for c in &self.commands {
                pass.set_pipeline(&c.pipeline);
                pass.set_bind_group(0, &c.bind_group, &[c.params_offset]);
                pass.dispatch_workgroups(c.workgroups[0], c.workgroups[1], c.workgroups[2]);
            }
        }
        if let Some(after) = after {
            after(&mut encoder);
        }
        queue.submit([encoder.finish()]);
        let _ = device.poll(wgpu::PollType::Poll);
        let error = pollster::block_on(scope.pop());
        let dispatches = self.commands.len();
        self.commands.clear();
        self.params.clear();
        match error {
            None => Ok(()),
            Some(e) if dispatches == 0 => Err(Error::Device { op: "readback".into(), message: e.to_string() }),
            Some(e) => Err(Error::Device {
                op: format!("{} (first of a batch of {dispatches} dispatches)", self.first_op),
                message: e.to_string(),
            }),
        }
    }
}
