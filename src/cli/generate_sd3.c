/* sinkscope generate on a diffusers StableDiffusion3Pipeline folder (cmd_generate hands over
 * when --model names one). */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
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
#include "sample/sd3pipe.h"
#include "sink/abspe.h"
#include "sink/sink.h"
#include "text/promptx.h"

#define MAX_PROMPTS 256

static const char USAGE[] =
    "usage: sinkscope generate --model SD3_PIPELINE_DIR (--prompt TEXT | --prompts FILE) [--out FILE.png]\n"
    "                          [--negative-prompt TEXT] [--seed N] [--steps N] [--cfg X] [--height N] [--width N]\n"
    "                          [--max-sequence-length N] [--latents FILE] [--save-latents FILE] [--dump FILE]\n"
    "                          [--condition FILE.json] [--pad-prompt N[:STRING]] [--threads N]\n"
    "                          [--probe SITES|all [--spiral FIELDS] [--stats FILE.json]] [--scheduler NAME] [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers StableDiffusion3Pipeline folder (model_index.json, transformer/, vae/,\n"
    "                     scheduler/, text_encoder{,_2,_3}/, tokenizer{,_2,_3}/; the T5 pair may be null)\n"
    "  --prompt TEXT      one prompt; or --prompts FILE: one prompt per line, the batch\n"
    "  --out FILE.png     image (batch > 1: FILE-0.png, FILE-1.png, ...); parameters in tEXt chunks.\n"
    "                     Optional with --dump or --save-latents\n"
    "  --negative-prompt  the unconditional prompt of classifier-free guidance (default \"\")\n"
    "  --seed N           noise seed (default 0): N(0,1) from Philox stream b of the seed for element b\n"
    "  --steps N          FlowMatch Euler steps (default 28)\n"
    "  --cfg X            guidance scale, on when > 1 (default 7)\n"
    "  --height, --width  pixels (default: transformer sample_size x VAE factor); multiples of VAE factor x patch\n"
    "  --max-sequence-length N  T5 tokens (default 256)\n"
    "  --latents FILE     start from the tensor 'latents' [B, C, H/f, W/f] of this safetensors file\n"
    "  --save-latents FILE  write the initial latents there (tensor 'latents')\n"
    "  --dump FILE        write every intermediate: prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,\n"
    "                     negative_pooled_prompt_embeds, timesteps, sigmas, latents.init, model_output.{i},\n"
    "                     noise_pred.{i}, latents.{i}, image_raw, image (as diffusers' pipeline computes them)\n"
    "  --condition FILE   one intervention condition object (README, section Conditions)\n"
    "  --pad-prompt N[:STRING]  comma padding: append N copies of STRING (default \",\") after a space to every\n"
    "                     prompt before tokenization (not the negative prompt; text/promptx.h)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the images do not depend on it\n"
    "  --probe SITES      the sink probe at these sites on every step: joint block indices (0,1) and/or site\n"
    "                     names (joint.0, attn2.1), or 'all'; records (with their step) in the stats JSON.\n"
    "                     Text keys carry the tokenizers' types (CLIP-L's for the 77 CLIP rows, then T5's;\n"
    "                     the unconditional half the negative prompt's). The images do not change\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields (docs/spiral-measurements.md): 'all' or\n"
    "                     any of keyimp,budget,energy,qk,norms,act (budget: attention by key type)\n"
    "  --stats FILE       the probe's JSON (default: OUT with .png replaced by .stats.json)\n"
    "  --precision P      f32 (default) or bf16: the transformer's Linear weights in bf16, products through oneDNN\n"
    "                     (README, bf16 compute); the text encoders and the VAE stay f32\n"
    "  --scheduler NAME   default (the folder's FlowMatch Euler), euler or dpm++ (EulerDiscreteScheduler /\n"
    "                     DPMSolverMultistepScheduler .from_config, as the paper's E2 swaps; recorded in the PNG and stats)\n";

static int add_dump(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape) {
    return st_writer_add_f32(ctx, name, ST_F32, ndim, shape, x);
}

static void progress(void *ctx, int step, int steps) {
    (void)ctx;
    fprintf(stderr, "\rsinkscope generate: step %d/%d", step + 1, steps);
    if (step + 1 == steps) fputc('\n', stderr);
}

