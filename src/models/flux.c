/* FluxTransformer2DModel forward pass (dit-spec.md section 3; diffusers 0.32.1 transformer_flux.py).
 *
 * One stream buffer Z [B, T = S+N, D] holds both streams from the start, per batch element text
 * rows [0, S) then image rows [S, T): the double blocks work on its two row ranges, and
 * diffusers' concatenation before the first single block is then the identity (its split after
 * the last one: reading the image rows). */
#include "models/flux.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define TEMB_DIM 256 /* Timesteps(256) in front of the timestep and guidance embedders */

typedef struct {
    float *Z;             /* [B,T,D] the stream: text rows then image rows */
    float *temb, *stemb;  /* [B,D] */
    float *modx, *modc;   /* [B,6D] modulation (norm1 / single norm / norm_out; embedder hidden), [B,6D] */
    float *nZ;            /* [B,T,D] modulated inputs, same layout as Z; final [B,N,D] */
    float *Q, *K, *V, *O; /* [B,T,D] */
    float *hid;           /* FF hidden [max(N,S), 4D]; single-block concat [T, 5D]; proj_out [B*N, pp] */
    float *tmp;           /* [T, D] projections of one batch element; sinusoids [B, 256] */
    float *cos_t, *sin_t; /* [T, dh] */
    float *ids;           /* [T, n_axes] txt_ids then img_ids */
    float *xcopy;         /* [B,N,D] image stream for block_output */
} work;

static void work_free(work *w) {
    float **p = (float **)w;
    for (size_t i = 0; i < sizeof *w / sizeof(float *); i++) free(p[i]);
}

static size_t mul3(size_t a, size_t b, size_t c) {
    size_t ab, abc;
    if (ss_mul_size(a, b, &ab) || ss_mul_size(ab, c, &abc)) return SIZE_MAX;
    return abc;
}

static size_t max2(size_t a, size_t b) { return a > b ? a : b; }

static int work_alloc(work *w, const flux_model *m, int B, int N, int S) {
    memset(w, 0, sizeof *w);
    const int D = m->D, dh = m->cfg.head_dim, pp = m->cfg.patch_size * m->cfg.patch_size * m->cfg.out_channels;
    const size_t T = (size_t)N + S, NS = N > S ? N : S;
    struct { float **p; size_t n; } plan[] = {
        {&w->Z, mul3(B, T, D)}, {&w->temb, mul3(B, 1, D)}, {&w->stemb, mul3(B, 1, D)},
        {&w->modx, mul3(B, 6, D)}, {&w->modc, mul3(B, 6, D)}, {&w->nZ, mul3(B, T, D)},
        {&w->Q, mul3(B, T, D)}, {&w->K, mul3(B, T, D)}, {&w->V, mul3(B, T, D)}, {&w->O, mul3(B, T, D)},
        {&w->hid, max2(max2(mul3(NS, 4, D), mul3(T, 5, D)), mul3(B, N, pp))},
        {&w->tmp, max2(mul3(T, 1, D), mul3(B, 1, TEMB_DIM))},
        {&w->cos_t, mul3(T, 1, dh)}, {&w->sin_t, mul3(T, 1, dh)}, {&w->ids, mul3(T, 1, m->cfg.n_axes)},
        {&w->xcopy, mul3(B, N, D)},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        size_t bytes;
        *plan[i].p = ss_mul_size(sizeof(float), plan[i].n ? plan[i].n : 1, &bytes) ? NULL : ss_malloc_aligned(bytes);
        if (!*plan[i].p) {
            work_free(w);
            return ss_fail(SS_ENOMEM, "flux forward: out of memory (B=%d, N=%d, S=%d, D=%d)", B, N, S, D);
        }
    }
    return 0;
}

/* ---- non-finite values ---- */

/* x [B, rows, width] with text rows [0, n_txt) then image rows; `where` names the stage. */
static int check_finite(const float *x, int B, int rows, int n_txt, int width, const char *where) {
    const long long j = op_first_nonfinite(x, mul3(B, rows, width));
    if (j < 0) return 0;
    const long long per_b = (long long)rows * width, b = j / per_b, r = j % per_b / width, ch = j % width;
    return ss_fail(SS_EFORMAT, "flux forward: %s has a non-finite value (%s) at batch %lld, %s token %lld, channel %lld",
                   where, isnan(x[j]) ? "NaN" : "infinity", b, r < n_txt ? "text" : "image",
                   r < n_txt ? r : r - n_txt, ch);
}

