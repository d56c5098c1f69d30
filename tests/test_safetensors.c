/* Tests for src/io/safetensors: writer/reader round trips, fp16/bf16 bit patterns, the diffusers
 * fixtures, sharded checkpoints, and a catalogue of damaged files that must fail cleanly. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"

#define FIXTURES "tests/fixtures"

static char g_dir[64]; /* mkdtemp folder for this run */

/* Returned by value so that several paths can be alive at once. */
typedef struct {
    char s[512];
} path_t;

static path_t tmp_path(const char *name) {
    path_t p;
    snprintf(p.s, sizeof p.s, "%s/%s", g_dir, name);
    return p;
}

/* 1 when g_dir holds a temporary file of the writer for `base`: the atomic writer's ".BASE.XXXXXX"
 * or an old-style "BASE.tmp". */
static int has_tmp_of(const char *base) {
    DIR *d = opendir(g_dir);
    if (!d) return 1;
    char dot[300], old[300];
    snprintf(dot, sizeof dot, ".%s.", base);
    snprintf(old, sizeof old, "%s.tmp", base);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        found |= !strncmp(e->d_name, dot, strlen(dot)) || !strcmp(e->d_name, old);
    closedir(d);
    return found;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int group_setup(void **state) {
    (void)state;
    strcpy(g_dir, "/tmp/st_test_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_bytes(const char *path, const void *buf, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *n, fp), *n);
    fclose(fp);
    return b;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A safetensors file with the given header text, header length field and zeroed data. */
static void write_st_raw(const char *path, const char *hdr, uint64_t hlen_field, size_t ndata) {
    size_t hl = strlen(hdr);
    uint8_t *b = calloc(1, 8 + hl + ndata);
    assert_non_null(b);
    put_le64(b, hlen_field);
    memcpy(b + 8, hdr, hl);
    write_bytes(path, b, 8 + hl + ndata);
    free(b);
}

static void write_st(const char *path, const char *hdr, size_t ndata) {
    write_st_raw(path, hdr, strlen(hdr), ndata);
}

/* The error must be a single line naming the file (by base name) and containing `needle`. */
static void check_err(const char *path, const char *needle) {
    const char *msg = ss_err();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (!strstr(msg, base) || (needle && !strstr(msg, needle)) || strchr(msg, '\n'))
        fail_msg("error '%s' lacks '%s' or '%s'", msg, base, needle ? needle : "");
}

static void expect_open_fail(const char *path, const char *needle) {
    st_file *f = (st_file *)1;
    ss_err_clear();
    int rc = st_open(&f, path);
    assert_true(rc < 0);
    assert_null(f);
    check_err(path, needle);
}

static uint16_t le16(const void *p) {
    const uint8_t *b = p;
    return (uint16_t)(b[0] | b[1] << 8);
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- basics ---- */

static void test_dtype_table(void **state) {
    (void)state;
    const char *names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    const size_t sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        st_dtype p;
        assert_string_equal(st_dtype_name((st_dtype)d), names[d]);
        assert_int_equal(st_dtype_size((st_dtype)d), sizes[d]);
        assert_int_equal(st_dtype_parse(names[d], &p), 0);
        assert_int_equal(p, d);
    }
    st_dtype p;
    assert_int_equal(st_dtype_parse("f32", &p), -1);
    assert_int_equal(st_dtype_parse("F8_E4M3", &p), -1);
}

/* ---- round trip ---- */

static void test_roundtrip(void **state) {
    (void)state;
    const float a[6] = {1, -2, 3.5f, 0, -0.25f, 1e-3f};
    const float h[4] = {1, -2.5f, 65504, 0.5f};
    const float bf[6] = {1, -2.5f, 3, 0.15625f, -1024, 7};
    const int64_t ints[4] = {-1, INT64_MAX, INT64_MIN, 42};
    const float scalar = 3.25f;
    st_writer *w = st_writer_new();
    assert_non_null(w);
    assert_int_equal(st_writer_add_f32(w, "a", ST_F32, 2, (int64_t[]){2, 3}, a), 0);
    assert_int_equal(st_writer_add_f32(w, "h", ST_F16, 1, (int64_t[]){4}, h), 0);
    assert_int_equal(st_writer_add_f32(w, "bf", ST_BF16, 3, (int64_t[]){3, 1, 2}, bf), 0);
    assert_int_equal(st_writer_add(w, "ints", ST_I64, 2, (int64_t[]){2, 2}, ints), 0);
    assert_int_equal(st_writer_add_f32(w, "scalar", ST_F32, 0, NULL, &scalar), 0);
    assert_int_equal(st_writer_add_f32(w, "empty", ST_F32, 2, (int64_t[]){0, 5}, NULL), 0);
    assert_int_equal(st_writer_add(w, "empty_i", ST_I64, 2, (int64_t[]){3, 0}, NULL), 0);
    assert_int_equal(st_writer_add(w, "u8", ST_U8, 1, (int64_t[]){3}, "xyz"), 0);
    assert_int_equal(st_writer_set_metadata(w, "format", "pt"), 0);
    assert_int_equal(st_writer_set_metadata(w, "note", "héllo \"quoted\""), 0);
    assert_int_equal(st_writer_set_metadata(w, "format", "pt2"), 0); /* replaces */
    path_t path_buf = tmp_path("rt.safetensors");
    const char *path = path_buf.s;
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);

    /* Layout: header padded with spaces to a multiple of 8, data contiguous in order. */
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(n, 8 + hl + 24 + 8 + 12 + 32 + 4 + 3);
    assert_true(raw[8] == '{');
    assert_null(memchr(raw + 8, '\n', hl));
    free(raw);
    assert_false(has_tmp_of("rt.safetensors"));

    st_file *f;
    assert_int_equal(st_open(&f, path), 0);
    assert_int_equal(st_count(f), 8);
    assert_string_equal(st_metadata(f, "format"), "pt2");
    assert_string_equal(st_metadata(f, "note"), "héllo \"quoted\"");
    assert_null(st_metadata(f, "missing"));
    const char *order[] = {"a", "h", "bf", "ints", "scalar", "empty", "empty_i", "u8"};
    for (int i = 0; i < 8; i++) {
        assert_string_equal(st_get(f, i)->name, order[i]);
        assert_ptr_equal(st_find(f, order[i]), st_get(f, i));
        assert_string_equal(st_get(f, i)->file, path);
    }
    assert_null(st_get(f, 8));
    assert_null(st_get(f, -1));
    assert_null(st_find(f, "nope"));
    const char *prev_end = (const char *)st_get(f, 0)->data;
    for (int i = 0; i < 8; i++) { /* contiguous in insertion order */
        assert_ptr_equal(st_get(f, i)->data, prev_end);
        prev_end += st_get(f, i)->nbytes;
    }

    float out[6];
    const st_tensor *t = st_find(f, "a");
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->numel, 6);
    assert_int_equal(st_to_f32(out, t), 0);
    assert_memory_equal(out, a, sizeof a);

    t = st_find(f, "h");
    assert_int_equal(t->dtype, ST_F16);
    assert_int_equal(t->nbytes, 8);
    assert_int_equal(st_to_f32(out, t), 0);
    assert_memory_equal(out, h, sizeof h); /* all exact in fp16 */

    t = st_find(f, "bf");
    assert_int_equal(t->dtype, ST_BF16);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[1], 1);
    assert_int_equal(st_to_f32(out, t), 0);
    assert_memory_equal(out, bf, sizeof bf); /* all exact in bf16 */

    t = st_find(f, "ints");
    assert_int_equal(t->dtype, ST_I64);
    assert_memory_equal(t->data, ints, sizeof ints);
    assert_true(st_to_f32(out, t) < 0);
    check_err(path, "'ints'");

    t = st_find(f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(st_to_f32(out, t), 0);
    assert_true(out[0] == scalar);

    t = st_find(f, "empty");
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->nbytes, 0);
    assert_int_equal(t->shape[0], 0);
    assert_int_equal(t->shape[1], 5);
    assert_int_equal(st_to_f32(out, t), 0);
    t = st_find(f, "empty_i");
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->dtype, ST_I64);
    assert_memory_equal(st_find(f, "u8")->data, "xyz", 3);
    st_close(f);
}

