/* PixArtAlphaPipeline (pixartpipe.h): folder loading, prompt encoding, sampling, decoding. */
#include "sample/pixartpipe.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "nn/ops.h"
#include "core/rng.h"
#include "io/jsonfile.h"
#include "sample/pipeindex.h"
#include "sample/sched.h"
#include "sink/spiral.h"
#include "text/clip_bpe.h"

#define PATH_LEN PIPE_PATH_LEN
#define PX_MAX_SIDE 16384

void pixartpipe_params_default(pixartpipe_params *p) {
    memset(p, 0, sizeof *p);
    p->negative = "";
    p->steps = 20;
    p->cfg = 4.5;
    p->max_sequence_length = PIXARTPIPE_DEFAULT_MAX_SEQ;
    p->resolution_binning = 1;
}

/* ---- the aspect-ratio bins of pipeline_pixart_alpha.py: key, height, width ---- */

typedef struct {
    const char *ratio;
    int h, w;
} px_bin;

static const px_bin BIN_1024[] = {
    {"0.25", 512, 2048}, {"0.28", 512, 1856}, {"0.32", 576, 1792}, {"0.33", 576, 1728}, {"0.35", 576, 1664},
    {"0.4", 640, 1600}, {"0.42", 640, 1536}, {"0.48", 704, 1472}, {"0.5", 704, 1408}, {"0.52", 704, 1344},
    {"0.57", 768, 1344}, {"0.6", 768, 1280}, {"0.68", 832, 1216}, {"0.72", 832, 1152}, {"0.78", 896, 1152},
    {"0.82", 896, 1088}, {"0.88", 960, 1088}, {"0.94", 960, 1024}, {"1.0", 1024, 1024}, {"1.07", 1024, 960},
    {"1.13", 1088, 960}, {"1.21", 1088, 896}, {"1.29", 1152, 896}, {"1.38", 1152, 832}, {"1.46", 1216, 832},
    {"1.67", 1280, 768}, {"1.75", 1344, 768}, {"2.0", 1408, 704}, {"2.09", 1472, 704}, {"2.4", 1536, 640},
    {"2.5", 1600, 640}, {"3.0", 1728, 576}, {"4.0", 2048, 512},
};
static const px_bin BIN_512[] = {
    {"0.25", 256, 1024}, {"0.28", 256, 928}, {"0.32", 288, 896}, {"0.33", 288, 864}, {"0.35", 288, 832},
    {"0.4", 320, 800}, {"0.42", 320, 768}, {"0.48", 352, 736}, {"0.5", 352, 704}, {"0.52", 352, 672},
    {"0.57", 384, 672}, {"0.6", 384, 640}, {"0.68", 416, 608}, {"0.72", 416, 576}, {"0.78", 448, 576},
    {"0.82", 448, 544}, {"0.88", 480, 544}, {"0.94", 480, 512}, {"1.0", 512, 512}, {"1.07", 512, 480},
    {"1.13", 544, 480}, {"1.21", 544, 448}, {"1.29", 576, 448}, {"1.38", 576, 416}, {"1.46", 608, 416},
    {"1.67", 640, 384}, {"1.75", 672, 384}, {"2.0", 704, 352}, {"2.09", 736, 352}, {"2.4", 768, 320},
    {"2.5", 800, 320}, {"3.0", 864, 288}, {"4.0", 1024, 256},
};
static const px_bin BIN_256[] = {
    {"0.25", 128, 512}, {"0.28", 128, 464}, {"0.32", 144, 448}, {"0.33", 144, 432}, {"0.35", 144, 416},
    {"0.4", 160, 400}, {"0.42", 160, 384}, {"0.48", 176, 368}, {"0.5", 176, 352}, {"0.52", 176, 336},
    {"0.57", 192, 336}, {"0.6", 192, 320}, {"0.68", 208, 304}, {"0.72", 208, 288}, {"0.78", 224, 288},
    {"0.82", 224, 272}, {"0.88", 240, 272}, {"0.94", 240, 256}, {"1.0", 256, 256}, {"1.07", 256, 240},
    {"1.13", 272, 240}, {"1.21", 272, 224}, {"1.29", 288, 224}, {"1.38", 288, 208}, {"1.46", 304, 208},
    {"1.67", 320, 192}, {"1.75", 336, 192}, {"2.0", 352, 176}, {"2.09", 368, 176}, {"2.4", 384, 160},
    {"2.5", 400, 160}, {"3.0", 432, 144}, {"4.0", 512, 128},
};

