/* stats: special functions, paired tests, bootstrap, Holm, TOST, dose trend. See stats.h. */
#include "eval/stats.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"

#define LN_SQRT_2PI 0.918938533204672741780329736406 /* log(sqrt(2 pi)) */
#define SQRT_2PI 2.50662827463100050241576528481

/* ======================================================================================
 * Log-gamma and log-beta
 * ====================================================================================== */

double stats_lgamma(double x) {
    int sign; /* lgamma_r: plain lgamma writes the global signgam, a data race under OpenMP */
    return lgamma_r(x, &sign);
}

/* delta(x) = lgamma(x) - [(x - 1/2) log x - x + log sqrt(2 pi)], the Stirling remainder, for
 * x >= 10 (Bernoulli-number series; the first omitted term is < 1e-17 there). Splitting it out
 * lets lbeta cancel the huge (x log x) parts analytically instead of in floating point. */
static double stirling_delta(double x) {
    double r = 1.0 / x, r2 = r * r;
    return r * (1.0 / 12 +
                r2 * (-1.0 / 360 +
                      r2 * (1.0 / 1260 +
                            r2 * (-1.0 / 1680 +
                                  r2 * (1.0 / 1188 +
                                        r2 * (-691.0 / 360360 +
                                              r2 * (1.0 / 156 + r2 * (-3617.0 / 122400))))))));
}

double stats_lbeta(double a, double b) {
    if (!(a > 0) || !(b > 0)) return NAN;
    if (isinf(a) || isinf(b)) return -INFINITY;
    double lo = a < b ? a : b, hi = a < b ? b : a;
    if (hi < 10) return stats_lgamma(lo) + stats_lgamma(hi) - stats_lgamma(lo + hi);
    if (lo < 10) {
        /* lgamma(hi) - lgamma(hi + lo) without subtracting two huge numbers */
        double d = -(hi - 0.5) * log1p(lo / hi) - lo * log(hi + lo) + lo + stirling_delta(hi) -
                   stirling_delta(hi + lo);
        return stats_lgamma(lo) + d;
    }
    return (lo - 0.5) * -log1p(hi / lo) + hi * -log1p(lo / hi) - 0.5 * log(hi) + LN_SQRT_2PI +
           stirling_delta(lo) + stirling_delta(hi) - stirling_delta(lo + hi);
}

/* ======================================================================================
 * Regularized incomplete beta
 * ====================================================================================== */

/* log of v given v and 1 - v: log1p of the small side keeps full relative precision. */
static double log_of(double v, double one_minus_v) {
    return v > 0.5 ? log1p(-one_minus_v) : log(v);
}

/* The odd coefficient d_{2k+1} = -(a+k)(a+b+k) x / ((a+2k)(a+2k+1)) of the continued fraction
 * below, and 1 + d_{2k+1} in *plus1. For x near 1 (large a, e.g. the t tail at large df) the
 * plain 1 + d cancels to O(1/a) and loses a*eps relative precision; expanding x = 1 - y gives a
 * sum of terms that are all positive when b < 1. Each form is used where its input is small. */
static double cf_odd(double a, double b, double x, double y, int k, double *plus1) {
    double num = (a + k) * (a + b + k), den = (a + 2 * k) * (a + 2 * k + 1);
    if (x <= 0.5) *plus1 = 1.0 - num * x / den;
    else *plus1 = ((2 * k + 1 - b) * a + k * (3.0 * k + 2 - b) + num * y) / den;
    return -num * x / den;
}

/* d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)) */
static double cf_even(double a, double b, double x, int m) {
    return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
}

/* I_x(a, b) from its continued fraction I = front / (1 + d1/(1 + d2/(1 + ...))), used for
 * x <= (a + 1) / (a + b + 2) where it converges fast. y = 1 - x is passed separately so that
 * x near 1 keeps its precision. The fraction is evaluated in its even contraction
 *   1 + d1/(1 + d2 + N2/(D2 + N3/(D3 + ...))),  N_m = -d_{2m-2} d_{2m-1},
 *   D_m = (1 + d_{2m-1}) + d_{2m},
 * so every "1 + d_odd" goes through cf_odd_plus1; the tail R = N2/(D2 + ...) is summed by the
 * modified Lentz method and the top level is written as (1 + d1 + d2 + R) / (1 + d2 + R). */
