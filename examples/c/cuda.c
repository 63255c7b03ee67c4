/*
 * cuda.c — the kernel level on CUDA pointers (for a machine with a GPU and paradec built with
 * the `cuda` feature): buffers from cudaMalloc, a stream of this program's, every CUDA-backed
 * paradec_op_* queued on it in f16 (the calls with scratch take it from a workspace on the
 * device, their per-call tables from host memory), with a synchronization per group; each
 * result is checked against the same op run on host copies (the CPU twin) within f16
 * rounding, and the refused calls (a slot past the cache, a missing arena, a weight not yet on
 * the device) fail before any launch with their status. The KV cache modes (native, Q8, FP8
 * E4M3) are written and read on the device both as a contiguous cache and as a pool of pages
 * through a block table, against each other and the host twin.
 *
 * With a model directory as argument it also runs one of the model's layers on hidden states in
 * device memory (in place, on the stream) against the same layer on the host, decode steps
 * replayed from a captured graph, the model over a paged cache (Q8 and native pools) against
 * a contiguous one, and decode steps replayed from a graph captured over a paged cache against
 * eager paged forwards.
 *
 *     cc -std=c11 -I include -I $CUDA_HOME/include examples/c/cuda.c libparadec.a \
 *        -lstdc++ -lpthread -ldl -lrt -lm -o cuda && ./cuda [MODEL_DIR]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "util.h"

#define CUDA_CHECK(call)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                  \
                    cudaGetErrorString(e_));                                               \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int failures = 0;

/* IEEE half <-> float on the host (round to nearest even; no NaN payloads needed here). */
static uint16_t to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    if (exp <= 0) return (uint16_t)sign;
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

