/* binder: binds a checkpoint's tensors to a model's weight slots, for every family's loader.
 *
 * Loading runs the family's list of weights through ss_bind up to three ways:
 *   pass 0: check each tensor (present, the shape the config implies, F32/F16/BF16) and count
 *           the floats that must be converted (need);
 *   pass 1: with arena holding `need` floats: convert (or use F32 in place from the mapping, when
 *           aligned), refuse a non-finite value naming the tensor, and set the slot;
 *   pass 2: only report each name and shape to fn (enumerating a family's tensors: random init,
 *           the trainer).
 * Mapped pages of a converted tensor are dropped at once, so a BF16 checkpoint loads near its
 * fp32 size. Errors name the file and the tensor. */
#ifndef SS_BINDER_H
#define SS_BINDER_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

typedef struct {
    const st_set *st;
    const char *dir;
    int pass;       /* 0: check and count, 1: convert and bind, 2: report names and shapes to fn */
    void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape);
    void *fn_ctx;
    size_t need;    /* floats to convert (pass 0) */
    float *arena;   /* pass 1 */
    size_t used;
    int zero_copy;  /* pass 1: tensors used in place from the mapping */
} ss_binder;

/* One tensor `name` of shape want[0..ndim) into *slot, as the pass says. SS_OK or an error. */
int ss_bind(ss_binder *bd, const float **slot, const char *name, int ndim, const int64_t *want);

/* A whole load: bind_all(bd, model) in pass 0 (check and count), the fp32 arena for the converted
 * tensors (*arena, malloc'd, owned by the model; NULL when nothing is converted), then pass 1.
 * When every weight was converted, nothing points into the mapping any more: it is dropped
 * rather than holding the file's pages and the fp32 copy at once. SS_OK or an error. */
int ss_bind_load(ss_binder *bd, int (*bind_all)(ss_binder *bd, void *model), void *model, float **arena);

#endif
