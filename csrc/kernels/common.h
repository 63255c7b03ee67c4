/* kernels/common.h — the stream type, status codes, dtype and enum codes, limits shared by every launcher.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_COMMON_H
#define PARADEC_KERNELS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A CUDA stream; the same type as cudaStream_t. */
typedef struct CUstream_st *paradec_stream_t;

/* Launcher status: 0 success, > 0 a cudaError_t from the launch, < 0 one of these. */
enum paradec_kstatus {
    PARADEC_K_OK = 0,
    PARADEC_K_NULL_POINTER = -1,  /* a required pointer is NULL */
    PARADEC_K_ZERO_DIM = -2,      /* a size that must be positive is 0 */
    PARADEC_K_DIM_TOO_LARGE = -3, /* a size exceeds the kernel's limit */
    PARADEC_K_BAD_DTYPE = -4,     /* a dtype code that is unknown or not supported here */
    PARADEC_K_BAD_ENUM = -5,      /* an unknown norm kind, activation, rotary style or id type */
    PARADEC_K_BAD_SHAPE = -6,     /* sizes inconsistent with each other (e.g. odd rot_dim) */
    PARADEC_K_INTERNAL = -7       /* an unexpected C++ exception, caught at the boundary */
};

enum paradec_dtype { PARADEC_F16 = 0, PARADEC_BF16 = 1 };
enum paradec_norm_kind { PARADEC_LAYER_NORM = 0, PARADEC_RMS_NORM = 1 };
enum paradec_activation {
    PARADEC_GELU_ERF = 0,  /* 0.5·x·(1 + erf(x/√2))                       HF "gelu" */
    PARADEC_GELU_NEW = 1,  /* 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   HF "gelu_new" */
    PARADEC_GELU_FAST = 2, /* 0.5·x·(1 + tanh(0.7978845608·x·(1 + 0.044715·x²))) */
    PARADEC_SILU = 3,      /* x·σ(x) */
    PARADEC_RELU = 4
};
enum paradec_rope_style {
    PARADEC_ROPE_INTERLEAVED = 0, /* pairs (2j, 2j+1): GPT-J, Cohere */
    PARADEC_ROPE_HALF = 1         /* pairs (j, j + rot_dim/2): NeoX, Phi, Falcon */
};
enum paradec_id_type { PARADEC_IDS_U32 = 0, PARADEC_IDS_I32 = 1 };

/* Limits the launchers check. */
enum paradec_limits {
    PARADEC_NORM_MAX_COLS = 32768,
    PARADEC_ROPE_MAX_HEAD_DIM = 1024
};

/* A short English description of a status (never NULL; for > 0, the CUDA error's name). */
const char *paradec_kstatus_str(int status);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_COMMON_H */
