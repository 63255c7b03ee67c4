/*
 * layer.c — the layer and model level beyond decoding: a model's layer as a handle, forward
 * and forward_interm (every intermediate), a cache for one layer, LoRA apply / remove on a
 * layer and on the model, load / unload, numel / weight bytes / is_quant, rank_reduce, caches
 * in the KV cache modes (model and layer), a paged cache decoded through block tables (model
 * and layer, against the contiguous cache), and a decoder layer built from tensors this program
 * holds plus a config.json text.
 *
 *     layer MODEL_DIR        (a GPT-NeoX directory with a PEFT adapter in MODEL_DIR/lora)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int failures = 0;

static void expect(int cond, const char *what) {
    printf("%s %s\n", cond ? "ok  " : "FAIL", what);
    failures += !cond;
}

static float max_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 9) & 0xffff) / 65536.0f - 0.5f;
}

static paradec_attn_params params(size_t batch, size_t q_len, const int64_t *past) {
    paradec_attn_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.batch = batch;
    p.q_len = q_len;
    p.past_len = past;
    return p;
}

/* A layer built from tensors held here: a small GPT-NeoX layer with random weights. */
static void layer_from_tensors(paradec_workspace *ws) {
    const char *config =
        "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"num_attention_heads\": 2, "
        "\"num_hidden_layers\": 1, \"intermediate_size\": 16, \"vocab_size\": 10, "
        "\"rotary_pct\": 0.5, \"rotary_emb_base\": 10000, \"max_position_embeddings\": 32, "
        "\"layer_norm_eps\": 1e-5, \"hidden_act\": \"gelu\", \"use_parallel_residual\": true}";
    enum { H = 8, I = 16 };
    static float ln[4][H], qkv_w[3 * H * H], qkv_b[3 * H], o_w[H * H], o_b[H], up_w[I * H],
        up_b[I], down_w[H * I], down_b[H];
    unsigned seed = 7;
    for (int i = 0; i < H; i++) {
        ln[0][i] = ln[2][i] = 1 + frand(&seed);
        ln[1][i] = ln[3][i] = frand(&seed);
    }
    float *all[] = {qkv_w, qkv_b, o_w, o_b, up_w, up_b, down_w, down_b};
    size_t lens[] = {3 * H * H, 3 * H, H * H, H, I * H, I, H * I, H};
    for (int t = 0; t < 8; t++)
        for (size_t i = 0; i < lens[t]; i++) all[t][i] = frand(&seed);
    int64_t sh[] = {H}, s_qkv[] = {3 * H, H}, s_qkvb[] = {3 * H}, s_o[] = {H, H}, s_up[] = {I, H},
            s_upb[] = {I}, s_down[] = {H, I};
    paradec_tensor t[12] = {
        pd_host(ln[0], PD_F32, 1, sh),   pd_host(ln[1], PD_F32, 1, sh),
        pd_host(ln[2], PD_F32, 1, sh),   pd_host(ln[3], PD_F32, 1, sh),
        pd_host(qkv_w, PD_F32, 2, s_qkv), pd_host(qkv_b, PD_F32, 1, s_qkvb),
        pd_host(o_w, PD_F32, 2, s_o),    pd_host(o_b, PD_F32, 1, sh),
        pd_host(up_w, PD_F32, 2, s_up),  pd_host(up_b, PD_F32, 1, s_upb),
        pd_host(down_w, PD_F32, 2, s_down), pd_host(down_b, PD_F32, 1, sh)};
    paradec_named_tensor named[12] = {
        {"input_layernorm.weight", &t[0]},           {"input_layernorm.bias", &t[1]},
        {"post_attention_layernorm.weight", &t[2]},  {"post_attention_layernorm.bias", &t[3]},
        {"attention.query_key_value.weight", &t[4]}, {"attention.query_key_value.bias", &t[5]},
        {"attention.dense.weight", &t[6]},           {"attention.dense.bias", &t[7]},
        {"mlp.dense_h_to_4h.weight", &t[8]},         {"mlp.dense_h_to_4h.bias", &t[9]},
        {"mlp.dense_4h_to_h.weight", &t[10]},        {"mlp.dense_4h_to_h.bias", &t[11]}};
    paradec_layer *layer = NULL;
    CHECK(paradec_layer_create(config, 0, named, 12, &layer));
    /* The layer copied the weights: scribbling over ours changes nothing. */
    memset(qkv_w, 0, sizeof qkv_w);
    size_t numel = 0;
    CHECK(paradec_layer_numel(layer, &numel));
    expect(numel == 4 * H + 3 * H * H + 3 * H + H * H + H + I * H + I + H * I + H,
           "layer_create: numel counts every weight and bias");
    float x[3 * H], y[3 * H];
    for (int i = 0; i < 3 * H; i++) x[i] = frand(&seed);
    memcpy(y, x, sizeof x);
    int64_t hs[2] = {3, H};
    paradec_tensor xt = pd_host(x, PD_F32, 2, hs), yt = pd_host(y, PD_F32, 2, hs);
    paradec_attn_params p = params(1, 3, NULL);
    CHECK(paradec_layer_forward(layer, NULL, ws, &xt, &p, NULL, NULL, 0));
    CHECK(paradec_layer_rank_reduce(layer, 0.25f));
    CHECK(paradec_layer_forward(layer, NULL, ws, &yt, &p, NULL, NULL, 0));
    expect(max_diff(x, y, 3 * H) > 1e-4f, "rank_reduce(0.25) changes the layer's output");
    paradec_layer_free(layer);
}

