/*
 * errors.c — walks the error paths of the C ABI: NULL arguments, wrong dtype / shape / device,
 * non-contiguous and misaligned tensors, bad enum values, overlapping outputs, bad struct
 * sizes, bad model directories, an exhausted cache, freed (NULLed) handles, bad cache modes
 * and options, pages a mode cannot use, block tables that do not cover a call, and the paged
 * cache of a model or a layer (its creation, its forwards' block tables, a paged cache without
 * a table and a table without one, graph capture, the workspace plan). Each call must
 * return its documented status, leave its outputs untouched, and leave a message in
 * paradec_last_error() that names what was wrong. Run under AddressSanitizer and valgrind by
 * the test suite.
 *
 *     errors MODEL_DIR       (any fixture model directory)
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static int failures = 0, checks = 0;

static void expect_status(const char *call, paradec_status got, paradec_status want,
                          const char *needle) {
    const char *msg = paradec_last_error();
    int ok = got == want && (needle == NULL || strstr(msg, needle) != NULL);
    checks++;
    if (ok) {
        printf("ok   %-18s %s\n", paradec_status_str((int)got), msg);
    } else {
        printf("FAIL %s: got %d (%s) \"%s\", want %d (%s) mentioning \"%s\"\n", call, (int)got,
               paradec_status_str((int)got), msg, (int)want, paradec_status_str((int)want),
               needle ? needle : "");
        failures++;
    }
}

#define EXPECT(call, want, needle) expect_status(#call, (call), (want), (needle))

static void expect_true(int cond, const char *what) {
    checks++;
    if (!cond) {
        printf("FAIL %s\n", what);
        failures++;
    } else {
        printf("ok   %s\n", what);
    }
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static void kernel_errors(void) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], out2[8];
    int32_t xi[8] = {0};
    int64_t shape[2] = {2, 4}, wrong[2] = {4, 2}, negative[2] = {2, -4}, strides[2] = {1, 2};
    paradec_tensor xt = pd_host(x, PD_F32, 2, shape), ot = pd_host(out, PD_F32, 2, shape);
    float sentinel = 12345.0f;
    for (int i = 0; i < 8; i++) out[i] = sentinel;

    /* NULL arguments. */
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, NULL, NULL, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`x`");
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, NULL, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`out`");
    EXPECT(paradec_op_add_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, NULL, NULL, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`residual`");
    paradec_tensor no_shape = xt;
    no_shape.shape = NULL;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &no_shape), PARADEC_ERR_NULL_ARGUMENT,
           "x.shape");
    paradec_tensor no_data = xt;
    no_data.data = NULL;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &no_data), PARADEC_ERR_NULL_ARGUMENT,
           "x: data is NULL");
    EXPECT(paradec_op_add(NULL, &xt, NULL), PARADEC_ERR_NULL_ARGUMENT, "`y`");
    EXPECT(paradec_op_act_mul(NULL, PARADEC_ACT_SILU, &xt, NULL, &ot), PARADEC_ERR_NULL_ARGUMENT,
           "`up`");
    EXPECT(paradec_op_scale(NULL, NULL, 2.0f), PARADEC_ERR_NULL_ARGUMENT, "`x`");
    EXPECT(paradec_op_embedding(NULL, NULL, &xt, &ot), PARADEC_ERR_NULL_ARGUMENT, "`table`");
    EXPECT(paradec_op_linear(NULL, &xt, NULL, NULL, &ot, false), PARADEC_ERR_NULL_ARGUMENT,
           "`weight`");
    EXPECT(paradec_op_quant_linear(NULL, &xt, NULL, &ot, false), PARADEC_ERR_NULL_ARGUMENT,
           "`weight`");
    EXPECT(paradec_op_split_qkv(NULL, PARADEC_QKV_FUSED_PER_HEAD, &xt, NULL, &ot, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`q`");
    EXPECT(paradec_op_head_norm(NULL, PARADEC_NORM_LAYER, 1e-5f, NULL, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`x`");
    EXPECT(paradec_op_rotary_cache_write(NULL, &xt, &xt, &xt, NULL, NULL, NULL, &ot, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`past_len`");
    EXPECT(paradec_op_attention(NULL, NULL, &xt, &xt, &xt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`q`");
    EXPECT(paradec_op_attention_ws(NULL, NULL, &xt, NULL, &xt, &xt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`cache_k`");
    EXPECT(paradec_op_rotary_cache_write_ws(NULL, NULL, &xt, &xt, &xt, NULL, NULL, NULL, &ot,
                                            &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`past_len`");
    EXPECT(paradec_op_quant_linear_ws(NULL, NULL, &xt, NULL, &ot, false),
           PARADEC_ERR_NULL_ARGUMENT, "`weight`");
    EXPECT(paradec_quant_weight_to_device(NULL, PD_CPU, PD_F32), PARADEC_ERR_NULL_ARGUMENT,
           "`weight`");
    EXPECT(paradec_workspace_reserve(NULL, 1024), PARADEC_ERR_NULL_ARGUMENT, "`workspace`");
    EXPECT(paradec_workspace_capacity(NULL, NULL), PARADEC_ERR_NULL_ARGUMENT, "`out_bytes`");

    /* Wrong dtype. */
    paradec_tensor xit = pd_host(xi, PD_I32, 2, shape);
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xit, NULL, &ot), PARADEC_ERR_DTYPE,
           "x: expected f32, f16 or bf16, got i32");
    paradec_tensor f64 = xt;
    f64.dtype.bits = 64;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &f64), PARADEC_ERR_DTYPE,
           "is not one paradec takes");
    paradec_tensor lanes = xt;
    lanes.dtype.lanes = 4;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &lanes), PARADEC_ERR_DTYPE, "lanes 4");
    paradec_tensor o16 = pd_host(out, PD_F16, 2, shape);
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, NULL, &o16), PARADEC_ERR_DTYPE,
           "out: expected f32, got f16");
    float table[6] = {0};
    int64_t ts[2] = {3, 2}, is[1] = {2}, es[2] = {2, 2};
    float fid[2] = {0, 1}, emb[4];
    paradec_tensor tt = pd_host(table, PD_F32, 2, ts), fidt = pd_host(fid, PD_F32, 1, is),
                   et = pd_host(emb, PD_F32, 2, es);
    EXPECT(paradec_op_embedding(NULL, &tt, &fidt, &et), PARADEC_ERR_DTYPE,
           "ids: expected int32 or int64");

    /* Wrong shape. */
    paradec_tensor owrong = pd_host(out, PD_F32, 2, wrong);
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, NULL, &owrong), PARADEC_ERR_SHAPE,
           "out: expected shape [2, 4], got [4, 2]");
    paradec_tensor neg = pd_host(x, PD_F32, 2, negative);
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &neg), PARADEC_ERR_SHAPE,
           "shape[1] = -4 is negative");
    paradec_tensor deep = xt;
    deep.ndim = 17;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &deep), PARADEC_ERR_SHAPE, "ndim 17");
    float wsmall[4 * 3];
    int64_t w43[2] = {4, 3};
    paradec_tensor wt = pd_host(wsmall, PD_F32, 2, w43);
    EXPECT(paradec_op_linear(NULL, &xt, &wt, NULL, &ot, false), PARADEC_ERR_SHAPE,
           "the weight's K");
    float wn[4] = {1, 1, 1, 1};
    int64_t s3[1] = {3};
    paradec_tensor w3 = pd_host(wn, PD_F32, 1, s3);
    paradec_affine bad_affine = {&w3, NULL};
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, &bad_affine, &ot),
           PARADEC_ERR_SHAPE, "affine.weight: expected [4]");

    /* Wrong device. */
    paradec_tensor opencl = xt;
    opencl.device.device_type = 4;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &opencl), PARADEC_ERR_DEVICE,
           "device type 4");
    paradec_tensor on_gpu = ot;
    on_gpu.device.device_type = PARADEC_DEVICE_CUDA;
    EXPECT(paradec_op_norm(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, NULL, &on_gpu), PARADEC_ERR_DEVICE,
           "out is on cuda:0 but x is on cpu");
    if (!paradec_has_cuda()) {
        paradec_tensor gpu_x = xt;
        gpu_x.device.device_type = PARADEC_DEVICE_CUDA;
        EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &gpu_x), PARADEC_ERR_NO_DEVICE,
               "built without CUDA");
    }

    /* Non-contiguous, misaligned. */
    paradec_tensor strided = xt;
    strided.strides = strides;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &strided), PARADEC_ERR_NOT_CONTIGUOUS,
           "not compact row-major");
    paradec_tensor misaligned = xt;
    misaligned.byte_offset = 2;
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &misaligned),
           PARADEC_ERR_INVALID_ARGUMENT, "not aligned");

    /* Bad enum values, overlapping outputs, ids outside the vocabulary. */
    EXPECT(paradec_op_norm(NULL, 7, 1e-5f, &xt, NULL, &ot), PARADEC_ERR_INVALID_ARGUMENT,
           "kind: 7");
    EXPECT(paradec_op_activate(NULL, 99, &xt), PARADEC_ERR_INVALID_ARGUMENT, "act: 99");
    EXPECT(paradec_op_split_qkv(NULL, 0, &xt, &ot, &ot, &ot), PARADEC_ERR_INVALID_ARGUMENT,
           "layout: 0");
    EXPECT(paradec_op_norm2(NULL, PARADEC_NORM_RMS, 1e-5f, &xt, NULL, NULL, &ot, NULL, &ot),
           PARADEC_ERR_INVALID_ARGUMENT, "overlap");
    int32_t ids[2] = {0, 7};
    paradec_tensor idt = pd_host(ids, PD_I32, 1, is);
    EXPECT(paradec_op_embedding(NULL, &tt, &idt, &et), PARADEC_ERR_INVALID_ARGUMENT,
           "ids[1] = 7 is outside the vocabulary of 3");

    /* Rotary + cache: a cache too small for the write. */
    float q[4] = {0}, k[4] = {0}, ck[4] = {0};
    int64_t q4[4] = {1, 2, 1, 2}, c4[4] = {1, 2, 1, 2}, past[1] = {1}, pls[1] = {1};
    paradec_tensor qt = pd_host(q, PD_F32, 4, q4), kt = pd_host(k, PD_F32, 4, q4),
                   vt = pd_host(k, PD_F32, 4, q4), ckt = pd_host(ck, PD_F32, 4, c4),
                   cvt = pd_host(out2, PD_F32, 4, c4), pt = pd_host(past, PD_I64, 1, pls);
    EXPECT(paradec_op_rotary_cache_write(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &ckt, &cvt),
           PARADEC_ERR_CAPACITY, "past_len[0] = 1");
    paradec_rotary bad_rot = {9, 2, NULL, 1.0f};
    past[0] = 0;
    EXPECT(paradec_op_rotary_cache_write(NULL, &qt, &kt, &vt, NULL, &bad_rot, &pt, &ckt, &cvt),
           PARADEC_ERR_INVALID_ARGUMENT, "rotary.style: 9");
    EXPECT(paradec_op_attention(NULL, &qt, &ckt, &cvt, &pt, NULL, 0, 1.0f, &xt),
           PARADEC_ERR_SHAPE, "out: expected shape");
    /* The _ws forms check the same, and take their tables (past lengths, positions, mask,
     * frequencies) from host memory only: the host checks every slot before a launch. */
    past[0] = 1;
    EXPECT(paradec_op_rotary_cache_write_ws(NULL, NULL, &qt, &kt, &vt, NULL, NULL, &pt, &ckt,
                                            &cvt),
           PARADEC_ERR_CAPACITY, "past_len[0] = 1");
    past[0] = 0;
    paradec_tensor pt_gpu = pt;
    pt_gpu.device.device_type = PARADEC_DEVICE_CUDA;
    EXPECT(paradec_op_rotary_cache_write_ws(NULL, NULL, &qt, &kt, &vt, NULL, NULL, &pt_gpu, &ckt,
                                            &cvt),
           PARADEC_ERR_DEVICE, "past_len: expected host memory");
    EXPECT(paradec_op_attention_ws(NULL, NULL, &qt, &ckt, &cvt, &pt_gpu, NULL, 0, 1.0f, &qt),
           PARADEC_ERR_DEVICE, "past_len: expected host memory");
    float mask_small[1] = {0};
    int64_t m11[2] = {1, 1};
    paradec_tensor mt = pd_host(mask_small, PD_F32, 2, m11);
    paradec_tensor ao = pd_host(out2, PD_F32, 4, q4);
    EXPECT(paradec_op_attention_ws(NULL, NULL, &qt, &ckt, &cvt, &pt, &mt, 0, 1.0f, &ao),
           PARADEC_ERR_SHAPE, "mask: expected [1, ≥2]");

    /* A quantized weight from a malformed config, a NULL name, a CUDA target. */
    paradec_quant_weight *qw = (paradec_quant_weight *)&sentinel;
    paradec_named_tensor unnamed = {NULL, &xt};
    EXPECT(paradec_quant_weight_create("{\"bits\": 4}", &unnamed, 1, 8, 8, PD_CPU, &qw),
           PARADEC_ERR_NULL_ARGUMENT, "tensors[0].name");
    EXPECT(paradec_quant_weight_create("{bits", NULL, 0, 8, 8, PD_CPU, &qw),
           PARADEC_ERR_BAD_FORMAT, "quant_config_json");
    EXPECT(paradec_quant_weight_create("{\"bits\": 5}", NULL, 0, 8, 8, PD_CPU, &qw),
           PARADEC_ERR_BAD_FORMAT, "bits: 5");
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    EXPECT(paradec_quant_weight_create("{\"bits\": 4}", NULL, 0, 8, 8, gpu, &qw),
           PARADEC_ERR_UNSUPPORTED, "paradec_quant_weight_to_device");
    EXPECT(paradec_quant_weight_create("{\"bits\": 4}", NULL, 0, 8, 8, PD_CPU, &qw),
           PARADEC_ERR_NOT_FOUND, "linear.qweight");
    expect_true(qw == (paradec_quant_weight *)&sentinel, "failed creates leave *out untouched");

    int untouched = 1;
    for (int i = 0; i < 8; i++) untouched &= out[i] == sentinel;
    expect_true(untouched, "failed kernel calls wrote nothing to their outputs");
    EXPECT(paradec_op_activate(NULL, PARADEC_ACT_RELU, &xt), PARADEC_OK, NULL);
    expect_true(paradec_last_error()[0] == '\0', "a successful call clears the last error");
}

