/* sd3: diffusers' SD3Transformer2DModel (SD3-medium, SD3.5-large, SD3.5-medium), fp32 compute.
 *
 * A model is a plain struct: the config plus pointers to each weight. F32 weights point into the
 * mmapped safetensors file (no copy); F16/BF16 weights are converted once into a single fp32
 * arena and the file is unmapped, so a BF16 checkpoint costs its fp32 size and no more.
 *
 *   sd3_model *m; if (sd3_load(&m, "path/to/transformer") < 0) die(ss_err());
 *   sd3_forward(m, out, latents, ctx, pooled, t, B, Hl, Wl, S, NULL);
 *   sd3_free(m);
 *
 * Repeated calls (a sampler's steps) pass a caller-owned workspace instead, created once:
 *   sd3_workspace *ws; if (sd3_workspace_new(&ws, m, B, Hl, Wl, S) < 0) die(ss_err());
 *   for (step...) sd3_forward_ws(m, ws, out, latents, ctx, pooled, t, B, Hl, Wl, S, hooks);
 *   sd3_workspace_free(ws);
 *
 * See docs/dit-spec.md section 2 for the architecture this follows.
 */
#ifndef SS_SD3_H
#define SS_SD3_H

#include <stddef.h>
#include <stdint.h>

#include "nn/attn.h"
#include "nn/ops.h"
#include "models/site.h"

#define SD3_MAX_LAYERS 256

typedef struct {
    int sample_size, patch_size, in_channels, out_channels;
    int num_layers, head_dim, num_heads;
    int joint_attention_dim, caption_projection_dim, pooled_projection_dim, pos_embed_max_size;
    int qk_norm;                       /* 0 none, 1 rms_norm */
    uint8_t dual[SD3_MAX_LAYERS];      /* dual_attention_layers membership */
} sd3_config;

typedef struct {
    int dual, last;
    ss_linear norm1, norm1_ctx;                 /* [6D|9D, D], [6D|2D, D] */
    ss_linear q, k, v, add_q, add_k, add_v;
    ss_linear out, add_out;                     /* add_out.w == NULL in the last block */
    const float *norm_q, *norm_k, *norm_added_q, *norm_added_k; /* [dh] or NULL */
    ss_linear q2, k2, v2, out2;                 /* attn2 (dual blocks) */
    const float *norm_q2, *norm_k2;
    ss_linear ff1, ff2, cff1, cff2;             /* cff*.w == NULL in the last block */
} sd3_block;

typedef struct sd3_model {
    sd3_config cfg;
    int D;
    const float *pos_table; /* [M*M, D] */
    ss_linear patch;        /* conv as a linear over (c, py, px) patch vectors: [D, C*p*p] */
    ss_linear t1, t2, p1, p2, ctx_embed, norm_out, proj_out;
    sd3_block *blocks;
    /* storage */
    void *files;  /* st_set *, kept while F32 weights point into it */
    float *arena; /* converted weights */
    int precision; /* SS_PREC_F32 or SS_PREC_BF16 (nn/dnnl.h): the load's; attention runs in it too */
} sd3_model;

/* Parse a diffusers config.json; errors name the file and field. */
int sd3_config_load(sd3_config *cfg, const char *path);
int sd3_config_save(const sd3_config *cfg, const char *path);
/* The checks sd3_config_load makes (field ranges, caption_projection_dim, dual layers), for a config
 * built in memory; `where` starts the error message. */
int sd3_config_check(const sd3_config *cfg, const char *where);
/* Calls fn for every tensor the config implies, with its diffusers name and shape. */
int sd3_enumerate_tensors(const sd3_config *cfg,
                          void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape), void *ctx);
/* A model whose weights live elsewhere (the trainer's parameter arena): sets m's config and
 * points every weight slot at lookup(ctx, name, ndim, shape) for each tensor sd3_enumerate_tensors
 * names (the same name table as sd3_load). m->blocks is calloc'ed (the caller frees it; m owns no
 * file or arena, so sd3_free does not apply). A NULL from lookup fails naming `where` and the
 * tensor. */
int sd3_bind_view(sd3_model *m, const sd3_config *c,
                  const float *(*lookup)(void *ctx, const char *name, int ndim, const int64_t *shape), void *ctx,
                  const char *where);
/* Load a transformer folder (config.json + diffusion_pytorch_model*.safetensors). Every expected
 * tensor is checked for presence, dtype and shape before anything is computed. */
int sd3_load(sd3_model **out, const char *dir);
void sd3_free(sd3_model *m);

