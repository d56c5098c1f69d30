#include "models/binder.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/err.h"
#include "nn/dnnl.h"
#include "nn/ops.h"

/* Drop the mapped file pages lying wholly inside a converted tensor from our resident set, so
 * that loading a BF16 checkpoint peaks near its fp32 size rather than fp32 + bf16. The mapping
 * is read-only and file-backed: a page touched again later is simply read back. */
static void release_pages(const void *data, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)data;
    const uintptr_t lo = (a + page - 1) & ~(page - 1), hi = (a + n) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static _Thread_local int t_precision;

void ss_bind_set_precision(int prec) { t_precision = prec; }
int ss_bind_get_precision(void) { return t_precision; }

/* The checks of every tensor: present, the shape the config implies, a float dtype. */
static int find_checked(ss_binder *bd, const char *name, int ndim, const int64_t *want, const st_tensor **out) {
    const st_tensor *t = st_set_find(bd->st, name);
    if (!t) return ss_fail(SS_EMISSING, "%s: tensor '%s' is missing from the checkpoint", bd->dir, name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[128] = "", exp[128] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? ", " : "", (long long)want[i]);
        return ss_fail(SS_ESHAPE, "%s: tensor '%s' has shape [%s], the config implies [%s]", t->file, name, got, exp);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return ss_fail(SS_EFORMAT, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16", t->file, name,
                       st_dtype_name(t->dtype));
    *out = t;
    return 0;
}

int ss_bind(ss_binder *bd, const float **slot, const char *name, int ndim, const int64_t *want) {
    if (bd->pass == 2) {
        bd->fn(bd->fn_ctx, name, ndim, want);
        return 0;
    }
    const st_tensor *t = NULL;
    int rc = find_checked(bd, name, ndim, want, &t);
    if (rc < 0) return rc;
    /* a bf16 load converts everything, so that the mapping can go */
    const int zero_copy =
        bd->precision == SS_PREC_F32 && t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
    if (bd->pass == 0) {
        if (!zero_copy) bd->need += (size_t)t->numel;
        return 0;
    }
    const float *f32 = zero_copy ? (const float *)t->data : bd->arena + bd->used;
    if (!zero_copy && st_to_f32(bd->arena + bd->used, t) < 0) return SS_EFORMAT;
    /* one pass over the weights: a NaN or infinity would turn every output into garbage */
    const long long bad = op_first_nonfinite(f32, (size_t)t->numel);
    if (bad >= 0)
        return ss_fail(SS_EFORMAT, "%s: tensor '%s' has a non-finite value (%s) at flat index %lld", t->file, name,
                       isnan(f32[bad]) ? "NaN" : "infinity", bad);
    if (zero_copy) {
        bd->zero_copy++;
    } else {
        release_pages(t->data, t->nbytes);
        bd->used += (size_t)t->numel;
    }
    *slot = f32;
    return 0;
}

/* t's values rounded to bf16 into dst (BF16: copied as they are). */
static int to_bf16(uint16_t *dst, const st_tensor *t) {
    const size_t n = (size_t)t->numel;
    if (t->dtype == ST_BF16) {
        memcpy(dst, t->data, n * sizeof(uint16_t)); /* little-endian, as the file */
        return 0;
    }
    if (t->dtype == ST_F32) {
        const unsigned char *p = t->data;
#pragma omp parallel for schedule(static) if (n > 1 << 20)
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            dst[i] = ss_bf16_from_f32(f);
        }
        return 0;
    }
    float *f = ss_malloc(n * sizeof(float) + 1); /* F16: through fp32, one tensor at a time */
    if (!f) return SS_ENOMEM;
    int rc = st_to_f32(f, t);
    if (rc >= 0)
        for (size_t i = 0; i < n; i++) dst[i] = ss_bf16_from_f32(f[i]);
    free(f);
    return rc;
}

