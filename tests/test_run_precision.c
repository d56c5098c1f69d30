/* `sinkscope run --precision f32|bf16` on a tiny random pipeline (32 x 32 images, 2 blocks):
 *   - f32 is the default: `--precision f32` and no option give byte-identical experiment.json,
 *     images and records (but "seconds"); experiment.json has no "precision" field;
 *   - bf16 records "precision": "bf16" in experiment.json; its images differ from the f32 ones
 *     (other SHA-256 in the records) but stay close pixel by pixel;
 *   - a resume in the other precision is refused naming the field 'precision', both ways;
 *     resuming in the same precision makes nothing new;
 *   - the load's precision is the runner's own: the caller's thread setting is left as it was;
 *   - the report names the precision of a bf16 experiment, and says nothing of it for f32;
 *   - --precision bogus is refused before anything is written. */
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
#include "nn/dnnl.h"
#include "core/err.h"
#include "eval/shapeworld.h"
#include "exp/runner.h"
#include "io/png.h"
#include "models/binder.h"
#include "sample/pipeline.h"
#include "sink/condition.h"

#define N_PROMPTS 3

static char *g_root;
static char g_model[512], g_prompts[512], g_conds[512];

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

/* baseline (prepended) + a top-1 removal in block 1 */
static const char CONDS[] = "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1}]\n";

static int setup(void **st) {
    (void)st;
    if (!(g_root = tc_tmpdir())) return -1;
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_prompts, sizeof g_prompts, "%s/prompts.txt", g_root);
    snprintf(g_conds, sizeof g_conds, "%s/conds.json", g_root);
    sd3_config tc = {.sample_size = 32, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = 16, .qk_norm = 1};
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(g_model, &tc, &ec, sw_vocabulary(), 5) < 0) return -1;
    if (tc_write_text(g_prompts, "a photo of a red circle\na photo of two squares\na photo of a blue triangle\n") ||
        tc_write_text(g_conds, CONDS))
        return -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

static int run_lib(const char *exp, int precision) {
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
    c.steps = 3;
    c.cfg = 2.0;
    c.quiet = 1;
    c.precision = precision;
    run_result r;
    int rc = run_experiment(&c, &r);
    free(l);
    return rc < 0 ? rc : (int)r.made;
}

static json_t *load_records(const char *path) {
    char *b = tc_read_all(path, NULL);
    assert_non_null(b);
    json_t *a = json_array();
    char *save = NULL;
    for (char *line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *r = json_loads(line, 0, NULL);
        assert_non_null(r);
        json_object_del(r, "seconds"); /* wall time: the one field that may differ */
        json_array_append_new(a, r);
    }
    free(b);
    return a;
}

static const json_t *find(const json_t *recs, const char *key) {
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) if (!strcmp(json_string_value(json_object_get(r, "key")), key)) return r;
    return NULL;
}

static uint8_t *read_png(const char *path, int *w, int *h) {
    uint8_t *rgb = NULL;
    if (png_read_rgb(path, w, h, &rgb) < 0) fail_msg("%s: %s", path, ss_err());
    return rgb;
}

static void test_default_is_f32(void **st) {
    (void)st;
    char out[8192];
    for (int k = 0; k < 2; k++) {
        int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 3 --cfg 2 "
                        "%s --quiet 2>&1", tc_bin(), at(k ? "cli_f32" : "cli_default"), g_model, g_prompts, g_conds,
                        k ? "--precision f32" : "");
        if (rc) fail_msg("run: %s", out);
    }
    size_t na, nb;
    char *a = tc_read_all(at("cli_default/experiment.json"), &na), *b = tc_read_all(at("cli_f32/experiment.json"), &nb);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    assert_null(strstr(a, "\"precision\""));
    free(a);
    free(b);
    json_t *ra = load_records(at("cli_default/records.jsonl")), *rb = load_records(at("cli_f32/records.jsonl"));
    assert_int_equal(json_array_size(ra), 2 * N_PROMPTS);
    size_t i;
    const json_t *r;
    json_array_foreach(ra, i, r) {
        const char *key = json_string_value(json_object_get(r, "key"));
        const json_t *q = find(rb, key);
        assert_non_null(q);
        assert_true(json_equal((json_t *)r, (json_t *)q));
        const char *img = json_string_value(json_object_get(r, "image"));
        size_t la, lb;
        char *x = tc_read_all(at("cli_default/%s", img), &la), *y = tc_read_all(at("cli_f32/%s", img), &lb);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(la, lb);
        assert_memory_equal(x, y, la);
        free(x);
        free(y);
    }
    json_decref(ra);
    json_decref(rb);
}

