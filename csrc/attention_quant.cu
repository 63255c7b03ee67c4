// Decode attention over a quantized or paged KV cache (q_len ≤ 16), reading the codes directly, and
// the dequantizing copy a prefill over such a cache uses. CUDA twins of
// cpu::kv_quant::attention_quant and kv_quant::dequantize_row.
//
// Three decode kernels (q_kernel picks; PARADEC_KV_DECODE=tile or =simt forces the others):
// - qdecode_frag_kernel (head dims 64 and 128, every cache mode, any number of query rows but
//   a native cache's one or two; also the contiguous native cache's decode, launched from
//   attention.cu): the codes of 16-key stages stream through per-warp cp.async rings and go
//   from ldmatrix straight into mma fragments (kv_frag.cuh), Sᵀ = K·Qᵀ and Oᵀ = Vᵀ·Pᵀ on
//   tensor cores with the query rows as the mma's n.
// - qdecode_mma_kernel (the same head dims, at least two query rows per KV head, only where
//   forced): each stage is decoded into K and V tiles of the compute dtype in shared memory and
//   run through attention_mma.cuh's step.
// - qdecode_kernel (the rest) on CUDA cores, split over the KV length like attention.cu's: one
//   block per (split, sequence, KV head, chunk of R query rows); a key's head_dim features
//   spread over L lanes, eight per lane, decoded from their codes in registers (FP8: a
//   conversion; Q8/Q4: code − c times the run's scale / c).
// The Hadamard formats are read in the rotated basis: since H = Hᵀ and H·H = 32·I,
// q·(H·y/32) = (H·q/32)·y, so a block rotates its query rows once (in shared memory) and dots
// them with the rotated codes; V is accumulated rotated and each partial output is rotated back
// once, before the fixed-order merge that attention.cuh's merge_and_store does. E4M3's
// per-KV-head scales fold into the scores (K) and into the output (V). Several splits write f32 partials
// that attention.cu's combine merges.
//
// Every sequence of a call is cut into splits of one length: the one an eager launch planned
// for the batch's longest sequence takes (q_split_len). The kernel reads that longest length
// from the past lengths on the device and the split count from AttnArgs::splits_by_cap, so a
// launch planned for a longer bound (a captured graph, whose grid stays fixed while the
// lengths it reads change) cuts each step's keys exactly as the eager launch at the step's
// own lengths does; its extra splits find no keys and merge as exact zeros.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "attention.cuh"
#include "attention_mma.cuh"
#include "decode_splits.h"
#include "kv_frag.cuh"
#include "kv_quant.cuh"

namespace paradec {
namespace {

constexpr int kQWarps = 4;
constexpr int kQMaxSplits = 256;
static_assert(kQMaxSplits == kMaxSplits, "splits_by_cap covers every split count");
constexpr int64_t kQMaxQ = 16;

struct QArgs {
    AttnArgs a;
    KvView k;
    KvView v;
    SlotMap sm;
};

// Keys per split, the same for every sequence of the call: the cut of an eager launch planned
// for the batch's longest sequence (its past length read on the device, clamped as the kernel
// reads it). Every lane of the calling warp takes part.
__device__ __forceinline__ int64_t q_split_len(const AttnArgs &a) {
    long long m = 0;
    for (int b = threadIdx.x & 31; b < a.batch; b += 32)
        m = max(m, static_cast<long long>(clamped_past(a, b)));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, off));
    return split_len_of(a, static_cast<int64_t>(m) + a.q_len);
}

// Where a decode block works: its sequence and KV head, its query rows (row0 … row0 + nrows − 1
// of the KV head's q_len × group rows) and the keys [k_begin, k_end) its split reads — the
// split's share of the sequence, cut at the block's last query position and, with a sliding
// window, at its first row's window.
struct DecodeBlock {
    int group, b, kvh, row0, nrows, split, t_first, t_last;
    int64_t past, kv_len, k_begin, k_end;
};

// Every lane of the calling warp takes part (q_split_len reduces over the batch).
__device__ __forceinline__ DecodeBlock decode_block(const AttnArgs &a, int rows_per_block) {
    DecodeBlock d;
    d.group = a.heads / a.kv_heads;
    d.b = blockIdx.y / a.kv_heads;
    d.kvh = blockIdx.y % a.kv_heads;
    const int rows_total = a.q_len * d.group;
    d.row0 = blockIdx.z * rows_per_block;
    d.nrows = min(rows_per_block, rows_total - d.row0);
    d.split = blockIdx.x;
    d.past = clamped_past(a, d.b);
    d.kv_len = d.past + a.q_len;
    d.t_first = d.row0 / d.group;
    d.t_last = (d.row0 + d.nrows - 1) / d.group;
    const int64_t split_len = q_split_len(a);
    d.k_begin = static_cast<int64_t>(d.split) * split_len;
    d.k_end = min(d.k_begin + split_len, d.kv_len);
    d.k_end = min(d.k_end, d.past + d.t_last + 1);
    if (a.window > 0) d.k_begin = max(d.k_begin, d.past + d.t_first + 1 - a.window);
    return d;
}

// Rotates `runs` runs of 32 values of shared memory in place by H / 32 (into the Hadamard
// basis, and back: H·H = 32·I), with the whole block; the caller synchronizes after.
__device__ __forceinline__ void rotate_runs(float *p, int runs) {
    for (int idx = threadIdx.x; idx < runs; idx += blockDim.x) {
        float y[kRun];
#pragma unroll
        for (int i = 0; i < kRun; ++i) y[i] = p[idx * kRun + i];
        fwht32(y);
#pragma unroll
        for (int i = 0; i < kRun; ++i) p[idx * kRun + i] = y[i] * (1.f / kRun);
    }
}

// Row r (< db.nrows) of the block's query rows in Q: query token t = row / group of the
// sequence, head kvh·group + row % group.
template <typename T>
__device__ __forceinline__ const T *query_row(const AttnArgs &a, const DecodeBlock &db, int r,
                                              int D) {
    const int row = db.row0 + r;
    const int t = row / db.group, h = db.kvh * db.group + row % db.group;
    return static_cast<const T *>(a.q) +
           ((static_cast<int64_t>(db.b) * a.q_len + t) * a.heads + h) * D;
}

// The block's query rows (`rows` of them, rows past db.nrows zero; D = a.head_dim, passed so a
// kernel with a fixed head dim folds it) times `scale` into shared memory as f32 [rows][D], then — for a K format with Hadamard runs — into the rotated basis
// (q·(H·y/32) = (H·q/32)·y). The whole block takes part; the rows are ready on return.
template <typename T, int KF>
__device__ __forceinline__ void stage_query_rows(const AttnArgs &a, const DecodeBlock &db,
                                                 int rows, int D, float scale, float *sm_q) {
    for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
        const int r = idx / D, d = idx % D;
        sm_q[idx] = r < db.nrows ? Num<T>::to_f(query_row<T>(a, db, r, D)[d]) * scale : 0.f;
    }
    __syncthreads();
    if (kv_has_runs(KF)) {
        rotate_runs(sm_q, rows * D / kRun);
        __syncthreads();
    }
}

// Queues (cp.async) the block's `rows` query rows as they are in memory into raw ([rows][D] of
// T; rows past db.nrows zero-filled), for the caller to commit: the rows then travel ahead of
// the keys queued after them.
template <typename T>
__device__ __forceinline__ void queue_query_rows(const AttnArgs &a, const DecodeBlock &db,
                                                 int rows, int D, T *raw) {
    const int ch = D / kVec;
    for (int i = threadIdx.x; i < rows * ch; i += blockDim.x) {
        const int r = i / ch, c = i % ch;
        const bool ok = r < db.nrows;
        const T *src = ok ? query_row<T>(a, db, r, D) + c * kVec : static_cast<const T *>(a.q);
        cp_async16_zfill(raw + r * D + c * kVec, src, ok);
    }
}

// A lane's eight codes of one key, as loaded: 16 bytes (native), 8 (FP8, Q8) or 4 (Q4).
template <int F>
struct Raw {
    using type = typename std::conditional<
        F == PARADEC_KV_NATIVE, uint4,
        typename std::conditional<F == PARADEC_KV_Q4, uint32_t, uint2>::type>::type;
};

template <int F, typename T>
__device__ __forceinline__ int64_t lane_off(int64_t e) {
    return F == PARADEC_KV_Q4 ? e / 2 : F == PARADEC_KV_NATIVE ? e * static_cast<int64_t>(sizeof(T)) : e;
}

template <int F>
__device__ __forceinline__ typename Raw<F>::type load_raw(const uint8_t *p) {
    return __ldg(reinterpret_cast<const typename Raw<F>::type *>(p));
}

template <int F>
__device__ __forceinline__ typename Raw<F>::type zero_raw() {
    typename Raw<F>::type r;
    memset(&r, 0, sizeof(r));
    return r;
}

// The factor a format's fast decode leaves out: FP8 bytes are placed into f32 bit patterns
// whose value is the code's times 2^-120 (E4M3) or 2^-112 (E5M2) — exact, subnormals included.
template <int F>
__host__ __device__ constexpr float decode_factor() {
    return F == PARADEC_KV_E4M3 ? 1.329227995784916e36f    // 2^120
           : F == PARADEC_KV_E5M2 ? 5.192296858534828e33f  // 2^112
                                  : 1.f;
}

// One FP8 byte (bits 8i.. of w) as f32 bits: its value times 2^-120 (E4M3: s.eeee.mmm → the
// exponent field lands on the f32 exponent's low bits) or 2^-112 (E5M2: s.eeeee.mm).
template <int F>
__device__ __forceinline__ float fp8_bits(uint32_t w, int i) {
    const uint32_t b = (w >> (8 * i)) & 0xffu;
    constexpr int sh = F == PARADEC_KV_E4M3 ? 20 : 21;
    return __uint_as_float(((b & 0x7fu) << sh) | ((b & 0x80u) << 24));
}

