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
#include "models/init.h"

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

static int flux_spec_check(const void *cfg, const char *where) { return flux_config_check(cfg, where); }
static int flux_spec_enumerate(const void *cfg, ss_tensor_fn fn, void *ctx) { return flux_enumerate_tensors(cfg, fn, ctx); }
static int flux_spec_save(const void *cfg, const char *path) { return flux_config_save(cfg, path); }
static int flux_spec_is_gain(const char *name) { return strstr(name, ".norm_") != NULL; } /* the q/k RMSNorms */

int flux_init_random(const flux_config *cfg, const char *dir, uint64_t seed, int dtype) {
    static const ss_init_spec spec = {flux_spec_check, flux_spec_enumerate, flux_spec_save, flux_spec_is_gain, NULL};
    return ss_init_random(&spec, cfg, dir, seed, dtype);
}
