// LayerNorm and RMSNorm over the last dimension, with an optional fused residual add and an
// optional second output (two norms of one x): the CUDA twins of cpu::norm::{norm, add_norm,
// norm2}.
//
// Fast path (cols % 8 == 0, every pointer 16-byte aligned): a row is spread over `tpr` threads
// (32..1024, one warp or a whole block), each holding VPT 16-byte vectors of the row in
// registers, so x is read from memory once: load (+ residual, written back), row statistics by
// warp shuffles (+ shared memory across warps), then normalize from registers. LayerNorm's
// statistics take one reduction: each thread's count, mean and sum of squared deviations,
// merged pairwise (Chan et al.), as stable as a two-pass variance.
// Other shapes take a scalar path: one row per block, x re-read from L1/L2.
#include <climits>

#include "common.cuh"
#include "dependent_launch.cuh"

namespace paradec {
namespace {

struct NormArgs {
    void *x;               // [rows, cols]; written back when residual is set
    const void *residual;  // [rows, cols] or null
    const void *w0;        // [cols] or null
    const void *b0;        // [cols] or null
    void *out0;            // [rows, cols]
    const void *w1;        // second output's affine (only with out1)
    const void *b1;
    void *out1;  // [rows, cols] or null
    int64_t rows;
    int cols;
    float eps;
    bool rms;
};

// Sum of v over the threads of one row (threadIdx.x = 0..blockDim.x, a multiple of 32; the row
// is threadIdx.y). `red` is 32 floats of shared memory that only this reduction uses. Every
// thread of the block must call it (it may synchronize the block).
__device__ __forceinline__ float row_sum(float v, float *red) {
    v = warp_sum(v);
    const int wpr = blockDim.x >> 5;
    if (wpr == 1) return v;
    const int lane = threadIdx.x & 31;
    const int base = threadIdx.y * wpr;
    if (lane == 0) red[base + (threadIdx.x >> 5)] = v;
    __syncthreads();
    return warp_sum(lane < wpr ? red[base + lane] : 0.f);
}

// LayerNorm statistics of one row in one pass over registers. Each warp shifts its values by
// one of them (`shift`, the same for the whole warp), so that Σ(x−shift) and Σ(x−shift)² stay
// well conditioned, and turns its sums into (count, mean, M2). The row's warps are merged
// exactly through shared memory: mean = Σ nᵢ·meanᵢ / n, M2 = Σ (M2ᵢ + nᵢ·(meanᵢ − mean)²).
// `red` is 3×32 floats that only this reduction uses; every thread of the block must call it.
__device__ __forceinline__ void row_mean_var(float s1, float s2, float cnt, float shift, float *red,
                                             float &out_mean, float &out_var) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        s1 += __shfl_xor_sync(0xffffffffu, s1, o);
        s2 += __shfl_xor_sync(0xffffffffu, s2, o);
        cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
    }
    const float rel = cnt > 0.f ? s1 / cnt : 0.f;
    const float m2_w = cnt > 0.f ? fmaxf(s2 - s1 * rel, 0.f) : 0.f;
    const float mean_w = shift + rel;
    const int wpr = blockDim.x >> 5;
    if (wpr == 1) {
        out_mean = mean_w;
        out_var = m2_w / cnt;
        return;
    }
    const int lane = threadIdx.x & 31;
    const int base = threadIdx.y * wpr;
    if (lane == 0) {
        const int w = base + (threadIdx.x >> 5);
        red[w] = cnt;
        red[32 + w] = mean_w;
        red[64 + w] = m2_w;
    }
    __syncthreads();
    const bool has = lane < wpr;
    const float n_i = has ? red[base + lane] : 0.f;
    const float mean_i = has ? red[32 + base + lane] : 0.f;
    const float m2_i = has ? red[64 + base + lane] : 0.f;
    const float n = warp_sum(n_i);
    const float mean = warp_sum(n_i * mean_i) / n;
    const float d = mean_i - mean;
    out_mean = mean;
    out_var = warp_sum(m2_i + n_i * d * d) / n;
}

template <typename T>
__device__ __forceinline__ void affine_store(const float (&y)[kVec], const void *w, const void *b,
                                             void *out, int64_t elem) {
    float z[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) z[e] = y[e];
    if (w) {
        float f[kVec];
        unpack8<T>(ld_ro(static_cast<const T *>(w) + elem), f);
#pragma unroll
        for (int e = 0; e < kVec; ++e) z[e] *= f[e];
    }
    if (b) {
        float f[kVec];
        unpack8<T>(ld_ro(static_cast<const T *>(b) + elem), f);
#pragma unroll
        for (int e = 0; e < kVec; ++e) z[e] += f[e];
    }
    st(static_cast<T *>(out) + elem, pack8<T>(z));
}

