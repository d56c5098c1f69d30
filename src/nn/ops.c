#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>

#include "nn/dnnl.h"
#include "core/err.h"

#include "nn/fastmath.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

/* Below this many elements a parallel region costs more than the loop (and under CPU
 * contention its barrier can stall for a whole time slice). */
#define PAR_MIN 32768

void op_linear_ld(float *y, int ldy, const float *x, int ldx, const ss_linear *l, int M) {
    if (M <= 0) return;
    if (l->wb) {
        if (ss_dnnl_linear(y, ldy, NULL, x, ldx, l->wb, l->packed, l->b, M, l->out, l->in, 0) < 0) {
            fprintf(stderr, "sinkscope: %s\n", ss_err());
            for (int i = 0; i < M; i++)
                for (int o = 0; o < l->out; o++) y[(size_t)i * ldy + o] = NAN;
        }
        return;
    }
    if (l->b) {
#pragma omp parallel for schedule(static) if ((size_t)M * l->out > PAR_MIN)
        for (int i = 0; i < M; i++)
            for (int o = 0; o < l->out; o++) y[(size_t)i * ldy + o] = l->b[o];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, l->out, l->in, 1.0f, x, ldx, l->w,
                l->in, l->b ? 1.0f : 0.0f, y, ldy);
}

/* Row statistics in double: D is at most a few thousand, so this costs nothing and keeps the
 * variance accurate for rows with a large mean (massive activations). */
static void row_moments(const float *x, int D, float eps, float *mean, float *rstd) {
    double s = 0, ss = 0;
    for (int j = 0; j < D; j++) s += x[j];
    double mu = s / D;
    for (int j = 0; j < D; j++) {
        double d = x[j] - mu;
        ss += d * d;
    }
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(ss / D + eps));
}

/* The bf16 path's products: a failure (out of memory) leaves NaN in y (bf16 0x7fc0 for the GELU
 * output), as op_linear does, and the reason on stderr. */
void op_linear_b16(float *y, const uint16_t *x, const ss_linear *l, int M) {
    if (M <= 0) return;
    if (ss_dnnl_linear(y, l->out, x, NULL, l->in, l->wb, l->packed, l->b, M, l->out, l->in, 0) < 0) {
        fprintf(stderr, "sinkscope: %s\n", ss_err());
        for (size_t i = 0; i < (size_t)M * l->out; i++) y[i] = NAN;
    }
}

void op_linear_gelu_b16(uint16_t *y, const uint16_t *x, const ss_linear *l, int M) {
    if (M <= 0) return;
    if (ss_dnnl_linear(y, l->out, x, NULL, l->in, l->wb, l->packed, l->b, M, l->out, l->in, SS_DNNL_GELU_BF16) < 0) {
        fprintf(stderr, "sinkscope: %s\n", ss_err());
        for (size_t i = 0; i < (size_t)M * l->out; i++) y[i] = 0x7fc0;
    }
}

void op_ff_residual(float *x, const float *shift, const float *scale, const float *gate, const ss_linear *f1,
                    const ss_linear *f2, float *n, float *h, int M, int D) {
    if (f1->wb && f2->wb) { /* bf16: the LN output and the GELU output rounded once, each in half its buffer */
        uint16_t *n16 = (uint16_t *)n, *h16 = (uint16_t *)h;
        op_ln_modulate_b16(n16, x, shift, scale, M, D, 1e-6f);
        op_linear_gelu_b16(h16, n16, f1, M);
        op_linear_b16(n, h16, f2, M);
    } else {
        op_ln_modulate(n, x, shift, scale, M, D, 1e-6f);
        op_linear(h, n, f1, M);
        op_gelu_tanh(h, (size_t)M * f1->out);
        op_linear(n, h, f2, M);
    }
    op_add_gated(x, n, gate, M, D);
}

void op_layernorm(float *y, const float *x, int M, int D, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)M * D > PAR_MIN)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D, mu, rs;
        row_moments(xi, D, eps, &mu, &rs);
        for (int j = 0; j < D; j++) yi[j] = (xi[j] - mu) * rs;
    }
}

void op_ln_modulate(float *y, const float *x, const float *shift, const float *scale, int M, int D,
                    float eps) {
#pragma omp parallel for schedule(static) if ((size_t)M * D > PAR_MIN)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D, mu, rs;
        row_moments(xi, D, eps, &mu, &rs);
        for (int j = 0; j < D; j++) yi[j] = (xi[j] - mu) * rs * (1.0f + scale[j]) + shift[j];
    }
}

/* row_moments with the sums vectorized (lanes summed in the order the compiler fixes: the same
 * bits for every thread count, not row_moments' bits; the bf16 path rounds far coarser). */
