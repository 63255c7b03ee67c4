// Quantized linear for small m (1 … 32) on tensor cores, uniform 4-bit tiles of paradec's device
// layout (kernels/linear.h): out[m, n] (+)= x[m, k] · Wᵀ + bias.
//
// Why a path of its own: at small m a linear is a stream of packed weights. Dequantizing every
// weight to f32 and multiplying it by each row of x on CUDA cores costs about 6 ALU operations per
// weight and row, so the f32 GEMV is ALU-bound at ~3× the byte floor at m = 1 and far worse at
// m = 8. Here a weight becomes an exact small integer in f16/bf16 registers (two per instruction,
// ~1.4 operations per weight whatever m) and the tensor cores multiply it by up to 32 rows.
//
// Swapped operands: mma.sync m16n8k16 computes outᵀ = W·xᵀ with A = 16 output columns × 16 k of W
// and B = 16 k × 8 rows of x, so m ≤ 8 needs one n8 tile of x rows and m ≤ 32 four, all sharing
// one dequantized A fragment.
//
// Fragments come straight from the device layout (no shuffled copy of the weights). A warp owns
// 32 columns; per 32-row tile, lane l = 4g + q loads one 16-byte vector: word row q of columns
// 4g .. 4g + 3, i.e. rows 8q .. 8q + 7 of each (row 8q + j in nibble j): four 128-byte spans. For column half h, A rows
// g and g + 8 are columns 4g + 2h and 4g + 2h + 1. The k order inside a tile is permuted, the same
// way in A and B, so the dot products do not change: in k chunk c (0, 1) the k slots (2q, 2q + 1)
// hold rows (8q + 2c, 8q + 2c + 4) and the slots (2q + 8, 2q + 9) rows (8q + 2c + 1, 8q + 2c + 5),
// because nibbles s and s + 4 of a word become a half2 in one lop3 with the magic exponent of
// 1024 (f16) or 128 (bf16): (w >> 4s) & 0x000f000f | magic = (magic + q_s, magic + q_{s+4}).
// Subtracting (magic + zero) leaves q − zero exactly. The scale is applied after the mma, in f32,
// once per group: a group's products sum into their own f32 accumulator, and a change of group
// (tiles change group only at tile boundaries) folds it in as acc += acc_group · scale — the same
// (q − zero)·scale·x terms as the CPU reference, summed in another order.
// x: lane (g, q) holds x row g of each n8 tile at elements 8q .. 8q + 7 of the tile (one 16-byte
// vector), byte-permuted into the pairs (0, 4), (1, 5), (2, 6), (3, 7) that the k order needs.
//
// Memory: each lane streams its own 16-byte weight and x vectors, and the scales of each new
// group, through a ring of shared-memory stages (cp.async, S − 1 stages ahead of the one in use);
// a lane reads back only what it copied itself, so the ring needs no barrier. The 4 warps of a
// block own 128 adjacent columns and read the same x at about the same time, which L1 then
// serves. K is split over gridDim.y (to fill the GPU, and to keep a block's share of K short;
// ops::select_linear picks the split): every block writes f32 partials and the last block of a
// column block to finish (an atomic counter, zero before the launch and left zero) sums them in
// split order, so the result does not depend on timing and no second kernel runs.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "activation.cuh"
#include "cluster.cuh"
#include "common.cuh"
#include "dependent_launch.cuh"
#include "linear_small.cuh"
#include "mma.cuh"

namespace paradec {
namespace {

constexpr int kWarps = kSmallCols / 32;

// Tiles per ring stage (U) and stages (S) by n8 tiles of x rows: a ring that keeps a block
// within 48 KiB of static shared memory (a stage is U·(1 + NT) 16-byte vectors and U scale pairs
// per lane). At m ≤ 8, 3 stages rather than 4 let 7 blocks share an SM instead of 5 (0–5%
// faster on an H200). At m ≤ 8 a stage carries two tiles: the per-stage work (addresses,
// commit, wait, loop) is then paid once per two tiles, which matters where the tensor cores
// have little to do and the loop's instructions set the pace.
template <int NT>
__host__ __device__ constexpr int tiles_per_stage() {
    return NT == 1 ? 2 : 1;
}
template <int NT>
__host__ __device__ constexpr int stages() {
    return NT == 1 ? 3 : NT == 2 ? 6 : 4;
}

// The magic exponent: a half2 / bfloat162 pair whose low mantissa bits are a code q reads
// magic + q exactly (ulp 1 at 1024 in f16 and at 128 in bf16; codes < 16).
template <typename T>
struct Magic;
template <>
struct Magic<__half> {
    static constexpr uint32_t kBits = 0x64006400u;
    static constexpr float kValue = 1024.f;
};
template <>
struct Magic<__nv_bfloat16> {
    static constexpr uint32_t kBits = 0x43004300u;
    static constexpr float kValue = 128.f;
};

// Nibbles s and s + 4 of w as the pair (magic + q_s, magic + q_{s+4}).
template <typename T>
__device__ __forceinline__ uint32_t nibble_pair(uint32_t w, int s) {
    return lop3_and_or(w >> (4 * s), 0x000f000fu, Magic<T>::kBits);
}

template <typename T>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) {
    using T2 = typename Num<T>::T2;
    const T2 r = __hsub2(*reinterpret_cast<const T2 *>(&a), *reinterpret_cast<const T2 *>(&b));
    return *reinterpret_cast<const uint32_t *>(&r);
}

template <typename T>
__device__ __forceinline__ uint32_t splat2(float v) {
    const typename Num<T>::T2 h = Num<T>::from_f2(make_float2(v, v));
    return *reinterpret_cast<const uint32_t *>(&h);
}

// A group's zero of each of a lane's 4 columns in the two forms the decoding subtracts:
// lo = (magic + zero) pairs, hi = −(magic / 16 + zero) pairs (f16 only; see decoded_pair).
struct GroupZeros {
    uint32_t lo[4];
    uint32_t hi[4];
};

// The exact pair (q_s − zero, q_{s+4} − zero) of nibbles s and s + 4 of w. In f16, odd s skips
// the shift: masking nibble s in place reads magic + 16·q, and one fma by 1/16 with
// −(magic / 16 + zero) leaves q − zero exactly (64 + q and the small integers are exact in f16),
// which saves a shift for every other pair. bf16 keeps the shift: there a nibble at bits 4..7
// would reach the exponent.
template <typename T>
__device__ __forceinline__ uint32_t decoded_pair(uint32_t w, int s, uint32_t zlo, uint32_t zhi) {
    if constexpr (std::is_same<T, __half>::value) {
        if (s & 1) {
            const uint32_t v = lop3_and_or(w >> (4 * (s - 1)), 0x00f000f0u, Magic<T>::kBits);
            const __half2 r = __hfma2(*reinterpret_cast<const __half2 *>(&v),
                                      __half2half2(__float2half_rn(0.0625f)),
                                      *reinterpret_cast<const __half2 *>(&zhi));
            return *reinterpret_cast<const uint32_t *>(&r);
        }
    }
    (void)zhi;
    return sub2<T>(nibble_pair<T>(w, s), zlo);
}

// Asynchronous copies into the ring (zero-filled when !valid): .cg for the weights, read once
// and kept out of L1; .ca for x and the scales, which the block's 4 warps all read. Unlike
// mma.cuh's copies these clobber memory, as the wait does: a lane reads its ring stage with
// plain loads and no barrier, so the compiler must not move those loads across the wait.
__device__ __forceinline__ void copy16_cg(void *smem, const void *gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void copy16_ca(void *smem, const void *gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void copy8_ca(void *smem, const void *gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(valid ? 8 : 0)
                 : "memory");
}
__device__ __forceinline__ void copy4_ca(void *smem, const void *gmem) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void copy_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void copy_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// The group in a tile's (group | bits << 24) word.
__device__ __forceinline__ int group_of_word(uint32_t word) {
    return static_cast<int>(word & 0xFFFFFFu);
}

// Lane (g, q)'s 16-byte x vector (elements 8q .. 8q + 7 of a tile's row g) as the B fragment
// of the tile's permuted k order: the pairs (0, 4), (1, 5), (2, 6), (3, 7).
__device__ __forceinline__ void x_fragment(const uint4 &xv, uint32_t (&b)[4]) {
    b[0] = __byte_perm(xv.x, xv.z, 0x5410);
    b[1] = __byte_perm(xv.x, xv.z, 0x7632);
    b[2] = __byte_perm(xv.y, xv.w, 0x5410);
    b[3] = __byte_perm(xv.y, xv.w, 0x7632);
}

// One 32-row tile: lane (g, q)'s weight vector wv (word row q of columns c0 .. c0 + 3) decoded
// to exact (q − zero) pairs and multiplied by the B fragments of NT n8 tiles of x rows into the
// group accumulators accg[column half][n8 tile].
template <typename T, int NT>
__device__ __forceinline__ void tile_products(float (&accg)[2][NT][4], const uint4 &wv,
                                              const GroupZeros &z,
                                              const uint32_t (&b)[NT][4]) {
    const uint32_t w[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t af[4] = {
                decoded_pair<T>(w[2 * h], 2 * c, z.lo[2 * h], z.hi[2 * h]),
                decoded_pair<T>(w[2 * h + 1], 2 * c, z.lo[2 * h + 1], z.hi[2 * h + 1]),
                decoded_pair<T>(w[2 * h], 2 * c + 1, z.lo[2 * h], z.hi[2 * h]),
                decoded_pair<T>(w[2 * h + 1], 2 * c + 1, z.lo[2 * h + 1], z.hi[2 * h + 1]),
            };
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
                mma_16816<T>(accg[h][nt], af, b[nt][2 * c], b[nt][2 * c + 1]);
        }
    }
}

// 1 / x in one MUFU instruction (about 1 ulp; subnormal x flushes to zero).
__device__ __forceinline__ float rcp_approx(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
}

// A group's scale and (magic + zero) pair of each of a lane's 4 columns, from their
// (scale, −zero·scale) pairs: sz holds −zero·scale, exact in f32 (or within an ulp), so
// −nz · (1 / scale) is the integer zero to within a few ulp, which rounding removes. A zero or
// subnormal scale takes zero 0: its products (|scale| < 2^−126 times codes and x) vanish either way.
template <typename T>
__device__ __forceinline__ void group_scales(const float (&s)[4], const float (&nz)[4],
                                             float (&scale)[4], GroupZeros &zeros) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        scale[j] = s[j];
        const float z = fabsf(s[j]) >= 1.17549435e-38f ? rintf(-nz[j] * rcp_approx(s[j])) : 0.f;
        zeros.lo[j] = splat2<T>(Magic<T>::kValue + z);
        zeros.hi[j] = splat2<T>(-(Magic<T>::kValue * 0.0625f + z));
    }
}

