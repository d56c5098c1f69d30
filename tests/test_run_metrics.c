/* `sinkscope run --metrics clip_t,lpips --metric-weights DIR` on a tiny random pipeline (32 x 32
 * images) with the random-weight fixtures (tests/fixtures/clip-t-random/model with
 * tests/fixtures/clip-tokenizer, tests/fixtures/lpips-random):
 *   - every record's metrics.clip_t is what `sinkscope metric clip-t` gives for its PNG and
 *     prompt; every condition record's metrics.lpips is what `sinkscope metric lpips` gives for
 *     it and its paired baseline; the baseline has no lpips; a no-op condition has lpips 0;
 *   - experiment.json names the metrics and the weights' SHA-256; a resume with other metrics
 *     or other weights is refused naming the field; moving the weights folder is not a change;
 *   - unknown metric names and missing weight files are refused before any image is made;
 *   - without --metrics neither records nor experiment.json mention them;
 *   - the report's summary.json carries the ΔCLIP-T (TOST margin 0.002) and LPIPS ΔΔ rows. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "eval/shapeworld.h"
#include "exp/runner.h"
#include "io/fsutil.h"
#include "sample/pipeline.h"
#include "sink/condition.h"

#define CLIP_FIX "tests/fixtures/clip-t-random/model"
#define CLIP_OTHER "tests/fixtures/clip-t-random/openclip-model"
#define TOK_FIX "tests/fixtures/clip-tokenizer"
#define LPIPS_FIX "tests/fixtures/lpips-random"

static char *g_root, g_cwd[2048];
static char g_model[512], g_prompts[512], g_conds[512], g_w[512], g_w2[512], g_w3[512];

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

static int link_into(const char *src_rel, const char *dst) {
    char src[4096];
    snprintf(src, sizeof src, "%s/%s", g_cwd, src_rel);
    return symlink(src, dst);
}

/* A --metric-weights folder: clip/ from `clip_model` plus the tokenizer, lpips/ from the fixture. */
static int make_weights(const char *dir, const char *clip_model) {
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/clip", dir);
    if (ss_mkdir_p(p) < 0) return -1;
    snprintf(p, sizeof p, "%s/lpips", dir);
    if (ss_mkdir_p(p) < 0) return -1;
    const char *clip_files[] = {"config.json", "model.safetensors"};
    const char *tok_files[] = {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", clip_model, clip_files[i]);
        snprintf(q, sizeof q, "%s/clip/%s", dir, clip_files[i]);
        if (link_into(p, q)) return -1;
    }
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, TOK_FIX "/%s", tok_files[i]);
        snprintf(q, sizeof q, "%s/clip/%s", dir, tok_files[i]);
        if (link_into(p, q)) return -1;
    }
    const char *lp[] = {"alexnet.pth", "alex.pth"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, LPIPS_FIX "/%s", lp[i]);
        snprintf(q, sizeof q, "%s/lpips/%s", dir, lp[i]);
        if (link_into(p, q)) return -1;
    }
    return 0;
}

/* baseline (prepended) + A1 + noop + its random control */
static const char CONDS[] = "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1}, {\"name\": \"noop\", \"layers\": []},"
                            " {\"name\": \"A1_rand\", \"layers\": [1], \"k\": 1, \"select\": \"random\"}]\n";

static int setup(void **st) {
    (void)st;
    if (!getcwd(g_cwd, sizeof g_cwd)) return -1;
    if (!(g_root = tc_tmpdir())) return -1;
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_prompts, sizeof g_prompts, "%s/prompts.txt", g_root);
    snprintf(g_conds, sizeof g_conds, "%s/conds.json", g_root);
    snprintf(g_w, sizeof g_w, "%s/weights", g_root);
    snprintf(g_w2, sizeof g_w2, "%s/weights-moved", g_root);
    snprintf(g_w3, sizeof g_w3, "%s/weights-other", g_root);
    sd3_config tc = {.sample_size = 32, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = 16, .qk_norm = 1};
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(g_model, &tc, &ec, sw_vocabulary(), 3) < 0) return -1;
    if (tc_write_text(g_prompts, "a photo of a red circle\na photo of two squares\na photo of a blue triangle\n") ||
        tc_write_text(g_conds, CONDS))
        return -1;
    if (make_weights(g_w, CLIP_FIX) || make_weights(g_w2, CLIP_FIX) || make_weights(g_w3, CLIP_OTHER)) return -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

