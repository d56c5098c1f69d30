#!/usr/bin/python3
"""Reference values for tests/test_stats.c, computed with scipy/numpy.

Run with Debian's /usr/bin/python3 (numpy 1.24, scipy 1.10 from apt) from the repository root:

    /usr/bin/python3 tests/gen_stats_ref.py        # writes tests/data/stats_scipy.json

CI does not run scipy: the committed JSON is the reference. Every dataset is generated here from
one fixed numpy seed and stored in the JSON next to the expected values, so the C test reads
both from the file and nothing depends on numpy's generator staying the same.

Notes on the references:
  * t quantiles: scipy 1.10's t.ppf (cdflib's stdtrit) stops its root search at ~1e-8 relative
    tolerance and saturates at |t| = 1e100, so each scipy.stats.t.ppf value is polished here by
    Newton steps on scipy's own t.cdf / t.logcdf and kept only if scipy's cdf then reproduces q
    to 1e-13 (points scipy cannot evaluate at all are left out and checked in C by round trip).
  * Holm is computed the textbook way in numpy (statsmodels is not installed): sort, multiply
    the j-th smallest by m - j, running maximum, cap at 1.
  * Bootstrap CIs cannot come from numpy's generator, so the C generator (splitmix64-seeded
    xoshiro256**, rejection-sampled indices, sequential sums) is re-implemented below and the
    percentiles taken with np.quantile(method='linear'). This checks the C code bit for bit
    against an independent transcription of the documented algorithm.
  * Descriptives and quantiles are numpy (np.mean, np.std(ddof=1), np.median, np.quantile).
"""
import json
import math
import os
import sys
import warnings

import numpy as np
import scipy
import scipy.special as sc
import scipy.stats as st

SEED = 20260501
rng = np.random.default_rng(SEED)
warnings.simplefilter("ignore")  # scipy warns on the deliberately extreme arguments


def fl(v):
    return [float(x) for x in v]


# ---------------------------------------------------------------------------------------------
# special functions


def lgamma_ref():
    xs = [0.25, 0.5, 1.0, 1.5, 2.5, 3.0, 7.75, 10.0, 10.5, 100.0, 276.5, 1e4, 1e6, 1e10]
    return [[x, float(sc.gammaln(x))] for x in xs]


def betainc_ref():
    out = []
    ab = [0.25, 0.5, 1.0, 2.5, 10.0, 50.0, 250.0, 500.0]
    xs = [1e-6, 0.01, 0.3, 0.5, 0.7, 0.99, 0.999999]
    for a in ab:
        for b in ab:
            for x in xs:
                v = float(sc.betainc(a, b, x))
                c = float(sc.betainc(b, a, 1 - x))  # 1 - I_x(a, b) where 1 - x is exact
                out.append([a, b, x, v, c if x >= 0.5 else None])
    return out


def betainc_exact():
    """I_x(a, b) for integer a, b from the series x^a (1-x)^b / (a B(a, b)) sum_n
    (a+b)_n / (a+1)_n x^n in 60-digit decimal arithmetic with B(a, b) as an exact fraction of
    factorials: an independent check where scipy's own incbet is off by ~1e-12."""
    from decimal import Decimal, getcontext
    from fractions import Fraction
    getcontext().prec = 60
    out = []
    for a, b in [(1, 1), (2, 3), (5, 1), (30, 30), (250, 500), (500, 250), (500, 1), (1, 500),
                 (7, 400)]:
        B = Fraction(math.factorial(a - 1) * math.factorial(b - 1), math.factorial(a + b - 1))
        Bd = Decimal(B.numerator) / Decimal(B.denominator)
        for xs in ["0.001", "0.01", "0.3", "0.5", "0.7"]:
            x = Decimal(xs)
            front = x ** a * (1 - x) ** b / (a * Bd)
            s, term, n = Decimal(0), Decimal(1), 0
            while term > s * Decimal(10) ** -45 or n == 0:
                s += term
                term = term * (a + b + n) / (a + 1 + n) * x
                n += 1
            v = front * s
            if v < Decimal("1e-300") or 1 - v < Decimal("1e-300"):
                continue
            # 1 - v keeps enough of the 60 digits only while it is not tiny
            out.append([a, b, float(xs), float(v), float(1 - v) if 1 - v > Decimal("1e-15") else None])
    return out


T_DFS = [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.5, 5.0, 7.3, 10.0, 29.0, 30.0, 63.0, 100.0,
         552.0, 1000.0]
