#include "core/attn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fastmath.h"

typedef struct {
    float *S;       /* [ATTN_BQ, kc] logits, then exponentials */
    float *acc;     /* [ATTN_BQ, dh] unnormalized P V */
    float *srow;    /* [kc] copy of one row's logits (probe: entropy needs s - m) */
    float *col_img; /* [kc] column sums of one tile, image rows */
    float *col_txt; /* [kc] the same, text rows */
    float top[ATTN_BQ][5];
    double ent[ATTN_BQ];
} scratch;

static int g_kc = ATTN_KC;
void attn_set_key_chunk(int kc) { g_kc = kc > 0 ? kc : ATTN_KC; }

static inline size_t idx3(const attn_args *a, int b, int h, int t) {
    return ((size_t)b * a->H + h) * a->T + t;
}

/* Keep the 5 largest values seen, sorted descending. */
static inline void top5_push(float *t, float e) {
    if (e <= t[4]) return;
    int i = 4;
    while (i > 0 && t[i - 1] < e) {
        t[i] = t[i - 1];
        i--;
    }
    t[i] = e;
}

/* Probe bookkeeping for one row of final exponentials e (relative to the final row max m),
 * keys [j0, j0+kc). x = the row's logits minus m (for the entropy). */
static void probe_row(const attn_args *a, scratch *w, int r, int i, const float *e, const float *s,
                      float m, float inv_l, int kc, int want_cols) {
    /* sum e (s - m) in float lanes (each partial sums at most kc/16 terms), then double */
    float ent = 0;
#pragma omp simd reduction(+ : ent)
    for (int j = 0; j < kc; j++) ent += e[j] * (s[j] - m);
    w->ent[r] += ent;
    /* top-5: skip 16-wide blocks whose maximum cannot enter the list (almost all of them) */
    float *t = w->top[r];
    int j = 0;
    for (; j + 16 <= kc; j += 16) {
        float bm = e[j];
#pragma omp simd reduction(max : bm)
        for (int u = 0; u < 16; u++) bm = e[j + u] > bm ? e[j + u] : bm;
        if (bm <= t[4]) continue;
        for (int u = 0; u < 16; u++) top5_push(t, e[j + u]);
    }
    for (; j < kc; j++) top5_push(t, e[j]);
    if (!want_cols) return;
    float *col = i < a->n_img ? w->col_img : w->col_txt;
#pragma omp simd
    for (int jj = 0; jj < kc; jj++) col[jj] += e[jj] * inv_l;
}

