#include "exp/records.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "exp/digest.h"

/* ---- key set: open addressing, FNV-1a ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void keyset_init(keyset *s) { memset(s, 0, sizeof *s); }

void keyset_free(keyset *s) {
    for (size_t i = 0; i < s->cap; i++) free(s->slot[i]);
    free(s->slot);
    free(s->val);
    keyset_init(s);
}

static size_t find_slot(char **slot, size_t cap, const char *key) {
    size_t i = hash_str(key) & (cap - 1);
    while (slot[i] && strcmp(slot[i], key)) i = (i + 1) & (cap - 1);
    return i;
}

int keyset_has(const keyset *s, const char *key) { return s->cap && s->slot[find_slot(s->slot, s->cap, key)] != NULL; }

long keyset_get(const keyset *s, const char *key) {
    if (!s->cap) return -1;
    const size_t i = find_slot(s->slot, s->cap, key);
    return s->slot[i] ? s->val[i] : -1;
}

static int keyset_insert(keyset *s, const char *key, long val, int update) {
    if (2 * (s->n + 1) > s->cap) { /* keep the load under 1/2 */
        size_t cap = s->cap ? 2 * s->cap : 64;
        char **ns = ss_calloc(cap, sizeof *ns);
        long *nv = ss_calloc(cap, sizeof *nv);
        if (!ns || !nv) {
            free(ns);
            free(nv);
            return SS_ENOMEM;
        }
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) {
                const size_t j = find_slot(ns, cap, s->slot[i]);
                ns[j] = s->slot[i];
                nv[j] = s->val[i];
            }
        free(s->slot);
        free(s->val);
        s->slot = ns;
        s->val = nv;
        s->cap = cap;
    }
    size_t i = find_slot(s->slot, s->cap, key);
    if (s->slot[i]) {
        if (update) s->val[i] = val;
        return 0;
    }
    if (!(s->slot[i] = strdup(key))) return ss_fail(SS_ENOMEM, "out of memory");
    s->val[i] = val;
    s->n++;
    return 1;
}

int keyset_add(keyset *s, const char *key) { return keyset_insert(s, key, -1, 0); }
int keyset_put(keyset *s, const char *key, long val) { return keyset_insert(s, key, val, 1); }

/* ---- unsigned 64-bit integers in JSON ---- */

json_t *exp_json_u64(uint64_t v) {
    if (v <= (uint64_t)INT64_MAX) return json_integer((json_int_t)v);
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return json_string(buf);
}

int exp_json_get_u64(const json_t *v, uint64_t *out) {
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) return -1;
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 20) return -1;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return -1;
        x = 10 * x + (uint64_t)(*s - '0');
    }
    *out = x;
    return 0;
}

/* ---- durable writes ---- */

/* ---- records.jsonl ---- */

