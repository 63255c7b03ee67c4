// Attention over the KV cache on tensor cores (mma.sync m16n8k16, ldmatrix, cp.async): the kernel
// for query lengths above the decode kernel's, prefill and chunked prefill alike. CUDA twin of
// cpu::attention::attention.
//
// One block per (128 query tokens — 64 for head dims over 128 —, query head, sequence), heaviest
// (latest) query tiles first. The block's 4 warps own 32 query rows each (two m-tiles sharing
// every K/V fragment; 16 rows with Q kept in registers for head dims over 128). K and V
// tiles (BN keys) stream through shared memory, double-buffered with cp.async: tile i+1 loads
// while tile i is in use. Per tile: S = Q·Kᵀ on tensor cores (f32 accumulators), scaled to log2
// units; masking (causal with the sequence's past length, sliding window, the additive mask, the
// cache end) only on tiles that need it; an online softmax in f32 (running max and sum per row,
// exp2); P rounded to the input dtype as the A operand of O += P·V (V through ldmatrix.trans).
// Shared-memory rows are padded by 16 bytes, so the 8 row addresses of an ldmatrix fall in
// distinct banks for every head dim. Head dims are padded to a tile width (16, 32, 64, 80, 96,
// 128, 160, 192, 256) with zero columns, so any multiple of 8 up to 256 runs.
//
// On sm_90a, head dims 64 and 128 take the warpgroup-MMA kernel instead (attention_wgmma.cu;
// launch_prefill dispatches; PARADEC_ATTN_PREFILL=mma keeps this one).
#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>

#include "attention.cuh"
#include "attention_mma.cuh"
#include "mma.cuh"

