// What the attention kernels share across their files: the argument block and the launch of the
// tensor-core (prefill) kernel, which lives in attention_prefill.cu.
#pragma once

#include <cmath>

#include "common.cuh"
#include "decode_splits.h"
#include "dependent_launch.cuh"
#include "mma.cuh"

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
};

// Most splits of a decode launch.
constexpr int kMaxSplits = 256;

// PARADEC_ATTN_SPLITS=N (1 … kMaxSplits, read once): a decode plan's table of split counts by
// length (entry c: a longest sequence of c·128 keys; the value is splits − 1) set to min(N, c)
// whatever the plan chose — a measurement knob for sweeping the split count.
inline void fix_splits(unsigned char (&splits_by_cap)[kMaxSplits + 1]) {
    static const int fixed = env_int("PARADEC_ATTN_SPLITS", 1, kMaxSplits);
    if (fixed == 0) return;
    for (int c = 1; c <= kMaxSplits; ++c)
        splits_by_cap[c] = static_cast<unsigned char>((c < fixed ? c : fixed) - 1);
}

constexpr float kLog2e = 1.4426950408889634f;

// The tensor-core kernel over any q_len (attention_prefill.cu).
int launch_prefill(int dtype, const AttnArgs &a, cudaStream_t stream);

// The warpgroup-MMA prefill kernels (attention_wgmma.cu): whether they take a call — head dims
// 64, 128 and 256 (256: the warp-specialized kernel only), a compute capability 9.0 device and
// a build with sm_90a code, unless PARADEC_ATTN_PREFILL=mma — and their launch
// (launch_prefill calls it where it serves).
bool prefill_wgmma_serves(const AttnArgs &a);
int launch_prefill_wgmma(int dtype, const AttnArgs &a, cudaStream_t stream);
// What launch_prefill_wgmma returns when it launched nothing and the mma.sync kernel should
// take the call (no tensor maps for the warp-specialized kernel at d = 256); not a PARADEC_K_*.
constexpr int kPrefillNotTaken = -1000;

// Decode on tensor cores: chunks of 16 query rows of one KV head per block, a.splits splits of
// split_len_of keys (attention_prefill.cu); partials as the decode kernel writes them.
int launch_decode_mma(int dtype, const AttnArgs &a, int chunks, cudaStream_t stream);
constexpr int kDecodeMmaRows = 16;

// The head dims the tensor-core decode kernels serve.
__host__ __device__ constexpr bool tc_head_dim(int64_t d) { return d == 64 || d == 128; }

// Which decode kernel serves the tensor-core head dims: the fragment kernel (the default), or,
// with PARADEC_KV_DECODE=tile / =simt (read once; tests and comparisons), the decoded-tile
// kernel (at least two query rows per KV head) / the CUDA-core one.
enum class DecodeChoice { Frag, Tile, Simt };
inline DecodeChoice decode_choice() {
    static const DecodeChoice c = env_is("PARADEC_KV_DECODE", "tile")   ? DecodeChoice::Tile
                                  : env_is("PARADEC_KV_DECODE", "simt") ? DecodeChoice::Simt
                                                                        : DecodeChoice::Frag;
    return c;
}

// Native-cache decode at head dims 64 and 128 takes the fragment kernel for every count of
// query rows per KV head, MHA's one included, though its tile of 8 rows then carries one: the
// kernel is bound by the cache's bytes, not its tensor cores. H100, same run, graph µs, MHA,
// CUDA-core / fragment kernel — 32 KV heads of 128: batch 1, L 1024 11.2 / 10.8, L 32768
// 186.0 / 184.6; batch 8, L 32768 1434 / 1397. 64 KV heads of 64 (each kernel with its own
// split rule): batch 1, L 1024 11.47 / 10.91, L 32768 197.0 / 187.4; batch 8, L 1024
// 59.4 / 49.9, L 8192 473.7 / 361.6, L 32768 1906 / 1455; batch 32 within 3%.

