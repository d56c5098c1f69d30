/* report/analyze: the statistics of the report, all from src/eval/stats (see report.h for the
 * conventions). Everything iterates over the sorted records, so sums do not depend on the order
 * in which the runner appended them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "models/site.h"
#include "report/report.h"

const char *const RP_METRIC_KEY[M_COUNT] = {"geneval", "shift", "mse", "psnr", "ssim", "clip_t", "lpips", "fid_shift"};
const char *const RP_METRIC_LABEL[M_COUNT] = {"Δ alignment", "1−SSIM", "MSE", "PSNR (dB)", "SSIM", "ΔCLIP-T", "LPIPS",
                                              "FID_shift"};

int rp_metric_present(const rp_exp *e, int k) {
    return k == M_CLIP_T ? e->n_clip_t > 0 : k == M_LPIPS ? e->n_lpips > 0 : k == M_FID ? e->n_fid > 0 : k >= 0 && k < M_COUNT;
}

double rp_metric_margin(const report_opts *o, int k) {
    return k == M_GENEVAL ? o->margin : k == M_CLIP_T ? o->margin_clip_t : NAN;
}

/* FNV-1a of the analysis' name, mixed into the user's seed: each CI has its own reproducible
 * stream, unchanged when other conditions are added or removed. */
uint64_t rp_seed(uint64_t base, const char *what, const char *a, const char *b) {
    uint64_t h = 0xcbf29ce484222325ull;
    const char *parts[3] = {what, a ? a : "", b ? b : ""};
    for (int p = 0; p < 3; p++) {
        for (const unsigned char *s = (const unsigned char *)parts[p]; *s; s++) h = (h ^ *s) * 0x100000001b3ull;
        h = (h ^ 0xff) * 0x100000001b3ull; /* separator */
    }
    return base ^ h;
}

/* "+0.1", "0", "-0.25": a constant value in a reason */
static void fmt_value(char *b, size_t cap, double v, int sign) {
    char num[40];
    rp_num(num, sizeof num, fabs(v));
    snprintf(b, cap, "%s%s", v < 0 ? "-" : sign && v > 0 ? "+" : "", v == 0 ? "0" : num);
}

/* why a test on n values is undefined: too few, or no spread (values all equal to v) */
static void why_few(char *why, int n, int need) {
    if (n == 0) snprintf(why, RP_WHY, "no data (n=0)");
    else snprintf(why, RP_WHY, "n=%d < %d", n, need);
}
static void why_zero_var(char *why, const char *what, double v, double mu0, int sign) {
    char b[48];
    fmt_value(b, sizeof b, v, sign);
    snprintf(why, RP_WHY, "zero variance of %s (all %s): t = %s, p undefined", what, b, v == mu0 ? "0/0" : v > mu0 ? "+inf" : "-inf");
}

/* Mean, CI and (n >= 2) a one-sample t-test of x against mu0 (NaN: not tested, no_test says why). */
static int describe_values(const double *x, int n, double mu0, const char *no_test, int resamples, uint64_t seed, rp_metric *m) {
    m->n = n;
    m->mean = m->ci_lo = m->ci_hi = m->t = m->p = m->p_holm = NAN;
    m->why[0] = 0;
    if (n < 1) {
        why_few(m->why, n, 2);
        return 0;
    }
    m->mean = stats_mean(x, n);
    int rc = stats_bootstrap_mean_ci(x, n, resamples, RP_LEVEL, seed, &m->ci_lo, &m->ci_hi);
    if (rc < 0) return rc;
    if (isnan(mu0)) {
        snprintf(m->why, RP_WHY, "%s", no_test);
    } else if (n < 2) {
        why_few(m->why, n, 2);
    } else {
        stats_ttest t;
        if ((rc = stats_ttest_1samp(x, n, mu0, &t)) < 0) return rc;
        m->t = t.t;
        m->p = t.p_two;
        m->tested = !t.zero_var;
        if (t.zero_var) why_zero_var(m->why, "the values", t.mean, mu0, 0);
    }
    return 0;
}

/* The image metrics of a pair are those of the condition's record, computed against the
 * baseline's image: not usable when that image failed the check. */
static int base_img_ok(const rp_record *b) { return b->img_state == RP_IMG_OK; }

