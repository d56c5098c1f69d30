/* spiral: the per-site "why sinks form" measurements of "From a Spiral to a Sink" (Yang et al.
 * 2026), as opt-in fields of the sink probe (docs/spiral-measurements.md defines every quantity).
 *
 *   sink_ctx_set_spiral(sk, SPIRAL_ALL);          // in the probe (sink/sink.h)
 *   ... forward ...;  r = sink_ctx_record(sk, i); r->spiral->mu, r->spiral->fac, ...
 *
 * Everything comes from what an attention site gives its hook: q, k, v, the site's key spans
 * and types (or its per-batch key_type), the key mask, the kernel's mass per key averaged over
 * each query span (attn_stats.mass), RoPE's axis layout (site->rope_dims), the pre-RoPE q and k
 * (the family's rope_qk hook, via spiral_qk_pre) and the site's input hidden states
 * (site->hidden). Streaming: the extra memory at a site is a few [B, H, Tk] and [B, Tk] arrays
 * (never Tk x Tk), freed when the site's measurement ends except the record's [B, Tk] vectors.
 * Every sum runs in double in a fixed order: results do not depend on the thread count.
 *
 * The sink of batch element b is the unmasked key with the largest Key Importance mu_j (ties:
 * the lower index); "the mean image key" averages over the unmasked image keys. */
#ifndef SS_SPIRAL_H
#define SS_SPIRAL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/attn.h"
#include "models/site.h"

/* Field groups. Key Importance (mu, the sink, x uniform, x random image key, the top keys) is
 * always measured when any group is on: the others are relative to the sink. */
enum {
    SPIRAL_KEYIMP = 1u << 0,
    SPIRAL_BUDGET = 1u << 1, /* sum of mu by key token type */
    SPIRAL_ENERGY = 1u << 2, /* RoPE sites: key energy per rotation pair, axis bands, FAC */
    SPIRAL_QK = 1u << 3,     /* mean <q, k> before and after RoPE, sink vs mean image key */
    SPIRAL_NORMS = 1u << 4,  /* value and key norms, sink vs mean image key */
    SPIRAL_ACT = 1u << 5,    /* massive activations of the keys' input hidden states */
    SPIRAL_ALL = (1u << 6) - 1
};

#define SPIRAL_TOP_KEYS 32 /* keys listed by mu (the paper's Figure 10) */
#define SPIRAL_TOP_CH 8    /* channels listed for the massive activations */

/* "keyimp,budget,energy,qk,norms,act" (any subset, comma-separated) or "all" into *fields;
 * -1 (with ss_err naming the bad word) when a word is unknown. */
int spiral_fields_parse(const char *s, unsigned *fields);

