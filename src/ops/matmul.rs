//! Matrix products (`kernels/matmul.wgsl`, `matmul_subgroup.wgsl`, `matmul_general.wgsl`,
//! `matmul_wg.wgsl`, `matmul_jvp.wgsl`, `matmul_jvp_subgroup.wgsl`, `matmul_jvp_general.wgsl`,
//! `matmul_jvp_wg.wgsl`; of f16 operands, `matmul_wg.wgsl` on f16 operands in `matmul_f16.rs`).
//!
//! Variant choice ([`MatmulVariant::select`]): on software adapters (lavapipe), aligned shapes
//! use the vec4 register-tiled kernels (16 x 16 tiles per invocation: CPU SIMD lanes vectorise
//! per-invocation work), and where the driver has 8-lane subgroups their variants in
//! `matmul_subgroup.wgsl`, which share the operand block common to a subgroup's lanes instead of
//! loading it in every lane; unaligned shapes take the strided general kernel with 4 x 4 tiles.
//! On hardware GPUs, where such register tiles would spill, every shape takes the blocks staged
//! through workgroup memory (`matmul_wg.wgsl`), loaded by vec4 where the layout allows. The
//! fused JVP has the same split (`matmul_jvp_wg.wgsl` on hardware).

use super::{buf, common_device, host_impl, reduce::sum_rows};
use crate::cost;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{AdapterClass, GpuContext, KernelKey};
use crate::kernels::{
    u32_of, MatmulJvpParams, MatmulParams, FLAG_ACCUMULATE, FLAG_BIAS, FLAG_COL_SUMS, FLAG_MASK, FLAG_RELU,
    FLAG_ROWS_ON_LANES, LANE_SHARED_JVP_WG, LANE_SHARED_WG, STAGED_WG, TILED_WG,
};
use crate::reference::matmul::{self as reference, Gemm};
use crate::tensor::Tensor;
use std::sync::Arc;

/// Options of [`matmul_ex`]: transposes and a fused epilogue.
#[derive(Clone, Copy)]
pub struct MatmulOpts<'a> {
    /// Use Aᵀ (A stored `[K, M]`).
    pub trans_a: bool,
    /// Use Bᵀ (B stored `[N, K]`).
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Add `bias[col]`.
    pub bias: Option<&'a Tensor>,
    /// Add `beta * cin`.
    pub accumulate: Option<(f32, &'a Tensor)>,
    /// ReLU last.
    pub relu: bool,
    /// Zero the result where `mask` (`[M, N]`) is not positive: the ReLU backward rule of the
    /// layer whose output `mask` is, applied to a cotangent as it is produced. Not together
    /// with `accumulate`.
    pub mask: Option<&'a Tensor>,
}

impl Default for MatmulOpts<'_> {
    fn default() -> Self {
        MatmulOpts { trans_a: false, trans_b: false, alpha: 1.0, bias: None, accumulate: None, relu: false, mask: None }
    }
}

/// `A B` for 2-D tensors.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_ex(a, b, MatmulOpts::default())
}

/// `A Bᵀ`.
pub fn matmul_nt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_ex(a, b, MatmulOpts { trans_b: true, ..Default::default() })
}

/// `Aᵀ B`.
pub fn matmul_tn(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_ex(a, b, MatmulOpts { trans_a: true, ..Default::default() })
}

/// Checks operand shapes; returns `(M, N, K)`.
fn gemm_dims(op: &'static str, a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<(usize, usize, usize)> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != 2 || sb.len() != 2 {
        return Err(shape_err(op, format!("needs 2-D operands, got {sa:?} and {sb:?}")));
    }
    let (m, ka) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (kb, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    if ka != kb {
        return Err(shape_err(
            op,
            format!(
                "inner dimensions differ: A {sa:?}{} vs B {sb:?}{}",
                if ta { "ᵀ" } else { "" },
                if tb { "ᵀ" } else { "" }
            ),
        ));
    }
    Ok((m, n, ka))
}