/* classify_height_width_bin: min over the keys in order of |float(key) - h / w| (the first on ties). */
static void classify_bin(const px_bin *bins, int n, int h, int w, int *bh, int *bw) {
    const double ar = (double)h / (double)w;
    int best = 0;
    double bd = INFINITY;
    for (int i = 0; i < n; i++) {
        const double d = fabs(strtod(bins[i].ratio, NULL) - ar);
        if (d < bd) bd = d, best = i;
    }
    *bh = bins[best].h, *bw = bins[best].w;
}

/* ---- model_index.json ---- */

enum { C_TRANSFORMER, C_VAE, C_SCHEDULER, C_TE, C_TOK, C_COUNT };

static const pipe_component COMPONENTS[C_COUNT] = {
    [C_TRANSFORMER] = {"transformer", {"PixArtTransformer2DModel", "Transformer2DModel"}, 0},
    [C_VAE] = {"vae", {"AutoencoderKL"}, 0},
    [C_SCHEDULER] = {"scheduler", {"DPMSolverMultistepScheduler", "EulerDiscreteScheduler"}, 0},
    [C_TE] = {"text_encoder", {"T5EncoderModel"}, 0},
    [C_TOK] = {"tokenizer", {"T5Tokenizer", "T5TokenizerFast"}, 0},
};

/* ---- load ---- */

static int component_err(int rc, const char *dir, int i) {
    return ss_err_prefix(rc, "%s: component '%s': ", dir, COMPONENTS[i].key);
}

/* diffusers' pipeline reads transformer.config.out_channels // 2: null fails there. */
static int check_out_channels_given(const char *dir, const char *path) {
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return component_err(rc, dir, C_TRANSFORMER);
    json_t *oc = json_object_get(root, "out_channels");
    if (!json_is_integer(oc))
        rc = ss_fail(SS_EFORMAT, "%s: component 'transformer': config.json has no integer out_channels (PixArtAlphaPipeline "
                     "computes out_channels // 2 for the learned-sigma split; diffusers fails on null)", dir);
    json_decref(root);
    return rc;
}

static int check_consistent(const pixartpipe *p) {
    const pixart_config *tc = &p->tcfg;
    const txenc_config *t = txenc_get_config(p->enc);
    const char *d = p->dir;
    if (t->kind != TXENC_T5) return ss_fail(SS_EFORMAT, "%s: component 'text_encoder' must be a T5 encoder", d);
    if (txtok_get_kind(p->tok) != TXTOK_T5) return ss_fail(SS_EFORMAT, "%s: component 'tokenizer' must be a T5 tokenizer", d);
    const int J = tc->caption_channels ? tc->caption_channels : tc->cross_attention_dim;
    if (!tc->cross_attention_dim)
        return ss_fail(SS_EFORMAT, "%s: component 'transformer' has no cross-attention (cross_attention_dim null): "
                       "PixArtAlphaPipeline conditions on the caption", d);
    if (t->d_model != J)
        return ss_fail(SS_ESHAPE, "%s: component 'text_encoder' has d_model %d, but the transformer takes captions %d wide "
                       "(%s)", d, t->d_model, J, tc->caption_channels ? "caption_channels" : "cross_attention_dim");
    const vae_config *vc = &p->vae->cfg;
    if (vc->latent_channels != tc->in_channels)
        return ss_fail(SS_ESHAPE, "%s: component 'vae' has latent_channels %d, but the transformer has in_channels %d", d,
                       vc->latent_channels, tc->in_channels);
    if (tc->out_channels != tc->in_channels && tc->out_channels != 2 * tc->in_channels)
        return ss_fail(SS_ESHAPE, "%s: component 'transformer' has out_channels %d: PixArtAlphaPipeline needs in_channels %d "
                       "or twice that (learned sigma)", d, tc->out_channels, tc->in_channels);
    if (tc->use_additional_conditions && tc->sample_size != 128)
        return ss_fail(SS_EFORMAT, "%s: component 'transformer' uses additional conditions with sample_size %d: "
                       "PixArtAlphaPipeline passes resolution and aspect ratio only for sample_size 128 (diffusers fails)",
                       d, tc->sample_size);
    return 0;
}

