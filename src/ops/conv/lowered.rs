//! Convolutions lowered to register-tiled matrix products on software adapters: the plan
//! ([`Lowering`]: padded sizes and batch chunks), the layout passes of `kernels/conv2d_lower.wgsl`
//! (weights, `gy`, padding, col2im, the summing of weight-gradient partials) and
//! `kernels/conv2d_im2col.wgsl` (patch matrices), and the products of `kernels/conv2d_gemm.wgsl`
//! (`gemm_fwd*` for the forward pass, JVP and data gradient, split-K `gemm_bwd_weight*` for the
//! weight gradient).

use super::{buf, groups, is_fast_3x3, ForwardOperands};
use crate::error::Result;
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{
    u32_of, ConvGemmParams, ConvLowerParams, FLAG_BIAS, FLAG_HAS_DW, FLAG_HAS_DX, FLAG_MASK, FLAG_PLAIN_OUTPUT,
    FLAG_RELU, FLAG_SECOND_PRODUCT,
};
use crate::reference::conv::ConvShape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Bytes one lowered matrix (patches, products) of a batch chunk may take at most; larger
/// batches are lowered in chunks of images. Well under the 128 MiB binding limit of lavapipe,
/// and small enough that the pooled scratch buffers stay modest.
const LOWER_CHUNK_BYTES: u64 = 32 << 20;
/// Multiply-adds below which the direct kernels run instead of the lowering: there the three
/// or four dispatches of the lowering cost more than they save.
const LOWER_MIN_MACS: usize = 1 << 18;
/// Invocations wanted from the split-K weight-gradient product.
const GEMM_TARGET_INVOCATIONS: usize = 256;
/// Fewest vec4 reduction steps per split of that product.
const GEMM_MIN_K4: usize = 16;

/// How a convolution is lowered: padded sizes and the batch chunk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lowering {
    /// Rows of the patch matrix, `C KH KW`.
    q: usize,
    /// `q` padded to a multiple of 4 (the patch matrices have `qp` rows, zero below `q`).
    qp: usize,
    /// Output channels padded to a multiple of 4.
    op: usize,
    /// Output pixels per image, `OH OW`.
    ohw: usize,
    /// Images per chunk.
    chunk: usize,
}

impl Lowering {
    /// Padded columns of a chunk of `nb` images.
    fn npc(&self, nb: usize) -> usize {
        (nb * self.ohw).div_ceil(4) * 4
    }
    /// The chunks `(n0, nb)` covering `n` images.
    fn chunks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n).step_by(self.chunk).map(move |n0| (n0, self.chunk.min(n - n0)))
    }
}

/// The lowering of `s` when it should run on `ctx` (software adapters, large enough layers,
/// chunks that fit a binding); `None` selects the direct kernels.
pub(super) fn lowering(ctx: &GpuContext, s: &ConvShape) -> Option<Lowering> {
    if ctx.class != AdapterClass::Software || s.n == 0 || s.o == 0 || s.c == 0 {
        return None;
    }
    let q = s.c * s.kh * s.kw;
    let ohw = s.oh * s.ow;
    if s.n * ohw * q * s.o < LOWER_MIN_MACS || ohw == 0 {
        return None;
    }
    let op = s.o.div_ceil(4) * 4;
    let cap = ctx.max_binding_bytes().min(LOWER_CHUNK_BYTES) as usize;
    // Rows of the largest matrix of a chunk, then images per chunk (leaving room for padding).
    let row_bytes = 4 * (q + 3).max(op);
    let cols = (cap / row_bytes).checked_sub(3)?;
    let chunk = (cols / ohw).min(s.n);
    let qp = q.div_ceil(4) * 4;
    (chunk > 0).then_some(Lowering { q, qp, op, ohw, chunk })
}

/// Whether the lowered forward (or JVP) beats the direct kernels: always against the general
/// kernels; against the 3x3 fast path for many patch rows on small images, where its row tiles
/// are short (on lavapipe, batch 128: 64 -> 64 channels at 4 x 4 ran 11 ms lowered vs 26
/// direct, 16 -> 32 at 8 x 8 8.5 vs 9.5; but 16 -> 8 at 16 x 16 25 vs 11 and 8 -> 16 at
/// 16 x 16 12.5 vs 8.7: there the im2col pass costs more than the product saves). The fused
/// JVP kernel holds up a little longer (at 8 x 8 it ran about 5% faster than two products).
pub(super) fn lower_forward_wins(s: &ConvShape, l: &Lowering, jvp: bool) -> bool {
    !is_fast_3x3(s) || (l.q >= 128 && s.ow <= if jvp { 4 } else { 8 })
}

