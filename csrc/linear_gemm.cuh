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
    // K split of the wgmma GEMM (wgmma_ksplit): ksplit > 1 writes f32 partials
    // [ksplit, m, np] and counts finished splits per tile in counters[tiles] (zero on entry,
    // left zero); the last split of a tile sums them in split order.
    float *part = nullptr;
    unsigned *counters = nullptr;
    int ksplit = 1;
    // Terms of one sum (launch_gemm_wgmma_sum): this call's splits write partial slots zbase …
    // zbase + ksplit − 1 of zslots, the counters count every slot's blocks, and a tile's last
    // block of all sums the zslots slots in order. 0: the call's own ksplit slots.
    int zbase = 0;
    int zslots = 0;
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

// Rows of x per block of the wgmma GEMM for m rows: 32 up to 32 rows (wgmma_small_tok), 64 up
// to 64, 128 up to 512, 256 beyond — from 33 rows the fastest tile at every point measured on
// an H100 (GPTQ-4, EXL2-4 and GPTQ-8 at 4096×12288 and 8192×28672, m = 33 … 2048; 128 and 256
// tie at 512 rows of the larger shape).
int wgmma_tokens(int64_t m);

// The tile of the grouped and summed launches at m ≤ 64 rows: 32 rows up to 32 (three blocks
// an SM where 64-row tiles fit two, half the wgmma work for padding rows), else 64.
// PARADEC_WGMMA_TOK32=off keeps 64 (read once).
int wgmma_small_tok(int64_t m);

// Ways the wgmma GEMM splits K at m rows of x, `tok` per block, for kdim × np weights on the
// current device: tiles of 32 or 64 rows only, where the grid's tiles are fewer than the SMs,
// about three blocks per SM and at most 4 splits; each split at least 2 K steps and
// m · ksplit ≤ 2048 (the workspace's plan for partials). PARADEC_WGMMA_KSPLIT=N forces N (≤ 16)
// within those caps.
int wgmma_ksplit(int64_t m, int64_t kdim, int64_t np, int tok);

// Tiles of the wgmma GEMM's grid (one split counter each).
inline int64_t wgmma_tiles(int64_t m, int64_t np, int tok) {
    return ((np + 127) / 128) * ((m + tok - 1) / tok);
}

// Launches the wgmma GEMM (where wgmma_serves) with `tok` rows of x per block; a paradec
// status.
int launch_gemm_wgmma(int dtype, const GemmArgs &a, int bits, int tok, cudaStream_t stream);

// Most calls of one grouped wgmma launch.
constexpr int kWgmmaGroupMax = 8;

// out (+)= Σ_i x_i · W_iᵀ + bias for `count` (1 … kWgmmaGroupMax) terms of one output on the
// wgmma GEMM of 4-bit weights at wgmma_small_tok's tiles (each term where wgmma_serves,
// m ≤ 64; out, bias and accumulate those of calls[0]), in one grid: every term's K splits (its
// `ksplit`: a sum takes wgmma_group_splits') write f32 partials `part` [Σ splits, m, np], and
// the last block of each tile to finish sums them in (term, split) order, then adds bias and
// the existing out — the same result whatever the timing. `counters` (one per tile, zero on
// entry, left zero). A paradec status.
int launch_gemm_wgmma_sum(int dtype, const GemmArgs *calls, int count, float *part,
                          unsigned *counters, cudaStream_t stream);

// The K split of each of `count` (≤ kWgmmaGroupMax) calls of kdim[i] × np[i] weights at m rows
// (≤ 64) in one grid of the wgmma GEMM's tiles (wgmma_small_tok; launch_gemm_wgmma_group, or
// _sum where `summed`): plan_group_splits (wgmma_group_plan.h) over the SMs, starting from each
// call's own wgmma_ksplit — each call's own split where PARADEC_WGMMA_KSPLIT forces a count or
// PARADEC_WGMMA_GROUP_PLAN=own (=two: the plan over two slots an SM). None empty; at most 8,
// and m · split ≤ 2048.
void wgmma_group_splits(int64_t m, const int64_t *kdim, const int64_t *np, int count, bool summed,
                        int *ks);

// Launches `count` (1 … kWgmmaGroupMax) calls of the wgmma GEMM of 4-bit weights (each where
// wgmma_serves, m ≤ 64: wgmma_small_tok's tiles) in one grid, each call's blocks, splits and
// sums exactly those of its own launch at the split it carries (`ksplit`: a group takes
// wgmma_group_splits') — the calls with the most K steps a block placed first in the grid, so
// their blocks start first.
// Calls' outputs, partials and counters must not overlap. A paradec status.
int launch_gemm_wgmma_group(int dtype, const GemmArgs *calls, int count, cudaStream_t stream);

}  // namespace paradec
