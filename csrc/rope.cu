// Rotary position embedding of q and k fused with writing k and v into the KV cache: the CUDA
// twin of cpu::rope::rotary_and_cache_write.
//
// One block per token (a few per token when there are few tokens). Its rot_dim/2 angles float(position)·inv_freq[j] get accurate sincosf
// (not __sinf: positions reach tens of thousands of radians) once, into shared memory; then the
// block's threads rotate every head of q and k in place (16-byte vectors when the shapes and
// pointers allow, else one pair at a time), writing rotated k straight into the cache slot
// past_len[b] + t, and copy k's unrotated tail and v into the cache.
//
// Into a quantized cache (paradec_rotary_cache_write_quant) the token's block, the only one of
// its token, rotates k in place, waits for its threads, then quantizes k's and v's rows into
// the pages: one thread per Hadamard run of 32 values (Q8/Q4) or per value (FP8).
#include <algorithm>
#include <climits>

#include "common.cuh"
#include "kv_quant.cuh"
#include "qkv_layout.h"

namespace paradec {
namespace {

struct RopeArgs {
    void *q;  // [tokens, heads, head_dim]
    void *k;  // [tokens, kv_heads, head_dim]
    const void *v;
    int64_t tokens;
    int64_t q_len;
    int heads;
    int kv_heads;
    int head_dim;
    const int64_t *positions;  // [tokens]
    bool half_style;
    int rot_dim;
    const float *inv_freq;  // [rot_dim / 2] or null: no rotary
    float attn_factor;
    const int64_t *past_len;  // [batch]
    int64_t capacity;
    void *cache_k;  // [batch, capacity, kv_heads * head_dim] or null: no cache write
    void *cache_v;
    // Quantized or paged pages (with `pages`, cache_k/cache_v are null and the launch has one
    // block per token).
    paradec_kv_pages kq;
    paradec_kv_pages vq;
    bool pages;  // write into kq/vq (quantized or paged) instead of cache_k/cache_v
    SlotMap sm;  // where a position's row is in the pages
};

// Writes one token's row x (kv_dim values) into pages p at row `slot` (SlotMap).
template <typename T>
__device__ __forceinline__ void quant_write_row(const paradec_kv_pages &p, const T *x,
                                                int kv_dim, int hd, int64_t slot) {
    uint8_t *row = static_cast<uint8_t *>(p.codes) +
                   slot * kv_row_bytes(p.format, kv_dim, static_cast<int>(sizeof(T)));
    if (p.format == PARADEC_KV_NATIVE) {
        // A paged cache of the dtype: a copy, 16 bytes at a time (kv_dim % 8 == 0).
        for (int c = threadIdx.x; c < kv_dim / kVec; c += blockDim.x)
            st(row + c * 16, ld(x + c * kVec));
    } else if (kv_has_runs(p.format)) {
        const int runs = kv_dim / kRun;
        for (int r = threadIdx.x; r < runs; r += blockDim.x) {
            float y[kRun];
#pragma unroll
            for (int i = 0; i < kRun; ++i) y[i] = Num<T>::to_f(x[r * kRun + i]);
            uint8_t c[kRun];
            uint4 packed[2];
            uint8_t *pb = reinterpret_cast<uint8_t *>(packed);
            __half s;
            if (p.format == PARADEC_KV_Q8) {
                s = quantize_run<8>(y, c);
#pragma unroll
                for (int i = 0; i < kRun; ++i) pb[i] = c[i];
                st(row + r * kRun, packed[0]);
                st(row + r * kRun + 16, packed[1]);
            } else {
                s = quantize_run<4>(y, c);
#pragma unroll
                for (int i = 0; i < kRun / 2; ++i)
                    pb[i] = static_cast<uint8_t>(c[2 * i] | (c[2 * i + 1] << 4));
                st(row + r * (kRun / 2), packed[0]);
            }
            static_cast<__half *>(p.scales)[slot * runs + r] = s;
        }
    } else {
        for (int e = threadIdx.x; e < kv_dim; e += blockDim.x) {
            const float v = Num<T>::to_f(x[e]);
            row[e] = p.format == PARADEC_KV_E4M3 ? f32_to_e4m3(__fdiv_rn(v, p.head_scale[e / hd]))
                                                 : f32_to_e5m2_trunc(v);
        }
    }
}

// Rotates pair j of one head (features j and j + half, or 2j and 2j + 1) read from src into dst
// and, when given, cache (src may be dst).
template <typename T>
__device__ __forceinline__ void rotate_pair(const T *src, T *dst, T *cache, int j, int half,
                                            bool half_style, const float *cs, const float *sn) {
    const int i0 = half_style ? j : 2 * j;
    const int i1 = half_style ? j + half : 2 * j + 1;
    const float a = Num<T>::to_f(src[i0]), b = Num<T>::to_f(src[i1]);
    const float c = cs[j], s = sn[j];
    const T o0 = Num<T>::from_f(a * c - b * s);
    const T o1 = Num<T>::from_f(b * c + a * s);
    dst[i0] = o0;
    dst[i1] = o1;
    if (cache) {
        cache[i0] = o0;
        cache[i1] = o1;
    }
}

// Rotates the first rot_dim features of `heads` heads at x (in place); when `cache` is set, the
// rotated values are also stored there (same layout as x).
template <typename T, bool VEC>
__device__ __forceinline__ void rotate_heads(T *x, T *cache, int heads, int hd, int rot_dim,
                                             bool half_style, const float *cs, const float *sn) {
    const int half = rot_dim / 2;
    const int first = blockIdx.y * blockDim.x + threadIdx.x;
    const int stride = blockDim.x * gridDim.y;
    if (VEC) {
        if (half_style) {
            // Pairs (j, j + half): a vector at d and its partner at d + half.
            const int cph = half / kVec;
            for (int idx = first; idx < heads * cph; idx += stride) {
                const int h = idx / cph;
                const int d = (idx % cph) * kVec;
                T *p = x + h * hd + d;
                float x1[kVec], x2[kVec];
                unpack8<T>(ld(p), x1);
                unpack8<T>(ld(p + half), x2);
#pragma unroll
                for (int e = 0; e < kVec; ++e) {
                    const float c = cs[d + e], s = sn[d + e];
                    const float a = x1[e], b = x2[e];
                    x1[e] = a * c - b * s;
                    x2[e] = b * c + a * s;
                }
                const uint4 v1 = pack8<T>(x1), v2 = pack8<T>(x2);
                st(p, v1);
                st(p + half, v2);
                if (cache) {
                    st(cache + h * hd + d, v1);
                    st(cache + h * hd + d + half, v2);
                }
            }
        } else {
            // Adjacent pairs (2j, 2j + 1): four pairs per vector.
            const int cph = rot_dim / kVec;
            for (int idx = first; idx < heads * cph; idx += stride) {
                const int h = idx / cph;
                const int d = (idx % cph) * kVec;
                T *p = x + h * hd + d;
                float f[kVec];
                unpack8<T>(ld(p), f);
#pragma unroll
                for (int e = 0; e < kVec / 2; ++e) {
                    const int j = d / 2 + e;
                    const float c = cs[j], s = sn[j];
                    const float a = f[2 * e], b = f[2 * e + 1];
                    f[2 * e] = a * c - b * s;
                    f[2 * e + 1] = b * c + a * s;
                }
                const uint4 o = pack8<T>(f);
                st(p, o);
                if (cache) st(cache + h * hd + d, o);
            }
        }
    } else {
        for (int idx = first; idx < heads * half; idx += stride) {
            const int h = idx / half;
            rotate_pair<T>(x + h * hd, x + h * hd, cache ? cache + h * hd : nullptr, idx % half,
                           half, half_style, cs, sn);
        }
    }
}

// The token's cos and sin (scaled by attn_factor) of the rot_dim / 2 angles into cs and sn:
// as HF and the CPU twin, angle = float(position) · inv_freq in f32, accurate sin/cos. Every
// thread of the block calls it; the block's barrier follows.
__device__ __forceinline__ void rotary_table(int64_t position, const float *inv_freq, int half,
                                             float attn_factor, float *cs, float *sn) {
    const float p = static_cast<float>(position);
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float s, c;
        sincosf(p * inv_freq[j], &s, &c);
        cs[j] = c * attn_factor;
        sn[j] = s * attn_factor;
    }
    __syncthreads();
}

// The cache rows of token `token` (sequence token / q_len) in a contiguous cache, or nulls
// where there is no cache or the slot lies outside it (the host checks capacity; see the
// header).
template <typename T>
__device__ __forceinline__ void cache_rows(void *cache_k, void *cache_v, const int64_t *past_len,
                                           int64_t token, int64_t q_len, int64_t capacity,
                                           int64_t kv_dim, T *&ck, T *&cv) {
    ck = cv = nullptr;
    if (!cache_k) return;
    const int64_t b = token / q_len;
    const int64_t slot = past_len[b] + token % q_len;
    if (slot >= 0 && slot < capacity) {
        ck = static_cast<T *>(cache_k) + (b * capacity + slot) * kv_dim;
        cv = static_cast<T *>(cache_v) + (b * capacity + slot) * kv_dim;
    }
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(128) rope_cache_kernel(RopeArgs a) {
    extern __shared__ float sm[];  // cos[half], sin[half]
    const int64_t token = blockIdx.x;
    const bool rot = a.inv_freq != nullptr;
    const int half = rot ? a.rot_dim / 2 : 0;
    float *cs = sm;
    float *sn = sm + half;
    if (rot) rotary_table(a.positions[token], a.inv_freq, half, a.attn_factor, cs, sn);
    else __syncthreads();

    const int hd = a.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(a.kv_heads) * hd;
    const int64_t b = token / a.q_len;
    const int64_t t = token % a.q_len;
    T *q = static_cast<T *>(a.q) + token * a.heads * hd;
    T *k = static_cast<T *>(a.k) + token * kv_dim;
    T *ck, *cv;
    cache_rows<T>(a.cache_k, a.cache_v, a.past_len, token, a.q_len, a.capacity, kv_dim, ck, cv);
    if (rot) {
        rotate_heads<T, VEC>(q, nullptr, a.heads, hd, a.rot_dim, a.half_style, cs, sn);
        rotate_heads<T, VEC>(k, ck, a.kv_heads, hd, a.rot_dim, a.half_style, cs, sn);
    }
    if (a.pages) {
        // Quantized or paged cache: this block is the token's only one; its rotated k is in
        // memory.
        __syncthreads();
        const int64_t slot = a.past_len[b] + t;
        if (slot < 0 || slot >= a.capacity) return;  // the host checked (see the header)
        const int64_t idx = a.sm(b, slot);
        quant_write_row<T>(a.kq, k, static_cast<int>(kv_dim), hd, idx);
        quant_write_row<T>(a.vq, static_cast<const T *>(a.v) + token * kv_dim,
                           static_cast<int>(kv_dim), hd, idx);
        return;
    }
    if (ck) {
        // k's features the rotation did not touch (all of them without rotary), and all of v.
        const T *v = static_cast<const T *>(a.v) + token * kv_dim;
        const int rd = rot ? a.rot_dim : 0;
        const int first = blockIdx.y * blockDim.x + threadIdx.x;
        const int stride = blockDim.x * gridDim.y;
        if (VEC) {
            const int cph = hd / kVec;
            for (int idx = first; idx < a.kv_heads * cph; idx += stride) {
                const int64_t e = static_cast<int64_t>(idx / cph) * hd + (idx % cph) * kVec;
                if ((idx % cph) * kVec >= rd) st(ck + e, ld(k + e));
                st(cv + e, ld_ro(v + e));
            }
        } else {
            for (int64_t e = first; e < kv_dim; e += stride) {
                if (e % hd >= rd) ck[e] = k[e];
                cv[e] = v[e];
            }
        }
    }
}

// ---- the split of a fused q/k/v projection, rotary and cache write in one launch ---------------

struct SplitRopeArgs {
    const void *fused;  // [tokens, (heads + 2·kv_heads)·head_dim] in `layout`
    int layout;         // a paradec_qkv_layout code
    void *q;            // [tokens, heads, head_dim]
    void *k;            // [tokens, kv_heads, head_dim]
    void *v;
    int64_t q_len;
    int heads;
    int kv_heads;
    int head_dim;
    const int64_t *positions;  // [tokens]
    bool half_style;
    int rot_dim;            // 0: no rotary
    const float *inv_freq;  // [rot_dim / 2] or null
    float attn_factor;
    const int64_t *past_len;  // [batch]
    int64_t capacity;
    void *cache_k;  // [batch, capacity, kv_heads · head_dim] or null: no cache write
    void *cache_v;
};

// One block per (token, slice of its features): q and k rotated from the fused features into q
// and k (and k into the cache), the rest copied (v into v and the cache) — the values
// split_qkv_kernel then rope_cache_kernel would leave, rounded the same way.
template <typename T>
__global__ void __launch_bounds__(128) split_rope_cache_kernel(SplitRopeArgs a) {
    extern __shared__ float sm[];  // cos[half], sin[half]
    const int64_t token = blockIdx.x;
    const int half = a.rot_dim / 2;
    float *cs = sm;
    float *sn = sm + half;
    if (half > 0) rotary_table(a.positions[token], a.inv_freq, half, a.attn_factor, cs, sn);
    const int hd = a.head_dim, H = a.heads, G = a.kv_heads;
    const int64_t kv_dim = static_cast<int64_t>(G) * hd;
    const T *src = static_cast<const T *>(a.fused) + token * (H + 2 * G) * static_cast<int64_t>(hd);
    T *q = static_cast<T *>(a.q) + token * H * static_cast<int64_t>(hd);
    T *k = static_cast<T *>(a.k) + token * kv_dim;
    T *v = static_cast<T *>(a.v) + token * kv_dim;
    T *ck, *cv;
    cache_rows<T>(a.cache_k, a.cache_v, a.past_len, token, a.q_len, a.capacity, kv_dim, ck, cv);
    // Units of work: per q or k head, its rotated pairs then its other features one by one;
    // then every feature of v.
    const int per_head = half + (hd - a.rot_dim);
    const int rotated = (H + G) * per_head;
    const int total = rotated + G * hd;
    for (int u = blockIdx.y * blockDim.x + threadIdx.x; u < total;
         u += blockDim.x * gridDim.y) {
        if (u >= rotated) {
            const int g = (u - rotated) / hd, e = (u - rotated) % hd;
            const T x = src[fused_head_offset(a.layout, 2, g, H, G, hd) + e];
            v[g * hd + e] = x;
            if (cv) cv[g * hd + e] = x;
            continue;
        }
        const int part = u < H * per_head ? 0 : 1;
        const int h = (part == 0 ? u : u - H * per_head) / per_head;
        const int j = (part == 0 ? u : u - H * per_head) % per_head;
        const T *sp = src + fused_head_offset(a.layout, part, h, H, G, hd);
        T *dp = (part == 0 ? q : k) + h * hd;
        T *cp = part == 1 && ck ? ck + h * hd : nullptr;
        if (j < half) {
            rotate_pair<T>(sp, dp, cp, j, half, a.half_style, cs, sn);
        } else {
            const int e = a.rot_dim + (j - half);
            dp[e] = sp[e];
            if (cp) cp[e] = sp[e];
        }
    }
}

template <typename T>
int launch_split_rope_t(const SplitRopeArgs &a, int64_t tokens, cudaStream_t stream) {
    const size_t smem = sizeof(float) * a.rot_dim;
    const int64_t items = (static_cast<int64_t>(a.heads) + 3 * a.kv_heads) * a.head_dim;
    // Few tokens (decode): each token's features over several blocks, to fill the GPU.
    const int split = tokens < 512 ? static_cast<int>(std::min<int64_t>(
                                         16, std::max<int64_t>(1, items / 1024)))
                                   : 1;
    split_rope_cache_kernel<T>
        <<<dim3(static_cast<unsigned>(tokens), split), 128, smem, stream>>>(a);
    return launch_status();
}

template <typename T>
int launch_rope_t(const RopeArgs &a, cudaStream_t stream) {
    const bool rot = a.inv_freq != nullptr;
    const bool vec = a.head_dim % kVec == 0 &&
                     (!rot || (a.half_style ? a.rot_dim % (2 * kVec) == 0
                                            : a.rot_dim % kVec == 0)) &&
                     aligned16(a.q) && aligned16(a.k) && (!a.cache_k || (aligned16(a.v) &&
                     aligned16(a.cache_k) && aligned16(a.cache_v)));
    const size_t smem = rot ? sizeof(float) * a.rot_dim : 0;
    // Few tokens (decode): split each token's heads over several blocks to fill the GPU.
    const int64_t items = (static_cast<int64_t>(a.heads) + 3 * a.kv_heads) * a.head_dim / kVec;
    int split = 1;
    if (a.tokens < 512 && !a.pages) split = static_cast<int>(std::min<int64_t>(16, std::max<int64_t>(1, items / 128)));
    const dim3 grid(static_cast<unsigned>(a.tokens), split);
    if (vec)
        rope_cache_kernel<T, true><<<grid, 128, smem, stream>>>(a);
    else
        rope_cache_kernel<T, false><<<grid, 128, smem, stream>>>(a);
    return launch_status();
}

}  // namespace
}  // namespace paradec

