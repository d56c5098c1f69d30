/* test_report: `sinkscope report` on a designed experiment folder written here (conditions with
 * known effects, missing pairs, a duplicate key, a malformed and a truncated line, an unknown
 * condition, probe and verification entries, small PNGs). Checks the statistics against
 * stats_* on the raw numbers and against scipy values (tests/data/report_scipy_ref.py), Holm,
 * dd sign and p, random-control matching, sweeps, tags, dynamics, verification, determinism,
 * the CLI, and renders report.html with headless chromium. Run from the repository root. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common.h"
#include "core/err.h"
#include "eval/stats.h"
#include "exp/report_hook.h"
#include "io/png.h"
#include "report/report.h"

/* ---- the designed experiment (mirrored in tests/data/report_scipy_ref.py) ---- */

#define NP 10
#define NS 3
enum { BASE, A1, R1, A1E01, A1E05, A3, R3, R1B, NC };
static const char *const NAME[NC] = {"baseline", "A1", "R1", "A1e01", "A1e05", "A3", "R3", "R1b"};
static const char *const COND_JSON[NC] = {
    "{\"name\": \"baseline\", \"layers\": []}",
    "{\"name\": \"A1\", \"layers\": [2], \"select\": \"topk\", \"k\": 1, \"path\": \"score\", \"eta\": 0.0}",
    "{\"name\": \"R1\", \"layers\": [2], \"select\": \"random\", \"k\": 1, \"path\": \"score\", \"eta\": 0.0, \"seed\": 7}",
    "{\"name\": \"A1e01\", \"layers\": [2], \"select\": \"topk\", \"k\": 1, \"eta\": 0.1}",
    "{\"name\": \"A1e05\", \"layers\": [2], \"select\": \"topk\", \"k\": 1, \"eta\": 0.5}",
    "{\"name\": \"A3\", \"layers\": [2], \"k\": 3}",
    "{\"name\": \"R3\", \"layers\": [2], \"select\": \"random\", \"k\": 3, \"seed\": 3}",
    "{\"name\": \"R1b\", \"layers\": [1], \"select\": \"random\", \"k\": 1}",
};
static const char *const TAGS[3] = {"colors", "counting", "position"};
static const double ETA[NC] = {1, 0, 0, 0.1, 0.5, 0, 0, 0};
static const int LAYER[NC] = {-1, 2, 2, 2, 2, 2, 2, 1};

static double u(int p, int r, int salt) { return (double)(((p * 31 + r * 17 + salt * 7) % 11) - 5) / 5.0; }

static int gv(int c, int p, int r) {
    int g0 = (p * 7 + r * 3) % 5 != 0;
    switch (c) {
    case A1: return (p * r) % 7 == 3 ? 1 : (p + r) % 4 == 0 ? 0 : g0;
    case R1: return (p + 2 * r) % 9 == 0 ? 1 - g0 : g0;
    case A1E01: return (p + r) % 6 == 0 ? 0 : g0;
    case A3: return (p + r) % 5 == 1 ? 1 - g0 : g0;
    case R3: return (p + r) % 5 == 2 ? 1 - g0 : g0;
    default: return g0;
    }
}

static double ssim_of(int c, int p, int r) {
    static const double M[NC] = {0, 0.25, 0.05, 0.15, 0.05, 0.20, 0.20, 0.04}, S[NC] = {0, 0.05, 0.02, 0.02, 0.01, 0.05, 0.05, 0.01};
    return c == BASE ? 1.0 : 1.0 - (M[c] + S[c] * u(p, r, c));
}

/* baseline (9, 2) and A1 (0, 0) are missing (the former also as a truncated last line) */
static int present(int c, int p, int r) { return !((c == BASE && p == 9 && r == 2) || (c == A1 && p == 0 && r == 0)); }

static double max_mass(int b, int s, int p) { return (b == 2 ? 0.1 : 0.02) * (1 - 0.1 * s) + 0.001 * (p % 3); }

static char *record_line(int c, int p, int r, int g) {
    int seed = p * NS + r;
    char *b = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&b, &len);
    assert_non_null(f);
    double ss = ssim_of(c, p, r), mse = (1 - ss) * 0.1;
    fprintf(f, "{\"key\": \"%s/%05d/%d\", \"condition\": \"%s\", \"condition_index\": %d, \"prompt_index\": %d, "
               "\"prompt\": \"a photo of prompt %d\", \"tag\": \"%s\", \"seed\": %d, \"image\": \"images/%s/%05d_%d.png\", ",
            NAME[c], p, seed, NAME[c], c, p, p, TAGS[p % 3], seed, NAME[c], p, seed);
    if (c == BASE) fprintf(f, "\"metrics\": {\"geneval\": %d, \"mse\": 0, \"psnr\": null, \"ssim\": 1}", g);
    else fprintf(f, "\"metrics\": {\"geneval\": %d, \"mse\": %.17g, \"psnr\": %.17g, \"ssim\": %.17g}", g, mse, -10 * log10(mse), ss);
    if (c == BASE) {
        fputs(", \"probe\": [", f);
        for (int b2 = 0; b2 < 2; b2++)
            for (int s = 0; s < 5; s++) {
                int blk = b2 * 2;
                double mm = max_mass(blk, s, p);
                /* block 0 says which text tokens (words, <eos>, <pad>) the sinks are; block 2, like
                 * records of older versions, does not */
                if (blk == 0)
                    fprintf(f, "%s{\"top1_is_word\": %g, \"top1_is_eos\": 0.25, \"top1_is_pad\": %g, ", b2 + s ? ", " : "",
                            p % 2 ? 0.5 : 0.25, p % 2 ? 0.0 : 0.25);
                fprintf(f, "%s\"block\": %d, \"step\": %d, \"t_frac\": %.17g, \"max_mass\": %.17g, \"entropy\": %.17g, "
                           "\"top5\": %.17g, \"top1_is_index0\": %g, \"top1_is_text\": 0.75, \"act_max\": %d, \"act_p95\": 8, "
                           "\"top1_keys\": %s}",
                        blk == 0 ? "" : b2 + s ? ", {" : "{", blk, s, s / 4.0, mm, 5 - 10 * mm, 0.3 + 0.01 * s,
                        p == 0 ? 0.25 : 0.0, 10 + blk,
                        blk == 2 ? "[1030, 1030, 1031, 5]" : "[1030, 7, 1030, 1030]");
            }
        fputs("]", f);
    } else {
        fputs(", \"verification\": [", f);
        double before = c == R1 || c == R3 || c == R1B ? 0.001 : 0.1;
        for (int s = 0; s < 5; s++)
            fprintf(f, "%s{\"block\": %d, \"step\": %d, \"mass_before\": %.17g, \"mass_after\": %.17g, "
                       "\"keys\": [[1030], [1030], [1031], [5]]}",
                    s ? ", " : "", LAYER[c], s, before, before * ETA[c]);
        fputs("]", f);
    }
    fputs(", \"seconds\": 1.5}\n", f);
    fclose(f);
    return b;
}

