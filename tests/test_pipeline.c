/* Sampling pipeline: determinism (seeds, thread counts), sink conditions and their step window,
 * CFG against a hand-run sampler, folder layout errors, and the generate command. Uses a small
 * random-weight pipeline written by pipe_init_random into a temporary folder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"

#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "sample/pipeline.h"
#include "sink/sink.h"

static const char *const WORDS[] = {"a", "photo", "of", "red", "green", "blue", "circle", "square", "triangle", NULL};
static const char *PROMPT = "a photo of a red circle";
static char g_dir[64], g_model[128];
static pipeline *g_pp;

static sd3_config small_transformer(void) {
    sd3_config c = {.sample_size = 16, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                    .head_dim = 16, .num_heads = 2, .joint_attention_dim = 32, .caption_projection_dim = 32,
                    .pooled_projection_dim = 32, .pos_embed_max_size = 32};
    return c;
}
static te_config small_encoder(int J) {
    te_config c = {.vocab_size = 0, .max_length = 8, .hidden_size = J, .pooled_size = J};
    return c;
}

static const char *path_in(const char *rel) {
    static char p[8][300];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, rel);
    return p[k];
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}
static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }



static void assert_files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *x = tc_read_all(a, &na), *y = tc_read_all(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x), free(y);
}

/* Does the file contain this byte string (tEXt chunks are stored uncompressed: key\0value)? */
static int file_has(const char *path, const char *s, size_t n) {
    size_t len;
    char *b = tc_read_all(path, &len);
    int found = 0;
    for (size_t i = 0; b && i + n <= len && !found; i++) found = !memcmp(b + i, s, n);
    free(b);
    return found;
}

/* Does the PNG hold a text chunk `key` whose value starts with `value`? */
static int has_text(const char *path, const char *key, const char *value) {
    char kv[1024];
    int n = snprintf(kv, sizeof kv, "%s%c%s", key, 0, value);
    return file_has(path, kv, (size_t)n);
}

static void expect_err(int rc, const char *a, const char *b) {
    assert_true(rc < 0);
    printf("  expected error: %s\n", ss_err());
    if (!strstr(ss_err(), a) || (b && !strstr(ss_err(), b))) fail_msg("error '%s' lacks '%s' / '%s'", ss_err(), a, b ? b : "");
}

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/ss_pipe_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/m", g_dir);
    sd3_config tc = small_transformer();
    te_config ec = small_encoder(32);
    if (pipe_init_random(g_model, &tc, &ec, WORDS, 42) < 0 || pipe_load(&g_pp, g_model) < 0) {
        fprintf(stderr, "setup: %s\n", ss_err());
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    pipe_free(g_pp);
    rm_rf(g_dir);
    return 0;
}

/* pipe_generate with the given settings; rgb [16*16*3] (or the given size), final [3*H*W] optional. */
static void gen(uint64_t seed, int steps, double cfg, int size, sink_ctx *sk, uint8_t *rgb, float *final) {
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = PROMPT;
    p.seed = seed;
    p.steps = steps;
    p.cfg = cfg;
    p.height = p.width = size;
    if (pipe_generate(g_pp, &p, rgb, sk, final) < 0) fail_msg("pipe_generate: %s", ss_err());
}

static void save_png(const char *path, const uint8_t *rgb, int size) {
    const char *kv[] = {"prompt", PROMPT, "Software", "test"};
    if (png_write_rgb(path, size, size, rgb, kv, 2) < 0) fail_msg("png_write_rgb: %s", ss_err());
}

static sink_ctx *ctx_with(const char *cond_json) {
    sink_ctx *s = sink_ctx_new();
    assert_non_null(s);
    json_error_t je;
    json_t *o = json_loads(cond_json, 0, &je);
    assert_non_null(o);
    sink_condition c;
    if (sink_condition_from_json(&c, o, "test") < 0) fail_msg("%s", ss_err());
    json_decref(o);
    sink_ctx_set_condition(s, &c);
    return s;
}

/* ---- determinism ---- */