/// The uniform block of `conv2d_lower.wgsl` and `conv2d_im2col.wgsl`.
#[allow(clippy::too_many_arguments)]
fn lower_params(
    s: &ConvShape,
    l: &Lowering,
    n0: usize,
    nb: usize,
    flags: u32,
    total: usize,
    splits: usize,
) -> ConvLowerParams {
    ConvLowerParams {
        n0: u32_of(n0),
        nb: u32_of(nb),
        c: u32_of(s.c),
        h: u32_of(s.h),
        w: u32_of(s.w),
        o: u32_of(s.o),
        kh: u32_of(s.kh),
        kw: u32_of(s.kw),
        stride: u32_of(s.stride),
        pad: u32_of(s.pad),
        oh: u32_of(s.oh),
        ow: u32_of(s.ow),
        q: u32_of(l.q),
        op: u32_of(l.op),
        npc: u32_of(l.npc(nb)),
        flags,
        total: u32_of(total),
        splits: u32_of(splits),
        qp: u32_of(l.qp),
    }
}

/// Records one `conv2d_lower` entry point over `p`'s `total` lanes.
fn lower_dispatch(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    entry: &'static str,
    p: ConvLowerParams,
    total: usize,
    inputs: &[crate::gpu::BufferView],
    outputs: &[crate::gpu::BufferView],
) -> Result<()> {
    let key = KernelKey::new("conv2d_lower", entry);
    ctx.dispatch(op, &key, &p, inputs, outputs, groups(total, 1)?)
}

/// `w` `[O, Q]` (and `dw`) transposed to `[qp, op]`, zero-padded.
fn lowered_weights(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    w: &Tensor,
    dw: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let wt = Tensor::gpu_uninit(ctx, op, &[l.qp, l.op])?;
    let dwt = match dw {
        Some(_) => Some(Tensor::gpu_uninit(ctx, op, &[l.qp, l.op])?),
        None => None,
    };
    let total = l.qp * l.op;
    let flags = if dw.is_some() { FLAG_HAS_DW } else { 0 };
    let mut outputs = vec![buf(&wt)];
    outputs.extend(dwt.as_ref().map(buf));
    lower_dispatch(
        ctx,
        op,
        "lower_weights_t",
        lower_params(s, l, 0, 1, flags, total, 1),
        total,
        &[buf(w), dw.map_or(buf(w), buf)],
        &outputs,
    )?;
    Ok((wt, dwt))
}

/// The patch matrix `[qp, npc]` of images `[n0, n0 + nb)` of `x` (and of `dx`).
#[allow(clippy::too_many_arguments)]
fn im2col(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    n0: usize,
    nb: usize,
    x: &Tensor,
    dx: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let shape = [l.qp, l.npc(nb)];
    let pm = Tensor::gpu_uninit(ctx, op, &shape)?;
    let dpm = match dx {
        Some(_) => Some(Tensor::gpu_uninit(ctx, op, &shape)?),
        None => None,
    };
    let total = l.npc(nb) / 4;
    let flags = if dx.is_some() { FLAG_HAS_DX } else { 0 };
    let mut outputs = vec![buf(&pm)];
    outputs.extend(dpm.as_ref().map(buf));
    let p = lower_params(s, l, n0, nb, flags, total, 1);
    let key = KernelKey::new("conv2d_im2col", "lower_im2col");
    ctx.dispatch(op, &key, &p, &[buf(x), dx.map_or(buf(x), buf)], &outputs, groups(total, 1)?)?;
    Ok((pm, dpm))
}

/// `gy` of images `[n0, n0 + nb)` as `[op, npc]`, zero-padded.
fn lowered_gy(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    n0: usize,
    nb: usize,
    gy: &Tensor,
) -> Result<Tensor> {
    let g = Tensor::gpu_uninit(ctx, op, &[l.op, l.npc(nb)])?;
    let total = l.npc(nb) / 4;
    lower_dispatch(ctx, op, "lower_gy", lower_params(s, l, n0, nb, 0, total, 1), total, &[buf(gy)], &[buf(&g)])
        .map(|_| g)
}

