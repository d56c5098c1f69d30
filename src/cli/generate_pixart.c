/* sinkscope generate on a diffusers PixArtAlphaPipeline folder (cmd_generate hands over when --model
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
#include "cli/generate_pixart.h"
#include "cli/generate_probe.h"
#include "cli/generate_sd3.h"
#include "core/dnnl.h"
#include "core/err.h"
#include "io/fsutil.h"
#include "models/binder.h"
#include "io/pathcheck.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "sample/pipeline.h" /* SINKSCOPE_VERSION */
#include "sample/pixartpipe.h"
#include "sample/sched.h"
#include "sink/abspe.h"
#include "sink/sink.h"

#define MAX_PROMPTS 256

static const char USAGE[] =
    "usage: sinkscope generate --model PIXART_PIPELINE_DIR (--prompt TEXT | --prompts FILE) [--out FILE.png]\n"
    "                          [--negative-prompt TEXT] [--seed N] [--steps N] [--cfg X] [--height N] [--width N]\n"
    "                          [--resolution-binning on|off] [--scheduler default|euler|dpm++]\n"
    "                          [--max-sequence-length N] [--latents FILE] [--save-latents FILE] [--dump FILE]\n"
    "                          [--condition FILE.json] [--threads N] [--probe SITES|all [--spiral FIELDS] [--stats FILE.json]]\n"
    "                          [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers PixArtAlphaPipeline folder (model_index.json, transformer/, vae/, scheduler/,\n"
    "                     text_encoder/ (T5), tokenizer/)\n"
    "  --prompt TEXT      one prompt; or --prompts FILE: one prompt per line, the batch. Prompts are lower-cased and\n"
    "                     stripped (diffusers' _text_preprocessing without bs4/ftfy)\n"
    "  --out FILE.png     image (batch > 1: FILE-0.png, FILE-1.png, ...); parameters in tEXt chunks.\n"
    "                     Optional with --dump or --save-latents\n"
    "  --negative-prompt  the unconditional prompt of classifier-free guidance (default \"\")\n"
    "  --seed N           noise seed (default 0): N(0,1) from Philox stream b of the seed for element b\n"
    "  --steps N          scheduler steps (default 20)\n"
    "  --cfg X            guidance scale, on when > 1 (default 4.5)\n"
    "  --height, --width  pixels (default: transformer sample_size x VAE factor)\n"
    "  --resolution-binning on|off  on (default, as diffusers): run at the closest aspect-ratio bin and resize the\n"
    "                     image back (sample_size 32, 64 or 128); off: run at the requested size\n"
    "  --scheduler NAME   default (the folder's scheduler_config.json), euler or dpm++ (EulerDiscreteScheduler /\n"
    "                     DPMSolverMultistepScheduler .from_config of it)\n"
    "  --max-sequence-length N  T5 tokens (default 120; longer prompts are truncated, as diffusers does)\n"
    "  --latents FILE     start from the tensor 'latents' [B, C, Hb/f, Wb/f] (Hb x Wb: the binned size)\n"
    "  --save-latents FILE  write the initial latents there (tensor 'latents')\n"
    "  --dump FILE        write every intermediate: input_ids, attention_mask, prompt_embeds, prompt_attention_mask,\n"
    "                     negative_*, timesteps, sigmas, latents.init, resolution, aspect_ratio, model_output.{i},\n"
    "                     noise_pred.{i}, latents.{i}, image_raw, image\n"
    "  --condition FILE   one intervention condition object (README, section Conditions; 'attn' self or cross)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the images do not depend on it\n"
    "  --probe SITES      the sink probe at these sites on every step: self.i, cross.i, or 'all'; cross sites'\n"
    "                     text keys carry T5's token types (the unconditional half the negative prompt's)\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields (docs/spiral-measurements.md)\n"
    "  --stats FILE       the probe's JSON (default: OUT with .png replaced by .stats.json)\n"
    "  --precision P      f32 (default) or bf16: the transformer's Linear weights in bf16, products through oneDNN\n"
    "                     (README, bf16 compute); the text encoders and the VAE stay f32\n";

static int add_dump(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape) {
    return st_writer_add_f32(ctx, name, ST_F32, ndim, shape, x);
}

static void progress(void *ctx, int step, int steps) {
    (void)ctx;
    fprintf(stderr, "\rsinkscope generate: step %d/%d", step + 1, steps);
    if (step + 1 == steps) fputc('\n', stderr);
}

