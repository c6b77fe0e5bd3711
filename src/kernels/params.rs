//! The uniform parameter block of every kernel family, one Rust struct per layout (families
//! sharing a layout share the struct). The WGSL `struct Params` is derived from these; a
//! field's doc says what it means for each entry point that reads it differently.

use super::layout::kernel_params;

kernel_params! {
    /// `kernels/elementwise.wgsl`: one invocation per element.
    pub struct ElementwiseParams {
        /// Elements.
        pub n: u32,
        /// Row length of the broadcast bias (`add_bias`).
        pub cols: u32,
        /// `FLAG_RELU` (`add_bias`).
        pub flags: u32,
        /// First element of `a` read (`copy_range`).
        pub src_offset: u32,
        /// First element of `out` written (`copy_range`).
        pub dst_offset: u32,
        /// Factor of `a` (`axpby`, `scale`); the value (`fill`).
        pub alpha: f32,
        /// Factor of `b` (`axpby`).
        pub beta: f32,
    }
}

kernel_params! {
    /// The matrix products `C = epilogue(alpha op(A) op(B))`: `kernels/matmul.wgsl`,
    /// `matmul_subgroup.wgsl`, `matmul_general.wgsl`, `matmul_wg.wgsl`.
    pub struct MatmulParams {
        /// Rows of C.
        pub m: u32,
        /// Columns of C.
        pub n: u32,
        /// The reduction length.
        pub k: u32,
        /// `FLAG_BIAS`, `FLAG_RELU`, `FLAG_ACCUMULATE`, `FLAG_MASK`, `FLAG_COL_SUMS`,
        /// `FLAG_ROWS_ON_LANES` (the last not in `matmul_wg`).
        pub flags: u32,
        /// Scale of the product.
        pub alpha: f32,
        /// Scale of the accumulated input `cin` (`FLAG_ACCUMULATE`).
        pub beta: f32,
        /// Row stride of `op(A)`: `op(A)[i, k] = a[i sa_row + k sa_col]` (the strided kernels
        /// `matmul_general`, `matmul_wg`; the register-tiled ones read layouts from the entry).
        pub sa_row: u32,
        /// Column stride of `op(A)` (strided kernels).
        pub sa_col: u32,
        /// Row stride of `op(B)`: `op(B)[k, j] = b[k sb_row + j sb_col]` (strided kernels).
        pub sb_row: u32,
        /// Column stride of `op(B)` (strided kernels).
        pub sb_col: u32,
    }
}

kernel_params! {
    /// The fused dense-layer JVPs `C = act(A B + bias)`, `dC`: `kernels/matmul_jvp.wgsl`,
    /// `matmul_jvp_subgroup.wgsl`, `matmul_jvp_general.wgsl`, `matmul_jvp_wg.wgsl`.
    pub struct MatmulJvpParams {
        /// Rows of C.
        pub m: u32,
        /// Columns of C.
        pub n: u32,
        /// The reduction length.
        pub k: u32,
        /// `FLAG_BIAS`, `FLAG_RELU`.
        pub flags: u32,
    }
}

kernel_params! {
    /// The direct convolutions: `kernels/conv2d.wgsl`, `conv2d_3x3.wgsl`, `conv2d_igemm.wgsl`.
    pub struct ConvParams {
        /// Images.
        pub n: u32,
        /// Input channels.
        pub c: u32,
        /// Input rows.
        pub h: u32,
        /// Input columns.
        pub w: u32,
        /// Output channels.
        pub o: u32,
        /// Kernel rows.
        pub kh: u32,
        /// Kernel columns.
        pub kw: u32,
        /// Stride along both axes.
        pub stride: u32,
        /// Zero padding on every side.
        pub pad: u32,
        /// Output rows.
        pub oh: u32,
        /// Output columns.
        pub ow: u32,
        /// `FLAG_BIAS`, `FLAG_RELU`, `FLAG_HAS_DX`.
        pub flags: u32,
        /// Row segments per row (`conv2d_fwd`, `conv2d_jvp`, `conv2d_bwd_data`, `conv3x3_*`).
        pub tiles_x: u32,
        /// Lanes of the entry point; elements (`conv2d_sum_splits`, `conv2d_flip_weights`);
        /// output pixels `N OH OW` (`conv_igemm_*`).
        pub total: u32,
        /// Partial sums of a split reduction (`conv2d_sum_splits`).
        pub splits: u32,
        /// Flattened `(n, oy)` rows per split (`conv2d_bwd_weight*`, `conv2d_bwd_bias`); output
        /// pixels per split (`conv_igemm_bwd_weight`).
        pub rows_per_split: u32,
    }
}