static void test_roundtrip_set_and_memory(void **state) {
    (void)state;
    /* From memory at an odd address: F32 data then sits unaligned and must still convert. */
    float v[5] = {1.5f, -2, 1e30f, -1e-30f, 0};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "x", ST_F32, 1, (int64_t[]){5}, v), 0);
    path_t path_buf = tmp_path("mem.safetensors");
    const char *path = path_buf.s;
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    uint8_t *shifted = malloc(n + 1);
    memcpy(shifted + 1, raw, n);
    st_file *f;
    assert_int_equal(st_open_memory(&f, shifted + 1, n, "label.safetensors"), 0);
    const st_tensor *t = st_find(f, "x");
    assert_non_null(t);
    assert_string_equal(t->file, "label.safetensors");
    assert_int_equal((uintptr_t)t->data % 4, 1);
    float out[5];
    assert_int_equal(st_to_f32(out, t), 0);
    assert_memory_equal(out, v, sizeof v);
    st_close(f);
    /* Errors from memory name the label. */
    assert_true(st_open_memory(&f, shifted + 1, 12, "label.safetensors") < 0);
    assert_null(f);
    assert_non_null(strstr(ss_err(), "label.safetensors"));
    free(shifted);
    free(raw);

    /* The same file as a set, loaded, then unmapped: names and shapes survive. */
    st_set *s;
    assert_int_equal(st_set_open(&s, path), 0);
    assert_int_equal(st_set_count(s), 1);
    float *x;
    assert_int_equal(st_load_f32(&x, s, "x", 1, (int64_t[]){5}), 0);
    assert_memory_equal(x, v, sizeof v);
    free(x);
    st_set_unmap(s);
    t = st_set_get(s, 0);
    assert_string_equal(t->name, "x");
    assert_int_equal(t->shape[0], 5);
    assert_null(t->data);
    assert_ptr_equal(st_set_find(s, "x"), t);
    assert_true(st_load_f32(&x, s, "x", 1, (int64_t[]){5}) < 0);
    assert_null(x);
    check_err(path, "'x'");
    st_set_close(s);
}

/* ---- fp16 / bf16 bit patterns ---- */

static uint16_t enc(st_dtype d, float v) {
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "v", d, 0, NULL, &v), 0);
    path_t path_buf = tmp_path("enc.safetensors");
    const char *path = path_buf.s;
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    st_file *f;
    assert_int_equal(st_open(&f, path), 0);
    uint16_t h = le16(st_find(f, "v")->data);
    st_close(f);
    return h;
}

/* Decodes a raw 16-bit pattern stored as dtype d. */
static float dec(st_dtype d, uint16_t bits) {
    uint8_t raw[2] = {(uint8_t)bits, (uint8_t)(bits >> 8)};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "v", d, 1, (int64_t[]){1}, raw), 0);
    path_t path_buf = tmp_path("dec.safetensors");
    const char *path = path_buf.s;
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    st_file *f;
    assert_int_equal(st_open(&f, path), 0);
    float out;
    assert_int_equal(st_to_f32(&out, st_find(f, "v")), 0);
    st_close(f);
    return out;
}

