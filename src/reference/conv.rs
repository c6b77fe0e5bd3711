//! CPU reference of the 2-D convolutions (`kernels/conv2d.wgsl`, `kernels/conv2d_3x3.wgsl`).
//!
//! Layout NCHW, row-major; weights `[O, C, KH, KW]`; square stride and zero padding.

/// Geometry of one convolution: input `[n, c, h, w]`, weights `[o, c, kh, kw]`, output
/// `[n, o, oh, ow]` with `oh = (h + 2 pad - kh) / stride + 1` (likewise `ow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes, both sides).
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvShape {
    /// The geometry of `x_shape` `[N, C, H, W]` convolved with `w_shape` `[O, C, KH, KW]`, or
    /// `None` when the shapes are not 4-D, the channels differ, the stride is 0 or the padded
    /// input is smaller than the kernel.
    pub fn new(x_shape: &[usize], w_shape: &[usize], stride: usize, pad: usize) -> Option<ConvShape> {
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (x_shape, w_shape) else {
            return None;
        };
        if c != wc || stride == 0 || kh == 0 || kw == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            return None;
        }
        Some(ConvShape {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
        })
    }

    /// Input shape `[n, c, h, w]`.
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Weight shape `[o, c, kh, kw]`.
    pub fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }

    /// Output shape `[n, o, oh, ow]`.
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }

    /// The input coordinate read by output coordinate `out` at kernel offset `k`, if inside.
    fn input_at(&self, out: usize, k: usize, size: usize) -> Option<usize> {
        (out * self.stride + k).checked_sub(self.pad).filter(|&i| i < size)
    }
}

/// `act(conv(x, w) + bias)`: output `[n, o, oh, ow]`.
pub fn conv2d(s: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
    let mut y = vec![0f32; s.n * s.o * s.oh * s.ow];
    for n in 0..s.n {
        for o in 0..s.o {
            let out = &mut y[(n * s.o + o) * s.oh * s.ow..][..s.oh * s.ow];
            for c in 0..s.c {
                let xc = &x[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
                let wc = &w[(o * s.c + c) * s.kh * s.kw..][..s.kh * s.kw];
                for oy in 0..s.oh {
                    for ky in 0..s.kh {
                        let Some(iy) = s.input_at(oy, ky, s.h) else {
                            continue;
                        };
                        for ox in 0..s.ow {
                            for kx in 0..s.kw {
                                if let Some(ix) = s.input_at(ox, kx, s.w) {
                                    out[oy * s.ow + ox] += xc[iy * s.w + ix] * wc[ky * s.kw + kx];
                                }
                            }
                        }
                    }
                }
            }
            for v in out.iter_mut() {
                if let Some(b) = bias {
                    *v += b[o];
                }
                if relu {
                    *v = v.max(0.0);
                }
            }
        }
    }
    y
}

/// Gradient with respect to the input: `gx[n,c,iy,ix] = Σ gy[n,o,oy,ox] w[o,c,ky,kx]` over the
/// taps that read `(iy, ix)`.
pub fn conv2d_backward_data(s: &ConvShape, gy: &[f32], w: &[f32]) -> Vec<f32> {
    let mut gx = vec![0f32; s.n * s.c * s.h * s.w];
    for n in 0..s.n {
        for o in 0..s.o {
            let g = &gy[(n * s.o + o) * s.oh * s.ow..][..s.oh * s.ow];
            for c in 0..s.c {
                let out = &mut gx[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
                let wc = &w[(o * s.c + c) * s.kh * s.kw..][..s.kh * s.kw];
                for oy in 0..s.oh {
                    for ky in 0..s.kh {
                        let Some(iy) = s.input_at(oy, ky, s.h) else {
                            continue;
                        };
                        for ox in 0..s.ow {
                            for kx in 0..s.kw {
                                if let Some(ix) = s.input_at(ox, kx, s.w) {
                                    out[iy * s.w + ix] += g[oy * s.ow + ox] * wc[ky * s.kw + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    gx
}

/// Gradient with respect to the weights: `gw[o,c,ky,kx] = Σ gy[n,o,oy,ox] x[n,c,iy,ix]`.
pub fn conv2d_backward_weight(s: &ConvShape, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let mut gw = vec![0f32; s.o * s.c * s.kh * s.kw];
    for n in 0..s.n {
        for o in 0..s.o {
            let g = &gy[(n * s.o + o) * s.oh * s.ow..][..s.oh * s.ow];
            for c in 0..s.c {
                let xc = &x[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
                let out = &mut gw[(o * s.c + c) * s.kh * s.kw..][..s.kh * s.kw];
                for oy in 0..s.oh {
                    for ky in 0..s.kh {
                        let Some(iy) = s.input_at(oy, ky, s.h) else {
                            continue;
                        };
                        for ox in 0..s.ow {
                            for kx in 0..s.kw {
                                if let Some(ix) = s.input_at(ox, kx, s.w) {
                                    out[ky * s.kw + kx] += g[oy * s.ow + ox] * xc[iy * s.w + ix];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    gw
}

/// Gradient with respect to the bias: `gb[o] = Σ gy[n, o, :, :]` for `gy` of `[n, o, hw]`.
pub fn conv2d_backward_bias(n: usize, o: usize, hw: usize, gy: &[f32]) -> Vec<f32> {
    let mut gb = vec![0f32; o];
    for b in 0..n {
        for (oc, acc) in gb.iter_mut().enumerate() {
            *acc += gy[(b * o + oc) * hw..][..hw].iter().sum::<f32>();
        }
    }
    gb
}

/// Forward mode of `act(conv(x, w) + bias)`: returns `(y, dy)` with
/// `dy = act'·(conv(dx, w) + conv(x, dw) + dbias)`; `dx = None` means `dx = 0`, `bias` is
/// `(bias, dbias)`.
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
    let mut y = conv2d(s, x, w, bias.map(|(b, _)| b), false);
    let mut dy = conv2d(s, x, dw, bias.map(|(_, db)| db), false);
    if let Some(dx) = dx {
        for (t, v) in dy.iter_mut().zip(conv2d(s, dx, w, None, false)) {
            *t += v;
        }
    }
    if relu {
        for (v, t) in y.iter_mut().zip(dy.iter_mut()) {
            if *v <= 0.0 {
                *v = 0.0;
                *t = 0.0;
            }
        }
    }
    (y, dy)
}