// acc += accg · scale (per column: lane (g, q)'s accumulators of column half h hold columns
// c0 + 2h and c0 + 2h + 1), accg = 0.
template <int NT>
__device__ __forceinline__ void fold_group(float (&acc)[2][NT][4], float (&accg)[2][NT][4],
                                           const float (&scale)[4]) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                acc[h][nt][e] = fmaf(accg[h][nt][e], scale[2 * h + (e >> 1)], acc[h][nt][e]);
                accg[h][nt][e] = 0.f;
            }
}

template <int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[2][NT][4]) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[h][nt][e] = 0.f;
}

// out[row, c] = act(v (+ bias[c])) (+ out[row, c]), with ACT the activation a.act names (the
// grouped launches' calls may ask for one; ACT kernels are separate, so that every other
// launch compiles as it would without).
template <typename T, bool ACT>
__device__ __forceinline__ void store_one(const SmallArgs &a, int64_t row, int64_t c, float v) {
    if (a.bias) v += Num<T>::to_f(static_cast<const T *>(a.bias)[c]);
    if (ACT && a.act >= 0) v = act_by_code(a.act, v);
    T *p = static_cast<T *>(a.out) + row * a.n + c;
    if (a.accumulate) v += Num<T>::to_f(*p);
    *p = Num<T>::from_f(v);
}

// out[r, c] for every row r of column c (< n) from the f32 partials of a.split K splits,
// summed in split order (then as store_one). Loads go out R rows × S splits at a time. With
// 2 × 8 the last block of a column block pays one round trip to L2 per batch rather than about
// one per split and row: the linears of 4096×12288 at 8 and 16 rows took 11–13% less time
// (H100). The grouped and summed kernels, which carry a whole SmallArgs copy in registers, keep
// 1 × 1: with 2 × 8 ptxas spilled 28–72 bytes in them and a decode step took 4–8% longer.
template <typename T, bool ACT, int R, int S>
__device__ __forceinline__ void sum_splits(const SmallArgs &a, int64_t c) {
    const int64_t split_stride = a.m * a.np;
    for (int64_t r0 = 0; r0 < a.m; r0 += R) {
        float v[R];
#pragma unroll
        for (int j = 0; j < R; ++j) v[j] = 0.f;
        for (int s0 = 0; s0 < a.split; s0 += S) {
            float t[R][S];
#pragma unroll
            for (int j = 0; j < R; ++j)
#pragma unroll
                for (int s = 0; s < S; ++s)
                    t[j][s] = r0 + j < a.m && s0 + s < a.split
                                  ? __ldcg(a.part + (s0 + s) * split_stride + (r0 + j) * a.np + c)
                                  : -0.f;  // v + (−0) is v, −0 too: the padding changes no bit
#pragma unroll
            for (int j = 0; j < R; ++j)
#pragma unroll
                for (int s = 0; s < S; ++s) v[j] += t[j][s];
        }
#pragma unroll
        for (int j = 0; j < R; ++j)
            if (r0 + j < a.m) store_one<T, ACT>(a, r0 + j, c, v[j]);
    }
}

// Calls f(row, sums) for each x row whose sums lane (g, q) holds (rows nt·8 + 2q + e below m,
// none where the lane's columns are not live): sums are its columns c0 .. c0 + 3.
template <int NT, typename F>
__device__ __forceinline__ void for_lane_rows(const SmallArgs &a, const float (&acc)[2][NT][4],
                                              bool live, F f) {
    const int q = threadIdx.x & 3;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int64_t r = nt * 8 + 2 * q + e;
            if (!live || r >= a.m) continue;
            f(r, make_float4(acc[0][nt][e], acc[0][nt][2 + e], acc[1][nt][e], acc[1][nt][2 + e]));
        }
}

// Lane (g, q)'s sums of x rows nt·8 + 2q + e (columns c0 .. c0 + 3) as f32 at
// base + row · stride (+ the lane's column offset, already in base).
template <int NT>
__device__ __forceinline__ void store_partials(const SmallArgs &a, const float (&acc)[2][NT][4],
                                               float *base, int64_t stride, bool live) {
    for_lane_rows<NT>(a, acc, live, [&](int64_t r, float4 v) {
        *reinterpret_cast<float4 *>(base + r * stride) = v;
    });
}

// Stores a block's results: lane (g, q) holds, for x row nt·8 + 2q + e, the columns
// c0 .. c0 + 3 as acc[0][nt][e], acc[0][nt][2 + e], acc[1][nt][e], acc[1][nt][2 + e]. Unsplit, they
// go to out; split, to the f32 partials, and the last block of the column block to finish sums
// every split's partials in split order.
template <typename T, int NT, bool ACT = false, bool WIDE_SUM = false>
__device__ __forceinline__ void store_acc(const SmallArgs &a, const float (&acc)[2][NT][4], int bx,
                                          int by, int64_t c0, bool live) {
    if (!a.part) {
        for_lane_rows<NT>(a, acc, live, [&](int64_t r, float4 s) {
            const float v[4] = {s.x, s.y, s.z, s.w};
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (c0 + j < a.n) store_one<T, ACT>(a, r, c0 + j, v[j]);
        });
        return;
    }
    store_partials<NT>(a, acc, a.part + by * a.m * a.np + c0, a.np, live);
    // The last block of this column block to get here sums every split's partials.
    if (!last_to_arrive(a.counters + bx, static_cast<unsigned>(a.split))) return;
    const int64_t c = static_cast<int64_t>(bx) * kSmallCols + threadIdx.x;
    if (c < a.n) sum_splits<T, ACT, WIDE_SUM ? 2 : 1, WIDE_SUM ? 8 : 1>(a, c);
}