static void test_threads_and_seeds(void **st) {
    (void)st;
    enum { SZ = 48 }; /* large enough that the engine's parallel loops really split */
    static uint8_t a[SZ * SZ * 3], b[SZ * SZ * 3], c[SZ * SZ * 3];
    static float fa[3 * SZ * SZ], fb[3 * SZ * SZ];
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    gen(3, 4, 4.0, SZ, NULL, a, fa);
    omp_set_num_threads(2);
    gen(3, 4, 4.0, SZ, NULL, b, fb);
    omp_set_num_threads(saved);
    assert_memory_equal(fa, fb, sizeof fa);
    save_png(path_in("t1.png"), a, SZ);
    save_png(path_in("t2.png"), b, SZ);
    assert_files_equal(path_in("t1.png"), path_in("t2.png"));
    /* a different seed gives a different image */
    gen(4, 4, 4.0, SZ, NULL, c, NULL);
    save_png(path_in("t3.png"), c, SZ);
    assert_memory_not_equal(a, c, sizeof a);
    /* the sample is not saturated: decoding is not hiding differences */
    int mid = 0;
    for (size_t i = 0; i < sizeof a; i++) mid += a[i] > 0 && a[i] < 255;
    assert_true(mid > (int)sizeof a / 4);
}

/* The transformer's workspace is allocated once per image, never per denoising step, and a
 * caller's workspace is reused across images without changing a bit. */
static void test_workspace_once(void **st) {
    (void)st;
    enum { SZ = 16, BIG = 32 };
    static uint8_t a[BIG * BIG * 3], b[BIG * BIG * 3];
    static float fa[3 * BIG * BIG], fb[3 * BIG * BIG];
    long before = sd3_workspace_allocs(NULL), abefore = attn_scratch_allocs(NULL);
    gen(9, 10, 4.0, SZ, NULL, a, fa); /* 10 guided steps, the pipeline's own workspace */
    assert_int_equal(sd3_workspace_allocs(NULL) - before, 1);
    /* the attention scratch too: sized with the workspace, never by an attention call */
    assert_int_equal(attn_scratch_allocs(NULL) - abefore, 1);
    sd3_workspace *ws;
    assert_int_equal(sd3_workspace_new(&ws, NULL, 0, 0, 0, 0), 0);
    assert_int_equal(sd3_workspace_allocs(ws), 0);
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = PROMPT;
    p.seed = 9;
    p.steps = 10;
    p.cfg = 4.0;
    p.height = p.width = SZ;
    before = sd3_workspace_allocs(NULL);
    for (int rep = 0; rep < 2; rep++) { /* the second image reuses the first one's buffers */
        memset(fb, 0, sizeof fb);
        if (pipe_generate_ws(g_pp, &p, b, NULL, fb, ws) < 0) fail_msg("pipe_generate_ws: %s", ss_err());
        assert_int_equal(sd3_workspace_allocs(ws), 1);
        assert_memory_equal(fa, fb, sizeof(float) * 3 * SZ * SZ);
        assert_memory_equal(a, b, SZ * SZ * 3);
    }
    assert_int_equal(sd3_workspace_allocs(NULL) - before, 1);
    const size_t small = sd3_workspace_bytes(ws);
    /* a larger image grows it once; a smaller one after it allocates nothing and gives the same bits */
    p.height = p.width = BIG;
    if (pipe_generate_ws(g_pp, &p, b, NULL, NULL, ws) < 0) fail_msg("pipe_generate_ws: %s", ss_err());
    assert_int_equal(sd3_workspace_allocs(ws), 2);
    assert_true(sd3_workspace_bytes(ws) > small);
    p.height = p.width = SZ;
    if (pipe_generate_ws(g_pp, &p, b, NULL, fb, ws) < 0) fail_msg("pipe_generate_ws: %s", ss_err());
    assert_int_equal(sd3_workspace_allocs(ws), 2);
    assert_memory_equal(fa, fb, sizeof(float) * 3 * SZ * SZ);
    /* so does a probed run: the hooks see the same attention arguments */
    sink_ctx *s = sink_ctx_new();
    int blocks[] = {0, 1};
    assert_int_equal(sink_ctx_set_probe(s, blocks, 2, TOK_IMAGE, 2, 0), 0);
    abefore = attn_scratch_allocs(NULL);
    if (pipe_generate_ws(g_pp, &p, b, s, fb, ws) < 0) fail_msg("pipe_generate_ws: %s", ss_err());
    assert_int_equal(sd3_workspace_allocs(ws), 2);
    assert_int_equal(attn_scratch_allocs(NULL) - abefore, 0);
    assert_memory_equal(fa, fb, sizeof(float) * 3 * SZ * SZ);
    sink_ctx_free(s);
    sd3_workspace_free(ws);
}

