/* report/spiral: the records' "spiral" entries, their aggregates per condition, site and step,
 * spiral_*.csv and the summary's "spiral" section (report/spiral.h; docs/experiment-format.md). */
#include <math.h>
#include <stdarg.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "eval/stats.h"
#include "report/spiral.h"

const char *const RPS_METRIC[RPS_NM] = {"ki_x_image",     "ki_x_uniform",  "fac",           "low_share_sink", "low_share_image",
                                        "qk_sink",        "qk_image",      "qk_post_sink",  "qk_post_image",  "qk_pre_sink",
                                        "qk_pre_image",   "v_norm_sink",   "v_norm_image",  "k_norm_sink",    "k_norm_image",
                                        "act_sink_ratio", "act_max_ratio"};

const char *rps_site_name(char *buf, size_t cap, int site) {
    ss_site_code_name(site, buf, cap);
    return buf;
}

/* ---- parsing ---- */

typedef struct {
    const char *label;
    int line;
    size_t i;
    char site[48];
    int step;
} pctx;

static int bad(const pctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const pctx *c, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (c->site[0])
        return ss_fail(SS_EFORMAT, "%s: line %d: spiral[%zu] (%s step %d): %s", c->label, c->line, c->i, c->site, c->step, what);
    return ss_fail(SS_EFORMAT, "%s: line %d: spiral[%zu]: %s", c->label, c->line, c->i, what);
}

static int tok_of(const char *s) {
    for (int t = 0; t < SS_TOK_N; t++)
        if (!strcmp(s, ss_tok_name((ss_tok)t))) return t;
    return -1;
}

/* A number or null (NaN) at obj[key]; absent: NaN and 0. -1 when of another type. */
static int opt_num(json_t *obj, const char *key, double *out) {
    json_t *v = json_object_get(obj, key);
    *out = NAN;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    if (!isfinite(*out)) *out = NAN;
    return 0;
}

static int req_int(json_t *obj, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) return -1;
    *out = json_integer_value(v);
    return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elt) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elt);
    if (!q) return ss_fail(SS_ENOMEM, "out of memory");
    *p = q;
    *cap = c;
    return 0;
}

/* The pair {"sink": x, "image": y} of obj[key] into m[ks], m[ki]; 0 when absent, 1 when read. */
static int pair(const pctx *c, json_t *obj, const char *key, double *m, int ks, int ki) {
    json_t *o = json_object_get(obj, key);
    if (!o) return 0;
    if (!json_is_object(o) || opt_num(o, "sink", &m[ks]) || opt_num(o, "image", &m[ki]))
        return bad(c, "'%s' must be an object {\"sink\": number, \"image\": number}", key);
    return 1;
}

static int grow_top(rp_spiral_data *d, size_t need) {
    size_t cap = d->cap_top;
    if (need <= cap) return 0;
    int rc = grow((void **)&d->top_key, &cap, need, sizeof *d->top_key);
    cap = d->cap_top;
    if (!rc) rc = grow((void **)&d->top_mu, &cap, need, sizeof *d->top_mu);
    cap = d->cap_top;
    if (!rc) rc = grow((void **)&d->top_type, &cap, need, sizeof *d->top_type);
    if (!rc) d->cap_top = cap;
    return rc;
}

static int grow_mu(rp_spiral_data *d, size_t need) {
    size_t cap = d->cap_mu;
    if (need <= cap) return 0;
    int rc = grow((void **)&d->mu, &cap, need, sizeof *d->mu);
    cap = d->cap_mu;
    if (!rc) rc = grow((void **)&d->mu_type, &cap, need, sizeof *d->mu_type);
    if (!rc) d->cap_mu = cap;
    return rc;
}

