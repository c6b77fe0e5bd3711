//! Constants shared by the Rust dispatch code and the WGSL kernels: flag bits of `Params.flags`,
//! the reduction codes, the batch-norm sum kinds and the workgroup sizes the dispatch math relies on. Each is defined
//! once, here, and declared under the same name in every assembled kernel source
//! ([`CONSTANTS_WGSL`]), so that a kernel tests `(p.flags & FLAG_BIAS) != 0u` where the host sets
//! `FLAG_BIAS`.

/// Defines each constant as a Rust `u32`, lists them in [`SHARED_CONSTANTS`] and declares them
/// in WGSL (doc comments become WGSL comments).
macro_rules! shared_constants {
    ($($(#[doc = $doc:literal])+ $name:ident = $value:literal;)+) => {
        $($(#[doc = $doc])+ pub const $name: u32 = $value;)+

        /// Every shared constant as `(name, value)`, in declaration order.
        pub const SHARED_CONSTANTS: &[(&str, u32)] = &[$((stringify!($name), $value)),+];

        /// The WGSL declarations of the shared constants, prepended to every kernel source.
        pub const CONSTANTS_WGSL: &str = concat!(
            $($("//", $doc, "\n",)+ "const ", stringify!($name), ": u32 = ", $value, "u;\n",)+
        );
    };
}

shared_constants! {
    /// Add `bias[col]` (or `bias[channel]`; in a JVP kernel `dbias` to the tangent too).
    FLAG_BIAS = 1;
    /// ReLU last (in a JVP kernel the tangent is zeroed where the primal is).
    FLAG_RELU = 2;
    /// Add `beta * cin` (matrix products).
    FLAG_ACCUMULATE = 4;
    /// Zero the result where the mask operand (`cin` of a product, the forward output in
    /// `gemm_fwd`) is not positive: the ReLU backward rule of the layer that produced it.
    FLAG_MASK = 8;
    /// Also write the column sums of `op(B)` to the second output (`Aᵀ B` products).
    FLAG_COL_SUMS = 16;
    /// Consecutive invocations along x take consecutive row tiles instead of column tiles.
    FLAG_ROWS_ON_LANES = 32;
    /// The input tangent `dx` is bound (else `dx = 0`): convolution JVPs and `lower_im2col`.
    FLAG_HAS_DX = 64;
    /// The weight tangent `dw` is bound and transposed too (`lower_weights_t`).
    FLAG_HAS_DW = 128;
    /// Add the second product `a1ᵀ b1` (`gemm_fwd`).
    FLAG_SECOND_PRODUCT = 256;
    /// Store a plain `[rows, npc]` matrix instead of an NCHW convolution output (`gemm_fwd`).
    FLAG_PLAIN_OUTPUT = 512;
    /// The optimiser state inputs hold state (else: the first step, state starts at zero).
    FLAG_HAS_STATE = 1024;
    /// Nesterov momentum (`sgd_momentum`).
    FLAG_NESTEROV = 2048;
    /// Decoupled weight decay, AdamW (`adam`).
    FLAG_DECOUPLED = 4096;
    /// `reduce_pass`: sum of `a`.
    REDUCE_SUM = 0;
    /// `reduce_pass`: maximum of `a`.
    REDUCE_MAX = 1;
    /// `reduce_pass`: sum of `a * b`.
    REDUCE_DOT = 2;
    /// `reduce_pass`: sum of `a * a`.
    REDUCE_SQNORM = 3;
    /// `bn_sums`: x.
    BN_SUMS_X = 0;
    /// `bn_sums`: x, dx.
    BN_SUMS_X_DX = 1;
    /// `bn_sums`: x, gy, dx, dgy, gy dx (the first pass of the backward's JVP).
    BN_SUMS_BACKWARD = 2;
    /// `bn_sums`: gy, gy (x - m) for a given per-channel centre m.
    BN_SUMS_GY_XC = 3;
    /// `bn_sums`: d² with d = x - mean.
    BN_SUMS_CENTRED = 4;
    /// `bn_sums`: d², d dx.
    BN_SUMS_CENTRED_DX = 5;
    /// `bn_sums`: d², gy d, d dx, dgy d.
    BN_SUMS_CENTRED_BACKWARD = 6;
    /// Conjugate-gradient state on the device (`kernels/cg.wgsl`, `src/ops/cg.rs`): 1 while the
    /// solve runs, 0 once it has ended (the flag of its gated iterations).
    CG_ACTIVE = 0;
    /// CG state: `‖r‖²` of the current residual.
    CG_RR = 1;
    /// CG state: `‖z‖²` of the current iterate.
    CG_ZZ = 2;
    /// CG state: the squared trust radius `ε²` (a CG solve without a radius: −1).
    CG_EPS2 = 3;
    /// CG state: the residual target `tol² ‖r₀‖²`.
    CG_STOP = 4;
    /// CG state: 1 once the iterate has been put on the boundary.
    CG_BOUNDARY = 5;
    /// CG state: iterations run (metric products spent).
    CG_ITERATIONS = 6;
    /// CG state: the step along `d` of this iteration (`z += step d`, `r += 2 step G d`).
    CG_STEP = 7;
    /// CG state: `β` of this iteration (`d = −r + β d`).
    CG_BETA = 8;
    /// CG state: how a CG solve on `(G + μI) x = b` ended (`CG_END_*`; 0 while it runs, and
    /// after its last iteration).
    CG_END = 9;
    /// CG state: its length in floats.
    CG_STATE_LEN = 10;
    /// `CG_END`: the residual reached the tolerance.
    CG_END_CONVERGED = 1;
    /// `CG_END`: met `pᵀ(G + μI)p ≤ 0`.
    CG_END_NEGATIVE_CURVATURE = 2;
    /// `CG_END`: the iterate left the ball of radius `sqrt(CG_EPS2)`.
    CG_END_LEFT_BALL = 3;
    /// Dispatches one gated region (`src/gpu/gate.rs`) may hold per submission: slots of 3 words
    /// in the gate's argument buffer, then the region's latched flag at word `3 GATE_SLOTS`.
    GATE_SLOTS = 1024;
    /// Invocations per workgroup of the entry points with one invocation per element,
    /// `i = gid.x + gid.y * num_workgroups.x * ELEMENT_WG` (`flat_index`).
    ELEMENT_WG = 256;
    /// Invocations per workgroup of the entry points over flattened lanes (rows, planes, pixel
    /// segments), `t = gid.x + gid.y * num_workgroups.x * LANE_WG` (`lane`), and of the
    /// reductions' workgroup trees.
    LANE_WG = 64;
}
