// The linears' tensor-core GEMM for larger m: out[m, n] (+)= A[m, kdim]·Bᵀ + bias, with B dense
// or in paradec's quantized layout (linear_gemm.cuh).
//
// Block tile 128 (m) × 128 (n), K in steps of 64 rows (two tiles of the quantized layout, each
// of one width and one group); 8 warps of 64 × 32 outputs each; mma.sync m16n8k16 with f32
// accumulators. A 3-stage cp.async pipeline keeps two K-steps of A and B in flight while the
// third is computed; one barrier per 64 rows of K. A (and dense B) land in shared memory as
// rows padded by 16 bytes (the 8 row addresses of an ldmatrix then fall in distinct banks) and
// reach the mma through ldmatrix.
// Quantized B lands packed — a K-step is its two tiles' word rows for the block's 128 columns
// and their (scale, −zero·scale) — and each warp decodes its own fragments from shared memory in
// registers: two codes (rows r, r+1) per read, dequantized in f32 as q·scale + (−zero·scale)
// and rounded once to the dtype. The whole matrix is never reconstructed.
#include <algorithm>

#include "linear_gemm.cuh"
#include "mma.cuh"
#include "tma.cuh"
#include "wgmma.cuh"
#include "wgmma_group_plan.h"

namespace paradec {
namespace {

constexpr int kGM = 128, kGN = 128, kGK = 64;  // a K step: two 32-row tiles of the layout
constexpr int kStages = 3;
constexpr int kGThreads = 256;
constexpr int kRowPad = kGK + 8;                     // elements per shared row of A / dense B
constexpr int kTileBytes = kGM * kRowPad * 2;        // 18432: A (or dense B) of one stage
constexpr int kWordsBytes = 8 * kGN * 4;             // one quantized tile: up to 8 word rows,
constexpr int kSubBytes = kWordsBytes + kGN * 8;     // then its 128 (scale, −zero·scale)
constexpr int kStageBytes = 2 * kTileBytes;          // A, then B (dense, or two tiles)
constexpr size_t kGemmSmem = size_t{kStages} * kStageBytes;

static_assert(2 * kSubBytes <= kTileBytes, "two quantized tiles fit a stage's B slot");

// Issues the copies of K-step kt's quantized B for the block's kGN columns from n0 into `sb`:
// its two tiles, each as kSubBytes (the tile's word rows, then the columns' (scale,
// −zero·scale)). Called by all kGThreads threads.
__device__ __forceinline__ void load_quant_b(const GemmArgs &a, int64_t kt, unsigned char *sb,
                                             int64_t n0) {
    const int tid = threadIdx.x;
    const int64_t ntiles = a.kdim / 32;
#pragma unroll
    for (int tt = 0; tt < 2; ++tt) {
        const int64_t t = kt * 2 + tt;
        if (t >= ntiles) break;  // an odd tile count: the compute skips it too
        const uint2 meta = __ldg(a.tiles + t);
        const int bits = static_cast<int>(meta.y >> 24);
        const int64_t g = static_cast<int64_t>(meta.y & 0xFFFFFFu);
        unsigned char *sub = sb + tt * kSubBytes;
        uint32_t *sw = reinterpret_cast<uint32_t *>(sub);
        // bits word rows × 32 chunks of 4 columns (np is a multiple of 8: a chunk is all in
        // or all out).
        if (tid < bits * 32) {
            const int i = tid >> 5, ch = tid & 31;
            const int64_t c = n0 + ch * 4;
            const bool ok = c < a.np;
            cp_async16_zfill(sw + i * kGN + ch * 4,
                             ok ? a.words + (static_cast<int64_t>(meta.x) + i) * a.np + c : a.words,
                             ok);
        }
        if (tid >= kGThreads - 64) {
            const int ch = tid - (kGThreads - 64);  // 64 chunks of 2 (scale, −zero·scale)
            const int64_t c = n0 + ch * 2;
            const bool ok = c < a.np;
            float2 *ssz = reinterpret_cast<float2 *>(sub + kWordsBytes);
            cp_async16_zfill(ssz + ch * 2, ok ? a.sz + g * a.np + c : a.sz, ok);
        }
    }
}

// Issues the copies of K-step kt into stage memory `st`.
template <typename T, bool QUANT>
__device__ __forceinline__ void load_stage(const GemmArgs &a, int64_t kt, unsigned char *st,
                                           int64_t m0, int64_t n0) {
    const int tid = threadIdx.x;
    const int64_t k0 = kt * kGK;
    T *sA = reinterpret_cast<T *>(st);
    const T *A = static_cast<const T *>(a.a);
    constexpr int kChunks = kGK / kVec;  // 16-byte chunks of a row
#pragma unroll
    for (int i = 0; i < kGM * kChunks / kGThreads; ++i) {
        const int idx = tid + i * kGThreads;
        const int r = idx / kChunks, ch = idx % kChunks;
        const int64_t gr = m0 + r, gk = k0 + ch * kVec;
        const bool ok = gr < a.m && gk < a.kdim;
        cp_async16_zfill(sA + r * kRowPad + ch * kVec, ok ? A + gr * a.lda + gk : A, ok);
    }
    unsigned char *sb = st + kTileBytes;
    if constexpr (!QUANT) {
        T *sB = reinterpret_cast<T *>(sb);
        const T *W = static_cast<const T *>(a.w);
#pragma unroll
        for (int i = 0; i < kGN * kChunks / kGThreads; ++i) {
            const int idx = tid + i * kGThreads;
            const int r = idx / kChunks, ch = idx % kChunks;
            const int64_t gn = n0 + r, gk = k0 + ch * kVec;
            const bool ok = gn < a.n && gk < a.kdim;
            cp_async16_zfill(sB + r * kRowPad + ch * kVec, ok ? W + gn * a.kdim + gk : W, ok);
        }
    } else {
        load_quant_b(a, kt, sb, n0);
    }
}

// Rows r and r + 1 (r even) of column `col` of a B-bit tile in shared memory: their codes in
// the low 2·B bits, row r first.
template <int B>
__device__ __forceinline__ uint32_t code_pair(const uint32_t *sw, int col, int r) {
    const int bit = r * B;
    const int wi = bit >> 5, sh = bit & 31;
    const uint32_t lo = sw[wi * kGN + col];
    if (sh + 2 * B <= 32) return lo >> sh;
    return __funnelshift_r(lo, sw[(wi + 1) * kGN + col], sh);
}

// The dtype pair (w_r, w_{r+1}) of column `col`, dequantized in f32 and rounded once.
template <typename T, int B>
__device__ __forceinline__ uint32_t dequant_pair(const uint32_t *sw, float2 s, int col, int r) {
    const uint32_t v = code_pair<B>(sw, col, r);
    constexpr uint32_t mask = (1u << B) - 1u;
    const float q0 = code_float(v & mask);
    const float q1 = code_float((v >> B) & mask);
    const typename Num<T>::T2 h = Num<T>::from_f2(make_float2(fmaf(q0, s.x, s.y), fmaf(q1, s.x, s.y)));
    return *reinterpret_cast<const uint32_t *>(&h);
}

// The B fragments of one n8 tile at column `col` for both k16 halves of a quantized step.
template <typename T, int B>
__device__ __forceinline__ void quant_frags(const unsigned char *sb, int col, int t,
                                            uint32_t (&b)[2][2]) {
    const uint32_t *sw = reinterpret_cast<const uint32_t *>(sb);
    const float2 s = reinterpret_cast<const float2 *>(sb + kWordsBytes)[col];
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
        b[ks][0] = dequant_pair<T, B>(sw, s, col, ks * 16 + 2 * t);
        b[ks][1] = dequant_pair<T, B>(sw, s, col, ks * 16 + 2 * t + 8);
    }
}

// The B fragments of the warp's four n8 tiles (columns wn·32 + j·8 + g) from one quantized tile.
template <typename T, int B>
__device__ __forceinline__ void warp_frags(const unsigned char *sb, int wn, int g, int t,
                                           uint32_t (&b)[4][2][2]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) quant_frags<T, B>(sb, wn * 32 + j * 8 + g, t, b[j]);
}

