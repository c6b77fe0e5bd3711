//! The CPU reference: every primitive in plain Rust. It is the oracle of the GPU tests and a
//! device of its own (`--device cpu`).

pub mod conv;
pub mod elementwise;
pub mod flat;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
