/* The "why sinks form" probe fields (sink/spiral.h) against a materialized fp64 reference: a
 * plain joint site (SD3 layout, hidden states in two buffers, a key mask), a synthetic RoPE site
 * (FLUX's rotation and axis layout), FLUX's own sites (tests/fixtures/flux-tiny-a), the budget
 * by token type on a synthetic layout, the no-op guarantee, thread-count independence and the
 * O(T) working memory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "models/flux.h"
#include "sink/record.h"
#include "sink/sink.h"
#include "sink/spiral.h"
#include "text/txtok.h"

#define TOL 1e-5

/* ---- the materialized reference ---- */

typedef struct {
    double *mu;                 /* [B, Tk] */
    int sink[8];
    double x_uniform[8], x_image[8];
    double budget[8][SS_TOK_N];
    int budget_keys[8][SS_TOK_N];
    double qk_pre_s[8], qk_pre_i[8], qk_post_s[8], qk_post_i[8];
    double vn_s[8], vn_i[8], kn_s[8], kn_i[8];
    double e_s[8][64], e_i[8][64], low_s[8], low_i[8], fac[8], ax_s[8][8], ax_i[8][8];
    double *act;                /* [B, Tk] */
    double act_med[8], act_ratio[8], act_max_ratio[8];
    int act_max_tok[8];
    int ch[8][SPIRAL_TOP_CH];
    double ch_val[8][SPIRAL_TOP_CH];
} ref;

static int valid(const attn_args *a, int b, int j) {
    const int Tk = a->Tk ? a->Tk : a->T;
    return !a->key_valid || a->key_valid[(size_t)b * Tk + j];
}

static int is_img(const ss_site *s, const attn_args *a, int b, int j) {
    return valid(a, b, j) && ss_site_key_type(s, b, j) == SS_TOK_IMAGE;
}

/* mean over rows [r0, r1) of <q_i, k_j>, mean over heads, for the sink and the mean image key */
static void ref_qk(double *s_out, double *i_out, const float *q, const float *k, const attn_args *a, const ss_site *site,
                   int b, int sink, int r0, int r1) {
    const int H = a->H, dh = a->dh, Tk = a->Tk ? a->Tk : a->T;
    double ss = 0, si = 0;
    for (int h = 0; h < H; h++) {
        double ni = 0, acc = 0;
        for (int j = 0; j < Tk; j++) {
            if (!is_img(site, a, b, j) && j != sink) continue;
            double m = 0;
            for (int i = r0; i < r1; i++)
                for (int d = 0; d < dh; d++)
                    m += (double)q[((size_t)b * a->T + i) * a->ld + h * dh + d] * k[((size_t)b * Tk + j) * a->ld + h * dh + d];
            m /= r1 - r0;
            if (j == sink) ss += m;
            if (is_img(site, a, b, j)) {
                acc += m;
                ni++;
            }
        }
        si += acc / ni;
    }
    *s_out = ss / H;
    *i_out = si / H;
}

/* Everything from the full softmax matrix of each head, in double. qpre/kpre: pre-RoPE (NULL: none). */
static void ref_compute(ref *R, const attn_args *a, const ss_site *site, int want, const float *qpre, const float *kpre) {
    const int B = a->B, H = a->H, dh = a->dh, T = a->T, Tk = a->Tk ? a->Tk : a->T;
    int r0, r1;
    assert_int_equal(ss_site_range(site, 0, want, &r0, &r1), 0);
    memset(R, 0, sizeof *R);
    R->mu = calloc((size_t)B * Tk, sizeof(double));
    R->act = calloc((size_t)B * Tk, sizeof(double));
    double *p = malloc(sizeof(double) * Tk);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++)
            for (int i = r0; i < r1; i++) {
                const float *qi = a->q + ((size_t)b * T + i) * a->ld + h * dh;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < Tk; j++) {
                    const float *kj = a->k + ((size_t)b * Tk + j) * a->ld + h * dh;
                    double s = 0;
                    for (int d = 0; d < dh; d++) s += (double)qi[d] * kj[d];
                    p[j] = valid(a, b, j) ? s / sqrt((double)dh) : -INFINITY;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < Tk; j++) sum += (p[j] = valid(a, b, j) ? exp(p[j] - mx) : 0);
                for (int j = 0; j < Tk; j++) R->mu[(size_t)b * Tk + j] += p[j] / sum / ((double)(r1 - r0) * H);
            }
        const double *mu = R->mu + (size_t)b * Tk;
        int s = -1, nv = 0, ni = 0;
        double img = 0;
        for (int j = 0; j < Tk; j++) {
            if (!valid(a, b, j)) continue;
            if (s < 0 || mu[j] > mu[s]) s = j;
            const ss_tok t = ss_site_key_type(site, b, j);
            R->budget[b][t] += mu[j];
            R->budget_keys[b][t]++;
            nv++;
            if (t == SS_TOK_IMAGE) {
                img += mu[j];
                ni++;
            }
        }
        R->sink[b] = s;
        R->x_uniform[b] = mu[s] * nv;
        R->x_image[b] = mu[s] / (img / ni);
        ref_qk(&R->qk_post_s[b], &R->qk_post_i[b], a->q, a->k, a, site, b, s, r0, r1);
        if (qpre) ref_qk(&R->qk_pre_s[b], &R->qk_pre_i[b], qpre, kpre, a, site, b, s, r0, r1);
        /* norms and pair energies */
        for (int h = 0; h < H; h++) {
            double vi = 0, ki = 0, e_i[64] = {0};
            for (int j = 0; j < Tk; j++) {
                if (!is_img(site, a, b, j) && j != s) continue;
                const float *kj = a->k + ((size_t)b * Tk + j) * a->ld + h * dh, *vj = a->v + ((size_t)b * Tk + j) * a->ld + h * dh;
                double kk = 0, vv = 0;
                for (int d = 0; d < dh; d++) {
                    kk += (double)kj[d] * kj[d];
                    vv += (double)vj[d] * vj[d];
                }
                for (int c = 0; c < dh / 2; c++) {
                    const double e = (double)kj[2 * c] * kj[2 * c] + (double)kj[2 * c + 1] * kj[2 * c + 1];
                    if (j == s) R->e_s[b][c] += e / H;
                    if (is_img(site, a, b, j)) e_i[c] += e;
                }
                if (j == s) {
                    R->kn_s[b] += sqrt(kk) / H;
                    R->vn_s[b] += sqrt(vv) / H;
                }
                if (is_img(site, a, b, j)) {
                    ki += sqrt(kk);
                    vi += sqrt(vv);
                }
            }
            R->kn_i[b] += ki / ni / H;
            R->vn_i[b] += vi / ni / H;
            for (int c = 0; c < dh / 2; c++) R->e_i[b][c] += e_i[c] / ni / H;
        }
        /* bands: axis x has rope_dims[x] / 2 pairs; pair i of it rotates at theta^(-2i/d) */
        double tot[2] = {0}, low[2] = {0};
        for (int x = 0, c = 0; x < SS_SITE_MAX_AXES && site->rope_dims[x]; x++)
            for (int i = 0; i < site->rope_dims[x] / 2; i++, c++) {
                const double es = R->e_s[b][c], ei = R->e_i[b][c];
                const int lo = pow(10000.0, -2.0 * i / site->rope_dims[x]) <= pow(10000.0, -0.5) * (1 + 1e-12);
                tot[0] += es;
                tot[1] += ei;
                R->ax_s[b][x] += es;
                R->ax_i[b][x] += ei;
                if (lo) {
                    low[0] += es;
                    low[1] += ei;
                }
            }
        for (int x = 0; x < 8; x++) {
            R->ax_s[b][x] /= tot[0];
            R->ax_i[b][x] /= tot[1];
        }
        R->low_s[b] = low[0] / tot[0];
        R->low_i[b] = low[1] / tot[1];
        R->fac[b] = R->low_s[b] / R->low_i[b];
        /* massive activations */
        if (site->hidden_dim && site->hidden[0].x) {
            const int D = site->hidden_dim;
            double *col = calloc((size_t)D, sizeof(double)), *vals = malloc(sizeof(double) * Tk);
            int n = 0, mt = -1;
            for (int j = 0; j < Tk; j++) {
                const float *x = NULL;
                for (int g = 0; g < site->n_kspan; g++)
                    if (j >= site->kspan[g].start && j < site->kspan[g].start + site->kspan[g].len)
                        x = site->hidden[g].x + ((size_t)b * site->hidden[g].bstride + (j - site->kspan[g].start)) * site->hidden_ld;
                double m = 0;
                for (int c = 0; c < D; c++) {
                    m = fmax(m, fabs(x[c]));
                    if (valid(a, b, j)) col[c] = fmax(col[c], fabs(x[c]));
                }
                R->act[(size_t)b * Tk + j] = m;
                if (!valid(a, b, j)) continue;
                vals[n++] = m;
                if (mt < 0 || m > R->act[(size_t)b * Tk + mt]) mt = j;
            }
            for (int i = 1; i < n; i++) /* sort for the median */
                for (int j = i; j > 0 && vals[j - 1] > vals[j]; j--) {
                    const double t = vals[j];
                    vals[j] = vals[j - 1];
                    vals[j - 1] = t;
                }
            const double med = n % 2 ? vals[n / 2] : 0.5 * (vals[n / 2 - 1] + vals[n / 2]);
            R->act_med[b] = med;
            R->act_ratio[b] = R->act[(size_t)b * Tk + s] / med;
            R->act_max_tok[b] = mt;
            R->act_max_ratio[b] = R->act[(size_t)b * Tk + mt] / med;
            for (int t = 0; t < SPIRAL_TOP_CH && t < D; t++) {
                int best = -1;
                for (int c = 0; c < D; c++) {
                    int used = 0;
                    for (int u = 0; u < t; u++) used |= R->ch[b][u] == c;
                    if (!used && (best < 0 || col[c] > col[best])) best = c;
                }
                R->ch[b][t] = best;
                R->ch_val[b][t] = col[best];
            }
            free(col);
            free(vals);
        }
    }
    free(p);
}

