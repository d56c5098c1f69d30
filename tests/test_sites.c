/* Attention sites: SD3.5's attn2 probed and intervened on against a materialized fp64 reference,
 * the kernel with Tq != Tk, several query spans and a key mask against the reference, site names
 * in probes and conditions, and thread-count independence at every site. */
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

#include "common.h"
#include "nn/attn.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/sd3.h"
#include "models/site.h"
#include "sink/sink.h"

static double max_rel(const float *x, const float *y, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)x[i] - y[i]));
        den = fmax(den, fabs((double)y[i]));
    }
    return num / (den > 0 ? den : 1);
}

/* ---- the kernel: Tq != Tk, query spans, key mask ---- */

typedef struct {
    attn_args a;
    float *q, *k, *v, *out;
    uint8_t *kv;
} xproblem;

/* T query rows in the given spans, Tk keys; keys j with (j * 7 + b) % 5 == 0 masked when mask. */
static void xproblem_new(xproblem *p, int B, int H, int dh, int T, int Tk, int nspan, const int *qend, int mask, uint64_t seed) {
    const int ld = H * dh;
    p->q = malloc(sizeof(float) * B * T * ld);
    p->out = malloc(sizeof(float) * B * T * ld);
    p->k = malloc(sizeof(float) * B * Tk * ld);
    p->v = malloc(sizeof(float) * B * Tk * ld);
    tc_fill(p->q, (size_t)B * T * ld, seed, 1.0f);
    tc_fill(p->k, (size_t)B * Tk * ld, seed + 1, 1.0f);
    tc_fill(p->v, (size_t)B * Tk * ld, seed + 2, 1.0f);
    /* a few peaked keys, including masked ones with the largest logits (they must still get 0) */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < Tk; j += 9)
            for (int c = 0; c < ld; c++) p->k[((size_t)b * Tk + j) * ld + c] += (c % 2 ? 0.5f : -0.5f);
    for (size_t i = 0; i < (size_t)B * T * ld; i++) p->q[i] += (i % 2 ? 0.4f : -0.4f);
    p->kv = NULL;
    if (mask) {
        p->kv = malloc((size_t)B * Tk);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < Tk; j++) p->kv[(size_t)b * Tk + j] = (j * 7 + b) % 5 != 0;
    }
    attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = ld, .q = p->q, .k = p->k, .v = p->v, .out = p->out,
                   .Tk = Tk, .key_valid = p->kv, .n_qspan = nspan};
    for (int g = 0; g < nspan; g++) a.qend[g] = qend[g];
    p->a = a;
}

static void xproblem_free(xproblem *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->out);
    free(p->kv);
}

/* stats buffers: nspan mass vectors [B,H,Tk], 4 row arrays [B,H,T] */
static float *stats_new(attn_stats *st, const attn_args *a) {
    const size_t nk = (size_t)a->B * a->H * (a->Tk ? a->Tk : a->T), nq = (size_t)a->B * a->H * a->T;
    float *buf = calloc(nk * a->n_qspan + nq * 4, sizeof(float));
    memset(st, 0, sizeof *st);
    for (int g = 0; g < a->n_qspan; g++) st->mass[g] = buf + (size_t)g * nk;
    float *r = buf + (size_t)a->n_qspan * nk;
    st->row_m = r;
    st->row_l = r + nq;
    st->row_entropy = r + 2 * nq;
    st->row_top5 = r + 3 * nq;
    return buf;
}