/// Lanes of a subgroup in the lane-sharing kernels (`GpuContext::lane_sharing` requires 8).
const SUBGROUP_LANES: usize = 8;
/// Rows or columns of C a workgroup of the register-tiled kernels covers (16 per invocation):
/// along its 8 lanes (x), and along y, 8 invocations deep ([`TILED_WG`]), or 2 subgroups deep in
/// the lane-sharing kernels ([`LANE_SHARED_WG`]), whose smaller workgroups spread better over
/// the CPU's cores (train-step median 13.2 → 11.9 ms over 21 interleaved runs).
const TILE_NN: (usize, usize) = (16 * TILED_WG[0] as usize, 16 * TILED_WG[1] as usize);
const TILE_NN_SHARED: (usize, usize) = (16 * SUBGROUP_LANES, 16 * LANE_SHARED_WG[0] as usize / SUBGROUP_LANES);
/// Rows and columns of C and dC a workgroup of the register-tiled JVPs covers: 16 × 8 per
/// invocation of [`TILED_WG`] (and of the 8 subgroups × 8 lanes of [`LANE_SHARED_JVP_WG`]).
const TILE_JVP: (usize, usize) = (16 * TILED_WG[1] as usize, 8 * TILED_WG[0] as usize);
/// Rows and columns of C a workgroup of the scalar general kernels covers (4 × 4 per invocation).
const TILE_GENERAL: (usize, usize) = (4 * TILED_WG[1] as usize, 4 * TILED_WG[0] as usize);
/// Rows and columns of C and dC a workgroup of `matmul_jvp_wg` covers (4 × 4 per invocation).
const TILE_JVP_STAGED: (usize, usize) = (4 * STAGED_WG[1] as usize, 4 * STAGED_WG[0] as usize);
// The lane-sharing JVP covers the same tile: 8 subgroups along rows, 8 lanes along columns.
const _: () = assert!(LANE_SHARED_JVP_WG[0] as usize == (TILE_JVP.0 / 16) * (TILE_JVP.1 / 8));

/// `act(alpha * op(A) op(B) + bias + beta * cin)` with the options' transposes and epilogue.
/// With both operands in f16 storage (GPU), the product accumulates in f32 into an f32
/// result, with the bias and ReLU epilogues only; a mixed f16/f32 pair is refused.
pub fn matmul_ex(a: &Tensor, b: &Tensor, o: MatmulOpts) -> Result<Tensor> {
    matmul_into(a, b, o, None)
}

/// [`matmul_ex`] written into `out` when given (a GPU tensor of shape `[M, N]`, typically a
/// view of a larger buffer that nothing else reads or writes until the product is recorded).
pub(crate) fn matmul_into(a: &Tensor, b: &Tensor, o: MatmulOpts, out: Option<&Tensor>) -> Result<Tensor> {
    let (m, n, k) = gemm_dims("matmul", a, b, o.trans_a, o.trans_b)?;
    if let Some(bias) = o.bias {
        if bias.shape() != [n] {
            return Err(shape_err("matmul", format!("bias must be [{n}], got {:?}", bias.shape())));
        }
    }
    if let Some((_, cin)) = o.accumulate {
        if cin.shape() != [m, n] {
            return Err(shape_err("matmul", format!("accumulated input must be [{m}, {n}], got {:?}", cin.shape())));
        }
    }
    if let Some(mask) = o.mask {
        if mask.shape() != [m, n] {
            return Err(shape_err("matmul", format!("mask must be [{m}, {n}], got {:?}", mask.shape())));
        }
        if o.accumulate.is_some() {
            return Err(Error::Invalid("matmul: mask and accumulate cannot be combined".into()));
        }
    }
    if a.dtype() == DType::F16 || b.dtype() == DType::F16 {
        return super::matmul_f16::matmul_f16(a, b, o, out, (m, n, k));
    }
    let mut all = vec![a, b];
    all.extend(o.bias);
    all.extend(o.accumulate.map(|(_, c)| c));
    all.extend(o.mask);
    let g = Gemm { m, n, k, trans_a: o.trans_a, trans_b: o.trans_b, alpha: o.alpha, relu: o.relu };
    let dev = common_device("matmul", &all)?;
    cost::product(m, n, k);
    let epilogues = [o.bias.is_some(), o.accumulate.is_some(), o.relu, o.mask.is_some()];
    cost::per_element(m * n, epilogues.iter().filter(|&&e| e).count() as u64);
    match dev {
        Device::Reference => {
            let c = reference::matmul(
                &g,
                a.host().unwrap(),
                b.host().unwrap(),
                o.bias.map(|t| t.host().unwrap()),
                o.accumulate.map(|(beta, t)| (beta, t.host().unwrap())),
            );
            let c = match o.mask {
                Some(mask) => crate::reference::elementwise::relu_backward(&c, mask.host().unwrap()),
                None => c,
            };
            Ok(Tensor::host_result(&Device::Reference, &[m, n], c))
        }
        Device::Cpu => {
            let c = crate::cpu::matmul::matmul(
                &g,
                a.host().unwrap(),
                b.host().unwrap(),
                o.bias.map(|t| t.host().unwrap()),
                o.accumulate.map(|(beta, t)| (beta, t.host().unwrap())),
                o.mask.map(|t| t.host().unwrap()),
            );
            Ok(Tensor::host_result(&Device::Cpu, &[m, n], c))
        }
        Device::Gpu(ctx) => {
            let out = gpu_out(&ctx, out, &[m, n])?;
            gpu_matmul(&ctx, &g, a, b, o, &out, None)?;
            Ok(out)
        }
    }
}