/* The model's attention sites (models/site.h) for N image and S text tokens: joint.0 ..
 * joint.{L-1} (flat indices 0..L-1, so a joint site's flat index is its block), then attn2.i for
 * each dual block i in block order (flat indices L, L+1, ...). Joint: queries and keys
 * {image [0, N), text [N, N+S)}; attn2: queries and keys {image [0, N)}. No key mask, no
 * positions. Writes at most cap sites into out (may be NULL) and returns how many there are. */
int sd3_sites(const sd3_config *c, int N, int S, ss_site *out, int cap);

/* Callbacks the sink probe and interventions attach to. All optional. */
typedef struct {
    void *ctx;
    /* Replaces the plain attn_forward of every attention site (joint.i and attn2.i); `a` is laid
     * out as the site says (its query spans set in a->n_qspan / a->qend). */
    int (*attention)(void *ctx, const ss_site *site, const attn_args *a);
    /* Sees the image stream [B, N, D] after each block. */
    int (*block_output)(void *ctx, int block, const float *x, int B, int N, int D);
    /* The position table cropped for the actual grid, [h*w, D], before it is added (may edit it;
     * NULL: the crop is added straight from the model's table). */
    int (*pos_embed)(void *ctx, float *tab, int h, int w, int D);
} sd3_hooks;

/* out [B, Cout, Hl, Wl] = velocity prediction. x [B, Cin, Hl, Wl], ctx [B, S, J], pooled [B, P],
 * t [B] raw scheduler timesteps in [0, 1000]. Hl and Wl must be multiples of the patch size p,
 * Hl/p and Wl/p <= M. A NaN or infinity in the inputs, or appearing in the activations (after the
 * embeddings, each block's attention and output streams, the final layer), is an SS_EFORMAT error
 * naming the block, stage, batch element and token; `out` is then left unwritten. */
int sd3_forward(const sd3_model *m, float *out, const float *x, const float *ctx, const float *pooled,
                const float *t, int B, int Hl, int Wl, int S, const sd3_hooks *hooks);

/* The working memory of sd3_forward (activations of both streams, joint Q/K/V/O, FF hidden),
 * owned by the caller and reused across calls. Each buffer is sized, with overflow-checked
 * arithmetic, from everything a forward pass writes into it; a call that needs more than the
 * workspace holds grows only the buffers that are too small, so a sampler that creates it for its
 * (B, Hl, Wl, S) allocates once, not once per step. Not bound to one model (the sizes depend on
 * the model's width, patch size and channels), but one workspace serves one call at a time:
 * give each thread its own. It also holds the attention scratch (attn_args.scratch) of every site,
 * hooks included, and carries the attention key-chunk size of its calls. */
typedef struct sd3_workspace sd3_workspace;

/* A workspace sized for model m and batch B of Hl x Wl latents with S text tokens (the shape
 * checks of sd3_forward apply). m NULL: an empty workspace, sized by its first call. */
int sd3_workspace_new(sd3_workspace **out, const sd3_model *m, int B, int Hl, int Wl, int S);
/* Grows ws (never shrinks) so that a call with these sizes allocates nothing. */
int sd3_workspace_reserve(sd3_workspace *ws, const sd3_model *m, int B, int Hl, int Wl, int S);
void sd3_workspace_free(sd3_workspace *ws);
/* attn_args.key_chunk for every attention site of calls with ws (0: ATTN_KC, the default). */
void sd3_workspace_set_key_chunk(sd3_workspace *ws, int kc);
/* How many times ws was (re)allocated: creations and growths that allocated at least one buffer.
 * ws NULL: the count over every workspace of the process (sd3_forward's internal ones too). */
long sd3_workspace_allocs(const sd3_workspace *ws);
/* Bytes ws's activation buffers hold now (its attention scratch aside). */
size_t sd3_workspace_bytes(const sd3_workspace *ws);

/* sd3_forward with the caller's workspace (grown first if this call needs more). */
int sd3_forward_ws(const sd3_model *m, sd3_workspace *ws, float *out, const float *x, const float *ctx,
                   const float *pooled, const float *t, int B, int Hl, int Wl, int S, const sd3_hooks *hooks);

/* The activations a backward pass needs (llm.c's ActivationTensors), recorded by
 * sd3_forward_cache and owned by the caller. Arrays are row-major and batch-major, so a call with
 * fewer than B batch elements uses the front of each; T = N + S, F = 4D. Joint arrays hold each
 * batch element's N image rows, then its S text rows. */