/// Operands and destination of one `gemm_fwd` product `C = a0ᵀ b0 (+ a1ᵀ b1)`.
struct GemmFwd<'a> {
    /// `[K, rp]` row-major, `rp` a multiple of 4.
    a0: &'a Tensor,
    /// `[K, npc]`.
    b0: &'a Tensor,
    /// The optional second product.
    second: Option<(&'a Tensor, &'a Tensor)>,
    bias: Option<&'a Tensor>,
    /// Zero the result where this forward output is `<= 0`.
    mask: Option<&'a Tensor>,
    relu: bool,
    /// Rows stored (`O` for a convolution output, `Q` for a plain matrix).
    rows: usize,
    /// `(n0, nb)` of a convolution output, or `None` for a plain `[rows, npc]` matrix.
    image: Option<(usize, usize)>,
    out: &'a Tensor,
}

/// Records `gemm_fwd` (see `kernels/conv2d_gemm.wgsl`).
fn gemm_fwd(ctx: &Arc<GpuContext>, op: &'static str, l: &Lowering, g: GemmFwd) -> Result<()> {
    let (k, rp) = (g.a0.shape()[0], g.a0.shape()[1]);
    let npc = g.b0.shape()[1];
    let rp4 = rp / 4;
    let (entry, z) = if rp4 <= 2 { ("gemm_fwd8", 1) } else { ("gemm_fwd16", rp4.div_ceil(4)) };
    let lanes = (npc / 4).div_ceil(4);
    let flags = if g.bias.is_some() { FLAG_BIAS } else { 0 }
        | if g.relu { FLAG_RELU } else { 0 }
        | if g.mask.is_some() { FLAG_MASK } else { 0 }
        | if g.second.is_some() { FLAG_SECOND_PRODUCT } else { 0 }
        | if g.image.is_none() { FLAG_PLAIN_OUTPUT } else { 0 };
    let (n0, nb) = g.image.unwrap_or((0, 0));
    let p = ConvGemmParams {
        q: u32_of(k),
        op: u32_of(rp),
        npc: u32_of(npc),
        total: u32_of(lanes),
        o: u32_of(g.rows),
        ohw: u32_of(l.ohw),
        n0: u32_of(n0),
        nb: u32_of(nb),
        flags,
        ..Default::default()
    };
    let key = KernelKey::new("conv2d_gemm", entry);
    let d = buf(g.a0);
    ctx.dispatch(
        op,
        &key,
        &p,
        &[
            d,
            buf(g.b0),
            g.second.map_or(d, |s| buf(s.0)),
            g.second.map_or(d, |s| buf(s.1)),
            g.bias.map_or(d, buf),
            g.mask.map_or(d, buf),
        ],
        &[buf(g.out)],
        groups(lanes, z)?,
    )
}

/// Forward or JVP through the lowering; arguments as [`super::gpu_forward`].
pub(super) fn lowered_forward(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    f: ForwardOperands,
) -> Result<(Tensor, Option<Tensor>)> {
    let ForwardOperands { x, w, bias, tangent, relu } = f;
    let (y, dy) = f.outputs(ctx, op, s)?;
    let dx = f.dx();
    let (wt, dwt) = lowered_weights(ctx, op, s, l, w, tangent.map(|t| t.1))?;
    for (n0, nb) in l.chunks(s.n) {
        let (pm, dpm) = im2col(ctx, op, s, l, n0, nb, x, dx)?;
        let image = Some((n0, nb));
        gemm_fwd(
            ctx,
            op,
            l,
            GemmFwd { a0: &wt, b0: &pm, second: None, bias, mask: None, relu, rows: s.o, image, out: &y },
        )?;
        if let (Some(dwt), Some(dy)) = (&dwt, &dy) {
            gemm_fwd(
                ctx,
                op,
                l,
                GemmFwd {
                    a0: dwt,
                    b0: &pm,
                    second: dpm.as_ref().map(|d| (&wt, d)),
                    bias: tangent.and_then(|t| t.2),
                    mask: relu.then_some(&y),
                    relu: false,
                    rows: s.o,
                    image,
                    out: dy,
                },
            )?;
        }
    }
    Ok((y, dy))
}

