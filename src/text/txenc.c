/* txenc: CLIP and T5 text encoders (see txenc.h). */
#include "text/txenc.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attn.h"
#include "core/err.h"
#include "nn/ops.h"
#include "io/jsonfile.h"
#include "io/safetensors.h"

/* A weight matrix as stored: fp32 (f), or the checkpoint's F16/BF16 bits (h, dtype dt), which
 * are widened to fp32 right before use (exact, so results equal those of an fp32 copy). */
typedef struct {
    const float *f;
    const uint8_t *h; /* into the checkpoint's mapping (txenc.files), 2 bytes per value, any alignment */
    st_dtype dt;
} txmat;

typedef struct {
    ss_linear l; /* l.w NULL when the weight is held narrow (w.h) */
    txmat w;
} txlin;

typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b; /* CLIP LayerNorms; T5 uses ln1_w / ln2_w (RMS) */
    txlin q, k, v, o, fc1, fc2, fc1b;     /* T5: fc1 = wi_0 (or wi), fc1b = wi_1, fc2 = wo */
} txenc_layer;

struct txenc {
    txenc_config c;
    char *dir;
    txmat tok_emb;
    float *pos_emb, *final_w, *final_b, *proj, *rel_bias;
    txenc_layer *layers;
    void **owned;
    int n_owned, cap_owned;
    size_t weight_bytes; /* what the weights hold, as stored */
    size_t widen_max;    /* floats of the largest narrow Linear weight (the widening scratch) */
    st_set *files;       /* the checkpoint, kept mapped while narrow weights point into it */
    int keep_files;
};