/* a/b in one of 8 rotating buffers */
static const char *pj(const char *a, const char *b) { return tc_join(a, "%s", b); }


static void make_png(const char *dir, int c, int p, int r) {
    char path[8192];
    snprintf(path, sizeof path, "%s/images/%s", dir, NAME[c]);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/images/%s/%05d_%d.png", dir, NAME[c], p, p * NS + r);
    uint8_t rgb[16 * 16 * 3];
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            uint8_t *px = rgb + (y * 16 + x) * 3;
            int in = abs(x - 8 - c) < 4 && abs(y - 8) < 4 + p % 3;
            px[0] = in ? (uint8_t)(60 * p) : 240, px[1] = in ? (uint8_t)(90 + 40 * c) : 240, px[2] = in ? 40 : 235;
        }
    assert_int_equal(png_write_rgb(path, 16, 16, rgb, NULL, 0), 0);
}

/* The experiment folder; `reversed` appends the same good records in the opposite order. */
static void make_exp(const char *dir, int reversed) {
    char path[4096];
    snprintf(path, sizeof path, "%s", pj(dir, "experiment.json"));
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "{\"sinkscope_version\": \"0.1.0\", \"model\": \"models/test\", \"model_digest\": \"d1\", \"prompts\": "
               "\"p.jsonl\", \"prompts_digest\": \"d2\", \"n_prompts\": %d, \"seeds_per_prompt\": %d, \"base_seed\": 0, "
               "\"steps\": 5, \"cfg\": 4.0, \"probe\": {\"blocks\": [0, 2], \"queries\": \"image\", \"topk\": 5}, "
               "\"conditions\": [",
            NP, NS);
    for (int c = 0; c < NC; c++) fprintf(f, "%s%s", c ? ", " : "", COND_JSON[c]);
    fputs("]}\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s", pj(dir, "images"));
    mkdir(path, 0777);
    /* every record's image exists (report checks them and leaves out records whose image is not there) */
    for (int c = 0; c < NC; c++)
        for (int p = 0; p < NP; p++)
            for (int r = 0; r < NS; r++)
                if (present(c, p, r)) make_png(dir, c, p, r);
    snprintf(path, sizeof path, "%s", pj(dir, "images/R1/00001_3.png"));
    assert_int_equal(tc_write_text(path, "not a PNG"), 0); /* a damaged image: the panel shows a placeholder */
    snprintf(path, sizeof path, "%s", pj(dir, "records.jsonl"));
    f = fopen(path, "wb");
    assert_non_null(f);
    /* a stale record of a key that is recorded again later (the runner redid the item): the
     * last line of a key is used, so this other outcome is ignored */
    char *dup = record_line(A1, 1, 0, 1 - gv(A1, 1, 0));
    fputs(dup, f);
    free(dup);
    const int total = NC * NP * NS;
    for (int i = 0; i < total; i++) {
        int k = reversed ? total - 1 - i : i;
        int c = k / (NP * NS), p = k / NS % NP, r = k % NS;
        if (!present(c, p, r)) continue;
        char *line = record_line(c, p, r, gv(c, p, r));
        fputs(line, f);
        free(line);
        if (i == 40) fputs("{\"condition\": \"A1\", this is not JSON\n", f);
        if (i == 50) fputs("{\"condition\": \"ZZ\", \"prompt_index\": 0, \"seed\": 0, \"metrics\": {}}\n", f);
    }
    char *cut = record_line(BASE, 9, 2, 1);
    cut[strlen(cut) / 2] = 0; /* a crash in the middle of the write */
    fputs(cut, f);
    free(cut);
    fclose(f);
}

/* ---- shared fixture ---- */

static char *g_dir;
static char g_exp[1024], g_out[1100];
static json_t *g_sum;

static int setup(void **st) {
    (void)st;
    g_dir = tc_tmpdir();
    if (!g_dir) return -1;
    snprintf(g_exp, sizeof g_exp, "%s", pj(g_dir, "exp"));
    mkdir(g_exp, 0777);
    make_exp(g_exp, 0);
    report_opts o;
    report_opts_default(&o);
    o.exp_dir = g_exp;
    o.print_table = 1;
    if (report_run(&o) < 0) {
        fprintf(stderr, "report_run: %s\n", ss_err());
        return -1;
    }
    snprintf(g_out, sizeof g_out, "%s", pj(g_exp, "report"));
    char path[4096];
    snprintf(path, sizeof path, "%s", pj(g_out, "summary.json"));
    json_error_t je;
    g_sum = json_load_file(path, 0, &je);
    if (!g_sum) fprintf(stderr, "summary.json: %s (line %d)\n", je.text, je.line);
    return g_sum ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    json_decref(g_sum);
    if (g_dir) tc_rmtree(g_dir);
    free(g_dir);
    return 0;
}

