/* VAE benchmark: AutoencoderKL decode of a 16-channel latent (SD3's VAE widths: block_out_channels
 * 128,256,512,512, layers_per_block 2, 32 groups; random weights written to a temporary folder)
 * to 512^2 and 1024^2 images, fp32, through oneDNN's direct convolution (nn/dnnl_conv.h) and
 * through the old im2col + sgemm path (at 512^2 only; `bench_vae full` adds it at 1024^2, minutes
 * on 2 cores). Prints seconds, the decode's rate (its FLOPs, convs dominating, over its time) as a
 * fraction of oneDNN's own convolution peak measured in the same run (before and after, the mean)
 * at the dominant shape (3x3 128->128 at 1024 wide, 64 rows, one primitive on every thread, in
 * oneDNN's layouts), the implementation oneDNN reports, and the peak extra resident memory of each
 * decode (the reordered weight copies, made on the first oneDNN decode, counted there); `bench_vae
 * SIDE` decodes SIDE^2 once through oneDNN (profiling). Run from
 * the repository root. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "nn/dnnl_conv.h"
#include "core/err.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "vae/vae.h"

typedef struct {
    st_writer *w;
    uint64_t st;
    int rc;
} init_ctx;

static void add_random(void *ctx, const char *name, int ndim, const int64_t *shape) {
    init_ctx *c = ctx;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *x = malloc(n * sizeof *x);
    if (!x) {
        c->rc = -1;
        return;
    }
    const double fan = ndim == 4 ? (double)(shape[1] * shape[2] * shape[3]) : ndim == 2 ? (double)shape[1] : 1;
    const int norm = ndim == 1 && strstr(name, "norm") && strstr(name, ".weight");
    for (size_t i = 0; i < n; i++) {
        c->st = c->st * 6364136223846793005ULL + 1442695040888963407ULL;
        const double u = (double)(c->st >> 40) / 16777216.0 * 2 - 1;
        x[i] = (float)(ndim >= 2 ? u * __builtin_sqrt(3 / fan) : norm ? 1 + 0.1 * u : 0.02 * u);
    }
    if (st_writer_add_f32(c->w, name, ST_F32, ndim, shape, x) < 0) c->rc = -1;
    free(x);
}

/* One decode of a side x side image; seconds, peak extra GiB. */
static double decode(const vae_model *m, int side, double *gib) {
    const int h = side / 8, w = side / 8;
    const size_t nz = (size_t)16 * h * w, ny = (size_t)3 * side * side;
    float *z = malloc(nz * sizeof *z), *y = malloc(ny * sizeof *y);
    if (!z || !y) return -1;
    for (size_t i = 0; i < nz; i++) z[i] = (float)((int)(i * 2654435761u >> 20) % 2001 - 1000) * 1e-3f;
    memset(y, 0, ny * sizeof *y);
    const long base = bu_mem_reset();
    double t = bu_now();
    const int rc = vae_decode(m, y, z, 1, h, w, NULL, NULL);
    t = bu_now() - t;
    *gib = (bu_mem_peak() - base) / 1048576.0;
    free(z), free(y);
    return rc < 0 ? -1 : t;
}

int main(int argc, char **argv) {
    const int full = argc > 1 && !strcmp(argv[1], "full");
    const int only = argc > 1 && !full ? atoi(argv[1]) : 0; /* `bench_vae 1024`: that side, oneDNN, once (profiling) */
    if (argc > 1 && !full && (only < 64 || only % 8))
        return fprintf(stderr, "bench_vae: the argument is `full` or a side, a multiple of 8 >= 64\n"), 1;
    printf("CPU: %s; threads: %d\n", bu_cpu_name(), omp_get_max_threads());
    char impl[160];
    const double pk1 = ss_dnnl_conv_peak_gflops(128, 128, 3, 64, 1024, 3, impl, sizeof impl);
    printf("oneDNN conv peak, 3x3 128->128 on 64x1024, before: %.1f GFLOP/s (%s)\n", pk1, impl);

    char dir[] = "/tmp/sinkscope-bench-vae-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    const char *cfg_json =
        "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [128, 256, 512, 512],\n"
        " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
        " \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"],\n"
        " \"in_channels\": 3, \"out_channels\": 3, \"latent_channels\": 16, \"layers_per_block\": 2, \"norm_num_groups\": 32,\n"
        " \"scaling_factor\": 1.5305, \"shift_factor\": 0.0609, \"use_quant_conv\": false, \"use_post_quant_conv\": false}\n";
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs(cfg_json, f);
    fclose(f);
    vae_config c;
    init_ctx ic = {.w = st_writer_new(), .st = 1234};
    if (vae_config_load(&c, path) < 0 || vae_enumerate_tensors(&c, add_random, &ic) < 0 || ic.rc < 0) {
        fprintf(stderr, "bench_vae: %s\n", ss_err());
        return 1;
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    if (st_writer_save(ic.w, path) < 0) return fprintf(stderr, "bench_vae: %s\n", ss_err()), 1;
    st_writer_free(ic.w);
    vae_model *m;
    if (vae_load(&m, dir) < 0) return fprintf(stderr, "bench_vae: %s\n", ss_err()), 1;
    const ss_conv2d dom = {.cin = 128, .cout = 128, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    printf("oneDNN implementation in the decode (3x3 128->128 at 1024^2, %d-row bands): %s\n",
           ss_dnnl_conv_band_rows(&dom, 1024, 1024, 0), ss_dnnl_conv_impl(&dom, 1024, 1024, 0));

    struct { int side, dnnl; const char *what; } runs[] = {
        {512, 1, "oneDNN, first (primitives made, weights reordered)"}, {512, 1, "oneDNN"}, {1024, 1, "oneDNN"},
        {512, 0, "im2col+sgemm (old)"}, {1024, 0, "im2col+sgemm (old)"},
    };
    double t[5], g[5];
    int nrun = full ? 5 : 4;
    if (only) runs[0].side = only, runs[0].what = "oneDNN, first (primitives made, weights reordered)", nrun = 1;
    for (int i = 0; i < nrun; i++) {
        ss_dnnl_conv_enable(runs[i].dnnl);
        t[i] = decode(m, runs[i].side, &g[i]);
        if (t[i] < 0) return fprintf(stderr, "bench_vae: %s\n", ss_err()), 1;
        if (i == 0) printf("reordered weight copies: %.1f MiB\n", ss_dnnl_conv_weight_bytes() / 1048576.0);
    }
    ss_dnnl_conv_enable(1);
    const double pk2 = ss_dnnl_conv_peak_gflops(128, 128, 3, 64, 1024, 3, impl, sizeof impl);
    const double pk = (pk1 + pk2) / 2;
    printf("oneDNN conv peak after: %.1f GFLOP/s; reference = the mean, %.1f GFLOP/s\n", pk2, pk);
    for (int i = 0; i < nrun; i++) {
        const int hh = runs[i].side / 8;
        const double fl = vae_decode_flops(&c, hh, hh);
        printf("VAE decode 16x%dx%d -> 3x%dx%d, %s: %.2f s, %.0f GFLOP, %.1f GFLOP/s = %.0f%% of oneDNN's conv peak; "
               "peak extra memory %.2f GiB\n",
               hh, hh, runs[i].side, runs[i].side, runs[i].what, t[i], fl / 1e9, fl / t[i] / 1e9,
               100 * fl / t[i] / 1e9 / pk, g[i]);
    }
    vae_free(m);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    rmdir(dir);
    return 0;
}
