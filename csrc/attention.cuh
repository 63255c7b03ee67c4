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

// A split decode's last split block merges the splits itself (merge_tail) where that is
// little work: 32 splits or fewer and at most 8192 partial values per block (the rows of one
// (sequence, KV head, row chunk) × head dim × splits: a few query rows per KV head at short
// contexts — about 1.5 µs of merging against a launch of a few µs — not a 16-row chunk of
// MQA or a long context). Larger merges spread over the combine kernel's blocks.
constexpr int kMergeTailSplits = 32;
constexpr int64_t kMergeTailValues = 8192;

// The kept counters a split decode of `splits` splits, `unit_rows` query rows per block and
// head dim `head_dim` merges with (AttnArgs::counters), or null: the combine kernel merges.
// Every (sequence, KV head, row chunk) of a grid needs one counter: `rows` (batch·q_len·heads)
// bounds them.
inline unsigned *merge_counters(const paradec_zeroed_counters *zeroed, size_t rows, int splits,
                                int64_t unit_rows, int64_t head_dim) {
    const bool small = splits <= kMergeTailSplits &&
                       unit_rows * head_dim * splits <= kMergeTailValues;
    return small && zeroed ? kept_counters(*zeroed, rows) : nullptr;
}

// The combine kernel's arithmetic (attention.cu), bit for bit, for the rows row0 … row0 + nrows
// of one decode block at kMergeTailSplits splits or fewer, with any block size: each row's max
// (exact in any order), the split weights, their weighted sum of l over one warp's xor tree
// (split s in lane s — the combine kernel's 256-thread sum reduces to that tree when every split
// sits in its first warp), then each feature's splits in SG = 256 / D interleaved groups (1 from
// D = 256 up), each summed in split order, the groups in order. `smem`: nrows · 33 floats. The
// partials are read past L1: other blocks wrote them.
template <typename T>
__device__ __forceinline__ void merge_tail(const AttnArgs &a, int64_t rows_all, int nrows,
                                           int row0, int b, int kvh, float *smem) {
    const int D = a.head_dim, S = a.splits, group = a.heads / a.kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float *w = smem;                                // [nrows][kMergeTailSplits]
    float *inv = smem + nrows * kMergeTailSplits;  // [nrows]
    auto grow_of = [&](int r) {
        const int row = row0 + r;
        const int t = row / group, h = kvh * group + row % group;
        return (static_cast<int64_t>(b) * a.q_len + t) * a.heads + h;
    };
    for (int r = warp; r < nrows; r += warps) {
        const int64_t pr = static_cast<int64_t>(lane) * rows_all + grow_of(r);
        const float m = lane < S ? __ldcg(a.part_ml + 2 * pr) : -INFINITY;
        float M = m;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        const float ws = lane < S && M != -INFINITY ? exp2f(m - M) : 0.f;
        w[r * kMergeTailSplits + lane] = ws;
        const float tot = warp_sum(lane < S ? __ldcg(a.part_ml + 2 * pr + 1) * ws : 0.f);
        if (lane == 0) inv[r] = tot > 0.f ? 1.0f / tot : 0.f;
    }
    __syncthreads();
    const int SG = D >= 256 ? 1 : 256 / D;
    for (int i = threadIdx.x; i < nrows * D; i += blockDim.x) {
        const int r = i / D, dd = i % D;
        const int64_t grow = grow_of(r);
        const float *wr = w + r * kMergeTailSplits;
        float t = 0.f;
        for (int g = 0; g < SG; ++g) {
            float O = 0.f;
            for (int s = g; s < S; s += SG)
                O += __ldcg(a.part_o + (s * rows_all + grow) * D + dd) * wr[s];
            t += O;
        }
        static_cast<T *>(a.out)[grow * D + dd] = Num<T>::from_f(t * inv[r]);
    }
}

// The end of a decode block: merges the `parts` partial softmax states of each of its `nrows`
// query rows — row r of part p has max sm_m[p·stride_rows + r] (base 2), sum sm_l[…] and
// output sm_o[(p·stride_rows + r)·o_stride + d] — in part order, then writes the row's output
// (one split) or its split partial (several). Rows are the block's (query token, head of the
// KV head's group) pairs from row0.
// With kept counters (AttnArgs::counters) the last split block merges the splits (merge_tail).
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
    // and zeroes the counter again for its next user. No combine kernel runs (merge_counters).
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
    // The block's merge area (read above; at least 512 floats in every decode kernel, and
    // nrows · 33 ≤ 528 floats only where nrows is 16: a tensor-core kernel's, of 1024 or more)
    // holds the split weights now.
    merge_tail<T>(a, rows_all, nrows, row0, b, kvh, const_cast<float *>(sm_o));
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