namespace paradec {
namespace {


constexpr int kWarps = 4;

// Tile shape per head dim: BN keys per K/V tile; MT m-tiles of 16 query rows per warp (two
// m-tiles share each K/V fragment read from shared memory: half the ldmatrix traffic per mma
// and two independent accumulator chains).
template <int DP>
constexpr int tile_n() {
    return DP <= 128 ? 64 : 32;
}
template <int DP>
constexpr int m_tiles() {
    return DP <= 128 ? 2 : 1;
}
template <int DP>
constexpr int block_m() {
    return 16 * kWarps * m_tiles<DP>();
}

template <int DP>
constexpr size_t prefill_smem() {
    return sizeof(__half) * static_cast<size_t>(block_m<DP>() + 4 * tile_n<DP>()) * (DP + 8);
}

template <typename T, int DP>
__global__ void __launch_bounds__(kWarps * 32) prefill_kernel(AttnArgs a) {
    constexpr int BN = tile_n<DP>();
    constexpr int MT = m_tiles<DP>();
    constexpr int BM = block_m<DP>();
    constexpr int SD = DP + 8;   // padded smem row (elements)
    constexpr int KT = DP / 16;  // k steps of Q·Kᵀ
    constexpr int NT = BN / 8;   // n tiles of S
    constexpr int DT = DP / 8;   // n tiles of O
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = reinterpret_cast<T *>(smem_raw);
    T *Ks = Qs + BM * SD;      // [2][BN][SD]
    T *Vs = Ks + 2 * BN * SD;  // [2][BN][SD]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int mblk = gridDim.x - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const int D = a.head_dim;
    const int CH = D / kVec;  // 16-byte chunks of a row that hold data
    const PrefillBlock<T> pb(a, D, BM, mblk, h, b);
    const int64_t t0 = pb.t0, past = pb.past, hi = pb.hi, lo = pb.lo, kv_dim = pb.kv_dim;
    const T *kbase = pb.kbase, *vbase = pb.vbase;

    // Zero the pad columns once (cp.async never writes them).
    if (CH < DP / kVec) {
        const int pc = DP / kVec - CH;
        for (int i = tid; i < (BM + 4 * BN) * pc; i += blockDim.x) {
            const int r = i / pc, c = CH + i % pc;
            st(Qs + r * SD + c * kVec, make_uint4(0, 0, 0, 0));
        }
    }
    stage_query_tile<T>(a, t0, b, h, D, BM, CH, [&](int r, int c) { return Qs + r * SD + c * kVec; },
                        tid, static_cast<int>(blockDim.x));
    const int n_first = static_cast<int>(lo / BN), n_last = static_cast<int>(hi / BN);
    auto load_kv = [&](int n, int buf) {
        T *ks = Ks + buf * BN * SD;
        T *vs = Vs + buf * BN * SD;
        for (int i = tid; i < BN * CH; i += blockDim.x) {
            const int r = i / CH, c = i % CH;
            const int64_t j = static_cast<int64_t>(n) * BN + r;
            const bool ok = j >= lo && j <= hi;
            const int64_t off = ok ? j * kv_dim + c * kVec : 0;
            cp_async16_zfill(ks + r * SD + c * kVec, kbase + off, ok);
            cp_async16_zfill(vs + r * SD + c * kVec, vbase + off, ok);
        }
    };
    load_kv(n_first, 0);
    cp_async_commit_group();

    const float sl2 = a.scale * kLog2e;
    const int wr = warp * 16 * MT;  // the warp's first row in the tile
    const int g = lane >> 2, c2 = (lane & 3) * 2;
    const int mi = lane >> 3;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;

    // With one m-tile Q stays in registers; with two it is re-read per k step (registers).
    unsigned qf[MT == 1 ? KT : 1][4];
    float o[MT][DT][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < DT; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }

    for (int n = n_first; n <= n_last; ++n) {
        const int buf = (n - n_first) & 1;
        cp_async_wait_groups<0>();
        __syncthreads();  // tile n in; every warp done with the buffer loaded next
        if (MT == 1 && n == n_first) {
#pragma unroll
            for (int kk = 0; kk < (MT == 1 ? KT : 0); ++kk)
                ldsm_x4(qf[kk], Qs + (wr + (mi & 1) * 8 + (lane & 7)) * SD + kk * 16 +
                                        (mi >> 1) * 8);
        }
        if (n < n_last) load_kv(n + 1, buf ^ 1);
        cp_async_commit_group();
        const T *ks = Ks + buf * BN * SD;
        const T *vs = Vs + buf * BN * SD;

        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < NT; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KT; ++kk) {
            unsigned af[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if (MT == 1) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) af[mt][e] = qf[MT == 1 ? kk : 0][e];
                } else {
                    ldsm_x4(af[mt], Qs + (wr + mt * 16 + (mi & 1) * 8 + (lane & 7)) * SD +
                                            kk * 16 + (mi >> 1) * 8);
                }
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned bf[4];
                ldsm_x4(bf, ks + (np * 16 + (mi >> 1) * 8 + (lane & 7)) * SD + kk * 16 +
                                    (mi & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816<T>(s[mt][2 * np], af[mt], bf[0], bf[1]);
                    mma_16816<T>(s[mt][2 * np + 1], af[mt], bf[2], bf[3]);
                }
            }
        }
        // Scale to log2 units; mask where the tile needs it.
        const int64_t j0 = static_cast<int64_t>(n) * BN;
        const int64_t pmin = past + t0, pmax = past + t0 + BM - 1;
        const bool need = mrow != nullptr || j0 + BN - 1 > pmin ||
                          (a.window > 0 && j0 <= pmax - a.window);
        unsigned pa[MT][BN / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int64_t p0 = past + t0 + wr + mt * 16 + g, p1 = p0 + 8;
#pragma unroll
            for (int i = 0; i < NT; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][i][e] *= sl2;
            if (need) {
#pragma unroll
                for (int i = 0; i < NT; ++i)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int64_t j = j0 + i * 8 + c2 + (e & 1);
                        const int64_t p = (e < 2) ? p0 : p1;
                        bool vis = j <= p && j <= hi && j >= lo;
                        if (a.window > 0) vis = vis && j > p - a.window;
                        s[mt][i][e] =
                            vis ? (mrow ? s[mt][i][e] + mrow[j] * kLog2e : s[mt][i][e]) : -INFINITY;
                    }
            }
            // Online softmax over the tile.
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int i = 0; i < NT; ++i) {
                mx0 = fmaxf(mx0, fmaxf(s[mt][i][0], s[mt][i][1]));
                mx1 = fmaxf(mx1, fmaxf(s[mt][i][2], s[mt][i][3]));
            }
#pragma unroll
            for (int off = 1; off < 4; off <<= 1) {
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
            }
            const float mn0 = fmaxf(m[mt][0], mx0), mn1 = fmaxf(m[mt][1], mx1);
            const float mu0 = mn0 == -INFINITY ? 0.f : mn0, mu1 = mn1 == -INFINITY ? 0.f : mn1;
            const float al0 = exp2f(m[mt][0] - mu0), al1 = exp2f(m[mt][1] - mu1);
            m[mt][0] = mn0;
            m[mt][1] = mn1;
            l[mt][0] *= al0;
            l[mt][1] *= al1;
#pragma unroll
            for (int i = 0; i < DT; ++i) {
                o[mt][i][0] *= al0;
                o[mt][i][1] *= al0;
                o[mt][i][2] *= al1;
                o[mt][i][3] *= al1;
            }
#pragma unroll
            for (int i = 0; i < NT; ++i) {
                s[mt][i][0] = exp2f(s[mt][i][0] - mu0);
                s[mt][i][1] = exp2f(s[mt][i][1] - mu0);
                s[mt][i][2] = exp2f(s[mt][i][2] - mu1);
                s[mt][i][3] = exp2f(s[mt][i][3] - mu1);
                l[mt][0] += s[mt][i][0] + s[mt][i][1];
                l[mt][1] += s[mt][i][2] + s[mt][i][3];
            }
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                pa[mt][kk][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][kk][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][kk][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][kk][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
        }
        // O += P·V.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
            for (int dp = 0; dp < DT / 2; ++dp) {
                unsigned bf[4];
                ldsm_x4_trans(bf, vs + (kk * 16 + (mi & 1) * 8 + (lane & 7)) * SD + dp * 16 +
                                          (mi >> 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816<T>(o[mt][2 * dp], pa[mt][kk], bf[0], bf[1]);
                    mma_16816<T>(o[mt][2 * dp + 1], pa[mt][kk], bf[2], bf[3]);
                }
            }
        }
    }
    cp_async_wait_groups<0>();

    // Normalize and store.
    T *ob = static_cast<T *>(a.out);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float l0 = l[mt][0], l1 = l[mt][1];
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            l0 += __shfl_xor_sync(0xffffffffu, l0, off);
            l1 += __shfl_xor_sync(0xffffffffu, l1, off);
        }
        const float i0 = l0 > 0.f ? 1.0f / l0 : 0.f, i1 = l1 > 0.f ? 1.0f / l1 : 0.f;
        const int64_t ta = t0 + wr + mt * 16 + g, tb = ta + 8;
