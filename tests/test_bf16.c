/* The bf16 compute path (nn/dnnl.h): the matmul against a double product of the same bf16
 * operands (oneDNN and the portable fallback), bf16 attention against the materialized fp32
 * reference, every SD3/FLUX/PixArt reference fixture run in bf16 against diffusers' fp32 `sample`
 * (relative L2 printed, at most 2e-2), thread-count independence and the no-op guarantees in
 * bf16, and the load storing the Linear weights as bf16 only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn/attn.h"
#include "nn/dnnl.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/binder.h"
#include "models/family.h"
#include "models/sd3.h"
#include "sink/sink.h"

static const char *const FIXTURES[] = {"sd3-tiny-a", "sd3-tiny-a-bf16", "sd35-tiny-b", "flux-tiny-a", "pixart-tiny-a",
                                       "pixart-tiny-b"};
#define NFIX (sizeof FIXTURES / sizeof FIXTURES[0])

static uint16_t *to_bf16(const float *x, size_t n) {
    uint16_t *y = malloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) y[i] = ss_bf16_from_f32(x[i]);
    return y;
}

static void test_conversion(void **state) {
    (void)state;
    assert_int_equal(ss_bf16_from_f32(1.0f), 0x3f80);
    assert_true(ss_bf16_to_f32(ss_bf16_from_f32(3.0f)) == 3.0f);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1); 1 + 3 * 2^-8: up to 1 + 2^-6 */
    assert_true(ss_bf16_to_f32(ss_bf16_from_f32(1.0f + 0x1p-8f)) == 1.0f);
    assert_true(ss_bf16_to_f32(ss_bf16_from_f32(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f);
    assert_true(isnan(ss_bf16_to_f32(ss_bf16_from_f32(NAN))));
    assert_true(isinf(ss_bf16_to_f32(ss_bf16_from_f32(INFINITY))));
    assert_true(isinf(ss_bf16_to_f32(ss_bf16_from_f32(3.4e38f)))); /* past bf16's largest finite value */
    int p = -1;
    assert_int_equal(ss_precision_parse("bf16", &p), 0);
    assert_int_equal(p, SS_PREC_BF16);
    assert_int_equal(ss_precision_parse("fp32", &p), 0);
    assert_int_equal(p, SS_PREC_F32);
    assert_true(ss_precision_parse("f16", &p) < 0);
    assert_non_null(strstr(ss_err(), "f16"));
}

/* C = A op(B) + bias with bf16 operands against a double product of the same rounded values:
 * only the fp32 accumulation differs. Odd sizes, strides, both layouts of B, with and without
 * bias; oneDNN and the fallback; 1 and 3 threads bit-identical. */
static void matmul_case(int M, int N, int K, int trans, int bias_on, int pad) {
    const int lda = K + pad, ldb = (trans ? K : N) + pad, ldc = N + pad;
    const size_t na = (size_t)M * lda, nb = (size_t)(trans ? N : K) * ldb, nc = (size_t)M * ldc;
    float *af = malloc(sizeof(float) * na), *bf = malloc(sizeof(float) * nb), *bias = malloc(sizeof(float) * N);
    tc_fill(af, na, 11 + M, 1.0f);
    tc_fill(bf, nb, 12 + N, 1.0f);
    tc_fill(bias, N, 13, 1.0f);
    uint16_t *a = to_bf16(af, na), *b = to_bf16(bf, nb);
    float *c[2][2];
    for (int fb = 0; fb < 2; fb++) {
        ss_dnnl_use_fallback(fb);
        for (int t = 0; t < 2; t++) {
            c[fb][t] = malloc(sizeof(float) * nc);
            for (size_t i = 0; i < nc; i++) c[fb][t][i] = -7.0f; /* padding must stay */
            omp_set_num_threads(t ? 3 : 1);
            assert_int_equal(ss_dnnl_matmul(c[fb][t], ldc, a, lda, b, ldb, bias_on ? bias : NULL, M, N, K,
                                            trans ? SS_DNNL_TRANS_B : 0),
                             0);
        }
        if (memcmp(c[fb][0], c[fb][1], sizeof(float) * nc))
            fail_msg("matmul M=%d N=%d K=%d trans=%d (%s): 1 and 3 threads differ", M, N, K, trans,
                     fb ? "fallback" : ss_dnnl_impl(M, N, K, trans ? SS_DNNL_TRANS_B : 0));
    }
    ss_dnnl_use_fallback(0);
    omp_set_num_threads(2);
    double worst[2] = {0, 0};
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            if (j >= N) {
                assert_true(c[0][0][(size_t)i * ldc + j] == -7.0f && c[1][0][(size_t)i * ldc + j] == -7.0f);
                continue;
            }
            double s = bias_on ? bias[j] : 0, mag = fabs(s);
            for (int k = 0; k < K; k++) {
                const double x = ss_bf16_to_f32(a[(size_t)i * lda + k]);
                const double y = ss_bf16_to_f32(trans ? b[(size_t)j * ldb + k] : b[(size_t)k * ldb + j]);
                s += x * y;
                mag += fabs(x * y);
            }
            for (int fb = 0; fb < 2; fb++) {
                const double e = fabs(c[fb][0][(size_t)i * ldc + j] - s) / (mag + 1e-30);
                if (e > worst[fb]) worst[fb] = e;
            }
        }
    /* fp32 accumulation of K terms: a few K ulps of the absolute sum at most */
    const double tol = 4.0 * K * 6e-8;
    if (worst[0] > tol || worst[1] > tol)
        fail_msg("matmul M=%d N=%d K=%d trans=%d: error %.2e / %.2e (oneDNN / fallback) > %.2e", M, N, K, trans,
                 worst[0], worst[1], tol);
    for (int fb = 0; fb < 2; fb++)
        for (int t = 0; t < 2; t++) free(c[fb][t]);
    free(af), free(bf), free(bias), free(a), free(b);
}

