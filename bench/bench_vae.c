/* VAE benchmark: AutoencoderKL decode of a 16-channel latent to a 1024x1024 image (latent
 * 128x128; the side is argv[1] in pixels, default 1024) with SD3's VAE widths (block_out_channels
 * 128,256,512,512, layers_per_block 2, 32 groups, random weights written to a temporary folder),
 * in seconds and as a fraction of the sgemm rate measured in the same run at the shape of the
 * dominant convolution (the 3x3 128->128 conv at full resolution as one im2col product; measured
 * before and after the decode, the mean is the reference), with the peak extra memory. On 2 shared
 * cores 1024^2 takes minutes: `bench_vae 512` runs the 512^2 case. Run from the repository root. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/err.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "models/vae.h"

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

int main(int argc, char **argv) {
    const int side = argc > 1 ? atoi(argv[1]) : 1024, h = side / 8, w = side / 8;
    if (side < 64 || side % 8) return fprintf(stderr, "bench_vae: side must be a multiple of 8 >= 64\n"), 1;
    char cpu[256] = "unknown";
    FILE *fc = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (fc && fgets(line, sizeof line, fc))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (fc) fclose(fc);
    printf("cpu: %s, threads: %d\n", cpu, omp_get_max_threads());
    /* the reference: the 3x3 128->128 conv at the output resolution as one sgemm (K = 1152), a
     * 16384-column slice of it */
    const double peak = bu_sgemm_gflops(128, 16384, 128 * 9, 3);
    printf("sgemm 128 x 16384 x 1152 before the decode: %.1f GFLOP/s\n", peak);

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
    const size_t nz = (size_t)16 * h * w, ny = (size_t)3 * side * side;
    float *z = malloc(nz * sizeof *z), *y = malloc(ny * sizeof *y);
    for (size_t i = 0; i < nz; i++) z[i] = (float)((int)(i * 2654435761u >> 20) % 2001 - 1000) * 1e-3f;
    const long base = bu_mem_reset();
    double t = bu_now();
    if (vae_decode(m, y, z, 1, h, w, NULL, NULL) < 0) return fprintf(stderr, "bench_vae: %s\n", ss_err()), 1;
    t = bu_now() - t;
    const long peak_kb = bu_mem_peak();
    /* the machine may be shared: the reference again after the decode, and their mean */
    const double peak2 = bu_sgemm_gflops(128, 16384, 128 * 9, 3);
    printf("sgemm 128 x 16384 x 1152 after the decode: %.1f GFLOP/s; reference = the mean, %.1f GFLOP/s\n", peak2,
           (peak + peak2) / 2);
    const double fl = vae_decode_flops(&c, h, w);
    printf("VAE decode 16x%dx%d -> 3x%dx%d (SD3 widths, fp32): %.2f s, %.0f GFLOP, %.1f GFLOP/s = %.0f%% of the sgemm "
           "rate; peak extra memory %.2f GiB\n",
           h, w, side, side, t, fl / 1e9, fl / t / 1e9, 100 * fl / t / 1e9 / ((peak + peak2) / 2), (peak_kb - base) / 1048576.0);
    free(z), free(y);
    vae_free(m);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    rmdir(dir);
    return 0;
}
