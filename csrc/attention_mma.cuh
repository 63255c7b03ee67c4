// The inner step of decode attention on tensor cores, shared by the kernel over a native cache
// (attention_prefill.cu) and the one over quantized or paged caches (attention_quant.cu): a
// warp's 16 query rows (one mma A tile, Q in registers) against a stage of 16 keys whose K and V
// sit in shared memory as rows of the compute dtype — S = Q·Kᵀ on tensor cores, masking, an
// online softmax in f32, then O += P·V with V through ldmatrix.trans.
#pragma once

#include <cmath>
#include <type_traits>

#include "attention.cuh"
#include "mma.cuh"

namespace paradec {

// Query rows per block (one mma A tile) and keys per stage.
constexpr int kDecRows = 16;
constexpr int kDecKeys = 16;

template <typename T>
__device__ __forceinline__ unsigned pack2(float x, float y) {
    const typename Num<T>::T2 v = Num<T>::from_f2(make_float2(x, y));
    return *reinterpret_cast<const unsigned *>(&v);
}

// The rounding error of pack2 (x − round(x), y − round(y)), packed the same way: P = hi + lo
// carries about twice the mantissa of one bf16.
template <typename T>
__device__ __forceinline__ unsigned pack2_lo(float x, float y, unsigned hi) {
    const float2 r = Num<T>::to_f2(*reinterpret_cast<const typename Num<T>::T2 *>(&hi));
    return pack2<T>(x - r.x, y - r.y);
}

// One warp's online softmax over its keys: rows g (…0) and g + 8 (…1) of the A tile, lane
// (g, q) holding columns 8i + 2q, 8i + 2q + 1 of each.
template <int DT>
struct DecState {
    float o[DT][4];
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    __device__ DecState() {
#pragma unroll
        for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    }
};

// The positions of a lane's two rows (the last key each may see) and the first key a sliding
// window leaves them.
struct DecRowLimits {
    int64_t pos_a, pos_b, lo_a, lo_b;
};

// One stage of 16 keys base … base + 15 (ks, vs: [16][DP + 8] rows of T): S = Q·Kᵀ scaled by
// sl2 (log2 units); unless `full` (every key visible to every row, no mask), keys past k_end,
// after a row's position or before its window are hidden and the additive mask applied; the
// online softmax update; O += P·V.
template <typename T, int DP>
__device__ __forceinline__ void dec_stage(const unsigned (&qa)[DP / 16][4], const T *ks,
                                          const T *vs, int64_t base, int64_t k_end, bool full,
                                          const DecRowLimits &lim, const float *mrow, float sl2,
                                          DecState<DP / 8> &st) {
    constexpr int SD = DP + 8;
    constexpr int KT = DP / 16;
    constexpr int DT = DP / 8;
    const int lane = threadIdx.x & 31;
    const int c2 = (lane & 3) * 2, mi = lane >> 3;
    float s[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
        unsigned bf[4];
        ldsm_x4(bf, ks + ((mi >> 1) * 8 + (lane & 7)) * SD + kk * 16 + (mi & 1) * 8);
        mma_16816<T>(s[0], qa[kk], bf[0], bf[1]);
        mma_16816<T>(s[1], qa[kk], bf[2], bf[3]);
    }
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            s[n][e] *= sl2;
            if (!full) {
                const int64_t j = base + n * 8 + c2 + (e & 1);
                const int64_t p = e < 2 ? lim.pos_a : lim.pos_b;
                const int64_t lo = e < 2 ? lim.lo_a : lim.lo_b;
                const bool vis = j < k_end && j <= p && j >= lo;
                s[n][e] = vis ? (mrow ? s[n][e] + mrow[j] * kLog2e : s[n][e]) : -INFINITY;
            }
        }
    float mx0 = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
    float mx1 = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(st.m0, mx0), mn1 = fmaxf(st.m1, mx1);
    const float mu0 = mn0 == -INFINITY ? 0.f : mn0, mu1 = mn1 == -INFINITY ? 0.f : mn1;
    const float al0 = exp2f(st.m0 - mu0), al1 = exp2f(st.m1 - mu1);
    st.m0 = mn0;
    st.m1 = mn1;
    st.l0 *= al0;
    st.l1 *= al1;
#pragma unroll
    for (int n = 0; n < 2; ++n) {
        s[n][0] = exp2f(s[n][0] - mu0);
        s[n][1] = exp2f(s[n][1] - mu0);
        s[n][2] = exp2f(s[n][2] - mu1);
        s[n][3] = exp2f(s[n][3] - mu1);
        st.l0 += s[n][0] + s[n][1];
        st.l1 += s[n][2] + s[n][3];
    }
    unsigned pa[4], pl[4];
    pa[0] = pack2<T>(s[0][0], s[0][1]);
    pa[1] = pack2<T>(s[0][2], s[0][3]);
    pa[2] = pack2<T>(s[1][0], s[1][1]);
    pa[3] = pack2<T>(s[1][2], s[1][3]);
    // bf16 keeps 8 bits of P: add the rounding remainder as a second product (decode is
    // bound by memory, so the extra tensor-core work is free).
    constexpr bool kSplitP = std::is_same<T, __nv_bfloat16>::value;
    if (kSplitP) {
        pl[0] = pack2_lo<T>(s[0][0], s[0][1], pa[0]);
        pl[1] = pack2_lo<T>(s[0][2], s[0][3], pa[1]);
        pl[2] = pack2_lo<T>(s[1][0], s[1][1], pa[2]);
        pl[3] = pack2_lo<T>(s[1][2], s[1][3], pa[3]);
    }
#pragma unroll
    for (int dp = 0; dp < DT / 2; ++dp) {
        unsigned bf[4];
        ldsm_x4_trans(bf, vs + ((mi & 1) * 8 + (lane & 7)) * SD + dp * 16 + (mi >> 1) * 8);
        st.o[2 * dp][0] *= al0;
        st.o[2 * dp][1] *= al0;
        st.o[2 * dp][2] *= al1;
        st.o[2 * dp][3] *= al1;
        st.o[2 * dp + 1][0] *= al0;
        st.o[2 * dp + 1][1] *= al0;
        st.o[2 * dp + 1][2] *= al1;
        st.o[2 * dp + 1][3] *= al1;
        if (kSplitP) {
            mma_16816<T>(st.o[2 * dp], pl, bf[0], bf[1]);
            mma_16816<T>(st.o[2 * dp + 1], pl, bf[2], bf[3]);
        }
        mma_16816<T>(st.o[2 * dp], pa, bf[0], bf[1]);
        mma_16816<T>(st.o[2 * dp + 1], pa, bf[2], bf[3]);
    }
}

