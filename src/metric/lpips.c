#include "metric/lpips.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv.h"
#include "core/err.h"
#include "io/pth.h"

static const int CH[LPIPS_LAYERS] = {64, 192, 384, 256, 256};
static const int FEAT_IDX[LPIPS_LAYERS] = {0, 3, 6, 8, 10};          /* torchvision features.N */
static const int KS[LPIPS_LAYERS] = {11, 5, 3, 3, 3}, STRIDE[LPIPS_LAYERS] = {4, 1, 1, 1, 1},
                 PAD[LPIPS_LAYERS] = {2, 2, 1, 1, 1};
static const float SHIFT[3] = {-.030f, -.088f, -.188f}, SCALE[3] = {.458f, .448f, .450f};

struct lpips_net {
    float *w[LPIPS_LAYERS], *b[LPIPS_LAYERS], *lin[LPIPS_LAYERS];
    ss_conv2d conv[LPIPS_LAYERS];
};

void lpips_free(lpips_net *n) {
    if (!n) return;
    for (int k = 0; k < LPIPS_LAYERS; k++) {
        free(n->w[k]);
        free(n->b[k]);
        free(n->lin[k]);
    }
    free(n);
}

int lpips_load(lpips_net **out, const char *alexnet_pth, const char *lin_pth) {
    *out = NULL;
    lpips_net *n = ss_calloc(1, sizeof *n);
    if (!n) return SS_ENOMEM;
    pth_file *fa = NULL, *fl = NULL;
    int rc = pth_open(&fa, alexnet_pth);
    if (rc == 0) rc = pth_open(&fl, lin_pth);
    for (int k = 0; rc == 0 && k < LPIPS_LAYERS; k++) {
        int cin = k == 0 ? 3 : CH[k - 1];
        char name[64];
        const int64_t ws[4] = {CH[k], cin, KS[k], KS[k]}, bs[1] = {CH[k]}, ls[4] = {1, CH[k], 1, 1};
        snprintf(name, sizeof name, "features.%d.weight", FEAT_IDX[k]);
        rc = pth_load_f32(&n->w[k], fa, name, 4, ws);
        if (rc == 0) {
            snprintf(name, sizeof name, "features.%d.bias", FEAT_IDX[k]);
            rc = pth_load_f32(&n->b[k], fa, name, 1, bs);
        }
        if (rc == 0) {
            snprintf(name, sizeof name, "lin%d.model.1.weight", k);
            rc = pth_load_f32(&n->lin[k], fl, name, 4, ls);
        }
        n->conv[k] = (ss_conv2d){n->w[k], n->b[k], cin, CH[k], KS[k], KS[k], STRIDE[k], PAD[k]};
    }
    pth_close(fa);
    pth_close(fl);
    if (rc < 0) {
        lpips_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

void lpips_im2tensor(float *x, const uint8_t *rgb, int w, int h) {
    const size_t plane = (size_t)w * h;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) x[(size_t)c * plane + p] = (float)(rgb[3 * p + c] / 127.5 - 1.0);
}

typedef struct {
    float *tap[LPIPS_LAYERS];
    int th[LPIPS_LAYERS], tw[LPIPS_LAYERS];
} features;

static void features_free(features *f) {
    for (int k = 0; k < LPIPS_LAYERS; k++) free(f->tap[k]);
}

/* The five relu taps of one image. */
static int run_features(const lpips_net *n, const float *x, int w, int h, features *f) {
    memset(f, 0, sizeof *f);
    const size_t plane = (size_t)w * h;
    float *in = ss_malloc(3 * plane * sizeof *in), *pool = NULL, *work = NULL;
    if (!in) return SS_ENOMEM;
    for (int c = 0; c < 3; c++)
        for (size_t p = 0; p < plane; p++) in[c * plane + p] = (x[c * plane + p] - SHIFT[c]) / SCALE[c];
    /* workspace: the largest im2col of the five convolutions */
    size_t wmax = 0;
    int H = h, W = w;
    for (int k = 0; k < LPIPS_LAYERS; k++) {
        if (k == 1 || k == 2) H = conv_out_size(H, 3, 2, 0), W = conv_out_size(W, 3, 2, 0);
        size_t s = op_conv2d_work(&n->conv[k], H, W);
        if (s > wmax) wmax = s;
        H = conv_out_size(H, KS[k], STRIDE[k], PAD[k]);
        W = conv_out_size(W, KS[k], STRIDE[k], PAD[k]);
    }
    work = ss_malloc(wmax * sizeof *work + 1);
    int rc = work ? 0 : SS_ENOMEM;
    const float *cur = in;
    H = h, W = w;
    for (int k = 0; rc == 0 && k < LPIPS_LAYERS; k++) {
        if (k == 1 || k == 2) { /* MaxPool2d(3, 2) before conv2 and conv3 */
            int C = CH[k - 1], Ho = conv_out_size(H, 3, 2, 0), Wo = conv_out_size(W, 3, 2, 0);
            free(pool);
            pool = ss_malloc((size_t)C * Ho * Wo * sizeof *pool);
            if (!pool) {
                rc = SS_ENOMEM;
                break;
            }
            op_maxpool2d(pool, cur, C, H, W, 3, 2, 0);
            cur = pool, H = Ho, W = Wo;
        }
        int Ho = conv_out_size(H, KS[k], STRIDE[k], PAD[k]), Wo = conv_out_size(W, KS[k], STRIDE[k], PAD[k]);
        size_t nout = (size_t)CH[k] * Ho * Wo;
        f->tap[k] = ss_malloc(nout * sizeof(float));
        if (!f->tap[k]) {
            rc = SS_ENOMEM;
            break;
        }
        op_conv2d(f->tap[k], cur, &n->conv[k], H, W, work);
        op_relu(f->tap[k], nout);
        f->th[k] = Ho, f->tw[k] = Wo;
        cur = f->tap[k], H = Ho, W = Wo;
    }
    free(in);
    free(pool);
    free(work);
    if (rc < 0) features_free(f);
    return rc;
}

int lpips_distance(const lpips_net *n, const float *x0, const float *x1, int w, int h, double *out,
                   double per_layer[LPIPS_LAYERS]) {
    if (w < LPIPS_MIN_SIDE || h < LPIPS_MIN_SIDE)
        return ss_fail(SS_ESHAPE, "lpips: image of %dx%d is smaller than AlexNet's %dx%d minimum", w, h,
                       LPIPS_MIN_SIDE, LPIPS_MIN_SIDE);
    features f0, f1;
    int rc = run_features(n, x0, w, h, &f0);
    if (rc < 0) return rc;
    rc = run_features(n, x1, w, h, &f1);
    if (rc < 0) {
        features_free(&f0);
        return rc;
    }
    double total = 0;
    for (int k = 0; k < LPIPS_LAYERS && rc == 0; k++) {
        const int C = CH[k];
        const size_t P = (size_t)f0.th[k] * f0.tw[k];
        double *val = ss_malloc(P * sizeof *val);
        if (!val) {
            rc = SS_ENOMEM;
            break;
        }
        const float *a = f0.tap[k], *b = f1.tap[k], *lw = n->lin[k];
#pragma omp parallel for schedule(static) if (P * C > 32768)
        for (size_t p = 0; p < P; p++) {
            double na = 0, nb = 0;
            for (int c = 0; c < C; c++) {
                double u = a[(size_t)c * P + p], v = b[(size_t)c * P + p];
                na += u * u, nb += v * v;
            }
            na = sqrt(na) + 1e-10, nb = sqrt(nb) + 1e-10;
            double s = 0;
            for (int c = 0; c < C; c++) {
                double d = a[(size_t)c * P + p] / na - b[(size_t)c * P + p] / nb;
                s += lw[c] * d * d;
            }
            val[p] = s;
        }
        double sum = 0; /* sequential: independent of the thread count */
        for (size_t p = 0; p < P; p++) sum += val[p];
        free(val);
        double mean = sum / (double)P;
        if (per_layer) per_layer[k] = mean;
        total += mean;
    }
    features_free(&f0);
    features_free(&f1);
    if (rc == 0) *out = total;
    return rc;
}

int lpips_distance_rgb(const lpips_net *n, const uint8_t *a, const uint8_t *b, int w, int h, double *out,
                       double per_layer[LPIPS_LAYERS]) {
    if (w < LPIPS_MIN_SIDE || h < LPIPS_MIN_SIDE)
        return ss_fail(SS_ESHAPE, "lpips: image of %dx%d is smaller than AlexNet's %dx%d minimum", w, h,
                       LPIPS_MIN_SIDE, LPIPS_MIN_SIDE);
    size_t n3 = (size_t)w * h * 3;
    float *x0 = ss_malloc(n3 * sizeof *x0), *x1 = ss_malloc(n3 * sizeof *x1);
    int rc = x0 && x1 ? 0 : SS_ENOMEM;
    if (rc == 0) {
        lpips_im2tensor(x0, a, w, h);
        lpips_im2tensor(x1, b, w, h);
        rc = lpips_distance(n, x0, x1, w, h, out, per_layer);
    }
    free(x0);
    free(x1);
    return rc;
}