// NT: n8 tiles of x rows (m ≤ 8·NT).
// Column block bx (of 128 columns) and K split by of one call `a`: the body of the kernel and of
// its grouped and summed forms. `slot`: the row of the partials its sums go to (by, but for a
// sum's terms, which share one set of partials).
template <typename T, int NT, bool ACT = false, bool WIDE_SUM = false>
__device__ __forceinline__ void small_block(const SmallArgs &a, int bx, int by, int slot) {
    constexpr int S = stages<NT>();
    constexpr int U = tiles_per_stage<NT>();
    __shared__ uint4 ring[kWarps][S][U][1 + NT][32];
    __shared__ float2 szring[kWarps][S][U][32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int g = lane >> 2, q = lane & 3;
    // This lane's 4 columns c0 .. c0 + 3: all below np or all above (np is a multiple of 8).
    const int64_t c0 = static_cast<int64_t>(bx) * kSmallCols + warp * 32 + 4 * g;
    const bool live = c0 < a.np;
    const int t0 = by * a.tiles_per_split;
    const int count = min(a.ntiles, t0 + a.tiles_per_split) - t0;  // ≥ 1: no empty split
    const int stages_total = (count + U - 1) / U;                   // ring stages to consume
    const T *x = static_cast<const T *>(a.x);

    // Groups of tiles b·32 .. b·32 + 31 of the range, one per lane (read with shuffles).
    auto group_batch = [&](int b) -> int {
        const int i = b * 32 + lane;
        return i < count ? group_of_word(__ldg(a.tiles + 2 * (t0 + i) + 1)) : -1;
    };
    // The groups of the batch of the tiles in use (lo) and of the next batch (hi): tiles being
    // queued are at most S·U − 1 < 32 ahead, so they are in one of the two.
    int batch_lo = group_batch(0), batch_hi = group_batch(1);
    auto group_of = [&](int j, int i) -> int {
        return __shfl_sync(0xffffffffu, (j >> 5) == (i >> 5) ? batch_lo : batch_hi, j & 31);
    };
    // Queues the weights and x of tile j (of this block's range) into slot u of ring stage st.
    auto issue_data = [&](int j, int st, int u) {
        if (j >= count) return;
        const int64_t t = t0 + j;
        const uint32_t *wp = live ? a.words + (4 * t + q) * a.np + c0 : a.words;
        copy16_cg(&ring[warp][st][u][0][lane], wp, live);
        // x rows past m are not copied: what their stage holds only reaches the output
        // columns of those rows (mma columns do not mix), which are never stored.
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int64_t r = nt * 8 + g;
            if (r < a.m)
                copy16_ca(&ring[warp][st][u][1 + nt][lane], x + r * a.ldx + t * 32 + 8 * q, true);
        }
    };
    // Queues the (scale, −zero·scale) of tile j's group when tile j starts it: lane (g, q)
    // copies column c0 + q's, and the lanes of a column quad share them by shuffles. Fetched
    // with the tile, a stage or more ahead, a change of group costs no memory latency.
    int queued_grp = -1;
    auto issue_sz = [&](int j, int st, int u, int grp_j) {
        if (j >= count || grp_j == queued_grp) return;
        queued_grp = grp_j;
        const float *sp = a.sz + (grp_j * a.np + c0 + q) * 2;
        copy8_ca(&szring[warp][st][u][lane], live ? sp : a.sz, live);
    };

    float acc[2][NT][4], accg[2][NT][4];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[h][nt][e] = accg[h][nt][e] = 0.f;
    // The current group's scales and (magic + zero) pairs, per column c0 .. c0 + 3.
    float scale[4] = {0.f, 0.f, 0.f, 0.f};
    GroupZeros zeros{};
    int grp = -1;
    auto fold = [&]() { fold_group<NT>(acc, accg, scale); };

    // Tile i (of the range), in slot u of ring stage `stage`: a new group folds the last one
    // in and takes its scales and zeros; then the tile's mma.
    auto tile_mma = [&](int i, int stage, int u) {
        const int gi = __shfl_sync(0xffffffffu, batch_lo, i & 31);
        if (gi != grp) {
            if (grp >= 0) fold();
            const float2 mine = szring[warp][stage][u][lane];
            float s[4], nz[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int src = (lane & ~3) | j;
                s[j] = __shfl_sync(0xffffffffu, mine.x, src);
                nz[j] = __shfl_sync(0xffffffffu, mine.y, src);
            }
            group_scales<T>(s, nz, scale, zeros);
            grp = gi;
        }
        uint32_t b[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) x_fragment(ring[warp][stage][u][1 + nt][lane], b[nt]);
        tile_products<T, NT>(accg, ring[warp][stage][u][0][lane], zeros, b);
    };

    // Prologue: the weights of stages 0 .. S − 2 go out first (one commit group each), then,
    // once the tiles' groups have arrived, their scales (one more group). Later stages travel
    // with their scales in one group each.
#pragma unroll
    for (int st = 0; st < S - 1; ++st) {
#pragma unroll
        for (int u = 0; u < U; ++u) issue_data(st * U + u, st, u);
        copy_commit();
    }
#pragma unroll
    for (int st = 0; st < S - 1; ++st)
#pragma unroll
        for (int u = 0; u < U; ++u) issue_sz(st * U + u, st, u, group_of(st * U + u, 0));
    copy_commit();
    int stage = 0;  // ring stage of stage index I
    for (int I = 0; I < stages_total; ++I) {
        const int i0 = I * U;  // its first tile
        if (i0 > 0 && (i0 & 31) == 0) {
            batch_lo = batch_hi;
            batch_hi = group_batch((i0 >> 5) + 1);
        }
        // Stage I + S − 1 takes the ring stage that stage I − 1 used (its data is consumed).
        {
            const int st = stage == 0 ? S - 1 : stage - 1;
            const int j0 = (I + S - 1) * U;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                issue_data(j0 + u, st, u);
                if (j0 + u < count) issue_sz(j0 + u, st, u, group_of(j0 + u, i0));
            }
            copy_commit();
        }
        // Stage I has landed once all but the newest S − 1 groups are done (at I = 0: all but
        // the newest, which covers the prologue's scales).
        if (I == 0) {
            copy_wait<1>();
        } else {
            copy_wait<S - 1>();
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (U > 1 && i0 + u >= count) break;
            tile_mma(i0 + u, stage, u);
        }
        stage = stage == S - 1 ? 0 : stage + 1;
    }
    copy_wait<0>();
    fold();

    store_acc<T, NT, ACT, WIDE_SUM>(a, acc, bx, slot, c0, live);
}


// ---- The lean loop (m ≤ 32): x staged once in shared memory, weights in registers ----------
//
// The ring loop above spends about 230 instructions per tile and warp (SASS of sm_90a) on ring
// bookkeeping, guarded copies, 64-bit address arithmetic and group lookups by shuffle, against
// about 60 for the tile's own decoding and mma; at m = 1 the warps then issue instructions, not
// loads, and the path runs at 2.4–3.4× the byte floor. Here the block's x rows for its whole
// K range are copied into shared memory once (m · count · 64 bytes, 48 KiB at most: the launcher
// falls back to the ring loop beyond), each lane streams its weight vectors and the tiles'
// groups straight into registers, P tiles per batch with two batches in flight, and the
// scales of the range's groups are copied into shared memory with x, before the wait for the
// previous kernel, where they fit (else a group start loads its own from global memory), as are
// the tiles' group words. What is left per tile is one weight load, one shared-memory load of
// its group word (a broadcast) and one of x per n8 tile, a pointer step and the tile's
// arithmetic.