static void test_decode(void **st) {
    (void)st;
    const float s[3 * 2] = {-1.0f, 1.0f, 0.0f, 2.0f, -3.0f, NAN};
    uint8_t rgb[6];
    pipe_decode(rgb, s, 1, 2);
    /* pixel 0: (-1, 0, -3) -> (0, 128 [127.5 rounds to even], 0); pixel 1: (1, 2, NaN) -> (255, 255, 0) */
    const uint8_t want[6] = {0, 128, 0, 255, 255, 0};
    assert_memory_equal(rgb, want, 6);
}

/* ---- sink contexts ---- */

static void test_noop_and_probe(void **st) {
    (void)st;
    uint8_t ref[16 * 16 * 3], got[16 * 16 * 3];
    float fref[3 * 16 * 16], fgot[3 * 16 * 16];
    gen(7, 3, 4.0, 0, NULL, ref, fref);

    sink_ctx *s = ctx_with("{\"layers\": []}");
    gen(7, 3, 4.0, 0, s, got, fgot);
    assert_memory_equal(ref, got, sizeof ref);
    assert_memory_equal(fref, fgot, sizeof fref);
    assert_int_equal(sink_ctx_record_count(s), 0);
    sink_ctx_free(s);

    s = sink_ctx_new();
    int blocks[] = {0, 1};
    assert_int_equal(sink_ctx_set_probe(s, blocks, 2, TOK_IMAGE, 3, 0), 0);
    gen(7, 3, 4.0, 0, s, got, fgot);
    assert_memory_equal(ref, got, sizeof ref);
    assert_memory_equal(fref, fgot, sizeof fref);
    /* one record per probed block and step, batch 2 (uncond, cond) */
    assert_int_equal(sink_ctx_record_count(s), 6);
    for (int i = 0; i < 6; i++) {
        const sink_record *r = sink_ctx_record(s, i);
        assert_int_equal(r->step, i / 2);
        assert_int_equal(r->block, i % 2);
        assert_int_equal(r->B, 2);
        assert_true(r->probed && !r->intervened);
        assert_true(fabs(r->tfrac - (i / 2) / 2.0) < 1e-15);
    }
    sink_ctx_free(s);
}

static void test_real_condition(void **st) {
    (void)st;
    uint8_t ref[16 * 16 * 3], got[16 * 16 * 3];
    gen(7, 3, 4.0, 0, NULL, ref, NULL);
    sink_ctx *s = ctx_with("{\"layers\": [0], \"select\": \"topk\", \"k\": 1, \"path\": \"score\", \"eta\": 0.0}");
    gen(7, 3, 4.0, 0, s, got, NULL);
    assert_memory_not_equal(ref, got, sizeof ref);
    assert_int_equal(sink_ctx_record_count(s), 3);
    for (int i = 0; i < 3; i++) {
        const sink_record *r = sink_ctx_record(s, i);
        assert_true(r->intervened);
        assert_int_equal(r->block, 0);
        assert_int_equal(r->step, i);
        assert_int_equal(r->k, 1);
        /* the suppressed key keeps no mass after score-path removal */
        for (int bh = 0; bh < r->B * r->H; bh++) assert_true(r->after[bh] < 1e-6 && r->before[bh] > r->after[bh]);
    }
    sink_ctx_free(s);
}

/* SD3.5-style dual blocks in the sampler: attn2 sites are probed (bit-identical output, one record
 * per site and step, in forward order) and intervened on (the image changes; records per step). */