static json_t *cond_obj(const char *name) {
    json_t *cs = json_object_get(g_sum, "conditions"), *c;
    size_t i;
    json_array_foreach(cs, i, c) if (!strcmp(json_string_value(json_object_get(c, "name")), name)) return c;
    fail_msg("condition %s not in summary.json", name);
    return NULL;
}

static json_t *metric(const char *cond, const char *m) {
    json_t *x = json_object_get(json_object_get(cond_obj(cond), "metrics"), m);
    assert_non_null(x);
    return x;
}

/* a number, or NaN for null (an undefined statistic) */
static double numn(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (json_is_null(v)) return NAN;
    if (!json_is_number(v)) fail_msg("field %s is neither a number nor null", key);
    return json_number_value(v);
}

static double num(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) fail_msg("field %s is not a number", key);
    return json_number_value(v);
}

static double at(json_t *arr, size_t i) { return json_number_value(json_array_get(arr, i)); }

static void near(double got, double want, double rel, const char *what) {
    double err = fabs(got - want) / fmax(fabs(want), 1e-300);
    printf("  %-34s got %.17g want %.17g (rel err %.1e)\n", what, got, want, err);
    if (!(err <= rel)) fail_msg("%s: %.17g vs %.17g", what, got, want);
}

/* paired arrays of condition c against the baseline, in (prompt, seed) order */
static int pairs_gv(int c, double *base, double *cond, int *tag) {
    int n = 0;
    for (int p = 0; p < NP; p++)
        for (int r = 0; r < NS; r++)
            if (present(c, p, r) && present(BASE, p, r)) {
                base[n] = gv(BASE, p, r), cond[n] = gv(c, p, r);
                if (tag) tag[n] = p % 3;
                n++;
            }
    return n;
}

/* ---- tests ---- */

static void test_deltas_vs_stats(void **st) {
    (void)st;
    for (int c = 1; c < NC; c++) {
        double b[64], x[64], d[64], sh[64];
        int n = pairs_gv(c, b, x, NULL);
        for (int i = 0; i < n; i++) d[i] = x[i] - b[i];
        json_t *m = metric(NAME[c], "geneval");
        assert_int_equal((int)num(m, "n"), n);
        stats_ttest t;
        assert_int_equal(stats_paired_t(b, x, n, &t), 0);
        char what[64];
        snprintf(what, sizeof what, "%s Δ geneval mean", NAME[c]);
        near(num(m, "mean"), t.mean, 1e-15, what);
        snprintf(what, sizeof what, "%s Δ geneval t-test p", NAME[c]);
        if (t.zero_var) { /* no t distribution: p, TOST and verdict undefined, with the reason */
            assert_true(json_is_null(json_object_get(m, "p")) && json_is_null(json_object_get(m, "p_holm")));
            assert_true(json_is_null(json_object_get(m, "tost")));
            assert_string_equal(json_string_value(json_object_get(m, "verdict")), "no verdict");
            assert_non_null(strstr(json_string_value(json_object_get(m, "reason")), "zero variance of the paired differences"));
        } else {
            near(num(m, "p"), t.p_two, 1e-13, what);
            assert_true(json_is_null(json_object_get(m, "reason")));
        }
        double lo, hi;
        assert_int_equal(stats_bootstrap_mean_ci(d, n, 1000, 0.95, rp_seed(0, "delta", NAME[c], "geneval"), &lo, &hi), 0);
        json_t *ci = json_object_get(m, "ci95");
        assert_true(at(ci, 0) == lo && at(ci, 1) == hi);
        stats_tost tt;
        assert_int_equal(stats_tost_paired(d, n, 0.05, 0.05, &tt), 0);
        if (!t.zero_var) assert_true(num(json_object_get(m, "tost"), "p") == tt.p);
        /* the perceptual shift from the records' SSIM */
        int k = 0;
        for (int p = 0; p < NP; p++)
            for (int r = 0; r < NS; r++)
                if (present(c, p, r) && present(BASE, p, r)) sh[k++] = 1.0 - ssim_of(c, p, r);
        stats_ttest ts;
        assert_int_equal(stats_ttest_1samp(sh, k, 0, &ts), 0);
        json_t *s = metric(NAME[c], "shift");
        snprintf(what, sizeof what, "%s 1-SSIM mean", NAME[c]);
        near(num(s, "mean"), ts.mean, 1e-15, what);
        snprintf(what, sizeof what, "%s 1-SSIM p vs 0", NAME[c]);
        near(num(s, "p"), ts.p_two, 1e-12, what);
    }
    /* A1e05 equals the baseline on every item: delta 0 with zero variance. That is no evidence
     * of equivalence (nor of a difference): no p, no verdict, and the reason says why */
    json_t *m = metric("A1e05", "geneval");
    assert_true(num(m, "mean") == 0 && json_is_null(json_object_get(m, "p")));
    assert_true(json_is_null(json_object_get(m, "tost")));
    assert_string_equal(json_string_value(json_object_get(m, "verdict")), "no verdict");
    assert_string_equal(json_string_value(json_object_get(m, "reason")),
                        "zero variance of the paired differences (all 0): t = 0/0, p undefined");
}

