/* attn: fused multi-head attention that never materializes the T x T matrix, with optional
 * streaming statistics (the attention-sink probe) and a cheap per-key re-weighting pass
 * (interventions).
 *
 * Layout: q and out are [B, T, ld], k and v [B, Tk, ld] row-major; head h of token t is the dh
 * floats at t*ld + h*dh (diffusers' head-major channel order). T query rows attend to Tk keys
 * (Tk = 0 means Tk = T: self / joint attention, queries and keys the same tokens). Optional
 * key_valid [B, Tk]: keys with 0 get exactly zero weight and mass; a batch element whose keys
 * are all masked is an error (SS_EARG: its rows would be 0/0), never a silent NaN.
 *
 * Query spans: the rows are split into n_qspan consecutive spans, span g = rows
 * [qend[g-1], qend[g]) (qend[-1] = 0, qend[n_qspan-1] = T); attn_stats.mass[g] is the mass per
 * key averaged over span g's rows. n_qspan = 0 is the legacy two-span layout: rows [0, n_img)
 * into mass_img, rows [n_img, T) into mass_txt (SD3 joint attention, image tokens first).
 *
 * Algorithm (flash-style): for each (b, h), query rows are processed in tiles of ATTN_BQ rows
 * (ATTN_TQ with bf16 products); each tile computes S = Q K^T / sqrt(dh) over key chunks of up to
 * ATTN_KC keys (attn_args.key_chunk), ATTN_BQ rows at a time, exponentiates with an online
 * (running-max) softmax, and accumulates P V. fp32 products: AVX-512 kernels on the head's keys
 * and values laid out once per (b, h), in the summation order of BLAS's sgemm and checked
 * against it once per shape (sgemm where the bits would differ, or without AVX-512); bf16:
 * oneDNN, with the bf16 tile's own row passes (AVX-512 where the CPU has AVX512-BF16: the row
 * max, then one pass that exponentiates, sums and rounds P, and with the probe also sums the
 * entropy terms; one pass per 64 rows for the column mass and top-5 candidates). Working
 * memory per thread: ATTN_BQ x min(T, ATTN_KC) floats (and ATTN_TQ x that in bf16 for the
 * rounded P, plus the tile's rounded queries), and per (b, h) the packed keys and values,
 * 2 x Tk x dh floats (bf16: 2 x Tk x dh bf16, the values padded to 32 keys). When
 * every key fits one chunk (T <= 8192, e.g. SD3 at 1024^2 has 4429) the probe statistics come
 * from the same exponentials in the same pass; otherwise a second pass recomputes S once the
 * final row max and sum are known.
 *
 * Determinism: the output rows do not depend on the thread count, and neither do the probe
 * sums: each (b, h)'s rows are split into ATTN_NG fixed groups with their own accumulators,
 * reduced in a fixed order. The probe never changes the output: the exp/sum/PV code is shared.
 */
#ifndef SS_ATTN_H
#define SS_ATTN_H

#include <stddef.h>
#include <stdint.h>

#define ATTN_BQ 64  /* query rows per tile (fp32), and per block of the probe's column sums */
#define ATTN_TQ 256 /* query rows per tile with bf16 products (a multiple of ATTN_BQ) */
#define ATTN_KC 8192
#define ATTN_NG 16
#define ATTN_MAX_K 64 /* keys re-weighted per (b, h) */
#define ATTN_MAX_QSPAN 4

/* Reusable working memory of attn_forward: per-thread tiles (ATTN_BQ x min(Tk, key chunk) floats
 * and the row accumulators) and the probe's per-row-group mass sums. Owned by the caller (e.g. a
 * model workspace), grown when a call needs more, never shrunk; one call at a time uses it. */
typedef struct attn_scratch attn_scratch;

typedef struct {
    int B, H, dh, T, ld, n_img; /* T query rows; n_img: legacy span split (n_qspan == 0) */
    const float *q, *k, *v;
    float *out;
    int Tk;                     /* keys; 0: the same T tokens as the queries */
    const uint8_t *key_valid;   /* [B, Tk] 1 = attended, 0 = masked; NULL: every key */
    int n_qspan;                /* query spans for attn_stats.mass[]; 0: legacy (n_img) */
    int qend[ATTN_MAX_QSPAN];   /* end row of each span, increasing, last = T */
    int key_chunk;              /* keys per chunk; 0 (or below 1): ATTN_KC. Tests lower it to exercise
                                 * the online-softmax path; per call, so models and threads may differ */
    attn_scratch *scratch;      /* reused working memory; NULL: attn_forward allocates its own per call */
    int precision;              /* SS_PREC_F32 (0) or SS_PREC_BF16 (nn/dnnl.h): Q K^T and P V with
                                 * bf16 operands (Q pre-scaled by 1/sqrt(dh) before rounding) through
                                 * oneDNN, fp32 accumulation; softmax, probe statistics, re-weighting
                                 * and the materialized reference stay fp32 */
} attn_args;

