// The attention branch around the KV cache: QKV split, per-head norms, and attention — the
// split-KV decode kernel and its combine here, the tensor-core kernel in attention_prefill.cu.
// CUDA twins of ops::split_qkv, ops::head_norm and cpu::attention::attention.
//
// Decode (q_len ≤ 16), split over the KV length (flash-decoding): one block per (split,
// sequence, KV head, chunk of query rows). The query rows of a KV head — every query head of its
// GQA/MQA group, for every query token — sit in the same block, so each K/V element is read once
// per chunk. With one or two such rows the CUDA-core kernel here runs: a key's head_dim features
// spread over L lanes, one 16-byte vector each; each warp streams its chunks of keys through
// its own ring of shared-memory stages (cp.async, several chunks ahead). With more rows, head
// dims 64 and 128 run on attention_quant.cu's fragment kernel (8 rows per chunk, as over a
// quantized cache) and other head dims on the tensor-core decode kernel of attention_prefill.cu
// (16 rows per chunk). Each lane
// group or warp keeps an online softmax (max, sum, unnormalized output) in f32; the block
// merges them in shared memory in a fixed order, and with several splits writes f32 partials
// that a second kernel merges over the splits, again in a fixed order: the result does not
// depend on timing.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "attention.cuh"
#include "decode_splits.h"
#include "mma.cuh"