// Decode over the contiguous native cache (a.k, a.v) on the fragment kernel
// (attention_quant.cu): `rows` (kFragRows or 2·kFragRows, the plan's native_frag_rows) query
// rows of one KV head per block, a.splits splits; partials as the other decode kernels write
// them. Head dims 64 and 128.
int launch_native_frag(int dtype, const AttnArgs &a, int rows, cudaStream_t stream);
constexpr int kFragRows = 8;
// Query rows a block of the native cache's fragment kernel takes: decode_splits.h's
// frag_rows_for (16 where a KV head has more than 8 rows and the 16-row blocks still fill the
// SMs or an 8-row split of the capacity would be long, else kFragRows). H100, Falcon-7B's 71
// query heads over one KV head, 1k keys, batch 32: the decode kernel 30.2 → 26.0 µs.
// PARADEC_FRAG_ROWS=8 or =16 forces one (tests and comparisons; 16 only where rows > 8).
inline int native_frag_rows(int64_t rows_per_kv_head, int64_t seq_kv_pairs, int64_t sms,
                            int64_t capacity) {
    static_assert(kFragRows == 8, "frag_rows_for picks 8 or 16");
    static const int forced = env_int("PARADEC_FRAG_ROWS", 8, 16);
    return frag_rows_for(rows_per_kv_head, seq_kv_pairs, sms, capacity, forced);
}

// Merges a.splits split-KV partials (a.part_o, a.part_ml) into a.out, in split order
// (attention.cu; a.splits ≤ 256).
int launch_combine(int dtype, const AttnArgs &a, cudaStream_t stream);

// Merging softmax states (max m in base 2, sum l, output o) over the splits of a row, in split
// order: one step per split (w = 2^(m − M) for the row's maximum M over every split, 0 where M
// is −∞), then O·(1/tot). A split with no keys (m = −∞, l = o = 0) adds exact zeros, so that a
// launch with more splits than keys need (a graph planned for a longer bound) merges to the
// bits of the eager launch — one split included (merge_and_store finishes it the same way).
__device__ __forceinline__ void merge_split_step(float m, float l, float o, float M, float &tot,
                                                 float &O) {
    const float w = M == -INFINITY ? 0.f : exp2f(m - M);
    tot = fmaf(l, w, tot);
    O = fmaf(o, w, O);
}
__device__ __forceinline__ float merged_output(float O, float tot) {
    return O * (tot > 0.f ? 1.0f / tot : 0.f);
}

// Output row r of a decode block (one of its (query token, head) pairs from row0) as a row of
// the call's output: (sequence · q_len + token) · heads + head.
__device__ __forceinline__ int64_t decode_out_row(const AttnArgs &a, int row0, int r, int b,
                                                  int kvh) {
    const int group = a.heads / a.kv_heads;
    const int row = row0 + r;
    const int t = row / group, h = kvh * group + row % group;
    return (static_cast<int64_t>(b) * a.q_len + t) * a.heads + h;
}

// A decode block's merge of its `parts` partial softmax states for row r, dimension dd — row r
// of part p has max sm_m[p·stride_rows + r] (base 2), sum sm_l[…] and output
// sm_o[(p·stride_rows + r)·o_stride + dd] — in part order: the block's (M, S, O).
__device__ __forceinline__ void merge_parts(const float *sm_m, const float *sm_l,
                                            const float *sm_o, int parts, int stride_rows,
                                            int o_stride, int r, int dd, float &M, float &S,
                                            float &O) {
    M = -INFINITY;
    for (int p = 0; p < parts; ++p) M = fmaxf(M, sm_m[p * stride_rows + r]);
    S = 0.f;
    O = 0.f;
    if (M != -INFINITY) {
        for (int p = 0; p < parts; ++p) {
            const float w = exp2f(sm_m[p * stride_rows + r] - M);
            S += sm_l[p * stride_rows + r] * w;
            O += sm_o[(p * stride_rows + r) * o_stride + dd] * w;
        }
    }
}

