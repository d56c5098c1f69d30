/* Robustness of the model engine and its math (reliability sweep):
 *   - scratch buffers sized from what is written into them: small and odd models (p*p*Cout > 4D,
 *     fewer tokens than the 256-wide timestep sinusoid) run clean under ASan and agree batch-wise;
 *   - the fast-math helpers are defined for NaN, infinities and huge or tiny inputs, and their
 *     finite results did not move;
 *   - configs built in memory are checked (sd3_init_random, pipe_init_random);
 *   - non-finite weights are refused at load naming the tensor, non-finite inputs and activations
 *     are refused by the forward pass naming the block and stage, by the sampler naming the step,
 *     and by the CLI (forward, generate, run) with a non-zero exit and outputs left as they were. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "nn/fastmath.h"
#include "nn/ops.h"
#include "io/safetensors.h"
#include "models/sd3.h"
#include "sample/pipeline.h"

/* ---- helpers ---- */

static sd3_config small_config(int heads, int head_dim, int patch, int cin, int cout, int layers, int M) {
    sd3_config c = {.sample_size = 8, .patch_size = patch, .in_channels = cin, .out_channels = cout,
                    .num_layers = layers, .head_dim = head_dim, .num_heads = heads, .joint_attention_dim = 5,
                    .caption_projection_dim = heads * head_dim, .pooled_projection_dim = 3, .pos_embed_max_size = M};
    return c;
}

static sd3_model *make_model(const char *root, const char *name, const sd3_config *c, int dtype) {
    const char *dir = tc_join(root, "%s", name);
    if (sd3_init_random(c, dir, 3, dtype) < 0) fail_msg("init %s: %s", name, ss_err());
    sd3_model *m = NULL;
    if (sd3_load(&m, dir) < 0) fail_msg("load %s: %s", name, ss_err());
    return m;
}

typedef struct {
    int B, Hl, Wl, S;
    float *x, *ctx, *pooled, *t;
    size_t nx, nctx, np, nout;
} inputs;

static inputs make_inputs(const sd3_model *m, int B, int Hl, int Wl, int S, uint64_t seed) {
    const sd3_config *c = &m->cfg;
    inputs in = {.B = B, .Hl = Hl, .Wl = Wl, .S = S};
    in.nx = (size_t)B * c->in_channels * Hl * Wl;
    in.nctx = (size_t)B * S * c->joint_attention_dim;
    in.np = (size_t)B * c->pooled_projection_dim;
    in.nout = (size_t)B * c->out_channels * Hl * Wl;
    in.x = malloc(sizeof(float) * in.nx);
    in.ctx = malloc(sizeof(float) * in.nctx);
    in.pooled = malloc(sizeof(float) * in.np);
    in.t = malloc(sizeof(float) * B);
    /* batch elements alike: element b is a copy of element 0 */
    const size_t ex = in.nx / B, ec = in.nctx / B, ep = in.np / B;
    tc_fill(in.x, ex, seed, 1.0f);
    tc_fill(in.ctx, ec, seed + 1, 1.0f);
    tc_fill(in.pooled, ep, seed + 2, 1.0f);
    for (int b = 1; b < B; b++) {
        memcpy(in.x + b * ex, in.x, sizeof(float) * ex);
        memcpy(in.ctx + b * ec, in.ctx, sizeof(float) * ec);
        memcpy(in.pooled + b * ep, in.pooled, sizeof(float) * ep);
    }
    for (int b = 0; b < B; b++) in.t[b] = 500.0f;
    return in;
}

static void free_inputs(inputs *in) {
    free(in->x);
    free(in->ctx);
    free(in->pooled);
    free(in->t);
}

static int forward(const sd3_model *m, const inputs *in, float *out, const sd3_hooks *hk) {
    return sd3_forward(m, out, in->x, in->ctx, in->pooled, in->t, in->B, in->Hl, in->Wl, in->S, hk);
}

static void expect_msg(const char *msg, const char *n1, const char *n2, const char *n3) {
    if (!strstr(msg, n1) || (n2 && !strstr(msg, n2)) || (n3 && !strstr(msg, n3)))
        fail_msg("message lacks '%s' / '%s' / '%s': %s", n1, n2 ? n2 : "", n3 ? n3 : "", msg);
    const char *nl = strchr(msg, '\n');
    if (nl && nl[1]) fail_msg("message is not one line: %s", msg);
}

