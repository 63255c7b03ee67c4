// Tensor-core building blocks shared by the kernel files: asynchronous 16-byte copies into
// shared memory (cp.async), ldmatrix, and the m16n8k16 mma with f32 accumulators (sm_80+).
#pragma once

#include <type_traits>

#include "common.cuh"

namespace paradec {

// Copies 16 bytes global → shared without staging in registers; when !valid the 16 bytes are
// zero-filled and nothing is read.
__device__ __forceinline__ void cp_async16_zfill(void *smem, const void *gmem, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
#endif
}
__device__ __forceinline__ void cp_async_commit_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_groups() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// Four 8×8 b16 matrices from shared memory; lane i gives the address of row i % 8 of matrix
// i / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void *smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}

// As ldsm_x4, each matrix transposed (V of attention, read as the B operand).
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void *smem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}

// The transpose of an 8×8 b16 matrix held as fragments (lane l: row l / 4, columns
// 2·(l % 4) and + 1, the lower column in the low half), in the same layout.
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
    uint32_t d = x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(x));
#endif
    return d;
}

// c += a·b on tensor cores: a 16×16 (row), b 16×8 (col), f32 accumulators; T is __half or
// __nv_bfloat16.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (std::is_same<T, __half>::value) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
#endif
}

// The code of row r (0..31) of a B-bit stream over words w[0..B) (little-endian bit order, as
// paradec's quantized layout stores a 32-row tile of one column). Constant-folds for constant r.
template <int B>
__device__ __forceinline__ uint32_t tile_code(const uint32_t *w, int r) {
    const int bit = r * B;
    const int wi = bit >> 5;
    const int sh = bit & 31;
    const uint32_t v = (sh + B <= 32) ? (w[wi] >> sh) : __funnelshift_r(w[wi], w[wi + 1], sh);
    return v & ((1u << B) - 1u);
}

// (a & b) | c in one instruction (the compiler may otherwise emit two).
__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// The exact float of a code below 2^23 (the 2^23 exponent trick: one OR and one subtraction).
__device__ __forceinline__ float code_float(uint32_t q) {
    return __uint_as_float(0x4B000000u | q) - 8388608.f;
}

}  // namespace paradec