static void test_f16_encode(void **state) {
    (void)state;
    assert_int_equal(enc(ST_F16, 1.0f), 0x3c00);
    assert_int_equal(enc(ST_F16, -2.5f), 0xc100);
    assert_int_equal(enc(ST_F16, 65504.0f), 0x7bff);
    assert_int_equal(enc(ST_F16, 0x1p-24f), 0x0001);  /* smallest subnormal */
    assert_int_equal(enc(ST_F16, 0x3ffp-24f), 0x03ff); /* largest subnormal */
    assert_int_equal(enc(ST_F16, 0x1p-14f), 0x0400);  /* smallest normal */
    assert_int_equal(enc(ST_F16, 0.0f), 0x0000);
    assert_int_equal(enc(ST_F16, -0.0f), 0x8000);
    assert_int_equal(enc(ST_F16, INFINITY), 0x7c00);
    assert_int_equal(enc(ST_F16, -INFINITY), 0xfc00);
    assert_int_equal(enc(ST_F16, 65520.0f), 0x7c00);  /* halfway past max: ties to inf */
    assert_int_equal(enc(ST_F16, 65519.0f), 0x7bff);
    assert_int_equal(enc(ST_F16, 1e10f), 0x7c00);
    assert_int_equal(enc(ST_F16, 0x1p-25f), 0x0000);      /* tie between 0 and 2^-24: even */
    assert_int_equal(enc(ST_F16, 0x1.8p-25f), 0x0001);    /* above the tie */
    assert_int_equal(enc(ST_F16, 0x3p-25f), 0x0002);      /* 1.5 ulp: tie to even 2 */
    assert_int_equal(enc(ST_F16, 0x1p-30f), 0x0000);
    assert_int_equal(enc(ST_F16, 1.0f + 0x1p-11f), 0x3c00); /* tie: down to even */
    assert_int_equal(enc(ST_F16, 1.0f + 0x3p-11f), 0x3c02); /* tie: up to even */
    assert_int_equal(enc(ST_F16, 1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    assert_int_equal(enc(ST_F16, 0x1.ffcp-15f), 0x0400); /* subnormal rounding up into normal */
    uint16_t n = enc(ST_F16, NAN);
    assert_int_equal(n & 0x7c00, 0x7c00);
    assert_int_not_equal(n & 0x3ff, 0);
    n = enc(ST_F16, bits_f32(0x7f800001)); /* signalling NaN whose payload sits in dropped bits */
    assert_int_equal(n & 0x7c00, 0x7c00);
    assert_int_not_equal(n & 0x3ff, 0);
}

static void test_f16_decode(void **state) {
    (void)state;
    assert_true(dec(ST_F16, 0x3c00) == 1.0f);
    assert_true(dec(ST_F16, 0xc100) == -2.5f);
    assert_true(dec(ST_F16, 0x7bff) == 65504.0f);
    assert_true(dec(ST_F16, 0x0001) == 0x1p-24f);
    assert_true(dec(ST_F16, 0x8001) == -0x1p-24f);
    assert_true(dec(ST_F16, 0x03ff) == 0x3ffp-24f);
    assert_true(dec(ST_F16, 0x0400) == 0x1p-14f);
    assert_int_equal(f32_bits(dec(ST_F16, 0x8000)), 0x80000000u);
    assert_true(dec(ST_F16, 0x7c00) == INFINITY);
    assert_true(dec(ST_F16, 0xfc00) == -INFINITY);
    assert_true(isnan(dec(ST_F16, 0x7e00)));
    assert_true(isnan(dec(ST_F16, 0x7c01)));
    /* All 65536 patterns: decode, re-encode, and compare (NaNs only need to stay NaN). */
    uint8_t *raw = malloc(2 * 65536);
    float *f = malloc(4 * 65536);
    for (uint32_t h = 0; h < 65536; h++) raw[2 * h] = (uint8_t)h, raw[2 * h + 1] = (uint8_t)(h >> 8);
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "all", ST_F16, 1, (int64_t[]){65536}, raw), 0);
    path_t path_buf = tmp_path("all16.safetensors");
    const char *path = path_buf.s;
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    st_file *sf;
    assert_int_equal(st_open(&sf, path), 0);
    assert_int_equal(st_to_f32(f, st_find(sf, "all")), 0);
    st_close(sf);
    w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "back", ST_F16, 1, (int64_t[]){65536}, f), 0);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    assert_int_equal(st_open(&sf, path), 0);
    const uint8_t *back = st_find(sf, "back")->data;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t b = le16(back + 2 * h);
        int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan ? !((b & 0x7c00) == 0x7c00 && (b & 0x3ff)) : b != h)
            fail_msg("half 0x%04x -> %g -> 0x%04x", h, (double)f[h], b);
        if (is_nan != !!isnan(f[h])) fail_msg("half 0x%04x NaN-ness changed", h);
    }
    st_close(sf);
    free(raw);
    free(f);
}

