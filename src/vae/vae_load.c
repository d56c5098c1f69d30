/* Loading an AutoencoderKL folder: config.json, then every weight the config implies checked for
 * presence, dtype and shape (pass 0), then converted and bound (pass 1), through models/binder.c. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/dnnl_conv.h"
#include "core/err.h"
#include "io/jsonfile.h"
#include "io/safetensors.h"
#include "models/binder.h"
#include "vae/vae.h"

#define PATH_LEN 4096

static int get_int(json_t *root, const char *path, const char *key, int lo, int hi, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be an integer", path, key);
    const json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return ss_fail(SS_EFORMAT, "%s: field '%s' = %lld is outside [%d, %d]", path, key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_bool(json_t *root, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

/* 1 when set (finite number), 0 when absent or null. */
static int get_num(json_t *root, const char *path, const char *key, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return ss_fail(SS_EFORMAT, "%s: field '%s' must be a finite number or null", path, key);
    *out = json_number_value(v);
    return 1;
}

/* A list of block type names that must all be `want`; its length into *n. */
static int get_types(json_t *root, const char *path, const char *key, const char *want, int *n) {
    json_t *v = json_object_get(root, key);
    if (!v) return 0;
    if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > VAE_MAX_BLOCKS)
        return ss_fail(SS_EFORMAT, "%s: field '%s' must list 1 to %d block types", path, key, VAE_MAX_BLOCKS);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s) || strcmp(json_string_value(s), want))
            return ss_fail(SS_EFORMAT, "%s: field '%s'[%zu] must be \"%s\" (the only block type supported)", path, key, i,
                           want);
    }
    *n = (int)json_array_size(v);
    return 0;
}

int vae_config_load(vae_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    /* AutoencoderKL.__init__ defaults */
    c->in_channels = c->out_channels = 3;
    c->latent_channels = 4;
    c->n_blocks = 1;
    c->block_out[0] = 64;
    c->layers_per_block = 1;
    c->groups = 32;
    c->use_quant_conv = c->use_post_quant_conv = c->mid_attention = 1;
    c->scaling_factor = 0.18215;
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    json_t *cls = json_object_get(root, "_class_name");
    if (cls && (!json_is_string(cls) || strcmp(json_string_value(cls), "AutoencoderKL"))) {
        rc = ss_fail(SS_EFORMAT, "%s: field '_class_name' must be \"AutoencoderKL\"", path);
        goto done;
    }
    json_t *act = json_object_get(root, "act_fn");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu"))) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'act_fn' must be \"silu\"", path);
        goto done;
    }
    json_t *boc = json_object_get(root, "block_out_channels");
    if (boc) {
        if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > VAE_MAX_BLOCKS) {
            rc = ss_fail(SS_EFORMAT, "%s: field 'block_out_channels' must list 1 to %d widths", path, VAE_MAX_BLOCKS);
            goto done;
        }
        c->n_blocks = (int)json_array_size(boc);
        for (int i = 0; i < c->n_blocks; i++) {
            json_t *x = json_array_get(boc, (size_t)i);
            if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > 8192) {
                rc = ss_fail(SS_EFORMAT, "%s: field 'block_out_channels'[%d] must be an integer in [1, 8192]", path, i);
                goto done;
            }
            c->block_out[i] = (int)json_integer_value(x);
        }
    }
    int nd = c->n_blocks, nu = c->n_blocks;
    double shift = 0;
    if ((rc = get_types(root, path, "down_block_types", "DownEncoderBlock2D", &nd)) < 0 ||
        (rc = get_types(root, path, "up_block_types", "UpDecoderBlock2D", &nu)) < 0 ||
        (rc = get_int(root, path, "in_channels", 1, 64, &c->in_channels)) < 0 ||
        (rc = get_int(root, path, "out_channels", 1, 64, &c->out_channels)) < 0 ||
        (rc = get_int(root, path, "latent_channels", 1, 4096, &c->latent_channels)) < 0 ||
        (rc = get_int(root, path, "layers_per_block", 1, VAE_MAX_LAYERS, &c->layers_per_block)) < 0 ||
        (rc = get_int(root, path, "norm_num_groups", 1, 8192, &c->groups)) < 0 ||
        (rc = get_bool(root, path, "use_quant_conv", &c->use_quant_conv)) < 0 ||
        (rc = get_bool(root, path, "use_post_quant_conv", &c->use_post_quant_conv)) < 0 ||
        (rc = get_bool(root, path, "mid_block_add_attention", &c->mid_attention)) < 0 ||
        (rc = get_num(root, path, "scaling_factor", &c->scaling_factor)) < 0 ||
        (rc = get_num(root, path, "shift_factor", &shift)) < 0)
        goto done;
    c->has_shift = rc == 1;
    c->shift_factor = shift;
    rc = 0;
    if (nd != c->n_blocks || nu != c->n_blocks) {
        rc = ss_fail(SS_EFORMAT, "%s: down_block_types (%d) and up_block_types (%d) must have one entry per "
                     "block_out_channels (%d)", path, nd, nu, c->n_blocks);
        goto done;
    }
    if (c->scaling_factor == 0) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'scaling_factor' must not be 0", path);
        goto done;
    }
    json_t *nt = json_object_get(root, "norm_type");
    if (nt && !json_is_null(nt) && (!json_is_string(nt) || strcmp(json_string_value(nt), "group"))) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'norm_type' must be \"group\"", path);
        goto done;
    }
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out[i] % c->groups) {
            rc = ss_fail(SS_EFORMAT, "%s: block_out_channels[%d] = %d is not a multiple of norm_num_groups %d", path, i,
                         c->block_out[i], c->groups);
            goto done;
        }
