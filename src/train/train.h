/* train: trains a pixel-space SD3-architecture transformer (diffusers' SD3Transformer2DModel) and
 * its tiny word-embedding text encoder jointly, by rectified flow, on a procedural data set.
 *
 *   tr_opts o; tr_opts_default(&o); o.steps = 30000;
 *   tr_arch a; tr_arch_default(&a);                 // 32x32 RGB, patch 4, D = 128, 6 layers ...
 *   tr_data d = tr_data_toy();                      // or a ShapeWorld callback (train_data.c)
 *   tr_trainer *t; tr_trainer_new(&t, &a, &o, &d);  // or tr_trainer_resume(&t, "OUT/checkpoint.safetensors", ...)
 *   tr_trainer_run(t, "OUT");                       // logs to stderr, checkpoints, writes the model
 *   tr_trainer_free(t);
 *
 * Objective (SD3, dit-spec 6.4): x0 = image in [-1, 1] (channel-major), eps ~ N(0, I),
 * sigma = sigmoid(n), n ~ N(0, 1) (logit-normal), x = sigma*eps + (1 - sigma)*x0, the model gets
 * t = 1000*sigma and the caption's embeddings (the empty caption with probability cfg_drop, for
 * classifier-free guidance); loss = mean((v - (eps - x0))^2) over all pixels and channels.
 *
 * Restrictions: qk_norm none or rms_norm; image size = sample_size, in_channels = out_channels;
 * the position table is the frozen 2D sin-cos table. Dual-attention (SD3.5 attn2) blocks are
 * trained like the others (sd3_config.dual; the checkpoint's arch names them only when there are
 * any, so other checkpoints keep their bytes).
 *
 * Randomness is counter-based (core/rng.h, Philox): sample i of the stream (i counts samples
 * since step 0) takes data index i, its noise, timestep and caption dropout from fixed streams
 * of the run's seed at counter i. So the only RNG state is the sample counter, a checkpoint
 * holds it, and a resumed run continues bit for bit (same thread count).
 */
#ifndef SS_TRAIN_H
#define SS_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "models/sd3.h"
#include "text/encoder.h"

/* ---- data ---- */

/* Writes sample `index` of a data set: rgb = H*W*3 bytes, row-major [y][x][c]; caption = a
 * NUL-terminated prompt of at most cap bytes. Returns 0 or a negative error (ss_fail).
 * Must be reentrant when tr_data.parallel is set (it is then called from several threads). */
typedef int (*train_sample_fn)(void *ctx, uint64_t index, uint8_t *rgb, char *caption, size_t cap);

typedef struct {
    train_sample_fn fn;
    void *ctx;
    const char *const *words; /* NULL-terminated vocabulary of every caption word */
    int width, height;        /* image size the generator draws (must equal sample_size) */
    int parallel;
    const char *name;         /* recorded in checkpoints; resume checks it */
} tr_data;

/* Colored squares on gray ("a photo of a red square left of a blue square"), any size >= 8:
 * for tests and smoke runs. */
tr_data tr_data_toy(int size);
/* ShapeWorld (eval/shapeworld.h) when it is compiled in; returns -1 (error set) otherwise. */
int tr_data_shapeworld(tr_data *out, int size, uint64_t seed);

/* ---- architecture ---- */

typedef struct {
    sd3_config sd3; /* in = out channels, sample_size, patch, layers, heads, head_dim, qk_norm ... */
    te_config te;   /* vocab_size is set from the data's words; max_length = text tokens */
} tr_arch;

/* The recommended embedded model: 32x32 RGB, patch 4 (64 image tokens), D = 128 (2 heads x 64),
 * 6 layers, 16 text tokens of width 64, no qk_norm: 3.5M parameters (13.9 MB in fp32). On the
 * 2-core reference machine it trains at ~140 samples/s, so the default 30000 steps of 32 take
 * about 2 hours. Patch 2 (256 tokens) costs 4.2x more per sample. */
void tr_arch_default(tr_arch *a);
/* Fills the derived fields (caption_projection_dim = D, pos_embed_max_size = sample/patch,
 * joint/pooled dims = text width) and checks the restrictions above. */
int tr_arch_check(tr_arch *a);

