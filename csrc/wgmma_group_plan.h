// How one grid of the wgmma GEMM's small tiles (64 rows of x, or 32 up to 32 rows:
// wgmma_small_tok) — a grouped launch of several calls, or a sum of several terms into one
// output — splits each call's K: plain C++ (no CUDA), so that the rule is checked on the host
// (csrc/host_checks/wgmma_group_plan.cpp) as well as used by the launchers.
//
// Why a rule of its own: a call alone splits K to fill the SMs with its own tiles
// (wgmma_ksplit), but in one grid the calls share the SMs, and the grid lasts as long as its
// most loaded SM. Two 64-row blocks fit an SM, but they share its issue slots and tensor cores:
// measured on an H100, one block alone runs a K step of 64 rows in about 0.68 µs and two
// together each in about 1.5 µs — an SM gets through about the same steps a µs whatever number
// of blocks it holds. So a call whose blocks run many steps (an MLP's unsplit input projection,
// a down projection over a long K) and number a little more than the SMs leaves a few SMs with
// two long blocks while the others have long finished (Falcon-7B at 32 rows: 142 blocks of 71
// steps on 132 SMs). The plan simulates the grid an SM at a time — blocks in launch order, the
// calls with the longest blocks first (as launch_gemm_wgmma_group orders them), each block to
// the SM that frees first, an SM running its blocks' steps one after another — and moves one
// call's split at a time while that shortens the simulated grid by at least 3% and one K step.
// A plan of two slots an SM, each running at the speed of a block alone, split too eagerly
// (Command-R's gate projection: 3% slower; docs/gpu-decoder.md). The 32-row tile (three blocks
// an SM) runs the same plan: measured faster than the 64-row tile under it at 17–32 rows, but
// for Falcon-7B at 17 rows (1–2% slower).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>

#include "split_count.h"

namespace paradec {

// One call (or term) of the grid as the plan sees it.
struct GroupCallShape {
    int64_t steps;  // K steps of 64 rows
    int64_t tiles;  // its tiles (column blocks × row tiles): blocks per split
    int own;        // the split it takes alone
    int cap;        // the most splits it may take (at least 1)
};

// The plan's time unit is a quarter of one block's K step on an SM. A block also pays a fixed
// cost (its start, the pipeline's fill and its stores: about half a step), and the last block
// of a split tile adds its splits' partials (about a quarter step per split it reads).
constexpr int64_t kPlanStep = 4;
constexpr int64_t kPlanBlockFixed = 2;
constexpr int64_t kPlanSumPerSplit = 1;

// Splits a call of the grid may take at m (≥ 1) rows of x over `steps` K steps: at most 8
// (16 lost to the partials' round trips in the H100 sweeps), each at least 2 K steps, and
// m · splits ≤ 2048 (what the workspace plans for partials).
inline int group_split_cap(int64_t m, int64_t steps) {
    return static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>({steps / 2, 8, 2048 / std::max<int64_t>(m, 1)})));
}

// K steps a block of a call at `split` runs.
inline int64_t plan_steps_per_block(const GroupCallShape &c, int split) {
    return (c.steps + split - 1) / split;
}

// The simulated time of the grid with splits `ks` over `slots` (the SMs): every call's blocks
// in launch order (most steps a block first, ties in call order), each to the slot that frees
// first, plus the split sum of the tile that reads the most partials (in a sum every term's
// splits go to one tile's sum).
inline int64_t group_makespan(const GroupCallShape *c, const int *ks, int count, int64_t slots,
                              bool summed) {
    int order[16];
    const int n = std::min(count, 16);
    for (int i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order, order + n, [&](int x, int y) {
        return plan_steps_per_block(c[x], ks[x]) > plan_steps_per_block(c[y], ks[y]);
    });
    std::map<int64_t, int64_t> free;  // time a slot frees → slots freeing then
    free[0] = std::max<int64_t>(slots, 1);
    int64_t sum_reads = 0;
    for (int j = 0; j < n; ++j) {
        const GroupCallShape &a = c[order[j]];
        const int k = ks[order[j]];
        const int64_t len = kPlanStep * plan_steps_per_block(a, k) + kPlanBlockFixed;
        int64_t blocks = a.tiles * k;
        while (blocks > 0) {
            auto first = free.begin();
            const int64_t t = first->first, take = std::min(first->second, blocks);
            if (first->second > take)
                first->second -= take;
            else
                free.erase(first);
            free[t + len] += take;
            blocks -= take;
        }
        sum_reads = summed ? sum_reads + k : std::max<int64_t>(sum_reads, k);
    }
    return free.rbegin()->first + (sum_reads > 1 ? kPlanSumPerSplit * sum_reads : 0);
}

// Fills ks[i] with call i's split: from each call's own split (within its cap, none empty),
// the one change of one call's split that shortens the simulated grid most, again while a
// change gains at least 3% and one K step. The same shapes and slots give the same plan.
inline void plan_group_splits(const GroupCallShape *c, int count, int64_t slots, bool summed,
                              int *ks) {
    for (int i = 0; i < count; ++i) {
        const int cap = std::max(c[i].cap, 1);
        ks[i] = static_cast<int>(
            nonempty_splits(std::max<int64_t>(c[i].steps, 1), std::clamp(c[i].own, 1, cap)));
    }
    int64_t best = group_makespan(c, ks, count, slots, summed);
    for (int round = 0; round < 8 * count; ++round) {
        int at = -1, to = 0;
        int64_t t_best = best;
        for (int i = 0; i < count; ++i)
            for (int k = 1; k <= std::max(c[i].cap, 1); ++k) {
                if (nonempty_splits(std::max<int64_t>(c[i].steps, 1), k) != k || k == ks[i])
                    continue;  // a count that would leave a split empty, or the current one
                const int was = ks[i];
                ks[i] = k;
                const int64_t t = group_makespan(c, ks, count, slots, summed);
                ks[i] = was;
                if (t < t_best) {
                    t_best = t;
                    at = i;
                    to = k;
                }
            }
        if (at < 0 || t_best * 100 > best * 97 || best - t_best < kPlanStep) break;
        ks[at] = to;
        best = t_best;
    }
}

}  // namespace paradec
