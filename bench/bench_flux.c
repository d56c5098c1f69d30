/* FLUX benchmark (issue 12), at FLUX.1-dev width: D = 3072, 24 heads x 128, axes_dims_rope
 * (16, 56, 56), joint_attention_dim 4096, pooled 768, guidance embedding; 1 double + 2 single
 * blocks (issue 12's configuration), random BF16-stored weights (fp32 compute), batch 1, 1024^2:
 * 4096 image + 512 text tokens (~4 TFLOP per forward; about 2.9 GB of fp32 weights plus ~0.6 GB of
 * activations). SINKSCOPE_BENCH_FLUX_IMG=1024 runs 512^2 (1024 image tokens) on a slow machine. In one run:
 *   - the machine's sgemm rate at the layer shapes (weighted by their share of the forward's flops);
 *   - load time and peak extra memory of the BF16 checkpoint against its fp32 size;
 *   - forward time, GFLOP/s and its fraction of that sgemm rate;
 *   - at double.0 and single.0, on the forward's own q, k, v (after RoPE): (a) plain fused
 *     attention, (b) + probe, (c) + probe + top-1 removal (score path, image queries), as ratios
 *     to (a), with peak extra memory. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/flux.h"
#include "sink/sink.h"

static void count(void *ctx, const char *name, int ndim, const int64_t *shape) {
    double n = 1;
    for (int i = 0; i < ndim; i++) n *= (double)shape[i];
    *(double *)ctx += n;
    (void)name;
}

static void cpu_name(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(buf, cap, "%s", strchr(line, ':') + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
}

/* The attention variants, run inside the forward at the sites named in `want`. */
typedef struct {
    int want[2];   /* site codes */
    int done;
    double t[2][3];
    long mem[2][3];
    double diff[2]; /* (c) vs (a): the removal changes the output */
} attn_bench;

static int bench_attention(void *ctx, const ss_site *site, const attn_args *a) {
    attn_bench *ab = ctx;
    const int code = ss_site_code_of(site);
    int w = -1;
    for (int i = 0; i < 2; i++) w = ab->want[i] == code ? i : w;
    if (w < 0) return attn_forward(a, NULL);
    const size_t n = (size_t)a->B * a->T * a->ld;
    float *plain = malloc(sizeof(float) * n);
    sink_condition c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "top1");
    c.n_layers = 1;
    c.layers[0] = code;
    c.k = 1;
    c.queries = TOK_IMAGE;
    c.step_hi = 1;
    int rc = attn_forward(a, NULL); /* warm-up */
    for (int v = 0; v < 3 && !rc; v++) {
        double best = 1e30;
        long extra = 0;
        for (int r = 0; r < 2 && !rc; r++) {
            sink_ctx *sk = sink_ctx_new();
            if (v >= 1) sink_ctx_set_probe(sk, &code, 1, TOK_IMAGE, 5, 0);
            if (v == 2) sink_ctx_set_condition(sk, &c);
            const sd3_hooks hk = sink_ctx_hooks(sk);
            const long base = bu_mem_reset();
            double t = bu_now();
            rc = v == 0 ? attn_forward(a, NULL) : hk.attention(hk.ctx, site, a);
            t = bu_now() - t;
            const long peak = bu_mem_peak() - base;
            best = t < best ? t : best;
            extra = peak > extra ? peak : extra;
            sink_ctx_free(sk);
        }
        ab->t[w][v] = best;
        ab->mem[w][v] = extra;
        if (v == 0) memcpy(plain, a->out, sizeof(float) * n);
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a->out[i] - plain[i]) * ((double)a->out[i] - plain[i]);
        den += (double)plain[i] * plain[i];
    }
    ab->diff[w] = den > 0 ? sqrt(num / den) : 0;
    free(plain);
    ab->done++;
    return rc ? rc : attn_forward(a, NULL); /* the forward continues with the plain output */
}

