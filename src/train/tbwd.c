/* The trainer's step: the model's own forward (sd3_forward_cache, which records the activations)
 * and the backward pass through it, block by block in reverse, with core/ops_bwd.h's ops.
 * Parameter gradients of a linear layer are one matrix product over the whole batch: the joint
 * (image rows, then text rows, per batch element) arrays of the cache are split into the image
 * rows [B*N, D] and text rows [B*S, D] of all batch elements first. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/ops_bwd.h"
#include "text/tokenizer.h"
#include "train/train.h"

#define LN_EPS 1e-6f /* the model's LayerNorm and RMSNorm eps (sd3.c) */

struct tr_ws {
    int Bmax, B, N, S, T, D, F, H, dh, J, C, Hi, Wi, L, qk;
    sd3_workspace *ws; /* the forward's working memory */
    sd3_cache *cache;  /* the forward's activations */
    float *pool;
    size_t nfloats;
    int32_t *ids;
    float *ehs, *pooled, *outbuf, *xt, *tt, *dout; /* text encoder outputs; tr_loss_grad's buffers */
    /* backward: stream gradients, joint gradients, split copies of joint activations, scratch */
    float *dX, *dC, *dn, *dnc, *dtx, *dtc, *dhid, *doi, *dot, *dqi, *dki, *dvi, *dqt, *dkt, *dvt;
    float *dqri, *dkri, *dqrt, *dkrt, *dO, *dQ, *dK, *dV;
    float *oi, *ot, *qri, *kri, *qrt, *krt, *xhat;
    float *dmodx, *dmodc, *dmodF, *dstemb, *dtemb, *ds1, *ds2, *dY, *dehs, *dpooled;
};

/* Assigns every buffer from `base` (or only counts when base is NULL). */
static size_t layout(tr_ws *w, float *base) {
    size_t off = 0;
#define A(ptr, n) (ptr = base ? base + off : NULL, off += ((size_t)(n) + 15) / 16 * 16)
    const size_t B = w->Bmax, BN = B * w->N, BS = B * w->S, BT = B * w->T, D = w->D, F = w->F;
    const size_t img = B * w->C * w->Hi * w->Wi, Co = img / BN;
    A(w->ehs, BS * w->J); A(w->pooled, B * w->J);
    A(w->outbuf, img); A(w->xt, img); A(w->tt, B); A(w->dout, img);
    A(w->dX, BN * D); A(w->dC, BS * D); A(w->dn, BN * D); A(w->dnc, BS * D); A(w->dtx, BN * D); A(w->dtc, BS * D);
    A(w->dhid, (BN > BS ? BN : BS) * F); A(w->doi, BN * D); A(w->dot, BS * D);
    A(w->dqi, BN * D); A(w->dki, BN * D); A(w->dvi, BN * D); A(w->dqt, BS * D); A(w->dkt, BS * D); A(w->dvt, BS * D);
    A(w->dO, BT * D); A(w->dQ, BT * D); A(w->dK, BT * D); A(w->dV, BT * D);
    A(w->oi, BN * D); A(w->ot, BS * D); A(w->xhat, (BN > BS ? BN : BS) * D);
    if (w->qk) {
        A(w->dqri, BN * D); A(w->dkri, BN * D); A(w->dqrt, BS * D); A(w->dkrt, BS * D);
        A(w->qri, BN * D); A(w->kri, BN * D); A(w->qrt, BS * D); A(w->krt, BS * D);
    }
    A(w->dmodx, B * 6 * D); A(w->dmodc, B * 6 * D); A(w->dmodF, B * 2 * D); A(w->dstemb, B * D); A(w->dtemb, B * D);
    A(w->ds1, B * D); A(w->ds2, B * D); A(w->dY, BN * Co); A(w->dehs, BS * w->J); A(w->dpooled, B * w->J);
#undef A
    return off;
}