done:
    json_decref(root);
    return rc;
}

/* ---- weights ---- */

static int bind(ss_binder *bd, const float **slot, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3) {
    const int64_t shp[4] = {d0, d1, d2, d3};
    return ss_bind(bd, slot, name, ndim, shp);
}

static int bind_conv(ss_binder *bd, ss_conv2d *cv, const char *pre, int cin, int cout, int k, int stride, int pad) {
    char n[320];
    cv->cin = cin, cv->cout = cout, cv->kh = cv->kw = k, cv->stride = stride, cv->pad = pad;
    int rc;
    snprintf(n, sizeof n, "%s.weight", pre);
    if ((rc = bind(bd, &cv->w, n, 4, cout, cin, k, k)) < 0) return rc;
    snprintf(n, sizeof n, "%s.bias", pre);
    return bind(bd, &cv->b, n, 1, cout, 0, 0, 0);
}

static int bind_norm(ss_binder *bd, const float **w, const float **b, const char *pre, int C) {
    char n[320];
    int rc;
    snprintf(n, sizeof n, "%s.weight", pre);
    if ((rc = bind(bd, w, n, 1, C, 0, 0, 0)) < 0) return rc;
    snprintf(n, sizeof n, "%s.bias", pre);
    return bind(bd, b, n, 1, C, 0, 0, 0);
}

static int bind_linear(ss_binder *bd, ss_linear *l, const char *pre, int C) {
    char n[320];
    int rc;
    l->in = l->out = C;
    snprintf(n, sizeof n, "%s.weight", pre);
    if ((rc = bind(bd, &l->w, n, 2, C, C, 0, 0)) < 0) return rc;
    snprintf(n, sizeof n, "%s.bias", pre);
    return bind(bd, &l->b, n, 1, C, 0, 0, 0);
}

static int bind_resnet(ss_binder *bd, vae_resnet *r, const char *pre, int cin, int cout) {
    char n[256];
    int rc;
    r->cin = cin, r->cout = cout;
    snprintf(n, sizeof n, "%s.norm1", pre);
    if ((rc = bind_norm(bd, &r->n1w, &r->n1b, n, cin)) < 0) return rc;
    snprintf(n, sizeof n, "%s.conv1", pre);
    if ((rc = bind_conv(bd, &r->conv1, n, cin, cout, 3, 1, 1)) < 0) return rc;
    snprintf(n, sizeof n, "%s.norm2", pre);
    if ((rc = bind_norm(bd, &r->n2w, &r->n2b, n, cout)) < 0) return rc;
    snprintf(n, sizeof n, "%s.conv2", pre);
    if ((rc = bind_conv(bd, &r->conv2, n, cout, cout, 3, 1, 1)) < 0) return rc;
    if (cin != cout) {
        snprintf(n, sizeof n, "%s.conv_shortcut", pre);
        if ((rc = bind_conv(bd, &r->shortcut, n, cin, cout, 1, 1, 0)) < 0) return rc;
    }
    return 0;
}

