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
#include "wgmma.cuh"

namespace paradec {
namespace {

constexpr int kWgRows = 64;                        // query rows per warpgroup
constexpr int kWgGroups = 2;                       // warpgroups per block
constexpr int kWgBM = kWgRows * kWgGroups;         // query rows per block
constexpr int kWgBN = 128;                         // keys per tile
constexpr int kWgThreads = 128 * kWgGroups;
constexpr int kWgStages = 3;                       // K/V tiles in shared memory

// Shared memory of head dim D, every tile in the 128-byte swizzle as D / 64 sub-tiles of 64
// elements per row, each sub-tile on a 1024-byte boundary: Q (kWgBM rows), then kWgStages K
// tiles and kWgStages V tiles (kWgBN rows each).
template <int D>
struct WgLayout {
    static constexpr size_t qSub = static_cast<size_t>(kWgBM) * 128;     // Q sub-tile: 64 dims
    static constexpr size_t kSub = static_cast<size_t>(kWgBN) * 128;     // K/V sub-tile: 64 dims
    static constexpr size_t kTile = kSub * (D / 64);
    static constexpr size_t qOff = 0;
    static constexpr size_t kOff = qOff + qSub * (D / 64);
    static constexpr size_t vOff = kOff + kWgStages * kTile;
    static constexpr size_t bytes = vOff + kWgStages * kTile + 1024;  // + alignment slack
    static_assert(D % 64 == 0, "whole 64-element sub-tiles");
    static_assert(qSub % 1024 == 0 && kSub % 1024 == 0, "sub-tiles of whole swizzle periods");
    static_assert(bytes <= 227 * 1024, "fits one block's shared memory on sm_90");
};

template <typename T, int D>
__global__ void __launch_bounds__(kWgThreads, 1) prefill_wgmma_kernel(AttnArgs a) {
#if PARADEC_WGMMA_ARCH
    using L = WgLayout<D>;
    constexpr int KT = D / 16;      // k steps of Q·Kᵀ
    constexpr int PT = kWgBN / 16;  // k steps of P·V
    constexpr int CH = D / kVec;    // 16-byte chunks of a row
    extern __shared__ __align__(128) unsigned char wsmem[];
    const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(wsmem));
    unsigned char *smem = wsmem + (((raw + 1023u) & ~1023u) - raw);
    unsigned char *qt = smem + L::qOff;
    auto ktile = [&](int stage) { return smem + L::kOff + stage * L::kTile; };
    auto vtile = [&](int stage) { return smem + L::vOff + stage * L::kTile; };

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3, wg = warp >> 2;
    const int mblk = gridDim.x - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const PrefillBlock<T> pb(a, D, kWgBM, mblk, h, b);
    const int64_t t0 = pb.t0, past = pb.past, hi = pb.hi, lo = pb.lo, kv_dim = pb.kv_dim;
    const T *kbase = pb.kbase, *vbase = pb.vbase;
    // Rows past q_len are zero.
    stage_query_tile<T>(
        a, t0, b, h, D, kWgBM, CH,
        [&](int r, int c) { return qt + (c / 8) * L::qSub + sw128_offset(r, c % 8); }, tid, kWgThreads);
    // K and V of tile n into `stage`; keys outside [lo, hi] zero-filled and not read.
    auto load_kv = [&](int n, int stage) {
        unsigned char *kt = ktile(stage), *vt = vtile(stage);
        for (int i = tid; i < kWgBN * CH; i += kWgThreads) {
            const int r = i / CH, c = i % CH;
            const int64_t j = static_cast<int64_t>(n) * kWgBN + r;
            const bool ok = j >= lo && j <= hi;
            const int64_t off = ok ? j * kv_dim + c * kVec : 0;
            const int at = (c / 8) * static_cast<int>(L::kSub) + sw128_offset(r, c % 8);
            cp_async16_zfill(kt + at, kbase + off, ok);
            cp_async16_zfill(vt + at, vbase + off, ok);
        }
    };

    const float sl2 = a.scale * kLog2e;
    const int wrow = wg * kWgRows + (warp & 3) * 16;  // the warp's first row in the tile
    const int64_t p0 = past + t0 + wrow + g, p1 = p0 + 8;     // positions of the lane's two rows
    const int64_t pmin = past + t0, pmax = past + t0 + kWgBM - 1;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;
    const unsigned char *qw = qt + wg * kWgRows * 128;  // this warpgroup's 64 rows of Q