// The end of a decode block: merges the `parts` partial softmax states of each of its `nrows`
// query rows (merge_parts), then writes the row's output (one split) or its split partial
// (several).
template <typename T>
__device__ __forceinline__ void merge_and_store(const AttnArgs &a, const float *sm_m,
                                                const float *sm_l, const float *sm_o, int parts,
                                                int stride_rows, int o_stride, int nrows,
                                                int row0, int b, int kvh, int split) {
    // The keys are read: the next kernel (the output projection, where it is launched as a
    // dependent) may be scheduled now.
    allow_dependents();
    const int D = a.head_dim;
    const int64_t rows_all = static_cast<int64_t>(a.batch) * a.q_len * a.heads;
    for (int idx = threadIdx.x; idx < nrows * D; idx += blockDim.x) {
        const int r = idx / D, dd = idx % D;
        const int64_t grow = decode_out_row(a, row0, r, b, kvh);
        float M, S, O;
        merge_parts(sm_m, sm_l, sm_o, parts, stride_rows, o_stride, r, dd, M, S, O);
        if (a.splits == 1) {
            // As the split merge finishes a row: one split or many, the same rounding.
            static_cast<T *>(a.out)[grow * D + dd] = Num<T>::from_f(merged_output(O, S));
        } else {
            const int64_t pr = static_cast<int64_t>(split) * rows_all + grow;
            a.part_o[pr * D + dd] = O;
            if (dd == 0) {
                a.part_ml[2 * pr] = M;
                a.part_ml[2 * pr + 1] = S;
            }
        }
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

// The online softmax's step for one row: m ← max(m, mx). Returns the offset this step's
// exponentials subtract (0 while the row has seen only −∞) and sets `al`, the factor that
// rescales what was summed before.
__device__ __forceinline__ float softmax_rescale(float &m, float mx, float &al) {
    const float mn = fmaxf(m, mx);
    const float mu = mn == -INFINITY ? 0.f : mn;
    al = exp2f(m - mu);
    m = mn;
    return mu;
}

// Where a prefill block works: query tokens t0 … t_end − 1 of sequence b for query head h (KV
// head kvh, head dim D, `bm` tokens a block); every key its rows see lies in [lo, hi]; K and V
// of that head start at kbase, vbase (rows of kv_dim).
template <typename T>
struct PrefillBlock {
    int64_t t0, past, t_end, hi, lo, kv_dim;
    const T *kbase, *vbase;
    __device__ __forceinline__ PrefillBlock(const AttnArgs &a, int D, int bm, int mblk, int h, int b) {
        const int kvh = h / (a.heads / a.kv_heads);
        t0 = static_cast<int64_t>(mblk) * bm;
        past = clamped_past(a, b);
        t_end = min(t0 + bm, static_cast<int64_t>(a.q_len));
        hi = past + t_end - 1;
        lo = a.window > 0 ? max(int64_t{0}, past + t0 + 1 - a.window) : 0;
        kv_dim = static_cast<int64_t>(a.kv_heads) * D;
        const int64_t head = static_cast<int64_t>(b) * a.capacity * kv_dim + kvh * D;
        kbase = static_cast<const T *>(a.k) + head;
        vbase = static_cast<const T *>(a.v) + head;
    }
};

// Queues (cp.async) the block's `rows` query rows of `ch` 16-byte chunks; chunk c of row r goes
// to dst(r, c). Rows past q_len are zero-filled. Threads tid, tid + nthreads, … share the copies.
template <typename T, typename Dst>
__device__ __forceinline__ void stage_query_tile(const AttnArgs &a, int64_t t0, int b, int h,
                                                 int D, int rows, int ch, Dst dst, int tid,
                                                 int nthreads) {
    const T *qb = static_cast<const T *>(a.q);
    for (int i = tid; i < rows * ch; i += nthreads) {
        const int r = i / ch, c = i % ch;
        const int64_t t = t0 + r;
        const bool ok = t < a.q_len;
        const T *src =
            ok ? qb + ((static_cast<int64_t>(b) * a.q_len + t) * a.heads + h) * D + c * kVec : qb;
        cp_async16_zfill(dst(r, c), src, ok);
    }
}

}  // namespace paradec