// As warp_frags for a tile whose width is known only at run time: one switch per tile, out of
// line (inlined, the six widths push the kernel past its registers).
template <typename T>
__device__ __noinline__ void warp_frags_mixed(const unsigned char *sb, int bits, int wn, int g,
                                              int t, uint32_t (&b)[4][2][2]) {
    switch (bits) {
        case 2: warp_frags<T, 2>(sb, wn, g, t, b); break;
        case 3: warp_frags<T, 3>(sb, wn, g, t, b); break;
        case 4: warp_frags<T, 4>(sb, wn, g, t, b); break;
        case 5: warp_frags<T, 5>(sb, wn, g, t, b); break;
        case 6: warp_frags<T, 6>(sb, wn, g, t, b); break;
        default: warp_frags<T, 8>(sb, wn, g, t, b); break;
    }
}

// BITS: −1 dense B; 2…8 a uniform quantized width; 0 widths that vary by tile.
template <typename T, int BITS>
__global__ void __launch_bounds__(kGThreads, 2) gemm_kernel(GemmArgs a) {
    constexpr bool QUANT = BITS >= 0;
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp >> 2, wn = warp & 3;  // 2 × 4 warps of 64 × 32
    const int g = lane >> 2, t4 = lane & 3;
    const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kGM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kGN;
    const int64_t ksteps = (a.kdim + kGK - 1) / kGK;

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < ksteps) load_stage<T, QUANT>(a, s, smem + s * kStageBytes, m0, n0);
        cp_async_commit_group();
    }
    for (int64_t kt = 0; kt < ksteps; ++kt) {
        cp_async_wait_groups<kStages - 2>();
        // Step kt has landed for every thread, and every warp is done with step kt − 1, whose
        // stage the next load reuses.
        __syncthreads();
        const int64_t next = kt + kStages - 1;
        if (next < ksteps) load_stage<T, QUANT>(a, next, smem + (next % kStages) * kStageBytes, m0, n0);
        cp_async_commit_group();

        const unsigned char *st = smem + (kt % kStages) * kStageBytes;
        const T *sA = reinterpret_cast<const T *>(st);
        const unsigned char *sb = st + kTileBytes;
        // The mma of k16 chunk kc (0..3) of the step with the B fragments bf[n8 tile][2].
        auto mma_chunk = [&](int kc, const uint32_t (&bf)[4][2]) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                uint32_t af[4];
                const int row = wm * 64 + i * 16 + (lane & 15);
                ldsm_x4(af, sA + row * kRowPad + kc * 16 + ((lane >> 4) << 3));
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_16816<T>(acc[i][j], af, bf[j][0], bf[j][1]);
            }
        };
        if constexpr (QUANT) {
#pragma unroll
            for (int tt = 0; tt < 2; ++tt) {
                const int64_t t = kt * 2 + tt;
                if (t >= a.kdim / 32) break;
                int bits = BITS;
                if (BITS == 0) bits = static_cast<int>(__ldg(a.tiles + t).y >> 24);
                const unsigned char *sub = sb + tt * kSubBytes;
                uint32_t bq[4][2][2];  // [n8 tile][k16 half][reg]
                if constexpr (BITS > 0) {
                    warp_frags<T, (BITS > 0 ? BITS : 4)>(sub, wn, g, t4, bq);
                } else {
                    warp_frags_mixed<T>(sub, bits, wn, g, t4, bq);
                }
#pragma unroll
                for (int ks = 0; ks < 2; ++ks) {
                    uint32_t bf[4][2];
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        bf[j][0] = bq[j][ks][0];
                        bf[j][1] = bq[j][ks][1];
                    }
                    mma_chunk(tt * 2 + ks, bf);
                }
            }
        } else {
            const T *sB = reinterpret_cast<const T *>(sb);
#pragma unroll
            for (int kc = 0; kc < kGK / 16; ++kc) {
                uint32_t bf[4][2];
#pragma unroll
                for (int jj = 0; jj < 2; ++jj) {
                    // n8 tiles 2jj and 2jj + 1, k 0–7 and 8–15 of chunk kc.
                    const int row = wn * 32 + jj * 16 + ((lane >> 4) << 3) + (lane & 7);
                    const int col = kc * 16 + (((lane >> 3) & 1) << 3);
                    uint32_t r[4];
                    ldsm_x4(r, sB + row * kRowPad + col);
                    bf[2 * jj][0] = r[0];
                    bf[2 * jj][1] = r[1];
                    bf[2 * jj + 1][0] = r[2];
                    bf[2 * jj + 1][1] = r[3];
                }
                mma_chunk(kc, bf);
            }
        }
    }
    cp_async_wait_groups<0>();

    T *out = static_cast<T *>(a.out);
    const T *bias = static_cast<const T *>(a.bias);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int64_t row = m0 + wm * 64 + i * 16 + g + h * 8;
                const int64_t col = n0 + wn * 32 + j * 8 + 2 * t4;
                if (row >= a.m) continue;
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    if (col + e >= a.n) continue;
                    float v = acc[i][j][2 * h + e];
                    if (bias) v += Num<T>::to_f(bias[col + e]);
                    T *p = out + row * a.n + col + e;
                    if (a.accumulate) v += Num<T>::to_f(*p);
                    *p = Num<T>::from_f(v);
                }
            }
}

// ---- The wgmma GEMM (sm_90a) of quantized weights ----
//
// outᵀ = W·xᵀ on Hopper's warpgroup MMA: the weights are the 64-row A operand, decoded from
// shared memory into registers (f16 4-bit: quick4_pair; else dequant_pair, as above: f32, one
// rounding), and x is the B operand, TOK rows of it per block read by the wgmma from shared
// memory (the 128-byte swizzle of wgmma.cuh). Two warpgroups of 64 output columns each (16 per
// warp) share one x tile; every weight fragment is decoded once per block. K steps of 64 rows
// (two layout tiles) flow through a cp.async ring of WgmmaTile::kStages; each step's four
// wgmmas run while the next step is decoded (one group in flight), and a stage is refilled only
// after the wait that covers its last wgmma. The f32 results go through shared memory so that
// each row of out is written with whole, coalesced vectors, the bias and the existing out
// (accumulate) added in f32.

constexpr int kWThreads = kGThreads;  // two warpgroups, as the quantized tiles' copies assume
constexpr int kEStride = 132;          // f32 per staged output row (128 + 4: no bank conflicts)