/* The KV cache modes and the paged cache at the kernel level: a Q8 layer's pages this program
 * owns, contiguous [1, 4, 1, 32] and a pool of 4 pages of 8, and a block table. */
static void kv_kernel_errors(void) {
    float q[64], k[64], v[64], out[64], sentinel = 12345.0f;
    for (int i = 0; i < 64; i++) q[i] = 0.5f, k[i] = 0.25f, v[i] = 0.75f, out[i] = sentinel;
    static uint8_t ck[4 * 32], cv[4 * 32], pk[32 * 32], pv[32 * 32];
    static uint16_t cks[4], cvs[4], pks[32], pvs[32];
    int64_t ts[4] = {1, 1, 1, 32}, cs[4] = {1, 4, 1, 32}, css[4] = {1, 4, 1, 1},
            ps[4] = {4, 8, 1, 32}, pss[4] = {4, 8, 1, 1}, one[1] = {1};
    paradec_tensor qt = pd_host(q, PD_F32, 4, ts), kt = pd_host(k, PD_F32, 4, ts),
                   vt = pd_host(v, PD_F32, 4, ts), ot = pd_host(out, PD_F32, 4, ts),
                   ckt = pd_host(ck, PD_U8, 4, cs), cvt = pd_host(cv, PD_U8, 4, cs),
                   ckst = pd_host(cks, PD_F16, 4, css), cvst = pd_host(cvs, PD_F16, 4, css),
                   pkt = pd_host(pk, PD_U8, 4, ps), pvt = pd_host(pv, PD_U8, 4, ps),
                   pkst = pd_host(pks, PD_F16, 4, pss), pvst = pd_host(pvs, PD_F16, 4, pss);
    paradec_cache_pages flat = {PARADEC_CACHE_MODE_Q8, &ckt, &ckst, NULL, &cvt, &cvst, NULL};
    paradec_cache_pages pool = {PARADEC_CACHE_MODE_Q8, &pkt, &pkst, NULL, &pvt, &pvst, NULL};
    int32_t ids[2] = {0, 1};
    int64_t cnt[1] = {2}, past[1] = {0}, ids_s[2] = {1, 2};
    paradec_tensor idt = pd_host(ids, PD_I32, 2, ids_s), cntt = pd_host(cnt, PD_I64, 1, one),
                   pt = pd_host(past, PD_I64, 1, one);
    paradec_block_table table = {&idt, &cntt};

    /* NULL pages, block table, a tensor the mode needs. */
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`pages`");
    EXPECT(paradec_op_paged_rotary_cache_write(NULL, &qt, &kt, &vt, NULL, NULL, &pt, NULL, &pool),
           PARADEC_ERR_NULL_ARGUMENT, "`block_table`");
    paradec_cache_pages no_scales = flat;
    no_scales.v_scales = NULL;
    EXPECT(paradec_op_attention_quant(NULL, &qt, &no_scales, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`pages.v_scales`");
    paradec_block_table no_count = {&idt, NULL};
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &no_count, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_NULL_ARGUMENT, "`block_table.page_count`");

    /* A bad mode; tensors the mode does not take, or of the wrong dtype / shape. */
    paradec_cache_pages bad = flat;
    bad.mode = 42;
    EXPECT(paradec_op_attention_quant_ws(NULL, NULL, &qt, &bad, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_INVALID_ARGUMENT, "pages.mode: 42 is not a cache mode");
    bad.mode = PARADEC_CACHE_MODE_FP8_E5M2;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &bad),
           PARADEC_ERR_INVALID_ARGUMENT, "pages.k_scales: given, but mode fp8e5m2");
    bad.mode = PARADEC_CACHE_MODE_FP8_E4M3;
    bad.k_scales = bad.v_scales = NULL;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &bad),
           PARADEC_ERR_NULL_ARGUMENT, "`pages.k_head_scales`");
    bad.mode = PARADEC_CACHE_MODE_Q4; /* 4-bit codes are half as wide */
    bad.k_scales = &ckst, bad.v_scales = &cvst;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &bad),
           PARADEC_ERR_SHAPE, "pages.k: expected shape [1, 4, 1, 16], got [1, 4, 1, 32]");
    bad.mode = PARADEC_CACHE_MODE_NATIVE;
    bad.k_scales = bad.v_scales = NULL;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &bad),
           PARADEC_ERR_DTYPE, "pages.k: expected f32, f16 or bf16, got u8");
    paradec_tensor f32_codes = pd_host(out, PD_F32, 4, cs);
    bad = flat;
    bad.k = &f32_codes;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &bad),
           PARADEC_ERR_DTYPE, "pages.k: expected u8, got f32");
    int64_t q16s[4] = {1, 1, 2, 16};
    paradec_tensor q16 = pd_host(q, PD_F32, 4, q16s);
    EXPECT(paradec_op_attention_quant(NULL, &q16, &flat, &pt, NULL, 0, 1.0f, &q16),
           PARADEC_ERR_UNSUPPORTED, "head_dim 16 is not a multiple of 32");
    paradec_tensor k16 = pd_host(k, PD_F32, 4, q16s);
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &k16, &k16, NULL, NULL, &pt, &flat),
           PARADEC_ERR_SHAPE, "k: expected shape [1, 1, 2, 32], got [1, 1, 2, 16]");
    int64_t q3s[4] = {1, 1, 2, 32}, c2s[4] = {1, 4, 2, 16};
    paradec_tensor q2h = pd_host(q, PD_F32, 4, q3s), k2h = pd_host(k, PD_F32, 4, q3s);
    paradec_tensor ck2 = pd_host(ck, PD_U8, 4, c2s);
    bad = flat;
    bad.k = &ck2;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &q2h, &k2h, &k2h, NULL, NULL, &pt, &bad),
           PARADEC_ERR_SHAPE, "pages.k: expected shape [1, 4, 2, 32], got [1, 4, 2, 16]");

    /* Lengths past the cache or the sequence's pages, and bad block tables: refused before
     * anything is written. */
    past[0] = 4;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &flat),
           PARADEC_ERR_CAPACITY,
           "past_len[0] = 4: 4 + 1 new tokens do not fit the cache capacity 4");
    EXPECT(paradec_op_attention_quant(NULL, &qt, &flat, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_CAPACITY, "4 + 1 queries do not fit the cache capacity 4");
    past[0] = -2;
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &table, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_INVALID_ARGUMENT, "past_len[0] = -2 is negative");
    past[0] = 8;
    ids[1] = 4;
    EXPECT(paradec_op_paged_rotary_cache_write(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &table,
                                               &pool),
           PARADEC_ERR_INVALID_ARGUMENT, "sequence 0's page 1 is 4, outside the pool of 4 pages");
    ids[1] = 1;
    cnt[0] = 1;
    EXPECT(paradec_op_paged_rotary_cache_write_ws(NULL, NULL, &qt, &kt, &vt, NULL, NULL, &pt,
                                                  &table, &pool),
           PARADEC_ERR_CAPACITY, "sequence 0 reaches position 9");
    cnt[0] = 3;
    EXPECT(paradec_op_paged_attention_ws(NULL, NULL, &qt, &pool, &table, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_INVALID_ARGUMENT, "sequence 0 owns 3 pages, more than the table's 2");
    cnt[0] = -1;
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &table, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_INVALID_ARGUMENT, "block_table.page_count[0] = -1 is negative");
    cnt[0] = 2;
    past[0] = 16;
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &table, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_CAPACITY, "attention over 17 cache slots exceeds the block table's 2 pages");
    past[0] = 0;
    paradec_tensor ids64 = pd_host(past, PD_I64, 2, ids_s);
    paradec_block_table wide_ids = {&ids64, &cntt};
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &wide_ids, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_DTYPE, "block_table.page_ids: expected i32, got i64");
    int64_t ids_col[2] = {2, 1};
    paradec_tensor idt_col = pd_host(ids, PD_I32, 2, ids_col);
    paradec_block_table col = {&idt_col, &cntt};
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &col, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_SHAPE, "block_table.page_ids: expected [1, max_pages]");
    paradec_tensor fcnt = pd_host(q, PD_F32, 1, one);
    paradec_block_table fcount = {&idt, &fcnt};
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &fcount, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_DTYPE, "block_table.page_count: expected int32 or int64, got f32");
    paradec_tensor ids_gpu = idt;
    ids_gpu.device.device_type = PARADEC_DEVICE_CUDA;
    paradec_block_table on_gpu = {&ids_gpu, &cntt};
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &on_gpu, &pt, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_DEVICE, "block_table.page_ids: expected host memory");
    paradec_tensor pt_gpu = pt;
    pt_gpu.device.device_type = PARADEC_DEVICE_CUDA;
    EXPECT(paradec_op_attention_quant(NULL, &qt, &flat, &pt_gpu, NULL, 0, 1.0f, &ot),
           PARADEC_ERR_DEVICE, "past_len: expected host memory");
    float narrow[1] = {0};
    int64_t m10[2] = {1, 0};
    paradec_tensor mt = pd_host(narrow, PD_F32, 2, m10);
    EXPECT(paradec_op_paged_attention(NULL, &qt, &pool, &table, &pt, &mt, 0, 1.0f, &ot),
           PARADEC_ERR_SHAPE, "mask: expected [1, ≥1]");
    /* Two sequences writing one pool row (sequence 1's page 0 is sequence 0's). */
    int32_t ids2[4] = {0, 1, 0, 2};
    int64_t cnt2[2] = {1, 1}, past2[2] = {3, 3}, two[1] = {2}, ids2_s[2] = {2, 2},
            t2s[4] = {2, 1, 1, 32};
    paradec_tensor idt2 = pd_host(ids2, PD_I32, 2, ids2_s), cnt2t = pd_host(cnt2, PD_I64, 1, two),
                   pt2 = pd_host(past2, PD_I64, 1, two), q2 = pd_host(q, PD_F32, 4, t2s),
                   k2 = pd_host(k, PD_F32, 4, t2s), v2 = pd_host(v, PD_F32, 4, t2s);
    paradec_block_table shared = {&idt2, &cnt2t};
    EXPECT(paradec_op_paged_rotary_cache_write(NULL, &q2, &k2, &v2, NULL, NULL, &pt2, &shared,
                                               &pool),
           PARADEC_ERR_INVALID_ARGUMENT, "sequences 0 and 1 would both write pool row 3");

    /* Overlapping outputs: K and V in one buffer; an output over the pages. */
    bad = flat;
    bad.v = bad.k;
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &qt, &kt, &vt, NULL, NULL, &pt, &bad),
           PARADEC_ERR_INVALID_ARGUMENT, "pages.k and pages.v overlap");
    paradec_tensor over = pd_host(ck, PD_F32, 4, ts);
    EXPECT(paradec_op_attention_quant(NULL, &qt, &flat, &pt, NULL, 0, 1.0f, &over),
           PARADEC_ERR_INVALID_ARGUMENT, "out and pages.k overlap");

    /* CUDA tensors: the plain calls name their _ws form; a _ws call needs a device workspace
     * and pages at 16-byte aligned addresses (host arrays stand in for device memory here:
     * every call fails before touching them). */
    paradec_tensor dq = qt, dk = kt, dv = vt, dck = ckt, dcv = cvt, dcks = ckst, dcvs = cvst;
    paradec_tensor *dev[] = {&dq, &dk, &dv, &dck, &dcv, &dcks, &dcvs};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        dev[i]->device.device_type = PARADEC_DEVICE_CUDA;
    paradec_cache_pages dflat = {PARADEC_CACHE_MODE_Q8, &dck, &dcks, NULL, &dcv, &dcvs, NULL};
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &dq, &dk, &dv, NULL, NULL, &pt, &dflat),
           PARADEC_ERR_UNSUPPORTED, "call paradec_op_rotary_cache_write_quant_ws");
    EXPECT(paradec_op_paged_attention(NULL, &dq, &dflat, &table, &pt, NULL, 0, 1.0f, &dq),
           PARADEC_ERR_UNSUPPORTED, "call paradec_op_paged_attention_ws");
    EXPECT(paradec_op_attention_quant_ws(NULL, NULL, &dq, &dflat, &pt, NULL, 0, 1.0f, &dk),
           PARADEC_ERR_UNSUPPORTED, "the CUDA kernels take f16 or bf16 tensors, not f32");
    EXPECT(paradec_op_rotary_cache_write_quant_ws(NULL, NULL, &qt, &kt, &vt, NULL, NULL, &pt,
                                                  &dflat),
           PARADEC_ERR_DEVICE, "pages.k is on cuda:0 but q is on cpu");

    /* f16 device queries: a _ws call needs a workspace on their device, and the pages must
     * start at 16-byte aligned addresses. */
    paradec_device gpu = {PARADEC_DEVICE_CUDA, 0};
    paradec_tensor hq = pd_tensor(q, gpu, PD_F16, 4, ts), hout = pd_tensor(out, gpu, PD_F16, 4, ts);
    EXPECT(paradec_op_attention_quant_ws(NULL, NULL, &hq, &dflat, &pt, NULL, 0, 1.0f, &hout),
           PARADEC_ERR_NULL_ARGUMENT, "`workspace`");
    paradec_workspace *host_ws = NULL;
    CHECK(paradec_workspace_create(PD_CPU, PD_F32, &host_ws));
    EXPECT(paradec_op_paged_attention_ws(NULL, host_ws, &hq, &dflat, &table, &pt, NULL, 0, 1.0f,
                                         &hout),
           PARADEC_ERR_DEVICE, "workspace: on cpu, but the tensors are on cuda:0");
    paradec_workspace_free(host_ws);
    paradec_tensor shifted = dck;
    shifted.byte_offset = 8;
    paradec_cache_pages misaligned = dflat;
    misaligned.k = &shifted;
    EXPECT(paradec_op_attention_quant_ws(NULL, NULL, &hq, &misaligned, &pt, NULL, 0, 1.0f, &hout),
           PARADEC_ERR_INVALID_ARGUMENT, "pages.k: CUDA pages must start at a 16-byte aligned");

    /* More pages a call cannot use: E5M2 with bf16 queries, E4M3 head scales of the wrong
     * length, pages of rank 3, kv heads that differ from k's or do not divide q's heads. */
    paradec_dtype bf16 = {PARADEC_DTYPE_BFLOAT, 16, 1};
    paradec_tensor bq = pd_host(q, bf16, 4, ts);
    paradec_cache_pages e5 = {PARADEC_CACHE_MODE_FP8_E5M2, &ckt, NULL, NULL, &cvt, NULL, NULL};
    EXPECT(paradec_op_attention_quant(NULL, &bq, &e5, &pt, NULL, 0, 1.0f, &bq),
           PARADEC_ERR_UNSUPPORTED, "fp8e5m2 truncates fp16 values: not for bf16 tensors");
    float hs2[2] = {1, 1};
    int64_t two_s[1] = {2};
    paradec_tensor hs2t = pd_host(hs2, PD_F32, 1, two_s);
    paradec_cache_pages e4 = {PARADEC_CACHE_MODE_FP8_E4M3, &ckt, NULL, &hs2t, &cvt, NULL, &hs2t};
    EXPECT(paradec_op_attention_quant(NULL, &qt, &e4, &pt, NULL, 0, 1.0f, &ot), PARADEC_ERR_SHAPE,
           "pages.k_head_scales: expected shape [1], got [2]");
    int64_t r3[3] = {1, 4, 32};
    paradec_tensor ck3 = pd_host(ck, PD_U8, 3, r3);
    bad = flat;
    bad.k = &ck3;
    EXPECT(paradec_op_attention_quant(NULL, &qt, &bad, &pt, NULL, 0, 1.0f, &ot), PARADEC_ERR_SHAPE,
           "pages.k: expected [batch, capacity, kv_heads, …]");
    EXPECT(paradec_op_rotary_cache_write_quant(NULL, &q2h, &k2h, &k2h, NULL, NULL, &pt, &flat),
           PARADEC_ERR_SHAPE, "pages.k: 1 kv heads, but k has 2");
    int64_t q3h[4] = {1, 1, 3, 32}, c2h[4] = {1, 4, 2, 32}, c2hs[4] = {1, 4, 2, 1};
    paradec_tensor q3 = pd_host(q, PD_F32, 4, q3h), o3 = pd_host(out, PD_F32, 4, q3h),
                   kk2 = pd_host(ck, PD_U8, 4, c2h), vv2 = pd_host(cv, PD_U8, 4, c2h),
                   kks2 = pd_host(pks, PD_F16, 4, c2hs), vvs2 = pd_host(pvs, PD_F16, 4, c2hs);
    paradec_cache_pages heads2 = {PARADEC_CACHE_MODE_Q8, &kk2, &kks2, NULL, &vv2, &vvs2, NULL};
    EXPECT(paradec_op_attention_quant(NULL, &q3, &heads2, &pt, NULL, 0, 1.0f, &o3),
           PARADEC_ERR_SHAPE, "pages.k: 2 kv heads do not divide q's 3 heads");
    EXPECT(paradec_cache_bytes(2, 1, 4, 3, 32, PD_F32, NULL, NULL), PARADEC_ERR_NULL_ARGUMENT,
           "`out_bytes`");

    int untouched = 1;
    for (int i = 0; i < 4 * 32; i++) untouched &= ck[i] == 0 && cv[i] == 0;
    for (int i = 0; i < 32 * 32; i++) untouched &= pk[i] == 0 && pv[i] == 0;
    for (int i = 0; i < 32; i++) untouched &= pks[i] == 0 && out[i] == sentinel && q[i] == 0.5f;
    expect_true(untouched, "refused cache-mode and paged calls wrote nothing");
}