static void test_matmul_matches_double(void **state) {
    (void)state;
    const int shapes[][3] = {{1, 7, 5}, {3, 70, 33}, {70, 45, 129}, {257, 96, 64}, {64, 300, 64}, {64, 64, 1100},
                             {300, 200, 3000}}; /* the last: 2 x 2 tiles (ss_dnnl_tile_n(3000) = 128) */
    assert_int_equal(ss_dnnl_tile_n(3000), 128);
    assert_int_equal(ss_dnnl_tile_n(64), SS_DNNL_TILE_N);
    assert_int_equal(ss_dnnl_tile_n(1 << 20), 64);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int trans = 0; trans < 2; trans++)
            matmul_case(shapes[s][0], shapes[s][1], shapes[s][2], trans, (int)(s + trans) % 2, (int)s % 3);
    const char *impl = ss_dnnl_impl(257, 96, 64, SS_DNNL_TRANS_B);
    printf("  oneDNN implementation at 257x96x64: %s\n", impl);
    assert_true(strcmp(impl, "unavailable") != 0);
}

/* ss_dnnl_linear (the Linears of a bf16 model): packed and plain weights, bf16 and fp32 inputs,
 * fp32 output or GELU -> bf16, strided rows, band heights from 1 to several bands (333 = 2
 * bands of 167/166, 600 = 3 of 200), K chunked above 2048; against a double product of the same bf16 operands (GELU
 * in double, then one bf16 rounding step of slack); 1 and 3 threads bit-identical; the portable
 * path meets the same tolerance, also on a packed weight (unpacked on the fly). */
