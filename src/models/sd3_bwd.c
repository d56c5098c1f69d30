/* sd3_bwd: the backward pass of sd3.c's forward (sd3_bwd.h), with nn/ops_bwd.h's ops. */
#include "models/sd3_bwd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "nn/ops_bwd.h"

#define LN_EPS 1e-6f /* the model's LayerNorm and RMSNorm eps (sd3.c) */

struct sd3_bwd_ws {
    int Bmax, N, S, T, D, F, H, dh, Hi, Wi, L, qk, dual; /* dual: any dual-attention block */
    float *pool;
    size_t nfloats;
    /* stream gradients, joint gradients, split copies of joint activations, scratch */
    float *dX, *dC, *dn, *dnc, *dtx, *dtc, *dhid, *doi, *dot, *dqi, *dki, *dvi, *dqt, *dkt, *dvt;
    float *dqri, *dkri, *dqrt, *dkrt, *dO, *dQ, *dK, *dV;
    float *oi, *ot, *qri, *kri, *qrt, *krt, *xhat;
    float *dmodx, *dmodc, *dmodF, *dstemb, *dtemb, *ds1, *ds2, *dY;
    float *dn2; /* attn2's input gradient (dual blocks) */
};

/* Assigns every buffer from `base` (or only counts when base is NULL). */
static size_t layout(sd3_bwd_ws *w, const sd3_config *c, float *base) {
    size_t off = 0;
#define A(ptr, n) (ptr = base ? base + off : NULL, off += ((size_t)(n) + 15) / 16 * 16)
    const size_t B = w->Bmax, BN = B * w->N, BS = B * w->S, BT = B * w->T, D = w->D, F = w->F;
    const size_t Co = (size_t)c->patch_size * c->patch_size * c->out_channels;
    A(w->dX, BN * D); A(w->dC, BS * D); A(w->dn, BN * D); A(w->dnc, BS * D); A(w->dtx, BN * D); A(w->dtc, BS * D);
    A(w->dhid, (BN > BS ? BN : BS) * F); A(w->doi, BN * D); A(w->dot, BS * D);
    A(w->dqi, BN * D); A(w->dki, BN * D); A(w->dvi, BN * D); A(w->dqt, BS * D); A(w->dkt, BS * D); A(w->dvt, BS * D);
    A(w->dO, BT * D); A(w->dQ, BT * D); A(w->dK, BT * D); A(w->dV, BT * D);
    A(w->oi, BN * D); A(w->ot, BS * D); A(w->xhat, (BN > BS ? BN : BS) * D);
    if (w->qk) {
        A(w->dqri, BN * D); A(w->dkri, BN * D); A(w->dqrt, BS * D); A(w->dkrt, BS * D);
        A(w->qri, BN * D); A(w->kri, BN * D); A(w->qrt, BS * D); A(w->krt, BS * D);
    }
    A(w->dmodx, B * (w->dual ? 9 : 6) * D); A(w->dmodc, B * 6 * D); A(w->dmodF, B * 2 * D); A(w->dstemb, B * D); A(w->dtemb, B * D);
    A(w->ds1, B * D); A(w->ds2, B * D); A(w->dY, BN * Co);
    if (w->dual) A(w->dn2, BN * D);
#undef A
    return off;
}

int sd3_bwd_ws_new(sd3_bwd_ws **out, const sd3_model *m, int B, int Hl, int Wl, int S) {
    *out = NULL;
    const sd3_config *c = &m->cfg;
    int N = 0, rc = sd3_image_tokens(m, B, Hl, Wl, S, &N);
    if (rc < 0) return rc;
    sd3_bwd_ws *w = ss_calloc(1, sizeof *w);
    if (!w) return SS_ENOMEM;
    w->Bmax = B, w->Hi = Hl, w->Wi = Wl, w->N = N, w->S = S, w->T = N + S;
    w->D = m->D, w->F = 4 * m->D, w->H = c->num_heads, w->dh = c->head_dim, w->L = c->num_layers, w->qk = c->qk_norm;
    for (int i = 0; i < c->num_layers; i++) w->dual |= c->dual[i] != 0;
    w->nfloats = layout(w, c, NULL);
    w->pool = malloc(sizeof(float) * w->nfloats);
    if (!w->pool) {
        const size_t mb = w->nfloats * sizeof(float) >> 20;
        free(w);
        return ss_fail(SS_ENOMEM, "backward: out of memory for the gradients of batch %d (%zu MiB)", B, mb);
    }
    layout(w, c, w->pool);
    *out = w;
    return 0;
}

void sd3_bwd_ws_free(sd3_bwd_ws *w) {
    if (!w) return;
    free(w->pool);
    free(w);
}

size_t sd3_bwd_ws_bytes(const sd3_bwd_ws *w) { return w->nfloats * sizeof(float); }