// Decodes a lane's eight codes (without the per-format factor, the run scale or the head
// scale): FP8 values·2^-k, Q8/Q4 code − c, native values.
template <int F, typename T>
__device__ __forceinline__ void decode_raw(const typename Raw<F>::type &r, float (&f)[8]) {
    if constexpr (F == PARADEC_KV_NATIVE) {
        unpack8<T>(r, f);
    } else if constexpr (F == PARADEC_KV_Q4) {
        // 0x4B000000 | n is the float 2^23 + n: one logic op and one add per value.
#pragma unroll
        for (int i = 0; i < 8; ++i)
            f[i] = __uint_as_float(((r >> (4 * i)) & 0xfu) | 0x4B000000u) - 8388616.f;
    } else if constexpr (F == PARADEC_KV_Q8) {
        const uint32_t w[2] = {r.x, r.y};
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int i = 0; i < 4; ++i)
                f[4 * h + i] =
                    __uint_as_float(__byte_perm(w[h], 0x4B000000u, 0x7440u + i)) - 8388736.f;
    } else {
        const uint32_t w[2] = {r.x, r.y};
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int i = 0; i < 4; ++i) f[4 * h + i] = fp8_bits<F>(w[h], i);
    }
}

// Keys per lane group per step: enough bytes in flight per lane.
template <int F>
constexpr int keys_per_step() {
    return F == PARADEC_KV_Q4 ? 8 : F == PARADEC_KV_NATIVE ? 2 : 4;
}

template <typename T, int KF, int VF, int L, int R>
__global__ void __launch_bounds__(kQWarps * 32) qdecode_kernel(QArgs qa) {
    constexpr int KW = 32 / L;       // keys per warp step
    constexpr int G = kQWarps * KW;  // lane groups per block
    constexpr int U = keys_per_step<KF>() > keys_per_step<VF>() ? keys_per_step<KF>()
                                                                 : keys_per_step<VF>();
    const AttnArgs &a = qa.a;
    extern __shared__ __align__(16) float qsm[];
    const int D = a.head_dim;
    float *sm_q = qsm;           // [R, D]
    float *sm_m = sm_q + R * D;  // [G, R]
    float *sm_l = sm_m + G * R;  // [G, R]
    float *sm_o = sm_l + G * R;  // [G, R, D]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane % L, kg = lane / L;
    const int g = warp * KW + kg;
    const DecodeBlock db = decode_block(a, R);
    const int group = db.group, b = db.b, kvh = db.kvh, row0 = db.row0, nrows = db.nrows;
    const int split = db.split;
    const int64_t past = db.past;
    const int64_t k_begin = db.k_begin, k_end = db.k_end;

    // Query rows, scaled (softmax in base 2; E4M3's K head scale folded in), to shared memory.
    // The fast decode's factor multiplies each key's dot product (q times it could overflow).
    const float qscale =
        a.scale * kLog2e * (KF == PARADEC_KV_E4M3 ? qa.k.head_scale[kvh] : 1.f);
    stage_query_rows<T, KF>(a, db, R, D, qscale, sm_q);
    const bool dim_ok = sub * 8 < D;
    float qr[R][8];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int e = 0; e < 8; ++e) qr[r][e] = dim_ok ? sm_q[r * D + sub * 8 + e] : 0.f;
    int64_t pos[R], lo[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int t = (row0 + r) / group;
        pos[r] = r < nrows ? past + t : -1;
        lo[r] = a.window > 0 ? past + t + 1 - a.window : 0;
    }
    float m[R], l[R], o[R][8];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) o[r][e] = 0.f;
    }
    const int64_t e0 = static_cast<int64_t>(kvh) * D + sub * 8;  // this lane's first element
    const int64_t run = e0 / kRun;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;
    // V's constant factor (E4M3 head scale, fast-decode factor; Q8/Q4 multiply their run's
    // scale / c per key).
    const float vconst = decode_factor<VF>() * (VF == PARADEC_KV_E4M3 ? qa.v.head_scale[kvh] : 1.f);
    constexpr float kc = KF == PARADEC_KV_Q4 ? 1.f / 8 : 1.f / 128;
    constexpr float vc = VF == PARADEC_KV_Q4 ? 1.f / 8 : 1.f / 128;

    // One step's raw codes and scales of this lane (K and V of U keys), loaded a step ahead.
    typename Raw<KF>::type kr[U], kr_next[U];
    typename Raw<VF>::type vr[U], vr_next[U];
    float ks[U], vs[U], ks_next[U], vs_next[U];
    auto load_step = [&](int64_t base, typename Raw<KF>::type (&kx)[U],
                         typename Raw<VF>::type (&vx)[U], float (&ksx)[U], float (&vsx)[U]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t j = base + g + G * u;
            if (j < k_end && dim_ok) {
                const int64_t slot = qa.sm(b, j);
                kx[u] = load_raw<KF>(qa.k.codes + slot * qa.k.row_bytes + lane_off<KF, T>(e0));
                vx[u] = load_raw<VF>(qa.v.codes + slot * qa.v.row_bytes + lane_off<VF, T>(e0));
                ksx[u] = kv_has_runs(KF) ? __half2float(qa.k.scales[slot * qa.k.runs + run]) * kc
                                         : decode_factor<KF>();
                vsx[u] = kv_has_runs(VF)
                             ? __half2float(qa.v.scales[slot * qa.v.runs + run]) * vc * vconst
                             : vconst;
            } else {
                kx[u] = zero_raw<KF>();
                vx[u] = zero_raw<VF>();
                ksx[u] = 0.f;  // a key this lane does not hold adds nothing
                vsx[u] = 0.f;
            }
        }
    };
    if (k_begin < k_end) load_step(k_begin, kr, vr, ks, vs);
    for (int64_t base = k_begin; base < k_end; base += G * U) {
        const bool more = base + G * U < k_end;
        if (more) load_step(base + G * U, kr_next, vr_next, ks_next, vs_next);
        float s[R][U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t j = base + g + G * u;
            float kf[8];
            decode_raw<KF, T>(kr[u], kf);
            const float madd = (mrow && j < k_end) ? mrow[j] * kLog2e : 0.f;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float dot = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) dot = fmaf(qr[r][e], kf[e], dot);
                dot *= ks[u];  // this lane's run scale (lanes of one key may differ), or factor
#pragma unroll
                for (int off = L / 2; off > 0; off >>= 1)
                    dot += __shfl_xor_sync(0xffffffffu, dot, off);
                const bool vis = j < k_end && j <= pos[r] && j >= lo[r];
                s[r][u] = vis ? dot + madd : -INFINITY;
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float mx = s[r][0];
#pragma unroll
            for (int u = 1; u < U; ++u) mx = fmaxf(mx, s[r][u]);
            const float mn = fmaxf(m[r], mx);
            const float mu = mn == -INFINITY ? 0.f : mn;
            const float alpha = exp2f(m[r] - mu);
            m[r] = mn;
            l[r] *= alpha;
#pragma unroll
            for (int e = 0; e < 8; ++e) o[r][e] *= alpha;
#pragma unroll
            for (int u = 0; u < U; ++u) s[r][u] = exp2f(s[r][u] - mu);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float vf[8];
            decode_raw<VF, T>(vr[u], vf);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                l[r] += s[r][u];
                const float w = s[r][u] * vs[u];
#pragma unroll
                for (int e = 0; e < 8; ++e) o[r][e] = fmaf(w, vf[e], o[r][e]);
            }
        }
        if (more) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                kr[u] = kr_next[u];
                vr[u] = vr_next[u];
                ks[u] = ks_next[u];
                vs[u] = vs_next[u];
            }
        }
    }

    // Each lane group's state to shared memory; V back from the rotated basis; merge.
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (sub == 0) {
            sm_m[g * R + r] = m[r];
            sm_l[g * R + r] = l[r];
        }
        if (dim_ok) {
#pragma unroll
            for (int e = 0; e < 8; ++e) sm_o[(g * R + r) * D + sub * 8 + e] = o[r][e];
        }
    }
    __syncthreads();
    if (kv_has_runs(VF)) {
        rotate_runs(sm_o, G * R * D / kRun);
        __syncthreads();
    }
    merge_and_store<T>(a, sm_m, sm_l, sm_o, G, R, D, nrows, row0, b, kvh, split);
}

// ---- decode on tensor cores -----------------------------------------------------------------
// A GQA/MQA group's query rows (or several query tokens) read every K/V element once and run
// Q·Kᵀ and P·V on tensor cores, as the native cache's decode_mma_kernel does (attention_mma.cuh
// holds their shared step). One block per (split, sequence, KV head, chunk of 16 rows); each of
// its 4 warps streams stages of 16 keys: the keys' codes (and run scales) go through a per-warp
// ring of shared-memory stages (cp.async, the pages' slots looked up per key), and the stage in
// use is decoded into a per-warp tile of K and V rows in the compute dtype — exactly the values
// the CUDA-core kernel multiplies, rounded once — which the shared step reads with ldmatrix.
// The CUDA-core kernel above spends ~100 warp instructions per key of an 8-row group (two f32
// FMAs per value and row); here a key costs its decoding (~2 instructions per value pair) and
// 1/16 of a stage's mma work, so a 4-bit cache streams at its bandwidth.
//
// Column order: the Q4 pair decoding yields nibbles (s, s + 4) of a word as one half2, so in Q4
// tiles column 2p + e of each group of 8 holds dimension p + 4e. Q's fragments use the same order
// for K (Q·Kᵀ is a sum over dimensions in any order), and O's columns come out in V's order, which
// the store undoes.
constexpr int kTcWarps = 4;

