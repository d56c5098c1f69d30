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
#include <sys/stat.h>
#include <unistd.h>

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

/* Ours (BF16 weights, batch 3, masks, other widths/depths, heads x d_kv != d_model). */
static void test_variants(void **st) {
    check_folder(tc_path("fixtures/text-encoder-variants/clip-w40-l3-mask"));
    check_folder(tc_path("fixtures/text-encoder-variants/clip-quick-proj"));
    check_folder(tc_path("fixtures/text-encoder-variants/t5-d24-h3x10-l3"));
}

/* The CLI writes what the library computes: compare its file with expected.safetensors. */
static void test_encode_cli(void **st) {
    char *d = tc_tmpdir();
    char out[4200], buf[4096];
    snprintf(out, sizeof out, "%s/out.safetensors", d);
    const char *dirs[2] = {"fixtures/clip-text-tiny-gelu", "fixtures/t5-encoder-tiny"};
    const char *names[2] = {"hidden_states.1", "last_hidden_state_masked"};
    for (int k = 0; k < 2; k++) {
        const char *m = tc_path("%s", dirs[k]);
        int rc = tc_run(buf, sizeof buf, "%s encode --model %s --inputs %s/inputs.safetensors --out %s", tc_bin(), m, m, out);
        if (rc != 0) fail_msg("encode: %s", buf);
        size_t n1, n2;
        float *got = tc_load(out, names[k], &n1, NULL, NULL);
        float *want = tc_load(tc_join(m, "expected.safetensors"), names[k], &n2, NULL, NULL);
        assert_non_null(got), assert_non_null(want);
        assert_int_equal(n1, n2);
        assert_true(tc_rel_l2(got, want, n1) <= 1e-5);
        free(got), free(want);
    }
    tc_rmtree(d);
    free(d);
}

/* One line on stderr naming `needle`, and a non-zero exit. */
static void expect_cli_error(const char *needle, const char *fmt, ...) {
    char cmd[8192], buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = tc_run(buf, sizeof buf, "{ %s %s 2>&1 >/dev/null; }", tc_bin(), cmd);
    if (rc == 0) fail_msg("'%s' succeeded", cmd);
    if (!strstr(buf, needle)) fail_msg("'%s': error '%s' does not name '%s'", cmd, buf, needle);
    char *nl = strchr(buf, '\n');
    if (!nl || nl[1]) fail_msg("'%s': not one line: '%s'", cmd, buf);
}

