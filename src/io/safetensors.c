/* safetensors reader (mmap + strict validation) and writer. See safetensors.h. */
#include "io/safetensors.h"

#include "core/err.h"
#include "io/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes are used in place (F32 memcpy'd straight into floats), which needs a
 * little-endian host like the format itself. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* ------------------------------------------------------------------------------------------ */
/* dtypes                                                                                      */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2},  [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};

size_t st_dtype_size(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].size : 0; }

const char *st_dtype_name(st_dtype d) {
    return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].name : "?";
}

int st_dtype_parse(const char *s, st_dtype *out) {
    for (int d = 0; s && d < ST_DTYPE_COUNT; d++) {
        if (strcmp(s, st_dtypes[d].name) == 0) {
            *out = (st_dtype)d;
            return 0;
        }
    }
    return -1;
}

static int st_is_float(st_dtype d) { return d == ST_F32 || d == ST_F16 || d == ST_BF16 || d == ST_F64; }

/* ------------------------------------------------------------------------------------------ */
/* error helpers                                                                               */

/* Names and paths come from untrusted files: control characters are flattened so every
 * message stays on one line. */
static int st_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int st_fail(int code, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return ss_fail(code, "%s", buf);
}

/* A name cut short for messages, so a huge name cannot push the problem out of the buffer.
 * Returned by value: C11 keeps the temporary alive to the end of the full expression. */
typedef struct {
    char s[160];
} st_str;

static st_str st_short(const char *s) {
    st_str r;
    size_t n = strlen(s);
    if (n < sizeof r.s) {
        memcpy(r.s, s, n + 1);
    } else {
        memcpy(r.s, s, sizeof r.s - 4);
        memcpy(r.s + sizeof r.s - 4, "...", 4);
    }
    return r;
}

