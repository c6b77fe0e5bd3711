//! The reference: every primitive in plain Rust, obviously-correct loops. It is the oracle of
//! the tests (the GPU kernels and the native CPU backend are both checked against it) and a
//! device of its own (`--device reference`).

pub mod conv;
pub mod elementwise;
pub mod flat;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