/* One tile of bq query rows starting at row i0 of (b, h). */
static void tile(const attn_args *a, const attn_stats *st, scratch *w, int b, int h, int i0, int bq,
                 double *g_img, double *g_txt) {
    const int T = a->T, ld = a->ld, dh = a->dh;
    const size_t base = (size_t)b * T * ld + (size_t)h * dh;
    const float *Q = a->q + base + (size_t)i0 * ld, *K = a->k + base, *V = a->v + base;
    const float scale = 1.0f / sqrtf((float)dh);
    const int KC = g_kc, nchunk = (T + KC - 1) / KC;
    const int probe = st && (st->mass_img || st->mass_txt || st->row_entropy || st->row_top5);
    const int want_cols = st && (st->mass_img || st->mass_txt);
    float m[ATTN_BQ], l[ATTN_BQ];
    for (int r = 0; r < bq; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
        w->ent[r] = 0;
        for (int t = 0; t < 5; t++) w->top[r][t] = 0;
    }
    for (int c = 0; c < nchunk; c++) {
        const int j0 = c * KC, kc = T - j0 < KC ? T - j0 : KC;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kc, dh, scale, Q, ld,
                    K + (size_t)j0 * ld, ld, 0.0f, w->S, kc);
        if (probe && nchunk == 1 && want_cols) {
            memset(w->col_img, 0, sizeof(float) * kc);
            memset(w->col_txt, 0, sizeof(float) * kc);
        }
        for (int r = 0; r < bq; r++) {
            float *row = w->S + (size_t)r * kc;
            float mx = m[r];
#pragma omp simd reduction(max : mx)
            for (int j = 0; j < kc; j++) mx = row[j] > mx ? row[j] : mx;
            const float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
            if (probe && nchunk == 1) memcpy(w->srow, row, sizeof(float) * kc);
            float sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < kc; j++) {
                float e = ss_expf(row[j] - mx);
                row[j] = e;
                sum += e;
            }
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
            if (c > 0)
                for (int d = 0; d < dh; d++) w->acc[(size_t)r * dh + d] *= alpha;
            if (probe && nchunk == 1)
                probe_row(a, w, r, i0 + r, row, w->srow, mx, 1.0f / l[r], kc, want_cols);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, dh, kc, 1.0f, w->S, kc,
                    V + (size_t)j0 * ld, ld, c > 0 ? 1.0f : 0.0f, w->acc, dh);
        if (probe && nchunk == 1 && want_cols)
            for (int j = 0; j < kc; j++) {
                g_img[j0 + j] += w->col_img[j];
                g_txt[j0 + j] += w->col_txt[j];
            }
    }
    float *O = a->out + base + (size_t)i0 * ld;
    for (int r = 0; r < bq; r++) {
        const float inv = 1.0f / l[r];
        for (int d = 0; d < dh; d++) O[(size_t)r * ld + d] = w->acc[(size_t)r * dh + d] * inv;
    }
    /* Keys spread over several chunks: the final max and sum are known only now. */
    if (probe && nchunk > 1)
        for (int c = 0; c < nchunk; c++) {
            const int j0 = c * KC, kc = T - j0 < KC ? T - j0 : KC;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kc, dh, scale, Q, ld,
                        K + (size_t)j0 * ld, ld, 0.0f, w->S, kc);
            memset(w->col_img, 0, sizeof(float) * kc);
            memset(w->col_txt, 0, sizeof(float) * kc);
            for (int r = 0; r < bq; r++) {
                float *row = w->S + (size_t)r * kc;
                memcpy(w->srow, row, sizeof(float) * kc);
                for (int j = 0; j < kc; j++) row[j] = ss_expf(row[j] - m[r]);
                probe_row(a, w, r, i0 + r, row, w->srow, m[r], 1.0f / l[r], kc, want_cols);
            }
            if (want_cols)
                for (int j = 0; j < kc; j++) {
                    g_img[j0 + j] += w->col_img[j];
                    g_txt[j0 + j] += w->col_txt[j];
                }
        }
    for (int r = 0; r < bq; r++) {
        const size_t o = idx3(a, b, h, i0 + r);
        if (st && st->row_m) st->row_m[o] = m[r];
        if (st && st->row_l) st->row_l[o] = l[r];
        if (st && st->row_entropy)
            st->row_entropy[o] = (float)(log((double)l[r]) - w->ent[r] / l[r]);
        if (st && st->row_top5) {
            double s5 = 0;
            for (int t = 0; t < 5; t++) s5 += w->top[r][t];
            st->row_top5[o] = (float)(s5 / l[r]);
        }
    }
}

static void scratch_free(scratch *w, int n) {
    if (!w) return;
    for (int i = 0; i < n; i++) {
        free(w[i].S);
        free(w[i].acc);
        free(w[i].srow);
        free(w[i].col_img);
        free(w[i].col_txt);
    }
    free(w);
}

static scratch *scratch_new(int n, int kc, int dh) {
    scratch *w = ss_calloc((size_t)n, sizeof *w);
    if (!w) return NULL;
    for (int i = 0; i < n; i++) {
        w[i].S = malloc(sizeof(float) * ATTN_BQ * kc);
        w[i].acc = malloc(sizeof(float) * ATTN_BQ * dh);
        w[i].srow = malloc(sizeof(float) * kc);
        w[i].col_img = malloc(sizeof(float) * kc);
        w[i].col_txt = malloc(sizeof(float) * kc);
        if (!w[i].S || !w[i].acc || !w[i].srow || !w[i].col_img || !w[i].col_txt) {
            scratch_free(w, n);
            ss_fail(SS_ENOMEM, "attention: out of memory for scratch buffers");
            return NULL;
        }
    }
    return w;
}

