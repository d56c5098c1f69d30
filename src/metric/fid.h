/* fid: the Fréchet Inception Distance between two feature sets, in float64, as pytorch-fid's
 * calculate_frechet_distance (and clean-fid's frechet_distance) define it:
 *
 *   mu = mean over rows, Sigma = covariance with ddof 1 (np.cov(rowvar=False))
 *   FID = ||mu1 - mu2||^2 + tr(Sigma1) + tr(Sigma2) - 2 tr sqrt(Sigma1 Sigma2)
 *
 * The packages take scipy.linalg.sqrtm of the (non-symmetric) product and keep the real part.
 * Here the trace is computed exactly through LAPACK's symmetric eigensolver (dsyevd): Sigma1 Sigma2
 * is similar to the symmetric PSD matrix M = sqrt(Sigma1) Sigma2 sqrt(Sigma1), so
 * tr sqrt(Sigma1 Sigma2) = sum_i sqrt(lambda_i(M)), with sqrt(Sigma1) = V diag(sqrt(l)) V^T from
 * the eigendecomposition of Sigma1. With N < dim the covariances are rank-deficient and M has
 * exact zero eigenvalues that rounding leaves at +-1e-16 * lambda_max; square roots would turn
 * them into a sum of spurious ~1e-8 terms, so eigenvalues of M at or below
 * dim * DBL_EPSILON * max|lambda| (numpy's matrix_rank threshold) count as 0 (negative ones of
 * Sigma1 likewise), as keeping the real part of sqrtm does for the negative ones.
 *
 * FID_RULE_EPS_IF_NONFINITE (pytorch-fid's rule, also clean-fid's): 1e-6 I is added to both
 * covariances only when the first square root is not finite; then the computation is repeated
 * with the offset. Here "not finite" means a non-finite eigenvalue of Sigma1 or M, or dsyevd
 * failing to converge; fid_result.eps_added says whether the offset was used.
 *
 * Results do not depend on the thread count: the matrix products are fixed column blocks, each a
 * single-threaded dgemm (OpenBLAS runs single-threaded inside an active OpenMP region), and the
 * eigensolver runs inside such a region too.
 */
#ifndef SS_FID_H
#define SS_FID_H

#include <stdint.h>

#define FID_EPS 1e-6
#define FID_RULE_EPS_IF_NONFINITE "eps-if-nonfinite" /* the name printed with results */

typedef struct {
    int dim;
    int64_t n;    /* rows the statistics came from */
    double *mu;    /* [dim] */
    double *sigma; /* [dim, dim], row-major, symmetric */
} fid_stats;

typedef struct {
    double fid;
    double mean_term;  /* ||mu1 - mu2||^2 */
    double tr_covmean; /* tr sqrt(Sigma1 Sigma2) (with the offset if eps_added) */
    int eps_added;     /* 1 when FID_RULE_EPS_IF_NONFINITE added FID_EPS I */
} fid_result;

/* Mean and covariance (ddof 1) of feat[n, dim] (row-major, float64); n >= 2, dim >= 1. */
int fid_stats_compute(fid_stats *s, const double *feat, int64_t n, int dim);
/* The same from float32 features (converted to float64 first, as pytorch-fid's pred_arr does). */
int fid_stats_compute_f32(fid_stats *s, const float *feat, int64_t n, int dim);
void fid_stats_free(fid_stats *s);

/* FID with FID_RULE_EPS_IF_NONFINITE. Errors: dimension mismatch, non-finite statistics. */
int fid_frechet(const fid_stats *a, const fid_stats *b, fid_result *r);
/* The same computation with eps I added to both covariances unconditionally (eps >= 0): the
 * rule's second branch, exposed so that it can be checked on its own. */
int fid_frechet_offset(const fid_stats *a, const fid_stats *b, double eps, fid_result *r);

/* ---- FID of paired row sets through their Gram matrices (for bootstrap resamples) ----
 *
 * For two feature sets of n paired rows (a_i, b_i), FID needs only n x n products: with the
 * centred rows X (n x dim), Sigma = X^T X / (n - 1), tr Sigma = tr(X X^T) / (n - 1), and the
 * non-zero eigenvalues of Sigma_a Sigma_b are those of (Xa Xb^T)(Xa Xb^T)^T, so
 * tr sqrt(Sigma_a Sigma_b) = ||Xa Xb^T||_* / (n - 1), the sum of the singular values (LAPACK
 * dgesdd). A resample (rows idx[0..n-1], drawn with replacement, pairs kept together) is then an
 * n x n gather and double-centring of the Grams computed once, whatever dim is: the bootstrap
 * costs O(n^3) per resample instead of two dim x dim eigendecompositions. The value is the exact
 * Frechet distance of the resample (no offset: with finite features the square root is always
 * finite); for idx = 0..n-1 it equals fid_frechet's up to rounding. Thread-count independent. */
typedef struct fid_gram fid_gram;
/* a[n, dim], b[n, dim] (row-major, float32): pair i is (a_i, b_i); n >= 2. */
int fid_gram_new(fid_gram **out, const float *a, const float *b, int64_t n, int dim);
void fid_gram_free(fid_gram *g);
/* FID of the pairs idx[0..n-1] (indices in [0, n)). Allocates its own working memory, so one
 * fid_gram serves several threads at once. */
int fid_gram_resample(const fid_gram *g, const int *idx, double *fid);

/* reps[k] = the FID of resample k, the pairs idx[k n .. k n + n - 1] of (a, b), k < B: through the
 * Gram form (resamples in parallel) when n <= dim, else through the statistics of the resampled
 * rows (fid_frechet; cheaper than O(n^3) once n > dim). Thread-count independent. */
int fid_bootstrap_pairs(const float *a, const float *b, int64_t n, int dim, const int *idx, int B, double *reps);

#endif
