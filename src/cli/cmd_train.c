/* sinkscope train: trains the pixel-space SD3-architecture model and its text encoder. */
#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "io/pathcheck.h"
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
    "  --dual-layers N      the first N blocks also get SD3.5's second, image-only attention (attn2;\n"
    "                       the config's dual_attention_layers) (0)\n"
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

enum { T_STR = 1, T_INT, T_LONG, T_U64, T_DBL, T_QK, T_SCHED, T_DATA };
/* What --resume does with an option (every option states one; 0 is refused at start-up): */
enum {
    R_RUN = 1, /* a setting of this invocation: applies on resume */
    R_SAME     /* fixed by the checkpoint: given on resume, it must equal the checkpoint's value */
};
enum { D_DEFAULT, D_TOY, D_SHAPEWORLD };

typedef struct {
    tr_arch a;
    tr_opts o;
    const char *out, *config;
    int data;
    long data_seed, threads, bench_steps;
    int dual_layers; /* --dual-layers: blocks 0..N-1 are dual-attention blocks */
} settings;

typedef struct {
    const char *name;
    int type;
    long ilo, ihi;   /* T_INT, T_LONG, T_U64 */
    double dlo, dhi; /* T_DBL */
    size_t off;      /* the field in settings */
    int resume;
} opt_def;

#define F(field) offsetof(settings, field)
#define I(name, type, lo, hi, field, res) {name, type, lo, hi, 0, 0, F(field), res}
#define D(name, lo, hi, field, res) {name, T_DBL, 0, 0, lo, hi, F(field), res}
static const opt_def OPTS[] = {
    I("out", T_STR, 0, 0, out, R_RUN),
    I("config", T_STR, 0, 0, config, R_RUN),
    I("data", T_DATA, 0, 0, data, R_SAME),
    I("data-seed", T_LONG, 0, LONG_MAX, data_seed, R_SAME),
    I("image-size", T_INT, 2, 1024, a.sd3.sample_size, R_SAME),
    I("patch", T_INT, 1, 64, a.sd3.patch_size, R_SAME),
    I("layers", T_INT, 1, SD3_MAX_LAYERS, a.sd3.num_layers, R_SAME),
    I("dual-layers", T_INT, 0, SD3_MAX_LAYERS, dual_layers, R_SAME),
    I("heads", T_INT, 1, 256, a.sd3.num_heads, R_SAME),
    I("head-dim", T_INT, 1, 512, a.sd3.head_dim, R_SAME),
    I("qk-norm", T_QK, 0, 0, a.sd3.qk_norm, R_SAME),
    I("text-len", T_INT, 2, 1024, a.te.max_length, R_SAME),
    I("text-dim", T_INT, 1, 8192, a.te.hidden_size, R_SAME),
    I("steps", T_LONG, 0, 1000000000L, o.steps, R_RUN),
    I("batch", T_INT, 1, 65536, o.batch, R_SAME),
    D("lr", 1e-12, 10, o.lr, R_SAME),
    D("min-lr", 0, 10, o.min_lr, R_SAME),
    I("warmup", T_LONG, 0, 1000000000L, o.warmup, R_SAME),
    I("schedule", T_SCHED, 0, 0, o.schedule, R_SAME),
    D("beta1", 0, 0.999999, o.beta1, R_SAME),
    D("beta2", 0, 0.999999999, o.beta2, R_SAME),
    D("eps", 1e-30, 1, o.eps, R_SAME),
    D("weight-decay", 0, 10, o.weight_decay, R_SAME),
    D("clip", 0, 1e9, o.clip, R_SAME),
    D("ema", 0, 0.99999999, o.ema_decay, R_SAME),
    D("cfg-drop", 0, 1, o.cfg_drop, R_SAME),
    D("logit-mean", -10, 10, o.logit_mean, R_SAME),
    D("logit-std", 0, 10, o.logit_std, R_SAME),
    D("sample-shift", 1e-6, 1e6, o.sample_shift, R_SAME), /* the exported model's; part of the checkpoint */
    I("seed", T_U64, 0, LONG_MAX, o.seed, R_SAME),
    I("log-every", T_LONG, 0, 1000000000L, o.log_every, R_RUN),
    I("save-every", T_LONG, 0, 1000000000L, o.save_every, R_RUN),
    I("threads", T_LONG, 1, 4096, threads, R_RUN),
    I("bench-steps", T_LONG, 1, 100000, bench_steps, R_RUN),
};
#undef I
#undef D
#undef F
enum { O_N = sizeof OPTS / sizeof OPTS[0] };