static int parse_entry(rp_spiral_data *d, pctx *c, json_t *o, rps_entry *en) {
    memset(en, 0, sizeof *en);
    for (int k = 0; k < RPS_NM; k++) en->m[k] = NAN;
    if (!json_is_object(o)) return bad(c, "not a JSON object");
    long long block, step, v;
    json_t *sj = json_object_get(o, "site");
    if (req_int(o, "block", 0, 0x7fffffff, &block)) return bad(c, "no 'block' (an integer >= 0)");
    if (sj) {
        if (!json_is_string(sj) || (en->site = ss_site_code_parse(json_string_value(sj))) < 0)
            return bad(c, "'site' must be a site name such as \"joint.3\"");
    } else {
        if (block >= SS_SITE_MAX_BLOCKS) return bad(c, "no 'site', and 'block' %lld is not a joint block", block);
        en->site = ss_site_code(SS_SITE_JOINT, (int)block);
    }
    en->block = (int)block;
    rps_site_name(c->site, sizeof c->site, en->site);
    if (req_int(o, "step", 0, 0x7fffffff, &step)) {
        c->site[0] = 0;
        return bad(c, "no 'step' (an integer >= 0)");
    }
    c->step = en->step = (int)step;
    if (opt_num(o, "t_frac", &en->t_frac)) return bad(c, "'t_frac' must be a number");
    if (req_int(o, "sink", 0, 0x7fffffff, &v)) return bad(c, "no 'sink' (a key index >= 0)");
    en->sink = (int)v;
    json_t *st = json_object_get(o, "sink_type");
    if (!json_is_string(st) || (en->sink_type = tok_of(json_string_value(st))) < 0)
        return bad(c, "'sink_type' must be a key type (image, text, word, eos, pad, comma, bos, other)");
    if (opt_num(o, "ki_x_uniform", &en->m[RPS_M_XUNIF]) || opt_num(o, "ki_x_image", &en->m[RPS_M_XIMAGE]))
        return bad(c, "'ki_x_uniform' and 'ki_x_image' must be numbers or null");
    en->x_uniform = en->m[RPS_M_XUNIF], en->x_image = en->m[RPS_M_XIMAGE];
    /* the top keys */
    json_t *tk = json_object_get(o, "top_keys"), *tm = json_object_get(o, "top_mu"), *tt = json_object_get(o, "top_types");
    if (!json_is_array(tk) || !json_is_array(tm) || !json_is_array(tt))
        return bad(c, "'top_keys', 'top_mu' and 'top_types' must be lists");
    size_t nt = json_array_size(tk);
    if (json_array_size(tm) != nt || json_array_size(tt) != nt)
        return bad(c, "'top_keys' has %zu values, 'top_mu' %zu and 'top_types' %zu", nt, json_array_size(tm), json_array_size(tt));
    if (nt > 1 << 20) return bad(c, "'top_keys' has %zu values", nt);
    if (grow_top(d, d->n_top + nt)) return SS_ENOMEM;
    en->top_off = d->n_top;
    en->n_top = (int)nt;
    for (size_t j = 0; j < nt; j++) {
        json_t *k = json_array_get(tk, j), *m = json_array_get(tm, j), *t = json_array_get(tt, j);
        if (!json_is_integer(k) || json_integer_value(k) < 0 || json_integer_value(k) > 0x7fffffff)
            return bad(c, "top_keys[%zu] is not a key index >= 0", j);
        int ty = json_is_string(t) ? tok_of(json_string_value(t)) : -1;
        if (ty < 0) return bad(c, "top_types[%zu] is not a key type", j);
        if (!json_is_number(m) && !json_is_null(m)) return bad(c, "top_mu[%zu] is not a number", j);
        for (size_t q = 0; q < j; q++)
            if (d->top_key[en->top_off + q] == (int)json_integer_value(k))
                return bad(c, "top_keys lists key %lld twice", (long long)json_integer_value(k));
        d->top_key[d->n_top] = (int)json_integer_value(k);
        d->top_mu[d->n_top] = json_is_number(m) && isfinite(json_number_value(m)) ? json_number_value(m) : NAN;
        d->top_type[d->n_top] = (unsigned char)ty;
        d->n_top++;
    }
    /* the budget by type */
    json_t *bj = json_object_get(o, "budget"), *bk = json_object_get(o, "budget_keys");
    if (bj || bk) {
        if (!json_is_object(bj) || !json_is_object(bk)) return bad(c, "'budget' and 'budget_keys' must be objects, both present");
        const char *name;
        json_t *val;
        json_object_foreach(bj, name, val) {
            int ty = tok_of(name);
            if (ty < 0) return bad(c, "budget: '%s' is not a key type", name);
            if (!json_is_number(val) && !json_is_null(val)) return bad(c, "budget.%s is not a number", name);
            en->budget[ty] = json_is_number(val) && isfinite(json_number_value(val)) ? json_number_value(val) : 0;
        }
        json_object_foreach(bk, name, val) {
            int ty = tok_of(name);
            if (ty < 0) return bad(c, "budget_keys: '%s' is not a key type", name);
            if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > 0x7fffffff)
                return bad(c, "budget_keys.%s is not a count >= 0", name);
            en->budget_keys[ty] = (int)json_integer_value(val);
        }
        en->has |= RPS_BUDGET;
    }
    json_t *ej = json_object_get(o, "energy");
    if (ej) {
        if (!json_is_object(ej) || opt_num(ej, "fac", &en->m[RPS_M_FAC]) || opt_num(ej, "low_share_sink", &en->m[RPS_M_LOW_SINK]) ||
            opt_num(ej, "low_share_image", &en->m[RPS_M_LOW_IMAGE]))
            return bad(c, "'energy' must be an object with numbers 'fac', 'low_share_sink', 'low_share_image'");
        en->has |= RPS_ENERGY;
    }
    int r;
    if ((r = pair(c, o, "qk", en->m, RPS_M_QK_SINK, RPS_M_QK_IMAGE)) < 0) return r;
    if (r) en->has |= RPS_QK;
    if ((r = pair(c, o, "qk_post", en->m, RPS_M_QKPOST_SINK, RPS_M_QKPOST_IMAGE)) < 0) return r;
    if (r) en->has |= RPS_QK_POST;
    if ((r = pair(c, o, "qk_pre", en->m, RPS_M_QKPRE_SINK, RPS_M_QKPRE_IMAGE)) < 0) return r;
    if (r) en->has |= RPS_QK_PRE;
    if ((r = pair(c, o, "v_norm", en->m, RPS_M_VN_SINK, RPS_M_VN_IMAGE)) < 0) return r;
    if (r) en->has |= RPS_VNORM;
    if ((r = pair(c, o, "k_norm", en->m, RPS_M_KN_SINK, RPS_M_KN_IMAGE)) < 0) return r;
    if (r) en->has |= RPS_KNORM;
    json_t *aj = json_object_get(o, "act");
    if (aj) {
        if (!json_is_object(aj) || opt_num(aj, "sink_ratio", &en->m[RPS_M_ACT_SINK]) || opt_num(aj, "max_ratio", &en->m[RPS_M_ACT_MAX]))
            return bad(c, "'act' must be an object with numbers 'sink_ratio' and 'max_ratio'");
        en->has |= RPS_ACT;
    }
    /* mu per key and the key types (last step) */
    json_t *mu = json_object_get(o, "mu"), *kt = json_object_get(o, "key_types");
    if (mu || kt) {
        if (!json_is_array(mu) || !json_is_array(kt)) return bad(c, "'mu' and 'key_types' must be lists, both present");
        size_t n = json_array_size(mu);
        if (n > 1 << 24) return bad(c, "'mu' has %zu values", n);
        if (grow_mu(d, d->n_mu + n)) return SS_ENOMEM;
        en->mu_off = d->n_mu;
        en->n_mu = (int)n;
        for (size_t j = 0; j < n; j++) {
            json_t *m = json_array_get(mu, j);
            if (!json_is_number(m) && !json_is_null(m)) return bad(c, "mu[%zu] is not a number", j);
            d->mu[d->n_mu + j] = json_is_number(m) && isfinite(json_number_value(m)) ? (float)json_number_value(m) : NAN;
        }
        size_t at = 0;
        for (size_t j = 0; j < json_array_size(kt); j++) {
            json_t *run = json_array_get(kt, j), *t = json_array_get(run, 0), *cnt = json_array_get(run, 1);
            int ty = json_is_string(t) ? tok_of(json_string_value(t)) : -1;
            if (!json_is_array(run) || json_array_size(run) != 2 || ty < 0 || !json_is_integer(cnt) || json_integer_value(cnt) < 0)
                return bad(c, "key_types[%zu] must be a run [type, count]", j);
            if ((size_t)json_integer_value(cnt) > n - at)
                return bad(c, "key_types covers more than the %zu keys of 'mu'", n);
            memset(d->mu_type + d->n_mu + at, ty, (size_t)json_integer_value(cnt));
            at += (size_t)json_integer_value(cnt);
        }
        if (at != n) return bad(c, "key_types covers %zu keys, 'mu' has %zu", at, n);
        d->n_mu += n;
        en->has |= RPS_MU;
    }
    return 0;
}

