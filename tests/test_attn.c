/* Property tests: the streaming attention, probe and interventions against a brute-force
 * reference that materializes the attention matrix (here, inside the test only). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn/attn.h"
#include "core/err.h"
#include "sink/sink.h"

typedef struct {
    attn_args a;
    float *q, *k, *v, *out;
} problem;

/* Random q/k/v; a few "sink" keys get a large shared direction so the mass is peaked like a
 * real DiT's, and the top-k ranking has clear margins. */
static void problem_new(problem *p, int B, int H, int dh, int T, int n_img, uint64_t seed) {
    const size_t n = (size_t)B * T * H * dh;
    p->q = malloc(sizeof(float) * n);
    p->k = malloc(sizeof(float) * n);
    p->v = malloc(sizeof(float) * n);
    p->out = malloc(sizeof(float) * n);
    tc_fill(p->q, n, seed, 1.0f);
    tc_fill(p->k, n, seed + 1, 1.0f);
    tc_fill(p->v, n, seed + 2, 1.0f);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < 6 && s < T; s++) {
            int j = (int)((seed * 7919 + (uint64_t)s * 104729 + b) % (uint64_t)T);
            for (int c = 0; c < H * dh; c++) p->k[((size_t)b * T + j) * H * dh + c] += (float)(0.4 * (s + 1)) * (c % 2 ? 1 : -1);
            for (int i = 0; i < T; i++)
                for (int c = 0; c < H * dh; c++) p->q[((size_t)b * T + i) * H * dh + c] += 0.3f * (c % 2 ? 1 : -1);
        }
    attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = H * dh, .n_img = n_img, .q = p->q, .k = p->k, .v = p->v, .out = p->out};
    p->a = a;
}

/* The sink hook at joint block `block`, the problem laid out as SD3's joint attention: image
 * tokens [0, n_img) then text. */
static int joint_hook(const sd3_hooks *hk, int block, const attn_args *a0) {
    const ss_site site = {.index = block, .block = block, .kind = SS_SITE_JOINT, .Tq = a0->T, .Tk = a0->T, .n_qspan = 2,
                          .n_kspan = 2, .qspan = {{0, a0->n_img, SS_TOK_IMAGE}, {a0->n_img, a0->T - a0->n_img, SS_TOK_TEXT}},
                          .kspan = {{0, a0->n_img, SS_TOK_IMAGE}, {a0->n_img, a0->T - a0->n_img, SS_TOK_TEXT}}};
    attn_args a = *a0;
    a.n_qspan = 2;
    a.qend[0] = a0->n_img;
    a.qend[1] = a0->T;
    return hk->attention(hk->ctx, &site, &a);
}

static void problem_free(problem *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->out);
}

static double max_rel(const float *x, const float *y, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)x[i] - y[i]));
        den = fmax(den, fabs((double)y[i]));
    }
    return num / (den > 0 ? den : 1);
}

