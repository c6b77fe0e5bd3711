//! Gated regions: dispatches that run only while a flag on the device is non-zero, so that a
//! loop whose end the GPU decides (the device-resident conjugate gradient, `ops::cg`) records
//! all its iterations without reading anything back.
//!
//! A region starts a batch: a gate dispatch (`kernels/gate.wgsl`) first, then the region's
//! dispatches, each recorded as an indirect dispatch whose workgroup counts the gate writes into
//! an argument buffer: the counts the host computed when the flag is non-zero as the gate runs,
//! zeros otherwise. So a closed region's dispatches run no workgroup: their kernels, and the
//! work the engine counted for them, do not happen (the caller takes that count back,
//! `cost::retract`). A region that waits for the GPU inside (a readback or an upload, e.g. a
//! statistic built on first use) still works: the part recorded so far is submitted behind its
//! gate and the rest continues behind a gate that reads the flag as the first one latched it;
//! host code reading what the region computed then reads stale values if the region was
//! closed. At most `GATE_SLOTS` dispatches per submission. A region gates the dispatches of
//! the thread that records it; other threads' dispatches, recorded in the same batches, run as
//! usual, and another thread's region waits until this one is recorded. What the host keeps
//! from ops recorded in a region that does not run (e.g. a network's train-mode batch
//! statistics) refers to values never computed: such ops do not belong in a region.

use super::{uniform_binding_bytes, BufferView, GpuBuffer, GpuContext, KernelKey};
use crate::error::{Error, Result};
use crate::kernels::{GateParams, GATE_SLOTS};

/// The two buffers of the gated regions: the counts the host records (`templates`) and those
/// the indirect dispatches read (`args`), 3 words per slot.
pub(crate) struct GateBuffers {
    templates: GpuBuffer,
    args: GpuBuffer,
}

impl GpuContext {
    /// Records what `region` dispatches as a gated region: run only if element `flag_index` of
    /// `flag` is non-zero when the region starts on the GPU (see the module doc). Submits what
    /// was recorded before; errors if `region` nests another region. Only the calling
    /// thread's dispatches join the region; another thread's region waits for this one.
    pub(crate) fn gated<R>(&self, flag: BufferView, flag_index: u32, region: impl FnOnce() -> Result<R>) -> Result<R> {
        if self.batch.lock().unwrap().in_own_gate() {
            return Err(Error::Invalid("gated regions do not nest".into()));
        }
        let _one_region = self.gate_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.flush()?;
        let buffers = self.gate_buffers.get_or_init(|| {
            // 3 words per slot; the args buffer also holds the latched flag.
            let bytes = GATE_SLOTS as u64 * 12 + 4;
            GateBuffers { templates: self.pool.acquire(bytes), args: self.pool.acquire(bytes) }
        });
        let gate = KernelKey::new("gate", "gate_dispatches");
        let params = GateParams { count: 0, flag_index, from_latch: 0 };
        let slot_bytes =
            uniform_binding_bytes(std::mem::size_of::<GateParams>()).div_ceil(self.uniform_align) * self.uniform_align;
        let (templates, args) = (buffers.templates.raw(), buffers.args.raw());
        self.dispatch_then(
            "gate",
            &gate,
            &params,
            &[flag, buffers.templates.view()],
            &[buffers.args.view()],
            [1, 1, 1],
            |batch| batch.open_gate(flag_index, slot_bytes, templates, args),
        )?;
        // The gate is completed with the region's counts also when the region fails or panics
        // (what it recorded is submitted with the next batch).
        let _close = CloseOnDrop(self);
        region()
    }
}

/// Closes this thread's open region when dropped.
struct CloseOnDrop<'a>(&'a GpuContext);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.batch.lock().unwrap_or_else(|e| e.into_inner()).close_gate(&self.0.queue);
    }
}
