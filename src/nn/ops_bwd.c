/* ops_bwd: backward kernels of nn/ops.h and of the materialized attention (formulas in
 * ops_bwd.h and below). */
#include "nn/ops_bwd.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "nn/fastmath.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi), as ss_gelu_tanh */
#define GELU_C 0.044715f
#define COLBLK 64 /* columns per task in column sums: fixed, so sums do not depend on threads */
/* Below this many elements a loop runs on one thread (a parallel region costs a fork and a
 * barrier, which dominate small tensors and stall badly when the cores are shared). */
#define PAR(n) ((size_t)(n) > 32768)
/* On `parallel for simd`, a plain if() clause also turns simd off when false (OpenMP 5): the
 * elementwise loops below name the construct, so small tensors stay vectorized. */

/* out[g*ldo + j] += sum_r a[g,r,j] * (b ? b[g,r,j] : 1) for G groups of R rows of width D.
 * Split by (group, column block): each output is summed in row order by one thread. */
static void colsum(float *out, int ldo, const float *a, const float *b, int G, int R, int D) {
    const int nb = (D + COLBLK - 1) / COLBLK;
#pragma omp parallel for schedule(static) collapse(2) if (PAR((size_t)G * R * D))
    for (int g = 0; g < G; g++)
        for (int cb = 0; cb < nb; cb++) {
            const int j0 = cb * COLBLK, w = D - j0 < COLBLK ? D - j0 : COLBLK;
            double acc[COLBLK] = {0};
            for (int r = 0; r < R; r++) {
                const size_t o = ((size_t)g * R + r) * D + j0;
                if (b)
                    for (int j = 0; j < w; j++) acc[j] += (double)a[o + j] * b[o + j];
                else
                    for (int j = 0; j < w; j++) acc[j] += a[o + j];
            }
            for (int j = 0; j < w; j++) out[(size_t)g * ldo + j0 + j] += (float)acc[j];
        }
}

void op_linear_bwd(float *dx, float beta, float *dw, float *db, const float *dy, const float *x, const ss_linear *l,
                   int M) {
    if (M <= 0) return;
    const int in = l->in, out = l->out;
    /* dW[out,in] += dy^T[out,M] x[M,in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, M, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db) colsum(db, 0, dy, NULL, 1, M, out);
    /* dx[M,in] = beta dx + dy[M,out] W[out,in] */
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, in, out, 1.0f, dy, out, l->w, in, beta, dx, in);
}

void op_ln_modulate_bwd(float *dx, float *dshift, float *dscale, const float *dy, const float *x, const float *scale,
                        int ldm, int G, int R, int D, float eps, float *xhat) {
    const long rows = (long)G * R;
#pragma omp parallel for schedule(static) if (PAR(rows * D))
    for (long i = 0; i < rows; i++) {
        const float *xi = x + (size_t)i * D;
        float *hi = xhat + (size_t)i * D, mu, rs;
        op_row_moments(xi, D, eps, &mu, &rs);
        for (int j = 0; j < D; j++) hi[j] = (xi[j] - mu) * rs; /* the forward's LN(x), bit for bit */
    }
    if (dshift) colsum(dshift, ldm, dy, NULL, G, R, D);
    if (dscale) colsum(dscale, ldm, dy, xhat, G, R, D);
#pragma omp parallel for schedule(static) if (PAR(rows * D))
    for (long i = 0; i < rows; i++) {
        const float *dyi = dy + (size_t)i * D, *hi = xhat + (size_t)i * D;
        const float *sc = scale ? scale + (size_t)(i / R) * ldm : NULL;
        float mu, rs;
        op_row_moments(x + (size_t)i * D, D, eps, &mu, &rs);
        /* with g = dy*(1+scale): dx = rstd * (g - mean(g) - xhat * mean(g*xhat)) */
        double a = 0, b = 0;
        for (int j = 0; j < D; j++) {
            const double g = sc ? (double)dyi[j] * (1.0f + sc[j]) : dyi[j];
            a += g;
            b += g * hi[j];
        }
        const float ma = (float)(a / D), mb = (float)(b / D);
        float *dxi = dx + (size_t)i * D;
        for (int j = 0; j < D; j++) {
            const float g = sc ? dyi[j] * (1.0f + sc[j]) : dyi[j];
            dxi[j] += rs * (g - ma - hi[j] * mb);
        }
    }
}

/* 1/rms of one head's dh values, as op_rmsnorm_heads computes it. */
static float head_rinv(const float *x, int dh, float eps) {
    double ss = 0;
    for (int d = 0; d < dh; d++) ss += (double)x[d] * x[d];
    return (float)(1.0 / sqrt(ss / dh + eps));
}

void op_rmsnorm_heads_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, int M, int H, int dh,
                          float eps) {
    /* dw[d] += sum over (row, head) of dy*x*r: column sums over M*H rows of width dh. The
     * product is formed once per element into dx first (dx is overwritten below anyway). */
#pragma omp parallel for schedule(static) if (PAR((size_t)M * H * dh))
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)i * H + h) * dh;
            const float ri = head_rinv(x + o, dh, eps);
            for (int d = 0; d < dh; d++) dx[o + d] = dy[o + d] * x[o + d] * ri;
        }
    colsum(dw, 0, dx, NULL, 1, M * H, dh);
    /* dx = r*(dy*w) - x * r^3/dh * sum(dy*w*x) */