static void test_streaming_matches_materialized(void **state) {
    (void)state;
    const int Ts[] = {1, 7, 64, 65, 200, 333};
    const int chunks[] = {ATTN_KC, 16, 64};
    double worst[6] = {0};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
        for (size_t ci = 0; ci < 3; ci++) {
            const int T = Ts[ti], B = 2, H = 3, dh = 16, n_img = T * 3 / 4;
            problem p;
            problem_new(&p, B, H, dh, T, n_img, 100 + T);
            p.a.key_chunk = chunks[ci]; /* per call: the online-softmax path below ATTN_KC */
            const size_t n3 = (size_t)B * H * T, no = (size_t)B * T * H * dh;
            float *s1 = malloc(sizeof(float) * n3 * 6), *s2 = malloc(sizeof(float) * n3 * 6), *ref = malloc(sizeof(float) * no);
            attn_stats st1 = {.mass_img = s1, .mass_txt = s1 + n3, .row_m = s1 + 2 * n3, .row_l = s1 + 3 * n3,
                              .row_entropy = s1 + 4 * n3, .row_top5 = s1 + 5 * n3};
            attn_stats st2 = {.mass_img = s2, .mass_txt = s2 + n3, .row_m = s2 + 2 * n3, .row_l = s2 + 3 * n3,
                              .row_entropy = s2 + 4 * n3, .row_top5 = s2 + 5 * n3};
            assert_int_equal(attn_forward(&p.a, &st1), 0);
            memcpy(ref, p.out, sizeof(float) * no);
            attn_args ar = p.a;
            ar.out = ref;
            assert_int_equal(attn_reference(&ar, &st2), 0);
            double e[6] = {max_rel(p.out, ref, no), max_rel(st1.mass_img, st2.mass_img, n3), max_rel(st1.mass_txt, st2.mass_txt, n3),
                           max_rel(st1.row_entropy, st2.row_entropy, n3), max_rel(st1.row_top5, st2.row_top5, n3), 0};
            /* mass over image queries sums to 1 over keys */
            for (int bh = 0; bh < B * H && n_img > 0; bh++) {
                double s = 0;
                for (int j = 0; j < T; j++) s += st1.mass_img[(size_t)bh * T + j];
                e[5] = fmax(e[5], fabs(s - 1));
            }
            for (int i = 0; i < 6; i++) worst[i] = fmax(worst[i], e[i]);
            if (!(e[0] < 1e-5 && e[1] < 5e-6 && e[2] < 5e-6 && e[3] < 2e-5 && e[4] < 1e-5 && e[5] < 1e-5)) printf("T=%d kc=%d: %.2e %.2e %.2e %.2e %.2e %.2e\n", T, chunks[ci], e[0], e[1], e[2], e[3], e[4], e[5]);
            assert_true(e[0] < 1e-5 && e[1] < 5e-6 && e[2] < 5e-6 && e[3] < 2e-5 && e[4] < 1e-5 && e[5] < 1e-5);
            /* the plain call (no statistics) gives the very same output bits */
            float *plain = malloc(sizeof(float) * no);
            attn_args ap = p.a;
            ap.out = plain;
            assert_int_equal(attn_forward(&ap, NULL), 0);
            assert_memory_equal(plain, p.out, sizeof(float) * no);
            free(plain);
            free(s1);
            free(s2);
            free(ref);
            problem_free(&p);
        }
    printf("  max relative error vs materialized: out %.1e, mass(img) %.1e, mass(txt) %.1e, entropy %.1e, top5 %.1e, |sum mass - 1| %.1e\n",
           worst[0], worst[1], worst[2], worst[3], worst[4], worst[5]);
}

/* The fp32 Q K^T and P V kernels reproduce sgemm's bits: outputs and every statistic equal the
 * sgemm-only run, at FLUX's head dim (one chunk and several, with masked keys) and others; a key
 * chunk that is not a multiple of the kernel's 32-key panels (333) keeps sgemm for Q K^T. */
static void test_fp32_kernels_match_sgemm(void **state) {
    (void)state;
    const struct {
        int dh, T, chunk, mask;
    } cs[] = {{128, 1300, 0, 0}, {128, 1300, 512, 1}, {64, 1111, 0, 1}, {80, 700, 320, 0}, {72, 900, 333, 1}, {16, 1200, 0, 0}};
    const long before = attn_test_blas_only(0);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        const int B = 1, H = 2, dh = cs[c].dh, T = cs[c].T, n_img = T - 97;
        problem p;
        problem_new(&p, B, H, dh, T, n_img, 700 + c);
        p.a.key_chunk = cs[c].chunk;
        p.a.n_qspan = 2;
        p.a.qend[0] = n_img;
        p.a.qend[1] = T;
        uint8_t *kv = NULL;
        if (cs[c].mask) {
            kv = malloc((size_t)B * T);
            for (int j = 0; j < B * T; j++) kv[j] = j % 5 != 2;
            p.a.key_valid = kv;
        }
        const size_t n3 = (size_t)B * H * T, no = (size_t)B * T * H * dh;
        float *s[2], *o[2];
        for (int run = 0; run < 2; run++) {
            s[run] = malloc(sizeof(float) * n3 * 6);
            o[run] = malloc(sizeof(float) * no);
            attn_stats st = {.mass = {s[run], s[run] + n3}, .row_m = s[run] + 2 * n3, .row_l = s[run] + 3 * n3,
                             .row_entropy = s[run] + 4 * n3, .row_top5 = s[run] + 5 * n3};
            attn_test_blas_only(run == 0);
            p.a.out = o[run];
            assert_int_equal(attn_forward(&p.a, &st), 0);
        }
        attn_test_blas_only(0);
        if (memcmp(o[0], o[1], sizeof(float) * no) || memcmp(s[0], s[1], sizeof(float) * n3 * 6))
            printf("dh=%d T=%d chunk=%d mask=%d: the kernels' bits differ from sgemm's\n", dh, T, cs[c].chunk, cs[c].mask);
        assert_memory_equal(o[0], o[1], sizeof(float) * no);
        assert_memory_equal(s[0], s[1], sizeof(float) * n3 * 6);
        for (int run = 0; run < 2; run++) free(s[run]), free(o[run]);
        free(kv);
        p.a.out = p.out;
        problem_free(&p);
    }
    const long used = attn_test_blas_only(0) - before;
    printf("  fp32 products by the AVX-512 kernels: %ld (the rest through sgemm)\n", used);
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx512f")) assert_true(used > 0); /* the kernels did run */
#endif
}

