/* The cost of the "why sinks form" probe fields (sink/spiral.h) at SD3-medium attention size at
 * 1024^2: 4096 image + 333 text tokens, 24 heads x 64, batch 1, hidden width 1536. In one run,
 * as ratios to (a):
 *   (a) plain fused attention
 *   (b) + probe (mass per key, top-k, entropy, top-5 concentration)
 *   (c) + probe + every spiral field the SD3 site has (Key Importance, budget, <q,k>, norms,
 *       massive activations of the block's input streams)
 *   (d) (c) at the same site given a RoPE layout (axes 16/24/24): + pair energies and FAC, and
 *       the pre-RoPE <q,k> kept by the rope_qk hook (timed with it)
 * wall and process-CPU seconds (best of 5, variants interleaved), and the peak extra resident
 * memory of each (beyond inputs and outputs). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "nn/attn.h"
#include "core/err.h"
#include "sink/sink.h"
#include "sink/spiral.h"

/* process CPU seconds (all threads): less sensitive than the wall clock to a shared machine */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void cpu_name(char *buf, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(buf, cap, "unknown CPU");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            const char *c = strchr(line, ':');
            if (c) snprintf(buf, cap, "%s", c + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
}

int main(void) {
    const int N = 4096, S = 333, T = N + S, H = 24, dh = 64, D = H * dh;
    omp_set_max_active_levels(1);
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    printf("%s, threads: %d; attention at SD3-medium 1024^2: %d image + %d text tokens, %d heads x %d\n", cpu,
           omp_get_max_threads(), N, S, H, dh);
    float *q = malloc(sizeof(float) * T * D), *k = malloc(sizeof(float) * T * D), *v = malloc(sizeof(float) * T * D),
          *o = malloc(sizeof(float) * T * D), *X = malloc(sizeof(float) * N * D), *C = malloc(sizeof(float) * S * D);
    for (size_t i = 0; i < (size_t)T * D; i++) {
        q[i] = (float)((i * 37 % 101) - 50) / 60.0f;
        k[i] = (float)((i * 53 % 103) - 51) / 60.0f;
        v[i] = (float)((i * 29 % 97) - 48) / 48.0f;
    }
    for (size_t i = 0; i < (size_t)N * D; i++) X[i] = (float)((i * 31 % 89) - 44) / 20.0f;
    for (size_t i = 0; i < (size_t)S * D; i++) C[i] = (float)((i * 41 % 83) - 41) / 20.0f;
    attn_args a = {.B = 1, .H = H, .dh = dh, .T = T, .ld = D, .n_img = N, .q = q, .k = k, .v = v, .out = o,
                   .n_qspan = 2, .qend = {N, T}};
    ss_site site = {.kind = SS_SITE_JOINT, .Tq = T, .Tk = T, .n_qspan = 2, .n_kspan = 2,
                    .qspan = {{0, N, SS_TOK_IMAGE}, {N, T - N, SS_TOK_TEXT}}, .kspan = {{0, N, SS_TOK_IMAGE}, {N, T - N, SS_TOK_TEXT}},
                    .hidden_dim = D, .hidden_ld = D};
    site.hidden[0] = (ss_rows){X, (size_t)N};
    site.hidden[1] = (ss_rows){C, (size_t)S};
    ss_site rope_site = site;
    rope_site.rope_dims[0] = 16, rope_site.rope_dims[1] = 24, rope_site.rope_dims[2] = 24;
    const double flops = 4.0 * T * T * D;
    attn_forward(&a, NULL); /* warm-up: BLAS thread pool and buffers */
    const char *label[] = {"(a) plain fused attention", "(b) + probe", "(c) + probe + spiral fields (plain site)",
                           "(d) + probe + spiral fields (RoPE layout, + rope_qk hook)"};
    /* round-robin over the variants, best of 5 each, so that load changes hit all of them alike */
    double best[4] = {1e30, 1e30, 1e30, 1e30}, cbest[4] = {1e30, 1e30, 1e30, 1e30};
    long extra[4] = {0};
    size_t work[4] = {0};
    for (int r = 0; r < 5; r++)
        for (int variant = 0; variant < 4; variant++) {
            sink_ctx *sk = sink_ctx_new();
            int blk = 0;
            if (variant >= 1) sink_ctx_set_probe(sk, &blk, 1, TOK_IMAGE, 5, 0);
            if (variant >= 2) sink_ctx_set_spiral(sk, SPIRAL_ALL);
            const ss_site *s = variant == 3 ? &rope_site : &site;
            sd3_hooks hk = sink_ctx_hooks(sk);
            long base = bu_mem_reset();
            double t = bu_now(), ct = cpu_now();
            int rc = 0;
            if (variant == 0) rc = attn_forward(&a, NULL);
            else {
                if (variant == 3) rc = sink_ctx_rope_qk(sk, s, 0, &a);
                if (!rc) rc = hk.attention(hk.ctx, s, &a);
            }
            t = bu_now() - t;
            ct = cpu_now() - ct;
            long peak = bu_mem_peak() - base;
            if (rc < 0) {
                fprintf(stderr, "bench_spiral: %s\n", ss_err());
                return 1;
            }
            if (variant >= 2) work[variant] = sink_ctx_record(sk, 0)->spiral->work_bytes;
            if (t < best[variant]) best[variant] = t;
            if (ct < cbest[variant]) cbest[variant] = ct;
            if (peak > extra[variant]) extra[variant] = peak;
            sink_ctx_free(sk);
        }
    for (int variant = 0; variant < 4; variant++) {
        printf("%-58s %7.3f s  %5.2fx (a)  cpu %7.3f s %5.2fx (a)  %6.1f GFLOP/s  peak extra memory %6.1f MiB", label[variant],
               best[variant], best[variant] / best[0], cbest[variant], cbest[variant] / cbest[0], flops / best[variant] / 1e9,
               extra[variant] / 1024.0);
        if (variant >= 2) printf("  (spiral working memory %.2f MiB)", work[variant] / 1048576.0);
        printf("\n");
    }
    /* (e) the spiral fields alone, on the statistics of one probed pass: their own cost */
    float *mass = malloc(sizeof(float) * 2 * H * T), *qk_pre = NULL;
    attn_stats st = {.mass = {mass, mass + (size_t)H * T}};
    attn_forward(&a, &st);
    if (spiral_qk_pre(&qk_pre, &rope_site, &a, 0) < 0) {
        fprintf(stderr, "bench_spiral: %s\n", ss_err());
        return 1;
    }
    double te = 1e30, cte = 1e30;
    for (int r = 0; r < 5; r++) {
        spiral_rec *rec = NULL;
        double t = bu_now(), ct = cpu_now();
        float *pre = NULL;
        int rc = spiral_qk_pre(&pre, &rope_site, &a, 0);
        if (!rc) rc = spiral_measure(&rec, SPIRAL_ALL, &rope_site, &a, &st, 0, pre);
        t = bu_now() - t;
        ct = cpu_now() - ct;
        if (rc < 0) {
            fprintf(stderr, "bench_spiral: %s\n", ss_err());
            return 1;
        }
        te = t < te ? t : te;
        cte = ct < cte ? ct : cte;
        spiral_rec_free(rec);
        free(pre);
    }
    printf("%-58s %7.3f s  %5.3fx (a)  cpu %7.3f s %5.3fx (a)\n", "(e) the spiral fields alone (RoPE layout, qk pre included)",
           te, te / best[0], cte, cte / cbest[0]);
    free(mass);
    free(qk_pre);
    free(q), free(k), free(v), free(o), free(X), free(C);
    return 0;
}