kernel_params! {
    /// The lowering of convolutions to products, one chunk of images `[n0, n0 + nb)` at a time:
    /// `kernels/conv2d_lower.wgsl`, `conv2d_im2col.wgsl`.
    pub struct ConvLowerParams {
        /// First image of the chunk.
        pub n0: u32,
        /// Images in the chunk.
        pub nb: u32,
        /// Input channels.
        pub c: u32,
        /// Input rows.
        pub h: u32,
        /// Input columns.
        pub w: u32,
        /// Output channels.
        pub o: u32,
        /// Kernel rows.
        pub kh: u32,
        /// Kernel columns.
        pub kw: u32,
        /// Stride along both axes.
        pub stride: u32,
        /// Zero padding on every side.
        pub pad: u32,
        /// Output rows.
        pub oh: u32,
        /// Output columns.
        pub ow: u32,
        /// Patch rows `C KH KW`.
        pub q: u32,
        /// Output channels padded to a multiple of 4; the padded `q` (`lower_pad_q`).
        pub op: u32,
        /// Patch columns of the chunk, `nb OH OW` padded to a multiple of 4.
        pub npc: u32,
        /// `FLAG_HAS_DX` (`lower_im2col`), `FLAG_HAS_DW` (`lower_weights_t`).
        pub flags: u32,
        /// Lanes of the entry point.
        pub total: u32,
        /// Partial sums to add (`lower_sum_wt`).
        pub splits: u32,
        /// Patch rows written, `q` padded to a multiple of 4 (`lower_im2col`).
        pub qp: u32,
    }
}

kernel_params! {
    /// The register-tiled products of lowered convolutions: `kernels/conv2d_gemm.wgsl`.
    pub struct ConvGemmParams {
        /// The reduction length K (`gemm_fwd*`); patch rows Q (`gemm_bwd_weight*`).
        pub q: u32,
        /// Rows of `a0`, padded to a multiple of 4 (`gemm_fwd*`); output channels padded to a
        /// multiple of 4 (`gemm_bwd_weight*`).
        pub op: u32,
        /// Columns of `b0` (`gemm_fwd*`); the reduction length (`gemm_bwd_weight*`).
        pub npc: u32,
        /// Vec4 reduction steps per split (`gemm_bwd_weight*`).
        pub k4_split: u32,
        /// Tiles of 16 patch rows (`gemm_bwd_weight*`).
        pub tiles_q: u32,
        /// Tiles of output channels (`gemm_bwd_weight*`).
        pub tiles_o: u32,
        /// Lanes.
        pub total: u32,
        /// First partial-sum slot written (`gemm_bwd_weight*`).
        pub slot0: u32,
        /// Rows stored: output channels, or rows of a plain matrix (`gemm_fwd*`).
        pub o: u32,
        /// Output pixels per image (`gemm_fwd*`).
        pub ohw: u32,
        /// First image of the chunk (`gemm_fwd*`).
        pub n0: u32,
        /// Images in the chunk (`gemm_fwd*`).
        pub nb: u32,
        /// `FLAG_BIAS`, `FLAG_RELU`, `FLAG_MASK`, `FLAG_SECOND_PRODUCT`, `FLAG_PLAIN_OUTPUT`
        /// (`gemm_fwd*`).
        pub flags: u32,
    }
}

kernel_params! {
    /// Max pooling: `kernels/pool.wgsl`.
    pub struct PoolParams {
        /// Invocations: output elements (`maxpool2d_fwd`, `maxpool2d_jvp`); planes
        /// (`maxpool2d_bwd`).
        pub total: u32,
        /// Input rows; elements of an input plane, `H W` (`maxpool2d_bwd`).
        pub h: u32,
        /// Input columns; elements of an output plane, `OH OW` (`maxpool2d_bwd`).
        pub w: u32,
        /// Output rows.
        pub oh: u32,
        /// Output columns.
        pub ow: u32,
        /// Window side.
        pub k: u32,
        /// Stride along both axes.
        pub stride: u32,
    }
}

kernel_params! {
    /// Reductions: `kernels/reduce.wgsl`.
    pub struct ReduceParams {
        /// Elements (`reduce_pass`); rows (`col_sum_pass`, `argmax_rows`).
        pub n: u32,
        /// Row length (`col_sum_pass`, `argmax_rows`).
        pub cols: u32,
        /// Elements per invocation (`reduce_pass`); rows per block (`col_sum_pass`).
        pub per: u32,
        /// `REDUCE_*` (`reduce_pass`).
        pub op: u32,
        /// Partials written (`reduce_pass`); output elements (`col_sum_pass`).
        pub groups: u32,
        /// Multiplies each partial (`reduce_pass`).
        pub scale: f32,
        /// The identity of the op: 0 for sums, -inf for max (`reduce_pass`).
        pub identity: f32,
    }
}

