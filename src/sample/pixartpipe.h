/* pixartpipe: diffusers' PixArtAlphaPipeline (0.32.1) from a pipeline folder, fp32.
 *
 *   pixartpipe *p; if (pixartpipe_load(&p, "PixArt-XL-2-1024-MS") < 0) die(ss_err());
 *   pixartpipe_params q; pixartpipe_params_default(&q);
 *   const char *prompts[] = {"a small cactus with a happy face"}; q.prompts = prompts; q.n_prompts = 1;
 *   int H, W; pixartpipe_image_size(p, &q, &H, &W, NULL, NULL);
 *   float *img = malloc(sizeof(float) * 1 * H * W * 3);      // [B, H, W, 3] in [0, 1]
 *   pixartpipe_generate(p, &q, img, NULL, NULL);
 *
 * Folder (model_index.json "_class_name": "PixArtAlphaPipeline"): transformer/
 * (PixArtTransformer2DModel, or Transformer2DModel as the Hub's PixArt-alpha folders say), vae/
 * (AutoencoderKL), scheduler/ (DPMSolverMultistepScheduler or EulerDiscreteScheduler), text_encoder/
 * (T5EncoderModel) + tokenizer/ (T5Tokenizer[Fast]). Checked at load: the tokenizer fits the encoder;
 * T5's d_model == the transformer's caption_channels (cross_attention_dim without a caption
 * projection); the VAE's latent_channels == in_channels; out_channels == in_channels or 2 x
 * in_channels (learned sigma); use_additional_conditions only with sample_size 128 (the pipeline
 * passes resolution and aspect ratio iff sample_size is 128). Errors name the folder and component.
 *
 * As __call__ with its defaults:
 *   - prompts (and the negative prompt, default "") preprocessed by _text_preprocessing: Python's
 *     text.lower().strip(). That is clean_caption=False, and also what the default clean_caption=True
 *     does when bs4 or ftfy is not installed (diffusers then warns and falls back to it); the
 *     clean_caption=True cleaner itself (ftfy, BeautifulSoup, ~40 regular expressions) is not
 *     implemented, so prompts with URLs, HTML, or the characters it rewrites differ from a diffusers
 *     run that has both packages;
 *   - T5 with padding="max_length", max_sequence_length (default 120) tokens, truncation (a longer
 *     prompt is cut, as diffusers cuts it), the tokenizer's attention mask into T5 and on to the
 *     transformer's cross-attention (encoder_attention_mask);
 *   - CFG (cfg > 1, default 4.5) on the batch [uncond(B); cond(B)], u + cfg (c - u) on all out_channels,
 *     then the learned-sigma split (the first in_channels channels) when out_channels == 2 x in_channels;
 *   - resolution binning (use_resolution_binning=True, the default): the requested size (default
 *     sample_size x VAE factor) maps to the closest aspect-ratio bin of ASPECT_RATIO_{1024,512,256}_BIN
 *     for sample_size 128 / 64 / 32 (other sample sizes: an error, as diffusers raises, unless binning
 *     is off); the transformer runs at the binned size, and the decoded image is resized back with
 *     torch's bilinear interpolation (align_corners=False, no antialias) and centre-cropped
 *     (PixArtImageProcessor.resize_and_crop_tensor);
 *   - resolution [BB, 2] = (binned height, width) and aspect_ratio [BB] = height / width for the
 *     transformers with sample_size 128;
 *   - the scheduler of scheduler/scheduler_config.json (or q.scheduler: sched.h's ss_sched_load_named
 *     names), set_timesteps(steps), the starting latents times init_noise_sigma, scale_model_input on
 *     the model input, scheduler.step; with 1 step the step's pred_original_sample (DPMSolver++ has none:
 *     diffusers fails there, so 1 step with it is refused);
 *   - decode(latents / scaling_factor) (PixArt applies no shift_factor), clamp(x / 2 + 0.5, 0, 1), NHWC.
 * Initial latents [B, C, Hb/f, Wb/f] at the binned size Hb x Wb: given (q.latents), or N(0, 1) from
 * Philox stream b of the seed for batch element b (core/rng.h).
 */
#ifndef SS_PIXARTPIPE_H
#define SS_PIXARTPIPE_H

#include <stdint.h>

#include "models/pixart.h"
#include "vae/vae.h"
#include "sink/sink.h"
#include "text/txenc.h"
#include "text/txtok.h"

