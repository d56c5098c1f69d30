/* The SD3 engine against diffusers' own outputs (tests/fixtures): every block, the sample, the
 * attention mass, every intervention; and the no-op guarantees (bit-identical outputs). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "common.h"
#include "core/err.h"
#include "models/sd3.h"
#include "sink/sink.h"

static const char *const FIXTURES[] = {"sd3-tiny-a", "sd3-tiny-a-bf16", "sd35-tiny-b"};

typedef tc_sd3fx fx;

static void fx_load(fx *f, const char *name) {
    if (tc_sd3fx_load(f, name) < 0) fail_msg("%s", ss_err());
}

static void fx_free(fx *f) { tc_sd3fx_free(f); }

static float *fx_run(fx *f, sink_ctx *sk) {
    float *out = malloc(sizeof(float) * f->nout);
    sd3_hooks hk;
    if (sk) hk = sink_ctx_hooks(sk);
    if (sd3_forward(f->m, out, f->x, f->ctx, f->pooled, f->t, f->B, f->Hl, f->Wl, f->S, sk ? &hk : NULL) < 0)
        fail_msg("%s", ss_err());
    return out;
}

/* block outputs captured by a hook */
typedef struct {
    float *blocks[16];
} capture;
static int cap_block(void *ctx, int block, const float *x, int B, int N, int D) {
    capture *c = ctx;
    c->blocks[block] = malloc(sizeof(float) * B * N * D);
    memcpy(c->blocks[block], x, sizeof(float) * B * N * D);
    return 0;
}

static void check(const char *what, const char *fixture, const float *got, const float *want, size_t n, double tol) {
    assert_non_null(want);
    double e = tc_rel_l2(got, want, n);
    printf("  %-16s %-28s rel L2 %.3e (tolerance %.0e)\n", fixture, what, e, tol);
    assert_true(e <= tol);
}

static void test_forward_matches_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        capture cap = {0};
        sd3_hooks hk = {.ctx = &cap, .block_output = cap_block};
        float *out = malloc(sizeof(float) * f.nout);
        assert_int_equal(sd3_forward(f.m, out, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, &hk), 0);
        float *want = tc_load(f.expected, "sample", NULL, NULL, NULL);
        check("sample", FIXTURES[k], out, want, f.nout, 1e-4);
        free(want);
        for (int i = 0; i < f.m->cfg.num_layers; i++) {
            char name[32];
            snprintf(name, sizeof name, "block.%d", i);
            float *wb = tc_load(f.expected, name, NULL, NULL, NULL);
            check(name, FIXTURES[k], cap.blocks[i], wb, (size_t)f.B * f.N * f.m->D, 1e-4);
            free(wb);
            free(cap.blocks[i]);
        }
        free(out);
        fx_free(&f);
    }
}

/* The caller's workspace: reused across calls bit for bit, allocated once, and its key-chunk size
 * (the online-softmax path over several chunks) reaches every attention site, hooks included. */
static int seen_chunk(void *ctx, const ss_site *site, const attn_args *a) {
    (void)site;
    int *kc = ctx;
    if (a->key_chunk != *kc) fail_msg("attention site got key_chunk %d, want %d", a->key_chunk, *kc);
    return attn_forward(a, NULL);
}

static void test_workspace_and_key_chunk(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        float *ref = fx_run(&f, NULL), *out = malloc(sizeof(float) * f.nout);
        sd3_workspace *ws;
        assert_int_equal(sd3_workspace_new(&ws, f.m, f.B, f.Hl, f.Wl, f.S), 0);
        for (int rep = 0; rep < 3; rep++) {
            assert_int_equal(sd3_forward_ws(f.m, ws, out, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, NULL), 0);
            assert_memory_equal(out, ref, sizeof(float) * f.nout);
        }
        assert_int_equal(sd3_workspace_allocs(ws), 1);
        int kc = 7; /* N + S tokens span several chunks */
        assert_true(f.N + f.S > 2 * kc);
        sd3_workspace_set_key_chunk(ws, kc);
        sd3_hooks hk = {.ctx = &kc, .attention = seen_chunk};
        assert_int_equal(sd3_forward_ws(f.m, ws, out, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, &hk), 0);
        float *want = tc_load(f.expected, "sample", NULL, NULL, NULL);
        check("sample (key chunk 7)", FIXTURES[k], out, want, f.nout, 1e-4);
        /* the default chunk again: the same bits as sd3_forward */
        sd3_workspace_set_key_chunk(ws, 0);
        kc = 0;
        assert_int_equal(sd3_forward_ws(f.m, ws, out, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, &hk), 0);
        assert_memory_equal(out, ref, sizeof(float) * f.nout);
        assert_int_equal(sd3_workspace_allocs(ws), 1);
        sd3_workspace_free(ws);
        free(want);
        free(out);
        free(ref);
        fx_free(&f);
    }
}

/* Two threads at once, each with its own workspace and key chunk: no shared state between them,
 * each gives the bits it gives alone. */
static void test_workspaces_in_parallel(void **state) {
    (void)state;
    fx f;
    fx_load(&f, FIXTURES[2]);
    const int kcs[2] = {0, 5};
    float *alone[2], *par[2];
    sd3_workspace *ws[2];
    for (int i = 0; i < 2; i++) {
        alone[i] = malloc(sizeof(float) * f.nout);
        par[i] = malloc(sizeof(float) * f.nout);
        assert_int_equal(sd3_workspace_new(&ws[i], f.m, f.B, f.Hl, f.Wl, f.S), 0);
        sd3_workspace_set_key_chunk(ws[i], kcs[i]);
        assert_int_equal(sd3_forward_ws(f.m, ws[i], alone[i], f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, NULL), 0);
    }
    assert_memory_not_equal(alone[0], alone[1], sizeof(float) * f.nout); /* the chunk size really differs */
    int rc[2] = {-1, -1};
#pragma omp parallel for num_threads(2) schedule(static, 1)
    for (int i = 0; i < 2; i++)
        rc[i] = sd3_forward_ws(f.m, ws[i], par[i], f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rc[i], 0);
        assert_memory_equal(par[i], alone[i], sizeof(float) * f.nout);
        sd3_workspace_free(ws[i]);
        free(alone[i]);
        free(par[i]);
    }
    fx_free(&f);
}

