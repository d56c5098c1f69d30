/* args: tiny `--name value` / `--flag` option parser shared by the sub-commands. */
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
/* Parse helpers: print "sinkscope CMD: --opt: ..." and return -1 on a bad value. */
int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* Comma-separated non-negative integers, e.g. "0,6,12". Returns the count or -1. */
int cli_int_list(const char *cmd, const char *opt, const char *s, int *dst, int max);

/* A file or folder shipped with sinkscope (rel, e.g. "models/shapeworld/model_index.json"):
 * next to the executable first, then in the current directory. 0 if found (out holds it). */
int cli_find_resource(const char *rel, char *out, size_t size);

#define CLI_EMBEDDED_MODEL "models/shapeworld"

/* The embedded model folder (CLI_EMBEDDED_MODEL, located like a resource) into out; prints
 * "sinkscope CMD: no --model given ..." and returns -1 when it is missing. */
int cli_find_embedded_model(const char *cmd, char *out, size_t size);

#endif