int pixartpipe_load(pixartpipe **out, const char *dir) { return pixartpipe_load_opts(out, dir, 0); }

int pixartpipe_load_transformer(pixartpipe *p) {
    if (p->transformer) return 0;
    char path[PATH_LEN];
    int rc = pipe_subpath(path, p->dir, "transformer");
    if (rc < 0) return rc;
    if ((rc = pixart_load(&p->transformer, path)) < 0) return component_err(rc, p->dir, C_TRANSFORMER);
    return 0;
}

void pixartpipe_release_encoders(pixartpipe *p) {
    txenc_free(p->enc);
    p->enc = NULL;
    p->released = 1;
}

int pixartpipe_load_opts(pixartpipe **out, const char *dir, int flags) {
    *out = NULL;
    int present[C_COUNT] = {0};
    int rc = pipe_index_read(dir, PIXARTPIPE_CLASS_NAME, COMPONENTS, C_COUNT, present);
    if (rc < 0) return rc;
    pixartpipe *p = ss_calloc(1, sizeof *p);
    if (!p) return SS_ENOMEM;
    char path[PATH_LEN];
    if (!(p->dir = strdup(dir))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto fail;
    }
    {
        ss_sched s;
        if ((rc = ss_sched_load_dir(&s, dir)) < 0) {
            component_err(rc, dir, C_SCHEDULER);
            goto fail;
        }
        p->sched_kind = (int)s.kind;
        ss_sched_free(&s);
        if (p->sched_kind == SS_SCHED_FLOWMATCH) {
            rc = ss_fail(SS_EFORMAT, "%s: component 'scheduler': FlowMatchEulerDiscreteScheduler has no scale_model_input, "
                         "which PixArtAlphaPipeline calls", dir);
            goto fail;
        }
    }
    if ((rc = pipe_subpath(path, dir, "transformer/config.json")) < 0) goto fail;
    if ((rc = pixart_config_load(&p->tcfg, path)) < 0) {
        component_err(rc, dir, C_TRANSFORMER);
        goto fail;
    }
    if ((rc = check_out_channels_given(dir, path)) < 0) goto fail;
    if ((rc = pipe_open_text(dir, "tokenizer", "text_encoder", &p->tok, &p->enc)) < 0) goto fail;
    if ((rc = pipe_open_vae(dir, &p->vae)) < 0) goto fail;
    if ((rc = check_consistent(p)) < 0) goto fail;
    if (!(flags & PIXARTPIPE_DEFER_TRANSFORMER) && (rc = pixartpipe_load_transformer(p)) < 0) goto fail;
    *out = p;
    return 0;
fail:
    pixartpipe_free(p);
    return rc;
}

void pixartpipe_free(pixartpipe *p) {
    if (!p) return;
    txenc_free(p->enc);
    txtok_free(p->tok);
    pixart_free(p->transformer);
    vae_free(p->vae);
    free(p->dir);
    free(p);
}

int pixartpipe_image_size(const pixartpipe *p, const pixartpipe_params *q, int *H, int *W, int *Hb, int *Wb) {
    const pixart_config *c = &p->tcfg;
    const int f = vae_factor(p->vae), m = f * c->patch_size;
    const int h = q->height ? q->height : c->sample_size * f, w = q->width ? q->width : c->sample_size * f;
    if (h < 1 || w < 1 || h > PX_MAX_SIDE || w > PX_MAX_SIDE)
        return ss_fail(SS_EARG, "image size %dx%d: height and width must be in [1, %d]", w, h, PX_MAX_SIDE);
    int bh = h, bw = w;
    if (q->resolution_binning) {
        if (c->sample_size == 128) classify_bin(BIN_1024, (int)(sizeof BIN_1024 / sizeof BIN_1024[0]), h, w, &bh, &bw);
        else if (c->sample_size == 64) classify_bin(BIN_512, (int)(sizeof BIN_512 / sizeof BIN_512[0]), h, w, &bh, &bw);
        else if (c->sample_size == 32) classify_bin(BIN_256, (int)(sizeof BIN_256 / sizeof BIN_256[0]), h, w, &bh, &bw);
        else
            return ss_fail(SS_EARG, "%s: resolution binning (on by default, as diffusers' use_resolution_binning) needs the "
                           "transformer's sample_size 32, 64 or 128, not %d; turn it off to run at the requested size",
                           p->dir, c->sample_size);
    }
    /* check_inputs (divisible by 8), then what the latents and the patch grid need */
    if (bh % 8 || bw % 8 || bh % m || bw % m)
        return ss_fail(SS_EARG, "image size %dx%d%s: height and width must be multiples of 8 and of %d (VAE factor %d x patch "
                       "size %d)", bw, bh, bh != h || bw != w ? " (the resolution bin)" : "", m, f, c->patch_size);
    if (H) *H = h;
    if (W) *W = w;
    if (Hb) *Hb = bh;
    if (Wb) *Wb = bw;
    return 0;
}

