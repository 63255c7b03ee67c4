// Where the heads of a fused q/k/v projection lie in one token's features, for each
// paradec_qkv_layout: plain C++ usable on the device (split_rope_cache_kernel, csrc/rope.cu) and
// checked on the host against the mapping split_qkv_kernel (csrc/attention.cu) applies
// (csrc/host_checks/qkv_layout.cpp).
#pragma once

#include "host_device.h"
#include "kernels/attention.h"

namespace paradec {

// The first feature of head h of part 0 (q), 1 (k) or 2 (v) in one token's fused features,
// heads query heads over kv_heads KV heads of d features: per head [q_h | k_h | v_h] (heads ==
// kv_heads), queries first [q heads | k heads | v heads], or per KV group [the group's q heads |
// k | v].
PARADEC_HOST_DEVICE inline int fused_head_offset(int layout, int part, int h, int heads,
                                                 int kv_heads, int d) {
    if (layout == PARADEC_QKV_PER_HEAD) return (3 * h + part) * d;
    if (layout == PARADEC_QKV_QUERIES_FIRST)
        return part == 0 ? h * d : part == 1 ? (heads + h) * d : (heads + kv_heads + h) * d;
    const int per = heads / kv_heads, gw = (per + 2) * d;  // PARADEC_QKV_GROUPED
    return part == 0 ? (h / per) * gw + (h % per) * d : h * gw + (per + part - 1) * d;
}

}  // namespace paradec
