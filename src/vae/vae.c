/* AutoencoderKL forward passes (vae.h): one image at a time in CHW, three ping-pong buffers. */
#include "vae/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attn.h"
#include "nn/dnnl_conv.h"
#include "core/err.h"

#define VAE_EPS 1e-6f

int vae_factor(const vae_model *m) { return 1 << (m->cfg.n_blocks - 1); }

typedef struct {
    float *x, *a, *b; /* current activation, two scratch buffers, each `cap` floats */
    size_t cap;
    int C, H, W;      /* shape of x */
} vae_state;

static void swap(float **p, float **q) {
    float *t = *p;
    *p = *q;
    *q = t;
}

/* oneDNN's direct convolution (nn/dnnl_conv.h) where it has one, else im2col tiles + sgemm. */
static int conv(float *y, const float *x, const ss_conv2d *c, int H, int W, int pad_end) {
    if (ss_dnnl_conv2d(y, x, c, H, W, pad_end) == 0) return 0;
    return op_conv2d_tiled(y, x, c, H, W, pad_end);
}

/* s->x [cin, H, W] -> [cout, H, W]. */
static int resnet(vae_state *s, const vae_resnet *r, int groups) {
    const size_t HW = (size_t)s->H * s->W;
    int rc;
    memcpy(s->a, s->x, sizeof(float) * r->cin * HW);
    op_group_norm(s->a, r->cin, HW, groups, r->n1w, r->n1b, VAE_EPS, 1);
    if ((rc = conv(s->b, s->a, &r->conv1, s->H, s->W, 0)) < 0) return rc;
    op_group_norm(s->b, r->cout, HW, groups, r->n2w, r->n2b, VAE_EPS, 1);
    if ((rc = conv(s->a, s->b, &r->conv2, s->H, s->W, 0)) < 0) return rc;
    const float *sc = s->x;
    if (r->shortcut.w) {
        if ((rc = conv(s->b, s->x, &r->shortcut, s->H, s->W, 0)) < 0) return rc;
        sc = s->b;
    }
    const size_t n = (size_t)r->cout * HW;
    float *a = s->a;
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) a[i] = sc[i] + a[i]; /* input_tensor + output_tensor */
    swap(&s->x, &s->a);
    s->C = r->cout;
    return 0;
}

/* The mid-block attention, in place on s->x [C, N]. */
static int attention(vae_state *s, const vae_attn *at, int groups) {
    const int C = s->C, N = s->H * s->W;
    const size_t nc = (size_t)N * C;
    float *t = malloc(sizeof(float) * nc * 5);
    if (!t) return ss_fail(SS_ENOMEM, "VAE attention: out of memory (%d tokens x %d channels)", N, C);
    float *h = t, *q = t + nc, *k = t + 2 * nc, *v = t + 3 * nc, *o = t + 4 * nc;
    memcpy(s->a, s->x, sizeof(float) * nc);
    op_group_norm(s->a, C, (size_t)N, groups, at->gnw, at->gnb, VAE_EPS, 0);
    /* [C, N] -> tokens [N, C] */
#pragma omp parallel for schedule(static) if (nc > 32768)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) h[(size_t)n * C + c] = s->a[(size_t)c * N + n];
    op_linear(q, h, &at->q, N);
    op_linear(k, h, &at->k, N);
    op_linear(v, h, &at->v, N);
    attn_args a = {.B = 1, .H = 1, .dh = C, .T = N, .ld = C, .n_img = N, .q = q, .k = k, .v = v, .out = o};
    int rc = attn_forward(&a, NULL);
    if (rc < 0) {
        free(t);
        return ss_fail(SS_ENOMEM, "VAE attention: out of memory for the attention scratch");
    }
    op_linear(h, o, &at->o, N);
    /* back to [C, N], residual added (rescale_output_factor 1) */
    float *x = s->x;
#pragma omp parallel for schedule(static) if (nc > 32768)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) x[(size_t)c * N + n] = h[(size_t)n * C + c] + x[(size_t)c * N + n];
    free(t);
    return 0;
}

static int mid_block(vae_state *s, const vae_mid *m, int groups) {
    int rc;
    if ((rc = resnet(s, &m->r0, groups)) < 0) return rc;
    if (m->attn.q.w && (rc = attention(s, &m->attn, groups)) < 0) return rc;
    return resnet(s, &m->r1, groups);
}

static int stage(vae_stage_fn fn, void *ctx, const char *name, int b, const vae_state *s) {
    return fn ? fn(ctx, name, b, s->x, s->C, s->H, s->W) : 0;
}

