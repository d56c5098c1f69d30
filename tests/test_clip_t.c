/* CLIP-T (src/metric/clip_t.h) and `sinkscope metric clip-t|clip-score` against transformers
 * 4.39's CLIPModel on the same random weights (BF16), images and prompts, preprocessing included
 * (open_clip 2.24's transform, the slow CLIPTokenizer with 77 tokens and truncation):
 * |cos - reference| <= 1e-5 for every pair of tests/fixtures/clip-t-random/model/expected.jsonl
 * (tests/gen/gen_clip_t.py), and against open_clip 2.24's own CLIP-T (openclip-model/). Also the
 * truncation at 77 tokens, torchmetrics' convention, and bad input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "io/png.h"
#include "metric/clip_t.h"

#define MODEL "tests/fixtures/clip-t-random/model"
#define OPENCLIP "tests/fixtures/clip-t-random/openclip-model"
#define TOK "tests/fixtures/clip-tokenizer"
#define MAXP 32

typedef struct {
    char *image[MAXP], *prompt[MAXP];
    size_t plen[MAXP];
    double cos[MAXP];
    int n;
} refs;

static void load_refs(refs *r, const char *model) {
    memset(r, 0, sizeof *r);
    char path[512];
    snprintf(path, sizeof path, "%s/expected.jsonl", model);
    char *text = tc_read_all(path, NULL);
    assert_non_null(text);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        assert_non_null(j);
        assert_true(r->n < MAXP);
        r->image[r->n] = strdup(json_string_value(json_object_get(j, "image")));
        r->prompt[r->n] = strdup(json_string_value(json_object_get(j, "prompt")));
        r->plen[r->n] = json_string_length(json_object_get(j, "prompt"));
        r->cos[r->n] = json_number_value(json_object_get(j, "clip_t"));
        r->n++;
        json_decref(j);
    }
    free(text);
    assert_true(r->n >= 8);
}

static void free_refs(refs *r) {
    for (int i = 0; i < r->n; i++) free(r->image[i]), free(r->prompt[i]);
}

static void test_library(void **state) {
    (void)state;
    refs r;
    load_refs(&r, MODEL);
    clipt *m;
    if (clipt_open(&m, MODEL, TOK) < 0) fail_msg("%s", ss_err());
    assert_int_equal(clipt_dim(m), 24);
    assert_int_equal(clipt_image_size(m), 224);
    double worst = 0;
    for (int i = 0; i < r.n; i++) {
        int w, h;
        uint8_t *rgb;
        if (png_read_rgb(r.image[i], &w, &h, &rgb) < 0) fail_msg("%s", ss_err());
        double cos;
        if (clipt_score(m, rgb, w, h, r.prompt[i], r.plen[i], &cos, r.image[i]) < 0) fail_msg("%s", ss_err());
        worst = fmax(worst, fabs(cos - r.cos[i]));
        free(rgb);
    }
    fprintf(stderr, "CLIP-T vs transformers CLIPModel: %d pairs, max |diff| %.3g\n", r.n, worst);
    assert_true(worst <= 1e-5);
    /* the same prompt cut at 77 tokens: a longer tail changes nothing */
    float a[24], b[24];
    char longer[2048];
    snprintf(longer, sizeof longer, "%s and then some more words", r.prompt[3]);
    assert_true(strlen(r.prompt[3]) > 400);
    assert_int_equal(clipt_text_embed(m, r.prompt[3], strlen(r.prompt[3]), a, "p"), 0);
    assert_int_equal(clipt_text_embed(m, longer, strlen(longer), b, "p"), 0);
    assert_memory_equal(a, b, sizeof a);
    assert_true(fabs(clipt_cosine(a, a, 24) - 1) < 1e-6);
    assert_true(clipt_clip_score(-0.2) == 0);
    assert_true(fabs(clipt_clip_score(0.31) - 31) < 1e-12);
    clipt_free(m);
    free_refs(&r);
}

