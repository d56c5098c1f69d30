#include "sample/schedcfg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"

/* Bare non-finite tokens become strings that start with \u0001 (which no real config holds). */
#define NF_MARK "\x01"

static char *quote_nonfinite(const char *src, size_t n, size_t *out_n) {
    static const char *const tok[] = {"-Infinity", "Infinity", "NaN"};
    size_t cap = n * 4 + 16, m = 0; /* "NaN" (3 bytes) becomes 11 */
    char *dst = malloc(cap);
    if (!dst) return NULL;
    int in_str = 0;
    for (size_t i = 0; i < n;) {
        char c = src[i];
        if (in_str) {
            dst[m++] = c, i++;
            if (c == '\\' && i < n) dst[m++] = src[i++];
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1, dst[m++] = c, i++;
            continue;
        }
        int hit = 0;
        for (int k = 0; k < 3 && !hit; k++) {
            size_t L = strlen(tok[k]);
            if (n - i >= L && !memcmp(src + i, tok[k], L)) {
                m += (size_t)sprintf(dst + m, "\"\\u0001%s\"", tok[k]);
                i += L, hit = 1;
            }
        }
        if (!hit) dst[m++] = c, i++;
    }
    *out_n = m;
    return dst;
}

int ss_schedcfg_load(const char *path, json_t **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ss_fail(SS_EIO, "%s: cannot open: %s", path, "not a regular file");
    }
    size_t n = (size_t)sb.st_size;
    if (n > (16u << 20)) {
        fclose(f);
        return ss_fail(SS_EFORMAT, "%s: too large for a scheduler config (%zu bytes)", path, n);
    }
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return ss_fail(SS_ENOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return ss_fail(SS_EIO, "%s: cannot read", path);
    }
    size_t qn = 0;
    char *q = quote_nonfinite(buf, n, &qn);
    free(buf);
    if (!q) return ss_fail(SS_ENOMEM, "%s: out of memory", path);
    json_error_t je;
    *out = json_loadb(q, qn, JSON_REJECT_DUPLICATES, &je);
    free(q);
    if (!*out) return ss_fail(SS_EFORMAT, "%s: not valid JSON (line %d, column %d: %s)", path, je.line, je.column, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
    }
    return 0;
}

int ss_schedcfg_number(json_t *root, const char *path, const char *key, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s && s[0] == NF_MARK[0]) {
        *out = !strcmp(s + 1, "-Infinity") ? -INFINITY : !strcmp(s + 1, "Infinity") ? INFINITY : NAN;
        return 0;
    }
    return ss_fail(SS_EFORMAT, "%s: field '%s' must be a number", path, key);
}

int ss_schedcfg_int(json_t *root, const char *path, const char *key, long lo, long hi, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return ss_fail(SS_EFORMAT, "%s: field '%s' must be an integer in %ld..%ld", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

int ss_schedcfg_bool(json_t *root, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

int ss_schedcfg_enum(json_t *root, const char *path, const char *key, const char *const *names, int n,
                     int null_ok, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v) return 0;
    if (json_is_null(v)) {
        if (null_ok) return 0;
        return ss_fail(SS_EFORMAT, "%s: field '%s' must not be null", path, key);
    }
    char list[256] = "", buf[64];
    for (int i = 0; i < n; i++) {
        if (json_is_string(v) && !strcmp(json_string_value(v), names[i])) {
            *out = i;
            return 0;
        }
        size_t L = strlen(list);
        snprintf(list + L, sizeof list - L, "%s\"%s\"", i ? ", " : "", names[i]);
    }
    if (!json_is_string(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a string (one of %s)", path, key, list);
    return ss_fail(SS_EARG, "%s: field '%s' = \"%s\" is not supported (supported: %s)", path, key,
                   ss_printable(json_string_value(v), buf, sizeof buf), list);
}

int ss_schedcfg_class(json_t *root, const char *path, const char **out) {
    json_t *v = json_object_get(root, "_class_name");
    *out = NULL;
    if (!v) return 0;
    if (!json_is_string(v)) return ss_fail(SS_EFORMAT, "%s: field '_class_name' must be a string", path);
    *out = json_string_value(v);
    return 0;
}