// Bytes of one key's codes of one head in a ring stage, and of its run scales.
template <int F, int D>
__host__ __device__ constexpr int tc_code_bytes() {
    return F == PARADEC_KV_Q4 ? D / 2 : F == PARADEC_KV_NATIVE ? 2 * D : D;
}
template <int F, int D>
__host__ __device__ constexpr int tc_scale_bytes() {
    return kv_has_runs(F) ? 2 * (D / kRun) : 0;
}
// A ring stage: K codes, V codes, K scales, V scales of 16 keys (each part a multiple of 16 B).
template <int KF, int VF, int D>
__host__ __device__ constexpr int tc_stage_bytes() {
    return kDecKeys * (tc_code_bytes<KF, D>() + tc_code_bytes<VF, D>() + tc_scale_bytes<KF, D>() +
                       tc_scale_bytes<VF, D>());
}
template <int KF, int VF, int D>
__host__ __device__ constexpr int tc_stages() {
    return tc_stage_bytes<KF, VF, D>() <= 2560 ? 4 : tc_stage_bytes<KF, VF, D>() <= 4608 ? 3 : 2;
}
// Per warp: the ring, then the decoded K and V tiles ([2][16][D + 8] of the compute dtype).
template <int KF, int VF, int D>
__host__ __device__ constexpr size_t tc_warp_bytes() {
    return static_cast<size_t>(tc_stages<KF, VF, D>()) * tc_stage_bytes<KF, VF, D>() +
           2 * kDecKeys * (D + 8) * 2;
}
template <int KF, int VF, int D>
__host__ __device__ constexpr size_t tc_smem_bytes() {
    const size_t rings = kTcWarps * tc_warp_bytes<KF, VF, D>();
    const size_t merge = sizeof(float) * kTcWarps * kDecRows * (D + 2);
    return rings > merge ? rings : merge;  // ≥ the Q staging ([16][D] f32) too
}

// Eight consecutive values (dims e … e + 7 of one key) from their codes `raw` and the run's
// scale, as four pairs of the compute dtype in the tile's column order. Q4 and Q8 in f16 place
// codes into the magic exponent's mantissa (exact), subtract (magic + c) and multiply by
// scale / c: one rounding, as the f32 path's; other formats and bf16 decode in f32.
template <typename T, int F>
__device__ __forceinline__ uint4 tc_decode8(const uint8_t *raw, __half run_scale) {
    uint4 out;
    uint32_t *o = reinterpret_cast<uint32_t *>(&out);
    if constexpr (F == PARADEC_KV_NATIVE) {
        out = *reinterpret_cast<const uint4 *>(raw);
    } else if constexpr (F == PARADEC_KV_Q4 && std::is_same<T, __half>::value) {
        const uint32_t w = *reinterpret_cast<const uint32_t *>(raw);
        // scale / 8, exact (a power-of-two step of an f16 that is not tiny)
        const __half2 step = __hmul2(__half2half2(run_scale), __float2half2_rn(0.125f));
        const __half2 bias = __float2half2_rn(1032.f);  // magic 1024 + c
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            uint32_t v = lop3_and_or(w >> (4 * s), 0x000f000fu, 0x64006400u);
            __half2 h = __hmul2(__hsub2(*reinterpret_cast<const __half2 *>(&v), bias), step);
            o[s] = *reinterpret_cast<const uint32_t *>(&h);
        }
    } else if constexpr (F == PARADEC_KV_Q8 && std::is_same<T, __half>::value) {
        const uint2 w = *reinterpret_cast<const uint2 *>(raw);
        const __half2 step = __hmul2(__half2half2(run_scale), __float2half2_rn(1.f / 128));
        const __half2 bias = __float2half2_rn(1152.f);  // magic 1024 + c
        const uint32_t ws[2] = {w.x, w.y};
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                // bytes 2i, 2i + 1 of ws[h] under the magic's high byte 0x64
                uint32_t v = __byte_perm(ws[h], 0x64646464u, i == 0 ? 0x4140u : 0x4342u);
                __half2 x = __hmul2(__hsub2(*reinterpret_cast<const __half2 *>(&v), bias), step);
                o[2 * h + i] = *reinterpret_cast<const uint32_t *>(&x);
            }
    } else {
        typename Raw<F>::type r;
        memcpy(&r, raw, sizeof(r));
        float f[8];
        decode_raw<F, T>(r, f);
        const float k = kv_has_runs(F)
                            ? __half2float(run_scale) / static_cast<float>(1 << (kv_bits(F) - 1))
                            : decode_factor<F>();
        if constexpr (F == PARADEC_KV_Q4) {
            // The tile's column order (see above): pair s holds dims s and s + 4.
#pragma unroll
            for (int s2 = 0; s2 < 4; ++s2) o[s2] = pack2<T>(f[s2] * k, f[s2 + 4] * k);
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) o[i] = pack2<T>(f[2 * i] * k, f[2 * i + 1] * k);
        }
    }
    return out;
}

// Dimension of tile column c in format F's column order.
template <int F>
__device__ __forceinline__ int tc_dim(int c) {
    return F == PARADEC_KV_Q4 ? (c & ~7) + ((c & 7) >> 1) + 4 * (c & 1) : c;
}
template <int F>
struct TcColumns {
    __device__ __forceinline__ int operator()(int c) const { return tc_dim<F>(c); }
};

// Queues a ring stage of one warp (keys base … base + 15 of sequence b, KV head kvh) at `stage_p`:
// codes in 16-byte pieces — chunk c of key r at r·bytes + c'·16, c' = c or, with kSwizzle,
// kvfrag::swizzle(c, r, ·) — then the run scales of each key in one piece of D/16 bytes; keys
// past k_end are zero-filled. Lane l looks up key l % 16's slot once; the pieces take it by
// shuffle. The caller commits the group.
template <int KF, int VF, int D, bool kSwizzle>
__device__ __forceinline__ void issue_stage(const QArgs &qa, int b, int kvh, int64_t base,
                                            int64_t k_end, unsigned char *stage_p) {
    constexpr int KCB = tc_code_bytes<KF, D>(), VCB = tc_code_bytes<VF, D>();
    constexpr int KSB = tc_scale_bytes<KF, D>(), VSB = tc_scale_bytes<VF, D>();
    const int lane = threadIdx.x & 31;
    const int64_t k_head = kv_row_bytes(KF, static_cast<int64_t>(kvh) * D);
    const int64_t v_head = kv_row_bytes(VF, static_cast<int64_t>(kvh) * D);
    const int64_t run0 = static_cast<int64_t>(kvh) * D / kRun;
    const int64_t my_j = base + (lane % kDecKeys);
    const int64_t my_slot = my_j < k_end ? qa.sm(b, my_j) : 0;
    auto pieces = [&](const KvView &kv, int64_t head, int cb, unsigned char *dst0) {
        const int per = cb / 16;
        for (int c = lane; c < kDecKeys * per; c += 32) {
            const int r = c / per, piece = c % per;
            const int64_t slot = __shfl_sync(0xffffffffu, my_slot, r);
            const bool ok = base + r < k_end;
            const uint8_t *src = kv.codes + slot * kv.row_bytes + head + piece * 16;
            const int at = kSwizzle ? kvfrag::swizzle(piece, r, per) : piece;
            cp_async16_zfill(dst0 + r * cb + at * 16, ok ? src : kv.codes, ok);
        }
    };
    pieces(qa.k, k_head, KCB, stage_p);
    pieces(qa.v, v_head, VCB, stage_p + kDecKeys * KCB);
    if constexpr (KSB > 0 || VSB > 0) {
        // One piece per key and side: lanes 0–15 K, 16–31 V.
        const bool is_k = lane < kDecKeys;
        const int r = lane % kDecKeys;
        const bool ok = my_j < k_end;
        const int sb = is_k ? KSB : VSB;
        if (sb > 0) {
            const KvView &kv = is_k ? qa.k : qa.v;
            const __half *src = kv.scales + my_slot * kv.runs + run0;
            unsigned char *dst =
                stage_p + kDecKeys * (KCB + VCB) + (is_k ? 0 : kDecKeys * KSB) + r * sb;
            const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(dst));
            const int n = ok ? sb : 0;
            if (sb == 8)
                asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(sa),
                             "l"(ok ? src : kv.scales), "r"(n));
            else
                asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(sa),
                             "l"(ok ? src : kv.scales), "r"(n));
        }
    }
}

