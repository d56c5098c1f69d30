/* clip_vision: transformers' CLIPVisionModelWithProjection (4.39, eager), fp32.
 *
 *   pixel_values [B, C, S, S] -> patch embedding (Conv2d C -> D, kernel = stride = patch, no bias,
 *   done as one matrix product over the flattened patches) -> [class_embedding; patches] +
 *   position_embedding -> pre_layrnorm -> L pre-LN layers (layer_norm1, q/k/v/out_proj, softmax
 *   attention without mask, residual; layer_norm2, fc1, quick_gelu or gelu, fc2, residual) ->
 *   last_hidden_state; post_layernorm of the class token -> pooler_output; image_embeds =
 *   visual_projection(pooler_output) (no bias) when the folder has visual_projection.weight.
 *
 * Folder: config.json + model.safetensors (or shards), F32 / F16 / BF16. config.json is either a
 * full CLIPModel config (model_type "clip": vision_config, top-level projection_dim) or a vision
 * one (model_type "clip_vision_model"); keys save_pretrained leaves out take CLIPVisionConfig's
 * defaults (hidden 768, intermediate 3072, 12 layers, 12 heads, 3 channels, image 224, patch 32,
 * quick_gelu, eps 1e-5, projection_dim 512). Tensors are named as transformers names them
 * (vision_model.*, visual_projection.weight); the text tower of a full folder is ignored here.
 * The grid is floor(image_size / patch_size) per side, as the strided convolution gives.
 */
#ifndef SS_CLIP_VISION_H
#define SS_CLIP_VISION_H

typedef struct {
    int hidden, layers, heads, d_head, ff, channels, image_size, patch, grid, tokens;
    int proj_dim; /* 0: no visual_projection (embeds = pooler_output) */
    int act;      /* 0 quick_gelu, 1 gelu (erf) */
    float eps;
} clipv_config;

typedef struct clipv clipv;

int clipv_open(clipv **out, const char *dir);
void clipv_free(clipv *m);
const clipv_config *clipv_get_config(const clipv *m);
/* Width of clipv_run's embeds: proj_dim, or hidden without a projection. */
int clipv_embed_dim(const clipv *m);

/* pixels [B, channels, image_size, image_size] -> embeds [B, clipv_embed_dim]. Optional outputs
 * (NULL to skip): emb0 [B, tokens, hidden] (after pre_layrnorm, transformers' hidden_states[0]),
 * last [B, tokens, hidden] (last_hidden_state). */
int clipv_run(const clipv *m, const float *pixels, int B, float *embeds, float *emb0, float *last);

#endif
