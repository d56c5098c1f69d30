/* StableDiffusion3Pipeline (sd3pipe.h): folder loading, prompt encoding, sampling, decoding. */
#include "sample/sd3pipe.h"

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
#define SD3PIPE_MAX_SIDE 16384

void sd3pipe_params_default(sd3pipe_params *p) {
    memset(p, 0, sizeof *p);
    p->negative = "";
    p->steps = 28;
    p->cfg = 7.0;
    p->max_sequence_length = SD3PIPE_DEFAULT_MAX_SEQ;
}

/* ---- model_index.json ---- */

enum { C_TRANSFORMER, C_VAE, C_SCHEDULER, C_TE1, C_TE2, C_TE3, C_TOK1, C_TOK2, C_TOK3, C_IMGENC, C_FEAT, C_COUNT };

static const pipe_component COMPONENTS[C_COUNT] = {
    [C_TRANSFORMER] = {"transformer", {"SD3Transformer2DModel"}, 0},
    [C_VAE] = {"vae", {"AutoencoderKL"}, 0},
    [C_SCHEDULER] = {"scheduler", {"FlowMatchEulerDiscreteScheduler"}, 0},
    [C_TE1] = {"text_encoder", {"CLIPTextModelWithProjection"}, 0},
    [C_TE2] = {"text_encoder_2", {"CLIPTextModelWithProjection"}, 0},
    [C_TE3] = {"text_encoder_3", {"T5EncoderModel"}, 1},
    [C_TOK1] = {"tokenizer", {"CLIPTokenizer", "CLIPTokenizerFast"}, 0},
    [C_TOK2] = {"tokenizer_2", {"CLIPTokenizer", "CLIPTokenizerFast"}, 0},
    [C_TOK3] = {"tokenizer_3", {"T5Tokenizer", "T5TokenizerFast"}, 1},
    [C_IMGENC] = {"image_encoder", {NULL}, 1},
    [C_FEAT] = {"feature_extractor", {NULL}, 1},
};

/* present[i] = 1 when component i is set (not null). */
static int read_index(const char *dir, int present[C_COUNT]) {
    int rc = pipe_index_read(dir, SD3PIPE_CLASS_NAME, COMPONENTS, C_COUNT, present);
    if (rc < 0) return rc;
    if (present[C_TE3] != present[C_TOK3])
        return ss_fail(SS_EFORMAT, "%s/model_index.json: component '%s' is null but '%s' is not", dir,
                       present[C_TE3] ? "tokenizer_3" : "text_encoder_3", present[C_TE3] ? "text_encoder_3" : "tokenizer_3");
    return 0;
}

/* ---- load ---- */

static int component_err(int rc, const char *dir, int i) {
    return ss_err_prefix(rc, "%s: component '%s': ", dir, COMPONENTS[i].key);
}

static int check_consistent(const sd3pipe *p) {
    const sd3_config *tc = &p->tcfg;
    const txenc_config *l = txenc_get_config(p->enc[0]), *g = txenc_get_config(p->enc[1]);
    const char *d = p->dir;
    for (int i = 0; i < 2; i++) {
        const txenc_config *c = i ? g : l;
        if (c->kind != TXENC_CLIP || !c->proj_dim)
            return ss_fail(SS_EFORMAT, "%s: component '%s' must be a CLIP text model with a projection (text_projection.weight)",
                           d, COMPONENTS[C_TE1 + i].key);
    }
    if (l->d_model + g->d_model > tc->joint_attention_dim)
        return ss_fail(SS_ESHAPE, "%s: components 'text_encoder' and 'text_encoder_2' are %d + %d wide, more than the "
                       "transformer's joint_attention_dim %d", d, l->d_model, g->d_model, tc->joint_attention_dim);
    if (l->proj_dim + g->proj_dim != tc->pooled_projection_dim)
        return ss_fail(SS_ESHAPE, "%s: the projections of 'text_encoder' and 'text_encoder_2' give %d + %d pooled "
                       "channels, but the transformer's pooled_projection_dim is %d", d, l->proj_dim, g->proj_dim,
                       tc->pooled_projection_dim);
    if (p->enc[2]) {
        const txenc_config *t = txenc_get_config(p->enc[2]);
        if (t->kind != TXENC_T5)
            return ss_fail(SS_EFORMAT, "%s: component 'text_encoder_3' must be a T5 encoder", d);
        if (t->d_model != tc->joint_attention_dim)
            return ss_fail(SS_ESHAPE, "%s: component 'text_encoder_3' has d_model %d, but the transformer's "
                           "joint_attention_dim is %d", d, t->d_model, tc->joint_attention_dim);
    }
    const vae_config *vc = &p->vae->cfg;
    if (vc->latent_channels != tc->in_channels || vc->latent_channels != tc->out_channels)
        return ss_fail(SS_ESHAPE, "%s: component 'vae' has latent_channels %d, but the transformer has in_channels %d / "
                       "out_channels %d", d, vc->latent_channels, tc->in_channels, tc->out_channels);
    return 0;
}