/* ---- parameters ---- */

typedef struct {
    char name[128]; /* diffusers name; text encoder tensors are "text_encoder.<name>" */
    int ndim;
    int64_t shape[4];
    size_t off, n; /* offset into the arenas, element count */
    int decay;     /* AdamW weight decay applies (matrices, not biases, norms or embeddings) */
} tr_tensor;

typedef struct tr_model {
    sd3_config cfg;
    te_config tcfg;
    int D;
    int nt;
    tr_tensor *t;
    size_t n;                 /* floats in each arena */
    float *param, *grad;      /* the arenas (tensor i at t[i].off) */
    float *pos_table;         /* frozen [M*M, D] */
    sd3_model view;           /* sd3_model over param (sd3_forward works on it) */
    sd3_model gview;          /* the same over grad: sd3_backward's gradient view (models/sd3_bwd.h) */
    float *tok_emb, *pos_emb; /* text encoder tensors inside param */
} tr_model;

/* init: 0 = generic random (every tensor non-zero: gradient checks); 1 = training init
 * (xavier-uniform linears, zero biases, adaLN-Zero: modulation and proj_out weights zero). */
int tr_model_new(tr_model **out, const sd3_config *c, const te_config *tc, uint64_t seed, int init);
void tr_model_free(tr_model *m);
/* Gradient arena slot of a parameter pointer into m->param. */
static inline float *tr_grad_of(const tr_model *m, const float *p) { return m->grad + (p - m->param); }
int tr_model_find(const tr_model *m, const char *name); /* tensor index or -1 */

/* Writes a pipeline folder (sample/pipeline.h layout) with the weights in `weights` (an arena
 * laid out like m->param: the parameters or their EMA): model_index.json, transformer/,
 * text_encoder/, tokenizer/vocab.txt (from `vocab`), scheduler/scheduler_config.json (shift). */
int tr_model_save(const tr_model *m, const float *weights, const tok_vocab *vocab, double shift, const char *dir);
/* Crash safety of tr_model_save: DIR.tmp is written and fsynced (every file and folder), then
 * swapped with DIR atomically (renameat2 RENAME_EXCHANGE; where the file system lacks it, two
 * renames), the parent folder is fsynced and the old folder removed. A leftover DIR.tmp (or
 * DIR.old) of an interrupted export is removed first. DIR is replaced as a whole. */
/* fsync the folder holding `path` (so a rename in it is durable). */
int tr_sync_parent(const char *path);

/* ---- forward / backward ---- */

typedef struct tr_ws tr_ws;
/* Work space for batches of up to B images of sample_size^2: the forward's sd3_workspace and
 * sd3_cache and the backward's sd3_bwd_ws (reused every step), and the text encoder's buffers. */
int tr_ws_new(tr_ws **out, const tr_model *m, int B);
void tr_ws_free(tr_ws *w);
size_t tr_ws_bytes(const tr_ws *w);
/* out [B, C, H, W] = velocity for x [B, C, H, W], raw timesteps t [B] in [0, 1000] and token
 * ids [B, S]: the text encoder (te_encode_ids) and the model's own forward, sd3_forward_cache,
 * which keeps the activations for tr_backward (out NULL: into the work space). */
int tr_forward(const tr_model *m, tr_ws *w, const float *x, const float *t, const int32_t *ids, int B, float *out);
/* m->grad += dL/dparam for dL/dout = dout, through the last tr_forward on w: the model's backward
 * (sd3_backward, into m->gview), then the text encoder's. */
int tr_backward(tr_model *m, tr_ws *w, const float *dout);
/* Backward of the text encoder (text/encoder.h: ehs[b,s] = tok[ids[b,s]] + pos[s], pooled[b] =
 * mean of tok[id] over the non-pad ids of row b): accumulates into dtok, dpos. */
void tr_embed_bwd(float *dtok, float *dpos, const float *dehs, const float *dpooled, const int32_t *ids, int B, int S,
                  int J);
/* Flow-matching loss of one batch and (grads zeroed first) its gradient; sigma [B] in (0, 1).
 * Returns the loss, or a negative number on error. */
