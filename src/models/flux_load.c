/* Loading a FluxTransformer2DModel folder: config.json, then every expected weight checked for
 * presence, dtype and shape (pass 0), then converted and bound (pass 1). */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/err.h"
#include "io/jsonfile.h"
#include "io/safetensors.h"
#include "models/binder.h"
#include "models/flux.h"

static const struct {
    const char *key;
    size_t off;
    int lo, hi;
} RANGES[] = {
    {"patch_size", offsetof(flux_config, patch_size), 1, 64},
    {"in_channels", offsetof(flux_config, in_channels), 1, 1 << 16},
    {"out_channels", offsetof(flux_config, out_channels), 1, 1 << 16},
    {"num_layers", offsetof(flux_config, num_layers), 0, FLUX_MAX_LAYERS},
    {"num_single_layers", offsetof(flux_config, num_single_layers), 0, FLUX_MAX_LAYERS},
    {"attention_head_dim", offsetof(flux_config, head_dim), 2, 1024},
    {"num_attention_heads", offsetof(flux_config, num_heads), 1, 1024},
    {"joint_attention_dim", offsetof(flux_config, joint_attention_dim), 1, 1 << 20},
    {"pooled_projection_dim", offsetof(flux_config, pooled_projection_dim), 1, 1 << 20},
};

int flux_config_check(const flux_config *c, const char *where) {
    for (size_t i = 0; i < sizeof RANGES / sizeof RANGES[0]; i++) {
        const int v = *(const int *)((const char *)c + RANGES[i].off);
        if (v < RANGES[i].lo || v > RANGES[i].hi)
            return ss_fail(SS_EFORMAT, "%s: field '%s' = %d is outside [%d, %d]", where, RANGES[i].key, v, RANGES[i].lo,
                           RANGES[i].hi);
    }
    if ((long)c->num_heads * c->head_dim > (1 << 16))
        return ss_fail(SS_EFORMAT, "%s: num_attention_heads x attention_head_dim = %ld is too large", where,
                       (long)c->num_heads * c->head_dim);
    if ((long)c->patch_size * c->patch_size * c->out_channels > (1 << 20))
        return ss_fail(SS_EFORMAT, "%s: patch_size^2 x out_channels is too large", where);
    if (c->guidance_embeds != 0 && c->guidance_embeds != 1)
        return ss_fail(SS_EFORMAT, "%s: guidance_embeds must be a boolean", where);
    if (c->n_axes < 1 || c->n_axes > FLUX_MAX_AXES)
        return ss_fail(SS_EFORMAT, "%s: axes_dims_rope must list 1 to %d axes, not %d", where, FLUX_MAX_AXES, c->n_axes);
    long sum = 0;
    for (int a = 0; a < c->n_axes; a++) {
        if (c->axes_dims[a] < 2 || c->axes_dims[a] % 2 || c->axes_dims[a] > c->head_dim)
            return ss_fail(SS_EFORMAT, "%s: axes_dims_rope[%d] = %d must be even and in [2, attention_head_dim %d]", where,
                           a, c->axes_dims[a], c->head_dim);
        sum += c->axes_dims[a];
    }
    if (sum != c->head_dim)
        return ss_fail(SS_EFORMAT, "%s: axes_dims_rope sums to %ld, but attention_head_dim is %d", where, sum,
                       c->head_dim);
    return 0;
}

static int get_int(json_t *root, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be an integer", path, key);
    const json_int_t x = json_integer_value(v);
    if (x < -(1 << 30) || x > (1 << 30))
        return ss_fail(SS_EFORMAT, "%s: field '%s' = %lld is out of range", path, key, (long long)x);
    *out = (int)x;
    return 0;
}

