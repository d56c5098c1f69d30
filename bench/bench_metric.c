/* Metric benchmark: LPIPS (alex, v0.1) of one 1024x1024 image pair, with the random-weight
 * fixture (tests/fixtures/lpips-random, real shapes), as pairs/s and images/s (two AlexNet passes
 * per pair), the GFLOP/s the convolutions reach, and the sgemm rate of this machine measured in
 * the same run at the shape of AlexNet's conv2 at 1024^2 (192 x 16129 x 1600). Run from the
 * repository root.
 * Then pytorch-fid's FID Inception (src/metric/inception.h, random weights of the real shapes) on
 * one 1024x1024 image, the bilinear resize to 299 included, as images/s beside the sgemm rate at
 * the shape of its Conv2d_2b_3x3 (64 x 21609 x 288); the same with clean-fid's preprocessing (PIL
 * float bicubic per channel, timed on its own too); and the Frechet distance of two 2048-d sets
 * of 200 features (covariances, two LAPACK eigendecompositions). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "nn/conv.h"
#include "core/err.h"
#include "metric/cleanfid.h"
#include "metric/fid.h"
#include "metric/inception.h"
#include "metric/lpips.h"

/* Random weights for the benchmark: conv weights He-uniform, batchnorm near identity. */
static int bench_getter(void *ctx, const char *name, int ndim, const int64_t *shape, float **out) {
    uint64_t *st = ctx;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *w = malloc(n * sizeof *w);
    if (!w) return ss_fail(SS_ENOMEM, "bench_metric: out of memory");
    const double fan = ndim == 4 ? (double)(shape[1] * shape[2] * shape[3]) : 1;
    for (size_t i = 0; i < n; i++) {
        *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = (double)(*st >> 40) / 16777216.0 * 2 - 1;
        w[i] = (float)(ndim == 4 ? u * __builtin_sqrt(6 / fan) : strstr(name, "running_var") || strstr(name, "bn.weight") ? 1 + 0.2 * u : 0.02 * u);
    }
    *out = w;
    return 0;
}

static int bench_fid(void) {
    const int W = 1024, H = 1024, REPS = 2;
    uint64_t st = 2015;
    inception_net *net;
    if (inception_load_with(&net, bench_getter, &st) < 0) {
        fprintf(stderr, "bench_metric: %s\n", ss_err());
        return 1;
    }
    uint8_t *img = malloc((size_t)W * H * 3);
    float feat[INCEPTION_DIM];
    if (!img) return 1;
    for (size_t i = 0; i < (size_t)W * H * 3; i++) img[i] = (uint8_t)(i * 2654435761u >> 24);
    double best = 1e30;
    for (int r = 0; r < REPS + 1; r++) {
        double t = bu_now();
        if (inception_features_rgb(net, img, W, H, feat) < 0) {
            fprintf(stderr, "bench_metric: %s\n", ss_err());
            return 1;
        }
        t = bu_now() - t;
        if (r > 0 && t < best) best = t;
    }
    double gf = bu_sgemm_gflops(64, 21609, 288, 2);
    printf("fid inception (pytorch-fid) %dx%d: %.3f s/image, %.3f images/s (resize to 299 included); "
           "sgemm %.1f GFLOP/s at 64x21609x288, %d threads\n", W, H, best, 1 / best, gf, omp_get_max_threads());
    float *x = malloc(sizeof(float) * 3 * INCEPTION_SIDE * INCEPTION_SIDE);
    if (!x) return 1;
    double best_pre = 1e30, best_cf = 1e30;
    for (int r = 0; r < REPS + 1; r++) {
        double t0 = bu_now();
        if (cf_preprocess(img, W, H, x) < 0) {
            fprintf(stderr, "bench_metric: %s\n", ss_err());
            return 1;
        }
        double t1 = bu_now();
        if (inception_features_raw(net, x, INCEPTION_SIDE, INCEPTION_SIDE, feat) < 0) {
            fprintf(stderr, "bench_metric: %s\n", ss_err());
            return 1;
        }
        double t2 = bu_now();
        if (r > 0 && t1 - t0 < best_pre) best_pre = t1 - t0;
        if (r > 0 && t2 - t0 < best_cf) best_cf = t2 - t0;
    }
    printf("fid inception (clean-fid) %dx%d: %.3f s/image, %.3f images/s (PIL float bicubic to 299: %.3f s)\n", W, H,
           best_cf, 1 / best_cf, best_pre);
    free(x);
    const int N = 200;
    double *fa = malloc(sizeof(double) * N * INCEPTION_DIM), *fb = malloc(sizeof(double) * N * INCEPTION_DIM);
    if (!fa || !fb) return 1;
    for (size_t i = 0; i < (size_t)N * INCEPTION_DIM; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        fa[i] = (double)(st >> 40) / 16777216.0;
        fb[i] = fa[i] * 0.9 + 0.05 * (double)(i % 7);
    }
    double t = bu_now();
    fid_stats sa, sb;
    fid_result res;
    if (fid_stats_compute(&sa, fa, N, INCEPTION_DIM) < 0 || fid_stats_compute(&sb, fb, N, INCEPTION_DIM) < 0 ||
        fid_frechet(&sa, &sb, &res) < 0) {
        fprintf(stderr, "bench_metric: %s\n", ss_err());
        return 1;
    }
    printf("frechet distance 2 x %d x %d: %.3f s (fid %.4f)\n", N, INCEPTION_DIM, bu_now() - t, res.fid);
    fid_stats_free(&sa);
    fid_stats_free(&sb);
    free(fa);
    free(fb);
    free(img);
    inception_free(net);
    return 0;
}