/* ---- prompt encoding ---- */

int pixartpipe_preprocess(const char *text, char **out) { return clip_py_lower_strip(text, strlen(text), out); }

static int dump(const pixartpipe_params *q, const char *name, const float *x, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3) {
    if (!q->dump) return 0;
    const int64_t shp[4] = {d0, d1, d2, d3};
    return q->dump(q->dump_ctx, name, x, ndim, shp);
}

static int check_params(const pixartpipe *p, const pixartpipe_params *q) {
    if (q->n_prompts < 1 || !q->prompts) return ss_fail(SS_EARG, "generate: no prompt given");
    if (q->steps < 1 || q->steps > 10000) return ss_fail(SS_EARG, "generate: steps must be in [1, 10000], got %d", q->steps);
    if (!isfinite(q->cfg)) return ss_fail(SS_EARG, "generate: the guidance scale must be finite");
    if (q->max_sequence_length < 1 || q->max_sequence_length > 4096)
        return ss_fail(SS_EARG, "generate: max_sequence_length must be in [1, 4096], got %d", q->max_sequence_length);
    (void)p;
    return 0;
}

/* T5 tokens of B preprocessed prompts: ids [B, L] (optional), mask [B, L] (optional), types [B, L] (optional). */
static int tokenize(const pixartpipe *p, const char *const *prompts, int B, int L, int64_t *ids, int64_t *mask, uint8_t *types,
                    int *n_truncated) {
    txtok_seq s = {0};
    int rc = 0;
    for (int b = 0; b < B && rc >= 0; b++) {
        char *t = NULL;
        if ((rc = pixartpipe_preprocess(prompts[b], &t)) < 0) break;
        if ((rc = txtok_encode(p->tok, t, strlen(t), L, &s)) >= 0 && s.n != L)
            rc = ss_fail(SS_EFORMAT, "%s: component 'tokenizer' gave %d ids, not %d", p->dir, s.n, L);
        if (rc >= 0 && n_truncated) {
            txtok_seq u = {0};
            if ((rc = txtok_encode(p->tok, t, strlen(t), 0, &u)) >= 0 && u.n > L) ++*n_truncated;
            txtok_seq_free(&u);
        }
        free(t);
        for (int k = 0; rc >= 0 && k < L; k++) {
            if (ids) ids[(size_t)b * L + k] = s.ids[k];
            if (mask) mask[(size_t)b * L + k] = s.mask[k];
            if (types) types[(size_t)b * L + k] = spiral_tok_of_txtok(s.types[k]);
        }
    }
    txtok_seq_free(&s);
    return rc;
}

typedef struct {
    float *dst;
    int got;
} take_ctx;

static int take(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    take_ctx *t = ctx;
    if (is_f32 && ndim == 3 && !strcmp(name, "last_hidden_state_masked")) {
        memcpy(t->dst, data, sizeof(float) * (size_t)shape[0] * shape[1] * shape[2]);
        t->got = 1;
    }
    return 0;
}

