// Host check of csrc/prefill_plan.h (run by scripts/ci-cuda-check.sh; no GPU): over prefill
// shapes (past lengths, query lengths, windows, 128- and 64-key tiles), every score a lane of
// the warpgroup prefill tests — key j0 + 2·t4 + c of tile j0 for each compile-time offset c —
// is seen by the 32-bit bounds exactly where the per-key rule holds (j ≤ p, j ≤ hi, j ≥ lo and
// j > p − window); and the persistent blocks' items cover every (query tile, head, sequence)
// once, in groups of pairs, latest query tiles first inside each group.
#include <algorithm>
#include <vector>

#include "check.h"
#include "prefill_plan.h"

namespace {

// The bounds against the per-key rule for one block of 128 query rows (rows t0 … t0 + 127 of a
// sequence of q_len tokens after `past` cached ones), every tile of keys it reaches.
void check_block(int64_t past, int64_t q_len, int64_t t0, int64_t window, int bn) {
    const int64_t t_end = std::min(t0 + 128, q_len), hi = past + t_end - 1;
    const int64_t lo = window > 0 ? std::max<int64_t>(0, past + t0 + 1 - window) : 0;
    for (int64_t n = lo / bn; n <= hi / bn; ++n) {
        const int j0 = static_cast<int>(n * bn);
        for (int row = 0; row < 128; ++row) {
            const int64_t p = past + t0 + row;
            for (int t4 = 0; t4 < 4; ++t4) {
                const paradec::PrefillRowKeys r = paradec::prefill_row_keys(p, hi, lo, window, t4);
                const int top = paradec::prefill_tile_offset(static_cast<int>(r.last), j0, bn);
                const int bottom = paradec::prefill_tile_offset(static_cast<int>(r.first), j0, bn);
                for (int i = 0; i < bn / 2; ++i) {
                    const int c = (i / 4) * 8 + (i & 1);
                    const int64_t j = j0 + 2 * t4 + c;
                    bool rule = j <= p && j <= hi && j >= lo;
                    if (window > 0) rule = rule && j > p - window;
                    const bool bounds = c <= top && c >= bottom;
                    CHECK(rule == bounds,
                          "past %lld q_len %lld t0 %lld window %lld bn %d: row %d t4 %d key %lld: "
                          "rule %d, bounds %d",
                          static_cast<long long>(past), static_cast<long long>(q_len),
                          static_cast<long long>(t0), static_cast<long long>(window), bn, row, t4,
                          static_cast<long long>(j), rule, bounds);
                }
            }
        }
    }
}

void check_items(int nblk, int heads, int batch, int group) {
    const int items = nblk * heads * batch;
    std::vector<int> seen(static_cast<size_t>(items), 0);
    int prev_mblk = nblk;
    for (int w = 0; w < items; ++w) {
        const paradec::PrefillItem it = paradec::prefill_item(w, nblk, heads, batch, group);
        if (w % (group * nblk) == 0) prev_mblk = nblk;  // a new group starts at the latest tiles
        const int pair = it.b * heads + it.h;
        CHECK(pair / group == w / (group * nblk),
              "nblk %d heads %d batch %d group %d: item %d outside its group", nblk, heads, batch,
              group, w);
        const bool inside = it.mblk >= 0 && it.mblk < nblk && it.h >= 0 && it.h < heads &&
                            it.b >= 0 && it.b < batch;
        CHECK(inside, "nblk %d heads %d batch %d group %d: item %d out of range", nblk, heads,
              batch, group, w);
        if (!inside) continue;
        ++seen[(static_cast<size_t>(it.b) * heads + it.h) * nblk + it.mblk];
        CHECK(it.mblk <= prev_mblk,
              "nblk %d heads %d batch %d group %d: item %d takes a later query tile", nblk, heads,
              batch, group, w);
        prev_mblk = it.mblk;
    }
    for (int i = 0; i < items; ++i)
        CHECK(seen[i] == 1,
              "nblk %d heads %d batch %d group %d: (tile, head, sequence) %d taken %d times", nblk,
              heads, batch, group, i, seen[i]);
}

}  // namespace

int main() {
    for (int bn : {128, 64})
        for (int64_t past : {0, 1, 5, 127, 128, 300})
            for (int64_t q_len : {1, 7, 128, 129, 300, 512})
                for (int64_t window : {0, 1, 3, 64, 100, 128, 129, 4096})
                    for (int64_t t0 = 0; t0 < q_len; t0 += 128) check_block(past, q_len, t0, window, bn);
    for (int nblk : {1, 2, 4, 16})
        for (int heads : {1, 8, 32, 71})
            for (int batch : {1, 3, 32})
                for (int group : {1, 2, 5, 8, 64, 1 << 20})
                    check_items(nblk, heads, batch, std::min(group, heads * batch));
    // The group's size: within the budget, at least one pair, at most all.
    CHECK(paradec::prefill_group(24 << 20, 4 << 20, 1, 64) == 6, "4 MiB pairs in 24 MiB");
    CHECK(paradec::prefill_group(24 << 20, 4 << 20, 4, 64) == 24, "a KV head shared by 4");
    CHECK(paradec::prefill_group(24 << 20, 64 << 20, 1, 64) == 1, "a pair past the budget");
    CHECK(paradec::prefill_group(24 << 20, 128 << 10, 1, 64) == 64, "every pair fits");
    // 32-bit positions: every slot and key below 2^30.
    CHECK(paradec::prefill_positions_fit((1 << 30) - 1, (1 << 30) - 2, 1), "keys to 2^30 - 1");
    CHECK(!paradec::prefill_positions_fit(1 << 30, 0, 1) &&
              !paradec::prefill_positions_fit((1 << 30) - 1, (1 << 30) - 1, 1),
          "a slot or a key at 2^30");
    // Persistence: short items only, the bounds as measured.
    CHECK(paradec::prefill_persists(64, 4096) && !paradec::prefill_persists(64, 4097), "d64 to 4096");
    CHECK(paradec::prefill_persists(128, 1024) && !paradec::prefill_persists(128, 1025), "d128 to 1024");
    CHECK(!paradec::prefill_persists(256, 1), "d256 never");
    return host_check::report("prefill_plan");
}
