/* PixArtTransformer2DModel forward pass (dit-spec.md section 5; diffusers 0.32.1
 * pixart_transformer_2d.py, attention.py BasicTransformerBlock "ada_norm_single", embeddings.py
 * PatchEmbed / PixArtAlphaTextProjection, normalization.py AdaLayerNormSingle). */
#include "models/pixart.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define TEMB_DIM 256 /* Timesteps(256) in front of every embedder */

typedef struct {
    float *X;             /* [B,N,D] image stream */
    float *nX;            /* [B,N,D] modulated input */
    float *Q, *K, *V, *O; /* [B,N,D]; cross K, V use [B,S,D] of K, V */
    float *cap;           /* [B,S,D] projected caption (or the context as given: [B,S,cad]) */
    float *hid;           /* FF hidden [N, 4D]; caption hidden [B*S, D]; patch vectors [B*N, Cin*p*p]; proj_out [B*N, pp] */
    float *tmp;           /* [N, D] projections of one batch element */
    float *pos;           /* [N, D] sin-cos table */
    float *E, *T6;        /* [B, D] embedded timestep, [B, 6D] adaLN-single output */
    float *mod;           /* [B, 6D] scale_shift_table + T6 (one block) */
    float *sin, *emb;     /* [3B, 256] sinusoids, [2B, D] embedder hidden */
    uint8_t *kv;          /* [B, S] key_valid */
} work;

static void work_free(work *w) {
    void **p = (void **)w;
    for (size_t i = 0; i < sizeof *w / sizeof(void *); i++) free(p[i]);
}

static size_t mul3(size_t a, size_t b, size_t c) {
    size_t ab, abc;
    if (ss_mul_size(a, b, &ab) || ss_mul_size(ab, c, &abc)) return SIZE_MAX;
    return abc;
}

static size_t max2(size_t a, size_t b) { return a > b ? a : b; }

static int work_alloc(work *w, const pixart_model *m, int B, int N, int S) {
    memset(w, 0, sizeof *w);
    const pixart_config *c = &m->cfg;
    const int D = m->D, p = c->patch_size, pp = p * p * c->out_channels, cw = c->cross_attention_dim > D ? c->cross_attention_dim : D;
    struct { float **p; size_t n; } plan[] = {
        {&w->X, mul3(B, N, D)}, {&w->nX, mul3(B, N, D)}, {&w->Q, mul3(B, N, D)},
        {&w->K, mul3(B, max2(N, S), D)}, {&w->V, mul3(B, max2(N, S), D)}, {&w->O, mul3(B, N, D)},
        {&w->cap, mul3(B, S, cw)},
        {&w->hid, max2(max2(mul3(N, 4, D), mul3(B, S, D)), max2(mul3(B, N, (size_t)c->in_channels * p * p), mul3(B, N, pp)))},
        {&w->tmp, mul3(N, 1, D)}, {&w->pos, mul3(N, 1, D)}, {&w->E, mul3(B, 1, D)}, {&w->T6, mul3(B, 6, D)},
        {&w->mod, mul3(B, 6, D)}, {&w->sin, mul3(B, 3, TEMB_DIM)}, {&w->emb, mul3(B, 2, D)},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        size_t bytes;
        *plan[i].p = ss_mul_size(sizeof(float), plan[i].n ? plan[i].n : 1, &bytes) ? NULL : ss_malloc_aligned(bytes);
        if (!*plan[i].p) {
            work_free(w);
            return ss_fail(SS_ENOMEM, "pixart forward: out of memory (B=%d, N=%d, S=%d, D=%d)", B, N, S, D);
        }
    }
    w->kv = malloc((size_t)B * S);
    if (!w->kv) {
        work_free(w);
        return ss_fail(SS_ENOMEM, "pixart forward: out of memory (B=%d, S=%d)", B, S);
    }
    return 0;
}

/* ---- checks ---- */

static int check_finite(const float *x, int B, int rows, int width, const char *where) {
    const long long j = op_first_nonfinite(x, mul3(B, rows, width));
    if (j < 0) return 0;
    const long long per_b = (long long)rows * width;
    return ss_fail(SS_EFORMAT, "pixart forward: %s has a non-finite value (%s) at batch %lld, token %lld, channel %lld", where,
                   isnan(x[j]) ? "NaN" : "infinity", j / per_b, j % per_b / width, j % width);
}

