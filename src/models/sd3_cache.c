/* sd3_cache: the activation cache of sd3_forward_cache (sd3.h), one arena. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "models/sd3.h"

/* Lays the cache's arrays out from base (NULL: only counts); returns the floats needed, or
 * SIZE_MAX when a size overflows. Every array starts on a 64-byte boundary. */
static size_t layout(sd3_cache *c, const sd3_model *m, float *base) {
    const sd3_config *cf = &m->cfg;
    const size_t B = (size_t)c->B, N = (size_t)c->N, S = (size_t)c->S, T = N + S, D = (size_t)m->D;
    const size_t H = (size_t)cf->num_heads, p = (size_t)cf->patch_size;
    size_t off = 0;
    int bad = 0;
#define A(ptr, a, b)                                                                                                   \
    do {                                                                                                               \
        size_t n_;                                                                                                     \
        if (ss_mul_size((a), (b), &n_) || n_ > SIZE_MAX / 2 - off) bad = 1;                                            \
        else {                                                                                                         \
            (ptr) = base ? base + off : NULL;                                                                          \
            off += (n_ + 15) / 16 * 16;                                                                                \
        }                                                                                                              \
    } while (0)
    A(c->pv, B * N, (size_t)cf->in_channels * p * p);
    A(c->temb0, B, 256);
    A(c->t_h, B, D); A(c->t_s, B, D); A(c->p_h, B, D); A(c->p_s, B, D);
    A(c->temb, B, D); A(c->stemb, B, D);
    A(c->x_out, B * N, D); A(c->modf, B, 2 * D); A(c->nf, B * N, D);
    A(c->y, B * N, p * p * (size_t)cf->out_channels);
    for (int i = 0; i < cf->num_layers; i++) {
        sd3_block_cache *b = &c->blocks[i];
        A(b->modx, B, (cf->dual[i] ? 9 : 6) * D); A(b->modc, B, 6 * D);
        A(b->x_in, B * N, D); A(b->c_in, B * S, D); A(b->nx, B * N, D); A(b->nc, B * S, D);
        if (cf->qk_norm) { A(b->qr, B * T, D); A(b->kr, B * T, D); }
        A(b->q, B * T, D); A(b->k, B * T, D); A(b->v, B * T, D);
        A(b->p, B * H, T * T); A(b->o, B * T, D);
        A(b->ax, B * N, D); A(b->ac, B * S, D); A(b->x_mid, B * N, D); A(b->c_mid, B * S, D);
        A(b->nx2, B * N, D); A(b->nc2, B * S, D);
        A(b->hx, B * N, 4 * D); A(b->hc, B * S, 4 * D); A(b->gx, B * N, 4 * D); A(b->gc, B * S, 4 * D);
        A(b->fx, B * N, D); A(b->fc, B * S, D);
        if (cf->dual[i]) {
            A(b->n2, B * N, D);
            if (cf->qk_norm) { A(b->q2r, B * N, D); A(b->k2r, B * N, D); }
            A(b->q2, B * N, D); A(b->k2, B * N, D); A(b->v2, B * N, D);
            A(b->p2, B * H, N * N); A(b->o2, B * N, D); A(b->a2, B * N, D);
        }
    }
#undef A
    return bad ? SIZE_MAX : off;
}

int sd3_cache_new(sd3_cache **out, const sd3_model *m, int B, int Hl, int Wl, int S) {
    *out = NULL;
    int N = 0, rc = sd3_image_tokens(m, B, Hl, Wl, S, &N);
    if (rc < 0) return rc;
    sd3_cache *c = ss_calloc(1, sizeof *c);
    if (!c) return SS_ENOMEM;
    c->B = B, c->N = N, c->S = S;
    c->blocks = ss_calloc((size_t)m->cfg.num_layers, sizeof *c->blocks);
    c->floats = layout(c, m, NULL);
    size_t bytes = 0;
    if (c->blocks && c->floats != SIZE_MAX && !ss_mul_size(c->floats, sizeof(float), &bytes))
        c->arena = malloc(bytes);
    if (!c->arena) {
        sd3_cache_free(c);
        return ss_fail(SS_ENOMEM, "activation cache: out of memory (B=%d, N=%d, S=%d, D=%d: %zu MiB)", B, N, S, m->D,
                       bytes >> 20);
    }
    layout(c, m, c->arena);
    *out = c;
    return 0;
}

void sd3_cache_free(sd3_cache *c) {
    if (!c) return;
    free(c->arena);
    free(c->blocks);
    free(c);
}
