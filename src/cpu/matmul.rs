//! Matrix products of the CPU backend on the `gemm` crate (packed, cache-blocked, SIMD
//! micro-kernels, threads over rayon), with the epilogues of the GPU kernels applied in place.

use super::parallel::{self, zeros};
use crate::reference::matmul::Gemm;
use gemm::Parallelism;

/// `c = alpha op(A) op(B)`, or `c += alpha op(A) op(B)` with `accumulate`; `c` is row-major
/// `[g.m, g.n]` (the relu flag of `g` is not applied here). Threads over the whole machine
/// when `threaded`; single-threaded inside an outer parallel loop.
pub fn product_into(c: &mut [f32], g: &Gemm, a: &[f32], b: &[f32], accumulate: bool, threaded: bool) {
    let (m, n, k) = (g.m, g.n, g.k);
    debug_assert_eq!(c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    assert!(a.len() >= m * k && b.len() >= k * n, "gemm operands shorter than their shapes");
    // (row, column) strides of op(A) [m, k] and op(B) [k, n]; transposed operands are stored
    // [k, m] and [n, k].
    let (a_rs, a_cs) = if g.trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, k as isize) } else { (n as isize, 1) };
    let par = if threaded { Parallelism::Rayon(super::threads()) } else { Parallelism::None };
    // SAFETY: the pointers cover m*k, k*n and m*n elements at the given strides (checked above),
    // and `c` does not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            g.alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// `act(alpha op(A) op(B) + bias + beta cin)`, then zeroed where `mask` is not positive (the
/// ReLU backward rule); the same contract as the GPU kernels and the reference.
pub fn matmul(
    g: &Gemm,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    cin: Option<(f32, &[f32])>,
    mask: Option<&[f32]>,
) -> Vec<f32> {
    let (m, n) = (g.m, g.n);
    let mut c = zeros(m * n);
    let seeded = bias.is_some() || cin.is_some();
    if seeded {
        parallel::rows_mut(&mut c, n.max(1), |i, row| {
            if let Some(bias) = bias {
                row.copy_from_slice(bias);
            }
            if let Some((beta, cin)) = cin {
                for (r, x) in row.iter_mut().zip(&cin[i * n..(i + 1) * n]) {
                    *r += beta * x;
                }
            }
        });
    }
    product_into(&mut c, g, a, b, seeded, true);
    if g.relu {
        parallel::map_inplace(&mut c, |v| v.max(0.0));
    }
    if let Some(mask) = mask {
        parallel::zip_inplace(&mut c, mask, |v, x| if x > 0.0 { v } else { 0.0 });
    }
    c
}

/// Forward mode of `act(A B + bias)`: `(C, dC)` with `dC = act'·(dA B + A dB + dbias)`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_jvp(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    da: Option<&[f32]>,
    b: &[f32],
    db: &[f32],
    bias: Option<(&[f32], &[f32])>,
    relu: bool,
) -> (Vec<f32>, Vec<f32>) {
    let g = Gemm { m, n, k, trans_a: false, trans_b: false, alpha: 1.0, relu: false };
    let mut c = matmul(&g, a, b, bias.map(|(b, _)| b), None, None);
    let mut dc = matmul(&g, a, db, bias.map(|(_, db)| db), None, None);
    if let Some(da) = da {
        product_into(&mut dc, &g, da, b, true, true);
    }
    if relu {
        parallel::zip2_inplace(&mut c, &mut dc, |v, t| {
            if *v <= 0.0 {
                (*v, *t) = (0.0, 0.0)
            }
        });
    }
    (c, dc)
}