/* Caches in the KV cache modes: Q8 and FP8 (E4M3 with a scale per layer and KV head, E5M2)
 * give logits within their quantization error of the native cache's, through a prefill and a
 * decode step; the size query predicts what the cache describes; a layer's cache in a mode
 * holds the layers up to it. */
static void kv_cache_modes(paradec_model *model, paradec_workspace *ws,
                           const paradec_model_info *info) {
    const size_t T = 4, V = info->vocab, L = info->num_layers, KVH = info->kv_heads;
    int64_t ids[5] = {5, 9, 2, 7, 3}, ids_shape[2] = {1, 4}, one_shape[2] = {1, 1};
    int64_t lg_shape[3] = {1, 4, (int64_t)V}, lg1_shape[3] = {1, 1, (int64_t)V}, past[1] = {4};
    float *ref = malloc((T + 1) * V * sizeof *ref), *got = malloc((T + 1) * V * sizeof *got);
    paradec_tensor ids_t = pd_host(ids, PD_I64, 2, ids_shape),
                   next_t = pd_host(ids + 4, PD_I64, 2, one_shape);
    paradec_tensor ref_t = pd_host(ref, PD_F32, 3, lg_shape),
                   ref1_t = pd_host(ref + T * V, PD_F32, 3, lg1_shape),
                   got_t = pd_host(got, PD_F32, 3, lg_shape),
                   got1_t = pd_host(got + T * V, PD_F32, 3, lg1_shape);
    paradec_attn_params prefill = params(1, T, NULL), step = params(1, 1, past);
    paradec_cache *native = NULL;
    CHECK(paradec_cache_create(model, 1, 8, PD_F32, PD_CPU, &native));
    CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &prefill, native, NULL, 0, &ref_t));
    CHECK(paradec_model_forward(model, NULL, ws, &next_t, &step, native, NULL, 0, &ref1_t));
    paradec_cache_info ni;
    ni.struct_size = sizeof ni;
    CHECK(paradec_cache_describe(native, &ni));
    expect(ni.mode == PARADEC_CACHE_MODE_NATIVE && ni.bytes == 2 * L * 8 * KVH * info->head_dim * 4,
           "cache_describe: a native f32 cache");
    float scale = 0;
    for (size_t i = 0; i < (T + 1) * V; i++) scale = fmaxf(scale, fabsf(ref[i]));
    float scales[64];
    for (size_t i = 0; i < L * KVH && i < 64; i++) scales[i] = 0.5f + 0.25f * (float)i;
    const int modes[3] = {PARADEC_CACHE_MODE_Q8, PARADEC_CACHE_MODE_FP8_E4M3,
                          PARADEC_CACHE_MODE_FP8_E5M2};
    const float tol[3] = {0.05f, 0.1f, 0.25f};
    const char *names[3] = {"q8", "fp8 e4m3 (scales per layer and KV head)", "fp8 e5m2"};
    for (int i = 0; i < 3; i++) {
        paradec_cache_options o;
        CHECK(paradec_cache_options_init(&o));
        o.mode = modes[i];
        if (modes[i] == PARADEC_CACHE_MODE_FP8_E4M3) {
            o.k_scales = o.v_scales = scales;
            o.n_k_scales = o.n_v_scales = L * KVH;
        }
        size_t bytes = 0;
        CHECK(paradec_cache_bytes(L, 1, 8, KVH, info->head_dim, PD_F32, &o, &bytes));
        paradec_cache *c = NULL;
        CHECK(paradec_cache_create_with_options(model, 1, 8, PD_F32, PD_CPU, &o, &c));
        paradec_cache_info ci;
        ci.struct_size = sizeof ci;
        CHECK(paradec_cache_describe(c, &ci));
        char what[160];
        snprintf(what, sizeof what, "%s cache: describe (%zu bytes, native %zu) = the size query",
                 names[i], ci.bytes, ni.bytes);
        expect(ci.mode == modes[i] && ci.num_layers == L && ci.batch == 1 && ci.capacity == 8 &&
                   ci.kv_heads == KVH && ci.bytes == bytes && bytes < ni.bytes / 3,
               what);
        CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &prefill, c, NULL, 0, &got_t));
        CHECK(paradec_model_forward(model, NULL, ws, &next_t, &step, c, NULL, 0, &got1_t));
        float d = max_diff(got, ref, (T + 1) * V);
        snprintf(what, sizeof what, "%s cache: logits within %.2f·max|logit| of native (%.4f)",
                 names[i], (double)tol[i], (double)(d / scale));
        expect(d > 0 && d < tol[i] * scale, what);
        paradec_cache_free(c);
    }

    /* A layer's cache in a mode: layers 0 ..= 1. */
    paradec_layer *layer = NULL;
    CHECK(paradec_model_layer(model, 1, &layer));
    paradec_cache_options o;
    CHECK(paradec_cache_options_init(&o));
    o.mode = PARADEC_CACHE_MODE_Q8;
    paradec_cache *lc = NULL, *ln = NULL;
    CHECK(paradec_cache_create_for_layer_with_options(layer, 1, 8, PD_F32, PD_CPU, &o, &lc));
    CHECK(paradec_cache_create_for_layer_with_options(layer, 1, 8, PD_F32, PD_CPU, NULL, &ln));
    paradec_cache_info li;
    li.struct_size = sizeof li;
    CHECK(paradec_cache_describe(lc, &li));
    expect(li.num_layers == 2 && li.mode == PARADEC_CACHE_MODE_Q8,
           "cache_create_for_layer_with_options: a Q8 cache of layers 0 ..= 1");
    size_t n = T * info->hidden;
    float *h1 = malloc(n * sizeof *h1), *h2 = malloc(n * sizeof *h2);
    unsigned seed = 3;
    for (size_t i = 0; i < n; i++) h1[i] = h2[i] = frand(&seed);
    int64_t hs[3] = {1, (int64_t)T, (int64_t)info->hidden};
    paradec_tensor t1 = pd_host(h1, PD_F32, 3, hs), t2 = pd_host(h2, PD_F32, 3, hs);
    CHECK(paradec_layer_forward(layer, NULL, ws, &t1, &prefill, ln, NULL, 0));
    CHECK(paradec_layer_forward(layer, NULL, ws, &t2, &prefill, lc, NULL, 0));
    float hscale = 0;
    for (size_t i = 0; i < n; i++) hscale = fmaxf(hscale, fabsf(h1[i]));
    expect(max_diff(h1, h2, n) < 0.05f * hscale,
           "a layer through its Q8 cache: within quantization error of the native cache");
    free(h1);
    free(h2);
    paradec_cache_free(lc);
    paradec_cache_free(ln);
    paradec_layer_free(layer);
    paradec_cache_free(native);
    free(ref);
    free(got);
}

