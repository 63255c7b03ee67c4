// The activations of HF's MLPs in f32, shared by the elementwise kernels
// (csrc/activation.cu) and the quantized linear's epilogue (an activation applied to
// x·Wᵀ + bias as it is stored).
#pragma once

#include "common.cuh"

namespace paradec {

// erf to about 2e-7 absolute (Abramowitz & Stegun 7.1.26, with the fast exp and reciprocal):
// far below the rounding of an fp16/bf16 result, and about half the instructions of erff —
// which matters, as exact-GELU with erff is compute-bound at full memory bandwidth.
__device__ __forceinline__ float erf_fast(float x) {
    const float ax = fabsf(x);
    const float t = __fdividef(1.f, 1.f + 0.3275911f * ax);
    const float p =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    return copysignf(1.f - p * __expf(-ax * ax), x);
}

// tanh to about 1e-7 absolute as 1 − 2/(1 + e^{2y}) (|y| clamped where tanh is ±1 in f32);
// GELU adds it to 1, so the absolute error is what counts.
__device__ __forceinline__ float tanh_fast(float y) {
    y = fminf(fmaxf(y, -15.f), 15.f);
    return 1.f - __fdividef(2.f, 1.f + __expf(2.f * y));
}

template <int ACT>
__device__ __forceinline__ float act(float x) {
    if (ACT == PARADEC_GELU_ERF) return 0.5f * x * (1.f + erf_fast(x * 0.70710678118654752f));
    if (ACT == PARADEC_GELU_NEW)
        return 0.5f * x * (1.f + tanh_fast(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    if (ACT == PARADEC_GELU_FAST)
        return 0.5f * x * (1.f + tanh_fast(x * 0.7978845608f * (1.f + 0.044715f * x * x)));
    if (ACT == PARADEC_SILU) return x / (1.f + expf(-x));
    return fmaxf(x, 0.f);  // PARADEC_RELU
}

// act(x) for a PARADEC_GELU_ERF … PARADEC_RELU code known only at run time.
__device__ __forceinline__ float act_by_code(int code, float x) {
    switch (code) {
        case PARADEC_GELU_ERF: return act<PARADEC_GELU_ERF>(x);
        case PARADEC_GELU_NEW: return act<PARADEC_GELU_NEW>(x);
        case PARADEC_GELU_FAST: return act<PARADEC_GELU_FAST>(x);
        case PARADEC_SILU: return act<PARADEC_SILU>(x);
        default: return act<PARADEC_RELU>(x);
    }
}

}  // namespace paradec