namespace paradec {
namespace {

// ---- QKV split -----------------------------------------------------------------------------------

template <typename T, int W>
__global__ void split_qkv_kernel(const T *__restrict__ fused, int64_t tokens, int heads,
                                 int kv_heads, int d, int layout, T *q, T *k, T *v) {
    const int64_t width = static_cast<int64_t>(heads + 2 * kv_heads) * d;
    const int64_t per_tok = width / W;
    const int64_t total = tokens * per_tok;
    const int per = heads / kv_heads;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t tok = i / per_tok;
        const int f = static_cast<int>((i % per_tok) * W);
        T *dst;
        int off;
        if (layout == PARADEC_QKV_PER_HEAD) {
            const int h = f / (3 * d), r = f % (3 * d), part = r / d;
            off = h * d + r % d;
            dst = part == 0 ? q + tok * heads * d : (part == 1 ? k : v) + tok * kv_heads * d;
        } else if (layout == PARADEC_QKV_QUERIES_FIRST) {
            if (f < heads * d) {
                off = f;
                dst = q + tok * heads * d;
            } else if (f < (heads + kv_heads) * d) {
                off = f - heads * d;
                dst = k + tok * kv_heads * d;
            } else {
                off = f - (heads + kv_heads) * d;
                dst = v + tok * kv_heads * d;
            }
        } else {
            const int gw = (per + 2) * d, g = f / gw, r = f % gw;
            if (r < per * d) {
                off = g * per * d + r;
                dst = q + tok * heads * d;
            } else if (r < (per + 1) * d) {
                off = g * d + r - per * d;
                dst = k + tok * kv_heads * d;
            } else {
                off = g * d + r - (per + 1) * d;
                dst = v + tok * kv_heads * d;
            }
        }
        const T *src = fused + tok * width + f;
        if (W == kVec)
            st(dst + off, ld_ro(src));
        else
            dst[off] = src[0];
    }
}

// ---- per-head norm ---------------------------------------------------------------------------------

// One warp per (token, head) row; the row stays in L1 between the passes.
template <typename T>
__global__ void __launch_bounds__(128)
    head_norm_kernel(T *x, int64_t rows, int heads, int d, bool layer_norm, const T *w,
                     bool w_per_head, const T *bias, bool b_per_head, float eps) {
    const int64_t row = blockIdx.x * 4 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    T *p = x + row * d;
    const int h = static_cast<int>(row % heads);
    float mean = 0.f;
    if (layer_norm) {
        float s = 0.f;
        for (int j = lane; j < d; j += 32) s += Num<T>::to_f(p[j]);
        mean = warp_sum(s) / d;
    }
    float s2 = 0.f;
    for (int j = lane; j < d; j += 32) {
        const float c = Num<T>::to_f(p[j]) - mean;
        s2 += c * c;
    }
    const float inv = 1.0f / sqrtf(warp_sum(s2) / d + eps);
    const T *wr = w ? w + (w_per_head ? h * d : 0) : nullptr;
    const T *br = bias ? bias + (b_per_head ? h * d : 0) : nullptr;
    for (int j = lane; j < d; j += 32) {
        float o = (Num<T>::to_f(p[j]) - mean) * inv;
        if (wr) o *= Num<T>::to_f(wr[j]);
        if (br) o += Num<T>::to_f(br[j]);
        p[j] = Num<T>::from_f(o);
    }
}

// ---- decode attention ------------------------------------------------------------------------------

constexpr int kDecodeWarps = 4;

constexpr int kStages = 4;      // per-warp cp.async ring depth
constexpr int kStageElems = 1024;  // K (and V) elements per stage: 2 KiB each

template <int L>
constexpr size_t decode_ring_bytes() {
    return sizeof(__half) * 2 * kStageElems * kStages * kDecodeWarps;
}

// Each warp streams its chunks of TK keys (K and V rows of its KV head) through its own ring
// of kStages shared-memory stages with cp.async, kStages − 1 chunks ahead of the one in use.
// A key's features are spread over L lanes of NV 16-byte vectors each (NV = 2 past head dim
// 128: fewer lanes per key, fewer shuffles per dot product).
template <typename T, int L, int R, int NV>
__global__ void __launch_bounds__(kDecodeWarps * 32) decode_kernel(AttnArgs a) {
    constexpr int KW = 32 / L;            // keys per warp step
    constexpr int G = kDecodeWarps * KW;  // lane groups per block
    constexpr int TK = kStageElems / (8 * L * NV);  // keys per chunk (a stage)
    constexpr int U = TK / KW;                      // warp steps per chunk
    extern __shared__ __align__(16) unsigned char dsm[];
    const int D = a.head_dim;
    const int CH = D / kVec;  // 16-byte chunks of a row
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane % L, kg = lane / L;
    const int group = a.heads / a.kv_heads;
    const int b = blockIdx.y / a.kv_heads, kvh = blockIdx.y % a.kv_heads;
    const int rows_total = a.q_len * group;
    const int row0 = blockIdx.z * R;
    const int nrows = min(R, rows_total - row0);
    const int split = blockIdx.x;
    const int64_t past = clamped_past(a, b);
    const int64_t kv_len = past + a.q_len;
    const int64_t kv_dim = static_cast<int64_t>(a.kv_heads) * D;

    // The keys any row of this block sees, within this split.
    const int t_first = row0 / group, t_last = (row0 + nrows - 1) / group;
    const int64_t split_len = split_len_of(a, kv_len);
    int64_t k_begin = static_cast<int64_t>(split) * split_len;
    int64_t k_end = min(k_begin + split_len, kv_len);
    k_end = min(k_end, past + t_last + 1);
    if (a.window > 0) k_begin = max(k_begin, past + t_first + 1 - a.window);
    const int64_t pos_min = past + t_first;
    const bool plain = a.mask == nullptr && a.window == 0;

    bool dim_ok[NV];
#pragma unroll
    for (int v = 0; v < NV; ++v) dim_ok[v] = (sub + v * L) * kVec < D;
    const float qscale = a.scale * kLog2e;
    float qr[R][NV][kVec];
    int64_t pos[R], lo[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int row = row0 + r;
        const int t = row / group, h = kvh * group + row % group;
        pos[r] = past + t;
        lo[r] = a.window > 0 ? past + t + 1 - a.window : 0;
#pragma unroll
        for (int v = 0; v < NV; ++v) {
            if (r < nrows && dim_ok[v]) {
                const T *qp = static_cast<const T *>(a.q) +
                              ((static_cast<int64_t>(b) * a.q_len + t) * a.heads + h) * D +
                              (sub + v * L) * kVec;
                unpack8<T>(ld_ro(qp), qr[r][v]);
#pragma unroll
                for (int e = 0; e < kVec; ++e) qr[r][v][e] *= qscale;
            } else {
#pragma unroll
                for (int e = 0; e < kVec; ++e) qr[r][v][e] = 0.f;
            }
        }
    }
    float m[R], l[R], o[R][NV][kVec];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int v = 0; v < NV; ++v)
#pragma unroll
            for (int e = 0; e < kVec; ++e) o[r][v][e] = 0.f;
    }
    const T *kb = static_cast<const T *>(a.k) + static_cast<int64_t>(b) * a.capacity * kv_dim +
                  kvh * D;
    const T *vb = static_cast<const T *>(a.v) + static_cast<int64_t>(b) * a.capacity * kv_dim +
                  kvh * D;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;
    T *ring = reinterpret_cast<T *>(dsm) + warp * (2 * kStageElems * kStages);

    const int64_t nkeys = k_end > k_begin ? k_end - k_begin : 0;
    // Chunk i of this warp: keys k_begin + (warp + kDecodeWarps·i)·TK …, into stage i % kStages.
    auto issue = [&](int i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kDecodeWarps * i) * TK;
        if (base < k_end) {
            T *ks = ring + (i % kStages) * 2 * kStageElems;
            T *vs = ks + kStageElems;
            for (int c = lane; c < TK * CH; c += 32) {
                const int r = c / CH, cc = c % CH;
                const int64_t j = base + r;
                const bool ok = j < k_end;
                const int64_t off = ok ? j * kv_dim + cc * kVec : 0;
                cp_async16_zfill(ks + r * D + cc * kVec, kb + off, ok);
                cp_async16_zfill(vs + r * D + cc * kVec, vb + off, ok);
            }
        }
        cp_async_commit_group();
    };
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) issue(i);

    for (int i = 0;; ++i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kDecodeWarps * i) * TK;
        if (base >= k_begin + nkeys) break;
        issue(i + kStages - 1);
        cp_async_wait_groups<kStages - 1>();
        __syncwarp();
        const T *ks = ring + (i % kStages) * 2 * kStageElems;
        const T *vs = ks + kStageElems;
        const bool full = plain && base + TK <= k_end && base + TK - 1 <= pos_min;
        float s[R][U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kr = u * KW + kg;
            const int64_t j = base + kr;
            float kf[NV][kVec];
#pragma unroll
            for (int v = 0; v < NV; ++v)
                unpack8<T>(dim_ok[v] ? ld(ks + kr * D + (sub + v * L) * kVec) : make_uint4(0, 0, 0, 0),
                           kf[v]);
            const float madd = (mrow && j < k_end) ? mrow[j] * kLog2e : 0.f;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float dot = 0.f;
#pragma unroll
                for (int v = 0; v < NV; ++v)
#pragma unroll
                    for (int e = 0; e < kVec; ++e) dot = fmaf(qr[r][v][e], kf[v][e], dot);
#pragma unroll
                for (int off = L / 2; off > 0; off >>= 1)
                    dot += __shfl_xor_sync(0xffffffffu, dot, off);
                if (full) {
                    s[r][u] = dot;
                } else {
                    const bool vis = j < k_end && j <= pos[r] && j >= lo[r];
                    s[r][u] = vis ? dot + madd : -INFINITY;
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float mx = s[r][0];
#pragma unroll
            for (int u = 1; u < U; ++u) mx = fmaxf(mx, s[r][u]);
            const float mn = fmaxf(m[r], mx);
            const float mu = mn == -INFINITY ? 0.f : mn;
            const float alpha = exp2f(m[r] - mu);
            m[r] = mn;
            l[r] *= alpha;
#pragma unroll
            for (int v = 0; v < NV; ++v)
#pragma unroll
                for (int e = 0; e < kVec; ++e) o[r][v][e] *= alpha;
#pragma unroll
            for (int u = 0; u < U; ++u) s[r][u] = exp2f(s[r][u] - mu);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float vf[NV][kVec];
#pragma unroll
            for (int v = 0; v < NV; ++v)
                unpack8<T>(dim_ok[v] ? ld(vs + (u * KW + kg) * D + (sub + v * L) * kVec)
                                     : make_uint4(0, 0, 0, 0),
                           vf[v]);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                l[r] += s[r][u];
#pragma unroll
                for (int v = 0; v < NV; ++v)
#pragma unroll
                    for (int e = 0; e < kVec; ++e) o[r][v][e] = fmaf(s[r][u], vf[v][e], o[r][v][e]);
            }
        }
        __syncwarp();  // the stage is refilled next
    }
    cp_async_wait_groups<0>();
    __syncthreads();  // the rings are reused below

    // Merge the lane groups of the block (fixed order).
    float *sm_m = reinterpret_cast<float *>(dsm);
    float *sm_l = sm_m + G * R;
    float *sm_o = sm_m + 2 * G * R;
    const int g = warp * KW + kg;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (sub == 0) {
            sm_m[g * R + r] = m[r];
            sm_l[g * R + r] = l[r];
        }
