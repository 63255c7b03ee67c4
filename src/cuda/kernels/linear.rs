//! Dense and quantized matrix multiplication (csrc/kernels/linear.h): lands with the GPU linear work.
