/* sinkscope run: the experiment runner (src/exp/runner.h). With no arguments it runs the paper's
 * core protocol on the embedded model and then hands over to the report. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/generate_probe.h"
#include "nn/dnnl.h"
#include "core/err.h"
#include "eval/shapeworld.h"
#include "exp/protocol.h"
#include "exp/records.h"
#include "exp/report_hook.h"
#include "exp/runner.h"
#include "io/pathcheck.h"
#include "metric/fidmode.h"
#include "sample/pipeline.h"
#include "sample/pipes.h"
#include "sink/spiral.h"

#define EVAL_PROMPTS "data/shapeworld_eval.jsonl"
_Static_assert(EXP_MAX_PROBE <= RUN_MAX_PROBE, "a preset's probe.sites must fit run_config.probe_blocks");
#define DEFAULT_EXP "exp/main"
#define MAIN_JOB_STRIDE 3

static const char USAGE[] =
    "usage: sinkscope run [--exp DIR] [--model DIR] [--prompts FILE] [--conditions FILE.json | --preset NAME]\n"
    "                     [--seeds N] [--base-seed N] [--steps N] [--cfg X] [--width N --height N]\n"
    "                     [--negative-prompt TEXT] [--max-sequence-length N] [--probe BLOCKS|all] [--spiral FIELDS]\n"
    "                     [--limit-prompts N] [--metrics LIST --metric-weights DIR] [--fid-mode MODE]\n"
    "                     [--precision f32|bf16] [--threads N] [--jobs N] [--quiet]\n"
    "\n"
    "Generates seed-paired images for the baseline and every condition over a prompt set, with\n"
    "metrics, probe statistics and intervention checks, into an experiment folder\n"
    "(docs/experiment-format.md). Re-running the same command resumes; a different configuration\n"
    "for an existing folder is refused. With no arguments (or only --threads, --jobs, --quiet), the\n"
    "main job: the core protocol (baseline, A1, A2, A3, random controls for A1 and A3, union top-k\n"
    "sink vs random at k = 1 and 5) on the embedded model and " EVAL_PROMPTS ",\n"
    "into " DEFAULT_EXP ", then the report.\n"
    "\n"
    "  --exp DIR           experiment folder (default " DEFAULT_EXP ")\n"
    "  --model DIR         pipeline folder: the ShapeWorld model, or a diffusers StableDiffusion3Pipeline,\n"
    "                      FluxPipeline or PixArtAlphaPipeline folder (images through its VAE); default\n"
    "                      " CLI_EMBEDDED_MODEL " next to the executable, else in the current directory\n"
    "  --prompts FILE      GenEval-schema JSONL (scored by the ShapeWorld detector), or plain text with one\n"
    "                      prompt per line (no detector score); default " EVAL_PROMPTS "\n"
    "  --conditions FILE   a JSON list of condition objects (README, section Conditions), or a preset object\n"
    "                      {\"probe\": {...}, \"conditions\": [...]} (README, the preset table)\n"
    "  --preset NAME       configs/presets/NAME.json: core, dose_score, value_sweep, phases, text_vs_image,\n"
    "                      k_sweep, noop, baseline (only the baseline: model quality and sink dynamics),\n"
    "                      spiral_dynamics, comma_padding, pe_corner (docs/spiral-measurements.md)\n"
    "                      (block indices for a 6-block model; checked against the model)\n"
    "                      without either: the core protocol, blocks chosen from the model's depth\n"
    "                      (early = L/4, middle = L/2, late = 3L/4, rounded down)\n"
    "  --seeds N           seeds per prompt (default 1); seed = base + prompt_index * N + r, r < N\n"
    "  --base-seed N       (default 0); every seed must fit in 64 bits (at most 2^64 - 1)\n"
    "  --steps N           sampling steps (default 20; SD3 and FLUX folders 28)\n"
    "  --cfg X             classifier-free guidance scale (default 4; SD3 folders 7); FLUX folders: the\n"
    "                      distilled guidance (default 3.5)\n"
    "  --width, --height N image size in pixels (default: the folder's)\n"
    "  --negative-prompt TEXT  the unconditional prompt of classifier-free guidance (SD3 and PixArt folders;\n"
    "                      default \"\"), as generate takes it; recorded in experiment.json\n"
    "  --max-sequence-length N  T5 tokens (SD3, FLUX and PixArt folders; default 256, 512, 120), as generate\n"
    "                      takes it (experiment.json's text_tokens follows it)\n"
    "  --probe BLOCKS      blocks whose attention statistics are recorded: comma-separated indices (the\n"
    "                      blocks 'layers' names: SD3 joint.i, FLUX double.i) and/or site names (attn2.0,\n"
    "                      single.3), 'all' (every attention site) or 'none'; default the preset's\n"
    "                      probe.sites, else the early, middle and late blocks\n"
    "  --spiral FIELDS     also the \"why sinks form\" fields at every probed site and step, in the records'\n"
    "                      \"spiral\" arrays: all, or a comma-separated subset of keyimp, budget, energy,\n"
    "                      qk, norms, act; default the preset's probe.spiral, else none\n"
    "  --prompt-stride N   only every N-th prompt (0, N, 2N, ...), keeping their indices and seeds;\n"
    "                      in the main job, 3 (72 of the 216 evaluation prompts, 12 per tag)\n"
    "  --limit-prompts N   only the first N prompts (after the stride)\n"
    "  --metrics LIST      learned metrics added to the records, comma-separated: clip_t (CLIP-T, image vs\n"
    "                      its prompt), lpips (LPIPS alex v0.1 vs the paired baseline), fid (each image's\n"
    "                      Inception pool3 features, for the report's FID_shift); needs --metric-weights\n"
    "  --metric-weights DIR  their weights: DIR/clip/ (transformers CLIP folder with vocab.json and\n"
    "                      merges.txt), DIR/lpips/alexnet.pth and DIR/lpips/alex.pth,\n"
    "                      DIR/inception/pt_inception-2015-12-05*.pth (pytorch-fid's FID Inception)\n"
    "  --fid-mode MODE     pytorch-fid (default: in-network bilinear resize) or clean-fid (float bicubic\n"
    "                      resize, the paper's FID_shift); recorded in experiment.json\n"
    "  --precision P       f32 (default) or bf16: Linear weights stored in bf16, products through oneDNN\n"
    "                      (fp32 softmax, probe and sampler); recorded in experiment.json when not f32\n"
    "  --threads N         threads in all (default: all cores); results do not depend on it\n"
    "  --jobs N            images made at once, sharing the threads (default: one image per thread, best\n"
    "                      for small models; use 1 for a large model to put every thread on one image)\n"
    "  --quiet             no progress bar, only the summary line\n";


/* The evaluation set: the repository's file, or the same set (sw_write_eval_jsonl) written into
 * the experiment folder when the file is not installed. */
