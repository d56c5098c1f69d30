/* The FLUX engine against diffusers' own outputs (tests/fixtures/flux-*): the sample, every double
 * and single block, the probe's mass at every site, the pre/post-RoPE <q,k>, the interventions;
 * the no-op guarantees; thread-count independence; damaged folders. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "common.h"
#include "damage.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/flux.h"
#include "sink/record.h"
#include "sink/sink.h"

/* flux-tiny-a (the reference set's) and every folder of our own variants, tests/fixtures/flux-variants/
 * (tests/gen/gen_flux_variants.py: BF16, schnell, non-square grids, batch 1, shards, other heads
 * and axes), filled in by main. */
#define MAXFIX 16
static char *FIXTURES[MAXFIX];
static size_t NFIX;
#define MAXB 64

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void find_fixtures(void) {
    FIXTURES[NFIX++] = strdup("flux-tiny-a");
    DIR *d = opendir(tc_path("fixtures/flux-variants"));
    if (!d) {
        fprintf(stderr, "test_flux: no tests/fixtures/flux-variants\n");
        exit(1);
    }
    const struct dirent *e;
    while ((e = readdir(d)) && NFIX < MAXFIX) {
        if (e->d_name[0] == '.') continue;
        char buf[512];
        snprintf(buf, sizeof buf, "flux-variants/%s", e->d_name);
        FIXTURES[NFIX++] = strdup(buf);
    }
    closedir(d);
    qsort(FIXTURES + 1, NFIX - 1, sizeof FIXTURES[0], cmp_str);
    if (NFIX < 3) {
        fprintf(stderr, "test_flux: expected our own variants in tests/fixtures/flux-variants, found %zu\n", NFIX - 1);
        exit(1);
    }
}

typedef struct {
    flux_model *m;
    float *hs, *ctx, *pooled, *t, *g, *img_ids, *txt_ids;
    int B, N, S;
    size_t nout;
    const char *dir, *expected;
} fx;

static void fx_load(fx *f, const char *name) {
    memset(f, 0, sizeof *f);
    f->dir = tc_path("fixtures/%s", name);
    f->expected = tc_path("fixtures/%s/expected.safetensors", name);
    if (flux_load(&f->m, f->dir) < 0) fail_msg("%s", ss_err());
    const char *in = tc_path("fixtures/%s/inputs.safetensors", name);
    int64_t sh[3], sc[3];
    f->hs = tc_load(in, "hidden_states", NULL, sh, NULL);
    f->ctx = tc_load(in, "encoder_hidden_states", NULL, sc, NULL);
    f->pooled = tc_load(in, "pooled_projections", NULL, NULL, NULL);
    f->t = tc_load(in, "timestep", NULL, NULL, NULL);
    f->g = tc_load(in, "guidance", NULL, NULL, NULL);
    f->img_ids = tc_load(in, "img_ids", NULL, NULL, NULL);
    f->txt_ids = tc_load(in, "txt_ids", NULL, NULL, NULL);
    assert_non_null(f->hs);
    assert_non_null(f->ctx);
    assert_non_null(f->pooled);
    assert_non_null(f->t);
    assert_non_null(f->img_ids);
    assert_non_null(f->txt_ids);
    assert_true(f->m->cfg.guidance_embeds == (f->g != NULL));
    f->B = (int)sh[0];
    f->N = (int)sh[1];
    f->S = (int)sc[1];
    const int p = f->m->cfg.patch_size;
    f->nout = (size_t)f->B * f->N * p * p * f->m->cfg.out_channels;
}

static void fx_free(fx *f) {
    flux_free(f->m);
    free(f->hs);
    free(f->ctx);
    free(f->pooled);
    free(f->t);
    free(f->g);
    free(f->img_ids);
    free(f->txt_ids);
}

static float *fx_run_hooks(fx *f, const flux_hooks *hk) {
    float *out = malloc(sizeof(float) * f->nout);
    if (flux_forward(f->m, out, f->hs, f->ctx, f->pooled, f->t, f->g, f->img_ids, f->txt_ids, f->B, f->N, f->S, hk) < 0)
        fail_msg("%s", ss_err());
    return out;
}

/* The sink probe's hooks as flux_hooks. */
static flux_hooks sink_hooks(sink_ctx *sk) {
    const sd3_hooks h = sink_ctx_hooks(sk);
    return (flux_hooks){.ctx = h.ctx, .attention = h.attention, .block_output = h.block_output,
                        .single_output = h.block_output};
}

static float *fx_run(fx *f, sink_ctx *sk) {
    flux_hooks hk;
    if (sk) hk = sink_hooks(sk);
    return fx_run_hooks(f, sk ? &hk : NULL);
}

static void check(const char *what, const char *fixture, const float *got, const float *want, size_t n, double tol) {
    if (!want) fail_msg("%s: expected tensor %s is missing", fixture, what);
    const double e = tc_rel_l2(got, want, n);
    printf("  %-36s %-44s rel L2 %.3e (tolerance %.0e)\n", fixture, what, e, tol);
    assert_true(e <= tol);
}

/* ---- sample, double and single block outputs ---- */

typedef struct {
    float *dbl[MAXB], *sgl[MAXB];
    size_t ndbl[MAXB], nsgl[MAXB];
} capture;

static int cap_double(void *ctx, int block, const float *x, int B, int N, int D) {
    capture *c = ctx;
    assert_true(block >= 0 && block < MAXB && !c->dbl[block]);
    c->ndbl[block] = (size_t)B * N * D;
    c->dbl[block] = malloc(sizeof(float) * c->ndbl[block]);
    memcpy(c->dbl[block], x, sizeof(float) * c->ndbl[block]);
    return 0;
}

static int cap_single(void *ctx, int block, const float *x, int B, int T, int D) {
    capture *c = ctx;
    assert_true(block >= 0 && block < MAXB && !c->sgl[block]);
    c->nsgl[block] = (size_t)B * T * D;
    c->sgl[block] = malloc(sizeof(float) * c->nsgl[block]);
    memcpy(c->sgl[block], x, sizeof(float) * c->nsgl[block]);
    return 0;
}

