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
    int sz_slots;  // lean and stream loops: groups of scales a block may stage (set at launch)
    int tiles_per_group;  // ntiles / groups where that divides (tile t likely in group
                          // t / tiles_per_group: a guess the kernels use only for speed), else 0
    int act;  // −1, or a PARADEC_GELU_ERF … PARADEC_RELU code: out = act(x·Wᵀ + bias) (+ out)
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

// Calls of one m launched together: call i owns column blocks first[i] … first[i + 1] − 1 (in a
// sum: K splits, launch_quant_small_sum).
struct SmallGroup {
    SmallArgs call[kSmallGroupMax];
    int first[kSmallGroupMax + 1];
    int count;
    bool lean;  // the lean loop where every call's x fits it
};

// Launches the grouped kernel (every call of the same m); a paradec status.
int launch_quant_small_group(int dtype, const SmallGroup &g, cudaStream_t stream);

// Launches a sum of calls into one output (linear_small.cu's sum kernels): first[i] … first[i +
// 1] − 1 are term i's K splits, and every term's split is first[count], its part and counters
// the shared ones; a paradec status.
int launch_quant_small_sum(int dtype, const SmallGroup &g, cudaStream_t stream);

// ---- The stream loop (m ≤ 16): one resident grid that shares the whole work out evenly ----
//
// The work of a launch is its units: (column block of 128, tile of 32 rows) pairs, call by
// call, column block by column block, tile by tile. Block b of a grid of G takes units
// [b·U/G, (b + 1)·U/G) — the same number within one — and walks them on the lean loop, a
// column block's run at a time: a run that covers a whole column block is stored at once; a
// partial run leaves its f32 sums in the block's slot (its first run in slot 0, its last in
// slot 1), and the last of the blocks sharing that column block to finish (the call's counter)
// sums their slots in block order. The split of the work depends only on U and G, so results
// do not depend on timing. One wave, no tail of short blocks, and each block's fixed costs
// paid once.

// Most m the stream loop takes (the lean loop's n8 tiles).
constexpr size_t kStreamMaxM = 16;

// Most tiles of x one block stages at once for m rows (its lean-loop staging within 48 KiB).
int stream_chunk_tiles(size_t m);

// Bytes of x staging (dynamic shared memory) of a block staging `chunk` tiles of m rows: room
// for lean_x_stride of any count up to chunk.
inline size_t stream_x_bytes(size_t m, int chunk) {
    return m * (4 * static_cast<size_t>(chunk) + 4) * 16;
}

// Bytes of the slots of a grid of `grid` blocks at m rows: [grid, 2, m, 128] f32.
inline size_t stream_slot_bytes(size_t grid, size_t m) {
    return grid * 2 * m * kSmallCols * sizeof(float);
}

// Units of a call (column blocks × tiles).
inline int64_t stream_units(int64_t np, int64_t ntiles) {
    return static_cast<int64_t>(small_col_blocks(static_cast<size_t>(np))) * ntiles;
}

struct StreamGroup {
    SmallArgs call[kSmallGroupMax];  // counters: one per column block, zero on entry and left
                                     // zero; part, tiles_per_split and split unused
    int64_t ustart[kSmallGroupMax + 1];  // units before call i (ustart[count] = U)
    float *slots;                        // [grid, 2, m, 128]
    int count;
    int chunk;  // tiles of x staged at once
};

// Launches the stream loop over `grid` blocks (1 ≤ grid ≤ U); a paradec status.
int launch_quant_stream(int dtype, const StreamGroup &g, int grid, cudaStream_t stream);

}  // namespace paradec
