// What the attention kernels share across their files: the argument block and the launch of the
// tensor-core (prefill) kernel, which lives in attention_prefill.cu.
#pragma once

#include "common.cuh"

namespace paradec {

// One attention call (see paradec_attention in kernels/attention.h).
struct AttnArgs {
    const void *q;  // [batch, q_len, heads, head_dim]
    const void *k;  // [batch, capacity, kv_heads, head_dim]
    const void *v;
    void *out;  // [batch, q_len, heads, head_dim]
    int batch;
    int q_len;
    int heads;
    int kv_heads;
    int head_dim;
    int64_t capacity;
    const int64_t *past_len;  // [batch], clamped to [0, max_past]
    int64_t max_past;
    int64_t window;     // 0: none
    const float *mask;  // [batch, mask_stride] or null
    int64_t mask_stride;
    float scale;
    // Split-KV (decode only): partial outputs [splits, batch·q_len·heads, head_dim] and their
    // (max, sum) [splits, batch·q_len·heads, 2], in f32.
    float *part_o;
    float *part_ml;
    int splits;
    int64_t split_len;
};

constexpr float kLog2e = 1.4426950408889634f;

// The tensor-core kernel over any q_len (attention_prefill.cu).
int launch_prefill(int dtype, const AttnArgs &a, cudaStream_t stream);

// Decode on tensor cores: chunks of 16 query rows of one KV head per block, a.splits splits of
// a.split_len keys (attention_prefill.cu); partials as the decode kernel writes them.
int launch_decode_mma(int dtype, const AttnArgs &a, int chunks, cudaStream_t stream);
constexpr int kDecodeMmaRows = 16;

// The query position's past length, clamped so that no slot beyond the planned bound is read.
__device__ __forceinline__ int64_t clamped_past(const AttnArgs &a, int b) {
    int64_t p = a.past_len[b];
    return p < 0 ? 0 : (p > a.max_past ? a.max_past : p);
}

}  // namespace paradec
