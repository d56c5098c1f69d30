/* sinkscope train: trains the pixel-space SD3-architecture model and its text encoder. */
#include <jansson.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "train/train.h"

static const char USAGE[] =
    "usage: sinkscope train --out DIR [--config TRAIN.json] [--resume] [options]\n"
    "  Trains an SD3Transformer2DModel in pixel space (RGB, no VAE) jointly with a word-embedding\n"
    "  text encoder by rectified flow: x = s*eps + (1-s)*x0, s = sigmoid(N(m, sd^2)), target eps - x0.\n"
    "\n"
    "  --out DIR            writes DIR/checkpoint.safetensors (full training state) and DIR/model\n"
    "                       (pipeline folder with the EMA weights) at every checkpoint and at the end\n"
    "  --config FILE        a JSON object of options: keys are the names below without '--'\n"
    "                       ({\"layers\": 6, \"lr\": 5e-4, \"qk-norm\": \"rms\"}); command-line values win\n"
    "  --resume             continue DIR/checkpoint.safetensors exactly (same thread count); the\n"
    "                       architecture, optimizer and data come from the checkpoint, --steps may\n"
    "                       extend the run (the cosine schedule then stretches to the new length)\n"
    "  --data NAME          shapeworld (default when built in) or toy (colored squares)\n"
    "  --data-seed N        ShapeWorld scene seed (default 0)\n"
    "\n"
    "architecture (defaults: the recommended embedded model, 13.9 MB in fp32):\n"
    "  --image-size N       image side in pixels = sample_size (32)\n"
    "  --patch N            patch size (4: 64 image tokens; 2 gives 256 tokens at 4.2x the cost)\n"
    "  --layers N           joint transformer blocks (6)\n"
    "  --heads N            attention heads (2)\n"
    "  --head-dim N         head dimension (64); hidden size D = heads x head-dim\n"
    "  --qk-norm none|rms   per-head RMSNorm of queries and keys (none)\n"
    "  --text-len N         text tokens incl. <eos> and padding (16)\n"
    "  --text-dim N         text embedding width = joint_attention_dim = pooled_projection_dim (64)\n"
    "\n"
    "optimization:\n"
    "  --steps N            optimizer steps (30000: about 2 hours on 2 cores for the default model)\n"
    "  --batch N            images per step (32)\n"
    "  --lr X               peak learning rate (1e-3)\n"
    "  --min-lr X           final learning rate of the cosine schedule (1e-4)\n"
    "  --warmup N           linear warm-up steps (500)\n"
    "  --schedule S         cosine or constant after warm-up (cosine)\n"
    "  --beta1 X --beta2 X  AdamW moment decays (0.9, 0.99)\n"
    "  --eps X              AdamW epsilon (1e-8)\n"
    "  --weight-decay X     decoupled weight decay on weight matrices (0.01)\n"
    "  --clip X             global gradient-norm clip, 0 = off (1.0)\n"
    "  --ema X              EMA decay of the saved weights (0.999)\n"
    "  --cfg-drop P         probability of training on the empty caption (0.1)\n"
    "  --logit-mean X --logit-std X   timestep distribution sigmoid(N(mean, std^2)) (0, 1)\n"
    "  --sample-shift X     'shift' written to the scheduler config for sampling (1.0)\n"
    "  --seed N             initialisation, noise, timesteps and caption dropout (0)\n"
    "\n"
    "run:\n"
    "  --log-every N        progress line on stderr every N steps (50)\n"
    "  --save-every N       checkpoint every N steps, 0 = only at the end (1000)\n"
    "  --threads N          OpenMP/BLAS threads (default: all cores); OMP_WAIT_POLICY defaults to\n"
    "                       passive (idle threads sleep rather than spin)\n"
    "  --bench              measure sgemm peak and training throughput for this configuration and\n"
    "                       print them (no files written); --bench-steps N timed steps (10)\n";

enum { O_OUT, O_CONFIG, O_DATA, O_DATA_SEED, O_IMAGE, O_PATCH, O_LAYERS, O_HEADS, O_HEAD_DIM, O_QK, O_TEXT_LEN,
       O_TEXT_DIM, O_STEPS, O_BATCH, O_LR, O_MIN_LR, O_WARMUP, O_SCHEDULE, O_BETA1, O_BETA2, O_EPS, O_WD, O_CLIP,
       O_EMA, O_CFG_DROP, O_LMEAN, O_LSTD, O_SHIFT, O_SEED, O_LOG, O_SAVE, O_THREADS, O_BENCH_STEPS, O_N };

