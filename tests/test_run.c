/* sinkscope run: digests, metrics against hand-computed values, the protocol and presets, and
 * the runner on a tiny random-weight pipeline (full run, resume no-op, torn last line, refused
 * configuration changes, errors), plus kill -9 at random moments vs an uninterrupted run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "eval/shapeworld.h"
#include "exp/digest.h"
#include "exp/metrics.h"
#include "exp/protocol.h"
#include "exp/records.h"
#include "exp/runner.h"
#include "io/png.h"
#include "sample/pipeline.h"

static char *g_root;
static char g_model[512], g_prompts[512], g_conds[512], g_text[512];

/* ---- helpers ---- */

/* path under the test's scratch folder */
static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

static void write_text(const char *path, const char *text) { assert_int_equal(tc_write_text(path, text), 0); }

static char *slurp(const char *path, size_t *n) {
    if (n) *n = 0;
    return tc_read_all(path, n);
}

static int count_lines(const char *path) {
    char *b = slurp(path, NULL);
    if (!b) return -1;
    int n = 0;
    for (char *p = b; *p; p++) n += *p == '\n';
    free(b);
    return n;
}

/* The records of a file as a JSON object key -> record; *dups counts repeated keys. */
static json_t *records_by_key(const char *path, int *n_lines, int *dups) {
    char *b = slurp(path, NULL);
    assert_non_null(b);
    json_t *o = json_object();
    *n_lines = 0;
    *dups = 0;
    char *save = NULL;
    for (char *line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        if (!r) fail_msg("%s: bad line: %s", path, je.text);
        const char *key = json_string_value(json_object_get(r, "key"));
        assert_non_null(key);
        if (json_object_get(o, key)) (*dups)++;
        json_object_set_new(o, key, r);
        (*n_lines)++;
    }
    free(b);
    return o;
}

/* Sorted relative paths of the files under dir (recursive). */
static int list_tree(const char *dir, const char *rel, char **out, int n, int cap) {
    char path[1200];
    snprintf(path, sizeof path, "%s%s%s", dir, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) return n;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[1200], full[2400];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", dir, sub);
        struct stat sb;
        if (stat(full, &sb)) continue;
        if (S_ISDIR(sb.st_mode)) n = list_tree(dir, sub, out, n, cap);
        else if (n < cap) out[n++] = strdup(sub);
    }
    closedir(d);
    return n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int tree(const char *dir, char **out, int cap) {
    int n = list_tree(dir, "", out, 0, cap);
    qsort(out, n, sizeof *out, cmp_str);
    return n;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
}

/* Every file under a and b: the same names and the same bytes. */
static void assert_same_tree(const char *a, const char *b) {
    char *la[4096], *lb[4096];
    int na = tree(a, la, 4096), nb = tree(b, lb, 4096);
    assert_int_equal(na, nb);
    for (int i = 0; i < na; i++) {
        assert_string_equal(la[i], lb[i]);
        char pa[2400], pb[2400];
        snprintf(pa, sizeof pa, "%s/%s", a, la[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, lb[i]);
        size_t sa = 0, sb = 0;
        char *ba = slurp(pa, &sa), *bb = slurp(pb, &sb);
        if (sa != sb || memcmp(ba, bb, sa)) fail_msg("%s differs between %s and %s", la[i], a, b);
        free(ba);
        free(bb);
    }
    free_list(la, na);
    free_list(lb, nb);
}

/* Records of two folders equal except the timing field. */
static void assert_same_records(const char *a, const char *b, int expect) {
    int na, nb, da, db;
    json_t *ra = records_by_key(a, &na, &da), *rb = records_by_key(b, &nb, &db);
    assert_int_equal(na, expect);
    assert_int_equal(nb, expect);
    assert_int_equal(da, 0);
    assert_int_equal(db, 0);
    const char *key;
    json_t *v;
    json_object_foreach(ra, key, v) {
        json_t *w = json_object_get(rb, key);
        if (!w) fail_msg("record %s missing from %s", key, b);
        json_object_del(v, "seconds");
        json_object_del(w, "seconds");
        if (!json_equal(v, w)) fail_msg("record %s differs between %s and %s", key, a, b);
    }
    json_decref(ra);
    json_decref(rb);
}

static sd3_config tiny_transformer(int size, int layers, int heads, int hd) {
    sd3_config c = {.sample_size = size, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = layers,
                    .head_dim = hd, .num_heads = heads, .joint_attention_dim = 16, .caption_projection_dim = heads * hd,
                    .pooled_projection_dim = 16, .pos_embed_max_size = size / 2, .qk_norm = 1};
    return c;
}

static void make_model(const char *dir, int size, int layers, int heads, int hd, uint64_t seed) {
    sd3_config tc = tiny_transformer(size, layers, heads, hd);
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(dir, &tc, &ec, sw_vocabulary(), seed) < 0) fail_msg("pipe_init_random: %s", ss_err());
}