/* embeds [B, L, J] and mask [B, L] of B prompts (encode_prompt). */
static int encode(const pixartpipe *p, const pixartpipe_params *q, const char *const *prompts, int B, float *embeds,
                  float *maskf, const char *tag) {
    const int L = q->max_sequence_length;
    int64_t *ids = malloc(sizeof *ids * (size_t)B * L), *mask = malloc(sizeof *mask * (size_t)B * L);
    float *fi = malloc(sizeof(float) * (size_t)B * L);
    int rc = 0;
    if (!ids || !mask || !fi) rc = ss_fail(SS_ENOMEM, "generate: out of memory");
    if (rc >= 0) rc = tokenize(p, prompts, B, L, ids, mask, NULL, NULL);
    if (rc >= 0) {
        take_ctx t = {.dst = embeds};
        if ((rc = txenc_run(p->enc, ids, mask, B, L, "text_encoder", take, &t)) < 0)
            component_err(rc, p->dir, C_TE);
        else if (!t.got)
            rc = ss_fail(SS_EFORMAT, "%s: component 'text_encoder' gave no masked last_hidden_state", p->dir);
    }
    for (size_t i = 0; rc >= 0 && i < (size_t)B * L; i++) maskf[i] = (float)mask[i];
    if (rc >= 0 && tag) { /* the tokenizer's output, as the fixture stores it */
        for (size_t i = 0; i < (size_t)B * L; i++) fi[i] = (float)ids[i];
        if ((rc = dump(q, "input_ids", fi, 2, B, L, 0, 0)) >= 0) rc = dump(q, "attention_mask", maskf, 2, B, L, 0, 0);
    }
    free(ids), free(mask), free(fi);
    return rc;
}

int pixartpipe_encode(const pixartpipe *p, const pixartpipe_params *q, float *ctx, float *mask) {
    int rc = check_params(p, q);
    if (rc < 0) return rc;
    if (p->released) return ss_fail(SS_EARG, "%s: the text encoder was released before encoding", p->dir);
    const int B = q->n_prompts, guided = q->cfg > 1.0, S = q->max_sequence_length;
    const int J = txenc_get_config(p->enc)->d_model;
    const char **neg = malloc(sizeof *neg * B);
    if (!neg) return ss_fail(SS_ENOMEM, "generate: out of memory");
    for (int b = 0; b < B; b++) neg[b] = q->negative ? q->negative : "";
    float *cctx = ctx + (size_t)(guided ? B : 0) * S * J, *cmask = mask + (size_t)(guided ? B : 0) * S;
    if ((rc = encode(p, q, q->prompts, B, cctx, cmask, "cond")) >= 0 && guided) rc = encode(p, q, neg, B, ctx, mask, NULL);
    if (rc >= 0 && (rc = dump(q, "prompt_embeds", cctx, 3, B, S, J, 0)) >= 0)
        rc = dump(q, "prompt_attention_mask", cmask, 2, B, S, 0, 0);
    if (rc >= 0 && guided && (rc = dump(q, "negative_prompt_embeds", ctx, 3, B, S, J, 0)) >= 0)
        rc = dump(q, "negative_prompt_attention_mask", mask, 2, B, S, 0, 0);
    free(neg);
    return rc < 0 ? rc : 0;
}

int pixartpipe_text_types(const pixartpipe *p, const pixartpipe_params *q, uint8_t *types) {
    int rc = check_params(p, q);
    if (rc < 0) return rc;
    const int B = q->n_prompts, guided = q->cfg > 1.0, S = q->max_sequence_length;
    const char **neg = malloc(sizeof *neg * B);
    if (!neg) return ss_fail(SS_ENOMEM, "generate: out of memory");
    for (int b = 0; b < B; b++) neg[b] = q->negative ? q->negative : "";
    if ((rc = tokenize(p, q->prompts, B, S, NULL, NULL, types + (size_t)(guided ? B : 0) * S, NULL)) >= 0 && guided)
        rc = tokenize(p, neg, B, S, NULL, NULL, types, NULL);
    free(neg);
    return rc < 0 ? rc : 0;
}

int pixartpipe_truncated(const pixartpipe *p, const pixartpipe_params *q) {
    int rc = check_params(p, q), n = 0;
    if (rc < 0) return rc;
    if ((rc = tokenize(p, q->prompts, q->n_prompts, q->max_sequence_length, NULL, NULL, NULL, &n)) < 0) return rc;
    return n;
}