/// Whether a matmul kernel with `tile x tile` results per invocation should lay consecutive
/// invocations along row tiles rather than column tiles for an `m x n` result. A CPU-emulated
/// driver runs 8 consecutive invocations as the lanes of one SIMD loop, which costs the same
/// however many lanes have a tile: count such 8-lane groups both ways and take the fewer.
fn rows_on_lanes(m: usize, n: usize, tile: usize) -> bool {
    let (tr, tc) = (m.div_ceil(tile), n.div_ceil(tile));
    tr.div_ceil(8) * tc < tc.div_ceil(8) * tr
}

/// `out` when given (checked to be of `shape`), else a fresh device tensor.
pub(super) fn gpu_out(ctx: &Arc<GpuContext>, out: Option<&Tensor>, shape: &[usize]) -> Result<Tensor> {
    match out {
        Some(t) if t.shape() != shape => {
            Err(shape_err("matmul", format!("output must be {shape:?}, got {:?}", t.shape())))
        }
        Some(t) => Ok(t.clone()),
        None => Tensor::gpu_uninit(ctx, "matmul", shape),
    }
}

/// The parameter gradients of a dense layer `y = x W + b` from the output cotangent `gy`
/// (`x` `[B, in]`, `gy` `[B, out]`): `(xᵀ gy, column sums of gy)`, in one dispatch on a GPU.
/// Counted as the product and 1 FLOP per element of `gy` for the sums.
pub fn linear_param_grads(x: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> {
    linear_param_grads_into(x, gy, None, None)
}

/// [`linear_param_grads`] written into `dw` and `db` when given (GPU tensors of shapes
/// `[in, out]` and `[out]`, as for [`matmul_into`]).
pub(crate) fn linear_param_grads_into(
    x: &Tensor,
    gy: &Tensor,
    dw: Option<&Tensor>,
    db: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (m, n, k) = gemm_dims("linear_param_grads", x, gy, true, false)?;
    let o = MatmulOpts { trans_a: true, ..Default::default() };
    let dev = common_device("linear_param_grads", &[x, gy])?;
    cost::product(m, n, k);
    cost::per_element(k * n, 1);
    match dev {
        Device::Gpu(_) if m == 0 || n == 0 => cost::uncounted(|| Ok((matmul_into(x, gy, o, dw)?, sum_rows(gy)?))),
        Device::Reference | Device::Cpu => cost::uncounted(|| Ok((matmul_ex(x, gy, o)?, sum_rows(gy)?))),
        Device::Gpu(ctx) => {
            let g = Gemm { m, n, k, trans_a: true, trans_b: false, alpha: 1.0, relu: false };
            let dw = gpu_out(&ctx, dw, &[m, n])?;
            let db = gpu_out(&ctx, db, &[n])?;
            gpu_matmul(&ctx, &g, x, gy, o, &dw, Some(&db))?;
            Ok((dw, db))
        }
    }
}

/// Records the product into `out`, and with `col_sums` (for `Aᵀ B` only) the column sums of
/// B into that `[N]` tensor in the same dispatch.
fn gpu_matmul(
    ctx: &Arc<GpuContext>,
    g: &Gemm,
    a: &Tensor,
    b: &Tensor,
    o: MatmulOpts,
    out: &Tensor,
    col_sums: Option<&Tensor>,
) -> Result<()> {
    let (m, n, k) = (g.m, g.n, g.k);
    debug_assert!(col_sums.is_none() || (o.trans_a && !o.trans_b));
    let flags = if o.bias.is_some() { FLAG_BIAS } else { 0 }
        | if o.relu { FLAG_RELU } else { 0 }
        | if o.accumulate.is_some() { FLAG_ACCUMULATE } else { 0 }
        | if o.mask.is_some() { FLAG_MASK } else { 0 }
        | if col_sums.is_some() { FLAG_COL_SUMS } else { 0 };
    let beta = o.accumulate.map_or(0.0, |(beta, _)| beta);
    let mut inputs = vec![buf(a), buf(b)];
    // Unused optional bindings are padded with dummies; keep positions 3 and 4 in order. The
    // mask shares binding 4 with the accumulated input (they exclude each other).
    let bias_buf = o.bias.map(buf);
    let cin_buf = o.accumulate.map(|(_, t)| t).or(o.mask).map(buf);
    if bias_buf.is_some() || cin_buf.is_some() {
        inputs.push(bias_buf.unwrap_or(buf(a)));
    }
    if let Some(cb) = cin_buf {
        inputs.push(cb);
    }
    let mut outputs = vec![buf(out)];
    outputs.extend(col_sums.map(buf));
    let variant = MatmulVariant::select(ctx, m, n, k, o.trans_a, o.trans_b);
    let rows_flag = |rows_on_lanes: bool| flags | if rows_on_lanes { FLAG_ROWS_ON_LANES } else { 0 };
    let tiled = |flags: u32| MatmulParams {
        m: u32_of(m),
        n: u32_of(n),
        k: u32_of(k),
        flags,
        alpha: o.alpha,
        beta,
        ..Default::default()
    };
    let strided = |flags: u32| {
        let (sa_row, sa_col) = if o.trans_a { (1, m) } else { (k, 1) };
        let (sb_row, sb_col) = if o.trans_b { (1, k) } else { (n, 1) };
        MatmulParams {
            sa_row: u32_of(sa_row),
            sa_col: u32_of(sa_col),
            sb_row: u32_of(sb_row),
            sb_col: u32_of(sb_col),
            ..tiled(flags)
        }
    };
    // Workgroups along x and y for blocks of `rows` x `cols`, rows along x when `rows_on_lanes`.
    let grid = |rows: usize, cols: usize, rows_on_lanes: bool| {
        let (gm, gn) = (m.div_ceil(rows) as u32, n.div_ceil(cols) as u32);
        if rows_on_lanes {
            [gm, gn, 1]
        } else {
            [gn, gm, 1]
        }
    };
    let (key, p, groups) = match variant {
        MatmulVariant::RegisterTiled { rows_on_lanes } | MatmulVariant::LaneShared { rows_on_lanes } => {
            let shared = matches!(variant, MatmulVariant::LaneShared { .. });
            let (family, entry) = match (o.trans_a, o.trans_b, shared, rows_on_lanes) {
                (false, false, true, true) => ("matmul_subgroup", "matmul_nn_rows"),
                (false, false, true, false) => ("matmul_subgroup", "matmul_nn_cols"),
                (true, false, true, true) => ("matmul_subgroup", "matmul_tn_rows"),
                (true, false, true, false) => ("matmul_subgroup", "matmul_tn_cols"),
                (false, true, true, true) => ("matmul_subgroup", "matmul_nt_rows"),
                (false, true, true, false) => ("matmul_subgroup", "matmul_nt_cols"),
                (false, false, false, _) => ("matmul", "matmul_nn"),
                (true, false, false, _) => ("matmul", "matmul_tn"),
                _ => ("matmul", "matmul_nt"),
            };
            let p = tiled(rows_flag(rows_on_lanes));
            let (along_x, along_y) = if shared { TILE_NN_SHARED } else { TILE_NN };
            let groups = if rows_on_lanes {
                [m.div_ceil(along_x) as u32, n.div_ceil(along_y) as u32, 1]
            } else {
                [n.div_ceil(along_x) as u32, m.div_ceil(along_y) as u32, 1]
            };
            (KernelKey::new(family, entry), p, groups)
        }
        MatmulVariant::WorkgroupTiled { tm, vec4 } => {
            let key = KernelKey {
                family: if vec4 { "matmul_wg_vec4" } else { "matmul_wg" },
                entry: "matmul_wg",
                specialise: vec![("TM4", tm as u32 / 4), ("TN4", tm as u32 / 4)],
            };
            let block = STAGED_WG[0] as usize * tm;
            (key, strided(flags), grid(block, block, false))
        }
        MatmulVariant::General { rows_on_lanes } => {
            let key = KernelKey::new("matmul_general", "matmul_general");
            (key, strided(rows_flag(rows_on_lanes)), grid(TILE_GENERAL.0, TILE_GENERAL.1, rows_on_lanes))
        }
    };
    let op = if col_sums.is_some() { "linear_param_grads" } else { "matmul" };
    ctx.dispatch(op, &key, &p, &inputs, &outputs, groups)
}

/// The kernel variants of the matrix product on a wgpu device (chosen by
/// [`MatmulVariant::select`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulVariant {
    /// Register tiles with vec4 loads (kernels/matmul.wgsl): software drivers, aligned shapes.
    RegisterTiled {
        /// Consecutive invocations take consecutive row tiles (else column tiles).
        rows_on_lanes: bool,
    },
    /// Register tiles whose loads are shared among 8 SIMD lanes by subgroup broadcasts
    /// (kernels/matmul_subgroup.wgsl): software drivers with 8-lane subgroups, aligned shapes.
    LaneShared {
        /// Consecutive invocations take consecutive row tiles (else column tiles).
        rows_on_lanes: bool,
    },
    /// Blocks of 16·tm × 16·tm staged through workgroup memory (kernels/matmul_wg.wgsl):
    /// hardware GPUs, every shape and layout.
    WorkgroupTiled {
        /// Outputs per invocation along each side (4 or 8).
        tm: usize,
        /// Staged by vec4 loads (family `matmul_wg_vec4`): both operands' contiguous sides
        /// are multiples of 4 ([`vec4_staging`]); else by scalar loads.
        vec4: bool,
    },
    /// Scalar 4×4 tiles (kernels/matmul_general.wgsl): software drivers, every other shape.
    General {
        /// Consecutive invocations take consecutive row tiles (else column tiles).
        rows_on_lanes: bool,
    },
}