template <typename T, int KF, int VF, int D>
__global__ void __launch_bounds__(kTcWarps * 32) qdecode_mma_kernel(QArgs qa) {
    constexpr int SD = D + 8;
    constexpr int KT = D / 16;
    constexpr int DT = D / 8;
    constexpr int NS = tc_stages<KF, VF, D>();
    constexpr int KCB = tc_code_bytes<KF, D>(), VCB = tc_code_bytes<VF, D>();
    constexpr int KSB = tc_scale_bytes<KF, D>(), VSB = tc_scale_bytes<VF, D>();
    constexpr int STAGE = tc_stage_bytes<KF, VF, D>();
    const AttnArgs &a = qa.a;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const DecodeBlock db = decode_block(a, kDecRows);
    const int group = db.group, b = db.b, kvh = db.kvh, row0 = db.row0, nrows = db.nrows;
    const int split = db.split;
    const int64_t past = db.past;
    const int64_t k_begin = db.k_begin, k_end = db.k_end;
    const int64_t pos_min = past + db.t_first;
    const bool plain = a.mask == nullptr && a.window == 0;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;

    // Q rows (softmax scale applied by the step; E4M3's K head scale with it) to shared memory
    // in f32, into the rotated basis for the Hadamard formats, then as mma A fragments in K's
    // column order.
    float *sm_q = reinterpret_cast<float *>(smem_raw);  // [16][D]
    stage_query_rows<T, KF>(a, db, kDecRows, D, 1.f, sm_q);
    const int ra = g, rb = g + 8;
    unsigned qf[KT][4];
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
        const int c0 = kk * 16 + 2 * t4, c1 = c0 + 8;
        qf[kk][0] = pack2<T>(sm_q[ra * D + tc_dim<KF>(c0)], sm_q[ra * D + tc_dim<KF>(c0 + 1)]);
        qf[kk][1] = pack2<T>(sm_q[rb * D + tc_dim<KF>(c0)], sm_q[rb * D + tc_dim<KF>(c0 + 1)]);
        qf[kk][2] = pack2<T>(sm_q[ra * D + tc_dim<KF>(c1)], sm_q[ra * D + tc_dim<KF>(c1 + 1)]);
        qf[kk][3] = pack2<T>(sm_q[rb * D + tc_dim<KF>(c1)], sm_q[rb * D + tc_dim<KF>(c1 + 1)]);
    }
    __syncthreads();  // the staging area becomes the rings

    const int64_t pos_a = past + (row0 + ra) / group, pos_b = past + (row0 + rb) / group;
    const DecRowLimits lim{pos_a, pos_b, a.window > 0 ? pos_a + 1 - a.window : 0,
                           a.window > 0 ? pos_b + 1 - a.window : 0};
    unsigned char *ring = smem_raw + warp * tc_warp_bytes<KF, VF, D>();
    T *ktile = reinterpret_cast<T *>(ring + NS * STAGE);
    T *vtile = ktile + kDecKeys * SD;
    auto issue = [&](int i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kTcWarps * i) * kDecKeys;
        if (base < k_end)
            issue_stage<KF, VF, D, false>(qa, b, kvh, base, k_end, ring + (i % NS) * STAGE);
        cp_async_commit_group();
    };
    // Decodes ring stage i into the tiles: lane l decodes dims 8·(l % G8) … + 7 of keys
    // l / G8 + u·32/G8, K then V.
    constexpr int G8 = D / 8;             // groups of eight values per key
    constexpr int KSTEP = 32 / G8;        // keys between a lane's items
    const int r0 = lane / G8, e8 = lane % G8;
    const int run_of_lane = (e8 * 8) / kRun;
    auto decode = [&](int i) {
        const unsigned char *stage_p = ring + (i % NS) * STAGE;
        const __half *kscale = reinterpret_cast<const __half *>(stage_p + kDecKeys * (KCB + VCB));
        const __half *vscale = reinterpret_cast<const __half *>(stage_p + kDecKeys * (KCB + VCB + KSB));
#pragma unroll
        for (int u = 0; u < kDecKeys / KSTEP; ++u) {
            const int r = r0 + u * KSTEP;
            const __half ks = KSB > 0 ? kscale[r * (KSB / 2) + run_of_lane] : __half{};
            st(ktile + r * SD + e8 * 8,
               tc_decode8<T, KF>(stage_p + r * KCB + e8 * (KCB / G8), ks));
        }
#pragma unroll
        for (int u = 0; u < kDecKeys / KSTEP; ++u) {
            const int r = r0 + u * KSTEP;
            const __half vs = VSB > 0 ? vscale[r * (VSB / 2) + run_of_lane] : __half{};
            st(vtile + r * SD + e8 * 8,
               tc_decode8<T, VF>(stage_p + kDecKeys * KCB + r * VCB + e8 * (VCB / G8), vs));
        }
    };
#pragma unroll
    for (int i = 0; i < NS - 1; ++i) issue(i);

    const float sl2 = a.scale * kLog2e * (KF == PARADEC_KV_E4M3 ? qa.k.head_scale[kvh] : 1.f);
    DecState<DT> state;
    for (int i = 0;; ++i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kTcWarps * i) * kDecKeys;
        if (base >= k_end) break;
        issue(i + NS - 1);
        asm volatile("cp.async.wait_group %0;\n" ::"n"(NS - 1));
        __syncwarp();
        decode(i);
        __syncwarp();
        const bool full = plain && base + kDecKeys <= k_end && base + kDecKeys - 1 <= pos_min;
        dec_stage<T, D>(qf, ktile, vtile, base, k_end, full, lim, mrow, sl2, state);
        __syncwarp();  // the tiles and the stage are rewritten next
    }
    asm volatile("cp.async.wait_group 0;\n" ::);
    dec_sum_rows(state);
    __syncthreads();  // the rings become the merge area
    float *sm_m = reinterpret_cast<float *>(smem_raw);
    float *sm_l = sm_m + kTcWarps * kDecRows;
    float *sm_o = sm_l + kTcWarps * kDecRows;  // [warp][row][D], natural dimension order
    // V's constant factor (E4M3 head scale) here; Q8/Q4 scales were in the tile.
    const float vconst = VF == PARADEC_KV_E4M3 ? qa.v.head_scale[kvh] : 1.f;
    dec_store_state<D>(state, sm_m, sm_l, sm_o, warp, TcColumns<VF>{}, vconst);
    __syncthreads();
    if (kv_has_runs(VF)) {
        rotate_runs(sm_o, kTcWarps * kDecRows * D / kRun);  // V back from the rotated basis
        __syncthreads();
    }
    merge_and_store<T>(a, sm_m, sm_l, sm_o, kTcWarps, kDecRows, D, nrows, row0, b, kvh, split);
}

// ---- decode with the codes decoded straight into mma fragments (kv_frag.cuh) ------------------
//
// One block per (split, sequence, KV head, chunk of 8 query rows); four warps each stream their
// own 16-key stages through a cp.async ring (codes chunk-swizzled for ldmatrix) and keep an
// online softmax over all eight rows. Per stage and warp: ldmatrix words of K → A fragments →
// Sᵀ = K·Qᵀ (per run of 32 dims its own accumulator, times the keys' run scales), masking and the
// softmax update on the lane's two rows, Pᵀ through movmatrix as the B fragments (times V's run
// scales, per run), Vᵀ's A fragments from ldmatrix.trans → Oᵀ += Vᵀ·Pᵀ. No decoded tile, no
// shared-memory round trip of values. The warps' states merge as the other decode kernels'.

// Warps of a fragment-kernel block, each streaming its own keys. H100, same run, 8 against 4
// (with one block per SM against two, the same warps per SM): fewer, longer blocks — FP8
// batch 1, 8 KV heads, L = 32768: 31.8 µs against 36.0; Q4 38.1 against 40.3; fp16 51.7
// against 52.8.
constexpr int kFragWarps = 8;

// Stages of a warp's ring: about 13 KiB of codes, 3 to 6 stages (3 for the native cache's
// 8 KiB stages: two in flight while one is read).
template <int KF, int VF, int D>
__host__ __device__ constexpr int frag_stages() {
    return 13312 / tc_stage_bytes<KF, VF, D>() < 3   ? 3
           : 13312 / tc_stage_bytes<KF, VF, D>() > 6 ? 6
                                                       : 13312 / tc_stage_bytes<KF, VF, D>();
}
// The rings, then the query rows' staging area (both live at once: the first stages are queued
// before Q is read); after the loop the merge area overlays them.
template <int KF, int VF, int D>
__host__ __device__ constexpr size_t frag_ring_bytes() {
    return static_cast<size_t>(kFragWarps) * frag_stages<KF, VF, D>() * tc_stage_bytes<KF, VF, D>();
}
// Past the rings: the query rows in f32 ([R][D] and R factors), then as loaded ([R][D] of T),
// R = 8·NT rows a block (NT n8 tiles of query rows per warp).
template <int D, int NT>
__host__ __device__ constexpr size_t frag_query_bytes() {
    return sizeof(float) * kvfrag::kRows * NT * (D + 1);
}
template <int KF, int VF, int D, int NT>
__host__ __device__ constexpr size_t frag_smem_bytes() {
    const size_t staged = frag_ring_bytes<KF, VF, D>() + frag_query_bytes<D, NT>() +
                          2 * kvfrag::kRows * NT * D;
    const size_t merge = sizeof(float) * kFragWarps * kvfrag::kRows * NT * (D + 2);
    return staged > merge ? staged : merge;
}

// c of a Q8/Q4 format (codes are code − c times scale / c); 1 for the others.
template <int F>
__host__ __device__ constexpr float code_offset() {
    return kv_has_runs(F) ? static_cast<float>(1 << (kv_bits(F) - 1)) : 1.f;
}

