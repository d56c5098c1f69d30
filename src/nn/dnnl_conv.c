/* dnnl_conv: fp32 convolution through oneDNN's direct convolution, in fixed row bands (dnnl_conv.h). */
#include "nn/dnnl_conv.h"

#include "nn/dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t g_engine; /* ss_dnnl_engine() (dnnl.h) */
static int g_enabled = 1;

/* One band shape: compared with memcmp (zeroed before filling). */
typedef struct {
    int cin, cout, kh, kw, s, bias;
    int hin, win;          /* input slice rows and columns */
    long ld_in_plane, ld_in_row;
    int pt, pb, pl, pr;    /* zero padding of the slice */
    int hout, wout;
    long ld_out_plane;
} ckey;

typedef struct {
    ckey k;
    int ok; /* 0: not usable (impl says why) */
    dnnl_primitive_t conv, rin, rout;
    dnnl_memory_desc_t user_src, src, wts, bias, dst, user_dst;
    size_t src_bytes, dst_bytes, scratch_bytes;
    char impl[160];
} centry;

typedef struct {
    const float *w;
    dnnl_memory_desc_t md;
    void *data;
    size_t bytes;
} wentry;

static centry **g_conv;
static int g_nconv, g_capconv;
static wentry *g_w;
static int g_nw, g_capw;

static long g_band = SS_DNNL_CONV_BAND_FLOATS;

void ss_dnnl_conv_enable(int on) { g_enabled = on; }
void ss_dnnl_conv_set_band_floats(long n) { g_band = n > 0 ? n : SS_DNNL_CONV_BAND_FLOATS; }

static int engine(void) {
    if (!g_engine) g_engine = ss_dnnl_engine();
    return g_engine ? 0 : -1;
}

static int md4(dnnl_memory_desc_t *md, int n1, int n2, int n3, long s0, long s1, long s2) {
    const dnnl_dims_t d = {1, n1, n2, n3}, st = {s0 * n1, s0, s1, s2};
    return dnnl_memory_desc_init_by_strides(md, 4, d, dnnl_f32, st) == dnnl_success ? 0 : -1;
}
static int md_any(dnnl_memory_desc_t *md, int n1, int n2, int n3) {
    const dnnl_dims_t d = {1, n1, n2, n3};
    return dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_format_tag_any) == dnnl_success ? 0 : -1;
}