static void test_bf16_close_not_equal(void **st) {
    (void)st;
    ss_bind_set_precision(SS_PREC_F32);
    assert_int_equal(run_lib("lib_f32", SS_PREC_F32), 2 * N_PROMPTS);
    assert_int_equal(run_lib("lib_bf16", SS_PREC_BF16), 2 * N_PROMPTS);
    assert_int_equal(ss_bind_get_precision(), SS_PREC_F32); /* the caller's setting is left alone */
    json_error_t je;
    json_t *ef = json_load_file(at("lib_f32/experiment.json"), 0, &je), *eb = json_load_file(at("lib_bf16/experiment.json"), 0, &je);
    assert_non_null(ef);
    assert_non_null(eb);
    assert_null(json_object_get(ef, "precision"));
    assert_string_equal(json_string_value(json_object_get(eb, "precision")), "bf16");
    json_decref(ef);
    json_decref(eb);
    json_t *rf = load_records(at("lib_f32/records.jsonl")), *rb = load_records(at("lib_bf16/records.jsonl"));
    assert_int_equal(json_array_size(rf), 2 * N_PROMPTS);
    size_t i;
    const json_t *r;
    int n_diff = 0;
    double worst_mean = 0;
    json_array_foreach(rf, i, r) {
        const char *key = json_string_value(json_object_get(r, "key"));
        const json_t *q = find(rb, key);
        assert_non_null(q);
        const char *img = json_string_value(json_object_get(r, "image"));
        assert_string_equal(img, json_string_value(json_object_get(q, "image")));
        n_diff += strcmp(json_string_value(json_object_get(r, "image_sha256")), json_string_value(json_object_get(q, "image_sha256"))) != 0;
        int w1, h1, w2, h2;
        uint8_t *a = read_png(at("lib_f32/%s", img), &w1, &h1), *b = read_png(at("lib_bf16/%s", img), &w2, &h2);
        assert_int_equal(w1, 32);
        assert_int_equal(h1, 32);
        assert_int_equal(w2, w1);
        assert_int_equal(h2, h1);
        double sum = 0;
        int px_diff = 0;
        for (int k = 0; k < 3 * w1 * h1; k++) {
            const int d = abs((int)a[k] - (int)b[k]);
            sum += d;
            px_diff += d != 0;
        }
        const double mean = sum / (3.0 * w1 * h1);
        if (mean > worst_mean) worst_mean = mean;
        print_message("%s: bf16 vs f32: mean |diff| %.3f of 255, %d of %d values differ\n", key, mean, px_diff, 3 * w1 * h1);
        assert_true(mean < 1.0); /* measured about 0.1 level: bf16 products (8-bit mantissa) over 3 steps */
        free(a);
        free(b);
    }
    print_message("bf16 vs f32: %d of %zu images differ; worst mean |diff| %.3f of 255\n", n_diff, json_array_size(rf), worst_mean);
    assert_true(n_diff > 0);
    assert_true(worst_mean > 0);
    json_decref(rf);
    json_decref(rb);
}

static void test_resume_other_precision_refused(void **st) {
    (void)st;
    /* the folders of test_bf16_close_not_equal */
    assert_int_equal(run_lib("lib_bf16", SS_PREC_BF16), 0); /* same precision: resumes, nothing new */
    assert_true(run_lib("lib_f32", SS_PREC_BF16) < 0);
    assert_non_null(strstr(ss_err(), "field 'precision'"));
    assert_true(run_lib("lib_bf16", SS_PREC_F32) < 0);
    assert_non_null(strstr(ss_err(), "field 'precision'"));
    assert_non_null(strstr(ss_err(), "\"bf16\""));
    char out[8192];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 3 --cfg 2 "
                    "--quiet 2>&1", tc_bin(), at("lib_bf16"), g_model, g_prompts, g_conds);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "field 'precision'")) fail_msg("no field named: %s", out);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 3 --cfg 2 "
                "--precision bf16 --quiet 2>&1", tc_bin(), at("lib_f32"), g_model, g_prompts, g_conds);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "field 'precision'")) fail_msg("no field named: %s", out);
}

/* The report names the precision of a bf16 experiment (summary.json, the text header) and says
 * nothing of it for f32. */
static void test_report_names_precision(void **st) {
    (void)st;
    char out[16384];
    for (int k = 0; k < 2; k++) {
        const char *exp = k ? "lib_bf16" : "lib_f32";
        int rc = tc_run(out, sizeof out, "%s report '%s' 2>&1", tc_bin(), at("%s", exp));
        if (rc) fail_msg("report: %s", out);
        json_error_t je;
        json_t *s = json_load_file(at("%s/report/summary.json", exp), 0, &je);
        if (!s) fail_msg("summary.json: %s", je.text);
        const json_t *p = json_object_get(json_object_get(s, "experiment"), "precision");
        if (k) {
            assert_string_equal(json_string_value(p), "bf16");
            assert_non_null(strstr(out, "precision bf16"));
        } else {
            assert_null(p);
            assert_null(strstr(out, "precision"));
        }
        json_decref(s);
    }
}

static void test_bogus_refused(void **st) {
    (void)st;
    char out[8192];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --steps 1 --precision bogus 2>&1", tc_bin(),
                    at("bogus"), g_model, g_prompts);
    assert_int_equal(rc, 2);
    if (!strstr(out, "--precision") || !strstr(out, "bogus")) fail_msg("message: %s", out);
    assert_int_not_equal(access(at("bogus"), F_OK), 0); /* nothing written */
    run_config c;
    run_config_default(&c);
    c.exp_dir = at("bogus_lib");
    c.model_dir = g_model;
    c.prompts_path = g_prompts;
    c.precision = 7;
    run_result r;
    assert_true(run_experiment(&c, &r) < 0);
    assert_non_null(strstr(ss_err(), "precision"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_is_f32),
        cmocka_unit_test(test_bf16_close_not_equal),
        cmocka_unit_test(test_resume_other_precision_refused),
        cmocka_unit_test(test_report_names_precision),
        cmocka_unit_test(test_bogus_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
