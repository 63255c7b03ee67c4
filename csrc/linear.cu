// Dense and quantized (GPTQ / EXL2 in paradec's device layout) linears, out (+)= x·Wᵀ + bias:
// the CUDA twins of cpu::linear::linear and quant::QuantWeight::forward.
//
// Paths (kernels/linear.h):
// - GEMV (small m): CUDA cores, f32 FMA. A lane owns 4 output columns (one 16-byte load per
//   packed word row of a 32-row tile), a block's 4 warps take interleaved tiles of its K range and
//   are summed through shared memory in warp order; K is split over gridDim.y when the columns
//   alone cannot fill the GPU, the f32 partials summed in split order by a second kernel. Codes
//   are decoded in registers (funnel shifts for widths that straddle words; float conversion by
//   the 2^23 trick) and dequantized as q·scale + (−zero·scale) in one FMA, exactly (q−zero)·scale.
// - MMA (larger m): 64×64 output tiles of 4 warps, mma.sync m16n8k16 with f32 accumulators; the
//   32-row weight tile is dequantized straight into shared memory (never the whole matrix).
// - Dense GEMV: a warp per output column, 16-byte loads along K, shuffles to finish.
// - SMALL (m ≤ 32, uniform 4-bit tiles): tensor cores with swapped operands, weights streamed
//   once (csrc/linear_small.cu).
// Act-order / EXL2 permutations and padding rows are handled by gathering x once into the
// scratch (x_g[m, kp]); the weight codes are never permuted at run time.
#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "dependent_launch.cuh"
#include "linear_gemm.cuh"
#include "mma.cuh"
#include "linear_small.cuh"
#include "linear_vendor.cuh"

namespace paradec {
namespace {

constexpr int kTile = 32;  // stored rows per tile
constexpr size_t kAlign = 256;

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// ---- decoding ----------------------------------------------------------------------------------


// ---- x gather ----------------------------------------------------------------------------------

// Also zeroes the `ncounters` split-K counters of the SMALL path (a launch saved: they must be
// zero when that kernel starts).
template <typename T>
__global__ void __launch_bounds__(256) gather_kernel(const T *x, const int32_t *row_src, T *xg,
                                                     int64_t m, int64_t k, int64_t kp,
                                                     unsigned *counters, int64_t ncounters) {
    allow_dependents();  // the multiplication that follows may be scheduled beside it
    if (blockIdx.x == 0)
        for (int64_t i = threadIdx.x; i < ncounters; i += blockDim.x) counters[i] = 0u;
    const int64_t total = m * kp;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t row = i / kp;
        const int64_t j = i - row * kp;
        const int32_t src = row_src[j];
        xg[i] = src >= 0 ? x[row * k + src] : Num<T>::from_f(0.f);
    }
}

// What the grouped launch's first kernel does for one call: gather its x (when its weight is
// permuted) and zero its split counters.
struct GroupPrep {
    const void *x;
    const int32_t *row_src;  // or null: no gather
    void *xg;
    int64_t k, kp;
    unsigned *counters;
    int64_t ncounters;
};

struct GroupPreps {
    GroupPrep call[kSmallGroupMax];
};

// A call's gather in the prep kernel: x into xg where the weight permutes its rows (none
// otherwise), its counters left for the caller; `most` grows to the largest gather.
inline GroupPrep gather_prep(const void *x, const paradec_qweight *w, void *xg, size_t m,
                             int64_t &most) {
    GroupPrep p{};
    p.x = x;
    p.row_src = w->row_src;
    p.xg = w->row_src ? xg : nullptr;
    p.k = static_cast<int64_t>(w->k);
    p.kp = static_cast<int64_t>(w->kp);
    if (w->row_src) most = std::max<int64_t>(most, static_cast<int64_t>(m * w->kp));
    return p;
}

// Block row y serves call y.
template <typename T>
__global__ void __launch_bounds__(256) group_prep_kernel(GroupPreps g, int64_t m) {
    allow_dependents();
    const GroupPrep &c = g.call[blockIdx.y];
    if (blockIdx.x == 0)
        for (int64_t i = threadIdx.x; i < c.ncounters; i += blockDim.x) c.counters[i] = 0u;
    if (!c.row_src) return;
    const T *x = static_cast<const T *>(c.x);
    T *xg = static_cast<T *>(c.xg);
    const int64_t total = m * c.kp;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t row = i / c.kp;
        const int32_t src = c.row_src[i - row * c.kp];
        xg[i] = src >= 0 ? x[row * c.k + src] : Num<T>::from_f(0.f);
    }
}

// ---- epilogue ------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void store_out(T *out, const T *bias, int64_t row, int64_t n, int64_t c,
                                          float v, bool accumulate) {
    if (bias) v += Num<T>::to_f(bias[c]);
    T *p = out + row * n + c;
    if (accumulate) v += Num<T>::to_f(*p);
    *p = Num<T>::from_f(v);
}

template <typename T>
__global__ void __launch_bounds__(256) splitk_reduce_kernel(const float *part, int split,
                                                            const T *bias, T *out, int64_t m,
                                                            int64_t n, int64_t np,
                                                            bool accumulate) {
    const int64_t total = m * n;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t row = i / n;
        const int64_t c = i - row * n;
        float s = 0.f;
        for (int p = 0; p < split; ++p) s += part[(p * m + row) * np + c];
        store_out<T>(out, bias, row, n, c, s, accumulate);
    }
}

// ---- quantized GEMV ----------------------------------------------------------------------------

struct QArgs {
    const void *x;  // [m, ldx]: x itself (ldx = k = kp) or the gathered x_g (ldx = kp)
    int64_t ldx;
    const uint32_t *words;
    const uint2 *tiles;
    const float2 *sz;
    const void *bias;
    void *out;
    float *part;  // [split, m, np] or null (then the kernel writes out)
    int64_t m, n, np;
    int ntiles, tiles_per_split;
    bool accumulate;
};

constexpr int kGemvWarps = 4;

// One tile for one lane: 4 columns × 32 rows, MT rows of x.
template <typename T, int MT, int B>
__device__ __forceinline__ void gemv_tile(const uint32_t (&wq)[4][8], const float2 (&s)[4],
                                          const T *xt, int64_t ldx, int rows,
                                          float (&acc)[MT][4]) {
#pragma unroll
    for (int r8 = 0; r8 < 4; ++r8) {
        float xv[MT][kVec];
#pragma unroll
        for (int mm = 0; mm < MT; ++mm) {
            if (mm < rows) {
                unpack8<T>(ld_ro(xt + mm * ldx + r8 * kVec), xv[mm]);
            } else {
#pragma unroll
                for (int e = 0; e < kVec; ++e) xv[mm][e] = 0.f;
            }
        }
#pragma unroll
        for (int rr = 0; rr < kVec; ++rr) {
            const int r = r8 * kVec + rr;
#pragma unroll
            for (int col = 0; col < 4; ++col) {
                const float w = fmaf(code_float(tile_code<B>(wq[col], r)), s[col].x, s[col].y);
#pragma unroll
                for (int mm = 0; mm < MT; ++mm) acc[mm][col] = fmaf(xv[mm][rr], w, acc[mm][col]);
            }
        }
    }
}

template <int B>
__device__ __forceinline__ void load_words(const uint32_t *words, int64_t np, int64_t wr,
                                           int64_t c0, uint32_t (&wq)[4][8]) {
#pragma unroll
    for (int i = 0; i < B; ++i) {
        const uint4 v = ld_ro(words + (wr + i) * np + c0);
        wq[0][i] = v.x;
        wq[1][i] = v.y;
        wq[2][i] = v.z;
        wq[3][i] = v.w;
    }
}

__device__ __forceinline__ void load_sz(const float2 *sz, int64_t np, int g, int64_t c0,
                                        float2 (&s)[4]) {
    const float4 a = __ldg(reinterpret_cast<const float4 *>(sz + g * np + c0));
    const float4 b = __ldg(reinterpret_cast<const float4 *>(sz + g * np + c0 + 2));
    s[0] = make_float2(a.x, a.y);
    s[1] = make_float2(a.z, a.w);
    s[2] = make_float2(b.x, b.y);
    s[3] = make_float2(b.z, b.w);
}

template <typename T, int MT, int B>
__device__ __forceinline__ void gemv_one(const QArgs &a, int t, int64_t c0, const T *x0, int rows,
                                         float (&acc)[MT][4]) {
    const uint2 meta = __ldg(a.tiles + t);
    uint32_t wq[4][8];
    float2 s[4];
    load_words<B>(a.words, a.np, meta.x, c0, wq);
    load_sz(a.sz, a.np, static_cast<int>(meta.y & 0xFFFFFFu), c0, s);
    gemv_tile<T, MT, B>(wq, s, x0 + static_cast<int64_t>(t) * kTile, a.ldx, rows, acc);
}

template <typename T, int MT>
__device__ __forceinline__ void gemv_mixed(const QArgs &a, int t, int64_t c0, const T *x0,
                                           int rows, float (&acc)[MT][4]) {
    const int bits = static_cast<int>(__ldg(a.tiles + t).y >> 24);
    switch (bits) {
        case 2: gemv_one<T, MT, 2>(a, t, c0, x0, rows, acc); break;
        case 3: gemv_one<T, MT, 3>(a, t, c0, x0, rows, acc); break;
        case 4: gemv_one<T, MT, 4>(a, t, c0, x0, rows, acc); break;
        case 5: gemv_one<T, MT, 5>(a, t, c0, x0, rows, acc); break;
        case 6: gemv_one<T, MT, 6>(a, t, c0, x0, rows, acc); break;
        default: gemv_one<T, MT, 8>(a, t, c0, x0, rows, acc); break;
    }
}