int flux_config_load(flux_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: config must be a JSON object", path);
        goto done;
    }
    json_t *cls = json_object_get(root, "_class_name");
    if (!cls || !json_is_string(cls) || strcmp(json_string_value(cls), "FluxTransformer2DModel")) {
        rc = ss_fail(SS_EFORMAT, "%s: _class_name is %s, expected FluxTransformer2DModel", path,
                     !cls ? "missing" : json_is_string(cls) ? json_string_value(cls) : "not a string");
        goto done;
    }
    /* diffusers' class defaults */
    c->patch_size = 1; c->in_channels = 64; c->out_channels = INT_MIN; c->num_layers = 19; c->num_single_layers = 38;
    c->head_dim = 128; c->num_heads = 24; c->joint_attention_dim = 4096; c->pooled_projection_dim = 768;
    c->n_axes = 3; c->axes_dims[0] = 16; c->axes_dims[1] = 56; c->axes_dims[2] = 56;
    for (size_t i = 0; i < sizeof RANGES / sizeof RANGES[0]; i++)
        if ((rc = get_int(root, path, RANGES[i].key, (int *)((char *)c + RANGES[i].off))) < 0) goto done;
    if (c->out_channels == INT_MIN) c->out_channels = c->in_channels; /* absent or null */
    json_t *g = json_object_get(root, "guidance_embeds");
    if (g && !json_is_null(g)) {
        if (!json_is_boolean(g)) {
            rc = ss_fail(SS_EFORMAT, "%s: field 'guidance_embeds' must be true or false", path);
            goto done;
        }
        c->guidance_embeds = json_is_true(g);
    }
    json_t *ax = json_object_get(root, "axes_dims_rope");
    if (ax && !json_is_null(ax)) {
        if (!json_is_array(ax) || json_array_size(ax) < 1 || json_array_size(ax) > FLUX_MAX_AXES) {
            rc = ss_fail(SS_EFORMAT, "%s: field 'axes_dims_rope' must be a list of 1 to %d integers", path, FLUX_MAX_AXES);
            goto done;
        }
        c->n_axes = (int)json_array_size(ax);
        for (int a = 0; a < c->n_axes; a++) {
            json_t *e = json_array_get(ax, (size_t)a);
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > (1 << 20)) {
                rc = ss_fail(SS_EFORMAT, "%s: axes_dims_rope[%d] is not a non-negative integer", path, a);
                goto done;
            }
            c->axes_dims[a] = (int)json_integer_value(e);
        }
    }
    rc = flux_config_check(c, path);
done:
    json_decref(root);
    return rc;
}

/* ---- weight binding ---- */

typedef ss_binder binder;

static int bind(binder *bd, const float **slot, const char *name, int ndim, int64_t d0, int64_t d1) {
    const int64_t want[2] = {d0, d1};
    return ss_bind(bd, slot, name, ndim, want);
}

static int bind_lin(binder *bd, ss_linear *l, const char *prefix, const char *sub, int out, int in) {
    char name[256];
    l->in = in;
    l->out = out;
    snprintf(name, sizeof name, "%s%s.weight", prefix, sub);
    int rc = ss_bind_linear(bd, l, name);
    if (rc) return rc;
    snprintf(name, sizeof name, "%s%s.bias", prefix, sub);
    return bind(bd, &l->b, name, 1, out, 0);
}

static int bind_vec(binder *bd, const float **v, const char *prefix, const char *sub, int n) {
    char name[256];
    snprintf(name, sizeof name, "%s%s", prefix, sub);
    return bind(bd, v, name, 1, n, 0);
}

#define TRY(x)                   \
    do {                         \
        int rc_ = (x);           \
        if (rc_ < 0) return rc_; \
    } while (0)

