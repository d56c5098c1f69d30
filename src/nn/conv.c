#include "nn/conv.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "core/err.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

#define PAR_MIN 32768 /* as nn/ops.c: below this a parallel region costs more than the loop */
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

/* ---- tiled convolution, group norm, nearest upsampling (the VAE) ---- */

/* col[r][n - j0] for output columns n in [j0, j0 + nb), r = (ci*kh + i)*kw + j. */
static void im2col_block(float *col, const float *x, const ss_conv2d *c, int H, int W, int Wo, int j0, int nb) {
    const int kh = c->kh, kw = c->kw, s = c->stride, p = c->pad;
    const int rows = c->cin * kh * kw;
    for (int r = 0; r < rows; r++) {
        const int ci = r / (kh * kw), i = r / kw % kh, j = r % kw;
        const float *xc = x + (size_t)ci * H * W;
        float *d = col + (size_t)r * nb;
        int oy = j0 / Wo, ox = j0 % Wo;
        for (int n = 0; n < nb; n++) {
            const int iy = oy * s - p + i, ix = ox * s - p + j;
            d[n] = iy >= 0 && iy < H && ix >= 0 && ix < W ? xc[(size_t)iy * W + ix] : 0.0f;
            if (++ox == Wo) ox = 0, oy++;
        }
    }
}

int op_conv2d_tiled(float *y, const float *x, const ss_conv2d *c, int H, int W, int pad_end) {
    const int Ho = conv_out_size(H + pad_end, c->kh, c->stride, c->pad);
    const int Wo = conv_out_size(W + pad_end, c->kw, c->stride, c->pad);
    if (Ho <= 0 || Wo <= 0) return 0;
    const size_t N = (size_t)Ho * Wo;
    const int K = c->cin * c->kh * c->kw;
    const int direct = c->kh == 1 && c->kw == 1 && c->stride == 1 && c->pad == 0 && pad_end == 0;
    const size_t nblk = (N + CONV_TILE_NB - 1) / CONV_TILE_NB;
    int err = 0;
#pragma omp parallel if ((size_t)c->cout * N * K > PAR_MIN)
    {
        float *col = direct ? NULL : malloc(sizeof(float) * (size_t)K * CONV_TILE_NB);
        if (!direct && !col) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp barrier
        if (!err) {
#pragma omp for schedule(dynamic, 1)
            for (size_t bi = 0; bi < nblk; bi++) {
                const size_t j0 = bi * CONV_TILE_NB;
                const int nb = N - j0 < CONV_TILE_NB ? (int)(N - j0) : CONV_TILE_NB;
                if (c->b)
                    for (int o = 0; o < c->cout; o++)
                        for (int n = 0; n < nb; n++) y[(size_t)o * N + j0 + n] = c->b[o];
                const float *src = x + j0;
                int lds = (int)N;
                if (!direct) {
                    im2col_block(col, x, c, H, W, Wo, (int)j0, nb);
                    src = col;
                    lds = nb;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, nb, K, 1.0f, c->w, K, src, lds,
                            c->b ? 1.0f : 0.0f, y + j0, (int)N);
            }
        }
        free(col);
    }
    return err ? ss_fail(SS_ENOMEM, "conv: out of memory for the im2col tiles") : 0;
}

void op_group_norm(float *x, int C, size_t HW, int G, const float *w, const float *b, float eps, int silu) {
    const int cg = C / G;
    const size_t n = (size_t)cg * HW;
#pragma omp parallel for schedule(static) if ((size_t)C * HW > PAR_MIN)
    for (int g = 0; g < G; g++) {
        float *xg = x + (size_t)g * n;
        double s = 0;
        for (size_t i = 0; i < n; i++) s += xg[i];
        const double mean = s / (double)n;
        double v = 0;
        for (size_t i = 0; i < n; i++) {
            const double d = xg[i] - mean;
            v += d * d;
        }
        const float rstd = (float)(1.0 / sqrt(v / (double)n + eps)), m = (float)mean;
        for (int ci = 0; ci < cg; ci++) {
            const int ch = g * cg + ci;
            const float a = rstd * w[ch], c0 = b[ch];
            float *xc = xg + (size_t)ci * HW;
            if (silu) {
                for (size_t i = 0; i < HW; i++) {
                    const float t = (xc[i] - m) * a + c0;
                    xc[i] = t / (1.0f + expf(-t));
                }
            } else {
                for (size_t i = 0; i < HW; i++) xc[i] = (xc[i] - m) * a + c0;
            }
        }
    }
}

void op_upsample_nearest2x(float *y, const float *x, int C, int H, int W) {
    const int W2 = 2 * W;
#pragma omp parallel for schedule(static) if ((size_t)C * H * W > PAR_MIN)
    for (int ch = 0; ch < C; ch++)
        for (int i = 0; i < H; i++) {
            const float *xr = x + ((size_t)ch * H + i) * W;
            float *y0 = y + ((size_t)ch * 2 * H + 2 * i) * W2, *y1 = y0 + W2;
            for (int j = 0; j < W; j++) y0[2 * j] = y0[2 * j + 1] = xr[j];
            for (int j = 0; j < W2; j++) y1[j] = y0[j];
        }
}
