/* Trainer gradients: finite-difference checks of every backward op (nn/ops_bwd.h, against the
 * forward ops of nn/ops.h and attn_materialized_probs) and of the whole model; the training
 * forward (the model's own, sd3_forward_cache) against the inference forward (sd3_forward, before
 * and after a save/load round trip) and diffusers' fixture; no allocation per training step; the
 * parameter view bound through the loader's name table.
 *
 * Gradient-check scheme. Each op runs its fp32 forward on inputs quantised to multiples of
 * 2^-12 (so x +- h and x +- 2h are exact in fp32 for h = 2^-7), and the scalar checked is
 * L = sum_i r_i y_i accumulated in double, with fixed random r_i (the backward gets dy = r).
 * For a sample of coordinates of every input and parameter tensor (all of them when the
 * tensor has <= 48 entries, else 48 spread over it) the derivative is estimated with the
 * 5-point central stencil  (8(L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h,  truncation O(h^4),
 * and compared with the analytic gradient by the norm-wise relative error
 * ||g_fd - g_an||_2 / ||g_fd||_2 over the sampled coordinates. Required: <= 1e-3 per tensor.
 * The whole model: the fp32 analytic gradient of the flow-matching loss (tr_loss_grad) against
 * 5-point central differences (h = 1e-3) of an independent fp64 reference of the same loss
 * (ref_forward below), 8 coordinates of every tensor, same 1e-3 norm-wise criterion.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "nn/attn.h"
#include "nn/ops.h"
#include "nn/ops_bwd.h"
#include "core/rng.h"
#include "common.h"
#include "models/sd3.h"
#include "models/sd3_bwd.h"
#include "text/encoder.h"
#include "text/tokenizer.h"
#include "train/train.h"

#define H_STEP (1.0 / 128)
#define SAMPLE 48
#define TOL 1e-3

/* ---- harness ---- */

typedef double (*loss_fn)(void *ctx);

static double fd5(loss_fn f, void *ctx, float *x, size_t j, double h) {
    const float x0 = x[j];
    x[j] = (float)(x0 + h);
    const double a = f(ctx);
    x[j] = (float)(x0 - h);
    const double b = f(ctx);
    x[j] = (float)(x0 + 2 * h);
    const double c = f(ctx);
    x[j] = (float)(x0 - 2 * h);
    const double d = f(ctx);
    x[j] = x0;
    return (8 * (a - b) - (c - d)) / (12 * h);
}

