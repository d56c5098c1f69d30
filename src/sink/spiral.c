#include "sink/spiral.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "sink/qkmean.h"
#include "text/txtok.h"

static const struct {
    const char *name;
    unsigned bit;
} FIELDS[] = {{"keyimp", SPIRAL_KEYIMP}, {"budget", SPIRAL_BUDGET}, {"energy", SPIRAL_ENERGY},
              {"qk", SPIRAL_QK},         {"norms", SPIRAL_NORMS},   {"act", SPIRAL_ACT}};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

int spiral_fields_parse(const char *s, unsigned *fields) {
    unsigned f = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        const size_t n = e ? (size_t)(e - p) : strlen(p);
        unsigned bit = 0;
        if (n == 3 && !strncmp(p, "all", 3)) bit = SPIRAL_ALL;
        for (size_t i = 0; i < N_FIELDS && !bit; i++)
            if (strlen(FIELDS[i].name) == n && !strncmp(p, FIELDS[i].name, n)) bit = FIELDS[i].bit;
        if (!bit)
            return ss_fail(SS_EARG, "spiral fields: '%.*s' is not one of keyimp, budget, energy, qk, norms, act, all", (int)n, p);
        f |= bit;
        if (!e) break;
        p = e + 1;
    }
    *fields = f;
    return 0;
}

/* ---- the site's layout ---- */

static const char *site_name(const ss_site *s, char *buf, size_t cap) { return ss_site_code_name(ss_site_code_of(s), buf, cap); }

static const char *want_name(int want) { return want == 0 ? "image" : want == 1 ? "text" : "all"; }

/* The query rows of `want` as one range, and each query span's weight (its rows inside it). */
static int query_rows(const ss_site *site, int want, int *r0, int *r1, double w[ATTN_MAX_QSPAN]) {
    char nm[48];
    if (ss_site_range(site, 0, want, r0, r1) < 0)
        return ss_fail(SS_EARG, "spiral: site %s: its %s query rows are not one contiguous range", site_name(site, nm, sizeof nm),
                       want_name(want));
    if (*r1 <= *r0)
        return ss_fail(SS_EARG, "spiral: site %s has no %s query rows", site_name(site, nm, sizeof nm), want_name(want));
    for (int g = 0; g < ATTN_MAX_QSPAN; g++) {
        w[g] = 0;
        if (g >= site->n_qspan) continue;
        const ss_span *sp = &site->qspan[g];
        if (sp->len > 0 && sp->start >= *r0 && sp->start + sp->len <= *r1) w[g] = sp->len;
    }
    return 0;
}

/* Key j's hidden row at batch b, or NULL when its span has none. */
static const float *hidden_row(const ss_site *s, int b, int j) {
    for (int i = 0; i < s->n_kspan; i++) {
        const ss_span *sp = &s->kspan[i];
        if (j < sp->start || j >= sp->start + sp->len) continue;
        if (!s->hidden[i].x) return NULL;
        return s->hidden[i].x + ((size_t)b * s->hidden[i].bstride + (size_t)(j - sp->start)) * s->hidden_ld;
    }
    return NULL;
}

static int hidden_supplied(const ss_site *s) {
    if (s->hidden_dim < 1 || s->hidden_ld < s->hidden_dim) return 0;
    for (int i = 0; i < s->n_kspan; i++)
        if (s->kspan[i].len > 0 && !s->hidden[i].x) return 0;
    return s->n_kspan > 0;
}

/* RoPE axes of a site: how many, or 0 for none; -1 (ss_err) when they do not tile the head. */
static int rope_axes(const ss_site *s, int dh) {
    int n = 0, sum = 0;
    while (n < SS_SITE_MAX_AXES && s->rope_dims[n] > 0) sum += s->rope_dims[n++];
    if (!n) return 0;
    char nm[48];
    if (sum != dh)
        return ss_fail(SS_EARG, "spiral: site %s: its RoPE axes have %d channels, not the head dim %d", site_name(s, nm, sizeof nm),
                       sum, dh);
    for (int a = 0; a < n; a++)
        if (s->rope_dims[a] % 2)
            return ss_fail(SS_EARG, "spiral: site %s: RoPE axis %d has an odd channel count %d", site_name(s, nm, sizeof nm), a,
                           s->rope_dims[a]);
    return n;
}