/* Caches in a mode: bad options are named, the cache handle is left untouched. */
static void cache_mode_errors(paradec_model *m) {
    paradec_cache *const sentinel = (paradec_cache *)&failures;
    paradec_cache *c = sentinel;
    paradec_cache_options o;
    EXPECT(paradec_cache_options_init(NULL), PARADEC_ERR_NULL_ARGUMENT, "`options`");
    CHECK(paradec_cache_options_init(&o));
    o.mode = 9;
    EXPECT(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "options.mode: 9 is not a cache mode");
    float scales[7] = {1, 1, 1, 1, 1, 1, 1};
    o.mode = PARADEC_CACHE_MODE_FP8_E4M3;
    o.k_scales = scales;
    o.n_k_scales = 7;
    EXPECT(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c),
           PARADEC_ERR_INVALID_ARGUMENT,
           "options.n_k_scales: 7 scales, expected 2 layers × 3 KV heads = 6");
    o.n_k_scales = 6;
    scales[2] = -1;
    EXPECT(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "k_scales[2] = -1 is not a positive finite scale");
    scales[2] = 1;
    o.k_scales = NULL;
    EXPECT(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c),
           PARADEC_ERR_NULL_ARGUMENT, "options.k_scales");
    o.mode = PARADEC_CACHE_MODE_Q6;
    o.k_scales = scales;
    EXPECT(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "only the FP8 E4M3 mode takes scales, not mode q6");
    CHECK(paradec_cache_options_init(&o));
    o.mode = PARADEC_CACHE_MODE_FP8_E5M2;
    paradec_dtype bf16 = {PARADEC_DTYPE_BFLOAT, 16, 1};
    EXPECT(paradec_cache_create_with_options(m, 1, 4, bf16, PD_CPU, &o, &c),
           PARADEC_ERR_UNSUPPORTED, "fp8e5m2 truncates fp16 values");
    o.struct_size = 4;
    EXPECT(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c),
           PARADEC_ERR_STRUCT_SIZE, "paradec_cache_options.struct_size is 4");
    EXPECT(paradec_cache_create_for_layer_with_options(NULL, 1, 4, PD_F32, PD_CPU, NULL, &c),
           PARADEC_ERR_NULL_ARGUMENT, "`layer`");
    expect_true(c == sentinel, "failed cache creates leave *out untouched");
    CHECK(paradec_cache_options_init(&o));
    o.mode = PARADEC_CACHE_MODE_Q4;
    size_t bytes = 7;
    EXPECT(paradec_cache_bytes(2, 1, 4, 3, 16, PD_F32, &o, &bytes), PARADEC_ERR_UNSUPPORTED,
           "q4: head_dim 16 is not a multiple of 32");
    EXPECT(paradec_cache_bytes(2, 1, 4, 3, 32, PD_I64, &o, &bytes), PARADEC_ERR_DTYPE,
           "dtype: expected f32, f16 or bf16, got i64");
    expect_true(bytes == 7, "a failed size query leaves *out_bytes untouched");
    paradec_cache_info info;
    info.struct_size = 0;
    EXPECT(paradec_cache_describe(NULL, &info), PARADEC_ERR_NULL_ARGUMENT, "`cache`");
    CHECK(paradec_cache_create_with_options(m, 1, 4, PD_F32, PD_CPU, &o, &c));
    EXPECT(paradec_cache_describe(c, &info), PARADEC_ERR_STRUCT_SIZE,
           "paradec_cache_info.struct_size is 0");
    paradec_cache_free(c);
}