static void check_cli(const char *model, const char *metric, const char *key, int scale) {
    refs r;
    load_refs(&r, model);
    char *out = malloc(1 << 16);
    int rc = tc_run(out, 1 << 16, "%s metric %s --model %s --tokenizer %s --pairs %s/pairs.jsonl 2>/dev/null",
                    tc_bin(), metric, model, TOK, model);
    assert_int_equal(rc, 0);
    int n = 0;
    double worst = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), n++) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j) fail_msg("not JSON: %s", line);
        assert_true(n < r.n);
        assert_int_equal(json_object_size(j), 3);
        assert_string_equal(json_string_value(json_object_get(j, "image")), r.image[n]);
        assert_string_equal(json_string_value(json_object_get(j, "prompt")), r.prompt[n]);
        json_t *v = json_object_get(j, key);
        assert_true(json_is_number(v));
        double want = scale ? fmax(100 * r.cos[n], 0) : r.cos[n];
        worst = fmax(worst, fabs(json_number_value(v) - want) / (scale ? 100 : 1));
        json_decref(j);
    }
    assert_int_equal(n, r.n);
    fprintf(stderr, "metric %s on %s: %d pairs, max |cos diff| %.3g\n", metric, model, n, worst);
    assert_true(worst <= 1e-5);
    free(out);
    free_refs(&r);
}

static void test_cli_clip_t(void **s) { (void)s, check_cli(MODEL, "clip-t", "clip_t", 0); }
static void test_cli_clip_score(void **s) { (void)s, check_cli(MODEL, "clip-score", "clip_score", 1); }
/* open_clip's own CLIP (ViT-B-32 layout, small), converted to a transformers folder: the score
 * open_clip itself computes (encode_image / encode_text, normalize=True; its SimpleTokenizer). */
static void test_cli_open_clip(void **s) { (void)s, check_cli(OPENCLIP, "clip-t", "clip_t", 0); }

static void expect_fail(const char *pairs_text, const char *extra, const char *want) {
    char *d = tc_tmpdir();
    char pairs[4096], buf[8192];
    snprintf(pairs, sizeof pairs, "%s/pairs.jsonl", d);
    assert_int_equal(tc_write_text(pairs, pairs_text), 0);
    int rc = tc_run(buf, sizeof buf, "{ %s metric clip-t --model %s --tokenizer %s --pairs %s %s 2>&1 >/dev/null; }",
                    tc_bin(), MODEL, TOK, pairs, extra);
    if (rc == 0 || !strstr(buf, want)) fail_msg("rc %d, wanted '%s' in: %s", rc, want, buf);
    tc_rmtree(d);
    free(d);
}

static void test_bad_input(void **state) {
    (void)state;
    expect_fail("{\"image\": \"x.png\"}\n", "", "line 1: 'prompt' is missing");
    expect_fail("\n[1, 2]\n", "", "line 2 is not a JSON object");
    expect_fail("{\"image\": \"no/such.png\", \"prompt\": \"a\"}\n", "", "no/such.png");
    expect_fail("", "", "no pairs");
    expect_fail("{\"image\": 3, \"prompt\": \"a\"}\n", "", "'image' is missing or not a string");
    char buf[4096];
    /* a vision-only folder has no text tower */
    int rc = tc_run(buf, sizeof buf, "{ %s metric clip-t --model tests/fixtures/clip-t-random/vision-p16-s64-f32 "
                    "--tokenizer %s --pairs %s/pairs.jsonl 2>&1 >/dev/null; }", tc_bin(), TOK, MODEL);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "vision-p16-s64-f32/config.json"));
    rc = tc_run(buf, sizeof buf, "%s metric clip-t --pairs x 2>&1", tc_bin());
    assert_int_equal(rc, 2);
    assert_non_null(strstr(buf, "--model and --pairs are required"));
    rc = tc_run(buf, sizeof buf, "%s metric nonesuch 2>&1", tc_bin());
    assert_int_equal(rc, 2);
    assert_non_null(strstr(buf, "unknown metric"));
    /* no tokenizer in the model folder itself */
    clipt *m = (clipt *)1;
    assert_true(clipt_open(&m, MODEL, NULL) < 0);
    assert_null(m);
    assert_non_null(strstr(ss_err(), MODEL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_library),
        cmocka_unit_test(test_cli_clip_t),
        cmocka_unit_test(test_cli_clip_score),
        cmocka_unit_test(test_cli_open_clip),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
