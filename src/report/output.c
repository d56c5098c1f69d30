/* report/output: number formatting, CSV files, summary.json and the terminal tables.
 * Numbers in files are written as the shortest text that reads back as the same double, so the
 * files are exact and byte-stable. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "metric/fid.h"
#include "report/report.h"
#include "report/spiral.h"

#define FID_RULE "pytorch-fid's: 1e-6 I added to both covariances only when the first square root is not finite (" \
                 FID_RULE_EPS_IF_NONFINITE ")"

void rp_num(char *buf, size_t cap, double x) {
    if (isnan(x)) {
        snprintf(buf, cap, "%s", "");
        return;
    }
    if (isinf(x)) {
        snprintf(buf, cap, "%s", x > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) return;
    }
}

void rp_fmt_p(char *buf, size_t cap, double p) {
    if (isnan(p)) snprintf(buf, cap, "–");
    else if (p == 0) snprintf(buf, cap, "0");
    else if (p >= 0.001) snprintf(buf, cap, "%.3f", p);
    else snprintf(buf, cap, "%.1e", p);
}

void rp_fmt_signed(char *buf, size_t cap, double x, int dec) {
    if (isnan(x)) {
        snprintf(buf, cap, "–");
        return;
    }
    char t[64];
    snprintf(t, sizeof t, "%.*f", dec, fabs(x));
    int zero = 1;
    for (const char *s = t; *s && zero; s++) zero = *s == '0' || *s == '.';
    if (snprintf(buf, cap, "%s%s", zero ? "" : x < 0 ? "\xe2\x88\x92" : "+", t) >= (int)cap && cap) buf[cap - 1] = 0;
}

int rp_write_file(const char *path, const char *data, size_t len) { return ss_write_atomic(path, data, len); }

/* ---- a memory stream that is written atomically at the end ---- */

typedef struct {
    FILE *f;
    char *buf;
    size_t len;
} mfile;

static int mopen(mfile *m) {
    m->buf = NULL;
    m->len = 0;
    m->f = open_memstream(&m->buf, &m->len);
    return m->f ? 0 : ss_fail(SS_ENOMEM, "out of memory");
}

static int mclose(mfile *m, const char *dir, const char *name) {
    int bad = ferror(m->f);
    fclose(m->f);
    int rc = 0;
    if (bad) rc = ss_fail(SS_ENOMEM, "out of memory writing %s", name);
    else {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = rp_write_file(path, m->buf, m->len);
    }
    free(m->buf);
    return rc;
}

/* ---- CSV ---- */

