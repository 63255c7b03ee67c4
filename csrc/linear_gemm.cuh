// The pipelined tensor-core GEMM of the linears at larger m (linear_gemm.cu), called by
// linear.cu's launchers.
#pragma once

#include "common.cuh"

namespace paradec {

// out[m, n] (+)= A[m, kdim] · Bᵀ + bias, A and out of the dtype, f32 accumulation. B is either
// dense (w: [n, kdim], row-major) or paradec's quantized layout (words / tiles / sz of a
// paradec_qweight, kdim = kp; A is x or the gathered x_g).
struct GemmArgs {
    const void *a;
    int64_t lda;
    int64_t kdim;
    const void *w;  // dense B, or null
    const uint32_t *words;
    const uint2 *tiles;
    const float2 *sz;
    const void *bias;
    void *out;
    int64_t m, n, np;
    bool accumulate;
};

// Whether the GEMM takes these arguments: 16-byte aligned A (and dense B) with rows of a
// whole number of 16-byte vectors. Otherwise the caller keeps its simple kernel.
bool gemm_serves(const GemmArgs &a);

// Launches the GEMM; `bits` is the quantized layout's uniform width (2…8), 0 for mixed widths,
// −1 for dense B. Returns PARADEC_K_OK or the launch's CUDA status.
int launch_gemm(int dtype, const GemmArgs &a, int bits, cudaStream_t stream);

// Whether the wgmma GEMM (sm_90a) takes these arguments: quantized B of one width for every tile
// that gemm_serves, on a device of compute capability 9.0, in a build with sm_90a code
// (PARADEC_SM90A_IMAGE, set by build.rs).
bool wgmma_serves(const GemmArgs &a, int bits);

// Whether the wgmma GEMM runs on the current device: a build with sm_90a code and a device of
// compute capability 9.0.
bool wgmma_available();

// Rows of x per block of the wgmma GEMM (64, 128 or 256) for m rows and n columns on `sms`
// multiprocessors: the largest that still gives every SM a block.
int wgmma_tokens(int64_t m, int64_t n, int sms);

// Launches the wgmma GEMM (where wgmma_serves) with `tok` rows of x per block; a paradec
// status.
int launch_gemm_wgmma(int dtype, const GemmArgs &a, int bits, int tok, cudaStream_t stream);

}  // namespace paradec
