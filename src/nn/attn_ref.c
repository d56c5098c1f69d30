/* attn_ref: the materialized multi-head attention (one L x L score matrix per head, BLAS), for
 * short sequences (text encoders, vision towers) and as the plain reference beside the fused
 * kernel of attn.c. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "nn/attn.h"
#include "core/err.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

int attn_materialized(float *out, const float *q, const float *k, const float *v, int L, int H, int dh, int ld, float scale,
                      const float *bias, int causal, const int64_t *keymask) {
    return attn_materialized_probs(out, NULL, q, k, v, L, H, dh, ld, scale, bias, causal, keymask);
}

int attn_materialized_probs(float *out, float *P, const float *q, const float *k, const float *v, int L, int H, int dh,
                            int ld, float scale, const float *bias, int causal, const int64_t *keymask) {
    size_t LL;
    if (ss_mul_size((size_t)L, (size_t)L, &LL) < 0) return ss_fail(SS_ENOMEM, "sequence too long");
    int err = 0;
#pragma omp parallel
    {
        /* the scores of one head: a per-thread buffer, or head h's slice of P */
        float *buf = P ? NULL : malloc(LL * sizeof *buf);
        if (!P && !buf) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(dynamic)
        for (int h = 0; h < H; h++) {
            if (!P && !buf) continue;
            float *S = P ? P + (size_t)h * LL : buf;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, dh, scale, q + h * dh, ld, k + h * dh, ld, 0.0f,
                        S, L);
            for (int i = 0; i < L; i++) {
                float *s = S + (size_t)i * L;
                const float *bi = bias ? bias + ((size_t)h * L + i) * L : NULL;
                int nk = causal ? i + 1 : L, any = 0;
                for (int j = 0; j < nk && !any; j++) any = !keymask || keymask[j];
                float m = -INFINITY;
                for (int j = 0; j < nk; j++) {
                    if (bi) s[j] += bi[j];
                    /* a masked key gets finfo.min added: weight 0, unless every key of the row is
                     * masked, where all logits round to finfo.min and the softmax is uniform */
                    if (keymask && !keymask[j] && any) continue;
                    if (s[j] > m) m = s[j];
                }
                double sum = 0;
                for (int j = 0; j < nk; j++) {
                    float p = (keymask && !keymask[j] && any) ? 0.0f : !any && keymask ? 1.0f : expf(s[j] - m);
                    s[j] = p;
                    sum += p;
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < nk; j++) s[j] *= inv;
                for (int j = nk; j < L; j++) s[j] = 0;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, dh, L, 1.0f, S, L, v + h * dh, ld, 0.0f,
                        out + h * dh, ld);
        }
        free(buf);
    }
    return err ? ss_fail(SS_ENOMEM, "out of memory (attention scores)") : 0;
}
