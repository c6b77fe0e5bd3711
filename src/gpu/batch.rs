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
use crate::kernels::{GateParams, ELEMENT_WG, GATE_SLOTS};
use crate::ops::groups_1d;

/// One recorded dispatch: its pipeline, its bind group, the offset of its parameters in the
/// uniform ring and its workgroup counts, or, in a gated region, the byte offset of its counts
/// in the gate's argument buffer.
struct Recorded {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params_offset: u32,
    workgroups: [u32; 3],
    indirect: Option<u64>,
}

/// The gated region being recorded (`gate.rs`): its gate dispatch in this batch (index), what
/// re-records that gate after a submission inside the region, and the workgroup counts of the
/// region's dispatches recorded in this batch.
pub(crate) struct OpenGate {
    /// The thread recording the region: other threads' dispatches are recorded as usual.
    owner: std::thread::ThreadId,
    command: usize,
    flag_index: u32,
    from_latch: bool,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    slot_bytes: usize,
    templates_buffer: wgpu::Buffer,
    templates: Vec<[u32; 3]>,
}

/// Dispatches recorded since the last submission, with the uniform bytes they read.
pub(crate) struct Batch {
    commands: Vec<Recorded>,
    params: Vec<u8>,
    first_op: String,
    /// Timestamp queries around each submitted pass while a bench measures (`timing.rs`).
    pub(crate) timer: Option<Timer>,
    /// The gated region being recorded, if any.
    gate: Option<OpenGate>,
    /// The buffer the indirect dispatches of gated regions read their counts from.
    gate_args: Option<wgpu::Buffer>,
}

/// What a submission does after the batch's pass, in the same command encoder.
pub(crate) type After<'a> = &'a mut dyn FnMut(&mut wgpu::CommandEncoder);

impl Batch {
    pub(crate) fn new() -> Self {
        Batch {
            commands: Vec::new(),
            params: Vec::new(),
            first_op: String::new(),
            timer: None,
            gate: None,
            gate_args: None,
        }
    }

    /// Whether this thread is recording a gated region.
    pub(crate) fn in_own_gate(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.owner == std::thread::current().id())
    }

    /// Opens a gated region whose gate is the last dispatch recorded (reading element
    /// `flag_index` of its flag, its uniform slot `slot_bytes` long): the dispatches recorded
    /// until [`Batch::close_gate`] run indirectly from `args`, with the counts the gate copies
    /// from `templates`.
    pub(crate) fn open_gate(
        &mut self,
        flag_index: u32,
        slot_bytes: usize,
        templates: &wgpu::Buffer,
        args: &wgpu::Buffer,
    ) {
        let command = self.commands.len() - 1;
        let gate = &self.commands[command];
        self.gate = Some(OpenGate {
            owner: std::thread::current().id(),
            command,
            flag_index,
            from_latch: false,
            pipeline: gate.pipeline.clone(),
            bind_group: gate.bind_group.clone(),
            slot_bytes,
            templates_buffer: templates.clone(),
            templates: Vec::new(),
        });
        self.gate_args = Some(args.clone());
    }

    /// Closes the gated region: its gate completed for the dispatches recorded in this batch.
    pub(crate) fn close_gate(&mut self, queue: &wgpu::Queue) {
        self.complete_gate(queue);
        self.gate = None;
    }

    /// Writes the open region's counts recorded in this batch to the templates buffer (landing
    /// before the batch's submission) and completes its gate dispatch's parameters and size.
    fn complete_gate(&mut self, queue: &wgpu::Queue) {
        let Some(gate) = &self.gate else { return };
        let count = gate.templates.len() as u32;
        if count > 0 {
            let words: Vec<u32> = gate.templates.iter().flatten().copied().collect();
            queue.write_buffer(&gate.templates_buffer, 0, bytemuck::cast_slice(&words));
        }
        let params = GateParams { count, flag_index: gate.flag_index, from_latch: gate.from_latch as u32 };
        let c = &mut self.commands[gate.command];
        c.workgroups = groups_1d(count.max(1) as usize, ELEMENT_WG);
        let offset = c.params_offset as usize;
        let bytes = bytemuck::bytes_of(&params);
        self.params[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// After a submission inside a gated region: the region continues in the new batch behind
    /// a gate that reads the latched flag.
    fn continue_gate(&mut self) {
        let Some(gate) = &self.gate else { return };
        let params = GateParams { count: 0, flag_index: gate.flag_index, from_latch: 1 };
        let (pipeline, bind_group, slot_bytes) = (gate.pipeline.clone(), gate.bind_group.clone(), gate.slot_bytes);
        self.commands.clear();
        self.params.clear();
        self.first_op.clear();
        self.first_op.push_str("gate");
        self.params.extend_from_slice(bytemuck::bytes_of(&params));
        self.params.resize(slot_bytes, 0);
        self.commands.push(Recorded { pipeline, bind_group, params_offset: 0, workgroups: [1, 1, 1], indirect: None });
        let gate = self.gate.as_mut().expect("open");
        gate.command = 0;
        gate.from_latch = true;
        gate.templates.clear();
    }

    /// Whether one more dispatch must wait for a submission: [`FLUSH_EVERY`] recorded, or the
    /// uniform ring could not take another parameter block.
    /// Inside a gated region, which is submitted when it closes: only when the uniform ring or
    /// the region's dispatch slots are full (which, besides a wait inside the region, split it
    /// over submissions).
    pub(crate) fn is_full(&self) -> bool {
        let ring_full = (self.params.len() + MAX_PARAM_BYTES) as u64 > UNIFORM_RING_BYTES;
        match &self.gate {
            Some(gate) => ring_full || gate.templates.len() >= GATE_SLOTS as usize,
            None => ring_full || self.commands.len() >= FLUSH_EVERY as usize,
        }
    }

    /// Records a dispatch of `op` whose parameters `params` take a slot of `slot_bytes`; in an
    /// open gated region, as an indirect dispatch whose counts the region's gate writes.
    pub(crate) fn record(
        &mut self,
        op: &str,
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        params: &[u8],
        slot_bytes: usize,
        workgroups: [u32; 3],
    ) {
        let me = std::thread::current().id();
        let indirect = self.gate.as_mut().filter(|g| g.owner == me).map(|gate| {
            debug_assert!(gate.templates.len() < GATE_SLOTS as usize, "checked by is_full");
            gate.templates.push(workgroups);
            (gate.templates.len() as u64 - 1) * 12
        });
        if self.commands.is_empty() {
            self.first_op.clear();
            self.first_op.push_str(op);
        }
        let params_offset = self.params.len();
        self.params.extend_from_slice(params);
        self.params.resize(params_offset + slot_bytes, 0);
        self.commands.push(Recorded {
            pipeline,
            bind_group,
            params_offset: params_offset as u32,
            workgroups,
            indirect,
        });
    }

    /// Encodes the recorded dispatches in one compute pass, then `after` (a copy for a
    /// readback), and submits them, writing the parameters to `uniforms` first; nothing when
    /// there is neither. Leaves the batch empty, also on error. Inside a gated region, the gate
    /// is completed for the part recorded so far and the region continues behind a new gate.
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
        // A submission inside a gated region (a readback, an upload, a full uniform ring): the
        // part recorded so far is completed and submitted, the rest continues behind a new gate.
        self.complete_gate(queue);
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
                match (c.indirect, &self.gate_args) {
                    (Some(offset), Some(args)) => pass.dispatch_workgroups_indirect(args, offset),
                    _ => pass.dispatch_workgroups(c.workgroups[0], c.workgroups[1], c.workgroups[2]),
                }
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
        self.continue_gate();
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