namespace paradec {
namespace {

// The checks every contiguous-cache rotary launcher makes (a paradec status).
int rope_args_status(int dtype, const void *q, const void *k, const void *v, size_t batch,
                     size_t q_len, size_t heads, size_t kv_heads, size_t head_dim,
                     const int64_t *positions, int style, size_t rot_dim, const float *inv_freq,
                     const int64_t *past_len, size_t capacity, const void *cache_k,
                     const void *cache_v) {
    const bool rot = inv_freq != nullptr;
    const bool cache = cache_k != nullptr || cache_v != nullptr;
    if (!q || !k) return PARADEC_K_NULL_POINTER;
    if (rot && !positions) return PARADEC_K_NULL_POINTER;
    if (cache && (!cache_k || !cache_v || !v || !past_len)) return PARADEC_K_NULL_POINTER;
    if (rot && style != PARADEC_ROPE_INTERLEAVED && style != PARADEC_ROPE_HALF)
        return PARADEC_K_BAD_ENUM;
    if (!valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
    if (batch == 0 || q_len == 0 || heads == 0 || kv_heads == 0 || head_dim == 0 ||
        (cache && capacity == 0) || (rot && rot_dim == 0))
        return PARADEC_K_ZERO_DIM;
    if (head_dim > PARADEC_ROPE_MAX_HEAD_DIM || heads > static_cast<size_t>(INT_MAX) / head_dim ||
        kv_heads > static_cast<size_t>(INT_MAX) / head_dim ||
        heads + 2 * kv_heads > static_cast<size_t>(INT_MAX) / head_dim ||
        batch > static_cast<size_t>(INT_MAX) / q_len || capacity > (size_t{1} << 40))
        return PARADEC_K_DIM_TOO_LARGE;
    if (rot && (rot_dim % 2 != 0 || rot_dim > head_dim)) return PARADEC_K_BAD_SHAPE;
    return PARADEC_K_OK;
}

}  // namespace
}  // namespace paradec

extern "C" int paradec_rotary_cache_write(int dtype, void *q, void *k, const void *v,
                                          size_t batch, size_t q_len, size_t heads,
                                          size_t kv_heads, size_t head_dim,
                                          const int64_t *positions, int style, size_t rot_dim,
                                          const float *inv_freq, float attn_factor,
                                          const int64_t *past_len, size_t capacity, void *cache_k,
                                          void *cache_v, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        const bool rot = inv_freq != nullptr;
        const bool cache = cache_k != nullptr || cache_v != nullptr;
        if (const int st = paradec::rope_args_status(dtype, q, k, v, batch, q_len, heads, kv_heads,
                                                     head_dim, positions, style, rot_dim,
                                                     inv_freq, past_len, capacity, cache_k,
                                                     cache_v))
            return st;
        paradec::RopeArgs a{q,
                            k,
                            v,
                            static_cast<int64_t>(batch * q_len),
                            static_cast<int64_t>(q_len),
                            static_cast<int>(heads),
                            static_cast<int>(kv_heads),
                            static_cast<int>(head_dim),
                            positions,
                            style == PARADEC_ROPE_HALF,
                            static_cast<int>(rot ? rot_dim : 0),
                            inv_freq,
                            attn_factor,
                            past_len,
                            static_cast<int64_t>(capacity),
                            cache ? cache_k : nullptr,
                            cache ? cache_v : nullptr,
                            paradec_kv_pages{},
                            paradec_kv_pages{},
                            false,
                            paradec::SlotMap{}};
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_rope_t<decltype(tag)>(a, stream);
        });
    });
}