static int run_lib(const char *exp, unsigned metrics, const char *weights) {
    sink_condition *l = NULL;
    int n = 0;
    if (sink_condition_list_load(&l, &n, g_conds) < 0) return -1;
    run_config c;
    run_config_default(&c);
    c.exp_dir = at("%s", exp);
    c.model_dir = g_model;
    c.prompts_path = g_prompts;
    c.conds = l;
    c.n_conds = n;
    c.conditions_source = "test";
    c.steps = 2;
    c.cfg = 1.0;
    c.quiet = 1;
    c.metrics = metrics;
    c.metric_weights = weights;
    run_result r;
    int rc = run_experiment(&c, &r);
    free(l);
    return rc < 0 ? rc : (int)r.made;
}

static json_t *load_records(const char *path, int *n) {
    char *b = tc_read_all(path, NULL);
    assert_non_null(b);
    json_t *a = json_array();
    char *save = NULL;
    for (char *line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *r = json_loads(line, 0, NULL);
        assert_non_null(r);
        json_array_append_new(a, r);
    }
    free(b);
    *n = (int)json_array_size(a);
    return a;
}

static const json_t *find(const json_t *recs, const char *cond, int prompt) {
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) {
        if (!strcmp(json_string_value(json_object_get(r, "condition")), cond) &&
            json_integer_value(json_object_get(r, "prompt_index")) == prompt)
            return r;
    }
    return NULL;
}

/* The one number `key` of every line a metric command printed, in order. */
static int parse_outputs(char *out, const char *key, double *v, int cap) {
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line && n < cap; line = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(line, 0, NULL);
        if (!o) fail_msg("not JSON: %s", line);
        const json_t *x = json_object_get(o, key);
        if (!json_is_number(x)) fail_msg("no %s in %s", key, line);
        v[n++] = json_number_value(x);
        json_decref(o);
    }
    return n;
}

