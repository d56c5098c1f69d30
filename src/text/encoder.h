/* encoder: a tiny text encoder (token + position embeddings) for the synthetic captions.
 *
 * Model folder layout:
 *   text_encoder/config.json        {"vocab_size": V, "max_length": S, "hidden_size": J, "pooled_size": P}, P == J
 *   text_encoder/model.safetensors  token_embedding.weight [V, J], position_embedding.weight [S, J]
 *   tokenizer/vocab.txt             V lines (see tokenizer.h)
 *
 * Output for one prompt with ids id_0..id_{S-1} (words, <eos>, pads):
 *   encoder_hidden_states[s] = tok[id_s] + pos[s]                    [S, J]
 *   pooled                   = mean of tok[id_s] over id_s != <pad>  [P]  (words and <eos>)
 * The arrays are plain row-major fp32 in a public struct so a trainer can update them in place.
 */
#ifndef SS_ENCODER_H
#define SS_ENCODER_H

#include <stdint.h>

#include "text/tokenizer.h"

typedef struct {
    int vocab_size, max_length, hidden_size, pooled_size;
} te_config;

typedef struct te {
    te_config cfg;
    float *tok_emb;   /* [vocab_size, hidden_size] */
    float *pos_emb;   /* [max_length, hidden_size] */
    tok_vocab *vocab; /* owned; NULL for a fresh te_init_random until te_set_vocab */
} te;

#define TE_TOKEN_EMBEDDING "token_embedding.weight"
#define TE_POSITION_EMBEDDING "position_embedding.weight"

/* Sizes positive, pooled_size == hidden_size, max_length >= 1, vocab_size >= 2. */
int te_config_check(const te_config *c, const char *where);
int te_config_load(te_config *c, const char *path);
int te_config_save(const te_config *c, const char *path);

/* Token embeddings ~ N(0, 0.02^2), position embeddings ~ N(0, 0.01^2) (CLIP's initialisation),
 * from rng streams 0 and 1 of `seed`. No vocabulary attached. */
int te_init_random(te **out, const te_config *c, uint64_t seed);
/* Attach a vocabulary (ownership passes to m on success); its size must be vocab_size. */
int te_set_vocab(te *m, tok_vocab *v);

/* ehs: [max_length, hidden_size], pooled: [pooled_size]. Batch of one; the caller loops. */
int te_encode(const te *m, const char *prompt, float *ehs, float *pooled);
/* The same from token ids (each in [0, vocab_size)). */
int te_encode_ids(const te *m, const int32_t *ids, float *ehs, float *pooled);
void te_free(te *m);

/* Whole model folder (encoder_io.c; uses safetensors). te_save creates the folders, writes the
 * config, the weights (F32) and, when attached, the vocabulary. */
int te_load(te **out, const char *model_dir);
int te_save(const te *m, const char *model_dir);

#endif