static const char CONDS[] =
    "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1},\n"
    " {\"name\": \"R2\", \"layers\": [0, 1], \"select\": \"random\", \"k\": 2, \"rank_by\": \"union\"},\n"
    " {\"name\": \"noop\", \"layers\": []},\n"
    " {\"name\": \"Vmean\", \"layers\": [0], \"path\": \"value\", \"value\": \"mean\", \"steps\": [0, 0.5]}]\n";
#define N_CONDS 5 /* with the baseline */
#define N_PROMPTS 3
#define N_SEEDS 2
#define STEPS 4

static int setup(void **st) {
    (void)st;
    if (!(g_root = tc_tmpdir())) return -1;
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_prompts, sizeof g_prompts, "%s/prompts.jsonl", g_root);
    snprintf(g_conds, sizeof g_conds, "%s/conds.json", g_root);
    snprintf(g_text, sizeof g_text, "%s/prompts.txt", g_root);
    sd3_config tc = tiny_transformer(8, 2, 2, 8);
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(g_model, &tc, &ec, sw_vocabulary(), 3) < 0) {
        fprintf(stderr, "setup: %s\n", ss_err());
        return -1;
    }
    /* three prompts of different tags from the evaluation set */
    gv_meta *set = malloc(sizeof *set * SW_EVAL_N);
    if (sw_eval_set(set, SW_EVAL_N) != SW_EVAL_N) return -1;
    FILE *f = fopen(g_prompts, "w");
    for (int i = 0; i < N_PROMPTS; i++) {
        char line[2048];
        if (gv_meta_to_json(&set[i * SW_EVAL_PER_TAG + i], line, sizeof line) < 0) return -1;
        fprintf(f, "%s\n", line);
    }
    fclose(f);
    free(set);
    FILE *c = fopen(g_conds, "w");
    fputs(CONDS, c);
    fclose(c);
    FILE *t = fopen(g_text, "w");
    fputs("a photo of a red circle\n\n  a photo of two squares  \n", t);
    fclose(t);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

static sink_condition *g_list;
static int g_nlist;

/* A run of the test experiment into exp (relative to the temporary root). */
static int run_in(const char *exp, const char *model, const char *prompts, int seeds, int steps, double cfg) {
    free(g_list);
    if (sink_condition_list_load(&g_list, &g_nlist, g_conds) < 0) fail_msg("%s", ss_err());
    run_config c;
    run_config_default(&c);
    c.exp_dir = at("%s", exp);
    c.model_dir = model;
    c.prompts_path = prompts;
    c.conds = g_list;
    c.n_conds = g_nlist;
    c.conditions_source = g_conds;
    c.seeds_per_prompt = seeds;
    c.steps = steps;
    c.cfg = cfg;
    c.quiet = 1;
    run_result res;
    int rc = run_experiment(&c, &res);
    free(g_list);
    g_list = NULL;
    return rc < 0 ? rc : (int)res.made;
}

static int run_std(const char *exp) { return run_in(exp, g_model, g_prompts, N_SEEDS, STEPS, 2.0); }

/* ---- digests ---- */