typedef struct {
    float *modx, *modc;  /* norm1 / norm1_context outputs [B,6D] ([B,9D] in a dual block), [B,6D] ([B,2D] in the last block) */
    float *x_in, *c_in;  /* the streams entering the block [B,N,D], [B,S,D] */
    float *nx, *nc;      /* their modulated LayerNorms (the q/k/v inputs) */
    float *qr, *kr;      /* joint Q, K before the qk RMSNorm [B,T,D] (qk_norm only, else NULL) */
    float *q, *k, *v;    /* joint Q, K, V [B,T,D] */
    float *p;            /* attention probabilities [B,H,T,T] */
    float *o;            /* joint attention output [B,T,D] */
    float *ax, *ac;      /* to_out / to_add_out outputs [B,N,D], [B,S,D] */
    float *x_mid, *c_mid; /* the streams entering the feed-forwards (after the attention residuals: joint, then attn2) */
    float *nx2, *nc2;    /* the feed-forwards' modulated LayerNorms */
    float *hx, *hc;      /* ff / ff_context linear 1 outputs, before GELU [B,N,F], [B,S,F] */
    float *gx, *gc;      /* after GELU */
    float *fx, *fc;      /* linear 2 outputs [B,N,D], [B,S,D] */
    /* attn2 of a dual block (SD3.5; NULL in the others): image self-attention on its own modulated LN */
    float *n2;           /* LN(x_in)(1+scale2)+shift2 [B,N,D] (modx rows 7, 6), the q2/k2/v2 input */
    float *q2r, *k2r;    /* Q2, K2 before the qk RMSNorm [B,N,D] (qk_norm only, else NULL) */
    float *q2, *k2, *v2; /* [B,N,D] */
    float *p2;           /* attention probabilities [B,H,N,N] */
    float *o2;           /* attention output [B,N,D] */
    float *a2;           /* attn2.to_out output [B,N,D] (added with gate modx row 8) */
} sd3_block_cache;       /* text-stream entries past c_in are unused in the last block */

typedef struct {
    int B, N, S;                  /* the sizes it holds: up to B batch elements of N + S tokens */
    float *pv;                    /* patch vectors [B*N, Cin*p*p] */
    float *temb0;                 /* timestep sinusoid [B,256] */
    float *t_h, *t_s, *p_h, *p_s; /* timestep / text embedder linear_1 outputs and their SiLU [B,D] */
    float *temb, *stemb;          /* conditioning and its SiLU [B,D] */
    float *x_out, *modf, *nf;     /* final layer: its input stream [B,N,D], norm_out [B,2D], LN [B,N,D] */
    float *y;                     /* proj_out output [B*N, p*p*Cout] */
    sd3_block_cache *blocks;      /* [num_layers] */
    float *arena;                 /* storage of everything above */
    size_t floats;
} sd3_cache;

/* Image tokens N of an Hl x Wl latent, after sd3_forward's shape checks (errors as it gives). */
int sd3_image_tokens(const sd3_model *m, int B, int Hl, int Wl, int S, int *N);

/* A cache for up to B batch elements of Hl x Wl latents and S text tokens of model m (the shape
 * checks of sd3_forward apply), dual-attention (SD3.5 attn2) blocks included. */
int sd3_cache_new(sd3_cache **out, const sd3_model *m, int B, int Hl, int Wl, int S);
void sd3_cache_free(sd3_cache *c);

/* sd3_forward_ws that also records what a backward pass needs into `cache` (which must hold
 * B and these sizes). Attention then runs through the materialized reference
 * (attn_materialized_probs, scale 1/sqrt(head_dim)), which keeps the probabilities, instead
 * of the fused kernel (joint and attn2 sites); every other op and its order are those of
 * sd3_forward_ws. No hooks. */
int sd3_forward_cache(const sd3_model *m, sd3_workspace *ws, sd3_cache *cache, float *out, const float *x,
                      const float *ctx, const float *pooled, const float *t, int B, int Hl, int Wl, int S);

/* Write a random-weight model folder (config.json + diffusion_pytorch_model.safetensors) with
 * weights stored as `dtype` (an st_dtype: F32, F16 or BF16). The config is checked first
 * (sd3_config_check). */
int sd3_init_random(const sd3_config *cfg, const char *dir, uint64_t seed, int dtype);
/* The 2D sin-cos position table of dit-spec 2.6 over an M x M grid, [M*M, D]. D is meant to be a
 * multiple of 4 (diffusers requires it); the last D % 4 channels are 0 otherwise. */
void sd3_sincos_table(float *out, int M, int D, double base_size, double interp);

/* Floating-point operations of one forward pass (matrix products and attention). */
double sd3_forward_flops(const sd3_config *c, int B, int Hl, int Wl, int S);

#endif