// BITS = 0: tiles of mixed widths (a switch per tile).
template <typename T, int MT, int BITS>
__global__ void __launch_bounds__(128) qgemv_kernel(QArgs a) {
    __shared__ float red[kGemvWarps][MT][128];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * 32 + lane) * 4;
    const bool live = c0 < a.np;
    const int64_t m0 = static_cast<int64_t>(blockIdx.z) * MT;
    const int rows = static_cast<int>((a.m - m0 < MT ? a.m - m0 : MT));
    const int t0 = blockIdx.y * a.tiles_per_split;
    const int t1 = min(a.ntiles, t0 + a.tiles_per_split);
    const T *x0 = static_cast<const T *>(a.x) + m0 * a.ldx;

    float acc[MT][4];
#pragma unroll
    for (int mm = 0; mm < MT; ++mm)
#pragma unroll
        for (int col = 0; col < 4; ++col) acc[mm][col] = 0.f;

    if (live) {
        if constexpr (BITS == 0) {
            for (int t = t0 + warp; t < t1; t += kGemvWarps) gemv_mixed<T, MT>(a, t, c0, x0, rows, acc);
        } else {
            constexpr int B = BITS == 0 ? 4 : BITS;
            int t = t0 + warp;
            // Two tiles per step: both tiles' loads are issued before either is decoded.
            for (; t + kGemvWarps < t1; t += 2 * kGemvWarps) {
                const uint2 ma = __ldg(a.tiles + t);
                const uint2 mb = __ldg(a.tiles + t + kGemvWarps);
                uint32_t wa[4][8], wb[4][8];
                float2 sa[4], sb[4];
                load_words<B>(a.words, a.np, ma.x, c0, wa);
                load_words<B>(a.words, a.np, mb.x, c0, wb);
                load_sz(a.sz, a.np, static_cast<int>(ma.y & 0xFFFFFFu), c0, sa);
                load_sz(a.sz, a.np, static_cast<int>(mb.y & 0xFFFFFFu), c0, sb);
                gemv_tile<T, MT, B>(wa, sa, x0 + static_cast<int64_t>(t) * kTile, a.ldx, rows, acc);
                gemv_tile<T, MT, B>(wb, sb, x0 + static_cast<int64_t>(t + kGemvWarps) * kTile,
                                    a.ldx, rows, acc);
            }
            if (t < t1) gemv_one<T, MT, B>(a, t, c0, x0, rows, acc);
        }
    }
#pragma unroll
    for (int mm = 0; mm < MT; ++mm)
#pragma unroll
        for (int col = 0; col < 4; ++col) red[warp][mm][lane * 4 + col] = acc[mm][col];
    __syncthreads();
    const int cl = threadIdx.x;  // 0..127: the block's column
    const int64_t c = static_cast<int64_t>(blockIdx.x) * 128 + cl;
    for (int mm = 0; mm < rows; ++mm) {
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < kGemvWarps; ++w) v += red[w][mm][cl];
        if (a.part) {
            if (c < a.np) a.part[(blockIdx.y * a.m + m0 + mm) * a.np + c] = v;
        } else if (c < a.n) {
            store_out<T>(static_cast<T *>(a.out), static_cast<const T *>(a.bias), m0 + mm, a.n, c,
                         v, a.accumulate);
        }
    }
}

// ---- dense GEMV --------------------------------------------------------------------------------

template <typename T, int MT>
__global__ void __launch_bounds__(256) dgemv_kernel(const T *x, const T *w, const T *bias, T *out,
                                                    int64_t m, int64_t k, int64_t n,
                                                    bool accumulate, bool vec) {
    const int lane = threadIdx.x & 31;
    const int64_t col = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
    if (col >= n) return;
    const int64_t m0 = static_cast<int64_t>(blockIdx.z) * MT;
    const int rows = static_cast<int>((m - m0 < MT ? m - m0 : MT));
    const T *wr = w + col * k;
    const T *xr = x + m0 * k;
    float acc[MT];
#pragma unroll
    for (int mm = 0; mm < MT; ++mm) acc[mm] = 0.f;
    if (vec) {
#pragma unroll 4
        for (int64_t kk = lane * kVec; kk < k; kk += 32 * kVec) {
            float wf[kVec];
            unpack8<T>(ld_ro(wr + kk), wf);
#pragma unroll
            for (int mm = 0; mm < MT; ++mm) {
                if (mm < rows) {
                    float xf[kVec];
                    unpack8<T>(ld_ro(xr + mm * k + kk), xf);
#pragma unroll
                    for (int e = 0; e < kVec; ++e) acc[mm] = fmaf(xf[e], wf[e], acc[mm]);
                }
            }
        }
    } else {
        for (int64_t kk = lane; kk < k; kk += 32) {
            const float wf = Num<T>::to_f(wr[kk]);
#pragma unroll
            for (int mm = 0; mm < MT; ++mm)
                if (mm < rows) acc[mm] = fmaf(Num<T>::to_f(xr[mm * k + kk]), wf, acc[mm]);
        }
    }
#pragma unroll
    for (int mm = 0; mm < MT; ++mm) acc[mm] = warp_sum(acc[mm]);
    if (lane == 0) {
        for (int mm = 0; mm < rows; ++mm) store_out<T>(out, bias, m0 + mm, n, col, acc[mm], accumulate);
    }
}

// ---- tensor-core tiles -------------------------------------------------------------------------


constexpr int kBM = 64, kBN = 64, kBK = 32, kLds = kBK + 8;  // shared row stride (elements)

struct MArgs {
    const void *x;  // [m, lda]
    int64_t lda;
    int64_t kdim;  // k (dense) or kp (quantized)
    const void *w;  // dense [n, k]
    const uint32_t *words;
    const uint2 *tiles;
    const float2 *sz;
    const void *bias;
    void *out;
    int64_t m, n, np;
    bool accumulate, vec_a, vec_w;
};

// Rows [row0, row0 + 64) × k [k0, k0 + 32) of a [rows, ld] matrix into s (zeros outside).
template <typename T>
__device__ __forceinline__ void load_tile(const T *g, int64_t ld, int64_t rows, int64_t kdim,
                                          int64_t row0, int64_t k0, bool vec, T (*s)[kLds]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int idx = threadIdx.x + i * 128;
        const int r = idx >> 2;
        const int kq = (idx & 3) * kVec;
        const int64_t gr = row0 + r;
        const int64_t gk = k0 + kq;
        if (vec && gr < rows && gk + kVec <= kdim) {
            st(&s[r][kq], ld_ro(g + gr * ld + gk));
        } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e)
                s[r][kq + e] = (gr < rows && gk + e < kdim) ? g[gr * ld + gk + e]
                                                            : Num<T>::from_f(0.f);
        }
    }
}

// Dequantizes 16 rows (h·16 ..) of one column of a B-bit tile into s[c][...].
template <typename T, int B>
__device__ __forceinline__ void dequant_col(const uint32_t *words, int64_t np, int64_t wr,
                                            int64_t gc, float2 sz, int h, T *dst) {
    uint32_t wq[8];
#pragma unroll
    for (int i = 0; i < B; ++i) wq[i] = __ldg(words + (wr + i) * np + gc);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        if (hh != h) continue;
#pragma unroll
        for (int r = 0; r < 16; r += 2) {
            const float w0 = fmaf(code_float(tile_code<B>(wq, hh * 16 + r)), sz.x, sz.y);
            const float w1 = fmaf(code_float(tile_code<B>(wq, hh * 16 + r + 1)), sz.x, sz.y);
            *reinterpret_cast<typename Num<T>::T2 *>(dst + r) =
                Num<T>::from_f2(make_float2(w0, w1));
        }
    }
}

template <typename T, int BITS>
__device__ __forceinline__ void load_qtile(const MArgs &a, int t, int64_t n0, T (*s)[kLds]) {
    const int c = threadIdx.x >> 1;
    const int h = threadIdx.x & 1;
    const int64_t gc = n0 + c;
    T *dst = &s[c][h * 16];
    if (gc >= a.np) {
#pragma unroll
        for (int r = 0; r < 16; ++r) dst[r] = Num<T>::from_f(0.f);
        return;
    }
    const uint2 meta = __ldg(a.tiles + t);
    const int g = static_cast<int>(meta.y & 0xFFFFFFu);
    const float2 sz = __ldg(a.sz + g * a.np + gc);
    const int bits = BITS ? BITS : static_cast<int>(meta.y >> 24);
    switch (bits) {
        case 2: dequant_col<T, 2>(a.words, a.np, meta.x, gc, sz, h, dst); break;
        case 3: dequant_col<T, 3>(a.words, a.np, meta.x, gc, sz, h, dst); break;
        case 4: dequant_col<T, 4>(a.words, a.np, meta.x, gc, sz, h, dst); break;
        case 5: dequant_col<T, 5>(a.words, a.np, meta.x, gc, sz, h, dst); break;
        case 6: dequant_col<T, 6>(a.words, a.np, meta.x, gc, sz, h, dst); break;
        default: dequant_col<T, 8>(a.words, a.np, meta.x, gc, sz, h, dst); break;
    }
}

// QUANT: B from the packed tiles (BITS as in qgemv_kernel); else dense w.
template <typename T, bool QUANT, int BITS>
__global__ void __launch_bounds__(128) mma_kernel(MArgs a) {
    __shared__ __align__(16) T sA[kBM][kLds];
    __shared__ __align__(16) T sB[kBN][kLds];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int g = lane >> 2, tq = lane & 3;
    const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBN;
    const T *x = static_cast<const T *>(a.x);

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    for (int64_t k0 = 0; k0 < a.kdim; k0 += kBK) {
        load_tile<T>(x, a.lda, a.m, a.kdim, m0, k0, a.vec_a, sA);
        if (QUANT) {
            load_qtile<T, BITS>(a, static_cast<int>(k0 / kTile), n0, sB);
        } else {
            load_tile<T>(static_cast<const T *>(a.w), a.kdim, a.n, a.kdim, n0, k0, a.vec_w, sB);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < kBK; ks += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = wm * 32 + i * 16 + g;
                af[i][0] = *reinterpret_cast<const uint32_t *>(&sA[r][ks + 2 * tq]);
                af[i][1] = *reinterpret_cast<const uint32_t *>(&sA[r + 8][ks + 2 * tq]);
                af[i][2] = *reinterpret_cast<const uint32_t *>(&sA[r][ks + 2 * tq + 8]);
                af[i][3] = *reinterpret_cast<const uint32_t *>(&sA[r + 8][ks + 2 * tq + 8]);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int cn = wn * 32 + j * 8 + g;
                const uint32_t b0 = *reinterpret_cast<const uint32_t *>(&sB[cn][ks + 2 * tq]);
                const uint32_t b1 = *reinterpret_cast<const uint32_t *>(&sB[cn][ks + 2 * tq + 8]);
#pragma unroll
                for (int i = 0; i < 2; ++i) mma_16816<T>(acc[i][j], af[i], b0, b1);
            }
        }
        __syncthreads();
    }
    T *out = static_cast<T *>(a.out);
    const T *bias = static_cast<const T *>(a.bias);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int64_t row = m0 + wm * 32 + i * 16 + g + (e >= 2 ? 8 : 0);
                const int64_t col = n0 + wn * 32 + j * 8 + 2 * tq + (e & 1);
                if (row < a.m && col < a.n) store_out<T>(out, bias, row, a.n, col, acc[i][j][e], a.accumulate);
            }
}