static int cmp_site_step(const void *a, const void *b) {
    const rps_entry *x = *(const rps_entry *const *)a, *y = *(const rps_entry *const *)b;
    if (x->site != y->site) return (x->site > y->site) - (x->site < y->site);
    return (x->step > y->step) - (x->step < y->step);
}

int rp_spiral_parse(rp_exp *e, rp_record *r, json_t *arr, const char *label, int line) {
    r->spiral_off = 0;
    r->n_spiral = 0;
    if (!arr) return 0;
    pctx c = {.label = label, .line = line};
    if (!json_is_array(arr)) return ss_fail(SS_EFORMAT, "%s: line %d: 'spiral' must be a list of objects", label, line);
    size_t n = json_array_size(arr);
    if (n == 0) return 0;
    if (n > 1 << 24) return ss_fail(SS_EFORMAT, "%s: line %d: 'spiral' has %zu entries", label, line, n);
    if (!e->spiral && !(e->spiral = ss_calloc(1, sizeof *e->spiral))) return SS_ENOMEM;
    rp_spiral_data *d = e->spiral;
    if (grow((void **)&d->ent, &d->cap_ent, d->n_ent + n, sizeof *d->ent)) return SS_ENOMEM;
    size_t off = d->n_ent, top0 = d->n_top, mu0 = d->n_mu;
    for (size_t i = 0; i < n; i++) {
        c.i = i;
        c.site[0] = 0;
        int rc = parse_entry(d, &c, json_array_get(arr, i), &d->ent[off + i]);
        if (rc < 0) {
            d->n_top = top0, d->n_mu = mu0;
            return rc;
        }
    }
    /* one entry per (site, step) */
    const rps_entry **s = malloc(n * sizeof *s);
    if (!s) return ss_fail(SS_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) s[i] = &d->ent[off + i];
    qsort(s, n, sizeof *s, cmp_site_step);
    for (size_t i = 1; i < n; i++)
        if (s[i]->site == s[i - 1]->site && s[i]->step == s[i - 1]->step) {
            char nm[48];
            int step = s[i]->step;
            rps_site_name(nm, sizeof nm, s[i]->site);
            free(s);
            d->n_top = top0, d->n_mu = mu0;
            return ss_fail(SS_EFORMAT, "%s: line %d: 'spiral' has two entries for %s step %d", label, line, nm, step);
        }
    free(s);
    d->n_ent += n;
    r->spiral_off = off;
    r->n_spiral = (int)n;
    return 0;
}

void rp_spiral_data_free(rp_spiral_data *d) {
    if (!d) return;
    free(d->ent);
    free(d->top_key), free(d->top_mu), free(d->top_type);
    free(d->mu), free(d->mu_type);
    free(d);
}

/* ---- analysis ---- */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int block, site;
} site_id;

static int cmp_sid(const void *a, const void *b) {
    const site_id *x = a, *y = b;
    if (x->block != y->block) return (x->block > y->block) - (x->block < y->block);
    return (x->site > y->site) - (x->site < y->site);
}

/* mean and sample sd of the finite values, in order */
static void mean_sd(const double *x, int n, int *cnt, double *mean, double *sd) {
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) s += x[i], k++;
    *cnt = k;
    *mean = k ? s / k : NAN;
    if (k < 2) {
        *sd = NAN;
        return;
    }
    double q = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = sqrt(q / (k - 1));
}

static rps_stat t_stat(const double *x, int n) {
    rps_stat s;
    double sd;
    mean_sd(x, n, &s.n, &s.mean, &sd);
    s.lo = s.hi = NAN;
    if (s.n >= 2) {
        double h = stats_t_ppf(0.5 + RP_LEVEL / 2, s.n - 1) * sd / sqrt((double)s.n);
        s.lo = s.mean - h, s.hi = s.mean + h;
    }
    return s;
}

