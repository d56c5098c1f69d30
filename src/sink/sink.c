#include "sink/sink.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

struct sink_ctx {
    uint8_t probe[COND_MAX_LAYERS];
    sink_tokens probe_queries;
    int topk, keep_mass;
    int have_cond;
    sink_condition cond;
    int step;
    double tfrac;
    sink_record **recs;
    int nrec, caprec;
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
                 r->idx0_frac, r->text_frac, r->act_max, r->act_p95, r->mass, r->sel, r->before, r->after};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    free(r);
}

void sink_ctx_clear_records(sink_ctx *s) {
    for (int i = 0; i < s->nrec; i++) record_free(s->recs[i]);
    s->nrec = 0;
}

void sink_ctx_free(sink_ctx *s) {
    if (!s) return;
    sink_ctx_clear_records(s);
    free(s->recs);
    free(s);
}

int sink_ctx_set_probe(sink_ctx *s, const int *blocks, int n, sink_tokens queries, int topk, int keep_mass) {
    memset(s->probe, 0, sizeof s->probe);
    for (int i = 0; i < n; i++) {
        if (blocks[i] < 0 || blocks[i] >= COND_MAX_LAYERS) return ss_fail(SS_EARG, "probe: block %d out of range", blocks[i]);
        s->probe[blocks[i]] = 1;
    }
    if (topk < 1 || topk > COND_MAX_K) return ss_fail(SS_EARG, "probe: top-k %d outside [1, %d]", topk, COND_MAX_K);
    s->probe_queries = queries;
    s->topk = topk;
    s->keep_mass = keep_mass;
    return 0;
}

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

static sink_record *record_new(sink_ctx *s, int block, const attn_args *a) {
    if (s->nrec == s->caprec) {
        int cap = s->caprec ? 2 * s->caprec : 16;
        sink_record **r = realloc(s->recs, sizeof *r * cap);
        if (!r) return NULL;
        s->recs = r;
        s->caprec = cap;
    }
    sink_record *r = ss_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->block = block;
    r->step = s->step;
    r->tfrac = s->tfrac;
    r->B = a->B;
    r->H = a->H;
    r->T = a->T;
    r->n_img = a->n_img;
    r->min_margin = -1;
    s->recs[s->nrec++] = r;
    return r;
}

/* mass over a query set: image rows, text rows, or all rows (weighted by row counts). */
static void set_mass(float *dst, const float *mi, const float *mt, int T, int n_img, sink_tokens q) {
    const int n_txt = T - n_img;
    for (int j = 0; j < T; j++)
        dst[j] = q == TOK_IMAGE ? mi[j] : q == TOK_TEXT ? mt[j] : (float)(((double)n_img * mi[j] + (double)n_txt * mt[j]) / T);
}

/* Indices of the k largest of x over candidates (ties: lower index first), descending. */
static void topk_select(const float *x, int T, int lo, int hi, int k, int *idx, float *val, double *margin) {
    int n = 0;
    for (int j = lo; j < hi; j++) {
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
            int in = 0;
            for (int t = 0; t < k; t++) in |= idx[t] == j;
            if (!in && x[j] > next) next = x[j];
        }
        *margin = next == -INFINITY ? INFINITY : (double)val[k - 1] - next;
    }
    (void)T;
}

/* splitmix64 finalizer: a counter-based stream for reproducible random key draws. */
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* k distinct keys drawn uniformly from [lo, hi), reproducible from (seed, block, step, b, h). */
static void random_select(int lo, int hi, int k, uint64_t key, int *idx) {
    uint64_t ctr = 0;
    for (int t = 0; t < k; t++) {
        for (;;) {
            uint64_t u = mix64(key ^ mix64(ctr++));
            int j = lo + (int)(((unsigned __int128)u * (uint64_t)(hi - lo)) >> 64);
            int dup = 0;
            for (int s = 0; s < t; s++) dup |= idx[s] == j;
            if (!dup) {
                idx[t] = j;
                break;
            }
        }
    }
}