int attn_forward(const attn_args *a, const attn_stats *st) {
    const int T = a->T, kc = T < g_kc ? T : g_kc;
    const int nthr = omp_get_max_threads();
    const int want_cols = st && (st->mass_img || st->mass_txt);
    scratch *w = scratch_new(nthr, kc, a->dh);
    double *g = want_cols ? ss_calloc((size_t)ATTN_NG * 2 * T, sizeof(double)) : NULL;
    if (!w || (want_cols && !g)) {
        scratch_free(w, nthr);
        free(g);
        return SS_ENOMEM;
    }
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            if (g) memset(g, 0, sizeof(double) * ATTN_NG * 2 * T);
#pragma omp parallel for schedule(dynamic, 1)
            for (int gi = 0; gi < ATTN_NG; gi++) {
                const int r0 = (int)((long)T * gi / ATTN_NG), r1 = (int)((long)T * (gi + 1) / ATTN_NG);
                scratch *ws = &w[omp_get_thread_num()];
                double *gi_img = g ? g + (size_t)gi * 2 * T : NULL, *gi_txt = g ? gi_img + T : NULL;
                for (int i0 = r0; i0 < r1; i0 += ATTN_BQ)
                    tile(a, st, ws, b, h, i0, r1 - i0 < ATTN_BQ ? r1 - i0 : ATTN_BQ, gi_img, gi_txt);
            }
            if (!g) continue;
            const int n_img = a->n_img, n_txt = T - a->n_img;
            for (int j = 0; j < T; j++) {
                double si = 0, sx = 0;
                for (int gi = 0; gi < ATTN_NG; gi++) {
                    si += g[(size_t)gi * 2 * T + j];
                    sx += g[(size_t)gi * 2 * T + T + j];
                }
                if (st->mass_img) st->mass_img[idx3(a, b, h, j)] = n_img ? (float)(si / n_img) : 0.0f;
                if (st->mass_txt) st->mass_txt[idx3(a, b, h, j)] = n_txt ? (float)(sx / n_txt) : 0.0f;
            }
        }
    scratch_free(w, nthr);
    free(g);
    return 0;
}

int attn_reference(const attn_args *a, const attn_stats *st) {
    const int T = a->T, dh = a->dh, ld = a->ld;
    const double scale = 1.0 / sqrt((double)dh);
    double *P = ss_malloc(sizeof(double) * (size_t)T * T);
    if (!P) return SS_ENOMEM;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            const size_t base = (size_t)b * T * ld + (size_t)h * dh;
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int d = 0; d < dh; d++)
                        s += (double)a->q[base + (size_t)i * ld + d] * a->k[base + (size_t)j * ld + d];
                    P[(size_t)i * T + j] = s * scale;
                    mx = fmax(mx, s * scale);
                }
                for (int j = 0; j < T; j++) sum += exp(P[(size_t)i * T + j] - mx);
                double ent = 0, top[5] = {0};
                for (int j = 0; j < T; j++) {
                    double p = exp(P[(size_t)i * T + j] - mx) / sum;
                    P[(size_t)i * T + j] = p;
                    ent -= p * log(fmax(p, 1e-12));
                    for (int t = 0; t < 5; t++)
                        if (p > top[t]) {
                            for (int u = 4; u > t; u--) top[u] = top[u - 1];
                            top[t] = p;
                            break;
                        }
                }
                const size_t o = idx3(a, b, h, i);
                if (st && st->row_m) st->row_m[o] = (float)mx;
                if (st && st->row_l) st->row_l[o] = (float)sum;
                if (st && st->row_entropy) st->row_entropy[o] = (float)ent;
                if (st && st->row_top5) st->row_top5[o] = (float)(top[0] + top[1] + top[2] + top[3] + top[4]);
                for (int d = 0; d < dh; d++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++) acc += P[(size_t)i * T + j] * a->v[base + (size_t)j * ld + d];
                    a->out[base + (size_t)i * ld + d] = (float)acc;
                }
            }
            for (int j = 0; j < T; j++) {
                double si = 0, sx = 0;
                for (int i = 0; i < T; i++) {
                    if (i < a->n_img) si += P[(size_t)i * T + j];
                    else sx += P[(size_t)i * T + j];
                }
                if (st && st->mass_img) st->mass_img[idx3(a, b, h, j)] = a->n_img ? (float)(si / a->n_img) : 0.0f;
                if (st && st->mass_txt)
                    st->mass_txt[idx3(a, b, h, j)] = T > a->n_img ? (float)(sx / (T - a->n_img)) : 0.0f;
            }
        }
    free(P);
    return 0;
}

/* Recompute one query row from scratch with the chosen keys re-weighted by eta (score path) or
 * their values replaced by vrep (value path, vrep != NULL). */
