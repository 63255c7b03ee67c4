// paradec_kstatus_str: the text of a launcher status.
#include "common.cuh"

extern "C" const char *paradec_kstatus_str(int status) {
    switch (status) {
        case PARADEC_K_OK: return "success";
        case PARADEC_K_NULL_POINTER: return "a required pointer is NULL";
        case PARADEC_K_ZERO_DIM: return "a size that must be positive is 0";
        case PARADEC_K_DIM_TOO_LARGE: return "a size exceeds the kernel's limit";
        case PARADEC_K_BAD_DTYPE: return "unsupported dtype (fp16 and bf16 only)";
        case PARADEC_K_BAD_ENUM: return "unknown norm kind, activation, rotary style or id type";
        case PARADEC_K_BAD_SHAPE: return "sizes inconsistent with each other";
        case PARADEC_K_INTERNAL: return "internal error (a C++ exception was caught)";
        default: break;
    }
    if (status > 0) return cudaGetErrorName(static_cast<cudaError_t>(status));
    return "unknown status";
}