#define PIXARTPIPE_CLASS_NAME "PixArtAlphaPipeline"
#define PIXARTPIPE_DEFAULT_MAX_SEQ 120

typedef struct {
    char *dir;
    txtok *tok;
    txenc *enc;
    pixart_model *transformer;
    vae_model *vae;
    int released;        /* pixartpipe_release_encoders was called */
    pixart_config tcfg;  /* transformer/config.json (also while the weights are not loaded) */
    int sched_kind;      /* the folder's scheduler (ss_sched_kind) */
} pixartpipe;

/* Called with every intermediate tensor (named as tests/fixtures/pixart-pipeline): input_ids,
 * attention_mask (I64 data passed as floats), prompt_embeds, prompt_attention_mask,
 * negative_prompt_embeds, negative_prompt_attention_mask, timesteps, sigmas, latents.init,
 * resolution, aspect_ratio, model_output.{i}, noise_pred.{i}, latents.{i}, image_raw, image. */
typedef int (*pixartpipe_dump_fn)(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape);
typedef void (*pixartpipe_progress_fn)(void *ctx, int step, int steps);

typedef struct {
    const char *const *prompts;
    int n_prompts;             /* the batch B */
    const char *negative;      /* "" by default */
    int steps;                 /* 20 */
    double cfg;                /* 4.5; guidance iff > 1 */
    int height, width;         /* requested pixels; 0 = transformer sample_size x VAE factor */
    int max_sequence_length;   /* T5 tokens, 120 */
    int resolution_binning;    /* 1 (diffusers' use_resolution_binning=True) */
    const char *scheduler;     /* NULL or "default": the folder's; "euler", "dpm++": from_config (sched.h) */
    const float *latents;      /* [B, C, Hb/f, Wb/f] initial latents, or NULL (seeded noise) */
    uint64_t seed;
    pixartpipe_dump_fn dump;
    void *dump_ctx;
    pixartpipe_progress_fn progress;
    void *progress_ctx;
} pixartpipe_params;

void pixartpipe_params_default(pixartpipe_params *p);
int pixartpipe_load(pixartpipe **out, const char *dir);
/* PIXARTPIPE_DEFER_TRANSFORMER: transformer/config.json only; the weights with
 * pixartpipe_load_transformer (encode, release the encoder, load, denoise: T5-XXL alone is ~19 GB). */
#define PIXARTPIPE_DEFER_TRANSFORMER 1
int pixartpipe_load_opts(pixartpipe **out, const char *dir, int flags);
int pixartpipe_load_transformer(pixartpipe *p);
void pixartpipe_release_encoders(pixartpipe *p);
void pixartpipe_free(pixartpipe *p);
/* The output size H x W (requested or default) and the size the transformer runs at, Hb x Wb (the
 * bin, or H x W without binning; either may be NULL); errors say why a size is refused. */
int pixartpipe_image_size(const pixartpipe *p, const pixartpipe_params *q, int *H, int *W, int *Hb, int *Wb);
/* image [B, H, W, 3] in [0, 1]; init_latents (optional) receives the initial latents [B, C, Hb/f, Wb/f]
 * (before init_noise_sigma); sk: optional probe / intervention context. */
int pixartpipe_generate(const pixartpipe *p, const pixartpipe_params *q, float *image, float *init_latents, sink_ctx *sk);
/* The halves: S = q->max_sequence_length text tokens; ctx [BB, S, J], mask [BB, S] (1 keep, 0 pad)
 * with BB = 2B under guidance (uncond first). */
int pixartpipe_encode(const pixartpipe *p, const pixartpipe_params *q, float *ctx, float *mask);
/* The probe's key type (ss_tok) of every text token, [BB, S] in ctx's order (T5's types). */
int pixartpipe_text_types(const pixartpipe *p, const pixartpipe_params *q, uint8_t *types);
/* How many of the prompts T5 truncates to max_sequence_length tokens (diffusers warns about them). */
int pixartpipe_truncated(const pixartpipe *p, const pixartpipe_params *q);
int pixartpipe_denoise(const pixartpipe *p, const pixartpipe_params *q, const float *ctx, const float *mask, float *image,
                       float *init_latents, sink_ctx *sk);
/* Python's str.lower().strip() of a prompt (UTF-8, malloc'ed into *out). */
int pixartpipe_preprocess(const char *text, char **out);

#endif
