#include "io/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

int ss_mkdir_p(const char *path) {
    char buf[4400];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return ss_fail(SS_EARG, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        const int end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            struct stat sb;
            if (mkdir(buf, 0777) && !(errno == EEXIST && stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode)))
                return ss_fail(SS_EIO, "%s: cannot create the folder: %s", buf, strerror(errno == EEXIST ? ENOTDIR : errno));
            if (end) return 0;
            *p = '/';
        }
    }
}

int ss_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot open the folder: %s", dir, strerror(errno));
    int rc = 0;
    /* some file systems refuse fsync on a folder (EINVAL): nothing more can be done there */
    if (fsync(fd) && errno != EINVAL && errno != EROFS) rc = ss_fail(SS_EIO, "%s: cannot fsync the folder: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* dir and base name of path ("." for a bare name) */
static int split_path(const char *path, char *dir, size_t dcap, const char **base) {
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!**base) return ss_fail(SS_EARG, "%s: not a file name", path);
    if (!slash) return (size_t)snprintf(dir, dcap, ".") < dcap ? 0 : ss_fail(SS_EARG, "%s: path too long", path);
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= dcap) return ss_fail(SS_EARG, "%s: path too long", path);
    memcpy(dir, path, n);
    dir[n] = 0;
    return 0;
}

int ss_mktemp_in(const char *dir, const char *prefix, char *buf, size_t cap) {
    if ((size_t)snprintf(buf, cap, "%s/.%s.XXXXXX", dir, prefix) >= cap) return ss_fail(SS_EARG, "%s: path too long", dir);
    int fd = mkstemp(buf);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot create a temporary file: %s", dir, strerror(errno));
    close(fd);
    return 0;
}

static void atomic_release(ss_atomic *a) {
    free(a->path);
    free(a->tmp);
    free(a->dir);
    a->path = a->tmp = a->dir = NULL;
    a->fp = NULL;
}

int ss_atomic_open(ss_atomic *a, const char *path) {
    memset(a, 0, sizeof *a);
    if (!path) return ss_fail(SS_EARG, "ss_atomic_open: NULL path");
    const size_t pl = strlen(path);
    char *dir = malloc(pl + 2), *tmp = malloc(pl + 16), *cp = strdup(path);
    const char *base = "";
    int rc = !dir || !tmp || !cp ? ss_fail(SS_ENOMEM, "%s: cannot write: out of memory", path)
                                 : split_path(path, dir, pl + 2, &base);
    if (rc == 0) snprintf(tmp, pl + 16, "%s/.%s.XXXXXX", dir, base);
    int fd = rc ? -1 : mkstemp(tmp);
    if (rc == 0 && fd < 0)
        rc = ss_fail(SS_EIO, "%s: cannot write: cannot create a temporary file in %s: %s", path, dir, strerror(errno));
    /* mkstemp makes the file 0600; outputs are meant to be read by others (0644). Reading the
     * umask would mean changing it, which is process-wide and not thread-safe. */
    FILE *fp = NULL;
    if (rc == 0) {
        const char *step = fchmod(fd, 0644) ? "chmod" : !(fp = fdopen(fd, "wb")) ? "fdopen" : NULL;
        if (step) {
            rc = ss_fail(SS_EIO, "%s: cannot write (%s: %s)", path, step, strerror(errno));
            close(fd);
            unlink(tmp);
        }
    }
    if (rc) {
        free(dir);
        free(tmp);
        free(cp);
        return rc;
    }
    a->fp = fp;
    a->path = cp;
    a->tmp = tmp;
    a->dir = dir;
    return 0;
}

void ss_atomic_abort(ss_atomic *a) {
    if (a->fp) fclose(a->fp);
    if (a->tmp) unlink(a->tmp);
    atomic_release(a);
}

int ss_atomic_commit(ss_atomic *a) {
    if (!a->fp) {
        atomic_release(a);
        return ss_fail(SS_EARG, "ss_atomic_commit: not open");
    }
    const char *step = NULL;
    int err = 0;
    errno = 0; /* a stream error with no errno of its own reads as EIO */
    if (fflush(a->fp) || ferror(a->fp)) step = "write", err = errno ? errno : EIO;
    if (!step && fsync(fileno(a->fp))) step = "fsync", err = errno;
    if (fclose(a->fp) && !step) step = "close", err = errno;
    a->fp = NULL;
    if (!step && rename(a->tmp, a->path)) step = "rename", err = errno;
    int rc = 0;
    if (step) {
        unlink(a->tmp);
        rc = ss_fail(SS_EIO, "%s: cannot write (%s: %s)", a->path, step, strerror(err));
    } else {
        rc = ss_fsync_dir(a->dir);
    }
    atomic_release(a);
    return rc;
}

int ss_write_atomic(const char *path, const void *data, size_t len) {
    ss_atomic a;
    int rc = ss_atomic_open(&a, path);
    if (rc < 0) return rc;
    if (len && fwrite(data, 1, len, a.fp) != len) {
        const int e = errno ? errno : EIO;
        ss_atomic_abort(&a);
        return ss_fail(SS_EIO, "%s: cannot write (write: %s)", path, strerror(e));
    }
    return ss_atomic_commit(&a);
}

int ss_is_atomic_tmp(const char *name) {
    const size_t n = strlen(name);
    const char *dot = strrchr(name, '.');
    if (name[0] != '.' || n < 9 || !dot || dot == name || (size_t)(name + n - dot) != 7) return 0;
    for (const char *p = dot + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) return 0;
    return 1;
}

int ss_read_file(const char *path, size_t max, const char *what, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ss_fail(SS_EIO, "%s: not a regular file", path);
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) { /* read to the end (the size may change under us), one byte kept for the NUL */
        if (len + 1 >= cap) {
            if (cap > max) {
                rc = ss_fail(SS_EFORMAT, "%s: too large for %s (more than %zu bytes)", path, what, max);
                break;
            }
            size_t ncap = cap ? 2 * cap : 1 << 16;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = ss_fail(SS_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    if (!rc && ferror(f)) rc = ss_fail(SS_EIO, "%s: read error", path);
    if (!rc && len > max) rc = ss_fail(SS_EFORMAT, "%s: too large for %s (more than %zu bytes)", path, what, max);
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return 0;
}
