/* kernels/rope.h — rotary embedding fused with the KV-cache write.
 * Included by paradec_kernels.h. */
#ifndef PARADEC_KERNELS_ROPE_H
#define PARADEC_KERNELS_ROPE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

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
 * head_dim ≤ PARADEC_ROPE_MAX_HEAD_DIM, (heads + 2·kv_heads)·head_dim ≤ INT_MAX; rot_dim even,
 * 0 < rot_dim ≤ head_dim. */
int paradec_rotary_cache_write(int dtype, void *q, void *k, const void *v, size_t batch,
                               size_t q_len, size_t heads, size_t kv_heads, size_t head_dim,
                               const int64_t *positions, int style, size_t rot_dim,
                               const float *inv_freq, float attn_factor, const int64_t *past_len,
                               size_t capacity, void *cache_k, void *cache_v,
                               paradec_stream_t stream);

/* paradec_split_qkv followed by paradec_rotary_cache_write, in one launch: fused
 * [batch·q_len, (heads + 2·kv_heads)·head_dim] holds each token's q, k and v heads in `layout`
 * (a paradec_qkv_layout: per head, queries first or per KV group; heads == kv_heads per head);
 * q, k and v (outputs, laid out as above, none overlapping fused) receive what the split would
 * write, q and k rotated, and with cache_k != NULL k (rotated) and v are written into the cache
 * as above — the same arithmetic, rounded the same way. With fused == NULL: exactly
 * paradec_rotary_cache_write (q, k and v in place, v only read; layout ignored). The other
 * arguments and limits are paradec_rotary_cache_write's. */
int paradec_split_rotary_cache_write(int dtype, const void *fused, int layout, void *q, void *k,
                                     void *v, size_t batch, size_t q_len, size_t heads,
                                     size_t kv_heads, size_t head_dim, const int64_t *positions,
                                     int style, size_t rot_dim, const float *inv_freq,
                                     float attn_factor, const int64_t *past_len, size_t capacity,
                                     void *cache_k, void *cache_v, paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_ROPE_H */
