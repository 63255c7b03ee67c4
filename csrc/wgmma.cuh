// Hopper's warpgroup matrix multiply (wgmma, sm_90a only): a warpgroup — four consecutive warps
// of a block, 128 threads — multiplies a 64 × 16 A fragment held in its registers by a 16 × N
// B tile read from shared memory through a descriptor, into 64 × N f32 accumulators spread over
// its registers, asynchronously: the instruction is issued, the warps go on (decoding the next
// A), and wgmma_wait<n>() blocks until at most n committed groups are still running.
//
// Register layouts (per warp w of the warpgroup, g = lane / 4, t = lane % 4):
//  - A (a[0..3], pairs of 16-bit values): rows 16w + g and 16w + g + 8, k = 2t, 2t + 1 and
//    2t + 8, 2t + 9 — a[0] (row g, k 2t..), a[1] (row g + 8, k 2t..), a[2] (row g, k 2t + 8..),
//    a[3] (row g + 8, k 2t + 8..): mma.sync m16n8k16's A fragment, one per warp;
//  - D (d[0..N/2)): for each n8 chunk j, d[4j], d[4j + 1] at row 16w + g, columns 8j + 2t and
//    8j + 2t + 1; d[4j + 2], d[4j + 3] the same columns at row 16w + g + 8.
//
// The rules the callers keep (PTX's asynchronous wgmma model):
//  - wgmma_fence() before a wgmma whose A registers or accumulators were last written by other
//    instructions (every new A fragment);
//  - shared memory written by ordinary stores or cp.async is made visible to wgmma's reads by
//    fence_async_shared() in the writing threads, then a barrier;
//  - accumulators are read only after the wait that covers their last wgmma, with
//    fence_regs() after it so that the compiler does not move the reads above the wait; a
//    stage of shared memory is overwritten only after the wait that covers its last reader.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.cuh"

// Whether this compilation targets sm_90a, where wgmma exists.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PARADEC_WGMMA_ARCH 1
#else
#define PARADEC_WGMMA_ARCH 0
#endif

