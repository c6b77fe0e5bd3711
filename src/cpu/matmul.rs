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
    let threads = if threaded { super::threads() } else { 1 };
    // Threads take blocks of rows of C (or of columns, when C is short and wide), each a
    // single-threaded product: one fork per product instead of the GEMM crate's finer
    // synchronisation, which on the products of a small network gave no speed-up on 2 cores.
    let split_rows = m >= n || n < threads * MIN_SPLIT;
    let along = if split_rows { m } else { n };
    let large = m * n * k >= GEMM_THREADS_FROM;
    if threads == 1 || large || along < threads * MIN_SPLIT {
        // One product: on the GEMM crate's own threads when large (they share the packed
        // operands), else on this thread.
        let parallelism = if threads > 1 && large { Parallelism::Rayon(threads) } else { Parallelism::None };
        // SAFETY: `c` covers m*n elements, `a` and `b` their shapes at these strides (asserted
        // above), and `c` does not alias them (it is borrowed mutably).
        unsafe {
            gemm_raw(
                m,
                n,
                k,
                c.as_mut_ptr(),
                n,
                a.as_ptr(),
                (a_rs, a_cs),
                b.as_ptr(),
                (b_rs, b_cs),
                g.alpha,
                accumulate,
                parallelism,
            )
        };
        return;
    }
    let block = along.div_ceil(threads);
    let (c_ptr, a_ptr, b_ptr) = (c.as_mut_ptr() as usize, a.as_ptr() as usize, b.as_ptr() as usize);
    rayon::scope(|s| {
        for start in (0..along).step_by(block) {
            let len = block.min(along - start);
            s.spawn(move |_| {
                let (c, a, b) = (c_ptr as *mut f32, a_ptr as *const f32, b_ptr as *const f32);
                // SAFETY: each task writes its own block of rows (or columns) of `c`, which
                // lie inside it, and reads the matching rows of op(A) (or columns of op(B)).
                unsafe {
                    if split_rows {
                        let a = a.offset(start as isize * a_rs);
                        gemm_raw(
                            len,
                            n,
                            k,
                            c.add(start * n),
                            n,
                            a,
                            (a_rs, a_cs),
                            b,
                            (b_rs, b_cs),
                            g.alpha,
                            accumulate,
                            Parallelism::None,
                        );
                    } else {
                        let b = b.offset(start as isize * b_cs);
                        gemm_raw(
                            m,
                            len,
                            k,
                            c.add(start),
                            n,
                            a,
                            (a_rs, a_cs),
                            b,
                            (b_rs, b_cs),
                            g.alpha,
                            accumulate,
                            Parallelism::None,
                        );
                    }
                }
            });
        }
    });
}

/// Rows (or columns) below which a block of a product is not worth a thread of its own.
const MIN_SPLIT: usize = 32;

/// Multiply-adds from which a product runs on the GEMM crate's threads (512³): there, packing
/// an operand once for all threads pays; below, blocks of rows over threads are faster
/// (measured on the 784-300-100-10 products at batch 200: forward 0.61–0.69 ms against
/// 0.73–0.75 ms).
const GEMM_THREADS_FROM: usize = 1 << 27;

/// One `c = alpha op(A) op(B)` (`+=` with `accumulate`) on raw pointers: `c`
/// row-major with row stride `ldc`, the operands with (row, column) strides, on `parallelism`.
///
/// # Safety
/// The pointers must cover `m x k`, `k x n` and `m x n` elements at these strides, and `c` must
/// not overlap the operands.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    a: *const f32,
    (a_rs, a_cs): (isize, isize),
    b: *const f32,
    (b_rs, b_cs): (isize, isize),
    alpha: f32,
    accumulate: bool,
    parallelism: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a,
        a_cs,
        a_rs,
        b,
        b_cs,
        b_rs,
        1.0,
        alpha,
        false,
        false,
        false,
        parallelism,
    );
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