/* No file the run writes into EXP may be one of its inputs (a prompt or condition file, or a
 * file of the model folder), through any spelling, symlink or hard link. */
static int check_outputs(const char *exp_dir, const char *model_dir, const char *prompts, const char *cond_path) {
    static const char *const OUT[] = {"experiment.json", "records.jsonl", "shapeworld_eval.jsonl", ".lock"};
    const pc_file in[] = {{"--prompts", prompts}, {"--conditions", cond_path}};
    for (size_t i = 0; i < sizeof OUT / sizeof OUT[0]; i++) {
        char path[4400];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", exp_dir, OUT[i]) >= sizeof path)
            return ss_fail(SS_EARG, "%s: path too long", exp_dir);
        int rc = pc_check_output("--exp", path, in, 2);
        if (!rc) rc = pc_check_output_tree("--exp", path, "--model", model_dir, pc_is_model_file);
        if (rc) return rc;
    }
    return 0;
}

static int default_prompts(const char *exp_dir, char *out, size_t size) {
    if (cli_find_resource(EVAL_PROMPTS, out, size) == 0) return 0;
    int rc;
    if ((size_t)snprintf(out, size, "%s/shapeworld_eval.jsonl", exp_dir) >= size)
        return ss_fail(SS_EARG, "%s: path too long", exp_dir);
    if (access(out, F_OK) == 0) return 0;
    if ((rc = ss_mkdir_p(exp_dir)) < 0) return rc;
    if ((rc = sw_write_eval_jsonl(out)) < 0) return rc; /* the one atomic writer (io/fsutil.h) */
    fprintf(stderr, "sinkscope run: " EVAL_PROMPTS " not found; wrote the same evaluation set to %s\n", out);
    return 0;
}