#pragma unroll
        for (int v = 0; v < NV; ++v)
            if (dim_ok[v]) {
#pragma unroll
                for (int e = 0; e < kVec; ++e)
                    sm_o[(g * R + r) * D + (sub + v * L) * kVec + e] = o[r][v][e];
            }
    }
    __syncthreads();
    merge_and_store<T>(a, sm_m, sm_l, sm_o, G, R, D, nrows, row0, b, kvh, split);
}

// Merges the splits' partials of every output row, in split order (merge_split_step). One block
// per row; each thread takes output features dd, dd + 256, ….
template <typename T>
__global__ void __launch_bounds__(256) combine_kernel(AttnArgs a, int64_t rows_all) {
    allow_dependents();  // a small launch: the next kernel may be scheduled beside it
    wait_for_previous_grid();  // launched as a dependent of the decode kernel: its partials
    const int64_t row = blockIdx.x;
    const int D = a.head_dim, S = a.splits;
    const float *ml = a.part_ml + 2 * row;
    float M = -INFINITY;
    for (int s = 0; s < S; ++s) M = fmaxf(M, ml[2 * s * rows_all]);
    for (int dd = threadIdx.x; dd < D; dd += blockDim.x) {
        const float *o = a.part_o + row * D + dd;
        float tot = 0.f, O = 0.f;
#pragma unroll 4
        for (int s = 0; s < S; ++s)
            merge_split_step(ml[2 * s * rows_all], ml[2 * s * rows_all + 1], o[s * rows_all * D],
                             M, tot, O);
        static_cast<T *>(a.out)[row * D + dd] = Num<T>::from_f(merged_output(O, tot));
    }
}