/* A block table of two sequences in host memory: page ids int32 [2, 3] (room for a third
 * row, for a table of the wrong batch), page counts int64 [2]. */
typedef struct {
    int32_t ids[9];
    int64_t count[2];
    int64_t ids_shape[2], count_shape[1];
    paradec_tensor ids_t, count_t;
    paradec_block_table t;
} table2;

static const paradec_block_table *table2_set(table2 *t, int32_t a0, int32_t a1, int32_t b0,
                                             int32_t b1, int64_t c0, int64_t c1) {
    memset(t, 0, sizeof *t);
    const int32_t ids[6] = {a0, a1, -1, b0, b1, -1};
    memcpy(t->ids, ids, sizeof ids);
    t->count[0] = c0;
    t->count[1] = c1;
    t->ids_shape[0] = 2;
    t->ids_shape[1] = 3;
    t->count_shape[0] = 2;
    t->ids_t = pd_host(t->ids, PD_I32, 2, t->ids_shape);
    t->count_t = pd_host(t->count, PD_I64, 1, t->count_shape);
    t->t.page_ids = &t->ids_t;
    t->t.page_count = &t->count_t;
    return &t->t;
}

/* The paged cache's error paths: making one; a paged cache given to the plain forwards and a
 * block table given with a contiguous cache; the _paged forwards' block tables (their tensors,
 * then their values against the pool and the call), through the model and both layer forms;
 * graph capture; the workspace plan; describe with an older header's struct. Outputs (logits,
 * hidden, *out) stay untouched. */
