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

int ss_write_atomic(const char *path, const void *data, size_t len) {
    char dir[4400], tmp[4600];
    const char *base;
    int rc = split_path(path, dir, sizeof dir, &base);
    if (rc < 0) return rc;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, base) >= sizeof tmp) return ss_fail(SS_EARG, "%s: path too long", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot write: cannot create a temporary file in %s: %s", path, dir, strerror(errno));
    /* mkstemp makes the file 0600; outputs are meant to be read by others (0644). Reading the
     * umask would mean changing it, which is process-wide and not thread-safe. */
    const char *step = NULL;
    int err = 0;
    if (fchmod(fd, 0644)) step = "chmod", err = errno;
    const char *p = data;
    for (size_t done = 0; !step && done < len;) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) step = "write", err = w < 0 ? errno : EIO;
        else done += (size_t)w;
    }
    if (!step && fsync(fd)) step = "fsync", err = errno;
    if (close(fd) && !step) step = "close", err = errno;
    if (!step && rename(tmp, path)) step = "rename", err = errno;
    if (step) {
        unlink(tmp);
        return ss_fail(SS_EIO, "%s: cannot write (%s: %s)", path, step, strerror(err));
    }
    return ss_fsync_dir(dir);
}