/* ---- interventions ---- */

/* Brute-force intervened attention for one (b, h): rows [r0, r1) re-weighted. */
static void brute(const attn_args *a, int b, int h, const int *sel, int k, int r0, int r1, const sink_condition *c, double *o) {
    const int T = a->T, dh = a->dh, ld = a->ld;
    const size_t base = (size_t)b * T * ld + (size_t)h * dh;
    double *vmean = calloc(dh, sizeof(double)), *s = malloc(sizeof(double) * T);
    for (int j = 0; j < T; j++)
        for (int d = 0; d < dh; d++) vmean[d] += a->v[base + (size_t)j * ld + d] / T;
    for (int i = 0; i < T; i++) {
        const int iv = i >= r0 && i < r1;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < T; j++) {
            double x = 0;
            for (int d = 0; d < dh; d++) x += (double)a->q[base + (size_t)i * ld + d] * a->k[base + (size_t)j * ld + d];
            x /= sqrt((double)dh);
            int chosen = 0;
            for (int t = 0; t < k; t++) chosen |= sel[t] == j;
            if (iv && chosen && !c->value_path) x = c->eta > 0 ? x + log(c->eta) : -INFINITY;
            s[j] = x;
            mx = fmax(mx, x);
        }
        for (int j = 0; j < T; j++) sum += exp(s[j] - mx);
        for (int d = 0; d < dh; d++) o[(size_t)i * dh + d] = 0;
        for (int j = 0; j < T; j++) {
            const double p = exp(s[j] - mx) / sum;
            int chosen = 0;
            for (int t = 0; t < k; t++) chosen |= sel[t] == j;
            for (int d = 0; d < dh; d++) {
                double vj = a->v[base + (size_t)j * ld + d];
                if (iv && chosen && c->value_path)
                    vj = c->value == VAL_ZERO ? 0 : c->value == VAL_MEAN ? vmean[d] : c->alpha * vj + (1 - c->alpha) * vmean[d];
                o[(size_t)i * dh + d] += p * vj;
            }
        }
    }
    free(vmean);
    free(s);
}