static void paged_errors(paradec_model *m, const paradec_model_info *info,
                         paradec_workspace *ws) {
    int sentinel_storage = 0;
    paradec_cache *const sentinel = (paradec_cache *)&sentinel_storage;
    paradec_cache *c = sentinel;
    paradec_cache_options native; /* the native mode fits any model's heads */
    CHECK(paradec_cache_options_init(&native));

    /* Making a paged cache. */
    EXPECT(paradec_cache_create_paged(NULL, 6, 4, PD_F32, PD_CPU, &native, &c),
           PARADEC_ERR_NULL_ARGUMENT, "`model`");
    EXPECT(paradec_cache_create_paged(m, 6, 4, PD_F32, PD_CPU, &native, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`out`");
    EXPECT(paradec_cache_create_paged(m, 0, 4, PD_F32, PD_CPU, &native, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "0 pages of 4 positions");
    EXPECT(paradec_cache_create_paged(m, 6, 0, PD_F32, PD_CPU, &native, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "6 pages of 0 positions");
    EXPECT(paradec_cache_create_paged(m, (size_t)1 << 31, 4, PD_F32, PD_CPU, &native, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "block table entries are int32");
    EXPECT(paradec_cache_create_paged(m, 6, 4, PD_F16, PD_CPU, NULL, &c),
           PARADEC_ERR_UNSUPPORTED, "native pages on the CPU hold f32 values");
    EXPECT(paradec_cache_create_paged(m, 6, 4, PD_I32, PD_CPU, &native, &c), PARADEC_ERR_DTYPE,
           "cache dtype: expected f32");
    paradec_cache_options bad = native;
    bad.mode = 7;
    EXPECT(paradec_cache_create_paged(m, 6, 4, PD_F32, PD_CPU, &bad, &c),
           PARADEC_ERR_INVALID_ARGUMENT, "options.mode: 7 is not a cache mode");
    EXPECT(paradec_cache_create_paged_for_layer(NULL, 6, 4, PD_F32, PD_CPU, &native, &c),
           PARADEC_ERR_NULL_ARGUMENT, "`layer`");
    expect_true(c == sentinel, "failed paged cache creates leave *out untouched");

    paradec_cache *pool = NULL, *flat = NULL;
    CHECK(paradec_cache_create_paged(m, 6, 4, PD_F32, PD_CPU, &native, &pool));
    CHECK(paradec_cache_create_with_options(m, 2, 16, PD_F32, PD_CPU, &native, &flat));
    const size_t V = info->vocab, H = info->hidden;
    float *logits = malloc(2 * 3 * V * sizeof *logits);
    float *hidden = malloc(2 * 2 * H * sizeof *hidden);
    int64_t ids[6] = {1, 2, 3, 4, 5, 6}, ids3[2] = {2, 3}, ids2[2] = {2, 2};
    int64_t lg3[3] = {2, 3, (int64_t)V}, lg2[3] = {2, 2, (int64_t)V}, hs[3] = {2, 2, (int64_t)H};
    paradec_tensor idt3 = pd_host(ids, PD_I64, 2, ids3), idt2 = pd_host(ids, PD_I64, 2, ids2);
    paradec_tensor lgt3 = pd_host(logits, PD_F32, 3, lg3), lgt2 = pd_host(logits, PD_F32, 3, lg2);
    paradec_tensor ht = pd_host(hidden, PD_F32, 3, hs);
    int64_t zero[2] = {0, 0}, past[2] = {0, 0};
    paradec_attn_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.batch = 2;
    p.q_len = 3;
    p.past_len = zero;
    table2 t;
    /* A prefill of 3 tokens per sequence: sequence 0 in page 4, sequence 1 in page 1. */
    CHECK(paradec_model_forward_paged(m, NULL, ws, &idt3, &p, pool,
                                      table2_set(&t, 4, -1, 1, -1, 1, 1), NULL, 0, &lgt3));
    /* From here every call would rewrite positions 0 and 1 of both sequences. */
    p.q_len = 2;
    p.past_len = past;
    for (size_t i = 0; i < 2 * 2 * V; i++) logits[i] = 12345.0f;
    for (size_t i = 0; i < 2 * 2 * H; i++) hidden[i] = 0.25f;
    paradec_layer *layer = NULL;
    CHECK(paradec_model_layer(m, 1, &layer));
    paradec_interm *const im_sentinel = (paradec_interm *)&sentinel_storage;
    paradec_interm *im = im_sentinel;

    /* A paged cache given to the plain forwards: no block table. */
    EXPECT(paradec_model_forward(m, NULL, ws, &idt2, &p, pool, NULL, 0, &lgt2),
           PARADEC_ERR_INVALID_ARGUMENT, "a paged cache (paradec_cache_create_paged) is read "
                                         "through the call's block table: use "
                                         "paradec_model_forward_paged");
    EXPECT(paradec_layer_forward(layer, NULL, ws, &ht, &p, pool, NULL, 0),
           PARADEC_ERR_INVALID_ARGUMENT, "use paradec_layer_forward_paged");
    EXPECT(paradec_layer_forward_interm(layer, NULL, ws, &ht, &p, pool, NULL, 0, &im),
           PARADEC_ERR_INVALID_ARGUMENT, "use paradec_layer_forward_interm_paged");
    /* A block table given with a contiguous cache. */
    const paradec_block_table *good = table2_set(&t, 4, -1, 1, -1, 1, 1);
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, flat, good, NULL, 0, &lgt2),
           PARADEC_ERR_INVALID_ARGUMENT, "block_table: given, but the cache is contiguous");
    EXPECT(paradec_layer_forward_paged(layer, NULL, ws, &ht, &p, flat, good, NULL, 0),
           PARADEC_ERR_INVALID_ARGUMENT, "block_table: given, but the cache is contiguous");
    /* No cache, no table. */
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, NULL, good, NULL, 0, &lgt2),
           PARADEC_ERR_NULL_ARGUMENT, "`cache`");
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool, NULL, NULL, 0, &lgt2),
           PARADEC_ERR_NULL_ARGUMENT, "`block_table`");
    EXPECT(paradec_layer_forward_paged(layer, NULL, ws, &ht, &p, pool, NULL, NULL, 0),
           PARADEC_ERR_NULL_ARGUMENT, "`block_table`");
    EXPECT(paradec_layer_forward_interm_paged(layer, NULL, ws, &ht, &p, pool, good, NULL, 0,
                                              NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`out`");
    t.t.page_ids = NULL;
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool, &t.t, NULL, 0, &lgt2),
           PARADEC_ERR_NULL_ARGUMENT, "block_table.page_ids");

    /* The table's tensors. */
    table2_set(&t, 4, -1, 1, -1, 1, 1);
    t.ids_t.dtype = PD_I64; /* 6 int32 slots read as 3 int64: a shape of [2, 3] is too many */
    t.ids_shape[1] = 1;
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool, &t.t, NULL, 0, &lgt2),
           PARADEC_ERR_DTYPE, "block_table.page_ids");
    table2_set(&t, 4, -1, 1, -1, 1, 1);
    t.count_t.dtype = PD_F32; /* two int64 slots read as f32 */
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool, &t.t, NULL, 0, &lgt2),
           PARADEC_ERR_DTYPE, "block_table.page_count: expected int32 or int64");
    table2_set(&t, 4, -1, 1, -1, 1, 1);
    t.ids_shape[0] = 3;
    EXPECT(paradec_layer_forward_paged(layer, NULL, ws, &ht, &p, pool, &t.t, NULL, 0),
           PARADEC_ERR_SHAPE, "block_table.page_ids: expected [2, max_pages]");
    table2_set(&t, 4, -1, 1, -1, 1, 1);
    t.count_shape[0] = 1;
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool, &t.t, NULL, 0, &lgt2),
           PARADEC_ERR_SHAPE, "block_table.page_count");
    table2_set(&t, 4, -1, 1, -1, 1, 1);
    t.count_t.device.device_type = PARADEC_DEVICE_CUDA;
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool, &t.t, NULL, 0, &lgt2),
           PARADEC_ERR_DEVICE, "block_table.page_count: expected host memory");

    /* The table's values against the pool and the call. */
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool,
                                       table2_set(&t, 4, -1, 1, -1, 1, -1), NULL, 0, &lgt2),
           PARADEC_ERR_INVALID_ARGUMENT, "block_table.page_count[1] = -1 is negative");
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool,
                                       table2_set(&t, 4, 0, 1, -1, 4, 1), NULL, 0, &lgt2),
           PARADEC_ERR_INVALID_ARGUMENT,
           "sequence 0 owns 4 pages, more than the table's 3 per sequence");
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool,
                                       table2_set(&t, 4, -1, 9, -1, 1, 1), NULL, 0, &lgt2),
           PARADEC_ERR_INVALID_ARGUMENT, "sequence 1's page 0 is 9, outside the pool of 6 pages");
    EXPECT(paradec_layer_forward_paged(layer, NULL, ws, &ht, &p, pool,
                                       table2_set(&t, -3, -1, 1, -1, 1, 1), NULL, 0),
           PARADEC_ERR_INVALID_ARGUMENT, "sequence 0's page 0 is -3, outside the pool");
    past[1] = 3; /* sequence 1 reaches 5 positions, but owns one page of 4 */
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool,
                                       table2_set(&t, 4, -1, 1, -1, 1, 1), NULL, 0, &lgt2),
           PARADEC_ERR_CAPACITY, "sequence 1 reaches position 5 (past 3 + 2 new)");
    EXPECT(paradec_layer_forward_interm_paged(layer, NULL, ws, &ht, &p, pool, &t.t, NULL, 0,
                                              &im),
           PARADEC_ERR_CAPACITY, "owns 1 pages of 4 positions");
    past[1] = 0;
    EXPECT(paradec_model_forward_paged(m, NULL, ws, &idt2, &p, pool,
                                       table2_set(&t, 4, -1, 4, -1, 1, 1), NULL, 0, &lgt2),
           PARADEC_ERR_INVALID_ARGUMENT, "sequences 0 and 1 would both write pool row 16");
    int untouched = im == im_sentinel;
    for (size_t i = 0; i < 2 * 2 * V; i++) untouched &= logits[i] == 12345.0f;
    for (size_t i = 0; i < 2 * 2 * H; i++) untouched &= hidden[i] == 0.25f;
    expect_true(untouched, "refused paged forwards leave logits, hidden and *out untouched");

    /* Graphs over a paged cache: the plain capture names the _paged one; the _paged capture
     * checks its arguments, then needs a model on a CUDA device (this one is on the host). */
    paradec_model_graph *g = NULL;
    EXPECT(paradec_model_capture_decode(m, NULL, pool, 2, 1, false, &g), PARADEC_ERR_UNSUPPORTED,
           "captured with paradec_model_capture_decode_paged");
    EXPECT(paradec_model_capture_decode_paged(NULL, NULL, pool, 2, 1, false, 3, &g),
           PARADEC_ERR_NULL_ARGUMENT, "`model`");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, pool, 2, 1, false, 3, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`out`");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, flat, 2, 1, false, 3, &g),
           PARADEC_ERR_INVALID_ARGUMENT,
           "a contiguous cache: capture it with paradec_model_capture_decode");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, pool, 2, 1, false, 0, &g),
           PARADEC_ERR_INVALID_ARGUMENT, "max_pages: 0 pages per sequence");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, pool, 2, 1, false, 7, &g),
           PARADEC_ERR_INVALID_ARGUMENT, "holds 1 ..= 6");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, pool, 2, 17, false, 3, &g),
           PARADEC_ERR_INVALID_ARGUMENT, "at most 16");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, pool, 3, 16, false, 6, &g),
           PARADEC_ERR_CAPACITY, "need 12 pages of 4 positions, the pool has 6");
    EXPECT(paradec_model_capture_decode_paged(m, NULL, pool, 2, 1, false, 3, &g),
           paradec_has_cuda() ? PARADEC_ERR_DEVICE : PARADEC_ERR_NO_DEVICE,
           paradec_has_cuda() ? "CUDA device" : "without the `cuda` feature");
    expect_true(g == NULL, "a refused capture leaves *out untouched");
    EXPECT(paradec_model_graph_step_paged(NULL, NULL, &idt2, &p, good, &lgt2),
           PARADEC_ERR_NULL_ARGUMENT, "`graph`");

    /* The workspace plan of a paged forward. */
    size_t bytes = 7;
    EXPECT(paradec_workspace_bytes_paged(NULL, 8, 4, 4, PD_F16, &bytes),
           PARADEC_ERR_NULL_ARGUMENT, "`model`");
    EXPECT(paradec_workspace_bytes_paged(m, 8, 4, 4, PD_F16, NULL), PARADEC_ERR_NULL_ARGUMENT,
           "`out_bytes`");
    EXPECT(paradec_workspace_bytes_paged(m, 0, 4, 4, PD_F16, &bytes),
           PARADEC_ERR_INVALID_ARGUMENT, "tokens (0), max_pages (4) and page_size (4)");
    EXPECT(paradec_workspace_bytes_paged(m, 8, (size_t)-1, 4, PD_F16, &bytes),
           PARADEC_ERR_INVALID_ARGUMENT, "overflows");
    EXPECT(paradec_workspace_bytes_paged(m, 8, 4, 4, PD_I64, &bytes), PARADEC_ERR_DTYPE,
           "dtype: expected f32, f16 or bf16, got i64");
    expect_true(bytes == 7, "failed plans leave *out_bytes untouched");

    /* describe: an older header's struct (without page_size / num_pages) gets what it has
     * room for; a smaller one is refused. */
    paradec_cache_info info_v1;
    memset(&info_v1, 0x5a, sizeof info_v1);
    size_t v1 = offsetof(paradec_cache_info, page_size);
    info_v1.struct_size = v1;
    CHECK(paradec_cache_describe(pool, &info_v1));
    size_t after;
    memset(&after, 0x5a, sizeof after);
    expect_true(info_v1.struct_size == v1 && info_v1.batch == 0 &&
                    memcmp(&info_v1.page_size, &after, sizeof after) == 0 &&
                    memcmp(&info_v1.num_pages, &after, sizeof after) == 0,
                "describe with an older header's struct_size writes only its fields");
    info_v1.struct_size = v1 - 1;
    EXPECT(paradec_cache_describe(pool, &info_v1), PARADEC_ERR_STRUCT_SIZE,
           "paradec_cache_info.struct_size is");

    free(logits);
    free(hidden);
    paradec_layer_free(layer);
    paradec_cache_free(pool);
    paradec_cache_free(flat);
}