// NT n8 tiles of query rows a warp: 8·NT rows a block. Each stage's K and V fragments are
// loaded and decoded once and multiplied into every tile, so a query group of more than 8
// rows (MQA) reads its keys once per 8·NT rows.
template <typename T, int KF, int VF, int D, int NT>
__global__ void __launch_bounds__(kFragWarps * 32) qdecode_frag_kernel(QArgs qa) {
    // Where launched as a dependent (launch_frag_d), the kernel before may still be writing Q,
    // K and V.
    wait_for_previous_grid();
    using namespace kvfrag;
    static_assert((KF == PARADEC_KV_NATIVE) == (VF == PARADEC_KV_NATIVE), "both sides native or neither");
    // The mma's type: the cache's own over a native cache, f16 over decoded codes. bf16 keeps
    // 8 bits of P: its rounding remainder goes through a second product (decode is bound by
    // memory; the tensor cores have time).
    constexpr bool kNative = KF == PARADEC_KV_NATIVE;
    using MT = typename std::conditional<kNative, T, __half>::type;
    constexpr bool kSplitP = std::is_same<MT, __nv_bfloat16>::value;
    constexpr int R = kRows * NT;  // query rows a block
    constexpr int KT = D / 16;     // K's k steps, Vᵀ's m tiles
    constexpr int RUNS = D / kRun;
    constexpr int NS = frag_stages<KF, VF, D>();
    constexpr int STAGE = tc_stage_bytes<KF, VF, D>();
    constexpr int KCB = code_bytes(KF, D), VCB = code_bytes(VF, D);
    constexpr int KCH = chunks(KF, D), VCH = chunks(VF, D);
    constexpr int KSB = tc_scale_bytes<KF, D>();
    constexpr bool kKRuns = kv_has_runs(KF), kVRuns = kv_has_runs(VF);
    static_assert(KCH % 2 == 0 && VCH % 2 == 0, "whole ldmatrix x4 calls");
    const AttnArgs &a = qa.a;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const DecodeBlock db = decode_block(a, R);
    const int group = db.group, b = db.b, kvh = db.kvh, row0 = db.row0, nrows = db.nrows;
    const int64_t past = db.past, k_begin = db.k_begin, k_end = db.k_end;
    const int64_t pos_min = past + db.t_first;
    const bool plain = a.mask == nullptr && a.window == 0;
    const float *mrow = a.mask ? a.mask + b * a.mask_stride : nullptr;

    // The query rows go first, then each warp's first stages: the rows arrive ahead of the keys,
    // and the keys' latency covers the rows' staging.
    float *sm_q = reinterpret_cast<float *>(smem_raw + frag_ring_bytes<KF, VF, D>());  // [R][D]
    float *sm_qf = sm_q + R * D;                                                       // [R]
    T *sm_qraw = reinterpret_cast<T *>(smem_raw + frag_ring_bytes<KF, VF, D>() +
                                       frag_query_bytes<D, NT>());  // [R][D]
    queue_query_rows<T>(a, db, R, D, sm_qraw);
    cp_async_commit_group();
    unsigned char *ring = smem_raw + static_cast<size_t>(warp) * NS * STAGE;
    auto issue = [&](int i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kFragWarps * i) * kKeys;
        if (base < k_end)
            issue_stage<KF, VF, D, true>(qa, b, kvh, base, k_end, ring + (i % NS) * STAGE);
        cp_async_commit_group();
    };
#pragma unroll
    for (int i = 0; i < NS - 1; ++i) issue(i);

    // Q rows in f32 (rotated for a Hadamard K), then per row a power of two that brings its
    // largest |q| into [128, 256): f16 B operands keep their precision whatever the dtype's
    // range; the scores take the factor back in f32. Over a native cache Q is already of the
    // mma's type: factor 1.
    cp_async_wait_groups<NS - 1>();  // this thread's query pieces (the stages may still fly)
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * D; idx += blockDim.x)
        sm_q[idx] = Num<T>::to_f(sm_qraw[idx]);
    __syncthreads();
    if (kKRuns) {
        rotate_runs(sm_q, R * D / kRun);
        __syncthreads();
    }
    for (int r = warp; r < R; r += kFragWarps) {  // a warp per query row
        if constexpr (kNative) {
            if (lane == 0) sm_qf[r] = 1.f;  // Q is already of the mma's type
        } else {
            float mx = 0.f;
            for (int d = lane; d < D; d += 32) mx = fmaxf(mx, fabsf(sm_q[r * D + d]));
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            if (lane == 0) {
                int ex = 0;
                frexpf(mx, &ex);  // mx = m·2^ex, m ∈ [0.5, 1)
                sm_qf[r] = mx > 0.f ? ldexpf(1.f, 8 - max(ex, -100)) : 1.f;
            }
        }
    }
    __syncthreads();
    uint32_t qb[NT][KT][2];  // B fragments of tile n: dims k_dim(kc, 2t4 …) of row 8n + g
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        const float f = sm_qf[kRows * n + g];
        const float *qr = sm_q + (kRows * n + g) * D;
#pragma unroll
        for (int kc = 0; kc < KT; ++kc) {
            qb[n][kc][0] =
                pack2<MT>(qr[k_dim<KF>(kc, 2 * t4)] * f, qr[k_dim<KF>(kc, 2 * t4 + 1)] * f);
            qb[n][kc][1] =
                pack2<MT>(qr[k_dim<KF>(kc, 2 * t4 + 8)] * f, qr[k_dim<KF>(kc, 2 * t4 + 9)] * f);
        }
    }
    // Score scale of the lane's rows 8n + 2t4 and 8n + 2t4 + 1 of each tile n, in log2 units:
    // softmax scale, E4M3's K head scale, 1/c of a Q8/Q4 K, and the row's factor taken back.
    const float sl2 = a.scale * kLog2e * (KF == PARADEC_KV_E4M3 ? qa.k.head_scale[kvh] : 1.f) /
                      code_offset<KF>();
    float sl2_0[NT], sl2_1[NT];
    int64_t pos0[NT], pos1[NT], lo0[NT], lo1[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        const int r0 = kRows * n + 2 * t4;
        sl2_0[n] = sl2 / sm_qf[r0];
        sl2_1[n] = sl2 / sm_qf[r0 + 1];
        pos0[n] = past + (row0 + r0) / group;
        pos1[n] = past + (row0 + r0 + 1) / group;
        lo0[n] = a.window > 0 ? pos0[n] + 1 - a.window : 0;
        lo1[n] = a.window > 0 ? pos1[n] + 1 - a.window : 0;
    }

    // This lane's ldmatrix row addresses (key, chunk) within a stage's K and V codes.
    const int my_key = lane_key(lane);
    float o[NT][KT][4];  // Oᵀ of tile n: tile mt's dims v_dim(mt, g), (…, g + 8) × rows 2t4, 2t4 + 1
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < KT; ++i) o[n][i][0] = o[n][i][1] = o[n][i][2] = o[n][i][3] = 0.f;
    float m0[NT], m1[NT], l0[NT], l1[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        m0[n] = m1[n] = -INFINITY;
        l0[n] = l1[n] = 0.f;
    }
    for (int i = 0;; ++i) {
        const int64_t base = k_begin + static_cast<int64_t>(warp + kFragWarps * i) * kKeys;
        if (base >= k_end) break;
        issue(i + NS - 1);
        cp_async_wait_groups<NS - 1>();
        __syncwarp();
        const unsigned char *stage_p = ring + (i % NS) * STAGE;
        const unsigned char *kcodes = stage_p, *vcodes = stage_p + kKeys * KCB;
        const __half *kscale = reinterpret_cast<const __half *>(stage_p + kKeys * (KCB + VCB));
        const __half *vscale =
            reinterpret_cast<const __half *>(stage_p + kKeys * (KCB + VCB + KSB));

        // Sᵀ = K·Qᵀ: c0 = (key g, row 2t4), c1 = (g, 2t4 + 1), c2, c3 = key g + 8 (of tile n).
        uint32_t kw[2 * KCH];
#pragma unroll
        for (int c = 0; c < KCH / 2; ++c)
            ldsm_x4(*reinterpret_cast<uint32_t(*)[4]>(&kw[4 * c]),
                    kcodes + my_key * KCB + swizzle(lane_chunk(c, lane), my_key, KCH) * 16);
        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int r = 0; r < RUNS; ++r) {
            uint32_t fa[2][4];
            k_frags<KF>(kw + r * words_per_run(KF), fa);
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                if constexpr (kKRuns) {
                    float c[4] = {0.f, 0.f, 0.f, 0.f};
                    mma_16816<MT>(c, fa[0], qb[n][2 * r][0], qb[n][2 * r][1]);
                    mma_16816<MT>(c, fa[1], qb[n][2 * r + 1][0], qb[n][2 * r + 1][1]);
                    const float sg = __half2float(kscale[g * RUNS + r]);
                    const float sg8 = __half2float(kscale[(g + 8) * RUNS + r]);
                    s[n][0] = fmaf(sg, c[0], s[n][0]);
                    s[n][1] = fmaf(sg, c[1], s[n][1]);
                    s[n][2] = fmaf(sg8, c[2], s[n][2]);
                    s[n][3] = fmaf(sg8, c[3], s[n][3]);
                } else {
                    mma_16816<MT>(s[n], fa[0], qb[n][2 * r][0], qb[n][2 * r][1]);
                    mma_16816<MT>(s[n], fa[1], qb[n][2 * r + 1][0], qb[n][2 * r + 1][1]);
                }
            }
        }
        const bool full = plain && base + kKeys <= k_end && base + kKeys - 1 <= pos_min;
        float p[NT][4];
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            s[n][0] *= sl2_0[n];
            s[n][1] *= sl2_1[n];
            s[n][2] *= sl2_0[n];
            s[n][3] *= sl2_1[n];
            if (!full) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int64_t j = base + g + 8 * (e >> 1);
                    const int64_t pos = (e & 1) ? pos1[n] : pos0[n];
                    const int64_t lo = (e & 1) ? lo1[n] : lo0[n];
                    const bool vis = j < k_end && j <= pos && j >= lo;
                    s[n][e] = vis ? (mrow ? s[n][e] + mrow[j] * kLog2e : s[n][e]) : -INFINITY;
                }
            }
            // Online softmax of rows 2t4 (…0) and 2t4 + 1 (…1) over the lanes sharing t4.
            float mx0 = fmaxf(s[n][0], s[n][2]), mx1 = fmaxf(s[n][1], s[n][3]);
