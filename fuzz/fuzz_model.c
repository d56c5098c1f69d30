/* libFuzzer target for the model engine on small and odd configurations: the fuzz bytes choose an
 * SD3 config (heads, head_dim, patch, channels, layers, qk_norm, dual-attention layers,
 * pos_embed_max_size, widths; now and then an invalid field), a latent size, text length, batch
 * and weight dtype. It writes random weights (sd3_init_random), loads them, runs sd3_forward on
 * inputs from the bytes (sometimes with a NaN or infinity planted), and, for RGB configs, writes a
 * pipeline folder (pipe_init_random) and samples 1-2 steps with or without guidance and a probe,
 * which is what `sinkscope generate` and `run` do.
 *
 * Contract checked: ASan/UBSan clean; what the loader or the forward pass rejects is rejected with
 * a one-line message; a valid config with valid shapes and finite inputs runs and gives finite
 * outputs; a planted non-finite input is refused. Build with `make fuzz`. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"
#include "models/sd3.h"
#include "sample/pipeline.h"
#include "sink/sink.h"

static char g_dir[64], g_model[128], g_pipe[128];

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (g_dir[0] && system(cmd) != 0) fprintf(stderr, "fuzz_model: could not remove %s\n", g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    omp_set_num_threads(1);
    /* fsync-heavy writes (st_writer_save): a RAM file system when there is one */
    strcpy(g_dir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_model_XXXXXX" : "/tmp/fuzz_model_XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    snprintf(g_model, sizeof g_model, "%s/model", g_dir);
    snprintf(g_pipe, sizeof g_pipe, "%s/pipe", g_dir);
    atexit(cleanup);
    return 0;
}

typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

/* A value in [0, n) from the next byte (0 once the input is used up). */
static int pick(reader *r, int n) {
    if (!r->n) return 0;
    const int v = r->p[0] % n;
    r->p++, r->n--;
    return v;
}

static void check_message(void) {
    const char *msg = ss_err();
    if (!msg[0] || strchr(msg, '\n')) abort();
}

/* Deterministic values in [-2, 2] from a seed taken from the bytes. */
static void fill(float *x, size_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) * (4.0f / 16777216.0f) - 2.0f;
    }
}

static const char *const WORDS[] = {"a", "red", "blue", "circle", "square", NULL};

