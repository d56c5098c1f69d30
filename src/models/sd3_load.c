/* Loading an SD3Transformer2DModel folder: config.json, then every expected weight checked for
 * presence and shape (pass 1), then bound to the model (pass 2). */
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
#include "models/sd3.h"

static int get_int(json_t *root, const char *path, const char *key, int *out, int required, int lo, int hi) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return ss_fail(SS_EFORMAT, "%s: missing field '%s'", path, key);
        return 0;
    }
    if (!json_is_integer(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be an integer", path, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return ss_fail(SS_EFORMAT, "%s: field '%s' = %lld is outside [%d, %d]", path, key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

/* The ranges sd3_config_load accepts, for a config built in memory too (sd3_init_random). */
static const struct {
    const char *key;
    size_t off;
    int lo, hi;
} RANGES[] = {
    {"sample_size", offsetof(sd3_config, sample_size), 1, 1 << 16},
    {"patch_size", offsetof(sd3_config, patch_size), 1, 64},
    {"in_channels", offsetof(sd3_config, in_channels), 1, 4096},
    {"out_channels", offsetof(sd3_config, out_channels), 1, 4096},
    {"num_layers", offsetof(sd3_config, num_layers), 1, SD3_MAX_LAYERS},
    {"attention_head_dim", offsetof(sd3_config, head_dim), 1, 512},
    {"num_attention_heads", offsetof(sd3_config, num_heads), 1, 1024},
    {"joint_attention_dim", offsetof(sd3_config, joint_attention_dim), 1, 1 << 20},
    {"caption_projection_dim", offsetof(sd3_config, caption_projection_dim), 1, 1 << 20},
    {"pooled_projection_dim", offsetof(sd3_config, pooled_projection_dim), 1, 1 << 20},
    {"pos_embed_max_size", offsetof(sd3_config, pos_embed_max_size), 1, 1 << 14},
};

int sd3_config_check(const sd3_config *c, const char *where) {
    for (size_t i = 0; i < sizeof RANGES / sizeof RANGES[0]; i++) {
        const int v = *(const int *)((const char *)c + RANGES[i].off);
        if (v < RANGES[i].lo || v > RANGES[i].hi)
            return ss_fail(SS_EFORMAT, "%s: field '%s' = %d is outside [%d, %d]", where, RANGES[i].key, v, RANGES[i].lo,
                           RANGES[i].hi);
    }
    if ((long)c->num_heads * c->head_dim > (1 << 16))
        return ss_fail(SS_EFORMAT, "%s: num_attention_heads x attention_head_dim is too large", where);
    if (c->caption_projection_dim != c->num_heads * c->head_dim)
        return ss_fail(SS_EFORMAT, "%s: caption_projection_dim %d must equal num_attention_heads x attention_head_dim = %d",
                       where, c->caption_projection_dim, c->num_heads * c->head_dim);
    if (c->qk_norm != 0 && c->qk_norm != 1) return ss_fail(SS_EFORMAT, "%s: qk_norm must be null or \"rms_norm\"", where);
    for (int i = 0; i < SD3_MAX_LAYERS; i++)
        if (c->dual[i] > 1 || (c->dual[i] && i >= c->num_layers))
            return ss_fail(SS_EFORMAT, "%s: dual_attention_layers names block %d, but there are %d blocks", where, i,
                           c->num_layers);
    return 0;
}

int sd3_config_load(sd3_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: config must be a JSON object", path);
        goto done;
    }
    json_t *cls = json_object_get(root, "_class_name");
    if (cls && (!json_is_string(cls) || strcmp(json_string_value(cls), "SD3Transformer2DModel"))) {
        rc = ss_fail(SS_EFORMAT, "%s: _class_name is %s, expected SD3Transformer2DModel", path,
                     json_is_string(cls) ? json_string_value(cls) : "not a string");
        goto done;
    }
    /* diffusers' class defaults where a field is absent */
    c->sample_size = 128; c->patch_size = 2; c->in_channels = 16; c->out_channels = 16;
    c->num_layers = 18; c->head_dim = 64; c->num_heads = 18; c->joint_attention_dim = 4096;
    c->caption_projection_dim = 1152; c->pooled_projection_dim = 2048; c->pos_embed_max_size = 96;
    if ((rc = get_int(root, path, "sample_size", &c->sample_size, 0, 1, 1 << 16)) ||
        (rc = get_int(root, path, "patch_size", &c->patch_size, 0, 1, 64)) ||
        (rc = get_int(root, path, "in_channels", &c->in_channels, 0, 1, 4096)) ||
        (rc = get_int(root, path, "out_channels", &c->out_channels, 0, 1, 4096)) ||
        (rc = get_int(root, path, "num_layers", &c->num_layers, 0, 1, SD3_MAX_LAYERS)) ||
        (rc = get_int(root, path, "attention_head_dim", &c->head_dim, 0, 1, 512)) ||
        (rc = get_int(root, path, "num_attention_heads", &c->num_heads, 0, 1, 1024)) ||
        (rc = get_int(root, path, "joint_attention_dim", &c->joint_attention_dim, 0, 1, 1 << 20)) ||
        (rc = get_int(root, path, "caption_projection_dim", &c->caption_projection_dim, 0, 1, 1 << 20)) ||
        (rc = get_int(root, path, "pooled_projection_dim", &c->pooled_projection_dim, 0, 1, 1 << 20)) ||
        (rc = get_int(root, path, "pos_embed_max_size", &c->pos_embed_max_size, 0, 1, 1 << 14)))
        goto done;
    json_t *out_ch = json_object_get(root, "out_channels");
    if (out_ch && json_is_null(out_ch)) c->out_channels = c->in_channels;
    if ((rc = sd3_config_check(c, path)) < 0) goto done;
    json_t *qk = json_object_get(root, "qk_norm");
    if (qk && !json_is_null(qk)) {
        if (!json_is_string(qk) || strcmp(json_string_value(qk), "rms_norm")) {
            rc = ss_fail(SS_EFORMAT, "%s: qk_norm must be null or \"rms_norm\"", path);
            goto done;
        }
        c->qk_norm = 1;
    }
    json_t *dual = json_object_get(root, "dual_attention_layers");
    if (dual && !json_is_null(dual)) {
        if (!json_is_array(dual)) {
            rc = ss_fail(SS_EFORMAT, "%s: dual_attention_layers must be a list of block indices", path);
            goto done;
        }
        size_t i;
        json_t *e;
        json_array_foreach(dual, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= c->num_layers) {
                rc = ss_fail(SS_EFORMAT, "%s: dual_attention_layers[%zu] is not a block index in [0, %d)", path, i,
                             c->num_layers);
                goto done;
            }
            c->dual[json_integer_value(e)] = 1;
        }
    }
done:
    json_decref(root);
    return rc;
}