static void test_forward_matches_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        capture cap = {0};
        flux_hooks hk = {.ctx = &cap, .block_output = cap_double, .single_output = cap_single};
        float *out = fx_run_hooks(&f, &hk);
        size_t n;
        float *want = tc_load(f.expected, "sample", &n, NULL, NULL);
        assert_int_equal(n, f.nout);
        check("sample", FIXTURES[k], out, want, f.nout, 1e-4);
        free(want);
        char name[32];
        for (int i = 0; i < f.m->cfg.num_layers; i++) {
            snprintf(name, sizeof name, "block.%d", i);
            want = tc_load(f.expected, name, &n, NULL, NULL);
            assert_non_null(cap.dbl[i]);
            assert_int_equal(n, cap.ndbl[i]);
            check(name, FIXTURES[k], cap.dbl[i], want, n, 1e-4);
            free(want);
            free(cap.dbl[i]);
        }
        for (int j = 0; j < f.m->cfg.num_single_layers; j++) {
            snprintf(name, sizeof name, "single.%d", j);
            want = tc_load(f.expected, name, &n, NULL, NULL);
            assert_non_null(cap.sgl[j]);
            assert_int_equal(n, cap.nsgl[j]);
            check(name, FIXTURES[k], cap.sgl[j], want, n, 1e-4);
            free(want);
            free(cap.sgl[j]);
        }
        free(out);
        fx_free(&f);
    }
}

/* ---- the probe's mass at every site ---- */

static void test_probe_mass_matches_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        const int L = f.m->cfg.num_layers, Ls = f.m->cfg.num_single_layers;
        int codes[2 * MAXB], n = 0;
        for (int i = 0; i < L; i++) codes[n++] = ss_site_code(SS_SITE_DOUBLE, i);
        for (int j = 0; j < Ls; j++) codes[n++] = ss_site_code(SS_SITE_SINGLE, j);
        sink_ctx *sk = sink_ctx_new();
        assert_int_equal(sink_ctx_set_probe(sk, codes, n, TOK_IMAGE, 3, 1), 0);
        float *out = fx_run(&f, sk);
        assert_int_equal(sink_ctx_record_count(sk), n);
        for (int r = 0; r < sink_ctx_record_count(sk); r++) {
            const sink_record *rec = sink_ctx_record(sk, r);
            const int single = ss_site_code_kind(rec->site) == SS_SITE_SINGLE, blk = ss_site_code_block(rec->site);
            assert_int_equal(rec->site, codes[r]);
            assert_int_equal(rec->T, f.N + f.S);
            assert_int_equal(rec->n_img, f.N);
            char name[32];
            snprintf(name, sizeof name, "%s.%d", single ? "single_mass" : "mass", blk);
            size_t nm;
            float *want = tc_load(f.expected, name, &nm, NULL, NULL);
            if (!want) fail_msg("%s missing", name);
            assert_int_equal(nm, (size_t)rec->B * rec->H * rec->T);
            check(name, FIXTURES[k], rec->mass, want, nm, 1e-5);
            /* the top-1 key's type comes from the site: text first */
            for (int b = 0; b < rec->B; b++) {
                int text = 0;
                for (int h = 0; h < rec->H; h++) text += rec->top_idx[((size_t)b * rec->H + h) * rec->topk] < f.S;
                assert_true(fabs(rec->text_frac[b] - (double)text / rec->H) < 1e-6);
            }
            free(want);
        }
        free(out);
        sink_ctx_free(sk);
        fx_free(&f);
    }
}

/* ---- pre/post-RoPE <q, k>, averaged over the image queries ---- */

typedef struct {
    const fx *f;
    const float *cos_t, *sin_t;
    float *pre[2 * MAXB], *post[2 * MAXB]; /* by flat site index */
} qk_cap;

/* mean over image query rows of <q_i, k_j>, [B, H, T], for q, k [B, T, ld] */
static float *qk_mean(const float *q, const float *k, int B, int H, int dh, int T, int S, int ld) {
    float *r = calloc((size_t)B * H * T, sizeof(float));
    double *qm = malloc(sizeof(double) * dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            for (int d = 0; d < dh; d++) qm[d] = 0;
            for (int i = S; i < T; i++)
                for (int d = 0; d < dh; d++) qm[d] += q[((size_t)b * T + i) * ld + h * dh + d];
            for (int j = 0; j < T; j++) {
                double s = 0;
                for (int d = 0; d < dh; d++) s += qm[d] * k[((size_t)b * T + j) * ld + h * dh + d];
                r[((size_t)b * H + h) * T + j] = (float)(s / (T - S));
            }
        }
    free(qm);
    return r;
}

/* undo the rotation of rows [b*T, (b+1)*T) (the inverse of an orthogonal rotation) */
static void unrotate(float *x, const float *c, const float *s, int B, int T, int H, int dh, int ld) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++)
            for (int h = 0; h < H; h++) {
                float *v = x + ((size_t)b * T + i) * ld + h * dh;
                for (int d = 0; d < dh; d += 2) {
                    const double x0 = v[d], x1 = v[d + 1], cs = c[(size_t)i * dh + d], sn = s[(size_t)i * dh + d];
                    v[d] = (float)(x0 * cs + x1 * sn);
                    v[d + 1] = (float)(x1 * cs - x0 * sn);
                }
            }
}

static int qk_hook(void *ctx, const ss_site *site, const attn_args *a) {
    qk_cap *c = ctx;
    const int S = c->f->S, T = a->T;
    assert_int_equal(T, site->Tq);
    assert_int_equal(site->qspan[0].len, S);
    c->post[site->index] = qk_mean(a->q, a->k, a->B, a->H, a->dh, T, S, a->ld);
    const size_t n = (size_t)a->B * T * a->ld;
    float *q = malloc(sizeof(float) * n), *k = malloc(sizeof(float) * n);
    memcpy(q, a->q, sizeof(float) * n);
    memcpy(k, a->k, sizeof(float) * n);
    unrotate(q, c->cos_t, c->sin_t, a->B, T, a->H, a->dh, a->ld);
    unrotate(k, c->cos_t, c->sin_t, a->B, T, a->H, a->dh, a->ld);
    c->pre[site->index] = qk_mean(q, k, a->B, a->H, a->dh, T, S, a->ld);
    free(q);
    free(k);
    return attn_forward(a, NULL);
}

