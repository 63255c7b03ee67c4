/*
 * cuda.c — the kernel level on CUDA pointers (for a machine with a GPU and paradec built with
 * the `cuda` feature): buffers from cudaMalloc, a stream of this program's, every CUDA-backed
 * paradec_op_* queued on it in f16, then one synchronization; each result is checked against
 * the same op run on host copies (the CPU twin) within f16 rounding.
 *
 *     cc -std=c11 -I include -I $CUDA_HOME/include examples/c/cuda.c libparadec.a \
 *        -lstdc++ -lpthread -ldl -lrt -lm -o cuda && ./cuda
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

static void release(pair *p) {
    CUDA_CHECK(cudaFree(p->dev));
    free(p->host);
}

int main(void) {
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

    pair *all[] = {&x, &res, &w, &b, &out, &out_b, &table, &q, &k, &v, &ck, &cv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) release(all[i]);
    CUDA_CHECK(cudaFree(dids));
    CUDA_CHECK(cudaFree(dfreq));
    CUDA_CHECK(cudaFree(dpos));
    CUDA_CHECK(cudaFree(dpast));
    CUDA_CHECK(cudaStreamDestroy(stream));
    printf("%s\n", failures ? "CUDA: FAIL" : "CUDA: all ok");
    return failures ? 1 : 0;
}