    // S = Q·Kᵀ of the tile in `stage` (64 rows × 128 keys per warpgroup), issued, not waited.
    float s[kWgBN / 2];
    auto issue_scores = [&](int stage) {
        const unsigned char *kt = ktile(stage);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KT; ++kk)
            wgmma_ss_n128<T>(s, sw128_desc(qw + (kk / 4) * L::qSub, (kk % 4) * 32),
                             sw128_desc(kt + (kk / 4) * L::kSub, (kk % 4) * 32), kk > 0);
        wgmma_commit();
    };
    // The softmax of tile n's scores in s: scale to log2 units, mask where the tile needs it,
    // the rows' new maxima, exponentials in place, the sums. Returns in al0/al1 the factors
    // that rescale what was accumulated before. Lane: rows g (s[4j], s[4j + 1]) and g + 8
    // (s[4j + 2], s[4j + 3]), keys j0 + 8j + 2t4 and + 1.
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    auto softmax_tile = [&](int n, float &al0, float &al1) {
        const int64_t j0 = static_cast<int64_t>(n) * kWgBN;
        const bool need = mrow != nullptr || j0 + kWgBN - 1 > pmin ||
                          (a.window > 0 && j0 <= pmax - a.window);
#pragma unroll
        for (int i = 0; i < kWgBN / 2; ++i) s[i] *= sl2;
        if (need) {
#pragma unroll
            for (int i = 0; i < kWgBN / 2; ++i) {
                const int64_t j = j0 + (i / 4) * 8 + 2 * t4 + (i & 1);
                const int64_t p = (i & 2) ? p1 : p0;
                bool vis = j <= p && j <= hi && j >= lo;
                if (a.window > 0) vis = vis && j > p - a.window;
                s[i] = vis ? (mrow ? s[i] + mrow[j] * kLog2e : s[i]) : -INFINITY;
            }
        }
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int i = 0; i < kWgBN / 2; i += 4) {
            mx0 = fmaxf(mx0, fmaxf(s[i], s[i + 1]));
            mx1 = fmaxf(mx1, fmaxf(s[i + 2], s[i + 3]));
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float mu0 = softmax_rescale(m0, mx0, al0), mu1 = softmax_rescale(m1, mx1, al1);
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int i = 0; i < kWgBN / 2; i += 4) {
            s[i] = exp2f(s[i] - mu0);
            s[i + 1] = exp2f(s[i + 1] - mu0);
            s[i + 2] = exp2f(s[i + 2] - mu1);
            s[i + 3] = exp2f(s[i + 3] - mu1);
            sum0 += s[i] + s[i + 1];
            sum1 += s[i + 2] + s[i + 3];
        }
        l0 = l0 * al0 + sum0;
        l1 = l1 * al1 + sum1;
    };
    // P as A fragments: k step kk covers n8 chunks 2kk (a0, a1) and 2kk + 1 (a2, a3).
    uint32_t pa[PT][4];
    auto pack_p = [&]() {
#pragma unroll
        for (int kk = 0; kk < PT; ++kk) {
            pa[kk][0] = pack2<T>(s[8 * kk], s[8 * kk + 1]);
            pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
            pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
            pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
        }
    };

    // Tiles n_first + i, i < count, in stage i % kWgStages. Copy groups: Q with tile 0, then one
    // per tile (empty past the last, so that the counting stays uniform).
    const int n_first = static_cast<int>(lo / kWgBN), n_last = static_cast<int>(hi / kWgBN);
    const int count = n_last - n_first + 1;
    load_kv(n_first, 0);
    cp_async_commit_group();
    if (count > 1) load_kv(n_first + 1, 1);
    cp_async_commit_group();
    cp_async_wait_groups<1>();
    fence_async_shared();
    __syncthreads();  // Q and tile 0 have landed for every thread, visible to wgmma
    issue_scores(0);
    wgmma_wait<0>();
    fence_regs(s);
    float al0, al1;
    softmax_tile(n_first, al0, al1);
    pack_p();

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    // O += P·V of tile i (64 rows × D per warpgroup), V MN-major: 16 keys a step.
    auto issue_output = [&](int i) {
        const unsigned char *vt = vtile(i % kWgStages);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < PT; ++kk)
            wgmma_rs<T, D, 1>(o, pa[kk], sw128_desc_mn(vt + kk * 16 * 128, L::kSub));
        wgmma_commit();
    };
    for (int i = 0; i + 1 < count; ++i) {
        cp_async_wait_groups<0>();
        fence_async_shared();
        // Tile i + 1 has landed for every thread; every warpgroup is done with tile i − 1, whose
        // stage tile i + 2 loads into.
        __syncthreads();
        if (i + 2 < count) load_kv(n_first + i + 2, (i + 2) % kWgStages);
        cp_async_commit_group();
        issue_scores((i + 1) % kWgStages);
        issue_output(i);
        wgmma_wait<1>();  // the scores of tile i + 1
        fence_regs(s);
        softmax_tile(n_first + i + 1, al0, al1);
        wgmma_wait<0>();  // P·V of tile i: O and P may change
        fence_regs(o);
#pragma unroll
        for (int k = 0; k < D / 2; k += 4) {
            o[k] *= al0;
            o[k + 1] *= al0;
            o[k + 2] *= al1;
            o[k + 3] *= al1;
        }
        pack_p();
    }
    issue_output(count - 1);
    wgmma_wait<0>();
    fence_regs(o);
    cp_async_wait_groups<0>();

    // Normalize and store: lane rows g and g + 8 of its warp, dims 8j + 2t4 and + 1.
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, off);
        l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
    const float i0 = l0 > 0.f ? 1.0f / l0 : 0.f, i1 = l1 > 0.f ? 1.0f / l1 : 0.f;
    T *ob = static_cast<T *>(a.out);
    const int64_t ta = t0 + wrow + g, tb = ta + 8;
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
#endif
}

template <typename T, int D>
int launch_wgmma_d(const AttnArgs &a, cudaStream_t stream) {
    constexpr size_t smem = WgLayout<D>::bytes;
    const cudaError_t attr = cudaFuncSetAttribute(
        prefill_wgmma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (attr != cudaSuccess) {
        cudaGetLastError();
        return static_cast<int>(attr);
    }
    const dim3 grid(static_cast<unsigned>((a.q_len + kWgBM - 1) / kWgBM), a.heads, a.batch);
    prefill_wgmma_kernel<T, D><<<grid, kWgThreads, smem, stream>>>(a);
    return launch_status();
}

}  // namespace

bool prefill_wgmma_serves(const AttnArgs &a) {
    static const bool off = env_is("PARADEC_ATTN_PREFILL", "mma");
    return !off && (a.head_dim == 64 || a.head_dim == 128) && wgmma_available();
}

int launch_prefill_wgmma(int dtype, const AttnArgs &a, cudaStream_t stream) {
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        return a.head_dim == 64 ? launch_wgmma_d<T, 64>(a, stream) : launch_wgmma_d<T, 128>(a, stream);
    });
}

}  // namespace paradec