template <typename T, int VPT>
__global__ void __launch_bounds__(1024) norm_vec_kernel(NormArgs a) {
    allow_dependents();  // one block per few rows: the next kernel may be scheduled beside it
    __shared__ float red[96];
    const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
    const bool live = row < a.rows;
    const int nv = a.cols / kVec;
    const int64_t base = live ? row * a.cols : 0;
    T *x = static_cast<T *>(a.x) + base;

    uint4 v[VPT];
    uint4 r[VPT];
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
        const int c = threadIdx.x + i * blockDim.x;
        v[i] = make_uint4(0, 0, 0, 0);
        r[i] = make_uint4(0, 0, 0, 0);
        if (live && c < nv) {
            v[i] = ld(x + c * kVec);
            if (a.residual) r[i] = ld_ro(static_cast<const T *>(a.residual) + base + c * kVec);
        }
    }
    if (a.residual) {
#pragma unroll
        for (int i = 0; i < VPT; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            if (live && c < nv) {
                float f[kVec], g[kVec];
                unpack8<T>(v[i], f);
                unpack8<T>(r[i], g);
#pragma unroll
                for (int e = 0; e < kVec; ++e) f[e] += g[e];
                v[i] = pack8<T>(f);  // the norm sees x rounded to T, as it is stored
                st(x + c * kVec, v[i]);
            }
        }
    }

    // Statistics of the row from registers, with one reduction.
    float mean = 0.f;
    float var;
    if (a.rms) {
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < VPT; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            if (live && c < nv) {
                float f[kVec];
                unpack8<T>(v[i], f);
#pragma unroll
                for (int e = 0; e < kVec; ++e) s += f[e] * f[e];
            }
        }
        var = row_sum(s, red) / a.cols;
    } else {
        // The warp's shift: lane 0's first value (always one of the row's values when the row
        // is live: lane 0 of every warp holds vector index < nv by the launch configuration).
        float k0 = 0.f;
        if (live && threadIdx.x < static_cast<unsigned>(nv)) {
            float f[kVec];
            unpack8<T>(v[0], f);
            k0 = f[0];
        }
        const float shift = __shfl_sync(0xffffffffu, k0, 0);
        float s1 = 0.f, s2 = 0.f, cnt = 0.f;
#pragma unroll
        for (int i = 0; i < VPT; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            if (live && c < nv) {
                float f[kVec];
                unpack8<T>(v[i], f);
                cnt += kVec;
#pragma unroll
                for (int e = 0; e < kVec; ++e) {
                    const float d = f[e] - shift;
                    s1 += d;
                    s2 += d * d;
                }
            }
        }
        row_mean_var(s1, s2, cnt, shift, red, mean, var);
    }
    const float inv = rsqrtf(var + a.eps);

#pragma unroll
    for (int i = 0; i < VPT; ++i) {
        const int c = threadIdx.x + i * blockDim.x;
        if (live && c < nv) {
            float y[kVec];
            unpack8<T>(v[i], y);
#pragma unroll
            for (int e = 0; e < kVec; ++e) y[e] = (y[e] - mean) * inv;
            affine_store<T>(y, a.w0, a.b0, static_cast<T *>(a.out0) + base, c * kVec);
            if (a.out1) affine_store<T>(y, a.w1, a.b1, static_cast<T *>(a.out1) + base, c * kVec);
        }
    }
}

template <typename T>
__device__ __forceinline__ float affine1(float y, const void *w, const void *b, int c) {
    if (w) y *= Num<T>::to_f(static_cast<const T *>(w)[c]);
    if (b) y += Num<T>::to_f(static_cast<const T *>(b)[c]);
    return y;
}

// Any shape and alignment: one row per block (blockDim.x a multiple of 32, blockDim.y 1).
template <typename T>
__global__ void __launch_bounds__(256) norm_scalar_kernel(NormArgs a) {
    allow_dependents();
    __shared__ float red0[32];
    __shared__ float red1[32];
    const int64_t base = static_cast<int64_t>(blockIdx.x) * a.cols;
    T *x = static_cast<T *>(a.x) + base;
    const T *res = static_cast<const T *>(a.residual) + (a.residual ? base : 0);

    float s = 0.f;
    for (int c = threadIdx.x; c < a.cols; c += blockDim.x) {
        float f = Num<T>::to_f(x[c]);
        if (a.residual) {
            const T t = Num<T>::from_f(f + Num<T>::to_f(res[c]));
            x[c] = t;
            f = Num<T>::to_f(t);
        }
        s += a.rms ? f * f : f;
    }
    float mean = 0.f;
    float var;
    if (a.rms) {
        var = row_sum(s, red0) / a.cols;
    } else {
        mean = row_sum(s, red0) / a.cols;
        float ss = 0.f;
        for (int c = threadIdx.x; c < a.cols; c += blockDim.x) {
            const float d = Num<T>::to_f(x[c]) - mean;
            ss += d * d;
        }
        var = row_sum(ss, red1) / a.cols;
    }
    const float inv = rsqrtf(var + a.eps);
    T *o0 = static_cast<T *>(a.out0) + base;
    T *o1 = a.out1 ? static_cast<T *>(a.out1) + base : nullptr;
    for (int c = threadIdx.x; c < a.cols; c += blockDim.x) {
        const float y = (Num<T>::to_f(x[c]) - mean) * inv;
        // Read x before writing: out may alias x.
        const float z0 = affine1<T>(y, a.w0, a.b0, c);
        if (o1) o1[c] = Num<T>::from_f(affine1<T>(y, a.w1, a.b1, c));
        o0[c] = Num<T>::from_f(z0);
    }
}

