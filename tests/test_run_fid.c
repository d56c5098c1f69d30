/* `sinkscope run --metrics fid` and the report's FID_shift, on a tiny random pipeline (32 x 32
 * images, 2 prompts x 2 seeds) with random FID Inception weights in the real .pth format and
 * names (tests/fid_weights.c, the generator formula of tests/gen/gen_fid_inception_weights.py):
 *   - every record names its features file and SHA-256; the features are bit-identical to what
 *     `sinkscope metric fid --features` computes from the same PNGs, in both modes;
 *   - the report's FID_shift of a condition equals `sinkscope metric fid` on the condition's and
 *     the baseline's image folders; a no-op condition has FID_shift 0; the calibration rows
 *     (seed variation, baseline halves) are there with their N;
 *   - experiment.json records the mode; a resume with the other mode is refused naming
 *     metrics.fid_mode; a missing Inception file is refused before any image;
 *   - kill -9 during a run, then a resume: the same features as an uninterrupted run; finished
 *     features are not recomputed on resume (their files keep their inode);
 *   - the Gram form of the bootstrap (fid_gram_resample) gives fid_frechet's value on the
 *     identity resample. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "eval/shapeworld.h"
#include "fid_weights.h"
#include "io/fsutil.h"
#include "metric/fid.h"
#include "sample/pipeline.h"

#define INC_NAME "pt_inception-2015-12-05-6726825d.pth"

static char *g_root;
static double g_full_s = 1; /* wall time of the first uninterrupted run (test_run_and_report) */
static char g_model[512], g_prompts[512], g_conds[512], g_w[512], g_inc[600];

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

/* baseline (prepended) + A1 + a no-op */
static const char CONDS[] = "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1}, {\"name\": \"noop\", \"layers\": []}]\n";

static int setup(void **st) {
    (void)st;
    if (!(g_root = tc_tmpdir())) return -1;
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_prompts, sizeof g_prompts, "%s/prompts.txt", g_root);
    snprintf(g_conds, sizeof g_conds, "%s/conds.json", g_root);
    snprintf(g_w, sizeof g_w, "%s/weights", g_root);
    snprintf(g_inc, sizeof g_inc, "%s/inception/" INC_NAME, g_w);
    sd3_config tc = {.sample_size = 32, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = 16, .qk_norm = 1};
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(g_model, &tc, &ec, sw_vocabulary(), 3) < 0) return -1;
    if (tc_write_text(g_prompts, "a photo of a red circle\na photo of two squares\n") || tc_write_text(g_conds, CONDS)) return -1;
    char d[600];
    snprintf(d, sizeof d, "%s/inception", g_w);
    if (ss_mkdir_p(d) < 0 || tc_write_inception_pth(g_inc) < 0) return -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run_cli(char *out, size_t cap, const char *exp, const char *extra) {
    return tc_run(out, cap, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --seeds 2 --steps 2 --cfg 1 "
                  "--metrics fid --metric-weights '%s' --quiet %s 2>&1", tc_bin(), at("%s", exp), g_model, g_prompts, g_conds,
                  g_w, extra);
}

static json_t *load_records(const char *path) {
    char *b = tc_read_all(path, NULL);
    assert_non_null(b);
    json_t *a = json_array();
    char *save = NULL;
    for (char *line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *r = json_loads(line, 0, NULL);
        assert_non_null(r);
        json_array_append_new(a, r);
    }
    free(b);
    return a;
}

static const char *str(const json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    if (!s) fail_msg("no string '%s'", k);
    return s;
}