static float from_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t x;
    if (exp == 0) {
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* A device f16 tensor with a host f32 twin holding the same (rounded) values. */
typedef struct {
    void *dev;
    float *host;
    size_t n;
    int64_t shape[4];
    int32_t ndim;
} pair;

static pair make(int32_t ndim, const int64_t *shape, unsigned seed) {
    pair p;
    p.ndim = ndim;
    p.n = 1;
    for (int i = 0; i < ndim; i++) p.n *= (size_t)(p.shape[i] = shape[i]);
    p.host = malloc(p.n * sizeof(float));
    uint16_t *h = malloc(p.n * 2);
    for (size_t i = 0; i < p.n; i++) {
        seed = seed * 1103515245u + 12345u;
        h[i] = to_half((float)((seed >> 9) & 0xffff) / 32768.0f - 1.0f);
        p.host[i] = from_half(h[i]);
    }
    CUDA_CHECK(cudaMalloc(&p.dev, p.n * 2));
    CUDA_CHECK(cudaMemcpy(p.dev, h, p.n * 2, cudaMemcpyHostToDevice));
    free(h);
    return p;
}

static paradec_tensor dev_t(pair *p) {
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    return pd_tensor(p->dev, gpu, PD_F16, p->ndim, p->shape);
}

static paradec_tensor host_t(pair *p) { return pd_host(p->host, PD_F32, p->ndim, p->shape); }

/* Compares the device result (after synchronization) with the host twin's. */
static void compare(const char *what, pair *p, float tol) {
    uint16_t *h = malloc(p->n * 2);
    CUDA_CHECK(cudaMemcpy(h, p->dev, p->n * 2, cudaMemcpyDeviceToHost));
    float worst = 0;
    for (size_t i = 0; i < p->n; i++) worst = fmaxf(worst, fabsf(from_half(h[i]) - p->host[i]));
    printf("%s %s (max |diff| %g)\n", worst <= tol ? "ok  " : "FAIL", what, worst);
    failures += worst > tol;
    free(h);
}

/* A call that must fail before any launch with `want`. */
static void expect(paradec_status got, paradec_status want, const char *what) {
    int ok = got == want;
    printf("%s %s -> %s: %s\n", ok ? "ok  " : "FAIL", what, paradec_status_str((int)got),
           paradec_last_error());
    failures += !ok;
}

static void release(pair *p) {
    CUDA_CHECK(cudaFree(p->dev));
    free(p->host);
}

/* Layer 1 of the model in `dir` on GPU 0 (f16), run on device hidden states in place, against
 * the same layer on the host (f32), both through a cache holding nothing yet. */
static void layer_on_device(const char *dir, cudaStream_t stream) {
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    paradec_model *host_m = NULL, *dev_m = NULL;
    CHECK(paradec_model_load(dir, NULL, &host_m));
    CHECK(paradec_model_load(dir, NULL, &dev_m));
    CHECK(paradec_model_load_to(dev_m, gpu));
    paradec_model_info info;
    info.struct_size = sizeof info;
    CHECK(paradec_model_describe(host_m, &info));
    paradec_layer *hl = NULL, *dl = NULL;
    CHECK(paradec_model_layer(host_m, 1, &hl));
    CHECK(paradec_model_layer(dev_m, 1, &dl));
    paradec_cache *hc = NULL, *dc = NULL;
    CHECK(paradec_cache_create(host_m, 1, 8, PD_F32, PD_CPU, &hc));
    CHECK(paradec_cache_create(dev_m, 1, 8, PD_F16, gpu, &dc));
    paradec_workspace *hws = NULL, *dws = NULL;
    CHECK(paradec_workspace_create(PD_CPU, PD_F32, &hws));
    CHECK(paradec_workspace_create(gpu, PD_F16, &dws));
    CHECK(paradec_workspace_reserve(dws, 64u << 20));
    int64_t hs[3] = {1, 5, (int64_t)info.hidden};
    pair h = make(3, hs, 11);
    int64_t past[1] = {0};
    paradec_attn_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.batch = 1;
    p.q_len = 5;
    p.past_len = past;
    paradec_tensor dh = dev_t(&h), hh = host_t(&h);
    CHECK(paradec_layer_forward(dl, stream, dws, &dh, &p, dc, NULL, 0));
    CHECK(paradec_layer_forward(hl, NULL, hws, &hh, &p, hc, NULL, 0));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    float scale = 0;
    for (size_t i = 0; i < h.n; i++) scale = fmaxf(scale, fabsf(h.host[i]));
    compare("layer forward on device hidden states, in place", &h, 1e-2f * scale + 1e-3f);
    release(&h);
    paradec_workspace_free(hws);
    paradec_workspace_free(dws);
    paradec_cache_free(hc);
    paradec_cache_free(dc);
    paradec_layer_free(hl);
    paradec_layer_free(dl);
    paradec_model_free(host_m);
    paradec_model_free(dev_m);
}

/* The model in `dir` on GPU 0, its description in *info. */
static paradec_model *model_on_gpu(const char *dir, paradec_model_info *info) {
    paradec_model *m = NULL;
    CHECK(paradec_model_load(dir, NULL, &m));
    CHECK(paradec_model_load_to(m, (paradec_device){PARADEC_DEVICE_CUDA, 0}));
    info->struct_size = sizeof *info;
    CHECK(paradec_model_describe(m, info));
    return m;
}

/* A GPU 0 f16 workspace reserved as paradec_workspace_bytes_paged plans forwards of `tokens`
 * tokens over tables of `max_pages` pages of `page_size` positions. */
static paradec_workspace *paged_workspace(const paradec_model *m, size_t tokens,
                                          size_t max_pages, size_t page_size) {
    size_t plan = 0;
    CHECK(paradec_workspace_bytes_paged(m, tokens, max_pages, page_size, PD_F16, &plan));
    paradec_workspace *ws = NULL;
    CHECK(paradec_workspace_create((paradec_device){PARADEC_DEVICE_CUDA, 0}, PD_F16, &ws));
    CHECK(paradec_workspace_reserve(ws, plan));
    return ws;
}

/* The model in `dir` on GPU 0 (f16), batch 1: a 5-token prefill on two caches, then four
 * decode steps — eager on one cache (host logits), replayed from one captured graph on the
 * other (device logits) — equal to the bit; and what a live graph refuses (a paged step
 * among them). */
static void graph_decode(const char *dir, cudaStream_t stream) {
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    paradec_model_info info;
    paradec_model *m = model_on_gpu(dir, &info);
    const size_t vocab = info.vocab;
    paradec_cache *ce = NULL, *cg = NULL;
    CHECK(paradec_cache_create(m, 1, 16, PD_F16, gpu, &ce));
    CHECK(paradec_cache_create(m, 1, 16, PD_F16, gpu, &cg));
    paradec_workspace *ws = NULL;
    CHECK(paradec_workspace_create(gpu, PD_F16, &ws));
    CHECK(paradec_workspace_reserve(ws, 64u << 20));
    float *eager = malloc(5 * vocab * sizeof(float));
    int32_t prompt[5] = {1, 7, 3, 9, 4};
    int64_t ps[2] = {1, 5}, ls[3] = {1, 5, (int64_t)vocab};
    paradec_tensor pids = pd_host(prompt, PD_I32, 2, ps), plog = pd_host(eager, PD_F32, 3, ls);
    int64_t past[1] = {0};
    paradec_attn_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.batch = 1;
    p.q_len = 5;
    p.past_len = past;
    CHECK(paradec_model_forward(m, stream, ws, &pids, &p, ce, NULL, 0, &plog));
    CHECK(paradec_model_forward(m, stream, ws, &pids, &p, cg, NULL, 0, &plog));

    paradec_model_graph *g = NULL;
    CHECK(paradec_model_capture_decode(m, stream, cg, 1, 1, false, &g));
    uint16_t *dlog = NULL, *hlog = malloc(vocab * 2);
    CUDA_CHECK(cudaMalloc((void **)&dlog, vocab * 2));
    int64_t one[2] = {1, 1}, ls1[3] = {1, 1, (int64_t)vocab};
    int all_equal = 1;
    for (int t = 0; t < 4; t++) {
        int32_t id[1] = {(int32_t)((t * 5 + 2) % vocab)};
        past[0] = 5 + t;
        p.q_len = 1;
        paradec_tensor ids = pd_host(id, PD_I32, 2, one);
        paradec_tensor el = pd_host(eager, PD_F32, 3, ls1);
        paradec_tensor gl = pd_tensor(dlog, gpu, PD_F16, 3, ls1);
        CHECK(paradec_model_forward(m, stream, ws, &ids, &p, ce, NULL, 0, &el));
        CHECK(paradec_model_graph_step(g, stream, &ids, &p, &gl));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        CUDA_CHECK(cudaMemcpy(hlog, dlog, vocab * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < vocab; i++) all_equal &= from_half(hlog[i]) == eager[i];
    }
    printf("%s graph replay equals eager over 4 decode steps (device logits)\n",
           all_equal ? "ok  " : "FAIL");
    failures += !all_equal;

    /* While the graph lives: the model cannot change, its cache is the graph's. */
    expect(paradec_model_load_to(m, (paradec_device){PARADEC_DEVICE_CPU, 0}),
           PARADEC_ERR_INVALID_ARGUMENT, "model change while a graph lives");
    int32_t id[1] = {3};
    past[0] = 9;
    paradec_tensor ids = pd_host(id, PD_I32, 2, one), el = pd_host(eager, PD_F32, 3, ls1);
    expect(paradec_model_forward(m, stream, ws, &ids, &p, cg, NULL, 0, &el),
           PARADEC_ERR_INVALID_ARGUMENT, "eager forward on the graph's cache");
    past[0] = 10;
    expect(paradec_model_graph_step(g, stream, &ids, &p, &el), PARADEC_ERR_INVALID_ARGUMENT,
           "graph step reading unwritten slots");
    int32_t one_page[1] = {0};
    int64_t one_count[1] = {1}, op_shape[2] = {1, 1}, oc_shape[1] = {1};
    paradec_tensor opt = pd_host(one_page, PD_I32, 2, op_shape),
                   oct = pd_host(one_count, PD_I64, 1, oc_shape);
    paradec_block_table one_table = {&opt, &oct};
    expect(paradec_model_graph_step_paged(g, stream, &ids, &p, &one_table, &el),
           PARADEC_ERR_INVALID_ARGUMENT, "paged step on a contiguous graph");
    /* Host logits (the call waits for the step). */
    past[0] = 9;
    CHECK(paradec_model_graph_step(g, stream, &ids, &p, &el));
    /* Freeing the cache first is deferred to the graph's free. */
    paradec_cache_free(cg);
    paradec_model_graph_free(g);
    CHECK(paradec_model_load_to(m, (paradec_device){PARADEC_DEVICE_CPU, 0}));

    CUDA_CHECK(cudaFree(dlog));
    free(hlog);
    free(eager);
    paradec_workspace_free(ws);
    paradec_cache_free(ce);
    paradec_model_free(m);
}

/* The model in `dir` on GPU 0 (f16) over a paged cache: batch 2 with different lengths (a
 * prefill of 5, sequence 1 restarting with 2 tokens while sequence 0 goes on, three decode
 * steps), pages of 4 handed out of order, each call with its block table
 * (paradec_model_forward_paged), the workspace reserved as paradec_workspace_bytes_paged
 * plans it; against a contiguous cache in the same mode (paradec_model_forward): Q8 runs the
 * same kernels over both (only the rows differ), so its logits are equal to the bit; the
 * native pages are read by the pages' kernels, so within f16 rounding. Then a page outside the
 * pool is refused before any launch. */
static void paged_model_on_device(const char *dir, cudaStream_t stream) {
    enum { PS = 4, MAXP = 4, POOL = 10, STEPS = 5 };
    static const int32_t free_pages[POOL] = {6, 1, 8, 3, 0, 9, 4, 7, 2, 5};
    static const int64_t schedule[STEPS][3] = {
        {5, 0, 0}, {2, 5, 0}, {1, 7, 2}, {1, 8, 3}, {1, 9, 4}};
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    paradec_model_info info;
    paradec_model *m = model_on_gpu(dir, &info);
    const size_t V = info.vocab;
    paradec_workspace *ws = paged_workspace(m, 2 * 5, MAXP, PS);
    float *want = malloc(2 * 5 * V * sizeof *want), *got = malloc(2 * 5 * V * sizeof *got);
    const int modes[2] = {PARADEC_CACHE_MODE_Q8, PARADEC_CACHE_MODE_NATIVE};
    for (int mi = 0; mi < 2; mi++) {
        if (modes[mi] == PARADEC_CACHE_MODE_Q8 && info.head_dim % 32) continue;
        paradec_cache_options o;
        CHECK(paradec_cache_options_init(&o));
        o.mode = modes[mi];
        paradec_cache *flat = NULL, *pool = NULL;
        CHECK(paradec_cache_create_with_options(m, 2, 12, PD_F16, gpu, &o, &flat));
        CHECK(paradec_cache_create_paged(m, POOL, PS, PD_F16, gpu, &o, &pool));
        int32_t page_ids[2 * MAXP] = {-1, -1, -1, -1, -1, -1, -1, -1};
        int64_t count[2] = {0, 0}, ids_shape[2] = {2, MAXP}, count_shape[1] = {2};
        paradec_tensor idt = pd_host(page_ids, PD_I32, 2, ids_shape),
                       cnt = pd_host(count, PD_I64, 1, count_shape);
        paradec_block_table table = {&idt, &cnt};
        size_t next = 0;
        int equal = 1;
        float worst = 0, scale = 0;
        for (int st = 0; st < STEPS; st++) {
            size_t q = (size_t)schedule[st][0];
            int64_t past[2] = {schedule[st][1], schedule[st][2]};
            for (int b = 0; b < 2; b++)
                while (count[b] * PS < past[b] + (int64_t)q)
                    page_ids[b * MAXP + count[b]++] = free_pages[next++];
            int32_t tok[10];
            for (size_t i = 0; i < 2 * q; i++)
                tok[i] = (int32_t)((i * 37 + (size_t)st * 11 + 5) % V);
            int64_t ts[2] = {2, (int64_t)q}, ls[3] = {2, (int64_t)q, (int64_t)V};
            paradec_tensor ids = pd_host(tok, PD_I32, 2, ts);
            paradec_tensor wl = pd_host(want, PD_F32, 3, ls), gl = pd_host(got, PD_F32, 3, ls);
            paradec_attn_params p;
            memset(&p, 0, sizeof p);
            p.struct_size = sizeof p;
            p.batch = 2;
            p.q_len = q;
            p.past_len = past;
            CHECK(paradec_model_forward(m, stream, ws, &ids, &p, flat, NULL, 0, &wl));
            CHECK(paradec_model_forward_paged(m, stream, ws, &ids, &p, pool, &table, NULL, 0,
                                              &gl));
            for (size_t i = 0; i < 2 * q * V; i++) {
                equal &= want[i] == got[i];
                worst = fmaxf(worst, fabsf(want[i] - got[i]));
                scale = fmaxf(scale, fabsf(want[i]));
            }
        }
        if (modes[mi] == PARADEC_CACHE_MODE_Q8) {
            printf("%s q8 paged model forwards equal the contiguous cache's to the bit "
                   "(max |diff| %g)\n", equal ? "ok  " : "FAIL", worst);
            failures += !equal;
        } else {
            int ok = worst <= 2e-2f * scale;
            printf("%s native paged model forwards within f16 rounding of the contiguous cache "
                   "(max |diff| %g of %g)\n", ok ? "ok  " : "FAIL", worst, scale);
            failures += !ok;
        }
        /* A page outside the pool: refused before any launch. */
        int64_t past[2] = {10, 5};
        int32_t tok[2] = {1, 2};
        int64_t ts[2] = {2, 1}, ls[3] = {2, 1, (int64_t)V};
        paradec_tensor ids = pd_host(tok, PD_I32, 2, ts), gl = pd_host(got, PD_F32, 3, ls);
        paradec_attn_params p;
        memset(&p, 0, sizeof p);
        p.struct_size = sizeof p;
        p.batch = 2;
        p.q_len = 1;
        p.past_len = past;
        page_ids[1 * MAXP + 1] = POOL;
        expect(paradec_model_forward_paged(m, stream, ws, &ids, &p, pool, &table, NULL, 0, &gl),
               PARADEC_ERR_INVALID_ARGUMENT, "paged forward: a page outside the pool");
        paradec_cache_free(flat);
        paradec_cache_free(pool);
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));
    free(want);
    free(got);
    paradec_workspace_free(ws);
    paradec_model_free(m);
}

/* The model in `dir` on GPU 0 (f16), batch 2, over two paged caches of the same pages (native,
 * then Q8 where the heads allow): a prefill of 5 tokens per sequence on both
 * (paradec_model_forward_paged), then six decode steps — eager on one pool (host logits),
 * replayed on the other from one graph captured with a table width of MAXP pages
 * (paradec_model_capture_decode_paged / paradec_model_graph_step_paged, device logits) —
 * equal to the bit, as the contiguous graph above. Sequence 0 goes on from its prompt,
 * sequence 1 restarts at position 2, so their lengths differ; both tables grow a page at a
 * time (pages handed out of order), and the table tensor is only as wide as its longest row
 * (narrower than the captured width, which the step restages). Then what the paged graph
 * refuses. */
static void paged_graph_decode(const char *dir, cudaStream_t stream) {
    enum { PS = 4, MAXP = 4, POOL = 10, STEPS = 6 };
    static const int32_t free_pages[POOL] = {7, 2, 9, 0, 5, 3, 8, 1, 6, 4};
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    paradec_model_info info;
    paradec_model *m = model_on_gpu(dir, &info);
    const size_t V = info.vocab;
    paradec_workspace *ws = paged_workspace(m, 2 * 5, MAXP, PS);
    float *eager = malloc(2 * 5 * V * sizeof *eager);
    uint16_t *dlog = NULL, *hlog = malloc(2 * V * 2);
    CUDA_CHECK(cudaMalloc((void **)&dlog, 2 * V * 2));
    const int modes[2] = {PARADEC_CACHE_MODE_NATIVE, PARADEC_CACHE_MODE_Q8};
    for (int mi = 0; mi < 2; mi++) {
        if (modes[mi] == PARADEC_CACHE_MODE_Q8 && info.head_dim % 32) continue;
        const char *mode = modes[mi] == PARADEC_CACHE_MODE_Q8 ? "q8" : "native";
        paradec_cache_options o;
        CHECK(paradec_cache_options_init(&o));
        o.mode = modes[mi];
        paradec_cache *pe = NULL, *pg = NULL;
        CHECK(paradec_cache_create_paged(m, POOL, PS, PD_F16, gpu, &o, &pe));
        CHECK(paradec_cache_create_paged(m, POOL, PS, PD_F16, gpu, &o, &pg));
        /* Each sequence's pages; the table tensor is rebuilt from them at each step. */
        int32_t pages[2][MAXP], page_ids[2 * MAXP];
        int64_t count[2] = {0, 0}, ids_shape[2] = {2, 1}, count_shape[1] = {2};
        paradec_tensor idt = pd_host(page_ids, PD_I32, 2, ids_shape),
                       cnt = pd_host(count, PD_I64, 1, count_shape);
        paradec_block_table table = {&idt, &cnt};
        size_t next = 0;
        int64_t past[2] = {0, 0};
        paradec_attn_params p;
        memset(&p, 0, sizeof p);
        p.struct_size = sizeof p;
        p.batch = 2;
        p.past_len = past;
        /* Gives each sequence the pages its next q tokens reach and lays the table out. */
#define GROW_TABLE(q)                                                                      \
    do {                                                                                   \
        int64_t w_ = 1;                                                                    \
        for (int b_ = 0; b_ < 2; b_++) {                                                   \
            while (count[b_] * PS < past[b_] + (int64_t)(q))                               \
                pages[b_][count[b_]++] = free_pages[next++];                               \
            if (count[b_] > w_) w_ = count[b_];                                            \
        }                                                                                  \
        ids_shape[1] = w_;                                                                 \
        for (int b_ = 0; b_ < 2; b_++)                                                     \
            for (int64_t i_ = 0; i_ < w_; i_++)                                            \
                page_ids[b_ * w_ + i_] = i_ < count[b_] ? pages[b_][i_] : -1;              \
    } while (0)

        /* The prompt, on both pools. */
        int32_t prompt[10] = {1, 7, 3, 9, 4, 2, 8, 6, 5, 11};
        for (int i = 0; i < 10; i++) prompt[i] = (int32_t)((size_t)prompt[i] % V);
        int64_t ps[2] = {2, 5}, pls[3] = {2, 5, (int64_t)V};
        paradec_tensor pids = pd_host(prompt, PD_I32, 2, ps),
                       plog = pd_host(eager, PD_F32, 3, pls);
        p.q_len = 5;
        GROW_TABLE(5);
        CHECK(paradec_model_forward_paged(m, stream, ws, &pids, &p, pe, &table, NULL, 0, &plog));
        CHECK(paradec_model_forward_paged(m, stream, ws, &pids, &p, pg, &table, NULL, 0, &plog));

        paradec_model_graph *g = NULL;
        CHECK(paradec_model_capture_decode_paged(m, stream, pg, 2, 1, false, MAXP, &g));
        int64_t ts[2] = {2, 1}, ls[3] = {2, 1, (int64_t)V};
        int all_equal = 1;
        float worst = 0;
        p.q_len = 1;
        for (int t = 0; t < STEPS; t++) {
            int32_t tok[2] = {(int32_t)((size_t)(t * 5 + 2) % V),
                              (int32_t)((size_t)(t * 3 + 1) % V)};
            past[0] = 5 + t;
            past[1] = 2 + t;
            GROW_TABLE(1);
            paradec_tensor ids = pd_host(tok, PD_I32, 2, ts);
            paradec_tensor el = pd_host(eager, PD_F32, 3, ls);
            paradec_tensor gl = pd_tensor(dlog, gpu, PD_F16, 3, ls);
            CHECK(paradec_model_forward_paged(m, stream, ws, &ids, &p, pe, &table, NULL, 0, &el));
            CHECK(paradec_model_graph_step_paged(g, stream, &ids, &p, &table, &gl));
            CUDA_CHECK(cudaStreamSynchronize(stream));
            CUDA_CHECK(cudaMemcpy(hlog, dlog, 2 * V * 2, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < 2 * V; i++) {
                float d = fabsf(from_half(hlog[i]) - eager[i]);
                all_equal &= d == 0;
                worst = fmaxf(worst, d);
            }
        }
        printf("%s %s paged graph replay equals eager paged forwards over %d decode steps, "
               "tables growing to %lld pages (max |diff| %g)\n",
               all_equal ? "ok  " : "FAIL", mode, STEPS, (long long)ids_shape[1], worst);
        failures += !all_equal;

        /* What the paged graph refuses, before any launch (the step after them still runs). */
        int32_t tok[2] = {3, 4};
        paradec_tensor ids = pd_host(tok, PD_I32, 2, ts), el = pd_host(eager, PD_F32, 3, ls);
        past[0] = 5 + STEPS;
        past[1] = 2 + STEPS;
        GROW_TABLE(1);
        expect(paradec_model_graph_step(g, stream, &ids, &p, &el), PARADEC_ERR_INVALID_ARGUMENT,
               "plain step on a paged graph");
        expect(paradec_model_forward_paged(m, stream, ws, &ids, &p, pg, &table, NULL, 0, &el),
               PARADEC_ERR_INVALID_ARGUMENT, "eager forward on the paged graph's pool");
        int32_t wide_ids[2 * (MAXP + 1)];
        int64_t wide_shape[2] = {2, MAXP + 1};
        for (int i = 0; i < 2 * (MAXP + 1); i++) wide_ids[i] = -1;
        for (int b = 0; b < 2; b++)
            for (int64_t i = 0; i < count[b]; i++) wide_ids[b * (MAXP + 1) + i] = pages[b][i];
        paradec_tensor wide_t = pd_host(wide_ids, PD_I32, 2, wide_shape);
        paradec_block_table wide = {&wide_t, &cnt};
        expect(paradec_model_graph_step_paged(g, stream, &ids, &p, &wide, &el),
               PARADEC_ERR_CAPACITY, "paged step with a table wider than the capture's");
        int32_t keep = page_ids[0];
        page_ids[0] = POOL;
        expect(paradec_model_graph_step_paged(g, stream, &ids, &p, &table, &el),
               PARADEC_ERR_INVALID_ARGUMENT, "paged step: a page outside the pool");
        page_ids[0] = keep;
        past[0] = MAXP * PS; /* 17 positions; sequence 0 owns 3 pages of 4 */
        expect(paradec_model_graph_step_paged(g, stream, &ids, &p, &table, &el),
               PARADEC_ERR_CAPACITY, "paged step past the sequence's pages");
        past[0] = 5 + STEPS;
        /* Host logits (the call waits for the step). */
        CHECK(paradec_model_graph_step_paged(g, stream, &ids, &p, &table, &el));
        paradec_model_graph_free(g);
        paradec_cache_free(pe);
        paradec_cache_free(pg);
#undef GROW_TABLE
    }
    CUDA_CHECK(cudaFree(dlog));
    free(hlog);
    free(eager);
    paradec_workspace_free(ws);
    paradec_model_free(m);
}

/* ---- KV cache modes and the paged cache on the device ----
 * One layer's pages in cudaMalloc memory (or, for the host twin, in host memory): K and V
 * (values of the native mode, else codes), Q8's run scales, E4M3's head scales. */
enum { KV_B = 2, KV_H = 4, KV_KVH = 2, KV_D = 64, KV_CAP = 8, KV_PS = 4, KV_NP = 6 };

typedef struct {
    void *buf[4]; /* k, v, k run scales, v run scales (NULL when the mode has none) */
    int on_device;
    int64_t shape[4], sshape[4], hshape[1];
    paradec_tensor t[6]; /* k, k_scales, k_head_scales, v, v_scales, v_head_scales */
    paradec_cache_pages pages;
} kv_pages;

static void *kv_alloc(int on_device, size_t bytes) {
    void *p = NULL;
    if (on_device) {
        CUDA_CHECK(cudaMalloc(&p, bytes));
        CUDA_CHECK(cudaMemset(p, 0, bytes));
    } else {
        p = calloc(1, bytes);
    }
    return p;
}

/* Zeroed pages [a, b, KV_KVH, …] in `mode` (NATIVE, Q8 or FP8_E4M3); `head_scales`: KV_KVH
 * floats where the pages live (E4M3). Stays in place: the descriptors point into it. */
static void kv_pages_init(kv_pages *p, int mode, int on_device, int64_t a, int64_t b,
                          float *head_scales) {
    paradec_device where = {on_device ? PARADEC_DEVICE_CUDA : PARADEC_DEVICE_CPU, 0};
    const int native = mode == PARADEC_CACHE_MODE_NATIVE, runs = mode == PARADEC_CACHE_MODE_Q8;
    const int e4m3 = mode == PARADEC_CACHE_MODE_FP8_E4M3;
    const paradec_dtype vdt = native ? (on_device ? PD_F16 : PD_F32) : PD_U8;
    const size_t elem = native ? (on_device ? 2 : 4) : 1;
    const size_t n = (size_t)(a * b) * KV_KVH * KV_D, ns = (size_t)(a * b) * KV_KVH * (KV_D / 32);
    memset(p, 0, sizeof *p);
    p->on_device = on_device;
    int64_t shape[4] = {a, b, KV_KVH, KV_D}, sshape[4] = {a, b, KV_KVH, KV_D / 32};
    memcpy(p->shape, shape, sizeof shape);
    memcpy(p->sshape, sshape, sizeof sshape);
    p->hshape[0] = KV_KVH;
    p->buf[0] = kv_alloc(on_device, n * elem);
    p->buf[1] = kv_alloc(on_device, n * elem);
    p->t[0] = pd_tensor(p->buf[0], where, vdt, 4, p->shape);
    p->t[3] = pd_tensor(p->buf[1], where, vdt, 4, p->shape);
    if (runs) {
        p->buf[2] = kv_alloc(on_device, ns * 2);
        p->buf[3] = kv_alloc(on_device, ns * 2);
        p->t[1] = pd_tensor(p->buf[2], where, PD_F16, 4, p->sshape);
        p->t[4] = pd_tensor(p->buf[3], where, PD_F16, 4, p->sshape);
    }
    if (e4m3) {
        p->t[2] = pd_tensor(head_scales, where, PD_F32, 1, p->hshape);
        p->t[5] = p->t[2];
    }
    p->pages.mode = mode;
    p->pages.k = &p->t[0];
    p->pages.k_scales = runs ? &p->t[1] : NULL;
    p->pages.k_head_scales = e4m3 ? &p->t[2] : NULL;
    p->pages.v = &p->t[3];
    p->pages.v_scales = runs ? &p->t[4] : NULL;
    p->pages.v_head_scales = e4m3 ? &p->t[5] : NULL;
}

static void kv_pages_free(kv_pages *p) {
    for (int i = 0; i < 4; i++) {
        if (!p->buf[i]) continue;
        if (p->on_device)
            CUDA_CHECK(cudaFree(p->buf[i]));
        else
            free(p->buf[i]);
    }
}

/* In the native, Q8 and FP8 E4M3 modes: a prefill of 4 tokens then one more per sequence
 * (sequence 1 rewound to 2), written with rotary into a contiguous device cache and into a
 * device pool of pages through a block table (pages handed out of order), then the second
 * step's attention over each; both against the host twin of the contiguous cache, and the
 * paged output against the contiguous one. Then what the paged calls refuse before any
 * launch. */
static void kv_pages_on_device(cudaStream_t stream, paradec_workspace *ws,
                               paradec_workspace *tiny) {
    const int modes[3] = {PARADEC_CACHE_MODE_NATIVE, PARADEC_CACHE_MODE_Q8,
                          PARADEC_CACHE_MODE_FP8_E4M3};
    const char *names[3] = {"native", "q8", "fp8 e4m3"};
    const float tol[3] = {2e-2f, 5e-2f, 5e-2f};
    float head_scales[KV_KVH] = {0.5f, 2.0f}, *dhead = NULL;
    CUDA_CHECK(cudaMalloc((void **)&dhead, sizeof head_scales));
    CUDA_CHECK(cudaMemcpy(dhead, head_scales, sizeof head_scales, cudaMemcpyHostToDevice));
    /* Sequence 0 owns pages 5 and 1 (it reaches position 5), sequence 1 page 3. */
    int32_t page_ids[KV_B * 2] = {5, 1, 3, -1};
    int64_t page_count[KV_B] = {2, 1}, ids_s[2] = {KV_B, 2}, cnt_s[1] = {KV_B};
    paradec_tensor t_ids = pd_host(page_ids, PD_I32, 2, ids_s),
                   t_cnt = pd_host(page_count, PD_I64, 1, cnt_s);
    paradec_block_table table = {&t_ids, &t_cnt};
    float inv_freq[KV_D / 4];
    for (int j = 0; j < KV_D / 4; j++) inv_freq[j] = powf(10000.0f, -(float)j / (KV_D / 4));
    int64_t fs[1] = {KV_D / 4};
    paradec_tensor t_freq = pd_host(inv_freq, PD_F32, 1, fs);
    paradec_rotary rot = {PARADEC_ROPE_STYLE_HALF, KV_D / 2, &t_freq, 1.0f};
    const float scale = 1.0f / sqrtf((float)KV_D);
    for (int m = 0; m < 3; m++) {
        kv_pages dflat, dpool, hflat;
        kv_pages_init(&dflat, modes[m], 1, KV_B, KV_CAP, dhead);
        kv_pages_init(&dpool, modes[m], 1, KV_NP, KV_PS, dhead);
        kv_pages_init(&hflat, modes[m], 0, KV_B, KV_CAP, head_scales);
        pair qc = {0}, qp = {0};
        int64_t past[KV_B] = {0, 0}, pos[KV_B * 4], pls[1] = {KV_B};
        paradec_tensor hpast = pd_host(past, PD_I64, 1, pls);
        for (int step = 0; step < 2; step++) {
            const int64_t L = step == 0 ? 4 : 1;
            if (step == 1) past[0] = 4, past[1] = 2;
            for (int b = 0; b < KV_B; b++)
                for (int t = 0; t < L; t++) pos[b * L + t] = past[b] + t;
            int64_t qs[4] = {KV_B, L, KV_H, KV_D}, ks[4] = {KV_B, L, KV_KVH, KV_D},
                    ps[1] = {KV_B * L};
            paradec_tensor hpos = pd_host(pos, PD_I64, 1, ps);
            const unsigned seed = 100 + 10 * (unsigned)step;
            /* The same values twice: the contiguous and the paged calls each rotate their own
             * q and k in place; the host twin rotates the host copy of the first. */
            pair q1 = make(4, qs, seed), k1 = make(4, ks, seed + 1), v1 = make(4, ks, seed + 2);
            pair q2 = make(4, qs, seed), k2 = make(4, ks, seed + 1), v2 = make(4, ks, seed + 2);
            paradec_tensor dq1 = dev_t(&q1), dk1 = dev_t(&k1), dv1 = dev_t(&v1), dq2 = dev_t(&q2),
                           dk2 = dev_t(&k2), dv2 = dev_t(&v2), hq1 = host_t(&q1),
                           hk1 = host_t(&k1), hv1 = host_t(&v1);
            CHECK(paradec_op_rotary_cache_write_quant_ws(stream, ws, &dq1, &dk1, &dv1, &hpos, &rot,
                                                         &hpast, &dflat.pages));
            CHECK(paradec_op_paged_rotary_cache_write_ws(stream, ws, &dq2, &dk2, &dv2, &hpos, &rot,
                                                         &hpast, &table, &dpool.pages));
            CHECK(paradec_op_rotary_cache_write_quant_ws(NULL, NULL, &hq1, &hk1, &hv1, &hpos, &rot,
                                                         &hpast, &hflat.pages));
            if (step == 0 && m == 1) {
                /* Refused before any launch: a page outside the pool, a plain call on device
                 * tensors, a workspace without an arena. */
                page_ids[0] = KV_NP;
                expect(paradec_op_paged_rotary_cache_write_ws(stream, ws, &dq2, &dk2, &dv2, &hpos,
                                                              &rot, &hpast, &table, &dpool.pages),
                       PARADEC_ERR_INVALID_ARGUMENT, "paged write: a page outside the pool");
                page_ids[0] = 5;
                expect(paradec_op_paged_rotary_cache_write(stream, &dq2, &dk2, &dv2, &hpos, &rot,
                                                           &hpast, &table, &dpool.pages),
                       PARADEC_ERR_UNSUPPORTED, "paged write without a workspace on CUDA");
                expect(paradec_op_paged_attention(stream, &dq2, &dpool.pages, &table, &hpast,
                                                  NULL, 0, scale, &dq1),
                       PARADEC_ERR_UNSUPPORTED, "paged attention without a workspace on CUDA");
                expect(paradec_op_paged_attention_ws(stream, tiny, &dq2, &dpool.pages, &table,
                                                     &hpast, NULL, 0, scale, &dq1),
                       PARADEC_ERR_CAPACITY, "paged attention: a workspace without an arena");
                expect(paradec_op_attention_quant(stream, &dq1, &dflat.pages, &hpast, NULL, 0,
                                                  scale, &dq2),
                       PARADEC_ERR_UNSUPPORTED, "attention_quant without a workspace on CUDA");
                expect(paradec_op_rotary_cache_write_quant(stream, &dq1, &dk1, &dv1, &hpos, &rot,
                                                           &hpast, &dflat.pages),
                       PARADEC_ERR_UNSUPPORTED, "rotary_cache_write_quant without a workspace");
            }
            if (step == 1) {
                qc = q1;
                qp = q2;
            } else {
                release(&q1);
                release(&q2);
            }
            release(&k1);
            release(&v1);
            release(&k2);
            release(&v2);
        }
        int64_t os[4] = {KV_B, 1, KV_H, KV_D};
        pair oc = make(4, os, 120), op = make(4, os, 121);
        paradec_tensor dqc = dev_t(&qc), dqp = dev_t(&qp), doc = dev_t(&oc), dop = dev_t(&op),
                       hqc = host_t(&qc), hoc = host_t(&oc);
        CHECK(paradec_op_attention_quant_ws(stream, ws, &dqc, &dflat.pages, &hpast, NULL, 0, scale,
                                            &doc));
        CHECK(paradec_op_paged_attention_ws(stream, ws, &dqp, &dpool.pages, &table, &hpast, NULL,
                                            0, scale, &dop));
        CHECK(paradec_op_attention_quant_ws(NULL, NULL, &hqc, &hflat.pages, &hpast, NULL, 0, scale,
                                            &hoc));
        memcpy(op.host, oc.host, oc.n * sizeof(float));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        char what[128];
        snprintf(what, sizeof what, "%s cache: contiguous pages against the host twin", names[m]);
        compare(what, &oc, tol[m]);
        snprintf(what, sizeof what, "%s cache: paged pool against the host twin", names[m]);
        compare(what, &op, tol[m]);
        /* The paged output against the contiguous one, both from the device. */
        uint16_t *hc = malloc(oc.n * 2), *hp = malloc(op.n * 2);
        CUDA_CHECK(cudaMemcpy(hc, oc.dev, oc.n * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(hp, op.dev, op.n * 2, cudaMemcpyDeviceToHost));
        float worst = 0;
        for (size_t i = 0; i < oc.n; i++)
            worst = fmaxf(worst, fabsf(from_half(hc[i]) - from_half(hp[i])));
        int same = worst <= 4e-3f;
        printf("%s %s cache: paged pool = contiguous pages on the device (max |diff| %g)\n",
               same ? "ok  " : "FAIL", names[m], worst);
        failures += !same;
        free(hc);
        free(hp);
        pair *done[] = {&qc, &qp, &oc, &op};
        for (size_t i = 0; i < sizeof done / sizeof *done; i++) release(done[i]);
        kv_pages_free(&dflat);
        kv_pages_free(&dpool);
        kv_pages_free(&hflat);
    }
    CUDA_CHECK(cudaFree(dhead));
}

int main(int argc, char **argv) {
    int n = 0;
    if (!paradec_has_cuda() || cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("skipped: %s\n", paradec_has_cuda() ? "no CUDA device" : "paradec built without CUDA");
        return 0;
    }
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

    int64_t xs[2] = {4, 64}, cs[1] = {64};
    pair x = make(2, xs, 1), res = make(2, xs, 2), w = make(1, cs, 3), b = make(1, cs, 4);
    pair out = make(2, xs, 5), out_b = make(2, xs, 6);
    paradec_tensor dx = dev_t(&x), dres = dev_t(&res), dw = dev_t(&w), db = dev_t(&b),
                   dout = dev_t(&out), doutb = dev_t(&out_b);
    paradec_tensor hx = host_t(&x), hres = host_t(&res), hw = host_t(&w), hb = host_t(&b),
                   hout = host_t(&out), houtb = host_t(&out_b);
    paradec_affine daff = {&dw, &db}, haff = {&hw, &hb}, none = {NULL, NULL};

    /* Queue everything on the stream, then synchronize once. */
    CHECK(paradec_op_norm(stream, PARADEC_NORM_LAYER, 1e-5f, &dx, &daff, &dout));
    CHECK(paradec_op_norm(NULL, PARADEC_NORM_LAYER, 1e-5f, &hx, &haff, &hout));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("norm", &out, 2e-2f);
    CHECK(paradec_op_norm2(stream, PARADEC_NORM_RMS, 1e-5f, &dx, NULL, &daff, &dout, &none,
                           &doutb));
    CHECK(paradec_op_norm2(NULL, PARADEC_NORM_RMS, 1e-5f, &hx, NULL, &haff, &hout, &none,
                           &houtb));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("norm2 (a)", &out, 2e-2f);
    compare("norm2 (b)", &out_b, 2e-2f);
    CHECK(paradec_op_add_norm(stream, PARADEC_NORM_RMS, 1e-5f, &dx, &dres, &daff, &dout));
    CHECK(paradec_op_add_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &hx, &hres, &haff, &hout));
    CHECK(paradec_op_act_mul(stream, PARADEC_ACT_SILU, &dx, &dres, &doutb));
    CHECK(paradec_op_act_mul(NULL, PARADEC_ACT_SILU, &hx, &hres, &houtb));
    CHECK(paradec_op_activate(stream, PARADEC_ACT_GELU_NEW, &dres));
    CHECK(paradec_op_activate(NULL, PARADEC_ACT_GELU_NEW, &hres));
    CHECK(paradec_op_add(stream, &dres, &dx));
    CHECK(paradec_op_add(NULL, &hres, &hx));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    /* The device rounds x + residual to f16 before the norm; the host twin keeps f32. */
    compare("add_norm", &out, 5e-2f);
    compare("act_mul", &out_b, 2e-2f);
    compare("activate + add", &res, 2e-2f);

    /* Embedding: int32 ids on the device. */
    int64_t ts[2] = {16, 64}, is[1] = {4};
    pair table = make(2, ts, 7);
    int32_t ids[4] = {3, 0, 15, 3}, *dids = NULL;
    CUDA_CHECK(cudaMalloc((void **)&dids, sizeof ids));
    CUDA_CHECK(cudaMemcpy(dids, ids, sizeof ids, cudaMemcpyHostToDevice));
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    paradec_tensor dtab = dev_t(&table), htab = host_t(&table);
    paradec_tensor did = pd_tensor(dids, gpu, PD_I32, 1, is), hid = pd_host(ids, PD_I32, 1, is);
    CHECK(paradec_op_embedding(stream, &dtab, &did, &dout));
    CHECK(paradec_op_embedding(NULL, &htab, &hid, &hout));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("embedding", &out, 0);

    /* Rotary + cache write: batch 1, q_len 2, 2 heads / 1 kv head, head_dim 8, capacity 4. */
    int64_t qs[4] = {1, 2, 2, 8}, ks[4] = {1, 2, 1, 8}, ccs[4] = {1, 4, 1, 8};
    pair q = make(4, qs, 8), k = make(4, ks, 9), v = make(4, ks, 10);
    pair ck = make(4, ccs, 11), cv = make(4, ccs, 12);
    float inv_freq[4] = {1.0f, 0.1f, 0.01f, 0.001f};
    int64_t pos[2] = {5, 6}, past[1] = {1}, fs[1] = {4}, ps[1] = {2}, pls[1] = {1};
    float *dfreq = NULL;
    int64_t *dpos = NULL, *dpast = NULL;
    CUDA_CHECK(cudaMalloc((void **)&dfreq, sizeof inv_freq));
    CUDA_CHECK(cudaMalloc((void **)&dpos, sizeof pos));
    CUDA_CHECK(cudaMalloc((void **)&dpast, sizeof past));
    CUDA_CHECK(cudaMemcpy(dfreq, inv_freq, sizeof inv_freq, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dpos, pos, sizeof pos, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dpast, past, sizeof past, cudaMemcpyHostToDevice));
    paradec_tensor dft = pd_tensor(dfreq, gpu, PD_F32, 1, fs), hft = pd_host(inv_freq, PD_F32, 1, fs);
    paradec_tensor dpt = pd_tensor(dpos, gpu, PD_I64, 1, ps), hpt = pd_host(pos, PD_I64, 1, ps);
    paradec_tensor dpl = pd_tensor(dpast, gpu, PD_I64, 1, pls), hpl = pd_host(past, PD_I64, 1, pls);
    paradec_rotary drot = {PARADEC_ROPE_STYLE_HALF, 8, &dft, 1.0f};
    paradec_rotary hrot = {PARADEC_ROPE_STYLE_HALF, 8, &hft, 1.0f};
    paradec_tensor dq = dev_t(&q), dk = dev_t(&k), dv = dev_t(&v), dck = dev_t(&ck),
                   dcv = dev_t(&cv);
    paradec_tensor hq = host_t(&q), hk = host_t(&k), hv = host_t(&v), hck = host_t(&ck),
                   hcv = host_t(&cv);
    CHECK(paradec_op_rotary_cache_write(stream, &dq, &dk, &dv, &dpt, &drot, &dpl, &dck, &dcv));
    CHECK(paradec_op_rotary_cache_write(NULL, &hq, &hk, &hv, &hpt, &hrot, &hpl, &hck, &hcv));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("rotary q", &q, 2e-2f);
    compare("rotary cache k", &ck, 2e-2f);
    compare("cache v", &cv, 0);


    /* ---- the calls that take scratch: a workspace on the device, its arena reserved ---- */
    paradec_workspace *ws = NULL, *tiny = NULL, *host_ws = NULL;
    CHECK(paradec_workspace_create(gpu, PD_F16, &ws));
    CHECK(paradec_workspace_reserve(ws, (size_t)16 << 20));
    size_t cap = 0;
    CHECK(paradec_workspace_capacity(ws, &cap));
    printf("%s workspace arena %zu bytes\n", cap >= ((size_t)16 << 20) ? "ok  " : "FAIL", cap);
    failures += cap < ((size_t)16 << 20);
    CHECK(paradec_workspace_create(gpu, PD_F16, &tiny)); /* no arena: every scratch misses */
    CHECK(paradec_workspace_create(PD_CPU, PD_F32, &host_ws));

    /* Checked rotary + cache write: positions, past lengths and frequencies on the host. */
    pair q2 = make(4, qs, 13), k2 = make(4, ks, 14), v2 = make(4, ks, 15);
    pair ck2 = make(4, ccs, 16), cv2 = make(4, ccs, 17);
    paradec_tensor dq2 = dev_t(&q2), dk2 = dev_t(&k2), dv2 = dev_t(&v2), dck2 = dev_t(&ck2),
                   dcv2 = dev_t(&cv2);
    paradec_tensor hq2 = host_t(&q2), hk2 = host_t(&k2), hv2 = host_t(&v2), hck2 = host_t(&ck2),
                   hcv2 = host_t(&cv2);
    int64_t past_far[1] = {3};
    paradec_tensor hfar = pd_host(past_far, PD_I64, 1, pls);
    /* Errors before any launch: a slot past the capacity, a device table, a missing arena. */
    expect(paradec_op_rotary_cache_write_ws(stream, ws, &dq2, &dk2, &dv2, &hpt, &hrot, &hfar,
                                            &dck2, &dcv2),
           PARADEC_ERR_CAPACITY, "rotary_ws: past 3 + 2 tokens > capacity 4");
    expect(paradec_op_rotary_cache_write_ws(stream, ws, &dq2, &dk2, &dv2, &hpt, &hrot, &dpl,
                                            &dck2, &dcv2),
           PARADEC_ERR_DEVICE, "rotary_ws: past_len on the device");
    expect(paradec_op_rotary_cache_write_ws(stream, tiny, &dq2, &dk2, &dv2, &hpt, &hrot, &hpl,
                                            &dck2, &dcv2),
           PARADEC_ERR_CAPACITY, "rotary_ws: a workspace without an arena");
    expect(paradec_op_rotary_cache_write_ws(stream, host_ws, &dq2, &dk2, &dv2, &hpt, &hrot,
                                            &hpl, &dck2, &dcv2),
           PARADEC_ERR_DEVICE, "rotary_ws: a host workspace for device tensors");
    CHECK(paradec_op_rotary_cache_write_ws(stream, ws, &dq2, &dk2, &dv2, &hpt, &hrot, &hpl,
                                           &dck2, &dcv2));
    CHECK(paradec_op_rotary_cache_write_ws(NULL, NULL, &hq2, &hk2, &hv2, &hpt, &hrot, &hpl,
                                           &hck2, &hcv2));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("rotary_ws q", &q2, 2e-2f);
    compare("rotary_ws cache k (untouched by the refused calls)", &ck2, 2e-2f);
    compare("rotary_ws cache v", &cv2, 0);

    /* Attention over that cache (2 heads over 1 kv head, head_dim 8), with a host mask. */
    pair ao = make(4, qs, 18);
    paradec_tensor dao = dev_t(&ao), hao = host_t(&ao);
    float mask[4] = {-INFINITY, 0, 0, 0};
    int64_t ms[2] = {1, 4};
    paradec_tensor hmask = pd_host(mask, PD_F32, 2, ms);
    expect(paradec_op_attention(stream, &dq2, &dck2, &dcv2, &dpl, NULL, 0, 0.35f, &dao),
           PARADEC_ERR_UNSUPPORTED, "attention without a workspace on CUDA");
    expect(paradec_op_attention_ws(stream, tiny, &dq2, &dck2, &dcv2, &hpl, NULL, 0, 0.35f, &dao),
           PARADEC_ERR_CAPACITY, "attention_ws: a workspace without an arena");
    CHECK(paradec_op_attention_ws(stream, ws, &dq2, &dck2, &dcv2, &hpl, NULL, 0, 0.35f, &dao));
    CHECK(paradec_op_attention_ws(NULL, NULL, &hq2, &hck2, &hcv2, &hpl, NULL, 0, 0.35f, &hao));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("attention_ws", &ao, 2e-2f);
    CHECK(paradec_op_attention_ws(stream, ws, &dq2, &dck2, &dcv2, &hpl, &hmask, 2, 0.35f, &dao));
    CHECK(paradec_op_attention_ws(NULL, host_ws, &hq2, &hck2, &hcv2, &hpl, &hmask, 2, 0.35f,
                                  &hao));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("attention_ws (mask, window 2)", &ao, 2e-2f);

    /* Dense linear, f16 weight [32, 64] + bias: m = 4 (GEMV) and m = 16 (tensor cores), then
     * accumulate into the output; scale. */
    int64_t lws[2] = {32, 64}, lbs[1] = {32}, lx4[2] = {4, 64}, lo4[2] = {4, 32},
            lx16[2] = {16, 64}, lo16[2] = {16, 32};
    pair lw = make(2, lws, 19), lb = make(1, lbs, 20), lx = make(2, lx4, 21),
         lo = make(2, lo4, 22), lxx = make(2, lx16, 23), loo = make(2, lo16, 24);
    paradec_tensor dlw = dev_t(&lw), dlb = dev_t(&lb), dlx = dev_t(&lx), dlo = dev_t(&lo),
                   dlxx = dev_t(&lxx), dloo = dev_t(&loo);
    paradec_tensor hlw = host_t(&lw), hlb = host_t(&lb), hlx = host_t(&lx), hlo = host_t(&lo),
                   hlxx = host_t(&lxx), hloo = host_t(&loo);
    CHECK(paradec_op_linear(stream, &dlx, &dlw, &dlb, &dlo, false));
    CHECK(paradec_op_linear(NULL, &hlx, &hlw, &hlb, &hlo, false));
    CHECK(paradec_op_linear(stream, &dlxx, &dlw, NULL, &dloo, false));
    CHECK(paradec_op_linear(NULL, &hlxx, &hlw, NULL, &hloo, false));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("linear m=4", &lo, 2e-2f);
    compare("linear m=16", &loo, 2e-2f);
    CHECK(paradec_op_linear(stream, &dlx, &dlw, &dlb, &dlo, true));
    CHECK(paradec_op_linear(NULL, &hlx, &hlw, &hlb, &hlo, true));
    CHECK(paradec_op_scale(stream, &dlo, 0.5f));
    CHECK(paradec_op_scale(NULL, &hlo, 0.5f));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("linear accumulate + scale", &lo, 2e-2f);

    /* GPTQ 4-bit, K = 64, N = 32, groups of 32: one handle, placed on the device in f16. */
    int32_t qweight[8 * 32], qzeros[2 * 4];
    uint16_t scales[2 * 32];
    unsigned seed = 99;
    for (int i = 0; i < 8 * 32; i++) {
        uint32_t word = 0;
        for (int j = 0; j < 8; j++) {
            seed = seed * 1103515245u + 12345u;
            word |= ((seed >> 16) & 15u) << (4 * j);
        }
        qweight[i] = (int32_t)word;
    }
    for (int i = 0; i < 2 * 4; i++) qzeros[i] = 0x77777777;
    for (int i = 0; i < 2 * 32; i++) scales[i] = to_half(0.02f + 0.001f * (float)(i % 7));
    int64_t qws[2] = {8, 32}, qzs[2] = {2, 4}, scs[2] = {2, 32};
    paradec_tensor qwt = pd_host(qweight, PD_I32, 2, qws), qzt = pd_host(qzeros, PD_I32, 2, qzs),
                   sct = pd_host(scales, PD_F16, 2, scs);
    paradec_named_tensor packed[3] = {{"qweight", &qwt}, {"qzeros", &qzt}, {"scales", &sct}};
    paradec_quant_weight *qw = NULL;
    CHECK(paradec_quant_weight_create("{\"quant_method\": \"gptq\", \"bits\": 4, "
                                      "\"group_size\": 32, \"desc_act\": false}",
                                      packed, 3, 64, 32, PD_CPU, &qw));
    expect(paradec_op_quant_linear_ws(stream, ws, &dlx, qw, &dlo, false), PARADEC_ERR_DEVICE,
           "quant_linear_ws before the weight is on the device");
    CHECK(paradec_quant_weight_to_device(qw, gpu, PD_F16));
    expect(paradec_op_quant_linear(stream, &dlx, qw, &dlo, false), PARADEC_ERR_UNSUPPORTED,
           "quant_linear without a workspace on CUDA");
    int64_t q1x[2] = {1, 64}, q1o[2] = {1, 32};
    pair qx1 = make(2, q1x, 25), qo1 = make(2, q1o, 26);
    paradec_tensor dqx1 = dev_t(&qx1), dqo1 = dev_t(&qo1), hqx1 = host_t(&qx1), hqo1 = host_t(&qo1);
    CHECK(paradec_op_quant_linear_ws(stream, ws, &dqx1, qw, &dqo1, false));
    CHECK(paradec_op_quant_linear_ws(NULL, NULL, &hqx1, qw, &hqo1, false));
    CHECK(paradec_op_quant_linear_ws(stream, ws, &dlxx, qw, &dloo, false));
    CHECK(paradec_op_quant_linear(NULL, &hlxx, qw, &hloo, false));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("quant_linear_ws m=1 (GEMV)", &qo1, 2e-2f);
    compare("quant_linear_ws m=16 (tensor cores)", &loo, 2e-2f);
    CHECK(paradec_op_quant_linear_ws(stream, ws, &dlx, qw, &dlo, true));
    CHECK(paradec_op_quant_linear_ws(NULL, NULL, &hlx, qw, &hlo, true));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("quant_linear_ws m=4 accumulate", &lo, 3e-2f);
    paradec_quant_weight_free(qw);

    /* split_qkv (Falcon new architecture: 4 heads in 2 groups, head_dim 8) and head_norm. */
    int64_t fqs[2] = {3, (4 + 2 * 2) * 8}, sq[3] = {3, 4, 8}, sk[3] = {3, 2, 8}, hw2[2] = {4, 8};
    pair fq = make(2, fqs, 27), sqp = make(3, sq, 28), skp = make(3, sk, 29), svp = make(3, sk, 30);
    pair hnw = make(2, hw2, 31);
    paradec_tensor dfq = dev_t(&fq), dsq = dev_t(&sqp), dsk = dev_t(&skp), dsv = dev_t(&svp),
                   dhnw = dev_t(&hnw);
    paradec_tensor hfq = host_t(&fq), hsq = host_t(&sqp), hsk = host_t(&skp), hsv = host_t(&svp),
                   hhnw = host_t(&hnw);
    CHECK(paradec_op_split_qkv(stream, PARADEC_QKV_FUSED_GROUPED, &dfq, &dsq, &dsk, &dsv));
    CHECK(paradec_op_split_qkv(NULL, PARADEC_QKV_FUSED_GROUPED, &hfq, &hsq, &hsk, &hsv));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("split_qkv q", &sqp, 0);
    compare("split_qkv k", &skp, 0);
    compare("split_qkv v", &svp, 0);
    paradec_affine dhaff = {&dhnw, NULL}, hhaff = {&hhnw, NULL};
    CHECK(paradec_op_head_norm(stream, PARADEC_NORM_LAYER, 1e-5f, &dsq, &dhaff));
    CHECK(paradec_op_head_norm(NULL, PARADEC_NORM_LAYER, 1e-5f, &hsq, &hhaff));
    CHECK(paradec_op_head_norm(stream, PARADEC_NORM_RMS, 1e-5f, &dsk, NULL));
    CHECK(paradec_op_head_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &hsk, NULL));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    compare("head_norm per-head weights", &sqp, 2e-2f);
    compare("head_norm rms", &skp, 2e-2f);

    kv_pages_on_device(stream, ws, tiny);

    paradec_workspace_free(ws);
    paradec_workspace_free(tiny);
    paradec_workspace_free(host_ws);
    pair *more[] = {&q2, &k2, &v2, &ck2, &cv2, &ao, &lw, &lb, &lx, &lo, &lxx, &loo,
                    &qx1, &qo1, &fq, &sqp, &skp, &svp, &hnw};
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) release(more[i]);

    pair *all[] = {&x, &res, &w, &b, &out, &out_b, &table, &q, &k, &v, &ck, &cv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) release(all[i]);
    CUDA_CHECK(cudaFree(dids));
    CUDA_CHECK(cudaFree(dfreq));
    CUDA_CHECK(cudaFree(dpos));
    CUDA_CHECK(cudaFree(dpast));
    if (argc > 1) layer_on_device(argv[1], stream);
    if (argc > 1) graph_decode(argv[1], stream);
    if (argc > 1) paged_model_on_device(argv[1], stream);
    if (argc > 1) paged_graph_decode(argv[1], stream);
    CUDA_CHECK(cudaStreamDestroy(stream));
    printf("%s\n", failures ? "CUDA: FAIL" : "CUDA: all ok");
    return failures ? 1 : 0;
}
