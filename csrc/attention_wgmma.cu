// Prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a): head dims 64 and 128, fp16 and
// bf16, the same arguments and masking as attention_prefill.cu's mma.sync kernel (its CUDA
// twin is cpu::attention::attention). The default there on Hopper (H100, same run: 1.04–1.15×
// the mma.sync kernel at s = 2048 and 8192); PARADEC_ATTN_PREFILL=mma keeps the mma.sync one.
//
// One block per (128 query tokens, query head, sequence), heaviest (latest) query tiles first:
// two warpgroups of 64 query rows each, Q read from its staged tile as wgmma A fragments. K and
// V tiles of 128 keys stream through shared memory, double-buffered with cp.async. Per tile:
//  - S = Q·Kᵀ: wgmma m64n128k16 with B = the K tile, K-major in the 128-byte swizzle
//    (wgmma.cuh's descriptor, two 64-dim sub-tiles for head dim 128);
//  - while it runs, every warp transposes part of the staged V tile into Vᵀ (ldmatrix.trans,
//    then 32-bit stores into the swizzled K-major layout), so that O += P·V reads its B operand
//    through the same kind of descriptor (rows = head dims, 64-key sub-tiles);
//  - masking only on tiles that need it, an online softmax in f32 per row (the lane's rows g and
//    g + 8 of its warp's 16), P rounded to the input dtype straight from the S accumulators into
//    A fragments (the wgmma accumulator and A-register layouts coincide per 16-key step);
//  - O += P·Vᵀᵀ: wgmma m64nDk16.
// Every group of wgmmas is waited for before the next is issued (ptxas keeps them asynchronous
// only so); the overlap is the V transpose against Q·Kᵀ and the loads of tile n + 1 against
// both products of tile n. What FlashAttention-3 adds on top — a producer warp with the
// bulk-copy engine, two consumer warpgroups ping-ponging softmax against the products, and
// Q·Kᵀ of tile n + 1 issued before P·V of tile n — would follow from measurements.
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

// Shared memory of head dim D: two K tiles and Vᵀ in the 128-byte swizzle (1024-byte aligned
// sub-tiles of 64 elements per row), two V staging tiles and the Q staging tile with padded
// rows (ldmatrix without bank conflicts).
template <int D>
struct WgLayout {
    static constexpr int SD = D + 8;                                     // padded row (elements)
    static constexpr size_t kSub = static_cast<size_t>(kWgBN) * 128;     // K sub-tile: 64 dims
    static constexpr size_t vSub = static_cast<size_t>(D) * 128;         // Vᵀ sub-tile: 64 keys
    static constexpr size_t kTile = static_cast<size_t>(kWgBN) * D * 2;
    static constexpr size_t vtTile = static_cast<size_t>(D) * kWgBN * 2;
    static constexpr size_t vStage = static_cast<size_t>(kWgBN) * SD * 2;
    static constexpr size_t qStage = static_cast<size_t>(kWgBM) * SD * 2;
    static constexpr size_t kOff = 0;
    static constexpr size_t vtOff = kOff + 2 * kTile;
    static constexpr size_t vOff = vtOff + vtTile;
    static constexpr size_t qOff = vOff + 2 * vStage;
    static constexpr size_t bytes = qOff + qStage + 1024;  // + alignment slack
    static_assert(kTile == kSub * (D / 64) && vtTile == vSub * (kWgBN / 64),
                  "tiles of whole 64-element sub-tiles, each on a 1024-byte boundary");
    static_assert(kSub % 1024 == 0 && vSub % 1024 == 0, "sub-tiles of whole swizzle periods");
};