/* dx = beta*dx + dy W (dx may be NULL); W's and b's gradients (g, the same layer of the gradient
 * view) accumulate. */
static void lin_b(float *dx, float beta, const ss_linear *g, const float *dy, const float *x, const ss_linear *l, int M) {
    op_linear_bwd(dx, beta, (float *)g->w, (float *)g->b, dy, x, l, M);
}

/* Joint rows [B, N+S, D] to image rows [B*N, D] and text rows [B*S, D] (img or txt may be NULL),
 * and back. */
static void split(float *img, float *txt, const float *joint, int B, int N, int S, int D) {
    const size_t T = (size_t)N + S, n = sizeof(float) * D;
    for (int b = 0; b < B; b++) {
        if (img) memcpy(img + (size_t)b * N * D, joint + (size_t)b * T * D, n * N);
        if (txt) memcpy(txt + (size_t)b * S * D, joint + ((size_t)b * T + N) * D, n * S);
    }
}

static void merge(float *joint, const float *img, const float *txt, int B, int N, int S, int D) {
    const size_t T = (size_t)N + S, n = sizeof(float) * D;
    for (int b = 0; b < B; b++) {
        memcpy(joint + (size_t)b * T * D, img + (size_t)b * N * D, n * N);
        memcpy(joint + ((size_t)b * T + N) * D, txt + (size_t)b * S * D, n * S);
    }
}

/* x += g * FF(LN(x)(1+sc)+sh) backward for one stream of R rows per batch element: dx (the
 * gradient of the FF's output stream) becomes the gradient of its input stream; dt, dn are
 * scratch; dmod: the stream's modulation gradient (rows of ldm), mod its modulation; g1, g2: the
 * gradient view's f1, f2. */
static void ff_bwd(sd3_bwd_ws *w, int B, float *dx, float *dt, float *dn, float *dmod, const float *mod, int ldm,
                   const float *x_mid, const float *n2, const float *h, const float *g, const float *f,
                   const ss_linear *f1, const ss_linear *f2, const ss_linear *g1, const ss_linear *g2, int R) {
    const int D = w->D, BR = B * R;
    op_add_gated_bwd(dt, dmod + 5 * D, dx, f, mod + 5 * D, ldm, B, R, D);
    lin_b(w->dhid, 0, g2, dt, g, f2, BR);
    op_gelu_tanh_bwd(w->dhid, w->dhid, h, (size_t)BR * w->F);
    lin_b(dn, 0, g1, w->dhid, n2, f1, BR);
    op_ln_modulate_bwd(dx, dmod + 3 * D, dmod + 4 * D, dn, x_mid, mod + 4 * D, ldm, B, R, D, LN_EPS, w->xhat);
}

