// Host check of csrc/decode_splits.h (run by scripts/ci-cuda-check.sh): over unit counts, SM
// counts and caps, every table entry is at least one split and at most the cap, never falls as
// the length grows, and keeps its rule's bounds — TensorCore at most ⌊SMs / units⌋ splits (or
// one) of at least 128 keys, NativeCudaCore at most ⌊2·SMs / units⌋ (⌈8·SMs / units⌉ where
// the units exceed 2·SMs) of at least 256 keys up to head dim 128 and 128 beyond,
// QuantCudaCore at most ⌈8·SMs / units⌉ of at least 128 — and reaches them where neither the
// other bound nor the cap is lower. Also the swept H100 cases (132 SMs) take the counts the
// sweeps found best. And the fragment kernel's rows a block (frag_rows_for).
#include "check.h"
#include "decode_splits.h"

namespace {

using paradec::SplitRule;

// The split count at `keys` keys.
int splits_at(SplitRule rule, int64_t units, int64_t sms, int64_t most, int64_t keys,
              int64_t head_dim = 128) {
    unsigned char t[257] = {};
    paradec::split_table(rule, units, sms, most, head_dim, 256, t);
    const int64_t c = std::min<int64_t>(256, std::max<int64_t>(1, (keys + 127) / 128));
    return t[c] + 1;
}

// One rule's table against its bounds (blocks per SM, the fewest 128-key chunks a split takes)
// over unit counts, SM counts and caps.
void check_rule(SplitRule rule, int64_t head_dim) {
    const int r = static_cast<int>(rule);
    for (int64_t units : {1, 2, 7, 8, 32, 64, 100, 256, 264, 265, 512, 1024, 65535})
        for (int64_t sms : {1, 66, 132, 144})
            for (int64_t most : {1, 3, 256}) {
                unsigned char t[257] = {};
                paradec::split_table(rule, units, sms, most, head_dim, 256, t);
                const int64_t native = units <= 2 * sms ? std::max<int64_t>(1, 2 * sms / units)
                                                        : (8 * sms + units - 1) / units;
                const int64_t by_units = rule == SplitRule::TensorCore
                                             ? std::max<int64_t>(1, sms / units)
                                         : rule == SplitRule::NativeCudaCore
                                             ? native
                                             : (8 * sms + units - 1) / units;
                const int keys128 = rule == SplitRule::NativeCudaCore && head_dim <= 128 ? 2 : 1;
                for (int c = 1; c <= 256; ++c) {
                    const int64_t n = t[c] + 1;
                    const int64_t by_len = std::max(1, c / keys128);
                    const int64_t want = std::min(std::min(by_units, by_len), most);
                    CHECK(n == std::max<int64_t>(1, want),
                          "rule %d units %lld sms %lld most %lld c %d: %lld splits, want %lld", r,
                          static_cast<long long>(units), static_cast<long long>(sms),
                          static_cast<long long>(most), c, static_cast<long long>(n),
                          static_cast<long long>(want));
                    CHECK(c == 1 || t[c] >= t[c - 1], "rule %d units %lld: falls at c %d", r,
                          static_cast<long long>(units), c);
                }
            }
}

}  // namespace

