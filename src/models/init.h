/* init: random-weight model folders for every family (sinkscope init, benchmarks, tests).
 *
 * One writer for all families: the family's enumerator (its binder in report-only mode) lists
 * every tensor with its diffusers name and shape, and each is drawn in that order from one
 * xorshift64* stream: fan-in scaled uniform (nn.Linear's bound 1/sqrt(fan_in); 1-D tensors use
 * fan-in 50), norm gains 1 ± 0.1, and tensors the family builds deterministically (SD3's sin-cos
 * position table) filled by the family. Then DIR/diffusion_pytorch_model.safetensors and
 * DIR/config.json are written. */
#ifndef SS_INIT_H
#define SS_INIT_H

#include <stddef.h>
#include <stdint.h>

typedef void (*ss_tensor_fn)(void *ctx, const char *name, int ndim, const int64_t *shape);

typedef struct {
    int (*check)(const void *cfg, const char *where);
    int (*enumerate)(const void *cfg, ss_tensor_fn fn, void *ctx);
    int (*save_config)(const void *cfg, const char *path);
    /* For a 1-D tensor named "*.weight": 1 when it is a norm gain (drawn around 1). */
    int (*is_gain)(const char *name);
    /* Fill x (n floats) when the family builds tensor `name` itself and return 1; else 0. May be NULL. */
    int (*fixed)(const void *cfg, const char *name, float *x, size_t n);
} ss_init_spec;

/* The folder for cfg with random weights from `seed`, stored as dtype (ST_F32, ST_F16, ST_BF16). */
int ss_init_random(const ss_init_spec *spec, const void *cfg, const char *dir, uint64_t seed, int dtype);

#endif
