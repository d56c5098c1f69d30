/* The family table: SD3 (models/sd3.h), FLUX (models/flux.h) and PixArt (models/pixart.h) behind one interface. */
#include "models/family.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/jsonfile.h"
#include "models/flux.h"
#include "models/pixart.h"
#include "models/sd3.h"

void ss_fwd_inputs_free(ss_fwd_inputs *io) {
    for (int i = 0; i < SS_FWD_MAX_IN; i++) free(io->in[i]);
    memset(io, 0, sizeof *io);
}

/* ---- inputs shared by the families ---- */

/* Look up an input tensor, check its dtype and rank from the header; dims[] receives its shape. */
static int input_find(const st_file *f, const char *path, const char *name, int ndim, int64_t *dims,
                      const st_tensor **out) {
    const st_tensor *t = st_find(f, name);
    if (!t) return ss_fail(SS_EMISSING, "%s: input tensor '%s' is missing", path, name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        return ss_fail(SS_EFORMAT, "%s: input '%s' has dtype %s, expected a float dtype (F32, F16, BF16, F64)", path,
                       name, st_dtype_name(t->dtype));
    if (t->ndim != ndim) return ss_fail(SS_ESHAPE, "%s: input '%s' has %d dimensions, expected %d", path, name, t->ndim, ndim);
    for (int i = 0; i < ndim; i++) dims[i] = t->shape[i];
    *out = t;
    return SS_OK;
}

/* "[2,16,32,32]" */
static const char *shape_str(char *buf, size_t cap, const int64_t *d, int n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? "," : "[", (long long)d[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static int input_convert(const char *path, const st_tensor *t, float **out) {
    size_t n = (size_t)(t->numel ? t->numel : 1);
    *out = malloc(sizeof(float) * n);
    if (!*out)
        return ss_fail(SS_ENOMEM, "%s: input '%s': out of memory converting %zu values to fp32", path, t->name, n);
    return st_to_f32(*out, t);
}

static int convert_all(const char *path, const st_tensor *const *t, int n, ss_fwd_inputs *io) {
    for (int i = 0; i < n; i++) {
        if (!t[i]) continue;
        int rc = input_convert(path, t[i], &io->in[i]);
        if (rc < 0) return rc;
    }
    return SS_OK;
}

/* ---- SD3 ---- */

static int sd3_fam_load(void **m, const char *dir) { return sd3_load((sd3_model **)m, dir); }
static void sd3_fam_free(void *m) { sd3_free(m); }

static int sd3_fam_inputs(const void *model, const st_file *in, const char *path, ss_fwd_inputs *io) {
    const sd3_model *m = model;
    const sd3_config *c = &m->cfg;
    memset(io, 0, sizeof *io);
    int64_t dx[4] = {0}, dc[3] = {0}, dp[2] = {0}, dt[1] = {0};
    const st_tensor *t[4];
    char s[128];
    int rc;
    if ((rc = input_find(in, path, "hidden_states", 4, dx, &t[0])) < 0 ||
        (rc = input_find(in, path, "encoder_hidden_states", 3, dc, &t[1])) < 0 ||
        (rc = input_find(in, path, "pooled_projections", 2, dp, &t[2])) < 0 ||
        (rc = input_find(in, path, "timestep", 1, dt, &t[3])) < 0)
        return rc;
    const int64_t B = dx[0], p = c->patch_size, M = c->pos_embed_max_size;
    if (B < 1 || B > 4096)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s: batch size %lld outside 1..4096", path,
                       shape_str(s, sizeof s, dx, 4), (long long)B);
    if (dx[1] != c->in_channels)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s, expected [%lld, %d, H, W] (batch, in_channels)", path,
                       shape_str(s, sizeof s, dx, 4), (long long)B, c->in_channels);
    if (dx[2] < p || dx[3] < p || dx[2] % p || dx[3] % p || dx[2] / p > M || dx[3] / p > M)
        return ss_fail(SS_ESHAPE,
                       "%s: input 'hidden_states' has shape %s: height and width must be positive multiples of the patch "
                       "size %lld, at most %lld (pos_embed_max_size %lld patches)",
                       path, shape_str(s, sizeof s, dx, 4), (long long)p, (long long)(p * M), (long long)M);
    if (dc[0] != B || dc[1] < 1 || dc[1] > 1 << 20 || dc[2] != c->joint_attention_dim)
        return ss_fail(SS_ESHAPE,
                       "%s: input 'encoder_hidden_states' has shape %s, expected [%lld, S, %d] (batch, 1 <= S <= %d, "
                       "joint_attention_dim)",
                       path, shape_str(s, sizeof s, dc, 3), (long long)B, c->joint_attention_dim, 1 << 20);
    if (dp[0] != B || dp[1] != c->pooled_projection_dim)
        return ss_fail(SS_ESHAPE, "%s: input 'pooled_projections' has shape %s, expected [%lld, %d] (batch, pooled_projection_dim)",
                       path, shape_str(s, sizeof s, dp, 2), (long long)B, c->pooled_projection_dim);
    if (dt[0] != B)
        return ss_fail(SS_ESHAPE, "%s: input 'timestep' has shape %s, expected [%lld] (batch)", path,
                       shape_str(s, sizeof s, dt, 1), (long long)B);
    io->B = (int)B;
    io->N = (int)((dx[2] / p) * (dx[3] / p));
    io->pe_grid[0] = (int)(dx[2] / p); /* the cropped table of the actual grid */
    io->pe_grid[1] = (int)(dx[3] / p);
    io->S = (int)dc[1];
    io->D = m->D;
    io->out_ndim = 4;
    io->out_shape[0] = B;
    io->out_shape[1] = c->out_channels;
    io->out_shape[2] = dx[2];
    io->out_shape[3] = dx[3];
    io->out_numel = (size_t)B * c->out_channels * (size_t)dx[2] * (size_t)dx[3];
    return convert_all(path, t, 4, io);
}

static int sd3_fam_sites(const void *model, int N, int S, ss_site *out, int cap) {
    return sd3_sites(&((const sd3_model *)model)->cfg, N, S, out, cap);
}

/* sd3_hooks onto ss_model_hooks */
static int sd3_attn_adapter(void *ctx, const ss_site *site, const attn_args *a) {
    const ss_model_hooks *h = ctx;
    return h->attention ? h->attention(h->ctx, site, a) : attn_forward(a, NULL);
}
static int sd3_block_adapter(void *ctx, int block, const float *x, int B, int N, int D) {
    const ss_model_hooks *h = ctx;
    return h->block_output ? h->block_output(h->ctx, SS_SITE_JOINT, block, x, B, N, D) : 0;
}

static int pos_adapter(void *ctx, float *tab, int h, int w, int D) {
    const ss_model_hooks *hk = ctx;
    return hk->pos_embed ? hk->pos_embed(hk->ctx, tab, h, w, D) : 0;
}

static int sd3_fam_forward(const void *model, float *out, const ss_fwd_inputs *io, const ss_model_hooks *hk) {
    const sd3_hooks h = {.ctx = (void *)hk, .attention = sd3_attn_adapter, .block_output = sd3_block_adapter,
                         .pos_embed = hk && hk->pos_embed ? pos_adapter : NULL};
    return sd3_forward(model, out, io->in[0], io->in[1], io->in[2], io->in[3], io->B, (int)io->out_shape[2],
                       (int)io->out_shape[3], io->S, hk ? &h : NULL);
}

/* ---- FLUX ---- */

static int flux_fam_load(void **m, const char *dir) { return flux_load((flux_model **)m, dir); }
static void flux_fam_free(void *m) { flux_free(m); }

enum { FX_HS, FX_CTX, FX_POOLED, FX_T, FX_IMG_IDS, FX_TXT_IDS, FX_GUIDANCE, FX_N };

static int flux_fam_inputs(const void *model, const st_file *in, const char *path, ss_fwd_inputs *io) {
    const flux_model *m = model;
    const flux_config *c = &m->cfg;
    memset(io, 0, sizeof *io);
    int64_t dx[3] = {0}, dc[3] = {0}, dp[2] = {0}, dt[1] = {0}, di[2] = {0}, ds[2] = {0}, dg[1] = {0};
    const st_tensor *t[FX_N] = {0};
    char s[128];
    int rc;
    if ((rc = input_find(in, path, "hidden_states", 3, dx, &t[FX_HS])) < 0 ||
        (rc = input_find(in, path, "encoder_hidden_states", 3, dc, &t[FX_CTX])) < 0 ||
        (rc = input_find(in, path, "pooled_projections", 2, dp, &t[FX_POOLED])) < 0 ||
        (rc = input_find(in, path, "timestep", 1, dt, &t[FX_T])) < 0 ||
        (rc = input_find(in, path, "img_ids", 2, di, &t[FX_IMG_IDS])) < 0 ||
        (rc = input_find(in, path, "txt_ids", 2, ds, &t[FX_TXT_IDS])) < 0)
        return rc;
    if (c->guidance_embeds) {
        if ((rc = input_find(in, path, "guidance", 1, dg, &t[FX_GUIDANCE])) < 0) return rc;
    } else if (st_find(in, "guidance")) {
        return ss_fail(SS_EARG, "%s: input 'guidance' is given, but the model has no guidance embedding (guidance_embeds false)",
                       path);
    }
    const int64_t B = dx[0], N = dx[1], S = dc[1];
    if (B < 1 || B > 4096)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s: batch size %lld outside 1..4096", path,
                       shape_str(s, sizeof s, dx, 3), (long long)B);
    if (N < 1 || N > 1 << 20 || dx[2] != c->in_channels)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s, expected [%lld, N, %d] (batch, 1 <= N <= %d packed tokens, in_channels)",
                       path, shape_str(s, sizeof s, dx, 3), (long long)B, c->in_channels, 1 << 20);
    if (dc[0] != B || S < 1 || S > 1 << 20 || dc[2] != c->joint_attention_dim)
        return ss_fail(SS_ESHAPE,
                       "%s: input 'encoder_hidden_states' has shape %s, expected [%lld, S, %d] (batch, 1 <= S <= %d, "
                       "joint_attention_dim)",
                       path, shape_str(s, sizeof s, dc, 3), (long long)B, c->joint_attention_dim, 1 << 20);
    if (dp[0] != B || dp[1] != c->pooled_projection_dim)
        return ss_fail(SS_ESHAPE, "%s: input 'pooled_projections' has shape %s, expected [%lld, %d] (batch, pooled_projection_dim)",
                       path, shape_str(s, sizeof s, dp, 2), (long long)B, c->pooled_projection_dim);
    if (dt[0] != B)
        return ss_fail(SS_ESHAPE, "%s: input 'timestep' has shape %s, expected [%lld] (batch)", path,
                       shape_str(s, sizeof s, dt, 1), (long long)B);
    if (c->guidance_embeds && dg[0] != B)
        return ss_fail(SS_ESHAPE, "%s: input 'guidance' has shape %s, expected [%lld] (batch)", path,
                       shape_str(s, sizeof s, dg, 1), (long long)B);
    if (di[0] != N || di[1] != c->n_axes)
        return ss_fail(SS_ESHAPE, "%s: input 'img_ids' has shape %s, expected [%lld, %d] (image tokens, len(axes_dims_rope))",
                       path, shape_str(s, sizeof s, di, 2), (long long)N, c->n_axes);
    if (ds[0] != S || ds[1] != c->n_axes)
        return ss_fail(SS_ESHAPE, "%s: input 'txt_ids' has shape %s, expected [%lld, %d] (text tokens, len(axes_dims_rope))",
                       path, shape_str(s, sizeof s, ds, 2), (long long)S, c->n_axes);
    io->B = (int)B;
    io->N = (int)N;
    io->S = (int)S;
    io->D = m->D;
    io->out_ndim = 3;
    io->out_shape[0] = B;
    io->out_shape[1] = N;
    io->out_shape[2] = (int64_t)c->patch_size * c->patch_size * c->out_channels;
    io->out_numel = (size_t)B * (size_t)N * (size_t)io->out_shape[2];
    return convert_all(path, t, FX_N, io);
}

