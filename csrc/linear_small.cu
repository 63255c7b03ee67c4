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
#include <type_traits>

#include "common.cuh"
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

// (a & b) | c in one instruction.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Nibbles s and s + 4 of w as the pair (magic + q_s, magic + q_{s+4}).
template <typename T>
__device__ __forceinline__ uint32_t nibble_pair(uint32_t w, int s) {
    return and_or(w >> (4 * s), 0x000f000fu, Magic<T>::kBits);
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
__device__ __forceinline__ void copy_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void copy_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// out[row, c] = v (+ bias[c]) (+ out[row, c]).
template <typename T>
__device__ __forceinline__ void store_one(const SmallArgs &a, int64_t row, int64_t c, float v) {
    if (a.bias) v += Num<T>::to_f(static_cast<const T *>(a.bias)[c]);
    T *p = static_cast<T *>(a.out) + row * a.n + c;
    if (a.accumulate) v += Num<T>::to_f(*p);
    *p = Num<T>::from_f(v);
}

// NT: n8 tiles of x rows (m ≤ 8·NT).
// Column block bx (of 128 columns) and K split by of one call `a`: the body of the kernel and of
// its grouped form.
template <typename T, int NT>
__device__ __forceinline__ void small_block(const SmallArgs &a, int bx, int by) {
    constexpr int S = stages<NT>();
    constexpr int U = tiles_per_stage<NT>();
    __shared__ uint4 ring[kWarps][S][U][1 + NT][32];
    __shared__ float2 szring[kWarps][S][U][32];
    __shared__ int sum_here;
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
        return i < count ? static_cast<int>(__ldg(a.tiles + 2 * (t0 + i) + 1) & 0xFFFFFFu) : -1;
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
    uint32_t zpair[4] = {0u, 0u, 0u, 0u};
    int grp = -1;
    // acc += accg · scale (per column), accg = 0.
    auto fold = [&]() {
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    acc[h][nt][e] = fmaf(accg[h][nt][e], scale[2 * h + (e >> 1)], acc[h][nt][e]);
                    accg[h][nt][e] = 0.f;
                }
    };

    // Tile i (of the range), in slot u of ring stage `stage`: a new group folds the last one
    // in and takes its scales and zeros; then the tile's mma.
    auto tile_mma = [&](int i, int stage, int u) {
        const int gi = __shfl_sync(0xffffffffu, batch_lo, i & 31);
        if (gi != grp) {
            if (grp >= 0) fold();
            const float2 mine = szring[warp][stage][u][lane];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int src = (lane & ~3) | j;
                const float s = __shfl_sync(0xffffffffu, mine.x, src);
                const float nz = __shfl_sync(0xffffffffu, mine.y, src);
                scale[j] = s;
                // sz holds −zero·scale, exact in f32, so the quotient is the integer zero to
                // within the fast division's 2 ulp, which rounding removes; any zero serves a
                // zero scale.
                const float z = s != 0.f ? rintf(__fdividef(-nz, s)) : 0.f;
                zpair[j] = splat2<T>(Magic<T>::kValue + z);
            }
            grp = gi;
        }
        const uint4 wv = ring[warp][stage][u][0][lane];
        const uint32_t w[4] = {wv.x, wv.y, wv.z, wv.w};
        uint32_t b[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const uint4 xv = ring[warp][stage][u][1 + nt][lane];
            b[nt][0] = __byte_perm(xv.x, xv.z, 0x5410);  // elements (0, 4)
            b[nt][1] = __byte_perm(xv.x, xv.z, 0x7632);  // (1, 5)
            b[nt][2] = __byte_perm(xv.y, xv.w, 0x5410);  // (2, 6)
            b[nt][3] = __byte_perm(xv.y, xv.w, 0x7632);  // (3, 7)
        }
#pragma unroll
        for (int c = 0; c < 2; ++c) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const uint32_t af[4] = {
                    sub2<T>(nibble_pair<T>(w[2 * h], 2 * c), zpair[2 * h]),
                    sub2<T>(nibble_pair<T>(w[2 * h + 1], 2 * c), zpair[2 * h + 1]),
                    sub2<T>(nibble_pair<T>(w[2 * h], 2 * c + 1), zpair[2 * h]),
                    sub2<T>(nibble_pair<T>(w[2 * h + 1], 2 * c + 1), zpair[2 * h + 1]),
                };
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
                    mma_16816<T>(accg[h][nt], af, b[nt][2 * c], b[nt][2 * c + 1]);
            }
        }
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

    // Thread (g, q) holds, for x row nt·8 + 2q + e, the columns c0 .. c0 + 3 as
    // acc[0][nt][e], acc[0][nt][2 + e], acc[1][nt][e], acc[1][nt][2 + e].
    if (!a.part) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int64_t r = nt * 8 + 2 * q + e;
                if (!live || r >= a.m) continue;
                const float v[4] = {acc[0][nt][e], acc[0][nt][2 + e], acc[1][nt][e],
                                    acc[1][nt][2 + e]};
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (c0 + j < a.n) store_one<T>(a, r, c0 + j, v[j]);
            }
        return;
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int64_t r = nt * 8 + 2 * q + e;
            if (!live || r >= a.m) continue;
            *reinterpret_cast<float4 *>(a.part + (by * a.m + r) * a.np + c0) =
                make_float4(acc[0][nt][e], acc[0][nt][2 + e], acc[1][nt][e], acc[1][nt][2 + e]);
        }
    // The last block of this column block to get here sums every split's partials.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned done = atomicAdd(a.counters + bx, 1u);
        sum_here = done == static_cast<unsigned>(a.split - 1);
        if (sum_here) a.counters[bx] = 0u;  // zero again for the scratch's next user
    }
    __syncthreads();
    if (!sum_here) return;
    __threadfence();
    const int64_t cb = static_cast<int64_t>(bx) * kSmallCols;
    for (int64_t i = threadIdx.x; i < a.m * kSmallCols; i += kSmallCols) {
        const int64_t r = i / kSmallCols;
        const int64_t c = cb + i % kSmallCols;
        if (c >= a.n) continue;
        float v = 0.f;
        for (int p = 0; p < a.split; ++p) v += __ldcg(a.part + (p * a.m + r) * a.np + c);
        store_one<T>(a, r, c, v);
    }
}

