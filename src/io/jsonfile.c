#include "io/jsonfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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