static void test_rope_qk_matches_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        const int T = f.N + f.S, dh = f.m->cfg.head_dim, A = f.m->cfg.n_axes;
        float *ids = malloc(sizeof(float) * T * A), *cs = malloc(sizeof(float) * T * dh),
              *sn = malloc(sizeof(float) * T * dh);
        memcpy(ids, f.txt_ids, sizeof(float) * f.S * A);
        memcpy(ids + (size_t)f.S * A, f.img_ids, sizeof(float) * f.N * A);
        flux_rope_tables(cs, sn, ids, T, &f.m->cfg);
        qk_cap c = {.f = &f, .cos_t = cs, .sin_t = sn};
        flux_hooks hk = {.ctx = &c, .attention = qk_hook};
        float *out = fx_run_hooks(&f, &hk);
        const int L = f.m->cfg.num_layers, Ls = f.m->cfg.num_single_layers;
        for (int s = 0; s < L + Ls; s++) {
            const int single = s >= L, blk = single ? s - L : s;
            for (int post = 0; post < 2; post++) {
                char name[48];
                snprintf(name, sizeof name, "%sqk_%s.%d", single ? "single_" : "", post ? "post" : "pre", blk);
                size_t n;
                float *want = tc_load(f.expected, name, &n, NULL, NULL);
                assert_int_equal(n, (size_t)f.B * f.m->cfg.num_heads * T);
                check(name, FIXTURES[k], post ? c.post[s] : c.pre[s], want, n, 1e-4);
                free(want);
            }
            /* RoPE matters here: pre and post differ well beyond the tolerance */
            assert_true(tc_rel_l2(c.pre[s], c.post[s], (size_t)f.B * f.m->cfg.num_heads * T) > 1e-3);
            free(c.pre[s]);
            free(c.post[s]);
        }
        free(out);
        free(ids);
        free(cs);
        free(sn);
        fx_free(&f);
    }
}

/* ---- interventions: the fixture's conditions as they are (layers = double blocks, single_layers) ---- */

static void test_interventions_match_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        json_error_t je;
        json_t *list = json_load_file(tc_path("fixtures/%s/interventions.json", FIXTURES[k]), 0, &je);
        assert_non_null(list);
        float *base = tc_load(f.expected, "sample", NULL, NULL, NULL);
        size_t i;
        json_t *obj;
        int count = 0;
        json_array_foreach(list, i, obj) {
            sink_condition c;
            if (sink_condition_from_json(&c, obj, "interventions.json") < 0) fail_msg("%s", ss_err());
            ss_site sites[2 * MAXB];
            const int ns = flux_sites(&f.m->cfg, f.N, f.S, sites, 2 * MAXB);
            if (sink_condition_resolve(&c, sites, ns, "interventions.json") < 0 ||
                sink_condition_check_sites(&c, sites, ns, "interventions.json") < 0)
                fail_msg("%s", ss_err());
            /* every site acted on is a FLUX site named by the fixture's two fields */
            const json_t *L = json_object_get(obj, "layers"), *SL = json_object_get(obj, "single_layers");
            assert_int_equal(c.n_layers, (int)(json_array_size(L) + json_array_size(SL)));
            for (size_t j = 0; j < json_array_size(L); j++)
                assert_true(sink_condition_has_layer(&c, ss_site_code(SS_SITE_DOUBLE, (int)json_integer_value(json_array_get(L, j)))));
            for (size_t j = 0; j < json_array_size(SL); j++)
                assert_true(sink_condition_has_layer(&c, ss_site_code(SS_SITE_SINGLE, (int)json_integer_value(json_array_get(SL, j)))));
            sink_ctx *sk = sink_ctx_new();
            sink_ctx_set_condition(sk, &c);
            float *out = fx_run(&f, sk);
            char name[160];
            snprintf(name, sizeof name, "sample.%s", c.name);
            float *want = tc_load(f.expected, name, NULL, NULL, NULL);
            check(name, FIXTURES[k], out, want, f.nout, 1e-4);
            assert_true(tc_rel_l2(want, base, f.nout) > 1e-3); /* the intervention matters */
            assert_int_equal(sink_ctx_record_count(sk), c.n_layers);
            free(out);
            free(want);
            sink_ctx_free(sk);
            count++;
        }
        assert_true(count >= 1);
        free(base);
        json_decref(list);
        fx_free(&f);
    }
}

/* ---- no-op and thread-count independence ---- */

static void test_noop_and_threads_bit_identical(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        float *plain = fx_run(&f, NULL);
        int codes[2 * MAXB], n = 0;
        for (int i = 0; i < f.m->cfg.num_layers; i++) codes[n++] = ss_site_code(SS_SITE_DOUBLE, i);
        for (int j = 0; j < f.m->cfg.num_single_layers; j++) codes[n++] = ss_site_code(SS_SITE_SINGLE, j);
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_probe(sk, codes, n, TOK_ALL, 5, 1);
        float *probed = fx_run(&f, sk);
        assert_memory_equal(plain, probed, sizeof(float) * f.nout);
        sink_ctx_free(sk);
        sink_condition c;
        json_t *o = json_pack("{s:s, s:[], s:s, s:i, s:s, s:f}", "name", "noop", "sites", "select", "topk", "k", 1,
                              "path", "score", "eta", 0.0);
        assert_int_equal(sink_condition_from_json(&c, o, "noop"), 0);
        json_decref(o);
        sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &c);
        float *noop = fx_run(&f, sk);
        assert_memory_equal(plain, noop, sizeof(float) * f.nout);
        sink_ctx_free(sk);
        const int nt = omp_get_max_threads();
        omp_set_num_threads(1);
        float *one = fx_run(&f, NULL);
        omp_set_num_threads(3);
        float *three = fx_run(&f, NULL);
        omp_set_num_threads(nt);
        assert_memory_equal(plain, one, sizeof(float) * f.nout);
        assert_memory_equal(plain, three, sizeof(float) * f.nout);
        printf("  %-36s bit-identical: probe at every site, empty condition, 1 and 3 threads\n", FIXTURES[k]);
        free(plain);
        free(probed);
        free(noop);
        free(one);
        free(three);
        fx_free(&f);
    }
}

