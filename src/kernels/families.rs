//! The kernel families: for each WGSL file under `kernels/`, its includes, its uniform layout,
//! its bindings and its entry points with their workgroup sizes.

use super::constants::{ELEMENT_WG, LANE_WG};
use super::params::{
    CgParams, ConvGemmParams, ConvLowerParams, ConvParams, DropoutParams, ElementwiseParams, FlatParams, GateParams,
    MatmulJvpParams, MatmulParams, NormParams, OptimParams, PoolParams, ReduceParams, SoftmaxParams,
};
use super::{EntryPoints, Family, Include, KernelParams, WorkgroupSize};

/// Workgroup of the register- and scalar-tiled products: 8 × 8 invocations.
pub const TILED_WG: [u32; 3] = [8, 8, 1];
/// Workgroup of the kernels staged through workgroup memory: 16 × 16 invocations.
pub const STAGED_WG: [u32; 3] = [16, 16, 1];
/// Workgroup of the lane-sharing products (`matmul_subgroup`): 2 subgroups of 8 lanes.
pub const LANE_SHARED_WG: [u32; 3] = [16, 1, 1];
/// Workgroup of the lane-sharing JVP (`matmul_jvp_subgroup`): 8 subgroups of 8 lanes.
pub const LANE_SHARED_JVP_WG: [u32; 3] = [64, 1, 1];

/// One invocation: the scalar updates of the device-resident CG.
const SINGLE: WorkgroupSize = WorkgroupSize::Fixed([1, 1, 1]);
const ELEMENTS: WorkgroupSize = WorkgroupSize::Fixed([ELEMENT_WG, 1, 1]);
const LANES: WorkgroupSize = WorkgroupSize::Fixed([LANE_WG, 1, 1]);
const TILED: WorkgroupSize = WorkgroupSize::Fixed(TILED_WG);
const STAGED: WorkgroupSize = WorkgroupSize::Fixed(STAGED_WG);
const LANE_SHARED: WorkgroupSize = WorkgroupSize::Fixed(LANE_SHARED_WG);
const LANE_SHARED_JVP: WorkgroupSize = WorkgroupSize::Fixed(LANE_SHARED_JVP_WG);
/// The per-channel batch-norm kernels and the split sums: `WG`, specialised by the host to the
/// channel length.
const NORM_CHANNEL: WorkgroupSize = WorkgroupSize::Tunable("WG");

/// `kernels/include/<name>.wgsl`.
macro_rules! include_wgsl {
    ($name:literal) => {
        Include {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/include/", $name, ".wgsl")),
        }
    };
}

/// `flat_index` and `lane`, the invocation indices of the 1-D entry points.
const INDEX: Include = include_wgsl!("index");
/// `cols_of`: image, row and column of four patch columns (the lowering).
const PATCH_COLUMNS: Include = include_wgsl!("patch_columns");
/// Loads of four vec4 rows of A and of B, shared by the register-tiled products.
const VEC4_ROWS: Include = include_wgsl!("vec4_rows");
/// The bindings, 16 × 16 tile and epilogue of the register-tiled products.
const MATMUL_TILE: Include = include_wgsl!("matmul_tile");
/// The bindings, 16 × 8 tiles and epilogue of the register-tiled JVPs.
const MATMUL_JVP_TILE: Include = include_wgsl!("matmul_jvp_tile");
/// The bindings, `at` and `wg_sum` of the batch-norm kernels.
const BATCHNORM: Include = include_wgsl!("batchnorm");
/// Subgroup broadcasts of the lane-sharing kernels.
const LANE_SHARE: Include = include_wgsl!("lane_share");
/// `Operand = f32`: the storage type of the operands of `matmul_wg.wgsl` and `conv2d_igemm.wgsl`.
const OPERAND_F32: Include = include_wgsl!("operand_f32");
/// `Operand = f16` (with `enable f16;`): the same kernels on f16 operands (`matmul_wg_f16`,
/// `conv2d_igemm_f16`).
const OPERAND_F16: Include = include_wgsl!("operand_f16");
/// `a`, `b` and the staging of `matmul_wg.wgsl` by scalar loads (any shape).
const MATMUL_WG_SCALAR: Include = include_wgsl!("matmul_wg_scalar");
/// `a`, `b` and the staging of `matmul_wg.wgsl` by vec4 loads (contiguous sides multiples of 4).
const MATMUL_WG_VEC4: Include = include_wgsl!("matmul_wg_vec4");