#pragma unroll
            for (int off = 4; off < 32; off <<= 1) {
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
            }
            float al0, al1;
            const float mu0 = softmax_rescale(m0[n], mx0, al0);
            const float mu1 = softmax_rescale(m1[n], mx1, al1);
            p[n][0] = exp2f(s[n][0] - mu0);
            p[n][1] = exp2f(s[n][1] - mu1);
            p[n][2] = exp2f(s[n][2] - mu0);
            p[n][3] = exp2f(s[n][3] - mu1);
            l0[n] = fmaf(l0[n], al0, p[n][0] + p[n][2]);
            l1[n] = fmaf(l1[n], al1, p[n][1] + p[n][3]);
            // Past the first stages a row's maximum rarely moves: rescale only when one did.
            if (__any_sync(0xffffffffu, al0 != 1.f || al1 != 1.f)) {
#pragma unroll
                for (int mt = 0; mt < KT; ++mt) {
                    o[n][mt][0] *= al0;
                    o[n][mt][1] *= al1;
                    o[n][mt][2] *= al0;
                    o[n][mt][3] *= al1;
                }
            }
        }

        // Oᵀ += Vᵀ·Pᵀ. P (key g / g + 8 × rows 2t4, 2t4 + 1) packed is the row fragment of an
        // 8×8 matrix per key half; movmatrix turns it into Pᵀ's B fragments (keys 2t4, 2t4 + 1
        // of row g).
        uint32_t vw[2 * VCH];
#pragma unroll
        for (int c = 0; c < VCH / 2; ++c)
            ldsm_x4_trans(*reinterpret_cast<uint32_t(*)[4]>(&vw[4 * c]),
                          vcodes + my_key * VCB + swizzle(lane_chunk(c, lane), my_key, VCH) * 16);
        uint32_t pb0[NT], pb1[NT], pl0[NT], pl1[NT];
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            pb0[n] = pb1[n] = pl0[n] = pl1[n] = 0;
            if constexpr (!kVRuns) {
                const uint32_t h01 = pack2<MT>(p[n][0], p[n][1]), h23 = pack2<MT>(p[n][2], p[n][3]);
                pb0[n] = movmatrix_trans(h01);
                pb1[n] = movmatrix_trans(h23);
                if constexpr (kSplitP) {
                    pl0[n] = movmatrix_trans(pack2_lo<MT>(p[n][0], p[n][1], h01));
                    pl1[n] = movmatrix_trans(pack2_lo<MT>(p[n][2], p[n][3], h23));
                }
            }
        }
#pragma unroll
        for (int r = 0; r < RUNS; ++r) {
            uint32_t va[2][4];
            v_frags<VF>(vw + r * words_per_run(VF), va);
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                if constexpr (kVRuns) {
                    const float sg = __half2float(vscale[g * RUNS + r]);
                    const float sg8 = __half2float(vscale[(g + 8) * RUNS + r]);
                    pb0[n] = movmatrix_trans(pack2<__half>(p[n][0] * sg, p[n][1] * sg));
                    pb1[n] = movmatrix_trans(pack2<__half>(p[n][2] * sg8, p[n][3] * sg8));
                }
                mma_16816<MT>(o[n][2 * r], va[0], pb0[n], pb1[n]);
                mma_16816<MT>(o[n][2 * r + 1], va[1], pb0[n], pb1[n]);
                if constexpr (kSplitP) {
                    mma_16816<MT>(o[n][2 * r], va[0], pl0[n], pl1[n]);
                    mma_16816<MT>(o[n][2 * r + 1], va[1], pl0[n], pl1[n]);
                }
            }
        }
        __syncwarp();  // the stage is refilled next
    }
    cp_async_wait_groups<0>();
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int off = 4; off < 32; off <<= 1) {
            l0[n] += __shfl_xor_sync(0xffffffffu, l0[n], off);
            l1[n] += __shfl_xor_sync(0xffffffffu, l1[n], off);
        }
    }
    __syncthreads();  // the rings become the merge area
    float *sm_m = reinterpret_cast<float *>(smem_raw);
    float *sm_l = sm_m + kFragWarps * R;
    float *sm_o = sm_l + kFragWarps * R;  // [warp][row][D], natural dimension order
    // V's constant factor: E4M3's head scale, 1/c of a Q8/Q4 V.
    const float vconst =
        (VF == PARADEC_KV_E4M3 ? qa.v.head_scale[kvh] : 1.f) / code_offset<VF>();
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        const int ra = warp * R + kRows * n + 2 * t4;
        if (g == 0) {
            sm_m[ra] = m0[n];
            sm_m[ra + 1] = m1[n];
            sm_l[ra] = l0[n];
            sm_l[ra + 1] = l1[n];
        }
#pragma unroll
        for (int mt = 0; mt < KT; ++mt) {
            const int d0 = v_dim<VF>(mt, g), d1 = v_dim<VF>(mt, g + 8);
            sm_o[ra * D + d0] = o[n][mt][0] * vconst;
            sm_o[(ra + 1) * D + d0] = o[n][mt][1] * vconst;
            sm_o[ra * D + d1] = o[n][mt][2] * vconst;
            sm_o[(ra + 1) * D + d1] = o[n][mt][3] * vconst;
        }
    }
    __syncthreads();
    if (kVRuns) {
        rotate_runs(sm_o, kFragWarps * R * D / kRun);  // V back from the rotated basis
        __syncthreads();
    }
    merge_and_store<T>(a, sm_m, sm_l, sm_o, kFragWarps, R, D, nrows, row0, b, kvh, db.split);
}

// How a call is cut: rows per block, lanes per key, row chunks, the grid's splits, and the
// splits − 1 an eager launch takes for a longest sequence of c·128 keys, by c = 1…256
// (AttnArgs::splits_by_cap; q_split_len).
struct QPlan {
    int rows;  // R
    int lanes; // L
    int chunks;
    int splits;
    unsigned char splits_by_cap[kQMaxSplits + 1];
};

QPlan plan_qdecode(int64_t batch, int64_t q_len, int64_t heads, int64_t kv_heads,
                   int64_t head_dim, int64_t max_past, bool frag) {
    QPlan p{};
    const int64_t rows = q_len * (heads / kv_heads);
    p.rows = rows <= 1 ? 1 : rows <= 4 ? 4 : 8;
    p.chunks = static_cast<int>((rows + p.rows - 1) / p.rows);
    const int64_t vecs = (head_dim + 7) / 8;
    p.lanes = vecs <= 4 ? 4 : vecs <= 8 ? 8 : vecs <= 16 ? 16 : 32;
    const int64_t units = batch * kv_heads * p.chunks;
    static const int cap = env_int("PARADEC_ATTN_MAX_SPLITS", 1, kQMaxSplits);  // as plan_decode
    split_table(frag ? SplitRule::TensorCore : SplitRule::QuantCudaCore, units, current_device_sms(),
                cap > 0 ? cap : kQMaxSplits, head_dim, kQMaxSplits, p.splits_by_cap);
    fix_splits(p.splits_by_cap);
    // The grid: the split count of the planned bound, which no shorter batch exceeds (a split
    // a shorter batch leaves empty merges as exact zeros).
    const int64_t max_kv = max_past + q_len;
    const int64_t c = std::max<int64_t>(1, std::min<int64_t>(kQMaxSplits, (max_kv + 127) / 128));
    p.splits = p.splits_by_cap[c] + 1;
    return p;
}

size_t q_smem_bytes(int rows, int lanes, int64_t head_dim) {
    const int64_t G = kQWarps * (32 / lanes);
    return sizeof(float) * static_cast<size_t>(rows * head_dim + 2 * G * rows + G * rows * head_dim);
}

template <typename T, int KF, int VF, int L, int R>
int launch_q_lr(const QArgs &qa, const QPlan &p, cudaStream_t stream) {
    const size_t smem = q_smem_bytes(R, L, qa.a.head_dim);
    if (smem > 48 * 1024) {
        if (const int st = allow_dynamic_smem(qdecode_kernel<T, KF, VF, L, R>, smem)) return st;
    }
    const dim3 grid(p.splits, qa.a.batch * qa.a.kv_heads, p.chunks);
    qdecode_kernel<T, KF, VF, L, R><<<grid, kQWarps * 32, smem, stream>>>(qa);
    return launch_status();
}

template <typename T, int KF, int VF, int L>
int launch_q_l(const QArgs &qa, const QPlan &p, cudaStream_t stream) {
    switch (p.rows) {
        case 1: return launch_q_lr<T, KF, VF, L, 1>(qa, p, stream);
        case 4: return launch_q_lr<T, KF, VF, L, 4>(qa, p, stream);
        default: return launch_q_lr<T, KF, VF, L, 8>(qa, p, stream);
    }
}

// Launches a tensor-core decode kernel (`smem` bytes of dynamic shared memory, `rows` query
// rows a block) over the call's splits (qa.a.splits), every (sequence, KV head) and its row
// chunks; as a programmatic dependent where `dependent` (the kernel then waits for the previous
// grid before it reads anything).
int launch_q_tc(void (*kernel)(QArgs), size_t smem, int rows, int warps, bool dependent,
                const QArgs &qa, cudaStream_t stream) {
    if (const int st = allow_dynamic_smem(kernel, smem)) return st;
    const int all = qa.a.q_len * (qa.a.heads / qa.a.kv_heads);
    const dim3 grid(qa.a.splits, qa.a.batch * qa.a.kv_heads, (all + rows - 1) / rows);
    if (dependent) return launch_dependent(kernel, grid, dim3(warps * 32), smem, stream, qa);
    kernel<<<grid, warps * 32, smem, stream>>>(qa);
    return launch_status();
}

