#include "metric/fid.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define FID_NB 128 /* output columns per dgemm block */

/* LAPACK's symmetric eigensolver (Fortran symbols; the trailing arguments are the hidden lengths
 * of the two character arguments that gfortran passes). */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);
/* LAPACK's divide-and-conquer SVD (singular values only with jobz = 'N'). */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
                    size_t jobz_len);

void fid_stats_free(fid_stats *s) {
    if (!s) return;
    free(s->mu);
    free(s->sigma);
    memset(s, 0, sizeof *s);
}

/* C[m, n] = alpha op(A) op(B) (row-major), as fixed blocks of FID_NB columns of C, each one
 * single-threaded dgemm: independent of the thread count. */
static void dgemm_blocked(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
                          const double *A, int lda, const double *B, int ldb, double *C, int ldc) {
    const int nblk = (n + FID_NB - 1) / FID_NB;
#pragma omp parallel for schedule(dynamic, 1) if ((double)m * n * k > 1e6)
    for (int bi = 0; bi < nblk; bi++) {
        const int j0 = bi * FID_NB, nb = n - j0 < FID_NB ? n - j0 : FID_NB;
        const double *Bj = tb == CblasNoTrans ? B + j0 : B + (size_t)j0 * ldb;
        cblas_dgemm(CblasRowMajor, ta, tb, m, nb, k, alpha, A, lda, Bj, ldb, 0.0, C + j0, ldc);
    }
}

static void symmetrize(double *S, int d) {
    for (int i = 0; i < d; i++)
        for (int j = i + 1; j < d; j++) {
            double v = 0.5 * (S[(size_t)i * d + j] + S[(size_t)j * d + i]);
            S[(size_t)i * d + j] = S[(size_t)j * d + i] = v;
        }
}

static int stats_alloc(fid_stats *s, int64_t n, int dim, double **xc) {
    memset(s, 0, sizeof *s);
    *xc = NULL;
    if (n < 2) return ss_fail(SS_ESHAPE, "fid: %lld feature rows; the covariance needs at least 2", (long long)n);
    if (dim < 1 || dim > 65536) return ss_fail(SS_ESHAPE, "fid: feature dimension %d out of range", dim);
    size_t nd, dd;
    if (ss_mul_size((size_t)n, (size_t)dim, &nd) || ss_mul_size(nd, sizeof(double), &nd) ||
        ss_mul_size((size_t)dim * dim, sizeof(double), &dd) || n > INT32_MAX)
        return ss_fail(SS_ENOMEM, "fid: %lld x %d features overflow", (long long)n, dim);
    s->mu = ss_calloc((size_t)dim, sizeof(double));
    s->sigma = ss_malloc(dd);
    *xc = ss_malloc(nd);
    if (!s->mu || !s->sigma || !*xc) {
        free(*xc);
        *xc = NULL;
        fid_stats_free(s);
        return SS_ENOMEM;
    }
    s->dim = dim, s->n = n;
    return 0;
}

/* xc holds the features; centre them and finish the statistics. */
static int stats_finish(fid_stats *s, double *xc) {
    const int d = s->dim;
    const int64_t n = s->n;
#pragma omp parallel for schedule(static) if ((size_t)n * d > 65536)
    for (int j = 0; j < d; j++) {
        double sum = 0; /* sequential per column: independent of the thread count */
        for (int64_t i = 0; i < n; i++) sum += xc[(size_t)i * d + j];
        s->mu[j] = sum / (double)n;
    }
    for (int j = 0; j < d; j++)
        if (!isfinite(s->mu[j])) {
            free(xc);
            fid_stats_free(s);
            return ss_fail(SS_EFORMAT, "fid: feature %d is not finite", j);
        }
#pragma omp parallel for schedule(static) if ((size_t)n * d > 65536)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) xc[(size_t)i * d + j] -= s->mu[j];
    /* Sigma = Xc^T Xc / (n - 1) */
    dgemm_blocked(CblasTrans, CblasNoTrans, d, d, (int)n, 1.0 / (double)(n - 1), xc, d, xc, d, s->sigma, d);
    symmetrize(s->sigma, d);
    free(xc);
    return 0;
}

