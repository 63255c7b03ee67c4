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

// Work item w of a prefill with nblk query tiles per (sequence, head). The (sequence, head)
// pairs, sequence-major, are taken in groups of `group` (the last may be smaller); inside a
// group the latest query tiles, which see the most keys, come first over its pairs. A group is
// sized so that its keys and values stay in L2 while the blocks run it: across every head at
// once, each block's keys come from DRAM (H100, d = 128, 2048 tokens: a quarter slower).
struct PrefillItem {
    int mblk, h, b;
};

PARADEC_HOST_DEVICE inline PrefillItem prefill_item(int w, int nblk, int heads, int batch,
                                                    int group) {
    const int pairs = heads * batch, per_group = group * nblk;
    const int q = w / per_group, u = w - q * per_group;
    const int rest = pairs - q * group, size = rest < group ? rest : group;
    const int r = q * group + u % size;
    return {nblk - 1 - u / size, r % heads, r / heads};
}

// Pairs a group of prefill_item takes: as many as keep `budget` bytes of keys and values
// (kv_bytes a pair's, counting its share of a KV head shared by `share` query heads), at
// least one and at most every pair.
PARADEC_HOST_DEVICE inline int prefill_group(int64_t budget, int64_t kv_bytes, int share, int pairs) {
    const int64_t per_pair = kv_bytes / (share > 0 ? share : 1);
    int64_t g = per_pair > 0 ? budget / per_pair : pairs;
    if (g < 1) g = 1;
    return static_cast<int>(g < pairs ? g : pairs);
}

// Whether the warpgroup prefill's 32-bit positions (WgRows) hold a call: every cache slot and
// key below 2^30. Calls past it take the mma.sync kernel.
inline bool prefill_positions_fit(int64_t capacity, int64_t max_past, int64_t q_len) {
    constexpr int64_t kLimit = int64_t{1} << 30;
    return capacity < kLimit && max_past >= 0 && max_past + q_len < kLimit;
}

// Whether the warp-specialized prefill runs one persistent block per SM rather than a block
// per item. Persistence overlaps an item's prologue and epilogue with the next item's copies,
// which pays on short items and cost 10–40% on long ones (H100, the prefill bench: d = 64 gains
// to 4,096 keys, d = 128 to 1,024, d = 256 nowhere; docs/gpu-bench-attention-h200.md).
// `keys`: the most keys a sequence of the call attends to (past plus queries).
inline bool prefill_persists(int head_dim, int64_t keys) {
    const int64_t most = head_dim <= 64 ? 4096 : head_dim <= 128 ? 1024 : 0;
    return keys <= most;
}

}  // namespace paradec
