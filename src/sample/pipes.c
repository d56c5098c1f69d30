/* The pipeline table (pipes.h): SD3 (sd3pipe.h), FLUX (fluxpipe.h), PixArt-alpha (pixartpipe.h)
 * and the ShapeWorld pixel pipeline (pipeline.h) behind one interface. Each entry only adapts parameters and outputs; the
 * sampling is the pipelines' own. */
#include "sample/pipes.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "models/binder.h"
#include "models/flux.h"
#include "models/sd3.h"
#include "sample/fluxpipe.h"
#include "models/pixart.h"
#include "sample/pipeline.h"
#include "sample/pixartpipe.h"
#include "sample/sd3pipe.h"
#include "text/tokenizer.h"

_Static_assert(SS_PIPE_DEFER_TRANSFORMER == SD3PIPE_DEFER_TRANSFORMER && SS_PIPE_DEFER_TRANSFORMER == FLUXPIPE_DEFER_TRANSFORMER &&
                   SS_PIPE_DEFER_TRANSFORMER == PIXARTPIPE_DEFER_TRANSFORMER, "one load flag for every kind");

void ss_pipe_params_default(ss_pipe_params *q, const ss_pipe_kind *kind) {
    memset(q, 0, sizeof *q);
    if (kind) q->steps = kind->default_steps, q->cfg = kind->default_cfg;
}

static int no_prompt(void) { return ss_fail(SS_EARG, "generate: no prompt given"); }

/* text_types' common part: 0 to go on and fill types, else what to return (S, or an error). */
static int types_room(int S, const ss_pipe_params *q, const uint8_t *types, int cap) {
    if (!types) return S;
    if (!q->prompt) return no_prompt();
    if (cap < S) return ss_fail(SS_EARG, "text types: %d tokens, room for %d", S, cap);
    return 0;
}

/* A VAE pipeline's image: float [H, W, 3] in [0, 1] from gen, to uint8 as `generate` writes its
 * PNGs. emb: NULL (gen encodes q->prompt), else {cond, uncond} embeddings (generate_emb). */
typedef int (*float_image_fn)(const void *impl, const ss_pipe_params *q, const float *const *emb, float *img, sink_ctx *sk);
static int vae_rgb(const void *impl, const ss_pipe_params *q, const float *const *emb, uint8_t *rgb, sink_ctx *sk,
                   int (*size)(const void *, const ss_pipe_params *, int *, int *), float_image_fn gen) {
    int H, W, rc;
    if (!q->prompt) return no_prompt();
    if ((rc = size(impl, q, &H, &W)) < 0) return rc;
    float *img = malloc(sizeof(float) * (size_t)H * W * 3);
    if (!img) return ss_fail(SS_ENOMEM, "generate: out of memory");
    if ((rc = gen(impl, q, emb, img, sk)) >= 0)
        for (size_t i = 0; i < (size_t)H * W * 3; i++) rgb[i] = (uint8_t)nearbyintf(img[i] * 255.0f);
    free(img);
    return rc < 0 ? rc : 0;
}

/* The batch a denoise takes from per-text embeddings (rows x cols, then extra floats each): seq
 * [BB, rows, cols] and ext [BB, extra], BB = 2 with guidance (uncond first, as the pipelines' encode
 * orders it), else 1 (cond only). */
static int emb_batch(const float *const *emb, int guided, int R, int C, int X, float **seq, float **ext) {
    const int BB = guided ? 2 : 1;
    if (guided && !emb[1]) return ss_fail(SS_EARG, "generate: guidance needs the negative prompt's embeddings");
    *seq = malloc(sizeof(float) * (size_t)BB * R * C);
    *ext = malloc(sizeof(float) * (size_t)BB * (X ? X : 1));
    if (!*seq || !*ext) {
        free(*seq), free(*ext);
        *seq = *ext = NULL;
        return ss_fail(SS_ENOMEM, "generate: out of memory");
    }
    for (int b = 0; b < BB; b++) {
        const float *src = guided && b == 0 ? emb[1] : emb[0];
        memcpy(*seq + (size_t)b * R * C, src, sizeof(float) * (size_t)R * C);
        memcpy(*ext + (size_t)b * X, src + (size_t)R * C, sizeof(float) * (size_t)X);
    }
    return 0;
}

