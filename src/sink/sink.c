#include "sink/sink.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "sink/abspe.h"
#include "sink/spiral.h"

#define N_CODES (SS_SITE_NKIND * SS_SITE_MAX_BLOCKS)

struct sink_ctx {
    uint8_t probe[N_CODES]; /* by site code */
    sink_tokens probe_queries;
    int topk, keep_mass;
    int have_cond;
    sink_condition cond;
    int step;
    double tfrac;
    sink_record **recs;
    int nrec, caprec;
    int pending; /* first record made since the last block output */
    unsigned spiral;  /* SPIRAL_* fields at probed sites */
    float *qk_pre;    /* [B, H, Tk] pre-RoPE mean <q, k> of site qk_pre_code, until its attention */
    int qk_pre_code;
    uint8_t *text_types; /* [tt_B, tt_S] ss_tok of the text tokens (sink_ctx_set_text_types), or NULL */
    int tt_B, tt_S;
    uint8_t *key_type;   /* [B, Tk] scratch: a site's key types built from text_types */
    size_t key_type_cap;
};

sink_ctx *sink_ctx_new(void) {
    sink_ctx *s = ss_calloc(1, sizeof *s);
    if (s) {
        s->tfrac = -1;
        s->topk = 5;
        s->probe_queries = TOK_IMAGE;
    }
    return s;
}

static void record_free(sink_record *r) {
    if (!r) return;
    void *p[] = {r->top_idx, r->top_mass, r->head_entropy, r->head_top5, r->max_mass, r->entropy, r->top5,
                 r->idx0_frac, r->text_frac, r->act_max, r->act_p95, r->act_text_max, r->act_text_p95,
                 r->mass, r->sel, r->before, r->after};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    spiral_rec_free(r->spiral);
    free(r);
}

void sink_ctx_clear_records(sink_ctx *s) {
    for (int i = 0; i < s->nrec; i++) record_free(s->recs[i]);
    s->nrec = 0;
    s->pending = 0;
}

void sink_ctx_free(sink_ctx *s) {
    if (!s) return;
    sink_ctx_clear_records(s);
    free(s->recs);
    free(s->qk_pre);
    free(s->text_types);
    free(s->key_type);
    free(s);
}

int sink_ctx_set_text_types(sink_ctx *s, const uint8_t *types, int B, int S) {
    free(s->text_types);
    s->text_types = NULL;
    s->tt_B = s->tt_S = 0;
    if (!types || B <= 0 || S <= 0) return 0;
    for (size_t i = 0; i < (size_t)B * S; i++)
        if (types[i] == SS_TOK_IMAGE || types[i] >= SS_TOK_N)
            return ss_fail(SS_EARG, "sink: text token type %d (batch %zu, token %zu) is not a text type", types[i],
                           i / (size_t)S, i % (size_t)S);
    if (!(s->text_types = ss_malloc((size_t)B * S))) return SS_ENOMEM;
    memcpy(s->text_types, types, (size_t)B * S);
    s->tt_B = B, s->tt_S = S;
    return 0;
}

/* The site as the probe sees it: with key_type [B, Tk] from the text types when they are set and
 * the site has none of its own (image spans SS_TOK_IMAGE, its one text span of S keys the text
 * types). Sites without text keys stay as they are. */
