/* err: one thread-local "last error" string, stb-style.
 *
 * Functions that can fail return a negative code (or NULL) and leave a one-line reason here,
 * naming the file and the tensor or field at fault. Callers add context with ss_err_prefix()
 * and the CLI prints ss_err() once before exiting non-zero.
 */
#ifndef SS_ERR_H
#define SS_ERR_H

#include <stddef.h>
#include <stdint.h>

#define SS_OK 0
#define SS_EIO -1      /* could not open / read / write a file */
#define SS_EFORMAT -2  /* malformed or corrupt content */
#define SS_ESHAPE -3   /* a tensor or input has the wrong shape */
#define SS_EMISSING -4 /* something required is absent */
#define SS_EARG -5     /* a bad argument or option value */
#define SS_ENOMEM -6   /* allocation failed or a size overflowed */

/* Set the error (printf-style); returns `code` so callers can `return ss_fail(SS_EIO, ...)`. */
int ss_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepend context ("file.safetensors: ") to the current error. Returns `code`. */
int ss_err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ss_err(void);
void ss_err_clear(void);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
static inline int ss_mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int ss_add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* s made fit for a one-line message: control characters as '?', cut (with "...") to fit buf of
 * cap >= 4 bytes. Returns buf. */
const char *ss_printable(const char *s, char *buf, size_t cap);

/* malloc/calloc that set the error on failure. */
void *ss_malloc(size_t n);
void *ss_calloc(size_t count, size_t size);
/* malloc for n bytes starting on a 64-byte boundary (released with free; NULL on failure, error
 * set). The bf16 products' operands need it: on the AMX Xeon a 256 x 6144 x 1536 oneDNN product
 * ran at 1108 GFLOP/s with 64-byte-aligned operands, 837 with A 16 bytes off, 626 with the
 * weights 16 bytes off, 428 with all three off (glibc's large mallocs are 16 bytes past a page). */
void *ss_malloc_aligned(size_t n);

#endif