/* Paired metrics (condition - baseline, TOST): geneval and clip_t. */
static int metric_paired(rp_analysis *a, int c, int k, double *base, double *cond, double *d) {
    rp_exp *e = a->e;
    rp_cond_res *r = &a->cr[c];
    rp_metric *m = &r->m[k];
    int n = 0;
    for (int i = 0; i < r->n_pairs; i++) {
        const rp_record *x = &e->recs[r->ci[i]], *y = &e->recs[r->bi[i]];
        if (k == M_GENEVAL) {
            if (!x->has_gv || !y->has_gv) continue;
            base[n] = y->gv, cond[n] = x->gv;
        } else {
            if (!isfinite(x->clip_t) || !isfinite(y->clip_t)) continue;
            base[n] = y->clip_t, cond[n] = x->clip_t;
        }
        d[n] = cond[n] - base[n];
        n++;
    }
    m->n_missing = r->n_pairs - n;
    m->n = n;
    m->mean = m->ci_lo = m->ci_hi = m->t = m->p = m->p_holm = m->base_mean = m->cond_mean = NAN;
    m->why[0] = 0;
    if (n < 2) why_few(m->why, n, 2);
    if (n < 1) return 0;
    m->base_mean = stats_mean(base, n);
    m->cond_mean = stats_mean(cond, n);
    m->mean = stats_mean(d, n);
    int rc = stats_bootstrap_mean_ci(d, n, a->o->bootstrap, RP_LEVEL, rp_seed(a->o->seed, "delta", e->conds[c].name, RP_METRIC_KEY[k]),
                                     &m->ci_lo, &m->ci_hi);
    if (rc < 0) return rc;
    if (n < 2) return 0;
    stats_ttest t;
    if ((rc = stats_paired_t(base, cond, n, &t)) < 0) return rc;
    m->t = t.t;
    m->p = t.p_two;
    if (t.zero_var) {
        /* every pair moved by the same amount (often: none did): no t distribution, so neither
         * the t-test nor TOST says anything; equivalence is not claimed */
        why_zero_var(m->why, "the paired differences", t.mean, 0, 1);
        return 0;
    }
    m->tested = 1;
    if ((rc = stats_tost_paired(d, n, rp_metric_margin(a->o, k), RP_ALPHA, &m->tost)) < 0) return rc;
    m->has_tost = 1;
    return 0;
}

static int metric_image(rp_analysis *a, int c, int k, double *x) {
    rp_exp *e = a->e;
    rp_cond_res *r = &a->cr[c];
    rp_metric *m = &r->m[k];
    int n = 0, n_inf = 0;
    for (int i = 0; i < r->n_pairs; i++) {
        const rp_record *q = &e->recs[r->ci[i]];
        if (!base_img_ok(&e->recs[r->bi[i]])) continue; /* counted as missing */
        double v = k == M_MSE ? q->mse : k == M_SSIM ? q->ssim : k == M_SHIFT ? 1.0 - q->ssim : k == M_LPIPS ? q->lpips : q->psnr;
        if (k == M_PSNR && isinf(v) && v > 0) {
            n_inf++;
            continue;
        }
        if (isfinite(v)) x[n++] = v;
    }
    m->n_inf = n_inf;
    m->n_missing = r->n_pairs - n - n_inf;
    /* the baseline's value against itself: mse 0, ssim 1, 1-ssim 0, lpips 0; psnr is infinite (no test) */
    double mu0 = k == M_SSIM ? 1.0 : k == M_PSNR ? NAN : 0.0;
    return describe_values(x, n, mu0, "not tested: the baseline's PSNR against itself is infinite", a->o->bootstrap,
                           rp_seed(a->o->seed, "delta", e->conds[c].name, RP_METRIC_KEY[k]), m);
}

static const char *verdict(const rp_metric *m) {
    if (!m->has_tost) return "no verdict";
    int diff = m->p_holm < RP_ALPHA;
    if (m->tost.equivalent) return diff ? "equivalent (small shift)" : "equivalent";
    return diff ? "different" : "inconclusive";
}

/* ---- condition matching (random controls, sweeps) ---- */

enum { IGN_SELECT = 1, IGN_K = 2, IGN_ETA = 4, IGN_SEED = 8 };

static int same_layers(const sink_condition *x, const sink_condition *y) {
    if (x->n_layers != y->n_layers) return 0;
    for (int i = 0; i < x->n_layers; i++) {
        int found = 0;
        for (int j = 0; j < y->n_layers && !found; j++) found = x->layers[i] == y->layers[j];
        if (!found) return 0;
    }
    return 1;
}

static int same_pe_set(const sink_pe_set *x, const sink_pe_set *y) {
    return x->pattern == y->pattern && x->n == y->n && !memcmp(x->rc, y->rc, sizeof x->rc[0] * (size_t)x->n);
}

/* The same AbsPE edit (both without one, or the same pe_* fields). */
static int same_pe(const sink_condition *x, const sink_condition *y) {
    if (x->have_pe != y->have_pe || x->have_pe_zero != y->have_pe_zero || x->have_pe_copy != y->have_pe_copy) return 0;
    if (x->have_pe_zero && !same_pe_set(&x->pe_zero, &y->pe_zero)) return 0;
    if (x->have_pe_copy && (!same_pe_set(&x->pe_copy_to, &y->pe_copy_to) || x->pe_copy_from[0] != y->pe_copy_from[0] ||
                            x->pe_copy_from[1] != y->pe_copy_from[1]))
        return 0;
    return 1;
}

/* The same prompt transform (both without one, or the same padding). */
static int same_pad(const sink_condition *x, const sink_condition *y) {
    const int px = sink_condition_pad_active(x), py = sink_condition_pad_active(y);
    if (px != py) return 0;
    return !px || (x->pad.repeat == y->pad.repeat && !strcmp(x->pad.pad, y->pad.pad) && !strcmp(x->pad.sep, y->pad.sep));
}