/* A decimal uint64: digits only (strtoull would take "-1" as 2^64 - 1, and "+", " " or "0x"). */
static int parse_u64(const char *s, uint64_t *out) {
    if (!*s || strlen(s) > 20) return -1;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return -1;
        x = 10 * x + (uint64_t)(*s - '0');
    }
    *out = x;
    return 0;
}

static int valid_preset_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-')) return 0;
    return 1;
}

/* "--probe 3,attn2.0,single.1": block numbers and site names into run_config.probe_blocks, with
 * generate's parser (a block number is code = block, which the runner reads as the pipeline's
 * block; stats_s is only there to satisfy its output check). */
static int parse_probe_sites(const char *s, int *dst, int *n) {
    gen_probe gp;
    if (gen_probe_parse(&gp, s, NULL, "-", NULL) < 0) return -1;
    if (gp.all) return ss_fail(SS_EARG, "--probe: 'all' stands alone (every attention site)");
    if (gp.n > RUN_MAX_PROBE) return ss_fail(SS_EARG, "--probe: more than %d sites", RUN_MAX_PROBE);
    memcpy(dst, gp.codes, sizeof *dst * (size_t)gp.n);
    *n = gp.n;
    return 0;
}

int cmd_run(int argc, char **argv) {
    static const char default_exp[] = DEFAULT_EXP;
    const char *exp_dir = default_exp, *model_dir = NULL, *prompts = NULL, *cond_path = NULL, *preset = NULL,
               *seeds_s = NULL, *base_s = NULL, *steps_s = NULL, *cfg_s = NULL, *probe_s = NULL, *limit_s = NULL,
               *threads_s = NULL, *jobs_s = NULL, *stride_s = NULL, *metrics_s = NULL, *weights_s = NULL,
               *fid_mode_s = NULL, *prec_s = NULL, *spiral_s = NULL, *width_s = NULL, *height_s = NULL, *neg_s = NULL,
               *msl_s = NULL;
    int quiet = 0;
    cli_opt opts[] = {{"exp", &exp_dir, NULL},         {"model", &model_dir, NULL},   {"prompts", &prompts, NULL},
                      {"conditions", &cond_path, NULL}, {"preset", &preset, NULL},     {"seeds", &seeds_s, NULL},
                      {"base-seed", &base_s, NULL},     {"steps", &steps_s, NULL},     {"cfg", &cfg_s, NULL},
                      {"probe", &probe_s, NULL},        {"limit-prompts", &limit_s, NULL}, {"threads", &threads_s, NULL},
                      {"jobs", &jobs_s, NULL},          {"quiet", NULL, &quiet},       {"prompt-stride", &stride_s, NULL},
                      {"metrics", &metrics_s, NULL},    {"metric-weights", &weights_s, NULL},
                      {"fid-mode", &fid_mode_s, NULL},  {"precision", &prec_s, NULL},  {"spiral", &spiral_s, NULL},
                      {"width", &width_s, NULL},        {"height", &height_s, NULL},
                      {"negative-prompt", &neg_s, NULL}, {"max-sequence-length", &msl_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    /* The main job: nothing that changes what is computed was given (--threads, --jobs and
     * --quiet do not change results, so `run --quiet` is still the main job). */
    const int no_args = exp_dir == default_exp && !model_dir && !prompts && !cond_path && !preset && !seeds_s && !base_s &&
                        !steps_s && !cfg_s && !probe_s && !limit_s && !stride_s && !metrics_s && !weights_s && !fid_mode_s &&
                        !prec_s && !spiral_s && !width_s && !height_s && !neg_s && !msl_s;
    if (cond_path && preset) {
        fprintf(stderr, "sinkscope run: give --conditions or --preset, not both\n");
        return 2;
    }
    run_config c;
    run_config_default(&c);
    if (metrics_s && run_parse_metrics(metrics_s, "--metrics", &c.metrics) < 0) {
        fprintf(stderr, "sinkscope run: %s\n", ss_err());
        return 2;
    }
    if (!metrics_s != !weights_s) {
        fprintf(stderr, "sinkscope run: %s\n", metrics_s ? "--metrics needs --metric-weights DIR" : "--metric-weights needs --metrics LIST");
        return 2;
    }
    c.metric_weights = weights_s;
    if (prec_s && ss_precision_parse(prec_s, &c.precision) < 0) {
        fprintf(stderr, "sinkscope run: --precision: %s\n", ss_err());
        return 2;
    }
    if (fid_mode_s) {
        fid_mode fm;
        if (!(c.metrics & RUN_METRIC_FID)) {
            fprintf(stderr, "sinkscope run: --fid-mode needs fid in --metrics\n");
            return 2;
        }
        if (fid_mode_parse(fid_mode_s, &fm) < 0) {
            fprintf(stderr, "sinkscope run: --fid-mode must be pytorch-fid or clean-fid, not '%s'\n", fid_mode_s);
            return 2;
        }
        c.fid_mode = (int)fm;
    }
    long v;
    double x;
    if (seeds_s) {
        if (cli_int("run", "seeds", seeds_s, 1, 1000000, &v)) return 2;
        c.seeds_per_prompt = (int)v;
    }
    if (base_s && parse_u64(base_s, &c.base_seed)) {
        fprintf(stderr, "sinkscope run: --base-seed must be an integer in [0, %llu], got '%s'\n", (unsigned long long)UINT64_MAX,
                base_s);
        return 2;
    }
    if (steps_s) {
        if (cli_int("run", "steps", steps_s, 1, PIPE_MAX_STEPS, &v)) return 2;
        c.steps = (int)v;
    }
    if (cfg_s) {
        if (cli_double("run", "cfg", cfg_s, 0, 1000, &x)) return 2;
        c.cfg = x;
    }
    if (width_s) {
        if (cli_int("run", "width", width_s, 1, 16384, &v)) return 2;
        c.width = (int)v;
    }
    if (height_s) {
        if (cli_int("run", "height", height_s, 1, 16384, &v)) return 2;
        c.height = (int)v;
    }
    c.negative_prompt = neg_s;
    if (msl_s) {
        if (cli_int("run", "max-sequence-length", msl_s, 1, 4096, &v)) return 2;
        c.max_sequence_length = (int)v;
    }
    if (limit_s) {
        if (cli_int("run", "limit-prompts", limit_s, 1, 100000000, &v)) return 2;
        c.limit_prompts = (int)v;
    }
    /* The main job must fit in minutes on a laptop: every third evaluation prompt,
     * 12 per GenEval tag, still balanced. */
    if (no_args) c.prompt_stride = MAIN_JOB_STRIDE;
    if (stride_s) {
        if (cli_int("run", "prompt-stride", stride_s, 1, 100000, &v)) return 2;
        c.prompt_stride = (int)v;
    }
    if (threads_s) {
        if (cli_int("run", "threads", threads_s, 1, 4096, &v)) return 2;
        omp_set_num_threads((int)v);
    }
    if (jobs_s) {
        if (cli_int("run", "jobs", jobs_s, 1, 4096, &v)) return 2;
        c.jobs = (int)v;
    }
    if (spiral_s && spiral_fields_parse(spiral_s, &c.spiral) < 0) {
        fprintf(stderr, "sinkscope run: --spiral: %s\n", ss_err());
        return 2;
    }
    if (probe_s && !strcmp(probe_s, "all")) {
        c.probe_default = 0;
        c.probe_all = 1;
    } else if (probe_s) {
        c.probe_default = 0;
        if (strpbrk(probe_s, "abcdefghijklmnopqrstuvwxyz") && strcmp(probe_s, "none")) {
            if (parse_probe_sites(probe_s, c.probe_blocks, &c.n_probe) < 0) {
                fprintf(stderr, "sinkscope run: %s\n", ss_err());
                return 2;
            }
        } else if (strcmp(probe_s, "none")) {
            int n = cli_int_list("run", "probe", probe_s, c.probe_blocks, RUN_MAX_PROBE);
            if (n < 0) return 2;
            c.n_probe = n;
        }
    }
    c.exp_dir = exp_dir;
    c.quiet = quiet;
    c.progress_bar = !quiet && isatty(STDERR_FILENO);

    char model_buf[4200], prompts_buf[4200], preset_buf[4200], source[4400];
    if (!model_dir) {
        if (cli_find_embedded_model("run", model_buf, sizeof model_buf) < 0) return 1;
        model_dir = model_buf;
    }
    c.model_dir = model_dir;
    const ss_pipe_kind *kind; /* its defaults for what was not given (the pixel pipeline's are run_config_default's) */
    if (ss_pipe_detect(model_dir, &kind) < 0) {
        fprintf(stderr, "sinkscope run: %s\n", ss_err());
        return 1;
    }
    if (!steps_s) c.steps = kind->default_steps;
    if (!cfg_s) c.cfg = kind->default_cfg;

    int rc = 0, code = 1, lock_fd = -1;
    sink_condition *conds = NULL;
    int n_conds = 0;
    if (preset) {
        if (!valid_preset_name(preset)) {
            fprintf(stderr, "sinkscope run: --preset '%s': a preset name is lower-case letters, digits, '_' or '-'\n", preset);
            return 2;
        }
        char rel[300];
        snprintf(rel, sizeof rel, "configs/presets/%s.json", preset);
        if (cli_find_resource(rel, preset_buf, sizeof preset_buf) < 0) {
            fprintf(stderr, "sinkscope run: preset '%s' not found (%s next to the executable or in the current directory)\n",
                    preset, rel);
            return 1;
        }
        cond_path = preset_buf;
        snprintf(source, sizeof source, "preset %s", preset);
    } else if (cond_path) {
        snprintf(source, sizeof source, "%s", cond_path);
    } else {
        snprintf(source, sizeof source, "core protocol (built in)");
    }
    c.conditions_source = source;
    if ((rc = check_outputs(exp_dir, model_dir, prompts, cond_path)) < 0) goto done;
    if (!prompts) {
        if ((rc = default_prompts(exp_dir, prompts_buf, sizeof prompts_buf)) < 0) goto done;
        prompts = prompts_buf;
    }
    c.prompts_path = prompts;
    if (cond_path) {
        exp_probe_spec ps;
        if ((rc = exp_conditions_load(cond_path, &conds, &n_conds, &ps)) < 0) goto done;
        /* the file's probe settings, unless the command line gives its own */
        if (!probe_s && ps.have_sites) {
            c.probe_default = 0;
            c.probe_all = ps.all_sites;
            c.n_probe = ps.n_sites;
            memcpy(c.probe_blocks, ps.sites, sizeof(int) * (size_t)ps.n_sites);
        }
        if (!spiral_s && ps.have_spiral) c.spiral = ps.spiral;
    } else {
        c.core_protocol = 1; /* for the model's depth, which the runner reads when it loads the model */
    }
    c.conds = conds;
    c.n_conds = n_conds;

    /* A run that ends with its report holds EXP/.lock through the report: no other run can
     * append records while the report reads them. */
    const int with_report = no_args;
    if (with_report) {
        if ((rc = run_lock(exp_dir, &lock_fd)) < 0) goto done;
        c.lock_held = 1;
    }
    run_result res;
    if ((rc = run_experiment(&c, &res)) < 0) goto done;
    const long per_ms = res.made ? (long)(1000 * res.seconds / res.made + 0.5) : 0;
    char redone[64] = "";
    if (res.redone) snprintf(redone, sizeof redone, ", %ld redone (image failed verification)", res.redone);
    fprintf(stderr, "sinkscope run: %s: %ld/%ld images (%ld new, %ld already done%s%s) in %.1f s, %ld ms/image; records in "
            "%s/records.jsonl\n", exp_dir, res.before + res.made, res.total, res.made, res.before, redone,
            res.repaired ? ", a torn last record line cut off and redone" : "", res.seconds, per_ms, exp_dir);
    code = 0;
    if (with_report && report_main(exp_dir, !quiet) != 0) code = 1;
    if (with_report) fflush(stdout); /* the report's table is out before the lock goes */
done:
    run_unlock(lock_fd);
    if (rc < 0) fprintf(stderr, "sinkscope run: %s\n", ss_err());
    free(conds);
    return code;
}
