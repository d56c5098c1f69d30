/* Seconds per denoising step of a real-size SD3-medium transformer (issue: real pipelines). The
 * weights are random, written by sd3_init_random (what `sinkscope init` writes) with SD3-medium's
 * configuration (24 joint blocks, D = 1536 = 24 heads x 64, T5 width 4096, pooled 2048, position
 * table 192 x 192; ~2B parameters) as BF16 on disk (4 GiB instead of 8). One denoising step is
 * what the SD3 pipeline does per step with classifier-free guidance: one transformer call on
 * batch 2 (unconditional, conditional) with 333 text tokens (77 CLIP + 256 T5), the guidance
 * combination and the FlowMatch Euler update. Measured at 512^2 (64 x 64 latent, 1024 image
 * tokens) and 1024^2 (128 x 128, 4096 image tokens), in f32 compute (the weights widened at load)
 * and in bf16 compute (--precision bf16), each against the rate of its own products measured in
 * this run at the layer shapes (sgemm / oneDNN bf16). Also the load time and the peak resident
 * memory of the transformer with its workspace.
 *
 * Slow on purpose (minutes on 2 cores): one step each, after one warm-up step at 512^2.
 * `bench_sd3_step 512` runs only the 512^2 case. Needs ~4.3 GB of space under $TMPDIR (or /tmp). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/binder.h"
#include "models/sd3.h"

static void count(void *ctx, const char *name, int ndim, const int64_t *shape) {
    double n = 1;
    for (int i = 0; i < ndim; i++) n *= (double)shape[i];
    *(double *)ctx += n;
    (void)name;
}

/* The rate of the layer products over the flop mix of one forward at N image + S text tokens. */
static void layer_rates(int N, int S, int D, double *f32, double *bf16) {
    struct { int M, N, K; } sh[] = {{N, D, D}, {N, 4 * D, D}, {N, D, 4 * D}, {S, D, D}, {S, 4 * D, D}, {S, D, 4 * D}};
    double fl = 0, t = 0, tb = 0;
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        const char *impl = "";
        const double g = bu_sgemm_gflops(sh[i].M, sh[i].N, sh[i].K, 2);
        double ours, lib;
        const double gb = bu_bf16_gflops(sh[i].M, sh[i].N, sh[i].K, 2, &impl, &ours, &lib);
        const double f = 2.0 * sh[i].M * sh[i].N * sh[i].K * (sh[i].N == sh[i].K ? 4 : 1);
        fl += f;
        t += f / (g * 1e9);
        tb += f / (gb * 1e9);
    }
    *f32 = fl / t / 1e9;
    *bf16 = fl / tb / 1e9;
}

/* One CFG denoising step: v = model([x, x], [uncond, cond]); v = vu + cfg (vc - vu); x += dt v. */
static int step(const sd3_model *m, sd3_workspace *ws, float *x, float *x2, float *v2, const float *ctx,
                const float *pooled, int Hl, int Wl, int S) {
    const size_t n = (size_t)16 * Hl * Wl;
    memcpy(x2, x, n * sizeof *x);
    memcpy(x2 + n, x, n * sizeof *x);
    const float t[2] = {750.0f, 750.0f}, cfg = 7.0f, dt = -0.05f;
    if (sd3_forward_ws(m, ws, v2, x2, ctx, pooled, t, 2, Hl, Wl, S, NULL) < 0) return -1;
    for (size_t i = 0; i < n; i++) x[i] += dt * (v2[i] + cfg * (v2[n + i] - v2[i]));
    return 0;
}

