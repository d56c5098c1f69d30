#!/usr/bin/python3
"""Reference numbers for tests/test_report.c, computed with scipy 1.10 from the same designed
experiment the test writes (formulas mirrored from the test's generator). The test stores the
printed values; it does not run this script."""
import numpy as np
from scipy import stats

NP, NS = 10, 3
BASE, A1, R1, A1E01, A1E05, A3, R3, R1B = range(8)


def u(p, r, salt):
    return (((p * 31 + r * 17 + salt * 7) % 11) - 5) / 5.0


def gv(c, p, r):
    g0 = 1 if (p * 7 + r * 3) % 5 != 0 else 0
    if c == A1:
        g = 0 if (p + r) % 4 == 0 else g0
        return 1 if (p * r) % 7 == 3 else g
    if c == R1:
        return 1 - g0 if (p + 2 * r) % 9 == 0 else g0
    if c == A1E01:
        return 0 if (p + r) % 6 == 0 else g0
    if c == A3:
        return 1 - g0 if (p + r) % 5 == 1 else g0
    if c == R3:
        return 1 - g0 if (p + r) % 5 == 2 else g0
    return g0


SHIFT = {A1: (0.25, 0.05, 1), R1: (0.05, 0.02, 2), A1E01: (0.15, 0.02, 3), A1E05: (0.05, 0.01, 4),
         A3: (0.20, 0.05, 5), R3: (0.20, 0.05, 6), R1B: (0.04, 0.01, 7)}


def ssim(c, p, r):
    m, s, salt = SHIFT[c]
    return 1.0 - (m + s * u(p, r, salt))


def present(c, p, r):
    return not ((c == BASE and p == 9 and r == 2) or (c == A1 and p == 0 and r == 0))


def items(*cs):
    return [(p, r) for p in range(NP) for r in range(NS) if all(present(c, p, r) for c in (BASE,) + cs)]


it = items(A1)
b = np.array([gv(BASE, p, r) for p, r in it], float)
a = np.array([gv(A1, p, r) for p, r in it], float)
t = stats.ttest_rel(a, b)
print("A1 geneval: n %d mean %.17g p %.17g" % (len(it), (a - b).mean(), t.pvalue))
sh = np.array([1.0 - ssim(A1, p, r) for p, r in it])
t = stats.ttest_1samp(sh, 0)
print("A1 shift: mean %.17g p %.17g" % (sh.mean(), t.pvalue))
it = items(A1, R1)
dd = np.array([(1.0 - ssim(A1, p, r)) - (1.0 - ssim(R1, p, r)) for p, r in it])
print("dd A1-R1 shift: n %d mean %.17g p_greater %.17g" % (len(it), dd.mean(),
      stats.ttest_1samp(dd, 0, alternative="greater").pvalue))
dg = np.array([(gv(A1, p, r) - gv(BASE, p, r)) - (gv(R1, p, r) - gv(BASE, p, r)) for p, r in it], float)
print("dd A1-R1 geneval: mean %.17g p_less %.17g" % (dg.mean(), stats.ttest_1samp(dg, 0, alternative="less").pvalue))
it = items(A3, R3)
dd = np.array([(1.0 - ssim(A3, p, r)) - (1.0 - ssim(R3, p, r)) for p, r in it])
print("dd A3-R3 shift: mean %.17g p_greater %.17g" % (dd.mean(), stats.ttest_1samp(dd, 0, alternative="greater").pvalue))
x, y = [], []
for c, eta in ((A1, 0.0), (A1E01, 0.1), (A1E05, 0.5)):
    for p, r in items(c):
        x.append(eta)
        y.append(1.0 - ssim(c, p, r))
lr = stats.linregress(x, y)
print("eta sweep shift: n %d slope %.17g p %.17g rho %.17g" % (len(x), lr.slope, lr.pvalue, stats.spearmanr(x, y)[0]))
