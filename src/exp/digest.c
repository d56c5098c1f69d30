#include "exp/digest.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"

/* The round constants are the first 32 bits of the fractional parts of the cube roots of the
 * first 64 primes (and the initial state: square roots of the first 8). Computing them in long
 * double (64-bit mantissa) leaves ~29 spare bits; the known-answer tests in tests/test_run.c
 * pin the result. */
static uint32_t K[64], H0[8];
static int k_ready;

static uint32_t frac32(long double x) { return (uint32_t)((x - floorl(x)) * 4294967296.0L); }

static void init_constants(void) {
    if (k_ready) return;
    int n = 0;
    for (int p = 2; n < 64; p++) {
        int prime = 1;
        for (int d = 2; d * d <= p; d++) prime &= p % d != 0;
        if (!prime) continue;
        if (n < 8) H0[n] = frac32(sqrtl((long double)p));
        K[n++] = frac32(cbrtl((long double)p));
    }
    k_ready = 1;
}

static uint32_t ror(uint32_t x, int r) { return (x >> r) | (x << (32 - r)); }

static void compress(uint32_t h[8], const uint8_t blk[64]) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 | (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void sha256_init(sha256_ctx *c) {
    init_constants();
    memcpy(c->h, H0, sizeof H0);
    c->len = 0;
    c->nbuf = 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t n) {
    const uint8_t *p = data;
    c->len += n;
    if (c->nbuf) {
        size_t take = 64 - c->nbuf < n ? 64 - c->nbuf : n;
        memcpy(c->buf + c->nbuf, p, take);
        c->nbuf += take;
        p += take;
        n -= take;
        if (c->nbuf < 64) return;
        compress(c->h, c->buf);
        c->nbuf = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(c->h, p);
    memcpy(c->buf, p, n);
    c->nbuf = n;
}

void sha256_final_hex(sha256_ctx *c, char hex[DIGEST_HEX]) {
    const uint64_t bits = c->len * 8;
    uint8_t pad[72] = {0x80};
    size_t npad = (c->nbuf < 56 ? 56 : 120) - c->nbuf;
    for (int i = 0; i < 8; i++) pad[npad + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, pad, npad + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", c->h[i]);
}

static int hash_file_into(sha256_ctx *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    static _Thread_local uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(c, buf, n);
    int bad = ferror(f);
    fclose(f);
    return bad ? ss_fail(SS_EIO, "%s: read error", path) : 0;
}

void digest_bytes(const void *data, size_t n, char hex[DIGEST_HEX]) {
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, data, n);
    sha256_final_hex(&c, hex);
}

int digest_file(const char *path, char hex[DIGEST_HEX]) {
    sha256_ctx c;
    sha256_init(&c);
    int rc = hash_file_into(&c, path);
    if (rc) return rc;
    sha256_final_hex(&c, hex);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
    char **v;
    int n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s) {
    if (l->n == l->cap) {
        if (l->cap > (1 << 24)) return ss_fail(SS_ENOMEM, "too many files");
        int cap = l->cap ? 2 * l->cap : 32;
        char **nv = realloc(l->v, sizeof *nv * (size_t)cap);
        if (!nv) return ss_fail(SS_ENOMEM, "out of memory");
        l->v = nv;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return ss_fail(SS_ENOMEM, "out of memory");
    l->n++;
    return 0;
}

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int skipped_name(const char *name) {
    const size_t len = strlen(name);
    return name[0] == '.' || (len > 4 && !strcmp(name + len - 4, ".tmp"));
}

#define DIGEST_MAX_DEPTH 64

/* Regular files under root/rel (rel "" = root itself), recursively, as paths relative to root.
 * Files directly in root are left out (see digest.h). Symbolic links are followed; a folder
 * that is its own ancestor (a link loop) is an error. */
static int walk(const char *root, const char *rel, int depth, dev_t *dev, ino_t *ino, strlist *out) {
    char path[4400];
    if ((size_t)snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel) >= sizeof path)
        return ss_fail(SS_EARG, "%s: path too long", root);
    struct stat sd;
    if (stat(path, &sd)) return ss_fail(SS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    for (int i = 0; i < depth; i++)
        if (dev[i] == sd.st_dev && ino[i] == sd.st_ino)
            return ss_fail(SS_EFORMAT, "%s: the folder contains itself (a symbolic link loop)", path);
    if (depth >= DIGEST_MAX_DEPTH) return ss_fail(SS_EFORMAT, "%s: folders nested deeper than %d", path, DIGEST_MAX_DEPTH);
    dev[depth] = sd.st_dev;
    ino[depth] = sd.st_ino;
    DIR *d = opendir(path);
    if (!d) return ss_fail(SS_EIO, "%s: cannot open the folder: %s", path, strerror(errno));
    strlist names = {0};
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d)))
        if (!skipped_name(e->d_name)) rc = strlist_add(&names, e->d_name);
    closedir(d);
    if (names.n) qsort(names.v, (size_t)names.n, sizeof *names.v, cmp_str);
    for (int i = 0; i < names.n && !rc; i++) {
        char sub[4400], full[4400];
        struct stat sb;
        if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names.v[i]) >= sizeof sub ||
            (size_t)snprintf(full, sizeof full, "%s/%s", root, sub) >= sizeof full) {
            rc = ss_fail(SS_EARG, "%s/%s: path too long", path, names.v[i]);
            break;
        }
        if (stat(full, &sb)) continue; /* a dangling link: nothing the loader could read */
        if (S_ISDIR(sb.st_mode)) rc = walk(root, sub, depth + 1, dev, ino, out);
        else if (S_ISREG(sb.st_mode) && *rel) rc = strlist_add(out, sub);
    }
    strlist_free(&names);
    return rc;
}

static int hash_entry(sha256_ctx *c, const char *label, const char *path) {
    struct stat sb;
    if (stat(path, &sb)) return ss_fail(SS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    char head[4600];
    int len = snprintf(head, sizeof head, "%s\n%lld\n", label, (long long)sb.st_size);
    if (len < 0 || (size_t)len >= sizeof head) return ss_fail(SS_EARG, "%s: path too long", path);
    sha256_update(c, head, (size_t)len);
    return hash_file_into(c, path);
}

int digest_pipeline(const char *dir, char hex[DIGEST_HEX]) {
    sha256_ctx c;
    sha256_init(&c);
    strlist files = {0};
    dev_t dev[DIGEST_MAX_DEPTH + 1];
    ino_t ino[DIGEST_MAX_DEPTH + 1];
    int rc = walk(dir, "", 0, dev, ino, &files);
    /* the walk visits names in byte order per folder; the digest wants byte order of the whole
     * relative path (they differ when a name sorts between "x" and "x/...") */
    if (!rc && files.n) qsort(files.v, (size_t)files.n, sizeof *files.v, cmp_str);
    for (int i = 0; i < files.n && !rc; i++) {
        char path[4600];
        snprintf(path, sizeof path, "%s/%s", dir, files.v[i]);
        rc = hash_entry(&c, files.v[i], path);
    }
    strlist_free(&files);
    if (rc) return rc;
    sha256_final_hex(&c, hex);
    return 0;
}