static int typed_site(sink_ctx *s, const ss_site *site, int B, ss_site *out) {
    *out = *site;
    if (!s->text_types || site->key_type) return 0;
    int nt = 0, ti = -1;
    for (int i = 0; i < site->n_kspan; i++)
        if (ss_tok_is_text(site->kspan[i].type)) nt++, ti = i;
    if (!nt) return 0;
    char nm[40];
    if (nt != 1 || site->kspan[ti].len != s->tt_S || B != s->tt_B)
        return ss_fail(SS_EARG, "sink: site %s has %d text key span(s) of %d keys in a batch of %d, but the text token "
                       "types are for %d x %d tokens", ss_site_code_name(ss_site_code_of(site), nm, sizeof nm), nt,
                       site->kspan[ti].len, B, s->tt_B, s->tt_S);
    const size_t need = (size_t)B * site->Tk;
    if (need > s->key_type_cap) {
        uint8_t *k = realloc(s->key_type, need);
        if (!k) return ss_fail(SS_ENOMEM, "out of memory");
        s->key_type = k, s->key_type_cap = need;
    }
    for (int b = 0; b < B; b++) {
        uint8_t *kt = s->key_type + (size_t)b * site->Tk;
        for (int i = 0; i < site->n_kspan; i++) {
            const ss_span *sp = &site->kspan[i];
            if (i == ti) memcpy(kt + sp->start, s->text_types + (size_t)b * s->tt_S, (size_t)sp->len);
            else memset(kt + sp->start, sp->type, (size_t)sp->len);
        }
    }
    out->key_type = s->key_type;
    return 0;
}

int sink_ctx_set_probe(sink_ctx *s, const int *sites, int n, sink_tokens queries, int topk, int keep_mass) {
    memset(s->probe, 0, sizeof s->probe);
    for (int i = 0; i < n; i++) {
        if (sites[i] < 0 || sites[i] >= N_CODES) return ss_fail(SS_EARG, "probe: site code %d out of range", sites[i]);
        s->probe[sites[i]] = 1;
    }
    if (topk < 1 || topk > COND_MAX_K) return ss_fail(SS_EARG, "probe: top-k %d outside [1, %d]", topk, COND_MAX_K);
    s->probe_queries = queries;
    s->topk = topk;
    s->keep_mass = keep_mass;
    return 0;
}

void sink_ctx_set_spiral(sink_ctx *s, unsigned fields) { s->spiral = fields & SPIRAL_ALL; }

void sink_ctx_set_condition(sink_ctx *s, const sink_condition *c) {
    s->have_cond = c != NULL;
    if (c) s->cond = *c;
}

void sink_ctx_set_step(sink_ctx *s, int step, double tfrac) {
    s->step = step;
    s->tfrac = tfrac;
}

int sink_ctx_record_count(const sink_ctx *s) { return s->nrec; }
const sink_record *sink_ctx_record(const sink_ctx *s, int i) { return s->recs[i]; }

/* ---- token layout: everything about image / text tokens comes from the site ---- */

static int tok_want(sink_tokens t) { return t == TOK_IMAGE ? 0 : t == TOK_TEXT ? 1 : 2; }

static const char *site_name(const ss_site *site, char *buf, size_t cap) {
    return ss_site_code_name(ss_site_code_of(site), buf, cap);
}

/* The query rows or candidate keys of `t` at a site, one contiguous range. */
static int site_range(const ss_site *site, int keys, sink_tokens t, int *lo, int *hi) {
    char nm[48];
    if (ss_site_range(site, keys, tok_want(t), lo, hi) < 0)
        return ss_fail(SS_EARG, "site %s: its %s %s are not one contiguous range (not supported)", site_name(site, nm, sizeof nm),
                       sink_tokens_name(t), keys ? "keys" : "query rows");
    return 0;
}

static int key_is_text(const ss_site *site, int j) {
    for (int i = 0; i < site->n_kspan; i++)
        if (j >= site->kspan[i].start && j < site->kspan[i].start + site->kspan[i].len) return ss_tok_is_text(site->kspan[i].type);
    return 0;
}

static int n_image_keys(const ss_site *site) {
    int n = 0;
    for (int i = 0; i < site->n_kspan; i++) n += ss_tok_is_text(site->kspan[i].type) ? 0 : site->kspan[i].len;
    return n;
}

/* The query spans of `t`: mass over them is the row-weighted mean of their mass vectors. */
typedef struct {
    int n, rows;
    const float *m[ATTN_MAX_QSPAN];
    int cnt[ATTN_MAX_QSPAN];
} qsel;

