/* Reliability of the trainer and of the shared option parser, through the real CLI:
 *  - bad command lines of every command (a value that is the next option, trailing junk,
 *    blanks, overflow, empty, repeated options, bad lists and shapes) fail naming the option
 *    and create nothing;
 *  - `train --resume`: every option either applies or, fixed by the checkpoint, must repeat
 *    the checkpoint's value (an error names the option and both values);
 *  - config strings of any length reach the trainer whole;
 *  - the export of DIR/model is crash-safe: each recovery path (leftover model.tmp, missing,
 *    stale model/, a model.old of the two-rename fallback), --steps 0, and kill -9 at random
 *    moments followed by --resume all end with DIR/model = the export of the final checkpoint. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/sd3.h"
#include "text/encoder.h"
#include "train/train.h"

static char *g_dir;
static char g_root[4096]; /* the repository root (the tests run from it) */
static char g_bin[4200];  /* absolute path of the program under test */
static char g_out[65536];

static int setup(void **st) {
    (void)st;
    omp_set_num_threads(1); /* the checkpoints are written with one thread */
    g_dir = tc_tmpdir();
    if (!g_dir || !getcwd(g_root, sizeof g_root)) return -1;
    const char *b = tc_bin();
    snprintf(g_bin, sizeof g_bin, "%s%s%s", b[0] == '/' ? "" : g_root, b[0] == '/' ? "" : "/", b);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_dir);
    free(g_dir);
    return 0;
}

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *p = tc_vjoin(g_dir, fmt, ap);
    va_end(ap);
    return p;
}

