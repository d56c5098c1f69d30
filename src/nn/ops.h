/* ops: the dense layers of a DiT, fp32, output first and dimensions last (llama2.c style).
 * Matrix products go to BLAS (sgemm); elementwise loops use OpenMP. Rows are tokens. */
#ifndef SS_OPS_H
#define SS_OPS_H

#include <stddef.h>
#include <stdint.h>

/* A Linear(in, out) layer as diffusers stores it: W [out, in] row-major, b [out] or NULL.
 * A model loaded in bf16 (nn/dnnl.h) has wb, the same W in bf16, and w NULL. */
typedef struct {
    const float *w, *b;
    int in, out;
    const uint16_t *wb;
    int packed; /* wb is in oneDNN's blocked layout (nn/dnnl.h ss_dnnl_pack), else plain [out, in] */
} ss_linear;

/* y[M,out] = x[M,in] . W^T + b, with row strides ldy/ldx (in floats). With wb (bf16 weights), x is
 * rounded to bf16 and the product runs through oneDNN with fp32 accumulation (ss_dnnl_matmul);
 * should that fail (out of memory), the reason goes to stderr and y is set to NaN, which the
 * families' non-finite checks turn into an error. */
void op_linear_ld(float *y, int ldy, const float *x, int ldx, const ss_linear *l, int M);
static inline void op_linear(float *y, const float *x, const ss_linear *l, int M) {
    op_linear_ld(y, l->out, x, l->in, l, M);
}
/* The bf16 compute path (weights wb, as op_linear): y = x W^T + b from a bf16 input x [M, in]
 * (dense rows); op_linear_gelu_b16 writes bf16(gelu_tanh(x W^T + b)) [M, out], the input of the
 * next product (oneDNN's GELU post-op). */
void op_linear_b16(float *y, const uint16_t *x, const ss_linear *l, int M);
void op_linear_gelu_b16(uint16_t *y, const uint16_t *x, const ss_linear *l, int M);
/* The DiT feed-forward with its residual: x += gate * f2(gelu_tanh(f1(LN(x) (1 + scale) + shift)))
 * over M rows of width D (LN eps 1e-6, no affine), n [M, D] and h [M, f1->out] work buffers. With
 * bf16 weights the products take bf16 inputs (the GELU runs inside f1: op_linear_gelu_b16). */
void op_ff_residual(float *x, const float *shift, const float *scale, const float *gate, const ss_linear *f1,
                    const ss_linear *f2, float *n, float *h, int M, int D);
/* LayerNorm over the last dim, no affine, biased variance: y = (x - mean)/sqrt(var + eps). */
void op_layernorm(float *y, const float *x, int M, int D, float eps);
/* op_layernorm then y * w + b per channel (torch's LayerNorm with elementwise affine). */
void op_layernorm_affine(float *y, const float *x, const float *w, const float *b, int M, int D, float eps);
/* In place: OP_ACT_QUICK_GELU x*sigmoid(1.702x), OP_ACT_GELU (erf), OP_ACT_GELU_TANH (tanh
 * approximation, libm tanhf as torch computes it), OP_ACT_RELU. */
enum { OP_ACT_QUICK_GELU, OP_ACT_GELU, OP_ACT_GELU_TANH, OP_ACT_RELU };
void op_activation(float *x, size_t n, int kind);
/* The row statistics of op_layernorm and op_ln_modulate for one row x[D]: mean and
 * 1/sqrt(var + eps), summed in double (their backward ops recompute them with it). */
void op_row_moments(const float *x, int D, float eps, float *mean, float *rstd);
/* y = LN(x) * (1 + scale) + shift for M rows sharing one scale/shift vector [D]. */
void op_ln_modulate(float *y, const float *x, const float *shift, const float *scale, int M, int D,
                    float eps);
/* op_ln_modulate rounded to bf16 (the input of a bf16 product). */
void op_ln_modulate_b16(uint16_t *y, const float *x, const float *shift, const float *scale, int M, int D,
                        float eps);
/* x[M, H*dh] in place: RMSNorm over each head's dh values, times w[dh]. */
void op_rmsnorm_heads(float *x, int ld, const float *w, int M, int H, int dh, float eps);
void op_gelu_tanh(float *x, size_t n);
void op_silu(float *y, const float *x, size_t n);
/* y[M,D] += gate[D] * x[M,D] (gate broadcast over rows). */
void op_add_gated(float *y, const float *x, const float *gate, int M, int D);
/* Sinusoidal embedding, diffusers Timesteps(dim, flip_sin_to_cos=True, shift=0): cos then sin. */
void op_timestep_embedding(float *out, const float *t, int B, int dim);

/* Index of the first NaN or infinity in x[0, n), or -1. Vectorized (a sum of x*0 per chunk, NaN iff
 * the chunk holds a NaN or infinity, whatever the order), threaded over large arrays, exact and
 * deterministic. */
long long op_first_nonfinite(const float *x, size_t n);

#endif
