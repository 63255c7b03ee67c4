// Prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a): head dims 64 and 128, fp16 and
// bf16, the same arguments and masking as attention_prefill.cu's mma.sync kernel (its CUDA
// twin is cpu::attention::attention). The default there on Hopper; PARADEC_ATTN_PREFILL=mma
// keeps the mma.sync one.
//
// One block per (128 query tokens, query head, sequence), heaviest (latest) query tiles first:
// two warpgroups of 64 query rows each. Q, K and V tiles lie in shared memory in the 128-byte
// swizzle that wgmma reads through descriptors (rows of 64 elements, wgmma.cuh): Q staged once,
// K and V tiles of 128 keys streamed by cp.async three stages deep, so that tile n + 2 loads
// while tile n + 1's scores and tile n's output are computed.
//  - S = Q·Kᵀ: wgmma m64n128k16 with both operands in shared memory, K-major;
//  - O += P·V: P from the S accumulators straight into A fragments (the accumulator and
//    A-register layouts coincide per 16-key step), V read MN-major from the tile as it was
//    copied (keys are k, head dims are N): no transpose;
//  - the online softmax in f32 per row (the lane's rows g and g + 8 of its warp's 16), masking
//    only on tiles that need it.
// Per tile, as FlashAttention-3 overlaps within a warpgroup: S of tile n + 1 and P·V of tile n
// are issued together; the softmax of tile n + 1 runs while P·V of tile n is in flight, and
// only O's rescale waits for it. What FlashAttention-3 adds on top — a producer warp with the
// bulk-copy engine and two consumer warpgroups ping-ponging — would follow from measurements.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "attention.cuh"
#include "attention_mma.cuh"
#include "linear_gemm.cuh"
#include "mma.cuh"
#include "prefill_plan.h"
#include "tma.cuh"
#include "wgmma.cuh"

namespace paradec {
namespace {

constexpr int kWgRows = 64;                        // query rows per warpgroup
constexpr int kWgGroups = 2;                       // warpgroups per block
constexpr int kWgBM = kWgRows * kWgGroups;         // query rows per block
constexpr int kWgThreads = 128 * kWgGroups;

// The tiles of head dim D: BN keys per K/V tile, `Stages` of each in shared memory — 128 keys
// and three stages up to d = 128; 64 keys and two stages at d = 256, where O takes 128
// registers a thread and Q 64 KB. Every tile lies in the 128-byte swizzle as D / 64 sub-tiles
// of 64 elements per row, each on a 1024-byte boundary: Q (kWgBM rows), then the K tiles and
// the V tiles, then the warp-specialized kernel's barriers.
template <int D>
struct WgLayout {
    static constexpr int BN = D > 128 ? 64 : 128;
    static constexpr int Stages = D > 128 ? 2 : 3;
    static constexpr size_t qSub = static_cast<size_t>(kWgBM) * 128;  // Q sub-tile: 64 dims
    static constexpr size_t kSub = static_cast<size_t>(BN) * 128;     // K/V sub-tile: 64 dims
    static constexpr size_t kTile = kSub * (D / 64);
    static constexpr size_t qOff = 0;
    static constexpr size_t kOff = qOff + qSub * (D / 64);
    static constexpr size_t vOff = kOff + Stages * kTile;
    // Per stage: K full, V full, K empty, V empty; then Q full, Q empty.
    static constexpr size_t barOff = vOff + Stages * kTile;
    static constexpr size_t bytes = barOff + (4 * Stages + 2) * 8 + 1024;  // + alignment slack
    static_assert(D % 64 == 0, "whole 64-element sub-tiles");
    static_assert(qSub % 1024 == 0 && kSub % 1024 == 0, "sub-tiles of whole swizzle periods");
    static_assert(bytes <= 227 * 1024, "fits one block's shared memory on sm_90");
};

// 2^x on the special-function unit alone (ex2.approx.ftz): results below 2^-126 flush to zero,
// which a probability that small relative to its row's maximum (whose own term is 1) never
// misses; exp2f adds a range fix-up of three instructions to every one.
[[maybe_unused]] __device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// A block's shared memory in layout L: the dynamic window rounded up to the swizzle's
// 1024-byte period, and its tiles and barriers.
template <typename L>
struct WgSmem {
    unsigned char *base;
    __device__ __forceinline__ explicit WgSmem(unsigned char *window) {
        const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(window));
        base = window + (((raw + 1023u) & ~1023u) - raw);
    }
    __device__ __forceinline__ unsigned char *q() const { return base + L::qOff; }
    __device__ __forceinline__ unsigned char *k(int stage) const { return base + L::kOff + stage * L::kTile; }
    __device__ __forceinline__ unsigned char *v(int stage) const { return base + L::vOff + stage * L::kTile; }
    __device__ __forceinline__ uint64_t *bars() const { return reinterpret_cast<uint64_t *>(base + L::barOff); }
};

// The per-row state of a warpgroup's 64 query rows through the tile loop, for lane (g, t4) of
// its warp: rows g and g + 8, their running maxima (base 2) and sums. S accumulators: rows g
// (s[4j], s[4j + 1]) and g + 8 (s[4j + 2], s[4j + 3]), keys 8j + 2t4, + 1. A row sees keys
// first … last (causal, the block's hi, the window); the lane keeps them less its 2t4.
template <typename T, int BN>
struct WgRows {
    const AttnArgs &a;
    const float *mrow;
    // Positions in 32 bits: launch_wgmma_d takes no call whose keys reach 2^30.
    int last0, last1, first0, first1, pmin, pmax;
    float sl2, m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    int t4;

