// Addressing of the packed words of paradec's quantized device layout (kernels/linear.h), shared
// by the quantized kernels: word row r of column c is words[((c / 32)·word_rows + r)·32 + c % 32].
// Columns come in panels of 32, each panel all its word rows in order, so a warp reading one
// tile (a few word rows) of 32 columns reads one contiguous span, and a warp walking K streams
// one contiguous panel: long runs in DRAM instead of 128-byte pieces of rows np words apart.
#pragma once

#include <cstdint>

namespace paradec {

constexpr int kPanelCols = 32;

__host__ __device__ __forceinline__ int64_t word_index(int64_t word_rows, int64_t r, int64_t c) {
    return ((c / kPanelCols) * word_rows + r) * kPanelCols + c % kPanelCols;
}

}  // namespace paradec
