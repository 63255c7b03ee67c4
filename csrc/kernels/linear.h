/* kernels/linear.h — dense and quantized (GPTQ, EXL2) matrix multiplication, and the in-place
 * scale LoRA uses. Included by paradec_kernels.h.
 *
 * Every linear computes out[m, N] (+)= x[m, K] · Wᵀ + bias with f32 accumulation; results do not
 * depend on timing (split-K partials are summed in a fixed order, by a second kernel or by the
 * last block to finish). */
#ifndef PARADEC_KERNELS_LINEAR_H
#define PARADEC_KERNELS_LINEAR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Kernel paths a call may take (PARADEC_PATH_AUTO: the launcher's own choice by shape:
 * SMALL_LEAN where the small-M path applies, else GEMV for m ≤ 8 and WGMMA above). */
enum paradec_linear_path {
    PARADEC_PATH_AUTO = 0,
    PARADEC_PATH_GEMV = 1, /* CUDA cores, f32 FMA, weights streamed once per MT rows */
    PARADEC_PATH_MMA = 2,  /* tensor cores (mma.sync): paradec's pipelined GEMM */
    PARADEC_PATH_SMALL = 3, /* quantized, uniform 4-bit, m ≤ 32: tensor cores with the weights
                               as the 16-row operand, streamed once; K split as asked (the last
                               block sums the partials). Elsewhere (other widths, larger m,
                               dense) it is AUTO. */
    PARADEC_PATH_SMALL_LEAN = 4, /* SMALL on its lean loop where x fits it (m ≤ 16, a share of K
                                    whose x fits 48 KiB of shared memory), else SMALL's ring
                                    loop */
    PARADEC_PATH_VENDOR = 5, /* dense: the vendor GEMM (cuBLASLt, loaded at run time; MMA where
                                it is absent or declines the shape); not yet chosen by AUTO.
                                Quantized weights: AUTO. */
    PARADEC_PATH_WGMMA = 6, /* quantized, one width for every tile, on an sm_90a build and a
                               device of compute capability 9.0: Hopper's warpgroup MMA with the
                               weights decoded once per block into registers (any m; AUTO's
                               choice above 8 rows where SMALL does not apply). Elsewhere MMA.
                               Dense: AUTO. */
    PARADEC_PATH_SMALL_STREAM = 7 /* SMALL at m ≤ 16 on one resident grid of `split` blocks
                                     (at most one per unit: column block of 128 × tile of 32
                                     rows) that share every unit of the call evenly, the lean
                                     loop's arithmetic; partial column blocks summed in a fixed
                                     order by the last of their blocks. Elsewhere SMALL_LEAN
                                     with `split` as its K split. Dense: AUTO. */
};

/* A quantized weight in paradec's device layout (built once on the host from a GPTQ or EXL2
 * weight). Stored rows j = 0..kp are grouped in tiles of 32 rows; tile t has one bit width b
 * (2, 3, 4, 5, 6 or 8) and belongs to one group g. Tile t of column c is a little-endian bit
 * stream of b 32-bit words, words[(word_row[t] + i)·np + c] for i < b, row r of the tile at
 * bits [r·b, r·b + b). The weight of stored row j = 32t + r, column c is
 *   w = q·sz[g·np + c].x + sz[g·np + c].y        (sz = (scale, −zero·scale), f32)
 * and stored row j multiplies input feature row_src[j] (−1: a padding row, x = 0); row_src is
 * NULL when j is the input feature itself (kp == k). np = N rounded up to 8. When every tile
 * has the same width (bits ≠ 0), tile t's words are word rows t·bits .. t·bits + bits − 1. */
typedef struct paradec_qweight {
    const uint32_t *words;   /* [word_rows, np] */
    const uint32_t *tiles;   /* [ntiles, 2]: word_row, group | bits << 24 */
    const float *sz;         /* [groups, np, 2] */
    const int32_t *row_src;  /* [kp] or NULL */
    size_t k, n, np, kp, ntiles, groups, word_rows;
    int bits; /* the width of every tile, or 0 when the tiles mix widths */
} paradec_qweight;

/* Bytes of scratch paradec_quant_linear needs for m rows split `split` ways (split ≥ 1). */
size_t paradec_quant_linear_scratch(int dtype, const paradec_qweight *w, size_t m, int path,
                                    int split);

/* Split counters kept zero between calls: `count` u32 counters that are zero when a call
 * starts and that the call leaves zero when it completes. The SMALL path's split-K counters
 * come from them when they are enough (instead of being zeroed in the scratch on every call: a
 * memset or a prep kernel saved). One set serves every call of one stream; calls that may run
 * at once never share a set. `counters` NULL or `count` 0: none. */