template <int TOK>
struct WgmmaTile {
    static constexpr int kXBytes = TOK * 128;  // TOK rows × 64 k of x
    static constexpr int kStageBytes = kXBytes + 2 * kSubBytes;
    static constexpr int kStages = TOK == 256 ? 5 : 4;
    static constexpr int kAhead = kStages - 2;  // K steps loaded ahead of the one computed
    // 32 rows: 80 registers (ptxas, sm_90a, 4-bit) and 49 KiB, so three blocks share an SM.
    static constexpr int kBlocksPerSm = TOK == 256 ? 1 : TOK == 32 ? 3 : 2;
    static constexpr size_t kSmem = size_t{kStages} * kStageBytes + 1024;  // + alignment slack
    static_assert(kStageBytes % 1024 == 0, "stages keep x tiles on 1024-byte boundaries");
    static_assert(kAhead >= 1 && kAhead <= kStages - 2,
                  "a refill never lands in the stage of the group in flight");
    static_assert(size_t{TOK} * kEStride * 4 <= size_t{kStages} * kStageBytes,
                  "the output staging fits the ring");
};

// The copies one thread issues for each K step of the wgmma GEMM, as a cursor that steps
// through K: every address is worked out once and then advanced by a constant per step (a
// copy whose source lies outside the matrix — x rows past m, columns past np — is zero-filled
// and reads nothing). x rows land in the 128-byte swizzle; the B-bit tiles' word rows
// (uniform width: tile t is word rows t·B … t·B + B − 1) and their groups' (scale,
// −zero·scale) as load_quant_b lays them out. A step's group indices are read before its wait
// and barrier, so that their latency hides behind them.
template <typename T, int B, int TOK>
struct WgmmaLoads {
    static constexpr int kXChunks = TOK * 8 / kWThreads;  // 16-byte x chunks per thread
    const T *x;            // this thread's first x chunk at the next step
    int64_t x_rows32;      // 32 rows of x
    unsigned x_ok = 0;     // bit i: chunk i's row is below m
    int x_dst;             // chunk 0's offset in a stage (chunk i: + i·4096)
    const uint32_t *w;     // this thread's word chunk of the next step's first tile
    int64_t w_tile;        // words per tile (B·np)
    bool w_on, w_ok;       // copies words (tid < B·32); its 4 columns are below np
    const float2 *sz;      // this thread's (scale, −zero·scale) pair of columns in group 0
    int np;
    bool sz_on, sz_ok;     // copies scales (the last 64 threads); its columns are below np
    const uint2 *tiles;
    int groups[2] = {0, 0};  // the groups of the step to load next

    // From K step k0 on (a split's first).
    __device__ __forceinline__ WgmmaLoads(const GemmArgs &a, int64_t m0, int64_t n0,
                                          int64_t k0 = 0) {
        const int tid = static_cast<int>(threadIdx.x);
        const int r0 = tid >> 3, c = tid & 7;
        x = static_cast<const T *>(a.a) + (m0 + r0) * a.lda + c * kVec + k0 * kGK;
        x_rows32 = 32 * a.lda;
#pragma unroll
        for (int i = 0; i < kXChunks; ++i) x_ok |= (m0 + r0 + 32 * i < a.m ? 1u : 0u) << i;
        x_dst = sw128_offset(r0, c);
        np = static_cast<int>(a.np);
        w_on = tid < B * 32;
        const int64_t wcol = n0 + (tid & 31) * 4;  // 4 columns: all in or all out (np % 8 == 0)
        w_ok = wcol < a.np;
        w_tile = static_cast<int64_t>(B) * a.np;
        w = a.words + static_cast<int64_t>(tid >> 5) * a.np + wcol + k0 * 2 * w_tile;
        sz_on = tid >= kWThreads - 64;
        const int64_t scol = n0 + (tid - (kWThreads - 64)) * 2;
        sz_ok = sz_on && scol < a.np;
        sz = a.sz + scol;
        tiles = a.tiles + 2 * k0;
    }

    // Reads the groups of K step kt's two tiles (the threads that copy scales; kt counted from
    // the construction's k0).
    __device__ __forceinline__ void read_groups(int64_t kt) {
        if (!sz_ok) return;
#pragma unroll
        for (int tt = 0; tt < 2; ++tt)
            groups[tt] = static_cast<int>(__ldg(tiles + kt * 2 + tt).y & 0xFFFFFFu);
    }

    // Issues the next K step's copies into stage `st` (after read_groups of that step), then
    // steps to the one after.
    __device__ __forceinline__ void issue(unsigned char *st) {
#pragma unroll
        for (int i = 0; i < kXChunks; ++i)
            cp_async16_zfill(st + x_dst + i * 4096, x + i * x_rows32, (x_ok >> i) & 1u);
        x += kGK;
        unsigned char *sq = st + WgmmaTile<TOK>::kXBytes;
        const int tid = static_cast<int>(threadIdx.x);
        if (w_on) {
            uint32_t *dst = reinterpret_cast<uint32_t *>(sq) + (tid >> 5) * kGN + (tid & 31) * 4;
            cp_async16_zfill(dst, w, w_ok);
            cp_async16_zfill(dst + kSubBytes / 4, w + w_tile, w_ok);
            w += 2 * w_tile;
        }
        if (sz_on) {
            unsigned char *dst =
                sq + kWordsBytes + (tid - (kWThreads - 64)) * 2 * sizeof(float2);
#pragma unroll
            for (int tt = 0; tt < 2; ++tt)
                cp_async16_zfill(dst + tt * kSubBytes,
                                 sz + static_cast<int64_t>(groups[tt]) * np, sz_ok);
        }
    }
};

// f16 activations and 4-bit codes: a code pair decoded in four instructions — the pair's byte
// into both halves (one byte_perm); the low nibble under the exponent of 1024 in the low half
// and the high nibble, as it stands (× 16), under the exponent of 64 in the high half, whose
// unit in the last place is 1/16 (one lop3: the exact f16 integers 1024 + q₀ and 64 + q₁);
// minus (1024 + zero, 64 + zero) (exact); times the scale rounded to f16 — the same value as the
// f32 path wherever the scale is an f16 (GPTQ's are), else within its rounding. The zero comes
// back from (scale, −zero·scale) once per column and tile.
struct Quick4 {
    __half2 z2, s2;  // (1024 + zero, 64 + zero) and the scale in both halves
};

[[maybe_unused]] __device__ __forceinline__ Quick4 quick4_consts(float2 sz) {
    // A small integer: the approximate reciprocal's error (2⁻²² relative) cannot move it to
    // another one. Flushing denormals is safe: every f16 scale is a normal f32.
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(sz.x));
    const float z = sz.x != 0.f ? rintf(-sz.y * r) : 0.f;
    return Quick4{__floats2half2_rn(1024.f + z, 64.f + z), __float2half2_rn(sz.x)};
}

// Codes of rows 2·t4, 2·t4 + 1 of word w (byte t4), dequantized: `sel` = t4 | t4 << 8.
[[maybe_unused]] __device__ __forceinline__ uint32_t quick4_pair(uint32_t w, uint32_t sel,
                                                                const Quick4 &c) {
    const uint32_t t = __byte_perm(w, 0u, sel);
    const uint32_t v = lop3_and_or(t, 0x00F0000Fu, 0x54006400u);
    __half2 h = __hsub2(*reinterpret_cast<const __half2 *>(&v), c.z2);
    h = __hmul2(h, c.s2);
    return *reinterpret_cast<const uint32_t *>(&h);
}

