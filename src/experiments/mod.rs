//! Comparing experiments: the geodesic method beside its baselines under one protocol
//! (DESIGN.md, "the comparison protocol"). Every arm tunes its declared search space on the
//! validation split held out of the training set ([`crate::data::split`]), every arm's run
//! spends the same budget on the engine's cost counter ([`crate::cost`]), every seed is run,
//! and the test set is read once per arm and seed, for the picked configuration.
//!
//! - [`runner`]: the run folder (refusal, staging, resumable records) and the budget;
//! - [`search`]: the per-arm selection loop on validation, shared by every comparison;
//! - [`progress`]: the progress bar or lines over the configuration runs;
//! - [`compare`]: compare.json / compare.md and `geopath report`;
//! - [`curves`]: trained Bezier curves and polygonal chains between two optima;
//! - [`pruning`]: masked SGD, one-shot and gradual magnitude pruning;
//! - [`sparsify`]: the sparsification comparison;
//! - [`connect`]: the mode-connectivity comparison;
//! - [`continual`]: the continual-learning comparison.

pub mod compare;
pub mod connect;
pub mod continual;
pub mod curves;
pub mod progress;
pub mod pruning;
pub mod runner;
pub mod search;
pub mod sparsify;
