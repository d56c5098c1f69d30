/* libFuzzer target for the command-line parsers of src/cli/args.c (not part of the library, so
 * included here): strict integers, numbers, index lists, HxW shapes and the `--name value`
 * parser. Checks soundness (what is accepted has the documented grammar, is in range and reads
 * back the same) and completeness (plain in-range values are accepted), and the one-line error
 * contract. Input: byte 0 picks the parser, the rest is the text (for cli_parse: arguments
 * separated by '\n'). The parsers print their errors: run with -close_fd_mask=3. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.c"

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static void one_line_error(void) {
    const char *e = ss_err();
    if (!*e || strchr(e, '\n')) abort();
}

static void check_long(const char *s, long lo, long hi) {
    long v = 0;
    ss_err_clear();
    const int rc = cli_parse_long(s, lo, hi, &v);
    size_t k = s[0] == '-', nd = 0;
    while (is_digit(s[k])) k++, nd++;
    const int grammar = nd > 0 && !s[k];
    if (rc == 0) {
        if (!grammar || v < lo || v > hi || strtol(s, NULL, 10) != v) abort();
    } else {
        one_line_error();
        if (grammar && nd <= 18) { /* fits a long: refused only when out of range */
            const long w = strtol(s, NULL, 10);
            if (w >= lo && w <= hi) abort();
        }
    }
}

static void check_double(const char *s, double lo, double hi) {
    double v = 0;
    ss_err_clear();
    if (cli_parse_double(s, lo, hi, &v) < 0) {
        one_line_error();
        return;
    }
    if (!(v >= lo && v <= hi) || strtod(s, NULL) != v || s[0] == '+') abort();
    for (const char *p = s; *p; p++)
        if (!is_digit(*p) && !strchr(".eE+-", *p)) abort();
}

static void check_list(const char *s, long hi, int max) {
    int dst[64];
    ss_err_clear();
    const int n = cli_parse_int_list(s, hi, dst, max);
    if (n < 0) {
        one_line_error();
        return;
    }
    if (n < 1 || n > max) abort();
    int commas = 0;
    for (const char *p = s; *p; p++) commas += *p == ',';
    if (commas != n - 1) abort();
    char canon[64 * 24] = "";
    for (int i = 0; i < n; i++) {
        if (dst[i] < 0 || dst[i] > hi) abort();
        for (int j = 0; j < i; j++)
            if (dst[i] == dst[j]) abort();
        char one[24];
        snprintf(one, sizeof one, "%s%d", i ? "," : "", dst[i]);
        strcat(canon, one);
    }
    int again[64];
    if (cli_parse_int_list(canon, hi, again, max) != n || memcmp(dst, again, sizeof(int) * n)) abort();
}

static void check_dims(const char *s, long lo, long hi) {
    long h = 0, w = 0;
    ss_err_clear();
    if (cli_parse_dims(s, lo, hi, &h, &w) < 0) {
        one_line_error();
        return;
    }
    if (h < lo || h > hi || w < lo || w > hi || strchr(strchr(s, 'x') + 1, 'x')) abort();
    char canon[64];
    snprintf(canon, sizeof canon, "%ldx%ld", h, w);
    long h2, w2;
    if (cli_parse_dims(canon, lo, hi, &h2, &w2) < 0 || h2 != h || w2 != w) abort();
}

static void check_cli_parse(char *text) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "fuzz";
    for (char *p = text; argc < 63;) {
        argv[argc++] = p;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        p = nl + 1;
    }
    argv[argc] = NULL;
    const char *a = NULL, *b = NULL, *c = NULL;
    int f = 0, g = 0;
    const cli_opt opts[] = {{"a", &a, NULL}, {"bb", &b, NULL}, {"c-c", &c, NULL}, {"f", NULL, &f}, {"g", NULL, &g}};
    const int rc = cli_parse(argc, argv, opts, 5, "");
    if (rc < -1 || rc > 1) abort();
    if (rc != 0) return;
    if (f & ~1 || g & ~1) abort();
    /* every value set is an argument that follows its option and does not look like one */
    const char *const vals[3] = {a, b, c};
    for (int k = 0; k < 3; k++) {
        if (!vals[k]) continue;
        int found = 0;
        for (int i = 2; i < argc && !found; i++)
            found = argv[i] == vals[k] && argv[i - 1][0] == '-' && argv[i - 1][1] == '-' && !strcmp(argv[i - 1] + 2, opts[k].name);
        if (!found || (vals[k][0] == '-' && vals[k][1] == '-')) abort();
    }
    /* and each option appears at most once */
    for (int k = 0; k < 5; k++) {
        int n = 0;
        for (int i = 1; i < argc; i++) n += argv[i][0] == '-' && argv[i][1] == '-' && !strcmp(argv[i] + 2, opts[k].name);
        if (n > 1) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 4096) return 0;
    char *s = malloc(size);
    if (!s) return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    static const long ranges[][2] = {{0, 0x7fffffffffffffffL}, {1, 4096}, {-10, 10}, {(-0x7fffffffffffffffL - 1), 0x7fffffffffffffffL}};
    switch (data[0] % 6) {
    case 0: check_long(s, ranges[(data[0] / 6) % 4][0], ranges[(data[0] / 6) % 4][1]); break;
    case 1: check_double(s, data[0] & 0x80 ? -1e300 : 1e-12, data[0] & 0x40 ? 1e300 : 10); break;
    case 2: check_list(s, data[0] & 0x80 ? 1000000 : 12, data[0] & 0x40 ? 64 : 4); break;
    case 3: check_dims(s, 1, data[0] & 0x80 ? 4096 : 0x7fffffffffffffffL); break;
    default: check_cli_parse(s); break;
    }
    free(s);
    return 0;
}
