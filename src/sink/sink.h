/* sink: the attention-sink probe and interventions, attached to a model's attention sites
 * (models/site.h) through sd3_hooks.
 *
 *   sink_ctx *s = sink_ctx_new();
 *   int sites[] = {1, ss_site_code(SS_SITE_ATTN2, 0)};
 *   sink_ctx_set_probe(s, sites, 2, TOK_IMAGE, 5, 1);    // statistics at joint.1 and attn2.0
 *   sink_ctx_set_condition(s, &cond);                    // optional intervention
 *   sd3_hooks hk = sink_ctx_hooks(s);
 *   sd3_forward(model, ..., &hk);
 *   for (i < sink_ctx_record_count(s)) use sink_ctx_record(s, i);
 *
 * Everything is computed streaming by attn_forward: the extra memory at a site is a few
 * [B, H, T] arrays (mass per key and query span, max and sum per query row), never a T x T
 * matrix. Which tokens are image or text, and which keys are masked, comes from the site: a
 * masked key gets no mass and is never a sink or a selected key.
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

/* What one probed and/or intervened site recorded in one forward pass. */
typedef struct {
    int block, step;       /* block: the site's flat index (= the block for SD3's joint sites) */
    int site;              /* the site's code (ss_site_code): kind and block within the kind */
    double tfrac;          /* normalized denoising time t/T, or -1 outside a sampler */
    int B, H, T, n_img;    /* T: keys (Tk); n_img: image keys */
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
    float *act_max, *act_p95; /* [B] block output: max and 95th percentile of per-token L2 norms,
                                 over its image rows */
    float *act_text_max, *act_text_p95; /* [B] the same over its text rows, when the block's output
                                 carries them (FLUX single.j: the whole stream); else NULL */
    int Tq;                /* the site's query tokens */
    int img_rows[2], text_rows[2]; /* its image and text query rows [lo, hi) (text: empty if none) */
    float *mass;           /* [B, H, T] image-query mass, kept when asked (keep_mass) */
    struct spiral_rec *spiral; /* the "why sinks form" fields (sink/spiral.h), when asked (sink_ctx_set_spiral) */
    /* intervention (intervened == 1) */
    int intervened, k;
    int *sel;              /* [B, H, k] suppressed keys */
    double *before, *after; /* [B, H] their mass over the intervened rows, before and after */
    double min_margin;     /* smallest gap between the k-th and (k+1)-th ranked mass (topk), else -1 */
} sink_record;

typedef struct sink_ctx sink_ctx;

sink_ctx *sink_ctx_new(void);
void sink_ctx_free(sink_ctx *s);
/* Probe these sites, given as site codes (ss_site_code; a joint block's code is its index, so
 * SD3 block lists work as they are): mass averaged over `queries` rows, top-k keys recorded;
 * keep_mass keeps the full [B,H,Tk] image-query mass vector in each record (and the spiral
 * fields' [B,Tk] vectors; without it only their summaries, spiral_rec_shrink). A site
 * without such query rows (attn2 and text queries) fails when it runs, naming the site. */
int sink_ctx_set_probe(sink_ctx *s, const int *sites, int n, sink_tokens queries, int topk, int keep_mass);
/* Also measure these spiral fields (SPIRAL_* of sink/spiral.h; 0: none) at every probed site,
 * over the probe's query rows. */
void sink_ctx_set_spiral(sink_ctx *s, unsigned fields);
/* The rope_qk hook (ss_model_hooks.rope_qk's signature; ctx is the sink_ctx): before RoPE
 * (post = 0) at a probed site it keeps the pre-RoPE mean <q, k> for that site's spiral fields.
 * Without it, RoPE sites report only the post-RoPE <q, k>. */
int sink_ctx_rope_qk(void *ctx, const ss_site *site, int post, const attn_args *a);
/* The pos_embed hook (ss_model_hooks.pos_embed's signature; ctx is the sink_ctx): applies the
 * condition's AbsPE edit (sink/abspe.h) when the condition has one and is active at this step. */
int sink_ctx_pos_embed(void *ctx, float *tab, int h, int w, int D);
/* The token types (ss_tok, never SS_TOK_IMAGE) of the S text tokens of each of B batch elements,
 * [B, S] in the text encoder's order (copied; NULL clears them). The pipelines set them from their
 * tokenizers (sample/sd3pipe.h, fluxpipe.h). At every probed or intervened site with text keys the
 * probe then sees the site with key_type [B, Tk] (its image spans SS_TOK_IMAGE, its one text span
 * these types), so the spiral budget and top-key types say word / comma / eos / pad / bos. A site
 * whose text keys are not one span of S keys, or a batch other than B, fails naming the site.
 * Only what the probe reports changes: the attention and the outputs do not. */
int sink_ctx_set_text_types(sink_ctx *s, const uint8_t *types, int B, int S);
/* The intervention to apply (copied), or NULL for none. */
void sink_ctx_set_condition(sink_ctx *s, const sink_condition *c);
/* Where the sampler is: step index and t/T (0 = noisiest). tfrac < 0: not sampling. */
void sink_ctx_set_step(sink_ctx *s, int step, double tfrac);
/* The hooks; pos_embed (sink_ctx_pos_embed) is set when the condition set at the time of this
 * call has pe_* fields, so set the condition first. */
sd3_hooks sink_ctx_hooks(sink_ctx *s);

int sink_ctx_record_count(const sink_ctx *s);
const sink_record *sink_ctx_record(const sink_ctx *s, int i);
void sink_ctx_clear_records(sink_ctx *s);

/* Records as JSON: sink/record.h. */

#endif