static int reorder_create(dnnl_primitive_t *p, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, from, g_engine, to, g_engine, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(p, pd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? 0 : -1;
}

/* Creates the primitives of e->k (lock held, under one OpenMP thread). */
static void entry_create(centry *e) {
    const ckey *k = &e->k;
    e->ok = 0;
    if (engine() < 0) {
        snprintf(e->impl, sizeof e->impl, "unavailable (no oneDNN CPU engine)");
        return;
    }
    dnnl_memory_desc_t src_any, wts_any, dst_any;
    const dnnl_dims_t wd = {k->cout, k->cin, k->kh, k->kw}, bd = {k->cout};
    if (md4(&e->user_src, k->cin, k->hin, k->win, k->ld_in_plane, k->ld_in_row, 1) ||
        md4(&e->user_dst, k->cout, k->hout, k->wout, k->ld_out_plane, k->wout, 1) ||
        md_any(&src_any, k->cin, k->hin, k->win) || md_any(&dst_any, k->cout, k->hout, k->wout) ||
        dnnl_memory_desc_init_by_tag(&wts_any, 4, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&e->bias, 1, bd, dnnl_f32, dnnl_a) != dnnl_success) {
        snprintf(e->impl, sizeof e->impl, "unavailable (describing the operands failed)");
        return;
    }
    const dnnl_dims_t st = {k->s, k->s}, pl = {k->pt, k->pl}, pr = {k->pb, k->pr};
    dnnl_convolution_desc_t d;
    dnnl_status_t s = dnnl_convolution_forward_desc_init(&d, dnnl_forward_inference, dnnl_convolution_direct, &src_any,
                                                         &wts_any, k->bias ? &e->bias : NULL, &dst_any, st, pl, pr);
    if (s != dnnl_success) {
        snprintf(e->impl, sizeof e->impl, "unavailable (convolution descriptor: %d)", (int)s);
        return;
    }
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) {
        snprintf(e->impl, sizeof e->impl, "unavailable (attributes)");
        return;
    }
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_primitive_desc_t pd = NULL;
    s = dnnl_primitive_desc_create(&pd, &d, attr, g_engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        snprintf(e->impl, sizeof e->impl, "unavailable (oneDNN: no f32 direct convolution, status %d)", (int)s);
        return;
    }
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) impl = "?";
    if (!strncmp(impl, "ref", 3)) { /* oneDNN's reference loops: slower than im2col + sgemm */
        snprintf(e->impl, sizeof e->impl, "unavailable (oneDNN offers only %.60s)", impl);
        dnnl_primitive_desc_destroy(pd);
        return;
    }
    snprintf(e->impl, sizeof e->impl, "%s", impl);
    e->src = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    e->wts = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    e->dst = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    e->src_bytes = dnnl_memory_desc_get_size(&e->src);
    e->dst_bytes = dnnl_memory_desc_get_size(&e->dst);
    s = dnnl_primitive_create(&e->conv, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success || reorder_create(&e->rin, &e->user_src, &e->src) ||
        reorder_create(&e->rout, &e->dst, &e->user_dst)) {
        snprintf(e->impl, sizeof e->impl, "unavailable (creating the primitives failed)");
        return;
    }
    e->ok = 1;
}

/* The cache entry of k (created on first use; entries never move or go). NULL: out of memory. */
static const centry *lookup(const ckey *k) {
    pthread_mutex_lock(&g_lock);
    const centry *r = NULL;
    for (int i = 0; i < g_nconv; i++)
        if (!memcmp(&g_conv[i]->k, k, sizeof *k)) {
            r = g_conv[i];
            goto done;
        }
    if (g_nconv == g_capconv) {
        const int cap = g_capconv ? 2 * g_capconv : 64;
        centry **c = realloc(g_conv, sizeof *c * (size_t)cap);
        if (!c) goto done;
        g_conv = c, g_capconv = cap;
    }
    centry *e = calloc(1, sizeof *e);
    if (!e) goto done;
    e->k = *k;
    /* oneDNN sizes a primitive's blocking by the thread count it is created under: one */
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    entry_create(e);
    omp_set_num_threads(saved);
    g_conv[g_nconv++] = e;
    r = e;
done:
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* The weights w in layout md, reordered on first use. NULL on failure. */
static const void *weights(const float *w, const ss_conv2d *c, const dnnl_memory_desc_t *md) {
    pthread_mutex_lock(&g_lock);
    const void *r = NULL;
    for (int i = 0; i < g_nw; i++)
        if (g_w[i].w == w && dnnl_memory_desc_equal(&g_w[i].md, md)) {
            r = g_w[i].data;
            goto done;
        }
    if (g_nw == g_capw) {
        const int cap = g_capw ? 2 * g_capw : 64;
        wentry *n = realloc(g_w, sizeof *n * (size_t)cap);
        if (!n) goto done;
        g_w = n, g_capw = cap;
    }
    const size_t bytes = dnnl_memory_desc_get_size(md);
    void *data = malloc(bytes ? bytes : 1);
    if (!data) goto done;
    dnnl_memory_desc_t umd;
    const dnnl_dims_t wd = {c->cout, c->cin, c->kh, c->kw};
    dnnl_primitive_t re = NULL;
    dnnl_stream_t st = NULL;
    dnnl_memory_t mu = NULL, mw = NULL;
    int ok = dnnl_memory_desc_init_by_tag(&umd, 4, wd, dnnl_f32, dnnl_oihw) == dnnl_success && !reorder_create(&re, &umd, md) &&
             dnnl_stream_create(&st, g_engine, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_memory_create(&mu, &umd, g_engine, (void *)w) == dnnl_success &&
             dnnl_memory_create(&mw, md, g_engine, data) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, mu}, {DNNL_ARG_TO, mw}};
        ok = dnnl_primitive_execute(re, st, 2, a) == dnnl_success && dnnl_stream_wait(st) == dnnl_success;
    }
    if (mu) dnnl_memory_destroy(mu);
    if (mw) dnnl_memory_destroy(mw);
    if (st) dnnl_stream_destroy(st);
    if (re) dnnl_primitive_destroy(re);
    if (!ok) {
        free(data);
        goto done;
    }
    g_w[g_nw++] = (wentry){.w = w, .md = *md, .data = data, .bytes = bytes};
    r = data;
