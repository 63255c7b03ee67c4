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
#include "linear_gemm.cuh"
#include "mma.cuh"

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
                cp_async16_zfill(
                    sw + i * kGN + ch * 4,
                    ok ? a.words + (static_cast<int64_t>(meta.x) + i) * a.np + c : a.words, ok);
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

template <typename T, int BITS>
int launch_t(const GemmArgs &a, cudaStream_t stream) {
    const cudaError_t attr = cudaFuncSetAttribute(
        gemm_kernel<T, BITS>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kGemmSmem));
    if (attr != cudaSuccess) {
        cudaGetLastError();
        return static_cast<int>(attr);
    }
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

}  // namespace paradec