int main(int argc, char **argv) {
    const int only512 = argc > 1 && !strcmp(argv[1], "512");
    const int S = 333, D = 1536;
    printf("CPU: %s; threads: %d\n", bu_cpu_name(), omp_get_max_threads());
    sd3_config c = {.sample_size = 128, .patch_size = 2, .in_channels = 16, .out_channels = 16, .num_layers = 24,
                    .head_dim = 64, .num_heads = 24, .joint_attention_dim = 4096, .caption_projection_dim = 1536,
                    .pooled_projection_dim = 2048, .pos_embed_max_size = 192};
    double nparams = 0;
    sd3_enumerate_tensors(&c, count, &nparams);
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/sinkscope-bench-step-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench: mkdtemp");
        return 1;
    }
    double t0 = bu_now();
    if (sd3_init_random(&c, dir, 11, ST_BF16) < 0) {
        fprintf(stderr, "bench: %s\n", ss_err());
        return 1;
    }
    printf("SD3-medium configuration: 24 blocks, %.3fB parameters, written as BF16 in %.1f s\n", nparams / 1e9,
           bu_now() - t0);
    const int sides[2] = {512, 1024};
    const int nsides = only512 ? 1 : 2;
    double rf[2], rb[2];
    for (int s = 0; s < nsides; s++) layer_rates((sides[s] / 16) * (sides[s] / 16), S, D, &rf[s], &rb[s]);
    const int Lmax = sides[nsides - 1] / 8;
    float *x = malloc(sizeof(float) * 16 * Lmax * Lmax), *x2 = malloc(sizeof(float) * 2 * 16 * Lmax * Lmax),
          *v2 = malloc(sizeof(float) * 2 * 16 * Lmax * Lmax), *ctx = malloc(sizeof(float) * 2 * S * 4096),
          *pooled = malloc(sizeof(float) * 2 * 2048);
    if (!x || !x2 || !v2 || !ctx || !pooled) return 1;
    for (int i = 0; i < 2 * S * 4096; i++) ctx[i] = (float)((i * 13 % 97) - 48) / 96.0f;
    for (int i = 0; i < 2 * 2048; i++) pooled[i] = (float)((i * 7 % 31) - 15) / 30.0f;
    const int precs[2] = {SS_PREC_F32, SS_PREC_BF16};
    for (int k = 0; k < 2; k++) {
        long rss0 = bu_mem_reset();
        double tl = bu_now();
        sd3_model *m;
        ss_bind_set_precision(precs[k]);
        const int lrc = sd3_load(&m, dir);
        ss_bind_set_precision(SS_PREC_F32);
        if (lrc < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        tl = bu_now() - tl;
        printf("\n%s compute: load %.1f s, +%.0f MiB resident\n", ss_precision_name(precs[k]), tl,
               (bu_mem_peak() - rss0) / 1024.0);
        for (int s = 0; s < nsides; s++) {
            const int L = sides[s] / 8;
            for (int i = 0; i < 16 * L * L; i++) x[i] = (float)((i * 37 % 101) - 50) / 50.0f;
            sd3_workspace *ws;
            if (sd3_workspace_new(&ws, m, 2, L, L, S) < 0) {
                fprintf(stderr, "bench: %s\n", ss_err());
                return 1;
            }
            if (s == 0 && step(m, ws, x, x2, v2, ctx, pooled, L, L, S) < 0) { /* warm-up */
                fprintf(stderr, "bench: %s\n", ss_err());
                return 1;
            }
            double ts = bu_now();
            if (step(m, ws, x, x2, v2, ctx, pooled, L, L, S) < 0) {
                fprintf(stderr, "bench: %s\n", ss_err());
                return 1;
            }
            ts = bu_now() - ts;
            const double fl = sd3_forward_flops(&c, 2, L, L, S), ref = precs[k] == SS_PREC_BF16 ? rb[s] : rf[s];
            printf("  %4d^2 (%d image + %d text tokens, batch 2): %.2f s per denoising step, %.1f GFLOP/s = %.0f%% of the "
                   "%s rate at these shapes (%.1f GFLOP/s); peak +%.0f MiB since the load's start (workspace %.0f MiB)\n",
                   sides[s], (L / 2) * (L / 2), S, ts, fl / ts / 1e9, 100 * fl / ts / 1e9 / ref,
                   precs[k] == SS_PREC_BF16 ? "oneDNN bf16" : "sgemm", ref, (bu_mem_peak() - rss0) / 1024.0,
                   sd3_workspace_bytes(ws) / 1048576.0);
            sd3_workspace_free(ws);
        }
        sd3_free(m);
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "bench: could not remove %s\n", dir);
    free(x);
    free(x2);
    free(v2);
    free(ctx);
    free(pooled);
    return 0;
}