static void test_attn2_sites_in_sampler(void **st) {
    (void)st;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/dual", g_dir);
    sd3_config tc = small_transformer();
    tc.dual[1] = 1;
    te_config ec = small_encoder(32);
    pipeline *pp;
    if (pipe_init_random(dir, &tc, &ec, WORDS, 43) < 0 || pipe_load(&pp, dir) < 0) fail_msg("%s", ss_err());
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = PROMPT;
    p.seed = 5;
    p.steps = 3;
    uint8_t ref[16 * 16 * 3], got[16 * 16 * 3];
    if (pipe_generate(pp, &p, ref, NULL, NULL) < 0) fail_msg("%s", ss_err());
    sink_ctx *s = sink_ctx_new();
    const int a2 = ss_site_code(SS_SITE_ATTN2, 1), codes[] = {0, 1, a2};
    assert_int_equal(sink_ctx_set_probe(s, codes, 3, TOK_IMAGE, 3, 0), 0);
    if (pipe_generate(pp, &p, got, s, NULL) < 0) fail_msg("%s", ss_err());
    assert_memory_equal(ref, got, sizeof ref);
    assert_int_equal(sink_ctx_record_count(s), 9);
    for (int i = 0; i < 9; i++) {
        const sink_record *r = sink_ctx_record(s, i);
        assert_int_equal(r->step, i / 3);
        assert_int_equal(r->site, codes[i % 3]);
        assert_int_equal(r->block, i % 3); /* attn2.1 is flat site 2 (joint.0, joint.1, attn2.1) */
        assert_true(r->probed && r->act_max[0] > 0);
    }
    /* block 1's output: the same activation statistics in joint.1's and attn2.1's records */
    assert_true(sink_ctx_record(s, 1)->act_max[1] == sink_ctx_record(s, 2)->act_max[1]);
    sink_ctx_free(s);
    s = ctx_with("{\"sites\": [\"attn2.1\"], \"k\": 2, \"steps\": [0.5, 1.0]}");
    if (pipe_generate(pp, &p, got, s, NULL) < 0) fail_msg("%s", ss_err());
    assert_memory_not_equal(ref, got, sizeof ref);
    assert_int_equal(sink_ctx_record_count(s), 2); /* steps 1 and 2: t/T = 0.5, 1 */
    for (int i = 0; i < 2; i++) {
        const sink_record *r = sink_ctx_record(s, i);
        assert_true(r->intervened && r->site == a2 && r->step == i + 1 && r->T == 64);
        for (int bh = 0; bh < r->B * r->H; bh++) assert_true(r->after[bh] < 1e-6 && r->before[bh] > r->after[bh]);
    }
    sink_ctx_free(s);
    pipe_free(pp);
}

typedef struct {
    int steps;
    float *samples; /* [steps, 3*16*16] */
} trace;

static void keep_sample(void *ctx, int step, int steps, const float *x) {
    trace *t = ctx;
    assert_int_equal(steps, t->steps);
    memcpy(t->samples + (size_t)step * 3 * 16 * 16, x, sizeof(float) * 3 * 16 * 16);
}

static void traced(sink_ctx *s, trace *t) {
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = PROMPT;
    p.seed = 11;
    p.steps = t->steps;
    p.progress = keep_sample;
    p.progress_ctx = t;
    uint8_t rgb[16 * 16 * 3];
    if (pipe_generate(g_pp, &p, rgb, s, NULL) < 0) fail_msg("%s", ss_err());
}

static void test_step_window(void **st) {
    (void)st;
    enum { STEPS = 5, N = 3 * 16 * 16 };
    static float a[STEPS * N], b[STEPS * N];
    trace ta = {STEPS, a}, tb = {STEPS, b};
    traced(NULL, &ta);
    sink_ctx *s = ctx_with("{\"layers\": [0, 1], \"k\": 1, \"steps\": [0.5, 1.0]}");
    traced(s, &tb);
    /* tfrac = i/4: steps 2, 3, 4 are in the window, each at both blocks */
    int per_step[STEPS] = {0};
    for (int i = 0; i < sink_ctx_record_count(s); i++) {
        const sink_record *r = sink_ctx_record(s, i);
        assert_true(r->intervened);
        assert_true(r->tfrac >= 0.5);
        assert_true(fabs(r->tfrac - r->step / 4.0) < 1e-15);
        per_step[r->step]++;
    }
    const int want[STEPS] = {0, 0, 2, 2, 2};
    assert_memory_equal(per_step, want, sizeof want);
    /* the first half of the trajectory is untouched, the rest is not */
    assert_memory_equal(a, b, sizeof(float) * 2 * N);
    assert_memory_not_equal(a + 2 * N, b + 2 * N, sizeof(float) * N);
    sink_ctx_free(s);
}

/* ---- CFG against a hand-run sampler ---- */