// Blocks of the lean loop per SM the registers allow by n8 tiles of x rows: at most 102, 128
// and 168 registers a lane (at four n8 tiles, four blocks would spill 512–748 bytes a lane).
__host__ __device__ constexpr int lean_blocks_per_sm(int nt) {
    return nt == 1 ? 5 : nt == 2 ? 4 : 3;
}

// Tiles per register batch of the lean loop (two batches in flight).
constexpr int kLeanBatch = 4;

// Row stride, in 16-byte vectors, of the staged x: a tile of a row is 4 vectors (64 bytes); an
// odd number of tiles per row puts rows g and g + 1 in opposite halves of the 128-byte bank line,
// so the 8 lanes of a quarter-warp read conflict-free.
__host__ __device__ constexpr int lean_x_stride(int count) {
    return count * 4 + ((count & 1) ? 0 : 4);
}

// A 16-byte shared-memory load by 32-bit shared address.
__device__ __forceinline__ uint4 lds128(unsigned addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(addr));
    return v;
}

// The group of tile t.
__device__ __forceinline__ int tile_group(const SmallArgs &a, int t) {
    return group_of_word(__ldg(a.tiles + 2 * static_cast<int64_t>(t) + 1));
}

// 16-byte vectors of the staged group words of `count` tiles.
__host__ __device__ constexpr int lean_meta_vectors(int count) { return (count + 3) / 4; }

// 16-byte vectors of one group's staged scales: a block's columns × (scale, −zero·scale) f32.
constexpr int kSzVectors = kSmallCols * 8 / 16;

// Tiles t0 .. t0 + count − 1 of the lane's columns c0 .. c0 + 3 (live: inside the stored
// width), folded into acc (acc += Σ over the tiles' groups of products · scale). `restage`:
// the block's x staging in xs may still be read by an earlier range, so wait for every warp
// before overwriting it.
template <typename T, int NT, int P>
__device__ __forceinline__ void lean_range(const SmallArgs &a, int64_t c0, bool live, int t0,
                                           int count, uint4 *xs, bool restage,
                                           float (&acc)[2][NT][4]) {
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2, q = lane & 3;
    const int stride = lean_x_stride(count);

    // This lane's weight vector of tile t0 + i is wnext + i·wstep.
    const int64_t wstep = 4 * a.np;
    const uint32_t *wnext = a.words + (live ? (4 * static_cast<int64_t>(t0) + q) * a.np + c0 : 0);
    int issued = 0;
    auto load = [&](uint4 (&w)[P]) {
        if (issued + P <= count) {  // a whole batch: no per-tile guard
#pragma unroll
            for (int j = 0; j < P; ++j)
                if (live) w[j] = ld_stream(wnext + j * wstep);
        } else {
#pragma unroll
            for (int j = 0; j < P; ++j)
                if (issued + j < count && live) w[j] = ld_stream(wnext + j * wstep);
        }
        wnext += P * wstep;
        issued += P;
    };
    uint4 wa[P], wb[P];
#pragma unroll
    for (int j = 0; j < P; ++j) wa[j] = wb[j] = make_uint4(0u, 0u, 0u, 0u);
    // The first batch: the weights depend on no earlier kernel, so they go out before the wait
    // for it.
    load(wa);
    // After x in shared memory: each tile's (group | bits << 24) word, then the scales of the
    // range's groups (consecutive), one group's 128 columns of (scale, −zero·scale) pairs after
    // another, where a.sz_slots groups fit; the loop then reads no metadata from global memory
    // but its group starts' where the scales do not fit. They depend on no earlier kernel
    // either, so they go out before the wait for it.
    unsigned *const tgs = reinterpret_cast<unsigned *>(xs + a.m * stride);
    float4 *const szs = reinterpret_cast<float4 *>(xs + a.m * stride + lean_meta_vectors(count));
    // Groups gfirst .. gfirst + ngroups − 1 are staged (ngroups 0: none). Where every group
    // has as many tiles, the range's groups follow from t0 without waiting for a load; a wrong
    // guess costs only speed, since a group start outside the staged ones loads its own.
    int gfirst = 0, ngroups = 0;
    auto stage_groups = [&]() {
        for (int v = threadIdx.x; v < count; v += kSmallCols)
            copy4_ca(tgs + v, a.tiles + 2 * static_cast<int64_t>(t0 + v) + 1);
        const int tpg = a.tiles_per_group;
        gfirst = tpg > 0 ? t0 / tpg : tile_group(a, t0);
        const int glast = min(tpg > 0 ? (t0 + count - 1) / tpg : tile_group(a, t0 + count - 1),
                              a.groups - 1);
        ngroups = glast - gfirst + 1;
        if (ngroups > a.sz_slots || ngroups < 0) ngroups = 0;
        const int64_t cb = c0 - 4 * (threadIdx.x >> 2);  // the block's first column
        for (int v = threadIdx.x; v < ngroups * kSzVectors; v += kSmallCols) {
            const int64_t col = cb + 2 * (v % kSzVectors);  // a 16-byte vector: 2 columns
            const int64_t gi = gfirst + v / kSzVectors;
            copy16_ca(szs + v, a.sz + (gi * a.np + col) * 2, col < a.np);
        }
    };
    if (!restage) stage_groups();
    wait_for_previous_grid();

    // x rows [0, m) of tiles t0 .. t0 + count − 1 into shared memory, by the whole block (and
    // what stage_groups copied lands with them).
    {
        if (restage) {
            __syncthreads();
            stage_groups();
        }
        const T *x = static_cast<const T *>(a.x);
        const int per_row = count * 4;
        const int total = static_cast<int>(a.m) * per_row;
        for (int v = threadIdx.x; v < total; v += kSmallCols) {
            const int r = v / per_row, c = v - r * per_row;
            const T *src = x + r * a.ldx + static_cast<int64_t>(t0) * 32 + c * 8;
            copy16_ca(xs + r * stride + c, src, true);
        }
        copy_commit();
        copy_wait<0>();
        __syncthreads();
    }
    // This lane's x vector of tile i, n8 tile nt, is at shared address xaddr[nt] + 64 i. Lanes
    // of rows past m read row m − 1 instead: an mma's output column depends on its own B column
    // only, so what they read reaches only the outputs of rows past m, which are never stored.
    unsigned xaddr[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const int row = min(nt * 8 + g, static_cast<int>(a.m) - 1);
        xaddr[nt] = static_cast<unsigned>(__cvta_generic_to_shared(xs)) +
                    16u * static_cast<unsigned>(row * stride + q);
    }

    float accg[2][NT][4];
    zero_acc<NT>(accg);
    // The current group's scales and (magic + zero) pairs.
    float scale[4] = {0.f, 0.f, 0.f, 0.f};
    GroupZeros zeros{};
    int grp = -1;
    auto start_group = [&](int gi) {
        if (grp >= 0) fold_group<NT>(acc, accg, scale);
        // From the (scale, −zero·scale) pairs of columns c0, c0 + 1 (p01) and c0 + 2, c0 + 3
        // (p23). Each branch derives the scales and zeros itself: were the pairs to meet after
        // the branches, the global loads of the one would make the other wait for every load
        // of its kind still in flight (the weights' batches too).
        auto use = [&](const float4 &p01, const float4 &p23) {
            const float s[4] = {p01.x, p01.z, p23.x, p23.z};
            const float nz[4] = {p01.y, p01.w, p23.y, p23.w};
            group_scales<T>(s, nz, scale, zeros);
        };
        if (static_cast<unsigned>(gi - gfirst) < static_cast<unsigned>(ngroups)) {
            const float4 *sp = szs + (gi - gfirst) * kSzVectors + 2 * (threadIdx.x >> 2);
            use(sp[0], sp[1]);
        } else if (live && gi < a.groups) {
            const float4 *sp = reinterpret_cast<const float4 *>(a.sz + (gi * a.np + c0) * 2);
            use(__ldg(sp), __ldg(sp + 1));
        } else {
            use(make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f));
        }
        grp = gi;
    };
    int done = 0;
    auto compute = [&](const uint4 (&w)[P]) {
#pragma unroll
        for (int j = 0; j < P; ++j) {
            if (done + j >= count) break;
            const int gj = group_of_word(tgs[done + j]);
            if (gj != grp) start_group(gj);
            uint32_t b[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const uint4 xv = lds128(xaddr[nt] + 64u * (done + j));
                x_fragment(xv, b[nt]);
            }
            tile_products<T, NT>(accg, w[j], zeros, b);
        }
        done += P;
    };
    for (;;) {
        load(wb);
        compute(wa);
        if (done >= count) break;
        load(wa);
        compute(wb);
        if (done >= count) break;
    }
    fold_group<NT>(acc, accg, scale);
}