int fid_stats_compute(fid_stats *s, const double *feat, int64_t n, int dim) {
    double *xc;
    int rc = stats_alloc(s, n, dim, &xc);
    if (rc < 0) return rc;
    memcpy(xc, feat, (size_t)n * dim * sizeof *xc);
    return stats_finish(s, xc);
}

int fid_stats_compute_f32(fid_stats *s, const float *feat, int64_t n, int dim) {
    double *xc;
    int rc = stats_alloc(s, n, dim, &xc);
    if (rc < 0) return rc;
    for (size_t i = 0; i < (size_t)n * dim; i++) xc[i] = feat[i];
    return stats_finish(s, xc);
}

/* Eigenvalues (ascending) of the symmetric d x d matrix a, and its eigenvectors as the rows of a
 * (row-major) when vectors is set. Runs inside an active parallel region so that OpenBLAS (the
 * BLAS dsyevd calls) is single-threaded. Returns LAPACK's info. */
static int syevd(double *a, double *w, int d, int vectors) {
    int info = 0;
    const char jobz = vectors ? 'V' : 'N', uplo = 'L';
    int lwork = vectors ? 1 + 6 * d + 2 * d * d : 2 * d + 1, liwork = vectors ? 3 + 5 * d : 1;
    double *work = malloc((size_t)lwork * sizeof *work);
    int *iwork = malloc((size_t)liwork * sizeof *iwork);
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return -1000;
    }
#pragma omp parallel
#pragma omp single
    dsyevd_(&jobz, &uplo, &d, a, &d, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    return info;
}

/* tr sqrt(S1 S2) through eig(sqrt(S1) S2 sqrt(S1)). 0, 1 when a square root was not finite, or
 * a negative error code. */
static int trace_sqrt_product(const double *S1, const double *S2, int d, double eps, double *tr) {
    const size_t dd = (size_t)d * d;
    double *E = ss_malloc(dd * sizeof *E), *T = ss_malloc(dd * sizeof *T), *M = ss_malloc(dd * sizeof *M);
    double *S2e = ss_malloc(dd * sizeof *S2e), *lam = ss_malloc((size_t)d * sizeof *lam);
    int rc = E && T && M && S2e && lam ? 0 : SS_ENOMEM;
    if (rc == 0) {
        memcpy(E, S1, dd * sizeof *E);
        memcpy(S2e, S2, dd * sizeof *S2e);
        for (int i = 0; i < d; i++) E[(size_t)i * d + i] += eps, S2e[(size_t)i * d + i] += eps;
        int info = syevd(E, lam, d, 1);
        if (info == -1000) rc = ss_fail(SS_ENOMEM, "fid: out of memory for dsyevd");
        else if (info < 0) rc = ss_fail(SS_EARG, "fid: dsyevd rejected argument %d", -info);
        else if (info > 0) rc = 1;
    }
    if (rc == 0) {
        /* Sigma1 = E^T diag(lam) E with E orthogonal (rows = eigenvectors), so
         * eig(sqrt(S1) S2 sqrt(S1)) = eig(H S2 H^T) with H = diag(sqrt(lam)) E. */
        for (int j = 0; j < d && rc == 0; j++) {
            if (!isfinite(lam[j])) {
                rc = 1;
                break;
            }
            double r = lam[j] > 0 ? sqrt(lam[j]) : 0.0;
            for (int i = 0; i < d; i++) E[(size_t)j * d + i] *= r;
        }
    }
    if (rc == 0) {
        dgemm_blocked(CblasNoTrans, CblasNoTrans, d, d, d, 1.0, E, d, S2e, d, T, d); /* T = H S2 */
        dgemm_blocked(CblasNoTrans, CblasTrans, d, d, d, 1.0, T, d, E, d, M, d);     /* M = T H^T */
        symmetrize(M, d);
        int info = syevd(M, lam, d, 0);
        if (info == -1000) rc = ss_fail(SS_ENOMEM, "fid: out of memory for dsyevd");
        else if (info < 0) rc = ss_fail(SS_EARG, "fid: dsyevd rejected argument %d", -info);
        else if (info > 0) rc = 1;
    }
    if (rc == 0) {
        /* eigenvalues below the rounding level of the largest are zeros of a rank-deficient
         * product (N < dim): sqrt would turn their +-1e-16 noise into a sum of ~1e-8 terms */
        double big = 0, s = 0;
        for (int j = 0; j < d; j++) {
            if (!isfinite(lam[j])) {
                rc = 1;
                break;
            }
            if (fabs(lam[j]) > big) big = fabs(lam[j]);
        }
        const double tol = big * d * DBL_EPSILON;
        for (int j = 0; j < d && rc == 0; j++) s += lam[j] > tol ? sqrt(lam[j]) : 0.0;
        *tr = s;
    }
    free(E);
    free(T);
    free(M);
    free(S2e);
    free(lam);
    return rc;
}