static int check_input(const float *x, size_t n, const char *name) {
    if (!x) return ss_fail(SS_EARG, "pixart forward: input '%s' is missing", name);
    const long long j = op_first_nonfinite(x, n);
    if (j < 0) return 0;
    return ss_fail(SS_EFORMAT, "pixart forward: input '%s' has a non-finite value (%s) at flat index %lld", name,
                   isnan(x[j]) ? "NaN" : "infinity", j);
}

/* ---- position table ---- */

/* sin(pos * omega_k) then cos(pos * omega_k), k < F, into t[0, 2F) */
static void sincos_1d(float *t, float pos, int F) {
    for (int k = 0; k < F; k++) {
        const double a = (double)pos * (1.0 / pow(10000.0, (double)k / F)); /* omega in fp64, pos promoted */
        t[k] = (float)sin(a);
        t[F + k] = (float)cos(a);
    }
}

void pixart_pos_table(float *tab, const pixart_config *c, int D, int h, int w) {
    const int base = c->sample_size / c->patch_size, E = D / 2, F = D / 4;
    const float is = (float)c->interpolation_scale;
    /* torch: arange(n, float32) / (n / base_size) / interpolation_scale, in fp32; the first half of
     * the channels encodes the column, the second half the row (dit-spec 2.6) */
    const float qh = (float)((double)h / base), qw = (float)((double)w / base);
    for (int col = 0; col < w; col++) sincos_1d(tab + (size_t)col * D, (float)col / qw / is, F); /* row 0's tokens */
    for (int r = 1; r < h; r++) sincos_1d(tab + (size_t)r * w * D + E, (float)r / qh / is, F);   /* column 0's */
    sincos_1d(tab + E, 0.0f / qh / is, F);
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++) {
            float *t = tab + ((size_t)r * w + col) * D;
            if (r) memcpy(t, tab + (size_t)col * D, sizeof(float) * E);
            if (col) memcpy(t + E, tab + (size_t)r * w * D + E, sizeof(float) * E);
        }
}

/* ---- sites ---- */

static void site_fill(ss_site *s, int index, int block, int cross, int N, int S) {
    memset(s, 0, sizeof *s);
    s->index = index;
    s->block = block;
    s->kind = cross ? SS_SITE_CROSS : SS_SITE_SELF;
    s->Tq = N;
    s->Tk = cross ? S : N;
    s->n_qspan = s->n_kspan = 1;
    s->qspan[0] = (ss_span){0, N, SS_TOK_IMAGE};
    s->kspan[0] = cross ? (ss_span){0, S, SS_TOK_TEXT} : (ss_span){0, N, SS_TOK_IMAGE};
}

int pixart_sites(const pixart_config *c, int N, int S, ss_site *out, int cap) {
    int n = 0;
    for (int i = 0; i < c->num_layers; i++, n++)
        if (out && n < cap) site_fill(&out[n], n, i, 0, N, S);
    for (int i = 0; c->cross_attention_dim && i < c->num_layers; i++, n++)
        if (out && n < cap) site_fill(&out[n], n, i, 1, N, S);
    return n;
}

/* ---- blocks ---- */

/* y = LN(x) (with the block's affine weights when it has them) * (1 + scale) + shift */
static void norm_modulate(float *y, const float *x, const float *w, const float *bias, const float *shift, const float *scale,
                          int M, int D, float eps) {
    if (!w) {
        op_ln_modulate(y, x, shift, scale, M, D, eps);
        return;
    }
    op_layernorm_affine(y, x, w, bias, M, D, eps);
    for (size_t i = 0; i < (size_t)M; i++)
        for (int j = 0; j < D; j++) y[i * D + j] = y[i * D + j] * (1.0f + scale[j]) + shift[j];
}

static int attend(const pixart_model *m, work *w, int B, int N, int S, int cross, int block, const pixart_hooks *hk) {
    attn_args a = {.B = B, .H = m->cfg.num_heads, .dh = m->cfg.head_dim, .T = N, .ld = m->D, .q = w->Q, .k = w->K,
                   .v = w->V, .out = w->O, .n_qspan = 1, .qend = {N}, .precision = m->precision};
    if (cross) {
        a.Tk = S;
        a.key_valid = w->kv;
    }
    int rc;
    if (hk && hk->attention) {
        ss_site site;
        site_fill(&site, cross ? m->cfg.num_layers + block : block, block, cross, N, S);
        site.key_valid = a.key_valid;
        rc = hk->attention(hk->ctx, &site, &a);
    } else {
        rc = attn_forward(&a, NULL);
    }
    if (rc < 0) return rc;
    char where[64];
    snprintf(where, sizeof where, "block %d: %s-attention output", block, cross ? "cross" : "self");
    return check_finite(w->O, B, N, m->D, where);
}