static double iou(const rp_spiral_data *d, const rps_entry *a, const rps_entry *b) {
    int k = RPS_IOU_K;
    if (a->n_top < k) k = a->n_top;
    if (b->n_top < k) k = b->n_top;
    if (k == 0) return NAN;
    const int *x = d->top_key + a->top_off, *y = d->top_key + b->top_off;
    int inter = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) inter += x[i] == y[j];
    return (double)inter / (2 * k - inter);
}

/* The keys at the last step (Figure 3) and the top keys by mean mu (Figure 10). */
static int site_keys(const rp_spiral_data *d, rps_site *s, const rps_entry *const *last, int n) {
    int with_mu = 0, nk = 0;
    for (int i = 0; i < n; i++)
        if (last[i] && (last[i]->has & RPS_MU)) with_mu++, nk = last[i]->n_mu > nk ? last[i]->n_mu : nk;
    s->keys_from_mu = with_mu > 0;
    if (!with_mu)
        for (int i = 0; i < n; i++)
            if (last[i])
                for (int j = 0; j < last[i]->n_top; j++) nk = d->top_key[last[i]->top_off + j] + 1 > nk ? d->top_key[last[i]->top_off + j] + 1 : nk;
    if (nk == 0) return 0;
    double *sum = ss_calloc((size_t)nk, sizeof *sum);
    int *cnt = ss_calloc((size_t)nk * (SS_TOK_N + 1), sizeof *cnt); /* [key][type] and, last, the entries with the key */
    if (!sum || !cnt) {
        free(sum), free(cnt);
        return SS_ENOMEM;
    }
    int used = 0;
    for (int i = 0; i < n; i++) {
        const rps_entry *en = last[i];
        if (!en || (with_mu && !(en->has & RPS_MU))) continue;
        used++;
        if (with_mu) {
            for (int j = 0; j < en->n_mu; j++) {
                float m = d->mu[en->mu_off + (size_t)j];
                if (isnan(m)) continue;
                sum[j] += m;
                cnt[(size_t)j * (SS_TOK_N + 1) + d->mu_type[en->mu_off + (size_t)j]]++;
                cnt[(size_t)j * (SS_TOK_N + 1) + SS_TOK_N]++;
            }
        } else {
            for (int j = 0; j < en->n_top; j++) {
                int k = d->top_key[en->top_off + (size_t)j];
                double m = d->top_mu[en->top_off + (size_t)j];
                if (isnan(m)) continue;
                sum[k] += m;
                cnt[(size_t)k * (SS_TOK_N + 1) + d->top_type[en->top_off + (size_t)j]]++;
                cnt[(size_t)k * (SS_TOK_N + 1) + SS_TOK_N]++;
            }
        }
    }
    s->keys_n = used;
    int rows = 0;
    for (int k = 0; k < nk; k++) rows += cnt[(size_t)k * (SS_TOK_N + 1) + SS_TOK_N] > 0;
    if (!(s->keys = ss_calloc((size_t)(rows ? rows : 1), sizeof *s->keys))) {
        free(sum), free(cnt);
        return SS_ENOMEM;
    }
    for (int k = 0; k < nk; k++) {
        const int *c = cnt + (size_t)k * (SS_TOK_N + 1);
        if (!c[SS_TOK_N]) continue;
        rps_key *q = &s->keys[s->n_keys++];
        q->key = k;
        q->n = c[SS_TOK_N];
        q->type = 0;
        for (int t = 1; t < SS_TOK_N; t++)
            if (c[t] > c[q->type]) q->type = t;
        q->type_share = (double)c[q->type] / c[SS_TOK_N];
        /* from mu: the mean over the images that have the key; from the top lists: over every
         * image at the step (a key outside an image's top list counts 0) */
        q->mu = sum[k] / (with_mu ? c[SS_TOK_N] : used);
    }
    /* the top keys: insertion into a sorted list of RPS_TOP */
    for (int i = 0; i < s->n_keys; i++) {
        const rps_key *q = &s->keys[i];
        int at = s->n_top;
        while (at > 0 && q->mu > s->top[at - 1].mu) at--;
        if (at >= RPS_TOP) continue;
        int end = s->n_top < RPS_TOP ? s->n_top : RPS_TOP - 1;
        memmove(&s->top[at + 1], &s->top[at], (size_t)(end - at) * sizeof *s->top);
        s->top[at] = *q;
        if (s->n_top < RPS_TOP) s->n_top++;
    }
    free(sum), free(cnt);
    return 0;
}