int tr_ws_new(tr_ws **out, const tr_model *m, int B) {
    *out = NULL;
    const sd3_config *c = &m->cfg;
    const int p = c->patch_size;
    if (B < 1) return ss_fail(SS_EARG, "trainer: batch size must be positive");
    if (c->sample_size % p) return ss_fail(SS_EARG, "trainer: sample_size %d is not a multiple of patch_size %d", c->sample_size, p);
    tr_ws *w = ss_calloc(1, sizeof *w);
    if (!w) return SS_ENOMEM;
    w->Bmax = B;
    w->Hi = w->Wi = c->sample_size;
    w->N = (c->sample_size / p) * (c->sample_size / p);
    w->S = m->tcfg.max_length;
    w->T = w->N + w->S;
    w->D = m->D;
    w->F = 4 * m->D;
    w->H = c->num_heads;
    w->dh = c->head_dim;
    w->C = c->in_channels;
    w->J = m->tcfg.hidden_size;
    w->L = c->num_layers;
    w->qk = c->qk_norm;
    int rc = sd3_workspace_new(&w->ws, &m->view, B, w->Hi, w->Wi, w->S);
    if (rc >= 0) rc = sd3_cache_new(&w->cache, &m->view, B, w->Hi, w->Wi, w->S);
    if (rc < 0) {
        tr_ws_free(w);
        return ss_err_prefix(rc, "trainer: ");
    }
    w->ids = ss_malloc(sizeof(int32_t) * (size_t)B * w->S);
    w->nfloats = layout(w, NULL);
    w->pool = malloc(sizeof(float) * w->nfloats);
    if (!w->ids || !w->pool) {
        size_t mb = w->nfloats * sizeof(float) >> 20;
        tr_ws_free(w);
        return ss_fail(SS_ENOMEM, "trainer: out of memory for the gradients of batch %d (%zu MiB)", B, mb);
    }
    layout(w, w->pool);
    *out = w;
    return 0;
}

void tr_ws_free(tr_ws *w) {
    if (!w) return;
    sd3_workspace_free(w->ws);
    sd3_cache_free(w->cache);
    free(w->pool);
    free(w->ids);
    free(w);
}

size_t tr_ws_bytes(const tr_ws *w) {
    return (w->nfloats + w->cache->floats) * sizeof(float) + sd3_workspace_bytes(w->ws);
}

int tr_forward(const tr_model *m, tr_ws *w, const float *x, const float *t, const int32_t *ids, int B, float *out) {
    if (B < 1 || B > w->Bmax) return ss_fail(SS_EARG, "trainer: batch %d outside the work space's 1..%d", B, w->Bmax);
    const int S = w->S, J = w->J, V = m->tcfg.vocab_size;
    for (int i = 0; i < B * S; i++)
        if (ids[i] < 0 || ids[i] >= V) return ss_fail(SS_EARG, "trainer: token id %d outside 0..%d", (int)ids[i], V - 1);
    w->B = B;
    memcpy(w->ids, ids, sizeof(int32_t) * B * S);
    /* the text encoder (text/encoder.h) over the arena's embeddings */
    const te enc = {.cfg = m->tcfg, .tok_emb = m->tok_emb, .pos_emb = m->pos_emb};
    int rc = 0;
    for (int b = 0; b < B && rc >= 0; b++)
        rc = te_encode_ids(&enc, ids + (size_t)b * S, w->ehs + (size_t)b * S * J, w->pooled + (size_t)b * J);
    if (rc >= 0)
        rc = sd3_forward_cache(&m->view, w->ws, w->cache, out ? out : w->outbuf, x, w->ehs, w->pooled, t, B, w->Hi,
                               w->Wi, S);
    return rc < 0 ? ss_err_prefix(rc, "trainer: ") : 0;
}

