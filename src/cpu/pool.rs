//! Max pooling of the CPU backend: the reference's loops, (image, channel) planes over threads.

use super::parallel::zeros;
use crate::reference::pool::{self as reference, PoolShape};
use rayon::prelude::*;

/// Max pooling: `(y, argmax)` with `argmax` the flat input offset of each window's first
/// maximum.
pub fn maxpool2d(s: &PoolShape, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let planes = s.n * s.c;
    let plane = PoolShape { n: 1, c: 1, ..*s };
    let (hw, ohw) = (s.h * s.w, s.oh * s.ow);
    if planes == 0 || ohw == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut y = zeros(planes * ohw);
    let mut idx = vec![0u32; planes * ohw];
    let per = (super::parallel::PAR_MIN / ohw).max(1);
    y.par_chunks_mut(per * ohw).zip(idx.par_chunks_mut(per * ohw)).enumerate().for_each(|(b, (yb, ib))| {
        for (j, (yp, ip)) in yb.chunks_mut(ohw).zip(ib.chunks_mut(ohw)).enumerate() {
            let p = b * per + j;
            let (py, pi) = reference::maxpool2d(&plane, &x[p * hw..][..hw]);
            yp.copy_from_slice(&py);
            for (o, i) in ip.iter_mut().zip(pi) {
                *o = i + (p * hw) as u32;
            }
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
