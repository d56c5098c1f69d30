/* stats: the statistics behind sinkscope's paired, seed-matched experiments.
 *
 * Everything is double precision and depends only on libm. The reported numbers follow the
 * conventions of scipy 1.10 / numpy 1.24 / statsmodels (the references in tests/data/
 * stats_scipy.json), so a table produced here can be cross-checked in Python:
 *
 *   stats_paired_t(a, b, n, &t)             scipy.stats.ttest_rel(b, a)   (delta = b - a)
 *   stats_bootstrap_mean_ci(d, n, 1000, .95, seed, &lo, &hi)
 *                                           percentile bootstrap, np.percentile(method='linear')
 *   stats_holm(p, m, adj)                   statsmodels multipletests(p, method='holm')[1]
 *                                           (same algorithm; tested against it written in numpy)
 *   stats_tost_paired(d, n, 0.002, .05, &e) two one-sided t-tests, equivalence within +-margin
 *   stats_dd(x_sink, x_rand, n, ...)        difference of differences (sink vs random masking)
 *   stats_dose_trend(dose, y, n, &tr)       scipy.stats.linregress + scipy.stats.spearmanr
 *
 * All functions are reentrant (no global state; the bootstrap generator lives on the stack).
 *
 * Errors: functions returning int give SS_OK or a negative SS_E* code with ss_err() set (bad
 * sizes, non-finite inputs, out-of-range parameters). Scalar special functions return NaN on a
 * bad argument instead, like libm.
 *
 * Degenerate data (documented conventions, not errors). The rule: a p-value needs a t
 * distribution, so whenever the standard error it divides by is zero, p is NaN (undefined) and
 * the caller says why; no test ever reports p = 0 or p = 1 from a division by zero.
 *   - A t-test needs n >= 2 (SS_EARG otherwise); a bootstrap CI of n = 1 value is NaN.
 *   - Zero variance of the differences (`zero_var` = 1): every p is NaN. t is NaN (0/0) when
 *     every difference equals the null value (scipy: NaN too) and +-inf when they are a
 *     constant other than it (scipy: +-inf and p = 0 for exactly representable constants, or a
 *     huge t from rounding, e.g. 1e16 for a constant 0.1). TOST: p, its CI NaN, not equivalent.
 *   - Holm: NaN p-values stay NaN and are not counted among the hypotheses.
 *   - Dose trend: all doses equal is an error (the slope is undefined, scipy raises). If y is
 *     constant (`y_constant`): slope 0, r, t, p, rho and rho_p NaN (scipy: r = 0, p = 1 by its
 *     convention; rho NaN). Points exactly on a line (`exact_fit`, slope_se = 0): t = +-inf,
 *     p NaN (scipy: p ~ 1e-30 from its TINY guard). |rho| = 1: rho_p NaN (scipy: ~0 from the
 *     same guard; the exact permutation p is not 0).
 */
#ifndef SS_STATS_H
#define SS_STATS_H

#include <stdint.h>

/* ---- special functions (NaN for invalid arguments) ----
 * Measured against scipy 1.10 and exact arithmetic (tests/test_stats.c prints the numbers):
 * relative error ~1e-13 or better wherever the result is above 1e-300, for df from 0.05 to
 * 1e30 (larger df is the normal). betainc loses up to ~eps/min(a, b) when a parameter is far
 * below 1; the t distribution (b = 1/2) is unaffected. */

double stats_lgamma(double x);                     /* log|Gamma(x)|, thread-safe */
double stats_lbeta(double a, double b);            /* log B(a, b) for a, b > 0 */
double stats_betainc(double a, double b, double x);  /* regularized I_x(a, b), a, b > 0, 0<=x<=1 */
double stats_betainc_upper(double a, double b, double x); /* 1 - I_x(a, b), without cancellation */
double stats_t_cdf(double t, double df);           /* P(T <= t), df > 0 (df > 1e30: normal) */
double stats_t_sf(double t, double df);            /* P(T > t), accurate in the upper tail */
double stats_t_pdf(double t, double df);
double stats_t_ppf(double p, double df);           /* quantile: P(T <= x) = p, 0 <= p <= 1;
                                                      -+inf if beyond DBL_MAX (tiny df) */
double stats_norm_cdf(double x);
double stats_norm_sf(double x);
double stats_norm_ppf(double p);

/* ---- descriptives (NaN if n is too small: mean n >= 1, sd n >= 2) ---- */

double stats_mean(const double *x, int n);
double stats_sd(const double *x, int n);           /* sample sd, ddof = 1 */
/* Quantile of already sorted data, linear interpolation between order statistics
 * (np.percentile(x, 100*q, method='linear')). q in [0, 1]. */
double stats_quantile_sorted(const double *sorted, int n, double q);
/* Same on unsorted data (sorts a copy). */
int stats_quantile(const double *x, int n, double q, double *out);
int stats_median(const double *x, int n, double *out);