// ---- scale -------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(256) scale_kernel(T *x, int64_t n, float f) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        x[i] = Num<T>::from_f(Num<T>::to_f(x[i]) * f);
}

// ---- launch helpers ----------------------------------------------------------------------------

unsigned grid_for(int64_t work, int64_t per_block) {
    int64_t b = (work + per_block - 1) / per_block;
    if (b > (1 << 20)) b = 1 << 20;
    if (b < 1) b = 1;
    return static_cast<unsigned>(b);
}

// Launches group_prep_kernel for `count` calls whose largest gather is `most` elements (a
// block row per call); a paradec status.
template <typename T>
int launch_group_prep(const GroupPreps &preps, size_t count, int64_t most, size_t m,
                      cudaStream_t stream) {
    group_prep_kernel<T><<<dim3(grid_for(most, 256), static_cast<unsigned>(count)), 256, 0,
                           stream>>>(preps, static_cast<int64_t>(m));
    return launch_status();
}

constexpr size_t kMaxDim = size_t{1} << 31;

// The streaming GEMV up to 8 rows, the tensor-core tiles beyond: the choice where no other
// path applies.
int gemv_or_mma(size_t m) { return m <= 8 ? PARADEC_PATH_GEMV : PARADEC_PATH_MMA; }

// The path a call takes. Dense weights (w null): GEMV and MMA as asked, any other path VENDOR,
// whose launcher falls back to gemv_or_mma where the library is absent or declines the shape.
// Quantized: VENDOR is AUTO (the formats run on paradec's kernels); WGMMA as asked at any m;
// AUTO takes SMALL_LEAN where the small-M path applies (its launcher runs the ring loop where
// the lean one does not: m > 16, or x too long to stage); SMALL where it does not apply (other
// widths, m > 32) and AUTO take the GEMV up to 8 rows, WGMMA beyond (whose launcher runs MMA
// where wgmma does not apply).
int choose_path(int path, size_t m, const paradec_qweight *w) {
    if (path == PARADEC_PATH_GEMV || path == PARADEC_PATH_MMA) return path;
    if (!w) return PARADEC_PATH_VENDOR;
    if (path == PARADEC_PATH_WGMMA) return path;
    if (path == PARADEC_PATH_SMALL_STREAM && small_path_applies(w, m) && m <= kStreamMaxM)
        return PARADEC_PATH_SMALL_STREAM;
    if (small_path_applies(w, m))
        return path == PARADEC_PATH_SMALL ? PARADEC_PATH_SMALL : PARADEC_PATH_SMALL_LEAN;
    return m <= 8 ? PARADEC_PATH_GEMV : PARADEC_PATH_WGMMA;
}

// Splits that leave no split without tiles (the SMALL kernel's last-block count needs them all).
int effective_split(const paradec_qweight *w, int split) {
    return static_cast<int>(nonempty_splits(static_cast<int64_t>(w->ntiles), split));
}

// Units of the stream loop's work for one weight (column blocks × tiles).
int64_t units_of(const paradec_qweight *w) {
    return stream_units(static_cast<int64_t>(w->np), static_cast<int64_t>(w->ntiles));
}

// The split a call runs with on path p: none on MMA, WGMMA's own argument (its rows of x per
// block, or any other value for the launcher's choice), the stream loop's grid (no more blocks
// than units), else a K split without empty splits.
int path_split(int p, const paradec_qweight *w, int split) {
    if (p == PARADEC_PATH_MMA) return 1;
    if (p == PARADEC_PATH_WGMMA) return split;
    if (p == PARADEC_PATH_SMALL_STREAM)
        return static_cast<int>(std::min<int64_t>(split, units_of(w)));
    return effective_split(w, split);
}

int mt_for(size_t m) { return m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : 8; }

// The kept counters (paradec_zeroed_counters) when they are at least `need`, else null: the
// caller then zeroes counters of its own.
unsigned *kept_counters(const paradec_zeroed_counters &z, size_t need) {
    return z.counters && z.count >= need ? z.counters : nullptr;
}

// The SMALL path's split-K counters, one per column block, after its partials.
size_t counter_bytes(const paradec_qweight *w) {
    return round_up(small_col_blocks(w->np) * sizeof(unsigned), kAlign);
}

size_t gather_bytes(const paradec_qweight *w, size_t m) {
    return w->row_src ? round_up(m * w->kp * 2, kAlign) : 0;
}

// Rows of x per block the wgmma GEMM takes at m rows for the call's split argument.
int wgmma_rows_for(size_t m, int asked) {
    return asked == 32 || asked == 64 || asked == 128 || asked == 256 ? asked
                                                        : wgmma_tokens(static_cast<int64_t>(m));
}

// The wgmma GEMM's plan at m rows for the call's split argument: rows of x per block, K splits,
// and where it splits, its f32 partials then one counter per tile in the scratch.
struct WgmmaSplit {
    int tok;
    int ks;
    size_t tiles;
    size_t part_bytes;     // the partials, rounded to kAlign (the counters follow)
    size_t counter_bytes;  // rounded to kAlign
};

WgmmaSplit wgmma_split(const paradec_qweight *w, size_t m, int split) {
    WgmmaSplit p{};
    p.tok = wgmma_rows_for(m, split);
    const int64_t mm = static_cast<int64_t>(m), np = static_cast<int64_t>(w->np);
    p.ks = wgmma_ksplit(mm, static_cast<int64_t>(w->kp), np, p.tok);
    if (p.ks <= 1) return p;
    p.tiles = static_cast<size_t>(wgmma_tiles(mm, np, p.tok));
    p.part_bytes = round_up(static_cast<size_t>(p.ks) * m * w->np * 4, kAlign);
    p.counter_bytes = round_up(p.tiles * sizeof(unsigned), kAlign);
    return p;
}

// The wgmma GEMM's K split partials and tile counters (none where it does not split or run).
size_t wgmma_split_bytes(const paradec_qweight *w, size_t m, int split) {
    if (!wgmma_available() || w->bits == 0) return 0;
    const WgmmaSplit p = wgmma_split(w, m, split);
    return p.part_bytes + p.counter_bytes;
}

size_t partial_bytes(const paradec_qweight *w, size_t m, int path, int split) {
    if (path == PARADEC_PATH_WGMMA) return wgmma_split_bytes(w, m, split);
    if (path == PARADEC_PATH_SMALL_STREAM)
        return round_up(stream_slot_bytes(static_cast<size_t>(split), m), kAlign) +
               counter_bytes(w);
    if (split <= 1) return 0;
    if (path == PARADEC_PATH_GEMV) return round_up(split * m * w->np * 4, kAlign);
    if (path == PARADEC_PATH_SMALL || path == PARADEC_PATH_SMALL_LEAN)
        return round_up(split * m * w->np * 4, kAlign) + counter_bytes(w);
    return 0;
}

bool valid_bits(int b) { return b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8; }

template <typename T, int MT>
void launch_qgemv(const QArgs &a, int bits, dim3 grid, cudaStream_t stream) {
    switch (bits) {
        case 2: qgemv_kernel<T, MT, 2><<<grid, 128, 0, stream>>>(a); break;
        case 3: qgemv_kernel<T, MT, 3><<<grid, 128, 0, stream>>>(a); break;
        case 4: qgemv_kernel<T, MT, 4><<<grid, 128, 0, stream>>>(a); break;
        case 5: qgemv_kernel<T, MT, 5><<<grid, 128, 0, stream>>>(a); break;
        case 6: qgemv_kernel<T, MT, 6><<<grid, 128, 0, stream>>>(a); break;
        case 8: qgemv_kernel<T, MT, 8><<<grid, 128, 0, stream>>>(a); break;
        default: qgemv_kernel<T, MT, 0><<<grid, 128, 0, stream>>>(a); break;
    }
}

template <typename T>
void launch_qmma(const MArgs &a, int bits, dim3 grid, cudaStream_t stream) {
    switch (bits) {
        case 2: mma_kernel<T, true, 2><<<grid, 128, 0, stream>>>(a); break;
        case 3: mma_kernel<T, true, 3><<<grid, 128, 0, stream>>>(a); break;
        case 4: mma_kernel<T, true, 4><<<grid, 128, 0, stream>>>(a); break;
        case 5: mma_kernel<T, true, 5><<<grid, 128, 0, stream>>>(a); break;
        case 6: mma_kernel<T, true, 6><<<grid, 128, 0, stream>>>(a); break;
        case 8: mma_kernel<T, true, 8><<<grid, 128, 0, stream>>>(a); break;
        default: mma_kernel<T, true, 0><<<grid, 128, 0, stream>>>(a); break;
    }
}

template <typename T>
constexpr int dtype_of() {
    return std::is_same<T, __half>::value ? PARADEC_F16 : PARADEC_BF16;
}


