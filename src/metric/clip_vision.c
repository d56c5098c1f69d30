/* clip_vision: the CLIP ViT image tower (see clip_vision.h). */
#include "metric/clip_vision.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attn.h"
#include "core/err.h"
#include "nn/ops.h"
#include "io/jsonfile.h"
#include "io/safetensors.h"

typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    ss_linear q, k, v, o, fc1, fc2;
} clipv_layer;

struct clipv {
    clipv_config c;
    char *dir;
    ss_linear patch, proj;
    float *cls, *pos, *pre_w, *pre_b, *post_w, *post_b;
    clipv_layer *layers;
    float **owned;
    int n_owned, cap_owned;
};

/* ---------------- config ---------------- */
static int get_int(json_t *o, const char *path, const char *sect, const char *key, int lo, int hi, int def, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return ss_fail(SS_EFORMAT, "%s: '%s%s' must be an integer in [%d, %d]", path, sect, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_config(clipv_config *c, const char *path) {
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    memset(c, 0, sizeof *c);
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    json_t *o = root;
    const char *sect = "";
    int proj = 512;
    if (!json_is_object(root) || !mt) {
        rc = ss_fail(SS_EFORMAT, "%s: no model_type (not a transformers config)", path);
    } else if (!strcmp(mt, "clip")) {
        o = json_object_get(root, "vision_config");
        sect = "vision_config.";
        if (!json_is_object(o)) rc = ss_fail(SS_EFORMAT, "%s: 'vision_config' is missing or not an object", path);
        else rc = get_int(root, path, "", "projection_dim", 1, 1 << 16, 512, &proj);
    } else if (!strcmp(mt, "clip_vision_model")) {
        rc = get_int(root, path, "", "projection_dim", 1, 1 << 16, 512, &proj);
    } else {
        rc = ss_fail(SS_EFORMAT, "%s: model_type '%s' is not a CLIP model or CLIP vision model", path, mt);
    }
    if (rc >= 0) {
        const char *act = json_string_value(json_object_get(o, "hidden_act"));
        if (!act) act = "quick_gelu";
        if (!strcmp(act, "quick_gelu")) c->act = 0;
        else if (!strcmp(act, "gelu")) c->act = 1;
        else rc = ss_fail(SS_EFORMAT, "%s: '%shidden_act' '%s' is not supported (quick_gelu or gelu)", path, sect, act);
    }
    if (rc >= 0) rc = get_int(o, path, sect, "hidden_size", 1, 1 << 16, 768, &c->hidden);
    if (rc >= 0) rc = get_int(o, path, sect, "intermediate_size", 1, 1 << 18, 3072, &c->ff);
    if (rc >= 0) rc = get_int(o, path, sect, "num_hidden_layers", 1, 1024, 12, &c->layers);
    if (rc >= 0) rc = get_int(o, path, sect, "num_attention_heads", 1, 1024, 12, &c->heads);
    if (rc >= 0) rc = get_int(o, path, sect, "num_channels", 1, 64, 3, &c->channels);
    if (rc >= 0) rc = get_int(o, path, sect, "image_size", 1, 8192, 224, &c->image_size);
    if (rc >= 0) rc = get_int(o, path, sect, "patch_size", 1, 8192, 32, &c->patch);
    if (rc >= 0) {
        json_t *v = json_object_get(o, "layer_norm_eps");
        c->eps = 1e-5f;
        if (v && !(json_is_number(v) && json_number_value(v) > 0 && json_number_value(v) <= 1))
            rc = ss_fail(SS_EFORMAT, "%s: '%slayer_norm_eps' must be a number in (0, 1]", path, sect);
        else if (v)
            c->eps = (float)json_number_value(v);
    }
    if (rc >= 0 && c->hidden % c->heads)
        rc = ss_fail(SS_EFORMAT, "%s: '%shidden_size' %d is not a multiple of num_attention_heads %d", path, sect,
                     c->hidden, c->heads);
    if (rc >= 0 && c->patch > c->image_size)
        rc = ss_fail(SS_EFORMAT, "%s: '%spatch_size' %d is larger than image_size %d", path, sect, c->patch,
                     c->image_size);
    if (rc >= 0) {
        c->d_head = c->hidden / c->heads;
        c->grid = c->image_size / c->patch;
        c->tokens = c->grid * c->grid + 1;
        c->proj_dim = proj;
    }
    json_decref(root);
    return rc;
}

/* ---------------- weights ---------------- */
static int load(clipv *m, const st_set *s, float **dst, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int load(clipv *m, const st_set *s, float **dst, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        float **p = realloc(m->owned, (size_t)cap * sizeof *p);
        if (!p) return ss_fail(SS_ENOMEM, "out of memory");
        m->owned = p, m->cap_owned = cap;
    }
    int rc = st_load_f32(dst, s, name, ndim, shape);
    if (rc < 0) return ss_err_prefix(rc, "%s: ", m->dir);
    m->owned[m->n_owned++] = *dst;
    return 0;
}

static int vec(clipv *m, const st_set *s, float **dst, int n, const char *name) {
    int64_t sh[1] = {n};
    return load(m, s, dst, 1, sh, "%s", name);
}

static int lin(clipv *m, const st_set *s, ss_linear *l, int in, int out, const char *prefix) {
    float *w, *b;
    int64_t sw[2] = {out, in}, sb[1] = {out};
    int rc = load(m, s, &w, 2, sw, "%s.weight", prefix);
    if (rc >= 0) rc = load(m, s, &b, 1, sb, "%s.bias", prefix);
    *l = (ss_linear){.w = w, .b = rc >= 0 ? b : NULL, .in = in, .out = out};
    return rc;
}

static int load_weights(clipv *m, const st_set *s) {
    const clipv_config *c = &m->c;
    int D = c->hidden, rc;
    int64_t sp[4] = {D, c->channels, c->patch, c->patch}, spos[2] = {c->tokens, D};
    float *pw;
    if ((rc = load(m, s, &pw, 4, sp, "vision_model.embeddings.patch_embedding.weight")) < 0) return rc;
    m->patch = (ss_linear){.w = pw, .in = c->channels * c->patch * c->patch, .out = D};
    if ((rc = vec(m, s, &m->cls, D, "vision_model.embeddings.class_embedding")) < 0 ||
        (rc = load(m, s, &m->pos, 2, spos, "vision_model.embeddings.position_embedding.weight")) < 0 ||
        (rc = vec(m, s, &m->pre_w, D, "vision_model.pre_layrnorm.weight")) < 0 ||
        (rc = vec(m, s, &m->pre_b, D, "vision_model.pre_layrnorm.bias")) < 0 ||
        (rc = vec(m, s, &m->post_w, D, "vision_model.post_layernorm.weight")) < 0 ||
        (rc = vec(m, s, &m->post_b, D, "vision_model.post_layernorm.bias")) < 0)
        return rc;
    if (st_set_find(s, "visual_projection.weight")) {
        int64_t sh[2] = {c->proj_dim, D};
        float *w;
        if ((rc = load(m, s, &w, 2, sh, "visual_projection.weight")) < 0) return rc;
        m->proj = (ss_linear){.w = w, .in = D, .out = c->proj_dim};
    } else {
        m->c.proj_dim = 0;
    }
    for (int i = 0; i < c->layers; i++) {
        clipv_layer *L = &m->layers[i];
        char p[160];
#define P(x) (snprintf(p, sizeof p, "vision_model.encoder.layers.%d.%s", i, x), p)
        if ((rc = lin(m, s, &L->q, D, D, P("self_attn.q_proj"))) < 0 || (rc = lin(m, s, &L->k, D, D, P("self_attn.k_proj"))) < 0 ||
            (rc = lin(m, s, &L->v, D, D, P("self_attn.v_proj"))) < 0 ||
            (rc = lin(m, s, &L->o, D, D, P("self_attn.out_proj"))) < 0 ||
            (rc = lin(m, s, &L->fc1, D, c->ff, P("mlp.fc1"))) < 0 || (rc = lin(m, s, &L->fc2, c->ff, D, P("mlp.fc2"))) < 0 ||
            (rc = vec(m, s, &L->ln1_w, D, P("layer_norm1.weight"))) < 0 ||
            (rc = vec(m, s, &L->ln1_b, D, P("layer_norm1.bias"))) < 0 ||
            (rc = vec(m, s, &L->ln2_w, D, P("layer_norm2.weight"))) < 0 ||
            (rc = vec(m, s, &L->ln2_b, D, P("layer_norm2.bias"))) < 0)
            return rc;
#undef P
    }
    return 0;
}

void clipv_free(clipv *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->dir);
    free(m);
}

int clipv_open(clipv **out, const char *dir) {
    *out = NULL;
    clipv *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = (m->dir = strdup(dir)) ? parse_config(&m->c, path) : ss_fail(SS_ENOMEM, "out of memory");
    if (rc >= 0) {
        size_t per_layer = (size_t)m->c.hidden * ((size_t)m->c.hidden * 4 + (size_t)m->c.ff * 2), total;
        if (ss_mul_size(per_layer, (size_t)m->c.layers, &total) < 0 || ss_mul_size(total, sizeof(float), &total) < 0 ||
            (size_t)m->c.channels * m->c.patch * m->c.patch > (1u << 30))
            rc = ss_fail(SS_ENOMEM, "%s: the model's sizes overflow", path);
    }
    st_set *s = NULL;
    if (rc >= 0) rc = st_set_open(&s, dir);
    if (rc >= 0 && !(m->layers = ss_calloc((size_t)m->c.layers, sizeof *m->layers))) rc = SS_ENOMEM;
    if (rc >= 0) rc = load_weights(m, s);
    st_set_close(s);
    if (rc < 0) {
        clipv_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

const clipv_config *clipv_get_config(const clipv *m) { return &m->c; }
int clipv_embed_dim(const clipv *m) { return m->c.proj_dim ? m->c.proj_dim : m->c.hidden; }

/* ---------------- forward ---------------- */

int clipv_run(const clipv *m, const float *pixels, int B, float *embeds, float *emb0, float *last) {
    const clipv_config *c = &m->c;
    int D = c->hidden, T = c->tokens, G = c->grid, P = c->patch, S = c->image_size, C = c->channels;
    int K = C * P * P, NP = G * G;
    if (B <= 0) return ss_fail(SS_ESHAPE, "%s: no images", m->dir);
    size_t M = (size_t)B * T, md, mf, mk;
    if (ss_mul_size(M, (size_t)D, &md) < 0 || ss_mul_size(M, (size_t)c->ff, &mf) < 0 ||
        ss_mul_size((size_t)B * NP, (size_t)K, &mk) < 0 || md > SIZE_MAX / 8 || mf > SIZE_MAX / 8 || mk > SIZE_MAX / 8)
        return ss_fail(SS_ENOMEM, "%s: batch of %d images too large", m->dir, B);
    float *x = ss_malloc(md * 4), *h = ss_malloc(md * 4), *q = ss_malloc(md * 4), *k = ss_malloc(md * 4);
    float *v = ss_malloc(md * 4), *a = ss_malloc(md * 4), *f = ss_malloc(mf * 4), *col = ss_malloc(mk * 4);
    float *pooled = ss_malloc((size_t)B * D * 4);
    int rc = x && h && q && k && v && a && f && col && pooled ? 0 : SS_ENOMEM;
    if (rc >= 0) {
        /* im2col: one row per patch, (channel, row, column) order as the Conv2d weight. */
        for (int b = 0; b < B; b++)
            for (int gy = 0; gy < G; gy++)
                for (int gx = 0; gx < G; gx++) {
                    float *r = col + ((size_t)b * NP + (size_t)gy * G + gx) * K;
                    for (int ch = 0; ch < C; ch++)
                        for (int py = 0; py < P; py++)
                            memcpy(r + ((size_t)ch * P + py) * P,
                                   pixels + (((size_t)b * C + ch) * S + (size_t)gy * P + py) * S + (size_t)gx * P,
                                   (size_t)P * sizeof *r);
                }
        op_linear(h, col, &m->patch, B * NP);
        for (int b = 0; b < B; b++) {
            float *xb = x + (size_t)b * T * D;
            for (int j = 0; j < D; j++) xb[j] = m->cls[j] + m->pos[j];
            for (int p = 0; p < NP; p++)
                for (int j = 0; j < D; j++)
                    xb[(size_t)(p + 1) * D + j] = h[((size_t)b * NP + p) * D + j] + m->pos[(size_t)(p + 1) * D + j];
        }
        op_layernorm_affine(h, x, m->pre_w, m->pre_b, (int)M, D, c->eps);
        memcpy(x, h, M * D * sizeof *x);
        if (emb0) memcpy(emb0, x, M * D * sizeof *x);
    }
    float scale = 1.0f / sqrtf((float)c->d_head);
    for (int li = 0; li < c->layers && rc >= 0; li++) {
        const clipv_layer *L = &m->layers[li];
        op_layernorm_affine(h, x, L->ln1_w, L->ln1_b, (int)M, D, c->eps);
        op_linear(q, h, &L->q, (int)M);
        op_linear(k, h, &L->k, (int)M);
        op_linear(v, h, &L->v, (int)M);
        for (int b = 0; b < B && rc >= 0; b++) {
            size_t o = (size_t)b * T * D;
            rc = attn_materialized(a + o, q + o, k + o, v + o, T, c->heads, c->d_head, D, scale, NULL, 0, NULL);
        }
        if (rc < 0) break;
        op_linear(h, a, &L->o, (int)M);
        for (size_t i = 0; i < M * D; i++) x[i] += h[i];
        op_layernorm_affine(h, x, L->ln2_w, L->ln2_b, (int)M, D, c->eps);
        op_linear(f, h, &L->fc1, (int)M);
        op_activation(f, M * c->ff, c->act);
        op_linear(h, f, &L->fc2, (int)M);
        for (size_t i = 0; i < M * D; i++) x[i] += h[i];
    }
    if (rc >= 0) {
        if (last) memcpy(last, x, M * D * sizeof *x);
        for (int b = 0; b < B; b++) memcpy(h + (size_t)b * D, x + (size_t)b * T * D, (size_t)D * sizeof *h);
        op_layernorm_affine(pooled, h, m->post_w, m->post_b, B, D, c->eps);
        if (c->proj_dim) op_linear(embeds, pooled, &m->proj, B);
        else memcpy(embeds, pooled, (size_t)B * D * sizeof *embeds);
    }
    free(x), free(h), free(q), free(k), free(v), free(a), free(f), free(col), free(pooled);
    return rc;
}