static void run_pipeline(reader *r, const sd3_config *c) {
    te_config tec = {.max_length = 1 + pick(r, 5), .hidden_size = c->joint_attention_dim,
                     .pooled_size = c->pooled_projection_dim};
    ss_err_clear();
    if (pipe_init_random(g_pipe, c, &tec, WORDS, (uint64_t)pick(r, 256)) < 0) {
        check_message(); /* e.g. sample_size not a multiple of patch_size, pooled != hidden */
        return;
    }
    pipeline *pp = NULL;
    if (pipe_load(&pp, g_pipe) < 0) abort(); /* what pipe_init_random wrote must load */
    pipe_params p;
    pipe_params_default(&p);
    static const char *const prompts[] = {"a red circle", "blue", "", "a a a a a a", "zebra"};
    p.prompt = prompts[pick(r, 5)];
    p.seed = (uint64_t)pick(r, 256);
    p.steps = 1 + pick(r, 2);
    p.cfg = pick(r, 2) ? 4.0 : 1.0;
    const int ps = c->patch_size;
    p.height = pick(r, 3) ? 0 : ps * (1 + pick(r, 4)) + (pick(r, 4) == 0);
    p.width = pick(r, 3) ? 0 : ps * (1 + pick(r, 4)) + (pick(r, 4) == 0);
    sink_ctx *sk = NULL;
    if (pick(r, 2)) {
        sk = sink_ctx_new();
        if (!sk) abort();
        const int blocks[2] = {0, c->num_layers - 1};
        if (sink_ctx_set_probe(sk, blocks, c->num_layers > 1 ? 2 : 1, (sink_tokens)pick(r, 3), 1 + pick(r, 5), 1) < 0)
            abort();
    }
    int H, W;
    ss_err_clear();
    if (pipe_image_size(pp, &p, &H, &W) < 0) {
        check_message();
    } else {
        uint8_t *rgb = malloc((size_t)3 * H * W);
        float *sample = malloc(sizeof(float) * 3 * H * W);
        if (!rgb || !sample) abort();
        ss_err_clear();
        const int rc = pipe_generate(pp, &p, rgb, sk, sample);
        if (rc < 0) {
            check_message(); /* unknown word, prompt too long */
        } else {
            for (int i = 0; i < 3 * H * W; i++)
                if (!isfinite(sample[i])) abort();
        }
        free(rgb);
        free(sample);
    }
    sink_ctx_free(sk);
    pipe_free(pp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = {data, size};
    const int rgb = pick(&r, 2);
    sd3_config c = {0};
    c.num_heads = 1 + pick(&r, 3);
    c.head_dim = 1 + pick(&r, 8);
    c.patch_size = 1 + pick(&r, 3);
    c.in_channels = rgb ? 3 : 1 + pick(&r, 5);
    c.out_channels = rgb ? 3 : 1 + pick(&r, 7);
    c.num_layers = 1 + pick(&r, 3);
    c.qk_norm = pick(&r, 2);
    const int dual = pick(&r, 8);
    for (int i = 0; i < c.num_layers; i++) c.dual[i] = (uint8_t)(dual >> i & 1);
    c.pos_embed_max_size = 1 + pick(&r, 5);
    c.sample_size = c.patch_size * (1 + pick(&r, c.pos_embed_max_size + 1)); /* sometimes too large */
    c.joint_attention_dim = 1 + pick(&r, 6);
    c.pooled_projection_dim = rgb ? c.joint_attention_dim : 1 + pick(&r, 5);
    c.caption_projection_dim = c.num_heads * c.head_dim;
    /* now and then one invalid field: it must be refused cleanly */
    switch (pick(&r, 16)) {
    case 0: c.patch_size = 0; break;
    case 1: c.num_layers = 0; break;
    case 2: c.caption_projection_dim += 1; break;
    case 3: c.pos_embed_max_size = 0; break;
    case 4: c.dual[c.num_layers] = 1; break;
    case 5: c.in_channels = -1; break;
    default: break;
    }
    static const int dtypes[3] = {ST_F32, ST_F16, ST_BF16};
    const int dtype = dtypes[pick(&r, 3)];
    ss_err_clear();
    if (sd3_init_random(&c, g_model, (uint64_t)pick(&r, 256), dtype) < 0) {
        check_message();
        return 0;
    }
    sd3_model *m = NULL;
    if (sd3_load(&m, g_model) < 0) abort(); /* what init wrote must load */
    const int p = c.patch_size;
    int Hl = p * (1 + pick(&r, 4)), Wl = p * (1 + pick(&r, 4));
    if (pick(&r, 8) == 0) Hl += 1; /* not a multiple of the patch */
    const int S = pick(&r, 6), B = 1 + pick(&r, 3);
    const int ok_shape = S >= 1 && Hl % p == 0 && Hl / p <= c.pos_embed_max_size && Wl / p <= c.pos_embed_max_size;
    const size_t nx = (size_t)B * c.in_channels * Hl * Wl, nc = (size_t)B * (S ? S : 1) * c.joint_attention_dim,
                 np = (size_t)B * c.pooled_projection_dim, no = (size_t)B * c.out_channels * Hl * Wl;
    float *x = malloc(sizeof(float) * nx), *ctx = malloc(sizeof(float) * nc), *pooled = malloc(sizeof(float) * np),
          *t = malloc(sizeof(float) * B), *out = malloc(sizeof(float) * no);
    if (!x || !ctx || !pooled || !t || !out) abort();
    const uint32_t seed = (uint32_t)pick(&r, 256);
    fill(x, nx, seed);
    fill(ctx, nc, seed + 1);
    fill(pooled, np, seed + 2);
    for (int b = 0; b < B; b++) t[b] = (float)(pick(&r, 251) * 4);
    int planted = 0;
    switch (pick(&r, 12)) {
    case 0: x[nx / 2] = NAN, planted = 1; break;
    case 1: ctx[nc - 1] = INFINITY, planted = 1; break;
    case 2: pooled[0] = -INFINITY, planted = 1; break;
    case 3: t[B - 1] = NAN, planted = 1; break;
    default: break;
    }
    ss_err_clear();
    const int rc = sd3_forward(m, out, x, ctx, pooled, t, B, Hl, Wl, S, NULL);
    if (rc < 0) {
        check_message();
        if (ok_shape && !planted) abort(); /* a valid run must not fail */
    } else {
        if (!ok_shape || planted) abort(); /* bad shapes and non-finite inputs must be refused */
        for (size_t i = 0; i < no; i++)
            if (!isfinite(out[i])) abort();
    }
    free(x);
    free(ctx);
    free(pooled);
    free(t);
    free(out);
    sd3_free(m);
    if (rgb) run_pipeline(&r, &c);
    return 0;
}
