/* sinkscope init: a random-weight model folder from a config.json (benchmarks, tests). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "core/rng.h"
#include "io/pathcheck.h"
#include "io/safetensors.h"
#include "models/sd3.h"

static const char USAGE[] =
    "usage: sinkscope init --config CONFIG.json --out DIR [--seed N] [--dtype f32|bf16|f16]\n"
    "                      [--inputs FILE.safetensors [--batch B] [--latent HxW] [--text-len S]]\n"
    "  Writes DIR/config.json and DIR/diffusion_pytorch_model.safetensors with random weights\n"
    "  (fan-in scaled uniform; the position table is the 2D sin-cos table diffusers builds).\n"
    "  --inputs also writes random forward inputs for that model (hidden_states, encoder_hidden_states,\n"
    "  pooled_projections, timestep), default batch 1, latent sample_size x sample_size, 16 text tokens.\n";

/* Gaussian-ish random inputs for `sinkscope forward`; timesteps spread over [0, 1000]. */
static int write_inputs(const sd3_config *c, const char *path, int B, int Hl, int Wl, int S, uint64_t seed) {
    const size_t nx = (size_t)B * c->in_channels * Hl * Wl, nc = (size_t)B * S * c->joint_attention_dim,
                 np = (size_t)B * c->pooled_projection_dim;
    float *x = malloc(sizeof(float) * nx), *ctx = malloc(sizeof(float) * nc), *p = malloc(sizeof(float) * np),
          *t = malloc(sizeof(float) * B);
    st_writer *w = st_writer_new();
    int rc = (!x || !ctx || !p || !t || !w) ? ss_fail(SS_ENOMEM, "init: out of memory for inputs") : 0;
    if (!rc) {
        rng_normal_fill(x, nx, seed, 1);
        rng_normal_fill(ctx, nc, seed, 2);
        rng_normal_fill(p, np, seed, 3);
        for (int b = 0; b < B; b++) t[b] = 1000.0f * (b + 0.5f) / B;
        int64_t sx[4] = {B, c->in_channels, Hl, Wl}, sc[3] = {B, S, c->joint_attention_dim}, sp[2] = {B, c->pooled_projection_dim},
                st[1] = {B};
        if ((rc = st_writer_add_f32(w, "hidden_states", ST_F32, 4, sx, x)) == 0 &&
            (rc = st_writer_add_f32(w, "encoder_hidden_states", ST_F32, 3, sc, ctx)) == 0 &&
            (rc = st_writer_add_f32(w, "pooled_projections", ST_F32, 2, sp, p)) == 0 &&
            (rc = st_writer_add_f32(w, "timestep", ST_F32, 1, st, t)) == 0)
            rc = st_writer_save(w, path);
    }
    st_writer_free(w);
    free(x);
    free(ctx);
    free(p);
    free(t);
    return rc;
}

int cmd_init(int argc, char **argv) {
    const char *cfg_path = NULL, *out = NULL, *seed_s = "0", *dtype_s = "f32", *inputs = NULL, *batch_s = NULL,
               *latent_s = NULL, *text_s = NULL;
    cli_opt opts[] = {{"config", &cfg_path, NULL}, {"out", &out, NULL},       {"seed", &seed_s, NULL},
                      {"dtype", &dtype_s, NULL},   {"inputs", &inputs, NULL}, {"batch", &batch_s, NULL},
                      {"latent", &latent_s, NULL}, {"text-len", &text_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!cfg_path || !out) {
        fprintf(stderr, "sinkscope init: --config and --out are required\n%s", USAGE);
        return 2;
    }
    if (!inputs && (latent_s || batch_s || text_s)) {
        fprintf(stderr, "sinkscope init: --batch, --latent and --text-len describe --inputs; give --inputs FILE or drop them\n");
        return 2;
    }
    if (!batch_s) batch_s = "1";
    if (!text_s) text_s = "16";
    long seed;
    if (cli_int("init", "seed", seed_s, 0, 0x7fffffffL, &seed)) return 2;
    int dt = !strcmp(dtype_s, "f32") ? ST_F32 : !strcmp(dtype_s, "bf16") ? ST_BF16 : !strcmp(dtype_s, "f16") ? ST_F16 : -1;
    if (dt < 0) {
        fprintf(stderr, "sinkscope init: --dtype must be f32, bf16 or f16\n");
        return 2;
    }
    long batch, text;
    if (cli_int("init", "batch", batch_s, 1, 64, &batch) || cli_int("init", "text-len", text_s, 1, 4096, &text)) return 2;
    sd3_config c;
    if (sd3_config_load(&c, cfg_path) < 0) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 1;
    }
    long Hl = c.sample_size, Wl = c.sample_size;
    if (latent_s && cli_dims("init", "latent", latent_s, 1, 4096, &Hl, &Wl) < 0) return 2;
    /* neither output may be the config it reads, nor each other */
    char cfg_out[4200], w_out[4200];
    snprintf(cfg_out, sizeof cfg_out, "%s/config.json", out);
    snprintf(w_out, sizeof w_out, "%s/diffusion_pytorch_model.safetensors", out);
    const pc_file in[] = {{"--config", cfg_path}};
    if (pc_check_output("--out", cfg_out, in, 1) || pc_check_output("--out", w_out, in, 1) ||
        (inputs && (pc_check_output("--inputs", inputs, in, 1) || pc_check_outputs_differ("--inputs", inputs, "--out", w_out) ||
                    pc_check_outputs_differ("--inputs", inputs, "--out", cfg_out)))) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 2;
    }
    if (sd3_init_random(&c, out, (uint64_t)seed, dt) < 0 ||
        (inputs && write_inputs(&c, inputs, (int)batch, (int)Hl, (int)Wl, (int)text, (uint64_t)seed) < 0)) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 1;
    }
    return 0;
}