    // The rows of block pb (sequence b) that lane `lane` of the warp whose first row in the
    // block's tile is wrow holds.
    __device__ __forceinline__ WgRows(const AttnArgs &args, const PrefillBlock<T> &pb, int b,
                                      int wrow, int lane)
        : a(args),
          mrow(args.mask ? args.mask + b * args.mask_stride : nullptr),
          pmin(static_cast<int>(pb.past + pb.t0)),
          pmax(static_cast<int>(pb.past + pb.t0 + kWgBM - 1)),
          sl2(args.scale * kLog2e),
          t4(lane & 3) {
        const int64_t p0 = pb.past + pb.t0 + wrow + (lane >> 2);
        const PrefillRowKeys r0 = prefill_row_keys(p0, pb.hi, pb.lo, args.window, t4);
        const PrefillRowKeys r1 = prefill_row_keys(p0 + 8, pb.hi, pb.lo, args.window, t4);
        last0 = static_cast<int>(r0.last);
        last1 = static_cast<int>(r1.last);
        first0 = static_cast<int>(r0.first);
        first1 = static_cast<int>(r1.first);
    }

    // Softmax of tile n's scores in s: mask where the tile needs it, the rows' new maxima,
    // exponentials in place (the scale folded into their argument, but where an additive mask
    // needs the scores in log2 units first), the sums. al0/al1: the factors that rescale what
    // was accumulated before. The lane's score i is key j0 + 2t4 + 8(i / 4) + (i & 1): its
    // compile-time part is compared against the rows' bounds, taken to the tile once (H100,
    // causal, d = 64, 512 tokens: 64-bit compares per score had taken a masked tile's softmax
    // to about three times an unmasked one's instructions).
    __device__ __forceinline__ void softmax(float (&s)[BN / 2], int n, float &al0, float &al1) {
        const int j0 = n * BN;
        const bool need = mrow != nullptr || j0 + BN - 1 > pmin ||
                          (a.window > 0 && j0 <= pmax - a.window);
        if (need) {
            const int hi0 = prefill_tile_offset(last0, j0, BN), hi1 = prefill_tile_offset(last1, j0, BN);
            const int lo0 = prefill_tile_offset(first0, j0, BN), lo1 = prefill_tile_offset(first1, j0, BN);
            // Two loops, with and without an additive mask, so that neither carries the other's
            // work per score.
            if (mrow) {
                const float *mk = mrow + j0 + 2 * t4;
#pragma unroll
                for (int i = 0; i < BN / 2; ++i) {
                    const int c = (i / 4) * 8 + (i & 1);
                    const bool vis = (i & 2) ? c <= hi1 && c >= lo1 : c <= hi0 && c >= lo0;
                    s[i] = vis ? s[i] * sl2 + mk[c] * kLog2e : -INFINITY;
                }
            } else {
#pragma unroll
                for (int i = 0; i < BN / 2; ++i) {
                    const int c = (i / 4) * 8 + (i & 1);
                    const bool vis = (i & 2) ? c <= hi1 && c >= lo1 : c <= hi0 && c >= lo0;
                    s[i] = vis ? s[i] : -INFINITY;
                }
            }
        }
        const float f = mrow != nullptr ? 1.f : sl2;  // what turns s into log2 units
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int i = 0; i < BN / 2; i += 4) {
            mx0 = fmaxf(mx0, fmaxf(s[i], s[i + 1]));
            mx1 = fmaxf(mx1, fmaxf(s[i + 2], s[i + 3]));
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float mu0 = softmax_rescale(m0, mx0 * f, al0), mu1 = softmax_rescale(m1, mx1 * f, al1);
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int i = 0; i < BN / 2; i += 4) {
            s[i] = exp2_ftz(fmaf(s[i], f, -mu0));
            s[i + 1] = exp2_ftz(fmaf(s[i + 1], f, -mu0));
            s[i + 2] = exp2_ftz(fmaf(s[i + 2], f, -mu1));
            s[i + 3] = exp2_ftz(fmaf(s[i + 3], f, -mu1));
            sum0 += s[i] + s[i + 1];
            sum1 += s[i + 2] + s[i + 3];
        }
        l0 = l0 * al0 + sum0;
        l1 = l1 * al1 + sum1;
    }