static const char *const NAMES[O_N] = {
    "out", "config", "data", "data-seed", "image-size", "patch", "layers", "heads", "head-dim", "qk-norm", "text-len",
    "text-dim", "steps", "batch", "lr", "min-lr", "warmup", "schedule", "beta1", "beta2", "eps", "weight-decay", "clip",
    "ema", "cfg-drop", "logit-mean", "logit-std", "sample-shift", "seed", "log-every", "save-every", "threads",
    "bench-steps"};

static volatile int g_stop = 0;
static void on_signal(int sig) { g_stop = 1; }

/* Fills unset values from the JSON config; `store` keeps the converted strings alive. */
static int apply_config(const char *path, const char **val, char store[O_N][64], int *resume, int *bench) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root || !json_is_object(root)) {
        fprintf(stderr, "sinkscope train: %s: not a JSON object (%s)\n", path, root ? "wrong type" : je.text);
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "resume") || !strcmp(key, "bench")) {
            if (!json_is_boolean(v)) {
                fprintf(stderr, "sinkscope train: %s: '%s' must be true or false\n", path, key);
                rc = -1;
            } else if (json_is_true(v)) {
                *(!strcmp(key, "resume") ? resume : bench) = 1;
            }
            continue;
        }
        int i = 0;
        while (i < O_N && strcmp(NAMES[i], key)) i++;
        if (i == O_N || i == O_CONFIG) {
            fprintf(stderr, "sinkscope train: %s: unknown option '%s'\n", path, key);
            rc = -1;
            continue;
        }
        if (val[i]) continue; /* the command line wins */
        if (json_is_string(v)) snprintf(store[i], 64, "%s", json_string_value(v));
        else if (json_is_integer(v)) snprintf(store[i], 64, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v)) snprintf(store[i], 64, "%.17g", json_real_value(v));
        else {
            fprintf(stderr, "sinkscope train: %s: '%s' must be a number or a string\n", path, key);
            rc = -1;
            continue;
        }
        val[i] = store[i];
    }
    json_decref(root);
    return rc;
}

static int get_long(const char **val, int i, long lo, long hi, long *out) {
    return val[i] ? cli_int("train", NAMES[i], val[i], lo, hi, out) : 0;
}

static int get_double(const char **val, int i, double lo, double hi, double *out) {
    return val[i] ? cli_double("train", NAMES[i], val[i], lo, hi, out) : 0;
}

static int bench(tr_trainer *t, long steps) {
    const tr_model *m = t->m;
    const int B = t->opts.batch;
    fprintf(stdout, "threads %d; measuring sgemm peak ...\n", omp_get_max_threads());
    const double peak = tr_sgemm_gflops(2048, 3.0);
    fprintf(stdout, "sgemm 2048^3: %.1f GFLOP/s\n", peak);
    int rc = tr_trainer_step(t); /* warm-up (first touch of the activation memory) */
    if (rc < 0) return rc;
    const double w0 = t->wall;
    for (long i = 0; i < steps && rc == 0; i++) rc = tr_trainer_step(t);
    if (rc < 0) return rc;
    const double dt = (t->wall - w0) / steps, sps = B / dt, gf = tr_step_flops(m, B) / dt / 1e9;
    const size_t np = m->n;
    fprintf(stdout, "model: D %d, %d layers, %d heads x %d, %d image + %d text tokens, %.2fM parameters (%.1f MB fp32)\n",
            m->D, m->cfg.num_layers, m->cfg.num_heads, m->cfg.head_dim,
            (m->cfg.sample_size / m->cfg.patch_size) * (m->cfg.sample_size / m->cfg.patch_size), m->tcfg.max_length,
            np / 1e6, np * 4 / 1e6);
    fprintf(stdout, "training: batch %d, %.3f s/step, %.1f samples/s, %.2f GFLOP/sample, %.1f GFLOP/s = %.0f%% of the sgemm peak, "
            "activations %.0f MB\n", B, dt, sps, tr_step_flops(m, 1) / 1e9, gf, 100 * gf / peak, tr_ws_bytes(t->w) / 1e6);
    fprintf(stdout, "2 hours: about %.0f samples = %.0f steps of batch %d\n", sps * 7200, sps * 7200 / B, B);
    return 0;
}