static st_str st_shape_str(int ndim, const int64_t *shape) {
    st_str r;
    size_t k = 0;
    r.s[k++] = '[';
    for (int i = 0; i < ndim && k < sizeof r.s - 24; i++)
        k += (size_t)snprintf(r.s + k, sizeof r.s - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    snprintf(r.s + k, sizeof r.s - k, "]");
    return r;
}

static const char *st_json_type(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = ss_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* one file                                                                                    */

struct st_file {
    char *path;
    void *map; /* NULL for st_open_memory or after unmapping */
    size_t map_len;
    st_tensor *t;
    int n;
    const st_tensor **by_name; /* sorted by name, for bsearch */
    char **meta;               /* key, value, key, value, ... */
    int nmeta;
};

static int st_cmp_name(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int st_cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static const st_tensor *st_lookup(const st_tensor *const *by_name, int n, const char *name) {
    if (!name || n <= 0) return NULL;
    st_tensor key = {.name = name};
    const st_tensor *kp = &key;
    const st_tensor *const *hit = bsearch(&kp, by_name, (size_t)n, sizeof *by_name, st_cmp_name);
    return hit ? *hit : NULL;
}

/* Reads a non-negative JSON integer field element. */
static int st_json_uint(const char *path, const char *name, const char *what, size_t i,
                        const json_t *j, int64_t *out) {
    if (!json_is_integer(j))
        return st_fail(SS_EFORMAT, "%s: tensor '%s': %s[%zu] is a JSON %s, not an integer", path,
                       st_short(name).s, what, i, st_json_type(j));
    json_int_t v = json_integer_value(j);
    if (v < 0)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': %s[%zu] is negative (%lld)", path,
                       st_short(name).s, what, i, (long long)v);
    *out = (int64_t)v;
    return 0;
}

static int st_parse_shape(const char *path, st_tensor *t, const json_t *js) {
    const char *nm = t->name;
    if (!js) return st_fail(SS_EFORMAT, "%s: tensor '%s': missing \"shape\"", path, st_short(nm).s);
    if (!json_is_array(js))
        return st_fail(SS_EFORMAT, "%s: tensor '%s': \"shape\" is a JSON %s, not an array", path,
                       st_short(nm).s, st_json_type(js));
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': shape has %zu dims, at most %d are supported",
                       path, st_short(nm).s, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        if (st_json_uint(path, nm, "shape", i, json_array_get(js, i), &t->shape[i]) < 0)
            return SS_EFORMAT;
        /* Checked step by step, so [2^40, 2^40, 0] is refused too: no product may overflow. */
        if (__builtin_mul_overflow(numel, t->shape[i], &numel))
            return st_fail(SS_EFORMAT, "%s: tensor '%s': shape %s overflows a 64-bit element count",
                           path, st_short(nm).s, st_shape_str((int)i + 1, t->shape).s);
    }
    t->numel = numel;
    return 0;
}

static int st_parse_entry(const char *path, st_tensor *t, const json_t *v, const uint8_t *data,
                          size_t data_size) {
    const char *nm = t->name;
    if (!json_is_object(v))
        return st_fail(SS_EFORMAT, "%s: tensor '%s': entry is a JSON %s, not an object", path,
                       st_short(nm).s, st_json_type(v));

    const json_t *jd = json_object_get(v, "dtype");
    if (!jd) return st_fail(SS_EFORMAT, "%s: tensor '%s': missing \"dtype\"", path, st_short(nm).s);
    if (!json_is_string(jd))
        return st_fail(SS_EFORMAT, "%s: tensor '%s': \"dtype\" is a JSON %s, not a string", path,
                       st_short(nm).s, st_json_type(jd));
    if (st_dtype_parse(json_string_value(jd), &t->dtype) < 0)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': unknown dtype \"%s\"", path, st_short(nm).s,
                       st_short(json_string_value(jd)).s);

    if (st_parse_shape(path, t, json_object_get(v, "shape")) < 0) return SS_EFORMAT;

    const json_t *jo = json_object_get(v, "data_offsets");
    if (!jo)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': missing \"data_offsets\"", path, st_short(nm).s);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]",
                       path, st_short(nm).s);
    int64_t off[2];
    for (size_t i = 0; i < 2; i++)
        if (st_json_uint(path, nm, "data_offsets", i, json_array_get(jo, i), &off[i]) < 0)
            return SS_EFORMAT;
    long long b = off[0], e = off[1];
    if (b > e)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] begin after end", path,
                       st_short(nm).s, b, e);

    size_t need;
    if ((uint64_t)t->numel > SIZE_MAX || ss_mul_size((size_t)t->numel, st_dtype_size(t->dtype), &need))
        return st_fail(SS_EFORMAT, "%s: tensor '%s': shape %s of %s overflows a byte count", path,
                       st_short(nm).s, st_shape_str(t->ndim, t->shape).s, st_dtype_name(t->dtype));
    if ((uint64_t)(e - b) != need)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes but shape %s of %s needs %zu",
                       path, st_short(nm).s, b, e, e - b, st_shape_str(t->ndim, t->shape).s,
                       st_dtype_name(t->dtype), need);
    if ((uint64_t)e > data_size)
        return st_fail(SS_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] run past the data section (%zu bytes)",
                       path, st_short(nm).s, b, e, data_size);
    t->data = data + b;
    t->nbytes = need;
    t->file = path;
    return 0;
}

static int st_parse_metadata(st_file *f, const json_t *v) {
    if (!json_is_object(v))
        return st_fail(SS_EFORMAT, "%s: __metadata__ is a JSON %s, not an object", f->path,
                       st_json_type(v));
    f->meta = ss_calloc(2 * json_object_size(v), sizeof *f->meta);
    if (!f->meta) return SS_ENOMEM;
    const char *k;
    json_t *s;
    json_object_foreach((json_t *)v, k, s) {
        if (!json_is_string(s))
            return st_fail(SS_EFORMAT, "%s: __metadata__ '%s' is a JSON %s, not a string", f->path,
                           st_short(k).s, st_json_type(s));
        char *kc = st_strdup(k), *vc = kc ? st_strdup(json_string_value(s)) : NULL;
        if (!vc) {
            free(kc);
            return SS_ENOMEM;
        }
        f->meta[2 * f->nmeta] = kc;
        f->meta[2 * f->nmeta + 1] = vc;
        f->nmeta++;
    }
    return 0;
}