static int exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* entries of dir whose name starts with prefix */
static int count_prefix(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return n;
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* The tiny model of these tests: 16x16 toy squares, 1 layer, D 16, batch 2, one thread. */
static const char TINY[] = "--data toy --image-size 16 --patch 4 --layers 1 --heads 2 --head-dim 8 --text-len 12 "
                           "--text-dim 8 --batch 2 --threads 1 --log-every 0";

/* ---- bad command lines, every command ---- */

static void test_bad_command_lines(void **st) {
    (void)st;
    static const struct {
        const char *args, *needle;
    } cases[] = {
        /* a value that is the next option (the old parser took it as the value) */
        {"generate --prompt a --steps 3 --out --cfg", "--out"},
        {"generate --out --steps 10 --prompt a", "--out"},
        {"generate --prompt a --out x.png --model --threads", "--model"},
        {"init --config CFG --out m --inputs --seed", "--inputs"},
        {"forward --model m --inputs i --out --dump-blocks", "--out"},
        {"run --exp --quiet", "--exp"},
        {"run --exp e --model m --prompts --quiet", "--prompts"},
        {"score --images --prompts p.jsonl", "--images"},
        {"score --images d --prompts p.jsonl --json --images", "--json"},
        {"report e --out --quiet", "--out"},
        {"report e --seed --quiet", "--seed"},
        {"train --out --resume", "--out"},
        {"train --out d --config --resume", "--config"},
        /* a missing value at the end */
        {"train --out d --steps", "--steps"},
        {"score --images d --prompts", "--prompts"},
        /* the same option twice */
        {"train --out d --steps 5 --steps 6", "--steps"},
        {"generate --prompt a --out x.png --seed 1 --seed 2", "--seed"},
        {"score --images d --prompts p.jsonl --images e", "--images"},
        {"report e --quiet --quiet", "--quiet"},
        /* numbers: trailing junk, blanks, sign, hex, words, empty, overflow, range */
        {"init --config CFG --out m --inputs i --latent 8x8junk", "--latent"},
        {"init --config CFG --out m --inputs i --latent 8x", "--latent"},
        {"init --config CFG --out m --inputs i --latent x8", "--latent"},
        {"init --config CFG --out m --inputs i --latent 8x-8", "--latent"},
        {"init --config CFG --out m --inputs i --latent ' 8x8'", "--latent"},
        {"init --config CFG --out m --latent 8x8", "--latent"}, /* without --inputs it did nothing */
        {"init --config CFG --out m --seed 1.5", "--seed"},
        {"init --config CFG --out m --seed ''", "--seed"},
        {"forward --model m --inputs i --out o --threads ' 2'", "--threads"},
        {"forward --model m --inputs i --out o --threads +2", "--threads"},
        {"forward --model m --inputs i --out o --topk 0x5", "--topk"},
        {"forward --model m --inputs i --out o --threads 99999999999999999999999", "--threads"},
        {"forward --model m --inputs i --out o --probe 0,,1", "--probe"},
        {"forward --model m --inputs i --out o --probe 0,1,", "--probe"},
        {"forward --model m --inputs i --out o --probe ''", "--probe"},
        {"forward --model m --inputs i --out o --probe 0,0", "--probe"},
        {"forward --model m --inputs i --out o --probe ' 1'", "--probe"},
        {"forward --model m --inputs i --out o --probe 1,-2", "--probe"},
        {"generate --prompt a --out x.png --steps 10x", "--steps"},
        {"generate --prompt a --out x.png --seed 0x10", "--seed"},
        {"generate --prompt a --out x.png --cfg nan", "--cfg"},
        {"generate --prompt a --out x.png --cfg inf", "--cfg"},
        {"generate --prompt a --out x.png --cfg 0x1p2", "--cfg"},
        {"generate --prompt a --out x.png --cfg '4 '", "--cfg"},
        {"generate --prompt a --out x.png --cfg 1e999", "--cfg"},
        {"run --exp e --seeds 1e3", "--seeds"},
        {"run --exp e --base-seed -1", "--base-seed"},
        {"run --exp e --steps ''", "--steps"},
        {"run --exp e --jobs 2.", "--jobs"},
        {"run --exp e --probe 0,x", "--probe"},
        {"report e --bootstrap 10abc", "--bootstrap"},
        {"report e --margin 1e-400", "--margin"},
        {"report e --seed 18446744073709551616", "--seed"},
        {"train --out d --steps 5junk", "--steps"},
        {"train --out d --lr 0x1p-3", "--lr"},
        {"train --out d --batch ''", "--batch"},
        {"train --out d --threads 2.0", "--threads"},
        {"train --out d --seed -0x1", "--seed"},
        {"train --out d --clip ' 1'", "--clip"},
        {"train --out ''", "--out"},
        /* options that would have been ignored */
        {"train --out d --bench-steps 3", "--bench-steps"},
        {"train --out d --resume --bench", "--bench"},
        {"train --out d --data toy --data-seed 3", "--data-seed"},
        {"train --out d --layers 2 --dual-layers 3", "--dual-layers"},
    };
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/configs/sd3-tiny.json", g_root);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* each case in an empty folder of its own: nothing may appear in it */
        const char *dir = at("bad%02zu", i);
        assert_int_equal(mkdir(dir, 0777), 0);
        char args[5400] = "";
        const char *a = cases[i].args, *c = strstr(a, "CFG");
        if (c) snprintf(args, sizeof args, "%.*s'%s'%s", (int)(c - a), a, cfg, c + 3);
        else snprintf(args, sizeof args, "%s", a);
        const int rc = tc_run(g_out, sizeof g_out, "cd '%s' && timeout 120 '%s' %s", dir, g_bin, args);
        print_message("  %-72s exit %d: %.*s\n", args, rc, (int)strcspn(g_out, "\n"), g_out);
        assert_true(rc > 0);
        const char *nl = strchr(g_out, '\n');
        /* the first line is the error and it names the option */
        assert_non_null(nl);
        char first[2048];
        snprintf(first, sizeof first, "%.*s", (int)(nl - g_out), g_out);
        if (!strstr(first, cases[i].needle)) fail_msg("case '%s': '%s' not in '%s'", args, cases[i].needle, first);
        assert_int_equal(count_entries(dir), 0);
    }
}

/* ---- train --resume: a table of every option ---- */

typedef struct {
    const char *name; /* without "--" */
    const char *same; /* the checkpoint's value (NULL: not applicable) */
    const char *other;
    int applies; /* 1: the value given on resume applies; 0: it must equal the checkpoint's */
} resume_case;