static int select_keys(const sink_ctx *s, sink_record *r, const attn_args *a, const float *mi, const float *mt) {
    const sink_condition *c = &s->cond;
    const int B = a->B, H = a->H, T = a->T, k = c->k;
    const int lo = c->keys == TOK_TEXT ? a->n_img : 0, hi = c->keys == TOK_IMAGE ? a->n_img : T;
    if (c->select != SEL_FIXED && k > hi - lo)
        return ss_fail(SS_EARG, "condition '%s': k = %d but block %d has only %d candidate %s keys", c->name, k, r->block,
                       hi - lo, sink_tokens_name(c->keys));
    if (!c->value_path && c->eta == 0.0f && k >= T) /* distinct keys: every key of every row removed */
        return ss_fail(SS_EARG, "condition '%s': removing all %d keys of block %d with eta 0 leaves the attention rows "
                       "no mass at all", c->name, T, r->block);
    if (c->select == SEL_FIXED)
        for (int t = 0; t < k; t++)
            if (c->indices[t] >= T)
                return ss_fail(SS_EARG, "condition '%s': index %d is outside the %d keys of block %d", c->name,
                               c->indices[t], T, r->block);
    float *rank = ss_malloc(sizeof(float) * T), *u = ss_malloc(sizeof(float) * T), val[COND_MAX_K];
    if (!rank || !u) {
        free(rank);
        free(u);
        return SS_ENOMEM;
    }
    double minm = INFINITY;
    for (int b = 0; b < B; b++) {
        int shared[COND_MAX_K];
        if (c->rank_union && c->select == SEL_TOPK) {
            memset(u, 0, sizeof(float) * T);
            for (int h = 0; h < H; h++) {
                const size_t o = ((size_t)b * H + h) * T;
                set_mass(rank, mi + o, mt + o, T, a->n_img, c->queries);
                for (int j = 0; j < T; j++) u[j] += rank[j] / H;
            }
            double mg;
            topk_select(u, T, lo, hi, k, shared, val, &mg);
            minm = fmin(minm, mg);
        } else if (c->rank_union && c->select == SEL_RANDOM) {
            random_select(lo, hi, k, mix64(c->seed ^ mix64(((uint64_t)r->block << 40) ^ ((uint64_t)(r->step + 1) << 20) ^ (uint64_t)b)), shared);
        }
        for (int h = 0; h < H; h++) {
            int *dst = r->sel + ((size_t)b * H + h) * k;
            if (c->select == SEL_FIXED) {
                memcpy(dst, c->indices, sizeof(int) * k);
            } else if (c->rank_union) {
                memcpy(dst, shared, sizeof(int) * k);
            } else if (c->select == SEL_RANDOM) {
                uint64_t key = mix64(c->seed ^ mix64(((uint64_t)r->block << 40) ^ ((uint64_t)(r->step + 1) << 20) ^
                                                     ((uint64_t)b << 10) ^ (uint64_t)h ^ 0x5a5a000000000000ull));
                random_select(lo, hi, k, key, dst);
            } else {
                const size_t o = ((size_t)b * H + h) * T;
                set_mass(rank, mi + o, mt + o, T, a->n_img, c->queries);
                double mg;
                topk_select(rank, T, lo, hi, k, dst, val, &mg);
                minm = fmin(minm, mg);
            }
        }
    }
    r->min_margin = c->select == SEL_TOPK ? minm : -1;
    free(rank);
    free(u);
    return 0;
}