// Threads per row and 16-byte vectors per thread for a row of nv vectors (nv ≤ 4096).
struct VecConfig {
    int tpr;
    int vpt;
};
inline VecConfig vec_config(int nv) {
    if (nv <= 32) return {32, 1};
    if (nv <= 64) return {32, 2};
    if (nv <= 128) return {32, 4};
    int tpr = 64;
    while (tpr * 4 < nv) tpr *= 2;
    return {tpr, 4};
}

template <typename T>
int launch_norm_t(const NormArgs &a, cudaStream_t stream) {
    const bool vec = a.cols % kVec == 0 && aligned16(a.x) && aligned16(a.out0) &&
                     (!a.residual || aligned16(a.residual)) && (!a.w0 || aligned16(a.w0)) &&
                     (!a.b0 || aligned16(a.b0)) && (!a.out1 || aligned16(a.out1)) &&
                     (!a.w1 || aligned16(a.w1)) && (!a.b1 || aligned16(a.b1));
    if (vec) {
        const VecConfig cfg = vec_config(a.cols / kVec);
        const int rpb = cfg.tpr >= 256 ? 1 : 256 / cfg.tpr;
        const dim3 block(cfg.tpr, rpb);
        const dim3 grid(static_cast<unsigned>((a.rows + rpb - 1) / rpb));
        switch (cfg.vpt) {
            case 1: norm_vec_kernel<T, 1><<<grid, block, 0, stream>>>(a); break;
            case 2: norm_vec_kernel<T, 2><<<grid, block, 0, stream>>>(a); break;
            default: norm_vec_kernel<T, 4><<<grid, block, 0, stream>>>(a); break;
        }
    } else {
        const int threads = a.cols >= 256 ? 256 : ((a.cols + 31) / 32) * 32;
        norm_scalar_kernel<T><<<static_cast<unsigned>(a.rows), threads, 0, stream>>>(a);
    }
    return launch_status();
}

int launch_norm(int kind, int dtype, NormArgs a, size_t rows, size_t cols, float eps,
                cudaStream_t stream) {
    if (!a.x || !a.out0) return PARADEC_K_NULL_POINTER;
    if (kind != PARADEC_LAYER_NORM && kind != PARADEC_RMS_NORM) return PARADEC_K_BAD_ENUM;
    if (!valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
    if (rows == 0 || cols == 0) return PARADEC_K_ZERO_DIM;
    if (cols > PARADEC_NORM_MAX_COLS || rows > static_cast<size_t>(INT_MAX))
        return PARADEC_K_DIM_TOO_LARGE;
    a.rows = static_cast<int64_t>(rows);
    a.cols = static_cast<int>(cols);
    a.eps = eps;
    a.rms = kind == PARADEC_RMS_NORM;
    return dispatch_dtype(dtype, [&](auto tag) { return launch_norm_t<decltype(tag)>(a, stream); });
}

}  // namespace
}  // namespace paradec

using paradec::guarded;
using paradec::NormArgs;

extern "C" int paradec_norm_fused(int kind, int dtype, void *x, const void *residual,
                                  const void *weight_a, const void *bias_a, void *out_a,
                                  const void *weight_b, const void *bias_b, void *out_b,
                                  size_t rows, size_t cols, float eps, paradec_stream_t stream) {
    return guarded([&]() -> int {
        NormArgs a{x, residual, weight_a, bias_a, out_a, weight_b, bias_b, out_b, 0, 0, 0.f, false};
        return paradec::launch_norm(kind, dtype, a, rows, cols, eps, stream);
    });
}

extern "C" int paradec_norm(int kind, int dtype, const void *x, const void *weight,
                            const void *bias, void *out, size_t rows, size_t cols, float eps,
                            paradec_stream_t stream) {
    return paradec_norm_fused(kind, dtype, const_cast<void *>(x), nullptr, weight, bias, out,
                              nullptr, nullptr, nullptr, rows, cols, eps, stream);
}

extern "C" int paradec_add_norm(int kind, int dtype, void *x, const void *residual,
                                const void *weight, const void *bias, void *out, size_t rows,
                                size_t cols, float eps, paradec_stream_t stream) {
    if (!residual) return PARADEC_K_NULL_POINTER;
    return paradec_norm_fused(kind, dtype, x, residual, weight, bias, out, nullptr, nullptr,
                              nullptr, rows, cols, eps, stream);
}

extern "C" int paradec_norm2(int kind, int dtype, const void *x, const void *weight_a,
                             const void *bias_a, const void *weight_b, const void *bias_b,
                             void *out_a, void *out_b, size_t rows, size_t cols, float eps,
                             paradec_stream_t stream) {
    if (!out_b) return PARADEC_K_NULL_POINTER;
    return paradec_norm_fused(kind, dtype, const_cast<void *>(x), nullptr, weight_a, bias_a,
                              out_a, weight_b, bias_b, out_b, rows, cols, eps, stream);
}