static int block_forward(const pixart_model *m, int i, work *w, int B, int N, int S, const pixart_hooks *hk) {
    const pixart_block *bk = &m->blocks[i];
    const int D = m->D, BN = B * N;
    const float eps = m->cfg.norm_eps;
    /* shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = scale_shift_table + T6 */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < 6 * D; j++) w->mod[(size_t)b * 6 * D + j] = bk->sst[j] + w->T6[(size_t)b * 6 * D + j];
    for (int b = 0; b < B; b++) {
        const float *md = w->mod + (size_t)b * 6 * D;
        const size_t o = (size_t)b * N * D;
        norm_modulate(w->nX + o, w->X + o, bk->n1w, bk->n1b, md, md + D, N, D, eps);
    }
    op_linear(w->Q, w->nX, &bk->q, BN);
    op_linear(w->K, w->nX, &bk->k, BN);
    op_linear(w->V, w->nX, &bk->v, BN);
    int rc = attend(m, w, B, N, S, 0, i, hk);
    if (rc < 0) return rc;
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * N * D;
        op_linear(w->tmp, w->O + o, &bk->out, N);
        op_add_gated(w->X + o, w->tmp, w->mod + (size_t)b * 6 * D + 2 * D, N, D);
    }
    if (m->cfg.cross_attention_dim) {
        /* the query is the raw stream (no norm, no gate), keys and values the caption */
        op_linear(w->Q, w->X, &bk->q2, BN);
        op_linear(w->K, w->cap, &bk->k2, B * S);
        op_linear(w->V, w->cap, &bk->v2, B * S);
        if ((rc = attend(m, w, B, N, S, 1, i, hk)) < 0) return rc;
        for (int b = 0; b < B; b++) {
            const size_t o = (size_t)b * N * D;
            op_linear(w->tmp, w->O + o, &bk->out2, N);
            float *x = w->X + o;
            for (size_t j = 0; j < (size_t)N * D; j++) x[j] += w->tmp[j];
        }
    }
    for (int b = 0; b < B; b++) {
        const float *md = w->mod + (size_t)b * 6 * D;
        const size_t o = (size_t)b * N * D;
        norm_modulate(w->nX, w->X + o, bk->n2w, bk->n2b, md + 3 * D, md + 4 * D, N, D, eps);
        op_linear(w->hid, w->nX, &bk->ff1, N);
        op_activation(w->hid, (size_t)N * 4 * D, m->cfg.act);
        op_linear(w->tmp, w->hid, &bk->ff2, N);
        op_add_gated(w->X + o, w->tmp, md + 5 * D, N, D);
    }
    char where[64];
    snprintf(where, sizeof where, "block %d: output", i);
    if ((rc = check_finite(w->X, B, N, D, where)) < 0) return rc;
    if (hk && hk->block_output && (rc = hk->block_output(hk->ctx, i, w->X, B, N, D)) < 0) return rc;
    return 0;
}

/* TimestepEmbedding(Timesteps(v)) for n values into y [n, out]; hidden h [n, out]. */
static void embed(float *y, const float *v, int n, const ss_linear *l1, const ss_linear *l2, float *s, float *h) {
    /* diffusers forms the sinusoid's argument in fp32 with torch's exp even in a float64 model (its
     * frequencies differ from correctly rounded ones in the last bit for about 40% of them), so near
     * t = 1000 the reference itself carries ~5e-5 rad of argument rounding; like SD3 and FLUX we
     * take the argument in double (op_timestep_embedding). */
    op_timestep_embedding(s, v, n, TEMB_DIM);
    op_linear(h, s, l1, n);
    op_silu(h, h, (size_t)n * l1->out);
    op_linear(y, h, l2, n);
}

