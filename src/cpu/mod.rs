//! CPU reference kernels: plain Rust over f32 slices with f32 accumulation. They are the
//! oracle for the CUDA kernels (which take the same arguments) and the no-GPU backend.
//! Callers (the `ops` module) have already checked lengths; kernels still assert nothing
//! that could panic on valid input.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod kv_quant;
pub mod linear;
pub mod norm;
pub mod qkv;
pub mod rope;
