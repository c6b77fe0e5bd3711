//! Max pooling of the CPU backend: the reference's window scan, written straight into the
//! outputs, blocks of (image, channel) planes over threads.

use super::parallel::zeros;
use super::simd::vectorized_fn;
use crate::reference::pool::PoolShape;
use rayon::prelude::*;

vectorized_fn! {
    /// Pools one plane `x` (`h w` inputs starting at flat offset `base`) into `y` and `idx`
    /// (`oh ow` each): the first maximum of each window in row-major window order.
    fn pool_plane(s: &PoolShape, x: &[f32], base: usize, y: &mut [f32], idx: &mut [u32]) {
        // The common 2x2 window, with its size known to the compiler.
        if s.k == 2 {
            pool_plane_k(s, 2, x, base, y, idx)
        } else {
            pool_plane_k(s, s.k, x, base, y, idx)
        }
    }
}

/// [`pool_plane`] with the window size `k` passed separately, so that a constant propagates.
#[inline(always)]
fn pool_plane_k(s: &PoolShape, k: usize, x: &[f32], base: usize, y: &mut [f32], idx: &mut [u32]) {
    for oy in 0..s.oh {
        for ox in 0..s.ow {
            let first = oy * s.stride * s.w + ox * s.stride;
            let (mut best, mut best_i) = (x[first], first);
            for ky in 0..k {
                let row = first + ky * s.w;
                for (kx, &v) in x[row..row + k].iter().enumerate() {
                    if v > best {
                        (best, best_i) = (v, row + kx);
                    }
                }
            }
            y[oy * s.ow + ox] = best;
            idx[oy * s.ow + ox] = (base + best_i) as u32;
        }
    }
}

/// Max pooling: `(y, argmax)` with `argmax` the flat input offset of each window's first
/// maximum.
pub fn maxpool2d(s: &PoolShape, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let planes = s.n * s.c;
    let (hw, ohw) = (s.h * s.w, s.oh * s.ow);
    if planes == 0 || ohw == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut y = zeros(planes * ohw);
    let mut idx = vec![0u32; planes * ohw];
    let per = (super::parallel::PAR_MIN / hw.max(1)).max(1);
    y.par_chunks_mut(per * ohw).zip(idx.par_chunks_mut(per * ohw)).enumerate().for_each(|(b, (yb, ib))| {
        for (j, (yp, ip)) in yb.chunks_mut(ohw).zip(ib.chunks_mut(ohw)).enumerate() {
            let p = b * per + j;
            pool_plane(s, &x[p * hw..][..hw], p * hw, yp, ip);
        }
    });
    (y, idx)
}

/// Max-pooling backward: `gx[argmax[j]] += gy[j]` within each plane.
pub fn maxpool2d_backward(planes: usize, hw: usize, ohw: usize, gy: &[f32], idx: &[u32]) -> Vec<f32> {
    let mut gx = zeros(planes * hw);
    if hw == 0 {
        return gx;
    }
    gx.par_chunks_mut(hw).enumerate().with_min_len((super::parallel::PAR_MIN / hw).max(1)).for_each(|(p, plane)| {
        let base = p * hw;
        for j in p * ohw..(p + 1) * ohw {
            if let Some(i) = (idx[j] as usize).checked_sub(base).filter(|&i| i < hw) {
                plane[i] += gy[j];
            }
        }
    });
    gx
}

/// Forward mode of max pooling: `(y, dy, argmax)` with `dy[j] = dx[argmax[j]]`.
pub fn maxpool2d_jvp(s: &PoolShape, x: &[f32], dx: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let (y, idx) = maxpool2d(s, x);
    let dy = idx.iter().map(|&i| dx[i as usize]).collect();
    (y, dy, idx)
}