static void ref_free(ref *R) {
    free(R->mu);
    free(R->act);
}

static double worst;

/* |got - want| <= TOL * scale (scale 0: |want|) */
static void near(const char *what, double got, double want, double scale) {
    if (isnan(want) && isnan(got)) return; /* undefined in both (FAC without a low band) */
    const double sc = scale > 0 ? scale : fabs(want);
    const double e = fabs(got - want) / (sc > 0 ? sc : 1);
    if (e > worst) worst = e;
    if (!(e <= TOL)) fail_msg("%s: got %.9g, want %.9g (relative error %.3g)", what, got, want, e);
}

static void vec_near(const char *what, const float *got, const double *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    const double e = sqrt(num / den);
    if (e > worst) worst = e;
    if (!(e <= TOL)) fail_msg("%s: relative L2 error %.3g", what, e);
}

/* Every field of r against the reference. */
static void compare(const spiral_rec *r, const ref *R, const ss_site *site, const attn_args *a) {
    const int B = a->B, Tk = r->Tk;
    vec_near("mu", r->mu, R->mu, (size_t)B * Tk);
    for (int b = 0; b < B; b++) {
        assert_int_equal(r->sink[b], R->sink[b]);
        assert_int_equal(r->sink_type[b], ss_site_key_type(site, b, R->sink[b]));
        near("x uniform", r->x_uniform[b], R->x_uniform[b], 0);
        near("x image", r->x_image[b], R->x_image[b], 0);
        for (int t = 0; t < r->ntop; t++) { /* descending, and each the key's mu */
            const int j = r->top_idx[b * r->ntop + t];
            near("top mu", r->top_mu[b * r->ntop + t], R->mu[(size_t)b * Tk + j], 0);
            if (t) assert_true(R->mu[(size_t)b * Tk + j] <= R->mu[(size_t)b * Tk + r->top_idx[b * r->ntop + t - 1]] * (1 + 1e-6));
            assert_int_equal(r->top_type[b * r->ntop + t], ss_site_key_type(site, b, j));
        }
        if (r->fields & SPIRAL_BUDGET) {
            double sum = 0;
            for (int t = 0; t < SS_TOK_N; t++) {
                assert_int_equal(r->budget_keys[b * SS_TOK_N + t], R->budget_keys[b][t]);
                near("budget", r->budget[b * SS_TOK_N + t], R->budget[b][t], 1.0 / Tk); /* mass sums to 1 over Tk keys */
                sum += r->budget[b * SS_TOK_N + t];
            }
            near("budget total", sum, 1.0, 0);
        }
        if (r->fields & SPIRAL_QK) {
            const double sc = fmax(fabs(R->qk_post_s[b]), fabs(R->qk_post_i[b]));
            near("qk post sink", r->qk_post_sink[b], R->qk_post_s[b], sc);
            near("qk post image", r->qk_post_img[b], R->qk_post_i[b], sc);
            if (r->has_pre) {
                const double sp = fmax(fabs(R->qk_pre_s[b]), fabs(R->qk_pre_i[b]));
                near("qk pre sink", r->qk_pre_sink[b], R->qk_pre_s[b], sp);
                near("qk pre image", r->qk_pre_img[b], R->qk_pre_i[b], sp);
            }
        }
        if (r->fields & SPIRAL_NORMS) {
            near("v norm sink", r->vnorm_sink[b], R->vn_s[b], 0);
            near("v norm image", r->vnorm_img[b], R->vn_i[b], 0);
            near("k norm sink", r->knorm_sink[b], R->kn_s[b], 0);
            near("k norm image", r->knorm_img[b], R->kn_i[b], 0);
        }
        if (r->fields & SPIRAL_ENERGY) {
            vec_near("energy sink", r->e_sink + b * r->n_pairs, R->e_s[b], (size_t)r->n_pairs);
            vec_near("energy image", r->e_img + b * r->n_pairs, R->e_i[b], (size_t)r->n_pairs);
            for (int x = 0; x < r->n_axes; x++) {
                near("axis share sink", r->axis_sink[b * r->n_axes + x], R->ax_s[b][x], 1);
                near("axis share image", r->axis_img[b * r->n_axes + x], R->ax_i[b][x], 1);
            }
            near("low share sink", r->low_sink[b], R->low_s[b], 0);
            near("low share image", r->low_img[b], R->low_i[b], 0);
            near("fac", r->fac[b], R->fac[b], 0);
        }
        if (r->fields & SPIRAL_ACT) {
            for (int j = 0; j < Tk; j++) near("act inf", r->act_inf[(size_t)b * Tk + j], R->act[(size_t)b * Tk + j], 0);
            near("act median", r->act_median[b], R->act_med[b], 0);
            near("act sink ratio", r->act_sink_ratio[b], R->act_ratio[b], 0);
            assert_int_equal(r->act_max_tok[b], R->act_max_tok[b]);
            near("act max ratio", r->act_max_ratio[b], R->act_max_ratio[b], 0);
            for (int t = 0; t < r->nch; t++) {
                assert_int_equal(r->ch_idx[b * r->nch + t], R->ch[b][t]);
                near("channel max", r->ch_val[b * r->nch + t], R->ch_val[b][t], 0);
            }
        }
    }
}

