/* sd3pipe: diffusers' StableDiffusion3Pipeline (0.32.1) from a pipeline folder, fp32.
 *
 *   sd3pipe *p; if (sd3pipe_load(&p, "stable-diffusion-3-medium-diffusers") < 0) die(ss_err());
 *   sd3pipe_params q; sd3pipe_params_default(&q);
 *   const char *prompts[] = {"a photo of a cat"}; q.prompts = prompts; q.n_prompts = 1;
 *   int H, W; sd3pipe_image_size(p, &q, &H, &W);
 *   float *img = malloc(sizeof(float) * 1 * H * W * 3);      // [B, H, W, 3] in [0, 1]
 *   sd3pipe_generate(p, &q, img, NULL);
 *
 * Folder (model_index.json "_class_name": "StableDiffusion3Pipeline"): transformer/
 * (SD3Transformer2DModel), vae/ (AutoencoderKL), scheduler/ (FlowMatchEulerDiscreteScheduler),
 * text_encoder/ + tokenizer/ (CLIP-L: CLIPTextModelWithProjection, CLIPTokenizer[Fast]),
 * text_encoder_2/ + tokenizer_2/ (CLIP-G), text_encoder_3/ + tokenizer_3/ (T5EncoderModel,
 * T5Tokenizer[Fast]; both may be null). image_encoder / feature_extractor must be null.
 * Checked at load: each tokenizer fits its encoder; CLIP-L width + CLIP-G width <= the T5 width
 * == transformer joint_attention_dim (diffusers' F.pad would crop silently otherwise); the two
 * projection widths sum to pooled_projection_dim; the VAE's latent_channels == the transformer's
 * in_channels == out_channels. Errors name the folder and the component.
 *
 * Prompt embeddings as _encode_prompt: per CLIP, hidden_states[-2] of the 77-token ids
 * (padding="max_length", truncation) and text_embeds; [CLIP-L | CLIP-G] on channels, zero-padded
 * to joint_attention_dim, then T5's last_hidden_state (max_sequence_length tokens, no mask) on
 * the sequence, or zeros [B, 77, joint_attention_dim] without T5; pooled = [L | G]. The negative
 * prompt goes through all three encoders. CFG (cfg > 1): batch [uncond(B); cond(B)], noise_pred
 * = u + cfg (c - u) in fp32; the FlowMatch Euler step in fp32; decode(latents / scaling_factor +
 * shift_factor); image = clamp(x / 2 + 0.5, 0, 1) in NHWC.
 * Initial latents [B, C, H/f, W/f]: given (params.latents), or N(0, 1) from Philox stream b of
 * the seed for batch element b (core/rng.h).
 */
#ifndef SS_SD3PIPE_H
#define SS_SD3PIPE_H

#include <stdint.h>

#include "models/sd3.h"
#include "vae/vae.h"
#include "sample/flowmatch.h"
#include "sink/sink.h"
#include "text/txenc.h"
#include "text/txtok.h"

#define SD3PIPE_CLASS_NAME "StableDiffusion3Pipeline"
#define SD3PIPE_DEFAULT_MAX_SEQ 256

typedef struct {
    char *dir;
    txtok *tok[3];  /* CLIP-L, CLIP-G, T5 (tok[2], enc[2] NULL without T5) */
    txenc *enc[3];
    sd3_model *transformer;
    vae_model *vae;
    fm_config scheduler;
    int clip_len;   /* tokenizer.model_max_length, else 77 */
    int has_t5;     /* text_encoder_3 in the folder */
    int released;   /* sd3pipe_release_encoders was called */
    sd3_config tcfg; /* transformer/config.json (also while the weights are not loaded) */
} sd3pipe;

/* Called with every intermediate tensor (named as the reference fixture sd3-pipeline-tiny):
 * prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
 * timesteps, sigmas, latents.init, model_output.{i}, noise_pred.{i}, latents.{i}, image_raw,
 * image. Return < 0 to stop. */
typedef int (*sd3pipe_dump_fn)(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape);
typedef void (*sd3pipe_progress_fn)(void *ctx, int step, int steps);

