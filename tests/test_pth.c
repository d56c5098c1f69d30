/* Tests for src/io/pth: state dicts written by torch 1.13 itself in both serializations
 * (tests/fixtures/pth-cases, from tests/gen/gen_pth_cases.py), and damaged files (every
 * truncation, oversized and inconsistent sizes, wrong types, foreign globals) that must fail
 * with a message naming the file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "io/pth.h"

#define CASES "tests/fixtures/pth-cases"

static void check_file(const char *name, json_t *exp, int want_zip) {
    pth_file *f;
    const char *path = tc_path("fixtures/pth-cases/%s", name);
    if (pth_open(&f, path) < 0) fail_msg("%s", ss_err());
    assert_int_equal(pth_is_zip(f), want_zip);
    json_t *list = json_object_get(exp, name);
    assert_non_null(list);
    assert_int_equal(pth_count(f), (int)json_array_size(list));
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        const st_tensor *t = pth_get(f, (int)i);
        assert_string_equal(t->name, json_string_value(json_object_get(e, "name")));
        assert_ptr_equal(pth_find(f, t->name), t);
        assert_string_equal(st_dtype_name(t->dtype), json_string_value(json_object_get(e, "dtype")));
        assert_string_equal(t->file, path);
        json_t *shape = json_object_get(e, "shape"), *vals = json_object_get(e, "values");
        assert_int_equal(t->ndim, (int)json_array_size(shape));
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
        assert_int_equal(t->numel, (int64_t)json_array_size(vals));
        assert_int_equal(t->nbytes, (size_t)t->numel * st_dtype_size(t->dtype));
        if (t->dtype == ST_I64 || t->dtype == ST_I32 || t->dtype == ST_U8 || t->dtype == ST_BOOL) {
            const uint8_t *p = t->data;
            for (int64_t k = 0; k < t->numel; k++) {
                int64_t v = 0;
                if (t->dtype == ST_I64) memcpy(&v, p + 8 * k, 8);
                else if (t->dtype == ST_I32) {
                    int32_t v32;
                    memcpy(&v32, p + 4 * k, 4);
                    v = v32;
                } else
                    v = p[k];
                assert_int_equal(v, json_integer_value(json_array_get(vals, (size_t)k)));
            }
            assert_true(st_to_f32(NULL, t) < 0); /* integers are not converted */
        } else {
            float *x = malloc((size_t)t->numel * sizeof *x + 1);
            assert_int_equal(st_to_f32(x, t), 0);
            for (int64_t k = 0; k < t->numel; k++) {
                json_t *jv = json_array_get(vals, (size_t)k);
                double want = json_is_integer(jv) ? (double)json_integer_value(jv) : json_real_value(jv);
                if (x[k] != (float)want) fail_msg("%s %s[%lld]: %.9g != %.9g", name, t->name, (long long)k, x[k], want);
            }
            free(x);
        }
    }
    assert_null(pth_find(f, "absent"));
    assert_null(pth_get(f, pth_count(f)));
    pth_close(f);
}

static void test_torch_files(void **state) {
    (void)state;
    json_error_t je;
    json_t *exp = json_load_file(tc_path("fixtures/pth-cases/expected.json"), 0, &je);
    assert_non_null(exp);
    check_file("zip.pth", exp, 1);
    check_file("legacy.pth", exp, 0);
    check_file("module_zip.pth", exp, 1);
    check_file("module_legacy.pth", exp, 0);
    json_decref(exp);
}

static void test_load_f32(void **state) {
    (void)state;
    pth_file *f;
    assert_int_equal(pth_open(&f, tc_path("fixtures/pth-cases/legacy.pth")), 0);
    float *x;
    const int64_t good[2] = {4, 5}, bad_shape[2] = {5, 4};
    assert_int_equal(pth_load_f32(&x, f, "transposed", 2, good), 0);
    float direct[20];
    assert_int_equal(st_to_f32(direct, pth_find(f, "transposed")), 0);
    assert_memory_equal(x, direct, sizeof direct);
    free(x);
    assert_int_equal(pth_load_f32(&x, f, "transposed", 2, bad_shape), SS_ESHAPE);
    assert_non_null(strstr(ss_err(), "legacy.pth"));
    assert_non_null(strstr(ss_err(), "'transposed'"));
    assert_int_equal(pth_load_f32(&x, f, "nope", 2, good), SS_EMISSING);
    assert_non_null(strstr(ss_err(), "'nope'"));
    const int64_t i64shape[1] = {7};
    assert_true(pth_load_f32(&x, f, "i64", 1, i64shape) < 0); /* not a float tensor */
    assert_non_null(strstr(ss_err(), "i64"));
    pth_close(f);
    assert_int_equal(pth_open(&f, "/nonexistent/x.pth"), SS_EIO);
    assert_non_null(strstr(ss_err(), "/nonexistent/x.pth"));
}