static void test_bf16_bits(void **state) {
    (void)state;
    assert_int_equal(enc(ST_BF16, 1.0f), 0x3f80);
    assert_int_equal(enc(ST_BF16, -2.5f), 0xc020);
    assert_int_equal(enc(ST_BF16, 65504.0f), 0x4780); /* 0x477fe000 rounds up to 65536 */
    assert_int_equal(enc(ST_BF16, INFINITY), 0x7f80);
    assert_int_equal(enc(ST_BF16, -INFINITY), 0xff80);
    assert_int_equal(enc(ST_BF16, bits_f32(0x00010000)), 0x0001); /* smallest subnormal */
    assert_int_equal(enc(ST_BF16, bits_f32(0x3f808000)), 0x3f80); /* tie: down to even */
    assert_int_equal(enc(ST_BF16, bits_f32(0x3f818000)), 0x3f82); /* tie: up to even */
    assert_int_equal(enc(ST_BF16, bits_f32(0x3f808001)), 0x3f81); /* above the tie */
    assert_int_equal(enc(ST_BF16, bits_f32(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
    uint16_t n = enc(ST_BF16, NAN);
    assert_int_equal(n & 0x7f80, 0x7f80);
    assert_int_not_equal(n & 0x7f, 0);
    n = enc(ST_BF16, bits_f32(0xff800001)); /* NaN with payload only in the low bits */
    assert_int_equal(n & 0xff80, 0xff80);
    assert_int_not_equal(n & 0x7f, 0);
    assert_true(dec(ST_BF16, 0x3f80) == 1.0f);
    assert_true(dec(ST_BF16, 0xc020) == -2.5f);
    assert_true(dec(ST_BF16, 0x0001) == bits_f32(0x00010000));
    assert_true(dec(ST_BF16, 0xff80) == -INFINITY);
    assert_true(isnan(dec(ST_BF16, 0x7fc0)));
}

static void test_f64_convert(void **state) {
    (void)state;
    const double d[7] = {1.0, 0.1, -1e300, 1e300, NAN, 3.4028235677973366e38, 1e-50};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add(w, "d", ST_F64, 1, (int64_t[]){7}, d), 0);
    path_t path_buf = tmp_path("f64.safetensors");
    const char *path = path_buf.s;
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    st_set *s;
    assert_int_equal(st_set_open(&s, path), 0);
    float *x;
    assert_int_equal(st_load_f32(&x, s, "d", 1, (int64_t[]){7}), 0);
    assert_true(x[0] == 1.0f);
    assert_true(x[1] == 0.1f);
    assert_true(x[2] == -INFINITY);
    assert_true(x[3] == INFINITY);
    assert_true(isnan(x[4]));
    assert_true(x[5] == INFINITY); /* exactly FLT_MAX + half an ulp: ties to inf */
    assert_true(x[6] == 0.0f);
    free(x);
    st_set_close(s);
}

/* ---- diffusers fixtures ---- */

typedef struct {
    const char *dir;
    int count;
    st_dtype dtype;
    int64_t proj_out[2], pos_embed[3], hidden[4];
} fixture;

static const fixture g_fixtures[] = {
    {"sd3-tiny-a", 95, ST_F32, {16, 32}, {1, 49, 32}, {2, 4, 8, 8}},
    {"sd3-tiny-a-bf16", 95, ST_BF16, {16, 32}, {1, 49, 32}, {2, 4, 8, 8}},
    {"sd35-tiny-b", 159, ST_F32, {16, 24}, {1, 64, 24}, {2, 4, 6, 10}},
};

static void check_fixture(const fixture *fx) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s/diffusion_pytorch_model.safetensors", fx->dir);
    st_file *f;
    if (st_open(&f, path) < 0) fail_msg("%s", ss_err());
    assert_int_equal(st_count(f), fx->count);
    const st_tensor *t = st_find(f, "proj_out.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, fx->dtype);
    assert_int_equal(t->ndim, 2);
    assert_memory_equal(t->shape, fx->proj_out, sizeof fx->proj_out);
    t = st_find(f, "pos_embed.pos_embed");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_memory_equal(t->shape, fx->pos_embed, sizeof fx->pos_embed);
    t = st_find(f, "transformer_blocks.0.attn.to_q.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    for (int i = 0; i < st_count(f); i++) assert_int_equal(st_get(f, i)->dtype, fx->dtype);
    st_close(f);

    /* The folder as a set, with a conversion that yields finite, non-zero weights. */
    snprintf(path, sizeof path, FIXTURES "/%s", fx->dir);
    st_set *s;
    if (st_set_open(&s, path) < 0) fail_msg("%s", ss_err());
    assert_int_equal(st_set_count(s), fx->count);
    float *w;
    assert_int_equal(st_load_f32(&w, s, "proj_out.weight", 2, fx->proj_out), 0);
    double sum = 0;
    for (int i = 0; i < fx->proj_out[0] * fx->proj_out[1]; i++) {
        assert_true(isfinite(w[i]));
        sum += fabs(w[i]);
    }
    assert_true(sum > 0);
    free(w);
    st_set_close(s);

    snprintf(path, sizeof path, FIXTURES "/%s/inputs.safetensors", fx->dir);
    assert_int_equal(st_open(&f, path), 0);
    assert_int_equal(st_count(f), 4);
    t = st_find(f, "hidden_states");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->ndim, 4);
    assert_memory_equal(t->shape, fx->hidden, sizeof fx->hidden);
    t = st_find(f, "timestep");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 2);
    assert_non_null(st_find(f, "encoder_hidden_states"));
    assert_non_null(st_find(f, "pooled_projections"));
    st_close(f);
}

static void test_fixture_a(void **state) { (void)state; check_fixture(&g_fixtures[0]); }
static void test_fixture_a_bf16(void **state) { (void)state; check_fixture(&g_fixtures[1]); }
static void test_fixture_b(void **state) { (void)state; check_fixture(&g_fixtures[2]); }

/* ---- sharded checkpoints ---- */

static void write_shard(const char *path, const char *n1, const char *n2) {
    const float v[3] = {1, 2, 3};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, n1, ST_F32, 1, (int64_t[]){3}, v), 0);
    if (n2) assert_int_equal(st_writer_add_f32(w, n2, ST_BF16, 2, (int64_t[]){1, 3}, v), 0);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
}

/* Makes folder `name` with two shards and an index; returns the folder's path. */
static const char *make_sharded(const char *name, const char *index_json, const char *b_second) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", tmp_path(name).s);
    assert_int_equal(mkdir(dir, 0700), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/s-00001.safetensors", dir);
    write_shard(p, "a", "b");
    snprintf(p, sizeof p, "%s/s-00002.safetensors", dir);
    write_shard(p, "c", b_second);
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    write_bytes(p, index_json, strlen(index_json));
    return dir;
}

#define GOOD_INDEX                                                                              \
    "{\"metadata\": {\"total_size\": 48}, \"weight_map\": {\"a\": \"s-00001.safetensors\", " \
    "\"b\": \"s-00001.safetensors\", \"c\": \"s-00002.safetensors\"}}"

static void check_sharded_set(st_set *s) {
    assert_int_equal(st_set_count(s), 3);
    const st_tensor *b = st_set_find(s, "b");
    assert_non_null(b);
    assert_int_equal(b->dtype, ST_BF16);
    assert_non_null(strstr(b->file, "s-00001.safetensors"));
    assert_non_null(strstr(st_set_find(s, "c")->file, "s-00002.safetensors"));
    float *x;
    assert_int_equal(st_load_f32(&x, s, "c", 1, (int64_t[]){3}), 0);
    assert_true(x[2] == 3.0f);
    free(x);
    st_set_unmap(s);
    assert_string_equal(st_set_find(s, "a")->name, "a");
    assert_null(st_set_find(s, "a")->data);
}