// The A fragment of the warp's 16 columns (col, col + 8 of the block) for k16 slice `ks` of a
// quantized tile in shared memory (wgmma.cuh's A layout: rows = columns of W).
template <typename T, int B>
__device__ __forceinline__ void a_frag(const unsigned char *sub, int col, float2 s0, float2 s1,
                                       int ks, int t4, uint32_t (&f)[4]) {
    const uint32_t *sw = reinterpret_cast<const uint32_t *>(sub);
    const int r = ks * 16 + 2 * t4;
    f[0] = dequant_pair<T, B>(sw, s0, col, r);
    f[1] = dequant_pair<T, B>(sw, s1, col + 8, r);
    f[2] = dequant_pair<T, B>(sw, s0, col, r + 8);
    f[3] = dequant_pair<T, B>(sw, s1, col + 8, r + 8);
}

// Decodes K step `st`'s four A fragments (k16 slices 0–3) into f.
template <typename T, int B, int TOK>
__device__ __forceinline__ void decode_step(const unsigned char *st, int col, int t4,
                                            uint32_t (&f)[4][4]) {
    const unsigned char *sq = st + WgmmaTile<TOK>::kXBytes;
    constexpr bool kQuick = B == 4 && std::is_same<T, __half>::value;
#pragma unroll
    for (int tt = 0; tt < 2; ++tt) {
        const unsigned char *sub = sq + tt * kSubBytes;
        const float2 *ssz = reinterpret_cast<const float2 *>(sub + kWordsBytes);
        const float2 s0 = ssz[col], s1 = ssz[col + 8];
        if constexpr (kQuick) {
            // Word i of a column holds rows 8i … 8i + 7; slice ks takes words 2ks and 2ks + 1.
            const uint32_t *sw = reinterpret_cast<const uint32_t *>(sub);
            const Quick4 c0 = quick4_consts(s0), c1 = quick4_consts(s1);
            const uint32_t sel = static_cast<uint32_t>(t4) | static_cast<uint32_t>(t4) << 8;
#pragma unroll
            for (int ks = 0; ks < 2; ++ks) {
                uint32_t(&g)[4] = f[tt * 2 + ks];
                g[0] = quick4_pair(sw[(2 * ks) * kGN + col], sel, c0);
                g[1] = quick4_pair(sw[(2 * ks) * kGN + col + 8], sel, c1);
                g[2] = quick4_pair(sw[(2 * ks + 1) * kGN + col], sel, c0);
                g[3] = quick4_pair(sw[(2 * ks + 1) * kGN + col + 8], sel, c1);
            }
        } else {
#pragma unroll
            for (int ks = 0; ks < 2; ++ks) a_frag<T, B>(sub, col, s0, s1, ks, t4, f[tt * 2 + ks]);
        }
    }
}

// Issues K step `st`'s four wgmmas as one group (ptxas keeps a group asynchronous only when no
// other instruction writes its inputs between its first wgmma and its commit).
template <typename T, int TOK>
__device__ __forceinline__ void issue_step(const unsigned char *st, float (&acc)[TOK / 2],
                                           const uint32_t (&f)[4][4]) {
    wgmma_fence();
#pragma unroll
    for (int i = 0; i < 4; ++i) wgmma_rs<T, TOK>(acc, f[i], sw128_desc(st, i * 32));
    wgmma_commit();
}

// Only tiles of up to 64 rows split K (wgmma_ksplit): measured on an H100, a split at 128 rows
// was slower or within 3% everywhere, and 256-row tiles fill the GPU with one block per SM (nor
// does the warp-specialized kernel split). The grouped and summed launches take 64-row tiles,
// or 32-row ones at m ≤ 32 (wgmma_small_tok).
constexpr int kSplitTok = 64;

// The calls of one grouped launch of the wgmma GEMM (gemm_wgmma_group_kernel).
struct WgmmaGroup {
    GemmArgs call[kWgmmaGroupMax];
    int first[kWgmmaGroupMax + 1];  // call c's first block; first[count]: the grid
    int count;
};

// The block's results, acc of every consumer thread, added to out (+ bias, + the existing out
// when accumulating) through shared memory at `smem` (free: every wgmma and copy is done), so
// that each row of out is written with whole vectors. Called by the kWThreads consumer threads.
template <typename T, int TOK>
__device__ __forceinline__ void store_out(const GemmArgs &a, unsigned char *smem,
                                          const float (&acc)[TOK / 2], int64_t m0, int64_t n0,
                                          int col, int t4, int64_t z, unsigned tile) {
    const int tid = static_cast<int>(threadIdx.x);
    // acc → shared [TOK rows of x][128 columns] in f32 (row = token, so out is written by rows).
    float *se = reinterpret_cast<float *>(smem);
#pragma unroll
    for (int j = 0; j < TOK / 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e)
                se[(8 * j + 2 * t4 + e) * kEStride + col + 8 * h] = acc[4 * j + 2 * h + e];
    named_barrier_sync(1, kWThreads);

    T *out = static_cast<T *>(a.out);
    const T *bias = static_cast<const T *>(a.bias);
    const bool vec = a.n % 4 == 0 && (reinterpret_cast<uintptr_t>(a.out) & 7u) == 0;
    const int c4 = (tid & 31) * 4;
    const int64_t col0 = n0 + c4;
    const int slots = a.zslots > 0 ? a.zslots : a.ksplit;
    if constexpr (TOK <= kSplitTok) if (slots > 1) {
        // A split of K, or a term of a sum (the plain and grouped kernels only, every thread of
        // the block here): its sums to its partial slot; the tile's last block to finish puts
        // the sum of every slot's, in slot order, where its own were staged, and writes out
        // below (each thread the rows and columns it staged, so no barrier between).
        const int64_t zs = a.zbase + z;
        for (int r = tid >> 5; r < TOK; r += kWThreads / 32) {
            const int64_t row = m0 + r;
            if (row >= a.m || col0 >= a.np) continue;
            *reinterpret_cast<float4 *>(a.part + (zs * a.m + row) * a.np + col0) =
                *reinterpret_cast<const float4 *>(se + r * kEStride + c4);
        }
        if (!last_to_arrive(a.counters + tile, static_cast<unsigned>(slots))) return;
        for (int r = tid >> 5; r < TOK; r += kWThreads / 32) {
            const int64_t row = m0 + r;
            if (row >= a.m || col0 >= a.np) continue;
            float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int64_t zz = 0; zz < slots; ++zz) {
                const float4 p =
                    __ldcg(reinterpret_cast<const float4 *>(a.part + (zz * a.m + row) * a.np + col0));
                s.x += p.x;
                s.y += p.y;
                s.z += p.z;
                s.w += p.w;
            }
            *reinterpret_cast<float4 *>(se + r * kEStride + c4) = s;
        }
    }
    for (int r = tid >> 5; r < TOK; r += kWThreads / 32) {
        const int64_t row = m0 + r;
        if (row >= a.m || col0 >= a.n) continue;
        const float4 v4 = *reinterpret_cast<const float4 *>(se + r * kEStride + c4);
        float v[4] = {v4.x, v4.y, v4.z, v4.w};
        T *p = out + row * a.n + col0;
        if (vec && col0 + 3 < a.n) {
            if (bias) {
#pragma unroll
                for (int i = 0; i < 4; ++i) v[i] += Num<T>::to_f(bias[col0 + i]);
            }
            uint2 o;
            typename Num<T>::T2 *o2 = reinterpret_cast<typename Num<T>::T2 *>(&o);
            if (a.accumulate) {
                const uint2 old = *reinterpret_cast<const uint2 *>(p);
                const typename Num<T>::T2 *q2 = reinterpret_cast<const typename Num<T>::T2 *>(&old);
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    const float2 f = Num<T>::to_f2(q2[i]);
                    v[2 * i] += f.x;
                    v[2 * i + 1] += f.y;
                }
            }
#pragma unroll
            for (int i = 0; i < 2; ++i) o2[i] = Num<T>::from_f2(make_float2(v[2 * i], v[2 * i + 1]));
            *reinterpret_cast<uint2 *>(p) = o;
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                if (col0 + i >= a.n) break;
                float x = v[i];
                if (bias) x += Num<T>::to_f(bias[col0 + i]);
                if (a.accumulate) x += Num<T>::to_f(p[i]);
                p[i] = Num<T>::from_f(x);
            }
        }
    }
}