/* ---- the paged cache ----
 * A tiny page allocator, as a serving engine keeps one: pages handed out of a scrambled free
 * list as each sequence grows (kept when a sequence rewinds); table entries past a
 * sequence's pages hold -1 and are never read. */
enum { PG_SIZE = 3, PG_MAX = 4, PG_POOL = 12 };
static const int32_t FREE_PAGES[PG_POOL] = {7, 2, 9, 0, 5, 11, 3, 8, 1, 10, 4, 6};

typedef struct {
    int32_t ids[2 * PG_MAX];
    int64_t count[2];
    size_t next;
    int64_t ids_shape[2], count_shape[1];
    paradec_tensor ids_t, count_t;
    paradec_block_table table;
} pager;

static void pager_init(pager *pg) {
    memset(pg, 0, sizeof *pg);
    for (int i = 0; i < 2 * PG_MAX; i++) pg->ids[i] = -1;
    pg->ids_shape[0] = 2;
    pg->ids_shape[1] = PG_MAX;
    pg->count_shape[0] = 2;
    pg->ids_t = pd_host(pg->ids, PD_I32, 2, pg->ids_shape);
    pg->count_t = pd_host(pg->count, PD_I64, 1, pg->count_shape);
    pg->table.page_ids = &pg->ids_t;
    pg->table.page_count = &pg->count_t;
}

