//! 2-D convolutions of the CPU backend, lowered onto the `gemm` products a group of images at a
//! time: an im2col pass writes the patch matrix `[C KH KW, G OH OW]` of `G` consecutive images
//! (skipped for a single image under a 1x1 stride-1 unpadded kernel, whose patch matrix is the
//! image itself), then
//! - forward / JVP: `W patches` (+ bias, ReLU) into the images' `[O, OH OW]` outputs;
//! - backward data: `Wᵀ gy` into patch gradients, then a col2im scatter-add;
//! - backward weight: `Σ_groups gy patchesᵀ`, one partial sum per thread, added at the end.
//!
//! Groups hold enough images for a product of at least [`MIN_COLUMNS`] columns (deep layers of
//! a VGG have 4 to 16 pixels an image, too few for the GEMM micro-kernels alone). Groups are
//! spread over the threads (each product single-threaded) when there are at least as many
//! groups as threads; otherwise they run one after another with threaded products.

use super::matmul::product_into;
use super::parallel::zeros;
use super::simd::vectorized_fn;
use crate::reference::conv::ConvShape;
use crate::reference::matmul::Gemm;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Columns (output pixels) a grouped product is given at least, where the batch allows.
const MIN_COLUMNS: usize = 256;

impl ConvShape {
    /// Rows of the patch matrix: `C KH KW`.
    fn patch_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels of one image: `OH OW`.
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input image: `C H W`.
    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether the patch matrix of an image is the image itself (1x1, stride 1, no padding).
    fn patches_are_input(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Images per group: enough for [`MIN_COLUMNS`] columns, but at least one group a thread.
    fn group(&self) -> usize {
        let most = (self.n / super::threads()).max(1);
        MIN_COLUMNS.div_ceil(self.pixels().max(1)).clamp(1, most)
    }
}

impl ConvShape {
    /// Whether every tap of the kernel reads the input plane shifted by a constant offset: a
    /// stride-1 "same" convolution (output as large as the input, padding below the kernel
    /// size), as in every VGG layer. Its patch rows are then shifted copies of the planes.
    fn taps_are_shifts(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w && self.pad < self.kh && self.pad < self.kw
    }
}

/// For each kernel tap `(ky, kx)` and output pixel, the offset into an input plane that the
/// tap reads, or `u32::MAX` where it falls in the padding: `[KH KW, OH OW]`; empty for shapes
/// whose taps are shifts.
fn tap_offsets(s: &ConvShape) -> Vec<u32> {
    if s.taps_are_shifts() {
        return Vec::new();
    }
    let mut taps = Vec::with_capacity(s.kh * s.kw * s.pixels());
    for ky in 0..s.kh {
        for kx in 0..s.kw {
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let iy = (oy * s.stride + ky).checked_sub(s.pad).filter(|&i| i < s.h);
                    let ix = (ox * s.stride + kx).checked_sub(s.pad).filter(|&i| i < s.w);
                    taps.push(iy.zip(ix).map_or(u32::MAX, |(iy, ix)| (iy * s.w + ix) as u32));
                }
            }
        }
    }
    taps
}

/// A tap of a shape whose taps are shifts: output pixel `j` reads input `j + shift` for `j` in
/// `valid`, except in the `wrapped` columns at the left (`dx < 0`) or right (`dx > 0`) edge of
/// each row, whose reads wrap around into the neighbouring row and belong to the padding.
struct Shift {
    shift: isize,
    valid: std::ops::Range<usize>,
    dx: isize,
}

impl Shift {
    /// Tap `t` (`ky kw + kx`) of `s`.
    fn of(s: &ConvShape, t: usize) -> Shift {
        let (dy, dx) = ((t / s.kw) as isize - s.pad as isize, (t % s.kw) as isize - s.pad as isize);
        let (hw, shift) = ((s.h * s.w) as isize, dy * s.w as isize + dx);
        let valid = (-shift).clamp(0, hw) as usize..(hw - shift).clamp(0, hw) as usize;
        Shift { shift, valid: valid.start..valid.end.max(valid.start), dx }
    }

    /// Zeroes the columns of `row` (rows of `w` pixels) whose reads wrap around, column by
    /// column (one or two a row: a strided loop, not a call to `memset` per row).
    fn zero_wrapped(&self, row: &mut [f32], w: usize) {
        let d = self.dx.unsigned_abs().min(w);
        let columns = if self.dx < 0 { 0..d } else { w - d..w };
        for col in columns {
            row.iter_mut().skip(col).step_by(w).for_each(|v| *v = 0.0);
        }
    }

    /// The input range read by the valid outputs.
    fn source(&self) -> std::ops::Range<usize> {
        if self.valid.is_empty() {
            return 0..0;
        }
        (self.valid.start as isize + self.shift) as usize..(self.valid.end as isize + self.shift) as usize
    }
}

