/* site: where in a model an attention runs, and what its tokens are.
 *
 * The model says *where* (this struct), the sampler says *when* (sink_ctx_set_step). A site is
 * a flat index 0..n-1 over the model's attentions plus its kind and the block within that kind:
 *   SD3 / SD3.5:  joint.i  (block i's joint image+text attention, image tokens first)
 *                 attn2.i  (SD3.5's second, image-only self-attention of dual block i)
 *   FLUX:         double.i, single.j (both (S+N) x (S+N), text first)
 *   PixArt:       self.i (N x N image tokens), cross.i (N image queries x S text keys, key mask)
 * and the token layout of its queries and keys: spans in the model's token order, each with a
 * type. Text spans are SS_TOK_TEXT until a text encoder supplies finer types (word, eos, pad,
 * comma). Keys may carry a per-batch validity mask (PixArt's T5 mask): masked keys get no
 * attention mass and are never selected by an intervention.
 *
 * A site code (ss_site_code) names a site independently of any model: kind * SS_SITE_MAX_BLOCKS
 * + block. The joint kind is 0, so a joint site's code is its block index: the `layers` of
 * today's conditions and `forward --probe 0,6,12`. */
#ifndef SS_SITE_H
#define SS_SITE_H

#include <stddef.h>
#include <stdint.h>

#define SS_SITE_MAX_BLOCKS 256
#define SS_SITE_MAX_SPANS 4
#define SS_SITE_MAX_AXES 8

/* SS_TOK_TEXT: a text token not typed further; SS_TOK_OTHER: any other text token (punctuation,
 * special tokens). Values are stable (records store them by name, see ss_tok_name). */
typedef enum { SS_TOK_IMAGE, SS_TOK_TEXT, SS_TOK_WORD, SS_TOK_EOS, SS_TOK_PAD, SS_TOK_COMMA, SS_TOK_BOS, SS_TOK_OTHER, SS_TOK_N } ss_tok;
/* image vs any text type */
static inline int ss_tok_is_text(ss_tok t) { return t != SS_TOK_IMAGE; }

typedef struct {
    int start, len;
    ss_tok type;
} ss_span;

/* Rows of one key span in a hidden-state buffer: row r of batch element b is at
 * x + ((size_t)b * bstride + r) * ss_site.hidden_ld. */
typedef struct {
    const float *x; /* NULL: not supplied */
    size_t bstride; /* rows between batch elements */
} ss_rows;

typedef enum { SS_SITE_JOINT, SS_SITE_ATTN2, SS_SITE_DOUBLE, SS_SITE_SINGLE, SS_SITE_SELF, SS_SITE_CROSS, SS_SITE_NKIND } ss_site_kind;

typedef struct {
    int index;         /* flat index 0..n-1 over the model's sites */
    int block;         /* index within its kind */
    ss_site_kind kind;
    int Tq, Tk;        /* query and key tokens */
    int n_qspan, n_kspan;
    ss_span qspan[SS_SITE_MAX_SPANS], kspan[SS_SITE_MAX_SPANS]; /* in token order, covering [0, Tq) / [0, Tk) */
    const uint8_t *key_valid; /* [B, Tk], 1 = attended; NULL: every key (SD3) */
    int n_axes;
    const float *pos;         /* [Tk, n_axes] positions, or NULL (not supplied yet) */
    /* Optional, for the "why sinks form" measurements (sink/spiral.h); zero / NULL: not supplied. */
    const uint8_t *key_type;  /* [B, Tk] ss_tok of every key, per batch element (prompts differ); NULL: the kspan types */
    int rope_dims[SS_SITE_MAX_AXES]; /* RoPE sites: each axis's channels per head (FLUX axes_dims_rope, summing to
                                      * the head dim, pairs (2c, 2c+1) rotated); all 0: no RoPE at this site */
    int hidden_dim, hidden_ld;       /* width and row stride of the hidden rows below */
    ss_rows hidden[SS_SITE_MAX_SPANS]; /* per key span: the hidden states its keys were projected from (the
                                        * stream at the block's input, before its norm); x NULL: not reachable */
} ss_site;

static inline int ss_site_code(ss_site_kind kind, int block) { return (int)kind * SS_SITE_MAX_BLOCKS + block; }
static inline ss_site_kind ss_site_code_kind(int code) { return (ss_site_kind)(code / SS_SITE_MAX_BLOCKS); }
static inline int ss_site_code_block(int code) { return code % SS_SITE_MAX_BLOCKS; }
static inline int ss_site_code_of(const ss_site *s) { return ss_site_code(s->kind, s->block); }

const char *ss_site_kind_name(ss_site_kind k);
/* "image", "text", "word", "eos", "pad", "comma", "bos", "other"; "?" out of range. */
const char *ss_tok_name(ss_tok t);
/* The type of key j of batch element b: site->key_type when supplied, else its key span's type. */
ss_tok ss_site_key_type(const ss_site *s, int b, int j);
/* Every key span's hidden rows from one [B, bstride rows, ld] buffer in key order (FLUX's stream):
 * span i's rows start at row kspan[i].start. */
void ss_site_set_hidden(ss_site *s, const float *x, size_t bstride, int dim, int ld);
/* "attn2.3" for a code, into buf (returns buf). */
const char *ss_site_code_name(int code, char *buf, size_t cap);
/* Parse "kind.i" (a known kind, 0 <= i < SS_SITE_MAX_BLOCKS) into a code; -1 if malformed. */
int ss_site_code_parse(const char *name);
/* Find the site with this code among n sites; NULL if the model has none. */
const ss_site *ss_site_find(const ss_site *sites, int n, int code);
/* "joint.0-17, attn2.0-12" style list of the sites' names, into buf (returns buf). */
const char *ss_site_list(const ss_site *sites, int n, char *buf, size_t cap);
/* The union of a site's query (keys = 0) or key (keys = 1) spans of the wanted tokens: image
 * (want 0), text (any text type, want 1) or all (want 2), as one range [*lo, *hi). Returns 0, or
 * -1 when the matching spans are not contiguous (not supported). An empty set gives lo == hi. */
int ss_site_range(const ss_site *s, int keys, int want, int *lo, int *hi);

#endif