template <typename T, int KF, int VF, int D>
int launch_tc_d(const QArgs &qa, cudaStream_t stream) {
    return launch_q_tc(qdecode_mma_kernel<T, KF, VF, D>, tc_smem_bytes<KF, VF, D>(), kDecRows,
                       kTcWarps, false, qa, stream);
}

// The fragment kernel starts early, as a dependent of the kernel before (its launch and block
// scheduling then overlap that kernel's end), only where a block takes more than half of an
// sm_90 SM's 228 KiB of shared memory — the native cache's rings — so that one block runs per SM
// whatever SMs the kernel before still holds. H100, same run, against plain launches: a native
// cache, batch 1, 8 KV heads, L = 1024: 8.2 → 7.7 µs in a graph, no change at 32768; where two
// blocks fit an SM (FP8, Q4) the early start placed two on some SMs: Q4, batch 1, L = 32768:
// 35.9 → 52.9 µs.
template <int KF, int VF, int D, int NT>
constexpr bool frag_dependent_launch() {
    return frag_smem_bytes<KF, VF, D, NT>() > 114 * 1024;
}

// The fragment kernel at 8·NT query rows a block.
template <typename T, int KF, int VF, int D, int NT = 1>
int launch_frag_d(const QArgs &qa, cudaStream_t stream) {
    return launch_q_tc(qdecode_frag_kernel<T, KF, VF, D, NT>, frag_smem_bytes<KF, VF, D, NT>(),
                       kvfrag::kRows * NT, kFragWarps, frag_dependent_launch<KF, VF, D, NT>(), qa,
                       stream);
}

// Which decode kernel a call takes. Head dims 64 and 128 run on tensor cores through the
// fragment kernel, every cache mode and any number of query rows (H100, same run: 1.1–2.6×
// the decoded-tile kernel and the CUDA-core one wherever measured over quantized codes; over
// the native cache, MHA too: attention.cuh). The rest run on CUDA cores. PARADEC_KV_DECODE=tile forces the decoded-tile kernel where there are at
// least two query rows per KV head, =simt the CUDA-core one (tests and comparisons).
enum class QKernel { Simt, Tile, Frag };

QKernel q_kernel(const AttnArgs &a) {
    const int64_t rows = static_cast<int64_t>(a.q_len) * (a.heads / a.kv_heads);
    if (!tc_head_dim(a.head_dim)) return QKernel::Simt;
    switch (decode_choice()) {
        case DecodeChoice::Simt: return QKernel::Simt;
        case DecodeChoice::Tile: return rows >= 2 ? QKernel::Tile : QKernel::Simt;
        default: return QKernel::Frag;
    }
}

template <typename T, int KF, int VF>
int launch_q_f(const QArgs &qa, const QPlan &p, cudaStream_t stream) {
    const QKernel kernel = q_kernel(qa.a);
    if (kernel == QKernel::Frag)
        return qa.a.head_dim == 64 ? launch_frag_d<T, KF, VF, 64>(qa, stream)
                                   : launch_frag_d<T, KF, VF, 128>(qa, stream);
    if (kernel == QKernel::Tile)
        return qa.a.head_dim == 64 ? launch_tc_d<T, KF, VF, 64>(qa, stream)
                                   : launch_tc_d<T, KF, VF, 128>(qa, stream);
    switch (p.lanes) {
        case 4: return launch_q_l<T, KF, VF, 4>(qa, p, stream);
        case 8: return launch_q_l<T, KF, VF, 8>(qa, p, stream);
        case 16: return launch_q_l<T, KF, VF, 16>(qa, p, stream);
        default: return launch_q_l<T, KF, VF, 32>(qa, p, stream);
    }
}

template <typename T>
int launch_q(int kf, int vf, const QArgs &qa, const QPlan &p, cudaStream_t stream) {
    if (kf == PARADEC_KV_E4M3 && vf == PARADEC_KV_E4M3)
        return launch_q_f<T, PARADEC_KV_E4M3, PARADEC_KV_E4M3>(qa, p, stream);
    if (kf == PARADEC_KV_Q8 && vf == PARADEC_KV_Q8)
        return launch_q_f<T, PARADEC_KV_Q8, PARADEC_KV_Q8>(qa, p, stream);
    if (kf == PARADEC_KV_Q8 && vf == PARADEC_KV_Q4)
        return launch_q_f<T, PARADEC_KV_Q8, PARADEC_KV_Q4>(qa, p, stream);
    if (kf == PARADEC_KV_Q4 && vf == PARADEC_KV_Q4)
        return launch_q_f<T, PARADEC_KV_Q4, PARADEC_KV_Q4>(qa, p, stream);
    if (kf == PARADEC_KV_NATIVE && vf == PARADEC_KV_NATIVE)
        return launch_q_f<T, PARADEC_KV_NATIVE, PARADEC_KV_NATIVE>(qa, p, stream);
    if constexpr (std::is_same<T, __half>::value) {
        if (kf == PARADEC_KV_E5M2 && vf == PARADEC_KV_E5M2)
            return launch_q_f<T, PARADEC_KV_E5M2, PARADEC_KV_E5M2>(qa, p, stream);
    }
    return PARADEC_K_BAD_ENUM;  // a pairing no cache mode uses
}

size_t q_scratch_bytes(size_t batch, size_t q_len, size_t heads, size_t kv_heads,
                       size_t head_dim, size_t max_past) {
    if (q_len == 0 || q_len > static_cast<size_t>(kQMaxQ) || kv_heads == 0 ||
        heads % kv_heads != 0 || batch == 0 || head_dim == 0)
        return 0;
    // Either kernel family's plan may run (the cache format picks): room for the larger.
    const auto splits_of = [&](bool frag) {
        return plan_qdecode(static_cast<int64_t>(batch), static_cast<int64_t>(q_len),
                            static_cast<int64_t>(heads), static_cast<int64_t>(kv_heads),
                            static_cast<int64_t>(head_dim), static_cast<int64_t>(max_past), frag)
            .splits;
    };
    const int splits = std::max(splits_of(false), splits_of(true));
    if (splits == 1) return 0;
    const size_t rows = batch * q_len * heads;
    return sizeof(float) * static_cast<size_t>(splits) * rows * (head_dim + 2);
}

// ---- dequantizing gather -------------------------------------------------------------------------

template <typename T, int F>
__global__ void __launch_bounds__(256)
    dequant_kernel(KvView p, SlotMap sm, int64_t batch, int64_t slots, const int64_t *seq_len,
                   int kv_dim, int hd, T *out) {
    constexpr int U = kv_has_runs(F) ? kRun : 8;  // values per thread
    const int per_row = kv_dim / U;
    const int64_t total = batch * slots * per_row;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int u = static_cast<int>(i % per_row);
        const int64_t bj = i / per_row;
        const int64_t b = bj / slots, j = bj % slots;
        T *dst = out + bj * kv_dim + static_cast<int64_t>(u) * U;
        if (seq_len && j >= seq_len[b]) {
            // Past the sequence's length (no page of it there): zeros, nothing read.
#pragma unroll
            for (int e = 0; e < U; ++e) dst[e] = Num<T>::from_f(0.f);
            continue;
        }
        const int64_t slot = sm(b, j);
        const uint8_t *row = p.codes + slot * p.row_bytes;
        if constexpr (F == PARADEC_KV_NATIVE) {
            st(dst, ld_ro(row + static_cast<int64_t>(u) * U * sizeof(T)));
        } else if constexpr (kv_has_runs(F)) {
            float y[kRun];
#pragma unroll
            for (int c = 0; c < kRun / 8; ++c) {
                float f[8];
                decode8<F>(row + lane_off<F, T>(static_cast<int64_t>(u) * kRun + 8 * c), f);
#pragma unroll
                for (int e = 0; e < 8; ++e) y[8 * c + e] = f[e];
            }
            const float step =
                __half2float(p.scales[slot * p.runs + u]) / static_cast<float>(1 << (kv_bits(F) - 1));
#pragma unroll
            for (int e = 0; e < kRun; ++e) y[e] *= step;
            fwht32(y);
#pragma unroll
            for (int e = 0; e < kRun; ++e) dst[e] = Num<T>::from_f(y[e] * (1.f / kRun));
        } else {
            float f[8];
            decode8<F>(row + static_cast<int64_t>(u) * 8, f);
            const float s = F == PARADEC_KV_E4M3 ? p.head_scale[(u * 8) / hd] : 1.f;
#pragma unroll
            for (int e = 0; e < 8; ++e) dst[e] = Num<T>::from_f(f[e] * s);
        }
    }
}

// Checks one paradec_kv_pages argument; returns 0 or a status.
int check_pages(const paradec_kv_pages &p, int dtype, size_t head_dim) {
    if (p.format < PARADEC_KV_NATIVE || p.format > PARADEC_KV_Q4) return PARADEC_K_BAD_ENUM;
    if (!p.codes) return PARADEC_K_NULL_POINTER;
    if (p.format == PARADEC_KV_E5M2 && dtype != PARADEC_F16) return PARADEC_K_BAD_DTYPE;
    if (kv_has_runs(p.format) && !p.scales) return PARADEC_K_NULL_POINTER;
    if (p.format == PARADEC_KV_E4M3 && !p.head_scale) return PARADEC_K_NULL_POINTER;
    if (!aligned16(p.codes)) return PARADEC_K_BAD_SHAPE;
    if (kv_has_runs(p.format) && head_dim % kRun != 0) return PARADEC_K_BAD_SHAPE;
    return PARADEC_K_OK;
}

KvView view(const paradec_kv_pages &p, int64_t kv_dim) {
    return KvView{static_cast<const uint8_t *>(p.codes), static_cast<const __half *>(p.scales),
                  p.head_scale, kv_row_bytes(p.format, kv_dim), kv_dim / kRun};
}

