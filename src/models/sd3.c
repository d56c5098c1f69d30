/* SD3Transformer2DModel forward pass (dit-spec.md section 2.3-2.5). */
#include "models/sd3.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* Working buffers of one forward pass, sized for B, N image and S text tokens. Each buffer is
 * sized from everything written into it (the list after each one), never from a neighbour's size:
 * a small model can have p*p*Cout > 4D or 256 > max(N,S)*D. */
typedef struct {
    float *X, *C;         /* streams [B,N,D], [B,S,D] */
    float *temb, *stemb;  /* [B,D] conditioning and silu(conditioning) */
    float *modx, *modc;   /* [B,9D] (norm1, t1/p1 hidden, norm_out), [B,6D] (norm1_context, p2) */
    float *nx, *nc, *nx2; /* modulated inputs [B,N,D], [B,S,D], [B,N,D] */
    float *Q, *K, *V, *O; /* joint [B,T,D] */
    float *ax, *ac;       /* projected attention outputs [B,N,D], [B,S,D] */
    float *hid;           /* FF hidden [max(N,S), 4D] of one batch element; proj_out [B*N, p*p*Cout] */
    float *tmp;           /* patch vectors [B*N, Cin*p*p]; FF in/out [max(N,S), D]; sinusoid [B, 256] */
} work;

#define WORK_NBUF (sizeof(work) / sizeof(float *))
#define TEMB_DIM 256 /* diffusers' Timesteps(256) in front of the timestep embedder */

/* The caller-owned working memory: the buffers and how many floats each holds now. */
struct sd3_workspace {
    work w;
    size_t cap[WORK_NBUF];
    attn_scratch *attn; /* attn_args.scratch of every attention site, hooks included */
    long allocs;        /* (re)allocations: reserves that grew anything, and attention scratch growths */
    long attn_seen;     /* attn_scratch_allocs(attn) already counted in allocs */
    int key_chunk;      /* attn_args.key_chunk of every attention site; 0 = ATTN_KC */
};

static _Atomic long g_ws_allocs; /* every workspace's allocs, process-wide (tests) */

static void work_free(work *w) {
    float **p = (float **)w;
    for (size_t i = 0; i < WORK_NBUF; i++) {
        free(p[i]);
        p[i] = NULL;
    }
}

/* a*b*c in size_t, or SIZE_MAX when it overflows (the allocation then fails cleanly). */
static size_t mul3(size_t a, size_t b, size_t c) {
    size_t ab, abc;
    if (ss_mul_size(a, b, &ab) || ss_mul_size(ab, c, &abc)) return SIZE_MAX;
    return abc;
}

