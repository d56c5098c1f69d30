/* sinkscope generate on a diffusers FluxPipeline folder (cmd_generate hands over when --model
 * names one). */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/generate_flux.h"
#include "cli/generate_probe.h"
#include "cli/generate_sd3.h"
#include "core/dnnl.h"
#include "core/err.h"
#include "io/fsutil.h"
#include "models/binder.h"
#include "io/pathcheck.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "sample/fluxpipe.h"
#include "sample/pipeline.h" /* SINKSCOPE_VERSION */
#include "sink/abspe.h"
#include "sink/sink.h"

#define MAX_PROMPTS 256

static const char USAGE[] =
    "usage: sinkscope generate --model FLUX_PIPELINE_DIR (--prompt TEXT | --prompts FILE) [--out FILE.png]\n"
    "                          [--seed N] [--steps N] [--guidance X] [--height N] [--width N]\n"
    "                          [--max-sequence-length N] [--latents FILE] [--save-latents FILE] [--dump FILE]\n"
    "                          [--condition FILE.json] [--threads N]\n"
    "                          [--probe SITES|all [--spiral FIELDS] [--stats FILE.json]] [--scheduler NAME] [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers FluxPipeline folder (model_index.json, transformer/, vae/, scheduler/,\n"
    "                     text_encoder{,_2}/, tokenizer{,_2}/): FLUX.1-dev or FLUX.1-schnell\n"
    "  --prompt TEXT      one prompt; or --prompts FILE: one prompt per line, the batch\n"
    "  --out FILE.png     image (batch > 1: FILE-0.png, FILE-1.png, ...); parameters in tEXt chunks.\n"
    "                     Optional with --dump or --save-latents\n"
    "  --seed N           noise seed (default 0): N(0,1) [C, H/f, W/f] from Philox stream b of the seed for element b\n"
    "  --steps N          FlowMatch Euler steps (default 28; schnell is distilled for 4)\n"
    "  --guidance X       the distilled guidance scale of FLUX.1-dev (default 3.5); a transformer without\n"
    "                     guidance_embeds (schnell) ignores it. There is no classifier-free guidance\n"
    "  --height, --width  pixels (default 128 x VAE factor); multiples of 2 x VAE factor\n"
    "  --max-sequence-length N  T5 tokens (default 512, at most 512)\n"
    "  --latents FILE     start from the tensor 'latents' of this safetensors file: [B, C, H/f, W/f], or packed\n"
    "                     [B, N, 4C] as diffusers' FluxPipeline takes them\n"
    "  --save-latents FILE  write the initial latents there (tensor 'latents', unpacked)\n"
    "  --dump FILE        write every intermediate: prompt_embeds, pooled_prompt_embeds, text_ids, latent_image_ids,\n"
    "                     guidance (dev), timesteps, sigmas, latents.init, model_output.{i}, latents.{i} (packed\n"
    "                     [B, N, 4C]), image_raw, image (as diffusers' FluxPipeline computes them)\n"
    "  --condition FILE   one intervention condition object (README, section Conditions): 'layers' names the\n"
    "                     double blocks, 'single_layers' the single blocks; no pe_* fields (FLUX has RoPE)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the images do not depend on it\n"
    "  --probe SITES      the sink probe at these sites on every step: double.i / single.j names, or 'all';\n"
    "                     records (with their step) in the stats JSON. Text keys carry the T5 tokenizer's\n"
    "                     types (word, comma, eos, pad, ...). The images do not change\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields (docs/spiral-measurements.md): 'all' or\n"
    "                     any of keyimp,budget,energy,qk,norms,act (budget: attention by key type)\n"
    "  --stats FILE       the probe's JSON (default: OUT with .png replaced by .stats.json)\n"
    "  --precision P      f32 (default) or bf16: the transformer's Linear weights in bf16, products through oneDNN\n"
    "                     (README, bf16 compute); the text encoders and the VAE stay f32\n"
    "  --scheduler NAME   default (FlowMatch Euler) only: euler and dpm++ are refused, as diffusers' FluxPipeline\n"
    "                     cannot run them (custom sigmas and mu)\n";

static int add_dump(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape) {
    return st_writer_add_f32(ctx, name, ST_F32, ndim, shape, x);
}

static void progress(void *ctx, int step, int steps) {
    (void)ctx;
    fprintf(stderr, "\rsinkscope generate: step %d/%d", step + 1, steps);
    if (step + 1 == steps) fputc('\n', stderr);
}

