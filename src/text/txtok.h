/* txtok: the tokenizers of real text encoders, as transformers 4.39 runs them (slow classes).
 *
 *   txtok *t; if (txtok_open(&t, "pipeline/tokenizer") < 0) puts(ss_err());
 *   txtok_seq s = {0};
 *   txtok_encode(t, "a photo of a cat", 16, 77, &s);  // padding="max_length", truncation=True
 *   ... s.ids[0..s.n), s.types[0..s.n), s.mask[0..s.n) ...
 *   txtok_seq_free(&s); txtok_free(t);
 *
 * A folder with vocab.json + merges.txt is a CLIP BPE tokenizer (clip_bpe.h); one with
 * spiece.model a T5 SentencePiece unigram tokenizer (t5_spm.h). tokenizer_config.json and
 * special_tokens_map.json supply the special tokens (as `PreTrainedTokenizer` reads them).
 *
 * Both cut the special tokens (bos/eos/unk/pad/additional specials and added_tokens_decoder)
 * out of the text before the model tokenizer runs, leftmost-longest like transformers' Trie,
 * honouring each token's lstrip/rstrip.
 *
 * max_length <= 0: the ids unpadded and untruncated, with the special tokens. Otherwise
 * exactly `padding="max_length", max_length=N, truncation=True`.
 *
 * Every token carries a type: a word piece, a comma-only piece, another punctuation piece, the
 * added BOS, the EOS, padding, or a special token written literally in the text (<unk>,
 * <extra_id_k>). Literal "<|endoftext|>" / "</s>" in the text count as EOS, "<|startoftext|>"
 * as BOS.
 */
#ifndef SS_TXTOK_H
#define SS_TXTOK_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TT_WORD, TT_COMMA, TT_PUNCT, TT_BOS, TT_EOS, TT_PAD, TT_SPECIAL, TT_COUNT } txtok_type;
const char *txtok_type_name(int type); /* "word", "comma", "punct", "bos", "eos", "pad", "special" */

typedef struct {
    int32_t *ids;
    uint8_t *types; /* txtok_type */
    uint8_t *mask;  /* attention mask: 0 on padding */
    int n, cap;
} txtok_seq;
void txtok_seq_free(txtok_seq *s);
/* Append one token (grows the arrays). 0 or SS_ENOMEM. */
int txtok_seq_push(txtok_seq *s, int32_t id, int type);

typedef enum { TXTOK_CLIP, TXTOK_T5 } txtok_kind;
typedef struct txtok txtok;

int txtok_open(txtok **out, const char *dir);
void txtok_free(txtok *t);
txtok_kind txtok_get_kind(const txtok *t);
/* Number of ids the tokenizer can produce (largest id + 1, added tokens included). */
int txtok_vocab_size(const txtok *t);
/* model_max_length of tokenizer_config.json, or 0 when absent. */
int txtok_model_max_length(const txtok *t);
const char *txtok_dir(const txtok *t);

/* Encode `len` bytes of UTF-8 (NULs allowed) into s (reset first). */
int txtok_encode(const txtok *t, const char *text, size_t len, int max_length, txtok_seq *s);

/* ---- shared by the two implementations ---- */

/* A string -> int32 hash map (keys copied). */
typedef struct txtok_map txtok_map;
txtok_map *txtok_map_new(size_t expected);
void txtok_map_free(txtok_map *m);
int txtok_map_put(txtok_map *m, const char *key, size_t klen, int32_t val); /* 0, 1 = replaced, <0 */
int txtok_map_get(const txtok_map *m, const char *key, size_t klen, int32_t *val); /* 1 found, 0 not */

/* The special tokens cut out of the text. */
typedef struct {
    char *content;
    int32_t id;
    int lstrip, rstrip;
} txtok_added;
typedef struct {
    txtok_added *tok;
    int n;
    char *bos, *eos, *unk, *pad; /* contents, or NULL */
    int model_max_length;
} txtok_specials;

/* Reads DIR/tokenizer_config.json and DIR/special_tokens_map.json (both optional).
 * lookup(ctx, content) gives the vocab id of a special named without an id (-1 if unknown:
 * an error naming the file). defaults[] (bos, eos, unk, pad; NULL = none) apply when the files
 * name none. */
int txtok_specials_load(txtok_specials *sp, const char *dir, int32_t (*lookup)(void *, const char *),
                        void *ctx, const char *const defaults[4]);
void txtok_specials_free(txtok_specials *sp);
/* Adds a special (no duplicate contents). */
int txtok_specials_add(txtok_specials *sp, const char *content, int32_t id, int lstrip, int rstrip);
const txtok_added *txtok_specials_find(const txtok_specials *sp, const char *s, size_t n);

/* Split text into segments: callback(ctx, ptr, len, special or NULL) for each, in order,
 * after the lstrip/rstrip rules; empty text segments are skipped. Returns the first negative
 * callback result, or 0. */
int txtok_split_specials(const txtok_specials *sp, const char *text, size_t len,
                         int (*cb)(void *, const char *, size_t, const txtok_added *), void *ctx);

/* Type of a piece from its surface text (UTF-8; ▁ and </w> already removed). */
int txtok_surface_type(const char *s, size_t n);

#endif