/* Sorts by_name by data position to find overlaps, then by name for lookups. */
static int st_index(st_file *f) {
    int n = f->n;
    for (int i = 0; i < n; i++) f->by_name[i] = &f->t[i];
    qsort(f->by_name, (size_t)n, sizeof *f->by_name, st_cmp_begin);
    const st_tensor *reach = NULL; /* the range ending furthest so far */
    for (int i = 0; i < n; i++) {
        const st_tensor *t = f->by_name[i];
        if (t->nbytes == 0) continue; /* empty ranges share no bytes with anything */
        const char *b = t->data;
        if (reach && b < (const char *)reach->data + reach->nbytes)
            return st_fail(SS_EFORMAT, "%s: tensor '%s': data range overlaps tensor '%s'", f->path,
                           st_short(t->name).s, st_short(reach->name).s);
        reach = t;
    }
    qsort(f->by_name, (size_t)n, sizeof *f->by_name, st_cmp_name);
    for (int i = 1; i < n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return st_fail(SS_EFORMAT, "%s: tensor '%s' appears twice", f->path,
                           st_short(f->by_name[i]->name).s);
    return 0;
}

static int st_parse_root(st_file *f, const json_t *root, const uint8_t *data, size_t data_size) {
    if (!json_is_object(root))
        return st_fail(SS_EFORMAT, "%s: header is a JSON %s, not an object", f->path,
                       st_json_type(root));
    size_t cap = json_object_size(root);
    if (cap > INT_MAX) return st_fail(SS_EFORMAT, "%s: too many tensors (%zu)", f->path, cap);
    f->t = ss_calloc(cap, sizeof *f->t);
    f->by_name = ss_calloc(cap, sizeof *f->by_name);
    if (!f->t || !f->by_name) return SS_ENOMEM;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            int rc = st_parse_metadata(f, v);
            if (rc < 0) return rc;
            continue;
        }
        st_tensor *t = &f->t[f->n];
        if (!(t->name = st_strdup(key))) return SS_ENOMEM;
        f->n++; /* counted now so st_close frees the name on any later failure */
        if (st_parse_entry(f->path, t, v, data, data_size) < 0) return SS_EFORMAT;
    }
    return st_index(f);
}