#pragma unroll
        for (int i = 0; i < DT; ++i) {
            const int col = i * 8 + c2;
            if (col >= D) continue;
            if (ta < a.q_len) {
                T *p = ob + ((static_cast<int64_t>(b) * a.q_len + ta) * a.heads + h) * D + col;
                *reinterpret_cast<typename Num<T>::T2 *>(p) =
                    Num<T>::from_f2(make_float2(o[mt][i][0] * i0, o[mt][i][1] * i0));
            }
            if (tb < a.q_len) {
                T *p = ob + ((static_cast<int64_t>(b) * a.q_len + tb) * a.heads + h) * D + col;
                *reinterpret_cast<typename Num<T>::T2 *>(p) =
                    Num<T>::from_f2(make_float2(o[mt][i][2] * i1, o[mt][i][3] * i1));
            }
        }
    }
}

template <typename T, int DP>
int launch_dp(const AttnArgs &a, cudaStream_t stream) {
    constexpr size_t smem = prefill_smem<DP>();
    constexpr int BM = block_m<DP>();
    if (const int st = allow_dynamic_smem(prefill_kernel<T, DP>, smem)) return st;
    const dim3 grid(static_cast<unsigned>((a.q_len + BM - 1) / BM), a.heads, a.batch);
    prefill_kernel<T, DP><<<grid, kWarps * 32, smem, stream>>>(a);
    return launch_status();
}

// ---- decode on tensor cores ----------------------------------------------------------------------
// Decode of a GQA/MQA group (or several query tokens): the up to 16 query rows of one KV head —
// every query head of the group for every query token — form one mma A tile, so each K/V element
// is read once for all of them, and Q·Kᵀ and P·V run on tensor cores. One block per (split of
// the KV length, sequence, KV head, chunk of 16 rows); each of its 4 warps streams chunks of 16
// keys through its own ring of shared-memory stages (cp.async, padded rows for ldmatrix), keeps
// an online softmax over its keys, and the warps merge in a fixed order (then, with several
// splits, the combine kernel merges the splits).

template <int DP>
constexpr int dec_stages() {
    return DP <= 128 ? 3 : 2;
}
template <int DP>
constexpr size_t decode_mma_smem() {
    const size_t ring = sizeof(__half) * 2 * kDecKeys * (DP + 8) * dec_stages<DP>() * kWarps;
    const size_t merge = sizeof(float) * kWarps * kDecRows * (DP + 2);
    return ring > merge ? ring : merge;
}

