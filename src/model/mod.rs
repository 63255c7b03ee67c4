//! Models: arch params from config.json, safetensors loading, the layer stack.

pub mod arch;
pub mod stack;
pub mod weights;
