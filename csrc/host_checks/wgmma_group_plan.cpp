// Host check of csrc/wgmma_group_plan.h (run by scripts/ci-cuda-check.sh): the simulated grid of
// simple cases; over random groups, every planned split within its cap and none empty, the plan
// never slower than the calls' own splits in its own model, and the same plan twice; and the
// decode layers of the GPU bench at 32 rows on 132 SMs (an H100) as measured: Falcon-7B's long
// calls cut further (9% off its batch-32 step), GPT-J-6B's and Command-R's gate and up
// projections left at their own splits (splitting those measured slower), small groups too.
#include <random>

#include "check.h"
#include "wgmma_group_plan.h"

namespace {

using paradec::GroupCallShape;

constexpr int64_t kSlots = 132;

GroupCallShape call(int64_t steps, int64_t tiles, int own, int64_t m = 32) {
    return {steps, tiles, own, paradec::group_split_cap(m, steps)};
}

template <int N>
void plan(const GroupCallShape (&c)[N], bool summed, int (&ks)[N]) {
    paradec::plan_group_splits(c, N, kSlots, summed, ks);
}

template <int N>
int64_t own_time(const GroupCallShape (&c)[N], bool summed) {
    int ks[N];
    for (int i = 0; i < N; ++i) ks[i] = c[i].own;
    return paradec::group_makespan(c, ks, N, kSlots, summed);
}

void check_simple() {
    using paradec::kPlanBlockFixed;
    using paradec::kPlanStep;
    // One call within one wave: its block's length, plus the sum of its splits where split.
    GroupCallShape one[1] = {call(64, 10, 1)};
    int k1[1] = {1}, k2[1] = {2};
    CHECK(paradec::group_makespan(one, k1, 1, kSlots, false) == 64 * kPlanStep + kPlanBlockFixed,
          "one unsplit call: %lld", static_cast<long long>(paradec::group_makespan(one, k1, 1, kSlots, false)));
    CHECK(paradec::group_makespan(one, k2, 1, kSlots, false) ==
              32 * kPlanStep + kPlanBlockFixed + 2 * paradec::kPlanSumPerSplit,
          "one call split 2");
    // Two waves: 200 blocks on 132 slots take two block lengths.
    GroupCallShape wide[1] = {call(8, 200, 1)};
    CHECK(paradec::group_makespan(wide, k1, 1, kSlots, false) == 2 * (8 * kPlanStep + kPlanBlockFixed),
          "two waves");
    // A sum adds every term's splits to one tile's sum.
    GroupCallShape two[2] = {call(16, 1, 1), call(16, 1, 1)};
    int ks[2] = {2, 3};
    CHECK(paradec::group_makespan(two, ks, 2, kSlots, true) ==
              8 * kPlanStep + kPlanBlockFixed + 5 * paradec::kPlanSumPerSplit,
          "sum of 2 + 3 splits");
    // Caps: at most 8, 2 steps a split, m · split ≤ 2048.
    CHECK(paradec::group_split_cap(32, 64) == 8 && paradec::group_split_cap(32, 5) == 2 &&
              paradec::group_split_cap(32, 1) == 1 && paradec::group_split_cap(512, 64) == 4 &&
              paradec::group_split_cap(4096, 64) == 1,
          "caps");
}

void check_random() {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 3000; ++trial) {
        const int count = 1 + static_cast<int>(rng() % 8);
        const int64_t m = 1 + rng() % 64;
        const int64_t slots = 1 + rng() % 400;
        const bool summed = rng() % 2;
        GroupCallShape c[8];
        for (int i = 0; i < count; ++i) {
            const int64_t steps = 1 + rng() % 400;
            const int cap = paradec::group_split_cap(m, steps);
            c[i] = {steps, 1 + static_cast<int64_t>(rng() % 300), 1 + static_cast<int>(rng() % cap), cap};
        }
        int ks[8], again[8], own[8];
        paradec::plan_group_splits(c, count, slots, summed, ks);
        paradec::plan_group_splits(c, count, slots, summed, again);
        for (int i = 0; i < count; ++i) {
            CHECK(ks[i] >= 1 && ks[i] <= c[i].cap, "trial %d call %d: split %d outside 1..%d", trial,
                  i, ks[i], c[i].cap);
            CHECK(paradec::nonempty_splits(c[i].steps, ks[i]) == ks[i],
                  "trial %d call %d: split %d of %lld steps leaves one empty", trial, i, ks[i],
                  static_cast<long long>(c[i].steps));
            CHECK(ks[i] == again[i], "trial %d: two plans differ", trial);
            own[i] = static_cast<int>(paradec::nonempty_splits(c[i].steps, c[i].own));
        }
        CHECK(paradec::group_makespan(c, ks, count, slots, summed) <=
                  paradec::group_makespan(c, own, count, slots, summed),
              "trial %d: the plan is slower than the own splits in its own model", trial);
    }
}

