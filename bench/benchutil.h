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

/* Best-of-`reps` oneDNN bf16 matmul rate (GFLOP/s) for the same layout (nn/dnnl.h: bf16 A and
 * B, fp32 C), as the bf16 path runs it; *impl receives the implementation's name. */
#include "nn/dnnl.h"
static inline double bu_bf16_gflops(int M, int N, int K, int reps, const char **impl) {
    uint16_t *A = malloc(sizeof(uint16_t) * M * K), *B = malloc(sizeof(uint16_t) * N * K);
    float *C = malloc(sizeof(float) * M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = ss_bf16_from_f32((float)((int)(i * 7 % 13) - 6) * 0.01f);
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = ss_bf16_from_f32((float)((int)(i * 5 % 11) - 5) * 0.01f);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t = bu_now();
        if (ss_dnnl_matmul(C, N, A, K, B, K, NULL, M, N, K, SS_DNNL_TRANS_B) < 0) {
            best = 1e30;
            break;
        }
        t = bu_now() - t;
        if (r > 0 && t < best) best = t; /* the first creates the primitives */
    }
    *impl = ss_dnnl_impl(M, N, K, SS_DNNL_TRANS_B);
    free(A);
    free(B);
    free(C);
    return 2.0 * M * N * K / best / 1e9;
}

#endif