int pixartpipe_generate(const pixartpipe *p, const pixartpipe_params *q, float *image, float *init_latents, sink_ctx *sk) {
    int rc = check_params(p, q);
    if (rc < 0) return rc;
    const int BB = (q->cfg > 1.0 ? 2 : 1) * q->n_prompts, S = q->max_sequence_length;
    if (p->released) return ss_fail(SS_EARG, "%s: the text encoder was released before encoding", p->dir);
    const int J = txenc_get_config(p->enc)->d_model;
    float *ctx = malloc(sizeof(float) * (size_t)BB * S * J), *mask = malloc(sizeof(float) * (size_t)BB * S);
    if (!ctx || !mask)
        rc = ss_fail(SS_ENOMEM, "generate: out of memory");
    else if ((rc = pixartpipe_encode(p, q, ctx, mask)) >= 0)
        rc = pixartpipe_denoise(p, q, ctx, mask, image, init_latents, sk);
    free(ctx);
    free(mask);
    return rc;
}

/* ---- sampling ---- */

/* PixArtImageProcessor.resize_and_crop_tensor: torch's bilinear (align_corners=False, no antialias)
 * from [C, h, w] to the size that covers H x W, then the centre crop; in double. */
static void resize_crop(const float *src, int C, int h, int w, float *dst, int H, int W) {
    const double ratio = fmax((double)H / h, (double)W / w);
    const int rw = (int)(w * ratio), rh = (int)(h * ratio);
    const int x0 = (rw - W) / 2, y0 = (rh - H) / 2;
    const double sy = (double)h / rh, sx = (double)w / rw;
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < H; oy++) {
            const int y = oy + y0;
            double fy = sy * (y + 0.5) - 0.5;
            if (fy < 0) fy = 0;
            const int iy = (int)fy, iy1 = iy + (iy < h - 1);
            const double ly1 = fy - iy, ly0 = 1.0 - ly1;
            for (int ox = 0; ox < W; ox++) {
                const int x = ox + x0;
                double fx = sx * (x + 0.5) - 0.5;
                if (fx < 0) fx = 0;
                const int ix = (int)fx, ix1 = ix + (ix < w - 1);
                const double lx1 = fx - ix, lx0 = 1.0 - lx1;
                const float *s = src + (size_t)c * h * w;
                const double v = ly0 * (lx0 * s[(size_t)iy * w + ix] + lx1 * s[(size_t)iy * w + ix1]) +
                                 ly1 * (lx0 * s[(size_t)iy1 * w + ix] + lx1 * s[(size_t)iy1 * w + ix1]);
                dst[((size_t)c * H + oy) * W + ox] = (float)v;
            }
        }
}

/* Euler's pred_original_sample at the current step (what the pipeline keeps with one step). */
static void euler_x0(const euler_sched *e, const float *m, const float *x, float *x0, size_t n) {
    const float sigma = e->sigmas[e->step_index], sigma_hat = sigma * (0.0f + 1.0f);
    if (e->cfg.prediction_type == EULER_PRED_EPSILON) {
        for (size_t j = 0; j < n; j++) x0[j] = x[j] - sigma_hat * m[j];
    } else if (e->cfg.prediction_type == EULER_PRED_V) {
        const float s2 = sigma * sigma + 1.0f, cm = -sigma / sqrtf(s2);
        for (size_t j = 0; j < n; j++) x0[j] = m[j] * cm + x[j] / s2;
    } else {
        memcpy(x0, m, sizeof(float) * n);
    }
}

static int block_adapter(void *ctx, int block, const float *x, int B, int N, int D) {
    const sd3_hooks *h = ctx;
    return h->block_output ? h->block_output(h->ctx, block, x, B, N, D) : 0;
}
static int attn_adapter(void *ctx, const ss_site *site, const attn_args *a) {
    const sd3_hooks *h = ctx;
    return h->attention(h->ctx, site, a);
}
static int pos_adapter(void *ctx, float *tab, int hh, int ww, int D) {
    const sd3_hooks *h = ctx;
    return h->pos_embed(h->ctx, tab, hh, ww, D);
}