// Column block bx and K split by of one call `a` on the lean loop: the body of the lean
// kernel and of its grouped and summed forms (`slot` as in small_block).
template <typename T, int NT, int P, bool ACT = false, bool WIDE_SUM = false>
__device__ __forceinline__ void lean_block(const SmallArgs &a, int bx, int by, uint4 *xs,
                                           int slot) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int64_t c0 = static_cast<int64_t>(bx) * kSmallCols + warp * 32 + 4 * (lane >> 2);
    const bool live = c0 < a.np;
    const int t0 = by * a.tiles_per_split;
    const int count = min(a.ntiles, t0 + a.tiles_per_split) - t0;  // ≥ 1: no empty split
    float acc[2][NT][4];
    zero_acc<NT>(acc);
    lean_range<T, NT, P>(a, c0, live, t0, count, xs, false, acc);
    store_acc<T, NT, ACT, WIDE_SUM>(a, acc, bx, slot, c0, live);
}

template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols) qmma_small_kernel(SmallArgs a) {
    const int by = static_cast<int>(blockIdx.y);
    small_block<T, NT, false, true>(a, static_cast<int>(blockIdx.x), by, by);
}

// The call of a grouped or summed launch that grid position `pos` (a block index along the
// dimension first[] counts) belongs to: the i with first[i] ≤ pos < first[i + 1]; `rel` is
// pos − first[i].
__device__ __forceinline__ int call_at(const SmallGroup &g, int pos, int &rel) {
    int i = 0;
    while (i + 1 < g.count && pos >= g.first[i + 1]) ++i;
    rel = pos - g.first[i];
    return i;
}

// Several calls of one m in one launch: column blocks first[i] … first[i + 1] − 1 of the grid are
// call i's; a block past its call's split has nothing to do. ACT: calls may apply an activation
// as they store (SmallArgs::act).
template <typename T, int NT, bool ACT>
__global__ void __launch_bounds__(kSmallCols) qmma_small_group_kernel(SmallGroup g) {
    int bx;
    // A copy: registers, not parameter memory.
    const SmallArgs a = g.call[call_at(g, static_cast<int>(blockIdx.x), bx)];
    const int by = static_cast<int>(blockIdx.y);
    if (by >= a.split) return;
    small_block<T, NT, ACT>(a, bx, by, by);
}

// The terms of a sum, out (+)= Σ x_i · W_iᵀ + bias (SmallGroup's first[] counts K splits here):
// grid row y, first[i] ≤ y < first[i + 1], is term i's split y − first[i]. Every term shares
// the output, the bias, one set of partials (a row per split of every term) and the column
// blocks' counters, and its `split` is the sum's total, so the last block of a column block to
// finish sums every term's partials in (term, split) order: one store, as deterministic as a
// single call's.
template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols) qmma_small_sum_kernel(SmallGroup g) {
    int by;
    const SmallArgs a = g.call[call_at(g, static_cast<int>(blockIdx.y), by)];
    small_block<T, NT>(a, static_cast<int>(blockIdx.x), by, static_cast<int>(blockIdx.y));
}

// The staged x of the lean kernels (dynamic shared memory).
extern __shared__ uint4 lean_xs[];

template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols, lean_blocks_per_sm(NT)) qmma_lean_kernel(SmallArgs a) {
    const int by = static_cast<int>(blockIdx.y);
    lean_block<T, NT, kLeanBatch, false, true>(a, static_cast<int>(blockIdx.x), by, lean_xs, by);
}

template <typename T, int NT, bool ACT>
__global__ void __launch_bounds__(kSmallCols, lean_blocks_per_sm(NT)) qmma_lean_group_kernel(SmallGroup g) {
    int bx;
    const SmallArgs a = g.call[call_at(g, static_cast<int>(blockIdx.x), bx)];
    const int by = static_cast<int>(blockIdx.y);
    if (by >= a.split) return;
    lean_block<T, NT, kLeanBatch, ACT>(a, bx, by, lean_xs, by);
}

template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols, lean_blocks_per_sm(NT)) qmma_lean_sum_kernel(SmallGroup g) {
    int by;
    const SmallArgs a = g.call[call_at(g, static_cast<int>(blockIdx.y), by)];
    lean_block<T, NT, kLeanBatch>(a, static_cast<int>(blockIdx.x), by, lean_xs,
                                  static_cast<int>(blockIdx.y));
}

// ---- K splits summed inside a cluster (sm_90) -----------------------------------------------
// The K splits of one column block as one cluster of (1, gridDim.y) blocks: each block leaves
// its f32 partial sums in its own shared memory and, after a cluster barrier, sums a share of
// the column block's (row, column) outputs over the first `sums` blocks' shared memory in block
// order — the additions of sum_splits in its order (the same bits as the global path), without
// the partials' round trips through L2, the fence and the counter at the end of every block.
// split_sum_way says when (sm_90, 2 … kClusterMaxSplit splits).
constexpr int kClusterMaxSplit = 16;

// Column block bx, K split by of call `a` (its products where `computes`), in a cluster whose
// block of rank y is grid row y: the first `sums` ranks' partials summed into out.
template <typename T, int NT, bool ACT>
__device__ __forceinline__ void lean_block_cluster(const SmallArgs &a, int bx, int by,
                                                   bool computes, int sums) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int64_t cb = static_cast<int64_t>(bx) * kSmallCols;  // the block's first column
    const int64_t c0 = cb + warp * 32 + 4 * (lane >> 2);
    const bool live = c0 < a.np;
    float *const red = reinterpret_cast<float *>(lean_xs);  // [m, kSmallCols], over the staged x
    if (computes) {
        const int t0 = by * a.tiles_per_split;
        const int count = min(a.ntiles, t0 + a.tiles_per_split) - t0;  // ≥ 1: no empty split
        float acc[2][NT][4];
        zero_acc<NT>(acc);
        lean_range<T, NT, kLeanBatch>(a, c0, live, t0, count, lean_xs, false, acc);
        __syncthreads();  // every warp done with the staged x that the partials overwrite
        store_partials<NT>(a, acc, red + (c0 - cb), kSmallCols, live);
    } else {
        wait_for_previous_grid();  // it stores (and may read) out below
    }
    cluster_sync();  // every block's partials in its shared memory
    const int ranks = static_cast<int>(gridDim.y);
    const int rank = static_cast<int>(blockIdx.y);
    const int elems = static_cast<int>(a.m) * kSmallCols;
    const int hi = (rank + 1) * elems / ranks;
    const unsigned base = static_cast<unsigned>(__cvta_generic_to_shared(red));
    for (int e = rank * elems / ranks + static_cast<int>(threadIdx.x); e < hi; e += kSmallCols) {
        const int r = e / kSmallCols;
        const int64_t c = cb + (e - r * kSmallCols);
        if (c >= a.n) continue;
        float v = 0.f;
        for (int j0 = 0; j0 < sums; j0 += 8) {  // 8 loads in flight at a time
            float t[8];
#pragma unroll
            for (int j = 0; j < 8; ++j)
                t[j] = j0 + j < sums ? ld_cluster_f32(base + 4u * static_cast<unsigned>(e),
                                                      static_cast<unsigned>(j0 + j))
                                     : -0.f;  // v + (−0) is v, −0 too: no bit changes
#pragma unroll
            for (int j = 0; j < 8; ++j) v += t[j];
        }
        store_one<T, ACT>(a, r, c, v);
    }
    cluster_sync();  // no block leaves while another still reads its shared memory
}

