/*
 * kernels.c — the kernel level on host pointers: every paradec_op_* on arrays this program
 * owns (used in place, never copied), checked against values computed here by hand, and the
 * KV cache modes and the paged cache (Q8 and native pages, contiguous and through a block
 * table) against the native contiguous cache. Also shows that a DLPack DLTensor is passed as
 * it is (its definition is transcribed below; an engine includes dlpack.h instead).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* DLPack's DLTensor, as dlpack.h defines it. */
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;

_Static_assert(sizeof(DLTensor) == sizeof(paradec_tensor), "DLTensor size");
_Static_assert(offsetof(DLTensor, data) == offsetof(paradec_tensor, data), "data");
_Static_assert(offsetof(DLTensor, device) == offsetof(paradec_tensor, device), "device");
_Static_assert(offsetof(DLTensor, ndim) == offsetof(paradec_tensor, ndim), "ndim");
_Static_assert(offsetof(DLTensor, dtype) == offsetof(paradec_tensor, dtype), "dtype");
_Static_assert(offsetof(DLTensor, shape) == offsetof(paradec_tensor, shape), "shape");
_Static_assert(offsetof(DLTensor, strides) == offsetof(paradec_tensor, strides), "strides");
_Static_assert(offsetof(DLTensor, byte_offset) == offsetof(paradec_tensor, byte_offset),
               "byte_offset");

static int failures = 0;

static void expect_close(const char *what, const float *got, const float *want, size_t n,
                         float tol) {
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(got[i] - want[i]) <= tol)) {
            printf("FAIL %s[%zu]: got %g, want %g\n", what, i, got[i], want[i]);
            failures++;
            return;
        }
    }
    printf("ok   %s\n", what);
}

/* ---- KV cache modes and the paged cache ----
 * batch 2, 2 query heads over 1 KV head of 32 features: a prefill of 3 tokens, then one more
 * per sequence, written with rotary into one of these caches, then the second step's
 * attention. The native contiguous cache (paradec_op_rotary_cache_write_ws, _attention) is the
 * reference. */
enum { KB = 2, KH = 2, KD = 32, KCAP = 8, KPS = 4, KNP = 5 };
enum { NATIVE_FLAT, NATIVE_FLAT_PAGES, Q8_FLAT, Q8_PAGED, NATIVE_PAGED };

static float kv_value(int i, int salt) { return sinf(0.37f * (float)i + 1.3f * (float)salt); }