static int bind_mid(ss_binder *bd, vae_mid *m, const char *pre, int C, int attn) {
    char n[256];
    int rc;
    snprintf(n, sizeof n, "%s.resnets.0", pre);
    if ((rc = bind_resnet(bd, &m->r0, n, C, C)) < 0) return rc;
    if (attn) {
        static const char *const sub[] = {"to_q", "to_k", "to_v", "to_out.0"};
        ss_linear *l[] = {&m->attn.q, &m->attn.k, &m->attn.v, &m->attn.o};
        snprintf(n, sizeof n, "%s.attentions.0.group_norm", pre);
        if ((rc = bind_norm(bd, &m->attn.gnw, &m->attn.gnb, n, C)) < 0) return rc;
        for (int i = 0; i < 4; i++) {
            snprintf(n, sizeof n, "%s.attentions.0.%s", pre, sub[i]);
            if ((rc = bind_linear(bd, l[i], n, C)) < 0) return rc;
        }
    }
    snprintf(n, sizeof n, "%s.resnets.1", pre);
    return bind_resnet(bd, &m->r1, n, C, C);
}

static int bind_all(ss_binder *bd, void *model) {
    vae_model *m = model;
    const vae_config *c = &m->cfg;
    const int nb = c->n_blocks, L = c->latent_channels, top = c->block_out[nb - 1];
    char n[256];
    int rc;
    /* encoder */
    if ((rc = bind_conv(bd, &m->enc_in, "encoder.conv_in", c->in_channels, c->block_out[0], 3, 1, 1)) < 0) return rc;
    int ch = c->block_out[0];
    for (int i = 0; i < nb; i++) {
        vae_block *b = &m->down[i];
        const int out = c->block_out[i];
        b->n_res = c->layers_per_block;
        for (int j = 0; j < b->n_res; j++) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
            if ((rc = bind_resnet(bd, &b->res[j], n, j ? out : ch, out)) < 0) return rc;
        }
        ch = out;
        if (i < nb - 1) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            if ((rc = bind_conv(bd, &b->sampler, n, out, out, 3, 2, 0)) < 0) return rc;
        }
    }
    if ((rc = bind_mid(bd, &m->enc_mid, "encoder.mid_block", top, c->mid_attention)) < 0 ||
        (rc = bind_norm(bd, &m->enc_nw, &m->enc_nb, "encoder.conv_norm_out", top)) < 0 ||
        (rc = bind_conv(bd, &m->enc_out, "encoder.conv_out", top, 2 * L, 3, 1, 1)) < 0)
        return rc;
    if (c->use_quant_conv && (rc = bind_conv(bd, &m->quant, "quant_conv", 2 * L, 2 * L, 1, 1, 0)) < 0) return rc;
    /* decoder */
    if (c->use_post_quant_conv && (rc = bind_conv(bd, &m->post_quant, "post_quant_conv", L, L, 1, 1, 0)) < 0) return rc;
    if ((rc = bind_conv(bd, &m->dec_in, "decoder.conv_in", L, top, 3, 1, 1)) < 0 ||
        (rc = bind_mid(bd, &m->dec_mid, "decoder.mid_block", top, c->mid_attention)) < 0)
        return rc;
    ch = top;
    for (int i = 0; i < nb; i++) {
        vae_block *b = &m->up[i];
        const int out = c->block_out[nb - 1 - i];
        b->n_res = c->layers_per_block + 1;
        for (int j = 0; j < b->n_res; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
            if ((rc = bind_resnet(bd, &b->res[j], n, j ? out : ch, out)) < 0) return rc;
        }
        ch = out;
        if (i < nb - 1) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            if ((rc = bind_conv(bd, &b->sampler, n, out, out, 3, 1, 1)) < 0) return rc;
        }
    }
    if ((rc = bind_norm(bd, &m->dec_nw, &m->dec_nb, "decoder.conv_norm_out", c->block_out[0])) < 0 ||
        (rc = bind_conv(bd, &m->dec_out, "decoder.conv_out", c->block_out[0], c->out_channels, 3, 1, 1)) < 0)
        return rc;
    return 0;
}