static void row_moments_simd(const float *x, int D, float eps, float *mean, float *rstd) {
    double s = 0, ss = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < D; j++) s += x[j];
    const double mu = s / D;
#pragma omp simd reduction(+ : ss)
    for (int j = 0; j < D; j++) ss += (x[j] - mu) * (x[j] - mu);
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(ss / D + eps));
}

void op_ln_modulate_b16(uint16_t *y, const float *x, const float *shift, const float *scale, int M, int D,
                        float eps) {
#pragma omp parallel for schedule(static) if ((size_t)M * D > PAR_MIN)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        uint16_t *yi = y + (size_t)i * D;
        float mu, rs;
        row_moments_simd(xi, D, eps, &mu, &rs);
#pragma omp simd
        for (int j = 0; j < D; j++) yi[j] = ss_bf16_from_f32((xi[j] - mu) * rs * (1.0f + scale[j]) + shift[j]);
    }
}

void op_rmsnorm_heads(float *x, int ld, const float *w, int M, int H, int dh, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)M * H * dh > PAR_MIN)
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            float *v = x + (size_t)i * ld + (size_t)h * dh;
            double ss = 0;
            for (int d = 0; d < dh; d++) ss += (double)v[d] * v[d];
            float r = (float)(1.0 / sqrt(ss / dh + eps));
            for (int d = 0; d < dh; d++) v[d] = v[d] * r * w[d];
        }
}

void op_gelu_tanh(float *x, size_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = ss_gelu_tanh(x[i]);
}

void op_silu(float *y, const float *x, size_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = ss_silu(x[i]);
}

void op_add_gated(float *y, const float *x, const float *gate, int M, int D) {
#pragma omp parallel for schedule(static) if ((size_t)M * D > PAR_MIN)
    for (int i = 0; i < M; i++) {
        float *yi = y + (size_t)i * D;
        const float *xi = x + (size_t)i * D;
#pragma omp simd
        for (int j = 0; j < D; j++) yi[j] += gate[j] * xi[j];
    }
}

void op_timestep_embedding(float *out, const float *t, int B, int dim) {
    int half = dim / 2;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            /* diffusers: fp32 exponent, fp32 product; we keep them in double, which is what the
             * float64 reference computes and within fp32 rounding of the fp32 pipeline. */
            double freq = exp(-log(10000.0) * k / half);
            double arg = (double)t[b] * freq;
            out[(size_t)b * dim + k] = (float)cos(arg);
            out[(size_t)b * dim + half + k] = (float)sin(arg);
        }
}

#define NF_CHUNK 4096

static int chunk_nonfinite(const float *x, size_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (size_t i = 0; i < n; i++) acc += x[i] * 0.0f;
    return acc != 0.0f; /* 0 * finite = 0; 0 * inf and NaN give NaN, which sticks */
}

long long op_first_nonfinite(const float *x, size_t n) {
    const long long nch = (long long)((n + NF_CHUNK - 1) / NF_CHUNK);
    int bad = 0;
    if (n > 8 * PAR_MIN) { /* a stream of 1024 x 1536 is worth both cores (1.6 ms of a 0.23 s bf16 forward alone) */
#pragma omp parallel for schedule(static) reduction(| : bad)
        for (long long c = 0; c < nch; c++) {
            const size_t i0 = (size_t)c * NF_CHUNK, len = n - i0 < NF_CHUNK ? n - i0 : NF_CHUNK;
            bad |= chunk_nonfinite(x + i0, len);
        }
        if (!bad) return -1;
    }
    for (long long c = 0; c < nch; c++) {
        const size_t i0 = (size_t)c * NF_CHUNK, len = n - i0 < NF_CHUNK ? n - i0 : NF_CHUNK;
        if (!chunk_nonfinite(x + i0, len)) continue;
        for (size_t i = i0; i < i0 + len; i++)
            if (!isfinite(x[i])) return (long long)i;
    }
    return -1;
}

void op_layernorm_affine(float *y, const float *x, const float *w, const float *b, int M, int D, float eps) {
    op_layernorm(y, x, M, D, eps);
#pragma omp parallel for schedule(static) if ((size_t)M * D > 65536)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < D; j++) y[(size_t)i * D + j] = y[(size_t)i * D + j] * w[j] + b[j];
}

void op_activation(float *x, size_t n, int kind) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        switch (kind) {
        case OP_ACT_QUICK_GELU: x[i] = v / (1.0f + expf(-1.702f * v)); break;
        case OP_ACT_GELU: x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); break;
        case OP_ACT_GELU_TANH: x[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))); break;
        default: x[i] = v > 0 ? v : 0; break;
        }
    }
}

void op_row_moments(const float *x, int D, float eps, float *mean, float *rstd) { row_moments(x, D, eps, mean, rstd); }
