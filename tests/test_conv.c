/* Tests for src/nn/conv: conv2d (im2col + sgemm) against a direct double-precision loop over
 * several kernel sizes, strides and paddings (AlexNet's among them), max-pool and ReLU against
 * direct loops, and results bit-identical at 1 and 2 threads. */
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

static void conv_ref(double *y, const float *x, const ss_conv2d *c, int H, int W) {
    int Ho = conv_out_size(H, c->kh, c->stride, c->pad), Wo = conv_out_size(W, c->kw, c->stride, c->pad);
    for (int o = 0; o < c->cout; o++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                double s = c->b ? c->b[o] : 0;
                for (int ci = 0; ci < c->cin; ci++)
                    for (int i = 0; i < c->kh; i++)
                        for (int j = 0; j < c->kw; j++) {
                            int iy = oy * c->stride - c->pad + i, ix = ox * c->stride - c->pad + j;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            s += (double)c->w[((o * c->cin + ci) * c->kh + i) * c->kw + j] *
                                 x[((size_t)ci * H + iy) * W + ix];
                        }
                y[((size_t)o * Ho + oy) * Wo + ox] = s;
            }
}

typedef struct {
    int cin, cout, k, stride, pad, H, W, bias;
} conv_case;

static void run_case(const conv_case *cc, uint64_t seed) {
    ss_conv2d c = {0};
    c.cin = cc->cin, c.cout = cc->cout, c.kh = c.kw = cc->k, c.stride = cc->stride, c.pad = cc->pad;
    size_t nw = (size_t)c.cout * c.cin * c.kh * c.kw, nx = (size_t)c.cin * cc->H * cc->W;
    float *w = malloc(nw * sizeof *w), *b = malloc((size_t)c.cout * sizeof *b), *x = malloc(nx * sizeof *x);
    tc_fill(w, nw, seed, 0.5f);
    tc_fill(b, (size_t)c.cout, seed + 1, 0.5f);
    tc_fill(x, nx, seed + 2, 1.0f);
    c.w = w, c.b = cc->bias ? b : NULL;
    int Ho = conv_out_size(cc->H, c.kh, c.stride, c.pad), Wo = conv_out_size(cc->W, c.kw, c.stride, c.pad);
    assert_true(Ho > 0 && Wo > 0);
    size_t ny = (size_t)c.cout * Ho * Wo;
    float *y1 = malloc(ny * sizeof *y1), *y2 = malloc(ny * sizeof *y2);
    float *work = malloc(op_conv2d_work(&c, cc->H, cc->W) * sizeof *work + 1);
    double *ref = malloc(ny * sizeof *ref);
    conv_ref(ref, x, &c, cc->H, cc->W);
    omp_set_num_threads(1);
    op_conv2d(y1, x, &c, cc->H, cc->W, work);
    omp_set_num_threads(2);
    op_conv2d(y2, x, &c, cc->H, cc->W, work);
    assert_memory_equal(y1, y2, ny * sizeof *y1);
    double maxerr = 0, scale = 1e-3;
    for (size_t i = 0; i < ny; i++) {
        maxerr = fmax(maxerr, fabs(y1[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    if (maxerr > 1e-5 * scale * sqrt((double)c.cin * c.kh * c.kw))
        fail_msg("conv %dx%d s%d p%d: max error %g (scale %g)", c.kh, c.kw, c.stride, c.pad, maxerr, scale);
    free(w), free(b), free(x), free(y1), free(y2), free(work), free(ref);
}

static void test_conv2d(void **state) {
    (void)state;
    const conv_case cases[] = {
        {3, 8, 11, 4, 2, 47, 39, 1}, /* AlexNet conv1 */
        {8, 12, 5, 1, 2, 13, 9, 1},  /* conv2 */
        {12, 7, 3, 1, 1, 6, 11, 0},  /* conv3-5, no bias */
        {5, 4, 1, 1, 0, 7, 3, 1},    /* 1x1: no workspace */
        {2, 3, 3, 2, 0, 9, 8, 1},    /* stride 2, unpadded */
        {3, 2, 4, 3, 3, 5, 5, 1},    /* padding larger than the overlap */
        {24, 40, 3, 1, 1, 37, 29, 1}, /* 1073 columns: several blocks, a multithreaded-size sgemm */
        {24, 64, 3, 1, 1, 12, 12, 1}, /* one block of a size OpenBLAS would thread */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);
    ss_conv2d one = {NULL, NULL, 5, 4, 1, 1, 1, 0};
    assert_int_equal(op_conv2d_work(&one, 7, 3), 0);
    assert_int_equal(conv_out_size(30, 3, 2, 0), 14);
    assert_int_equal(conv_out_size(2, 3, 2, 0), 0);
}

static void test_maxpool_relu(void **state) {
    (void)state;
    const int C = 3, H = 15, W = 10;
    float x[3 * 15 * 10], y[3 * 7 * 5], y2[3 * 8 * 6];
    tc_fill(x, sizeof x / sizeof x[0], 7, 2.0f);
    op_maxpool2d(y, x, C, H, W, 3, 2, 0);
    assert_int_equal(conv_out_size(H, 3, 2, 0), 7);
    assert_int_equal(conv_out_size(W, 3, 2, 0), 4);
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < 7; oy++)
            for (int ox = 0; ox < 4; ox++) {
                float m = -INFINITY;
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 3; j++) m = fmaxf(m, x[(c * H + oy * 2 + i) * W + ox * 2 + j]);
                assert_true(y[(c * 7 + oy) * 4 + ox] == m);
            }
    /* padding 1: windows reaching outside take the max of what is inside */
    op_maxpool2d(y2, x, C, H, W, 3, 2, 1);
    assert_true(y2[0] == fmaxf(fmaxf(x[0], x[1]), fmaxf(x[W], x[W + 1])));
    /* NaN propagates as in torch */
    x[0] = NAN;
    op_maxpool2d(y, x, C, H, W, 3, 2, 0);
    assert_true(isnan(y[0]));
    assert_false(isnan(y[1]));
    float r[5] = {-1.0f, 0.0f, 2.5f, -0.0f, NAN};
    op_relu(r, 5);
    assert_true(r[0] == 0.0f && r[1] == 0.0f && r[2] == 2.5f && r[3] == 0.0f);
    assert_true(isnan(r[4]));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_maxpool_relu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