int pixart_forward(const pixart_model *m, float *out, const float *hs, const float *ctx, const float *mask,
                   const float *t, const float *res, const float *ar, int B, int Hl, int Wl, int S,
                   const pixart_hooks *hooks) {
    const pixart_config *c = &m->cfg;
    const int D = m->D, p = c->patch_size, Cin = c->in_channels, Cout = c->out_channels, pp = p * p * Cout;
    const int J = c->caption_channels ? c->caption_channels : c->cross_attention_dim ? c->cross_attention_dim : D;
    if (B < 1 || S < 1 || B > 65536 || Hl < p || Wl < p || Hl % p || Wl % p)
        return ss_fail(SS_ESHAPE, "pixart forward: B=%d, S=%d must be positive and the latent %dx%d a positive multiple of the "
                       "patch size %d", B, S, Hl, Wl, p);
    const int h = Hl / p, wd = Wl / p;
    if ((long long)h * wd > (1 << 24) || (long long)B * ((long long)h * wd + S) > INT_MAX / 8)
        return ss_fail(SS_ESHAPE, "pixart forward: batch %d x (%dx%d patches + %d text tokens) is too large", B, h, wd, S);
    const int N = h * wd;
    if (c->use_additional_conditions && (!res || !ar))
        return ss_fail(SS_EARG, "pixart forward: the model uses additional conditions (use_additional_conditions, or sample_size "
                       "128): inputs 'resolution' and 'aspect_ratio' are required");
    if (!c->use_additional_conditions && (res || ar))
        return ss_fail(SS_EARG, "pixart forward: input '%s' is given, but the model has no additional conditions "
                       "(use_additional_conditions false)", res ? "resolution" : "aspect_ratio");
    int rc;
    if ((rc = check_input(hs, mul3(B, Cin, (size_t)Hl * Wl), "hidden_states")) < 0 ||
        (rc = check_input(ctx, mul3(B, S, J), "encoder_hidden_states")) < 0 ||
        (mask && (rc = check_input(mask, mul3(B, S, 1), "encoder_attention_mask")) < 0) ||
        (rc = check_input(t, (size_t)B, "timestep")) < 0 ||
        (res && (rc = check_input(res, mul3(B, 2, 1), "resolution")) < 0) ||
        (ar && (rc = check_input(ar, (size_t)B, "aspect_ratio")) < 0))
        return rc;
    for (size_t i = 0; mask && i < (size_t)B * S; i++)
        if (mask[i] != 0.0f && mask[i] != 1.0f)
            return ss_fail(SS_EARG, "pixart forward: input 'encoder_attention_mask' has %g at batch %zu, token %zu; it must hold "
                           "0 (padding) or 1 (kept)", (double)mask[i], i / S, i % S);
    for (int b = 0; mask && c->cross_attention_dim && b < B; b++) {
        int any = 0;
        for (int j = 0; j < S; j++) any |= mask[(size_t)b * S + j] != 0.0f;
        if (!any)
            return ss_fail(SS_EARG, "pixart forward: input 'encoder_attention_mask' masks every one of the %d text tokens of "
                           "batch %d (the cross-attention would have no key to attend to)", S, b);
    }
    work w;
    if ((rc = work_alloc(&w, m, B, N, S)) < 0) return rc;
    for (size_t i = 0; i < (size_t)B * S; i++) w.kv[i] = !mask || mask[i] != 0.0f;
    /* 1. patch embedding (gather (c, py, px) patch vectors, one matrix product) + the sin-cos table */
    const int cpp = Cin * p * p;
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < wd; q++) {
                float *pv = w.hid + ((size_t)b * N + (size_t)r * wd + q) * cpp;
                for (int ci = 0; ci < Cin; ci++)
                    for (int py = 0; py < p; py++)
                        for (int px = 0; px < p; px++)
                            pv[(ci * p + py) * p + px] = hs[(((size_t)b * Cin + ci) * Hl + r * p + py) * Wl + q * p + px];
            }
    op_linear(w.X, w.hid, &m->patch, B * N);
    pixart_pos_table(w.pos, c, D, h, wd);
    if (hooks && hooks->pos_embed && (rc = hooks->pos_embed(hooks->ctx, w.pos, h, wd, D)) < 0) goto done;
    for (int b = 0; b < B; b++) {
        float *x = w.X + (size_t)b * N * D;
        for (size_t j = 0; j < (size_t)N * D; j++) x[j] += w.pos[j];
    }
    /* 2. adaLN-single: E = TE(t) [+ concat(res_emb(H), res_emb(W), ar_emb)]; T6 = linear(silu(E)) */
    embed(w.E, t, B, &m->t1, &m->t2, w.sin, w.emb);
    if (c->use_additional_conditions) {
        const int E3 = D / 3;
        float *re = w.O, *ae = w.O + (size_t)2 * B * E3; /* [2B, E3] then [B, E3]; O is free until block 0 */
        embed(re, res, 2 * B, &m->r1, &m->r2, w.sin, w.emb);
        embed(ae, ar, B, &m->a1, &m->a2, w.sin, w.emb);
        for (int b = 0; b < B; b++) {
            float *e = w.E + (size_t)b * D;
            for (int j = 0; j < 2 * E3; j++) e[j] += re[(size_t)b * 2 * E3 + j]; /* reshape(B, -1): [emb(H), emb(W)] */
            for (int j = 0; j < E3; j++) e[2 * E3 + j] += ae[(size_t)b * E3 + j];
        }
    }
    op_silu(w.mod, w.E, (size_t)B * D);
    op_linear(w.T6, w.mod, &m->adaln, B);
    /* 3. caption projection: linear_1, gelu_tanh, linear_2 (or the context as it is) */
    if (c->caption_channels) {
        op_linear(w.hid, ctx, &m->cap1, B * S);
        op_gelu_tanh(w.hid, (size_t)B * S * D);
        op_linear(w.cap, w.hid, &m->cap2, B * S);
    } else {
        memcpy(w.cap, ctx, sizeof(float) * mul3(B, S, J));
    }
    if ((rc = check_finite(w.X, B, N, D, "patch + position embedding")) < 0 ||
        (rc = check_finite(w.T6, B, 1, 6 * D, "timestep conditioning (adaln_single)")) < 0 ||
        (rc = check_finite(w.cap, B, S, c->caption_channels ? D : J, "caption projection output")) < 0)
        goto done;
    /* 4. blocks */
    for (int i = 0; i < c->num_layers && rc == 0; i++) rc = block_forward(m, i, &w, B, N, S, hooks);
    if (rc < 0) goto done;
    /* 5. final layer: shift, scale = scale_shift_table + E (pre-SiLU), SHIFT first; proj_out */
    for (int b = 0; b < B; b++) {
        float *md = w.mod + (size_t)b * 2 * D;
        for (int j = 0; j < 2 * D; j++) md[j] = m->sst_out[j] + w.E[(size_t)b * D + j % D];
        op_ln_modulate(w.nX + (size_t)b * N * D, w.X + (size_t)b * N * D, md, md + D, N, D, 1e-6f);
    }
    op_linear(w.hid, w.nX, &m->proj_out, B * N);
    if ((rc = check_finite(w.hid, B, N, pp, "final layer (proj_out) output")) < 0) goto done;
    /* 6. unpatchify: channel (py*p + px)*Cout + c inside a token */
    for (int b = 0; b < B; b++)
        for (int r = 0; r < h; r++)
            for (int q = 0; q < wd; q++) {
                const float *y = w.hid + ((size_t)b * N + (size_t)r * wd + q) * pp;
                for (int py = 0; py < p; py++)
                    for (int px = 0; px < p; px++)
                        for (int co = 0; co < Cout; co++)
                            out[(((size_t)b * Cout + co) * Hl + r * p + py) * Wl + q * p + px] = y[(py * p + px) * Cout + co];
            }
done:
    work_free(&w);
    return rc;
}

double pixart_forward_flops(const pixart_config *c, int B, int Hl, int Wl, int S) {
    const double D = (double)c->num_heads * c->head_dim, p = c->patch_size, N = (Hl / p) * (Wl / p);
    const double J = c->caption_channels ? c->caption_channels : c->cross_attention_dim;
    double f = 2 * N * D * c->in_channels * p * p;
    if (c->caption_channels) f += 2 * S * D * c->caption_channels + 2 * S * D * D;
    for (int i = 0; i < c->num_layers; i++) {
        f += 2 * N * D * D * 4 + 2 * 2 * N * N * D;       /* self-attention: q, k, v, out; QK^T and PV */
        if (c->cross_attention_dim)
            f += 2 * N * D * D * 2 + 2 * S * D * (c->caption_channels ? D : J) * 2 + 2 * 2 * N * S * D;
        f += 2 * N * D * 4 * D * 2;                         /* feed-forward */
    }
    f += 2 * N * D * p * p * c->out_channels;
    return f * B;
}
