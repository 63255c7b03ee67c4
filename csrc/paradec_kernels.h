/*
 * paradec_kernels.h — the plain-C launcher API of paradec's CUDA kernels.
 *
 * Every launcher:
 *   - takes device pointers, sizes and the caller's stream (NULL = the legacy default stream;
 *     paradec_stream_t is the same type as cudaStream_t), and launches on the current device;
 *   - checks its arguments before launching and returns a negative PARADEC_K_* code for a bad
 *     one (these numbers never change meaning);
 *   - returns a positive cudaError_t when the launch itself fails (from cudaGetLastError, which
 *     this also clears), 0 on success;
 *   - never throws, never synchronizes, never allocates.
 * Float tensors are fp16 or bf16 (PARADEC_F16 / PARADEC_BF16), all of one dtype per call;
 * arithmetic is in f32. Tensors are dense and row-major. An output may alias its input only
 * where a launcher says so.
 *
 * Rust reads this header through bindgen (build.rs): change it and both sides follow.
 */
#ifndef PARADEC_KERNELS_H
#define PARADEC_KERNELS_H

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

/* ---- norms ------------------------------------------------------------------------------------
 * x, out: [rows, cols]; weight, bias: [cols] or NULL (no scale / no shift).
 * LayerNorm: (x − mean)/√(var + eps)·w + b;  RMSNorm: x/√(mean(x²) + eps)·w (+ b).
 * cols ≤ PARADEC_NORM_MAX_COLS. out may alias x. */
int paradec_norm(int kind, int dtype, const void *x, const void *weight, const void *bias,
                 void *out, size_t rows, size_t cols, float eps, paradec_stream_t stream);

/* x += residual (rounded to the dtype and written back to x); out = norm(x). */
int paradec_add_norm(int kind, int dtype, void *x, const void *residual, const void *weight,
                     const void *bias, void *out, size_t rows, size_t cols, float eps,
                     paradec_stream_t stream);

/* Two norms of the same rows from one read of x: out_a with (weight_a, bias_a), out_b with
 * (weight_b, bias_b). */
int paradec_norm2(int kind, int dtype, const void *x, const void *weight_a, const void *bias_a,
                  const void *weight_b, const void *bias_b, void *out_a, void *out_b, size_t rows,
                  size_t cols, float eps, paradec_stream_t stream);

/* The general form of the three above: residual (NULL: none) is added to x first, and out_b
 * (NULL: none) receives a second norm with (weight_b, bias_b). */
int paradec_norm_fused(int kind, int dtype, void *x, const void *residual, const void *weight_a,
                       const void *bias_a, void *out_a, const void *weight_b, const void *bias_b,
                       void *out_b, size_t rows, size_t cols, float eps, paradec_stream_t stream);

/* ---- rotary embedding + KV-cache write ----------------------------------------------------------
 * q: [batch, q_len, heads, head_dim], k and v: [batch, q_len, kv_heads, head_dim].
 * With inv_freq != NULL, rotates the first rot_dim features of every head of q and k in place,
 * token i at angle float(positions[i])·inv_freq[j] (inv_freq: rot_dim/2 f32 values), cos and sin
 * scaled by attn_factor; positions: [batch·q_len] int64. With inv_freq == NULL nothing is rotated
 * (positions, style, rot_dim ignored).
 * With cache_k != NULL, writes k (rotated) and v into cache_k / cache_v, laid out
 * [batch, capacity, kv_heads·head_dim], sequence b's token t at slot past_len[b] + t
 * (past_len: [batch] int64, on the device). A slot outside [0, capacity) is not written: the
 * caller checks capacity (the device values cannot be checked here).
 * head_dim ≤ PARADEC_ROPE_MAX_HEAD_DIM; rot_dim even, 0 < rot_dim ≤ head_dim. */
int paradec_rotary_cache_write(int dtype, void *q, void *k, const void *v, size_t batch,
                               size_t q_len, size_t heads, size_t kv_heads, size_t head_dim,
                               const int64_t *positions, int style, size_t rot_dim,
                               const float *inv_freq, float attn_factor, const int64_t *past_len,
                               size_t capacity, void *cache_k, void *cache_v,
                               paradec_stream_t stream);

/* ---- elementwise -------------------------------------------------------------------------------- */
/* x = act(x) over n elements. */
int paradec_activate(int act, int dtype, void *x, size_t n, paradec_stream_t stream);
/* out = act(gate)·up over n elements; out may alias gate or up. */
int paradec_act_mul(int act, int dtype, const void *gate, const void *up, void *out, size_t n,
                    paradec_stream_t stream);
/* x += y over n elements. */
int paradec_add_inplace(int dtype, void *x, const void *y, size_t n, paradec_stream_t stream);

/* ---- embedding -----------------------------------------------------------------------------------
 * out[t] = table[ids[t]]; table: [vocab, hidden], ids: n_ids device values of id_type, out:
 * [n_ids, hidden]. An id outside [0, vocab) yields a row of zeros (never a read out of bounds);
 * callers whose ids come from the host should check them there and report the bad one. */
int paradec_embedding(int dtype, const void *table, size_t vocab, size_t hidden, const void *ids,
                      int id_type, size_t n_ids, void *out, paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_H */
