/* report: the statistics report of an experiment folder (docs/experiment-format.md).
 *
 * report_run() reads EXP/experiment.json and EXP/records.jsonl, pairs every condition's
 * records with the baseline's by (prompt_index, seed), and writes EXP/report/ (or opts.out_dir):
 * summary.json, one CSV per analysis and a self-contained report.html. With print_table the key
 * tables also go to opts.log (stdout by default).
 *
 * Conventions (also printed in the report's Methods section):
 *   - Pairs: a (prompt_index, seed) present for both the condition and the baseline; pairs
 *     missing on either side are skipped and counted.
 *   - Alignment (`geneval`, 0/1 per image): paired delta = condition - baseline; 95% percentile
 *     bootstrap CI of the mean (opts.bootstrap resamples); paired t-test p; Holm across the
 *     conditions; TOST equivalence within +-opts.margin (default 0.05 = 5 points of accuracy)
 *     at alpha 0.05.
 *   - mse / psnr / ssim are already computed against the paired baseline image, so the report
 *     gives their mean with a CI and a one-sample t-test against the baseline's value with
 *     itself (mse 0, ssim 1, 1-ssim 0); psnr is only described (infinite for identical images).
 *   - Random controls: a `select: random` condition matches a `select: topk` condition when
 *     every other intervention field is equal (layers as a set, k, rank_by, keys, queries, path,
 *     eta, value, alpha, steps window). dd = sink - random per pair (shared baseline), one-sided:
 *     perceptual shift H1 dd > 0; alignment H1 dd < 0 (sink removal loses more accuracy).
 *   - Sweeps: two or more conditions equal in every field except name and `eta` (score path) or
 *     `k`; dose trend = OLS slope and Spearman rho over the pairs.
 *   - Bootstrap seeds: opts.seed mixed with a hash of the analysis' name, so every CI is
 *     reproducible and does not change when conditions are added.
 *   - Output is a function of the set of records only (records are sorted first), so the same
 *     records give the same bytes. A key (condition, prompt_index, seed) recorded more than once
 *     (the runner redid an item) is taken from its LAST line; the earlier lines are counted as
 *     duplicates and noted.
 *   - Images: every used record's image is checked (a relative path inside EXP, a regular file,
 *     and when the record has them "image_bytes" and "image_sha256"); a missing, unreadable,
 *     wrong-sized or wrong-digest image is a warning, counted in summary.json "images", and the
 *     record's image metrics (geneval, mse, psnr, ssim, and those of pairs with it as baseline)
 *     and its panel are left out.
 *   - Undefined statistics: a test needs n >= 2 (a trend n >= 3) and a non-zero standard
 *     deviation; otherwise p, Holm p and the verdict are null / "no verdict" with the reason
 *     ("n=1 < 2", "zero variance of the paired differences (all +0.1)") in summary.json, the
 *     CSVs, the HTML and the terminal table.
 */
#ifndef SS_REPORT_H
#define SS_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "eval/stats.h"
#include "sink/condition.h"

typedef struct {
    const char *exp_dir;
    const char *out_dir; /* NULL: EXP/report */
    double margin;       /* TOST margin for geneval accuracy (0.05) */
    double margin_clip_t; /* TOST margin for the paired ΔCLIP-T (0.002, the paper's) */
    int bootstrap;       /* resamples (1000) */
    int fid_bootstrap;   /* resamples of FID_shift's CI (RP_FID_BOOTSTRAP; 0: no CI): each costs O(N^3) */
    uint64_t seed;       /* bootstrap base seed (0) */
    int print_table;
    FILE *log;           /* terminal tables; NULL: stdout */
} report_opts;

void report_opts_default(report_opts *o);
/* SS_OK or a negative SS_E* code with ss_err() set. report_main (src/exp/report_hook.h, called by
 * `run` after an experiment) is report_run with the defaults; it prints nothing on error. */
int report_run(const report_opts *o);

/* ------------------------------------------------------------------------------------------
 * Internals shared by the report's source files.
 * ------------------------------------------------------------------------------------------ */