static int same_except(const sink_condition *x, const sink_condition *y, int ign) {
    if (!same_layers(x, y) || !same_pe(x, y) || !same_pad(x, y)) return 0;
    if (!(ign & IGN_SELECT) && x->select != y->select) return 0;
    if (!(ign & IGN_K) && x->k != y->k) return 0;
    if (x->rank_union != y->rank_union || x->keys != y->keys || x->queries != y->queries) return 0;
    if (x->n_indices != y->n_indices || memcmp(x->indices, y->indices, sizeof(int) * (size_t)x->n_indices)) return 0;
    if (x->value_path != y->value_path) return 0;
    if (!x->value_path && !(ign & IGN_ETA) && x->eta != y->eta) return 0;
    if (x->value_path && (x->value != y->value || (x->value == VAL_LERP && x->alpha != y->alpha))) return 0;
    if (x->step_lo != y->step_lo || x->step_hi != y->step_hi) return 0;
    if (!(ign & IGN_SEED) && x->select == SEL_RANDOM && y->select == SEL_RANDOM && x->seed != y->seed) return 0;
    return 1;
}

/* A condition whose key selection (top-k vs random, k, eta) means something: it acts on some
 * site. The random-control ΔΔ and the k / eta sweeps are made of these only. Every condition,
 * these and those that only edit the position embedding (pe_* fields), gets its paired
 * statistics against the baseline; same_except keeps conditions with different pe_* edits apart. */
static int acts_on_sites(const rp_cond *c) { return c->parsed && c->c.n_layers > 0; }

static int dd_metric(rp_dd_metric *out, const double *sink, const double *rand, int n, int greater, const report_opts *o,
                     uint64_t seed) {
    memset(out, 0, sizeof *out);
    out->p_one = NAN;
    if (n < 2) {
        why_few(out->why, n, 2);
        return 0;
    }
    out->mean_sink = stats_mean(sink, n);
    out->mean_rand = stats_mean(rand, n);
    int rc;
    if (greater) {
        if ((rc = stats_dd(sink, rand, n, o->bootstrap, RP_LEVEL, seed, &out->dd)) < 0) return rc;
        out->p_one = out->dd.p_one;
    } else {
        /* H1: sink < random. Swap the roles so that p_one keeps full precision, then flip the
         * sign back (the percentile CI of -x is exactly the mirrored CI). */
        if ((rc = stats_dd(rand, sink, n, o->bootstrap, RP_LEVEL, seed, &out->dd)) < 0) return rc;
        out->p_one = out->dd.p_one;
        double lo = out->dd.ci_lo;
        out->dd.mean = -out->dd.mean;
        out->dd.ci_lo = -out->dd.ci_hi;
        out->dd.ci_hi = -lo;
        out->dd.t = -out->dd.t;
    }
    if (out->dd.zero_var) why_zero_var(out->why, "the per-pair ΔΔ", out->dd.mean, 0, 1);
    out->ok = 1;
    return 0;
}

static int analyze_dd(rp_analysis *a, double *b1, double *b2, double *b3, double *b4) {
    rp_exp *e = a->e;
    for (int s = 1; s < e->n_conds; s++) {
        a->cr[s].random_ctrl = -1;
        if (!acts_on_sites(&e->conds[s]) || e->conds[s].c.select != SEL_TOPK) continue;
        int r = -1, extra = 0;
        for (int q = 1; q < e->n_conds; q++)
            if (acts_on_sites(&e->conds[q]) && e->conds[q].c.select == SEL_RANDOM &&
                same_except(&e->conds[s].c, &e->conds[q].c, IGN_SELECT | IGN_SEED)) {
                if (r < 0) r = q;
                else extra++;
            }
        if (r < 0) continue;
        if (extra)
            rp_note(e, "'%s' has %d further matching random controls; '%s' (the first) is used", e->conds[s].name, extra,
                    e->conds[r].name);
        a->cr[s].random_ctrl = r;
        rp_dd *d = &a->dd[a->n_dd++];
        memset(d, 0, sizeof *d);
        d->sink = s, d->rand = r;
        int ns = 0, na = 0;
        const rp_cond_res *cs = &a->cr[s];
        for (int i = 0; i < cs->n_pairs; i++) {
            const rp_record *xs = &e->recs[cs->ci[i]], *xb = &e->recs[cs->bi[i]];
            int ir = rp_find(e, r, xs->prompt, xs->seed);
            if (ir < 0) continue;
            const rp_record *xr = &e->recs[ir];
            d->n++;
            if (isfinite(xs->ssim) && isfinite(xr->ssim) && base_img_ok(xb)) b1[ns] = 1.0 - xs->ssim, b2[ns] = 1.0 - xr->ssim, ns++;
            if (xs->has_gv && xr->has_gv && xb->has_gv) b3[na] = xs->gv - xb->gv, b4[na] = xr->gv - xb->gv, na++;
        }
        int rc;
        if ((rc = dd_metric(&d->shift, b1, b2, ns, 1, a->o, rp_seed(a->o->seed, "dd", e->conds[s].name, "shift"))) < 0 ||
            (rc = dd_metric(&d->align, b3, b4, na, 0, a->o, rp_seed(a->o->seed, "dd", e->conds[s].name, "geneval"))) < 0)
            return rc;
        d->shift.dd.n = ns, d->align.dd.n = na;
        if (rp_metric_present(e, M_LPIPS)) { /* the buffers again, now for LPIPS */
            int nl = 0;
            for (int i = 0; i < cs->n_pairs; i++) {
                const rp_record *xs = &e->recs[cs->ci[i]], *xb = &e->recs[cs->bi[i]];
                const int ir = rp_find(e, r, xs->prompt, xs->seed);
                if (ir < 0) continue;
                const rp_record *xr = &e->recs[ir];
                if (isfinite(xs->lpips) && isfinite(xr->lpips) && base_img_ok(xb)) b1[nl] = xs->lpips, b2[nl] = xr->lpips, nl++;
            }
            if ((rc = dd_metric(&d->lpips, b1, b2, nl, 1, a->o, rp_seed(a->o->seed, "dd", e->conds[s].name, "lpips"))) < 0)
                return rc;
            d->lpips.dd.n = nl;
        }
    }
    return 0;
}

