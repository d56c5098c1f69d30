#include "nn/attn.h"

#include <cblas.h>
#include <math.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/dnnl.h"
#include "core/err.h"
#include "nn/fastmath.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

_Static_assert(ATTN_TQ % ATTN_BQ == 0 && ATTN_TQ >= ATTN_BQ, "bf16 tiles are whole probe blocks");

typedef struct {
    float *S;    /* [ATTN_BQ, kc] logits, then exponentials (one block of a tile's rows) */
    float *acc;  /* [tile rows (ATTN_BQ, or ATTN_TQ with bf16), dh] unnormalized P V */
    float *srow; /* [kc] copy of one row's logits (probe: entropy needs s - m) */
    float *col;  /* [ATTN_MAX_QSPAN, kc] column sums of one tile, per query span */
    float top[ATTN_TQ][5];
    double ent[ATTN_TQ];
    uint16_t *p16; /* bf16: [ATTN_TQ, B16_PAD(kc)] the exponentials rounded for P V (0 past kc) */
    uint16_t *q16; /* bf16: [ATTN_TQ, dh] the tile's queries, pre-scaled and rounded */
    float *pv;     /* bf16: [ATTN_TQ, dh] one chunk's P V */
} scratch;

/* bf16: one (b, h)'s keys and values, rounded once per (b, h): k [Tk, dh] and v [B16_PAD(Tk), dh]
 * (rows past Tk 0), dense: oneDNN 2.6's brgemm matmul takes no strided B (with the heads' row
 * stride it fell to the sgemm fallback, 4-9x slower per product). Each tile rounds its own
 * queries. Rounding all heads at once from whole rows was no faster (39-42 ms either way at
 * T 1357, one thread) and took 2 x Tk x H x dh bf16 instead of 2 x Tk x dh.
 * P V's last key chunk runs over keys padded to a multiple of 32 (P and V zero there): measured
 * with oneDNN AMX at 85 x 64, 1357 keys took 28-36 us per product, 1376 keys 20-24. */
#define B16_PAD(n) (((n) + 31) / 32 * 32)
typedef struct {
    const uint16_t *k, *v;
} bf16_head;

/* The query spans of one call, resolved from the legacy (n_img) or the general layout. */
typedef struct {
    int n, Tk;
    int end[ATTN_MAX_QSPAN];
    float *mass[ATTN_MAX_QSPAN];
    int want_cols;
} spans;

int attn_key_chunk(const attn_args *a) { return a->key_chunk > 0 ? a->key_chunk : ATTN_KC; }

static inline int n_keys(const attn_args *a) { return a->Tk > 0 ? a->Tk : a->T; }

/* per query row: [B, H, T] */
static inline size_t idx3(const attn_args *a, int b, int h, int t) {
    return ((size_t)b * a->H + h) * a->T + t;
}

static void spans_of(const attn_args *a, const attn_stats *st, spans *sp) {
    memset(sp, 0, sizeof *sp);
    sp->Tk = n_keys(a);
    if (a->n_qspan > 0) {
        sp->n = a->n_qspan < ATTN_MAX_QSPAN ? a->n_qspan : ATTN_MAX_QSPAN;
        for (int g = 0; g < sp->n; g++) {
            sp->end[g] = a->qend[g];
            sp->mass[g] = st ? st->mass[g] : NULL;
        }
    } else {
        sp->n = 2;
        sp->end[0] = a->n_img;
        sp->end[1] = a->T;
        sp->mass[0] = st ? st->mass_img : NULL;
        sp->mass[1] = st ? st->mass_txt : NULL;
    }
    for (int g = 0; g < sp->n; g++) sp->want_cols |= sp->mass[g] != NULL;
}

static inline int span_of_row(const spans *sp, int i) {
    int g = 0;
    while (g < sp->n - 1 && i >= sp->end[g]) g++;
    return g;
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
static void probe_row(const spans *sp, scratch *w, int r, int i, const float *e, const float *s,
                      float m, float inv_l, int kc) {
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
    if (!sp->want_cols) return;
    float *col = w->col + (size_t)span_of_row(sp, i) * kc;
#pragma omp simd
    for (int jj = 0; jj < kc; jj++) col[jj] += e[jj] * inv_l;
}

/* Masked keys of one row's chunk: logits to -inf before the max (kv = key_valid + j0). */
static inline void mask_logits(float *row, const uint8_t *kv, int kc) {
    for (int j = 0; j < kc; j++)
        if (!kv[j]) row[j] = -INFINITY;
}

/* Masked keys after the exponentials: weight exactly 0 (ss_expf(-inf) is ~1e-38, not 0), and a
 * logit equal to the max in the probe's copy so that e (s - m) is 0, not 0 * -inf. */
static inline float mask_exps(float *e, float *s, const uint8_t *kv, int kc, float m) {
    float sum = 0;
    for (int j = 0; j < kc; j++) {
        if (!kv[j]) {
            e[j] = 0;
            if (s) s[j] = m;
        }
        sum += e[j];
    }
    return sum;
}

/* The column sums of one block of ATTN_BQ rows (float, row order) into the group's double sums
 * gacc [ng, Tk], keys [j0, j0 + kc); the block's sums restart at 0. */
static void col_flush(scratch *w, double *gacc, int ng, int Tk, int j0, int kc) {
    for (int j = 0; j < kc; j++)
        for (int g = 0; g < ng; g++) gacc[(size_t)g * Tk + j0 + j] += w->col[(size_t)g * kc + j];
    memset(w->col, 0, sizeof(float) * kc * ng);
}

/* col_flush with the key loop inner (contiguous); each sum gets the same single addition. */
static void col_flush_b16(scratch *w, double *gacc, int ng, int Tk, int j0, int kc) {
    for (int g = 0; g < ng; g++) {
        double *d = gacc + (size_t)g * Tk + j0;
        const float *c = w->col + (size_t)g * kc;
#pragma omp simd
        for (int j = 0; j < kc; j++) d[j] += c[j];
    }
    memset(w->col, 0, sizeof(float) * kc * ng);
}

/* ---- fp32 Q K^T without BLAS's per-call packing ----
 * BLAS's sgemm repacks all of a head's keys for every tile of query rows (a quarter of the
 * attention's time at head dim 128). Here the keys are laid out once per (b, h) in panels of
 * QK_NR keys, [dh][QK_NR] each, and an AVX-512 kernel computes every logit as OpenBLAS's
 * kernel does: one fused multiply-add chain over d = 0, 1, ..., dh-1 from 0, times the scale.
 * BLAS picks other kernels for some shapes (small products), whose order differs; so each
 * shape (rows, keys, dh) is checked once per process against cblas_sgemm on fixed pseudo-random
 * operands, and a shape whose bits differ in any place keeps sgemm. The logits, hence every
 * output and statistic, are the bits sgemm gives. */
#define QK_NR 32 /* keys per panel */
#define QK_MR 12 /* query rows per micro-tile */
#define PV_MIN_DH 32 /* narrower heads keep sgemm for P V (the kernel works in 64-column blocks) */

/* The values [Tk, dh] (row stride ld) as [ceil(dh / 64)][Tk][64], padding columns 0. */
static void pv_pack(float *vp, const float *V, int ld, int Tk, int dh) {
    const int nd = (dh + 63) / 64;
#pragma omp parallel for schedule(static) if ((size_t)Tk * dh > 65536 && !omp_in_parallel())
    for (int j = 0; j < Tk; j++)
        for (int b = 0; b < nd; b++) {
            float *o = vp + ((size_t)b * Tk + j) * 64;
            for (int u = 0; u < 64; u++) o[u] = 64 * b + u < dh ? V[(size_t)j * ld + 64 * b + u] : 0.0f;
        }
}

/* Do key chunks of KC keys start at panel boundaries (so that the panels serve every chunk)? */
static inline int qk_chunks_fit(int Tk, int KC) { return Tk <= KC || KC % QK_NR == 0; }

/* The keys [Tk, dh] (row stride ld) into panels, [ceil(Tk / QK_NR)][dh][QK_NR]; a panel ends at
 * the end of its chunk of KC keys (qk_chunks_fit), padding keys are 0. Key j0's panel starts at
 * kp + j0 dh. */
static void qk_pack(float *kp, const float *K, int ld, int Tk, int dh, int KC) {
    const int npan = (Tk + QK_NR - 1) / QK_NR;
#pragma omp parallel for schedule(static) if ((size_t)Tk * dh > 65536 && !omp_in_parallel())
    for (int t = 0; t < npan; t++) {
        const int j0 = t * QK_NR, cend = Tk - j0 / KC * KC < KC ? Tk : (j0 / KC + 1) * KC;
        const int nv = cend - j0 < QK_NR ? cend - j0 : QK_NR;
        float *pan = kp + (size_t)j0 * dh;
        for (int d = 0; d < dh; d++)
            for (int u = 0; u < QK_NR; u++) pan[(size_t)d * QK_NR + u] = u < nv ? K[(size_t)(j0 + u) * ld + d] : 0.0f;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define QK_AVX512 __attribute__((target("avx512f")))

/* S[mr, nv] (row stride lds) = scale * Q[mr, dh] (stride ldq) . panel^T, mr <= QK_MR. */
QK_AVX512 static inline __attribute__((always_inline)) void qk_micro(const int mr, float *S, int lds, const float *Q,
                                                                     int ldq, const float *pan, int dh, float scale,
                                                                     int nv) {
    __m512 c0[QK_MR], c1[QK_MR];
    for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int d = 0; d < dh; d++) {
        const __m512 b0 = _mm512_loadu_ps(pan + (size_t)d * QK_NR), b1 = _mm512_loadu_ps(pan + (size_t)d * QK_NR + 16);
        for (int r = 0; r < mr; r++) {
            const __m512 q = _mm512_set1_ps(Q[(size_t)r * ldq + d]);
            c0[r] = _mm512_fmadd_ps(q, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(q, b1, c1[r]);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    if (nv >= QK_NR) {
        for (int r = 0; r < mr; r++) {
            _mm512_storeu_ps(S + (size_t)r * lds, _mm512_mul_ps(c0[r], sc));
            _mm512_storeu_ps(S + (size_t)r * lds + 16, _mm512_mul_ps(c1[r], sc));
        }
    } else {
        const __mmask16 m0 = nv >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nv) - 1);
        const __mmask16 m1 = nv <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nv - 16)) - 1);
        for (int r = 0; r < mr; r++) {
            _mm512_mask_storeu_ps(S + (size_t)r * lds, m0, _mm512_mul_ps(c0[r], sc));
            _mm512_mask_storeu_ps(S + (size_t)r * lds + 16, m1, _mm512_mul_ps(c1[r], sc));
        }
    }
}

