/* The PixArt engine against diffusers' own outputs: the reference folders tests/fixtures/pixart-tiny-a/b
 * and our variants in tests/fixtures/pixart-variants (tests/gen/gen_pixart_variants.py): the sample,
 * every block, the self- and cross-attention mass, every intervention; the no-op guarantees;
 * thread-count independence; the masked cross-attention kernel against a materialized fp64
 * reference; damaged folders and wrong inputs; the CLI's --probe all. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "damage.h"
#include "nn/attn.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/family.h"
#include "models/pixart.h"
#include "sink/sink.h"

#define MAXB 64
#define MAXF 16

/* The reference folders, then every variant folder the generator wrote. */
static int folders(char names[MAXF][300]) {
    int n = 0;
    snprintf(names[n++], 300, "pixart-tiny-a");
    snprintf(names[n++], 300, "pixart-tiny-b");
    DIR *d = opendir(tc_path("fixtures/pixart-variants"));
    assert_non_null(d);
    struct dirent *e;
    char tmp[MAXF][300];
    int nv = 0;
    while ((e = readdir(d)) && nv < MAXF - 2)
        if (e->d_name[0] != '.') snprintf(tmp[nv++], 300, "pixart-variants/%s", e->d_name);
    closedir(d);
    qsort(tmp, (size_t)nv, 300, (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < nv; i++) memcpy(names[n++], tmp[i], 300);
    assert_true(nv >= 3);
    return n;
}

/* Masses to 1e-5, everything else to 1e-4 (the acceptance), for the reference folders and
 * our variants alike. diffusers forms the timestep sinusoid's argument in fp32 with torch's exp even
 * in float64 (src/models/pixart.c, embed); the generator checks that this noise floor of each
 * variant's reference is below 2e-6. */
static double mass_tol(const char *name) {
    (void)name;
    return 1e-5;
}

typedef struct {
    const ss_family *fam;
    void *m;
    ss_fwd_inputs io;
    char dir[1024], expected[1100];
    const char *name;
} px;

static void px_load(px *f, const char *name) {
    memset(f, 0, sizeof *f);
    f->name = name;
    snprintf(f->dir, sizeof f->dir, "%s", tc_path("fixtures/%s", name));
    snprintf(f->expected, sizeof f->expected, "%s/expected.safetensors", f->dir);
    f->fam = ss_family_find("PixArtTransformer2DModel");
    assert_non_null(f->fam);
    const ss_family *det;
    assert_int_equal(ss_family_detect(f->dir, &det), 0);
    assert_ptr_equal(det, f->fam);
    if (f->fam->load(&f->m, f->dir) < 0) fail_msg("%s", ss_err());
    char in_path[1100];
    snprintf(in_path, sizeof in_path, "%s/inputs.safetensors", f->dir);
    st_file *in;
    assert_int_equal(st_open(&in, in_path), 0);
    if (f->fam->inputs(f->m, in, in_path, &f->io) < 0) fail_msg("%s", ss_err());
    st_close(in);
}

static void px_free(px *f) {
    ss_fwd_inputs_free(&f->io);
    f->fam->free(f->m);
}

/* block outputs captured, and the sink probe / intervention through sd3-style hooks */
typedef struct {
    sd3_hooks sink;
    int have_sink;
    float *blk[MAXB];
} runner;

static int run_attention(void *ctx, const ss_site *site, const attn_args *a) {
    runner *r = ctx;
    return r->have_sink ? r->sink.attention(r->sink.ctx, site, a) : attn_forward(a, NULL);
}

static int run_block(void *ctx, ss_site_kind kind, int block, const float *x, int B, int N, int D) {
    runner *r = ctx;
    assert_int_equal(kind, SS_SITE_SELF);
    assert_true(block >= 0 && block < MAXB);
    free(r->blk[block]);
    r->blk[block] = malloc(sizeof(float) * B * N * D);
    memcpy(r->blk[block], x, sizeof(float) * B * N * D);
    return r->have_sink ? r->sink.block_output(r->sink.ctx, block, x, B, N, D) : 0;
}

/* forward with an optional sink context; blocks kept in r (may be NULL) */
static float *px_run(px *f, sink_ctx *sk, runner *keep) {
    runner local = {0}, *r = keep ? keep : &local;
    memset(r, 0, sizeof *r);
    if (sk) {
        r->sink = sink_ctx_hooks(sk);
        r->have_sink = 1;
    }
    ss_model_hooks hk = {.ctx = r, .attention = run_attention, .block_output = run_block};
    float *out = malloc(sizeof(float) * f->io.out_numel);
    if (f->fam->forward(f->m, out, &f->io, &hk) < 0) fail_msg("%s: %s", f->name, ss_err());
    if (!keep)
        for (int i = 0; i < MAXB; i++) free(local.blk[i]);
    return out;
}

static void runner_free(runner *r) {
    for (int i = 0; i < MAXB; i++) free(r->blk[i]);
}

static void check(const char *what, const char *fixture, const float *got, const float *want, size_t n, double tol) {
    if (!want) fail_msg("%s: expected tensor %s is missing", fixture, what);
    const double e = tc_rel_l2(got, want, n);
    printf("  %-40s %-42s rel L2 %.3e (tolerance %.0e)\n", fixture, what, e, tol);
    assert_true(e <= tol);
}

/* every site code of the model */
static int all_codes(const px *f, int *codes) {
    ss_site sites[2 * MAXB];
    const int n = f->fam->sites(f->m, f->io.N, f->io.S, sites, 2 * MAXB);
    for (int i = 0; i < n; i++) codes[i] = ss_site_code_of(&sites[i]);
    return n;
}

/* ---- sample, blocks and masses ---- */

static void test_forward_matches_diffusers(void **state) {
    (void)state;
    char names[MAXF][300];
    const int nf = folders(names);
    for (int k = 0; k < nf; k++) {
        px f;
        px_load(&f, names[k]);
        const pixart_model *m = f.m;
        int codes[2 * MAXB];
        const int nc = all_codes(&f, codes);
        assert_int_equal(nc, m->cfg.num_layers * (m->cfg.cross_attention_dim ? 2 : 1));
        sink_ctx *sk = sink_ctx_new();
        assert_int_equal(sink_ctx_set_probe(sk, codes, nc, TOK_IMAGE, 1, 1), 0);
        runner r;
        float *out = px_run(&f, sk, &r);
        float *want = tc_load(f.expected, "sample", NULL, NULL, NULL);
        check("sample", f.name, out, want, f.io.out_numel, 1e-4);
        free(want);
        const size_t nblk = (size_t)f.io.B * f.io.N * f.io.D;
        for (int i = 0; i < m->cfg.num_layers; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "block.%d", i);
            want = tc_load(f.expected, nm, NULL, NULL, NULL);
            check(nm, f.name, r.blk[i], want, nblk, 1e-4);
            free(want);
        }
        assert_int_equal(sink_ctx_record_count(sk), nc);
        for (int i = 0; i < sink_ctx_record_count(sk); i++) {
            const sink_record *rec = sink_ctx_record(sk, i);
            const int cross = ss_site_code_kind(rec->site) == SS_SITE_CROSS;
            char nm[64];
            snprintf(nm, sizeof nm, "%s_mass.%d", cross ? "cross" : "self", ss_site_code_block(rec->site));
            size_t n;
            want = tc_load(f.expected, nm, &n, NULL, NULL);
            assert_int_equal(rec->T, cross ? f.io.S : f.io.N);
            assert_int_equal(n, (size_t)rec->B * rec->H * rec->T);
            check(nm, f.name, rec->mass, want, n, mass_tol(f.name));
            /* padding keys: exactly no mass, and never a recorded sink */
            const float *mask = f.io.in[2];
            for (int b = 0; cross && mask && b < rec->B; b++)
                for (int h = 0; h < rec->H; h++) {
                    for (int j = 0; j < rec->T; j++)
                        if (mask[(size_t)b * rec->T + j] == 0.0f) assert_true(rec->mass[((size_t)b * rec->H + h) * rec->T + j] == 0.0f);
                    const int top = rec->top_idx[((size_t)b * rec->H + h) * rec->topk];
                    assert_true(mask[(size_t)b * rec->T + top] == 1.0f);
                }
            free(want);
        }
        free(out);
        runner_free(&r);
        sink_ctx_free(sk);
        px_free(&f);
    }
}