/* ---------------- config ---------------- */
static int cfg_int(json_t *o, const char *path, const char *key, int lo, int hi, int required, int def, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return ss_fail(SS_EMISSING, "%s: '%s' is missing", path, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return ss_fail(SS_EFORMAT, "%s: '%s' must be an integer in [%d, %d]", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int cfg_eps(json_t *o, const char *path, const char *key, double def, float *out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v) || !(json_number_value(v) > 0) || json_number_value(v) > 1)
        return ss_fail(SS_EFORMAT, "%s: '%s' must be a number in (0, 1]", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

/* A full CLIPModel config (model_type "clip"): the text tower's config is text_config, where
 * save_pretrained leaves out CLIPTextConfig's defaults, and the projection width is the top-level
 * projection_dim. Returns a new reference to an equivalent clip_text_model config (o is released). */
static json_t *clip_text_config(json_t *o) {
    json_t *t = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:i}", "model_type", "clip_text_model",
                          "vocab_size", 49408, "hidden_size", 512, "intermediate_size", 2048, "num_hidden_layers", 12,
                          "num_attention_heads", 8, "max_position_embeddings", 77, "hidden_act", "quick_gelu",
                          "layer_norm_eps", 1e-5, "eos_token_id", 49407);
    json_t *tc = json_object_get(o, "text_config"), *pd = json_object_get(o, "projection_dim");
    if (t && json_is_object(tc)) {
        json_object_update(t, tc);
        json_object_set_new(t, "model_type", json_string("clip_text_model"));
        json_object_set_new(t, "projection_dim", pd ? json_incref(pd) : json_integer(512)); /* CLIPConfig's default */
    } else if (t) {
        json_decref(t), t = json_object(); /* no model_type: reported below */
    }
    json_decref(o);
    return t;
}

static int parse_config(txenc_config *c, const char *path) {
    json_t *o;
    int rc = ss_json_load(path, &o);
    if (rc < 0) return rc;
    memset(c, 0, sizeof *c);
    const char *mt = json_string_value(json_object_get(o, "model_type"));
    if (json_is_object(o) && mt && !strcmp(mt, "clip")) {
        if (!(o = clip_text_config(o))) return ss_fail(SS_ENOMEM, "out of memory");
        mt = json_string_value(json_object_get(o, "model_type"));
        if (!mt) rc = ss_fail(SS_EFORMAT, "%s: 'text_config' is missing or not an object", path);
    }
    if (rc < 0) {
    } else if (!json_is_object(o) || !mt) {
        rc = ss_fail(SS_EFORMAT, "%s: no model_type (not a transformers config)", path);
    } else if (!strcmp(mt, "clip_text_model")) {
        c->kind = TXENC_CLIP;
        const char *act = json_string_value(json_object_get(o, "hidden_act"));
        if (!act) act = "quick_gelu";
        if (!strcmp(act, "quick_gelu")) c->act = 0;
        else if (!strcmp(act, "gelu")) c->act = 1;
        else rc = ss_fail(SS_EFORMAT, "%s: hidden_act '%s' is not supported (quick_gelu or gelu)", path, act);
        if (rc >= 0) rc = cfg_int(o, path, "vocab_size", 1, 1 << 24, 1, 0, &c->vocab_size);
        if (rc >= 0) rc = cfg_int(o, path, "hidden_size", 1, 1 << 16, 1, 0, &c->d_model);
        if (rc >= 0) rc = cfg_int(o, path, "intermediate_size", 1, 1 << 18, 1, 0, &c->d_ff);
        if (rc >= 0) rc = cfg_int(o, path, "num_hidden_layers", 1, 1024, 1, 0, &c->n_layers);
        if (rc >= 0) rc = cfg_int(o, path, "num_attention_heads", 1, 1024, 1, 0, &c->n_heads);
        if (rc >= 0) rc = cfg_int(o, path, "max_position_embeddings", 1, 1 << 16, 1, 0, &c->max_positions);
        if (rc >= 0) rc = cfg_int(o, path, "eos_token_id", 0, 1 << 24, 0, 2, &c->eos_token_id);
        if (rc >= 0) rc = cfg_int(o, path, "projection_dim", 0, 1 << 16, 0, 0, &c->proj_dim);
        if (rc >= 0) rc = cfg_eps(o, path, "layer_norm_eps", 1e-5, &c->eps);
        if (rc >= 0 && c->d_model % c->n_heads)
            rc = ss_fail(SS_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path,
                         c->d_model, c->n_heads);
        if (rc >= 0) c->d_head = c->d_model / c->n_heads;
    } else if (!strcmp(mt, "t5") || !strcmp(mt, "umt5")) {
        c->kind = TXENC_T5;
        const char *ff = json_string_value(json_object_get(o, "feed_forward_proj"));
        if (!ff) ff = "relu";
        if (!strcmp(ff, "gated-gelu")) c->gated = 1, c->act = 0;
        else if (!strcmp(ff, "relu")) c->gated = 0, c->act = 1;
        else if (!strcmp(ff, "gated-relu")) c->gated = 1, c->act = 1;
        else rc = ss_fail(SS_EFORMAT, "%s: feed_forward_proj '%s' is not supported", path, ff);
        if (rc >= 0 && !strcmp(mt, "umt5")) rc = ss_fail(SS_EFORMAT, "%s: umt5 (per-block position bias) is not supported", path);
        if (rc >= 0) rc = cfg_int(o, path, "vocab_size", 1, 1 << 24, 1, 0, &c->vocab_size);
        if (rc >= 0) rc = cfg_int(o, path, "d_model", 1, 1 << 16, 1, 0, &c->d_model);
        if (rc >= 0) rc = cfg_int(o, path, "d_kv", 1, 1 << 12, 1, 0, &c->d_head);
        if (rc >= 0) rc = cfg_int(o, path, "d_ff", 1, 1 << 18, 1, 0, &c->d_ff);
        if (rc >= 0) rc = cfg_int(o, path, "num_layers", 1, 1024, 1, 0, &c->n_layers);
        if (rc >= 0) rc = cfg_int(o, path, "num_heads", 1, 1024, 1, 0, &c->n_heads);
        if (rc >= 0) rc = cfg_int(o, path, "relative_attention_num_buckets", 2, 1 << 12, 0, 32, &c->num_buckets);
        if (rc >= 0) rc = cfg_int(o, path, "relative_attention_max_distance", 1, 1 << 20, 0, 128, &c->max_distance);
        if (rc >= 0) rc = cfg_eps(o, path, "layer_norm_epsilon", 1e-6, &c->eps);
    } else {
        rc = ss_fail(SS_EFORMAT, "%s: model_type '%s' is not a CLIP text model or a T5 encoder", path, mt);
    }
    json_decref(o);
    return rc;
}

/* ---------------- weights ---------------- */
static int own_reserve(txenc *e) {
    if (e->n_owned < e->cap_owned) return 0;
    int cap = e->cap_owned ? e->cap_owned * 2 : 64;
    void **p = realloc(e->owned, (size_t)cap * sizeof *p);
    if (!p) return ss_fail(SS_ENOMEM, "out of memory");
    e->owned = p, e->cap_owned = cap;
    return 0;
}

static int load(txenc *e, const st_set *s, float **dst, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static int load(txenc *e, const st_set *s, float **dst, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int64_t shape[2] = {d0, d1};
    if (own_reserve(e) < 0) return SS_ENOMEM;
    int rc = st_load_f32(dst, s, name, ndim, shape);
    if (rc < 0) return ss_err_prefix(rc, "%s: ", e->dir);
    e->owned[e->n_owned++] = *dst;
    e->weight_bytes += (size_t)d0 * (ndim > 1 ? (size_t)d1 : 1) * sizeof(float);
    return 0;
}

/* A matrix [d0, d1]: a F16 or BF16 tensor is kept as stored (2 bytes per value), any other float
 * dtype converted to fp32 by load(). Shape and dtype are checked as st_load_f32 checks them. */
static int load_mat(txenc *e, const st_set *s, txmat *m, int64_t d0, int64_t d1, const char *name) {
    *m = (txmat){0};
    const st_tensor *t = st_set_find(s, name);
    if (!t || (t->dtype != ST_F16 && t->dtype != ST_BF16)) {
        float *f;
        int rc = load(e, s, &f, 2, d0, d1, "%s", name);
        m->f = f;
        return rc;
    }
    const int64_t shape[2] = {d0, d1};
    if (t->ndim != 2 || memcmp(t->shape, shape, sizeof shape)) {
        float *f = NULL;
        int rc = load(e, s, &f, 2, d0, d1, "%s", name); /* the loader's shape error */
        m->f = f;
        return rc;
    }
    /* used in place: the mapping stays open (file-backed pages, no second copy) */
    e->keep_files = 1;
    e->weight_bytes += t->nbytes;
    m->h = t->data, m->dt = t->dtype;
    return 0;
}

/* Values [off, off + n) of a narrow matrix, widened to fp32 exactly as the loader converts them. */
static void mat_widen(float *dst, const txmat *m, size_t off, size_t n) {
    st_tensor t = {.name = "", .dtype = m->dt, .ndim = 1, .numel = (int64_t)n, .data = m->h + 2 * off, .nbytes = 2 * n,
                   .file = ""};
    t.shape[0] = (int64_t)n;
    st_to_f32(dst, &t); /* F16/BF16 with data: cannot fail */
}

static int lin(txenc *e, const st_set *s, txlin *l, int in, int out, int bias, const char *prefix) {
    char name[200];
    float *b = NULL;
    snprintf(name, sizeof name, "%s.weight", prefix);
    int rc = load_mat(e, s, &l->w, out, in, name);
    if (rc >= 0 && bias) rc = load(e, s, &b, 1, out, 0, "%s.bias", prefix);
    l->l = (ss_linear){.w = l->w.f, .b = b, .in = in, .out = out};
    if (l->w.h && (size_t)in * out > e->widen_max) e->widen_max = (size_t)in * out;
    return rc;
}

static int load_clip(txenc *e, const st_set *s) {
    const txenc_config *c = &e->c;
    int D = c->d_model, rc;
    if ((rc = load_mat(e, s, &e->tok_emb, c->vocab_size, D, "text_model.embeddings.token_embedding.weight")) < 0 ||
        (rc = load(e, s, &e->pos_emb, 2, c->max_positions, D, "text_model.embeddings.position_embedding.weight")) < 0 ||
        (rc = load(e, s, &e->final_w, 1, D, 0, "text_model.final_layer_norm.weight")) < 0 ||
        (rc = load(e, s, &e->final_b, 1, D, 0, "text_model.final_layer_norm.bias")) < 0)
        return rc;
    if (st_set_find(s, "text_projection.weight")) {
        if (!c->proj_dim) return ss_fail(SS_EFORMAT, "%s/config.json: text_projection.weight but no projection_dim", e->dir);
        if ((rc = load(e, s, &e->proj, 2, c->proj_dim, D, "text_projection.weight")) < 0) return rc;
    } else
        e->c.proj_dim = 0;
    for (int i = 0; i < c->n_layers; i++) {
        txenc_layer *L = &e->layers[i];
        char p[128];
#define P(x) (snprintf(p, sizeof p, "text_model.encoder.layers.%d.%s", i, x), p)
        if ((rc = lin(e, s, &L->q, D, D, 1, P("self_attn.q_proj"))) < 0 || (rc = lin(e, s, &L->k, D, D, 1, P("self_attn.k_proj"))) < 0 ||
            (rc = lin(e, s, &L->v, D, D, 1, P("self_attn.v_proj"))) < 0 ||
            (rc = lin(e, s, &L->o, D, D, 1, P("self_attn.out_proj"))) < 0 ||
            (rc = lin(e, s, &L->fc1, D, c->d_ff, 1, P("mlp.fc1"))) < 0 ||
            (rc = lin(e, s, &L->fc2, c->d_ff, D, 1, P("mlp.fc2"))) < 0)
            return rc;
        if ((rc = load(e, s, &L->ln1_w, 1, D, 0, "text_model.encoder.layers.%d.layer_norm1.weight", i)) < 0 ||
            (rc = load(e, s, &L->ln1_b, 1, D, 0, "text_model.encoder.layers.%d.layer_norm1.bias", i)) < 0 ||
            (rc = load(e, s, &L->ln2_w, 1, D, 0, "text_model.encoder.layers.%d.layer_norm2.weight", i)) < 0 ||
            (rc = load(e, s, &L->ln2_b, 1, D, 0, "text_model.encoder.layers.%d.layer_norm2.bias", i)) < 0)
            return rc;
#undef P
    }
    return 0;
}

static int load_t5(txenc *e, const st_set *s) {
    const txenc_config *c = &e->c;
    int D = c->d_model, NI = c->n_heads * c->d_head, rc;
    const char *emb = st_set_find(s, "encoder.embed_tokens.weight") ? "encoder.embed_tokens.weight" : "shared.weight";
    if ((rc = load_mat(e, s, &e->tok_emb, c->vocab_size, D, emb)) < 0 ||
        (rc = load(e, s, &e->final_w, 1, D, 0, "encoder.final_layer_norm.weight")) < 0 ||
        (rc = load(e, s, &e->rel_bias, 2, c->num_buckets, c->n_heads,
                   "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")) < 0)
        return rc;
    for (int i = 0; i < c->n_layers; i++) {
        txenc_layer *L = &e->layers[i];
        char p[128];
#define P(x) (snprintf(p, sizeof p, "encoder.block.%d.layer.%s", i, x), p)
        if ((rc = lin(e, s, &L->q, D, NI, 0, P("0.SelfAttention.q"))) < 0 || (rc = lin(e, s, &L->k, D, NI, 0, P("0.SelfAttention.k"))) < 0 ||
            (rc = lin(e, s, &L->v, D, NI, 0, P("0.SelfAttention.v"))) < 0 || (rc = lin(e, s, &L->o, NI, D, 0, P("0.SelfAttention.o"))) < 0)
            return rc;
        if (c->gated) {
            if ((rc = lin(e, s, &L->fc1, D, c->d_ff, 0, P("1.DenseReluDense.wi_0"))) < 0 ||
                (rc = lin(e, s, &L->fc1b, D, c->d_ff, 0, P("1.DenseReluDense.wi_1"))) < 0)
                return rc;
        } else if ((rc = lin(e, s, &L->fc1, D, c->d_ff, 0, P("1.DenseReluDense.wi"))) < 0)
            return rc;
        if ((rc = lin(e, s, &L->fc2, c->d_ff, D, 0, P("1.DenseReluDense.wo"))) < 0) return rc;
#undef P
        if ((rc = load(e, s, &L->ln1_w, 1, D, 0, "encoder.block.%d.layer.0.layer_norm.weight", i)) < 0 ||
            (rc = load(e, s, &L->ln2_w, 1, D, 0, "encoder.block.%d.layer.1.layer_norm.weight", i)) < 0)
            return rc;
    }
    return 0;
}

void txenc_free(txenc *e) {
    if (!e) return;
    for (int i = 0; i < e->n_owned; i++) free(e->owned[i]);
    free(e->owned);
    st_set_close(e->files);
    free(e->layers);
    free(e->dir);
    free(e);
}

int txenc_open(txenc **out, const char *dir) {
    *out = NULL;
    txenc *e = ss_calloc(1, sizeof *e);
    if (!e) return SS_ENOMEM;
    e->dir = strdup(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = parse_config(&e->c, path);
    st_set *s = NULL;
    if (rc >= 0) {
        /* Every float tensor is converted to fp32: bound the total before allocating. */
        size_t per_layer = (size_t)e->c.d_model * ((size_t)e->c.n_heads * e->c.d_head * 4 + (size_t)e->c.d_ff * 3);
        size_t total;
        if (ss_mul_size(per_layer, (size_t)e->c.n_layers, &total) < 0 || ss_mul_size(total, sizeof(float), &total) < 0)
            rc = ss_fail(SS_ENOMEM, "%s: the model's sizes overflow", path);
    }
    if (rc >= 0) rc = st_set_open(&s, dir);
    if (rc >= 0 && !(e->layers = ss_calloc((size_t)e->c.n_layers, sizeof *e->layers))) rc = SS_ENOMEM;
    if (rc >= 0) rc = e->c.kind == TXENC_CLIP ? load_clip(e, s) : load_t5(e, s);
    if (e->keep_files) e->files = s; /* txenc_free closes it */
    else st_set_close(s);
    if (rc < 0) {
        txenc_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

const txenc_config *txenc_get_config(const txenc *e) { return &e->c; }
size_t txenc_weight_bytes(const txenc *e) { return e->weight_bytes; }
const char *txenc_dir(const txenc *e) { return e->dir; }

int txenc_check_tokenizer(const txenc *e, const txtok *t) {
    int tv = txtok_vocab_size(t);
    if (tv > e->c.vocab_size)
        return ss_fail(SS_ESHAPE,
                       "%s: the tokenizer produces ids up to %d, but %s/config.json has vocab_size %d: "
                       "tokenizer and model do not match",
                       txtok_dir(t), tv - 1, e->dir, e->c.vocab_size);
    if ((txtok_get_kind(t) == TXTOK_CLIP) != (e->c.kind == TXENC_CLIP))
        return ss_fail(SS_EFORMAT, "%s: a %s tokenizer for a %s model (%s)", txtok_dir(t),
                       txtok_get_kind(t) == TXTOK_CLIP ? "CLIP" : "T5", e->c.kind == TXENC_CLIP ? "CLIP" : "T5", e->dir);
    return 0;
}

/* ---------------- ops ---------------- */
/* T5LayerNorm: x * rsqrt(mean(x^2) + eps) * w. */
static void rmsnorm(float *y, const float *x, const float *w, int M, int D, float eps) {
#pragma omp parallel for schedule(static) if ((size_t)M * D > 65536)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)xi[j] * xi[j];
        float r = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int j = 0; j < D; j++) y[(size_t)i * D + j] = w[j] * (xi[j] * r);
    }
}

/* transformers' T5Attention._relative_position_bucket (bidirectional), in float32 like torch. */
static int t5_bucket(int rel, int num_buckets, int max_distance) {
    int nb = num_buckets / 2, b = rel > 0 ? nb : 0;
    int a = rel < 0 ? -rel : rel, max_exact = nb / 2;
    if (a < max_exact) return b + a;
    float r = logf((float)a / (float)max_exact) / (float)log((double)max_distance / max_exact) * (float)(nb - max_exact);
    int large = max_exact + (int)r;
    return b + (large < nb - 1 ? large : nb - 1);
}

/* ---------------- forward ---------------- */
typedef struct {
    float *x, *h, *q, *k, *v, *a, *f, *g;
    float *wide; /* one narrow Linear weight widened to fp32 (txenc.widen_max floats) */
} bufs;

static void bufs_free(bufs *b) {
    free(b->x), free(b->h), free(b->q), free(b->k), free(b->v), free(b->a), free(b->f), free(b->g), free(b->wide);
}

static int bufs_alloc(bufs *b, const txenc *e, size_t M, size_t D, size_t NI, size_t F) {
    memset(b, 0, sizeof *b);
    if (e->widen_max && !(b->wide = ss_malloc(e->widen_max * sizeof(float)))) return SS_ENOMEM;
    size_t md, mi, mf;
    if (ss_mul_size(M, D, &md) < 0 || ss_mul_size(M, NI, &mi) < 0 || ss_mul_size(M, F, &mf) < 0 ||
        mf > SIZE_MAX / sizeof(float) || md > SIZE_MAX / sizeof(float) || mi > SIZE_MAX / sizeof(float))
        return ss_fail(SS_ENOMEM, "inputs too large");
    b->x = ss_malloc(md * 4), b->h = ss_malloc(md * 4), b->q = ss_malloc(mi * 4), b->k = ss_malloc(mi * 4);
    b->v = ss_malloc(mi * 4), b->a = ss_malloc(mi * 4), b->f = ss_malloc(mf * 4), b->g = ss_malloc(mf * 4);
    if (!b->x || !b->h || !b->q || !b->k || !b->v || !b->a || !b->f || !b->g) {
        bufs_free(b);
        return SS_ENOMEM;
    }
    return 0;
}

/* y = x W^T + b. A narrow weight is widened into b->wide first (in parallel, each value as the
 * loader would convert it), then multiplied by the same op_linear call as an fp32 weight. */
static void lin_apply(bufs *b, float *y, const float *x, const txlin *l, int M) {
    if (!l->w.h) {
        op_linear(y, x, &l->l, M);
        return;
    }
    const size_t n = (size_t)l->l.in * l->l.out, chunk = 1 << 16, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > chunk)
    for (size_t i = 0; i < nc; i++) mat_widen(b->wide + i * chunk, &l->w, i * chunk, i + 1 < nc ? chunk : n - i * chunk);
    ss_linear w = l->l;
    w.w = b->wide;
    op_linear(y, x, &w, M);
}

/* Row r of an embedding table into dst[D]. */
static void emb_row(float *dst, const txmat *m, int64_t r, int D) {
    if (m->h)
        mat_widen(dst, m, (size_t)r * D, (size_t)D);
    else
        memcpy(dst, m->f + (size_t)r * D, (size_t)D * sizeof *dst);
}

static int emit(txenc_out_fn cb, void *ctx, const char *name, const float *x, int B, int L, int D) {
    int64_t shape[3] = {B, L, D};
    return cb(ctx, name, 1, x, 3, shape);
}

static int run_clip(const txenc *e, const int64_t *ids, const int64_t *mask, int B, int L, txenc_out_fn cb, void *ctx) {
    const txenc_config *c = &e->c;
    int D = c->d_model, M = B * L;
    bufs b;
    int rc = bufs_alloc(&b, e, (size_t)M, (size_t)D, (size_t)D, (size_t)c->d_ff);
    if (rc < 0) return rc;
    for (int t = 0; t < M; t++) {
        float *xt = b.x + (size_t)t * D;
        emb_row(xt, &e->tok_emb, ids[t], D);
        for (int j = 0; j < D; j++) xt[j] += e->pos_emb[(size_t)(t % L) * D + j];
    }
    char name[64];
    rc = emit(cb, ctx, "hidden_states.0", b.x, B, L, D);
    float scale = 1.0f / sqrtf((float)c->d_head);
    for (int li = 0; li < c->n_layers && rc >= 0; li++) {
        const txenc_layer *Ly = &e->layers[li];
        op_layernorm_affine(b.h, b.x, Ly->ln1_w, Ly->ln1_b, M, D, c->eps);
        lin_apply(&b, b.q, b.h, &Ly->q, M);
        lin_apply(&b, b.k, b.h, &Ly->k, M);
        lin_apply(&b, b.v, b.h, &Ly->v, M);
        for (int bi = 0; bi < B && rc >= 0; bi++) {
            size_t o = (size_t)bi * L * D;
            rc = attn_materialized(b.a + o, b.q + o, b.k + o, b.v + o, L, c->n_heads, c->d_head, D, scale, NULL, 1,
                           mask ? mask + (size_t)bi * L : NULL);
        }
        if (rc < 0) break;
        lin_apply(&b, b.h, b.a, &Ly->o, M);
        for (size_t i = 0; i < (size_t)M * D; i++) b.x[i] += b.h[i];
        op_layernorm_affine(b.h, b.x, Ly->ln2_w, Ly->ln2_b, M, D, c->eps);
        lin_apply(&b, b.f, b.h, &Ly->fc1, M);
        op_activation(b.f, (size_t)M * c->d_ff, c->act);
        lin_apply(&b, b.h, b.f, &Ly->fc2, M);
        for (size_t i = 0; i < (size_t)M * D; i++) b.x[i] += b.h[i];
        snprintf(name, sizeof name, "hidden_states.%d", li + 1);
        rc = emit(cb, ctx, name, b.x, B, L, D);
    }
    if (rc >= 0) {
        op_layernorm_affine(b.h, b.x, e->final_w, e->final_b, M, D, c->eps);
        rc = emit(cb, ctx, "last_hidden_state", b.h, B, L, D);
    }
    int64_t *pidx = ss_malloc((size_t)B * sizeof *pidx);
    float *pooled = ss_malloc((size_t)B * D * sizeof *pooled), *emb = NULL;
    if (!pidx || !pooled) rc = rc < 0 ? rc : SS_ENOMEM;
    if (rc >= 0) {
        for (int bi = 0; bi < B; bi++) {
            const int64_t *r = ids + (size_t)bi * L;
            int p = 0;
            if (c->eos_token_id == 2) {
                for (int t = 1; t < L; t++)
                    if (r[t] > r[p]) p = t;
            } else {
                for (int t = 0; t < L; t++)
                    if (r[t] == c->eos_token_id) {
                        p = t;
                        break;
                    }
            }
            pidx[bi] = p;
            memcpy(pooled + (size_t)bi * D, b.h + ((size_t)bi * L + p) * D, (size_t)D * sizeof *pooled);
        }
        int64_t sh[2] = {B, D};
        rc = cb(ctx, "pooler_output", 1, pooled, 2, sh);
    }
    if (rc >= 0 && e->proj) {
        if (!(emb = ss_malloc((size_t)B * c->proj_dim * sizeof *emb))) rc = SS_ENOMEM;
        else {
            ss_linear pl = {.w = e->proj, .in = D, .out = c->proj_dim};
            op_linear(emb, pooled, &pl, B);
            int64_t sh[2] = {B, c->proj_dim};
            rc = cb(ctx, "text_embeds", 1, emb, 2, sh);
        }
    }
    if (rc >= 0) {
        int64_t sh[1] = {B};
        rc = cb(ctx, "pool_index", 0, pidx, 1, sh);
    }
    free(pidx), free(pooled), free(emb);
    bufs_free(&b);
    return rc;
}

static int run_t5(const txenc *e, const int64_t *ids, const int64_t *mask, int B, int L, txenc_out_fn cb, void *ctx) {
    const txenc_config *c = &e->c;
    int D = c->d_model, H = c->n_heads, NI = H * c->d_head, M = B * L;
    const char *sfx = mask ? "_masked" : "";
    bufs b;
    int rc = bufs_alloc(&b, e, (size_t)M, (size_t)D, (size_t)NI, (size_t)c->d_ff);
    if (rc < 0) return rc;
    size_t nb;
    float *bias = NULL;
    if (ss_mul_size((size_t)H * L, (size_t)L, &nb) < 0 || !(bias = ss_malloc(nb * sizeof *bias))) {
        bufs_free(&b);
        return ss_fail(SS_ENOMEM, "out of memory (position bias for %d tokens)", L);
    }
    for (int i = 0; i < L; i++)
        for (int j = 0; j < L; j++) {
            int bk = t5_bucket(j - i, c->num_buckets, c->max_distance);
            for (int h = 0; h < H; h++) bias[((size_t)h * L + i) * L + j] = e->rel_bias[(size_t)bk * H + h];
        }
    for (int t = 0; t < M; t++) emb_row(b.x + (size_t)t * D, &e->tok_emb, ids[t], D);
    char name[64];
    snprintf(name, sizeof name, "hidden_states%s.0", sfx);
    rc = emit(cb, ctx, name, b.x, B, L, D);
    for (int li = 0; li < c->n_layers && rc >= 0; li++) {
        const txenc_layer *Ly = &e->layers[li];
        rmsnorm(b.h, b.x, Ly->ln1_w, M, D, c->eps);
        lin_apply(&b, b.q, b.h, &Ly->q, M);
        lin_apply(&b, b.k, b.h, &Ly->k, M);
        lin_apply(&b, b.v, b.h, &Ly->v, M);
        for (int bi = 0; bi < B && rc >= 0; bi++) {
            size_t o = (size_t)bi * L * NI;
            rc = attn_materialized(b.a + o, b.q + o, b.k + o, b.v + o, L, H, c->d_head, NI, 1.0f, bias, 0,
                           mask ? mask + (size_t)bi * L : NULL);
        }
        if (rc < 0) break;
        lin_apply(&b, b.h, b.a, &Ly->o, M);
        for (size_t i = 0; i < (size_t)M * D; i++) b.x[i] += b.h[i];
        rmsnorm(b.h, b.x, Ly->ln2_w, M, D, c->eps);
        lin_apply(&b, b.f, b.h, &Ly->fc1, M);
        op_activation(b.f, (size_t)M * c->d_ff, c->act ? OP_ACT_RELU : OP_ACT_GELU_TANH);
        if (c->gated) {
            lin_apply(&b, b.g, b.h, &Ly->fc1b, M);
            for (size_t i = 0; i < (size_t)M * c->d_ff; i++) b.f[i] *= b.g[i];
        }
        lin_apply(&b, b.h, b.f, &Ly->fc2, M);
        for (size_t i = 0; i < (size_t)M * D; i++) b.x[i] += b.h[i];
        snprintf(name, sizeof name, "block%s.%d", sfx, li);
        rc = emit(cb, ctx, name, b.x, B, L, D);
        if (rc >= 0 && li + 1 < c->n_layers) {
            snprintf(name, sizeof name, "hidden_states%s.%d", sfx, li + 1);
            rc = emit(cb, ctx, name, b.x, B, L, D);
        }
    }
    if (rc >= 0) {
        rmsnorm(b.h, b.x, e->final_w, M, D, c->eps);
        snprintf(name, sizeof name, "hidden_states%s.%d", sfx, c->n_layers);
        rc = emit(cb, ctx, name, b.h, B, L, D);
        snprintf(name, sizeof name, "last_hidden_state%s", sfx);
        if (rc >= 0) rc = emit(cb, ctx, name, b.h, B, L, D);
    }
    free(bias);
    bufs_free(&b);
    return rc;
}

int txenc_run(const txenc *e, const int64_t *ids, const int64_t *mask, int B, int L, const char *label,
              txenc_out_fn cb, void *ctx) {
    const txenc_config *c = &e->c;
    if (B <= 0 || L <= 0) return ss_fail(SS_ESHAPE, "%s: input_ids is empty", label);
    if (c->max_positions && L > c->max_positions)
        return ss_fail(SS_ESHAPE, "%s: input_ids has %d tokens, more than max_position_embeddings %d of %s/config.json",
                       label, L, c->max_positions, e->dir);
    for (size_t t = 0; t < (size_t)B * L; t++) {
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return ss_fail(SS_EFORMAT, "%s: input_ids[%zu][%zu] = %lld is outside vocab_size %d of %s/config.json",
                           label, t / L, t % L, (long long)ids[t], c->vocab_size, e->dir);
        if (mask && mask[t] != 0 && mask[t] != 1)
            return ss_fail(SS_EFORMAT, "%s: attention_mask[%zu][%zu] = %lld is not 0 or 1", label, t / L, t % L,
                           (long long)mask[t]);
    }
    if (c->kind == TXENC_CLIP) return run_clip(e, ids, mask, B, L, cb, ctx);
    int rc = run_t5(e, ids, NULL, B, L, cb, ctx);
    if (rc >= 0 && mask) rc = run_t5(e, ids, mask, B, L, cb, ctx);
    return rc;
}