// The slot map of a call, or a status when the block table is inconsistent with `capacity`.
int slot_map(const paradec_kv_block_table &bt, size_t capacity, SlotMap *out) {
    if (bt.table && (bt.page_size == 0 || bt.max_pages == 0 || bt.max_pages > (size_t{1} << 30) ||
                     bt.page_size > (size_t{1} << 30) || capacity != bt.max_pages * bt.page_size))
        return PARADEC_K_BAD_SHAPE;
    *out = SlotMap{bt.table, static_cast<int64_t>(bt.max_pages), static_cast<int64_t>(bt.page_size),
                   static_cast<int64_t>(capacity)};
    return PARADEC_K_OK;
}

}  // namespace

int launch_native_frag(int dtype, const AttnArgs &a, int rows, cudaStream_t stream) {
    if (!tc_head_dim(a.head_dim) || (rows != kFragRows && rows != 2 * kFragRows))
        return PARADEC_K_BAD_SHAPE;
    const int64_t kv_dim = static_cast<int64_t>(a.kv_heads) * a.head_dim;
    QArgs qa{};
    qa.a = a;
    const int64_t row = kv_row_bytes(PARADEC_KV_NATIVE, kv_dim);
    qa.k = KvView{static_cast<const uint8_t *>(a.k), nullptr, nullptr, row, 0};
    qa.v = KvView{static_cast<const uint8_t *>(a.v), nullptr, nullptr, row, 0};
    qa.sm = SlotMap{nullptr, 0, 0, a.capacity};  // slot = b·capacity + j
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        constexpr int N = PARADEC_KV_NATIVE;
        static_assert(kFragRows == kvfrag::kRows, "attention.cu plans the fragment kernel's rows");
        if (rows == 2 * kFragRows)
            return a.head_dim == 64 ? launch_frag_d<T, N, N, 64, 2>(qa, stream)
                                    : launch_frag_d<T, N, N, 128, 2>(qa, stream);
        return a.head_dim == 64 ? launch_frag_d<T, N, N, 64>(qa, stream)
                                : launch_frag_d<T, N, N, 128>(qa, stream);
    });
}

}  // namespace paradec

extern "C" size_t paradec_attention_quant_scratch_bytes(size_t batch, size_t q_len, size_t heads,
                                                        size_t kv_heads, size_t head_dim,
                                                        size_t max_past) {
    try {
        return paradec::q_scratch_bytes(batch, q_len, heads, kv_heads, head_dim, max_past);
    } catch (...) {
        return 0;
    }
}

extern "C" int paradec_attention_quant(int dtype, const void *q,
                                       paradec_kv_block_table block_table,
                                       paradec_kv_pages k_pages, paradec_kv_pages v_pages,
                                       void *out, size_t batch, size_t q_len, size_t heads, size_t kv_heads,
                                       size_t head_dim, size_t capacity, const int64_t *past_len,
                                       size_t max_past, size_t window, const float *mask,
                                       size_t mask_stride, float scale, void *scratch,
                                       size_t scratch_bytes, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!q || !out || !past_len) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (batch == 0 || q_len == 0 || heads == 0 || kv_heads == 0 || head_dim == 0 ||
            capacity == 0)
            return PARADEC_K_ZERO_DIM;
        for (const paradec_kv_pages *p : {&k_pages, &v_pages}) {
            const int st = paradec::check_pages(*p, dtype, head_dim);
            if (st != PARADEC_K_OK) return st;
        }
        if (head_dim > PARADEC_ATTN_MAX_HEAD_DIM || heads > 65535 || batch > 65535 ||
            batch * kv_heads > 65535 || q_len > static_cast<size_t>(paradec::kQMaxQ) ||
            capacity > (size_t{1} << 40))
            return PARADEC_K_DIM_TOO_LARGE;
        if (head_dim % paradec::kVec != 0 || heads % kv_heads != 0 ||
            max_past + q_len > capacity || (mask && mask_stride < max_past + q_len))
            return PARADEC_K_BAD_SHAPE;
        if (!paradec::aligned16(q) || !paradec::aligned16(out)) return PARADEC_K_BAD_SHAPE;
        const int64_t kv_dim = static_cast<int64_t>(kv_heads * head_dim);
        paradec::QArgs qa{};
        paradec::AttnArgs &a = qa.a;
        a.q = q;
        a.out = out;
        a.batch = static_cast<int>(batch);
        a.q_len = static_cast<int>(q_len);
        a.heads = static_cast<int>(heads);
        a.kv_heads = static_cast<int>(kv_heads);
        a.head_dim = static_cast<int>(head_dim);
        a.capacity = static_cast<int64_t>(capacity);
        a.past_len = past_len;
        a.max_past = static_cast<int64_t>(max_past);
        a.window = static_cast<int64_t>(window);
        a.mask = mask;
        a.mask_stride = static_cast<int64_t>(mask_stride);
        a.scale = scale;
        qa.k = paradec::view(k_pages, kv_dim);
        qa.v = paradec::view(v_pages, kv_dim);
        const int sst = paradec::slot_map(block_table, capacity, &qa.sm);
        if (sst != PARADEC_K_OK) return sst;
        const bool frag = paradec::q_kernel(a) == paradec::QKernel::Frag;
        const paradec::QPlan p = paradec::plan_qdecode(a.batch, a.q_len, a.heads, a.kv_heads,
                                                       a.head_dim, a.max_past, frag);
        a.splits = p.splits;
        std::memcpy(a.splits_by_cap, p.splits_by_cap, sizeof a.splits_by_cap);
        if (p.splits > 1) {
            const size_t need =
                paradec::q_scratch_bytes(batch, q_len, heads, kv_heads, head_dim, max_past);
            if (!scratch) return PARADEC_K_NULL_POINTER;
            if (scratch_bytes < need || !paradec::aligned16(scratch)) return PARADEC_K_BAD_SHAPE;
            const size_t rows = batch * q_len * heads;
            a.part_o = static_cast<float *>(scratch);
            a.part_ml = a.part_o + static_cast<size_t>(p.splits) * rows * head_dim;
        }
        const int st = paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_q<decltype(tag)>(k_pages.format, v_pages.format, qa, p, stream);
        });
        if (st != PARADEC_K_OK || p.splits == 1) return st;
        return paradec::launch_combine(dtype, a, stream);
    });
}

extern "C" int paradec_kv_dequantize(int dtype, paradec_kv_block_table block_table,
                                     paradec_kv_pages pages, size_t batch, size_t capacity,
                                     size_t kv_heads, size_t head_dim, size_t slots,
                                     const int64_t *seq_len, void *out,
                                     paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!out) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        const int st = paradec::check_pages(pages, dtype, head_dim);
        if (st != PARADEC_K_OK) return st;
        if (batch == 0 || capacity == 0 || kv_heads == 0 || head_dim == 0)
            return PARADEC_K_ZERO_DIM;
        if (slots == 0) return PARADEC_K_OK;
        if (head_dim % paradec::kVec != 0 || slots > capacity) return PARADEC_K_BAD_SHAPE;
        if (kv_heads * head_dim > static_cast<size_t>(INT_MAX) || capacity > (size_t{1} << 40) ||
            batch > (size_t{1} << 20))
            return PARADEC_K_DIM_TOO_LARGE;
        if (!paradec::aligned16(out)) return PARADEC_K_BAD_SHAPE;
        const int kv_dim = static_cast<int>(kv_heads * head_dim);
        if (block_table.table && !seq_len) return PARADEC_K_NULL_POINTER;
        const paradec::KvView v = paradec::view(pages, kv_dim);
        paradec::SlotMap sm{};
        const int sst = paradec::slot_map(block_table, capacity, &sm);
        if (sst != PARADEC_K_OK) return sst;
        const int64_t units = static_cast<int64_t>(batch * slots) *
                              (kv_dim / (paradec::kv_has_runs(pages.format) ? paradec::kRun : 8));
        const unsigned blocks =
            static_cast<unsigned>(std::min<int64_t>((units + 255) / 256, int64_t{1} << 16));
        return paradec::dispatch_dtype(dtype, [&](auto tag) -> int {
            using T = decltype(tag);
            T *o = static_cast<T *>(out);
            const int64_t b = static_cast<int64_t>(batch), s = static_cast<int64_t>(slots);
            const int hd = static_cast<int>(head_dim);
            switch (pages.format) {
                case PARADEC_KV_NATIVE:
                    paradec::dequant_kernel<T, PARADEC_KV_NATIVE><<<blocks, 256, 0, stream>>>(
                        v, sm, b, s, seq_len, kv_dim, hd, o);
                    break;
                case PARADEC_KV_E4M3:
                    paradec::dequant_kernel<T, PARADEC_KV_E4M3><<<blocks, 256, 0, stream>>>(
                        v, sm, b, s, seq_len, kv_dim, hd, o);
                    break;
                case PARADEC_KV_E5M2:
                    paradec::dequant_kernel<T, PARADEC_KV_E5M2><<<blocks, 256, 0, stream>>>(
                        v, sm, b, s, seq_len, kv_dim, hd, o);
                    break;
                case PARADEC_KV_Q8:
                    paradec::dequant_kernel<T, PARADEC_KV_Q8><<<blocks, 256, 0, stream>>>(
                        v, sm, b, s, seq_len, kv_dim, hd, o);
                    break;
                default:
                    paradec::dequant_kernel<T, PARADEC_KV_Q4><<<blocks, 256, 0, stream>>>(
                        v, sm, b, s, seq_len, kv_dim, hd, o);
                    break;
            }
            return paradec::launch_status();
        });
    });
}