/* S[bq, kc] (stride kc) = scale * Q . K^T over one chunk's panels. */
QK_AVX512 static void qk_own(float *S, const float *Q, int ldq, const float *kpc, int bq, int kc, int dh, float scale) {
    for (int j = 0; j < kc; j += QK_NR) {
        const float *pan = kpc + (size_t)j * dh;
        const int nv = kc - j;
        float *Sj = S + j;
        int r = 0;
        for (; r + QK_MR <= bq; r += QK_MR) qk_micro(QK_MR, Sj + (size_t)r * kc, kc, Q + (size_t)r * ldq, ldq, pan, dh, scale, nv);
        const int left = bq - r;
        if (left >= 8) {
            qk_micro(8, Sj + (size_t)r * kc, kc, Q + (size_t)r * ldq, ldq, pan, dh, scale, nv);
            r += 8;
        }
        if (bq - r >= 4) {
            qk_micro(4, Sj + (size_t)r * kc, kc, Q + (size_t)r * ldq, ldq, pan, dh, scale, nv);
            r += 4;
        }
        for (; r < bq; r++) qk_micro(1, Sj + (size_t)r * kc, kc, Q + (size_t)r * ldq, ldq, pan, dh, scale, nv);
    }
}

/* The next key block of P V as OpenBLAS's level-3 driver cuts K: blocks of gq keys, except that
 * a remainder between gq and 2 gq is halved (rounded up to gu). */
static inline int pv_block(int left, int gq, int gu) {
    if (left >= 2 * gq) return gq;
    if (left > gq) {
        const int half = (left / 2 + gu - 1) / gu * gu;
        return half < left ? half : left;
    }
    return left;
}

/* C[mr, up to 64 columns] += P[mr, k0:k1] . V[k0:k1, cols]: one fused multiply-add chain per
 * output over the block's keys from 0, then added to C (as sgemm's kernel with alpha = 1). */
QK_AVX512 static inline __attribute__((always_inline)) void pv_micro(const int mr, float *C, int ldc, const float *P,
                                                                     int ldp, const float *V, int ldv, int k0, int k1,
                                                                     const __mmask16 *mk) {
    __m512 c[6][4];
    for (int r = 0; r < mr; r++)
        for (int t = 0; t < 4; t++) c[r][t] = _mm512_setzero_ps();
    for (int k = k0; k < k1; k++) {
        const float *vk = V + (size_t)k * ldv;
        const __m512 v0 = _mm512_loadu_ps(vk), v1 = _mm512_loadu_ps(vk + 16);
        const __m512 v2 = _mm512_loadu_ps(vk + 32), v3 = _mm512_loadu_ps(vk + 48);
        for (int r = 0; r < mr; r++) {
            const __m512 p = _mm512_set1_ps(P[(size_t)r * ldp + k]);
            c[r][0] = _mm512_fmadd_ps(p, v0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(p, v1, c[r][1]);
            c[r][2] = _mm512_fmadd_ps(p, v2, c[r][2]);
            c[r][3] = _mm512_fmadd_ps(p, v3, c[r][3]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int t = 0; t < 4; t++) {
            float *cr = C + (size_t)r * ldc + 16 * t;
            _mm512_mask_storeu_ps(cr, mk[t], _mm512_add_ps(_mm512_maskz_loadu_ps(mk[t], cr), c[r][t]));
        }
}

/* acc[bq, dh] (= 0 first unless accumulate) += P[bq, kc] . V[kc, dh], V packed by pv_pack (vp:
 * the chunk's first key, Tk the head's keys), keys cut into blocks as sgemm cuts them (gq, gu). */
QK_AVX512 static void pv_own(float *acc, const float *P, int kc, const float *vp, int Tk, int bq, int dh, int accumulate,
                             int gq, int gu) {
    const int ldv = 64;
    if (!accumulate) memset(acc, 0, sizeof(float) * (size_t)bq * dh);
    for (int k0 = 0, kb; k0 < kc; k0 += kb) {
        kb = pv_block(kc - k0, gq, gu);
        for (int d0 = 0; d0 < dh; d0 += 64) {
            __mmask16 mk[4];
            for (int t = 0; t < 4; t++) {
                const int n = dh - d0 - 16 * t;
                mk[t] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
            }
            const float *Vd = vp + (size_t)(d0 / 64) * Tk * 64;
            float *Cd = acc + d0;
            int r = 0;
            for (; r + 6 <= bq; r += 6) pv_micro(6, Cd + (size_t)r * dh, dh, P + (size_t)r * kc, kc, Vd, ldv, k0, k0 + kb, mk);
            if (bq - r >= 4) {
                pv_micro(4, Cd + (size_t)r * dh, dh, P + (size_t)r * kc, kc, Vd, ldv, k0, k0 + kb, mk);
                r += 4;
            }
            if (bq - r >= 2) {
                pv_micro(2, Cd + (size_t)r * dh, dh, P + (size_t)r * kc, kc, Vd, ldv, k0, k0 + kb, mk);
                r += 2;
            }
            if (r < bq) pv_micro(1, Cd + (size_t)r * dh, dh, P + (size_t)r * kc, kc, Vd, ldv, k0, k0 + kb, mk);
        }
    }
}

static int qk_own_available(void) {
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return have;
}
#else
static void qk_own(float *S, const float *Q, int ldq, const float *kpc, int bq, int kc, int dh, float scale) {
    (void)S, (void)Q, (void)ldq, (void)kpc, (void)bq, (void)kc, (void)dh, (void)scale;
}
static void pv_own(float *acc, const float *P, int kc, const float *vp, int Tk, int bq, int dh, int accumulate,
                   int gq, int gu) {
    (void)acc, (void)P, (void)kc, (void)vp, (void)Tk, (void)bq, (void)dh, (void)accumulate, (void)gq, (void)gu;
}
static int qk_own_available(void) { return 0; }
#endif

/* Does qk_own (kind 0) or pv_own (kind 1: P V, 2: P V added to the accumulators) give sgemm's
 * bits at rows x keys x dh? Checked once per shape per process. */
#define QK_SHAPES 64
typedef struct {
    int kind, bq, kc, dh, ok;
} qk_shape;
static qk_shape g_qk_shapes[QK_SHAPES];
static int g_qk_nshapes, g_qk_next;

/* Fixed pseudo-random operands: xorshift32, values in [lo, lo + 4) with full mantissas. */
static void fill_rand(float *x, size_t n, uint32_t seed, float lo) {
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
        x[i] = (float)((double)seed / 4294967296.0 * 4.0 + lo);
    }
}

/* sgemm's key blocking for P V (OpenBLAS: GEMM_Q, and the unroll the halved remainder is rounded
 * to), found once per process by matching sgemm's bits on an 8 x 64 x 3001 product (large enough
 * for OpenBLAS's blocked driver, not its small-matrix kernels); 0: none found (P V stays on
 * sgemm). At most a few hundred candidates of 3 MFLOP each, once. */
static int g_pv_gq = -1, g_pv_gu;

static void pv_calibrate(void) {
    enum { M = 8, N = 64, K = 3001 };
    float *p = malloc(sizeof(float) * M * K), *v = malloc(sizeof(float) * K * N), *vp = malloc(sizeof(float) * K * 64);
    float *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N);
    g_pv_gq = 0;
    if (p && v && vp && c1 && c2) {
        fill_rand(p, (size_t)M * K, 12345u, 0.0f);
        fill_rand(v, (size_t)K * N, 678u, -2.0f);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, p, K, v, N, 0.0f, c1, N);
        pv_pack(vp, v, N, K, N);
        static const int us[] = {16, 8, 32, 4, 24, 48};
        for (size_t u = 0; u < sizeof us / sizeof *us && !g_pv_gq; u++)
            for (int q = 64; q <= 1024 && !g_pv_gq; q += 8) {
                pv_own(c2, p, K, vp, K, M, N, 0, q, us[u]);
                if (!memcmp(c1, c2, sizeof(float) * M * N)) g_pv_gq = q, g_pv_gu = us[u];
            }
    }
    free(p), free(v), free(vp), free(c1), free(c2);
}

static int pv_check(int bq, int kc, int dh, int accumulate) {
    float *p = malloc(sizeof(float) * (size_t)bq * kc), *v = malloc(sizeof(float) * (size_t)kc * dh);
    float *vp = malloc(sizeof(float) * (size_t)kc * ((dh + 63) / 64 * 64));
    float *c1 = malloc(sizeof(float) * (size_t)bq * dh), *c2 = malloc(sizeof(float) * (size_t)bq * dh);
    int ok = p && v && vp && c1 && c2;
    if (ok) {
        fill_rand(p, (size_t)bq * kc, 2463534242u, 0.0f);
        fill_rand(v, (size_t)kc * dh, 88675123u, -2.0f);
        fill_rand(c1, (size_t)bq * dh, 521288629u, -2.0f);
        memcpy(c2, c1, sizeof(float) * (size_t)bq * dh);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, dh, kc, 1.0f, p, kc, v, dh, accumulate ? 1.0f : 0.0f,
                    c1, dh);
        pv_pack(vp, v, dh, kc, dh);
        pv_own(c2, p, kc, vp, kc, bq, dh, accumulate, g_pv_gq, g_pv_gu);
        ok = !memcmp(c1, c2, sizeof(float) * (size_t)bq * dh);
    }
    free(p), free(v), free(vp), free(c1), free(c2);
    return ok;
}

