/* The trainer's step: the text encoder and the model's own forward (sd3_forward_cache, which
 * records the activations), the flow-matching loss, and the backward pass: the model's
 * (models/sd3_bwd.c, sd3_backward) and the text encoder's embeddings'. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "models/sd3_bwd.h"
#include "text/tokenizer.h"
#include "train/train.h"

struct tr_ws {
    int Bmax, B, S, J, C, Hi, Wi;
    sd3_workspace *ws; /* the forward's working memory */
    sd3_cache *cache;  /* the forward's activations */
    sd3_bwd_ws *bwd;   /* the backward's gradient buffers */
    float *pool;
    size_t nfloats;
    int32_t *ids;
    float *ehs, *pooled, *outbuf, *xt, *tt, *dout; /* text encoder outputs; tr_loss_grad's buffers */
    float *dehs, *dpooled;                         /* their gradients */
};

/* Assigns every buffer from `base` (or only counts when base is NULL). */
static size_t layout(tr_ws *w, float *base) {
    size_t off = 0;
#define A(ptr, n) (ptr = base ? base + off : NULL, off += ((size_t)(n) + 15) / 16 * 16)
    const size_t B = w->Bmax, BS = B * w->S, img = B * w->C * w->Hi * w->Wi;
    A(w->ehs, BS * w->J); A(w->pooled, B * w->J);
    A(w->outbuf, img); A(w->xt, img); A(w->tt, B); A(w->dout, img);
    A(w->dehs, BS * w->J); A(w->dpooled, B * w->J);
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
    w->S = m->tcfg.max_length;
    w->C = c->in_channels;
    w->J = m->tcfg.hidden_size;
    int rc = sd3_workspace_new(&w->ws, &m->view, B, w->Hi, w->Wi, w->S);
    if (rc >= 0) rc = sd3_cache_new(&w->cache, &m->view, B, w->Hi, w->Wi, w->S);
    if (rc >= 0) rc = sd3_bwd_ws_new(&w->bwd, &m->view, B, w->Hi, w->Wi, w->S);
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
        return ss_fail(SS_ENOMEM, "trainer: out of memory for the text buffers of batch %d (%zu MiB)", B, mb);
    }
    layout(w, w->pool);
    *out = w;
    return 0;
}

void tr_ws_free(tr_ws *w) {
    if (!w) return;
    sd3_workspace_free(w->ws);
    sd3_cache_free(w->cache);
    sd3_bwd_ws_free(w->bwd);
    free(w->pool);
    free(w->ids);
    free(w);
}

size_t tr_ws_bytes(const tr_ws *w) {
    return (w->nfloats + w->cache->floats) * sizeof(float) + sd3_bwd_ws_bytes(w->bwd) + sd3_workspace_bytes(w->ws);
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
    const int rc = sd3_backward(&m->view, &m->gview, w->bwd, w->cache, dout, w->ehs, w->pooled, w->B, w->dehs, w->dpooled);
    if (rc < 0) return ss_err_prefix(rc, "trainer: ");
    tr_embed_bwd(tr_grad_of(m, m->tok_emb), tr_grad_of(m, m->pos_emb), w->dehs, w->dpooled, w->ids, w->B, w->S, w->J);
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
