/* Training forward pass with activation cache, and its backward pass (sd3.c is the reference
 * forward; dit-spec.md section 2). Streams are kept apart: image rows [B*N, D], text rows
 * [B*S, D], so every linear layer is one large matrix product; attention gathers the joint
 * (image-first) token order per (batch, head). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/ops.h"
#include "train/tops.h"
#include "train/train.h"

typedef struct {
    float *modx, *modc;                     /* [B, 6D], [B, 6D or 2D] */
    float *xh1, *nx, *rs1x, *ch1, *nc, *rs1c; /* first LN + modulation, both streams */
    float *qi, *ki, *vi, *qt, *kt, *vt;     /* attention inputs (after QK norm) */
    float *qri, *kri, *qrt, *krt;           /* before QK norm (qk_norm only) */
    float *rqi, *rki, *rqt, *rkt;           /* QK norm 1/rms per (row, head) */
    float *P, *oi, *ot, *ax, *ac;           /* probabilities [B,H,T,T], outputs, projections */
    float *xh2, *n2x, *rs2x, *hx, *gx, *fx; /* image FF: LN, modulated, pre/post GELU, out */
    float *ch2, *n2c, *rs2c, *hc, *gc, *fc; /* text FF */
} blk_cache;

struct tr_ws {
    int Bmax, B, N, S, T, D, F, H, dh, Cp, Co, J, C, Hi, Wi, L, qk;
    float *pool;
    size_t nfloats;
    int32_t *ids;
    float *ehs, *pooled, *pv, *temb0, *ht, *st, *hp, *sp, *temb, *stemb, *X, *Cs;
    float *xhF, *rsF, *nF, *modF, *Y, *outbuf, *xt, *tt, *dout;
    blk_cache *bc;
    /* backward */
    float *dX, *dC, *dn, *dnc, *dtx, *dtc, *dhid, *doi, *dot, *dqi, *dki, *dvi, *dqt, *dkt, *dvt;
    float *dqri, *dkri, *dqrt, *dkrt, *dmodx, *dmodc, *dmodF, *dstemb, *dtemb, *ds1, *ds2, *dY, *dehs, *dpooled;
};

/* Assigns every buffer from `base` (or only counts when base is NULL). */
static size_t layout(tr_ws *w, float *base) {
    size_t off = 0;
#define A(ptr, n) (ptr = base ? base + off : NULL, off += ((size_t)(n) + 15) / 16 * 16)
    const size_t B = w->Bmax, BN = B * w->N, BS = B * w->S, D = w->D, F = w->F, H = w->H, T = w->T;
    A(w->ehs, BS * w->J); A(w->pooled, B * w->J); A(w->pv, BN * w->Cp); A(w->temb0, B * 256);
    A(w->ht, B * D); A(w->st, B * D); A(w->hp, B * D); A(w->sp, B * D); A(w->temb, B * D); A(w->stemb, B * D);
    A(w->X, BN * D); A(w->Cs, BS * D);
    A(w->xhF, BN * D); A(w->rsF, BN); A(w->nF, BN * D); A(w->modF, B * 2 * D); A(w->Y, BN * w->Co);
    const size_t img = B * w->C * w->Hi * w->Wi;
    A(w->outbuf, img); A(w->xt, img); A(w->tt, B); A(w->dout, img);
    for (int i = 0; i < w->L; i++) {
        blk_cache *c = &w->bc[i];
        A(c->modx, B * 6 * D); A(c->modc, B * 6 * D);
        A(c->xh1, BN * D); A(c->nx, BN * D); A(c->rs1x, BN); A(c->ch1, BS * D); A(c->nc, BS * D); A(c->rs1c, BS);
        A(c->qi, BN * D); A(c->ki, BN * D); A(c->vi, BN * D); A(c->qt, BS * D); A(c->kt, BS * D); A(c->vt, BS * D);
        if (w->qk) {
            A(c->qri, BN * D); A(c->kri, BN * D); A(c->qrt, BS * D); A(c->krt, BS * D);
            A(c->rqi, BN * H); A(c->rki, BN * H); A(c->rqt, BS * H); A(c->rkt, BS * H);
        }
        A(c->P, B * H * T * T); A(c->oi, BN * D); A(c->ot, BS * D); A(c->ax, BN * D); A(c->ac, BS * D);
        A(c->xh2, BN * D); A(c->n2x, BN * D); A(c->rs2x, BN); A(c->hx, BN * F); A(c->gx, BN * F); A(c->fx, BN * D);
        A(c->ch2, BS * D); A(c->n2c, BS * D); A(c->rs2c, BS); A(c->hc, BS * F); A(c->gc, BS * F); A(c->fc, BS * D);
    }
    A(w->dX, BN * D); A(w->dC, BS * D); A(w->dn, BN * D); A(w->dnc, BS * D); A(w->dtx, BN * D); A(w->dtc, BS * D);
    A(w->dhid, (BN > BS ? BN : BS) * F); A(w->doi, BN * D); A(w->dot, BS * D);
    A(w->dqi, BN * D); A(w->dki, BN * D); A(w->dvi, BN * D); A(w->dqt, BS * D); A(w->dkt, BS * D); A(w->dvt, BS * D);
    if (w->qk) { A(w->dqri, BN * D); A(w->dkri, BN * D); A(w->dqrt, BS * D); A(w->dkrt, BS * D); }
    A(w->dmodx, B * 6 * D); A(w->dmodc, B * 6 * D); A(w->dmodF, B * 2 * D); A(w->dstemb, B * D); A(w->dtemb, B * D);
    A(w->ds1, B * D); A(w->ds2, B * D); A(w->dY, BN * w->Co); A(w->dehs, BS * w->J); A(w->dpooled, B * w->J);
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
    w->Cp = c->in_channels * p * p;
    w->Co = c->out_channels * p * p;
    w->J = m->tcfg.hidden_size;
    w->L = c->num_layers;
    w->qk = c->qk_norm;
    w->bc = ss_calloc((size_t)w->L, sizeof *w->bc);
    w->ids = ss_malloc(sizeof(int32_t) * (size_t)B * w->S);
    if (!w->bc || !w->ids) {
        tr_ws_free(w);
        return SS_ENOMEM;
    }
    w->nfloats = layout(w, NULL);
    w->pool = malloc(sizeof(float) * w->nfloats);
    if (!w->pool) {
        size_t mb = w->nfloats * sizeof(float) >> 20;
        tr_ws_free(w);
        return ss_fail(SS_ENOMEM, "trainer: out of memory for the activations of batch %d (%zu MiB)", B, mb);
    }
    layout(w, w->pool);
    *out = w;
    return 0;
}

