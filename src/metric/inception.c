#include "metric/inception.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv.h"
#include "core/err.h"
#include "io/pth.h"

#define MAX_CONVS 128
#define BN_EPS 1e-3

typedef struct {
    char name[40];
    float *w, *alpha, *beta; /* conv weight; batchnorm folded to y = x alpha + beta (per channel) */
    int cin, cout, kh, kw, stride, ph, pw;
} bconv;

struct inception_net {
    bconv conv[MAX_CONVS];
    int nconv;
};

typedef struct {
    float *d;
    int C, H, W;
} fmap;

void inception_free(inception_net *n) {
    if (!n) return;
    for (int i = 0; i < n->nconv; i++) {
        free(n->conv[i].w);
        free(n->conv[i].alpha);
        free(n->conv[i].beta);
    }
    free(n);
}

static int add(inception_net *n, inception_getter get, void *ctx, const char *prefix, const char *branch, int cin,
               int cout, int kh, int kw, int stride, int ph, int pw) {
    if (n->nconv >= MAX_CONVS) return ss_fail(SS_EFORMAT, "inception: too many convolutions");
    bconv *c = &n->conv[n->nconv++];
    snprintf(c->name, sizeof c->name, "%s%s%s", prefix, branch[0] ? "." : "", branch);
    c->cin = cin, c->cout = cout, c->kh = kh, c->kw = kw, c->stride = stride, c->ph = ph, c->pw = pw;
    char name[96];
    const int64_t ws[4] = {cout, cin, kh, kw}, cs[1] = {cout};
    float *g = NULL, *b = NULL, *mean = NULL, *var = NULL;
    snprintf(name, sizeof name, "%s.conv.weight", c->name);
    int rc = get(ctx, name, 4, ws, &c->w);
    snprintf(name, sizeof name, "%s.bn.weight", c->name);
    if (rc == 0) rc = get(ctx, name, 1, cs, &g);
    snprintf(name, sizeof name, "%s.bn.bias", c->name);
    if (rc == 0) rc = get(ctx, name, 1, cs, &b);
    snprintf(name, sizeof name, "%s.bn.running_mean", c->name);
    if (rc == 0) rc = get(ctx, name, 1, cs, &mean);
    snprintf(name, sizeof name, "%s.bn.running_var", c->name);
    if (rc == 0) rc = get(ctx, name, 1, cs, &var);
    if (rc == 0) {
        c->alpha = ss_malloc((size_t)cout * sizeof *c->alpha);
        c->beta = ss_malloc((size_t)cout * sizeof *c->beta);
        if (!c->alpha || !c->beta) rc = SS_ENOMEM;
    }
    for (int o = 0; rc == 0 && o < cout; o++) {
        if (!(var[o] >= 0) || !isfinite(var[o])) {
            rc = ss_fail(SS_EFORMAT, "inception: %s.bn.running_var[%d] = %g is not a variance", c->name, o, var[o]);
            break;
        }
        /* torch's CPU inference batchnorm: alpha = w / sqrt(var + eps), beta = b - mean alpha */
        float a = g[o] / sqrtf(var[o] + (float)BN_EPS);
        c->alpha[o] = a;
        c->beta[o] = b[o] - mean[o] * a;
    }
    free(g);
    free(b);
    free(mean);
    free(var);
    return rc;
}

#define ADD(pre, br, ci, co, kh, kw, s, ph, pw)                                  \
    do {                                                                         \
        if ((rc = add(n, get, ctx, pre, br, ci, co, kh, kw, s, ph, pw)) < 0) goto done; \
    } while (0)