/* ---- the record ---- */

void spiral_rec_free(spiral_rec *r) {
    if (!r) return;
    void *p[] = {r->mu,        r->sink,        r->sink_type,   r->x_uniform,    r->x_image,      r->top_idx,     r->top_mu,
                 r->top_type,  r->budget,      r->budget_keys, r->e_sink,       r->e_img,        r->axis_sink,   r->axis_img,
                 r->low_sink,  r->low_img,     r->fac,         r->qk_pre_sink,  r->qk_pre_img,   r->qk_post_sink,
                 r->qk_post_img, r->vnorm_sink, r->vnorm_img,  r->knorm_sink,   r->knorm_img,    r->act_inf,
                 r->act_median, r->act_sink,   r->act_sink_ratio, r->act_max_tok, r->act_max_ratio, r->ch_idx, r->ch_val};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    free(r);
}

/* n elements of size sz, zeroed, into *p; returns 0 or -1. */
static int grab(void *p, size_t n, size_t sz) {
    void **pp = p;
    *pp = calloc(n ? n : 1, sz);
    return *pp ? 0 : -1;
}

/* The k largest of x over the unmasked keys, descending, ties: lower index first. */
static void top_select(const double *x, const uint8_t *kv, int Tk, int k, int *idx, double *val) {
    int n = 0;
    for (int j = 0; j < Tk; j++) {
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
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int spiral_qk_pre(float **out, const ss_site *site, const attn_args *a, int want) {
    int r0, r1;
    double w[ATTN_MAX_QSPAN];
    int rc = query_rows(site, want, &r0, &r1, w);
    if (rc) return rc;
    const int Tk = a->Tk ? a->Tk : a->T;
    *out = ss_malloc(sizeof(float) * (size_t)a->B * a->H * Tk);
    if (!*out) return SS_ENOMEM;
    if ((rc = ss_qk_mean(*out, a, r0, r1)) < 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* Per (b, h) sums over keys: the sink's and the image keys' pair energies and norms. */
enum { P_VS, P_VI, P_KS, P_KI, P_N };

static void head_sums(double *P, const attn_args *a, const ss_site *site, const int *sink, int energy, int n_pairs, int bh) {
    const int H = a->H, dh = a->dh, Tk = a->Tk ? a->Tk : a->T, b = bh / H, h = bh % H;
    const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
    double *es = P + P_N, *ei = es + n_pairs;
    for (int j = 0; j < Tk; j++) {
        const int img = ss_site_key_type(site, b, j) == SS_TOK_IMAGE && (!kv || kv[j]);
        if (!img && j != sink[b]) continue;
        const float *k = a->k + ((size_t)b * Tk + j) * a->ld + (size_t)h * dh;
        const float *v = a->v + ((size_t)b * Tk + j) * a->ld + (size_t)h * dh;
        double kk = 0, vv = 0;
        for (int d = 0; d < dh; d++) {
            kk += (double)k[d] * k[d];
            vv += (double)v[d] * v[d];
        }
        if (j == sink[b]) {
            P[P_KS] = sqrt(kk);
            P[P_VS] = sqrt(vv);
        }
        if (img) {
            P[P_KI] += sqrt(kk);
            P[P_VI] += sqrt(vv);
        }
        for (int c = 0; energy && c < n_pairs; c++) {
            const double e = (double)k[2 * c] * k[2 * c] + (double)k[2 * c + 1] * k[2 * c + 1];
            if (j == sink[b]) es[c] = e;
            if (img) ei[c] += e;
        }
    }
}

/* The mean over heads of x[b, h, sink] and of the mean over image keys of x[b, h, j]. */
static void sink_vs_image(float *s_out, float *i_out, const float *x, const attn_args *a, const ss_site *site, const int *sink,
                          const int *n_img) {
    const int B = a->B, H = a->H, Tk = a->Tk ? a->Tk : a->T;
    for (int b = 0; b < B; b++) {
        const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
        double ss = 0, si = 0;
        for (int h = 0; h < H; h++) {
            const float *xr = x + ((size_t)b * H + h) * Tk;
            double acc = 0;
            for (int j = 0; j < Tk; j++)
                if ((!kv || kv[j]) && ss_site_key_type(site, b, j) == SS_TOK_IMAGE) acc += xr[j];
            ss += xr[sink[b]];
            si += n_img[b] ? acc / n_img[b] : NAN;
        }
        s_out[b] = (float)(ss / H);
        i_out[b] = (float)(si / H);
    }
}

static int measure_act(spiral_rec *r, const ss_site *site, const attn_args *a, size_t *work) {
    const int B = a->B, Tk = r->Tk, D = site->hidden_dim;
    r->D = D;
    r->nch = D < SPIRAL_TOP_CH ? D : SPIRAL_TOP_CH;
    if (grab(&r->act_inf, (size_t)B * Tk, sizeof(float)) || grab(&r->act_median, B, sizeof(float)) ||
        grab(&r->act_sink, B, sizeof(float)) || grab(&r->act_sink_ratio, B, sizeof(float)) ||
        grab(&r->act_max_tok, B, sizeof(int)) || grab(&r->act_max_ratio, B, sizeof(float)) ||
        grab(&r->ch_idx, (size_t)B * r->nch, sizeof(int)) || grab(&r->ch_val, (size_t)B * r->nch, sizeof(float)))
        return SS_ENOMEM;
    float *tmp = ss_malloc(sizeof(float) * (size_t)Tk);
    double *colmax = ss_malloc(sizeof(double) * (size_t)D), val[SPIRAL_TOP_CH];
    if (!tmp || !colmax) {
        free(tmp);
        free(colmax);
        return SS_ENOMEM;
    }
    *work += sizeof(float) * (size_t)Tk + sizeof(double) * (size_t)D;
    for (int b = 0; b < B; b++) {
        const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
        float *inf = r->act_inf + (size_t)b * Tk;
        for (int c = 0; c < D; c++) colmax[c] = 0;
        int n = 0, mx = -1;
        for (int j = 0; j < Tk; j++) {
            const float *x = hidden_row(site, b, j);
            float m = 0;
            for (int c = 0; c < D; c++) {
                const float ax = fabsf(x[c]);
                m = ax > m ? ax : m;
                if ((!kv || kv[j]) && ax > colmax[c]) colmax[c] = ax;
            }
            inf[j] = m;
            if (kv && !kv[j]) continue;
            tmp[n++] = m;
            if (mx < 0 || m > inf[mx]) mx = j;
        }
        qsort(tmp, (size_t)n, sizeof(float), cmp_float);
        const double med = n % 2 ? tmp[n / 2] : 0.5 * ((double)tmp[n / 2 - 1] + tmp[n / 2]);
        r->act_median[b] = (float)med;
        r->act_sink[b] = inf[r->sink[b]];
        r->act_sink_ratio[b] = (float)(inf[r->sink[b]] / med);
        r->act_max_tok[b] = mx;
        r->act_max_ratio[b] = (float)(inf[mx] / med);
        top_select(colmax, NULL, D, r->nch, r->ch_idx + (size_t)b * r->nch, val);
        for (int t = 0; t < r->nch; t++) r->ch_val[(size_t)b * r->nch + t] = (float)val[t];
    }
    free(tmp);
    free(colmax);
    return 0;
}

static int measure(spiral_rec *r, const ss_site *site, const attn_args *a, const attn_stats *st, int want,
                   const float *qk_pre, double *mu_d, int *n_img) {
    const int B = a->B, H = a->H, dh = a->dh, Tk = r->Tk;
    char nm[48];
    int r0, r1, rc;
    double w[ATTN_MAX_QSPAN];
    if ((rc = query_rows(site, want, &r0, &r1, w))) return rc;
    for (int g = 0; g < ATTN_MAX_QSPAN; g++)
        if (w[g] > 0 && (g >= a->n_qspan || !st->mass[g]))
            return ss_fail(SS_EARG, "spiral: site %s: the mass of query span %d was not measured", site_name(site, nm, sizeof nm), g);
    const int n_axes = rope_axes(site, dh);
    if (n_axes < 0) return n_axes;
    if (!n_axes) r->fields &= ~(unsigned)SPIRAL_ENERGY;
    r->n_axes = n_axes;
    for (int x = 0; x < n_axes; x++) r->axes_dims[x] = site->rope_dims[x];
    if (!hidden_supplied(site)) r->fields &= ~(unsigned)SPIRAL_ACT;
    r->has_pre = (r->fields & SPIRAL_QK) && qk_pre && n_axes > 0;
    size_t work = sizeof(double) * (size_t)Tk + (qk_pre ? sizeof(float) * (size_t)B * H * Tk : 0);

    /* Key Importance and the sink */
    int ntop = SPIRAL_TOP_KEYS < Tk ? SPIRAL_TOP_KEYS : Tk;
    for (int b = 0; b < B; b++) {
        int nv = 0;
        for (int j = 0; j < Tk; j++) nv += !a->key_valid || a->key_valid[(size_t)b * Tk + j];
        ntop = nv < ntop ? nv : ntop;
    }
    if (ntop < 1) return ss_fail(SS_EARG, "spiral: site %s: every key of a batch element is masked", site_name(site, nm, sizeof nm));
    r->ntop = ntop;
    if (grab(&r->mu, (size_t)B * Tk, sizeof(float)) || grab(&r->sink, B, sizeof(int)) || grab(&r->sink_type, B, 1) ||
        grab(&r->x_uniform, B, sizeof(float)) || grab(&r->x_image, B, sizeof(float)) ||
        grab(&r->top_idx, (size_t)B * ntop, sizeof(int)) || grab(&r->top_mu, (size_t)B * ntop, sizeof(float)) ||
        grab(&r->top_type, (size_t)B * ntop, 1) || grab(&r->budget, (size_t)B * SS_TOK_N, sizeof(float)) ||
        grab(&r->budget_keys, (size_t)B * SS_TOK_N, sizeof(int)))
        return SS_ENOMEM;
    const double rows = (double)(r1 - r0) * H;
    double topv[SPIRAL_TOP_KEYS];
    for (int b = 0; b < B; b++) {
        const uint8_t *kv = a->key_valid ? a->key_valid + (size_t)b * Tk : NULL;
        for (int j = 0; j < Tk; j++) {
            double acc = 0;
            for (int h = 0; h < H; h++)
                for (int g = 0; g < ATTN_MAX_QSPAN; g++)
                    if (w[g] > 0) acc += w[g] * st->mass[g][((size_t)b * H + h) * Tk + j];
            mu_d[j] = acc / rows;
            r->mu[(size_t)b * Tk + j] = (float)mu_d[j];
        }
        int *ti = r->top_idx + (size_t)b * ntop;
        top_select(mu_d, kv, Tk, ntop, ti, topv);
        double bud[SS_TOK_N] = {0};
        int nv = 0, *cnt = r->budget_keys + (size_t)b * SS_TOK_N;
        for (int j = 0; j < Tk; j++) {
            if (kv && !kv[j]) continue;
            const ss_tok t = ss_site_key_type(site, b, j);
            const int tt = (unsigned)t < SS_TOK_N ? (int)t : SS_TOK_OTHER;
            bud[tt] += mu_d[j];
            cnt[tt]++;
            nv++;
        }
        for (int t = 0; t < ntop; t++) {
            r->top_mu[(size_t)b * ntop + t] = (float)topv[t];
            r->top_type[(size_t)b * ntop + t] = (uint8_t)ss_site_key_type(site, b, ti[t]);
        }
        for (int t = 0; t < SS_TOK_N; t++) r->budget[(size_t)b * SS_TOK_N + t] = (float)bud[t];
        const int s = ti[0];
        r->sink[b] = s;
        r->sink_type[b] = (uint8_t)ss_site_key_type(site, b, s);
        n_img[b] = cnt[SS_TOK_IMAGE];
        r->x_uniform[b] = (float)(mu_d[s] * nv);
        r->x_image[b] = n_img[b] ? (float)(mu_d[s] / (bud[SS_TOK_IMAGE] / n_img[b])) : NAN;
    }

    /* energies and norms: per (b, h) sums, reduced over heads in order */
    const int energy = (r->fields & SPIRAL_ENERGY) != 0, n_pairs = dh / 2;
    if (energy || (r->fields & SPIRAL_NORMS)) {
        const int np = energy ? n_pairs : 0, stride = P_N + 2 * np;
        double *P = ss_calloc((size_t)B * H * stride, sizeof(double));
        if (!P) return SS_ENOMEM;
        work += sizeof(double) * (size_t)B * H * stride;
#pragma omp parallel for schedule(static) if ((size_t)B * H * Tk * dh > (1u << 18))
        for (int bh = 0; bh < B * H; bh++) head_sums(P + (size_t)bh * stride, a, site, r->sink, energy, np, bh);
        if (r->fields & SPIRAL_NORMS) {
            if (grab(&r->vnorm_sink, B, sizeof(float)) || grab(&r->vnorm_img, B, sizeof(float)) ||
                grab(&r->knorm_sink, B, sizeof(float)) || grab(&r->knorm_img, B, sizeof(float))) {
                free(P);
                return SS_ENOMEM;
            }
            for (int b = 0; b < B; b++) {
                double s[P_N] = {0};
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < P_N; i++) s[i] += P[((size_t)b * H + h) * stride + i];
                const double ni = n_img[b] ? n_img[b] : NAN;
                r->vnorm_sink[b] = (float)(s[P_VS] / H);
                r->knorm_sink[b] = (float)(s[P_KS] / H);
                r->vnorm_img[b] = (float)(s[P_VI] / ni / H);
                r->knorm_img[b] = (float)(s[P_KI] / ni / H);
            }
        }
        if (energy) {
            r->n_pairs = n_pairs;
            if (grab(&r->e_sink, (size_t)B * n_pairs, sizeof(float)) || grab(&r->e_img, (size_t)B * n_pairs, sizeof(float)) ||
                grab(&r->axis_sink, (size_t)B * n_axes, sizeof(float)) || grab(&r->axis_img, (size_t)B * n_axes, sizeof(float)) ||
                grab(&r->low_sink, B, sizeof(float)) || grab(&r->low_img, B, sizeof(float)) || grab(&r->fac, B, sizeof(float))) {
                free(P);
                return SS_ENOMEM;
            }
            for (int b = 0; b < B; b++) {
                double tot[2] = {0, 0}, low[2] = {0, 0}, ax[2][SS_SITE_MAX_AXES] = {{0}};
                const double ni = n_img[b] ? n_img[b] : NAN;
                for (int x = 0, p0 = 0; x < n_axes; p0 += site->rope_dims[x++] / 2)
                    for (int i = 0; i < site->rope_dims[x] / 2; i++) {
                        const int c = p0 + i;
                        double e[2] = {0, 0};
                        for (int h = 0; h < H; h++) {
                            const double *Ph = P + ((size_t)b * H + h) * stride + P_N;
                            e[0] += Ph[c];
                            e[1] += Ph[n_pairs + c];
                        }
                        e[0] /= H;
                        e[1] /= H * ni;
                        r->e_sink[(size_t)b * n_pairs + c] = (float)e[0];
                        r->e_img[(size_t)b * n_pairs + c] = (float)e[1];
                        for (int s = 0; s < 2; s++) {
                            tot[s] += e[s];
                            ax[s][x] += e[s];
                            if (4 * i >= site->rope_dims[x]) low[s] += e[s]; /* omega_i <= theta^(-1/2) */
                        }
                    }
                for (int x = 0; x < n_axes; x++) {
                    r->axis_sink[(size_t)b * n_axes + x] = (float)(ax[0][x] / tot[0]);
                    r->axis_img[(size_t)b * n_axes + x] = (float)(ax[1][x] / tot[1]);
                }
                r->low_sink[b] = (float)(low[0] / tot[0]);
                r->low_img[b] = (float)(low[1] / tot[1]);
                r->fac[b] = (float)((low[0] / tot[0]) / (low[1] / tot[1]));
            }
        }
        free(P);
    }

    /* mean <q, k>: post from the q and k the attention sees, pre from the rope_qk hook */
    if (r->fields & SPIRAL_QK) {
        float *qk = ss_malloc(sizeof(float) * (size_t)B * H * Tk);
        if (!qk || grab(&r->qk_post_sink, B, sizeof(float)) || grab(&r->qk_post_img, B, sizeof(float))) {
            free(qk);
            return SS_ENOMEM;
        }
        work += sizeof(float) * (size_t)B * H * Tk;
        if ((rc = ss_qk_mean(qk, a, r0, r1)) < 0) {
            free(qk);
            return rc;
        }
        sink_vs_image(r->qk_post_sink, r->qk_post_img, qk, a, site, r->sink, n_img);
        free(qk);
        if (r->has_pre) {
            if (grab(&r->qk_pre_sink, B, sizeof(float)) || grab(&r->qk_pre_img, B, sizeof(float))) return SS_ENOMEM;
            sink_vs_image(r->qk_pre_sink, r->qk_pre_img, qk_pre, a, site, r->sink, n_img);
        }
    }
    if ((r->fields & SPIRAL_ACT) && (rc = measure_act(r, site, a, &work)) < 0) return rc;
    r->work_bytes = work;
    return 0;
}

int spiral_measure(spiral_rec **out, unsigned fields, const ss_site *site, const attn_args *a, const attn_stats *st,
                   int want, const float *qk_pre) {
    *out = NULL;
    const int Tk = a->Tk ? a->Tk : a->T;
    char nm[48];
    if (Tk != site->Tk || a->T != site->Tq)
        return ss_fail(SS_EARG, "spiral: site %s: the attention has %d x %d tokens, the site %d x %d",
                       site_name(site, nm, sizeof nm), a->T, Tk, site->Tq, site->Tk);
    if (a->dh % 2) return ss_fail(SS_EARG, "spiral: site %s: odd head dim %d", site_name(site, nm, sizeof nm), a->dh);
    spiral_rec *r = ss_calloc(1, sizeof *r);
    double *mu_d = ss_malloc(sizeof(double) * (size_t)(Tk ? Tk : 1));
    int *n_img = ss_malloc(sizeof(int) * (size_t)a->B);
    if (!r || !mu_d || !n_img) {
        free(r);
        free(mu_d);
        free(n_img);
        return SS_ENOMEM;
    }
    r->B = a->B;
    r->H = a->H;
    r->Tk = Tk;
    r->dh = a->dh;
    r->fields = (fields & SPIRAL_ALL) | SPIRAL_KEYIMP;
    int rc = measure(r, site, a, st, want, qk_pre, mu_d, n_img);
    free(mu_d);
    free(n_img);
    if (rc < 0) {
        spiral_rec_free(r);
        return rc == SS_ENOMEM ? ss_fail(SS_ENOMEM, "spiral: site %s: out of memory", site_name(site, nm, sizeof nm)) : rc;
    }
    *out = r;
    return 0;
}

void spiral_rec_shrink(spiral_rec *r) {
    free(r->mu);
    free(r->act_inf);
    r->mu = r->act_inf = NULL;
}

uint8_t spiral_tok_of_txtok(int t) {
    switch (t) {
    case TT_WORD: return SS_TOK_WORD;
    case TT_COMMA: return SS_TOK_COMMA;
    case TT_BOS: return SS_TOK_BOS;
    case TT_EOS: return SS_TOK_EOS;
    case TT_PAD: return SS_TOK_PAD;
    default: return SS_TOK_OTHER;
    }
}

/* ---- output ---- */

static json_t *jreal(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *farr(const float *x, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, jreal(x[i]));
    return a;
}

static json_t *iarr(const int *x, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(x[i]));
    return a;
}

static json_t *sink_img(double s, double i) { return json_pack("{s:o, s:o}", "sink", jreal(s), "image", jreal(i)); }

/* batch element b's fields */
static json_t *one_b(const spiral_rec *r, int b) {
    json_t *o = json_object();
    json_object_set_new(o, "sink", json_integer(r->sink[b]));
    json_object_set_new(o, "sink_type", json_string(ss_tok_name((ss_tok)r->sink_type[b])));
    json_object_set_new(o, "ki_x_uniform", jreal(r->x_uniform[b]));
    json_object_set_new(o, "ki_x_image", jreal(r->x_image[b]));
    json_t *ty = json_array();
    for (int t = 0; t < r->ntop; t++) json_array_append_new(ty, json_string(ss_tok_name((ss_tok)r->top_type[(size_t)b * r->ntop + t])));
    json_object_set_new(o, "top_keys", iarr(r->top_idx + (size_t)b * r->ntop, (size_t)r->ntop));
    json_object_set_new(o, "top_mu", farr(r->top_mu + (size_t)b * r->ntop, (size_t)r->ntop));
    json_object_set_new(o, "top_types", ty);
    if (r->fields & SPIRAL_BUDGET) {
        json_t *bu = json_object(), *bk = json_object();
        for (int t = 0; t < SS_TOK_N; t++) {
            const int n = r->budget_keys[(size_t)b * SS_TOK_N + t];
            if (!n) continue;
            json_object_set_new(bu, ss_tok_name((ss_tok)t), jreal(r->budget[(size_t)b * SS_TOK_N + t]));
            json_object_set_new(bk, ss_tok_name((ss_tok)t), json_integer(n));
        }
        json_object_set_new(o, "budget", bu);
        json_object_set_new(o, "budget_keys", bk);
    }
    if (r->fields & SPIRAL_ENERGY) {
        json_t *e = json_object();
        json_object_set_new(e, "axes_dims", iarr(r->axes_dims, (size_t)r->n_axes));
        json_object_set_new(e, "pair_energy_sink", farr(r->e_sink + (size_t)b * r->n_pairs, (size_t)r->n_pairs));
        json_object_set_new(e, "pair_energy_image", farr(r->e_img + (size_t)b * r->n_pairs, (size_t)r->n_pairs));
        json_object_set_new(e, "axis_share_sink", farr(r->axis_sink + (size_t)b * r->n_axes, (size_t)r->n_axes));
        json_object_set_new(e, "axis_share_image", farr(r->axis_img + (size_t)b * r->n_axes, (size_t)r->n_axes));
        json_object_set_new(e, "low_share_sink", jreal(r->low_sink[b]));
        json_object_set_new(e, "low_share_image", jreal(r->low_img[b]));
        json_object_set_new(e, "fac", jreal(r->fac[b]));
        json_object_set_new(o, "energy", e);
    }
    if (r->fields & SPIRAL_QK) {
        json_object_set_new(o, r->n_axes ? "qk_post" : "qk", sink_img(r->qk_post_sink[b], r->qk_post_img[b]));
        if (r->has_pre) json_object_set_new(o, "qk_pre", sink_img(r->qk_pre_sink[b], r->qk_pre_img[b]));
    }
    if (r->fields & SPIRAL_NORMS) {
        json_object_set_new(o, "v_norm", sink_img(r->vnorm_sink[b], r->vnorm_img[b]));
        json_object_set_new(o, "k_norm", sink_img(r->knorm_sink[b], r->knorm_img[b]));
    }
    if (r->fields & SPIRAL_ACT) {
        json_t *m = json_object();
        json_object_set_new(m, "sink", jreal(r->act_sink[b]));
        json_object_set_new(m, "median", jreal(r->act_median[b]));
        json_object_set_new(m, "sink_ratio", jreal(r->act_sink_ratio[b]));
        json_object_set_new(m, "max_token", json_integer(r->act_max_tok[b]));
        json_object_set_new(m, "max_ratio", jreal(r->act_max_ratio[b]));
        json_object_set_new(m, "top_channels", iarr(r->ch_idx + (size_t)b * r->nch, (size_t)r->nch));
        json_object_set_new(m, "top_channel_max", farr(r->ch_val + (size_t)b * r->nch, (size_t)r->nch));
        json_object_set_new(o, "act", m);
    }
    return o;
}

void *spiral_rec_to_json(const spiral_rec *r, int b) {
    if (b >= 0) return b < r->B ? one_b(r, b) : json_null();
    json_t *a = json_array();
    for (int i = 0; i < r->B; i++) json_array_append_new(a, one_b(r, i));
    return a;
}

int spiral_rec_tensors(const spiral_rec *r, const char *site,
                       int (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data), void *ctx) {
    struct {
        const char *name;
        unsigned need;
        const float *x;
        int64_t n;
    } t[] = {{"keyimp", SPIRAL_KEYIMP, r->mu, r->Tk},          {"budget", SPIRAL_BUDGET, r->budget, SS_TOK_N},
             {"kenergy_sink", SPIRAL_ENERGY, r->e_sink, r->n_pairs}, {"kenergy_image", SPIRAL_ENERGY, r->e_img, r->n_pairs},
             {"act_inf", SPIRAL_ACT, r->act_inf, r->Tk}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!(r->fields & t[i].need) || !t[i].x) continue;
        char name[96];
        snprintf(name, sizeof name, "%s.%s", t[i].name, site);
        const int64_t shape[2] = {r->B, t[i].n};
        int rc = fn(ctx, name, 2, shape, t[i].x);
        if (rc < 0) return rc;
    }
    return 0;
}