/* scipy 1.10 values printed by tests/data/report_scipy_ref.py */
static void test_scipy_reference(void **st) {
    (void)st;
    json_t *m = metric("A1", "geneval");
    assert_int_equal((int)num(m, "n"), 28);
    near(num(m, "mean"), -0.14285714285714285, 1e-15, "A1 Δ geneval (scipy)");
    near(num(m, "p"), 0.043221733716206266, 1e-10, "A1 ttest_rel p (scipy)");
    m = metric("A1", "shift");
    near(num(m, "mean"), 0.24785714285714286, 1e-15, "A1 1-SSIM mean (scipy)");
    near(num(m, "p"), 4.6418259037496279e-26, 1e-9, "A1 1-SSIM ttest_1samp p (scipy)");
    json_t *dd = json_array_get(json_object_get(g_sum, "dd"), 0);
    assert_string_equal(json_string_value(json_object_get(dd, "sink")), "A1");
    json_t *s = json_object_get(dd, "shift"), *g = json_object_get(dd, "geneval");
    assert_int_equal((int)num(s, "n"), 28);
    near(num(s, "dd"), 0.19742857142857137, 1e-14, "dd A1-R1 1-SSIM (scipy)");
    near(num(s, "p_one_sided"), 3.0235764985628709e-21, 1e-9, "dd A1-R1 p greater (scipy)");
    near(num(g, "dd"), -0.035714285714285712, 1e-14, "dd A1-R1 geneval (scipy)");
    near(num(g, "p_one_sided"), 0.33145793523428213, 1e-10, "dd A1-R1 geneval p less (scipy)");
    json_t *dd3 = json_array_get(json_object_get(g_sum, "dd"), 1);
    near(num(json_object_get(dd3, "shift"), "dd"), -0.0055172413793103418, 1e-13, "dd A3-R3 1-SSIM (scipy)");
    near(num(json_object_get(dd3, "shift"), "p_one_sided"), 0.7028852806943785, 1e-10, "dd A3-R3 p greater (scipy)");
    json_t *sw = json_array_get(json_object_get(g_sum, "sweeps"), 0), *tr = json_object_get(sw, "trend_shift");
    assert_int_equal((int)num(tr, "n"), 86);
    near(num(tr, "slope"), -0.35329553344133285, 1e-12, "eta sweep slope (scipy linregress)");
    near(num(tr, "p"), 2.5779694504555902e-36, 1e-8, "eta sweep p (scipy linregress)");
    near(num(tr, "spearman_rho"), -0.94323905307122025, 1e-12, "eta sweep rho (scipy spearmanr)");
}

static void test_holm(void **st) {
    (void)st;
    const char *metrics[] = {"geneval", "shift", "mse", "ssim"};
    for (int k = 0; k < 4; k++) {
        double p[NC], adj[NC], want[NC];
        for (int c = 1; c < NC; c++) {
            json_t *m = metric(NAME[c], metrics[k]);
            p[c - 1] = numn(m, "p"), adj[c - 1] = numn(m, "p_holm");
            /* an undefined test has no Holm p either */
            assert_true(isnan(p[c - 1]) ? isnan(adj[c - 1]) : adj[c - 1] >= p[c - 1] && adj[c - 1] <= 1);
        }
        assert_int_equal(stats_holm(p, NC - 1, want), 0);
        for (int i = 0; i < NC - 1; i++) {
            assert_true(adj[i] == want[i] || (isnan(adj[i]) && isnan(want[i])));
            for (int j = 0; j < NC - 1; j++) /* adjusted p-values keep the order of the raw ones */
                if (p[i] < p[j]) assert_true(adj[i] <= adj[j]);
        }
    }
    /* the smallest of m p-values is multiplied by m */
    /* the smallest of the m defined p-values is multiplied by m (undefined tests do not count) */
    double p[NC - 1];
    int best = 0, m = 0;
    for (int c = 1; c < NC; c++) {
        p[c - 1] = numn(metric(NAME[c], "geneval"), "p");
        if (isnan(p[c - 1])) continue;
        m++;
        if (isnan(p[best]) || p[c - 1] < p[best]) best = c - 1;
    }
    assert_int_equal(m, NC - 3); /* A1e05 and R1b: zero variance */
    near(num(metric(NAME[best + 1], "geneval"), "p_holm"), fmin(1, p[best] * m), 1e-15, "Holm: smallest p times m");
}

static void test_dd_and_matching(void **st) {
    (void)st;
    /* controls: A1 -> R1, A3 -> R3; R1b differs in its layer and matches nothing */
    assert_string_equal(json_string_value(json_object_get(cond_obj("A1"), "random_control")), "R1");
    assert_string_equal(json_string_value(json_object_get(cond_obj("A3"), "random_control")), "R3");
    assert_true(json_is_null(json_object_get(cond_obj("A1e05"), "random_control")));
    assert_true(json_is_null(json_object_get(cond_obj("R1"), "random_control")));
    json_t *dds = json_object_get(g_sum, "dd");
    assert_int_equal(json_array_size(dds), 2);
    /* against stats_dd on the raw triples */
    double xs[64], xr[64];
    int n = 0;
    for (int p = 0; p < NP; p++)
        for (int r = 0; r < NS; r++)
            if (present(BASE, p, r) && present(A1, p, r) && present(R1, p, r))
                xs[n] = 1.0 - ssim_of(A1, p, r), xr[n] = 1.0 - ssim_of(R1, p, r), n++;
    stats_dd_result want;
    assert_int_equal(stats_dd(xs, xr, n, 1000, 0.95, rp_seed(0, "dd", "A1", "shift"), &want), 0);
    json_t *s = json_object_get(json_array_get(dds, 0), "shift");
    assert_true(num(s, "dd") > 0 && at(json_object_get(s, "ci95"), 0) > 0);
    assert_true(num(s, "dd") == want.mean && num(s, "p_one_sided") == want.p_one);
    assert_true(at(json_object_get(s, "ci95"), 0) == want.ci_lo && at(json_object_get(s, "ci95"), 1) == want.ci_hi);
    assert_true(num(s, "p_one_sided") < 1e-10);
    /* alignment dd: sign flipped to sink - random, H1 sink < random; CI mirrored exactly */
    n = 0;
    for (int p = 0; p < NP; p++)
        for (int r = 0; r < NS; r++)
            if (present(BASE, p, r) && present(A1, p, r) && present(R1, p, r))
                xs[n] = gv(A1, p, r) - gv(BASE, p, r), xr[n] = gv(R1, p, r) - gv(BASE, p, r), n++;
    assert_int_equal(stats_dd(xr, xs, n, 1000, 0.95, rp_seed(0, "dd", "A1", "geneval"), &want), 0);
    json_t *g = json_object_get(json_array_get(dds, 0), "geneval");
    assert_true(num(g, "dd") == -want.mean && num(g, "p_one_sided") == want.p_one);
    assert_true(at(json_object_get(g, "ci95"), 0) == -want.ci_hi && at(json_object_get(g, "ci95"), 1) == -want.ci_lo);
    /* equal shifts: no evidence for a sink-specific effect */
    assert_true(num(json_object_get(json_array_get(dds, 1), "shift"), "p_one_sided") > 0.5);
}