static void test_sha256_known_answers(void **st) {
    (void)st;
    static const struct {
        const char *msg, *hex;
    } KAT[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[DIGEST_HEX];
    for (size_t i = 0; i < sizeof KAT / sizeof KAT[0]; i++) {
        sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, KAT[i].msg, strlen(KAT[i].msg));
        sha256_final_hex(&c, hex);
        assert_string_equal(hex, KAT[i].hex);
    }
    /* one million 'a', fed in uneven pieces */
    sha256_ctx c;
    sha256_init(&c);
    char a[1000];
    memset(a, 'a', sizeof a);
    size_t left = 1000000, piece = 1;
    while (left) {
        size_t n = piece < left ? piece : left;
        sha256_update(&c, a, n);
        left -= n;
        piece = piece % 887 + 13;
    }
    sha256_final_hex(&c, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* a file gives the digest of its bytes; a pipeline folder changes when a weight file does */
    write_text(at("abc.txt"), "abc");
    assert_int_equal(digest_file(at("abc.txt"), hex), 0);
    assert_string_equal(hex, KAT[1].hex);
    char d1[DIGEST_HEX], d2[DIGEST_HEX];
    assert_int_equal(digest_pipeline(g_model, d1), 0);
    assert_int_equal(digest_pipeline(g_model, d2), 0);
    assert_string_equal(d1, d2);
    make_model(at("model_b"), 8, 2, 2, 8, 4); /* same shapes, other weights */
    assert_int_equal(digest_pipeline(at("model_b"), d2), 0);
    assert_string_not_equal(d1, d2);
}

/* ---- metrics ---- */

static void fill(uint8_t *x, int n, int v) { memset(x, v, (size_t)n); }

/* SSIM straight from the definition: every valid window, weights computed in place. */
static double naive_ssim(const uint8_t *a, const uint8_t *b, int w, int h) {
    const int win = img_ssim_window(w, h), r = (win - 1) / 2;
    double total = 0;
    for (int c = 0; c < 3; c++) {
        double s = 0;
        int nwin = 0;
        for (int y0 = 0; y0 + win <= h; y0++)
            for (int x0 = 0; x0 + win <= w; x0++) {
                double ws = 0, mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
                for (int dy = 0; dy < win; dy++)
                    for (int dx = 0; dx < win; dx++) {
                        const double g = exp(-((dx - r) * (dx - r) + (dy - r) * (dy - r)) / (2 * 1.5 * 1.5));
                        const size_t i = ((size_t)(y0 + dy) * w + x0 + dx) * 3 + c;
                        const double x = a[i] / 255.0, yv = b[i] / 255.0;
                        ws += g;
                        mx += g * x, my += g * yv, xx += g * x * x, yy += g * yv * yv, xy += g * x * yv;
                    }
                mx /= ws, my /= ws, xx /= ws, yy /= ws, xy /= ws;
                const double C1 = 1e-4, C2 = 9e-4;
                s += (2 * mx * my + C1) * (2 * (xy - mx * my) + C2) /
                     ((mx * mx + my * my + C1) * (xx - mx * mx + yy - my * my + C2));
                nwin++;
            }
        total += s / nwin;
    }
    return total / 3;
}

static void test_pixel_metrics(void **st) {
    (void)st;
    enum { W = 32, H = 32, N = W * H * 3 };
    uint8_t a[N], b[N];
    /* identical images */
    for (int i = 0; i < N; i++) a[i] = (uint8_t)((i * 37 + (i / 96) * 11) % 256);
    memcpy(b, a, N);
    assert_true(img_mse(a, b, W, H) == 0.0);
    assert_true(isinf(img_psnr(0.0)) && img_psnr(0.0) > 0);
    assert_true(fabs(img_ssim(a, b, W, H) - 1.0) < 1e-12);
    /* uniform 100 vs uniform 110: MSE (10/255)^2, PSNR 20 log10(25.5),
     * SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) (no variance anywhere) */
    fill(a, N, 100);
    fill(b, N, 110);
    const double mse = img_mse(a, b, W, H), ma = 100 / 255.0, mb = 110 / 255.0;
    assert_true(fabs(mse - (10.0 / 255) * (10.0 / 255)) < 1e-15);
    assert_true(fabs(img_psnr(mse) - 20 * log10(25.5)) < 1e-9);
    assert_true(fabs(img_ssim(a, b, W, H) - (2 * ma * mb + 1e-4) / (ma * ma + mb * mb + 1e-4)) < 1e-12);
    /* +-d alternating noise around a mid-gray: MSE (d/255)^2 */
    for (int i = 0; i < N; i++) b[i] = (uint8_t)(100 + ((i / 3 + i / 96) % 2 ? 7 : -7));
    assert_true(fabs(img_mse(a, b, W, H) - (7.0 / 255) * (7.0 / 255)) < 1e-15);
    assert_true(fabs(img_psnr(img_mse(a, b, W, H)) - 20 * log10(255.0 / 7)) < 1e-9);
    /* the separable filter equals SSIM from its definition; symmetric; windows fit small images */
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = (uint8_t)(s >> 56);
        b[i] = (uint8_t)(a[i] / 2 + 60 + (int)((s >> 40) & 15));
    }
    const int sizes[][2] = {{32, 32}, {16, 8}, {8, 8}, {12, 20}};
    for (int t = 0; t < 4; t++) {
        const int w = sizes[t][0], h = sizes[t][1];
        const double fast = img_ssim(a, b, w, h), ref = naive_ssim(a, b, w, h);
        if (fabs(fast - ref) > 1e-12) fail_msg("SSIM %dx%d: %.15f vs reference %.15f", w, h, fast, ref);
        assert_true(fabs(fast - img_ssim(b, a, w, h)) < 1e-12);
        assert_true(fast < 1.0 && fast > -1.0);
    }
    assert_int_equal(img_ssim_window(32, 32), 11);
    assert_int_equal(img_ssim_window(16, 8), 7);
    assert_int_equal(img_ssim_window(10, 40), 9);
}

static void test_geneval_metric(void **st) {
    (void)st;
    gv_meta m[SW_EVAL_N];
    assert_int_equal(sw_eval_set(m, SW_EVAL_N), SW_EVAL_N);
    uint8_t rgb[32 * 32 * 3], gray[32 * 32 * 3];
    memset(gray, 128, sizeof gray);
    for (int i = 0; i < SW_EVAL_N; i += 17) {
        assert_int_equal(sw_render_meta(&m[i], 7, 32, 32, rgb, NULL), 0);
        char why[256];
        if (metric_geneval(&m[i], rgb, 32, 32, why, sizeof why) != 1) fail_msg("'%s' on its own scene: %s", m[i].prompt, why);
        assert_int_equal(metric_geneval(&m[i], gray, 32, 32, NULL, 0), 0);
    }
}

/* ---- protocol and presets ---- */