template <typename T, int DP>
__global__ void __launch_bounds__(kWarps * 32) decode_mma_kernel(AttnArgs a) {
    constexpr int SD = DP + 8;
    constexpr int NS = dec_stages<DP>();
    constexpr int KT = DP / 16;
    constexpr int DT = DP / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c2 = (lane & 3) * 2;
    const int D = a.head_dim, CH = D / kVec;
    const int group = a.heads / a.kv_heads;
    const int b = blockIdx.y / a.kv_heads, kvh = blockIdx.y % a.kv_heads;
    const int rows_total = a.q_len * group;
    const int row0 = blockIdx.z * kDecRows;
    const int nrows = min(kDecRows, rows_total - row0);
    const int split = blockIdx.x;
    const int64_t past = clamped_past(a, b);
    const int64_t kv_len = past + a.q_len;
    const int64_t kv_dim = static_cast<int64_t>(a.kv_heads) * D;
    const int t_first = row0 / group, t_last = (row0 + nrows - 1) / group;
    const int64_t split_len = split_len_of(a, kv_len);
    int64_t k_begin = static_cast<int64_t>(split) * split_len;
    int64_t k_end = min(k_begin + split_len, kv_len);
    k_end = min(k_end, past + t_last + 1);
    if (a.window > 0) k_begin = max(k_begin, past + t_first + 1 - a.window);
    const int64_t pos_min = past + t_first;
    const bool plain = a.mask == nullptr && a.window == 0;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;

    T *ring = reinterpret_cast<T *>(smem_raw) + warp * (NS * 2 * kDecKeys * SD);
    // Zero the ring's pad columns (cp.async never writes them; K's meet Q's zero padding).
    if (CH < DP / kVec) {
        const int pc = DP / kVec - CH;
        for (int i = lane; i < NS * 2 * kDecKeys * pc; i += 32) {
            const int r = i / pc, c = CH + i % pc;
            st(ring + r * SD + c * kVec, make_uint4(0, 0, 0, 0));
        }
    }

    // Q as mma A fragments (rows beyond the group's and columns beyond D are zero).
    const int ra = g, rb = g + 8;
    const bool va = ra < nrows, vb = rb < nrows;
    const int64_t qoff_a =
        va ? ((static_cast<int64_t>(b) * a.q_len + (row0 + ra) / group) * a.heads + kvh * group +
              (row0 + ra) % group) * D
           : 0;
    const int64_t qoff_b =
        vb ? ((static_cast<int64_t>(b) * a.q_len + (row0 + rb) / group) * a.heads + kvh * group +
              (row0 + rb) % group) * D
           : 0;
    const int64_t pos_a = past + (row0 + ra) / group, pos_b = past + (row0 + rb) / group;
    const int64_t lo_a = a.window > 0 ? pos_a + 1 - a.window : 0;
    const int64_t lo_b = a.window > 0 ? pos_b + 1 - a.window : 0;
    const unsigned *q32 = static_cast<const unsigned *>(a.q);
    unsigned qa[KT][4];
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
        const int c0 = kk * 16 + c2, c1 = c0 + 8;
        qa[kk][0] = (va && c0 < D) ? q32[(qoff_a + c0) / 2] : 0u;
        qa[kk][1] = (vb && c0 < D) ? q32[(qoff_b + c0) / 2] : 0u;
        qa[kk][2] = (va && c1 < D) ? q32[(qoff_a + c1) / 2] : 0u;
        qa[kk][3] = (vb && c1 < D) ? q32[(qoff_b + c1) / 2] : 0u;
    }

    const T *kb = static_cast<const T *>(a.k) + static_cast<int64_t>(b) * a.capacity * kv_dim +
                  kvh * D;
    const T *vb_ = static_cast<const T *>(a.v) + static_cast<int64_t>(b) * a.capacity * kv_dim +
                   kvh * D;
    auto issue = [&](int i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kWarps * i) * kDecKeys;
        if (base < k_end) {
            T *ks = ring + (i % NS) * 2 * kDecKeys * SD;
            T *vs = ks + kDecKeys * SD;
            for (int c = lane; c < kDecKeys * CH; c += 32) {
                const int r = c / CH, cc = c % CH;
                const int64_t j = base + r;
                const bool ok = j < k_end;
                const int64_t off = ok ? j * kv_dim + cc * kVec : 0;
                cp_async16_zfill(ks + r * SD + cc * kVec, kb + off, ok);
                cp_async16_zfill(vs + r * SD + cc * kVec, vb_ + off, ok);
            }
        }
        cp_async_commit_group();
    };