/* ---- damaged folders ---- */

static void expect_load_error(const char *dir, const char *what, const char *must1, const char *must2) {
    flux_model *m = NULL;
    assert_true(flux_load(&m, dir) < 0);
    assert_null(m);
    const char *e = ss_err();
    printf("  %-28s -> %s\n", what, e);
    assert_non_null(strstr(e, must1));
    if (must2) assert_non_null(strstr(e, must2));
    assert_null(strchr(e, '\n'));
}

static void test_damaged_folders(void **state) {
    (void)state;
    const char *src = tc_path("fixtures/flux-tiny-a");
    char *dir = tc_tmpdir();
    char src_abs[4096];
    assert_non_null(realpath(src, src_abs));
    td_write_weights(dir, src_abs, NULL, NULL);
    td_write_config(dir, src_abs, "axes_dims_rope", json_pack("[i,i,i]", 4, 6, 8));
    expect_load_error(dir, "axes_dims_rope sum 18 != 16", "config.json", "axes_dims_rope");
    td_write_config(dir, src_abs, "axes_dims_rope", json_pack("[i,i,i]", 3, 7, 6));
    expect_load_error(dir, "odd axes_dims_rope", "config.json", "axes_dims_rope[0]");
    td_write_config(dir, src_abs, "num_attention_heads", json_integer(1 << 20));
    expect_load_error(dir, "absurd num_attention_heads", "config.json", "num_attention_heads");
    td_write_config(dir, src_abs, "_class_name", json_string("SD3Transformer2DModel"));
    expect_load_error(dir, "wrong _class_name", "config.json", "FluxTransformer2DModel");
    td_write_config(dir, src_abs, "guidance_embeds", json_false());
    /* schnell-style config over dev weights: extra tensors are ignored, so this loads */
    flux_model *m = NULL;
    assert_int_equal(flux_load(&m, dir), 0);
    assert_int_equal(m->cfg.guidance_embeds, 0);
    assert_null(m->g1.w);
    flux_free(m);
    td_write_config(dir, src_abs, "num_single_layers", json_integer(3));
    expect_load_error(dir, "num_single_layers 3 (2 in file)", "single_transformer_blocks.2.norm.linear.weight",
                      "missing");
    td_write_config(dir, src_abs, "joint_attention_dim", json_integer(25));
    expect_load_error(dir, "joint_attention_dim 25 (24)", "context_embedder.weight", "shape");
    td_write_config(dir, src_abs, "guidance_embeds", json_true());
    td_write_weights(dir, src_abs, "single_transformer_blocks.1.attn.norm_k.weight", NULL);
    expect_load_error(dir, "missing norm_k", "single_transformer_blocks.1.attn.norm_k.weight", "missing");
    td_write_weights(dir, src_abs, NULL, "transformer_blocks.0.ff_context.net.2.weight");
    expect_load_error(dir, "wrong-shape ff_context", "diffusion_pytorch_model.safetensors",
                      "transformer_blocks.0.ff_context.net.2.weight");
    tc_rmtree(dir);
    free(dir);
}

/* ---- storage variants: batch 1, BF16/F16 weights, shards, schnell (no guidance embedder) ---- */

/* Each batch element run alone matches the reference's row of the batch. */
static void test_batch1_matches_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        const flux_config *c = &f.m->cfg;
        float *want = tc_load(f.expected, "sample", NULL, NULL, NULL);
        const size_t per = f.nout / f.B;
        float *out = malloc(sizeof(float) * per);
        for (int b = 0; b < f.B; b++) {
            assert_int_equal(flux_forward(f.m, out, f.hs + (size_t)b * f.N * c->in_channels,
                                          f.ctx + (size_t)b * f.S * c->joint_attention_dim,
                                          f.pooled + (size_t)b * c->pooled_projection_dim, f.t + b, f.g ? f.g + b : NULL,
                                          f.img_ids, f.txt_ids, 1, f.N, f.S, NULL),
                             0);
            char what[48];
            snprintf(what, sizeof what, "sample[%d] at batch 1", b);
            check(what, FIXTURES[k], out, want + (size_t)b * per, per, 1e-4);
        }
        free(out);
        free(want);
        fx_free(&f);
    }
}

enum { KEEP, DROP, ZERO };

/* dir = src's weights rewritten: tensors stored as `dtype` (F32 values rounded through `round_to`
 * first when round_to != ST_F32), those matching `match` dropped or zeroed (action), split over
 * `shards` files with an index when shards > 1; config.json with guidance_embeds = `guidance`. */