static void test_run_clip_t_lpips(void **st) {
    (void)st;
    char out[65536];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 2 --cfg 1 "
                    "--metrics clip_t,lpips --metric-weights '%s' --quiet 2>&1", tc_bin(), at("e1"), g_model, g_prompts,
                    g_conds, g_w);
    if (rc) fail_msg("run: %s", out);
    int n;
    json_t *recs = load_records(at("e1/records.jsonl"), &n);
    assert_int_equal(n, 12); /* 3 prompts x (baseline + 3) */
    /* clip_t of every image, against `sinkscope metric clip-t` */
    FILE *f = fopen(at("clip_pairs.jsonl"), "w");
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *o = json_pack("{s:s, s:O}", "image", at("e1/%s", json_string_value(json_object_get(r, "image"))), "prompt",
                              json_object_get(r, "prompt"));
        char *s = json_dumps(o, JSON_COMPACT);
        fprintf(f, "%s\n", s);
        free(s);
        json_decref(o);
    }
    fclose(f);
    rc = tc_run(out, sizeof out, "%s metric clip-t --model '%s/clip' --pairs '%s'", tc_bin(), g_w, at("clip_pairs.jsonl"));
    if (rc) fail_msg("metric clip-t: %s", out);
    double ref[64];
    assert_int_equal(parse_outputs(out, "clip_t", ref, 64), n);
    double worst = 0;
    int distinct = 0;
    json_array_foreach(recs, i, r) {
        const json_t *m = json_object_get(r, "metrics");
        const json_t *c = json_object_get(m, "clip_t");
        if (!json_is_number(c)) fail_msg("record %zu has no metrics.clip_t", i);
        const double d = fabs(json_number_value(c) - ref[i]);
        if (d > worst) worst = d;
        distinct += i > 0 && ref[i] != ref[0];
        /* recorded with 9 significant digits */
        assert_true(d <= 1e-8 * fmax(1, fabs(ref[i])));
    }
    assert_true(distinct > 0); /* the images (and prompts) are not all alike */
    print_message("clip_t: %d records, max |record - metric clip-t| = %.3g\n", n, worst);
    /* lpips of every condition image against its baseline, against `sinkscope metric lpips` */
    f = fopen(at("lpips_pairs.txt"), "w");
    int n_pairs = 0;
    const json_t *cond_rec[64];
    json_array_foreach(recs, i, r) {
        const char *cond = json_string_value(json_object_get(r, "condition"));
        const json_t *m = json_object_get(r, "metrics");
        if (!strcmp(cond, "baseline")) {
            assert_null(json_object_get(m, "lpips"));
            continue;
        }
        const json_t *b = find(recs, "baseline", (int)json_integer_value(json_object_get(r, "prompt_index")));
        assert_non_null(b);
        fprintf(f, "%s %s\n", at("e1/%s", json_string_value(json_object_get(r, "image"))),
                at("e1/%s", json_string_value(json_object_get(b, "image"))));
        cond_rec[n_pairs++] = r;
    }
    fclose(f);
    assert_int_equal(n_pairs, 9);
    rc = tc_run(out, sizeof out, "%s metric lpips --net '%s/lpips/alexnet.pth' --lin '%s/lpips/alex.pth' --pairs '%s'",
                tc_bin(), g_w, g_w, at("lpips_pairs.txt"));
    if (rc) fail_msg("metric lpips: %s", out);
    assert_int_equal(parse_outputs(out, "lpips", ref, 64), n_pairs);
    worst = 0;
    int nonzero = 0;
    for (int k = 0; k < n_pairs; k++) {
        const json_t *l = json_object_get(json_object_get(cond_rec[k], "metrics"), "lpips");
        if (!json_is_number(l)) fail_msg("condition record %d has no metrics.lpips", k);
        const double v = json_number_value(l), d = fabs(v - ref[k]);
        if (d > worst) worst = d;
        assert_true(d <= 1e-8 * fmax(1, fabs(ref[k])));
        const char *cond = json_string_value(json_object_get(cond_rec[k], "condition"));
        if (!strcmp(cond, "noop")) assert_true(v == 0.0);
        else nonzero += v > 0;
    }
    assert_true(nonzero > 0); /* the interventions change the images */
    print_message("lpips: %d pairs, max |record - metric lpips| = %.3g\n", n_pairs, worst);
    json_decref(recs);
    /* experiment.json: the selection and the weights' digests */
    json_t *e = json_load_file(at("e1/experiment.json"), 0, NULL);
    assert_non_null(e);
    const json_t *mo = json_object_get(e, "metrics");
    assert_non_null(mo);
    assert_int_equal(json_array_size(json_object_get(mo, "names")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(mo, "names"), 0)), "clip_t");
    const json_t *wd = json_object_get(mo, "weights_sha256");
    assert_int_equal(json_object_size(wd), 8); /* 4 required + 2 present tokenizer files for clip, 2 for lpips */
    assert_int_equal(strlen(json_string_value(json_object_get(wd, "lpips/alex.pth"))), 64);
    assert_int_equal(strlen(json_string_value(json_object_get(wd, "clip/model.safetensors"))), 64);
    json_decref(e);
}

/* The report of e1 (made by test_run_clip_t_lpips): the new rows, their margin, their values. */
static double mean_of(const json_t *recs, const char *cond, const char *key, int minus_base) {
    size_t i;
    const json_t *r;
    double s = 0;
    int n = 0;
    json_array_foreach(recs, i, r) {
        if (strcmp(json_string_value(json_object_get(r, "condition")), cond)) continue;
        double v = json_number_value(json_object_get(json_object_get(r, "metrics"), key));
        if (minus_base) {
            const json_t *b = find(recs, "baseline", (int)json_integer_value(json_object_get(r, "prompt_index")));
            v -= json_number_value(json_object_get(json_object_get(b, "metrics"), key));
        }
        s += v, n++;
    }
    return s / n;
}

