//! The CPU reference: every primitive in plain Rust. It is the oracle of the GPU tests and a
//! device of its own (`--device cpu`).

pub mod elementwise;
pub mod matmul;