#define RP_ALPHA 0.05
#define RP_LEVEL 0.95
#define RP_NSTAT 10 /* probe statistics per (block, step), in rp_probe's order */

typedef struct {
    int block, step;
    int site; /* the record's "site" (models/site.h code: attn2.i, double.i, single.j, ...), -1 when absent (joint.i = block) */
    double t_frac;
    double max_mass, entropy, top5, idx0, text, act_max, act_p95; /* NaN when absent */
    double word, eos, pad; /* shares of heads whose top-1 key is a word, <eos>, <pad>; NaN when absent */
    size_t key_off;
    int n_keys; /* top-1 key per head, in the key pool */
} rp_probe;

typedef struct {
    int block, step;
    int site; /* as rp_probe.site */
    double before, after;
    int n_keys, n_distinct; /* selected keys over all heads, and how many distinct */
} rp_verif;

/* what the image check found (rp_verify_images) */
enum { RP_IMG_OK, RP_IMG_NOPATH, RP_IMG_BADPATH, RP_IMG_MISSING, RP_IMG_UNREADABLE, RP_IMG_SIZE, RP_IMG_DIGEST, RP_IMG_FIELDS,
       RP_IMG_NSTATE };

typedef struct {
    int cond, prompt;
    uint64_t seed; /* seeds are unsigned 64-bit (JSON integer, or a decimal string / integer >= 2^63) */
    int tag; /* index into rp_exp.tags, -1 when absent */
    int line; /* 1-based line in records.jsonl */
    char *image, *prompt_text;
    long long image_bytes; /* "image_bytes", -1 when absent */
    char image_sha256[65]; /* "image_sha256" (lower-case hex), "" when absent */
    int img_state;         /* RP_IMG_*: anything but RP_IMG_OK excludes the record from image metrics */
    int has_gv;
    double gv, mse, psnr, ssim; /* NaN when absent; psnr may be +inf */
    double clip_t, lpips;       /* `run --metrics`: NaN when absent (lpips: absent for the baseline) */
    char *features;             /* `run --metrics fid`: the features file (relative), NULL when absent */
    char features_sha256[65];   /* its recorded SHA-256, "" when absent */
    int feat_row;               /* row of rp_exp.feat holding its features, -1 when absent or unusable */
    size_t probe_off, verif_off;
    int n_probe, n_verif;
    size_t spiral_off; /* its "spiral" entries in rp_exp.spiral (report/spiral.h), n_spiral of them */
    int n_spiral;
} rp_record;

typedef struct {
    char name[128];
    int parsed; /* the condition object parsed with sink_condition_from_json */
    sink_condition c;
    char desc[256]; /* short human description */
} rp_cond;

typedef struct {
    /* experiment.json */
    char model[512], prompts[512], model_digest[128], prompts_digest[128], version[64];
    int n_prompts, seeds_per_prompt, steps;
    long long base_seed;
    double cfg;
    int probe_topk;
    char probe_queries[32];
    rp_cond *conds;
    int n_conds;
    /* records.jsonl, sorted by (cond, prompt, seed) */
    rp_record *recs;
    int n_recs;
    int n_clip_t, n_lpips; /* records carrying metrics.clip_t / metrics.lpips (0: older experiments) */
    int n_fid;             /* records naming a features file (run --metrics fid; 0: older experiments) */
    char fid_mode[32];     /* experiment.json metrics.fid_mode ("" when absent) */
    char precision[16];    /* experiment.json "precision" (run --precision bf16; "" when absent: f32) */
    float *feat;           /* [rows, RP_FID_DIM] the usable features (rp_load_features) */
    int n_feat_rows, n_feat_flagged;
    int *cond_first, *cond_count; /* per condition: its slice of recs */
    char **tags;
    int n_tags;
    rp_probe *probes;
    size_t n_probes, cap_probes;
    int *keys;
    size_t n_keys, cap_keys;
    rp_verif *verifs;
    size_t n_verifs, cap_verifs;
    struct rp_spiral_data *spiral; /* the records' "spiral" entries (report/spiral.h); NULL when none has them */
    /* what loading skipped */
    int n_lines, n_blank, n_bad, n_truncated, n_dup, n_unknown_cond;
    /* the image check: records checked, with size/digest fields, existence only, per RP_IMG_* */
    int img_checked, img_with_digest, img_existence_only, img_flagged, img_count[RP_IMG_NSTATE];
    int img_unnamed; /* records without an "image" field: not checked */
    char **notes;
    int n_notes;
    FILE *warn; /* where rp_warn also prints (NULL: notes only) */
} rp_exp;