int cmd_generate_pixart(int argc, char **argv) {
    const char *prompt = NULL, *prompts_path = NULL, *out = NULL, *neg = NULL, *seed_s = "0", *steps_s = NULL,
               *cfg_s = NULL, *h_s = NULL, *w_s = NULL, *msl_s = NULL, *lat_path = NULL, *save_path = NULL,
               *dump_path = NULL, *cond_path = NULL, *threads_s = NULL, *model = NULL, *probe_s = NULL, *spiral_s = NULL,
               *stats_s = NULL, *bin_s = NULL, *sched_s = NULL, *prec_s = NULL;
    cli_opt opts[] = {{"model", &model, NULL},       {"prompt", &prompt, NULL},
                      {"prompts", &prompts_path, NULL}, {"out", &out, NULL},
                      {"negative-prompt", &neg, NULL}, {"seed", &seed_s, NULL},
                      {"steps", &steps_s, NULL},       {"cfg", &cfg_s, NULL},
                      {"height", &h_s, NULL},          {"width", &w_s, NULL},
                      {"max-sequence-length", &msl_s, NULL}, {"latents", &lat_path, NULL},
                      {"save-latents", &save_path, NULL}, {"dump", &dump_path, NULL},
                      {"condition", &cond_path, NULL}, {"threads", &threads_s, NULL},
                      {"probe", &probe_s, NULL},       {"spiral", &spiral_s, NULL},
                      {"stats", &stats_s, NULL},       {"resolution-binning", &bin_s, NULL},
                      {"scheduler", &sched_s, NULL}, {"precision", &prec_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model || (!prompt == !prompts_path) || (!out && !dump_path && !save_path)) {
        fprintf(stderr, "sinkscope generate: --model, one of --prompt / --prompts, and --out (or --dump / --save-latents) "
                        "are required\n%s", USAGE);
        return 2;
    }
    pixartpipe_params q;
    pixartpipe_params_default(&q);
    long seed, steps = q.steps, hh = 0, ww = 0, msl = q.max_sequence_length, nt;
    double cfg = q.cfg;
    if (cli_int("generate", "seed", seed_s, 0, 0x7fffffffffffffffL, &seed) ||
        (steps_s && cli_int("generate", "steps", steps_s, 1, 10000, &steps)) ||
        (cfg_s && cli_double("generate", "cfg", cfg_s, 0, 1000, &cfg)) ||
        (h_s && cli_int("generate", "height", h_s, 1, 16384, &hh)) || (w_s && cli_int("generate", "width", w_s, 1, 16384, &ww)) ||
        (msl_s && cli_int("generate", "max-sequence-length", msl_s, 1, 4096, &msl)))
        return 2;
    if (bin_s && strcmp(bin_s, "on") && strcmp(bin_s, "off")) {
        fprintf(stderr, "sinkscope generate: --resolution-binning must be on or off, not '%s'\n", bin_s);
        return 2;
    }
    const char *sched_name = sched_s ? sched_s : "default";
    if (strcmp(sched_name, "default") && strcmp(sched_name, "euler") && strcmp(sched_name, "dpm++")) {
        fprintf(stderr, "sinkscope generate: --scheduler must be default, euler or dpm++, not '%s'\n", sched_name);
        return 2;
    }
    gen_probe gp;
    if (gen_probe_parse(&gp, probe_s, spiral_s, stats_s, out) < 0) {
        fprintf(stderr, "sinkscope generate: %s\n", ss_err());
        return 2;
    }
    int tprec = SS_PREC_F32;
    if (prec_s && ss_precision_parse(prec_s, &tprec) < 0) {
        fprintf(stderr, "sinkscope generate: --precision: %s\n", ss_err());
        return 2;
    }
    gp.precision = prec_s;
    gp.scheduler = sched_name;
    if (threads_s) {
        if (cli_int("generate", "threads", threads_s, 1, 4096, &nt)) return 2;
        omp_set_num_threads((int)nt);
    }
    q.seed = (uint64_t)seed, q.steps = (int)steps, q.cfg = cfg, q.height = (int)hh, q.width = (int)ww;
    q.max_sequence_length = (int)msl;
    q.resolution_binning = !bin_s || !strcmp(bin_s, "on");
    q.scheduler = sched_name;
    if (neg) q.negative = neg;

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
    pixartpipe *p = NULL;
    sink_ctx *sk = NULL;
    char *pbuf = NULL, *cond_json = NULL;
    char *plist[MAX_PROMPTS];
    float *img = NULL, *lat = NULL, *ctx = NULL, *mask = NULL;
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
    if ((rc = pixartpipe_load_opts(&p, model, PIXARTPIPE_DEFER_TRANSFORMER)) < 0) goto done;
    int H, W, Hb, Wb;
    if ((rc = pixartpipe_image_size(p, &q, &H, &W, &Hb, &Wb)) < 0) goto done;
    const pixart_config *tc = &p->tcfg;
    const int f = vae_factor(p->vae), C = tc->in_channels, h = Hb / f, w = Wb / f, S = q.max_sequence_length;
    const int N = (h / tc->patch_size) * (w / tc->patch_size);
    const size_t nl = (size_t)B * C * h * w;
    ss_site sites[2 * PIXART_MAX_LAYERS];
    const int ns = pixart_sites(tc, N, S, sites, 2 * PIXART_MAX_LAYERS);
    if (cond_path) {
        for (int i = 0; i < cond.n_layers - cond.n_from_sites; i++)
            if (cond.layers[i] >= tc->num_layers) {
                rc = ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d blocks", cond_path,
                             cond.layers[i], tc->num_layers);
                goto done;
            }
        if ((rc = sink_condition_resolve(&cond, sites, ns, cond_path)) < 0 ||
            (rc = sink_condition_check_sites(&cond, sites, ns, cond_path)) < 0 ||
            (rc = sink_condition_check_pe(&cond, h / tc->patch_size, w / tc->patch_size, "PixArtTransformer2DModel",
                                          cond_path)) < 0)
            goto done;
        if (!(sk = sink_ctx_new())) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto done;
        }
        sink_ctx_set_condition(sk, &cond);
    }
    if (gp.on && (rc = gen_probe_attach(&gp, &sk, sites, ns, model)) < 0) goto done;
    if (!(img = malloc(sizeof(float) * (size_t)B * H * W * 3)) || !(lat = malloc(sizeof(float) * nl)) ||
        !(rgb = malloc((size_t)H * W * 3))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if (lat_path) {
        if ((rc = gen_read_latents(lat_path, B, C, h, w, lat)) < 0) {
            if (Hb != H || Wb != W) ss_err_prefix(rc, "%dx%d runs at the resolution bin %dx%d: ", W, H, Wb, Hb);
            goto done;
        }
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
    const int nt5 = pixartpipe_truncated(p, &q);
    if (nt5 < 0) {
        rc = nt5;
        goto done;
    }
    if (nt5)
        fprintf(stderr, "sinkscope generate: warning: %d prompt(s) truncated to %d T5 tokens (--max-sequence-length), as "
                        "diffusers truncates them\n", nt5, S);
    /* the encoder first, freed before the transformer's weights are loaded */
    const int BB = (q.cfg > 1.0 ? 2 : 1) * B, J = tc->caption_channels ? tc->caption_channels : tc->cross_attention_dim;
    if (!(ctx = malloc(sizeof(float) * (size_t)BB * S * J)) || !(mask = malloc(sizeof(float) * (size_t)BB * S))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = pixartpipe_encode(p, &q, ctx, mask)) < 0) goto done;
    pixartpipe_release_encoders(p);
    ss_bind_set_precision(tprec); /* the transformer's weights only: encoders and VAE stay f32 */
    rc = pixartpipe_load_transformer(p);
    ss_bind_set_precision(SS_PREC_F32);
    if (rc < 0) goto done;
    if ((rc = pixartpipe_denoise(p, &q, ctx, mask, img, lat, sk)) < 0) goto done;
    if (save_path && (rc = gen_save_latents(save_path, B, C, h, w, lat)) < 0) goto done;
    if (dw && (rc = st_writer_save(dw, dump_path)) < 0) goto done;
    if (gp.on) {
        const char *bp[2 * MAX_PROMPTS];
        for (int b = 0; b < BB; b++) bp[b] = BB > B && b < B ? q.negative : plist[b % B];
        if ((rc = gen_probe_save(&gp, sk, model, bp, BB, q.steps, cond_json)) < 0) goto done;
    }
    if (out) {
        char seed_v[32], steps_v[32], cfg_v[48], path[4200];
        snprintf(seed_v, sizeof seed_v, "%lld", (long long)seed);
        snprintf(steps_v, sizeof steps_v, "%d", q.steps);
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(cfg_v, sizeof cfg_v, "%.*g", prec, q.cfg);
            if (strtod(cfg_v, NULL) == q.cfg) break;
        }
        for (int b = 0; b < B && rc >= 0; b++) {
            const float *ib = img + (size_t)b * H * W * 3;
            for (size_t i = 0; i < (size_t)H * W * 3; i++) rgb[i] = (uint8_t)nearbyintf(ib[i] * 255.0f);
            gen_png_name(path, sizeof path, out, b, B);
            const char *kv[20] = {"prompt", plist[b], "seed", seed_v, "steps", steps_v, "cfg", cfg_v, "model", model,
                                  "latents", lat_path ? lat_path : "seeded", "scheduler", sched_name,
                                  "Software", "sinkscope " SINKSCOPE_VERSION};
            int nkv = 8;
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
    free(cond_json), free(pbuf), free(img), free(lat), free(rgb), free(ctx), free(mask);
    sink_ctx_free(sk);
    pixartpipe_free(p);
    return exit_code;
}
