//! Ops over the flat parameter vector `w` (`kernels/flat.wgsl`, plus the elementwise and
//! reduction kernels): axpy, norms and dots read back to the host (several in one wait), masks,
//! magnitude pruning.
//!
//! [`magnitude_threshold`] is an exact radix select on the bit patterns of `|x|`, without a
//! sort: three histogram passes over 11, 11 and 9 bits of the 31-bit key, each counting with
//! `atomic<u32>` bins in a storage buffer, with only the histogram (at most 2048 words) read
//! back between passes.

use super::{buf, elementwise, groups_1d, reduce};
use crate::cost;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{u32_of, FlatParams, ELEMENT_WG, LANE_WG};
use crate::reference::flat as reference;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Elements each invocation of a counting kernel reads: long serial runs on software adapters
/// (fewer workgroup-histogram flushes), more workgroups in flight on hardware GPUs.
fn per_invocation(ctx: &GpuContext) -> usize {
    match ctx.class {
        AdapterClass::Software => 512,
        AdapterClass::Hardware => 64,
    }
}
/// The radix-select digits, most significant first: `(shift, width)` over the 31-bit key.
const DIGITS: [(u32, u32); 3] = [(20, 11), (9, 11), (0, 9)];

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(shape_err(op, format!("{:?} vs {:?}", a.shape(), b.shape())));
    }
    Ok(())
}

/// `alpha * x + y`.
pub fn axpy(alpha: f32, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    same_shape("axpy", x, y)?;
    elementwise::axpby_counted(alpha, x, 1.0, y, 2)
}

/// The Euclidean norm `sqrt(Σ x_i²)`, read back to the host (counted by [`reduce::sqnorm`]).
pub fn norm(x: &Tensor) -> Result<f32> {
    Ok(reduce::sqnorm(x)?.to_vec()?[0].sqrt())
}

/// `Σ a_i b_i` over tensors of the same shape, read back to the host (counted by
/// [`reduce::dot`]).
pub fn dot_value(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok(reduce::dot(a, b)?.to_vec()?[0])
}

/// `Σ a_i b_i` for each pair (each pair of one shape), read back to the host together: one
/// wait on a GPU for all of them (counted by [`reduce::dot`]).
pub fn dot_values(pairs: &[(&Tensor, &Tensor)]) -> Result<Vec<f32>> {
    let dots = pairs.iter().map(|(a, b)| reduce::dot(a, b)).collect::<Result<Vec<_>>>()?;
    match dots.as_slice() {
        [] => Ok(Vec::new()),
        [one] => one.to_vec(),
        _ => elementwise::concat(&dots.iter().collect::<Vec<_>>())?.to_vec(),
    }
}

/// `x * m` elementwise, for a 0/1 mask `m` of the shape of `x` (counted by
/// [`elementwise::mul`]).
pub fn mask(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    same_shape("mask", x, m)?;
    elementwise::mul(x, m)
}

/// Records a counting kernel of `flat.wgsl` over `x` into `counts` (zeroed first, `words`
/// words), then reads the counts back.
fn count_gpu(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    entry: &'static str,
    x: &Tensor,
    counts: &Tensor,
    words: usize,
    digit: (u32, u32, u32, u32),
) -> Result<Vec<u32>> {
    let (shift, hi_shift, prefix, mask) = digit;
    // The f32 output binding is unused by the counting kernels; a small scratch buffer fills it.
    let unused = Tensor::gpu_uninit(ctx, op, &[1])?;
    ctx.dispatch(
        op,
        &KernelKey::new("flat", "zero_words"),
        &FlatParams { n: u32_of(words), ..Default::default() },
        &[],
        &[buf(&unused), buf(counts)],
        groups_1d(words, ELEMENT_WG),
    )?;
    let n = x.numel();
    let per = per_invocation(ctx);
    // The counting kernels' workgroups of LANE_WG invocations each read LANE_WG * per elements.
    let groups = n.div_ceil(LANE_WG as usize * per).max(1);
    let p = FlatParams { n: u32_of(n), per: u32_of(per), shift, hi_shift, prefix, mask, ..Default::default() };
    ctx.dispatch(
        op,
        &KernelKey::new("flat", entry),
        &p,
        &[buf(x)],
        &[buf(&unused), buf(counts)],
        groups_1d(groups * LANE_WG as usize, LANE_WG),
    )?;
    let mut v = counts.to_u32()?;
    v.truncate(words);
    Ok(v)
}