int vae_enumerate_tensors(const vae_config *c, void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape),
                          void *ctx) {
    vae_model m = {.cfg = *c};
    ss_binder bd = {.pass = 2, .fn = fn, .fn_ctx = ctx};
    return bind_all(&bd, &m);
}

double vae_decode_flops(const vae_config *c, int h, int w) {
    const int nb = c->n_blocks, top = c->block_out[nb - 1];
    double hw = (double)h * w, f = 0;
#define CONV(ci, co, k) (f += 2.0 * (ci) * (co) * (k) * (k) * hw)
#define RES(ci, co) (CONV(ci, co, 3), CONV(co, co, 3), f += (ci) != (co) ? 2.0 * (ci) * (co) * hw : 0)
    if (c->use_post_quant_conv) CONV(c->latent_channels, c->latent_channels, 1);
    CONV(c->latent_channels, top, 3);
    RES(top, top);
    if (c->mid_attention) f += 2.0 * 4 * top * top * hw + 2.0 * 2 * hw * hw * top;
    RES(top, top);
    int ch = top;
    for (int i = 0; i < nb; i++) {
        const int out = c->block_out[nb - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++) RES(j ? out : ch, out);
        ch = out;
        if (i < nb - 1) {
            hw *= 4;
            CONV(out, out, 3);
        }
    }
    CONV(c->block_out[0], c->out_channels, 3);
#undef RES
#undef CONV
    return f;
}

int vae_load(vae_model **out, const char *dir) {
    *out = NULL;
    char path[PATH_LEN];
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "VAE folder path too long: %s", dir);
    vae_model *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    int rc = vae_config_load(&m->cfg, path);
    if (rc < 0) goto fail;
    st_set *st = NULL;
    if ((rc = st_set_open(&st, dir)) < 0) goto fail;
    m->files = st;
    ss_binder bd = {.st = st, .dir = dir};
    if ((rc = ss_bind_load(&bd, bind_all, m, &m->arena)) < 0) goto fail;
    *out = m;
    return 0;
fail:
    vae_free(m);
    return rc;
}

static void forget_resnet(const vae_resnet *r) {
    ss_dnnl_conv_forget(r->conv1.w);
    ss_dnnl_conv_forget(r->conv2.w);
    ss_dnnl_conv_forget(r->shortcut.w);
}

/* Drops oneDNN's reordered copies of every conv weight (nn/dnnl_conv.h): keyed by pointer. */
static void forget_convs(const vae_model *m) {
    const ss_conv2d *top[] = {&m->enc_in, &m->enc_out, &m->quant, &m->dec_in, &m->dec_out, &m->post_quant};
    for (int i = 0; i < 6; i++) ss_dnnl_conv_forget(top[i]->w);
    for (int i = 0; i < VAE_MAX_BLOCKS; i++) {
        const vae_block *bl[2] = {&m->down[i], &m->up[i]};
        for (int t = 0; t < 2; t++) {
            for (int j = 0; j < VAE_MAX_LAYERS + 1; j++) forget_resnet(&bl[t]->res[j]);
            ss_dnnl_conv_forget(bl[t]->sampler.w);
        }
    }
    forget_resnet(&m->enc_mid.r0), forget_resnet(&m->enc_mid.r1);
    forget_resnet(&m->dec_mid.r0), forget_resnet(&m->dec_mid.r1);
}

void vae_free(vae_model *m) {
    if (!m) return;
    forget_convs(m);
    st_set_close(m->files);
    free(m->arena);
    free(m);
}