static int analyze_site(const rp_exp *e, int c, rps_site *s, double *buf) {
    const rp_spiral_data *d = e->spiral;
    int first = e->cond_first[c], nr = e->cond_count[c];
    /* the steps of this site */
    int *steps = NULL, ns = 0, cap = 0;
    for (int i = 0; i < nr; i++) {
        const rp_record *r = &e->recs[first + i];
        for (int j = 0; j < r->n_spiral; j++) {
            const rps_entry *en = &d->ent[r->spiral_off + (size_t)j];
            if (en->site != s->site || en->block != s->block) continue;
            int dup = 0;
            for (int q = 0; q < ns && !dup; q++) dup = steps[q] == en->step;
            if (dup) continue;
            if (ns == cap) {
                int *t = realloc(steps, (size_t)(cap = cap ? 2 * cap : 32) * sizeof *t);
                if (!t) return free(steps), ss_fail(SS_ENOMEM, "out of memory");
                steps = t;
            }
            steps[ns++] = en->step;
        }
    }
    qsort(steps, (size_t)ns, sizeof *steps, cmp_int);
    const rps_entry **tab = ss_calloc((size_t)ns * (size_t)nr + 1, sizeof *tab); /* [step][record] */
    int *keys = ss_malloc(((size_t)nr + 1) * sizeof *keys);
    s->steps = ss_calloc((size_t)ns + 1, sizeof *s->steps);
    if (!tab || !keys || !s->steps) {
        free(steps), free(tab), free(keys);
        return SS_ENOMEM;
    }
    s->n_steps = ns;
    for (int i = 0; i < nr; i++) {
        const rp_record *r = &e->recs[first + i];
        for (int j = 0; j < r->n_spiral; j++) {
            const rps_entry *en = &d->ent[r->spiral_off + (size_t)j];
            if (en->site != s->site || en->block != s->block) continue;
            int k = (int)((const int *)bsearch(&en->step, steps, (size_t)ns, sizeof *steps, cmp_int) - steps);
            tab[(size_t)k * nr + i] = en;
        }
    }
    double iou_sum = 0;
    int iou_k = 0;
    for (int k = 0; k < ns; k++) {
        rps_step *p = &s->steps[k];
        const rps_entry *const *row = tab + (size_t)k * nr;
        p->step = steps[k];
        p->t_frac = NAN;
        int n = 0;
        for (int i = 0; i < nr; i++)
            if (row[i]) {
                if (!n) p->t_frac = row[i]->t_frac;
                keys[n++] = row[i]->sink;
            }
        p->n = n;
        qsort(keys, (size_t)n, sizeof *keys, cmp_int);
        p->mode_sink = -1;
        for (int i = 0, run = 0; i < n; i++) {
            run = i && keys[i] == keys[i - 1] ? run + 1 : 1;
            p->unique += run == 1;
            if (run > p->mode_count) p->mode_count = run, p->mode_sink = keys[i];
        }
        for (int i = 0; i < nr; i++)
            if (row[i] && row[i]->sink == p->mode_sink) {
                p->mode_type = row[i]->sink_type;
                break;
            }
        /* IoU with the previous step */
        p->iou = NAN;
        if (k > 0) {
            const rps_entry *const *prev = tab + (size_t)(k - 1) * nr;
            double sum = 0;
            for (int i = 0; i < nr; i++)
                if (row[i] && prev[i]) {
                    double v = iou(d, prev[i], row[i]);
                    if (isfinite(v)) sum += v, p->iou_n++;
                }
            if (p->iou_n) {
                p->iou = sum / p->iou_n;
                iou_sum += p->iou, iou_k++;
            }
        }
        int m = 0;
        for (int i = 0; i < nr; i++)
            if (row[i]) buf[m++] = row[i]->x_image;
        mean_sd(buf, m, &p->xi_n, &p->xi_mean, &p->xi_sd);
        m = 0;
        for (int i = 0; i < nr; i++)
            if (row[i]) buf[m++] = row[i]->x_uniform;
        mean_sd(buf, m, &p->xu_n, &p->xu_mean, &p->xu_sd);
    }
    s->iou_all = iou_k ? iou_sum / iou_k : NAN;
    /* the last step */
    int rc = 0;
    s->last = ns ? steps[ns - 1] : -1;
    if (ns) {
        const rps_entry *const *row = tab + (size_t)(ns - 1) * nr;
        for (int q = 0; q < RPS_NM; q++) {
            int m = 0;
            for (int i = 0; i < nr; i++)
                if (row[i]) buf[m++] = row[i]->m[q];
            s->n_last = m;
            s->m[q] = t_stat(buf, m);
        }
        for (int i = 0; i < nr; i++) {
            if (!row[i] || !(row[i]->has & RPS_BUDGET)) continue;
            s->budget_n++;
            for (int t = 0; t < SS_TOK_N; t++) {
                s->budget[t] += row[i]->budget[t];
                s->budget_keys[t] += row[i]->budget_keys[t];
                s->has_type[t] |= row[i]->budget_keys[t] > 0 || row[i]->budget[t] > 0;
            }
        }
        for (int t = 0; t < SS_TOK_N && s->budget_n; t++) s->budget[t] /= s->budget_n, s->budget_keys[t] /= s->budget_n;
        rc = site_keys(d, s, row, nr);
    }
    free(steps), free(tab), free(keys);
    return rc;
}

static int analyze_cond(const rp_exp *e, int c, rps_cond *out) {
    const rp_spiral_data *d = e->spiral;
    int first = e->cond_first[c], nr = e->cond_count[c];
    size_t total = 0;
    for (int i = 0; i < nr; i++) total += (size_t)e->recs[first + i].n_spiral, out->n_images += e->recs[first + i].n_spiral > 0;
    site_id *ids = ss_malloc((total + 1) * sizeof *ids);
    double *buf = ss_malloc(((size_t)nr + 1) * sizeof *buf);
    if (!ids || !buf) return free(ids), free(buf), SS_ENOMEM;
    size_t n = 0;
    for (int i = 0; i < nr; i++) {
        const rp_record *r = &e->recs[first + i];
        for (int j = 0; j < r->n_spiral; j++) ids[n++] = (site_id){d->ent[r->spiral_off + (size_t)j].block, d->ent[r->spiral_off + (size_t)j].site};
    }
    qsort(ids, n, sizeof *ids, cmp_sid);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (!w || cmp_sid(&ids[i], &ids[w - 1])) ids[w++] = ids[i];
    out->cond = c;
    if (!(out->sites = ss_calloc(w + 1, sizeof *out->sites))) return free(ids), free(buf), SS_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < w && rc == 0; i++) {
        out->sites[i].site = ids[i].site, out->sites[i].block = ids[i].block;
        out->n_sites++;
        rc = analyze_site(e, c, &out->sites[i], buf);
    }
    free(ids), free(buf);
    return rc;
}