static void write_ids(const char *path, int B, int L, int64_t fill, int64_t last) {
    int64_t *ids = malloc(sizeof(int64_t) * B * L);
    for (int i = 0; i < B * L; i++) ids[i] = fill;
    ids[B * L - 1] = last;
    st_writer *w = st_writer_new();
    int64_t shape[2] = {B, L};
    assert_int_equal(st_writer_add(w, "input_ids", ST_I64, 2, shape, ids), 0);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    free(ids);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *b = tc_read_all(from, &n);
    assert_non_null(b);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

static void test_bad_input(void **st) {
    char *d = tc_tmpdir();
    char p[8192], q[8192], tok[1024];
    /* own copies: tc_path/tc_join hand out rotating buffers */
    char clip[256], ctok[256], t5tok[256], small[256], t5m[256];
    snprintf(clip, sizeof clip, "%s", tc_path("fixtures/clip-text-tiny"));
    snprintf(ctok, sizeof ctok, "%s", tc_path("fixtures/clip-tokenizer"));
    snprintf(t5tok, sizeof t5tok, "%s", tc_path("fixtures/t5-tokenizer"));
    snprintf(small, sizeof small, "%s", tc_path("fixtures/text-encoder-variants/clip-w40-l3-mask"));
    snprintf(t5m, sizeof t5m, "%s", tc_path("fixtures/t5-encoder-tiny"));
    /* unknown tokenizer folder */
    snprintf(tok, sizeof tok, "%s/tok", d);
    snprintf(p, sizeof p, "mkdir -p %s", tok);
    assert_int_equal(system(p), 0);
    expect_cli_error("unknown tokenizer", "tokenize --tokenizer %s < /dev/null", tok);
    /* only the fast tokenizer's tokenizer.json */
    snprintf(p, sizeof p, "%s/tokenizer.json", tok);
    assert_int_equal(tc_write_text(p, "{}"), 0);
    expect_cli_error("tokenizer.json", "tokenize --tokenizer %s < /dev/null", tok);
    unlink(p);
    /* corrupt vocab.json */
    snprintf(p, sizeof p, "%s/vocab.json", tok);
    assert_int_equal(tc_write_text(p, "{\"a\": 0,"), 0);
    snprintf(q, sizeof q, "%s/merges.txt", tok);
    copy_file(tc_join(ctok, "merges.txt"), q);
    expect_cli_error("vocab.json", "tokenize --tokenizer %s < /dev/null", tok);
    /* vocab without the byte symbols */
    assert_int_equal(tc_write_text(p, "{\"a\": 0, \"b\": 1}"), 0);
    expect_cli_error("vocab.json", "tokenize --tokenizer %s < /dev/null", tok);
    /* merges.txt with a merge of unknown symbols */
    copy_file(tc_join(ctok, "vocab.json"), p);
    assert_int_equal(tc_write_text(q, "#version: 0.2\nt h\n\xe2\x82\xac zz\n"), 0);
    expect_cli_error("merges.txt: line 3", "tokenize --tokenizer %s < /dev/null", tok);
    assert_int_equal(tc_write_text(q, "#version: 0.2\nt h extra\n"), 0);
    expect_cli_error("merges.txt: line 2", "tokenize --tokenizer %s < /dev/null", tok);
    unlink(p), unlink(q);
    /* corrupt and truncated spiece.model */
    snprintf(p, sizeof p, "%s/spiece.model", tok);
    assert_int_equal(tc_write_text(p, "this is not a protobuf"), 0);
    expect_cli_error("spiece.model", "tokenize --tokenizer %s < /dev/null", tok);
    size_t n;
    char *b = tc_read_all(tc_join(t5tok, "spiece.model"), &n);
    FILE *f = fopen(p, "wb");
    fwrite(b, 1, n / 3, f);
    fclose(f);
    free(b);
    expect_cli_error("spiece.model", "tokenize --tokenizer %s < /dev/null", tok);
    /* a tokenizer whose ids do not fit the model's vocab_size (1000 < 49408) */
    expect_cli_error("vocab_size 1000", "encode --model %s --inputs %s/inputs.safetensors --out %s/o.safetensors "
                     "--tokenizer %s", small, small, d, ctok);
    expect_cli_error("a T5 tokenizer for a CLIP model", "encode --model %s --inputs %s/inputs.safetensors --out "
                     "%s/o.safetensors --tokenizer %s", clip, clip, d, t5tok);
    /* a config whose vocab_size does not match the weights */
    char m[1024];
    snprintf(m, sizeof m, "%s/model", d);
    snprintf(p, sizeof p, "mkdir -p %s && cp %s/model.safetensors %s/", m, clip, m);
    assert_int_equal(system(p), 0);
    b = tc_read_all(tc_join(clip, "config.json"), &n);
    char *at = strstr(b, "\"vocab_size\": 49408");
    assert_non_null(at);
    memcpy(at, "\"vocab_size\": 49000", 19);
    assert_int_equal(tc_write_text(tc_join(m, "config.json"), b), 0);
    free(b);
    expect_cli_error("token_embedding", "encode --model %s --inputs %s/inputs.safetensors --out %s/o.safetensors", m,
                     clip, d);
    /* ids out of range, and more tokens than the position table */
    snprintf(q, sizeof q, "%s/ids.safetensors", d);
    write_ids(q, 2, 77, 320, 49408);
    expect_cli_error("ids.safetensors: input_ids[1][76] = 49408", "encode --model %s --inputs %s --out %s/o.safetensors",
                     clip, q, d);
    write_ids(q, 1, 5, 3, -1);
    expect_cli_error("ids.safetensors", "encode --model %s --inputs %s --out %s/o.safetensors",
                     t5m, q, d);
    write_ids(q, 1, 78, 320, 49407);
    expect_cli_error("max_position_embeddings 77", "encode --model %s --inputs %s --out %s/o.safetensors", clip, q, d);
    /* a missing model folder */
    expect_cli_error("nonexistent", "encode --model %s/nonexistent --inputs %s --out %s/o.safetensors", d, q, d);
    tc_rmtree(d);
    free(d);
}

/* The folder's model.safetensors rewritten with every float tensor as `dtype`, into out/ (with
 * the config); F32 from a narrow copy gives the same values at 4 bytes each. */
static void rewrite(const char *src_dir, const char *src_file, const char *out, st_dtype dtype) {
    st_file *f;
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", src_dir, src_file);
    if (st_open(&f, p) < 0) fail_msg("%s", ss_err());
    st_writer *w = st_writer_new();
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
            assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
            continue;
        }
        float *x = malloc((size_t)t->numel * 4 + 4);
        assert_int_equal(st_to_f32(x, t), 0);
        assert_int_equal(st_writer_add_f32(w, t->name, dtype, t->ndim, t->shape, x), 0);
        free(x);
    }
    assert_int_equal(mkdir(out, 0755), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    if (st_writer_save(w, p) < 0) fail_msg("%s", ss_err());
    st_writer_free(w);
    st_close(f);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", src_dir, out);
    assert_int_equal(system(cmd), 0);
}

