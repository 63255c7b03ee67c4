// Decode attention over a KV cache with the codes decoded straight into tensor-core fragments
// (a native fp16/bf16 cache's values are their own fragments): the bit and index arithmetic of attention_quant.cu's qdecode_frag_kernel, kept
// __host__ __device__ so that it can be checked on the host against plain loops.
//
// The products run transposed: Sᵀ = K·Qᵀ (A = 16 keys × 16 dims of K, B = 16 dims × 8 query
// rows) and Oᵀ = Vᵀ·Pᵀ (A = 16 dims × 16 keys of V, B = 16 keys × 8 rows), so the query rows —
// one to eight — are the mma's n and each lane holds two rows' worth of scores instead of four.
// Both A operands come from ldmatrix over the raw codes of a stage of 16 keys (plain for K,
// .trans for V), one 32-bit word per 8×8 b16 matrix and lane, which a few bit operations turn
// into pairs of exact f16 values: Q4/Q8 codes minus c (the magic-exponent trick, then one
// exact subtraction), FP8 values as they are. The mma runs in f16 — every decoded value is
// exact in f16 — whatever the call's dtype; over a native cache it runs in the cache's dtype
// and the words go to the mma untouched.
//
// The dimension order inside a fragment is free — Q·K is a sum over dimensions in any order,
// and Oᵀ's dimensions are put back when the result is stored — so the order is the one the
// words give (k_dim, v_dim below); Q's B fragments are gathered in K's order. Each 16-dim mma
// step stays inside one run of 32 dims, so Q4/Q8's per-key run scales apply after the K product
// (one f32 accumulator per run) and to P before the V product (P'ᵣ = P · scale of key, run r).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/kv_quant.h"

namespace paradec {
namespace kvfrag {

constexpr int kKeys = 16;  // keys per stage: the m of Sᵀ, the k of Oᵀ
constexpr int kRows = 8;   // query rows per warp: the n of both products

// Code bytes of one key's head (D dims) and its 16-byte chunks (ldmatrix rows).
__host__ __device__ constexpr int code_bytes(int f, int d) {
    return f == PARADEC_KV_Q4 ? d / 2 : f == PARADEC_KV_NATIVE ? 2 * d : d;
}
__host__ __device__ constexpr int chunks(int f, int d) { return code_bytes(f, d) / 16; }
// ldmatrix words per lane and run of 32 dims: a Q4 run is one chunk, an 8-bit run two, a
// native one four; each chunk is read for keys 0–7 and 8–15.
__host__ __device__ constexpr int words_per_run(int f) {
    return f == PARADEC_KV_Q4 ? 2 : f == PARADEC_KV_NATIVE ? 8 : 4;
}

// Where chunk `c` of stage key `key` sits among the key's `cb` chunks: XOR-swizzled so that the
// eight keys one ldmatrix matrix reads fall into eight different 16-byte bank groups.
__host__ __device__ constexpr int swizzle(int c, int key, int cb) {
    return cb >= 8 ? c ^ (key & 7) : cb <= 1 ? c : c ^ ((key / (8 / cb)) & (cb - 1));
}

// ldmatrix call n (four matrices) of a stage: operand 4n + j reads chunk 2n + j / 2 of keys
// 8·(j % 2) … + 7, so word 2·chunk + half of a lane is (chunk, key half). Lane l gives the
// address of row l % 8 of operand l / 8: this key and chunk.
__host__ __device__ constexpr int lane_key(int lane) { return 8 * ((lane >> 3) & 1) + (lane & 7); }
__host__ __device__ constexpr int lane_chunk(int n, int lane) { return 2 * n + (lane >> 4); }

// ---- bit operations (device instructions; plain C++ on the host) ------------------------------

__host__ __device__ inline uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#else
    return (a & b) | c;
#endif
}

__host__ __device__ inline uint32_t perm(uint32_t x, uint32_t y, uint32_t sel) {
#ifdef __CUDA_ARCH__
    return __byte_perm(x, y, sel);
#else
    const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((sel >> (4 * i)) & 7))) & 0xffu) << (8 * i);
    return r;
#endif
}

__host__ __device__ inline __half2 as_h2(uint32_t u) {
    __half2_raw r;
    r.x = static_cast<unsigned short>(u & 0xffffu);
    r.y = static_cast<unsigned short>(u >> 16);
    return __half2(r);
}
__host__ __device__ inline uint32_t as_u32(__half2 h) {
    const __half2_raw r = h;
    return r.x | static_cast<uint32_t>(r.y) << 16;
}