/* ---- StableDiffusion3Pipeline ---- */

static void sd3_params(const ss_pipe_params *q, const char *const *prompt, sd3pipe_params *s) {
    sd3pipe_params_default(s);
    s->prompts = prompt, s->n_prompts = 1;
    if (q->negative) s->negative = q->negative;
    s->steps = q->steps, s->cfg = q->cfg, s->height = q->height, s->width = q->width;
    if (q->max_sequence_length) s->max_sequence_length = q->max_sequence_length;
    s->latents = q->latents, s->seed = q->seed;
    s->progress = q->progress, s->progress_ctx = q->progress_ctx;
}

static int sd3k_load(void **impl, const char *dir, int flags) { return sd3pipe_load_opts((sd3pipe **)impl, dir, flags); }
static void sd3k_free(void *impl) { sd3pipe_free(impl); }

static int sd3k_image_size(const void *impl, const ss_pipe_params *q, int *H, int *W) {
    sd3pipe_params s;
    sd3_params(q, &q->prompt, &s);
    return sd3pipe_image_size(impl, &s, H, W);
}

static int sd3k_sites(const void *impl, const ss_pipe_params *q, int H, int W, ss_site *out, int cap) {
    const sd3pipe *p = impl;
    sd3pipe_params s;
    sd3_params(q, &q->prompt, &s);
    const int f = vae_factor(p->vae), ps = p->tcfg.patch_size;
    return sd3_sites(&p->tcfg, (H / f / ps) * (W / f / ps), sd3pipe_text_len(p, &s), out, cap);
}

static void sd3k_pos_grid(const void *impl, int H, int W, int *rows, int *cols) {
    const sd3pipe *p = impl;
    const int m = vae_factor(p->vae) * p->tcfg.patch_size;
    *rows = H / m, *cols = W / m;
}

static int sd3k_text_types(const void *impl, const ss_pipe_params *q, uint8_t *types, int cap) {
    const sd3pipe *p = impl;
    sd3pipe_params s;
    sd3_params(q, &q->prompt, &s);
    s.cfg = 1.0; /* the prompt's own types, no unconditional half */
    const int S = sd3pipe_text_len(p, &s);
    int rc = types_room(S, q, types, cap);
    if (rc) return rc;
    rc = sd3pipe_text_types(p, &s, types);
    return rc < 0 ? rc : S;
}

static int sd3k_text_dims(const void *impl, const ss_pipe_params *q, int *rows, int *cols, int *extra) {
    const sd3pipe *p = impl;
    sd3pipe_params s;
    sd3_params(q, &q->prompt, &s);
    *rows = sd3pipe_text_len(p, &s), *cols = p->tcfg.joint_attention_dim, *extra = p->tcfg.pooled_projection_dim;
    return 0;
}

static int sd3k_encode_text(const void *impl, const ss_pipe_params *q, const char *text, float *emb) {
    sd3pipe_params s;
    sd3_params(q, &text, &s);
    s.cfg = 1.0; /* this text alone */
    int R, C, X;
    sd3k_text_dims(impl, q, &R, &C, &X);
    return sd3pipe_encode(impl, &s, emb, emb + (size_t)R * C);
}

static int sd3k_image(const void *impl, const ss_pipe_params *q, const float *const *emb, float *img, sink_ctx *sk) {
    sd3pipe_params s;
    sd3_params(q, &q->prompt, &s);
    if (!emb) return sd3pipe_generate(impl, &s, img, NULL, sk);
    int R, C, X;
    float *ctx, *pooled;
    sd3k_text_dims(impl, q, &R, &C, &X);
    int rc = emb_batch(emb, s.cfg > 1.0, R, C, X, &ctx, &pooled);
    if (rc < 0) return rc;
    rc = sd3pipe_denoise(impl, &s, ctx, pooled, img, NULL, sk);
    free(ctx), free(pooled);
    return rc;
}