// Read-only XOR reduction: 4 independent 16-byte loads per thread in flight.
__global__ void __launch_bounds__(512) read_probe_kernel(const uint4 *src, int64_t n, uint32_t *sink) {
    uint32_t acc = 0;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        const uint4 a = ld_ro(src + i), b = ld_ro(src + i + stride), c = ld_ro(src + i + 2 * stride),
                    d = ld_ro(src + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
               d.z ^ d.w;
    }
    for (; i < n; i += stride) {
        const uint4 a = ld_ro(src + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    __shared__ uint32_t part[16];
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t t = 0;
        for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) t ^= part[w];
        sink[blockIdx.x] = t;
    }
}

// The decode kernels over a native cache: the CUDA-core decode_kernel, attention_prefill.cu's
// decode_mma_kernel (16 query rows a block on tensor cores) and attention_quant.cu's fragment
// kernel (8 query rows a block as the mma's n).
enum class DecodeKernel { Simt, Mma, Frag };

// How a decode call is cut: its kernel, rows per block, row chunks, splits of the KV length, and
// the splits a launch for each shorter length would take (AttnArgs::splits_by_cap).
struct DecodePlan {
    DecodeKernel kernel;
    int rows;  // R
    int chunks;
    int splits;
    unsigned char splits_by_cap[kMaxSplits + 1];
};