static void linear_case(int M, int N, int K, int packed, int gelu, int f32in, int pad) {
    const int ldx = K + pad, ldy = N + pad;
    const size_t nx = (size_t)M * ldx, nw = (size_t)N * K, ny = (size_t)M * ldy;
    float *xf = malloc(sizeof(float) * nx), *wf = malloc(sizeof(float) * nw), *bias = malloc(sizeof(float) * N);
    tc_fill(xf, nx, 21 + M, 1.0f);
    tc_fill(wf, nw, 22 + N, 1.0f);
    tc_fill(bias, N, 23, 1.0f);
    uint16_t *x = to_bf16(xf, nx), *w = to_bf16(wf, nw), *wp = w;
    for (size_t i = 0; i < nx; i++) xf[i] = ss_bf16_to_f32(x[i]); /* fp32 input: exact in bf16 */
    const size_t pe = ss_dnnl_packed_elems(N, K);
    if (packed) {
        if (!pe) { /* no brgemm bf16 matmul on this CPU: nothing to pack */
            free(xf), free(wf), free(bias), free(x), free(w);
            return;
        }
        assert_true(pe >= nw);
        wp = malloc(sizeof(uint16_t) * pe);
        assert_int_equal(ss_dnnl_pack(wp, w, N, K), 0);
        uint16_t *back = malloc(sizeof(uint16_t) * nw);
        assert_int_equal(ss_dnnl_unpack(back, wp, N, K), 0);
        assert_memory_equal(back, w, sizeof(uint16_t) * nw);
        free(back);
    }
    if (packed) { /* a weight oneDNN packed is multiplied by oneDNN's brgemm, every chunk of it */
        const char *impl = ss_dnnl_linear_impl(M, N, K, 1, gelu ? SS_DNNL_GELU_BF16 : 0);
        if (strncmp(impl, "brg:", 4)) fail_msg("linear M=%d N=%d K=%d packed: runs %s, not brgemm", M, N, K, impl);
    }
    const size_t es = gelu ? 2 : 4;
    unsigned char *y[2][2];
    for (int fb = 0; fb < 2; fb++) {
        ss_dnnl_use_fallback(fb);
        for (int t = 0; t < 2; t++) {
            y[fb][t] = malloc(es * ny);
            memset(y[fb][t], 0x5a, es * ny); /* padding must stay */
            omp_set_num_threads(t ? 3 : 1);
            assert_int_equal(ss_dnnl_linear(y[fb][t], ldy, f32in ? NULL : x, f32in ? xf : NULL, ldx, wp, packed, bias, M,
                                            N, K, gelu ? SS_DNNL_GELU_BF16 : 0),
                             0);
        }
        if (memcmp(y[fb][0], y[fb][1], es * ny))
            fail_msg("linear M=%d N=%d K=%d packed=%d gelu=%d (%s): 1 and 3 threads differ", M, N, K, packed, gelu,
                     fb ? "fallback" : "oneDNN");
    }
    ss_dnnl_use_fallback(0);
    omp_set_num_threads(2);
    double worst[2] = {0, 0};
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldy; j++) {
            if (j >= N) {
                for (int fb = 0; fb < 2; fb++)
                    for (size_t e = 0; e < es; e++) assert_int_equal(y[fb][0][((size_t)i * ldy + j) * es + e], 0x5a);
                continue;
            }
            double s = bias[j], mag = fabs(s);
            for (int k = 0; k < K; k++) {
                const double p = (double)ss_bf16_to_f32(x[(size_t)i * ldx + k]) * ss_bf16_to_f32(w[(size_t)j * K + k]);
                s += p;
                mag += fabs(p);
            }
            if (gelu) { /* the tanh form; |gelu'| <= 1.13, and the bf16 store: 2^-8 relative */
                s = 0.5 * s * (1.0 + tanh(0.7978845608028654 * (s + 0.044715 * s * s * s)));
                mag = 1.13 * mag + fabs(s) * 0x1p-8 / (4.0 * K * 6e-8);
            }
            for (int fb = 0; fb < 2; fb++) {
                const size_t o = (size_t)i * ldy + j;
                const double v = gelu ? ss_bf16_to_f32(((uint16_t *)y[fb][0])[o]) : ((float *)y[fb][0])[o];
                const double e = fabs(v - s) / (mag + 1e-30);
                if (e > worst[fb]) worst[fb] = e;
            }
        }
    const double tol = 4.0 * K * 6e-8;
    if (worst[0] > tol || worst[1] > tol)
        fail_msg("linear M=%d N=%d K=%d packed=%d gelu=%d: error %.2e / %.2e (oneDNN / fallback) > %.2e", M, N, K, packed,
                 gelu, worst[0], worst[1], tol);
    for (int fb = 0; fb < 2; fb++)
        for (int t = 0; t < 2; t++) free(y[fb][t]);
    if (wp != w) free(wp);
    free(xf), free(wf), free(bias), free(x), free(w);
}