static void write_variant(const char *dir, const char *src, st_dtype dtype, st_dtype round_to, const char *match,
                          int action, int shards, int guidance) {
    st_set *st;
    assert_int_equal(st_set_open(&st, src), 0);
    st_writer *w[4] = {0};
    json_t *wm = json_object();
    for (int s = 0; s < shards; s++) w[s] = st_writer_new();
    for (int i = 0; i < st_set_count(st); i++) {
        const st_tensor *t = st_set_get(st, i);
        const int hit = match && strstr(t->name, match);
        if (hit && action == DROP) continue;
        float *v = malloc(sizeof(float) * (size_t)t->numel);
        assert_int_equal(st_to_f32(v, t), 0);
        if (hit && action == ZERO) memset(v, 0, sizeof(float) * (size_t)t->numel);
        if (round_to != ST_F32) { /* round through round_to, keep as F32 */
            st_writer *r = st_writer_new();
            assert_int_equal(st_writer_add_f32(r, "x", round_to, t->ndim, t->shape, v), 0);
            const char *tmp = tc_join(dir, "round.safetensors");
            assert_int_equal(st_writer_save(r, tmp), 0);
            st_writer_free(r);
            st_file *rf;
            assert_int_equal(st_open(&rf, tmp), 0);
            assert_int_equal(st_to_f32(v, st_find(rf, "x")), 0);
            st_close(rf);
            unlink(tmp);
        }
        const int s = i % shards;
        assert_int_equal(st_writer_add_f32(w[s], t->name, dtype, t->ndim, t->shape, v), 0);
        char fn[96];
        snprintf(fn, sizeof fn, "diffusion_pytorch_model-%05d-of-%05d.safetensors", s + 1, shards);
        json_object_set_new(wm, t->name, json_string(fn));
        free(v);
    }
    for (int s = 0; s < shards; s++) {
        char fn[96];
        if (shards > 1) snprintf(fn, sizeof fn, "diffusion_pytorch_model-%05d-of-%05d.safetensors", s + 1, shards);
        else snprintf(fn, sizeof fn, "diffusion_pytorch_model.safetensors");
        assert_int_equal(st_writer_save(w[s], tc_join(dir, "%s", fn)), 0);
        st_writer_free(w[s]);
    }
    if (shards > 1) {
        json_t *idx = json_pack("{s:{}, s:o}", "metadata", "weight_map", wm);
        assert_int_equal(json_dump_file(idx, tc_join(dir, "diffusion_pytorch_model.safetensors.index.json"), 0), 0);
        json_decref(idx);
    } else {
        json_decref(wm);
    }
    td_write_config(dir, src, "guidance_embeds", json_boolean(guidance));
    st_set_close(st);
}

static float *run_dir(const char *dir, const fx *f, int with_guidance) {
    flux_model *m;
    if (flux_load(&m, dir) < 0) fail_msg("%s", ss_err());
    float *out = malloc(sizeof(float) * f->nout);
    if (flux_forward(m, out, f->hs, f->ctx, f->pooled, f->t, with_guidance ? f->g : NULL, f->img_ids, f->txt_ids, f->B,
                     f->N, f->S, NULL) < 0)
        fail_msg("%s", ss_err());
    flux_free(m);
    return out;
}

static void test_storage_variants(void **state) {
    (void)state;
    fx f;
    fx_load(&f, "flux-tiny-a");
    char src[4096];
    assert_non_null(realpath(f.dir, src));
    float *ref = tc_load(f.expected, "sample", NULL, NULL, NULL);
    const st_dtype half[2] = {ST_BF16, ST_F16};
    for (int h = 0; h < 2; h++) {
        char *a = tc_tmpdir(), *b = tc_tmpdir();
        write_variant(a, src, half[h], ST_F32, NULL, KEEP, 1, 1);       /* stored BF16 / F16 */
        write_variant(b, src, ST_F32, half[h], NULL, KEEP, 3, 1);       /* the same values as F32, 3 shards */
        float *oa = run_dir(a, &f, 1), *ob = run_dir(b, &f, 1);
        assert_memory_equal(oa, ob, sizeof(float) * f.nout);
        const double e = tc_rel_l2(oa, ref, f.nout);
        printf("  %s weights == their F32 values in 3 shards, bit for bit; vs the F32 reference %.2e\n",
               st_dtype_name(half[h]), e);
        assert_true(e > 0 && e < 0.05); /* rounding the weights moves the output, but not far */
        free(oa);
        free(ob);
        tc_rmtree(a);
        tc_rmtree(b);
        free(a);
        free(b);
    }
    /* schnell-style: no guidance embedder tensors == dev with a zero guidance embedding */
    char *a = tc_tmpdir(), *b = tc_tmpdir();
    write_variant(a, src, ST_BF16, ST_F32, "guidance_embedder", DROP, 2, 0);
    write_variant(b, src, ST_BF16, ST_F32, "guidance_embedder.linear_2", ZERO, 1, 1);
    float *oa = run_dir(a, &f, 0), *ob = run_dir(b, &f, 1);
    assert_memory_equal(oa, ob, sizeof(float) * f.nout);
    const double e = tc_rel_l2(oa, ref, f.nout);
    printf("  schnell-style (no guidance tensors, BF16, 2 shards) == dev with zero guidance embedding; vs dev %.2e\n", e);
    assert_true(e > 1e-3); /* the guidance embedding matters in the reference */
    /* a dev config over schnell weights names the missing tensor */
    td_write_config(a, src, "guidance_embeds", json_true());
    expect_load_error(a, "dev config, schnell weights", "time_text_embed.guidance_embedder.linear_1.weight", "missing");
    free(oa);
    free(ob);
    tc_rmtree(a);
    tc_rmtree(b);
    free(a);
    free(b);
    free(ref);
    fx_free(&f);
}

/* ---- activation statistics: text and image rows of the single-stream output kept apart ---- */

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* max and numpy-'linear' 95th percentile of the L2 norms of rows [lo, hi) of x [rows, D] */
static void row_norm_stats(const float *x, int lo, int hi, int D, double *mx, double *p95) {
    const int n = hi - lo;
    float *v = malloc(sizeof(float) * n);
    *mx = 0;
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[(size_t)(lo + i) * D + d] * x[(size_t)(lo + i) * D + d];
        v[i] = (float)sqrt(ss);
        *mx = v[i] > *mx ? v[i] : *mx;
    }
    qsort(v, n, sizeof(float), cmp_float);
    const double pos = 0.95 * (n - 1);
    const int a = (int)floor(pos), b = a + 1 < n ? a + 1 : a;
    *p95 = v[a] + (pos - a) * (v[b] - v[a]);
    free(v);
}

typedef struct {
    sink_ctx *sk;
    sd3_hooks inner;
    int S, N;
    double img[MAXB][MAXB][2], txt[MAXB][MAXB][2]; /* [single block][batch] {max, p95} */
    double dbl[MAXB][MAXB][2];
} stats_cap;