static double betainc_cf(double a, double b, double x, double y) {
    const double tiny = 1e-300;
    double lfront = a * log_of(x, y) + b * log_of(y, x) - stats_lbeta(a, b);
    if (lfront < -745.2) return 0.0; /* below the smallest subnormal */
    double front = exp(lfront) / a;
    double d2 = cf_even(a, b, x, 1), e0, e1;
    double d3 = cf_odd(a, b, x, y, 1, &e1);
    double h = e1 + cf_even(a, b, x, 2); /* D2 */
    if (fabs(h) < tiny) h = tiny;
    double C = h, D = 0.0;
    for (int m = 3; m <= 100000; m++) {
        double plus1, dodd = cf_odd(a, b, x, y, m - 1, &plus1); /* d_{2m-1} */
        double N = -cf_even(a, b, x, m - 1) * dodd;
        double Dm = plus1 + cf_even(a, b, x, m);
        D = Dm + N * D;
        if (fabs(D) < tiny) D = tiny;
        C = Dm + N / C;
        if (fabs(C) < tiny) C = tiny;
        D = 1.0 / D;
        double delta = C * D;
        h *= delta;
        if (fabs(delta - 1.0) <= 2.5e-16) break;
    }
    double R = -d2 * d3 / h;
    cf_odd(a, b, x, y, 0, &e0);
    double f = (e0 + d2 + R) / (1.0 + d2 + R);
    return front / f;
}

/* I_x(a, b) (upper = 0) or 1 - I_x(a, b) (upper = 1). Whichever of the two the continued
 * fraction does not produce directly is 1 - (the other). On that side of the split the wanted
 * value is at least ~min(a, b)/5, so this costs at most ~eps/min(a, b) relative: nothing for
 * the t distribution (b = 1/2), a real loss only for parameters far below 1. */
static double betainc_xy(double a, double b, double x, double y, int upper) {
    if (x <= 0) return upper ? 1.0 : 0.0;
    if (y <= 0) return upper ? 0.0 : 1.0;
    /* split at x = (a+1)/(a+b+2), tested on whichever of x, y is small: for huge a the
     * threshold and x both round to 1 */
    int direct = x <= 0.5 ? x <= (a + 1) / (a + b + 2) : y >= (b + 1) / (a + b + 2);
    if (direct) {
        double v = betainc_cf(a, b, x, y);
        return upper ? 1.0 - v : v;
    }
    double v = betainc_cf(b, a, y, x); /* = I_y(b, a) = 1 - I_x(a, b) */
    return upper ? v : 1.0 - v;
}

static int beta_args_ok(double a, double b, double x) {
    return a > 0 && b > 0 && isfinite(a) && isfinite(b) && x >= 0 && x <= 1;
}

double stats_betainc(double a, double b, double x) {
    if (!beta_args_ok(a, b, x)) return NAN;
    return betainc_xy(a, b, x, 1.0 - x, 0);
}

double stats_betainc_upper(double a, double b, double x) {
    if (!beta_args_ok(a, b, x)) return NAN;
    return betainc_xy(a, b, x, 1.0 - x, 1);
}

/* ======================================================================================
 * Normal distribution
 * ====================================================================================== */

double stats_norm_cdf(double x) {
    if (isnan(x)) return NAN;
    double z = x * M_SQRT1_2;
    /* erf near 0 (no cancellation in 0.5 + ...), erfc in the tails (relative accuracy) */
    if (fabs(z) < M_SQRT1_2) return 0.5 + 0.5 * erf(z);
    return z > 0 ? 1.0 - 0.5 * erfc(z) : 0.5 * erfc(-z);
}

double stats_norm_sf(double x) { return isnan(x) ? NAN : stats_norm_cdf(-x); }

static double norm_pdf(double x) { return exp(-0.5 * x * x) / SQRT_2PI; }