/* ---- interventions ---- */

static void test_interventions_match_diffusers(void **state) {
    (void)state;
    char names[MAXF][300];
    const int nf = folders(names);
    for (int k = 0; k < nf; k++) {
        px f;
        px_load(&f, names[k]);
        json_error_t je;
        json_t *list = json_load_file(tc_join(f.dir, "interventions.json"), 0, &je);
        assert_non_null(list);
        float *base = tc_load(f.expected, "sample", NULL, NULL, NULL);
        ss_site sites[2 * MAXB];
        const int ns = f.fam->sites(f.m, f.io.N, f.io.S, sites, 2 * MAXB);
        size_t i;
        json_t *obj;
        int n_self = 0, n_cross = 0;
        json_array_foreach(list, i, obj) {
            sink_condition c;
            if (sink_condition_from_json(&c, obj, "interventions.json") < 0 ||
                sink_condition_resolve(&c, sites, ns, "interventions.json") < 0 ||
                sink_condition_check_sites(&c, sites, ns, "interventions.json") < 0)
                fail_msg("%s: %s", f.name, ss_err());
            const int cross = !strcmp(json_string_value(json_object_get(obj, "attn")), "cross");
            const json_t *L = json_object_get(obj, "layers");
            assert_int_equal(c.n_layers, (int)json_array_size(L));
            for (size_t j = 0; j < json_array_size(L); j++)
                assert_true(sink_condition_has_layer(
                    &c, ss_site_code(cross ? SS_SITE_CROSS : SS_SITE_SELF, (int)json_integer_value(json_array_get(L, j)))));
            /* written back and parsed again: the same sites and attn */
            json_t *back = sink_condition_to_json(&c);
            sink_condition c2;
            assert_int_equal(sink_condition_from_json(&c2, back, "back"), 0);
            json_decref(back);
            assert_int_equal(sink_condition_resolve(&c2, sites, ns, "back"), 0);
            assert_int_equal(c2.n_layers, c.n_layers);
            assert_memory_equal(c2.layers, c.layers, sizeof(int) * c.n_layers);
            assert_int_equal(c2.attn, c.attn);
            sink_ctx *sk = sink_ctx_new();
            sink_ctx_set_condition(sk, &c);
            float *out = px_run(&f, sk, NULL);
            char name[160];
            snprintf(name, sizeof name, "sample.%s", c.name);
            float *want = tc_load(f.expected, name, NULL, NULL, NULL);
            check(name, f.name, out, want, f.io.out_numel, 1e-4);
            assert_true(tc_rel_l2(want, base, f.io.out_numel) > 1e-3); /* the intervention matters */
            assert_int_equal(sink_ctx_record_count(sk), c.n_layers);
            const float *mask = f.io.in[2];
            for (int r = 0; r < sink_ctx_record_count(sk); r++) { /* padding is never selected */
                const sink_record *rec = sink_ctx_record(sk, r);
                for (int bh = 0; cross && mask && bh < rec->B * rec->H; bh++)
                    for (int t = 0; t < rec->k; t++)
                        assert_true(mask[(size_t)(bh / rec->H) * rec->T + rec->sel[bh * rec->k + t]] == 1.0f);
            }
            *(cross ? &n_cross : &n_self) += 1;
            free(out);
            free(want);
            sink_ctx_free(sk);
        }
        assert_true(n_self >= 1 && n_cross >= 1);
        free(base);
        json_decref(list);
        px_free(&f);
    }
}