static int sd3k_generate(const void *impl, const ss_pipe_params *q, uint8_t *rgb, sink_ctx *sk, void *ws) {
    (void)ws;
    return vae_rgb(impl, q, NULL, rgb, sk, sd3k_image_size, sd3k_image);
}

static int sd3k_generate_emb(const void *impl, const ss_pipe_params *q, const float *cond, const float *uncond, uint8_t *rgb,
                             sink_ctx *sk, void *ws) {
    (void)ws;
    const float *const emb[2] = {cond, uncond};
    return vae_rgb(impl, q, emb, rgb, sk, sd3k_image_size, sd3k_image);
}
static void sd3k_release(void *impl) { sd3pipe_release_encoders(impl); }
static int sd3k_load_transformer(void *impl) { return sd3pipe_load_transformer(impl); }

static const ss_pipe_kind SD3_KIND = {
    .class_name = SD3PIPE_CLASS_NAME, .transformer_class = "SD3Transformer2DModel", .layer_kind = SS_SITE_JOINT,
    .default_steps = 28, .default_cfg = 7.0, .tokenizer_types = 1,
    .load = sd3k_load, .free = sd3k_free, .image_size = sd3k_image_size, .sites = sd3k_sites,
    .pos_grid = sd3k_pos_grid, .text_types = sd3k_text_types, .generate = sd3k_generate,
    .uses_negative = 1, .text_dims = sd3k_text_dims, .encode_text = sd3k_encode_text, .release_encoders = sd3k_release,
    .load_transformer = sd3k_load_transformer, .generate_emb = sd3k_generate_emb,
};

/* ---- FluxPipeline ---- */

static void flux_params(const ss_pipe_params *q, const char *const *prompt, fluxpipe_params *s) {
    fluxpipe_params_default(s);
    s->prompts = prompt, s->n_prompts = 1;
    s->steps = q->steps, s->guidance = q->cfg, s->height = q->height, s->width = q->width;
    if (q->max_sequence_length) s->max_sequence_length = q->max_sequence_length;
    s->latents = q->latents, s->seed = q->seed;
    s->progress = q->progress, s->progress_ctx = q->progress_ctx;
}

static int fluxk_load(void **impl, const char *dir, int flags) { return fluxpipe_load_opts((fluxpipe **)impl, dir, flags); }
static void fluxk_free(void *impl) { fluxpipe_free(impl); }

static int fluxk_image_size(const void *impl, const ss_pipe_params *q, int *H, int *W) {
    fluxpipe_params s;
    flux_params(q, &q->prompt, &s);
    return fluxpipe_image_size(impl, &s, H, W);
}

static int fluxk_sites(const void *impl, const ss_pipe_params *q, int H, int W, ss_site *out, int cap) {
    const fluxpipe *p = impl;
    fluxpipe_params s;
    flux_params(q, &q->prompt, &s);
    int h, w, N, C;
    fluxpipe_latent_shape(p, H, W, &h, &w, &N, &C);
    return flux_sites(&p->tcfg, N, s.max_sequence_length, out, cap);
}

static void fluxk_pos_grid(const void *impl, int H, int W, int *rows, int *cols) {
    (void)impl, (void)H, (void)W;
    *rows = 0, *cols = 0; /* RoPE */
}

static int fluxk_text_types(const void *impl, const ss_pipe_params *q, uint8_t *types, int cap) {
    fluxpipe_params s;
    flux_params(q, &q->prompt, &s);
    const int S = s.max_sequence_length;
    int rc = types_room(S, q, types, cap);
    if (rc) return rc;
    rc = fluxpipe_text_types(impl, &s, types);
    return rc < 0 ? rc : S;
}

static int fluxk_text_dims(const void *impl, const ss_pipe_params *q, int *rows, int *cols, int *extra) {
    const fluxpipe *p = impl;
    fluxpipe_params s;
    flux_params(q, &q->prompt, &s);
    *rows = s.max_sequence_length, *cols = p->tcfg.joint_attention_dim, *extra = p->tcfg.pooled_projection_dim;
    return 0;
}