static void test_report_rows(void **st) {
    (void)st;
    char out[65536];
    int rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), at("e1"));
    if (rc) fail_msg("report: %s", out);
    json_t *sm = json_load_file(at("e1/report/summary.json"), 0, NULL);
    assert_non_null(sm);
    int n;
    json_t *recs = load_records(at("e1/records.jsonl"), &n);
    const json_t *set = json_object_get(sm, "settings");
    assert_true(json_real_value(json_object_get(set, "equivalence_margin_clip_t")) == 0.002);
    assert_true(json_real_value(json_object_get(set, "equivalence_margin_geneval")) == 0.05);
    size_t i;
    const json_t *c;
    int seen = 0;
    json_array_foreach(json_object_get(sm, "conditions"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const json_t *m = json_object_get(c, "metrics"), *ct = json_object_get(m, "clip_t"), *lp = json_object_get(m, "lpips");
        if (!strcmp(name, "baseline")) continue;
        assert_non_null(ct);
        assert_non_null(lp);
        assert_int_equal(json_integer_value(json_object_get(ct, "n")), 3);
        const double dct = json_number_value(json_object_get(ct, "mean")), mlp = json_number_value(json_object_get(lp, "mean"));
        assert_true(fabs(dct - mean_of(recs, name, "clip_t", 1)) < 1e-12);
        assert_true(fabs(mlp - mean_of(recs, name, "lpips", 0)) < 1e-12);
        if (!strcmp(name, "noop")) {
            assert_true(mlp == 0 && dct == 0); /* the same image as the baseline */
        } else {
            const json_t *tost = json_object_get(ct, "tost");
            if (!json_is_object(tost)) fail_msg("%s: clip_t.tost is not an object (%s)", name,
                                                json_string_value(json_object_get(ct, "reason")));
            assert_true(json_real_value(json_object_get(tost, "margin")) == 0.002);
            assert_non_null(json_object_get(ct, "verdict"));
            assert_true(json_is_number(json_object_get(lp, "p")));
        }
        seen++;
    }
    assert_int_equal(seen, 3);
    const json_t *dd = json_array_get(json_object_get(sm, "dd"), 0);
    assert_non_null(dd);
    assert_string_equal(json_string_value(json_object_get(dd, "sink")), "A1");
    const json_t *dl = json_object_get(dd, "lpips");
    assert_non_null(dl);
    assert_int_equal(json_integer_value(json_object_get(dl, "n")), 3);
    assert_string_equal(json_string_value(json_object_get(dl, "h1")), "sink > random");
    const double want = mean_of(recs, "A1", "lpips", 0) - mean_of(recs, "A1_rand", "lpips", 0);
    assert_true(fabs(json_number_value(json_object_get(dl, "dd")) - want) < 1e-12);
    json_decref(recs);
    json_decref(sm);
    /* the CSVs and the HTML carry them too */
    char *t = tc_read_all(at("e1/report/conditions.csv"), NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, ",clip_t,3,"));
    assert_non_null(strstr(t, ",lpips,3,"));
    free(t);
    t = tc_read_all(at("e1/report/dd.csv"), NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, "A1,A1_rand,lpips,3,"));
    free(t);
    t = tc_read_all(at("e1/report/report.html"), NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, "Table 1b."));
    free(t);
    /* an experiment without them: no such rows */
    assert_true(run_lib("e4", 0, NULL) == 12);
    rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), at("e4"));
    if (rc) fail_msg("report: %s", out);
    t = tc_read_all(at("e4/report/summary.json"), NULL);
    assert_non_null(t);
    assert_null(strstr(t, "clip_t"));
    assert_null(strstr(t, "lpips"));
    free(t);
    t = tc_read_all(at("e4/report/report.html"), NULL);
    assert_null(strstr(t, "Table 1b."));
    free(t);
}

