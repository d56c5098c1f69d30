/* Tests for src/nn/dnnl_conv (oneDNN's f32 direct convolution in row bands): against the
 * existing im2col convolution (nn/conv.h op_conv2d_tiled) and a direct double loop, over kernel
 * sizes 1 and 3, strides 1 and 2, padding 0 and 1, Downsample2D's end pad, channel counts that are
 * and are not multiples of oneDNN's 16-channel blocks, odd sizes, with and without bias, one band
 * and many; results bit-identical at 1, 2 and 3 threads; the switch-off and the weight cache. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn/conv.h"
#include "nn/dnnl_conv.h"

typedef struct {
    int cin, cout, k, s, p, pe, H, W, bias;
} ccase;

static const ccase CASES[] = {
    {3, 5, 3, 1, 1, 0, 23, 29, 1},   {16, 32, 3, 1, 1, 0, 17, 19, 1}, {32, 16, 1, 1, 0, 0, 13, 31, 1},
    {7, 9, 1, 1, 0, 0, 5, 7, 0},     {16, 16, 3, 2, 0, 1, 17, 24, 1}, {5, 6, 3, 2, 0, 1, 9, 9, 1},
    {24, 20, 3, 2, 1, 0, 15, 14, 0}, {4, 48, 3, 1, 1, 0, 1, 1, 1},    {48, 4, 3, 1, 1, 0, 2, 33, 1},
    {16, 3, 3, 1, 1, 0, 31, 8, 1},   {33, 17, 3, 1, 0, 0, 11, 12, 1}, {8, 8, 1, 2, 0, 0, 10, 11, 1},
};

static double ref_rel_l2(const float *y, const float *x, const ss_conv2d *c, int H, int W, int pe) {
    const int Ho = conv_out_size(H + pe, c->kh, c->stride, c->pad), Wo = conv_out_size(W + pe, c->kw, c->stride, c->pad);
    double err = 0, nrm = 0;
    for (int o = 0; o < c->cout; o++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                double s = c->b ? c->b[o] : 0;
                for (int i = 0; i < c->cin; i++)
                    for (int ky = 0; ky < c->kh; ky++)
                        for (int kx = 0; kx < c->kw; kx++) {
                            const int iy = oy * c->stride - c->pad + ky, ix = ox * c->stride - c->pad + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            s += (double)c->w[((o * c->cin + i) * c->kh + ky) * c->kw + kx] * x[((size_t)i * H + iy) * W + ix];
                        }
                const double d = y[((size_t)o * Ho + oy) * Wo + ox] - s;
                err += d * d, nrm += s * s;
            }
    return sqrt(err / (nrm > 0 ? nrm : 1));
}

static void run_case(const ccase *cc, long band, uint64_t seed) {
    ss_dnnl_conv_set_band_floats(band);
    ss_conv2d c = {0};
    c.cin = cc->cin, c.cout = cc->cout, c.kh = c.kw = cc->k, c.stride = cc->s, c.pad = cc->p;
    const int H = cc->H, W = cc->W, pe = cc->pe;
    const int Ho = conv_out_size(H + pe, c.kh, c.stride, c.pad), Wo = conv_out_size(W + pe, c.kw, c.stride, c.pad);
    assert_true(Ho > 0 && Wo > 0);
    const size_t nw = (size_t)c.cout * c.cin * c.kh * c.kw, nx = (size_t)c.cin * H * W, ny = (size_t)c.cout * Ho * Wo;
    float *w = malloc(nw * 4), *b = malloc((size_t)c.cout * 4), *x = malloc(nx * 4);
    float *y[3], *yt = malloc(ny * 4);
    tc_fill(w, nw, seed, 0.5f), tc_fill(b, (size_t)c.cout, seed + 1, 0.5f), tc_fill(x, nx, seed + 2, 1.0f);
    c.w = w, c.b = cc->bias ? b : NULL;
    for (int t = 0; t < 3; t++) {
        y[t] = malloc(ny * 4);
        for (size_t i = 0; i < ny; i++) y[t][i] = NAN; /* every output written */
        omp_set_num_threads(t + 1);
        const int rc = ss_dnnl_conv2d(y[t], x, &c, H, W, pe);
        if (rc) fail_msg("oneDNN conv unavailable for case cin %d cout %d k %d: %s", c.cin, c.cout, c.kh,
                         ss_dnnl_conv_impl(&c, H, W, pe));
        if (t) assert_memory_equal(y[0], y[t], ny * 4);
    }
    const double e = ref_rel_l2(y[0], x, &c, H, W, pe);
    if (!(e < 1e-6)) fail_msg("case cin %d cout %d k %d s %d p %d pe %d %dx%d band %ld: rel L2 %.3e vs double", c.cin,
                              c.cout, c.kh, c.stride, c.pad, pe, H, W, band, e);
    assert_int_equal(op_conv2d_tiled(yt, x, &c, H, W, pe), 0);
    double d = 0, n = 0;
    for (size_t i = 0; i < ny; i++) d += ((double)y[0][i] - yt[i]) * ((double)y[0][i] - yt[i]), n += (double)yt[i] * yt[i];
    assert_true(sqrt(d / (n > 0 ? n : 1)) < 1e-6);
    ss_dnnl_conv_forget(w);
    for (int t = 0; t < 3; t++) free(y[t]);
    free(w), free(b), free(x), free(yt);
    ss_dnnl_conv_set_band_floats(0);
}