static int opt_index(const char *name) {
    for (int i = 0; i < O_N; i++)
        if (!strcmp(OPTS[i].name, name)) return i;
    return -1;
}

static volatile int g_stop = 0;
static void on_signal(int sig) { g_stop = 1; }

/* "--name" or "FILE: 'name'", for messages about a value from the command line or a config */
static const char *where(int i, const char *src, char *buf, size_t n) {
    if (src) snprintf(buf, n, "%s: '%s'", src, OPTS[i].name);
    else snprintf(buf, n, "--%s", OPTS[i].name);
    return buf;
}

/* Parses value s of option i into st; prints the error (naming the option and its source). */
static int parse_opt(int i, const char *s, const char *src, settings *st) {
    const opt_def *d = &OPTS[i];
    void *f = (char *)st + d->off;
    char w[4200], what[96] = "";
    long v = 0;
    double x = 0;
    switch (d->type) {
    case T_STR:
        if (*s) {
            *(const char **)f = s;
            return 0;
        }
        snprintf(what, sizeof what, "a non-empty string");
        break;
    case T_INT:
    case T_LONG:
    case T_U64:
        if (cli_parse_long(s, d->ilo, d->ihi, &v) == 0) {
            if (d->type == T_INT) *(int *)f = (int)v;
            else if (d->type == T_LONG) *(long *)f = v;
            else *(uint64_t *)f = (uint64_t)v;
            return 0;
        }
        snprintf(what, sizeof what, "an integer in [%ld, %ld]", d->ilo, d->ihi);
        break;
    case T_DBL:
        if (cli_parse_double(s, d->dlo, d->dhi, &x) == 0) {
            *(double *)f = x;
            return 0;
        }
        snprintf(what, sizeof what, "a number in [%g, %g]", d->dlo, d->dhi);
        break;
    case T_QK:
        if (!strcmp(s, "none") || !strcmp(s, "rms") || !strcmp(s, "rms_norm")) {
            *(int *)f = strcmp(s, "none") != 0;
            return 0;
        }
        snprintf(what, sizeof what, "none or rms");
        break;
    case T_SCHED:
        if (!strcmp(s, "cosine") || !strcmp(s, "constant")) {
            *(int *)f = !strcmp(s, "cosine") ? TR_SCHED_COSINE : TR_SCHED_CONSTANT;
            return 0;
        }
        snprintf(what, sizeof what, "cosine or constant");
        break;
    case T_DATA:
        if (!strcmp(s, "toy") || !strcmp(s, "shapeworld")) {
            *(int *)f = !strcmp(s, "toy") ? D_TOY : D_SHAPEWORLD;
            return 0;
        }
        snprintf(what, sizeof what, "shapeworld or toy");
        break;
    }
    fprintf(stderr, "sinkscope train: %s must be %s, got '%s'\n", where(i, src, w, sizeof w), what, s);
    return -1;
}

/* Option i's value in st as text (numbers: the shortest form that reads back the same). */
static void fmt_value(int i, const settings *st, char *buf, size_t n) {
    const opt_def *d = &OPTS[i];
    const void *f = (const char *)st + d->off;
    switch (d->type) {
    case T_STR: snprintf(buf, n, "%s", *(const char *const *)f); break;
    case T_INT: snprintf(buf, n, "%d", *(const int *)f); break;
    case T_LONG: snprintf(buf, n, "%ld", *(const long *)f); break;
    case T_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)f); break;
    case T_DBL:
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, n, "%.*g", p, *(const double *)f);
            if (strtod(buf, NULL) == *(const double *)f) break;
        }
        break;
    case T_QK: snprintf(buf, n, "%s", *(const int *)f ? "rms" : "none"); break;
    case T_SCHED: snprintf(buf, n, "%s", *(const int *)f == TR_SCHED_COSINE ? "cosine" : "constant"); break;
    case T_DATA: snprintf(buf, n, "%s", *(const int *)f == D_TOY ? "toy" : "shapeworld"); break;
    }
}

