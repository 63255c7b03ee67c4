//! Attention kernels: land with the GPU attention work.
