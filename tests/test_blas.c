/* blas: the guard against OpenBLAS's generic kernels (nn/blas.h).
 *
 * A CPU OpenBLAS does not know cannot be had on demand, so the program re-executes itself with
 * OPENBLAS_CORETYPE=Prescott, which makes OpenBLAS load its generic kernels exactly as it does on
 * such a CPU, and SINKSCOPE_BLAS_CORE=keep, so that the constructor leaves them. The tests then
 * apply the policy and check that the products become thread-count independent. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/blas.h"
#include "nn/ops.h"

static int g_avx2_fma, g_avx512;

static void test_decision_table(void **st) {
    assert_string_equal(ss_blas_better_core("Prescott", 1, 1), "SkylakeX");
    assert_string_equal(ss_blas_better_core("Prescott", 1, 0), "Haswell");
    assert_string_equal(ss_blas_better_core("Nehalem", 1, 0), "Haswell");
    assert_string_equal(ss_blas_better_core("Sandybridge", 1, 1), "SkylakeX");
    assert_null(ss_blas_better_core("Prescott", 0, 0)); /* the CPU has nothing better */
    assert_null(ss_blas_better_core("SkylakeX", 1, 1));
    assert_null(ss_blas_better_core("Haswell", 1, 1)); /* an AVX2 choice is left alone */
    assert_null(ss_blas_better_core("Zen", 1, 1));
    assert_null(ss_blas_better_core("SAPPHIRERAPIDS", 1, 1));
    assert_null(ss_blas_better_core(NULL, 1, 1));
}

/* Deterministic inputs from an integer hash (no rng dependency). */
static float val(size_t i, unsigned salt) {
    unsigned x = (unsigned)i * 2654435761u ^ salt;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    return (float)(x & 0xffff) / 65536.0f - 0.5f;
}

/* op_linear at shapes of the model families' layers (token counts that are not multiples of the
 * kernels' blocks), once per thread count; returns 1 when every thread count gave the same bits. */
static int linear_same_across_threads(void) {
    static const int shapes[][3] = {{333, 1536, 1536}, {77, 640, 160}, {1357, 192, 64}, {19, 96, 400}};
    int same = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K), *b = malloc(sizeof(float) * N);
        float *y1 = malloc(sizeof(float) * M * N), *y2 = malloc(sizeof(float) * M * N);
        for (size_t i = 0; i < (size_t)M * K; i++) x[i] = val(i, 1);
        for (size_t i = 0; i < (size_t)N * K; i++) w[i] = val(i, 2) * 0.05f;
        for (int i = 0; i < N; i++) b[i] = val(i, 3);
        ss_linear l = {.w = w, .b = b, .in = K, .out = N};
        omp_set_num_threads(1);
        op_linear(y1, x, &l, M);
        omp_set_num_threads(2);
        op_linear(y2, x, &l, M);
        if (memcmp(y1, y2, sizeof(float) * M * N)) same = 0;
        free(x), free(w), free(b), free(y1), free(y2);
    }
    return same;
}

static void test_user_choice_is_kept(void **st) {
    /* OPENBLAS_CORETYPE is set (by main): the default policy must not override it */
    assert_string_equal(ss_blas_core(), "Prescott");
    assert_int_equal(ss_blas_apply_policy(NULL), 0);
    assert_int_equal(ss_blas_apply_policy("keep"), 0);
    assert_string_equal(ss_blas_core(), "Prescott");
    assert_null(ss_blas_core_replaced());
}

static void test_switch_makes_products_thread_independent(void **st) {
    if (!g_avx2_fma) skip(); /* no better kernels for this CPU */
    int before = linear_same_across_threads();
    print_message("generic kernels: products %s across 1 and 2 threads\n", before ? "agree" : "differ");
    assert_int_equal(ss_blas_apply_policy("auto"), 1);
    assert_string_equal(ss_blas_core(), g_avx512 ? "SkylakeX" : "Haswell");
    assert_string_equal(ss_blas_core_replaced(), "Prescott");
    assert_non_null(strstr(ss_blas_describe(), "(switched from Prescott)"));
    assert_string_equal(getenv("OPENBLAS_CORETYPE"), "Prescott"); /* the environment is restored */
    assert_true(linear_same_across_threads());
    assert_int_equal(ss_blas_apply_policy("auto"), 0); /* nothing left to switch */
}

int main(int argc, char **argv) {
    const char *ct = getenv("OPENBLAS_CORETYPE");
    if (!ct || strcmp(ct, "Prescott") || !getenv("SINKSCOPE_BLAS_CORE")) {
        setenv("OPENBLAS_CORETYPE", "Prescott", 1);
        setenv("SINKSCOPE_BLAS_CORE", "keep", 1);
        execv("/proc/self/exe", argv);
        perror("test_blas: re-executing /proc/self/exe");
        return 1;
    }
    __builtin_cpu_init();
    g_avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    g_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_table),
        cmocka_unit_test(test_user_choice_is_kept),
        cmocka_unit_test(test_switch_makes_products_thread_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
