/* pixart: diffusers' PixArtTransformer2DModel (PixArt-alpha), fp32 compute.
 *
 * The model is a plain struct like flux_model: the config plus pointers to each weight (F32 in
 * place from the mapping, F16/BF16 converted once into one fp32 arena; models/binder.h).
 *
 *   pixart_model *m; if (pixart_load(&m, "path/to/transformer") < 0) die(ss_err());
 *   pixart_forward(m, out, hs, ctx, mask, t, res, ar, B, Hl, Wl, S, NULL);
 *   pixart_free(m);
 *
 * Architecture (docs/dit-spec.md section 5; diffusers 0.32.1 pixart_transformer_2d.py,
 * BasicTransformerBlock with norm_type "ada_norm_single"): patch embedding + a 2D sin-cos table
 * recomputed for the actual grid (base size sample_size / patch_size, the interpolation scale);
 * adaLN-single conditioning (timestep, plus resolution and aspect ratio when the model uses
 * additional conditions); per block an image self-attention (site self.i, N x N, no mask) and a
 * cross-attention from the raw image stream to the projected caption (site cross.i, N x S, the
 * caption's key mask); output [B, out_channels, Hl, Wl] (PixArt-alpha: 8 = noise + variance).
 *
 * The mask: diffusers adds (1 - m) * -10000 to the cross-attention logits; here masked keys get
 * weight exactly 0 (the same in fp32 and fp64, where exp(-10000) underflows to 0). A batch element
 * whose caption keys are all masked is an error (diffusers would attend uniformly to padding).
 */
#ifndef SS_PIXART_H
#define SS_PIXART_H

#include <stdint.h>

#include "nn/attn.h"
#include "nn/ops.h"
#include "models/site.h"

#define PIXART_MAX_LAYERS SS_SITE_MAX_BLOCKS

typedef struct {
    int num_heads, head_dim, in_channels, out_channels, num_layers;
    int cross_attention_dim;        /* 0: null (no attn2, no cross sites) */
    int attention_bias;             /* q/k/v biases (to_out always has one) */
    int sample_size, patch_size;
    int act;                        /* FF activation: OP_ACT_GELU_TANH ("gelu-approximate") or OP_ACT_GELU */
    int norm_elementwise_affine;    /* norm1/norm2 weight and bias */
    float norm_eps;                 /* norm1/norm2 (norm_out: 1e-6) */
    double interpolation_scale;     /* resolved: null -> max(sample_size // 64, 1) */
    int use_additional_conditions;  /* resolved: null -> sample_size == 128 */
    int caption_channels;           /* 0: null (no caption projection; context width cross_attention_dim) */
} pixart_config;

typedef struct {
    const float *sst;               /* scale_shift_table [6, D] */
    const float *n1w, *n1b, *n2w, *n2b; /* [D] with norm_elementwise_affine, else NULL */
    ss_linear q, k, v, out;         /* attn1 */
    ss_linear q2, k2, v2, out2;     /* attn2 (w NULL without cross_attention_dim) */
    ss_linear ff1, ff2;             /* [4D, D], [D, 4D] */
} pixart_block;

typedef struct pixart_model {
    pixart_config cfg;
    int D;
    ss_linear patch;                /* conv as a linear over (c, py, px) patch vectors: [D, Cin*p*p] */
    ss_linear cap1, cap2;           /* caption projection (w NULL without caption_channels) */
    ss_linear t1, t2;               /* timestep embedder */
    ss_linear r1, r2, a1, a2;       /* resolution / aspect-ratio embedders [D/3, 256], [D/3, D/3] */
    ss_linear adaln;                /* [6D, D] */
    const float *sst_out;           /* final scale_shift_table [2, D] */
    ss_linear proj_out;             /* [p*p*Cout, D] */
    pixart_block *blocks;
    void *files;  /* st_set *, kept while F32 weights point into it */
    float *arena; /* converted weights */
    int precision; /* SS_PREC_F32 or SS_PREC_BF16 (nn/dnnl.h): the load's; attention runs in it too */
} pixart_model;

/* Parse a diffusers config.json (_class_name PixArtTransformer2DModel); absent fields take the
 * class defaults, nulls resolve as diffusers resolves them; errors name the file and field. */
int pixart_config_load(pixart_config *cfg, const char *path);
int pixart_config_check(const pixart_config *cfg, const char *where);
/* Write cfg as a diffusers config.json (nulls resolved: every field explicit). */
int pixart_config_save(const pixart_config *cfg, const char *path);
/* Calls fn for every tensor the config implies, with its diffusers name and shape. */
int pixart_enumerate_tensors(const pixart_config *cfg,
                             void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape), void *ctx);
/* A random-weight folder for cfg (models/init.h): DIR/config.json and the weights as dtype. */
int pixart_init_random(const pixart_config *cfg, const char *dir, uint64_t seed, int dtype);
/* Load a transformer folder (config.json + diffusion_pytorch_model*.safetensors, single or
 * sharded); every tensor checked (presence, shape from the config, F32/F16/BF16, finite). */
int pixart_load(pixart_model **out, const char *dir);
void pixart_free(pixart_model *m);

/* Sites: self.0 .. self.{L-1} (flat 0..L-1), then cross.0 .. cross.{L-1} (flat L..2L-1).
 * self: queries and keys {image [0, N)}; cross: queries {image [0, N)}, keys {text [0, S)}. */
int pixart_sites(const pixart_config *c, int N, int S, ss_site *out, int cap);

typedef struct {
    void *ctx;
    /* Replaces attn_forward at every site (self: a->Tk = 0; cross: a->Tk = S, a->key_valid). */
    int (*attention)(void *ctx, const ss_site *site, const attn_args *a);
    /* The image stream [B, N, D] after block `block`. */
    int (*block_output)(void *ctx, int block, const float *x, int B, int N, int D);
    /* The sin-cos table [h*w, D] of the actual grid before it is added (may edit it; NULL: none). */
    int (*pos_embed)(void *ctx, float *tab, int h, int w, int D);
} pixart_hooks;

/* out [B, Cout, Hl, Wl]. hs [B, Cin, Hl, Wl]; ctx [B, S, caption_channels (or
 * cross_attention_dim)]; mask [B, S] with values 0 or 1 (NULL: every key); t [B]; res [B, 2]
 * (height, width in pixels) and ar [B] (height / width), both required iff
 * use_additional_conditions and refused otherwise. Hl, Wl: positive multiples of the patch size.
 * Errors (SS_EARG / SS_ESHAPE / SS_EFORMAT) name the input; `out` is then left unwritten. */
int pixart_forward(const pixart_model *m, float *out, const float *hs, const float *ctx, const float *mask,
                   const float *t, const float *res, const float *ar, int B, int Hl, int Wl, int S,
                   const pixart_hooks *hooks);

/* The 2D sin-cos table [h*w, D] for an h x w patch grid (PatchEmbed: positions in fp32, angles
 * in fp64, stored fp32; channels [0, D/2) the column, [D/2, D) the row coordinate). */
void pixart_pos_table(float *tab, const pixart_config *c, int D, int h, int w);
/* Multiply-adds of one forward pass (for the benchmark's GFLOP/s). */
double pixart_forward_flops(const pixart_config *c, int B, int Hl, int Wl, int S);

#endif