static int qk_check(int bq, int kc, int dh) {
    const float scale = 1.0f / sqrtf((float)dh);
    const int kcp = (kc + QK_NR - 1) / QK_NR * QK_NR;
    float *q = malloc(sizeof(float) * (size_t)bq * dh), *k = malloc(sizeof(float) * (size_t)kc * dh);
    float *kp = malloc(sizeof(float) * (size_t)kcp * dh), *s1 = malloc(sizeof(float) * (size_t)bq * kc);
    float *s2 = malloc(sizeof(float) * (size_t)bq * kc);
    int ok = q && k && kp && s1 && s2;
    if (ok) {
        fill_rand(q, (size_t)bq * dh, 2463534242u, -2.0f);
        fill_rand(k, (size_t)kc * dh, 88675123u, -2.0f);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kc, dh, scale, q, dh, k, dh, 0.0f, s1, kc);
        qk_pack(kp, k, dh, kc, dh, kc);
        qk_own(s2, q, dh, kp, bq, kc, dh, scale);
        ok = !memcmp(s1, s2, sizeof(float) * (size_t)bq * kc);
    }
    free(q), free(k), free(kp), free(s1), free(s2);
    return ok;
}

/* attn.h: the tests' switch to sgemm only, and the count of the kernels' products. */
static int g_blas_only;
static _Atomic long g_own_products;
long attn_test_blas_only(int on) {
    g_blas_only = on;
    return g_own_products;
}

static int own_ok(int kind, int bq, int kc, int dh) {
    if (g_blas_only) return 0;
    int ok = -1;
#pragma omp critical(attn_qk_shapes)
    {
        for (int i = 0; i < g_qk_nshapes && ok < 0; i++)
            if (g_qk_shapes[i].kind == kind && g_qk_shapes[i].bq == bq && g_qk_shapes[i].kc == kc && g_qk_shapes[i].dh == dh)
                ok = g_qk_shapes[i].ok;
        if (ok < 0) {
            if (kind && g_pv_gq < 0) pv_calibrate();
            ok = kind == 0 ? qk_check(bq, kc, dh) : g_pv_gq > 0 && pv_check(bq, kc, dh, kind == 2);
            /* full: the oldest entry goes (a shape checked again gets the same answer) */
            g_qk_shapes[g_qk_next++ % QK_SHAPES] = (qk_shape){kind, bq, kc, dh, ok};
            if (g_qk_nshapes < QK_SHAPES) g_qk_nshapes++;
        }
    }
    if (ok) g_own_products++;
    return ok;
}

/* row = exp(row - mx) in place, returning the sum (fp32, in the vector order gcc fixes). */
static inline float row_exps(float *row, int kc, float mx) {
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < kc; j++) {
        float e = ss_expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    return sum;
}

/* Keys over several chunks, probe pass: a row's logits (kept in srow) to its final exponentials
 * exp(s - m) (0 for masked keys), m the row's final max. */
static void row_final_exps(float *row, float *srow, const uint8_t *kv, int kc, float m) {
    memcpy(srow, row, sizeof(float) * kc);
    for (int j = 0; j < kc; j++) row[j] = ss_expf(row[j] - m);
    if (kv) mask_exps(row, srow, kv, kc, m);
}

/* A tile's output rows: O = acc / l (acc [bq, dh] unnormalized P V, O with row stride ld). */
static void tile_store(float *O, int ld, const float *acc, const float *l, int bq, int dh) {
    for (int r = 0; r < bq; r++) {
        const float inv = 1.0f / l[r];
        for (int d = 0; d < dh; d++) O[(size_t)r * ld + d] = acc[(size_t)r * dh + d] * inv;
    }
}

/* A tile's per-row statistics (the softmax max and sum, entropy, top-5 concentration) into st. */
static void tile_row_stats(const attn_args *a, const attn_stats *st, const scratch *w, int b, int h, int i0, int bq,
                           const float *m, const float *l) {
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

/* One tile of bq query rows starting at row i0 of (b, h). gacc: [sp->n, Tk] this group's sums. */
/* S = Q K^T / sqrt(dh) for rows [i0, i0 + bq) and keys [j0, j0 + kc) into w->S. kp: the keys in
 * panels (fp32), or NULL. */
static void qk(const attn_args *a, const float *kp, scratch *w, const float *Q, const float *K, int bq, int j0, int kc,
               float scale) {
    if (kp && own_ok(0, bq, kc, a->dh)) {
        qk_own(w->S, Q, a->ld, kp + (size_t)j0 * a->dh, bq, kc, a->dh, scale);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, kc, a->dh, scale, Q, a->ld, K + (size_t)j0 * a->ld, a->ld,
                0.0f, w->S, kc);
}

static int probe_chunks(const attn_args *a, const spans *sp, scratch *w, const float *kp, const bf16_head *bh,
                        int fast, const float *Q, const float *K, const uint8_t *kvb, int i0, int bq, const float *m,
                        const float *l, double *gacc);

static void tile(const attn_args *a, const attn_stats *st, const spans *sp, const float *kp, const float *vp, scratch *w,
                 int b, int h, int i0, int bq, double *gacc) {
    const int Tk = sp->Tk, ld = a->ld, dh = a->dh, ng = sp->n;
    const size_t qbase = (size_t)b * a->T * ld + (size_t)h * dh, kbase = (size_t)b * Tk * ld + (size_t)h * dh;
    const float *Q = a->q + qbase + (size_t)i0 * ld, *K = a->k + kbase, *V = a->v + kbase;
    const uint8_t *kvb = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
    const float scale = 1.0f / sqrtf((float)dh);
    const int KC = attn_key_chunk(a), nchunk = (Tk + KC - 1) / KC;
    const int want_cols = sp->want_cols;
    const int probe = st && (want_cols || st->row_entropy || st->row_top5);
    float m[ATTN_BQ], l[ATTN_BQ];
    for (int r = 0; r < bq; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
        w->ent[r] = 0;
        for (int t = 0; t < 5; t++) w->top[r][t] = 0;
    }
    for (int c = 0; c < nchunk; c++) {
        const int j0 = c * KC, kc = Tk - j0 < KC ? Tk - j0 : KC;
        const uint8_t *kv = kvb ? kvb + j0 : NULL;
        const int cols1 = probe && nchunk == 1 && want_cols;
        if (cols1) memset(w->col, 0, sizeof(float) * kc * ng);
        for (int s0 = 0; s0 < bq; s0 += ATTN_BQ) {
            const int sb = bq - s0 < ATTN_BQ ? bq - s0 : ATTN_BQ;
            qk(a, kp, w, Q + (size_t)s0 * ld, K, sb, j0, kc, scale);
            for (int r = s0; r < s0 + sb; r++) {
                float *row = w->S + (size_t)(r - s0) * kc;
                if (kv) mask_logits(row, kv, kc);
                float mx = m[r];
#pragma omp simd reduction(max : mx)
                for (int j = 0; j < kc; j++) mx = row[j] > mx ? row[j] : mx;
                if (mx == -INFINITY) { /* masked keys only, so far: nothing to add */
                    memset(row, 0, sizeof(float) * kc);
                    continue;
                }
                const float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
                if (probe && nchunk == 1) memcpy(w->srow, row, sizeof(float) * kc);
                float sum = row_exps(row, kc, mx);
                if (kv) sum = mask_exps(row, probe && nchunk == 1 ? w->srow : NULL, kv, kc, mx);
                l[r] = l[r] * alpha + sum;
                m[r] = mx;
                if (c > 0)
                    for (int d = 0; d < dh; d++) w->acc[(size_t)r * dh + d] *= alpha;
                if (probe && nchunk == 1) probe_row(sp, w, r, i0 + r, row, w->srow, mx, 1.0f / l[r], kc);
            }
            if (cols1) col_flush(w, gacc, ng, Tk, j0, kc);
        }
        if (vp && own_ok(1 + (c > 0), bq, kc, dh))
            pv_own(w->acc, w->S, kc, vp + (size_t)j0 * 64, Tk, bq, dh, c > 0, g_pv_gq, g_pv_gu);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, dh, kc, 1.0f, w->S, kc, V + (size_t)j0 * ld, ld,
                        c > 0 ? 1.0f : 0.0f, w->acc, dh);
    }
    tile_store(a->out + qbase + (size_t)i0 * ld, ld, w->acc, l, bq, dh);
    /* Keys spread over several chunks: the final max and sum are known only now. */
    if (probe && nchunk > 1) probe_chunks(a, sp, w, kp, NULL, 0, Q, K, kvb, i0, bq, m, l, gacc);
    tile_row_stats(a, st, w, b, h, i0, bq, m, l);
}

