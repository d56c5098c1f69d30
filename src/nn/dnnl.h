/* dnnl: the bf16 compute backend, matrix products through oneDNN's matmul primitive.
 *
 * Linear weights are packed once at load into the blocked layout oneDNN's brgemm matmul asks for
 * (ss_dnnl_pack; the packed copy replaces the plain one, so a model takes about half its fp32
 * size). Measured on an Intel Xeon with AMX (one thread, 256-row products, best of 7): 1536 x 1536
 * plain 720-758 GFLOP/s, packed 825-870; 6144 x 1536 plain 587-623, packed 742-787; 1536 x 6144
 * plain 526-554, packed 560-599 (on Zen 4 the two were within +-10%). The Linears' products
 * (ss_dnnl_linear) are cut into row bands only, each over all output columns, so no tile needs a
 * strided output (which the brgemm matmul refuses) and no copy follows.
 *
 * Precision is a model-neutral setting: SS_PREC_F32 (the default, every product through BLAS
 * sgemm, bit-identical to builds without this file) or SS_PREC_BF16 (weights stored as bf16,
 * activations rounded to bf16 at each product, fp32 accumulation and fp32 everywhere else).
 *
 * ss_dnnl_matmul computes C[M,N] (fp32) = A[M,K] (bf16) . op(B) (bf16) + bias (fp32) with a
 * oneDNN primitive created once per shape and kept in a process-wide cache (mutex-protected,
 * looked up by every dimension, stride and flag, so one primitive always computes one shape the
 * same way). Primitives run with a user scratchpad owned by the calling thread, so any thread
 * may run any primitive at any time, inside or outside an OpenMP region.
 *
 * Determinism. oneDNN 2.6 sizes a primitive's blocking by the thread count it is created under,
 * and the blocking changes the fp32 summation order: measured on this project's AVX512-BF16
 * machine, a 64x64x1100 product differs between 1 and 3 threads (and on AMX with 16+ threads it
 * may split K across threads). So every primitive is created for one thread, and a product is
 * cut into fixed tiles (SS_DNNL_TILE_M x ss_dnnl_tile_n(K) outputs) that OpenMP threads share out
 * (dynamic schedule); each tile's shape, hence each output's order, is the same whatever the
 * thread count. SS_DNNL_SERIAL runs one product as one tile on the calling thread (attention).
 * A tile's output is dense (oneDNN 2.6's brgemm matmul refuses a strided C and would fall to
 * gemm:jit), copied into C when ldc != N.
 * tests/test_bf16.c checks 1 vs 3 threads bit for bit.
 *
 * CPUs without a brgemm bf16 matmul (AVX2 only, or AVX512 without BF16, where oneDNN 2.6 offers
 * nothing or its jit gemm, slower than sgemm and free to split K) take a portable path: blocks
 * of the same bf16 operands widened to fp32 and multiplied by sgemm (ss_dnnl_use_fallback forces
 * it, for tests). ss_dnnl_impl names what runs.
 */
#ifndef SS_DNNL_H
#define SS_DNNL_H

#include <stddef.h>
#include <stdint.h>

enum { SS_PREC_F32 = 0, SS_PREC_BF16 = 1 };

/* A product is cut into tiles of at most SS_DNNL_TILE_M rows x ss_dnnl_tile_n(K) columns (see
 * Determinism): as many columns as keep the tile's slice of B within SS_DNNL_TILE_B_BYTES (a core's
 * L2; one-thread brgemm at 256 x 256 x 6144 ran at half the rate of 256 x 128 x 6144 on Zen 4),
 * a multiple of 64 in [64, SS_DNNL_TILE_N]. A function of K alone, never of the thread count. */
#define SS_DNNL_TILE_M 256
#define SS_DNNL_TILE_N 512
#define SS_DNNL_TILE_B_BYTES (1L << 20)
int ss_dnnl_tile_n(int K);

/* "f32" (also "fp32") or "bf16" into *prec; SS_EARG naming the value otherwise. */
int ss_precision_parse(const char *s, int *prec);
const char *ss_precision_name(int prec);

/* bf16 <-> fp32, round to nearest even (NaN stays NaN). */
static inline uint16_t ss_bf16_from_f32(float x) {
    union {
        float f;
        uint32_t u;
    } v = {.f = x};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}
static inline float ss_bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}
/* y[i] = bf16(x[i]) over rows: y [M, ldy], x [M, ldx], N values per row (threaded when large). */
void ss_bf16_from_f32_rows(uint16_t *y, int ldy, const float *x, int ldx, int M, int N);

