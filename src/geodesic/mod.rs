//! Geodesic paths in weight space (DESIGN.md §1): matrix-free metric products ([`metric`]),
//! the step solvers of one path step ([`solver`]), the path integrator with its objectives
//! ([`path`]), and the step direction of a connecting path ([`connect`]).
//!
//! One step solves the trust-region subproblem
//! `min_θ θᵀ G θ + β ⟨θ, ∇L⟩  subject to  ‖θ‖ ≤ ε` with `G` one of the metrics of
//! [`MetricKind`], by Steihaug–Toint CG ([`steihaug_cg`]) or by CG on `(G + μI) θ = −(β/2) ∇L`
//! with a search on `μ` ([`trust_region_multiplier`]); or takes the authors' penalty step
//! ([`penalty_step`]).

pub mod connect;
mod device_cg;
pub mod metric;
pub mod path;
pub mod solver;
pub mod step;

pub use metric::{Metric, MetricKind};
pub use solver::{bhattacharyya, penalty_step, steihaug_cg, trust_region_multiplier, CgScalars, StepReport};