done:
    pthread_mutex_unlock(&g_lock);
    return r;
}

void ss_dnnl_conv_forget(const float *w) {
    if (!w) return;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nw;)
        if (g_w[i].w == w) {
            free(g_w[i].data);
            g_w[i] = g_w[--g_nw];
        } else {
            i++;
        }
    pthread_mutex_unlock(&g_lock);
}

size_t ss_dnnl_conv_weight_bytes(void) {
    pthread_mutex_lock(&g_lock);
    size_t n = 0;
    for (int i = 0; i < g_nw; i++) n += g_w[i].bytes;
    pthread_mutex_unlock(&g_lock);
    return n;
}

int ss_dnnl_conv_band_rows(const ss_conv2d *c, int H, int W, int pad_end) {
    const int Ho = conv_out_size(H + pad_end, c->kh, c->stride, c->pad);
    const int Wo = conv_out_size(W + pad_end, c->kw, c->stride, c->pad);
    if (Ho <= 0 || Wo <= 0) return 0;
    long r = g_band / ((long)c->cout * Wo);
    const long ri = g_band / ((long)c->cin * W * c->stride);
    if (ri < r) r = ri;
    if (r < 1) r = 1;
    if (r > Ho) r = Ho;
    const long nb = (Ho + r - 1) / r; /* equal bands */
    return (int)((Ho + nb - 1) / nb);
}

/* The key of the band of output rows [o0, o0 + hb). -1 when the band sees no input. */
static int band_key(ckey *k, const ss_conv2d *c, int H, int W, int Ho, int Wo, int o0, int hb) {
    memset(k, 0, sizeof *k);
    const int s = c->stride, p = c->pad;
    const int r_lo = o0 * s - p, r_hi = (o0 + hb - 1) * s - p + c->kh - 1;
    const int lo = r_lo < 0 ? 0 : r_lo, hi = r_hi > H - 1 ? H - 1 : r_hi;
    int win = (Wo - 1) * s + c->kw - p; /* the columns the last output reads, from 0 */
    if (win > W) win = W;
    if (hi < lo || win <= 0) return -1;
    k->cin = c->cin, k->cout = c->cout, k->kh = c->kh, k->kw = c->kw, k->s = s, k->bias = c->b != NULL;
    k->hin = hi - lo + 1, k->win = win;
    k->ld_in_plane = (long)H * W, k->ld_in_row = W;
    k->pt = lo - r_lo, k->pb = r_hi - hi, k->pl = p, k->pr = (Wo - 1) * s + c->kw - p - win;
    k->hout = hb, k->wout = Wo;
    k->ld_out_plane = (long)Ho * Wo;
    return lo;
}

const char *ss_dnnl_conv_impl(const ss_conv2d *c, int H, int W, int pad_end) {
    const int Ho = conv_out_size(H + pad_end, c->kh, c->stride, c->pad);
    const int Wo = conv_out_size(W + pad_end, c->kw, c->stride, c->pad);
    const int hb = ss_dnnl_conv_band_rows(c, H, W, pad_end);
    ckey k;
    if (hb <= 0 || band_key(&k, c, H, W, Ho, Wo, 0, hb) < 0) return "unavailable (empty output)";
    const centry *e = lookup(&k);
    return e ? e->impl : "unavailable (out of memory)";
}

