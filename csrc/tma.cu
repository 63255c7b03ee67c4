// Tensor maps for the bulk-copy engine (tma.cuh): encoded by the driver's cuTensorMapEncodeTiled,
// reached through the runtime's entry-point lookup so that the library links no driver library.
#include "tma.cuh"

namespace paradec {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                 const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                 const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's encoder (the CUDA 12.0 signature), looked up once; null where the driver has none.
EncodeTiled encode_tiled() {
    static const EncodeTiled fn = [] {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                             &found) != cudaSuccess ||
            found != cudaDriverEntryPointSuccess) {
            cudaGetLastError();
            return static_cast<EncodeTiled>(nullptr);
        }
        return reinterpret_cast<EncodeTiled>(p);
    }();
    return fn;
}

// Encodes a tensor map of `rank` dimensions (innermost first; byte strides of the outer ones)
// whose boxes land in shared memory in the 128-byte swizzle, rows past the tensor read as zeros.
cudaError_t encode_swizzled(CUtensorMap *map, bool bf16, const void *base, cuuint32_t rank,
                            const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box) {
    const EncodeTiled encode = encode_tiled();
    if (!encode) return cudaErrorNotSupported;
    const cuuint32_t steps[3] = {1, 1, 1};
    const CUresult r = encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                              rank, const_cast<void *>(base), dims, strides, box, steps,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace

cudaError_t make_swizzled_tile_map(CUtensorMap *map, bool bf16, const void *base, uint64_t rows,
                                   uint64_t cols, uint64_t stride, uint32_t box_rows,
                                   uint32_t box_cols) {
    if ((reinterpret_cast<uintptr_t>(base) & 15u) != 0 || (stride * 2) % 16 != 0 ||
        box_cols * 2 != 128 || box_rows == 0 || box_rows > 256)
        return cudaErrorInvalidValue;
    const cuuint64_t dims[2] = {cols, rows};
    const cuuint64_t strides[1] = {stride * 2};  // bytes between rows
    const cuuint32_t box[2] = {box_cols, box_rows};
    return encode_swizzled(map, bf16, base, 2, dims, strides, box);
}

cudaError_t make_head_tile_map(CUtensorMap *map, bool bf16, const void *base, uint64_t rows,
                               uint64_t heads, uint64_t head_dim, uint32_t box_rows) {
    if ((reinterpret_cast<uintptr_t>(base) & 15u) != 0 || (head_dim * 2) % 16 != 0 ||
        head_dim < 64 || box_rows == 0 || box_rows > 256 || rows == 0 || heads == 0)
        return cudaErrorInvalidValue;
    const cuuint64_t dims[3] = {head_dim, heads, rows};
    const cuuint64_t strides[2] = {head_dim * 2, heads * head_dim * 2};  // bytes
    const cuuint32_t box[3] = {64, 1, box_rows};
    return encode_swizzled(map, bf16, base, 3, dims, strides, box);
}

}  // namespace paradec
