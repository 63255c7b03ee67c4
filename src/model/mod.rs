//! Models: arch params from config.json, safetensors loading, the layer stack.

pub mod weights;
