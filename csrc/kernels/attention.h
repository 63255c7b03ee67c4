/* kernels/attention.h — QKV split, q/k norms and attention over the KV cache.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_ATTENTION_H
#define PARADEC_KERNELS_ATTENTION_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a fused query_key_value output is laid out (features of one token). */
enum paradec_qkv_layout {
    PARADEC_QKV_PER_HEAD = 0,      /* per head [q_h | k_h | v_h] (GPT-NeoX); heads == kv_heads */
    PARADEC_QKV_QUERIES_FIRST = 1, /* [all q heads | k heads | v heads] (Falcon-7B) */
    PARADEC_QKV_GROUPED = 2        /* per kv group [q heads of the group | k | v] (Falcon new) */
};

enum paradec_attention_limits {
    PARADEC_ATTN_MAX_HEAD_DIM = 256, /* attention: head_dim ≤ this and a multiple of 8 */
    PARADEC_HEAD_NORM_MAX_DIM = 1024
};

/* ---- QKV split ----------------------------------------------------------------------------------
 * fused: [tokens, (heads + 2·kv_heads)·head_dim] → q [tokens, heads·head_dim], k and v
 * [tokens, kv_heads·head_dim], following `layout`. heads is a multiple of kv_heads. */
int paradec_split_qkv(int dtype, int layout, const void *fused, size_t tokens, size_t heads,
                      size_t kv_heads, size_t head_dim, void *q, void *k, void *v,
                      paradec_stream_t stream);

/* ---- per-head norm ------------------------------------------------------------------------------
 * x: [tokens, heads, head_dim], normalized in place over each head's head_dim features (kind: a
 * paradec_norm_kind). weight and bias (each optional) hold one row per head ([heads, head_dim],
 * *_per_head = 1) or one row shared by all heads ([head_dim], *_per_head = 0).
 * head_dim ≤ PARADEC_HEAD_NORM_MAX_DIM. */
int paradec_head_norm(int dtype, int kind, void *x, size_t tokens, size_t heads, size_t head_dim,
                      const void *weight, int weight_per_head, const void *bias,
                      int bias_per_head, float eps, paradec_stream_t stream);

/* ---- attention over the KV cache ----------------------------------------------------------------
 * q: [batch, q_len, heads, head_dim]; cache_k, cache_v: [batch, capacity, kv_heads·head_dim];
 * out: [batch, q_len, heads, head_dim]. Query head h reads kv head h / (heads / kv_heads).
 * Sequence b's query t sits at cache slot p = past_len[b] + t (past_len: [batch] int64 on the
 * device) and sees slots j ≤ p, and with window > 0 only p − window < j. mask (optional, f32 on
 * the device, row stride mask_stride ≥ max_past + q_len) is added to the scores of sequence b at
 * mask[b·mask_stride + j]. A query that sees no key (all masked) outputs zeros. Softmax in f32.
 * max_past bounds every past_len[b] (the host planned the launch with it); the caller checks
 * max_past + q_len ≤ capacity before launching. Slots beyond that bound are never read (the
 * kernel clamps a larger device value to it).
 * head_dim: a multiple of 8, ≤ PARADEC_ATTN_MAX_HEAD_DIM; pointers 16-byte aligned.
 * scratch: device memory of at least paradec_attention_scratch_bytes(...) bytes (split-KV
 * partials; may be NULL when that is 0). Queries of up to 16 tokens take the split-KV decode
 * kernel (a deterministic combine, in fixed order); longer ones the tensor-core kernel. */
size_t paradec_attention_scratch_bytes(size_t batch, size_t q_len, size_t heads, size_t kv_heads,
                                       size_t head_dim, size_t max_past);
int paradec_attention(int dtype, const void *q, const void *cache_k, const void *cache_v,
                      void *out, size_t batch, size_t q_len, size_t heads, size_t kv_heads,
                      size_t head_dim, size_t capacity, const int64_t *past_len, size_t max_past,
                      size_t window, const float *mask, size_t mask_stride, float scale,
                      void *scratch, size_t scratch_bytes, paradec_stream_t stream);

/* ---- read-bandwidth probe (benchmarks) ---------------------------------------------------------
 * Reads `bytes` (a multiple of 16) at src with 16-byte loads and XORs them into one word per
 * block of sink (gridDim.x words, at most 4096): the read floor that decode attention is
 * measured against. Returns the number of sink words written through *blocks. */
int paradec_attn_read_probe(const void *src, size_t bytes, uint32_t *sink, unsigned *blocks,
                            paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_ATTENTION_H */
