#!/usr/bin/python3
"""Fréchet-distance references from pytorch-fid's own calculate_frechet_distance (mseitzer/pytorch-fid
at b9c1811, extracted outside the repository; pass its src/ folder as argv[1]) on Debian's numpy/scipy.

Run from the repository root:
  /usr/bin/python3 tests/gen/gen_fid_frechet.py /tmp/fidref/src

The feature sets are not stored: the test re-creates them bit for bit from the counter-based hash
below (splitmix64 of seed * 2^32 + index, top 24 bits -> a multiple of 2^-23 in [-1, 1)), with the
same float64 formula, which tests/test_fid.c implements as well. A checksum (sum of all entries) of
each set is stored so that a mismatch in the formula shows as such.

Writes tests/fixtures/fid/frechet.json: per case the dimensions, seeds, checksums, pytorch-fid's FID
(scipy sqrtm route), whether it took the eps branch, the FID with 1e-6 I added unconditionally, and
an exact float64 reference (numpy eigh of sqrt(S1) S2 sqrt(S1), eigenvalues at or below
dim * eps * max|lambda| counted as the zeros they are) for comparison.
"""
import contextlib, io, json, sys
import numpy as np
from scipy import linalg

sys.path.insert(0, sys.argv[1])
from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: E402

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)

def hash_uniform(seed, count):
    """u[i] = ((splitmix64(seed * 2^32 + i) >> 40) / 2^24) * 2 - 1, float64, i in [0, count)."""
    x = np.arange(count, dtype=np.uint64) + np.uint64(seed << 32)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0 * 2.0 - 1.0

def features(seed, n, d, shift):
    """X[i, j] = u(seed)[i d + j] + 2 u(seed+1)[4 i + j % 4] + shift * u(seed+2)[j], float64.
    The second term gives four strongly correlated directions (ill-conditioned covariances)."""
    iid = hash_uniform(seed, n * d).reshape(n, d)
    low = hash_uniform(seed + 1, n * 4).reshape(n, 4)
    j4 = np.arange(d) % 4
    sh = hash_uniform(seed + 2, d)
    return iid + 2.0 * low[:, j4] + shift * sh[None, :]

def stats(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)

def exact(m1, s1, m2, s2, eps=0.0):
    s1e, s2e = s1 + eps * np.eye(len(m1)), s2 + eps * np.eye(len(m1))
    w, v = np.linalg.eigh(s1e)
    r = v * np.sqrt(np.clip(w, 0, None))[None, :] @ v.T
    lam = np.linalg.eigvalsh(r @ s2e @ r)
    # eigenvalues at the rounding level are the exact zeros of a rank-deficient product
    tol = np.abs(lam).max() * len(lam) * np.finfo(np.float64).eps
    d = m1 - m2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam[lam > tol]).sum())

CASES = [  # tag, dim, n_a, n_b, seed_a, seed_b, shift_b
    ("d16_full", 16, 200, 300, 11, 21, 0.5),
    ("d64_rankdef", 64, 40, 50, 31, 41, 0.3),
    ("d256_rankdef", 256, 100, 120, 51, 61, 0.2),
    ("d2048_rankdef", 2048, 60, 80, 71, 81, 0.1),
    ("d64_same", 64, 70, 70, 91, 91, 0.0),
]
out = {}
for tag, d, na, nb, sa, sb, shift in CASES:
    xa, xb = features(sa, na, d, 0.0), features(sb, nb, d, shift)
    m1, s1 = stats(xa)
    m2, s2 = stats(xb)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        fid = float(calculate_frechet_distance(m1, s1, m2, s2))
    # the offset branch on its own (pytorch-fid's second sqrtm, unconditionally)
    off = np.eye(d) * 1e-6
    cm = linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(cm):
        cm = cm.real
    fid_eps = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cm))
    out[tag] = {
        "dim": d, "n_a": na, "n_b": nb, "seed_a": sa, "seed_b": sb, "shift_b": shift,
        "sum_a": float(xa.sum()), "sum_b": float(xb.sum()),
        "fid": fid, "eps_branch": "adding" in log.getvalue(),
        "fid_eps": fid_eps,
        "fid_exact": exact(m1, s1, m2, s2), "fid_eps_exact": exact(m1, s1, m2, s2, 1e-6),
    }
    print(tag, out[tag])
with open("tests/fixtures/fid/frechet.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
