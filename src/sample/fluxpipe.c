/* FluxPipeline (fluxpipe.h): folder loading, prompt encoding, packed sampling, decoding. */
#include "sample/fluxpipe.h"

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

#define PATH_LEN PIPE_PATH_LEN
#define FLUXPIPE_MAX_SIDE 16384
#define FLUXPIPE_MAX_SEQ 512 /* diffusers' check_inputs */

void fluxpipe_params_default(fluxpipe_params *p) {
    memset(p, 0, sizeof *p);
    p->steps = 28;
    p->guidance = 3.5;
    p->max_sequence_length = FLUXPIPE_DEFAULT_MAX_SEQ;
}

/* ---- model_index.json ---- */

enum { C_TRANSFORMER, C_VAE, C_SCHEDULER, C_TE1, C_TE2, C_TOK1, C_TOK2, C_IMGENC, C_FEAT, C_COUNT };

static const pipe_component COMPONENTS[C_COUNT] = {
    [C_TRANSFORMER] = {"transformer", {"FluxTransformer2DModel"}, 0},
    [C_VAE] = {"vae", {"AutoencoderKL"}, 0},
    [C_SCHEDULER] = {"scheduler", {"FlowMatchEulerDiscreteScheduler"}, 0},
    [C_TE1] = {"text_encoder", {"CLIPTextModel", "CLIPTextModelWithProjection"}, 0},
    [C_TE2] = {"text_encoder_2", {"T5EncoderModel"}, 0},
    [C_TOK1] = {"tokenizer", {"CLIPTokenizer", "CLIPTokenizerFast"}, 0},
    [C_TOK2] = {"tokenizer_2", {"T5Tokenizer", "T5TokenizerFast"}, 0},
    [C_IMGENC] = {"image_encoder", {NULL}, 1},
    [C_FEAT] = {"feature_extractor", {NULL}, 1},
};

static int read_index(const char *dir) {
    int present[C_COUNT];
    return pipe_index_read(dir, FLUXPIPE_CLASS_NAME, COMPONENTS, C_COUNT, present);
}

/* ---- load ---- */

static int component_err(int rc, const char *dir, int i) {
    return ss_err_prefix(rc, "%s: component '%s': ", dir, COMPONENTS[i].key);
}

static int check_consistent(const fluxpipe *p) {
    const flux_config *tc = &p->tcfg;
    const txenc_config *l = txenc_get_config(p->enc[0]), *t = txenc_get_config(p->enc[1]);
    const char *d = p->dir;
    if (l->kind != TXENC_CLIP) return ss_fail(SS_EFORMAT, "%s: component 'text_encoder' must be a CLIP text model", d);
    if (t->kind != TXENC_T5) return ss_fail(SS_EFORMAT, "%s: component 'text_encoder_2' must be a T5 encoder", d);
    if (l->d_model != tc->pooled_projection_dim)
        return ss_fail(SS_ESHAPE, "%s: component 'text_encoder' gives a pooled output %d wide (hidden_size), but the "
                       "transformer's pooled_projection_dim is %d", d, l->d_model, tc->pooled_projection_dim);
    if (t->d_model != tc->joint_attention_dim)
        return ss_fail(SS_ESHAPE, "%s: component 'text_encoder_2' has d_model %d, but the transformer's "
                       "joint_attention_dim is %d", d, t->d_model, tc->joint_attention_dim);
    if (tc->patch_size != 1 || tc->n_axes != 3)
        return ss_fail(SS_EFORMAT, "%s: component 'transformer' has patch_size %d and %d position axes; %s packs 2x2 "
                       "patches itself (patch_size 1) and makes 3 position ids", d, tc->patch_size, tc->n_axes,
                       FLUXPIPE_CLASS_NAME);
    if (tc->out_channels != tc->in_channels)
        return ss_fail(SS_ESHAPE, "%s: component 'transformer' has out_channels %d != in_channels %d; %s steps the "
                       "packed latents with its output", d, tc->out_channels, tc->in_channels, FLUXPIPE_CLASS_NAME);
    const vae_config *vc = &p->vae->cfg;
    if (4 * vc->latent_channels != tc->in_channels)
        return ss_fail(SS_ESHAPE, "%s: component 'vae' has latent_channels %d, but the transformer's in_channels %d need %g "
                       "(in_channels / 4: the 2x2 packing)", d, vc->latent_channels, tc->in_channels, tc->in_channels / 4.0);
    return 0;
}