/* The checkpoint below was made with exactly these values. */
static const resume_case RESUME[] = {
    {"data", "shapeworld", "toy", 0},
    {"data-seed", "5", "6", 0},
    {"image-size", "16", "32", 0},
    {"patch", "4", "2", 0},
    {"layers", "1", "2", 0},
    {"dual-layers", "1", "0", 0},
    {"heads", "2", "1", 0},
    {"head-dim", "8", "16", 0},
    {"qk-norm", "rms", "none", 0},
    {"text-len", "16", "20", 0},
    {"text-dim", "8", "12", 0},
    {"batch", "2", "3", 0},
    {"lr", "0.002", "0.001", 0},
    {"min-lr", "0.0001", "0.0002", 0},
    {"warmup", "3", "4", 0},
    {"schedule", "constant", "cosine", 0},
    {"beta1", "0.85", "0.9", 0},
    {"beta2", "0.995", "0.99", 0},
    {"eps", "1e-07", "1e-08", 0},
    {"weight-decay", "0.02", "0.01", 0},
    {"clip", "0.5", "1", 0},
    {"ema", "0.95", "0.999", 0},
    {"cfg-drop", "0.2", "0.1", 0},
    {"logit-mean", "0.1", "0", 0},
    {"logit-std", "1.1", "1", 0},
    {"sample-shift", "2", "1", 0},
    {"seed", "7", "8", 0},
    {"steps", NULL, NULL, 1},
    {"log-every", NULL, NULL, 1},
    {"save-every", NULL, NULL, 1},
    {"threads", NULL, NULL, 1},
    {"out", NULL, NULL, 1},
    {"config", NULL, NULL, 1},
    {"bench-steps", NULL, NULL, 1},
};

static const resume_case *resume_case_of(const char *name) {
    for (size_t i = 0; i < sizeof RESUME / sizeof RESUME[0]; i++)
        if (!strcmp(RESUME[i].name, name)) return &RESUME[i];
    return NULL;
}