/* 'latents' as [B, C, h, w], or packed [B, N, 4C] as diffusers' FluxPipeline takes them (unpacked
 * into dst). */
static int read_latents(const char *path, int B, int C, int h, int w, float *dst) {
    st_file *f;
    int rc = st_open(&f, path);
    if (rc < 0) return rc;
    const st_tensor *t = st_find(f, "latents");
    const int N = (h / 2) * (w / 2);
    if (t && t->ndim == 3) {
        float *tmp = NULL;
        if (t->shape[0] != B || t->shape[1] != N || t->shape[2] != 4 * C)
            rc = ss_fail(SS_ESHAPE, "%s: packed 'latents' must be [%d, %d, %d] for %d prompt(s) at this image size (or "
                         "unpacked [%d, %d, %d, %d])", path, B, N, 4 * C, B, B, C, h, w);
        else if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
            rc = ss_fail(SS_EFORMAT, "%s: 'latents' is %s, expected a float tensor", path, st_dtype_name(t->dtype));
        else if (!(tmp = malloc(sizeof(float) * (size_t)B * N * 4 * C)))
            rc = ss_fail(SS_ENOMEM, "out of memory");
        else if (st_to_f32(tmp, t) < 0)
            rc = SS_EFORMAT;
        else
            fluxpipe_unpack(dst, tmp, B, C, h, w);
        free(tmp);
        st_close(f);
        return rc;
    }
    st_close(f);
    return gen_read_latents(path, B, C, h, w, dst);
}

