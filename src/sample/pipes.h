/* pipes: every text-to-image pipeline class behind one interface, chosen by a pipeline folder's
 * model_index.json `_class_name` (like models/family.h for transformers, or a ggml backend).
 *
 *   ss_pipe *p;
 *   if (ss_pipe_open(&p, "stable-diffusion-3-medium-diffusers", SS_PREC_F32, 0) < 0) die(ss_err());
 *   ss_pipe_params q; ss_pipe_params_default(&q, p->kind);
 *   q.prompt = "a photo of a cat"; q.seed = 7;
 *   int H, W; p->kind->image_size(p->impl, &q, &H, &W);
 *   uint8_t *rgb = malloc(3 * H * W);
 *   p->kind->generate(p->impl, &q, rgb, sk, NULL);   // sk: optional probe / intervention context
 *   ss_pipe_close(p);
 *
 * Entries (ss_pipe_kinds, in this order): StableDiffusion3Pipeline (sample/sd3pipe.h),
 * FluxPipeline (sample/fluxpipe.h), PixArtAlphaPipeline (sample/pixartpipe.h; 'layers' and run's
 * block numbers name its self-attention self.i, cross.i by name), SinkscopePixelPipeline (the
 * ShapeWorld model, sample/pipeline.h). Each wraps its pipeline's own functions; the sampling loops stay there. A
 * new class is one more ss_pipe_kind and one more line in pipes.c's table.
 *
 * One image per call, batch 1: the prompt's starting noise is N(0, 1) from Philox stream 0 of the
 * seed in the pipeline's own latent layout (so `sinkscope generate` with the same prompt, seed and
 * options makes the same image), or q->latents when given. rgb is [H, W, 3] uint8 as `generate`
 * writes its PNG: SD3 and FLUX round(image * 255) of the VAE decode clamped to [0, 1], the pixel
 * pipeline pipe_decode. With classifier-free guidance the probe sees batch 2 (uncond first) and its
 * records' last batch element is the prompt's. A loaded pipeline is read-only while it generates:
 * several threads may call generate at once, each with its own sink_ctx and workspace.
 */
#ifndef SS_PIPES_H
#define SS_PIPES_H

#include <stddef.h>
#include <stdint.h>

#include "models/site.h"
#include "sink/sink.h"

#define SS_PIPE_MAX_SITES 512 /* sites of any entry (SD3: joint + attn2; FLUX: double + single) */

/* Called after each denoising step, step in [0, steps). */
typedef void (*ss_pipe_progress_fn)(void *ctx, int step, int steps);

/* The parameters every pipeline takes; 0 / NULL fields mean the pipeline's default. */
typedef struct {
    const char *prompt;        /* required */
    const char *negative;      /* the unconditional prompt of classifier-free guidance (SD3); NULL: "" */
    uint64_t seed;
    int steps;                 /* >= 1 */
    double cfg;                /* guidance: classifier-free (pixel, SD3; on when > 1), distilled (FLUX.1-dev) */
    int width, height;         /* pixels; 0: the folder's default */
    int max_sequence_length;   /* T5 tokens (SD3, FLUX); 0: the pipeline's default (256, 512) */
    const float *latents;      /* optional starting noise instead of the seeded one, the pipeline's layout */
    ss_pipe_progress_fn progress;
    void *progress_ctx;
} ss_pipe_params;

