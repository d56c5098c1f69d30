/* libFuzzer target for AutoencoderKL folders (vae/vae): the input is written as a VAE folder's
 * config.json; an accepted config small enough to run (at most 4 blocks of at most 32 channels, 3
 * layers) gets random weights of the shapes it implies (every third run one tensor is dropped or
 * given a wrong shape), is loaded, decodes a small latent and encodes a small image.
 *
 * Contract checked: ASan/UBSan clean; a refused config or folder gets a one-line message naming
 * the file; a loaded model's outputs are finite. Build with `make fuzz`. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"
#include "vae/vae.h"

static char g_dir[64], g_cfg[128], g_w[128];

static void cleanup(void) {
    unlink(g_cfg), unlink(g_w), rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_dir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_vae_XXXXXX" : "/tmp/fuzz_vae_XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    atexit(cleanup);
    snprintf(g_cfg, sizeof g_cfg, "%s/config.json", g_dir);
    snprintf(g_w, sizeof g_w, "%s/diffusion_pytorch_model.safetensors", g_dir);
    return 0;
}

static void one_line(void) {
    const char *e = ss_err();
    if (!e[0] || strchr(e, '\n')) {
        fprintf(stderr, "fuzz_vae: bad error message: '%s'\n", e);
        abort();
    }
}

typedef struct {
    st_writer *w;
    int k, drop, reshape;
    uint64_t st;
} wctx;

static void add(void *ctx, const char *name, int ndim, const int64_t *shape) {
    wctx *c = ctx;
    const int k = c->k++;
    if (k == c->drop) return;
    int64_t shp[4];
    size_t n = 1;
    for (int i = 0; i < ndim; i++) shp[i] = shape[i] + (k == c->reshape && i == 0), n *= (size_t)shp[i];
    float *x = malloc(n * sizeof *x);
    if (!x) abort();
    for (size_t i = 0; i < n; i++) {
        c->st = c->st * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(c->st >> 40) / 16777216.0 - 0.5) * 0.5f;
    }
    if (st_writer_add_f32(c->w, name, ST_F32, ndim, shp, x) < 0) abort();
    free(x);
}

static long g_runs;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_cfg, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    vae_config c;
    if (vae_config_load(&c, g_cfg) < 0) {
        one_line();
        if (!strstr(ss_err(), "config.json")) abort();
        return 0;
    }
    if (c.n_blocks > 4 || c.layers_per_block > 3 || c.latent_channels > 32 || c.in_channels > 8 || c.out_channels > 8)
        return 0;
    for (int i = 0; i < c.n_blocks; i++)
        if (c.block_out[i] > 32) return 0;
    const long run = g_runs++;
    wctx w = {.w = st_writer_new(), .drop = run % 3 == 1 ? (int)(run / 3 % 40) : -1,
              .reshape = run % 3 == 2 ? (int)(run / 3 % 40) : -1, .st = (uint64_t)run};
    if (!w.w || vae_enumerate_tensors(&c, add, &w) < 0 || st_writer_save(w.w, g_w) < 0) abort();
    st_writer_free(w.w);
    vae_model *m;
    if (vae_load(&m, g_dir) < 0) {
        one_line();
        if (w.drop < 0 && w.reshape < 0) {
            fprintf(stderr, "fuzz_vae: a complete folder was refused: %s\n", ss_err());
            abort();
        }
        return 0;
    }
    const int h = 2 + (int)(run % 3), wd = 3 - (int)(run % 2), fct = vae_factor(m);
    const size_t nz = (size_t)c.latent_channels * h * wd, ny = (size_t)c.out_channels * h * fct * wd * fct;
    float *z = calloc(nz, sizeof *z), *y = malloc(ny * sizeof *y);
    for (size_t i = 0; i < nz; i++) z[i] = (float)((int)(i % 7) - 3) * 0.3f;
    if (vae_decode(m, y, z, 1, h, wd, NULL, NULL) < 0) abort();
    for (size_t i = 0; i < ny; i++)
        if (!isfinite(y[i])) abort();
    const int H = 5 + (int)(run % 4), W = 4 + (int)(run % 3);
    int eh, ew;
    vae_encoded_size(m, H, W, &eh, &ew);
    float *x = malloc(sizeof(float) * c.in_channels * H * W);
    for (int i = 0; i < c.in_channels * H * W; i++) x[i] = (float)((i * 37 % 11) - 5) * 0.2f;
    if (eh >= 1 && ew >= 1) {
        float *mom = malloc(sizeof(float) * 2 * c.latent_channels * eh * ew);
        if (vae_encode(m, mom, x, 1, H, W, NULL, NULL) < 0) abort();
        for (int i = 0; i < 2 * c.latent_channels * eh * ew; i++)
            if (!isfinite(mom[i])) abort();
        free(mom);
    }
    free(x), free(z), free(y);
    vae_free(m);
    return 0;
}