/* metrics reported per condition */
enum { M_GENEVAL, M_SHIFT, M_MSE, M_PSNR, M_SSIM, M_CLIP_T, M_LPIPS, M_FID, M_COUNT };
#define RP_FID_DIM 2048 /* Inception pool3 */
#define RP_FID_BOOTSTRAP 200
extern const char *const RP_METRIC_KEY[M_COUNT];   /* "geneval", "shift", ... (file/JSON keys) */
extern const char *const RP_METRIC_LABEL[M_COUNT]; /* "Δ alignment", "1−SSIM", ... */
/* clip_t and lpips are reported only for experiments whose records have them (run --metrics):
 * older experiments report exactly as before. ΔCLIP-T is paired like alignment (condition -
 * baseline, TOST within +-margin_clip_t); LPIPS is, like 1−SSIM, already against the baseline. */
#define RP_MARGIN_CLIP_T 0.002
int rp_metric_present(const rp_exp *e, int k);
/* The TOST margin of a paired metric (geneval, clip_t); NaN for the others. */
double rp_metric_margin(const report_opts *o, int k);

/* Reasons why a statistic is not reported, in a fixed buffer ("" when it is). */
#define RP_WHY 160

typedef struct {
    int n;          /* pairs with the metric on both sides */
    int n_missing;  /* pairs without it */
    int n_inf;      /* psnr: identical images (infinite PSNR), excluded from the mean */
    double mean;    /* geneval: mean paired delta; others: mean value vs the baseline image */
    double ci_lo, ci_hi;
    double base_mean, cond_mean; /* geneval: accuracy of the baseline and the condition on the pairs */
    int tested;
    double t, p, p_holm;
    int has_tost;
    stats_tost tost;
    const char *verdict; /* geneval: equivalent / different / inconclusive / no verdict */
    int eps_added, identical; /* fid: the eps rule's offset was used; every pair's features bit-identical */
    char why[RP_WHY];    /* why p (and the verdict) are undefined: "n=1 < 2", "zero variance ..."; "" if defined */
} rp_metric;

typedef struct {
    int n_pairs;            /* (prompt, seed) present for both */
    int n_no_baseline;      /* condition records whose baseline record is absent */
    int n_not_run;          /* baseline records without this condition's record */
    int *ci, *bi;           /* record indices of the condition and the baseline, per pair */
    rp_metric m[M_COUNT];
    int random_ctrl;        /* matched random control (condition index) or -1 */
} rp_cond_res;

typedef struct {
    int ok;
    double mean_sink, mean_rand;
    stats_dd_result dd; /* mean/CI of sink - random */
    double p_one;       /* one-sided p in the stated direction */
    char why[RP_WHY];   /* why p is undefined, "" if defined */
} rp_dd_metric;

typedef struct {
    int sink, rand, n;
    rp_dd_metric shift, align;
    rp_dd_metric lpips; /* sink - random LPIPS, H1 > 0 (only when the records have lpips) */
} rp_dd;

typedef struct {
    int param; /* 0 eta, 1 k */
    int n;     /* conditions in the sweep, sorted by dose */
    int *conds;
    double *dose;
    int has_trend[2]; /* [0] alignment, [1] shift */
    stats_trend trend[2];
    int n_points[2];             /* pairs available for the trend */
    char why[2][RP_WHY];         /* why the regression p is undefined (or no trend at all) */
    char rho_why[2][RP_WHY];     /* why Spearman's rho / its p is undefined */
} rp_sweep;

