#include "io/jsonfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"

int ss_json_load(const char *path, json_t **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    json_error_t je;
    *out = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!*out) return ss_fail(SS_EFORMAT, "%s: not valid JSON (line %d, column %d: %s)", path, je.line, je.column, je.text);
    return 0;
}

int ss_json_save(const char *path, json_t *o, size_t flags) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        json_decref(o);
        return ss_fail(SS_EARG, "%s: path too long", path);
    }
    FILE *f = o ? fopen(tmp, "wb") : NULL;
    int ok = f && json_dumpf(o, f, flags) == 0 && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f)) ok = 0;
    json_decref(o);
    if (!ok || rename(tmp, path)) {
        int e = errno;
        remove(tmp);
        return ss_fail(SS_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}