// a − b on a pair of f16 (exact for the values here: integers below 2048).
__host__ __device__ inline uint32_t hsub2(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
    return as_u32(__hsub2(as_h2(a), as_h2(b)));
#else
    const __half2 x = as_h2(a), y = as_h2(b);
    return as_u32(__halves2half2(__float2half_rn(__low2float(x) - __low2float(y)),
                                 __float2half_rn(__high2float(x) - __high2float(y))));
#endif
}

// Two E4M3 bytes (bits 0–15) to an f16 pair, the low byte in the low half; exact.
__host__ __device__ inline uint32_t e4m3x2(uint32_t two) {
    const __half2_raw r =
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
    return r.x | static_cast<uint32_t>(r.y) << 16;
}

// ---- decoding one ldmatrix word -------------------------------------------------------------

// Magic exponents: 0x6400 | n is the f16 1024 + n, 0x5400 | n << 4 is 64 + n, 0x6400 | b is
// 1024 + b; subtracting magic + c leaves code − c, exact.
constexpr uint32_t kQ4LoMagic = 0x64006400u, kQ4LoBias = 0x64086408u;  // 1024, 1032
constexpr uint32_t kQ4HiMagic = 0x54005400u, kQ4HiBias = 0x54805480u;  // 64, 72
constexpr uint32_t kQ8Magic = 0x64646464u, kQ8Bias = 0x64806480u;      // 0x64 bytes, 1152

// Q4: the four f16 pairs of a word's eight nibbles — [0] low nibbles of bytes 0 and 2, [1] their
// high nibbles, [2] low nibbles of bytes 1 and 3, [3] their high nibbles. Plain ldmatrix gives one
// key's bytes 0–3 (so pair e holds two dimensions of that key); .trans gives bytes 2g, 2g + 1 of
// two keys in the low and high halves (so pair e holds one dimension of both keys).
__host__ __device__ inline void q4_pairs(uint32_t w, uint32_t (&p)[4]) {
    const uint32_t w8 = w >> 8;
    p[0] = hsub2(and_or(w, 0x000f000fu, kQ4LoMagic), kQ4LoBias);
    p[1] = hsub2(and_or(w, 0x00f000f0u, kQ4HiMagic), kQ4HiBias);
    p[2] = hsub2(and_or(w8, 0x000f000fu, kQ4LoMagic), kQ4LoBias);
    p[3] = hsub2(and_or(w8, 0x00f000f0u, kQ4HiMagic), kQ4HiBias);
}

// 8-bit formats, K side (plain ldmatrix: bytes 0–3 of one key): [0] bytes 0, 1; [1] bytes 2, 3.
template <int F>
__host__ __device__ inline void k8_pairs(uint32_t w, uint32_t (&p)[2]) {
    if constexpr (F == PARADEC_KV_Q8) {
        p[0] = hsub2(perm(w, kQ8Magic, 0x4140u), kQ8Bias);
        p[1] = hsub2(perm(w, kQ8Magic, 0x4342u), kQ8Bias);
    } else if constexpr (F == PARADEC_KV_E4M3) {
        p[0] = e4m3x2(w);
        p[1] = e4m3x2(w >> 16);
    } else {  // E5M2: each byte is the upper byte of an f16
        p[0] = perm(w, 0u, 0x1404u);
        p[1] = perm(w, 0u, 0x3424u);
    }
}

// 8-bit formats, V side (.trans: bytes 2g, 2g + 1 of key a in the low half, of key b in the
// high half): [0] byte 2g of a and b; [1] byte 2g + 1 of a and b.
template <int F>
__host__ __device__ inline void v8_pairs(uint32_t y, uint32_t (&p)[2]) {
    if constexpr (F == PARADEC_KV_Q8) {
        p[0] = hsub2(perm(y, kQ8Magic, 0x4240u), kQ8Bias);
        p[1] = hsub2(perm(y, kQ8Magic, 0x4341u), kQ8Bias);
    } else if constexpr (F == PARADEC_KV_E4M3) {
        p[0] = e4m3x2(perm(y, 0u, 0x4420u));
        p[1] = e4m3x2(perm(y, 0u, 0x4431u));
    } else {
        p[0] = perm(y, 0u, 0x2404u);
        p[1] = perm(y, 0u, 0x3414u);
    }
}

// ---- fragments of one run (32 dims: two 16-dim mma steps) -----------------------------------