typedef struct paradec_zeroed_counters {
    unsigned *counters;
    size_t count;
} paradec_zeroed_counters;

/* out[m, n] (+)= x[m, k] · Wᵀ + bias[n] (bias may be NULL); x, bias, out of `dtype`.
 * `path` picks the kernel (see paradec_linear_path); `split` (≥ 1) splits K across blocks on
 * the GEMV and SMALL paths (ignored by MMA); on WGMMA, 32, 64, 128 or 256 sets the rows of x per
 * block (any other value: the launcher's choice), and the launcher splits K itself where the
 * grid's tiles leave multiprocessors idle (partials summed in split order). scratch holds at least
 * paradec_quant_linear_scratch(...) bytes, 256-byte aligned (NULL allowed when that is 0).
 * `zeroed` (may be NULL): see paradec_zeroed_counters. */
int paradec_quant_linear(int dtype, const void *x, size_t m, const paradec_qweight *w,
                         const void *bias, void *out, int accumulate, int path, int split,
                         void *scratch, size_t scratch_bytes,
                         const paradec_zeroed_counters *zeroed, paradec_stream_t stream);

/* One call of a grouped quantized linear (paradec_quant_linear_group). */
typedef struct paradec_qlinear_call {
    const void *x;              /* [m, k] of the group's dtype */
    const paradec_qweight *w;   /* uniform 4-bit */
    const void *bias;           /* [n] or NULL */
    void *out;                  /* [m, n]; no call's out overlaps any call's x */
    int accumulate;
    int split;                  /* ≥ 1: the K split of the SMALL path (SMALL_STREAM: the
                                   grid; the group's is the largest call's) */
    int path;                   /* PARADEC_PATH_SMALL_LEAN (or AUTO), PARADEC_PATH_SMALL or
                                   PARADEC_PATH_SMALL_STREAM: the group runs the stream loop when
                                   every call asks for it and m ≤ 16, else the lean loop unless
                                   a call asks for SMALL; PARADEC_PATH_WGMMA for every call: the
                                   wgmma GEMM (split as paradec_quant_linear's on that path) */
    int act;                    /* 0: none; 1 + a PARADEC_GELU_ERF … PARADEC_RELU code: out =
                                   act(x·Wᵀ + bias) (+ out with accumulate), in f32 before the
                                   output is rounded — e.g. an MLP's first projection */
} paradec_qlinear_call;

/* Most calls of one group. */
enum paradec_linear_group_limits { PARADEC_LINEAR_GROUP_MAX = 8 };

/* Bytes of scratch paradec_quant_linear_group needs. */
size_t paradec_quant_linear_group_scratch(int dtype, size_t m, const paradec_qlinear_call *calls,
                                          size_t count);

/* Several quantized linears of the same m (1…32) on the SMALL path in two launches (one that
 * gathers permuted x and zeroes the split counters of every call, one that multiplies for every
 * call), each result as paradec_quant_linear(…, PARADEC_PATH_SMALL, call.split, …) gives it.
 * Every weight must be uniform 4-bit (PARADEC_K_BAD_SHAPE otherwise); 1…8 calls. scratch holds
 * paradec_quant_linear_group_scratch(...) bytes, 256-byte aligned. With `zeroed` counters
 * enough for every call's splits, no counter is zeroed and the first launch runs only where a
 * call gathers.
 * Where every call's path is PARADEC_PATH_WGMMA (any m, any width, act 0 — PARADEC_K_BAD_ENUM
 * otherwise), each result is paradec_quant_linear(…, PARADEC_PATH_WGMMA, call.split, …)'s:
 * 4-bit weights at m ≤ 64 on a device the wgmma GEMM runs on take the same two launches (the
 * second one grid of every call's tiles of 32 rows of x up to 32 rows, 64 beyond, at K splits
 * planned for the calls together: within rounding of the call alone, the same bits every run);
 * anything else runs the calls one after the other (to the bit). */
int paradec_quant_linear_group(int dtype, size_t m, const paradec_qlinear_call *calls,
                               size_t count, void *scratch, size_t scratch_bytes,
                               const paradec_zeroed_counters *zeroed, paradec_stream_t stream);

/* One term of a summed quantized linear (paradec_quant_linear_sum). */
typedef struct paradec_qlinear_term {
    const void *x;              /* [m, k] of the sum's dtype; does not overlap the sum's out */
    const paradec_qweight *w;   /* uniform 4-bit; n the same for every term */
    int split;                  /* ≥ 1: this term's K split */
} paradec_qlinear_term;

/* Bytes of scratch paradec_quant_linear_sum needs (on any of its paths). */
size_t paradec_quant_linear_sum_scratch(int dtype, size_t m, const paradec_qlinear_term *terms,
                                        size_t count);

