/* Random-weight FLUX models (benchmarks and tests) and the config writer. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/fsutil.h"
#include "io/jsonfile.h"
#include "io/safetensors.h"
#include "models/flux.h"

int flux_config_save(const flux_config *c, const char *path) {
    json_t *o = json_object(), *ax = json_array();
    json_object_set_new(o, "_class_name", json_string("FluxTransformer2DModel"));
    json_object_set_new(o, "patch_size", json_integer(c->patch_size));
    json_object_set_new(o, "in_channels", json_integer(c->in_channels));
    json_object_set_new(o, "out_channels", json_integer(c->out_channels));
    json_object_set_new(o, "num_layers", json_integer(c->num_layers));
    json_object_set_new(o, "num_single_layers", json_integer(c->num_single_layers));
    json_object_set_new(o, "attention_head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "num_attention_heads", json_integer(c->num_heads));
    json_object_set_new(o, "joint_attention_dim", json_integer(c->joint_attention_dim));
    json_object_set_new(o, "pooled_projection_dim", json_integer(c->pooled_projection_dim));
    json_object_set_new(o, "guidance_embeds", json_boolean(c->guidance_embeds));
    for (int a = 0; a < c->n_axes; a++) json_array_append_new(ax, json_integer(c->axes_dims[a]));
    json_object_set_new(o, "axes_dims_rope", ax);
    return ss_json_save(path, o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}

typedef struct {
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
    if (ndim == 1 && strstr(name, ".norm_") && len > 7 && !strcmp(name + len - 7, ".weight")) {
        for (size_t i = 0; i < n; i++) x[i] = (float)(1.0 + 0.1 * (2 * rng_xorshift64s_uniform01(&c->state) - 1)); /* RMSNorm gains */
    } else { /* fan-in scaled uniform weights (nn.Linear's bound), biases alike */
        const size_t fan_in = ndim >= 2 ? n / (size_t)shape[0] : 50;
        const double a = 1.0 / sqrt((double)fan_in);
        for (size_t i = 0; i < n; i++) x[i] = (float)(a * (2 * rng_xorshift64s_uniform01(&c->state) - 1));
    }
    c->rc = st_writer_add_f32(c->w, name, c->dtype, ndim, shape, x);
    free(x);
}

int flux_init_random(const flux_config *cfg, const char *dir, uint64_t seed, int dtype) {
    int rc = flux_config_check(cfg, "init: transformer config");
    if (rc < 0) return rc;
    if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16)
        return ss_fail(SS_EARG, "init: weights must be stored as F32, F16 or BF16");
    if ((rc = ss_mkdir_p(dir)) < 0) return rc;
    init_ctx c = {.w = st_writer_new(), .dtype = (st_dtype)dtype, .state = rng_xorshift64s_seed(seed)};
    if (!c.w) return SS_ENOMEM;
    rc = flux_enumerate_tensors(cfg, add_tensor, &c);
    if (!rc) rc = c.rc;
    char path[4200];
    if (!rc) {
        snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
        rc = st_writer_save(c.w, path);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = flux_config_save(cfg, path);
    }
    st_writer_free(c.w);
    return rc;
}