static void qsel_of(qsel *q, const ss_site *site, const attn_stats *st, sink_tokens t, size_t off) {
    memset(q, 0, sizeof *q);
    for (int g = 0; g < site->n_qspan && g < ATTN_MAX_QSPAN; g++) {
        const ss_span *sp = &site->qspan[g];
        if (t != TOK_ALL && (t == TOK_TEXT) != ss_tok_is_text(sp->type)) continue;
        q->m[q->n] = st->mass[g] + off;
        q->cnt[q->n++] = sp->len;
        q->rows += sp->len;
    }
}

/* mass over a query set: one span's vector as it is, several weighted by their row counts. */
static void set_mass(float *dst, const qsel *q, int Tk) {
    if (q->n == 1) {
        memcpy(dst, q->m[0], sizeof(float) * Tk);
        return;
    }
    for (int j = 0; j < Tk; j++) {
        double acc = 0;
        for (int g = 0; g < q->n; g++) acc += (double)q->cnt[g] * q->m[g][j];
        dst[j] = q->rows ? (float)(acc / q->rows) : 0.0f;
    }
}

static sink_record *record_new(sink_ctx *s, const ss_site *site, const attn_args *a) {
    if (s->nrec == s->caprec) {
        int cap = s->caprec ? 2 * s->caprec : 16;
        sink_record **r = realloc(s->recs, sizeof *r * cap);
        if (!r) return NULL;
        s->recs = r;
        s->caprec = cap;
    }
    sink_record *r = ss_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->block = site->index;
    r->site = ss_site_code_of(site);
    r->step = s->step;
    r->tfrac = s->tfrac;
    r->B = a->B;
    r->H = a->H;
    r->T = site->Tk;
    r->n_img = n_image_keys(site);
    r->Tq = site->Tq;
    if (ss_site_range(site, 0, 0, &r->img_rows[0], &r->img_rows[1]) < 0) r->img_rows[0] = r->img_rows[1] = 0;
    if (ss_site_range(site, 0, 1, &r->text_rows[0], &r->text_rows[1]) < 0) r->text_rows[0] = r->text_rows[1] = 0;
    r->min_margin = -1;
    s->recs[s->nrec++] = r;
    return r;
}

/* Indices of the k largest of x over candidates [lo, hi) not masked (kv[j] == 0; kv may be
 * NULL), ties: lower index first, descending. */
static void topk_select(const float *x, const uint8_t *kv, int lo, int hi, int k, int *idx, float *val, double *margin) {
    int n = 0;
    for (int j = lo; j < hi; j++) {
        if (kv && !kv[j]) continue;
        if (n == k && !(x[j] > val[k - 1])) continue;
        int p = n < k ? n++ : k - 1;
        while (p > 0 && x[j] > val[p - 1]) {
            val[p] = val[p - 1];
            idx[p] = idx[p - 1];
            p--;
        }
        val[p] = x[j];
        idx[p] = j;
    }
    if (margin) {
        /* gap to the best key not selected */
        float next = -INFINITY;
        for (int j = lo; j < hi; j++) {
            if (kv && !kv[j]) continue;
            int in = 0;
            for (int t = 0; t < k; t++) in |= idx[t] == j;
            if (!in && x[j] > next) next = x[j];
        }
        *margin = next == -INFINITY ? INFINITY : (double)val[k - 1] - next;
    }
}

/* k distinct keys drawn uniformly from [lo, hi) (masked ones redrawn), reproducible from (seed,
 * site, step, b, h). The caller has checked that [lo, hi) holds at least k unmasked keys. */
static void random_select(int lo, int hi, const uint8_t *kv, int k, uint64_t key, int *idx) {
    uint64_t ctr = 0;
    for (int t = 0; t < k; t++) {
        for (;;) {
            uint64_t u = rng_splitmix64_hash(key ^ rng_splitmix64_hash(ctr++));
            int j = lo + (int)(((unsigned __int128)u * (uint64_t)(hi - lo)) >> 64);
            int dup = kv && !kv[j];
            for (int s = 0; s < t; s++) dup |= idx[s] == j;
            if (!dup) {
                idx[t] = j;
                break;
            }
        }
    }
}