static size_t umax(size_t a, size_t b) { return a > b ? a : b; }

static int state_alloc(vae_state *s, size_t cap) {
    memset(s, 0, sizeof *s);
    size_t bytes;
    if (ss_mul_size(cap, 3 * sizeof(float), &bytes) < 0 || !(s->x = malloc(bytes)))
        return ss_fail(SS_ENOMEM, "VAE: out of memory for 3 x %zu activation floats", cap);
    s->a = s->x + cap;
    s->b = s->a + cap;
    s->cap = cap;
    return 0;
}

/* The three buffers are one allocation starting at the lowest pointer. */
static void state_free(vae_state *s) {
    float *lo = s->x;
    if (s->a < lo) lo = s->a;
    if (s->b < lo) lo = s->b;
    free(lo);
}

int vae_decode(const vae_model *m, float *img, const float *z, int B, int h, int w, vae_stage_fn fn, void *ctx) {
    const vae_config *c = &m->cfg;
    const int nb = c->n_blocks, f = vae_factor(m);
    if (h < 1 || w < 1 || (long)h * f > 65536 || (long)w * f > 65536)
        return ss_fail(SS_EARG, "VAE decode: latent size %dx%d out of range", h, w);
    /* the largest activation: every block's widest channel count at its resolution (after its
     * upsampler the resolution doubles at the block's output width) */
    size_t cap = umax((size_t)c->latent_channels, (size_t)c->block_out[nb - 1]) * h * w;
    int prev = c->block_out[nb - 1];
    for (int i = 0; i < nb; i++) {
        const size_t hw = ((size_t)h << i) * ((size_t)w << i), out = (size_t)c->block_out[nb - 1 - i];
        cap = umax(cap, umax((size_t)prev, out) * hw);
        if (i < nb - 1) cap = umax(cap, out * hw * 4);
        prev = (int)out;
    }
    cap = umax(cap, (size_t)c->out_channels * h * f * w * f);
    vae_state s;
    int rc = state_alloc(&s, cap);
    if (rc < 0) return rc;
    char name[64];
    for (int b = 0; b < B && rc >= 0; b++) {
        s.C = c->latent_channels, s.H = h, s.W = w;
        const size_t n_in = (size_t)s.C * h * w;
        memcpy(s.x, z + (size_t)b * n_in, sizeof(float) * n_in);
        if (m->post_quant.w) {
            if ((rc = conv(s.a, s.x, &m->post_quant, h, w, 0)) < 0) break;
            swap(&s.x, &s.a);
        }
        if ((rc = conv(s.a, s.x, &m->dec_in, h, w, 0)) < 0) break;
        swap(&s.x, &s.a);
        s.C = m->dec_in.cout;
        if ((rc = stage(fn, ctx, "dec.conv_in", b, &s)) < 0 || (rc = mid_block(&s, &m->dec_mid, c->groups)) < 0 ||
            (rc = stage(fn, ctx, "dec.mid_block", b, &s)) < 0)
            break;
        for (int i = 0; i < nb && rc >= 0; i++) {
            const vae_block *bl = &m->up[i];
            for (int j = 0; j < bl->n_res && rc >= 0; j++) rc = resnet(&s, &bl->res[j], c->groups);
            if (rc < 0) break;
            if (bl->sampler.w) {
                op_upsample_nearest2x(s.a, s.x, s.C, s.H, s.W);
                s.H *= 2, s.W *= 2;
                if ((rc = conv(s.x, s.a, &bl->sampler, s.H, s.W, 0)) < 0) break;
            }
            snprintf(name, sizeof name, "dec.up_blocks.%d", i);
            rc = stage(fn, ctx, name, b, &s);
        }
        if (rc < 0) break;
        op_group_norm(s.x, s.C, (size_t)s.H * s.W, c->groups, m->dec_nw, m->dec_nb, VAE_EPS, 1);
        rc = conv(img + (size_t)b * c->out_channels * s.H * s.W, s.x, &m->dec_out, s.H, s.W, 0);
    }
    state_free(&s);
    return rc < 0 ? rc : 0;
}

void vae_encoded_size(const vae_model *m, int H, int W, int *h, int *w) {
    for (int i = 0; i < m->cfg.n_blocks - 1; i++) {
        H = conv_out_size(H + 1, 3, 2, 0);
        W = conv_out_size(W + 1, 3, 2, 0);
    }
    *h = H, *w = W;
}