static int stats_double(void *ctx, int block, const float *x, int B, int N, int D) {
    stats_cap *c = ctx;
    for (int b = 0; b < B; b++) row_norm_stats(x + (size_t)b * N * D, 0, N, D, &c->dbl[block][b][0], &c->dbl[block][b][1]);
    return c->inner.block_output(c->inner.ctx, block, x, B, N, D);
}

static int stats_single(void *ctx, int block, const float *x, int B, int T, int D) {
    stats_cap *c = ctx;
    assert_int_equal(T, c->S + c->N);
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * T * D;
        row_norm_stats(xb, 0, c->S, D, &c->txt[block][b][0], &c->txt[block][b][1]);
        row_norm_stats(xb, c->S, T, D, &c->img[block][b][0], &c->img[block][b][1]);
    }
    return c->inner.block_output(c->inner.ctx, block, x, B, T, D);
}

static int stats_attention(void *ctx, const ss_site *site, const attn_args *a) {
    stats_cap *c = ctx;
    return c->inner.attention(c->inner.ctx, site, a);
}

static void near(double got, double want, const char *what) {
    if (!(fabs(got - want) <= 1e-6 * fabs(want))) fail_msg("%s: %.9g, expected %.9g", what, got, want);
}

static void test_single_stats_text_vs_image_rows(void **state) {
    (void)state;
    for (size_t k = 0; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        const int L = f.m->cfg.num_layers, Ls = f.m->cfg.num_single_layers;
        int codes[2 * MAXB], n = 0;
        for (int i = 0; i < L; i++) codes[n++] = ss_site_code(SS_SITE_DOUBLE, i);
        for (int j = 0; j < Ls; j++) codes[n++] = ss_site_code(SS_SITE_SINGLE, j);
        stats_cap *c = calloc(1, sizeof *c);
        c->sk = sink_ctx_new();
        assert_int_equal(sink_ctx_set_probe(c->sk, codes, n, TOK_IMAGE, 3, 0), 0);
        c->inner = sink_ctx_hooks(c->sk);
        c->S = f.S;
        c->N = f.N;
        flux_hooks hk = {.ctx = c, .attention = stats_attention, .block_output = stats_double, .single_output = stats_single};
        float *out = fx_run_hooks(&f, &hk);
        assert_int_equal(sink_ctx_record_count(c->sk), n);
        double max_gap = 0;
        for (int r = 0; r < n; r++) {
            const sink_record *rec = sink_ctx_record(c->sk, r);
            const int single = ss_site_code_kind(rec->site) == SS_SITE_SINGLE, blk = ss_site_code_block(rec->site);
            sink_probe_entry pe;
            assert_int_equal(sink_probe_entry_from_record(&pe, rec, 0, 1, NULL), 0);
            json_t *o = sink_probe_entry_write_json(&pe);
            sink_probe_entry_free(&pe);
            assert_int_equal(single, json_object_get(o, "act_text_max") != NULL);
            assert_int_equal(single, json_object_get(o, "act_text_p95") != NULL);
            json_decref(o);
            for (int b = 0; b < f.B; b++) {
                char what[96];
                snprintf(what, sizeof what, "%s %s.%d batch %d", FIXTURES[k], single ? "single" : "double", blk, b);
                if (!single) { /* the image stream, as before */
                    assert_null(rec->act_text_max);
                    near(rec->act_max[b], c->dbl[blk][b][0], what);
                    near(rec->act_p95[b], c->dbl[blk][b][1], what);
                    continue;
                }
                assert_non_null(rec->act_text_max);
                near(rec->act_max[b], c->img[blk][b][0], what);
                near(rec->act_p95[b], c->img[blk][b][1], what);
                near(rec->act_text_max[b], c->txt[blk][b][0], what);
                near(rec->act_text_p95[b], c->txt[blk][b][1], what);
                const double gap = fabs(rec->act_p95[b] - rec->act_text_p95[b]) / rec->act_p95[b];
                max_gap = gap > max_gap ? gap : max_gap;
            }
        }
        printf("  %-36s single.j act stats: image rows [S, S+N), text rows [0, S); largest image/text p95 gap %.1f%%\n",
               FIXTURES[k], 100 * max_gap);
        assert_true(max_gap > 1e-3); /* the two row sets really differ here, so mixing them up would show */
        free(out);
        sink_ctx_free(c->sk);
        free(c);
        fx_free(&f);
    }
}

/* SD3's records are unchanged: no text-row fields, act_* over the image stream of the block */
static void test_sd3_stats_unchanged(void **state) {
    (void)state;
    tc_sd3fx f;
    if (tc_sd3fx_load(&f, "sd3-tiny-a") < 0) fail_msg("%s", ss_err());
    sink_ctx *sk = sink_ctx_new();
    const int blocks[] = {0, 1, 2};
    assert_int_equal(sink_ctx_set_probe(sk, blocks, 3, TOK_IMAGE, 5, 0), 0);
    sd3_hooks hk = sink_ctx_hooks(sk);
    float *out = malloc(sizeof(float) * f.nout);
    if (sd3_forward(f.m, out, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, &hk) < 0) fail_msg("%s", ss_err());
    for (int r = 0; r < sink_ctx_record_count(sk); r++) {
        const sink_record *rec = sink_ctx_record(sk, r);
        char name[32];
        snprintf(name, sizeof name, "block.%d", rec->block);
        size_t nb;
        float *x = tc_load(f.expected, name, &nb, NULL, NULL);
        assert_non_null(x);
        const int D = (int)(nb / ((size_t)f.B * f.N));
        for (int b = 0; b < f.B; b++) {
            double mx, p95;
            row_norm_stats(x + (size_t)b * f.N * D, 0, f.N, D, &mx, &p95);
            assert_true(fabs(rec->act_max[b] - mx) <= 1e-4 * mx); /* vs diffusers' block output */
            assert_true(fabs(rec->act_p95[b] - p95) <= 1e-4 * p95);
        }
        assert_null(rec->act_text_max);
        sink_probe_entry pe;
        assert_int_equal(sink_probe_entry_from_record(&pe, rec, 0, 1, NULL), 0);
        json_t *o = sink_probe_entry_write_json(&pe);
        sink_probe_entry_free(&pe);
        assert_null(json_object_get(o, "act_text_max"));
        json_decref(o);
        free(x);
    }
    printf("  sd3-tiny-a: act_max/act_p95 = the image stream's, no text-row fields\n");
    free(out);
    sink_ctx_free(sk);
    tc_sd3fx_free(&f);
}