static void test_linear_packed(void **state) {
    (void)state;
    int rows = 0;
    assert_int_equal(ss_dnnl_linear_bands(333, &rows), 2);
    assert_int_equal(rows, 167);
    assert_int_equal(ss_dnnl_linear_bands(1024, &rows), 4);
    assert_int_equal(rows, 256);
    assert_int_equal(ss_dnnl_linear_bands(1, &rows), 1);
    assert_int_equal(rows, 1);
    /* the last two: K chunked (3000: 1536 + 1464 columns; 4100: 3 x 1408 - 124), GELU on the sum of the chunks */
    const int shapes[][3] = {{1, 24, 40},     {2, 100, 37},   {77, 96, 64},   {333, 160, 96},
                             {257, 64, 300},  {600, 48, 1100}, {70, 96, 3000}, {3, 40, 4100},
                             {1, 1600, 64},   {5, 1536, 3000}, {200, 2000, 100}}; /* the last three: column tiles */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < 4; v++)
            linear_case(shapes[s][0], shapes[s][1], shapes[s][2], v != 3, v == 1 || v == 3, v == 2, (int)(s + v) % 3);
    printf("  packed weights: %s\n", ss_dnnl_packed_elems(96, 64) ? "yes (brgemm bf16 matmul)" : "no (plain)");
    /* one band of 1600 columns: 768 + 768 + 64 (packed where this CPU packs, and plain) */
    assert_int_equal(ss_dnnl_linear_col_tiles(1, 1600, 64, 0), 3);
    if (ss_dnnl_packed_elems(1600, 64)) assert_int_equal(ss_dnnl_linear_col_tiles(1, 1600, 64, 1), 3);
    assert_int_equal(ss_dnnl_linear_col_tiles(300, 1600, 64, 0), 1); /* two bands already */
}

/* bf16 attention against the materialized fp32 reference: outputs and probe statistics close;
 * the probe leaves the bf16 output bit-identical; 1 and 3 threads agree bit for bit; with the
 * online-softmax chunks and a key mask too. */
