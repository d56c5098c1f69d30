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
#include "models/family.h"
#include "models/flux.h"
#include "models/pixart.h"
#include "models/sd3.h"

static const char USAGE[] =
    "usage: sinkscope init --config CONFIG.json --out DIR [--seed N] [--dtype f32|bf16|f16]\n"
    "                      [--inputs FILE.safetensors [--batch B] [--latent HxW] [--text-len S]]\n"
    "  Writes DIR/config.json and DIR/diffusion_pytorch_model.safetensors with random weights for the\n"
    "  config's _class_name: SD3Transformer2DModel (absent: SD3), FluxTransformer2DModel or\n"
    "  PixArtTransformer2DModel (fan-in scaled uniform; norm gains 1 +- 0.1; SD3's position table is the\n"
    "  2D sin-cos table diffusers builds).\n"
    "  --inputs also writes random forward inputs for that model, named as diffusers' forward arguments\n"
    "  (SD3: hidden_states, encoder_hidden_states, pooled_projections, timestep; FLUX: packed\n"
    "  hidden_states, img_ids, txt_ids, guidance with guidance_embeds, timestep in [0, 1]; PixArt:\n"
    "  encoder_attention_mask, resolution and aspect_ratio with additional conditions), default batch 1,\n"
    "  latent sample_size x sample_size (FLUX: 16x16, even sizes only), 16 text tokens.\n";

/* Tensors of one inputs file, collected and then written (the first error is kept). */
typedef struct {
    st_writer *w;
    int rc;
} inputs_file;

static float *in_alloc(inputs_file *f, size_t n) {
    float *x = f->rc ? NULL : malloc(sizeof(float) * (n ? n : 1));
    if (!x && !f->rc) f->rc = ss_fail(SS_ENOMEM, "init: out of memory for inputs");
    return x;
}

static void in_add(inputs_file *f, const char *name, int ndim, const int64_t *shape, float *x) {
    if (!f->rc && x) f->rc = st_writer_add_f32(f->w, name, ST_F32, ndim, shape, x);
    free(x);
}

static void in_normal(inputs_file *f, const char *name, int ndim, const int64_t *shape, uint64_t seed, uint64_t stream) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *x = in_alloc(f, n);
    if (x) rng_normal_fill(x, n, seed, stream);
    in_add(f, name, ndim, shape, x);
}

/* Timesteps spread over (0, scale). */
static void in_timestep(inputs_file *f, int B, float scale) {
    float *t = in_alloc(f, (size_t)B);
    for (int b = 0; t && b < B; b++) t[b] = scale * (b + 0.5f) / B;
    in_add(f, "timestep", 1, (int64_t[]){B}, t);
}

static int sd3_inputs(const sd3_config *c, inputs_file *f, int B, int Hl, int Wl, int S, uint64_t seed) {
    in_normal(f, "hidden_states", 4, (int64_t[]){B, c->in_channels, Hl, Wl}, seed, 1);
    in_normal(f, "encoder_hidden_states", 3, (int64_t[]){B, S, c->joint_attention_dim}, seed, 2);
    in_normal(f, "pooled_projections", 2, (int64_t[]){B, c->pooled_projection_dim}, seed, 3);
    in_timestep(f, B, 1000.0f);
    return f->rc;
}

/* FLUX: the latent HxW (even: cmd_init checks) packed 2x2 into (H/2)(W/2) tokens of in_channels; ids as FluxPipeline makes
 * them (image: 0, row, col; text: zeros); guidance 3.5 (dev's default). */
static int flux_inputs(const flux_config *c, inputs_file *f, int B, int Hl, int Wl, int S, uint64_t seed) {
    const int N = (Hl / 2) * (Wl / 2), A = c->n_axes;
    in_normal(f, "hidden_states", 3, (int64_t[]){B, N, c->in_channels}, seed, 1);
    in_normal(f, "encoder_hidden_states", 3, (int64_t[]){B, S, c->joint_attention_dim}, seed, 2);
    in_normal(f, "pooled_projections", 2, (int64_t[]){B, c->pooled_projection_dim}, seed, 3);
    in_timestep(f, B, 1.0f);
    float *ids = in_alloc(f, (size_t)N * A);
    for (int i = 0; ids && i < N; i++)
        for (int a = 0; a < A; a++) ids[(size_t)i * A + a] = a == 1 ? (float)(i / (Wl / 2)) : a == 2 ? (float)(i % (Wl / 2)) : 0.0f;
    in_add(f, "img_ids", 2, (int64_t[]){N, A}, ids);
    float *tids = in_alloc(f, (size_t)S * A);
    for (size_t i = 0; tids && i < (size_t)S * A; i++) tids[i] = 0.0f;
    in_add(f, "txt_ids", 2, (int64_t[]){S, A}, tids);
    if (c->guidance_embeds) {
        float *g = in_alloc(f, (size_t)B);
        for (int b = 0; g && b < B; b++) g[b] = 3.5f;
        in_add(f, "guidance", 1, (int64_t[]){B}, g);
    }
    return f->rc;
}