/* Rewrite one tensor of dir's checkpoint: every element (index < 0) or one set to `value`,
 * keeping its dtype. */
static void poke(const char *dir, const char *tensor, long index, float value) {
    const char *path = tc_join(dir, "diffusion_pytorch_model.safetensors");
    st_file *f;
    assert_int_equal(st_open(&f, path), 0);
    st_writer *w = st_writer_new();
    int found = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        if (strcmp(t->name, tensor)) {
            assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
            continue;
        }
        found = 1;
        float *v = malloc(sizeof(float) * (size_t)t->numel);
        assert_int_equal(st_to_f32(v, t), 0);
        for (long j = 0; j < t->numel; j++)
            if (index < 0 || j == index) v[j] = value;
        assert_int_equal(st_writer_add_f32(w, t->name, t->dtype, t->ndim, t->shape, v), 0);
        free(v);
    }
    st_close(f);
    if (!found) fail_msg("no tensor %s in %s", tensor, path);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
}

/* ---- 1. scratch buffers of small and odd models ---- */

static void check_model_runs(const char *root, const char *name, const sd3_config *c, int Hl, int Wl, int S) {
    sd3_model *m = make_model(root, name, c, ST_F32);
    inputs one = make_inputs(m, 1, Hl, Wl, S, 11), three = make_inputs(m, 3, Hl, Wl, S, 11);
    float *o1 = malloc(sizeof(float) * one.nout), *o1b = malloc(sizeof(float) * one.nout);
    float *o3 = malloc(sizeof(float) * three.nout);
    if (forward(m, &one, o1, NULL) < 0 || forward(m, &one, o1b, NULL) < 0 || forward(m, &three, o3, NULL) < 0)
        fail_msg("%s: %s", name, ss_err());
    for (size_t i = 0; i < one.nout; i++) assert_true(isfinite(o1[i]));
    assert_memory_equal(o1, o1b, sizeof(float) * one.nout); /* deterministic */
    /* each batch element of identical inputs gives element 0's result: nothing overwrote a neighbour */
    double worst = 0;
    for (int b = 0; b < 3; b++) worst = fmax(worst, tc_rel_l2(o3 + (size_t)b * one.nout, o1, one.nout));
    print_message("  %-10s D=%-3d p=%d Cin=%d Cout=%d latent %dx%d S=%d: batch-of-3 vs batch-of-1 rel. diff %.1e\n",
                  name, m->D, c->patch_size, c->in_channels, c->out_channels, Hl, Wl, S, worst);
    assert_true(worst < 1e-5);
    free(o1);
    free(o1b);
    free(o3);
    free_inputs(&one);
    free_inputs(&three);
    sd3_free(m);
}

static void test_small_models_scratch(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    /* `train --heads 1 --head-dim 8`-sized width with a patch of 4: p*p*Cout = 48 > 4D = 32 */
    sd3_config c = small_config(1, 8, 4, 3, 3, 2, 4);
    check_model_runs(root, "p4-D8", &c, 4, 4, 1);
    check_model_runs(root, "p4-D8-wide", &c, 8, 4, 2);
    /* many output channels on a width of 4, one patch, one text token */
    c = small_config(2, 2, 2, 1, 7, 1, 2);
    check_model_runs(root, "cout7-D4", &c, 2, 2, 1);
    /* dual attention and qk_norm on a one-token image */
    c = small_config(1, 4, 3, 2, 5, 3, 1);
    c.qk_norm = 1;
    c.dual[0] = c.dual[2] = 1;
    check_model_runs(root, "dual-1tok", &c, 3, 3, 3);
    /* configs/sd3-tiny.json on a 2x2 latent with 2 text tokens (the reported case) */
    assert_int_equal(sd3_config_load(&c, "configs/sd3-tiny.json"), 0);
    check_model_runs(root, "sd3-tiny", &c, 2, 2, 2);
    tc_rmtree(root);
    free(root);
}

/* ---- 2. fast-math helpers ---- */