static void test_attention(void **state) {
    (void)state;
    const int B = 2, H = 3, dh = 64, T = 300;
    const size_t n = (size_t)B * T * H * dh;
    float *q = malloc(sizeof(float) * n), *k = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n);
    float *o_ref = malloc(sizeof(float) * n), *o[4];
    tc_fill(q, n, 1, 1.0f);
    tc_fill(k, n, 2, 1.0f);
    tc_fill(v, n, 3, 1.0f);
    for (int c = 0; c < H * dh; c++) k[5 * H * dh + c] += 1.5f * (c % 2 ? 1 : -1); /* a sink, key 5 */
    for (size_t i = 0; i < n; i++) q[i] += (i % 2 ? 0.3f : -0.3f);
    uint8_t *kv = malloc((size_t)B * T);
    for (int i = 0; i < B * T; i++) kv[i] = (i % 17) != 3;
    const size_t nm = (size_t)B * H * T;
    float *mi_ref = malloc(sizeof(float) * nm), *mi = malloc(sizeof(float) * nm), *ent_ref = malloc(sizeof(float) * nm),
          *ent = malloc(sizeof(float) * nm), *t5_ref = malloc(sizeof(float) * nm), *t5 = malloc(sizeof(float) * nm);
    /* chunks of 100 keys: the last chunk's P V keys padded to 120, not 128 (V has 320 rows) */
    static const int chunks[] = {0, 128, 100};
    for (int chunk = 0; chunk < 3; chunk++)
        for (int mask = 0; mask < 2; mask++) {
            attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = H * dh, .n_img = 200, .q = q, .k = k, .v = v,
                           .key_valid = mask ? kv : NULL, .key_chunk = chunks[chunk]};
            a.out = o_ref;
            attn_stats sr = {.mass_img = mi_ref, .row_entropy = ent_ref, .row_top5 = t5_ref};
            assert_int_equal(attn_reference(&a, &sr), 0);
            a.precision = SS_PREC_BF16;
            for (int r = 0; r < 4; r++) {
                o[r] = malloc(sizeof(float) * n);
                a.out = o[r];
                omp_set_num_threads(r == 2 ? 1 : 3);
                attn_stats st = {.mass_img = mi, .row_entropy = ent, .row_top5 = t5};
                assert_int_equal(attn_forward(&a, r == 1 || r == 2 ? &st : NULL), 0);
            }
            omp_set_num_threads(2);
            assert_memory_equal(o[0], o[1], sizeof(float) * n); /* probe: no change */
            assert_memory_equal(o[1], o[2], sizeof(float) * n); /* 1 vs 3 threads */
            assert_memory_equal(o[0], o[3], sizeof(float) * n); /* repeatable */
            const double eo = tc_rel_l2(o[0], o_ref, n), em = tc_rel_l2(mi, mi_ref, nm), ee = tc_rel_l2(ent, ent_ref, nm);
            const double e5 = tc_rel_l2(t5, t5_ref, nm);
            printf("  attention bf16 (chunk %s, mask %s): output rel L2 %.2e, mass %.2e, entropy %.2e, top-5 %.2e\n",
                   chunk == 0 ? "all" : chunk == 1 ? "128" : "100", mask ? "on" : "off", eo, em, ee, e5);
            assert_true(eo < 2e-2 && em < 2e-2 && ee < 2e-2 && e5 < 2e-2);
            assert_true(eo > 0); /* it did run in bf16 */
            if (mask)
                for (int b = 0; b < B; b++)
                    for (int h = 0; h < H; h++)
                        for (int j = 0; j < T; j++)
                            if (!kv[(size_t)b * T + j]) assert_true(mi[((size_t)b * H + h) * T + j] == 0.0f);
            for (int r = 0; r < 4; r++) free(o[r]);
        }
    free(q), free(k), free(v), free(o_ref), free(kv), free(mi_ref), free(mi), free(ent_ref), free(ent), free(t5_ref), free(t5);
}

/* The bf16 probe with every key in one chunk: the row statistics are the same bits whether or not
 * column mass is asked for (the top-5 candidates then come from the column pass, otherwise from
 * their own pass), and mass, entropy and top-5 are the same bits at 1, 2 and 3 threads; three
 * query spans whose ends fall inside 64-row blocks, with and without masked keys, and an output
 * that the probe leaves unchanged. */
static void test_attention_probe_paths(void **state) {
    (void)state;
    const int B = 2, H = 3, dh = 64, T = 300;
    const size_t n = (size_t)B * T * H * dh, nm = (size_t)B * H * T;
    float *q = malloc(sizeof(float) * n), *k = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n);
    float *o0 = malloc(sizeof(float) * n), *o1 = malloc(sizeof(float) * n);
    tc_fill(q, n, 11, 1.0f);
    tc_fill(k, n, 12, 1.0f);
    tc_fill(v, n, 13, 1.0f);
    for (int c = 0; c < H * dh; c++) k[7 * H * dh + c] += 1.5f * (c % 2 ? 1 : -1); /* a sink, key 7 */
    for (int j = 40; j < 48; j++) memcpy(k + (size_t)j * H * dh, k + (size_t)7 * H * dh, sizeof(float) * H * dh); /* ties */
    uint8_t *kv = malloc((size_t)B * T);
    for (int i = 0; i < B * T; i++) kv[i] = (i % 13) != 5;
    float *st_m[4][3], *st_e[4], *st_t[4];
    for (int mask = 0; mask < 2; mask++) {
        attn_args a = {.B = B, .H = H, .dh = dh, .T = T, .ld = H * dh, .q = q, .k = k, .v = v, .out = o0,
                       .key_valid = mask ? kv : NULL, .n_qspan = 3, .qend = {70, 201, T}, .precision = SS_PREC_BF16};
        assert_int_equal(attn_forward(&a, NULL), 0);
        a.out = o1;
        for (int r = 0; r < 4; r++) { /* r 0-2: mass at 1, 2, 3 threads; 3: no mass, 2 threads */
            for (int g = 0; g < 3; g++) st_m[r][g] = r < 3 ? malloc(sizeof(float) * nm) : NULL;
            st_e[r] = malloc(sizeof(float) * nm);
            st_t[r] = malloc(sizeof(float) * nm);
            attn_stats st = {.row_entropy = st_e[r], .row_top5 = st_t[r], .mass = {st_m[r][0], st_m[r][1], st_m[r][2]}};
            omp_set_num_threads(r < 3 ? r + 1 : 2);
            assert_int_equal(attn_forward(&a, &st), 0);
            assert_memory_equal(o0, o1, sizeof(float) * n);
        }
        omp_set_num_threads(2);
        for (int r = 1; r < 4; r++) {
            assert_memory_equal(st_e[0], st_e[r], sizeof(float) * nm);
            assert_memory_equal(st_t[0], st_t[r], sizeof(float) * nm);
            if (r < 3)
                for (int g = 0; g < 3; g++) assert_memory_equal(st_m[0][g], st_m[r][g], sizeof(float) * nm);
        }
        for (int r = 0; r < 4; r++) {
            for (int g = 0; g < 3; g++) free(st_m[r][g]);
            free(st_e[r]), free(st_t[r]);
        }
    }
    free(q), free(k), free(v), free(o0), free(o1), free(kv);
}