/* ---- the bf16 tile ----
 * Per row of logits: the max, then one pass that exponentiates, sums (fp32) and rounds P to bf16,
 * writing the fp32 exponentials back only when the probe reads them. On CPUs with AVX512-BF16
 * (the ones whose oneDNN runs bf16 brgemm) both passes are AVX-512 kernels: four max
 * accumulators (the max is exact, so their order does not matter), exp as ss_expf computes it
 * (lower clamp, reduction and degree-6 polynomial, with fused multiply-adds and 2^n by scalef)
 * and vcvtneps2bf16 (round to nearest even, as ss_bf16_from_f32). The sum runs in 32 lanes (two
 * accumulators) reduced in a fixed order, the same code whether or not the probe is on, so the
 * probe cannot change a bit of the output. Elsewhere the plain loops below do the same work in
 * two passes (the exponentials always written back, so the sums do not depend on the probe
 * either). Measured at T 1357, 24 x 64 heads, one thread (Intel Xeon, AMX): the row passes took
 * ~60 of main's 90 ms per call in 8-lane loops; the whole call now takes ~40 ms, half of it in
 * the oneDNN products.
 * The probe with every key in one chunk (AVX-512): the exp pass itself also sums the entropy
 * terms e (s - m) and the lane maxima of e (no copy of the logits), and writes e back; then one
 * pass per block of ATTN_BQ rows makes the column sums (straight into the group's double sums)
 * and offers each row's top-5 candidates (a compare-only pass per row when no mass is asked for).
 * The statistics are the bits of the earlier three per-row passes. Measured at SD3-medium 1024^2
 * (4429 tokens, 24 x 64 heads, 2 threads, AMX Xeon, noisy): probe / plain 1.37-1.49 -> 1.10-1.21. */
#if defined(__x86_64__) && defined(__GNUC__)
#define B16_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static int b16_avx512_available(void) {
    static int have = -1;
    if (have < 0)
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    return have;
}

static inline __mmask16 b16_tail(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

B16_AVX512 static float b16_row_max_avx512(const float *x, int n, float mx) {
    __m512 a0 = _mm512_set1_ps(mx), a1 = a0, a2 = a0, a3 = a0;
    int j = 0;
    /* max_ps(x, a) keeps a where x is NaN, as the scalar "x > mx ? x : mx" does */
    for (; j + 64 <= n; j += 64) {
        a0 = _mm512_max_ps(_mm512_loadu_ps(x + j), a0);
        a1 = _mm512_max_ps(_mm512_loadu_ps(x + j + 16), a1);
        a2 = _mm512_max_ps(_mm512_loadu_ps(x + j + 32), a2);
        a3 = _mm512_max_ps(_mm512_loadu_ps(x + j + 48), a3);
    }
    for (; j < n; j += 16) {
        const __mmask16 k = b16_tail(n - j);
        a0 = _mm512_mask_max_ps(a0, k, _mm512_maskz_loadu_ps(k, x + j), a0);
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3)));
}

/* ss_expf in 16 lanes for x <= 0 (x = s - max; fused multiply-adds, 2^n by scalef): the same
 * clamp below (so -inf gives ~1e-38, and NaN stays NaN: max(c, x) returns x where x is NaN), the
 * same round-to-nearest n (from one rounding of x log2(e) + 1.5 2^23), reduction and polynomial. */
B16_AVX512 static inline __m512 b16_exp16(__m512 x) {
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);
    const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* e = exp(row - mx) (0 for masked keys: kv[j] == 0), P = bf16(e) into p, e into row if keep;
 * returns the sum of e: lanes j mod 32 (two accumulators), added in a fixed order. */
B16_AVX512 static inline __m512 b16_exp_step(float *row, uint16_t *p, const uint8_t *kv, __m512 vm, int j, __mmask16 k,
                                            int keep) {
    __mmask16 ke = k;
    if (kv) {
        const __m128i v8 = _mm_maskz_loadu_epi8(k, kv + j);
        ke = _mm_mask_test_epi8_mask(k, v8, v8);
    }
    const __m512 e = _mm512_maskz_mov_ps(ke, b16_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), vm)));
    if (keep) _mm512_mask_storeu_ps(row + j, k, e);
    _mm256_mask_storeu_epi16(p + j, k, (__m256i)_mm512_cvtneps_pbh(e));
    return e;
}

B16_AVX512 static float b16_exp_row_avx512(float *row, uint16_t *p, const uint8_t *kv, float mx, int n, int keep) {
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    int j = 0;
    for (; j + 32 <= n; j += 32) {
        acc0 = _mm512_add_ps(acc0, b16_exp_step(row, p, kv, vm, j, 0xffff, keep));
        acc1 = _mm512_add_ps(acc1, b16_exp_step(row, p, kv, vm, j + 16, 0xffff, keep));
    }
    for (; j < n; j += 16) acc0 = _mm512_add_ps(acc0, b16_exp_step(row, p, kv, vm, j, b16_tail(n - j), keep));
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* b16_exp_step that also feeds the probe: ent += e x (x = s - max, 0 at masked keys, where e is 0)
 * and the lane maxima of e; e is written back (the top-5 and column passes read it). */
B16_AVX512 static inline __m512 b16_exp_probe_step(float *row, uint16_t *p, const uint8_t *kv, __m512 vm, int j,
                                                  __mmask16 k, __m512 *ent, __m512 *emax) {
    __mmask16 ke = k;
    if (kv) {
        const __m128i v8 = _mm_maskz_loadu_epi8(k, kv + j);
        ke = _mm_mask_test_epi8_mask(k, v8, v8);
    }
    const __m512 x = _mm512_maskz_sub_ps(ke, _mm512_maskz_loadu_ps(k, row + j), vm);
    const __m512 e = _mm512_maskz_mov_ps(ke, b16_exp16(x));
    _mm512_mask_storeu_ps(row + j, k, e);
    _mm256_mask_storeu_epi16(p + j, k, (__m256i)_mm512_cvtneps_pbh(e));
    *ent = _mm512_fmadd_ps(e, x, *ent);
    *emax = _mm512_max_ps(e, *emax);
    return e;
}

/* b16_exp_row_avx512 (keep) with the probe's row statistics in the same pass: the same sum, P and
 * exponentials bit for bit (the same steps in the same order), and the entropy term and top-5
 * list probe_row_avx512 gives from them (the same fused multiply-adds in the same key order, the
 * same candidates), without the copy of the logits: x = s - max is at hand here. The top-5 takes
 * a second, compare-only pass over e once the lane maxima are known. */
B16_AVX512 static float b16_exp_probe_row_avx512(float *row, uint16_t *p, const uint8_t *kv, float mx, int n,
                                                 double *ent_out, float *t, float *th_out) {
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, ent = acc0, emax = acc0; /* e >= 0 */
    int j = 0;
    for (; j + 32 <= n; j += 32) {
        acc0 = _mm512_add_ps(acc0, b16_exp_probe_step(row, p, kv, vm, j, 0xffff, &ent, &emax));
        acc1 = _mm512_add_ps(acc1, b16_exp_probe_step(row, p, kv, vm, j + 16, 0xffff, &ent, &emax));
    }
    for (; j < n; j += 16)
        acc0 = _mm512_add_ps(acc0, b16_exp_probe_step(row, p, kv, vm, j, b16_tail(n - j), &ent, &emax));
    *ent_out += _mm512_reduce_add_ps(ent);
    float lane[16], t16[5] = {0};
    _mm512_storeu_ps(lane, emax);
    for (int u = 0; u < 16; u++) top5_push(t16, lane[u]);
    /* candidates: e >= th (the 5th largest lane maximum) and, once the list's smallest entry t[4]
     * reaches th, e > t[4] (top5_push drops the others unchanged; ties of the maximum are many on
     * periodic data) */
    const float th = t16[4];
    if (th_out) { /* the column pass offers the candidates (col_block_avx512) */
        *th_out = th;
        return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
    float cut = t[4] >= th ? t[4] : th; /* offered: e > cut, or e == cut while the list is below th */
    int ge = t[4] < th;
    __m512 vth = _mm512_set1_ps(cut);
    j = 0;
    /* 64 keys at a time: one compare of their maximum, the rare block that passes key by key */
    for (; j + 64 <= n; j += 64) {
        const __m512 e0 = _mm512_loadu_ps(row + j), e1 = _mm512_loadu_ps(row + j + 16);
        const __m512 e2 = _mm512_loadu_ps(row + j + 32), e3 = _mm512_loadu_ps(row + j + 48);
        const __m512 bm = _mm512_max_ps(_mm512_max_ps(e0, e1), _mm512_max_ps(e2, e3));
        if (!(ge ? _mm512_cmp_ps_mask(bm, vth, _CMP_GE_OQ) : _mm512_cmp_ps_mask(bm, vth, _CMP_GT_OQ))) continue;
        const __m512 ev[4] = {e0, e1, e2, e3};
        for (int u = 0; u < 4; u++)
            for (unsigned c = ge ? _mm512_cmp_ps_mask(ev[u], vth, _CMP_GE_OQ) : _mm512_cmp_ps_mask(ev[u], vth, _CMP_GT_OQ);
                 c; c &= c - 1)
                top5_push(t, row[j + 16 * u + __builtin_ctz(c)]);
        if (t[4] >= th) {
            cut = t[4];
            ge = 0;
            vth = _mm512_set1_ps(cut);
        }
    }
    for (; j < n; j++) {
        const float e = row[j];
        if (e > cut || (ge && e == cut)) top5_push(t, e);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* The column sums of rows rows[0..nr) of one block (each rows[u] kc exponentials, scaled by
 * il[u] = 1 / l) added to the group's double sums d[0..kc): per key, a float sum from 0 of
 * fused multiply-adds in row order, then one double addition, the bits col_flush_b16 gives from
 * probe_row_avx512's per-row sums, in one pass over the block (4 columns of 16 keys at a time). */
/* the upper 8 floats of v (AVX512F only: extractf32x8 is AVX512DQ) */
B16_AVX512 static inline __m256 b16_hi8(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }

B16_AVX512 static inline __mmask16 top5_cand(__m512 e, __m512 th, __m512 t4) {
    return _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(e, th, _CMP_GE_OQ), e, t4, _CMP_GT_OQ);
}

B16_AVX512 static void col_block_avx512(double *d, float *const *rows, const float *il, int nr, int kc, float **tops,
                                        const float *ths) {
    int j = 0;
    for (; j + 64 <= kc; j += 64) {
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (int u = 0; u < nr; u++) {
            const float *e = rows[u] + j;
            const __m512 v = _mm512_set1_ps(il[u]);
            const __m512 e0 = _mm512_loadu_ps(e), e1 = _mm512_loadu_ps(e + 16);
            const __m512 e2 = _mm512_loadu_ps(e + 32), e3 = _mm512_loadu_ps(e + 48);
            c0 = _mm512_fmadd_ps(e0, v, c0);
            c1 = _mm512_fmadd_ps(e1, v, c1);
            c2 = _mm512_fmadd_ps(e2, v, c2);
            c3 = _mm512_fmadd_ps(e3, v, c3);
            /* the row's top-5 candidates (as in b16_exp_probe_row_avx512): e >= th and e > the list's smallest */
            const __m512 th = _mm512_set1_ps(ths[u]);
            float *t = tops[u];
            if (top5_cand(_mm512_max_ps(_mm512_max_ps(e0, e1), _mm512_max_ps(e2, e3)), th, _mm512_set1_ps(t[4]))) {
                const __m512 ev[4] = {e0, e1, e2, e3};
                for (int q = 0; q < 4; q++)
                    for (unsigned c = top5_cand(ev[q], th, _mm512_set1_ps(t[4])); c; c &= c - 1)
                        top5_push(t, e[16 * q + __builtin_ctz(c)]);
            }
        }
        const __m512 cs[4] = {c0, c1, c2, c3};
        for (int t = 0; t < 4; t++) {
            double *dd = d + j + 16 * t;
            _mm512_storeu_pd(dd, _mm512_add_pd(_mm512_loadu_pd(dd), _mm512_cvtps_pd(_mm512_castps512_ps256(cs[t]))));
            _mm512_storeu_pd(dd + 8, _mm512_add_pd(_mm512_loadu_pd(dd + 8), _mm512_cvtps_pd(b16_hi8(cs[t]))));
        }
    }
    for (; j < kc; j += 16) {
        const __mmask16 k = b16_tail(kc - j);
        __m512 c = _mm512_setzero_ps();
        for (int u = 0; u < nr; u++) {
            const __m512 e = _mm512_maskz_loadu_ps(k, rows[u] + j); /* 0 past kc: never a candidate */
            c = _mm512_fmadd_ps(e, _mm512_set1_ps(il[u]), c);
            float *t = tops[u];
            for (unsigned b = top5_cand(e, _mm512_set1_ps(ths[u]), _mm512_set1_ps(t[4])); b; b &= b - 1)
                top5_push(t, rows[u][j + __builtin_ctz(b)]);
        }
        const __mmask8 k0 = (__mmask8)k, k1 = (__mmask8)(k >> 8);
        _mm512_mask_storeu_pd(d + j, k0, _mm512_add_pd(_mm512_maskz_loadu_pd(k0, d + j), _mm512_cvtps_pd(_mm512_castps512_ps256(c))));
        _mm512_mask_storeu_pd(d + j + 8, k1,
                              _mm512_add_pd(_mm512_maskz_loadu_pd(k1, d + j + 8), _mm512_cvtps_pd(b16_hi8(c))));
    }
}

/* y[j] = bf16(x[j] * scale), j < n */
B16_AVX512 static void b16_round_avx512(uint16_t *y, const float *x, int n, float scale) {
    const __m512 s = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        const __mmask16 k = b16_tail(n - j);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), s);
        _mm256_mask_storeu_epi16(y + j, k, (__m256i)_mm512_cvtneps_pbh(v));
    }
}