static int block_bwd(const sd3_model *m, const sd3_model *dm, sd3_bwd_ws *w, const sd3_cache *cache, int B, int i) {
    const sd3_block *bk = &m->blocks[i], *gb = &dm->blocks[i];
    const sd3_block_cache *c = &cache->blocks[i];
    const int N = w->N, S = w->S, T = w->T, D = w->D, H = w->H, dh = w->dh, BN = B * N, BS = B * S;
    const int lc = bk->last ? 2 * D : 6 * D;  /* row stride of the text modulation */
    const int lx = bk->dual ? 9 * D : 6 * D; /* and of the image's */
    const float scale = 1.0f / sqrtf((float)dh); /* sd3_forward_cache's */
    memset(w->dmodx, 0, sizeof(float) * B * lx);
    memset(w->dmodc, 0, sizeof(float) * B * lc);
    split(w->oi, bk->last ? NULL : w->ot, c->o, B, N, S, D);
    if (!bk->last) {
        /* C2 = C1 + g*FF(LN(C1)(1+sc)+sh);  C1 = C + g'*add_out(O_text) */
        ff_bwd(w, B, w->dC, w->dtc, w->dnc, w->dmodc, c->modc, lc, c->c_mid, c->nc2, c->hc, c->gc, c->fc, &bk->cff1,
               &bk->cff2, &gb->cff1, &gb->cff2, S);
        op_add_gated_bwd(w->dtc, w->dmodc + 2 * D, w->dC, c->ac, c->modc + 2 * D, lc, B, S, D);
        lin_b(w->dot, 0, &gb->add_out, w->dtc, w->ot, &bk->add_out, BS);
    } else {
        memset(w->dot, 0, sizeof(float) * BS * D); /* text queries' outputs are unused */
    }
    /* X2 = X1 + g*FF(LN(X1)(1+sc)+sh);  X1 = X + g'*to_out(O_image) (+ g''*attn2.to_out(O2)) */
    ff_bwd(w, B, w->dX, w->dtx, w->dn, w->dmodx, c->modx, lx, c->x_mid, c->nx2, c->hx, c->gx, c->fx, &bk->ff1,
           &bk->ff2, &gb->ff1, &gb->ff2, N);
    if (bk->dual) { /* attn2: O2 = attn(q2(n2), k2(n2), v2(n2)), n2 = LN(X)(1+sc2)+sh2; dX passes through */
        op_add_gated_bwd(w->dtx, w->dmodx + 8 * D, w->dX, c->a2, c->modx + 8 * D, lx, B, N, D);
        lin_b(w->doi, 0, &gb->out2, w->dtx, c->o2, &bk->out2, BN);
        const size_t nd = (size_t)N * D, pn = (size_t)H * N * N;
        for (int b = 0; b < B; b++) {
            const size_t o = b * nd;
            const int rc = attn_materialized_bwd(w->dqi + o, w->dki + o, w->dvi + o, w->doi + o, c->q2 + o, c->k2 + o,
                                                 c->v2 + o, c->o2 + o, c->p2 + b * pn, N, H, dh, D, scale);
            if (rc < 0) return rc;
        }
        const float *dq = w->dqi, *dk = w->dki;
        if (w->qk) {
            op_rmsnorm_heads_bwd(w->dqri, (float *)gb->norm_q2, w->dqi, c->q2r, bk->norm_q2, BN, H, dh, LN_EPS);
            op_rmsnorm_heads_bwd(w->dkri, (float *)gb->norm_k2, w->dki, c->k2r, bk->norm_k2, BN, H, dh, LN_EPS);
            dq = w->dqri, dk = w->dkri;
        }
        lin_b(w->dn2, 0, &gb->q2, dq, c->n2, &bk->q2, BN);
        lin_b(w->dn2, 1, &gb->k2, dk, c->n2, &bk->k2, BN);
        lin_b(w->dn2, 1, &gb->v2, w->dvi, c->n2, &bk->v2, BN);
    }
    op_add_gated_bwd(w->dtx, w->dmodx + 2 * D, w->dX, c->ax, c->modx + 2 * D, lx, B, N, D);
    lin_b(w->doi, 0, &gb->out, w->dtx, w->oi, &bk->out, BN);
    merge(w->dO, w->doi, w->dot, B, N, S, D);
    const size_t td = (size_t)T * D, pp = (size_t)H * T * T;
    for (int b = 0; b < B; b++) {
        const size_t o = b * td;
        const int rc = attn_materialized_bwd(w->dQ + o, w->dK + o, w->dV + o, w->dO + o, c->q + o, c->k + o, c->v + o,
                                             c->o + o, c->p + b * pp, T, H, dh, D, scale);
        if (rc < 0) return rc;
    }
    split(w->dqi, w->dqt, w->dQ, B, N, S, D);
    split(w->dki, w->dkt, w->dK, B, N, S, D);
    split(w->dvi, w->dvt, w->dV, B, N, S, D);
    const float *dqi = w->dqi, *dki = w->dki, *dqt = w->dqt, *dkt = w->dkt;
    if (w->qk) {
        split(w->qri, w->qrt, c->qr, B, N, S, D);
        split(w->kri, w->krt, c->kr, B, N, S, D);
        op_rmsnorm_heads_bwd(w->dqri, (float *)gb->norm_q, w->dqi, w->qri, bk->norm_q, BN, H, dh, LN_EPS);
        op_rmsnorm_heads_bwd(w->dkri, (float *)gb->norm_k, w->dki, w->kri, bk->norm_k, BN, H, dh, LN_EPS);
        op_rmsnorm_heads_bwd(w->dqrt, (float *)gb->norm_added_q, w->dqt, w->qrt, bk->norm_added_q, BS, H, dh, LN_EPS);
        op_rmsnorm_heads_bwd(w->dkrt, (float *)gb->norm_added_k, w->dkt, w->krt, bk->norm_added_k, BS, H, dh, LN_EPS);
        dqi = w->dqri, dki = w->dkri, dqt = w->dqrt, dkt = w->dkrt;
    }
    lin_b(w->dn, 0, &gb->q, dqi, c->nx, &bk->q, BN);
    lin_b(w->dn, 1, &gb->k, dki, c->nx, &bk->k, BN);
    lin_b(w->dn, 1, &gb->v, w->dvi, c->nx, &bk->v, BN);
    op_ln_modulate_bwd(w->dX, w->dmodx, w->dmodx + D, w->dn, c->x_in, c->modx + D, lx, B, N, D, LN_EPS, w->xhat);
    if (bk->dual) /* attn2's LN of the block's input: modx rows 6 (shift), 7 (scale) */
        op_ln_modulate_bwd(w->dX, w->dmodx + 6 * D, w->dmodx + 7 * D, w->dn2, c->x_in, c->modx + 7 * D, lx, B, N, D,
                           LN_EPS, w->xhat);
    lin_b(w->dnc, 0, &gb->add_q, dqt, c->nc, &bk->add_q, BS);
    lin_b(w->dnc, 1, &gb->add_k, dkt, c->nc, &bk->add_k, BS);
    lin_b(w->dnc, 1, &gb->add_v, w->dvt, c->nc, &bk->add_v, BS);
    if (bk->last) /* AdaLayerNormContinuous: scale rows first, then shift */
        op_ln_modulate_bwd(w->dC, w->dmodc + D, w->dmodc, w->dnc, c->c_in, c->modc, lc, B, S, D, LN_EPS, w->xhat);
    else
        op_ln_modulate_bwd(w->dC, w->dmodc, w->dmodc + D, w->dnc, c->c_in, c->modc + D, lc, B, S, D, LN_EPS, w->xhat);
    lin_b(w->dstemb, 1, &gb->norm1, w->dmodx, cache->stemb, &bk->norm1, B);
    lin_b(w->dstemb, 1, &gb->norm1_ctx, w->dmodc, cache->stemb, &bk->norm1_ctx, B);
    return 0;
}

