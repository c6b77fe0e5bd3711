//! Networks over one flat parameter vector.

pub mod mlp;
