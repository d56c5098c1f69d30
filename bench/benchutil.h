/* Shared helpers of the benchmarks: wall clock, peak-RSS measurement, the sgemm reference. */
#ifndef SS_BENCHUTIL_H
#define SS_BENCHUTIL_H

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long bu_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) v = atol(line + n);
    if (f) fclose(f);
    return v;
}

/* Reset the peak resident size to the current one (Linux clear_refs "5"); returns current KiB. */
static inline long bu_mem_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
    return bu_status_kb("VmRSS:");
}
/* Peak resident KiB since the last reset. */
static inline long bu_mem_peak(void) { return bu_status_kb("VmHWM:"); }

/* Best-of-`reps` sgemm rate (GFLOP/s) for C[M,N] = A[M,K] B[N,K]^T, the layout of the layers. */
static inline double bu_sgemm_gflops(int M, int N, int K, int reps) {
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K), *C = malloc(sizeof(float) * M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((int)(i * 7 % 13) - 6) * 0.01f;
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)((int)(i * 5 % 11) - 5) * 0.01f;
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t = bu_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        t = bu_now() - t;
        if (r > 0 && t < best) best = t; /* the first run warms caches and threads */
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * M * N * K / best / 1e9;
}

/* The CPU's name (/proc/cpuinfo "model name") and the BLAS kernels, for every benchmark's first line. */
#include "nn/blas.h"
static inline const char *bu_cpu_name(void) {
    static char name[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(name, sizeof name, "%s", strchr(line, ':') + 2);
            name[strcspn(name, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    size_t n = strlen(name); /* and which BLAS kernels run (nn/blas.h) */
    snprintf(name + n, sizeof name - n, "; %s", ss_blas_describe());
    return name;
}

/* The bf16 matmul references for C[M,N] (fp32) = A[M,K] (bf16) W[N,K]^T (bf16), best of `reps`
 * (GFLOP/s), both measured here and now:
 *  - *ours: ss_dnnl_linear on a packed weight, the product as the bf16 forward runs it (fixed
 *    one-thread row bands, so the bits do not depend on the thread count);
 *  - *lib: oneDNN on its own, one primitive for all threads (it may split the work any way it
 *    likes) with the weight reordered beforehand into the layout it asks for (format any).
 * Returns the higher of the two (the reference the benchmarks' ratios use); *impl names
 * oneDNN's implementation (e.g. "brg:avx512_core_amx_bf16"). */
#include <oneapi/dnnl/dnnl.h>
#include "core/err.h"
#include "nn/dnnl.h"
static inline double bu_dnnl_alone(const uint16_t *A, const uint16_t *W, float *C, int M, int N, int K, int reps,
                                   const char **impl) {
    static char name[64];
    double best = 1e30;
    dnnl_engine_t eng = ss_dnnl_engine();
    dnnl_stream_t st = NULL;
    dnnl_memory_desc_t a, b, bp, c;
    const dnnl_dims_t da = {M, K}, db = {K, N}, dc = {M, N};
    dnnl_matmul_desc_t d;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t p = NULL, r = NULL;
    dnnl_memory_t ma = NULL, mb = NULL, mbp = NULL, mc = NULL;
    const char *nm = "?";
    if (!eng || dnnl_stream_create(&st, eng, dnnl_stream_default_flags) ||
        dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_bf16, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&bp, 2, db, dnnl_bf16, dnnl_ba) ||
        dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_bf16, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab) || dnnl_matmul_desc_init(&d, &a, &b, NULL, &c) ||
        dnnl_primitive_desc_create(&pd, &d, NULL, eng, NULL) || dnnl_primitive_create(&p, pd))
        goto out;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &nm);
    snprintf(name, sizeof name, "%s", nm ? nm : "?");
    *impl = name;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (dnnl_memory_create(&ma, &a, eng, (void *)A) || dnnl_memory_create(&mc, &c, eng, C) ||
        dnnl_memory_create(&mbp, &bp, eng, (void *)W) || dnnl_memory_create(&mb, wmd, eng, DNNL_MEMORY_ALLOCATE) ||
        dnnl_reorder_primitive_desc_create(&rpd, &bp, eng, wmd, eng, NULL) || dnnl_primitive_create(&r, rpd))
        goto out;
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, mbp}, {DNNL_ARG_TO, mb}};
    if (dnnl_primitive_execute(r, st, 2, ra) || dnnl_stream_wait(st)) goto out;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
    for (int i = 0; i < reps + 1; i++) {
        double t = bu_now();
        if (dnnl_primitive_execute(p, st, 3, args) || dnnl_stream_wait(st)) {
            best = 1e30;
            break;
        }
        t = bu_now() - t;
        if (i > 0 && t < best) best = t;
    }
out:
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (p) dnnl_primitive_destroy(p);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mbp) dnnl_memory_destroy(mbp);
    if (mc) dnnl_memory_destroy(mc);
    if (st) dnnl_stream_destroy(st);
    return best < 1e30 ? 2.0 * M * N * K / best / 1e9 : 0;
}

static inline double bu_bf16_gflops(int M, int N, int K, int reps, const char **impl, double *ours, double *lib) {
    /* 64-byte aligned, as the forward's operands (core/err.h: misaligned ones run at half the rate) */
    uint16_t *A = ss_malloc_aligned(sizeof(uint16_t) * M * K), *B = ss_malloc_aligned(sizeof(uint16_t) * N * K);
    float *C = ss_malloc_aligned(sizeof(float) * M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = ss_bf16_from_f32((float)((int)(i * 7 % 13) - 6) * 0.01f);
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = ss_bf16_from_f32((float)((int)(i * 5 % 11) - 5) * 0.01f);
    const size_t pe = ss_dnnl_packed_elems(N, K);
    uint16_t *P = pe ? ss_malloc_aligned(sizeof(uint16_t) * pe) : B;
    if (pe && ss_dnnl_pack(P, B, N, K) < 0) {
        free(P);
        P = B;
    }
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t = bu_now();
        if (ss_dnnl_linear(C, N, A, NULL, K, P, P != B, NULL, M, N, K, 0) < 0) {
            best = 1e30;
            break;
        }
        t = bu_now() - t;
        if (r > 0 && t < best) best = t; /* the first creates the primitives */
    }
    *ours = best < 1e30 ? 2.0 * M * N * K / best / 1e9 : 0;
    *impl = "unavailable";
    *lib = bu_dnnl_alone(A, B, C, M, N, K, reps, impl);
    if (P != B) free(P);
    free(A);
    free(B);
    free(C);
    return *ours > *lib ? *ours : *lib;
}

#endif
