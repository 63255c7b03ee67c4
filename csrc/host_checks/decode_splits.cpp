// Host check of csrc/decode_splits.h (run by scripts/ci-cuda-check.sh): over unit counts, SM
// counts and caps, every table entry is at least one split and at most the cap, never falls as
// the length grows, and keeps its family's bounds — quantized caches: the fragment kernel at
// most ⌊2·SMs / units⌋ splits (or one) of at least 256 keys, the others at most ⌈8·SMs / units⌉
// of at least 128; native caches: the tensor-core kernel at most ⌊SMs / units⌋ of at least 128
// keys, the CUDA-core one at most ⌊2·SMs / units⌋ of at least 256 — and reaches them where
// neither the other bound nor the cap is lower. Also the swept H100 cases (132 SMs) take the
// counts the sweep found best.
#include "check.h"
#include "decode_splits.h"

namespace {

// The table of the quantized rule (native = false) or the native one; fast: the fragment
// kernel, or the native tensor-core one.
void table_of(bool native, int64_t units, int64_t sms, bool fast, int64_t most, unsigned char *t) {
    if (native)
        paradec::native_split_table(units, sms, fast, most, 256, t);
    else
        paradec::quant_split_table(units, sms, fast, most, 256, t);
}

// The split count at `keys` keys.
int splits_at(bool native, int64_t units, int64_t sms, bool fast, int64_t most, int64_t keys) {
    unsigned char t[257] = {};
    table_of(native, units, sms, fast, most, t);
    const int64_t c = std::min<int64_t>(256, std::max<int64_t>(1, (keys + 127) / 128));
    return t[c] + 1;
}

// One rule's table against its bounds (blocks per SM, the fewest 128-key chunks a split takes)
// over unit counts, SM counts and caps.
void check_rule(bool native, bool fast) {
    for (int64_t units : {1, 2, 7, 8, 32, 64, 100, 256, 1024, 65535})
        for (int64_t sms : {1, 66, 132, 144})
            for (int64_t most : {1, 3, 256}) {
                unsigned char t[257] = {};
                table_of(native, units, sms, fast, most, t);
                const int64_t by_units =
                    native ? std::max<int64_t>(1, (fast ? 1 : 2) * sms / units)
                    : fast ? std::max<int64_t>(1, 2 * sms / units)
                           : (8 * sms + units - 1) / units;
                const int keys128 = native ? (fast ? 1 : 2) : (fast ? 2 : 1);
                for (int c = 1; c <= 256; ++c) {
                    const int64_t n = t[c] + 1;
                    const int64_t by_len = std::max(1, c / keys128);
                    const int64_t want = std::min(std::min(by_units, by_len), most);
                    CHECK(n == std::max<int64_t>(1, want),
                          "native %d fast %d units %lld sms %lld most %lld c %d: %lld splits, want %lld",
                          native, fast, static_cast<long long>(units), static_cast<long long>(sms),
                          static_cast<long long>(most), c, static_cast<long long>(n),
                          static_cast<long long>(want));
                    CHECK(c == 1 || t[c] >= t[c - 1], "native %d fast %d units %lld: falls at c %d",
                          native, fast, static_cast<long long>(units), c);
                }
            }
}

}  // namespace

int main() {
    for (const bool native : {false, true})
        for (const bool fast : {false, true}) check_rule(native, fast);
    // The sweep's best counts (H100, 132 SMs; units = batch × KV heads). Quantized caches, the
    // fragment kernel:
    CHECK(splits_at(false, 8, 132, true, 256, 32768) == 33, "q b1 kv8 L32768");
    CHECK(splits_at(false, 32, 132, true, 256, 32768) == 8, "q b1 kv32 L32768");
    CHECK(splits_at(false, 64, 132, true, 256, 32768) == 4, "q b8 kv8 L32768");
    CHECK(splits_at(false, 256, 132, true, 256, 32768) == 1, "q b8 kv32 L32768");
    CHECK(splits_at(false, 32, 132, true, 256, 1024) == 4, "q b1 kv32 L1024");
    CHECK(splits_at(false, 256, 132, true, 256, 1024) == 1, "q b8 kv32 L1024");
    // The fp16 cache: 8 KV heads (four rows each) on tensor cores, 32 on CUDA cores.
    CHECK(splits_at(true, 8, 132, true, 256, 32768) == 16, "f16 b1 kv8 L32768");
    CHECK(splits_at(true, 64, 132, true, 256, 32768) == 2, "f16 b8 kv8 L32768");
    CHECK(splits_at(true, 8, 132, true, 256, 1024) == 8, "f16 b1 kv8 L1024");
    CHECK(splits_at(true, 64, 132, true, 256, 1024) == 2, "f16 b8 kv8 L1024");
    CHECK(splits_at(true, 32, 132, false, 256, 32768) == 8, "f16 b1 kv32 L32768");
    CHECK(splits_at(true, 32, 132, false, 256, 1024) == 4, "f16 b1 kv32 L1024");
    CHECK(splits_at(true, 256, 132, false, 256, 1024) == 1, "f16 b8 kv32 L1024");
    return host_check::report("decode_splits");
}