/* probe_row for the bf16 tile, in 16 lanes: the same statistics. The top-5 is the same list: the
 * 16 lanes' maxima are 16 of the row's values, so the row's 5 largest are all >= the 5th largest
 * lane maximum (th), and only values >= th are offered to top5_push (in key order; the list
 * keeps the 5 largest whatever else it was offered). The entropy and column sums are summed in
 * other orders than the 8-lane loops (within fp32). */
B16_AVX512 static void probe_row_avx512(const spans *sp, scratch *w, int r, int i, const float *e, const float *s,
                                        float m, float inv_l, int kc) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 ent = _mm512_setzero_ps(), mx = _mm512_setzero_ps(); /* e >= 0 */
    for (int j = 0; j < kc; j += 16) {
        const __mmask16 k = b16_tail(kc - j);
        const __m512 ev = _mm512_maskz_loadu_ps(k, e + j);
        ent = _mm512_fmadd_ps(ev, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vm), ent);
        mx = _mm512_max_ps(ev, mx);
    }
    w->ent[r] += _mm512_reduce_add_ps(ent);
    float lane[16], t16[5] = {0};
    _mm512_storeu_ps(lane, mx);
    for (int u = 0; u < 16; u++) top5_push(t16, lane[u]);
    const __m512 th = _mm512_set1_ps(t16[4]);
    float *t = w->top[r];
    for (int j = 0; j < kc; j += 16) {
        const __mmask16 k = b16_tail(kc - j);
        for (unsigned c = _mm512_mask_cmp_ps_mask(k, _mm512_maskz_loadu_ps(k, e + j), th, _CMP_GE_OQ); c; c &= c - 1)
            top5_push(t, e[j + __builtin_ctz(c)]);
    }
    if (!sp->want_cols) return;
    float *col = w->col + (size_t)span_of_row(sp, i) * kc;
    const __m512 vl = _mm512_set1_ps(inv_l);
    for (int j = 0; j < kc; j += 16) {
        const __mmask16 k = b16_tail(kc - j);
        _mm512_mask_storeu_ps(col + j, k,
                              _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, e + j), vl, _mm512_maskz_loadu_ps(k, col + j)));
    }
}
#else
static void probe_row_avx512(const spans *sp, scratch *w, int r, int i, const float *e, const float *s, float m,
                             float inv_l, int kc) {
    (void)sp, (void)w, (void)r, (void)i, (void)e, (void)s, (void)m, (void)inv_l, (void)kc;
}
static int b16_avx512_available(void) { return 0; }
static float b16_row_max_avx512(const float *x, int n, float mx) { return (void)x, (void)n, mx; }
static float b16_exp_row_avx512(float *row, uint16_t *p, const uint8_t *kv, float mx, int n, int keep) {
    return (void)row, (void)p, (void)kv, (void)mx, (void)n, (void)keep, 0.0f;
}
static float b16_exp_probe_row_avx512(float *row, uint16_t *p, const uint8_t *kv, float mx, int n, double *ent_out,
                                      float *t, float *th_out) {
    return (void)row, (void)p, (void)kv, (void)mx, (void)n, (void)ent_out, (void)t, (void)th_out, 0.0f;
}
static void col_block_avx512(double *d, float *const *rows, const float *il, int nr, int kc, float **tops,
                             const float *ths) {
    (void)d, (void)rows, (void)il, (void)nr, (void)kc, (void)tops, (void)ths;
}
static void b16_round_avx512(uint16_t *y, const float *x, int n, float scale) { (void)y, (void)x, (void)n, (void)scale; }
#endif