// One block of the wgmma GEMM: column block bx of gx (kGN columns each), row tile by (TOK rows
// of x), K split bz; the plain kernel passes its block index, the grouped one a call's own.
template <typename T, int BITS, int TOK>
__device__ __forceinline__ void wgmma_block(const GemmArgs &a, unsigned bx, unsigned by,
                                            unsigned bz, unsigned gx) {
    using S = WgmmaTile<TOK>;
    extern __shared__ __align__(128) unsigned char wsmem[];
    // The ring on a 1024-byte boundary of the shared window (the swizzle's period).
    const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(wsmem));
    unsigned char *smem = wsmem + (((raw + 1023u) & ~1023u) - raw);
    const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int col = (warp >> 2) * 64 + (warp & 3) * 16 + g;  // A rows: block columns col, col + 8
    const int64_t n0 = static_cast<int64_t>(bx) * kGN;
    const int64_t m0 = static_cast<int64_t>(by) * TOK;
    // This split's K steps k0 … k0 + ksteps − 1 (none empty: wgmma_ksplit's count; tiles of
    // more than kSplitTok rows never split, and compile as before splits existed).
    const int64_t all = a.kdim / kGK;
    const int64_t per = TOK <= kSplitTok ? (all + a.ksplit - 1) / a.ksplit : all;
    const int64_t k0 = TOK <= kSplitTok ? static_cast<int64_t>(bz) * per : 0;
    const int64_t ksteps = min(per, all - k0);

    float acc[TOK / 2];
#pragma unroll
    for (int i = 0; i < TOK / 2; ++i) acc[i] = 0.f;

    WgmmaLoads<T, BITS, TOK> loads(a, m0, n0, k0);
    // K steps load in order, each into stage kt % kStages (kt counted from the split's first).
    auto load = [&](int64_t kt) { loads.issue(smem + (kt % S::kStages) * S::kStageBytes); };
#pragma unroll
    for (int s = 0; s < S::kAhead; ++s) {
        if (s < ksteps) {
            loads.read_groups(s);
            load(s);
        }
        cp_async_commit_group();
    }
    // Step kt's group of wgmmas runs while step kt + 1 is decoded, into the other of two
    // register sets; the group is waited for before the next one is issued (ptxas keeps the
    // wgmmas asynchronous only so), which also frees its stage for the loads.
    uint32_t fa[4][4], fb[4][4];
    auto prepare = [&](int64_t kt, uint32_t (&f)[4][4]) {
        const bool more = kt + S::kAhead < ksteps;
        if (more) loads.read_groups(kt + S::kAhead);
        cp_async_wait_groups<S::kAhead - 1>();
        fence_async_shared();
        // Step kt has landed for every thread; every warpgroup has issued step kt − 1 and
        // finished the wgmmas of step kt − 2, whose stage the next load reuses.
        __syncthreads();
        if (more) load(kt + S::kAhead);
        cp_async_commit_group();
        decode_step<T, BITS, TOK>(smem + (kt % S::kStages) * S::kStageBytes, col, t4, f);
    };
    auto issue = [&](int64_t kt, const uint32_t (&f)[4][4]) {
        issue_step<T, TOK>(smem + (kt % S::kStages) * S::kStageBytes, acc, f);
    };
    prepare(0, fa);
    for (int64_t kt = 0; kt < ksteps; kt += 2) {
        issue(kt, fa);
        if (kt + 1 < ksteps) prepare(kt + 1, fb);
        wgmma_wait<0>();
        if (kt + 1 >= ksteps) break;
        issue(kt + 1, fb);
        if (kt + 2 < ksteps) prepare(kt + 2, fa);
        wgmma_wait<0>();
    }
    wgmma_wait<0>();
    fence_regs(acc);
    cp_async_wait_groups<0>();
    __syncthreads();  // every wgmma and copy is done: the ring becomes the output staging

    store_out<T, TOK>(a, smem, acc, m0, n0, col, t4, bz, by * gx + bx);
}

template <typename T, int BITS, int TOK>
__global__ void __launch_bounds__(kWThreads, WgmmaTile<TOK>::kBlocksPerSm)
    gemm_wgmma_kernel(GemmArgs a) {
#if PARADEC_WGMMA_ARCH
    wgmma_block<T, BITS, TOK>(a, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x);
#endif
}

// Several calls of the wgmma GEMM at TOK-row tiles (32 or 64) in one 1-D grid: call c owns
// blocks first[c] … first[c + 1] − 1, which it numbers as its own launch's grid (column blocks
// fastest, then row tiles, then K splits), so each call runs exactly the blocks, splits and
// sums it runs alone at the split it carries.
template <typename T, int BITS, int TOK>
__global__ void __launch_bounds__(kWThreads, WgmmaTile<TOK>::kBlocksPerSm)
    gemm_wgmma_group_kernel(const __grid_constant__ WgmmaGroup g) {
#if PARADEC_WGMMA_ARCH
    const int b = static_cast<int>(blockIdx.x);
    int c = 0;
    while (c + 1 < g.count && b >= g.first[c + 1]) ++c;
    const GemmArgs &a = g.call[c];
    const unsigned gx = static_cast<unsigned>((a.n + kGN - 1) / kGN);
    const unsigned gy = static_cast<unsigned>((a.m + TOK - 1) / TOK);
    const unsigned local = static_cast<unsigned>(b - g.first[c]);
    wgmma_block<T, BITS, TOK>(a, local % gx, (local / gx) % gy, local / gx / gy, gx);
#endif
}