static int fluxk_encode_text(const void *impl, const ss_pipe_params *q, const char *text, float *emb) {
    fluxpipe_params s;
    flux_params(q, &text, &s);
    int R, C, X;
    fluxk_text_dims(impl, q, &R, &C, &X);
    return fluxpipe_encode(impl, &s, emb, emb + (size_t)R * C);
}

static int fluxk_image(const void *impl, const ss_pipe_params *q, const float *const *emb, float *img, sink_ctx *sk) {
    fluxpipe_params s;
    flux_params(q, &q->prompt, &s);
    if (!emb) return fluxpipe_generate(impl, &s, img, NULL, sk);
    int R, C, X;
    float *ctx, *pooled;
    fluxk_text_dims(impl, q, &R, &C, &X);
    int rc = emb_batch(emb, 0, R, C, X, &ctx, &pooled); /* distilled guidance: no unconditional text */
    if (rc < 0) return rc;
    rc = fluxpipe_denoise(impl, &s, ctx, pooled, img, NULL, sk);
    free(ctx), free(pooled);
    return rc;
}

static int fluxk_generate(const void *impl, const ss_pipe_params *q, uint8_t *rgb, sink_ctx *sk, void *ws) {
    (void)ws;
    return vae_rgb(impl, q, NULL, rgb, sk, fluxk_image_size, fluxk_image);
}

static int fluxk_generate_emb(const void *impl, const ss_pipe_params *q, const float *cond, const float *uncond, uint8_t *rgb,
                              sink_ctx *sk, void *ws) {
    (void)ws;
    const float *const emb[2] = {cond, uncond};
    return vae_rgb(impl, q, emb, rgb, sk, fluxk_image_size, fluxk_image);
}
static void fluxk_release(void *impl) { fluxpipe_release_encoders(impl); }
static int fluxk_load_transformer(void *impl) { return fluxpipe_load_transformer(impl); }

static const ss_pipe_kind FLUX_KIND = {
    .class_name = FLUXPIPE_CLASS_NAME, .transformer_class = "FluxTransformer2DModel", .layer_kind = SS_SITE_DOUBLE,
    .default_steps = 28, .default_cfg = 3.5, .tokenizer_types = 1,
    .load = fluxk_load, .free = fluxk_free, .image_size = fluxk_image_size, .sites = fluxk_sites,
    .pos_grid = fluxk_pos_grid, .text_types = fluxk_text_types, .generate = fluxk_generate,
    .uses_negative = 0, .text_dims = fluxk_text_dims, .encode_text = fluxk_encode_text, .release_encoders = fluxk_release,
    .load_transformer = fluxk_load_transformer, .generate_emb = fluxk_generate_emb,
};

/* ---- PixArtAlphaPipeline ---- */

static void pixart_params(const ss_pipe_params *q, const char *const *prompt, pixartpipe_params *s) {
    pixartpipe_params_default(s);
    s->prompts = prompt, s->n_prompts = 1;
    if (q->negative) s->negative = q->negative;
    s->steps = q->steps, s->cfg = q->cfg, s->height = q->height, s->width = q->width;
    if (q->max_sequence_length) s->max_sequence_length = q->max_sequence_length;
    s->latents = q->latents, s->seed = q->seed;
    s->progress = q->progress, s->progress_ctx = q->progress_ctx;
}

static int pixartk_load(void **impl, const char *dir, int flags) {
    return pixartpipe_load_opts((pixartpipe **)impl, dir, flags);
}
static void pixartk_free(void *impl) { pixartpipe_free(impl); }

static int pixartk_image_size(const void *impl, const ss_pipe_params *q, int *H, int *W) {
    pixartpipe_params s;
    pixart_params(q, &q->prompt, &s);
    return pixartpipe_image_size(impl, &s, H, W, NULL, NULL);
}

/* The patch grid the transformer runs at for an H x W output: the resolution bin's (binning is
 * on by default), else H x W. */
static int pixart_grid(const pixartpipe *p, int H, int W, int *rows, int *cols) {
    pixartpipe_params s;
    pixartpipe_params_default(&s);
    s.height = H, s.width = W;
    int h, w, Hb, Wb;
    const int rc = pixartpipe_image_size(p, &s, &h, &w, &Hb, &Wb);
    if (rc < 0) return rc;
    const int m = vae_factor(p->vae) * p->tcfg.patch_size;
    *rows = Hb / m, *cols = Wb / m;
    return 0;
}