/* ---- a plain joint site (SD3's layout: image keys, then text; hidden states in two buffers) ---- */

typedef struct {
    int B, H, dh, N, S, T, D;
    float *q, *k, *v, *out, *X, *C;
    uint8_t *kv;
    ss_site site;
    attn_args a;
} plain;

/* q = u + noise, the sink key sink_j[b] = 3 u (every query likes it), its value small; hidden
 * states with one massive channel at the sink token. */
static void plain_make(plain *p, int B, int H, int dh, int N, int S, int masked, uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->B = B, p->H = H, p->dh = dh, p->N = N, p->S = S, p->T = N + S, p->D = H * dh;
    const size_t n = (size_t)B * p->T * p->D;
    p->q = malloc(sizeof(float) * n);
    p->k = malloc(sizeof(float) * n);
    p->v = malloc(sizeof(float) * n);
    p->out = malloc(sizeof(float) * n);
    p->X = malloc(sizeof(float) * (size_t)B * N * p->D);
    p->C = malloc(sizeof(float) * (size_t)B * S * p->D);
    tc_fill(p->q, n, seed, 1.0f);
    tc_fill(p->k, n, seed + 1, 1.0f);
    tc_fill(p->v, n, seed + 2, 1.0f);
    tc_fill(p->X, (size_t)B * N * p->D, seed + 3, 2.0f);
    tc_fill(p->C, (size_t)B * S * p->D, seed + 4, 2.0f);
    float u[1024];
    tc_fill(u, (size_t)p->D, seed + 5, 1.0f);
    for (int b = 0; b < B; b++) {
        const int sink = b % 2 ? N + 1 : 3; /* a text key, an image key */
        for (int t = 0; t < p->T; t++)
            for (int c = 0; c < p->D; c++) p->q[((size_t)b * p->T + t) * p->D + c] += u[c];
        for (int c = 0; c < p->D; c++) {
            p->k[((size_t)b * p->T + sink) * p->D + c] = 3 * u[c];
            p->v[((size_t)b * p->T + sink) * p->D + c] *= 0.01f;
        }
        float *h = sink < N ? p->X + ((size_t)b * N + sink) * p->D : p->C + ((size_t)b * S + sink - N) * p->D;
        h[5] = 60.0f;
    }
    if (masked) {
        p->kv = malloc((size_t)B * p->T);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < p->T; j++) p->kv[(size_t)b * p->T + j] = !(b == 1 && j >= p->T - 3);
        /* a masked key with a huge activation: ignored by the median, the max and the channels */
        p->C[((size_t)1 * S + S - 1) * p->D + 7] = 500.0f;
    }
    p->site = (ss_site){.kind = SS_SITE_JOINT, .block = 2, .index = 2, .Tq = p->T, .Tk = p->T, .n_qspan = 2, .n_kspan = 2,
                        .qspan = {{0, N, SS_TOK_IMAGE}, {N, S, SS_TOK_TEXT}}, .kspan = {{0, N, SS_TOK_IMAGE}, {N, S, SS_TOK_TEXT}},
                        .key_valid = p->kv, .hidden_dim = p->D, .hidden_ld = p->D};
    p->site.hidden[0] = (ss_rows){p->X, (size_t)N};
    p->site.hidden[1] = (ss_rows){p->C, (size_t)S};
    p->a = (attn_args){.B = B, .H = H, .dh = dh, .T = p->T, .ld = p->D, .q = p->q, .k = p->k, .v = p->v, .out = p->out,
                       .key_valid = p->kv, .n_qspan = 2, .qend = {N, p->T}};
}

static void plain_free(plain *p) {
    free(p->q), free(p->k), free(p->v), free(p->out), free(p->X), free(p->C), free(p->kv);
}

/* The sink probe with every spiral field at one site; returns the context (caller frees). */
static sink_ctx *run_probe(const ss_site *site, const attn_args *a, sink_tokens qs, unsigned fields, const attn_args *pre) {
    sink_ctx *sk = sink_ctx_new();
    const int code = ss_site_code_of(site);
    assert_int_equal(sink_ctx_set_probe(sk, &code, 1, qs, 5, 1), 0);
    sink_ctx_set_spiral(sk, fields);
    if (pre && sink_ctx_rope_qk(sk, site, 0, pre) < 0) fail_msg("%s", ss_err());
    if (pre && sink_ctx_rope_qk(sk, site, 1, a) < 0) fail_msg("%s", ss_err());
    sd3_hooks hk = sink_ctx_hooks(sk);
    if (hk.attention(hk.ctx, site, a) < 0) fail_msg("%s", ss_err());
    assert_int_equal(sink_ctx_record_count(sk), 1);
    assert_non_null(sink_ctx_record(sk, 0)->spiral);
    return sk;
}

static void test_plain_site(void **state) {
    (void)state;
    const sink_tokens qs[] = {TOK_IMAGE, TOK_TEXT, TOK_ALL};
    for (int masked = 0; masked < 2; masked++)
        for (int qi = 0; qi < 3; qi++) {
            plain p;
            plain_make(&p, 2, 3, 8, 40, 13, masked, 11 + masked);
            worst = 0;
            sink_ctx *sk = run_probe(&p.site, &p.a, qs[qi], SPIRAL_ALL, NULL);
            const spiral_rec *r = sink_ctx_record(sk, 0)->spiral;
            /* no RoPE: no energy, one <q, k> */
            assert_int_equal(r->fields, SPIRAL_ALL & ~(unsigned)SPIRAL_ENERGY);
            assert_int_equal(r->has_pre, 0);
            ref R;
            ref_compute(&R, &p.a, &p.site, qi, NULL, NULL);
            compare(r, &R, &p.site, &p.a);
            assert_int_equal(R.sink[0], 3);
            assert_int_equal(R.sink[1], 41);
            assert_true(r->act_sink_ratio[0] > 10 && r->vnorm_sink[0] < 0.1 * r->vnorm_img[0]);
            printf("  plain site, %s queries%s: worst relative error %.2e\n", sink_tokens_name(qs[qi]), masked ? ", key mask" : "",
                   worst);
            ref_free(&R);
            sink_ctx_free(sk);
            plain_free(&p);
        }
}

/* ---- a synthetic RoPE site: FLUX's layout (text first, 3 axes) and its own rotation ---- */

typedef struct {
    plain p;
    float *qpre, *kpre, *ids, *cs, *sn, *Z;
    attn_args pre;
} rope_site;

