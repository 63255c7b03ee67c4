// How decode attention cuts the KV length, over quantized caches (plan_qdecode) and native ones
// (plan_decode): plain C++ (no CUDA), so that the rules are checked on the host
// (csrc/host_checks/decode_splits.cpp) as well as used by the planners.
#pragma once

#include <algorithm>
#include <cstdint>

namespace paradec {

// split_count: the splits for a longest sequence of c·128 keys, min(by_units, ⌊c / keys128⌋,
// most), at least one — by_units from the SM count, keys128 the fewest 128-key chunks a split
// takes. fill_split_table fills table[c] (c = 1 … n) with split_count − 1. Every count never
// falls as c grows: a graph captured for c replays shorter sequences with the table's counts
// inside its grid.
inline int64_t split_count(int64_t by_units, int64_t keys128, int64_t most, int64_t c) {
    return std::max<int64_t>(1, std::min(std::min(by_units, c / keys128), most));
}

inline void fill_split_table(int64_t by_units, int64_t keys128, int64_t most, int n,
                             unsigned char *table) {
    for (int64_t c = 1; c <= n; ++c)
        table[c] = static_cast<unsigned char>(split_count(by_units, keys128, most, c) - 1);
}

// The rules, by kernel family.
//  - TensorCore — the fragment kernel (every cache mode, head dims 64 and 128; 8 warps a block)
//    and the native cache's 16-row kernel: min(⌊SMs / units⌋, c) — about one block per SM, at
//    least 128 keys per split. H100 sweeps (2026-12-06; docs/gpu-bench-attention-h200.md): every
//    best count at L = 32768 came from fewer, longer blocks — fp16 batch 1 with 8 KV heads 51.7 µs
//    at 16 splits (8-warp fragment kernel), FP8 31.8 and Q4 38.1 at 16 against 48.3 and 75.2
//    at 66; each block's warps stream their own keys, and more blocks only add partials and
//    per-block setup.
//  - NativeCudaCore — the native cache's CUDA-core kernel (head dims other than 64 and 128, one
//    or two query rows per KV head): about two blocks per SM, ⌊2·SMs / units⌋, where the units
//    alone fill less than that; where they fill more, ⌈8·SMs / units⌉ — several waves, so that
//    the last one is not a lone part-wave (a ragged 1.3 waves of long blocks cost 15–25%) — of
//    at least 256 keys up to head dim 128 and 128 keys beyond (the same bytes a split or more).
//    H100 sweeps (2026-12-06, MHA over 16 KV heads of 256 and 64 of 64; the table in
//    docs/gpu-bench-attention-h200.md): batch 1 at L = 1024 12.0 µs at 8 splits against 16.3 at
//    4; batch 32 (512 units) 188 µs at 4 splits against 224 at 1, 5.6 against 6.6 ms at 32k.
//  - QuantCudaCore — the quantized caches' CUDA-core and decoded-tile kernels:
//    min(⌈8·SMs / units⌉, c) — about eight blocks per SM, at least 128 keys.
// `units` counts the blocks of (sequence, KV head, row chunk), `most` caps the count.
enum class SplitRule { TensorCore, NativeCudaCore, QuantCudaCore };

// The TensorCore rule's count for `units` blocks and a longest sequence of c·128 keys.
inline int64_t tensor_core_splits(int64_t units, int64_t sms, int64_t most, int64_t c) {
    return split_count(sms / units, 1, most, c);
}

// `head_dim` matters to NativeCudaCore only.
inline void split_table(SplitRule rule, int64_t units, int64_t sms, int64_t most, int64_t head_dim,
                        int n, unsigned char *table) {
    switch (rule) {
        case SplitRule::TensorCore:
            for (int64_t c = 1; c <= n; ++c)
                table[c] = static_cast<unsigned char>(tensor_core_splits(units, sms, most, c) - 1);
            break;
        case SplitRule::NativeCudaCore:
            fill_split_table(units <= 2 * sms ? 2 * sms / units : (8 * sms + units - 1) / units,
                             head_dim > 128 ? 1 : 2, most, n, table);
            break;
        case SplitRule::QuantCudaCore:
            fill_split_table((8 * sms + units - 1) / units, 1, most, n, table);
            break;
    }
}

// Query rows a block of the native cache's fragment decode kernel takes (8 or 16), from the
// query rows of a KV head (q_len · heads / kv_heads), the (sequence, KV head) pairs, the SM
// count and the cache's capacity (slots a sequence may hold). 16 where a KV head has more than 8
// rows and either
//  - the 16-row blocks still number at least one per SM (each stage's keys then feed two n8
//    tiles of rows, read once per 16 rows instead of 8), or
//  - an 8-row block's split of the whole capacity would hold at least kFragLongSplit keys: long
//    passes over the keys pay for the 16-row blocks' twice as many splits (H100, 64 query heads
//    over one KV head, batch 8: 32k keys 100.3 → 70.5 µs, 8k 29.6 → 23.5; Falcon-7B's step at
//    batch 8 and 8k keys 141.8 → 118.4), where short ones do not (batch 1, 8k keys: 512 keys a
//    split, 10.2 → 13.5).
// else 8, whose twice as many blocks spread a smaller batch wider. The capacity, not the longest
// sequence: the choice changes the splits and so the rounding, and a decode graph planned for
// its bound must replay its eager steps' bits. `forced` (8 or 16; 0: the rule) fixes it, 16
// only where a KV head has more than 8 rows.
constexpr int64_t kFragLongSplit = 4096;
inline int frag_rows_for(int64_t rows_per_kv_head, int64_t seq_kv_pairs, int64_t sms,
                         int64_t capacity, int forced) {
    if (rows_per_kv_head <= 8 || forced == 8) return 8;
    if (forced == 16) return 16;
    const int64_t blocks16 = seq_kv_pairs * ((rows_per_kv_head + 15) / 16);
    if (blocks16 >= sms) return 16;
    // The TensorCore rule's split count for 8-row blocks at the capacity (chunks of 128 keys).
    const int64_t units8 = seq_kv_pairs * ((rows_per_kv_head + 7) / 8);
    const int64_t splits8 = tensor_core_splits(units8, sms, sms, (capacity + 127) / 128);
    return capacity / splits8 >= kFragLongSplit ? 16 : 8;
}

}  // namespace paradec