static void test_probe_mass_matches_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        sink_ctx *sk = sink_ctx_new();
        int blocks[16];
        for (int i = 0; i < f.m->cfg.num_layers; i++) blocks[i] = i;
        assert_int_equal(sink_ctx_set_probe(sk, blocks, f.m->cfg.num_layers, TOK_IMAGE, 3, 1), 0);
        float *out = fx_run(&f, sk);
        assert_int_equal(sink_ctx_record_count(sk), f.m->cfg.num_layers);
        for (int i = 0; i < sink_ctx_record_count(sk); i++) {
            const sink_record *r = sink_ctx_record(sk, i);
            char name[32];
            snprintf(name, sizeof name, "mass.%d", r->block);
            size_t n;
            float *want = tc_load(f.expected, name, &n, NULL, NULL);
            assert_int_equal(n, (size_t)r->B * r->H * r->T);
            check(name, FIXTURES[k], r->mass, want, n, 1e-5);
            /* MaxMass is the head mean of each head's largest mass */
            for (int b = 0; b < r->B; b++) {
                double mm = 0;
                for (int h = 0; h < r->H; h++) {
                    float mx = 0;
                    for (int j = 0; j < r->T; j++) mx = want[((size_t)b * r->H + h) * r->T + j] > mx ? want[((size_t)b * r->H + h) * r->T + j] : mx;
                    mm += mx;
                }
                assert_true(fabs(mm / r->H - r->max_mass[b]) < 1e-5);
            }
            free(want);
        }
        free(out);
        sink_ctx_free(sk);
        fx_free(&f);
    }
}

static void test_interventions_match_diffusers(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
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
            sink_ctx *sk = sink_ctx_new();
            sink_ctx_set_condition(sk, &c);
            float *out = fx_run(&f, sk);
            char name[160];
            snprintf(name, sizeof name, "sample.%s", c.name);
            float *want = tc_load(f.expected, name, NULL, NULL, NULL);
            check(name, FIXTURES[k], out, want, f.nout, 1e-4);
            /* the intervention must matter: the reference differs from the baseline */
            assert_true(tc_rel_l2(want, base, f.nout) > 1e-3);
            /* verification record at every intervened block */
            int nrec = 0;
            for (int r = 0; r < sink_ctx_record_count(sk); r++) {
                const sink_record *rec = sink_ctx_record(sk, r);
                assert_true(rec->intervened);
                assert_true(sink_condition_has_layer(&c, rec->block));
                if (!c.value_path)
                    for (int bh = 0; bh < rec->B * rec->H; bh++)
                    {
                        /* per row: after = eta b / (1 - (1-eta) b), so eta b <= after <= b */
                        assert_true(rec->before[bh] > 0);
                        assert_true(rec->after[bh] <= rec->before[bh] * (1 + 1e-6));
                        assert_true(rec->after[bh] >= c.eta * rec->before[bh] * (1 - 1e-6));
                        if (c.eta == 0) assert_true(rec->after[bh] == 0);
                    }
                nrec++;
            }
            assert_int_equal(nrec, c.n_layers);
            free(out);
            free(want);
            sink_ctx_free(sk);
            count++;
        }
        assert_true(count >= 9);
        free(base);
        json_decref(list);
        fx_free(&f);
    }
}

static void test_noop_is_bit_identical(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        float *plain = fx_run(&f, NULL);
        /* probe attached at every block, no intervention */
        sink_ctx *sk = sink_ctx_new();
        int blocks[16];
        for (int i = 0; i < f.m->cfg.num_layers; i++) blocks[i] = i;
        sink_ctx_set_probe(sk, blocks, f.m->cfg.num_layers, TOK_ALL, 5, 1);
        float *probed = fx_run(&f, sk);
        assert_memory_equal(plain, probed, sizeof(float) * f.nout);
        sink_ctx_free(sk);
        /* a condition with no layers */
        sink_condition c;
        json_t *o = json_pack("{s:s, s:[], s:s, s:i, s:s, s:f}", "name", "noop", "layers", "select", "topk", "k", 1,
                              "path", "score", "eta", 0.0);
        assert_int_equal(sink_condition_from_json(&c, o, "noop"), 0);
        json_decref(o);
        sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &c);
        sink_ctx_set_probe(sk, blocks, f.m->cfg.num_layers, TOK_IMAGE, 5, 0);
        float *noop = fx_run(&f, sk);
        assert_memory_equal(plain, noop, sizeof(float) * f.nout);
        /* eta = 1 re-weights by exactly one; it may round differently, but only at fp32 level */
        printf("  %-16s no-op outputs bit-identical (probe at all blocks; empty layers)\n", FIXTURES[k]);
        sink_ctx_free(sk);
        free(plain);
        free(probed);
        free(noop);
        fx_free(&f);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_diffusers),
        cmocka_unit_test(test_workspace_and_key_chunk),
        cmocka_unit_test(test_workspaces_in_parallel),
        cmocka_unit_test(test_probe_mass_matches_diffusers),
        cmocka_unit_test(test_interventions_match_diffusers),
        cmocka_unit_test(test_noop_is_bit_identical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