int pixartpipe_denoise(const pixartpipe *p, const pixartpipe_params *q, const float *ctx, const float *mask, float *image,
                       float *init_latents, sink_ctx *sk) {
    int H, W, Hb, Wb, rc;
    if ((rc = check_params(p, q)) < 0 || (rc = pixartpipe_image_size(p, q, &H, &W, &Hb, &Wb)) < 0) return rc;
    if (!p->transformer) return ss_fail(SS_EARG, "%s: component 'transformer' is not loaded", p->dir);
    const pixart_model *tr = p->transformer;
    const pixart_config *tc = &tr->cfg;
    const int B = q->n_prompts, f = vae_factor(p->vae), h = Hb / f, w = Wb / f, C = tc->in_channels, Co = tc->out_channels;
    const int S = q->max_sequence_length, guided = q->cfg > 1.0, BB = guided ? 2 * B : B;
    const int addcond = tc->sample_size == 128 && tc->use_additional_conditions;
    const size_t n1 = (size_t)C * h * w, n = n1 * B, no1 = (size_t)Co * h * w;
    ss_sched sched;
    memset(&sched, 0, sizeof sched);
    float *x = malloc(sizeof(float) * n), *xin = malloc(sizeof(float) * n1 * BB), *v = malloc(sizeof(float) * no1 * BB);
    float *eps = malloc(sizeof(float) * n), *raw = malloc(sizeof(float) * (size_t)B * 3 * Hb * Wb);
    float *rs = malloc(sizeof(float) * (size_t)B * 3 * H * W), *t = malloc(sizeof(float) * BB);
    float *res = malloc(sizeof(float) * 2 * BB), *ar = malloc(sizeof(float) * BB);
    uint8_t *types = sk ? malloc((size_t)BB * S) : NULL;
    if (!x || !xin || !v || !eps || !raw || !rs || !t || !res || !ar || (sk && !types)) {
        rc = ss_fail(SS_ENOMEM, "generate: out of memory");
        goto done;
    }
    if (sk && ((rc = pixartpipe_text_types(p, q, types)) < 0 || (rc = sink_ctx_set_text_types(sk, types, BB, S)) < 0)) goto done;
    /* the scheduler: the folder's, or a from_config swap */
    if ((rc = ss_sched_load_named(&sched, p->dir, q->scheduler ? q->scheduler : "default")) < 0) {
        component_err(rc, p->dir, C_SCHEDULER);
        goto done;
    }
    if (sched.kind == SS_SCHED_FLOWMATCH) {
        rc = ss_fail(SS_EARG, "%s: component 'scheduler': FlowMatchEulerDiscreteScheduler has no scale_model_input, which "
                     "PixArtAlphaPipeline calls", p->dir);
        goto done;
    }
    if (q->steps == 1 && sched.kind == SS_SCHED_DPMSOLVER) {
        rc = ss_fail(SS_EARG, "generate: with 1 step PixArtAlphaPipeline takes the scheduler's pred_original_sample, which "
                     "DPMSolverMultistepScheduler does not return (diffusers fails); use 2 or more steps, or the euler "
                     "scheduler");
        goto done;
    }
    if ((rc = ss_sched_set_timesteps(&sched, q->steps, NULL, NULL)) < 0) goto done;
    const int steps = sched.num_steps;
    /* initial latents, times init_noise_sigma */
    if (q->latents) {
        memcpy(x, q->latents, sizeof(float) * n);
        const long long bad = op_first_nonfinite(x, n);
        if (bad >= 0) {
            rc = ss_fail(SS_EFORMAT, "generate: the given latents hold a non-finite value at flat index %lld", bad);
            goto done;
        }
    } else {
        for (int b = 0; b < B; b++) rng_normal_fill(x + (size_t)b * n1, n1, q->seed, (uint64_t)b);
    }
    if (init_latents) memcpy(init_latents, x, sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = x[i] * sched.init_noise_sigma;
    if ((rc = dump(q, "latents.init", x, 4, B, C, h, w)) < 0 || (rc = dump(q, "timesteps", sched.timesteps, 1, steps, 0, 0, 0)) < 0 ||
        (rc = dump(q, "sigmas", sched.sigmas, 1, steps + 1, 0, 0, 0)) < 0)
        goto done;
    for (int b = 0; b < BB; b++) {
        res[2 * b] = (float)Hb, res[2 * b + 1] = (float)Wb;
        ar[b] = (float)((double)Hb / (double)Wb);
    }
    if (addcond && ((rc = dump(q, "resolution", res, 2, BB, 2, 0, 0)) < 0 || (rc = dump(q, "aspect_ratio", ar, 2, BB, 1, 0, 0)) < 0))
        goto done;
    sd3_hooks sh;
    pixart_hooks ph = {0};
    if (sk) {
        sh = sink_ctx_hooks(sk);
        ph = (pixart_hooks){.ctx = &sh, .attention = sh.attention ? attn_adapter : NULL, .block_output = block_adapter,
                            .pos_embed = sh.pos_embed ? pos_adapter : NULL};
    }
    const float g = (float)q->cfg;
    char name[48];
    for (int i = 0; i < steps; i++) {
        const double ti = sched.timesteps[i];
        if (sk) sink_ctx_set_step(sk, i, steps > 1 ? (double)i / (steps - 1) : 0.0);
        for (int b = 0; b < BB; b++) t[b] = (float)ti;
        for (int k = 0; k < BB / B; k++) memcpy(xin + k * n, x, sizeof(float) * n);
        if ((rc = ss_sched_scale_model_input(&sched, ti, xin, n1 * BB)) < 0) break;
        if ((rc = pixart_forward(tr, v, xin, ctx, mask, t, addcond ? res : NULL, addcond ? ar : NULL, BB, h, w, S,
                                 sk ? &ph : NULL)) < 0) {
            ss_err_prefix(rc, "generate: denoising step %d of %d: ", i, steps);
            break;
        }
        snprintf(name, sizeof name, "model_output.%d", i);
        if ((rc = dump(q, name, v, 4, BB, Co, h, w)) < 0) break;
        if (guided) { /* noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond) */
            const float *vc = v + (size_t)B * no1;
            for (size_t j = 0; j < (size_t)B * no1; j++) {
                const float d = vc[j] - v[j], gd = g * d;
                v[j] = v[j] + gd;
            }
        }
        /* learned sigma: the first in_channels channels (out_channels == in_channels: all of them) */
        for (int b = 0; b < B; b++) memcpy(eps + (size_t)b * n1, v + (size_t)b * no1, sizeof(float) * n1);
        snprintf(name, sizeof name, "noise_pred.%d", i);
        if ((rc = dump(q, name, eps, 4, B, C, h, w)) < 0) break;
        if (steps == 1 && sched.kind == SS_SCHED_EULER) { /* DMD one-step sampling: pred_original_sample */
            euler_x0(&sched.eu, eps, x, xin, n);
            if ((rc = ss_sched_step(&sched, ti, eps, x, n)) < 0) break;
            memcpy(x, xin, sizeof(float) * n);
        } else if ((rc = ss_sched_step(&sched, ti, eps, x, n)) < 0) {
            break;
        }
        const long long bad = op_first_nonfinite(x, n);
        if (bad >= 0) {
            rc = ss_fail(SS_EFORMAT, "generate: denoising step %d of %d: the latents are %s at index %lld after the update "
                         "(guidance scale %g)", i, steps, isnan(x[bad]) ? "NaN" : "infinite", bad, q->cfg);
            break;
        }
        snprintf(name, sizeof name, "latents.%d", i);
        if ((rc = dump(q, name, x, 4, B, C, h, w)) < 0) break;
        if (q->progress) q->progress(q->progress_ctx, i, steps);
    }
    if (rc < 0) goto done;
    /* decode(latents / scaling_factor): PixArt applies no shift_factor */
    const float sf = (float)p->vae->cfg.scaling_factor;
    for (size_t i = 0; i < n; i++) x[i] = x[i] / sf;
    if ((rc = vae_decode(p->vae, raw, x, B, h, w, NULL, NULL)) < 0) goto done;
    if ((rc = dump(q, "image_raw", raw, 4, B, 3, Hb, Wb)) < 0) goto done;
    const float *img = raw;
    if (Hb != H || Wb != W) {
        for (int b = 0; b < B; b++) resize_crop(raw + (size_t)b * 3 * Hb * Wb, 3, Hb, Wb, rs + (size_t)b * 3 * H * W, H, W);
        img = rs;
    }
    const size_t plane = (size_t)H * W;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) {
                const float y = img[((size_t)b * 3 + c) * plane + i] / 2.0f + 0.5f;
                image[((size_t)b * plane + i) * 3 + c] = fminf(fmaxf(y, 0.0f), 1.0f);
            }
    rc = dump(q, "image", image, 4, B, H, W, 3);
done:
    if (sk) sink_ctx_set_step(sk, 0, -1.0), sink_ctx_set_text_types(sk, NULL, 0, 0);
    ss_sched_free(&sched);
    free(types), free(x), free(xin), free(v), free(eps), free(raw), free(rs), free(t), free(res), free(ar);
    return rc < 0 ? rc : 0;
}
