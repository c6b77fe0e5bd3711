//! CPU reference of the matrix products (`kernels/matmul*.wgsl`).

/// Layout and epilogue of one product `C = act(alpha * op(A) op(B) + bias + beta * cin)`.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A is stored `[K, M]` (C = Aᵀ B).
    pub trans_a: bool,
    /// B is stored `[N, K]` (C = A Bᵀ).
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Apply ReLU last.
    pub relu: bool,
}

/// `act(alpha * op(A) op(B) + bias + beta * cin)`.
pub fn matmul(g: &Gemm, a: &[f32], b: &[f32], bias: Option<&[f32]>, cin: Option<(f32, &[f32])>) -> Vec<f32> {
    let (m, n, k) = (g.m, g.n, g.k);
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let av = if g.trans_a { a[p * m + i] } else { a[i * k + p] };
            if av == 0.0 {
                continue;
            }
            if g.trans_b {
                for (j, r) in row.iter_mut().enumerate() {
                    *r += av * b[j * k + p];
                }
            } else {
                for (r, bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *r += av * bv;
                }
            }
        }
    }
    for i in 0..m {
        for j in 0..n {
            let mut v = g.alpha * c[i * n + j];
            if let Some(bias) = bias {
                v += bias[j];
            }
            if let Some((beta, cin)) = cin {
                v += beta * cin[i * n + j];
            }
            if g.relu {
                v = v.max(0.0);
            }
            c[i * n + j] = v;
        }
    }
    c
}

/// Forward mode of `act(A B + bias)`: returns `(C, dC)` with `dC = act'·(dA B + A dB + dbias)`.
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
    let mut c = matmul(&g, a, b, bias.map(|(b, _)| b), None);
    let mut dc = matmul(&g, a, db, bias.map(|(_, db)| db), None);
    if let Some(da) = da {
        dc = matmul(&g, da, b, None, Some((1.0, &dc)));
    }
    if relu {
        for (v, t) in c.iter_mut().zip(dc.iter_mut()) {
            if *v <= 0.0 {
                *v = 0.0;
                *t = 0.0;
            }
        }
    }
    (c, dc)
}