/* Relative error of the analytic gradient g of f w.r.t. x (n entries) on a coordinate sample. */
static double check_tensor(loss_fn f, void *ctx, float *x, const float *g, size_t n, double h) {
    double num = 0, den = 0;
    const size_t k = n <= SAMPLE ? n : SAMPLE;
    for (size_t s = 0; s < k; s++) {
        const size_t j = n <= SAMPLE ? s : (size_t)((double)s * (n - 1) / (k - 1));
        const double e = fd5(f, ctx, x, j, h);
        num += (e - g[j]) * (e - g[j]);
        den += e * e;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double g_worst = 0; /* over all op checks, for the summary line */

static void report(const char *op, const char *tensor, double rel) {
    print_message("  gradcheck %-22s %-28s rel err %.2e\n", op, tensor, rel);
    if (rel > g_worst) g_worst = rel;
    if (!(rel <= TOL)) fail_msg("%s: d/d%s relative error %.3e > %.0e", op, tensor, rel, TOL);
}

/* Quantised uniform values in [-a, a]: multiples of 2^-12. */
static void fill(float *x, size_t n, double a, uint64_t stream) {
    for (size_t i = 0; i < n; i++) {
        double u = (double)(rng_uniform_u64(77, stream, i) >> 11) * 0x1.0p-53 * 2 - 1;
        x[i] = (float)(nearbyint(u * a * 4096.0) / 4096.0);
    }
}

static float *alloc_fill(size_t n, double a, uint64_t stream) {
    float *x = malloc(sizeof(float) * n);
    assert_non_null(x);
    fill(x, n, a, stream);
    return x;
}

static float *zeros(size_t n) {
    float *x = calloc(n, sizeof(float));
    assert_non_null(x);
    return x;
}

static double dot(const float *r, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * y[i];
    return s;
}

/* ---- linear ---- */

typedef struct {
    int M;
    ss_linear l;
    float *x, *W, *b, *y, *r;
} lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    op_linear(c->y, c->x, &c->l, c->M);
    return dot(c->r, c->y, (size_t)c->M * c->l.out);
}

static void test_grad_linear(void **st) {
    lin_ctx c = {.M = 7};
    c.x = alloc_fill(7 * 13, 1, 1), c.W = alloc_fill(11 * 13, 0.5, 2), c.b = alloc_fill(11, 0.5, 3);
    c.l = (ss_linear){.w = c.W, .b = c.b, .in = 13, .out = 11};
    c.y = zeros(7 * 11), c.r = alloc_fill(7 * 11, 1, 4);
    float *dx = alloc_fill(7 * 13, 1, 5), *dx0 = malloc(sizeof(float) * 7 * 13), *dW = zeros(11 * 13), *db = zeros(11);
    memcpy(dx0, dx, sizeof(float) * 7 * 13);
    op_linear_bwd(dx, 1.0f, dW, db, c.r, c.x, &c.l, c.M); /* beta = 1: accumulates */
    for (int i = 0; i < 7 * 13; i++) dx[i] -= dx0[i];
    report("linear", "x", check_tensor(lin_loss, &c, c.x, dx, 7 * 13, H_STEP));
    report("linear", "W", check_tensor(lin_loss, &c, c.W, dW, 11 * 13, H_STEP));
    report("linear", "b", check_tensor(lin_loss, &c, c.b, db, 11, H_STEP));
    free(c.x), free(c.W), free(c.b), free(c.y), free(c.r), free(dx), free(dx0), free(dW), free(db);
}

/* ---- LayerNorm + modulation ---- */

typedef struct {
    int G, R, D, ldm, plain;
    float *x, *mod, *y, *r;
} ln_ctx;

/* G groups of R rows, group g modulated by shift mod[g*ldm ..], scale mod[g*ldm + D ..] */
static double ln_loss(void *p) {
    ln_ctx *c = p;
    for (int g = 0; g < c->G; g++) {
        const size_t o = (size_t)g * c->R * c->D;
        if (c->plain) op_layernorm(c->y + o, c->x + o, c->R, c->D, 1e-6f);
        else op_ln_modulate(c->y + o, c->x + o, c->mod + g * c->ldm, c->mod + g * c->ldm + c->D, c->R, c->D, 1e-6f);
    }
    return dot(c->r, c->y, (size_t)c->G * c->R * c->D);
}

static void run_ln(int plain) {
    const int G = 3, R = 5, D = 24, ldm = 3 * D, n = G * R * D;
    ln_ctx c = {.G = G, .R = R, .D = D, .ldm = ldm, .plain = plain};
    c.x = alloc_fill(n, 2, 10), c.mod = alloc_fill(G * ldm, 0.7, 11), c.y = zeros(n), c.r = alloc_fill(n, 1, 12);
    for (int i = 0; i < G * R; i++) c.x[i * D] += 1.5f; /* non-zero row means */
    float *dx = zeros(n), *dmod = zeros(G * ldm), *xhat = zeros(n);
    if (plain) op_ln_modulate_bwd(dx, NULL, NULL, c.r, c.x, NULL, 0, G, R, D, 1e-6f, xhat);
    else op_ln_modulate_bwd(dx, dmod, dmod + D, c.r, c.x, c.mod + D, ldm, G, R, D, 1e-6f, xhat);
    /* the scratch holds LN(x) exactly as the forward computes it */
    ln_ctx plainc = c;
    plainc.plain = 1;
    ln_loss(&plainc);
    assert_memory_equal(xhat, c.y, sizeof(float) * n);
    const char *op = plain ? "layernorm" : "layernorm+modulate";
    report(op, "x", check_tensor(ln_loss, &c, c.x, dx, n, H_STEP));
    if (!plain) {
        /* shift is mod[g*ldm + j], scale mod[g*ldm + D + j]; the rest of each row is unused */
        report(op, "shift,scale", check_tensor(ln_loss, &c, c.mod, dmod, G * ldm, H_STEP));
    }
    free(c.x), free(c.mod), free(c.y), free(c.r), free(dx), free(dmod), free(xhat);
}

static void test_grad_layernorm(void **st) {
    run_ln(1);
    run_ln(0);
}

/* ---- RMSNorm per head ---- */

typedef struct {
    int M, H, dh;
    float *x, *w, *y, *r;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    const size_t n = (size_t)c->M * c->H * c->dh;
    memcpy(c->y, c->x, sizeof(float) * n);
    op_rmsnorm_heads(c->y, c->H * c->dh, c->w, c->M, c->H, c->dh, 1e-6f);
    return dot(c->r, c->y, n);
}

static void test_grad_rmsnorm(void **st) {
    rms_ctx c = {.M = 6, .H = 3, .dh = 8};
    const int n = 6 * 3 * 8;
    c.x = alloc_fill(n, 1.5, 20), c.w = alloc_fill(8, 0.5, 21), c.y = zeros(n), c.r = alloc_fill(n, 1, 22);
    for (int i = 0; i < 8; i++) c.w[i] += 1.0f;
    float *dx = zeros(n), *dw = zeros(8);
    op_rmsnorm_heads_bwd(dx, dw, c.r, c.x, c.w, c.M, c.H, c.dh, 1e-6f);
    report("rmsnorm(heads)", "x", check_tensor(rms_loss, &c, c.x, dx, n, H_STEP));
    report("rmsnorm(heads)", "w", check_tensor(rms_loss, &c, c.w, dw, 8, H_STEP));
    free(c.x), free(c.w), free(c.y), free(c.r), free(dx), free(dw);
}

/* ---- activations ---- */

typedef struct {
    int gelu;
    size_t n;
    float *x, *y, *r;
} act_ctx;

static double act_loss(void *p) {
    act_ctx *c = p;
    if (c->gelu) {
        memcpy(c->y, c->x, sizeof(float) * c->n);
        op_gelu_tanh(c->y, c->n);
    } else {
        op_silu(c->y, c->x, c->n);
    }
    return dot(c->r, c->y, c->n);
}

static void test_grad_activations(void **st) {
    for (int gelu = 0; gelu < 2; gelu++) {
        act_ctx c = {.gelu = gelu, .n = 64};
        c.x = alloc_fill(64, 4, 30), c.y = zeros(64), c.r = alloc_fill(64, 1, 31);
        float *dx = zeros(64);
        op_gelu_tanh_bwd(dx, c.r, c.x, 0); /* n = 0: no-op */
        if (gelu) op_gelu_tanh_bwd(dx, c.r, c.x, 64);
        else op_silu_bwd(dx, c.r, c.x, 64);
        report(gelu ? "gelu_tanh" : "silu", "x", check_tensor(act_loss, &c, c.x, dx, 64, H_STEP));
        free(c.x), free(c.y), free(c.r), free(dx);
    }
}

/* ---- gated residual ---- */

typedef struct {
    int G, R, D, ldg;
    float *y0, *x, *gate, *y, *r;
} gate_ctx;

static double gate_loss(void *p) {
    gate_ctx *c = p;
    const size_t n = (size_t)c->G * c->R * c->D;
    memcpy(c->y, c->y0, sizeof(float) * n);
    for (int g = 0; g < c->G; g++) {
        const size_t o = (size_t)g * c->R * c->D;
        op_add_gated(c->y + o, c->x + o, c->gate + g * c->ldg, c->R, c->D);
    }
    return dot(c->r, c->y, n);
}

static void test_grad_gate(void **st) {
    gate_ctx c = {.G = 2, .R = 5, .D = 12, .ldg = 30};
    const int n = 2 * 5 * 12;
    c.y0 = alloc_fill(n, 1, 40), c.x = alloc_fill(n, 1, 41), c.gate = alloc_fill(60, 1, 42), c.y = zeros(n);
    c.r = alloc_fill(n, 1, 43);
    float *dx = zeros(n), *dg = zeros(60);
    op_add_gated_bwd(dx, dg, c.r, c.x, c.gate, c.ldg, c.G, c.R, c.D);
    report("gated residual", "x", check_tensor(gate_loss, &c, c.x, dx, n, H_STEP));
    report("gated residual", "gate", check_tensor(gate_loss, &c, c.gate, dg, 60, H_STEP));
    free(c.y0), free(c.x), free(c.gate), free(c.y), free(c.r), free(dx), free(dg);
}

/* ---- attention: attn_materialized_probs per batch element, rows of stride ld > H*dh ---- */

typedef struct {
    int B, H, L, dh, ld;
    float *in[3], *o, *P, *r;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    const size_t lo = (size_t)c->L * c->ld, pp = (size_t)c->H * c->L * c->L;
    for (int b = 0; b < c->B; b++)
        assert_int_equal(attn_materialized_probs(c->o + b * lo, c->P + b * pp, c->in[0] + b * lo, c->in[1] + b * lo,
                                                 c->in[2] + b * lo, c->L, c->H, c->dh, c->ld, 1.0f / sqrtf((float)c->dh),
                                                 NULL, 0, NULL),
                         0);
    return dot(c->r, c->o, (size_t)c->B * lo);
}

static void run_attention(int L) {
    att_ctx c = {.B = 2, .H = 2, .L = L, .dh = 4, .ld = 10}; /* 2 unused columns per row */
    const int n = 2 * L * 10;
    static const char *const names[3] = {"Q", "K", "V"};
    for (int i = 0; i < 3; i++) c.in[i] = alloc_fill(n, 1.5, 50 + i);
    c.o = zeros(n), c.P = zeros(2 * 2 * L * L), c.r = alloc_fill(n, 1, 60);
    att_loss(&c);
    /* the same outputs as without P */
    float *o2 = zeros(n);
    for (int b = 0; b < 2; b++)
        assert_int_equal(attn_materialized(o2 + b * L * 10, c.in[0] + b * L * 10, c.in[1] + b * L * 10, c.in[2] + b * L * 10,
                                           L, 2, 4, 10, 0.5f, NULL, 0, NULL),
                         0);
    assert_memory_equal(o2, c.o, sizeof(float) * n);
    float *g[3];
    for (int i = 0; i < 3; i++) g[i] = zeros(n);
    for (int b = 0; b < 2; b++) {
        const size_t o = (size_t)b * L * 10;
        assert_int_equal(attn_materialized_bwd(g[0] + o, g[1] + o, g[2] + o, c.r + o, c.in[0] + o, c.in[1] + o,
                                               c.in[2] + o, c.o + o, c.P + (size_t)b * 2 * L * L, L, 2, 4, 10, 0.5f),
                         0);
    }
    for (int i = 0; i < 3; i++) report(L > 6 ? "attention(joint)" : "attention(self)", names[i],
                                       check_tensor(att_loss, &c, c.in[i], g[i], n, H_STEP));
    /* probabilities sum to one */
    for (int row = 0; row < 2 * 2 * L; row++) {
        double s = 0;
        for (int j = 0; j < L; j++) s += c.P[(size_t)row * L + j];
        assert_true(fabs(s - 1) < 1e-5);
    }
    for (int i = 0; i < 3; i++) free(c.in[i]), free(g[i]);
    free(c.o), free(c.P), free(c.r), free(o2);
}

static void test_grad_attention(void **st) {
    run_attention(9); /* 6 image + 3 text tokens */
    run_attention(6);
}

/* ---- timestep MLP and pooled projection: linear -> SiLU -> linear ---- */

typedef struct {
    int B, in, D, timestep;
    float *t, *x, *W1, *b1, *W2, *b2, *h, *s, *y, *r;
} mlp_ctx;

static double mlp_loss(void *p) {
    mlp_ctx *c = p;
    const ss_linear l1 = {.w = c->W1, .b = c->b1, .in = c->in, .out = c->D}, l2 = {.w = c->W2, .b = c->b2, .in = c->D, .out = c->D};
    if (c->timestep) op_timestep_embedding(c->x, c->t, c->B, c->in);
    op_linear(c->h, c->x, &l1, c->B);
    op_silu(c->s, c->h, (size_t)c->B * c->D);
    op_linear(c->y, c->s, &l2, c->B);
    return dot(c->r, c->y, (size_t)c->B * c->D);
}

static void run_mlp(int timestep) {
    mlp_ctx c = {.B = 3, .in = timestep ? 256 : 10, .D = 12, .timestep = timestep};
    const char *op = timestep ? "timestep MLP" : "pooled projection";
    c.t = malloc(sizeof(float) * 3);
    c.t[0] = 13.25f, c.t[1] = 500.0f, c.t[2] = 987.375f;
    c.x = alloc_fill((size_t)3 * c.in, 1, 70), c.W1 = alloc_fill((size_t)12 * c.in, 0.3, 71), c.b1 = alloc_fill(12, 0.3, 72);
    c.W2 = alloc_fill(144, 0.3, 73), c.b2 = alloc_fill(12, 0.3, 74), c.h = zeros(36), c.s = zeros(36), c.y = zeros(36);
    c.r = alloc_fill(36, 1, 75);
    mlp_loss(&c);
    const ss_linear l1 = {.w = c.W1, .b = c.b1, .in = c.in, .out = 12}, l2 = {.w = c.W2, .b = c.b2, .in = 12, .out = 12};
    float *dW1 = zeros((size_t)12 * c.in), *db1 = zeros(12), *dW2 = zeros(144), *db2 = zeros(12), *ds = zeros(36);
    float *dx = zeros((size_t)3 * c.in);
    op_linear_bwd(ds, 0, dW2, db2, c.r, c.s, &l2, 3);
    op_silu_bwd(ds, ds, c.h, 36);
    op_linear_bwd(timestep ? NULL : dx, 0, dW1, db1, ds, c.x, &l1, 3);
    if (!timestep) report(op, "pooled", check_tensor(mlp_loss, &c, c.x, dx, (size_t)3 * c.in, H_STEP));
    report(op, "linear_1.weight", check_tensor(mlp_loss, &c, c.W1, dW1, (size_t)12 * c.in, H_STEP));
    report(op, "linear_1.bias", check_tensor(mlp_loss, &c, c.b1, db1, 12, H_STEP));
    report(op, "linear_2.weight", check_tensor(mlp_loss, &c, c.W2, dW2, 144, H_STEP));
    report(op, "linear_2.bias", check_tensor(mlp_loss, &c, c.b2, db2, 12, H_STEP));
    free(c.t), free(c.x), free(c.W1), free(c.b1), free(c.W2), free(c.b2), free(c.h), free(c.s), free(c.y), free(c.r);
    free(dW1), free(db1), free(dW2), free(db2), free(ds), free(dx);
}

static void test_grad_conditioning(void **st) {
    run_mlp(1);
    run_mlp(0);
}

/* ---- unpatchify ---- */

typedef struct {
    int B, C, Hi, Wi, p;
    float *x, *y, *r;
} patch_ctx;

/* sd3's unpatchify, written out here (dit-spec 2.5): image [B, C, Hi, Wi] from token rows
 * y [B*N, p*p*C], channel (py*p + px)*C + c inside a token. */
static double unpatch_loss(void *p) {
    patch_ctx *c = p;
    const int gw = c->Wi / c->p, N = (c->Hi / c->p) * gw, pp = c->p * c->p * c->C;
    for (int b = 0; b < c->B; b++)
        for (int n = 0; n < N; n++)
            for (int py = 0; py < c->p; py++)
                for (int px = 0; px < c->p; px++)
                    for (int ch = 0; ch < c->C; ch++)
                        c->x[((b * c->C + ch) * c->Hi + (n / gw) * c->p + py) * c->Wi + (n % gw) * c->p + px] =
                            c->y[(b * N + n) * pp + (py * c->p + px) * c->C + ch];
    return dot(c->r, c->x, (size_t)c->B * c->C * c->Hi * c->Wi);
}

static void test_grad_patch(void **st) {
    patch_ctx c = {.B = 2, .C = 3, .Hi = 4, .Wi = 6, .p = 2};
    const int N = 6, cp = 12, nimg = 2 * 3 * 4 * 6;
    c.x = zeros(nimg), c.y = alloc_fill(2 * N * cp, 1, 84), c.r = alloc_fill(nimg, 1, 85);
    float *dy = zeros(2 * N * cp);
    sd3_unpatchify_bwd(dy, c.r, c.B, c.C, c.Hi, c.Wi, c.p);
    report("unpatchify", "y", check_tensor(unpatch_loss, &c, c.y, dy, 2 * N * cp, H_STEP));
    unpatch_loss(&c);
    assert_true(c.x[((1 * 3 + 2) * 4 + 2 + 1) * 6 + 2] == c.y[(1 * N + 4) * cp + (1 * 2 + 0) * 3 + 2]);
    free(c.x), free(c.y), free(c.r), free(dy);
}

/* ---- text embeddings ---- */

typedef struct {
    int B, S, J;
    int32_t *ids;
    te enc; /* the inference encoder over tok, pos */
    float *tok, *pos, *ehs, *pooled, *r1, *r2;
} emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    for (int b = 0; b < c->B; b++)
        assert_int_equal(te_encode_ids(&c->enc, c->ids + b * c->S, c->ehs + b * c->S * c->J, c->pooled + b * c->J), 0);
    return dot(c->r1, c->ehs, (size_t)c->B * c->S * c->J) + dot(c->r2, c->pooled, (size_t)c->B * c->J);
}