/// Outputs per invocation along each side of `matmul_wg.wgsl` (f32 or f16 operands) for an
/// `m × n` result: 8 once both sides reach 128, when its two f32 blocks of 16 × 128 fit the
/// adapter's workgroup memory; else 4.
pub(super) fn workgroup_tile(ctx: &GpuContext, m: usize, n: usize) -> usize {
    let fits = |tm: usize| 2 * 16 * 16 * tm * 4 <= ctx.limits.max_compute_workgroup_storage_size as usize;
    if m >= 128 && n >= 128 && fits(8) {
        8
    } else {
        4
    }
}

/// Whether both operands of an `m × n × k` product of the given layout can be staged by vec4
/// loads: the side each stores contiguously (A: `k`, or `m` for Aᵀ; B: `n`, or `k` for Bᵀ) is
/// a multiple of 4, so every vec4 lies wholly inside or outside its matrix.
pub(super) fn vec4_staging(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> bool {
    let a_side = if trans_a { m } else { k };
    let b_side = if trans_b { k } else { n };
    a_side.is_multiple_of(4) && b_side.is_multiple_of(4)
}

impl MatmulVariant {
    /// The variant for an `m × n × k` product of the given layout on `ctx`: on a hardware GPU
    /// the workgroup-memory blocks (8 × 8 outputs per invocation once both sides reach 128,
    /// when the blocks fit the adapter's workgroup memory; vec4 loads where the layout
    /// allows); on a software driver the register
    /// tiles where the shape is aligned to vec4 loads, lane-shared where the driver's subgroups
    /// allow, else the scalar kernel.
    pub fn select(ctx: &GpuContext, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> MatmulVariant {
        if ctx.class == AdapterClass::Hardware {
            let vec4 = vec4_staging(m, n, k, trans_a, trans_b);
            return MatmulVariant::WorkgroupTiled { tm: workgroup_tile(ctx, m, n), vec4 };
        }
        let aligned = n.is_multiple_of(4)
            && match (trans_a, trans_b) {
                (false, false) | (false, true) => k.is_multiple_of(4),
                (true, false) => m.is_multiple_of(4),
                (true, true) => false,
            };
        if !(aligned && k > 0) {
            return MatmulVariant::General { rows_on_lanes: rows_on_lanes(m, n, 4) };
        }
        let rows_on_lanes = rows_on_lanes(m, n, 16);
        // The lane-sharing kernels need K % 4 == 0 for Aᵀ B too.
        if ctx.lane_sharing && (!trans_a || k.is_multiple_of(4)) {
            MatmulVariant::LaneShared { rows_on_lanes }
        } else {
            MatmulVariant::RegisterTiled { rows_on_lanes }
        }
    }
}

/// Fused forward mode of a dense layer: `(C, dC)` for `C = act(A B + bias)` and
/// `dC = act'·(dA B + A dB + dbias)`. `da = None` means dA = 0; `bias` is `(bias, dbias)`.
/// Counted as two products (`A B`, `A dB`), or three with `dA`, and 2 FLOPs per element of
/// `C` for each of bias and ReLU (primal and tangent).
pub fn matmul_jvp(
    a: &Tensor,
    da: Option<&Tensor>,
    b: &Tensor,
    db: &Tensor,
    bias: Option<(&Tensor, &Tensor)>,
    relu: bool,
) -> Result<(Tensor, Tensor)> {
    let (m, n, k) = gemm_dims("matmul_jvp", a, b, false, false)?;
    if db.shape() != b.shape() {
        return Err(shape_err("matmul_jvp", format!("tangent dB {:?} vs B {:?}", db.shape(), b.shape())));
    }
    if let Some(da) = da {
        if da.shape() != a.shape() {
            return Err(shape_err("matmul_jvp", format!("tangent dA {:?} vs A {:?}", da.shape(), a.shape())));
        }
    }
    if let Some((bb, dbb)) = bias {
        if bb.shape() != [n] || dbb.shape() != [n] {
            return Err(shape_err(
                "matmul_jvp",
                format!("bias and its tangent must be [{n}], got {:?} and {:?}", bb.shape(), dbb.shape()),
            ));
        }
    }
    let mut all = vec![a, b, db];
    all.extend(da);
    if let Some((x, y)) = bias {
        all.push(x);
        all.push(y);
    }
    let dev = common_device("matmul_jvp", &all)?;
    cost::product(m, n, k * if da.is_some() { 3 } else { 2 });
    cost::per_element(m * n, 2 * (bias.is_some() as u64 + relu as u64));
    match dev {
        dev @ (Device::Reference | Device::Cpu) => {
            let (c, dc) = host_impl!(dev, matmul::matmul_jvp)(
                m,
                n,
                k,
                a.host().unwrap(),
                da.map(|t| t.host().unwrap()),
                b.host().unwrap(),
                db.host().unwrap(),
                bias.map(|(x, y)| (x.host().unwrap(), y.host().unwrap())),
                relu,
            );
            Ok((Tensor::host_result(&dev, &[m, n], c), Tensor::host_result(&dev, &[m, n], dc)))
        }
        Device::Gpu(ctx) => {
            // Hardware GPUs: workgroup-memory blocks (any shape). Software drivers: the vec4
            // register-tiled kernel for aligned shapes, the scalar general one for others.
            let fast = n.is_multiple_of(4) && k.is_multiple_of(4) && k > 0;
            let c = Tensor::gpu_uninit(&ctx, "matmul_jvp", &[m, n])?;
            let dc = Tensor::gpu_uninit(&ctx, "matmul_jvp", &[m, n])?;
            let flags = if bias.is_some() { FLAG_BIAS } else { 0 } | if relu { FLAG_RELU } else { 0 };
            let inputs = [
                buf(a),
                buf(b),
                bias.map_or(buf(a), |(x, _)| buf(x)),
                da.map_or(buf(a), buf),
                buf(db),
                bias.map_or(buf(a), |(_, y)| buf(y)),
            ];
            let (family, entry, tile) = if ctx.class == AdapterClass::Hardware {
                ("matmul_jvp_wg", "matmul_jvp_wg", TILE_JVP_STAGED)
            } else if fast && ctx.lane_sharing {
                ("matmul_jvp_subgroup", "matmul_jvp_nn_cols", TILE_JVP)
            } else if fast {
                ("matmul_jvp", "matmul_jvp_nn", TILE_JVP)
            } else {
                ("matmul_jvp_general", "matmul_jvp_general", TILE_GENERAL)
            };
            let key = KernelKey { family, entry, specialise: vec![("HAS_DA", da.is_some() as u32)] };
            let p = MatmulJvpParams { m: u32_of(m), n: u32_of(n), k: u32_of(k), flags };
            let groups = [n.div_ceil(tile.1) as u32, m.div_ceil(tile.0) as u32, 1];
            ctx.dispatch("matmul_jvp", &key, &p, &inputs, &[buf(&c), buf(&dc)], groups)?;
            Ok((c, dc))
        }
    }
}