// ---- The warp-specialized wgmma GEMM (sm_90a), 256 rows of x, clusters of two ----
//
// The 256-row tiles of gemm_wgmma_kernel, with the copies taken off the two consumer
// warpgroups and x read from L2 once per two column blocks. A producer warpgroup (one thread of
// it works; the group gives its registers up to the consumers with setmaxnreg) keeps the ring
// full through the bulk-copy engine, and the two blocks of a cluster (neighbouring column
// blocks, same rows of x) share x: each copies half of the step's 256 × 64 tile through a
// tensor map (rows past m zero-filled) into both blocks' shared memory at once (multicast),
// and its own columns' word rows and groups' (scale, −zero·scale) as contiguous runs. Each
// stage has two barriers per block: `full` (the producer's arrival and the stage's bytes) and
// `empty` (an arrival from every consumer warp of both blocks, made after the wait that covers
// the stage's last wgmma: the stage's x halves land in both blocks, so either producer refills
// it only when both have done with it). The consumers only wait, decode and issue.
//
// Why: at 256 rows a block of the plain kernel reads 38 KB from L2 per 4.2 MFLOP step — x is
// 32 KB of it — and at about 5 TB/s the L2 feeds no more than ~550 TFLOP/s (H200, measured: the
// consumers of a single-block version of this kernel spent a third of their time waiting for
// full stages). With cluster-scope remote arrivals it ran at half the plain kernel's speed on
// an H100; with the arrivals block-scope, 3–10% faster for 4-bit weights, its default there
// (wgmma_ws_on; docs/gpu-bench-linear-h200.md).

constexpr int kWsTok = 256;
constexpr int kWsThreads = kWThreads + 128;  // two consumer warpgroups and the producer one
constexpr int kWsCluster = 2;
using WsTile = WgmmaTile<kWsTok>;
constexpr size_t kWsSmem = WsTile::kSmem + 2 * WsTile::kStages * sizeof(uint64_t);

// The producer thread of cluster rank `rank`: K steps 0 … ksteps − 1 into the ring, each into
// stage kt % kStages once both blocks have released that stage's previous round.
template <int B>
__device__ __forceinline__ void produce(const GemmArgs &a, const CUtensorMap *xmap,
                                        unsigned char *smem, uint64_t *full, uint64_t *empty,
                                        int64_t m0, int64_t n0, int64_t ksteps, uint32_t rank) {
    // The block's columns present in the layout (np and n0 are multiples of 8: whole 32-byte
    // runs; none for a cluster's second block past the last column); a stage's words and scales
    // past them keep stale bytes, which reach only the A rows of columns never stored.
    const int64_t left = a.np - n0;
    const uint32_t cols = static_cast<uint32_t>(left <= 0 ? 0 : left < kGN ? left : kGN);
    const uint32_t word_bytes = cols * 4, scale_bytes = cols * 8;
    const uint32_t stage_bytes = WsTile::kXBytes + 2 * (B * word_bytes + scale_bytes);
    constexpr int kHalf = kWsTok / kWsCluster;  // rows of x this block copies for both
    const int x_row = static_cast<int>(m0) + static_cast<int>(rank) * kHalf;
    const uint32_t x_off = rank * (WsTile::kXBytes / kWsCluster);
    int st = 0;       // the stage of step kt
    uint32_t ph = 0;  // the parity of its round (kt / kStages)
    for (int64_t kt = 0; kt < ksteps; ++kt) {
        // The step's groups, read before the wait so that their latency hides behind it.
        const uint2 meta0 = __ldg(a.tiles + kt * 2), meta1 = __ldg(a.tiles + kt * 2 + 1);
        if (kt >= WsTile::kStages) barrier_wait(empty + st, ph ^ 1u);
        unsigned char *stage = smem + st * WsTile::kStageBytes;
        expect_bytes(full + st, stage_bytes);
        tile_copy_2d_multicast(stage + x_off, xmap, static_cast<int>(kt * kGK), x_row, full + st,
                               (1u << kWsCluster) - 1u);
        if (cols > 0) {
#pragma unroll
            for (int tt = 0; tt < 2; ++tt) {
                const uint2 meta = tt == 0 ? meta0 : meta1;
                const int64_t group = static_cast<int64_t>(meta.y & 0xFFFFFFu);
                unsigned char *sub = stage + WsTile::kXBytes + tt * kSubBytes;
#pragma unroll
                for (int i = 0; i < B; ++i)
                    bulk_copy(sub + i * kGN * 4,
                              a.words + (static_cast<int64_t>(meta.x) + i) * a.np + n0, word_bytes,
                              full + st);
                bulk_copy(sub + kWordsBytes, a.sz + group * a.np + n0, scale_bytes, full + st);
            }
        }
        if (++st == WsTile::kStages) {
            st = 0;
            ph ^= 1u;
        }
    }
}

template <typename T, int BITS>
__global__ void __launch_bounds__(kWsThreads, 1)
    gemm_wgmma_ws_kernel(const __grid_constant__ CUtensorMap xmap, GemmArgs a) {
#if PARADEC_WGMMA_ARCH
    using S = WsTile;
    extern __shared__ __align__(128) unsigned char wsmem[];
    // The same offsets in both blocks of the cluster: the dynamic window starts at the same
    // address in every block of a kernel.
    const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(wsmem));
    unsigned char *smem = wsmem + (((raw + 1023u) & ~1023u) - raw);
    uint64_t *full = reinterpret_cast<uint64_t *>(smem + S::kStages * S::kStageBytes);
    uint64_t *empty = full + S::kStages;
    const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
    const uint32_t rank = cluster_rank();
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kGN;
    const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kWsTok;
    const int64_t ksteps = a.kdim / kGK;
    if (tid == 0) {
        for (int s = 0; s < S::kStages; ++s) {
            barrier_init(full + s, 1);
            barrier_init(empty + s, kWsCluster * kWThreads / 32);
        }
        fence_barrier_init();
    }
    cluster_sync();  // both blocks' barriers exist before either copies or arrives

    // A quarter of the SM (16384 registers) holds 2 consumer warps and 1 producer warp: 24 for
    // the producers leaves 232 for the consumers.
    if (warp >= kWThreads / 32) {
        regs_dec<24>();
        if (warp == kWThreads / 32 && lane == 0)
            produce<BITS>(a, &xmap, smem, full, empty, m0, n0, ksteps, rank);
        __syncwarp();
    } else {
        regs_inc<232>();
        const int g = lane >> 2, t4 = lane & 3;
        const int col = (warp >> 2) * 64 + (warp & 3) * 16 + g;
        float acc[kWsTok / 2];
#pragma unroll
        for (int i = 0; i < kWsTok / 2; ++i) acc[i] = 0.f;
        int st = 0;       // the stage of the next step to decode
        uint32_t ph = 0;  // the parity of its round
        // Waits for the next step's stage and decodes it; returns the stage.
        auto prepare = [&](uint32_t(&f)[4][4]) {
            barrier_wait(full + st, ph);
            decode_step<T, BITS, kWsTok>(smem + st * S::kStageBytes, col, t4, f);
            const int done = st;
            if (++st == S::kStages) {
                st = 0;
                ph ^= 1u;
            }
            return done;
        };
        auto issue = [&](int s, const uint32_t(&f)[4][4]) {
            issue_step<T, kWsTok>(smem + s * S::kStageBytes, acc, f);
        };
        // After the wait that covers a stage's wgmmas: the stage goes back to both producers.
        auto release = [&](int s) {
            if (lane == 0) {
#pragma unroll
                for (uint32_t r = 0; r < kWsCluster; ++r) barrier_arrive_cluster(empty + s, r);
            }
        };
        // As in gemm_wgmma_kernel: step kt's group runs while step kt + 1 is decoded.
        uint32_t fa[4][4], fb[4][4];
        int sa = prepare(fa), sb = 0;
        for (int64_t kt = 0; kt < ksteps; kt += 2) {
            issue(sa, fa);
            if (kt + 1 < ksteps) sb = prepare(fb);
            wgmma_wait<0>();
            release(sa);
            if (kt + 1 >= ksteps) break;
            issue(sb, fb);
            if (kt + 2 < ksteps) sa = prepare(fa);
            wgmma_wait<0>();
            release(sb);
        }
        fence_regs(acc);
        named_barrier_sync(1, kWThreads);  // every consumer's wgmmas are done: the ring is free
        store_out<T, kWsTok>(a, smem, acc, m0, n0, col, t4, 0, 0);  // never splits K
    }
    // Neither block leaves while the other may still arrive on its barriers.
    cluster_sync();