/* Optional outputs of attn_forward; each pointer may be NULL. Mass arrays are [B, H, Tk] floats
 * (per key), row arrays [B, H, T] (per query row). */
typedef struct {
    float *mass_img;    /* legacy (n_qspan == 0): key j's mean over rows [0, n_img) of softmax_ij */
    float *mass_txt;    /* legacy: the same over rows [n_img, T) */
    float *row_m;       /* per query row: max scaled logit */
    float *row_l;       /* per query row: sum of exp(s - max) */
    float *row_entropy; /* per query row: -sum p log p */
    float *row_top5;    /* per query row: sum of the 5 largest p */
    float *mass[ATTN_MAX_QSPAN]; /* n_qspan > 0: key j's mean over query span g's rows */
} attn_stats;

/* The key-chunk size a call uses: a->key_chunk if positive, else ATTN_KC. */
int attn_key_chunk(const attn_args *a);

attn_scratch *attn_scratch_new(void); /* empty: sized by its first reserve or call; NULL if out of memory */
void attn_scratch_free(attn_scratch *s);
/* Grows s so that a call with a's shapes (T, Tk, dh, key chunk) on the current OpenMP thread count,
 * probing mass over probe_spans query spans (0: no mass sums), allocates nothing. Returns 1 when
 * it (re)allocated, 0 when s was large enough, or a negative code. */
int attn_scratch_reserve(attn_scratch *s, const attn_args *a, int probe_spans);
/* How many times s grew (reserve calls returning 1); s NULL: over every scratch of the process,
 * including the ones attn_forward makes for calls without a->scratch. */
long attn_scratch_allocs(const attn_scratch *s);

/* Plain or probed attention. Returns 0, or a negative code if scratch memory ran out. */
int attn_forward(const attn_args *a, const attn_stats *st);

/* For tests and benchmarks: on = 1 sends every fp32 product through cblas_sgemm (the path
 * before the AVX-512 kernels, which the kernels must equal bit for bit); returns how many
 * products the kernels have computed so far in this process. */
long attn_test_blas_only(int on);

/* Materialized reference (tests and the benchmark's "naive" column): the same outputs computed
 * the obvious way, one T x T matrix per head, in double accumulation. */
int attn_reference(const attn_args *a, const attn_stats *st);

/* Re-weighting of chosen keys for query rows [r0, r1) of every (b, h), applied to the output of
 * attn_forward using its row_m/row_l (no second full attention pass):
 *   score path: key j's softmax term is multiplied by eta (adding log eta to its logit);
 *   value path: key j's value vector is replaced by vrep (the attention weights are unchanged).
 * keys: [B, H, k] key indices, -1 = unused slot; masked keys must not be chosen (SS_EARG). vrep: [B, H, k, dh] (value path only).
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

/* Materialized multi-head attention over the L rows of one sequence (attn_ref.c): out[L, H*dh],
 * row stride ld for q, k, v and out; softmax(scale * q.k + bias) v per head. bias [H, L, L] or
 * NULL; causal: row i sees keys 0..i; keymask [L] (0 = masked, as transformers adds finfo.min:
 * weight 0, or a uniform row when every key of the row is masked) or NULL. Memory L x L per
 * thread, so for short sequences. SS_OK or SS_ENOMEM. */
int attn_materialized(float *out, const float *q, const float *k, const float *v, int L, int H, int dh, int ld, float scale,
                      const float *bias, int causal, const int64_t *keymask);
/* attn_materialized that also keeps the probabilities P [H, L, L] (row i of head h: the softmax
 * over keys; 0 past i when causal), as a backward pass needs them (nn/ops_bwd.h). Same bits. */
int attn_materialized_probs(float *out, float *P, const float *q, const float *k, const float *v, int L, int H, int dh,
                            int ld, float scale, const float *bias, int causal, const int64_t *keymask);

#endif