T_TS = [-1e6, -1e3, -80.0, -40.0, -12.0, -6.0, -3.0, -2.05, -1.0, -0.3, -1e-4, 0.0, 1e-7, 0.01,
        0.5, 1.7, 2.6, 5.0, 9.0, 25.0, 60.0, 300.0, 1e5]


def t_dist_ref():
    return [[df, t, float(st.t.cdf(t, df)), float(st.t.sf(t, df)), float(st.t.pdf(t, df))]
            for df in T_DFS for t in T_TS]


def t_ppf_polished(q, df):
    """scipy's t.ppf, refined by Newton on scipy's t.cdf (see the module docstring)."""
    x = float(st.t.ppf(q, df))
    if not math.isfinite(x) or x == 0.0:
        return None
    lower = q < 0.5
    lq = math.log(q) if lower else math.log1p(-q)
    for _ in range(60):
        a = abs(x)
        if 0.25 < q < 0.75:  # centre: Newton on the cdf itself
            xn = x - (float(st.t.cdf(x, df)) - q) / float(st.t.pdf(x, df))
        else:  # tails: Newton in log|t| on log P(T < -|t|)
            lf = float(st.t.logcdf(-a, df))
            if not math.isfinite(lf):
                return None
            du = (lf - lq) / (a * math.exp(float(st.t.logpdf(a, df)) - lf))
            if abs(du) > 50:
                return None
            xn = math.copysign(a * math.exp(du), x)
        done = abs(xn - x) <= 1e-16 * abs(x)
        x = xn
        if done:
            break
    # accept only if scipy's own cdf reproduces q
    back = float(st.t.cdf(x, df)) if lower else float(st.t.sf(x, df))
    want = q if lower else 1.0 - q
    if not (abs(back / want - 1.0) < 1e-13):
        return None
    return x


T_QS = [1e-300, 1e-200, 1e-100, 1e-50, 1e-20, 1e-12, 1e-6, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.2,
        0.3, 0.4, 0.45, 0.4999, 0.6, 0.8, 0.95, 0.975, 0.99, 0.999, 1 - 1e-6, 1 - 1e-10]


def t_ppf_ref():
    out, skipped = [], []
    for df in T_DFS:
        for q in T_QS:
            x = t_ppf_polished(q, df)
            if x is None or abs(x) > 1e300:
                skipped.append([df, q])
            else:
                out.append([df, q, x, float(st.t.ppf(q, df))])
    return out, skipped


def norm_ref():
    xs = [-38.0, -37.5, -30.0, -20.0, -10.0, -8.0, -5.0, -3.0, -1.96, -1.0, -0.5, -1e-8, 0.0,
          0.3, 0.6744, 1.5, 3.0, 6.0, 8.29, 9.0, 20.0]
    return [[x, float(st.norm.cdf(x)), float(st.norm.sf(x))] for x in xs]


def norm_ppf_ref():
    qs = [1e-300, 1e-250, 1e-100, 1e-50, 1e-20, 1e-10, 1e-5, 1e-3, 0.01, 0.02, 0.0243, 0.025,
          0.05, 0.1, 0.25, 0.3, 0.4, 0.49, 0.4999999, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.999,
          1 - 1e-8, 1 - 1e-15]
    return [[q, float(st.norm.ppf(q))] for q in qs]


# ---------------------------------------------------------------------------------------------
# datasets


def standardized(n):
    z = rng.standard_normal(n)
    return (z - z.mean()) / z.std(ddof=1)


