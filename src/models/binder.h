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
 * fp32 size. Errors name the file and the tensor.
 *
 * Precision (nn/dnnl.h): a load in SS_PREC_BF16 stores every Linear weight bound through
 * ss_bind_linear as bf16 (ss_linear.wb; exact for BF16 checkpoints, rounded to nearest even from
 * F32/F16) and every other tensor as fp32, all converted (nothing used in place), so the file
 * is unmapped and the model holds about half its fp32 size. No fp32 copy of a Linear is kept. */
#ifndef SS_BINDER_H
#define SS_BINDER_H

#include <stddef.h>
#include <stdint.h>

#include "nn/ops.h"
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
    int precision;  /* SS_PREC_F32 or SS_PREC_BF16; ss_bind_load sets it from ss_bind_set_precision */
    size_t need16, used16; /* bf16 weights (pass 0: counted; pass 1: bound) */
    uint16_t *arena16;     /* pass 1: inside the same allocation as arena */
} ss_binder;

/* The precision loads on this thread bind their weights in (SS_PREC_F32 unless set): the
 * model-neutral load option a command sets before loading any family (thread-local). */
void ss_bind_set_precision(int prec);
int ss_bind_get_precision(void);

/* One tensor `name` of shape want[0..ndim) into *slot, as the pass says. SS_OK or an error. */
int ss_bind(ss_binder *bd, const float **slot, const char *name, int ndim, const int64_t *want);

/* A Linear's weight `name` of shape [l->out, l->in] into l->w (fp32) or, in a bf16 load, l->wb
 * (l->w NULL). The families bind every matrix op_linear multiplies by through this. */
int ss_bind_linear(ss_binder *bd, ss_linear *l, const char *name);

/* A whole load: bind_all(bd, model) in pass 0 (check and count), the fp32 arena for the converted
 * tensors (*arena, malloc'd, owned by the model; NULL when nothing is converted), then pass 1.
 * When every weight was converted, nothing points into the mapping any more: it is dropped
 * rather than holding the file's pages and the fp32 copy at once. In a bf16 load the bf16
 * weights live in the same allocation (after the fp32 part), so freeing *arena frees both.
 * bd->precision is the load's precision afterwards. SS_OK or an error. */
int ss_bind_load(ss_binder *bd, int (*bind_all)(ss_binder *bd, void *model), void *model, float **arena);

#endif