typedef struct {
    int n;
    double mean, sd, se; /* sd with ddof = 1 (NaN when n = 1), se = sd / sqrt(n) */
    double min, q25, median, q75, max;
} stats_desc;
int stats_describe(const double *x, int n, stats_desc *out);

/* ---- t-tests ---- */

typedef struct {
    int n;          /* number of pairs / observations */
    double df;      /* n - 1 */
    double mean;    /* mean difference (paired: mean of b - a) */
    double sd;      /* sd of the differences, ddof = 1 */
    double se;      /* sd / sqrt(n) */
    double t;       /* (mean - mu0) / se */
    double p_two;   /* two-sided p */
    double p_greater; /* one-sided p for H1: mean > mu0 */
    double p_less;  /* one-sided p for H1: mean < mu0 */
    int zero_var;   /* 1 if sd == 0: p_two, p_greater, p_less NaN (see the convention above) */
} stats_ttest;

/* One-sample t-test of H0: mean(d) = mu0 (scipy.stats.ttest_1samp). */
int stats_ttest_1samp(const double *d, int n, double mu0, stats_ttest *out);
/* Paired t-test on delta = b - a, like scipy.stats.ttest_rel(b, a). */
int stats_paired_t(const double *a, const double *b, int n, stats_ttest *out);

/* ---- bootstrap ---- */

/* Percentile bootstrap CI for the mean of d: `resamples` resamples of size n drawn with
 * replacement (xoshiro256** seeded by splitmix64(seed), unbiased index draws), the resample
 * means' percentiles (1-level)/2 and (1+level)/2 with linear interpolation. Deterministic for a
 * given (d, n, resamples, seed) on every platform. n >= 1, resamples >= 1, 0 < level < 1;
 * n = 1 gives lo = hi = NaN (one value has no sampling distribution). */
int stats_bootstrap_mean_ci(const double *d, int n, int resamples, double level, uint64_t seed,
                            double *lo, double *hi);

/* ---- multiple comparisons ---- */

/* Holm step-down adjusted p-values, monotone in the sorted order and capped at 1. adj may alias
 * p. Every p must be in [0, 1] or NaN (an undefined test: adj NaN, not counted). m >= 1. */
int stats_holm(const double *p, int m, double *adj);

/* ---- equivalence ---- */

typedef struct {
    int n;
    double df, mean, se, margin, alpha;
    double t_lower;   /* (mean + margin) / se: tests H0 mean <= -margin */
    double t_upper;   /* (mean - margin) / se: tests H0 mean >= +margin */
    double p_lower, p_upper;
    double p;         /* max(p_lower, p_upper): the TOST p-value */
    double ci_lo, ci_hi; /* (1 - 2 alpha) CI: mean -+ t_{1-alpha, df} se */
    int equivalent;   /* p < alpha (equivalently, the CI lies inside (-margin, margin)) */
    int zero_var;     /* se == 0: p, p_lower, p_upper, ci NaN; equivalent = 0 */
} stats_tost;

/* TOST for the mean paired difference d (e.g. b - a) within +-margin. n >= 2, margin > 0,
 * 0 < alpha < 0.5. */
int stats_tost_paired(const double *d, int n, double margin, double alpha, stats_tost *out);

/* ---- difference of differences ---- */

typedef struct {
    int n;
    double mean;         /* mean of dd_i = x_sink_i - x_rand_i */
    double ci_lo, ci_hi; /* percentile bootstrap CI of the mean at `level` */
    double t, df;
    double p_one;        /* one-sided paired t p, H1: sink > rand (mean dd > 0) */
    double p_two;        /* two-sided */
    int zero_var;
} stats_dd_result;

/* Per-pair dd = x_sink - x_rand. With seed-matched pairs sharing one baseline, this equals
 * delta_sink - delta_rand. For H1: sink < rand use 1 - p_one (or p_two / 2 on that side). */
int stats_dd(const double *x_sink, const double *x_rand, int n, int resamples, double level,
             uint64_t seed, stats_dd_result *out);

/* ---- dose response ---- */

typedef struct {
    int n;
    double slope, intercept;
    double slope_se, intercept_se; /* OLS standard errors (linregress stderr, intercept_stderr) */
    double r;                      /* Pearson correlation */
    double t, df, p;               /* t = slope / slope_se, df = n - 2, two-sided p */
    double rho, rho_p;             /* Spearman rho (average ranks) and its two-sided p */
    int y_constant;                /* y all equal: r, t, p, rho, rho_p NaN */
    int exact_fit;                 /* points exactly on a line (slope_se 0): p NaN */
} stats_trend;

/* OLS of y on dose plus Spearman's rank correlation. n >= 3, dose not all equal. */
int stats_dose_trend(const double *dose, const double *y, int n, stats_trend *out);

/* Average ranks (1-based; ties get the mean of their positions), like scipy.stats.rankdata. */
int stats_rank(const double *x, int n, double *ranks);

#endif