// Head dims 64 and 128 take the fragment kernel (attention.cuh says why MHA too); other head
// dims take the 16-row tensor-core kernel, or the CUDA-core one for one or two rows.
// PARADEC_KV_DECODE=tile or =simt forces the 16-row or the CUDA-core kernel at 64 and 128.
// `capacity` (the cache's slots a sequence) picks the fragment kernel's rows a block.
DecodePlan plan_decode(int64_t batch, int64_t q_len, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t max_past, int64_t capacity) {
    DecodePlan p{};
    const int64_t rows = q_len * (heads / kv_heads);
    const bool tc = tc_head_dim(head_dim);
    const DecodeChoice choice = decode_choice();
    if (tc && choice == DecodeChoice::Frag) {
        p.kernel = DecodeKernel::Frag;
        p.rows = native_frag_rows(rows, batch * kv_heads, current_device_sms(), capacity);
    } else if (rows <= 2 || (tc && choice == DecodeChoice::Simt)) {
        p.kernel = DecodeKernel::Simt;
        p.rows = rows <= 1 ? 1 : 2;
    } else {
        p.kernel = DecodeKernel::Mma;
        p.rows = kDecodeMmaRows;
    }
    p.chunks = static_cast<int>((rows + p.rows - 1) / p.rows);
    const int64_t units = batch * kv_heads * p.chunks;
    // decode_splits.h's rule for the kernel. PARADEC_ATTN_MAX_SPLITS=N (1 … 256) caps the
    // count, PARADEC_ATTN_SPLITS=N fixes it (benches compare the combine's cost against fewer,
    // longer splits).
    static const int cap = env_int("PARADEC_ATTN_MAX_SPLITS", 1, kMaxSplits);
    const int most = cap > 0 ? cap : kMaxSplits;
    split_table(p.kernel == DecodeKernel::Simt ? SplitRule::NativeCudaCore : SplitRule::TensorCore,
                units, current_device_sms(), most, head_dim, kMaxSplits, p.splits_by_cap);
    fix_splits(p.splits_by_cap);
    const int64_t max_kv = max_past + q_len;
    const int64_t c = std::max<int64_t>(1, std::min<int64_t>(kMaxSplits, (max_kv + 127) / 128));
    // The table's count, not fewer: a shorter sequence of the batch may use all of its splits
    // where the longest leaves its last one empty.
    p.splits = p.splits_by_cap[c] + 1;
    return p;
}

template <typename T, int L, int R, int NV>
int launch_decode_lr(const AttnArgs &a, const DecodePlan &p, cudaStream_t stream) {
    constexpr int G = kDecodeWarps * (32 / L);
    const size_t smem =
        std::max(sizeof(float) * G * R * (2 + a.head_dim), decode_ring_bytes<L>());
    if (const int st = allow_dynamic_smem(decode_kernel<T, L, R, NV>, smem)) return st;
    const dim3 grid(p.splits, a.batch * a.kv_heads, p.chunks);
    decode_kernel<T, L, R, NV><<<grid, kDecodeWarps * 32, smem, stream>>>(a);
    return launch_status();
}

template <typename T, int L, int NV = 1>
int launch_decode_l(const AttnArgs &a, const DecodePlan &p, cudaStream_t stream) {
    switch (p.rows) {
        case 1: return launch_decode_lr<T, L, 1, NV>(a, p, stream);
        default: return launch_decode_lr<T, L, 2, NV>(a, p, stream);
    }
}