int gen_split_lines(char *buf, const char *path, char **out, int max) {
    int n = 0;
    for (char *s = buf; *s;) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        size_t len = strlen(s);
        if (len && s[len - 1] == '\r') s[--len] = 0;
        if (len) {
            if (n == max) return ss_fail(SS_EARG, "%s: more than %d prompts", path, max);
            out[n++] = s;
        }
        if (!e) break;
        s = e + 1;
    }
    if (!n) return ss_fail(SS_EARG, "%s: no prompt in the file", path);
    return n;
}

int gen_read_latents(const char *path, int B, int C, int h, int w, float *dst) {
    st_file *f;
    int rc = st_open(&f, path);
    if (rc < 0) return rc;
    const st_tensor *t = st_find(f, "latents");
    if (!t)
        rc = ss_fail(SS_EMISSING, "%s: tensor 'latents' is missing", path);
    else if (t->ndim != 4 || t->shape[0] != B || t->shape[1] != C || t->shape[2] != h || t->shape[3] != w)
        rc = ss_fail(SS_ESHAPE, "%s: 'latents' must be [%d, %d, %d, %d] for %d prompt(s) at this image size", path, B, C, h, w, B);
    else if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        rc = ss_fail(SS_EFORMAT, "%s: 'latents' is %s, expected a float tensor", path, st_dtype_name(t->dtype));
    else if (st_to_f32(dst, t) < 0)
        rc = SS_EFORMAT;
    st_close(f);
    return rc;
}

int gen_save_latents(const char *path, int B, int C, int h, int w, const float *x) {
    st_writer *sw = st_writer_new();
    const int64_t shp[4] = {B, C, h, w};
    int rc = sw ? st_writer_add_f32(sw, "latents", ST_F32, 4, shp, x) : ss_fail(SS_ENOMEM, "out of memory");
    if (rc >= 0) rc = st_writer_save(sw, path);
    st_writer_free(sw);
    return rc;
}

void gen_png_name(char *buf, size_t cap, const char *out, int b, int B) {
    if (B == 1) {
        snprintf(buf, cap, "%s", out);
        return;
    }
    const size_t n = strlen(out);
    const int ext = n > 4 && !strcasecmp(out + n - 4, ".png");
    snprintf(buf, cap, "%.*s-%d.png", (int)(ext ? n - 4 : n), out, b);
}

