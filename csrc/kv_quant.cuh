// The quantized KV-cache formats on the device (docs/formats.md; the CPU twins are in
// src/kv_quant.rs): the 32-point Walsh–Hadamard transform, a run's quantization, FP8
// conversions, and the decoding of eight consecutive values of one row — what the quantizing
// cache write (rope.cu), the quantized decode attention and the dequantizing copy
// (attention_quant.cu) share. Rounding follows the CPU twins step for step (no contraction:
// __f*_rn), so both backends write the same codes from the same values.
#pragma once

#include <cuda_fp8.h>

#include "common.cuh"

namespace paradec {

constexpr int kRun = 32;

__host__ __device__ constexpr bool kv_has_runs(int f) {
    return f == PARADEC_KV_Q8 || f == PARADEC_KV_Q4;
}
__host__ __device__ constexpr int kv_bits(int f) { return f == PARADEC_KV_Q4 ? 4 : 8; }

// Bytes of one token's row of kv_dim values (`elem` bytes per value in the native format).
__host__ __device__ inline int64_t kv_row_bytes(int f, int64_t kv_dim, int elem = 2) {
    return f == PARADEC_KV_Q4 ? kv_dim / 2 : f == PARADEC_KV_NATIVE ? kv_dim * elem : kv_dim;
}

// Where sequence b's position j lives among the rows of the pages: b·capacity + j in a
// contiguous cache; with a block table (vLLM-style, [batch, max_pages] int32),
// table[b, j / page_size]·page_size + j % page_size.
struct SlotMap {
    const int32_t *table;
    int64_t max_pages;
    int64_t page_size;
    int64_t capacity;
    __device__ __forceinline__ int64_t operator()(int64_t b, int64_t j) const {
        if (!table) return b * capacity + j;
        return static_cast<int64_t>(__ldg(table + b * max_pages + j / page_size)) * page_size +
               j % page_size;
    }
};

// Unnormalized Walsh–Hadamard transform of 32 values in place, strides 1, 2, 4, 8, 16 (the
// order of kv_quant::fwht32).
__device__ __forceinline__ void fwht32(float (&x)[kRun]) {
#pragma unroll
    for (int h = 1; h < kRun; h *= 2)
#pragma unroll
        for (int i = 0; i < kRun; i += 2 * h)
#pragma unroll
            for (int j = i; j < i + h; ++j) {
                const float a = x[j], b = x[j + h];
                x[j] = __fadd_rn(a, b);
                x[j + h] = __fsub_rn(a, b);
            }
}

// Quantizes one run (rotated in place) to `bits`-bit codes; returns the fp16 scale.
template <int BITS>
__device__ __forceinline__ __half quantize_run(float (&y)[kRun], uint8_t (&codes)[kRun]) {
    fwht32(y);
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < kRun; ++i) amax = fmaxf(amax, fabsf(y[i]));
    __half s = __float2half_rn(amax);
    if (__hisinf(s)) s = __ushort_as_half(0x7bff);  // fp16 max
    const float sf = __half2float(s);
    constexpr float c = static_cast<float>(1 << (BITS - 1));
    constexpr float qmax = static_cast<float>((1 << BITS) - 1);
#pragma unroll
    for (int i = 0; i < kRun; ++i) {
        const float t = __fadd_rn(__fmul_rn(__fdiv_rn(y[i], sf), c), c);
        codes[i] = sf > 0.f ? static_cast<uint8_t>(fminf(fmaxf(roundf(t), 0.f), qmax))
                            : static_cast<uint8_t>(c);
    }
    return s;
}

__device__ __forceinline__ uint8_t f32_to_e4m3(float x) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ uint8_t f32_to_e5m2_trunc(float x) {
    return static_cast<uint8_t>(__half_as_ushort(__float2half_rn(x)) >> 8);
}

// Eight consecutive codes of one row as f32. E4M3 and E5M2: the values (before the E4M3 head
// scale). Q8/Q4: code − c (the run's scale / c and the rotation are applied by the caller).
// `p` points at the row's byte of element e0 (a multiple of 8).
template <int F>
__device__ __forceinline__ void decode8(const uint8_t *p, float (&f)[8]) {
    if constexpr (F == PARADEC_KV_Q4) {
        const uint32_t w = __ldg(reinterpret_cast<const uint32_t *>(p));
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] = static_cast<float>((w >> (4 * i)) & 0xfu) - 8.f;
    } else {
        const uint2 w = __ldg(reinterpret_cast<const uint2 *>(p));
        const uint32_t ws[2] = {w.x, w.y};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t x = ws[h];
            if constexpr (F == PARADEC_KV_Q8) {
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    f[4 * h + i] = static_cast<float>((x >> (8 * i)) & 0xffu) - 128.f;
            } else if constexpr (F == PARADEC_KV_E5M2) {
                // Each byte is the upper byte of an fp16.
                const uint32_t lo = ((x & 0xffu) << 8) | ((x & 0xff00u) << 16);
                const uint32_t hi = ((x & 0xff0000u) >> 8) | (x & 0xff000000u);
                const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&lo));
                const float2 b = __half22float2(*reinterpret_cast<const __half2 *>(&hi));
                f[4 * h] = a.x;
                f[4 * h + 1] = a.y;
                f[4 * h + 2] = b.x;
                f[4 * h + 3] = b.y;
            } else {
                // E4M3: two bytes at a time to fp16x2.
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(
                        static_cast<__nv_fp8x2_storage_t>((x >> (16 * i)) & 0xffffu), __NV_E4M3);
                    const float2 a = __half22float2(*reinterpret_cast<const __half2 *>(&r));
                    f[4 * h + 2 * i] = a.x;
                    f[4 * h + 2 * i + 1] = a.y;
                }
            }
        }
    }
}

// A device view of paradec_kv_pages with the row geometry.
struct KvView {
    const uint8_t *codes;
    const __half *scales;
    const float *head_scale;
    int64_t row_bytes;  // per token
    int64_t runs;       // scales per token (kv_dim / 32 for Q8/Q4)
};

}  // namespace paradec