static int load_a(inception_net *n, inception_getter get, void *ctx, const char *p, int cin, int pf) {
    int rc = 0;
    ADD(p, "branch1x1", cin, 64, 1, 1, 1, 0, 0);
    ADD(p, "branch5x5_1", cin, 48, 1, 1, 1, 0, 0);
    ADD(p, "branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
    ADD(p, "branch3x3dbl_1", cin, 64, 1, 1, 1, 0, 0);
    ADD(p, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    ADD(p, "branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
    ADD(p, "branch_pool", cin, pf, 1, 1, 1, 0, 0);
done:
    return rc;
}

static int load_c(inception_net *n, inception_getter get, void *ctx, const char *p, int c7) {
    int rc = 0;
    ADD(p, "branch1x1", 768, 192, 1, 1, 1, 0, 0);
    ADD(p, "branch7x7_1", 768, c7, 1, 1, 1, 0, 0);
    ADD(p, "branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
    ADD(p, "branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
    ADD(p, "branch7x7dbl_1", 768, c7, 1, 1, 1, 0, 0);
    ADD(p, "branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
    ADD(p, "branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
    ADD(p, "branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
    ADD(p, "branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
    ADD(p, "branch_pool", 768, 192, 1, 1, 1, 0, 0);
done:
    return rc;
}

static int load_e(inception_net *n, inception_getter get, void *ctx, const char *p, int cin) {
    int rc = 0;
    ADD(p, "branch1x1", cin, 320, 1, 1, 1, 0, 0);
    ADD(p, "branch3x3_1", cin, 384, 1, 1, 1, 0, 0);
    ADD(p, "branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
    ADD(p, "branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
    ADD(p, "branch3x3dbl_1", cin, 448, 1, 1, 1, 0, 0);
    ADD(p, "branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
    ADD(p, "branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
    ADD(p, "branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
    ADD(p, "branch_pool", cin, 192, 1, 1, 1, 0, 0);
done:
    return rc;
}

int inception_load_with(inception_net **out, inception_getter get, void *ctx) {
    *out = NULL;
    inception_net *n = ss_calloc(1, sizeof *n);
    if (!n) return SS_ENOMEM;
    int rc = 0;
    ADD("Conv2d_1a_3x3", "", 3, 32, 3, 3, 2, 0, 0);
    ADD("Conv2d_2a_3x3", "", 32, 32, 3, 3, 1, 0, 0);
    ADD("Conv2d_2b_3x3", "", 32, 64, 3, 3, 1, 1, 1);
    ADD("Conv2d_3b_1x1", "", 64, 80, 1, 1, 1, 0, 0);
    ADD("Conv2d_4a_3x3", "", 80, 192, 3, 3, 1, 0, 0);
    if ((rc = load_a(n, get, ctx, "Mixed_5b", 192, 32)) < 0) goto done;
    if ((rc = load_a(n, get, ctx, "Mixed_5c", 256, 64)) < 0) goto done;
    if ((rc = load_a(n, get, ctx, "Mixed_5d", 288, 64)) < 0) goto done;
    ADD("Mixed_6a", "branch3x3", 288, 384, 3, 3, 2, 0, 0);
    ADD("Mixed_6a", "branch3x3dbl_1", 288, 64, 1, 1, 1, 0, 0);
    ADD("Mixed_6a", "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    ADD("Mixed_6a", "branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0);
    if ((rc = load_c(n, get, ctx, "Mixed_6b", 128)) < 0) goto done;
    if ((rc = load_c(n, get, ctx, "Mixed_6c", 160)) < 0) goto done;
    if ((rc = load_c(n, get, ctx, "Mixed_6d", 160)) < 0) goto done;
    if ((rc = load_c(n, get, ctx, "Mixed_6e", 192)) < 0) goto done;
    ADD("Mixed_7a", "branch3x3_1", 768, 192, 1, 1, 1, 0, 0);
    ADD("Mixed_7a", "branch3x3_2", 192, 320, 3, 3, 2, 0, 0);
    ADD("Mixed_7a", "branch7x7x3_1", 768, 192, 1, 1, 1, 0, 0);
    ADD("Mixed_7a", "branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
    ADD("Mixed_7a", "branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
    ADD("Mixed_7a", "branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0);
    if ((rc = load_e(n, get, ctx, "Mixed_7b", 1280)) < 0) goto done;
    if ((rc = load_e(n, get, ctx, "Mixed_7c", 2048)) < 0) goto done;
done:
    if (rc < 0) {
        inception_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

static int pth_getter(void *ctx, const char *name, int ndim, const int64_t *shape, float **out) {
    const pth_file *f = ctx;
    if (!pth_find(f, name)) return ss_fail(SS_EMISSING, "inception: tensor '%s' missing", name);
    return pth_load_f32(out, f, name, ndim, shape);
}

int inception_load(inception_net **out, const char *pth) {
    *out = NULL;
    pth_file *f;
    int rc = pth_open(&f, pth);
    if (rc < 0) return rc;
    rc = inception_load_with(out, pth_getter, f);
    if (rc < 0) ss_err_prefix(rc, "%s: ", pth);
    pth_close(f);
    return rc;
}

/* ---- forward ---- */

static const bconv *find(const inception_net *n, const char *prefix, const char *branch) {
    char name[40];
    snprintf(name, sizeof name, "%s%s%s", prefix, branch[0] ? "." : "", branch);
    for (int i = 0; i < n->nconv; i++)
        if (!strcmp(n->conv[i].name, name)) return &n->conv[i];
    return NULL; /* not reached: every name used below is loaded */
}

static int fmap_alloc(fmap *m, int C, int H, int W) {
    m->C = C, m->H = H, m->W = W;
    m->d = ss_malloc((size_t)C * H * W * sizeof(float) + 1);
    return m->d ? 0 : SS_ENOMEM;
}

/* relu(bn(conv(x))) written into channels [coff, coff + cout) of out (whose H, W it must match). */
static int run_conv(const bconv *c, const fmap *x, fmap *out, int coff) {
    const float *in = x->d;
    int H = x->H, W = x->W, pad = c->ph;
    float *padded = NULL;
    if (c->ph != c->pw) { /* asymmetric padding (1x7, 7x1, 1x3, 3x1): pad here, convolve unpadded */
        const int Hp = H + 2 * c->ph, Wp = W + 2 * c->pw;
        padded = ss_calloc((size_t)x->C * Hp * Wp, sizeof *padded);
        if (!padded) return SS_ENOMEM;
        for (int ch = 0; ch < x->C; ch++)
            for (int i = 0; i < H; i++)
                memcpy(padded + ((size_t)ch * Hp + i + c->ph) * Wp + c->pw, x->d + ((size_t)ch * H + i) * W,
                       (size_t)W * sizeof *padded);
        in = padded, H = Hp, W = Wp, pad = 0;
    }
    ss_conv2d cv = {c->w, NULL, c->cin, c->cout, c->kh, c->kw, c->stride, pad};
    const int Ho = conv_out_size(H, c->kh, c->stride, pad), Wo = conv_out_size(W, c->kw, c->stride, pad);
    if (Ho != out->H || Wo != out->W || coff + c->cout > out->C) {
        free(padded);
        return ss_fail(SS_ESHAPE, "inception: %s gives %dx%d, expected %dx%d", c->name, Ho, Wo, out->H, out->W);
    }
    float *work = ss_malloc(op_conv2d_work(&cv, H, W) * sizeof *work + 1);
    if (!work) {
        free(padded);
        return SS_ENOMEM;
    }
    float *y = out->d + (size_t)coff * Ho * Wo;
    op_conv2d(y, in, &cv, H, W, work);
    const size_t P = (size_t)Ho * Wo;
#pragma omp parallel for schedule(static) if (P * c->cout > 65536)
    for (int o = 0; o < c->cout; o++) {
        const float a = c->alpha[o], b = c->beta[o];
        float *yo = y + (size_t)o * P;
        for (size_t p = 0; p < P; p++) {
            float v = yo[p] * a + b;
            yo[p] = v < 0.0f ? 0.0f : v;
        }
    }
    free(work);
    free(padded);
    return 0;
}

/* A conv into a fresh map (the output size from the conv's geometry). */
static int conv_new(const bconv *c, const fmap *x, fmap *y) {
    int H = x->H + 2 * c->ph, W = x->W + 2 * c->pw;
    int Ho = conv_out_size(H, c->kh, c->stride, 0), Wo = conv_out_size(W, c->kw, c->stride, 0);
    if (Ho <= 0 || Wo <= 0) return ss_fail(SS_ESHAPE, "inception: %s input %dx%d too small", c->name, x->H, x->W);
    int rc = fmap_alloc(y, c->cout, Ho, Wo);
    return rc < 0 ? rc : run_conv(c, x, y, 0);
}

/* avg_pool2d(3, stride 1, pad 1, count_include_pad=False) */
static void avgpool3_nopad(float *y, const float *x, int C, int H, int W) {
#pragma omp parallel for schedule(static) if ((size_t)C * H * W > 65536)
    for (int ch = 0; ch < C; ch++) {
        const float *xc = x + (size_t)ch * H * W;
        float *yc = y + (size_t)ch * H * W;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                float s = 0;
                int cnt = 0;
                for (int di = -1; di <= 1; di++)
                    for (int dj = -1; dj <= 1; dj++) {
                        int a = i + di, b = j + dj;
                        if (a < 0 || a >= H || b < 0 || b >= W) continue;
                        s += xc[(size_t)a * W + b];
                        cnt++;
                    }
                yc[(size_t)i * W + j] = s / (float)cnt;
            }
    }
}

static void fmap_free(fmap *m) {
    free(m->d);
    m->d = NULL;
}

#define TRY(x)                     \
    do {                           \
        if ((rc = (x)) < 0) goto done; \
    } while (0)

static int block_a(const inception_net *n, const char *p, fmap *x, int pf) {
    fmap out = {0}, t1 = {0}, t2 = {0}, pool = {0};
    int rc;
    TRY(fmap_alloc(&out, 64 + 64 + 96 + pf, x->H, x->W));
    TRY(run_conv(find(n, p, "branch1x1"), x, &out, 0));
    TRY(conv_new(find(n, p, "branch5x5_1"), x, &t1));
    TRY(run_conv(find(n, p, "branch5x5_2"), &t1, &out, 64));
    fmap_free(&t1);
    TRY(conv_new(find(n, p, "branch3x3dbl_1"), x, &t1));
    TRY(conv_new(find(n, p, "branch3x3dbl_2"), &t1, &t2));
    TRY(run_conv(find(n, p, "branch3x3dbl_3"), &t2, &out, 128));
    TRY(fmap_alloc(&pool, x->C, x->H, x->W));
    avgpool3_nopad(pool.d, x->d, x->C, x->H, x->W);
    TRY(run_conv(find(n, p, "branch_pool"), &pool, &out, 224));
done:
    fmap_free(&t1), fmap_free(&t2), fmap_free(&pool);
    if (rc == 0) fmap_free(x), *x = out;
    else fmap_free(&out);
    return rc;
}

static int block_b(const inception_net *n, const char *p, fmap *x) {
    fmap out = {0}, t1 = {0}, t2 = {0};
    const int Ho = conv_out_size(x->H, 3, 2, 0), Wo = conv_out_size(x->W, 3, 2, 0);
    int rc;
    TRY(fmap_alloc(&out, 384 + 96 + x->C, Ho, Wo));
    TRY(run_conv(find(n, p, "branch3x3"), x, &out, 0));
    TRY(conv_new(find(n, p, "branch3x3dbl_1"), x, &t1));
    TRY(conv_new(find(n, p, "branch3x3dbl_2"), &t1, &t2));
    TRY(run_conv(find(n, p, "branch3x3dbl_3"), &t2, &out, 384));
    op_maxpool2d(out.d + (size_t)480 * Ho * Wo, x->d, x->C, x->H, x->W, 3, 2, 0);
done:
    fmap_free(&t1), fmap_free(&t2);
    if (rc == 0) fmap_free(x), *x = out;
    else fmap_free(&out);
    return rc;
}

static int block_c(const inception_net *n, const char *p, fmap *x) {
    fmap out = {0}, t1 = {0}, t2 = {0}, pool = {0};
    int rc;
    TRY(fmap_alloc(&out, 768, x->H, x->W));
    TRY(run_conv(find(n, p, "branch1x1"), x, &out, 0));
    TRY(conv_new(find(n, p, "branch7x7_1"), x, &t1));
    TRY(conv_new(find(n, p, "branch7x7_2"), &t1, &t2));
    TRY(run_conv(find(n, p, "branch7x7_3"), &t2, &out, 192));
    fmap_free(&t1), fmap_free(&t2);
    TRY(conv_new(find(n, p, "branch7x7dbl_1"), x, &t1));
    TRY(conv_new(find(n, p, "branch7x7dbl_2"), &t1, &t2));
    fmap_free(&t1);
    TRY(conv_new(find(n, p, "branch7x7dbl_3"), &t2, &t1));
    fmap_free(&t2);
    TRY(conv_new(find(n, p, "branch7x7dbl_4"), &t1, &t2));
    TRY(run_conv(find(n, p, "branch7x7dbl_5"), &t2, &out, 384));
    TRY(fmap_alloc(&pool, x->C, x->H, x->W));
    avgpool3_nopad(pool.d, x->d, x->C, x->H, x->W);
    TRY(run_conv(find(n, p, "branch_pool"), &pool, &out, 576));
done:
    fmap_free(&t1), fmap_free(&t2), fmap_free(&pool);
    if (rc == 0) fmap_free(x), *x = out;
    else fmap_free(&out);
    return rc;
}

static int block_d(const inception_net *n, const char *p, fmap *x) {
    fmap out = {0}, t1 = {0}, t2 = {0};
    const int Ho = conv_out_size(x->H, 3, 2, 0), Wo = conv_out_size(x->W, 3, 2, 0);
    int rc;
    TRY(fmap_alloc(&out, 320 + 192 + x->C, Ho, Wo));
    TRY(conv_new(find(n, p, "branch3x3_1"), x, &t1));
    TRY(run_conv(find(n, p, "branch3x3_2"), &t1, &out, 0));
    fmap_free(&t1);
    TRY(conv_new(find(n, p, "branch7x7x3_1"), x, &t1));
    TRY(conv_new(find(n, p, "branch7x7x3_2"), &t1, &t2));
    fmap_free(&t1);
    TRY(conv_new(find(n, p, "branch7x7x3_3"), &t2, &t1));
    TRY(run_conv(find(n, p, "branch7x7x3_4"), &t1, &out, 320));
    op_maxpool2d(out.d + (size_t)512 * Ho * Wo, x->d, x->C, x->H, x->W, 3, 2, 0);
done:
    fmap_free(&t1), fmap_free(&t2);
    if (rc == 0) fmap_free(x), *x = out;
    else fmap_free(&out);
    return rc;
}

/* FIDInceptionE_1 (avg pool, count_include_pad=False) or FIDInceptionE_2 (max pool) */
static int block_e(const inception_net *n, const char *p, fmap *x, int maxpool) {
    fmap out = {0}, t1 = {0}, t2 = {0}, pool = {0};
    int rc;
    TRY(fmap_alloc(&out, 2048, x->H, x->W));
    TRY(run_conv(find(n, p, "branch1x1"), x, &out, 0));
    TRY(conv_new(find(n, p, "branch3x3_1"), x, &t1));
    TRY(run_conv(find(n, p, "branch3x3_2a"), &t1, &out, 320));
    TRY(run_conv(find(n, p, "branch3x3_2b"), &t1, &out, 704));
    fmap_free(&t1);
    TRY(conv_new(find(n, p, "branch3x3dbl_1"), x, &t1));
    TRY(conv_new(find(n, p, "branch3x3dbl_2"), &t1, &t2));
    TRY(run_conv(find(n, p, "branch3x3dbl_3a"), &t2, &out, 1088));
    TRY(run_conv(find(n, p, "branch3x3dbl_3b"), &t2, &out, 1472));
    TRY(fmap_alloc(&pool, x->C, x->H, x->W));
    if (maxpool) op_maxpool2d(pool.d, x->d, x->C, x->H, x->W, 3, 1, 1);
    else avgpool3_nopad(pool.d, x->d, x->C, x->H, x->W);
    TRY(run_conv(find(n, p, "branch_pool"), &pool, &out, 1856));
done:
    fmap_free(&t1), fmap_free(&t2), fmap_free(&pool);
    if (rc == 0) fmap_free(x), *x = out;
    else fmap_free(&out);
    return rc;
}

static int stem_conv(const inception_net *n, const char *name, fmap *x) {
    fmap y = {0};
    int rc = conv_new(find(n, name, ""), x, &y);
    fmap_free(x);
    *x = y;
    return rc;
}

static int maxpool32(fmap *x) {
    fmap y = {0};
    int rc = fmap_alloc(&y, x->C, conv_out_size(x->H, 3, 2, 0), conv_out_size(x->W, 3, 2, 0));
    if (rc == 0) op_maxpool2d(y.d, x->d, x->C, x->H, x->W, 3, 2, 0);
    fmap_free(x);
    *x = y;
    return rc;
}

/* torch's source index / weights for one axis (align_corners=False, no antialias) */
static void lin_axis(int n_in, int n_out, int *i0, int *i1, float *l0, float *l1) {
    const double scale = (double)((float)n_in / (float)n_out);
    for (int o = 0; o < n_out; o++) {
        double src = scale * (o + 0.5) - 0.5;
        if (src < 0) src = 0;
        int a = (int)src;
        if (a > n_in - 1) a = n_in - 1;
        i0[o] = a;
        i1[o] = a < n_in - 1 ? a + 1 : a;
        double lam = src - a;
        lam = lam < 0 ? 0 : lam > 1 ? 1 : lam;
        l1[o] = (float)lam;
        l0[o] = 1.0f - l1[o];
    }
}

int inception_resize_bilinear(float *y, int ow, int oh, const float *x, int w, int h) {
    if (w < 1 || h < 1 || ow < 1 || oh < 1) return ss_fail(SS_ESHAPE, "inception: resize %dx%d -> %dx%d", w, h, ow, oh);
    int *hi0 = malloc(sizeof(int) * (size_t)oh * 2), *wi0 = malloc(sizeof(int) * (size_t)ow * 2);
    float *hl = malloc(sizeof(float) * (size_t)oh * 2), *wl = malloc(sizeof(float) * (size_t)ow * 2);
    if (hi0 && wi0 && hl && wl) {
        int *hi1 = hi0 + oh, *wi1 = wi0 + ow;
        float *hl1 = hl + oh, *wl1 = wl + ow;
        lin_axis(h, oh, hi0, hi1, hl, hl1);
        lin_axis(w, ow, wi0, wi1, wl, wl1);
        for (int c = 0; c < 3; c++) {
            const float *xc = x + (size_t)c * h * w;
            float *yc = y + (size_t)c * oh * ow;
#pragma omp parallel for schedule(static) if ((size_t)oh * ow > 65536)
            for (int i = 0; i < oh; i++) {
                const float *r0 = xc + (size_t)hi0[i] * w, *r1 = xc + (size_t)hi1[i] * w;
                for (int j = 0; j < ow; j++) {
                    float t0 = wl[j] * r0[wi0[j]] + wl1[j] * r0[wi1[j]];
                    float t1 = wl[j] * r1[wi0[j]] + wl1[j] * r1[wi1[j]];
                    yc[(size_t)i * ow + j] = hl[i] * t0 + hl1[i] * t1;
                }
            }
        }
    }
    int rc = hi0 && wi0 && hl && wl ? 0 : ss_fail(SS_ENOMEM, "inception: out of memory for the resize");
    free(hi0), free(wi0), free(hl), free(wl);
    return rc;
}

static int run_net(const inception_net *n, fmap m, float *feat);

int inception_features(const inception_net *n, const float *x, int w, int h, float *feat) {
    if (w < 1 || h < 1 || w > 65536 || h > 65536)
        return ss_fail(SS_ESHAPE, "inception: image of %dx%d", w, h);
    fmap m = {0};
    int rc = fmap_alloc(&m, 3, INCEPTION_SIDE, INCEPTION_SIDE);
    if (rc < 0) return rc;
    if ((rc = inception_resize_bilinear(m.d, INCEPTION_SIDE, INCEPTION_SIDE, x, w, h)) < 0) {
        fmap_free(&m);
        return rc;
    }
    for (size_t i = 0; i < (size_t)3 * INCEPTION_SIDE * INCEPTION_SIDE; i++) m.d[i] = 2.0f * m.d[i] - 1.0f;
    return run_net(n, m, feat);
}

int inception_features_raw(const inception_net *n, const float *x, int w, int h, float *feat) {
    if (w < INCEPTION_MIN_SIDE || h < INCEPTION_MIN_SIDE || w > 65536 || h > 65536)
        return ss_fail(SS_ESHAPE, "inception: input of %dx%d (the network needs at least %d)", w, h,
                       INCEPTION_MIN_SIDE);
    fmap m = {0};
    int rc = fmap_alloc(&m, 3, h, w);
    if (rc < 0) return rc;
    memcpy(m.d, x, (size_t)3 * w * h * sizeof *m.d);
    return run_net(n, m, feat);
}

/* The network from the scaled input m (consumed). */
static int run_net(const inception_net *n, fmap m, float *feat) {
    int rc = 0;
    TRY(stem_conv(n, "Conv2d_1a_3x3", &m));
    TRY(stem_conv(n, "Conv2d_2a_3x3", &m));
    TRY(stem_conv(n, "Conv2d_2b_3x3", &m));
    TRY(maxpool32(&m));
    TRY(stem_conv(n, "Conv2d_3b_1x1", &m));
    TRY(stem_conv(n, "Conv2d_4a_3x3", &m));
    TRY(maxpool32(&m));
    TRY(block_a(n, "Mixed_5b", &m, 32));
    TRY(block_a(n, "Mixed_5c", &m, 64));
    TRY(block_a(n, "Mixed_5d", &m, 64));
    TRY(block_b(n, "Mixed_6a", &m));
    TRY(block_c(n, "Mixed_6b", &m));
    TRY(block_c(n, "Mixed_6c", &m));
    TRY(block_c(n, "Mixed_6d", &m));
    TRY(block_c(n, "Mixed_6e", &m));
    TRY(block_d(n, "Mixed_7a", &m));
    TRY(block_e(n, "Mixed_7b", &m, 0));
    TRY(block_e(n, "Mixed_7c", &m, 1));
    if (m.C != INCEPTION_DIM) {
        rc = ss_fail(SS_ESHAPE, "inception: %d channels at pool3", m.C);
        goto done;
    }
    {
        const size_t P = (size_t)m.H * m.W;
        for (int c = 0; c < INCEPTION_DIM; c++) {
            double s = 0;
            for (size_t p = 0; p < P; p++) s += m.d[(size_t)c * P + p];
            feat[c] = (float)(s / (double)P);
        }
    }
done:
    fmap_free(&m);
    return rc;
}

int inception_features_rgb(const inception_net *n, const uint8_t *rgb, int w, int h, float *feat) {
    if (w < 1 || h < 1 || w > 65536 || h > 65536)
        return ss_fail(SS_ESHAPE, "inception: image of %dx%d", w, h);
    const size_t plane = (size_t)w * h;
    float *x = ss_malloc(3 * plane * sizeof *x);
    if (!x) return SS_ENOMEM;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) x[(size_t)c * plane + p] = (float)rgb[3 * p + c] / 255.0f;
    int rc = inception_features(n, x, w, h, feat);
    free(x);
    return rc;
}
