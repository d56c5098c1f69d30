/* geneval: GenEval-schema prompt metadata, scoring rules and summaries, re-implemented in C.
 *
 * Metadata records are JSON objects, one per line (JSONL), as in GenEval's
 * evaluation_metadata.jsonl:
 *   {"tag": "position", "include": [{"class": "circle", "count": 1},
 *    {"class": "square", "count": 1, "position": ["right of", 0]}], "prompt": "..."}
 * `include` clauses: class, count (>= 1), optional color, optional position = [relation,
 * index of an earlier include clause]. `exclude` clauses: class, count.
 *
 * Scoring (gv_score) follows GenEval's evaluate():
 *  - Detections of each class are ranked by score, highest first.
 *  - Every include clause must hold (AND): the class has >= count detections; when a color is
 *    asked for, the `count` top-ranked detections of the class must all have that color; when
 *    a position is asked for, every one of those detections must stand in the relation to every
 *    detection matched by the target clause (a target clause that failed fails this one too).
 *  - Any exclude clause that holds makes the image wrong (OR): the class has >= count detections.
 *  - Relations use GenEval's relative_position: offset between box centers, each axis shrunk
 *    toward 0 by margin * (sum of the two box sizes on that axis) (margin 0.1), then divided
 *    by the length of the unshrunk offset; "left of"/"right of" when x < -0.5 / > 0.5,
 *    "above"/"below" when y < -0.5 / > 0.5 (image y grows downward); no relation at all when
 *    both shrunk components are ~0.
 * Not reproduced: GenEval's detector confidence thresholds (0.3, 0.9 for counting) and its
 * 16-per-class cap; the caller's detector decides what counts as a detection.
 *
 * Summary (gv_summary) follows GenEval's summary_scores.py: per-tag accuracy over images,
 * tags in order of first appearance, overall score = mean of the tag accuracies; also % correct
 * images and % correct prompts (a prompt is correct when any of its images is), where prompts
 * are identified by their record index.
 */
#ifndef SS_GENEVAL_H
#define SS_GENEVAL_H

#include <stddef.h>
#include <stdio.h>

#define GV_NAME_MAX 48    /* class / color / tag names, including the NUL */
#define GV_PROMPT_MAX 512 /* prompt text, including the NUL */
#define GV_MAX_CLAUSES 8  /* per include / exclude list */

enum { GV_REL_NONE = -1, GV_LEFT_OF = 0, GV_RIGHT_OF, GV_ABOVE, GV_BELOW, GV_NREL };
#define GV_POSITION_MARGIN 0.1

typedef struct {
    char cls[GV_NAME_MAX];
    int count;
    char color[GV_NAME_MAX]; /* "" when the clause asks for no color */
    int rel;                 /* GV_REL_NONE or GV_LEFT_OF..GV_BELOW */
    int target;              /* index of the include clause `rel` refers to */
} gv_clause;

typedef struct {
    char tag[GV_NAME_MAX];
    char prompt[GV_PROMPT_MAX];
    int n_include, n_exclude;
    gv_clause include[GV_MAX_CLAUSES];
    gv_clause exclude[GV_MAX_CLAUSES];
} gv_meta;

/* One detected object. Box in pixel coordinates, x0 <= x1, y0 <= y1 (x1, y1 exclusive edges,
 * like mmdet boxes). Higher score = more confident. color may be "" (unknown). */
typedef struct {
    const char *cls;
    const char *color;
    double x0, y0, x1, y1;
    double score;
} gv_det;

const char *gv_rel_name(int rel);    /* "left of", "right of", "above", "below" */
int gv_rel_from_name(const char *s); /* GV_REL_NONE when not one of those */

/* Parse one JSON line. `path` and `line` only name the place in error messages. */
int gv_parse_line(const char *text, const char *path, int line, gv_meta *out);
/* Parse a JSONL file (blank lines skipped). *out is malloc'd; free() it. Errors name file:line.
 * The same as gv_load_prompts(path, GV_FORMAT_JSONL, ...). */
int gv_load_jsonl(const char *path, gv_meta **out, int *n);

/* Prompt files: GenEval JSONL (one metadata record per line) or plain text (one prompt per line,
 * surrounding blanks trimmed; entries have only .prompt set). Both: UTF-8, an optional byte-order
 * mark at the very start is skipped, blank lines are skipped, CR LF line ends are accepted. Any
 * other U+FEFF, invalid UTF-8 or a NUL byte is an error naming file:line and column.
 * GV_FORMAT_AUTO: JSONL when the first non-blank character past the BOM is '{', else text. */
enum { GV_FORMAT_AUTO = 0, GV_FORMAT_JSONL, GV_FORMAT_TEXT };
/* From memory (len bytes; need not be NUL-terminated). *has_meta (optional): 1 for JSONL. */
int gv_parse_prompts(const char *buf, size_t len, const char *path, int format, gv_meta **out, int *n, int *has_meta);
/* From a regular file. */
int gv_load_prompts(const char *path, int format, gv_meta **out, int *n, int *has_meta);
/* 3 when buf starts with a UTF-8 byte-order mark (EF BB BF), else 0. */
size_t gv_bom_len(const char *buf, size_t len);
/* One line of a text input (without its newline): well-formed UTF-8, no NUL, no U+FEFF; else an
 * error "path:line: ..." naming the column. */
int gv_check_text_line(const char *s, size_t n, const char *path, long line);
/* Serialize in GenEval's own key order and spacing:
 * {"tag": ..., "include": [...], "exclude": [...], "prompt": ...} (no newline). Returns the
 * length, or a negative code when it does not fit in `cap` bytes. */
int gv_meta_to_json(const gv_meta *m, char *buf, size_t cap);

/* The set of relations (bit 1<<GV_LEFT_OF etc.) of box a relative to box b, with a margin. */
unsigned gv_relations(const gv_det *a, const gv_det *b, double margin);

/* Score one image: 1 = correct, 0 = wrong. `reason` (optional) gets GenEval-style reasons
 * separated by "; " ("" when correct). */
int gv_score(const gv_meta *m, const gv_det *dets, int n_dets, char *reason, size_t reason_cap);

/* Running summary over many images. */
typedef struct {
    int n_tags;
    char tag[16][GV_NAME_MAX];
    long tag_correct[16], tag_total[16];
    long images, images_correct;
    int n_prompts; /* size of the prompt table below */
    unsigned char *prompt_seen, *prompt_ok;
} gv_summary;

int gv_summary_init(gv_summary *s, int n_prompts);
void gv_summary_free(gv_summary *s);
/* Record one image of prompt `prompt_index` (0..n_prompts-1) with tag `tag`. */
int gv_summary_add(gv_summary *s, int prompt_index, const char *tag, int correct);
double gv_summary_tag_accuracy(const gv_summary *s, int t);
double gv_summary_overall(const gv_summary *s); /* mean of tag accuracies; 0 with no tags */
int gv_summary_prompts_scored(const gv_summary *s);
int gv_summary_prompts_correct(const gv_summary *s);
void gv_summary_print(const gv_summary *s, FILE *f);

#endif