/* ---- whole models through the family interface ---- */

typedef struct {
    const ss_family *fam;
    void *m;
    ss_fwd_inputs io;
    float *want; /* diffusers' sample */
} model_fx;

static void mfx_load(model_fx *f, const char *name, int prec) {
    memset(f, 0, sizeof *f);
    const char *dir = tc_path("fixtures/%s", name);
    ss_bind_set_precision(prec);
    if (ss_family_detect(dir, &f->fam) < 0 || f->fam->load(&f->m, dir) < 0) fail_msg("%s", ss_err());
    ss_bind_set_precision(SS_PREC_F32);
    const char *in_path = tc_path("fixtures/%s/inputs.safetensors", name);
    st_file *in = NULL;
    if (st_open(&in, in_path) < 0 || f->fam->inputs(f->m, in, in_path, &f->io) < 0) fail_msg("%s", ss_err());
    st_close(in);
    size_t ne = 0;
    f->want = tc_load(tc_path("fixtures/%s/expected.safetensors", name), "sample", &ne, NULL, NULL);
    assert_non_null(f->want);
    assert_int_equal(ne, f->io.out_numel);
}

static void mfx_free(model_fx *f) {
    ss_fwd_inputs_free(&f->io);
    f->fam->free(f->m);
    free(f->want);
}

typedef struct {
    sd3_hooks h;
} sink_adapter;
static int adapt_block(void *ctx, ss_site_kind kind, int block, const float *x, int B, int rows, int D) {
    (void)kind;
    const sink_adapter *s = ctx;
    return s->h.block_output ? s->h.block_output(s->h.ctx, block, x, B, rows, D) : 0;
}
static int adapt_attn(void *ctx, const ss_site *site, const attn_args *a) {
    const sink_adapter *s = ctx;
    return s->h.attention(s->h.ctx, site, a);
}

static float *mfx_run(model_fx *f, sink_ctx *sk) {
    float *out = malloc(sizeof(float) * f->io.out_numel);
    sink_adapter ad;
    ss_model_hooks hk = {0};
    if (sk) {
        ad.h = sink_ctx_hooks(sk);
        hk = (ss_model_hooks){.ctx = &ad, .attention = adapt_attn,
                              .block_output = adapt_block};
    }
    if (f->fam->forward(f->m, out, &f->io, sk ? &hk : NULL) < 0) fail_msg("%s", ss_err());
    return out;
}

