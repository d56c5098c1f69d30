/* rng: Philox known answers, pinned values, independence from threads and chunking, and
 * statistical sanity (moments, Kolmogorov-Smirnov, bucket counts). Seeds are fixed, so the
 * statistical checks are deterministic; thresholds are ~3 sigma / p = 0.001. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

static void test_philox_kat(void **st) {
    /* Random123 tests/kat_vectors for philox4x32 with 10 rounds */
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e,
         0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb,
         0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        rng_philox4x32_10(v[i], v[i] + 4, out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], v[i][6 + j]);
    }
}

static uint32_t bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

/* Regression pins: changing any of these changes every noise tensor ever generated. */
static void test_pinned(void **st) {
    float f[5];
    rng_normal_fill(f, 5, 42, 0);
    static const uint32_t want[5] = {0xbf2a5602, 0x3f849c6e, 0xbfb789ae, 0x3ed8b7eb, 0x3e0a3f85};
    for (int i = 0; i < 5; i++) assert_int_equal(bits(f[i]), want[i]);
    assert_true(rng_uniform_u64(42, 7, 0) == 0xe55410cc67ee6f2cull);
    assert_true(rng_uniform_u64(42, 7, 1) == 0x557398d36c7eca35ull);
    assert_true(rng_uniform_u64(42, 7, 2) == 0x600f6196e5dde940ull);
    /* The documented Box-Muller layout, recomputed from the u64 words. */
    uint64_t w0 = rng_uniform_u64(42, 0, 0), w1 = rng_uniform_u64(42, 0, 1);
    double u1 = ((w0 >> 11) + 1) * 0x1p-53, u2 = (w1 >> 11) * 0x1p-53;
    double r = sqrt(-2 * log(u1)), th = 2 * M_PI * u2;
    assert_int_equal(bits((float)(r * cos(th))), want[0]);
    assert_int_equal(bits((float)(r * sin(th))), want[1]);
}

static void test_threads_and_chunks(void **st) {
    const size_t n = 300001;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    rng_normal_fill(a, n, 1234, 5);
    omp_set_num_threads(2);
    rng_normal_fill(b, n, 1234, 5);
    omp_set_num_threads(saved);
    assert_memory_equal(a, b, n * sizeof *a);
    /* Pieces starting at odd and even offsets reproduce the whole. */
    size_t cuts[] = {0, 1, 2, 12345, 12346, 200000, n};
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++)
        rng_normal_fill_at(c + cuts[i], cuts[i + 1] - cuts[i], 1234, 5, cuts[i]);
    assert_memory_equal(a, c, n * sizeof *a);
    /* A shorter request is a prefix. */
    rng_normal_fill(c, 7, 1234, 5);
    assert_memory_equal(a, c, 7 * sizeof *a);
    /* Other seeds / streams give other numbers. */
    rng_normal_fill(c, 4, 1234, 6);
    assert_memory_not_equal(a, c, 4 * sizeof *a);
    rng_normal_fill(c, 4, 1235, 5);
    assert_memory_not_equal(a, c, 4 * sizeof *a);
    free(a), free(b), free(c);
}

static void test_moments(void **st) {
    const size_t n = 1000000;
    float *x = malloc(n * sizeof *x);
    rng_normal_fill(x, n, 2024, 0);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double mean = s / n;
    for (size_t i = 0; i < n; i++) s2 += (x[i] - mean) * (x[i] - mean);
    double var = s2 / (n - 1);
    printf("  mean %.5f (3 sigma %.5f), variance %.5f (3 sigma %.5f)\n", mean, 3 / sqrt(n), var, 3 * sqrt(2.0 / n));
    assert_true(fabs(mean) < 3 / sqrt(n));
    assert_true(fabs(var - 1) < 3 * sqrt(2.0 / n));
    free(x);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_ks(void **st) {
    const size_t n = 200000;
    float *x = malloc(n * sizeof *x);
    rng_normal_fill(x, n, 77, 3);
    qsort(x, n, sizeof *x, cmp_float);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double cdf = 0.5 * erfc(-x[i] / sqrt(2.0));
        double lo = cdf - (double)i / n, hi = (double)(i + 1) / n - cdf;
        if (lo > d) d = lo;
        if (hi > d) d = hi;
    }
    printf("  KS sqrt(n)*D = %.3f (critical 1.95 at p = 0.001)\n", sqrt(n) * d);
    assert_true(sqrt(n) * d < 1.95);
    free(x);
}

static double chi2_below(rng_t *r, uint64_t k, size_t draws) {
    size_t *cnt = calloc(k, sizeof *cnt);
    for (size_t i = 0; i < draws; i++) {
        uint64_t v = rng_below(r, k);
        assert_true(v < k);
        cnt[v]++;
    }
    double e = (double)draws / k, chi = 0;
    for (uint64_t j = 0; j < k; j++) chi += (cnt[j] - e) * (cnt[j] - e) / e;
    free(cnt);
    return chi;
}