int sd3pipe_load(sd3pipe **out, const char *dir) { return sd3pipe_load_opts(out, dir, 0); }

int sd3pipe_load_transformer(sd3pipe *p) {
    if (p->transformer) return 0;
    char path[PATH_LEN];
    int rc = pipe_subpath(path, p->dir, "transformer");
    if (rc < 0) return rc;
    if ((rc = sd3_load(&p->transformer, path)) < 0) return component_err(rc, p->dir, C_TRANSFORMER);
    return 0;
}

void sd3pipe_release_encoders(sd3pipe *p) {
    for (int i = 0; i < 3; i++) {
        txenc_free(p->enc[i]);
        p->enc[i] = NULL;
    }
    p->released = 1;
}

int sd3pipe_load_opts(sd3pipe **out, const char *dir, int flags) {
    *out = NULL;
    int present[C_COUNT] = {0};
    int rc = read_index(dir, present);
    if (rc < 0) return rc;
    sd3pipe *p = ss_calloc(1, sizeof *p);
    if (!p) return SS_ENOMEM;
    char path[PATH_LEN];
    if (!(p->dir = strdup(dir))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = pipe_open_flowmatch(dir, &p->scheduler)) < 0) goto fail;
    if ((rc = pipe_subpath(path, dir, "transformer/config.json")) < 0) goto fail;
    if ((rc = sd3_config_load(&p->tcfg, path)) < 0) {
        component_err(rc, dir, C_TRANSFORMER);
        goto fail;
    }
    p->has_t5 = present[C_TE3];
    const int n_text = present[C_TE3] ? 3 : 2;
    for (int i = 0; i < n_text; i++)
        if ((rc = pipe_open_text(dir, COMPONENTS[C_TOK1 + i].key, COMPONENTS[C_TE1 + i].key, &p->tok[i], &p->enc[i])) < 0)
            goto fail;
    p->clip_len = txtok_model_max_length(p->tok[0]);
    if (p->clip_len <= 0 || p->clip_len > 77) p->clip_len = 77;
    if ((rc = pipe_open_vae(dir, &p->vae)) < 0) goto fail;
    if ((rc = check_consistent(p)) < 0) goto fail;
    if (!(flags & SD3PIPE_DEFER_TRANSFORMER) && (rc = sd3pipe_load_transformer(p)) < 0) goto fail;
    *out = p;
    return 0;
fail:
    sd3pipe_free(p);
    return rc;
}

void sd3pipe_free(sd3pipe *p) {
    if (!p) return;
    for (int i = 0; i < 3; i++) {
        txenc_free(p->enc[i]);
        txtok_free(p->tok[i]);
    }
    sd3_free(p->transformer);
    vae_free(p->vae);
    free(p->dir);
    free(p);
}

