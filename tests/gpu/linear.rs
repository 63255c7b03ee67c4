//! GPU linear (dense, GPTQ, EXL2, LoRA) against the CPU reference: lands with the GPU linear work.