static void test_kernel_tq_tk_mask_vs_reference(void **state) {
    (void)state;
    const struct {
        int T, Tk, nspan, qend[3];
    } cases[] = {{5, 33, 1, {5}}, {40, 17, 2, {30, 40}}, {70, 129, 3, {10, 64, 70}}, {64, 64, 2, {0, 64}}, {3, 200, 2, {1, 3}}};
    const int chunks[] = {ATTN_KC, 16, 50};
    double worst[5] = {0};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int mask = 0; mask < 2; mask++)
            for (size_t ki = 0; ki < 3; ki++) {
                const int B = 2, H = 3, dh = 8, T = cases[ci].T, Tk = cases[ci].Tk;
                xproblem p;
                xproblem_new(&p, B, H, dh, T, Tk, cases[ci].nspan, cases[ci].qend, mask, 40 + ci);
                p.a.key_chunk = chunks[ki]; /* per call: the online-softmax path below ATTN_KC */
                attn_stats s1, s2;
                float *b1 = stats_new(&s1, &p.a), *b2 = stats_new(&s2, &p.a);
                float *ref = malloc(sizeof(float) * B * T * H * dh);
                assert_int_equal(attn_forward(&p.a, &s1), 0);
                attn_args ar = p.a;
                ar.out = ref;
                assert_int_equal(attn_reference(&ar, &s2), 0);
                const size_t no = (size_t)B * T * H * dh, nq = (size_t)B * H * T, nk = (size_t)B * H * Tk;
                double e[5] = {max_rel(p.out, ref, no), 0, max_rel(s1.row_entropy, s2.row_entropy, nq),
                               max_rel(s1.row_top5, s2.row_top5, nq), 0};
                for (int g = 0; g < p.a.n_qspan; g++) {
                    e[1] = fmax(e[1], max_rel(s1.mass[g], s2.mass[g], nk));
                    const int rows = p.a.qend[g] - (g ? p.a.qend[g - 1] : 0);
                    for (int b = 0; b < B; b++)
                        for (int h = 0; h < H; h++) {
                            double sum = 0;
                            for (int j = 0; j < Tk; j++) {
                                const float m = s1.mass[g][((size_t)b * H + h) * Tk + j];
                                if (mask && !p.kv[(size_t)b * Tk + j]) {
                                    assert_true(m == 0.0f); /* masked keys: exactly no mass */
                                    assert_true(s2.mass[g][((size_t)b * H + h) * Tk + j] == 0.0f);
                                }
                                sum += m;
                            }
                            if (rows) e[4] = fmax(e[4], fabs(sum - 1));
                            else assert_true(sum == 0);
                        }
                }
                for (int i = 0; i < 5; i++) worst[i] = fmax(worst[i], e[i]);
                if (!(e[0] < 1e-5 && e[1] < 5e-6 && e[2] < 2e-5 && e[3] < 1e-5 && e[4] < 1e-5))
                    printf("case %zu mask %d kc %d: %.2e %.2e %.2e %.2e %.2e\n", ci, mask, chunks[ki], e[0], e[1], e[2], e[3], e[4]);
                assert_true(e[0] < 1e-5 && e[1] < 5e-6 && e[2] < 2e-5 && e[3] < 1e-5 && e[4] < 1e-5);
                /* the plain call gives the very same output bits */
                float *plain = malloc(sizeof(float) * no);
                attn_args ap = p.a;
                ap.out = plain;
                assert_int_equal(attn_forward(&ap, NULL), 0);
                assert_memory_equal(plain, p.out, sizeof(float) * no);
                free(plain);
                free(ref);
                free(b1);
                free(b2);
                xproblem_free(&p);
            }
    printf("  Tq != Tk, spans, mask vs materialized: out %.1e, mass %.1e, entropy %.1e, top5 %.1e, |sum mass - 1| %.1e\n",
           worst[0], worst[1], worst[2], worst[3], worst[4]);
}

static void test_kernel_fully_masked_and_bad_spans(void **state) {
    (void)state;
    const int qend[2] = {4, 9};
    xproblem p;
    xproblem_new(&p, 2, 2, 8, 9, 12, 2, qend, 1, 7);
    memset(p.kv + 12, 0, 12); /* batch 1: every key masked */
    assert_int_equal(attn_forward(&p.a, NULL), SS_EARG);
    assert_non_null(strstr(ss_err(), "batch 1 has all of its 12 keys masked"));
    attn_args ar = p.a;
    assert_int_equal(attn_reference(&ar, NULL), SS_EARG);
    p.a.key_valid = NULL;
    p.a.qend[1] = 8; /* the last span must end at T */
    assert_int_equal(attn_forward(&p.a, NULL), SS_EARG);
    assert_non_null(strstr(ss_err(), "query span 1"));
    xproblem_free(&p);
}

/* Removing keys with eta 0 through the re-weighting equals masking them in the reference. */
static void test_reweight_with_mask_vs_reference(void **state) {
    (void)state;
    const int B = 2, H = 2, dh = 8, T = 20, Tk = 45, qend[1] = {T}, k = 3;
    xproblem p;
    xproblem_new(&p, B, H, dh, T, Tk, 1, qend, 1, 11);
    attn_stats st;
    float *buf = stats_new(&st, &p.a);
    assert_int_equal(attn_forward(&p.a, &st), 0);
    int keys[2 * 2 * 3];
    uint8_t *kv2 = malloc((size_t)B * Tk);
    memcpy(kv2, p.kv, (size_t)B * Tk);
    for (int b = 0; b < B; b++) {
        int n = 0;
        for (int j = 2; n < k; j++) /* the first unmasked keys from 2 on, the same for every head */
            if (p.kv[(size_t)b * Tk + j]) {
                for (int h = 0; h < H; h++) keys[((size_t)b * H + h) * k + n] = j;
                kv2[(size_t)b * Tk + j] = 0;
                n++;
            }
    }
    attn_reweight rw = {.k = k, .keys = keys, .r0 = 0, .r1 = T, .eta = 0.0f};
    double before[4], after[4];
    assert_int_equal(attn_apply_reweight(&p.a, &st, &rw, before, after), 0);
    float *ref = malloc(sizeof(float) * B * T * H * dh);
    attn_args ar = p.a;
    ar.out = ref;
    ar.key_valid = kv2;
    assert_int_equal(attn_reference(&ar, NULL), 0);
    const double e = max_rel(p.out, ref, (size_t)B * T * H * dh);
    printf("  eta-0 removal under a key mask vs masked reference: %.1e\n", e);
    assert_true(e < 1e-5);
    for (int i = 0; i < B * H; i++) assert_true(before[i] > 0 && after[i] == 0);
    /* a masked key cannot be re-weighted */
    int j0 = 0;
    while (p.kv[j0]) j0++;
    keys[0] = j0;
    assert_int_equal(attn_apply_reweight(&p.a, &st, &rw, NULL, NULL), SS_EARG);
    assert_non_null(strstr(ss_err(), "masked"));
    free(ref);
    free(kv2);
    free(buf);
    xproblem_free(&p);
}

