/* clip_bpe: transformers' slow CLIPTokenizer without ftfy (the usual case: ftfy is no
 * dependency of transformers or diffusers), from vocab.json + merges.txt (+ the config files).
 *
 * Per text segment between special tokens (txtok.h):
 *   1. BasicTokenizer(do_lower_case=True, strip_accents=False, do_split_on_punc=False): drop U+0000,
 *      U+FFFD and category C* except \t \n \r; \t \n \r and Zs -> space; spaces around CJK
 *      ideographs; NFC (utf8proc); split on whitespace; Python str.lower() per word (utf8proc simple
 *      lower case plus U+0130 and the final-sigma rule); rejoin with single spaces.
 *   2. The regex <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
 *      [^\s\p{L}\p{N}]+ (PCRE2, UTF + UCP + caseless).
 *   3. Each match in GPT-2 byte symbols; BPE by merge rank with "</w>" on the last symbol (the first
 *      48894 merges, as transformers reads them).
 * Then truncation to max_length-2 tokens, <|startoftext|> ... <|endoftext|>, and the pad token.
 * Errors name the file (vocab.json, merges.txt, the config files).
 */
#ifndef SS_CLIP_BPE_H
#define SS_CLIP_BPE_H

#include <stddef.h>

#include "text/txtok.h"

typedef struct clip_bpe clip_bpe;
int clip_bpe_open(clip_bpe **out, const char *dir);
void clip_bpe_free(clip_bpe *c);
int clip_bpe_vocab_size(const clip_bpe *c);
int clip_bpe_model_max_length(const clip_bpe *c);
int clip_bpe_encode(const clip_bpe *c, const char *text, size_t len, int max_length, txtok_seq *s);
/* Python's str.lower().strip() of UTF-8 text (the case rules of step 1; invalid UTF-8 is an error),
 * NUL-terminated into *out (malloc'ed). */
int clip_py_lower_strip(const char *s, size_t n, char **out);

#endif