/* ---- sweeps ---- */

/* eta is stored as a float; report the shortest decimal that gives that float back (0.1, not
 * 0.10000000149), so the doses read as written in experiment.json. */
static double dose_of(const sink_condition *c, int param) {
    if (param == 1) return (double)c->k;
    char b[32];
    for (int prec = 1; prec < 10; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, (double)c->eta);
        if ((float)strtod(b, NULL) == c->eta) break;
    }
    return strtod(b, NULL);
}

static int analyze_sweeps(rp_analysis *a, double *dose, double *y) {
    rp_exp *e = a->e;
    int *used = ss_calloc((size_t)e->n_conds, sizeof *used), *grp = ss_malloc((size_t)e->n_conds * sizeof *grp);
    if (!used || !grp) {
        free(used), free(grp);
        return SS_ENOMEM;
    }
    int rc = 0;
    for (int param = 0; param < 2 && rc == 0; param++) {
        memset(used, 0, sizeof *used * (size_t)e->n_conds);
        for (int c = 1; c < e->n_conds && rc == 0; c++) {
            const rp_cond *rc0 = &e->conds[c];
            if (used[c] || !acts_on_sites(rc0)) continue;
            if (param == 0 && rc0->c.value_path) continue;    /* eta only acts on the score path */
            if (param == 1 && rc0->c.select == SEL_FIXED) continue; /* k is the index list there */
            int n = 0;
            for (int d = c; d < e->n_conds; d++) {
                if (used[d] || !acts_on_sites(&e->conds[d])) continue;
                if (!same_except(&rc0->c, &e->conds[d].c, param == 0 ? IGN_ETA : IGN_K)) continue;
                int dup = 0;
                for (int j = 0; j < n && !dup; j++) dup = dose_of(&e->conds[grp[j]].c, param) == dose_of(&e->conds[d].c, param);
                if (dup) continue; /* an identical condition under another name: not a new dose */
                grp[n++] = d;
            }
            if (n < 2) continue;
            for (int j = 0; j < n; j++) used[grp[j]] = 1;
            for (int i = 1; i < n; i++) /* by dose */
                for (int j = i; j > 0 && dose_of(&e->conds[grp[j - 1]].c, param) > dose_of(&e->conds[grp[j]].c, param); j--) {
                    int t = grp[j];
                    grp[j] = grp[j - 1], grp[j - 1] = t;
                }
            rp_sweep *s = &a->sw[a->n_sw++];
            memset(s, 0, sizeof *s);
            s->param = param;
            s->n = n;
            s->conds = ss_malloc((size_t)n * sizeof *s->conds);
            s->dose = ss_malloc((size_t)n * sizeof *s->dose);
            if (!s->conds || !s->dose) {
                rc = SS_ENOMEM;
                break;
            }
            for (int j = 0; j < n; j++) s->conds[j] = grp[j], s->dose[j] = dose_of(&e->conds[grp[j]].c, param);
            for (int which = 0; which < 2 && rc == 0; which++) {
                int m = 0;
                for (int j = 0; j < n; j++) {
                    const rp_cond_res *cr = &a->cr[grp[j]];
                    for (int i = 0; i < cr->n_pairs; i++) {
                        const rp_record *x = &e->recs[cr->ci[i]], *b = &e->recs[cr->bi[i]];
                        if (which == 0 && x->has_gv && b->has_gv) dose[m] = s->dose[j], y[m++] = x->gv - b->gv;
                        if (which == 1 && isfinite(x->ssim) && base_img_ok(b)) dose[m] = s->dose[j], y[m++] = 1.0 - x->ssim;
                    }
                }
                int distinct = 0;
                for (int i = 1; i < m && !distinct; i++) distinct = dose[i] != dose[0];
                s->n_points[which] = m;
                char *why = s->why[which], *rwhy = s->rho_why[which];
                if (m < 3) {
                    why_few(why, m, 3);
                    memcpy(rwhy, why, RP_WHY);
                } else if (!distinct) {
                    snprintf(why, RP_WHY, "all %d pairs are at one dose: the slope is undefined", m);
                    memcpy(rwhy, why, RP_WHY);
                } else {
                    stats_trend *t = &s->trend[which];
                    if ((rc = stats_dose_trend(dose, y, m, t)) < 0) break;
                    s->has_trend[which] = 1;
                    char b[48];
                    fmt_value(b, sizeof b, y[0], which == 0);
                    if (t->y_constant) {
                        snprintf(why, RP_WHY, "zero variance of the responses (all %s): p undefined", b);
                        snprintf(rwhy, RP_WHY, "zero variance of the responses (all %s): every rank tied, rho undefined", b);
                    } else if (t->exact_fit) {
                        snprintf(why, RP_WHY, "zero residual variance (the points lie exactly on a line): t = %sinf, p undefined",
                                 t->slope > 0 ? "+" : "-");
                    }
                    if (!t->y_constant && isnan(t->rho_p))
                        snprintf(rwhy, RP_WHY, "|rho| = 1 (perfectly monotone): the t approximation of its p is undefined");
                }
            }
        }
    }
    free(used), free(grp);
    return rc;
}