int sd3pipe_image_size(const sd3pipe *p, const sd3pipe_params *q, int *H, int *W) {
    const sd3_config *c = &p->tcfg;
    const int f = vae_factor(p->vae), m = f * c->patch_size;
    const int h = q->height ? q->height : c->sample_size * f, w = q->width ? q->width : c->sample_size * f;
    if (h < m || w < m || h % m || w % m || h > SD3PIPE_MAX_SIDE || w > SD3PIPE_MAX_SIDE)
        return ss_fail(SS_EARG, "image size %dx%d: height and width must be positive multiples of %d (VAE factor %d x patch "
                       "size %d), at most %d", w, h, m, f, c->patch_size, SD3PIPE_MAX_SIDE);
    if (h / m > c->pos_embed_max_size || w / m > c->pos_embed_max_size)
        return ss_fail(SS_EARG, "image size %dx%d: at most %d patches per side (pos_embed_max_size)", w, h,
                       c->pos_embed_max_size);
    *H = h, *W = w;
    return 0;
}

/* ---- prompt encoding ---- */

typedef struct {
    const char *hidden; /* name of the sequence output to take */
    float *dst;         /* [B, rows, ld] at (row0, col0) */
    int ld, rows, row0, col0;
    float *pooled;      /* [B, P] at column p0, or NULL */
    int P, p0;
    int got;
} take_ctx;

static int take(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    take_ctx *t = ctx;
    if (!is_f32) return 0;
    const float *x = data;
    if (!strcmp(name, t->hidden) && ndim == 3) {
        const int B = (int)shape[0], L = (int)shape[1], D = (int)shape[2];
        for (int b = 0; b < B; b++)
            for (int l = 0; l < L; l++)
                memcpy(t->dst + ((size_t)b * t->rows + t->row0 + l) * t->ld + t->col0, x + ((size_t)b * L + l) * D,
                       sizeof(float) * D);
        t->got |= 1;
    } else if (t->pooled && !strcmp(name, "text_embeds") && ndim == 2) {
        const int B = (int)shape[0], D = (int)shape[1];
        for (int b = 0; b < B; b++) memcpy(t->pooled + (size_t)b * t->P + t->p0, x + (size_t)b * D, sizeof(float) * D);
        t->got |= 2;
    }
    return 0;
}