static float b16_row_max(const float *row, int kc, float mx, int fast) {
    if (fast) return b16_row_max_avx512(row, kc, mx);
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < kc; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

static float b16_exp_row(float *row, uint16_t *p, const uint8_t *kv, float mx, int kc, int keep, int fast) {
    if (fast) return b16_exp_row_avx512(row, p, kv, mx, kc, keep);
    float sum = row_exps(row, kc, mx);
    if (kv) sum = mask_exps(row, NULL, kv, kc, mx);
#pragma omp simd
    for (int j = 0; j < kc; j++) p[j] = ss_bf16_from_f32(row[j]);
    return sum;
}

static void b16_round(uint16_t *y, const float *x, int n, float scale, int fast) {
    if (fast) {
        b16_round_avx512(y, x, n, scale);
        return;
    }
#pragma omp simd
    for (int j = 0; j < n; j++) y[j] = ss_bf16_from_f32(x[j] * scale);
}

/* One tile of bq <= ATTN_TQ query rows from row i0 of (b, h) with bf16 products: Q K^T in
 * blocks of ATTN_BQ rows (measured with oneDNN AMX at 1357 keys x 64: 20 us for 64 rows, 32 for
 * 85, 97 for 256: larger products do not pay), P V once per key chunk over the tile. */
/* The probe's pass over a tile whose keys span several chunks, once the rows' final max m and sum
 * l are known: the logits again (fp32: qk on Q, K, kp; bf16: bh's keys and the tile's rounded
 * queries w->q16, AVX-512 statistics when fast), their exponentials, the row statistics and the
 * column sums, flushed after each block of ATTN_BQ rows. */
static int probe_chunks(const attn_args *a, const spans *sp, scratch *w, const float *kp, const bf16_head *bh,
                        int fast, const float *Q, const float *K, const uint8_t *kvb, int i0, int bq, const float *m,
                        const float *l, double *gacc) {
    const int Tk = sp->Tk, dh = a->dh, KC = attn_key_chunk(a), nchunk = (Tk + KC - 1) / KC;
    const float scale = 1.0f / sqrtf((float)dh);
    for (int c = 0; c < nchunk; c++) {
        const int j0 = c * KC, kc = Tk - j0 < KC ? Tk - j0 : KC;
        const uint8_t *kv = kvb ? kvb + j0 : NULL;
        memset(w->col, 0, sizeof(float) * kc * sp->n);
        for (int s0 = 0; s0 < bq; s0 += ATTN_BQ) {
            const int sb = bq - s0 < ATTN_BQ ? bq - s0 : ATTN_BQ;
            int rc;
            if (!bh) qk(a, kp, w, Q + (size_t)s0 * a->ld, K, sb, j0, kc, scale);
            else if ((rc = ss_dnnl_matmul(w->S, kc, w->q16 + (size_t)s0 * dh, dh, bh->k + (size_t)j0 * dh, dh, NULL, sb,
                                          kc, dh, SS_DNNL_TRANS_B | SS_DNNL_SERIAL)) < 0)
                return rc;
            for (int r = s0; r < s0 + sb; r++) {
                float *row = w->S + (size_t)(r - s0) * kc;
                row_final_exps(row, w->srow, kv, kc, m[r]);
                (fast ? probe_row_avx512 : probe_row)(sp, w, r, i0 + r, row, w->srow, m[r], 1.0f / l[r], kc);
            }
            if (sp->want_cols) (bh ? col_flush_b16 : col_flush)(w, gacc, sp->n, Tk, j0, kc);
        }
    }
    return 0;
}

static int tile_bf16(const attn_args *a, const attn_stats *st, const spans *sp, const bf16_head *bh, scratch *w, int b,
                     int h, int i0, int bq, double *gacc, int fast) {
    const int Tk = sp->Tk, ld = a->ld, dh = a->dh, ng = sp->n;
    const size_t qbase = (size_t)b * a->T * ld + (size_t)h * dh;
    const uint8_t *kvb = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
    const int KC = attn_key_chunk(a), nchunk = (Tk + KC - 1) / KC;
    const int want_cols = sp->want_cols;
    const int probe = st && (want_cols || st->row_entropy || st->row_top5);
    const int probe1 = probe && nchunk == 1; /* statistics from the pass's own exponentials */
    float m[ATTN_TQ], l[ATTN_TQ];
    /* one block's rows per span, their 1 / l, top-5 lists and candidate thresholds */
    float *crow[ATTN_MAX_QSPAN][ATTN_BQ], cil[ATTN_MAX_QSPAN][ATTN_BQ], *ctop[ATTN_MAX_QSPAN][ATTN_BQ];
    float cth[ATTN_MAX_QSPAN][ATTN_BQ];
    int ncrow[ATTN_MAX_QSPAN] = {0};
    int rc = 0;
    const float scale = 1.0f / sqrtf((float)dh);
    for (int r = 0; r < bq; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
        w->ent[r] = 0;
        for (int t = 0; t < 5; t++) w->top[r][t] = 0;
        b16_round(w->q16 + (size_t)r * dh, a->q + qbase + (size_t)(i0 + r) * ld, dh, scale, fast);
    }
    for (int c = 0; c < nchunk; c++) {
        const int j0 = c * KC, kc = Tk - j0 < KC ? Tk - j0 : KC;
        /* keys of P V: the last chunk's padded, within V's B16_PAD(Tk) rows (0 past Tk) */
        const int kcp = c < nchunk - 1 ? kc : B16_PAD(kc) < B16_PAD(Tk) - j0 ? B16_PAD(kc) : B16_PAD(Tk) - j0;
        const uint8_t *kv = kvb ? kvb + j0 : NULL;
        const int cols1 = probe1 && want_cols;
        if (cols1 && !fast) memset(w->col, 0, sizeof(float) * kc * ng);
        for (int s0 = 0; s0 < bq; s0 += ATTN_BQ) {
            const int sb = bq - s0 < ATTN_BQ ? bq - s0 : ATTN_BQ;
            if ((rc = ss_dnnl_matmul(w->S, kc, w->q16 + (size_t)s0 * dh, dh, bh->k + (size_t)j0 * dh, dh,
                                     NULL, sb, kc, dh, SS_DNNL_TRANS_B | SS_DNNL_SERIAL)) < 0)
                return rc;
            for (int r = s0; r < s0 + sb; r++) {
                float *row = w->S + (size_t)(r - s0) * kc;
                uint16_t *pr = w->p16 + (size_t)r * kcp;
                if (kcp > kc) memset(pr + kc, 0, sizeof(uint16_t) * (kcp - kc));
                if (kv) mask_logits(row, kv, kc);
                const float mx = b16_row_max(row, kc, m[r], fast);
                if (mx == -INFINITY) { /* masked keys only, so far: nothing to add */
                    memset(pr, 0, sizeof(uint16_t) * kc);
                } else {
                    const float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
                    float sum;
                    if (probe1 && fast) {
                        sum = b16_exp_probe_row_avx512(row, pr, kv, mx, kc, &w->ent[r], w->top[r],
                                                       want_cols ? &cth[span_of_row(sp, i0 + r)][ncrow[span_of_row(sp, i0 + r)]] : NULL);
                    } else {
                        if (probe1) memcpy(w->srow, row, sizeof(float) * kc);
                        sum = b16_exp_row(row, pr, kv, mx, kc, probe1, fast);
                        if (probe1 && kv)
                            for (int j = 0; j < kc; j++)
                                if (!kv[j]) w->srow[j] = mx; /* e (s - m) is 0 there, not 0 * -inf */
                    }
                    l[r] = l[r] * alpha + sum;
                    m[r] = mx;
                    if (c > 0)
                        for (int d = 0; d < dh; d++) w->acc[(size_t)r * dh + d] *= alpha;
                    if (probe1 && fast && want_cols) {
                        /* this block's column sums: one pass over its rows below */
                        const int g = span_of_row(sp, i0 + r);
                        crow[g][ncrow[g]] = row;
                        ctop[g][ncrow[g]] = w->top[r];
                        cil[g][ncrow[g]++] = 1.0f / l[r];
                    } else if (probe1 && !fast) {
                        probe_row(sp, w, r, i0 + r, row, w->srow, mx, 1.0f / l[r], kc);
                    }
                }
                if (cols1 && !fast && ((r + 1) % ATTN_BQ == 0 || r + 1 == bq)) col_flush_b16(w, gacc, ng, Tk, j0, kc);
            }
            if (cols1 && fast)
                for (int g = 0; g < ng; g++) {
                    if (ncrow[g]) col_block_avx512(gacc + (size_t)g * Tk + j0, crow[g], cil[g], ncrow[g], kc, ctop[g], cth[g]);
                    ncrow[g] = 0;
                }
        }
        if ((rc = ss_dnnl_matmul(c > 0 ? w->pv : w->acc, dh, w->p16, kcp, bh->v + (size_t)j0 * dh, dh, NULL, bq, dh, kcp,
                                 SS_DNNL_SERIAL)) < 0)
            return rc;
        if (c > 0)
            for (size_t i = 0; i < (size_t)bq * dh; i++) w->acc[i] += w->pv[i];
    }
    tile_store(a->out + qbase + (size_t)i0 * ld, ld, w->acc, l, bq, dh);
    /* Keys spread over several chunks: the final max and sum are known only now. */
    if (probe && nchunk > 1 && (rc = probe_chunks(a, sp, w, NULL, bh, fast, NULL, NULL, kvb, i0, bq, m, l, gacc)) < 0)
        return rc;
    tile_row_stats(a, st, w, b, h, i0, bq, m, l);
    return 0;
}

static void scratch_free(scratch *w, int n) {
    if (!w) return;
    for (int i = 0; i < n; i++) {
        free(w[i].S);
        free(w[i].acc);
        free(w[i].srow);
        free(w[i].col);
        free(w[i].p16);
        free(w[i].q16);
        free(w[i].pv);
    }
    free(w);
}

static scratch *scratch_new(int n, int kc, int dh, int bf16) {
    scratch *w = ss_calloc((size_t)n, sizeof *w);
    if (!w) return NULL;
    for (int i = 0; i < n; i++) {
        const size_t rows = bf16 ? ATTN_TQ : ATTN_BQ;
        w[i].S = malloc(sizeof(float) * ATTN_BQ * kc);
        w[i].acc = malloc(sizeof(float) * rows * dh);
        w[i].srow = malloc(sizeof(float) * kc);
        w[i].col = malloc(sizeof(float) * ATTN_MAX_QSPAN * kc);
        if (bf16) {
            w[i].p16 = ss_malloc_aligned(sizeof(uint16_t) * ATTN_TQ * B16_PAD(kc)); /* oneDNN operands: 64-byte aligned (core/err.h) */
            w[i].q16 = ss_malloc_aligned(sizeof(uint16_t) * ATTN_TQ * dh);
            w[i].pv = ss_malloc_aligned(sizeof(float) * ATTN_TQ * dh);
        }
        if (!w[i].S || !w[i].acc || !w[i].srow || !w[i].col || (bf16 && (!w[i].p16 || !w[i].q16 || !w[i].pv))) {
            scratch_free(w, n);
            ss_fail(SS_ENOMEM, "attention: out of memory for scratch buffers");
            return NULL;
        }
    }
    return w;
}

struct attn_scratch {
    scratch *w;       /* [n] per thread, each for kc keys and dh channels */
    int n, kc, dh, bf16;
    uint16_t *kv16; /* bf16: one (b, h)'s k [Tk, dh], then v [B16_PAD(Tk), dh] */
    size_t nkv16;
    float *kp, *vp;       /* fp32: one (b, h)'s keys in panels (qk_pack) and values (pv_pack) */
    size_t nkp, nvp;
    double *g;        /* probe sums, ng doubles */
    size_t ng;
    long allocs;
};

static _Atomic long g_scratch_allocs;

attn_scratch *attn_scratch_new(void) { return ss_calloc(1, sizeof(attn_scratch)); }

static void scratch_release(attn_scratch *s) {
    scratch_free(s->w, s->n);
    free(s->g);
    free(s->kv16);
    free(s->kp);
    free(s->vp);
    s->kp = s->vp = NULL;
    s->nkp = s->nvp = 0;
    s->w = NULL;
    s->g = NULL;
    s->kv16 = NULL;
    s->nkv16 = 0;
    s->n = s->kc = s->dh = s->bf16 = 0;
    s->ng = 0;
}

void attn_scratch_free(attn_scratch *s) {
    if (!s) return;
    scratch_release(s);
    free(s);
}

long attn_scratch_allocs(const attn_scratch *s) { return s ? s->allocs : g_scratch_allocs; }

int attn_scratch_reserve(attn_scratch *s, const attn_args *a, int probe_spans) {
    const int Tk = n_keys(a), KC = attn_key_chunk(a), kc = Tk < KC ? Tk : KC, n = omp_get_max_threads();
    size_t ng = 0;
    if (probe_spans > 0 && (ss_mul_size((size_t)ATTN_NG * probe_spans, (size_t)Tk, &ng) || ng > SIZE_MAX / sizeof(double)))
        return ss_fail(SS_ENOMEM, "attention: out of memory for the probe sums (%d keys)", Tk);
    int grew = 0;
    const int bf16 = a->precision == SS_PREC_BF16;
    if (!s->w || n > s->n || kc > s->kc || a->dh > s->dh || (bf16 && !s->bf16)) {
        const int nn = n > s->n ? n : s->n, nkc = kc > s->kc ? kc : s->kc, ndh = a->dh > s->dh ? a->dh : s->dh;
        const int nbf = bf16 || s->bf16;
        scratch_free(s->w, s->n);
        s->w = scratch_new(nn, nkc, ndh, nbf);
        if (!s->w) {
            scratch_release(s);
            return SS_ENOMEM;
        }
        s->n = nn;
        s->kc = nkc;
        s->dh = ndh;
        s->bf16 = nbf;
        grew = 1;
    }
    if (bf16) {
        const size_t nkv = ((size_t)Tk + B16_PAD((size_t)Tk)) * a->dh;
        if (nkv > s->nkv16) {
            free(s->kv16);
            s->kv16 = ss_malloc_aligned(sizeof(uint16_t) * nkv);
            if (!s->kv16) {
                scratch_release(s);
                return ss_fail(SS_ENOMEM, "attention: out of memory for the bf16 operands (%d keys)", Tk);
            }
            s->nkv16 = nkv;
            grew = 1;
        }
    }
    if (!bf16 && qk_own_available()) {
        /* sized by Tk and dh alone: a call with another key chunk needs no more */
        const size_t nkp = (size_t)(Tk + QK_NR - 1) / QK_NR * QK_NR * a->dh;
        if (nkp > s->nkp) {
            free(s->kp);
            s->kp = malloc(sizeof(float) * nkp);
            if (!s->kp) {
                scratch_release(s);
                return ss_fail(SS_ENOMEM, "attention: out of memory for the packed keys (%d keys)", Tk);
            }
            s->nkp = nkp;
            grew = 1;
        }
        const size_t nvp = (size_t)Tk * ((a->dh + 63) / 64 * 64);
        if (a->dh >= PV_MIN_DH && nvp > s->nvp) {
            free(s->vp);
            s->vp = malloc(sizeof(float) * nvp);
            if (!s->vp) {
                scratch_release(s);
                return ss_fail(SS_ENOMEM, "attention: out of memory for the packed values (%d keys)", Tk);
            }
            s->nvp = nvp;
            grew = 1;
        }
    }
    if (ng > s->ng) {
        free(s->g);
        s->g = malloc(sizeof(double) * ng);
        if (!s->g) {
            scratch_release(s);
            return ss_fail(SS_ENOMEM, "attention: out of memory for the probe sums (%d keys)", Tk);
        }
        s->ng = ng;
        grew = 1;
    }
    if (grew) {
        s->allocs++;
        g_scratch_allocs++;
    }
    return grew;
}

/* The layout checks every entry point makes: spans in order, at least one key per batch. */
static int check_args(const attn_args *a) {
    const int Tk = n_keys(a);
    if (a->n_qspan < 0 || a->n_qspan > ATTN_MAX_QSPAN)
        return ss_fail(SS_EARG, "attention: %d query spans (at most %d)", a->n_qspan, ATTN_MAX_QSPAN);
    for (int g = 0; g < a->n_qspan; g++)
        if (a->qend[g] < (g ? a->qend[g - 1] : 0) || (g == a->n_qspan - 1 && a->qend[g] != a->T))
            return ss_fail(SS_EARG, "attention: query span %d ends at row %d: spans must be in order and end at T = %d",
                           g, a->qend[g], a->T);
    if (a->key_valid)
        for (int b = 0; b < a->B; b++) {
            int any = 0;
            for (int j = 0; j < Tk && !any; j++) any = a->key_valid[(size_t)b * Tk + j] != 0;
            if (!any)
                return ss_fail(SS_EARG, "attention: batch %d has all of its %d keys masked (key_valid): its rows would "
                               "have no attention weight at all", b, Tk);
        }
    return 0;
}

/* The tiles run with subnormals flushed to zero (x86 MXCSR FTZ + DAZ, on the calling thread only,
 * restored afterwards): rows whose exponentials fall near FLT_MIN (strongly peaked softmax rows)
 * otherwise make P, P V and the probe's column sums subnormal, which costs Intel cores a
 * microcode assist per operation (measured: plain attention 1.3x and the probe 2.3x slower on
 * such data). Every tile does the same, so results still do not depend on the thread count;
 * they differ from unflushed arithmetic only where a value would be below FLT_MIN. */
static unsigned attn_flush_subnormals(void) {
#if defined(__SSE__)
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u); /* FTZ (bit 15) and DAZ (bit 6) */
    return csr;
#else
    return 0;
#endif
}
static void attn_restore_fp(unsigned csr) {
#if defined(__SSE__)
    _mm_setcsr(csr);
#else
    (void)csr;
#endif
}

