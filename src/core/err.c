#include "core/err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char g_err[1024];

int ss_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

int ss_err_prefix(int code, const char *fmt, ...) {
    char pre[512], old[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    size_t n = strlen(pre);
    if (n >= sizeof g_err) n = sizeof g_err - 1;
    memcpy(g_err, pre, n);
    snprintf(g_err + n, sizeof g_err - n, "%.*s", (int)(sizeof g_err - n - 1), old);
    return code;
}

const char *ss_err(void) { return g_err[0] ? g_err : "unknown error"; }
void ss_err_clear(void) { g_err[0] = 0; }

const char *ss_printable(const char *s, char *buf, size_t cap) {
    size_t n = 0;
    for (; *s && n + 4 < cap; s++) buf[n++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    if (*s) buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
    buf[n] = 0;
    return buf;
}

void *ss_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) ss_fail(SS_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *ss_malloc_aligned(size_t n) {
    const size_t r = n <= SIZE_MAX - 63 ? (n + 63) & ~(size_t)63 : 0; /* aligned_alloc wants a multiple */
    void *p = r ? aligned_alloc(64, r) : NULL;
    if (!p) ss_fail(SS_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *ss_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ss_fail(SS_ENOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