/* ---- weight binding ---- */

typedef ss_binder binder;

/* This file's own pass (sd3_bind_view), handled here and never passed to ss_bind: every slot
 * points at the storage a lookup gives for the tensor's name and shape. */
#define PASS_VIEW 3
typedef struct {
    const float *(*lookup)(void *ctx, const char *name, int ndim, const int64_t *shape);
    void *ctx;
} view_lookup;

static int bind(binder *bd, const float **slot, const char *name, int ndim, int64_t d0, int64_t d1,
                int64_t d2, int64_t d3) {
    const int64_t want[4] = {d0, d1, d2, d3};
    if (bd->pass == PASS_VIEW) {
        const view_lookup *v = bd->fn_ctx;
        if (!(*slot = v->lookup(v->ctx, name, ndim, want)))
            return ss_fail(SS_EMISSING, "%s: no storage for tensor '%s'", bd->dir, name);
        return 0;
    }
    return ss_bind(bd, slot, name, ndim, want);
}

static int bind_lin(binder *bd, ss_linear *l, const char *prefix, int out, int in, int bias) {
    char name[256];
    l->in = in;
    l->out = out;
    snprintf(name, sizeof name, "%s.weight", prefix);
    int rc = ss_bind_linear(bd, l, name);
    if (rc || !bias) return rc;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return bind(bd, &l->b, name, 1, out, 0, 0, 0);
}