static void test_grad_text_embedding(void **st) {
    /* vocab 7; row 0: words, eos, pads; row 1: a repeated word; row 2: the empty prompt */
    int32_t ids[3 * 5] = {3, 5, 1, 0, 0, 4, 4, 6, 2, 1, 1, 0, 0, 0, 0};
    emb_ctx c = {.B = 3, .S = 5, .J = 6, .ids = ids};
    c.tok = alloc_fill(7 * 6, 1, 90), c.pos = alloc_fill(5 * 6, 1, 91), c.ehs = zeros(90), c.pooled = zeros(18);
    c.enc = (te){.cfg = {7, 5, 6, 6}, .tok_emb = c.tok, .pos_emb = c.pos};
    c.r1 = alloc_fill(90, 1, 92), c.r2 = alloc_fill(18, 1, 93);
    float *dtok = zeros(42), *dpos = zeros(30);
    tr_embed_bwd(dtok, dpos, c.r1, c.r2, ids, 3, 5, 6);
    report("text embeddings", "token_embedding", check_tensor(emb_loss, &c, c.tok, dtok, 42, H_STEP));
    report("text embeddings", "position_embedding", check_tensor(emb_loss, &c, c.pos, dpos, 30, H_STEP));
    free(c.tok), free(c.pos), free(c.ehs), free(c.pooled), free(c.r1), free(c.r2), free(dtok), free(dpos);
}