// The small-M path's arguments that follow from the weight, m and the K split (the caller sets
// x, bias, out, partials, counters and accumulation; the launcher the lean loop's slots).
void set_small_weight(SmallArgs &a, const paradec_qweight *w, size_t m, int split) {
    a.words = w->words;
    a.tiles = w->tiles;
    a.sz = w->sz;
    a.m = static_cast<int64_t>(m);
    a.n = static_cast<int64_t>(w->n);
    a.np = static_cast<int64_t>(w->np);
    a.ntiles = static_cast<int>(w->ntiles);
    a.groups = static_cast<int>(w->groups);
    a.tiles_per_split = static_cast<int>((w->ntiles + split - 1) / split);
    a.split = split;
    a.sz_slots = 0;
    a.act = -1;
    // Tiles per group where every group could have as many (ntiles a multiple of groups).
    a.tiles_per_group = w->groups > 0 && w->ntiles % w->groups == 0
                            ? static_cast<int>(w->ntiles / w->groups)
                            : 0;
}

// The GEMMs' arguments for x · Wᵀ of a quantized weight: x itself, or its gathered copy at xg
// where the weight permutes its rows.
GemmArgs quant_gemm_args(const paradec_qweight *w, const void *x, const void *xg, size_t m,
                         const void *bias, void *out, bool accumulate) {
    const bool gathered = w->row_src != nullptr;
    return GemmArgs{gathered ? xg : x,
                    static_cast<int64_t>(gathered ? w->kp : w->k),
                    static_cast<int64_t>(w->kp),
                    nullptr,
                    w->words,
                    reinterpret_cast<const uint2 *>(w->tiles),
                    reinterpret_cast<const float2 *>(w->sz),
                    bias,
                    out,
                    static_cast<int64_t>(m),
                    static_cast<int64_t>(w->n),
                    static_cast<int64_t>(w->np),
                    accumulate};
}

template <typename T>
int quant_linear_t(const void *x, size_t m, const paradec_qweight *w, const void *bias, void *out,
                   bool accumulate, int path, int split, void *scratch,
                   const paradec_zeroed_counters &zeroed, cudaStream_t stream) {
    char *sp = static_cast<char *>(scratch);
    // The SMALL path's split-K counters follow its partials in the scratch (the stream loop's:
    // its slots).
    const bool stream_loop = path == PARADEC_PATH_SMALL_STREAM;
    const bool small = path == PARADEC_PATH_SMALL || path == PARADEC_PATH_SMALL_LEAN;
    const bool small_split = (small && split > 1) || stream_loop;
    float *part = split > 1 || stream_loop ? reinterpret_cast<float *>(sp + gather_bytes(w, m))
                                           : nullptr;
    const size_t part_bytes = stream_loop ? stream_slot_bytes(static_cast<size_t>(split), m)
                                          : static_cast<size_t>(split) * m * w->np * 4;
    unsigned *counters =
        small_split
            ? reinterpret_cast<unsigned *>(reinterpret_cast<char *>(part) +
                                           round_up(part_bytes, kAlign))
            : nullptr;
    size_t ncounters = small_split ? small_col_blocks(w->np) : 0;
    // Counters kept zero between calls need no zeroing here.
    if (unsigned *kept = ncounters > 0 ? kept_counters(zeroed, ncounters) : nullptr) {
        counters = kept;
        ncounters = 0;
    }
    const void *xa = x;
    int64_t ldx = static_cast<int64_t>(w->k);
    if (w->row_src) {
        T *xg = reinterpret_cast<T *>(sp);
        gather_kernel<T><<<grid_for(m * w->kp, 256), 256, 0, stream>>>(
            static_cast<const T *>(x), w->row_src, xg, m, w->k, w->kp, counters,
            static_cast<int64_t>(ncounters));
        const int st = launch_status();
        if (st != PARADEC_K_OK) return st;
        xa = xg;
        ldx = static_cast<int64_t>(w->kp);
    } else if (ncounters > 0) {
        const cudaError_t e =
            cudaMemsetAsync(counters, 0, ncounters * sizeof(unsigned), stream);
        if (e != cudaSuccess) return static_cast<int>(e);
    }
    if (small || stream_loop) {
        SmallArgs a;
        a.x = xa;
        a.ldx = ldx;
        set_small_weight(a, w, m, split);
        a.bias = bias;
        a.out = out;
        a.part = small_split && !stream_loop ? part : nullptr;
        a.counters = counters;
        a.accumulate = accumulate;
        if (!stream_loop)
            return launch_quant_small(dtype_of<T>(), a, path == PARADEC_PATH_SMALL_LEAN, stream);
        // The stream loop: a group of one call (its split is the grid).
        StreamGroup g{};
        g.call[0] = a;
        g.ustart[1] = units_of(w);
        g.slots = part;
        g.count = 1;
        g.chunk = stream_chunk_tiles(m);
        return launch_quant_stream(dtype_of<T>(), g, split, stream);
    }
    if (path == PARADEC_PATH_GEMV) {
        QArgs a;
        a.x = xa;
        a.ldx = ldx;
        a.words = w->words;
        a.tiles = reinterpret_cast<const uint2 *>(w->tiles);
        a.sz = reinterpret_cast<const float2 *>(w->sz);
        a.bias = bias;
        a.out = out;
        a.part = part;
        a.m = m;
        a.n = w->n;
        a.np = w->np;
        a.ntiles = static_cast<int>(w->ntiles);
        a.tiles_per_split = static_cast<int>((w->ntiles + split - 1) / split);
        a.accumulate = accumulate;
        const int mt = mt_for(m);
        const dim3 grid(static_cast<unsigned>((w->np + 127) / 128), static_cast<unsigned>(split),
                        static_cast<unsigned>((m + mt - 1) / mt));
        switch (mt) {
            case 1: launch_qgemv<T, 1>(a, w->bits, grid, stream); break;
            case 2: launch_qgemv<T, 2>(a, w->bits, grid, stream); break;
            case 4: launch_qgemv<T, 4>(a, w->bits, grid, stream); break;
            default: launch_qgemv<T, 8>(a, w->bits, grid, stream); break;
        }
        int st = launch_status();
        if (st != PARADEC_K_OK || split <= 1) return st;
        splitk_reduce_kernel<T><<<grid_for(m * w->n, 256), 256, 0, stream>>>(
            a.part, split, static_cast<const T *>(bias), static_cast<T *>(out), m, w->n, w->np,
            accumulate);
        return launch_status();
    }
    GemmArgs ga = quant_gemm_args(w, x, xa, m, bias, out, accumulate);
    if (path == PARADEC_PATH_WGMMA && wgmma_serves(ga, w->bits)) {
        // Rows of x per block: the split argument when it is 32, 64, 128 or 256 (tests and benches
        // run every tile on any shape), else wgmma_tokens' choice; K split where the tiles
        // leave SMs idle, its partials and counters after the gathered x in the scratch.
        const WgmmaSplit p = wgmma_split(w, m, split);
        if (p.ks > 1) {
            ga.ksplit = p.ks;
            ga.part = reinterpret_cast<float *>(sp + gather_bytes(w, m));
            ga.counters = kept_counters(zeroed, p.tiles);
            if (!ga.counters) {
                ga.counters = reinterpret_cast<unsigned *>(reinterpret_cast<char *>(ga.part) +
                                                           p.part_bytes);
                const cudaError_t e =
                    cudaMemsetAsync(ga.counters, 0, p.tiles * sizeof(unsigned), stream);
                if (e != cudaSuccess) return static_cast<int>(e);
            }
        }
        return launch_gemm_wgmma(dtype_of<T>(), ga, w->bits, p.tok, stream);
    }
    if (gemm_serves(ga)) return launch_gemm(dtype_of<T>(), ga, w->bits, stream);
    MArgs a;
    a.x = xa;
    a.lda = ldx;
    a.kdim = static_cast<int64_t>(w->kp);
    a.w = nullptr;
    a.words = w->words;
    a.tiles = reinterpret_cast<const uint2 *>(w->tiles);
    a.sz = reinterpret_cast<const float2 *>(w->sz);
    a.bias = bias;
    a.out = out;
    a.m = m;
    a.n = w->n;
    a.np = w->np;
    a.accumulate = accumulate;
    a.vec_a = aligned16(xa) && ldx % kVec == 0;
    a.vec_w = false;
    const dim3 grid(static_cast<unsigned>((w->n + kBN - 1) / kBN),
                    static_cast<unsigned>((m + kBM - 1) / kBM));
    launch_qmma<T>(a, w->bits, grid, stream);
    return launch_status();
}

template <typename T>
int linear_t(const void *x, size_t m, size_t k, const void *w, size_t n, const void *bias,
             void *out, bool accumulate, int path, cudaStream_t stream) {
    if (path == PARADEC_PATH_VENDOR) {
        bool ran = false;
        const int st = vendor_gemm(dtype_of<T>(), x, m, k, w, n, bias, out, accumulate, stream, &ran);
        if (st != PARADEC_K_OK || ran) return st;
        path = gemv_or_mma(m);  // absent, or the shape declined
    }
    if (path == PARADEC_PATH_GEMV) {
        const bool vec = k % kVec == 0 && aligned16(x) && aligned16(w);
        const int mt = mt_for(m);
        const dim3 grid(static_cast<unsigned>((n + 7) / 8), 1, static_cast<unsigned>((m + mt - 1) / mt));
        const T *xt = static_cast<const T *>(x);
        const T *wt = static_cast<const T *>(w);
        const T *bt = static_cast<const T *>(bias);
        T *ot = static_cast<T *>(out);
        switch (mt) {
            case 1: dgemv_kernel<T, 1><<<grid, 256, 0, stream>>>(xt, wt, bt, ot, m, k, n, accumulate, vec); break;
            case 2: dgemv_kernel<T, 2><<<grid, 256, 0, stream>>>(xt, wt, bt, ot, m, k, n, accumulate, vec); break;
            case 4: dgemv_kernel<T, 4><<<grid, 256, 0, stream>>>(xt, wt, bt, ot, m, k, n, accumulate, vec); break;
            default: dgemv_kernel<T, 8><<<grid, 256, 0, stream>>>(xt, wt, bt, ot, m, k, n, accumulate, vec); break;
        }
        return launch_status();
    }
    GemmArgs ga{x, static_cast<int64_t>(k), static_cast<int64_t>(k), w, nullptr, nullptr, nullptr,
                bias, out, static_cast<int64_t>(m), static_cast<int64_t>(n), static_cast<int64_t>(n),
                accumulate};
    if (gemm_serves(ga)) return launch_gemm(dtype_of<T>(), ga, -1, stream);
    MArgs a;
    a.x = x;
    a.lda = static_cast<int64_t>(k);
    a.kdim = static_cast<int64_t>(k);
    a.w = w;
    a.words = nullptr;
    a.tiles = nullptr;
    a.sz = nullptr;
    a.bias = bias;
    a.out = out;
    a.m = m;
    a.n = n;
    a.np = n;
    a.accumulate = accumulate;
    a.vec_a = aligned16(x) && k % kVec == 0;
    a.vec_w = aligned16(w) && k % kVec == 0;
    const dim3 grid(static_cast<unsigned>((n + kBN - 1) / kBN), static_cast<unsigned>((m + kBM - 1) / kBM));
    mma_kernel<T, false, 0><<<grid, 128, 0, stream>>>(a);
    return launch_status();
}