/* PixArt (the latent a multiple of the patch size: cmd_init checks): a text mask whose batch element b masks its last b tokens (at least one kept); the
 * additional conditions at the image's pixel size (latent x 8). */
static int pixart_inputs(const pixart_config *c, inputs_file *f, int B, int Hl, int Wl, int S, uint64_t seed) {
    const int J = c->caption_channels ? c->caption_channels : c->cross_attention_dim ? c->cross_attention_dim
                                                                                     : c->num_heads * c->head_dim;
    in_normal(f, "hidden_states", 4, (int64_t[]){B, c->in_channels, Hl, Wl}, seed, 1);
    in_normal(f, "encoder_hidden_states", 3, (int64_t[]){B, S, J}, seed, 2);
    float *m = in_alloc(f, (size_t)B * S);
    for (int b = 0; m && b < B; b++)
        for (int s = 0; s < S; s++) m[(size_t)b * S + s] = s == 0 || s < S - b ? 1.0f : 0.0f;
    in_add(f, "encoder_attention_mask", 2, (int64_t[]){B, S}, m);
    in_timestep(f, B, 1000.0f);
    if (c->use_additional_conditions) {
        float *r = in_alloc(f, (size_t)B * 2), *ar = in_alloc(f, (size_t)B);
        for (int b = 0; r && ar && b < B; b++) {
            r[2 * b] = 8.0f * Hl;
            r[2 * b + 1] = 8.0f * Wl;
            ar[b] = (float)Hl / (float)Wl;
        }
        in_add(f, "resolution", 2, (int64_t[]){B, 2}, r);
        in_add(f, "aspect_ratio", 2, (int64_t[]){B, 1}, ar);
    }
    return f->rc;
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
    const ss_family *fam;
    if (ss_family_detect_config(cfg_path, &fam) < 0) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 1;
    }
    union {
        sd3_config sd3;
        flux_config flux;
        pixart_config pixart;
    } c;
    const int kind = !strcmp(fam->name, "flux") ? 1 : !strcmp(fam->name, "pixart") ? 2 : 0;
    const int lrc = kind == 1 ? flux_config_load(&c.flux, cfg_path)
                  : kind == 2 ? pixart_config_load(&c.pixart, cfg_path)
                              : sd3_config_load(&c.sd3, cfg_path);
    if (lrc < 0) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 1;
    }
    long Hl = kind == 1 ? 16 : kind == 2 ? c.pixart.sample_size : c.sd3.sample_size, Wl = Hl;
    if (latent_s && cli_dims("init", "latent", latent_s, 1, 4096, &Hl, &Wl) < 0) return 2;
    /* inputs the model could not take are refused before anything is written */
    if (inputs && kind == 1 && (Hl % 2 || Wl % 2)) {
        fprintf(stderr, "sinkscope init: --latent %ldx%ld: FLUX packs 2x2 latent pixels, so both sizes must be even\n", Hl, Wl);
        return 2;
    }
    if (inputs && kind == 2 && (Hl % c.pixart.patch_size || Wl % c.pixart.patch_size)) {
        fprintf(stderr, "sinkscope init: --latent %ldx%ld: sizes must be multiples of the patch size %d\n", Hl, Wl,
                c.pixart.patch_size);
        return 2;
    }
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
    int rc = kind == 1 ? flux_init_random(&c.flux, out, (uint64_t)seed, dt)
           : kind == 2 ? pixart_init_random(&c.pixart, out, (uint64_t)seed, dt)
                       : sd3_init_random(&c.sd3, out, (uint64_t)seed, dt);
    if (!rc && inputs) {
        inputs_file f = {.w = st_writer_new(), .rc = 0};
        if (!f.w) f.rc = ss_fail(SS_ENOMEM, "init: out of memory for inputs");
        const int B = (int)batch, H = (int)Hl, W = (int)Wl, S = (int)text;
        rc = kind == 1 ? flux_inputs(&c.flux, &f, B, H, W, S, (uint64_t)seed)
           : kind == 2 ? pixart_inputs(&c.pixart, &f, B, H, W, S, (uint64_t)seed)
                       : sd3_inputs(&c.sd3, &f, B, H, W, S, (uint64_t)seed);
        if (!rc) rc = st_writer_save(f.w, inputs);
        st_writer_free(f.w);
    }
    if (rc < 0) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 1;
    }
    return 0;
}