static int intervene(const sink_ctx *s, sink_record *r, const attn_args *a, const attn_stats *st) {
    const sink_condition *c = &s->cond;
    const int B = a->B, H = a->H, T = a->T, k = c->k, dh = a->dh;
    r->intervened = 1;
    r->k = k;
    r->sel = ss_malloc(sizeof(int) * B * H * k);
    r->before = ss_malloc(sizeof(double) * B * H);
    r->after = ss_malloc(sizeof(double) * B * H);
    if (!r->sel || !r->before || !r->after) return SS_ENOMEM;
    int rc = select_keys(s, r, a, st->mass_img, st->mass_txt);
    if (rc) return rc;
    float *vrep = NULL;
    if (c->value_path && dh > 512) return ss_fail(SS_EARG, "condition '%s': the value path supports head dims up to 512, not %d", c->name, dh);
    if (c->value_path) {
        vrep = ss_calloc((size_t)B * H * k * dh, sizeof(float));
        if (!vrep) return SS_ENOMEM;
        for (int b = 0; b < B && c->value != VAL_ZERO; b++)
            for (int h = 0; h < H; h++) {
                const float *V = a->v + (size_t)b * T * a->ld + (size_t)h * dh;
                double mean[512] = {0};
                for (int j = 0; j < T; j++)
                    for (int d = 0; d < dh; d++) mean[d] += V[(size_t)j * a->ld + d];
                for (int t = 0; t < k; t++) {
                    const float *vj = V + (size_t)r->sel[((size_t)b * H + h) * k + t] * a->ld;
                    float *dst = vrep + (((size_t)b * H + h) * k + t) * dh;
                    for (int d = 0; d < dh; d++) {
                        const double mu = mean[d] / T;
                        dst[d] = c->value == VAL_MEAN ? (float)mu : (float)(c->alpha * vj[d] + (1.0 - c->alpha) * mu);
                    }
                }
            }
    }
    attn_reweight rw = {.k = k, .keys = r->sel, .value_path = c->value_path, .eta = c->eta, .vrep = vrep,
                        .r0 = c->queries == TOK_TEXT ? a->n_img : 0, .r1 = c->queries == TOK_IMAGE ? a->n_img : T};
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

static int probe(const sink_ctx *s, sink_record *r, const attn_args *a, const attn_stats *st) {
    const int B = a->B, H = a->H, T = a->T, K = s->topk < T ? s->topk : T;
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
    const int r0 = s->probe_queries == TOK_TEXT ? a->n_img : 0, r1 = s->probe_queries == TOK_IMAGE ? a->n_img : T;
    for (int b = 0; b < B; b++) {
        double mm = 0, en = 0, t5 = 0, i0 = 0, tx = 0;
        for (int h = 0; h < H; h++) {
            const size_t o = ((size_t)b * H + h) * T, bh = (size_t)b * H + h;
            set_mass(m, st->mass_img + o, st->mass_txt + o, T, a->n_img, s->probe_queries);
            topk_select(m, T, 0, T, K, r->top_idx + bh * K, r->top_mass + bh * K, NULL);
            double e = 0, c5 = 0;
            for (int i = r0; i < r1; i++) {
                e += st->row_entropy[o + i];
                c5 += st->row_top5[o + i];
            }
            r->head_entropy[bh] = r1 > r0 ? (float)(e / (r1 - r0)) : 0;
            r->head_top5[bh] = r1 > r0 ? (float)(c5 / (r1 - r0)) : 0;
            const int top1 = r->top_idx[bh * K];
            mm += r->top_mass[bh * K];
            en += r->head_entropy[bh];
            t5 += r->head_top5[bh];
            i0 += top1 == 0;
            tx += top1 >= a->n_img;
        }
        r->max_mass[b] = (float)(mm / H);
        r->entropy[b] = (float)(en / H);
        r->top5[b] = (float)(t5 / H);
        r->idx0_frac[b] = (float)(i0 / H);
        r->text_frac[b] = (float)(tx / H);
    }
    free(m);
    if (s->keep_mass) {
        r->mass = ss_malloc(sizeof(float) * B * H * T);
        if (!r->mass) return SS_ENOMEM;
        memcpy(r->mass, st->mass_img, sizeof(float) * B * H * T);
    }
    return 0;
}

static int hook_attention(void *ctx, int block, const attn_args *a) {
    sink_ctx *s = ctx;
    const int probed = block < COND_MAX_LAYERS && s->probe[block];
    const int iv = s->have_cond && sink_condition_has_layer(&s->cond, block) && sink_condition_active(&s->cond, s->tfrac);
    if (!probed && !iv) return attn_forward(a, NULL);
    const size_t n = (size_t)a->B * a->H * a->T;
    attn_stats st = {0};
    float *buf = ss_malloc(sizeof(float) * n * 6);
    if (!buf) return SS_ENOMEM;
    st.mass_img = buf;
    st.mass_txt = buf + n;
    st.row_m = buf + 2 * n;
    st.row_l = buf + 3 * n;
    if (probed) {
        st.row_entropy = buf + 4 * n;
        st.row_top5 = buf + 5 * n;
    }
    int rc = attn_forward(a, &st);
    sink_record *r = rc ? NULL : record_new(s, block, a);
    if (!rc && !r) rc = SS_ENOMEM;
    if (!rc && probed) rc = probe(s, r, a, &st);
    if (!rc && iv) rc = intervene(s, r, a, &st);
    free(buf);
    return rc;
}

static int hook_block_output(void *ctx, int block, const float *x, int B, int N, int D) {
    sink_ctx *s = ctx;
    if (block >= COND_MAX_LAYERS || !s->probe[block] || s->nrec == 0) return 0;
    sink_record *r = s->recs[s->nrec - 1];
    if (r->block != block || !r->probed) return 0;
    float *norms = ss_malloc(sizeof(float) * (N ? N : 1));
    if (!norms) return SS_ENOMEM;
    for (int b = 0; b < B; b++) {
        float mx = 0;
        for (int i = 0; i < N; i++) {
            const float *xi = x + ((size_t)b * N + i) * D;
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)xi[d] * xi[d];
            norms[i] = (float)sqrt(ss);
            mx = norms[i] > mx ? norms[i] : mx;
        }
        r->act_max[b] = mx;
        r->act_p95[b] = N ? percentile(norms, N, 0.95) : 0;
    }
    free(norms);
    return 0;
}