static void row_recompute(const attn_args *a, size_t base, int i, const int *keys, int k, float eta,
                          const float *vrep, float m, float *o) {
    const int T = a->T, dh = a->dh, ld = a->ld;
    const float scale = 1.0f / sqrtf((float)dh);
    const float *q = a->q + base + (size_t)i * ld;
    double acc[512] = {0}, sum = 0; /* dh <= 512 is checked by the caller */
    for (int j = 0; j < T; j++) {
        const float *kj = a->k + base + (size_t)j * ld;
        float s = 0;
        for (int d = 0; d < dh; d++) s += q[d] * kj[d];
        double e = exp((double)(s * scale) - m);
        const float *vj = a->v + base + (size_t)j * ld;
        for (int t = 0; t < k; t++)
            if (keys[t] == j) {
                if (vrep) vj = vrep + (size_t)t * dh;
                else e *= eta;
            }
        if (e == 0) continue;
        sum += e;
        for (int d = 0; d < dh; d++) acc[d] += e * vj[d];
    }
    for (int d = 0; d < dh; d++) o[d] = (float)(acc[d] / sum);
}

int attn_apply_reweight(const attn_args *a, const attn_stats *st, const attn_reweight *rw,
                        double *before, double *after) {
    const int dh = a->dh, ld = a->ld, k = rw->k;
    if (k > ATTN_MAX_K) return ss_fail(SS_EARG, "attention: at most %d keys per head can be re-weighted", ATTN_MAX_K);
    if (dh > 512) return ss_fail(SS_EARG, "attention: head dim %d > 512 not supported", dh);
    if (!st || !st->row_m || !st->row_l)
        return ss_fail(SS_EARG, "attention: re-weighting needs the row max and sum");
    const float scale = 1.0f / sqrtf((float)dh);
    const int rows = rw->r1 - rw->r0;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            const size_t base = (size_t)b * a->T * ld + (size_t)h * dh;
            const int *keys = rw->keys + ((size_t)b * a->H + h) * k;
            const float *vrep = rw->vrep ? rw->vrep + ((size_t)b * a->H + h) * k * dh : NULL;
            double sb = 0, sa = 0;
            for (int i = rw->r0; i < rw->r1; i++) {
                const size_t o3 = idx3(a, b, h, i);
                const float m = st->row_m[o3], l = st->row_l[o3];
                const float *q = a->q + base + (size_t)i * ld;
                float *o = a->out + base + (size_t)i * ld;
                double e[ATTN_MAX_K], esum = 0;
                for (int t = 0; t < k; t++) {
                    e[t] = 0;
                    if (keys[t] < 0) continue;
                    const float *kj = a->k + base + (size_t)keys[t] * ld;
                    float s = 0;
                    for (int d = 0; d < dh; d++) s += q[d] * kj[d];
                    e[t] = exp((double)(s * scale) - m);
                    esum += e[t];
                }
                sb += esum / l;
                if (rw->value_path && esum > 0.5 * l) {
                    /* most of the row's weight is being changed: O + delta would cancel */
                    row_recompute(a, base, i, keys, k, 1.0f, vrep, m, o);
                    sa += esum / l;
                    continue;
                }
                if (rw->value_path) {
                    /* O' = O + sum_t p_t (v'_t - v_t); the weights stay as they are. */
                    for (int t = 0; t < k; t++) {
                        if (keys[t] < 0) continue;
                        const float *vj = a->v + base + (size_t)keys[t] * ld;
                        const double p = e[t] / l;
                        for (int d = 0; d < dh; d++) o[d] += (float)(p * (vrep[(size_t)t * dh + d] - vj[d]));
                    }
                    sa += esum / l;
                    continue;
                }
                const double removed = (1.0 - rw->eta) * esum, l2 = l - removed;
                sa += rw->eta * esum / l2;
                if (l2 < 0.5 * l) {
                    row_recompute(a, base, i, keys, k, rw->eta, NULL, m, o);
                    continue;
                }
                /* O' = (O l - (1-eta) sum_t e_t v_t) / l' */
                for (int d = 0; d < dh; d++) {
                    double num = (double)o[d] * l;
                    for (int t = 0; t < k; t++)
                        if (keys[t] >= 0) num -= (1.0 - rw->eta) * e[t] * a->v[base + (size_t)keys[t] * ld + d];
                    o[d] = (float)(num / l2);
                }
            }
            if (before) before[(size_t)b * a->H + h] = rows > 0 ? sb / rows : 0;
            if (after) after[(size_t)b * a->H + h] = rows > 0 ? sa / rows : 0;
        }
    return 0;
}