static int pixartk_sites(const void *impl, const ss_pipe_params *q, int H, int W, ss_site *out, int cap) {
    const pixartpipe *p = impl;
    pixartpipe_params s;
    pixart_params(q, &q->prompt, &s);
    int rows, cols;
    const int rc = pixart_grid(p, H, W, &rows, &cols);
    if (rc < 0) return rc;
    return pixart_sites(&p->tcfg, rows * cols, s.max_sequence_length, out, cap);
}

static void pixartk_pos_grid(const void *impl, int H, int W, int *rows, int *cols) {
    if (pixart_grid(impl, H, W, rows, cols) < 0) *rows = 0, *cols = 0; /* image_size refused this size already */
}

static int pixartk_text_types(const void *impl, const ss_pipe_params *q, uint8_t *types, int cap) {
    pixartpipe_params s;
    pixart_params(q, &q->prompt, &s);
    s.cfg = 1.0; /* the prompt's own types, no unconditional half */
    const int S = s.max_sequence_length;
    int rc = types_room(S, q, types, cap);
    if (rc) return rc;
    rc = pixartpipe_text_types(impl, &s, types);
    return rc < 0 ? rc : S;
}

/* rows = T5 tokens, cols = the caption width (the T5 width, checked at load), extra = the mask. */
static int pixartk_text_dims(const void *impl, const ss_pipe_params *q, int *rows, int *cols, int *extra) {
    const pixart_config *tc = &((const pixartpipe *)impl)->tcfg;
    pixartpipe_params s;
    pixart_params(q, &q->prompt, &s);
    *rows = s.max_sequence_length, *cols = tc->caption_channels ? tc->caption_channels : tc->cross_attention_dim;
    *extra = s.max_sequence_length;
    return 0;
}

static int pixartk_encode_text(const void *impl, const ss_pipe_params *q, const char *text, float *emb) {
    pixartpipe_params s;
    pixart_params(q, &text, &s);
    s.cfg = 1.0; /* this text alone */
    int R, C, X;
    pixartk_text_dims(impl, q, &R, &C, &X);
    return pixartpipe_encode(impl, &s, emb, emb + (size_t)R * C);
}

static int pixartk_image(const void *impl, const ss_pipe_params *q, const float *const *emb, float *img, sink_ctx *sk) {
    pixartpipe_params s;
    pixart_params(q, &q->prompt, &s);
    if (!emb) return pixartpipe_generate(impl, &s, img, NULL, sk);
    int R, C, X;
    float *ctx, *mask;
    pixartk_text_dims(impl, q, &R, &C, &X);
    int rc = emb_batch(emb, s.cfg > 1.0, R, C, X, &ctx, &mask);
    if (rc < 0) return rc;
    rc = pixartpipe_denoise(impl, &s, ctx, mask, img, NULL, sk);
    free(ctx), free(mask);
    return rc;
}

static int pixartk_generate(const void *impl, const ss_pipe_params *q, uint8_t *rgb, sink_ctx *sk, void *ws) {
    (void)ws;
    return vae_rgb(impl, q, NULL, rgb, sk, pixartk_image_size, pixartk_image);
}

static int pixartk_generate_emb(const void *impl, const ss_pipe_params *q, const float *cond, const float *uncond,
                                uint8_t *rgb, sink_ctx *sk, void *ws) {
    (void)ws;
    const float *const emb[2] = {cond, uncond};
    return vae_rgb(impl, q, emb, rgb, sk, pixartk_image_size, pixartk_image);
}
static void pixartk_release(void *impl) { pixartpipe_release_encoders(impl); }
static int pixartk_load_transformer(void *impl) { return pixartpipe_load_transformer(impl); }