typedef struct {
    int n;
    double mean, ci_lo, ci_hi, p, shift;
    int n_shift;
    char why[RP_WHY];
} rp_tag_cell;

typedef struct {
    int block;
    int site; /* -1: a joint block (rows as before sites existed); else the site code, labelled by its name */
    int n_steps;
    int *steps;
    double *t_frac;
    int *n;            /* images per step */
    double *mean[RP_NSTAT]; /* max_mass, entropy, top5, idx0, text, act_max, act_p95, word, eos, pad per step */
    double *sd[RP_NSTAT];
    double all_mean[RP_NSTAT];
    int n_entries;
    /* locality of the top-1 keys */
    long n_keys;
    int key_min, key_max, n_distinct;
    double key_p05, key_p50, key_p95;
    int top_key[5];
    long top_count[5];
    int n_top;
    int *ukey;              /* the distinct keys, ascending, and how often each was top-1 */
    long *ucount;
    int n_bins, bin_w, bin_lo; /* histogram over the central window around p05..p95 */
    long *bins, n_in_window;
} rp_block_dyn;

typedef struct {
    int block, site, n, n_zero; /* site as rp_block_dyn.site */
    double before, after, max_after, factor; /* factor = before/after, +inf when after == 0 */
    double keys, distinct;                   /* mean selected keys (all heads) and distinct ones per entry */
} rp_verif_row;

typedef struct {
    int cond;
    int n_rows;
    rp_verif_row *rows;
} rp_verif_cond;

/* A FID calibration row (no intervention): two sets of baseline images (fidshift.c). */
typedef struct {
    const char *key;   /* "seed_variation", "prompt_halves" */
    const char *label; /* "seed variation", ... */
    char definition[400];
    rp_metric m;       /* FID with its bootstrap CI; n = pairs (images per set) */
} rp_fid_calib;

typedef struct {
    const report_opts *o;
    rp_exp *e;
    rp_fid_calib fid_cal[2];
    int n_fid_cal;
    rp_cond_res *cr; /* per condition (index 0 unused) */
    rp_dd *dd;
    int n_dd;
    rp_sweep *sw;
    int n_sw;
    rp_tag_cell *tags; /* [cond * n_tags + tag]; cond 0: baseline accuracy in .mean */
    rp_block_dyn *dyn;
    int n_dyn, n_dyn_images;
    rp_verif_cond *ver;
    int n_ver;
    struct rp_spiral *spiral; /* the "Spiral to Sink" figures (report/spiral.h); NULL without spiral entries */
} rp_analysis;

/* A dynamics or verification row's label, into buf (returns buf): the site's name ("attn2.0",
 * "single.3") when the records name one; else the block number ("12") as before sites existed,
 * or "joint.12" when other rows of the report are named sites (named = rp_has_sites). */
const char *rp_site_label(char *buf, size_t cap, int block, int site, int named);
/* 1 when some dynamics or verification row is of a named site: the CSVs then carry a "site" column. */
int rp_has_sites(const rp_analysis *a);

