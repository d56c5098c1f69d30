/* fastmath: branch-free float exp and friends that gcc vectorizes under `#pragma omp simd`.
 *
 * libm's expf is scalar, and attention evaluates one exp per (query, key, head): ~44M per
 * SD3-medium block at 1024x1024 with 1357 tokens, more than the matrix products can hide.
 * ss_expf: range reduction x = n*ln2 + r, |r| <= ln2/2, degree-6 Taylor polynomial in r,
 * 2^n built in the exponent bits. Max relative error ~2e-7 over [-87, 88]; inputs are clamped
 * there, so exp of a very negative number (or -inf) is ~1e-38 rather than 0, and exp of a large one
 * (or +inf) is ~1.65e38, finite. NaN gives NaN. Every helper here is defined (no undefined
 * behaviour) for every float input, NaN and infinities included; see tests/test_robust_model.c.
 */
#ifndef SS_FASTMATH_H
#define SS_FASTMATH_H

#include <stdint.h>

static inline float ss_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln2): adding 1.5 * 2^23 rounds to an integer in the mantissa. (floorf would
     * keep gcc from vectorizing the loop under default trapping-math semantics.) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;     /* ln2 split in a high part exact in float ... */
    r = r - n * -2.12194440e-4f;        /* ... and the low remainder */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n in the exponent bits; a union (not memcpy) so the loop still vectorizes. After the
     * clamp n is in [-126, 127], so n + 127 is in [1, 254] and the unsigned shift is defined. Only
     * a NaN input escapes the clamp (both comparisons are false): it must not reach the int
     * conversion (undefined behaviour), so n is replaced by 0 there with a select that vectorizes;
     * p is NaN already, and so is the result. */
    const float nn = n == n ? n : 0.0f;
    union {
        uint32_t i;
        float f;
    } scale = {.i = (uint32_t)((int32_t)nn + 127) << 23};
    return p * scale.f;
}

/* tanh(u) = 1 - 2/(1+e^{2u}); absolute error ~1e-7, which is what GELU needs. */
static inline float ss_tanhf(float u) { return 1.0f - 2.0f / (1.0f + ss_expf(2.0f * u)); }

static inline float ss_gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + ss_tanhf(k * (x + 0.044715f * x * x * x)));
}

/* x * sigmoid(x). Below -88, e^-x is clamped and x / (1 + e^88) would not be ~0 for huge |x|
 * (-2.06 at -FLT_MAX): the true value there is below 1e-36 in magnitude, so -0 (also for -inf). */
static inline float ss_silu(float x) { return x < -88.0f ? -0.0f : x / (1.0f + ss_expf(-x)); }

#endif