static sink_condition parse_cond(const char *text) {
    sink_condition c;
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    assert_non_null(o);
    if (sink_condition_from_json(&c, o, "cond") < 0) fail_msg("%s", ss_err());
    json_decref(o);
    return c;
}

/* The sink at a cross-attention-like site (Tq image queries, Tk text keys, a key mask): masked
 * keys are never sinks nor selected (random draws included), get no mass, and an eta-0 removal
 * equals the reference with those keys masked too. */
static void test_sink_at_masked_cross_site(void **state) {
    (void)state;
    const int B = 2, H = 3, dh = 8, T = 24, Tk = 30, qend[1] = {T};
    const ss_site site = {.index = 0, .block = 0, .kind = SS_SITE_CROSS, .Tq = T, .Tk = Tk, .n_qspan = 1, .n_kspan = 1,
                          .qspan = {{0, T, SS_TOK_IMAGE}}, .kspan = {{0, Tk, SS_TOK_TEXT}}};
    const char *conds[] = {"{\"name\": \"r\", \"sites\": [\"cross.0\"], \"select\": \"random\", \"k\": 20, \"eta\": 0.5, \"seed\": 3}",
                           "{\"name\": \"t\", \"sites\": [\"cross.0\"], \"k\": 3, \"keys\": \"text\"}"};
    for (int ci = 0; ci < 2; ci++) {
        xproblem p;
        xproblem_new(&p, B, H, dh, T, Tk, 1, qend, 1, 21 + ci);
        float *plain = malloc(sizeof(float) * B * T * H * dh);
        attn_args ap = p.a;
        ap.out = plain;
        assert_int_equal(attn_forward(&ap, NULL), 0);
        sink_ctx *sk = sink_ctx_new();
        const int code = ss_site_code(SS_SITE_CROSS, 0);
        assert_int_equal(sink_ctx_set_probe(sk, &code, 1, TOK_IMAGE, 5, 1), 0);
        sink_condition c = parse_cond(conds[ci]);
        sink_ctx_set_condition(sk, &c);
        sd3_hooks hk = sink_ctx_hooks(sk);
        assert_int_equal(hk.attention(hk.ctx, &site, &p.a), 0);
        const sink_record *r = sink_ctx_record(sk, 0);
        assert_true(r->probed && r->intervened && r->T == Tk && r->n_img == 0);
        for (int b = 0; b < B; b++) {
            assert_true(r->text_frac[b] == 1.0f); /* every key is a text key here */
            for (int h = 0; h < H; h++) {
                const size_t bh = (size_t)b * H + h;
                for (int t = 0; t < r->topk; t++) assert_true(p.kv[(size_t)b * Tk + r->top_idx[bh * r->topk + t]]);
                for (int t = 0; t < r->k; t++) assert_true(p.kv[(size_t)b * Tk + r->sel[bh * r->k + t]]);
                for (int j = 0; j < Tk; j++)
                    if (!p.kv[(size_t)b * Tk + j]) assert_true(r->mass[bh * Tk + j] == 0.0f);
            }
        }
        if (ci == 1) { /* eta 0: head by head, the reference with that head's selected keys masked as well */
            double worst = 0;
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) {
                    uint8_t *kv2 = malloc((size_t)B * Tk);
                    memcpy(kv2, p.kv, (size_t)B * Tk);
                    for (int t = 0; t < r->k; t++) kv2[(size_t)b * Tk + r->sel[((size_t)b * H + h) * r->k + t]] = 0;
                    float *ref = malloc(sizeof(float) * B * T * H * dh);
                    attn_args ar = p.a;
                    ar.out = ref;
                    ar.key_valid = kv2;
                    assert_int_equal(attn_reference(&ar, NULL), 0);
                    for (int i = 0; i < T; i++)
                        for (int d = 0; d < dh; d++) {
                            const size_t o = ((size_t)b * T + i) * H * dh + (size_t)h * dh + d;
                            worst = fmax(worst, fabs((double)p.out[o] - ref[o]));
                        }
                    free(ref);
                    free(kv2);
                }
            printf("  masked cross site, top-3 removal vs masked reference: max abs %.1e\n", worst);
            assert_true(worst < 1e-5);
        } else {
            assert_memory_not_equal(plain, p.out, sizeof(float) * B * T * H * dh);
        }
        free(plain);
        sink_ctx_free(sk);
        xproblem_free(&p);
    }
}

/* ---- fixtures ---- */

static const char *const FIXTURES[] = {"sd3-tiny-a", "sd3-tiny-a-bf16", "sd35-tiny-b"};

typedef tc_sd3fx fx;

static void fx_load(fx *f, const char *name) {
    if (tc_sd3fx_load(f, name) < 0) fail_msg("%s", ss_err());
}