def paired_sets():
    """(name, a, b): baseline a and intervention b, seed-matched pairs."""
    sets = []
    a = rng.normal(0.32, 0.03, 2)
    sets.append(("n2", a, a + rng.normal(0.001, 0.004, 2)))
    a = rng.normal(0.32, 0.03, 3)
    sets.append(("n3_df2", a, a + rng.normal(0.002, 0.004, 3)))
    a = rng.normal(0.32, 0.03, 5)
    sets.append(("n5_pos", a, a + rng.normal(0.004, 0.003, 5)))
    a = rng.normal(0.32, 0.03, 5)
    sets.append(("n5_neg", a, a - rng.normal(0.006, 0.004, 5)))
    # ties: scores on a 0.01 grid, so many equal values and equal differences
    a = np.round(rng.normal(0.30, 0.02, 30), 2)
    sets.append(("n30_ties", a, np.round(a + rng.normal(0.003, 0.01, 30), 2)))
    # two-sided p ~ 1e-12 at df = 29: differences with exactly that t (up to rounding)
    tq = -t_ppf_polished(0.5e-12, 29)  # st.t.isf is too coarse this far out (docstring)
    a = rng.normal(0.30, 0.03, 30)
    d = 0.01 * (standardized(30) + tq / math.sqrt(30))
    sets.append(("n30_p1e-12", a, a + d))
    a = rng.normal(0.32, 0.03, 12)
    sets.append(("n12_neg", a, a + rng.normal(-0.004, 0.006, 12)))
    # the paper's main setting: N = 553 GenEval prompts, CLIP-T ~ 0.32, small shifts
    a = rng.normal(0.32, 0.03, 553)
    sets.append(("n553_pos_small", a, a + rng.normal(0.0011, 0.006, 553)))
    a = rng.normal(0.32, 0.03, 553)
    sets.append(("n553_null", a, a + rng.normal(0.0, 0.006, 553)))
    # extreme tails: p ~ 1e-100 and p ~ 1e-250 at df = 552
    for name, p in (("n553_p1e-100", 1e-100), ("n553_p1e-250", 1e-250)):
        tq = -t_ppf_polished(p / 2, 552)
        a = rng.normal(0.16, 0.05, 553)
        d = 0.02 * (standardized(553) + tq / math.sqrt(553))
        sets.append((name, a, a + d))
    a = rng.normal(0.5, 0.1, 64)
    sets.append(("n64_neg_big", a, a + rng.normal(-0.03, 0.02, 64)))
    return sets


def paired_ref():
    out = []
    for name, a, b in paired_sets():
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        r2 = st.ttest_rel(b, a)
        rg = st.ttest_rel(b, a, alternative="greater")
        rl = st.ttest_rel(b, a, alternative="less")
        out.append(dict(name=name, a=fl(a), b=fl(b), n=len(a), mean=float(d.mean()),
                        sd=float(d.std(ddof=1)), se=float(d.std(ddof=1) / math.sqrt(len(d))),
                        t=float(r2.statistic), df=len(a) - 1, p_two=float(r2.pvalue),
                        p_greater=float(rg.pvalue), p_less=float(rl.pvalue)))
    return out


def tost_ref():
    margin, alpha = 0.002, 0.05
    sets = []
    sets.append(("n553_equivalent", rng.normal(0.0003, 0.006, 553)))
    sets.append(("n553_near_margin", rng.normal(0.0011, 0.006, 553)))
    sets.append(("n64_not_equivalent", rng.normal(0.0011, 0.01, 64)))
    sets.append(("n5", rng.normal(-0.0005, 0.001, 5)))
    sets.append(("n30_negative", rng.normal(-0.0016, 0.002, 30)))
    out = []
    for name, d in sets:
        n = len(d)
        # the two one-sided tests, each a plain scipy t-test on shifted data
        lo = st.ttest_1samp(d + margin, 0.0, alternative="greater")  # H0: mean <= -margin
        up = st.ttest_1samp(d - margin, 0.0, alternative="less")     # H0: mean >= +margin
        se = d.std(ddof=1) / math.sqrt(n)
        tc = t_ppf_polished(1 - alpha, n - 1)
        out.append(dict(name=name, d=fl(d), margin=margin, alpha=alpha, mean=float(d.mean()),
                        se=float(se), t_lower=float(lo.statistic), t_upper=float(up.statistic),
                        p_lower=float(lo.pvalue), p_upper=float(up.pvalue),
                        p=float(max(lo.pvalue, up.pvalue)), ci_lo=float(d.mean() - tc * se),
                        ci_hi=float(d.mean() + tc * se),
                        equivalent=bool(max(lo.pvalue, up.pvalue) < alpha)))
    return out


# ---- the bootstrap generator of src/eval/stats.c, transcribed from its documentation ----

M64 = (1 << 64) - 1