static void rope_make(rope_site *r, int B, int H, int S, int gh, int gw, const int dims[3], uint64_t seed) {
    const int dh = dims[0] + dims[1] + dims[2], N = gh * gw;
    plain *p = &r->p;
    plain_make(p, B, H, dh, N, S, 0, seed);
    /* text first: rebuild the layout, keys j < S are text */
    p->site.kspan[0] = p->site.qspan[0] = (ss_span){0, S, SS_TOK_TEXT};
    p->site.kspan[1] = p->site.qspan[1] = (ss_span){S, N, SS_TOK_IMAGE};
    p->site.kind = SS_SITE_DOUBLE;
    p->a.qend[0] = S;
    /* one [B, T, D] stream, text rows first (FLUX's), a massive channel at the sink */
    r->Z = malloc(sizeof(float) * (size_t)B * p->T * p->D);
    tc_fill(r->Z, (size_t)B * p->T * p->D, seed + 7, 1.5f);
    for (int b = 0; b < B; b++) r->Z[((size_t)b * p->T + (b % 2 ? N + 1 : 3)) * p->D + 2] = -40.0f;
    ss_site_set_hidden(&p->site, r->Z, (size_t)p->T, p->D, p->D);
    for (int x = 0; x < 3; x++) p->site.rope_dims[x] = dims[x];
    flux_config c = {.head_dim = dh, .n_axes = 3, .axes_dims = {dims[0], dims[1], dims[2]}};
    const int T = p->T;
    r->ids = calloc((size_t)T * 3, sizeof(float));
    for (int i = 0; i < N; i++) {
        r->ids[(size_t)(S + i) * 3 + 1] = (float)(i / gw);
        r->ids[(size_t)(S + i) * 3 + 2] = (float)(i % gw);
    }
    r->cs = malloc(sizeof(float) * (size_t)T * dh);
    r->sn = malloc(sizeof(float) * (size_t)T * dh);
    flux_rope_tables(r->cs, r->sn, r->ids, T, &c);
    const size_t n = (size_t)B * T * p->D;
    r->qpre = malloc(sizeof(float) * n);
    r->kpre = malloc(sizeof(float) * n);
    memcpy(r->qpre, p->q, sizeof(float) * n);
    memcpy(r->kpre, p->k, sizeof(float) * n);
    for (int b = 0; b < B; b++) {
        flux_rope_apply(p->q + (size_t)b * T * p->D, p->D, r->cs, r->sn, T, H, dh);
        flux_rope_apply(p->k + (size_t)b * T * p->D, p->D, r->cs, r->sn, T, H, dh);
    }
    r->pre = p->a;
    r->pre.q = r->qpre;
    r->pre.k = r->kpre;
}

static void rope_free(rope_site *r) {
    plain_free(&r->p);
    free(r->qpre), free(r->kpre), free(r->ids), free(r->cs), free(r->sn), free(r->Z);
}

static void test_rope_site(void **state) {
    (void)state;
    const int dims[2][3] = {{16, 56, 56}, {4, 6, 6}}; /* FLUX.1's axes; flux-tiny-a's */
    for (int v = 0; v < 2; v++) {
        rope_site rs;
        rope_make(&rs, 2, 2, 7, 5, 6, dims[v], 21 + v);
        plain *p = &rs.p;
        worst = 0;
        sink_ctx *sk = run_probe(&p->site, &p->a, TOK_IMAGE, SPIRAL_ALL, &rs.pre);
        const spiral_rec *r = sink_ctx_record(sk, 0)->spiral;
        assert_int_equal(r->fields, SPIRAL_ALL);
        assert_int_equal(r->has_pre, 1);
        assert_int_equal(r->n_axes, 3);
        assert_int_equal(r->n_pairs, p->dh / 2);
        ref R;
        ref_compute(&R, &p->a, &p->site, 0, rs.qpre, rs.kpre);
        compare(r, &R, &p->site, &p->a);
        /* RoPE keeps each pair's energy: the same from the pre-RoPE keys, to fp32 rounding */
        attn_args pa = p->a;
        pa.k = rs.kpre;
        ref R2;
        ref_compute(&R2, &pa, &p->site, 0, NULL, NULL);
        for (int c = 0; c < p->dh / 2; c++) assert_true(fabs(R2.e_i[0][c] - R.e_i[0][c]) <= 1e-5 * R.e_i[0][c]);
        printf("  RoPE site, axes (%d, %d, %d): worst relative error %.2e; FAC %.3f, qk pre %.3f/%.3f, post %.3f/%.3f\n",
               dims[v][0], dims[v][1], dims[v][2], worst, r->fac[0], r->qk_pre_sink[0], r->qk_pre_img[0], r->qk_post_sink[0],
               r->qk_post_img[0]);
        ref_free(&R);
        ref_free(&R2);
        /* without the rope_qk hook: post only */
        sink_ctx *s2 = run_probe(&p->site, &p->a, TOK_IMAGE, SPIRAL_ALL, NULL);
        assert_int_equal(sink_ctx_record(s2, 0)->spiral->has_pre, 0);
        sink_ctx_free(s2);
        sink_ctx_free(sk);
        rope_free(&rs);
    }
}

/* ---- the budget by token type on a synthetic layout: per-key types and spans ---- */