static int same_value(int i, const settings *a, const settings *b) {
    const opt_def *d = &OPTS[i];
    const void *fa = (const char *)a + d->off, *fb = (const char *)b + d->off;
    switch (d->type) {
    case T_STR: return !strcmp(*(const char *const *)fa, *(const char *const *)fb);
    case T_LONG: return *(const long *)fa == *(const long *)fb;
    case T_U64: return *(const uint64_t *)fa == *(const uint64_t *)fb;
    case T_DBL: return *(const double *)fa == *(const double *)fb;
    default: return *(const int *)fa == *(const int *)fb; /* T_INT and the enums */
    }
}

/* Fills values not given on the command line from the JSON config (the command line wins):
 * val[i] = a malloc'ed copy in store[i], src[i] = the file. Every error is printed. */
static int apply_config(const char *path, const char **val, const char **src, char **store, int *resume, int *bench) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
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
        const int i = opt_index(key);
        if (i < 0 || !strcmp(key, "config")) {
            fprintf(stderr, "sinkscope train: %s: unknown option '%s'\n", path, key);
            rc = -1;
            continue;
        }
        const int numeric = OPTS[i].type == T_INT || OPTS[i].type == T_LONG || OPTS[i].type == T_U64 || OPTS[i].type == T_DBL;
        char num[64];
        const char *text = NULL;
        if (json_is_string(v)) text = json_string_value(v);
        else if (numeric && json_is_integer(v)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v)), text = num;
        else if (numeric && json_is_real(v)) snprintf(num, sizeof num, "%.17g", json_real_value(v)), text = num;
        if (!text) {
            fprintf(stderr, "sinkscope train: %s: '%s' must be %s\n", path, key, numeric ? "a number" : "a string");
            rc = -1;
            continue;
        }
        if (val[i]) continue; /* the command line wins (the config's value is still checked above) */
        if (!(store[i] = strdup(text))) {
            fprintf(stderr, "sinkscope train: out of memory\n");
            rc = -1;
            break;
        }
        val[i] = store[i];
        src[i] = path;
    }
    json_decref(root);
    return rc;
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

/* The checkpoint's settings, in the options' terms (data from its recorded name). */
static int saved_settings(const char *ckpt, settings *sv) {
    char dn[128];
    if (tr_checkpoint_info(ckpt, &sv->a, &sv->o, dn, sizeof dn) < 0) {
        fprintf(stderr, "sinkscope train: %s\n", ss_err());
        return -1;
    }
    unsigned long long seed;
    int end = 0;
    if (!strcmp(dn, "toy-squares")) {
        sv->data = D_TOY, sv->data_seed = 0;
    } else if (sscanf(dn, "shapeworld(seed=%llu)%n", &seed, &end) == 1 && end > 0 && !dn[end] && seed <= LONG_MAX) {
        sv->data = D_SHAPEWORLD, sv->data_seed = (long)seed;
    } else {
        fprintf(stderr, "sinkscope train: %s: trained on data '%s', which this build cannot make\n", ckpt, dn);
        return -1;
    }
    sv->dual_layers = 0;
    for (int i = 0; i < sv->a.sd3.num_layers; i++) sv->dual_layers += sv->a.sd3.dual[i] != 0;
    return 0;
}