/* ---- memory: a BF16 checkpoint loads at about its fp32 size ---- */

static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    const size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) v = atol(line + n);
    if (f) fclose(f);
    return v;
}

static void count_floats(void *ctx, const char *name, int ndim, const int64_t *shape) {
    double n = 1;
    for (int i = 0; i < ndim; i++) n *= (double)shape[i];
    *(double *)ctx += n;
    (void)name;
}

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static void test_bf16_load_memory(void **state) {
    (void)state;
    /* FLUX.1's head layout (128 = 16 + 56 + 56) at D = 512, 1 double + 1 single block: ~13M weights */
    const flux_config c = {.patch_size = 1, .in_channels = 64, .out_channels = 64, .num_layers = 1, .num_single_layers = 1,
                           .head_dim = 128, .num_heads = 4, .joint_attention_dim = 256, .pooled_projection_dim = 96,
                           .guidance_embeds = 1, .n_axes = 3, .axes_dims = {16, 56, 56}};
    char *dir = tc_tmpdir();
    if (flux_init_random(&c, dir, 5, ST_BF16) < 0) fail_msg("%s", ss_err());
    double nf = 0;
    assert_int_equal(flux_enumerate_tensors(&c, count_floats, &nf), 0);
    const double fp32_mib = nf * 4 / 1048576.0;
    FILE *f = fopen("/proc/self/clear_refs", "w"); /* "5": reset the peak resident size to the current one */
    if (!f || fputs("5", f) < 0 || fclose(f)) {
        if (f) fclose(f);
        printf("  /proc/self/clear_refs not writable: peak RSS not measurable here\n");
        tc_rmtree(dir);
        free(dir);
        skip();
    }
    const long rss0 = status_kib("VmRSS:");
    flux_model *m;
    if (flux_load(&m, dir) < 0) fail_msg("%s", ss_err());
    const double peak_mib = (status_kib("VmHWM:") - rss0) / 1024.0, held_mib = (status_kib("VmRSS:") - rss0) / 1024.0;
    /* every weight is in the fp32 arena: the file's pages were dropped */
    assert_non_null(m->arena);
    const double bound = SANITIZED ? 1.25 : 1.1; /* ASan's shadow memory adds 1/8 to every allocation */
    printf("  BF16 FLUX checkpoint (%.0fM weights, %.1f MiB in fp32): load peak +%.1f MiB (%.3fx), held +%.1f MiB%s\n",
           nf / 1e6, fp32_mib, peak_mib, peak_mib / fp32_mib, held_mib, SANITIZED ? " (ASan build)" : "");
    assert_true(peak_mib <= bound * fp32_mib);
    assert_true(held_mib >= 0.9 * fp32_mib); /* the measurement sees the weights at all */
    flux_free(m);
    tc_rmtree(dir);
    free(dir);
}

/* ---- sinkscope forward on a FLUX folder ---- */

