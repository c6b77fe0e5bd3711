//! CPU reference of 2-D max pooling (`kernels/pool.wgsl`).
//!
//! Layout NCHW; square window `k`, square stride, no padding. The argmax of a window is the
//! first maximum in row-major window order, stored as the flat offset of the input element.

/// Geometry of one pooling: input `[n, c, h, w]`, output `[n, c, oh, ow]` with
/// `oh = (h - k) / stride + 1` (likewise `ow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window size (both axes).
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolShape {
    /// The geometry of pooling `x_shape` `[N, C, H, W]`, or `None` when it is not 4-D, `k` or
    /// `stride` is 0, or the window does not fit the input.
    pub fn new(x_shape: &[usize], k: usize, stride: usize) -> Option<PoolShape> {
        let &[n, c, h, w] = x_shape else { return None };
        if k == 0 || stride == 0 || k > h || k > w {
            return None;
        }
        Some(PoolShape { n, c, h, w, k, stride, oh: (h - k) / stride + 1, ow: (w - k) / stride + 1 })
    }

    /// Input shape `[n, c, h, w]`.
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Output shape `[n, c, oh, ow]`.
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.oh, self.ow]
    }
}

/// Max pooling: returns `(y, argmax)` where `argmax` holds flat input offsets.
pub fn maxpool2d(s: &PoolShape, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let mut y = Vec::with_capacity(s.n * s.c * s.oh * s.ow);
    let mut idx = Vec::with_capacity(y.capacity());
    for plane in 0..s.n * s.c {
        let base = plane * s.h * s.w;
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let mut best_i = base + oy * s.stride * s.w + ox * s.stride;
                let mut best = x[best_i];
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let i = base + (oy * s.stride + ky) * s.w + ox * s.stride + kx;
                        if x[i] > best {
                            best = x[i];
                            best_i = i;
                        }
                    }
                }
                y.push(best);
                idx.push(best_i as u32);
            }
        }
    }
    (y, idx)
}

/// Max-pooling backward over `planes` (n, c) planes of `hw` inputs and `ohw` outputs:
/// `gx[argmax[j]] += gy[j]` (sums where windows overlap); an index outside the plane of its
/// output is ignored.
pub fn maxpool2d_backward(planes: usize, hw: usize, ohw: usize, gy: &[f32], idx: &[u32]) -> Vec<f32> {
    let mut gx = vec![0f32; planes * hw];
    for plane in 0..planes {
        let base = plane * hw;
        for j in plane * ohw..(plane + 1) * ohw {
            let i = idx[j] as usize;
            if (base..base + hw).contains(&i) {
                gx[i] += gy[j];
            }
        }
    }
    gx
}

/// Forward mode of max pooling: `(y, dy, argmax)` with `dy[j] = dx[argmax[j]]`.
pub fn maxpool2d_jvp(s: &PoolShape, x: &[f32], dx: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let (y, idx) = maxpool2d(s, x);
    let dy = idx.iter().map(|&i| dx[i as usize]).collect();
    (y, dy, idx)
}