template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols, lean_blocks_per_sm(NT))
    qmma_lean_cluster_kernel(SmallArgs a) {
    lean_block_cluster<T, NT, false>(a, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                                     true, a.split);
}

// The grouped form: the cluster spans the grid's rows (the calls' most splits); a block past
// its call's split computes nothing and helps sum.
template <typename T, int NT, bool ACT>
__global__ void __launch_bounds__(kSmallCols, lean_blocks_per_sm(NT))
    qmma_lean_group_cluster_kernel(SmallGroup g) {
    int bx;
    const SmallArgs a = g.call[call_at(g, static_cast<int>(blockIdx.x), bx)];
    const int by = static_cast<int>(blockIdx.y);
    lean_block_cluster<T, NT, ACT>(a, bx, by, by < a.split, a.split);
}

// The summed form: every term's splits in one cluster, summed in (term, split) order.
template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols, lean_blocks_per_sm(NT))
    qmma_lean_sum_cluster_kernel(SmallGroup g) {
    int by;
    const SmallArgs a = g.call[call_at(g, static_cast<int>(blockIdx.y), by)];
    lean_block_cluster<T, NT, false>(a, static_cast<int>(blockIdx.x), by, true,
                                     static_cast<int>(gridDim.y));
}

// Largest m the lean loop takes alone and in grouped or summed launches, and the dynamic shared
// memory a lean or stream block may take in all (a launch asking for more than 48 KiB with the
// static shared memory fails); beyond either: the ring loop. The grouped and summed kernels
// stop at 16 rows: at four n8 tiles they spilled 48–68 bytes a lane and the decoder steps at
// batch 32 took 7–11% longer (H200), while one linear at 32 rows ran 8–11% faster than on the
// ring.
constexpr int64_t kLeanMaxM = 32;
constexpr int64_t kLeanGroupMaxM = 16;
constexpr size_t kLeanMaxSmem = 48 * 1024 - 256;

// Bytes of staged x and tile group words the lean loop needs for call `a`, or 0 where it does
// not apply.
size_t lean_x_bytes(const SmallArgs &a) {
    if (a.m > kLeanMaxM) return 0;
    const int count = a.tiles_per_split;
    const size_t bytes =
        (static_cast<size_t>(a.m) * static_cast<size_t>(lean_x_stride(count)) +
         static_cast<size_t>(lean_meta_vectors(count))) * 16;
    return bytes <= kLeanMaxSmem ? bytes : 0;
}

// Groups of scales a block whose range is up to `count` tiles may stage after x_bytes of x: as
// many as such a range spans (where groups are alike, ⌈(count − 1) / tiles per group⌉ + 1; at
// most one per tile), where they fit. Shared memory kept small keeps 5 blocks per SM at m ≤ 8.
// `aligned`: every range starts at a multiple of count (the lean loop's K splits), so where
// count is a whole number of groups a range spans exactly count / tiles per group; there,
// slots that cannot hold a range's groups serve no block, and none are reserved (their shared
// memory would only keep blocks off the SM: Falcon-7B's summed projections at 8 rows reserved
// 23 of the 24 they needed, and ran four blocks an SM in two waves instead of five in one).
int lean_sz_slots(const SmallArgs &a, size_t x_bytes, int count, bool aligned) {
    const size_t room = x_bytes < kLeanMaxSmem ? (kLeanMaxSmem - x_bytes) / (kSzVectors * 16) : 0;
    const int tpg = a.tiles_per_group;
    const int spanned = tpg > 0 ? std::min(count, (count - 1 + tpg - 1) / tpg + 1) : count;
    if (!aligned)
        return static_cast<int>(std::min<size_t>(
            room, static_cast<size_t>(std::min(spanned, std::max(a.groups, 0)))));
    const int need = tpg > 0 && count % tpg == 0 ? count / tpg : spanned;
    const size_t want = static_cast<size_t>(std::min(need, std::max(a.groups, 0)));
    return room >= want ? static_cast<int>(want) : 0;
}

// Bytes of dynamic shared memory of a lean block for call `a` (x, then its slots of scales).
size_t lean_smem_bytes(const SmallArgs &a) {
    return lean_x_bytes(a) + static_cast<size_t>(a.sz_slots) * kSzVectors * 16;
}

// Call `a` with its slots of scales for the lean loop set (x_bytes: lean_x_bytes(a) > 0).
SmallArgs with_lean_slots(const SmallArgs &a, size_t x_bytes) {
    SmallArgs b = a;
    b.sz_slots = lean_sz_slots(a, x_bytes, a.tiles_per_split, true);
    return b;
}

// ---- The stream loop (linear_small.cuh) --------------------------------------------------------

// Block b's first unit: b·U/G.
__device__ __forceinline__ int64_t stream_start(int64_t b, int64_t units, int64_t grid) {
    return b * units / grid;
}

// The block whose units hold unit u: the last b with b·U/G ≤ u (G ≤ U: no block is empty).
__device__ __forceinline__ int64_t stream_owner(int64_t u, int64_t units, int64_t grid) {
    return ((u + 1) * grid - 1) / units;
}

// A partial run of column block cb (whose first unit is u0) into this block's slot; the last of
// the blocks sharing cb to finish sums their slots in block order into out.
template <typename T, int NT, bool ACT>
__device__ __forceinline__ void store_stream(const SmallArgs &a, const float (&acc)[2][NT][4],
                                             int cb, int64_t c0, bool live, float *slots,
                                             int64_t u0, int64_t units) {
    const int64_t grid = gridDim.x, b = blockIdx.x;
    // The blocks sharing cb: the first one's run ends its units (its slot 1, unless its units
    // start at u0: slot 0), every later one's run starts its units (slot 0); runs between a
    // block's first and last cover whole column blocks and need no slot.
    const int64_t first = stream_owner(u0, units, grid);
    const int64_t last = stream_owner(u0 + a.ntiles - 1, units, grid);
    const int first_slot = stream_start(first, units, grid) >= u0 ? 0 : 1;
    const auto slot_of = [&](int64_t blk) {
        return slots + (blk * 2 + (blk == first ? first_slot : 0)) * a.m * kSmallCols;
    };
    store_partials<NT>(a, acc, slot_of(b) + (c0 - static_cast<int64_t>(cb) * kSmallCols),
                       kSmallCols, live);
    if (!last_to_arrive(a.counters + cb, static_cast<unsigned>(last - first + 1))) return;
    // A thread per column (kSmallCols threads), every row: the slots' loads of one block are
    // independent, so they overlap.
    const int64_t c = static_cast<int64_t>(cb) * kSmallCols + threadIdx.x;
    if (c >= a.n) return;
    float v[8 * NT];
#pragma unroll
    for (int r = 0; r < 8 * NT; ++r) v[r] = 0.f;
    for (int64_t blk = first; blk <= last; ++blk) {
        const float *p = slot_of(blk) + threadIdx.x;
#pragma unroll
        for (int r = 0; r < 8 * NT; ++r)
            if (r < a.m) v[r] += __ldcg(p + r * kSmallCols);
    }
#pragma unroll
    for (int r = 0; r < 8 * NT; ++r)
        if (r < a.m) store_one<T, ACT>(a, r, c, v[r]);
}

