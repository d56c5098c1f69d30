/* pipeline: text-to-image sampling with a pixel-space SD3-architecture transformer (the
 * ShapeWorld model), laid out like a diffusers pipeline folder.
 *
 *   pipeline *pp; if (pipe_load(&pp, "models/shapeworld") < 0) die(ss_err());
 *   pipe_params p; pipe_params_default(&p); p.prompt = "a photo of a red circle"; p.seed = 7;
 *   int H, W; pipe_image_size(pp, &p, &H, &W);
 *   uint8_t *rgb = malloc(3 * H * W);
 *   pipe_generate(pp, &p, rgb, NULL, NULL);       // or a sink_ctx to probe / intervene
 *   pipe_free(pp);
 *
 * Folder layout (every path below is relative to the pipeline folder):
 *   model_index.json
 *       {"_class_name": "SinkscopePixelPipeline",
 *        "transformer":  ["diffusers", "SD3Transformer2DModel"],
 *        "text_encoder": ["sinkscope", "WordEmbeddingTextEncoder"],
 *        "tokenizer":    ["sinkscope", "WordTokenizer"],
 *        "scheduler":    ["diffusers", "FlowMatchEulerDiscreteScheduler"],
 *        "vae": null}
 *     Keys starting with '_' (e.g. "_sinkscope_version") are metadata and ignored; any other
 *     key, a different class, or a non-null "vae" is an error.
 *   transformer/config.json + diffusion_pytorch_model*.safetensors     (sd3_load)
 *   text_encoder/config.json + text_encoder/model.safetensors          (te_load, see encoder.h)
 *   tokenizer/vocab.txt                                                (tok_vocab_load)
 *   scheduler/scheduler_config.json                                    (fm_config_load)
 * Consistency checked at load: in_channels == out_channels == 3 (RGB, no VAE), text encoder
 * hidden_size == joint_attention_dim, pooled_size == pooled_projection_dim, and the default image
 * (sample_size x sample_size pixels) fits the patch grid.
 *
 * Sampling (pipe_generate), following diffusers' StableDiffusion3Pipeline in pixel space:
 *   - the sample is the image itself, [3, H, W] in [-1, 1]; initial noise is
 *     rng_normal_fill(x, 3*H*W, seed, stream 0) (Philox4x32-10 + Box-Muller, core/rng.h), laid
 *     out channel-major [c][y][x], so it depends on nothing but (seed, H, W);
 *   - prompt embeddings from te_encode(prompt); the unconditional ones from te_encode("");
 *   - classifier-free guidance when cfg > 1: one forward of batch 2 = concat([uncond, cond])
 *     (latents, embeddings, pooled and timestep alike), v = v_u + cfg * (v_c - v_u) in fp32;
 *     cfg <= 1: a batch-1 conditional forward and v = v_c;
 *   - FlowMatch Euler scheduler from scheduler_config.json (shift etc.; with
 *     use_dynamic_shifting, mu = calculate_shift(number of image tokens));
 *     the model gets the raw scheduler timestep in [0, 1000];
 *   - decode: rgb = round_half_even(clamp(x/2 + 0.5, 0, 1) * 255), row-major [y][x][c] uint8
 *     (what diffusers' image processor does; pipe_decode maps NaN to 0);
 *   - a NaN or infinity is an error, never an image: sd3_forward refuses non-finite inputs and
 *     activations (naming the block and stage), and the sample is checked after each step; the
 *     error names the denoising step ("generate: denoising step i of n: ...").
 * Defaults: 20 steps, cfg 4.0 (diffusers' SD3 uses 28 / 7.0 for 1024^2 latents; the tiny
 * ShapeWorld model samples well with fewer steps and milder guidance), image sample_size^2.
 *
 * Sink context: before step i the pipeline calls sink_ctx_set_step(sk, i, tfrac) with
 *   tfrac = i / (steps - 1)   (0 = first, noisiest step; 1 = last step; 0 when steps == 1)
 * so a condition's "steps": [a, b] window selects steps with a <= tfrac <= b. With CFG the
 * hooks see batch 2 (element 0 unconditional, 1 conditional) and act on both. After sampling
 * the context is reset to "not sampling" (step 0, tfrac -1); its records are kept.
 *
 * Determinism: the same folder, parameters and condition give bit-identical samples whatever
 * the OpenMP thread count (the noise is counter-based and the engine's reductions do not
 * depend on the thread count; tests/test_pipeline.c checks 1 vs 2 threads).
 */
