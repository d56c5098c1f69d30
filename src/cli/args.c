#include "cli/args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/dnnl.h"
#include "core/err.h"
#include "models/binder.h"

/* A value that looks like an option: "--" followed by anything (a lone "-" or "-1" is a value). */
static int looks_like_option(const char *s) { return s[0] == '-' && s[1] == '-'; }

int cli_parse(int argc, char **argv, const cli_opt *opts, int n, const char *usage) {
    const char *cmd = argc > 0 ? argv[0] : "?";
    unsigned char seen[256] = {0};
    if (n > 256) {
        fprintf(stderr, "sinkscope %s: internal error: too many options\n", cmd);
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 1;
        }
        int j = 0;
        while (j < n && (!looks_like_option(a) || strcmp(a + 2, opts[j].name))) j++;
        if (j == n) {
            fprintf(stderr, "sinkscope %s: unknown argument '%s'\n%s", cmd, a, usage);
            return -1;
        }
        if (seen[j]++) {
            fprintf(stderr, "sinkscope %s: option %s is given more than once\n%s", cmd, a, usage);
            return -1;
        }
        if (opts[j].flag) {
            *opts[j].flag = 1;
        } else {
            if (cli_need_value(cmd, argc, argv, i) < 0) {
                fputs(usage, stderr);
                return -1;
            }
            *opts[j].value = argv[++i];
        }
    }
    return 0;
}

int cli_need_value(const char *cmd, int argc, char **argv, int i) {
    if (i + 1 >= argc) {
        fprintf(stderr, "sinkscope %s: option %s needs a value\n", cmd, argv[i]);
        return -1;
    }
    if (looks_like_option(argv[i + 1])) {
        fprintf(stderr, "sinkscope %s: option %s needs a value (got the option '%s'; no value starts with \"--\")\n", cmd,
                argv[i], argv[i + 1]);
        return -1;
    }
    return 0;
}

/* ---- strict number parsing ---- */

/* Length of the [-]digits prefix of s (0 if there is no digit). */
static size_t int_span(const char *s) {
    size_t k = s[0] == '-';
    const size_t d0 = k;
    while (s[k] >= '0' && s[k] <= '9') k++;
    return k > d0 ? k : 0;
}

/* Parses the integer of exactly `len` characters at s. */
static int parse_long_n(const char *s, size_t len, long lo, long hi, long *out) {
    char buf[32];
    if (len == 0 || int_span(s) != len) return ss_fail(SS_EARG, "not an integer");
    if (len >= sizeof buf) return ss_fail(SS_EARG, "out of range");
    memcpy(buf, s, len);
    buf[len] = 0;
    errno = 0;
    char *end;
    const long v = strtol(buf, &end, 10);
    if (errno == ERANGE || *end || v < lo || v > hi) return ss_fail(SS_EARG, "out of range");
    *out = v;
    return 0;
}

int cli_parse_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return ss_fail(SS_EARG, "empty");
    return parse_long_n(s, strlen(s), lo, hi, out);
}

int cli_parse_double(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return ss_fail(SS_EARG, "empty");
    /* the grammar first: strtod alone also takes blanks, "inf", "nan", hex and a leading '+' */
    size_t k = s[0] == '-', digits = 0;
    while (s[k] >= '0' && s[k] <= '9') k++, digits++;
    if (s[k] == '.') {
        k++;
        while (s[k] >= '0' && s[k] <= '9') k++, digits++;
    }
    if (!digits) return ss_fail(SS_EARG, "not a number");
    if (s[k] == 'e' || s[k] == 'E') {
        k++;
        if (s[k] == '+' || s[k] == '-') k++;
        if (!(s[k] >= '0' && s[k] <= '9')) return ss_fail(SS_EARG, "not a number");
        while (s[k] >= '0' && s[k] <= '9') k++;
    }
    if (s[k]) return ss_fail(SS_EARG, "not a number");
    errno = 0;
    char *end;
    const double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v) || !(v >= lo && v <= hi)) return ss_fail(SS_EARG, "out of range");
    *out = v;
    return 0;
}