static size_t max3(size_t a, size_t b, size_t c) {
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* Floats each buffer needs for B, N, S and a model of width D; cin_pp = Cin*p*p (patch vector),
 * cout_pp = p*p*Cout (proj_out row). Overflow gives SIZE_MAX (the allocation then fails). Order:
 * the fields of `work`. */
static void work_sizes(size_t n[WORK_NBUF], int B, int N, int S, int D, int cin_pp, int cout_pp) {
    const size_t T = (size_t)N + S, NS = N > S ? N : S;
    const size_t plan[] = {
        mul3(B, N, D), mul3(B, S, D),                            /* X, C */
        mul3(B, 1, D), mul3(B, 1, D),                            /* temb, stemb */
        mul3(B, 9, D), mul3(B, 6, D),                            /* modx, modc */
        mul3(B, N, D), mul3(B, S, D), mul3(B, N, D),             /* nx, nc, nx2 */
        mul3(B, T, D), mul3(B, T, D), mul3(B, T, D), mul3(B, T, D), /* Q, K, V, O */
        mul3(B, N, D), mul3(B, S, D),                            /* ax, ac */
        max3(mul3(NS, 4, D), mul3(B, N, cout_pp), 0),            /* hid */
        max3(mul3(B, N, cin_pp), mul3(NS, 1, D), mul3(B, 1, TEMB_DIM)), /* tmp */
    };
    _Static_assert(sizeof plan / sizeof plan[0] == WORK_NBUF, "one size per work buffer");
    for (size_t i = 0; i < WORK_NBUF; i++) n[i] = plan[i] ? plan[i] : 1;
}

/* Grows every buffer that holds fewer floats than B, N, S need for model m, and the attention
 * scratch for the joint sites (N + S keys, the attn2 sites have fewer; probe sums over two query
 * spans); keeps the others. On failure every buffer is released (the workspace stays usable). */
static int ws_reserve(sd3_workspace *ws, const sd3_model *m, int B, int N, int S) {
    const sd3_config *c = &m->cfg;
    const int p = c->patch_size;
    size_t n[WORK_NBUF];
    work_sizes(n, B, N, S, m->D, c->in_channels * p * p, p * p * c->out_channels);
    float **buf = (float **)&ws->w;
    int grew = 0;
    for (size_t i = 0; i < WORK_NBUF; i++) {
        if (buf[i] && ws->cap[i] >= n[i]) continue;
        size_t bytes;
        free(buf[i]);
        buf[i] = ss_mul_size(sizeof(float), n[i], &bytes) ? NULL : ss_malloc_aligned(bytes); /* bf16 operands */
        ws->cap[i] = buf[i] ? n[i] : 0;
        if (!buf[i]) {
            work_free(&ws->w);
            memset(ws->cap, 0, sizeof ws->cap);
            return ss_fail(SS_ENOMEM, "forward: out of memory (B=%d, N=%d, S=%d, D=%d)", B, N, S, m->D);
        }
        grew = 1;
    }
    if (!ws->attn && !(ws->attn = attn_scratch_new())) return SS_ENOMEM;
    /* growths inside attention calls since the last reserve (a thread count raised in between) */
    ws->allocs += attn_scratch_allocs(ws->attn) - ws->attn_seen;
    const attn_args joint = {.B = B, .H = c->num_heads, .dh = c->head_dim, .T = N + S, .ld = m->D,
                             .key_chunk = ws->key_chunk, .precision = m ? m->precision : 0};
    const int rc = attn_scratch_reserve(ws->attn, &joint, 2);
    ws->attn_seen = attn_scratch_allocs(ws->attn);
    if (rc < 0) return rc;
    if (grew || rc > 0) {
        ws->allocs++;
        g_ws_allocs++;
    }
    return 0;
}

/* Image tokens of an Hl x Wl latent, with the shape checks sd3_forward makes. */
static int image_tokens(const sd3_model *m, int B, int Hl, int Wl, int S, int *N) {
    const sd3_config *c = &m->cfg;
    const int p = c->patch_size, M = c->pos_embed_max_size;
    if (B < 1 || S < 1 || Hl < p || Wl < p || Hl % p || Wl % p)
        return ss_fail(SS_ESHAPE, "forward: latent %dx%d must be a positive multiple of the patch size %d (B=%d, S=%d)",
                       Hl, Wl, p, B, S);
    const int h = Hl / p, wd = Wl / p;
    if (h > M || wd > M)
        return ss_fail(SS_ESHAPE, "forward: a latent of %dx%d gives a %dx%d patch grid, larger than pos_embed_max_size %d",
                       Hl, Wl, h, wd, M);
    /* row counts go to BLAS as int: B*(N+S) tokens must fit */
    if ((long long)B * ((long long)h * wd + S) > INT_MAX)
        return ss_fail(SS_ESHAPE, "forward: batch %d x (%d image + %d text tokens) is too large", B, h * wd, S);
    *N = h * wd;
    return 0;
}

int sd3_image_tokens(const sd3_model *m, int B, int Hl, int Wl, int S, int *N) {
    return image_tokens(m, B, Hl, Wl, S, N);
}

int sd3_workspace_new(sd3_workspace **out, const sd3_model *m, int B, int Hl, int Wl, int S) {
    *out = NULL;
    sd3_workspace *ws = ss_calloc(1, sizeof *ws);
    if (!ws) return SS_ENOMEM;
    int rc = 0, N = 0;
    if (m && ((rc = image_tokens(m, B, Hl, Wl, S, &N)) < 0 || (rc = ws_reserve(ws, m, B, N, S)) < 0)) {
        sd3_workspace_free(ws);
        return rc;
    }
    *out = ws;
    return 0;
}

int sd3_workspace_reserve(sd3_workspace *ws, const sd3_model *m, int B, int Hl, int Wl, int S) {
    int N = 0, rc = image_tokens(m, B, Hl, Wl, S, &N);
    return rc < 0 ? rc : ws_reserve(ws, m, B, N, S);
}

void sd3_workspace_free(sd3_workspace *ws) {
    if (!ws) return;
    work_free(&ws->w);
    attn_scratch_free(ws->attn);
    free(ws);
}

void sd3_workspace_set_key_chunk(sd3_workspace *ws, int kc) { ws->key_chunk = kc > 0 ? kc : 0; }

long sd3_workspace_allocs(const sd3_workspace *ws) {
    if (!ws) return g_ws_allocs;
    return ws->allocs + (ws->attn ? attn_scratch_allocs(ws->attn) - ws->attn_seen : 0);
}

size_t sd3_workspace_bytes(const sd3_workspace *ws) {
    size_t n = 0;
    for (size_t i = 0; i < WORK_NBUF; i++) n += ws->cap[i] * sizeof(float);
    return n;
}

/* ---- non-finite values ---- */

/* Fails when x [B, rows, width] holds a NaN or infinity, naming where: `block` (-1: outside the
 * blocks), `what` (the stage), and the token, image tokens first (rows [0, n_img)), then text. */
static int check_finite(const float *x, int B, int rows, int n_img, int width, int block, const char *what) {
    const long long j = op_first_nonfinite(x, mul3(B, rows, width));
    if (j < 0) return 0;
    const long long per_b = (long long)rows * width, b = j / per_b, r = j % per_b / width, ch = j % width;
    char where[32] = "";
    if (block >= 0) snprintf(where, sizeof where, "block %d: ", block);
    return ss_fail(SS_EFORMAT, "forward: %s%s has a non-finite value (%s) at batch %lld, %s token %lld, channel %lld",
                   where, what, isnan(x[j]) ? "NaN" : "infinity", b, r < n_img ? "image" : "text",
                   r < n_img ? r : r - n_img, ch);
}

/* The same for an input array of n floats. */
static int check_input(const float *x, size_t n, const char *name) {
    const long long j = op_first_nonfinite(x, n);
    if (j < 0) return 0;
    return ss_fail(SS_EFORMAT, "forward: input '%s' has a non-finite value (%s) at flat index %lld", name,
                   isnan(x[j]) ? "NaN" : "infinity", j);
}

/* Where a feed-forward writes: LN output n, linear 1 output h, GELU output g, linear 2 output f.
 * Inference reuses two buffers (n = f, h = g: GELU in place); a cached forward keeps all four. */
typedef struct {
    float *n, *h, *g, *f;
} ff_out;

/* x += gate * FF(LN(x)(1+scale)+shift) for M rows of one batch element. */
static void ff_residual(float *x, const float *shift, const float *scale, const float *gate,
                        const ss_linear *f1, const ss_linear *f2, const ff_out *o, int M, int D) {
    if (o->g == o->h && o->n == o->f) { /* inference: two buffers (and bf16 inputs with bf16 weights) */
        op_ff_residual(x, shift, scale, gate, f1, f2, o->n, o->h, M, D);
        return;
    }
    op_ln_modulate(o->n, x, shift, scale, M, D, 1e-6f);
    op_linear(o->h, o->n, f1, M);
    if (o->g != o->h) memcpy(o->g, o->h, sizeof(float) * M * f1->out);
    op_gelu_tanh(o->g, (size_t)M * f1->out);
    op_linear(o->f, o->g, f2, M);
    op_add_gated(x, o->f, gate, M, D);
}

/* The feed-forward outputs of batch element b (M rows, hidden width F) in block cache bc, image
 * (text = 0) or text stream; without a cache, the workspace's two buffers. */
static ff_out ff_outputs(const work *w, const sd3_block_cache *bc, int text, int b, int M, int D, int F) {
    if (!bc) return (ff_out){w->tmp, w->hid, w->hid, w->tmp};
    const size_t o = (size_t)b * M * D, oh = (size_t)b * M * F;
    return text ? (ff_out){bc->nc2 + o, bc->hc + oh, bc->gc + oh, bc->fc + o}
                : (ff_out){bc->nx2 + o, bc->hx + oh, bc->gx + oh, bc->fx + o};
}

/* Attention for the cached forward (joint or attn2): the materialized reference per batch
 * element, keeping the probabilities in P [B,H,T,T]. */
static int attn_cached(const attn_args *a, float *P) {
    const size_t td = (size_t)a->T * a->ld, pp = (size_t)a->H * a->T * a->T;
    const float scale = 1.0f / sqrtf((float)a->dh);
    for (int b = 0; b < a->B; b++) {
        const int rc = attn_materialized_probs(a->out + b * td, P + b * pp, a->q + b * td, a->k + b * td,
                                               a->v + b * td, a->T, a->H, a->dh, a->ld, scale, NULL, 0, NULL);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Block i's joint (attn2 = 0) or attn2 site, flat index `index`. */
static void site_fill(ss_site *s, int index, int block, int attn2, int N, int S) {
    memset(s, 0, sizeof *s);
    s->index = index;
    s->block = block;
    s->kind = attn2 ? SS_SITE_ATTN2 : SS_SITE_JOINT;
    s->Tq = s->Tk = attn2 ? N : N + S;
    s->n_qspan = s->n_kspan = attn2 ? 1 : 2;
    s->qspan[0] = s->kspan[0] = (ss_span){0, N, SS_TOK_IMAGE};
    if (!attn2) s->qspan[1] = s->kspan[1] = (ss_span){N, S, SS_TOK_TEXT};
}

int sd3_sites(const sd3_config *c, int N, int S, ss_site *out, int cap) {
    int n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < c->num_layers; i++) {
            if (pass == 1 && !c->dual[i]) continue;
            if (out && n < cap) site_fill(&out[n], n, i, pass, N, S);
            n++;
        }
    return n;
}

/* The attention arguments' query spans from a site's. */
static void args_spans(attn_args *a, const ss_site *s) {
    a->n_qspan = s->n_qspan;
    for (int g = 0; g < s->n_qspan; g++) a->qend[g] = s->qspan[g].start + s->qspan[g].len;
}

/* The flat index of dual block i's attn2 site: L + the dual blocks before it. */
static int attn2_index(const sd3_config *c, int i) {
    int n = c->num_layers;
    for (int j = 0; j < i; j++) n += c->dual[j] != 0;
    return n;
}

/* Block i on the streams w->X, w->C. With a block cache bc (no hooks) the activations go to bc
 * instead of the workspace's buffers, the streams are copied there on entry and before the
 * feed-forwards, and attention (joint and attn2) is the materialized reference. */
static int block_forward(const sd3_model *m, int i, const work *ws_w, sd3_block_cache *bc, attn_scratch *as, int kc,
                         int B, int N, int S, const sd3_hooks *hk) {
    const sd3_block *bk = &m->blocks[i];
    const int D = m->D, H = m->cfg.num_heads, dh = m->cfg.head_dim, T = N + S, F = bk->ff1.out;
    const int nmx = bk->dual ? 9 : 6, nmc = bk->last ? 2 : 6;
    work wl = *ws_w, *w = &wl;
    /* bf16 inference (no cache): the modulated inputs go to the products as bf16 */
    const int b16 = !bc && bk->q.wb && bk->add_q.wb;
    if (bc) {
        wl.modx = bc->modx, wl.modc = bc->modc, wl.nx = bc->nx, wl.nc = bc->nc;
        wl.Q = bc->q, wl.K = bc->k, wl.V = bc->v, wl.O = bc->o, wl.ax = bc->ax, wl.ac = bc->ac;
        if (bk->dual) wl.nx2 = bc->n2; /* attn2's input (the feed-forwards' LNs go to bc by ff_outputs) */
        memcpy(bc->x_in, w->X, sizeof(float) * B * N * D);
        memcpy(bc->c_in, w->C, sizeof(float) * B * S * D);
    }
    op_linear(w->modx, w->stemb, &bk->norm1, B);
    op_linear(w->modc, w->stemb, &bk->norm1_ctx, B);
    for (int b = 0; b < B; b++) {
        const float *mx = w->modx + (size_t)b * nmx * D, *mc = w->modc + (size_t)b * nmc * D;
        const float *xb = w->X + (size_t)b * N * D, *cb = w->C + (size_t)b * S * D;
        /* the context's shift and scale; AdaLayerNormContinuous (last block) has scale rows first */
        const float *csh = mc + (bk->last ? 1 : 0) * D, *csc = mc + (bk->last ? 0 : 1) * D;
        if (bk->dual) op_ln_modulate(w->nx2 + (size_t)b * N * D, xb, mx + 6 * D, mx + 7 * D, N, D, 1e-6f);
        /* Joint Q/K/V rows: image tokens first, then text, per batch element. */
        const size_t jo = (size_t)b * T * D, io = jo + (size_t)N * D;
        if (b16) { /* bf16 inference: the modulated inputs rounded once, in the first half of nx / nc */
            uint16_t *nx16 = (uint16_t *)w->nx + (size_t)b * N * D, *nc16 = (uint16_t *)w->nc + (size_t)b * S * D;
            op_ln_modulate_b16(nx16, xb, mx + 0 * D, mx + 1 * D, N, D, 1e-6f);
            op_ln_modulate_b16(nc16, cb, csh, csc, S, D, 1e-6f);
            op_linear_b16(w->Q + jo, nx16, &bk->q, N);
            op_linear_b16(w->K + jo, nx16, &bk->k, N);
            op_linear_b16(w->V + jo, nx16, &bk->v, N);
            op_linear_b16(w->Q + io, nc16, &bk->add_q, S);
            op_linear_b16(w->K + io, nc16, &bk->add_k, S);
            op_linear_b16(w->V + io, nc16, &bk->add_v, S);
        } else {
            op_ln_modulate(w->nx + (size_t)b * N * D, xb, mx + 0 * D, mx + 1 * D, N, D, 1e-6f);
            op_ln_modulate(w->nc + (size_t)b * S * D, cb, csh, csc, S, D, 1e-6f);
            op_linear(w->Q + jo, w->nx + (size_t)b * N * D, &bk->q, N);
            op_linear(w->K + jo, w->nx + (size_t)b * N * D, &bk->k, N);
            op_linear(w->V + jo, w->nx + (size_t)b * N * D, &bk->v, N);
            op_linear(w->Q + io, w->nc + (size_t)b * S * D, &bk->add_q, S);
            op_linear(w->K + io, w->nc + (size_t)b * S * D, &bk->add_k, S);
            op_linear(w->V + io, w->nc + (size_t)b * S * D, &bk->add_v, S);
        }
        if (bc && bk->norm_q) { /* the norms' inputs, for their backward */
            memcpy(bc->qr + jo, w->Q + jo, sizeof(float) * T * D);
            memcpy(bc->kr + jo, w->K + jo, sizeof(float) * T * D);
        }
        if (bk->norm_q) {
            op_rmsnorm_heads(w->Q + jo, D, bk->norm_q, N, H, dh, 1e-6f);
            op_rmsnorm_heads(w->K + jo, D, bk->norm_k, N, H, dh, 1e-6f);
            op_rmsnorm_heads(w->Q + io, D, bk->norm_added_q, S, H, dh, 1e-6f);
            op_rmsnorm_heads(w->K + io, D, bk->norm_added_k, S, H, dh, 1e-6f);
        }
    }
    attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = D, .n_img = N,
                   .q = w->Q, .k = w->K, .v = w->V, .out = w->O, .key_chunk = kc, .scratch = as,
                   .precision = m->precision};
    int rc;
    if (bc) {
        rc = attn_cached(&a, bc->p);
    } else if (hk && hk->attention) {
        ss_site site;
        site_fill(&site, i, i, 0, N, S);
        args_spans(&a, &site);
        /* the block's input streams (attn2's input is no longer held when it runs: not supplied) */
        site.hidden_dim = site.hidden_ld = D;
        site.hidden[0] = (ss_rows){w->X, (size_t)N};
        site.hidden[1] = (ss_rows){w->C, (size_t)S};
        rc = hk->attention(hk->ctx, &site, &a);
    } else {
        rc = attn_forward(&a, NULL);
    }
    if (rc < 0) return rc;
    /* after a hook too: an intervention that removes every key leaves 0/0 here */
    if ((rc = check_finite(w->O, B, T, N, D, i, "joint attention output")) < 0) return rc;
    for (int b = 0; b < B; b++) {
        const float *mx = w->modx + (size_t)b * nmx * D;
        const size_t jo = (size_t)b * T * D;
        op_linear(w->ax + (size_t)b * N * D, w->O + jo, &bk->out, N);
        op_add_gated(w->X + (size_t)b * N * D, w->ax + (size_t)b * N * D, mx + 2 * D, N, D);
        if (!bk->last) op_linear(w->ac + (size_t)b * S * D, w->O + jo + (size_t)N * D, &bk->add_out, S);
    }
    if (bk->dual) { /* attn2: image-only self-attention on nx2, after the joint residual */
        float *Q2 = bc ? bc->q2 : w->Q, *K2 = bc ? bc->k2 : w->K, *V2 = bc ? bc->v2 : w->V, *O2 = bc ? bc->o2 : w->O;
        float *A2 = bc ? bc->a2 : w->ax;
        op_linear(Q2, w->nx2, &bk->q2, B * N);
        op_linear(K2, w->nx2, &bk->k2, B * N);
        op_linear(V2, w->nx2, &bk->v2, B * N);
        if (bc && bk->norm_q2) { /* the norms' inputs, for their backward */
            memcpy(bc->q2r, Q2, sizeof(float) * B * N * D);
            memcpy(bc->k2r, K2, sizeof(float) * B * N * D);
        }
        if (bk->norm_q2) {
            op_rmsnorm_heads(Q2, D, bk->norm_q2, B * N, H, dh, 1e-6f);
            op_rmsnorm_heads(K2, D, bk->norm_k2, B * N, H, dh, 1e-6f);
        }
        attn_args a2 = {.B = B, .H = H, .dh = dh, .T = N, .ld = D, .n_img = N,
                        .q = Q2, .k = K2, .v = V2, .out = O2, .key_chunk = kc, .scratch = as,
                        .precision = m->precision};
        if (bc) {
            rc = attn_cached(&a2, bc->p2);
        } else if (hk && hk->attention) {
            ss_site site;
            site_fill(&site, attn2_index(&m->cfg, i), i, 1, N, S);
            args_spans(&a2, &site);
            rc = hk->attention(hk->ctx, &site, &a2);
        } else {
            rc = attn_forward(&a2, NULL);
        }
        if (rc < 0) return rc;
        if ((rc = check_finite(O2, B, N, N, D, i, "attn2 output")) < 0) return rc;
        op_linear(A2, O2, &bk->out2, B * N);
        for (int b = 0; b < B; b++)
            op_add_gated(w->X + (size_t)b * N * D, A2 + (size_t)b * N * D, w->modx + (size_t)b * 9 * D + 8 * D, N, D);
    }
    if (bc) memcpy(bc->x_mid, w->X, sizeof(float) * B * N * D);
    for (int b = 0; b < B; b++) {
        const float *mx = w->modx + (size_t)b * nmx * D;
        const ff_out fx = ff_outputs(w, bc, 0, b, N, D, F);
        ff_residual(w->X + (size_t)b * N * D, mx + 3 * D, mx + 4 * D, mx + 5 * D, &bk->ff1, &bk->ff2, &fx, N, D);
        if (bk->last) continue;
        const float *mc = w->modc + (size_t)b * 6 * D;
        float *cb = w->C + (size_t)b * S * D;
        op_add_gated(cb, w->ac + (size_t)b * S * D, mc + 2 * D, S, D);
        if (bc) memcpy(bc->c_mid + (size_t)b * S * D, cb, sizeof(float) * S * D);
        const ff_out fc = ff_outputs(w, bc, 1, b, S, D, F);
        ff_residual(cb, mc + 3 * D, mc + 4 * D, mc + 5 * D, &bk->cff1, &bk->cff2, &fc, S, D);
    }
    if ((rc = check_finite(w->X, B, N, N, D, i, "image stream output")) < 0) return rc;
    if (!bk->last && (rc = check_finite(w->C, B, S, 0, D, i, "text stream output")) < 0) return rc;
    if (hk && hk->block_output && (rc = hk->block_output(hk->ctx, i, w->X, B, N, D)) < 0) return rc;
    return 0;
}

int sd3_forward(const sd3_model *m, float *out, const float *x, const float *ctx, const float *pooled,
                const float *t, int B, int Hl, int Wl, int S, const sd3_hooks *hooks) {
    sd3_workspace ws = {0};
    const int rc = sd3_forward_ws(m, &ws, out, x, ctx, pooled, t, B, Hl, Wl, S, hooks);
    work_free(&ws.w);
    attn_scratch_free(ws.attn);
    return rc;
}

/* sd3_forward_ws, recording into cache when it is not NULL (sd3_forward_cache). */
static int forward(const sd3_model *m, sd3_workspace *ws, sd3_cache *cache, float *out, const float *x,
                   const float *ctx, const float *pooled, const float *t, int B, int Hl, int Wl, int S,
                   const sd3_hooks *hooks) {
    const sd3_config *c = &m->cfg;
    const int p = c->patch_size, D = m->D, M = c->pos_embed_max_size, Cin = c->in_channels;
    int rc, N = 0;
    if ((rc = image_tokens(m, B, Hl, Wl, S, &N)) < 0) return rc;
    const int h = Hl / p, wd = Wl / p;
    const int Cout = c->out_channels, pp = p * p * Cout;
    if (cache && (B > cache->B || N != cache->N || S != cache->S))
        return ss_fail(SS_EARG, "forward: the activation cache holds up to %d x (%d + %d) tokens, not %d x (%d + %d)",
                       cache->B, cache->N, cache->S, B, N, S);
    if ((rc = check_input(x, mul3(B, Cin, (size_t)Hl * Wl), "hidden_states")) < 0 ||
        (rc = check_input(ctx, mul3(B, S, c->joint_attention_dim), "encoder_hidden_states")) < 0 ||
        (rc = check_input(pooled, mul3(B, 1, c->pooled_projection_dim), "pooled_projections")) < 0 ||
        (rc = check_input(t, (size_t)B, "timestep")) < 0)
        return rc;
    if ((rc = ws_reserve(ws, m, B, N, S)) < 0) return rc;
    work w = ws->w; /* the buffers (the workspace keeps owning them) */
    if (cache) w.temb = cache->temb, w.stemb = cache->stemb;
    /* 1. patch embedding: gather (c, py, px) patch vectors, then one matrix product */
    float *pv_all = cache ? cache->pv : w.tmp;
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < wd; q++) {
                float *pv = pv_all + ((size_t)b * N + (size_t)r * wd + q) * Cin * p * p;
                for (int ci = 0; ci < Cin; ci++)
                    for (int py = 0; py < p; py++)
                        for (int px = 0; px < p; px++)
                            pv[(ci * p + py) * p + px] = x[(((size_t)b * Cin + ci) * Hl + r * p + py) * Wl + q * p + px];
            }
    op_linear(w.X, pv_all, &m->patch, B * N);
    /* 2. centre crop of the position table (copied for the pos_embed hook to edit) */
    const int top = (M - h) / 2, left = (M - wd) / 2;
    float *crop = NULL;
    if (hooks && hooks->pos_embed) {
        if (!(crop = ss_malloc(sizeof(float) * (size_t)N * D))) return SS_ENOMEM;
        for (int r = 0; r < h; r++)
            memcpy(crop + (size_t)r * wd * D, m->pos_table + ((size_t)(top + r) * M + left) * D, sizeof(float) * (size_t)wd * D);
        if ((rc = hooks->pos_embed(hooks->ctx, crop, h, wd, D)) < 0) {
            free(crop);
            return rc;
        }
    }
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < wd; q++) {
                float *xr = w.X + ((size_t)b * N + (size_t)r * wd + q) * D;
                const float *pr = crop ? crop + ((size_t)r * wd + q) * D : m->pos_table + ((size_t)(top + r) * M + left + q) * D;
                for (int d = 0; d < D; d++) xr[d] += pr[d];
            }
    free(crop);
    /* 3. conditioning: temb = TimestepEmbedding(sinusoid(t)) + TextProj(pooled) */
    float *temb0 = cache ? cache->temb0 : w.tmp; /* [B,256] */
    /* linear_1 outputs and their SiLU: in place in modx, or kept apart in the cache */
    float *th = cache ? cache->t_h : w.modx, *ts = cache ? cache->t_s : w.modx;
    float *ph = cache ? cache->p_h : w.modx, *ps = cache ? cache->p_s : w.modx;
    op_timestep_embedding(temb0, t, B, TEMB_DIM);
    op_linear(th, temb0, &m->t1, B);
    op_silu(ts, th, (size_t)B * D);
    op_linear(w.temb, ts, &m->t2, B);
    op_linear(ph, pooled, &m->p1, B);
    op_silu(ps, ph, (size_t)B * D);
    op_linear(w.modc, ps, &m->p2, B);
    for (size_t i = 0; i < (size_t)B * D; i++) w.temb[i] += w.modc[i];
    op_silu(w.stemb, w.temb, (size_t)B * D);
    op_linear(w.C, ctx, &m->ctx_embed, B * S);
    if ((rc = check_finite(w.X, B, N, N, D, -1, "patch + position embedding")) < 0 ||
        (rc = check_finite(w.temb, B, 1, 0, D, -1, "timestep + pooled text conditioning")) < 0 ||
        (rc = check_finite(w.C, B, S, 0, D, -1, "context_embedder output")) < 0)
        goto done;
    /* 4. blocks */
    for (int i = 0; i < c->num_layers && rc == 0; i++)
        rc = block_forward(m, i, &w, cache ? &cache->blocks[i] : NULL, ws->attn, ws->key_chunk, B, N, S, hooks);
    float *modf = cache ? cache->modf : w.modx, *nf = cache ? cache->nf : w.nx, *y = cache ? cache->y : w.hid;
    if (rc == 0) {
        /* 5. final layer: AdaLayerNormContinuous (scale, shift), then proj_out */
        if (cache) memcpy(cache->x_out, w.X, sizeof(float) * B * N * D);
        op_linear(modf, w.stemb, &m->norm_out, B);
        for (int b = 0; b < B; b++)
            op_ln_modulate(nf + (size_t)b * N * D, w.X + (size_t)b * N * D, modf + (size_t)b * 2 * D + D,
                           modf + (size_t)b * 2 * D, N, D, 1e-6f);
        op_linear(y, nf, &m->proj_out, B * N);
        rc = check_finite(y, B, N, N, pp, -1, "final layer (proj_out) output");
    }
    if (rc == 0) {
        /* 6. unpatchify: channel (py*p + px)*Cout + c inside a token */
        for (int b = 0; b < B; b++)
            for (int r = 0; r < h; r++)
                for (int q = 0; q < wd; q++) {
                    const float *yt = y + ((size_t)b * N + (size_t)r * wd + q) * pp;
                    for (int py = 0; py < p; py++)
                        for (int px = 0; px < p; px++)
                            for (int co = 0; co < Cout; co++)
                                out[(((size_t)b * Cout + co) * Hl + r * p + py) * Wl + q * p + px] =
                                    yt[(py * p + px) * Cout + co];
                }
    }
