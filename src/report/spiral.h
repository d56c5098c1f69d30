/* report/spiral: the "From a Spiral to a Sink" figures of `sinkscope report` (Yang et al. 2026;
 * docs/experiment-format.md, section "Spiral to Sink figures in the report").
 *
 * Records of experiments run with spiral fields carry "spiral": one object per (site, step) of
 * the conditional batch element (docs/experiment-format.md, "Spiral fields in the records").
 * rp_spiral_parse reads them into rp_exp.spiral while records.jsonl is loaded (a malformed entry
 * is an error naming the file, line and entry); rp_spiral_analyze aggregates them per condition
 * and site (sites in model order: flat index, then site code), over every image of the
 * condition, in double, in the records' sorted order, so the output is a function of the set of
 * records; the writers add spiral_*.csv, the summary's "spiral" section and the HTML section
 * with its SVG charts. Experiments without spiral entries get none of these (their report is
 * byte-for-byte what it was). */
#ifndef SS_REPORT_SPIRAL_H
#define SS_REPORT_SPIRAL_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "models/site.h"
#include "report/report.h"

#define RPS_IOU_K 10 /* top-k of the IoU stability (pe2sink's top_k = 10), at most the entries' top_keys */
#define RPS_TOP 32   /* keys of the top-k chart (the paper's Figure 10) */

/* what an entry carries (bits of rps_entry.has) */
enum {
    RPS_BUDGET = 1u << 0,
    RPS_ENERGY = 1u << 1,
    RPS_QK = 1u << 2,      /* "qk" (sites without RoPE) */
    RPS_QK_POST = 1u << 3, /* "qk_post" (RoPE sites) */
    RPS_QK_PRE = 1u << 4,
    RPS_VNORM = 1u << 5,
    RPS_KNORM = 1u << 6,
    RPS_ACT = 1u << 7,
    RPS_MU = 1u << 8 /* "mu" and "key_types" (last step) */
};

/* the metrics reported by depth (spiral_depth.csv), in this order */
enum {
    RPS_M_XIMAGE, RPS_M_XUNIF, RPS_M_FAC, RPS_M_LOW_SINK, RPS_M_LOW_IMAGE, RPS_M_QK_SINK, RPS_M_QK_IMAGE, RPS_M_QKPOST_SINK,
    RPS_M_QKPOST_IMAGE, RPS_M_QKPRE_SINK, RPS_M_QKPRE_IMAGE, RPS_M_VN_SINK, RPS_M_VN_IMAGE, RPS_M_KN_SINK, RPS_M_KN_IMAGE,
    RPS_M_ACT_SINK, RPS_M_ACT_MAX, RPS_NM
};
extern const char *const RPS_METRIC[RPS_NM]; /* CSV / JSON names: "ki_x_image", ... */

/* One (site, step) entry of one record. */
typedef struct {
    int site, block, step; /* site: ss_site_code */
    double t_frac;
    int sink, sink_type;   /* sink_type: ss_tok */
    double x_uniform, x_image; /* NaN when null */
    unsigned has;
    int n_top;
    size_t top_off;        /* into the pools: top_keys, top_mu, top_types */
    double budget[SS_TOK_N];
    int budget_keys[SS_TOK_N];
    double m[RPS_NM];      /* the depth metrics (NaN when absent or null); m[0], m[1] = x_image, x_uniform */
    int n_mu;              /* RPS_MU: Tk */
    size_t mu_off;         /* into mu / mu_type */
} rps_entry;

typedef struct rp_spiral_data {
    rps_entry *ent;
    size_t n_ent, cap_ent;
    int *top_key;
    double *top_mu;
    unsigned char *top_type;
    size_t n_top, cap_top;
    float *mu;
    unsigned char *mu_type;
    size_t n_mu, cap_mu;
} rp_spiral_data;

/* load.c: the record's "spiral" (NULL: none) into e->spiral and r->spiral_off / n_spiral.
 * A malformed entry: SS_EFORMAT with ss_err "LABEL: line N: spiral[i] (SITE step S): WHAT". */
int rp_spiral_parse(rp_exp *e, rp_record *r, json_t *arr, const char *label, int line);
void rp_spiral_data_free(rp_spiral_data *d);

/* report.c: after rp_analyze; a->spiral stays NULL when no used record has spiral entries. */
int rp_spiral_analyze(rp_analysis *a);
void rp_spiral_free(rp_analysis *a);
/* output.c */
int rp_spiral_write_csvs(const rp_analysis *a, const char *dir);
/* the summary's "spiral" object, written at the writer's current position (depth: its indent level) */
void rp_spiral_write_json(const rp_analysis *a, FILE *f, int depth);
/* output.c: the key figures per site of the first analysed condition, for the terminal */
void rp_spiral_print(const rp_analysis *a, FILE *f);
/* html.c: the section, figures numbered from fig; returns the next figure number, or SS_ENOMEM */
int rp_spiral_write_html(FILE *f, const rp_analysis *a, int fig);

/* ---- the analysis (spiral.c), read by the HTML writer (spiral_svg.c) ---- */

typedef struct {
    int step;
    double t_frac;
    int n;                   /* entries (images) at this step */
    int unique;              /* distinct top-1 sinks */
    int mode_sink, mode_type, mode_count; /* most frequent top-1 sink (ties: the lower key) */
    int iou_n;               /* images with this step and the previous one */
    double iou;              /* mean IoU of the top-k sets with the previous step (NaN at the first) */
    int xi_n, xu_n;
    double xi_mean, xi_sd, xu_mean, xu_sd;
} rps_step;

typedef struct {
    int n;
    double mean, lo, hi;     /* mean and 95% t interval over images (NaN when n < 2) */
} rps_stat;

typedef struct {
    int key, type;
    double type_share, mu;   /* mode type and its share over images; mean mu */
    int n;
} rps_key;

typedef struct {
    int site, block;
    int n_steps;
    rps_step *steps;
    int last;                /* the last step */
    int n_last;              /* entries at the last step */
    double iou_all;          /* mean over steps of rps_step.iou */
    rps_stat m[RPS_NM];      /* at the last step */
    int budget_n;            /* entries with a budget at the last step */
    double budget[SS_TOK_N], budget_keys[SS_TOK_N]; /* means */
    int has_type[SS_TOK_N];  /* a type with keys in some entry */
    int n_keys;              /* mu per key at the last step: keys 0..n_keys-1 (source mu) */
    rps_key *keys;
    int keys_from_mu;        /* 1: every key from "mu"; 0: from the entries' top lists (absent keys count 0) */
    int keys_n;              /* entries the keys average over */
    int n_top;
    rps_key top[RPS_TOP];    /* by decreasing mean mu (ties: the lower key) */
} rps_site;

typedef struct {
    int cond;
    int n_images;            /* records with spiral entries */
    int n_sites;
    rps_site *sites;
} rps_cond;

typedef struct rp_spiral {
    int n_conds;
    rps_cond *conds;         /* conditions with spiral entries, in experiment order (baseline first when it has them) */
} rp_spiral;

/* the label of a site code ("joint.3") */
const char *rps_site_name(char *buf, size_t cap, int site);

#endif