#define TRY(x)                   \
    do {                         \
        int rc_ = (x);           \
        if (rc_ < 0) return rc_; \
    } while (0)

static int bind_block(binder *bd, sd3_model *m, int i) {
    const sd3_config *c = &m->cfg;
    const int D = m->D, dh = c->head_dim;
    sd3_block *b = &m->blocks[i];
    char p[128], n[192];
    snprintf(p, sizeof p, "transformer_blocks.%d", i);
    b->dual = c->dual[i];
    b->last = i == c->num_layers - 1;
#define L(field, sub, o, in) (snprintf(n, sizeof n, "%s.%s", p, sub), bind_lin(bd, &b->field, n, o, in, 1))
#define V(field, sub) (snprintf(n, sizeof n, "%s.%s", p, sub), bind(bd, &b->field, n, 1, dh, 0, 0, 0))
    TRY(L(norm1, "norm1.linear", (b->dual ? 9 : 6) * D, D));
    TRY(L(norm1_ctx, "norm1_context.linear", (b->last ? 2 : 6) * D, D));
    TRY(L(q, "attn.to_q", D, D));
    TRY(L(k, "attn.to_k", D, D));
    TRY(L(v, "attn.to_v", D, D));
    TRY(L(add_q, "attn.add_q_proj", D, D));
    TRY(L(add_k, "attn.add_k_proj", D, D));
    TRY(L(add_v, "attn.add_v_proj", D, D));
    TRY(L(out, "attn.to_out.0", D, D));
    if (!b->last) TRY(L(add_out, "attn.to_add_out", D, D));
    if (c->qk_norm) {
        TRY(V(norm_q, "attn.norm_q.weight"));
        TRY(V(norm_k, "attn.norm_k.weight"));
        TRY(V(norm_added_q, "attn.norm_added_q.weight"));
        TRY(V(norm_added_k, "attn.norm_added_k.weight"));
    }
    if (b->dual) {
        TRY(L(q2, "attn2.to_q", D, D));
        TRY(L(k2, "attn2.to_k", D, D));
        TRY(L(v2, "attn2.to_v", D, D));
        TRY(L(out2, "attn2.to_out.0", D, D));
        if (c->qk_norm) {
            TRY(V(norm_q2, "attn2.norm_q.weight"));
            TRY(V(norm_k2, "attn2.norm_k.weight"));
        }
    }
    TRY(L(ff1, "ff.net.0.proj", 4 * D, D));
    TRY(L(ff2, "ff.net.2", D, 4 * D));
    if (!b->last) {
        TRY(L(cff1, "ff_context.net.0.proj", 4 * D, D));
        TRY(L(cff2, "ff_context.net.2", D, 4 * D));
    }
#undef L
#undef V
    return 0;
}

static int bind_all(binder *bd, sd3_model *m) {
    const sd3_config *c = &m->cfg;
    const int D = m->D, M = c->pos_embed_max_size, p = c->patch_size;
    TRY(bind(bd, &m->pos_table, "pos_embed.pos_embed", 3, 1, (int64_t)M * M, D, 0));
    TRY(bind(bd, &m->patch.w, "pos_embed.proj.weight", 4, D, c->in_channels, p, p));
    TRY(bind(bd, &m->patch.b, "pos_embed.proj.bias", 1, D, 0, 0, 0));
    m->patch.in = c->in_channels * p * p;
    m->patch.out = D;
    TRY(bind_lin(bd, &m->t1, "time_text_embed.timestep_embedder.linear_1", D, 256, 1));
    TRY(bind_lin(bd, &m->t2, "time_text_embed.timestep_embedder.linear_2", D, D, 1));
    TRY(bind_lin(bd, &m->p1, "time_text_embed.text_embedder.linear_1", D, c->pooled_projection_dim, 1));
    TRY(bind_lin(bd, &m->p2, "time_text_embed.text_embedder.linear_2", D, D, 1));
    TRY(bind_lin(bd, &m->ctx_embed, "context_embedder", D, c->joint_attention_dim, 1));
    for (int i = 0; i < c->num_layers; i++) TRY(bind_block(bd, m, i));
    TRY(bind_lin(bd, &m->norm_out, "norm_out.linear", 2 * D, D, 1));
    TRY(bind_lin(bd, &m->proj_out, "proj_out", p * p * c->out_channels, D, 1));
    return 0;
}