/* "block 3" for a joint site (as before sites existed), "site attn2.0" otherwise. */
static const char *rec_where(const sink_record *r, char *buf, size_t cap) {
    if (ss_site_code_kind(r->site) == SS_SITE_JOINT) snprintf(buf, cap, "block %d", r->block);
    else {
        char nm[40];
        snprintf(buf, cap, "site %s", ss_site_code_name(r->site, nm, sizeof nm));
    }
    return buf;
}

/* unmasked keys of batch b in [lo, hi) */
static int n_valid(const attn_args *a, int b, int lo, int hi) {
    if (!a->key_valid) return hi - lo;
    const int Tk = a->Tk > 0 ? a->Tk : a->T;
    int n = 0;
    for (int j = lo; j < hi; j++) n += a->key_valid[(size_t)b * Tk + j] != 0;
    return n;
}

static int select_keys(const sink_ctx *s, sink_record *r, const ss_site *site, const attn_args *a, const attn_stats *st) {
    const sink_condition *c = &s->cond;
    const int B = a->B, H = a->H, T = site->Tk, k = c->k;
    char wh[64];
    rec_where(r, wh, sizeof wh);
    int lo, hi, rc;
    if ((rc = site_range(site, 1, c->keys, &lo, &hi))) return rc;
    qsel q;
    qsel_of(&q, site, st, c->queries, 0);
    if (c->select == SEL_TOPK && !q.n)
        return ss_fail(SS_EARG, "condition '%s': field 'queries' = %s, but %s has no %s query rows to rank keys by", c->name,
                       sink_tokens_name(c->queries), wh, sink_tokens_name(c->queries));
    for (int b = 0; b < B; b++) {
        const int cand = n_valid(a, b, lo, hi), all = n_valid(a, b, 0, T);
        if (c->select != SEL_FIXED && k > cand)
            return ss_fail(SS_EARG, "condition '%s': k = %d but %s has only %d candidate %s keys%s", c->name, k, wh, cand,
                           sink_tokens_name(c->keys), a->key_valid ? " (unmasked)" : "");
        if (!c->value_path && c->eta == 0.0f && k >= all) /* distinct keys: every key of every row removed */
            return ss_fail(SS_EARG, "condition '%s': removing all %d keys of %s with eta 0 leaves the attention rows "
                           "no mass at all", c->name, all, wh);
    }
    if (c->select == SEL_FIXED)
        for (int t = 0; t < k; t++) {
            if (c->indices[t] >= T)
                return ss_fail(SS_EARG, "condition '%s': index %d is outside the %d keys of %s", c->name, c->indices[t], T, wh);
            for (int b = 0; b < B && a->key_valid; b++)
                if (!a->key_valid[(size_t)b * T + c->indices[t]])
                    return ss_fail(SS_EARG, "condition '%s': index %d is a masked key of %s (batch %d)", c->name,
                                   c->indices[t], wh, b);
        }
    float *rank = ss_malloc(sizeof(float) * T), *u = ss_malloc(sizeof(float) * T), val[COND_MAX_K];
    if (!rank || !u) {
        free(rank);
        free(u);
        return SS_ENOMEM;
    }
    double minm = INFINITY;
    for (int b = 0; b < B; b++) {
        const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * T : NULL;
        int shared[COND_MAX_K];
        if (c->rank_union && c->select == SEL_TOPK) {
            memset(u, 0, sizeof(float) * T);
            for (int h = 0; h < H; h++) {
                qsel_of(&q, site, st, c->queries, ((size_t)b * H + h) * T);
                set_mass(rank, &q, T);
                for (int j = 0; j < T; j++) u[j] += rank[j] / H;
            }
            double mg;
            topk_select(u, kv, lo, hi, k, shared, val, &mg);
            minm = fmin(minm, mg);
        } else if (c->rank_union && c->select == SEL_RANDOM) {
            random_select(lo, hi, kv, k, rng_splitmix64_hash(c->seed ^ rng_splitmix64_hash(((uint64_t)r->block << 40) ^ ((uint64_t)(r->step + 1) << 20) ^ (uint64_t)b)), shared);
        }
        for (int h = 0; h < H; h++) {
            int *dst = r->sel + ((size_t)b * H + h) * k;
            if (c->select == SEL_FIXED) {
                memcpy(dst, c->indices, sizeof(int) * k);
            } else if (c->rank_union) {
                memcpy(dst, shared, sizeof(int) * k);
            } else if (c->select == SEL_RANDOM) {
                uint64_t key = rng_splitmix64_hash(c->seed ^ rng_splitmix64_hash(((uint64_t)r->block << 40) ^ ((uint64_t)(r->step + 1) << 20) ^
                                                     ((uint64_t)b << 10) ^ (uint64_t)h ^ 0x5a5a000000000000ull));
                random_select(lo, hi, kv, k, key, dst);
            } else {
                qsel_of(&q, site, st, c->queries, ((size_t)b * H + h) * T);
                set_mass(rank, &q, T);
                double mg;
                topk_select(rank, kv, lo, hi, k, dst, val, &mg);
                minm = fmin(minm, mg);
            }
        }
    }
    r->min_margin = c->select == SEL_TOPK ? minm : -1;
    free(rank);
    free(u);
    return 0;
}

