//! The engine-wide cost counter: every op of `crate::ops` adds the floating-point operations it
//! executes, on every device alike, to a counter of the calling thread. Experiments read it
//! through a [`Meter`] and match their arms' budgets on it (in units of one forward pass of a
//! batch, [`Meter::flops`] divided by the count of such a pass), and `geopath bench` divides it
//! by time for its GFLOP/s.
//!
//! The FLOP model, as the kernels execute them:
//! - products (matmul in every layout, convolutions and their gradients, the fused JVP
//!   products): 2 per multiply-add actually computed (a JVP without an input tangent runs two
//!   products, not three), plus 1 per output element for each fused epilogue (bias, accumulate,
//!   ReLU or ReLU mask; 2 each in a JVP, primal and tangent);
//! - every other op: a fixed count per element it reads or writes, given beside the op
//!   ([`per_element`]; an exponential, a comparison or a square root counts 1); moving data
//!   (split, concat, fill) counts 0.
//!
//! The constants of the other ops, per element of the main input unless noted:
//! - 1: add, sub, mul, scale, relu, relu_backward, mask, add_bias (2 with its ReLU), sum, max,
//!   sum_rows, argmax_rows, count_zeros, magnitude_threshold, prune, prune_mask; per element
//!   of `gy`: conv2d_backward_bias, maxpool2d_backward, the bias sums of linear_param_grads;
//! - 2: axpy, relu_jvp, dot, sqnorm, norm, dot_value, dropout, batchnorm_eval,
//!   batchnorm_eval_backward; 3: axpby;
//! - 4: softmax, log_softmax, cross_entropy and cross_entropy_backward (per logit),
//!   batchnorm_update_running (per channel); 5: softmax_jvp, sgd (per parameter);
//!   6: cross_entropy_backward_jvp, batchnorm_train; 12: adam (per parameter);
//! - 8, 10, 16: batchnorm_backward, batchnorm_jvp, batchnorm_backward_jvp;
//! - `k²` and `k² + 1` per output element: maxpool2d and maxpool2d_jvp with a `k` x `k` window.
//!
//! An op built from other ops counts once: the inner ops run inside [`uncounted`], or count
//! for it where their count is its own (`norm` is counted by `sqnorm`).
//!
//! The counter belongs to the thread that calls the ops (the CPU backend's worker threads and
//! the GPU never touch it), so tests and runs on other threads do not disturb it.

use std::cell::Cell;

thread_local! {
    /// FLOPs of products and of the other ops, counted on this thread so far.
    static COUNTS: Cell<[u64; 2]> = const { Cell::new([0, 0]) };
    /// Depth of [`uncounted`] scopes on this thread.
    static PAUSED: Cell<u32> = const { Cell::new(0) };
}

/// Adds `flops` to bucket `i` (0: products, 1: others) unless inside [`uncounted`].
fn add(i: usize, flops: u64) {
    if PAUSED.with(Cell::get) == 0 {
        COUNTS.with(|c| {
            let mut v = c.get();
            v[i] += flops;
            c.set(v);
        });
    }
}

/// Counts a product of `m x k` by `k x n`: `2 m n k` FLOPs.
pub fn product(m: usize, n: usize, k: usize) {
    add(0, 2 * (m * n * k) as u64);
}

/// Counts `elements` elements at `per` FLOPs each, for a non-product op or a product's
/// epilogue.
pub fn per_element(elements: usize, per: u64) {
    add(1, elements as u64 * per);
}

/// Runs `f` without counting: for an op built from other ops, which counts itself once.
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    /// Resumes counting when dropped, also when `f` panics.
    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            PAUSED.with(|p| p.set(p.get() - 1));
        }
    }
    PAUSED.with(|p| p.set(p.get() + 1));
    let _resume = Resume;
    f()
}

/// FLOPs counted on this thread so far, `[products, others]`: what [`retract`] takes back is
/// a difference of two readings.
pub(crate) fn counted() -> [u64; 2] {
    COUNTS.with(Cell::get)
}

/// Takes back `flops` (`[products, others]`) counted for work that did not run: the dispatches
/// of a gated region whose flag was closed (`GpuContext::gated`).
pub(crate) fn retract(flops: [u64; 2]) {
    COUNTS.with(|c| {
        let v = c.get();
        c.set([v[0] - flops[0], v[1] - flops[1]]);
    });
}

/// Reads what the ops of this thread executed since the meter started.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    start: [u64; 2],
}

impl Meter {
    /// A meter reading zero now.
    pub fn start() -> Meter {
        Meter { start: COUNTS.with(Cell::get) }
    }

    /// FLOPs of the products since the start.
    pub fn product_flops(&self) -> u64 {
        COUNTS.with(Cell::get)[0] - self.start[0]
    }

    /// FLOPs of every op since the start.
    pub fn flops(&self) -> u64 {
        let now = COUNTS.with(Cell::get);
        (now[0] - self.start[0]) + (now[1] - self.start[1])
    }
}