int attn_forward(const attn_args *a, const attn_stats *st) {
    int rc = check_args(a);
    if (rc) return rc;
    spans sp;
    spans_of(a, st, &sp);
    const int T = a->T, Tk = sp.Tk, ng = sp.n;
    attn_scratch local = {0}, *sc = a->scratch ? a->scratch : &local;
    if ((rc = attn_scratch_reserve(sc, a, sp.want_cols ? ng : 0)) < 0) return rc;
    scratch *w = sc->w;
    const size_t per_g = (size_t)ng * Tk; /* one row group's sums: [ng, Tk] */
    double *g = sp.want_cols ? sc->g : NULL;
    const int bf16 = a->precision == SS_PREC_BF16;
    /* rows per tile: fp32 keeps ATTN_BQ (BLAS picks its kernels by shape, and the bits follow) */
    const int tq = bf16 ? ATTN_TQ : ATTN_BQ;
    const int fast = bf16 && b16_avx512_available();
    int failed = 0;
    for (int b = 0; b < a->B && !failed; b++) {
        for (int h = 0; h < a->H && !failed; h++) {
            if (g) memset(g, 0, sizeof(double) * ATTN_NG * per_g);
            bf16_head bhh = {0};
            if (bf16) { /* this head's keys and values */
                const int dh = a->dh, ld = a->ld, Tkp = B16_PAD(Tk);
                const float *k = a->k + (size_t)b * Tk * ld + (size_t)h * dh, *v = a->v + (size_t)b * Tk * ld + (size_t)h * dh;
                uint16_t *k16 = sc->kv16, *v16 = sc->kv16 + (size_t)Tk * dh;
#pragma omp parallel for schedule(static) if ((size_t)Tk * dh > 32768 && !omp_in_parallel())
                for (int t = 0; t < Tk; t++) {
                    b16_round(k16 + (size_t)t * dh, k + (size_t)t * ld, dh, 1.0f, fast);
                    b16_round(v16 + (size_t)t * dh, v + (size_t)t * ld, dh, 1.0f, fast);
                }
                memset(v16 + (size_t)Tk * dh, 0, sizeof(uint16_t) * (Tkp - Tk) * dh);
                bhh = (bf16_head){k16, v16};
            }
            const float *kp = NULL, *vp = NULL;
            if (!bf16 && sc->kp && qk_chunks_fit(Tk, attn_key_chunk(a))) {
                qk_pack(sc->kp, a->k + (size_t)b * Tk * a->ld + (size_t)h * a->dh, a->ld, Tk, a->dh, attn_key_chunk(a));
                kp = sc->kp;
            }
            if (!bf16 && sc->vp && a->dh >= PV_MIN_DH) {
                pv_pack(sc->vp, a->v + (size_t)b * Tk * a->ld + (size_t)h * a->dh, a->ld, Tk, a->dh);
                vp = sc->vp;
            }
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
            for (int gi = 0; gi < ATTN_NG; gi++) {
                const int r0 = (int)((long)T * gi / ATTN_NG), r1 = (int)((long)T * (gi + 1) / ATTN_NG);
                scratch *ws = &w[omp_get_thread_num()];
                double *ga = g ? g + (size_t)gi * per_g : NULL;
                const unsigned csr = attn_flush_subnormals();
                for (int i0 = r0; i0 < r1 && !failed; i0 += tq) {
                    const int bq = r1 - i0 < tq ? r1 - i0 : tq;
                    if (bf16) failed |= tile_bf16(a, st, &sp, &bhh, ws, b, h, i0, bq, ga, fast) < 0;
                    else tile(a, st, &sp, kp, vp, ws, b, h, i0, bq, ga);
                }
                attn_restore_fp(csr);
            }
            if (!g) continue;
            for (int q = 0; q < ng; q++) {
                if (!sp.mass[q]) continue;
                const int cnt = sp.end[q] - (q ? sp.end[q - 1] : 0);
                float *dst = sp.mass[q] + ((size_t)b * a->H + h) * Tk;
                for (int j = 0; j < Tk; j++) {
                    double s = 0;
                    for (int gi = 0; gi < ATTN_NG; gi++) s += g[(size_t)gi * per_g + (size_t)q * Tk + j];
                    dst[j] = cnt ? (float)(s / cnt) : 0.0f;
                }
            }
        }
    }
    if (sc == &local) scratch_release(&local);
    if (failed) return ss_fail(SS_ENOMEM, "attention: the bf16 products failed (out of memory)");
    return 0;
}