typedef struct {
    void *p;
    size_t n;
} buf;
static int grow(buf *b, size_t n) {
    if (n <= b->n) return 0;
    free(b->p);
    b->p = malloc(n);
    b->n = b->p ? n : 0;
    return b->p ? 0 : -1;
}

/* One band on the calling thread. 0 or -1. */
static int run_band(const centry *e, const void *wts, const float *bias, const float *x, float *y, dnnl_stream_t st,
                    buf *bs, buf *bd, buf *bp) {
    if (grow(bs, e->src_bytes) || grow(bd, e->dst_bytes) || (e->scratch_bytes && grow(bp, e->scratch_bytes))) return -1;
    dnnl_memory_desc_t spmd;
    const dnnl_dims_t sd = {(dnnl_dim_t)(e->scratch_bytes ? e->scratch_bytes : 1)};
    dnnl_memory_desc_init_by_tag(&spmd, 1, sd, dnnl_u8, dnnl_a);
    dnnl_memory_t mus = NULL, ms = NULL, mw = NULL, mb = NULL, md = NULL, mud = NULL, mp = NULL;
    int ok = dnnl_memory_create(&mus, &e->user_src, g_engine, (void *)x) == dnnl_success &&
             dnnl_memory_create(&ms, &e->src, g_engine, bs->p) == dnnl_success &&
             dnnl_memory_create(&mw, &e->wts, g_engine, (void *)wts) == dnnl_success &&
             (!bias || dnnl_memory_create(&mb, &e->bias, g_engine, (void *)bias) == dnnl_success) &&
             dnnl_memory_create(&md, &e->dst, g_engine, bd->p) == dnnl_success &&
             dnnl_memory_create(&mud, &e->user_dst, g_engine, y) == dnnl_success &&
             (!e->scratch_bytes || dnnl_memory_create(&mp, &spmd, g_engine, bp->p) == dnnl_success);
    if (ok) {
        dnnl_exec_arg_t ai[2] = {{DNNL_ARG_FROM, mus}, {DNNL_ARG_TO, ms}};
        dnnl_exec_arg_t ac[5] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
        int n = 3;
        if (mb) ac[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
        if (mp) ac[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mp};
        dnnl_exec_arg_t ao[2] = {{DNNL_ARG_FROM, md}, {DNNL_ARG_TO, mud}};
        ok = dnnl_primitive_execute(e->rin, st, 2, ai) == dnnl_success &&
             dnnl_primitive_execute(e->conv, st, n, ac) == dnnl_success &&
             dnnl_primitive_execute(e->rout, st, 2, ao) == dnnl_success && dnnl_stream_wait(st) == dnnl_success;
    }
    dnnl_memory_t all[7] = {mus, ms, mw, mb, md, mud, mp};
    for (int i = 0; i < 7; i++)
        if (all[i]) dnnl_memory_destroy(all[i]);
    return ok ? 0 : -1;
}

int ss_dnnl_conv2d(float *y, const float *x, const ss_conv2d *c, int H, int W, int pad_end) {
    if (!g_enabled) return 1;
    const int Ho = conv_out_size(H + pad_end, c->kh, c->stride, c->pad);
    const int Wo = conv_out_size(W + pad_end, c->kw, c->stride, c->pad);
    if (Ho <= 0 || Wo <= 0) return 0;
    const int hb = ss_dnnl_conv_band_rows(c, H, W, pad_end), nb = (Ho + hb - 1) / hb;
    /* every band's primitive and weights before any output is written (so a fallback writes all) */
    const void *wts = NULL;
    for (int b = 0; b < nb; b++) {
        ckey k;
        const int o0 = b * hb, h = Ho - o0 < hb ? Ho - o0 : hb;
        if (band_key(&k, c, H, W, Ho, Wo, o0, h) < 0) return 1;
        const centry *e = lookup(&k);
        if (!e || !e->ok) return 1;
        const void *wb = weights(c->w, c, &e->wts);
        if (!wb || (wts && wb != wts)) return 1; /* one weight layout for all the bands of a layer */
        wts = wb;
    }
    int err = 0;
#pragma omp parallel if (nb > 1) reduction(| : err)
    {
        /* oneDNN also reads the thread count when it runs: one, as the primitives were made */
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        buf bs = {0}, bd = {0}, bp = {0};
        dnnl_stream_t st = NULL;
        if (dnnl_stream_create(&st, g_engine, dnnl_stream_default_flags) != dnnl_success) err = 1;
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < nb; b++) {
            if (err) continue;
            ckey k;
            const int o0 = b * hb, h = Ho - o0 < hb ? Ho - o0 : hb;
            const int lo = band_key(&k, c, H, W, Ho, Wo, o0, h);
            const centry *e = lookup(&k);
            if (run_band(e, wts, c->b, x + (size_t)lo * W, y + (size_t)o0 * Wo, st, &bs, &bd, &bp) < 0) err = 1;
        }
        if (st) dnnl_stream_destroy(st);
        free(bs.p), free(bd.p), free(bp.p);
        omp_set_num_threads(saved);
    }
    /* a failed run may have written part of y: the fallback rewrites all of it */
    return err ? 1 : 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

double ss_dnnl_conv_peak_gflops(int cin, int cout, int k, int H, int W, int reps, char *impl, size_t impl_n) {
    if (impl && impl_n) impl[0] = 0;
    pthread_mutex_lock(&g_lock);
    const int eo = engine();
    pthread_mutex_unlock(&g_lock);
    if (eo < 0) return -1;
    dnnl_memory_desc_t s, w, b, d;
    const dnnl_dims_t sd = {1, cin, H, W}, wd = {cout, cin, k, k}, bd = {cout}, dd = {1, cout, H, W};
    dnnl_memory_desc_init_by_tag(&s, 4, sd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&d, 4, dd, dnnl_f32, dnnl_format_tag_any);
    const dnnl_dims_t st = {1, 1}, pad = {k / 2, k / 2};
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &s, &w, &b, &d, st, pad,
                                           pad) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, g_engine, NULL) != dnnl_success)
        return -1;
    const char *name = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name && impl)
        snprintf(impl, impl_n, "%s", name);
    const dnnl_memory_desc_t *mds[4] = {dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0),
                                        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &b,
                                        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0)};
    const int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    dnnl_memory_t m[4] = {0};
    dnnl_exec_arg_t a[4];
    double best = -1;
    dnnl_stream_t str = NULL;
    int ok = dnnl_primitive_create(&p, pd) == dnnl_success &&
             dnnl_stream_create(&str, g_engine, dnnl_stream_default_flags) == dnnl_success;
    for (int i = 0; i < 4 && ok; i++) {
        ok = dnnl_memory_create(&m[i], mds[i], g_engine, DNNL_MEMORY_ALLOCATE) == dnnl_success;
        if (ok) {
            void *h = NULL;
            dnnl_memory_get_data_handle(m[i], &h);
            memset(h, 0, dnnl_memory_desc_get_size(mds[i])); /* zeros: the rate does not depend on values */
            a[i] = (dnnl_exec_arg_t){args[i], m[i]};
        }
    }
    for (int r = 0; r <= reps && ok; r++) { /* the first run warms up */
        const double t = now();
        ok = dnnl_primitive_execute(p, str, 4, a) == dnnl_success && dnnl_stream_wait(str) == dnnl_success;
        const double g = 2.0 * cin * cout * k * k * (double)H * W / (now() - t) / 1e9;
        if (r && g > best) best = g;
    }
    for (int i = 0; i < 4; i++)
        if (m[i]) dnnl_memory_destroy(m[i]);
    if (str) dnnl_stream_destroy(str);
    if (p) dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
    return ok ? best : -1;
}