static void test_sharded(void **state) {
    (void)state;
    const char *dir = make_sharded("sharded", GOOD_INDEX, NULL);
    char p[600];
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    st_set *s;
    if (st_set_open(&s, p) < 0) fail_msg("%s", ss_err());
    check_sharded_set(s);
    st_set_close(s);
    if (st_set_open(&s, dir) < 0) fail_msg("%s", ss_err());
    check_sharded_set(s);
    st_set_close(s);
}

static void expect_set_fail(const char *path, const char *n1, const char *n2) {
    st_set *s = (st_set *)1;
    ss_err_clear();
    assert_true(st_set_open(&s, path) < 0);
    assert_null(s);
    const char *msg = ss_err();
    if (!strstr(msg, n1) || (n2 && !strstr(msg, n2)) || strchr(msg, '\n'))
        fail_msg("error '%s' lacks '%s' or '%s'", msg, n1, n2 ? n2 : "");
}

static void test_sharded_missing_shard(void **state) {
    (void)state;
    const char *dir = make_sharded(
        "missing_shard",
        "{\"weight_map\": {\"a\": \"s-00001.safetensors\", \"c\": \"s-00003.safetensors\"}}", NULL);
    expect_set_fail(dir, "index.json", "s-00003.safetensors");
}

static void test_sharded_missing_tensor(void **state) {
    (void)state;
    const char *dir = make_sharded(
        "missing_tensor",
        "{\"weight_map\": {\"a\": \"s-00001.safetensors\", \"z\": \"s-00002.safetensors\"}}", NULL);
    expect_set_fail(dir, "'z'", "s-00002.safetensors");
}

static void test_sharded_duplicate(void **state) {
    (void)state;
    const char *dir = make_sharded("dup_tensor", GOOD_INDEX, "b"); /* b in both shards */
    expect_set_fail(dir, "'b'", "s-00002.safetensors");
}

static void test_sharded_bad_index(void **state) {
    (void)state;
    const char *dir = make_sharded("bad_index", "{\"metadata\": {}}", NULL);
    expect_set_fail(dir, "index.json", "weight_map");
    dir = make_sharded("bad_index2", "{\"weight_map\": {\"a\": 3}}", NULL);
    expect_set_fail(dir, "index.json", "'a'");
    dir = make_sharded("bad_index3", "{\"weight_map\": [", NULL);
    expect_set_fail(dir, "index.json", "JSON");
    dir = make_sharded("bad_index4", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}", NULL);
    expect_set_fail(dir, "index.json", "relative");
}

/* A shard named by the index must stay inside the index's folder: any ".." component is refused,
 * naming the index and the entry, before anything outside is opened. */
static void test_sharded_escape(void **state) {
    (void)state;
    write_shard(tmp_path("outside.safetensors").s, "a", NULL); /* a valid shard one level up */
    static const char *const bad[] = {"../outside.safetensors", "./../outside.safetensors",
                                      "sub/../../outside.safetensors", "sub//..//../outside.safetensors",
                                      "..", "sub/.."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32], idx[512];
        snprintf(name, sizeof name, "escape%zu", i);
        snprintf(idx, sizeof idx, "{\"weight_map\": {\"c\": \"s-00002.safetensors\", \"a\": \"%s\"}}", bad[i]);
        const char *dir = make_sharded(name, idx, NULL);
        char sub[600];
        snprintf(sub, sizeof sub, "%s/sub", dir);
        assert_int_equal(mkdir(sub, 0700), 0);
        expect_set_fail(dir, "index.json", "'a'");
        if (!strstr(ss_err(), "'..'") && !strstr(ss_err(), bad[i])) fail_msg("error names neither: %s", ss_err());
        print_message("  refused: %s\n", ss_err());
    }
    /* inside the folder: a subfolder, a name starting with "..", and a symlink (Hugging Face cache
     * snapshots link every file to ../../blobs/) still load */
    const char *dir = make_sharded("inside",
                                   "{\"weight_map\": {\"a\": \"sub/x.safetensors\", \"b\": \"..b.safetensors\", "
                                   "\"c\": \"link.safetensors\"}}", NULL);
    char p[600], target[600];
    snprintf(p, sizeof p, "%s/sub", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/sub/x.safetensors", dir);
    write_shard(p, "a", NULL);
    snprintf(p, sizeof p, "%s/..b.safetensors", dir);
    write_shard(p, "b", NULL);
    snprintf(target, sizeof target, "%s", tmp_path("blob-c.safetensors").s);
    write_shard(target, "c", NULL);
    snprintf(p, sizeof p, "%s/link.safetensors", dir);
    assert_int_equal(symlink(target, p), 0);
    st_set *s;
    if (st_set_open(&s, dir) < 0) fail_msg("%s", ss_err());
    assert_int_equal(st_set_count(s), 3);
    st_set_close(s);
}

static void test_set_folder_lookup(void **state) {
    (void)state;
    path_t dir_buf = tmp_path("empty_folder");
    const char *dir = dir_buf.s;
    assert_int_equal(mkdir(dir, 0700), 0);
    expect_set_fail(dir, "empty_folder", "diffusion_pytorch_model");
    expect_set_fail(tmp_path("no_such_thing").s, "no_such_thing", NULL);
    /* model.safetensors is the fallback name. */
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_shard(p, "m", NULL);
    st_set *s;
    assert_int_equal(st_set_open(&s, dir), 0);
    assert_non_null(st_set_find(s, "m"));
    st_set_close(s);
    /* diffusion_pytorch_model.safetensors wins over model.safetensors. */
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", dir);
    write_shard(p, "d", NULL);
    assert_int_equal(st_set_open(&s, dir), 0);
    assert_non_null(st_set_find(s, "d"));
    assert_null(st_set_find(s, "m"));
    st_set_close(s);
}

/* ---- st_load_f32 errors ---- */