/* Check one condition on one problem: output vs brute force, and the selection vs the ranking. */
static double check_condition(problem *p, const sink_condition *c, int *skipped_ties) {
    const attn_args *a = &p->a;
    const int B = a->B, H = a->H, T = a->T, dh = a->dh;
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_condition(sk, c);
    sd3_hooks hk = sink_ctx_hooks(sk);
    if (joint_hook(&hk, c->layers[0], a) < 0) fail_msg("%s: %s", c->name, ss_err());
    assert_int_equal(sink_ctx_record_count(sk), 1);
    const sink_record *r = sink_ctx_record(sk, 0);
    const int r0 = c->queries == TOK_TEXT ? a->n_img : 0, r1 = c->queries == TOK_IMAGE ? a->n_img : T;
    const int lo = c->keys == TOK_TEXT ? a->n_img : 0, hi = c->keys == TOK_IMAGE ? a->n_img : T;
    /* reference masses for the ranking */
    const size_t n3 = (size_t)B * H * T;
    float *mi = malloc(sizeof(float) * n3), *mt = malloc(sizeof(float) * n3), *tmp = malloc(sizeof(float) * B * T * H * dh);
    attn_args ar = *a;
    ar.out = tmp;
    attn_stats st = {.mass_img = mi, .mass_txt = mt};
    attn_reference(&ar, &st);
    double worst = 0, refmax = 0, *o = malloc(sizeof(double) * T * dh), *avg = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < T; j++) avg[j] = 0;
        for (int h = 0; h < H; h++) {
            const size_t o3 = ((size_t)b * H + h) * T;
            for (int j = 0; j < T; j++) {
                double m = c->queries == TOK_IMAGE ? mi[o3 + j] : c->queries == TOK_TEXT ? mt[o3 + j]
                         : ((double)a->n_img * mi[o3 + j] + (double)(T - a->n_img) * mt[o3 + j]) / T;
                avg[j] += m / H;
            }
        }
        for (int h = 0; h < H; h++) {
            const int *sel = r->sel + ((size_t)b * H + h) * c->k;
            /* selected keys: distinct and candidates */
            for (int t = 0; t < c->k; t++) {
                assert_true(sel[t] >= (c->select == SEL_FIXED ? 0 : lo) && sel[t] < (c->select == SEL_FIXED ? T : hi));
                for (int u = 0; u < t; u++) assert_int_not_equal(sel[t], sel[u]);
            }
            if (c->select == SEL_FIXED)
                for (int t = 0; t < c->k; t++) assert_int_equal(sel[t], c->indices[t]);
            if (c->select == SEL_TOPK) {
                /* every selected key ranks above every unselected candidate */
                const size_t o3 = ((size_t)b * H + h) * T;
                double minsel = INFINITY, maxrest = -INFINITY;
                for (int j = lo; j < hi; j++) {
                    double m = c->rank_union ? avg[j]
                             : c->queries == TOK_IMAGE ? mi[o3 + j] : c->queries == TOK_TEXT ? mt[o3 + j]
                             : ((double)a->n_img * mi[o3 + j] + (double)(T - a->n_img) * mt[o3 + j]) / T;
                    int in = 0;
                    for (int t = 0; t < c->k; t++) in |= sel[t] == j;
                    if (in) minsel = fmin(minsel, m);
                    else maxrest = fmax(maxrest, m);
                }
                if (minsel - maxrest > 1e-6) assert_true(minsel >= maxrest);
                else if (minsel < maxrest - 1e-6) fail_msg("%s: selected key ranks below an unselected one (%g < %g)", c->name, minsel, maxrest);
                else (*skipped_ties)++;
            }
            brute(a, b, h, sel, c->k, r0, r1, c, o);
            for (int i = 0; i < T; i++)
                for (int d = 0; d < dh; d++) {
                    double got = a->out[((size_t)b * T + i) * a->ld + (size_t)h * dh + d];
                    worst = fmax(worst, fabs(got - o[(size_t)i * dh + d]));
                    refmax = fmax(refmax, fabs(o[(size_t)i * dh + d]));
                }
        }
    }
    free(mi);
    free(mt);
    free(tmp);
    free(o);
    free(avg);
    sink_ctx_free(sk);
    return worst / (refmax > 0 ? refmax : 1); /* max abs error relative to the largest output */
}

static void make_cond(sink_condition *c, sink_select sel, int uni, sink_tokens keys, sink_tokens q, int path, float eta,
                      sink_value val, int k, const problem *p) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "sel%d-u%d-k%d-q%d-p%d-eta%g-v%d", sel, uni, keys, q, path, eta, val);
    c->n_layers = 1;
    c->layers[0] = 3;
    c->select = sel;
    c->rank_union = uni;
    c->keys = keys;
    c->queries = q;
    c->value_path = path;
    c->eta = eta;
    c->value = val;
    c->alpha = 0.3f;
    c->k = k;
    c->step_hi = 1;
    c->seed = 77;
    if (sel == SEL_FIXED) {
        c->n_indices = k;
        for (int t = 0; t < k; t++) c->indices[t] = (t * 7 + 1) % p->a.T;
    }
}