static void test_cases_one_band(void **state) {
    (void)state;
    print_message("oneDNN: %s\n", ss_dnnl_conv_impl(&(ss_conv2d){.cin = 16, .cout = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1}, 16, 16, 0));
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) run_case(&CASES[i], 0, 100 + i);
}

/* Tiny bands: one to a few output rows each, so top, middle and bottom bands all occur. */
static void test_cases_many_bands(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        run_case(&CASES[i], 1, 200 + i);
        run_case(&CASES[i], (long)CASES[i].cout * CASES[i].W * 3, 300 + i);
    }
}

static void test_band_rows(void **state) {
    (void)state;
    const ss_conv2d c = {.cin = 128, .cout = 128, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    /* a function of the shape only: equal bands covering the image */
    const int r = ss_dnnl_conv_band_rows(&c, 1024, 1024, 0);
    assert_true(r >= 1 && r <= 1024);
    assert_true((long)r * 128 * 1024 <= 2L * SS_DNNL_CONV_BAND_FLOATS);
    omp_set_num_threads(3);
    assert_int_equal(ss_dnnl_conv_band_rows(&c, 1024, 1024, 0), r);
    omp_set_num_threads(1);
}

/* Off: returns 1 and writes nothing. The weight cache: new values under the same pointer after forget. */
static void test_switch_and_cache(void **state) {
    (void)state;
    ss_conv2d c = {.cin = 16, .cout = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    const int H = 9, W = 10;
    const size_t nw = 16 * 16 * 9, nx = 16 * H * W;
    float *w = malloc(nw * 4), *x = malloc(nx * 4), *y = malloc(nx * 4);
    tc_fill(w, nw, 7, 0.5f), tc_fill(x, nx, 8, 1.0f);
    c.w = w;
    ss_dnnl_conv_enable(0);
    for (size_t i = 0; i < nx; i++) y[i] = 5.0f;
    assert_int_equal(ss_dnnl_conv2d(y, x, &c, H, W, 0), 1);
    for (size_t i = 0; i < nx; i++) assert_true(y[i] == 5.0f);
    ss_dnnl_conv_enable(1);
    const size_t before = ss_dnnl_conv_weight_bytes();
    assert_int_equal(ss_dnnl_conv2d(y, x, &c, H, W, 0), 0);
    assert_true(ss_dnnl_conv_weight_bytes() >= before + nw * 4);
    assert_true(ref_rel_l2(y, x, &c, H, W, 0) < 1e-6);
    tc_fill(w, nw, 9, 0.5f);
    ss_dnnl_conv_forget(w);
    assert_int_equal(ss_dnnl_conv_weight_bytes(), before);
    assert_int_equal(ss_dnnl_conv2d(y, x, &c, H, W, 0), 0);
    assert_true(ref_rel_l2(y, x, &c, H, W, 0) < 1e-6);
    ss_dnnl_conv_forget(w);
    free(w), free(x), free(y);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_one_band), cmocka_unit_test(test_cases_many_bands),
        cmocka_unit_test(test_band_rows), cmocka_unit_test(test_switch_and_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