/* The features of `cond`'s records in image file name order, n_out rows (each record's file checked). */
static float *record_features(const char *exp, const json_t *recs, const char *cond, int *n_out) {
    const json_t *sel[64];
    int n = 0;
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) if (!strcmp(str(r, "condition"), cond)) sel[n++] = r;
    for (int a = 1; a < n; a++) /* by image name, as the folder is read */
        for (int b = a; b > 0 && strcmp(str(sel[b - 1], "image"), str(sel[b], "image")) > 0; b--) {
            const json_t *t = sel[b];
            sel[b] = sel[b - 1], sel[b - 1] = t;
        }
    float *f = malloc((size_t)n * 2048 * sizeof *f);
    assert_non_null(f);
    for (int k = 0; k < n; k++) {
        char want[256], path[1024];
        snprintf(want, sizeof want, "features/%s/%s", cond, strrchr(str(sel[k], "image"), '/') + 1);
        strcpy(strrchr(want, '.'), ".safetensors");
        assert_string_equal(str(sel[k], "features"), want);
        assert_int_equal(strlen(str(sel[k], "features_sha256")), 64);
        snprintf(path, sizeof path, "%s/%s", at("%s", exp), want);
        size_t nel;
        int64_t shp[4];
        int nd;
        float *x = tc_load(path, "pool3", &nel, shp, &nd);
        if (!x) fail_msg("%s: no pool3", path);
        assert_true(nd == 1 && nel == 2048);
        memcpy(f + (size_t)k * 2048, x, 2048 * sizeof *x);
        free(x);
    }
    *n_out = n;
    return f;
}

/* `metric fid` on images/A images/B: its JSON and the features of both folders */
static json_t *metric_fid(const char *exp, const char *a, const char *b, const char *mode, float **fa, float **fb) {
    char out[8192], feat[1024];
    snprintf(feat, sizeof feat, "%s", at("%s-%s-%s.safetensors", exp, a, b));
    int rc = tc_run(out, sizeof out, "%s metric fid --inception '%s' --mode %s '%s/images/%s' '%s/images/%s' --features '%s'",
                    tc_bin(), g_inc, mode, at("%s", exp), a, at("%s", exp), b, feat);
    if (rc) fail_msg("metric fid: %s", out);
    json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    if (!o) fail_msg("not JSON: %s", out);
    size_t na, nb;
    *fa = tc_load(feat, "features_a", &na, NULL, NULL);
    *fb = tc_load(feat, "features_b", &nb, NULL, NULL);
    assert_non_null(*fa), assert_non_null(*fb);
    return o;
}

static const json_t *summary_cond(const json_t *sm, const char *name) {
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(sm, "conditions"), i, c) if (!strcmp(str(c, "name"), name)) return c;
    fail_msg("summary.json: no condition %s", name);
    return NULL;
}

