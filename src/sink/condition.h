/* condition: one intervention, as a value type parsed from the JSON schema of
 * tests/fixtures/README.md plus `steps`, `seed` and `sites`. The CLI (`forward --condition`), the sampler
 * and experiment lists (`run`) all use this one parser.
 *
 *   {"name": "A1", "layers": [12], "select": "topk", "k": 1, "rank_by": "head", "keys": "all",
 *    "queries": "image", "path": "score", "eta": 0.0, "steps": [0.0, 1.0]}
 *
 * Where it acts: `layers` (block indices of the model's joint attention: SD3's joint.i, FLUX's
 * double.i once sink_condition_resolve has seen the model; PixArt's self.i, or cross.i with
 * `attn: "cross"`), `single_layers` (FLUX single.j) and/or
 * `sites` (site names, models/site.h: "joint.3", "attn2.0", ...); at least one of them must be
 * present ([] for a no-op).
 *
 * AbsPE manipulation (families with an absolute position embedding: PixArt, SD3; docs/abspe.md):
 * `pe_copy_from` [r, c] and `pe_copy_to` (a pattern name, "smiley" or "corners", or a list of
 * [r, c]) copy one grid position's embedding to others; `pe_zero` (a pattern or a list) zeroes
 * the embedding at positions. Negative coordinates count from the end (-1: the last row or
 * column). With only pe_* fields, 'layers' may be absent. sink/abspe.h resolves and applies them.
 *
 * Comma padding (text/promptx.h, docs/abspe.md): `pad_prompt` = N (an integer: N copies of ",")
 * or a string "N" / "N:STRING" (promptx_pad_parse) transforms the prompt before tokenization
 * (`run` pads the prompt of every image of the condition; the negative prompt is not padded).
 * Active only when N > 0: N = 0 is the no-op form. With only pad_prompt (and/or pe_*), 'layers'
 * may be absent.
 *
 * Unknown fields, wrong types and out-of-range values are rejected; the error names the field.
 */
#ifndef SS_CONDITION_H
#define SS_CONDITION_H

#include <stddef.h>
#include <stdint.h>

#include "models/site.h"
#include "text/promptx.h"

#define COND_MAX_LAYERS 256
#define COND_MAX_K 64
#define COND_MAX_LIST 4096 /* conditions in one list */

typedef enum { SEL_TOPK, SEL_FIXED, SEL_RANDOM } sink_select;
typedef enum { TOK_ALL, TOK_TEXT, TOK_IMAGE } sink_tokens;
typedef enum { VAL_ZERO, VAL_MEAN, VAL_LERP } sink_value;

#define COND_MAX_PE 64 /* explicit positions in one pe_* list */

typedef enum { PE_LIST, PE_CORNERS, PE_SMILEY } sink_pe_pattern;

/* A set of patch-grid positions: a named pattern or explicit [row, col] (negative: from the end). */
typedef struct {
    sink_pe_pattern pattern;
    int n;                  /* PE_LIST: entries in rc */
    int rc[COND_MAX_PE][2];
} sink_pe_set;

typedef struct {
    char name[128];
    int n_layers;                /* sites acted on: `layers` then `sites` */
    int layers[COND_MAX_LAYERS]; /* as site codes (ss_site_code); a joint block's code is its index */
    int n_from_sites;            /* how many of them (the last ones) the field `sites` gave */
    int attn;                    /* PixArt: the attention `layers` names, 0 self (default), 1 cross */
    int have_attn;               /* `attn` was given (only PixArt models accept it) */
    sink_select select;
    int k;
    int rank_union;     /* rank_by: 0 head, 1 union */
    int n_indices;
    int indices[COND_MAX_K];
    sink_tokens keys, queries;
    int value_path;     /* path: 0 score, 1 value */
    float eta;
    sink_value value;
    float alpha;
    double step_lo, step_hi; /* window of normalized denoising time t/T, 0 = noisiest step */
    uint64_t seed;
    /* AbsPE manipulation (sink/abspe.h); have_pe: some pe_* field was given */
    int have_pe, have_pe_zero, have_pe_copy;
    sink_pe_set pe_zero, pe_copy_to;
    int pe_copy_from[2];
    /* comma padding: have_pad: the field pad_prompt was given; pad: what it says; pad_spec: the
     * string it was given as ("" when it was an integer), written back as given */
    int have_pad;
    promptx_pad pad;
    char pad_spec[80];
} sink_condition;