static void test_pairing_missing(void **st) {
    (void)st;
    json_t *pa = json_object_get(cond_obj("A1"), "pairs");
    assert_int_equal((int)num(pa, "n"), NP * NS - 2);
    assert_int_equal((int)num(pa, "no_baseline"), 1); /* A1 (9, 2) has no baseline */
    assert_int_equal((int)num(pa, "not_run"), 1);     /* baseline (0, 0) has no A1 */
    pa = json_object_get(cond_obj("R1"), "pairs");
    assert_int_equal((int)num(pa, "n"), NP * NS - 1);
    assert_int_equal((int)num(pa, "not_run"), 0);
    json_t *rec = json_object_get(g_sum, "records");
    assert_int_equal((int)num(rec, "invalid"), 1);
    assert_int_equal((int)num(rec, "truncated_last_line"), 1);
    assert_int_equal((int)num(rec, "duplicate_keys"), 1);
    assert_int_equal((int)num(rec, "unknown_condition"), 1);
    assert_int_equal((int)num(rec, "used"), NC * NP * NS - 2);
    assert_int_equal((int)num(cond_obj("baseline"), "records"), NP * NS - 1);
    /* PSNR: identical images would be excluded; all finite here */
    assert_int_equal((int)num(metric("A1", "psnr"), "n_identical"), 0);
    assert_int_equal((int)num(metric("A1", "psnr"), "n"), NP * NS - 2);
}

static void test_sweeps(void **st) {
    (void)st;
    json_t *sws = json_object_get(g_sum, "sweeps");
    /* eta: A1, A1e01, A1e05; k: A1 + A3 (topk) and R1 + R3 (random, different seeds: not a sweep) */
    assert_int_equal(json_array_size(sws), 2);
    json_t *s = json_array_get(sws, 0);
    assert_string_equal(json_string_value(json_object_get(s, "param")), "eta");
    json_t *cs = json_object_get(s, "conditions"), *ds = json_object_get(s, "doses");
    assert_int_equal(json_array_size(cs), 3);
    assert_string_equal(json_string_value(json_array_get(cs, 0)), "A1");
    assert_string_equal(json_string_value(json_array_get(cs, 2)), "A1e05");
    assert_true(at(ds, 0) == 0 && at(ds, 1) == 0.1 && at(ds, 2) == 0.5); /* as written, not float32 */
    /* the alignment trend against stats_dose_trend on the raw pairs */
    double dose[128], y[128];
    int n = 0;
    const int sc[3] = {A1, A1E01, A1E05};
    for (int j = 0; j < 3; j++)
        for (int p = 0; p < NP; p++)
            for (int r = 0; r < NS; r++)
                if (present(sc[j], p, r) && present(BASE, p, r))
                    dose[n] = ETA[sc[j]], y[n++] = gv(sc[j], p, r) - gv(BASE, p, r);
    stats_trend t;
    assert_int_equal(stats_dose_trend(dose, y, n, &t), 0);
    json_t *tr = json_object_get(s, "trend_geneval");
    assert_true(num(tr, "slope") == t.slope && num(tr, "p") == t.p && num(tr, "spearman_rho") == t.rho);
    s = json_array_get(sws, 1);
    assert_string_equal(json_string_value(json_object_get(s, "param")), "k");
    assert_string_equal(json_string_value(json_array_get(json_object_get(s, "conditions"), 1)), "A3");
}

static void test_tags(void **st) {
    (void)st;
    json_t *tags = json_object_get(g_sum, "tags");
    assert_int_equal(json_array_size(tags), 3);
    for (int t = 0; t < 3; t++) {
        json_t *to = json_array_get(tags, (size_t)t);
        assert_string_equal(json_string_value(json_object_get(to, "tag")), TAGS[t]);
        double b[64], x[64], d[64];
        int tag[64], n = pairs_gv(A1, b, x, tag), m = 0;
        for (int i = 0; i < n; i++)
            if (tag[i] == t) d[m++] = x[i] - b[i];
        json_t *cell = json_array_get(json_object_get(to, "conditions"), 0);
        assert_string_equal(json_string_value(json_object_get(cell, "name")), "A1");
        assert_int_equal((int)num(cell, "n"), m);
        char what[64];
        snprintf(what, sizeof what, "tag %s: A1 Δ", TAGS[t]);
        near(num(cell, "delta"), stats_mean(d, m), 1e-15, what);
        double lo, hi;
        assert_int_equal(stats_bootstrap_mean_ci(d, m, 1000, 0.95, rp_seed(0, "tag", "A1", TAGS[t]), &lo, &hi), 0);
        assert_true(at(json_object_get(cell, "ci95"), 0) == lo && at(json_object_get(cell, "ci95"), 1) == hi);
    }
}