static void test_load_errors(void **state) {
    (void)state;
    path_t path_buf = tmp_path("load.safetensors");
    const char *path = path_buf.s;
    const float v[6] = {0};
    const int64_t iv[2] = {1, 2};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "attn.w", ST_F32, 2, (int64_t[]){2, 3}, v), 0);
    assert_int_equal(st_writer_add(w, "ids", ST_I64, 1, (int64_t[]){2}, iv), 0);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
    st_set *s;
    assert_int_equal(st_set_open(&s, path), 0);
    float *x = (float *)1;
    assert_int_equal(st_load_f32(&x, s, "attn.nope", 2, (int64_t[]){2, 3}), SS_EMISSING);
    assert_null(x);
    check_err(path, "'attn.nope'");
    assert_int_equal(st_load_f32(&x, s, "attn.w", 2, (int64_t[]){3, 2}), SS_ESHAPE);
    check_err(path, "'attn.w'");
    assert_non_null(strstr(ss_err(), "[2, 3]"));
    assert_non_null(strstr(ss_err(), "[3, 2]"));
    assert_int_equal(st_load_f32(&x, s, "attn.w", 1, (int64_t[]){6}), SS_ESHAPE);
    check_err(path, "[6]");
    assert_true(st_load_f32(&x, s, "ids", 1, (int64_t[]){2}) < 0);
    check_err(path, "'ids'");
    assert_null(x);
    st_set_close(s);
}

/* ---- writer errors and atomic save ---- */

static void test_writer_errors(void **state) {
    (void)state;
    const float v[2] = {1, 2};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "x", ST_F32, 1, (int64_t[]){2}, v), 0);
    assert_int_equal(st_writer_add_f32(w, "x", ST_F16, 1, (int64_t[]){2}, v), SS_EARG);
    assert_non_null(strstr(ss_err(), "'x'"));
    assert_true(st_writer_add_f32(w, "__metadata__", ST_F32, 1, (int64_t[]){2}, v) < 0);
    assert_true(st_writer_add_f32(w, "neg", ST_F32, 1, (int64_t[]){-2}, v) < 0);
    assert_true(st_writer_add_f32(w, "i", ST_I64, 1, (int64_t[]){2}, v) < 0);
    assert_true(st_writer_add_f32(w, "rank", ST_F32, 9, (int64_t[9]){1}, v) < 0);
    assert_true(st_writer_add(w, "big", ST_F64, 2, (int64_t[]){INT64_MAX, 2}, v) < 0);
    assert_true(st_writer_add(w, "nodata", ST_F32, 1, (int64_t[]){2}, NULL) < 0);
    assert_true(st_writer_add(w, "\xff\xfe", ST_F32, 1, (int64_t[]){2}, v) < 0);
    assert_true(st_writer_set_metadata(w, "k", "\xff") < 0);

    /* A failed save (cut short by the file-size limit) leaves an existing file alone and no
     * temporary file behind. */
    path_t path_buf = tmp_path("atomic.safetensors");
    const char *path = path_buf.s;
    write_bytes(path, "precious", 8);
    {
        void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
        struct rlimit old, lim;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
        lim = old;
        lim.rlim_cur = 16;
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
        const int rc = st_writer_save(w, path);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
        signal(SIGXFSZ, old_handler);
        assert_true(rc < 0);
    }
    check_err(path, NULL);
    assert_false(has_tmp_of("atomic.safetensors"));
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(b, "precious", 8);
    free(b);
    assert_true(st_writer_save(w, tmp_path("no/such/dir/x.safetensors").s) < 0);
    /* Renaming over a folder fails after the tmp was written: it must be removed. */
    assert_int_equal(mkdir(tmp_path("isdir.safetensors").s, 0700), 0);
    assert_true(st_writer_save(w, tmp_path("isdir.safetensors").s) < 0);
    assert_false(has_tmp_of("isdir.safetensors"));
    /* And a good save replaces the file. */
    if (st_writer_save(w, path) < 0) fail_msg("%s", ss_err());
    st_file *f;
    assert_int_equal(st_open(&f, path), 0);
    assert_int_equal(st_count(f), 1);
    st_close(f);
    st_writer_free(w);

    /* An empty writer makes a valid, empty file. */
    w = st_writer_new();
    assert_int_equal(st_writer_save(w, tmp_path("empty.safetensors").s), 0);
    st_writer_free(w);
    assert_int_equal(st_open(&f, tmp_path("empty.safetensors").s), 0);
    assert_int_equal(st_count(f), 0);
    assert_null(st_find(f, "x"));
    st_close(f);
}

/* ---- damaged files ---- */

typedef struct {
    const char *name;   /* test name and file name */
    const char *header; /* JSON header text */
    size_t ndata;       /* zero bytes of data after the header */
    const char *needle; /* must appear in the error */
} damaged;

