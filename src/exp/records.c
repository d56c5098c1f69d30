#include "exp/records.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

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
    keyset_init(s);
}

static size_t find_slot(char **slot, size_t cap, const char *key) {
    size_t i = hash_str(key) & (cap - 1);
    while (slot[i] && strcmp(slot[i], key)) i = (i + 1) & (cap - 1);
    return i;
}

int keyset_has(const keyset *s, const char *key) { return s->cap && s->slot[find_slot(s->slot, s->cap, key)] != NULL; }

int keyset_add(keyset *s, const char *key) {
    if (2 * (s->n + 1) > s->cap) { /* keep the load under 1/2 */
        size_t cap = s->cap ? 2 * s->cap : 64;
        char **ns = ss_calloc(cap, sizeof *ns);
        if (!ns) return SS_ENOMEM;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) ns[find_slot(ns, cap, s->slot[i])] = s->slot[i];
        free(s->slot);
        s->slot = ns;
        s->cap = cap;
    }
    size_t i = find_slot(s->slot, s->cap, key);
    if (s->slot[i]) return 0;
    if (!(s->slot[i] = strdup(key))) return ss_fail(SS_ENOMEM, "out of memory");
    s->n++;
    return 1;
}

/* ---- durable writes ---- */

int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot open the folder: %s", dir, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    return r ? ss_fail(SS_EIO, "%s: fsync failed: %s", dir, strerror(e)) : 0;
}

static int fsync_parent(const char *path) {
    char *p = strdup(path);
    if (!p) return ss_fail(SS_ENOMEM, "out of memory");
    int rc = fsync_dir(dirname(p));
    free(p);
    return rc;
}

int commit_tmp(const char *path) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return ss_fail(SS_EARG, "%s: path too long", path);
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot open: %s", tmp, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r) return ss_fail(SS_EIO, "%s: fsync failed: %s", tmp, strerror(e));
    if (rename(tmp, path)) return ss_fail(SS_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    return fsync_parent(path);
}

static int write_all(int fd, const char *p, size_t n, const char *path) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ss_fail(SS_EIO, "%s: write failed: %s", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t n) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return ss_fail(SS_EARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = write_all(fd, data, n, tmp);
    if (!rc && fsync(fd)) rc = ss_fail(SS_EIO, "%s: fsync failed: %s", tmp, strerror(errno));
    close(fd);
    if (!rc && rename(tmp, path)) rc = ss_fail(SS_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    return fsync_parent(path);
}


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

int records_open(records_file *rf, const char *path) {
    memset(rf, 0, sizeof *rf);
    rf->fd = -1;
    keyset_init(&rf->keys);
    if (!(rf->path = strdup(path))) return ss_fail(SS_ENOMEM, "out of memory");
    rf->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (rf->fd < 0) {
        int rc = ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
        records_close(rf);
        return rc;
    }
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
        int added = keyset_add(&rf->keys, key);
        json_decref(j);
        if (added < 0) rc = added;
        else if (added == 0) rf->duplicates++;
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

void records_close(records_file *rf) {
    if (rf->fd >= 0) close(rf->fd);
    rf->fd = -1;
    free(rf->path);
    rf->path = NULL;
    keyset_free(&rf->keys);
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
    int a = keyset_add(&rf->keys, key);
    if (a < 0) return a;
    rf->n_lines++;
    return 0;
}