void tr_ws_free(tr_ws *w) {
    if (!w) return;
    free(w->pool);
    free(w->bc);
    free(w->ids);
    free(w);
}

size_t tr_ws_bytes(const tr_ws *w) { return w->nfloats * sizeof(float); }

static void lin_f(float *y, const float *x, const ss_linear *l, int M) { tr_linear_fwd(y, x, l->w, l->b, M, l->in, l->out); }

/* dx = beta*dx + dy W (dx may be NULL); grads of W and b accumulate into m->grad. */
static void lin_b(tr_model *m, float *dx, float beta, const float *dy, const float *x, const ss_linear *l, int M) {
    tr_linear_bwd(dx, beta, tr_grad_of(m, l->w), tr_grad_of(m, l->b), dy, x, l->w, M, l->in, l->out);
}

static void block_fwd(const tr_model *m, tr_ws *w, int i) {
    const sd3_block *bk = &m->view.blocks[i];
    blk_cache *c = &w->bc[i];
    const int B = w->B, N = w->N, S = w->S, D = w->D, H = w->H, dh = w->dh, BN = B * N, BS = B * S;
    const int lc = bk->last ? 2 * D : 6 * D; /* row stride of the text modulation */
    lin_f(c->modx, w->stemb, &bk->norm1, B);
    lin_f(c->modc, w->stemb, &bk->norm1_ctx, B);
    tr_lnmod_fwd(c->nx, c->xh1, c->rs1x, w->X, c->modx, c->modx + D, 6 * D, B, N, D);
    if (bk->last) /* AdaLayerNormContinuous: scale rows first, then shift */
        tr_lnmod_fwd(c->nc, c->ch1, c->rs1c, w->Cs, c->modc + D, c->modc, lc, B, S, D);
    else
        tr_lnmod_fwd(c->nc, c->ch1, c->rs1c, w->Cs, c->modc, c->modc + D, lc, B, S, D);
    if (w->qk) {
        lin_f(c->qri, c->nx, &bk->q, BN);
        lin_f(c->kri, c->nx, &bk->k, BN);
        lin_f(c->qrt, c->nc, &bk->add_q, BS);
        lin_f(c->krt, c->nc, &bk->add_k, BS);
        tr_rms_fwd(c->qi, c->rqi, c->qri, bk->norm_q, BN, H, dh);
        tr_rms_fwd(c->ki, c->rki, c->kri, bk->norm_k, BN, H, dh);
        tr_rms_fwd(c->qt, c->rqt, c->qrt, bk->norm_added_q, BS, H, dh);
        tr_rms_fwd(c->kt, c->rkt, c->krt, bk->norm_added_k, BS, H, dh);
    } else {
        lin_f(c->qi, c->nx, &bk->q, BN);
        lin_f(c->ki, c->nx, &bk->k, BN);
        lin_f(c->qt, c->nc, &bk->add_q, BS);
        lin_f(c->kt, c->nc, &bk->add_k, BS);
    }
    lin_f(c->vi, c->nx, &bk->v, BN);
    lin_f(c->vt, c->nc, &bk->add_v, BS);
    tr_attn_fwd(c->oi, c->ot, c->P, c->qi, c->ki, c->vi, c->qt, c->kt, c->vt, B, H, N, S, dh);
    lin_f(c->ax, c->oi, &bk->out, BN);
    tr_gated_fwd(w->X, c->ax, c->modx + 2 * D, 6 * D, B, N, D);
    /* image feed-forward */
    tr_lnmod_fwd(c->n2x, c->xh2, c->rs2x, w->X, c->modx + 3 * D, c->modx + 4 * D, 6 * D, B, N, D);
    lin_f(c->hx, c->n2x, &bk->ff1, BN);
    tr_gelu_fwd(c->gx, c->hx, (size_t)BN * w->F);
    lin_f(c->fx, c->gx, &bk->ff2, BN);
    tr_gated_fwd(w->X, c->fx, c->modx + 5 * D, 6 * D, B, N, D);
    if (bk->last) return; /* the last block's text output is discarded */
    lin_f(c->ac, c->ot, &bk->add_out, BS);
    tr_gated_fwd(w->Cs, c->ac, c->modc + 2 * D, 6 * D, B, S, D);
    tr_lnmod_fwd(c->n2c, c->ch2, c->rs2c, w->Cs, c->modc + 3 * D, c->modc + 4 * D, 6 * D, B, S, D);
    lin_f(c->hc, c->n2c, &bk->cff1, BS);
    tr_gelu_fwd(c->gc, c->hc, (size_t)BS * w->F);
    lin_f(c->fc, c->gc, &bk->cff2, BS);
    tr_gated_fwd(w->Cs, c->fc, c->modc + 5 * D, 6 * D, B, S, D);
}