static void manual(uint64_t seed, int steps, double cfg, float *x) {
    const sd3_model *m = g_pp->transformer;
    const int S = 8, J = 32, H = 16, W = 16, n = 3 * H * W, B = cfg > 1 ? 2 : 1;
    float ctx[2 * 8 * 32], pooled[2 * 32], xin[2 * 3 * 16 * 16], v[2 * 3 * 16 * 16];
    if (B == 2) {
        assert_int_equal(te_encode(g_pp->text_encoder, "", ctx, pooled), 0);
        assert_int_equal(te_encode(g_pp->text_encoder, PROMPT, ctx + S * J, pooled + J), 0);
    } else {
        assert_int_equal(te_encode(g_pp->text_encoder, PROMPT, ctx, pooled), 0);
    }
    rng_normal_fill(x, n, seed, 0);
    fm_sched sc;
    assert_int_equal(fm_init(&sc, &g_pp->scheduler), 0);
    assert_true(g_pp->scheduler.shift == 3.0);
    assert_int_equal(fm_set_timesteps(&sc, steps, NULL, NULL), 0);
    for (int i = 0; i < steps; i++) {
        float t[2] = {sc.timesteps[i], sc.timesteps[i]};
        for (int b = 0; b < B; b++) memcpy(xin + b * n, x, sizeof(float) * n);
        assert_int_equal(sd3_forward(m, v, xin, ctx, pooled, t, B, H, W, S, NULL), 0);
        for (int j = 0; j < n; j++) {
            float g = (float)cfg, vu = v[j], vc = v[n + j];
            if (B == 2) v[j] = vu + g * (vc - vu);
            x[j] += (sc.sigmas[i + 1] - sc.sigmas[i]) * v[j];
        }
    }
    fm_free(&sc);
}

static void test_cfg_manual(void **st) {
    (void)st;
    enum { N = 3 * 16 * 16 };
    float want[N], got[N], nocfg[N];
    uint8_t rgb[16 * 16 * 3], rgb2[16 * 16 * 3];
    /* one step, guided: the batch-2 forward and the combination match bit for bit */
    sink_ctx *s = sink_ctx_new();
    int blocks[] = {1};
    assert_int_equal(sink_ctx_set_probe(s, blocks, 1, TOK_IMAGE, 2, 0), 0);
    gen(5, 1, 3.5, 0, s, rgb, got);
    manual(5, 1, 3.5, want);
    assert_memory_equal(got, want, sizeof want);
    pipe_decode(rgb2, want, 16, 16);
    assert_memory_equal(rgb, rgb2, sizeof rgb);
    /* steps == 1: tfrac is 0 */
    assert_int_equal(sink_ctx_record_count(s), 1);
    assert_true(sink_ctx_record(s, 0)->tfrac == 0.0 && sink_ctx_record(s, 0)->step == 0);
    sink_ctx_free(s);
    /* two steps */
    gen(5, 2, 3.5, 0, NULL, rgb, got);
    manual(5, 2, 3.5, want);
    assert_memory_equal(got, want, sizeof want);
    /* cfg <= 1: a plain conditional batch-1 sampler, and guidance does change the result */
    gen(5, 2, 1.0, 0, NULL, rgb, nocfg);
    manual(5, 2, 1.0, want);
    assert_memory_equal(nocfg, want, sizeof want);
    assert_memory_not_equal(nocfg, got, sizeof got);
}

/* ---- parameter errors ---- */

static void test_param_errors(void **st) {
    (void)st;
    pipe_params p;
    pipe_params_default(&p);
    assert_int_equal(p.steps, 20);
    assert_true(p.cfg == 4.0);
    uint8_t rgb[16 * 16 * 3];
    expect_err(pipe_generate(g_pp, &p, rgb, NULL, NULL), "no prompt", NULL);
    p.prompt = "a photo of a zebra";
    expect_err(pipe_generate(g_pp, &p, rgb, NULL, NULL), "unknown word 'zebra'", NULL);
    p.prompt = "a photo of a red circle a photo"; /* 8 words, the limit is 7 */
    expect_err(pipe_generate(g_pp, &p, rgb, NULL, NULL), "prompt too long", NULL);
    p.prompt = PROMPT;
    p.steps = 0;
    expect_err(pipe_generate(g_pp, &p, rgb, NULL, NULL), "steps", NULL);
    p.steps = 1;
    p.cfg = NAN;
    expect_err(pipe_generate(g_pp, &p, rgb, NULL, NULL), "guidance", NULL);
    p.cfg = 2;
    int H, W;
    assert_int_equal(pipe_image_size(g_pp, &p, &H, &W), 0);
    assert_int_equal(H, 16);
    assert_int_equal(W, 16);
    p.height = 15;
    expect_err(pipe_image_size(g_pp, &p, &H, &W), "multiples of the patch size", NULL);
    p.height = 66; /* 33 patches > pos_embed_max_size 32 */
    expect_err(pipe_generate(g_pp, &p, rgb, NULL, NULL), "pos_embed_max_size", NULL);
    p.height = 8;
    p.width = 12;
    assert_int_equal(pipe_image_size(g_pp, &p, &H, &W), 0);
    assert_int_equal(H * 100 + W, 812);
    assert_int_equal(pipe_generate(g_pp, &p, rgb, NULL, NULL), 0);
}