static void test_fixtures_in_bf16(void **state) {
    (void)state;
    for (size_t i = 0; i < NFIX; i++) {
        model_fx f32, bf;
        mfx_load(&f32, FIXTURES[i], SS_PREC_F32);
        mfx_load(&bf, FIXTURES[i], SS_PREC_BF16);
        float *o32 = mfx_run(&f32, NULL);
        omp_set_num_threads(3);
        float *ob = mfx_run(&bf, NULL);
        omp_set_num_threads(1);
        float *ob1 = mfx_run(&bf, NULL);
        omp_set_num_threads(2);
        const size_t n = bf.io.out_numel;
        const double e32 = tc_rel_l2(o32, f32.want, n), eb = tc_rel_l2(ob, bf.want, n);
        printf("  %-16s sample rel L2 vs diffusers fp32: f32 %.2e, bf16 %.2e (tolerance 2e-2)\n", FIXTURES[i], e32, eb);
        assert_true(eb <= 2e-2);
        assert_true(eb > e32); /* bf16 did run: coarser than fp32 */
        assert_memory_equal(ob, ob1, sizeof(float) * n); /* 3 vs 1 threads */
        free(o32), free(ob), free(ob1);
        mfx_free(&f32);
        mfx_free(&bf);
    }
}

/* The portable path (what AVX2-only CPUs run) meets the same tolerance and thread independence. */
static void test_fallback_forward(void **state) {
    (void)state;
    ss_dnnl_use_fallback(1);
    for (size_t i = 0; i < NFIX; i += 3) { /* sd3-tiny-a, flux-tiny-a (and pixart-tiny-b) */
        model_fx bf;
        mfx_load(&bf, FIXTURES[i], SS_PREC_BF16);
        omp_set_num_threads(3);
        float *o3 = mfx_run(&bf, NULL);
        omp_set_num_threads(1);
        float *o1 = mfx_run(&bf, NULL);
        omp_set_num_threads(2);
        const double e = tc_rel_l2(o3, bf.want, bf.io.out_numel);
        printf("  %-16s fallback path: sample rel L2 %.2e\n", FIXTURES[i], e);
        assert_true(e <= 2e-2);
        assert_memory_equal(o3, o1, sizeof(float) * bf.io.out_numel);
        free(o3), free(o1);
        mfx_free(&bf);
    }
    ss_dnnl_use_fallback(0);
}

static void test_noop_bit_identical_in_bf16(void **state) {
    (void)state;
    for (size_t i = 0; i < NFIX; i++) {
        model_fx f;
        mfx_load(&f, FIXTURES[i], SS_PREC_BF16);
        ss_site sites[128];
        const int ns = f.fam->sites(f.m, f.io.N, f.io.S, sites, 128);
        assert_true(ns > 0 && ns <= 128);
        int idx[128];
        for (int s = 0; s < ns; s++) idx[s] = ss_site_code_of(&sites[s]);
        float *plain = mfx_run(&f, NULL);
        sink_ctx *sk = sink_ctx_new();
        assert_int_equal(sink_ctx_set_probe(sk, idx, ns, TOK_IMAGE, 5, 1), 0);
        float *probed = mfx_run(&f, sk);
        assert_true(sink_ctx_record_count(sk) > 0);
        assert_memory_equal(plain, probed, sizeof(float) * f.io.out_numel);
        sink_ctx_free(sk);
        sink_condition c;
        json_t *o = json_pack("{s:s, s:[], s:s, s:i, s:s, s:f}", "name", "noop", "layers", "select", "topk", "k", 1,
                              "path", "score", "eta", 0.0);
        assert_int_equal(sink_condition_from_json(&c, o, "noop"), 0);
        json_decref(o);
        sk = sink_ctx_new();
        sink_ctx_set_condition(sk, &c);
        float *noop = mfx_run(&f, sk);
        assert_memory_equal(plain, noop, sizeof(float) * f.io.out_numel);
        printf("  %-16s bf16: probe at all %d sites and an empty condition leave sample bit-identical\n", FIXTURES[i],
               ns);
        sink_ctx_free(sk);
        free(plain), free(probed), free(noop);
        mfx_free(&f);
    }
}