static int intervene(const sink_ctx *s, sink_record *r, const ss_site *site, const attn_args *a, const attn_stats *st) {
    const sink_condition *c = &s->cond;
    const int B = a->B, H = a->H, T = site->Tk, k = c->k, dh = a->dh;
    r->intervened = 1;
    r->k = k;
    r->sel = ss_malloc(sizeof(int) * B * H * k);
    r->before = ss_malloc(sizeof(double) * B * H);
    r->after = ss_malloc(sizeof(double) * B * H);
    if (!r->sel || !r->before || !r->after) return SS_ENOMEM;
    int r0, r1, rc = site_range(site, 0, c->queries, &r0, &r1);
    if (rc) return rc;
    if (r1 <= r0) {
        char wh[64];
        return ss_fail(SS_EARG, "condition '%s': field 'queries' = %s, but %s has no %s query rows", c->name,
                       sink_tokens_name(c->queries), rec_where(r, wh, sizeof wh), sink_tokens_name(c->queries));
    }
    if ((rc = select_keys(s, r, site, a, st))) return rc;
    float *vrep = NULL;
    if (c->value_path && dh > 512) return ss_fail(SS_EARG, "condition '%s': the value path supports head dims up to 512, not %d", c->name, dh);
    if (c->value_path) {
        vrep = ss_calloc((size_t)B * H * k * dh, sizeof(float));
        if (!vrep) return SS_ENOMEM;
        for (int b = 0; b < B && c->value != VAL_ZERO; b++)
            for (int h = 0; h < H; h++) {
                const float *V = a->v + (size_t)b * T * a->ld + (size_t)h * dh;
                const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * T : NULL;
                double mean[512] = {0};
                for (int j = 0; j < T; j++)
                    for (int d = 0; d < dh && (!kv || kv[j]); d++) mean[d] += V[(size_t)j * a->ld + d];
                const int nv = n_valid(a, b, 0, T);
                for (int t = 0; t < k; t++) {
                    const float *vj = V + (size_t)r->sel[((size_t)b * H + h) * k + t] * a->ld;
                    float *dst = vrep + (((size_t)b * H + h) * k + t) * dh;
                    for (int d = 0; d < dh; d++) {
                        const double mu = mean[d] / nv;
                        dst[d] = c->value == VAL_MEAN ? (float)mu : (float)(c->alpha * vj[d] + (1.0 - c->alpha) * mu);
                    }
                }
            }
    }
    attn_reweight rw = {.k = k, .keys = r->sel, .value_path = c->value_path, .eta = c->eta, .vrep = vrep, .r0 = r0, .r1 = r1};
    rc = attn_apply_reweight(a, st, &rw, r->before, r->after);
    free(vrep);
    return rc;
}

