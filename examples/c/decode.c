/*
 * decode.c — the C twin of src/bin/decode.rs: loads a model directory through the C ABI,
 * runs a (left-padded) prefill and greedy decoding through a KV cache on the CPU (or, with
 * --device cuda, on GPU 0 in f16: model, cache and workspace there, logits back in host
 * memory), and prints the tokens in the Rust decode binary's format ("sequence B: prompt
 * [...] → greedy [...]").
 *
 *     decode MODEL_DIR [--steps N] [--batch B --ids 1,2,3,... [--mask 0,1,1,...]]
 *            [--device cpu|cuda]
 *
 * Without --ids it uses the Rust decode binary's fixed prompt: batch 1, ids (7·i + 3) mod vocab for
 * i < 8. --mask is the [batch, prompt] 0/1 attention mask (left padding = leading zeros).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static size_t parse_list(const char *s, int64_t **out) {
    size_t n = 1, i = 0;
    for (const char *p = s; *p; p++) n += (*p == ',');
    int64_t *v = malloc(n * sizeof *v);
    char *end = NULL;
    for (const char *p = s; i < n; p = end + 1) {
        v[i++] = strtoll(p, &end, 10);
        if (*end != ',') break;
    }
    *out = v;
    return i;
}

static size_t argmax(const float *row, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

static void print_list(const int64_t *v, size_t n) {
    printf("[");
    for (size_t i = 0; i < n; i++) printf(i ? ", %lld" : "%lld", (long long)v[i]);
    printf("]");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [--steps N] [--batch B --ids ... [--mask ...]]\n",
                argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    size_t steps = 3, batch = 1, n_ids = 0, n_mask = 0;
    int64_t *prompt = NULL, *mask = NULL;
    int on_gpu = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--steps")) steps = (size_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = (size_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ids")) n_ids = parse_list(argv[i + 1], &prompt);
        else if (!strcmp(argv[i], "--mask")) n_mask = parse_list(argv[i + 1], &mask);
        else if (!strcmp(argv[i], "--device")) on_gpu = !strcmp(argv[i + 1], "cuda");
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (paradec_version_number() != PARADEC_VERSION_NUMBER) {
        fprintf(stderr, "header %s but library %s\n", PARADEC_VERSION_STRING, paradec_version());
        return 1;
    }

    paradec_model_options opts;
    CHECK(paradec_model_options_init(&opts));
    paradec_memory mem;
    mem.struct_size = sizeof mem;
    CHECK(paradec_model_memory(dir, &opts, batch, 64, PD_F32, &mem));
    paradec_model *model = NULL;
    CHECK(paradec_model_load(dir, &opts, &model));
    const paradec_device gpu0 = {PARADEC_DEVICE_CUDA, 0};
    if (on_gpu) CHECK(paradec_model_load_to(model, gpu0));
    paradec_model_info info;
    info.struct_size = sizeof info;
    CHECK(paradec_model_describe(model, &info));
    printf("== %s (family %d, %zu layers, hidden %zu, %zu heads / %zu kv; paradec %s%s)\n", dir,
           info.family, info.num_layers, info.hidden, info.heads, info.kv_heads,
           paradec_version(), paradec_has_cuda() ? ", CUDA" : "");
    printf("  memory: weights %zu B (checkpoint %zu B), cache %zu B and workspace %zu B for 64 "
           "tokens\n",
           info.weight_bytes, mem.weight_bytes, mem.cache_bytes, mem.workspace_bytes);

    if (n_ids == 0) {
        batch = 1;
        n_ids = 8;
        prompt = malloc(n_ids * sizeof *prompt);
        for (size_t i = 0; i < n_ids; i++) prompt[i] = (int64_t)((i * 7 + 3) % info.vocab);
    }
    size_t s0 = n_ids / batch;
    if (n_mask != n_ids) {
        free(mask);
        mask = malloc(n_ids * sizeof *mask);
        for (size_t i = 0; i < n_ids; i++) mask[i] = 1;
    }

    paradec_cache *cache = NULL;
    CHECK(paradec_cache_create(model, batch, s0 + steps, on_gpu ? PD_F16 : PD_F32,
                               on_gpu ? gpu0 : PD_CPU, &cache));
    paradec_workspace *ws = NULL;
    CHECK(paradec_workspace_create(on_gpu ? gpu0 : PD_CPU, on_gpu ? PD_F16 : PD_F32, &ws));
    /* A planned arena: forwards then allocate nothing on the device. */
    if (on_gpu) CHECK(paradec_workspace_reserve(ws, mem.workspace_bytes));

    size_t slots_max = s0 + steps + 1;
    int64_t *mask_now = malloc(batch * slots_max * sizeof *mask_now);
    int64_t *mask_next = malloc(batch * slots_max * sizeof *mask_next);
    memcpy(mask_now, mask, n_ids * sizeof *mask);
    int64_t *ids = malloc(n_ids * sizeof *ids);
    memcpy(ids, prompt, n_ids * sizeof *ids);
    int64_t *past = malloc(batch * sizeof *past);
    int64_t *generated = malloc(batch * (steps + 1) * sizeof *generated);
    float *logits = malloc(batch * s0 * info.vocab * sizeof *logits);

    for (size_t step = 0; step <= steps; step++) {
        size_t q = step == 0 ? s0 : 1, slots = s0 + step;
        for (size_t b = 0; b < batch; b++) past[b] = (int64_t)(slots - q);
        paradec_attn_params p;
        memset(&p, 0, sizeof p);
        p.struct_size = sizeof p;
        p.batch = batch;
        p.q_len = q;
        p.past_len = past;
        p.attention_mask = mask_now;
        p.mask_slots = slots;
        int64_t ids_shape[2] = {(int64_t)batch, (int64_t)q};
        int64_t lg_shape[3] = {(int64_t)batch, (int64_t)q, (int64_t)info.vocab};
        paradec_tensor ids_t = pd_host(ids, PD_I64, 2, ids_shape);
        paradec_tensor lg_t = pd_host(logits, PD_F32, 3, lg_shape);
        CHECK(paradec_model_forward(model, NULL, ws, &ids_t, &p, cache, NULL, 0, &lg_t));
        for (size_t b = 0; b < batch; b++) {
            const float *row = logits + (b * q + q - 1) * info.vocab;
            ids[b] = (int64_t)argmax(row, info.vocab);
            generated[b * (steps + 1) + step] = ids[b];
        }
        /* Each sequence's mask grows by the new token. */
        for (size_t b = 0; b < batch; b++) {
            memcpy(mask_next + b * (slots + 1), mask_now + b * slots, slots * sizeof *mask_now);
            mask_next[b * (slots + 1) + slots] = 1;
        }
        int64_t *t = mask_now;
        mask_now = mask_next;
        mask_next = t;
    }
    for (size_t b = 0; b < batch; b++) {
        printf("  sequence %zu: prompt ", b);
        print_list(prompt + b * s0, s0);
        printf(" \xe2\x86\x92 greedy ");
        print_list(generated + b * (steps + 1), steps + 1);
        printf("\n");
    }

    paradec_cache_free(cache);
    paradec_workspace_free(ws);
    paradec_model_free(model);
    free(prompt);
    free(mask);
    free(mask_now);
    free(mask_next);
    free(ids);
    free(past);
    free(generated);
    free(logits);
    return 0;
}