vectorized_fn! {
    /// Writes the patch matrix `[C KH KW, OH OW]` of one image `x` `[C, H, W]` into `cols`, whose
    /// rows are `ld` elements apart; `taps` is [`tap_offsets`] of the shape.
    fn im2col(s: &ConvShape, x: &[f32], cols: &mut [f32], ld: usize, taps: &[u32]) {
        let (ohw, kk) = (s.pixels(), s.kh * s.kw);
        for c in 0..s.c {
            let plane = &x[c * s.h * s.w..][..s.h * s.w];
            for t in 0..kk {
                let row = &mut cols[(c * kk + t) * ld..][..ohw];
                if !s.taps_are_shifts() {
                    for (o, &i) in row.iter_mut().zip(&taps[t * ohw..][..ohw]) {
                        *o = plane.get(i as usize).copied().unwrap_or(0.0);
                    }
                    continue;
                }
                let tap = Shift::of(s, t);
                row[..tap.valid.start].fill(0.0);
                row[tap.valid.clone()].copy_from_slice(&plane[tap.source()]);
                row[tap.valid.end..].fill(0.0);
                tap.zero_wrapped(row, s.w);
            }
        }
    }
}

vectorized_fn! {
    /// Adds the patch gradients `cols` `[C KH KW, OH OW]` of one image (rows `ld` elements apart)
    /// into `gx` `[C, H, W]`; `taps` as for [`im2col`]. Under shifts, the wrapped columns of
    /// `cols` are zeroed first (they are scratch).
    fn col2im(s: &ConvShape, cols: &mut [f32], ld: usize, gx: &mut [f32], taps: &[u32]) {
        let (ohw, kk) = (s.pixels(), s.kh * s.kw);
        for c in 0..s.c {
            let plane = &mut gx[c * s.h * s.w..][..s.h * s.w];
            for t in 0..kk {
                let row = &mut cols[(c * kk + t) * ld..][..ohw];
                if !s.taps_are_shifts() {
                    for (v, &i) in row.iter().zip(&taps[t * ohw..][..ohw]) {
                        if let Some(d) = plane.get_mut(i as usize) {
                            *d += v;
                        }
                    }
                    continue;
                }
                let tap = Shift::of(s, t);
                tap.zero_wrapped(row, s.w);
                for (d, v) in plane[tap.source()].iter_mut().zip(&row[tap.valid.clone()]) {
                    *d += v;
                }
            }
        }
    }
}

/// Per-thread scratch: the patch matrix and a product's `[rows, G OH OW]` block. Buffers only
/// grow, so after the first step of a training run no group allocates or zeroes memory.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    block: Vec<f32>,
}

thread_local! {
    /// The scratch of each thread that runs groups of images, kept between calls.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `f` with this thread's scratch (a fresh one if it is already in use further up the
/// stack, which only happens if a caller nests convolutions inside a group).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// The first `len` elements of `buf`, grown (never shrunk) to hold them; stale values are left
/// in place for the caller to overwrite.
fn grown(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// A new array of `n` images of `per_image` elements, zeroed a group at a time, each group
/// then passed to `f(first image, group's slice, scratch, threaded)`; `threaded` says whether
/// `f`'s products may use threads. Zeroing in the thread that fills the group, right before
/// it does, keeps the group in that core's cache.
fn map_groups(
    s: &ConvShape,
    per_image: usize,
    f: impl Fn(usize, &mut [f32], &mut Scratch, bool) + Sync + Send,
) -> Vec<f32> {
    let len = s.n * per_image;
    if len == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let run = |i: usize, group: &mut [MaybeUninit<f32>], scratch: &mut Scratch, threaded: bool| {
        group.fill(MaybeUninit::new(0.0));
        // SAFETY: every element of `group` was initialised on the line above.
        let group = unsafe { &mut *(group as *mut [MaybeUninit<f32>] as *mut [f32]) };
        f(i * s.group(), group, scratch, threaded);
    };
    let chunk = s.group() * per_image;
    if s.n.div_ceil(s.group()) >= super::threads() {
        spare.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| with_scratch(|scratch| run(i, o, scratch, false)));
    } else {
        with_scratch(|scratch| spare.chunks_mut(chunk).enumerate().for_each(|(i, o)| run(i, o, scratch, true)));
    }
    // SAFETY: the chunks cover the first `len` elements, and each was initialised by `run`.
    unsafe { out.set_len(len) };
    out
}

/// The patch matrix `[C KH KW, G OH OW]` of images `first..first + count` of `x`: the image
/// itself for one image under a 1x1 kernel, else built in `cols`.
fn patches<'a>(
    s: &ConvShape,
    x: &'a [f32],
    (first, count): (usize, usize),
    taps: &[u32],
    cols: &'a mut Vec<f32>,
) -> &'a [f32] {
    if count == 1 && s.patches_are_input() {
        return &x[first * s.image_len()..][..s.image_len()];
    }
    let ld = count * s.pixels();
    let cols = grown(cols, s.patch_rows() * ld);
    for j in 0..count {
        let img = &x[(first + j) * s.image_len()..][..s.image_len()];
        im2col(s, img, &mut cols[j * s.pixels()..], ld, taps);
    }
    cols
}