int vae_encode(const vae_model *m, float *moments, const float *x, int B, int H, int W, vae_stage_fn fn, void *ctx) {
    const vae_config *c = &m->cfg;
    const int nb = c->n_blocks;
    int h, w;
    vae_encoded_size(m, H, W, &h, &w);
    if (h < 1 || w < 1 || H > 65536 || W > 65536)
        return ss_fail(SS_EARG, "VAE encode: image size %dx%d out of range for %d stride-2 stages", H, W, nb - 1);
    size_t cap = umax((size_t)c->in_channels, (size_t)c->block_out[0]) * H * W;
    int prev = c->block_out[0], hh = H, ww = W;
    for (int i = 0; i < nb; i++) {
        cap = umax(cap, umax((size_t)prev, (size_t)c->block_out[i]) * hh * ww);
        prev = c->block_out[i];
        if (i < nb - 1) hh = conv_out_size(hh + 1, 3, 2, 0), ww = conv_out_size(ww + 1, 3, 2, 0);
    }
    cap = umax(cap, (size_t)2 * c->latent_channels * h * w);
    vae_state s;
    int rc = state_alloc(&s, cap);
    if (rc < 0) return rc;
    char name[64];
    const size_t n_out = (size_t)2 * c->latent_channels * h * w;
    for (int b = 0; b < B && rc >= 0; b++) {
        s.C = c->in_channels, s.H = H, s.W = W;
        if ((rc = conv(s.x, x + (size_t)b * s.C * H * W, &m->enc_in, H, W, 0)) < 0) break;
        s.C = m->enc_in.cout;
        if ((rc = stage(fn, ctx, "enc.conv_in", b, &s)) < 0) break;
        for (int i = 0; i < nb && rc >= 0; i++) {
            const vae_block *bl = &m->down[i];
            for (int j = 0; j < bl->n_res && rc >= 0; j++) rc = resnet(&s, &bl->res[j], c->groups);
            if (rc < 0) break;
            if (bl->sampler.w) {
                if ((rc = conv(s.a, s.x, &bl->sampler, s.H, s.W, 1)) < 0) break;
                swap(&s.x, &s.a);
                s.H = conv_out_size(s.H + 1, 3, 2, 0), s.W = conv_out_size(s.W + 1, 3, 2, 0);
            }
            snprintf(name, sizeof name, "enc.down_blocks.%d", i);
            rc = stage(fn, ctx, name, b, &s);
        }
        if (rc < 0 || (rc = mid_block(&s, &m->enc_mid, c->groups)) < 0 ||
            (rc = stage(fn, ctx, "enc.mid_block", b, &s)) < 0)
            break;
        op_group_norm(s.x, s.C, (size_t)s.H * s.W, c->groups, m->enc_nw, m->enc_nb, VAE_EPS, 1);
        float *dst = moments + (size_t)b * n_out;
        if (m->quant.w) {
            if ((rc = conv(s.a, s.x, &m->enc_out, s.H, s.W, 0)) < 0) break;
            rc = conv(dst, s.a, &m->quant, s.H, s.W, 0);
        } else {
            rc = conv(dst, s.x, &m->enc_out, s.H, s.W, 0);
        }
    }
    state_free(&s);
    return rc < 0 ? rc : 0;
}

void vae_unscale(const vae_model *m, float *z, size_t n) {
    const float sf = (float)m->cfg.scaling_factor, sh = (float)m->cfg.shift_factor;
    for (size_t i = 0; i < n; i++) {
        const float t = z[i] / sf;
        z[i] = m->cfg.has_shift ? t + sh : t;
    }
}

void vae_moments_split(const vae_model *m, const float *moments, int B, int h, int w, float *mean, float *logvar,
                       float *scaled) {
    const size_t n = (size_t)m->cfg.latent_channels * h * w;
    const float sf = (float)m->cfg.scaling_factor, sh = (float)m->cfg.shift_factor;
    for (int b = 0; b < B; b++) {
        const float *mb = moments + (size_t)b * 2 * n, *lb = mb + n;
        for (size_t i = 0; i < n; i++) {
            const float mu = mb[i];
            if (mean) mean[(size_t)b * n + i] = mu;
            if (logvar) logvar[(size_t)b * n + i] = fminf(fmaxf(lb[i], -30.0f), 20.0f);
            if (scaled) scaled[(size_t)b * n + i] = (m->cfg.has_shift ? mu - sh : mu) * sf;
        }
    }
}
