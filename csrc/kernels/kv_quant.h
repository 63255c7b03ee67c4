/* kernels/kv_quant.h — the quantized and the paged KV cache: rotary fused with a (quantizing)
 * cache write, decode attention reading the pages directly, and a dequantizing gather (the
 * past of a prefill over such a cache). Included by paradec_kernels.h. Formats:
 * docs/formats.md. */
#ifndef PARADEC_KERNELS_KV_QUANT_H
#define PARADEC_KERNELS_KV_QUANT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How one of K or V is stored. A token's row holds kv_heads·head_dim values. */
enum paradec_kv_format {
    PARADEC_KV_NATIVE = 0, /* the call's dtype (a paged cache of f16/bf16) */
    PARADEC_KV_E4M3 = 1,   /* 1 byte per value: e4m3(x / head_scale[h]), nearest, saturating */
    PARADEC_KV_E5M2 = 2,   /* 1 byte per value: the upper byte of fp16(x); f16 dtype only */
    PARADEC_KV_Q8 = 3,     /* 1 byte per value; runs of 32 Hadamard-rotated, one fp16 scale */
    PARADEC_KV_Q4 = 4      /* 1/2 byte per value (even element low nibble); as Q8 */
};

/* One layer's K (or V) pages: codes [rows, row bytes] (row bytes: kv_dim·2 for NATIVE, kv_dim
 * for E4M3/E5M2/Q8, kv_dim/2 for Q4), scales [rows, kv_dim/32] fp16 (Q8/Q4, else NULL),
 * head_scale [kv_heads] f32 on the device (E4M3, else NULL). codes 16-byte aligned. rows is
 * batch·capacity for a contiguous cache (sequence b's position j in row b·capacity + j), or
 * num_pages·page_size for a paged one (see paradec_kv_block_table). */
typedef struct paradec_kv_pages {
    int format;
    void *codes;
    void *scales;
    const float *head_scale;
} paradec_kv_pages;

/* Where positions live: table == NULL: a contiguous cache of `capacity` positions per
 * sequence. Otherwise a block table [batch, max_pages] int32 on the device (vLLM-style: the
 * caller owns and fills it): sequence b's position j is in page table[b·max_pages + j /
 * page_size], row j % page_size of that page (row table[…]·page_size + j % page_size of the
 * pages); `capacity` is then max_pages·page_size. The device cannot check the table: the
 * caller checks, before launching, every page a call touches (in [0, num_pages)) and every
 * length against the sequence's pages. */
typedef struct paradec_kv_block_table {
    const int32_t *table;
    size_t max_pages;
    size_t page_size;
} paradec_kv_block_table;

/* ---- rotary embedding + quantizing KV-cache write -----------------------------------------------
 * As paradec_rotary_cache_write (kernels/rope.h), but k (rotated) and v are written into the
 * pages in their formats, sequence b's token t at slot past_len[b] + t. head_dim a multiple of
 * 32 for Q8/Q4 (runs never cross heads), of 8 otherwise. The caller checks every slot against
 * the capacity before launching (a device slot outside [0, capacity) is not written). */
int paradec_rotary_cache_write_quant(int dtype, void *q, void *k, const void *v, size_t batch,
                                     size_t q_len, size_t heads, size_t kv_heads,
                                     size_t head_dim, const int64_t *positions, int style,
                                     size_t rot_dim, const float *inv_freq, float attn_factor,
                                     const int64_t *past_len, size_t capacity,
                                     paradec_kv_block_table block_table,
                                     paradec_kv_pages k_pages, paradec_kv_pages v_pages,
                                     paradec_stream_t stream);

/* ---- decode attention over quantized pages ------------------------------------------------------
 * As paradec_attention (kernels/attention.h) for q_len ≤ 16, reading K and V from the pages
 * (codes dequantized in registers; the Hadamard formats are read in the rotated basis: q is
 * rotated once, the output rotated back once). scratch: at least
 * paradec_attention_quant_scratch_bytes(...) bytes (split-KV partials; NULL when 0).
 * max_past bounds every past_len[b] and plans the launch's grid; the keys of every sequence
 * are cut as a launch planned for the batch's longest past length (read from past_len on the
 * device) cuts them, so a launch planned for a larger bound — a captured graph replayed at
 * shorter lengths — computes what the launch at the actual lengths computes, to the bit. */
size_t paradec_attention_quant_scratch_bytes(size_t batch, size_t q_len, size_t heads,
                                             size_t kv_heads, size_t head_dim, size_t max_past);
int paradec_attention_quant(int dtype, const void *q, paradec_kv_block_table block_table,
                            paradec_kv_pages k_pages, paradec_kv_pages v_pages, void *out,
                            size_t batch, size_t q_len,
                            size_t heads, size_t kv_heads, size_t head_dim, size_t capacity,
                            const int64_t *past_len, size_t max_past, size_t window,
                            const float *mask, size_t mask_stride, float scale, void *scratch,
                            size_t scratch_bytes, paradec_stream_t stream);

/* ---- dequantizing gather ------------------------------------------------------------------------
 * out [batch, slots, kv_heads·head_dim] (dtype) = the first `slots` positions of each
 * sequence, dequantized (slots ≤ capacity). seq_len ([batch] int64 on the device, or NULL:
 * `slots` each): sequence b's positions from seq_len[b] on are not read (a paged sequence owns
 * no page there) and come out as zeros. */
int paradec_kv_dequantize(int dtype, paradec_kv_block_table block_table, paradec_kv_pages pages,
                          size_t batch, size_t capacity, size_t kv_heads, size_t head_dim,
                          size_t slots, const int64_t *seq_len, void *out,
                          paradec_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PARADEC_KERNELS_KV_QUANT_H */
