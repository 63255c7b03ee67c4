//! Layers: norm, linear (+ LoRA, rank reduction), attention parameters and the parallel decoder block.

#[cfg(feature = "cuda")]
pub mod graph;
pub mod linear;
pub mod lora;
pub mod norm;
pub mod parallel_decoder;
pub mod params;
pub mod rank_reduce;
pub(crate) mod step_shape;
