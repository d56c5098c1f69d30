/* Random-weight SD3 models (benchmarks, tests, and the starting point of training): models/init.c
 * with SD3's rules (every 1-D weight a norm gain; the sin-cos position table built). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "models/init.h"
#include "models/sd3.h"

/* The 2D sin-cos table of dit-spec 2.6 for an M x M grid (what diffusers builds at init). */
void sd3_sincos_table(float *out, int M, int D, double base_size, double interp) {
    const int q = D / 4;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < M; c++) {
            const float ph = (float)r / (float)(M / base_size) / (float)interp;
            const float pw = (float)c / (float)(M / base_size) / (float)interp;
            float *e = out + ((size_t)r * M + c) * D;
            for (int k = 4 * q; k < D; k++) e[k] = 0.0f; /* D % 4 tail: defined, not left as garbage */
            for (int k = 0; k < q; k++) {
                const double w = 1.0 / pow(10000.0, (double)k / q);
                e[k] = (float)sin(pw * w);
                e[q + k] = (float)cos(pw * w);
                e[2 * q + k] = (float)sin(ph * w);
                e[3 * q + k] = (float)cos(ph * w);
            }
        }
}

static int sd3_spec_check(const void *cfg, const char *where) { return sd3_config_check(cfg, where); }
static int sd3_spec_enumerate(const void *cfg, ss_tensor_fn fn, void *ctx) { return sd3_enumerate_tensors(cfg, fn, ctx); }
static int sd3_spec_save(const void *cfg, const char *path) { return sd3_config_save(cfg, path); }
static int sd3_spec_is_gain(const char *name) { return 1; } /* every 1-D weight is an RMSNorm or LayerNorm gain */
static int sd3_spec_fixed(const void *cfg, const char *name, float *x, size_t n) {
    const sd3_config *g = cfg;
    if (strcmp(name, "pos_embed.pos_embed")) return 0;
    sd3_sincos_table(x, g->pos_embed_max_size, g->num_heads * g->head_dim, (double)g->sample_size / g->patch_size, 1.0);
    return 1;
}

int sd3_init_random(const sd3_config *cfg, const char *dir, uint64_t seed, int dtype) {
    static const ss_init_spec spec = {sd3_spec_check, sd3_spec_enumerate, sd3_spec_save, sd3_spec_is_gain, sd3_spec_fixed};
    return ss_init_random(&spec, cfg, dir, seed, dtype);
}
