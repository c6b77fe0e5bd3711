//! Networks over one flat parameter vector.

pub mod mlp;
pub mod network;

pub mod spec;