static void fx_free(fx *f) { tc_sd3fx_free(f); }

static float *fx_run(fx *f, const sd3_hooks *hk) {
    float *out = malloc(sizeof(float) * f->nout);
    if (sd3_forward(f->m, out, f->x, f->ctx, f->pooled, f->t, f->B, f->Hl, f->Wl, f->S, hk) < 0) fail_msg("%s", ss_err());
    return out;
}

/* Every site code of the fixture's model. */
static int all_codes(const fx *f, int *codes, ss_site *sites) {
    const int n = sd3_sites(&f->m->cfg, f->N, f->S, sites, 64);
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) codes[i] = ss_site_code_of(&sites[i]);
    return n;
}

/* A hook in front of the sink's: copies q, k, v (before) and the output (after) at attn2 sites. */
typedef struct {
    sd3_hooks inner;
    int nseen;
    struct {
        ss_site site;
        attn_args a;
        float *q, *k, *v, *out;
    } at[8];
} capture;

static float *copy(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static int cap_attention(void *ctx, const ss_site *site, const attn_args *a) {
    capture *c = ctx;
    if (site->kind != SS_SITE_ATTN2) return c->inner.attention(c->inner.ctx, site, a);
    assert_true(c->nseen < 8);
    const size_t nq = (size_t)a->B * a->T * a->ld, nk = (size_t)a->B * site->Tk * a->ld;
    c->at[c->nseen].site = *site;
    c->at[c->nseen].a = *a;
    c->at[c->nseen].q = copy(a->q, nq);
    c->at[c->nseen].k = copy(a->k, nk);
    c->at[c->nseen].v = copy(a->v, nk);
    int rc = c->inner.attention(c->inner.ctx, site, a);
    c->at[c->nseen].out = copy(a->out, nq);
    c->nseen++;
    return rc;
}

static int cap_block(void *ctx, int block, const float *x, int B, int N, int D) {
    capture *c = ctx;
    return c->inner.block_output(c->inner.ctx, block, x, B, N, D);
}

static void capture_free(capture *c) {
    for (int i = 0; i < c->nseen; i++) {
        free(c->at[i].q);
        free(c->at[i].k);
        free(c->at[i].v);
        free(c->at[i].out);
    }
}

static const sink_record *find_record(const sink_ctx *sk, int code) {
    for (int i = 0; i < sink_ctx_record_count(sk); i++)
        if (sink_ctx_record(sk, i)->site == code) return sink_ctx_record(sk, i);
    return NULL;
}

static void test_attn2_probe_vs_reference(void **state) {
    (void)state;
    fx f;
    fx_load(&f, "sd35-tiny-b");
    ss_site sites[64];
    int codes[64];
    const int n = all_codes(&f, codes, sites);
    assert_int_equal(n, 6); /* joint.0-3, attn2.0-1 */
    assert_true(sites[4].kind == SS_SITE_ATTN2 && sites[4].block == 0 && sites[4].index == 4 && sites[5].block == 1);
    sink_ctx *sk = sink_ctx_new();
    assert_int_equal(sink_ctx_set_probe(sk, codes, n, TOK_IMAGE, 5, 1), 0);
    capture c = {.inner = sink_ctx_hooks(sk)};
    sd3_hooks hk = {.ctx = &c, .attention = cap_attention, .block_output = cap_block};
    float *out = fx_run(&f, &hk);
    assert_int_equal(c.nseen, 2);
    assert_int_equal(sink_ctx_record_count(sk), 6);
    for (int s = 0; s < 2; s++) {
        const attn_args *a0 = &c.at[s].a;
        const int B = a0->B, H = a0->H, N = a0->T;
        assert_int_equal(N, f.N);
        const sink_record *r = find_record(sk, ss_site_code(SS_SITE_ATTN2, s));
        assert_non_null(r);
        assert_int_equal(r->block, 4 + s);
        assert_int_equal(r->T, N);
        assert_int_equal(r->n_img, N);
        /* materialized fp64 reference on the captured q, k, v */
        attn_args ar = *a0;
        ar.q = c.at[s].q;
        ar.k = c.at[s].k;
        ar.v = c.at[s].v;
        float *ref_out = malloc(sizeof(float) * B * N * a0->ld);
        ar.out = ref_out;
        attn_stats st;
        float *buf = stats_new(&st, &ar);
        assert_int_equal(attn_reference(&ar, &st), 0);
        const double eo = max_rel(c.at[s].out, ref_out, (size_t)B * N * a0->ld);
        const double em = max_rel(r->mass, st.mass[0], (size_t)B * H * N);
        double ee = 0, e5 = 0, et = 0, emax = 0;
        for (int b = 0; b < B; b++) {
            double mm = 0;
            for (int h = 0; h < H; h++) {
                const size_t bh = (size_t)b * H + h;
                double ent = 0, t5 = 0;
                for (int i = 0; i < N; i++) {
                    ent += st.row_entropy[bh * N + i] / N;
                    t5 += st.row_top5[bh * N + i] / N;
                }
                ee = fmax(ee, fabs(r->head_entropy[bh] - ent) / ent);
                e5 = fmax(e5, fabs(r->head_top5[bh] - t5) / t5);
                /* top-k: the reference's ranking (distinct values here), and its masses */
                const float *m = st.mass[0] + bh * N;
                for (int t = 0; t < r->topk; t++) {
                    const int j = r->top_idx[bh * r->topk + t];
                    et = fmax(et, fabs(r->top_mass[bh * r->topk + t] - m[j]) / m[j]);
                    int above = 0; /* keys with larger reference mass, beyond a rounding margin */
                    for (int u = 0; u < N; u++) above += m[u] > m[j] + 1e-6;
                    assert_true(above <= t);
                }
                mm += m[r->top_idx[bh * r->topk]] / H;
            }
            emax = fmax(emax, fabs(r->max_mass[b] - mm) / mm);
            assert_true(r->text_frac[b] == 0.0f); /* attn2 has no text keys */
        }
        printf("  attn2.%d vs materialized: out %.1e, mass %.1e, entropy %.1e, top5 %.1e, top-k mass %.1e, MaxMass %.1e\n", s,
               eo, em, ee, e5, et, emax);
        assert_true(eo < 1e-5 && em < 5e-6 && ee < 2e-5 && e5 < 1e-5 && et < 5e-6 && emax < 5e-6);
        free(ref_out);
        free(buf);
    }
    free(out);
    capture_free(&c);
    sink_ctx_free(sk);
    fx_free(&f);
}


/* An intervention at attn2.1: the captured output against a brute-force fp64 re-weighting of
 * the same q, k, v with the selected keys, and the selection against the reference ranking. */
static void test_attn2_intervention_vs_reference(void **state) {
    (void)state;
    const char *conds[] = {
        "{\"name\": \"a2\", \"sites\": [\"attn2.1\"], \"k\": 2, \"eta\": 0.25}",
        "{\"name\": \"a2hard\", \"layers\": [], \"sites\": [\"attn2.0\"], \"k\": 1, \"eta\": 0.0, \"rank_by\": \"union\"}",
    };
    for (size_t ci = 0; ci < 2; ci++) {
        fx f;
        fx_load(&f, "sd35-tiny-b");
        sink_condition cond = parse_cond(conds[ci]);
        ss_site sites[64];
        int codes[64];
        const int ns = all_codes(&f, codes, sites);
        assert_int_equal(sink_condition_check_sites(&cond, sites, ns, "cond"), 0);
        const int code = cond.layers[0], blk = ss_site_code_block(code);
        float *plain = fx_run(&f, NULL);
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &cond);
        capture c = {.inner = sink_ctx_hooks(sk)};
        sd3_hooks hk = {.ctx = &c, .attention = cap_attention, .block_output = cap_block};
        float *out = fx_run(&f, &hk);
        assert_memory_not_equal(plain, out, sizeof(float) * f.nout); /* it acted */
        assert_int_equal(sink_ctx_record_count(sk), 1);
        const sink_record *r = sink_ctx_record(sk, 0);
        assert_int_equal(r->site, code);
        assert_true(r->intervened && r->k == cond.k);
        const attn_args *a = &c.at[blk].a;
        const int B = a->B, H = a->H, N = a->T, dh = a->dh, ld = a->ld, k = cond.k;
        /* the un-intervened reference mass ranks the selected keys first */
        attn_args ar = *a;
        ar.q = c.at[blk].q;
        ar.k = c.at[blk].k;
        ar.v = c.at[blk].v;
        float *tmp = malloc(sizeof(float) * B * N * ld);
        ar.out = tmp;
        attn_stats st;
        float *buf = stats_new(&st, &ar);
        assert_int_equal(attn_reference(&ar, &st), 0);
        double num = 0, den = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const int *sel = r->sel + ((size_t)b * H + h) * k;
                double rank[64] = {0};
                for (int j = 0; j < N; j++)
                    for (int hh = 0; hh < H; hh++)
                        rank[j] += cond.rank_union ? st.mass[0][((size_t)b * H + hh) * N + j] / H
                                                   : (hh == h ? st.mass[0][((size_t)b * H + h) * N + j] : 0);
                for (int t = 0; t < k; t++)
                    for (int j = 0; j < N; j++) {
                        int in = 0;
                        for (int u = 0; u < k; u++) in |= sel[u] == j;
                        if (!in) assert_true(rank[sel[t]] >= rank[j] - 1e-6);
                    }
                /* brute force: weights exp(s - max), times eta for the selected keys */
                for (int i = 0; i < N; i++) {
                    const float *q = ar.q + ((size_t)b * N + i) * ld + h * dh;
                    double s[64], mx = -INFINITY, sum = 0, o[64] = {0};
                    for (int j = 0; j < N; j++) {
                        const float *kj = ar.k + ((size_t)b * N + j) * ld + h * dh;
                        s[j] = 0;
                        for (int d = 0; d < dh; d++) s[j] += (double)q[d] * kj[d];
                        s[j] /= sqrt((double)dh);
                        mx = fmax(mx, s[j]);
                    }
                    for (int j = 0; j < N; j++) {
                        double w = exp(s[j] - mx);
                        for (int u = 0; u < k; u++)
                            if (sel[u] == j) w *= cond.eta;
                        sum += w;
                        for (int d = 0; d < dh; d++) o[d] += w * ar.v[((size_t)b * N + j) * ld + h * dh + d];
                    }
                    for (int d = 0; d < dh; d++) {
                        const double want = o[d] / sum, got = c.at[blk].out[((size_t)b * N + i) * ld + h * dh + d];
                        num = fmax(num, fabs(got - want));
                        den = fmax(den, fabs(want));
                    }
                }
            }
        const double worst = num / den;
        printf("  %s (%s): intervened attn2 output vs brute force %.1e\n", cond.name, conds[ci], worst);
        assert_true(worst < 1e-5);
        free(tmp);
        free(buf);
        free(plain);
        free(out);
        capture_free(&c);
        sink_ctx_free(sk);
        fx_free(&f);
    }
}