extern "C" int paradec_rotary_cache_write_quant(
    int dtype, void *q, void *k, const void *v, size_t batch, size_t q_len, size_t heads,
    size_t kv_heads, size_t head_dim, const int64_t *positions, int style, size_t rot_dim,
    const float *inv_freq, float attn_factor, const int64_t *past_len, size_t capacity,
    paradec_kv_block_table block_table, paradec_kv_pages k_pages, paradec_kv_pages v_pages,
    paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        const bool rot = inv_freq != nullptr;
        if (!q || !k || !v || !past_len || !k_pages.codes || !v_pages.codes)
            return PARADEC_K_NULL_POINTER;
        if (rot && !positions) return PARADEC_K_NULL_POINTER;
        if (rot && style != PARADEC_ROPE_INTERLEAVED && style != PARADEC_ROPE_HALF)
            return PARADEC_K_BAD_ENUM;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        for (const paradec_kv_pages *p : {&k_pages, &v_pages}) {
            if (p->format < PARADEC_KV_NATIVE || p->format > PARADEC_KV_Q4) return PARADEC_K_BAD_ENUM;
            if (p->format == PARADEC_KV_NATIVE && (head_dim % paradec::kVec != 0 ||
                                                   !paradec::aligned16(k) || !paradec::aligned16(v)))
                return PARADEC_K_BAD_SHAPE;
            if (p->format == PARADEC_KV_E5M2 && dtype != PARADEC_F16) return PARADEC_K_BAD_DTYPE;
            if (paradec::kv_has_runs(p->format) && !p->scales) return PARADEC_K_NULL_POINTER;
            if (p->format == PARADEC_KV_E4M3 && !p->head_scale) return PARADEC_K_NULL_POINTER;
            if (!paradec::aligned16(p->codes)) return PARADEC_K_BAD_SHAPE;
            if (paradec::kv_has_runs(p->format) && head_dim % paradec::kRun != 0)
                return PARADEC_K_BAD_SHAPE;
        }
        if (batch == 0 || q_len == 0 || heads == 0 || kv_heads == 0 || head_dim == 0 ||
            capacity == 0 || (rot && rot_dim == 0))
            return PARADEC_K_ZERO_DIM;
        if (head_dim > PARADEC_ROPE_MAX_HEAD_DIM || heads > static_cast<size_t>(INT_MAX) / head_dim ||
            kv_heads > static_cast<size_t>(INT_MAX) / head_dim ||
            batch > static_cast<size_t>(INT_MAX) / q_len || capacity > (size_t{1} << 40))
            return PARADEC_K_DIM_TOO_LARGE;
        if (rot && (rot_dim % 2 != 0 || rot_dim > head_dim)) return PARADEC_K_BAD_SHAPE;
        if (block_table.table &&
            (block_table.page_size == 0 || block_table.max_pages == 0 ||
             block_table.max_pages > (size_t{1} << 30) ||
             block_table.page_size > (size_t{1} << 30) ||
             capacity != block_table.max_pages * block_table.page_size))
            return PARADEC_K_BAD_SHAPE;
        const paradec::SlotMap sm{block_table.table, static_cast<int64_t>(block_table.max_pages),
                                  static_cast<int64_t>(block_table.page_size),
                                  static_cast<int64_t>(capacity)};
        paradec::RopeArgs a{q,
                            k,
                            v,
                            static_cast<int64_t>(batch * q_len),
                            static_cast<int64_t>(q_len),
                            static_cast<int>(heads),
                            static_cast<int>(kv_heads),
                            static_cast<int>(head_dim),
                            positions,
                            style == PARADEC_ROPE_HALF,
                            static_cast<int>(rot ? rot_dim : 0),
                            inv_freq,
                            attn_factor,
                            past_len,
                            static_cast<int64_t>(capacity),
                            nullptr,
                            nullptr,
                            k_pages,
                            v_pages,
                            true,
                            sm};
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_rope_t<decltype(tag)>(a, stream);
        });
    });
}