static int check_input(const float *x, size_t n, const char *name) {
    if (!x) return ss_fail(SS_EARG, "flux forward: input '%s' is missing", name);
    const long long j = op_first_nonfinite(x, n);
    if (j < 0) return 0;
    return ss_fail(SS_EFORMAT, "flux forward: input '%s' has a non-finite value (%s) at flat index %lld", name,
                   isnan(x[j]) ? "NaN" : "infinity", j);
}

/* ---- RoPE ---- */

void flux_rope_tables(float *cos_t, float *sin_t, const float *ids, int T, const flux_config *c) {
    const int dh = c->head_dim;
    for (int r = 0; r < T; r++) {
        int ch = 0;
        for (int a = 0; a < c->n_axes; a++) {
            const int d = c->axes_dims[a];
            const double pos = (double)ids[(size_t)r * c->n_axes + a]; /* ids.float(), promoted to fp64 */
            for (int j = 0; j < d / 2; j++, ch += 2) {
                const double omega = 1.0 / pow(10000.0, (double)(2 * j) / d);
                const double th = pos * omega;
                const float cs = (float)cos(th), sn = (float)sin(th);
                cos_t[(size_t)r * dh + ch] = cos_t[(size_t)r * dh + ch + 1] = cs;
                sin_t[(size_t)r * dh + ch] = sin_t[(size_t)r * dh + ch + 1] = sn;
            }
        }
    }
}

void flux_rope_apply(float *x, int ld, const float *cos_t, const float *sin_t, int M, int H, int dh) {
#pragma omp parallel for schedule(static) if ((size_t)M * H * dh > (1u << 16))
    for (int r = 0; r < M; r++) {
        const float *cr = cos_t + (size_t)r * dh, *sr = sin_t + (size_t)r * dh;
        for (int h = 0; h < H; h++) {
            float *v = x + (size_t)r * ld + (size_t)h * dh;
            for (int j = 0; j < dh; j += 2) {
                const float x0 = v[j], x1 = v[j + 1];
                /* x * cos + rotated(x) * sin, rotated = (-x1, x0), each product rounded */
                const float a0 = x0 * cr[j], b0 = -x1 * sr[j];
                const float a1 = x1 * cr[j + 1], b1 = x0 * sr[j + 1];
                v[j] = a0 + b0;
                v[j + 1] = a1 + b1;
            }
        }
    }
}

/* ---- sites ---- */

static void site_fill(ss_site *s, const flux_config *c, int index, int block, int single, int N, int S) {
    memset(s, 0, sizeof *s);
    s->index = index;
    s->block = block;
    s->kind = single ? SS_SITE_SINGLE : SS_SITE_DOUBLE;
    s->Tq = s->Tk = N + S;
    s->n_qspan = s->n_kspan = 2;
    s->qspan[0] = s->kspan[0] = (ss_span){0, S, SS_TOK_TEXT};
    s->qspan[1] = s->kspan[1] = (ss_span){S, N, SS_TOK_IMAGE};
    s->n_axes = c->n_axes;
    for (int a = 0; a < c->n_axes && a < SS_SITE_MAX_AXES; a++) s->rope_dims[a] = c->axes_dims[a];
}

int flux_sites(const flux_config *c, int N, int S, ss_site *out, int cap) {
    int n = 0;
    for (int i = 0; i < c->num_layers; i++, n++)
        if (out && n < cap) site_fill(&out[n], c, n, i, 0, N, S);
    for (int j = 0; j < c->num_single_layers; j++, n++)
        if (out && n < cap) site_fill(&out[n], c, n, j, 1, N, S);
    return n;
}

/* ---- blocks ---- */


static attn_args site_args(const flux_model *m, work *w, int B, int N, int S) {
    const int T = N + S;
    return (attn_args){.B = B, .H = m->cfg.num_heads, .dh = m->cfg.head_dim, .T = T, .ld = m->D, .n_img = 0,
                       .q = w->Q, .k = w->K, .v = w->V, .out = w->O, .n_qspan = 2, .qend = {S, T},
                       .precision = m->precision};
}