/* Pages for a call whose sequences reach `ends`; the call's block table. */
static const paradec_block_table *pager_table(pager *pg, const int64_t *ends) {
    for (int b = 0; b < 2; b++)
        while (pg->count[b] * PG_SIZE < ends[b])
            pg->ids[b * PG_MAX + pg->count[b]++] = FREE_PAGES[pg->next++];
    return &pg->table;
}

/* Batch 2 with different lengths: a prefill of 4, sequence 1 restarting with 2 new tokens
 * (a rewind) while sequence 0 goes on, then three decode steps: {q_len, past 0, past 1}. */
enum { PG_STEPS = 5 };
static const int64_t SCHEDULE[PG_STEPS][3] = {
    {4, 0, 0}, {2, 4, 0}, {1, 6, 2}, {1, 7, 3}, {1, 8, 4}};

/* The paged cache: a model decodes through a pool of pages (paradec_cache_create_paged,
 * paradec_model_forward_paged, each call with its block table) in the native, Q8 and FP8
 * E4M3 modes, and a layer through its own pool (paradec_cache_create_paged_for_layer,
 * paradec_layer_forward_paged / _interm_paged): on the CPU both give the contiguous cache's
 * outputs in the same mode to the bit. */
static void paged_cache(paradec_model *model, paradec_workspace *ws,
                        const paradec_model_info *info) {
    const size_t V = info->vocab, L = info->num_layers, KVH = info->kv_heads, H = info->hidden;
    size_t ws_bytes = 0;
    CHECK(paradec_workspace_bytes_paged(model, 2 * 4, PG_MAX, PG_SIZE, PD_F32, &ws_bytes));
    CHECK(paradec_workspace_reserve(ws, ws_bytes)); /* nothing to reserve on the CPU */
    expect(ws_bytes > 0, "workspace_bytes_paged: the plan of a paged forward");
    float *want = malloc(2 * 4 * V * sizeof *want), *got = malloc(2 * 4 * V * sizeof *got);
    float scales[64];
    for (size_t i = 0; i < 64; i++) scales[i] = 0.5f + 0.25f * (float)i;
    const int modes[3] = {PARADEC_CACHE_MODE_NATIVE, PARADEC_CACHE_MODE_Q8,
                          PARADEC_CACHE_MODE_FP8_E4M3};
    const char *names[3] = {"native", "q8", "fp8 e4m3"};
    for (int m = 0; m < 3; m++) {
        paradec_cache_options o;
        CHECK(paradec_cache_options_init(&o));
        o.mode = modes[m];
        if (modes[m] == PARADEC_CACHE_MODE_FP8_E4M3 && L * KVH <= 64) {
            o.k_scales = o.v_scales = scales;
            o.n_k_scales = o.n_v_scales = L * KVH;
        }
        paradec_cache *flat = NULL, *pool = NULL;
        CHECK(paradec_cache_create_with_options(model, 2, 10, PD_F32, PD_CPU, &o, &flat));
        CHECK(paradec_cache_create_paged(model, PG_POOL, PG_SIZE, PD_F32, PD_CPU, &o, &pool));
        paradec_cache_info ci;
        ci.struct_size = sizeof ci;
        CHECK(paradec_cache_describe(pool, &ci));
        size_t bytes = 0;
        CHECK(paradec_cache_bytes(L, PG_POOL, PG_SIZE, KVH, info->head_dim, PD_F32, &o, &bytes));
        char what[160];
        snprintf(what, sizeof what, "%s paged cache: describe (batch 0, %zu pages of %zu) and "
                 "its bytes = the size query", names[m], ci.num_pages, ci.page_size);
        expect(ci.mode == modes[m] && ci.batch == 0 && ci.capacity == PG_POOL * PG_SIZE &&
                   ci.page_size == PG_SIZE && ci.num_pages == PG_POOL && ci.bytes == bytes,
               what);
        pager pg;
        pager_init(&pg);
        int equal = 1;
        for (int s = 0; s < PG_STEPS; s++) {
            size_t q = (size_t)SCHEDULE[s][0];
            int64_t past[2] = {SCHEDULE[s][1], SCHEDULE[s][2]};
            int64_t ends[2] = {past[0] + (int64_t)q, past[1] + (int64_t)q};
            int64_t ids[8], ids_shape[2] = {2, (int64_t)q};
            int64_t lg_shape[3] = {2, (int64_t)q, (int64_t)V};
            for (size_t i = 0; i < 2 * q; i++)
                ids[i] = (int64_t)((i * 37 + (size_t)s * 11 + 5) % V);
            paradec_tensor idt = pd_host(ids, PD_I64, 2, ids_shape);
            paradec_tensor wt = pd_host(want, PD_F32, 3, lg_shape),
                           gt = pd_host(got, PD_F32, 3, lg_shape);
            paradec_attn_params p = params(2, q, past);
            CHECK(paradec_model_forward(model, NULL, ws, &idt, &p, flat, NULL, 0, &wt));
            CHECK(paradec_model_forward_paged(model, NULL, ws, &idt, &p, pool,
                                              pager_table(&pg, ends), NULL, 0, &gt));
            equal &= memcmp(want, got, 2 * q * V * sizeof *want) == 0;
        }
        snprintf(what, sizeof what, "%s: a model through scrambled pages = the contiguous cache "
                 "(batch 2, different lengths, bit for bit)", names[m]);
        expect(equal, what);
        paradec_cache_free(flat);
        paradec_cache_free(pool);
    }

    /* A layer through its own pool (layers 0 ..= 1), forward and forward_interm. */
    paradec_layer *layer = NULL;
    CHECK(paradec_model_layer(model, 1, &layer));
    paradec_cache_options o;
    CHECK(paradec_cache_options_init(&o));
    o.mode = PARADEC_CACHE_MODE_Q8;
    paradec_cache *flat = NULL, *pool = NULL;
    CHECK(paradec_cache_create_for_layer_with_options(layer, 2, 10, PD_F32, PD_CPU, &o, &flat));
    CHECK(paradec_cache_create_paged_for_layer(layer, PG_POOL, PG_SIZE, PD_F32, PD_CPU, &o,
                                               &pool));
    pager pg;
    pager_init(&pg);
    float *h1 = malloc(2 * 4 * H * sizeof *h1), *h2 = malloc(2 * 4 * H * sizeof *h2);
    unsigned seed = 9;
    int equal = 1;
    for (int s = 0; s < PG_STEPS; s++) {
        size_t q = (size_t)SCHEDULE[s][0], n = 2 * q * H;
        int64_t past[2] = {SCHEDULE[s][1], SCHEDULE[s][2]};
        int64_t ends[2] = {past[0] + (int64_t)q, past[1] + (int64_t)q};
        for (size_t i = 0; i < n; i++) h1[i] = h2[i] = frand(&seed);
        int64_t hs[3] = {2, (int64_t)q, (int64_t)H};
        paradec_tensor t1 = pd_host(h1, PD_F32, 3, hs), t2 = pd_host(h2, PD_F32, 3, hs);
        paradec_attn_params p = params(2, q, past);
        const paradec_block_table *table = pager_table(&pg, ends);
        if (s % 2 == 0) {
            CHECK(paradec_layer_forward(layer, NULL, ws, &t1, &p, flat, NULL, 0));
            CHECK(paradec_layer_forward_paged(layer, NULL, ws, &t2, &p, pool, table, NULL, 0));
        } else {
            paradec_interm *i1 = NULL, *i2 = NULL;
            CHECK(paradec_layer_forward_interm(layer, NULL, ws, &t1, &p, flat, NULL, 0, &i1));
            CHECK(paradec_layer_forward_interm_paged(layer, NULL, ws, &t2, &p, pool, table, NULL,
                                                     0, &i2));
            paradec_tensor c1, c2;
            CHECK(paradec_interm_get(i1, PARADEC_INTERM_ATTN_OUTPUT, &c1));
            CHECK(paradec_interm_get(i2, PARADEC_INTERM_ATTN_OUTPUT, &c2));
            equal &= memcmp(c1.data, c2.data, 2 * q * info->heads * info->head_dim * 4) == 0;
            paradec_interm_free(i1);
            paradec_interm_free(i2);
        }
        equal &= memcmp(h1, h2, n * sizeof *h1) == 0;
    }
    expect(equal, "q8: a layer through its paged cache (forward, forward_interm and its "
                  "attention context) = its contiguous cache, bit for bit");
    free(h1);
    free(h2);
    paradec_cache_free(flat);
    paradec_cache_free(pool);
    paradec_layer_free(layer);
    free(want);
    free(got);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s GPT_NEOX_MODEL_DIR\n", argv[0]);
        return 2;
    }
    char lora_dir[4096];
    snprintf(lora_dir, sizeof lora_dir, "%s/lora", argv[1]);
    paradec_model *model = NULL;
    CHECK(paradec_model_load(argv[1], NULL, &model));
    paradec_model_info info;
    info.struct_size = sizeof info;
    CHECK(paradec_model_describe(model, &info));
    paradec_workspace *ws = NULL;
    CHECK(paradec_workspace_create(PD_CPU, PD_F32, &ws));

    paradec_layer *layer = NULL;
    CHECK(paradec_model_layer(model, 0, &layer));
    size_t numel = 0, bytes = 0;
    bool quant = true;
    CHECK(paradec_layer_numel(layer, &numel));
    CHECK(paradec_layer_weight_bytes(layer, &bytes));
    CHECK(paradec_layer_is_quant(layer, &quant));
    expect(numel > 0 && bytes == 4 * numel && !quant, "numel, weight bytes (f32), not quantized");

    /* forward and forward_interm agree; every intermediate is there. */
    size_t T = 4, H = info.hidden, n = T * H;
    float *x0 = malloc(n * sizeof *x0), *x1 = malloc(n * sizeof *x1),
          *x2 = malloc(n * sizeof *x2), *x3 = malloc(n * sizeof *x3);
    unsigned seed = 1;
    for (size_t i = 0; i < n; i++) x0[i] = frand(&seed);
    memcpy(x1, x0, n * sizeof *x0);
    memcpy(x2, x0, n * sizeof *x0);
    memcpy(x3, x0, n * sizeof *x0);
    int64_t hs[3] = {1, (int64_t)T, (int64_t)H};
    paradec_tensor t1 = pd_host(x1, PD_F32, 3, hs), t2 = pd_host(x2, PD_F32, 3, hs),
                   t3 = pd_host(x3, PD_F32, 3, hs);
    paradec_attn_params p = params(1, T, NULL);
    CHECK(paradec_layer_forward(layer, NULL, ws, &t1, &p, NULL, NULL, 0));
    paradec_interm *im = NULL;
    CHECK(paradec_layer_forward_interm(layer, NULL, ws, &t2, &p, NULL, NULL, 0, &im));
    expect(max_diff(x1, x2, n) == 0, "forward_interm updates hidden as forward does");
    int got_all = 1;
    for (int which = PARADEC_INTERM_POST_NORM; which <= PARADEC_INTERM_HIDDEN_STATES; which++) {
        paradec_tensor v;
        CHECK(paradec_interm_get(im, which, &v));
        got_all &= v.ndim == 2 && v.shape[0] == (int64_t)T && v.data != NULL;
        if (which == PARADEC_INTERM_HIDDEN_STATES)
            expect(max_diff((const float *)v.data, x1, n) == 0,
                   "interm hidden_states equals the forward's output");
    }
    expect(got_all, "interm: all seven intermediates of a two-norm family");
    paradec_interm_free(im);

    /* Through a cache made for this layer: the same output. */
    paradec_cache *cache = NULL;
    CHECK(paradec_cache_create_for_layer(layer, 1, T + 1, PD_F32, PD_CPU, &cache));
    CHECK(paradec_layer_forward(layer, NULL, ws, &t3, &p, cache, NULL, 0));
    expect(max_diff(x1, x3, n) < 1e-6f, "forward through a cache equals forward without");
    int64_t past[1] = {(int64_t)T};
    paradec_attn_params step = params(1, 1, past);
    int64_t hs1[3] = {1, 1, (int64_t)H};
    float *next = malloc(H * sizeof *next);
    memcpy(next, x0, H * sizeof *next);
    paradec_tensor one = pd_host(next, PD_F32, 3, hs1);
    CHECK(paradec_layer_forward(layer, NULL, ws, &one, &step, cache, NULL, 0));
    free(next);
    paradec_cache_free(cache);

    kv_cache_modes(model, ws, &info);
    paged_cache(model, ws, &info);

    /* LoRA on the layer: changes the output only while listed, and goes away on remove. */
    paradec_lora *lora = NULL;
    CHECK(paradec_lora_load(lora_dir, &lora));
    size_t modules = 0;
    CHECK(paradec_layer_lora_apply(layer, lora, &modules));
    expect(modules > 0, "layer_lora_apply registers the adapter's modules of layer 0");
    const paradec_lora *active[1] = {lora};
    memcpy(x2, x0, n * sizeof *x0);
    CHECK(paradec_layer_forward(layer, NULL, ws, &t2, &p, NULL, active, 1));
    expect(max_diff(x1, x2, n) > 1e-6f, "an active LoRA changes the output");
    CHECK(paradec_layer_lora_remove(layer, lora));
    memcpy(x2, x0, n * sizeof *x0);
    CHECK(paradec_layer_forward(layer, NULL, ws, &t2, &p, NULL, active, 1));
    expect(max_diff(x1, x2, n) == 0, "after layer_lora_remove the output is the base one");

    /* LoRA on the model: logits move. */
    int64_t ids[4] = {1, 2, 3, 4}, ids_shape[2] = {1, 4};
    int64_t lg_shape[3] = {1, 4, (int64_t)info.vocab};
    size_t nl = 4 * info.vocab;
    float *base = malloc(nl * sizeof *base), *with = malloc(nl * sizeof *with);
    paradec_tensor ids_t = pd_host(ids, PD_I64, 2, ids_shape);
    paradec_tensor base_t = pd_host(base, PD_F32, 3, lg_shape),
                   with_t = pd_host(with, PD_F32, 3, lg_shape);
    CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &p, NULL, NULL, 0, &base_t));
    CHECK(paradec_model_lora_apply(model, lora));
    CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &p, NULL, active, 1, &with_t));
    expect(max_diff(base, with, nl) > 1e-6f, "model_lora_apply: an active adapter moves logits");
    CHECK(paradec_model_lora_remove(model, lora));
    CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &p, NULL, active, 1, &with_t));
    expect(max_diff(base, with, nl) == 0, "model_lora_remove: logits back to the base ones");
    paradec_lora_free(lora);

    /* load / unload: to the CPU (where the weights are) and back. */
    CHECK(paradec_layer_load(layer, PD_CPU));
    CHECK(paradec_layer_unload(layer));
    CHECK(paradec_model_load_to(model, PD_CPU));
    CHECK(paradec_model_unload(model));

    /* rank_reduce at full rank keeps the logits (up to SVD rounding). */
    CHECK(paradec_model_rank_reduce(model, 1.0f));
    CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &p, NULL, NULL, 0, &with_t));
    expect(max_diff(base, with, nl) < 1e-3f, "model_rank_reduce(1.0) keeps the logits");

    /* The layer keeps the model alive after the model handle is freed. */
    paradec_model_free(model);
    memcpy(x2, x0, n * sizeof *x0);
    CHECK(paradec_layer_forward(layer, NULL, ws, &t2, &p, NULL, NULL, 0));
    expect(1, "a model's layer outlives the model handle");
    paradec_layer_free(layer);

    layer_from_tensors(ws);
    paradec_workspace_free(ws);
    free(x0);
    free(x1);
    free(x2);
    free(x3);
    free(base);
    free(with);
    printf("%s\n", failures ? "LAYER: FAIL" : "LAYER: all ok");
    return failures ? 1 : 0;
}