/* ---- layout errors ---- */

static void fresh(const char *dir) {
    rm_rf(dir);
    sd3_config tc = small_transformer();
    te_config ec = small_encoder(32);
    if (pipe_init_random(dir, &tc, &ec, WORDS, 1) < 0) fail_msg("%s", ss_err());
}

static void test_layout_errors(void **st) {
    (void)st;
    const char *d = path_in("bad");
    char p[300];
    pipeline *pp = (pipeline *)1;
    /* a folder that is not a pipeline */
    mkdir(d, 0777);
    expect_err(pipe_load(&pp, d), "bad/model_index.json", "cannot open");
    assert_null(pp);

    fresh(d);
    assert_int_equal(pipe_load(&pp, d), 0);
    pipe_free(pp);
    snprintf(p, sizeof p, "%s/model_index.json", d);
    assert_int_equal(tc_write_text(p, "{\"_class_name\": \"StableDiffusion3Pipeline\"}"), 0);
    expect_err(pipe_load(&pp, d), "model_index.json", "_class_name");
    assert_int_equal(tc_write_text(p, "{\"_class_name\": \"SinkscopePixelPipeline\", \"transformer\": [\"diffusers\", \"SD3Transformer2DModel\"],"
                  " \"text_encoder\": [\"sinkscope\", \"WordEmbeddingTextEncoder\"], \"tokenizer\": [\"sinkscope\", "
                  "\"WordTokenizer\"], \"scheduler\": [\"diffusers\", \"FlowMatchEulerDiscreteScheduler\"], \"vae\": "
                  "[\"diffusers\", \"AutoencoderKL\"]}"), 0);
    expect_err(pipe_load(&pp, d), "model_index.json", "'vae' must be null");
    assert_int_equal(tc_write_text(p, "{\"_class_name\": \"SinkscopePixelPipeline\", \"transformer\": [\"diffusers\", \"SD3Transformer2DModel\"]}"), 0);
    expect_err(pipe_load(&pp, d), "model_index.json", "missing field 'text_encoder'");
    assert_int_equal(tc_write_text(p, "{\"_class_name\": \"SinkscopePixelPipeline\", \"transformer\": [\"diffusers\", \"FluxTransformer2DModel\"]}"), 0);
    expect_err(pipe_load(&pp, d), "model_index.json", "'transformer' must be");
    assert_int_equal(tc_write_text(p, "{\"_class_name\": "), 0);
    expect_err(pipe_load(&pp, d), "model_index.json", "not valid JSON");
    assert_int_equal(pipe_write_index(d), 0);
    snprintf(p, sizeof p, "%s/model_index.json", d);
    size_t len;
    char *idx = tc_read_all(p, &len);
    *strrchr(idx, '}') = 0; /* reopen the object to add an unknown component */
    char buf[2048];
    snprintf(buf, sizeof buf, "%s, \"safety_checker\": null}", idx);
    free(idx);
    assert_int_equal(tc_write_text(p, buf), 0);
    expect_err(pipe_load(&pp, d), "model_index.json", "unknown field 'safety_checker'");
    assert_int_equal(pipe_write_index(d), 0);

    /* bad scheduler configs */
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", d);
    assert_int_equal(tc_write_text(p, "{\"shift\": -1.0}"), 0);
    expect_err(pipe_load(&pp, d), "scheduler/scheduler_config.json", "shift");
    assert_int_equal(tc_write_text(p, "{\"use_karras_sigmas\": true}"), 0);
    expect_err(pipe_load(&pp, d), "scheduler/scheduler_config.json", "use_karras_sigmas");
    remove(p);
    expect_err(pipe_load(&pp, d), "scheduler/scheduler_config.json", "cannot open");

    /* text encoder width differs from the transformer's joint_attention_dim */
    fresh(d);
    te_config ec = small_encoder(24);
    ec.vocab_size = 11;
    te *enc;
    assert_int_equal(te_init_random(&enc, &ec, 3), 0);
    assert_int_equal(te_save(enc, d), 0); /* keeps the vocabulary already there */
    te_free(enc);
    expect_err(pipe_load(&pp, d), "text_encoder/config.json", "joint_attention_dim 32 in");
    assert_non_null(strstr(ss_err(), "transformer/config.json"));

    /* a 4-channel (latent-space) transformer */
    fresh(d);
    sd3_config tc = small_transformer();
    tc.in_channels = tc.out_channels = 4;
    snprintf(p, sizeof p, "%s/transformer", d);
    assert_int_equal(sd3_init_random(&tc, p, 1, ST_F32), 0);
    expect_err(pipe_load(&pp, d), "transformer/config.json", "needs 3 (RGB)");

    /* missing pieces name their file */
    fresh(d);
    snprintf(p, sizeof p, "%s/tokenizer/vocab.txt", d);
    remove(p);
    expect_err(pipe_load(&pp, d), "tokenizer/vocab.txt", NULL);
    fresh(d);
    snprintf(p, sizeof p, "%s/transformer/config.json", d);
    remove(p);
    expect_err(pipe_load(&pp, d), "transformer/config.json", NULL);
    fresh(d);
    snprintf(p, sizeof p, "%s/transformer/diffusion_pytorch_model.safetensors", d);
    remove(p);
    expect_err(pipe_load(&pp, d), "transformer", NULL);
    assert_null(pp);

    /* pipe_init_random refuses inconsistent configurations */
    rm_rf(d);
    tc = small_transformer();
    ec = small_encoder(24);
    expect_err(pipe_init_random(d, &tc, &ec, WORDS, 1), "hidden_size 24", "joint_attention_dim 32");
    ec = small_encoder(32);
    ec.vocab_size = 5;
    expect_err(pipe_init_random(d, &tc, &ec, WORDS, 1), "vocab_size 5", NULL);
    rm_rf(d);
}

