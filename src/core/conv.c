#include "core/conv.h"

#include <cblas.h>
#include <math.h>

#define PAR_MIN 32768 /* as core/ops.c: below this a parallel region costs more than the loop */
#define CONV_NB 256   /* output columns per sgemm block */

size_t op_conv2d_work(const ss_conv2d *c, int H, int W) {
    if (c->kh == 1 && c->kw == 1 && c->stride == 1 && c->pad == 0) return 0;
    size_t Ho = (size_t)conv_out_size(H, c->kh, c->stride, c->pad);
    size_t Wo = (size_t)conv_out_size(W, c->kw, c->stride, c->pad);
    return (size_t)c->cin * c->kh * c->kw * Ho * Wo;
}

/* col[(ci*kh + i)*kw + j][oy*Wo + ox] = x[ci][oy*s - p + i][ox*s - p + j] (0 outside). */
static void im2col(float *col, const float *x, const ss_conv2d *c, int H, int W, int Ho, int Wo) {
    const int kh = c->kh, kw = c->kw, s = c->stride, p = c->pad;
    const int rows = c->cin * kh * kw;
    const size_t plane = (size_t)Ho * Wo;
#pragma omp parallel for schedule(static) if ((size_t)rows * plane > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const int ci = r / (kh * kw), i = r / kw % kh, j = r % kw;
        const float *xc = x + (size_t)ci * H * W;
        float *dst = col + (size_t)r * plane;
        for (int oy = 0; oy < Ho; oy++) {
            const int iy = oy * s - p + i;
            float *d = dst + (size_t)oy * Wo;
            if (iy < 0 || iy >= H) {
                for (int ox = 0; ox < Wo; ox++) d[ox] = 0.0f;
                continue;
            }
            const float *xr = xc + (size_t)iy * W;
            for (int ox = 0; ox < Wo; ox++) {
                const int ix = ox * s - p + j;
                d[ox] = ix >= 0 && ix < W ? xr[ix] : 0.0f;
            }
        }
    }
}

void op_conv2d(float *y, const float *x, const ss_conv2d *c, int H, int W, float *work) {
    const int Ho = conv_out_size(H, c->kh, c->stride, c->pad);
    const int Wo = conv_out_size(W, c->kw, c->stride, c->pad);
    if (Ho <= 0 || Wo <= 0) return;
    const int N = Ho * Wo, K = c->cin * c->kh * c->kw;
    const float *col = x;
    if (op_conv2d_work(c, H, W)) {
        im2col(work, x, c, H, W, Ho, Wo);
        col = work;
    }
    if (c->b) {
#pragma omp parallel for schedule(static) if ((size_t)c->cout * N > PAR_MIN)
        for (int o = 0; o < c->cout; o++)
            for (int n = 0; n < N; n++) y[(size_t)o * N + n] = c->b[o];
    }
    /* Fixed column blocks, each one single-threaded sgemm (OpenBLAS runs single-threaded inside
     * an active parallel region): a multithreaded sgemm partitions by the thread count, and its
     * edge tiles then round differently, so this keeps results independent of the threads. */
    const int nblk = (N + CONV_NB - 1) / CONV_NB;
    const float beta = c->b ? 1.0f : 0.0f;
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)c->cout * N * K > PAR_MIN)
    for (int bi = 0; bi < nblk; bi++) {
        const int j0 = bi * CONV_NB, nb = N - j0 < CONV_NB ? N - j0 : CONV_NB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, nb, K, 1.0f, c->w, K, col + j0, N,
                    beta, y + j0, N);
    }
}

void op_relu(float *x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void op_maxpool2d(float *y, const float *x, int C, int H, int W, int k, int stride, int pad) {
    const int Ho = conv_out_size(H, k, stride, pad), Wo = conv_out_size(W, k, stride, pad);
    if (Ho <= 0 || Wo <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)C * Ho * Wo * k * k > PAR_MIN)
    for (int ch = 0; ch < C; ch++) {
        const float *xc = x + (size_t)ch * H * W;
        float *yc = y + (size_t)ch * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float m = -INFINITY;
                int nan = 0;
                for (int i = 0; i < k; i++) {
                    const int iy = oy * stride - pad + i;
                    if (iy < 0 || iy >= H) continue;
                    for (int j = 0; j < k; j++) {
                        const int ix = ox * stride - pad + j;
                        if (ix < 0 || ix >= W) continue;
                        const float v = xc[(size_t)iy * W + ix];
                        if (v > m) m = v;
                        nan |= v != v;
                    }
                }
                yc[(size_t)oy * Wo + ox] = nan ? NAN : m;
            }
    }
}