/* RoPE on the joint Q and K of every batch element, with the rope_qk hook before and after. */
static int rope_qk(const flux_model *m, work *w, int B, int N, int S, int single, int block, const flux_hooks *hk) {
    const int D = m->D, H = m->cfg.num_heads, dh = m->cfg.head_dim, T = N + S;
    const attn_args a = site_args(m, w, B, N, S);
    ss_site site;
    site_fill(&site, &m->cfg, single ? m->cfg.num_layers + block : block, block, single, N, S);
    site.pos = w->ids;
    int rc;
    if (hk && hk->rope_qk && (rc = hk->rope_qk(hk->ctx, &site, 0, &a)) < 0) return rc;
    for (int b = 0; b < B; b++) {
        flux_rope_apply(w->Q + (size_t)b * T * D, D, w->cos_t, w->sin_t, T, H, dh);
        flux_rope_apply(w->K + (size_t)b * T * D, D, w->cos_t, w->sin_t, T, H, dh);
    }
    if (hk && hk->rope_qk && (rc = hk->rope_qk(hk->ctx, &site, 1, &a)) < 0) return rc;
    return 0;
}

/* The site's attention: the hook, or attn_forward; then the output checked. */
static int attend(const flux_model *m, work *w, int B, int N, int S, int single, int block, const flux_hooks *hk) {
    const int T = N + S;
    attn_args a = site_args(m, w, B, N, S);
    int rc;
    if (hk && hk->attention) {
        ss_site site;
        site_fill(&site, &m->cfg, single ? m->cfg.num_layers + block : block, block, single, N, S);
        site.pos = w->ids;
        ss_site_set_hidden(&site, w->Z, (size_t)T, m->D, m->D); /* the stream, unchanged until after the attention */
        rc = hk->attention(hk->ctx, &site, &a);
    } else {
        rc = attn_forward(&a, NULL);
    }
    if (rc < 0) return rc;
    char where[64];
    snprintf(where, sizeof where, "%s block %d: attention output", single ? "single" : "double", block);
    return check_finite(w->O, B, T, S, m->D, where);
}

static int double_forward(const flux_model *m, int i, work *w, int B, int N, int S, const flux_hooks *hk) {
    const flux_double *bk = &m->dbl[i];
    const int D = m->D, H = m->cfg.num_heads, dh = m->cfg.head_dim, T = N + S;
    op_linear(w->modx, w->stemb, &bk->norm1, B);
    op_linear(w->modc, w->stemb, &bk->norm1_ctx, B);
    for (int b = 0; b < B; b++) {
        const float *mx = w->modx + (size_t)b * 6 * D, *mc = w->modc + (size_t)b * 6 * D;
        const size_t o = (size_t)b * T * D, oi = o + (size_t)S * D; /* text rows, image rows */
        op_ln_modulate(w->nZ + oi, w->Z + oi, mx + 0 * D, mx + 1 * D, N, D, 1e-6f);
        op_ln_modulate(w->nZ + o, w->Z + o, mc + 0 * D, mc + 1 * D, S, D, 1e-6f);
        op_linear(w->Q + o, w->nZ + o, &bk->add_q, S);
        op_linear(w->K + o, w->nZ + o, &bk->add_k, S);
        op_linear(w->V + o, w->nZ + o, &bk->add_v, S);
        op_linear(w->Q + oi, w->nZ + oi, &bk->q, N);
        op_linear(w->K + oi, w->nZ + oi, &bk->k, N);
        op_linear(w->V + oi, w->nZ + oi, &bk->v, N);
        op_rmsnorm_heads(w->Q + o, D, bk->norm_added_q, S, H, dh, 1e-6f);
        op_rmsnorm_heads(w->K + o, D, bk->norm_added_k, S, H, dh, 1e-6f);
        op_rmsnorm_heads(w->Q + oi, D, bk->norm_q, N, H, dh, 1e-6f);
        op_rmsnorm_heads(w->K + oi, D, bk->norm_k, N, H, dh, 1e-6f);
    }
    int rc = rope_qk(m, w, B, N, S, 0, i, hk);
    if (rc < 0 || (rc = attend(m, w, B, N, S, 0, i, hk)) < 0) return rc;
    for (int b = 0; b < B; b++) {
        const float *mx = w->modx + (size_t)b * 6 * D, *mc = w->modc + (size_t)b * 6 * D;
        const size_t o = (size_t)b * T * D, oi = o + (size_t)S * D;
        op_linear(w->tmp, w->O + oi, &bk->out, N);
        op_add_gated(w->Z + oi, w->tmp, mx + 2 * D, N, D);
        op_ff_residual(w->Z + oi, mx + 3 * D, mx + 4 * D, mx + 5 * D, &bk->ff1, &bk->ff2, w->tmp, w->hid, N, D);
        op_linear(w->tmp, w->O + o, &bk->add_out, S);
        op_add_gated(w->Z + o, w->tmp, mc + 2 * D, S, D);
        op_ff_residual(w->Z + o, mc + 3 * D, mc + 4 * D, mc + 5 * D, &bk->cff1, &bk->cff2, w->tmp, w->hid, S, D);
    }
    char where[64];
    snprintf(where, sizeof where, "double block %d: output", i);
    if ((rc = check_finite(w->Z, B, T, S, D, where)) < 0) return rc;
    if (hk && hk->block_output) {
        for (int b = 0; b < B; b++)
            memcpy(w->xcopy + (size_t)b * N * D, w->Z + ((size_t)b * T + S) * D, sizeof(float) * N * D);
        if ((rc = hk->block_output(hk->ctx, i, w->xcopy, B, N, D)) < 0) return rc;
    }
    return 0;
}

