/* Forward-pass benchmark (issues: engine foundation, bf16 compute). In one run: the machine's
 * sgemm rate and oneDNN bf16 matmul rate (with the implementation's name) for the shapes the
 * model uses, then a random-weight SD3-medium-width model (D=1536, 24 heads x 64, 2 blocks,
 * latent 64x64 -> 1024 image + 333 text tokens, batch 1) stored as F32 and as BF16, computed in
 * f32 and in bf16 (--precision): load time, memory, forward time, achieved GFLOP/s and its ratio
 * to the matmul rate of its own precision. */
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

int main(void) {
    const int N = 1024, S = 333, D = 1536, Hl = 64, Wl = 64;
    printf("CPU: %s; threads: %d\n", bu_cpu_name(), omp_get_max_threads());
    /* sgemm at the layer shapes, weighted by their share of the forward's flops */
    struct { int M, N, K; double share; } shapes[] = {
        {N, D, D, 0}, {N, 4 * D, D, 0}, {N, D, 4 * D, 0}, {S, D, D, 0}, {S, 4 * D, D, 0}, {S, D, 4 * D, 0}};
    double fl_total = 0, t_total = 0, tb_total = 0, tl_total = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const char *impl = "";
        double g = bu_sgemm_gflops(shapes[i].M, shapes[i].N, shapes[i].K, 3);
        double ours, lib, gb = bu_bf16_gflops(shapes[i].M, shapes[i].N, shapes[i].K, 3, &impl, &ours, &lib);
        printf("%4d x %4d x %4d : sgemm %7.1f GFLOP/s, bf16 %7.1f GFLOP/s (%.2fx; oneDNN alone %.1f, our packed bands "
               "%.1f; %s)\n",
               shapes[i].M, shapes[i].N, shapes[i].K, g, gb, gb / g, lib, ours, impl);
        /* per block: 4 DxD products and 2 FF products per stream */
        double f = 2.0 * shapes[i].M * shapes[i].N * shapes[i].K * (shapes[i].N == shapes[i].K ? 4 : 1);
        fl_total += f;
        t_total += f / (g * 1e9);
        tb_total += f / (gb * 1e9);
        tl_total += f / ((lib > 0 ? lib : gb) * 1e9);
    }
    const double peak = fl_total / t_total / 1e9, peak_bf = fl_total / tb_total / 1e9, peak_lib = fl_total / tl_total / 1e9;
    printf("rate over the layer mix: sgemm %.1f GFLOP/s, bf16 %.1f GFLOP/s (per shape the better of oneDNN alone on all "
           "threads and our packed bands; the references for the ratios below); oneDNN alone %.1f GFLOP/s\n\n",
           peak, peak_bf, peak_lib);

    sd3_config c = {.sample_size = 128, .patch_size = 2, .in_channels = 16, .out_channels = 16, .num_layers = 2,
                    .head_dim = 64, .num_heads = 24, .joint_attention_dim = 4096, .caption_projection_dim = 1536,
                    .pooled_projection_dim = 2048, .pos_embed_max_size = 192};
    char dir[] = "/tmp/sinkscope-bench-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    float *x = malloc(sizeof(float) * 16 * Hl * Wl), *ctx = malloc(sizeof(float) * S * 4096), *pooled = malloc(sizeof(float) * 2048),
          *out = malloc(sizeof(float) * 16 * Hl * Wl), t = 500.0f;
    for (int i = 0; i < 16 * Hl * Wl; i++) x[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    for (int i = 0; i < S * 4096; i++) ctx[i] = (float)((i * 13 % 97) - 48) / 96.0f;
    for (int i = 0; i < 2048; i++) pooled[i] = (float)((i * 7 % 31) - 15) / 30.0f;
    const double flops = sd3_forward_flops(&c, 1, Hl, Wl, S);
    double nparams = 0;
    sd3_enumerate_tensors(&c, count, &nparams);
    const char *names[] = {"F32", "BF16", "F32", "BF16"};
    const int dtypes[] = {ST_F32, ST_BF16, ST_F32, ST_BF16}, precs[] = {SS_PREC_F32, SS_PREC_F32, SS_PREC_BF16, SS_PREC_BF16};
    double t_f32 = 0;
    for (int k = 0; k < 4; k++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s/%s", dir, names[k]);
        if (k < 2 && sd3_init_random(&c, sub, 7, dtypes[k]) < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        long rss0 = bu_mem_reset();
        double tl = bu_now();
        sd3_model *m;
        ss_bind_set_precision(precs[k]);
        const int lrc = sd3_load(&m, sub);
        ss_bind_set_precision(SS_PREC_F32);
        if (lrc < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        tl = bu_now() - tl;
        long rss_model = bu_mem_peak() - rss0;
        /* as the sampler runs it: one workspace, created before the steps, reused by every call */
        sd3_workspace *ws;
        if (sd3_workspace_new(&ws, m, 1, Hl, Wl, S) < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        double best = 1e30, best1 = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = bu_now();
            if (sd3_forward_ws(m, ws, out, x, ctx, pooled, &t, 1, Hl, Wl, S, NULL) < 0) {
                fprintf(stderr, "bench: %s\n", ss_err());
                return 1;
            }
            t0 = bu_now() - t0;
            if (t0 < best) best = t0;
        }
        /* a one-off call (sd3_forward allocates and frees its own workspace) */
        for (int r = 0; r < 3; r++) {
            double t0 = bu_now();
            if (sd3_forward(m, out, x, ctx, pooled, &t, 1, Hl, Wl, S, NULL) < 0) {
                fprintf(stderr, "bench: %s\n", ss_err());
                return 1;
            }
            t0 = bu_now() - t0;
            if (t0 < best1) best1 = t0;
        }
        const double ref = precs[k] == SS_PREC_BF16 ? peak_bf : peak;
        if (k == 0) t_f32 = best;
        printf("forward %-4s weights, %-4s compute: load %.2f s (peak +%.0f MiB for %.0f MiB of fp32 weights), forward %.3f s "
               "(best of 5; %.2fx F32), %.1f GFLOP/s = %.0f%% of the %s rate",
               names[k], ss_precision_name(precs[k]), tl, rss_model / 1024.0, nparams * 4 / 1048576.0, best, t_f32 / best,
               flops / best / 1e9, 100 * flops / best / 1e9 / ref, precs[k] == SS_PREC_BF16 ? "bf16 matmul" : "sgemm");
        if (precs[k] == SS_PREC_BF16) printf(" (%.0f%% of oneDNN alone's)", 100 * flops / best / 1e9 / peak_lib);
        printf("\n");
        printf("  (reused workspace of %.0f MiB, allocated %ld time(s); one-off sd3_forward with its own workspace: %.3f s)\n",
               sd3_workspace_bytes(ws) / 1048576.0, sd3_workspace_allocs(ws), best1);
        sd3_workspace_free(ws);
        sd3_free(m);
    }
    /* Every figure above was measured in this run; no constant from another machine is printed. */
    printf("(diffusers + PyTorch beside this: make bench-diffusers DIFFUSERS_SRC=path/to/diffusers/src)\n");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "bench: could not remove %s\n", dir);
    free(x);
    free(ctx);
    free(pooled);
    free(out);
    return 0;
}
