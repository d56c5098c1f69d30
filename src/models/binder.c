#include "models/binder.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/err.h"
#include "core/ops.h"

/* Drop the mapped file pages lying wholly inside a converted tensor from our resident set, so
 * that loading a BF16 checkpoint peaks near its fp32 size rather than fp32 + bf16. The mapping
 * is read-only and file-backed: a page touched again later is simply read back. */
static void release_pages(const void *data, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)data;
    const uintptr_t lo = (a + page - 1) & ~(page - 1), hi = (a + n) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

int ss_bind(ss_binder *bd, const float **slot, const char *name, int ndim, const int64_t *want) {
    if (bd->pass == 2) {
        bd->fn(bd->fn_ctx, name, ndim, want);
        return 0;
    }
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
    const int zero_copy = t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
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

int ss_bind_load(ss_binder *bd, int (*bind_all)(ss_binder *bd, void *model), void *model, float **arena) {
    bd->pass = 0;
    int rc = bind_all(bd, model);
    if (rc < 0) return rc;
    if (bd->need) {
        size_t bytes;
        *arena = ss_mul_size(sizeof(float), bd->need, &bytes) ? NULL : malloc(bytes);
        if (!*arena) return ss_fail(SS_ENOMEM, "%s: out of memory converting %zu weights to fp32", bd->dir, bd->need);
    }
    bd->pass = 1;
    bd->arena = *arena;
    if ((rc = bind_all(bd, model)) < 0) return rc;
    if (bd->zero_copy == 0) st_set_unmap((st_set *)bd->st);
    return 0;
}