/// One family: `kernels/<name>.wgsl` after `includes`, its entry points grouped by size;
/// `trusted` or `checked` says whether its modules may drop wgpu's runtime checks
/// ([`Family::trusted`](super::Family::trusted)); `half [..]` lists its f16 bindings
/// ([`Family::half`](super::Family::half)).
macro_rules! family {
    (@checks trusted) => { true };
    (@checks checked) => { false };
    ($name:literal, $params:ty, $($rest:tt)+) => { family!($name, file $name, $params, $($rest)+) };
    ($name:literal, file $stem:literal, $params:ty, reads $reads:literal, writes $writes:literal, $checks:ident,
     $(half [$($half:literal),+],)?
     includes [$($include:expr),*], $([$($entry:literal),+] => $size:expr),+ $(,)?) => {
        Family {
            name: $name,
            stem: $stem,
            file: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/", $stem, ".wgsl")),
            includes: &[$($include),*],
            params: &<$params as KernelParams>::LAYOUT,
            reads: $reads,
            writes: $writes,
            half: &[$($($half),+)?],
            entry_points: &[$(EntryPoints { names: &[$($entry),+], workgroup_size: $size }),+],
            trusted: family!(@checks $checks),
        }
    };
}

/// Every kernel family. Trusted (see [`Family::trusted`](super::Family::trusted)): the
/// elementwise, dropout and optimiser kernels (one guarded index per invocation) and the
/// register-tiled products and JVPs (loads clamped to the last row and column, stores guarded,
/// tiles in named struct members, k loops bounded by `K` within the vec4 alignment the host
/// selects them for, empty products never dispatched). Every family staged through workgroup
/// memory or indexing arrays by computed positions (convolutions, pooling, reductions,
/// softmax, norms, the general and workgroup products, the flat ops) keeps the checks, as does
/// the f16 cast.
pub static FAMILIES: &[Family] = &[
    family!("elementwise", ElementwiseParams, reads 2, writes 2, trusted, includes [INDEX],
        ["axpby", "mul", "scale", "fill", "relu", "relu_backward", "relu_jvp", "add_bias", "copy_range"] => ELEMENTS),
    family!("matmul", MatmulParams, reads 4, writes 2, trusted, includes [MATMUL_TILE, VEC4_ROWS],
        ["matmul_nn", "matmul_tn", "matmul_nt"] => TILED),
    family!("matmul_subgroup", MatmulParams, reads 4, writes 2, trusted, includes [MATMUL_TILE, VEC4_ROWS, LANE_SHARE],
        ["matmul_nn_cols", "matmul_nn_rows", "matmul_tn_cols", "matmul_tn_rows", "matmul_nt_cols", "matmul_nt_rows"]
            => LANE_SHARED),
    family!("matmul_general", MatmulParams, reads 4, writes 2, checked, includes [],
        ["matmul_general"] => TILED),
    family!("matmul_wg", MatmulParams, reads 4, writes 2, checked, includes [OPERAND_F32, MATMUL_WG_SCALAR],
        ["matmul_wg"] => STAGED),
    family!("matmul_wg_vec4", file "matmul_wg", MatmulParams, reads 4, writes 2, checked,
        includes [OPERAND_F32, MATMUL_WG_VEC4], ["matmul_wg"] => STAGED),
    family!("matmul_wg_f16", file "matmul_wg", MatmulParams, reads 4, writes 2, checked, half [1, 2],
        includes [OPERAND_F16, MATMUL_WG_SCALAR], ["matmul_wg"] => STAGED),
    family!("matmul_wg_f16_vec4", file "matmul_wg", MatmulParams, reads 4, writes 2, checked, half [1, 2],
        includes [OPERAND_F16, MATMUL_WG_VEC4], ["matmul_wg"] => STAGED),
    family!("matmul_jvp", MatmulJvpParams, reads 6, writes 2, trusted, includes [MATMUL_JVP_TILE, VEC4_ROWS],
        ["matmul_jvp_nn"] => TILED),
    family!("matmul_jvp_subgroup", MatmulJvpParams, reads 6, writes 2, trusted,
        includes [MATMUL_JVP_TILE, VEC4_ROWS, LANE_SHARE],
        ["matmul_jvp_nn_cols"] => LANE_SHARED_JVP),
    family!("matmul_jvp_general", MatmulJvpParams, reads 6, writes 2, checked, includes [],
        ["matmul_jvp_general"] => TILED),
    family!("matmul_jvp_wg", MatmulJvpParams, reads 6, writes 2, checked, includes [],
        ["matmul_jvp_wg"] => STAGED),
    family!("conv2d", ConvParams, reads 6, writes 2, checked, includes [INDEX],
        ["conv2d_fwd", "conv2d_jvp", "conv2d_bwd_data", "conv2d_bwd_weight", "conv2d_bwd_weight_3x3",
         "conv2d_bwd_bias", "conv2d_sum_splits", "conv2d_flip_weights"] => LANES),
    family!("conv2d_3x3", ConvParams, reads 6, writes 2, checked, includes [INDEX],
        ["conv3x3_fwd", "conv3x3_jvp"] => LANES),
    family!("conv2d_lower", ConvLowerParams, reads 4, writes 2, checked, includes [INDEX, PATCH_COLUMNS],
        ["lower_weights_t", "lower_gy", "lower_col2im", "lower_sum_wt", "lower_pad_q"] => LANES),
    family!("conv2d_gemm", ConvGemmParams, reads 6, writes 1, checked, includes [INDEX],
        ["gemm_fwd8", "gemm_fwd16", "gemm_bwd_weight8", "gemm_bwd_weight16"] => LANES),
    family!("conv2d_im2col", ConvLowerParams, reads 2, writes 2, checked, includes [INDEX, PATCH_COLUMNS],
        ["lower_im2col"] => LANES),
    family!("conv2d_igemm", ConvParams, reads 6, writes 2, checked, includes [OPERAND_F32],
        ["conv_igemm_fwd", "conv_igemm_jvp", "conv_igemm_bwd_weight"] => STAGED),
    // Every entry point of the file is in the module; the ops dispatch only the forward on f16.
    family!("conv2d_igemm_f16", file "conv2d_igemm", ConvParams, reads 6, writes 2, checked, half [1, 2],
        includes [OPERAND_F16], ["conv_igemm_fwd", "conv_igemm_jvp", "conv_igemm_bwd_weight"] => STAGED),
    family!("pool", PoolParams, reads 3, writes 3, checked, includes [INDEX],
        ["maxpool2d_fwd", "maxpool2d_jvp", "maxpool2d_bwd"] => LANES),
    family!("reduce", ReduceParams, reads 2, writes 2, checked, includes [INDEX],
        ["reduce_pass", "argmax_rows"] => LANES,
        ["col_sum_pass"] => ELEMENTS),
    family!("softmax", SoftmaxParams, reads 3, writes 2, checked, includes [INDEX],
        ["softmax", "log_softmax", "softmax_jvp", "cross_entropy_rows", "cross_entropy_backward",
         "cross_entropy_backward_jvp"] => LANES),
    family!("flat", FlatParams, reads 1, writes 2, checked, includes [INDEX],
        ["prune_mask", "prune", "zero_words"] => ELEMENTS,
        ["radix_histogram", "count_zeros"] => LANES),
    family!("norm", NormParams, reads 6, writes 3, checked, includes [INDEX, BATCHNORM],
        ["bn_train", "bn_jvp", "bn_backward", "bn_backward_jvp", "bn_eval_backward"] => NORM_CHANNEL,
        ["bn_eval", "bn_update_running"] => ELEMENTS),
    family!("norm_split", NormParams, reads 6, writes 3, checked, includes [INDEX, BATCHNORM],
        ["bn_sums"] => NORM_CHANNEL,
        ["bn_finish_train", "bn_finish_jvp", "bn_finish_backward", "bn_finish_backward_jvp", "bn_finish_eval_backward",
         "bn_apply"] => ELEMENTS),
    family!("dropout", DropoutParams, reads 1, writes 2, trusted, includes [INDEX],
        ["dropout"] => ELEMENTS),
    family!("cast", ElementwiseParams, reads 1, writes 1, checked, half [2], includes [INDEX],
        ["cast_f16"] => ELEMENTS),
    family!("gate", GateParams, reads 2, writes 1, checked, includes [INDEX],
        ["gate_dispatches"] => ELEMENTS),
    family!("cg", CgParams, reads 3, writes 1, checked, includes [INDEX],
        ["steihaug_alpha", "steihaug_beta", "cg_init", "cg_alpha", "cg_beta"] => SINGLE,
        ["axpy_state", "xpby_state"] => ELEMENTS),
    family!("optim", OptimParams, reads 4, writes 3, trusted, includes [INDEX],
        ["sgd", "sgd_momentum", "adam"] => ELEMENTS),
];