/* Multiply-adds x 2 of the five convolutions of one AlexNet pass on an h x w image. */
static double alexnet_flops(int w, int h) {
    static const int ch[5] = {64, 192, 384, 256, 256}, ks[5] = {11, 5, 3, 3, 3}, st[5] = {4, 1, 1, 1, 1},
                     pd[5] = {2, 2, 1, 1, 1};
    double f = 0;
    int cin = 3;
    for (int k = 0; k < 5; k++) {
        if (k == 1 || k == 2) h = conv_out_size(h, 3, 2, 0), w = conv_out_size(w, 3, 2, 0);
        h = conv_out_size(h, ks[k], st[k], pd[k]), w = conv_out_size(w, ks[k], st[k], pd[k]);
        f += 2.0 * ch[k] * cin * ks[k] * ks[k] * (double)h * w;
        cin = ch[k];
    }
    return f;
}

int main(void) {
    const int W = 1024, H = 1024, REPS = 2;
    lpips_net *net;
    if (lpips_load(&net, "tests/fixtures/lpips-random/alexnet.pth", "tests/fixtures/lpips-random/alex.pth") < 0) {
        fprintf(stderr, "bench_metric: %s\n", ss_err());
        return 1;
    }
    uint8_t *a = malloc((size_t)W * H * 3), *b = malloc((size_t)W * H * 3);
    uint64_t s = 16;
    for (size_t i = 0; i < (size_t)W * H * 3; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        a[i] = (uint8_t)(i / 3 % W / 4 + (s >> 60));
        b[i] = (uint8_t)(a[i] + (s >> 62));
    }
    double d = 0, best = 1e30;
    long mem0 = bu_mem_reset();
    for (int r = 0; r < REPS + 1; r++) {
        double t = bu_now();
        if (lpips_distance_rgb(net, a, b, W, H, &d, NULL) < 0) {
            fprintf(stderr, "bench_metric: %s\n", ss_err());
            return 1;
        }
        t = bu_now() - t;
        if (r > 0 && t < best) best = t;
    }
    long peak = bu_mem_peak() - mem0;
    double gf = bu_sgemm_gflops(192, 16129, 1600, 2);
    double conv_gf = 2 * alexnet_flops(W, H) / best / 1e9;
    printf("lpips alex %dx%d: %.3f s/pair, %.3f pairs/s, %.3f images/s (lpips %.6f); convolutions %.1f GFLOP/s "
           "(%.0f%% of sgemm %.1f GFLOP/s, %d threads); peak extra memory %.0f MiB\n",
           W, H, best, 1 / best, 2 / best, d, conv_gf, 100 * conv_gf / gf, gf, omp_get_max_threads(), peak / 1024.0);
    free(a);
    free(b);
    lpips_free(net);
    return bench_fid();
}
