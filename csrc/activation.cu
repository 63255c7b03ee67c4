// Elementwise kernels: activations in place, the gated act(gate)·up, and the residual add — the
// CUDA twins of cpu::activation::{activate, act_mul, add_inplace}. 16-byte vectors over the
// bulk when every pointer is aligned, a scalar tail (or scalar throughout when not), f32 math
// (HF's definitions; GELU's erf and tanh through cheaper forms accurate to ~2e-7, see below).
#include "activation.cuh"
#include "common.cuh"

namespace paradec {
namespace {

enum Op { kActivate = 0, kActMul = 1, kAdd = 2 };

template <int OP, int ACT>
__device__ __forceinline__ float apply(float a, float b) {
    if (OP == kActivate) return act<ACT>(a);
    if (OP == kActMul) return act<ACT>(a) * b;
    return a + b;
}

// out = f(a, b) over n elements; out may alias a or b (each element is read, then written, by
// one thread), so plain loads, not the read-only path.
template <typename T, int OP, int ACT>
__global__ void __launch_bounds__(256) elementwise_kernel(T *out, const T *a, const T *b,
                                                          int64_t n, bool vec) {
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    int64_t done = 0;
    if (vec) {
        const int64_t nv = n / kVec;
        for (int64_t i = tid; i < nv; i += stride) {
            float fa[kVec], fb[kVec];
            unpack8<T>(ld(a + i * kVec), fa);
            if (OP != kActivate) unpack8<T>(ld(b + i * kVec), fb);
#pragma unroll
            for (int e = 0; e < kVec; ++e) fa[e] = apply<OP, ACT>(fa[e], OP != kActivate ? fb[e] : 0.f);
            st(out + i * kVec, pack8<T>(fa));
        }
        done = nv * kVec;
    }
    for (int64_t i = done + tid; i < n; i += stride) {
        const float fb = OP != kActivate ? Num<T>::to_f(b[i]) : 0.f;
        out[i] = Num<T>::from_f(apply<OP, ACT>(Num<T>::to_f(a[i]), fb));
    }
}

template <typename T, int OP, int ACT>
int launch_t(void *out, const void *a, const void *b, size_t n, cudaStream_t stream) {
    const bool vec = aligned16(out) && aligned16(a) && (OP == kActivate || aligned16(b));
    const int64_t work = vec ? static_cast<int64_t>(n / kVec) + kVec : static_cast<int64_t>(n);
    int64_t blocks = (work + 255) / 256;
    if (blocks > (1 << 20)) blocks = 1 << 20;  // grid-stride beyond this
    elementwise_kernel<T, OP, ACT><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        static_cast<T *>(out), static_cast<const T *>(a), static_cast<const T *>(b),
        static_cast<int64_t>(n), vec);
    return launch_status();
}

template <int OP>
int launch_op(int act_code, int dtype, void *out, const void *a, const void *b, size_t n,
              cudaStream_t stream) {
    return dispatch_dtype(dtype, [&](auto tag) {
        using T = decltype(tag);
        switch (act_code) {
            case PARADEC_GELU_ERF: return launch_t<T, OP, PARADEC_GELU_ERF>(out, a, b, n, stream);
            case PARADEC_GELU_NEW: return launch_t<T, OP, PARADEC_GELU_NEW>(out, a, b, n, stream);
            case PARADEC_GELU_FAST: return launch_t<T, OP, PARADEC_GELU_FAST>(out, a, b, n, stream);
            case PARADEC_SILU: return launch_t<T, OP, PARADEC_SILU>(out, a, b, n, stream);
            default: return launch_t<T, OP, PARADEC_RELU>(out, a, b, n, stream);
        }
    });
}

bool valid_act(int act) { return act >= PARADEC_GELU_ERF && act <= PARADEC_RELU; }

constexpr size_t kMaxElems = size_t{1} << 40;

}  // namespace
}  // namespace paradec

extern "C" int paradec_activate(int act, int dtype, void *x, size_t n, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!x) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_act(act)) return PARADEC_K_BAD_ENUM;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (n == 0) return PARADEC_K_ZERO_DIM;
        if (n > paradec::kMaxElems) return PARADEC_K_DIM_TOO_LARGE;
        return paradec::launch_op<paradec::kActivate>(act, dtype, x, x, nullptr, n, stream);
    });
}

extern "C" int paradec_act_mul(int act, int dtype, const void *gate, const void *up, void *out,
                               size_t n, paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!gate || !up || !out) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_act(act)) return PARADEC_K_BAD_ENUM;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (n == 0) return PARADEC_K_ZERO_DIM;
        if (n > paradec::kMaxElems) return PARADEC_K_DIM_TOO_LARGE;
        return paradec::launch_op<paradec::kActMul>(act, dtype, out, gate, up, n, stream);
    });
}

extern "C" int paradec_add_inplace(int dtype, void *x, const void *y, size_t n,
                                   paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!x || !y) return PARADEC_K_NULL_POINTER;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (n == 0) return PARADEC_K_ZERO_DIM;
        if (n > paradec::kMaxElems) return PARADEC_K_DIM_TOO_LARGE;
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_t<decltype(tag), paradec::kAdd, 0>(x, x, y, n, stream);
        });
    });
}
