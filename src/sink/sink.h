/* sink: the attention-sink probe and interventions, attached to a model's joint attention
 * through sd3_hooks.
 *
 *   sink_ctx *s = sink_ctx_new();
 *   int blocks[] = {1, 2};
 *   sink_ctx_set_probe(s, blocks, 2, TOK_IMAGE, 5, 1);   // statistics at blocks 1 and 2
 *   sink_ctx_set_condition(s, &cond);                    // optional intervention
 *   sd3_hooks hk = sink_ctx_hooks(s);
 *   sd3_forward(model, ..., &hk);
 *   for (i < sink_ctx_record_count(s)) use sink_ctx_record(s, i);
 *
 * Everything is computed streaming by attn_forward: the extra memory at a block is a few
 * [B, H, T] arrays (mass per key, max and sum per query row), never a T x T matrix.
 *
 * Selection (interventions) is dynamic: recomputed at each intervened block, each forward pass
 * and each batch element from the un-intervened attention of that same pass, ranked by the mass
 * over the condition's `queries` rows restricted to its candidate `keys`.
 */
#ifndef SS_SINK_H
#define SS_SINK_H

#include <stdint.h>

#include "models/sd3.h"
#include "sink/condition.h"

/* What one probed and/or intervened block recorded in one forward pass. */
typedef struct {
    int block, step;
    double tfrac;          /* normalized denoising time t/T, or -1 outside a sampler */
    int B, H, T, n_img;
    /* probe (probed == 1) */
    int probed, topk;
    sink_tokens queries;   /* rows the mass is averaged over */
    int *top_idx;          /* [B, H, topk] keys by decreasing mass */
    float *top_mass;       /* [B, H, topk] */
    float *head_entropy;   /* [B, H] mean over the query rows of -sum p log p */
    float *head_top5;      /* [B, H] mean over the query rows of the 5 largest p */
    float *max_mass;       /* [B] MaxMass: mean over heads of the largest key mass */
    float *entropy, *top5; /* [B] means over heads */
    float *idx0_frac;      /* [B] fraction of heads whose top-1 key is index 0 */
    float *text_frac;      /* [B] fraction of heads whose top-1 key is a text token */
    float *act_max, *act_p95; /* [B] block output: max and 95th percentile of per-token L2 norms */
    float *mass;           /* [B, H, T] image-query mass, kept when asked (keep_mass) */
    /* intervention (intervened == 1) */
    int intervened, k;
    int *sel;              /* [B, H, k] suppressed keys */
    double *before, *after; /* [B, H] their mass over the intervened rows, before and after */
    double min_margin;     /* smallest gap between the k-th and (k+1)-th ranked mass (topk), else -1 */
} sink_record;

typedef struct sink_ctx sink_ctx;

sink_ctx *sink_ctx_new(void);
void sink_ctx_free(sink_ctx *s);
/* Probe these blocks: mass averaged over `queries` rows, top-k keys recorded; keep_mass keeps
 * the full [B,H,T] image-query mass vector in each record. */
int sink_ctx_set_probe(sink_ctx *s, const int *blocks, int n, sink_tokens queries, int topk, int keep_mass);
/* The intervention to apply (copied), or NULL for none. */
void sink_ctx_set_condition(sink_ctx *s, const sink_condition *c);
/* Where the sampler is: step index and t/T (0 = noisiest). tfrac < 0: not sampling. */
void sink_ctx_set_step(sink_ctx *s, int step, double tfrac);
sd3_hooks sink_ctx_hooks(sink_ctx *s);

int sink_ctx_record_count(const sink_ctx *s);
const sink_record *sink_ctx_record(const sink_ctx *s, int i);
void sink_ctx_clear_records(sink_ctx *s);

/* A jansson object (json_t *) describing one record (without the full mass vector). */
void *sink_record_to_json(const sink_record *r);

#endif