static void test_budget_types(void **state) {
    (void)state;
    plain p;
    plain_make(&p, 2, 2, 8, 24, 20, 1, 31);
    /* keys: 24 image, then text: bos, 5 words, 2 commas, a word, punct, eos, 9 pads; batch 1
     * differs (its prompt is longer) and its last 3 keys (pads) are masked */
    const ss_tok txt[2][20] = {
        {SS_TOK_BOS, SS_TOK_WORD, SS_TOK_WORD, SS_TOK_WORD, SS_TOK_WORD, SS_TOK_WORD, SS_TOK_COMMA, SS_TOK_COMMA, SS_TOK_WORD,
         SS_TOK_OTHER, SS_TOK_EOS, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD,
         SS_TOK_PAD},
        {SS_TOK_BOS, SS_TOK_WORD, SS_TOK_COMMA, SS_TOK_WORD, SS_TOK_COMMA, SS_TOK_WORD, SS_TOK_COMMA, SS_TOK_COMMA, SS_TOK_WORD,
         SS_TOK_WORD, SS_TOK_WORD, SS_TOK_WORD, SS_TOK_EOS, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD,
         SS_TOK_PAD}};
    uint8_t types[2 * 44];
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 44; j++) types[b * 44 + j] = (uint8_t)(j < 24 ? SS_TOK_IMAGE : txt[b][j - 24]);
    p.site.key_type = types;
    worst = 0;
    sink_ctx *sk = run_probe(&p.site, &p.a, TOK_IMAGE, SPIRAL_ALL, NULL);
    const spiral_rec *r = sink_ctx_record(sk, 0)->spiral;
    ref R;
    ref_compute(&R, &p.a, &p.site, 0, NULL, NULL);
    compare(r, &R, &p.site, &p.a);
    const int want_keys[2][SS_TOK_N] = {{24, 0, 6, 1, 9, 2, 1, 1}, {24, 0, 7, 1, 4, 4, 1, 0}};
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < SS_TOK_N; t++) assert_int_equal(r->budget_keys[b * SS_TOK_N + t], want_keys[b][t]);
    /* by hand: the pads of batch 1 */
    double pad = 0;
    for (int j = 24; j < 44; j++)
        if (txt[1][j - 24] == SS_TOK_PAD && p.kv[44 + j]) pad += R.mu[44 + j];
    near("pad budget", r->budget[SS_TOK_N + SS_TOK_PAD], pad, 0);
    assert_int_equal(r->sink_type[1], SS_TOK_WORD); /* key 25 */
    /* the JSON names the types present */
    json_t *o = spiral_rec_to_json(r, 1), *all = spiral_rec_to_json(r, -1);
    json_t *bu = json_object_get(o, "budget");
    assert_non_null(json_object_get(bu, "comma"));
    assert_non_null(json_object_get(bu, "bos"));
    assert_null(json_object_get(bu, "text"));
    assert_null(json_object_get(bu, "other")); /* batch 1 has none */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "budget_keys"), "pad")), 4);
    assert_string_equal(json_string_value(json_object_get(o, "sink_type")), "word");
    assert_int_equal(json_array_size(all), 2);
    assert_true(json_equal(json_array_get(all, 1), o));
    json_decref(o);
    json_decref(all);
    ref_free(&R);
    sink_ctx_free(sk);

    /* the same types as key spans (no per-key array): image, word, comma, pad */
    p.site.key_type = NULL;
    p.site.n_kspan = 4;
    p.site.kspan[0] = (ss_span){0, 24, SS_TOK_IMAGE};
    p.site.kspan[1] = (ss_span){24, 6, SS_TOK_WORD};
    p.site.kspan[2] = (ss_span){30, 4, SS_TOK_COMMA};
    p.site.kspan[3] = (ss_span){34, 10, SS_TOK_PAD};
    for (int i = 0; i < 4; i++) p.site.hidden[i] = (ss_rows){NULL, 0}; /* no hidden states: no act */
    sk = run_probe(&p.site, &p.a, TOK_IMAGE, SPIRAL_ALL, NULL);
    r = sink_ctx_record(sk, 0)->spiral;
    assert_false(r->fields & SPIRAL_ACT);
    ref_compute(&R, &p.a, &p.site, 0, NULL, NULL);
    compare(r, &R, &p.site, &p.a);
    assert_int_equal(r->budget_keys[SS_TOK_N + SS_TOK_PAD], 7);
    assert_int_equal(r->budget_keys[SS_TOK_COMMA], 4);
    printf("  budget by type: worst relative error %.2e; batch 1: image %.3f word %.3f comma %.3f pad %.3f\n", worst,
           r->budget[SS_TOK_N + SS_TOK_IMAGE], r->budget[SS_TOK_N + SS_TOK_WORD], r->budget[SS_TOK_N + SS_TOK_COMMA],
           r->budget[SS_TOK_N + SS_TOK_PAD]);
    ref_free(&R);
    sink_ctx_free(sk);
    plain_free(&p);
}

/* spiral_rec_tensors' walk: names and shapes, joined */
typedef struct {
    char names[512];
    const float *keyimp;
} walk;

static int walk_fn(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data) {
    walk *w = ctx;
    char one[96];
    snprintf(one, sizeof one, "%s[%lld,%lld] ", name, (long long)shape[0], (long long)(ndim > 1 ? shape[1] : 0));
    strncat(w->names, one, sizeof w->names - strlen(w->names) - 1);
    if (!strncmp(name, "keyimp.", 7)) w->keyimp = data;
    return 0;
}

/* ---- FLUX's own sites (flux-tiny-a and the variants): the hooks capture what each site saw ---- */

typedef struct {
    sink_ctx *sk;
    sd3_hooks inner;
    int n;
    float *qpre[64], *kpre[64], *q[64], *k[64], *v[64], *hid[64];
    ss_site site[64];
    attn_args a[64];
} fcap;

