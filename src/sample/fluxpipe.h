/* fluxpipe: diffusers' FluxPipeline (0.32.1) from a pipeline folder, fp32 (FLUX.1-dev, -schnell).
 *
 *   fluxpipe *p; if (fluxpipe_load(&p, "FLUX.1-dev") < 0) die(ss_err());
 *   fluxpipe_params q; fluxpipe_params_default(&q);
 *   const char *prompts[] = {"a photo of a cat"}; q.prompts = prompts; q.n_prompts = 1;
 *   int H, W; fluxpipe_image_size(p, &q, &H, &W);
 *   float *img = malloc(sizeof(float) * 1 * H * W * 3);      // [B, H, W, 3] in [0, 1]
 *   fluxpipe_generate(p, &q, img, NULL, NULL);
 *
 * Folder (model_index.json "_class_name": "FluxPipeline"): transformer/ (FluxTransformer2DModel),
 * vae/ (AutoencoderKL), scheduler/ (FlowMatchEulerDiscreteScheduler), text_encoder/ + tokenizer/
 * (CLIP: CLIPTextModel[WithProjection], CLIPTokenizer[Fast]), text_encoder_2/ + tokenizer_2/
 * (T5EncoderModel, T5Tokenizer[Fast]). image_encoder / feature_extractor must be null.
 * Checked at load (errors name the folder and the component): each tokenizer fits its encoder;
 * the CLIP width (its pooler_output) == the transformer's pooled_projection_dim; the T5 d_model ==
 * joint_attention_dim; the VAE's latent_channels x 4 == in_channels == out_channels; patch_size
 * 1 and three position axes (the pipeline's ids).
 *
 * As FluxPipeline.__call__: pooled = CLIP pooler_output of the 77-token ids (padding
 * "max_length", truncation); prompt_embeds = T5 last_hidden_state of max_sequence_length tokens
 * (no mask); txt_ids = zeros [T, 3]; latents [B, C, h, w] with h = 2 (H / 2f), packed 2 x 2 into
 * [B, N = (h/2)(w/2), 4C] (_pack_latents); latent_image_ids [N, 3] = (0, row, col); sigmas =
 * linspace(1, 1/n, n), mu = calculate_shift(N) from the scheduler config (used iff
 * use_dynamic_shifting); guidance = guidance_scale for every element when guidance_embeds
 * (FLUX.1-dev's distilled guidance), nothing otherwise; no classifier-free guidance; the
 * FlowMatch Euler step in fp32; decode(unpack(latents) / scaling_factor + shift_factor); image =
 * clamp(x / 2 + 0.5, 0, 1) in NHWC.
 * Initial latents [B, C, h, w]: given (params.latents, the unpacked layout), or N(0, 1) from
 * Philox stream b of the seed for batch element b (core/rng.h), then packed.
 */
#ifndef SS_FLUXPIPE_H
#define SS_FLUXPIPE_H

#include <stdint.h>

#include "models/flux.h"
#include "vae/vae.h"
#include "sample/flowmatch.h"
#include "sink/sink.h"
#include "text/txenc.h"
#include "text/txtok.h"

#define FLUXPIPE_CLASS_NAME "FluxPipeline"
#define FLUXPIPE_DEFAULT_MAX_SEQ 512
#define FLUXPIPE_DEFAULT_SAMPLE 128 /* latent pixels per side by default (default_sample_size) */

typedef struct {
    char *dir;
    txtok *tok[2]; /* CLIP, T5 */
    txenc *enc[2];
    flux_model *transformer;
    vae_model *vae;
    fm_config scheduler;
    int clip_len;   /* tokenizer.model_max_length, else 77 */
    int released;   /* fluxpipe_release_encoders was called */
    flux_config tcfg; /* transformer/config.json (also while the weights are not loaded) */
} fluxpipe;

/* Called with every intermediate tensor (named as tests/fixtures/flux-pipeline): prompt_embeds,
 * pooled_prompt_embeds, text_ids, latent_image_ids, guidance (dev only), timesteps, sigmas,
 * latents.init (packed), model_output.{i}, latents.{i} (packed), image_raw, image. Return < 0 to
 * stop. */