int fluxpipe_load(fluxpipe **out, const char *dir) { return fluxpipe_load_opts(out, dir, 0); }

int fluxpipe_load_transformer(fluxpipe *p) {
    if (p->transformer) return 0;
    char path[PATH_LEN];
    int rc = pipe_subpath(path, p->dir, "transformer");
    if (rc < 0) return rc;
    if ((rc = flux_load(&p->transformer, path)) < 0) return component_err(rc, p->dir, C_TRANSFORMER);
    return 0;
}

void fluxpipe_release_encoders(fluxpipe *p) {
    for (int i = 0; i < 2; i++) {
        txenc_free(p->enc[i]);
        p->enc[i] = NULL;
    }
    p->released = 1;
}

int fluxpipe_load_opts(fluxpipe **out, const char *dir, int flags) {
    *out = NULL;
    int rc = read_index(dir);
    if (rc < 0) return rc;
    fluxpipe *p = ss_calloc(1, sizeof *p);
    if (!p) return SS_ENOMEM;
    char path[PATH_LEN];
    if (!(p->dir = strdup(dir))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = pipe_open_flowmatch(dir, &p->scheduler)) < 0) goto fail;
    if ((rc = pipe_subpath(path, dir, "transformer/config.json")) < 0) goto fail;
    if ((rc = flux_config_load(&p->tcfg, path)) < 0) {
        component_err(rc, dir, C_TRANSFORMER);
        goto fail;
    }
    for (int i = 0; i < 2; i++)
        if ((rc = pipe_open_text(dir, COMPONENTS[C_TOK1 + i].key, COMPONENTS[C_TE1 + i].key, &p->tok[i], &p->enc[i])) < 0)
            goto fail;
    p->clip_len = txtok_model_max_length(p->tok[0]);
    if (p->clip_len <= 0 || p->clip_len > 77) p->clip_len = 77;
    if ((rc = pipe_open_vae(dir, &p->vae)) < 0) goto fail;
    if ((rc = check_consistent(p)) < 0) goto fail;
    if (!(flags & FLUXPIPE_DEFER_TRANSFORMER) && (rc = fluxpipe_load_transformer(p)) < 0) goto fail;
    *out = p;
    return 0;
fail:
    fluxpipe_free(p);
    return rc;
}

void fluxpipe_free(fluxpipe *p) {
    if (!p) return;
    for (int i = 0; i < 2; i++) {
        txenc_free(p->enc[i]);
        txtok_free(p->tok[i]);
    }
    flux_free(p->transformer);
    vae_free(p->vae);
    free(p->dir);
    free(p);
}

int fluxpipe_image_size(const fluxpipe *p, const fluxpipe_params *q, int *H, int *W) {
    const int f = vae_factor(p->vae), m = 2 * f;
    const int h = q->height ? q->height : FLUXPIPE_DEFAULT_SAMPLE * f, w = q->width ? q->width : FLUXPIPE_DEFAULT_SAMPLE * f;
    if (h < m || w < m || h % m || w % m || h > FLUXPIPE_MAX_SIDE || w > FLUXPIPE_MAX_SIDE)
        return ss_fail(SS_EARG, "image size %dx%d: height and width must be positive multiples of %d (VAE factor %d x 2, "
                       "the packing), at most %d", w, h, m, f, FLUXPIPE_MAX_SIDE);
    *H = h, *W = w;
    return 0;
}

void fluxpipe_latent_shape(const fluxpipe *p, int H, int W, int *h, int *w, int *N, int *C) {
    const int f = vae_factor(p->vae);
    *h = 2 * (H / (2 * f)), *w = 2 * (W / (2 * f));
    *N = (*h / 2) * (*w / 2);
    *C = p->tcfg.in_channels / 4;
}

/* ---- prompt encoding ---- */