/* Probe at every site (attn2 included) and an empty condition: outputs bit-identical. */
static void test_noop_bit_identical_all_sites(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
        fx f;
        fx_load(&f, FIXTURES[k]);
        ss_site sites[64];
        int codes[64];
        const int n = all_codes(&f, codes, sites);
        float *plain = fx_run(&f, NULL);
        const sink_tokens qs[] = {TOK_IMAGE, TOK_ALL};
        for (int qi = 0; qi < 2; qi++) {
            sink_ctx *sk = sink_ctx_new();
            assert_int_equal(sink_ctx_set_probe(sk, codes, n, qs[qi], 5, 1), 0);
            sd3_hooks hk = sink_ctx_hooks(sk);
            float *probed = fx_run(&f, &hk);
            assert_memory_equal(plain, probed, sizeof(float) * f.nout);
            assert_int_equal(sink_ctx_record_count(sk), n);
            free(probed);
            sink_ctx_free(sk);
        }
        sink_condition c = parse_cond("{\"name\": \"noop\", \"sites\": []}");
        assert_int_equal(c.n_layers, 0);
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &c);
        sink_ctx_set_probe(sk, codes, n, TOK_IMAGE, 5, 0);
        sd3_hooks hk = sink_ctx_hooks(sk);
        float *noop = fx_run(&f, &hk);
        assert_memory_equal(plain, noop, sizeof(float) * f.nout);
        printf("  %-16s no-op bit-identical with a probe at all %d sites\n", FIXTURES[k], n);
        free(noop);
        free(plain);
        sink_ctx_free(sk);
        fx_free(&f);
    }
}

