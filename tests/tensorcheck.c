/* Tensor-by-tensor checks (tensorcheck.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "io/safetensors.h"
#include "tensorcheck.h"

int tt_has(const char *file, const char *name) {
    st_file *f;
    if (st_open(&f, file) < 0) return 0;
    const int r = st_find(f, name) != NULL;
    st_close(f);
    return r;
}

double tt_cmp(const char *got, const char *exp, const char *name, double tol) {
    size_t n, ne;
    int64_t s1[8], s2[8];
    int d1, d2;
    float *x = tc_load(got, name, &n, s1, &d1), *r = tc_load(exp, name, &ne, s2, &d2);
    if (!x) fail_msg("%s: no '%s'", got, name);
    if (!r) fail_msg("%s: no '%s'", exp, name);
    assert_int_equal(n, ne);
    assert_int_equal(d1, d2);
    for (int i = 0; i < d1; i++) assert_int_equal(s1[i], s2[i]);
    const double e = tc_rel_l2(x, r, n);
    if (!(e <= tol)) fail_msg("%s vs %s: '%s' rel L2 %.3e", got, exp, name, e);
    free(x), free(r);
    return e;
}

double tt_max_abs(const char *got, const char *exp, const char *name, double tol) {
    size_t n, ne;
    float *x = tc_load(got, name, &n, NULL, NULL), *r = tc_load(exp, name, &ne, NULL, NULL);
    assert_non_null(x), assert_non_null(r);
    assert_int_equal(n, ne);
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i] - r[i]));
    if (!(m <= tol)) fail_msg("%s: '%s' max abs %.3e", exp, name, m);
    free(x), free(r);
    return m;
}