/* ---- per-tag breakdown ---- */

static int analyze_tags(rp_analysis *a, double *x, double *y) {
    rp_exp *e = a->e;
    int nt = e->n_tags;
    if (!nt) return 0;
    if (!(a->tags = ss_calloc((size_t)e->n_conds * (size_t)nt, sizeof *a->tags))) return SS_ENOMEM;
    for (int t = 0; t < nt; t++) {
        rp_tag_cell *b = &a->tags[t];
        int n = 0;
        for (int i = e->cond_first[0]; i < e->cond_first[0] + e->cond_count[0]; i++)
            if (e->recs[i].tag == t && e->recs[i].has_gv) x[n++] = e->recs[i].gv;
        b->n = n;
        b->mean = n ? stats_mean(x, n) : NAN;
        b->ci_lo = b->ci_hi = b->p = b->shift = NAN;
    }
    for (int c = 1; c < e->n_conds; c++) {
        const rp_cond_res *cr = &a->cr[c];
        for (int t = 0; t < nt; t++) {
            rp_tag_cell *cell = &a->tags[c * nt + t];
            int n = 0, ns = 0;
            double ssum = 0;
            for (int i = 0; i < cr->n_pairs; i++) {
                const rp_record *q = &e->recs[cr->ci[i]], *b = &e->recs[cr->bi[i]];
                if (q->tag != t) continue;
                if (q->has_gv && b->has_gv) x[n++] = q->gv - b->gv;
                if (isfinite(q->ssim) && base_img_ok(b)) ssum += 1.0 - q->ssim, ns++;
            }
            rp_metric m = {0};
            int rc = describe_values(x, n, 0.0, "", a->o->bootstrap, rp_seed(a->o->seed, "tag", e->conds[c].name, e->tags[t]), &m);
            if (rc < 0) return rc;
            if (!strncmp(m.why, "zero variance of the values", 27)) /* these are paired differences */
                why_zero_var(m.why, "the paired differences", m.mean, 0, 1);
            cell->n = n;
            snprintf(cell->why, RP_WHY, "%s", m.why);
            cell->mean = m.mean, cell->ci_lo = m.ci_lo, cell->ci_hi = m.ci_hi, cell->p = m.p;
            cell->n_shift = ns;
            cell->shift = ns ? ssum / ns : NAN;
        }
    }
    return 0;
}

/* ---- sink dynamics of the baseline ---- */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int add_unique(int *v, int *n, int x) {
    for (int i = 0; i < *n; i++)
        if (v[i] == x) return 0;
    v[(*n)++] = x;
    return 1;
}

static double probe_stat(const rp_probe *p, int s) {
    switch (s) {
    case 0: return p->max_mass;
    case 1: return p->entropy;
    case 2: return p->top5;
    case 3: return p->idx0;
    case 4: return p->text;
    case 5: return p->act_max;
    case 6: return p->act_p95;
    case 7: return p->word;
    case 8: return p->eos;
    default: return p->pad;
    }
}

/* ---- rows: a (block, site) pair each, in block (flat index) order ---- */

typedef struct {
    int block, site;
} row_id;

static int cmp_row(const void *a, const void *b) {
    const row_id *x = a, *y = b;
    if (x->block != y->block) return (x->block > y->block) - (x->block < y->block);
    return (x->site > y->site) - (x->site < y->site);
}

static void add_row(row_id *v, int *n, int cap, int block, int site) {
    for (int i = 0; i < *n; i++)
        if (v[i].block == block && v[i].site == site) return;
    if (*n < cap) v[(*n)++] = (row_id){block, site};
}

const char *rp_site_label(char *buf, size_t cap, int block, int site, int named) {
    if (site >= 0) ss_site_code_name(site, buf, cap);
    else snprintf(buf, cap, named ? "joint.%d" : "%d", block);
    return buf;
}

int rp_has_sites(const rp_analysis *a) {
    for (int i = 0; i < a->n_dyn; i++)
        if (a->dyn[i].site >= 0) return 1;
    for (int i = 0; i < a->n_ver; i++)
        for (int j = 0; j < a->ver[i].n_rows; j++)
            if (a->ver[i].rows[j].site >= 0) return 1;
    return 0;
}

#define SAME_ROW(p, d) ((p)->block == (d)->block && (p)->site == (d)->site)