static int read_all(int fd, const char *path, char **out, size_t *len) {
    struct stat sb;
    if (fstat(fd, &sb)) return ss_fail(SS_EIO, "%s: cannot stat: %s", path, strerror(errno));
    char *buf = ss_malloc((size_t)sb.st_size + 1);
    if (!buf) return SS_ENOMEM;
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = pread(fd, buf + got, (size_t)sb.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            return ss_fail(SS_EIO, "%s: read failed: %s", path, strerror(errno));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    return 0;
}

/* The key of one record line, or NULL (json set to the parsed object). */
static const char *line_key(const char *p, size_t n, json_t **json) {
    *json = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
    json_t *k = *json ? json_object_get(*json, "key") : NULL;
    return json_is_string(k) && json_string_length(k) > 0 ? json_string_value(k) : NULL;
}

/* Remembers what record `o` (of key `key`) says about its image; the key then stands for it (a
 * later record of the same key supersedes an earlier one). */
static int note_record(records_file *rf, const char *key, const json_t *o) {
    if (rf->n_img == rf->cap_img) {
        const size_t cap = rf->cap_img ? 2 * rf->cap_img : 64;
        record_image *ni = realloc(rf->img, sizeof *ni * cap);
        if (!ni) return ss_fail(SS_ENOMEM, "out of memory");
        rf->img = ni;
        rf->cap_img = cap;
    }
    record_image *e = &rf->img[rf->n_img];
    memset(e, 0, sizeof *e);
    e->bytes = -1;
    const json_t *im = json_object_get(o, "image"), *b = json_object_get(o, "image_bytes"),
                 *h = json_object_get(o, "image_sha256");
    if (json_is_string(im) && !(e->image = strdup(json_string_value(im)))) return ss_fail(SS_ENOMEM, "out of memory");
    if (json_is_integer(b) && json_integer_value(b) >= 0) e->bytes = json_integer_value(b);
    else if (b) e->bytes = -2; /* present but not a size: never matches */
    if (json_is_string(h) && json_string_length(h) == DIGEST_HEX - 1) snprintf(e->sha256, sizeof e->sha256, "%s", json_string_value(h));
    else if (h) snprintf(e->sha256, sizeof e->sha256, "?");
    const json_t *fp = json_object_get(o, "features"), *fh = json_object_get(o, "features_sha256");
    if (json_is_string(fp) && !(e->features = strdup(json_string_value(fp)))) {
        free(e->image);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    if (json_is_string(fh) && json_string_length(fh) == DIGEST_HEX - 1)
        snprintf(e->features_sha256, sizeof e->features_sha256, "%s", json_string_value(fh));
    else if (fh) snprintf(e->features_sha256, sizeof e->features_sha256, "?");
    const int added = keyset_put(&rf->keys, key, (long)rf->n_img);
    if (added < 0) {
        free(e->image);
        free(e->features);
        return added;
    }
    rf->n_img++;
    if (added == 0) rf->duplicates++;
    return 0;
}

static const char *kind_of(mode_t m) {
    return S_ISDIR(m) ? "a folder" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
           : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

int records_open(records_file *rf, const char *path) {
    memset(rf, 0, sizeof *rf);
    rf->fd = -1;
    keyset_init(&rf->keys);
    if (!(rf->path = strdup(path))) return ss_fail(SS_ENOMEM, "out of memory");
    struct stat sb;
    /* never open a FIFO or device for appending records: it would swallow them */
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        records_close(rf);
        return ss_fail(SS_EIO, "%s: is %s, not a regular file; move it away", path, kind_of(sb.st_mode));
    }
    rf->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0644);
    if (rf->fd < 0) {
        int rc = ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
        records_close(rf);
        return rc;
    }
    if (fstat(rf->fd, &sb) || !S_ISREG(sb.st_mode)) {
        int rc = ss_fail(SS_EIO, "%s: is %s, not a regular file; move it away", path, kind_of(sb.st_mode));
        records_close(rf);
        return rc;
    }
    fcntl(rf->fd, F_SETFL, O_APPEND); /* blocking writes from here on (O_NONBLOCK only guarded the open) */
    char *buf = NULL;
    size_t len = 0;
    int rc = read_all(rf->fd, path, &buf, &len);
    if (rc) {
        records_close(rf);
        return rc;
    }
    size_t pos = 0, good_end = 0;
    long lineno = 0;
    while (pos < len && !rc) {
        char *nl = memchr(buf + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - buf) : len;
        lineno++;
        json_t *j = NULL;
        const char *key = nl ? line_key(buf + pos, end - pos, &j) : NULL;
        const int last = !nl || end + 1 == len;
        if (!key) {
            if (!last)
                rc = ss_fail(SS_EFORMAT, "%s:%ld: not a record (JSON object with a \"key\") and not the last line; "
                             "the file was edited or damaged, fix or remove that line", path, lineno);
            json_decref(j);
            break; /* a torn last line: cut off below */
        }
        rc = note_record(rf, key, j);
        json_decref(j);
        rf->n_lines++;
        pos = good_end = end + 1;
    }
    free(buf);
    if (!rc && good_end < len) {
        if (ftruncate(rf->fd, (off_t)good_end) || fsync(rf->fd))
            rc = ss_fail(SS_EIO, "%s: cannot cut off the torn last line: %s", path, strerror(errno));
        rf->truncated = (long)(len - good_end);
    }
    if (rc) records_close(rf);
    return rc;
}

const record_image *records_image(const records_file *rf, const char *key) {
    const long i = keyset_get(&rf->keys, key);
    return i >= 0 && (size_t)i < rf->n_img ? &rf->img[i] : NULL;
}

void records_close(records_file *rf) {
    if (rf->fd >= 0) close(rf->fd);
    rf->fd = -1;
    free(rf->path);
    rf->path = NULL;
    keyset_free(&rf->keys);
    for (size_t i = 0; i < rf->n_img; i++) free(rf->img[i].image), free(rf->img[i].features);
    free(rf->img);
    rf->img = NULL;
    rf->n_img = rf->cap_img = 0;
}

int records_append(records_file *rf, const void *record) {
    const json_t *r = record;
    const char *key = json_string_value(json_object_get(r, "key"));
    if (!key) return ss_fail(SS_EARG, "records_append: record without a key");
    char *line = json_dumps(r, RECORDS_JSON_FLAGS);
    if (!line) return ss_fail(SS_ENOMEM, "records_append: cannot serialize record %s", key);
    size_t n = strlen(line);
    char *full = realloc(line, n + 2);
    if (!full) {
        free(line);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    full[n] = '\n';
    full[n + 1] = 0;
    /* One write of the whole line: a crash leaves a prefix of it at worst, which the next open
     * cuts off. A short write (disk full) is reported, not continued, for the same reason. */
    ssize_t w;
    do w = write(rf->fd, full, n + 1);
    while (w < 0 && errno == EINTR);
    free(full);
    if (w != (ssize_t)(n + 1))
        return ss_fail(SS_EIO, "%s: appending record %s failed: %s", rf->path, key, w < 0 ? strerror(errno) : "short write");
    if (fsync(rf->fd)) return ss_fail(SS_EIO, "%s: fsync failed: %s", rf->path, strerror(errno));
    int a = note_record(rf, key, r);
    if (a < 0) return a;
    rf->n_lines++;
    return 0;
}