// Block b walks units [b·U/G, (b + 1)·U/G): each column block's run on the lean loop, x staged
// g.chunk tiles at a time. Four blocks of 128 threads per SM (the grid the caller plans).
template <typename T, int NT, bool ACT>
__global__ void __launch_bounds__(kSmallCols, 4) qmma_stream_kernel(StreamGroup g) {
    const int64_t units = g.ustart[g.count];
    const int64_t grid = gridDim.x, b = blockIdx.x;
    const int64_t end = stream_start(b + 1, units, grid);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    bool restage = false;
    for (int64_t u = stream_start(b, units, grid); u < end;) {
        int i = 0;
        while (i + 1 < g.count && u >= g.ustart[i + 1]) ++i;
        const SmallArgs a = g.call[i];  // a copy: registers, not parameter memory
        const int64_t rel = u - g.ustart[i];
        const int cb = static_cast<int>(rel / a.ntiles);
        const int t = static_cast<int>(rel - static_cast<int64_t>(cb) * a.ntiles);
        const int64_t u0 = u - t;  // the column block's first unit
        const int count = static_cast<int>(min(end, u0 + a.ntiles) - u);
        const int64_t c0 = static_cast<int64_t>(cb) * kSmallCols + warp * 32 + 4 * (lane >> 2);
        const bool live = c0 < a.np;
        float acc[2][NT][4];
        zero_acc<NT>(acc);
        for (int done = 0; done < count; done += g.chunk) {
            lean_range<T, NT, kLeanBatch>(a, c0, live, t + done, min(g.chunk, count - done),
                                          lean_xs, restage, acc);
            restage = true;
        }
        if (count == a.ntiles) {
            SmallArgs whole = a;
            whole.part = nullptr;  // the whole column block: straight to out
            store_acc<T, NT, ACT>(whole, acc, cb, 0, c0, live);
        } else {
            store_stream<T, NT, ACT>(a, acc, cb, c0, live, g.slots, u0, units);
        }
        u += count;
    }
}

// Whether any of the calls applies an activation as it stores.
bool any_act(const SmallArgs *calls, int count) {
    for (int i = 0; i < count; ++i)
        if (calls[i].act >= 0) return true;
    return false;
}

// Calls f(std::true_type{}) where `act`, else f(std::false_type{}): the kernels with or without
// the activation in their store.
template <typename F>
int dispatch_act(bool act, F &&f) {
    if (act) return f(std::true_type{});
    return f(std::false_type{});
}

// paradec_set_split_sum's mode (0: the environment's).
std::atomic<int> split_sum_mode{0};

// How a lean launch sums its K splits: the global sum; clusters always; or clusters only where
// every cluster of the grid is resident at once. Clusters lost up to 60% on an H100 where a
// launch had more clusters than the device holds at once — likely because a cluster's blocks
// keep their SM slots until the whole cluster has summed (docs/gpu-bench-linear-h200.md).
enum class SplitSumWay { Global, Cluster, Resident };

// The default (mode 4, "auto"): resident clusters from this many rows, the global sum below.
// On an H100 resident clusters took 2–6% off every family's 8-row decode step, but lost up to
// 18% of Falcon-7B's 1-row step, whose clusters all fit (docs/gpu-bench-linear-h200.md).
constexpr int64_t kClusterMinRows = 8;

// The way for a lean launch of `rows` rows in `splits` grid rows: the mode, or
// PARADEC_SPLIT_SUM=global / cluster / resident / auto (read once; unset is auto); clusters
// need sm_90 or later and 2 … 16 splits.
SplitSumWay split_sum_way(int splits, int64_t rows) {
    static const int env_mode = env_is("PARADEC_SPLIT_SUM", "global")     ? 1
                                : env_is("PARADEC_SPLIT_SUM", "cluster")  ? 2
                                : env_is("PARADEC_SPLIT_SUM", "resident") ? 3
                                                                          : 4;
    const int set = split_sum_mode.load(std::memory_order_relaxed);
    const int mode = set == 0 ? env_mode : set;
    if (mode == 1 || (mode == 4 && rows < kClusterMinRows) || splits < 2 ||
        splits > kClusterMaxSplit || current_device_cc() < 90)
        return SplitSumWay::Global;
    return mode == 2 ? SplitSumWay::Cluster : SplitSumWay::Resident;
}

// Whether and how many clusters of (1, cluster_y) blocks of `kernel` with `smem` bytes the
// current device takes, asked once per kernel, size and device (a decode step launches the same
// every token): the kernel allowed clusters past 8 blocks where cluster_y needs it (-1 where
// refused: no cluster launch then), and cudaOccupancyMaxActiveClusters — the clusters it holds
// at once, 0 where the query fails.
int cluster_room(const void *kernel, size_t smem, unsigned cluster_y) {
    using Key = std::tuple<const void *, size_t, unsigned, int>;
    static std::mutex mu;
    static std::map<Key, int> known;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    const Key key{kernel, smem, cluster_y, dev};
    {
        std::lock_guard<std::mutex> lock(mu);
        const auto it = known.find(key);
        if (it != known.end()) return it->second;
    }
    int n = 0;
    if (cluster_y > 8 &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
            cudaSuccess) {
        cudaGetLastError();
        n = -1;
    } else {
        cudaLaunchConfig_t cfg;
        cudaLaunchAttribute attr[2];
        fill_launch_config(cfg, attr, dim3(1, cluster_y), dim3(kSmallCols), smem, nullptr, false,
                           cluster_y);
        if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
            cudaGetLastError();
            n = 0;
        }
    }
    std::lock_guard<std::mutex> lock(mu);
    known.emplace(key, n);
    return n;
}

// Lean launches this host thread summed inside clusters (paradec_cluster_sum_launches): a test
// sees whether a mode took clusters at all, whatever other threads launch meanwhile.
thread_local uint64_t cluster_sum_launches = 0;

// Launches a lean kernel of `rows` rows summing its K splits inside clusters of the grid's rows
// (grid.y blocks), where split_sum_way says so and the device takes them (all of the grid's
// clusters at once, for Resident); its shared memory the lean loop's `lean_bytes` or the
// partials, where larger. Whether it ran: where not, nothing ran (a launch refused is cleared)
// and the caller launches the global sum.
template <typename Kernel, typename Args>
bool launched_in_clusters(Kernel kernel, int64_t rows, dim3 grid, size_t lean_bytes,
                          cudaStream_t stream, const Args &args) {
    const SplitSumWay way = split_sum_way(static_cast<int>(grid.y), rows);
    if (way == SplitSumWay::Global) return false;
    const size_t smem =
        std::max(lean_bytes, static_cast<size_t>(rows) * kSmallCols * sizeof(float));
    const int room = cluster_room(reinterpret_cast<const void *>(kernel), smem, grid.y);
    if (room < 0 || (way == SplitSumWay::Resident && room < static_cast<int>(grid.x)))
        return false;
    if (launch_dependent_in_clusters(kernel, grid, dim3(kSmallCols), smem, stream, grid.y,
                                     args) != PARADEC_K_OK)
        return false;
    ++cluster_sum_launches;
    return true;
}

}  // namespace

int stream_chunk_tiles(size_t m) {
    // stream_x_bytes and the group words of the largest chunk within 48 KiB less the kernel's
    // static shared memory (a launch asking for more than 48 KiB in all fails); at most 128
    // tiles (4096 rows of K).
    constexpr int kMostTiles = 128;
    const size_t vectors =
        (kLeanMaxSmem - static_cast<size_t>(lean_meta_vectors(kMostTiles)) * 16) / 16 /
        std::max<size_t>(m, 1);
    return static_cast<int>(std::min<size_t>(kMostTiles, (vectors - 4) / 4));
}

