//! GPU attention-branch ops against the CPU reference: lands with the GPU attention work.