/* A bf16 load keeps the Linear weights in bf16 only, the rest in fp32, and nothing mapped; an
 * f32 load is as before (weights in place, no bf16). */
static void test_load_stores_bf16(void **state) {
    (void)state;
    for (int prec = 0; prec < 2; prec++) {
        ss_bind_set_precision(prec);
        sd3_model *m = NULL;
        if (sd3_load(&m, tc_path("fixtures/sd3-tiny-a")) < 0) fail_msg("%s", ss_err());
        ss_bind_set_precision(SS_PREC_F32);
        assert_int_equal(m->precision, prec);
        const ss_linear *ls[] = {&m->blocks[0].q, &m->blocks[0].ff2, &m->ctx_embed, &m->proj_out, &m->t1};
        for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
            assert_true(prec ? ls[i]->wb != NULL && ls[i]->w == NULL : ls[i]->wb == NULL && ls[i]->w != NULL);
            assert_non_null(ls[i]->b); /* biases stay fp32 */
        }
        assert_non_null(m->pos_table);
        sd3_free(m);
    }
    /* the same folder's BF16 checkpoint: the bf16 weights are its values exactly */
    ss_bind_set_precision(SS_PREC_BF16);
    sd3_model *m = NULL;
    if (sd3_load(&m, tc_path("fixtures/sd3-tiny-a-bf16")) < 0) fail_msg("%s", ss_err());
    ss_bind_set_precision(SS_PREC_F32);
    const ss_linear *l = &m->blocks[0].q;
    size_t n = 0;
    float *w = tc_load(tc_path("fixtures/sd3-tiny-a-bf16/diffusion_pytorch_model.safetensors"),
                       "transformer_blocks.0.attn.to_q.weight", &n, NULL, NULL);
    assert_non_null(w);
    assert_int_equal(n, (size_t)l->in * l->out);
    /* packed into oneDNN's blocked layout where this CPU has a brgemm bf16 matmul: the plain
     * values come back exactly, and the arena holds the packed copy only */
    const uint16_t *wb = l->wb;
    uint16_t *plain = NULL;
    printf("  Linear weights %s\n", l->packed ? "packed (oneDNN's blocked layout)" : "plain (no brgemm bf16 matmul)");
    if (l->packed) {
        plain = malloc(sizeof(uint16_t) * n);
        assert_int_equal(ss_dnnl_unpack(plain, l->wb, l->out, l->in), 0);
        wb = plain;
    }
    for (size_t i = 0; i < n; i++) assert_true(ss_bf16_to_f32(wb[i]) == w[i]);
    free(plain);
    free(w);
    sd3_free(m);
}

static void test_cli_precision(void **state) {
    (void)state;
    char *dir = tc_tmpdir(), out[8192];
    const char *fx = tc_path("fixtures/sd3-tiny-a");
    int rc = tc_run(out, sizeof out, "%s forward --model %s --inputs %s/inputs.safetensors --out %s/o.safetensors --precision f8",
                    tc_bin(), fx, fx, dir);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "--precision"));
    rc = tc_run(out, sizeof out, "%s forward --model %s --inputs %s/inputs.safetensors --out %s/o.safetensors --precision bf16",
                tc_bin(), fx, fx, dir);
    if (rc) fail_msg("%s", out);
    size_t n = 0;
    float *got = tc_load(tc_join(dir, "o.safetensors"), "sample", &n, NULL, NULL);
    float *want = tc_load(tc_path("fixtures/sd3-tiny-a/expected.safetensors"), "sample", NULL, NULL, NULL);
    assert_non_null(got);
    const double e = tc_rel_l2(got, want, n);
    assert_true(e > 0 && e <= 2e-2);
    free(got), free(want);
    tc_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversion),
        cmocka_unit_test(test_matmul_matches_double),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_probe_paths),
        cmocka_unit_test(test_linear_packed),
        cmocka_unit_test(test_load_stores_bf16),
        cmocka_unit_test(test_fixtures_in_bf16),
        cmocka_unit_test(test_fallback_forward),
        cmocka_unit_test(test_noop_bit_identical_in_bf16),
        cmocka_unit_test(test_cli_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