static uint8_t *slurp(const char *path, size_t *n) {
    uint8_t *b = (uint8_t *)tc_read_all(path, n);
    assert_non_null(b);
    return b;
}

static void expect_reject(const uint8_t *buf, size_t n, const char *label, const char *needle) {
    pth_file *f = (pth_file *)1;
    ss_err_clear();
    int rc = pth_open_memory(&f, buf, n, label);
    if (rc >= 0) fail_msg("%s (%zu bytes) was accepted", label, n);
    assert_null(f);
    if (strncmp(ss_err(), label, strlen(label))) fail_msg("message does not name the file: %s", ss_err());
    if (needle && !strstr(ss_err(), needle)) fail_msg("expected '%s' in: %s", needle, ss_err());
}

static void test_truncated(void **state) {
    (void)state;
    const char *names[2] = {"legacy.pth", "zip.pth"};
    for (int k = 0; k < 2; k++) {
        size_t n;
        uint8_t *b = slurp(tc_path("fixtures/pth-cases/%s", names[k]), &n);
        for (size_t len = 0; len < n; len++) {
            uint8_t *c = malloc(len + 1); /* exact-size copy: ASan sees any overread */
            memcpy(c, b, len);
            expect_reject(c, len, "cut.pth", NULL);
            free(c);
        }
        free(b);
    }
}

/* A hand-made legacy file holding one tensor "w": storage of `numel` elements of `stype`,
 * tensor offset `off`, one dimension of size `dim` (stride 1), `ndata` elements of data after a
 * header claiming `claimed` elements. `global` replaces the rebuild function if given. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} buf_t;

static void put(buf_t *o, const void *p, size_t k) {
    assert_true(o->n + k <= sizeof o->b);
    memcpy(o->b + o->n, p, k);
    o->n += k;
}
static void puts_(buf_t *o, const char *s) { put(o, s, strlen(s)); }
static void put_u8(buf_t *o, uint8_t v) { put(o, &v, 1); }
static void put_le(buf_t *o, uint64_t v, int k) {
    for (int j = 0; j < k; j++) put_u8(o, (uint8_t)(v >> (8 * j)));
}
static void put_short_str(buf_t *o, const char *s) {
    put_u8(o, 'U');
    put_u8(o, (uint8_t)strlen(s));
    puts_(o, s);
}
static void put_int(buf_t *o, uint64_t v) { /* LONG1 of 8 bytes */
    put_u8(o, 0x8a);
    put_u8(o, 8);
    put_le(o, v, 8);
}

typedef struct {
    const char *stype, *rebuild;
    uint64_t numel, claimed, dim, off;
    size_t ndata;
    int value_is_int; /* the dict value is an int instead of a tensor */
    int v1;           /* torch < 1.0 _rebuild_tensor: four arguments */
} legacy_spec;

static void make_legacy(buf_t *o, const legacy_spec *s) {
    o->n = 0;
    static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                    0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    put(o, magic, sizeof magic);
    static const uint8_t proto[] = {0x80, 0x02, 'M', 0xe9, 0x03, '.'};
    put(o, proto, sizeof proto);
    static const uint8_t sysinfo[] = {0x80, 0x02, '}', '.'};
    put(o, sysinfo, sizeof sysinfo);
    puts_(o, "\x80\x02" "ccollections\nOrderedDict\n)R(");
    put_short_str(o, "w");
    if (s->value_is_int) {
        put_int(o, 7);
    } else {
        puts_(o, s->rebuild ? s->rebuild : "ctorch._utils\n_rebuild_tensor_v2\n");
        puts_(o, "((");
        put_short_str(o, "storage");
        puts_(o, "c");
        puts_(o, s->stype);
        put_short_str(o, "0");
        put_short_str(o, "cpu");
        put_int(o, s->numel);
        puts_(o, "tQ");
        put_int(o, s->off);
        puts_(o, "(");
        put_int(o, s->dim);
        puts_(o, s->v1 ? "t(K\x01ttR" : "t(K\x01t\x89NtR");
    }
    puts_(o, "u.");
    puts_(o, "\x80\x02](");
    if (!s->value_is_int) put_short_str(o, "0");
    puts_(o, "e.");
    put_le(o, s->claimed, 8);
    for (size_t k = 0; k < s->ndata; k++) put_le(o, 0x3f800000u, 4); /* 1.0f */
}

