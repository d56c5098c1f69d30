/* report/fidshift: FID_shift per condition and the FID calibration rows (report.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "eval/stats.h"
#include "metric/fid.h"
#include "report/report.h"

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* FID between the paired rows ra[i], rb[i] (i < n) of e->feat, with its bootstrap CI, into m. */
static int fid_pairs(rp_analysis *a, const int *ra, const int *rb, int n, uint64_t seed, rp_metric *m) {
    const rp_exp *e = a->e;
    memset(m, 0, sizeof *m);
    m->n = n;
    m->mean = m->ci_lo = m->ci_hi = m->t = m->p = m->p_holm = m->base_mean = m->cond_mean = NAN;
    m->verdict = "";
    if (n < 2) {
        snprintf(m->why, RP_WHY, "%s pair%s: the covariance needs at least 2", n ? "1" : "no", n == 1 ? "" : "s");
        return 0;
    }
    const size_t nd = (size_t)n * RP_FID_DIM;
    float *fa = ss_malloc(nd * sizeof *fa), *fb = ss_malloc(nd * sizeof *fb);
    if (!fa || !fb) {
        free(fa), free(fb);
        return SS_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        memcpy(fa + (size_t)i * RP_FID_DIM, e->feat + (size_t)ra[i] * RP_FID_DIM, RP_FID_DIM * sizeof *fa);
        memcpy(fb + (size_t)i * RP_FID_DIM, e->feat + (size_t)rb[i] * RP_FID_DIM, RP_FID_DIM * sizeof *fb);
    }
    snprintf(m->why, RP_WHY, "no test (a distance); %s features, N=%d%s", e->fid_mode[0] ? e->fid_mode : "?", n,
             n < RP_FID_DIM ? " < 2048: rank-deficient covariances" : "");
    int rc = 0;
    if (!memcmp(fa, fb, nd * sizeof *fa)) { /* FID(X, X) = 0, without the eigensolver's rounding residue */
        m->identical = 1;
        m->mean = m->ci_lo = m->ci_hi = 0;
        free(fa), free(fb);
        return 0;
    }
    fid_stats sa, sb;
    fid_result fr;
    memset(&sa, 0, sizeof sa), memset(&sb, 0, sizeof sb);
    if ((rc = fid_stats_compute_f32(&sa, fa, n, RP_FID_DIM)) == 0 && (rc = fid_stats_compute_f32(&sb, fb, n, RP_FID_DIM)) == 0 &&
        (rc = fid_frechet(&sa, &sb, &fr)) == 0) {
        m->mean = fr.fid;
        m->eps_added = fr.eps_added;
    }
    fid_stats_free(&sa), fid_stats_free(&sb);
    /* bootstrap: all resample indices drawn first, in order, then the resamples (fid_bootstrap_pairs) */
    const int B = a->o->fid_bootstrap;
    if (B < 1) {
        free(fa), free(fb);
        if (!rc) snprintf(m->why + strlen(m->why), RP_WHY - strlen(m->why), "; no CI (--fid-bootstrap 0)");
        return rc;
    }
    int *idx = rc ? NULL : ss_malloc((size_t)B * n * sizeof *idx);
    double *rep = rc ? NULL : ss_malloc((size_t)B * sizeof *rep);
    if (!rc && (!idx || !rep)) rc = SS_ENOMEM;
    if (!rc) {
        rng_xoshiro256ss r;
        rng_xoshiro256ss_seed(&r, seed);
        for (size_t i = 0; i < (size_t)B * n; i++) idx[i] = (int)rng_xoshiro256ss_below(&r, (uint64_t)n);
        rc = fid_bootstrap_pairs(fa, fb, n, RP_FID_DIM, idx, B, rep);
    }
    if (!rc) {
        qsort(rep, (size_t)B, sizeof *rep, cmp_double);
        m->ci_lo = stats_quantile_sorted(rep, B, 0.5 * (1 - RP_LEVEL));
        m->ci_hi = stats_quantile_sorted(rep, B, 0.5 * (1 + RP_LEVEL));
    }
    free(idx), free(rep), free(fa), free(fb);
    return rc;
}

/* the file name of a record's image (the order `metric fid` reads a folder in) */
static const char *base_name(const rp_record *r) {
    const char *s = r->image ? strrchr(r->image, '/') : NULL;
    return s ? s + 1 : r->image ? r->image : "";
}

typedef struct {
    const rp_record *r;
    int i; /* position before sorting: ties keep it */
    int ra, rb;
} pair_ent;

static int cmp_pair(const void *x, const void *y) {
    const pair_ent *p = x, *q = y;
    const int c = strcmp(base_name(p->r), base_name(q->r));
    return c ? c : (p->i > q->i) - (p->i < q->i);
}

