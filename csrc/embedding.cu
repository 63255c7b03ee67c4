// Token embedding gather: out[t] = table[ids[t]], the CUDA twin of cpu::embedding::embedding.
// One block per token (per 128-vector slice of its row for few tokens), 16-byte vectors when hidden and the pointers allow. An id outside
// [0, vocab) gives a row of zeros: the kernel never reads outside the table (ids from the host
// should be checked there, where the bad one can be named).
#include <algorithm>
#include <climits>

#include "common.cuh"

namespace paradec {
namespace {

template <typename T, bool VEC, bool SIGNED>
__global__ void __launch_bounds__(128) embedding_kernel(const T *table, int64_t vocab, int hidden,
                                                        const void *ids, T *out) {
    const int64_t token = blockIdx.x;
    const int64_t id = SIGNED ? static_cast<int64_t>(static_cast<const int32_t *>(ids)[token])
                              : static_cast<int64_t>(static_cast<const uint32_t *>(ids)[token]);
    const bool ok = id >= 0 && id < vocab;
    const T *src = table + (ok ? id : 0) * hidden;
    T *dst = out + token * hidden;
    if (VEC) {
        for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < hidden / kVec;
             c += blockDim.x * gridDim.y)
            st(dst + c * kVec, ok ? ld_ro(src + c * kVec) : make_uint4(0, 0, 0, 0));
    } else {
        for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < hidden;
             c += blockDim.x * gridDim.y)
            dst[c] = ok ? src[c] : Num<T>::from_f(0.f);
    }
}

template <typename T>
int launch_t(const void *table, size_t vocab, size_t hidden, const void *ids, bool is_signed,
             size_t n_ids, void *out, cudaStream_t stream) {
    const bool vec = hidden % kVec == 0 && aligned16(table) && aligned16(out);
    const auto *tb = static_cast<const T *>(table);
    auto *o = static_cast<T *>(out);
    const auto v = static_cast<int64_t>(vocab);
    const int h = static_cast<int>(hidden);
    // With few tokens (decode), a row is split over blocks (grid.y) so that even one token's
    // row is copied by many threads at once; with many, one block copies a whole row.
    const int64_t per_row = vec ? static_cast<int64_t>(hidden / kVec) : static_cast<int64_t>(hidden);
    const unsigned split =
        n_ids >= 1024 ? 1u : static_cast<unsigned>(std::min<int64_t>(65535, (per_row + 127) / 128));
    const dim3 grid(static_cast<unsigned>(n_ids), split);
    if (vec && is_signed) embedding_kernel<T, true, true><<<grid, 128, 0, stream>>>(tb, v, h, ids, o);
    else if (vec) embedding_kernel<T, true, false><<<grid, 128, 0, stream>>>(tb, v, h, ids, o);
    else if (is_signed) embedding_kernel<T, false, true><<<grid, 128, 0, stream>>>(tb, v, h, ids, o);
    else embedding_kernel<T, false, false><<<grid, 128, 0, stream>>>(tb, v, h, ids, o);
    return launch_status();
}

}  // namespace
}  // namespace paradec

extern "C" int paradec_embedding(int dtype, const void *table, size_t vocab, size_t hidden,
                                 const void *ids, int id_type, size_t n_ids, void *out,
                                 paradec_stream_t stream) {
    return paradec::guarded([&]() -> int {
        if (!table || !ids || !out) return PARADEC_K_NULL_POINTER;
        if (id_type != PARADEC_IDS_U32 && id_type != PARADEC_IDS_I32) return PARADEC_K_BAD_ENUM;
        if (!paradec::valid_dtype(dtype)) return PARADEC_K_BAD_DTYPE;
        if (vocab == 0 || hidden == 0 || n_ids == 0) return PARADEC_K_ZERO_DIM;
        if (hidden > static_cast<size_t>(INT_MAX) || n_ids > static_cast<size_t>(INT_MAX) ||
            vocab > (size_t{1} << 40))
            return PARADEC_K_DIM_TOO_LARGE;
        const bool is_signed = id_type == PARADEC_IDS_I32;
        return paradec::dispatch_dtype(dtype, [&](auto tag) {
            return paradec::launch_t<decltype(tag)>(table, vocab, hidden, ids, is_signed, n_ids,
                                                    out, stream);
        });
    });
}