static int flux_fam_sites(const void *model, int N, int S, ss_site *out, int cap) {
    return flux_sites(&((const flux_model *)model)->cfg, N, S, out, cap);
}

static int flux_double_adapter(void *ctx, int block, const float *x, int B, int N, int D) {
    const ss_model_hooks *h = ctx;
    return h->block_output ? h->block_output(h->ctx, SS_SITE_DOUBLE, block, x, B, N, D) : 0;
}
static int flux_single_adapter(void *ctx, int block, const float *x, int B, int T, int D) {
    const ss_model_hooks *h = ctx;
    return h->block_output ? h->block_output(h->ctx, SS_SITE_SINGLE, block, x, B, T, D) : 0;
}

static int flux_rope_adapter(void *ctx, const ss_site *site, int post, const attn_args *a) {
    const ss_model_hooks *h = ctx;
    return h->rope_qk ? h->rope_qk(h->ctx, site, post, a) : 0;
}

static int flux_fam_forward(const void *model, float *out, const ss_fwd_inputs *io, const ss_model_hooks *hk) {
    const flux_hooks h = {.ctx = (void *)hk, .attention = sd3_attn_adapter, .block_output = flux_double_adapter,
                          .single_output = flux_single_adapter, .rope_qk = flux_rope_adapter};
    return flux_forward(model, out, io->in[FX_HS], io->in[FX_CTX], io->in[FX_POOLED], io->in[FX_T], io->in[FX_GUIDANCE],
                        io->in[FX_IMG_IDS], io->in[FX_TXT_IDS], io->B, io->N, io->S, hk ? &h : NULL);
}