void sd3_unpatchify_bwd(float *dy, const float *dout, int B, int C, int Hi, int Wi, int p) {
    const int h = Hi / p, w = Wi / p, pp = p * p * C;
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++) {
                float *yt = dy + (((size_t)b * h + r) * w + q) * pp;
                for (int py = 0; py < p; py++)
                    for (int px = 0; px < p; px++)
                        for (int c = 0; c < C; c++)
                            yt[(py * p + px) * C + c] = dout[(((size_t)b * C + c) * Hi + r * p + py) * Wi + q * p + px];
            }
}

int sd3_backward(const sd3_model *m, const sd3_model *dm, sd3_bwd_ws *w, const sd3_cache *c, const float *dout,
                 const float *ctx, const float *pooled, int B, float *dctx, float *dpooled) {
    if (B < 1 || B > w->Bmax || B > c->B || c->N != w->N || c->S != w->S)
        return ss_fail(SS_EARG, "backward: batch %d of %d + %d tokens does not fit the gradient buffers (%d x (%d + %d)) "
                       "or the cache (%d x (%d + %d))", B, c->N, c->S, w->Bmax, w->N, w->S, c->B, c->N, c->S);
    const int N = w->N, S = w->S, D = w->D, BN = B * N, BS = B * S, p = m->cfg.patch_size;
    sd3_unpatchify_bwd(w->dY, dout, B, m->cfg.out_channels, w->Hi, w->Wi, p);
    memset(w->dstemb, 0, sizeof(float) * B * D);
    memset(w->dmodF, 0, sizeof(float) * B * 2 * D);
    memset(w->dX, 0, sizeof(float) * BN * D);
    memset(w->dC, 0, sizeof(float) * BS * D);
    /* final layer: proj_out(LN(X)(1+scale)+shift), norm_out rows (scale, shift) */
    lin_b(w->dn, 0, &dm->proj_out, w->dY, c->nf, &m->proj_out, BN);
    op_ln_modulate_bwd(w->dX, w->dmodF + D, w->dmodF, w->dn, c->x_out, c->modf, 2 * D, B, N, D, LN_EPS, w->xhat);
    lin_b(w->dstemb, 1, &dm->norm_out, w->dmodF, c->stemb, &m->norm_out, B);
    for (int i = w->L - 1; i >= 0; i--) {
        const int rc = block_bwd(m, dm, w, c, B, i);
        if (rc < 0) return rc;
    }
    /* conditioning: stemb = silu(t2(silu(t1(sinusoid))) + p2(silu(p1(pooled)))) */
    op_silu_bwd(w->dtemb, w->dstemb, c->temb, (size_t)B * D);
    lin_b(w->ds1, 0, &dm->t2, w->dtemb, c->t_s, &m->t2, B);
    op_silu_bwd(w->ds1, w->ds1, c->t_h, (size_t)B * D);
    lin_b(NULL, 0, &dm->t1, w->ds1, c->temb0, &m->t1, B);
    lin_b(w->ds2, 0, &dm->p2, w->dtemb, c->p_s, &m->p2, B);
    op_silu_bwd(w->ds2, w->ds2, c->p_h, (size_t)B * D);
    lin_b(dpooled, 0, &dm->p1, w->ds2, pooled, &m->p1, B);
    lin_b(dctx, 0, &dm->ctx_embed, w->dC, ctx, &m->ctx_embed, BS);
    lin_b(NULL, 0, &dm->patch, w->dX, c->pv, &m->patch, BN);
    return 0;
}