static void test_handmade_legacy(void **state) {
    (void)state;
    buf_t o;
    legacy_spec ok = {"torch\nFloatStorage\n", NULL, 3, 3, 2, 1, 3, 0, 0};
    make_legacy(&o, &ok);
    pth_file *f;
    if (pth_open_memory(&f, o.b, o.n, "hand.pth") < 0) fail_msg("%s", ss_err());
    assert_int_equal(pth_count(f), 1);
    assert_int_equal(pth_get(f, 0)->numel, 2);
    float x[2];
    assert_int_equal(st_to_f32(x, pth_get(f, 0)), 0);
    assert_true(x[0] == 1.0f && x[1] == 1.0f);
    pth_close(f);

    legacy_spec s = ok;
    s.dim = 3; /* offset 1 + 3 elements > storage of 3 */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "view.pth", "'w'");
    s = ok;
    s.dim = 1ULL << 62; /* size x 4 bytes overflows */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "huge.pth", "'w'");
    /* stride-0 broadcast of one element over 2^31 elements: 8 GiB of copies from 12 bytes */
    {
        buf_t z;
        legacy_spec e = ok;
        make_legacy(&z, &e);
        /* the stride tuple "(K\x01t" becomes "(K\x00t" and the size 2 becomes 2^31 */
        uint8_t *st = memmem(z.b, z.n, "(K\x01t\x89", 5);
        assert_non_null(st);
        st[2] = 0;
        uint8_t *dim = memmem(z.b, z.n, "\x8a\x08\x02\0\0\0\0\0\0\0t", 11);
        assert_non_null(dim);
        dim[2] = 0, dim[5] = 0x80;
        expect_reject(z.b, z.n, "broadcast.pth", "16x");
    }
    s = ok;
    s.numel = s.claimed = 1ULL << 40; /* claims a terabyte the file does not have */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "oversized.pth", "storage '0'");
    s = ok;
    s.numel = s.claimed = (1ULL << 62) + 1; /* x 4 bytes overflows size_t */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "overflow.pth", NULL);
    s = ok;
    s.claimed = 2; /* element count in the data section disagrees with the pickle */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "count.pth", "storage '0'");
    s = ok;
    s.ndata = 2; /* data cut short */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "short.pth", "truncated");
    s = ok;
    s.stype = "torch\nFooStorage\n";
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "type.pth", "torch.FooStorage");
    /* torch < 1.0 wrote _rebuild_tensor(storage, offset, size, stride): 4 arguments only */
    s = ok;
    s.rebuild = "ctorch._utils\n_rebuild_tensor\n";
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "v1.pth", "wrong argument count");
    s.v1 = 1;
    make_legacy(&o, &s);
    if (pth_open_memory(&f, o.b, o.n, "v1.pth") < 0) fail_msg("%s", ss_err());
    assert_int_equal(pth_get(f, 0)->numel, 2);
    pth_close(f);
    s = ok;
    s.rebuild = "cos\nsystem\n";
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "evil.pth", "os.system");
    s = ok;
    s.value_is_int = 1;
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "notensor.pth", "'w' is not a tensor");
    s = ok;
    s.off = (uint64_t)-1; /* negative offset */
    make_legacy(&o, &s);
    expect_reject(o.b, o.n, "negoff.pth", "offset");
    /* not a pth at all */
    expect_reject((const uint8_t *)"hello", 5, "text.pth", "not a PyTorch");
    expect_reject((const uint8_t *)"PK\x03\x04garbage", 11, "badzip.pth", "zip");
}

/* Wrongly typed: a zip container whose data.pkl names a foreign global is refused. */
static void test_zip_wrong_contents(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = slurp(tc_path("fixtures/pth-cases/module_zip.pth"), &n);
    /* flip one byte of every stored entry's contents in turn: CRC checks or the parser refuse
     * it, or it still parses (padding); never a crash */
    for (size_t k = 0; k < n; k += 7) {
        b[k] ^= 0x5a;
        pth_file *f;
        if (pth_open_memory(&f, b, n, "flip.pth") == 0)
            pth_close(f);
        else if (strncmp(ss_err(), "flip.pth", 8))
            fail_msg("message does not name the file: %s", ss_err());
        b[k] ^= 0x5a;
    }
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch_files),
        cmocka_unit_test(test_load_f32),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_handmade_legacy),
        cmocka_unit_test(test_zip_wrong_contents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