/* dx = beta*dx + dy W (dx may be NULL); grads of W and b accumulate into m->grad. */
static void lin_b(tr_model *m, float *dx, float beta, const float *dy, const float *x, const ss_linear *l, int M) {
    op_linear_bwd(dx, beta, tr_grad_of(m, l->w), tr_grad_of(m, l->b), dy, x, l, M);
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
 * gradient of the FF's output stream) becomes the gradient of its input stream; dt, dh, dn are
 * scratch; dmod: the stream's modulation gradient (rows of ldm), mod its modulation. */
static void ff_bwd(tr_model *m, tr_ws *w, float *dx, float *dt, float *dn, float *dmod, const float *mod, int ldm,
                   const float *x_mid, const float *n2, const float *h, const float *g, const float *f,
                   const ss_linear *f1, const ss_linear *f2, int R) {
    const int B = w->B, D = w->D, BR = B * R;
    op_add_gated_bwd(dt, dmod + 5 * D, dx, f, mod + 5 * D, ldm, B, R, D);
    lin_b(m, w->dhid, 0, dt, g, f2, BR);
    op_gelu_tanh_bwd(w->dhid, w->dhid, h, (size_t)BR * w->F);
    lin_b(m, dn, 0, w->dhid, n2, f1, BR);
    op_ln_modulate_bwd(dx, dmod + 3 * D, dmod + 4 * D, dn, x_mid, mod + 4 * D, ldm, B, R, D, LN_EPS, w->xhat);
}

static int block_bwd(tr_model *m, tr_ws *w, int i) {
    const sd3_block *bk = &m->view.blocks[i];
    const sd3_block_cache *c = &w->cache->blocks[i];
    const int B = w->B, N = w->N, S = w->S, T = w->T, D = w->D, H = w->H, dh = w->dh, BN = B * N, BS = B * S;
    const int lc = bk->last ? 2 * D : 6 * D; /* row stride of the text modulation */
    memset(w->dmodx, 0, sizeof(float) * B * 6 * D);
    memset(w->dmodc, 0, sizeof(float) * B * lc);
    split(w->oi, bk->last ? NULL : w->ot, c->o, B, N, S, D);
    if (!bk->last) {
        /* C2 = C1 + g*FF(LN(C1)(1+sc)+sh);  C1 = C + g'*add_out(O_text) */
        ff_bwd(m, w, w->dC, w->dtc, w->dnc, w->dmodc, c->modc, lc, c->c_mid, c->nc2, c->hc, c->gc, c->fc, &bk->cff1,
               &bk->cff2, S);
        op_add_gated_bwd(w->dtc, w->dmodc + 2 * D, w->dC, c->ac, c->modc + 2 * D, lc, B, S, D);
        lin_b(m, w->dot, 0, w->dtc, w->ot, &bk->add_out, BS);
    } else {
        memset(w->dot, 0, sizeof(float) * BS * D); /* text queries' outputs are unused */
    }
    /* X2 = X1 + g*FF(LN(X1)(1+sc)+sh);  X1 = X + g'*to_out(O_image) */
    ff_bwd(m, w, w->dX, w->dtx, w->dn, w->dmodx, c->modx, 6 * D, c->x_mid, c->nx2, c->hx, c->gx, c->fx, &bk->ff1,
           &bk->ff2, N);
    op_add_gated_bwd(w->dtx, w->dmodx + 2 * D, w->dX, c->ax, c->modx + 2 * D, 6 * D, B, N, D);
    lin_b(m, w->doi, 0, w->dtx, w->oi, &bk->out, BN);
    merge(w->dO, w->doi, w->dot, B, N, S, D);
    const size_t td = (size_t)T * D, pp = (size_t)H * T * T;
    const float scale = 1.0f / sqrtf((float)dh); /* sd3_forward_cache's */
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
        op_rmsnorm_heads_bwd(w->dqri, tr_grad_of(m, bk->norm_q), w->dqi, w->qri, bk->norm_q, BN, H, dh, LN_EPS);
        op_rmsnorm_heads_bwd(w->dkri, tr_grad_of(m, bk->norm_k), w->dki, w->kri, bk->norm_k, BN, H, dh, LN_EPS);
        op_rmsnorm_heads_bwd(w->dqrt, tr_grad_of(m, bk->norm_added_q), w->dqt, w->qrt, bk->norm_added_q, BS, H, dh,
                             LN_EPS);
        op_rmsnorm_heads_bwd(w->dkrt, tr_grad_of(m, bk->norm_added_k), w->dkt, w->krt, bk->norm_added_k, BS, H, dh,
                             LN_EPS);
        dqi = w->dqri, dki = w->dkri, dqt = w->dqrt, dkt = w->dkrt;
    }
    lin_b(m, w->dn, 0, dqi, c->nx, &bk->q, BN);
    lin_b(m, w->dn, 1, dki, c->nx, &bk->k, BN);
    lin_b(m, w->dn, 1, w->dvi, c->nx, &bk->v, BN);
    op_ln_modulate_bwd(w->dX, w->dmodx, w->dmodx + D, w->dn, c->x_in, c->modx + D, 6 * D, B, N, D, LN_EPS, w->xhat);
    lin_b(m, w->dnc, 0, dqt, c->nc, &bk->add_q, BS);
    lin_b(m, w->dnc, 1, dkt, c->nc, &bk->add_k, BS);
    lin_b(m, w->dnc, 1, w->dvt, c->nc, &bk->add_v, BS);
    if (bk->last) /* AdaLayerNormContinuous: scale rows first, then shift */
        op_ln_modulate_bwd(w->dC, w->dmodc + D, w->dmodc, w->dnc, c->c_in, c->modc, lc, B, S, D, LN_EPS, w->xhat);
    else
        op_ln_modulate_bwd(w->dC, w->dmodc, w->dmodc + D, w->dnc, c->c_in, c->modc + D, lc, B, S, D, LN_EPS, w->xhat);
    lin_b(m, w->dstemb, 1, w->dmodx, w->cache->stemb, &bk->norm1, B);
    lin_b(m, w->dstemb, 1, w->dmodc, w->cache->stemb, &bk->norm1_ctx, B);
    return 0;
}

