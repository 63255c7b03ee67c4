// The splits a kernel really runs when it cuts a count into ⌈count / split⌉ per split: plain
// C++ (no CUDA), shared by the launchers (common.cuh) and the host-checked split rules.
#pragma once

#include <cstdint>

namespace paradec {

// The splits a kernel really runs when `items` (K tiles, K steps) are cut into ⌈items / split⌉
// per split: no split is left empty.
inline int64_t nonempty_splits(int64_t items, int64_t split) {
    const int64_t per = (items + split - 1) / split;
    return (items + per - 1) / per;
}

}  // namespace paradec