// Sums each row's softmax denominator over the 4 lanes that share it.
template <int DT>
__device__ __forceinline__ void dec_sum_rows(DecState<DT> &st) {
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        st.l0 += __shfl_xor_sync(0xffffffffu, st.l0, off);
        st.l1 += __shfl_xor_sync(0xffffffffu, st.l1, off);
    }
}

// The tile's column order (identity: column c holds dimension c).
struct TileColumns {
    __device__ __forceinline__ int operator()(int c) const { return c; }
};

// Writes warp `warp`'s state for merge_and_store: sm_m / sm_l [warp][16 rows], sm_o
// [warp][16 rows][DP], tile column c at dimension col(c), times `factor`.
template <int DP, typename Col = TileColumns>
__device__ __forceinline__ void dec_store_state(const DecState<DP / 8> &st, float *sm_m,
                                                float *sm_l, float *sm_o, int warp,
                                                Col col = {}, float factor = 1.f) {
    constexpr int DT = DP / 8;
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2, c2 = (lane & 3) * 2;
    const int ra = g, rb = g + 8;
    if ((lane & 3) == 0) {
        sm_m[warp * kDecRows + ra] = st.m0;
        sm_m[warp * kDecRows + rb] = st.m1;
        sm_l[warp * kDecRows + ra] = st.l0;
        sm_l[warp * kDecRows + rb] = st.l1;
    }
#pragma unroll
    for (int i = 0; i < DT; ++i) {
        const int d0 = col(i * 8 + c2), d1 = col(i * 8 + c2 + 1);
        float *pa = sm_o + (warp * kDecRows + ra) * DP;
        float *pb = sm_o + (warp * kDecRows + rb) * DP;
        pa[d0] = st.o[i][0] * factor;
        pa[d1] = st.o[i][1] * factor;
        pb[d0] = st.o[i][2] * factor;
        pb[d1] = st.o[i][3] * factor;
    }
}

}  // namespace paradec