static void kv_run(int variant, float *out /* [KB, 1, KH, KD] */) {
    /* Contiguous caches [KB, KCAP, 1, KD] and pools of KNP pages [KNP, KPS, 1, KD]. */
    static float nk[KB * KCAP * KD], nv[KB * KCAP * KD], pk[KNP * KPS * KD], pv[KNP * KPS * KD];
    static uint8_t qk[KB * KCAP * KD], qv[KB * KCAP * KD], pqk[KNP * KPS * KD],
        pqv[KNP * KPS * KD];
    static uint16_t qks[KB * KCAP], qvs[KB * KCAP], pqks[KNP * KPS], pqvs[KNP * KPS];
    memset(nk, 0, sizeof nk);
    memset(nv, 0, sizeof nv);
    memset(pk, 0, sizeof pk);
    memset(pv, 0, sizeof pv);
    memset(qk, 0, sizeof qk);
    memset(qv, 0, sizeof qv);
    memset(pqk, 0, sizeof pqk);
    memset(pqv, 0, sizeof pqv);
    memset(qks, 0, sizeof qks);
    memset(qvs, 0, sizeof qvs);
    memset(pqks, 0, sizeof pqks);
    memset(pqvs, 0, sizeof pqvs);
    int64_t flat_s[4] = {KB, KCAP, 1, KD}, flat_ss[4] = {KB, KCAP, 1, KD / 32};
    int64_t pool_s[4] = {KNP, KPS, 1, KD}, pool_ss[4] = {KNP, KPS, 1, KD / 32};
    paradec_tensor t_nk = pd_host(nk, PD_F32, 4, flat_s), t_nv = pd_host(nv, PD_F32, 4, flat_s),
                   t_pk = pd_host(pk, PD_F32, 4, pool_s), t_pv = pd_host(pv, PD_F32, 4, pool_s),
                   t_qk = pd_host(qk, PD_U8, 4, flat_s), t_qv = pd_host(qv, PD_U8, 4, flat_s),
                   t_qks = pd_host(qks, PD_F16, 4, flat_ss),
                   t_qvs = pd_host(qvs, PD_F16, 4, flat_ss),
                   t_pqk = pd_host(pqk, PD_U8, 4, pool_s), t_pqv = pd_host(pqv, PD_U8, 4, pool_s),
                   t_pqks = pd_host(pqks, PD_F16, 4, pool_ss),
                   t_pqvs = pd_host(pqvs, PD_F16, 4, pool_ss);
    paradec_cache_pages native_flat = {PARADEC_CACHE_MODE_NATIVE, &t_nk, NULL, NULL, &t_nv, NULL,
                                       NULL};
    paradec_cache_pages native_pool = {PARADEC_CACHE_MODE_NATIVE, &t_pk, NULL, NULL, &t_pv, NULL,
                                       NULL};
    paradec_cache_pages q8_flat = {PARADEC_CACHE_MODE_Q8, &t_qk, &t_qks, NULL, &t_qv, &t_qvs,
                                   NULL};
    paradec_cache_pages q8_pool = {PARADEC_CACHE_MODE_Q8, &t_pqk, &t_pqks, NULL, &t_pqv, &t_pqvs,
                                   NULL};
    /* The block table: sequence 0 owns pages 3 and 0, sequence 1 page 4 (4 positions each
     * suffice; entries past a sequence's pages are never read). */
    int32_t page_ids[KB * 2] = {3, 0, 4, -1};
    int64_t page_count[KB] = {2, 1}, ids_s[2] = {KB, 2}, cnt_s[1] = {KB};
    paradec_tensor t_ids = pd_host(page_ids, PD_I32, 2, ids_s),
                   t_cnt = pd_host(page_count, PD_I64, 1, cnt_s);
    paradec_block_table table = {&t_ids, &t_cnt};

    float inv_freq[8];
    for (int j = 0; j < 8; j++) inv_freq[j] = powf(10000.0f, -(float)j / 8.0f);
    int64_t fs[1] = {8};
    paradec_tensor t_freq = pd_host(inv_freq, PD_F32, 1, fs);
    paradec_rotary rot = {PARADEC_ROPE_STYLE_HALF, 16, &t_freq, 1.0f};
    for (int step = 0; step < 2; step++) {
        const int L = step == 0 ? 3 : 1;
        float q[KB * 3 * KH * KD], k[KB * 3 * KD], v[KB * 3 * KD];
        for (int i = 0; i < KB * L * KH * KD; i++) q[i] = kv_value(i, 1 + step);
        for (int i = 0; i < KB * L * KD; i++) k[i] = 2 * kv_value(i, 3 + step);
        for (int i = 0; i < KB * L * KD; i++) v[i] = kv_value(i, 5 + step);
        int64_t past[KB] = {step ? 3 : 0, step ? 3 : 0}, pos[KB * 3];
        for (int b = 0; b < KB; b++)
            for (int t = 0; t < L; t++) pos[b * L + t] = past[b] + t;
        int64_t qs[4] = {KB, L, KH, KD}, ks[4] = {KB, L, 1, KD}, ps[1] = {KB * L}, bs[1] = {KB};
        paradec_tensor tq = pd_host(q, PD_F32, 4, qs), tk = pd_host(k, PD_F32, 4, ks),
                       tv = pd_host(v, PD_F32, 4, ks), tpos = pd_host(pos, PD_I64, 1, ps),
                       tpast = pd_host(past, PD_I64, 1, bs);
        switch (variant) {
        case NATIVE_FLAT:
            CHECK(paradec_op_rotary_cache_write_ws(NULL, NULL, &tq, &tk, &tv, &tpos, &rot, &tpast,
                                                   &t_nk, &t_nv));
            break;
        case NATIVE_FLAT_PAGES: /* the same cache as pages of the native mode */
            CHECK(paradec_op_rotary_cache_write_quant(NULL, &tq, &tk, &tv, &tpos, &rot, &tpast,
                                                      &native_flat));
            break;
        case Q8_FLAT:
            if (step == 0)
                CHECK(paradec_op_rotary_cache_write_quant(NULL, &tq, &tk, &tv, &tpos, &rot,
                                                          &tpast, &q8_flat));
            else
                CHECK(paradec_op_rotary_cache_write_quant_ws(NULL, NULL, &tq, &tk, &tv, &tpos,
                                                             &rot, &tpast, &q8_flat));
            break;
        case Q8_PAGED:
            if (step == 0)
                CHECK(paradec_op_paged_rotary_cache_write(NULL, &tq, &tk, &tv, &tpos, &rot,
                                                          &tpast, &table, &q8_pool));
            else
                CHECK(paradec_op_paged_rotary_cache_write_ws(NULL, NULL, &tq, &tk, &tv, &tpos,
                                                             &rot, &tpast, &table, &q8_pool));
            break;
        default:
            CHECK(paradec_op_paged_rotary_cache_write_ws(NULL, NULL, &tq, &tk, &tv, &tpos, &rot,
                                                         &tpast, &table, &native_pool));
        }
        if (step == 0) continue;
        /* The second step's rotated queries attend over 4 positions of each sequence. */
        paradec_tensor to = pd_host(out, PD_F32, 4, qs);
        const float scale = 1.0f / sqrtf((float)KD);
        switch (variant) {
        case NATIVE_FLAT:
            CHECK(paradec_op_attention(NULL, &tq, &t_nk, &t_nv, &tpast, NULL, 0, scale, &to));
            break;
        case NATIVE_FLAT_PAGES:
            CHECK(paradec_op_attention_quant_ws(NULL, NULL, &tq, &native_flat, &tpast, NULL, 0,
                                                scale, &to));
            break;
        case Q8_FLAT:
            CHECK(paradec_op_attention_quant(NULL, &tq, &q8_flat, &tpast, NULL, 0, scale, &to));
            break;
        case Q8_PAGED:
            CHECK(paradec_op_paged_attention(NULL, &tq, &q8_pool, &table, &tpast, NULL, 0, scale,
                                             &to));
            break;
        default:
            CHECK(paradec_op_paged_attention_ws(NULL, NULL, &tq, &native_pool, &table, &tpast,
                                                NULL, 0, scale, &to));
        }
    }
    /* Paged writes went to the pages the table names: sequence 1's 4 positions fill page 4. */
    if (variant == Q8_PAGED) {
        int filled = 1;
        for (int r = 0; r < KPS; r++) filled &= pqks[4 * KPS + r] != 0 && pqks[1 * KPS + r] == 0;
        printf("%s paged write: sequence 1 in page 4, the free page 1 untouched\n",
               filled ? "ok  " : "FAIL");
        failures += !filled;
    }
}