static float percentile(float *x, int n, double q) {
    /* numpy's default 'linear' method */
    for (int i = 1; i < n; i++) { /* insertion sort is fine for the few thousand tokens here */
        float v = x[i];
        int j = i - 1;
        while (j >= 0 && x[j] > v) {
            x[j + 1] = x[j];
            j--;
        }
        x[j + 1] = v;
    }
    double pos = q * (n - 1);
    int lo = (int)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    return (float)(x[lo] + (pos - lo) * (x[hi] - x[lo]));
}


static int probe(const sink_ctx *s, sink_record *r, const ss_site *site, const attn_args *a, const attn_stats *st) {
    const int B = a->B, H = a->H, T = site->Tk;
    int K = s->topk < T ? s->topk : T;
    for (int b = 0; b < B; b++) { /* masked keys are never sinks */
        const int nv = n_valid(a, b, 0, T);
        K = nv < K ? nv : K;
    }
    int r0, r1, rc = site_range(site, 0, s->probe_queries, &r0, &r1);
    if (rc) return rc;
    qsel q;
    qsel_of(&q, site, st, s->probe_queries, 0);
    if (!q.n || r1 <= r0) {
        char wh[64];
        return ss_fail(SS_EARG, "probe: %s has no %s query rows (probe queries '%s')", rec_where(r, wh, sizeof wh),
                       sink_tokens_name(s->probe_queries), sink_tokens_name(s->probe_queries));
    }
    r->probed = 1;
    r->topk = K;
    r->queries = s->probe_queries;
    r->top_idx = ss_malloc(sizeof(int) * B * H * K);
    r->top_mass = ss_malloc(sizeof(float) * B * H * K);
    r->head_entropy = ss_malloc(sizeof(float) * B * H);
    r->head_top5 = ss_malloc(sizeof(float) * B * H);
    float **per_b[] = {&r->max_mass, &r->entropy, &r->top5, &r->idx0_frac, &r->text_frac, &r->act_max, &r->act_p95};
    for (size_t i = 0; i < sizeof per_b / sizeof per_b[0]; i++) *per_b[i] = ss_calloc((size_t)B, sizeof(float));
    float *m = ss_malloc(sizeof(float) * T);
    int ok = r->top_idx && r->top_mass && r->head_entropy && r->head_top5 && m;
    for (size_t i = 0; i < sizeof per_b / sizeof per_b[0]; i++) ok = ok && *per_b[i];
    if (!ok) {
        free(m);
        return SS_ENOMEM;
    }
    /* "index 0": the site's first key (SD3: image patch 0; FLUX: text token 0) */
    const int first = site->n_kspan ? site->kspan[0].start : 0;
    for (int b = 0; b < B; b++) {
        const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * T : NULL;
        double mm = 0, en = 0, t5 = 0, i0 = 0, tx = 0;
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)b * H + h) * T, oq = ((size_t)b * H + h) * a->T, bh = (size_t)b * H + h;
            qsel_of(&q, site, st, s->probe_queries, o);
            set_mass(m, &q, T);
            topk_select(m, kv, 0, T, K, r->top_idx + bh * K, r->top_mass + bh * K, NULL);
            double e = 0, c5 = 0;
            for (int i = r0; i < r1; i++) {
                e += st->row_entropy[oq + i];
                c5 += st->row_top5[oq + i];
            }
            r->head_entropy[bh] = r1 > r0 ? (float)(e / (r1 - r0)) : 0;
            r->head_top5[bh] = r1 > r0 ? (float)(c5 / (r1 - r0)) : 0;
            const int top1 = r->top_idx[bh * K];
            mm += r->top_mass[bh * K];
            en += r->head_entropy[bh];
            t5 += r->head_top5[bh];
            i0 += top1 == first;
            tx += key_is_text(site, top1);
        }
        r->max_mass[b] = (float)(mm / H);
        r->entropy[b] = (float)(en / H);
        r->top5[b] = (float)(t5 / H);
        r->idx0_frac[b] = (float)(i0 / H);
        r->text_frac[b] = (float)(tx / H);
    }
    free(m);
    if (s->keep_mass) {
        r->mass = ss_calloc((size_t)B * H * T, sizeof(float));
        if (!r->mass) return SS_ENOMEM;
        qsel_of(&q, site, st, TOK_IMAGE, 0); /* the image-query mass, as before sites existed */
        if (q.n) {
            for (size_t bh = 0; bh < (size_t)B * H; bh++) {
                qsel qq;
                qsel_of(&qq, site, st, TOK_IMAGE, bh * T);
                set_mass(r->mass + bh * T, &qq, T);
            }
        }
    }
    return 0;
}

