// How decode attention cuts the KV length, over quantized caches (plan_qdecode) and native ones
// (plan_decode): plain C++ (no CUDA), so that the rules are checked on the host
// (csrc/host_checks/decode_splits.cpp) as well as used by the planners.
#pragma once

#include <algorithm>
#include <cstdint>

namespace paradec {

// Fills table[c] (c = 1 … n) with splits − 1 for a longest sequence of c·128 keys: min(by_units,
// ⌊c / keys128⌋, most) splits, at least one — by_units from the SM count, keys128 the fewest
// 128-key chunks a split takes. Every count never falls as c grows: a graph captured for c
// replays shorter sequences with the table's counts inside its grid.
inline void fill_split_table(int64_t by_units, int64_t keys128, int64_t most, int n,
                             unsigned char *table) {
    for (int64_t c = 1; c <= n; ++c)
        table[c] = static_cast<unsigned char>(
            std::max<int64_t>(1, std::min(std::min(by_units, c / keys128), most)) - 1);
}

// The quantized caches, for `units` blocks of (sequence, KV head, row chunk), `sms` SMs and at
// most `most` splits. The fragment kernel (frag): min(⌊2·SMs / units⌋, ⌊c / 2⌋) — about two
// blocks per SM, at least 256 keys per split. Swept on an H100 (2026-12-06, 1–128 splits, Q4 and
// FP8, batch 1 and 8, 8 and 32 KV heads, L 1024 and 32768; docs/gpu-bench-attention-h200.md):
// the best count gave 240–270 blocks at L = 32768 in every case (Q4 batch 1, 8 KV heads: 33.8 µs
// at 32 splits against 61.9 at 132; batch 8, 32 KV heads: 539 µs at 1 split against 700 at 5).
// Each block streams its own keys with latency-bound warps; more blocks only add partials and
// per-block setup. The CUDA-core and decoded-tile kernels: min(⌈8·SMs / units⌉, c) — about eight
// blocks per SM, at least 128 keys per split.
inline void quant_split_table(int64_t units, int64_t sms, bool frag, int64_t most, int n,
                              unsigned char *table) {
    const int64_t by_units = frag ? 2 * sms / units : (8 * sms + units - 1) / units;
    fill_split_table(by_units, frag ? 2 : 1, most, n, table);
}

// The native (fp16/bf16) cache. The tensor-core kernel (tc: three or more query rows per KV
// head): min(⌊SMs / units⌋, c) — about one block per SM, at least 128 keys per split. The
// CUDA-core kernel: min(⌊2·SMs / units⌋, ⌊c / 2⌋) — about two per SM, at least 256 keys. From the
// same H100 sweep (fp16 cache): batch 1 with 8 KV heads at L = 32768 took 54.4 µs at 16 splits
// against 59.8 at the wave-filling plan before (33), batch 8 with 32 KV heads at L = 1024 49.0 µs
// at 1 split against 54.5 at 4; every other swept case is within 2% of its best count.
inline void native_split_table(int64_t units, int64_t sms, bool tc, int64_t most, int n,
                               unsigned char *table) {
    fill_split_table((tc ? 1 : 2) * sms / units, tc ? 1 : 2, most, n, table);
}

}  // namespace paradec
