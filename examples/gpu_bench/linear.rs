//! Linear kernels (dense, GPTQ, EXL2): land with the GPU linear work.
