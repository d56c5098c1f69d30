/* sinkscope vae: an AutoencoderKL folder on latents (decode) and images (encode). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "nn/ops.h"
#include "io/pathcheck.h"
#include "io/safetensors.h"
#include "vae/vae.h"

static const char USAGE[] =
    "usage: sinkscope vae --model DIR --inputs IN.safetensors --out OUT.safetensors [--stages] [--threads N]\n"
    "\n"
    "  --model DIR       diffusers AutoencoderKL folder: config.json + diffusion_pytorch_model.safetensors\n"
    "                    (F32/F16/BF16)\n"
    "  --inputs FILE     latents [B,latent_channels,h,w] and/or image [B,in_channels,H,W] (values in [-1,1])\n"
    "  --out FILE        from latents: decoded = decode(latents / scaling_factor + shift_factor) (the\n"
    "                    pipelines' decode) and decoded_raw = decode(latents); from image:\n"
    "                    encoded_moments (encoder + quant_conv), encoded_mean, encoded_logvar (clamped to\n"
    "                    [-30, 20]) and encoded_mean_scaled = (mean - shift_factor) * scaling_factor\n"
    "  --stages          also stage.dec.{conv_in,mid_block,up_blocks.i} (the decoded_raw pass) and\n"
    "                    stage.enc.{conv_in,down_blocks.i,mid_block}\n"
    "  --threads N       OpenMP/BLAS threads (default: all cores); the outputs do not depend on it\n";

#define MAX_STAGES 64

typedef struct {
    st_writer *w;
    int B, active, n;
    struct {
        char name[80];
        float *buf; /* [B, C, H, W] */
        int64_t shp[4];
    } st[MAX_STAGES];
} stages;

/* Gathers each stage over the batch: the passes run one image at a time, so stage `name` of
 * element b arrives after every stage of element b - 1. */
static int on_stage(void *ctx, const char *name, int b, const float *x, int C, int H, int W) {
    stages *s = ctx;
    if (!s->active) return 0;
    char full[80];
    snprintf(full, sizeof full, "stage.%s", name);
    int i = 0;
    while (i < s->n && strcmp(s->st[i].name, full)) i++;
    if (i == s->n) {
        if (s->n == MAX_STAGES) return ss_fail(SS_EARG, "too many stages");
        snprintf(s->st[i].name, sizeof s->st[i].name, "%s", full);
        const int64_t shp[4] = {s->B, C, H, W};
        memcpy(s->st[i].shp, shp, sizeof shp);
        if (!(s->st[i].buf = malloc(sizeof(float) * (size_t)C * H * W * s->B))) return ss_fail(SS_ENOMEM, "out of memory");
        s->n++;
    }
    const size_t n = (size_t)C * H * W;
    memcpy(s->st[i].buf + (size_t)b * n, x, sizeof(float) * n);
    return 0;
}

/* Adds the gathered stages to the writer and frees them. */
static int stages_flush(stages *s, int rc) {
    for (int i = 0; i < s->n; i++) {
        if (rc >= 0) rc = st_writer_add_f32(s->w, s->st[i].name, ST_F32, 4, s->st[i].shp, s->st[i].buf);
        free(s->st[i].buf);
    }
    s->n = 0;
    return rc;
}