double tr_loss_grad(tr_model *m, tr_ws *w, const float *x0, const float *noise, const float *sigma,
                    const int32_t *ids, int B, int want_grad);
/* Floating-point operations of one training step (forward + backward ~ 3 forwards). */
double tr_step_flops(const tr_model *m, int B);

/* ---- training ---- */

enum { TR_SCHED_CONSTANT, TR_SCHED_COSINE };

typedef struct {
    long steps;          /* total optimizer steps */
    int batch;
    double lr, min_lr;   /* peak and final learning rate (cosine) */
    long warmup;         /* linear warm-up steps */
    int schedule;        /* TR_SCHED_* (after warm-up) */
    double beta1, beta2, eps, weight_decay, clip; /* clip: global grad-norm limit, 0 = off */
    double ema_decay;    /* EMA of the weights (warmed up as min(decay, (1+s)/(10+s))) */
    double cfg_drop;     /* probability of the empty caption */
    double logit_mean, logit_std; /* sigma = sigmoid(N(mean, std^2)) */
    double sample_shift; /* written to scheduler_config.json */
    uint64_t seed;
    long log_every, save_every; /* 0 = never */
    int init;            /* tr_model_new init (1) */
} tr_opts;

void tr_opts_default(tr_opts *o);

typedef struct tr_trainer {
    tr_arch arch;
    tr_opts opts;
    tr_data data;
    tr_model *m;
    tr_ws *w;
    tok_vocab *vocab;
    float *ema, *adam_m, *adam_v; /* arenas like m->param */
    long step;
    uint64_t samples;             /* samples drawn so far (the RNG counter) */
    double loss_ema, last_loss, last_gnorm;
    float *x0, *noise, *sigma;
    int32_t *ids;
    int32_t *empty_ids;
    double wall;                  /* seconds spent in steps (this process) */
    long saved_step;              /* step of the checkpoint on disk (-1: none yet); set by resume and tr_trainer_run */
    long exported_step;           /* step of the model folder this process wrote (-1: none) */
    volatile int *stop;           /* set (e.g. by a signal handler) to end tr_trainer_run early */
} tr_trainer;

int tr_trainer_new(tr_trainer **out, const tr_arch *a, const tr_opts *o, const tr_data *d);
/* Resumes from a checkpoint file written by tr_trainer_save. Architecture and optimizer
 * settings come from the checkpoint; `steps`, `log_every` and `save_every` of `o` (when o is not
 * NULL) replace the saved ones. The data set must have the same name and vocabulary. */
int tr_trainer_resume(tr_trainer **out, const char *path, const tr_opts *o, const tr_data *d);
/* Reads a checkpoint's architecture, options and data-set name (any output may be NULL). */
int tr_checkpoint_info(const char *path, tr_arch *a, tr_opts *o, char *data_name, size_t cap);
void tr_trainer_free(tr_trainer *t);
/* One optimizer step. */
int tr_trainer_step(tr_trainer *t);
/* Steps until opts.steps, logging every log_every steps (stderr), checkpointing every
 * save_every steps and at the end to DIR/checkpoint.safetensors, and writing the EMA model
 * folder to DIR/model at every checkpoint (checkpoint first, then the model: a crash between
 * the two leaves a model older than the checkpoint, which the next run's end replaces).
 * Every run that reaches opts.steps ends with DIR/checkpoint.safetensors at the final step and
 * DIR/model exported from it in this process: also with steps 0 (the initial model) and when
 * a resumed run had nothing left to train (a missing, stale or half-written DIR/model is
 * rewritten). Returns 0 when opts.steps is reached, 1 when *stop ended it early (the state is
 * checkpointed and exported first), or a negative error. */
int tr_trainer_run(tr_trainer *t, const char *dir);
/* Checkpoint: parameters, EMA, Adam moments, step, sample counter, configs, vocabulary
 * (one safetensors file, written by the one atomic writer: io/fsutil.h). */
int tr_trainer_save(const tr_trainer *t, const char *path);
/* Learning rate at step s (0-based). */
double tr_lr_at(const tr_opts *o, long s);
/* Measures this machine's sgemm rate (GFLOP/s) on an n x n x n product for about `seconds`. */
double tr_sgemm_gflops(int n, double seconds);

#endif