static void test_dynamics(void **st) {
    (void)st;
    json_t *dyn = json_object_get(g_sum, "dynamics");
    assert_int_equal((int)num(dyn, "baseline_images"), NP * NS - 1);
    json_t *blocks = json_object_get(dyn, "blocks");
    assert_int_equal(json_array_size(blocks), 2);
    for (int bi = 0; bi < 2; bi++) {
        json_t *b = json_array_get(blocks, (size_t)bi);
        int blk = 2 * bi;
        assert_int_equal((int)num(b, "block"), blk);
        json_t *steps = json_object_get(b, "steps");
        assert_int_equal(json_array_size(steps), 5);
        for (int s = 0; s < 5; s++) {
            double sum = 0, i0 = 0;
            int n = 0;
            for (int p = 0; p < NP; p++)
                for (int r = 0; r < NS; r++)
                    if (present(BASE, p, r)) sum += max_mass(blk, s, p), i0 += p == 0 ? 0.25 : 0, n++;
            json_t *so = json_array_get(steps, (size_t)s);
            assert_int_equal((int)num(so, "n"), n);
            assert_true(num(so, "t_frac") == s / 4.0);
            near(num(so, "max_mass"), sum / n, 1e-13, "MaxMass mean at (block, step)");
            near(num(so, "index0"), i0 / n, 1e-13, "index-0 overlap at (block, step)");
        }
        json_t *peak = json_object_get(b, "max_mass_peak");
        assert_int_equal((int)num(peak, "step"), 0); /* MaxMass falls with t/T */
        json_t *k = json_object_get(b, "top1_keys");
        assert_int_equal((int)num(k, "n"), (NP * NS - 1) * 5 * 4);
        assert_int_equal((int)num(k, "min"), blk == 2 ? 5 : 7);
        assert_int_equal((int)num(k, "max"), blk == 2 ? 1031 : 1030);
        assert_int_equal((int)num(k, "distinct"), blk == 2 ? 3 : 2);
        json_t *top = json_array_get(json_object_get(k, "most_frequent"), 0);
        assert_int_equal((int)at(top, 0), 1030);
        assert_int_equal((int)at(top, 1), (NP * NS - 1) * 5 * (blk == 2 ? 2 : 3));
        near(num(json_object_get(b, "mean"), "text"), 0.75, 1e-15, "text share");
        /* word / <eos> / <pad> shares: means over the baseline's entries where present, null where not */
        double words = 0;
        int n = 0;
        for (int p = 0; p < NP; p++)
            for (int r = 0; r < NS; r++)
                if (present(BASE, p, r)) words += p % 2 ? 0.5 : 0.25, n++;
        json_t *mean = json_object_get(b, "mean");
        if (blk == 0) {
            near(num(mean, "word"), words / n, 1e-13, "word share");
            near(num(mean, "eos"), 0.25, 1e-15, "<eos> share");
            near(num(mean, "word") + num(mean, "eos") + num(mean, "pad"), 0.75, 1e-13, "word + <eos> + <pad> = text");
        } else {
            assert_true(json_is_null(json_object_get(mean, "word")) && json_is_null(json_object_get(mean, "pad")));
        }
    }
}

static void test_verification(void **st) {
    (void)st;
    json_t *v = json_object_get(g_sum, "verification");
    assert_int_equal(json_array_size(v), NC - 1);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *c = json_array_get(v, i), *row = json_array_get(json_object_get(c, "blocks"), 0);
        const char *name = json_string_value(json_object_get(c, "condition"));
        int ci = 0;
        while (strcmp(NAME[ci], name)) ci++;
        assert_int_equal((int)num(row, "block"), LAYER[ci]);
        assert_int_equal((int)num(row, "n"), 5 * (NP * NS - (ci == A1)));
        near(num(row, "keys_per_entry"), 4, 0, "keys per entry");
        near(num(row, "distinct_keys_per_entry"), 3, 0, "distinct keys per entry");
        if (ETA[ci] == 0) {
            assert_true(json_is_true(json_object_get(row, "removed")));
            assert_true(json_is_null(json_object_get(row, "reduction"))); /* infinite */
        } else {
            assert_true(json_is_false(json_object_get(row, "removed")));
            near(num(row, "reduction"), 1 / ETA[ci], 1e-6, "reduction factor = 1/eta");
        }
    }
}


static const char *const OUT_FILES[] = {"summary.json", "report.html", "conditions.csv", "dd.csv", "dose_response.csv",
                                        "dose_trend.csv", "tags.csv", "dynamics.csv", "dynamics_blocks.csv", "locality.csv",
                                        "verification.csv"};
#define N_OUT (sizeof OUT_FILES / sizeof OUT_FILES[0])

static void same_file(const char *d1, const char *d2, const char *name) {
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/%s", d1, name);
    snprintf(p2, sizeof p2, "%s/%s", d2, name);
    size_t n1, n2;
    char *a = tc_read_all(p1, &n1), *b = tc_read_all(p2, &n2);
    if (!a || !b) fail_msg("missing %s or %s", p1, p2);
    if (n1 != n2 || memcmp(a, b, n1)) fail_msg("%s differs between %s and %s", name, d1, d2);
    printf("  %-20s %zu bytes, identical\n", name, n1);
    free(a), free(b);
}

