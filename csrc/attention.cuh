// What the attention kernels share across their files: the argument block and the launch of the
// tensor-core (prefill) kernel, which lives in attention_prefill.cu.
#pragma once

#include "common.cuh"
#include "dependent_launch.cuh"

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
    // Splits − 1 that a launch planned for one sequence of c·128 keys takes, by c = 1…256
    // (plan_decode); entry 0 unused. See split_len_of.
    unsigned char splits_by_cap[257];
    // Split counters kept zero between calls (paradec_zeroed_counters), at least one per output
    // row: the last split block of each (sequence, KV head, row chunk) merges the splits itself.
    // Null: a combine kernel merges them.
    unsigned *counters;
};

// Most splits of a decode launch.
constexpr int kMaxSplits = 256;

constexpr float kLog2e = 1.4426950408889634f;

// The tensor-core kernel over any q_len (attention_prefill.cu).
int launch_prefill(int dtype, const AttnArgs &a, cudaStream_t stream);

// Decode on tensor cores: chunks of 16 query rows of one KV head per block, a.splits splits of
// split_len_of keys (attention_prefill.cu); partials as the decode kernel writes them.
int launch_decode_mma(int dtype, const AttnArgs &a, int chunks, cudaStream_t stream);
constexpr int kDecodeMmaRows = 16;

// Merges a.splits split-KV partials (a.part_o, a.part_ml) into a.out, in split order
// (attention.cu; a.splits ≤ 256).
int launch_combine(int dtype, const AttnArgs &a, cudaStream_t stream);

// The end of a decode block: merges the `parts` partial softmax states of each of its `nrows`
// query rows — row r of part p has max sm_m[p·stride_rows + r] (base 2), sum sm_l[…] and
// output sm_o[(p·stride_rows + r)·o_stride + d] — in part order, then writes the row's output
// (one split) or its split partial (several). Rows are the block's (query token, head of the
// KV head's group) pairs from row0.
// The kept counters a split decode merges with (AttnArgs::counters): one per output row at
// least — every (sequence, KV head, row chunk) of any decode kernel's grid has one — else none.
inline unsigned *merge_counters(const paradec_zeroed_counters *zeroed, size_t rows) {
    return zeroed && zeroed->counters && zeroed->count >= rows ? zeroed->counters : nullptr;
}

// Merges the a.splits split-KV partials of output row `grow` (rows in batch · q_len · heads
// order) into a.out with every thread of the calling block: the row's max over the splits, each
// split's weight into w[0 .. splits) (shared memory), then every feature sums its splits in
// split order — the same bits whichever kernel, and whatever block size, merges. The partials
// are read past L1: in the decode kernels other blocks wrote them.
template <typename T>
__device__ __forceinline__ void combine_row(const AttnArgs &a, int64_t rows_all, int64_t grow,
                                            float *w) {
    const int D = a.head_dim, S = a.splits;
    float M = -INFINITY;
    for (int s = 0; s < S; ++s) M = fmaxf(M, __ldcg(a.part_ml + 2 * (s * rows_all + grow)));
    for (int s = threadIdx.x; s < S; s += blockDim.x)
        w[s] = M == -INFINITY ? 0.f : exp2f(__ldcg(a.part_ml + 2 * (s * rows_all + grow)) - M);
    __syncthreads();
    float tot = 0.f;
    for (int s = 0; s < S; ++s) tot += __ldcg(a.part_ml + 2 * (s * rows_all + grow) + 1) * w[s];
    const float inv = tot > 0.f ? 1.0f / tot : 0.f;
    for (int dd = threadIdx.x; dd < D; dd += blockDim.x) {
        float O = 0.f;
#pragma unroll 4
        for (int s = 0; s < S; ++s) O += __ldcg(a.part_o + (s * rows_all + grow) * D + dd) * w[s];
        static_cast<T *>(a.out)[grow * D + dd] = Num<T>::from_f(O * inv);
    }
    __syncthreads();  // w is the next row's
}