static const ss_pipe_kind PIXART_KIND = {
    .class_name = PIXARTPIPE_CLASS_NAME, .transformer_class = "PixArtTransformer2DModel", .layer_kind = SS_SITE_SELF,
    .default_steps = 20, .default_cfg = 4.5, .tokenizer_types = 1,
    .load = pixartk_load, .free = pixartk_free, .image_size = pixartk_image_size, .sites = pixartk_sites,
    .pos_grid = pixartk_pos_grid, .text_types = pixartk_text_types, .generate = pixartk_generate,
    .uses_negative = 1, .text_dims = pixartk_text_dims, .encode_text = pixartk_encode_text,
    .release_encoders = pixartk_release, .load_transformer = pixartk_load_transformer, .generate_emb = pixartk_generate_emb,
};

/* ---- SinkscopePixelPipeline (ShapeWorld) ---- */

static void pixel_params(const ss_pipe_params *q, pipe_params *s) {
    pipe_params_default(s);
    s->prompt = q->prompt, s->seed = q->seed, s->steps = q->steps, s->cfg = q->cfg;
    s->height = q->height, s->width = q->width, s->latents = q->latents;
}

static int pixk_load(void **impl, const char *dir, int flags) {
    (void)flags;
    return pipe_load((pipeline **)impl, dir);
}
static void pixk_free(void *impl) { pipe_free(impl); }

static int pixk_image_size(const void *impl, const ss_pipe_params *q, int *H, int *W) {
    pipe_params s;
    pixel_params(q, &s);
    return pipe_image_size(impl, &s, H, W);
}

static int pixk_sites(const void *impl, const ss_pipe_params *q, int H, int W, ss_site *out, int cap) {
    (void)q;
    const pipeline *pp = impl;
    const sd3_config *tc = &pp->transformer->cfg;
    const int ps = tc->patch_size;
    return sd3_sites(tc, (H / ps) * (W / ps), pp->text_encoder->cfg.max_length, out, cap);
}

static void pixk_pos_grid(const void *impl, int H, int W, int *rows, int *cols) {
    const int ps = ((const pipeline *)impl)->transformer->cfg.patch_size;
    *rows = H / ps, *cols = W / ps;
}

/* The word tokenizer's layout: the prompt's words, <eos>, then <pad> (text/tokenizer.h). */
static int pixk_text_types(const void *impl, const ss_pipe_params *q, uint8_t *types, int cap) {
    const te *enc = ((const pipeline *)impl)->text_encoder;
    const int S = enc->cfg.max_length;
    const int rc = types_room(S, q, types, cap);
    if (rc) return rc;
    int32_t *ids = ss_malloc(sizeof(int32_t) * (size_t)S);
    if (!ids) return SS_ENOMEM;
    const int words = tok_encode(enc->vocab, q->prompt, S, ids); /* >= 0: word count */
    free(ids);
    if (words < 0) return words;
    for (int j = 0; j < S; j++) types[j] = (uint8_t)(j < words ? SS_TOK_WORD : j == words ? SS_TOK_EOS : SS_TOK_PAD);
    return S;
}

typedef struct {
    ss_pipe_progress_fn fn;
    void *ctx;
} pix_progress;

static void pix_on_step(void *ctx, int step, int steps, const float *sample) {
    (void)sample;
    const pix_progress *pg = ctx;
    pg->fn(pg->ctx, step, steps);
}

/* As the diffusers pipelines do, the probe gets the text keys' types ([uncond, cond] with
 * guidance, the unconditional prompt ""), and they are cleared afterwards. */
static int pixk_generate(const void *impl, const ss_pipe_params *q, uint8_t *rgb, sink_ctx *sk, void *ws) {
    pipe_params s;
    pixel_params(q, &s);
    pix_progress pg = {q->progress, q->progress_ctx};
    if (q->progress) s.progress = pix_on_step, s.progress_ctx = &pg;
    int rc = 0;
    if (sk) {
        const int S = pixk_text_types(impl, q, NULL, 0), B = s.cfg > 1.0 ? 2 : 1;
        uint8_t *types = ss_malloc((size_t)2 * S);
        if (!types) return SS_ENOMEM;
        ss_pipe_params u = *q;
        u.prompt = "";
        if ((rc = pixk_text_types(impl, q, types + (size_t)(B - 1) * S, S)) >= 0 && B == 2) rc = pixk_text_types(impl, &u, types, S);
        if (rc >= 0) rc = sink_ctx_set_text_types(sk, types, B, S);
        free(types);
        if (rc < 0) return rc;
    }
    rc = pipe_generate_ws(impl, &s, rgb, sk, NULL, ws);
    if (sk) sink_ctx_set_text_types(sk, NULL, 0, 0);
    return rc;
}

