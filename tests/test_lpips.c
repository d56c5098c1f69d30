/* Tests for src/metric/lpips and `sinkscope metric lpips`: parity with the lpips package
 * (tests/fixtures/lpips-random, from tests/gen/gen_lpips_random.py: random AlexNet weights in
 * torchvision's zip .pth, random heads in lpips' legacy alex.pth, PNG pairs of several sizes),
 * im2tensor's rounding, and the errors users meet (wrong files, too-small or mismatched
 * images, bad pair lines). */
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
#include "core/err.h"
#include "io/png.h"
#include "metric/lpips.h"

#define DIR "tests/fixtures/lpips-random"
#define TOL 1e-5

static json_t *expected(void) {
    json_error_t je;
    json_t *e = json_load_file(DIR "/expected.json", JSON_PRESERVE_ORDER, &je);
    if (!e) fail_msg("%s: %s", DIR "/expected.json", je.text);
    return e;
}

static void test_parity(void **state) {
    (void)state;
    lpips_net *net;
    if (lpips_load(&net, DIR "/alexnet.pth", DIR "/alex.pth") < 0) fail_msg("%s", ss_err());
    json_t *exp = expected();
    const char *tag;
    json_t *c;
    int n = 0;
    json_object_foreach(exp, tag, c) {
        char pa[256], pb[256];
        snprintf(pa, sizeof pa, DIR "/%s", json_string_value(json_object_get(c, "a")));
        snprintf(pb, sizeof pb, DIR "/%s", json_string_value(json_object_get(c, "b")));
        int w, h, w2, h2;
        uint8_t *a, *b;
        assert_int_equal(png_read_rgb(pa, &w, &h, &a), 0);
        assert_int_equal(png_read_rgb(pb, &w2, &h2, &b), 0);
        assert_int_equal(w, json_integer_value(json_object_get(c, "w")));
        assert_int_equal(h, json_integer_value(json_object_get(c, "h")));
        double d, layers[LPIPS_LAYERS];
        if (lpips_distance_rgb(net, a, b, w, h, &d, layers) < 0) fail_msg("%s", ss_err());
        double want = json_real_value(json_object_get(c, "lpips"));
        printf("  %-12s %3dx%-3d lpips %.9f  ref %.9f  |d| %.2e\n", tag, w, h, d, want, fabs(d - want));
        if (!(fabs(d - want) <= TOL)) fail_msg("%s: lpips %.9g, package %.9g", tag, d, want);
        json_t *jl = json_object_get(c, "layers");
        for (int k = 0; k < LPIPS_LAYERS; k++) {
            double wl = json_real_value(json_array_get(jl, (size_t)k));
            if (!(fabs(layers[k] - wl) <= TOL)) fail_msg("%s layer %d: %.9g vs %.9g", tag, k, layers[k], wl);
        }
        if (!strcmp(tag, "s64x48same")) assert_true(d == 0.0);
        else assert_true(d > 0.01); /* the different pairs are far from zero: the test can fail */
        /* independent of the thread count */
        double d1, d2t;
        omp_set_num_threads(1);
        assert_int_equal(lpips_distance_rgb(net, a, b, w, h, &d1, NULL), 0);
        omp_set_num_threads(2);
        assert_int_equal(lpips_distance_rgb(net, a, b, w, h, &d2t, NULL), 0);
        assert_true(d1 == d2t && d1 == d);
        /* symmetric */
        double d2;
        assert_int_equal(lpips_distance_rgb(net, b, a, w, h, &d2, NULL), 0);
        assert_true(fabs(d2 - d) <= 1e-12 * fmax(1, d));
        free(a);
        free(b);
        n++;
    }
    assert_int_equal(n, 5);
    json_decref(exp);
    /* too small for AlexNet */
    uint8_t tiny[30 * 40 * 3] = {0};
    double d;
    assert_int_equal(lpips_distance_rgb(net, tiny, tiny, 30, 40, &d, NULL), SS_ESHAPE);
    assert_non_null(strstr(ss_err(), "30x40"));
    lpips_free(net);
}

