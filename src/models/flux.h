/* flux: diffusers' FluxTransformer2DModel (FLUX.1-dev, FLUX.1-schnell), fp32 compute.
 *
 * The model is a plain struct like sd3_model: the config plus pointers to each weight. F32
 * weights point into the mmapped safetensors files (no copy); F16/BF16 weights are converted once
 * into one fp32 arena and the files are unmapped, so a BF16 checkpoint costs its fp32 size.
 *
 *   flux_model *m; if (flux_load(&m, "path/to/transformer") < 0) die(ss_err());
 *   flux_forward(m, out, hs, ctx, pooled, t, guidance, img_ids, txt_ids, B, N, S, NULL);
 *   flux_free(m);
 *
 * Token order is TEXT FIRST (docs/dit-spec.md section 3): in both the double-stream joint
 * attention and the single-stream blocks, token j in [0, S) is text token j and j in [S, S+N)
 * is image token j-S. The two streams are concatenated once, before the first single block, and
 * split after the last one (diffusers 0.32.1).
 */
#ifndef SS_FLUX_H
#define SS_FLUX_H

#include <stdint.h>

#include "nn/attn.h"
#include "nn/ops.h"
#include "models/site.h"

#define FLUX_MAX_LAYERS SS_SITE_MAX_BLOCKS /* double and single blocks each */
#define FLUX_MAX_AXES 8

typedef struct {
    int patch_size, in_channels, out_channels;
    int num_layers, num_single_layers, head_dim, num_heads;
    int joint_attention_dim, pooled_projection_dim;
    int guidance_embeds;             /* 1: FLUX.1-dev's guidance embedder */
    int n_axes;                      /* len(axes_dims_rope): the width of img_ids / txt_ids */
    int axes_dims[FLUX_MAX_AXES];    /* even, summing to head_dim */
} flux_config;

typedef struct {
    ss_linear norm1, norm1_ctx;                  /* [6D, D] each */
    ss_linear q, k, v, add_q, add_k, add_v, out, add_out;
    const float *norm_q, *norm_k, *norm_added_q, *norm_added_k; /* [dh] */
    ss_linear ff1, ff2, cff1, cff2;              /* [4D, D], [D, 4D] */
} flux_double;

typedef struct {
    ss_linear norm;                              /* [3D, D] */
    ss_linear q, k, v;
    const float *norm_q, *norm_k;
    ss_linear mlp;                               /* [4D, D] */
    ss_linear out;                               /* [D, 5D]: attention (D) then MLP (4D) */
} flux_single;

typedef struct flux_model {
    flux_config cfg;
    int D;
    ss_linear x_embed, ctx_embed;
    ss_linear t1, t2, g1, g2, p1, p2;            /* g*.w == NULL without guidance_embeds */
    ss_linear norm_out, proj_out;
    flux_double *dbl;
    flux_single *sgl;
    void *files;  /* st_set *, kept while F32 weights point into it */
    float *arena; /* converted weights */
    int precision; /* SS_PREC_F32 or SS_PREC_BF16 (nn/dnnl.h): the load's; attention runs in it too */
} flux_model;

/* Parse a diffusers config.json (_class_name FluxTransformer2DModel); errors name the file and
 * field. Absent fields take diffusers' class defaults. */
int flux_config_load(flux_config *cfg, const char *path);
/* Range and consistency checks (axes_dims_rope even and summing to attention_head_dim, ...). */
int flux_config_check(const flux_config *cfg, const char *where);
/* Load a transformer folder (config.json + diffusion_pytorch_model*.safetensors, single or
 * sharded). Every expected tensor is checked for presence, dtype and shape before anything is
 * bound; errors name the file and the tensor. */
int flux_load(flux_model **out, const char *dir);
void flux_free(flux_model *m);
/* Every tensor the config implies, name and shape, in load order (random init, tests). */
int flux_enumerate_tensors(const flux_config *cfg, void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape),
                           void *ctx);