static int st_parse(st_file *f, const uint8_t *buf, size_t size) {
    if (size < 8)
        return st_fail(SS_EFORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                       f->path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    if (hlen < 2)
        return st_fail(SS_EFORMAT, "%s: header length %llu is less than 2", f->path,
                       (unsigned long long)hlen);
    if (hlen > size - 8)
        return st_fail(SS_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                       f->path, (unsigned long long)hlen, size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(SS_EFORMAT, "%s: header is not valid JSON: %s (header byte %d)", f->path,
                       jerr.text, jerr.position);
    int rc = st_parse_root(f, root, buf + 8 + hlen, size - 8 - (size_t)hlen);
    json_decref(root);
    return rc;
}

static st_file *st_file_new(const char *path) {
    st_file *f = ss_calloc(1, sizeof *f);
    if (f && !(f->path = st_strdup(path))) {
        free(f);
        f = NULL;
    }
    return f;
}

static void st_file_unmap(st_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    f->map = NULL;
    for (int i = 0; i < f->n; i++) f->t[i].data = NULL;
}

void st_close(st_file *f) {
    if (!f) return;
    st_file_unmap(f);
    for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (int i = 0; i < 2 * f->nmeta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->t);
    free(f->by_name);
    free(f->path);
    free(f);
}

int st_open_memory(st_file **out, const void *buf, size_t n, const char *label) {
    *out = NULL;
    st_file *f = st_file_new(label ? label : "<memory>");
    if (!f) return SS_ENOMEM;
    int rc = st_parse(f, buf, n);
    if (rc < 0) {
        st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int st_open(st_file **out, const char *path) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(SS_EIO, "%s: not a readable regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return st_fail(SS_EFORMAT, "%s: file is %lld bytes, too short for the 8-byte header length",
                       path, (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return st_fail(SS_EIO, "%s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (m == MAP_FAILED) return st_fail(SS_EIO, "%s: mmap failed: %s", path, strerror(err));
    st_file *f = st_file_new(path);
    if (!f) {
        munmap(m, size);
        return SS_ENOMEM;
    }
    f->map = m;
    f->map_len = size;
    int rc = st_parse(f, m, size);
    if (rc < 0) {
        st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int st_count(const st_file *f) { return f ? f->n : 0; }

const st_tensor *st_get(const st_file *f, int i) {
    return f && i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    return f ? st_lookup(f->by_name, f->n, name) : NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
    for (int i = 0; f && key && i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* sets: one file or shards                                                                   */

struct st_set {
    char *path;
    st_file **files;
    int nfiles;
    st_tensor *t; /* copies of the shards' tensors; names point into the shards */
    int n;
    const st_tensor **by_name;
};

void st_set_close(st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) st_close(s->files[i]);
    free(s->files);
    free(s->t);
    free(s->by_name);
    free(s->path);
    free(s);
}

/* Gathers the tensors of every shard, in shard order, and indexes them by name. */
static int st_set_index(st_set *s) {
    size_t total = 0;
    for (int i = 0; i < s->nfiles; i++) total += (size_t)st_count(s->files[i]);
    if (total > INT_MAX) return st_fail(SS_EFORMAT, "%s: too many tensors (%zu)", s->path, total);
    s->t = ss_calloc(total, sizeof *s->t);
    s->by_name = ss_calloc(total, sizeof *s->by_name);
    if (!s->t || !s->by_name) return SS_ENOMEM;
    for (int i = 0; i < s->nfiles; i++)
        for (int j = 0; j < s->files[i]->n; j++) s->t[s->n++] = s->files[i]->t[j];
    for (int i = 0; i < s->n; i++) s->by_name[i] = &s->t[i];
    qsort(s->by_name, (size_t)s->n, sizeof *s->by_name, st_cmp_name);
    for (int i = 1; i < s->n; i++) {
        const st_tensor *a = s->by_name[i - 1], *b = s->by_name[i];
        if (strcmp(a->name, b->name) == 0)
            return st_fail(SS_EFORMAT, "%s: tensor '%s' appears in two shards: %s and %s", s->path,
                           st_short(a->name).s, a->file, b->file);
    }
    return 0;
}

static int st_set_add_file(st_set *s, const char *path) {
    st_file **nf = realloc(s->files, (size_t)(s->nfiles + 1) * sizeof *nf);
    if (!nf) return ss_fail(SS_ENOMEM, "out of memory");
    s->files = nf;
    int rc = st_open(&s->files[s->nfiles], path);
    if (rc == 0) s->nfiles++;
    return rc;
}

/* dir/name as a new string; "dir" of "x.json" is ".". */
static char *st_join_dir_of(const char *file, const char *name) {
    const char *slash = strrchr(file, '/');
    size_t dl = slash ? (size_t)(slash - file) : 1, nl = strlen(name);
    char *p = ss_malloc(dl + 1 + nl + 1);
    if (!p) return NULL;
    memcpy(p, slash ? file : ".", dl);
    p[dl] = '/';
    memcpy(p + dl + 1, name, nl + 1);
    return p;
}

/* A shard name stays inside the index's folder: relative, and no ".." component ("a/../b" is
 * refused too: with a symlinked "a" it would leave the folder). Symlinks are followed as the file
 * system resolves them: a Hugging Face cache snapshot links every file to ../../blobs/, so
 * refusing links that resolve elsewhere would refuse the usual download layout. */
static const char *st_shard_name_problem(const char *shard) {
    if (!shard[0]) return "is empty";
    if (shard[0] == '/') return "is not a relative path";
    for (const char *c = shard; *c;) {
        const char *e = strchr(c, '/');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (len == 2 && c[0] == '.' && c[1] == '.') return "has a '..' component (shards must be inside the index's folder)";
        c += len;
        while (*c == '/') c++;
    }
    return NULL;
}

/* Opens the shards named by the weight_map (each once, in order of first mention). */
static int st_set_open_shards(st_set *s, const json_t *wm, const char ***names_out) {
    const char **names = ss_calloc(json_object_size(wm), sizeof *names);
    *names_out = names;
    if (!names) return SS_ENOMEM;
    const char *tn;
    json_t *v;
    json_object_foreach((json_t *)wm, tn, v) {
        if (!json_is_string(v))
            return st_fail(SS_EFORMAT, "%s: weight_map entry '%s' is a JSON %s, not a file name",
                           s->path, st_short(tn).s, st_json_type(v));
        const char *shard = json_string_value(v), *problem = st_shard_name_problem(shard);
        if (problem)
            return st_fail(SS_EFORMAT, "%s: weight_map entry '%s': shard '%s' %s", s->path, st_short(tn).s,
                           st_short(shard).s, problem);
        int k = 0;
        while (k < s->nfiles && strcmp(names[k], shard) != 0) k++;
        if (k < s->nfiles) continue;
        char *p = st_join_dir_of(s->path, shard);
        if (!p) return SS_ENOMEM;
        int rc = st_set_add_file(s, p);
        free(p);
        if (rc < 0) return ss_err_prefix(rc, "%s: ", s->path);
        names[s->nfiles - 1] = shard;
    }
    return 0;
}

static int st_set_check_map(st_set *s, const json_t *wm, const char **names) {
    const char *tn;
    json_t *v;
    json_object_foreach((json_t *)wm, tn, v) {
        int k = 0;
        while (strcmp(names[k], json_string_value(v)) != 0) k++;
        if (!st_find(s->files[k], tn))
            return st_fail(SS_EMISSING, "%s: tensor '%s' is mapped to %s but that shard lacks it",
                           s->path, st_short(tn).s, s->files[k]->path);
    }
    return 0;
}

static int st_set_load_index(st_set *s) {
    json_error_t jerr;
    json_t *root = json_load_file(s->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(SS_EFORMAT, "%s: not a valid JSON index: %s (line %d)", s->path, jerr.text,
                       jerr.line);
    const char **names = NULL;
    int rc = 0;
    const json_t *wm = json_object_get(root, "weight_map");
    const json_t *md = json_object_get(root, "metadata");
    if (!json_is_object(root) || !json_is_object(wm))
        rc = st_fail(SS_EFORMAT, "%s: index has no \"weight_map\" object", s->path);
    else if (md && !json_is_object(md) && !json_is_null(md))
        rc = st_fail(SS_EFORMAT, "%s: index \"metadata\" is a JSON %s, not an object", s->path,
                     st_json_type(md));
    else if ((rc = st_set_open_shards(s, wm, &names)) == 0)
        rc = st_set_check_map(s, wm, names);
    free(names);
    json_decref(root);
    return rc < 0 ? rc : st_set_index(s);
}

static int st_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int st_set_load(st_set *s) {
    struct stat sb;
    if (stat(s->path, &sb) < 0)
        return st_fail(SS_EIO, "%s: cannot open: %s", s->path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        static const char *const cand[] = {
            "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
            "model.safetensors", "model.safetensors.index.json"};
        for (size_t i = 0; i < sizeof cand / sizeof *cand; i++) {
            size_t dl = strlen(s->path), cl = strlen(cand[i]);
            char *p = ss_malloc(dl + cl + 2);
            if (!p) return SS_ENOMEM;
            snprintf(p, dl + cl + 2, "%s/%s", s->path, cand[i]);
            if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
                free(s->path);
                s->path = p;
                return st_set_load(s);
            }
            free(p);
        }
        return st_fail(SS_EMISSING, "%s: folder holds no diffusion_pytorch_model.safetensors[.index.json] or model.safetensors[.index.json]",
                       s->path);
    }
    if (st_ends_with(s->path, ".json")) return st_set_load_index(s);
    int rc = st_set_add_file(s, s->path);
    return rc < 0 ? rc : st_set_index(s);
}

int st_set_open(st_set **out, const char *path) {
    *out = NULL;
    st_set *s = ss_calloc(1, sizeof *s);
    if (!s) return SS_ENOMEM;
    if (!(s->path = st_strdup(path))) {
        free(s);
        return SS_ENOMEM;
    }
    int rc = st_set_load(s);
    if (rc < 0) {
        st_set_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int st_set_count(const st_set *s) { return s ? s->n : 0; }

const st_tensor *st_set_get(const st_set *s, int i) {
    return s && i >= 0 && i < s->n ? &s->t[i] : NULL;
}

const st_tensor *st_set_find(const st_set *s, const char *name) {
    return s ? st_lookup(s->by_name, s->n, name) : NULL;
}

void st_set_unmap(st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) st_file_unmap(s->files[i]);
    for (int i = 0; i < s->n; i++) s->t[i].data = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* conversion                                                                                  */

static float st_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t st_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return st_bits_f32(sign | 0x7f800000u | man << 13); /* inf, NaN keeps payload */
    return st_bits_f32(sign | (exp + 112) << 23 | man << 13);
}

/* Shift right by s (1..31) rounding to nearest, ties to even. */
static uint32_t st_shift_rne(uint32_t m, unsigned s) {
    uint32_t q = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    return q + (rem > half || (rem == half && (q & 1)));
}

static uint16_t st_f32_to_f16(float f) {
    uint32_t x = st_f32_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)(x >> 16 & 0x8000);
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)(ax >> 13 & 0x1ff); /* quiet NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00;     /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u)                          /* normal half: rebias, drop 13 bits */
        return sign | (uint16_t)st_shift_rne(ax - (112u << 23), 13);
    unsigned e = ax >> 23; /* subnormal half: value / 2^-24 = m * 2^(e-126) */
    if (e < 102) return sign; /* below 2^-25 */
    return sign | (uint16_t)st_shift_rne((ax & 0x7fffffu) | 0x800000u, 126 - e);
}

static uint16_t st_f32_to_bf16(float f) {
    uint32_t x = st_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(x >> 16 | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + (x >> 16 & 1)) >> 16);
}

/* Double to float without the undefined out-of-range cast: values that round past FLT_MAX
 * become inf, as IEEE round-to-nearest does. */
static float st_f64_to_f32(double d) {
    if (d >= 0x1.ffffffp127) return st_bits_f32(0x7f800000u);
    if (d <= -0x1.ffffffp127) return st_bits_f32(0xff800000u);
    return (float)d;
}

int st_to_f32(float *dst, const st_tensor *t) {
    if (!st_is_float(t->dtype))
        return st_fail(SS_EFORMAT, "%s: tensor '%s': dtype %s cannot be converted to F32", t->file,
                       st_short(t->name).s, st_dtype_name(t->dtype));
    size_t n = (size_t)t->numel;
    if (n == 0) return 0;
    if (!t->data)
        return st_fail(SS_EARG, "%s: tensor '%s': data is no longer mapped", t->file,
                       st_short(t->name).s);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32: memcpy(dst, p, n * 4); break;
    case ST_F16:
        for (size_t i = 0; i < n; i++) dst[i] = st_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = st_bits_f32((uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16);
        break;
    default:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = st_f64_to_f32(d);
        }
        break;
    }
    return 0;
}

int st_load_f32(float **out, const st_set *s, const char *name, int ndim, const int64_t *shape) {
    *out = NULL;
    const st_tensor *t = st_set_find(s, name);
    if (!t)
        return st_fail(SS_EMISSING, "%s: tensor '%s' not found", s ? s->path : "?",
                       name ? st_short(name).s : "(null)");
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return st_fail(SS_EARG, "%s: tensor '%s': expected rank %d is out of range", t->file,
                       st_short(name).s, ndim);
    if (t->ndim != ndim || (ndim && memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) != 0))
        return st_fail(SS_ESHAPE, "%s: tensor '%s': shape is %s, expected %s", t->file,
                       st_short(name).s, st_shape_str(t->ndim, t->shape).s,
                       st_shape_str(ndim, shape).s);
    size_t bytes;
    if (ss_mul_size((size_t)t->numel, sizeof(float), &bytes))
        return st_fail(SS_ENOMEM, "%s: tensor '%s': too large", t->file, st_short(name).s);
    if (!st_is_float(t->dtype)) return st_to_f32(NULL, t);
    float *buf = ss_malloc(bytes);
    if (!buf) return SS_ENOMEM;
    int rc = st_to_f32(buf, t);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* writer                                                                                      */

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    void *data;
    size_t nbytes;
} st_wtensor;

struct st_writer {
    st_wtensor *t;
    int n, cap;
    json_t *meta;
};

st_writer *st_writer_new(void) {
    st_writer *w = ss_calloc(1, sizeof *w);
    if (w && !(w->meta = json_object())) {
        free(w);
        ss_fail(SS_ENOMEM, "out of memory");
        return NULL;
    }
    return w;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    json_decref(w->meta);
    free(w);
}

static int st_writer_check_name(const st_writer *w, const char *name) {
    if (strcmp(name, "__metadata__") == 0)
        return st_fail(SS_EARG, "writer: '__metadata__' is reserved, not a tensor name");
    json_t *probe = json_string(name); /* NULL when not valid UTF-8 */
    if (!probe) return st_fail(SS_EARG, "writer: tensor name '%s' is not valid UTF-8", st_short(name).s);
    json_decref(probe);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return st_fail(SS_EARG, "writer: tensor '%s' added twice", st_short(name).s);
    return 0;
}

/* Validates and appends an entry; *buf receives its (uninitialized) data buffer. */
static int st_writer_push(st_writer *w, const char *name, st_dtype dtype, int ndim,
                          const int64_t *shape, void **buf) {
    if (!w || !name) return st_fail(SS_EARG, "writer: null writer or tensor name");
    int rc = st_writer_check_name(w, name);
    if (rc < 0) return rc;
    if ((unsigned)dtype >= ST_DTYPE_COUNT)
        return st_fail(SS_EARG, "writer: tensor '%s': bad dtype %d", st_short(name).s, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim && !shape))
        return st_fail(SS_EARG, "writer: tensor '%s': rank %d out of range", st_short(name).s, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, shape[i], &numel))
            return st_fail(SS_EARG, "writer: tensor '%s': bad shape %s", st_short(name).s,
                           st_shape_str(ndim, shape).s);
    }
    size_t nbytes;
    if ((uint64_t)numel > SIZE_MAX || ss_mul_size((size_t)numel, st_dtype_size(dtype), &nbytes))
        return st_fail(SS_ENOMEM, "writer: tensor '%s': shape %s too large", st_short(name).s,
                       st_shape_str(ndim, shape).s);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        st_wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) return ss_fail(SS_ENOMEM, "out of memory");
        w->t = nt;
        w->cap = cap;
    }
    st_wtensor *e = &w->t[w->n];
    memset(e, 0, sizeof *e);
    e->name = st_strdup(name);
    e->data = ss_malloc(nbytes);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return SS_ENOMEM;
    }
    e->dtype = dtype;
    e->ndim = ndim;
    if (ndim) memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->nbytes = nbytes;
    w->n++;
    *buf = e->data;
    return 0;
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data) {
    void *buf;
    int rc = st_writer_push(w, name, dtype, ndim, shape, &buf);
    if (rc < 0) return rc;
    size_t nbytes = w->t[w->n - 1].nbytes;
    if (nbytes && !data) {
        w->n--;
        free(w->t[w->n].name);
        free(buf);
        return st_fail(SS_EARG, "writer: tensor '%s': no data", st_short(name).s);
    }
    if (nbytes) memcpy(buf, data, nbytes);
    return 0;
}