/* F16 and BF16 checkpoints keep their Linear weights and token embedding narrow (txenc.h): the
 * outputs must be bit-identical to an F32 checkpoint holding the same values, at about half the
 * weight memory. Every fixture folder (CLIP with and without projection and masks, T5 gated). */
static void test_narrow_weights_bit_identical(void **st) {
    const char *folders[] = {"clip-text-tiny", "clip-text-tiny-gelu", "t5-encoder-tiny", "text-encoder-variants/clip-w40-l3-mask",
                             "text-encoder-variants/clip-quick-proj", "text-encoder-variants/t5-d24-h3x10-l3"};
    const st_dtype narrow[2] = {ST_BF16, ST_F16};
    char *d = tc_tmpdir();
    for (size_t fi = 0; fi < sizeof folders / sizeof folders[0]; fi++) {
        char src[1024];
        snprintf(src, sizeof src, "%s", tc_path("fixtures/%s", folders[fi]));
        st_file *in;
        char p[4200];
        snprintf(p, sizeof p, "%s/inputs.safetensors", src);
        if (st_open(&in, p) < 0) fail_msg("%s", ss_err());
        int B = 0, L = 0, B2, L2;
        int64_t *ids = ints(in, "input_ids", &B, &L), *mask = ints(in, "attention_mask", &B2, &L2);
        for (int k = 0; k < 2; k++) {
            char nd[1200], wd[1200];
            snprintf(nd, sizeof nd, "%s/%zu-%d-narrow", d, fi, k);
            snprintf(wd, sizeof wd, "%s/%zu-%d-f32", d, fi, k);
            rewrite(src, "model.safetensors", nd, narrow[k]);
            rewrite(nd, "model.safetensors", wd, ST_F32);
            txenc *en, *ew;
            if (txenc_open(&en, nd) < 0 || txenc_open(&ew, wd) < 0) fail_msg("%s", ss_err());
            outs on = {.suffix = ""}, ow = {.suffix = ""};
            if (txenc_run(en, ids, mask, B, L, "inputs", keep, &on) < 0 || txenc_run(ew, ids, mask, B, L, "inputs", keep, &ow) < 0)
                fail_msg("%s", ss_err());
            assert_int_equal(on.n, ow.n);
            assert_true(on.n > 2);
            for (int i = 0; i < on.n; i++) {
                assert_string_equal(on.name[i], ow.name[i]);
                assert_int_equal(on.numel[i], ow.numel[i]);
                if (memcmp(on.data[i], ow.data[i], on.numel[i] * (on.is_f32[i] ? 4 : 8)))
                    fail_msg("%s as %s: %s differs from the F32 checkpoint", folders[fi], st_dtype_name(narrow[k]), on.name[i]);
            }
            const double ratio = (double)txenc_weight_bytes(en) / (double)txenc_weight_bytes(ew);
            fprintf(stderr, "%-40s %s: %d outputs bit-identical to F32; weights %zu vs %zu bytes (%.3f)\n", folders[fi],
                    st_dtype_name(narrow[k]), on.n, txenc_weight_bytes(en), txenc_weight_bytes(ew), ratio);
            assert_true(ratio < 0.62 && ratio >= 0.5); /* norms, biases and position tables stay fp32 */
            outs_free(&on), outs_free(&ow);
            txenc_free(en), txenc_free(ew);
        }
        free(ids), free(mask);
        st_close(in);
    }
    tc_rmtree(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_narrow_weights_bit_identical),
        cmocka_unit_test(test_reference_fixtures),
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_encode_cli),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