class Xoshiro:
    def __init__(self, seed):
        x = seed & M64
        self.s = []
        for _ in range(4):  # splitmix64
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def next(self):  # xoshiro256**
        s = self.s
        out = (self.rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self.rotl(s[3], 45)
        return out

    def below(self, n):  # unbiased: reject the lowest 2^64 mod n values
        threshold = ((1 << 64) - n) % n
        while True:
            v = self.next()
            if v >= threshold:
                return v % n


def boot_ci(d, resamples, level, seed):
    g = Xoshiro(seed)
    n = len(d)
    dl = [float(v) for v in d]
    means = []
    for _ in range(resamples):
        s = 0.0
        for _ in range(n):
            s += dl[g.below(n)]  # sequential sum, as in C
        means.append(s / n)
    q = np.quantile(np.array(means), [0.5 * (1 - level), 0.5 * (1 + level)], method="linear")
    return float(q[0]), float(q[1])


def bootstrap_ref(paired):
    by = {p["name"]: np.array(p["b"]) - np.array(p["a"]) for p in paired}
    cases = [("n553_pos_small", 1000, 0.95, 12345), ("n553_null", 1000, 0.95, 1),
             ("n30_ties", 1000, 0.95, 42), ("n5_pos", 2000, 0.90, 7), ("n2", 1000, 0.95, 3),
             ("n12_neg", 999, 0.99, 2**63 + 11)]
    out = []
    for name, R, level, seed in cases:
        lo, hi = boot_ci(by[name], R, level, seed)
        out.append(dict(name=name, d=fl(by[name]), resamples=R, level=level, seed=str(seed),
                        lo=lo, hi=hi))
    return out


def dd_ref():
    sets = []
    # LPIPS-like: sink masking shifts ~6x more than equal-budget random masking (N = 64)
    x_rand = np.abs(rng.normal(0.027, 0.012, 64))
    sets.append(("lpips_k1", x_rand + rng.normal(0.13, 0.05, 64), x_rand))
    # HPS-like: sink degrades more than random (dd < 0), so H1 sink > rand has p near 1
    base = rng.normal(0.27, 0.01, 64)
    sets.append(("hps_k10", base + rng.normal(-0.006, 0.012, 64), base + rng.normal(-0.001, 0.004, 64)))
    base = rng.normal(0.32, 0.03, 64)
    sets.append(("clip_null", base + rng.normal(0, 0.004, 64), base + rng.normal(0, 0.004, 64)))
    out = []
    for i, (name, xs, xr) in enumerate(sets):
        dd = xs - xr
        r1 = st.ttest_rel(xs, xr, alternative="greater")
        r2 = st.ttest_rel(xs, xr)
        seed = 1000 + i
        lo, hi = boot_ci(dd, 1000, 0.95, seed)
        out.append(dict(name=name, x_sink=fl(xs), x_rand=fl(xr), mean=float(dd.mean()),
                        t=float(r2.statistic), df=len(dd) - 1, p_one=float(r1.pvalue),
                        p_two=float(r2.pvalue), resamples=1000, level=0.95, seed=str(seed),
                        ci_lo=lo, ci_hi=hi))
    return out


def trend_ref():
    sets = []
    ks = np.array([1, 5, 10, 20, 50], float)
    dose = np.repeat(ks, 32)
    y = np.round(0.001 - 0.0003 * dose + rng.normal(0, 0.01, dose.size), 4)  # 4 decimals: ties
    sets.append(("k5x32_neg_ties", dose, y))
    sets.append(("k5_means", ks, np.array([y[dose == k].mean() for k in ks])))
    x = rng.uniform(0, 10, 30)
    sets.append(("n30_strong_pos", x, 0.5 * x + rng.normal(0, 0.4, 30)))
    sets.append(("heavy_ties", np.repeat([0.0, 1.0, 2.0], 7),
                 rng.integers(0, 4, 21).astype(float)))
    x = rng.uniform(0, 1, 553)
    sets.append(("n553_null", x, rng.normal(0, 1, 553)))
    sets.append(("n4_decreasing", np.array([0.0, 1.0, 2.0, 3.0]), np.array([3.0, 2.9, 1.2, 0.1])))
    out = []
    for name, x, y in sets:
        lr = st.linregress(x, y)
        sp = st.spearmanr(x, y)
        out.append(dict(name=name, dose=fl(x), y=fl(y), slope=float(lr.slope),
                        intercept=float(lr.intercept), slope_se=float(lr.stderr),
                        intercept_se=float(lr.intercept_stderr), r=float(lr.rvalue),
                        p=float(lr.pvalue), rho=float(sp.correlation), rho_p=float(sp.pvalue),
                        rank_dose=fl(st.rankdata(x)), rank_y=fl(st.rankdata(y))))
    return out


def holm_textbook(p):
    p = np.asarray(p, float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj_sorted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj


def holm_ref():
    cases = [[0.03], [0.01, 0.04, 0.03, 0.005], [0.02, 0.02, 0.5, 0.001], [0.3, 0.6, 0.9],
             [0.0, 1.0, 0.5], [1e-12, 3e-12, 0.049, 0.2, 0.01]]
    cases.append(fl(np.concatenate([rng.uniform(0, 1, 8), 10.0 ** rng.uniform(-6, -1, 4)])))
    return [dict(p=fl(c), adj=fl(holm_textbook(c))) for c in cases]


def quantile_ref(paired):
    by = {p["name"]: p for p in paired}
    xs = [("n1", np.array([0.25])), ("n2", np.array([2.0, -1.0])),
          ("n5", rng.normal(0, 1, 5)), ("n30_ties", np.array(by["n30_ties"]["a"])),
          ("n553", np.array(by["n553_null"]["b"]))]
    qs = [0.0, 0.025, 0.1, 0.25, 0.5, 0.75, 0.975, 1.0]
    out = []
    for name, x in xs:
        out.append(dict(name=name, x=fl(x), q=qs,
                        values=fl(np.quantile(x, qs, method="linear")),
                        mean=float(np.mean(x)),
                        sd=float(np.std(x, ddof=1)) if x.size > 1 else None,
                        median=float(np.median(x))))
    return out


def jnum(v):
    """NaN as null, infinities as strings (the JSON is written with allow_nan=False)"""
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def degenerate_ref():
    """What scipy says where a test divides by a zero standard error. sinkscope's documented
    convention (src/eval/stats.h) gives NaN p in every one of these cases: where scipy also says
    NaN the two agree; where scipy gives a number it comes from an infinite t (or a huge t made
    by rounding, or linregress' TINY guard / r = 0 convention), not from a t distribution. The
    C test checks both: NaN p always, and t of the same sign where scipy's is infinite or huge."""
    out = []
    for name, a, b in [("zero_diffs", [0.3, 0.31, 0.29, 0.33], [0.3, 0.31, 0.29, 0.33]),
                       ("two_zero_pairs", [0.0, 1.0], [0.0, 1.0]),
                       ("shift_0.1", [0.0, 0.0, 0.0], [0.1, 0.1, 0.1]),
                       ("shift_1", [0.0, 1.0, 0.0], [1.0, 2.0, 1.0]),
                       ("shift_-1", [1.0, 1.0], [0.0, 0.0])]:
        r = st.ttest_rel(b, a)
        out.append(dict(name=name, kind="ttest_rel", a=a, b=b, t=jnum(r.statistic), p=jnum(r.pvalue)))
    ks = [1.0, 5.0, 10.0, 20.0, 50.0]
    for name, y in [("flat", [0.3] * 5), ("line", [2 * k + 1 for k in ks]),
                    ("monotone", [0.1, 0.2, 0.4, 0.5, 0.9])]:
        lr = st.linregress(ks, y)
        sp = st.spearmanr(ks, y)
        out.append(dict(name=name, kind="trend", dose=ks, y=y, slope=jnum(lr.slope), r=jnum(lr.rvalue),
                        p=jnum(lr.pvalue), rho=jnum(sp.correlation), rho_p=jnum(sp.pvalue)))
    return out


def main():
    paired = paired_ref()
    t_ppf, t_ppf_skipped = t_ppf_ref()
    ref = dict(
        meta=dict(generator="tests/gen_stats_ref.py", seed=SEED, numpy=np.__version__,
                  scipy=scipy.__version__, python=sys.version.split()[0],
                  note="data and expected values; see the generator's docstring"),
        lgamma=lgamma_ref(),
        betainc=betainc_ref(),
        betainc_exact=betainc_exact(),
        t_dist=t_dist_ref(),
        t_ppf=t_ppf,
        t_ppf_skipped=t_ppf_skipped,
        norm=norm_ref(),
        norm_ppf=norm_ppf_ref(),
        paired=paired,
        tost=tost_ref(),
        bootstrap=bootstrap_ref(paired),
        dd=dd_ref(),
        trend=trend_ref(),
        holm=holm_ref(),
        quantile=quantile_ref(paired),
        degenerate=degenerate_ref(),
    )
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "stats_scipy.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        # one top-level section per line block, one record per line: diffable, still compact
        f.write("{\n")
        keys = list(ref)
        for i, k in enumerate(keys):
            v = ref[k]
            f.write(json.dumps(k) + ": ")
            if isinstance(v, list):
                f.write("[\n" + ",\n".join(" " + json.dumps(r, allow_nan=False) for r in v) + "\n]")
            else:
                f.write(json.dumps(v, allow_nan=False))
            f.write(",\n" if i + 1 < len(keys) else "\n")
        f.write("}\n")
    print(f"wrote {path}: {len(ref['t_dist'])} t points, {len(t_ppf)} t quantiles "
          f"({len(t_ppf_skipped)} skipped), {len(paired)} paired sets")


if __name__ == "__main__":
    main()