typedef struct {
    const char *const *prompts;
    int n_prompts;             /* the batch B */
    const char *negative;      /* "" by default */
    int steps;                 /* 28 */
    double cfg;                /* 7.0; guidance iff > 1 */
    int height, width;         /* pixels; 0 = transformer sample_size x VAE factor */
    int max_sequence_length;   /* T5 tokens, 256 */
    const float *latents;      /* [B, C, H/f, W/f] initial latents, or NULL (seeded noise) */
    uint64_t seed;
    sd3pipe_dump_fn dump;
    void *dump_ctx;
    sd3pipe_progress_fn progress;
    void *progress_ctx;
    /* NULL or "default": the folder's FlowMatch Euler; "euler" / "dpm++": EulerDiscreteScheduler /
     * DPMSolverMultistepScheduler .from_config of scheduler_config.json (sched.h's
     * ss_sched_load_named, the paper's E2 swaps). As diffusers' pipeline: no mu for them, no
     * init_noise_sigma and no scale_model_input (sched.h); the transformer gets their timesteps. */
    const char *scheduler;
} sd3pipe_params;

void sd3pipe_params_default(sd3pipe_params *p);
int sd3pipe_load(sd3pipe **out, const char *dir);
/* flags SD3PIPE_DEFER_TRANSFORMER: read transformer/config.json only (every check still runs); the
 * weights come with sd3pipe_load_transformer. Memory then peaks at max(encoders, transformer)
 * rather than their sum: encode, sd3pipe_release_encoders, sd3pipe_load_transformer, denoise
 * (T5-XXL alone is ~19 GB in fp32, SD3-medium's transformer ~8 GB). */
#define SD3PIPE_DEFER_TRANSFORMER 1
int sd3pipe_load_opts(sd3pipe **out, const char *dir, int flags);
int sd3pipe_load_transformer(sd3pipe *p);
void sd3pipe_release_encoders(sd3pipe *p);
void sd3pipe_free(sd3pipe *p);
/* Resolves height/width (0 = default) and checks them: multiples of VAE factor x patch size,
 * patch grid within pos_embed_max_size. */
int sd3pipe_image_size(const sd3pipe *p, const sd3pipe_params *q, int *H, int *W);
/* image [B, H, W, 3] in [0, 1]; init_latents (optional) receives the initial latents
 * [B, C, H/f, W/f]; sk: optional probe / intervention context (as pipe_generate). */
int sd3pipe_generate(const sd3pipe *p, const sd3pipe_params *q, float *image, float *init_latents, sink_ctx *sk);
/* The two halves of sd3pipe_generate. Text tokens S = sd3pipe_text_len; ctx [BB, S, J] and pooled
 * [BB, P] with BB = 2B under guidance (uncond first), else B. */
int sd3pipe_text_len(const sd3pipe *p, const sd3pipe_params *q);
int sd3pipe_encode(const sd3pipe *p, const sd3pipe_params *q, float *ctx, float *pooled);
/* The probe's key type (ss_tok, models/site.h) of every text token, types [BB, S] in ctx's order,
 * from the tokenizers (so also after sd3pipe_release_encoders): row r < clip_len has CLIP-L's
 * token r's type. CLIP-L and CLIP-G are concatenated on channels; in SD3 both tokenizers share one
 * BPE vocabulary and differ in the pad id only (CLIP-L pads with its EOS id, CLIP-G with "!"),
 * which the tokenizer types as pad either way; where the two would type a row differently,
 * CLIP-L's type is the one used. Rows >= clip_len: T5's types of its max_sequence_length tokens, or pad for the zero rows without T5. The
 * negative prompt's types for the unconditional half. sd3pipe_denoise hands them to the probe
 * (sink_ctx_set_text_types) when given one. */
int sd3pipe_text_types(const sd3pipe *p, const sd3pipe_params *q, uint8_t *types);
int sd3pipe_denoise(const sd3pipe *p, const sd3pipe_params *q, const float *ctx, const float *pooled, float *image,
                    float *init_latents, sink_ctx *sk);

#endif