/// The `[O, G OH OW]` block of `count` images of an NCHW tensor `t` with `O` channels: the
/// images themselves for one image, else gathered into `block`.
fn gather<'a>(s: &ConvShape, t: &'a [f32], count: usize, block: &'a mut Vec<f32>) -> &'a [f32] {
    let p = s.pixels();
    if count == 1 {
        return &t[..s.o * p];
    }
    let block = grown(block, s.o * count * p);
    for j in 0..count {
        for o in 0..s.o {
            block[o * count * p + j * p..][..p].copy_from_slice(&t[(j * s.o + o) * p..][..p]);
        }
    }
    block
}

/// `out = W patches` for a group of `count` images, `out` their NCHW outputs, each plane
/// seeded with `bias` first where given (then accumulated onto); with `accumulate` the product
/// is added to what `out` holds.
#[allow(clippy::too_many_arguments)]
fn forward_product(
    s: &ConvShape,
    w: &[f32],
    cols: &[f32],
    count: usize,
    out: &mut [f32],
    accumulate: bool,
    block: &mut Vec<f32>,
    threaded: bool,
) {
    let p = s.pixels();
    let g = Gemm { m: s.o, n: count * p, k: s.patch_rows(), trans_a: false, trans_b: false, alpha: 1.0, relu: false };
    if count == 1 {
        product_into(out, &g, w, cols, accumulate, threaded);
        return;
    }
    let block = grown(block, s.o * count * p);
    product_into(block, &g, w, cols, false, threaded);
    for j in 0..count {
        for o in 0..s.o {
            let (dst, src) = (&mut out[(j * s.o + o) * p..][..p], &block[o * count * p + j * p..][..p]);
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
}

/// Fills each channel plane of the NCHW outputs `y` with its bias.
fn seed_bias(s: &ConvShape, y: &mut [f32], bias: &[f32]) {
    for (i, plane) in y.chunks_mut(s.pixels().max(1)).enumerate() {
        plane.fill(bias[i % s.o]);
    }
}

/// Images in a group whose outputs are `out` (`per_image` elements each).
fn count(out: &[f32], per_image: usize) -> usize {
    out.len() / per_image
}

/// `act(conv(x, w) + bias)`: output `[n, o, oh, ow]`.
pub fn conv2d(s: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    let per_image = s.o * s.pixels();
    let taps = tap_offsets(s);
    map_groups(s, per_image, |first, y_g, scratch, threaded| {
        let k = count(y_g, per_image);
        let cols = patches(s, x, (first, k), &taps, &mut scratch.cols);
        if let Some(b) = bias {
            seed_bias(s, y_g, b);
        }
        forward_product(s, w, cols, k, y_g, bias.is_some(), &mut scratch.block, threaded);
        if relu {
            y_g.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    })
}

/// Forward mode of `act(conv(x, w) + bias)`: `(y, dy)` with
/// `dy = act'·(conv(dx, w) + conv(x, dw) + dbias)`; `dx = None` means `dx = 0`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_jvp(
    s: &ConvShape,
    x: &[f32],
    dx: Option<&[f32]>,
    w: &[f32],
    dw: &[f32],
    bias: Option<(&[f32], &[f32])>,
    relu: bool,
) -> (Vec<f32>, Vec<f32>) {
    let per_image = s.o * s.pixels();
    let mut y = zeros(s.n * per_image);
    let mut dy = zeros(s.n * per_image);
    if per_image == 0 || s.n == 0 {
        return (y, dy);
    }
    let g = s.group();
    let taps = tap_offsets(s);
    let group = |first: usize, y_g: &mut [f32], dy_g: &mut [f32], scratch: &mut Scratch, threaded: bool| {
        let k = count(y_g, per_image);
        if let Some((b, db)) = bias {
            seed_bias(s, y_g, b);
            seed_bias(s, dy_g, db);
        }
        let cols = patches(s, x, (first, k), &taps, &mut scratch.cols);
        forward_product(s, w, cols, k, y_g, bias.is_some(), &mut scratch.block, threaded);
        forward_product(s, dw, cols, k, dy_g, bias.is_some(), &mut scratch.block, threaded);
        if let Some(dx) = dx {
            let dcols = patches(s, dx, (first, k), &taps, &mut scratch.cols);
            forward_product(s, w, dcols, k, dy_g, true, &mut scratch.block, threaded);
        }
        if relu {
            for (v, t) in y_g.iter_mut().zip(dy_g.iter_mut()) {
                if *v <= 0.0 {
                    (*v, *t) = (0.0, 0.0);
                }
            }
        }
    };
    if s.n.div_ceil(g) >= super::threads() {
        y.par_chunks_mut(g * per_image)
            .zip(dy.par_chunks_mut(g * per_image))
            .enumerate()
            .for_each(|(i, (y_g, dy_g))| with_scratch(|scratch| group(i * g, y_g, dy_g, scratch, false)));
    } else {
        with_scratch(|scratch| {
            for (i, (y_g, dy_g)) in y.chunks_mut(g * per_image).zip(dy.chunks_mut(g * per_image)).enumerate() {
                group(i * g, y_g, dy_g, scratch, true);
            }
        });
    }
    (y, dy)
}

/// Gradient with respect to the input, `[n, c, h, w]`.
pub fn conv2d_backward_data(s: &ConvShape, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let per_image = s.image_len();
    let taps = tap_offsets(s);
    map_groups(s, per_image, |first, gx_g, scratch, threaded| {
        let k = count(gx_g, per_image);
        let ld = k * s.pixels();
        let gy_g = gather(s, &gy[first * s.o * s.pixels()..], k, &mut scratch.block);
        // Patch gradients [C KH KW, G OH OW] = Wᵀ gy, W stored [O, C KH KW].
        let g = Gemm { m: s.patch_rows(), n: ld, k: s.o, trans_a: true, trans_b: false, alpha: 1.0, relu: false };
        if k == 1 && s.patches_are_input() {
            product_into(gx_g, &g, w, gy_g, false, threaded);
            return;
        }
        let cols = grown(&mut scratch.cols, s.patch_rows() * ld);
        product_into(cols, &g, w, gy_g, false, threaded);
        for (j, gx_img) in gx_g.chunks_mut(per_image).enumerate() {
            col2im(s, &mut cols[j * s.pixels()..], ld, gx_img, &taps);
        }
    })
}

/// Gradient with respect to the weights, `[o, c, kh, kw]`: `Σ_groups gy patchesᵀ`.
pub fn conv2d_backward_weight(s: &ConvShape, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let len = s.o * s.patch_rows();
    let group = s.group();
    let taps = tap_offsets(s);
    let add_group = |gw: &mut Vec<f32>, scratch: &mut Scratch, first: usize, threaded: bool| {
        let k = group.min(s.n - first);
        let gy_g = gather(s, &gy[first * s.o * s.pixels()..], k, &mut scratch.block);
        let cols = patches(s, x, (first, k), &taps, &mut scratch.cols);
        let g = Gemm {
            m: s.o,
            n: s.patch_rows(),
            k: k * s.pixels(),
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            relu: false,
        };
        product_into(gw, &g, gy_g, cols, true, threaded);
    };
    let firsts: Vec<usize> = (0..s.n).step_by(group).collect();
    let threads = super::threads();
    if firsts.len() >= threads {
        // One contiguous run of groups and one partial sum per thread.
        let per_thread = firsts.len().div_ceil(threads);
        let partial = |run: &[usize]| {
            let mut gw = vec![0f32; len];
            with_scratch(|scratch| run.iter().for_each(|&first| add_group(&mut gw, scratch, first, false)));
            gw
        };
        let partials: Vec<Vec<f32>> = firsts.par_chunks(per_thread).map(partial).collect();
        let mut parts = partials.into_iter();
        let mut gw = parts.next().unwrap_or_else(|| vec![0f32; len]);
        parts.for_each(|p| gw.iter_mut().zip(&p).for_each(|(x, y)| *x += y));
        gw
    } else {
        let firsts = firsts.into_iter();
        let mut gw = zeros(len);
        with_scratch(|scratch| firsts.for_each(|first| add_group(&mut gw, scratch, first, true)));
        gw
    }
}

/// Gradient with respect to the bias: the sums of each output channel's plane over the batch.
pub fn conv2d_backward_bias(n: usize, o: usize, hw: usize, gy: &[f32]) -> Vec<f32> {
    let image_sums = |img: &[f32]| -> Vec<f32> { img.chunks(hw.max(1)).map(|p| p.iter().sum()).collect() };
    let per_image = o * hw;
    if per_image == 0 || n == 0 {
        return vec![0.0; o];
    }
    gy.par_chunks(per_image).with_min_len(8).map(image_sums).reduce(
        || vec![0f32; o],
        |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        },
    )
}