/* ---- no-op and thread-count independence ---- */

static void test_noop_and_threads_bit_identical(void **state) {
    (void)state;
    char names[MAXF][300];
    const int nf = folders(names);
    for (int k = 0; k < nf; k++) {
        px f;
        px_load(&f, names[k]);
        const size_t n = f.io.out_numel;
        float *plain = px_run(&f, NULL, NULL);
        int codes[2 * MAXB];
        const int nc = all_codes(&f, codes);
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_probe(sk, codes, nc, TOK_IMAGE, 5, 1);
        float *probed = px_run(&f, sk, NULL);
        assert_memory_equal(plain, probed, sizeof(float) * n);
        sink_ctx_free(sk);
        const char *noops[] = {"{\"name\": \"noop\", \"layers\": []}",
                               "{\"name\": \"noop\", \"layers\": [], \"attn\": \"cross\", \"k\": 3}"};
        for (int q = 0; q < 2; q++) {
            json_error_t je;
            json_t *o = json_loads(noops[q], 0, &je);
            sink_condition c;
            ss_site sites[2 * MAXB];
            const int ns = f.fam->sites(f.m, f.io.N, f.io.S, sites, 2 * MAXB);
            assert_int_equal(sink_condition_from_json(&c, o, "noop"), 0);
            assert_int_equal(sink_condition_resolve(&c, sites, ns, "noop"), 0);
            assert_int_equal(sink_condition_check_sites(&c, sites, ns, "noop"), 0);
            json_decref(o);
            sk = sink_ctx_new();
            sink_ctx_set_condition(sk, &c);
            float *noop = px_run(&f, sk, NULL);
            assert_memory_equal(plain, noop, sizeof(float) * n);
            assert_int_equal(sink_ctx_record_count(sk), 0);
            free(noop);
            sink_ctx_free(sk);
        }
        /* 1 vs 3 threads, plain and with a cross-attention intervention on every block */
        json_t *o = json_pack("{s:s, s:[i], s:s, s:s, s:i, s:s, s:f}", "name", "c", "layers", 0, "attn", "cross",
                              "select", "topk", "k", 1, "path", "score", "eta", 0.5);
        sink_condition c;
        ss_site sites[2 * MAXB];
        const int ns = f.fam->sites(f.m, f.io.N, f.io.S, sites, 2 * MAXB);
        assert_int_equal(sink_condition_from_json(&c, o, "c"), 0);
        assert_int_equal(sink_condition_resolve(&c, sites, ns, "c"), 0);
        json_decref(o);
        float *res[2][2];
        const int nt = omp_get_max_threads();
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(t ? 3 : 1);
            res[t][0] = px_run(&f, NULL, NULL);
            sk = sink_ctx_new();
            sink_ctx_set_probe(sk, codes, nc, TOK_IMAGE, 5, 1);
            sink_ctx_set_condition(sk, &c);
            res[t][1] = px_run(&f, sk, NULL);
            sink_ctx_free(sk);
        }
        omp_set_num_threads(nt);
        assert_memory_equal(plain, res[0][0], sizeof(float) * n);
        assert_memory_equal(plain, res[1][0], sizeof(float) * n);
        assert_memory_equal(res[0][1], res[1][1], sizeof(float) * n);
        assert_true(memcmp(plain, res[0][1], sizeof(float) * n) != 0);
        printf("  %-40s bit-identical: probe at all %d sites, empty conditions (self, cross), 1 and 3 threads\n", f.name, nc);
        for (int t = 0; t < 2; t++) {
            free(res[t][0]);
            free(res[t][1]);
        }
        free(plain);
        free(probed);
        px_free(&f);
    }
}

/* ---- the masked cross-attention kernel against a materialized fp64 reference ---- */

typedef struct {
    double *out, *mass, *ent, *top5; /* [B,T,ld], [B,H,Tk] over all T rows, [B,H,T], [B,H,T] */
} ref64;

static void reference64(ref64 *r, const attn_args *a) {
    const int B = a->B, H = a->H, T = a->T, Tk = a->Tk, dh = a->dh, ld = a->ld;
    r->out = calloc((size_t)B * T * ld, sizeof(double));
    r->mass = calloc((size_t)B * H * Tk, sizeof(double));
    r->ent = calloc((size_t)B * H * T, sizeof(double));
    r->top5 = calloc((size_t)B * H * T, sizeof(double));
    double *p = malloc(sizeof(double) * Tk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *q = a->q + ((size_t)b * T + i) * ld + h * dh;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < Tk; j++) {
                    const float *kk = a->k + ((size_t)b * Tk + j) * ld + h * dh;
                    double s = 0;
                    for (int d = 0; d < dh; d++) s += (double)q[d] * kk[d];
                    p[j] = s / sqrt((double)dh);
                    if (a->key_valid[(size_t)b * Tk + j]) mx = fmax(mx, p[j]);
                }
                for (int j = 0; j < Tk; j++) {
                    p[j] = a->key_valid[(size_t)b * Tk + j] ? exp(p[j] - mx) : 0.0;
                    sum += p[j];
                }
                double e = 0, top[5] = {0};
                for (int j = 0; j < Tk; j++) {
                    p[j] /= sum;
                    if (p[j] > 0) e -= p[j] * log(p[j]);
                    r->mass[((size_t)b * H + h) * Tk + j] += p[j] / T;
                    for (int t = 0; t < 5; t++)
                        if (p[j] > top[t]) {
                            for (int u = 4; u > t; u--) top[u] = top[u - 1];
                            top[t] = p[j];
                            break;
                        }
                    const float *v = a->v + ((size_t)b * Tk + j) * ld + h * dh;
                    for (int d = 0; d < dh; d++) r->out[((size_t)b * T + i) * ld + h * dh + d] += p[j] * v[d];
                }
                r->ent[((size_t)b * H + h) * T + i] = e;
                r->top5[((size_t)b * H + h) * T + i] = top[0] + top[1] + top[2] + top[3] + top[4];
            }
    free(p);
}

