/* record: the one JSON schema of sink statistics (docs/experiment-format.md, "probe" and
 * "verification" entries), written by `run` into records.jsonl and by `forward` / `generate
 * --probe` into their stats JSON, and read back by the report.
 *
 * One entry is one probed (or intervened) site at one step for one batch element:
 *
 *   probe:        {"block", ["site"], "step", ["t_frac"], "max_mass", "entropy", "top5",
 *                  "top1_is_index0", "top1_is_text", [top1_is_word, eos, pad, [comma, bos, other]],
 *                  "act_max", "act_p95", "top1_keys", then only where the writer has them
 *                  (forward / generate): "batch", "queries", "tokens", "act_text_max",
 *                  "act_text_p95", "heads", "spiral"}
 *   verification: {"block", ["site"], "step", ["t_frac"], "mass_before", "mass_after", "keys",
 *                  then (forward / generate) "batch", "reduction", "min_topk_margin"}
 *
 * Numbers that are not finite are written null and read back as NaN. Writing an entry read
 * from JSON gives the same text (round trip). Run records of before this schema are entries of
 * it (they are where it comes from).
 */
#ifndef SS_SINK_RECORD_H
#define SS_SINK_RECORD_H

#include <stdint.h>

#include "models/site.h"
#include "sink/sink.h"

enum { SINK_NTYPES = 6 }; /* top1_is_word, eos, pad, comma, bos, other */

typedef struct {
    int block, site;   /* site: its code, or -1 for a joint site (written as "block" alone) */
    int step;
    int has_t_frac;
    double t_frac;
    int batch;         /* -1: absent (run records: the conditional batch element B - 1) */
    double max_mass, entropy, top5, idx0, text;
    int n_types;       /* 0, 3 (word, eos, pad) or 6 (and comma, bos, other) */
    double type[SINK_NTYPES];
    double act_max, act_p95;
    int n_top1;        /* top1_keys: per head its top-1 key */
    int *top1;
    /* forward / generate only */
    char queries[16];  /* "" absent */
    int tok_image, tok_text; /* -1 absent */
    int has_act_text;
    double act_text_max, act_text_p95;
    int n_heads, topk; /* heads: n_heads > 0 */
    int *top_keys;     /* [n_heads, topk] */
    double *top_mass;  /* [n_heads, topk] */
    double *head_entropy, *head_top5; /* [n_heads] */
    void *spiral;      /* json_t * (owned), or NULL */
} sink_probe_entry;

typedef struct {
    int block, site, step, has_t_frac;
    double t_frac;
    int batch;         /* -1 absent */
    double mass_before, mass_after;
    int n_heads;       /* keys: per head a list of key indices */
    int *key_off;      /* [n_heads + 1] offsets into keys */
    int *keys;
    int has_reduction; /* forward / generate only; reduction NaN: null (complete removal) */
    double reduction;
    int has_margin;
    double margin;
} sink_verif_entry;

/* The top-1 key types of a record's heads from the model's sites and the text types (ss_tok, [S],
 * in the order of each site's text key span): top1_is_word / eos / pad, and with all_types also
 * comma / bos / other. */
typedef struct {
    const ss_site *sites;
    int n_sites;
    const uint8_t *text;
    int S;
    int all_types;
} sink_key_types;

/* Fill an entry from batch element b of a record. full: the forward / generate fields (batch,
 * queries, tokens, heads, spiral, ...); kt (or NULL): the top-1 key types. 0, or SS_ENOMEM. */
int sink_probe_entry_from_record(sink_probe_entry *e, const sink_record *r, int b, int full, const sink_key_types *kt);
int sink_verif_entry_from_record(sink_verif_entry *e, const sink_record *r, int b, int full);
void sink_probe_entry_free(sink_probe_entry *e);
void sink_verif_entry_free(sink_verif_entry *e);

/* The entry as a jansson object (json_t *), NULL on allocation failure. */
void *sink_probe_entry_write_json(const sink_probe_entry *e);
void *sink_verif_entry_write_json(const sink_verif_entry *e);

/* Read an entry (a json_t *). A malformed one (not an object; "block" or "step" missing or not an
 * integer; a number field that is neither a number nor null; keys not arrays of non-negative
 * integers) is an error naming file, line and what is wrong (line <= 0: no line). The old
 * form of verification keys (a flat list of integers) reads as one key per head. */
int sink_probe_entry_read_json(sink_probe_entry *e, const void *json, const char *file, long line);
int sink_verif_entry_read_json(sink_verif_entry *e, const void *json, const char *file, long line);

/* The "probe" and "verification" arrays (json_t *) of a sink context's records: one entry per
 * probed / intervened record and batch element; full: every batch element with the forward /
 * generate fields; else (run records) batch element B - 1 only. */
void *sink_record_write_probe_json(const sink_ctx *s, int full, const sink_key_types *kt);
void *sink_record_write_verif_json(const sink_ctx *s, int full);

#endif
