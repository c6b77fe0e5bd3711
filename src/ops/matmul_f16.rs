//! Matrix products of f16 operands with f32 accumulation and an f32 result (families
//! `matmul_wg_f16` and `matmul_wg_f16_vec4`: `kernels/matmul_wg.wgsl` assembled on f16
//! operands, staged by scalar or vec4 loads as for f32), which
//! [`super::matmul::matmul_ex`] dispatches when both operands are in f16 storage. One kernel
//! serves every adapter class and layout: the workgroup-memory blocks of the f32 hardware
//! kernel, its halves converted to f32 as they are staged.

use super::cast::f16_context;
use super::matmul::{gpu_out, MatmulOpts};
use super::{buf, common_device};
use crate::cost;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::kernels::{u32_of, MatmulParams, FLAG_BIAS, FLAG_RELU, STAGED_WG};
use crate::tensor::Tensor;

/// `act(alpha op(A) op(B) + bias)` for f16 `a` and `b` (shapes checked: `op(A)` `[m, k]`,
/// `op(B)` `[k, n]`), into `out` when given. Refuses a mixed f16/f32 pair and the
/// accumulating and masking epilogues.
pub(super) fn matmul_f16(
    a: &Tensor,
    b: &Tensor,
    o: MatmulOpts,
    out: Option<&Tensor>,
    (m, n, k): (usize, usize, usize),
) -> Result<Tensor> {
    if a.dtype() != DType::F16 || b.dtype() != DType::F16 {
        return Err(Error::Invalid(format!(
            "matmul: operands in {} and {}: an f16 product needs both in f16 (Tensor::to_f16)",
            a.dtype(),
            b.dtype()
        )));
    }
    if o.accumulate.is_some() || o.mask.is_some() {
        return Err(Error::Invalid(
            "matmul: f16 operands take the bias and ReLU epilogues only, not accumulate or mask".into(),
        ));
    }
    let mut all = vec![a, b];
    all.extend(o.bias);
    let ctx = f16_context("matmul", &common_device("matmul", &all)?)?;
    cost::product(m, n, k);
    cost::per_element(m * n, o.bias.is_some() as u64 + o.relu as u64);
    let out = gpu_out(&ctx, out, &[m, n])?;
    let flags = if o.bias.is_some() { FLAG_BIAS } else { 0 } | if o.relu { FLAG_RELU } else { 0 };
    let (sa_row, sa_col) = if o.trans_a { (1, m) } else { (k, 1) };
    let (sb_row, sb_col) = if o.trans_b { (1, k) } else { (n, 1) };
    let p = MatmulParams {
        m: u32_of(m),
        n: u32_of(n),
        k: u32_of(k),
        flags,
        alpha: o.alpha,
        sa_row: u32_of(sa_row),
        sa_col: u32_of(sa_col),
        sb_row: u32_of(sb_row),
        sb_col: u32_of(sb_col),
        ..Default::default()
    };
    let tm = super::matmul::workgroup_tile(&ctx, m, n) as u32;
    let vec4 = super::matmul::vec4_staging(m, n, k, o.trans_a, o.trans_b);
    let family = if vec4 { "matmul_wg_f16_vec4" } else { "matmul_wg_f16" };
    let key = KernelKey { family, entry: "matmul_wg", specialise: vec![("TM4", tm / 4), ("TN4", tm / 4)] };
    let block = STAGED_WG[0] as usize * tm as usize;
    let groups = [n.div_ceil(block) as u32, m.div_ceil(block) as u32, 1];
    let mut inputs = vec![buf(a), buf(b)];
    inputs.extend(o.bias.map(buf));
    // Bindings 4 (cin) and 6 (c2) are left to the dummies: accumulate and column sums are refused.
    ctx.dispatch("matmul", &key, &p, &inputs, &[buf(&out)], groups)?;
    Ok(out)
}