static int pixk_ws_new(void **ws) { return sd3_workspace_new((sd3_workspace **)ws, NULL, 0, 0, 0, 0); /* sized by the first image */ }
static void pixk_ws_free(void *ws) { sd3_workspace_free(ws); }

static const ss_pipe_kind PIXEL_KIND = {
    .class_name = PIPE_CLASS_NAME, .transformer_class = "SD3Transformer2DModel", .layer_kind = SS_SITE_JOINT,
    .default_steps = PIPE_DEFAULT_STEPS, .default_cfg = PIPE_DEFAULT_CFG, .tokenizer_types = 0, .shapeworld = 1,
    .load = pixk_load, .free = pixk_free, .image_size = pixk_image_size, .sites = pixk_sites,
    .pos_grid = pixk_pos_grid, .text_types = pixk_text_types, .generate = pixk_generate,
    .ws_new = pixk_ws_new, .ws_free = pixk_ws_free,
};

/* ---- the table ---- */

const ss_pipe_kind *const ss_pipe_kinds[] = {&SD3_KIND, &FLUX_KIND, &PIXART_KIND, &PIXEL_KIND, NULL};

const ss_pipe_kind *ss_pipe_find(const char *class_name) {
    for (int i = 0; ss_pipe_kinds[i]; i++)
        if (!strcmp(ss_pipe_kinds[i]->class_name, class_name)) return ss_pipe_kinds[i];
    return NULL;
}

const char *ss_pipe_class_list(char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; ss_pipe_kinds[i] && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", i ? ", " : "", ss_pipe_kinds[i]->class_name);
    return buf;
}

int ss_pipe_detect(const char *dir, const ss_pipe_kind **out) {
    *out = &PIXEL_KIND;
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/model_index.json", dir) >= sizeof path) return 0; /* the loader says why */
    json_t *root = json_load_file(path, 0, NULL);
    if (!root) return 0;
    json_t *cls = json_object_get(root, "_class_name");
    int rc = 0;
    if (json_is_string(cls)) {
        const ss_pipe_kind *k = ss_pipe_find(json_string_value(cls));
        if (k) *out = k;
        else {
            char list[512];
            rc = ss_fail(SS_EFORMAT, "%s: pipeline class '%s' is not supported (%s)", path, json_string_value(cls),
                         ss_pipe_class_list(list, sizeof list));
        }
    }
    json_decref(root);
    return rc;
}

int ss_pipe_open(ss_pipe **out, const char *dir, int precision, int flags) {
    *out = NULL;
    const ss_pipe_kind *k;
    int rc = ss_pipe_detect(dir, &k);
    if (rc < 0) return rc;
    ss_pipe *p = ss_calloc(1, sizeof *p);
    if (!p) return SS_ENOMEM;
    p->kind = k;
    const int saved = ss_bind_get_precision(); /* the load's option is the caller's thread setting */
    ss_bind_set_precision(precision);
    rc = k->load(&p->impl, dir, flags);
    ss_bind_set_precision(saved);
    if (rc < 0) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void ss_pipe_close(ss_pipe *p) {
    if (!p) return;
    if (p->impl) p->kind->free(p->impl);
    free(p);
}

int ss_pipe_load_transformer(ss_pipe *p, int precision) {
    if (!p->kind->load_transformer) return 0;
    const int saved = ss_bind_get_precision();
    ss_bind_set_precision(precision);
    const int rc = p->kind->load_transformer(p->impl);
    ss_bind_set_precision(saved);
    return rc;
}

int ss_pipe_layer_count(const ss_pipe_kind *kind, const ss_site *sites, int n_sites) {
    int n = 0;
    for (int i = 0; i < n_sites; i++) n += sites[i].kind == kind->layer_kind;
    return n;
}