int rp_spiral_analyze(rp_analysis *a) {
    const rp_exp *e = a->e;
    a->spiral = NULL;
    if (!e->spiral) return 0;
    int any = 0;
    for (int i = 0; i < e->n_recs && !any; i++) any = e->recs[i].n_spiral > 0;
    if (!any) return 0;
    rp_spiral *s = ss_calloc(1, sizeof *s);
    if (!s || !(s->conds = ss_calloc((size_t)e->n_conds, sizeof *s->conds))) return free(s), SS_ENOMEM;
    a->spiral = s;
    for (int c = 0; c < e->n_conds; c++) {
        int has = 0;
        for (int i = 0; i < e->cond_count[c] && !has; i++) has = e->recs[e->cond_first[c] + i].n_spiral > 0;
        if (!has) continue;
        int rc = analyze_cond(e, c, &s->conds[s->n_conds++]);
        if (rc < 0) return rc;
    }
    return 0;
}

void rp_spiral_free(rp_analysis *a) {
    rp_spiral *s = a->spiral;
    if (!s) return;
    for (int c = 0; c < s->n_conds; c++) {
        for (int i = 0; i < s->conds[c].n_sites; i++) free(s->conds[c].sites[i].steps), free(s->conds[c].sites[i].keys);
        free(s->conds[c].sites);
    }
    free(s->conds);
    free(s);
    a->spiral = NULL;
}

/* ---- CSV ---- */

/* condition,site,block, */
static void c_lead(FILE *f, const rp_exp *e, const rps_cond *c, const rps_site *s) {
    char nm[48];
    rp_csv_str(f, e->conds[c->cond].name);
    fprintf(f, ",%s,%d,", rps_site_name(nm, sizeof nm, s->site), s->block);
}

static int write_csv(FILE *f, const char *dir, const char *name, char **buf, size_t *len) {
    int bad = ferror(f);
    fclose(f);
    int rc = 0;
    if (bad) rc = ss_fail(SS_ENOMEM, "out of memory writing %s", name);
    else {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = rp_write_file(path, *buf, *len);
    }
    free(*buf);
    return rc;
}

#define CSV_OPEN()                                                                                                             \
    char *buf = NULL;                                                                                                          \
    size_t len = 0;                                                                                                            \
    FILE *f = open_memstream(&buf, &len);                                                                                      \
    if (!f) return ss_fail(SS_ENOMEM, "out of memory")

static int csv_steps(const rp_analysis *a, const char *dir) {
    const rp_spiral *sp = a->spiral;
    CSV_OPEN();
    fputs("condition,site,block,step,t_frac,n,unique_sinks,mode_sink,mode_sink_type,mode_sink_share,iou_n,iou_mean,"
          "ki_x_image_n,ki_x_image_mean,ki_x_image_sd,ki_x_uniform_n,ki_x_uniform_mean,ki_x_uniform_sd\n",
          f);
    for (int c = 0; c < sp->n_conds; c++)
        for (int i = 0; i < sp->conds[c].n_sites; i++) {
            const rps_site *s = &sp->conds[c].sites[i];
            for (int k = 0; k < s->n_steps; k++) {
                const rps_step *p = &s->steps[k];
                c_lead(f, a->e, &sp->conds[c], s);
                fprintf(f, "%d,", p->step);
                rp_csv_num(f, p->t_frac);
                fprintf(f, ",%d,%d,%d,%s,", p->n, p->unique, p->mode_sink, ss_tok_name((ss_tok)p->mode_type));
                rp_csv_num(f, p->n ? (double)p->mode_count / p->n : NAN);
                fprintf(f, ",%d,", p->iou_n);
                rp_csv_num(f, p->iou);
                fprintf(f, ",%d,", p->xi_n);
                rp_csv_num(f, p->xi_mean);
                fputc(',', f);
                rp_csv_num(f, p->xi_sd);
                fprintf(f, ",%d,", p->xu_n);
                rp_csv_num(f, p->xu_mean);
                fputc(',', f);
                rp_csv_num(f, p->xu_sd);
                fputc('\n', f);
            }
        }
    return write_csv(f, dir, "spiral_steps.csv", &buf, &len);
}

static int csv_depth(const rp_analysis *a, const char *dir) {
    const rp_spiral *sp = a->spiral;
    CSV_OPEN();
    fputs("condition,site,block,step,metric,n,mean,ci_lo,ci_hi\n", f);
    for (int c = 0; c < sp->n_conds; c++)
        for (int i = 0; i < sp->conds[c].n_sites; i++) {
            const rps_site *s = &sp->conds[c].sites[i];
            for (int q = 0; q < RPS_NM; q++) {
                const rps_stat *m = &s->m[q];
                if (!m->n) continue;
                c_lead(f, a->e, &sp->conds[c], s);
                fprintf(f, "%d,%s,%d,", s->last, RPS_METRIC[q], m->n);
                rp_csv_num(f, m->mean);
                fputc(',', f);
                rp_csv_num(f, m->lo);
                fputc(',', f);
                rp_csv_num(f, m->hi);
                fputc('\n', f);
            }
        }
    return write_csv(f, dir, "spiral_depth.csv", &buf, &len);
}

