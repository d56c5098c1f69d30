/* tops: forward and backward kernels of the trainer (formulas in tops.h and below). */
#include "train/tops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fastmath.h"
#include "text/tokenizer.h"


#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

#define COLBLK 64
/* Below this many elements a loop runs on one thread: a parallel region costs a fork and a
 * barrier, which dominate small tensors (and stall badly when the cores are shared). */
#define PAR_MIN 32768
#define PAR(n) ((size_t)(n) > PAR_MIN) /* columns per task in column sums: fixed, so sums do not depend on threads */

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

void tr_linear_fwd(float *y, const float *x, const float *W, const float *b, int M, int in, int out) {
    if (M <= 0) return;
    if (b) {
#pragma omp parallel for schedule(static) if (PAR((size_t)M * out))
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * out, b, sizeof(float) * out);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f, y, out);
}

void tr_linear_bwd(float *dx, float beta, float *dW, float *db, const float *dy, const float *x, const float *W,
                   int M, int in, int out) {
    if (M <= 0) return;
    /* dW[out,in] += dy^T[out,M] x[M,in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, M, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) colsum(db, 0, dy, NULL, 1, M, out);
    /* dx[M,in] = beta dx + dy[M,out] W[out,in] */
    if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, in, out, 1.0f, dy, out, W, in, beta, dx, in);
}

void tr_lnmod_fwd(float *y, float *xhat, float *rstd, const float *x, const float *shift, const float *scale,
                  int ldm, int G, int R, int D) {
    const long rows = (long)G * R;
#pragma omp parallel for schedule(static) if (PAR(rows * D))
    for (long i = 0; i < rows; i++) {
        const float *xi = x + (size_t)i * D;
        /* row statistics in double, as the inference op does */
        double s = 0, ss = 0;
        for (int j = 0; j < D; j++) s += xi[j];
        const double mu = s / D;
        for (int j = 0; j < D; j++) ss += (xi[j] - mu) * (xi[j] - mu);
        const float m = (float)mu, rs = (float)(1.0 / sqrt(ss / D + 1e-6));
        float *hi = xhat + (size_t)i * D, *yi = y + (size_t)i * D;
        for (int j = 0; j < D; j++) hi[j] = (xi[j] - m) * rs;
        rstd[i] = rs;
        if (scale) {
            const float *sc = scale + (size_t)(i / R) * ldm, *sh = shift + (size_t)(i / R) * ldm;
            for (int j = 0; j < D; j++) yi[j] = hi[j] * (1.0f + sc[j]) + sh[j];
        } else if (yi != hi) {
            memcpy(yi, hi, sizeof(float) * D);
        }
    }
}

void tr_lnmod_bwd(float *dx, float *dshift, float *dscale, const float *dy, const float *xhat, const float *rstd,
                  const float *scale, int ldm, int G, int R, int D) {
    if (dshift) colsum(dshift, ldm, dy, NULL, G, R, D);
    if (dscale) colsum(dscale, ldm, dy, xhat, G, R, D);
    const long rows = (long)G * R;
#pragma omp parallel for schedule(static) if (PAR(rows * D))
    for (long i = 0; i < rows; i++) {
        const float *dyi = dy + (size_t)i * D, *hi = xhat + (size_t)i * D;
        const float *sc = scale ? scale + (size_t)(i / R) * ldm : NULL;
        /* with g = dy*(1+scale): dx = rstd * (g - mean(g) - xhat * mean(g*xhat)) */
        double a = 0, b = 0;
        for (int j = 0; j < D; j++) {
            const double g = sc ? (double)dyi[j] * (1.0f + sc[j]) : dyi[j];
            a += g;
            b += g * hi[j];
        }
        const float ma = (float)(a / D), mb = (float)(b / D), rs = rstd[i];
        float *dxi = dx + (size_t)i * D;
        for (int j = 0; j < D; j++) {
            const float g = sc ? dyi[j] * (1.0f + sc[j]) : dyi[j];
            dxi[j] += rs * (g - ma - hi[j] * mb);
        }
    }
}

void tr_rms_fwd(float *y, float *r, const float *x, const float *w, int M, int H, int dh) {
#pragma omp parallel for schedule(static) if (PAR((size_t)M * H * dh))
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)i * H + h) * dh;
            double ss = 0;
            for (int d = 0; d < dh; d++) ss += (double)x[o + d] * x[o + d];
            const float ri = (float)(1.0 / sqrt(ss / dh + 1e-6));
            r[(size_t)i * H + h] = ri;
            for (int d = 0; d < dh; d++) y[o + d] = x[o + d] * ri * w[d];
        }
}

