/* qkmean: the mean <q, k> of "From a Spiral to a Sink" (pre- and post-RoPE attention logits).
 *
 * out[b, h, j] = (1 / (r1 - r0)) * sum_{r0 <= i < r1} <q_i, k_j> over the head's dh channels, for
 * q and k laid out as attn_args says ([B, T, ld], head h at channel h*dh; keys Tk or T), not
 * divided by sqrt(dh). Double accumulation; each (b, h) is summed in a fixed order, so the result
 * does not depend on the thread count. */
#ifndef SS_QKMEAN_H
#define SS_QKMEAN_H

#include "nn/attn.h"

/* out [B, H, Tk]. Returns 0, SS_EARG for an empty or out-of-range row range, SS_ENOMEM. */
int ss_qk_mean(float *out, const attn_args *a, int r0, int r1);

#endif