/* Output, probe statistics and selections do not depend on the thread count, at every site. */
static void test_thread_count_independent(void **state) {
    (void)state;
    fx f;
    fx_load(&f, "sd35-tiny-b");
    ss_site sites[64];
    int codes[64];
    const int n = all_codes(&f, codes, sites);
    sink_condition c = parse_cond("{\"name\": \"mix\", \"layers\": [1], \"sites\": [\"attn2.0\", \"attn2.1\"], \"k\": 2, "
                                  "\"select\": \"random\", \"seed\": 5, \"eta\": 0.5}");
    const int saved = omp_get_max_threads();
    float *outs[2];
    sink_ctx *sks[2];
    const int threads[2] = {1, 3};
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(threads[t]);
        sks[t] = sink_ctx_new();
        sink_ctx_set_probe(sks[t], codes, n, TOK_ALL, 5, 1);
        sink_ctx_set_condition(sks[t], &c);
        sd3_hooks hk = sink_ctx_hooks(sks[t]);
        outs[t] = fx_run(&f, &hk);
    }
    omp_set_num_threads(saved);
    assert_memory_equal(outs[0], outs[1], sizeof(float) * f.nout);
    assert_int_equal(sink_ctx_record_count(sks[0]), n);
    assert_int_equal(sink_ctx_record_count(sks[1]), n);
    int n_iv = 0;
    for (int i = 0; i < n; i++) {
        const sink_record *x = sink_ctx_record(sks[0], i), *y = sink_ctx_record(sks[1], i);
        const size_t bh = (size_t)x->B * x->H;
        assert_int_equal(x->site, y->site);
        assert_memory_equal(x->mass, y->mass, sizeof(float) * bh * x->T);
        assert_memory_equal(x->top_idx, y->top_idx, sizeof(int) * bh * x->topk);
        assert_memory_equal(x->head_entropy, y->head_entropy, sizeof(float) * bh);
        assert_memory_equal(x->head_top5, y->head_top5, sizeof(float) * bh);
        assert_int_equal(x->intervened, y->intervened);
        if (x->intervened) {
            n_iv++;
            assert_memory_equal(x->sel, y->sel, sizeof(int) * bh * x->k);
            assert_memory_equal(x->after, y->after, sizeof(double) * bh);
        }
    }
    assert_int_equal(n_iv, 3);
    for (int t = 0; t < 2; t++) {
        free(outs[t]);
        sink_ctx_free(sks[t]);
    }
    fx_free(&f);
}