#endif
}

// Whether the launcher runs the warp-specialized kernel at 256 rows of x for weights of `bits`:
// by default for 4-bit weights, where it measured 3–10% faster than the plain kernel on an H100
// (and 3–14% slower for 8-bit: a step's words double, the producer's copies with them);
// PARADEC_WGMMA_WS (read once) "on" takes it for every width, "off" for none.
bool wgmma_ws_on(int bits) {
    static const bool on = env_is("PARADEC_WGMMA_WS", "on");
    static const bool off = env_is("PARADEC_WGMMA_WS", "off");
    return on || (!off && bits == 4);
}

template <typename T, int BITS>
int launch_wgmma_ws_t(const GemmArgs &a, const CUtensorMap &xmap, cudaStream_t stream) {
    if (const int st = allow_dynamic_smem(gemm_wgmma_ws_kernel<T, BITS>, kWsSmem)) return st;
    const unsigned col_blocks = static_cast<unsigned>((a.n + kGN - 1) / kGN);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((col_blocks + kWsCluster - 1) / kWsCluster * kWsCluster,
                       static_cast<unsigned>((a.m + kWsTok - 1) / kWsTok));
    cfg.blockDim = dim3(kWsThreads);
    cfg.dynamicSmemBytes = kWsSmem;
    cfg.stream = stream;
    cudaLaunchAttribute cluster[1];
    cluster[0].id = cudaLaunchAttributeClusterDimension;
    cluster[0].val.clusterDim.x = kWsCluster;
    cluster[0].val.clusterDim.y = 1;
    cluster[0].val.clusterDim.z = 1;
    cfg.attrs = cluster;
    cfg.numAttrs = 1;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, gemm_wgmma_ws_kernel<T, BITS>, xmap, a);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return static_cast<int>(e);
    }
    return launch_status();
}

template <typename T, int BITS, int TOK>
int launch_wgmma_t(const GemmArgs &a, cudaStream_t stream) {
    using S = WgmmaTile<TOK>;
    if (const int st = allow_dynamic_smem(gemm_wgmma_kernel<T, BITS, TOK>, S::kSmem)) return st;
    const dim3 grid(static_cast<unsigned>((a.n + kGN - 1) / kGN),
                    static_cast<unsigned>((a.m + TOK - 1) / TOK), static_cast<unsigned>(a.ksplit));
    gemm_wgmma_kernel<T, BITS, TOK><<<grid, kWThreads, S::kSmem, stream>>>(a);
    return launch_status();
}

template <typename T, int BITS, int TOK>
int launch_wgmma_group_t(const WgmmaGroup &g, cudaStream_t stream) {
    using S = WgmmaTile<TOK>;
    if (const int st = allow_dynamic_smem(gemm_wgmma_group_kernel<T, BITS, TOK>, S::kSmem))
        return st;
    gemm_wgmma_group_kernel<T, BITS, TOK>
        <<<static_cast<unsigned>(g.first[g.count]), kWThreads, S::kSmem, stream>>>(g);
    return launch_status();
}

template <typename T, int BITS>
int launch_wgmma_tok(const GemmArgs &a, int tok, cudaStream_t stream) {
    CUtensorMap xmap;
    if (tok == kWsTok && a.ksplit == 1 && wgmma_ws_on(BITS) &&
        make_swizzled_tile_map(&xmap, std::is_same<T, __nv_bfloat16>::value, a.a,
                               static_cast<uint64_t>(a.m), static_cast<uint64_t>(a.kdim),
                               static_cast<uint64_t>(a.lda), kWsTok / kWsCluster, kGK) == cudaSuccess &&
        launch_wgmma_ws_t<T, BITS>(a, xmap, stream) == PARADEC_K_OK)
        return PARADEC_K_OK;
    // Otherwise (no tensor map, or a cluster launch the device declined: the launch reports it
    // without running anything) the plain kernel.
    switch (tok) {
        case 32: return launch_wgmma_t<T, BITS, 32>(a, stream);
        case 64: return launch_wgmma_t<T, BITS, 64>(a, stream);
        case 128: return launch_wgmma_t<T, BITS, 128>(a, stream);
        default: return launch_wgmma_t<T, BITS, 256>(a, stream);
    }
}

template <typename T, int BITS>
int launch_t(const GemmArgs &a, cudaStream_t stream) {
    if (const int st = allow_dynamic_smem(gemm_kernel<T, BITS>, kGemmSmem)) return st;
    const dim3 grid(static_cast<unsigned>((a.n + kGN - 1) / kGN),
                    static_cast<unsigned>((a.m + kGM - 1) / kGM));
    gemm_kernel<T, BITS><<<grid, kGThreads, kGemmSmem, stream>>>(a);
    return launch_status();
}

template <typename T>
int launch_bits(const GemmArgs &a, int bits, cudaStream_t stream) {
    switch (bits) {
        case -1: return launch_t<T, -1>(a, stream);
        case 2: return launch_t<T, 2>(a, stream);
        case 3: return launch_t<T, 3>(a, stream);
        case 4: return launch_t<T, 4>(a, stream);
        case 5: return launch_t<T, 5>(a, stream);
        case 6: return launch_t<T, 6>(a, stream);
        case 8: return launch_t<T, 8>(a, stream);
        default: return launch_t<T, 0>(a, stream);
    }
}

}  // namespace

bool gemm_serves(const GemmArgs &a) {
    if (!aligned16(a.a) || a.lda % kVec != 0 || a.kdim % kVec != 0) return false;
    if (a.w) return aligned16(a.w);
    // Quantized: whole tiles of 32 stored rows, 16-byte aligned words and scales.
    return a.kdim % kGK == 0 && a.np % 8 == 0 && aligned16(a.words) && aligned16(a.sz);
}

int launch_gemm(int dtype, const GemmArgs &a, int bits, cudaStream_t stream) {
    return dispatch_dtype(dtype, [&](auto tag) { return launch_bits<decltype(tag)>(a, bits, stream); });
}

// PARADEC_WGMMA_TOK32=off keeps 64-row tiles at m ≤ 32 (read once).
int wgmma_small_tok(int64_t m) {
    static const bool off = env_is("PARADEC_WGMMA_TOK32", "off");
    return m <= 32 && !off ? 32 : 64;
}

int wgmma_tokens(int64_t m) { return m <= 64 ? wgmma_small_tok(m) : m <= 512 ? 128 : 256; }

// PARADEC_WGMMA_KSPLIT=N (1 … 16) forces N splits where the caps allow (benches compare
// counts); 0 when unset.
int wgmma_ksplit_forced() {
    static const int forced = env_int("PARADEC_WGMMA_KSPLIT", 1, 16);
    return forced;
}