static void test_run_and_report(void **st) {
    (void)st;
    char out[65536];
    const double t0 = now_s();
    int rc = run_cli(out, sizeof out, "f1", "");
    g_full_s = now_s() - t0;
    if (rc) fail_msg("run: %s", out);
    json_t *recs = load_records(at("f1/records.jsonl"));
    assert_int_equal(json_array_size(recs), 12); /* 2 prompts x 2 seeds x (baseline + 2) */
    /* experiment.json: the metric, its mode and the Inception file's digest */
    json_t *e = json_load_file(at("f1/experiment.json"), 0, NULL);
    assert_non_null(e);
    const json_t *mo = json_object_get(e, "metrics");
    assert_int_equal(json_array_size(json_object_get(mo, "names")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(mo, "names"), 0)), "fid");
    assert_string_equal(str(mo, "fid_mode"), "pytorch-fid");
    assert_int_equal(strlen(json_string_value(json_object_get(json_object_get(mo, "weights_sha256"), "inception/" INC_NAME))), 64);
    json_decref(e);
    /* the records' features = `metric fid --features` on the same PNGs, bit for bit */
    float *fa, *fb;
    json_t *cli = metric_fid("f1", "A1", "baseline", "pytorch-fid", &fa, &fb);
    int na, nb;
    float *ra = record_features("f1", recs, "A1", &na), *rb = record_features("f1", recs, "baseline", &nb);
    assert_int_equal(na, 4);
    assert_int_equal(nb, 4);
    assert_memory_equal(ra, fa, (size_t)na * 2048 * sizeof *ra);
    assert_memory_equal(rb, fb, (size_t)nb * 2048 * sizeof *rb);
    assert_true(memcmp(ra, rb, 2048 * sizeof *ra) != 0); /* the intervention changed the first image */
    const double fid_cli = json_real_value(json_object_get(cli, "fid"));
    assert_string_equal(str(cli, "mode"), "pytorch-fid");
    assert_true(fid_cli > 0);
    free(fa), free(fb), free(ra), free(rb);
    json_decref(cli);
    json_decref(recs);
    /* the report: FID_shift = metric fid on the two folders; no-op = 0; calibration rows */
    rc = tc_run(out, sizeof out, "%s report '%s' --fid-bootstrap 300 2>&1", tc_bin(), at("f1"));
    if (rc) fail_msg("report: %s", out);
    if (!strstr(out, "FID_shift (pytorch-fid features)") || !strstr(out, "calibration: seed variation"))
        fail_msg("terminal tables: %s", out);
    fputs(strstr(out, "Learned metrics"), stdout);
    json_t *sm = json_load_file(at("f1/report/summary.json"), 0, NULL);
    assert_non_null(sm);
    const json_t *fm = json_object_get(json_object_get(summary_cond(sm, "A1"), "metrics"), "fid_shift");
    assert_non_null(fm);
    const double fid_rep = json_number_value(json_object_get(fm, "mean"));
    print_message("FID_shift A1: report %.17g, metric fid %.17g\n", fid_rep, fid_cli);
    assert_true(fid_rep == fid_cli);
    assert_int_equal(json_integer_value(json_object_get(fm, "n")), 4);
    const json_t *ci = json_object_get(fm, "ci95");
    assert_true(json_is_number(json_array_get(ci, 0)) && json_is_number(json_array_get(ci, 1)));
    assert_true(json_number_value(json_array_get(ci, 0)) <= json_number_value(json_array_get(ci, 1)));
    assert_false(json_is_true(json_object_get(fm, "identical_features")));
    const json_t *nm = json_object_get(json_object_get(summary_cond(sm, "noop"), "metrics"), "fid_shift");
    assert_true(json_number_value(json_object_get(nm, "mean")) == 0);
    assert_true(json_is_true(json_object_get(nm, "identical_features")));
    assert_true(json_number_value(json_array_get(json_object_get(nm, "ci95"), 1)) == 0);
    const json_t *fo = json_object_get(sm, "fid");
    assert_non_null(fo);
    assert_string_equal(str(fo, "mode"), "pytorch-fid");
    assert_int_equal(json_integer_value(json_object_get(fo, "bootstrap_resamples")), 300);
    const json_t *cal = json_object_get(fo, "calibration");
    assert_int_equal(json_array_size(cal), 2);
    assert_string_equal(str(json_array_get(cal, 0), "name"), "seed_variation");
    assert_string_equal(str(json_array_get(cal, 1), "name"), "prompt_halves");
    for (int i = 0; i < 2; i++) {
        const json_t *c = json_array_get(cal, (size_t)i);
        assert_int_equal(json_integer_value(json_object_get(c, "n")), 2);
        assert_true(json_number_value(json_object_get(c, "fid")) > 0);
    }
    json_decref(sm);
    char *t = tc_read_all(at("f1/report/conditions.csv"), NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, ",fid_shift,4,0,"));
    assert_non_null(strstr(t, ",fid_seed_variation,2,0,"));
    free(t);
    t = tc_read_all(at("f1/report/report.html"), NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, "FID_shift [95% CI]"));
    assert_non_null(strstr(t, "calibration: seed variation"));
    free(t);
    /* resume: nothing to do; with the other mode: refused, naming the field */
    rc = run_cli(out, sizeof out, "f1", "");
    if (rc || !strstr(out, "(0 new")) fail_msg("resume: %s", out);
    rc = run_cli(out, sizeof out, "f1", "--fid-mode clean-fid");
    assert_int_equal(rc, 1);
    if (!strstr(out, "field 'metrics.fid_mode' differs")) fail_msg("%s", out);
}