static void test_interventions_all_combinations(void **state) {
    (void)state;
    const float etas[] = {1, 0.5f, 0.1f, 0.01f, 0};
    const int Ts[] = {12, 150};
    double worst = 0;
    int combos = 0, ties = 0;
    for (size_t ti = 0; ti < 2; ti++) {
        const int T = Ts[ti], n_img = T - T / 3, k = T < 20 ? 2 : 5;
        for (int sel = 0; sel < 3; sel++)
            for (int uni = 0; uni < 2; uni++)
                for (int keys = 0; keys < 3; keys++)
                    for (int q = 0; q < 3; q++)
                        for (int pv = 0; pv < 8; pv++) {
                            if (sel == SEL_FIXED && (uni || keys)) continue; /* fixed ignores ranking and candidates */
                            problem p;
                            problem_new(&p, 2, 2, 8, T, n_img, 1000 + T);
                            sink_condition c;
                            const int path = pv >= 5;
                            make_cond(&c, (sink_select)sel, uni, (sink_tokens)keys, (sink_tokens)q, path, path ? 0 : etas[pv],
                                      path ? (sink_value)(pv - 5) : VAL_ZERO, k, &p);
                            attn_forward(&p.a, NULL);
                            double e = check_condition(&p, &c, &ties);
                            if (e > 2e-5) fail_msg("%s (T=%d): max relative error %.3g vs brute force", c.name, T, e);
                            worst = fmax(worst, e);
                            combos++;
                            problem_free(&p);
                        }
    }
    printf("  %d combinations (select x rank_by x keys x queries x path/eta/value, T = 12 and 150): max relative error %.2e; %d near-ties skipped\n",
           combos, worst, ties);
}

/* Relative error of the plain kernel on this problem: fp32 over thousands of keys is the floor. */
static double plain_error(problem *p) {
    const attn_args *a = &p->a;
    attn_forward(a, NULL);
    double *o = malloc(sizeof(double) * a->T * a->dh), worst = 0, refmax = 0;
    sink_condition none;
    memset(&none, 0, sizeof none);
    none.eta = 1;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            brute(a, b, h, NULL, 0, 0, 0, &none, o);
            for (int i = 0; i < a->T; i++)
                for (int d = 0; d < a->dh; d++) {
                    double got = a->out[((size_t)b * a->T + i) * a->ld + (size_t)h * a->dh + d];
                    worst = fmax(worst, fabs(got - o[(size_t)i * a->dh + d]));
                    refmax = fmax(refmax, fabs(o[(size_t)i * a->dh + d]));
                }
        }
    free(o);
    return worst / refmax;
}

static void test_interventions_large(void **state) {
    (void)state;
    /* k up to 50, long sequences (SD3-medium at 1024^2 has 4429 tokens) */
    struct { int T, n_img, k, H, dh; float eta; } cases[] = {{1200, 1100, 50, 2, 16, 0}, {4500, 4096, 10, 1, 16, 0.01f}, {4500, 4096, 1, 1, 8, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        problem p;
        problem_new(&p, 1, cases[i].H, cases[i].dh, cases[i].T, cases[i].n_img, 5 + i);
        sink_condition c;
        make_cond(&c, SEL_TOPK, i == 1, TOK_ALL, TOK_IMAGE, 0, cases[i].eta, VAL_ZERO, cases[i].k, &p);
        const double floor = plain_error(&p);
        int ties = 0;
        double e = check_condition(&p, &c, &ties);
        printf("  T=%d k=%d eta=%g: max relative error %.2e vs brute force (plain kernel on the same problem: %.2e)\n",
               cases[i].T, cases[i].k, cases[i].eta, e, floor);
        /* removing the heaviest keys shrinks the outputs, so allow a few times the kernel's own error */
        assert_true(e < 5 * floor + 1e-6);
        problem_free(&p);
    }
}

static void test_dominant_sink_removal_stays_accurate(void **state) {
    (void)state;
    /* One key takes ~99% of every row: subtracting it would lose fp32 digits, so those rows must
     * be recomputed. */
    problem p;
    const int T = 300;
    problem_new(&p, 1, 1, 16, T, 250, 9);
    for (int c = 0; c < 16; c++) p.k[17 * 16 + c] = 6.0f * (c % 2 ? 1 : -1);
    for (int i = 0; i < T; i++)
        for (int c = 0; c < 16; c++) p.q[i * 16 + c] = (c % 2 ? 1.0f : -1.0f) + 0.1f * p.q[i * 16 + c];
    sink_condition c;
    make_cond(&c, SEL_TOPK, 0, TOK_ALL, TOK_ALL, 0, 0, VAL_ZERO, 1, &p);
    attn_forward(&p.a, NULL);
    int ties = 0;
    double e = check_condition(&p, &c, &ties);
    printf("  dominant sink (mass ~0.99) removed: max relative error %.2e\n", e);
    assert_true(e < 1e-5);
    problem_free(&p);
}

static void test_random_selection_reproducible(void **state) {
    (void)state;
    problem p;
    problem_new(&p, 2, 3, 8, 100, 80, 3);
    sink_condition c;
    make_cond(&c, SEL_RANDOM, 0, TOK_TEXT, TOK_IMAGE, 0, 0, VAL_ZERO, 4, &p);
    int keys[3][2 * 3 * 4];
    for (int run = 0; run < 3; run++) {
        if (run == 2) c.seed = 78;
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &c);
        sd3_hooks hk = sink_ctx_hooks(sk);
        assert_int_equal(joint_hook(&hk, 3, &p.a), 0);
        memcpy(keys[run], sink_ctx_record(sk, 0)->sel, sizeof keys[run]);
        sink_ctx_free(sk);
    }
    assert_memory_equal(keys[0], keys[1], sizeof keys[0]);
    assert_memory_not_equal(keys[0], keys[2], sizeof keys[0]);
    for (int i = 0; i < 24; i++) assert_true(keys[0][i] >= 80 && keys[0][i] < 100);
    /* k larger than the candidates: a clear error */
    c.k = 30;
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_condition(sk, &c);
    sd3_hooks hk = sink_ctx_hooks(sk);
    assert_true(joint_hook(&hk, 3, &p.a) < 0);
    assert_non_null(strstr(ss_err(), "candidate"));
    sink_ctx_free(sk);
    problem_free(&p);
}