extern "C" int paradec_split_rotary_cache_write(
    int dtype, const void *fused, int layout, void *q, void *k, void *v, size_t batch,
    size_t q_len, size_t heads, size_t kv_heads, size_t head_dim, const int64_t *positions,
    int style, size_t rot_dim, const float *inv_freq, float attn_factor, const int64_t *past_len,
    size_t capacity, void *cache_k, void *cache_v, paradec_stream_t stream) {
    if (!fused)  // in place: q and k rotated where they are, v only read
        return paradec_rotary_cache_write(dtype, q, k, v, batch, q_len, heads, kv_heads, head_dim,
                                          positions, style, rot_dim, inv_freq, attn_factor,
                                          past_len, capacity, cache_k, cache_v, stream);
    return paradec::guarded([&]() -> int {
        const bool rot = inv_freq != nullptr;
        const bool cache = cache_k != nullptr || cache_v != nullptr;
        if (!v) return PARADEC_K_NULL_POINTER;
        if (layout != PARADEC_QKV_PER_HEAD && layout != PARADEC_QKV_QUERIES_FIRST &&
            layout != PARADEC_QKV_GROUPED)
            return PARADEC_K_BAD_ENUM;
        if (const int st = paradec::rope_args_status(dtype, q, k, v, batch, q_len, heads, kv_heads,
                                                     head_dim, positions, style, rot_dim,
                                                     inv_freq, past_len, capacity, cache_k,
                                                     cache_v))
            return st;
        if (heads % kv_heads != 0 || (layout == PARADEC_QKV_PER_HEAD && heads != kv_heads))
            return PARADEC_K_BAD_SHAPE;
        const paradec::SplitRopeArgs a{fused,
                                       layout,
                                       q,
                                       k,
                                       v,
                                       static_cast<int64_t>(q_len),
                                       static_cast<int>(heads),
                                       static_cast<int>(kv_heads),
                                       static_cast<int>(head_dim),
                                       positions,
                                       style == PARADEC_ROPE_HALF,
                                       static_cast<int>(rot ? rot_dim : 0),
                                       rot ? inv_freq : nullptr,
                                       attn_factor,
                                       past_len,
                                       static_cast<int64_t>(capacity),
                                       cache ? cache_k : nullptr,
                                       cache ? cache_v : nullptr};
        const int64_t tokens = static_cast<int64_t>(batch * q_len);
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_split_rope_t<decltype(tag)>(a, tokens, stream);
        });
    });
}