static void model_errors(const char *model_dir) {
    char tmp[] = "/tmp/paradec-errors-XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        exit(2);
    }
    int sentinel_storage = 0;
    paradec_model *const sentinel = (paradec_model *)&sentinel_storage;
    paradec_model *m = sentinel;

    /* Bad model directories. */
    EXPECT(paradec_model_load(NULL, NULL, &m), PARADEC_ERR_NULL_ARGUMENT, "`dir`");
    EXPECT(paradec_model_load(model_dir, NULL, NULL), PARADEC_ERR_NULL_ARGUMENT, "`out`");
    EXPECT(paradec_model_load("/nonexistent/model", NULL, &m), PARADEC_ERR_IO,
           "/nonexistent/model/config.json");
    write_file(tmp, "config.json", "{not json");
    EXPECT(paradec_model_load(tmp, NULL, &m), PARADEC_ERR_BAD_FORMAT, "config.json");
    write_file(tmp, "config.json", "{\"model_type\": \"llama\"}");
    EXPECT(paradec_model_load(tmp, NULL, &m), PARADEC_ERR_UNSUPPORTED, "llama");
    write_file(tmp, "config.json",
               "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"num_attention_heads\": 2, "
               "\"num_hidden_layers\": 1, \"intermediate_size\": 16, \"vocab_size\": 10, "
               "\"rotary_pct\": 0.5}");
    EXPECT(paradec_model_load(tmp, NULL, &m), PARADEC_ERR_NOT_FOUND, "no *.safetensors");
    write_file(tmp, "model.safetensors", "garbage");
    EXPECT(paradec_model_load(tmp, NULL, &m), PARADEC_ERR_BAD_FORMAT, "model.safetensors");
    expect_true(m == sentinel, "failed loads leave *out untouched");
    paradec_memory mem;
    mem.struct_size = 0;
    EXPECT(paradec_model_memory(model_dir, NULL, 1, 8, PD_F32, &mem), PARADEC_ERR_STRUCT_SIZE,
           "paradec_memory.struct_size is 0");
    paradec_lora *lora = NULL;
    EXPECT(paradec_lora_load(tmp, &lora), PARADEC_ERR_IO, "adapter_config.json");
    remove_file(tmp, "config.json");
    remove_file(tmp, "model.safetensors");
    rmdir(tmp);

    /* Options whose size is wrong. */
    paradec_model_options opts;
    CHECK(paradec_model_options_init(&opts));
    opts.struct_size = 4;
    EXPECT(paradec_model_load(model_dir, &opts, &m), PARADEC_ERR_STRUCT_SIZE,
           "paradec_model_options.struct_size is 4");
    struct {
        paradec_model_options v1;
        uint64_t future_field;
    } newer;
    memset(&newer, 0, sizeof newer);
    CHECK(paradec_model_options_init(&newer.v1));
    newer.v1.struct_size = sizeof newer;
    newer.future_field = 1;
    EXPECT(paradec_model_load(model_dir, &newer.v1, &m), PARADEC_ERR_STRUCT_SIZE,
           "a newer header's field");
    newer.future_field = 0; /* A larger struct whose unknown fields are zero is fine. */
    EXPECT(paradec_model_load(model_dir, &newer.v1, &m), PARADEC_OK, NULL);

    paradec_model_info info;
    info.struct_size = sizeof info;
    CHECK(paradec_model_describe(m, &info));
    EXPECT(paradec_model_describe(NULL, &info), PARADEC_ERR_NULL_ARGUMENT, "`model`");

    /* An exhausted cache, and calls that do not fit it. */
    paradec_cache *cache = NULL;
    paradec_workspace *ws = NULL;
    EXPECT(paradec_cache_create(m, 1, 4, PD_I32, PD_CPU, &cache), PARADEC_ERR_DTYPE,
           "cache dtype: expected f32");
    EXPECT(paradec_cache_create(m, 0, 4, PD_F32, PD_CPU, &cache), PARADEC_ERR_INVALID_ARGUMENT,
           "must all be positive");
    CHECK(paradec_cache_create(m, 1, 4, PD_F32, PD_CPU, &cache));
    EXPECT(paradec_workspace_create(PD_CPU, PD_F32, NULL), PARADEC_ERR_NULL_ARGUMENT, "`out`");
    CHECK(paradec_workspace_create(PD_CPU, PD_F32, &ws));
    size_t cap = 7;
    EXPECT(paradec_workspace_capacity(NULL, &cap), PARADEC_ERR_NULL_ARGUMENT, "`workspace`");
    expect_true(cap == 7, "a failed capacity query leaves *out_bytes untouched");
    CHECK(paradec_workspace_reserve(ws, (size_t)1 << 20));
    CHECK(paradec_workspace_capacity(ws, &cap));
    expect_true(cap == 0, "a CPU workspace reserves no arena");
    int64_t ids[4] = {1, 2, 3, 4}, ids_shape[2] = {1, 4}, lg_shape[3] = {1, 4, 0};
    lg_shape[2] = (int64_t)info.vocab;
    float *logits = malloc(4 * info.vocab * sizeof *logits);
    paradec_tensor idt = pd_host(ids, PD_I64, 2, ids_shape);
    paradec_tensor lgt = pd_host(logits, PD_F32, 3, lg_shape);
    paradec_attn_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.batch = 1;
    p.q_len = 4;
    CHECK(paradec_model_forward(m, NULL, ws, &idt, &p, cache, NULL, 0, &lgt));
    int64_t past[1] = {4};
    p.q_len = 1;
    p.past_len = past;
    int64_t one_shape[2] = {1, 1}, lg1_shape[3] = {1, 1, 0};
    lg1_shape[2] = (int64_t)info.vocab;
    paradec_tensor id1 = pd_host(ids, PD_I64, 2, one_shape);
    paradec_tensor lg1 = pd_host(logits, PD_F32, 3, lg1_shape);
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, cache, NULL, 0, &lg1),
           PARADEC_ERR_CAPACITY, "exceed its capacity 4");
    past[0] = -1;
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, cache, NULL, 0, &lg1),
           PARADEC_ERR_INVALID_ARGUMENT, "params.past_len[0] = -1");
    past[0] = 1;
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, NULL, NULL, 0, &lg1),
           PARADEC_ERR_INVALID_ARGUMENT, "needs a KV cache");
    p.past_len = NULL;
    p.batch = 2;
    int64_t two[2] = {2, 1}, lg2_shape[3] = {2, 1, 0};
    lg2_shape[2] = (int64_t)info.vocab;
    paradec_tensor id2 = pd_host(ids, PD_I64, 2, two);
    paradec_tensor lg2 = pd_host(logits, PD_F32, 3, lg2_shape);
    EXPECT(paradec_model_forward(m, NULL, ws, &id2, &p, cache, NULL, 0, &lg2), PARADEC_ERR_SHAPE,
           "made for batch 1");
    p.batch = 1;
    int64_t bad_mask[1] = {2};
    p.attention_mask = bad_mask;
    p.mask_slots = 1;
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, NULL, NULL, 0, &lg1),
           PARADEC_ERR_INVALID_ARGUMENT, "must be 0 or 1, got 2");
    p.attention_mask = NULL;
    p.struct_size = 0;
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, NULL, NULL, 0, &lg1),
           PARADEC_ERR_STRUCT_SIZE, "paradec_attn_params.struct_size is 0");
    p.struct_size = sizeof p;
    ids[0] = (int64_t)info.vocab;
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, NULL, NULL, 0, &lg1),
           PARADEC_ERR_INVALID_ARGUMENT, "ids[0]");
    ids[0] = 1;
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, NULL, NULL, 0, &lgt), PARADEC_ERR_SHAPE,
           "logits: expected");
    paradec_tensor fids = pd_host(logits, PD_F32, 2, one_shape);
    EXPECT(paradec_model_forward(m, NULL, ws, &fids, &p, NULL, NULL, 0, &lg1), PARADEC_ERR_DTYPE,
           "ids: expected int32 or int64");
    EXPECT(paradec_model_forward(m, NULL, NULL, &id1, &p, NULL, NULL, 0, &lg1),
           PARADEC_ERR_NULL_ARGUMENT, "`workspace`");
    EXPECT(paradec_model_forward(m, NULL, ws, &id1, &p, NULL, NULL, 1, &lg1),
           PARADEC_ERR_NULL_ARGUMENT, "`loras`");

    cache_mode_errors(m);
    paged_errors(m, &info, ws);

    /* Layers. */
    paradec_layer *layer = NULL;
    EXPECT(paradec_model_layer(m, 99, &layer), PARADEC_ERR_INVALID_ARGUMENT, "index: 99");
    CHECK(paradec_model_layer(m, 0, &layer));
    EXPECT(paradec_layer_rank_reduce(layer, 0.0f), PARADEC_ERR_INVALID_ARGUMENT,
           "fraction 0 must be in (0, 1]");
    EXPECT(paradec_model_rank_reduce(m, 2.0f), PARADEC_ERR_INVALID_ARGUMENT, "fraction 2");
    EXPECT(paradec_layer_numel(layer, NULL), PARADEC_ERR_NULL_ARGUMENT, "`out`");
    float hidden[4 * 512];
    int64_t hs[2] = {4, 3};
    paradec_tensor ht = pd_host(hidden, PD_F32, 2, hs);
    p.q_len = 4;
    EXPECT(paradec_layer_forward(layer, NULL, ws, &ht, &p, NULL, NULL, 0), PARADEC_ERR_SHAPE,
           "hidden: expected");
    paradec_interm *im = NULL;
    EXPECT(paradec_layer_forward_interm(layer, NULL, ws, &ht, &p, NULL, NULL, 0, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`out`");
    EXPECT(paradec_interm_get(NULL, 0, &ht), PARADEC_ERR_NULL_ARGUMENT, "`interm`");
    hs[1] = (int64_t)info.hidden;
    memset(hidden, 0, sizeof hidden);
    CHECK(paradec_layer_forward_interm(layer, NULL, ws, &ht, &p, NULL, NULL, 0, &im));
    EXPECT(paradec_interm_get(im, 9, &ht), PARADEC_ERR_INVALID_ARGUMENT, "which: 9");
    paradec_interm_free(im);
    const char *cfg = "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, "
                      "\"num_attention_heads\": 2, \"num_hidden_layers\": 1, "
                      "\"intermediate_size\": 16, \"vocab_size\": 10, \"rotary_pct\": 0.5}";
    paradec_layer *built = NULL;
    EXPECT(paradec_layer_create(cfg, 0, NULL, 0, &built), PARADEC_ERR_NOT_FOUND,
           "gpt_neox.layers.0.input_layernorm.weight");
    EXPECT(paradec_layer_create(cfg, 3, NULL, 0, &built), PARADEC_ERR_INVALID_ARGUMENT,
           "layer_index: 3");
    EXPECT(paradec_layer_create(cfg, 0, NULL, 2, &built), PARADEC_ERR_NULL_ARGUMENT,
           "`tensors`");
    expect_true(built == NULL, "failed layer_create leaves *out untouched");

    /* Decode-step graphs: they need a model on a CUDA device (this one is on the host). */
    paradec_model_graph *graph = NULL;
    EXPECT(paradec_model_capture_decode(NULL, NULL, cache, 1, 1, false, &graph),
           PARADEC_ERR_NULL_ARGUMENT, "`model`");
    EXPECT(paradec_model_capture_decode(m, NULL, cache, 1, 1, false, NULL),
           PARADEC_ERR_NULL_ARGUMENT, "`out`");
    EXPECT(paradec_model_capture_decode(m, NULL, cache, 1, 1, false, &graph),
           paradec_has_cuda() ? PARADEC_ERR_DEVICE : PARADEC_ERR_NO_DEVICE,
           paradec_has_cuda() ? "CUDA device" : "without the `cuda` feature");
    expect_true(graph == NULL, "failed capture leaves *out untouched");
    EXPECT(paradec_model_graph_step(NULL, NULL, NULL, NULL, NULL), PARADEC_ERR_NULL_ARGUMENT,
           "`graph`");
    paradec_model_graph_free(NULL);

    /* Freed handles: free accepts NULL; a handle set to NULL after its free is refused. */
    paradec_cache_free(cache);
    cache = NULL;
    EXPECT(paradec_cache_create_for_layer(NULL, 1, 4, PD_F32, PD_CPU, &cache),
           PARADEC_ERR_NULL_ARGUMENT, "`layer`");
    paradec_layer_free(layer);
    layer = NULL;
    EXPECT(paradec_layer_is_quant(layer, (bool *)&sentinel_storage), PARADEC_ERR_NULL_ARGUMENT,
           "`layer`");
    paradec_model_free(m);
    m = NULL;
    EXPECT(paradec_model_forward(m, NULL, ws, &idt, &p, NULL, NULL, 0, &lgt),
           PARADEC_ERR_NULL_ARGUMENT, "`model`");
    EXPECT(paradec_model_lora_apply(m, NULL), PARADEC_ERR_NULL_ARGUMENT, "`model`");
    paradec_workspace_free(ws);
    paradec_model_free(NULL);
    paradec_layer_free(NULL);
    paradec_cache_free(NULL);
    paradec_workspace_free(NULL);
    paradec_lora_free(NULL);
    paradec_interm_free(NULL);
    paradec_quant_weight_free(NULL);
    expect_true(1, "every free accepts NULL");
    expect_true(strcmp(paradec_status_str(999), "unknown status") == 0,
                "paradec_status_str of an unknown number");
    free(logits);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    kernel_errors();
    kv_kernel_errors();
    model_errors(argv[1]);
    printf("%d checks: %s\n", checks, failures ? "ERRORS: FAIL" : "ERRORS: all ok");
    return failures ? 1 : 0;
}