/* ---- names: parsing, conditions, the CLI ---- */

static void expect_cond_error(const char *text, const char *what) {
    sink_condition c;
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    assert_non_null(o);
    assert_true(sink_condition_from_json(&c, o, "cond") < 0);
    if (!strstr(ss_err(), what)) fail_msg("'%s' not in: %s", what, ss_err());
    json_decref(o);
}

static void test_site_names_and_conditions(void **state) {
    (void)state;
    assert_int_equal(ss_site_code_parse("joint.0"), 0);
    assert_int_equal(ss_site_code_parse("joint.17"), 17);
    assert_int_equal(ss_site_code_parse("attn2.3"), ss_site_code(SS_SITE_ATTN2, 3));
    assert_int_equal(ss_site_code_parse("single.12"), ss_site_code(SS_SITE_SINGLE, 12));
    const char *bad[] = {"joint", "joint.", "joint.01", "joint.-1", "joint.256", "attn3.0", "attn2.1x", ".1", "Joint.0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) assert_int_equal(ss_site_code_parse(bad[i]), -1);
    char nm[32];
    assert_string_equal(ss_site_code_name(ss_site_code(SS_SITE_ATTN2, 7), nm, sizeof nm), "attn2.7");

    /* conditions: parse errors name the field */
    expect_cond_error("{\"name\": \"x\", \"sites\": [\"attn3.0\"]}", "field 'sites' entry 0 ('attn3.0') is not a site name");
    expect_cond_error("{\"name\": \"x\", \"sites\": [3]}", "field 'sites' entry 0 is not a site name");
    expect_cond_error("{\"name\": \"x\", \"sites\": \"attn2.0\"}", "field 'sites' must be a list");
    expect_cond_error("{\"name\": \"x\", \"sites\": [\"attn2.0\", \"attn2.0\"]}", "lists attn2.0 twice");
    expect_cond_error("{\"name\": \"x\", \"layers\": [2], \"sites\": [\"joint.2\"]}", "names joint.2, which 'layers' names");
    expect_cond_error("{\"name\": \"x\"}", "missing field 'layers'");

    /* round trip; a condition without other sites writes no "sites" field (files as before) */
    sink_condition c = parse_cond("{\"name\": \"x\", \"layers\": [1], \"sites\": [\"attn2.0\"]}");
    assert_int_equal(c.n_layers, 2);
    assert_true(sink_condition_has_layer(&c, 1) && sink_condition_has_layer(&c, ss_site_code(SS_SITE_ATTN2, 0)));
    assert_false(sink_condition_has_layer(&c, 0));
    json_t *j = sink_condition_to_json(&c);
    sink_condition c2;
    assert_int_equal(sink_condition_from_json(&c2, j, "rt"), 0);
    assert_int_equal(c2.n_layers, 2);
    assert_memory_equal(c.layers, c2.layers, sizeof(int) * 2);
    assert_non_null(json_object_get(j, "sites"));
    json_decref(j);
    c = parse_cond("{\"name\": \"x\", \"layers\": [1, 0]}");
    j = sink_condition_to_json(&c);
    assert_null(json_object_get(j, "sites"));
    json_decref(j);

    /* against a model's sites: unknown sites list the model's, per-site token checks */
    sd3_config cfg = {.num_layers = 4};
    cfg.dual[0] = cfg.dual[1] = 1;
    ss_site sites[16];
    const int n = sd3_sites(&cfg, 15, 5, sites, 16);
    assert_int_equal(n, 6);
    c = parse_cond("{\"name\": \"x\", \"sites\": [\"attn2.2\"]}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "f.json: condition 'x': field 'sites' names attn2.2, but the model has no such site (its sites: joint.0-3, attn2.0-1)"));
    c = parse_cond("{\"name\": \"x\", \"layers\": [4], \"sites\": [\"attn2.0\"]}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "field 'layers' names block 4"));
    c = parse_cond("{\"name\": \"x\", \"sites\": [\"attn2.0\"], \"keys\": \"text\"}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "site attn2.0 has only 0 candidate text keys"));
    c = parse_cond("{\"name\": \"x\", \"sites\": [\"attn2.1\"], \"queries\": \"text\"}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "site attn2.1 has no text query rows"));
    c = parse_cond("{\"name\": \"x\", \"sites\": [\"attn2.1\"], \"k\": 15}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "removes every one of site attn2.1's 15 keys"));
    c = parse_cond("{\"name\": \"x\", \"sites\": [\"attn2.1\", \"joint.3\"], \"k\": 19, \"keys\": \"all\", \"eta\": 0.5}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0); /* 19 > attn2.1's 15 keys */
    assert_non_null(strstr(ss_err(), "site attn2.1 has only 15 candidate all keys"));
    c = parse_cond("{\"name\": \"x\", \"layers\": [3], \"k\": 19, \"eta\": 0.5}");
    assert_int_equal(sink_condition_check_sites(&c, sites, n, "f.json"), 0);
    /* joint-only conditions keep their old messages; the joint-only check refuses other sites */
    c = parse_cond("{\"name\": \"x\", \"layers\": [9]}");
    assert_true(sink_condition_check_sites(&c, sites, n, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "field 'layers' names block 9, but the model has 4 blocks"));
    c = parse_cond("{\"name\": \"x\", \"sites\": [\"attn2.0\"]}");
    assert_true(sink_condition_check_model(&c, 4, 15, 5, "f.json") < 0);
    assert_non_null(strstr(ss_err(), "field 'sites' names attn2.0, but only joint blocks"));
}

static void test_cli_probe_and_condition_sites(void **state) {
    (void)state;
    char *dir = tc_tmpdir(), buf[8192];
    const char *fxd = tc_path("fixtures/sd35-tiny-b");
    const char *base = "%s forward --model %s --inputs %s/inputs.safetensors --out %s/o.safetensors";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, base, tc_bin(), fxd, fxd, dir);
    /* names and indices mixed; mass.attn2.1 [B,H,N]; the record names its site */
    int rc = tc_run(buf, sizeof buf, "%s --probe 1,attn2.1,joint.0", cmd);
    if (rc) fail_msg("%s", buf);
    assert_non_null(strstr(buf, "attn2.1 batch 0: MaxMass"));
    int64_t shape[3];
    int nd;
    float *m = tc_load(tc_join(dir, "o.safetensors"), "mass.attn2.1", NULL, shape, &nd);
    assert_non_null(m);
    assert_int_equal(nd, 3);
    assert_true(shape[0] == 2 && shape[1] == 3 && shape[2] == 15);
    free(m);
    m = tc_load(tc_join(dir, "o.safetensors"), "mass.1", NULL, shape, &nd);
    assert_non_null(m);
    assert_true(shape[2] == 20);
    free(m);
    json_error_t je;
    json_t *st = json_load_file(tc_join(dir, "o.stats.json"), 0, &je);
    assert_non_null(st);
    json_t *recs = json_object_get(st, "probe"); /* sink/record.h: one entry per site and batch element */
    assert_int_equal(json_array_size(recs), 3 * 2);
    int seen_attn2 = 0;
    for (size_t i = 0; i < json_array_size(recs); i++) {
        json_t *r = json_array_get(recs, i), *site = json_object_get(r, "site");
        const int blk = (int)json_integer_value(json_object_get(r, "block"));
        assert_int_equal(json_integer_value(json_object_get(r, "batch")), (int)i % 2);
        if (site) {
            assert_string_equal(json_string_value(site), "attn2.1");
            assert_int_equal(blk, 5);
            seen_attn2 = 1;
        } else {
            assert_true(blk == 0 || blk == 1); /* joint records: as before */
        }
    }
    assert_true(seen_attn2);
    json_decref(st);
    /* errors name the site and list the model's */
    rc = tc_run(buf, sizeof buf, "%s --probe attn2.2", cmd);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "--probe: site attn2.2 does not exist in"));
    assert_non_null(strstr(buf, "(its sites: joint.0-3, attn2.0-1)"));
    rc = tc_run(buf, sizeof buf, "%s --probe attn2.x", cmd);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "'attn2.x' is neither a block index"));
    rc = tc_run(buf, sizeof buf, "%s --probe 0,joint.0", cmd);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "--probe: '0,joint.0' lists joint.0 twice"));
    rc = tc_run(buf, sizeof buf, "%s --probe 7", cmd);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "--probe: block 7 does not exist"));
    /* a condition at an attn2 site */
    assert_int_equal(tc_write_text(tc_join(dir, "c.json"), "{\"name\": \"a\", \"sites\": [\"attn2.0\"], \"k\": 2}"), 0);
    rc = tc_run(buf, sizeof buf, "%s --condition %s/c.json", cmd, dir);
    if (rc) fail_msg("%s", buf);
    assert_non_null(strstr(buf, "attn2.0 batch 1: intervention: suppressed keys' mass"));
    st = json_load_file(tc_join(dir, "o.stats.json"), 0, &je);
    assert_non_null(st);
    json_t *cj = json_object_get(st, "condition");
    assert_string_equal(json_string_value(json_array_get(json_object_get(cj, "sites"), 0)), "attn2.0");
    json_decref(st);
    assert_int_equal(tc_write_text(tc_join(dir, "c.json"), "{\"name\": \"a\", \"sites\": [\"attn2.3\"]}"), 0);
    rc = tc_run(buf, sizeof buf, "%s --condition %s/c.json", cmd, dir);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "field 'sites' names attn2.3, but the model has no such site (its sites: joint.0-3, attn2.0-1)"));
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_tq_tk_mask_vs_reference),
        cmocka_unit_test(test_kernel_fully_masked_and_bad_spans),
        cmocka_unit_test(test_reweight_with_mask_vs_reference),
        cmocka_unit_test(test_sink_at_masked_cross_site),
        cmocka_unit_test(test_attn2_probe_vs_reference),
        cmocka_unit_test(test_attn2_intervention_vs_reference),
        cmocka_unit_test(test_noop_bit_identical_all_sites),
        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_site_names_and_conditions),
        cmocka_unit_test(test_cli_probe_and_condition_sites),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