int sink_ctx_rope_qk(void *ctx, const ss_site *site, int post, const attn_args *a) {
    sink_ctx *s = ctx;
    const int code = ss_site_code_of(site);
    if (post || !(s->spiral & SPIRAL_QK) || code < 0 || code >= N_CODES || !s->probe[code]) return 0;
    free(s->qk_pre);
    s->qk_pre = NULL;
    s->qk_pre_code = code;
    return spiral_qk_pre(&s->qk_pre, site, a, tok_want(s->probe_queries));
}

int sink_ctx_pos_embed(void *ctx, float *tab, int h, int w, int D) {
    const sink_ctx *s = ctx;
    if (!s->have_cond || !s->cond.have_pe || !sink_condition_active(&s->cond, s->tfrac)) return 0;
    return sink_pe_apply(&s->cond, tab, h, w, D);
}

static int hook_attention(void *ctx, const ss_site *site0, const attn_args *a) {
    sink_ctx *s = ctx;
    const int code = ss_site_code_of(site0);
    const int probed = code >= 0 && code < N_CODES && s->probe[code];
    const int iv = s->have_cond && sink_condition_has_layer(&s->cond, code) && sink_condition_active(&s->cond, s->tfrac);
    if (!probed && !iv) return attn_forward(a, NULL);
    ss_site typed;
    int trc = typed_site(s, site0, a->B, &typed);
    if (trc < 0) return trc;
    const ss_site *site = &typed;
    if (a->n_qspan != site->n_qspan || site->n_qspan < 1 || site->n_qspan > ATTN_MAX_QSPAN || a->T != site->Tq ||
        (a->Tk ? a->Tk : a->T) != site->Tk)
        return ss_fail(SS_EARG, "sink: the attention arguments do not match their site's %d x %d tokens and %d query spans",
                       site->Tq, site->Tk, site->n_qspan);
    const int ng = site->n_qspan;
    const size_t nq = (size_t)a->B * a->H * a->T, nk = (size_t)a->B * a->H * site->Tk;
    attn_stats st = {0};
    float *buf = ss_malloc(sizeof(float) * (nk * ng + nq * 4));
    if (!buf) return SS_ENOMEM;
    for (int g = 0; g < ng; g++) st.mass[g] = buf + (size_t)g * nk;
    float *rows = buf + (size_t)ng * nk;
    st.row_m = rows;
    st.row_l = rows + nq;
    if (probed) {
        st.row_entropy = rows + 2 * nq;
        st.row_top5 = rows + 3 * nq;
    }
    int rc = attn_forward(a, &st);
    sink_record *r = rc ? NULL : record_new(s, site, a);
    if (!rc && !r) rc = SS_ENOMEM;
    if (!rc && probed) rc = probe(s, r, site, a, &st);
    if (!rc && probed && s->spiral) {
        const float *pre = s->qk_pre && s->qk_pre_code == code ? s->qk_pre : NULL;
        rc = spiral_measure(&r->spiral, s->spiral, site, a, &st, tok_want(s->probe_queries), pre);
        if (!rc && !s->keep_mass) spiral_rec_shrink(r->spiral); /* per-key vectors only where mass vectors are kept */
    }
    free(s->qk_pre); /* one site's, from its rope_qk hook just before */
    s->qk_pre = NULL;
    if (!rc && iv) rc = intervene(s, r, site, a, &st);
    free(buf);
    return rc;
}