/* Does the condition pad the prompt (pad_prompt with N > 0)? */
int sink_condition_pad_active(const sink_condition *c);

/* obj is a jansson json_t *; `where` prefixes errors (e.g. "cond.json: conditions[2]"). */
int sink_condition_from_json(sink_condition *c, const void *obj, const char *where);
/* A file holding one condition object. */
int sink_condition_load(sink_condition *c, const char *path);
/* A file holding a list of condition objects (or one object). *out is malloc'ed. Condition
 * files are UTF-8 JSON; a leading byte-order mark is skipped; invalid UTF-8 or a U+FEFF anywhere
 * else is an error naming the line. At most COND_MAX_LIST conditions. */
int sink_condition_list_load(sink_condition **out, int *n, const char *path);
/* The same from memory (len bytes); `path` names the source in errors. */
int sink_condition_list_parse(sink_condition **out, int *n, const char *buf, size_t len, const char *path);
/* The JSON of a condition file with the same checks (UTF-8, byte-order mark, duplicate keys):
 * *root a new jansson json_t *. For files that hold conditions inside another object (presets,
 * exp/protocol.h). */
int sink_condition_json_load(const char *path, void **root);
/* A list (or one object) of conditions from parsed JSON (json_t *), as sink_condition_list_load;
 * errors name `path` and the condition's index. *out malloc'ed (NULL on error). */
int sink_condition_list_from_json(sink_condition **out, int *n, const void *root, const char *path);
/* Checks a parsed condition against a model: blocks 0..num_layers-1 exist; the attention has
 * n_img image keys then n_txt text keys. Refuses a block the model lacks ('layers'), k above the
 * candidate keys ('k'), an index past the keys ('indices'), and a removal that leaves a query row
 * no attention mass at all (score path, eta 0, every key selected: 'k' or 'indices'). Errors
 * name `where` (may be NULL), the condition and the field. */
int sink_condition_check_model(const sink_condition *c, int num_layers, int n_img, int n_txt, const char *where);
/* The same checks against a model's own sites (sd3_sites): every site the condition names exists
 * (else the error names the field and lists the model's sites), and at each of them: query rows
 * of the condition's `queries`, k within the candidate keys, indices within Tk, not every key
 * removed with eta 0. sink_condition_check_model knows joint blocks only and refuses other
 * sites. */
int sink_condition_check_sites(const sink_condition *c, const ss_site *sites, int n_sites, const char *where);
/* Binds the model-relative field 'layers' to a model's sites: the block indices of its joint
 * attention, which are SD3's joint.i (as parsed, nothing changes), FLUX's double.i (a model with
 * double sites and no joint ones) and PixArt's self.i or cross.i (field 'attn'; a model with self
 * sites). 'single_layers' (FLUX single.j) is parsed as sites. 'attn' on a model without self and
 * cross sites is an error. Call it once a condition meets the model, before
 * sink_condition_check_sites; idempotent. */
int sink_condition_resolve(sink_condition *c, const ss_site *sites, int n_sites, const char *where);
/* A new jansson object (json_t *) that parses back to the same condition. */
void *sink_condition_to_json(const sink_condition *c);
/* Does the condition act at this site code (a joint block's code is its index)? */
int sink_condition_has_layer(const sink_condition *c, int code);
/* Does the condition act at normalized time tfrac? (tfrac < 0: not sampling, always yes) */
int sink_condition_active(const sink_condition *c, double tfrac);
const char *sink_tokens_name(sink_tokens t);

#endif