static void test_block_map_and_presets(void **st) {
    (void)st;
    exp_blocks b = exp_block_map(24);
    assert_int_equal(b.early, 6);
    assert_int_equal(b.middle, 12);
    assert_int_equal(b.late, 18);
    b = exp_block_map(6);
    assert_int_equal(b.early, 1);
    assert_int_equal(b.middle, 3);
    assert_int_equal(b.late, 4);
    b = exp_block_map(4);
    assert_int_equal(b.early + b.middle + b.late, 1 + 2 + 3);
    b = exp_block_map(1);
    assert_int_equal(b.early + b.middle + b.late, 0);
    /* the built-in core protocol for a 6-block model is configs/presets/core.json */
    sink_condition *core, *file;
    int nc, nf;
    b = exp_block_map(6);
    assert_int_equal(exp_core_conditions(&b, &core, &nc), 0);
    assert_int_equal(sink_condition_list_load(&file, &nf, "configs/presets/core.json"), 0);
    assert_int_equal(exp_conditions_prepare(&file, &nf, "core.json"), 0);
    assert_int_equal(nc, nf);
    for (int i = 0; i < nc; i++) {
        json_t *x = sink_condition_to_json(&core[i]), *y = sink_condition_to_json(&file[i]);
        if (!json_equal(x, y)) fail_msg("core protocol condition %d (%s) differs from configs/presets/core.json", i, core[i].name);
        json_decref(x);
        json_decref(y);
    }
    assert_string_equal(core[0].name, "baseline");
    assert_int_equal(core[0].n_layers, 0);
    free(core);
    free(file);
    /* every preset parses, gets its baseline, fits a 6-block 32x32 model (256 image + 16 text
     * tokens) and is refused by a 2-block one with the block named */
    static const char *const P[] = {"core", "dose_score", "value_sweep", "phases", "text_vs_image", "k_sweep", "noop",
                                    "baseline"};
    static const int COUNT[] = {10, 6, 5, 4, 4, 11, 2, 1};
    for (int i = 0; i < 8; i++) {
        char path[200];
        snprintf(path, sizeof path, "configs/presets/%s.json", P[i]);
        sink_condition *l;
        int n;
        if (sink_condition_list_load(&l, &n, path) < 0) fail_msg("%s", ss_err());
        assert_int_equal(exp_conditions_prepare(&l, &n, path), 0);
        assert_int_equal(n, COUNT[i]);
        ss_site s6[6], s2[2];
        sd3_config c6 = {.num_layers = 6}, c2 = {.num_layers = 2};
        assert_int_equal(sd3_sites(&c6, 256, 16, s6, 6), 6);
        assert_int_equal(sd3_sites(&c2, 256, 16, s2, 2), 2);
        if (exp_conditions_check(l, n, s6, 6, path) < 0) fail_msg("%s", ss_err());
        if (strcmp(P[i], "noop") && strcmp(P[i], "baseline")) {
            assert_true(exp_conditions_check(l, n, s2, 2, path) < 0);
            assert_non_null(strstr(ss_err(), "field 'layers' names block 3, but the model has 2 blocks"));
        }
        free(l);
    }
    /* baseline rules */
    sink_condition two[2];
    exp_baseline(&two[0]);
    exp_baseline(&two[1]);
    snprintf(two[0].name, sizeof two[0].name, "x");
    sink_condition *l = malloc(sizeof two);
    memcpy(l, two, sizeof two);
    int n = 2;
    assert_true(exp_conditions_prepare(&l, &n, "t") < 0);
    assert_non_null(strstr(ss_err(), "reserved for condition 0"));
    snprintf(l[1].name, sizeof l[1].name, "x");
    assert_true(exp_conditions_prepare(&l, &n, "t") < 0);
    assert_non_null(strstr(ss_err(), "the same 'name'"));
    snprintf(l[1].name, sizeof l[1].name, "../up");
    assert_true(exp_conditions_prepare(&l, &n, "t") < 0);
    assert_non_null(strstr(ss_err(), "folder name"));
    free(l);
}

/* ---- the runner ---- */

