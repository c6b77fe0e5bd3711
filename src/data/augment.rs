//! Seeded randomness for training: epoch shuffles and CIFAR-style crop-and-flip augmentation.
//! Everything is a pure function of its seed (SplitMix64), so runs are reproducible.

/// One step of SplitMix64.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in `0..n` (n > 0) by the multiply-high method.
fn below(state: &mut u64, n: u64) -> u64 {
    ((splitmix64(state) as u128 * n as u128) >> 64) as u64
}

/// Seeded epoch order: a Fisher–Yates shuffle of `0..n` driven by SplitMix64; the same seed
/// gives the same order.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        let j = below(&mut s, i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// The augmentation drawn for image `index` of a batch augmented with `seed` and padding
/// `pad`: a shift `(dy, dx)`, each in `-pad..=pad`, and whether to mirror horizontally
/// (probability 1/2). [`augment_crop_flip`] uses exactly these.
pub fn crop_flip_params(seed: u64, index: usize, pad: usize) -> (isize, isize, bool) {
    let mut s = seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    splitmix64(&mut s);
    let span = 2 * pad as u64 + 1;
    let dy = below(&mut s, span) as isize - pad as isize;
    let dx = below(&mut s, span) as isize - pad as isize;
    let flip = splitmix64(&mut s) >> 63 == 1;
    (dy, dx, flip)
}

/// CIFAR augmentation of a batch in place: for each image `i` (layout
/// `[n, channels, height, width]`), with `(dy, dx, flip) = crop_flip_params(seed, i, pad)`, a
/// random crop of the image zero-padded by `pad` on every side, then an optional horizontal
/// mirror:
///
/// `out[c][y][x] = in[c][y + dy][x' + dx]` (0 outside the image), where `x' = width - 1 - x`
/// when `flip`, else `x`.
///
/// # Panics
/// When `images.len()` is not a multiple of `channels * height * width`.
pub fn augment_crop_flip(images: &mut [f32], channels: usize, height: usize, width: usize, pad: usize, seed: u64) {
    shift_batch(images, [channels, height, width], pad, 0.0, true, seed);
}

/// Random translations of a batch in place (digits: no mirroring): image `i` is shifted by the
/// `(dy, dx)` of `crop_flip_params(seed, i, pad)`, `out[c][y][x] = in[c][y + dy][x + dx]`, and
/// pixels shifted in from outside take the value `fill` (the normalised background).
///
/// # Panics
/// When `images.len()` is not a multiple of `channels * height * width`.
pub fn augment_shift(
    images: &mut [f32],
    channels: usize,
    height: usize,
    width: usize,
    pad: usize,
    fill: f32,
    seed: u64,
) {
    shift_batch(images, [channels, height, width], pad, fill, false, seed);
}

/// The shared body of [`augment_crop_flip`] and [`augment_shift`].
fn shift_batch(
    images: &mut [f32],
    [channels, height, width]: [usize; 3],
    pad: usize,
    fill: f32,
    mirror: bool,
    seed: u64,
) {
    let s = channels * height * width;
    if s == 0 {
        return;
    }
    assert!(
        images.len().is_multiple_of(s),
        "augmentation: {} values is not a whole number of {channels}x{height}x{width} images",
        images.len()
    );
    let (h, w) = (height as isize, width as isize);
    let mut src = vec![0.0f32; s];
    for (i, img) in images.chunks_exact_mut(s).enumerate() {
        let (dy, dx, flip) = crop_flip_params(seed, i, pad);
        let flip = flip && mirror;
        if dy == 0 && dx == 0 && !flip {
            continue;
        }
        src.copy_from_slice(img);
        for c in 0..channels {
            let plane = &src[c * height * width..(c + 1) * height * width];
            let out = &mut img[c * height * width..(c + 1) * height * width];
            for y in 0..h {
                let sy = y + dy;
                let row = &mut out[(y * w) as usize..((y + 1) * w) as usize];
                if sy < 0 || sy >= h {
                    row.fill(fill);
                    continue;
                }
                let srow = &plane[(sy * w) as usize..((sy + 1) * w) as usize];
                for (x, o) in row.iter_mut().enumerate() {
                    let xx = if flip { w - 1 - x as isize } else { x as isize };
                    let sx = xx + dx;
                    *o = if sx < 0 || sx >= w { fill } else { srow[sx as usize] };
                }
            }
        }
    }
}

/// The batches of an epoch-wise shuffled pass over `len` examples: step `s` takes batch
/// `s mod (len / batch)` of epoch `s div (len / batch)`'s order, which is drawn once, when the
/// epoch's first batch is asked for.
pub struct EpochBatches {
    len: usize,
    batch: usize,
    seed: u64,
    /// The epoch `order` belongs to.
    epoch: Option<usize>,
    order: Vec<usize>,
}

impl EpochBatches {
    /// Batches of `batch` of `len` examples, the orders drawn from `seed`.
    pub fn new(len: usize, batch: usize, seed: u64) -> EpochBatches {
        EpochBatches { len, batch, seed, epoch: None, order: Vec::new() }
    }

    /// The indices of step `step`'s batch.
    pub fn at(&mut self, step: usize) -> &[usize] {
        let per_epoch = (self.len / self.batch).max(1);
        let epoch = step / per_epoch;
        if self.epoch != Some(epoch) {
            self.order = shuffled_indices(self.len, self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
            self.epoch = Some(epoch);
        }
        let b = step % per_epoch;
        &self.order[b * self.batch..((b + 1) * self.batch).min(self.len)]
    }
}