int tr_forward(const tr_model *m, tr_ws *w, const float *x, const float *t, const int32_t *ids, int B, float *out) {
    if (B < 1 || B > w->Bmax) return ss_fail(SS_EARG, "trainer: batch %d outside the work space's 1..%d", B, w->Bmax);
    const sd3_model *v = &m->view;
    const int N = w->N, S = w->S, D = w->D, BN = B * N, BS = B * S, p = m->cfg.patch_size;
    const int V = m->tcfg.vocab_size;
    for (int i = 0; i < BS; i++)
        if (ids[i] < 0 || ids[i] >= V) return ss_fail(SS_EARG, "trainer: token id %d outside 0..%d", (int)ids[i], V - 1);
    w->B = B;
    memcpy(w->ids, ids, sizeof(int32_t) * BS);
    tr_embed_fwd(w->ehs, w->pooled, m->tok_emb, m->pos_emb, ids, B, S, w->J);
    /* 1-2. patch embedding plus the (frozen) centre-cropped position table */
    tr_patchify(w->pv, x, B, w->C, w->Hi, w->Wi, p);
    lin_f(w->X, w->pv, &v->patch, BN);
    const int M = m->cfg.pos_embed_max_size, gh = w->Hi / p, gw = w->Wi / p, top = (M - gh) / 2, left = (M - gw) / 2;
#pragma omp parallel for schedule(static) if ((size_t)BN * D > 32768)
    for (int r = 0; r < BN; r++) {
        const int n = r % N, row = n / gw, col = n % gw;
        const float *pr = m->pos_table + ((size_t)(top + row) * M + left + col) * D;
        float *xr = w->X + (size_t)r * D;
        for (int d = 0; d < D; d++) xr[d] += pr[d];
    }
    /* 3. conditioning: temb = t2(silu(t1(sinusoid(t)))) + p2(silu(p1(pooled))) */
    op_timestep_embedding(w->temb0, t, B, 256);
    lin_f(w->ht, w->temb0, &v->t1, B);
    tr_silu_fwd(w->st, w->ht, (size_t)B * D);
    lin_f(w->temb, w->st, &v->t2, B);
    lin_f(w->hp, w->pooled, &v->p1, B);
    tr_silu_fwd(w->sp, w->hp, (size_t)B * D);
    lin_f(w->stemb, w->sp, &v->p2, B); /* stemb as scratch for the pooled branch */
    for (int i = 0; i < B * D; i++) w->temb[i] += w->stemb[i];
    tr_silu_fwd(w->stemb, w->temb, (size_t)B * D);
    lin_f(w->Cs, w->ehs, &v->ctx_embed, BS);
    for (int i = 0; i < w->L; i++) block_fwd(m, w, i);
    /* 5. AdaLayerNormContinuous (scale, shift) + proj_out, 6. unpatchify */
    lin_f(w->modF, w->stemb, &v->norm_out, B);
    tr_lnmod_fwd(w->nF, w->xhF, w->rsF, w->X, w->modF + D, w->modF, 2 * D, B, N, D);
    lin_f(w->Y, w->nF, &v->proj_out, BN);
    tr_unpatchify(out ? out : w->outbuf, w->Y, B, m->cfg.out_channels, w->Hi, w->Wi, p);
    return 0;
}