void rp_csv_str(FILE *f, const char *s) {
    if (!s) return;
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void rp_csv_num(FILE *f, double x) {
    char b[40];
    rp_num(b, sizeof b, x);
    fputs(b, f);
}

/* fields: 's' string, 'd' double, 'i' int; ',' separated, newline at the end */
static void csv_row(FILE *f, const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    for (const char *t = types; *t; t++) {
        if (t != types) fputc(',', f);
        if (*t == 's') rp_csv_str(f, va_arg(ap, const char *));
        else if (*t == 'd') rp_csv_num(f, va_arg(ap, double));
        else fprintf(f, "%d", va_arg(ap, int));
    }
    va_end(ap);
    fputc('\n', f);
}

static const char *PARAM_NAME[2] = {"eta", "k"};
static const char *STAT_KEY[RP_NSTAT] = {"max_mass", "entropy", "top5", "index0", "text", "act_max", "act_p95",
                                         "word", "eos", "pad"};

static int peak_step(const rp_block_dyn *d) {
    int best = -1;
    for (int k = 0; k < d->n_steps; k++)
        if (isfinite(d->mean[0][k]) && (best < 0 || d->mean[0][k] > d->mean[0][best])) best = k;
    return best;
}

int rp_write_csvs(const rp_analysis *a, const char *dir) {
    const rp_exp *e = a->e;
    mfile m;
    int rc;

    if ((rc = mopen(&m))) return rc;
    fputs("condition,index,description,metric,n,n_missing,mean,ci_lo,ci_hi,t,p,p_holm,tost_margin,tost_p,tost_ci90_lo,"
          "tost_ci90_hi,verdict,baseline_accuracy,condition_accuracy,n_identical,pairs,no_baseline,not_run,reason\n", m.f);
    for (int c = 1; c < e->n_conds; c++)
        for (int k = 0; k < M_COUNT; k++) {
            if (!rp_metric_present(e, k)) continue;
            const rp_cond_res *r = &a->cr[c];
            const rp_metric *x = &r->m[k];
            csv_row(m.f, "sissiiddddddddddsddiiiis", e->conds[c].name, c, e->conds[c].desc, RP_METRIC_KEY[k], x->n, x->n_missing,
                    x->mean, x->ci_lo, x->ci_hi, x->t, x->p, x->p_holm, x->has_tost ? rp_metric_margin(a->o, k) : NAN,
                    x->has_tost ? x->tost.p : NAN, x->has_tost ? x->tost.ci_lo : NAN, x->has_tost ? x->tost.ci_hi : NAN,
                    k == M_GENEVAL || k == M_CLIP_T ? x->verdict : "", x->base_mean, x->cond_mean, x->n_inf, r->n_pairs, r->n_no_baseline,
                    r->n_not_run, x->why);
        }
    for (int i = 0; i < a->n_fid_cal; i++) { /* FID calibration: baseline against baseline */
        const rp_fid_calib *q = &a->fid_cal[i];
        char key[64];
        snprintf(key, sizeof key, "fid_%s", q->key);
        csv_row(m.f, "sissiiddddddddddsddiiiis", e->conds[0].name, 0, q->definition, key, q->m.n, 0, q->m.mean, q->m.ci_lo,
                q->m.ci_hi, NAN, NAN, NAN, NAN, NAN, NAN, NAN, "", NAN, NAN, 0, q->m.n, 0, 0, q->m.why);
    }
    if ((rc = mclose(&m, dir, "conditions.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs("sink,random,metric,n,mean_sink,mean_random,dd,ci_lo,ci_hi,t,df,h1,p_one_sided,p_two_sided,reason\n", m.f);
    for (int i = 0; i < a->n_dd; i++) {
        const rp_dd *d = &a->dd[i];
        for (int w = 0; w < 3; w++) {
            if (w == 2 && !rp_metric_present(e, M_LPIPS)) continue;
            const rp_dd_metric *x = w == 2 ? &d->lpips : w ? &d->align : &d->shift;
            const char *key = w == 2 ? "lpips" : w ? "geneval" : "shift", *h1 = w == 1 ? "sink < random" : "sink > random";
            if (!x->ok) { /* too few triples: the row says so */
                csv_row(m.f, "sssidddddddsdds", e->conds[d->sink].name, e->conds[d->rand].name, key, x->dd.n,
                        NAN, NAN, NAN, NAN, NAN, NAN, NAN, h1, NAN, NAN, x->why);
                continue;
            }
            csv_row(m.f, "sssidddddddsdds", e->conds[d->sink].name, e->conds[d->rand].name, key, x->dd.n,
                    x->mean_sink, x->mean_rand, x->dd.mean, x->dd.ci_lo, x->dd.ci_hi, x->dd.t, x->dd.df,
                    h1, x->p_one, x->dd.p_two, x->why);
        }
    }
    if ((rc = mclose(&m, dir, "dd.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs("sweep,param,condition,dose,metric,n,mean,ci_lo,ci_hi,p,reason\n", m.f);
    for (int i = 0; i < a->n_sw; i++) {
        const rp_sweep *s = &a->sw[i];
        for (int j = 0; j < s->n; j++)
            for (int w = 0; w < 2; w++) {
                const rp_metric *x = &a->cr[s->conds[j]].m[w ? M_SHIFT : M_GENEVAL];
                csv_row(m.f, "issdsidddds", i + 1, PARAM_NAME[s->param], e->conds[s->conds[j]].name, s->dose[j],
                        RP_METRIC_KEY[w ? M_SHIFT : M_GENEVAL], x->n, x->mean, x->ci_lo, x->ci_hi, x->p, x->why);
            }
    }
    if ((rc = mclose(&m, dir, "dose_response.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs("sweep,param,conditions,metric,n,slope,slope_se,intercept,r,p,spearman_rho,spearman_p,reason,spearman_reason\n", m.f);
    for (int i = 0; i < a->n_sw; i++) {
        const rp_sweep *s = &a->sw[i];
        char names[2048] = "";
        for (int j = 0; j < s->n; j++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", j ? ";" : "", e->conds[s->conds[j]].name);
        for (int w = 0; w < 2; w++) {
            const stats_trend *t = &s->trend[w];
            if (!s->has_trend[w]) {
                csv_row(m.f, "isssidddddddss", i + 1, PARAM_NAME[s->param], names, RP_METRIC_KEY[w ? M_SHIFT : M_GENEVAL],
                        s->n_points[w], NAN, NAN, NAN, NAN, NAN, NAN, NAN, s->why[w], s->rho_why[w]);
                continue;
            }
            csv_row(m.f, "isssidddddddss", i + 1, PARAM_NAME[s->param], names, RP_METRIC_KEY[w ? M_SHIFT : M_GENEVAL], t->n, t->slope,
                    t->slope_se, t->intercept, t->r, t->p, t->rho, t->rho_p, s->why[w], s->rho_why[w]);
        }
    }
    if ((rc = mclose(&m, dir, "dose_trend.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs("tag,condition,n,value,ci_lo,ci_hi,p,shift,n_shift,reason\n", m.f);
    for (int t = 0; t < e->n_tags; t++)
        for (int c = 0; c < e->n_conds; c++) {
            const rp_tag_cell *x = &a->tags[c * e->n_tags + t];
            csv_row(m.f, "ssidddddis", e->tags[t], e->conds[c].name, x->n, x->mean, x->ci_lo, x->ci_hi, x->p, x->shift,
                    x->n_shift, x->why);
        }
    if ((rc = mclose(&m, dir, "tags.csv"))) return rc;

    const int named = rp_has_sites(a); /* then a "site" column after "block" */
    char lab[48];
#define SITE_COL(blk, st) (named ? fprintf(m.f, "%s,", rp_site_label(lab, sizeof lab, blk, st, 1)) : 0)
    if ((rc = mopen(&m))) return rc;
    fputs(named ? "block,site,step,t_frac,n" : "block,step,t_frac,n", m.f);
    for (int s = 0; s < RP_NSTAT; s++) fprintf(m.f, ",%s,%s_sd", STAT_KEY[s], STAT_KEY[s]);
    fputc('\n', m.f);
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        for (int k = 0; k < d->n_steps; k++) {
            fprintf(m.f, "%d,", d->block);
            SITE_COL(d->block, d->site);
            fprintf(m.f, "%d,", d->steps[k]);
            rp_csv_num(m.f, d->t_frac[k]);
            fprintf(m.f, ",%d", d->n[k]);
            for (int s = 0; s < RP_NSTAT; s++) {
                fputc(',', m.f), rp_csv_num(m.f, d->mean[s][k]);
                fputc(',', m.f), rp_csv_num(m.f, d->sd[s][k]);
            }
            fputc('\n', m.f);
        }
    }
    if ((rc = mclose(&m, dir, "dynamics.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs(named ? "block,site,entries" : "block,entries", m.f);
    for (int s = 0; s < RP_NSTAT; s++) fprintf(m.f, ",%s", STAT_KEY[s]);
    fputs(",peak_step,peak_t_frac,top1_keys,key_min,key_p05,key_median,key_p95,key_max,distinct_keys,most_frequent_keys\n",
          m.f);
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        int pk = peak_step(d);
        char top[256] = "";
        for (int q = 0; q < d->n_top; q++)
            snprintf(top + strlen(top), sizeof top - strlen(top), "%s%d:%ld", q ? ";" : "", d->top_key[q], d->top_count[q]);
        fprintf(m.f, "%d,", d->block);
        SITE_COL(d->block, d->site);
        fprintf(m.f, "%d", d->n_entries);
        for (int s = 0; s < RP_NSTAT; s++) fputc(',', m.f), rp_csv_num(m.f, d->all_mean[s]);
        fprintf(m.f, ",%d,", pk >= 0 ? d->steps[pk] : -1);
        rp_csv_num(m.f, pk >= 0 ? d->t_frac[pk] : NAN);
        fprintf(m.f, ",%ld,", d->n_keys);
        if (d->n_keys) {
            fprintf(m.f, "%d,", d->key_min);
            rp_csv_num(m.f, d->key_p05), fputc(',', m.f), rp_csv_num(m.f, d->key_p50), fputc(',', m.f), rp_csv_num(m.f, d->key_p95);
            fprintf(m.f, ",%d,%d,%s\n", d->key_max, d->n_distinct, top);
        } else {
            fputs(",,,,,,\n", m.f);
        }
    }
    if ((rc = mclose(&m, dir, "dynamics_blocks.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs(named ? "block,site,key,count,share\n" : "block,key,count,share\n", m.f);
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        for (int i = 0; i < d->n_distinct; i++) {
            fprintf(m.f, "%d,", d->block);
            SITE_COL(d->block, d->site);
            fprintf(m.f, "%d,%ld,", d->ukey[i], d->ucount[i]);
            rp_csv_num(m.f, (double)d->ucount[i] / d->n_keys);
            fputc('\n', m.f);
        }
    }
    if ((rc = mclose(&m, dir, "locality.csv"))) return rc;

    if ((rc = mopen(&m))) return rc;
    fputs(named ? "condition,block,site,n,mass_before,mass_after,max_after,reduction,removed,n_zero_after,keys_per_entry,"
                  "distinct_keys_per_entry\n"
                : "condition,block,n,mass_before,mass_after,max_after,reduction,removed,n_zero_after,keys_per_entry,"
                  "distinct_keys_per_entry\n",
          m.f);
    for (int i = 0; i < a->n_ver; i++)
        for (int b = 0; b < a->ver[i].n_rows; b++) {
            const rp_verif_row *r = &a->ver[i].rows[b];
            if (named)
                csv_row(m.f, "sisiddddsidd", e->conds[a->ver[i].cond].name, r->block, rp_site_label(lab, sizeof lab, r->block, r->site, 1),
                        r->n, r->before, r->after, r->max_after, r->factor, r->n && r->n_zero == r->n ? "yes" : "no", r->n_zero,
                        r->keys, r->distinct);
            else
                csv_row(m.f, "siiddddsidd", e->conds[a->ver[i].cond].name, r->block, r->n, r->before, r->after, r->max_after,
                        r->factor, r->n && r->n_zero == r->n ? "yes" : "no", r->n_zero, r->keys, r->distinct);
        }
#undef SITE_COL
    if ((rc = mclose(&m, dir, "verification.csv"))) return rc;
    return rp_spiral_write_csvs(a, dir); /* spiral_*.csv, only with spiral entries */
}

/* ---- summary.json: a tiny streaming writer (exact numbers, stable layout) ---- */

typedef struct {
    FILE *f;
    int depth;
    int first[64];
    int after_key;
} jw;

static void jw_indent(jw *w) {
    fputc('\n', w->f);
    for (int i = 0; i < w->depth; i++) fputs("  ", w->f);
}

static void jw_pre(jw *w) {
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth > 0) {
        if (!w->first[w->depth]) fputc(',', w->f);
        w->first[w->depth] = 0;
        jw_indent(w);
    }
}

static void jw_strraw(jw *w, const char *s) {
    fputc('"', w->f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(w->f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", w->f);
        else if (*p < 0x20) fprintf(w->f, "\\u%04x", *p);
        else fputc(*p, w->f);
    }
    fputc('"', w->f);
}

static void jw_open(jw *w, char c) {
    jw_pre(w);
    fputc(c, w->f);
    w->first[++w->depth] = 1;
}
static void jw_close(jw *w, char c) {
    int empty = w->first[w->depth];
    w->depth--;
    if (!empty) jw_indent(w);
    fputc(c, w->f);
}
static void jw_key(jw *w, const char *k) {
    jw_pre(w);
    jw_strraw(w, k);
    fputs(": ", w->f);
    w->after_key = 1;
}
static void jw_str(jw *w, const char *s) {
    jw_pre(w);
    jw_strraw(w, s);
}
static void jw_num(jw *w, double x) {
    jw_pre(w);
    if (!isfinite(x)) {
        fputs("null", w->f); /* JSON has no NaN/inf; the fields say when a value is infinite */
        return;
    }
    char b[40];
    rp_num(b, sizeof b, x);
    fputs(b, w->f);
}
static void jw_int(jw *w, long long x) {
    jw_pre(w);
    fprintf(w->f, "%lld", x);
}
static void jw_uint(jw *w, unsigned long long x) {
    jw_pre(w);
    fprintf(w->f, "%llu", x);
}
static void jw_bool(jw *w, int x) {
    jw_pre(w);
    fputs(x ? "true" : "false", w->f);
}
static void jw_null(jw *w) {
    jw_pre(w);
    fputs("null", w->f);
}
#define KN(w, k, x) (jw_key(w, k), jw_num(w, x))
#define KI(w, k, x) (jw_key(w, k), jw_int(w, x))
#define KS(w, k, x) (jw_key(w, k), jw_str(w, x))
/* a reason: null when there is none */
static void jw_why(jw *w, const char *key, const char *why) {
    jw_key(w, key);
    if (why && *why) jw_str(w, why);
    else jw_null(w);
}

static void jw_metric(jw *w, const rp_metric *x, int k, double margin) {
    jw_open(w, '{');
    KI(w, "n", x->n);
    KI(w, "n_missing", x->n_missing);
    KN(w, "mean", x->mean);
    jw_key(w, "ci95");
    jw_open(w, '[');
    jw_num(w, x->ci_lo);
    jw_num(w, x->ci_hi);
    jw_close(w, ']');
    KN(w, "t", x->t);
    KN(w, "p", x->p);
    KN(w, "p_holm", x->p_holm);
    if (k == M_GENEVAL || k == M_CLIP_T) {
        KN(w, k == M_GENEVAL ? "baseline_accuracy" : "baseline_mean", x->base_mean);
        KN(w, k == M_GENEVAL ? "condition_accuracy" : "condition_mean", x->cond_mean);
        jw_key(w, "tost");
        if (x->has_tost) {
            jw_open(w, '{');
            KN(w, "margin", margin);
            KN(w, "alpha", RP_ALPHA);
            KN(w, "p", x->tost.p);
            KN(w, "p_lower", x->tost.p_lower);
            KN(w, "p_upper", x->tost.p_upper);
            jw_key(w, "ci90");
            jw_open(w, '[');
            jw_num(w, x->tost.ci_lo);
            jw_num(w, x->tost.ci_hi);
            jw_close(w, ']');
            jw_key(w, "equivalent");
            jw_bool(w, x->tost.equivalent);
            jw_close(w, '}');
        } else {
            jw_null(w);
        }
        KS(w, "verdict", x->verdict);
    }
    jw_why(w, "reason", x->why);
    if (k == M_PSNR) KI(w, "n_identical", x->n_inf);
    if (k == M_FID) {
        jw_key(w, "eps_added");
        jw_bool(w, x->eps_added);
        jw_key(w, "identical_features");
        jw_bool(w, x->identical);
    }
    jw_close(w, '}');
}

/* "fid": the mode, the rules and the calibration rows (only for experiments with features) */
static void jw_fid(jw *w, const rp_analysis *a) {
    const rp_exp *e = a->e;
    jw_key(w, "fid");
    jw_open(w, '{');
    KS(w, "mode", e->fid_mode);
    KS(w, "features", "Inception pool3 (2048-d) of every image, as `sinkscope metric fid` computes them in this mode");
    KS(w, "fid_shift", "Frechet distance between a condition's images and their paired baseline images (pairs in image "
                       "file name order); 0 when every pair's features are bit-identical");
    KS(w, "eps_rule", FID_RULE);
    KS(w, "ci", "percentile bootstrap over pairs (both images of a pair resampled together), the exact FID of each "
                "resample; FID grows as N shrinks, so compare rows at similar N");
    KI(w, "bootstrap_resamples", a->o->fid_bootstrap);
    KI(w, "features_flagged", e->n_feat_flagged);
    jw_key(w, "calibration");
    jw_open(w, '[');
    for (int i = 0; i < a->n_fid_cal; i++) {
        const rp_fid_calib *q = &a->fid_cal[i];
        jw_open(w, '{');
        KS(w, "name", q->key);
        KS(w, "definition", q->definition);
        KI(w, "n", q->m.n);
        KN(w, "fid", q->m.mean);
        jw_key(w, "ci95");
        jw_open(w, '[');
        jw_num(w, q->m.ci_lo);
        jw_num(w, q->m.ci_hi);
        jw_close(w, ']');
        jw_key(w, "eps_added");
        jw_bool(w, q->m.eps_added);
        jw_why(w, "reason", q->m.why);
        jw_close(w, '}');
    }
    jw_close(w, ']');
    jw_close(w, '}');
}

static void jw_ddm(jw *w, const rp_dd_metric *x, const char *h1) {
    jw_open(w, '{');
    KI(w, "n", x->dd.n);
    if (x->ok) {
        KN(w, "mean_sink", x->mean_sink);
        KN(w, "mean_random", x->mean_rand);
        KN(w, "dd", x->dd.mean);
        jw_key(w, "ci95");
        jw_open(w, '[');
        jw_num(w, x->dd.ci_lo);
        jw_num(w, x->dd.ci_hi);
        jw_close(w, ']');
        KN(w, "t", x->dd.t);
        KN(w, "df", x->dd.df);
        KS(w, "h1", h1);
        KN(w, "p_one_sided", x->p_one);
        KN(w, "p_two_sided", x->dd.p_two);
    } else {
        KN(w, "p_one_sided", NAN);
    }
    jw_why(w, "reason", x->why);
    jw_close(w, '}');
}

static void jw_trend(jw *w, const rp_sweep *s, int which) {
    const stats_trend *t = &s->trend[which];
    int has = s->has_trend[which];
    jw_open(w, '{');
    KI(w, "n", has ? t->n : s->n_points[which]);
    KN(w, "slope", has ? t->slope : NAN);
    KN(w, "slope_se", has ? t->slope_se : NAN);
    KN(w, "intercept", has ? t->intercept : NAN);
    KN(w, "r", has ? t->r : NAN);
    KN(w, "p", has ? t->p : NAN);
    jw_why(w, "reason", s->why[which]);
    KN(w, "spearman_rho", has ? t->rho : NAN);
    KN(w, "spearman_p", has ? t->rho_p : NAN);
    jw_why(w, "spearman_reason", s->rho_why[which]);
    jw_close(w, '}');
}

int rp_write_summary(const rp_analysis *a, const char *dir) {
    const rp_exp *e = a->e;
    const report_opts *o = a->o;
    mfile m;
    int rc = mopen(&m);
    if (rc) return rc;
    jw w = {.f = m.f};
    char lab[48];
    jw_open(&w, '{');
    KS(&w, "generator", "sinkscope report");
    jw_key(&w, "experiment");
    jw_open(&w, '{');
    KS(&w, "sinkscope_version", e->version);
    KS(&w, "model", e->model);
    KS(&w, "model_digest", e->model_digest);
    KS(&w, "prompts", e->prompts);
    KS(&w, "prompts_digest", e->prompts_digest);
    KI(&w, "n_prompts", e->n_prompts);
    KI(&w, "seeds_per_prompt", e->seeds_per_prompt);
    KI(&w, "steps", e->steps);
    KN(&w, "cfg", e->cfg);
    if (e->precision[0]) KS(&w, "precision", e->precision); /* only then: f32 summaries stay as they were */
    KI(&w, "n_conditions", e->n_conds);
    jw_close(&w, '}');
    jw_key(&w, "settings");
    jw_open(&w, '{');
    KI(&w, "bootstrap_resamples", o->bootstrap);
    jw_key(&w, "bootstrap_seed");
    jw_uint(&w, (unsigned long long)o->seed);
    KN(&w, "ci_level", RP_LEVEL);
    KN(&w, "alpha", RP_ALPHA);
    KN(&w, "equivalence_margin_geneval", o->margin);
    if (rp_metric_present(e, M_CLIP_T)) KN(&w, "equivalence_margin_clip_t", o->margin_clip_t);
    KS(&w, "pairing", "(prompt_index, seed) against condition 0");
    KS(&w, "random_control_rule", "select random vs topk, all other fields equal (layers as a set, k, rank_by, keys, "
                                  "queries, path, eta, value, alpha, steps)");
    jw_close(&w, '}');
    jw_key(&w, "records");
    jw_open(&w, '{');
    KI(&w, "lines", e->n_lines);
    KI(&w, "used", e->n_recs);
    KI(&w, "invalid", e->n_bad);
    KI(&w, "truncated_last_line", e->n_truncated);
    KI(&w, "duplicate_keys", e->n_dup);
    KI(&w, "unknown_condition", e->n_unknown_cond);
    jw_close(&w, '}');
    jw_key(&w, "images");
    jw_open(&w, '{');
    KI(&w, "checked", e->img_checked);
    KI(&w, "with_size_or_digest", e->img_with_digest);
    KI(&w, "existence_only", e->img_existence_only);
    KI(&w, "flagged", e->img_flagged);
    KI(&w, "missing", e->img_count[RP_IMG_MISSING]);
    KI(&w, "wrong_size", e->img_count[RP_IMG_SIZE]);
    KI(&w, "wrong_digest", e->img_count[RP_IMG_DIGEST]);
    KI(&w, "unreadable", e->img_count[RP_IMG_UNREADABLE]);
    KI(&w, "bad_path", e->img_count[RP_IMG_NOPATH] + e->img_count[RP_IMG_BADPATH]);
    KI(&w, "bad_fields", e->img_count[RP_IMG_FIELDS]);
    KI(&w, "not_named", e->img_unnamed);
    jw_key(&w, "flagged_records");
    jw_open(&w, '[');
    for (int i = 0; i < e->n_recs; i++) {
        const rp_record *r = &e->recs[i];
        if (r->img_state == RP_IMG_OK) continue;
        char key[200];
        snprintf(key, sizeof key, "%s/%05d/%" PRIu64, e->conds[r->cond].name, r->prompt, r->seed);
        jw_open(&w, '{');
        KS(&w, "key", key);
        KI(&w, "line", r->line);
        jw_key(&w, "image");
        if (r->image) jw_str(&w, r->image);
        else jw_null(&w);
        KS(&w, "problem", rp_img_problem(r->img_state));
        jw_close(&w, '}');
    }
    jw_close(&w, ']');
    jw_close(&w, '}');
    jw_key(&w, "notes");
    jw_open(&w, '[');
    for (int i = 0; i < e->n_notes; i++) jw_str(&w, e->notes[i]);
    jw_close(&w, ']');

    jw_key(&w, "conditions");
    jw_open(&w, '[');
    for (int c = 0; c < e->n_conds; c++) {
        jw_open(&w, '{');
        KS(&w, "name", e->conds[c].name);
        KI(&w, "index", c);
        KS(&w, "description", e->conds[c].desc);
        KI(&w, "records", e->cond_count[c]);
        if (c > 0) {
            const rp_cond_res *r = &a->cr[c];
            jw_key(&w, "pairs");
            jw_open(&w, '{');
            KI(&w, "n", r->n_pairs);
            KI(&w, "no_baseline", r->n_no_baseline);
            KI(&w, "not_run", r->n_not_run);
            jw_close(&w, '}');
            jw_key(&w, "random_control");
            if (r->random_ctrl >= 0) jw_str(&w, e->conds[r->random_ctrl].name);
            else jw_null(&w);
            jw_key(&w, "metrics");
            jw_open(&w, '{');
            for (int k = 0; k < M_COUNT; k++) {
                if (!rp_metric_present(e, k)) continue;
                jw_key(&w, RP_METRIC_KEY[k]);
                jw_metric(&w, &r->m[k], k, rp_metric_margin(o, k));
            }
            jw_close(&w, '}');
        }
        jw_close(&w, '}');
    }
    jw_close(&w, ']');
    if (rp_metric_present(e, M_FID)) jw_fid(&w, a);

    jw_key(&w, "dd");
    jw_open(&w, '[');
    for (int i = 0; i < a->n_dd; i++) {
        const rp_dd *d = &a->dd[i];
        jw_open(&w, '{');
        KS(&w, "sink", e->conds[d->sink].name);
        KS(&w, "random", e->conds[d->rand].name);
        KI(&w, "n_triples", d->n);
        jw_key(&w, "shift");
        jw_ddm(&w, &d->shift, "sink > random");
        jw_key(&w, "geneval");
        jw_ddm(&w, &d->align, "sink < random");
        if (rp_metric_present(e, M_LPIPS)) {
            jw_key(&w, "lpips");
            jw_ddm(&w, &d->lpips, "sink > random");
        }
        jw_close(&w, '}');
    }
    jw_close(&w, ']');

    jw_key(&w, "sweeps");
    jw_open(&w, '[');
    for (int i = 0; i < a->n_sw; i++) {
        const rp_sweep *s = &a->sw[i];
        jw_open(&w, '{');
        KS(&w, "param", PARAM_NAME[s->param]);
        jw_key(&w, "conditions");
        jw_open(&w, '[');
        for (int j = 0; j < s->n; j++) jw_str(&w, e->conds[s->conds[j]].name);
        jw_close(&w, ']');
        jw_key(&w, "doses");
        jw_open(&w, '[');
        for (int j = 0; j < s->n; j++) jw_num(&w, s->dose[j]);
        jw_close(&w, ']');
        jw_key(&w, "trend_geneval");
        jw_trend(&w, s, 0);
        jw_key(&w, "trend_shift");
        jw_trend(&w, s, 1);
        jw_close(&w, '}');
    }
    jw_close(&w, ']');

    jw_key(&w, "tags");
    jw_open(&w, '[');
    for (int t = 0; t < e->n_tags; t++) {
        jw_open(&w, '{');
        KS(&w, "tag", e->tags[t]);
        KI(&w, "baseline_n", a->tags[t].n);
        KN(&w, "baseline_accuracy", a->tags[t].mean);
        jw_key(&w, "conditions");
        jw_open(&w, '[');
        for (int c = 1; c < e->n_conds; c++) {
            const rp_tag_cell *x = &a->tags[c * e->n_tags + t];
            jw_open(&w, '{');
            KS(&w, "name", e->conds[c].name);
            KI(&w, "n", x->n);
            KN(&w, "delta", x->mean);
            jw_key(&w, "ci95");
            jw_open(&w, '[');
            jw_num(&w, x->ci_lo);
            jw_num(&w, x->ci_hi);
            jw_close(&w, ']');
            KN(&w, "p", x->p);
            jw_why(&w, "reason", x->why);
            KN(&w, "shift", x->shift);
            jw_close(&w, '}');
        }
        jw_close(&w, ']');
        jw_close(&w, '}');
    }
    jw_close(&w, ']');

    jw_key(&w, "dynamics");
    jw_open(&w, '{');
    KI(&w, "baseline_images", a->n_dyn_images);
    jw_key(&w, "blocks");
    jw_open(&w, '[');
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        jw_open(&w, '{');
        KI(&w, "block", d->block);
        if (d->site >= 0) KS(&w, "site", rp_site_label(lab, sizeof lab, d->block, d->site, 1));
        KI(&w, "entries", d->n_entries);
        jw_key(&w, "mean");
        jw_open(&w, '{');
        for (int s = 0; s < RP_NSTAT; s++) KN(&w, STAT_KEY[s], d->all_mean[s]);
        jw_close(&w, '}');
        int pk = peak_step(d);
        jw_key(&w, "max_mass_peak");
        if (pk >= 0) {
            jw_open(&w, '{');
            KI(&w, "step", d->steps[pk]);
            KN(&w, "t_frac", d->t_frac[pk]);
            KN(&w, "max_mass", d->mean[0][pk]);
            jw_close(&w, '}');
        } else {
            jw_null(&w);
        }
        jw_key(&w, "steps");
        jw_open(&w, '[');
        for (int k = 0; k < d->n_steps; k++) {
            jw_open(&w, '{');
            KI(&w, "step", d->steps[k]);
            KN(&w, "t_frac", d->t_frac[k]);
            KI(&w, "n", d->n[k]);
            for (int s = 0; s < RP_NSTAT; s++) KN(&w, STAT_KEY[s], d->mean[s][k]);
            jw_close(&w, '}');
        }
        jw_close(&w, ']');
        jw_key(&w, "top1_keys");
        jw_open(&w, '{');
        KI(&w, "n", d->n_keys);
        if (d->n_keys) {
            KI(&w, "min", d->key_min);
            KN(&w, "p05", d->key_p05);
            KN(&w, "median", d->key_p50);
            KN(&w, "p95", d->key_p95);
            KI(&w, "max", d->key_max);
            KI(&w, "distinct", d->n_distinct);
            jw_key(&w, "most_frequent");
            jw_open(&w, '[');
            for (int q = 0; q < d->n_top; q++) {
                jw_open(&w, '[');
                jw_int(&w, d->top_key[q]);
                jw_int(&w, d->top_count[q]);
                jw_close(&w, ']');
            }
            jw_close(&w, ']');
        }
        jw_close(&w, '}');
        jw_close(&w, '}');
    }
    jw_close(&w, ']');
    jw_close(&w, '}');

    jw_key(&w, "verification");
    jw_open(&w, '[');
    for (int i = 0; i < a->n_ver; i++) {
        jw_open(&w, '{');
        KS(&w, "condition", e->conds[a->ver[i].cond].name);
        jw_key(&w, "blocks");
        jw_open(&w, '[');
        for (int b = 0; b < a->ver[i].n_rows; b++) {
            const rp_verif_row *r = &a->ver[i].rows[b];
            jw_open(&w, '{');
            KI(&w, "block", r->block);
            if (r->site >= 0) KS(&w, "site", rp_site_label(lab, sizeof lab, r->block, r->site, 1));
            KI(&w, "n", r->n);
            KN(&w, "mass_before", r->before);
            KN(&w, "mass_after", r->after);
            KN(&w, "max_after", r->max_after);
            KN(&w, "reduction", r->factor);
            jw_key(&w, "removed");
            jw_bool(&w, r->n > 0 && r->n_zero == r->n);
            KN(&w, "keys_per_entry", r->keys);
            KN(&w, "distinct_keys_per_entry", r->distinct);
            jw_close(&w, '}');
        }
        jw_close(&w, ']');
        jw_close(&w, '}');
    }
    jw_close(&w, ']');
    if (a->spiral) { /* the "Spiral to Sink" figures (report/spiral.c); absent without spiral entries */
        jw_key(&w, "spiral");
        w.after_key = 0;
        rp_spiral_write_json(a, m.f, w.depth);
    }
    jw_close(&w, '}');
    fputc('\n', m.f);
    return mclose(&m, dir, "summary.json");
}

/* ---- terminal tables ---- */

static int disp_width(const char *s) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xc0) != 0x80;
    return n;
}

typedef struct {
    int ncol, nrow;
    const char *head[12];
    int right[12];
    char cell[64][12][128];
} tbl;

static void tbl_print(FILE *f, const tbl *t) {
    int w[12];
    for (int j = 0; j < t->ncol; j++) {
        w[j] = disp_width(t->head[j]);
        for (int i = 0; i < t->nrow; i++) {
            int x = disp_width(t->cell[i][j]);
            if (x > w[j]) w[j] = x;
        }
    }
    for (int r = -1; r < t->nrow; r++) {
        for (int j = 0; j < t->ncol; j++) {
            const char *s = r < 0 ? t->head[j] : t->cell[r][j];
            int pad = w[j] - disp_width(s);
            if (j) fputs("  ", f);
            if (t->right[j] && r >= 0) fprintf(f, "%*s%s", pad, "", s);
            else fprintf(f, "%s%*s", s, j + 1 < t->ncol ? pad : 0, "");
        }
        fputc('\n', f);
        if (r < 0) {
            int tot = 0;
            for (int j = 0; j < t->ncol; j++) tot += w[j] + (j ? 2 : 0);
            for (int i = 0; i < tot; i++) fputs("─", f);
            fputc('\n', f);
        }
    }
}

static void fmt_ci(char *b, size_t cap, double m, double lo, double hi, int dec) {
    char x[48], l[48], h[48];
    rp_fmt_signed(x, sizeof x, m, dec);
    rp_fmt_signed(l, sizeof l, lo, dec);
    rp_fmt_signed(h, sizeof h, hi, dec);
    if (isnan(m)) snprintf(b, cap, "–");
    else if (snprintf(b, cap, "%s [%s, %s]", x, l, h) >= (int)cap && cap) b[cap - 1] = 0;
}

/* FID_shift cell "412.3 [380.1, 450.2]" and its N */
static void fmt_fid(char *cell, char *ncell, const rp_metric *m) {
    snprintf(ncell, 128, "%d", m->n);
    if (isnan(m->mean)) snprintf(cell, 128, "–");
    else if (m->identical) snprintf(cell, 128, "0 (identical)");
    else if (isnan(m->ci_lo)) snprintf(cell, 128, "%.4g [–]", m->mean);
    else snprintf(cell, 128, "%.4g [%.4g, %.4g]", m->mean, m->ci_lo, m->ci_hi);
}

void rp_print_tables(const rp_analysis *a, FILE *f) {
    const rp_exp *e = a->e;
    fprintf(f, "sinkscope report: %s", *e->model ? e->model : "(model not named)");
    if (e->n_prompts > 0 && e->seeds_per_prompt > 0) fprintf(f, ", %d prompts × %d seeds", e->n_prompts, e->seeds_per_prompt);
    if (e->precision[0]) fprintf(f, ", precision %s", e->precision);
    fprintf(f, ", %d conditions, %d records used\n", e->n_conds, e->n_recs);
    for (int i = 0; i < e->n_notes; i++) fprintf(f, "  note: %s\n", e->notes[i]);
    fprintf(f,
            "\nPaired with '%s' by (prompt, seed); mean Δ with 95%% percentile bootstrap CI (%d resamples); "
            "t-test p, Holm across conditions;\nequivalence = TOST within ±%g accuracy; 1−SSIM against the paired baseline "
            "image; ΔΔ = sink − random 1−SSIM, one-sided.\n\n",
            e->conds[0].name, a->o->bootstrap, a->o->margin);
    static tbl t;
    memset(&t, 0, sizeof t);
    const char *H[] = {"condition", "pairs (−skipped)", "Δ alignment [95% CI]", "p", "Holm p", "equivalence", "1−SSIM [95% CI]",
                       "ΔΔ vs random [95% CI]", "p (ΔΔ)"};
    t.ncol = 9;
    for (int j = 0; j < 9; j++) t.head[j] = H[j], t.right[j] = j == 1 || j == 3 || j == 4 || j == 8;
    for (int c = 1; c < e->n_conds && t.nrow < 64; c++) {
        const rp_cond_res *r = &a->cr[c];
        const rp_metric *g = &r->m[M_GENEVAL], *s = &r->m[M_SHIFT];
        char(*row)[128] = t.cell[t.nrow++];
        snprintf(row[0], 128, "%s", e->conds[c].name);
        if (r->n_no_baseline + r->n_not_run) snprintf(row[1], 128, "%d (−%d)", r->n_pairs, r->n_no_baseline + r->n_not_run);
        else snprintf(row[1], 128, "%d", r->n_pairs);
        fmt_ci(row[2], 128, g->mean, g->ci_lo, g->ci_hi, 3);
        rp_fmt_p(row[3], 128, g->p);
        rp_fmt_p(row[4], 128, g->p_holm);
        if (g->has_tost) {
            char p[32];
            rp_fmt_p(p, sizeof p, g->tost.p);
            snprintf(row[5], 128, "%s (p=%s)", g->verdict, p);
        } else {
            if (snprintf(row[5], 128, "%s: %.118s", g->verdict, g->why[0] ? g->why : "not tested") >= 128) row[5][127] = 0;
        }
        if (isnan(s->mean)) snprintf(row[6], 128, "–");
        else if (isnan(s->ci_lo)) snprintf(row[6], 128, "%.4f [–]", s->mean);
        else snprintf(row[6], 128, "%.4f [%.4f, %.4f]", s->mean, s->ci_lo, s->ci_hi);
        snprintf(row[7], 128, "–");
        snprintf(row[8], 128, "–");
        for (int i = 0; i < a->n_dd; i++)
            if (a->dd[i].sink == c && a->dd[i].shift.ok) {
                const rp_dd_metric *x = &a->dd[i].shift;
                fmt_ci(row[7], 100, x->dd.mean, x->dd.ci_lo, x->dd.ci_hi, 4);
                size_t used = strlen(row[7]);
                if (snprintf(row[7] + used, 128 - used, " (%s)", e->conds[a->dd[i].rand].name) >= (int)(128 - used))
                    row[7][127] = 0; /* a long name is cut */
                rp_fmt_p(row[8], 128, x->p_one);
            }
    }
    if (t.nrow) tbl_print(f, &t);
    else fprintf(f, "(no conditions besides the baseline)\n");
    /* what the "–" of the other tests stand for */
    for (int c = 1; c < e->n_conds; c++) {
        const rp_metric *s = &a->cr[c].m[M_SHIFT];
        if (s->why[0]) fprintf(f, "  %s 1−SSIM p: %s\n", e->conds[c].name, s->why);
        for (int i = 0; i < a->n_dd; i++)
            if (a->dd[i].sink == c && a->dd[i].shift.why[0]) fprintf(f, "  %s ΔΔ p: %s\n", e->conds[c].name, a->dd[i].shift.why);
    }
    const int has_fid = rp_metric_present(e, M_FID);
    if (rp_metric_present(e, M_CLIP_T) || rp_metric_present(e, M_LPIPS) || has_fid) {
        fprintf(f, "\nLearned metrics (run --metrics): ΔCLIP-T paired, equivalence = TOST within ±%g; LPIPS against the "
                "paired baseline image; ΔΔ = sink − random LPIPS, one-sided.\n", a->o->margin_clip_t);
        if (has_fid)
            fprintf(f, "FID_shift (%s features): FID of the condition's images to their paired baseline images, N pairs "
                    "(N < 2048: rank-deficient covariances; FID grows as N shrinks); 95%% bootstrap CI over pairs (%d "
                    "resamples).\n", e->fid_mode, a->o->fid_bootstrap);
        memset(&t, 0, sizeof t);
        const char *L[] = {"condition", "ΔCLIP-T [95% CI]", "p", "Holm p", "equivalence", "LPIPS [95% CI]",
                           "ΔΔ LPIPS vs random [95% CI]", "p (ΔΔ)", "FID_shift [95% CI]", "N"};
        t.ncol = has_fid ? 10 : 8;
        for (int j = 0; j < t.ncol; j++) t.head[j] = L[j], t.right[j] = j == 2 || j == 3 || j == 7 || j == 9;
        for (int c = 1; c < e->n_conds && t.nrow < 64; c++) {
            const rp_metric *g = &a->cr[c].m[M_CLIP_T], *s = &a->cr[c].m[M_LPIPS];
            char(*row)[128] = t.cell[t.nrow++];
            snprintf(row[0], 128, "%s", e->conds[c].name);
            for (int j = 1; j < t.ncol; j++) snprintf(row[j], 128, "–");
            if (has_fid) fmt_fid(row[8], row[9], &a->cr[c].m[M_FID]);
            if (rp_metric_present(e, M_CLIP_T)) {
                fmt_ci(row[1], 128, g->mean, g->ci_lo, g->ci_hi, 4);
                rp_fmt_p(row[2], 128, g->p);
                rp_fmt_p(row[3], 128, g->p_holm);
                if (g->has_tost) {
                    char p[32];
                    rp_fmt_p(p, sizeof p, g->tost.p);
                    snprintf(row[4], 128, "%s (p=%s)", g->verdict, p);
                } else if (snprintf(row[4], 128, "%s: %.118s", g->verdict, g->why[0] ? g->why : "not tested") >= 128) {
                    row[4][127] = 0;
                }
            }
            if (rp_metric_present(e, M_LPIPS)) {
                if (isnan(s->mean)) snprintf(row[5], 128, "–");
                else if (isnan(s->ci_lo)) snprintf(row[5], 128, "%.4f [–]", s->mean);
                else snprintf(row[5], 128, "%.4f [%.4f, %.4f]", s->mean, s->ci_lo, s->ci_hi);
                for (int i = 0; i < a->n_dd; i++)
                    if (a->dd[i].sink == c && a->dd[i].lpips.ok) {
                        const rp_dd_metric *x = &a->dd[i].lpips;
                        fmt_ci(row[6], 100, x->dd.mean, x->dd.ci_lo, x->dd.ci_hi, 4);
                        size_t used = strlen(row[6]);
                        if (snprintf(row[6] + used, 128 - used, " (%s)", e->conds[a->dd[i].rand].name) >= (int)(128 - used))
                            row[6][127] = 0;
                        rp_fmt_p(row[7], 128, x->p_one);
                    }
            }
        }
        for (int i = 0; i < a->n_fid_cal && t.nrow < 64; i++) { /* calibration rows: no intervention */
            char(*row)[128] = t.cell[t.nrow++];
            snprintf(row[0], 128, "calibration: %s", a->fid_cal[i].label);
            for (int j = 1; j < t.ncol; j++) snprintf(row[j], 128, "–");
            fmt_fid(row[8], row[9], &a->fid_cal[i].m);
        }
        if (t.nrow) tbl_print(f, &t);
        for (int i = 0; i < a->n_fid_cal; i++)
            fprintf(f, "  calibration: %s = %s\n", a->fid_cal[i].label, a->fid_cal[i].definition);
    }
    if (e->img_flagged)
        fprintf(f, "images: %d of %d flagged (%d missing, %d wrong size, %d wrong SHA-256, %d other) and left out of the image metrics\n",
                e->img_flagged, e->img_checked, e->img_count[RP_IMG_MISSING], e->img_count[RP_IMG_SIZE], e->img_count[RP_IMG_DIGEST],
                e->img_flagged - e->img_count[RP_IMG_MISSING] - e->img_count[RP_IMG_SIZE] - e->img_count[RP_IMG_DIGEST]);
    if (e->n_conds - 1 > t.nrow) fprintf(f, "(%d more conditions in conditions.csv and report.html)\n", e->n_conds - 1 - t.nrow);

    if (a->n_dd) {
        fprintf(f, "\nSink vs equal-budget random control (ΔΔ = sink − random; one-sided p)\n");
        memset(&t, 0, sizeof t);
        const char *D[] = {"sink", "random", "n", "1−SSIM sink", "1−SSIM random", "ΔΔ 1−SSIM [95% CI]", "p (>)",
                           "ΔΔ alignment [95% CI]", "p (<)"};
        t.ncol = 9;
        for (int j = 0; j < 9; j++) t.head[j] = D[j], t.right[j] = j == 2 || j == 6 || j == 8;
        for (int i = 0; i < a->n_dd && t.nrow < 64; i++) {
            const rp_dd *d = &a->dd[i];
            char(*row)[128] = t.cell[t.nrow++];
            snprintf(row[0], 128, "%s", e->conds[d->sink].name);
            snprintf(row[1], 128, "%s", e->conds[d->rand].name);
            snprintf(row[2], 128, "%d", d->n);
            if (d->shift.ok) {
                snprintf(row[3], 128, "%.4f", d->shift.mean_sink);
                snprintf(row[4], 128, "%.4f", d->shift.mean_rand);
                fmt_ci(row[5], 128, d->shift.dd.mean, d->shift.dd.ci_lo, d->shift.dd.ci_hi, 4);
                rp_fmt_p(row[6], 128, d->shift.p_one);
            } else {
                for (int j = 3; j < 7; j++) snprintf(row[j], 128, "–");
            }
            if (d->align.ok) {
                fmt_ci(row[7], 128, d->align.dd.mean, d->align.dd.ci_lo, d->align.dd.ci_hi, 3);
                rp_fmt_p(row[8], 128, d->align.p_one);
            } else {
                snprintf(row[7], 128, "–"), snprintf(row[8], 128, "–");
            }
        }
        tbl_print(f, &t);
    }

    for (int i = 0; i < a->n_sw; i++) {
        const rp_sweep *s = &a->sw[i];
        fprintf(f, "%sDose sweep over %s:", i ? "" : "\n", s->param ? "k" : "η");
        for (int j = 0; j < s->n; j++) fprintf(f, " %s=%g (%s)", s->param ? "k" : "η", s->dose[j], e->conds[s->conds[j]].name);
        for (int w = 0; w < 2; w++)
            if (s->has_trend[w]) {
                char p[32];
                rp_fmt_p(p, sizeof p, s->trend[w].p);
                fprintf(f, "; %s slope %.4g (p=%s)", w ? "1−SSIM" : "Δ alignment", s->trend[w].slope, p);
            }
        fputc('\n', f);
        for (int w = 0; w < 2; w++)
            if (s->why[w][0]) fprintf(f, "  %s trend p: %s\n", w ? "1−SSIM" : "Δ alignment", s->why[w]);
    }

    const int named = rp_has_sites(a);
    if (a->n_dyn) {
        fprintf(f, "\nSink dynamics of the baseline (%d images; means over images, heads and steps)\n", a->n_dyn_images);
        memset(&t, 0, sizeof t);
        const char *B[] = {named ? "site" : "block", "MaxMass", "peak at t/T", "entropy", "top-5", "index-0", "text", "word/eos/pad",
                           "top-1 keys p5–p95", "distinct"};
        t.ncol = 10;
        for (int j = 0; j < 10; j++) t.head[j] = B[j], t.right[j] = j != 8;
        for (int b = 0; b < a->n_dyn && t.nrow < 64; b++) {
            const rp_block_dyn *d = &a->dyn[b];
            char(*row)[128] = t.cell[t.nrow++];
            int pk = peak_step(d);
            rp_site_label(row[0], 128, d->block, d->site, named);
            snprintf(row[1], 128, "%.4f", d->all_mean[0]);
            if (pk >= 0) snprintf(row[2], 128, "%.4f @ %.2f", d->mean[0][pk], d->t_frac[pk]);
            else snprintf(row[2], 128, "–");
            snprintf(row[3], 128, "%.3f", d->all_mean[1]);
            snprintf(row[4], 128, "%.3f", d->all_mean[2]);
            snprintf(row[5], 128, "%.2f%%", 100 * d->all_mean[3]);
            snprintf(row[6], 128, "%.1f%%", 100 * d->all_mean[4]);
            if (isfinite(d->all_mean[7]))
                snprintf(row[7], 128, "%.0f/%.0f/%.0f%%", 100 * d->all_mean[7], 100 * d->all_mean[8], 100 * d->all_mean[9]);
            else snprintf(row[7], 128, "–");
            if (d->n_keys) snprintf(row[8], 128, "%g–%g (all %d–%d)", d->key_p05, d->key_p95, d->key_min, d->key_max);
            else snprintf(row[8], 128, "–");
            snprintf(row[9], 128, "%d", d->n_distinct);
        }
        tbl_print(f, &t);
        /* MaxMass along the trajectory: up to 9 evenly spaced steps of the first block's list
         * (dynamics.csv has every step) */
        const rp_block_dyn *d0 = &a->dyn[0];
        const int nc = d0->n_steps < 9 ? d0->n_steps : 9;
        if (nc > 1) {
            fprintf(f, "\nMaxMass over the denoising steps (t/T = 0 is the noisiest; every step in dynamics.csv)\n");
            memset(&t, 0, sizeof t);
            static char head[9][32];
            int col[9];
            t.ncol = nc + 1;
            t.head[0] = named ? "site" : "block", t.right[0] = 1;
            for (int j = 0; j < nc; j++) {
                col[j] = (int)lround((double)j * (d0->n_steps - 1) / (nc - 1));
                snprintf(head[j], sizeof head[j], "t/T %.2f", d0->t_frac[col[j]]);
                t.head[j + 1] = head[j], t.right[j + 1] = 1;
            }
            for (int b = 0; b < a->n_dyn && t.nrow < 64; b++) {
                const rp_block_dyn *d = &a->dyn[b];
                char(*row)[128] = t.cell[t.nrow++];
                rp_site_label(row[0], 128, d->block, d->site, named);
                for (int j = 0; j < nc; j++) {
                    int k = 0; /* the same step in this block's list */
                    while (k < d->n_steps && d->steps[k] != d0->steps[col[j]]) k++;
                    if (k < d->n_steps) snprintf(row[j + 1], 128, "%.4f", d->mean[0][k]);
                    else snprintf(row[j + 1], 128, "–");
                }
            }
            tbl_print(f, &t);
        }
    } else {
        fprintf(f, "\n(no probe entries in the baseline records: no sink dynamics)\n");
    }
    if (a->spiral) rp_spiral_print(a, f); /* the Spiral to Sink key figures, only with spiral entries */
}
