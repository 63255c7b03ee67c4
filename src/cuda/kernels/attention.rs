//! QKV split, q/k norms and attention over the KV cache (csrc/kernels/attention.h): lands with the GPU attention work.