static void test_full_run(void **st) {
    (void)st;
    const int expect = N_CONDS * N_PROMPTS * N_SEEDS;
    int made = run_std("full");
    if (made < 0) fail_msg("run: %s", ss_err());
    assert_int_equal(made, expect);
    int n, dups;
    json_t *recs = records_by_key(at("full/records.jsonl"), &n, &dups);
    assert_int_equal(n, expect);
    assert_int_equal(dups, 0);
    assert_int_equal((int)json_object_size(recs), expect);
    static const char *const NAMES[N_CONDS] = {"baseline", "A1", "R2", "noop", "Vmean"};
    for (int ci = 0; ci < N_CONDS; ci++)
        for (int p = 0; p < N_PROMPTS; p++)
            for (int r = 0; r < N_SEEDS; r++) {
                const int seed = p * N_SEEDS + r; /* base seed 0 */
                char key[100], img[200];
                snprintf(key, sizeof key, "%s/%05d/%d", NAMES[ci], p, seed);
                snprintf(img, sizeof img, "images/%s/%05d_%d.png", NAMES[ci], p, seed);
                json_t *rec = json_object_get(recs, key);
                if (!rec) fail_msg("no record %s", key);
                assert_string_equal(json_string_value(json_object_get(rec, "image")), img);
                assert_int_equal(json_integer_value(json_object_get(rec, "condition_index")), ci);
                assert_int_equal(json_integer_value(json_object_get(rec, "seed")), seed);
                assert_non_null(json_string_value(json_object_get(rec, "tag")));
                int w, h;
                uint8_t *rgb;
                if (png_read_rgb(at("full/%s", img), &w, &h, &rgb) < 0) fail_msg("%s", ss_err());
                assert_int_equal(w, 8);
                assert_int_equal(h, 8);
                free(rgb);
                json_t *m = json_object_get(rec, "metrics");
                const int g = (int)json_integer_value(json_object_get(m, "geneval"));
                assert_true(json_is_integer(json_object_get(m, "geneval")) && (g == 0 || g == 1));
                /* the baseline, and the no-op (bit-identical by construction), are (0, inf, 1) */
                if (ci == 0 || ci == 3) {
                    assert_true(json_real_value(json_object_get(m, "mse")) == 0.0);
                    assert_true(json_is_null(json_object_get(m, "psnr")));
                    assert_true(json_real_value(json_object_get(m, "ssim")) == 1.0);
                } else {
                    assert_true(json_is_real(json_object_get(m, "ssim")));
                }
                /* probe: blocks 0 and 1 (early/middle/late of a 2-block model) at every step */
                json_t *probe = json_object_get(rec, "probe");
                assert_int_equal((int)json_array_size(probe), 2 * STEPS);
                json_t *p0 = json_array_get(probe, 0);
                assert_int_equal((int)json_array_size(json_object_get(p0, "top1_keys")), 2); /* heads */
                assert_true(json_real_value(json_object_get(p0, "max_mass")) > 0);
                /* top-1 token kinds: keys 0-15 are the 4 x 4 image patches, then the prompt's words,
                 * <eos> and <pad>; each share must match the keys, and they add up to the text share */
                int words = 0;
                for (const char *c = json_string_value(json_object_get(rec, "prompt")); *c; c++)
                    words += *c != ' ' && (c[1] == ' ' || c[1] == 0);
                size_t pi;
                json_t *pe;
                json_array_foreach(probe, pi, pe) {
                    double kind[4] = {0, 0, 0, 0}; /* image, word, eos, pad */
                    size_t hi;
                    json_t *kv;
                    json_t *keys = json_object_get(pe, "top1_keys");
                    json_array_foreach(keys, hi, kv) {
                        const int t = (int)json_integer_value(kv) - 16;
                        kind[t < 0 ? 0 : t < words ? 1 : t == words ? 2 : 3] += 1.0 / json_array_size(keys);
                    }
                    assert_true(json_real_value(json_object_get(pe, "top1_is_word")) == kind[1]);
                    assert_true(json_real_value(json_object_get(pe, "top1_is_eos")) == kind[2]);
                    assert_true(json_real_value(json_object_get(pe, "top1_is_pad")) == kind[3]);
                    assert_true(fabs(kind[1] + kind[2] + kind[3] - json_real_value(json_object_get(pe, "top1_is_text"))) < 1e-6);
                }
                /* verification: A1 4 steps x 1 block; R2 4 x 2; Vmean 2 steps (t = 0, 1/3) x 1 */
                static const int NV[N_CONDS] = {0, STEPS, 2 * STEPS, 0, 2};
                json_t *ver = json_object_get(rec, "verification");
                assert_int_equal((int)json_array_size(ver), NV[ci]);
                if (ci == 1) {
                    json_t *v0 = json_array_get(ver, 0);
                    assert_true(json_real_value(json_object_get(v0, "mass_after")) <
                                1e-3 * json_real_value(json_object_get(v0, "mass_before")));
                    assert_int_equal((int)json_array_size(json_array_get(json_object_get(v0, "keys"), 0)), 1);
                }
                if (ci == 2) { /* union: every head the same 2 keys */
                    json_t *keys = json_object_get(json_array_get(ver, 0), "keys");
                    assert_true(json_equal(json_array_get(keys, 0), json_array_get(keys, 1)));
                    assert_int_equal((int)json_array_size(json_array_get(keys, 0)), 2);
                }
            }
    json_decref(recs);
    /* experiment.json: the configuration with the seed rule and block mapping */
    json_t *cfg = json_load_file(at("full/experiment.json"), 0, NULL);
    assert_non_null(cfg);
    assert_int_equal(json_integer_value(json_object_get(cfg, "n_prompts")), N_PROMPTS);
    assert_int_equal(json_integer_value(json_object_get(cfg, "seeds_per_prompt")), N_SEEDS);
    assert_non_null(json_string_value(json_object_get(cfg, "seed_rule")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(cfg, "blocks"), "middle")), 1);
    assert_int_equal((int)json_array_size(json_object_get(cfg, "conditions")), N_CONDS);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(cfg, "conditions"), 0), "name")),
                        "baseline");
    json_decref(cfg);
}