static int check_pair(const fid_stats *a, const fid_stats *b) {
    if (!a->mu || !b->mu || !a->sigma || !b->sigma) return ss_fail(SS_EARG, "fid: statistics not computed");
    if (a->dim != b->dim)
        return ss_fail(SS_ESHAPE, "fid: feature dimensions differ (%d vs %d)", a->dim, b->dim);
    const size_t dd = (size_t)a->dim * a->dim;
    for (size_t i = 0; i < dd; i++)
        if (!isfinite(a->sigma[i]) || !isfinite(b->sigma[i]))
            return ss_fail(SS_EFORMAT, "fid: covariance entry %zu is not finite", i);
    return 0;
}

static int frechet(const fid_stats *a, const fid_stats *b, double eps, fid_result *r) {
    const int d = a->dim;
    double tr_cov, mterm = 0, tr1 = 0, tr2 = 0;
    int rc = trace_sqrt_product(a->sigma, b->sigma, d, eps, &tr_cov);
    if (rc != 0) return rc;
    for (int i = 0; i < d; i++) {
        double df = a->mu[i] - b->mu[i];
        mterm += df * df;
        tr1 += a->sigma[(size_t)i * d + i];
        tr2 += b->sigma[(size_t)i * d + i];
    }
    /* pytorch-fid returns tr(S1) + tr(S2) of the covariances without the offset */
    r->fid = mterm + tr1 + tr2 - 2 * tr_cov;
    r->mean_term = mterm;
    r->tr_covmean = tr_cov;
    r->eps_added = eps > 0;
    return 0;
}

int fid_frechet_offset(const fid_stats *a, const fid_stats *b, double eps, fid_result *r) {
    int rc = check_pair(a, b);
    if (rc < 0) return rc;
    if (!(eps >= 0) || !isfinite(eps)) return ss_fail(SS_EARG, "fid: offset %g must be finite and >= 0", eps);
    rc = frechet(a, b, eps, r);
    if (rc > 0) return ss_fail(SS_EFORMAT, "fid: the square root of the covariance product is not finite");
    return rc;
}

int fid_frechet(const fid_stats *a, const fid_stats *b, fid_result *r) {
    int rc = check_pair(a, b);
    if (rc < 0) return rc;
    rc = frechet(a, b, 0.0, r);
    if (rc > 0) rc = frechet(a, b, FID_EPS, r); /* FID_RULE_EPS_IF_NONFINITE */
    if (rc > 0)
        return ss_fail(SS_EFORMAT, "fid: the square root of the covariance product is not finite even with %g I added",
                       FID_EPS);
    return rc;
}

/* ---- the Gram form (paired resamples) ---- */

struct fid_gram {
    int64_t n;
    int dim;
    double *gaa, *gbb, *gab; /* [n, n] Grams of the centred rows: Xa Xa^T, Xb Xb^T, Xa Xb^T */
    double *diff;            /* [n, dim] a_i - b_i */
};

void fid_gram_free(fid_gram *g) {
    if (!g) return;
    free(g->gaa), free(g->gbb), free(g->gab), free(g->diff);
    free(g);
}