// K's A fragments for the run's two k steps from the run's words (w[2·chunk + half], chunks of
// the run only): a0 = key g, a1 = key g + 8 (dims 2t4, 2t4 + 1 of the step), a2, a3 = the same
// keys at dims 2t4 + 8, + 9.
template <int F>
__host__ __device__ inline void k_frags(const uint32_t *w, uint32_t (&a)[2][4]) {
    if constexpr (F == PARADEC_KV_NATIVE) {
        // Word 4c + j: chunk 2c + j / 2 (dims 8·(j / 2) … of step c), keys 8·(j % 2) + g.
#pragma unroll
        for (int c = 0; c < 2; ++c)
#pragma unroll
            for (int j = 0; j < 4; ++j) a[c][j] = w[4 * c + j];
    } else if constexpr (F == PARADEC_KV_Q4) {
        uint32_t p0[4], p1[4];
        q4_pairs(w[0], p0);  // key g
        q4_pairs(w[1], p1);  // key g + 8
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            a[c][0] = p0[2 * c];
            a[c][1] = p1[2 * c];
            a[c][2] = p0[2 * c + 1];
            a[c][3] = p1[2 * c + 1];
        }
    } else {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            uint32_t p0[2], p1[2];
            k8_pairs<F>(w[2 * c], p0);
            k8_pairs<F>(w[2 * c + 1], p1);
            a[c][0] = p0[0];
            a[c][1] = p1[0];
            a[c][2] = p0[1];
            a[c][3] = p1[1];
        }
    }
}

// Vᵀ's A fragments for the run's two m tiles (16 dims each) from the run's .trans words:
// a0 = dim row g, keys 2t4, 2t4 + 1; a1 = dim row g + 8, same keys; a2, a3 = keys + 8.
template <int F>
__host__ __device__ inline void v_frags(const uint32_t *y, uint32_t (&a)[2][4]) {
    if constexpr (F == PARADEC_KV_NATIVE) {
        // Word 4t + j: dim g of chunk 2t + j / 2, keys 8·(j % 2) + 2t4, + 1.
#pragma unroll
        for (int t = 0; t < 2; ++t) {
            a[t][0] = y[4 * t];
            a[t][1] = y[4 * t + 2];
            a[t][2] = y[4 * t + 1];
            a[t][3] = y[4 * t + 3];
        }
    } else if constexpr (F == PARADEC_KV_Q4) {
        uint32_t p0[4], p1[4];
        q4_pairs(y[0], p0);  // keys 0–7 of the stage
        q4_pairs(y[1], p1);  // keys 8–15
#pragma unroll
        for (int t = 0; t < 2; ++t) {
            a[t][0] = p0[2 * t];
            a[t][1] = p0[2 * t + 1];
            a[t][2] = p1[2 * t];
            a[t][3] = p1[2 * t + 1];
        }
    } else {
#pragma unroll
        for (int t = 0; t < 2; ++t) {
            uint32_t p0[2], p1[2];
            v8_pairs<F>(y[2 * t], p0);
            v8_pairs<F>(y[2 * t + 1], p1);
            a[t][0] = p0[0];
            a[t][1] = p0[1];
            a[t][2] = p1[0];
            a[t][3] = p1[1];
        }
    }
}

// The head dimension at position p (0–15) of K's k step kc: the column of Q that B row p takes.
template <int F>
__host__ __device__ constexpr int k_dim(int kc, int p) {
    // lane quad t4 = (p % 8) / 2 holds bytes 4·t4 … + 3 of its chunk; e = p % 2, hi = p / 8
    return F == PARADEC_KV_Q4
               ? 32 * (kc / 2) + 2 * (4 * ((p % 8) / 2) + kc % 2 + 2 * (p % 2)) + p / 8
           : F == PARADEC_KV_NATIVE ? 16 * kc + p
                                    : 16 * kc + 4 * ((p % 8) / 2) + 2 * (p / 8) + p % 2;
}

// The head dimension of row r (0–15) of Vᵀ's m tile mt.
template <int F>
__host__ __device__ constexpr int v_dim(int mt, int r) {
    return F == PARADEC_KV_Q4        ? 32 * (mt / 2) + 4 * (r % 8) + 2 * (mt % 2) + r / 8
           : F == PARADEC_KV_NATIVE ? 16 * mt + r
                                    : 16 * mt + 2 * (r % 8) + r / 8;
}

}  // namespace kvfrag
}  // namespace paradec