void tr_rms_bwd(float *dx, float *dw, const float *dy, const float *x, const float *r, const float *w, int M, int H,
                int dh) {
    /* dw[d] += sum over (row, head) of dy*x*r: column sums over M*H rows of width dh. The
     * product is formed once per element into dx first (dx is overwritten below anyway). */
#pragma omp parallel for schedule(static) if (PAR((size_t)M * H * dh))
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)i * H + h) * dh;
            const float ri = r[(size_t)i * H + h];
            for (int d = 0; d < dh; d++) dx[o + d] = dy[o + d] * x[o + d] * ri;
        }
    colsum(dw, 0, dx, NULL, 1, M * H, dh);
    /* dx = r*(dy*w) - x * r^3/dh * sum(dy*w*x) */
#pragma omp parallel for schedule(static) if (PAR((size_t)M * H * dh))
    for (int i = 0; i < M; i++)
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)i * H + h) * dh;
            const float ri = r[(size_t)i * H + h];
            double s = 0;
            for (int d = 0; d < dh; d++) s += (double)dy[o + d] * w[d] * x[o + d];
            const float c = (float)(s * ri * ri * ri / dh);
            for (int d = 0; d < dh; d++) dx[o + d] = ri * dy[o + d] * w[d] - x[o + d] * c;
        }
}

void tr_gelu_fwd(float *y, const float *x, size_t n) {
    const long m = (long)n;
#pragma omp parallel for simd schedule(static) if (PAR(m))
    for (long i = 0; i < m; i++) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + ss_tanhf(GELU_K * (v + GELU_C * v * v * v)));
    }
}

void tr_gelu_bwd(float *dx, const float *dy, const float *x, size_t n) {
    const long m = (long)n;
#pragma omp parallel for simd schedule(static) if (PAR(m))
    for (long i = 0; i < m; i++) {
        const float v = x[i], th = ss_tanhf(GELU_K * (v + GELU_C * v * v * v));
        const float dg = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] = dy[i] * dg;
    }
}

void tr_silu_fwd(float *y, const float *x, size_t n) {
    const long m = (long)n;
#pragma omp parallel for simd schedule(static) if (PAR(m))
    for (long i = 0; i < m; i++) y[i] = x[i] / (1.0f + ss_expf(-x[i]));
}