/* ---- whole model ---- */

/* dual: block 0 is a dual-attention (SD3.5 attn2) block */
static void tiny_arch(sd3_config *c, te_config *tc, int qk, int S, int dual) {
    memset(c, 0, sizeof *c);
    c->dual[0] = (uint8_t)(dual != 0);
    c->sample_size = 8, c->patch_size = 2, c->in_channels = 3, c->out_channels = 3;
    c->num_layers = 2, c->head_dim = 8, c->num_heads = 2, c->qk_norm = qk;
    c->caption_projection_dim = 16, c->joint_attention_dim = 12, c->pooled_projection_dim = 12;
    c->pos_embed_max_size = 5; /* > 4 patches per side: exercises the centre crop */
    *tc = (te_config){.vocab_size = 9, .max_length = S, .hidden_size = 12, .pooled_size = 12};
}

/* An independent fp64 reference of the whole training loss (naive loops, dit-spec 2.3-2.5),
 * reading the parameters from a double copy of the arena. Finite differences of it are
 * accurate to ~1e-10, far below the fp32 forward's rounding floor (~1e-7 of the loss), which
 * at this model's small gradients (1e-5) would swamp a 1e-3 relative check. */
typedef struct {
    const tr_model *m;
    const double *p;
} ref_t;

static const double *RP(const ref_t *r, const float *ptr) { return r->p + (ptr - r->m->param); }

static void rlin(const ref_t *r, double *y, const double *x, const ss_linear *l, int M) {
    const double *W = RP(r, l->w), *b = RP(r, l->b);
    for (int i = 0; i < M; i++)
        for (int o = 0; o < l->out; o++) {
            double s = b[o];
            for (int k = 0; k < l->in; k++) s += x[(size_t)i * l->in + k] * W[(size_t)o * l->in + k];
            y[(size_t)i * l->out + o] = s;
        }
}

static void rlnmod(double *y, const double *x, const double *shift, const double *scale, int R, int D) {
    for (int i = 0; i < R; i++) {
        double mu = 0, var = 0;
        for (int j = 0; j < D; j++) mu += x[i * D + j];
        mu /= D;
        for (int j = 0; j < D; j++) var += (x[i * D + j] - mu) * (x[i * D + j] - mu);
        const double rs = 1 / sqrt(var / D + 1e-6);
        for (int j = 0; j < D; j++) y[i * D + j] = (x[i * D + j] - mu) * rs * (1 + scale[j]) + shift[j];
    }
}

static void rrms(double *x, const double *w, int M, int H, int dh) {
    for (int i = 0; i < M * H; i++) {
        double ss = 0;
        for (int d = 0; d < dh; d++) ss += x[i * dh + d] * x[i * dh + d];
        const double rs = 1 / sqrt(ss / dh + 1e-6);
        for (int d = 0; d < dh; d++) x[i * dh + d] *= rs * w[d];
    }
}