done:
    return rc;
}

int sd3_forward_ws(const sd3_model *m, sd3_workspace *ws, float *out, const float *x, const float *ctx,
                   const float *pooled, const float *t, int B, int Hl, int Wl, int S, const sd3_hooks *hooks) {
    return forward(m, ws, NULL, out, x, ctx, pooled, t, B, Hl, Wl, S, hooks);
}

int sd3_forward_cache(const sd3_model *m, sd3_workspace *ws, sd3_cache *cache, float *out, const float *x,
                      const float *ctx, const float *pooled, const float *t, int B, int Hl, int Wl, int S) {
    return forward(m, ws, cache, out, x, ctx, pooled, t, B, Hl, Wl, S, NULL);
}

double sd3_forward_flops(const sd3_config *c, int B, int Hl, int Wl, int S) {
    const double D = (double)c->num_heads * c->head_dim, p = c->patch_size;
    const double N = (Hl / p) * (Wl / p), T = N + S;
    double f = 2 * N * D * c->in_channels * p * p + 2 * S * D * c->joint_attention_dim;
    for (int i = 0; i < c->num_layers; i++) {
        const int last = i == c->num_layers - 1;
        f += 2 * T * D * D * 3;                 /* q, k, v of both streams */
        f += 2 * (N + (last ? 0 : S)) * D * D;  /* output projections */
        f += 2 * 2 * T * T * D;                 /* QK^T and PV */
        f += 2 * (N + (last ? 0 : S)) * D * 4 * D * 2; /* feed-forwards */
        if (c->dual[i]) f += 2 * N * D * D * 4 + 2 * 2 * N * N * D;
    }
    f += 2 * N * D * p * p * c->out_channels;
    return f * B;
}
