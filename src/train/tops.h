/* tops: the trainer's differentiable ops, fp32, rows are tokens (row-major).
 *
 * Conventions. A forward function writes its output and whatever its backward needs (named in
 * its comment). A backward function ACCUMULATES parameter gradients (dW += ..., db += ...) and
 * writes input gradients as stated per function ("=" overwrites, "+=" accumulates), so the
 * caller can sum contributions of several consumers.
 *
 * Determinism: every reduction has a fixed order that depends neither on the OpenMP thread
 * count nor on scheduling (column sums are split by columns, not rows; attention is split by
 * (batch, head) with single-threaded BLAS inside), so a run is bit-reproducible for a given
 * thread count, which is what exact checkpoint resume needs.
 */
#ifndef SS_TRAIN_TOPS_H
#define SS_TRAIN_TOPS_H

#include <stddef.h>
#include <stdint.h>

/* y[M,out] = x[M,in] W^T + b (b may be NULL). */
void tr_linear_fwd(float *y, const float *x, const float *W, const float *b, int M, int in, int out);
/* dW[out,in] += dy^T x; db[out] += column sums of dy (if db); dx = beta*dx + dy W (if dx;
 * beta 0 or 1). */
void tr_linear_bwd(float *dx, float beta, float *dW, float *db, const float *dy, const float *x, const float *W,
                   int M, int in, int out);

/* Modulated LayerNorm (no affine, eps 1e-6) over G groups of R rows of width D; group g uses
 * shift + g*ldm and scale + g*ldm:  xhat = LN(x), y = xhat*(1+scale) + shift.
 * Keeps xhat [G*R, D] and rstd [G*R]. scale/shift may be NULL (plain LN: then ldm is unused). */
void tr_lnmod_fwd(float *y, float *xhat, float *rstd, const float *x, const float *shift, const float *scale,
                  int ldm, int G, int R, int D);
/* dshift += sum over rows of dy, dscale += sum of dy*xhat (each per group; either may be NULL);
 * dx += LN backward of dy*(1+scale). */
void tr_lnmod_bwd(float *dx, float *dshift, float *dscale, const float *dy, const float *xhat, const float *rstd,
                  const float *scale, int ldm, int G, int R, int D);

/* RMSNorm over each head's dh values (eps 1e-6), times w[dh]: y = x * r * w, keeps r [M*H]. */
void tr_rms_fwd(float *y, float *r, const float *x, const float *w, int M, int H, int dh);
/* dx = ... (overwrites), dw[dh] += sum of dy * x * r. */
void tr_rms_bwd(float *dx, float *dw, const float *dy, const float *x, const float *r, const float *w, int M, int H,
                int dh);

/* Elementwise activations; backward: dx = dy * f'(x) (dx may alias dy). */
void tr_gelu_fwd(float *y, const float *x, size_t n);
void tr_gelu_bwd(float *dx, const float *dy, const float *x, size_t n);
void tr_silu_fwd(float *y, const float *x, size_t n);
void tr_silu_bwd(float *dx, const float *dy, const float *x, size_t n);

/* Gated residual over G groups of R rows: y += gate[g] * x. Backward: dgate[g] += sum dy*x,
 * dx = dy * gate (overwrites). */
void tr_gated_fwd(float *y, const float *x, const float *gate, int ldg, int G, int R, int D);
void tr_gated_bwd(float *dx, float *dgate, const float *dy, const float *x, const float *gate, int ldg, int G, int R,
                  int D);

/* Joint softmax attention, image tokens first: for batch b the T = N + S tokens are image rows
 * b*N.. of the *_i arrays ([B*N, H*dh]) then text rows b*S.. of the *_t arrays ([B*S, H*dh]);
 * head h is the dh columns at h*dh. Scale 1/sqrt(dh), no mask. Keeps P [B, H, T, T].
 * S may be 0 (image-only self-attention; the *_t pointers are then unused). */
void tr_attn_fwd(float *Oi, float *Ot, float *P, const float *Qi, const float *Ki, const float *Vi,
                 const float *Qt, const float *Kt, const float *Vt, int B, int H, int N, int S, int dh);
/* dQ, dK, dV (both streams) = ... (overwrite), given dO and the forward's O, P, Q, K, V. */
void tr_attn_bwd(float *dQi, float *dKi, float *dVi, float *dQt, float *dKt, float *dVt, const float *dOi,
                 const float *dOt, const float *Oi, const float *Ot, const float *P, const float *Qi, const float *Ki,
                 const float *Vi, const float *Qt, const float *Kt, const float *Vt, int B, int H, int N, int S, int dh);

/* Patch vectors [B*N, C*p*p] in (c, py, px) order from x [B, C, Hi, Wi] (the conv's layout);
 * tokens row-major over the (Hi/p) x (Wi/p) grid. */
void tr_patchify(float *pv, const float *x, int B, int C, int Hi, int Wi, int p);
/* out [B, C, Hi, Wi] from y [B*N, p*p*C] in (py, px, c) order (diffusers' unpatchify), and its
 * adjoint dy = ... (overwrites) from dout. */
void tr_unpatchify(float *out, const float *y, int B, int C, int Hi, int Wi, int p);
void tr_unpatchify_bwd(float *dy, const float *dout, int B, int C, int Hi, int Wi, int p);

/* Text encoder (encoder.h): ehs[b,s] = tok[ids[b,s]] + pos[s]; pooled[b] = mean of tok[id]
 * over the non-pad ids of row b (0 if none). Backward accumulates into dtok, dpos. */
void tr_embed_fwd(float *ehs, float *pooled, const float *tok, const float *pos, const int32_t *ids, int B, int S,
                  int J);
void tr_embed_bwd(float *dtok, float *dpos, const float *dehs, const float *dpooled, const int32_t *ids, int B, int S,
                  int J);

#endif