static double rel64(const float *got, const double *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* the k largest of x over valid keys, ties by lower index */
static void topk_of(const double *x, const uint8_t *kv, int n, int k, int *idx) {
    for (int t = 0; t < k; t++) {
        int best = -1;
        for (int j = 0; j < n; j++) {
            int used = 0;
            for (int u = 0; u < t; u++) used |= idx[u] == j;
            if (!used && kv[j] && (best < 0 || x[j] > x[best])) best = j;
        }
        idx[t] = best;
    }
}

static void test_masked_cross_kernel(void **state) {
    (void)state;
    /* (T, Tk, key chunk): T over several 64-row tiles and not a multiple of 16 row groups; Tk
     * below, equal to and above T; chunks so small that whole chunks are masked */
    const int shapes[][3] = {{70, 13, 0}, {70, 13, 4}, {3, 100, 0}, {3, 100, 7}, {17, 1, 0}, {130, 130, 32}};
    const int B = 3, H = 2, dh = 16, ld = H * dh;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int T = shapes[sh][0], Tk = shapes[sh][1];
        float *q = malloc(sizeof(float) * B * T * ld), *k = malloc(sizeof(float) * B * Tk * ld),
              *v = malloc(sizeof(float) * B * Tk * ld), *o = malloc(sizeof(float) * B * T * ld);
        tc_fill(q, (size_t)B * T * ld, 1 + sh, 2.0f);
        tc_fill(k, (size_t)B * Tk * ld, 2 + sh, 2.0f);
        tc_fill(v, (size_t)B * Tk * ld, 3 + sh, 1.0f);
        uint8_t *kv = malloc((size_t)B * Tk);
        for (int mk = 0; mk < 3; mk++) {
            /* 0: none masked; 1: all but one masked (a different one per batch element); 2: per-batch
             * differing padding at the end, as T5 pads (batch 0 none, 1 half, 2 all but the first) */
            for (int b = 0; b < B; b++)
                for (int j = 0; j < Tk; j++)
                    kv[(size_t)b * Tk + j] = mk == 0 ? 1 : mk == 1 ? j == (b * 5) % Tk : b == 0 ? 1 : b == 1 ? j < (Tk + 1) / 2 : j == 0;
            attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = ld, .q = q, .k = k, .v = v, .out = o, .Tk = Tk,
                           .key_valid = kv, .n_qspan = 2, .qend = {T / 3, T}, .key_chunk = shapes[sh][2]};
            float *m0 = malloc(sizeof(float) * B * H * Tk), *m1 = malloc(sizeof(float) * B * H * Tk);
            float *ent = malloc(sizeof(float) * B * H * T), *t5 = malloc(sizeof(float) * B * H * T);
            attn_stats st = {.mass = {m0, m1}, .row_entropy = ent, .row_top5 = t5};
            assert_int_equal(attn_forward(&a, &st), 0);
            ref64 r;
            reference64(&r, &a);
            /* mass over all rows = the row-weighted mean of the two spans' masses */
            float *mass = malloc(sizeof(float) * B * H * Tk);
            const int n0 = T / 3, n1 = T - T / 3;
            for (size_t i = 0; i < (size_t)B * H * Tk; i++) mass[i] = (float)(((double)m0[i] * n0 + (double)m1[i] * n1) / T);
            double e[4];
            double rt[4] = {1e-6, 1e-6, 1e-5, 1e-6};
            e[0] = rel64(o, r.out, (size_t)B * T * ld);
            e[1] = rel64(mass, r.mass, (size_t)B * H * Tk);
            e[2] = rel64(ent, r.ent, (size_t)B * H * T);
            e[3] = rel64(t5, r.top5, (size_t)B * H * T);
            printf("  T=%3d Tk=%3d chunk %2d mask %d: out %.2e mass %.2e entropy %.2e top5 %.2e\n", T, Tk, shapes[sh][2], mk,
                   e[0], e[1], e[2], e[3]);
            for (int t = 0; t < 4; t++) assert_true(e[t] <= rt[t]);
            for (size_t i = 0; i < (size_t)B * H * Tk; i++) /* masked keys: exactly zero mass in both spans */
                if (!kv[i / ((size_t)H * Tk) * Tk + i % Tk]) assert_true(m0[i] == 0.0f && m1[i] == 0.0f);
            /* top-3 keys of each head's mass, where the reference's ranking is not a near tie */
            for (int bh = 0; bh < B * H; bh++) {
                const uint8_t *kb = kv + (size_t)(bh / H) * Tk;
                int nv = 0;
                for (int j = 0; j < Tk; j++) nv += kb[j];
                const int K = nv < 3 ? nv : 3;
                int ir[3], ig[3];
                double mg[130];
                for (int j = 0; j < Tk; j++) mg[j] = mass[(size_t)bh * Tk + j];
                topk_of(r.mass + (size_t)bh * Tk, kb, Tk, K, ir);
                topk_of(mg, kb, Tk, K, ig);
                for (int t = 0; t < K; t++) {
                    assert_true(kb[ig[t]]);
                    if (ir[t] != ig[t]) assert_true(fabs(r.mass[(size_t)bh * Tk + ir[t]] - r.mass[(size_t)bh * Tk + ig[t]]) < 1e-6);
                }
            }
            /* a masked key cannot be re-weighted */
            if (mk) {
                int keys[3 * 2 * 1];
                for (int i = 0; i < B * H; i++) keys[i] = -1;
                int masked = -1;
                for (int j = 0; j < Tk && masked < 0; j++)
                    if (!kv[(size_t)1 * Tk + j]) masked = j;
                if (masked >= 0) {
                    keys[1 * H + 0] = masked;
                    float rm[3 * 2 * 130], rl[3 * 2 * 130];
                    attn_stats s2 = {.row_m = rm, .row_l = rl};
                    assert_true((size_t)B * H * T <= sizeof rm / sizeof rm[0]);
                    assert_int_equal(attn_forward(&a, &s2), 0);
                    attn_reweight rw = {.k = 1, .keys = keys, .r0 = 0, .r1 = T, .eta = 0.0f};
                    assert_int_equal(attn_apply_reweight(&a, &s2, &rw, NULL, NULL), SS_EARG);
                    assert_non_null(strstr(ss_err(), "masked"));
                }
            }
            free(r.out);
            free(r.mass);
            free(r.ent);
            free(r.top5);
            free(mass);
            free(m0);
            free(m1);
            free(ent);
            free(t5);
        }
        /* a batch element with every key masked: the documented error, for both entry points */
        for (int j = 0; j < Tk; j++) kv[(size_t)2 * Tk + j] = 0;
        attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = ld, .q = q, .k = k, .v = v, .out = o, .Tk = Tk, .key_valid = kv};
        assert_int_equal(attn_forward(&a, NULL), SS_EARG);
        assert_non_null(strstr(ss_err(), "batch 2 has all of its"));
        assert_int_equal(attn_reference(&a, NULL), SS_EARG);
        free(kv);
        free(q);
        free(k);
        free(v);
        free(o);
    }
}