static void test_resume_every_option(void **st) {
    (void)st;
    /* every option the usage lists is in the table above: a new option fails here until its
     * resume behaviour is tested */
    assert_int_equal(tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --help", g_bin), 0);
    int listed = 0;
    for (const char *p = g_out; (p = strstr(p, "--"));) {
        p += 2;
        char name[64];
        size_t n = 0;
        while (n + 1 < sizeof name && ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) name[n++] = *p++;
        name[n] = 0;
        if (!n || !strcmp(name, "resume") || !strcmp(name, "bench")) continue;
        if (!resume_case_of(name)) fail_msg("option --%s of `train --help` is not in this test's table", name);
        listed++;
    }
    assert_true(listed >= (int)(sizeof RESUME / sizeof RESUME[0]));

    /* a one-step checkpoint with every fixed option given */
    char d[4200];
    snprintf(d, sizeof d, "%s", at("opts"));
    char base[2048] = "";
    for (size_t i = 0; i < sizeof RESUME / sizeof RESUME[0]; i++)
        if (RESUME[i].same) {
            char one[128];
            snprintf(one, sizeof one, " --%s %s", RESUME[i].name, RESUME[i].same);
            strcat(base, one);
        }
    int rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --steps 1 --threads 1 --log-every 0%s", g_bin, d, base);
    if (rc) fail_msg("%s", g_out);
    char *ckpt0 = tc_read_all(at("opts/checkpoint.safetensors"), NULL);
    assert_non_null(ckpt0);
    /* all of them again with the same values: fine */
    rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --threads 1%s", g_bin, d, base);
    if (rc) fail_msg("%s", g_out);
    assert_non_null(strstr(g_out, "nothing left to train"));
    /* each fixed option with another value: refused, naming the option and both values */
    for (size_t i = 0; i < sizeof RESUME / sizeof RESUME[0]; i++) {
        const resume_case *c = &RESUME[i];
        if (c->applies) continue;
        rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --threads 1 --%s %s", g_bin, d, c->name, c->other);
        print_message("  --resume --%s %s: exit %d: %s", c->name, c->other, rc, g_out);
        assert_int_equal(rc, 2);
        char want[256];
        snprintf(want, sizeof want, "--%s %s differs from the checkpoint's %s", c->name, c->other, c->same);
        if (!strstr(g_out, want)) fail_msg("'%s' not in '%s'", want, g_out);
        /* and in a config file: the error names the file and the key */
        char cfg[256];
        snprintf(cfg, sizeof cfg, "{\"%s\": \"%s\"}", c->name, c->other);
        assert_int_equal(tc_write_text(at("opts.json"), cfg), 0);
        rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --threads 1 --config '%s'", g_bin, d, at("opts.json"));
        assert_int_equal(rc, 2);
        snprintf(want, sizeof want, "opts.json: '%s' %s differs", c->name, c->other);
        if (!strstr(g_out, want)) fail_msg("'%s' not in '%s'", want, g_out);
    }
    /* nothing was touched by the refusals */
    size_t n1;
    char *ckpt1 = tc_read_all(at("opts/checkpoint.safetensors"), &n1);
    assert_non_null(ckpt1);
    assert_memory_equal(ckpt0, ckpt1, n1);
    free(ckpt1);
    /* the options that apply: --steps (not below the checkpoint's), --log-every, --save-every, --threads */
    rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --threads 1 --steps 0", g_bin, d);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(g_out, "--steps 0 is below the checkpoint's step 1"));
    rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --threads 2 --steps 3 --log-every 1 --save-every 0", g_bin, d);
    if (rc) fail_msg("%s", g_out);
    assert_non_null(strstr(g_out, "written with 1 threads, this run has 2")); /* --threads applies, with the note */
    assert_non_null(strstr(g_out, "resumed"));
    assert_non_null(strstr(g_out, "step 2/3"));
    assert_non_null(strstr(g_out, "step 3/3"));
    assert_non_null(strstr(g_out, "step 3 of 3"));
    /* --save-every applies: a resume with --save-every 1 --steps 4 leaves a checkpoint at step 4 */
    rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --threads 1 --steps 4 --save-every 1", g_bin, d);
    if (rc) fail_msg("%s", g_out);
    tr_opts o;
    assert_int_equal(tr_checkpoint_info(at("opts/checkpoint.safetensors"), NULL, &o, NULL, 0), 0);
    assert_int_equal(o.save_every, 1);
    assert_int_equal(o.steps, 4);
    assert_true(fabs(o.lr - 0.002) == 0 && o.seed == 7 && fabs(o.sample_shift - 2) == 0);
    /* --bench-steps is for --bench only, --bench does not resume */
    rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' --resume --bench-steps 2", g_bin, d);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(g_out, "--bench-steps"));
    free(ckpt0);
}

/* ---- long strings from a config file ---- */

static void test_config_strings_whole(void **st) {
    (void)st;
    /* an "out" of 200+ characters (the old parser kept 63: it trained into another folder) */
    char out[1024], cfg[4096];
    snprintf(out, sizeof out, "%s/long-%0200d/run", g_dir, 0);
    snprintf(cfg, sizeof cfg, "{\"out\": \"%s\", \"data\": \"toy\", \"image-size\": 16, \"patch\": 4, \"layers\": 1, "
             "\"heads\": 2, \"head-dim\": 8, \"text-len\": 12, \"text-dim\": 8, \"batch\": 2, \"steps\": 1, \"threads\": 1}", out);
    assert_int_equal(tc_write_text(at("long.json"), cfg), 0);
    int rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --config '%s'", g_bin, at("long.json"));
    if (rc) fail_msg("%s", g_out);
    char p[1200];
    snprintf(p, sizeof p, "%s/checkpoint.safetensors", out);
    assert_true(exists(p));
    snprintf(p, sizeof p, "%s/model/model_index.json", out);
    assert_true(exists(p));
    assert_int_equal(count_prefix(g_dir, "long"), 2); /* long.json and long-*: nothing at a cut-off name */
    assert_int_equal(count_entries(at("long-%0200d", 0)), 1);
    /* resume from the same config: the same folder */
    rc = tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --config '%s' --resume", g_bin, at("long.json"));
    if (rc) fail_msg("%s", g_out);
    assert_non_null(strstr(g_out, out));
    /* long values of the other string options are errors naming the file and the key, whole */
    static const char *const keys[] = {"data", "qk-norm", "schedule"};
    for (int k = 0; k < 3; k++) {
        char v[400];
        snprintf(v, sizeof v, "%s%0300d", k == 0 ? "toy" : k == 1 ? "rms" : "cosine", 0);
        snprintf(cfg, sizeof cfg, "{\"%s\": \"%s\"}", keys[k], v);
        assert_int_equal(tc_write_text(at("bad.json"), cfg), 0);
        rc = tc_run(g_out, sizeof g_out, "'%s' train --config '%s' --out '%s'", g_bin, at("bad.json"), at("badrun"));
        assert_int_equal(rc, 2);
        char want[512];
        snprintf(want, sizeof want, "bad.json: '%s' must be", keys[k]);
        if (!strstr(g_out, want) || !strstr(g_out, v)) fail_msg("'%s' or the whole value not in '%s'", want, g_out);
        assert_false(exists(at("badrun")));
    }
    /* a numeric key of the wrong kind, a duplicate key, a number that is not an integer */
    static const char *const bad[][2] = {{"{\"steps\": 1.5}", "bad.json: 'steps' must be an integer"},
                                         {"{\"steps\": 1, \"steps\": 2}", "duplicate"},
                                         {"{\"out\": 5}", "'out' must be a string"},
                                         {"{\"lr\": \"1e-3x\"}", "bad.json: 'lr' must be a number"},
                                         {"{\"batch\": 99999999999999999999}", "bad.json"}};
    for (int k = 0; k < 5; k++) {
        assert_int_equal(tc_write_text(at("bad.json"), bad[k][0]), 0);
        rc = tc_run(g_out, sizeof g_out, "'%s' train --config '%s' --out '%s'", g_bin, at("bad.json"), at("badrun"));
        assert_int_equal(rc, 2);
        if (!strstr(g_out, bad[k][1])) fail_msg("'%s' not in '%s'", bad[k][1], g_out);
        assert_false(exists(at("badrun")));
    }
}

/* ---- the export ---- */

static const char *const MODEL_FILES[] = {
    "model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.txt", "scheduler/scheduler_config.json"};
enum { N_MODEL_FILES = sizeof MODEL_FILES / sizeof MODEL_FILES[0] };

static int g_nfiles;
static int count_file(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)p, (void)sb, (void)ftw;
    g_nfiles += type == FTW_F || type == FTW_SL;
    return 0;
}