int cmd_generate_flux(int argc, char **argv) {
    const char *prompt = NULL, *prompts_path = NULL, *out = NULL, *seed_s = "0", *steps_s = NULL, *g_s = NULL,
               *h_s = NULL, *w_s = NULL, *msl_s = NULL, *lat_path = NULL, *save_path = NULL, *dump_path = NULL,
               *cond_path = NULL, *threads_s = NULL, *model = NULL, *probe_s = NULL, *spiral_s = NULL, *stats_s = NULL, *sched_s = NULL, *prec_s = NULL;
    cli_opt opts[] = {{"model", &model, NULL},        {"prompt", &prompt, NULL},
                      {"prompts", &prompts_path, NULL}, {"out", &out, NULL},
                      {"seed", &seed_s, NULL},        {"steps", &steps_s, NULL},
                      {"guidance", &g_s, NULL},       {"height", &h_s, NULL},
                      {"width", &w_s, NULL},          {"max-sequence-length", &msl_s, NULL},
                      {"latents", &lat_path, NULL},   {"save-latents", &save_path, NULL},
                      {"dump", &dump_path, NULL},     {"condition", &cond_path, NULL},
                      {"threads", &threads_s, NULL},  {"probe", &probe_s, NULL},
                      {"spiral", &spiral_s, NULL},    {"stats", &stats_s, NULL},
                      {"scheduler", &sched_s, NULL}, {"precision", &prec_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model || (!prompt == !prompts_path) || (!out && !dump_path && !save_path)) {
        fprintf(stderr, "sinkscope generate: --model, one of --prompt / --prompts, and --out (or --dump / --save-latents) "
                        "are required\n%s", USAGE);
        return 2;
    }
    fluxpipe_params q;
    fluxpipe_params_default(&q);
    long seed, steps = q.steps, hh = 0, ww = 0, msl = q.max_sequence_length, nt;
    double guidance = q.guidance;
    if (cli_int("generate", "seed", seed_s, 0, 0x7fffffffffffffffL, &seed) ||
        (steps_s && cli_int("generate", "steps", steps_s, 1, 10000, &steps)) ||
        (g_s && cli_double("generate", "guidance", g_s, -1000, 1000, &guidance)) ||
        (h_s && cli_int("generate", "height", h_s, 1, 16384, &hh)) || (w_s && cli_int("generate", "width", w_s, 1, 16384, &ww)) ||
        (msl_s && cli_int("generate", "max-sequence-length", msl_s, 1, 512, &msl)))
        return 2;
    gen_probe gp;
    if (gen_probe_parse(&gp, probe_s, spiral_s, stats_s, out) < 0) {
        fprintf(stderr, "sinkscope generate: %s\n", ss_err());
        return 2;
    }
    if (sched_s && strcmp(sched_s, "default") && strcmp(sched_s, "euler") && strcmp(sched_s, "dpm++")) {
        fprintf(stderr, "sinkscope generate: --scheduler must be default, euler or dpm++, not '%s'\n", sched_s);
        return 2;
    }
    int tprec = SS_PREC_F32;
    if (prec_s && ss_precision_parse(prec_s, &tprec) < 0) {
        fprintf(stderr, "sinkscope generate: --precision: %s\n", ss_err());
        return 2;
    }
    gp.precision = prec_s;
    gp.scheduler = sched_s; /* recorded only when given: runs without it write what they wrote before */
    if (threads_s) {
        if (cli_int("generate", "threads", threads_s, 1, 4096, &nt)) return 2;
        omp_set_num_threads((int)nt);
    }
    q.seed = (uint64_t)seed, q.steps = (int)steps, q.guidance = guidance, q.height = (int)hh, q.width = (int)ww;
    q.max_sequence_length = (int)msl;
    q.scheduler = sched_s;

    /* no output over an input, nor two outputs on one file */
    const pc_file ins[] = {{"--condition", cond_path}, {"--latents", lat_path}, {"--prompts", prompts_path}};
    const char *outs[4][2] = {{"--out", out}, {"--save-latents", save_path}, {"--dump", dump_path},
                              {gp.stats == gp.def ? "--stats (default)" : "--stats", gp.stats}};
    for (int i = 0; i < 4; i++) {
        if (!outs[i][1]) continue;
        if (pc_check_output(outs[i][0], outs[i][1], ins, 3) ||
            pc_check_output_tree(outs[i][0], outs[i][1], "--model", model, pc_is_model_file)) {
            fprintf(stderr, "sinkscope generate: %s\n", ss_err());
            return 2;
        }
        for (int j = 0; j < i; j++)
            if (outs[j][1] && pc_check_outputs_differ(outs[j][0], outs[j][1], outs[i][0], outs[i][1])) {
                fprintf(stderr, "sinkscope generate: %s\n", ss_err());
                return 2;
            }
    }

    int rc = 0, exit_code = 1;
    fluxpipe *p = NULL;
    sink_ctx *sk = NULL;
    char *pbuf = NULL, *cond_json = NULL;
    char *plist[MAX_PROMPTS];
    float *img = NULL, *lat = NULL, *ctx = NULL, *pooled = NULL;
    uint8_t *rgb = NULL;
    st_writer *dw = NULL;
    sink_condition cond;
    int B = 1;
    if (prompts_path) {
        size_t len;
        if ((rc = ss_read_file(prompts_path, (size_t)1 << 24, "prompts", &pbuf, &len)) < 0) goto done;
        if ((rc = gen_split_lines(pbuf, prompts_path, plist, MAX_PROMPTS)) < 0) goto done;
        B = rc;
        rc = 0;
    } else {
        plist[0] = (char *)prompt;
    }
    q.prompts = (const char *const *)plist;
    q.n_prompts = B;
    if (cond_path) {
        if ((rc = sink_condition_load(&cond, cond_path)) < 0) goto done;
        json_t *cj = sink_condition_to_json(&cond);
        cond_json = json_dumps(cj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        json_decref(cj);
        if (!cond_json) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto done;
        }
    }
    if ((rc = fluxpipe_load_opts(&p, model, FLUXPIPE_DEFER_TRANSFORMER)) < 0) goto done;
    int H, W, h, w, N, C;
    if ((rc = fluxpipe_image_size(p, &q, &H, &W)) < 0) goto done;
    fluxpipe_latent_shape(p, H, W, &h, &w, &N, &C);
    const size_t nl = (size_t)B * C * h * w;
    const int T = q.max_sequence_length;
    if (cond_path) {
        /* 'layers' names the double blocks, 'single_layers' the single blocks */
        const flux_config *tc = &p->tcfg;
        ss_site sites[2 * FLUX_MAX_LAYERS];
        const int ns = flux_sites(tc, N, T, sites, 2 * FLUX_MAX_LAYERS);
        for (int i = 0; i < cond.n_layers - cond.n_from_sites; i++) /* before resolve binds them to sites */
            if (cond.layers[i] >= tc->num_layers) {
                rc = ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d double blocks", cond_path,
                             cond.layers[i], tc->num_layers);
                goto done;
            }
        if ((rc = sink_condition_resolve(&cond, sites, ns, cond_path)) < 0) goto done;
        if ((rc = sink_condition_check_sites(&cond, sites, ns, cond_path)) < 0) goto done;
        /* FLUX has RoPE: no absolute position embedding for pe_* fields to edit */
        if ((rc = sink_condition_check_pe(&cond, 0, 0, "FluxTransformer2DModel", cond_path)) < 0) goto done;
        if (!(sk = sink_ctx_new())) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto done;
        }
        sink_ctx_set_condition(sk, &cond);
    }
    if (gp.on) {
        ss_site sites[2 * FLUX_MAX_LAYERS];
        const int ns = flux_sites(&p->tcfg, N, T, sites, 2 * FLUX_MAX_LAYERS);
        if ((rc = gen_probe_attach(&gp, &sk, sites, ns, model)) < 0) goto done;
    }
    if (!(img = malloc(sizeof(float) * (size_t)B * H * W * 3)) || !(lat = malloc(sizeof(float) * nl)) ||
        !(rgb = malloc((size_t)H * W * 3))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if (lat_path) {
        if ((rc = read_latents(lat_path, B, C, h, w, lat)) < 0) goto done;
        q.latents = lat;
    }
    if (dump_path) {
        if (!(dw = st_writer_new())) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto done;
        }
        q.dump = add_dump, q.dump_ctx = dw;
    }
    if (isatty(STDERR_FILENO)) q.progress = progress;
    /* the encoders first, freed before the transformer's weights are loaded */
    if (!(ctx = malloc(sizeof(float) * (size_t)B * T * p->tcfg.joint_attention_dim)) ||
        !(pooled = malloc(sizeof(float) * (size_t)B * p->tcfg.pooled_projection_dim))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = fluxpipe_encode(p, &q, ctx, pooled)) < 0) goto done;
    fluxpipe_release_encoders(p);
    ss_bind_set_precision(tprec); /* the transformer's weights only: encoders and VAE stay f32 */
    rc = fluxpipe_load_transformer(p);
    ss_bind_set_precision(SS_PREC_F32);
    if (rc < 0) goto done;
    if ((rc = fluxpipe_denoise(p, &q, ctx, pooled, img, lat, sk)) < 0) goto done;
    if (save_path && (rc = gen_save_latents(save_path, B, C, h, w, lat)) < 0) goto done;
    if (dw && (rc = st_writer_save(dw, dump_path)) < 0) goto done;
    if (gp.on && (rc = gen_probe_save(&gp, sk, model, (const char *const *)plist, B, q.steps, cond_json)) < 0) goto done;
    if (out) {
        char seed_v[32], steps_v[32], g_v[48], path[4200];
        snprintf(seed_v, sizeof seed_v, "%lld", (long long)seed);
        snprintf(steps_v, sizeof steps_v, "%d", q.steps);
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(g_v, sizeof g_v, "%.*g", prec, q.guidance);
            if (strtod(g_v, NULL) == q.guidance) break;
        }
        for (int b = 0; b < B && rc >= 0; b++) {
            const float *ib = img + (size_t)b * H * W * 3;
            for (size_t i = 0; i < (size_t)H * W * 3; i++) rgb[i] = (uint8_t)nearbyintf(ib[i] * 255.0f);
            gen_png_name(path, sizeof path, out, b, B);
            const char *kv[20] = {"prompt", plist[b], "seed", seed_v, "steps", steps_v,
                                  "guidance", p->tcfg.guidance_embeds ? g_v : "none", "model", model,
                                  "latents", lat_path ? lat_path : "seeded", "Software", "sinkscope " SINKSCOPE_VERSION};
            int nkv = 7;
            if (sched_s) kv[2 * nkv] = "scheduler", kv[2 * nkv + 1] = sched_s, nkv++;
            if (prec_s) kv[2 * nkv] = "precision", kv[2 * nkv + 1] = prec_s, nkv++;
            if (cond_json) kv[2 * nkv] = "condition", kv[2 * nkv + 1] = cond_json, nkv++;
            rc = png_write_rgb(path, W, H, rgb, kv, nkv);
        }
        if (rc < 0) goto done;
    }
    exit_code = 0;
done:
    if (rc < 0) fprintf(stderr, "sinkscope generate: %s\n", ss_err());
    st_writer_free(dw);
    free(cond_json), free(pbuf), free(img), free(lat), free(rgb), free(ctx), free(pooled);
    sink_ctx_free(sk);
    fluxpipe_free(p);
    return exit_code;
}
