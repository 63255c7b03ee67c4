//! Models: config.json parsing into [`crate::ArchParams`] and the layer stack.

pub mod config;
pub mod stack;
