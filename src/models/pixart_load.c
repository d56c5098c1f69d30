/* Loading a PixArtTransformer2DModel folder: config.json (class defaults for absent fields, nulls
 * resolved as diffusers 0.32.1 resolves them), then every expected weight checked for presence,
 * dtype and shape (pass 0), then converted and bound (pass 1). */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/jsonfile.h"
#include "io/safetensors.h"
#include "models/binder.h"
#include "models/pixart.h"

static const struct {
    const char *key;
    size_t off;
    int lo, hi;
} RANGES[] = {
    {"num_attention_heads", offsetof(pixart_config, num_heads), 1, 1024},
    {"attention_head_dim", offsetof(pixart_config, head_dim), 1, 1024},
    {"in_channels", offsetof(pixart_config, in_channels), 1, 1 << 16},
    {"out_channels", offsetof(pixart_config, out_channels), 1, 1 << 16},
    {"num_layers", offsetof(pixart_config, num_layers), 0, PIXART_MAX_LAYERS},
    {"cross_attention_dim", offsetof(pixart_config, cross_attention_dim), 0, 1 << 20},
    {"sample_size", offsetof(pixart_config, sample_size), 1, 1 << 16},
    {"patch_size", offsetof(pixart_config, patch_size), 1, 64},
    {"caption_channels", offsetof(pixart_config, caption_channels), 0, 1 << 20},
};

int pixart_config_check(const pixart_config *c, const char *where) {
    for (size_t i = 0; i < sizeof RANGES / sizeof RANGES[0]; i++) {
        const int v = *(const int *)((const char *)c + RANGES[i].off);
        if (v < RANGES[i].lo || v > RANGES[i].hi)
            return ss_fail(SS_EFORMAT, "%s: field '%s' = %d is outside [%d, %d]", where, RANGES[i].key, v, RANGES[i].lo,
                           RANGES[i].hi);
    }
    const long D = (long)c->num_heads * c->head_dim;
    if (D > (1 << 16)) return ss_fail(SS_EFORMAT, "%s: num_attention_heads x attention_head_dim = %ld is too large", where, D);
    if (D % 4)
        return ss_fail(SS_EFORMAT, "%s: num_attention_heads x attention_head_dim = %ld must be a multiple of 4 (the 2D sin-cos "
                       "position embedding splits it in four)", where, D);
    if ((long)c->patch_size * c->patch_size * c->out_channels > (1 << 20) ||
        (long)c->patch_size * c->patch_size * c->in_channels > (1 << 20))
        return ss_fail(SS_EFORMAT, "%s: patch_size^2 x in/out_channels is too large", where);
    if (c->sample_size < c->patch_size)
        return ss_fail(SS_EFORMAT, "%s: sample_size %d is smaller than patch_size %d (the position table's base size would be 0)",
                       where, c->sample_size, c->patch_size);
    if (c->use_additional_conditions && D % 3)
        return ss_fail(SS_EFORMAT, "%s: additional conditions (use_additional_conditions, or sample_size 128) need the width "
                       "num_attention_heads x attention_head_dim = %ld to be divisible by 3", where, D);
    if (c->caption_channels && c->cross_attention_dim && c->cross_attention_dim != D)
        return ss_fail(SS_EFORMAT, "%s: cross_attention_dim %d must equal the width %ld when caption_channels is set (the caption "
                       "projection outputs the width)", where, c->cross_attention_dim, D);
    if (!(c->interpolation_scale > 0) || !isfinite(c->interpolation_scale))
        return ss_fail(SS_EFORMAT, "%s: field 'interpolation_scale' = %g must be positive", where, c->interpolation_scale);
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return ss_fail(SS_EFORMAT, "%s: field 'norm_eps' = %g must be positive", where, (double)c->norm_eps);
    if (c->act != OP_ACT_GELU_TANH && c->act != OP_ACT_GELU)
        return ss_fail(SS_EFORMAT, "%s: activation_fn must be gelu-approximate or gelu", where);
    return 0;
}

/* An integer field; null or absent leaves *out (the caller's default). null_value: what null
 * means (INT_MIN: null not allowed here). */