int launch_quant_stream(int dtype, const StreamGroup &g, int grid, cudaStream_t stream) {
    const int64_t m = g.call[0].m;
    if (g.count < 1 || g.count > kSmallGroupMax || m < 1 || m > static_cast<int64_t>(kStreamMaxM) ||
        grid < 1 || grid > g.ustart[g.count] || g.chunk < 1 || !g.slots)
        return PARADEC_K_BAD_SHAPE;
    for (int i = 0; i < g.count; ++i)
        if (g.call[i].m != m || !g.call[i].counters) return PARADEC_K_BAD_SHAPE;
    const size_t xbytes = stream_x_bytes(static_cast<size_t>(m), g.chunk) +
                          static_cast<size_t>(lean_meta_vectors(g.chunk)) * 16;
    StreamGroup sg = g;
    int slots = 0;
    for (int i = 0; i < g.count; ++i) {
        sg.call[i].sz_slots = lean_sz_slots(g.call[i], xbytes, g.chunk, false);
        slots = max(slots, sg.call[i].sz_slots);
    }
    const size_t smem = xbytes + static_cast<size_t>(slots) * kSzVectors * 16;
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        return dispatch_act(any_act(g.call, g.count), [&](auto act) {
            constexpr bool A = decltype(act)::value;
            if (m <= 8)
                return launch_dependent(qmma_stream_kernel<T, 1, A>,
                                        dim3(static_cast<unsigned>(grid)), dim3(kSmallCols), smem,
                                        stream, sg);
            return launch_dependent(qmma_stream_kernel<T, 2, A>, dim3(static_cast<unsigned>(grid)),
                                    dim3(kSmallCols), smem, stream, sg);
        });
    });
}

int launch_quant_small_group(int dtype, const SmallGroup &g, cudaStream_t stream) {
    if (g.count < 1 || g.count > kSmallGroupMax) return PARADEC_K_BAD_SHAPE;
    const int64_t m = g.call[0].m;
    int splits = 1;
    size_t lean_bytes = 0;
    bool lean = g.lean && m <= kLeanGroupMaxM;
    SmallGroup lg = g;  // with the lean loop's slots of scales
    for (int i = 0; i < g.count; ++i) {
        if (g.call[i].m != m) return PARADEC_K_BAD_SHAPE;
        splits = max(splits, g.call[i].split);
        const size_t b = lean_x_bytes(g.call[i]);
        lean = lean && b > 0;
        if (b > 0) lg.call[i] = with_lean_slots(g.call[i], b);
        lean_bytes = std::max(lean_bytes, lean_smem_bytes(lg.call[i]));
    }
    const unsigned blocks = static_cast<unsigned>(g.first[g.count]);
    const dim3 grid(blocks, static_cast<unsigned>(splits));
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        return dispatch_act(any_act(g.call, g.count), [&](auto act) {
            constexpr bool A = decltype(act)::value;
            if (lean && launched_in_clusters(m <= 8 ? qmma_lean_group_cluster_kernel<T, 1, A>
                                                    : qmma_lean_group_cluster_kernel<T, 2, A>,
                                             m, grid, lean_bytes, stream, lg))
                return static_cast<int>(PARADEC_K_OK);
            if (lean && m <= 8)
                return launch_dependent(qmma_lean_group_kernel<T, 1, A>, grid, dim3(kSmallCols),
                                        lean_bytes, stream, lg);
            if (lean)
                return launch_dependent(qmma_lean_group_kernel<T, 2, A>, grid, dim3(kSmallCols),
                                        lean_bytes, stream, lg);
            if (m <= 8)
                qmma_small_group_kernel<T, 1, A><<<grid, kSmallCols, 0, stream>>>(g);
            else if (m <= 16)
                qmma_small_group_kernel<T, 2, A><<<grid, kSmallCols, 0, stream>>>(g);
            else
                qmma_small_group_kernel<T, 4, A><<<grid, kSmallCols, 0, stream>>>(g);
            return launch_status();
        });
    });
}

int launch_quant_small_sum(int dtype, const SmallGroup &g, cudaStream_t stream) {
    if (g.count < 1 || g.count > kSmallGroupMax) return PARADEC_K_BAD_SHAPE;
    const int64_t m = g.call[0].m, np = g.call[0].np;
    size_t lean_bytes = 0;
    bool lean = g.lean && m <= kLeanGroupMaxM;
    SmallGroup lg = g;  // with the lean loop's slots of scales
    for (int i = 0; i < g.count; ++i) {
        const SmallArgs &a = g.call[i];
        if (a.m != m || a.np != np || a.split != g.first[g.count] ||
            g.first[i + 1] - g.first[i] < 1 || a.part == nullptr || a.counters == nullptr)
            return PARADEC_K_BAD_SHAPE;
        const size_t b = lean_x_bytes(a);
        lean = lean && b > 0;
        if (b > 0) lg.call[i] = with_lean_slots(a, b);
        lean_bytes = std::max(lean_bytes, lean_smem_bytes(lg.call[i]));
    }
    const dim3 grid(static_cast<unsigned>(small_col_blocks(static_cast<size_t>(np))),
                    static_cast<unsigned>(g.first[g.count]));
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        if (lean && launched_in_clusters(m <= 8 ? qmma_lean_sum_cluster_kernel<T, 1>
                                                : qmma_lean_sum_cluster_kernel<T, 2>,
                                         m, grid, lean_bytes, stream, lg))
            return static_cast<int>(PARADEC_K_OK);
        if (lean && m <= 8)
            return launch_dependent(qmma_lean_sum_kernel<T, 1>, grid, dim3(kSmallCols), lean_bytes,
                                    stream, lg);
        if (lean)
            return launch_dependent(qmma_lean_sum_kernel<T, 2>, grid, dim3(kSmallCols), lean_bytes,
                                    stream, lg);
        if (m <= 8)
            qmma_small_sum_kernel<T, 1><<<grid, kSmallCols, 0, stream>>>(g);
        else if (m <= 16)
            qmma_small_sum_kernel<T, 2><<<grid, kSmallCols, 0, stream>>>(g);
        else
            qmma_small_sum_kernel<T, 4><<<grid, kSmallCols, 0, stream>>>(g);
        return launch_status();
    });
}

int launch_quant_small(int dtype, const SmallArgs &a, bool lean, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(small_col_blocks(static_cast<size_t>(a.np))),
                    static_cast<unsigned>(a.split));
    const size_t x_bytes = lean ? lean_x_bytes(a) : 0;
    const SmallArgs la = x_bytes ? with_lean_slots(a, x_bytes) : a;
    const size_t lean_bytes = x_bytes ? lean_smem_bytes(la) : 0;
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        if (lean_bytes && launched_in_clusters(a.m <= 8    ? qmma_lean_cluster_kernel<T, 1>
                                               : a.m <= 16 ? qmma_lean_cluster_kernel<T, 2>
                                                           : qmma_lean_cluster_kernel<T, 4>,
                                               a.m, grid, lean_bytes, stream, la))
            return static_cast<int>(PARADEC_K_OK);
        if (lean_bytes && a.m <= 8)
            return launch_dependent(qmma_lean_kernel<T, 1>, grid, dim3(kSmallCols), lean_bytes,
                                    stream, la);
        if (lean_bytes && a.m <= 16)
            return launch_dependent(qmma_lean_kernel<T, 2>, grid, dim3(kSmallCols), lean_bytes,
                                    stream, la);
        if (lean_bytes)
            return launch_dependent(qmma_lean_kernel<T, 4>, grid, dim3(kSmallCols), lean_bytes,
                                    stream, la);
        if (a.m <= 8)
            qmma_small_kernel<T, 1><<<grid, kSmallCols, 0, stream>>>(a);
        else if (a.m <= 16)
            qmma_small_kernel<T, 2><<<grid, kSmallCols, 0, stream>>>(a);
        else
            qmma_small_kernel<T, 4><<<grid, kSmallCols, 0, stream>>>(a);
        return launch_status();
    });
}

}  // namespace paradec

extern "C" int paradec_set_split_sum(int mode) {
    if (mode < 0 || mode > 4) return -1;
    return paradec::split_sum_mode.exchange(mode);
}

extern "C" uint64_t paradec_cluster_sum_launches(void) { return paradec::cluster_sum_launches; }
