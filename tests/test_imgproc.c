/* PIL-exact bicubic resize and open_clip's validation transform (src/metric/imgproc.h) against
 * PIL 9.4 and open_clip 2.24 / torchvision 0.14 (tests/fixtures/clip-t-random/preprocess, made by
 * tests/gen/gen_clip_t.py): every 8-bit resize byte-exact, the normalised tensor <= 1e-6. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "io/png.h"
#include "metric/imgproc.h"

#define PRE "fixtures/clip-t-random/preprocess"

static uint8_t *load_png(const char *name, int *w, int *h) {
    uint8_t *rgb = NULL;
    int rc = png_read_rgb(tc_path(PRE "/%s", name), w, h, &rgb);
    if (rc < 0) fail_msg("%s", ss_err());
    return rgb;
}

/* Count differing bytes; print the first. */
static size_t diff_bytes(const uint8_t *a, const uint8_t *b, size_t n, const char *what) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i] && bad++ == 0) fprintf(stderr, "%s: byte %zu: %d vs PIL %d\n", what, i, a[i], b[i]);
    return bad;
}

static void test_pil_resize(void **state) {
    (void)state;
    static const int cases[][4] = {{300, 200, 150, 317}, {97, 61, 224, 224}, {513, 257, 64, 500},
                                   {640, 720, 223, 225}, {31, 300, 5, 7},    {225, 224, 224, 224}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int w, h, ew, eh;
        char src[64], ref[64];
        snprintf(src, sizeof src, "img_%dx%d.png", cases[c][0], cases[c][1]);
        snprintf(ref, sizeof ref, "pil_%dx%d_%dx%d.png", cases[c][0], cases[c][1], cases[c][2], cases[c][3]);
        uint8_t *in = load_png(src, &w, &h), *want = load_png(ref, &ew, &eh), *got = NULL;
        assert_int_equal(ew, cases[c][2]);
        assert_int_equal(eh, cases[c][3]);
        assert_int_equal(ip_resize_bicubic_u8(in, w, h, ew, eh, &got), 0);
        assert_int_equal(diff_bytes(got, want, (size_t)ew * eh * 3, ref), 0);
        free(in), free(want), free(got);
    }
}

static void test_open_clip_crop(void **state) {
    (void)state;
    static const int sizes[][2] = {{224, 224}, {300, 200}, {200, 301}, {97, 61},
                                   {513, 257}, {225, 224}, {640, 720}, {31, 300}};
    float *t = malloc(3 * 224 * 224 * sizeof *t);
    for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
        int w, h, cw, ch;
        char src[64], ref[64];
        snprintf(src, sizeof src, "img_%dx%d.png", sizes[c][0], sizes[c][1]);
        snprintf(ref, sizeof ref, "crop_img_%dx%d.png", sizes[c][0], sizes[c][1]);
        uint8_t *in = load_png(src, &w, &h), *want = load_png(ref, &cw, &ch), *got = NULL;
        assert_int_equal(cw, 224);
        assert_int_equal(ch, 224);
        assert_int_equal(ip_clip_preprocess(in, w, h, 224, IP_CLIP_MEAN, IP_CLIP_STD, t, &got, src), 0);
        assert_int_equal(diff_bytes(got, want, 224 * 224 * 3, ref), 0);
        free(in), free(want), free(got);
    }
    free(t);
}

static void test_normalised(void **state) {
    (void)state;
    const char *names[] = {"img_300x200", "img_31x300"};
    float *t = malloc(3 * 224 * 224 * sizeof *t);
    for (int c = 0; c < 2; c++) {
        int w, h, ndim;
        int64_t shape[8];
        char src[64], key[64];
        snprintf(src, sizeof src, "%s.png", names[c]);
        snprintf(key, sizeof key, "pixel_values.%s", names[c]);
        uint8_t *in = load_png(src, &w, &h);
        size_t n;
        float *want = tc_load(tc_path(PRE "/expected.safetensors"), key, &n, shape, &ndim);
        assert_non_null(want);
        assert_int_equal(n, 3 * 224 * 224);
        assert_int_equal(ip_clip_preprocess(in, w, h, 224, IP_CLIP_MEAN, IP_CLIP_STD, t, NULL, src), 0);
        double worst = 0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)t[i] - want[i]));
        fprintf(stderr, "%s: max |diff| %.3g\n", key, worst);
        assert_true(worst <= 1e-6);
        free(in), free(want);
    }
    free(t);
}

static void test_rounding_rules(void **state) {
    (void)state;
    int l, t, ow, oh;
    /* torchvision: int(round(d / 2)), round half to even */
    ip_center_crop_offsets(225, 224, 224, 224, &l, &t);
    assert_int_equal(l, 0); /* round(0.5) = 0 */
    ip_center_crop_offsets(227, 229, 224, 224, &l, &t);
    assert_int_equal(l, 2); /* round(1.5) = 2 */
    assert_int_equal(t, 2); /* round(2.5) = 2 */
    ip_resize_shorter_size(300, 200, 224, &ow, &oh);
    assert_int_equal(ow, 336);
    assert_int_equal(oh, 224);
    ip_resize_shorter_size(97, 61, 224, &ow, &oh); /* int(224 * 97 / 61) = int(356.19...) */
    assert_int_equal(ow, 356);
    uint8_t px[3] = {1, 2, 3}, *o = NULL;
    assert_true(ip_resize_bicubic_u8(px, 0, 1, 2, 2, &o) < 0);
    assert_null(o);
    assert_non_null(strstr(ss_err(), "out of range"));
    /* a constant image stays constant at any size (weights sum to one in fixed point) */
    assert_int_equal(ip_resize_bicubic_u8(px, 1, 1, 5, 3, &o), 0);
    for (int i = 0; i < 15; i++) assert_memory_equal(o + 3 * i, px, 3);
    free(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pil_resize),
        cmocka_unit_test(test_open_clip_crop),
        cmocka_unit_test(test_normalised),
        cmocka_unit_test(test_rounding_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