static int get_int(json_t *root, const char *path, const char *key, int *out, int null_value) {
    json_t *v = json_object_get(root, key);
    if (!v) return 0;
    if (json_is_null(v)) {
        if (null_value == INT_MIN) return ss_fail(SS_EFORMAT, "%s: field '%s' must not be null", path, key);
        *out = null_value;
        return 0;
    }
    if (!json_is_integer(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be an integer", path, key);
    const json_int_t x = json_integer_value(v);
    if (x < -(1 << 30) || x > (1 << 30)) return ss_fail(SS_EFORMAT, "%s: field '%s' = %lld is out of range", path, key, (long long)x);
    *out = (int)x;
    return 0;
}

/* A boolean field; null leaves *out; -1 in *out means "not given". */
static int get_bool(json_t *root, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

static int get_num(json_t *root, const char *path, const char *key, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a number", path, key);
    *out = json_number_value(v);
    return 0;
}

/* A string field that must be one of `ok` (NULL-terminated); absent or null: the default. */
static int get_choice(json_t *root, const char *path, const char *key, const char *const *ok, const char *what, int *idx) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    char shown[80];
    if (!json_is_string(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a string", path, key);
    for (int i = 0; ok[i]; i++)
        if (!strcmp(json_string_value(v), ok[i])) {
            *idx = i;
            return 0;
        }
    return ss_fail(SS_EFORMAT, "%s: field '%s' is \"%s\"; %s", path, key, ss_printable(json_string_value(v), shown, sizeof shown),
                   what);
}

int pixart_config_load(pixart_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: config must be a JSON object", path);
        goto done;
    }
    json_t *cls = json_object_get(root, "_class_name");
    /* "Transformer2DModel" (the Hub's PixArt-alpha configs): diffusers remaps it to this class when
     * norm_type is ada_norm_single, which the norm_type check below requires */
    if (!cls || !json_is_string(cls) ||
        (strcmp(json_string_value(cls), "PixArtTransformer2DModel") && strcmp(json_string_value(cls), "Transformer2DModel"))) {
        rc = ss_fail(SS_EFORMAT, "%s: _class_name is %s, expected PixArtTransformer2DModel (or Transformer2DModel with norm_type "
                     "ada_norm_single)", path, !cls ? "missing" : json_is_string(cls) ? json_string_value(cls) : "not a string");
        goto done;
    }
    /* diffusers' class defaults (PixArt-alpha XL-2) */
    c->num_heads = 16; c->head_dim = 72; c->in_channels = 4; c->out_channels = 8; c->num_layers = 28;
    c->cross_attention_dim = 1152; c->attention_bias = 1; c->sample_size = 128; c->patch_size = 2;
    c->act = OP_ACT_GELU_TANH; c->norm_elementwise_affine = 0; c->norm_eps = 1e-6f; c->caption_channels = 0;
    int embeds = 1000, out_null = 0, add = -1, acts = 0, norm = 0, atype = 0;
    double eps = 1e-6, interp = 0;
    static const char *const ACTS[] = {"gelu-approximate", "gelu", NULL};
    static const char *const NORMS[] = {"ada_norm_single", NULL};
    static const char *const ATYPES[] = {"default", NULL};
    if ((rc = get_int(root, path, "num_attention_heads", &c->num_heads, INT_MIN)) < 0 ||
        (rc = get_int(root, path, "attention_head_dim", &c->head_dim, INT_MIN)) < 0 ||
        (rc = get_int(root, path, "in_channels", &c->in_channels, INT_MIN)) < 0 ||
        (rc = get_int(root, path, "out_channels", &c->out_channels, -1)) < 0 ||
        (rc = get_int(root, path, "num_layers", &c->num_layers, INT_MIN)) < 0 ||
        (rc = get_int(root, path, "cross_attention_dim", &c->cross_attention_dim, 0)) < 0 ||
        (rc = get_int(root, path, "sample_size", &c->sample_size, INT_MIN)) < 0 ||
        (rc = get_int(root, path, "patch_size", &c->patch_size, INT_MIN)) < 0 ||
        (rc = get_int(root, path, "caption_channels", &c->caption_channels, 0)) < 0 ||
        (rc = get_int(root, path, "num_embeds_ada_norm", &embeds, 0)) < 0 ||
        (rc = get_bool(root, path, "attention_bias", &c->attention_bias)) < 0 ||
        (rc = get_bool(root, path, "norm_elementwise_affine", &c->norm_elementwise_affine)) < 0 ||
        (rc = get_bool(root, path, "use_additional_conditions", &add)) < 0 ||
        (rc = get_num(root, path, "norm_eps", &eps)) < 0 || (rc = get_num(root, path, "interpolation_scale", &interp)) < 0 ||
        (rc = get_choice(root, path, "activation_fn", ACTS, "sinkscope runs gelu-approximate and gelu", &acts)) < 0 ||
        (rc = get_choice(root, path, "norm_type", NORMS, "PixArtTransformer2DModel implements only ada_norm_single", &norm)) < 0 ||
        (rc = get_choice(root, path, "attention_type", ATYPES, "sinkscope runs only the default attention (no GLIGEN fuser)",
                         &atype)) < 0)
        goto done;
    if (c->out_channels == -1) out_null = 1;
    if (out_null) c->out_channels = c->in_channels; /* null: in_channels, as diffusers */
    if (embeds == 0) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'num_embeds_ada_norm' must not be null with norm_type ada_norm_single (diffusers "
                     "refuses it)", path);
        goto done;
    }
    c->act = acts == 0 ? OP_ACT_GELU_TANH : OP_ACT_GELU;
    c->norm_eps = (float)eps;
    /* nulls: use_additional_conditions iff sample_size == 128; interpolation scale max(sample_size // 64, 1) */
    c->use_additional_conditions = add >= 0 ? add : c->sample_size == 128;
    json_t *iv = json_object_get(root, "interpolation_scale");
    c->interpolation_scale = iv && !json_is_null(iv) ? interp : (c->sample_size / 64 > 1 ? c->sample_size / 64 : 1);
    rc = pixart_config_check(c, path);
done:
    json_decref(root);
    return rc;
}

/* ---- weight binding ---- */

static int bind(ss_binder *bd, const float **slot, const char *name, int ndim, int64_t d0, int64_t d1) {
    const int64_t want[2] = {d0, d1};
    return ss_bind(bd, slot, name, ndim, want);
}

/* prefix + sub + ".weight" [out, in], and ".bias" [out] when has_bias */
static int bind_lin(ss_binder *bd, ss_linear *l, const char *prefix, const char *sub, int out, int in, int has_bias) {
    char name[256];
    l->in = in;
    l->out = out;
    l->b = NULL;
    snprintf(name, sizeof name, "%s%s.weight", prefix, sub);
    int rc = ss_bind_linear(bd, l, name);
    if (rc || !has_bias) return rc;
    snprintf(name, sizeof name, "%s%s.bias", prefix, sub);
    return bind(bd, &l->b, name, 1, out, 0);
}

#define TRY(x)                   \
    do {                         \
        int rc_ = (x);           \
        if (rc_ < 0) return rc_; \
    } while (0)

static int bind_all(ss_binder *bd, void *model) {
    pixart_model *m = model;
    const pixart_config *c = &m->cfg;
    const int D = m->D, p = c->patch_size, qb = c->attention_bias, cad = c->cross_attention_dim;
    char name[256];
    /* the conv weight [D, Cin, p, p] is bound as its [D, Cin*p*p] view */
    const int64_t conv[4] = {D, c->in_channels, p, p};
    m->patch.in = c->in_channels * p * p;
    m->patch.out = D;
    TRY(ss_bind(bd, &m->patch.w, "pos_embed.proj.weight", 4, conv));
    TRY(bind(bd, &m->patch.b, "pos_embed.proj.bias", 1, D, 0));
    if (c->caption_channels) {
        TRY(bind_lin(bd, &m->cap1, "caption_projection.linear_1", "", D, c->caption_channels, 1));
        TRY(bind_lin(bd, &m->cap2, "caption_projection.linear_2", "", D, D, 1));
    }
    TRY(bind_lin(bd, &m->t1, "adaln_single.emb.timestep_embedder.linear_1", "", D, 256, 1));
    TRY(bind_lin(bd, &m->t2, "adaln_single.emb.timestep_embedder.linear_2", "", D, D, 1));
    if (c->use_additional_conditions) {
        const int E = D / 3;
        TRY(bind_lin(bd, &m->r1, "adaln_single.emb.resolution_embedder.linear_1", "", E, 256, 1));
        TRY(bind_lin(bd, &m->r2, "adaln_single.emb.resolution_embedder.linear_2", "", E, E, 1));
        TRY(bind_lin(bd, &m->a1, "adaln_single.emb.aspect_ratio_embedder.linear_1", "", E, 256, 1));
        TRY(bind_lin(bd, &m->a2, "adaln_single.emb.aspect_ratio_embedder.linear_2", "", E, E, 1));
    }
    TRY(bind_lin(bd, &m->adaln, "adaln_single.linear", "", 6 * D, D, 1));
    for (int i = 0; i < c->num_layers; i++) {
        pixart_block *b = &m->blocks[i];
        char pf[64];
        snprintf(pf, sizeof pf, "transformer_blocks.%d.", i);
        snprintf(name, sizeof name, "%sscale_shift_table", pf);
        TRY(bind(bd, &b->sst, name, 2, 6, D));
        if (c->norm_elementwise_affine) {
            const float **slots[] = {&b->n1w, &b->n1b, &b->n2w, &b->n2b};
            const char *subs[] = {"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"};
            for (int s = 0; s < 4; s++) {
                snprintf(name, sizeof name, "%s%s", pf, subs[s]);
                TRY(bind(bd, slots[s], name, 1, D, 0));
            }
        }
        TRY(bind_lin(bd, &b->q, pf, "attn1.to_q", D, D, qb));
        TRY(bind_lin(bd, &b->k, pf, "attn1.to_k", D, D, qb));
        TRY(bind_lin(bd, &b->v, pf, "attn1.to_v", D, D, qb));
        TRY(bind_lin(bd, &b->out, pf, "attn1.to_out.0", D, D, 1));
        if (cad) {
            TRY(bind_lin(bd, &b->q2, pf, "attn2.to_q", D, D, qb));
            TRY(bind_lin(bd, &b->k2, pf, "attn2.to_k", D, cad, qb));
            TRY(bind_lin(bd, &b->v2, pf, "attn2.to_v", D, cad, qb));
            TRY(bind_lin(bd, &b->out2, pf, "attn2.to_out.0", D, D, 1));
        }
        TRY(bind_lin(bd, &b->ff1, pf, "ff.net.0.proj", 4 * D, D, 1));
        TRY(bind_lin(bd, &b->ff2, pf, "ff.net.2", D, 4 * D, 1));
    }
    TRY(bind(bd, &m->sst_out, "scale_shift_table", 2, 2, D));
    TRY(bind_lin(bd, &m->proj_out, "proj_out", "", p * p * c->out_channels, D, 1));
    return 0;
}

int pixart_enumerate_tensors(const pixart_config *c, void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape),
                             void *ctx) {
    pixart_model m = {.cfg = *c, .D = c->num_heads * c->head_dim};
    m.blocks = ss_calloc((size_t)c->num_layers + 1, sizeof *m.blocks);
    if (!m.blocks) return SS_ENOMEM;
    ss_binder bd = {.pass = 2, .fn = fn, .fn_ctx = ctx};
    int rc = bind_all(&bd, &m);
    free(m.blocks);
    return rc;
}

int pixart_config_save(const pixart_config *c, const char *path) {
    json_t *o = json_object();
    json_object_set_new(o, "_class_name", json_string("PixArtTransformer2DModel"));
    json_object_set_new(o, "num_attention_heads", json_integer(c->num_heads));
    json_object_set_new(o, "attention_head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "in_channels", json_integer(c->in_channels));
    json_object_set_new(o, "out_channels", json_integer(c->out_channels));
    json_object_set_new(o, "num_layers", json_integer(c->num_layers));
    json_object_set_new(o, "cross_attention_dim", c->cross_attention_dim ? json_integer(c->cross_attention_dim) : json_null());
    json_object_set_new(o, "attention_bias", json_boolean(c->attention_bias));
    json_object_set_new(o, "sample_size", json_integer(c->sample_size));
    json_object_set_new(o, "patch_size", json_integer(c->patch_size));
    json_object_set_new(o, "activation_fn", json_string(c->act == OP_ACT_GELU ? "gelu" : "gelu-approximate"));
    json_object_set_new(o, "num_embeds_ada_norm", json_integer(1000));
    json_object_set_new(o, "norm_type", json_string("ada_norm_single"));
    json_object_set_new(o, "norm_elementwise_affine", json_boolean(c->norm_elementwise_affine));
    json_object_set_new(o, "norm_eps", json_real(c->norm_eps));
    json_object_set_new(o, "interpolation_scale", json_real(c->interpolation_scale));
    json_object_set_new(o, "use_additional_conditions", json_boolean(c->use_additional_conditions));
    json_object_set_new(o, "caption_channels", c->caption_channels ? json_integer(c->caption_channels) : json_null());
    json_object_set_new(o, "attention_type", json_string("default"));
    return ss_json_save(path, o, JSON_INDENT(2) | JSON_PRESERVE_ORDER); /* takes o */
}

int pixart_load(pixart_model **out, const char *dir) {
    *out = NULL;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "%s: path too long", dir);
    pixart_model *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    int rc = pixart_config_load(&m->cfg, path);
    if (rc < 0) goto fail;
    m->D = m->cfg.num_heads * m->cfg.head_dim;
    m->blocks = ss_calloc((size_t)m->cfg.num_layers + 1, sizeof *m->blocks);
    if (!m->blocks) {
        rc = SS_ENOMEM;
        goto fail;
    }
    st_set *st = NULL;
    if ((rc = st_set_open(&st, dir)) < 0) goto fail;
    m->files = st;
    ss_binder bd = {.st = st, .dir = dir};
    if ((rc = ss_bind_load(&bd, bind_all, m, &m->arena)) < 0) goto fail;
    m->precision = bd.precision;
    *out = m;
    return 0;
fail:
    pixart_free(m);
    return rc;
}

void pixart_free(pixart_model *m) {
    if (!m) return;
    st_set_close((st_set *)m->files);
    free(m->arena);
    free(m->blocks);
    free(m);
}
