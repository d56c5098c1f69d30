#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_parse(int argc, char **argv, const cli_opt *opts, int n, const char *usage) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 1;
        }
        int found = 0;
        for (int j = 0; j < n && !found; j++) {
            if (strncmp(a, "--", 2) || strcmp(a + 2, opts[j].name)) continue;
            found = 1;
            if (opts[j].flag) {
                *opts[j].flag = 1;
            } else if (i + 1 >= argc) {
                fprintf(stderr, "sinkscope %s: option %s needs a value\n%s", argv[0], a, usage);
                return -1;
            } else {
                *opts[j].value = argv[++i];
            }
        }
        if (!found) {
            fprintf(stderr, "sinkscope %s: unknown argument '%s'\n%s", argv[0], a, usage);
            return -1;
        }
    }
    return 0;
}

int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sinkscope %s: --%s must be an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "sinkscope %s: --%s must be a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_int_list(const char *cmd, const char *opt, const char *s, int *dst, int max) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > 1000000 || (*end && *end != ',') || n >= max) {
            fprintf(stderr, "sinkscope %s: --%s must be a comma-separated list of at most %d block indices, got '%s'\n",
                    cmd, opt, max, s);
            return -1;
        }
        dst[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
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
    snprintf(out, size, "%s", rel);
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