/* ---- the value path's mean over the unmasked values (sink.c) at a cross site ---- */

static void test_cross_value_mean_ignores_padding(void **state) {
    (void)state;
    /* With every key of a head's value replaced by the mean (k = all unmasked keys, alpha 0 lerp =
     * mean), each output row is that mean: padding values (set huge here) must not enter it. */
    const int B = 2, H = 2, dh = 8, ld = H * dh, T = 5, Tk = 6;
    float q[2 * 5 * 16], k[2 * 6 * 16], v[2 * 6 * 16], o[2 * 5 * 16];
    tc_fill(q, sizeof q / sizeof q[0], 7, 1.0f);
    tc_fill(k, sizeof k / sizeof k[0], 8, 1.0f);
    tc_fill(v, sizeof v / sizeof v[0], 9, 1.0f);
    const uint8_t kv[2 * 6] = {1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0};
    for (int b = 0; b < B; b++)
        for (int j = 0; j < Tk; j++)
            if (!kv[b * Tk + j])
                for (int d = 0; d < ld; d++) v[(b * Tk + j) * ld + d] = 1e6f;
    ss_site site = {.index = 0, .block = 0, .kind = SS_SITE_CROSS, .Tq = T, .Tk = Tk, .n_qspan = 1, .n_kspan = 1,
                    .qspan = {{0, T, SS_TOK_IMAGE}}, .kspan = {{0, Tk, SS_TOK_TEXT}}, .key_valid = kv};
    attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = ld, .q = q, .k = k, .v = v, .out = o, .Tk = Tk, .key_valid = kv,
                   .n_qspan = 1, .qend = {T}};
    json_error_t je;
    json_t *obj = json_loads("{\"name\": \"m\", \"sites\": [\"cross.0\"], \"k\": 3, \"path\": \"value\", \"value\": \"mean\"}", 0, &je);
    sink_condition c;
    assert_int_equal(sink_condition_from_json(&c, obj, "m"), 0);
    json_decref(obj);
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_condition(sk, &c);
    sd3_hooks h = sink_ctx_hooks(sk);
    assert_int_equal(h.attention(h.ctx, &site, &a), 0);
    /* batch 0: 3 unmasked keys, all replaced: out = their mean exactly (up to fp32) */
    for (int hh = 0; hh < H; hh++)
        for (int d = 0; d < dh; d++) {
            double mu = 0;
            for (int j = 0; j < 3; j++) mu += v[(0 * Tk + j) * ld + hh * dh + d] / 3.0;
            for (int i = 0; i < T; i++) assert_true(fabs(o[(0 * T + i) * ld + hh * dh + d] - mu) < 1e-5);
        }
    for (size_t i = 0; i < sizeof o / sizeof o[0]; i++) assert_true(fabs(o[i]) < 10); /* no 1e6 padding leaked in */
    sink_ctx_free(sk);
}

/* ---- a removal that would leave a batch element's cross-attention no key ---- */

