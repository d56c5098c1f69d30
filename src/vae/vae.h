/* vae: diffusers' AutoencoderKL (SD3/FLUX 16-channel, SDXL/PixArt 4-channel), fp32, encoder and
 * decoder as diffusers 0.32.1 runs them (no tiling, no slicing).
 *
 *   vae_model *v; if (vae_load(&v, "pipeline/vae") < 0) die(ss_err());
 *   vae_decode(v, img, z, B, h, w, NULL);   // img [B, out_channels, h*f, w*f], f = vae_factor(v)
 *   vae_free(v);
 *
 * Encoder: conv_in (3x3); per down block layers_per_block ResnetBlock2D and, except the last, a
 * Downsample2D (F.pad(x, (0, 1, 0, 1)) then a 3x3 stride-2 conv); the mid block (resnet,
 * attention, resnet); GroupNorm + SiLU; conv_out to 2 x latent_channels (double_z); quant_conv
 * (1x1) when use_quant_conv. Decoder: post_quant_conv (1x1) when use_post_quant_conv; conv_in;
 * mid block; per up block layers_per_block + 1 resnets and, except the last, an Upsample2D
 * (nearest 2x, 3x3 conv); GroupNorm + SiLU; conv_out.
 * ResnetBlock2D: x + conv2(silu(gn2(conv1(silu(gn1(x)))))) (conv_shortcut 1x1 on x when the
 * channels change), eps 1e-6, output_scale_factor 1. Mid-block attention: one head of dim C over
 * the H*W tokens, group norm (eps 1e-6) before to_q/to_k/to_v, to_out.0, residual added,
 * rescale_output_factor 1; it runs on the fused kernel (nn/attn.h, attn_forward, dh = C).
 * Convolutions: nn/dnnl_conv.h ss_dnnl_conv2d (oneDNN's f32 direct convolution in fixed row
 * bands of one-thread primitives; weights reordered once per layer, dropped by vae_free), falling
 * back to nn/conv.h op_conv2d_tiled (im2col per column tile + sgemm) where oneDNN has none;
 * both thread-count independent. Memory: three activation buffers of the largest C x H x W of
 * the pass plus the per-thread bands or tiles and the reordered weight copies (as large as the
 * conv weights); the attention needs 5 more [H*W, C] arrays at the latent resolution.
 *
 * Pipelines' scaling (vae_unscale / vae_scale): decode(z / scaling_factor + shift_factor) and
 * encode -> (mean - shift_factor) * scaling_factor, shift_factor 0 when the config has null.
 */
#ifndef SS_VAE_H
#define SS_VAE_H

#include <stddef.h>
#include <stdint.h>

#include "nn/conv.h"
#include "nn/ops.h"

#define VAE_MAX_BLOCKS 8
#define VAE_MAX_LAYERS 8

typedef struct {
    int in_channels, out_channels, latent_channels;
    int n_blocks, block_out[VAE_MAX_BLOCKS];
    int layers_per_block, groups;
    int use_quant_conv, use_post_quant_conv, mid_attention;
    double scaling_factor, shift_factor; /* shift 0 when null */
    int has_shift;
} vae_config;

typedef struct {
    int cin, cout;
    const float *n1w, *n1b, *n2w, *n2b;
    ss_conv2d conv1, conv2, shortcut; /* shortcut.w NULL when cin == cout */
} vae_resnet;

typedef struct {
    const float *gnw, *gnb;
    ss_linear q, k, v, o;
} vae_attn;

typedef struct {
    vae_resnet r0, r1;
    vae_attn attn; /* attn.q.w NULL without mid_block_add_attention */
} vae_mid;

typedef struct {
    vae_resnet res[VAE_MAX_LAYERS + 1];
    int n_res;
    ss_conv2d sampler; /* down- or upsampler conv; w NULL in the last block */
} vae_block;

typedef struct vae_model {
    vae_config cfg;
    ss_conv2d enc_in, enc_out, quant, dec_in, dec_out, post_quant; /* quant / post_quant .w NULL when off */
    vae_block down[VAE_MAX_BLOCKS], up[VAE_MAX_BLOCKS];
    vae_mid enc_mid, dec_mid;
    const float *enc_nw, *enc_nb, *dec_nw, *dec_nb;
    void *files;  /* st_set *, while F32 weights point into it */
    float *arena; /* converted weights */
} vae_model;

/* Reads a diffusers AutoencoderKL config.json (absent keys take AutoencoderKL's defaults);
 * errors name the file and the field. */
int vae_config_load(vae_config *c, const char *path);
/* Loads DIR/config.json + DIR/diffusion_pytorch_model.safetensors (F32/F16/BF16; every tensor
 * checked against the config before any is converted). */
int vae_load(vae_model **out, const char *dir);
void vae_free(vae_model *m);
/* Calls fn for every tensor the config implies, with its diffusers name and shape (random init,
 * the benchmark). */
int vae_enumerate_tensors(const vae_config *c, void (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape),
                          void *ctx);
/* Multiply-adds x 2 of one decode of an h x w latent (convolutions, attention and linear layers). */
double vae_decode_flops(const vae_config *c, int h, int w);

/* The spatial factor 2^(blocks - 1). */
int vae_factor(const vae_model *m);

/* Optional: sees each stage output of batch element b, named as the fixtures name them
 * ("dec.conv_in", "dec.mid_block", "dec.up_blocks.i", "enc.conv_in", "enc.down_blocks.i",
 * "enc.mid_block"); return < 0 to stop. */
typedef int (*vae_stage_fn)(void *ctx, const char *name, int b, const float *x, int C, int H, int W);

/* img [B, out_channels, h*f, w*f] = decoder(post_quant_conv(z)), z [B, latent_channels, h, w]
 * (raw: no scaling). SS_OK or an error (out of memory). */
int vae_decode(const vae_model *m, float *img, const float *z, int B, int h, int w, vae_stage_fn fn, void *ctx);
/* Output size of the encoder for an H x W image (the stride-2 convs' floor rule). */
void vae_encoded_size(const vae_model *m, int H, int W, int *h, int *w);
/* moments [B, 2 x latent_channels, h, w] = quant_conv(encoder(x)), x [B, in_channels, H, W]. */
int vae_encode(const vae_model *m, float *moments, const float *x, int B, int H, int W, vae_stage_fn fn, void *ctx);

/* In place over n floats: z / scaling_factor + shift_factor (what pipelines decode). */
void vae_unscale(const vae_model *m, float *z, size_t n);
/* From moments [B, 2C, h, w]: mean [B, C, h, w], logvar clamped to [-30, 20] (may be NULL), and
 * scaled (mean - shift_factor) * scaling_factor (may be NULL). */
void vae_moments_split(const vae_model *m, const float *moments, int B, int h, int w, float *mean, float *logvar,
                       float *scaled);

#endif