static void test_rerun_is_noop(void **st) {
    (void)st;
    const int expect = N_CONDS * N_PROMPTS * N_SEEDS;
    assert_int_equal(run_std("again"), expect);
    size_t n1, e1;
    char *r1 = slurp(at("again/records.jsonl"), &n1), *x1 = slurp(at("again/experiment.json"), &e1);
    struct stat before;
    assert_int_equal(stat(at("again/images/A1/00002_5.png"), &before), 0);
    char *l1[512];
    int nl1 = tree(at("again"), l1, 512);
    assert_int_equal(run_std("again"), 0); /* nothing new */
    size_t n2, e2;
    char *r2 = slurp(at("again/records.jsonl"), &n2), *x2 = slurp(at("again/experiment.json"), &e2);
    assert_true(n1 == n2 && !memcmp(r1, r2, n1));
    assert_true(e1 == e2 && !memcmp(x1, x2, e1));
    struct stat after;
    assert_int_equal(stat(at("again/images/A1/00002_5.png"), &after), 0);
    assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
    char *l2[512];
    int nl2 = tree(at("again"), l2, 512);
    assert_int_equal(nl1, nl2);
    for (int i = 0; i < nl1; i++) assert_string_equal(l1[i], l2[i]);
    free_list(l1, nl1);
    free_list(l2, nl2);
    free(r1);
    free(r2);
    free(x1);
    free(x2);
}

/* Cuts the file to `keep` bytes and appends `tail`. */
static void cut_and_append(const char *path, size_t keep, const char *tail, size_t tail_n) {
    assert_int_equal(truncate(path, (off_t)keep), 0);
    FILE *f = fopen(path, "ab");
    fwrite(tail, 1, tail_n, f);
    fclose(f);
}

static void test_torn_last_line(void **st) {
    (void)st;
    const int expect = N_CONDS * N_PROMPTS * N_SEEDS;
    assert_int_equal(run_std("torn"), expect);
    assert_int_equal(run_std("torn_ref"), expect);
    const char *path = at("torn/records.jsonl");
    size_t n;
    char *all = slurp(path, &n);
    /* the last line replaced by its first half: cut off, and that image made again */
    char *last = all + n - 1;
    while (last > all && last[-1] != '\n') last--;
    const size_t start = (size_t)(last - all), len = n - start;
    cut_and_append(path, start, last, len / 2);
    assert_int_equal(run_std("torn"), 1);
    assert_int_equal(count_lines(path), expect);
    assert_same_records(path, at("torn_ref/records.jsonl"), expect);
    /* a complete-looking but unparseable last line, and a half line with no newline, behave
     * the same; neither adds a record */
    size_t n2;
    char *now = slurp(path, &n2);
    cut_and_append(path, n2, "{\"key\": \"A1/00000/0\", \"condit\n", 30);
    assert_int_equal(run_std("torn"), 0);
    cut_and_append(path, n2, "{\"key\": \"A1/0", 13);
    assert_int_equal(run_std("torn"), 0);
    size_t n3;
    char *after = slurp(path, &n3);
    assert_true(n3 == n2 && !memcmp(now, after, n2));
    /* a bad line that is not the last one is damage, not a crash: refused */
    cut_and_append(path, 0, "not json\n", 9);
    FILE *f = fopen(path, "ab");
    fwrite(now, 1, n2, f);
    fclose(f);
    assert_true(run_std("torn") < 0);
    assert_non_null(strstr(ss_err(), "records.jsonl:1: not a record"));
    free(all);
    free(now);
    free(after);
}

static void test_missing_baseline_image(void **st) {
    (void)st;
    /* a condition record lost (e.g. a crash before its append) while the baseline's PNG is
     * gone: the baseline image is made again (same bytes), with a new record superseding the
     * one whose image is gone, and the condition completed */
    const int expect = N_CONDS * N_PROMPTS * N_SEEDS;
    assert_int_equal(run_std("lost"), expect);
    size_t nb;
    char *orig = slurp(at("lost/images/baseline/00001_3.png"), &nb);
    const char *path = at("lost/records.jsonl");
    int n, d;
    json_t *recs = records_by_key(path, &n, &d);
    json_object_del(recs, "A1/00001/3");
    FILE *f = fopen(path, "w");
    const char *key;
    json_t *v;
    json_object_foreach(recs, key, v) {
        char *s = json_dumps(v, RECORDS_JSON_FLAGS);
        fprintf(f, "%s\n", s);
        free(s);
    }
    fclose(f);
    json_decref(recs);
    assert_int_equal(unlink(at("lost/images/baseline/00001_3.png")), 0);
    assert_int_equal(unlink(at("lost/images/A1/00001_3.png")), 0);
    assert_int_equal(run_std("lost"), 2);
    size_t nb2;
    char *again = slurp(at("lost/images/baseline/00001_3.png"), &nb2);
    assert_true(again && nb == nb2 && !memcmp(orig, again, nb));
    assert_int_equal(count_lines(path), expect + 1);
    assert_int_equal(run_std("lost"), 0); /* now whole */
    free(orig);
    free(again);
}

