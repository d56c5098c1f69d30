#include "io/jsonfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/fsutil.h"

int ss_json_load(const char *path, json_t **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ss_fail(SS_EIO, "%s: cannot open: %s", path, S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
    }
    json_error_t je;
    *out = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!*out) return ss_fail(SS_EFORMAT, "%s: not valid JSON (line %d, column %d: %s)", path, je.line, je.column, je.text);
    return 0;
}

int ss_json_save(const char *path, json_t *o, size_t flags) {
    if (!o) return ss_fail(SS_ENOMEM, "%s: cannot write: out of memory", path);
    char *s = json_dumps(o, flags);
    json_decref(o);
    if (!s) return ss_fail(SS_ENOMEM, "%s: cannot write: out of memory", path);
    size_t n = strlen(s);
    char *buf = realloc(s, n + 2);
    if (!buf) {
        free(s);
        return ss_fail(SS_ENOMEM, "%s: cannot write: out of memory", path);
    }
    buf[n] = '\n';
    int rc = ss_write_atomic(path, buf, n + 1);
    free(buf);
    return rc;
}