kernel_params! {
    /// Row-wise softmax and cross-entropy: `kernels/softmax.wgsl`.
    pub struct SoftmaxParams {
        /// Rows.
        pub rows: u32,
        /// Classes per row.
        pub cols: u32,
        /// Multiplies the cross-entropy gradients.
        pub scale: f32,
    }
}

kernel_params! {
    /// Ops over the flat parameter vector: `kernels/flat.wgsl`.
    pub struct FlatParams {
        /// Elements of `x`; words of `hist` (`zero_words`).
        pub n: u32,
        /// Elements per invocation (`radix_histogram`, `count_zeros`).
        pub per: u32,
        /// Lowest bit of the digit (`radix_histogram`).
        pub shift: u32,
        /// Bits at and above `hi_shift` must equal `prefix` (`radix_histogram`).
        pub hi_shift: u32,
        /// `key >> hi_shift` of the elements counted (`radix_histogram`).
        pub prefix: u32,
        /// The digit mask `2^width - 1` (`radix_histogram`).
        pub mask: u32,
        /// The magnitude kept (`prune`, `prune_mask`).
        pub threshold: f32,
    }
}

kernel_params! {
    /// Batch normalisation: `kernels/norm.wgsl`, `kernels/norm_split.wgsl`.
    pub struct NormParams {
        /// Channels.
        pub c: u32,
        /// Pixels per sample and channel.
        pub hw: u32,
        /// Elements per channel, `N hw`.
        pub count: u32,
        /// Elements, `N C hw` (`bn_eval`).
        pub total: u32,
        /// Added to the variance.
        pub eps: f32,
        /// Weight of the batch statistics (`bn_update_running`).
        pub momentum: f32,
        /// `count / (count - 1)`, the unbiasing of the batch variance (`bn_update_running`).
        pub unbias: f32,
        /// Workgroups per channel (`norm_split.wgsl`).
        pub splits: u32,
        /// Elements per channel and workgroup, a multiple of `WG` (`bn_sums`).
        pub chunk: u32,
        /// `BN_SUMS_*`: the terms `bn_sums` adds.
        pub kind: u32,
        /// Inputs of `bn_apply`: 1, 2 or 4.
        pub inputs: u32,
        /// Outputs of `bn_apply`: 1 or 2.
        pub outputs: u32,
    }
}

kernel_params! {
    /// Inverted dropout: `kernels/dropout.wgsl`.
    pub struct DropoutParams {
        /// Elements.
        pub n: u32,
        /// First hash key.
        pub k0: u32,
        /// Second hash key.
        pub k1: u32,
        /// An element is dropped when the top 24 bits of its word are below this.
        pub threshold: u32,
        /// The value of a kept element's mask, `1 / (1 - p)`.
        pub keep: f32,
    }
}

kernel_params! {
    /// Optimiser steps: `kernels/optim.wgsl`.
    pub struct OptimParams {
        /// Elements.
        pub n: u32,
        /// `FLAG_HAS_STATE`, `FLAG_NESTEROV` (`sgd_momentum`), `FLAG_DECOUPLED` (`adam`).
        pub flags: u32,
        /// The learning rate (`sgd*`); the step size `lr / (1 - beta1^t)` (`adam`).
        pub lr: f32,
        /// Decay of the first moment: the momentum (`sgd_momentum`), beta1 (`adam`).
        pub beta1: f32,
        /// Decay of the second moment, beta2 (`adam`).
        pub beta2: f32,
        /// Added to the denominator (`adam`).
        pub eps: f32,
        /// L2 weight decay added to the gradient (`sgd*`, `adam` without `FLAG_DECOUPLED`).
        pub wd: f32,
        /// Multiplier `1 - lr weight_decay` of the weights (`adam` with `FLAG_DECOUPLED`).
        pub decay: f32,
        /// `sqrt(1 - beta2^t)` (`adam`).
        pub bc2_sqrt: f32,
    }
}

kernel_params! {
    /// Gated regions (`src/gpu/gate.rs`): `kernels/gate.wgsl`.
    pub struct GateParams {
        /// Dispatches in the region (slots 0 .. count of the argument buffer).
        pub count: u32,
        /// Element of the flag buffer that opens the region when non-zero.
        pub flag_index: u32,
        /// 0: read the flag and latch it (the region's first gate); 1: read the latch (the gate
        /// of a region continued after a submission inside it).
        pub from_latch: u32,
    }
}

kernel_params! {
    /// The device-resident conjugate-gradient solver (`src/ops/cg.rs`): `kernels/cg.wgsl`.
    pub struct CgParams {
        /// Elements of the vectors (`axpy_state`, `xpby_state`).
        pub n: u32,
        /// The state element read as a coefficient (`axpy_state`, `xpby_state`).
        pub slot: u32,
        /// Factor of that coefficient (`axpy_state`); of `x` (`xpby_state`); `tol²` (`cg_init`).
        pub scale: f32,
    }
}