static int bind_all_model(ss_binder *bd, void *m) { return bind_all(bd, m); }

int sd3_load(sd3_model **out, const char *dir) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    sd3_model *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    int rc = sd3_config_load(&m->cfg, path);
    if (rc < 0) goto fail;
    m->D = m->cfg.num_heads * m->cfg.head_dim;
    m->blocks = ss_calloc((size_t)m->cfg.num_layers, sizeof *m->blocks);
    if (!m->blocks) { rc = SS_ENOMEM; goto fail; }
    st_set *st = NULL;
    if ((rc = st_set_open(&st, dir)) < 0) goto fail;
    m->files = st;
    binder bd = {.st = st, .dir = dir};
    if ((rc = ss_bind_load(&bd, bind_all_model, m, &m->arena)) < 0) goto fail;
    m->precision = bd.precision;
    *out = m;
    return 0;
fail:
    sd3_free(m);
    return rc;
}

void sd3_free(sd3_model *m) {
    if (!m) return;
    st_set_close((st_set *)m->files);
    free(m->arena);
    free(m->blocks);
    free(m);
}

int sd3_enumerate_tensors(const sd3_config *c, void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape),
                          void *ctx) {
    sd3_model m = {.cfg = *c, .D = c->num_heads * c->head_dim};
    m.blocks = ss_calloc((size_t)c->num_layers, sizeof *m.blocks);
    if (!m.blocks) return SS_ENOMEM;
    binder bd = {.pass = 2, .fn = fn, .fn_ctx = ctx};
    int rc = bind_all(&bd, &m);
    free(m.blocks);
    return rc;
}

int sd3_bind_view(sd3_model *m, const sd3_config *c,
                  const float *(*lookup)(void *ctx, const char *name, int ndim, const int64_t *shape), void *ctx,
                  const char *where) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->D = c->num_heads * c->head_dim;
    m->blocks = ss_calloc((size_t)c->num_layers, sizeof *m->blocks);
    if (!m->blocks) return SS_ENOMEM;
    view_lookup v = {lookup, ctx};
    binder bd = {.pass = PASS_VIEW, .fn_ctx = &v, .dir = where};
    const int rc = bind_all(&bd, m);
    if (rc < 0) {
        free(m->blocks);
        m->blocks = NULL;
    }
    return rc;
}

int sd3_config_save(const sd3_config *c, const char *path) {
    json_t *o = json_object(), *dual = json_array();
    json_object_set_new(o, "_class_name", json_string("SD3Transformer2DModel"));
    json_object_set_new(o, "sample_size", json_integer(c->sample_size));
    json_object_set_new(o, "patch_size", json_integer(c->patch_size));
    json_object_set_new(o, "in_channels", json_integer(c->in_channels));
    json_object_set_new(o, "out_channels", json_integer(c->out_channels));
    json_object_set_new(o, "num_layers", json_integer(c->num_layers));
    json_object_set_new(o, "attention_head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "num_attention_heads", json_integer(c->num_heads));
    json_object_set_new(o, "joint_attention_dim", json_integer(c->joint_attention_dim));
    json_object_set_new(o, "caption_projection_dim", json_integer(c->caption_projection_dim));
    json_object_set_new(o, "pooled_projection_dim", json_integer(c->pooled_projection_dim));
    json_object_set_new(o, "pos_embed_max_size", json_integer(c->pos_embed_max_size));
    for (int i = 0; i < c->num_layers; i++)
        if (c->dual[i]) json_array_append_new(dual, json_integer(i));
    json_object_set_new(o, "dual_attention_layers", dual);
    json_object_set_new(o, "qk_norm", c->qk_norm ? json_string("rms_norm") : json_null());
    return ss_json_save(path, o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}
