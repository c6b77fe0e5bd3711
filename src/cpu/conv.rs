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
use crate::reference::conv::ConvShape;
use crate::reference::matmul::Gemm;
use rayon::prelude::*;

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

/// Writes the patch matrix `[C KH KW, OH OW]` of one image `x` `[C, H, W]` into `cols`, whose
/// rows are `ld` elements apart.
fn im2col(s: &ConvShape, x: &[f32], cols: &mut [f32], ld: usize) {
    let (ohw, ow) = (s.pixels(), s.ow);
    for c in 0..s.c {
        let plane = &x[c * s.h * s.w..][..s.h * s.w];
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &mut cols[((c * s.kh + ky) * s.kw + kx) * ld..][..ohw];
                for oy in 0..s.oh {
                    let out = &mut row[oy * ow..][..ow];
                    let Some(iy) = (oy * s.stride + ky).checked_sub(s.pad).filter(|&i| i < s.h) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[iy * s.w..][..s.w];
                    if s.stride == 1 {
                        // Input columns ox + kx - pad for ox in 0..ow, clipped to [0, w).
                        let first = s.pad.saturating_sub(kx).min(ow);
                        let last = (s.w + s.pad).saturating_sub(kx).clamp(first, ow);
                        out[..first].fill(0.0);
                        out[first..last].copy_from_slice(&src[first + kx - s.pad..last + kx - s.pad]);
                        out[last..].fill(0.0);
                    } else {
                        for (ox, o) in out.iter_mut().enumerate() {
                            *o = (ox * s.stride + kx).checked_sub(s.pad).filter(|&i| i < s.w).map_or(0.0, |i| src[i]);
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patch gradients `cols` `[C KH KW, OH OW]` of one image (rows `ld` elements apart)
/// into `gx` `[C, H, W]`.
fn col2im(s: &ConvShape, cols: &[f32], ld: usize, gx: &mut [f32]) {
    let (ohw, ow) = (s.pixels(), s.ow);
    for c in 0..s.c {
        let plane = &mut gx[c * s.h * s.w..][..s.h * s.w];
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &cols[((c * s.kh + ky) * s.kw + kx) * ld..][..ohw];
                for oy in 0..s.oh {
                    let Some(iy) = (oy * s.stride + ky).checked_sub(s.pad).filter(|&i| i < s.h) else {
                        continue;
                    };
                    let src = &row[oy * ow..][..ow];
                    let dst = &mut plane[iy * s.w..][..s.w];
                    if s.stride == 1 {
                        let first = s.pad.saturating_sub(kx).min(ow);
                        let last = (s.w + s.pad).saturating_sub(kx).clamp(first, ow);
                        for (d, v) in dst[first + kx - s.pad..last + kx - s.pad].iter_mut().zip(&src[first..last]) {
                            *d += v;
                        }
                    } else {
                        for (ox, v) in src.iter().enumerate() {
                            if let Some(ix) = (ox * s.stride + kx).checked_sub(s.pad).filter(|&i| i < s.w) {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Per-thread scratch: the patch matrix and a product's `[rows, G OH OW]` block.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    block: Vec<f32>,
}

/// Runs `f(first image, group's slice of out, scratch, threaded)` for each group of images,
/// where `out` holds `per_image` elements an image; `threaded` says whether `f`'s products may
/// use threads.
fn for_each_group(
    s: &ConvShape,
    out: &mut [f32],
    per_image: usize,
    f: impl Fn(usize, &mut [f32], &mut Scratch, bool) + Sync + Send,
) {
    if per_image == 0 || s.n == 0 {
        return;
    }
    let g = s.group();
    if s.n.div_ceil(g) >= super::threads() {
        out.par_chunks_mut(g * per_image)
            .enumerate()
            .for_each_init(Scratch::default, |scratch, (i, o)| f(i * g, o, scratch, false));
    } else {
        let mut scratch = Scratch::default();
        out.chunks_mut(g * per_image).enumerate().for_each(|(i, o)| f(i * g, o, &mut scratch, true));
    }
}

/// The patch matrix `[C KH KW, G OH OW]` of images `first..first + count` of `x`: the image
/// itself for one image under a 1x1 kernel, else built in `cols`.
fn patches<'a>(s: &ConvShape, x: &'a [f32], first: usize, count: usize, cols: &'a mut Vec<f32>) -> &'a [f32] {
    if count == 1 && s.patches_are_input() {
        return &x[first * s.image_len()..][..s.image_len()];
    }
    let ld = count * s.pixels();
    cols.resize(s.patch_rows() * ld, 0.0);
    for j in 0..count {
        let img = &x[(first + j) * s.image_len()..][..s.image_len()];
        im2col(s, img, &mut cols[j * s.pixels()..], ld);
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
    block.resize(s.o * count * p, 0.0);
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
    block.resize(s.o * count * p, 0.0);
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
    let mut y = zeros(s.n * per_image);
    for_each_group(s, &mut y, per_image, |first, y_g, scratch, threaded| {
        let k = count(y_g, per_image);
        let cols = patches(s, x, first, k, &mut scratch.cols);
        if let Some(b) = bias {
            seed_bias(s, y_g, b);
        }
        forward_product(s, w, cols, k, y_g, bias.is_some(), &mut scratch.block, threaded);
        if relu {
            y_g.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    });
    y
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
    let group = |first: usize, y_g: &mut [f32], dy_g: &mut [f32], scratch: &mut Scratch, threaded: bool| {
        let k = count(y_g, per_image);
        if let Some((b, db)) = bias {
            seed_bias(s, y_g, b);
            seed_bias(s, dy_g, db);
        }
        let cols = patches(s, x, first, k, &mut scratch.cols);
        forward_product(s, w, cols, k, y_g, bias.is_some(), &mut scratch.block, threaded);
        forward_product(s, dw, cols, k, dy_g, bias.is_some(), &mut scratch.block, threaded);
        if let Some(dx) = dx {
            let dcols = patches(s, dx, first, k, &mut scratch.cols);
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
            .for_each_init(Scratch::default, |scratch, (i, (y_g, dy_g))| group(i * g, y_g, dy_g, scratch, false));
    } else {
        let mut scratch = Scratch::default();
        for (i, (y_g, dy_g)) in y.chunks_mut(g * per_image).zip(dy.chunks_mut(g * per_image)).enumerate() {
            group(i * g, y_g, dy_g, &mut scratch, true);
        }
    }
    (y, dy)
}

/// Gradient with respect to the input, `[n, c, h, w]`.
pub fn conv2d_backward_data(s: &ConvShape, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let per_image = s.image_len();
    let mut gx = zeros(s.n * per_image);
    for_each_group(s, &mut gx, per_image, |first, gx_g, scratch, threaded| {
        let k = count(gx_g, per_image);
        let ld = k * s.pixels();
        let gy_g = gather(s, &gy[first * s.o * s.pixels()..], k, &mut scratch.block);
        // Patch gradients [C KH KW, G OH OW] = Wᵀ gy, W stored [O, C KH KW].
        let g = Gemm { m: s.patch_rows(), n: ld, k: s.o, trans_a: true, trans_b: false, alpha: 1.0, relu: false };
        if k == 1 && s.patches_are_input() {
            product_into(gx_g, &g, w, gy_g, false, threaded);
            return;
        }
        scratch.cols.resize(s.patch_rows() * ld, 0.0);
        product_into(&mut scratch.cols, &g, w, gy_g, false, threaded);
        for (j, gx_img) in gx_g.chunks_mut(per_image).enumerate() {
            col2im(s, &scratch.cols[j * s.pixels()..], ld, gx_img);
        }
    });
    gx
}

/// Gradient with respect to the weights, `[o, c, kh, kw]`: `Σ_groups gy patchesᵀ`.
pub fn conv2d_backward_weight(s: &ConvShape, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let len = s.o * s.patch_rows();
    let group = s.group();
    let add_group = |gw: &mut Vec<f32>, scratch: &mut Scratch, first: usize, threaded: bool| {
        let k = group.min(s.n - first);
        let gy_g = gather(s, &gy[first * s.o * s.pixels()..], k, &mut scratch.block);
        let cols = patches(s, x, first, k, &mut scratch.cols);
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
    let firsts = (0..s.n).step_by(group);
    if s.n.div_ceil(group) >= super::threads() {
        firsts
            .collect::<Vec<_>>()
            .into_par_iter()
            .fold(
                || (vec![0f32; len], Scratch::default()),
                |(mut gw, mut scratch), first| {
                    add_group(&mut gw, &mut scratch, first, false);
                    (gw, scratch)
                },
            )
            .map(|(gw, _)| gw)
            .reduce(
                || vec![0f32; len],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
    } else {
        let (mut gw, mut scratch) = (zeros(len), Scratch::default());
        firsts.for_each(|first| add_group(&mut gw, &mut scratch, first, true));
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