static float *dup(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static int cap_rope(void *ctx, const ss_site *site, int post, const attn_args *a) {
    fcap *c = ctx;
    const size_t n = (size_t)a->B * a->T * a->ld;
    if (!post) {
        c->qpre[c->n] = dup(a->q, n);
        c->kpre[c->n] = dup(a->k, n);
    }
    return sink_ctx_rope_qk(c->sk, site, post, a);
}

static int cap_attn(void *ctx, const ss_site *site, const attn_args *a) {
    fcap *c = ctx;
    const size_t n = (size_t)a->B * a->T * a->ld;
    const int i = c->n++;
    assert_true(i < 64);
    c->q[i] = dup(a->q, n);
    c->k[i] = dup(a->k, n);
    c->v[i] = dup(a->v, n);
    c->hid[i] = dup(site->hidden[0].x, (size_t)a->B * site->Tk * site->hidden_ld);
    c->site[i] = *site;
    ss_site_set_hidden(&c->site[i], c->hid[i], (size_t)site->Tk, site->hidden_dim, site->hidden_ld);
    c->a[i] = *a;
    c->a[i].q = c->q[i], c->a[i].k = c->k[i], c->a[i].v = c->v[i];
    return c->inner.attention(c->inner.ctx, site, a);
}

static void flux_fixture(const char *name) {
    const char *dir = tc_path("fixtures/%s", name), *in = tc_path("fixtures/%s/inputs.safetensors", name);
    flux_model *m;
    if (flux_load(&m, dir) < 0) fail_msg("%s", ss_err());
    int64_t sh[3], sc[3];
    float *hs = tc_load(in, "hidden_states", NULL, sh, NULL), *ctx = tc_load(in, "encoder_hidden_states", NULL, sc, NULL);
    float *pooled = tc_load(in, "pooled_projections", NULL, NULL, NULL), *t = tc_load(in, "timestep", NULL, NULL, NULL);
    float *g = tc_load(in, "guidance", NULL, NULL, NULL), *ii = tc_load(in, "img_ids", NULL, NULL, NULL);
    float *ti = tc_load(in, "txt_ids", NULL, NULL, NULL);
    const int B = (int)sh[0], N = (int)sh[1], S = (int)sc[1];
    const size_t nout = (size_t)B * N * m->cfg.out_channels * m->cfg.patch_size * m->cfg.patch_size;
    float *o0 = malloc(sizeof(float) * nout), *o1 = malloc(sizeof(float) * nout);
    if (flux_forward(m, o0, hs, ctx, pooled, t, g, ii, ti, B, N, S, NULL) < 0) fail_msg("%s", ss_err());
    ss_site sites[64];
    const int ns = flux_sites(&m->cfg, N, S, sites, 64);
    assert_true(ns <= 64);
    int codes[64];
    for (int i = 0; i < ns; i++) codes[i] = ss_site_code_of(&sites[i]);
    const sink_tokens qs[] = {TOK_IMAGE, TOK_ALL};
    for (int qi = 0; qi < 2; qi++) {
        fcap c = {.sk = sink_ctx_new()};
        sink_ctx_set_probe(c.sk, codes, ns, qs[qi], 5, 1);
        sink_ctx_set_spiral(c.sk, SPIRAL_ALL);
        c.inner = sink_ctx_hooks(c.sk);
        flux_hooks hk = {.ctx = &c, .attention = cap_attn, .rope_qk = cap_rope};
        if (flux_forward(m, o1, hs, ctx, pooled, t, g, ii, ti, B, N, S, &hk) < 0) fail_msg("%s", ss_err());
        assert_memory_equal(o0, o1, sizeof(float) * nout); /* the probe changes nothing */
        assert_int_equal(c.n, ns);
        worst = 0;
        for (int i = 0; i < ns; i++) {
            const spiral_rec *r = sink_ctx_record(c.sk, i)->spiral;
            assert_int_equal(r->fields, SPIRAL_ALL);
            assert_int_equal(r->has_pre, 1);
            assert_int_equal(r->D, m->D);
            ref R;
            ref_compute(&R, &c.a[i], &c.site[i], qi == 0 ? 0 : 2, c.qpre[i], c.kpre[i]);
            compare(r, &R, &c.site[i], &c.a[i]);
            ref_free(&R);
            free(c.qpre[i]), free(c.kpre[i]), free(c.q[i]), free(c.k[i]), free(c.v[i]), free(c.hid[i]);
        }
        /* the records' JSON carries the fields */
        sink_probe_entry pe;
        assert_int_equal(sink_probe_entry_from_record(&pe, sink_ctx_record(c.sk, ns - 1), 0, 1, NULL), 0);
        json_t *j = sink_probe_entry_write_json(&pe);
        sink_probe_entry_free(&pe);
        json_t *sp = json_object_get(j, "spiral");
        assert_non_null(sp);
        assert_non_null(json_object_get(json_object_get(sp, "energy"), "fac"));
        assert_non_null(json_object_get(sp, "qk_pre"));
        assert_non_null(json_object_get(sp, "act"));
        json_decref(j);
        walk wk = {{0}, NULL};
        const spiral_rec *last = sink_ctx_record(c.sk, ns - 1)->spiral;
        char sn[48], want[512];
        ss_site_code_name(codes[ns - 1], sn, sizeof sn);
        assert_int_equal(spiral_rec_tensors(last, sn, walk_fn, &wk), 0);
        snprintf(want, sizeof want, "keyimp.%s[%d,%d] budget.%s[%d,%d] kenergy_sink.%s[%d,%d] kenergy_image.%s[%d,%d] act_inf.%s[%d,%d] ",
                 sn, B, N + S, sn, B, SS_TOK_N, sn, B, m->cfg.head_dim / 2, sn, B, m->cfg.head_dim / 2, sn, B, N + S);
        assert_string_equal(wk.names, want);
        assert_ptr_equal(wk.keyimp, last->mu);
        /* shrunk: the summaries stay, the [B, Tk] vectors go */
        spiral_rec *lm = sink_ctx_record(c.sk, ns - 1)->spiral;
        const int sink0 = lm->sink[0];
        spiral_rec_shrink(lm);
        memset(&wk, 0, sizeof wk);
        assert_int_equal(spiral_rec_tensors(lm, sn, walk_fn, &wk), 0);
        snprintf(want, sizeof want, "budget.%s[%d,%d] kenergy_sink.%s[%d,%d] kenergy_image.%s[%d,%d] ", sn, B, SS_TOK_N, sn, B,
                 m->cfg.head_dim / 2, sn, B, m->cfg.head_dim / 2);
        assert_string_equal(wk.names, want);
        assert_int_equal(lm->sink[0], sink0);
        printf("  %s, %d sites, %s queries: worst relative error %.2e\n", name, ns, sink_tokens_name(qs[qi]), worst);
        sink_ctx_free(c.sk);
    }
    free(o0), free(o1), free(hs), free(ctx), free(pooled), free(t), free(g), free(ii), free(ti);
    flux_free(m);
}

static void test_flux_fixture(void **state) {
    (void)state;
    const char *const names[] = {"flux-tiny-a", "flux-variants/dev-h3-5x3-b1-sharded", "flux-variants/dev-h6-6x8-out8",
                                 "flux-variants/schnell-h4-4x6"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) flux_fixture(names[i]);
}

/* ---- SD3.5's sites (sd35-tiny-b): joint.i supplies the block's input streams, attn2.i none ---- */

typedef struct {
    sd3_hooks inner;
    int n;
    int code[32];
    float *q[32], *k[32], *v[32], *hid[32], *blk[32];
    ss_site site[32];
    attn_args a[32];
} scap;

static int scap_attn(void *ctx, const ss_site *site, const attn_args *a) {
    scap *c = ctx;
    const int i = c->n++, Tk = site->Tk;
    assert_true(i < 32);
    const size_t n = (size_t)a->B * a->T * a->ld;
    c->q[i] = dup(a->q, n), c->k[i] = dup(a->k, n), c->v[i] = dup(a->v, n);
    c->site[i] = *site;
    c->code[i] = ss_site_code_of(site);
    if (site->hidden[0].x) { /* copy in key order: [B, Tk, D] */
        const int D = site->hidden_dim;
        c->hid[i] = malloc(sizeof(float) * (size_t)a->B * Tk * D);
        for (int b = 0; b < a->B; b++)
            for (int g = 0; g < site->n_kspan; g++)
                for (int r = 0; r < site->kspan[g].len; r++)
                    memcpy(c->hid[i] + ((size_t)b * Tk + site->kspan[g].start + r) * D,
                           site->hidden[g].x + ((size_t)b * site->hidden[g].bstride + r) * site->hidden_ld, sizeof(float) * D);
        ss_site_set_hidden(&c->site[i], c->hid[i], (size_t)Tk, D, D);
    }
    c->a[i] = *a;
    c->a[i].q = c->q[i], c->a[i].k = c->k[i], c->a[i].v = c->v[i];
    return c->inner.attention(c->inner.ctx, site, a);
}

static int scap_block(void *ctx, int block, const float *x, int B, int N, int D) {
    scap *c = ctx;
    assert_true(block < 32 && !c->blk[block]);
    c->blk[block] = dup(x, (size_t)B * N * D);
    return c->inner.block_output(c->inner.ctx, block, x, B, N, D);
}

static void test_sd3_sites(void **state) {
    (void)state;
    tc_sd3fx f;
    if (tc_sd3fx_load(&f, "sd35-tiny-b") < 0) fail_msg("%s", ss_err());
    float *o0 = malloc(sizeof(float) * f.nout), *o1 = malloc(sizeof(float) * f.nout);
    if (sd3_forward(f.m, o0, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, NULL) < 0) fail_msg("%s", ss_err());
    ss_site sites[32];
    const int ns = sd3_sites(&f.m->cfg, f.N, f.S, sites, 32);
    int codes[32];
    for (int i = 0; i < ns; i++) codes[i] = ss_site_code_of(&sites[i]);
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_probe(sk, codes, ns, TOK_IMAGE, 5, 1);
    sink_ctx_set_spiral(sk, SPIRAL_ALL);
    scap c = {.inner = sink_ctx_hooks(sk)};
    sd3_hooks hk = {.ctx = &c, .attention = scap_attn, .block_output = scap_block};
    if (sd3_forward(f.m, o1, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, &hk) < 0) fail_msg("%s", ss_err());
    assert_memory_equal(o0, o1, sizeof(float) * f.nout);
    assert_int_equal(c.n, ns);
    worst = 0;
    const int D = f.m->D;
    for (int i = 0; i < ns; i++) {
        const spiral_rec *r = sink_ctx_record(sk, i)->spiral;
        const int joint = ss_site_code_kind(c.code[i]) == SS_SITE_JOINT, blk = ss_site_code_block(c.code[i]);
        assert_int_equal(!!(r->fields & SPIRAL_ACT), joint);
        assert_false(r->fields & SPIRAL_ENERGY);
        if (joint && blk > 0) /* the image rows are the stream block blk-1 put out */
            for (int b = 0; b < f.B; b++)
                assert_memory_equal(c.hid[i] + (size_t)b * (f.N + f.S) * D, c.blk[blk - 1] + (size_t)b * f.N * D,
                                    sizeof(float) * f.N * D);
        ref R;
        ref_compute(&R, &c.a[i], &c.site[i], 0, NULL, NULL);
        compare(r, &R, &c.site[i], &c.a[i]);
        ref_free(&R);
        free(c.q[i]), free(c.k[i]), free(c.v[i]), free(c.hid[i]);
    }
    for (int i = 0; i < 32; i++) free(c.blk[i]);
    printf("  sd35-tiny-b, %d sites: worst relative error %.2e\n", ns, worst);
    sink_ctx_free(sk);
    free(o0), free(o1);
    tc_sd3fx_free(&f);
}

/* ---- no-op, threads, memory, parsing ---- */

static void test_noop_and_threads(void **state) {
    (void)state;
    rope_site rs;
    rope_make(&rs, 2, 3, 9, 6, 7, (const int[]){8, 12, 12}, 41);
    plain *p = &rs.p;
    const size_t n = (size_t)p->B * p->T * p->D;
    float *plain_out = malloc(sizeof(float) * n);
    attn_args a0 = p->a;
    a0.out = plain_out;
    assert_int_equal(attn_forward(&a0, NULL), 0);
    const int threads[] = {1, 3};
    sink_ctx *sks[2];
    for (int i = 0; i < 2; i++) {
        omp_set_num_threads(threads[i]);
        memset(p->out, 0, sizeof(float) * n);
        sks[i] = run_probe(&p->site, &p->a, TOK_ALL, SPIRAL_ALL, &rs.pre);
        assert_memory_equal(p->out, plain_out, sizeof(float) * n);
    }
    omp_set_num_threads(2);
    const spiral_rec *x = sink_ctx_record(sks[0], 0)->spiral, *y = sink_ctx_record(sks[1], 0)->spiral;
    const int B = x->B;
    assert_memory_equal(x->mu, y->mu, sizeof(float) * B * x->Tk);
    assert_memory_equal(x->act_inf, y->act_inf, sizeof(float) * B * x->Tk);
    assert_memory_equal(x->e_sink, y->e_sink, sizeof(float) * B * x->n_pairs);
    assert_memory_equal(x->e_img, y->e_img, sizeof(float) * B * x->n_pairs);
    assert_memory_equal(x->budget, y->budget, sizeof(float) * B * SS_TOK_N);
    const float *fx[] = {x->fac, x->qk_pre_sink, x->qk_pre_img, x->qk_post_sink, x->qk_post_img, x->vnorm_img, x->knorm_img, x->x_image};
    const float *fy[] = {y->fac, y->qk_pre_sink, y->qk_pre_img, y->qk_post_sink, y->qk_post_img, y->vnorm_img, y->knorm_img, y->x_image};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) assert_memory_equal(fx[i], fy[i], sizeof(float) * B);
    json_t *jx = sink_record_write_probe_json(sks[0], 1, NULL), *jy = sink_record_write_probe_json(sks[1], 1, NULL);
    char *sx = json_dumps(jx, JSON_SORT_KEYS), *sy = json_dumps(jy, JSON_SORT_KEYS);
    assert_string_equal(sx, sy);
    free(sx), free(sy), json_decref(jx), json_decref(jy);
    for (int i = 0; i < 2; i++) sink_ctx_free(sks[i]);
    /* spiral fields or none: the probe's own statistics and the output are the same */
    sink_ctx *s0 = sink_ctx_new();
    const int code = ss_site_code_of(&p->site);
    sink_ctx_set_probe(s0, &code, 1, TOK_ALL, 5, 1);
    sd3_hooks hk = sink_ctx_hooks(s0);
    assert_int_equal(hk.attention(hk.ctx, &p->site, &p->a), 0);
    assert_memory_equal(p->out, plain_out, sizeof(float) * n);
    assert_null(sink_ctx_record(s0, 0)->spiral);
    sink_ctx_free(s0);
    free(plain_out);
    rope_free(&rs);
}

