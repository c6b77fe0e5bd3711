//! CPU reference of batch normalisation (`kernels/norm.wgsl`) and dropout
//! (`kernels/dropout.wgsl`).
//!
//! Layout: `x` is `[N, C, H, W]` (or `[N, C]`, treated as `H = W = 1`); the statistics of
//! channel `c` are taken over its `count = N·H·W` elements `x[·, c, ·, ·]`. Statistics and every
//! per-element formula are evaluated in f64 (two passes: mean, then centred variance) and
//! rounded to f32 at the end.
//!
//! Notation of the formulas below, per channel: `M = count`, `mu` the mean, `var` the biased
//! variance, `s = 1 / sqrt(var + eps)` (`invstd`), `xh = (x - mu) s`, `mean(.)` a per-channel
//! mean over the `M` elements.

/// The geometry of a batch normalisation: `n` samples, `c` channels, `hw` pixels per channel
/// and sample (1 for `[N, C]` inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnShape {
    /// Batch size `N`.
    pub n: usize,
    /// Channels `C`.
    pub c: usize,
    /// Pixels per sample and channel, `H·W` (1 for dense layers).
    pub hw: usize,
}

impl BnShape {
    /// Elements per channel, `N·H·W`.
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    /// All elements, `N·C·H·W`.
    pub fn numel(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// The flat indices of channel `c`'s elements.
    pub fn channel(&self, c: usize) -> impl Iterator<Item = usize> {
        let (cs, hw) = (self.c, self.hw);
        (0..self.n).flat_map(move |n| {
            let base = (n * cs + c) * hw;
            base..base + hw
        })
    }
}

/// `(mean, invstd)` of channel `c` of `x`, two-pass, in f64.
fn stats(s: &BnShape, x: &[f32], c: usize, eps: f32) -> (f64, f64) {
    let m = s.count() as f64;
    let mean = s.channel(c).map(|i| x[i] as f64).sum::<f64>() / m;
    let var = s
        .channel(c)
        .map(|i| {
            let d = x[i] as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / m;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

/// Per-channel mean over the channel's elements of `f(i)`.
fn cmean(s: &BnShape, c: usize, f: impl Fn(usize) -> f64) -> f64 {
    s.channel(c).map(f).sum::<f64>() / s.count() as f64
}

/// Training mode: `(y, mean, invstd)` with `y = gamma (x - mean) invstd + beta` and batch
/// statistics (biased variance).
pub fn batchnorm_train(
    s: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; s.numel()];
    let mut means = vec![0.0; s.c];
    let mut invstds = vec![0.0; s.c];
    for c in 0..s.c {
        let (mu, is) = stats(s, x, c, eps);
        let (g, b) = (gamma[c] as f64, beta[c] as f64);
        for i in s.channel(c) {
            y[i] = (g * (x[i] as f64 - mu) * is + b) as f32;
        }
        means[c] = mu as f32;
        invstds[c] = is as f32;
    }
    (y, means, invstds)
}

/// Eval mode: `y = gamma (x - running_mean) / sqrt(running_var + eps) + beta`.
pub fn batchnorm_eval(
    s: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Vec<f32> {
    let mut y = vec![0.0; s.numel()];
    for c in 0..s.c {
        let is = 1.0 / (running_var[c] as f64 + eps as f64).sqrt();
        let (mu, g, b) = (running_mean[c] as f64, gamma[c] as f64, beta[c] as f64);
        for i in s.channel(c) {
            y[i] = (g * (x[i] as f64 - mu) * is + b) as f32;
        }
    }
    y
}

/// Eval-mode backward `(gx, ggamma, gbeta)`: `gx = gy gamma s`, `ggamma = sum(gy xh)`,
/// `gbeta = sum(gy)` with the running statistics in `s` and `xh`.
pub fn batchnorm_eval_backward(
    s: &BnShape,
    gy: &[f32],
    x: &[f32],
    gamma: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut gx = vec![0.0; s.numel()];
    let mut gg = vec![0.0; s.c];
    let mut gb = vec![0.0; s.c];
    for c in 0..s.c {
        let is = 1.0 / (running_var[c] as f64 + eps as f64).sqrt();
        let (mu, g) = (running_mean[c] as f64, gamma[c] as f64);
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        for i in s.channel(c) {
            let gyi = gy[i] as f64;
            gx[i] = (gyi * g * is) as f32;
            sg += gyi;
            sgx += gyi * (x[i] as f64 - mu) * is;
        }
        gg[c] = sgx as f32;
        gb[c] = sg as f32;
    }
    (gx, gg, gb)
}

/// Running-statistics update: `new_mean = (1 - momentum) running_mean + momentum mean`,
/// `new_var = (1 - momentum) running_var + momentum var_u` with the unbiased batch variance
/// `var_u = max(1 / invstd² - eps, 0) · count / (count - 1)` (`count >= 2`).
pub fn batchnorm_update_running(
    running_mean: &[f32],
    running_var: &[f32],
    mean: &[f32],
    invstd: &[f32],
    count: usize,
    momentum: f32,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mo = momentum as f64;
    let unbias = count as f64 / (count as f64 - 1.0);
    let nm = running_mean.iter().zip(mean).map(|(&r, &m)| ((1.0 - mo) * r as f64 + mo * m as f64) as f32).collect();
    let nv = running_var
        .iter()
        .zip(invstd)
        .map(|(&r, &is)| {
            let is = is as f64;
            let var = (1.0 / (is * is) - eps as f64).max(0.0) * unbias;
            ((1.0 - mo) * r as f64 + mo * var) as f32
        })
        .collect();
    (nm, nv)
}

/// Training-mode backward `(gx, ggamma, gbeta)` from the saved `mean` and `invstd`:
/// `gbeta = sum(gy)`, `ggamma = sum(gy xh)`,
/// `gx = gamma s (gy - mean(gy) - xh mean(gy xh))`.
pub fn batchnorm_backward(
    s: &BnShape,
    gy: &[f32],
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = s.count() as f64;
    let mut gx = vec![0.0; s.numel()];
    let mut gg = vec![0.0; s.c];
    let mut gb = vec![0.0; s.c];
    for c in 0..s.c {
        let (mu, is, g) = (mean[c] as f64, invstd[c] as f64, gamma[c] as f64);
        let xh = |i: usize| (x[i] as f64 - mu) * is;
        let sg: f64 = s.channel(c).map(|i| gy[i] as f64).sum();
        let sgx: f64 = s.channel(c).map(|i| gy[i] as f64 * xh(i)).sum();
        let (a, b) = (sg / m, sgx / m);
        for i in s.channel(c) {
            gx[i] = (g * is * (gy[i] as f64 - a - xh(i) * b)) as f32;
        }
        gg[c] = sgx as f32;
        gb[c] = sg as f32;
    }
    (gx, gg, gb)
}

/// Training-mode forward mode `(y, dy)`: with `dxh = s (dx - mean(dx) - xh mean(xh dx))`
/// (the derivative of `xh` through `x`, the mean and the variance),
/// `dy = dgamma xh + gamma dxh + dbeta`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_jvp(
    s: &BnShape,
    x: &[f32],
    dx: &[f32],
    gamma: &[f32],
    dgamma: &[f32],
    beta: &[f32],
    dbeta: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; s.numel()];
    let mut dy = vec![0.0; s.numel()];
    for c in 0..s.c {
        let (mu, is) = stats(s, x, c, eps);
        let xh = |i: usize| (x[i] as f64 - mu) * is;
        let mdx = cmean(s, c, |i| dx[i] as f64);
        let mxdx = cmean(s, c, |i| xh(i) * dx[i] as f64);
        let (g, dg, b, db) = (gamma[c] as f64, dgamma[c] as f64, beta[c] as f64, dbeta[c] as f64);
        for i in s.channel(c) {
            let h = xh(i);
            let dh = is * (dx[i] as f64 - mdx - h * mxdx);
            y[i] = (g * h + b) as f32;
            dy[i] = (dg * h + g * dh + db) as f32;
        }
    }
    (y, dy)
}

/// Tangents `(dgx, dggamma, dgbeta)` of the training-mode backward rule (statistics recomputed
/// from `x`) along `(dgy, dx, dgamma)`. With `a = mean(gy)`, `b = mean(gy xh)`,
/// `ds = -s² mean(xh dx)`, `dxh` as in [`batchnorm_jvp`], `da = mean(dgy)` and
/// `db = mean(dgy xh) + s (mean(gy dx) - a mean(dx) - b mean(xh dx))`:
/// `dgx = (dgamma s + gamma ds)(gy - a - xh b) + gamma s (dgy - da - dxh b - xh db)`,
/// `dggamma = M db`, `dgbeta = M da`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_jvp(
    s: &BnShape,
    gy: &[f32],
    dgy: &[f32],
    x: &[f32],
    dx: &[f32],
    gamma: &[f32],
    dgamma: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = s.count() as f64;
    let mut dgx = vec![0.0; s.numel()];
    let mut dgg = vec![0.0; s.c];
    let mut dgb = vec![0.0; s.c];
    for c in 0..s.c {
        let (mu, is) = stats(s, x, c, eps);
        let xh = |i: usize| (x[i] as f64 - mu) * is;
        let f = |v: &[f32], i: usize| v[i] as f64;
        let a = cmean(s, c, |i| f(gy, i));
        let b = cmean(s, c, |i| f(gy, i) * xh(i));
        let mdx = cmean(s, c, |i| f(dx, i));
        let mxdx = cmean(s, c, |i| xh(i) * f(dx, i));
        let da = cmean(s, c, |i| f(dgy, i));
        let mgdx = cmean(s, c, |i| f(gy, i) * f(dx, i));
        let mdgx = cmean(s, c, |i| f(dgy, i) * xh(i));
        let ds = -is * is * mxdx;
        let db = mdgx + is * (mgdx - a * mdx - b * mxdx);
        let (g, dg) = (gamma[c] as f64, dgamma[c] as f64);
        for i in s.channel(c) {
            let h = xh(i);
            let dh = is * (f(dx, i) - mdx - h * mxdx);
            let r = f(gy, i) - a - h * b;
            let dr = f(dgy, i) - da - dh * b - h * db;
            dgx[i] = ((dg * is + g * ds) * r + g * is * dr) as f32;
        }
        dgg[c] = (m * db) as f32;
        dgb[c] = (m * da) as f32;
    }
    (dgx, dgg, dgb)
}

/// A 32-bit integer hash (the "lowbias32" finaliser of Chris Wellons), a bijection on u32.
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The two 32-bit keys derived from a 64-bit dropout seed (`seed_key` in `dropout.wgsl`).
pub fn dropout_keys(seed: u64) -> (u32, u32) {
    let k0 = hash32(seed as u32 ^ hash32((seed >> 32) as u32 ^ 0x9e37_79b9));
    let k1 = hash32(k0 ^ 0x85eb_ca6b);
    (k0, k1)
}

/// The random word of element `i` under keys `(k0, k1)`: `hash32(hash32(i ^ k0) ^ k1)`.
pub fn dropout_bits(keys: (u32, u32), i: u32) -> u32 {
    hash32(hash32(i ^ keys.0) ^ keys.1)
}

/// The drop threshold of probability `p`: element `i` is dropped when
/// `dropout_bits(..) >> 8 < threshold`, i.e. with probability `threshold / 2^24 ≈ p`.
pub fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * (1u32 << 24) as f64).round() as u32
}

/// Inverted dropout `(y, mask)`: `mask[i]` is 0 when element `i` is dropped and `1 / (1 - p)`
/// otherwise (computed in f32), `y = x * mask`. `p` must be in `[0, 1)` (checked by the op).
pub fn dropout(x: &[f32], p: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let keys = dropout_keys(seed);
    let t = dropout_threshold(p);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.len()).map(|i| if dropout_bits(keys, i as u32) >> 8 < t { 0.0 } else { keep }).collect();
    let y = x.iter().zip(&mask).map(|(a, m)| a * m).collect();
    (y, mask)
}