static void test_changed_config_refused(void **st) {
    (void)st;
    const int expect = N_CONDS * N_PROMPTS * N_SEEDS;
    assert_int_equal(run_std("cfg"), expect);
    size_t n0;
    char *r0 = slurp(at("cfg/records.jsonl"), &n0);
    assert_true(run_in("cfg", g_model, g_prompts, N_SEEDS, STEPS + 1, 2.0) < 0);
    assert_non_null(strstr(ss_err(), "field 'steps' differs: the folder has 4, this run has 5"));
    assert_true(run_in("cfg", g_model, g_prompts, N_SEEDS + 1, STEPS, 2.0) < 0);
    assert_non_null(strstr(ss_err(), "field 'seeds_per_prompt'"));
    assert_true(run_in("cfg", g_model, g_prompts, N_SEEDS, STEPS, 3.0) < 0);
    assert_non_null(strstr(ss_err(), "field 'cfg'"));
    /* another model of the same shapes */
    make_model(at("model_c"), 8, 2, 2, 8, 99);
    assert_true(run_in("cfg", at("model_c"), g_prompts, N_SEEDS, STEPS, 2.0) < 0);
    assert_non_null(strstr(ss_err(), "field 'model_digest'"));
    /* other prompts */
    char *p = slurp(g_prompts, NULL);
    write_text(at("prompts2.jsonl"), p);
    FILE *f = fopen(at("prompts2.jsonl"), "a");
    fputs("{\"tag\": \"single_object\", \"include\": [{\"class\": \"circle\", \"count\": 1}], \"prompt\": \"a photo of a circle\"}\n", f);
    fclose(f);
    free(p);
    assert_true(run_in("cfg", g_model, at("prompts2.jsonl"), N_SEEDS, STEPS, 2.0) < 0);
    assert_non_null(strstr(ss_err(), "field 'prompts_digest'"));
    /* a changed condition: named by index and field */
    char saved[sizeof CONDS + 64];
    snprintf(saved, sizeof saved, "%s", CONDS);
    char *mod = strdup(CONDS), *k = strstr(mod, "\"k\": 2");
    k[5] = '3';
    write_text(g_conds, mod);
    free(mod);
    int rc = run_in("cfg", g_model, g_prompts, N_SEEDS, STEPS, 2.0);
    write_text(g_conds, saved);
    assert_true(rc < 0);
    assert_non_null(strstr(ss_err(), "field 'conditions[2].k' differs: the folder has 2, this run has 3"));
    /* nothing was touched */
    size_t n1;
    char *r1 = slurp(at("cfg/records.jsonl"), &n1);
    assert_true(n0 == n1 && !memcmp(r0, r1, n0));
    free(r0);
    free(r1);
    /* the same configuration from another path of the same model still resumes */
    char cmd[2048], out[4096];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", g_model, at("model_copy"));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(run_in("cfg", at("model_copy"), g_prompts, N_SEEDS, STEPS, 2.0), 0);
    /* through the command line: the message names the field, exit status 1 */
    int st2 = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --seeds %d --steps 7 --cfg 2",
                     tc_bin(), at("cfg"), g_model, g_prompts, g_conds, N_SEEDS);
    assert_int_equal(st2, 1);
    assert_non_null(strstr(out, "field 'steps' differs"));
}