static int single_forward(const flux_model *m, int j, work *w, int B, int N, int S, const flux_hooks *hk) {
    const flux_single *bk = &m->sgl[j];
    const int D = m->D, H = m->cfg.num_heads, dh = m->cfg.head_dim, T = N + S, BT = B * T;
    op_linear(w->modx, w->stemb, &bk->norm, B); /* [B, 3D]: shift, scale, gate */
    for (int b = 0; b < B; b++) {
        const float *mx = w->modx + (size_t)b * 3 * D;
        op_ln_modulate(w->nZ + (size_t)b * T * D, w->Z + (size_t)b * T * D, mx, mx + D, T, D, 1e-6f);
    }
    op_linear(w->Q, w->nZ, &bk->q, BT);
    op_linear(w->K, w->nZ, &bk->k, BT);
    op_linear(w->V, w->nZ, &bk->v, BT);
    op_rmsnorm_heads(w->Q, D, bk->norm_q, BT, H, dh, 1e-6f);
    op_rmsnorm_heads(w->K, D, bk->norm_k, BT, H, dh, 1e-6f);
    int rc = rope_qk(m, w, B, N, S, 1, j, hk);
    if (rc < 0 || (rc = attend(m, w, B, N, S, 1, j, hk)) < 0) return rc;
    const size_t ld = (size_t)5 * D;
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * T * D;
        float *cat = w->hid; /* [T, 5D]: attention output, then gelu_tanh(proj_mlp) */
        for (int r = 0; r < T; r++) memcpy(cat + r * ld, w->O + o + (size_t)r * D, sizeof(float) * D);
        op_linear_ld(cat + D, (int)ld, w->nZ + o, D, &bk->mlp, T);
        for (int r = 0; r < T; r++) op_gelu_tanh(cat + r * ld + D, (size_t)4 * D);
        op_linear(w->tmp, cat, &bk->out, T);
        op_add_gated(w->Z + o, w->tmp, w->modx + (size_t)b * 3 * D + 2 * D, T, D);
    }
    char where[64];
    snprintf(where, sizeof where, "single block %d: output", j);
    if ((rc = check_finite(w->Z, B, T, S, D, where)) < 0) return rc;
    if (hk && hk->single_output && (rc = hk->single_output(hk->ctx, j, w->Z, B, T, D)) < 0) return rc;
    return 0;
}

