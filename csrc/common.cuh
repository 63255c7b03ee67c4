// Helpers shared by paradec's kernel files: dtype traits, 16-byte vector pack/unpack, warp
// reductions, and the launcher boundary (status from the launch, exceptions caught).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "paradec_kernels.h"
#include "split_count.h"

namespace paradec {

// Conversions between a 16-bit storage type and f32 (round to nearest even on the way back).
template <typename T>
struct Num;

template <>
struct Num<__half> {
    using T2 = __half2;
    static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
    static __device__ __forceinline__ float2 to_f2(__half2 v) { return __half22float2(v); }
    static __device__ __forceinline__ __half2 from_f2(float2 v) { return __float22half2_rn(v); }
};

template <>
struct Num<__nv_bfloat16> {
    using T2 = __nv_bfloat162;
    static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float x) {
        return __float2bfloat16_rn(x);
    }
    static __device__ __forceinline__ float2 to_f2(__nv_bfloat162 v) {
        return __bfloat1622float2(v);
    }
    static __device__ __forceinline__ __nv_bfloat162 from_f2(float2 v) {
        return __float22bfloat162_rn(v);
    }
};

// Eight 16-bit elements travel as one 16-byte vector.
constexpr int kVec = 8;

template <typename T>
__device__ __forceinline__ void unpack8(const uint4 &v, float (&f)[kVec]) {
    const typename Num<T>::T2 *p = reinterpret_cast<const typename Num<T>::T2 *>(&v);
#pragma unroll
    for (int i = 0; i < kVec / 2; ++i) {
        float2 t = Num<T>::to_f2(p[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&f)[kVec]) {
    uint4 v;
    typename Num<T>::T2 *p = reinterpret_cast<typename Num<T>::T2 *>(&v);
#pragma unroll
    for (int i = 0; i < kVec / 2; ++i) p[i] = Num<T>::from_f2(make_float2(f[2 * i], f[2 * i + 1]));
    return v;
}

// Loads of 16 bytes: `ld_ro` through the read-only path (inputs nobody writes during the
// kernel), `ld` plain (data the kernel also writes).
__device__ __forceinline__ uint4 ld_ro(const void *p) {
    return __ldg(reinterpret_cast<const uint4 *>(p));
}
__device__ __forceinline__ uint4 ld(const void *p) { return *reinterpret_cast<const uint4 *>(p); }

// A 16-byte load of streamed weights: read once, so kept out of L1.
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}
__device__ __forceinline__ void st(void *p, uint4 v) { *reinterpret_cast<uint4 *>(p) = v; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Whether environment variable `name` is set to exactly `value` (callers read their switch once
// and keep it in a static).
inline bool env_is(const char *name, const char *value) {
    const char *v = std::getenv(name);
    return v != nullptr && std::strcmp(v, value) == 0;
}

// The integer in environment variable `name` when it lies in [lo, hi], else 0 (unset or out
// of range; callers read their knob once and keep it in a static).
inline int env_int(const char *name, int lo, int hi) {
    const char *v = std::getenv(name);
    const int n = v ? std::atoi(v) : 0;
    return n >= lo && n <= hi ? n : 0;
}

inline bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Lets `kernel` take `bytes` of dynamic shared memory (past the 48 KiB default). Returns 0, or
// the cudaError_t of a refusal (cleared).
template <typename Kernel>
inline int allow_dynamic_smem(Kernel kernel, size_t bytes) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes));
    if (e == cudaSuccess) return PARADEC_K_OK;
    cudaGetLastError();
    return static_cast<int>(e);
}

// The status of the launch just made (0, or the cudaError_t it raised; clears it).
inline int launch_status() {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? PARADEC_K_OK : static_cast<int>(e);
}

inline bool valid_dtype(int dtype) { return dtype == PARADEC_F16 || dtype == PARADEC_BF16; }

// A value of the current device asked of the runtime once per device and kept in `known`
// (launchers consult these on every launch): ask(dev) gives it, or 0 where it cannot say;
// `fallback` then, or where there is no current device.
template <typename Ask>
inline int once_per_device(std::atomic<int> (&known)[64], int fallback, Ask ask) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        cudaGetLastError();
        return fallback;
    }
    const bool kept = dev >= 0 && dev < 64;
    int v = kept ? known[dev].load(std::memory_order_relaxed) : 0;
    if (v != 0) return v;
    v = ask(dev);
    if (v <= 0) {
        cudaGetLastError();
        return fallback;
    }
    if (kept) known[dev].store(v, std::memory_order_relaxed);
    return v;
}

// The current device's compute capability as major·10 + minor (90 for sm_90); 0 where it
// cannot say.
inline int current_device_cc() {
    static std::atomic<int> known[64];  // 0: not asked yet
    return once_per_device(known, 0, [](int dev) {
        int major = 0, minor = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
            return 0;
        return major * 10 + minor;
    });
}

// The current device's multiprocessor count; 1 where it cannot say.
inline int current_device_sms() {
    static std::atomic<int> known[64];  // 0: not asked yet
    return once_per_device(known, 1, [](int dev) {
        int sms = 0;
        return cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess
                   ? sms
                   : 0;
    });
}

#ifdef __CUDACC__
// Split-K bookkeeping, called by every thread of the block after it wrote its partials:
// whether this block is the last of `blocks` to arrive at `counter` (which it then zeroes again
// for the next user); every thread gets the answer, and the last block then sees every other
// block's partials.
__device__ __forceinline__ bool last_to_arrive(unsigned *counter, unsigned blocks) {
    __shared__ int last;
    // The block barrier orders every thread's partials before thread 0's fence, whose release
    // (cumulative) then publishes them before its arrival; the last block's fence acquires the
    // others' before the barrier hands them to its threads.
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
        const unsigned done = atomicAdd(counter, 1u);
        last = done == blocks - 1;
        if (last) {
            *counter = 0u;
            asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
        }
    }
    __syncthreads();
    return last;
}
#endif

// Calls f<__half>() or f<__nv_bfloat16>() by dtype code (checked by the caller).
template <typename F>
inline int dispatch_dtype(int dtype, F &&f) {
    if (dtype == PARADEC_F16) return f(__half{});
    return f(__nv_bfloat16{});
}

// Runs a launcher body; no C++ exception crosses the C boundary.
template <typename F>
inline int guarded(F &&body) noexcept {
    try {
        return body();
    } catch (...) {
        return PARADEC_K_INTERNAL;
    }
}

}  // namespace paradec