static void test_sequential(void **st) {
    rng_t r;
    rng_init(&r, 9, 1);
    for (uint64_t i = 0; i < 5; i++) assert_true(rng_next_u64(&r) == rng_uniform_u64(9, 1, i));
    /* chi-square critical values at p = 0.001: 27.88 (9 dof), 22.46 (6 dof) */
    double c10 = chi2_below(&r, 10, 1000000), c7 = chi2_below(&r, 7, 700000);
    printf("  chi2 below(10) %.2f, below(7) %.2f\n", c10, c7);
    assert_true(c10 < 27.88);
    assert_true(c7 < 22.46);
    assert_true(rng_below(&r, 0) == 0);
    assert_true(rng_below(&r, 1) == 0);
    /* n just above 2^63 rejects about half the words; results must stay below n */
    uint64_t big = (1ull << 63) + 12345;
    for (int i = 0; i < 1000; i++) assert_true(rng_below(&r, big) < big);
    /* rng_uniform: in [0,1), ten equal buckets */
    size_t cnt[10] = {0};
    double s = 0;
    for (int i = 0; i < 1000000; i++) {
        double u = rng_uniform(&r);
        assert_true(u >= 0 && u < 1);
        cnt[(int)(u * 10)]++;
        s += u;
    }
    double chi = 0;
    for (int j = 0; j < 10; j++) chi += (cnt[j] - 1e5) * (cnt[j] - 1e5) / 1e5;
    printf("  chi2 uniform buckets %.2f, mean %.5f\n", chi, s / 1e6);
    assert_true(chi < 27.88);
    assert_true(fabs(s / 1e6 - 0.5) < 3 * sqrt(1.0 / 12 / 1e6));
}

/* Golden sequences of the generators moved into core/rng, captured from the code before the move
 * (base a52bf65: eval/shapeworld.c sw_rng, eval/stats.c xoshiro256**, models/sd3_init.c
 * uniform01, sink/sink.c mix64), so the data sets, bootstrap intervals, random weights and random
 * key draws stay bit-identical. */
static void test_golden_splitmix64(void **st) {
    assert_true(rng_splitmix64_mix(0) == 0);
    assert_true(rng_splitmix64_mix(1) == 0x5692161d100b05e5ull);
    assert_true(rng_splitmix64_mix(0xdeadbeef) == 0x4e062702ec929eeaull);
    rng_splitmix64 r = rng_splitmix64_keyed(42, 7, 3);
    assert_true(r.s == 0x6fbdc9e1b973413aull);
    static const uint64_t next[6] = {0x20c948e1ff5132b9ull, 0x96a521f22441e747ull, 0x93189dce727f377cull,
                                     0xf5a953ed525c75e5ull, 0x56cadc60aa6e0d32ull, 0xa3a295b9729eea91ull};
    for (int i = 0; i < 6; i++) assert_true(rng_splitmix64_next(&r) == next[i]);
    static const int below[6] = {476, 899, 900, 330, 45, 157};
    for (int i = 0; i < 6; i++) assert_int_equal(rng_splitmix64_below32(&r, 1000), below[i]);
    /* sink.c's hash: one splitmix64 step from state z, and its key draw mix(k ^ mix(ctr)) */
    assert_true(rng_splitmix64_hash(0) == 0xe220a8397b1dcdafull);
    assert_true(rng_splitmix64_hash(1) == 0x910a2dec89025cc1ull);
    assert_true(rng_splitmix64_hash(0xdeadbeef) == 0x4adfb90f68c9eb9bull);
    static const uint64_t draw[4] = {0x6a389551f8bb19e5ull, 0x4488e597ee6b41f2ull, 0x671be81b9b8d625dull,
                                     0x9516e9ca100c6501ull};
    for (uint64_t c = 0; c < 4; c++) assert_true(rng_splitmix64_hash(99 ^ rng_splitmix64_hash(c)) == draw[c]);
}

static void test_golden_xoshiro256ss(void **st) {
    rng_xoshiro256ss x;
    rng_xoshiro256ss_seed(&x, 12345);
    static const uint64_t s0[4] = {0x22118258a9d111a0ull, 0x346edce5f713f8edull, 0x1e9a57bc80e6721dull,
                                   0x2d160e7e5c3f42caull};
    for (int i = 0; i < 4; i++) assert_true(x.s[i] == s0[i]);
    static const uint64_t next[6] = {0xbe6a36374160d49bull, 0x214aaa0637a688c6ull, 0xf69d16de9954d388ull,
                                     0x0c60048c4e96e033ull, 0x8e2076aeed51c648ull, 0x02bbcc1c1fc50f84ull};
    for (int i = 0; i < 6; i++) assert_true(rng_xoshiro256ss_next(&x) == next[i]);
    static const uint64_t b17[6] = {3, 16, 3, 12, 6, 6};
    for (int i = 0; i < 6; i++) assert_true(rng_xoshiro256ss_below(&x, 17) == b17[i]);
    static const uint64_t big[3] = {0x56ec21eec05e2556ull, 0x710bfd24e5edb1ecull, 0x5d4773f85b29ae74ull};
    for (int i = 0; i < 3; i++) assert_true(rng_xoshiro256ss_below(&x, (1ull << 63) + 5) == big[i]);
}

static void test_golden_xorshift64s(void **st) {
    uint64_t s = rng_xorshift64s_seed(7);
    assert_true(s == 0x538454127b096494ull);
    static const double u[6] = {0x1.7ea5a151e586dp-1, 0x1.cf64f35cfdc61p-1, 0x1.7acd7b28b702ap-1,
                                0x1.7c571185a34ap-5,  0x1.e2d13facd4e74p-3, 0x1.174197481fed8p-1};
    for (int i = 0; i < 6; i++) assert_true(rng_xorshift64s_uniform01(&s) == u[i]);
    assert_true(s == 0x8cf20f4cd99135f4ull);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_kat), cmocka_unit_test(test_pinned), cmocka_unit_test(test_threads_and_chunks),
        cmocka_unit_test(test_moments),    cmocka_unit_test(test_ks),     cmocka_unit_test(test_sequential),
        cmocka_unit_test(test_golden_splitmix64), cmocka_unit_test(test_golden_xoshiro256ss),
        cmocka_unit_test(test_golden_xorshift64s),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