static void test_text_prompts_and_errors(void **st) {
    (void)st;
    /* plain text prompts: no tag, no detector score */
    assert_int_equal(run_in("text", g_model, g_text, 1, 2, 1.0), 2 * N_CONDS);
    int n, d;
    json_t *recs = records_by_key(at("text/records.jsonl"), &n, &d);
    json_t *r = json_object_get(recs, "A1/00001/1");
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "prompt")), "a photo of two squares");
    assert_null(json_object_get(r, "tag"));
    assert_null(json_object_get(json_object_get(r, "metrics"), "geneval"));
    /* cfg 1: batch of one, the conditional element is element 0 */
    assert_int_equal((int)json_array_size(json_object_get(r, "verification")), 2);
    json_decref(recs);
    /* a word the tokenizer does not know, named with its prompt */
    write_text(at("bad.txt"), "a photo of a circle\na photo of a zebra\n");
    assert_true(run_in("bad", g_model, at("bad.txt"), 1, 2, 1.0) < 0);
    if (!strstr(ss_err(), "prompt 1 (\"a photo of a zebra\")")) fail_msg("%s", ss_err());
    /* a block the model does not have */
    char out[4096];
    write_text(at("deep.json"), "[{\"name\": \"deep\", \"layers\": [5]}]");
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --quiet", tc_bin(),
                    at("deep"), g_model, g_text, at("deep.json"));
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "condition 'deep': field 'layers' names block 5, but the model has 2 blocks"));
    /* a preset meant for a 6-block model on this 2-block one */
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --preset dose_score --quiet", tc_bin(),
                at("deep2"), g_model, g_text);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "preset dose_score: condition 'eta0.5': field 'layers' names block 3"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --preset nosuch", tc_bin(), at("x"), g_model);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "preset 'nosuch' not found"));
    /* k larger than the candidates (16 image tokens) */
    write_text(at("bigk.json"), "[{\"name\": \"big\", \"layers\": [0], \"k\": 20, \"keys\": \"image\"}]");
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s'", tc_bin(), at("bigk"),
                g_model, g_text, at("bigk.json"));
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "field 'k' = 20, but the model has only 16 candidate image keys"));
    /* probe blocks are checked too */
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --probe 0,9", tc_bin(),
                at("probe9"), g_model, g_text, g_conds);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "probe: block 9 does not exist"));
    /* one run per folder at a time */
    assert_int_equal(ss_mkdir_p(at("locked")), 0);
    int fd = open(at("locked/.lock"), O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    assert_true(run_in("locked", g_model, g_text, 1, 2, 1.0) < 0);
    assert_non_null(strstr(ss_err(), "another sinkscope run"));
    close(fd);
    assert_int_equal(run_in("locked", g_model, g_text, 1, 2, 1.0), 2 * N_CONDS);
    /* the summary line (not a terminal): one line, with the counts */
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --seeds 1 --steps 2 --cfg 1",
                tc_bin(), at("locked"), g_model, g_text, g_conds);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "10/10 images (0 new, 10 already done)"));
    assert_null(strchr(out, '\r'));
    assert_int_equal((int)(strchr(out, '\n') - out) + 1, (int)strlen(out));
}

/* ---- kill -9 ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static pid_t spawn_run(const char *exp, const char *model, const char *seeds, const char *steps, const char *threads) {
    char *argv[] = {(char *)tc_bin(), "run", "--exp", (char *)exp, "--model", (char *)model, "--prompts", g_prompts,
                    "--conditions", g_conds, "--seeds", (char *)seeds, "--steps", (char *)steps, "--cfg", "2",
                    "--threads", (char *)threads, "--quiet", NULL};
    return tc_spawn(argv);
}

static void test_kill9_resume(void **st) {
    (void)st;
    /* a model big enough that the run takes a noticeable time */
    make_model(at("kmodel"), 16, 2, 2, 16, 5);
    const char *seeds = "6", *steps = "6";
    const int expect = N_CONDS * N_PROMPTS * 6;
    char ref[1024], killed[1024];
    snprintf(ref, sizeof ref, "%s", at("k_ref"));
    snprintf(killed, sizeof killed, "%s", at("k_killed"));
    const double t0 = now_s();
    assert_int_equal(tc_wait_exit(spawn_run(ref, at("kmodel"), seeds, steps, "1")), 0);
    const double full = now_s() - t0;
    /* kill at random moments within the first quarter of a full run's time (at least 50 ms) so
     * that most kills land in a live run; then let it finish. The reference made one image at a
     * time; the interrupted runs alternate between one and two images at once. */
    srand(20260425);
    int landed = 0;
    for (int i = 0; i < 5; i++) {
        const double frac = 0.05 + 0.2 * rand() / (double)RAND_MAX, delay = fmax(0.05, frac * full);
        pid_t pid = spawn_run(killed, at("kmodel"), seeds, steps, i % 2 ? "1" : "2");
        struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        int status;
        if (waitpid(pid, &status, WNOHANG) == 0) {
            landed++;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
    }
    print_message("kill -9: full run %.2f s; %d of 5 kills landed in a live run; %d records before the final resume\n", full,
                  landed, count_lines(at("k_killed/records.jsonl")));
    assert_true(landed >= 1);
    assert_int_equal(tc_wait_exit(spawn_run(killed, at("kmodel"), seeds, steps, "2")), 0);
    assert_same_records(at("k_ref/records.jsonl"), at("k_killed/records.jsonl"), expect);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/images", ref);
    snprintf(b, sizeof b, "%s/images", killed);
    assert_same_tree(a, b);
    size_t na, nb;
    char *ea = slurp(at("k_ref/experiment.json"), &na), *eb = slurp(at("k_killed/experiment.json"), &nb);
    assert_true(na == nb && !memcmp(ea, eb, na));
    free(ea);
    free(eb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_answers),
        cmocka_unit_test(test_pixel_metrics),
        cmocka_unit_test(test_geneval_metric),
        cmocka_unit_test(test_block_map_and_presets),
        cmocka_unit_test(test_full_run),
        cmocka_unit_test(test_rerun_is_noop),
        cmocka_unit_test(test_torn_last_line),
        cmocka_unit_test(test_missing_baseline_image),
        cmocka_unit_test(test_changed_config_refused),
        cmocka_unit_test(test_text_prompts_and_errors),
        cmocka_unit_test(test_kill9_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