/// The threshold below which the `k` smallest magnitudes of `x` lie, `k = floor(fraction · n)`
/// (computed by [`reference::prune_count`]): with `s` the magnitudes `|x|` sorted ascending,
/// `t = s[k]`, the exact value of an element, found by radix select without a sort.
///
/// Tie rule: elements equal to `t` are kept by [`prune`] / [`prune_mask`], so exactly `k`
/// elements are pruned when `s[k-1] < s[k]` and fewer when magnitudes tie at the boundary.
/// `fraction = 0` (k = 0) gives 0 (nothing pruned); `k = n` gives the next float above the
/// largest magnitude (everything pruned). NaNs order above +inf. An error unless
/// `0 <= fraction <= 1`.
pub fn magnitude_threshold(x: &Tensor, fraction: f32) -> Result<f32> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Invalid(format!("magnitude_threshold: fraction {fraction} is not in [0, 1]")));
    }
    let n = x.numel();
    let k = reference::prune_count(fraction, n);
    if k == 0 {
        return Ok(0.0);
    }
    cost::per_element(n, 1);
    let ctx = match x.device() {
        Device::Reference | Device::Cpu => return Ok(reference::magnitude_threshold(x.host().unwrap(), fraction)),
        Device::Gpu(ctx) => ctx,
    };
    let op = "magnitude_threshold";
    let max_bins = 1usize << DIGITS.iter().map(|d| d.1).max().unwrap();
    let counts = Tensor::gpu_uninit(&ctx, op, &[max_bins])?;
    // Find the key of 0-based rank `rank` digit by digit: `prefix` holds the digits fixed so
    // far and `rem` the rank among the elements that share them.
    let mut rem = k.min(n - 1);
    let mut prefix = 0u32;
    for &(shift, width) in &DIGITS {
        let bins = 1usize << width;
        let hist = count_gpu(
            &ctx,
            op,
            "radix_histogram",
            x,
            &counts,
            bins,
            (shift, shift + width, prefix, (bins - 1) as u32),
        )?;
        let mut digit = None;
        for (d, &c) in hist.iter().enumerate() {
            if rem < c as usize {
                digit = Some(d as u32);
                break;
            }
            rem -= c as usize;
        }
        let d = digit.ok_or_else(|| Error::Device {
            op: op.into(),
            message: format!("radix histogram lost elements (rank {rem} past the counts)"),
        })?;
        prefix = (prefix << width) | d;
    }
    Ok(reference::threshold_from_key(prefix, k, n))
}

/// Records a `flat.wgsl` elementwise entry point with a threshold.
fn thresholded(op: &'static str, x: &Tensor, threshold: f32) -> Result<Tensor> {
    if threshold.is_nan() {
        return Err(Error::Invalid(format!("{op}: threshold is NaN")));
    }
    cost::per_element(x.numel(), 1);
    match x.device() {
        dev @ (Device::Reference | Device::Cpu) => {
            let h = x.host().unwrap();
            let v = if op == "prune" { reference::prune(h, threshold) } else { reference::prune_mask(h, threshold) };
            Ok(Tensor::host_result(&dev, x.shape(), v))
        }
        Device::Gpu(ctx) => {
            let out = Tensor::gpu_uninit(&ctx, op, x.shape())?;
            ctx.dispatch(
                op,
                &KernelKey::new("flat", op),
                &FlatParams { n: u32_of(x.numel()), threshold, ..Default::default() },
                &[buf(x)],
                &[buf(&out)],
                groups_1d(x.numel(), ELEMENT_WG),
            )?;
            Ok(out)
        }
    }
}

/// 1.0 where `|x| >= threshold`, else 0.0. An error for a NaN threshold.
pub fn prune_mask(x: &Tensor, threshold: f32) -> Result<Tensor> {
    thresholded("prune_mask", x, threshold)
}

/// `x` where `|x| >= threshold`, else 0. An error for a NaN threshold.
pub fn prune(x: &Tensor, threshold: f32) -> Result<Tensor> {
    thresholded("prune", x, threshold)
}

/// Number of elements equal to zero (either sign), counted with one atomic counter on a GPU.
pub fn count_zeros(x: &Tensor) -> Result<usize> {
    cost::per_element(x.numel(), 1);
    match x.device() {
        Device::Reference | Device::Cpu => Ok(reference::count_zeros(x.host().unwrap())),
        Device::Gpu(ctx) => {
            let counts = Tensor::gpu_uninit(&ctx, "count_zeros", &[1])?;
            Ok(count_gpu(&ctx, "count_zeros", "count_zeros", x, &counts, 1, (0, 0, 0, 0))?[0] as usize)
        }
    }
}
