/* args: tiny `--name value` / `--flag` option parser shared by the sub-commands.
 *
 * Rules (every command): an option is given at most once; an option that takes a value needs
 * one, and a value may not itself start with "--" (so `--out --steps 10` is an error naming
 * --out, not a file called "--steps"); negative numbers ("-1") start with one dash and are
 * values. Numbers are parsed strictly: the whole string, no blanks, no trailing characters,
 * range checked, overflow detected. */
#ifndef SS_ARGS_H
#define SS_ARGS_H

#include <stddef.h>

typedef struct {
    const char *name;   /* without the leading "--" */
    const char **value; /* set for options that take a value, else NULL */
    int *flag;          /* set to 1 for flags, else NULL */
} cli_opt;

/* Returns 0 on success, 1 if --help was printed, -1 after printing an error and the usage. */
int cli_parse(int argc, char **argv, const cli_opt *opts, int n, const char *usage);
/* For commands with their own loop: 0 when argv[i] (option `opt`) has a usable value at
 * argv[i + 1], else prints "sinkscope CMD: option OPT needs a value ..." and returns -1. */
int cli_need_value(const char *cmd, int argc, char **argv, int i);

/* Strict parsers that print nothing: 0, or -1 with the reason in ss_err() (core/err.h). */
int cli_parse_long(const char *s, long lo, long hi, long *out);     /* [-]digits */
int cli_parse_double(const char *s, double lo, double hi, double *out); /* [-]digits[.digits][e[+-]digits] */
/* Comma-separated distinct integers in [0, hi], at least one, at most max: the count or -1. */
int cli_parse_int_list(const char *s, long hi, int *dst, int max);
/* "HxW" (e.g. 64x64), each in [lo, hi]. */
int cli_parse_dims(const char *s, long lo, long hi, long *h, long *w);

/* Parse helpers: print "sinkscope CMD: --opt: ..." and return -1 on a bad value. */
int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* Comma-separated distinct non-negative integers, e.g. "0,6,12". Returns the count or -1. */
int cli_int_list(const char *cmd, const char *opt, const char *s, int *dst, int max);
/* "HxW", each in [lo, hi]. */
int cli_dims(const char *cmd, const char *opt, const char *s, long lo, long hi, long *h, long *w);

/* --precision f32|bf16 (NULL: f32): sets the precision the command's later model loads use
 * (ss_bind_set_precision, nn/dnnl.h). Prints "sinkscope CMD: --precision: ..." and returns -1
 * on a bad value. */
int cli_precision(const char *cmd, const char *s);
#define CLI_PRECISION_HELP \
    "  --precision P      f32 (default) or bf16: Linear weights stored in bf16, products through oneDNN\n"

/* A file or folder shipped with sinkscope (rel, e.g. "models/shapeworld/model_index.json"):
 * next to the executable first, then in the current directory. 0 if found (out holds it);
 * -1 if not found or if the path does not fit in out. */
int cli_find_resource(const char *rel, char *out, size_t size);

#define CLI_EMBEDDED_MODEL "models/shapeworld"

/* The embedded model folder (CLI_EMBEDDED_MODEL, located like a resource) into out; prints
 * "sinkscope CMD: no --model given ..." and returns -1 when it is missing. */
int cli_find_embedded_model(const char *cmd, char *out, size_t size);

#endif