int st_writer_add_f32(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                      const float *data) {
    if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16)
        return st_fail(SS_EARG, "writer: tensor '%s': f32 data can be stored as F32, F16 or BF16, not %s",
                       name ? st_short(name).s : "(null)", st_dtype_name(dtype));
    if (dtype == ST_F32) return st_writer_add(w, name, dtype, ndim, shape, data);
    void *buf;
    int rc = st_writer_push(w, name, dtype, ndim, shape, &buf);
    if (rc < 0) return rc;
    size_t n = w->t[w->n - 1].nbytes / 2;
    if (n && !data) {
        w->n--;
        free(w->t[w->n].name);
        free(buf);
        return st_fail(SS_EARG, "writer: tensor '%s': no data", st_short(name).s);
    }
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = dtype == ST_F16 ? st_f32_to_f16(data[i]) : st_f32_to_bf16(data[i]);
        p[2 * i] = (uint8_t)h;
        p[2 * i + 1] = (uint8_t)(h >> 8);
    }
    return 0;
}

int st_writer_set_metadata(st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return st_fail(SS_EARG, "writer: null metadata key or value");
    json_t *v = json_string(value);
    if (!v) return st_fail(SS_EARG, "writer: metadata '%s': value is not valid UTF-8", st_short(key).s);
    if (json_object_set_new(w->meta, key, v) < 0)
        return st_fail(SS_EARG, "writer: metadata key '%s' is not valid UTF-8", st_short(key).s);
    return 0;
}

