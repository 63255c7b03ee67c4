//! Round-to-nearest packers for GPTQ and EXL2 (in progress).
