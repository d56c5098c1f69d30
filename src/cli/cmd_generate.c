/* sinkscope generate: text to PNG with a pipeline folder, optionally under a sink intervention. */
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/generate_flux.h"
#include "cli/generate_pixart.h"
#include "cli/generate_sd3.h"
#include "core/err.h"
#include "io/pathcheck.h"
#include "io/png.h"
#include "sample/pipeline.h"
#include "sample/fluxpipe.h"
#include "sample/pipes.h"
#include "sample/pixartpipe.h"
#include "sample/sd3pipe.h"
#include "sink/abspe.h"
#include "sink/sink.h"


static const char USAGE[] =
    "usage: sinkscope generate --prompt TEXT --out FILE.png [--seed N] [--steps N] [--cfg X]\n"
    "                          [--model DIR] [--condition FILE.json] [--threads N] [--precision f32|bf16]\n"
    "                          [--latents FILE.safetensors] [--save-latents FILE.safetensors]\n"
    "\n"
    "  --prompt TEXT      caption; every word must be in the model's tokenizer/vocab.txt\n"
    "  --out FILE         PNG to write; the generation parameters go into tEXt chunks\n"
    "  --seed N           noise seed (default 0): N(0,1) from Philox stream 0 of the seed\n"
    "  --steps N          FlowMatch Euler steps (default 20)\n"
    "  --cfg X            classifier-free guidance scale, on when > 1 (default 4)\n"
    "  --model DIR        pipeline folder (model_index.json, transformer/, text_encoder/, tokenizer/,\n"
    "                     scheduler/); default: " CLI_EMBEDDED_MODEL " next to the executable, else in\n"
    "                     the current directory\n"
    "  --condition FILE   one intervention condition object (schema: README, section Conditions);\n"
    "                     its 'steps' window is in t/T = step / (steps - 1), 0 = noisiest\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the image does not depend on it\n"
    "  --latents FILE     start from the tensor 'latents' [1, 3, H, W] of this file instead of the seeded noise\n"
    "  --save-latents FILE  write the initial sample there (tensor 'latents')\n"
    CLI_PRECISION_HELP
    "\n"
    "A diffusers StableDiffusion3Pipeline, FluxPipeline or PixArtAlphaPipeline folder as --model takes more\n"
    "options:\n"
    "  sinkscope generate --model DIR --help\n";


static void progress(void *ctx, int step, int steps, const float *sample) {
    (void)ctx, (void)sample;
    fprintf(stderr, "\rsinkscope generate: step %d/%d", step + 1, steps);
    if (step + 1 == steps) fputc('\n', stderr);
}