int main(void) {
    const char *env = getenv("SINKSCOPE_BENCH_FLUX_IMG");
    const int N = env && atoi(env) > 0 ? atoi(env) : 4096, S = 512, T = N + S;
    const flux_config c = {.patch_size = 1, .in_channels = 64, .out_channels = 64, .num_layers = 1, .num_single_layers = 2,
                           .head_dim = 128, .num_heads = 24, .joint_attention_dim = 4096, .pooled_projection_dim = 768,
                           .guidance_embeds = 1, .n_axes = 3, .axes_dims = {16, 56, 56}};
    const int D = c.num_heads * c.head_dim;
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    printf("CPU: %s; threads: %d\n", cpu, omp_get_max_threads());
    printf("FLUX.1-dev width (D %d, %d heads x %d, axes 16/56/56), 1 double + 2 single blocks, %d image + %d text tokens, batch 1\n",
           D, c.num_heads, c.head_dim, N, S);
    /* sgemm at the layer shapes; mult = how many such products one forward runs */
    struct { int M, N, K, mult; } shapes[] = {
        {T, D, D, 4 + 2 * 3},  /* double q, k, v, out over both streams; each single block's q, k, v */
        {N, 4 * D, D, 1}, {N, D, 4 * D, 1}, {S, 4 * D, D, 1}, {S, D, 4 * D, 1}, /* double feed-forwards */
        {T, 4 * D, D, 2}, {T, D, 5 * D, 2}, /* each single block's MLP and proj_out */
        {S, D, 4096, 1},                    /* context_embedder */
    };
    double fl_total = 0, t_total = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const double g = bu_sgemm_gflops(shapes[i].M, shapes[i].N, shapes[i].K, 2);
        printf("sgemm %5d x %5d x %5d : %7.1f GFLOP/s\n", shapes[i].M, shapes[i].N, shapes[i].K, g);
        const double f = 2.0 * shapes[i].M * shapes[i].N * shapes[i].K * shapes[i].mult;
        fl_total += f;
        t_total += f / (g * 1e9);
    }
    const double peak = fl_total / t_total / 1e9;
    printf("sgemm rate over the layer mix: %.1f GFLOP/s (the reference for the ratio below)\n\n", peak);

    char dir[] = "/tmp/sinkscope-bench-flux-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    double nparams = 0;
    flux_enumerate_tensors(&c, count, &nparams);
    double tw = bu_now();
    if (flux_init_random(&c, dir, 7, ST_BF16) < 0) {
        fprintf(stderr, "bench: %s\n", ss_err());
        return 1;
    }
    tw = bu_now() - tw;
    const long rss0 = bu_mem_reset();
    double tl = bu_now();
    flux_model *m;
    if (flux_load(&m, dir) < 0) {
        fprintf(stderr, "bench: %s\n", ss_err());
        return 1;
    }
    tl = bu_now() - tl;
    const long rss_model = bu_mem_peak() - rss0;
    printf("BF16 checkpoint (%.0fM weights, written in %.1f s): load %.2f s, peak +%.0f MiB for %.0f MiB of fp32 weights (%.3fx)\n",
           nparams / 1e6, tw, tl, rss_model / 1024.0, nparams * 4 / 1048576.0, rss_model / 1024.0 / (nparams * 4 / 1048576.0));

    float *x = malloc(sizeof(float) * N * 64), *ctx = malloc(sizeof(float) * S * 4096), *pooled = malloc(sizeof(float) * 768),
          *out = malloc(sizeof(float) * N * 64), *img_ids = calloc((size_t)N * 3, sizeof(float)),
          *txt_ids = calloc((size_t)S * 3, sizeof(float)), t = 0.75f, g = 3.5f;
    for (int i = 0; i < N * 64; i++) x[i] = (float)((i * 37 % 101) - 50) / 50.0f;
    for (int i = 0; i < S * 4096; i++) ctx[i] = (float)((i * 13 % 97) - 48) / 96.0f;
    for (int i = 0; i < 768; i++) pooled[i] = (float)((i * 7 % 31) - 15) / 30.0f;
    int side = 1;
    while (side * side < N) side++;
    for (int i = 0; i < N; i++) { /* FluxPipeline's (0, row, column) */
        img_ids[i * 3 + 1] = (float)(i / side);
        img_ids[i * 3 + 2] = (float)(i % side);
    }
    const double flops = flux_forward_flops(&c, 1, N, S);
    double best = 1e30;
    for (int r = 0; r < 2; r++) {
        double t0 = bu_now();
        if (flux_forward(m, out, x, ctx, pooled, &t, &g, img_ids, txt_ids, 1, N, S, NULL) < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        t0 = bu_now() - t0;
        best = t0 < best ? t0 : best;
    }
    printf("forward: %.2f s (best of 2), %.1f GFLOP/s = %.0f%% of the sgemm rate (%.0f GFLOP, attention included)\n\n", best,
           flops / best / 1e9, 100 * flops / best / 1e9 / peak, flops / 1e9);

    attn_bench ab = {.want = {ss_site_code(SS_SITE_DOUBLE, 0), ss_site_code(SS_SITE_SINGLE, 0)}};
    const flux_hooks hk = {.ctx = &ab, .attention = bench_attention};
    if (flux_forward(m, out, x, ctx, pooled, &t, &g, img_ids, txt_ids, 1, N, S, &hk) < 0 || ab.done != 2) {
        fprintf(stderr, "bench: %s\n", ss_err());
        return 1;
    }
    const char *site[2] = {"double.0", "single.0"};
    const char *label[3] = {"(a) plain fused attention", "(b) + probe", "(c) + probe + top-1 removal (score, image queries)"};
    const double aflops = 4.0 * T * T * D;
    printf("attention on the forward's own q, k, v (%d x %d tokens, %d heads x %d, after RoPE):\n", T, T, c.num_heads, c.head_dim);
    for (int s = 0; s < 2; s++) {
        for (int v = 0; v < 3; v++)
            printf("  %-8s %-52s %7.3f s  %5.2fx (a)  %6.1f GFLOP/s  peak extra memory %7.1f MiB\n", site[s], label[v],
                   ab.t[s][v], ab.t[s][v] / ab.t[s][0], aflops / ab.t[s][v] / 1e9, ab.mem[s][v] / 1024.0);
        printf("  %-8s (c) vs (a) output relative L2 %.2e (the removal acts)\n", site[s], ab.diff[s]);
    }
    printf("(every figure measured in this run; no PyTorch beside it)\n");
    flux_free(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "bench: could not remove %s\n", dir);
    free(x);
    free(ctx);
    free(pooled);
    free(out);
    free(img_ids);
    free(txt_ids);
    return 0;
}