// Whether a group runs on the stream loop: every call asks for it and m allows it.
bool group_streams(const paradec_qlinear_call *calls, size_t count, size_t m) {
    if (m > kStreamMaxM) return false;
    for (size_t i = 0; i < count; ++i)
        if (calls[i].path != PARADEC_PATH_SMALL_STREAM) return false;
    return count > 0;
}

// A grouped call's scratch: its gathered x, then its partials and split counters (as the single
// SMALL call lays them out); on the stream loop, its gathered x and counters.
size_t group_call_bytes(const paradec_qlinear_call &c, size_t m, bool stream_loop) {
    if (stream_loop) return gather_bytes(c.w, m) + counter_bytes(c.w);
    return gather_bytes(c.w, m) +
           partial_bytes(c.w, m, PARADEC_PATH_SMALL, effective_split(c.w, c.split));
}

// The stream loop's grid for a group: the calls' largest split, no more blocks than units.
int group_stream_grid(const paradec_qlinear_call *calls, size_t count) {
    int64_t units = 0;
    int grid = 1;
    for (size_t i = 0; i < count; ++i) {
        units += units_of(calls[i].w);
        grid = std::max(grid, calls[i].split);
    }
    return static_cast<int>(std::min<int64_t>(grid, units));
}

// Whether every call of a group asks for the wgmma GEMM (quant_linear_group_wgmma_t).
bool group_wgmma(const paradec_qlinear_call *calls, size_t count) {
    for (size_t i = 0; i < count; ++i)
        if (calls[i].path != PARADEC_PATH_WGMMA) return false;
    return count > 0;
}

// The K splits of a one-grid wgmma launch's weights at m rows (wgmma_group_splits) where one
// grid may take them — m ≤ 64, at most kWgmmaGroupMax 4-bit weights; else 1 each (the calls
// then run alone at their own). `weight(i)` gives call i's weight.
template <typename F>
void one_grid_splits(size_t count, size_t m, bool summed, F weight, int *ks) {
    int64_t kdim[kWgmmaGroupMax], np[kWgmmaGroupMax];
    bool planned = m <= 64 && count <= static_cast<size_t>(kWgmmaGroupMax);
    for (size_t i = 0; planned && i < count; ++i) {
        const paradec_qweight *w = weight(i);
        kdim[i] = static_cast<int64_t>(w->kp);
        np[i] = static_cast<int64_t>(w->np);
        planned = w->bits == 4;
    }
    if (planned) {
        wgmma_group_splits(static_cast<int64_t>(m), kdim, np, static_cast<int>(count), summed, ks);
        return;
    }
    for (size_t i = 0; i < count; ++i) ks[i] = 1;
}

// A group's calls' K splits in one grid (one_grid_splits).
void group_call_splits(const paradec_qlinear_call *calls, size_t count, size_t m, int *ks) {
    one_grid_splits(count, m, false, [&](size_t i) { return calls[i].w; }, ks);
}

// Tiles of a weight's output in one grid of the grouped or summed wgmma launch at m rows
// (wgmma_small_tok's rows a tile).
size_t one_grid_tiles(const paradec_qweight *w, size_t m) {
    const int64_t mm = static_cast<int64_t>(m);
    return static_cast<size_t>(wgmma_tiles(mm, static_cast<int64_t>(w->np), wgmma_small_tok(mm)));
}

// A wgmma group call's scratch, laid out as the single call's: its gathered x, then room for
// the f32 partials of the larger of the split it takes alone and the group's `planned` one,
// then the tile counters (of the one grid's tiles or the call alone's, the more).
struct WgmmaCallScratch {
    WgmmaSplit own;     // the call alone
    size_t tiles;       // its tiles in the one grid (one counter each)
    size_t part_bytes;  // rounded to kAlign; 0 where neither split cuts K
    size_t bytes;       // all of it
};

WgmmaCallScratch wgmma_call_scratch(const paradec_qlinear_call &c, size_t m, int planned) {
    WgmmaCallScratch s{};
    s.own = wgmma_split(c.w, m, c.split);
    s.tiles = one_grid_tiles(c.w, m);
    const size_t most = static_cast<size_t>(std::max(s.own.ks, planned));
    s.bytes = gather_bytes(c.w, m);
    if (wgmma_available() && c.w->bits != 0 && most > 1) {
        s.part_bytes = round_up(most * m * c.w->np * 4, kAlign);
        s.bytes += s.part_bytes + round_up(std::max(s.tiles, s.own.tiles) * sizeof(unsigned), kAlign);
    }
    return s;
}

// A group's scratch: every call's, then the stream loop's slots.
size_t group_bytes(const paradec_qlinear_call *calls, size_t count, size_t m) {
    if (group_wgmma(calls, count)) {
        int ks[kWgmmaGroupMax];
        group_call_splits(calls, count, m, ks);
        size_t total = 0;
        for (size_t i = 0; i < count; ++i) total += wgmma_call_scratch(calls[i], m, ks[i]).bytes;
        return total;
    }
    const bool stream_loop = group_streams(calls, count, m);
    size_t total = 0;
    for (size_t i = 0; i < count; ++i) total += group_call_bytes(calls[i], m, stream_loop);
    if (stream_loop)
        total += round_up(stream_slot_bytes(static_cast<size_t>(group_stream_grid(calls, count)), m),
                          kAlign);
    return total;
}

template <typename T>
int quant_linear_group_t(size_t m, const paradec_qlinear_call *calls, size_t count,
                         void *scratch, const paradec_zeroed_counters &zeroed,
                         cudaStream_t stream) {
    GroupPreps preps{};
    SmallGroup g{};
    StreamGroup sg{};
    const bool stream_loop = group_streams(calls, count, m);
    char *sp = static_cast<char *>(scratch);
    bool prep = false;
    int64_t most = 0;  // the largest gather
    int blocks = 0;
    // The calls' split counters from the zeroed set, consecutive, when it holds them all.
    size_t want = 0;
    for (size_t i = 0; i < count; ++i)
        if (calls[i].split > 1 || stream_loop) want += small_col_blocks(calls[i].w->np);
    unsigned *kept = kept_counters(zeroed, want);
    for (size_t i = 0; i < count; ++i) {
        const paradec_qlinear_call &c = calls[i];
        const paradec_qweight *w = c.w;
        char *base = sp;
        sp += group_call_bytes(c, m, stream_loop);
        const bool split = c.split > 1 || stream_loop;
        float *part = split && !stream_loop ? reinterpret_cast<float *>(base + gather_bytes(w, m))
                                            : nullptr;
        unsigned *counters =
            stream_loop ? reinterpret_cast<unsigned *>(base + gather_bytes(w, m))
            : split     ? reinterpret_cast<unsigned *>(reinterpret_cast<char *>(part) +
                                                       round_up(c.split * m * w->np * 4, kAlign))
                        : nullptr;
        if (split && kept) {
            counters = kept;
            kept += small_col_blocks(w->np);
        }
        GroupPrep &p = preps.call[i];
        p = gather_prep(c.x, w, base, m, most);
        p.counters = counters;
        p.ncounters = split && !kept ? static_cast<int64_t>(small_col_blocks(w->np)) : 0;
        prep = prep || w->row_src || p.ncounters > 0;
        SmallArgs &a = g.call[i];
        a.x = w->row_src ? static_cast<const void *>(base) : c.x;
        a.ldx = static_cast<int64_t>(w->row_src ? w->kp : w->k);
        set_small_weight(a, w, m, c.split);
        a.bias = c.bias;
        a.out = c.out;
        a.part = part;
        a.counters = counters;
        a.accumulate = c.accumulate != 0;
        a.act = c.act - 1;
        g.lean = (i == 0 || g.lean) && c.path != PARADEC_PATH_SMALL;
        g.first[i] = blocks;
        blocks += static_cast<int>(small_col_blocks(w->np));
        sg.call[i] = a;  // part is null on the stream loop
        sg.ustart[i + 1] = sg.ustart[i] + units_of(w);
    }
    g.first[count] = blocks;
    g.count = static_cast<int>(count);
    if (prep) {
        const int st = launch_group_prep<T>(preps, count, most, m, stream);
        if (st != PARADEC_K_OK) return st;
    }
    if (stream_loop) {
        sg.slots = reinterpret_cast<float *>(sp);  // after every call's scratch
        sg.count = static_cast<int>(count);
        sg.chunk = stream_chunk_tiles(m);
        return launch_quant_stream(dtype_of<T>(), sg, group_stream_grid(calls, count), stream);
    }
    return launch_quant_small_group(dtype_of<T>(), g, stream);
}

static_assert(kWgmmaGroupMax == PARADEC_LINEAR_GROUP_MAX && kSmallGroupMax == PARADEC_LINEAR_GROUP_MAX,
              "a group's calls fit every launcher's table");