typedef struct {
    const char *want; /* output name */
    float *dst;
    size_t numel; /* expected element count */
    int got;
} take_ctx;

static int take(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    take_ctx *t = ctx;
    if (!is_f32 || strcmp(name, t->want)) return 0;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    if (n != t->numel) return ss_fail(SS_ESHAPE, "text encoder output '%s' has %zu values, expected %zu", name, n, t->numel);
    memcpy(t->dst, data, sizeof(float) * n);
    t->got = 1;
    return 0;
}

/* ids [B, len] of the prompts through tokenizer i. */
static int tokenize(const fluxpipe *p, int i, const char *const *prompts, int B, int len, int64_t *ids) {
    txtok_seq s = {0};
    int rc = 0;
    for (int b = 0; b < B && rc >= 0; b++) {
        if ((rc = txtok_encode(p->tok[i], prompts[b], strlen(prompts[b]), len, &s)) < 0) break;
        if (s.n != len) {
            rc = ss_fail(SS_EFORMAT, "%s: component '%s' gave %d ids, not %d", p->dir, COMPONENTS[C_TOK1 + i].key, s.n, len);
            break;
        }
        for (int k = 0; k < len; k++) ids[(size_t)b * len + k] = s.ids[k];
    }
    txtok_seq_free(&s);
    return rc;
}

static int dump(const fluxpipe_params *q, const char *name, const float *x, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3) {
    if (!q->dump) return 0;
    const int64_t shp[4] = {d0, d1, d2, d3};
    return q->dump(q->dump_ctx, name, x, ndim, shp);
}

static int check_params(const fluxpipe_params *q) {
    if (q->n_prompts < 1 || !q->prompts) return ss_fail(SS_EARG, "generate: no prompt given");
    if (q->steps < 1 || q->steps > 10000) return ss_fail(SS_EARG, "generate: steps must be in [1, 10000], got %d", q->steps);
    if (!isfinite(q->guidance)) return ss_fail(SS_EARG, "generate: the guidance scale must be finite");
    if (q->max_sequence_length < 1 || q->max_sequence_length > FLUXPIPE_MAX_SEQ)
        return ss_fail(SS_EARG, "generate: max_sequence_length must be in [1, %d], got %d", FLUXPIPE_MAX_SEQ,
                       q->max_sequence_length);
    if (q->scheduler && strcmp(q->scheduler, "default")) {
        if (strcmp(q->scheduler, "euler") && strcmp(q->scheduler, "dpm++"))
            return ss_fail(SS_EARG, "generate: scheduler '%s' is not one of default, euler, dpm++", q->scheduler);
        return ss_fail(SS_EARG, "scheduler '%s' cannot run FluxPipeline: the pipeline passes custom sigmas and mu to "
                       "set_timesteps, which %s does not take (diffusers 0.32.1 fails too); only 'default' (FlowMatch "
                       "Euler) works", q->scheduler, strcmp(q->scheduler, "euler") ? "DPMSolverMultistepScheduler (no sigmas)"
                                                                                 : "EulerDiscreteScheduler (no mu)");
    }
    return 0;
}