int cmd_generate(int argc, char **argv) {
    /* the pipeline class of --model (sample/pipes.h); a diffusers folder has its own options and sampler */
    static const struct {
        const char *class_name;
        int (*run)(int argc, char **argv);
    } BY_CLASS[] = {{SD3PIPE_CLASS_NAME, cmd_generate_sd3},
                    {FLUXPIPE_CLASS_NAME, cmd_generate_flux},
                    {PIXARTPIPE_CLASS_NAME, cmd_generate_pixart}};
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--model")) {
            const ss_pipe_kind *kind;
            if (ss_pipe_detect(argv[i + 1], &kind) < 0) {
                fprintf(stderr, "sinkscope generate: %s\n", ss_err());
                return 1;
            }
            for (size_t k = 0; k < sizeof BY_CLASS / sizeof BY_CLASS[0]; k++)
                if (!strcmp(kind->class_name, BY_CLASS[k].class_name)) return BY_CLASS[k].run(argc, argv);
            break;
        }
    const char *prompt = NULL, *out_path = NULL, *seed_s = "0", *steps_s = NULL, *cfg_s = NULL, *model_dir = NULL,
               *cond_path = NULL, *threads_s = NULL, *lat_path = NULL, *save_path = NULL, *prec_s = NULL;
    cli_opt opts[] = {{"precision", &prec_s, NULL}, {"prompt", &prompt, NULL}, {"out", &out_path, NULL},         {"seed", &seed_s, NULL},
                      {"steps", &steps_s, NULL}, {"cfg", &cfg_s, NULL},            {"model", &model_dir, NULL},
                      {"condition", &cond_path, NULL}, {"threads", &threads_s, NULL},
                      {"latents", &lat_path, NULL}, {"save-latents", &save_path, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (cli_precision("generate", prec_s)) return 2;
    if (!prompt || !out_path) {
        fprintf(stderr, "sinkscope generate: --prompt and --out are required\n%s", USAGE);
        return 2;
    }
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = prompt;
    long seed, steps = p.steps, nthreads;
    double cfg = p.cfg;
    if (cli_int("generate", "seed", seed_s, 0, 0x7fffffffffffffffL, &seed)) return 2;
    if (steps_s && cli_int("generate", "steps", steps_s, 1, PIPE_MAX_STEPS, &steps)) return 2;
    if (cfg_s && cli_double("generate", "cfg", cfg_s, 0, 1000, &cfg)) return 2;
    if (threads_s) {
        if (cli_int("generate", "threads", threads_s, 1, 4096, &nthreads)) return 2;
        omp_set_num_threads((int)nthreads);
    }
    p.seed = (uint64_t)seed;
    p.steps = (int)steps;
    p.cfg = cfg;
    char embedded[4200];
    if (!model_dir) {
        if (cli_find_embedded_model("generate", embedded, sizeof embedded) < 0) return 1;
        model_dir = embedded;
    }

    /* the PNG may not overwrite the condition file or any file of the model folder */
    const pc_file inputs[] = {{"--condition", cond_path}, {"--latents", lat_path}};
    if (pc_check_output("--out", out_path, inputs, 2) ||
        pc_check_output_tree("--out", out_path, model_dir == embedded ? "the model" : "--model", model_dir,
                             pc_is_model_file) ||
        (save_path && (pc_check_output("--save-latents", save_path, inputs, 2) ||
                       pc_check_output_tree("--save-latents", save_path, "--model", model_dir, pc_is_model_file) ||
                       pc_check_outputs_differ("--out", out_path, "--save-latents", save_path)))) {
        fprintf(stderr, "sinkscope generate: %s\n", ss_err());
        return 2;
    }

    int rc = 0, exit_code = 1;
    pipeline *pp = NULL;
    sink_ctx *sk = NULL;
    uint8_t *rgb = NULL;
    float *lat = NULL;
    char *cond_json = NULL;
    sink_condition cond;
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
    if ((rc = pipe_load(&pp, model_dir)) < 0) goto done;
    if (cond_path) {
        for (int i = 0; i < cond.n_layers - cond.n_from_sites; i++)
            if (cond.layers[i] >= pp->transformer->cfg.num_layers) {
                rc = ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d blocks", cond_path,
                             cond.layers[i], pp->transformer->cfg.num_layers);
                goto done;
            }
        if (!(sk = sink_ctx_new())) {
            rc = SS_ENOMEM;
            goto done;
        }
        sink_ctx_set_condition(sk, &cond);
    }
    int H, W;
    if ((rc = pipe_image_size(pp, &p, &H, &W)) < 0) goto done;
    if (cond_path) {
        const sd3_config *tc = &pp->transformer->cfg;
        ss_site sites[2 * SD3_MAX_LAYERS];
        const int ns = sd3_sites(tc, (H / tc->patch_size) * (W / tc->patch_size), pp->text_encoder->cfg.max_length, sites,
                                 2 * SD3_MAX_LAYERS);
        if ((rc = sink_condition_check_sites(&cond, sites, ns, cond_path)) < 0) goto done;
        /* pe_* positions on this image's patch grid, before any step */
        if ((rc = sink_condition_check_pe(&cond, H / tc->patch_size, W / tc->patch_size, "SD3Transformer2DModel", cond_path)) < 0)
            goto done;
    }
    if (!(rgb = ss_malloc((size_t)3 * H * W))) {
        rc = SS_ENOMEM;
        goto done;
    }
    if (lat_path || save_path) {
        if (!(lat = ss_malloc(sizeof(float) * 3 * H * W))) {
            rc = SS_ENOMEM;
            goto done;
        }
        if (lat_path && (rc = gen_read_latents(lat_path, 1, 3, H, W, lat)) < 0) goto done;
        if (lat_path) p.latents = lat;
        if (save_path) p.latents_out = lat;
    }
    if (isatty(STDERR_FILENO)) p.progress = progress;
    if ((rc = pipe_generate(pp, &p, rgb, sk, NULL)) < 0) goto done;
    if (save_path && (rc = gen_save_latents(save_path, 1, 3, H, W, lat)) < 0) goto done;

    char seed_v[32], steps_v[32], cfg_v[48];
    snprintf(seed_v, sizeof seed_v, "%lld", (long long)seed);
    snprintf(steps_v, sizeof steps_v, "%d", p.steps);
    for (int prec = 1; prec <= 17; prec++) { /* shortest text that reads back as the same double */
        snprintf(cfg_v, sizeof cfg_v, "%.*g", prec, p.cfg);
        if (strtod(cfg_v, NULL) == p.cfg) break;
    }
    const char *kv[] = {"prompt", prompt,   "seed",     seed_v, "steps", steps_v, "cfg", cfg_v, "model", model_dir,
                        "Software", "sinkscope " SINKSCOPE_VERSION, NULL, NULL, NULL, NULL};
    int n_kv = 6; /* then the optional chunks: condition, latents */
    if (cond_json) kv[2 * n_kv] = "condition", kv[2 * n_kv + 1] = cond_json, n_kv++;
    if (lat_path) kv[2 * n_kv] = "latents", kv[2 * n_kv + 1] = lat_path, n_kv++;
    if ((rc = png_write_rgb(out_path, W, H, rgb, kv, n_kv)) < 0) goto done;
    exit_code = 0;
done:
    if (rc < 0) fprintf(stderr, "sinkscope generate: %s\n", ss_err());
    free(cond_json);
    free(rgb);
    free(lat);
    sink_ctx_free(sk);
    pipe_free(pp);
    return exit_code;
}