int main() {
    for (const SplitRule rule :
         {SplitRule::TensorCore, SplitRule::NativeCudaCore, SplitRule::QuantCudaCore})
        for (const int64_t head_dim : {64, 80, 128, 256})
            check_rule(rule, head_dim);
    // The sweeps' best counts (H100, 132 SMs; units = batch × KV heads, one row chunk). The
    // fragment kernel, every cache mode:
    CHECK(splits_at(SplitRule::TensorCore, 8, 132, 256, 32768) == 16, "b1 kv8 L32768");
    CHECK(splits_at(SplitRule::TensorCore, 64, 132, 256, 32768) == 2, "b8 kv8 L32768");
    CHECK(splits_at(SplitRule::TensorCore, 256, 132, 256, 32768) == 1, "b8 kv32 L32768");
    CHECK(splits_at(SplitRule::TensorCore, 8, 132, 256, 1024) == 8, "b1 kv8 L1024");
    CHECK(splits_at(SplitRule::TensorCore, 64, 132, 256, 1024) == 2, "b8 kv8 L1024");
    // The native cache's CUDA-core kernel (head dims other than 64 and 128, one or two rows;
    // the first three at head dim 128, as swept before the fragment kernel took it):
    CHECK(splits_at(SplitRule::NativeCudaCore, 32, 132, 256, 32768) == 8, "simt b1 kv32 L32768");
    CHECK(splits_at(SplitRule::NativeCudaCore, 32, 132, 256, 1024) == 4, "simt b1 kv32 L1024");
    CHECK(splits_at(SplitRule::NativeCudaCore, 256, 132, 256, 1024) == 1, "simt b8 kv32 L1024");
    // 16 KV heads of 256 (GPT-J): batch 1 at 1024 + 1 keys 9 (8 and more won), batch 8 2,
    // batch 32 3 (4 and more won; 1 lost by 15–25%).
    CHECK(splits_at(SplitRule::NativeCudaCore, 16, 132, 256, 1025, 256) == 9, "simt b1 d256 L1025");
    CHECK(splits_at(SplitRule::NativeCudaCore, 16, 132, 256, 32768, 256) == 16,
          "simt b1 d256 L32768");
    CHECK(splits_at(SplitRule::NativeCudaCore, 128, 132, 256, 1024, 256) == 2, "simt b8 d256 L1024");
    CHECK(splits_at(SplitRule::NativeCudaCore, 512, 132, 256, 8192, 256) == 3,
          "simt b32 d256 L8192");
    // The fragment kernel's rows a block over the native cache (frag_rows_for), 132 SMs, a
    // capacity of 2,048 slots: Falcon-7B (71 rows over one KV head) at batch 1, 8 and 32 — 16
    // rows only at 32, where 160 blocks still fill the SMs; Command-R (8 rows) never; a forced
    // count; 9 rows.
    using paradec::frag_rows_for;
    CHECK(frag_rows_for(71, 1, 132, 2048, 0) == 8, "falcon b1");
    CHECK(frag_rows_for(71, 8, 132, 2048, 0) == 8, "falcon b8");
    CHECK(frag_rows_for(71, 26, 132, 2048, 0) == 8, "falcon b26: 130 blocks of 16");
    CHECK(frag_rows_for(71, 27, 132, 2048, 0) == 16, "falcon b27: 135 blocks of 16");
    CHECK(frag_rows_for(71, 32, 132, 2048, 0) == 16, "falcon b32");
    CHECK(frag_rows_for(8, 32 * 8, 132, 1 << 20, 0) == 8, "command-r b32: 8 rows a KV head");
    CHECK(frag_rows_for(1, 4096, 132, 2048, 16) == 8, "forced 16, one row a KV head");
    CHECK(frag_rows_for(9, 1, 132, 2048, 16) == 16, "forced 16");
    CHECK(frag_rows_for(71, 32, 132, 2048, 8) == 8, "forced 8");
    CHECK(frag_rows_for(71, 8, 132, 1 << 20, 8) == 8, "forced 8 over a long capacity");
    CHECK(frag_rows_for(9, 132, 132, 2048, 0) == 16, "9 rows, a block of 16 per SM");
    // Long capacities: 16 rows where an 8-row block's split of the capacity holds ≥ 4,096
    // keys (the H100 measurements the rule came from, docs/gpu-decoder.md).
    CHECK(frag_rows_for(64, 1, 132, 131072, 0) == 16, "mqa b1 131k: 8,192 keys a split");
    CHECK(frag_rows_for(64, 1, 132, 32768, 0) == 8, "mqa b1 32k: 2,048 keys a split");
    CHECK(frag_rows_for(64, 8, 132, 8192, 0) == 16, "mqa b8 8k: 4,096 keys a split");
    CHECK(frag_rows_for(64, 8, 132, 8191, 0) == 8, "mqa b8 8191: under 4,096 a split");
    CHECK(frag_rows_for(64, 8, 132, 1024, 0) == 8, "mqa b8 1k: 512 keys a split");
    CHECK(frag_rows_for(16, 2, 132, 32768, 0) == 8, "gqa 16 rows b1 32k: 993 keys a split");
    CHECK(frag_rows_for(16, 16, 132, 32768, 0) == 16, "gqa 16 rows b8 32k: 8,192 keys");
    CHECK(frag_rows_for(71, 8, 132, 8192, 0) == 16, "falcon b8 8k: one split of 8,192");
    CHECK(frag_rows_for(71, 1, 132, 32768, 0) == 8, "falcon b1 32k: 2,340 keys a split");
    CHECK(frag_rows_for(8, 1, 132, int64_t{1} << 40, 0) == 8, "8 rows never take 16");
    for (int64_t rows = 1; rows <= 200; ++rows)
        for (int64_t pairs : {1, 7, 64, 131, 132, 1000})
            for (int64_t capacity :
                 {int64_t{1}, int64_t{127}, int64_t{4096}, int64_t{100000}, int64_t{1} << 40})
                for (int forced : {0, 8, 16}) {
                    const int r = frag_rows_for(rows, pairs, 132, capacity, forced);
                    CHECK(r == 8 || r == 16, "rows %lld: %d", static_cast<long long>(rows), r);
                    CHECK(rows > 8 || r == 8, "rows %lld ≤ 8 took 16",
                          static_cast<long long>(rows));
                    // Never 8 at a capacity where a smaller one took 16 (the scratch query
                    // plans for the largest capacity's rows).
                    CHECK(r == 16 || forced == 8 ||
                              frag_rows_for(rows, pairs, 132, int64_t{1} << 40, 0) == 16 ||
                              rows <= 8,
                          "rows %lld pairs %lld: the largest capacity took 8",
                          static_cast<long long>(rows), static_cast<long long>(pairs));
                }
    return host_check::report("decode_splits");
}