static void test_cli_forward(void **state) {
    (void)state;
    char *dir = tc_tmpdir();
    const char *fxd = tc_path("fixtures/flux-tiny-a");
    char buf[16384];
    const char *out = tc_join(dir, "out.safetensors");
    int rc = tc_run(buf, sizeof buf,
                    "%s forward --model %s --inputs %s/inputs.safetensors --out %s --dump-blocks --dump-rope-qk "
                    "--probe double.0,double.1,single.0,single.1 --threads 1",
                    tc_bin(), fxd, fxd, out);
    if (rc) fail_msg("forward failed (%d): %s", rc, buf);
    const char *exp = tc_path("fixtures/flux-tiny-a/expected.safetensors");
    static const char *const NAMES[] = {"sample", "block.0", "block.1", "single.0", "single.1",
                                        "mass.0", "mass.1", "single_mass.0", "single_mass.1",
                                        "qk_pre.0", "qk_post.0", "qk_pre.1", "qk_post.1",
                                        "single_qk_pre.0", "single_qk_post.0", "single_qk_pre.1", "single_qk_post.1"};
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        size_t n, nw;
        int64_t sh[4], shw[4];
        int nd, ndw;
        float *got = tc_load(out, NAMES[i], &n, sh, &nd), *want = tc_load(exp, NAMES[i], &nw, shw, &ndw);
        if (!got) fail_msg("forward output lacks %s", NAMES[i]);
        assert_int_equal(nd, ndw);
        for (int d = 0; d < nd; d++) assert_int_equal(sh[d], shw[d]);
        char what[64];
        snprintf(what, sizeof what, "forward CLI %s", NAMES[i]);
        check(what, "flux-tiny-a", got, want, n, strstr(NAMES[i], "mass") ? 1e-5 : 1e-4);
        free(got);
        free(want);
    }
    assert_non_null(strstr(buf, "single.1 batch 1:"));
    /* conditions through 'sites' and through 'layers' (FLUX: double blocks) */
    const char *cond = tc_join(dir, "c.json");
    assert_int_equal(tc_write_text(cond, "{\"name\": \"s1\", \"sites\": [\"single.1\"], \"select\": \"topk\", \"k\": 1,"
                                         " \"rank_by\": \"head\", \"keys\": \"all\", \"queries\": \"image\", \"path\": \"score\", \"eta\": 0}"),
                     0);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s --threads 1",
                tc_bin(), fxd, fxd, out, cond);
    if (rc) fail_msg("forward --condition failed (%d): %s", rc, buf);
    float *got = tc_load(out, "sample", NULL, NULL, NULL), *want = tc_load(exp, "sample.single_top1_hard", NULL, NULL, NULL);
    check("forward CLI sample.single_top1_hard", "flux-tiny-a", got, want, (size_t)2 * 16 * 16, 1e-4);
    free(got);
    free(want);
    assert_int_equal(tc_write_text(cond, "{\"name\": \"j1\", \"layers\": [1], \"select\": \"topk\", \"k\": 1, \"path\": \"score\", \"eta\": 0}"), 0);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s --threads 1",
                tc_bin(), fxd, fxd, out, cond);
    if (rc) fail_msg("forward --condition (layers) failed (%d): %s", rc, buf);
    assert_non_null(strstr(buf, "double.1 batch 0: intervention"));
    got = tc_load(out, "sample", NULL, NULL, NULL);
    want = tc_load(exp, "sample.topk1_hard", NULL, NULL, NULL);
    check("forward CLI sample.topk1_hard", "flux-tiny-a", got, want, (size_t)2 * 16 * 16, 1e-4);
    free(got);
    free(want);
    /* a block the model lacks */
    assert_int_equal(tc_write_text(cond, "{\"name\": \"j5\", \"layers\": [5], \"single_layers\": [0], \"path\": \"score\", \"eta\": 0}"), 0);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s --threads 1",
                tc_bin(), fxd, fxd, out, cond);
    printf("  layers [5] on FLUX -> %s", buf);
    assert_true(rc != 0);
    assert_non_null(strstr(buf, "double.5"));
    /* --dump-rope-qk on a model without RoPE */
    const char *sd3 = tc_path("fixtures/sd3-tiny-a");
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --dump-rope-qk --threads 1",
                tc_bin(), sd3, sd3, out);
    assert_true(rc != 0);
    assert_non_null(strstr(buf, "no RoPE"));
    /* missing img_ids: one line naming the file and the tensor */
    st_file *f;
    assert_int_equal(st_open(&f, tc_join(fxd, "inputs.safetensors")), 0);
    st_writer *w = st_writer_new();
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        if (strcmp(t->name, "img_ids")) assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
    }
    const char *bad = tc_join(dir, "bad.safetensors");
    assert_int_equal(st_writer_save(w, bad), 0);
    st_writer_free(w);
    st_close(f);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --threads 1", tc_bin(), fxd, bad, out);
    printf("  no img_ids -> %s", buf);
    assert_true(rc != 0);
    assert_non_null(strstr(buf, "bad.safetensors"));
    assert_non_null(strstr(buf, "'img_ids'"));
    tc_rmtree(dir);
    free(dir);
}

/* sinkscope forward on each of our own variants: every expected tensor but the interventions'
 * samples (sharded BF16, schnell without a guidance input, batch 1, out_channels != in_channels). */
static void test_cli_forward_variants(void **state) {
    (void)state;
    char *dir = tc_tmpdir();
    char out[4200]; /* its own copy: tc_path's buffers rotate */
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    static char buf[16384];
    for (size_t k = 1; k < NFIX; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        char probe[1024] = "";
        size_t len = 0;
        for (int i = 0; i < f.m->cfg.num_layers; i++)
            len += (size_t)snprintf(probe + len, sizeof probe - len, "%sdouble.%d", len ? "," : "", i);
        for (int j = 0; j < f.m->cfg.num_single_layers; j++)
            len += (size_t)snprintf(probe + len, sizeof probe - len, "%ssingle.%d", len ? "," : "", j);
        char fxd[1024], expected[1024];
        snprintf(fxd, sizeof fxd, "%s", f.dir);
        snprintf(expected, sizeof expected, "%s", f.expected);
        const int rc = tc_run(buf, sizeof buf,
                              "%s forward --model %s --inputs %s/inputs.safetensors --out %s --dump-blocks --dump-rope-qk "
                              "--probe %s --threads 1",
                              tc_bin(), fxd, fxd, out, probe);
        if (rc) fail_msg("%s: forward failed (%d): %s", FIXTURES[k], rc, buf);
        st_file *e;
        assert_int_equal(st_open(&e, expected), 0);
        int compared = 0;
        for (int i = 0; i < st_count(e); i++) {
            const char *name = st_get(e, i)->name;
            if (!strncmp(name, "sample.", 7)) continue;
            size_t n, nw;
            float *got = tc_load(out, name, &n, NULL, NULL), *want = tc_load(expected, name, &nw, NULL, NULL);
            if (!got) fail_msg("%s: forward output lacks %s", FIXTURES[k], name);
            assert_int_equal(n, nw);
            char what[64];
            snprintf(what, sizeof what, "forward CLI %s", name);
            check(what, FIXTURES[k], got, want, n, strstr(name, "mass") ? 1e-5 : 1e-4);
            free(got);
            free(want);
            compared++;
        }
        assert_int_equal(compared, 1 + 4 * f.m->cfg.num_layers + 4 * f.m->cfg.num_single_layers); /* sample, block/single, mass, qk_pre, qk_post */
        st_close(e);
        fx_free(&f);
    }
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    find_fixtures();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_diffusers),
        cmocka_unit_test(test_probe_mass_matches_diffusers),
        cmocka_unit_test(test_rope_qk_matches_diffusers),
        cmocka_unit_test(test_interventions_match_diffusers),
        cmocka_unit_test(test_noop_and_threads_bit_identical),
        cmocka_unit_test(test_damaged_folders),
        cmocka_unit_test(test_batch1_matches_diffusers),
        cmocka_unit_test(test_storage_variants),
        cmocka_unit_test(test_single_stats_text_vs_image_rows),
        cmocka_unit_test(test_sd3_stats_unchanged),
        cmocka_unit_test(test_bf16_load_memory),
        cmocka_unit_test(test_cli_forward),
        cmocka_unit_test(test_cli_forward_variants),
    };
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (size_t i = 0; i < NFIX; i++) free(FIXTURES[i]);
    return rc;
}