/* The calibration sets from the baseline's usable records (sorted by prompt, then seed). */
static int calibration(rp_analysis *a, int *ra, int *rb) {
    const rp_exp *e = a->e;
    const int first = e->cond_first[0], last = first + e->cond_count[0];
    for (int w = 0; w < 2; w++) {
        int n = 0;
        if (w == 0) { /* per prompt: seed j against seed j + floor(S_p / 2) */
            for (int i = first; i < last;) {
                int j = i, ids[4096], k = 0;
                while (j < last && e->recs[j].prompt == e->recs[i].prompt) {
                    if (e->recs[j].feat_row >= 0 && k < 4096) ids[k++] = e->recs[j].feat_row;
                    j++;
                }
                for (int q = 0; q < k / 2; q++) ra[n] = ids[q], rb[n] = ids[q + k / 2], n++;
                i = j;
            }
        } else { /* prompts in order, paired 2i with 2i + 1; their r-th usable images against each other */
            int prev = -1, pf = 0, pl = 0;
            for (int i = first; i < last;) {
                int j = i;
                while (j < last && e->recs[j].prompt == e->recs[i].prompt) j++;
                int any = 0;
                for (int q = i; q < j; q++) any |= e->recs[q].feat_row >= 0;
                if (!any) {
                    i = j;
                    continue;
                }
                if (prev < 0) {
                    prev = 1, pf = i, pl = j;
                } else {
                    int x = pf, y = i;
                    for (;;) {
                        while (x < pl && e->recs[x].feat_row < 0) x++;
                        while (y < j && e->recs[y].feat_row < 0) y++;
                        if (x >= pl || y >= j) break;
                        ra[n] = e->recs[x++].feat_row, rb[n] = e->recs[y++].feat_row, n++;
                    }
                    prev = -1;
                }
                i = j;
            }
        }
        rp_fid_calib *c = &a->fid_cal[a->n_fid_cal];
        if (w == 0) {
            if (e->seeds_per_prompt < 2 && n == 0) continue; /* one seed per prompt: no seed variation */
            c->key = "seed_variation", c->label = "seed variation";
            snprintf(c->definition, sizeof c->definition,
                     "baseline vs baseline with other seeds: for each prompt, its baseline images in seed order, the first "
                     "half against the second (seed slot j vs j + S/2); the same prompts and settings, no intervention");
        } else {
            c->key = "prompt_halves", c->label = "baseline halves";
            snprintf(c->definition, sizeof c->definition,
                     "two halves of the baseline: the images of prompts 0, 2, 4, ... against those of prompts 1, 3, 5, ... "
                     "(in prompt order, seed slot r against seed slot r); other prompts and seeds, no intervention");
        }
        int rc = fid_pairs(a, ra, rb, n, rp_seed(a->o->seed, "fid", "calibration", c->key), &c->m);
        if (rc < 0) return rc;
        a->n_fid_cal++;
    }
    return 0;
}

int rp_analyze_fid(rp_analysis *a) {
    rp_exp *e = a->e;
    if (!rp_metric_present(e, M_FID)) return 0;
    const int nmax = e->n_recs > 0 ? e->n_recs : 1;
    pair_ent *pe = ss_malloc((size_t)nmax * sizeof *pe);
    int *ra = ss_malloc((size_t)nmax * sizeof *ra), *rb = ss_malloc((size_t)nmax * sizeof *rb);
    int rc = pe && ra && rb ? 0 : SS_ENOMEM;
    for (int c = 1; c < e->n_conds && rc == 0; c++) {
        const rp_cond_res *r = &a->cr[c];
        int n = 0;
        for (int i = 0; i < r->n_pairs; i++) {
            const rp_record *x = &e->recs[r->ci[i]], *y = &e->recs[r->bi[i]];
            if (x->feat_row < 0 || y->feat_row < 0) continue;
            pe[n] = (pair_ent){.r = x, .i = i, .ra = x->feat_row, .rb = y->feat_row};
            n++;
        }
        qsort(pe, (size_t)n, sizeof *pe, cmp_pair);
        for (int i = 0; i < n; i++) ra[i] = pe[i].ra, rb[i] = pe[i].rb;
        rp_metric *m = &a->cr[c].m[M_FID];
        rc = fid_pairs(a, ra, rb, n, rp_seed(a->o->seed, "fid", e->conds[c].name, "fid_shift"), m);
        m->n_missing = r->n_pairs - n;
    }
    if (rc == 0) rc = calibration(a, ra, rb);
    free(pe), free(ra), free(rb);
    return rc;
}
