/* promptx: prompt transforms applied to the text before tokenization.
 *
 * Comma padding (Yang et al. 2026, "From a Spiral to a Sink", section "Redistributing Attention
 * via Comma Padding"): append `repeat` copies of a padding string so that commas displace the
 * <PAD> tokens that become sinks. As the paper's public demo (freemty/pe2sink
 * src/demo/comma_padding.py, build_comma_prompt) builds it: the copies are concatenated with
 * nothing between them and joined to the prompt by a separator, " " by default:
 *   "a red cube" + 3 x ","  ->  "a red cube ,,,"      (separator "": "a red cube,,,")
 * A prompt that already ends with the separator gets no second one; repeat 0 leaves the prompt
 * unchanged. The tokenizer then truncates as usual (CLIP 77, T5 max_sequence_length), keeping
 * its EOS last.
 *
 *   promptx_pad p; promptx_pad_parse(&p, "200", "--pad-prompt");   // or "200:;" for ";"
 *   char *s; promptx_pad_apply(&s, prompt, &p); ... free(s);
 */
#ifndef SS_PROMPTX_H
#define SS_PROMPTX_H

#define PROMPTX_PAD_DEFAULT_REPEAT 200
#define PROMPTX_MAX_REPEAT 100000

typedef struct {
    int repeat;     /* copies (0: no padding) */
    char pad[64];   /* the padding string (default ",") */
    char sep[16];   /* between the prompt and the copies (default " ") */
} promptx_pad;

/* The paper's default: 200 x "," after " ". */
promptx_pad promptx_pad_default(void);
/* "N" or "N:STRING" (STRING: the padding string, 1 to 63 bytes, no control characters; the
 * separator stays " "). Errors name `where`. */
int promptx_pad_parse(promptx_pad *p, const char *spec, const char *where);
/* *out (malloc'ed) = the padded prompt. SS_EARG for an empty padding string or a repeat outside
 * [0, PROMPTX_MAX_REPEAT]. */
int promptx_pad_apply(char **out, const char *prompt, const promptx_pad *p);

#endif