/* clean-fid mode: recorded, and the features are `metric fid --mode clean-fid`'s */
static void test_clean_mode(void **st) {
    (void)st;
    char out[65536];
    assert_int_equal(tc_write_text(at("conds_noop.json"), "[{\"name\": \"noop\", \"layers\": []}]\n"), 0);
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --seeds 2 --steps 2 "
                    "--cfg 1 --limit-prompts 1 --metrics fid --fid-mode clean-fid --metric-weights '%s' --quiet 2>&1",
                    tc_bin(), at("c1"), g_model, g_prompts, at("conds_noop.json"), g_w);
    if (rc) fail_msg("run: %s", out);
    json_t *e = json_load_file(at("c1/experiment.json"), 0, NULL);
    assert_string_equal(str(json_object_get(e, "metrics"), "fid_mode"), "clean-fid");
    json_decref(e);
    json_t *recs = load_records(at("c1/records.jsonl"));
    float *fa, *fb;
    json_t *cli = metric_fid("c1", "noop", "baseline", "clean-fid", &fa, &fb);
    int na, nb;
    float *ra = record_features("c1", recs, "noop", &na), *rb = record_features("c1", recs, "baseline", &nb);
    assert_int_equal(na, 2);
    assert_memory_equal(ra, fa, (size_t)na * 2048 * sizeof *ra);
    assert_memory_equal(rb, fb, (size_t)nb * 2048 * sizeof *rb);
    assert_memory_equal(ra, rb, (size_t)na * 2048 * sizeof *ra); /* the no-op leaves the images as they are */
    free(fa), free(fb), free(ra), free(rb);
    json_decref(cli);
    json_decref(recs);
    rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), at("c1"));
    if (rc) fail_msg("report: %s", out);
    json_t *sm = json_load_file(at("c1/report/summary.json"), 0, NULL);
    assert_string_equal(str(json_object_get(sm, "fid"), "mode"), "clean-fid");
    const json_t *nm = json_object_get(json_object_get(summary_cond(sm, "noop"), "metrics"), "fid_shift");
    assert_true(json_number_value(json_object_get(nm, "mean")) == 0);
    assert_int_equal(json_integer_value(json_object_get(nm, "n")), 2);
    json_decref(sm);
    /* a features file that changed after the run: a warning naming it, and its pair is left out */
    assert_int_equal(tc_write_text(at("c1/features/baseline/00000_0.safetensors"), "not features"), 0);
    rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), at("c1"));
    if (rc || !strstr(out, "features/baseline/00000_0.safetensors): wrong SHA-256; left out of FID_shift"))
        fail_msg("report: %s", out);
    sm = json_load_file(at("c1/report/summary.json"), 0, NULL);
    nm = json_object_get(json_object_get(summary_cond(sm, "noop"), "metrics"), "fid_shift");
    assert_int_equal(json_integer_value(json_object_get(nm, "n")), 1);
    assert_int_equal(json_integer_value(json_object_get(nm, "n_missing")), 1);
    assert_true(json_is_null(json_object_get(nm, "mean")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sm, "fid"), "features_flagged")), 1);
    json_decref(sm);
}

static void test_errors(void **st) {
    (void)st;
    char out[8192];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --steps 1 --metrics fid "
                    "--metric-weights '%s' 2>&1", tc_bin(), at("bad1"), g_model, g_prompts, at("no-weights"));
    assert_int_equal(rc, 1);
    if (!strstr(out, "no-weights/inception/pt_inception-2015-12-05*.pth is missing")) fail_msg("%s", out);
    assert_int_equal(access(at("bad1/images"), F_OK), -1);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --steps 1 --metrics fid --fid-mode tf "
                "--metric-weights '%s' 2>&1", tc_bin(), at("bad1"), g_model, g_prompts, g_w);
    assert_int_equal(rc, 2);
    if (!strstr(out, "--fid-mode must be pytorch-fid or clean-fid, not 'tf'")) fail_msg("%s", out);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --steps 1 --fid-mode clean-fid 2>&1", tc_bin(),
                at("bad1"), g_model, g_prompts);
    assert_int_equal(rc, 2);
    if (!strstr(out, "--fid-mode needs fid in --metrics")) fail_msg("%s", out);
}

/* ---- kill -9 and resume ---- */

static pid_t spawn_run(const char *exp) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        dup2(devnull, STDOUT_FILENO);
        execl(tc_bin(), tc_bin(), "run", "--exp", exp, "--model", g_model, "--prompts", g_prompts, "--conditions", g_conds,
              "--seeds", "2", "--steps", "2", "--cfg", "1", "--metrics", "fid", "--metric-weights", g_w, "--quiet",
              "--threads", "1", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int s;
    waitpid(pid, &s, 0);
    return WIFEXITED(s) ? WEXITSTATUS(s) : -WTERMSIG(s);
}