/* Acklam's rational approximation (relative error < 1.2e-9), the starting point for Newton. */
static double norm_ppf_guess(double p) {
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                -2.759285104469687e+02, 1.383577518672690e+02,
                                -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                -1.556989798598866e+02, 6.680131188771972e+01,
                                -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                -2.400758277161838e+00, -2.549732539343734e+00,
                                4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01,
                                2.445134137142996e+00, 3.754408661907416e+00};
    if (p < 0.02425) {
        double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

double stats_norm_ppf(double p) {
    if (isnan(p) || p < 0 || p > 1) return NAN;
    if (p == 0) return -INFINITY;
    if (p == 1) return INFINITY;
    if (p == 0.5) return 0.0;
    if (p > 0.5) return -stats_norm_ppf(1.0 - p); /* 1 - p is exact for p in [0.5, 1] */
    double x = norm_ppf_guess(p);
    for (int it = 0; it < 8; it++) {
        double step;
        if (p < 0.25) {
            /* tail: Newton on log(Phi(x) / p), which stays well scaled down to p ~ 1e-308 */
            double F = stats_norm_cdf(x);
            if (!(F > 0)) break;
            double lpdf = -0.5 * x * x - LN_SQRT_2PI;
            step = log(F / p) * F / exp(lpdf);
            if (!isfinite(step)) break;
        } else {
            /* centre: Phi(x) - p = 0.5 erf(x/sqrt2) + (0.5 - p), with 0.5 - p exact */
            step = (0.5 * erf(x * M_SQRT1_2) + (0.5 - p)) / norm_pdf(x);
        }
        x -= step;
        if (fabs(step) <= 1e-16 * fabs(x)) break;
    }
    return x;
}

/* ======================================================================================
 * Student t distribution
 * ====================================================================================== */

/* x = df/(df+t^2) and y = t^2/(df+t^2), each computed directly (no 1 - x). */
static void t_xy(double at, double df, double *x, double *y) {
    if (at > 1e150) { /* t^2 would overflow */
        *x = (df / at) / at;
        *y = 1.0 - *x;
        return;
    }
    double q = at * at;
    *x = df / (df + q);
    *y = q / (df + q);
}

/* P(T > at) for at >= 0 */
static double t_tail(double at, double df) {
    if (isinf(at)) return 0.0;
    double lx = log(df) - 2 * log(at); /* log x, which may be below the double range */
    if (lx < -40) {
        /* I_x(a, b) = x^a / (a B(a, b)) (1 + O(x)) as x -> 0; the O(x) is below rounding */
        double a = 0.5 * df;
        return 0.5 * exp(a * lx - log(a) - stats_lbeta(a, 0.5));
    }
    double x, y;
    t_xy(at, df, &x, &y);
    return 0.5 * betainc_xy(0.5 * df, 0.5, x, y, 0);
}

/* P(0 < T <= at) for at >= 0, accurate for small at */
static double t_centre(double at, double df) {
    if (isinf(at)) return 0.5;
    double x, y;
    t_xy(at, df, &x, &y);
    return 0.5 * betainc_xy(0.5 * df, 0.5, x, y, 1);
}

static int df_ok(double df) { return df > 0; } /* false for NaN */

/* Beyond df = 1e30 the t and normal distributions differ by ~t^4/df relative, below rounding
 * for every |t| < 40 (all representable tail probabilities), and the continued fraction's
 * products of df-sized terms would overflow past ~1e154. */
static int df_normal(double df) { return df > 1e30; }

double stats_t_cdf(double t, double df) {
    if (isnan(t) || !df_ok(df)) return NAN;
    if (df_normal(df)) return stats_norm_cdf(t);
    return t <= 0 ? t_tail(-t, df) : 0.5 + t_centre(t, df);
}

double stats_t_sf(double t, double df) {
    if (isnan(t) || !df_ok(df)) return NAN;
    if (df_normal(df)) return stats_norm_sf(t);
    return t >= 0 ? t_tail(t, df) : 0.5 + t_centre(-t, df);
}

/* log density at |t| = at (finite df); stays finite where the density underflows */
static double t_logpdf(double at, double df) {
    /* log1p(t^2/df) without overflowing t^2 */
    double l = at > 1e150 ? 2 * log(at) - log(df) : log1p(at * at / df);
    return -stats_lbeta(0.5 * df, 0.5) - 0.5 * log(df) - 0.5 * (df + 1) * l;
}

double stats_t_pdf(double t, double df) {
    if (isnan(t) || !df_ok(df)) return NAN;
    if (df_normal(df)) return norm_pdf(t);
    if (isinf(t)) return 0.0;
    return exp(t_logpdf(fabs(t), df));
}

/* Starting point for the t quantile a = |t| at lower-tail probability p < 0.5: the better of a
 * Cornish-Fisher expansion around the normal quantile (good for large df) and the power-law
 * tail P(T < -a) ~ K df^((df-1)/2) a^-df (good for small df or tiny p). */
static double t_ppf_guess(double p, double df) {
    double z = -stats_norm_ppf(p), z2 = z * z;
    double g1 = (z2 + 1) * z / 4;
    double g2 = ((5 * z2 + 16) * z2 + 3) * z / 96;
    double g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384;
    double g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160;
    double acf = z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df;
    double la = (-stats_lbeta(0.5 * df, 0.5) + (0.5 * df - 1) * log(df) - log(p)) / df;
    double atail = la > 709.78 ? INFINITY : exp(la); /* log(DBL_MAX) = 709.78 */
    if (!(acf > 0) || !isfinite(acf)) return atail;
    if (!isfinite(atail)) return acf;
    /* compare in log-probability space */
    double ecf = fabs(log(t_tail(acf, df) / p)), etail = fabs(log(t_tail(atail, df) / p));
    return etail < ecf ? atail : acf;
}

double stats_t_ppf(double p, double df) {
    if (isnan(p) || p < 0 || p > 1 || !df_ok(df)) return NAN;
    if (df_normal(df)) return stats_norm_ppf(p);
    if (p == 0) return -INFINITY;
    if (p == 1) return INFINITY;
    if (p == 0.5) return 0.0;
    if (p > 0.5) return -stats_t_ppf(1.0 - p, df); /* exact complement */
    /* Solve for a = |t| > 0 with a residual r(a) increasing in a:
     *   tail (p < 0.25): r = log(p / P(T > a)), Newton in log a (r is nearly linear there);
     *   centre:          r = P(0 < T <= a) - (0.5 - p), Newton in a (0.5 - p is exact).
     * Newton steps leaving the bracket [lo, hi] are replaced by bisection. */
    int tail = p < 0.25;
    double lo = 0.0, hi = INFINITY;
    double a = t_ppf_guess(p, df);
    if (!(a > 0)) a = 1.0;
    if (a > DBL_MAX) a = DBL_MAX;
    for (int it = 0; it < 400; it++) {
        double r, dr;
        if (tail) {
            double s = t_tail(a, df);
            if (!(s > 0)) { /* underflowed: too far out */
                hi = a;
                a = lo > 0 ? sqrt(lo) * sqrt(hi) : 0.5 * a;
                continue;
            }
            r = log(p / s);
            dr = exp(log(a) + t_logpdf(a, df) - log(s)); /* dr / d(log a), ~df far out */
        } else {
            r = t_centre(a, df) - (0.5 - p);
            dr = stats_t_pdf(a, df);
        }
        if (r == 0) return -a;
        if (r < 0) lo = a; else hi = a;
        double next;
        if (tail) {
            double du = -r / dr;
            if (du > 50) du = 50; /* at most a factor e^50 per step */
            next = a * exp(du);
        } else {
            next = a - r / dr;
        }
        if (!(next > lo && next < hi)) { /* bisect: geometrically while the bracket is wide */
            if (isinf(hi)) next = tail ? 1e10 * lo : 2 * lo;
            else if (lo > 0 && hi / 4 > lo) next = sqrt(lo) * sqrt(hi);
            else next = lo + 0.5 * (hi - lo); /* lo + hi may overflow near DBL_MAX */
        }
        if (next > DBL_MAX) {
            /* P(T < -DBL_MAX) > p already: the quantile is not representable */
            if (lo >= DBL_MAX) return -INFINITY;
            next = DBL_MAX;
        }
        if (fabs(next - a) <= 2e-16 * a || (isfinite(hi) && hi - lo <= 4e-16 * hi)) {
            a = next;
            break;
        }
        a = next;
    }
    return -a;
}

/* ======================================================================================
 * Descriptives
 * ====================================================================================== */

double stats_mean(const double *x, int n) {
    if (!x || n < 1) return NAN;
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

double stats_sd(const double *x, int n) {
    if (!x || n < 2) return NAN;
    double m = stats_mean(x, n), ss = 0;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m); /* two-pass: no cancellation */
    return sqrt(ss / (n - 1));
}

double stats_quantile_sorted(const double *s, int n, double q) {
    if (!s || n < 1 || !(q >= 0 && q <= 1)) return NAN;
    double h = (n - 1) * q;
    int i = (int)floor(h);
    if (i >= n - 1) return s[n - 1];
    double t = h - i, a = s[i], b = s[i + 1], diff = b - a;
    /* numpy's lerp: interpolate from the nearer end so q = 1 lands exactly on the maximum */
    return t < 0.5 ? a + diff * t : b - diff * (1 - t);
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static int check_finite(const double *x, int n, const char *what) {
    if (!x) return ss_fail(SS_EARG, "stats: %s is NULL", what);
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return ss_fail(SS_EARG, "stats: %s[%d] is not finite", what, i);
    return SS_OK;
}

static double *sorted_copy(const double *x, int n) {
    double *s = ss_malloc((size_t)n * sizeof *s);
    if (!s) return NULL;
    memcpy(s, x, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return s;
}

int stats_quantile(const double *x, int n, double q, double *out) {
    if (n < 1) return ss_fail(SS_EARG, "stats_quantile: need n >= 1, got %d", n);
    if (!(q >= 0 && q <= 1)) return ss_fail(SS_EARG, "stats_quantile: q = %g is not in [0, 1]", q);
    int rc = check_finite(x, n, "x");
    if (rc < 0) return rc;
    double *s = sorted_copy(x, n);
    if (!s) return SS_ENOMEM;
    *out = stats_quantile_sorted(s, n, q);
    free(s);
    return SS_OK;
}

int stats_median(const double *x, int n, double *out) { return stats_quantile(x, n, 0.5, out); }

int stats_describe(const double *x, int n, stats_desc *out) {
    if (n < 1) return ss_fail(SS_EARG, "stats_describe: need n >= 1, got %d", n);
    int rc = check_finite(x, n, "x");
    if (rc < 0) return rc;
    double *s = sorted_copy(x, n);
    if (!s) return SS_ENOMEM;
    out->n = n;
    out->mean = stats_mean(x, n);
    out->sd = stats_sd(x, n);
    out->se = out->sd / sqrt(n);
    out->min = s[0];
    out->q25 = stats_quantile_sorted(s, n, 0.25);
    out->median = stats_quantile_sorted(s, n, 0.5);
    out->q75 = stats_quantile_sorted(s, n, 0.75);
    out->max = s[n - 1];
    free(s);
    return SS_OK;
}

/* ======================================================================================
 * t-tests
 * ====================================================================================== */

static void ttest_from_moments(stats_ttest *o, int n, double mean, double sd, int constant,
                               double mu0) {
    o->n = n;
    o->df = n - 1;
    o->mean = mean;
    o->sd = sd;
    o->se = sd / sqrt(n);
    o->zero_var = constant;
    if (constant) {
        /* documented convention: no spread, no t distribution. t = 0/0 (NaN) when every value
         * equals mu0, +-inf otherwise; every p is undefined (NaN) either way. */
        o->t = mean == mu0 ? NAN : mean > mu0 ? INFINITY : -INFINITY;
        o->p_two = o->p_greater = o->p_less = NAN;
        return;
    }
    o->t = (mean - mu0) / o->se;
    o->p_greater = stats_t_sf(o->t, o->df);
    o->p_less = stats_t_cdf(o->t, o->df);
    double two = 2 * stats_t_sf(fabs(o->t), o->df);
    o->p_two = two > 1 ? 1 : two;
}

/* mean and sd of d, detecting exactly constant data first: the two-pass sd of a constant
 * vector can come out as 1e-17 instead of 0 because the mean is rounded. */
static void moments(const double *d, int n, double *mean, double *sd, int *constant) {
    int c = 1;
    for (int i = 1; i < n && c; i++) c = d[i] == d[0];
    *constant = c;
    if (c) {
        *mean = d[0];
        *sd = 0;
    } else {
        *mean = stats_mean(d, n);
        *sd = stats_sd(d, n);
    }
}

int stats_ttest_1samp(const double *d, int n, double mu0, stats_ttest *out) {
    if (n < 2) return ss_fail(SS_EARG, "stats_ttest_1samp: need n >= 2, got %d", n);
    if (!isfinite(mu0)) return ss_fail(SS_EARG, "stats_ttest_1samp: mu0 is not finite");
    int rc = check_finite(d, n, "d");
    if (rc < 0) return rc;
    double m, s;
    int c;
    moments(d, n, &m, &s, &c);
    ttest_from_moments(out, n, m, s, c, mu0);
    return SS_OK;
}

/* b - a into a fresh array *out, validating both inputs */
static int paired_diff(const double *a, const double *b, int n, const char *an, const char *bn,
                       double **out) {
    int rc = check_finite(a, n, an);
    if (rc == SS_OK) rc = check_finite(b, n, bn);
    if (rc < 0) return rc;
    double *d = ss_malloc((size_t)n * sizeof *d);
    if (!d) return SS_ENOMEM;
    for (int i = 0; i < n; i++) d[i] = b[i] - a[i];
    *out = d;
    return SS_OK;
}

int stats_paired_t(const double *a, const double *b, int n, stats_ttest *out) {
    if (n < 2) return ss_fail(SS_EARG, "stats_paired_t: need n >= 2 pairs, got %d", n);
    double *d = NULL;
    int rc = paired_diff(a, b, n, "a", "b", &d);
    if (rc < 0) return ss_err_prefix(rc, "stats_paired_t: ");
    rc = stats_ttest_1samp(d, n, 0.0, out);
    free(d);
    return rc;
}

/* ======================================================================================
 * Bootstrap
 * ====================================================================================== */

/* Resampling indices: xoshiro256** seeded by splitmix64(seed), unbiased draws (core/rng.h). */
int stats_bootstrap_mean_ci(const double *d, int n, int resamples, double level, uint64_t seed,
                            double *lo, double *hi) {
    if (n < 1) return ss_fail(SS_EARG, "stats_bootstrap_mean_ci: need n >= 1, got %d", n);
    if (n < 2) { /* every resample is the one value: no interval */
        if (!(resamples >= 1 && level > 0 && level < 1))
            return ss_fail(SS_EARG, "stats_bootstrap_mean_ci: bad resamples (%d) or level (%g)", resamples, level);
        int rc = check_finite(d, n, "d");
        if (rc < 0) return rc;
        *lo = *hi = NAN;
        return SS_OK;
    }
    if (resamples < 1)
        return ss_fail(SS_EARG, "stats_bootstrap_mean_ci: need resamples >= 1, got %d", resamples);
    if (!(level > 0 && level < 1))
        return ss_fail(SS_EARG, "stats_bootstrap_mean_ci: level = %g is not in (0, 1)", level);
    int rc = check_finite(d, n, "d");
    if (rc < 0) return rc;
    double *means = ss_malloc((size_t)resamples * sizeof *means);
    if (!means) return SS_ENOMEM;
    rng_xoshiro256ss r;
    rng_xoshiro256ss_seed(&r, seed);
    for (int b = 0; b < resamples; b++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += d[rng_xoshiro256ss_below(&r, (uint64_t)n)];
        means[b] = s / n;
    }
    qsort(means, (size_t)resamples, sizeof *means, cmp_double);
    *lo = stats_quantile_sorted(means, resamples, 0.5 * (1 - level));
    *hi = stats_quantile_sorted(means, resamples, 0.5 * (1 + level));
    free(means);
    return SS_OK;
}

/* ======================================================================================
 * Holm
 * ====================================================================================== */

typedef struct {
    double v;
    int i;
} keyed;

/* ties broken by index so the order (and so the result) never depends on qsort's internals */
static int cmp_keyed(const void *pa, const void *pb) {
    const keyed *a = pa, *b = pb;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

int stats_holm(const double *p, int m, double *adj) {
    if (m < 1) return ss_fail(SS_EARG, "stats_holm: need m >= 1, got %d", m);
    if (!p || !adj) return ss_fail(SS_EARG, "stats_holm: NULL array");
    for (int i = 0; i < m; i++)
        if (!isnan(p[i]) && !(p[i] >= 0 && p[i] <= 1))
            return ss_fail(SS_EARG, "stats_holm: p[%d] = %g is not in [0, 1]", i, p[i]);
    keyed *k = ss_malloc((size_t)m * sizeof *k);
    if (!k) return SS_ENOMEM;
    /* undefined tests (NaN) stay NaN and do not count among the m hypotheses */
    int mm = 0;
    for (int i = 0; i < m; i++)
        if (!isnan(p[i])) k[mm++] = (keyed){p[i], i};
    for (int i = 0; i < m; i++)
        if (isnan(p[i])) adj[i] = NAN;
    qsort(k, (size_t)mm, sizeof *k, cmp_keyed);
    /* j-th smallest (0-based) is multiplied by mm - j; a running max keeps the step-down
     * monotone. k[] holds copies, so adj may alias p. */
    double run = 0;
    for (int j = 0; j < mm; j++) {
        double v = (double)(mm - j) * k[j].v;
        if (v > run) run = v;
        adj[k[j].i] = run > 1 ? 1 : run;
    }
    free(k);
    return SS_OK;
}

/* ======================================================================================
 * TOST
 * ====================================================================================== */

int stats_tost_paired(const double *d, int n, double margin, double alpha, stats_tost *out) {
    if (n < 2) return ss_fail(SS_EARG, "stats_tost_paired: need n >= 2, got %d", n);
    if (!(margin > 0) || isinf(margin))
        return ss_fail(SS_EARG, "stats_tost_paired: margin = %g must be positive", margin);
    if (!(alpha > 0 && alpha < 0.5))
        return ss_fail(SS_EARG, "stats_tost_paired: alpha = %g is not in (0, 0.5)", alpha);
    int rc = check_finite(d, n, "d");
    if (rc < 0) return rc;
    double m, s;
    int c;
    moments(d, n, &m, &s, &c);
    stats_ttest lower, upper;
    ttest_from_moments(&lower, n, m, s, c, -margin); /* H0: mean <= -margin */
    ttest_from_moments(&upper, n, m, s, c, margin);  /* H0: mean >= +margin */
    out->n = n;
    out->df = n - 1;
    out->mean = m;
    out->se = lower.se;
    out->margin = margin;
    out->alpha = alpha;
    out->t_lower = lower.t;
    out->t_upper = upper.t;
    out->p_lower = lower.p_greater;
    out->p_upper = upper.p_less;
    out->zero_var = c;
    if (c) { /* no t distribution: no p, no interval, no verdict */
        out->p = out->ci_lo = out->ci_hi = NAN;
        out->equivalent = 0;
        return SS_OK;
    }
    out->p = out->p_lower > out->p_upper ? out->p_lower : out->p_upper;
    double tc = stats_t_ppf(1 - alpha, out->df);
    out->ci_lo = m - tc * out->se;
    out->ci_hi = m + tc * out->se;
    out->equivalent = out->p < alpha;
    return SS_OK;
}

/* ======================================================================================
 * Difference of differences
 * ====================================================================================== */

int stats_dd(const double *x_sink, const double *x_rand, int n, int resamples, double level,
             uint64_t seed, stats_dd_result *out) {
    if (n < 2) return ss_fail(SS_EARG, "stats_dd: need n >= 2 pairs, got %d", n);
    double *dd = NULL;
    int rc = paired_diff(x_rand, x_sink, n, "x_rand", "x_sink", &dd);
    if (rc < 0) return ss_err_prefix(rc, "stats_dd: ");
    stats_ttest t;
    rc = stats_ttest_1samp(dd, n, 0.0, &t);
    if (rc == SS_OK)
        rc = stats_bootstrap_mean_ci(dd, n, resamples, level, seed, &out->ci_lo, &out->ci_hi);
    free(dd);
    if (rc < 0) return ss_err_prefix(rc, "stats_dd: ");
    out->n = n;
    out->mean = t.mean;
    out->t = t.t;
    out->df = t.df;
    out->p_one = t.p_greater;
    out->p_two = t.p_two;
    out->zero_var = t.zero_var;
    return SS_OK;
}

/* ======================================================================================
 * Ranks and dose trend
 * ====================================================================================== */

int stats_rank(const double *x, int n, double *ranks) {
    if (n < 1) return ss_fail(SS_EARG, "stats_rank: need n >= 1, got %d", n);
    int rc = check_finite(x, n, "x");
    if (rc < 0) return rc;
    keyed *k = ss_malloc((size_t)n * sizeof *k);
    if (!k) return SS_ENOMEM;
    for (int i = 0; i < n; i++) k[i] = (keyed){x[i], i};
    qsort(k, (size_t)n, sizeof *k, cmp_keyed);
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && k[j].v == k[i].v) j++;
        double r = 0.5 * (i + 1 + j); /* mean of the 1-based positions i+1 .. j */
        for (int q = i; q < j; q++) ranks[k[q].i] = r;
        i = j;
    }
    free(k);
    return SS_OK;
}

/* Pearson r from centred sums; 0 when either variable has no spread (scipy's linregress). */
static double pearson(const double *x, const double *y, int n, double *sxx, double *syy,
                      double *sxy, double *mx, double *my) {
    *mx = stats_mean(x, n);
    *my = stats_mean(y, n);
    double a = 0, b = 0, c = 0;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - *mx, dy = y[i] - *my;
        a += dx * dx;
        b += dy * dy;
        c += dx * dy;
    }
    *sxx = a;
    *syy = b;
    *sxy = c;
    double den = sqrt(a * b);
    if (den == 0) return 0;
    double r = c / den;
    return r > 1 ? 1 : r < -1 ? -1 : r;
}

/* t for a correlation r with df degrees of freedom: r sqrt(df / (1 - r^2)) */
static double corr_t(double r, double df) {
    if (r == 1 || r == -1) return r * INFINITY;
    return r * sqrt(df / ((1 - r) * (1 + r)));
}

static int all_equal(const double *x, int n) {
    for (int i = 1; i < n; i++)
        if (x[i] != x[0]) return 0;
    return 1;
}

int stats_dose_trend(const double *dose, const double *y, int n, stats_trend *out) {
    if (n < 3) return ss_fail(SS_EARG, "stats_dose_trend: need n >= 3 points, got %d", n);
    int rc = check_finite(dose, n, "dose");
    if (rc == SS_OK) rc = check_finite(y, n, "y");
    if (rc < 0) return ss_err_prefix(rc, "stats_dose_trend: ");
    if (all_equal(dose, n))
        return ss_fail(SS_EARG, "stats_dose_trend: all doses are equal, the slope is undefined");
    double sxx, syy, sxy, mx, my;
    double r = pearson(dose, y, n, &sxx, &syy, &sxy, &mx, &my);
    double df = n - 2;
    out->n = n;
    out->df = df;
    out->y_constant = all_equal(y, n);
    if (out->y_constant) { /* exactly flat: slope 0, whatever rounding says; r = 0/0 */
        r = NAN;
        sxy = syy = 0;
    }
    out->r = r;
    out->slope = sxy / sxx;
    out->intercept = my - out->slope * mx;
    out->slope_se = out->y_constant ? 0 : sqrt((1 - r) * (1 + r) * syy / sxx / df);
    /* same as linregress: se_b * sqrt(mean(x^2)), with sxx here a sum (not a mean) */
    out->intercept_se = out->slope_se * sqrt(sxx / n + mx * mx);
    out->exact_fit = !out->y_constant && (r == 1 || r == -1 || out->slope_se == 0);
    if (out->y_constant || out->exact_fit) {
        /* zero residual variance: t = slope / 0 (or 0/0), no t distribution, p undefined */
        out->t = out->y_constant ? NAN : out->slope > 0 ? INFINITY : -INFINITY;
        out->p = NAN;
    } else {
        out->t = corr_t(r, df);
        double p = 2 * stats_t_sf(fabs(out->t), df);
        out->p = p > 1 ? 1 : p;
    }

    if (out->y_constant) { /* every rank tied: rho = 0/0 (scipy: NaN) */
        out->rho = out->rho_p = NAN;
        return SS_OK;
    }
    double *rk = ss_malloc(2 * (size_t)n * sizeof *rk);
    if (!rk) return SS_ENOMEM;
    stats_rank(dose, n, rk);
    stats_rank(y, n, rk + n);
    double a, b, c, m1, m2;
    double rho = pearson(rk, rk + n, n, &a, &b, &c, &m1, &m2);
    free(rk);
    out->rho = rho;
    if (rho == 1 || rho == -1) { /* t = +-inf: the t approximation of its p is degenerate */
        out->rho_p = NAN;
        return SS_OK;
    }
    double p = 2 * stats_t_sf(fabs(corr_t(rho, df)), df);
    out->rho_p = p > 1 ? 1 : p;
    return SS_OK;
}
