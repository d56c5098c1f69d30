/* Attention benchmark (issue: probe and interventions), at SD3-medium attention size at 1024^2:
 * 4096 image + 333 text tokens, 24 heads x 64, batch 1. In one run, as ratios to (a):
 *   (a) plain fused attention
 *   (b) + probe (mass per key, top-k, entropy, top-5 concentration)
 *   (c) + probe + top-1 score-path removal on image queries
 *   (d) the materialized approach written plainly in C: softmax matrix, column mean, re-softmax
 * and the peak extra resident memory of each (beyond inputs and outputs); then (a) and (b) with
 * bf16 products (attn_args.precision, nn/dnnl.h), as ratios to the same (a). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "nn/attn.h"
#include "nn/dnnl.h"
#include "sink/sink.h"

/* (d): what a PyTorch attention processor does, in C: S = QK^T/sqrt(d) for all heads, softmax,
 * column means over image rows, top-1 per head, logits of that key set to -inf on image rows,
 * softmax again, P V. Memory: H x T x T floats. */
static void materialized(const attn_args *a, float *out) {
    const int T = a->T, H = a->H, dh = a->dh, ld = a->ld, n_img = a->n_img;
    float *P = malloc(sizeof(float) * (size_t)H * T * T);
    const float scale = 1.0f / sqrtf((float)dh);
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < H; h++) {
        float *Ph = P + (size_t)h * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, scale, a->q + h * dh, ld, a->k + h * dh, ld, 0.0f, Ph, T);
        float *col = calloc(T, sizeof(float));
        for (int i = 0; i < T; i++) {
            float *r = Ph + (size_t)i * T, mx = -INFINITY, s = 0;
            for (int j = 0; j < T; j++) mx = r[j] > mx ? r[j] : mx;
            for (int j = 0; j < T; j++) s += (r[j] = expf(r[j] - mx));
            for (int j = 0; j < T; j++) r[j] /= s;
            if (i < n_img)
                for (int j = 0; j < T; j++) col[j] += r[j] / n_img;
        }
        int top = 0;
        for (int j = 1; j < T; j++) top = col[j] > col[top] ? j : top;
        for (int i = 0; i < n_img; i++) { /* re-softmax with the sink's logit at -inf */
            float *r = Ph + (size_t)i * T, s = 1.0f - r[top];
            r[top] = 0;
            for (int j = 0; j < T; j++) r[j] /= s;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, 1.0f, Ph, T, a->v + h * dh, ld, 0.0f, out + h * dh, ld);
        free(col);
    }
    free(P);
}

int main(void) {
    const int N = 4096, S = 333, T = N + S, H = 24, dh = 64, D = H * dh;
    omp_set_max_active_levels(1);
    printf("CPU: %s; threads: %d; attention at SD3-medium 1024^2: %d image + %d text tokens, %d heads x %d\n",
           bu_cpu_name(), omp_get_max_threads(), N, S, H, dh);
    float *q = malloc(sizeof(float) * T * D), *k = malloc(sizeof(float) * T * D), *v = malloc(sizeof(float) * T * D),
          *o = malloc(sizeof(float) * T * D), *od = malloc(sizeof(float) * T * D);
    for (size_t i = 0; i < (size_t)T * D; i++) {
        /* (int) first: in size_t, "- 50" wrapped around and half the values were ~3e17, which made
         * every softmax row one-hot (the probe's and the removal's costs were those of that case) */
        q[i] = (float)((int)(i * 37 % 101) - 50) / 60.0f;
        k[i] = (float)((int)(i * 53 % 103) - 51) / 60.0f;
        v[i] = (float)((int)(i * 29 % 97) - 48) / 48.0f;
    }
    attn_args a = {.B = 1, .H = H, .dh = dh, .T = T, .ld = D, .n_img = N, .q = q, .k = k, .v = v, .out = o,
                   .n_qspan = 2, .qend = {N, T}};
    /* joint.0 as SD3 lays it out: image tokens, then text */
    const ss_site site = {.kind = SS_SITE_JOINT, .Tq = T, .Tk = T, .n_qspan = 2, .n_kspan = 2,
                          .qspan = {{0, N, SS_TOK_IMAGE}, {N, T - N, SS_TOK_TEXT}}, .kspan = {{0, N, SS_TOK_IMAGE}, {N, T - N, SS_TOK_TEXT}}};
    const double flops = 4.0 * T * T * D;
    sink_condition c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "top1");
    c.n_layers = 1;
    c.k = 1;
    c.queries = TOK_IMAGE;
    c.step_hi = 1;
    attn_forward(&a, NULL); /* warm-up: BLAS thread pool and buffers */
    double ta = 0, te = 0;
    const char *label[] = {"(a) plain fused attention", "(b) + probe", "(c) + probe + top-1 removal (score path, image queries)",
                           "(d) materialized in plain C", "(e) plain fused attention, bf16 products", "(f) + probe, bf16 products"};
    for (int variant = 0; variant < 6; variant++) {
        a.precision = variant >= 4 ? SS_PREC_BF16 : SS_PREC_F32;
        if (variant == 4) attn_forward(&a, NULL); /* warm-up: the primitives */
        double best = 1e30;
        long extra = 0;
        for (int r = 0; r < 3; r++) {
            sink_ctx *sk = sink_ctx_new();
            int blk = 0;
            if (variant >= 1 && variant != 4) sink_ctx_set_probe(sk, &blk, 1, TOK_IMAGE, 5, 0);
            if (variant == 2) sink_ctx_set_condition(sk, &c);
            sd3_hooks hk = sink_ctx_hooks(sk);
            long base = bu_mem_reset();
            double t = bu_now();
            if (variant == 0 || variant == 4) attn_forward(&a, NULL);
            else if (variant != 3) hk.attention(hk.ctx, &site, &a);
            else materialized(&a, od);
            t = bu_now() - t;
            long peak = bu_mem_peak() - base;
            if (t < best) best = t;
            if (peak > extra) extra = peak;
            sink_ctx_free(sk);
        }
        if (variant == 0) ta = best;
        if (variant == 4) te = best;
        printf("%-58s %7.3f s  %5.2fx (a)  %6.1f GFLOP/s  peak extra memory %8.1f MiB", label[variant], best, best / ta,
               flops / best / 1e9, extra / 1024.0);
        if (variant == 5) printf("  %5.2fx (e)", best / te); /* the bf16 probe against bf16 plain */
        printf("\n");
    }
    printf("(fp32 products: %ld by the AVX-512 kernels in sgemm's order, the rest by sgemm)\n", attn_test_blas_only(0));
    printf("(bf16 products: oneDNN %s for the Q K^T tiles, %s for P V)\n", ss_dnnl_impl(ATTN_BQ, T, dh, SS_DNNL_TRANS_B | SS_DNNL_SERIAL),
           ss_dnnl_impl(ATTN_TQ, dh, T, SS_DNNL_SERIAL));
    /* (c) and (d) compute the same thing: check they agree */
    a.precision = SS_PREC_F32;
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_condition(sk, &c);
    sd3_hooks hk = sink_ctx_hooks(sk);
    hk.attention(hk.ctx, &site, &a);
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)T * D; i++) {
        num += ((double)o[i] - od[i]) * ((double)o[i] - od[i]);
        den += (double)od[i] * od[i];
    }
    printf("(c) vs (d) relative L2 difference: %.2e\n", sqrt(num / den));
    sink_ctx_free(sk);
    free(q); free(k); free(v); free(o); free(od);
    return 0;
}
