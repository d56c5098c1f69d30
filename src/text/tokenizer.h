/* tokenizer: word-level tokenizer for the synthetic shape-world captions.
 *
 * Vocabulary file (tokenizer/vocab.txt in a model folder): one token per line, line index = id.
 * Line 1 is "<pad>" (id 0), line 2 is "<eos>" (id 1). Tokens are non-empty, lower-case, without
 * whitespace, unique, and do not start or end with the punctuation stripped from prompts.
 *
 * Encoding (like T5 with padding="max_length"): lower-case the prompt (ASCII), split on
 * whitespace, strip ".,;:!?" around each word (a word that is only punctuation is dropped), map
 * to ids, then "<eos>", then "<pad>" up to the fixed length S. The empty prompt gives "<eos>"
 * and pads: the unconditional input for classifier-free guidance.
 */
#ifndef SS_TOKENIZER_H
#define SS_TOKENIZER_H

#include <stdint.h>

#define TOK_PAD 0
#define TOK_EOS 1

typedef struct tok_vocab tok_vocab;

/* Errors name the file and the line. */
int tok_vocab_load(tok_vocab **out, const char *path);
/* "<pad>", "<eos>", then `words` (NULL-terminated) without duplicates, in order. */
int tok_vocab_from_words(tok_vocab **out, const char *const *words);
void tok_vocab_free(tok_vocab *v);

int tok_vocab_size(const tok_vocab *v);
const char *tok_vocab_word(const tok_vocab *v, int id); /* NULL if out of range */
int tok_vocab_find(const tok_vocab *v, const char *word); /* id, or -1 (no error set) */
const char *tok_vocab_path(const tok_vocab *v);          /* file it came from, or "(in memory)" */

/* Writes the vocabulary file through the one atomic writer (io/fsutil.h). */
int tok_vocab_save(const tok_vocab *v, const char *path);
/* tok_vocab_from_words + tok_vocab_save. */
int tok_vocab_write(const char *path, const char *const *words);

/* Fills ids[0..S-1]. Returns the number of words (>= 0) or a negative error: an unknown or
 * reserved word, or more than S-1 words. */
int tok_encode(const tok_vocab *v, const char *prompt, int S, int32_t *ids);

#endif