static int locality(rp_exp *e, rp_block_dyn *d) {
    const int first = e->cond_first[0], last = first + e->cond_count[0];
    long nk = 0;
    for (int i = first; i < last; i++)
        for (int j = 0; j < e->recs[i].n_probe; j++) {
            const rp_probe *p = &e->probes[e->recs[i].probe_off + (size_t)j];
            if (SAME_ROW(p, d)) nk += p->n_keys;
        }
    d->n_keys = nk;
    d->key_p05 = d->key_p50 = d->key_p95 = NAN;
    if (!nk) return 0;
    int *k = ss_malloc((size_t)nk * sizeof *k);
    double *kd = ss_malloc((size_t)nk * sizeof *kd);
    if (!k || !kd) {
        free(k), free(kd);
        return SS_ENOMEM;
    }
    long m = 0;
    for (int i = first; i < last; i++)
        for (int j = 0; j < e->recs[i].n_probe; j++) {
            const rp_probe *p = &e->probes[e->recs[i].probe_off + (size_t)j];
            if (SAME_ROW(p, d))
                for (int h = 0; h < p->n_keys; h++) k[m++] = e->keys[p->key_off + (size_t)h];
        }
    qsort(k, (size_t)nk, sizeof *k, cmp_int);
    for (long i = 0; i < nk; i++) kd[i] = k[i];
    d->key_min = k[0], d->key_max = k[nk - 1];
    d->key_p05 = stats_quantile_sorted(kd, (int)nk, 0.05);
    d->key_p50 = stats_quantile_sorted(kd, (int)nk, 0.50);
    d->key_p95 = stats_quantile_sorted(kd, (int)nk, 0.95);
    /* runs of equal keys: the distinct keys with counts, and the five most frequent (ties: smaller key first) */
    for (long i = 0; i < nk; i++) d->n_distinct += i == 0 || k[i] != k[i - 1];
    d->ukey = ss_malloc((size_t)d->n_distinct * sizeof *d->ukey);
    d->ucount = ss_malloc((size_t)d->n_distinct * sizeof *d->ucount);
    if (!d->ukey || !d->ucount) {
        free(k), free(kd);
        return SS_ENOMEM;
    }
    int u = 0;
    for (long i = 0; i < nk;) {
        long j = i;
        while (j < nk && k[j] == k[i]) j++;
        long cnt = j - i;
        d->ukey[u] = k[i], d->ucount[u++] = cnt;
        int pos = d->n_top;
        while (pos > 0 && d->top_count[pos - 1] < cnt) pos--;
        if (pos < 5) {
            int end = d->n_top < 5 ? d->n_top : 4;
            for (int q = end; q > pos; q--) d->top_key[q] = d->top_key[q - 1], d->top_count[q] = d->top_count[q - 1];
            d->top_key[pos] = k[i], d->top_count[pos] = cnt;
            if (d->n_top < 5) d->n_top++;
        }
        i = j;
    }
    /* Histogram window: the 5th..95th percentile keys, at least 10 keys wide, one bin per key
     * up to 64 keys (sinks sit on a handful of positions), else 40 bins. */
    long lo = (long)floor(d->key_p05), hi = (long)ceil(d->key_p95);
    if (hi - lo + 1 < 10) {
        long grow = 10 - (hi - lo + 1);
        lo -= grow / 2, hi += grow - grow / 2;
        if (lo < 0) hi -= lo, lo = 0;
    }
    long range = hi - lo + 1;
    d->bin_w = range <= 64 ? 1 : (int)((range + 39) / 40);
    d->n_bins = (int)((range + d->bin_w - 1) / d->bin_w);
    d->bin_lo = (int)lo;
    d->bins = ss_calloc((size_t)d->n_bins, sizeof *d->bins);
    if (!d->bins) {
        free(k), free(kd);
        return SS_ENOMEM;
    }
    for (long i = 0; i < nk; i++) {
        long b = ((long)k[i] - d->bin_lo) / d->bin_w;
        if (k[i] >= d->bin_lo && b < d->n_bins) d->bins[b]++, d->n_in_window++;
    }
    free(k), free(kd);
    return 0;
}