static double rgelu(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double rsilu(double x) { return x / (1 + exp(-x)); }

/* Softmax attention of L rows (row stride D, H heads of dh), scale 1/sqrt(dh); pr: [L] scratch. */
static void rattn(double *O, const double *Q, const double *K, const double *V, int L, int H, int dh, int D, double *pr) {
    for (int h = 0; h < H; h++)
        for (int q = 0; q < L; q++) {
            double mxs = -1e300, sum = 0;
            for (int k = 0; k < L; k++) {
                double s = 0;
                for (int d = 0; d < dh; d++) s += Q[q * D + h * dh + d] * K[k * D + h * dh + d];
                pr[k] = s / sqrt((double)dh);
                mxs = fmax(mxs, pr[k]);
            }
            for (int k = 0; k < L; k++) sum += (pr[k] = exp(pr[k] - mxs));
            for (int d = 0; d < dh; d++) {
                double o = 0;
                for (int k = 0; k < L; k++) o += pr[k] * V[k * D + h * dh + d];
                O[q * D + h * dh + d] = o / sum;
            }
        }
}

/* FF residual x += gate * ff2(gelu(ff1(LN(x)(1+sc)+sh))) over R rows */
static void rff(const ref_t *r, double *x, const double *sh, const double *sc, const double *g, const ss_linear *f1,
                const ss_linear *f2, int R, int D) {
    double *n = malloc(sizeof(double) * R * D), *h = malloc(sizeof(double) * R * 4 * D), *o = malloc(sizeof(double) * R * D);
    rlnmod(n, x, sh, sc, R, D);
    rlin(r, h, n, f1, R);
    for (int i = 0; i < R * 4 * D; i++) h[i] = rgelu(h[i]);
    rlin(r, o, h, f2, R);
    for (int i = 0; i < R * D; i++) x[i] += g[i % D] * o[i];
    free(n), free(h), free(o);
}

/* Velocity for one sample: x [C, Hi, Wi], t, ids [S] -> out [C, Hi, Wi]. */
static void ref_forward(const ref_t *r, double *out, const double *x, float t, const int32_t *ids) {
    const tr_model *m = r->m;
    const sd3_model *v = &m->view;
    const sd3_config *c = &m->cfg;
    const int p = c->patch_size, C = c->in_channels, Hi = c->sample_size, gw = Hi / p, N = gw * gw;
    const int S = m->tcfg.max_length, J = m->tcfg.hidden_size, D = m->D, H = c->num_heads, dh = c->head_dim, T = N + S;
    const int M = c->pos_embed_max_size, off = (M - gw) / 2;
    double *X = malloc(sizeof(double) * N * D), *Cs = malloc(sizeof(double) * S * D), *pv = calloc((size_t)N * C * p * p, sizeof(double));
    double *ehs = malloc(sizeof(double) * S * J), pooled[64] = {0}, temb[64], stemb[64], e0[256], a[64], b2[64];
    const double *tok = RP(r, m->tok_emb), *pos = RP(r, m->pos_emb);
    int cnt = 0;
    for (int s = 0; s < S; s++) {
        for (int j = 0; j < J; j++) ehs[s * J + j] = tok[ids[s] * J + j] + pos[s * J + j];
        if (ids[s] != TOK_PAD) {
            cnt++;
            for (int j = 0; j < J; j++) pooled[j] += tok[ids[s] * J + j];
        }
    }
    for (int j = 0; j < J; j++) pooled[j] = cnt ? pooled[j] / cnt : 0;
    for (int n = 0; n < N; n++)
        for (int ci = 0; ci < C; ci++)
            for (int py = 0; py < p; py++)
                for (int px = 0; px < p; px++)
                    pv[n * C * p * p + (ci * p + py) * p + px] = x[(ci * Hi + (n / gw) * p + py) * Hi + (n % gw) * p + px];
    rlin(r, X, pv, &v->patch, N);
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) X[n * D + d] += m->pos_table[((off + n / gw) * M + off + n % gw) * D + d];
    for (int k = 0; k < 128; k++) {
        const double arg = (double)t * exp(-log(10000.0) * k / 128);
        e0[k] = cos(arg), e0[128 + k] = sin(arg);
    }
    rlin(r, a, e0, &v->t1, 1);
    for (int d = 0; d < D; d++) a[d] = rsilu(a[d]);
    rlin(r, temb, a, &v->t2, 1);
    rlin(r, a, pooled, &v->p1, 1);
    for (int d = 0; d < D; d++) a[d] = rsilu(a[d]);
    rlin(r, b2, a, &v->p2, 1);
    for (int d = 0; d < D; d++) temb[d] += b2[d], stemb[d] = rsilu(temb[d]);
    rlin(r, Cs, ehs, &v->ctx_embed, S);
    double *mx = malloc(sizeof(double) * 9 * D), *mc = malloc(sizeof(double) * 6 * D);
    double *n2 = malloc(sizeof(double) * N * D);
    double *Q = malloc(sizeof(double) * T * D), *K = malloc(sizeof(double) * T * D), *V = malloc(sizeof(double) * T * D);
    double *O = malloc(sizeof(double) * T * D), *nx = malloc(sizeof(double) * T * D), *pr = malloc(sizeof(double) * T);
    double *ao = malloc(sizeof(double) * T * D);
    for (int i = 0; i < c->num_layers; i++) {
        const sd3_block *bk = &v->blocks[i];
        rlin(r, mx, stemb, &bk->norm1, 1);
        rlin(r, mc, stemb, &bk->norm1_ctx, 1);
        rlnmod(nx, X, mx, mx + D, N, D);
        if (bk->dual) rlnmod(n2, X, mx + 6 * D, mx + 7 * D, N, D); /* attn2's input: the block's input stream */
        if (bk->last) rlnmod(nx + N * D, Cs, mc + D, mc, S, D);
        else rlnmod(nx + N * D, Cs, mc, mc + D, S, D);
        rlin(r, Q, nx, &bk->q, N), rlin(r, K, nx, &bk->k, N), rlin(r, V, nx, &bk->v, N);
        rlin(r, Q + N * D, nx + N * D, &bk->add_q, S), rlin(r, K + N * D, nx + N * D, &bk->add_k, S);
        rlin(r, V + N * D, nx + N * D, &bk->add_v, S);
        if (c->qk_norm) {
            rrms(Q, RP(r, bk->norm_q), N, H, dh), rrms(K, RP(r, bk->norm_k), N, H, dh);
            rrms(Q + N * D, RP(r, bk->norm_added_q), S, H, dh), rrms(K + N * D, RP(r, bk->norm_added_k), S, H, dh);
        }
        rattn(O, Q, K, V, T, H, dh, D, pr);
        rlin(r, ao, O, &bk->out, N);
        for (int j = 0; j < N * D; j++) X[j] += mx[2 * D + j % D] * ao[j];
        if (bk->dual) { /* attn2 (diffusers' JointTransformerBlock with use_dual_attention), after the joint residual */
            double *Q2 = malloc(sizeof(double) * N * D), *K2 = malloc(sizeof(double) * N * D), *V2 = malloc(sizeof(double) * N * D);
            double *A2 = malloc(sizeof(double) * N * D);
            rlin(r, Q2, n2, &bk->q2, N), rlin(r, K2, n2, &bk->k2, N), rlin(r, V2, n2, &bk->v2, N);
            if (c->qk_norm) rrms(Q2, RP(r, bk->norm_q2), N, H, dh), rrms(K2, RP(r, bk->norm_k2), N, H, dh);
            rattn(A2, Q2, K2, V2, N, H, dh, D, pr);
            rlin(r, Q2, A2, &bk->out2, N);
            for (int j = 0; j < N * D; j++) X[j] += mx[8 * D + j % D] * Q2[j]; /* Q2: attn2.to_out's output */
            free(Q2), free(K2), free(V2), free(A2);
        }
        rff(r, X, mx + 3 * D, mx + 4 * D, mx + 5 * D, &bk->ff1, &bk->ff2, N, D);
        if (bk->last) continue;
        rlin(r, ao, O + N * D, &bk->add_out, S);
        for (int j = 0; j < S * D; j++) Cs[j] += mc[2 * D + j % D] * ao[j];
        rff(r, Cs, mc + 3 * D, mc + 4 * D, mc + 5 * D, &bk->cff1, &bk->cff2, S, D);
    }
    rlin(r, mx, stemb, &v->norm_out, 1);
    rlnmod(nx, X, mx + D, mx, N, D);
    rlin(r, ao, nx, &v->proj_out, N);
    const int Co = c->out_channels;
    for (int n = 0; n < N; n++)
        for (int py = 0; py < p; py++)
            for (int px = 0; px < p; px++)
                for (int co = 0; co < Co; co++)
                    out[(co * Hi + (n / gw) * p + py) * Hi + (n % gw) * p + px] = ao[n * p * p * Co + (py * p + px) * Co + co];
    free(X), free(Cs), free(pv), free(ehs), free(mx), free(mc), free(Q), free(K), free(V), free(O), free(nx), free(pr);
    free(ao), free(n2);
}