static void block_bwd(tr_model *m, tr_ws *w, int i) {
    const sd3_block *bk = &m->view.blocks[i];
    blk_cache *c = &w->bc[i];
    const int B = w->B, N = w->N, S = w->S, D = w->D, H = w->H, dh = w->dh, F = w->F, BN = B * N, BS = B * S;
    const int lc = bk->last ? 2 * D : 6 * D;
    memset(w->dmodx, 0, sizeof(float) * B * 6 * D);
    memset(w->dmodc, 0, sizeof(float) * B * lc);
    if (!bk->last) {
        /* C2 = C1 + g*FF(LN(C1)(1+sc)+sh);  C1 = C + g'*add_out(O_text) */
        tr_gated_bwd(w->dtc, w->dmodc + 5 * D, w->dC, c->fc, c->modc + 5 * D, lc, B, S, D);
        lin_b(m, w->dhid, 0, w->dtc, c->gc, &bk->cff2, BS);
        tr_gelu_bwd(w->dhid, w->dhid, c->hc, (size_t)BS * F);
        lin_b(m, w->dnc, 0, w->dhid, c->n2c, &bk->cff1, BS);
        tr_lnmod_bwd(w->dC, w->dmodc + 3 * D, w->dmodc + 4 * D, w->dnc, c->ch2, c->rs2c, c->modc + 4 * D, lc, B, S, D);
        tr_gated_bwd(w->dtc, w->dmodc + 2 * D, w->dC, c->ac, c->modc + 2 * D, lc, B, S, D);
        lin_b(m, w->dot, 0, w->dtc, c->ot, &bk->add_out, BS);
    } else {
        memset(w->dot, 0, sizeof(float) * BS * D); /* text queries' outputs are unused */
    }
    /* X2 = X1 + g*FF(LN(X1)(1+sc)+sh);  X1 = X + g'*to_out(O_image) */
    tr_gated_bwd(w->dtx, w->dmodx + 5 * D, w->dX, c->fx, c->modx + 5 * D, 6 * D, B, N, D);
    lin_b(m, w->dhid, 0, w->dtx, c->gx, &bk->ff2, BN);
    tr_gelu_bwd(w->dhid, w->dhid, c->hx, (size_t)BN * F);
    lin_b(m, w->dn, 0, w->dhid, c->n2x, &bk->ff1, BN);
    tr_lnmod_bwd(w->dX, w->dmodx + 3 * D, w->dmodx + 4 * D, w->dn, c->xh2, c->rs2x, c->modx + 4 * D, 6 * D, B, N, D);
    tr_gated_bwd(w->dtx, w->dmodx + 2 * D, w->dX, c->ax, c->modx + 2 * D, 6 * D, B, N, D);
    lin_b(m, w->doi, 0, w->dtx, c->oi, &bk->out, BN);
    tr_attn_bwd(w->dqi, w->dki, w->dvi, w->dqt, w->dkt, w->dvt, w->doi, w->dot, c->oi, c->ot, c->P, c->qi, c->ki,
                c->vi, c->qt, c->kt, c->vt, B, H, N, S, dh);
    const float *dqi = w->dqi, *dki = w->dki, *dqt = w->dqt, *dkt = w->dkt;
    const float *xqi = c->nx, *xqt = c->nc;
    if (w->qk) {
        tr_rms_bwd(w->dqri, tr_grad_of(m, bk->norm_q), w->dqi, c->qri, c->rqi, bk->norm_q, BN, H, dh);
        tr_rms_bwd(w->dkri, tr_grad_of(m, bk->norm_k), w->dki, c->kri, c->rki, bk->norm_k, BN, H, dh);
        tr_rms_bwd(w->dqrt, tr_grad_of(m, bk->norm_added_q), w->dqt, c->qrt, c->rqt, bk->norm_added_q, BS, H, dh);
        tr_rms_bwd(w->dkrt, tr_grad_of(m, bk->norm_added_k), w->dkt, c->krt, c->rkt, bk->norm_added_k, BS, H, dh);
        dqi = w->dqri, dki = w->dkri, dqt = w->dqrt, dkt = w->dkrt;
    }
    lin_b(m, w->dn, 0, dqi, xqi, &bk->q, BN);
    lin_b(m, w->dn, 1, dki, xqi, &bk->k, BN);
    lin_b(m, w->dn, 1, w->dvi, xqi, &bk->v, BN);
    tr_lnmod_bwd(w->dX, w->dmodx, w->dmodx + D, w->dn, c->xh1, c->rs1x, c->modx + D, 6 * D, B, N, D);
    lin_b(m, w->dnc, 0, dqt, xqt, &bk->add_q, BS);
    lin_b(m, w->dnc, 1, dkt, xqt, &bk->add_k, BS);
    lin_b(m, w->dnc, 1, w->dvt, xqt, &bk->add_v, BS);
    if (bk->last)
        tr_lnmod_bwd(w->dC, w->dmodc + D, w->dmodc, w->dnc, c->ch1, c->rs1c, c->modc, lc, B, S, D);
    else
        tr_lnmod_bwd(w->dC, w->dmodc, w->dmodc + D, w->dnc, c->ch1, c->rs1c, c->modc + D, lc, B, S, D);
    lin_b(m, w->dstemb, 1, w->dmodx, w->stemb, &bk->norm1, B);
    lin_b(m, w->dstemb, 1, w->dmodc, w->stemb, &bk->norm1_ctx, B);
}