template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols) qmma_small_kernel(SmallArgs a) {
    small_block<T, NT>(a, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y));
}

// Several calls of one m in one launch: column blocks first[i] … first[i + 1] − 1 of the grid are
// call i's; a block past its call's split has nothing to do.
template <typename T, int NT>
__global__ void __launch_bounds__(kSmallCols) qmma_small_group_kernel(SmallGroup g) {
    int i = 0;
    while (i + 1 < g.count && static_cast<int>(blockIdx.x) >= g.first[i + 1]) ++i;
    const SmallArgs a = g.call[i];  // a copy: registers, not indexed parameter memory
    if (static_cast<int>(blockIdx.y) >= a.split) return;
    small_block<T, NT>(a, static_cast<int>(blockIdx.x) - g.first[i], static_cast<int>(blockIdx.y));
}

template <typename T, int NT>
int launch_nt(const SmallArgs &a, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(small_col_blocks(static_cast<size_t>(a.np))),
                    static_cast<unsigned>(a.split));
    qmma_small_kernel<T, NT><<<grid, kSmallCols, 0, stream>>>(a);
    return launch_status();
}

template <typename T, int NT>
int launch_group_nt(const SmallGroup &g, unsigned blocks, unsigned splits, cudaStream_t stream) {
    qmma_small_group_kernel<T, NT><<<dim3(blocks, splits), kSmallCols, 0, stream>>>(g);
    return launch_status();
}

}  // namespace

int launch_quant_small_group(int dtype, const SmallGroup &g, cudaStream_t stream) {
    if (g.count < 1 || g.count > kSmallGroupMax) return PARADEC_K_BAD_SHAPE;
    const int64_t m = g.call[0].m;
    int splits = 1;
    for (int i = 0; i < g.count; ++i) {
        if (g.call[i].m != m) return PARADEC_K_BAD_SHAPE;
        splits = max(splits, g.call[i].split);
    }
    const unsigned blocks = static_cast<unsigned>(g.first[g.count]);
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        if (m <= 8) return launch_group_nt<T, 1>(g, blocks, splits, stream);
        if (m <= 16) return launch_group_nt<T, 2>(g, blocks, splits, stream);
        return launch_group_nt<T, 4>(g, blocks, splits, stream);
    });
}

int launch_quant_small(int dtype, const SmallArgs &a, cudaStream_t stream) {
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        if (a.m <= 8) return launch_nt<T, 1>(a, stream);
        if (a.m <= 16) return launch_nt<T, 2>(a, stream);
        return launch_nt<T, 4>(a, stream);
    });
}

}  // namespace paradec
