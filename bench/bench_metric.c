/* Metric benchmark: LPIPS (alex, v0.1) of one 1024x1024 image pair, with the random-weight
 * fixture (tests/fixtures/lpips-random, real shapes), as pairs/s and images/s (two AlexNet passes
 * per pair), the GFLOP/s the convolutions reach, and the sgemm rate of this machine measured in
 * the same run at the shape of AlexNet's conv2 at 1024^2 (192 x 16129 x 1600). Run from the
 * repository root. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "benchutil.h"
#include "core/conv.h"
#include "core/err.h"
#include "metric/lpips.h"

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
    return 0;
}