/* ---- PixArt ---- */

static int pixart_fam_load(void **m, const char *dir) { return pixart_load((pixart_model **)m, dir); }
static void pixart_fam_free(void *m) { pixart_free(m); }

enum { PX_HS, PX_CTX, PX_MASK, PX_T, PX_RES, PX_AR, PX_N };

static int pixart_fam_inputs(const void *model, const st_file *in, const char *path, ss_fwd_inputs *io) {
    const pixart_model *m = model;
    const pixart_config *c = &m->cfg;
    memset(io, 0, sizeof *io);
    int64_t dx[4] = {0}, dc[3] = {0}, dm[2] = {0}, dt[1] = {0}, dr[2] = {0}, da[2] = {0};
    const st_tensor *t[PX_N] = {0};
    char s[128];
    int rc;
    if ((rc = input_find(in, path, "hidden_states", 4, dx, &t[PX_HS])) < 0 ||
        (rc = input_find(in, path, "encoder_hidden_states", 3, dc, &t[PX_CTX])) < 0 ||
        (rc = input_find(in, path, "timestep", 1, dt, &t[PX_T])) < 0)
        return rc;
    if (st_find(in, "encoder_attention_mask") && (rc = input_find(in, path, "encoder_attention_mask", 2, dm, &t[PX_MASK])) < 0)
        return rc;
    if (c->use_additional_conditions) {
        if ((rc = input_find(in, path, "resolution", 2, dr, &t[PX_RES])) < 0 ||
            (rc = input_find(in, path, "aspect_ratio", 2, da, &t[PX_AR])) < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ss_err());
            return ss_fail(rc, "%s (the model uses additional conditions: use_additional_conditions, or sample_size 128)", msg);
        }
    } else {
        const char *extra = st_find(in, "resolution") ? "resolution" : st_find(in, "aspect_ratio") ? "aspect_ratio" : NULL;
        if (extra)
            return ss_fail(SS_EARG, "%s: input '%s' is given, but the model has no additional conditions "
                           "(use_additional_conditions false, sample_size %d)", path, extra, c->sample_size);
    }
    const int64_t B = dx[0], p = c->patch_size, S = dc[1];
    const int J = c->caption_channels ? c->caption_channels : c->cross_attention_dim ? c->cross_attention_dim : m->D;
    if (B < 1 || B > 4096)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s: batch size %lld outside 1..4096", path,
                       shape_str(s, sizeof s, dx, 4), (long long)B);
    if (dx[1] != c->in_channels)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s, expected [%lld, %d, H, W] (batch, in_channels)", path,
                       shape_str(s, sizeof s, dx, 4), (long long)B, c->in_channels);
    if (dx[2] < p || dx[3] < p || dx[2] % p || dx[3] % p || (dx[2] / p) * (dx[3] / p) > (1 << 24))
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s: height and width must be positive multiples of the "
                       "patch size %lld", path, shape_str(s, sizeof s, dx, 4), (long long)p);
    if (dc[0] != B || S < 1 || S > 1 << 20 || dc[2] != J)
        return ss_fail(SS_ESHAPE, "%s: input 'encoder_hidden_states' has shape %s, expected [%lld, S, %d] (batch, 1 <= S <= %d, %s)",
                       path, shape_str(s, sizeof s, dc, 3), (long long)B, J, 1 << 20,
                       c->caption_channels ? "caption_channels" : "cross_attention_dim");
    if (t[PX_MASK] && (dm[0] != B || dm[1] != S))
        return ss_fail(SS_ESHAPE, "%s: input 'encoder_attention_mask' has shape %s, expected [%lld, %lld] (batch, text tokens)",
                       path, shape_str(s, sizeof s, dm, 2), (long long)B, (long long)S);
    if (dt[0] != B)
        return ss_fail(SS_ESHAPE, "%s: input 'timestep' has shape %s, expected [%lld] (batch)", path,
                       shape_str(s, sizeof s, dt, 1), (long long)B);
    if (t[PX_RES] && (dr[0] != B || dr[1] != 2))
        return ss_fail(SS_ESHAPE, "%s: input 'resolution' has shape %s, expected [%lld, 2] (batch; height, width in pixels)", path,
                       shape_str(s, sizeof s, dr, 2), (long long)B);
    if (t[PX_AR] && (da[0] != B || da[1] != 1))
        return ss_fail(SS_ESHAPE, "%s: input 'aspect_ratio' has shape %s, expected [%lld, 1] (batch; height / width)", path,
                       shape_str(s, sizeof s, da, 2), (long long)B);
    io->B = (int)B;
    io->N = (int)((dx[2] / p) * (dx[3] / p));
    io->pe_grid[0] = (int)(dx[2] / p); /* the sin-cos table of the actual grid */
    io->pe_grid[1] = (int)(dx[3] / p);
    io->S = (int)S;
    io->D = m->D;
    io->out_ndim = 4;
    io->out_shape[0] = B;
    io->out_shape[1] = c->out_channels;
    io->out_shape[2] = dx[2];
    io->out_shape[3] = dx[3];
    io->out_numel = (size_t)B * c->out_channels * (size_t)dx[2] * (size_t)dx[3];
    return convert_all(path, t, PX_N, io);
}

