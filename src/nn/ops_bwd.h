/* ops_bwd: the backward ops of nn/ops.h's forward ops and of attn_materialized_probs
 * (nn/attn.h), fp32, rows are tokens (row-major), llm.c style: each *_bwd is the adjoint of the
 * forward op of the same name and takes that op's inputs (what it needs of them, recomputed where
 * cheap: LayerNorm and RMSNorm statistics come from op_row_moments / the same sums, so they are
 * the forward's bits).
 *
 * Conventions. A backward op ACCUMULATES parameter gradients (dW += ..., db += ...) and writes
 * input gradients as stated per function ("=" overwrites, "+=" accumulates), so a caller can sum
 * the contributions of several consumers. Ops whose forward shares one vector over M rows
 * (op_ln_modulate's shift/scale, op_add_gated's gate) take G groups of R rows, group g using the
 * vector at g*ld (one group per batch element).
 *
 * Determinism: every reduction has a fixed order that depends neither on the OpenMP thread count
 * nor on scheduling (column sums are split by columns, not rows; attention by head with
 * single-threaded BLAS inside), so a training run is bit-reproducible for a thread count.
 */
#ifndef SS_OPS_BWD_H
#define SS_OPS_BWD_H

#include <stddef.h>

#include "nn/ops.h"

/* op_linear: dW += dy^T x, db += column sums of dy (when l->b); dx = beta*dx + dy W when dx is
 * not NULL (beta 0 or 1). dw/db: the gradient slots of l->w / l->b. */
void op_linear_bwd(float *dx, float beta, float *dw, float *db, const float *dy, const float *x, const ss_linear *l,
                   int M);

/* op_ln_modulate over G groups of R rows (group g: shift + g*ldm, scale + g*ldm; scale NULL:
 * op_layernorm): dshift += row sums of dy, dscale += sums of dy*xhat (per group, either may be
 * NULL), dx += LayerNorm backward of dy*(1+scale). x is the forward's input; xhat [G*R, D] is
 * scratch the op fills with LN(x). */
void op_ln_modulate_bwd(float *dx, float *dshift, float *dscale, const float *dy, const float *x, const float *scale,
                        int ldm, int G, int R, int D, float eps, float *xhat);

/* op_rmsnorm_heads on x [M, H*dh] (contiguous, ld = H*dh; x the input before the norm):
 * dx = ... (overwrites; dx must not alias dy), dw[dh] += sums of dy * x * r. */
void op_rmsnorm_heads_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, int M, int H, int dh,
                          float eps);

/* Elementwise: dx = dy * f'(x), x the activation's input (dx may alias dy). */
void op_gelu_tanh_bwd(float *dx, const float *dy, const float *x, size_t n);
void op_silu_bwd(float *dx, const float *dy, const float *x, size_t n);

/* op_add_gated (y += gate * x) over G groups of R rows, group g's gate at g*ldg:
 * dgate += sums of dy*x (when dgate), dx = dy * gate (overwrites). */
void op_add_gated_bwd(float *dx, float *dgate, const float *dy, const float *x, const float *gate, int ldg, int G, int R,
                      int D);

/* attn_materialized_probs without bias, mask or causality, for one sequence of L rows with row
 * stride ld: dq, dk, dv = ... (overwrite) from dout and the forward's q, k, v, out and P
 * [H, L, L]. SS_OK or SS_ENOMEM. */
int attn_materialized_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, const float *out, const float *P, int L, int H, int dh, int ld, float scale);

#endif