/* ids [B, len] of the prompts through tokenizer i. */
static int tokenize(const sd3pipe *p, int i, const char *const *prompts, int B, int len, int64_t *ids) {
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

/* embeds [B, S, J] and pooled [B, P] of B prompts (_encode_prompt). */
static int encode(const sd3pipe *p, const char *const *prompts, int B, int T, float *embeds, float *pooled) {
    const sd3_config *tc = &p->tcfg;
    const int J = tc->joint_attention_dim, P = tc->pooled_projection_dim, L77 = p->clip_len, S = L77 + T;
    memset(embeds, 0, sizeof(float) * (size_t)B * S * J);
    const int maxlen = L77 > T ? L77 : T;
    int64_t *ids = malloc(sizeof *ids * (size_t)B * maxlen);
    if (!ids) return ss_fail(SS_ENOMEM, "out of memory");
    int rc = 0, col = 0, pcol = 0;
    for (int i = 0; i < 2 && rc >= 0; i++) {
        const txenc_config *c = txenc_get_config(p->enc[i]);
        char hidden[32];
        snprintf(hidden, sizeof hidden, "hidden_states.%d", c->n_layers - 1); /* hidden_states[-2] */
        take_ctx t = {.hidden = hidden, .dst = embeds, .ld = J, .rows = S, .row0 = 0, .col0 = col, .pooled = pooled, .P = P,
                      .p0 = pcol};
        if ((rc = tokenize(p, i, prompts, B, L77, ids)) < 0) break;
        if ((rc = txenc_run(p->enc[i], ids, NULL, B, L77, COMPONENTS[C_TE1 + i].key, take, &t)) < 0) {
            component_err(rc, p->dir, C_TE1 + i);
            break;
        }
        if (t.got != 3) rc = ss_fail(SS_EFORMAT, "%s: component '%s' gave no %s / text_embeds", p->dir,
                                     COMPONENTS[C_TE1 + i].key, hidden);
        col += c->d_model;
        pcol += c->proj_dim;
    }
    if (rc >= 0 && p->has_t5) {
        take_ctx t = {.hidden = "last_hidden_state", .dst = embeds, .ld = J, .rows = S, .row0 = L77, .col0 = 0};
        if ((rc = tokenize(p, 2, prompts, B, T, ids)) >= 0 &&
            (rc = txenc_run(p->enc[2], ids, NULL, B, T, "text_encoder_3", take, &t)) < 0)
            component_err(rc, p->dir, C_TE3);
        if (rc >= 0 && t.got != 1) rc = ss_fail(SS_EFORMAT, "%s: component 'text_encoder_3' gave no last_hidden_state", p->dir);
    }
    free(ids);
    return rc;
}

/* ---- sampling ---- */

static int dump(const sd3pipe_params *q, const char *name, const float *x, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3) {
    if (!q->dump) return 0;
    const int64_t shp[4] = {d0, d1, d2, d3};
    return q->dump(q->dump_ctx, name, x, ndim, shp);
}

static int check_params(const sd3pipe *p, const sd3pipe_params *q) {
    if (q->n_prompts < 1 || !q->prompts) return ss_fail(SS_EARG, "generate: no prompt given");
    if (q->steps < 1 || q->steps > 10000) return ss_fail(SS_EARG, "generate: steps must be in [1, 10000], got %d", q->steps);
    if (!isfinite(q->cfg)) return ss_fail(SS_EARG, "generate: the guidance scale must be finite");
    if (p->has_t5 && (q->max_sequence_length < 1 || q->max_sequence_length > 4096))
        return ss_fail(SS_EARG, "generate: max_sequence_length must be in [1, 4096], got %d", q->max_sequence_length);
    return 0;
}

int sd3pipe_text_len(const sd3pipe *p, const sd3pipe_params *q) {
    return p->clip_len + (p->has_t5 ? q->max_sequence_length : p->clip_len);
}

int sd3pipe_encode(const sd3pipe *p, const sd3pipe_params *q, float *ctx, float *pooled) {
    int rc = check_params(p, q);
    if (rc < 0) return rc;
    if (p->released) return ss_fail(SS_EARG, "%s: the text encoders were released before encoding", p->dir);
    const int B = q->n_prompts, guided = q->cfg > 1.0, S = sd3pipe_text_len(p, q), T = S - p->clip_len;
    const int J = p->tcfg.joint_attention_dim, P = p->tcfg.pooled_projection_dim;
    const char **neg = malloc(sizeof *neg * B);
    if (!neg) return ss_fail(SS_ENOMEM, "generate: out of memory");
    for (int b = 0; b < B; b++) neg[b] = q->negative ? q->negative : "";
    /* batch order as diffusers: [uncond(B); cond(B)] */
    float *cctx = ctx + (size_t)(guided ? B : 0) * S * J, *cpool = pooled + (size_t)(guided ? B : 0) * P;
    if ((rc = encode(p, q->prompts, B, T, cctx, cpool)) >= 0 && guided) rc = encode(p, neg, B, T, ctx, pooled);
    if (rc >= 0 && (rc = dump(q, "prompt_embeds", cctx, 3, B, S, J, 0)) >= 0)
        rc = dump(q, "pooled_prompt_embeds", cpool, 2, B, P, 0, 0);
    if (rc >= 0 && guided && (rc = dump(q, "negative_prompt_embeds", ctx, 3, B, S, J, 0)) >= 0)
        rc = dump(q, "negative_pooled_prompt_embeds", pooled, 2, B, P, 0, 0);
    free(neg);
    return rc < 0 ? rc : 0;
}

/* types [B, S] of B prompts: CLIP-L's token r for row r < clip_len, then T5's (or pad). */
static int text_types(const sd3pipe *p, const char *const *prompts, int B, int S, uint8_t *types) {
    const int L = p->clip_len, T = S - L;
    txtok_seq s = {0};
    int rc = 0;
    for (int b = 0; b < B && rc >= 0; b++) {
        uint8_t *ty = types + (size_t)b * S;
        for (int k = 0; k < 2 && rc >= 0; k++) {
            const int i = k ? 2 : 0, n = k ? T : L;
            if (k && !p->has_t5) {
                memset(ty + L, SS_TOK_PAD, (size_t)T); /* the zero rows without T5 */
                break;
            }
            if ((rc = txtok_encode(p->tok[i], prompts[b], strlen(prompts[b]), n, &s)) < 0) break;
            if (s.n != n) {
                rc = ss_fail(SS_EFORMAT, "%s: component '%s' gave %d ids, not %d", p->dir, COMPONENTS[C_TOK1 + i].key, s.n, n);
                break;
            }
            for (int j = 0; j < n; j++) ty[(k ? L : 0) + j] = spiral_tok_of_txtok(s.types[j]);
        }
    }
    txtok_seq_free(&s);
    return rc;
}

int sd3pipe_text_types(const sd3pipe *p, const sd3pipe_params *q, uint8_t *types) {
    int rc = check_params(p, q);
    if (rc < 0) return rc;
    const int B = q->n_prompts, guided = q->cfg > 1.0, S = sd3pipe_text_len(p, q);
    const char **neg = malloc(sizeof *neg * B);
    if (!neg) return ss_fail(SS_ENOMEM, "generate: out of memory");
    for (int b = 0; b < B; b++) neg[b] = q->negative ? q->negative : "";
    if ((rc = text_types(p, q->prompts, B, S, types + (size_t)(guided ? B : 0) * S)) >= 0 && guided)
        rc = text_types(p, neg, B, S, types);
    free(neg);
    return rc < 0 ? rc : 0;
}

int sd3pipe_generate(const sd3pipe *p, const sd3pipe_params *q, float *image, float *init_latents, sink_ctx *sk) {
    int rc = check_params(p, q);
    if (rc < 0) return rc;
    const int BB = (q->cfg > 1.0 ? 2 : 1) * q->n_prompts, S = sd3pipe_text_len(p, q);
    float *ctx = malloc(sizeof(float) * (size_t)BB * S * p->tcfg.joint_attention_dim);
    float *pooled = malloc(sizeof(float) * (size_t)BB * p->tcfg.pooled_projection_dim);
    if (!ctx || !pooled)
        rc = ss_fail(SS_ENOMEM, "generate: out of memory");
    else if ((rc = sd3pipe_encode(p, q, ctx, pooled)) >= 0)
        rc = sd3pipe_denoise(p, q, ctx, pooled, image, init_latents, sk);
    free(ctx);
    free(pooled);
    return rc;
}

int sd3pipe_denoise(const sd3pipe *p, const sd3pipe_params *q, const float *ctx, const float *pooled, float *image,
                    float *init_latents, sink_ctx *sk) {
    int H, W, rc;
    if ((rc = check_params(p, q)) < 0 || (rc = sd3pipe_image_size(p, q, &H, &W)) < 0) return rc;
    if (!p->transformer) return ss_fail(SS_EARG, "%s: component 'transformer' is not loaded", p->dir);
    const int B = q->n_prompts;
    const sd3_model *tr = p->transformer;
    const sd3_config *tc = &tr->cfg;
    const int f = vae_factor(p->vae), h = H / f, w = W / f, C = tc->in_channels, ps = tc->patch_size;
    const int S = sd3pipe_text_len(p, q);
    const int guided = q->cfg > 1.0, BB = guided ? 2 * B : B;
    const size_t n1 = (size_t)C * h * w, n = n1 * B;

    float *x = malloc(sizeof(float) * n), *xin = guided ? malloc(sizeof(float) * n * 2) : x;
    float *v = malloc(sizeof(float) * n * (guided ? 2 : 1)), *raw = malloc(sizeof(float) * (size_t)B * 3 * H * W);
    float *t = malloc(sizeof(float) * BB);
    uint8_t *types = sk ? malloc((size_t)BB * S) : NULL;
    ss_sched sched;
    memset(&sched, 0, sizeof sched);
    sd3_workspace *ws = NULL;
    if (!x || !xin || !v || !raw || !t || (sk && !types)) {
        rc = ss_fail(SS_ENOMEM, "generate: out of memory");
        goto done;
    }
    /* the probe's text key types, from the tokenizers (the encoders may be released by now) */
    if (sk && ((rc = sd3pipe_text_types(p, q, types)) < 0 || (rc = sink_ctx_set_text_types(sk, types, BB, S)) < 0)) goto done;
    /* initial latents */
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
    if ((rc = dump(q, "latents.init", x, 4, B, C, h, w)) < 0) goto done;
    /* schedule: the folder's FlowMatch (mu iff use_dynamic_shifting), or a from_config swap (no mu) */
    const int fm = !q->scheduler || !strcmp(q->scheduler, "default");
    if (fm) {
        sched.kind = SS_SCHED_FLOWMATCH, sched.init_noise_sigma = 1.0f, sched.step_index = -1;
        if ((rc = fm_init(&sched.fm, &p->scheduler)) < 0) goto done;
    } else if ((rc = ss_sched_load_named(&sched, p->dir, q->scheduler)) < 0) {
        ss_err_prefix(rc, "%s: component 'scheduler': ", p->dir);
        goto done;
    }
    double mu = 0;
    const int shift = fm && p->scheduler.use_dynamic_shifting;
    if (shift) mu = fm_calculate_shift(&p->scheduler, (h / ps) * (w / ps));
    if ((rc = ss_sched_set_timesteps(&sched, q->steps, NULL, shift ? &mu : NULL)) < 0) goto done;
    const int steps = sched.num_steps;
    if ((rc = dump(q, "timesteps", sched.timesteps, 1, steps, 0, 0, 0)) < 0 ||
        (rc = dump(q, "sigmas", sched.sigmas, 1, steps + 1, 0, 0, 0)) < 0)
        goto done;
    if ((rc = sd3_workspace_new(&ws, tr, BB, h, w, S)) < 0) goto done;
    sd3_hooks hk;
    if (sk) hk = sink_ctx_hooks(sk);
    const float g = (float)q->cfg;
    char name[48];
    for (int i = 0; i < steps; i++) {
        if (sk) sink_ctx_set_step(sk, i, steps > 1 ? (double)i / (steps - 1) : 0.0);
        for (int b = 0; b < BB; b++) t[b] = sched.timesteps[i];
        if (guided) {
            memcpy(xin, x, sizeof(float) * n);
            memcpy(xin + n, x, sizeof(float) * n);
        }
        if ((rc = sd3_forward_ws(tr, ws, v, xin, ctx, pooled, t, BB, h, w, S, sk ? &hk : NULL)) < 0) {
            ss_err_prefix(rc, "generate: denoising step %d of %d: ", i, steps);
            break;
        }
        snprintf(name, sizeof name, "model_output.%d", i);
        if ((rc = dump(q, name, v, 4, BB, C, h, w)) < 0) break;
        if (guided) {
            const float *vc = v + n;
            for (size_t j = 0; j < n; j++) {
                const float d = vc[j] - v[j], gd = g * d;
                v[j] = v[j] + gd;
            }
        }
        snprintf(name, sizeof name, "noise_pred.%d", i);
        if ((rc = dump(q, name, v, 4, B, C, h, w)) < 0) break;
        if ((rc = ss_sched_step(&sched, sched.timesteps[i], v, x, n)) < 0) break;
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
    /* decode: latents / scaling_factor + shift_factor, then clamp(x / 2 + 0.5, 0, 1) in NHWC */
    vae_unscale(p->vae, x, n);
    if ((rc = vae_decode(p->vae, raw, x, B, h, w, NULL, NULL)) < 0) goto done;
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
    sd3_workspace_free(ws);
    ss_sched_free(&sched);
    if (xin != x) free(xin);
    free(x), free(v), free(raw), free(t);
    return rc < 0 ? rc : 0;
}