// A group of calls on the wgmma GEMM, each result as quant_linear_t(…, PARADEC_PATH_WGMMA,
// call.split, …) gives it within rounding: one launch that gathers permuted x and zeroes split
// counters for every call, then one grid of every call's blocks (launch_gemm_wgmma_group: each
// call's own tiles, and the K splits group_call_splits plans for the grid, summed in split
// order — deterministic, and the call alone's bits where the plan keeps its own split). Where
// that kernel does not take the group — more than 64 rows, a width other than 4 bits, a call
// the wgmma GEMM does not serve (no sm_90a code or device, unaligned x) — each call runs alone,
// one after the other, in its own scratch.
template <typename T>
int quant_linear_group_wgmma_t(size_t m, const paradec_qlinear_call *calls, size_t count,
                               void *scratch, const paradec_zeroed_counters &zeroed,
                               cudaStream_t stream) {
    GemmArgs ga[kWgmmaGroupMax];
    int ks[kWgmmaGroupMax];  // each call's K split in the one grid
    WgmmaCallScratch cs[kWgmmaGroupMax];
    char *base[kWgmmaGroupMax];
    char *sp = static_cast<char *>(scratch);
    bool grouped = m <= 64;
    size_t tiles = 0;  // split counters of every call that splits K
    const int tok = wgmma_small_tok(static_cast<int64_t>(m));  // the one grid's tile
    group_call_splits(calls, count, m, ks);
    for (size_t i = 0; i < count; ++i) {
        const paradec_qlinear_call &c = calls[i];
        const paradec_qweight *w = c.w;
        cs[i] = wgmma_call_scratch(c, m, ks[i]);
        base[i] = sp;
        sp += cs[i].bytes;
        ga[i] = quant_gemm_args(w, c.x, base[i], m, c.bias, c.out, c.accumulate != 0);
        grouped = grouped && w->bits == 4 && cs[i].own.tok == tok && wgmma_serves(ga[i], w->bits);
        if (ks[i] > 1) tiles += cs[i].tiles;
    }
    if (!grouped) {
        for (size_t i = 0; i < count; ++i) {
            const paradec_qlinear_call &c = calls[i];
            const int st = quant_linear_t<T>(c.x, m, c.w, c.bias, c.out, c.accumulate != 0,
                                             PARADEC_PATH_WGMMA, c.split, base[i], zeroed, stream);
            if (st != PARADEC_K_OK) return st;
        }
        return PARADEC_K_OK;
    }
    GroupPreps preps{};
    bool prep = false;
    int64_t most = 0;  // the largest gather
    unsigned *kept = kept_counters(zeroed, tiles);
    for (size_t i = 0; i < count; ++i) {
        const paradec_qweight *w = calls[i].w;
        GroupPrep &p = preps.call[i];
        p = gather_prep(calls[i].x, w, base[i], m, most);
        if (ks[i] > 1) {
            ga[i].ksplit = ks[i];
            ga[i].part = reinterpret_cast<float *>(base[i] + gather_bytes(w, m));
            if (kept) {
                ga[i].counters = kept;
                kept += cs[i].tiles;
            } else {
                ga[i].counters = reinterpret_cast<unsigned *>(
                    reinterpret_cast<char *>(ga[i].part) + cs[i].part_bytes);
                p.counters = ga[i].counters;
                p.ncounters = static_cast<int64_t>(cs[i].tiles);
            }
        }
        prep = prep || w->row_src || p.ncounters > 0;
    }
    if (prep) {
        const int st = launch_group_prep<T>(preps, count, most, m, stream);
        if (st != PARADEC_K_OK) return st;
    }
    return launch_gemm_wgmma_group(dtype_of<T>(), ga, static_cast<int>(count), stream);
}

// A sum's scratch: every term's gathered x, then the partials of every term's splits (one set),
// then the column blocks' counters.
size_t sum_bytes(const paradec_qlinear_term *terms, size_t count, size_t m) {
    size_t total = 0, splits = 0;
    for (size_t i = 0; i < count; ++i) {
        total += gather_bytes(terms[i].w, m);
        splits += static_cast<size_t>(terms[i].split);
    }
    return total + round_up(splits * m * terms[0].w->np * 4, kAlign) + counter_bytes(terms[0].w);
}

// A sum's terms' K splits in one grid (one_grid_splits).
void sum_term_splits(const paradec_qlinear_term *terms, size_t count, size_t m, int *ks) {
    one_grid_splits(count, m, true, [&](size_t i) { return terms[i].w; }, ks);
}

// A wgmma sum's scratch: every term's gathered x, then the f32 partials of every term's K
// splits (the more of the planned ones, sum_term_splits, and those the terms take alone at
// wgmma_small_tok's tiles), then one counter per tile. At least what each term run alone on
// the wgmma path needs (the sum's fallback).
size_t wgmma_sum_bytes(const paradec_qlinear_term *terms, size_t count, size_t m) {
    size_t total = 0;
    int64_t own = 0, planned = 0;
    const int64_t mm = static_cast<int64_t>(m), np = static_cast<int64_t>(terms[0].w->np);
    int ks[kWgmmaGroupMax];
    sum_term_splits(terms, count, m, ks);
    for (size_t i = 0; i < count; ++i) {
        total += gather_bytes(terms[i].w, m);
        own += wgmma_split(terms[i].w, m, wgmma_small_tok(mm)).ks;
        planned += ks[i];
    }
    const size_t slots = static_cast<size_t>(std::max(own, planned));
    return total + round_up(slots * m * static_cast<size_t>(np) * 4, kAlign) +
           round_up(one_grid_tiles(terms[0].w, m) * sizeof(unsigned), kAlign);
}

// out (+)= Σ x_i · W_iᵀ + bias on the wgmma GEMM: one launch that gathers permuted x (and zeroes
// the tile counters without kept ones), then one grid of every term's 32- or 64-row tiles
// (wgmma_small_tok) and K splits whose partials the last block of each tile sums in (term,
// split) order (launch_gemm_wgmma_sum). Where that kernel does not take the terms (as
// quant_linear_group_wgmma_t), each term runs alone on the wgmma path, accumulating into out
// one after the other (the first adds bias): the same sum within rounding.
template <typename T>
int quant_linear_sum_wgmma_t(size_t m, const paradec_qlinear_term *terms, size_t count,
                             const void *bias, void *out, bool accumulate, void *scratch,
                             const paradec_zeroed_counters &zeroed, cudaStream_t stream) {
    GemmArgs ga[kWgmmaGroupMax];
    char *sp = static_cast<char *>(scratch);
    bool grouped = m <= 64;
    int64_t slots = 0;
    int ks[kWgmmaGroupMax];
    sum_term_splits(terms, count, m, ks);
    for (size_t i = 0; i < count; ++i) {
        const paradec_qweight *w = terms[i].w;
        ga[i] = quant_gemm_args(w, terms[i].x, sp, m, bias, out, accumulate);
        sp += gather_bytes(w, m);
        ga[i].ksplit = ks[i];
        slots += ga[i].ksplit;
        grouped = grouped && w->bits == 4 && wgmma_serves(ga[i], w->bits);
    }
    if (!grouped) {
        for (size_t i = 0; i < count; ++i) {
            const int st = quant_linear_t<T>(terms[i].x, m, terms[i].w, i == 0 ? bias : nullptr,
                                             out, i == 0 ? accumulate : true, PARADEC_PATH_WGMMA,
                                             1, scratch, zeroed, stream);
            if (st != PARADEC_K_OK) return st;
        }
        return PARADEC_K_OK;
    }
    const size_t np = terms[0].w->np;
    float *part = reinterpret_cast<float *>(sp);
    const size_t tiles = one_grid_tiles(terms[0].w, m);
    unsigned *counters = slots > 1 ? kept_counters(zeroed, tiles) : nullptr;
    const bool zero_counters = slots > 1 && !counters;
    if (zero_counters)
        counters = reinterpret_cast<unsigned *>(
            reinterpret_cast<char *>(part) +
            round_up(static_cast<size_t>(slots) * m * np * 4, kAlign));
    GroupPreps preps{};
    bool prep = zero_counters;
    int64_t most = 0;  // the largest gather
    for (size_t i = 0; i < count; ++i) {
        const paradec_qweight *w = terms[i].w;
        GroupPrep &p = preps.call[i];
        p = gather_prep(terms[i].x, w, const_cast<void *>(ga[i].a), m, most);
        p.counters = counters;
        p.ncounters = i == 0 && zero_counters ? static_cast<int64_t>(tiles) : 0;
        prep = prep || w->row_src;
    }
    if (prep) {
        const int st = launch_group_prep<T>(preps, count, most, m, stream);
        if (st != PARADEC_K_OK) return st;
    }
    return launch_gemm_wgmma_sum(dtype_of<T>(), ga, static_cast<int>(count), part, counters,
                                 stream);
}

template <typename T>
int quant_linear_sum_t(size_t m, const paradec_qlinear_term *terms, size_t count, const void *bias,
                       void *out, bool accumulate, bool lean, void *scratch,
                       const paradec_zeroed_counters &zeroed, cudaStream_t stream) {
    GroupPreps preps{};
    SmallGroup g{};
    char *sp = static_cast<char *>(scratch);
    int splits = 0;
    int64_t most = 0;  // the largest gather
    size_t gathers = 0;
    for (size_t i = 0; i < count; ++i) {
        splits += terms[i].split;
        gathers += gather_bytes(terms[i].w, m);
    }
    const paradec_qweight *w0 = terms[0].w;
    float *part = reinterpret_cast<float *>(sp + gathers);
    const size_t ncounters = small_col_blocks(w0->np);
    unsigned *counters = kept_counters(zeroed, ncounters);
    const bool zero_counters = counters == nullptr;
    if (zero_counters)
        counters = reinterpret_cast<unsigned *>(
            reinterpret_cast<char *>(part) +
            round_up(static_cast<size_t>(splits) * m * w0->np * 4, kAlign));
    bool prep = zero_counters;
    int first = 0;
    for (size_t i = 0; i < count; ++i) {
        const paradec_qweight *w = terms[i].w;
        GroupPrep &p = preps.call[i];
        p = gather_prep(terms[i].x, w, sp, m, most);
        p.counters = counters;
        p.ncounters = i == 0 && zero_counters ? static_cast<int64_t>(ncounters) : 0;
        prep = prep || w->row_src;
        SmallArgs &a = g.call[i];
        a.x = w->row_src ? static_cast<const void *>(sp) : terms[i].x;
        a.ldx = static_cast<int64_t>(w->row_src ? w->kp : w->k);
        set_small_weight(a, w, m, terms[i].split);
        a.split = splits;  // the sum's: every term's blocks count toward one store
        a.bias = bias;
        a.out = out;
        a.part = part;
        a.counters = counters;
        a.accumulate = accumulate;
        g.first[i] = first;
        first += terms[i].split;
        sp += gather_bytes(w, m);
    }
    g.first[count] = first;
    g.count = static_cast<int>(count);
    g.lean = lean;
    if (prep) {
        const int st = launch_group_prep<T>(preps, count, most, m, stream);
        if (st != PARADEC_K_OK) return st;
    }
    return launch_quant_small_sum(dtype_of<T>(), g, stream);
}