static int pixart_fam_sites(const void *model, int N, int S, ss_site *out, int cap) {
    return pixart_sites(&((const pixart_model *)model)->cfg, N, S, out, cap);
}

static int pixart_block_adapter(void *ctx, int block, const float *x, int B, int N, int D) {
    const ss_model_hooks *h = ctx;
    return h->block_output ? h->block_output(h->ctx, SS_SITE_SELF, block, x, B, N, D) : 0;
}

static int pixart_fam_forward(const void *model, float *out, const ss_fwd_inputs *io, const ss_model_hooks *hk) {
    const pixart_hooks h = {.ctx = (void *)hk, .attention = sd3_attn_adapter, .block_output = pixart_block_adapter,
                            .pos_embed = pos_adapter};
    return pixart_forward(model, out, io->in[PX_HS], io->in[PX_CTX], io->in[PX_MASK], io->in[PX_T], io->in[PX_RES],
                          io->in[PX_AR], io->B, (int)io->out_shape[2], (int)io->out_shape[3], io->S, hk ? &h : NULL);
}

/* ---- the table ---- */

static double sd3_fam_flops(const void *model, const ss_fwd_inputs *io) {
    const sd3_model *m = model;
    return sd3_forward_flops(&m->cfg, io->B, (int)io->out_shape[2], (int)io->out_shape[3], io->S);
}
static double flux_fam_flops(const void *model, const ss_fwd_inputs *io) {
    const flux_model *m = model;
    return flux_forward_flops(&m->cfg, io->B, io->N, io->S);
}
static double pixart_fam_flops(const void *model, const ss_fwd_inputs *io) {
    const pixart_model *m = model;
    return pixart_forward_flops(&m->cfg, io->B, (int)io->out_shape[2], (int)io->out_shape[3], io->S);
}