#pragma unroll
    for (int i = 0; i < NS - 1; ++i) issue(i);

    const float sl2 = a.scale * kLog2e;
    DecState<DT> st;
    const DecRowLimits lim{pos_a, pos_b, lo_a, lo_b};
    for (int i = 0;; ++i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kWarps * i) * kDecKeys;
        if (base >= k_end) break;
        issue(i + NS - 1);
        asm volatile("cp.async.wait_group %0;\n" ::"n"(NS - 1));
        __syncwarp();
        const T *ks = ring + (i % NS) * 2 * kDecKeys * SD;
        const T *vs = ks + kDecKeys * SD;
        const bool full = plain && base + kDecKeys <= k_end && base + kDecKeys - 1 <= pos_min;
        dec_stage<T, DP>(qa, ks, vs, base, k_end, full, lim, mrow, sl2, st);
        __syncwarp();  // the stage is refilled next
    }
    asm volatile("cp.async.wait_group 0;\n" ::);
    dec_sum_rows(st);
    __syncthreads();  // the rings become the merge area
    float *sm_m = reinterpret_cast<float *>(smem_raw);
    float *sm_l = sm_m + kWarps * kDecRows;
    float *sm_o = sm_l + kWarps * kDecRows;  // [warp][row][DP]
    dec_store_state<DP>(st, sm_m, sm_l, sm_o, warp);
    __syncthreads();
    merge_and_store<T>(a, sm_m, sm_l, sm_o, kWarps, kDecRows, DP, nrows, row0, b, kvh, split);
}

template <typename T, int DP>
int launch_dec_dp(const AttnArgs &a, int chunks, cudaStream_t stream) {
    constexpr size_t smem = decode_mma_smem<DP>();
    if (const int st = allow_dynamic_smem(decode_mma_kernel<T, DP>, smem)) return st;
    const dim3 grid(a.splits, a.batch * a.kv_heads, chunks);
    decode_mma_kernel<T, DP><<<grid, kWarps * 32, smem, stream>>>(a);
    return launch_status();
}

template <typename T>
int launch_decode_mma_t(const AttnArgs &a, int chunks, cudaStream_t stream) {
    const int d = a.head_dim;
    if (d <= 16) return launch_dec_dp<T, 16>(a, chunks, stream);
    if (d <= 32) return launch_dec_dp<T, 32>(a, chunks, stream);
    if (d <= 64) return launch_dec_dp<T, 64>(a, chunks, stream);
    if (d <= 80) return launch_dec_dp<T, 80>(a, chunks, stream);
    if (d <= 96) return launch_dec_dp<T, 96>(a, chunks, stream);
    if (d <= 128) return launch_dec_dp<T, 128>(a, chunks, stream);
    if (d <= 160) return launch_dec_dp<T, 160>(a, chunks, stream);
    if (d <= 192) return launch_dec_dp<T, 192>(a, chunks, stream);
    return launch_dec_dp<T, 256>(a, chunks, stream);
}

template <typename T>
int launch_prefill_t(const AttnArgs &a, cudaStream_t stream) {
    const int d = a.head_dim;
    if (d <= 16) return launch_dp<T, 16>(a, stream);
    if (d <= 32) return launch_dp<T, 32>(a, stream);
    if (d <= 64) return launch_dp<T, 64>(a, stream);
    if (d <= 80) return launch_dp<T, 80>(a, stream);
    if (d <= 96) return launch_dp<T, 96>(a, stream);
    if (d <= 128) return launch_dp<T, 128>(a, stream);
    if (d <= 160) return launch_dp<T, 160>(a, stream);
    if (d <= 192) return launch_dp<T, 192>(a, stream);
    return launch_dp<T, 256>(a, stream);
}

}  // namespace

int launch_decode_mma(int dtype, const AttnArgs &a, int chunks, cudaStream_t stream) {
    return dispatch_dtype(dtype,
                          [&](auto tag) { return launch_decode_mma_t<decltype(tag)>(a, chunks, stream); });
}

int launch_prefill(int dtype, const AttnArgs &a, cudaStream_t stream) {
    if (a.q_len > 65535 * 16 * kWarps) return PARADEC_K_DIM_TOO_LARGE;
    if (prefill_wgmma_serves(a)) {
        const int r = launch_prefill_wgmma(dtype, a, stream);
        if (r != kPrefillNotTaken) return r;
    }
    return dispatch_dtype(dtype, [&](auto tag) { return launch_prefill_t<decltype(tag)>(a, stream); });
}

}  // namespace paradec