static void test_cross_removal_of_every_unmasked_key_refused(void **state) {
    (void)state;
    px f; /* batch element 2 keeps 1 of its 7 text tokens */
    px_load(&f, "pixart-variants/bf16-h4-grid3x5-interp1.5");
    ss_site sites[2 * MAXB];
    const int ns = f.fam->sites(f.m, f.io.N, f.io.S, sites, 2 * MAXB);
    const char *conds[] = {"{\"name\": \"r\", \"layers\": [1], \"attn\": \"cross\", \"k\": 1, \"eta\": 0.0}",
                           "{\"name\": \"r\", \"layers\": [1], \"attn\": \"cross\", \"k\": 2, \"path\": \"value\", \"value\": \"zero\"}",
                           "{\"name\": \"r\", \"layers\": [0], \"attn\": \"cross\", \"select\": \"fixed\", \"indices\": [5], \"eta\": 0.5}"};
    const char *must[] = {"no mass at all", "only 1 candidate", "masked key"};
    for (int q = 0; q < 3; q++) {
        json_error_t je;
        json_t *o = json_loads(conds[q], 0, &je);
        assert_non_null(o);
        sink_condition c;
        assert_int_equal(sink_condition_from_json(&c, o, "r"), 0);
        json_decref(o);
        assert_int_equal(sink_condition_resolve(&c, sites, ns, "r"), 0);
        assert_int_equal(sink_condition_check_sites(&c, sites, ns, "r"), 0); /* fine for the shapes: S = 7 keys */
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &c);
        runner r = {.sink = sink_ctx_hooks(sk), .have_sink = 1};
        ss_model_hooks hk = {.ctx = &r, .attention = run_attention, .block_output = run_block};
        float *out = malloc(sizeof(float) * f.io.out_numel);
        assert_true(f.fam->forward(f.m, out, &f.io, &hk) < 0);
        printf("  %s -> %s\n", conds[q], ss_err());
        assert_non_null(strstr(ss_err(), must[q]));
        assert_null(strchr(ss_err(), '\n'));
        free(out);
        runner_free(&r);
        sink_ctx_free(sk);
    }
    px_free(&f);
}

/* ---- damaged folders and wrong inputs ---- */

static void expect_load_error(const char *dir, const char *what, const char *must1, const char *must2) {
    pixart_model *m = NULL;
    assert_true(pixart_load(&m, dir) < 0);
    assert_null(m);
    const char *e = ss_err();
    printf("  %-36s -> %s\n", what, e);
    assert_non_null(strstr(e, must1));
    if (must2) assert_non_null(strstr(e, must2));
    assert_null(strchr(e, '\n'));
}

static void test_damaged_folders(void **state) {
    (void)state;
    char src[4096];
    assert_non_null(realpath(tc_path("fixtures/pixart-tiny-b"), src));
    char *dir = tc_tmpdir();
    td_write_weights(dir, src, NULL, NULL);
    td_write_config(dir, src, "num_attention_heads", json_string("three"));
    expect_load_error(dir, "num_attention_heads a string", "config.json", "num_attention_heads");
    td_write_config(dir, src, "norm_type", json_string("ada_norm_zero"));
    expect_load_error(dir, "norm_type ada_norm_zero", "config.json", "norm_type");
    td_write_config(dir, src, "activation_fn", json_string("geglu"));
    expect_load_error(dir, "activation_fn geglu", "config.json", "activation_fn");
    td_write_config(dir, src, "num_embeds_ada_norm", json_null());
    expect_load_error(dir, "num_embeds_ada_norm null", "config.json", "num_embeds_ada_norm");
    td_write_config(dir, src, "attention_head_dim", json_integer(14)); /* D = 42: not a multiple of 4 */
    expect_load_error(dir, "width 42", "config.json", "multiple of 4");
    td_write_config(dir, src, "_class_name", json_string("FluxTransformer2DModel"));
    expect_load_error(dir, "wrong _class_name", "config.json", "PixArtTransformer2DModel");
    /* the Hub's PixArt-alpha configs say Transformer2DModel: diffusers remaps it (norm_type ada_norm_single) */
    td_write_config(dir, src, "_class_name", json_string("Transformer2DModel"));
    const ss_family *fam;
    assert_int_equal(ss_family_detect(dir, &fam), 0);
    assert_string_equal(fam->name, "pixart");
    pixart_model *m0 = NULL;
    assert_int_equal(pixart_load(&m0, dir), 0);
    assert_int_equal(m0->cfg.use_additional_conditions, 1);
    pixart_free(m0);
    {
        json_error_t je;
        json_t *cfg = json_load_file(tc_join(src, "config.json"), 0, &je);
        json_object_set_new(cfg, "_class_name", json_string("Transformer2DModel"));
        json_object_set_new(cfg, "norm_type", json_string("ada_norm_zero")); /* DiT: not ours */
        assert_int_equal(json_dump_file(cfg, tc_join(dir, "config.json"), 0), 0);
        json_decref(cfg);
        assert_true(ss_family_detect(dir, &fam) < 0);
        printf("  %-36s -> %s\n", "Transformer2DModel, ada_norm_zero", ss_err());
        expect_load_error(dir, "Transformer2DModel, ada_norm_zero", "config.json", "norm_type");
    }
    td_write_config(dir, src, "interpolation_scale", json_real(-1.0));
    expect_load_error(dir, "interpolation_scale -1", "config.json", "interpolation_scale");
    /* additional conditions on a width not divisible by 3 (pixart-tiny-a: D = 32) */
    char srca[4096];
    assert_non_null(realpath(tc_path("fixtures/pixart-tiny-a"), srca));
    td_write_weights(dir, srca, NULL, NULL);
    td_write_config(dir, srca, "use_additional_conditions", json_true());
    expect_load_error(dir, "additional conditions, D 32", "config.json", "divisible by 3");
    /* sample_size 128 with a null flag means additional conditions: their embedders are missing */
    td_write_config(dir, srca, "sample_size", json_integer(128));
    expect_load_error(dir, "sample_size 128 resolves the nulls", "config.json", "divisible by 3");
    /* weights against the config */
    td_write_weights(dir, src, NULL, NULL);
    td_write_config(dir, src, "num_layers", json_integer(3));
    expect_load_error(dir, "num_layers 3 (2 in file)", "transformer_blocks.2.scale_shift_table", "missing");
    td_write_config(dir, src, "use_additional_conditions", json_false());
    pixart_model *m = NULL; /* extra tensors are ignored: loads, without the embedders */
    assert_int_equal(pixart_load(&m, dir), 0);
    assert_null(m->r1.w);
    pixart_free(m);
    td_write_config(dir, src, "caption_channels", json_integer(25));
    expect_load_error(dir, "caption_channels 25 (24)", "caption_projection.linear_1.weight", "shape");
    td_write_config(dir, src, "cross_attention_dim", json_integer(47));
    expect_load_error(dir, "cross_attention_dim 47 != width 48", "config.json", "cross_attention_dim");
    td_write_config(dir, src, "attention_head_dim", json_integer(16));
    td_write_weights(dir, src, "transformer_blocks.1.attn2.to_k.weight", NULL);
    expect_load_error(dir, "missing attn2.to_k", "transformer_blocks.1.attn2.to_k.weight", "missing");
    td_write_weights(dir, src, NULL, "adaln_single.emb.resolution_embedder.linear_2.weight");
    expect_load_error(dir, "wrong-shape resolution embedder", "diffusion_pytorch_model.safetensors",
                      "adaln_single.emb.resolution_embedder.linear_2.weight");
    td_write_weights(dir, src, "scale_shift_table", NULL);
    expect_load_error(dir, "missing final scale_shift_table", "'scale_shift_table'", "missing");
    tc_rmtree(dir);
    free(dir);
}