int cmd_generate_sd3(int argc, char **argv) {
    const char *prompt = NULL, *prompts_path = NULL, *out = NULL, *neg = NULL, *seed_s = "0", *steps_s = NULL,
               *cfg_s = NULL, *h_s = NULL, *w_s = NULL, *msl_s = NULL, *lat_path = NULL, *save_path = NULL,
               *dump_path = NULL, *cond_path = NULL, *threads_s = NULL, *model = NULL, *pad_s = NULL, *probe_s = NULL,
               *spiral_s = NULL, *stats_s = NULL, *sched_s = NULL, *prec_s = NULL;
    cli_opt opts[] = {{"model", &model, NULL},       {"prompt", &prompt, NULL},
                      {"prompts", &prompts_path, NULL}, {"out", &out, NULL},
                      {"negative-prompt", &neg, NULL}, {"seed", &seed_s, NULL},
                      {"steps", &steps_s, NULL},       {"cfg", &cfg_s, NULL},
                      {"height", &h_s, NULL},          {"width", &w_s, NULL},
                      {"max-sequence-length", &msl_s, NULL}, {"latents", &lat_path, NULL},
                      {"save-latents", &save_path, NULL}, {"dump", &dump_path, NULL},
                      {"condition", &cond_path, NULL}, {"threads", &threads_s, NULL},
                      {"pad-prompt", &pad_s, NULL},    {"probe", &probe_s, NULL},
                      {"spiral", &spiral_s, NULL},     {"stats", &stats_s, NULL},
                      {"scheduler", &sched_s, NULL}, {"precision", &prec_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model || (!prompt == !prompts_path) || (!out && !dump_path && !save_path)) {
        fprintf(stderr, "sinkscope generate: --model, one of --prompt / --prompts, and --out (or --dump / --save-latents) "
                        "are required\n%s", USAGE);
        return 2;
    }
    sd3pipe_params q;
    sd3pipe_params_default(&q);
    long seed, steps = q.steps, hh = 0, ww = 0, msl = q.max_sequence_length, nt;
    double cfg = q.cfg;
    if (cli_int("generate", "seed", seed_s, 0, 0x7fffffffffffffffL, &seed) ||
        (steps_s && cli_int("generate", "steps", steps_s, 1, 10000, &steps)) ||
        (cfg_s && cli_double("generate", "cfg", cfg_s, 0, 1000, &cfg)) ||
        (h_s && cli_int("generate", "height", h_s, 1, 16384, &hh)) || (w_s && cli_int("generate", "width", w_s, 1, 16384, &ww)) ||
        (msl_s && cli_int("generate", "max-sequence-length", msl_s, 1, 4096, &msl)))
        return 2;
    promptx_pad pad = {0};
    if (pad_s && promptx_pad_parse(&pad, pad_s, "--pad-prompt") < 0) {
        fprintf(stderr, "sinkscope generate: %s\n", ss_err());
        return 2;
    }
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
    q.seed = (uint64_t)seed, q.steps = (int)steps, q.cfg = cfg, q.height = (int)hh, q.width = (int)ww;
    q.max_sequence_length = (int)msl;
    q.scheduler = sched_s;
    if (neg) q.negative = neg;

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
    sd3pipe *p = NULL;
    sink_ctx *sk = NULL;
    char *pbuf = NULL, *cond_json = NULL;
    char *plist[MAX_PROMPTS], *padded[MAX_PROMPTS] = {0};
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
    for (int b = 0; pad_s && b < B; b++) {
        if ((rc = promptx_pad_apply(&padded[b], plist[b], &pad)) < 0) goto done;
        plist[b] = padded[b];
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
    if ((rc = sd3pipe_load_opts(&p, model, SD3PIPE_DEFER_TRANSFORMER)) < 0) goto done;
    int H, W;
    if ((rc = sd3pipe_image_size(p, &q, &H, &W)) < 0) goto done;
    const int f = vae_factor(p->vae), C = p->tcfg.in_channels, h = H / f, w = W / f;
    const size_t nl = (size_t)B * C * h * w;
    if (cond_path) {
        const sd3_config *tc = &p->tcfg;
        ss_site sites[2 * SD3_MAX_LAYERS];
        const int S = p->clip_len + (p->enc[2] ? q.max_sequence_length : p->clip_len);
        const int ns = sd3_sites(tc, (h / tc->patch_size) * (w / tc->patch_size), S, sites, 2 * SD3_MAX_LAYERS);
        for (int i = 0; i < cond.n_layers - cond.n_from_sites; i++)
            if (cond.layers[i] >= tc->num_layers) {
                rc = ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d blocks", cond_path,
                             cond.layers[i], tc->num_layers);
                goto done;
            }
        if ((rc = sink_condition_check_sites(&cond, sites, ns, cond_path)) < 0 ||
            (rc = sink_condition_check_pe(&cond, h / tc->patch_size, w / tc->patch_size, "SD3Transformer2DModel", cond_path)) < 0)
            goto done;
        if (!(sk = sink_ctx_new())) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto done;
        }
        sink_ctx_set_condition(sk, &cond);
    }
    if (gp.on) {
        const sd3_config *tc = &p->tcfg;
        ss_site sites[2 * SD3_MAX_LAYERS];
        const int ns = sd3_sites(tc, (h / tc->patch_size) * (w / tc->patch_size), sd3pipe_text_len(p, &q), sites,
                                 2 * SD3_MAX_LAYERS);
        if ((rc = gen_probe_attach(&gp, &sk, sites, ns, model)) < 0) goto done;
    }
    if (!(img = malloc(sizeof(float) * (size_t)B * H * W * 3)) || !(lat = malloc(sizeof(float) * nl)) ||
        !(rgb = malloc((size_t)H * W * 3))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if (lat_path) {
        if ((rc = gen_read_latents(lat_path, B, C, h, w, lat)) < 0) goto done;
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
    const int BB = (q.cfg > 1.0 ? 2 : 1) * B, S = sd3pipe_text_len(p, &q);
    if (!(ctx = malloc(sizeof(float) * (size_t)BB * S * p->tcfg.joint_attention_dim)) ||
        !(pooled = malloc(sizeof(float) * (size_t)BB * p->tcfg.pooled_projection_dim))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sd3pipe_encode(p, &q, ctx, pooled)) < 0) goto done;
    sd3pipe_release_encoders(p);
    ss_bind_set_precision(tprec); /* the transformer's weights only: encoders and VAE stay f32 */
    rc = sd3pipe_load_transformer(p);
    ss_bind_set_precision(SS_PREC_F32);
    if (rc < 0) goto done;
    if ((rc = sd3pipe_denoise(p, &q, ctx, pooled, img, lat, sk)) < 0) goto done;
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
    for (int b = 0; b < MAX_PROMPTS; b++) free(padded[b]);
    sink_ctx_free(sk);
    sd3pipe_free(p);
    return exit_code;
}