int fluxpipe_encode(const fluxpipe *p, const fluxpipe_params *q, float *ctx, float *pooled) {
    int rc = check_params(q);
    if (rc < 0) return rc;
    if (p->released) return ss_fail(SS_EARG, "%s: the text encoders were released before encoding", p->dir);
    const int B = q->n_prompts, T = q->max_sequence_length, L = p->clip_len;
    const int J = p->tcfg.joint_attention_dim, P = p->tcfg.pooled_projection_dim;
    int64_t *ids = malloc(sizeof *ids * (size_t)B * (L > T ? L : T));
    if (!ids) return ss_fail(SS_ENOMEM, "generate: out of memory");
    /* CLIP: pooler_output; T5: last_hidden_state without a mask */
    take_ctx t1 = {.want = "pooler_output", .dst = pooled, .numel = (size_t)B * P};
    take_ctx t2 = {.want = "last_hidden_state", .dst = ctx, .numel = (size_t)B * T * J};
    if ((rc = tokenize(p, 0, q->prompts, B, L, ids)) >= 0 &&
        (rc = txenc_run(p->enc[0], ids, NULL, B, L, "text_encoder", take, &t1)) < 0)
        component_err(rc, p->dir, C_TE1);
    if (rc >= 0 && !t1.got) rc = ss_fail(SS_EFORMAT, "%s: component 'text_encoder' gave no pooler_output", p->dir);
    if (rc >= 0 && (rc = tokenize(p, 1, q->prompts, B, T, ids)) >= 0 &&
        (rc = txenc_run(p->enc[1], ids, NULL, B, T, "text_encoder_2", take, &t2)) < 0)
        component_err(rc, p->dir, C_TE2);
    if (rc >= 0 && !t2.got) rc = ss_fail(SS_EFORMAT, "%s: component 'text_encoder_2' gave no last_hidden_state", p->dir);
    if (rc >= 0 && (rc = dump(q, "prompt_embeds", ctx, 3, B, T, J, 0)) >= 0)
        rc = dump(q, "pooled_prompt_embeds", pooled, 2, B, P, 0, 0);
    free(ids);
    return rc < 0 ? rc : 0;
}

int fluxpipe_text_types(const fluxpipe *p, const fluxpipe_params *q, uint8_t *types) {
    int rc = check_params(q);
    if (rc < 0) return rc;
    const int B = q->n_prompts, T = q->max_sequence_length;
    txtok_seq s = {0};
    for (int b = 0; b < B && rc >= 0; b++) {
        if ((rc = txtok_encode(p->tok[1], q->prompts[b], strlen(q->prompts[b]), T, &s)) < 0) break;
        if (s.n != T) {
            rc = ss_fail(SS_EFORMAT, "%s: component 'tokenizer_2' gave %d ids, not %d", p->dir, s.n, T);
            break;
        }
        for (int j = 0; j < T; j++) types[(size_t)b * T + j] = spiral_tok_of_txtok(s.types[j]);
    }
    txtok_seq_free(&s);
    return rc < 0 ? rc : 0;
}

int fluxpipe_generate(const fluxpipe *p, const fluxpipe_params *q, float *image, float *init_latents, sink_ctx *sk) {
    int rc = check_params(q);
    if (rc < 0) return rc;
    const int B = q->n_prompts, T = q->max_sequence_length;
    float *ctx = malloc(sizeof(float) * (size_t)B * T * p->tcfg.joint_attention_dim);
    float *pooled = malloc(sizeof(float) * (size_t)B * p->tcfg.pooled_projection_dim);
    if (!ctx || !pooled)
        rc = ss_fail(SS_ENOMEM, "generate: out of memory");
    else if ((rc = fluxpipe_encode(p, q, ctx, pooled)) >= 0)
        rc = fluxpipe_denoise(p, q, ctx, pooled, image, init_latents, sk);
    free(ctx);
    free(pooled);
    return rc;
}

/* ---- sampling ---- */

void fluxpipe_pack(float *out, const float *x, int B, int C, int h, int w) {
    const int h2 = h / 2, w2 = w / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < h2; i++)
            for (int j = 0; j < w2; j++) {
                float *o = out + (((size_t)b * h2 + i) * w2 + j) * 4 * C;
                for (int c = 0; c < C; c++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            o[c * 4 + dy * 2 + dx] = x[(((size_t)b * C + c) * h + 2 * i + dy) * w + 2 * j + dx];
            }
}

void fluxpipe_unpack(float *out, const float *x, int B, int C, int h, int w) {
    const int h2 = h / 2, w2 = w / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < h2; i++)
            for (int j = 0; j < w2; j++) {
                const float *s = x + (((size_t)b * h2 + i) * w2 + j) * 4 * C;
                for (int c = 0; c < C; c++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            out[(((size_t)b * C + c) * h + 2 * i + dy) * w + 2 * j + dx] = s[c * 4 + dy * 2 + dx];
            }
}

typedef struct {
    sd3_hooks inner;
    sink_ctx *sk;
} hook_ctx;