sd3_hooks sink_ctx_hooks(sink_ctx *s) {
    sd3_hooks h = {.ctx = s, .joint_attention = hook_attention, .block_output = hook_block_output};
    return h;
}

static json_t *farr(const float *x, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_real(x[i]));
    return a;
}

void *sink_record_to_json(const sink_record *r) {
    json_t *o = json_object();
    json_object_set_new(o, "block", json_integer(r->block));
    json_object_set_new(o, "step", json_integer(r->step));
    if (r->tfrac >= 0) json_object_set_new(o, "t_frac", json_real(r->tfrac));
    json_object_set_new(o, "tokens", json_pack("{s:i, s:i}", "image", r->n_img, "text", r->T - r->n_img));
    if (r->probed) {
        json_t *p = json_object();
        json_object_set_new(p, "queries", json_string(sink_tokens_name(r->queries)));
        json_object_set_new(p, "max_mass", farr(r->max_mass, r->B));
        json_object_set_new(p, "entropy", farr(r->entropy, r->B));
        json_object_set_new(p, "top5_concentration", farr(r->top5, r->B));
        json_object_set_new(p, "top1_is_index0", farr(r->idx0_frac, r->B));
        json_object_set_new(p, "top1_is_text", farr(r->text_frac, r->B));
        json_object_set_new(p, "act_max", farr(r->act_max, r->B));
        json_object_set_new(p, "act_p95", farr(r->act_p95, r->B));
        json_t *heads = json_array();
        for (int b = 0; b < r->B; b++)
            for (int h = 0; h < r->H; h++) {
                const size_t bh = (size_t)b * r->H + h;
                json_t *ti = json_array();
                for (int t = 0; t < r->topk; t++) json_array_append_new(ti, json_integer(r->top_idx[bh * r->topk + t]));
                json_array_append_new(heads, json_pack("{s:i, s:i, s:o, s:o, s:f, s:f}", "batch", b, "head", h, "top_keys", ti,
                                                       "top_mass", farr(r->top_mass + bh * r->topk, r->topk), "entropy",
                                                       (double)r->head_entropy[bh], "top5_concentration",
                                                       (double)r->head_top5[bh]));
            }
        json_object_set_new(p, "heads", heads);
        json_object_set_new(o, "probe", p);
    }
    if (r->intervened) {
        json_t *v = json_object();
        double sb = 0, sa = 0;
        const size_t n = (size_t)r->B * r->H;
        for (size_t i = 0; i < n; i++) {
            sb += r->before[i];
            sa += r->after[i];
        }
        sb /= n;
        sa /= n;
        json_object_set_new(v, "mass_before", json_real(sb));
        json_object_set_new(v, "mass_after", json_real(sa));
        /* JSON has no infinity: a complete removal (after = 0) has reduction null. */
        json_object_set_new(v, "reduction", sa > 0 ? json_real(sb / sa) : json_null());
        if (r->min_margin >= 0) json_object_set_new(v, "min_topk_margin", json_real(r->min_margin));
        json_t *keys = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *kk = json_array();
            for (int t = 0; t < r->k; t++) json_array_append_new(kk, json_integer(r->sel[i * r->k + t]));
            json_array_append_new(keys, kk);
        }
        json_object_set_new(v, "keys", keys);
        json_object_set_new(o, "intervention", v);
    }
    return o;
}