static void test_im2tensor(void **state) {
    (void)state;
    uint8_t rgb[6] = {0, 1, 127, 128, 254, 255};
    float x[6];
    lpips_im2tensor(x, rgb, 2, 1);
    /* CHW: channel 0 holds pixels (0, 128), channel 1 (1, 254), channel 2 (127, 255) */
    assert_true(x[0] == -1.0f && x[1] == (float)(128 / 127.5 - 1.0));
    assert_true(x[2] == (float)(1 / 127.5 - 1.0) && x[3] == (float)(254 / 127.5 - 1.0));
    assert_true(x[4] == (float)(127 / 127.5 - 1.0) && x[5] == 1.0f);
    /* double then float differs from float arithmetic for some values: the rule is pinned */
    int differs = 0;
    for (int v = 0; v < 256; v++) differs |= (float)(v / 127.5 - 1.0) != (float)v / 127.5f - 1.0f;
    assert_true(differs);
}

static void test_load_errors(void **state) {
    (void)state;
    lpips_net *net = (lpips_net *)1;
    /* heads file given as the trunk: the missing tensor and the file are named */
    assert_true(lpips_load(&net, DIR "/alex.pth", DIR "/alex.pth") < 0);
    assert_null(net);
    assert_non_null(strstr(ss_err(), "alex.pth"));
    assert_non_null(strstr(ss_err(), "features.0.weight"));
    assert_true(lpips_load(&net, DIR "/alexnet.pth", "tests/fixtures/pth-cases/zip.pth") < 0);
    assert_non_null(strstr(ss_err(), "lin0.model.1.weight"));
    assert_true(lpips_load(&net, DIR "/alexnet.pth", "/nonexistent.pth") < 0);
    assert_non_null(strstr(ss_err(), "/nonexistent.pth"));
}

static void test_cli(void **state) {
    (void)state;
    char *tmp = tc_tmpdir();
    char out[8192], cmd[4096];
    /* the fixture's own pairs file, run from inside the fixture folder (relative paths) */
    char root[1024];
    assert_non_null(realpath(".", root));
    const char *bin = tc_bin();
    char binabs[1100];
    if (bin[0] == '/') snprintf(binabs, sizeof binabs, "%s", bin);
    else snprintf(binabs, sizeof binabs, "%s/%s", root, bin);
    snprintf(cmd, sizeof cmd, "cd %s && %s metric lpips --net alexnet.pth --lin alex.pth --pairs pairs.txt 2>&1", DIR,
             binabs);
    assert_int_equal(tc_run(out, sizeof out, "%s", cmd), 0);
    json_t *exp = expected();
    const char *tag;
    json_t *c;
    char *line = out;
    json_object_foreach(exp, tag, c) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) fail_msg("not JSON: %s", line);
        assert_string_equal(json_string_value(json_object_get(o, "a")), json_string_value(json_object_get(c, "a")));
        assert_string_equal(json_string_value(json_object_get(o, "b")), json_string_value(json_object_get(c, "b")));
        double d = json_number_value(json_object_get(o, "lpips"));
        assert_true(fabs(d - json_real_value(json_object_get(c, "lpips"))) <= TOL);
        assert_int_equal(json_object_size(o), 3);
        json_decref(o);
        line = nl + 1;
    }
    assert_string_equal(line, "");
    json_decref(exp);

    /* bad pair lines and images */
    const char *pf = tc_join(tmp, "pairs.txt");
    tc_write_text(pf, DIR "/s64x48_a.png\n");
    assert_int_equal(tc_run(out, sizeof out, "%s metric lpips --net %s/alexnet.pth --lin %s/alex.pth --pairs %s 2>&1",
                            bin, DIR, DIR, pf), 1);
    assert_non_null(strstr(out, "line 1"));
    tc_write_text(pf, "\n" DIR "/s64x48_a.png " DIR "/s256_b.png\n");
    assert_int_equal(tc_run(out, sizeof out, "%s metric lpips --net %s/alexnet.pth --lin %s/alex.pth --pairs %s 2>&1",
                            bin, DIR, DIR, pf), 1);
    assert_non_null(strstr(out, "line 2"));
    assert_non_null(strstr(out, "64x48"));
    tc_write_text(pf, DIR "/s64x48_a.png /nonexistent.png\n");
    assert_int_equal(tc_run(out, sizeof out, "%s metric lpips --net %s/alexnet.pth --lin %s/alex.pth --pairs %s 2>&1",
                            bin, DIR, DIR, pf), 1);
    assert_non_null(strstr(out, "/nonexistent.png"));
    assert_int_equal(tc_run(out, sizeof out, "%s metric lpips --net %s/alexnet.pth --pairs %s 2>&1", bin, DIR, pf), 2);
    assert_int_equal(tc_run(out, sizeof out, "%s metric nosuch 2>&1", bin), 2);
    assert_non_null(strstr(out, "lpips"));
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity),
        cmocka_unit_test(test_im2tensor),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