    // Normalizes o and stores rows g and g + 8 of the warp (query tokens ta and ta + 8), dims
    // 8j + 2t4 and + 1.
    template <int D>
    __device__ __forceinline__ void store(const float (&o)[D / 2], int64_t ta, int b, int h) {
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            l0 += __shfl_xor_sync(0xffffffffu, l0, off);
            l1 += __shfl_xor_sync(0xffffffffu, l1, off);
        }
        const float i0 = l0 > 0.f ? 1.0f / l0 : 0.f, i1 = l1 > 0.f ? 1.0f / l1 : 0.f;
        T *ob = static_cast<T *>(a.out);
        const int64_t tb = ta + 8;
#pragma unroll
        for (int i = 0; i < D / 2; i += 4) {
            const int col = (i / 4) * 8 + 2 * t4;
            if (ta < a.q_len) {
                T *p = ob + ((static_cast<int64_t>(b) * a.q_len + ta) * a.heads + h) * D + col;
                *reinterpret_cast<typename Num<T>::T2 *>(p) =
                    Num<T>::from_f2(make_float2(o[i] * i0, o[i + 1] * i0));
            }
            if (tb < a.q_len) {
                T *p = ob + ((static_cast<int64_t>(b) * a.q_len + tb) * a.heads + h) * D + col;
                *reinterpret_cast<typename Num<T>::T2 *>(p) =
                    Num<T>::from_f2(make_float2(o[i + 2] * i1, o[i + 3] * i1));
            }
        }
    }
};

// P as A fragments from the exponentials in s: k step kk covers n8 chunks 2kk (a0, a1) and
// 2kk + 1 (a2, a3).
template <typename T, int BN>
__device__ __forceinline__ void pack_p(const float (&s)[BN / 2], uint32_t (&pa)[BN / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        pa[kk][0] = pack2<T>(s[8 * kk], s[8 * kk + 1]);
        pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

// S = Q·Kᵀ (64 rows × L::BN keys per warpgroup; qw: the warpgroup's Q rows, kt: a K tile, both
// in the swizzled sub-tiles of layout L), issued and committed, not waited.
template <typename T, typename L, int D>
__device__ __forceinline__ void issue_scores(float (&s)[L::BN / 2], const unsigned char *qw,
                                             const unsigned char *kt) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss<T, L::BN>(s, sw128_desc(qw + (kk / 4) * L::qSub, (kk % 4) * 32),
                           sw128_desc(kt + (kk / 4) * L::kSub, (kk % 4) * 32), kk > 0);
    wgmma_commit();
}

// O += P·V (64 rows × D per warpgroup; vt: a V tile read MN-major, 16 keys a step), issued and
// committed, not waited.
template <typename T, typename L, int D>
__device__ __forceinline__ void issue_output(float (&o)[D / 2], const uint32_t (&pa)[L::BN / 16][4],
                                             const unsigned char *vt) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < L::BN / 16; ++kk)
        wgmma_rs<T, D, 1>(o, pa[kk], sw128_desc_mn(vt + kk * 16 * 128, L::kSub));
    wgmma_commit();
}