typedef struct {
    tr_model *m;
    tr_ws *w;
    double *pd; /* fp64 copy of the parameters, perturbed by the check */
    float *x0, *noise, sigma[2];
    int32_t *ids;
} model_ctx;

/* The flow-matching loss of tr_loss_grad, in fp64. */
static double ref_loss(void *p) {
    model_ctx *c = p;
    const sd3_config *cf = &c->m->cfg;
    const int n = cf->in_channels * cf->sample_size * cf->sample_size, S = c->m->tcfg.max_length;
    ref_t r = {c->m, c->pd};
    double *xt = malloc(sizeof(double) * n), *out = malloc(sizeof(double) * n), L = 0;
    for (int b = 0; b < 2; b++) {
        const float s = c->sigma[b];
        for (int j = 0; j < n; j++) xt[j] = (float)(s * c->noise[b * n + j] + (1.0f - s) * c->x0[b * n + j]);
        ref_forward(&r, out, xt, (float)(1000.0 * s), c->ids + b * S);
        for (int j = 0; j < n; j++) {
            const double d = out[j] - ((double)c->noise[b * n + j] - c->x0[b * n + j]);
            L += d * d;
        }
    }
    free(xt), free(out);
    return L / (2.0 * n);
}

static double fd5d(double (*f)(void *), void *ctx, double *x, size_t j, double h) {
    const double x0 = x[j];
    x[j] = x0 + h;
    const double a = f(ctx);
    x[j] = x0 - h;
    const double b = f(ctx);
    x[j] = x0 + 2 * h;
    const double c = f(ctx);
    x[j] = x0 - 2 * h;
    const double d = f(ctx);
    x[j] = x0;
    return (8 * (a - b) - (c - d)) / (12 * h);
}

static void run_model(int qk, int dual) {
    sd3_config c;
    te_config tc;
    tiny_arch(&c, &tc, qk, 5, dual);
    model_ctx mc = {.sigma = {0.3f, 0.8f}};
    assert_int_equal(tr_model_new(&mc.m, &c, &tc, 5, 0), 0);
    assert_int_equal(tr_ws_new(&mc.w, mc.m, 2), 0);
    const size_t n = 2 * 3 * 8 * 8;
    mc.x0 = alloc_fill(n, 1, 100), mc.noise = alloc_fill(n, 1.5, 101);
    int32_t ids[10] = {2, 7, 3, 1, 0, 1, 0, 0, 0, 0}; /* a caption, and the empty prompt */
    mc.ids = ids;
    const double L = tr_loss_grad(mc.m, mc.w, mc.x0, mc.noise, mc.sigma, ids, 2, 1);
    assert_true(L > 0 && isfinite(L));
    mc.pd = malloc(sizeof(double) * mc.m->n);
    for (size_t i = 0; i < mc.m->n; i++) mc.pd[i] = mc.m->param[i];
    const double Lref = ref_loss(&mc);
    assert_true(fabs(L - Lref) <= 1e-5 * Lref); /* the fp32 loss is the fp64 one, rounded */
    double worst = 0;
    const char *wname = "";
    int n_attn2 = 0;
    for (int i = 0; i < mc.m->nt; i++) {
        const tr_tensor *t = &mc.m->t[i];
        double num = 0, den = 0;
        const size_t k = t->n < 8 ? t->n : 8;
        for (size_t s = 0; s < k; s++) {
            const size_t j = t->off + (k == 1 ? 0 : (size_t)((double)s * (t->n - 1) / (k - 1)));
            const double e = fd5d(ref_loss, &mc, mc.pd, j, 1e-3);
            const double g = mc.m->grad[j];
            if (getenv("GC_VERBOSE")) print_message("    %s[%zu] fd %.9g an %.9g\n", t->name, j - t->off, e, g);
            num += (e - g) * (e - g);
            den += e * e;
        }
        const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (rel > worst) worst = rel, wname = t->name;
        if (!(rel <= TOL)) fail_msg("model (qk_norm %d, dual %d): %s relative error %.3e", qk, dual, t->name, rel);
        if (strstr(t->name, "attn2.")) n_attn2++;
    }
    if (dual) assert_int_equal(n_attn2, qk ? 10 : 8); /* to_q/k/v/out.0 weight + bias (+ norm_q, norm_k) */
    print_message("  gradcheck whole model (qk_norm %s%s): loss fp32 %.9f vs fp64 %.9f; %d tensors, 8 coords each, "
                  "worst rel err %.2e (%s)\n", qk ? "rms" : "none", dual ? ", block 0 dual" : "", L, Lref, mc.m->nt,
                  worst, wname);
    free(mc.pd), free(mc.x0), free(mc.noise);
    tr_ws_free(mc.w);
    tr_model_free(mc.m);
}

static void test_grad_model(void **st) {
    run_model(0, 0);
    run_model(1, 0);
}

/* The same check with block 0 a dual-attention (SD3.5 attn2) block: attn2's tensors included. */
static void test_grad_model_dual(void **st) {
    run_model(0, 1);
    run_model(1, 1);
}

/* ---- training forward == inference forward ---- */

static double max_rel(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / (s > 0 ? s : 1);
}

static void run_forward_match(int qk, int dual) {
    sd3_config c;
    te_config tc;
    tiny_arch(&c, &tc, qk, 6, dual);
    c.sample_size = 16, c.num_layers = 3, c.pos_embed_max_size = 8;
    c.dual[1] = (uint8_t)(dual != 0); /* blocks 0 and 1 dual, as --dual-layers 2 */
    const int B = 2, S = 6, J = 12, n = 3 * 16 * 16;
    tr_model *m;
    tr_ws *w;
    assert_int_equal(tr_model_new(&m, &c, &tc, 9, 0), 0);
    assert_int_equal(tr_ws_new(&w, m, B), 0);
    float *x = alloc_fill((size_t)B * n, 1.5, 110), *out = zeros((size_t)B * n), *ref = zeros((size_t)B * n);
    float t[2] = {999.0f, 123.5f}, ehs[2 * 6 * 12], pooled[2 * 12];
    int32_t ids[12] = {2, 3, 4, 1, 0, 0, 1, 0, 0, 0, 0, 0};
    assert_int_equal(tr_forward(m, w, x, t, ids, B, out), 0);
    const te enc = {.cfg = m->tcfg, .tok_emb = m->tok_emb, .pos_emb = m->pos_emb};
    for (int b = 0; b < B; b++) assert_int_equal(te_encode_ids(&enc, ids + S * b, ehs + S * J * b, pooled + J * b), 0);
    assert_int_equal(sd3_forward(&m->view, ref, x, ehs, pooled, t, B, 16, 16, S, NULL), 0);
    double e1 = max_rel(out, ref, (size_t)B * n);
    /* save, load with the inference loaders, compare again */
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/ss_train_XXXXXX");
    assert_non_null(mkdtemp(dir));
    char mdir[128], tdir[160];
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    tok_vocab *v;
    static const char *const words[] = {"a", "b", "c", "d", "e", "f", "g", NULL};
    assert_int_equal(tok_vocab_from_words(&v, words), 0);
    assert_int_equal(tr_model_save(m, m->param, v, 1.0, mdir), 0);
    snprintf(tdir, sizeof tdir, "%s/transformer", mdir);
    sd3_model *lm;
    te *lt;
    if (sd3_load(&lm, tdir) < 0) fail_msg("%s", ss_err());
    if (te_load(&lt, mdir) < 0) fail_msg("%s", ss_err());
    for (int b = 0; b < B; b++) assert_int_equal(te_encode_ids(lt, ids + S * b, ehs + S * J * b, pooled + J * b), 0);
    assert_int_equal(sd3_forward(lm, ref, x, ehs, pooled, t, B, 16, 16, S, NULL), 0);
    double e2 = max_rel(out, ref, (size_t)B * n);
    print_message("  forward vs sd3_forward (qk_norm %s%s): max rel diff %.2e in memory, %.2e after save + sd3_load\n",
                  qk ? "rms" : "none", dual ? ", blocks 0-1 dual" : "", e1, e2);
    assert_true(e1 <= 1e-5);
    assert_true(e2 <= 1e-5);
    sd3_free(lm);
    te_free(lt);
    tok_vocab_free(v);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(x), free(out), free(ref);
    tr_ws_free(w);
    tr_model_free(m);
}