/* Timesteps(256, flip_sin_to_cos, shift 0) as diffusers computes it, also in a float64 model
 * (get_timestep_embedding casts to float32): the exponent -ln(10000) k / 128, its exp and the
 * argument t * freq are fp32 values; cos and sin of that fp32 argument, rounded. Keeping the
 * argument in double instead moves it by up to half an fp32 ulp of t * 1000 (1e-4 at
 * guidance 3.5), which showed as 1e-5 relative errors in the outputs. */
static void time_sinusoid(float *out, const float *t, int B) {
    const int half = TEMB_DIM / 2;
    const float c = (float)-log(10000.0);
    for (int k = 0; k < half; k++) {
        volatile float e = c * (float)k; /* two fp32 roundings, as torch: (c * k) / half */
        const float freq = (float)exp((double)(e / (float)half));
        for (int b = 0; b < B; b++) {
            volatile float arg = t[b] * freq;
            out[(size_t)b * TEMB_DIM + k] = (float)cos((double)arg);
            out[(size_t)b * TEMB_DIM + half + k] = (float)sin((double)arg);
        }
    }
}

/* TimestepEmbedding(Timesteps(v * 1000)) into y [B, D] (v as given when `scaled`); scratch h [B, D],
 * s [B, 256], sc [B]. */
static void embed_scalar(float *y, const float *v, int scaled, int B, const ss_linear *l1, const ss_linear *l2, float *h,
                         float *s, float *sc, int D) {
    for (int b = 0; b < B; b++) sc[b] = scaled ? v[b] : v[b] * 1000.0f;
    time_sinusoid(s, sc, B);
    op_linear(h, s, l1, B);
    op_silu(h, h, (size_t)B * D);
    op_linear(y, h, l2, B);
}

static int forward(const flux_model *m, float *out, const float *hs, const float *ctx, const float *pooled,
                   const float *t, int t_scaled, const float *guidance, const float *img_ids, const float *txt_ids, int B,
                   int N, int S, const flux_hooks *hooks) {
    const flux_config *c = &m->cfg;
    const int D = m->D, Cin = c->in_channels, J = c->joint_attention_dim, A = c->n_axes;
    const int pp = c->patch_size * c->patch_size * c->out_channels;
    if (B < 1 || N < 1 || S < 1 || B > 65536)
        return ss_fail(SS_ESHAPE, "flux forward: B=%d, N=%d image and S=%d text tokens must be positive", B, N, S);
    if ((long long)B * ((long long)N + S) > INT_MAX / 8)
        return ss_fail(SS_ESHAPE, "flux forward: batch %d x (%d image + %d text tokens) is too large", B, N, S);
    const int T = N + S;
    int rc;
    if ((rc = check_input(hs, mul3(B, N, Cin), "hidden_states")) < 0 ||
        (rc = check_input(ctx, mul3(B, S, J), "encoder_hidden_states")) < 0 ||
        (rc = check_input(pooled, mul3(B, 1, c->pooled_projection_dim), "pooled_projections")) < 0 ||
        (rc = check_input(t, (size_t)B, "timestep")) < 0 ||
        (c->guidance_embeds && (rc = check_input(guidance, (size_t)B, "guidance")) < 0) ||
        (rc = check_input(img_ids, mul3(N, A, 1), "img_ids")) < 0 ||
        (rc = check_input(txt_ids, mul3(S, A, 1), "txt_ids")) < 0)
        return rc;
    work w;
    if ((rc = work_alloc(&w, m, B, N, S)) < 0) return rc;
    /* 1. embeddings: text rows, then image rows of each batch element */
    for (int b = 0; b < B; b++) {
        float *zb = w.Z + (size_t)b * T * D;
        op_linear_ld(zb, D, ctx + (size_t)b * S * J, J, &m->ctx_embed, S);
        op_linear_ld(zb + (size_t)S * D, D, hs + (size_t)b * N * Cin, Cin, &m->x_embed, N);
    }
    /* 2. conditioning: time (+ guidance) + pooled text, each embedder linear, silu, linear */
    embed_scalar(w.temb, t, t_scaled, B, &m->t1, &m->t2, w.modx, w.tmp, w.O, D);
    if (c->guidance_embeds) {
        embed_scalar(w.stemb, guidance, 0, B, &m->g1, &m->g2, w.modx, w.tmp, w.O, D);
        for (size_t i = 0; i < (size_t)B * D; i++) w.temb[i] += w.stemb[i];
    }
    op_linear(w.modx, pooled, &m->p1, B);
    op_silu(w.modx, w.modx, (size_t)B * D);
    op_linear(w.stemb, w.modx, &m->p2, B);
    for (size_t i = 0; i < (size_t)B * D; i++) w.temb[i] += w.stemb[i];
    op_silu(w.stemb, w.temb, (size_t)B * D);
    if ((rc = check_finite(w.Z, B, T, S, D, "x_embedder / context_embedder output")) < 0 ||
        (rc = check_finite(w.temb, B, 1, 1, D, "timestep + guidance + pooled text conditioning")) < 0)
        goto done;
    /* 3. RoPE tables, once: ids = concat(txt_ids, img_ids) */
    memcpy(w.ids, txt_ids, sizeof(float) * S * A);
    memcpy(w.ids + (size_t)S * A, img_ids, sizeof(float) * N * A);
    flux_rope_tables(w.cos_t, w.sin_t, w.ids, T, c);
    /* 4. blocks */
    for (int i = 0; i < c->num_layers && rc == 0; i++) rc = double_forward(m, i, &w, B, N, S, hooks);
    for (int j = 0; j < c->num_single_layers && rc == 0; j++) rc = single_forward(m, j, &w, B, N, S, hooks);
    if (rc < 0) goto done;
    /* 5. norm_out (AdaLayerNormContinuous: scale rows first, then shift) on the image rows, proj_out */
    op_linear(w.modx, w.stemb, &m->norm_out, B);
    for (int b = 0; b < B; b++)
        op_ln_modulate(w.nZ + (size_t)b * N * D, w.Z + ((size_t)b * T + S) * D, w.modx + (size_t)b * 2 * D + D,
                       w.modx + (size_t)b * 2 * D, N, D, 1e-6f);
    op_linear(w.hid, w.nZ, &m->proj_out, B * N);
    if ((rc = check_finite(w.hid, B, N, 0, pp, "final layer (proj_out) output")) < 0) goto done;
    memcpy(out, w.hid, sizeof(float) * mul3(B, N, pp));
done:
    work_free(&w);
    return rc;
}