template <int D>
__device__ __forceinline__ void rescale(float (&o)[D / 2], float al0, float al1) {
#pragma unroll
    for (int k = 0; k < D / 2; k += 4) {
        o[k] *= al0;
        o[k + 1] *= al0;
        o[k + 2] *= al1;
        o[k + 3] *= al1;
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWgThreads, 1) prefill_wgmma_kernel(AttnArgs a) {
#if PARADEC_WGMMA_ARCH
    using L = WgLayout<D>;
    constexpr int BN = L::BN, Stages = L::Stages;
    static_assert(Stages == 3, "tile i + 2 loads while tiles i and i + 1 are read");
    constexpr int CH = D / kVec;    // 16-byte chunks of a row
    extern __shared__ __align__(128) unsigned char wsmem[];
    const WgSmem<L> sm(wsmem);
    unsigned char *qt = sm.q();

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, wg = warp >> 2;
    const int mblk = gridDim.x - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const PrefillBlock<T> pb(a, D, kWgBM, mblk, h, b);
    const int64_t t0 = pb.t0, lo = pb.lo, hi = pb.hi, kv_dim = pb.kv_dim;
    const T *kbase = pb.kbase, *vbase = pb.vbase;
    // Rows past q_len are zero.
    stage_query_tile<T>(
        a, t0, b, h, D, kWgBM, CH,
        [&](int r, int c) { return qt + (c / 8) * L::qSub + sw128_offset(r, c % 8); }, tid, kWgThreads);
    // K and V of tile n into `stage`; keys outside [lo, hi] zero-filled and not read.
    auto load_kv = [&](int n, int stage) {
        unsigned char *kt = sm.k(stage), *vt = sm.v(stage);
        for (int i = tid; i < BN * CH; i += kWgThreads) {
            const int r = i / CH, c = i % CH;
            const int64_t j = static_cast<int64_t>(n) * BN + r;
            const bool ok = j >= lo && j <= hi;
            const int64_t off = ok ? j * kv_dim + c * kVec : 0;
            const int at = (c / 8) * static_cast<int>(L::kSub) + sw128_offset(r, c % 8);
            cp_async16_zfill(kt + at, kbase + off, ok);
            cp_async16_zfill(vt + at, vbase + off, ok);
        }
    };

    const int wrow = wg * kWgRows + (warp & 3) * 16;  // the warp's first row in the tile
    WgRows<T, BN> rows(a, pb, b, wrow, lane);
    const unsigned char *qw = qt + wg * kWgRows * 128;  // this warpgroup's 64 rows of Q

    // Tiles n_first + i, i < count, in stage i % Stages. Copy groups: Q with tile 0, then one
    // per tile (empty past the last, so that the counting stays uniform).
    const int n_first = static_cast<int>(lo / BN), n_last = static_cast<int>(hi / BN);
    const int count = n_last - n_first + 1;
    load_kv(n_first, 0);
    cp_async_commit_group();
    if (count > 1) load_kv(n_first + 1, 1);
    cp_async_commit_group();
    cp_async_wait_groups<1>();
    fence_async_shared();
    __syncthreads();  // Q and tile 0 have landed for every thread, visible to wgmma
    float s[BN / 2];
    issue_scores<T, L, D>(s, qw, sm.k(0));
    wgmma_wait<0>();
    fence_regs(s);
    float al0, al1;
    rows.softmax(s, n_first, al0, al1);
    uint32_t pa[BN / 16][4];
    pack_p<T, BN>(s, pa);

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    for (int i = 0; i + 1 < count; ++i) {
        cp_async_wait_groups<0>();
        fence_async_shared();
        // Tile i + 1 has landed for every thread; every warpgroup is done with tile i − 1, whose
        // stage tile i + 2 loads into.
        __syncthreads();
        if (i + 2 < count) load_kv(n_first + i + 2, (i + 2) % Stages);
        cp_async_commit_group();
        issue_scores<T, L, D>(s, qw, sm.k((i + 1) % Stages));
        issue_output<T, L, D>(o, pa, sm.v(i % Stages));
        wgmma_wait<1>();  // the scores of tile i + 1
        fence_regs(s);
        rows.softmax(s, n_first + i + 1, al0, al1);
        wgmma_wait<0>();  // P·V of tile i: O and P may change
        fence_regs(o);
        rescale<D>(o, al0, al1);
        pack_p<T, BN>(s, pa);
    }
    issue_output<T, L, D>(o, pa, sm.v((count - 1) % Stages));
    wgmma_wait<0>();
    fence_regs(o);
    cp_async_wait_groups<0>();
    rows.template store<D>(o, t0 + wrow + g, b, h);
#endif
}

// ---- The warp-specialized version: a producer warp with the bulk-copy engine ----
//
// The tile loop of prefill_wgmma_kernel, with the copies taken off the consumers: a third
// warpgroup (one thread of it works; it gives its registers up to the consumers with
// setmaxnreg) copies Q and K, V tile by tile through tensor maps straight into the swizzled
// stages, each landing on its own barrier (`full_k`, `full_v`: the scores of tile n + 1 wait
// only for K), and refills a stage's K (V) once every consumer warp has arrived on its
// `empty_k` (`empty_v`) barrier after the wait that covers the wgmmas reading it — K is
// released a tile before V, so that with two stages (d = 256) K still lands a tile ahead. The
// consumers never meet at a block barrier in the loop; with `pingpong`, two named barriers
// take turns between them so that one warpgroup's products are issued while the other's
// softmax runs.
//
// Persistent: a block runs one work item (128 query tokens of one head and sequence) after
// another, items w = blockIdx.x, + gridDim.x, … in prefill_item's order (groups of `group`
// (sequence, head) pairs whose keys stay in L2, the latest query tiles of a group, which see
// the most keys, first), the K/V ring running on across items. The
// consumers release Q (`empty_q`) once an item's last scores are done, so the producer copies
// the next item's Q and first K/V tiles while they finish the item's last product and store
// its rows: a short item's fixed costs (the copies' latency, the block's start) overlap the
// work of the one before. With a grid of one item per block it runs as one block per item.
//
// Keys past hi in the last tile are not zero-filled by the copies (the cache past the written
// length may hold anything, NaN included, and 0·NaN is NaN in P·V): the consumers zero those V
// rows before the last product, the one tile where they can occur.
constexpr int kWsAttnThreads = kWgThreads + 128;

template <typename T, int D>
__global__ void __launch_bounds__(kWsAttnThreads, 1)
    prefill_wgmma_ws_kernel(const __grid_constant__ CUtensorMap qmap,
                            const __grid_constant__ CUtensorMap kmap,
                            const __grid_constant__ CUtensorMap vmap, AttnArgs a, int pingpong,
                            int group) {
#if PARADEC_WGMMA_ARCH
    using L = WgLayout<D>;
    constexpr int BN = L::BN, Stages = L::Stages;
    extern __shared__ __align__(128) unsigned char wsmem[];
    const WgSmem<L> sm(wsmem);
    unsigned char *qt = sm.q();
    uint64_t *full_k = sm.bars();
    uint64_t *full_v = full_k + Stages, *empty_k = full_v + Stages, *empty_v = empty_k + Stages;
    uint64_t *full_q = empty_v + Stages, *empty_q = full_q + 1;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nblk = (a.q_len + kWgBM - 1) / kWgBM;
    const int items = nblk * a.heads * a.batch;
    constexpr int kConsumerWarps = kWgThreads / 32;
    if (tid == 0) {
        for (int st = 0; st < Stages; ++st) {
            barrier_init(full_k + st, 1);
            barrier_init(full_v + st, 1);
            barrier_init(empty_k + st, kConsumerWarps);
            barrier_init(empty_v + st, kConsumerWarps);
        }
        barrier_init(full_q, 1);
        barrier_init(empty_q, kConsumerWarps);
        fence_barrier_init();
    }
    __syncthreads();
    // The K/V ring runs on across a block's items: a stage and the parity of its round, advanced
    // tile by tile; item number k of the block fills Q in phase k.
    struct RingPos {
        int st = 0;
        uint32_t ph = 0;
        __device__ __forceinline__ void next() {
            if (++st == Stages) {
                st = 0;
                ph ^= 1u;
            }
        }
    };

    // A quarter of the SM (16384 registers) holds 2 consumer warps and 1 producer warp: 24 for
    // the producer leaves 240 for the consumers. The registers come from the block's own pool
    // (168 a thread at launch): what the producer gives up is exactly what the consumers take,
    // so the producer cannot keep more (32 would leave the consumers' setmaxnreg.inc waiting
    // forever), and its item loop spills a few bytes a thread.
    if (warp >= kConsumerWarps) {
        regs_dec<24>();
        if (warp == kConsumerWarps && lane == 0) {
            RingPos pos;
            bool refill = false;  // past the first round: wait for a stage's release
            int k = 0;
            for (int w = blockIdx.x; w < items; w += gridDim.x, ++k) {
                const PrefillItem wi = prefill_item(w, nblk, a.heads, a.batch, group);
                const PrefillBlock<T> pb(a, D, kWgBM, wi.mblk, wi.h, wi.b);
                const int n_first = static_cast<int>(pb.lo / BN);
                const int count = static_cast<int>(pb.hi / BN) - n_first + 1;
                const int kvh = wi.h / (a.heads / a.kv_heads);
                int row = static_cast<int>(static_cast<int64_t>(wi.b) * a.capacity +
                                           static_cast<int64_t>(n_first) * BN);
                for (int i = 0; i < count; ++i, row += BN) {
                    const int st = pos.st;
                    if (refill) barrier_wait(empty_k + st, pos.ph ^ 1u);  // the previous round's
                    expect_bytes(full_k + st, static_cast<uint32_t>(L::kTile));
                    for (int sub = 0; sub < D / 64; ++sub)
                        tile_copy_3d(sm.k(st) + sub * L::kSub, &kmap, sub * 64, kvh, row, full_k + st);
                    if (i == 0) {  // Q once the item before has done with it
                        if (k > 0) barrier_wait(empty_q, static_cast<uint32_t>((k - 1) & 1));
                        expect_bytes(full_q, static_cast<uint32_t>(L::qSub * (D / 64)));
                        for (int sub = 0; sub < D / 64; ++sub)
                            tile_copy_3d(qt + sub * L::qSub, &qmap, sub * 64, wi.h,
                                         static_cast<int>(static_cast<int64_t>(wi.b) * a.q_len + pb.t0),
                                         full_q);
                    }
                    if (refill) barrier_wait(empty_v + st, pos.ph ^ 1u);
                    expect_bytes(full_v + st, static_cast<uint32_t>(L::kTile));
                    for (int sub = 0; sub < D / 64; ++sub)
                        tile_copy_3d(sm.v(st) + sub * L::kSub, &vmap, sub * 64, kvh, row, full_v + st);
                    pos.next();
                    refill = refill || pos.st == 0;
                }
            }
        }
        __syncwarp();
        return;
    }
    regs_inc<240>();
    const int g = lane >> 2, wg = warp >> 2;
    const int wrow = wg * kWgRows + (warp & 3) * 16;  // the warp's first row in the tile
    const unsigned char *qw = qt + wg * kWgRows * 128;  // this warpgroup's 64 rows of Q
    // Ping-pong: warpgroup w issues its products after syncing on barrier 2 + w, then lets the
    // other one go; the second starts by letting the first go. Each barrier sees as many
    // arrivals as syncs: count + 1 turns per warpgroup and item, the second warpgroup passing
    // on no more after its last.
    auto my_turn = [&] {
        if (pingpong) named_barrier_sync(2 + wg, kWgThreads);
    };
    auto your_turn = [&] {
        if (pingpong) named_barrier_arrive(3 - wg, kWgThreads);
    };
    if (wg == 1) your_turn();

    RingPos cur;  // the stage of the item's current tile
    int k = 0;
#pragma unroll 1
    for (int w = blockIdx.x; w < items; w += gridDim.x, ++k) {
        const PrefillItem wi = prefill_item(w, nblk, a.heads, a.batch, group);
        const PrefillBlock<T> pb(a, D, kWgBM, wi.mblk, wi.h, wi.b);
        const int n_first = static_cast<int>(pb.lo / BN), n_last = static_cast<int>(pb.hi / BN);
        const int count = n_last - n_first + 1;
        WgRows<T, BN> rows(a, pb, wi.b, wrow, lane);

        barrier_wait(full_q, static_cast<uint32_t>(k & 1));
        barrier_wait(full_k + cur.st, cur.ph);
        float s[BN / 2];
        my_turn();
        issue_scores<T, L, D>(s, qw, sm.k(cur.st));
        your_turn();
        wgmma_wait<0>();
        fence_regs(s);
        if (lane == 0) barrier_arrive(empty_k + cur.st);  // K of the item's tile 0 is read
        float al0, al1;
        rows.softmax(s, n_first, al0, al1);
        uint32_t pa[BN / 16][4];
        pack_p<T, BN>(s, pa);

        float o[D / 2];
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
        for (int i = 0; i + 1 < count; ++i) {
            RingPos nxt = cur;
            nxt.next();
            barrier_wait(full_k + nxt.st, nxt.ph);
            barrier_wait(full_v + cur.st, cur.ph);
            my_turn();
            issue_scores<T, L, D>(s, qw, sm.k(nxt.st));
            issue_output<T, L, D>(o, pa, sm.v(cur.st));
            your_turn();
            wgmma_wait<1>();  // the scores of tile i + 1: its K goes back
            fence_regs(s);
            if (lane == 0) barrier_arrive(empty_k + nxt.st);
            rows.softmax(s, n_first + i + 1, al0, al1);
            wgmma_wait<0>();  // P·V of tile i: O and P may change, its V goes back
            fence_regs(o);
            if (lane == 0) barrier_arrive(empty_v + cur.st);
            rescale<D>(o, al0, al1);
            pack_p<T, BN>(s, pa);
            cur = nxt;
        }
        if (lane == 0) barrier_arrive(empty_q);  // every score of the item is done
        barrier_wait(full_v + cur.st, cur.ph);
        unsigned char *vt = sm.v(cur.st);
        const int tail = static_cast<int>(pb.hi - static_cast<int64_t>(n_last) * BN) + 1;  // keys ≤ hi
        if (tail < BN) {
            // Zero V's rows past hi (whole 128-byte rows of every sub-tile: the swizzle permutes
            // chunks within a row), between two barriers of the consumers.
            named_barrier_sync(1, kWgThreads);
            constexpr int kRowChunks = 8 * (D / 64);
            for (int i = tid; i < (BN - tail) * kRowChunks; i += kWgThreads) {
                const int r = tail + i / kRowChunks, c = i % kRowChunks;
                *reinterpret_cast<uint4 *>(vt + (c / 8) * L::kSub + r * 128 + (c % 8) * 16) =
                    make_uint4(0, 0, 0, 0);
            }
            fence_async_shared();
            named_barrier_sync(1, kWgThreads);
        }
        my_turn();
        issue_output<T, L, D>(o, pa, vt);
        if (wg == 0 || w + static_cast<int>(gridDim.x) < items) your_turn();
        wgmma_wait<0>();
        fence_regs(o);
        if (lane == 0) barrier_arrive(empty_v + cur.st);  // the item's last V is read
        cur.next();  // the next item's first tile
        rows.template store<D>(o, pb.t0 + wrow + g, wi.b, wi.h);
    }
#endif
}

template <typename T, int D>
int launch_wgmma_ws_d(const AttnArgs &a, cudaStream_t stream) {
    constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
    CUtensorMap qmap, kmap, vmap;
    const uint64_t kv_rows = static_cast<uint64_t>(a.batch) * static_cast<uint64_t>(a.capacity);
    if (make_head_tile_map(&qmap, kBf16, a.q, static_cast<uint64_t>(a.batch) * a.q_len, a.heads, D,
                           kWgBM) != cudaSuccess ||
        make_head_tile_map(&kmap, kBf16, a.k, kv_rows, a.kv_heads, D, WgLayout<D>::BN) != cudaSuccess ||
        make_head_tile_map(&vmap, kBf16, a.v, kv_rows, a.kv_heads, D, WgLayout<D>::BN) != cudaSuccess)
        return kPrefillNotTaken;  // no tensor maps: the caller takes another kernel
    constexpr size_t smem = WgLayout<D>::bytes;
    if (const int st = allow_dynamic_smem(prefill_wgmma_ws_kernel<T, D>, smem)) return st;
    static const int pingpong = env_is("PARADEC_ATTN_PINGPONG", "off") ? 0 : 1;
    // One block per SM, each running items until none is left, or one block per item
    // (prefill_persists; PARADEC_ATTN_PERSIST=on|off forces either).
    static const int forced = env_is("PARADEC_ATTN_PERSIST", "on")    ? 1
                              : env_is("PARADEC_ATTN_PERSIST", "off") ? 0
                                                                      : -1;
    const bool persist = forced >= 0 ? forced == 1 : prefill_persists(D, a.max_past + a.q_len);
    const int64_t items = static_cast<int64_t>((a.q_len + kWgBM - 1) / kWgBM) * a.heads * a.batch;
    if (items <= 0 || items > INT32_MAX / 2) return kPrefillNotTaken;  // int item numbers
    const int64_t blocks = persist ? std::min<int64_t>(items, current_device_sms()) : items;
    const dim3 grid(static_cast<unsigned>(blocks));
    // Items in groups of (sequence, head) pairs whose keys and values fit an L2 budget
    // (PARADEC_ATTN_GROUP_MIB, default 16 MiB of the 50 MiB on H100 and H200).
    static const int budget_mib = env_int("PARADEC_ATTN_GROUP_MIB", 1, 1 << 20);
    const int64_t kv_bytes = (a.max_past + a.q_len) * D * 2 * static_cast<int64_t>(sizeof(T));
    const int group = prefill_group((budget_mib > 0 ? budget_mib : 16) * (int64_t{1} << 20), kv_bytes,
                                    a.heads / a.kv_heads, a.heads * a.batch);
    prefill_wgmma_ws_kernel<T, D>
        <<<grid, kWsAttnThreads, smem, stream>>>(qmap, kmap, vmap, a, pingpong, group);
    return launch_status();
}

template <typename T, int D>
int launch_wgmma_plain_d(const AttnArgs &a, cudaStream_t stream) {
    constexpr size_t smem = WgLayout<D>::bytes;
    if (const int st = allow_dynamic_smem(prefill_wgmma_kernel<T, D>, smem)) return st;
    const dim3 grid(static_cast<unsigned>((a.q_len + kWgBM - 1) / kWgBM), a.heads, a.batch);
    prefill_wgmma_kernel<T, D><<<grid, kWgThreads, smem, stream>>>(a);
    return launch_status();
}

// Which prefill kernel PARADEC_ATTN_PREFILL (read once) asks for on Hopper: the
// warp-specialized one (default), the same loop without the producer (`wgmma`), or mma.sync
// (`mma`).
enum class PrefillChoice { WarpSpecialized, Plain, MmaSync };
PrefillChoice prefill_choice() {
    static const PrefillChoice c = env_is("PARADEC_ATTN_PREFILL", "mma")     ? PrefillChoice::MmaSync
                                   : env_is("PARADEC_ATTN_PREFILL", "wgmma") ? PrefillChoice::Plain
                                                                             : PrefillChoice::WarpSpecialized;
    return c;
}

template <typename T, int D>
int launch_wgmma_d(const AttnArgs &a, cudaStream_t stream) {
    // WgRows keeps positions in 32 bits, else the mma.sync kernel takes the call.
    if (!prefill_positions_fit(a.capacity, a.max_past, a.q_len)) return kPrefillNotTaken;
    // The tile coordinates are 32-bit: rows of the cache and of the queries below 2^31.
    const bool fits = static_cast<int64_t>(a.batch) * a.capacity < (int64_t{1} << 31) &&
                      static_cast<int64_t>(a.batch) * a.q_len < (int64_t{1} << 31);
    if (prefill_choice() == PrefillChoice::WarpSpecialized && fits) {
        const int r = launch_wgmma_ws_d<T, D>(a, stream);
        if (r != kPrefillNotTaken) return r;
    }
    // d = 256 has no producer-less version: the mma.sync kernel takes it.
    if constexpr (D > 128) return kPrefillNotTaken;
    else return launch_wgmma_plain_d<T, D>(a, stream);
}

}  // namespace

bool prefill_wgmma_serves(const AttnArgs &a) {
    const PrefillChoice c = prefill_choice();
    return c != PrefillChoice::MmaSync &&
           (a.head_dim == 64 || a.head_dim == 128 ||
            (a.head_dim == 256 && c == PrefillChoice::WarpSpecialized)) &&
           wgmma_available();
}

int launch_prefill_wgmma(int dtype, const AttnArgs &a, cudaStream_t stream) {
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        switch (a.head_dim) {
            case 64: return launch_wgmma_d<T, 64>(a, stream);
            case 128: return launch_wgmma_d<T, 128>(a, stream);
            default: return launch_wgmma_d<T, 256>(a, stream);
        }
    });
}

}  // namespace paradec