static int train_main(const char **val, const char **src, int resume, int do_bench) {
    for (int i = 0; i < O_N; i++)
        if (OPTS[i].resume != R_RUN && OPTS[i].resume != R_SAME) {
            fprintf(stderr, "sinkscope train: internal error: option --%s has no rule for --resume\n", OPTS[i].name);
            return 1;
        }
    settings st = {.data = D_DEFAULT, .threads = 0, .bench_steps = 10};
    tr_arch_default(&st.a);
    tr_opts_default(&st.o);
    int bad = 0;
    for (int i = 0; i < O_N; i++)
        if (val[i] && parse_opt(i, val[i], src[i], &st) < 0) bad = 1;
    if (bad) return 2;
    if (st.dual_layers > st.a.sd3.num_layers) {
        fprintf(stderr, "sinkscope train: --dual-layers %d exceeds --layers %d\n", st.dual_layers, st.a.sd3.num_layers);
        return 2;
    }
    for (int i = 0; i < st.dual_layers; i++) st.a.sd3.dual[i] = 1;
    const int I_DATA_SEED = opt_index("data-seed"), I_BENCH_STEPS = opt_index("bench-steps"), I_STEPS = opt_index("steps");
    if (do_bench && resume) {
        fprintf(stderr, "sinkscope train: --bench measures a new model; it cannot be combined with --resume\n");
        return 2;
    }
    if (!do_bench && val[I_BENCH_STEPS]) {
        fprintf(stderr, "sinkscope train: --bench-steps applies to --bench only\n");
        return 2;
    }
    if (!st.out && !do_bench) {
        fprintf(stderr, "sinkscope train: --out is required\n%s", USAGE);
        return 2;
    }
    if (st.threads) omp_set_num_threads((int)st.threads);
    char *ckpt = NULL;
    if (st.out) {
        ckpt = malloc(strlen(st.out) + 32);
        if (!ckpt) return 1;
        sprintf(ckpt, "%s/checkpoint.safetensors", st.out);
    }
    int code = 2;
    tr_trainer *t = NULL;
    settings sv = st;
    if (resume) { /* the checkpoint's settings; an option of theirs given again must agree */
        if (saved_settings(ckpt, &sv) < 0) {
            code = 1;
            goto done;
        }
        for (int i = 0; i < O_N; i++) {
            if (!val[i] || OPTS[i].resume != R_SAME) continue;
            char w[4200], given[128], saved[128];
            fmt_value(i, &st, given, sizeof given);
            fmt_value(i, &sv, saved, sizeof saved);
            if (i == I_DATA_SEED && sv.data != D_SHAPEWORLD) {
                fprintf(stderr, "sinkscope train: %s %s: the checkpoint %s was trained on the toy data, which has no seed\n",
                        where(i, src[i], w, sizeof w), given, ckpt);
                bad = 1;
            } else if (!same_value(i, &st, &sv)) {
                fprintf(stderr, "sinkscope train: %s %s differs from the checkpoint's %s (%s): a resumed run keeps the "
                        "settings it was started with; drop the option or give the same value\n",
                        where(i, src[i], w, sizeof w), given, saved, ckpt);
                bad = 1;
            }
        }
        sv.o.steps = val[I_STEPS] ? st.o.steps : -1; /* -1: the checkpoint's (below) */
        if (bad) goto done;
    }
    tr_data data;
    int dkind = resume ? sv.data : st.data;
    const long dseed = resume ? sv.data_seed : st.data_seed;
    const int size = resume ? sv.a.sd3.sample_size : st.a.sd3.sample_size;
    if (dkind == D_DEFAULT) dkind = tr_data_shapeworld(&data, size, (uint64_t)dseed) == 0 ? D_SHAPEWORLD : D_TOY;
    if (!resume && dkind == D_TOY && val[I_DATA_SEED]) {
        fprintf(stderr, "sinkscope train: --data-seed applies to --data shapeworld only\n");
        goto done;
    }
    if (dkind == D_TOY) {
        if (size < 8 || size > 64) {
            fprintf(stderr, "sinkscope train: the toy data supports image sizes 8..64\n");
            goto done;
        }
        data = tr_data_toy(size);
    } else if (tr_data_shapeworld(&data, size, (uint64_t)dseed) < 0) {
        fprintf(stderr, "sinkscope train: --data: %s\n", ss_err());
        goto done;
    }
    /* the config file must survive the run: not the checkpoint, nor a file of the model folder
     * that the export replaces */
    if (val[opt_index("config")]) {
        const char *cf = val[opt_index("config")];
        const pc_file in[] = {{"--config", cf}};
        char mdir[4200], mtmp[4200];
        snprintf(mdir, sizeof mdir, "%s/model", st.out);
        snprintf(mtmp, sizeof mtmp, "%s/model.tmp", st.out);
        if (pc_check_output("--out", ckpt, in, 1) || pc_check_output_tree("--config", cf, "--out", mdir, NULL) ||
            pc_check_output_tree("--config", cf, "--out", mtmp, NULL)) {
            fprintf(stderr, "sinkscope train: %s\n", ss_err());
            code = 2;
            goto done;
        }
    }
    int rc;
    code = 1;
    if (resume) {
        rc = tr_trainer_resume(&t, ckpt, NULL, &data);
        if (rc == 0) { /* the run settings given now apply */
            if (sv.o.steps >= 0) {
                if (sv.o.steps < t->step) {
                    fprintf(stderr, "sinkscope train: %s %ld is below the checkpoint's step %ld (%s)\n",
                            src[I_STEPS] ? "'steps'" : "--steps", sv.o.steps, t->step, ckpt);
                    code = 2;
                    goto done;
                }
                t->opts.steps = sv.o.steps;
            }
            if (val[opt_index("log-every")]) t->opts.log_every = st.o.log_every;
            if (val[opt_index("save-every")]) t->opts.save_every = st.o.save_every;
            fprintf(stderr, "sinkscope train: resumed %s at step %ld of %ld\n", ckpt, t->step, t->opts.steps);
        }
    } else {
        if (!do_bench && access(ckpt, F_OK) == 0) { /* never clobber a run by accident */
            fprintf(stderr, "sinkscope train: %s exists; continue it with --resume or choose another --out\n", ckpt);
            code = 2;
            goto done;
        }
        rc = tr_trainer_new(&t, &st.a, &st.o, &data);
    }
    if (rc < 0) goto fail;
    if (do_bench) {
        if ((rc = bench(t, st.bench_steps)) < 0) goto fail;
        code = 0;
        goto done;
    }
    const tr_model *m = t->m;
    int ndual = 0;
    for (int i = 0; i < m->cfg.num_layers; i++) ndual += m->cfg.dual[i] != 0;
    char dual_txt[48] = "";
    if (ndual) snprintf(dual_txt, sizeof dual_txt, " (%d with attn2)", ndual);
    fprintf(stderr, "sinkscope train: data %s, D %d, %d layers%s, %d heads x %d, qk_norm %s, text %d x %d, %.2fM parameters "
            "(%.1f MB), batch %d, %d threads, activations %.0f MB\n", data.name, m->D, m->cfg.num_layers, dual_txt,
            m->cfg.num_heads, m->cfg.head_dim, m->cfg.qk_norm ? "rms" : "none", m->tcfg.max_length,
            m->tcfg.hidden_size, m->n / 1e6, m->n * 4 / 1e6, t->opts.batch, omp_get_max_threads(),
            tr_ws_bytes(t->w) / 1e6);
    const long s0 = t->step;
    t->stop = &g_stop;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    rc = tr_trainer_run(t, st.out);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (rc < 0) goto fail;
    if (rc == 1) {
        fprintf(stderr, "sinkscope train: interrupted: %s and %s/model hold step %ld of %ld; continue with --resume\n",
                ckpt, st.out, t->step, t->opts.steps);
        code = 130;
        goto done;
    }
    fprintf(stderr, "sinkscope train: step %ld of %ld%s; %s, model (EMA weights) written to %s/model\n", t->step,
            t->opts.steps, t->step == s0 && resume ? " (nothing left to train)" : "", ckpt, st.out);
    code = 0;
    goto done;
fail:
    fprintf(stderr, "sinkscope train: %s\n", ss_err());
    code = 1;
done:
    tr_trainer_free(t);
    free(ckpt);
    return code;
}

int cmd_train(int argc, char **argv) {
    /* libgomp reads OMP_WAIT_POLICY when it loads, so the default is set by re-executing: with
     * the default (spinning) policy every barrier stalls for a time slice when the cores are
     * shared with other work, which made steps 2-3x slower in practice. argv - 1 is main's argv. */
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1)) execv("/proc/self/exe", argv - 1);
    const char *val[O_N] = {0}, *src[O_N] = {0};
    char *store[O_N] = {0};
    int resume = 0, do_bench = 0;
    cli_opt opts[O_N + 2];
    for (int i = 0; i < O_N; i++) opts[i] = (cli_opt){OPTS[i].name, &val[i], NULL};
    opts[O_N] = (cli_opt){"resume", NULL, &resume};
    opts[O_N + 1] = (cli_opt){"bench", NULL, &do_bench};
    int pr = cli_parse(argc, argv, opts, O_N + 2, USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    const int ic = opt_index("config");
    int code = val[ic] && apply_config(val[ic], val, src, store, &resume, &do_bench) < 0 ? 2 : -1;
    if (code < 0) code = train_main(val, src, resume, do_bench);
    for (int i = 0; i < O_N; i++) free(store[i]);
    return code;
}