/* Max and 95th percentile of norms[lo, hi) (tmp: scratch of hi - lo floats). */
static void norm_stats(const float *norms, int lo, int hi, float *tmp, float *mx, float *p95) {
    const int n = hi - lo;
    float m = 0;
    for (int i = 0; i < n; i++) {
        tmp[i] = norms[lo + i];
        m = tmp[i] > m ? tmp[i] : m;
    }
    *mx = m;
    *p95 = n ? percentile(tmp, n, 0.95) : 0;
}

/* The block's output belongs to every probed record of that block made since the last block
 * output (SD3.5: joint.i and attn2.i). Its rows are the image stream (SD3 joint.i and attn2.i,
 * FLUX double.i: rows = image tokens) or, when they are the site's own query tokens (FLUX
 * single.j: rows = S+N, text first), the whole stream: then act_max/act_p95 describe its image
 * rows and act_text_max/act_text_p95 its text rows. */
static int hook_block_output(void *ctx, int block, const float *x, int B, int N, int D) {
    sink_ctx *s = ctx;
    const int first = s->pending;
    s->pending = s->nrec;
    int any = 0;
    for (int i = first; i < s->nrec; i++) any |= s->recs[i]->probed && ss_site_code_block(s->recs[i]->site) == block;
    if (!any) return 0;
    float *norms = ss_malloc(sizeof(float) * 2 * (N ? N : 1)), *tmp = norms + (N ? N : 1);
    if (!norms) return SS_ENOMEM;
    for (int i = first; i < s->nrec; i++) {
        sink_record *r = s->recs[i];
        if (!r->probed || ss_site_code_block(r->site) != block) continue;
        const int split = N == r->Tq && r->text_rows[1] > r->text_rows[0];
        if (split && !r->act_text_max) {
            r->act_text_max = ss_calloc((size_t)B, sizeof(float));
            r->act_text_p95 = ss_calloc((size_t)B, sizeof(float));
            if (!r->act_text_max || !r->act_text_p95) {
                free(norms);
                return SS_ENOMEM;
            }
        }
    }
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < N; i++) {
            const float *xi = x + ((size_t)b * N + i) * D;
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)xi[d] * xi[d];
            norms[i] = (float)sqrt(ss);
        }
        for (int i = first; i < s->nrec; i++) {
            sink_record *r = s->recs[i];
            if (!r->probed || ss_site_code_block(r->site) != block) continue;
            if (r->act_text_max) {
                norm_stats(norms, r->img_rows[0], r->img_rows[1], tmp, &r->act_max[b], &r->act_p95[b]);
                norm_stats(norms, r->text_rows[0], r->text_rows[1], tmp, &r->act_text_max[b], &r->act_text_p95[b]);
            } else {
                norm_stats(norms, 0, N, tmp, &r->act_max[b], &r->act_p95[b]);
            }
        }
    }
    free(norms);
    return 0;
}

sd3_hooks sink_ctx_hooks(sink_ctx *s) {
    sd3_hooks h = {.ctx = s, .attention = hook_attention, .block_output = hook_block_output,
                   /* only then: SD3 copies its table crop ([N, D]) for the hook to edit */
                   .pos_embed = s->have_cond && s->cond.have_pe ? sink_ctx_pos_embed : NULL};
    return h;
}