static ino_t inode_of(const char *path) {
    struct stat sb;
    if (stat(path, &sb)) fail_msg("%s: missing", path);
    return sb.st_ino;
}

/* every features file of f1 and `exp` byte-identical */
static void same_features(const char *exp) {
    json_t *recs = load_records(at("f1/records.jsonl"));
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) {
        const char *rel = str(r, "features");
        size_t n1, n2;
        char *a = tc_read_all(at("f1/%s", rel), &n1), *b = tc_read_all(at("%s/%s", exp, rel), &n2);
        if (!a || !b || n1 != n2 || memcmp(a, b, n1)) fail_msg("%s/%s differs from the uninterrupted run's", exp, rel);
        free(a), free(b);
    }
    json_decref(recs);
}

static void test_kill_resume(void **st) {
    (void)st;
    char k2[1024];
    snprintf(k2, sizeof k2, "%s", at("k2"));
    const double full = g_full_s; /* f1: the same experiment, uninterrupted (its features are the reference) */
    srand(20261202);
    int landed = 0;
    for (int i = 0; i < 3; i++) {
        const double delay = fmax(0.05, (0.15 + 0.25 * rand() / (double)RAND_MAX) * full);
        pid_t pid = spawn_run(k2);
        struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        int s;
        if (waitpid(pid, &s, WNOHANG) == 0) {
            landed++;
            kill(pid, SIGKILL);
            waitpid(pid, &s, 0);
        }
    }
    assert_true(landed >= 1);
    assert_int_equal(wait_exit(spawn_run(k2)), 0);
    print_message("kill -9: full run %.2f s, %d of 3 kills landed\n", full, landed);
    same_features("k2");
    /* finished features are not recomputed: drop the last two records, resume; only those two
     * items are made again (their features files replaced), the others keep their files */
    json_t *recs = load_records(at("k2/records.jsonl"));
    const size_t n = json_array_size(recs);
    assert_int_equal(n, 12);
    ino_t ino[12];
    for (size_t i = 0; i < n; i++) ino[i] = inode_of(at("k2/%s", str(json_array_get(recs, i), "features")));
    size_t len;
    char *txt = tc_read_all(at("k2/records.jsonl"), &len);
    size_t keep = len; /* drop the last two lines */
    for (int nl = 0; keep > 0; keep--)
        if (txt[keep - 1] == '\n' && ++nl == 3) break;
    txt[keep] = 0;
    assert_int_equal(tc_write_text(at("k2/records.jsonl"), txt), 0);
    free(txt);
    char out[8192];
    int rc = run_cli(out, sizeof out, "k2", "");
    if (rc || !strstr(out, "(2 new")) fail_msg("resume: %s", out);
    for (size_t i = 0; i < n; i++) {
        const ino_t now = inode_of(at("k2/%s", str(json_array_get(recs, i), "features")));
        if (i < n - 2 && now != ino[i]) fail_msg("%s was rewritten on resume", str(json_array_get(recs, i), "features"));
        if (i >= n - 2 && now == ino[i]) fail_msg("%s was not made again", str(json_array_get(recs, i), "features"));
    }
    same_features("k2");
    /* a features file that is gone: its item is made again on resume, with a warning */
    assert_int_equal(unlink(at("k2/%s", str(json_array_get(recs, 0), "features"))), 0);
    rc = run_cli(out, sizeof out, "k2", "");
    if (rc || !strstr(out, "without its FID features")) fail_msg("resume: %s", out);
    same_features("k2");
    json_decref(recs);
}