#pragma omp parallel for schedule(static) if (PAR((size_t)M * H * dh))
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)i * H + h) * dh;
            const float ri = head_rinv(x + o, dh, eps);
            double s = 0;
            for (int d = 0; d < dh; d++) s += (double)dy[o + d] * w[d] * x[o + d];
            const float c = (float)(s * ri * ri * ri / dh);
            for (int d = 0; d < dh; d++) dx[o + d] = ri * dy[o + d] * w[d] - x[o + d] * c;
        }
}

void op_gelu_tanh_bwd(float *dx, const float *dy, const float *x, size_t n) {
    const long m = (long)n;
#pragma omp parallel for simd schedule(static) if (parallel : PAR(m))
    for (long i = 0; i < m; i++) {
        const float v = x[i], th = ss_tanhf(GELU_K * (v + GELU_C * v * v * v));
        const float dg = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] = dy[i] * dg;
    }
}

void op_silu_bwd(float *dx, const float *dy, const float *x, size_t n) {
    const long m = (long)n;
#pragma omp parallel for simd schedule(static) if (parallel : PAR(m))
    for (long i = 0; i < m; i++) {
        const float s = 1.0f / (1.0f + ss_expf(-x[i]));
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

void op_add_gated_bwd(float *dx, float *dgate, const float *dy, const float *x, const float *gate, int ldg, int G, int R,
                      int D) {
    if (dgate) colsum(dgate, ldg, dy, x, G, R, D);
    const long rows = (long)G * R;
#pragma omp parallel for schedule(static) if (PAR(rows * D))
    for (long i = 0; i < rows; i++) {
        const float *g = gate + (size_t)(i / R) * ldg, *dyi = dy + (size_t)i * D;
        float *dxi = dx + (size_t)i * D;
#pragma omp simd
        for (int j = 0; j < D; j++) dxi[j] = dyi[j] * g[j];
    }
}

/* ---- attention ---- */

/* Head h's [L, dh] block of x (row stride ld) into dense rows, and back. */
static void pack(float *dst, const float *x, int h, int L, int ld, int dh) {
    for (int t = 0; t < L; t++) memcpy(dst + (size_t)t * dh, x + (size_t)t * ld + (size_t)h * dh, sizeof(float) * dh);
}

static void unpack(float *x, const float *src, int h, int L, int ld, int dh) {
    for (int t = 0; t < L; t++) memcpy(x + (size_t)t * ld + (size_t)h * dh, src + (size_t)t * dh, sizeof(float) * dh);
}

int attn_materialized_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, const float *out, const float *P, int L, int H, int dh, int ld, float scale) {
    int err = 0;
#pragma omp parallel if (PAR((size_t)H * L * L))
    {
        const size_t td = (size_t)L * dh;
        float *qb = malloc(sizeof(float) * (7 * td + (size_t)L * L + L));
        if (!qb) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            if (!qb) continue;
            float *kb = qb + td, *vb = kb + td, *ob = vb + td, *dO = ob + td, *dA = dO + td, *dB = dA + td;
            float *dS = dB + td, *delta = dS + (size_t)L * L;
            const float *Ph = P + (size_t)h * L * L;
            pack(qb, q, h, L, ld, dh);
            pack(kb, k, h, L, ld, dh);
            pack(vb, v, h, L, ld, dh);
            pack(ob, out, h, L, ld, dh);
            pack(dO, dout, h, L, ld, dh);
            /* dV = P^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, L, 1.0f, Ph, L, dO, dh, 0.0f, dA, dh);
            unpack(dv, dA, h, L, ld, dh);
            /* dP = dO V^T; dS = P * (dP - delta), delta_i = sum_j P_ij dP_ij = dO_i . O_i */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, dh, 1.0f, dO, dh, vb, dh, 0.0f, dS, L);
            for (int i = 0; i < L; i++) {
                double s = 0;
                for (int d = 0; d < dh; d++) s += (double)dO[(size_t)i * dh + d] * ob[(size_t)i * dh + d];
                delta[i] = (float)s;
            }
            for (int i = 0; i < L; i++) {
                float *row = dS + (size_t)i * L;
                const float *prow = Ph + (size_t)i * L;
#pragma omp simd
                for (int j = 0; j < L; j++) row[j] = prow[j] * (row[j] - delta[i]);
            }
            /* logits = scale * q k^T: dQ = scale dS K, dK = scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, dh, L, scale, dS, L, kb, dh, 0.0f, dA, dh);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, dh, L, scale, dS, L, qb, dh, 0.0f, dB, dh);
            unpack(dq, dA, h, L, ld, dh);
            unpack(dk, dB, h, L, ld, dh);
        }
        free(qb);
    }
    return err ? ss_fail(SS_ENOMEM, "attention backward: out of memory (L=%d, dh=%d)", L, dh) : 0;
}