/* inputs.safetensors of a fixture with `add` tensors added and `drop` removed */
static void write_inputs(const char *path, const char *src, const char *drop, const char *add, const float *vals, int ndim,
                         const int64_t *shape) {
    st_file *f;
    assert_int_equal(st_open(&f, tc_join(src, "inputs.safetensors")), 0);
    st_writer *w = st_writer_new();
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
    }
    if (add) assert_int_equal(st_writer_add_f32(w, add, ST_F32, ndim, shape, vals), 0);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    st_close(f);
}

static int inputs_error(const char *model_name, const char *path) {
    const ss_family *fam = ss_family_find("PixArtTransformer2DModel");
    void *m;
    assert_int_equal(fam->load(&m, tc_path("fixtures/%s", model_name)), 0);
    st_file *in;
    assert_int_equal(st_open(&in, path), 0);
    ss_fwd_inputs io;
    int rc = fam->inputs(m, in, path, &io);
    if (rc == 0) {
        float *out = malloc(sizeof(float) * io.out_numel);
        rc = fam->forward(m, out, &io, NULL);
        free(out);
    }
    ss_fwd_inputs_free(&io);
    st_close(in);
    fam->free(m);
    return rc;
}

static void test_wrong_inputs(void **state) {
    (void)state;
    char *dir = tc_tmpdir();
    char path[1024], a[1024], b[1024]; /* tc_path's buffers rotate */
    snprintf(path, sizeof path, "%s", tc_join(dir, "in.safetensors"));
    snprintf(a, sizeof a, "%s", tc_path("fixtures/pixart-tiny-a"));
    snprintf(b, sizeof b, "%s", tc_path("fixtures/pixart-tiny-b"));
    const float res[4] = {64, 64, 64, 64}, ar[2] = {1, 1};
    const int64_t rs[2] = {2, 2}, as[2] = {2, 1};
    /* resolution given to a model without additional conditions */
    write_inputs(path, a, NULL, "resolution", res, 2, rs);
    assert_true(inputs_error("pixart-tiny-a", path) < 0);
    printf("  resolution to pixart-tiny-a -> %s\n", ss_err());
    assert_non_null(strstr(ss_err(), "'resolution' is given"));
    write_inputs(path, a, NULL, "aspect_ratio", ar, 2, as);
    assert_true(inputs_error("pixart-tiny-a", path) < 0);
    assert_non_null(strstr(ss_err(), "'aspect_ratio' is given"));
    /* missing when needed */
    write_inputs(path, b, "resolution", NULL, NULL, 0, NULL);
    assert_true(inputs_error("pixart-tiny-b", path) < 0);
    printf("  no resolution to pixart-tiny-b -> %s\n", ss_err());
    assert_non_null(strstr(ss_err(), "'resolution' is missing"));
    assert_non_null(strstr(ss_err(), "additional conditions"));
    write_inputs(path, b, "aspect_ratio", NULL, NULL, 0, NULL);
    assert_true(inputs_error("pixart-tiny-b", path) < 0);
    assert_non_null(strstr(ss_err(), "'aspect_ratio' is missing"));
    /* the forward pass itself refuses them too */
    pixart_model *m;
    assert_int_equal(pixart_load(&m, a), 0);
    float x[2 * 4 * 8 * 8] = {0}, ctx[2 * 6 * 24] = {0}, t[2] = {1, 2}, out[2 * 8 * 8 * 8];
    assert_int_equal(pixart_forward(m, out, x, ctx, NULL, t, res, ar, 2, 8, 8, 6, NULL), SS_EARG);
    assert_non_null(strstr(ss_err(), "'resolution' is given"));
    /* mask values other than 0/1, and a batch element with every text token masked */
    float mask[12];
    for (int i = 0; i < 12; i++) mask[i] = 1;
    mask[3] = 0.5f;
    assert_int_equal(pixart_forward(m, out, x, ctx, mask, t, NULL, NULL, 2, 8, 8, 6, NULL), SS_EARG);
    assert_non_null(strstr(ss_err(), "0 (padding) or 1"));
    for (int i = 0; i < 12; i++) mask[i] = i < 6;
    assert_int_equal(pixart_forward(m, out, x, ctx, mask, t, NULL, NULL, 2, 8, 8, 6, NULL), SS_EARG);
    printf("  all padding in batch 1 -> %s\n", ss_err());
    assert_non_null(strstr(ss_err(), "batch 1"));
    /* an odd latent for patch 2, and a NaN in the caption */
    assert_int_equal(pixart_forward(m, out, x, ctx, NULL, t, NULL, NULL, 2, 7, 8, 6, NULL), SS_ESHAPE);
    ctx[5] = NAN;
    assert_int_equal(pixart_forward(m, out, x, ctx, NULL, t, NULL, NULL, 2, 8, 8, 6, NULL), SS_EFORMAT);
    assert_non_null(strstr(ss_err(), "encoder_hidden_states"));
    pixart_free(m);
    /* a mask of the wrong shape */
    const float m3[3] = {1, 1, 1};
    const int64_t ms[2] = {1, 3};
    write_inputs(path, a, "encoder_attention_mask", "encoder_attention_mask", m3, 2, ms);
    assert_true(inputs_error("pixart-tiny-a", path) < 0);
    assert_non_null(strstr(ss_err(), "encoder_attention_mask"));
    tc_rmtree(dir);
    free(dir);
}