/* load.c: warn (stderr for `report`, or NULL) also gets the image warnings */
int rp_load(rp_exp *e, const char *dir, FILE *warn);
void rp_exp_free(rp_exp *e);
void rp_note(rp_exp *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* a note that is also printed to e->warn ("sinkscope report: warning: ...") */
void rp_warn(rp_exp *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* index of the record (cond, prompt, seed) or -1 */
int rp_find(const rp_exp *e, int cond, int prompt, uint64_t seed);
/* The records part of rp_load, for a stream (fuzz/fuzz_records.c): e->conds / n_conds must be
 * set. Reads every line (label names the stream in notes), keeps the last record of each key,
 * sorts, fills the per-condition slices. Errors: out of memory, a read error, a malformed "spiral"
 * entry (SS_EFORMAT, "LABEL: line N: spiral[i] ...": report/spiral.h). */
int rp_load_records_stream(rp_exp *e, FILE *f, const char *label);
/* One records.jsonl line (without its newline) as a JSON object: jansson's parser, after quoting
 * plain integers in [2^63, 2^64) (unsigned seeds) that jansson cannot hold. NULL if invalid
 * (je set). */
json_t *rp_parse_line(const char *line, size_t len, json_error_t *je);
/* Checks each record's image (path inside the folder, exists, size and SHA-256 when recorded);
 * flagged records lose their image metrics. Warnings via rp_warn. */
int rp_verify_images(rp_exp *e, const char *dir);
const char *rp_img_problem(int state); /* "missing", "wrong size", ... */
/* Reads an unsigned 64-bit seed: a JSON integer >= 0 or a string of decimal digits. */
int rp_seed_value(json_t *v, uint64_t *out);

/* load.c: reads the features of every record that names them (after rp_verify_images: records
 * with a flagged image are skipped); a file that is missing, of another SHA-256 than recorded, not
 * a safetensors file with "pool3" F32 [2048] or of another mode is a warning, and the record is
 * left out of FID_shift. */
int rp_load_features(rp_exp *e, const char *dir);

/* fidshift.c: FID_shift per condition (m[M_FID]) and the calibration rows, when the records have
 * features. FID_shift = the Frechet distance (metric/fid.h, fid_frechet, the experiment's mode)
 * between the condition's images and their paired baseline images, pairs in image file name order
 * (as `sinkscope metric fid` reads two folders); 0 exactly when every pair's features are
 * bit-identical. CI: percentile bootstrap over pairs (a pair's two images resampled together),
 * opts.fid_bootstrap resamples, each the exact FID of the resample (fid_gram_resample up to
 * N = 2048 pairs, fid_frechet of the resampled rows beyond). */
int rp_analyze_fid(rp_analysis *a);

/* analyze.c */
int rp_analyze(rp_analysis *a, rp_exp *e, const report_opts *o);
void rp_analysis_free(rp_analysis *a);
uint64_t rp_seed(uint64_t base, const char *what, const char *a, const char *b);

/* output.c: numbers, CSV, summary.json, terminal tables, atomic files */
void rp_num(char *buf, size_t cap, double x);                 /* shortest round-trip, "" for NaN */
void rp_fmt_p(char *buf, size_t cap, double p);               /* 0.034, 2.1e-05 */
void rp_fmt_signed(char *buf, size_t cap, double x, int dec); /* +0.021, −0.004 (UTF-8 minus) */
int rp_write_file(const char *path, const char *data, size_t len); /* tmp + rename */
/* Every file the report writes into its output folder (NULL-terminated); report_run refuses an
 * output folder where one of them is an input (experiment.json, records.jsonl, an image). */
extern const char *const RP_OUTPUT_FILES[];
int rp_write_csvs(const rp_analysis *a, const char *out_dir);
/* One CSV field: s as is, or quoted (doubled quotes) when it holds a comma, quote or line end;
 * NULL writes nothing. A number as rp_num writes it (empty when not finite). */
void rp_csv_str(FILE *f, const char *s);
void rp_csv_num(FILE *f, double x);
int rp_write_summary(const rp_analysis *a, const char *out_dir);
void rp_print_tables(const rp_analysis *a, FILE *f);

/* html.c */
int rp_write_html(const rp_analysis *a, const char *out_dir);
/* Charts: round [lo, hi] out to a 1-2-5 step giving about `target` intervals (returns the step);
 * a tick's label at that step's precision, with a typographic minus. */
double rp_nice_range(double *lo, double *hi, int target);
void rp_tick_label(char *b, size_t cap, double v, double step);
/* HTML/SVG text: & < > " ' escaped (NULL writes nothing); an <svg> element's opening tag (size,
 * viewBox, aria-label, font); a <text> at (x, y) with text-anchor and optional extra attributes. */
#define RP_MINUS "\xe2\x88\x92" /* U+2212, the typographic minus of tick labels */
void rp_html_esc(FILE *f, const char *s);
void rp_svg_open(FILE *f, int w, int h, const char *label);
void rp_svg_text(FILE *f, double x, double y, const char *anchor, const char *extra, const char *s);

#endif