static const ss_family FAMILIES[] = {
    {"SD3Transformer2DModel", "sd3", 0, sd3_fam_load, sd3_fam_free, sd3_fam_inputs, sd3_fam_sites, sd3_fam_forward,
     sd3_fam_flops},
    {"FluxTransformer2DModel", "flux", 1, flux_fam_load, flux_fam_free, flux_fam_inputs, flux_fam_sites, flux_fam_forward,
     flux_fam_flops},
    {"PixArtTransformer2DModel", "pixart", 0, pixart_fam_load, pixart_fam_free, pixart_fam_inputs, pixart_fam_sites,
     pixart_fam_forward, pixart_fam_flops},
};
#define N_FAMILIES (sizeof FAMILIES / sizeof FAMILIES[0])

const ss_family *ss_family_find(const char *class_name) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (!strcmp(FAMILIES[i].class_name, class_name)) return &FAMILIES[i];
    return NULL;
}

int ss_family_detect(const char *dir, const ss_family **out) {
    *out = NULL;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "%s: path too long", dir);
    return ss_family_detect_config(path, out);
}

int ss_family_detect_config(const char *path, const ss_family **out) {
    *out = NULL;
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    json_t *cls = json_is_object(root) ? json_object_get(root, "_class_name") : NULL;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: config must be a JSON object", path);
    } else if (!cls) {
        *out = &FAMILIES[0]; /* SD3 configs written before families existed */
    } else if (json_is_string(cls) && !strcmp(json_string_value(cls), "Transformer2DModel") &&
               json_is_string(json_object_get(root, "norm_type")) &&
               !strcmp(json_string_value(json_object_get(root, "norm_type")), "ada_norm_single")) {
        /* diffusers' _CLASS_REMAPPING_DICT: the Hub's PixArt-alpha configs name this class */
        *out = ss_family_find("PixArtTransformer2DModel");
    } else if (!json_is_string(cls) || !(*out = ss_family_find(json_string_value(cls)))) {
        char known[256] = "";
        for (size_t i = 0; i < N_FAMILIES; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", FAMILIES[i].class_name);
        rc = ss_fail(SS_EFORMAT, "%s: _class_name is %s; sinkscope runs %s", path,
                     json_is_string(cls) ? json_string_value(cls) : "not a string", known);
    }
    json_decref(root);
    return rc;
}
