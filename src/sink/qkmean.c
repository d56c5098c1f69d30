#include "sink/qkmean.h"

#include <stdlib.h>

#include "core/err.h"

int ss_qk_mean(float *out, const attn_args *a, int r0, int r1) {
    const int B = a->B, H = a->H, dh = a->dh, T = a->T, Tk = a->Tk ? a->Tk : a->T, ld = a->ld;
    if (r0 < 0 || r1 > T || r1 <= r0)
        return ss_fail(SS_EARG, "qk mean: query rows [%d, %d) are empty or outside [0, %d)", r0, r1, T);
    int rc = 0;
#pragma omp parallel for schedule(static) if ((size_t)B * H * Tk * dh > (1u << 16))
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        double *qm = malloc(sizeof(double) * (size_t)dh);
        if (!qm) {
#pragma omp atomic write
            rc = SS_ENOMEM;
            continue;
        }
        for (int d = 0; d < dh; d++) qm[d] = 0;
        for (int i = r0; i < r1; i++) {
            const float *q = a->q + ((size_t)b * T + i) * ld + (size_t)h * dh;
            for (int d = 0; d < dh; d++) qm[d] += q[d];
        }
        for (int d = 0; d < dh; d++) qm[d] /= (r1 - r0);
        for (int j = 0; j < Tk; j++) {
            const float *k = a->k + ((size_t)b * Tk + j) * ld + (size_t)h * dh;
            double s = 0;
            for (int d = 0; d < dh; d++) s += qm[d] * k[d];
            out[(size_t)bh * Tk + j] = (float)s;
        }
        free(qm);
    }
    return rc < 0 ? ss_fail(SS_ENOMEM, "qk mean: out of memory") : 0;
}
