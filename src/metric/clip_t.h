/* clip_t: the paper's CLIP-T and torchmetrics' CLIPScore convention.
 *
 *   clipt *m; clipt_open(&m, "clip-vit-base-patch32", NULL);
 *   double cos; clipt_score(m, rgb, w, h, "a photo of a cat", 16, &cos, "img.png");
 *
 * CLIP-T (field survey (b), variant 1): the image through open_clip's validation transform
 * (metric/imgproc.h; crop = the vision config's image_size) and the CLIP vision tower
 * (metric/clip_vision.h); the prompt through the folder's CLIP BPE tokenizer with 77 tokens
 * (padding="max_length", truncation=True; text/txtok.h) and the CLIP text tower with its
 * projection (text/txenc.h); score = cosine of the two projected embeddings, each normalised
 * (computed in double), raw: no x100, no clamp.
 * CLIPScore (torchmetrics): max(100 * cos, 0) of the same cosine; torchmetrics' default model is
 * ViT-L/14 (openai/clip-vit-large-patch14): the model is whatever folder is given.
 *
 * Folder: a transformers CLIPModel folder (config.json with text_config and vision_config,
 * model.safetensors with text_model.*, vision_model.*, text_projection.weight,
 * visual_projection.weight); the tokenizer folder (vocab.json + merges.txt) defaults to it.
 */
#ifndef SS_CLIP_T_H
#define SS_CLIP_T_H

#include <stddef.h>
#include <stdint.h>

#define CLIPT_CONTEXT 77

typedef struct clipt clipt;

/* tokenizer_dir NULL: the model folder. */
int clipt_open(clipt **out, const char *model_dir, const char *tokenizer_dir);
void clipt_free(clipt *m);
/* Width of the projected embeddings. */
int clipt_dim(const clipt *m);
/* Image side the vision tower takes (the crop of the transform). */
int clipt_image_size(const clipt *m);

/* Unit-norm projected embeddings (dim floats). `label` names the input in errors. */
int clipt_image_embed(const clipt *m, const uint8_t *rgb, int w, int h, float *emb, const char *label);
int clipt_text_embed(const clipt *m, const char *prompt, size_t len, float *emb, const char *label);
/* Cosine of two unit-norm embeddings, in double. */
double clipt_cosine(const float *a, const float *b, int dim);
int clipt_score(const clipt *m, const uint8_t *rgb, int w, int h, const char *prompt, size_t len, double *cos,
                const char *label);
/* torchmetrics' CLIPScore of one pair: max(100 * cos, 0). */
double clipt_clip_score(double cos);

#endif