// The GPU bench's decode layers at 32 rows (K steps of 64, column blocks of 128), each call's
// own split as wgmma_ksplit gives it on 132 SMs.
void check_layers() {
    {
        // GPT-J-6B: q, k, v 4096×4096 and fc_in 4096×16384 grouped; o_proj 4096×4096 and
        // fc_out 16384×4096 summed: both fill the SMs evenly at their own splits.
        const GroupCallShape g[4] = {call(64, 32, 4), call(64, 32, 4), call(64, 32, 4), call(64, 128, 3)};
        int kg[4];
        plan(g, false, kg);
        CHECK(paradec::group_makespan(g, kg, 4, kSlots, false) <= own_time(g, false), "GPT-J group");
        CHECK(kg[3] == 3, "GPT-J group: fc_in takes %d splits", kg[3]);
        const GroupCallShape s[2] = {call(64, 32, 4), call(256, 32, 4)};
        int ks[2];
        plan(s, true, ks);
        CHECK(ks[0] == 4 && ks[1] == 4, "GPT-J sum: %d and %d splits", ks[0], ks[1]);
    }
    {
        // Command-R: q 8192×8192, k and v 8192×1024, gate and up 8192×22528 grouped (352 long
        // blocks, 2.7 an SM: splitting gate or up measured 3% slower).
        const GroupCallShape c[5] = {call(128, 64, 4), call(128, 8, 4), call(128, 8, 4),
                                     call(128, 176, 1), call(128, 176, 1)};
        int ks[5];
        plan(c, false, ks);
        CHECK(ks[3] == 1 && ks[4] == 1, "Command-R group: gate and up take %d and %d splits", ks[3],
              ks[4]);
    }
    {
        // Falcon-7B: query_key_value 4544×4672 and dense_h_to_4h 4544×18176 grouped; dense
        // 4544×4544 and dense_4h_to_h 18176×4544 summed — 142 and 144 blocks of 71 steps on
        // 132 SMs at their own splits.
        const GroupCallShape g[2] = {call(71, 37, 4), call(71, 142, 1)};
        int kg[2];
        plan(g, false, kg);
        CHECK(kg[1] > 1, "Falcon group: dense_h_to_4h stays unsplit");
        CHECK(paradec::group_makespan(g, kg, 2, kSlots, false) * 100 <= own_time(g, false) * 80,
              "Falcon group: under 20%% gained");
        const GroupCallShape s[2] = {call(71, 36, 4), call(284, 36, 4)};
        int kss[2];
        plan(s, true, kss);
        CHECK(kss[1] > 4, "Falcon sum: dense_4h_to_h keeps %d splits", kss[1]);
        CHECK(paradec::group_makespan(s, kss, 2, kSlots, true) * 100 <= own_time(s, true) * 80,
              "Falcon sum: under 20%% gained");
    }
    {
        // Small groups of short calls (K 512 and 320, one or two column blocks) keep their own
        // splits: nothing to gain of a whole K step.
        const GroupCallShape c[5] = {call(8, 1, 4), call(8, 2, 4), call(8, 1, 4), call(5, 1, 2),
                                     call(5, 1, 2)};
        int ks[5];
        plan(c, false, ks);
        for (int i = 0; i < 5; ++i) CHECK(ks[i] == c[i].own, "small group: call %d split %d", i, ks[i]);
    }
}

}  // namespace

int main() {
    check_simple();
    check_random();
    check_layers();
    return host_check::report("wgmma_group_plan");
}