#ifndef SS_PIPELINE_H
#define SS_PIPELINE_H

#include <stdint.h>

#include "models/sd3.h"
#include "sample/flowmatch.h"
#include "sink/sink.h"
#include "text/encoder.h"

#ifndef SINKSCOPE_VERSION
#define SINKSCOPE_VERSION "0.1.0"
#endif

#define PIPE_CLASS_NAME "SinkscopePixelPipeline"
#define PIPE_CHANNELS 3
#define PIPE_DEFAULT_STEPS 20
#define PIPE_DEFAULT_CFG 4.0
#define PIPE_MAX_STEPS 10000

typedef struct pipeline {
    char *dir;          /* the folder it was loaded from */
    sd3_model *transformer;
    te *text_encoder;   /* owns the tokenizer vocabulary */
    fm_config scheduler;
} pipeline;

/* Called after each denoising step: step in [0, steps), sample [3, H, W] after that step. */
typedef void (*pipe_progress_fn)(void *ctx, int step, int steps, const float *sample);

typedef struct {
    const char *prompt;   /* required; words must be in the tokenizer's vocabulary */
    uint64_t seed;
    int steps;            /* >= 1 */
    double cfg;           /* guidance scale; classifier-free guidance iff cfg > 1 */
    int height, width;    /* pixels; 0 = the transformer's sample_size */
    pipe_progress_fn progress; /* optional */
    void *progress_ctx;
    const float *latents;  /* optional initial sample [3, H, W] instead of the seeded noise */
    float *latents_out;    /* optional: receives the initial sample [3, H, W] */
} pipe_params;

/* prompt NULL, seed 0, PIPE_DEFAULT_STEPS, PIPE_DEFAULT_CFG, model-default size, no progress. */
void pipe_params_default(pipe_params *p);

/* Loads and validates a pipeline folder; errors name the file at fault. */
int pipe_load(pipeline **out, const char *dir);
void pipe_free(pipeline *pp);

/* Resolves p->height/width (0 = default) and checks them: positive multiples of the patch size
 * whose patch grid fits pos_embed_max_size. */
int pipe_image_size(const pipeline *pp, const pipe_params *p, int *H, int *W);

/* Runs the sampler. rgb_out: [H, W, 3] uint8 (see pipe_image_size); sk: optional probe /
 * intervention context; final_sample: optional [3, H, W] fp32 copy of the last sample. */
int pipe_generate(const pipeline *pp, const pipe_params *p, uint8_t *rgb_out, sink_ctx *sk, float *final_sample);

/* pipe_generate with the transformer's working memory in ws (a caller that makes many images, one
 * workspace per thread; grown once if this image needs more). ws NULL: the call makes its own.
 * Either way the workspace is allocated once per call at most, never per denoising step. */
int pipe_generate_ws(const pipeline *pp, const pipe_params *p, uint8_t *rgb_out, sink_ctx *sk, float *final_sample,
                     sd3_workspace *ws);

/* The decode step on its own: rgb [H, W, 3] from sample [3, H, W]. */
void pipe_decode(uint8_t *rgb, const float *sample, int H, int W);

/* Writes a random-weight pipeline folder (F32 weights): model_index.json, the transformer from
 * sd3_init_random(tcfg, seed), the text encoder from te_init_random(tecfg, seed) with the vocabulary
 * "<pad>", "<eos>", words... (NULL-terminated), and a scheduler config with shift 3.0 (SD3's).
 * tecfg->vocab_size may be 0 (taken from the words); otherwise it must match them. The
 * configurations must be consistent as pipe_load checks. */
int pipe_init_random(const char *dir, const sd3_config *tcfg, const te_config *tecfg, const char *const *words,
                     uint64_t seed);

/* Writes a model_index.json for this pipeline class (via a .tmp file and rename). */
int pipe_write_index(const char *dir);

#endif