typedef struct ss_pipe_kind {
    const char *class_name;        /* model_index.json _class_name: "StableDiffusion3Pipeline" */
    const char *transformer_class; /* its transformer's diffusers class (condition errors name it) */
    ss_site_kind layer_kind;       /* what a condition's 'layers' and run's block numbers name: joint (SD3,
                                      pixel), double (FLUX) */
    int default_steps;
    double default_cfg;
    int tokenizer_types;           /* text key types come from real tokenizers (word, comma, eos, pad, bos,
                                      other), not the word tokenizer's layout (words, <eos>, <pad>) */
    int shapeworld;                /* its images are ShapeWorld scenes, which the exact ShapeWorld detector
                                      (eval/detect.h) scores against GenEval metadata; other pipelines' images
                                      would need GenEval's own object detector, which sinkscope does not have */
    /* Loads the folder (flags: SS_PIPE_* below), errors naming the folder and the component. */
    int (*load)(void **impl, const char *dir, int flags);
    void (*free)(void *impl);
    /* Resolves q->height/width (0: default) and checks them. */
    int (*image_size)(const void *impl, const ss_pipe_params *q, int *H, int *W);
    /* The attention sites at this image size and q's text length, at most cap into out; returns
     * their count. */
    int (*sites)(const void *impl, const ss_pipe_params *q, int H, int W, ss_site *out, int cap);
    /* The patch grid an absolute position embedding covers at this size (rows, cols); 0, 0 for
     * RoPE models (sink_condition_check_pe). */
    void (*pos_grid)(const void *impl, int H, int W, int *rows, int *cols);
    /* The ss_tok type of each of the S text tokens of q->prompt, in the order of the sites' text
     * key span, from the tokenizers (never positions); returns S, or < 0 (an unknown word, ...).
     * types may be NULL (just S); else cap >= S. */
    int (*text_types)(const void *impl, const ss_pipe_params *q, uint8_t *types, int cap);
    /* One image, rgb [H, W, 3]; ws: a workspace from ws_new (may be NULL). */
    int (*generate)(const void *impl, const ss_pipe_params *q, uint8_t *rgb, sink_ctx *sk, void *ws);
    /* Optional (NULL: generate needs no workspace): working memory reused across the images of one
     * caller thread, grown by generate as needed. */
    int (*ws_new)(void **ws);
    void (*ws_free)(void *ws);
    /* Optional, all or none (NULL for the pixel pipeline, whose tiny encoder runs inside generate):
     * the text encoders as a stage of their own, so that a caller can encode every text first, free
     * the encoders and only then load the transformer (SS_PIPE_DEFER_TRANSFORMER), and peak memory
     * is max(encoders, transformer) rather than their sum. */
    int uses_negative;             /* the unconditional half is a negative prompt's embeddings (SD3, PixArt:
                                      when q->cfg > 1); 0: no unconditional text (FLUX) */
    /* The embeddings of one text at q's settings: rows x cols sequence floats, then extra floats (SD3,
     * FLUX: the pooled vector; PixArt: the attention mask of the rows); 0 or an error. */
    int (*text_dims)(const void *impl, const ss_pipe_params *q, int *rows, int *cols, int *extra);
    /* One text through the encoders at q's settings (batch 1, as generate encodes each text), into
     * emb [rows * cols + extra]. */
    int (*encode_text)(const void *impl, const ss_pipe_params *q, const char *text, float *emb);
    void (*release_encoders)(void *impl);
    int (*load_transformer)(void *impl);
    /* generate from embeddings: cond those of q->prompt, uncond those of the negative prompt (used when
     * uses_negative and q->cfg > 1, else may be NULL); the same image as generate. */
    int (*generate_emb)(const void *impl, const ss_pipe_params *q, const float *cond, const float *uncond, uint8_t *rgb,
                        sink_ctx *sk, void *ws);
} ss_pipe_kind;

/* The load flag of every kind with encode_text: read transformer/config.json only; the weights come
 * with ss_pipe_load_transformer. Kinds without encode_text ignore it. */
#define SS_PIPE_DEFER_TRANSFORMER 1

/* The table, NULL-terminated. */
extern const ss_pipe_kind *const ss_pipe_kinds[];
/* "StableDiffusion3Pipeline, FluxPipeline, PixArtAlphaPipeline, SinkscopePixelPipeline": the table's classes in order,
 * into buf (returns buf). */
const char *ss_pipe_class_list(char *buf, size_t cap);

/* The entry of a class name, or NULL. */
const ss_pipe_kind *ss_pipe_find(const char *class_name);
/* The entry of DIR/model_index.json's `_class_name`. A class not in the table is an error naming
 * the file, the class and the known ones. A file that cannot be read or parsed, or has no string
 * `_class_name`, gives the pixel pipeline, whose loader then reports what is wrong (as before the
 * table existed). */
int ss_pipe_detect(const char *dir, const ss_pipe_kind **out);

/* A loaded pipeline. */
typedef struct {
    const ss_pipe_kind *kind;
    void *impl;
} ss_pipe;

/* Detects and loads DIR with the transformer's Linear weights in `precision` (SS_PREC_F32 or
 * SS_PREC_BF16, nn/dnnl.h; the caller thread's binder setting is restored after); flags are the
 * kind's load flags. */
int ss_pipe_open(ss_pipe **out, const char *dir, int precision, int flags);
void ss_pipe_close(ss_pipe *p);
/* The transformer of a pipeline opened with SS_PIPE_DEFER_TRANSFORMER, in `precision` (as ss_pipe_open);
 * 0 when it is loaded already or the kind has no encoder stage. */
int ss_pipe_load_transformer(ss_pipe *p, int precision);

/* Zero, then the kind's default steps and cfg (kind NULL: 0). */
void ss_pipe_params_default(ss_pipe_params *q, const ss_pipe_kind *kind);

/* The number of blocks of the kind's layer_kind among sites (the depth the protocol's early,
 * middle and late blocks come from). */
int ss_pipe_layer_count(const ss_pipe_kind *kind, const ss_site *sites, int n_sites);

#endif