/* The process's one oneDNN CPU engine (a dnnl_engine_t), made on first use and kept; NULL when
 * oneDNN cannot make one. Matmul (here) and convolution (dnnl_conv.h) share it. */
void *ss_dnnl_engine(void);

/* Flags of ss_dnnl_matmul. */
#define SS_DNNL_TRANS_B 1 /* B is [N, K] row-major (a Linear's weight [out, in]); else [K, N] */
#define SS_DNNL_SERIAL 2  /* run on the calling thread only (the caller parallelizes) */

/* C[M, N] (row stride ldc) = A[M, K] (stride lda) . op(B) (stride ldb) + bias[N] (NULL: none).
 * SS_OK, or a negative code with ss_err set (oneDNN refused the shape, or out of memory). */
int ss_dnnl_matmul(float *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb, const float *bias,
                   int M, int N, int K, int flags);

/* The same with A given in fp32 (row stride lda): rounded to bf16 first into a buffer of the
 * calling thread. */
int ss_dnnl_matmul_f32a(float *c, int ldc, const float *a, int lda, const uint16_t *b, int ldb, const float *bias,
                        int M, int N, int K, int flags);

/* ---- Linears on packed weights ----
 * A bf16 Linear weight W [N, K] is packed once at load into oneDNN's blocked layout for its
 * brgemm matmul (ss_dnnl_pack), so that no product reorders it again; the layout depends on N
 * and K (not on the rows of a product) and replaces the plain copy. ss_dnnl_packed_elems gives
 * the bf16 elements it takes (at least N*K: blocks are padded), or 0 where this CPU has no brgemm
 * bf16 matmul (or the fallback is forced): the weight then stays plain. */
size_t ss_dnnl_packed_elems(int N, int K);
int ss_dnnl_pack(uint16_t *dst, const uint16_t *w, int N, int K);
/* The plain [N, K] values of a packed weight (tests; the fallback path). */
int ss_dnnl_unpack(uint16_t *dst, const uint16_t *packed, int N, int K);

#define SS_DNNL_GELU_BF16 4 /* ss_dnnl_linear: y is bf16, bf16(gelu_tanh(x W^T + b)) */

/* y[M, N] (row stride ldy, in elements) = x[M, K] . W^T + bias[N] (NULL: none), W packed
 * (packed = 1, ss_dnnl_pack) or plain [N, K] (packed = 0). x is bf16 (x16, row stride ldx) or,
 * when x16 is NULL, fp32 (x32) rounded to bf16 band by band. y is fp32, or bf16 after GELU with
 * SS_DNNL_GELU_BF16 (oneDNN's gelu_tanh post-op on the fp32 sums). The rows are cut into
 * ss_dnnl_linear_bands(M) bands of near-equal height (at most SS_DNNL_TILE_M; a function of M
 * alone), each a one-thread product over all N columns (a single band of N >= 1536 columns: tiles
 * of 768 columns, ss_dnnl_linear_col_tiles): the bits do not depend on the threads. */
int ss_dnnl_linear(void *y, int ldy, const uint16_t *x16, const float *x32, int ldx, const uint16_t *w, int packed,
                   const float *bias, int M, int N, int K, int flags);
/* The oneDNN implementation a Linear of M rows runs (its first band; with K chunks, the first
 * chunk's, or the later chunks' when theirs is not a brgemm one), e.g. "brg:avx512_core_amx_bf16";
 * "fallback:..." where the portable path runs. */
const char *ss_dnnl_linear_impl(int M, int N, int K, int packed, int flags);
/* How many column tiles each band of an M x N x K Linear is cut into: 1 but where M fits one band
 * and N >= 1536 (tiles of 768 columns, so both cores share the product; a function of M, N and K). */
int ss_dnnl_linear_col_tiles(int M, int N, int K, int packed);
/* How many bands ss_dnnl_linear cuts M rows into, and (*rows) the height of all but the last. */
int ss_dnnl_linear_bands(int M, int *rows);

/* The oneDNN implementation ss_dnnl_matmul uses for this shape and flags (e.g.
 * "brg:avx512_core_bf16"), creating the primitive if needed; a static string, "unavailable" when
 * it cannot be created. */
const char *ss_dnnl_impl(int M, int N, int K, int flags);
/* Tests and benchmarks: 1 makes every later product take the portable path (bf16 blocks widened
 * to fp32, sgemm), which is what CPUs without a oneDNN brgemm bf16 matmul (AVX2 only) run. */
void ss_dnnl_use_fallback(int on);
/* Primitives created so far (the cache's size). */
int ss_dnnl_primitives(void);

#endif