int tr_backward(tr_model *m, tr_ws *w, const float *dout) {
    const sd3_model *v = &m->view;
    const int B = w->B, N = w->N, S = w->S, D = w->D, BN = B * N, BS = B * S, p = m->cfg.patch_size;
    tr_unpatchify_bwd(w->dY, dout, B, m->cfg.out_channels, w->Hi, w->Wi, p);
    memset(w->dstemb, 0, sizeof(float) * B * D);
    memset(w->dmodF, 0, sizeof(float) * B * 2 * D);
    memset(w->dX, 0, sizeof(float) * BN * D);
    memset(w->dC, 0, sizeof(float) * BS * D);
    lin_b(m, w->dn, 0, w->dY, w->nF, &v->proj_out, BN);
    tr_lnmod_bwd(w->dX, w->dmodF + D, w->dmodF, w->dn, w->xhF, w->rsF, w->modF, 2 * D, B, N, D);
    lin_b(m, w->dstemb, 1, w->dmodF, w->stemb, &v->norm_out, B);
    for (int i = w->L - 1; i >= 0; i--) block_bwd(m, w, i);
    /* conditioning */
    tr_silu_bwd(w->dtemb, w->dstemb, w->temb, (size_t)B * D);
    lin_b(m, w->ds1, 0, w->dtemb, w->st, &v->t2, B);
    tr_silu_bwd(w->ds1, w->ds1, w->ht, (size_t)B * D);
    lin_b(m, NULL, 0, w->ds1, w->temb0, &v->t1, B);
    lin_b(m, w->ds2, 0, w->dtemb, w->sp, &v->p2, B);
    tr_silu_bwd(w->ds2, w->ds2, w->hp, (size_t)B * D);
    lin_b(m, w->dpooled, 0, w->ds2, w->pooled, &v->p1, B);
    lin_b(m, w->dehs, 0, w->dC, w->ehs, &v->ctx_embed, BS);
    lin_b(m, NULL, 0, w->dX, w->pv, &v->patch, BN);
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