static void test_determinism(void **st) {
    (void)st;
    char out2[4096];
    snprintf(out2, sizeof out2, "%s", pj(g_dir, "second"));
    report_opts o;
    report_opts_default(&o);
    o.exp_dir = g_exp;
    o.out_dir = out2;
    assert_int_equal(report_run(&o), 0);
    for (size_t i = 0; i < N_OUT; i++) same_file(g_out, out2, OUT_FILES[i]);
    /* the same records appended in the opposite order: the same numbers (notes name other lines) */
    char exp2[4096], out3[4200];
    snprintf(exp2, sizeof exp2, "%s", pj(g_dir, "reversed"));
    mkdir(exp2, 0777);
    make_exp(exp2, 1);
    snprintf(out3, sizeof out3, "%s", pj(exp2, "report"));
    o.exp_dir = exp2;
    o.out_dir = NULL;
    assert_int_equal(report_run(&o), 0);
    for (size_t i = 2; i < N_OUT; i++) same_file(g_out, out3, OUT_FILES[i]);
    /* another bootstrap seed moves the CIs, not the means */
    char out4[4096];
    snprintf(out4, sizeof out4, "%s", pj(g_dir, "seed5"));
    o.exp_dir = g_exp;
    o.out_dir = out4;
    o.seed = 5;
    assert_int_equal(report_run(&o), 0);
    char p[4096];
    snprintf(p, sizeof p, "%s", pj(out4, "summary.json"));
    json_t *s2 = json_load_file(p, 0, NULL);
    assert_non_null(s2);
    json_t *c2 = json_object_get(json_array_get(json_object_get(s2, "conditions"), 1), "metrics");
    json_t *m1 = metric("A1", "shift"), *m2 = json_object_get(c2, "shift");
    assert_true(num(m1, "mean") == num(m2, "mean"));
    assert_true(at(json_object_get(m1, "ci95"), 0) != at(json_object_get(m2, "ci95"), 0));
    json_decref(s2);
}

static void test_html_content(void **st) {
    (void)st;
    char path[4096];
    snprintf(path, sizeof path, "%s", pj(g_out, "report.html"));
    size_t n;
    char *h = tc_read_all(path, &n);
    assert_non_null(h);
    /* self-contained: no external fetches */
    assert_null(strstr(h, "src=\"http"));
    assert_null(strstr(h, "href=\"http"));
    assert_null(strstr(h, "<script src"));
    assert_null(strstr(h, "<link"));
    const char *must[] = {"<svg", "data:image/png;base64,iVBORw0KGgo", "Table 1.", "Intervention verification", "removed",
                          "Dose", "index-0 overlap", "counting", "class=missing"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        if (!strstr(h, must[i])) fail_msg("report.html lacks '%s'", must[i]);
    int svgs = 0;
    for (const char *p = h; (p = strstr(p, "<svg")); p++) svgs++;
    printf("  report.html: %zu bytes, %d inline SVG charts\n", n, svgs);
    assert_true(svgs >= 8);
    free(h);
}

static void test_render_chromium(void **st) {
    (void)st;
    char buf[4096];
    if (tc_run(buf, sizeof buf, "command -v chromium") != 0)
        fail_msg("chromium is not installed: the report.html rendering test needs it "
                 "(apt-get install -y chromium; CI installs it through .ci/install-deps.sh)");
    char png[4096], html[4096], prof[4096];
    snprintf(png, sizeof png, "%s", pj(g_dir, "render.png"));
    snprintf(html, sizeof html, "%s", pj(g_out, "report.html"));
    snprintf(prof, sizeof prof, "%s", pj(g_dir, "chromium-profile"));
    char abs_html[4096];
    assert_non_null(realpath(html, abs_html));
    int rc = tc_run(buf, sizeof buf,
                    "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                    "--disable-background-networking --disable-component-update --disable-sync --user-data-dir='%s' "
                    "--screenshot='%s' --window-size=1200,2000 'file://%s'",
                    prof, png, abs_html);
    if (rc != 0 || access(png, R_OK) != 0) fail_msg("chromium failed (exit %d): %s", rc, buf);
    int w, h;
    uint8_t *rgb;
    assert_int_equal(png_read_rgb(png, &w, &h, &rgb), 0);
    assert_int_equal(w, 1200);
    assert_int_equal(h, 2000);
    size_t nonwhite = 0, npx = (size_t)w * h;
    /* distinct colours, coarsely quantized (anti-aliasing makes many near-duplicates) */
    static unsigned char seen[4096];
    memset(seen, 0, sizeof seen);
    int distinct = 0, chroma = 0;
    for (size_t i = 0; i < npx; i++) {
        const uint8_t *p = rgb + 3 * i;
        if (p[0] < 245 || p[1] < 245 || p[2] < 245) nonwhite++;
        int q = (p[0] >> 4) << 8 | (p[1] >> 4) << 4 | (p[2] >> 4);
        if (!seen[q]) seen[q] = 1, distinct++;
        int mx = p[0] > p[1] ? (p[0] > p[2] ? p[0] : p[2]) : (p[1] > p[2] ? p[1] : p[2]);
        int mn = p[0] < p[1] ? (p[0] < p[2] ? p[0] : p[2]) : (p[1] < p[2] ? p[1] : p[2]);
        chroma += mx - mn > 60; /* coloured chart marks, not just grey text */
    }
    printf("  render: %dx%d, %.1f%% non-white, %d distinct colours (4-bit), %d saturated pixels\n", w, h,
           100.0 * nonwhite / npx, distinct, chroma);
    free(rgb);
    assert_true(nonwhite > npx / 100);
    assert_true(distinct >= 20);
    assert_true(chroma > 500);
}

static const char *bin(void) { return tc_bin(); }

static void test_cli(void **st) {
    (void)st;
    if (access(bin(), X_OK) != 0) {
        printf("  %s not built: skipping the CLI test\n", bin());
        skip();
    }
    char buf[16384];
    int rc = tc_run(buf, sizeof buf, "%s report --help", bin());
    assert_int_equal(rc, 0);
    assert_non_null(strstr(buf, "usage: sinkscope report EXP"));
    assert_non_null(strstr(buf, "--margin"));
    assert_int_equal(tc_run(buf, sizeof buf, "%s report", bin()), 2);
    assert_non_null(strstr(buf, "no experiment folder"));
    assert_int_equal(tc_run(buf, sizeof buf, "%s report %s --margin 2", bin(), g_exp), 2);
    assert_int_equal(tc_run(buf, sizeof buf, "%s report %s --bogus", bin(), g_exp), 2);
    rc = tc_run(buf, sizeof buf, "%s report %s/does-not-exist", bin(), g_dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(buf, "experiment.json"));
    char out[4096];
    snprintf(out, sizeof out, "%s", pj(g_dir, "cli-out"));
    rc = tc_run(buf, sizeof buf, "%s report --margin 0.1 %s --bootstrap 200 --seed 3 --out %s", bin(), g_exp, out);
    printf("%s", buf);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(buf, "Δ alignment"));
    assert_non_null(strstr(buf, "MaxMass"));
    assert_non_null(strstr(buf, "A1e05"));
    char p[4096];
    snprintf(p, sizeof p, "%s", pj(out, "summary.json"));
    json_t *s = json_load_file(p, 0, NULL);
    assert_non_null(s);
    json_t *set = json_object_get(s, "settings");
    assert_true(num(set, "equivalence_margin_geneval") == 0.1);
    assert_int_equal((int)num(set, "bootstrap_resamples"), 200);
    json_decref(s);
    rc = tc_run(buf, sizeof buf, "%s report %s --quiet --out %s", bin(), g_exp, out);
    assert_int_equal(rc, 0);
    assert_int_equal((int)strlen(buf), 0);
}