static int hook_attention(void *ctx, const ss_site *site, const attn_args *a) {
    const hook_ctx *h = ctx;
    return h->inner.attention ? h->inner.attention(h->inner.ctx, site, a) : attn_forward(a, NULL);
}

/* The probe's block outputs (activation statistics) and pre-RoPE q, k (spiral qk): read only. */
static int hook_block_output(void *ctx, int block, const float *x, int B, int N, int D) {
    const hook_ctx *h = ctx;
    return h->inner.block_output ? h->inner.block_output(h->inner.ctx, block, x, B, N, D) : 0;
}

static int hook_rope_qk(void *ctx, const ss_site *site, int post, const attn_args *a) {
    const hook_ctx *h = ctx;
    return sink_ctx_rope_qk(h->sk, site, post, a);
}

int fluxpipe_denoise(const fluxpipe *p, const fluxpipe_params *q, const float *ctx, const float *pooled, float *image,
                     float *init_latents, sink_ctx *sk) {
    int H, W, rc;
    if ((rc = check_params(q)) < 0 || (rc = fluxpipe_image_size(p, q, &H, &W)) < 0) return rc;
    if (!p->transformer) return ss_fail(SS_EARG, "%s: component 'transformer' is not loaded", p->dir);
    const flux_model *tr = p->transformer;
    const flux_config *tc = &tr->cfg;
    const int B = q->n_prompts, T = q->max_sequence_length;
    int h, w, N, C;
    fluxpipe_latent_shape(p, H, W, &h, &w, &N, &C);
    const int Cp = 4 * C;
    const size_t n = (size_t)B * C * h * w;

    float *x = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n);
    float *raw = malloc(sizeof(float) * (size_t)B * 3 * H * W), *t = malloc(sizeof(float) * B);
    float *g = malloc(sizeof(float) * B), *img_ids = calloc((size_t)N * 3, sizeof(float));
    float *txt_ids = calloc((size_t)T * 3, sizeof(float));
    double *sig = malloc(sizeof(double) * q->steps);
    uint8_t *types = sk ? malloc((size_t)B * T) : NULL;
    ss_sched sched;
    memset(&sched, 0, sizeof sched);
    if (!x || !z || !v || !raw || !t || !g || !img_ids || !txt_ids || !sig || (sk && !types)) {
        rc = ss_fail(SS_ENOMEM, "generate: out of memory");
        goto done;
    }
    /* the probe's text key types, from the T5 tokenizer (the encoders may be released by now) */
    if (sk && ((rc = fluxpipe_text_types(p, q, types)) < 0 || (rc = sink_ctx_set_text_types(sk, types, B, T)) < 0)) goto done;
    /* initial latents [B, C, h, w], then packed */
    if (q->latents) {
        memcpy(z, q->latents, sizeof(float) * n);
        const long long bad = op_first_nonfinite(z, n);
        if (bad >= 0) {
            rc = ss_fail(SS_EFORMAT, "generate: the given latents hold a non-finite value at flat index %lld", bad);
            goto done;
        }
    } else {
        const size_t n1 = n / B;
        for (int b = 0; b < B; b++) rng_normal_fill(z + (size_t)b * n1, n1, q->seed, (uint64_t)b);
    }
    if (init_latents) memcpy(init_latents, z, sizeof(float) * n);
    fluxpipe_pack(x, z, B, C, h, w);
    /* ids: text zeros [T, 3]; image (0, row, col) [N, 3] */
    for (int i = 0; i < h / 2; i++)
        for (int j = 0; j < w / 2; j++) {
            float *r = img_ids + ((size_t)i * (w / 2) + j) * 3;
            r[1] = (float)i, r[2] = (float)j;
        }
    if ((rc = dump(q, "text_ids", txt_ids, 2, T, 3, 0, 0)) < 0 || (rc = dump(q, "latent_image_ids", img_ids, 2, N, 3, 0, 0)) < 0 ||
        (rc = dump(q, "latents.init", x, 3, B, N, Cp, 0)) < 0)
        goto done;
    /* schedule: sigmas = linspace(1, 1/n, n); mu = calculate_shift(N) (used iff use_dynamic_shifting) */
    sched.kind = SS_SCHED_FLOWMATCH, sched.init_noise_sigma = 1.0f, sched.step_index = -1; /* sched.h, the folder's */
    if ((rc = fm_init(&sched.fm, &p->scheduler)) < 0) goto done;
    fm_flux_sigmas(q->steps, sig);
    const double mu = fm_calculate_shift(&p->scheduler, N);
    if ((rc = ss_sched_set_timesteps(&sched, q->steps, sig, p->scheduler.use_dynamic_shifting ? &mu : NULL)) < 0) goto done;
    if ((rc = dump(q, "timesteps", sched.timesteps, 1, q->steps, 0, 0, 0)) < 0 ||
        (rc = dump(q, "sigmas", sched.sigmas, 1, q->steps + 1, 0, 0, 0)) < 0)
        goto done;
    /* distilled guidance: guidance_scale in fp32 for every element (FLUX.1-dev); none for schnell */
    for (int b = 0; b < B; b++) g[b] = (float)q->guidance;
    if (tc->guidance_embeds && (rc = dump(q, "guidance", g, 1, B, 0, 0, 0)) < 0) goto done;
    hook_ctx hc = {.sk = sk};
    flux_hooks hk = {.ctx = &hc, .attention = hook_attention, .block_output = hook_block_output,
                     .single_output = hook_block_output, .rope_qk = hook_rope_qk};
    if (sk) hc.inner = sink_ctx_hooks(sk);
    char name[48];
    for (int i = 0; i < q->steps; i++) {
        if (sk) sink_ctx_set_step(sk, i, q->steps > 1 ? (double)i / (q->steps - 1) : 0.0);
        for (int b = 0; b < B; b++) t[b] = sched.timesteps[i];
        if ((rc = flux_forward_t1000(tr, v, x, ctx, pooled, t, tc->guidance_embeds ? g : NULL, img_ids, txt_ids, B, N, T,
                                     sk ? &hk : NULL)) < 0) {
            ss_err_prefix(rc, "generate: denoising step %d of %d: ", i, q->steps);
            break;
        }
        snprintf(name, sizeof name, "model_output.%d", i);
        if ((rc = dump(q, name, v, 3, B, N, Cp, 0)) < 0) break;
        if ((rc = ss_sched_step(&sched, sched.timesteps[i], v, x, n)) < 0) break;
        const long long bad = op_first_nonfinite(x, n);
        if (bad >= 0) {
            rc = ss_fail(SS_EFORMAT, "generate: denoising step %d of %d: the latents are %s at index %lld after the update",
                         i, q->steps, isnan(x[bad]) ? "NaN" : "infinite", bad);
            break;
        }
        snprintf(name, sizeof name, "latents.%d", i);
        if ((rc = dump(q, name, x, 3, B, N, Cp, 0)) < 0) break;
        if (q->progress) q->progress(q->progress_ctx, i, q->steps);
    }
    if (rc < 0) goto done;
    /* decode: unpack, latents / scaling_factor + shift_factor, then clamp(x / 2 + 0.5, 0, 1) in NHWC */
    fluxpipe_unpack(z, x, B, C, h, w);
    vae_unscale(p->vae, z, n);
    if ((rc = vae_decode(p->vae, raw, z, B, h, w, NULL, NULL)) < 0) goto done;
    if ((rc = dump(q, "image_raw", raw, 4, B, 3, H, W)) < 0) goto done;
    const size_t plane = (size_t)H * W;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) {
                const float y = raw[((size_t)b * 3 + c) * plane + i] / 2.0f + 0.5f;
                image[((size_t)b * plane + i) * 3 + c] = fminf(fmaxf(y, 0.0f), 1.0f);
            }
    rc = dump(q, "image", image, 4, B, H, W, 3);
done:
    if (sk) sink_ctx_set_step(sk, 0, -1.0), sink_ctx_set_text_types(sk, NULL, 0, 0);
    free(types);
    ss_sched_free(&sched);
    free(x), free(z), free(v), free(raw), free(t), free(g), free(img_ids), free(txt_ids), free(sig);
    return rc < 0 ? rc : 0;
}