int attn_reference(const attn_args *a, const attn_stats *st) {
    int rc = check_args(a);
    if (rc) return rc;
    spans sp;
    spans_of(a, st, &sp);
    const int T = a->T, Tk = sp.Tk, dh = a->dh, ld = a->ld;
    const double scale = 1.0 / sqrt((double)dh);
    double *P = ss_malloc(sizeof(double) * (size_t)T * Tk);
    if (!P) return SS_ENOMEM;
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            const size_t qbase = (size_t)b * T * ld + (size_t)h * dh, kbase = (size_t)b * Tk * ld + (size_t)h * dh;
            const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < Tk; j++) {
                    double s = 0;
                    for (int d = 0; d < dh; d++)
                        s += (double)a->q[qbase + (size_t)i * ld + d] * a->k[kbase + (size_t)j * ld + d];
                    P[(size_t)i * Tk + j] = s * scale;
                    if (!kv || kv[j]) mx = fmax(mx, s * scale);
                }
                for (int j = 0; j < Tk; j++)
                    if (!kv || kv[j]) sum += exp(P[(size_t)i * Tk + j] - mx);
                double ent = 0, top[5] = {0};
                for (int j = 0; j < Tk; j++) {
                    double p = !kv || kv[j] ? exp(P[(size_t)i * Tk + j] - mx) / sum : 0.0;
                    P[(size_t)i * Tk + j] = p;
                    if (p > 0) ent -= p * log(fmax(p, 1e-12));
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
                    for (int j = 0; j < Tk; j++) acc += P[(size_t)i * Tk + j] * a->v[kbase + (size_t)j * ld + d];
                    a->out[qbase + (size_t)i * ld + d] = (float)acc;
                }
            }
            for (int q = 0; q < sp.n; q++) {
                if (!sp.mass[q]) continue;
                const int i0 = q ? sp.end[q - 1] : 0, i1 = sp.end[q];
                for (int j = 0; j < Tk; j++) {
                    double s = 0;
                    for (int i = i0; i < i1; i++) s += P[(size_t)i * Tk + j];
                    sp.mass[q][((size_t)b * a->H + h) * Tk + j] = i1 > i0 ? (float)(s / (i1 - i0)) : 0.0f;
                }
            }
        }
    free(P);
    return 0;
}

/* Recompute one query row from scratch with the chosen keys re-weighted by eta (score path) or
 * their values replaced by vrep (value path, vrep != NULL). kT: this (b, h)'s keys transposed,
 * [dh, Tk], or NULL. With kT the dot products of 16 keys run side by side, each still summed over
 * d = 0, 1, ... in order as the scalar loop does, so the bits are the same, ~5x faster. */
#define RR_BLK 16
static void row_recompute(const attn_args *a, size_t qbase, size_t kbase, const uint8_t *kv, int i, const int *keys,
                          int k, float eta, const float *vrep, float m, float *o, const float *kT) {
    const int Tk = n_keys(a), dh = a->dh, ld = a->ld;
    const float scale = 1.0f / sqrtf((float)dh);
    const float *q = a->q + qbase + (size_t)i * ld;
    double acc[512] = {0}, sum = 0; /* dh <= 512 is checked by the caller */
    float sb[RR_BLK];
    for (int j0 = 0; j0 < Tk; j0 += RR_BLK) {
        const int nb = Tk - j0 < RR_BLK ? Tk - j0 : RR_BLK;
        if (kT && nb == RR_BLK) {
            for (int u = 0; u < RR_BLK; u++) sb[u] = 0;
            for (int d = 0; d < dh; d++) {
                const float qd = q[d], *kr = kT + (size_t)d * Tk + j0;
                for (int u = 0; u < RR_BLK; u++) sb[u] += qd * kr[u];
            }
        } else {
            for (int u = 0; u < nb; u++) {
                const float *kj = a->k + kbase + (size_t)(j0 + u) * ld;
                float s = 0;
                for (int d = 0; d < dh; d++) s += q[d] * kj[d];
                sb[u] = s;
            }
        }
        for (int u = 0; u < nb; u++) {
            const int j = j0 + u;
            if (kv && !kv[j]) continue;
            double e = exp((double)(sb[u] * scale) - m);
            const float *vj = a->v + kbase + (size_t)j * ld;
            for (int t = 0; t < k; t++)
                if (keys[t] == j) {
                    if (vrep) vj = vrep + (size_t)t * dh;
                    else e *= eta;
                }
            if (e == 0) continue;
            sum += e;
            for (int d = 0; d < dh; d++) acc[d] += e * vj[d];
        }
    }
    for (int d = 0; d < dh; d++) o[d] = (float)(acc[d] / sum);
}

/* The keys of one (b, h) transposed into kT [dh, Tk] (for row_recompute). */
static void keys_transpose(float *kT, const attn_args *a, size_t kbase) {
    const int Tk = n_keys(a), dh = a->dh;
    for (int j = 0; j < Tk; j++)
        for (int d = 0; d < dh; d++) kT[(size_t)d * Tk + j] = a->k[kbase + (size_t)j * a->ld + d];
}

int attn_apply_reweight(const attn_args *a, const attn_stats *st, const attn_reweight *rw,
                        double *before, double *after) {
    const int dh = a->dh, ld = a->ld, k = rw->k, Tk = n_keys(a);
    if (k > ATTN_MAX_K) return ss_fail(SS_EARG, "attention: at most %d keys per head can be re-weighted", ATTN_MAX_K);
    if (dh > 512) return ss_fail(SS_EARG, "attention: head dim %d > 512 not supported", dh);
    if (!st || !st->row_m || !st->row_l)
        return ss_fail(SS_EARG, "attention: re-weighting needs the row max and sum");
    if (rw->r0 < 0 || rw->r1 > a->T || rw->r0 > rw->r1)
        return ss_fail(SS_EARG, "attention: re-weighted rows [%d, %d) outside the %d query rows", rw->r0, rw->r1, a->T);
    for (size_t i = 0; i < (size_t)a->B * a->H * k; i++) {
        const int j = rw->keys[i];
        if (j >= Tk || (j >= 0 && a->key_valid && !a->key_valid[i / ((size_t)a->H * k) * Tk + j]))
            return ss_fail(SS_EARG, "attention: re-weighted key %d is %s", j, j >= Tk ? "past the keys" : "masked");
    }
    const float scale = 1.0f / sqrtf((float)dh);
    const int rows = rw->r1 - rw->r0;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++) {
            const size_t qbase = (size_t)b * a->T * ld + (size_t)h * dh, kbase = (size_t)b * Tk * ld + (size_t)h * dh;
            const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
            const int *keys = rw->keys + ((size_t)b * a->H + h) * k;
            const float *vrep = rw->vrep ? rw->vrep + ((size_t)b * a->H + h) * k * dh : NULL;
            double sb = 0, sa = 0;
            float *kT = NULL; /* made at this (b, h)'s first recomputed row; NULL if out of memory */
            int kT_tried = 0;
#define KT() (kT_tried ? kT : (kT_tried = 1, (kT = malloc(sizeof(float) * (size_t)Tk * dh)) ? (keys_transpose(kT, a, kbase), kT) : NULL))
            for (int i = rw->r0; i < rw->r1; i++) {
                const size_t o3 = idx3(a, b, h, i);
                const float m = st->row_m[o3], l = st->row_l[o3];
                const float *q = a->q + qbase + (size_t)i * ld;
                float *o = a->out + qbase + (size_t)i * ld;
                double e[ATTN_MAX_K], esum = 0;
                for (int t = 0; t < k; t++) {
                    e[t] = 0;
                    if (keys[t] < 0) continue;
                    const float *kj = a->k + kbase + (size_t)keys[t] * ld;
                    float s = 0;
                    for (int d = 0; d < dh; d++) s += q[d] * kj[d];
                    e[t] = exp((double)(s * scale) - m);
                    esum += e[t];
                }
                sb += esum / l;
                if (rw->value_path && esum > 0.5 * l) {
                    /* most of the row's weight is being changed: O + delta would cancel */
                    row_recompute(a, qbase, kbase, kv, i, keys, k, 1.0f, vrep, m, o, KT());
                    sa += esum / l;
                    continue;
                }
                if (rw->value_path) {
                    /* O' = O + sum_t p_t (v'_t - v_t); the weights stay as they are. */
                    for (int t = 0; t < k; t++) {
                        if (keys[t] < 0) continue;
                        const float *vj = a->v + kbase + (size_t)keys[t] * ld;
                        const double p = e[t] / l;
                        for (int d = 0; d < dh; d++) o[d] += (float)(p * (vrep[(size_t)t * dh + d] - vj[d]));
                    }
                    sa += esum / l;
                    continue;
                }
                const double removed = (1.0 - rw->eta) * esum, l2 = l - removed;
                sa += rw->eta * esum / l2;
                if (l2 < 0.5 * l) {
                    row_recompute(a, qbase, kbase, kv, i, keys, k, rw->eta, NULL, m, o, KT());
                    continue;
                }
                /* O' = (O l - (1-eta) sum_t e_t v_t) / l' */
                for (int d = 0; d < dh; d++) {
                    double num = (double)o[d] * l;
                    for (int t = 0; t < k; t++)
                        if (keys[t] >= 0) num -= (1.0 - rw->eta) * e[t] * a->v[kbase + (size_t)keys[t] * ld + d];
                    o[d] = (float)(num / l2);
                }
            }
#undef KT
            free(kT);
            if (before) before[(size_t)b * a->H + h] = rows > 0 ? sb / rows : 0;
            if (after) after[(size_t)b * a->H + h] = rows > 0 ? sa / rows : 0;
        }
    return 0;
}