int check_qweight(const paradec_qweight *w) {
    if (!w->words || !w->tiles || !w->sz) return PARADEC_K_NULL_POINTER;
    if (w->k == 0 || w->n == 0 || w->ntiles == 0 || w->groups == 0 || w->word_rows == 0)
        return PARADEC_K_ZERO_DIM;
    if (w->k > kMaxDim || w->n > kMaxDim || w->kp > kMaxDim || w->groups > (1u << 24) ||
        w->word_rows > kMaxDim)
        return PARADEC_K_DIM_TOO_LARGE;
    if (w->np % 8 != 0 || w->np < w->n || w->np > w->n + 7) return PARADEC_K_BAD_SHAPE;
    if (w->kp != w->ntiles * kTile || w->kp < w->k) return PARADEC_K_BAD_SHAPE;
    if (!w->row_src && w->kp != w->k) return PARADEC_K_BAD_SHAPE;
    if (w->bits != 0 && !valid_bits(w->bits)) return PARADEC_K_BAD_SHAPE;
    if (!aligned16(w->words) || !aligned16(w->sz)) return PARADEC_K_BAD_SHAPE;
    return PARADEC_K_OK;
}

}  // namespace
}  // namespace paradec

extern "C" size_t paradec_quant_linear_scratch(int dtype, const paradec_qweight *w, size_t m,
                                               int path, int split) {
    (void)dtype;
    if (!w || split < 1 || w->ntiles == 0) return 0;
    const int p = paradec::choose_path(path, m, w);
    return paradec::gather_bytes(w, m) +
           paradec::partial_bytes(w, m, p, paradec::path_split(p, w, split));
}

extern "C" int paradec_quant_linear(int dtype, const void *x, size_t m, const paradec_qweight *w,
                                    const void *bias, void *out, int accumulate, int path,
                                    int split, void *scratch, size_t scratch_bytes,
                                    const paradec_zeroed_counters *zeroed,
                                    paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!x || !w || !out) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (path < PARADEC_PATH_AUTO || path > PARADEC_PATH_SMALL_STREAM) return PARADEC_K_BAD_ENUM;
        if (m == 0) return PARADEC_K_ZERO_DIM;
        const paradec_zeroed_counters kept = zeroed ? *zeroed : paradec_zeroed_counters{};
        if (m > paradec::kMaxDim) return PARADEC_K_DIM_TOO_LARGE;
        if (split < 1 || split > 1024) return PARADEC_K_BAD_SHAPE;
        const int st = paradec::check_qweight(w);
        if (st != PARADEC_K_OK) return st;
        const int p = paradec::choose_path(path, m, w);
        const int sp = paradec::path_split(p, w, split);
        const size_t need = paradec::gather_bytes(w, m) + paradec::partial_bytes(w, m, p, sp);
        if (need > 0 && (!scratch || scratch_bytes < need)) return PARADEC_K_BAD_SHAPE;
        if (need > 0 && (reinterpret_cast<uintptr_t>(scratch) & 255u)) return PARADEC_K_BAD_SHAPE;
        // The GEMV and SMALL paths read x (or x_g) in 16-byte vectors of 32-row tiles.
        if (!w->row_src && (w->k % 32 != 0 || !paradec::aligned16(x))) {
            if (p == PARADEC_PATH_GEMV || p == PARADEC_PATH_SMALL || p == PARADEC_PATH_SMALL_LEAN ||
                p == PARADEC_PATH_SMALL_STREAM)
                return PARADEC_K_BAD_SHAPE;
        }
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::quant_linear_t<decltype(tag)>(x, m, w, bias, out, accumulate != 0, p,
                                                          sp, scratch, kept, stream);
        });
    });
}

extern "C" size_t paradec_quant_linear_group_scratch(int dtype, size_t m,
                                                     const paradec_qlinear_call *calls,
                                                     size_t count) {
    (void)dtype;
    if (!calls || count > PARADEC_LINEAR_GROUP_MAX) return 0;
    for (size_t i = 0; i < count; ++i)
        if (!calls[i].w || calls[i].w->ntiles == 0 || calls[i].split < 1) return 0;
    return paradec::group_bytes(calls, count, m);
}

extern "C" int paradec_quant_linear_group(int dtype, size_t m, const paradec_qlinear_call *calls,
                                          size_t count, void *scratch, size_t scratch_bytes,
                                          const paradec_zeroed_counters *zeroed,
                                          paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!calls) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (count == 0 || m == 0) return PARADEC_K_ZERO_DIM;
        if (count > PARADEC_LINEAR_GROUP_MAX) return PARADEC_K_BAD_SHAPE;
        if (paradec::group_wgmma(calls, count)) {
            // Every call on the wgmma GEMM: as paradec_quant_linear would take each.
            if (m > paradec::kMaxDim) return PARADEC_K_DIM_TOO_LARGE;
            for (size_t i = 0; i < count; ++i) {
                const paradec_qlinear_call &c = calls[i];
                if (!c.x || !c.w || !c.out) return PARADEC_K_NULL_POINTER;
                const int st = paradec::check_qweight(c.w);
                if (st != PARADEC_K_OK) return st;
                if (c.split < 1 || c.split > 1024) return PARADEC_K_BAD_SHAPE;
                if (c.act != 0) return PARADEC_K_BAD_ENUM;  // no activation in its store
            }
            const size_t need = paradec::group_bytes(calls, count, m);
            if (need > 0 && (!scratch || scratch_bytes < need)) return PARADEC_K_BAD_SHAPE;
            if (need > 0 && (reinterpret_cast<uintptr_t>(scratch) & 255u)) return PARADEC_K_BAD_SHAPE;
            return paradec::dispatch_dtype(dtype, [&](auto tag) {
                const paradec_zeroed_counters kept = zeroed ? *zeroed : paradec_zeroed_counters{};
                return paradec::quant_linear_group_wgmma_t<decltype(tag)>(m, calls, count,
                                                                          scratch, kept, stream);
            });
        }
        if (m > paradec::kSmallMaxM) return PARADEC_K_BAD_SHAPE;
        for (size_t i = 0; i < count; ++i) {
            const paradec_qlinear_call &c = calls[i];
            if (!c.x || !c.w || !c.out) return PARADEC_K_NULL_POINTER;
            const int st = paradec::check_qweight(c.w);
            if (st != PARADEC_K_OK) return st;
            if (!paradec::small_path_applies(c.w, m)) return PARADEC_K_BAD_SHAPE;
            if (c.split < 1 || c.split > 1024) return PARADEC_K_BAD_SHAPE;
            if (c.path != PARADEC_PATH_AUTO && c.path != PARADEC_PATH_SMALL &&
                c.path != PARADEC_PATH_SMALL_LEAN && c.path != PARADEC_PATH_SMALL_STREAM)
                return PARADEC_K_BAD_ENUM;
            if (c.act < 0 || c.act > PARADEC_RELU + 1) return PARADEC_K_BAD_ENUM;
            // x (or x_g) is read in 16-byte vectors of 32-row tiles.
            if (!c.w->row_src && (c.w->k % 32 != 0 || !paradec::aligned16(c.x)))
                return PARADEC_K_BAD_SHAPE;
        }
        const size_t need = paradec::group_bytes(calls, count, m);
        if (need > 0 && (!scratch || scratch_bytes < need)) return PARADEC_K_BAD_SHAPE;
        if (need > 0 && (reinterpret_cast<uintptr_t>(scratch) & 255u)) return PARADEC_K_BAD_SHAPE;
        // The splits the kernel really takes (no empty split), as the single call does.
        // (The stream loop's split is its grid, kept as asked.)
        paradec_qlinear_call norm[PARADEC_LINEAR_GROUP_MAX];
        const bool stream_loop = paradec::group_streams(calls, count, m);
        for (size_t i = 0; i < count; ++i) {
            norm[i] = calls[i];
            if (!stream_loop)
                norm[i].split = paradec::effective_split(calls[i].w, calls[i].split);
        }
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            const paradec_zeroed_counters kept = zeroed ? *zeroed : paradec_zeroed_counters{};
            return paradec::quant_linear_group_t<decltype(tag)>(m, norm, count, scratch, kept,
                                                                stream);
        });
    });
}

extern "C" size_t paradec_quant_linear_sum_scratch(int dtype, size_t m,
                                                   const paradec_qlinear_term *terms,
                                                   size_t count) {
    (void)dtype;
    if (!terms || count == 0 || count > PARADEC_LINEAR_GROUP_MAX) return 0;
    paradec_qlinear_term norm[PARADEC_LINEAR_GROUP_MAX];
    for (size_t i = 0; i < count; ++i) {
        if (!terms[i].w || terms[i].w->ntiles == 0 || terms[i].split < 1) return 0;
        norm[i] = terms[i];
        norm[i].split = paradec::effective_split(terms[i].w, terms[i].split);
    }
    // Enough for either path (the wgmma one's splits are its own, not the terms').
    return std::max(paradec::sum_bytes(norm, count, m), paradec::wgmma_sum_bytes(norm, count, m));
}