static int csv_budget(const rp_analysis *a, const char *dir) {
    const rp_spiral *sp = a->spiral;
    CSV_OPEN();
    fputs("condition,site,block,step,type,n,budget_mean,keys_mean\n", f);
    for (int c = 0; c < sp->n_conds; c++)
        for (int i = 0; i < sp->conds[c].n_sites; i++) {
            const rps_site *s = &sp->conds[c].sites[i];
            for (int t = 0; t < SS_TOK_N && s->budget_n; t++) {
                if (!s->has_type[t]) continue;
                c_lead(f, a->e, &sp->conds[c], s);
                fprintf(f, "%d,%s,%d,", s->last, ss_tok_name((ss_tok)t), s->budget_n);
                rp_csv_num(f, s->budget[t]);
                fputc(',', f);
                rp_csv_num(f, s->budget_keys[t]);
                fputc('\n', f);
            }
        }
    return write_csv(f, dir, "spiral_budget.csv", &buf, &len);
}

static int csv_keys(const rp_analysis *a, const char *dir, int top) {
    const rp_spiral *sp = a->spiral;
    CSV_OPEN();
    fputs(top ? "condition,site,block,step,rank,key,type,type_share,n,mu_mean,source\n"
              : "condition,site,block,step,key,type,type_share,n,mu_mean,source\n",
          f);
    for (int c = 0; c < sp->n_conds; c++)
        for (int i = 0; i < sp->conds[c].n_sites; i++) {
            const rps_site *s = &sp->conds[c].sites[i];
            int n = top ? s->n_top : s->n_keys;
            for (int k = 0; k < n; k++) {
                const rps_key *q = top ? &s->top[k] : &s->keys[k];
                c_lead(f, a->e, &sp->conds[c], s);
                fprintf(f, "%d,", s->last);
                if (top) fprintf(f, "%d,", k + 1);
                fprintf(f, "%d,%s,", q->key, ss_tok_name((ss_tok)q->type));
                rp_csv_num(f, q->type_share);
                fprintf(f, ",%d,", q->n);
                rp_csv_num(f, q->mu);
                fprintf(f, ",%s\n", s->keys_from_mu ? "mu" : "top_keys");
            }
        }
    return write_csv(f, dir, top ? "spiral_top.csv" : "spiral_keys.csv", &buf, &len);
}

int rp_spiral_write_csvs(const rp_analysis *a, const char *dir) {
    if (!a->spiral) { /* none of ours may survive from an earlier report into the same folder */
        for (int i = 0; RP_OUTPUT_FILES[i]; i++) {
            if (strncmp(RP_OUTPUT_FILES[i], "spiral_", 7)) continue;
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, RP_OUTPUT_FILES[i]);
            if (unlink(path) < 0 && errno != ENOENT)
                return ss_fail(SS_EIO, "report: %s: cannot remove the stale file of an earlier report: %s", path,
                               strerror(errno));
        }
        return 0;
    }
    int rc = csv_steps(a, dir);
    if (!rc) rc = csv_depth(a, dir);
    if (!rc) rc = csv_budget(a, dir);
    if (!rc) rc = csv_keys(a, dir, 0);
    if (!rc) rc = csv_keys(a, dir, 1);
    return rc;
}

/* ---- summary.json: the same layout as output.c's writer (two-space indent) ---- */

typedef struct {
    FILE *f;
    int depth;
    int first[16];
    int after_key;
} sj;

static void sj_pre(sj *w) {
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (!w->first[w->depth]) fputc(',', w->f);
    w->first[w->depth] = 0;
    fputc('\n', w->f);
    for (int i = 0; i < w->depth; i++) fputs("  ", w->f);
}
static void sj_open(sj *w, char c) {
    sj_pre(w);
    fputc(c, w->f);
    w->first[++w->depth] = 1;
}
static void sj_close(sj *w, char c) {
    int empty = w->first[w->depth];
    w->depth--;
    if (!empty) {
        fputc('\n', w->f);
        for (int i = 0; i < w->depth; i++) fputs("  ", w->f);
    }
    fputc(c, w->f);
}
static void sj_quote(FILE *f, const char *k) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)k; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}
static void sj_key(sj *w, const char *k) {
    sj_pre(w);
    sj_quote(w->f, k);
    fputs(": ", w->f);
    w->after_key = 1;
}
static void sj_num(sj *w, const char *k, double x) {
    sj_key(w, k);
    sj_pre(w);
    if (!isfinite(x)) {
        fputs("null", w->f);
        return;
    }
    char b[40];
    rp_num(b, sizeof b, x);
    fputs(b, w->f);
}
static void sj_int(sj *w, const char *k, long long x) {
    sj_key(w, k);
    sj_pre(w);
    fprintf(w->f, "%lld", x);
}
static void sj_str(sj *w, const char *k, const char *v) {
    sj_key(w, k);
    sj_pre(w);
    sj_quote(w->f, v);
}

static void sj_stat(sj *w, const char *k, const rps_stat *m) {
    sj_key(w, k);
    sj_open(w, '{');
    sj_int(w, "n", m->n);
    sj_num(w, "mean", m->mean);
    sj_num(w, "ci_lo", m->lo);
    sj_num(w, "ci_hi", m->hi);
    sj_close(w, '}');
}