static void test_forward_matches_inference(void **st) {
    run_forward_match(0, 0);
    run_forward_match(1, 0);
    run_forward_match(0, 1);
    run_forward_match(1, 1);
}

/* ---- the cached forward: sd3_forward_cache against sd3_forward and diffusers ---- */

/* On a diffusers fixture: the cached forward (materialized attention) matches the inference
 * forward to fp32 rounding and diffusers' output to the fixture tolerance; what the cache records
 * is what the forward computed (block i+1 receives block i's output, the final layer's input is
 * the last block's, proj_out's rows unpatchify to the output); a cache for a larger batch serves
 * a smaller one; a second call allocates nothing. */
static void test_cached_forward_fixture(void **st) {
    tc_sd3fx f;
    if (tc_sd3fx_load(&f, "sd3-tiny-a") < 0) fail_msg("%s", ss_err());
    const sd3_model *m = f.m;
    const int B = f.B, N = f.N, S = f.S, D = m->D, L = m->cfg.num_layers;
    float *ref = zeros(f.nout), *out = zeros(f.nout), *out1 = zeros(f.nout);
    float *exp = tc_load(f.expected, "sample", NULL, NULL, NULL);
    assert_non_null(exp);
    assert_int_equal(sd3_forward(m, ref, f.x, f.ctx, f.pooled, f.t, B, f.Hl, f.Wl, S, NULL), 0);
    sd3_workspace *ws;
    sd3_cache *c;
    assert_int_equal(sd3_workspace_new(&ws, m, B + 1, f.Hl, f.Wl, S), 0);
    assert_int_equal(sd3_cache_new(&c, m, B + 1, f.Hl, f.Wl, S), 0);
    assert_int_equal(sd3_forward_cache(m, ws, c, out, f.x, f.ctx, f.pooled, f.t, B, f.Hl, f.Wl, S), 0);
    const double e_inf = max_rel(out, ref, f.nout), e_dif = tc_rel_l2(out, exp, f.nout);
    print_message("  cached forward (sd3-tiny-a): max rel diff %.2e vs sd3_forward, rel L2 %.2e vs diffusers\n", e_inf,
                  e_dif);
    assert_true(e_inf <= 1e-5);
    assert_true(e_dif <= 1e-4);
    /* block i's image output, x_mid + gate * FF from its cache, is what block i+1 (or the final
     * layer) received, bit for bit */
    float *xo = malloc(sizeof(float) * B * N * D);
    for (int i = 0; i < L; i++) {
        const sd3_block_cache *bc = &c->blocks[i];
        memcpy(xo, bc->x_mid, sizeof(float) * B * N * D);
        for (int b = 0; b < B; b++)
            op_add_gated(xo + (size_t)b * N * D, bc->fx + (size_t)b * N * D, bc->modx + (size_t)b * 6 * D + 5 * D, N, D);
        assert_memory_equal(xo, i + 1 < L ? c->blocks[i + 1].x_in : c->x_out, sizeof(float) * B * N * D);
    }
    free(xo);
    /* probabilities: rows sum to one */
    const int T = N + S, H = m->cfg.num_heads;
    for (int r = 0; r < B * H * T; r++) {
        double s = 0;
        for (int j = 0; j < T; j++) s += c->blocks[0].p[(size_t)r * T + j];
        assert_true(fabs(s - 1) < 1e-5);
    }
    /* GELU output = GELU(linear 1 output), bit for bit */
    const size_t nh = (size_t)B * N * 4 * D;
    float *g = malloc(sizeof(float) * nh);
    memcpy(g, c->blocks[1].hx, sizeof(float) * nh);
    op_gelu_tanh(g, nh);
    assert_memory_equal(g, c->blocks[1].gx, sizeof(float) * nh);
    free(g);
    /* batch element 0 alone: the same rows */
    assert_int_equal(sd3_forward_cache(m, ws, c, out1, f.x, f.ctx, f.pooled, f.t, 1, f.Hl, f.Wl, S), 0);
    assert_memory_equal(out1, out, sizeof(float) * f.nout / B);
    const long a0 = sd3_workspace_allocs(ws);
    assert_int_equal(sd3_forward_cache(m, ws, c, out1, f.x, f.ctx, f.pooled, f.t, B, f.Hl, f.Wl, S), 0);
    assert_memory_equal(out1, out, sizeof(float) * f.nout);
    assert_int_equal(sd3_workspace_allocs(ws), a0);
    /* sizes the cache does not hold */
    assert_int_equal(sd3_forward_cache(m, ws, c, out1, f.x, f.ctx, f.pooled, f.t, B + 2, f.Hl, f.Wl, S), SS_EARG);
    assert_non_null(strstr(ss_err(), "activation cache"));
    assert_int_equal(sd3_forward_cache(m, ws, c, out1, f.x, f.ctx, f.pooled, f.t, B, f.Hl, f.Wl, S - 1), SS_EARG);
    sd3_cache_free(c);
    sd3_workspace_free(ws);
    free(ref), free(out), free(out1), free(exp);
    tc_sd3fx_free(&f);
    /* SD3.5 dual-attention blocks (attn2, materialized too): the same agreement, attn2's
     * probabilities recorded */
    if (tc_sd3fx_load(&f, "sd35-tiny-b") < 0) fail_msg("%s", ss_err());
    float *ref2 = zeros(f.nout), *out2 = zeros(f.nout), *exp2 = tc_load(f.expected, "sample", NULL, NULL, NULL);
    assert_non_null(exp2);
    assert_int_equal(sd3_forward(f.m, ref2, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S, NULL), 0);
    assert_int_equal(sd3_workspace_new(&ws, f.m, f.B, f.Hl, f.Wl, f.S), 0);
    assert_int_equal(sd3_cache_new(&c, f.m, f.B, f.Hl, f.Wl, f.S), 0);
    assert_int_equal(sd3_forward_cache(f.m, ws, c, out2, f.x, f.ctx, f.pooled, f.t, f.B, f.Hl, f.Wl, f.S), 0);
    const double e2_inf = max_rel(out2, ref2, f.nout), e2_dif = tc_rel_l2(out2, exp2, f.nout);
    int nd = 0;
    for (int i = 0; i < f.m->cfg.num_layers; i++) {
        const sd3_block_cache *bc = &c->blocks[i];
        assert_true(f.m->cfg.dual[i] ? bc->p2 && bc->a2 : !bc->p2 && !bc->n2);
        if (!f.m->cfg.dual[i]) continue;
        nd++;
        for (int r = 0; r < f.B * f.m->cfg.num_heads * f.N; r++) {
            double sum = 0;
            for (int j = 0; j < f.N; j++) sum += bc->p2[(size_t)r * f.N + j];
            assert_true(fabs(sum - 1) < 1e-5);
        }
    }
    print_message("  cached forward (sd35-tiny-b, %d dual blocks): max rel diff %.2e vs sd3_forward, rel L2 %.2e vs "
                  "diffusers\n", nd, e2_inf, e2_dif);
    assert_true(nd > 0);
    assert_true(e2_inf <= 1e-5);
    assert_true(e2_dif <= 1e-4);
    sd3_cache_free(c);
    sd3_workspace_free(ws);
    free(ref2), free(out2), free(exp2);
    tc_sd3fx_free(&f);
}

