#include "models/init.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/fsutil.h"
#include "io/safetensors.h"

typedef struct {
    const ss_init_spec *spec;
    const void *cfg;
    st_writer *w;
    st_dtype dtype;
    uint64_t state;
    int rc;
} init_ctx;

static void add_tensor(void *vctx, const char *name, int ndim, const int64_t *shape) {
    init_ctx *c = vctx;
    if (c->rc) return;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *x = malloc(sizeof(float) * (n ? n : 1));
    if (!x) {
        c->rc = ss_fail(SS_ENOMEM, "init: out of memory for '%s'", name);
        return;
    }
    const size_t len = strlen(name);
    if (c->spec->fixed && c->spec->fixed(c->cfg, name, x, n)) {
        /* built by the family */
    } else if (ndim == 1 && len > 7 && !strcmp(name + len - 7, ".weight") && c->spec->is_gain(name)) {
        for (size_t i = 0; i < n; i++) x[i] = (float)(1.0 + 0.1 * (2 * rng_xorshift64s_uniform01(&c->state) - 1));
    } else {
        const size_t fan_in = ndim >= 2 ? n / (size_t)shape[0] : 50;
        const double a = 1.0 / sqrt((double)fan_in);
        for (size_t i = 0; i < n; i++) x[i] = (float)(a * (2 * rng_xorshift64s_uniform01(&c->state) - 1));
    }
    c->rc = st_writer_add_f32(c->w, name, c->dtype, ndim, shape, x);
    free(x);
}

int ss_init_random(const ss_init_spec *spec, const void *cfg, const char *dir, uint64_t seed, int dtype) {
    int rc = spec->check(cfg, "init: transformer config");
    if (rc < 0) return rc;
    if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16)
        return ss_fail(SS_EARG, "init: weights must be stored as F32, F16 or BF16");
    if ((rc = ss_mkdir_p(dir)) < 0) return rc;
    init_ctx c = {.spec = spec, .cfg = cfg, .w = st_writer_new(), .dtype = (st_dtype)dtype,
                  .state = rng_xorshift64s_seed(seed)};
    if (!c.w) return SS_ENOMEM;
    rc = spec->enumerate(cfg, add_tensor, &c);
    if (!rc) rc = c.rc;
    char path[4200];
    if (!rc) {
        if ((size_t)snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir) >= sizeof path)
            rc = ss_fail(SS_EARG, "init: %s: path too long", dir);
        else
            rc = st_writer_save(c.w, path);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = spec->save_config(cfg, path);
    }
    st_writer_free(c.w);
    return rc;
}
