/* sd3_bwd: the backward pass of SD3Transformer2DModel's forward (models/sd3.c), through the
 * activations sd3_forward_cache records (sd3.h: sd3_cache), block by block in reverse, with
 * nn/ops_bwd.h's ops (llm.c's way: one forward, its backward beside it).
 *
 *   sd3_cache *c;  sd3_cache_new(&c, m, B, Hl, Wl, S);
 *   sd3_bwd_ws *w; sd3_bwd_ws_new(&w, m, B, Hl, Wl, S);
 *   sd3_forward_cache(m, ws, c, out, x, ctx, pooled, t, B, Hl, Wl, S);
 *   ... dout = dL/dout ...
 *   sd3_backward(m, dm, w, c, dout, ctx, pooled, B, dctx, dpooled);   // dm: the gradient view
 *
 * The gradients go to a second sd3_model, dm, bound (sd3_bind_view) over writable gradient
 * storage laid out like m's weights: every weight slot of dm is the gradient slot of the same
 * slot of m. The position table is frozen (it gets no gradient). Parameter gradients of a linear
 * layer are one matrix product over the whole batch: the joint (image rows, then text rows, per
 * batch element) arrays of the cache are split into the image rows [B*N, D] and text rows
 * [B*S, D] of all batch elements first. Dual-attention (SD3.5 attn2) blocks are covered.
 *
 * Deterministic: the ops' reductions have a fixed order (nn/ops_bwd.h), so the gradients are
 * bit-reproducible for a thread count and do not depend on it.
 */
#ifndef SS_SD3_BWD_H
#define SS_SD3_BWD_H

#include <stddef.h>

#include "models/sd3.h"

/* The backward's gradient buffers for up to B batch elements of Hl x Wl latents and S text tokens
 * of model m (the shape checks of sd3_forward apply). */
typedef struct sd3_bwd_ws sd3_bwd_ws;
int sd3_bwd_ws_new(sd3_bwd_ws **out, const sd3_model *m, int B, int Hl, int Wl, int S);
void sd3_bwd_ws_free(sd3_bwd_ws *w);
size_t sd3_bwd_ws_bytes(const sd3_bwd_ws *w);

/* dm's weights += dL/dweights for dL/dout = dout [B, Cout, Hl, Wl], through the last
 * sd3_forward_cache of B batch elements into c, whose inputs were ctx [B, S, J] and pooled [B, P].
 * dctx [B, S, J] and dpooled [B, P] = dL/dctx, dL/dpooled (overwritten). The latents get no
 * gradient. SS_EARG when B or the cache's sizes do not fit w; SS_ENOMEM (attention scratch). */
int sd3_backward(const sd3_model *m, const sd3_model *dm, sd3_bwd_ws *w, const sd3_cache *c, const float *dout,
                 const float *ctx, const float *pooled, int B, float *dctx, float *dpooled);

/* The adjoint of sd3's unpatchify (out [B, C, Hi, Wi] from y [B*N, p*p*C] in (py, px, c) order), a
 * permutation: dy = ... (overwrites) gathers dout. */
void sd3_unpatchify_bwd(float *dy, const float *dout, int B, int C, int Hi, int Wi, int p);

#endif
