#include "fid_weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "core/err.h"
#include "metric/inception.h"

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

int tc_inception_hash_getter(void *ctx, const char *name, int ndim, const int64_t *shape, float **out) {
    int *count = ctx;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    const size_t len = strlen(name);
#define ENDS(suf) (len >= strlen(suf) && !strcmp(name + len - strlen(suf), suf))
    const int kind = ENDS("conv.weight") ? 0 : ENDS("bn.weight") || ENDS("bn.running_var") ? 1
                     : ENDS("bn.bias") || ENDS("bn.running_mean") ? 2 : -1;
#undef ENDS
    if (kind < 0 || (kind == 0 && ndim != 4)) return ss_fail(SS_EFORMAT, "hash weights: unexpected tensor %s", name);
    float *w = malloc(n * sizeof *w);
    if (!w) return ss_fail(SS_ENOMEM, "out of memory");
    const uint64_t h = fnv1a(name);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = h + i + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const double u = (double)(z >> 40) / 16777216.0 * 2.0 - 1.0;
        const double v = kind == 0 ? u * sqrt(6.0 / (double)(shape[1] * shape[2] * shape[3])) : kind == 1 ? 1.0 + 0.2 * u : 0.02 * u;
        w[i] = (float)v;
    }
    if (count) (*count)++;
    *out = w;
    return 0;
}

static int recording_getter(void *ctx, const char *name, int ndim, const int64_t *shape, float **out) {
    tc_tensors *r = ctx;
    int rc = tc_inception_hash_getter(NULL, name, ndim, shape, out);
    if (rc < 0) return rc;
    if (r->n >= 599 || ndim > 4) return ss_fail(SS_EARG, "hash weights: too many tensors");
    tc_tensor *t = &r->t[r->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i], t->n *= (size_t)shape[i];
    if (!(t->data = malloc(t->n * sizeof(float)))) return ss_fail(SS_ENOMEM, "out of memory");
    memcpy(t->data, *out, t->n * sizeof(float));
    return 0;
}

int tc_inception_tensors(tc_tensors *rec) {
    memset(rec, 0, sizeof *rec);
    inception_net *net;
    if (inception_load_with(&net, recording_getter, rec) < 0) return -1;
    inception_free(net);
    tc_tensor *fc = &rec->t[rec->n++];
    snprintf(fc->name, sizeof fc->name, "fc.weight");
    fc->ndim = 2, fc->shape[0] = 1008, fc->shape[1] = 2048, fc->n = 1008 * 2048;
    if (!(fc->data = calloc(fc->n, sizeof(float)))) return ss_fail(SS_ENOMEM, "out of memory");
    return 0;
}

void tc_tensors_free(tc_tensors *rec) {
    for (int k = 0; k < rec->n; k++) free(rec->t[k].data);
    rec->n = 0;
}

typedef struct {
    unsigned char *p;
    size_t n, cap;
    int bad;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = (b->n + n) * 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->bad = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_c(buf *b, int c) {
    unsigned char x = (unsigned char)c;
    put(b, &x, 1);
}
static void put_str(buf *b, const char *s) { /* BINUNICODE */
    uint32_t n = (uint32_t)strlen(s);
    put_c(b, 'X');
    put(b, &n, 4);
    put(b, s, n);
}
static void put_int(buf *b, int64_t v) { /* BININT */
    int32_t x = (int32_t)v;
    put_c(b, 'J');
    put(b, &x, 4);
}
static void put_global(buf *b, const char *mod, const char *name) {
    put_c(b, 'c');
    put(b, mod, strlen(mod));
    put_c(b, '\n');
    put(b, name, strlen(name));
    put_c(b, '\n');
}

int tc_write_pth(const char *path, const tc_tensor *t, int n, int skip) {
    buf pk = {0};
    put_c(&pk, 0x80), put_c(&pk, 2);
    put_global(&pk, "collections", "OrderedDict");
    put_c(&pk, ')'), put_c(&pk, 'R'), put_c(&pk, '(');
    for (int k = skip; k < n; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        put_str(&pk, t[k].name);
        put_global(&pk, "torch._utils", "_rebuild_tensor_v2");
        put_c(&pk, '('), put_c(&pk, '(');
        put_str(&pk, "storage");
        put_global(&pk, "torch", "FloatStorage");
        put_str(&pk, key);
        put_str(&pk, "cpu");
        put_int(&pk, (int64_t)t[k].n);
        put_c(&pk, 't'), put_c(&pk, 'Q');
        put_int(&pk, 0);
        put_c(&pk, '(');
        for (int i = 0; i < t[k].ndim; i++) put_int(&pk, t[k].shape[i]);
        put_c(&pk, 't'), put_c(&pk, '(');
        int64_t stride = 1, st[4];
        for (int i = t[k].ndim - 1; i >= 0; i--) st[i] = stride, stride *= t[k].shape[i];
        for (int i = 0; i < t[k].ndim; i++) put_int(&pk, st[i]);
        put_c(&pk, 't'), put_c(&pk, 0x89);
        put_global(&pk, "collections", "OrderedDict");
        put_c(&pk, ')'), put_c(&pk, 'R'), put_c(&pk, 't'), put_c(&pk, 'R');
    }
    put_c(&pk, 'u'), put_c(&pk, '.');
    int err, rc = pk.bad ? -1 : 0;
    zip_t *z = rc ? NULL : zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!z) rc = -1;
    zip_source_t *src = z ? zip_source_buffer(z, pk.p, pk.n, 0) : NULL;
    zip_int64_t idx = src ? zip_file_add(z, "archive/data.pkl", src, ZIP_FL_OVERWRITE) : -1;
    if (idx < 0) rc = -1;
    else zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0);
    for (int k = skip; k < n && !rc; k++) {
        char name[64];
        snprintf(name, sizeof name, "archive/data/%d", k);
        src = zip_source_buffer(z, t[k].data, t[k].n * sizeof(float), 0);
        idx = src ? zip_file_add(z, name, src, ZIP_FL_OVERWRITE) : -1;
        if (idx < 0) rc = -1;
        else zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0);
    }
    src = z && !rc ? zip_source_buffer(z, "3\n", 2, 0) : NULL;
    if (!rc && (!src || zip_file_add(z, "archive/version", src, ZIP_FL_OVERWRITE) < 0)) rc = -1;
    if (z && zip_close(z) != 0) {
        rc = -1;
        zip_discard(z);
    }
    free(pk.p);
    return rc ? ss_fail(SS_EIO, "%s: cannot write the test .pth", path) : 0;
}

int tc_write_inception_pth(const char *path) {
    tc_tensors *rec = calloc(1, sizeof *rec);
    if (!rec) return ss_fail(SS_ENOMEM, "out of memory");
    int rc = tc_inception_tensors(rec);
    if (!rc) rc = tc_write_pth(path, rec->t, rec->n, 0);
    tc_tensors_free(rec);
    free(rec);
    return rc;
}
