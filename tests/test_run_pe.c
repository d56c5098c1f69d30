/* Conditions with only pe_* fields (AbsPE manipulation, sink/abspe.h) in `sinkscope run` and
 * `sinkscope report`, on a tiny random pipeline (32 x 32 images, a 16 x 16 patch grid):
 *   - `"pe_zero": "corners"` changes every image (pixels differ from the paired baseline), and
 *     a copy of one position to others does too;
 *   - `"pe_zero": []` (the no-op form) gives pixels bit-identical to the baseline (mse 0);
 *   - a position outside the run's grid is refused before any image, naming the field;
 *   - the report lists each as a condition with its description ("PE zero corners") and
 *     paired statistics against the baseline; a top-k condition is matched to its random
 *     control, but the same top-k with a pe_* edit is not (the edit is a difference). */
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
#include "io/png.h"
#include "sample/pipeline.h"

#define N_PROMPTS 3

static char *g_root;
static char g_model[512], g_prompts[512], g_conds[512], g_bad[512];

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

static const char CONDS[] =
    "[{\"name\": \"pe_corners\", \"pe_zero\": \"corners\"},"
    " {\"name\": \"pe_empty\", \"pe_zero\": []},"
    " {\"name\": \"pe_copy\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": [[3, 3], [8, 8], [12, 4]]},"
    " {\"name\": \"A1\", \"layers\": [1], \"k\": 1},"
    " {\"name\": \"A1_rand\", \"layers\": [1], \"k\": 1, \"select\": \"random\"},"
    " {\"name\": \"A1_pe\", \"layers\": [1], \"k\": 1, \"pe_zero\": \"corners\"}]\n";

static int setup(void **st) {
    (void)st;
    if (!(g_root = tc_tmpdir())) return -1;
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_prompts, sizeof g_prompts, "%s/prompts.txt", g_root);
    snprintf(g_conds, sizeof g_conds, "%s/conds.json", g_root);
    snprintf(g_bad, sizeof g_bad, "%s/bad.json", g_root);
    sd3_config tc = {.sample_size = 32, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = 24, .qk_norm = 1};
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(g_model, &tc, &ec, sw_vocabulary(), 11) < 0) return -1;
    if (tc_write_text(g_prompts, "a photo of a red circle\na photo of two squares\na photo of a blue triangle\n") ||
        tc_write_text(g_conds, CONDS) ||
        /* row 16 is outside the 16 x 16 grid (the table itself has 24 x 24 rows) */
        tc_write_text(g_bad, "[{\"name\": \"pe_out\", \"pe_zero\": [[16, 0]]}]\n"))
        return -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

static uint8_t *read_png(const char *path) {
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (png_read_rgb(path, &w, &h, &rgb) < 0) fail_msg("%s: %s", path, ss_err());
    assert_int_equal(w, 32);
    assert_int_equal(h, 32);
    return rgb;
}

/* Values of condition `cond`'s image of prompt p (seed p) that differ from the baseline's. */
static int n_differ(const char *cond, int p) {
    uint8_t *a = read_png(at("e/images/baseline/%05d_%d.png", p, p)), *b = read_png(at("e/images/%s/%05d_%d.png", cond, p, p));
    int n = 0;
    for (int i = 0; i < 3 * 32 * 32; i++) n += a[i] != b[i];
    free(a);
    free(b);
    return n;
}

static const json_t *cond_of(const json_t *summary, const char *name) {
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(summary, "conditions"), i, c) if (!strcmp(json_string_value(json_object_get(c, "name")), name))
        return c;
    return NULL;
}

static void test_run_and_report(void **st) {
    (void)st;
    char out[16384];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 3 --cfg 2 "
                    "--quiet 2>&1", tc_bin(), at("e"), g_model, g_prompts, g_conds);
    if (rc) fail_msg("run: %s", out);
    for (int p = 0; p < N_PROMPTS; p++) {
        const int nc = n_differ("pe_corners", p), ne = n_differ("pe_empty", p), ncp = n_differ("pe_copy", p);
        print_message("prompt %d: pe_corners changes %d of %d values, pe_copy %d, pe_empty %d\n", p, nc, 3 * 32 * 32, ncp, ne);
        assert_true(nc > 0);
        assert_true(ncp > 0);
        assert_int_equal(ne, 0);
    }
    rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), at("e"));
    if (rc) fail_msg("report: %s", out);
    json_error_t je;
    json_t *s = json_load_file(at("e/report/summary.json"), 0, &je);
    if (!s) fail_msg("summary.json: %s", je.text);
    const json_t *c = cond_of(s, "pe_corners");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "description")), "PE zero corners");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "pairs"), "n")), N_PROMPTS);
    const json_t *mse = json_object_get(json_object_get(c, "metrics"), "mse");
    assert_int_equal(json_integer_value(json_object_get(mse, "n")), N_PROMPTS);
    assert_true(json_number_value(json_object_get(mse, "mean")) > 0);
    assert_true(json_is_number(json_object_get(mse, "p"))); /* a paired test was made */
    assert_true(json_is_null(json_object_get(c, "random_control")));
    c = cond_of(s, "pe_copy");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "description")), "PE copy [0,-1] to [3,3],[8,8],[12,4]");
    c = cond_of(s, "pe_empty");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "description")), "PE zero []");
    mse = json_object_get(json_object_get(c, "metrics"), "mse");
    assert_int_equal(json_integer_value(json_object_get(mse, "n")), N_PROMPTS);
    assert_true(json_number_value(json_object_get(mse, "mean")) == 0);
    /* random controls: A1 has A1_rand; A1_pe (same fields plus a pe edit) has none */
    c = cond_of(s, "A1");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "random_control")), "A1_rand");
    c = cond_of(s, "A1_pe");
    assert_non_null(c);
    assert_true(json_is_null(json_object_get(c, "random_control")));
    assert_non_null(strstr(json_string_value(json_object_get(c, "description")), "PE zero corners · L1"));
    json_decref(s);
}

static void test_outside_grid_refused(void **st) {
    (void)st;
    char out[16384];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 1 --quiet 2>&1",
                    tc_bin(), at("bad"), g_model, g_prompts, g_bad);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "pe_zero") || !strstr(out, "pe_out")) fail_msg("message: %s", out);
    assert_int_not_equal(access(at("bad/records.jsonl"), F_OK), 0); /* refused before any image */
    assert_int_not_equal(access(at("bad/images"), F_OK), 0);
}

/* generate refuses it too, naming the condition file, before any step and without writing the PNG */
static void test_generate_outside_grid_refused(void **st) {
    (void)st;
    char out[16384];
    assert_int_equal(tc_write_text(at("one_bad.json"), "{\"name\": \"pe_out\", \"pe_zero\": [[16, 0]]}\n"), 0);
    int rc = tc_run(out, sizeof out, "%s generate --model '%s' --prompt 'a photo of a red circle' --out '%s' --steps 2 "
                    "--condition '%s' 2>&1", tc_bin(), g_model, at("g.png"), at("one_bad.json"));
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "one_bad.json") || !strstr(out, "pe_zero") || strstr(out, "denoising step"))
        fail_msg("message: %s", out);
    assert_int_not_equal(access(at("g.png"), F_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_and_report),
        cmocka_unit_test(test_outside_grid_refused),
        cmocka_unit_test(test_generate_outside_grid_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