int fid_gram_new(fid_gram **out, const float *a, const float *b, int64_t n, int dim) {
    *out = NULL;
    if (n < 2 || n > 1 << 20) return ss_fail(SS_ESHAPE, "fid: %lld pairs; the Gram form needs 2 to 2^20", (long long)n);
    if (dim < 1 || dim > 65536) return ss_fail(SS_ESHAPE, "fid: feature dimension %d out of range", dim);
    const size_t nd = (size_t)n * dim, nn = (size_t)n * n;
    fid_gram *g = ss_calloc(1, sizeof *g);
    double *xa = ss_malloc(nd * sizeof *xa), *xb = ss_malloc(nd * sizeof *xb);
    if (g) {
        g->n = n, g->dim = dim;
        g->gaa = ss_malloc(nn * sizeof(double)), g->gbb = ss_malloc(nn * sizeof(double));
        g->gab = ss_malloc(nn * sizeof(double)), g->diff = ss_malloc(nd * sizeof(double));
    }
    if (!g || !xa || !xb || !g->gaa || !g->gbb || !g->gab || !g->diff) {
        fid_gram_free(g), free(xa), free(xb);
        return SS_ENOMEM;
    }
    for (size_t i = 0; i < nd; i++) {
        xa[i] = a[i], xb[i] = b[i], g->diff[i] = (double)a[i] - (double)b[i];
        if (!isfinite(g->diff[i])) {
            fid_gram_free(g), free(xa), free(xb);
            return ss_fail(SS_EFORMAT, "fid: feature %zu of row %zu is not finite", i % (size_t)dim, i / (size_t)dim);
        }
    }
    /* centre each set by its own mean (column sums in row order: thread-count independent) */
    double *x2[2] = {xa, xb};
    for (int s = 0; s < 2; s++) {
        double *x = x2[s];
#pragma omp parallel for schedule(static) if (nd > 65536)
        for (int j = 0; j < dim; j++) {
            double sum = 0;
            for (int64_t i = 0; i < n; i++) sum += x[(size_t)i * dim + j];
            const double mu = sum / (double)n;
            for (int64_t i = 0; i < n; i++) x[(size_t)i * dim + j] -= mu;
        }
    }
    const int ni = (int)n;
    dgemm_blocked(CblasNoTrans, CblasTrans, ni, ni, dim, 1.0, xa, dim, xa, dim, g->gaa, ni);
    dgemm_blocked(CblasNoTrans, CblasTrans, ni, ni, dim, 1.0, xb, dim, xb, dim, g->gbb, ni);
    dgemm_blocked(CblasNoTrans, CblasTrans, ni, ni, dim, 1.0, xa, dim, xb, dim, g->gab, ni);
    free(xa), free(xb);
    *out = g;
    return 0;
}

/* M = G[idx, idx] double-centred (P M P with P = I - 11^T / n), into m; returns tr(M). */
static double gather_centre(const double *G, const int *idx, int n, double *m) {
    double *rs = m + (size_t)n * n, *cs = rs + n, tot = 0; /* row and column means after the gather */
    for (int i = 0; i < n; i++) rs[i] = cs[i] = 0;
    for (int i = 0; i < n; i++) {
        const double *gi = G + (size_t)idx[i] * n;
        for (int j = 0; j < n; j++) {
            const double v = gi[idx[j]];
            m[(size_t)i * n + j] = v;
            rs[i] += v, cs[j] += v;
        }
    }
    for (int i = 0; i < n; i++) tot += rs[i];
    const double gm = tot / ((double)n * n);
    double tr = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double *v = &m[(size_t)i * n + j];
            *v = *v - rs[i] / n - cs[j] / n + gm;
            if (i == j) tr += *v;
        }
    return tr;
}