void tr_silu_bwd(float *dx, const float *dy, const float *x, size_t n) {
    const long m = (long)n;
#pragma omp parallel for simd schedule(static) if (PAR(m))
    for (long i = 0; i < m; i++) {
        const float s = 1.0f / (1.0f + ss_expf(-x[i]));
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

void tr_gated_fwd(float *y, const float *x, const float *gate, int ldg, int G, int R, int D) {
    const long rows = (long)G * R;
#pragma omp parallel for schedule(static) if (PAR(rows * D))
    for (long i = 0; i < rows; i++) {
        const float *g = gate + (size_t)(i / R) * ldg, *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D;
#pragma omp simd
        for (int j = 0; j < D; j++) yi[j] += g[j] * xi[j];
    }
}

void tr_gated_bwd(float *dx, float *dgate, const float *dy, const float *x, const float *gate, int ldg, int G, int R,
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

/* Copy head h of batch b's T joint tokens into a dense [T, dh] block (image rows, then text). */
static void pack(float *dst, const float *xi, const float *xt, int b, int h, int N, int S, int ld, int dh) {
    for (int t = 0; t < N; t++) memcpy(dst + (size_t)t * dh, xi + ((size_t)b * N + t) * ld + (size_t)h * dh, sizeof(float) * dh);
    for (int t = 0; t < S; t++)
        memcpy(dst + (size_t)(N + t) * dh, xt + ((size_t)b * S + t) * ld + (size_t)h * dh, sizeof(float) * dh);
}

static void unpack(float *xi, float *xt, const float *src, int b, int h, int N, int S, int ld, int dh) {
    for (int t = 0; t < N; t++) memcpy(xi + ((size_t)b * N + t) * ld + (size_t)h * dh, src + (size_t)t * dh, sizeof(float) * dh);
    for (int t = 0; t < S; t++)
        memcpy(xt + ((size_t)b * S + t) * ld + (size_t)h * dh, src + (size_t)(N + t) * dh, sizeof(float) * dh);
}

void tr_attn_fwd(float *Oi, float *Ot, float *P, const float *Qi, const float *Ki, const float *Vi,
                 const float *Qt, const float *Kt, const float *Vt, int B, int H, int N, int S, int dh) {
    const int T = N + S, ld = H * dh;
    const float scale = 1.0f / sqrtf((float)dh);
#pragma omp parallel if (PAR((size_t)B * H * T * T))
    {
        /* per-thread packed Q, K, V, O; BLAS runs single-threaded inside the parallel region */
        float *q = malloc(sizeof(float) * 4 * (size_t)T * dh), *k = q + (size_t)T * dh, *v = k + (size_t)T * dh,
              *o = v + (size_t)T * dh;
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                float *Pb = P + ((size_t)b * H + h) * T * T;
                pack(q, Qi, Qt, b, h, N, S, ld, dh);
                pack(k, Ki, Kt, b, h, N, S, ld, dh);
                pack(v, Vi, Vt, b, h, N, S, ld, dh);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, scale, q, dh, k, dh, 0.0f, Pb, T);
                for (int i = 0; i < T; i++) {
                    float *row = Pb + (size_t)i * T, mx = row[0], sum = 0;
                    for (int j = 1; j < T; j++) mx = row[j] > mx ? row[j] : mx;
#pragma omp simd reduction(+ : sum)
                    for (int j = 0; j < T; j++) {
                        row[j] = ss_expf(row[j] - mx);
                        sum += row[j];
                    }
                    const float inv = 1.0f / sum;
                    for (int j = 0; j < T; j++) row[j] *= inv;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, 1.0f, Pb, T, v, dh, 0.0f, o, dh);
                unpack(Oi, Ot, o, b, h, N, S, ld, dh);
            }
        free(q);
    }
}

void tr_attn_bwd(float *dQi, float *dKi, float *dVi, float *dQt, float *dKt, float *dVt, const float *dOi,
                 const float *dOt, const float *Oi, const float *Ot, const float *P, const float *Qi, const float *Ki,
                 const float *Vi, const float *Qt, const float *Kt, const float *Vt, int B, int H, int N, int S, int dh) {
    const int T = N + S, ld = H * dh;
    const float scale = 1.0f / sqrtf((float)dh);
#pragma omp parallel if (PAR((size_t)B * H * T * T))
    {
        const size_t td = (size_t)T * dh;
        float *q = malloc(sizeof(float) * (7 * td + (size_t)T * T + T));
        float *k = q + td, *v = k + td, *o = v + td, *dO = o + td, *dA = dO + td, *dB = dA + td;
        float *dS = dB + td, *delta = dS + (size_t)T * T;
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const float *Pb = P + ((size_t)b * H + h) * T * T;
                pack(q, Qi, Qt, b, h, N, S, ld, dh);
                pack(k, Ki, Kt, b, h, N, S, ld, dh);
                pack(v, Vi, Vt, b, h, N, S, ld, dh);
                pack(o, Oi, Ot, b, h, N, S, ld, dh);
                pack(dO, dOi, dOt, b, h, N, S, ld, dh);
                /* dV = P^T dO */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, 1.0f, Pb, T, dO, dh, 0.0f, dA, dh);
                unpack(dVi, dVt, dA, b, h, N, S, ld, dh);
                /* dP = dO V^T; dS = P * (dP - delta), delta_i = sum_j P_ij dP_ij = dO_i . O_i */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, 1.0f, dO, dh, v, dh, 0.0f, dS, T);
                for (int i = 0; i < T; i++) {
                    double s = 0;
                    for (int d = 0; d < dh; d++) s += (double)dO[(size_t)i * dh + d] * o[(size_t)i * dh + d];
                    delta[i] = (float)s;
                }
                for (int i = 0; i < T; i++) {
                    float *row = dS + (size_t)i * T;
                    const float *prow = Pb + (size_t)i * T;
#pragma omp simd
                    for (int j = 0; j < T; j++) row[j] = prow[j] * (row[j] - delta[i]);
                }
                /* logits = scale * q k^T: dQ = scale dS K, dK = scale dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, scale, dS, T, k, dh, 0.0f, dA, dh);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, scale, dS, T, q, dh, 0.0f, dB, dh);
                unpack(dQi, dQt, dA, b, h, N, S, ld, dh);
                unpack(dKi, dKt, dB, b, h, N, S, ld, dh);
            }
        free(q);
    }
}

/* ---- layout ---- */

void tr_patchify(float *pv, const float *x, int B, int C, int Hi, int Wi, int p) {
    const int h = Hi / p, w = Wi / p, cp = C * p * p;
#pragma omp parallel for collapse(2) schedule(static) if (PAR((size_t)B * C * Hi * Wi))
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) {
                float *v = pv + (((size_t)b * h + r) * w + q) * cp;
                for (int c = 0; c < C; c++)
                    for (int py = 0; py < p; py++)
                        for (int px = 0; px < p; px++)
                            v[(c * p + py) * p + px] = x[(((size_t)b * C + c) * Hi + r * p + py) * Wi + q * p + px];
            }
}