template <typename T, int D>
__global__ void __launch_bounds__(kWgThreads, 1) prefill_wgmma_kernel(AttnArgs a) {
#if PARADEC_WGMMA_ARCH
    using L = WgLayout<D>;
    constexpr int SD = L::SD;
    constexpr int KT = D / 16;      // k steps of Q·Kᵀ
    constexpr int PT = kWgBN / 16;  // k steps of P·V
    constexpr int CH = D / kVec;    // 16-byte chunks of a row
    extern __shared__ __align__(128) unsigned char wsmem[];
    const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(wsmem));
    unsigned char *smem = wsmem + (((raw + 1023u) & ~1023u) - raw);
    unsigned char *ktiles = smem + L::kOff;
    unsigned char *vt = smem + L::vtOff;
    T *vstage = reinterpret_cast<T *>(smem + L::vOff);
    T *qs = reinterpret_cast<T *>(smem + L::qOff);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3, mi = lane >> 3;
    const int mblk = gridDim.x - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const PrefillBlock<T> pb(a, D, kWgBM, mblk, h, b);
    const int64_t t0 = pb.t0, past = pb.past, hi = pb.hi, lo = pb.lo, kv_dim = pb.kv_dim;
    const T *kbase = pb.kbase, *vbase = pb.vbase;
    stage_query_tile(a, t0, b, h, D, kWgBM, CH, qs, SD, tid, kWgThreads);  // rows past q_len: 0
    // K tile n into K buffer `buf` (swizzled), V tile n into V staging `buf`; keys outside
    // [lo, hi] zero-filled and not read.
    auto load_kv = [&](int n, int buf) {
        unsigned char *kt = ktiles + buf * L::kTile;
        T *vs = vstage + buf * kWgBN * SD;
        for (int i = tid; i < kWgBN * CH; i += kWgThreads) {
            const int r = i / CH, c = i % CH;
            const int64_t j = static_cast<int64_t>(n) * kWgBN + r;
            const bool ok = j >= lo && j <= hi;
            const int64_t off = ok ? j * kv_dim + c * kVec : 0;
            cp_async16_zfill(kt + (c / 8) * L::kSub + sw128_offset(r, c % 8), kbase + off, ok);
            cp_async16_zfill(vs + r * SD + c * kVec, vbase + off, ok);
        }
    };
    // Vᵀ of V staging `vs`: warp w transposes 8×8 blocks four at a time (8 keys × 32 dims per
    // ldmatrix.trans); lane (g, t4) then holds Vᵀ[d0 + 8j + g][k0 + 2t4, + 1] of block j.
    auto transpose_v = [&](const T *vs) {
        constexpr int KO = kWgBN / 8;      // key octets
        constexpr int DQ = D / 32;         // 32-dim quads
        for (int q = warp; q < KO * DQ; q += kWgThreads / 32) {
            const int k0 = 8 * (q % KO), d0 = 32 * (q / KO);
            uint32_t r[4];
            ldsm_x4_trans(r, vs + (k0 + (lane & 7)) * SD + d0 + 8 * (lane >> 3));
            unsigned char *sub = vt + (k0 / 64) * L::vSub;
            const int c = (k0 % 64) / 8;
#pragma unroll
            for (int j = 0; j < 4; ++j)
                *reinterpret_cast<uint32_t *>(sub + sw128_offset(d0 + 8 * j + g, c) + 4 * t4) = r[j];
        }
    };

    const int n_first = static_cast<int>(lo / kWgBN), n_last = static_cast<int>(hi / kWgBN);
    load_kv(n_first, 0);
    cp_async_commit_group();

    const float sl2 = a.scale * kLog2e;
    const int wrow = (warp >> 2) * kWgRows + (warp & 3) * 16;  // the warp's first row in the tile
    const int64_t p0 = past + t0 + wrow + g, p1 = p0 + 8;     // positions of the lane's two rows
    const int64_t pmin = past + t0, pmax = past + t0 + kWgBM - 1;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;

    uint32_t qf[KT][4];
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int n = n_first; n <= n_last; ++n) {
        const int buf = (n - n_first) & 1;
        cp_async_wait_groups<0>();
        fence_async_shared();
        // Tile n has landed for every thread (and is visible to wgmma); every warp is done with
        // Vᵀ and with the buffers tile n + 1 loads into.
        __syncthreads();
        // Q's A fragments, from the staged tile on every tile: held in registers across the
        // loop, ptxas (CUDA 13.0) gave P's fragments the same registers at head dim 128, and
        // every tile after the first multiplied P by K.
#pragma unroll
        for (int kk = 0; kk < KT; ++kk)
            ldsm_x4(qf[kk], qs + (wrow + (mi & 1) * 8 + (lane & 7)) * SD + kk * 16 + (mi >> 1) * 8);
        if (n < n_last) load_kv(n + 1, buf ^ 1);
        cp_async_commit_group();

        // S = Q·Kᵀ (64 rows × 128 keys per warpgroup).
        float s[kWgBN / 2];
#pragma unroll
        for (int i = 0; i < kWgBN / 2; ++i) s[i] = 0.f;
        const unsigned char *kt = ktiles + buf * L::kTile;
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KT; ++kk)
            wgmma_rs<T, kWgBN>(s, qf[kk], sw128_desc(kt + (kk / 4) * L::kSub, (kk % 4) * 32));
        wgmma_commit();
        transpose_v(vstage + buf * kWgBN * SD);
        fence_async_shared();
        wgmma_wait<0>();
        fence_regs(s);

        // Scale to log2 units; mask where the tile needs it. Lane: rows g (s[4j], s[4j + 1])
        // and g + 8 (s[4j + 2], s[4j + 3]), keys j0 + 8j + 2t4 and + 1.
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
        float al0, al1;
        const float mu0 = softmax_rescale(m0, mx0, al0), mu1 = softmax_rescale(m1, mx1, al1);
        l0 *= al0;
        l1 *= al1;
#pragma unroll
        for (int i = 0; i < D / 2; i += 4) {
            o[i] *= al0;
            o[i + 1] *= al0;
            o[i + 2] *= al1;
            o[i + 3] *= al1;
        }
#pragma unroll
        for (int i = 0; i < kWgBN / 2; i += 4) {
            s[i] = exp2f(s[i] - mu0);
            s[i + 1] = exp2f(s[i + 1] - mu0);
            s[i + 2] = exp2f(s[i + 2] - mu1);
            s[i + 3] = exp2f(s[i + 3] - mu1);
            l0 += s[i] + s[i + 1];
            l1 += s[i + 2] + s[i + 3];
        }
        // P as A fragments: k step kk covers n8 chunks 2kk (a0, a1) and 2kk + 1 (a2, a3).
        uint32_t pa[PT][4];
#pragma unroll
        for (int kk = 0; kk < PT; ++kk) {
            pa[kk][0] = pack2<T>(s[8 * kk], s[8 * kk + 1]);
            pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
            pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
            pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
        }
        __syncthreads();  // Vᵀ written by every warp (and fenced for wgmma)

        // O += P·V (64 rows × D per warpgroup), B = Vᵀ's 64-key sub-tiles.
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < PT; ++kk)
            wgmma_rs<T, D>(o, pa[kk], sw128_desc(vt + (kk / 4) * L::vSub, (kk % 4) * 32));
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(o);
    }
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