int fid_gram_resample(const fid_gram *g, const int *idx, double *fid) {
    const int n = (int)g->n, d = g->dim;
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= n) return ss_fail(SS_EARG, "fid: resample index %d out of [0, %d)", idx[i], n);
    const int mn = n, lwork = 3 * mn + (7 * mn > n ? 7 * mn : n) + 64;
    double *m = ss_malloc(((size_t)n * n + 2 * (size_t)n) * sizeof *m), *sv = ss_malloc((size_t)n * sizeof *sv);
    double *work = ss_malloc((size_t)lwork * sizeof *work), *mu = ss_calloc((size_t)d, sizeof *mu);
    int *iwork = ss_malloc((size_t)8 * n * sizeof *iwork);
    int rc = m && sv && work && mu && iwork ? 0 : SS_ENOMEM;
    if (rc == 0) {
        /* ||mean(a - b)||^2 over the resample */
        for (int i = 0; i < n; i++) {
            const double *r = g->diff + (size_t)idx[i] * d;
            for (int j = 0; j < d; j++) mu[j] += r[j];
        }
        double mterm = 0;
        for (int j = 0; j < d; j++) mterm += (mu[j] / n) * (mu[j] / n);
        const double tra = gather_centre(g->gaa, idx, n, m), trb = gather_centre(g->gbb, idx, n, m);
        gather_centre(g->gab, idx, n, m);
        int info = 0, one = 1;
        const char jobz = 'N';
        /* row-major M is column-major M^T: the same singular values */
        /* inside an active parallel region, as syevd: OpenBLAS runs single-threaded */
#pragma omp parallel
#pragma omp single
        dgesdd_(&jobz, &n, &n, m, &n, sv, NULL, &one, NULL, &one, work, &lwork, iwork, &info, 1);
        if (info != 0) rc = ss_fail(SS_EFORMAT, "fid: dgesdd failed (info %d)", info);
        double nuc = 0;
        for (int i = 0; i < n && rc == 0; i++) nuc += sv[i];
        if (rc == 0) *fid = mterm + (tra + trb - 2 * nuc) / (double)(n - 1);
    }
    free(m), free(sv), free(work), free(mu), free(iwork);
    return rc;
}

int fid_bootstrap_pairs(const float *a, const float *b, int64_t n, int dim, const int *idx, int B, double *reps) {
    int rc = 0;
    if (n <= dim) {
        fid_gram *g;
        if ((rc = fid_gram_new(&g, a, b, n, dim)) < 0) return rc;
        int bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < B; k++) {
            int stop;
#pragma omp atomic read
            stop = bad;
            if (stop) continue;
            if (fid_gram_resample(g, idx + (size_t)k * n, &reps[k]) < 0) {
#pragma omp atomic write
                bad = 1;
            }
        }
        fid_gram_free(g);
        return bad ? ss_fail(SS_EFORMAT, "fid: a bootstrap resample failed") : 0;
    }
    const size_t nd = (size_t)n * dim;
    float *xa = ss_malloc(nd * sizeof *xa), *xb = ss_malloc(nd * sizeof *xb);
    if (!xa || !xb) rc = SS_ENOMEM;
    for (int k = 0; k < B && !rc; k++) {
        for (int64_t i = 0; i < n; i++) {
            const int j = idx[(size_t)k * n + i];
            if (j < 0 || j >= n) {
                rc = ss_fail(SS_EARG, "fid: resample index %d out of [0, %lld)", j, (long long)n);
                break;
            }
            memcpy(xa + (size_t)i * dim, a + (size_t)j * dim, (size_t)dim * sizeof *xa);
            memcpy(xb + (size_t)i * dim, b + (size_t)j * dim, (size_t)dim * sizeof *xb);
        }
        fid_stats sa, sb;
        fid_result r;
        memset(&sa, 0, sizeof sa), memset(&sb, 0, sizeof sb);
        if (!rc && (rc = fid_stats_compute_f32(&sa, xa, n, dim)) == 0 && (rc = fid_stats_compute_f32(&sb, xb, n, dim)) == 0 &&
            (rc = fid_frechet(&sa, &sb, &r)) == 0)
            reps[k] = r.fid;
        fid_stats_free(&sa), fid_stats_free(&sb);
    }
    free(xa), free(xb);
    return rc;
}