template <typename T>
int launch_decode(int dtype, AttnArgs a, const DecodePlan &p, cudaStream_t stream) {
    a.splits = p.splits;
    std::memcpy(a.splits_by_cap, p.splits_by_cap, sizeof a.splits_by_cap);
    const int vecs = a.head_dim / kVec;
    int st;
    if (p.kernel == DecodeKernel::Frag)
        st = launch_native_frag(dtype, a, p.rows, stream);
    else if (p.kernel == DecodeKernel::Mma)
        st = launch_decode_mma(dtype, a, p.chunks, stream);
    else if (vecs <= 1)
        st = launch_decode_l<T, 1>(a, p, stream);
    else if (vecs <= 2)
        st = launch_decode_l<T, 2>(a, p, stream);
    else if (vecs <= 4)
        st = launch_decode_l<T, 4>(a, p, stream);
    else if (vecs <= 8)
        st = launch_decode_l<T, 8>(a, p, stream);
    else if (vecs <= 16)
        st = launch_decode_l<T, 16>(a, p, stream);
    else  // Past head dim 128, two vectors a lane: two keys per warp step rather than one, and
          // a shuffle fewer per dot product (H100, 16 KV heads of 256: batch 1 at L = 8192
          // 50.6 µs against 58.9 at 8 splits, batch 32 at L = 8192 1668 against 1778 at 1).
        st = launch_decode_l<T, 16, 2>(a, p, stream);
    if (st != PARADEC_K_OK || p.splits == 1) return st;
    const int64_t rows_all = static_cast<int64_t>(a.batch) * a.q_len * a.heads;
    return launch_dependent(combine_kernel<T>, dim3(static_cast<unsigned>(rows_all)), dim3(256),
                            0, stream, a, rows_all);
}

constexpr int64_t kDecodeMaxQ = 16;

// The split-KV partials of plan p.
size_t plan_scratch_bytes(const DecodePlan &p, size_t batch, size_t q_len, size_t heads,
                          size_t head_dim) {
    if (p.splits == 1) return 0;
    const size_t rows = batch * q_len * heads;
    return sizeof(float) * static_cast<size_t>(p.splits) * rows * (head_dim + 2);
}

// The partials of the largest plan for any capacity: the capacity picks 8 or 16 rows a block
// (native_frag_rows), and 16-row blocks, half as many row chunks, take as many splits or more.
size_t scratch_bytes(size_t batch, size_t q_len, size_t heads, size_t kv_heads, size_t head_dim,
                     size_t max_past) {
    if (q_len == 0 || q_len > static_cast<size_t>(kDecodeMaxQ) || kv_heads == 0 ||
        heads % kv_heads != 0 || batch == 0)
        return 0;
    const int64_t most_capacity = int64_t{1} << 40;  // paradec_attention's bound
    const DecodePlan p = plan_decode(static_cast<int64_t>(batch), static_cast<int64_t>(q_len),
                                     static_cast<int64_t>(heads), static_cast<int64_t>(kv_heads),
                                     static_cast<int64_t>(head_dim), static_cast<int64_t>(max_past),
                                     most_capacity);
    return plan_scratch_bytes(p, batch, q_len, heads, head_dim);
}

}  // namespace

// The split-KV combine for another decode kernel's partials (attention_quant.cu).
int launch_combine(int dtype, const AttnArgs &a, cudaStream_t stream) {
    const int64_t rows_all = static_cast<int64_t>(a.batch) * a.q_len * a.heads;
    return dispatch_dtype(dtype, [&](auto tag) {
        return launch_dependent(combine_kernel<decltype(tag)>,
                                dim3(static_cast<unsigned>(rows_all)), dim3(256), 0, stream, a,
                                rows_all);
    });
}

}  // namespace paradec