typedef int (*fluxpipe_dump_fn)(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape);
typedef void (*fluxpipe_progress_fn)(void *ctx, int step, int steps);

typedef struct {
    const char *const *prompts;
    int n_prompts;             /* the batch B */
    int steps;                 /* 28 */
    double guidance;           /* 3.5: the distilled guidance (ignored without guidance_embeds) */
    int height, width;         /* pixels; 0 = 128 x VAE factor */
    int max_sequence_length;   /* T5 tokens, 512 (at most 512, as diffusers) */
    const float *latents;      /* [B, C, h, w] initial latents, or NULL (seeded noise) */
    uint64_t seed;
    fluxpipe_dump_fn dump;
    void *dump_ctx;
    fluxpipe_progress_fn progress;
    void *progress_ctx;
    /* NULL or "default" (the folder's FlowMatch Euler). "euler" and "dpm++" are refused: FluxPipeline
     * passes custom sigmas and mu to set_timesteps, which EulerDiscreteScheduler (no mu) and
     * DPMSolverMultistepScheduler (no sigmas) do not take, so diffusers 0.32.1 fails too. */
    const char *scheduler;
} fluxpipe_params;

void fluxpipe_params_default(fluxpipe_params *p);
int fluxpipe_load(fluxpipe **out, const char *dir);
/* flags FLUXPIPE_DEFER_TRANSFORMER: read transformer/config.json only (every check still runs);
 * the weights come with fluxpipe_load_transformer, so memory peaks at max(encoders, transformer)
 * (T5-XXL ~19 GB in fp32, FLUX.1's transformer ~48 GB). */
#define FLUXPIPE_DEFER_TRANSFORMER 1
int fluxpipe_load_opts(fluxpipe **out, const char *dir, int flags);
int fluxpipe_load_transformer(fluxpipe *p);
void fluxpipe_release_encoders(fluxpipe *p);
void fluxpipe_free(fluxpipe *p);
/* Resolves height/width (0 = default) and checks them: positive multiples of 2 x VAE factor. */
int fluxpipe_image_size(const fluxpipe *p, const fluxpipe_params *q, int *H, int *W);
/* Latent grid: h, w (unpacked, [B, C, h, w]), N packed tokens, C latent channels. */
void fluxpipe_latent_shape(const fluxpipe *p, int H, int W, int *h, int *w, int *N, int *C);
/* _pack_latents: x [B, C, h, w] -> out [B, (h/2)(w/2), 4C], channel c*4 + dy*2 + dx of token
 * (i, j) = x[c, 2i + dy, 2j + dx]; _unpack_latents the inverse. h and w even. */
void fluxpipe_pack(float *out, const float *x, int B, int C, int h, int w);
void fluxpipe_unpack(float *out, const float *x, int B, int C, int h, int w);
/* image [B, H, W, 3] in [0, 1]; init_latents (optional) receives the initial latents
 * [B, C, h, w]; sk: optional probe / intervention context. */
int fluxpipe_generate(const fluxpipe *p, const fluxpipe_params *q, float *image, float *init_latents, sink_ctx *sk);
/* The two halves. ctx [B, T, J] with T = max_sequence_length, pooled [B, P]. */
int fluxpipe_encode(const fluxpipe *p, const fluxpipe_params *q, float *ctx, float *pooled);
/* The probe's key type (ss_tok, models/site.h) of every text token, types [B, T] in ctx's order:
 * the T5 tokenizer's types of the max_sequence_length tokens (CLIP gives only the pooled vector,
 * no keys). From the tokenizers, so also after fluxpipe_release_encoders; fluxpipe_denoise hands
 * them to the probe (sink_ctx_set_text_types) when given one. */
int fluxpipe_text_types(const fluxpipe *p, const fluxpipe_params *q, uint8_t *types);
int fluxpipe_denoise(const fluxpipe *p, const fluxpipe_params *q, const float *ctx, const float *pooled, float *image,
                     float *init_latents, sink_ctx *sk);

#endif