static int bind_all(binder *bd, flux_model *m) {
    const flux_config *c = &m->cfg;
    const int D = m->D, dh = c->head_dim;
    TRY(bind_lin(bd, &m->x_embed, "x_embedder", "", D, c->in_channels));
    TRY(bind_lin(bd, &m->ctx_embed, "context_embedder", "", D, c->joint_attention_dim));
    TRY(bind_lin(bd, &m->t1, "time_text_embed.timestep_embedder.linear_1", "", D, 256));
    TRY(bind_lin(bd, &m->t2, "time_text_embed.timestep_embedder.linear_2", "", D, D));
    if (c->guidance_embeds) {
        TRY(bind_lin(bd, &m->g1, "time_text_embed.guidance_embedder.linear_1", "", D, 256));
        TRY(bind_lin(bd, &m->g2, "time_text_embed.guidance_embedder.linear_2", "", D, D));
    }
    TRY(bind_lin(bd, &m->p1, "time_text_embed.text_embedder.linear_1", "", D, c->pooled_projection_dim));
    TRY(bind_lin(bd, &m->p2, "time_text_embed.text_embedder.linear_2", "", D, D));
    char p[64];
    for (int i = 0; i < c->num_layers; i++) {
        flux_double *b = &m->dbl[i];
        snprintf(p, sizeof p, "transformer_blocks.%d.", i);
        TRY(bind_lin(bd, &b->norm1, p, "norm1.linear", 6 * D, D));
        TRY(bind_lin(bd, &b->norm1_ctx, p, "norm1_context.linear", 6 * D, D));
        TRY(bind_lin(bd, &b->q, p, "attn.to_q", D, D));
        TRY(bind_lin(bd, &b->k, p, "attn.to_k", D, D));
        TRY(bind_lin(bd, &b->v, p, "attn.to_v", D, D));
        TRY(bind_lin(bd, &b->add_q, p, "attn.add_q_proj", D, D));
        TRY(bind_lin(bd, &b->add_k, p, "attn.add_k_proj", D, D));
        TRY(bind_lin(bd, &b->add_v, p, "attn.add_v_proj", D, D));
        TRY(bind_vec(bd, &b->norm_q, p, "attn.norm_q.weight", dh));
        TRY(bind_vec(bd, &b->norm_k, p, "attn.norm_k.weight", dh));
        TRY(bind_vec(bd, &b->norm_added_q, p, "attn.norm_added_q.weight", dh));
        TRY(bind_vec(bd, &b->norm_added_k, p, "attn.norm_added_k.weight", dh));
        TRY(bind_lin(bd, &b->out, p, "attn.to_out.0", D, D));
        TRY(bind_lin(bd, &b->add_out, p, "attn.to_add_out", D, D));
        TRY(bind_lin(bd, &b->ff1, p, "ff.net.0.proj", 4 * D, D));
        TRY(bind_lin(bd, &b->ff2, p, "ff.net.2", D, 4 * D));
        TRY(bind_lin(bd, &b->cff1, p, "ff_context.net.0.proj", 4 * D, D));
        TRY(bind_lin(bd, &b->cff2, p, "ff_context.net.2", D, 4 * D));
    }
    for (int j = 0; j < c->num_single_layers; j++) {
        flux_single *b = &m->sgl[j];
        snprintf(p, sizeof p, "single_transformer_blocks.%d.", j);
        TRY(bind_lin(bd, &b->norm, p, "norm.linear", 3 * D, D));
        TRY(bind_lin(bd, &b->q, p, "attn.to_q", D, D));
        TRY(bind_lin(bd, &b->k, p, "attn.to_k", D, D));
        TRY(bind_lin(bd, &b->v, p, "attn.to_v", D, D));
        TRY(bind_vec(bd, &b->norm_q, p, "attn.norm_q.weight", dh));
        TRY(bind_vec(bd, &b->norm_k, p, "attn.norm_k.weight", dh));
        TRY(bind_lin(bd, &b->mlp, p, "proj_mlp", 4 * D, D));
        TRY(bind_lin(bd, &b->out, p, "proj_out", D, 5 * D));
    }
    TRY(bind_lin(bd, &m->norm_out, "norm_out.linear", "", 2 * D, D));
    TRY(bind_lin(bd, &m->proj_out, "proj_out", "", c->patch_size * c->patch_size * c->out_channels, D));
    return 0;
}

static int bind_all_model(ss_binder *bd, void *m) { return bind_all(bd, m); }

int flux_load(flux_model **out, const char *dir) {
    *out = NULL;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "%s: path too long", dir);
    flux_model *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    int rc = flux_config_load(&m->cfg, path);
    if (rc < 0) goto fail;
    m->D = m->cfg.num_heads * m->cfg.head_dim;
    m->dbl = ss_calloc((size_t)m->cfg.num_layers + 1, sizeof *m->dbl);
    m->sgl = ss_calloc((size_t)m->cfg.num_single_layers + 1, sizeof *m->sgl);
    if (!m->dbl || !m->sgl) {
        rc = SS_ENOMEM;
        goto fail;
    }
    st_set *st = NULL;
    if ((rc = st_set_open(&st, dir)) < 0) goto fail;
    m->files = st;
    binder bd = {.st = st, .dir = dir};
    if ((rc = ss_bind_load(&bd, bind_all_model, m, &m->arena)) < 0) goto fail;
    m->precision = bd.precision;
    *out = m;
    return 0;
fail:
    flux_free(m);
    return rc;
}

void flux_free(flux_model *m) {
    if (!m) return;
    st_set_close((st_set *)m->files);
    free(m->arena);
    free(m->dbl);
    free(m->sgl);
    free(m);
}

int flux_enumerate_tensors(const flux_config *c, void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape),
                           void *ctx) {
    flux_model m = {.cfg = *c, .D = c->num_heads * c->head_dim};
    m.dbl = ss_calloc((size_t)c->num_layers + 1, sizeof *m.dbl);
    m.sgl = ss_calloc((size_t)c->num_single_layers + 1, sizeof *m.sgl);
    int rc = SS_ENOMEM;
    if (m.dbl && m.sgl) {
        binder bd = {.pass = 2, .fn = fn, .fn_ctx = ctx};
        rc = bind_all(&bd, &m);
    }
    free(m.dbl);
    free(m.sgl);
    return rc;
}