/* One site's measurements in one forward pass; arrays are per batch element b. */
typedef struct spiral_rec {
    int B, H, Tk, dh;
    unsigned fields;      /* the groups measured: requested and available at the site */
    /* Key Importance */
    float *mu;            /* [B, Tk] mean over heads and the query rows of each key's attention mass */
    int *sink;            /* [B] top-1 key by mu */
    uint8_t *sink_type;   /* [B] ss_tok */
    float *x_uniform;     /* [B] mu_sink * (unmasked keys) */
    float *x_image;       /* [B] mu_sink / mean mu over unmasked image keys; NaN without image keys */
    int ntop;
    int *top_idx;         /* [B, ntop] keys by decreasing mu */
    float *top_mu;        /* [B, ntop] */
    uint8_t *top_type;    /* [B, ntop] ss_tok */
    /* budget (SPIRAL_BUDGET) */
    float *budget;        /* [B, SS_TOK_N] sum of mu over the unmasked keys of each type */
    int *budget_keys;     /* [B, SS_TOK_N] how many unmasked keys have each type */
    /* key energy (SPIRAL_ENERGY, RoPE sites only) */
    int n_pairs, n_axes, axes_dims[SS_SITE_MAX_AXES];
    float *e_sink, *e_img;         /* [B, n_pairs] mean over heads of k_2c^2 + k_2c+1^2: sink, mean image key */
    float *axis_sink, *axis_img;   /* [B, n_axes] share of the energy in each axis band */
    float *low_sink, *low_img;     /* [B] share of the energy in the low-frequency band */
    float *fac;                    /* [B] low_sink / low_img */
    /* mean <q, k> over the query rows, not divided by sqrt(dh) (SPIRAL_QK); pre only at RoPE sites
     * whose rope_qk hook ran (has_pre), post = the logits the attention saw */
    int has_pre;
    float *qk_pre_sink, *qk_pre_img, *qk_post_sink, *qk_post_img; /* [B], means over heads */
    /* norms (SPIRAL_NORMS): means over heads of the per-head L2 norms */
    float *vnorm_sink, *vnorm_img, *knorm_sink, *knorm_img; /* [B] */
    /* massive activations (SPIRAL_ACT, where the site supplies its hidden states) */
    int D, nch;
    float *act_inf;       /* [B, Tk] ||h_j||_inf of key j's input hidden state */
    float *act_median;    /* [B] median over unmasked keys */
    float *act_sink;      /* [B] the sink's ||h||_inf */
    float *act_sink_ratio;/* [B] act_sink / act_median */
    int *act_max_tok;     /* [B] the unmasked key with the largest ||h||_inf */
    float *act_max_ratio; /* [B] its ratio to the median */
    int *ch_idx;          /* [B, nch] channels by decreasing max over unmasked keys of |h_jc| */
    float *ch_val;        /* [B, nch] those maxima */
    size_t work_bytes;    /* the measurement's peak transient memory (bytes) */
} spiral_rec;

/* The mean <q, k> of the pre-RoPE q and k in `a` over the query rows of `want` (0 image, 1
 * text, 2 all) into a new [B, H, Tk] array (*out, malloc'ed), for spiral_measure's qk_pre. */
int spiral_qk_pre(float **out, const ss_site *site, const attn_args *a, int want);

/* Measure `fields` at a site from its attention arguments (q and k as the attention sees them)
 * and statistics (st->mass[g] over every query span), Key Importance over the query rows of
 * `want`. qk_pre: [B, H, Tk] from spiral_qk_pre on the same site and rows, or NULL. Groups the
 * site cannot give (ENERGY without rope_dims, ACT without hidden rows) are left out of
 * (*out)->fields. Returns 0 or a negative code (ss_err says why). */
int spiral_measure(spiral_rec **out, unsigned fields, const ss_site *site, const attn_args *a, const attn_stats *st,
                   int want, const float *qk_pre);
void spiral_rec_free(spiral_rec *r);

/* Frees the record's [B, Tk] vectors (mu, act_inf), keeping every summary: for records kept over
 * many steps and sites (2 B Tk floats each otherwise). Their tensors are then not listed. */
void spiral_rec_shrink(spiral_rec *r);

/* The key type (ss_tok) of a tokenizer's token type (text/txtok.h txtok_type): word, comma, bos,
 * eos and pad as they are; punctuation and special tokens are SS_TOK_OTHER. For site.key_type. */
uint8_t spiral_tok_of_txtok(int txtok_type);

/* Batch element b's fields as a jansson object (json_t *), or with b < 0 an array of every
 * batch element's; non-finite values are null (docs/spiral-measurements.md has the schema). */
void *spiral_rec_to_json(const spiral_rec *r, int b);

/* The record's tensors, named NAME.{site} (site = e.g. "double.3"): keyimp [B, Tk], budget
 * [B, SS_TOK_N] (ss_tok order), kenergy_sink and kenergy_image [B, n_pairs], act_inf [B, Tk];
 * each only when measured. fn's return value, when negative, stops the walk and is returned. */
int spiral_rec_tensors(const spiral_rec *r, const char *site,
                       int (*fn)(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data), void *ctx);

#endif