static int analyze_dynamics(rp_analysis *a) {
    rp_exp *e = a->e;
    const int first = e->cond_first[0], last = first + e->cond_count[0];
    row_id blocks[1024];
    int nb = 0;
    for (int i = first; i < last; i++) {
        if (e->recs[i].n_probe) a->n_dyn_images++;
        for (int j = 0; j < e->recs[i].n_probe; j++) {
            const rp_probe *p = &e->probes[e->recs[i].probe_off + (size_t)j];
            add_row(blocks, &nb, 1024, p->block, p->site);
        }
    }
    if (!nb) return 0;
    qsort(blocks, (size_t)nb, sizeof *blocks, cmp_row);
    if (!(a->dyn = ss_calloc((size_t)nb, sizeof *a->dyn))) return SS_ENOMEM;
    a->n_dyn = nb;
    for (int bi = 0; bi < nb; bi++) {
        rp_block_dyn *d = &a->dyn[bi];
        d->block = blocks[bi].block;
        d->site = blocks[bi].site;
        int steps[4096], ns = 0;
        for (int i = first; i < last; i++)
            for (int j = 0; j < e->recs[i].n_probe; j++) {
                const rp_probe *p = &e->probes[e->recs[i].probe_off + (size_t)j];
                if (SAME_ROW(p, d) && ns < 4096) add_unique(steps, &ns, p->step);
            }
        qsort(steps, (size_t)ns, sizeof *steps, cmp_int);
        d->n_steps = ns;
        d->steps = ss_malloc((size_t)ns * sizeof *d->steps);
        d->t_frac = ss_malloc((size_t)ns * sizeof *d->t_frac);
        d->n = ss_calloc((size_t)ns, sizeof *d->n);
        int ok = d->steps && d->t_frac && d->n;
        for (int s = 0; s < RP_NSTAT && ok; s++) {
            d->mean[s] = ss_calloc((size_t)ns, sizeof(double));
            d->sd[s] = ss_calloc((size_t)ns, sizeof(double));
            ok = d->mean[s] && d->sd[s];
        }
        if (!ok) return SS_ENOMEM;
        memcpy(d->steps, steps, sizeof *steps * (size_t)ns);
        for (int k = 0; k < ns; k++)
            d->t_frac[k] = e->steps > 1 ? (double)steps[k] / (e->steps - 1) : NAN;
        /* Welford per (step, statistic) in record order; counts per statistic in cnt */
        long *cnt = ss_calloc((size_t)ns * RP_NSTAT, sizeof *cnt);
        double *m2 = ss_calloc((size_t)ns * RP_NSTAT, sizeof *m2), tot[RP_NSTAT] = {0};
        long totn[RP_NSTAT] = {0};
        int *tf_set = ss_calloc((size_t)ns, sizeof *tf_set);
        if (!cnt || !m2 || !tf_set) {
            free(cnt), free(m2), free(tf_set);
            return SS_ENOMEM;
        }
        for (int i = first; i < last; i++)
            for (int j = 0; j < e->recs[i].n_probe; j++) {
                const rp_probe *p = &e->probes[e->recs[i].probe_off + (size_t)j];
                if (!SAME_ROW(p, d)) continue;
                const int *hit = bsearch(&p->step, steps, (size_t)ns, sizeof *steps, cmp_int);
                if (!hit) continue; /* beyond the 4096 distinct steps kept */
                int k = (int)(hit - steps);
                d->n[k]++;
                d->n_entries++;
                if (isfinite(p->t_frac) && !tf_set[k]) d->t_frac[k] = p->t_frac, tf_set[k] = 1;
                for (int s = 0; s < RP_NSTAT; s++) {
                    double v = probe_stat(p, s);
                    if (!isfinite(v)) continue;
                    long c = ++cnt[k * RP_NSTAT + s];
                    double delta = v - d->mean[s][k];
                    d->mean[s][k] += delta / c;
                    m2[k * RP_NSTAT + s] += delta * (v - d->mean[s][k]);
                    tot[s] += v;
                    totn[s]++;
                }
            }
        for (int k = 0; k < ns; k++)
            for (int s = 0; s < RP_NSTAT; s++) {
                long c = cnt[k * RP_NSTAT + s];
                if (!c) d->mean[s][k] = NAN;
                d->sd[s][k] = c > 1 ? sqrt(m2[k * RP_NSTAT + s] / (c - 1)) : NAN;
            }
        for (int s = 0; s < RP_NSTAT; s++) d->all_mean[s] = totn[s] ? tot[s] / totn[s] : NAN;
        free(cnt), free(m2), free(tf_set);
        int rc = locality(e, d);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- intervention verification ---- */

static int analyze_verification(rp_analysis *a) {
    rp_exp *e = a->e;
    if (!(a->ver = ss_calloc((size_t)e->n_conds, sizeof *a->ver))) return SS_ENOMEM;
    for (int c = 1; c < e->n_conds; c++) {
        const int first = e->cond_first[c], last = first + e->cond_count[c];
        row_id blocks[1024];
        int nb = 0;
        for (int i = first; i < last; i++)
            for (int j = 0; j < e->recs[i].n_verif; j++) {
                const rp_verif *v = &e->verifs[e->recs[i].verif_off + (size_t)j];
                add_row(blocks, &nb, 1024, v->block, v->site);
            }
        if (!nb) continue;
        qsort(blocks, (size_t)nb, sizeof *blocks, cmp_row);
        rp_verif_cond *vc = &a->ver[a->n_ver++];
        vc->cond = c;
        vc->n_rows = nb;
        if (!(vc->rows = ss_calloc((size_t)nb, sizeof *vc->rows))) return SS_ENOMEM;
        for (int b = 0; b < nb; b++) {
            rp_verif_row *row = &vc->rows[b];
            row->block = blocks[b].block;
            row->site = blocks[b].site;
            double sb = 0, sa = 0, sk = 0, sd = 0;
            for (int i = first; i < last; i++)
                for (int j = 0; j < e->recs[i].n_verif; j++) {
                    const rp_verif *v = &e->verifs[e->recs[i].verif_off + (size_t)j];
                    if (!SAME_ROW(v, row) || !isfinite(v->before) || !isfinite(v->after)) continue;
                    row->n++;
                    sb += v->before, sa += v->after, sk += v->n_keys, sd += v->n_distinct;
                    row->n_zero += v->after == 0;
                    if (v->after > row->max_after) row->max_after = v->after;
                }
            if (!row->n) {
                row->before = row->after = row->factor = row->keys = row->distinct = NAN;
                continue;
            }
            row->before = sb / row->n, row->after = sa / row->n;
            row->keys = sk / row->n, row->distinct = sd / row->n;
            row->factor = row->after > 0 ? row->before / row->after : row->before > 0 ? INFINITY : NAN;
        }
    }
    return 0;
}

int rp_analyze(rp_analysis *a, rp_exp *e, const report_opts *o) {
    memset(a, 0, sizeof *a);
    a->o = o;
    a->e = e;
    size_t nmax = (size_t)(e->n_recs > 0 ? e->n_recs : 1);
    a->cr = ss_calloc((size_t)e->n_conds, sizeof *a->cr);
    a->dd = ss_calloc((size_t)e->n_conds, sizeof *a->dd);
    a->sw = ss_calloc((size_t)e->n_conds * 2, sizeof *a->sw);
    double *b1 = ss_malloc(nmax * sizeof *b1), *b2 = ss_malloc(nmax * sizeof *b2), *b3 = ss_malloc(nmax * sizeof *b3),
           *b4 = ss_malloc(nmax * sizeof *b4);
    int rc = a->cr && a->dd && a->sw && b1 && b2 && b3 && b4 ? 0 : SS_ENOMEM;
    for (int c = 1; c < e->n_conds && rc == 0; c++) {
        rp_cond_res *r = &a->cr[c];
        int nc = e->cond_count[c];
        r->ci = ss_malloc((size_t)(nc ? nc : 1) * sizeof *r->ci);
        r->bi = ss_malloc((size_t)(nc ? nc : 1) * sizeof *r->bi);
        if (!r->ci || !r->bi) {
            rc = SS_ENOMEM;
            break;
        }
        for (int i = e->cond_first[c]; i < e->cond_first[c] + nc; i++) {
            int b = rp_find(e, 0, e->recs[i].prompt, e->recs[i].seed);
            if (b < 0) r->n_no_baseline++;
            else r->ci[r->n_pairs] = i, r->bi[r->n_pairs++] = b;
        }
        for (int i = e->cond_first[0]; i < e->cond_first[0] + e->cond_count[0]; i++)
            r->n_not_run += rp_find(e, c, e->recs[i].prompt, e->recs[i].seed) < 0;
        if ((rc = metric_paired(a, c, M_GENEVAL, b1, b2, b3)) < 0) break;
        for (int k = M_SHIFT; k <= M_SSIM && rc == 0; k++) rc = metric_image(a, c, k, b1);
        if (rc == 0 && rp_metric_present(e, M_CLIP_T)) rc = metric_paired(a, c, M_CLIP_T, b1, b2, b3);
        if (rc == 0 && rp_metric_present(e, M_LPIPS)) rc = metric_image(a, c, M_LPIPS, b1);
    }
    /* Holm across the conditions, per metric */
    for (int k = 0; k < M_COUNT && rc == 0; k++) {
        int m = 0;
        for (int c = 1; c < e->n_conds; c++)
            if (a->cr[c].m[k].tested) b1[m++] = a->cr[c].m[k].p;
        if (!m) continue;
        if ((rc = stats_holm(b1, m, b2)) < 0) break;
        m = 0;
        for (int c = 1; c < e->n_conds; c++)
            if (a->cr[c].m[k].tested) a->cr[c].m[k].p_holm = b2[m++];
    }
    for (int c = 1; c < e->n_conds && rc == 0; c++) {
        a->cr[c].m[M_GENEVAL].verdict = verdict(&a->cr[c].m[M_GENEVAL]);
        a->cr[c].m[M_CLIP_T].verdict = verdict(&a->cr[c].m[M_CLIP_T]);
    }
    if (rc == 0) rc = rp_analyze_fid(a);
    if (rc == 0) rc = analyze_dd(a, b1, b2, b3, b4);
    if (rc == 0) rc = analyze_sweeps(a, b1, b2);
    if (rc == 0) rc = analyze_tags(a, b1, b2);
    if (rc == 0) rc = analyze_dynamics(a);
    if (rc == 0) rc = analyze_verification(a);
    free(b1), free(b2), free(b3), free(b4);
    if (rc < 0) rp_analysis_free(a);
    return rc;
}

void rp_analysis_free(rp_analysis *a) {
    if (a->cr && a->e)
        for (int c = 0; c < a->e->n_conds; c++) free(a->cr[c].ci), free(a->cr[c].bi);
    free(a->cr);
    free(a->dd);
    for (int i = 0; i < a->n_sw; i++) free(a->sw[i].conds), free(a->sw[i].dose);
    free(a->sw);
    free(a->tags);
    for (int i = 0; i < a->n_dyn; i++) {
        rp_block_dyn *d = &a->dyn[i];
        free(d->steps), free(d->t_frac), free(d->n), free(d->bins), free(d->ukey), free(d->ucount);
        for (int s = 0; s < RP_NSTAT; s++) free(d->mean[s]), free(d->sd[s]);
    }
    free(a->dyn);
    for (int i = 0; i < a->n_ver; i++) free(a->ver[i].rows);
    free(a->ver);
    memset(a, 0, sizeof *a);
}
