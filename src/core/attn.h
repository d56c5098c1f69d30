/* attn: fused multi-head attention that never materializes the T x T matrix, with optional
 * streaming statistics (the attention-sink probe) and a cheap per-key re-weighting pass
 * (interventions).
 *
 * Layout: q, k, v, out are [B, T, ld] row-major; head h of token t is the dh floats at
 * t*ld + h*dh (diffusers' head-major channel order). Queries and keys are the same T tokens
 * (self / joint attention); tokens [0, n_img) are image tokens, [n_img, T) text tokens.
 *
 * Algorithm (flash-style): for each (b, h), query rows are processed in tiles of ATTN_BQ rows;
 * each tile computes S = Q K^T / sqrt(dh) over key chunks of up to ATTN_KC keys with BLAS,
 * exponentiates with an online (running-max) softmax, and accumulates P V with BLAS. Working
 * memory is ATTN_BQ x min(T, ATTN_KC) floats per thread. When every key fits one chunk (T <=
 * 8192, e.g. SD3 at 1024^2 has 4429) the probe statistics come from the same exponentials in
 * the same pass; otherwise a second pass recomputes S once the final row max and sum are known.
 *
 * Determinism: the output rows do not depend on the thread count, and neither do the probe
 * sums: each (b, h)'s rows are split into ATTN_NG fixed groups with their own accumulators,
 * reduced in a fixed order. The probe never changes the output: the exp/sum/PV code is shared.
 */
#ifndef SS_ATTN_H
#define SS_ATTN_H

#include <stddef.h>

#define ATTN_BQ 64
#define ATTN_KC 8192
#define ATTN_NG 16
#define ATTN_MAX_K 64 /* keys re-weighted per (b, h) */

typedef struct {
    int B, H, dh, T, ld, n_img;
    const float *q, *k, *v;
    float *out;
} attn_args;

/* Optional outputs of attn_forward; each pointer may be NULL. Arrays are [B, H, T] floats. */
typedef struct {
    float *mass_img;    /* key j: mean over image query rows of softmax_ij */
    float *mass_txt;    /* key j: mean over text query rows */
    float *row_m;       /* per query row: max scaled logit */
    float *row_l;       /* per query row: sum of exp(s - max) */
    float *row_entropy; /* per query row: -sum p log p */
    float *row_top5;    /* per query row: sum of the 5 largest p */
} attn_stats;

/* Keys per chunk (default ATTN_KC); tests lower it to exercise the online-softmax path. */
void attn_set_key_chunk(int kc);

/* Plain or probed attention. Returns 0, or a negative code if scratch memory ran out. */
int attn_forward(const attn_args *a, const attn_stats *st);

/* Materialized reference (tests and the benchmark's "naive" column): the same outputs computed
 * the obvious way, one T x T matrix per head, in double accumulation. */
int attn_reference(const attn_args *a, const attn_stats *st);

/* Re-weighting of chosen keys for query rows [r0, r1) of every (b, h), applied to the output of
 * attn_forward using its row_m/row_l (no second full attention pass):
 *   score path: key j's softmax term is multiplied by eta (adding log eta to its logit);
 *   value path: key j's value vector is replaced by vrep (the attention weights are unchanged).
 * keys: [B, H, k] key indices, -1 = unused slot. vrep: [B, H, k, dh] (value path only).
 * before/after ([B, H], may be NULL): the chosen keys' mass averaged over rows [r0, r1), before
 * and after the re-weighting. Rows where the chosen keys hold over half of the softmax mass are
 * recomputed from scratch instead of corrected by subtraction, so removing a dominant sink keeps
 * fp32 accuracy (the correction would cancel). */
typedef struct {
    int k;
    const int *keys;
    int r0, r1;
    int value_path;
    float eta;
    const float *vrep;
} attn_reweight;
int attn_apply_reweight(const attn_args *a, const attn_stats *st, const attn_reweight *rw,
                        double *before, double *after);

#endif