/* ---- the generate command ---- */

static const char *bin(void) {
    const char *b = getenv("SINKSCOPE_BIN");
    return b ? b : "./sinkscope";
}

static char g_abs_bin[4096];

/* Runs the CLI with stderr captured into g_dir/err.txt; returns the exit status. */
static int run_cli(const char *cwd, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' generate %s 2> '%s/err.txt'", cwd, g_abs_bin, args, g_dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void expect_stderr(const char *s) {
    size_t len;
    char *e = tc_read_all(path_in("err.txt"), &len);
    assert_non_null(e);
    printf("  stderr: %s", e);
    if (!strstr(e, s)) fail_msg("stderr lacks '%s'", s);
    free(e);
}

static void test_cli(void **st) {
    (void)st;
    if (access(bin(), X_OK) != 0 || !realpath(bin(), g_abs_bin)) {
        printf("  %s not built: skipping the CLI test\n", bin());
        skip();
    }
    char args[2048];
    snprintf(args, sizeof args, "--prompt '%s' --seed 9 --steps 3 --cfg 2.5 --model '%s' --out '%s' --threads 1", PROMPT,
             g_model, path_in("c1.png"));
    assert_int_equal(run_cli(g_dir, args), 0);
    snprintf(args, sizeof args, "--prompt '%s' --seed 9 --steps 3 --cfg 2.5 --model '%s' --out '%s' --threads 2", PROMPT,
             g_model, path_in("c2.png"));
    assert_int_equal(run_cli(g_dir, args), 0);
    assert_files_equal(path_in("c1.png"), path_in("c2.png"));
    /* the same bytes as the library writes with the same metadata */
    uint8_t rgb[16 * 16 * 3];
    gen(9, 3, 2.5, 0, NULL, rgb, NULL);
    const char *kv[] = {"prompt", PROMPT, "seed", "9", "steps", "3", "cfg", "2.5", "model", g_model,
                        "Software", "sinkscope " SINKSCOPE_VERSION};
    assert_int_equal(png_write_rgb(path_in("lib.png"), 16, 16, rgb, kv, 6), 0);
    assert_files_equal(path_in("c1.png"), path_in("lib.png"));
    assert_true(has_text(path_in("c1.png"), "prompt", PROMPT));
    assert_true(has_text(path_in("c1.png"), "seed", "9"));
    assert_true(has_text(path_in("c1.png"), "steps", "3"));
    assert_true(has_text(path_in("c1.png"), "cfg", "2.5"));
    assert_true(has_text(path_in("c1.png"), "model", g_model));
    assert_true(has_text(path_in("c1.png"), "Software", "sinkscope "));
    assert_false(file_has(path_in("c1.png"), "condition", 9));

    /* with a condition: its normalised JSON is stored */
    assert_int_equal(tc_write_text(path_in("cond.json"), "{\"layers\": [1], \"k\": 2, \"steps\": [0.5, 1]}"), 0);
    snprintf(args, sizeof args, "--prompt '%s' --seed 9 --steps 3 --cfg 2.5 --model '%s' --out '%s' --condition '%s'",
             PROMPT, g_model, path_in("c3.png"), path_in("cond.json"));
    assert_int_equal(run_cli(g_dir, args), 0);
    assert_true(has_text(path_in("c3.png"), "condition", "{\"name\""));
    assert_true(file_has(path_in("c3.png"), "\"steps\":[0.5,1.0]", 17));
    size_t l1, l3;
    char *f1 = tc_read_all(path_in("c1.png"), &l1), *f3 = tc_read_all(path_in("c3.png"), &l3);
    assert_true(l1 != l3 || memcmp(f1, f3, l1));
    free(f1), free(f3);

    /* errors */
    snprintf(args, sizeof args, "--prompt 'a photo of a zebra' --model '%s' --out x.png", g_model);
    assert_int_equal(run_cli(g_dir, args), 1);
    expect_stderr("unknown word 'zebra'");
    snprintf(args, sizeof args, "--prompt 'a a a a a a a a' --model '%s' --out x.png", g_model);
    assert_int_equal(run_cli(g_dir, args), 1);
    expect_stderr("prompt too long");
    assert_int_equal(run_cli(g_dir, "--prompt a --out x.png --cfg lots"), 2);
    expect_stderr("--cfg must be a number");
    assert_int_equal(run_cli(g_dir, "--prompt a --out x.png --frobnicate"), 2);
    expect_stderr("unknown argument '--frobnicate'");
    assert_int_equal(run_cli(g_dir, "--out x.png"), 2);
    expect_stderr("--prompt and --out are required");
    assert_int_equal(tc_write_text(path_in("cond2.json"), "{\"layers\": [5]}"), 0);
    snprintf(args, sizeof args, "--prompt a --model '%s' --out x.png --condition '%s'", g_model, path_in("cond2.json"));
    assert_int_equal(run_cli(g_dir, args), 1);
    expect_stderr("names block 5, but the model has 2 blocks");
    snprintf(args, sizeof args, "--prompt a --model '%s' --out x.png", g_dir);
    assert_int_equal(run_cli(g_dir, args), 1);
    expect_stderr("model_index.json: cannot open");
    assert_int_equal(access(path_in("x.png"), F_OK), -1);

    /* the embedded model: a copy of the executable in a folder without models/shapeworld fails
     * clearly; a models/shapeworld in the current directory is then found */
    char cmd[8192], bdir[300], moddir[300];
    snprintf(bdir, sizeof bdir, "%s/bin", g_dir);
    mkdir(bdir, 0777);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/sinkscope'", g_abs_bin, bdir);
    assert_int_equal(system(cmd), 0);
    snprintf(g_abs_bin, sizeof g_abs_bin, "%s/sinkscope", bdir);
    assert_int_equal(run_cli(bdir, "--prompt a --out x.png"), 1);
    expect_stderr("no --model given and the embedded model models/shapeworld was not found");
    snprintf(moddir, sizeof moddir, "%s/models", g_dir);
    mkdir(moddir, 0777);
    snprintf(cmd, sizeof cmd, "%s/models/shapeworld", g_dir);
    assert_int_equal(symlink(g_model, cmd), 0);
    snprintf(args, sizeof args, "--prompt '%s' --seed 9 --steps 3 --cfg 2.5 --out '%s'", PROMPT, path_in("c4.png"));
    assert_int_equal(run_cli(g_dir, args), 0);
    assert_true(has_text(path_in("c4.png"), "model", "models/shapeworld"));
    /* next to the executable wins over the current directory */
    snprintf(cmd, sizeof cmd, "%s/bin/models", g_dir);
    mkdir(cmd, 0777);
    snprintf(cmd, sizeof cmd, "%s/bin/models/shapeworld", g_dir);
    assert_int_equal(symlink(g_model, cmd), 0);
    assert_int_equal(run_cli(g_dir, args), 0);
    char want[400];
    snprintf(want, sizeof want, "%s/bin/models/shapeworld", g_dir);
    assert_true(has_text(path_in("c4.png"), "model", want));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_threads_and_seeds),
        cmocka_unit_test(test_workspace_once),
        cmocka_unit_test(test_noop_and_probe),
        cmocka_unit_test(test_real_condition),
        cmocka_unit_test(test_attn2_sites_in_sampler),
        cmocka_unit_test(test_step_window),
        cmocka_unit_test(test_cfg_manual),
        cmocka_unit_test(test_param_errors),
        cmocka_unit_test(test_layout_errors),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