/* degenerate folders: only a baseline, no records, a single pair, no experiment.json */
static void test_edge_cases(void **st) {
    (void)st;
    char d[4096], p[4096];
    snprintf(d, sizeof d, "%s", pj(g_dir, "edge"));
    mkdir(d, 0777);
    snprintf(p, sizeof p, "%s", pj(d, "experiment.json"));
    assert_true(report_main(d, 0) < 0); /* no experiment.json */
    printf("  missing experiment.json: %s\n", ss_err());
    assert_non_null(strstr(ss_err(), "experiment.json"));
    assert_int_equal(tc_write_text(p, "{\"conditions\": [{\"name\": \"baseline\", \"layers\": []}]}"), 0);
    assert_int_equal(report_main(d, 0), 0); /* no records.jsonl at all */
    assert_int_equal(tc_write_text(p, "{\"conditions\": [{\"name\": \"baseline\", \"layers\": []}, {\"name\": \"X\", \"layers\": [0], "
                  "\"select\": \"sideways\"}, {\"name\": \"Y\", \"layers\": [0]}]}"), 0);
    snprintf(p, sizeof p, "%s", pj(d, "records.jsonl"));
    assert_int_equal(tc_write_text(p, "{\"condition\": \"baseline\", \"prompt_index\": 0, \"seed\": 0, \"metrics\": {\"geneval\": 1}}\n"
                  "{\"condition\": \"X\", \"prompt_index\": 0, \"seed\": 0, \"metrics\": {\"geneval\": 0, \"ssim\": 0.5}}\n"
                  "{\"condition\": \"Y\", \"prompt_index\": 0, \"seed\": 0, \"metrics\": {\"ssim\": 1, \"mse\": 0}}\n"), 0);
    assert_int_equal(report_main(d, 0), 0); /* one pair: means, no tests; X unparsed but still paired */
    snprintf(p, sizeof p, "%s", pj(d, "report/summary.json"));
    json_t *s = json_load_file(p, 0, NULL);
    assert_non_null(s);
    json_t *x = json_object_get(json_object_get(json_array_get(json_object_get(s, "conditions"), 1), "metrics"), "geneval");
    assert_true(num(x, "mean") == -1);
    assert_true(json_is_null(json_object_get(x, "p")));
    json_t *y = json_object_get(json_object_get(json_array_get(json_object_get(s, "conditions"), 2), "metrics"), "psnr");
    assert_int_equal((int)num(y, "n_identical"), 1); /* MSE 0 without PSNR: identical image */
    assert_true(json_array_size(json_object_get(s, "notes")) >= 1);
    json_decref(s);
    snprintf(p, sizeof p, "%s", pj(d, "experiment.json"));
    assert_int_equal(tc_write_text(p, "{\"conditions\": [{\"name\": \"baseline\", \"layers\": []}, {\"name\": \"baseline\", \"layers\": []}]}"), 0);
    assert_true(report_main(d, 0) < 0);
    assert_non_null(strstr(ss_err(), "twice"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deltas_vs_stats), cmocka_unit_test(test_scipy_reference), cmocka_unit_test(test_holm),
        cmocka_unit_test(test_dd_and_matching), cmocka_unit_test(test_pairing_missing), cmocka_unit_test(test_sweeps),
        cmocka_unit_test(test_tags),            cmocka_unit_test(test_dynamics),        cmocka_unit_test(test_verification),
        cmocka_unit_test(test_determinism),     cmocka_unit_test(test_html_content),    cmocka_unit_test(test_render_chromium),
        cmocka_unit_test(test_cli),             cmocka_unit_test(test_edge_cases),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
