//! Models: config.json parsing into [`crate::ArchParams`] and the layer stack.

pub mod config;
#[cfg(feature = "cuda")]
pub mod graph;
pub mod stack;