#define E(dt, sh, off) "{\"dtype\": " dt ", \"shape\": " sh ", \"data_offsets\": " off "}"
static const damaged g_damaged[] = {
    {"not_json", "{\"w\": ", 0, "not valid JSON"},
    {"not_json_text", "hello world", 0, "not valid JSON"},
    {"json_array", "[1, 2, 3]", 0, "not an object"},
    {"json_string", "\"w\"", 0, "JSON"},
    {"trailing_garbage", "{} x", 0, "JSON"},
    {"duplicate_key", "{\"w\": " E("\"F32\"", "[1]", "[0, 4]") ", \"w\": " E("\"F32\"", "[1]", "[4, 8]") "}", 8, "duplicate"},
    {"nul_in_name", "{\"w\\u0000x\": " E("\"F32\"", "[1]", "[0, 4]") "}", 4, "JSON"},
    {"offsets_past_end", "{\"w.past\": " E("\"F32\"", "[2]", "[8, 16]") "}", 8, "'w.past'"},
    {"offsets_huge", "{\"w.huge\": " E("\"U8\"", "[2]", "[9223372036854775805, 9223372036854775807]") "}", 8, "'w.huge'"},
    {"begin_after_end", "{\"w.rev\": " E("\"F32\"", "[1]", "[8, 4]") "}", 8, "'w.rev'"},
    {"overlap", "{\"a\": " E("\"F32\"", "[2]", "[0, 8]") ", \"b\": " E("\"F32\"", "[2]", "[4, 12]") "}", 12, "overlaps tensor 'a'"},
    {"overlap_same", "{\"b\": " E("\"F32\"", "[2]", "[0, 8]") ", \"a\": " E("\"I32\"", "[2]", "[0, 8]") "}", 8, "overlaps"},
    {"overlap_inside", "{\"big\": " E("\"U8\"", "[16]", "[0, 16]") ", \"c\": " E("\"U8\"", "[2]", "[10, 12]") ", \"d\": " E("\"U8\"", "[2]", "[4, 6]") "}", 16, "overlaps tensor 'big'"},
    {"unknown_dtype", "{\"w.q\": " E("\"F8_E4M3\"", "[1]", "[0, 1]") "}", 1, "'w.q': unknown dtype"},
    {"lowercase_dtype", "{\"w.q\": " E("\"f32\"", "[1]", "[0, 4]") "}", 4, "'w.q'"},
    {"missing_dtype", "{\"w.m\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "'w.m': missing \"dtype\""},
    {"missing_shape", "{\"w.m\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "'w.m': missing \"shape\""},
    {"missing_offsets", "{\"w.m\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "'w.m': missing \"data_offsets\""},
    {"dtype_not_string", "{\"w.t\": " E("5", "[1]", "[0, 4]") "}", 4, "'w.t'"},
    {"shape_not_array", "{\"w.t\": " E("\"F32\"", "\"[1]\"", "[0, 4]") "}", 4, "'w.t'"},
    {"shape_real", "{\"w.t\": " E("\"F32\"", "[1.0]", "[0, 4]") "}", 4, "'w.t'"},
    {"shape_bool", "{\"w.t\": " E("\"F32\"", "[true]", "[0, 4]") "}", 4, "'w.t'"},
    {"shape_null", "{\"w.t\": " E("\"F32\"", "null", "[0, 4]") "}", 4, "'w.t'"},
    {"offsets_object", "{\"w.t\": " E("\"F32\"", "[1]", "{\"b\": 0}") "}", 4, "'w.t'"},
    {"offsets_three", "{\"w.t\": " E("\"F32\"", "[1]", "[0, 4, 8]") "}", 8, "'w.t'"},
    {"offsets_one", "{\"w.t\": " E("\"F32\"", "[1]", "[4]") "}", 8, "'w.t'"},
    {"offsets_strings", "{\"w.t\": " E("\"F32\"", "[1]", "[\"0\", \"4\"]") "}", 4, "'w.t'"},
    {"offsets_negative", "{\"w.t\": " E("\"F32\"", "[1]", "[-4, 0]") "}", 4, "'w.t'"},
    {"offsets_real", "{\"w.t\": " E("\"F32\"", "[1]", "[0, 4.0]") "}", 4, "'w.t'"},
    {"entry_not_object", "{\"w.t\": [\"F32\", [1], [0, 4]]}", 4, "'w.t'"},
    {"metadata_not_object", "{\"__metadata__\": [\"a\"]}", 0, "__metadata__"},
    {"metadata_value_int", "{\"__metadata__\": {\"epoch\": 3}}", 0, "'epoch'"},
    {"byte_mismatch", "{\"w.b\": " E("\"F32\"", "[4, 8]", "[0, 96]") "}", 96, "hold 96 bytes but shape [4, 8] of F32 needs 128"},
    {"byte_mismatch_zero", "{\"w.b\": " E("\"F16\"", "[0, 8]", "[0, 2]") "}", 2, "'w.b'"},
    {"overflow_int64", "{\"w.o\": " E("\"U8\"", "[4294967296, 4294967296]", "[0, 0]") "}", 0, "'w.o'"},
    {"overflow_int64_zero", "{\"w.o\": " E("\"U8\"", "[4294967296, 4294967296, 0]", "[0, 0]") "}", 0, "'w.o'"},
    {"overflow_max", "{\"w.o\": " E("\"U8\"", "[9223372036854775807, 2]", "[0, 0]") "}", 0, "'w.o'"},
    {"overflow_size", "{\"w.o\": " E("\"F64\"", "[4611686018427387904]", "[0, 0]") "}", 0, "'w.o'"},
    {"overflow_size2", "{\"w.o\": " E("\"F32\"", "[9223372036854775807]", "[0, 4]") "}", 4, "'w.o'"},
    {"dim_too_big", "{\"w.o\": " E("\"U8\"", "[18446744073709551616]", "[0, 0]") "}", 0, "JSON"},
    {"too_many_dims", "{\"w.d\": " E("\"F32\"", "[1, 1, 1, 1, 1, 1, 1, 1, 1]", "[0, 4]") "}", 4, "'w.d': shape has 9 dims"},
    {"negative_dim", "{\"w.n\": " E("\"F32\"", "[-1, 4]", "[0, 4]") "}", 4, "'w.n': shape[0] is negative"},
    {"newline_in_name", "{\"bad\\nname\": " E("\"F32\"", "[1]", "[0, 8]") "}", 8, "'bad?name'"},
    {"bad_second_tensor", "{\"ok\": " E("\"F32\"", "[1]", "[0, 4]") ", \"bad.2\": " E("\"F32\"", "[1]", "[4, 7]") "}", 8, "'bad.2'"},
};
#undef E
#define N_DAMAGED (sizeof g_damaged / sizeof *g_damaged)

static void test_damaged(void **state) {
    const damaged *c = *state;
    char name[128];
    snprintf(name, sizeof name, "%s.safetensors", c->name);
    path_t path_buf = tmp_path(name);
    const char *path = path_buf.s;
    write_st(path, c->header, c->ndata);
    expect_open_fail(path, c->needle);
    /* The same bytes through the memory entry point fail the same way. */
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    st_file *f;
    assert_true(st_open_memory(&f, b, n, path) < 0);
    check_err(path, c->needle);
    free(b);
    remove(path);
}