/* out[m, n] (+)= Σ_i x_i[m, k_i] · W_iᵀ + bias[n]: 1…8 uniform 4-bit weights of one n summed
 * into one output by the SMALL path in one launch (plus one that gathers permuted x and, without
 * kept counters, zeroes the split counters) — e.g. a parallel block's residual update
 * x += attn · W_oᵀ + act · W_downᵀ. Every term's splits write f32 partials and the last block of
 * each column block to finish sums them all in (term, split) order, then adds bias and, with
 * `accumulate`, out: the result does not depend on timing. path: PARADEC_PATH_AUTO or
 * PARADEC_PATH_SMALL_LEAN (the lean loop where every term's x fits it), PARADEC_PATH_SMALL (the
 * ring loop), m ≤ 32; or PARADEC_PATH_WGMMA (any m and uniform width; terms' split ignored):
 * 4-bit weights at m ≤ 64 on a device the wgmma GEMM runs on take one grid of every term's
 * tiles (32 rows of x up to 32 rows, 64 beyond) and K splits (planned for the terms together),
 * summed the same way;
 * anything else runs the terms one after the other on that path, accumulating (the same sum
 * within rounding). scratch holds paradec_quant_linear_sum_scratch(...) bytes, 256-byte
 * aligned; `zeroed` (may be NULL): see paradec_zeroed_counters. */
int paradec_quant_linear_sum(int dtype, size_t m, const paradec_qlinear_term *terms, size_t count,
                             const void *bias, void *out, int accumulate, int path, void *scratch,
                             size_t scratch_bytes, const paradec_zeroed_counters *zeroed,
                             paradec_stream_t stream);

/* Dense: out[m, n] (+)= x[m, k] · w[n, k]ᵀ + bias[n]; all of `dtype`. GEMV path for small m,
 * MMA otherwise; no scratch. */
int paradec_linear(int dtype, const void *x, size_t m, size_t k, const void *w, size_t n,
                   const void *bias, void *out, int accumulate, int path,
                   paradec_stream_t stream);

/* Reads `bytes` (16-byte aligned) once and folds them into out[blocks] (u32; an XOR per block,
 * bit-exact regardless of timing): the read-bandwidth probe of the GPU bench. */
int paradec_read_bytes(const void *p, size_t bytes, void *out, unsigned blocks,
                       paradec_stream_t stream);

/* Reads a 4-bit weight's tiles as the small-M lean loop does, without decoding or products, and
 * folds them into out[(np / 128) · splits] (u32, an XOR per block): the access-pattern probe of
 * the GPU bench. `words` holds ntiles · 4 rows of np u32 (np a multiple of 128); a block reads
 * `tiles_per_split` tiles of 128 columns. rows_layout 1: the prepared layout (a tile is 4 word
 * rows of the whole width); 0: each 128-column block's tiles contiguous (2 KiB a tile). */
int paradec_read_tiles(const void *words, size_t np, size_t ntiles, size_t tiles_per_split,
                       int rows_layout, void *out, paradec_stream_t stream);

/* Whether the vendor GEMM of PARADEC_PATH_VENDOR (cuBLASLt) is loaded (tried on the first
 * call): 1 or 0. */
int paradec_vendor_gemm_available(void);

/* Whether PARADEC_PATH_WGMMA runs its wgmma kernel on the current device (a build with sm_90a
 * code and a device of compute capability 9.0), where the weights allow it: 1 or 0. */
int paradec_wgmma_available(void);

/* How the small-M path's lean loop sums its K splits, for the whole process (a test and bench
 * hook): 0 — as the environment's PARADEC_SPLIT_SUM says (=global, =cluster, =resident or
 * =auto; unset is auto); 1 — global: every split leaves f32 partials in the scratch and the
 * last block of a column block to finish sums them; 2 — cluster: the splits of a column block
 * run as one thread-block cluster and sum through shared memory (sm_90 and later, 2 … 16
 * splits; elsewhere global); 3 — resident: clusters only where the device holds all of a
 * launch's clusters at once, else global; 4 — auto, the default: resident for 8 rows or more,
 * global below. All give the same bits. Returns the previous mode, or -1 for an unknown one
 * (then nothing changes). */
int paradec_set_split_sum(int mode);

/* How many lean launches the calling host thread has summed inside clusters so far (a test
 * hook: whether a split-sum mode took clusters). */
uint64_t paradec_cluster_sum_launches(void);

/* Whether this build holds the wgmma kernels' sm_90a code (they run on devices of compute
 * capability 9.0): 1 or 0. */
int paradec_wgmma_built(void);

/* x *= factor over n elements. */
int paradec_scale_inplace(int dtype, void *x, size_t n, float factor, paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_LINEAR_H */