/* ---- the CLI: forward --probe all, --dump-blocks, --condition with attn ---- */

static void test_cli_forward(void **state) {
    (void)state;
    char *dir = tc_tmpdir();
    char buf[8192], fx[1024], out[1024], expd[1024], cond[1024], sd3[1024], flux[1024]; /* tc_path's buffers rotate */
    snprintf(fx, sizeof fx, "%s", tc_path("fixtures/pixart-tiny-b"));
    snprintf(out, sizeof out, "%s", tc_join(dir, "out.safetensors"));
    snprintf(expd, sizeof expd, "%s", tc_join(fx, "expected.safetensors"));
    snprintf(cond, sizeof cond, "%s", tc_join(dir, "c.json"));
    snprintf(sd3, sizeof sd3, "%s", tc_path("fixtures/sd3-tiny-a"));
    snprintf(flux, sizeof flux, "%s", tc_path("fixtures/flux-tiny-a"));
    int rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --dump-blocks --probe all",
                    tc_bin(), fx, fx, out);
    if (rc) fail_msg("%s", buf);
    const char *names[] = {"sample", "block.0", "block.1", "self_mass.0", "self_mass.1", "cross_mass.0", "cross_mass.1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t n, nw;
        float *got = tc_load(out, names[i], &n, NULL, NULL), *want = tc_load(expd, names[i], &nw, NULL, NULL);
        assert_non_null(got);
        assert_int_equal(n, nw);
        assert_true(tc_rel_l2(got, want, n) < (strstr(names[i], "mass") ? 1e-5 : 1e-4));
        free(got);
        free(want);
    }
    assert_null(tc_load(out, "mass.0", NULL, NULL, NULL));
    /* the stats name the sites */
    char *stats = tc_read_all(tc_join(dir, "out.stats.json"), NULL);
    assert_non_null(stats);
    assert_non_null(strstr(stats, "\"cross.1\""));
    free(stats);
    /* a fixture condition through the CLI */
    tc_write_text(cond, "{\"name\": \"cross_value_mean_top1\", \"attn\": \"cross\", \"layers\": [1], \"select\": \"topk\", \"k\": 1, "
                        "\"rank_by\": \"head\", \"keys\": \"all\", \"queries\": \"image\", \"path\": \"value\", \"value\": \"mean\"}");
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s", tc_bin(), fx,
                fx, out, cond);
    if (rc) fail_msg("%s", buf);
    size_t n;
    float *got = tc_load(out, "sample", &n, NULL, NULL), *want = tc_load(expd, "sample.cross_value_mean_top1", NULL, NULL, NULL);
    assert_true(tc_rel_l2(got, want, n) < 1e-4);
    free(got);
    free(want);
    /* attn on a model without self/cross sites; a PixArt site on an SD3 model */
    tc_write_text(cond, "{\"name\": \"x\", \"attn\": \"cross\", \"layers\": [0]}");
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s", tc_bin(), sd3,
                sd3, out, cond);
    printf("  attn on SD3 -> %s", buf);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "field 'attn'"));
    /* --probe all on the other families writes their own mass names */
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --probe all", tc_bin(), sd3, sd3,
                out);
    if (rc) fail_msg("%s", buf);
    float *m0 = tc_load(out, "mass.0", &n, NULL, NULL), *w0 = tc_load(tc_join(sd3, "expected.safetensors"), "mass.0", NULL, NULL, NULL);
    assert_non_null(m0);
    assert_true(tc_rel_l2(m0, w0, n) < 1e-5);
    free(m0);
    free(w0);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --probe all", tc_bin(), flux,
                flux, out);
    if (rc) fail_msg("%s", buf);
    m0 = tc_load(out, "single_mass.1", &n, NULL, NULL);
    w0 = tc_load(tc_join(flux, "expected.safetensors"), "single_mass.1", NULL, NULL, NULL);
    assert_non_null(m0);
    assert_true(tc_rel_l2(m0, w0, n) < 1e-5);
    free(m0);
    free(w0);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_diffusers),
        cmocka_unit_test(test_interventions_match_diffusers),
        cmocka_unit_test(test_noop_and_threads_bit_identical),
        cmocka_unit_test(test_masked_cross_kernel),
        cmocka_unit_test(test_cross_value_mean_ignores_padding),
        cmocka_unit_test(test_cross_removal_of_every_unmasked_key_refused),
        cmocka_unit_test(test_damaged_folders),
        cmocka_unit_test(test_wrong_inputs),
        cmocka_unit_test(test_cli_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
