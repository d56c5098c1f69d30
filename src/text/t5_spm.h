/* t5_spm: transformers' slow T5Tokenizer (legacy=True, the diffusers default) over a
 * SentencePiece unigram model (spiece.model, through libsentencepiece: nmt_nfkc normalisation
 * from the model's own precompiled table, the dummy-prefix "▁", whitespace squeezing, Viterbi).
 *
 * The specials of tokenizer_config.json (<pad>, </s>, <unk>, <extra_id_k> with lstrip/rstrip)
 * are cut out of the text first; each text segment is encoded on its own (so each gets its own
 * "▁" prefix), pieces map to ids by the added tokens first, then the model. "</s>" is appended
 * unless the ids already end with it. With max_length L: keep L-1 ids if L would be exceeded,
 * then "</s>" (unless last), then pad with the pad id.
 */
#ifndef SS_T5_SPM_H
#define SS_T5_SPM_H

#include <stddef.h>

#include "text/txtok.h"

typedef struct t5_spm t5_spm;
int t5_spm_open(t5_spm **out, const char *dir);
void t5_spm_free(t5_spm *t);
int t5_spm_vocab_size(const t5_spm *t);
int t5_spm_model_max_length(const t5_spm *t);
int t5_spm_encode(const t5_spm *t, const char *text, size_t len, int max_length, txtok_seq *s);

#endif
