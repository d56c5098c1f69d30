/* Helpers shared by the test programs (linked into each of them). */
#ifndef SS_TEST_COMMON_H
#define SS_TEST_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Path under tests/ (the project's own reference data: tests/fixtures, tests/data), relative to
 * the repository root the tests run from; in a static rotating buffer (8 in turn). */
const char *tc_path(const char *fmt, ...);
/* root/fmt..., in the same rotating buffers. */
const char *tc_join(const char *root, const char *fmt, ...);
const char *tc_vjoin(const char *root, const char *fmt, va_list ap);
/* A tensor of a safetensors file as malloc'ed fp32; NULL if absent. numel/shape optional. */
float *tc_load(const char *file, const char *name, size_t *numel, int64_t *shape, int *ndim);
/* ||a-b|| / ||b|| in double. */
double tc_rel_l2(const float *a, const float *b, size_t n);
/* A fresh temporary directory (mkdtemp) and recursive removal. */
char *tc_tmpdir(void);
void tc_rmtree(const char *dir);
/* The sinkscope program under test ($SINKSCOPE_BIN or ./sinkscope). */
const char *tc_bin(void);
/* Run a shell command, capture its stderr+stdout into buf; returns the exit status. */
int tc_run(char *buf, size_t cap, const char *fmt, ...);
/* A whole file, NUL-terminated, malloc'ed (len optional); NULL if it cannot be read. */
char *tc_read_all(const char *path, size_t *len);
/* Start argv[0] with argv (NULL-terminated) in a child whose stdout and stderr go to /dev/null;
 * returns its pid (the child exits 127 if exec fails). */
int tc_spawn(char *const argv[]);
/* Wait for a child: its exit status, or minus the signal that killed it. */
int tc_wait_exit(int pid);
/* Write text to a file; 0 or -1. */
int tc_write_text(const char *path, const char *text);
/* Deterministic pseudo-random floats in [-a, a]. */
void tc_fill(float *x, size_t n, uint64_t seed, float a);

/* An SD3 reference fixture folder (tests/fixtures/NAME): the model, its inputs and their sizes. */
#include "models/sd3.h"
typedef struct {
    sd3_model *m;
    float *x, *ctx, *pooled, *t;
    int B, Hl, Wl, S, N;
    size_t nout;                  /* floats of `sample` */
    char dir[1024], expected[1024]; /* the folder and its expected.safetensors */
} tc_sd3fx;
/* 0, or -1 with ss_err() set (the caller fails the test). */
int tc_sd3fx_load(tc_sd3fx *f, const char *name);
void tc_sd3fx_free(tc_sd3fx *f);

#endif