/* The JSON header, space-padded so the data section starts 8-byte aligned. */
static char *st_writer_header(const st_writer *w, size_t *len) {
    json_t *root = json_object();
    if (!root) return NULL;
    int bad = json_object_size(w->meta) && json_object_set(root, "__metadata__", w->meta) < 0;
    json_int_t off = 0;
    for (int i = 0; i < w->n && !bad; i++) {
        const st_wtensor *e = &w->t[i];
        json_t *shape = json_array();
        for (int d = 0; shape && d < e->ndim; d++)
            if (json_array_append_new(shape, json_integer(e->shape[d])) < 0) bad = 1;
        json_int_t end = off + (json_int_t)e->nbytes;
        json_t *ent = json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_name(e->dtype), "shape",
                                shape, "data_offsets", off, end);
        if (!ent || json_object_set_new(root, e->name, ent) < 0) bad = 1;
        off = end;
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) return NULL;
    size_t n = strlen(s), pad = (8 - n % 8) % 8;
    char *h = realloc(s, n + pad + 1);
    if (!h) {
        free(s);
        return NULL;
    }
    memset(h + n, ' ', pad);
    h[n + pad] = 0;
    *len = n + pad;
    return h;
}

int st_writer_save(st_writer *w, const char *path) {
    if (!w || !path) return st_fail(SS_EARG, "writer: null writer or path");
    size_t total = 0;
    for (int i = 0; i < w->n; i++)
        if (ss_add_size(total, w->t[i].nbytes, &total) || total > INT64_MAX)
            return st_fail(SS_ENOMEM, "%s: data too large", path);
    size_t hlen = 0;
    char *hdr = st_writer_header(w, &hlen);
    if (!hdr) return st_fail(SS_ENOMEM, "%s: cannot build the JSON header", path);
    /* the one atomic writer (io/fsutil.h): unique temporary file, fsync, rename, folder fsync */
    ss_atomic out;
    int rc = ss_atomic_open(&out, path);
    if (rc < 0) {
        free(hdr);
        return st_fail(rc, "%s", ss_err());
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(le, 1, 8, out.fp) == 8 && fwrite(hdr, 1, hlen, out.fp) == hlen;
    for (int i = 0; ok && i < w->n; i++)
        ok = fwrite(w->t[i].data, 1, w->t[i].nbytes, out.fp) == w->t[i].nbytes;
    if (!ok) {
        const int err = errno ? errno : EIO;
        ss_atomic_abort(&out);
        rc = st_fail(SS_EIO, "%s: cannot write (write: %s)", path, strerror(err));
    } else if ((rc = ss_atomic_commit(&out)) < 0) {
        rc = st_fail(rc, "%s", ss_err());
    }
    free(hdr);
    return rc;
}