int wgmma_ksplit(int64_t m, int64_t kdim, int64_t np, int tok) {
    if (tok > kSplitTok || m < 1) return 1;
    const int64_t steps = kdim / kGK;
    const int64_t sms = current_device_sms();
    const int64_t tiles = std::max<int64_t>(wgmma_tiles(m, np, tok), 1);
    const int64_t cap = std::min<int64_t>({steps / 2, 16, 2048 / m});
    if (cap <= 1) return 1;
    int64_t split = wgmma_ksplit_forced();
    if (split == 0) {
        // A block of 64 rows runs one warp per scheduler at 124 registers and issues on
        // latency (ncu: 0.45 instructions per cycle and scheduler), so a grid with SMs to
        // spare gains from more blocks on the same K: about three per SM, at most 4 splits
        // (8 and 16 lost to their partials' round trips through L2).
        split = tiles < sms ? std::min<int64_t>(std::max<int64_t>(3 * sms / tiles, 1), 4) : 1;
    }
    split = std::min(split, cap);
    return split <= 1 ? 1 : static_cast<int>(nonempty_splits(steps, split));
}

void wgmma_group_splits(int64_t m, const int64_t *kdim, const int64_t *np, int count, bool summed,
                        int *ks) {
    const int tok = wgmma_small_tok(m);
    static const bool own_only = env_is("PARADEC_WGMMA_GROUP_PLAN", "own");
    // `two`: the plan over two slots an SM, each at a lone block's speed (the first model,
    // kept for comparing).
    static const bool two_slots = env_is("PARADEC_WGMMA_GROUP_PLAN", "two");
    GroupCallShape shape[kWgmmaGroupMax];
    const int n = std::clamp(count, 0, kWgmmaGroupMax);
    for (int i = 0; i < n; ++i) {
        const int64_t steps = kdim[i] / kGK;
        shape[i] = {steps, wgmma_tiles(m, np[i], tok), wgmma_ksplit(m, kdim[i], np[i], tok),
                    group_split_cap(m, steps)};
        ks[i] = shape[i].own;
    }
    if (own_only || wgmma_ksplit_forced() != 0 || m < 1 || n < 1) return;
    // The plan costs tens of µs on the host: an eager decode step asks for the same few plans
    // every layer, so each thread keeps the last ones it made.
    struct Memo {
        int64_t m, sms;
        int count;
        bool summed;
        int64_t kdim[kWgmmaGroupMax], np[kWgmmaGroupMax];
        int ks[kWgmmaGroupMax];
    };
    thread_local Memo memo[8];
    thread_local int memo_used = 0, memo_next = 0;
    const int64_t sms = current_device_sms();
    for (int e = 0; e < memo_used; ++e) {
        const Memo &h = memo[e];
        bool same = h.m == m && h.sms == sms && h.count == n && h.summed == summed;
        for (int i = 0; same && i < n; ++i) same = h.kdim[i] == kdim[i] && h.np[i] == np[i];
        if (same) {
            std::copy(h.ks, h.ks + n, ks);
            return;
        }
    }
    plan_group_splits(shape, n, (two_slots ? 2 : 1) * std::max<int64_t>(sms, 1), summed, ks);
    Memo &h = memo[memo_next];
    h.m = m;
    h.sms = sms;
    h.count = n;
    h.summed = summed;
    std::copy(kdim, kdim + n, h.kdim);
    std::copy(np, np + n, h.np);
    std::copy(ks, ks + n, h.ks);
    memo_next = (memo_next + 1) % 8;
    memo_used = std::min(memo_used + 1, 8);
}

bool wgmma_serves(const GemmArgs &a, int bits) {
    const bool uniform = bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
    return a.w == nullptr && uniform && gemm_serves(a) && wgmma_available();
}

bool wgmma_available() {
#ifdef PARADEC_SM90A_IMAGE
    return current_device_cc() == 90;
#else
    return false;
#endif
}

int launch_gemm_wgmma_group(int dtype, const GemmArgs *calls, int count, cudaStream_t stream) {
    if (count < 1 || count > kWgmmaGroupMax) return PARADEC_K_BAD_SHAPE;
    // The calls with the longest blocks (most K steps a block) first: blocks start in grid
    // order, so the long ones start in the first wave and the short ones fill the slots they
    // leave, instead of long blocks starting last and running alone at the end (a call's
    // blocks and sums are its own whatever its place in the grid).
    int order[kWgmmaGroupMax];
    int64_t steps[kWgmmaGroupMax];
    for (int c = 0; c < count; ++c) {
        const int64_t ks = std::max(calls[c].ksplit, 1);
        steps[c] = (calls[c].kdim / kGK + ks - 1) / ks;
        order[c] = c;
    }
    std::stable_sort(order, order + count, [&](int x, int y) { return steps[x] > steps[y]; });
    WgmmaGroup g{};
    int blocks = 0;
    const int tok = wgmma_small_tok(calls[0].m);  // every call has the group's m
    for (int i = 0; i < count; ++i) {
        const GemmArgs &a = calls[order[i]];
        g.call[i] = a;
        g.first[i] = blocks;
        blocks += static_cast<int>(((a.n + kGN - 1) / kGN) * ((a.m + tok - 1) / tok) *
                                   std::max(a.ksplit, 1));
    }
    g.first[count] = blocks;
    g.count = count;
    if (blocks == 0) return PARADEC_K_OK;
    return dispatch_dtype(dtype, [&](auto tag) {
        return tok == 32 ? launch_wgmma_group_t<decltype(tag), 4, 32>(g, stream)
                         : launch_wgmma_group_t<decltype(tag), 4, 64>(g, stream);
    });
}

int launch_gemm_wgmma_sum(int dtype, const GemmArgs *calls, int count, float *part,
                          unsigned *counters, cudaStream_t stream) {
    if (count < 1 || count > kWgmmaGroupMax) return PARADEC_K_BAD_SHAPE;
    GemmArgs terms[kWgmmaGroupMax];
    int slots = 0;
    for (int c = 0; c < count; ++c) {
        terms[c] = calls[c];
        terms[c].out = calls[0].out;
        terms[c].bias = calls[0].bias;
        terms[c].accumulate = calls[0].accumulate;
        terms[c].part = part;
        terms[c].counters = counters;
        terms[c].ksplit = std::max(terms[c].ksplit, 1);
        terms[c].zbase = slots;
        slots += terms[c].ksplit;
    }
    for (int c = 0; c < count; ++c) terms[c].zslots = slots;
    return launch_gemm_wgmma_group(dtype, terms, count, stream);
}

int launch_gemm_wgmma(int dtype, const GemmArgs &a, int bits, int tok, cudaStream_t stream) {
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        switch (bits) {
            case 2: return launch_wgmma_tok<T, 2>(a, tok, stream);
            case 3: return launch_wgmma_tok<T, 3>(a, tok, stream);
            case 5: return launch_wgmma_tok<T, 5>(a, tok, stream);
            case 6: return launch_wgmma_tok<T, 6>(a, tok, stream);
            case 8: return launch_wgmma_tok<T, 8>(a, tok, stream);
            default: return launch_wgmma_tok<T, 4>(a, tok, stream);
        }
    });
}

}  // namespace paradec
