/* PixArt benchmark (issue 13). In one run: the machine's sgemm rate at the layer shapes, then a
 * random-weight PixArt-alpha-XL-width model (D = 1152, 16 heads x 72, 2 blocks, 1024^2 -> latent
 * 128x128 -> 4096 image tokens, 120 text tokens of 4096 channels, additional conditions, batch 1):
 * forward time, GFLOP/s and its ratio to the sgemm rate; and the self-attention (4096 x 4096, 16
 * heads) plain vs with the sink probe's statistics, as the kernel alone and as the whole forward
 * with the probe on every site. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "nn/attn.h"
#include "core/err.h"
#include "models/pixart.h"
#include "sink/sink.h"

static float *rnd(size_t n, unsigned seed, float a) {
    float *x = malloc(sizeof(float) * n);
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = a * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
    return x;
}

/* a linear layer of random weights, remembered for freeing */
static float *owned[256];
static int n_owned;
static ss_linear lin(int out, int in, unsigned seed) {
    float *w = rnd((size_t)out * in, seed, 1.0f / (float)in), *b = rnd((size_t)out, seed + 1, 0.01f);
    owned[n_owned++] = w;
    owned[n_owned++] = b;
    return (ss_linear){.w = w, .b = b, .in = in, .out = out};
}

static const char *cpu_name(char *buf, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(buf, cap, "unknown CPU");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            const char *c = strchr(line, ':');
            if (c) snprintf(buf, cap, "%s", c + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    return buf;
}

typedef struct {
    sd3_hooks h;
} sink_adapter;
static int ad_attention(void *ctx, const ss_site *site, const attn_args *a) {
    sink_adapter *s = ctx;
    return s->h.attention(s->h.ctx, site, a);
}
static int ad_block(void *ctx, int block, const float *x, int B, int N, int D) {
    sink_adapter *s = ctx;
    return s->h.block_output(s->h.ctx, block, x, B, N, D);
}

int main(void) {
    const int N = 4096, S = 120, D = 1152, H = 16, dh = 72, Hl = 128, Wl = 128, CC = 4096;
    char cpu[256];
    printf("CPU: %s; threads: %d\n", cpu_name(cpu, sizeof cpu), omp_get_max_threads());
    struct { int M, N, K, mult; } shapes[] = {{N, D, D, 6}, {N, 4 * D, D, 1}, {N, D, 4 * D, 1}, {S, D, CC, 1}, {S, D, D, 5}};
    double fl_total = 0, t_total = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const double g = bu_sgemm_gflops(shapes[i].M, shapes[i].N, shapes[i].K, 3);
        printf("sgemm %4d x %4d x %4d : %7.1f GFLOP/s\n", shapes[i].M, shapes[i].N, shapes[i].K, g);
        const double f = 2.0 * shapes[i].M * shapes[i].N * shapes[i].K * shapes[i].mult;
        fl_total += f;
        t_total += f / (g * 1e9);
    }
    const double peak = fl_total / t_total / 1e9;
    printf("sgemm rate over the layer mix: %.1f GFLOP/s (the reference for the ratios below)\n\n", peak);

    pixart_model m = {0};
    m.cfg = (pixart_config){.num_heads = H, .head_dim = dh, .in_channels = 4, .out_channels = 8, .num_layers = 2,
                            .cross_attention_dim = D, .attention_bias = 1, .sample_size = 128, .patch_size = 2,
                            .act = OP_ACT_GELU_TANH, .norm_eps = 1e-6f, .interpolation_scale = 2,
                            .use_additional_conditions = 1, .caption_channels = CC};
    if (pixart_config_check(&m.cfg, "bench") < 0) {
        fprintf(stderr, "bench: %s\n", ss_err());
        return 1;
    }
    m.D = D;
    unsigned seed = 1;
    m.patch = lin(D, 16, seed += 2);
    m.cap1 = lin(D, CC, seed += 2);
    m.cap2 = lin(D, D, seed += 2);
    m.t1 = lin(D, 256, seed += 2);
    m.t2 = lin(D, D, seed += 2);
    m.r1 = lin(D / 3, 256, seed += 2);
    m.r2 = lin(D / 3, D / 3, seed += 2);
    m.a1 = lin(D / 3, 256, seed += 2);
    m.a2 = lin(D / 3, D / 3, seed += 2);
    m.adaln = lin(6 * D, D, seed += 2);
    float *sst_out = rnd((size_t)2 * D, seed += 2, 0.1f), *sst[2];
    m.sst_out = sst_out;
    m.proj_out = lin(32, D, seed += 2);
    pixart_block blocks[2] = {{0}};
    m.blocks = blocks;
    for (int i = 0; i < 2; i++) {
        pixart_block *b = &blocks[i];
        sst[i] = rnd((size_t)6 * D, seed += 2, 0.1f);
        b->sst = sst[i];
        b->q = lin(D, D, seed += 2);
        b->k = lin(D, D, seed += 2);
        b->v = lin(D, D, seed += 2);
        b->out = lin(D, D, seed += 2);
        b->q2 = lin(D, D, seed += 2);
        b->k2 = lin(D, D, seed += 2);
        b->v2 = lin(D, D, seed += 2);
        b->out2 = lin(D, D, seed += 2);
        b->ff1 = lin(4 * D, D, seed += 2);
        b->ff2 = lin(D, 4 * D, seed += 2);
    }
    float *x = rnd((size_t)4 * Hl * Wl, 91, 1.0f), *ctx = rnd((size_t)S * CC, 92, 1.0f), *out = malloc(sizeof(float) * 8 * Hl * Wl);
    float mask[120], t = 500.0f, res[2] = {1024, 1024}, ar = 1.0f;
    for (int j = 0; j < S; j++) mask[j] = j < 40; /* a 40-token prompt padded to 120, as T5 pads */
    const double flops = pixart_forward_flops(&m.cfg, 1, Hl, Wl, S);
    double best = 1e30, best_p = 1e30;
    int codes[4];
    for (int i = 0; i < 2; i++) {
        codes[i] = ss_site_code(SS_SITE_SELF, i);
        codes[2 + i] = ss_site_code(SS_SITE_CROSS, i);
    }
    for (int r = 0; r < 3; r++) {
        double t0 = bu_now();
        if (pixart_forward(&m, out, x, ctx, mask, &t, res, &ar, 1, Hl, Wl, S, NULL) < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        t0 = bu_now() - t0;
        if (t0 < best) best = t0;
        sink_ctx *sk = sink_ctx_new();
        sink_ctx_set_probe(sk, codes, 4, TOK_IMAGE, 5, 0);
        sink_adapter ad = {sink_ctx_hooks(sk)};
        pixart_hooks hk = {.ctx = &ad, .attention = ad_attention, .block_output = ad_block};
        t0 = bu_now();
        if (pixart_forward(&m, out, x, ctx, mask, &t, res, &ar, 1, Hl, Wl, S, &hk) < 0) {
            fprintf(stderr, "bench: %s\n", ss_err());
            return 1;
        }
        t0 = bu_now() - t0;
        if (t0 < best_p) best_p = t0;
        sink_ctx_free(sk);
    }
    printf("forward PixArt-alpha-XL width (D=%d, %d heads x %d, 2 blocks, %d image + %d text tokens, batch 1): %.3f s "
           "(best of 3), %.1f GFLOP/s = %.0f%% of the sgemm rate\n", D, H, dh, N, S, best, flops / best / 1e9,
           100 * flops / best / 1e9 / peak);
    printf("  with the sink probe at all 4 sites (self and cross): %.3f s = %.2fx plain\n", best_p, best_p / best);

    /* the self-attention kernel alone: plain vs the probe's statistics */
    float *q = rnd((size_t)N * D, 3, 1.0f), *k = rnd((size_t)N * D, 4, 1.0f), *v = rnd((size_t)N * D, 5, 1.0f),
          *o = malloc(sizeof(float) * N * D);
    float *mass = malloc(sizeof(float) * H * N), *rm = malloc(sizeof(float) * H * N), *rl = malloc(sizeof(float) * H * N),
          *re = malloc(sizeof(float) * H * N), *r5 = malloc(sizeof(float) * H * N);
    attn_scratch *scr = attn_scratch_new();
    attn_args a = {.B = 1, .H = H, .dh = dh, .T = N, .ld = D, .q = q, .k = k, .v = v, .out = o, .n_qspan = 1, .qend = {N},
                   .scratch = scr};
    attn_stats st = {.mass = {mass}, .row_m = rm, .row_l = rl, .row_entropy = re, .row_top5 = r5};
    double tp = 1e30, tq = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = bu_now();
        attn_forward(&a, NULL);
        t0 = bu_now() - t0;
        if (r && t0 < tp) tp = t0;
        t0 = bu_now();
        attn_forward(&a, &st);
        t0 = bu_now() - t0;
        if (r && t0 < tq) tq = t0;
    }
    const double af = 4.0 * N * (double)N * D;
    printf("self-attention %d x %d, %d heads x %d: plain %.3f s (%.1f GFLOP/s = %.0f%% of the sgemm rate), with the probe "
           "(mass, entropy, top-5, row max/sum) %.3f s = %.2fx plain\n", N, N, H, dh, tp, af / tp / 1e9,
           100 * af / tp / 1e9 / peak, tq, tq / tp);
    printf("(no diffusers comparison: this benchmark does not run PyTorch beside it)\n");
    attn_scratch_free(scr);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(sst_out);
    free(sst[0]);
    free(sst[1]);
    free(x);
    free(ctx);
    free(out);
    free(q);
    free(k);
    free(v);
    free(o);
    free(mass);
    free(rm);
    free(rl);
    free(re);
    free(r5);
    return 0;
}