/// Backward data through the lowering: `wᵀ gy` per chunk into patch gradients, then the
/// col2im gather.
pub(super) fn lowered_backward_data(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    gy: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let gx = Tensor::gpu_uninit(ctx, op, &s.x_shape())?;
    let qp = l.qp;
    let wp = if qp == l.q && l.op == s.o {
        w.reshape(&[s.o, l.q])?
    } else {
        let wp = Tensor::gpu_uninit(ctx, op, &[l.op, qp])?;
        let lp = Lowering { op: qp, ..*l };
        let total = l.op * qp;
        lower_dispatch(ctx, op, "lower_pad_q", lower_params(s, &lp, 0, 1, 0, total, 1), total, &[buf(w)], &[buf(&wp)])?;
        wp
    };
    for (n0, nb) in l.chunks(s.n) {
        let g = lowered_gy(ctx, op, s, l, n0, nb, gy)?;
        let gp = Tensor::gpu_uninit(ctx, op, &[l.q, l.npc(nb)])?;
        gemm_fwd(
            ctx,
            op,
            l,
            GemmFwd {
                a0: &wp,
                b0: &g,
                second: None,
                bias: None,
                mask: None,
                relu: false,
                rows: l.q,
                image: None,
                out: &gp,
            },
        )?;
        drop(g);
        let total = nb * s.c * s.h * s.w.div_ceil(4);
        lower_dispatch(
            ctx,
            op,
            "lower_col2im",
            lower_params(s, l, n0, nb, 0, total, 1),
            total,
            &[buf(&gp)],
            &[buf(&gx)],
        )?;
    }
    Ok(gx)
}

/// Splits of the weight-gradient product over `npc` columns for `tiles` tiles:
/// `(splits, vec4 steps per split)`.
fn gemm_splits(tiles: usize, npc: usize) -> (usize, usize) {
    let k4 = npc / 4;
    let want = GEMM_TARGET_INVOCATIONS.div_ceil(tiles).min(k4.div_ceil(GEMM_MIN_K4)).max(1);
    let per = k4.div_ceil(want).max(1);
    (k4.div_ceil(per).max(1), per)
}

/// Backward weight through the lowering: split-K products of the patches and `gy` per chunk
/// into partial sums, then one summing and transposing pass.
pub(super) fn lowered_backward_weight(
    ctx: &Arc<GpuContext>,
    op: &'static str,
    s: &ConvShape,
    l: &Lowering,
    x: &Tensor,
    gy: &Tensor,
) -> Result<Tensor> {
    let (entry, o_tile) = if l.op <= 8 { ("gemm_bwd_weight8", 8) } else { ("gemm_bwd_weight16", 16) };
    let tiles_q = l.q.div_ceil(16);
    let tiles_o = l.op.div_ceil(o_tile);
    let tiles = tiles_q * tiles_o;
    let chunks: Vec<(usize, usize)> = l.chunks(s.n).collect();
    let slots: usize = chunks.iter().map(|&(_, nb)| gemm_splits(tiles, l.npc(nb)).0).sum();
    let partial = Tensor::gpu_uninit(ctx, op, &[slots, l.q, l.op])?;
    let key = KernelKey::new("conv2d_gemm", entry);
    let mut slot0 = 0;
    for (n0, nb) in chunks {
        let (pm, _) = im2col(ctx, op, s, l, n0, nb, x, None)?;
        let g = lowered_gy(ctx, op, s, l, n0, nb, gy)?;
        let npc = l.npc(nb);
        let (splits, per) = gemm_splits(tiles, npc);
        let total = splits * tiles;
        let p = ConvGemmParams {
            q: u32_of(l.q),
            op: u32_of(l.op),
            npc: u32_of(npc),
            k4_split: u32_of(per),
            tiles_q: u32_of(tiles_q),
            tiles_o: u32_of(tiles_o),
            total: u32_of(total),
            slot0: u32_of(slot0),
            ..Default::default()
        };
        ctx.dispatch(op, &key, &p, &[buf(&pm), buf(&g)], &[buf(&partial)], groups(total, 1)?)?;
        slot0 += splits;
    }
    let gw = Tensor::gpu_uninit(ctx, op, &s.w_shape())?;
    let total = s.o * l.q;
    lower_dispatch(
        ctx,
        op,
        "lower_sum_wt",
        lower_params(s, l, 0, 1, 0, total, slots),
        total,
        &[buf(&partial)],
        &[buf(&gw)],
    )?;
    Ok(gw)
}