extern "C" int paradec_quant_linear_sum(int dtype, size_t m, const paradec_qlinear_term *terms,
                                        size_t count, const void *bias, void *out, int accumulate,
                                        int path, void *scratch, size_t scratch_bytes,
                                        const paradec_zeroed_counters *zeroed,
                                        paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!terms || !out) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (path != PARADEC_PATH_AUTO && path != PARADEC_PATH_SMALL &&
            path != PARADEC_PATH_SMALL_LEAN && path != PARADEC_PATH_WGMMA)
            return PARADEC_K_BAD_ENUM;
        if (count == 0 || m == 0) return PARADEC_K_ZERO_DIM;
        if (count > PARADEC_LINEAR_GROUP_MAX) return PARADEC_K_BAD_SHAPE;
        if (path == PARADEC_PATH_WGMMA) {
            if (m > paradec::kMaxDim) return PARADEC_K_DIM_TOO_LARGE;
            for (size_t i = 0; i < count; ++i) {
                const paradec_qlinear_term &t = terms[i];
                if (!t.x || !t.w) return PARADEC_K_NULL_POINTER;
                const int st = paradec::check_qweight(t.w);
                if (st != PARADEC_K_OK) return st;
                if (t.w->n != terms[0].w->n || t.w->np != terms[0].w->np) return PARADEC_K_BAD_SHAPE;
            }
            const size_t need = paradec::wgmma_sum_bytes(terms, count, m);
            if (!scratch || scratch_bytes < need) return PARADEC_K_BAD_SHAPE;
            if (reinterpret_cast<uintptr_t>(scratch) & 255u) return PARADEC_K_BAD_SHAPE;
            return paradec::dispatch_dtype(dtype, [&](auto tag) {
                const paradec_zeroed_counters kept = zeroed ? *zeroed : paradec_zeroed_counters{};
                return paradec::quant_linear_sum_wgmma_t<decltype(tag)>(
                    m, terms, count, bias, out, accumulate != 0, scratch, kept, stream);
            });
        }
        if (m > paradec::kSmallMaxM) return PARADEC_K_BAD_SHAPE;
        paradec_qlinear_term norm[PARADEC_LINEAR_GROUP_MAX];
        int64_t splits = 0;
        for (size_t i = 0; i < count; ++i) {
            const paradec_qlinear_term &t = terms[i];
            if (!t.x || !t.w) return PARADEC_K_NULL_POINTER;
            const int st = paradec::check_qweight(t.w);
            if (st != PARADEC_K_OK) return st;
            if (!paradec::small_path_applies(t.w, m)) return PARADEC_K_BAD_SHAPE;
            // One output: every term's n (and so its padded width) is the first's.
            if (t.w->n != terms[0].w->n || t.w->np != terms[0].w->np) return PARADEC_K_BAD_SHAPE;
            if (t.split < 1 || t.split > 1024) return PARADEC_K_BAD_SHAPE;
            // x (or x_g) is read in 16-byte vectors of 32-row tiles.
            if (!t.w->row_src && (t.w->k % 32 != 0 || !paradec::aligned16(t.x)))
                return PARADEC_K_BAD_SHAPE;
            norm[i] = t;
            // The splits the kernel really takes (no empty split).
            norm[i].split = paradec::effective_split(t.w, t.split);
            splits += norm[i].split;
        }
        if (splits > 4096) return PARADEC_K_BAD_SHAPE;
        const size_t need = paradec::sum_bytes(norm, count, m);
        if (!scratch || scratch_bytes < need) return PARADEC_K_BAD_SHAPE;
        if (reinterpret_cast<uintptr_t>(scratch) & 255u) return PARADEC_K_BAD_SHAPE;
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            const paradec_zeroed_counters kept = zeroed ? *zeroed : paradec_zeroed_counters{};
            return paradec::quant_linear_sum_t<decltype(tag)>(
                m, norm, count, bias, out, accumulate != 0, path != PARADEC_PATH_SMALL, scratch,
                kept, stream);
        });
    });
}

extern "C" int paradec_linear(int dtype, const void *x, size_t m, size_t k, const void *w,
                              size_t n, const void *bias, void *out, int accumulate, int path,
                              paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!x || !w || !out) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (path < PARADEC_PATH_AUTO || path > PARADEC_PATH_WGMMA) return PARADEC_K_BAD_ENUM;
        if (m == 0 || k == 0 || n == 0) return PARADEC_K_ZERO_DIM;
        if (m > paradec::kMaxDim || k > paradec::kMaxDim || n > paradec::kMaxDim)
            return PARADEC_K_DIM_TOO_LARGE;
        const int p = paradec::choose_path(path, m, nullptr);
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::linear_t<decltype(tag)>(x, m, k, w, n, bias, out, accumulate != 0, p,
                                                    stream);
        });
    });
}

extern "C" int paradec_vendor_gemm_available(void) {
    try {
        return paradec::vendor_gemm_available() ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" int paradec_wgmma_available(void) {
    try {
        return paradec::wgmma_available() ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" int paradec_wgmma_built(void) {
#ifdef PARADEC_SM90A_IMAGE
    return 1;
#else
    return 0;
#endif
}

extern "C" int paradec_scale_inplace(int dtype, void *x, size_t n, float factor,
                                     paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!x) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (n == 0) return PARADEC_K_ZERO_DIM;
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            using T = decltype(tag);
            paradec::scale_kernel<T><<<paradec::grid_for(static_cast<int64_t>(n), 256), 256, 0,
                                       stream>>>(static_cast<T *>(x), static_cast<int64_t>(n),
                                                 factor);
            return paradec::launch_status();
        });
    });
}

namespace paradec {
namespace {
// Read-only reduction (for measuring read bandwidth): XOR of 16-byte words, one per block.
__global__ void __launch_bounds__(256) read_kernel(const uint4 *p, size_t n, uint32_t *out) {
    uint32_t acc = 0;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const uint4 v = __ldg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) atomicXor(out + blockIdx.x, acc);
}

// The small-M lean loop's weight reads alone, without its decoding or products (for telling
// how much of a linear's time its access pattern costs): block (bx, by) of 128 threads reads
// tiles by·tps … of column block bx, 16 bytes a lane per tile, two batches of 4 tiles in
// flight, as qmma_lean_kernel does. ROWS: the prepared layout (tile t's word rows 4t … 4t + 3,
// each np words, a lane's 4 columns from c0); else each column block's tiles lie contiguously
// (2 KiB a tile), the layout a transform at load could give.
template <bool ROWS>
__global__ void __launch_bounds__(128, 5) tile_read_kernel(const uint32_t *w, int64_t np,
                                                           int ntiles, int tps, uint32_t *out) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int t0 = static_cast<int>(blockIdx.y) * tps;
    const int count = min(ntiles, t0 + tps) - t0;
    // The launcher takes np a multiple of 128: every lane's columns are inside it.
    const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 128 + warp * 32 + 4 * (lane >> 2);
    const uint32_t *const base =
        ROWS ? w + (4 * static_cast<int64_t>(t0) + (lane & 3)) * np + c0
             : w + (static_cast<int64_t>(blockIdx.x) * ntiles + t0) * 512 + threadIdx.x * 4;
    const int64_t step = ROWS ? 4 * np : 512;
    uint32_t acc = 0;
    auto load = [&](uint4 (&v)[4], int first) {
#pragma unroll
        for (int j = 0; j < 4; ++j)
            v[j] = first + j < count ? ld_stream(base + (first + j) * step)
                                     : make_uint4(0u, 0u, 0u, 0u);
    };
    auto fold = [&](const uint4 (&v)[4]) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
    };
    uint4 a[4], b[4];
    load(a, 0);
    for (int done = 0;;) {
        load(b, done + 4);
        fold(a);
        if ((done += 4) >= count) break;
        load(a, done + 4);
        fold(b);
        if ((done += 4) >= count) break;
    }
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) atomicXor(out + blockIdx.y * gridDim.x + blockIdx.x, acc);
}
}  // namespace
}  // namespace paradec

extern "C" int paradec_read_tiles(const void *words, size_t np, size_t ntiles,
                                  size_t tiles_per_split, int rows_layout, void *out,
                                  paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!words || !out) return PARADEC_K_NULL_POINTER;
        if (np == 0 || ntiles == 0 || tiles_per_split == 0) return PARADEC_K_ZERO_DIM;
        if (np % 128 != 0 || !paradec::aligned16(words)) return PARADEC_K_BAD_SHAPE;
        if (np > (size_t{1} << 24) || ntiles > (size_t{1} << 20)) return PARADEC_K_DIM_TOO_LARGE;
        const size_t splits = (ntiles + tiles_per_split - 1) / tiles_per_split;
        if (splits > 65535) return PARADEC_K_DIM_TOO_LARGE;
        const dim3 grid(static_cast<unsigned>(np / 128), static_cast<unsigned>(splits));
        const auto *w = static_cast<const uint32_t *>(words);
        auto *o = static_cast<uint32_t *>(out);
        const auto n = static_cast<int64_t>(np);
        const int t = static_cast<int>(ntiles), tps = static_cast<int>(tiles_per_split);
        if (rows_layout)
            paradec::tile_read_kernel<true><<<grid, 128, 0, stream>>>(w, n, t, tps, o);
        else
            paradec::tile_read_kernel<false><<<grid, 128, 0, stream>>>(w, n, t, tps, o);
        return paradec::launch_status();
    });
}

extern "C" int paradec_read_bytes(const void *p, size_t bytes, void *out, unsigned blocks,
                                  paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!p || !out) return PARADEC_K_NULL_POINTER;
        if (bytes < 16 || blocks == 0) return PARADEC_K_ZERO_DIM;
        if (!paradec::aligned16(p)) return PARADEC_K_BAD_SHAPE;
        paradec::read_kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint4 *>(p), bytes / 16,
                                                          static_cast<uint32_t *>(out));
        return paradec::launch_status();
    });
}