/* a == b file by file (the known files, and no other file in either) */
static int same_model(const char *a, const char *b) {
    for (int i = 0; i < N_MODEL_FILES; i++) {
        char pa[4200], pb[4200];
        snprintf(pa, sizeof pa, "%s/%s", a, MODEL_FILES[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, MODEL_FILES[i]);
        size_t na, nb;
        char *x = tc_read_all(pa, &na), *y = tc_read_all(pb, &nb);
        const int same = x && y && na == nb && !memcmp(x, y, na);
        free(x), free(y);
        if (!same) return 0;
    }
    g_nfiles = 0;
    if (nftw(a, count_file, 8, FTW_PHYS) || g_nfiles != N_MODEL_FILES) return 0;
    g_nfiles = 0;
    return nftw(b, count_file, 8, FTW_PHYS) == 0 && g_nfiles == N_MODEL_FILES;
}

/* the model folder exported (by the library) from the checkpoint DIR/checkpoint.safetensors, in ref */
static void export_of_checkpoint(const char *dir, const char *ref, long *step) {
    char ck[4200];
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    tr_data d = tr_data_toy(16);
    tr_trainer *t;
    if (tr_trainer_resume(&t, ck, NULL, &d) < 0) fail_msg("%s", ss_err());
    tc_rmtree(ref);
    if (tr_model_save(t->m, t->ema, t->vocab, t->opts.sample_shift, ref) < 0) fail_msg("%s", ss_err());
    if (step) *step = t->step;
    tr_trainer_free(t);
}

/* DIR/model is the export of DIR's checkpoint and nothing is left over */
static void assert_model_is_checkpoint(const char *dir) {
    char model[4200], ref[4200], p[4300];
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(ref, sizeof ref, "%s-ref", dir);
    export_of_checkpoint(dir, ref, NULL);
    if (!same_model(model, ref)) fail_msg("%s is not the export of the checkpoint", model);
    snprintf(p, sizeof p, "%s/model.tmp", dir);
    assert_false(exists(p));
    snprintf(p, sizeof p, "%s/model.old", dir);
    assert_false(exists(p));
    /* and it loads */
    snprintf(p, sizeof p, "%s/transformer", model);
    sd3_model *m;
    if (sd3_load(&m, p) < 0) fail_msg("%s", ss_err());
    sd3_free(m);
    te *e;
    if (te_load(&e, model) < 0) fail_msg("%s", ss_err());
    te_free(e);
    tc_rmtree(ref);
}

static int train(const char *dir, const char *extra) {
    return tc_run(g_out, sizeof g_out, "timeout 120 '%s' train --out '%s' %s %s", g_bin, dir, TINY, extra);
}

static void test_export_recovery(void **st) {
    (void)st;
    char d[4200];
    snprintf(d, sizeof d, "%s", at("rec"));
    char model[4300], tmp[4300], old[4300], stale[4300];
    snprintf(model, sizeof model, "%s/model", d);
    snprintf(tmp, sizeof tmp, "%s/model.tmp", d);
    snprintf(old, sizeof old, "%s/model.old", d);
    snprintf(stale, sizeof stale, "%s/stale", g_dir);
    /* --steps 0: the initial checkpoint and model (the old trainer claimed a model and wrote none) */
    if (train(d, "--steps 0")) fail_msg("%s", g_out);
    long step = -1;
    export_of_checkpoint(d, at("rec-step0"), &step);
    assert_int_equal(step, 0);
    assert_model_is_checkpoint(d);
    /* step 1, kept as the stale model; then step 2 */
    if (train(d, "--resume --steps 1")) fail_msg("%s", g_out);
    assert_int_equal(tc_run(g_out, sizeof g_out, "cp -r '%s' '%s'", model, stale), 0);
    if (train(d, "--resume --steps 2")) fail_msg("%s", g_out);
    assert_model_is_checkpoint(d);
    assert_false(same_model(model, stale)); /* the stale one really differs */

    /* 1. a leftover model.tmp of a killed export (half-written files, a writer's own .tmp) */
    assert_int_equal(tc_run(g_out, sizeof g_out, "mkdir -p '%s/transformer' && echo junk > '%s/transformer/"
                            "diffusion_pytorch_model.safetensors.tmp' && echo '{' > '%s/model_index.json'", tmp, tmp, tmp), 0);
    if (train(d, "--resume")) fail_msg("%s", g_out);
    assert_non_null(strstr(g_out, "nothing left to train"));
    assert_model_is_checkpoint(d);
    /* 2. no model/ (killed between the two renames of the old scheme) */
    tc_rmtree(model);
    if (train(d, "--resume")) fail_msg("%s", g_out);
    assert_model_is_checkpoint(d);
    /* 3. a stale model/ (killed between the checkpoint and the export) */
    tc_rmtree(model);
    assert_int_equal(tc_run(g_out, sizeof g_out, "cp -r '%s' '%s'", stale, model), 0);
    if (train(d, "--resume")) fail_msg("%s", g_out);
    assert_model_is_checkpoint(d);
    /* 4. model.old and model.tmp without model/ (the two-rename fallback, killed in between) */
    assert_int_equal(tc_run(g_out, sizeof g_out, "mv '%s' '%s' && cp -r '%s' '%s'", model, old, stale, tmp), 0);
    if (train(d, "--resume")) fail_msg("%s", g_out);
    assert_model_is_checkpoint(d);
    /* 5. a model/ that is a file is not replaced: an error, exit 1 */
    tc_rmtree(model);
    assert_int_equal(tc_write_text(model, "mine"), 0);
    assert_int_equal(train(d, "--resume"), 1);
    assert_non_null(strstr(g_out, "not a folder"));
    char *mine = tc_read_all(model, NULL);
    assert_string_equal(mine, "mine");
    free(mine);
    tc_rmtree(stale);
}

/* ---- kill -9 ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static pid_t spawn_train(const char *dir, int resume) {
    char *argv[] = {g_bin, "train", "--out", (char *)dir, "--data", "toy", "--image-size", "16", "--patch", "4",
                    "--layers", "1", "--heads", "2", "--head-dim", "8", "--text-len", "12", "--text-dim", "8",
                    "--batch", "2", "--threads", "1", "--log-every", "0", "--steps", "8", "--save-every", "1",
                    resume ? "--resume" : NULL, NULL};
    return tc_spawn(argv);
}

/* a complete model folder: every file there and the weights load */
static int model_complete(const char *model) {
    for (int i = 0; i < N_MODEL_FILES; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", model, MODEL_FILES[i]);
        if (!exists(p)) return 0;
    }
    char p[4400];
    snprintf(p, sizeof p, "%s/transformer", model);
    sd3_model *m;
    if (sd3_load(&m, p) < 0) return 0;
    sd3_free(m);
    te *e;
    if (te_load(&e, model) < 0) return 0;
    te_free(e);
    return 1;
}

static void test_kill9_resume(void **st) {
    (void)st;
    char ref[4200], k[4200];
    snprintf(ref, sizeof ref, "%s", at("k_ref"));
    snprintf(k, sizeof k, "%s", at("k_killed"));
    const double t0 = now_s();
    assert_int_equal(tc_wait_exit(spawn_train(ref, 0)), 0);
    const double full = now_s() - t0;
    char model[4300], ckpt[4300], tmp[4300], rm[4300];
    snprintf(model, sizeof model, "%s/model", k);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", k);
    snprintf(tmp, sizeof tmp, "%s/model.tmp", k);
    snprintf(rm, sizeof rm, "%s/model", ref);
    size_t na;
    char *a = tc_read_all(at("k_ref/checkpoint.safetensors"), &na);
    assert_non_null(a);
    /* trials: a fresh run killed at a random moment, the resume killed at another, then a
     * resume to the end; after each kill a model/ that was there is still there and complete;
     * at the end checkpoint and model are exactly those of the uninterrupted run */
    srand(20260426);
    int landed = 0, in_export = 0;
    for (int trial = 0; trial < 5; trial++) {
        tc_rmtree(k);
        int seen_model = 0;
        for (int kill_no = 0; kill_no < 2; kill_no++) {
            const double delay = fmax(0.01, (0.02 + 0.6 * rand() / (double)RAND_MAX) * full);
            pid_t pid = spawn_train(k, exists(ckpt));
            struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
            nanosleep(&ts, NULL);
            int status;
            if (waitpid(pid, &status, WNOHANG) == 0) {
                landed++;
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
            }
            in_export += exists(tmp);
            if (exists(model)) {
                if (!model_complete(model)) fail_msg("trial %d, kill %d: %s is incomplete", trial, kill_no, model);
                seen_model = 1;
            } else if (seen_model) {
                fail_msg("trial %d, kill %d: %s is gone", trial, kill_no, model);
            }
        }
        assert_int_equal(tc_wait_exit(spawn_train(k, exists(ckpt))), 0);
        size_t nb;
        char *b = tc_read_all(ckpt, &nb);
        assert_non_null(b);
        if (!(na == nb && !memcmp(a, b, na))) fail_msg("trial %d: the final checkpoint differs from the uninterrupted run's", trial);
        free(b);
        if (!same_model(rm, model)) fail_msg("trial %d: %s differs from the uninterrupted run's model", trial, model);
        assert_model_is_checkpoint(k);
    }
    free(a);
    print_message("  kill -9: full run %.2f s; %d of 10 kills landed in a live run, %d in an export\n", full, landed, in_export);
    assert_true(landed >= 1);
}

/* SIGINT: the run checkpoints, exports that state, says so and exits 130 (the old trainer said
 * "model in DIR/model" and exited 0) */
static void test_sigint(void **st) {
    (void)st;
    char d[4200];
    snprintf(d, sizeof d, "%s", at("int"));
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(at("int.log"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, STDERR_FILENO);
        execl(g_bin, g_bin, "train", "--out", d, "--data", "toy", "--image-size", "16", "--patch", "4", "--layers", "1",
              "--heads", "2", "--head-dim", "8", "--text-len", "12", "--text-dim", "8", "--batch", "2", "--threads", "1",
              "--log-every", "0", "--save-every", "0", "--steps", "100000000", (char *)NULL);
        _exit(127);
    }
    struct timespec ts = {0, 400 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGINT);
    assert_int_equal(tc_wait_exit(pid), 130);
    char *log = tc_read_all(at("int.log"), NULL);
    assert_non_null(log);
    print_message("  %s", log);
    assert_non_null(strstr(log, "interrupted"));
    assert_null(strstr(log, "written to"));
    long step = -1;
    export_of_checkpoint(d, at("int-ref"), &step);
    char want[128];
    snprintf(want, sizeof want, "hold step %ld of 100000000", step);
    assert_non_null(strstr(log, want));
    free(log);
    assert_model_is_checkpoint(d);
}

int main(int argc, char **argv) {
    (void)argc;
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1)) execv("/proc/self/exe", argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_command_lines),   cmocka_unit_test(test_resume_every_option),
        cmocka_unit_test(test_config_strings_whole), cmocka_unit_test(test_export_recovery),
        cmocka_unit_test(test_kill9_resume),        cmocka_unit_test(test_sigint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
