// The tensor-core small-M path of the quantized linear (csrc/linear_small.cu), as seen by the
// launcher in csrc/linear.cu: its arguments, what it supports and its scratch.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "paradec_kernels.h"

namespace paradec {

// Output columns one block owns (4 warps × 32 columns).
constexpr int kSmallCols = 128;
// Largest m the path takes (four n8 tiles of x rows).
constexpr size_t kSmallMaxM = 32;

struct SmallArgs {
    const void *x;  // [m, ldx], 16-byte aligned rows: x itself (k = kp) or the gathered x_g
    int64_t ldx;
    const uint32_t *words;  // [word_rows, np]; tile t is word rows 4t .. 4t + 3
    const uint32_t *tiles;  // [ntiles, 2] (the group of each tile)
    const float *sz;        // [groups, np, 2]
    const void *bias;       // [n] or null
    void *out;              // [m, n]
    float *part;            // [split, m, np] f32 partials (split > 1), else null
    unsigned *counters;     // [ceil(np / 128)], zero on entry (split > 1), else null
    int64_t m, n, np;
    int ntiles, tiles_per_split, split;
    int groups;  // rows of sz
    bool accumulate;
};

// Whether the path takes this weight and m: uniform 4-bit tiles, m ≤ 32.
inline bool small_path_applies(const paradec_qweight *w, size_t m) {
    return w->bits == 4 && m >= 1 && m <= kSmallMaxM;
}

// Column blocks of the grid (one split-K counter each).
inline size_t small_col_blocks(size_t np) { return (np + kSmallCols - 1) / kSmallCols; }

// Launches the kernel on `stream` (with `lean`, the lean loop where x fits it; else the ring
// loop); returns a paradec status (0, or the launch's cudaError_t).
int launch_quant_small(int dtype, const SmallArgs &a, bool lean, cudaStream_t stream);

// Most calls one grouped launch takes.
constexpr int kSmallGroupMax = 8;

// Calls of one m launched together: call i owns column blocks first[i] … first[i + 1] − 1.
struct SmallGroup {
    SmallArgs call[kSmallGroupMax];
    int first[kSmallGroupMax + 1];
    int count;
    bool lean;  // the lean loop where every call's x fits it
};

// Launches the grouped kernel (every call of the same m); a paradec status.
int launch_quant_small_group(int dtype, const SmallGroup &g, cudaStream_t stream);

}  // namespace paradec