void tr_unpatchify_bwd(float *dy, const float *dout, int B, int C, int Hi, int Wi, int p) {
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

void tr_embed_bwd(float *dtok, float *dpos, const float *dehs, const float *dpooled, const int32_t *ids, int B, int S,
                  int J) {
    /* serial: rows of dtok are shared between batch elements (scatter-add), and this is tiny */
    for (int b = 0; b < B; b++) {
        int count = 0;
        for (int s = 0; s < S; s++) count += ids[(size_t)b * S + s] != TOK_PAD;
        const float inv = count ? 1.0f / count : 0.0f;
        for (int s = 0; s < S; s++) {
            const int id = ids[(size_t)b * S + s];
            const float *g = dehs + ((size_t)b * S + s) * J, *gp = dpooled + (size_t)b * J;
            float *t = dtok + (size_t)id * J, *ps = dpos + (size_t)s * J;
            for (int j = 0; j < J; j++) ps[j] += g[j];
            if (id != TOK_PAD)
                for (int j = 0; j < J; j++) t[j] += g[j] + gp[j] * inv;
            else
                for (int j = 0; j < J; j++) t[j] += g[j];
        }
    }
}

int tr_backward(tr_model *m, tr_ws *w, const float *dout) {
    const sd3_model *v = &m->view;
    const sd3_cache *c = w->cache;
    const int B = w->B, N = w->N, S = w->S, D = w->D, BN = B * N, BS = B * S, p = m->cfg.patch_size;
    tr_unpatchify_bwd(w->dY, dout, B, m->cfg.out_channels, w->Hi, w->Wi, p);
    memset(w->dstemb, 0, sizeof(float) * B * D);
    memset(w->dmodF, 0, sizeof(float) * B * 2 * D);
    memset(w->dX, 0, sizeof(float) * BN * D);
    memset(w->dC, 0, sizeof(float) * BS * D);
    /* final layer: proj_out(LN(X)(1+scale)+shift), norm_out rows (scale, shift) */
    lin_b(m, w->dn, 0, w->dY, c->nf, &v->proj_out, BN);
    op_ln_modulate_bwd(w->dX, w->dmodF + D, w->dmodF, w->dn, c->x_out, c->modf, 2 * D, B, N, D, LN_EPS, w->xhat);
    lin_b(m, w->dstemb, 1, w->dmodF, c->stemb, &v->norm_out, B);
    for (int i = w->L - 1; i >= 0; i--) {
        const int rc = block_bwd(m, w, i);
        if (rc < 0) return rc;
    }
    /* conditioning: stemb = silu(t2(silu(t1(sinusoid))) + p2(silu(p1(pooled)))) */
    op_silu_bwd(w->dtemb, w->dstemb, c->temb, (size_t)B * D);
    lin_b(m, w->ds1, 0, w->dtemb, c->t_s, &v->t2, B);
    op_silu_bwd(w->ds1, w->ds1, c->t_h, (size_t)B * D);
    lin_b(m, NULL, 0, w->ds1, c->temb0, &v->t1, B);
    lin_b(m, w->ds2, 0, w->dtemb, c->p_s, &v->p2, B);
    op_silu_bwd(w->ds2, w->ds2, c->p_h, (size_t)B * D);
    lin_b(m, w->dpooled, 0, w->ds2, w->pooled, &v->p1, B);
    lin_b(m, w->dehs, 0, w->dC, w->ehs, &v->ctx_embed, BS);
    lin_b(m, NULL, 0, w->dX, c->pv, &v->patch, BN);
    tr_embed_bwd(tr_grad_of(m, m->tok_emb), tr_grad_of(m, m->pos_emb), w->dehs, w->dpooled, w->ids, B, S, w->J);
    return 0;
}

double tr_loss_grad(tr_model *m, tr_ws *w, const float *x0, const float *noise, const float *sigma, const int32_t *ids,
                    int B, int want_grad) {
    if (B < 1 || B > w->Bmax) return ss_fail(SS_EARG, "trainer: batch %d outside the work space's 1..%d", B, w->Bmax);
    const size_t n = (size_t)w->C * w->Hi * w->Wi;
    /* forward process x = sigma*eps + (1-sigma)*x0, model time 1000*sigma, target eps - x0 */
    for (int b = 0; b < B; b++) {
        const float s = sigma[b];
        w->tt[b] = (float)(1000.0 * s);
        const float *e = noise + b * n, *x = x0 + b * n;
        float *o = w->xt + b * n;
        for (size_t j = 0; j < n; j++) o[j] = s * e[j] + (1.0f - s) * x[j];
    }
    int rc = tr_forward(m, w, w->xt, w->tt, ids, B, w->outbuf);
    if (rc < 0) return rc;
    const double inv = 1.0 / ((double)B * n);
    double loss = 0;
    for (int b = 0; b < B; b++) { /* per-sample sums, then in order: deterministic */
        double s = 0;
        const float *o = w->outbuf + b * n, *e = noise + b * n, *x = x0 + b * n;
        float *g = w->dout + b * n;
        for (size_t j = 0; j < n; j++) {
            const float r = o[j] - (e[j] - x[j]);
            s += (double)r * r;
            g[j] = (float)(2.0 * inv) * r;
        }
        loss += s;
    }
    loss *= inv;
    if (want_grad) {
        memset(m->grad, 0, sizeof(float) * m->n);
        if ((rc = tr_backward(m, w, w->dout)) < 0) return rc;
    }
    return loss;
}

double tr_step_flops(const tr_model *m, int B) {
    /* backward = two products per forward product (dx and dW), attention likewise */
    return 3.0 * sd3_forward_flops(&m->cfg, B, m->cfg.sample_size, m->cfg.sample_size, m->tcfg.max_length);
}