/* config.json for cfg (diffusers' field names, _class_name FluxTransformer2DModel). */
int flux_config_save(const flux_config *cfg, const char *path);
/* A random-weight model folder (benchmarks, tests): config.json and one safetensors file with the
 * weights stored as dtype (ST_F32, ST_F16 or ST_BF16); fan-in scaled uniform weights, RMSNorm
 * gains near 1. Deterministic in seed. */
/* The forward pass's floating-point operations for B x (N packed image + S text) tokens. */
double flux_forward_flops(const flux_config *c, int B, int N, int S);
int flux_init_random(const flux_config *cfg, const char *dir, uint64_t seed, int dtype);

/* The sites: double.0 .. double.{L-1} (flat 0..L-1), then single.0 .. single.{Ls-1} (flat L..).
 * Queries and keys of every site: {text [0, S), image [S, S+N)}; n_axes position axes. */
int flux_sites(const flux_config *c, int N, int S, ss_site *out, int cap);

/* Callbacks (all optional); `attention` and `block_output` have sd3_hooks' signatures, so the
 * sink probe's hooks (sink_ctx_hooks) plug in field by field. */
typedef struct {
    void *ctx;
    /* Replaces attn_forward at every site; `a` has the site's query spans (text, image). */
    int (*attention)(void *ctx, const ss_site *site, const attn_args *a);
    /* The image stream [B, N, D] after double block `block`. */
    int (*block_output)(void *ctx, int block, const float *x, int B, int N, int D);
    /* The whole stream [B, T = S+N, D] (text first) after single block `block`. */
    int (*single_output)(void *ctx, int block, const float *x, int B, int T, int D);
    /* Sees each site's q and k (in a->q, a->k) after the QK RMSNorm: before RoPE (post = 0) and
     * after it (post = 1), both before the attention. */
    int (*rope_qk)(void *ctx, const ss_site *site, int post, const attn_args *a);
} flux_hooks;

/* out [B, N, p*p*Cout] (packed velocity). hs [B, N, Cin] packed latents, ctx [B, S, J],
 * pooled [B, P], t [B] = sigma (scaled by 1000 inside), guidance [B] (required iff
 * guidance_embeds, else ignored and may be NULL), img_ids [N, n_axes], txt_ids [S, n_axes].
 * NaN or infinity in the inputs or activations is an SS_EFORMAT error naming where; `out` is
 * then left unwritten. */
int flux_forward(const flux_model *m, float *out, const float *hs, const float *ctx, const float *pooled,
                 const float *t, const float *guidance, const float *img_ids, const float *txt_ids, int B, int N,
                 int S, const flux_hooks *hooks);
/* The same with the timestep already scaled: t1000 [B] = the scheduler's timesteps (sigma x 1000
 * in fp32), used as given. The pipeline passes timestep / 1000 and the model multiplies by 1000
 * again, in float64 for a float64 model, which gives back the fp32 timestep exactly; an fp32
 * t / 1000 * 1000 does not always (one ulp moves the outputs by ~1e-5). */
int flux_forward_t1000(const flux_model *m, float *out, const float *hs, const float *ctx, const float *pooled,
                       const float *t1000, const float *guidance, const float *img_ids, const float *txt_ids, int B,
                       int N, int S, const flux_hooks *hooks);

/* RoPE tables (FluxPosEmbed): for T positions with n_axes ids each, cos/sin [T, dh] with each
 * pair's value repeated twice (angles in fp64, rounded to fp32). */
void flux_rope_tables(float *cos_t, float *sin_t, const float *ids, int T, const flux_config *c);
/* x [M rows, ld stride] in place: rotate each head's interleaved pairs by the row's angles
 * (diffusers apply_rotary_emb, use_real, unbind_dim -1), in fp32. */
void flux_rope_apply(float *x, int ld, const float *cos_t, const float *sin_t, int M, int H, int dh);

#endif