static void test_byte_mismatch_message(void **state) {
    (void)state;
    path_t path_buf = tmp_path("model.safetensors");
    const char *path = path_buf.s;
    write_st(path, "{\"attn.to_q.weight\": {\"dtype\": \"F32\", \"shape\": [4, 8], \"data_offsets\": [0, 96]}}", 96);
    st_file *f;
    assert_int_equal(st_open(&f, path), SS_EFORMAT);
    char want[800];
    snprintf(want, sizeof want,
             "%s: tensor 'attn.to_q.weight': data_offsets [0, 96] hold 96 bytes but shape [4, 8] of F32 needs 128",
             path);
    assert_string_equal(ss_err(), want);
}

/* Valid oddities that must be accepted. */
static void test_accepted_oddities(void **state) {
    (void)state;
    path_t path_buf = tmp_path("odd.safetensors");
    const char *path = path_buf.s;
    /* Empty tensors may sit anywhere, even inside another range; gaps and trailing bytes are fine;
     * unknown entry fields are ignored; an empty header object is valid. */
    write_st(path, "{\"big\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [4, 12], \"x\": 1}, "
                   "\"e1\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [6, 6]}, "
                   "\"e2\": {\"dtype\": \"F32\", \"shape\": [3, 0], \"data_offsets\": [6, 6]}, "
                   "\"e3\": {\"dtype\": \"BOOL\", \"shape\": [0], \"data_offsets\": [20, 20]}, "
                   "\"__metadata__\": {}}",
             20);
    st_file *f;
    if (st_open(&f, path) < 0) fail_msg("%s", ss_err());
    assert_int_equal(st_count(f), 4);
    assert_int_equal(st_find(f, "e2")->numel, 0);
    st_close(f);
    write_st(path, "{}", 0);
    assert_int_equal(st_open(&f, path), 0);
    assert_int_equal(st_count(f), 0);
    st_close(f);
    write_st(path, "  {}  ", 3);
    assert_int_equal(st_open(&f, path), 0);
    st_close(f);
}

static void test_truncated(void **state) {
    (void)state;
    const float v[16] = {0};
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_add_f32(w, "w.first", ST_F32, 1, (int64_t[]){16}, v), 0);
    assert_int_equal(st_writer_add_f32(w, "w.last", ST_F32, 2, (int64_t[]){2, 8}, v), 0);
    path_t good_buf = tmp_path("good.safetensors");
    const char *good = good_buf.s;
    assert_int_equal(st_writer_save(w, good), 0);
    st_writer_free(w);
    size_t n;
    uint8_t *b = read_bytes(good, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];

    path_t p_buf = tmp_path("cut_header.safetensors");
    const char *p = p_buf.s;
    write_bytes(p, b, 8 + hl / 2);
    expect_open_fail(p, "past the end");
    p_buf = tmp_path("cut_data.safetensors");
    write_bytes(p, b, n - 4);
    expect_open_fail(p, "'w.last'");
    p_buf = tmp_path("cut_len.safetensors");
    write_bytes(p, b, 5);
    expect_open_fail(p, "too short");
    p_buf = tmp_path("cut_all.safetensors");
    write_bytes(p, b, 0);
    expect_open_fail(p, "too short");
    free(b);
}

static void test_header_length(void **state) {
    (void)state;
    path_t p_buf = tmp_path("hlen_past.safetensors");
    const char *p = p_buf.s;
    write_st_raw(p, "{}", 3, 0);
    expect_open_fail(p, "past the end");
    p_buf = tmp_path("hlen_zero.safetensors");
    write_st_raw(p, "{}", 0, 0);
    expect_open_fail(p, "less than 2");
    p_buf = tmp_path("hlen_one.safetensors");
    write_st_raw(p, "{}", 1, 0);
    expect_open_fail(p, "less than 2");
    p_buf = tmp_path("hlen_2_63.safetensors");
    write_st_raw(p, "{}", UINT64_C(1) << 63, 0);
    expect_open_fail(p, "past the end");
    p_buf = tmp_path("hlen_max.safetensors");
    write_st_raw(p, "{}", UINT64_MAX, 0);
    expect_open_fail(p, "past the end");
    p_buf = tmp_path("hlen_short.safetensors"); /* length stops inside the JSON */
    write_st_raw(p, "{\"w\": {}}", 5, 0);
    expect_open_fail(p, "JSON");
}

static void test_open_io_errors(void **state) {
    (void)state;
    expect_open_fail(tmp_path("does_not_exist.safetensors").s, "cannot open");
    path_t d_buf = tmp_path("a_dir.safetensors");
    const char *d = d_buf.s;
    assert_int_equal(mkdir(d, 0700), 0);
    expect_open_fail(d, NULL);
}

int main(void) {
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_roundtrip_set_and_memory),
        cmocka_unit_test(test_f16_encode),
        cmocka_unit_test(test_f16_decode),
        cmocka_unit_test(test_bf16_bits),
        cmocka_unit_test(test_f64_convert),
        cmocka_unit_test(test_fixture_a),
        cmocka_unit_test(test_fixture_a_bf16),
        cmocka_unit_test(test_fixture_b),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_sharded_missing_shard),
        cmocka_unit_test(test_sharded_missing_tensor),
        cmocka_unit_test(test_sharded_duplicate),
        cmocka_unit_test(test_sharded_bad_index),
        cmocka_unit_test(test_sharded_escape),
        cmocka_unit_test(test_set_folder_lookup),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_byte_mismatch_message),
        cmocka_unit_test(test_accepted_oddities),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_open_io_errors),
    };
    enum { N_FIXED = sizeof fixed / sizeof *fixed };
    /* One test per damaged-file case, named after it. */
    static char names[N_DAMAGED][96];
    struct CMUnitTest tests[N_FIXED + N_DAMAGED];
    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < N_DAMAGED; i++) {
        snprintf(names[i], sizeof names[i], "damaged_%s", g_damaged[i].name);
        tests[N_FIXED + i] = (struct CMUnitTest){
            .name = names[i], .test_func = test_damaged, .initial_state = (void *)&g_damaged[i]};
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