/* unpatchify and its adjoint are the same index map read in opposite directions */
static void unpatch_map(float *out, float *y, int B, int C, int Hi, int Wi, int p, int to_image) {
    const int h = Hi / p, w = Wi / p, pp = p * p * C;
#pragma omp parallel for collapse(2) schedule(static) if (PAR((size_t)B * C * Hi * Wi))
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) {
                float *yt = y + (((size_t)b * h + r) * w + q) * pp;
                for (int py = 0; py < p; py++)
                    for (int px = 0; px < p; px++)
                        for (int c = 0; c < C; c++) {
                            float *o = out + (((size_t)b * C + c) * Hi + r * p + py) * Wi + q * p + px;
                            float *t = yt + (py * p + px) * C + c;
                            if (to_image) *o = *t;
                            else *t = *o;
                        }
            }
}

void tr_unpatchify(float *out, const float *y, int B, int C, int Hi, int Wi, int p) {
    unpatch_map(out, (float *)y, B, C, Hi, Wi, p, 1); /* y is only read */
}

void tr_unpatchify_bwd(float *dy, const float *dout, int B, int C, int Hi, int Wi, int p) {
    unpatch_map((float *)dout, dy, B, C, Hi, Wi, p, 0); /* dout is only read */
}

/* ---- text embeddings ---- */

void tr_embed_fwd(float *ehs, float *pooled, const float *tok, const float *pos, const int32_t *ids, int B, int S,
                  int J) {
#pragma omp parallel for schedule(static) if (PAR((size_t)B * S * J))
    for (int b = 0; b < B; b++) {
        double *acc = calloc((size_t)J, sizeof *acc);
        int count = 0;
        for (int s = 0; s < S; s++) {
            const int id = ids[(size_t)b * S + s];
            const float *t = tok + (size_t)id * J, *ps = pos + (size_t)s * J;
            float *o = ehs + ((size_t)b * S + s) * J;
            for (int j = 0; j < J; j++) o[j] = t[j] + ps[j];
            if (id != TOK_PAD) {
                for (int j = 0; j < J; j++) acc[j] += t[j];
                count++;
            }
        }
        for (int j = 0; j < J; j++) pooled[(size_t)b * J + j] = count ? (float)(acc[j] / count) : 0.0f;
        free(acc);
    }
}

void tr_embed_bwd(float *dtok, float *dpos, const float *dehs, const float *dpooled, const int32_t *ids, int B, int S,
                  int J) {
    /* serial: rows of dtok are shared between batch elements (scatter-add), and this is tiny */
    for (int b = 0; b < B; b++) {
        int count = 0;
        for (int s = 0; s < S; s++) count += ids[(size_t)b * S + s] != TOK_PAD;
        const float inv = count ? 1.0f / count : 0.0f;
        for (int s = 0; s < S; s++) {
            const int id = ids[(size_t)b * S + s];
            const float *g = dehs + ((size_t)b * S + s) * J, *gp = dpooled + (size_t)b * J;
            float *t = dtok + (size_t)id * J, *ps = dpos + (size_t)s * J;
            for (int j = 0; j < J; j++) ps[j] += g[j];
            if (id != TOK_PAD)
                for (int j = 0; j < J; j++) t[j] += g[j] + gp[j] * inv;
            else
                for (int j = 0; j < J; j++) t[j] += g[j];
        }
    }
}