int flux_forward(const flux_model *m, float *out, const float *hs, const float *ctx, const float *pooled,
                 const float *t, const float *guidance, const float *img_ids, const float *txt_ids, int B, int N,
                 int S, const flux_hooks *hooks) {
    return forward(m, out, hs, ctx, pooled, t, 0, guidance, img_ids, txt_ids, B, N, S, hooks);
}

int flux_forward_t1000(const flux_model *m, float *out, const float *hs, const float *ctx, const float *pooled,
                       const float *t1000, const float *guidance, const float *img_ids, const float *txt_ids, int B,
                       int N, int S, const flux_hooks *hooks) {
    return forward(m, out, hs, ctx, pooled, t1000, 1, guidance, img_ids, txt_ids, B, N, S, hooks);
}

/* Every linear layer (M rows) and QK^T + PV of each block, per batch element, times B. */
double flux_forward_flops(const flux_config *c, int B, int N, int S) {
    const double D = (double)c->num_heads * c->head_dim, T = N + S, pp = c->patch_size * c->patch_size * c->out_channels;
    double f = 2 * N * D * c->in_channels + 2 * S * D * c->joint_attention_dim;
    f += 2 * D * (256 * (c->guidance_embeds ? 2 : 1) + c->pooled_projection_dim) + 2 * D * D * (c->guidance_embeds ? 3 : 2);
    for (int i = 0; i < c->num_layers; i++)
        f += 2 * 2 * 6 * D * D + 2 * T * D * D * 4 + 2 * T * D * 4 * D * 2 + 4 * T * T * D;
    for (int j = 0; j < c->num_single_layers; j++)
        f += 2 * 3 * D * D + 2 * T * D * D * 3 + 2 * T * D * 4 * D + 2 * T * 5 * D * D + 4 * T * T * D;
    return B * (f + 2 * 2 * D * D + 2 * N * D * pp);
}