void rp_spiral_write_json(const rp_analysis *a, FILE *f, int depth) {
    const rp_spiral *sp = a->spiral;
    sj w = {.f = f, .depth = depth};
    w.after_key = 1;
    sj_open(&w, '{');
    sj_str(&w, "definitions", "docs/experiment-format.md, section 'Spiral to Sink figures in the report'");
    sj_int(&w, "iou_k", RPS_IOU_K);
    sj_num(&w, "ci_level", RP_LEVEL);
    sj_key(&w, "conditions");
    sj_open(&w, '[');
    char nm[48];
    for (int c = 0; c < sp->n_conds; c++) {
        const rps_cond *cd = &sp->conds[c];
        sj_open(&w, '{');
        sj_str(&w, "condition", a->e->conds[cd->cond].name);
        sj_int(&w, "images", cd->n_images);
        sj_key(&w, "sites");
        sj_open(&w, '[');
        for (int i = 0; i < cd->n_sites; i++) {
            const rps_site *s = &cd->sites[i];
            sj_open(&w, '{');
            sj_str(&w, "site", rps_site_name(nm, sizeof nm, s->site));
            sj_int(&w, "block", s->block);
            sj_int(&w, "steps", s->n_steps);
            sj_int(&w, "last_step", s->last);
            sj_int(&w, "images_last_step", s->n_last);
            int umax = 0;
            double usum = 0;
            for (int k = 0; k < s->n_steps; k++) umax = s->steps[k].unique > umax ? s->steps[k].unique : umax, usum += s->steps[k].unique;
            const rps_step *L = s->n_steps ? &s->steps[s->n_steps - 1] : NULL;
            sj_key(&w, "unique_sinks");
            sj_open(&w, '{');
            sj_int(&w, "last_step", L ? L->unique : 0);
            sj_int(&w, "max", umax);
            sj_num(&w, "mean_over_steps", s->n_steps ? usum / s->n_steps : NAN);
            sj_close(&w, '}');
            if (L && L->n) {
                sj_key(&w, "top_sink_last_step");
                sj_open(&w, '{');
                sj_int(&w, "key", L->mode_sink);
                sj_str(&w, "type", ss_tok_name((ss_tok)L->mode_type));
                sj_num(&w, "share", (double)L->mode_count / L->n);
                sj_close(&w, '}');
            }
            sj_num(&w, "iou_mean", s->iou_all);
            for (int q = 0; q < RPS_NM; q++)
                if (s->m[q].n) sj_stat(&w, RPS_METRIC[q], &s->m[q]);
            if (s->budget_n) {
                sj_key(&w, "budget");
                sj_open(&w, '{');
                for (int t = 0; t < SS_TOK_N; t++)
                    if (s->has_type[t]) sj_num(&w, ss_tok_name((ss_tok)t), s->budget[t]);
                sj_close(&w, '}');
                sj_key(&w, "budget_keys");
                sj_open(&w, '{');
                for (int t = 0; t < SS_TOK_N; t++)
                    if (s->has_type[t]) sj_num(&w, ss_tok_name((ss_tok)t), s->budget_keys[t]);
                sj_close(&w, '}');
            }
            if (s->n_top) {
                sj_key(&w, "top_keys");
                sj_open(&w, '[');
                for (int k = 0; k < s->n_top && k < 5; k++) {
                    sj_open(&w, '{');
                    sj_int(&w, "key", s->top[k].key);
                    sj_str(&w, "type", ss_tok_name((ss_tok)s->top[k].type));
                    sj_num(&w, "mu", s->top[k].mu);
                    sj_close(&w, '}');
                }
                sj_close(&w, ']');
            }
            sj_close(&w, '}');
        }
        sj_close(&w, ']');
        sj_close(&w, '}');
    }
    sj_close(&w, ']');
    sj_close(&w, '}');
}

/* ---- terminal ---- */

void rp_spiral_print(const rp_analysis *a, FILE *f) {
    const rp_spiral *sp = a->spiral;
    if (!sp || !sp->n_conds) return;
    const rps_cond *c = &sp->conds[0];
    char nm[48], x[2][64], top[80], bud[200];
    fprintf(f, "\nWhy sinks form (%s, %d images, last step; spiral_*.csv, summary.json spiral)\n", a->e->conds[c->cond].name,
            c->n_images);
    fprintf(f, "%-10s %-22s %-22s %6s %-20s %6s  %s\n", "site", "x random image key", "x uniform", "unique", "top sink", "IoU",
            "budget by type");
    for (int i = 0; i < c->n_sites; i++) {
        const rps_site *s = &c->sites[i];
        for (int q = 0; q < 2; q++) {
            const rps_stat *m = &s->m[q ? RPS_M_XUNIF : RPS_M_XIMAGE];
            if (!m->n) snprintf(x[q], sizeof x[q], "-");
            else if (isfinite(m->lo)) snprintf(x[q], sizeof x[q], "%.3g [%.3g, %.3g]", m->mean, m->lo, m->hi);
            else snprintf(x[q], sizeof x[q], "%.3g", m->mean);
        }
        const rps_step *L = s->n_steps ? &s->steps[s->n_steps - 1] : NULL;
        if (L && L->n) snprintf(top, sizeof top, "%d %s (%.0f%%)", L->mode_sink, ss_tok_name((ss_tok)L->mode_type), 100.0 * L->mode_count / L->n);
        else snprintf(top, sizeof top, "-");
        size_t n = 0;
        bud[0] = 0;
        for (int t = 0; t < SS_TOK_N && s->budget_n; t++)
            if (s->has_type[t] && n < sizeof bud)
                n += (size_t)snprintf(bud + n, sizeof bud - n, "%s%s %.1f%%", n ? ", " : "", ss_tok_name((ss_tok)t), 100 * s->budget[t]);
        char iou[32];
        if (isfinite(s->iou_all)) snprintf(iou, sizeof iou, "%.3f", s->iou_all);
        else snprintf(iou, sizeof iou, "-");
        fprintf(f, "%-10s %-22s %-22s %6d %-20s %6s  %s\n", rps_site_name(nm, sizeof nm, s->site), x[0], x[1], L ? L->unique : 0, top,
                iou, n ? bud : "-");
    }
}