extern "C" int paradec_split_qkv(int dtype, int layout, const void *fused, size_t tokens,
                                 size_t heads, size_t kv_heads, size_t head_dim, void *q, void *k,
                                 void *v, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!fused || !q || !k || !v) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (layout != PARADEC_QKV_PER_HEAD && layout != PARADEC_QKV_QUERIES_FIRST &&
            layout != PARADEC_QKV_GROUPED)
            return PARADEC_K_BAD_ENUM;
        if (tokens == 0 || heads == 0 || kv_heads == 0 || head_dim == 0) return PARADEC_K_ZERO_DIM;
        if (heads > (1u << 20) || kv_heads > (1u << 20) || head_dim > (1u << 20) ||
            (heads + 2 * kv_heads) * head_dim > static_cast<size_t>(INT_MAX) ||
            tokens > (size_t{1} << 40))
            return PARADEC_K_DIM_TOO_LARGE;
        if (heads % kv_heads != 0 || (layout == PARADEC_QKV_PER_HEAD && heads != kv_heads))
            return PARADEC_K_BAD_SHAPE;
        const bool vec = head_dim % paradec::kVec == 0 && paradec::aligned16(fused) &&
                         paradec::aligned16(q) && paradec::aligned16(k) && paradec::aligned16(v);
        const int64_t total = static_cast<int64_t>(tokens * (heads + 2 * kv_heads) * head_dim) /
                              (vec ? paradec::kVec : 1);
        const unsigned blocks =
            static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, int64_t{1} << 16));
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            if (vec)
                paradec::split_qkv_kernel<T, paradec::kVec><<<blocks, 256, 0, stream>>>(
                    static_cast<const T *>(fused), static_cast<int64_t>(tokens),
                    static_cast<int>(heads), static_cast<int>(kv_heads),
                    static_cast<int>(head_dim), layout, static_cast<T *>(q), static_cast<T *>(k),
                    static_cast<T *>(v));
            else
                paradec::split_qkv_kernel<T, 1><<<blocks, 256, 0, stream>>>(
                    static_cast<const T *>(fused), static_cast<int64_t>(tokens),
                    static_cast<int>(heads), static_cast<int>(kv_heads),
                    static_cast<int>(head_dim), layout, static_cast<T *>(q), static_cast<T *>(k),
                    static_cast<T *>(v));
            return paradec::launch_status();
        });
    });
}

extern "C" int paradec_head_norm(int dtype, int kind, void *x, size_t tokens, size_t heads,
                                 size_t head_dim, const void *weight, int weight_per_head,
                                 const void *bias, int bias_per_head, float eps,
                                 paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!x) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (kind != PARADEC_LAYER_NORM && kind != PARADEC_RMS_NORM) return PARADEC_K_BAD_ENUM;
        if (tokens == 0 || heads == 0 || head_dim == 0) return PARADEC_K_ZERO_DIM;
        if (head_dim > PARADEC_HEAD_NORM_MAX_DIM || heads > (1u << 20) ||
            tokens > (size_t{1} << 36))
            return PARADEC_K_DIM_TOO_LARGE;
        const int64_t rows = static_cast<int64_t>(tokens * heads);
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            paradec::head_norm_kernel<T><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(
                static_cast<T *>(x), rows, static_cast<int>(heads), static_cast<int>(head_dim),
                kind == PARADEC_LAYER_NORM, static_cast<const T *>(weight), weight_per_head != 0,
                static_cast<const T *>(bias), bias_per_head != 0, eps);
            return paradec::launch_status();
        });
    });
}

extern "C" size_t paradec_attention_scratch_bytes(size_t batch, size_t q_len, size_t heads,
                                                  size_t kv_heads, size_t head_dim,
                                                  size_t max_past) {
    try {
        return paradec::scratch_bytes(batch, q_len, heads, kv_heads, head_dim, max_past);
    } catch (...) {
        return 0;
    }
}