static void test_memory(void **state) {
    (void)state;
    /* the working memory grows linearly with the keys, far below one Tk x Tk matrix */
    size_t w[2];
    const int S[2] = {64, 64}, gw[2] = {16, 32};
    for (int i = 0; i < 2; i++) {
        rope_site rs;
        rope_make(&rs, 1, 2, S[i], 16, gw[i], (const int[]){4, 6, 6}, 51);
        sink_ctx *sk = run_probe(&rs.p.site, &rs.p.a, TOK_IMAGE, SPIRAL_ALL, &rs.pre);
        const spiral_rec *r = sink_ctx_record(sk, 0)->spiral;
        w[i] = r->work_bytes;
        const size_t Tk = (size_t)r->Tk;
        printf("  Tk %zu: working memory %zu bytes (one Tk x Tk fp32 matrix: %zu)\n", Tk, w[i], Tk * Tk * 4);
        assert_true(w[i] > 0 && w[i] * 8 < Tk * Tk * 4);
        sink_ctx_free(sk);
        rope_free(&rs);
    }
    assert_true(w[1] <= 2 * w[0] + 4096);
}

static void test_fields_parse(void **state) {
    (void)state;
    unsigned f;
    assert_int_equal(spiral_fields_parse("all", &f), 0);
    assert_int_equal(f, SPIRAL_ALL);
    assert_int_equal(spiral_fields_parse("qk,act", &f), 0);
    assert_int_equal(f, SPIRAL_QK | SPIRAL_ACT);
    assert_true(spiral_fields_parse("qk,fac", &f) < 0);
    assert_non_null(strstr(ss_err(), "'fac'"));
    assert_true(spiral_fields_parse("", &f) < 0);
    /* tokenizer types to key types */
    const int tt[] = {TT_WORD, TT_COMMA, TT_PUNCT, TT_BOS, TT_EOS, TT_PAD, TT_SPECIAL};
    const ss_tok kt[] = {SS_TOK_WORD, SS_TOK_COMMA, SS_TOK_OTHER, SS_TOK_BOS, SS_TOK_EOS, SS_TOK_PAD, SS_TOK_OTHER};
    for (int i = 0; i < TT_COUNT; i++) assert_int_equal(spiral_tok_of_txtok(tt[i]), kt[i]);
    /* a site without image keys: x image and the image means are null in JSON */
    plain p;
    plain_make(&p, 1, 2, 8, 10, 6, 0, 61);
    for (int i = 0; i < 2; i++) p.site.kspan[i].type = SS_TOK_TEXT;
    sink_ctx *sk = run_probe(&p.site, &p.a, TOK_IMAGE, SPIRAL_KEYIMP | SPIRAL_NORMS, NULL);
    const spiral_rec *r = sink_ctx_record(sk, 0)->spiral;
    assert_int_equal(r->fields, SPIRAL_KEYIMP | SPIRAL_NORMS);
    assert_true(isnan(r->x_image[0]));
    json_t *o = spiral_rec_to_json(r, 0);
    assert_true(json_is_null(json_object_get(o, "ki_x_image")));
    assert_true(json_is_null(json_object_get(json_object_get(o, "v_norm"), "image")));
    assert_null(json_object_get(o, "budget"));
    json_decref(o);
    sink_ctx_free(sk);
    /* RoPE axes that do not tile the head: an error naming the site, not a silent misreading */
    p.site.rope_dims[0] = 4, p.site.rope_dims[1] = 6;
    sk = sink_ctx_new();
    const int code = ss_site_code_of(&p.site);
    sink_ctx_set_probe(sk, &code, 1, TOK_ALL, 5, 1);
    sink_ctx_set_spiral(sk, SPIRAL_ENERGY);
    sd3_hooks hk = sink_ctx_hooks(sk);
    assert_true(hk.attention(hk.ctx, &p.site, &p.a) < 0);
    assert_non_null(strstr(ss_err(), "joint.2"));
    assert_non_null(strstr(ss_err(), "not the head dim 8"));
    sink_ctx_free(sk);
    plain_free(&p);
}