int cmd_train(int argc, char **argv) {
    /* libgomp reads OMP_WAIT_POLICY when it loads, so the default is set by re-executing: with
     * the default (spinning) policy every barrier stalls for a time slice when the cores are
     * shared with other work, which made steps 2-3x slower in practice. argv - 1 is main's argv. */
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1)) execv("/proc/self/exe", argv - 1);
    const char *val[O_N] = {0};
    int resume = 0, do_bench = 0;
    cli_opt opts[O_N + 2];
    for (int i = 0; i < O_N; i++) opts[i] = (cli_opt){NAMES[i], &val[i], NULL};
    opts[O_N] = (cli_opt){"resume", NULL, &resume};
    opts[O_N + 1] = (cli_opt){"bench", NULL, &do_bench};
    int pr = cli_parse(argc, argv, opts, O_N + 2, USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    static char store[O_N][64];
    if (val[O_CONFIG] && apply_config(val[O_CONFIG], val, store, &resume, &do_bench) < 0) return 2;
    if (!val[O_OUT] && !do_bench) {
        fprintf(stderr, "sinkscope train: --out is required\n%s", USAGE);
        return 2;
    }
    tr_arch a;
    tr_arch_default(&a);
    tr_opts o;
    tr_opts_default(&o);
    long v, threads = 0, bench_steps = 10, data_seed = 0;
    double d;
    sd3_config *c = &a.sd3;
#define INT_OPT(i, lo, hi, dst) do { v = 0; if (get_long(val, i, lo, hi, &v)) return 2; if (val[i]) dst = v; } while (0)
#define DBL_OPT(i, lo, hi, dst) do { d = 0; if (get_double(val, i, lo, hi, &d)) return 2; if (val[i]) dst = d; } while (0)
    INT_OPT(O_IMAGE, 2, 1024, c->sample_size);
    INT_OPT(O_PATCH, 1, 64, c->patch_size);
    INT_OPT(O_LAYERS, 1, SD3_MAX_LAYERS, c->num_layers);
    INT_OPT(O_HEADS, 1, 256, c->num_heads);
    INT_OPT(O_HEAD_DIM, 1, 512, c->head_dim);
    INT_OPT(O_TEXT_LEN, 2, 1024, a.te.max_length);
    INT_OPT(O_TEXT_DIM, 1, 8192, a.te.hidden_size);
    INT_OPT(O_STEPS, 0, 1000000000L, o.steps);
    INT_OPT(O_BATCH, 1, 65536, o.batch);
    INT_OPT(O_WARMUP, 0, 1000000000L, o.warmup);
    INT_OPT(O_SEED, 0, 0x7fffffffffffffffL, o.seed);
    INT_OPT(O_LOG, 0, 1000000000L, o.log_every);
    INT_OPT(O_SAVE, 0, 1000000000L, o.save_every);
    INT_OPT(O_THREADS, 1, 4096, threads);
    INT_OPT(O_BENCH_STEPS, 1, 100000, bench_steps);
    INT_OPT(O_DATA_SEED, 0, 0x7fffffffffffffffL, data_seed);
    DBL_OPT(O_LR, 1e-12, 10, o.lr);
    DBL_OPT(O_MIN_LR, 0, 10, o.min_lr);
    DBL_OPT(O_BETA1, 0, 0.999999, o.beta1);
    DBL_OPT(O_BETA2, 0, 0.999999999, o.beta2);
    DBL_OPT(O_EPS, 1e-30, 1, o.eps);
    DBL_OPT(O_WD, 0, 10, o.weight_decay);
    DBL_OPT(O_CLIP, 0, 1e9, o.clip);
    DBL_OPT(O_EMA, 0, 0.99999999, o.ema_decay);
    DBL_OPT(O_CFG_DROP, 0, 1, o.cfg_drop);
    DBL_OPT(O_LMEAN, -10, 10, o.logit_mean);
    DBL_OPT(O_LSTD, 0, 10, o.logit_std);
    DBL_OPT(O_SHIFT, 1e-6, 1e6, o.sample_shift);
#undef INT_OPT
#undef DBL_OPT
    if (val[O_QK]) {
        if (!strcmp(val[O_QK], "none")) c->qk_norm = 0;
        else if (!strcmp(val[O_QK], "rms") || !strcmp(val[O_QK], "rms_norm")) c->qk_norm = 1;
        else {
            fprintf(stderr, "sinkscope train: --qk-norm must be none or rms\n");
            return 2;
        }
    }
    if (val[O_SCHEDULE]) {
        if (!strcmp(val[O_SCHEDULE], "cosine")) o.schedule = TR_SCHED_COSINE;
        else if (!strcmp(val[O_SCHEDULE], "constant")) o.schedule = TR_SCHED_CONSTANT;
        else {
            fprintf(stderr, "sinkscope train: --schedule must be cosine or constant\n");
            return 2;
        }
    }
    if (threads) omp_set_num_threads((int)threads);
    char ckpt[4200] = "";
    if (val[O_OUT] && (size_t)snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", val[O_OUT]) >= sizeof ckpt) {
        fprintf(stderr, "sinkscope train: --out path too long\n");
        return 2;
    }
    const char *dname = val[O_DATA];
    char saved_data[128] = "";
    if (resume && !do_bench) {
        /* the data set and image size come from the checkpoint unless given */
        tr_arch sa;
        if (tr_checkpoint_info(ckpt, &sa, NULL, saved_data, sizeof saved_data) < 0) {
            fprintf(stderr, "sinkscope train: %s\n", ss_err());
            return 1;
        }
        c->sample_size = sa.sd3.sample_size;
        unsigned long long sseed;
        if (!dname && sscanf(saved_data, "shapeworld(seed=%llu)", &sseed) == 1) dname = "shapeworld", data_seed = (long)sseed;
        else if (!dname && !strcmp(saved_data, "toy-squares")) dname = "toy";
    }
    tr_data data;
    if (!dname) dname = tr_data_shapeworld(&data, c->sample_size, (uint64_t)data_seed) == 0 ? "shapeworld" : "toy";
    if (!strcmp(dname, "toy")) {
        if (c->sample_size < 8 || c->sample_size > 64) {
            fprintf(stderr, "sinkscope train: the toy data supports image sizes 8..64\n");
            return 2;
        }
        data = tr_data_toy(c->sample_size);
    } else if (strcmp(dname, "shapeworld") || tr_data_shapeworld(&data, c->sample_size, (uint64_t)data_seed) < 0) {
        fprintf(stderr, "sinkscope train: --data: %s\n", strcmp(dname, "shapeworld") ? "must be shapeworld or toy" : ss_err());
        return 2;
    }
    tr_trainer *t = NULL;
    int rc;
    if (resume && !do_bench) {
        static const int arch_opts[] = {O_IMAGE, O_PATCH, O_LAYERS, O_HEADS, O_HEAD_DIM, O_QK, O_TEXT_LEN, O_TEXT_DIM,
                                        O_BATCH, O_LR, O_MIN_LR, O_WARMUP, O_SCHEDULE, O_SEED};
        for (size_t i = 0; i < sizeof arch_opts / sizeof arch_opts[0]; i++)
            if (val[arch_opts[i]])
                fprintf(stderr, "sinkscope train: note: --%s is ignored with --resume (the checkpoint's value is used)\n",
                        NAMES[arch_opts[i]]);
        tr_opts ov = o;
        tr_opts saved;
        rc = tr_trainer_resume(&t, ckpt, NULL, &data);
        if (rc == 0) { /* keep the saved run settings unless given now */
            saved = t->opts;
            t->opts.steps = val[O_STEPS] ? ov.steps : saved.steps;
            t->opts.log_every = val[O_LOG] ? ov.log_every : saved.log_every;
            t->opts.save_every = val[O_SAVE] ? ov.save_every : saved.save_every;
            fprintf(stderr, "sinkscope train: resumed %s at step %ld of %ld\n", ckpt, t->step, t->opts.steps);
        }
    } else {
        if (!do_bench && access(ckpt, F_OK) == 0) { /* never clobber a run by accident */
            fprintf(stderr, "sinkscope train: %s exists; continue it with --resume or choose another --out\n", ckpt);
            return 2;
        }
        rc = tr_trainer_new(&t, &a, &o, &data);
    }
    if (rc < 0) {
        fprintf(stderr, "sinkscope train: %s\n", ss_err());
        return 1;
    }
    if (do_bench) {
        rc = bench(t, bench_steps);
    } else {
        const tr_model *m = t->m;
        fprintf(stderr, "sinkscope train: data %s, D %d, %d layers, %d heads x %d, qk_norm %s, text %d x %d, %.2fM parameters "
                "(%.1f MB), batch %d, %d threads, activations %.0f MB\n", data.name, m->D, m->cfg.num_layers,
                m->cfg.num_heads, m->cfg.head_dim, m->cfg.qk_norm ? "rms" : "none", m->tcfg.max_length,
                m->tcfg.hidden_size, m->n / 1e6, m->n * 4 / 1e6, t->opts.batch, omp_get_max_threads(),
                tr_ws_bytes(t->w) / 1e6);
        t->stop = &g_stop;
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        rc = tr_trainer_run(t, val[O_OUT]);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (rc == 0) fprintf(stderr, "sinkscope train: step %ld; model in %s/model\n", t->step, val[O_OUT]);
    }
    if (rc < 0) fprintf(stderr, "sinkscope train: %s\n", ss_err());
    tr_trainer_free(t);
    return rc < 0 ? 1 : 0;
}
