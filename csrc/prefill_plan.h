// The warpgroup prefill's (csrc/attention_wgmma.cu) bookkeeping as plain C++, usable on the
// device and checked on the host (csrc/host_checks/prefill_plan.cpp): which query rows see
// which keys of a tile, as the 32-bit bounds the kernel compares its compile-time key offsets
// against, and the order in which persistent blocks take their work items.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace paradec {

// The keys a query row at position p sees: causal (≤ p), written (≤ hi, the block's last
// row), and inside the window (≥ p − window + 1) and the block's first key lo. A lane whose
// scores start at key j0 + 2·t4 of a tile keeps both ends less 2·t4, so that a score's test is
// its compile-time offset c against them (prefill_tile_offset).
struct PrefillRowKeys {
    int64_t last, first;
};

PARADEC_HOST_DEVICE inline PrefillRowKeys prefill_row_keys(int64_t p, int64_t hi, int64_t lo,
                                                           int64_t window, int t4) {
    const int64_t last = p < hi ? p : hi;
    int64_t first = lo;
    if (window > 0 && p - window + 1 > first) first = p - window + 1;
    return {last - 2 * t4, first - 2 * t4};
}

// x − j0 clamped into [-1, bn]: key offset c (0 ≤ c < bn) of the tile starting at j0 is seen
// where c ≤ prefill_tile_offset(last, j0, bn) and c ≥ prefill_tile_offset(first, j0, bn).
PARADEC_HOST_DEVICE inline int prefill_tile_offset(int x, int j0, int bn) {
    const int d = x - j0;
    return d < -1 ? -1 : d > bn ? bn : d;
}

// Work item w of a prefill with nblk query tiles per (sequence, head): the latest query tiles,
// which see the most keys, first over every head and sequence; then heads, then sequences.
struct PrefillItem {
    int mblk, h, b;
};

PARADEC_HOST_DEVICE inline PrefillItem prefill_item(int w, int nblk, int heads, int batch) {
    const int hb = heads * batch, r = w % hb;
    return {nblk - 1 - w / hb, r % heads, r / heads};
}

}  // namespace paradec