/* ---- forward --spiral on the CLI: outputs bit-identical, the pre/post-RoPE <q, k> of the sink and
 * of the mean image key against diffusers' own qk_pre/qk_post tensors of the FLUX fixtures ---- */

static double json_num(json_t *o, const char *a, const char *b) {
    json_t *x = json_object_get(json_object_get(o, a), b);
    assert_non_null(x);
    return json_number_value(x);
}

static void test_cli_spiral(void **state) {
    (void)state;
    const char *const names[] = {"flux-tiny-a", "flux-variants/dev-h6-6x8-out8"};
    char *tmp = tc_tmpdir(), buf[8192];
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        char dir[512], exp[600], pln[600], spi[600], stats[600];
        snprintf(dir, sizeof dir, "%s", tc_path("fixtures/%s", names[f]));
        snprintf(exp, sizeof exp, "%s/expected.safetensors", dir);
        snprintf(pln, sizeof pln, "%s/plain.safetensors", tmp);
        snprintf(spi, sizeof spi, "%s/spiral.safetensors", tmp);
        snprintf(stats, sizeof stats, "%s/spiral.stats.json", tmp);
        assert_int_equal(tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --probe all --threads 1",
                                tc_bin(), dir, dir, pln), 0);
        assert_int_equal(tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --probe all "
                                "--spiral all --threads 1", tc_bin(), dir, dir, spi), 0);
        size_t n0, n1;
        float *s0 = tc_load(pln, "sample", &n0, NULL, NULL), *s1 = tc_load(spi, "sample", &n1, NULL, NULL);
        assert_true(s0 && s1 && n0 == n1);
        assert_memory_equal(s0, s1, n0 * sizeof(float));
        free(s0), free(s1);
        json_error_t je;
        json_t *root = json_load_file(stats, 0, &je);
        assert_non_null(root);
        json_t *recs = json_object_get(root, "probe"); /* one entry per site and batch element (sink/record.h) */
        double wmax = 0;
        int checked = 0;
        for (size_t i = 0; i < json_array_size(recs); i++) {
            json_t *r = json_array_get(recs, i);
            const char *site = json_string_value(json_object_get(r, "site"));
            assert_non_null(site);
            int blk = atoi(strchr(site, '.') + 1);
            const char *pre = !strncmp(site, "single.", 7) ? "single_" : "";
            char npre[64], npost[64], nki[64];
            snprintf(npre, sizeof npre, "%sqk_pre.%d", pre, blk);
            snprintf(npost, sizeof npost, "%sqk_post.%d", pre, blk);
            snprintf(nki, sizeof nki, "keyimp.%s", site);
            int64_t sh[4];
            int nd;
            float *qpre = tc_load(exp, npre, NULL, sh, &nd), *qpost = tc_load(exp, npost, NULL, NULL, NULL);
            float *ki = tc_load(spi, nki, NULL, NULL, NULL);
            assert_true(qpre && qpost && ki && nd == 3);
            const int B = (int)sh[0], H = (int)sh[1], Tk = (int)sh[2];
            const int b0 = (int)json_integer_value(json_object_get(r, "batch"));
            assert_true(b0 >= 0 && b0 < B && json_is_object(json_object_get(r, "spiral")));
            for (int b = b0; b < b0 + 1; b++) { /* the entry's batch element */
                json_t *e = json_object_get(r, "spiral");
                const int sink = (int)json_integer_value(json_object_get(e, "sink"));
                for (int j = 0; j < Tk; j++) assert_true(ki[(size_t)b * Tk + j] <= ki[(size_t)b * Tk + sink]);
                /* the image keys: what the JSON's budget_keys says, at the end of the key order (FLUX: text first) */
                const int nimg = (int)json_integer_value(json_object_get(json_object_get(e, "budget_keys"), "image"));
                assert_true(nimg > 0 && nimg < Tk);
                const float *src[2] = {qpre, qpost};
                const char *field[2] = {"qk_pre", "qk_post"};
                for (int w = 0; w < 2; w++) {
                    double ws = 0, wi = 0, ss = 0; /* ss: the mean square of batch element b's <q, k> means (the scale) */
                    for (int h = 0; h < H; h++) {
                        const float *row = src[w] + ((size_t)b * H + h) * Tk;
                        ws += row[sink] / H;
                        for (int j = Tk - nimg; j < Tk; j++) wi += row[j] / ((double)H * nimg);
                        for (int j = 0; j < Tk; j++) ss += (double)row[j] * row[j] / ((double)H * Tk);
                    }
                    const double gs = json_num(e, field[w], "sink"), gi = json_num(e, field[w], "image");
                    const double es = fabs(gs - ws) / sqrt(ss), ei = fabs(gi - wi) / sqrt(ss);
                    wmax = fmax(wmax, fmax(es, ei));
                    checked++;
                }
            }
            free(qpre), free(qpost), free(ki);
        }
        json_decref(root);
        printf("  %s: forward --spiral all: sample bit-identical; %d <q,k> pre/post means vs diffusers: worst error %.2e of the rms <q,k>\n",
               names[f], checked, wmax);
        assert_true(checked >= 8);
        assert_true(wmax <= 1e-4);
    }
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s/x.safetensors --spiral all",
                                tc_bin(), tc_path("fixtures/flux-tiny-a"), tc_path("fixtures/flux-tiny-a"), tmp), 0);
    assert_non_null(strstr(buf, "--spiral needs --probe"));
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s/x.safetensors --probe all --spiral nope",
                                tc_bin(), tc_path("fixtures/flux-tiny-a"), tc_path("fixtures/flux-tiny-a"), tmp), 0);
    assert_non_null(strstr(buf, "'nope'"));
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_site),      cmocka_unit_test(test_rope_site),     cmocka_unit_test(test_budget_types),
        cmocka_unit_test(test_flux_fixture),    cmocka_unit_test(test_sd3_sites), cmocka_unit_test(test_noop_and_threads), cmocka_unit_test(test_memory),
        cmocka_unit_test(test_fields_parse), cmocka_unit_test(test_cli_spiral),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