/* fid_gram_resample on the identity resample = fid_frechet; a duplicate-heavy resample is finite */
static void test_gram_matches_frechet(void **st) {
    (void)st;
    const int n = 7, d = 40;
    float *a = malloc(sizeof(float) * n * d), *b = malloc(sizeof(float) * n * d);
    tc_fill(a, (size_t)n * d, 11, 1.0f);
    tc_fill(b, (size_t)n * d, 12, 1.0f);
    for (int i = 0; i < n * d; i++) b[i] = 0.7f * b[i] + 0.5f * a[i] + 0.2f;
    fid_stats sa, sb;
    fid_result r;
    assert_int_equal(fid_stats_compute_f32(&sa, a, n, d), 0);
    assert_int_equal(fid_stats_compute_f32(&sb, b, n, d), 0);
    assert_int_equal(fid_frechet(&sa, &sb, &r), 0);
    fid_gram *g;
    assert_int_equal(fid_gram_new(&g, a, b, n, d), 0);
    int idx[7] = {0, 1, 2, 3, 4, 5, 6}, dup[7] = {3, 3, 0, 6, 6, 6, 1};
    double x, y;
    assert_int_equal(fid_gram_resample(g, idx, &x), 0);
    print_message("identity resample: gram %.15g, fid_frechet %.15g\n", x, r.fid);
    assert_true(fabs(x - r.fid) <= 1e-9 * fabs(r.fid));
    /* the resample by hand: its rows through fid_frechet */
    float *ra = malloc(sizeof(float) * n * d), *rb = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n; i++)
        memcpy(ra + i * d, a + dup[i] * d, sizeof(float) * d), memcpy(rb + i * d, b + dup[i] * d, sizeof(float) * d);
    fid_stats_free(&sa), fid_stats_free(&sb);
    assert_int_equal(fid_stats_compute_f32(&sa, ra, n, d), 0);
    assert_int_equal(fid_stats_compute_f32(&sb, rb, n, d), 0);
    assert_int_equal(fid_frechet(&sa, &sb, &r), 0);
    assert_int_equal(fid_gram_resample(g, dup, &y), 0);
    print_message("duplicate resample: gram %.15g, fid_frechet %.15g\n", y, r.fid);
    assert_true(fabs(y - r.fid) <= 1e-8 * fabs(r.fid));
    dup[0] = 7;
    assert_true(fid_gram_resample(g, dup, &y) < 0);
    fid_gram_free(g);
    fid_stats_free(&sa), fid_stats_free(&sb);
    free(a), free(b), free(ra), free(rb);
    /* fid_bootstrap_pairs: the Gram path (n <= dim) against the statistics path (n > dim) on the
     * same resamples, and the same numbers with 1 and 3 threads */
    const int n2 = 30, d2 = 8, B = 4;
    a = malloc(sizeof(float) * n2 * 64), b = malloc(sizeof(float) * n2 * 64); /* read as [30, 8] and as [30, 64] */
    tc_fill(a, (size_t)n2 * 64, 21, 1.0f);
    tc_fill(b, (size_t)n2 * 64, 22, 1.0f);
    for (int i = 0; i < n2 * 64; i++) b[i] = 0.6f * b[i] + 0.6f * a[i] - 0.1f;
    int *ix = malloc(sizeof(int) * n2 * B);
    for (int i = 0; i < n2 * B; i++) ix[i] = (i * 7 + i / 5) % n2;
    double stats_path[4], gram_path[4], one[4], three[4];
    assert_int_equal(fid_bootstrap_pairs(a, b, n2, d2, ix, B, stats_path), 0);
    assert_int_equal(fid_gram_new(&g, a, b, n2, d2), 0);
    for (int k = 0; k < B; k++) assert_int_equal(fid_gram_resample(g, ix + k * n2, &gram_path[k]), 0);
    fid_gram_free(g);
    for (int k = 0; k < B; k++) {
        print_message("resample %d: statistics %.15g, gram %.15g\n", k, stats_path[k], gram_path[k]);
        assert_true(stats_path[k] > 0 && fabs(stats_path[k] - gram_path[k]) <= 1e-9 * stats_path[k]);
    }
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(fid_bootstrap_pairs(a, b, n2, 64, ix, B, one), 0); /* n <= dim: the Gram path, in parallel */
    omp_set_num_threads(3);
    assert_int_equal(fid_bootstrap_pairs(a, b, n2, 64, ix, B, three), 0);
    omp_set_num_threads(saved);
    assert_memory_equal(one, three, sizeof one);
    free(a), free(b), free(ix);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gram_matches_frechet),
        cmocka_unit_test(test_run_and_report),
        cmocka_unit_test(test_clean_mode),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_kill_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