static void test_condition_parsing_errors(void **state) {
    (void)state;
    struct { const char *json, *needle; } bad[] = {
        {"{\"layers\": [1], \"colour\": 1}", "unknown field 'colour'"},
        {"{\"layers\": 1}", "'layers'"},
        {"{\"layers\": [1], \"k\": 0}", "'k'"},
        {"{\"layers\": [1], \"k\": \"3\"}", "'k'"},
        {"{\"layers\": [1], \"eta\": 1.5}", "'eta'"},
        {"{\"layers\": [1], \"select\": \"best\"}", "'select'"},
        {"{\"layers\": [1], \"keys\": \"words\"}", "'keys'"},
        {"{\"layers\": [1], \"queries\": 3}", "'queries'"},
        {"{\"layers\": [1], \"path\": \"value\"}", "'value'"},
        {"{\"layers\": [1], \"path\": \"value\", \"value\": \"lerp\"}", "'alpha'"},
        {"{\"layers\": [1], \"select\": \"fixed\"}", "'indices'"},
        {"{\"layers\": [1], \"steps\": [0.8, 0.2]}", "'steps'"},
        {"{\"layers\": [1], \"steps\": [0, 2]}", "steps[1]"},
        {"{\"layers\": [1, 1]}", "twice"},
        {"{\"k\": 1}", "'layers'"},
        {"[1, 2]", "object"},
        {"{\"layers\": [1], \"rank_by\": \"tokens\"}", "'rank_by'"},
        {"{\"layers\": [1], \"seed\": -3}", "'seed'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_error_t je;
        json_t *o = json_loads(bad[i].json, 0, &je);
        assert_non_null(o);
        sink_condition c;
        assert_true(sink_condition_from_json(&c, o, "cond.json") < 0);
        if (!strstr(ss_err(), bad[i].needle) || !strstr(ss_err(), "cond.json")) fail_msg("%s -> '%s'", bad[i].json, ss_err());
        json_decref(o);
    }
    /* round trip */
    json_error_t je;
    json_t *o = json_loads("{\"name\":\"A3\",\"layers\":[2,0],\"select\":\"topk\",\"k\":5,\"rank_by\":\"union\",\"keys\":\"text\","
                           "\"queries\":\"all\",\"path\":\"score\",\"eta\":0.25,\"steps\":[0.1,0.6],\"seed\":4}", 0, &je);
    sink_condition a, b;
    assert_int_equal(sink_condition_from_json(&a, o, "x"), 0);
    json_t *back = sink_condition_to_json(&a);
    assert_int_equal(sink_condition_from_json(&b, back, "y"), 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_true(sink_condition_active(&a, 0.3) && !sink_condition_active(&a, 0.7) && sink_condition_active(&a, -1));
    json_decref(o);
    json_decref(back);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streaming_matches_materialized),
        cmocka_unit_test(test_fp32_kernels_match_sgemm),
        cmocka_unit_test(test_interventions_all_combinations),
        cmocka_unit_test(test_interventions_large),
        cmocka_unit_test(test_dominant_sink_removal_stays_accurate),
        cmocka_unit_test(test_random_selection_reproducible),
        cmocka_unit_test(test_condition_parsing_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