int cli_parse_int_list(const char *s, long hi, int *dst, int max) {
    if (!s || !*s) return ss_fail(SS_EARG, "empty list");
    if (hi > INT_MAX) hi = INT_MAX;
    int n = 0;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        long v;
        if (len == 0) return ss_fail(SS_EARG, "empty item");
        if (parse_long_n(p, len, 0, hi, &v) < 0) return ss_fail(SS_EARG, "item %d is not an integer in [0, %ld]", n + 1, hi);
        for (int i = 0; i < n; i++)
            if (dst[i] == v) return ss_fail(SS_EARG, "%ld is listed twice", v);
        if (n >= max) return ss_fail(SS_EARG, "more than %d items", max);
        dst[n++] = (int)v;
        if (!comma) return n;
        p = comma + 1;
    }
}

int cli_parse_dims(const char *s, long lo, long hi, long *h, long *w) {
    if (!s || !*s) return ss_fail(SS_EARG, "empty");
    const char *x = strchr(s, 'x');
    if (!x) return ss_fail(SS_EARG, "no 'x'");
    long a, b;
    if (parse_long_n(s, (size_t)(x - s), lo, hi, &a) < 0 || parse_long_n(x + 1, strlen(x + 1), lo, hi, &b) < 0)
        return ss_fail(SS_EARG, "not two integers in [%ld, %ld]", lo, hi);
    *h = a, *w = b;
    return 0;
}

int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    if (cli_parse_long(s, lo, hi, out) < 0) {
        fprintf(stderr, "sinkscope %s: --%s must be an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    return 0;
}

int cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out) {
    if (cli_parse_double(s, lo, hi, out) < 0) {
        fprintf(stderr, "sinkscope %s: --%s must be a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    return 0;
}

int cli_int_list(const char *cmd, const char *opt, const char *s, int *dst, int max) {
    const int n = cli_parse_int_list(s, 1000000, dst, max);
    if (n < 0)
        fprintf(stderr, "sinkscope %s: --%s must be a comma-separated list of at most %d distinct block indices, got '%s' (%s)\n",
                cmd, opt, max, s, ss_err());
    return n;
}

int cli_precision(const char *cmd, const char *s) {
    int prec = SS_PREC_F32;
    if (s && ss_precision_parse(s, &prec) < 0) {
        fprintf(stderr, "sinkscope %s: --precision: %s\n", cmd, ss_err());
        return -1;
    }
    ss_bind_set_precision(prec);
    return 0;
}

int cli_dims(const char *cmd, const char *opt, const char *s, long lo, long hi, long *h, long *w) {
    if (cli_parse_dims(s, lo, hi, h, w) < 0) {
        fprintf(stderr, "sinkscope %s: --%s must look like 64x64 (HxW, each in [%ld, %ld]), got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    return 0;
}

int cli_find_resource(const char *rel, char *out, size_t size) {
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            if ((size_t)snprintf(out, size, "%s/%s", exe, rel) < size && access(out, F_OK) == 0) return 0;
        }
    }
    if ((size_t)snprintf(out, size, "%s", rel) >= size) { /* never look up a cut-off name */
        if (size) out[0] = 0;
        return -1;
    }
    return access(out, F_OK) == 0 ? 0 : -1;
}

int cli_find_embedded_model(const char *cmd, char *out, size_t size) {
    static const char rel[] = CLI_EMBEDDED_MODEL, index[] = "/model_index.json";
    char probe[4300];
    snprintf(probe, sizeof probe, "%s%s", rel, index);
    if (cli_find_resource(probe, out, size) < 0) {
        fprintf(stderr, "sinkscope %s: no --model given and the embedded model %s was not found "
                        "(looked next to the executable and in the current directory)\n", cmd, rel);
        return -1;
    }
    out[strlen(out) - strlen(index)] = 0;
    return 0;
}