/* A float tensor of `in` as fp32 [B, C, H, W] with C = want_c (0 if absent). */
static int input4(const st_file *f, const char *path, const char *name, int want_c, float **out, int64_t *shp) {
    *out = NULL;
    const st_tensor *t = st_find(f, name);
    if (!t) return 0;
    if (t->ndim != 4 || t->shape[1] != want_c)
        return ss_fail(SS_ESHAPE, "%s: '%s' must be [B, %d, H, W]", path, name, want_c);
    for (int i = 0; i < 4; i++)
        if (t->shape[i] < 1 || t->shape[i] > 65536) return ss_fail(SS_ESHAPE, "%s: '%s' has a dimension out of range", path, name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        return ss_fail(SS_EFORMAT, "%s: '%s' is %s, expected a float tensor", path, name, st_dtype_name(t->dtype));
    size_t bytes;
    if (ss_mul_size((size_t)t->numel, sizeof(float), &bytes) < 0 || !(*out = malloc(bytes)))
        return ss_fail(SS_ENOMEM, "%s: out of memory for '%s'", path, name);
    memcpy(shp, t->shape, 4 * sizeof *shp);
    if (st_to_f32(*out, t) < 0) return SS_EFORMAT;
    const long long bad = op_first_nonfinite(*out, (size_t)t->numel);
    if (bad >= 0)
        return ss_fail(SS_EFORMAT, "%s: '%s' has a non-finite value (%s) at flat index %lld", path, name,
                       isnan((*out)[bad]) ? "NaN" : "infinity", bad);
    return 0;
}

int cmd_vae(int argc, char **argv) {
    const char *model = NULL, *inputs = NULL, *outp = NULL, *threads_s = NULL;
    int want_stages = 0;
    cli_opt opts[] = {{"model", &model, NULL}, {"inputs", &inputs, NULL}, {"out", &outp, NULL},
                      {"stages", NULL, &want_stages}, {"threads", &threads_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model || !inputs || !outp) {
        fprintf(stderr, "sinkscope vae: --model, --inputs and --out are required\n%s", USAGE);
        return 2;
    }
    if (threads_s) {
        long nt;
        if (cli_int("vae", "threads", threads_s, 1, 4096, &nt)) return 2;
        omp_set_num_threads((int)nt);
    }
    const pc_file ins[] = {{"--inputs", inputs}};
    if (pc_check_output("--out", outp, ins, 1) || pc_check_output_tree("--out", outp, "--model", model, pc_is_model_file)) {
        fprintf(stderr, "sinkscope vae: %s\n", ss_err());
        return 2;
    }
    vae_model *m = NULL;
    st_file *f = NULL;
    stages sg = {0};
    float *lat = NULL, *img = NULL, *out = NULL, *mom = NULL, *mean = NULL, *logvar = NULL, *scaled = NULL;
    int64_t ls[4], is[4];
    int rc = vae_load(&m, model);
    if (rc >= 0) rc = st_open(&f, inputs);
    if (rc >= 0) rc = input4(f, inputs, "latents", m->cfg.latent_channels, &lat, ls);
    if (rc >= 0) rc = input4(f, inputs, "image", m->cfg.in_channels, &img, is);
    if (rc >= 0 && !lat && !img) rc = ss_fail(SS_EMISSING, "%s: neither 'latents' nor 'image' is present", inputs);
    if (rc >= 0 && !(sg.w = st_writer_new())) rc = ss_fail(SS_ENOMEM, "out of memory");
    sg.active = want_stages;
    if (rc >= 0 && lat) {
        const int B = (int)ls[0], h = (int)ls[2], w = (int)ls[3], fct = vae_factor(m);
        const int64_t os[4] = {B, m->cfg.out_channels, (int64_t)h * fct, (int64_t)w * fct};
        const size_t n = (size_t)os[0] * os[1] * os[2] * os[3];
        sg.B = B;
        if (!(out = malloc(sizeof(float) * n))) rc = ss_fail(SS_ENOMEM, "out of memory for the decoded images");
        if (rc >= 0) rc = vae_decode(m, out, lat, B, h, w, on_stage, &sg);
        if (rc >= 0) rc = st_writer_add_f32(sg.w, "decoded_raw", ST_F32, 4, os, out);
        rc = stages_flush(&sg, rc);
        sg.active = 0;
        vae_unscale(m, lat, (size_t)ls[0] * ls[1] * ls[2] * ls[3]);
        if (rc >= 0) rc = vae_decode(m, out, lat, B, h, w, NULL, NULL);
        if (rc >= 0) rc = st_writer_add_f32(sg.w, "decoded", ST_F32, 4, os, out);
    }
    sg.active = want_stages;
    if (rc >= 0 && img) {
        const int B = (int)is[0], H = (int)is[2], W = (int)is[3], L = m->cfg.latent_channels;
        int h, w;
        vae_encoded_size(m, H, W, &h, &w);
        const int64_t ms[4] = {B, 2 * L, h, w}, hs[4] = {B, L, h, w};
        const size_t n = (size_t)B * L * h * w;
        sg.B = B;
        if (h < 1 || w < 1) rc = ss_fail(SS_ESHAPE, "%s: 'image' %dx%d is too small for this VAE", inputs, H, W);
        if (rc >= 0 && (!(mom = malloc(sizeof(float) * 2 * n)) || !(mean = malloc(sizeof(float) * n)) ||
                        !(logvar = malloc(sizeof(float) * n)) || !(scaled = malloc(sizeof(float) * n))))
            rc = ss_fail(SS_ENOMEM, "out of memory for the moments");
        if (rc >= 0) rc = vae_encode(m, mom, img, B, H, W, on_stage, &sg);
        if (rc >= 0) {
            vae_moments_split(m, mom, B, h, w, mean, logvar, scaled);
            if ((rc = st_writer_add_f32(sg.w, "encoded_moments", ST_F32, 4, ms, mom)) >= 0 &&
                (rc = st_writer_add_f32(sg.w, "encoded_mean", ST_F32, 4, hs, mean)) >= 0 &&
                (rc = st_writer_add_f32(sg.w, "encoded_logvar", ST_F32, 4, hs, logvar)) >= 0)
                rc = st_writer_add_f32(sg.w, "encoded_mean_scaled", ST_F32, 4, hs, scaled);
        }
        rc = stages_flush(&sg, rc);
    }
    if (rc >= 0) rc = st_writer_save(sg.w, outp);
    if (rc < 0) fprintf(stderr, "sinkscope vae: %s\n", ss_err());
    st_writer_free(sg.w);
    stages_flush(&sg, -1);
    free(lat), free(img), free(out), free(mom), free(mean), free(logvar), free(scaled);
    if (f) st_close(f);
    vae_free(m);
    return rc < 0 ? 1 : 0;
}
