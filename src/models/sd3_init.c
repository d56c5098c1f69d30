/* Random-weight SD3 models (benchmarks, tests, and the starting point of training). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "models/sd3.h"

typedef struct {
    const sd3_config *cfg;
    st_writer *w;
    st_dtype dtype;
    uint64_t state;
    int rc;
} init_ctx;


/* The 2D sin-cos table of dit-spec 2.6 for an M x M grid (what diffusers builds at init). */
void sd3_sincos_table(float *out, int M, int D, double base_size, double interp) {
    const int q = D / 4;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < M; c++) {
            const float ph = (float)r / (float)(M / base_size) / (float)interp;
            const float pw = (float)c / (float)(M / base_size) / (float)interp;
            float *e = out + ((size_t)r * M + c) * D;
            for (int k = 4 * q; k < D; k++) e[k] = 0.0f; /* D % 4 tail: defined, not left as garbage */
            for (int k = 0; k < q; k++) {
                const double w = 1.0 / pow(10000.0, (double)k / q);
                e[k] = (float)sin(pw * w);
                e[q + k] = (float)cos(pw * w);
                e[2 * q + k] = (float)sin(ph * w);
                e[3 * q + k] = (float)cos(ph * w);
            }
        }
}

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
    if (!strcmp(name, "pos_embed.pos_embed")) {
        const sd3_config *g = c->cfg;
        sd3_sincos_table(x, g->pos_embed_max_size, g->num_heads * g->head_dim, (double)g->sample_size / g->patch_size, 1.0);
    } else if (ndim == 1 && len > 7 && !strcmp(name + len - 7, ".weight")) {
        for (size_t i = 0; i < n; i++) x[i] = (float)(1.0 + 0.1 * (2 * rng_xorshift64s_uniform01(&c->state) - 1)); /* RMSNorm gains */
    } else {
        /* fan-in scaled uniform weights, small biases */
        size_t fan_in = ndim >= 2 ? n / (size_t)shape[0] : 50;
        const double a = 1.0 / sqrt((double)fan_in);
        for (size_t i = 0; i < n; i++) x[i] = (float)(a * (2 * rng_xorshift64s_uniform01(&c->state) - 1));
    }
    c->rc = st_writer_add_f32(c->w, name, c->dtype, ndim, shape, x);
    free(x);
}

int sd3_init_random(const sd3_config *cfg, const char *dir, uint64_t seed, int dtype) {
    int mrc = sd3_config_check(cfg, "init: transformer config");
    if (mrc < 0) return mrc;
    if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16)
        return ss_fail(SS_EARG, "init: weights must be stored as F32, F16 or BF16");
    mrc = ss_mkdir_p(dir);
    if (mrc < 0) return mrc;
    init_ctx c = {.cfg = cfg, .w = st_writer_new(), .dtype = (st_dtype)dtype, .state = rng_xorshift64s_seed(seed)};
    if (!c.w) return SS_ENOMEM;
    int rc = sd3_enumerate_tensors(cfg, add_tensor, &c);
    if (!rc) rc = c.rc;
    char path[4200];
    if (!rc) {
        snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
        rc = st_writer_save(c.w, path);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = sd3_config_save(cfg, path);
    }
    st_writer_free(c.w);
    return rc;
}