/* The pre-fix ss_expf, kept as the oracle that finite results did not move (bit for bit). */
static float expf_before_fix(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

static float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_fastmath_nonfinite(void **state) {
    (void)state;
    /* volatile: the compiler must not fold these away */
    volatile float vnan = NAN, vinf = INFINITY, vbig = FLT_MAX, vtiny = FLT_TRUE_MIN;
    const float nan = vnan, inf = vinf, big = vbig, tiny = vtiny;
    assert_true(isnan(ss_expf(nan)));
    assert_true(isnan(ss_expf(-nan)));
    assert_true(isnan(ss_expf(bits_to_float(0x7fa00001u)))); /* a signalling-NaN pattern */
    assert_true(isfinite(ss_expf(inf)) && ss_expf(inf) > 1e38f);
    assert_true(ss_expf(-inf) > 0 && ss_expf(-inf) < 1e-37f);
    assert_true(ss_expf(big) == ss_expf(inf) && ss_expf(-big) == ss_expf(-inf));
    assert_true(ss_expf(tiny) == 1.0f && ss_expf(-tiny) == 1.0f && ss_expf(0.0f) == 1.0f);
    assert_true(isnan(ss_tanhf(nan)) && ss_tanhf(inf) == 1.0f && ss_tanhf(-inf) == -1.0f);
    assert_true(ss_tanhf(big) == 1.0f && ss_tanhf(-big) == -1.0f);
    assert_true(isnan(ss_silu(nan)) && ss_silu(inf) == inf && ss_silu(big) == big);
    assert_true(ss_silu(-inf) == 0.0f && ss_silu(-big) == 0.0f && ss_silu(-1e30f) == 0.0f); /* was -2.06 at -FLT_MAX */
    assert_true(isnan(ss_gelu_tanh(nan)) && ss_gelu_tanh(inf) == inf && ss_gelu_tanh(big) == big);
    assert_true(ss_gelu_tanh(-big) == 0.0f);
    /* the vectorized loops (op_silu, op_gelu_tanh) over arrays holding every special value */
    float specials[] = {nan, -nan, inf, -inf, big, -big, tiny, -tiny, 0.0f, -0.0f, 88.5f, -87.5f, 1e10f, -1e10f};
    enum { NS = sizeof specials / sizeof *specials, REP = 37 };
    float a[NS * REP], y[NS * REP];
    for (int i = 0; i < NS * REP; i++) a[i] = specials[i % NS];
    op_silu(y, a, NS * REP);
    for (int i = 0; i < NS * REP; i++) assert_true(isnan(y[i]) == isnan(a[i]));
    memcpy(y, a, sizeof a);
    op_gelu_tanh(y, NS * REP);
    for (int i = 0; i < NS * REP; i++) assert_true(isnan(y[i]) == (isnan(a[i]) || a[i] == -inf));
    /* finite inputs: bit-identical to the pre-fix formula over a dense sweep of [-90, 90] (scalar
     * and through a vectorized loop), and within 3e-7 of libm over the unclamped range */
    enum { NSW = 1 << 16 };
    float *xs = malloc(sizeof(float) * NSW), *ys = malloc(sizeof(float) * NSW);
    for (int i = 0; i < NSW; i++) xs[i] = -90.0f + 180.0f * (float)i / NSW + (float)(i % 7) * 1e-6f;
#pragma omp simd
    for (int i = 0; i < NSW; i++) ys[i] = ss_expf(xs[i]);
    double worst = 0;
    for (int i = 0; i < NSW; i++) {
        const float want = expf_before_fix(xs[i]);
        if (memcmp(&ys[i], &want, 4) || ss_expf(xs[i]) != want) fail_msg("ss_expf(%.9g) moved", xs[i]);
        if (xs[i] > -87.0f && xs[i] < 88.0f) worst = fmax(worst, fabs(ys[i] / exp((double)xs[i]) - 1.0));
    }
    print_message("  ss_expf: max rel. error %.2e vs libm over (-87, 88)\n", worst);
    assert_true(worst < 3e-7);
    free(xs);
    free(ys);
}

/* ---- 3. configs built in memory, and the sin-cos table ---- */

static void test_config_checks(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    struct {
        const char *what, *needle;
        sd3_config c;
    } bad[] = {
        {"patch 0", "patch_size", small_config(1, 8, 0, 3, 3, 1, 4)},
        {"no layers", "num_layers", small_config(1, 8, 2, 3, 3, 0, 4)},
        {"no heads", "num_attention_heads", small_config(0, 8, 2, 3, 3, 1, 4)},
        {"head dim 0", "attention_head_dim", small_config(2, 0, 2, 3, 3, 1, 4)},
        {"no channels", "in_channels", small_config(1, 8, 2, 0, 3, 1, 4)},
        {"pos grid 0", "pos_embed_max_size", small_config(1, 8, 2, 3, 3, 1, 0)},
        {"layers > max", "num_layers", small_config(1, 8, 2, 3, 3, SD3_MAX_LAYERS + 1, 4)},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ss_err_clear();
        assert_true(sd3_init_random(&bad[i].c, tc_join(root, "bad%zu", i), 1, ST_F32) < 0);
        print_message("  %-12s -> %s\n", bad[i].what, ss_err());
        expect_msg(ss_err(), bad[i].needle, "init", NULL);
    }
    sd3_config c = small_config(1, 8, 2, 3, 3, 2, 4);
    c.caption_projection_dim = 9;
    assert_true(sd3_init_random(&c, tc_join(root, "cap"), 1, ST_F32) < 0);
    expect_msg(ss_err(), "caption_projection_dim", NULL, NULL);
    c = small_config(1, 8, 2, 3, 3, 2, 4);
    c.dual[5] = 1; /* beyond num_layers */
    assert_true(sd3_init_random(&c, tc_join(root, "dual"), 1, ST_F32) < 0);
    expect_msg(ss_err(), "dual_attention_layers", "5", NULL);
    c = small_config(1, 8, 2, 3, 3, 2, 4);
    assert_true(sd3_init_random(&c, tc_join(root, "dtype"), 1, ST_I64) < 0);
    te_config tec = {.max_length = 4, .hidden_size = 5, .pooled_size = 5};
    const char *const words[] = {"red", NULL};
    c.pooled_projection_dim = 5;
    c.patch_size = 0;
    assert_true(pipe_init_random(tc_join(root, "pipe"), &c, &tec, words, 1) < 0);
    expect_msg(ss_err(), "patch_size", NULL, NULL);

    /* The sin-cos table of a width that is not a multiple of 4: every entry defined (the tail is 0),
     * also in a buffer that held garbage (the trainer's table is not zeroed) */
    for (int D = 1; D <= 11; D++) {
        const int M = 3;
        float *tab = malloc(sizeof(float) * M * M * D);
        memset(tab, 0xff, sizeof(float) * M * M * D); /* NaN bit patterns */
        sd3_sincos_table(tab, M, D, 2.0, 1.0);
        for (int i = 0; i < M * M; i++)
            for (int k = 0; k < D; k++) {
                const float v = tab[(size_t)i * D + k];
                assert_true(isfinite(v));
                if (k >= D / 4 * 4) assert_true(v == 0.0f);
            }
        free(tab);
    }
    /* and a D = 6 model initialises to the same bytes twice and runs */
    c = small_config(2, 3, 2, 3, 3, 1, 3);
    assert_int_equal(sd3_init_random(&c, tc_join(root, "d6a"), 5, ST_F32), 0);
    assert_int_equal(sd3_init_random(&c, tc_join(root, "d6b"), 5, ST_F32), 0);
    size_t na, nb;
    char *fa = tc_read_all(tc_join(root, "d6a/diffusion_pytorch_model.safetensors"), &na);
    char *fb = tc_read_all(tc_join(root, "d6b/diffusion_pytorch_model.safetensors"), &nb);
    assert_non_null(fa);
    assert_non_null(fb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    free(fa);
    free(fb);
    check_model_runs(root, "d6", &c, 4, 6, 2);
    tc_rmtree(root);
    free(root);
}

/* ---- 4. non-finite weights at load ---- */

static void test_nonfinite_weights(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    sd3_config c = small_config(2, 4, 2, 3, 3, 2, 4);
    c.qk_norm = 1;
    c.dual[1] = 1;
    struct {
        int dtype;
        const char *tensor;
        long index;
        float value;
        const char *kind;
    } cases[] = {
        {ST_F32, "transformer_blocks.1.attn.to_k.weight", 7, NAN, "NaN"},          /* used in place (mmap) */
        {ST_BF16, "transformer_blocks.0.ff.net.2.bias", 3, INFINITY, "infinity"},  /* converted to fp32 */
        {ST_F16, "pos_embed.pos_embed", -1, -INFINITY, "infinity"},
        {ST_F16, "transformer_blocks.1.attn2.norm_q.weight", 0, 1e6f, "infinity"}, /* > 65504: inf in F16 */
        {ST_F32, "proj_out.bias", 2, NAN, "NaN"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/m%zu", root, i);
        assert_int_equal(sd3_init_random(&c, dir, 1, cases[i].dtype), 0);
        poke(dir, cases[i].tensor, cases[i].index, cases[i].value);
        sd3_model *m = (sd3_model *)1;
        ss_err_clear();
        assert_true(sd3_load(&m, dir) < 0);
        assert_null(m);
        print_message("  %s\n", ss_err());
        expect_msg(ss_err(), cases[i].tensor, "diffusion_pytorch_model.safetensors", cases[i].kind);
        char idx[32];
        snprintf(idx, sizeof idx, "index %ld", cases[i].index < 0 ? 0 : cases[i].index);
        expect_msg(ss_err(), idx, NULL, NULL);
    }
    /* huge but finite weights load (what they do to activations is the forward pass's business) */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/big", root);
    assert_int_equal(sd3_init_random(&c, dir, 1, ST_F32), 0);
    poke(dir, "proj_out.bias", -1, FLT_MAX);
    sd3_model *m;
    if (sd3_load(&m, dir) < 0) fail_msg("%s", ss_err());
    sd3_free(m);
    tc_rmtree(root);
    free(root);
}

/* ---- 5. non-finite inputs and activations in the forward pass ---- */

typedef struct {
    int block, token, channel;
} inject;

static int inject_attention(void *ctx, const ss_site *site, const attn_args *a) {
    const inject *in = ctx;
    int rc = attn_forward(a, NULL);
    if (rc == 0 && site->kind == SS_SITE_JOINT && site->block == in->block) a->out[(size_t)in->token * a->ld + in->channel] = NAN;
    return rc;
}

static int g_outputs_seen;
static int count_outputs(void *ctx, int block, const float *x, int B, int N, int D) {
    (void)ctx, (void)block;
    for (size_t i = 0; i < (size_t)B * N * D; i++)
        if (!isfinite(x[i])) fail_msg("block_output hook saw a non-finite value in block %d", block);
    g_outputs_seen++;
    return 0;
}

static void test_forward_nonfinite(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    sd3_config c = small_config(2, 4, 2, 3, 3, 3, 4);
    c.dual[1] = 1;
    sd3_model *m = make_model(root, "m", &c, ST_F32);
    inputs in = make_inputs(m, 2, 4, 4, 3, 5); /* N = 4 image tokens, S = 3 text tokens */
    float *out = malloc(sizeof(float) * in.nout), *ref = malloc(sizeof(float) * in.nout);
    assert_int_equal(forward(m, &in, ref, NULL), 0);

    /* non-finite inputs: refused before anything is computed, the output untouched */
    struct {
        float *p;
        size_t i;
        const char *name;
    } bad_in[] = {{in.x, 17, "hidden_states"}, {in.ctx, 4, "encoder_hidden_states"},
                  {in.pooled, 1, "pooled_projections"}, {in.t, 1, "timestep"}};
    for (size_t k = 0; k < sizeof bad_in / sizeof *bad_in; k++) {
        const float keep = bad_in[k].p[bad_in[k].i];
        bad_in[k].p[bad_in[k].i] = k % 2 ? INFINITY : NAN;
        memset(out, 0x5a, sizeof(float) * in.nout);
        assert_int_equal(forward(m, &in, out, NULL), SS_EFORMAT);
        expect_msg(ss_err(), bad_in[k].name, "non-finite", NULL);
        char idx[32];
        snprintf(idx, sizeof idx, "index %zu", bad_in[k].i);
        expect_msg(ss_err(), idx, NULL, NULL);
        for (size_t i = 0; i < in.nout * sizeof(float); i++) assert_int_equal(((unsigned char *)out)[i], 0x5a);
        bad_in[k].p[bad_in[k].i] = keep;
    }
    /* a NaN appearing inside the attention (as a condition that removes every key makes): the
     * block, the stage and the token are named; the block_output hook never sees it */
    struct {
        inject at;
        const char *block, *token;
    } inj[] = {
        {{0, 2, 1}, "block 0: ", "image token 2, channel 1"},
        {{1, 4 + 1, 5}, "block 1: ", "text token 1, channel 5"},
        {{2, 7 + 3, 0}, "block 2: ", "batch 1, image token 3, channel 0"}, /* row T + 3: batch 1 */
    };
    for (size_t k = 0; k < sizeof inj / sizeof *inj; k++) {
        g_outputs_seen = 0;
        sd3_hooks hk = {.ctx = &inj[k].at, .attention = inject_attention, .block_output = count_outputs};
        memset(out, 0x5a, sizeof(float) * in.nout);
        assert_int_equal(forward(m, &in, out, &hk), SS_EFORMAT);
        print_message("  %s\n", ss_err());
        expect_msg(ss_err(), inj[k].block, "joint attention output", inj[k].token);
        assert_int_equal(g_outputs_seen, inj[k].at.block);
        for (size_t i = 0; i < in.nout * sizeof(float); i++) assert_int_equal(((unsigned char *)out)[i], 0x5a);
    }
    /* with hooks that change nothing the result is bit-identical to no hooks */
    inject none = {-1, 0, 0};
    sd3_hooks hk = {.ctx = &none, .attention = inject_attention, .block_output = count_outputs};
    assert_int_equal(forward(m, &in, out, &hk), 0);
    assert_memory_equal(out, ref, sizeof(float) * in.nout);
    sd3_free(m);

    /* huge finite weights: activations overflow; named, not passed on */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/m", root);
    poke(dir, "pos_embed.pos_embed", -1, FLT_MAX);
    poke(dir, "pos_embed.proj.bias", -1, FLT_MAX);
    assert_int_equal(sd3_load(&m, dir), 0);
    assert_int_equal(forward(m, &in, out, NULL), SS_EFORMAT);
    expect_msg(ss_err(), "patch + position embedding", "infinity", "image token 0");
    sd3_free(m);
    free(out);
    free(ref);
    free_inputs(&in);
    tc_rmtree(root);
    free(root);
}

/* ---- 6. the sampler and the CLI ---- */

static const char *const WORDS[] = {"a", "red", "blue", "circle", "square", NULL};

static void make_pipeline(const char *dir) {
    sd3_config c = small_config(2, 4, 2, 3, 3, 2, 8);
    c.sample_size = 8;
    c.joint_attention_dim = 6;
    c.pooled_projection_dim = 6;
    te_config tec = {.max_length = 4, .hidden_size = 6, .pooled_size = 6};
    if (pipe_init_random(dir, &c, &tec, WORDS, 9) < 0) fail_msg("%s", ss_err());
}

static void test_sampler_nonfinite(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char dir[512], tdir[512];
    snprintf(dir, sizeof dir, "%s/pipe", root);
    snprintf(tdir, sizeof tdir, "%s/pipe/transformer", root);
    make_pipeline(dir);
    pipeline *pp;
    assert_int_equal(pipe_load(&pp, dir), 0);
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = "a red circle";
    p.steps = 3;
    uint8_t rgb[8 * 8 * 3], ref[8 * 8 * 3];
    assert_int_equal(pipe_generate(pp, &p, ref, NULL, NULL), 0);
    pipe_free(pp);
    /* outputs ~1e30 (finite, so the forward pass accepts them) whose conditional-unconditional
     * difference times the guidance scale overflows: the sample check names the step */
    poke(tdir, "proj_out.weight", -1, 1e30f);
    assert_int_equal(pipe_load(&pp, dir), 0);
    assert_int_equal(pipe_generate(pp, &p, rgb, NULL, NULL), 0); /* cfg 4: huge but finite */
    p.cfg = 1e20;
    memset(rgb, 7, sizeof rgb);
    assert_int_equal(pipe_generate(pp, &p, rgb, NULL, NULL), SS_EFORMAT);
    print_message("  %s\n", ss_err());
    expect_msg(ss_err(), "generate: denoising step 0 of 3: the sample is infinite", "guidance scale 1e+20", NULL);
    for (size_t i = 0; i < sizeof rgb; i++) assert_int_equal(rgb[i], 7);
    pipe_free(pp);

    /* overflowing activations: the step and the stage are named */
    poke(tdir, "pos_embed.pos_embed", -1, FLT_MAX);
    poke(tdir, "pos_embed.proj.bias", -1, FLT_MAX);
    assert_int_equal(pipe_load(&pp, dir), 0);
    p.cfg = 4.0;
    assert_int_equal(pipe_generate(pp, &p, rgb, NULL, NULL), SS_EFORMAT);
    expect_msg(ss_err(), "generate: denoising step 0 of 3: ", "patch + position embedding", NULL);
    pipe_free(pp);

    /* a NaN weight: the pipeline does not load, naming the tensor */
    poke(tdir, "transformer_blocks.1.ff.net.0.proj.weight", 12, NAN);
    assert_true(pipe_load(&pp, dir) < 0);
    assert_null(pp);
    expect_msg(ss_err(), "transformer_blocks.1.ff.net.0.proj.weight", "NaN", "transformer");
    tc_rmtree(root);
    free(root);
}

static void expect_kept(const char *path, const char *text) {
    char *got = tc_read_all(path, NULL);
    assert_non_null(got);
    assert_string_equal(got, text);
    free(got);
}

static void test_cli(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    static char buf[16384];
    char model[512], in[512], out[512], pipe[512], ptr[512], png[512], prompts[512], exp[512];
    snprintf(model, sizeof model, "%s/tiny", root);
    snprintf(in, sizeof in, "%s/in.safetensors", root);
    snprintf(out, sizeof out, "%s/out.safetensors", root);
    snprintf(pipe, sizeof pipe, "%s/pipe", root);
    snprintf(ptr, sizeof ptr, "%s/pipe/transformer", root);
    snprintf(png, sizeof png, "%s/img.png", root);
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", root);
    snprintf(exp, sizeof exp, "%s/exp", root);
    /* the reported case: sd3-tiny on a 2x2 latent with 2 text tokens */
    int rc = tc_run(buf, sizeof buf, "%s init --config configs/sd3-tiny.json --out %s --seed 1 --inputs %s --latent 2x2 --text-len 2 --batch 2",
                    tc_bin(), model, in);
    if (rc) fail_msg("init: %s", buf);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --probe 0,3", tc_bin(), model, in, out);
    if (rc) fail_msg("forward exit %d: %s", rc, buf);
    size_t n = 0;
    int64_t shape[4];
    int ndim;
    float *sample = tc_load(out, "sample", &n, shape, &ndim);
    assert_non_null(sample);
    assert_int_equal(n, 2 * 4 * 2 * 2);
    for (size_t i = 0; i < n; i++) assert_true(isfinite(sample[i]));
    free(sample);

    /* a NaN weight: forward fails naming the tensor, the previous output stays */
    assert_int_equal(tc_write_text(out, "previous results"), 0);
    poke(model, "transformer_blocks.2.attn.add_v_proj.weight", 5, NAN);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s", tc_bin(), model, in, out);
    print_message("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_msg(buf, "transformer_blocks.2.attn.add_v_proj.weight", "NaN", NULL);
    expect_kept(out, "previous results");
    /* overflowing activations: forward fails naming the stage */
    poke(model, "transformer_blocks.2.attn.add_v_proj.weight", 5, 0.0f);
    poke(model, "pos_embed.pos_embed", -1, FLT_MAX);
    poke(model, "pos_embed.proj.bias", -1, FLT_MAX);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s", tc_bin(), model, in, out);
    print_message("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_msg(buf, "patch + position embedding", "non-finite", NULL);
    expect_kept(out, "previous results");

    /* generate and run on a pipeline whose activations overflow */
    make_pipeline(pipe);
    rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a red circle' --steps 2 --out %s", tc_bin(), pipe, png);
    if (rc) fail_msg("generate exit %d: %s", rc, buf);
    assert_int_equal(tc_write_text(png, "previous image"), 0);
    poke(ptr, "pos_embed.pos_embed", -1, FLT_MAX);
    poke(ptr, "pos_embed.proj.bias", -1, FLT_MAX);
    rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a red circle' --steps 2 --out %s", tc_bin(), pipe, png);
    print_message("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_msg(buf, "denoising step 0 of 2", "patch + position embedding", NULL);
    expect_kept(png, "previous image");

    assert_int_equal(tc_write_text(prompts, "a red circle\na blue square\n"), 0);
    rc = tc_run(buf, sizeof buf, "%s run --exp %s --model %s --prompts %s --preset baseline --steps 2 --probe none --quiet",
                tc_bin(), exp, pipe, prompts);
    print_message("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_msg(buf, "denoising step 0 of 2", "patch + position embedding", NULL);
    tc_rmtree(root);
    free(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_models_scratch), cmocka_unit_test(test_fastmath_nonfinite),
        cmocka_unit_test(test_config_checks),        cmocka_unit_test(test_nonfinite_weights),
        cmocka_unit_test(test_forward_nonfinite),    cmocka_unit_test(test_sampler_nonfinite),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