namespace paradec {

// Descriptor of a K-major 16-bit tile in shared memory laid out with the 128-byte swizzle:
// row r (of N rows) holds 64 elements in 128 bytes at r·128, its 16-byte chunk c stored at
// chunk c ^ (r % 8); the tile starts on a 1024-byte boundary. `byte_offset` (0, 32, 64 or 96)
// picks the k16 slice the wgmma reads. Fields: start address >> 4 (bits 0–13), leading byte
// offset (unused with this swizzle, 1), stride byte offset >> 4 = 1024 >> 4 between 8-row
// groups (bits 32–45), swizzle mode 1 = 128 bytes (bits 62–63).
__device__ __forceinline__ uint64_t sw128_desc(const void *tile, uint32_t byte_offset) {
    const uint32_t addr =
        static_cast<uint32_t>(__cvta_generic_to_shared(tile)) + byte_offset;
    return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) |
           (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// Descriptor of the same layout read MN-major (wgmma's B with TB = 1): the tile's rows are k
// (a 16-row k step starts at row 16·step, 2048 bytes further), its 64-element row blocks are N;
// blocks of further N lie `n_block_bytes` apart (leading byte offset), groups of 8 k rows 1024
// bytes apart (stride byte offset).
__device__ __forceinline__ uint64_t sw128_desc_mn(const void *tile, uint32_t n_block_bytes) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
    return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) |
           (static_cast<uint64_t>((n_block_bytes & 0x3FFFFu) >> 4) << 16) |
           (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// The shared-memory offset of 16-byte chunk c of row r in a tile of that layout.
__device__ __forceinline__ int sw128_offset(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

__device__ __forceinline__ void wgmma_fence() {
#if PARADEC_WGMMA_ARCH
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if PARADEC_WGMMA_ARCH
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if PARADEC_WGMMA_ARCH
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Orders this thread's earlier shared-memory writes before later wgmma (async proxy) reads.
__device__ __forceinline__ void fence_async_shared() {
#if PARADEC_WGMMA_ARCH
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Moves this warpgroup's register allotment down (producer) or up (consumers) to N per thread.
template <int N>
__device__ __forceinline__ void regs_dec() {
#if PARADEC_WGMMA_ARCH
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void regs_inc() {
#if PARADEC_WGMMA_ARCH
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// Pins accumulators in place across a wait: the compiler may not move their reads above it.
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define PARADEC_ACC8(d, i)                                                                   \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
        "+f"(d[i + 6]), "+f"(d[i + 7])

// d (64 × N) += a (64 × 16, registers) · b (16 × N, the descriptor's tile, K-major), f32
// accumulation; one function per N and input type.
#define PARADEC_WGMMA_RS_N32(NAME, TY)                                                    \
    template <int TB> __device__ __forceinline__ void NAME(float(&d)[16], const uint32_t(&a)[4], uint64_t b) {      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"                               \
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " {"                \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15 " \
                     "}, {%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}\n"                  \
                     : PARADEC_ACC8(d, 0), PARADEC_ACC8(d, 8) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(TB));            \
    }

#define PARADEC_WGMMA_RS_N64(NAME, TY)                                                    \
    template <int TB> __device__ __forceinline__ void NAME(float(&d)[32], const uint32_t(&a)[4], uint64_t b) {      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                               \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {"                \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31 " \
                     "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"                  \
                     : PARADEC_ACC8(d, 0), PARADEC_ACC8(d, 8), PARADEC_ACC8(d, 16), PARADEC_ACC8(d, 24) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(TB));            \
    }

#define PARADEC_WGMMA_RS_N128(NAME, TY)                                                    \
    template <int TB> __device__ __forceinline__ void NAME(float(&d)[64], const uint32_t(&a)[4], uint64_t b) {      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                               \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {"                \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63 " \
                     "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"                  \
                     : PARADEC_ACC8(d, 0), PARADEC_ACC8(d, 8), PARADEC_ACC8(d, 16), PARADEC_ACC8(d, 24), \
          PARADEC_ACC8(d, 32), PARADEC_ACC8(d, 40), PARADEC_ACC8(d, 48), PARADEC_ACC8(d, 56) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(TB));            \
    }

#define PARADEC_WGMMA_RS_N256(NAME, TY)                                                    \
    template <int TB> __device__ __forceinline__ void NAME(float(&d)[128], const uint32_t(&a)[4], uint64_t b) {      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                               \
                     "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " {"                \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127 " \
                     "}, {%128, %129, %130, %131}, %132, p, 1, 1, %134;\n}\n"                  \
                     : PARADEC_ACC8(d, 0), PARADEC_ACC8(d, 8), PARADEC_ACC8(d, 16), PARADEC_ACC8(d, 24), \
          PARADEC_ACC8(d, 32), PARADEC_ACC8(d, 40), PARADEC_ACC8(d, 48), PARADEC_ACC8(d, 56), \
          PARADEC_ACC8(d, 64), PARADEC_ACC8(d, 72), PARADEC_ACC8(d, 80), PARADEC_ACC8(d, 88), \
          PARADEC_ACC8(d, 96), PARADEC_ACC8(d, 104), PARADEC_ACC8(d, 112), PARADEC_ACC8(d, 120) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1), "n"(TB));            \
    }


#if PARADEC_WGMMA_ARCH
PARADEC_WGMMA_RS_N32(wgmma_f16_n32, "f16")
PARADEC_WGMMA_RS_N64(wgmma_f16_n64, "f16")
PARADEC_WGMMA_RS_N128(wgmma_f16_n128, "f16")
PARADEC_WGMMA_RS_N256(wgmma_f16_n256, "f16")
PARADEC_WGMMA_RS_N32(wgmma_bf16_n32, "bf16")
PARADEC_WGMMA_RS_N64(wgmma_bf16_n64, "bf16")
PARADEC_WGMMA_RS_N128(wgmma_bf16_n128, "bf16")
PARADEC_WGMMA_RS_N256(wgmma_bf16_n256, "bf16")
#endif

// wgmma of T (__half or __nv_bfloat16) with N = 32, 64, 128 or 256 (N / 2 accumulators). TB = 1
// reads B MN-major (sw128_desc_mn's layout) instead of K-major.
template <typename T, int N, int TB = 0>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b) {
#if PARADEC_WGMMA_ARCH
    constexpr bool kHalf = std::is_same<T, __half>::value;
    if constexpr (N == 32) {
        if constexpr (kHalf) wgmma_f16_n32<TB>(d, a, b); else wgmma_bf16_n32<TB>(d, a, b);
    } else if constexpr (N == 64) {
        if constexpr (kHalf) wgmma_f16_n64<TB>(d, a, b); else wgmma_bf16_n64<TB>(d, a, b);
    } else if constexpr (N == 128) {
        if constexpr (kHalf) wgmma_f16_n128<TB>(d, a, b); else wgmma_bf16_n128<TB>(d, a, b);
    } else {
        static_assert(N == 256, "wgmma_rs: N is 32, 64, 128 or 256");
        if constexpr (kHalf) wgmma_f16_n256<TB>(d, a, b); else wgmma_bf16_n256<TB>(d, a, b);
    }
#endif
}

// d (64 × N) = a (64 × 16, the descriptor's tile, K-major) · b (16 × N, K-major), plus d where
// `acc` is nonzero: both operands from shared memory.
#define PARADEC_WGMMA_SS_N128(NAME, TY)                                                    \
    __device__ __forceinline__ void NAME(float(&d)[64], uint64_t a, uint64_t b, int acc) {      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                               \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {"                \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63 " \
                     "}, %64, %65, p, 1, 1, 0, 0;\n}\n"                  \
                     : PARADEC_ACC8(d, 0), PARADEC_ACC8(d, 8), PARADEC_ACC8(d, 16), PARADEC_ACC8(d, 24), \
          PARADEC_ACC8(d, 32), PARADEC_ACC8(d, 40), PARADEC_ACC8(d, 48), PARADEC_ACC8(d, 56) \
                     : "l"(a), "l"(b), "r"(acc));            \
    }

#define PARADEC_WGMMA_SS_N64(NAME, TY)                                                    \
    __device__ __forceinline__ void NAME(float(&d)[32], uint64_t a, uint64_t b, int acc) {      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                               \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {"                \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31 " \
                     "}, %32, %33, p, 1, 1, 0, 0;\n}\n"                  \
                     : PARADEC_ACC8(d, 0), PARADEC_ACC8(d, 8), PARADEC_ACC8(d, 16), PARADEC_ACC8(d, 24) \
                     : "l"(a), "l"(b), "r"(acc));            \
    }

#if PARADEC_WGMMA_ARCH
PARADEC_WGMMA_SS_N64(wgmma_ss_f16_n64, "f16")
PARADEC_WGMMA_SS_N64(wgmma_ss_bf16_n64, "bf16")
PARADEC_WGMMA_SS_N128(wgmma_ss_f16_n128, "f16")
PARADEC_WGMMA_SS_N128(wgmma_ss_bf16_n128, "bf16")
#endif

// wgmma of T with both operands in shared memory, N = 64 or 128 (N / 2 accumulators).
template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t a, uint64_t b, bool acc) {
#if PARADEC_WGMMA_ARCH
    constexpr bool kHalf = std::is_same<T, __half>::value;
    if constexpr (N == 64) {
        if constexpr (kHalf) wgmma_ss_f16_n64(d, a, b, acc ? 1 : 0); else wgmma_ss_bf16_n64(d, a, b, acc ? 1 : 0);
    } else {
        static_assert(N == 128, "wgmma_ss: N is 64 or 128");
        if constexpr (kHalf) wgmma_ss_f16_n128(d, a, b, acc ? 1 : 0); else wgmma_ss_bf16_n128(d, a, b, acc ? 1 : 0);
    }
#endif
}

}  // namespace paradec