template <typename T>
__device__ __forceinline__ void merge_and_store(const AttnArgs &a, const float *sm_m,
                                                const float *sm_l, const float *sm_o, int parts,
                                                int stride_rows, int o_stride, int nrows,
                                                int row0, int b, int kvh, int split) {
    // The keys are read: the next kernel (the output projection, where it is launched as a
    // dependent) may be scheduled now.
    allow_dependents();
    const int D = a.head_dim;
    const int group = a.heads / a.kv_heads;
    const int64_t rows_all = static_cast<int64_t>(a.batch) * a.q_len * a.heads;
    for (int idx = threadIdx.x; idx < nrows * D; idx += blockDim.x) {
        const int r = idx / D, dd = idx % D;
        const int row = row0 + r;
        const int t = row / group, h = kvh * group + row % group;
        const int64_t grow = (static_cast<int64_t>(b) * a.q_len + t) * a.heads + h;
        float M = -INFINITY;
        for (int p = 0; p < parts; ++p) M = fmaxf(M, sm_m[p * stride_rows + r]);
        float S = 0.f, O = 0.f;
        if (M != -INFINITY) {
            for (int p = 0; p < parts; ++p) {
                const float w = exp2f(sm_m[p * stride_rows + r] - M);
                S += sm_l[p * stride_rows + r] * w;
                O += sm_o[(p * stride_rows + r) * o_stride + dd] * w;
            }
        }
        if (a.splits == 1) {
            // O·(1/S), as the combine computes it: one split or many, the same rounding.
            static_cast<T *>(a.out)[grow * D + dd] = Num<T>::from_f(O * (S > 0.f ? 1.0f / S : 0.f));
        } else {
            const int64_t pr = static_cast<int64_t>(split) * rows_all + grow;
            a.part_o[pr * D + dd] = O;
            if (dd == 0) {
                a.part_ml[2 * pr] = M;
                a.part_ml[2 * pr + 1] = S;
            }
        }
    }
    if (a.splits == 1 || !a.counters) return;
    // The last split block of this (sequence, KV head, row chunk) to get here merges every
    // split's partials of its rows — the others' are visible after their fence and the counter —
    // and zeroes the counter again for its next user. No combine kernel runs.
    __shared__ int merge_here;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const int64_t unit = static_cast<int64_t>(blockIdx.y) * gridDim.z + blockIdx.z;
        const unsigned done = atomicAdd(a.counters + unit, 1u);
        merge_here = done == gridDim.x - 1;
        if (merge_here) a.counters[unit] = 0u;
    }
    __syncthreads();
    if (!merge_here) return;
    __threadfence();
    // The block's merge area (read above; at least 512 floats in every decode kernel, for 256
    // splits at most) holds the split weights now.
    float *w = const_cast<float *>(sm_o);
    for (int r = 0; r < nrows; ++r) {
        const int row = row0 + r;
        const int t = row / group, h = kvh * group + row % group;
        combine_row<T>(a, rows_all, (static_cast<int64_t>(b) * a.q_len + t) * a.heads + h, w);
    }
}

// Keys per split of a sequence of kv_len keys: the cut an eager launch planned for that length
// alone takes, whatever the launch's own split count (≥ it). A launch planned for a longer
// bound — a captured graph replayed at shorter lengths — therefore cuts every sequence exactly
// as an eager launch does (its extra splits find no keys and merge as exact zeros).
__device__ __forceinline__ int64_t split_len_of(const AttnArgs &a, int64_t kv_len) {
    int64_t c = (kv_len + 127) / 128;
    c = c < 1 ? 1 : (c > kMaxSplits ? kMaxSplits : c);
    const int64_t s = static_cast<int64_t>(a.splits_by_cap[c]) + 1;
    return (kv_len + s - 1) / s;
}

// The query position's past length, clamped so that no slot beyond the planned bound is read.
__device__ __forceinline__ int64_t clamped_past(const AttnArgs &a, int b) {
    int64_t p = a.past_len[b];
    return p < 0 ? 0 : (p > a.max_past ? a.max_past : p);
}

}  // namespace paradec