/* A tiny trainable model (tiny_arch, generic init) with a work space for 2 and one batch. */
typedef struct {
    tr_model *m;
    tr_ws *w;
    float *x0, *noise, sigma[2];
    int32_t ids[10]; /* a caption, and the empty prompt */
} small_run;

static void small_run_new(small_run *r, int qk) {
    sd3_config c;
    te_config tc;
    tiny_arch(&c, &tc, qk, 5, 0);
    *r = (small_run){.sigma = {0.3f, 0.8f}, .ids = {2, 7, 3, 1, 0, 1, 0, 0, 0, 0}};
    assert_int_equal(tr_model_new(&r->m, &c, &tc, 5, 0), 0);
    assert_int_equal(tr_ws_new(&r->w, r->m, 2), 0);
    r->x0 = alloc_fill(2 * 3 * 8 * 8, 1, 100), r->noise = alloc_fill(2 * 3 * 8 * 8, 1.5, 101);
}

static void small_run_free(small_run *r) {
    free(r->x0), free(r->noise);
    tr_ws_free(r->w);
    tr_model_free(r->m);
}

/* The trainer's steps reuse the forward's workspace: no allocation after the first. */
static void test_step_allocates_nothing(void **st) {
    small_run r;
    small_run_new(&r, 1);
    const double L1 = tr_loss_grad(r.m, r.w, r.x0, r.noise, r.sigma, r.ids, 2, 1);
    const long a0 = sd3_workspace_allocs(NULL);
    for (int s = 0; s < 3; s++) assert_true(tr_loss_grad(r.m, r.w, r.x0, r.noise, r.sigma, r.ids, s == 1 ? 1 : 2, 1) > 0);
    assert_int_equal(sd3_workspace_allocs(NULL), a0);
    assert_true(tr_loss_grad(r.m, r.w, r.x0, r.noise, r.sigma, r.ids, 2, 0) == L1); /* the same batch, the same loss */
    small_run_free(&r);
}

/* sd3_bind_view asks for exactly the tensors sd3_enumerate_tensors names (one name table), and a
 * missing one fails naming it. */
typedef struct {
    int calls;
    const char *refuse;
    float buf[1 << 16];
} view_ctx;

static const float *view_lookup(void *ctx, const char *name, int ndim, const int64_t *shape) {
    view_ctx *v = ctx;
    v->calls++;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    if ((v->refuse && strstr(name, v->refuse)) || n > (int64_t)(sizeof v->buf / sizeof v->buf[0])) return NULL;
    return v->buf;
}

static void count_cb(void *ctx, const char *name, int ndim, const int64_t *shape) { ++*(int *)ctx; }

static void test_bind_view_names(void **st) {
    sd3_config c;
    te_config tc;
    tiny_arch(&c, &tc, 1, 5, 0);
    int n = 0;
    assert_int_equal(sd3_enumerate_tensors(&c, count_cb, &n), 0);
    view_ctx *v = calloc(1, sizeof *v);
    sd3_model m;
    assert_int_equal(sd3_bind_view(&m, &c, view_lookup, v, "view"), 0);
    assert_int_equal(v->calls, n);
    assert_true(m.blocks[1].norm_added_k == v->buf && m.proj_out.in == 16 && m.blocks[1].last);
    free(m.blocks);
    v->refuse = "transformer_blocks.1.attn.to_k.bias";
    assert_int_equal(sd3_bind_view(&m, &c, view_lookup, v, "view"), SS_EMISSING);
    assert_null(m.blocks);
    assert_non_null(strstr(ss_err(), "'transformer_blocks.1.attn.to_k.bias'"));
    free(v);
}

/* A NaN weight is caught by the model's forward checks during training, naming the block. */
static void test_nonfinite_named(void **st) {
    small_run r;
    small_run_new(&r, 0);
    const int i = tr_model_find(r.m, "transformer_blocks.1.ff.net.2.bias");
    assert_true(i >= 0);
    r.m->param[r.m->t[i].off + 3] = NAN;
    assert_true(tr_loss_grad(r.m, r.w, r.x0, r.noise, r.sigma, r.ids, 2, 1) == SS_EFORMAT);
    print_message("  %s\n", ss_err());
    assert_non_null(strstr(ss_err(), "trainer: forward: block 1: image stream output"));
    small_run_free(&r);
}

static int summary(void **st) {
    print_message("  worst op gradient-check error: %.2e (tolerance %.0e)\n", g_worst, TOL);
    return 0;
}

int main(int argc, char **argv) {
    /* passive OpenMP waiting (read at load time, hence the re-exec): spinning threads stall
     * for whole time slices when other processes share the cores */
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1)) execv("/proc/self/exe", argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_linear),        cmocka_unit_test(test_grad_layernorm),
        cmocka_unit_test(test_grad_rmsnorm),       cmocka_unit_test(test_grad_activations),
        cmocka_unit_test(test_grad_gate),          cmocka_unit_test(test_grad_attention),
        cmocka_unit_test(test_grad_conditioning),  cmocka_unit_test(test_grad_patch),
        cmocka_unit_test(test_grad_text_embedding), cmocka_unit_test(test_grad_model),
        cmocka_unit_test(test_grad_model_dual),
        cmocka_unit_test(test_forward_matches_inference), cmocka_unit_test(test_cached_forward_fixture),
        cmocka_unit_test(test_step_allocates_nothing), cmocka_unit_test(test_bind_view_names),
        cmocka_unit_test(test_nonfinite_named),
    };
    return cmocka_run_group_tests(tests, NULL, summary);
}