static void kv_modes(void) {
    float ref[KB * KH * KD], got[KB * KH * KD], flat_q8[KB * KH * KD];
    kv_run(NATIVE_FLAT, ref);
    kv_run(NATIVE_FLAT_PAGES, got);
    expect_close("native pages (paradec_op_*_quant) = the native cache", got, ref,
                 KB * KH * KD, 1e-6f);
    kv_run(NATIVE_PAGED, got);
    expect_close("native paged pool = the native cache", got, ref, KB * KH * KD, 1e-6f);
    kv_run(Q8_FLAT, flat_q8);
    expect_close("Q8 cache within quantization error of the native one", flat_q8, ref,
                 KB * KH * KD, 3e-2f);
    kv_run(Q8_PAGED, got);
    expect_close("Q8 paged pool = the Q8 contiguous cache", got, flat_q8, KB * KH * KD, 0);
}

int main(void) {
    /* ---- norms ---- */
    float x[2 * 4] = {1, 2, 3, 6, -1, 0, 1, 0};
    float w[4] = {1, 2, 3, 4}, bias[4] = {0.5f, 0, 0, -1};
    float out[8], out_b[8];
    int64_t xs[2] = {2, 4}, cs[1] = {4};
    /* The input as a DLPack tensor, passed as is. */
    DLTensor x_dl = {x, {1, 0}, 2, {2, 32, 1}, xs, NULL, 0};
    paradec_tensor wt = pd_host(w, PD_F32, 1, cs), bt = pd_host(bias, PD_F32, 1, cs);
    paradec_tensor ot = pd_host(out, PD_F32, 2, xs), obt = pd_host(out_b, PD_F32, 2, xs);
    paradec_affine aff = {&wt, &bt}, none = {NULL, NULL};
    CHECK(paradec_op_norm(NULL, PARADEC_NORM_LAYER, 0.5f, (const paradec_tensor *)&x_dl, &aff,
                          &ot));
    float want[8];
    for (int r = 0; r < 2; r++) {
        float mean = 0, var = 0;
        for (int c = 0; c < 4; c++) mean += x[r * 4 + c] / 4;
        for (int c = 0; c < 4; c++) var += (x[r * 4 + c] - mean) * (x[r * 4 + c] - mean) / 4;
        for (int c = 0; c < 4; c++)
            want[r * 4 + c] = (x[r * 4 + c] - mean) / sqrtf(var + 0.5f) * w[c] + bias[c];
    }
    expect_close("norm (LayerNorm, weight + bias, DLTensor input)", out, want, 8, 1e-5f);

    CHECK(paradec_op_norm2(NULL, PARADEC_NORM_RMS, 1e-6f, (const paradec_tensor *)&x_dl, NULL,
                           &aff, &ot, &none, &obt));
    for (int r = 0; r < 2; r++) {
        float ms = 0;
        for (int c = 0; c < 4; c++) ms += x[r * 4 + c] * x[r * 4 + c] / 4;
        for (int c = 0; c < 4; c++) want[r * 4 + c] = x[r * 4 + c] / sqrtf(ms + 1e-6f);
    }
    expect_close("norm2 second output (RMSNorm, no affine)", out_b, want, 8, 1e-5f);
    for (int i = 0; i < 8; i++) want[i] = want[i] * w[i % 4] + bias[i % 4];
    expect_close("norm2 first output (RMSNorm, weight + bias)", out, want, 8, 1e-5f);

    float res[8] = {1, 1, 1, 1, 2, 2, 2, 2}, x2[8];
    memcpy(x2, x, sizeof x);
    paradec_tensor x2t = pd_host(x2, PD_F32, 2, xs), rt = pd_host(res, PD_F32, 2, xs);
    CHECK(paradec_op_add_norm(NULL, PARADEC_NORM_RMS, 1e-6f, &x2t, &rt, NULL, &ot));
    float summed[8];
    for (int i = 0; i < 8; i++) summed[i] = x[i] + res[i];
    expect_close("add_norm writes x + residual back", x2, summed, 8, 0);

    /* ---- elementwise ---- */
    float a[4] = {-1, 0, 1, 2}, b4[4] = {2, 2, 2, 2}, o4[4];
    int64_t s4[1] = {4};
    paradec_tensor at = pd_host(a, PD_F32, 1, s4), b4t = pd_host(b4, PD_F32, 1, s4),
                   o4t = pd_host(o4, PD_F32, 1, s4);
    CHECK(paradec_op_act_mul(NULL, PARADEC_ACT_RELU, &at, &b4t, &o4t));
    float w_relu[4] = {0, 0, 2, 4};
    expect_close("act_mul relu(gate)·up", o4, w_relu, 4, 0);
    CHECK(paradec_op_activate(NULL, PARADEC_ACT_SILU, &at));
    float w_silu[4];
    float a0[4] = {-1, 0, 1, 2};
    for (int i = 0; i < 4; i++) w_silu[i] = a0[i] / (1 + expf(-a0[i]));
    expect_close("activate silu in place", a, w_silu, 4, 1e-6f);
    CHECK(paradec_op_add(NULL, &at, &b4t));
    for (int i = 0; i < 4; i++) w_silu[i] += 2;
    expect_close("add", a, w_silu, 4, 1e-6f);
    CHECK(paradec_op_scale(NULL, &at, 0.5f));
    for (int i = 0; i < 4; i++) w_silu[i] *= 0.5f;
    expect_close("scale", a, w_silu, 4, 1e-6f);

    /* ---- embedding ---- */
    float table[3 * 2] = {0, 1, 10, 11, 20, 21}, emb[3 * 2];
    int32_t ids[3] = {2, 0, 2};
    int64_t ts[2] = {3, 2}, is[1] = {3};
    paradec_tensor tt = pd_host(table, PD_F32, 2, ts), it = pd_host(ids, PD_I32, 1, is),
                   et = pd_host(emb, PD_F32, 2, ts);
    CHECK(paradec_op_embedding(NULL, &tt, &it, &et));
    float w_emb[6] = {20, 21, 0, 1, 20, 21};
    expect_close("embedding", emb, w_emb, 6, 0);

    /* ---- dense linear: out[2, 3] = x[2, 4] · W[3, 4]ᵀ + b ---- */
    float W[3 * 4], lb[3] = {1, -1, 0.5f}, lo[2 * 3], lw[2 * 3];
    for (int i = 0; i < 12; i++) W[i] = (float)(i % 5) - 2;
    int64_t ws_[2] = {3, 4}, bs[1] = {3}, los[2] = {2, 3};
    paradec_tensor Wt = pd_host(W, PD_F32, 2, ws_), lbt = pd_host(lb, PD_F32, 1, bs),
                   lot = pd_host(lo, PD_F32, 2, los);
    CHECK(paradec_op_linear(NULL, (const paradec_tensor *)&x_dl, &Wt, &lbt, &lot, false));
    for (int r = 0; r < 2; r++)
        for (int n = 0; n < 3; n++) {
            float s = lb[n];
            for (int k = 0; k < 4; k++) s += x[r * 4 + k] * W[n * 4 + k];
            lw[r * 3 + n] = s;
        }
    expect_close("linear", lo, lw, 6, 1e-5f);

    /* ---- GPTQ 4-bit linear: K = N = 8, one group, q(j, c) = (j + c) mod 16, zero 8,
     *      scale 0.5, so W[c][j] = ((j + c) mod 16 − 8) · 0.5 ---- */
    int32_t qweight[8], qzeros[1] = {0x77777777}; /* classic GPTQ stores zero − 1 */
    uint16_t scales[8];
    for (int c = 0; c < 8; c++) {
        uint32_t word = 0;
        for (int j = 0; j < 8; j++) word |= (uint32_t)((j + c) % 16) << (4 * j);
        qweight[c] = (int32_t)word;
        scales[c] = 0x3800; /* 0.5 in f16 */
    }
    int64_t qws[2] = {1, 8}, qzs[2] = {1, 1}, scs[2] = {1, 8};
    paradec_tensor qwt = pd_host(qweight, PD_I32, 2, qws), qzt = pd_host(qzeros, PD_I32, 2, qzs),
                   sct = pd_host(scales, PD_F16, 2, scs);
    paradec_named_tensor packed[3] = {{"qweight", &qwt}, {"qzeros", &qzt}, {"scales", &sct}};
    paradec_quant_weight *qw = NULL;
    CHECK(paradec_quant_weight_create("{\"quant_method\": \"gptq\", \"bits\": 4, "
                                      "\"group_size\": -1, \"desc_act\": false}",
                                      packed, 3, 8, 8, PD_CPU, &qw));
    float qx[8], qo[8], qwant[8];
    for (int k = 0; k < 8; k++) qx[k] = (float)k * 0.25f - 1;
    for (int n = 0; n < 8; n++) {
        float s = 0;
        for (int k = 0; k < 8; k++) s += qx[k] * ((float)((k + n) % 16) - 8) * 0.5f;
        qwant[n] = s;
    }
    int64_t q1[2] = {1, 8};
    paradec_tensor qxt = pd_host(qx, PD_F32, 2, q1), qot = pd_host(qo, PD_F32, 2, q1);
    CHECK(paradec_op_quant_linear(NULL, &qxt, qw, &qot, false));
    expect_close("quant_linear (GPTQ 4-bit)", qo, qwant, 8, 1e-5f);
    /* Placing the handle on the CPU keeps it a host weight; the _ws form on host tensors needs
     * no workspace. */
    CHECK(paradec_quant_weight_to_device(qw, PD_CPU, PD_F32));
    for (int n = 0; n < 8; n++) qo[n] = 1.0f;
    CHECK(paradec_op_quant_linear_ws(NULL, NULL, &qxt, qw, &qot, true));
    for (int n = 0; n < 8; n++) qwant[n] += 1.0f;
    expect_close("quant_linear_ws accumulate (host)", qo, qwant, 8, 1e-5f);
    paradec_quant_weight_free(qw);

    /* ---- split_qkv, Falcon-7B layout [q0 q1 q2 q3 | k | v], head_dim 1 ---- */
    float fused[6] = {10, 11, 12, 13, 20, 30}, q[4], k[1], v[1];
    int64_t fs[2] = {1, 6}, qs3[3] = {1, 4, 1}, ks3[3] = {1, 1, 1};
    paradec_tensor ft = pd_host(fused, PD_F32, 2, fs), qt = pd_host(q, PD_F32, 3, qs3),
                   kt = pd_host(k, PD_F32, 3, ks3), vt = pd_host(v, PD_F32, 3, ks3);
    CHECK(paradec_op_split_qkv(NULL, PARADEC_QKV_FUSED_QUERIES_FIRST, &ft, &qt, &kt, &vt));
    float wq[4] = {10, 11, 12, 13};
    expect_close("split_qkv q", q, wq, 4, 0);
    expect_close("split_qkv v", v, (float[]){30}, 1, 0);

    /* ---- head_norm: two heads of [1, 3] → [-1, 1] · per-head weight ---- */
    float hx[4] = {1, 3, 1, 3}, hw[4] = {1, 2, 10, 20};
    int64_t hs[3] = {1, 2, 2}, hws[2] = {2, 2};
    paradec_tensor hxt = pd_host(hx, PD_F32, 3, hs), hwt = pd_host(hw, PD_F32, 2, hws);
    paradec_affine haff = {&hwt, NULL};
    CHECK(paradec_op_head_norm(NULL, PARADEC_NORM_LAYER, 0.0f, &hxt, &haff));
    expect_close("head_norm per-head weights", hx, (float[]){-1, 2, -10, 20}, 4, 1e-6f);

    /* ---- rotary + cache write, then attention over the cache ----
     * batch 1, q_len 2, 1 head, head_dim 2, capacity 4, half rotary of width 2. */
    float rq[4] = {1, 0, 1, 0}, rk[4] = {1, 0, 0, 1}, rv[4] = {1, 2, 3, 4};
    float ck[8] = {0}, cv[8] = {0}, inv_freq[1] = {1.0f}, ao[4];
    int64_t pos[2] = {0, 1}, past[1] = {0};
    int64_t q4[4] = {1, 2, 1, 2}, c4[4] = {1, 4, 1, 2}, ps[1] = {2}, pls[1] = {1}, fs1[1] = {1};
    paradec_tensor rqt = pd_host(rq, PD_F32, 4, q4), rkt = pd_host(rk, PD_F32, 4, q4),
                   rvt = pd_host(rv, PD_F32, 4, q4), ckt = pd_host(ck, PD_F32, 4, c4),
                   cvt = pd_host(cv, PD_F32, 4, c4), post = pd_host(pos, PD_I64, 1, ps),
                   pastt = pd_host(past, PD_I64, 1, pls), ift = pd_host(inv_freq, PD_F32, 1, fs1),
                   aot = pd_host(ao, PD_F32, 4, q4);
    paradec_rotary rot = {PARADEC_ROPE_STYLE_HALF, 2, &ift, 1.0f};
    CHECK(paradec_op_rotary_cache_write(NULL, &rqt, &rkt, &rvt, &post, &rot, &pastt, &ckt,
                                        &cvt));
    /* Token 1 is rotated by angle 1: (1, 0) → (cos 1, sin 1); (0, 1) → (−sin 1, cos 1). */
    expect_close("rotary q", rq, (float[]){1, 0, cosf(1), sinf(1)}, 4, 1e-6f);
    expect_close("cache k slots", ck, (float[]){1, 0, -sinf(1), cosf(1), 0, 0, 0, 0}, 8, 1e-6f);
    expect_close("cache v slots", cv, (float[]){1, 2, 3, 4, 0, 0, 0, 0}, 8, 0);
    CHECK(paradec_op_attention(NULL, &rqt, &ckt, &cvt, &pastt, NULL, 0, 1.0f, &aot));
    /* Query 0 sees slot 0 only; query 1 mixes slots 0 and 1 by softmax of q·k. */
    float s0 = rq[2] * ck[0] + rq[3] * ck[1], s1 = rq[2] * ck[2] + rq[3] * ck[3];
    float e0 = expf(s0 - fmaxf(s0, s1)), e1 = expf(s1 - fmaxf(s0, s1));
    float p0 = e0 / (e0 + e1), p1 = e1 / (e0 + e1);
    expect_close("attention", ao, (float[]){1, 2, p0 * 1 + p1 * 3, p0 * 2 + p1 * 4}, 4, 1e-5f);

    /* The _ws forms on host tensors: the same results, the workspace optional (NULL here, a
     * CPU one for attention). */
    float rq2[4] = {1, 0, 1, 0}, rk2[4] = {1, 0, 0, 1}, ck2[8] = {0}, cv2[8] = {0}, ao2[4];
    paradec_tensor rq2t = pd_host(rq2, PD_F32, 4, q4), rk2t = pd_host(rk2, PD_F32, 4, q4),
                   ck2t = pd_host(ck2, PD_F32, 4, c4), cv2t = pd_host(cv2, PD_F32, 4, c4),
                   ao2t = pd_host(ao2, PD_F32, 4, q4);
    CHECK(paradec_op_rotary_cache_write_ws(NULL, NULL, &rq2t, &rk2t, &rvt, &post, &rot, &pastt,
                                           &ck2t, &cv2t));
    expect_close("rotary_ws q", rq2, rq, 4, 0);
    expect_close("rotary_ws cache k", ck2, ck, 8, 0);
    paradec_workspace *cpu_ws = NULL;
    CHECK(paradec_workspace_create(PD_CPU, PD_F32, &cpu_ws));
    CHECK(paradec_op_attention_ws(NULL, cpu_ws, &rq2t, &ck2t, &cv2t, &pastt, NULL, 0, 1.0f,
                                  &ao2t));
    paradec_workspace_free(cpu_ws);
    expect_close("attention_ws", ao2, ao, 4, 0);

    kv_modes();

    printf("%s\n", failures ? "KERNELS: FAIL" : "KERNELS: all ok");
    return failures ? 1 : 0;
}
