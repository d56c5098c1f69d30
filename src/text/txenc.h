/* txenc: the text encoders of real pipelines, as transformers 4.39 runs them (eager, fp32 here).
 *
 *   CLIPTextModel / CLIPTextModelWithProjection (SD3 text_encoder, text_encoder_2; FLUX's CLIP-L):
 *     token + position embeddings; pre-LN blocks (layer_norm1, q/k/v/out_proj with q scaled by
 *     1/sqrt(head_dim), causal mask plus the optional attention mask, layer_norm2, fc1,
 *     quick_gelu or gelu, fc2); final_layer_norm; pooling: config eos_token_id == 2 -> argmax(ids)
 *     (first occurrence), else the first position holding eos_token_id (0 if none);
 *     text_embeds = text_projection(pooled) when the folder has text_projection.weight.
 *   T5EncoderModel (v1.1: SD3 text_encoder_3, FLUX text_encoder_2, PixArt): RMS norm without mean
 *     subtraction, attention without 1/sqrt(d) plus the relative-position bias of block 0 (shared
 *     by all blocks; bidirectional buckets), the mask as finfo.min on padded keys (padded query
 *     rows still computed), gated-gelu (gelu_new = tanh approximation) or relu, final RMS norm.
 *     num_heads x d_kv need not equal d_model.
 *
 * Folders: config.json + model.safetensors (or model.safetensors.index.json shards), F32, F16 or
 * BF16. A full CLIPModel folder (model_type "clip") opens as its text tower: text_config with
 * CLIPTextConfig's defaults for the keys save_pretrained omits, the top-level projection_dim.
 * Weights: every Linear weight and the token embedding stored as F16 or BF16 stay in that form,
 * used in place from the checkpoint's mapping (file-backed pages, 2 bytes per value, no copy),
 * and are widened to fp32 right before use, one matrix at a time into a scratch of the largest one; the widening is exact and the product the same fp32 sgemm call,
 * so outputs are bit-identical to converting everything at open. Other tensors (norms, biases,
 * position tables, projection) and F32 checkpoints are held in fp32. So T5-XXL's encoder (4.7B)
 * needs ~9.5 GB stored in BF16/F16 plus a 168 MB scratch (19 GB from an F32 checkpoint); on a 24
 * GB machine it still encodes the prompts and is freed (txenc_free) before the DiT is loaded; the
 * outputs are a few MB. Attention is written here (src/nn/attn.has no causal mask or additive bias): one
 * [L, L] score matrix per (batch, head) with BLAS, heads in parallel.
 *
 * Outputs go to a callback in order, named as the reference fixtures name them:
 *   CLIP: hidden_states.{0..L} (0 = embeddings, i = output of layer i, no final norm),
 *         last_hidden_state, pooler_output, text_embeds (with a projection), pool_index (I64).
 *   T5:   hidden_states.{0..L} (0 = embeddings, i = output of block i-1, L = final-normed),
 *         block.{i} (raw output of block i), last_hidden_state: all without the mask; with a
 *         mask also hidden_states_masked.{i}, block_masked.{i}, last_hidden_state_masked.
 */
#ifndef SS_TXENC_H
#define SS_TXENC_H

#include <stddef.h>
#include <stdint.h>

#include "text/txtok.h"

typedef enum { TXENC_CLIP, TXENC_T5 } txenc_kind;

typedef struct {
    txenc_kind kind;
    int vocab_size, d_model, n_layers, n_heads, d_head, d_ff;
    int max_positions;   /* CLIP: max_position_embeddings; T5: 0 (no limit) */
    int proj_dim;        /* CLIP with projection, else 0 */
    int eos_token_id;    /* CLIP pooling rule */
    int act;             /* CLIP: 0 quick_gelu, 1 gelu; T5: 0 gelu_new (gated), 1 relu (gated or not) */
    int gated;           /* T5 */
    int num_buckets, max_distance;
    float eps;
} txenc_config;

typedef struct txenc txenc;

int txenc_open(txenc **out, const char *dir);
void txenc_free(txenc *e);
const txenc_config *txenc_get_config(const txenc *e);
const char *txenc_dir(const txenc *e);
/* Bytes the loaded weights occupy (2 per value for the narrow ones, 4 for fp32). */
size_t txenc_weight_bytes(const txenc *e);

/* is_f32: 1 for float data [ndim shape], 0 for int64 data. Return < 0 to stop. */
typedef int (*txenc_out_fn)(void *ctx, const char *name, int is_f32, const void *data, int ndim,
                            const int64_t *shape);

/* ids [B, L] int64; mask [B, L] (0/1) or NULL. `label` names the inputs in errors (file name).
 * Checks every id against vocab_size and L against the position table. */
int txenc_run(const txenc *e, const int64_t *ids, const int64_t *mask, int B, int L, const char *label,
              txenc_out_fn cb, void *ctx);

/* A tokenizer fits a model when every id it can produce is below the model's vocab_size. */
int txenc_check_tokenizer(const txenc *e, const txtok *t);

#endif
