#include "exp/digest.h"

#include <dirent.h>
#include <errno.h>
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

int digest_file(const char *path, char hex[DIGEST_HEX]) {
    sha256_ctx c;
    sha256_init(&c);
    int rc = hash_file_into(&c, path);
    if (rc) return rc;
    sha256_final_hex(&c, hex);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Regular files directly inside dir/sub, sorted; *names malloc'ed (free each and the array). */
static int list_files(const char *dir, const char *sub, char ***names, int *n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    *names = NULL;
    *n = 0;
    DIR *d = opendir(path);
    if (!d) return ss_fail(SS_EIO, "%s: cannot open the folder: %s", path, strerror(errno));
    struct dirent *e;
    int cap = 0, rc = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || (len > 4 && !strcmp(e->d_name + len - 4, ".tmp"))) continue;
        char full[4500];
        struct stat sb;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (stat(full, &sb) || !S_ISREG(sb.st_mode)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(*names, sizeof *nn * cap);
            if (!nn) {
                rc = ss_fail(SS_ENOMEM, "out of memory");
                break;
            }
            *names = nn;
        }
        if (!((*names)[*n] = strdup(e->d_name))) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*names, *n, sizeof **names, cmp_str);
    return rc;
}

int digest_pipeline(const char *dir, char hex[DIGEST_HEX]) {
    static const char *const SUBS[] = {"scheduler", "text_encoder", "tokenizer", "transformer"}; /* byte order */
    sha256_ctx c;
    sha256_init(&c);
    int rc = 0;
    for (size_t s = 0; s < sizeof SUBS / sizeof SUBS[0] && !rc; s++) {
        char **names;
        int n;
        rc = list_files(dir, SUBS[s], &names, &n);
        for (int i = 0; i < n; i++) {
            if (!rc) {
                char path[4600], head[4400];
                struct stat sb;
                snprintf(path, sizeof path, "%s/%s/%s", dir, SUBS[s], names[i]);
                if (stat(path, &sb)) rc = ss_fail(SS_EIO, "%s: cannot stat: %s", path, strerror(errno));
                if (!rc) {
                    int len = snprintf(head, sizeof head, "%s/%s\n%lld\n", SUBS[s], names[i], (long long)sb.st_size);
                    sha256_update(&c, head, (size_t)len);
                    rc = hash_file_into(&c, path);
                }
            }
            free(names[i]);
        }
        free(names);
    }
    if (rc) return rc;
    sha256_final_hex(&c, hex);
    return 0;
}