/* Index of the first bf16 NaN or infinity (exponent bits all ones) in x[0, n), or -1. */
static long long first_nonfinite_bf16(const uint16_t *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((x[i] & 0x7f80) == 0x7f80) return (long long)i;
    return -1;
}

/* bf16 elements a Linear's weight takes in the arena: packed (oneDNN's blocked layout) where this
 * CPU has a brgemm bf16 matmul, else plain; rounded up to 64 bytes, so every weight starts aligned. */
static size_t linear_elems(const ss_linear *l, int *packed) {
    const size_t pk = ss_dnnl_packed_elems(l->out, l->in), n = pk ? pk : (size_t)l->out * l->in;
    *packed = pk != 0;
    return (n + 31) & ~(size_t)31;
}

int ss_bind_linear(ss_binder *bd, ss_linear *l, const char *name) {
    const int64_t want[2] = {l->out, l->in};
    if (bd->pass == 2 || bd->precision != SS_PREC_BF16) {
        l->wb = NULL;
        l->packed = 0;
        return ss_bind(bd, &l->w, name, 2, want);
    }
    const st_tensor *t = NULL;
    int rc = find_checked(bd, name, 2, want, &t);
    if (rc < 0) return rc;
    int packed;
    const size_t slot = linear_elems(l, &packed);
    if (bd->pass == 0) {
        bd->need16 += slot;
        return 0;
    }
    uint16_t *w = bd->arena16 + bd->used16;
    /* packed: the plain bf16 values first in a buffer of their own, then reordered into the slot */
    uint16_t *plain = packed ? ss_malloc(sizeof(uint16_t) * (size_t)t->numel) : w;
    if (!plain) return SS_ENOMEM;
    if ((rc = to_bf16(plain, t)) >= 0) {
        const long long bad = first_nonfinite_bf16(plain, (size_t)t->numel);
        if (bad >= 0)
            rc = ss_fail(SS_EFORMAT, "%s: tensor '%s' has a non-finite value (%s) at flat index %lld%s", t->file, name,
                         (plain[bad] & 0x7f) ? "NaN" : "infinity", bad,
                         t->dtype == ST_F32 && !(plain[bad] & 0x7f) ? " (beyond the bf16 range)" : "");
    }
    if (rc >= 0 && packed) rc = ss_dnnl_pack(w, plain, l->out, l->in);
    if (packed) free(plain);
    if (rc < 0) return rc;
    release_pages(t->data, t->nbytes);
    bd->used16 += slot;
    l->w = NULL;
    l->wb = w;
    l->packed = packed;
    return 0;
}

int ss_bind_load(ss_binder *bd, int (*bind_all)(ss_binder *bd, void *model), void *model, float **arena) {
    bd->precision = t_precision;
    bd->pass = 0;
    int rc = bind_all(bd, model);
    if (rc < 0) return rc;
    if (bd->need || bd->need16) {
        /* fp32 part, padded to 64 bytes, then the bf16 part */
        size_t f32b, b16b, bytes;
        if (ss_mul_size(sizeof(float), bd->need, &f32b) || ss_add_size(f32b, 63, &f32b) ||
            ss_mul_size(sizeof(uint16_t), bd->need16, &b16b) || ss_add_size(f32b & ~(size_t)63, b16b, &bytes) ||
            ss_add_size(bytes, 63, &bytes))
            bytes = 0;
        f32b &= ~(size_t)63;
        *arena = bytes ? aligned_alloc(64, bytes & ~(size_t)63) : NULL;
        if (!*arena)
            return ss_fail(SS_ENOMEM, "%s: out of memory converting %zu weights to fp32 and %zu to bf16", bd->dir,
                           bd->need, bd->need16);
        bd->arena16 = (uint16_t *)((char *)*arena + f32b);
    }
    bd->pass = 1;
    bd->arena = *arena;
    if ((rc = bind_all(bd, model)) < 0) return rc;
    if (bd->zero_copy == 0) st_set_unmap((st_set *)bd->st);
    return 0;
}