extern "C" int paradec_attention(int dtype, const void *q, const void *cache_k,
                                 const void *cache_v, void *out, size_t batch, size_t q_len,
                                 size_t heads, size_t kv_heads, size_t head_dim, size_t capacity,
                                 const int64_t *past_len, size_t max_past, size_t window,
                                 const float *mask, size_t mask_stride, float scale, void *scratch,
                                 size_t scratch_bytes, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!q || !cache_k || !cache_v || !out || !past_len) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (batch == 0 || q_len == 0 || heads == 0 || kv_heads == 0 || head_dim == 0 ||
            capacity == 0)
            return PARADEC_K_ZERO_DIM;
        if (head_dim > PARADEC_ATTN_MAX_HEAD_DIM || heads > 65535 || batch > 65535 ||
            batch * kv_heads > static_cast<size_t>(INT_MAX) || q_len > (size_t{1} << 30) ||
            capacity > (size_t{1} << 40))
            return PARADEC_K_DIM_TOO_LARGE;
        if (head_dim % paradec::kVec != 0 || heads % kv_heads != 0 ||
            max_past + q_len > capacity || (mask && mask_stride < max_past + q_len))
            return PARADEC_K_BAD_SHAPE;
        if (!paradec::aligned16(q) || !paradec::aligned16(cache_k) ||
            !paradec::aligned16(cache_v) || !paradec::aligned16(out))
            return PARADEC_K_BAD_SHAPE;
        paradec::AttnArgs a{};
        a.q = q;
        a.k = cache_k;
        a.v = cache_v;
        a.out = out;
        a.batch = static_cast<int>(batch);
        a.q_len = static_cast<int>(q_len);
        a.heads = static_cast<int>(heads);
        a.kv_heads = static_cast<int>(kv_heads);
        a.head_dim = static_cast<int>(head_dim);
        a.capacity = static_cast<int64_t>(capacity);
        a.past_len = past_len;
        a.max_past = static_cast<int64_t>(max_past);
        a.window = static_cast<int64_t>(window);
        a.mask = mask;
        a.mask_stride = static_cast<int64_t>(mask_stride);
        a.scale = scale;
        a.splits = 1;
        if (static_cast<int64_t>(q_len) > paradec::kDecodeMaxQ)
            return paradec::launch_prefill(dtype, a, stream);
        if (batch * kv_heads > 65535) return PARADEC_K_DIM_TOO_LARGE;  // the decode grid's y
        const paradec::DecodePlan p = paradec::plan_decode(
            a.batch, a.q_len, a.heads, a.kv_heads, a.head_dim, a.max_past, a.capacity);
        if (p.splits > 1) {
            const size_t need = paradec::plan_scratch_bytes(p, batch, q_len, heads, head_dim);
            if (!scratch) return PARADEC_K_NULL_POINTER;
            if (scratch_bytes < need || !paradec::aligned16(scratch)) return PARADEC_K_BAD_SHAPE;
            const size_t rows = batch * q_len * heads;
            a.part_o = static_cast<float *>(scratch);
            a.part_ml = a.part_o + static_cast<size_t>(p.splits) * rows * head_dim;
        }
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_decode<decltype(tag)>(dtype, a, p, stream);
        });
    });
}

extern "C" int paradec_attn_read_probe(const void *src, size_t bytes, uint32_t *sink,
                                       unsigned *blocks, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!src || !sink || !blocks) return PARADEC_K_NULL_POINTER;
        if (bytes == 0) return PARADEC_K_ZERO_DIM;
        if (bytes % 16 != 0 || !paradec::aligned16(src)) return PARADEC_K_BAD_SHAPE;
        const unsigned g = static_cast<unsigned>(std::min(4096, 4 * paradec::current_device_sms()));
        *blocks = g;
        paradec::read_probe_kernel<<<g, 512, 0, stream>>>(static_cast<const uint4 *>(src),
                                                         static_cast<int64_t>(bytes / 16), sink);
        return paradec::launch_status();
    });
}