static void test_resume_refuses_other_metrics(void **st) {
    (void)st;
    const unsigned both = RUN_METRIC_CLIP_T | RUN_METRIC_LPIPS;
    assert_int_equal(run_lib("e2", both, g_w), 12);
    assert_int_equal(run_lib("e2", both, g_w), 0);  /* resume: nothing to do */
    assert_int_equal(run_lib("e2", both, g_w2), 0); /* the same weights in another folder: fine */
    assert_true(run_lib("e2", RUN_METRIC_CLIP_T, g_w) < 0);
    if (!strstr(ss_err(), "field 'metrics.names'")) fail_msg("%s", ss_err());
    assert_true(run_lib("e2", both, g_w3) < 0);
    if (!strstr(ss_err(), "field 'metrics.weights_sha256.clip/")) fail_msg("%s", ss_err());
    assert_true(run_lib("e2", 0, NULL) < 0);
    if (!strstr(ss_err(), "field 'metrics'")) fail_msg("%s", ss_err());
    /* and an experiment made without metrics refuses to gain them */
    assert_int_equal(run_lib("e3", 0, NULL), 12);
    assert_true(run_lib("e3", RUN_METRIC_LPIPS, g_w) < 0);
    if (!strstr(ss_err(), "field 'metrics'")) fail_msg("%s", ss_err());
    /* without --metrics nothing mentions them */
    char *t = tc_read_all(at("e3/experiment.json"), NULL);
    assert_non_null(t);
    assert_null(strstr(t, "metric"));
    free(t);
    t = tc_read_all(at("e3/records.jsonl"), NULL);
    assert_non_null(t);
    assert_null(strstr(t, "clip_t"));
    assert_null(strstr(t, "lpips"));
    free(t);
}

static void test_errors_before_any_image(void **st) {
    (void)st;
    char out[8192];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 1 "
                    "--metrics clip_t,hps --metric-weights '%s' 2>&1", tc_bin(), at("bad1"), g_model, g_prompts, g_conds, g_w);
    assert_int_equal(rc, 2);
    if (!strstr(out, "--metrics: unknown metric 'hps'")) fail_msg("%s", out);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --steps 1 --metrics lpips 2>&1", tc_bin(),
                at("bad1"), g_model, g_prompts);
    assert_int_equal(rc, 2);
    if (!strstr(out, "--metrics needs --metric-weights")) fail_msg("%s", out);
    assert_int_equal(access(at("bad1"), F_OK), -1);
    unsigned m = 0;
    assert_true(run_parse_metrics("lpips,lpips", "--metrics", &m) < 0);
    if (!strstr(ss_err(), "'lpips' given twice")) fail_msg("%s", ss_err());
    assert_int_equal(run_parse_metrics("lpips,clip_t", "--metrics", &m), 0);
    assert_int_equal(m, RUN_METRIC_CLIP_T | RUN_METRIC_LPIPS);
    /* a missing weight file is named, and nothing is made */
    assert_int_equal(unlink(at("weights-moved/lpips/alex.pth")), 0);
    assert_true(run_lib("bad2", RUN_METRIC_LPIPS, g_w2) < 0);
    if (!strstr(ss_err(), "weights-moved/lpips/alex.pth is missing")) fail_msg("%s", ss_err());
    assert_int_equal(access(at("bad2/experiment.json"), F_OK), -1);
    assert_int_equal(access(at("bad2/records.jsonl"), F_OK), -1);
    assert_int_equal(access(at("bad2/images"), F_OK), -1);
    /* clip_t alone does not need the lpips files */
    assert_int_equal(run_lib("ok2", RUN_METRIC_CLIP_T, g_w2), 12);
    assert_int_equal(unlink(at("weights-moved/clip/merges.txt")), 0);
    assert_true(run_lib("bad3", RUN_METRIC_CLIP_T, g_w2) < 0);
    if (!strstr(ss_err(), "weights-moved/clip/merges.txt is missing")) fail_msg("%s", ss_err());
    assert_int_equal(access(at("bad3/images"), F_OK), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_clip_t_lpips),
        cmocka_unit_test(test_report_rows),
        cmocka_unit_test(test_resume_refuses_other_metrics),
        cmocka_unit_test(test_errors_before_any_image),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
