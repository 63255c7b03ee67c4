// The vendor GEMM (cuBLASLt, loaded at run time) for dense linears at large m
// (csrc/linear_vendor.cu), as the launcher in csrc/linear.cu sees it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace paradec {

// Whether the library was found and started (loaded on the first call).
bool vendor_gemm_available();

// out[m, n] (+)= x[m, k] · w[n, k]ᵀ + bias[n] (bias may be null), all of `dtype`, f32
// accumulation, on `stream`. *ran says whether the library ran it: false (with status 0) where
// it is absent or declines the shape, and the caller runs its own GEMM. Returns a paradec
// status (0, or the cudaError_t a failed launch raised).
int vendor_gemm(int dtype, const void *x, size_t m, size_t k, const void *w, size_t n,
                const void *bias, void *out, bool accumulate, cudaStream_t stream, bool *ran);

}  // namespace paradec
