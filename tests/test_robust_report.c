/* test_robust_report: `sinkscope report` on hostile experiment folders (the reliability sweep):
 *   - undefined statistics (zero variance, n too small) get no p and no verdict but a reason,
 *     in summary.json, the CSVs, the HTML and the printed key table;
 *   - concurrent reports of one folder all succeed with complete, identical outputs;
 *   - inputs that are folders or special files are errors naming the file, and an existing
 *     report is left as it was;
 *   - each record's image is checked (missing, wrong size, wrong SHA-256, path outside EXP);
 *   - the last record of a key is used; seeds are exact unsigned 64-bit values.
 * Everything goes through the CLI ($SINKSCOPE_BIN or ./sinkscope). Run from the repository root. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common.h"
#include "exp/digest.h"
#include "io/png.h"

static char *g_dir;
static char g_buf[1 << 20];

static int setup(void **st) {
    (void)st;
    g_dir = tc_tmpdir();
    return g_dir ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_dir);
    free(g_dir);
    return 0;
}

/* a fresh experiment folder g_dir/name with the given conditions (JSON objects, comma separated) */
static const char *new_exp(const char *name, const char *conds) {
    static char d[4][2048];
    static int k;
    char *dir = d[k++ % 4];
    snprintf(dir, 2048, "%s", tc_join(g_dir, "%s", name));
    mkdir(dir, 0777);
    char text[8192];
    snprintf(text, sizeof text,
             "{\"sinkscope_version\": \"0.1.0\", \"model\": \"models/test\", \"n_prompts\": 4, \"seeds_per_prompt\": 2, "
             "\"steps\": 5, \"cfg\": 4.0, \"conditions\": [%s]}\n",
             conds);
    assert_int_equal(tc_write_text(tc_join(dir, "experiment.json"), text), 0);
    mkdir(tc_join(dir, "images"), 0777);
    return dir;
}

/* a 16x16 PNG (or side x side) at EXP/rel; returns its size */
static long write_png(const char *dir, const char *rel, int side, int shade) {
    char path[4096];
    snprintf(path, sizeof path, "%s", tc_join(dir, "%s", rel));
    char *slash = strrchr(path, '/');
    *slash = 0;
    mkdir(path, 0777);
    *slash = '/';
    uint8_t *rgb = malloc((size_t)side * side * 3);
    assert_non_null(rgb);
    for (int i = 0; i < side * side * 3; i++) rgb[i] = (uint8_t)(shade + i % 7);
    assert_int_equal(png_write_rgb(path, side, side, rgb, NULL, 0), 0);
    free(rgb);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

/* one record line; extra: more fields (", \"image_bytes\": 12") or "" */
static void rec(FILE *f, const char *cond, int prompt, const char *seed, const char *image, const char *metrics, const char *extra) {
    fprintf(f, "{\"condition\": \"%s\", \"prompt_index\": %d, \"seed\": %s, ", cond, prompt, seed);
    if (image) fprintf(f, "\"image\": \"%s\", ", image);
    fprintf(f, "\"metrics\": {%s}%s}\n", metrics, extra);
}

static json_t *load_summary(const char *dir) {
    json_error_t je;
    json_t *s = json_load_file(tc_join(dir, "report/summary.json"), 0, &je);
    if (!s) fail_msg("summary.json: %s", je.text);
    return s;
}

static json_t *cond_metric(json_t *sum, const char *cond, const char *metric) {
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(sum, "conditions"), i, c) if (!strcmp(json_string_value(json_object_get(c, "name")), cond))
        return json_object_get(json_object_get(c, "metrics"), metric);
    fail_msg("condition %s not in summary.json", cond);
    return NULL;
}

static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

static int run_report(const char *dir, const char *extra) {
    int rc = tc_run(g_buf, sizeof g_buf, "%s report %s --bootstrap 200 %s", tc_bin(), dir, extra);
    printf("  report %s -> %d\n", dir, rc);
    return rc;
}

/* ---- 11: undefined statistics ---- */

static void test_zero_variance_and_tiny_n(void **st) {
    (void)st;
    /* Z: two pairs, no change (the hostile case: "equivalent (p=0)"); S: every pair +1 (t = +inf);
     * O: one pair; A1/A1e05: an eta sweep with 2 pairs in all (a trend needs 3) */
    const char *dir = new_exp("zerovar", "{\"name\": \"baseline\", \"layers\": []}, "
                                         "{\"name\": \"Z\", \"layers\": [1], \"k\": 2}, "
                                         "{\"name\": \"S\", \"layers\": [1], \"k\": 3}, "
                                         "{\"name\": \"O\", \"layers\": [1], \"k\": 4}, "
                                         "{\"name\": \"A1\", \"layers\": [2], \"k\": 1, \"eta\": 0.0}, "
                                         "{\"name\": \"A1e05\", \"layers\": [2], \"k\": 1, \"eta\": 0.5}");
    FILE *f = fopen(tc_join(dir, "records.jsonl"), "wb");
    assert_non_null(f);
    rec(f, "baseline", 0, "0", NULL, "\"geneval\": 0, \"mse\": 0, \"ssim\": 1", "");
    rec(f, "baseline", 1, "2", NULL, "\"geneval\": 1, \"mse\": 0, \"ssim\": 1", "");
    rec(f, "Z", 0, "0", NULL, "\"geneval\": 0, \"mse\": 0.01, \"ssim\": 0.75", "");
    rec(f, "Z", 1, "2", NULL, "\"geneval\": 1, \"mse\": 0.01, \"ssim\": 0.75", "");
    rec(f, "S", 0, "0", NULL, "\"geneval\": 1, \"mse\": 0.01, \"ssim\": 0.8", "");
    rec(f, "S", 1, "2", NULL, "\"geneval\": 2, \"mse\": 0.02, \"ssim\": 0.7", ""); /* geneval 2: delta +1 twice */
    rec(f, "O", 0, "0", NULL, "\"geneval\": 1, \"mse\": 0.01, \"ssim\": 0.8", "");
    rec(f, "A1", 0, "0", NULL, "\"geneval\": 1, \"ssim\": 0.8", "");
    rec(f, "A1e05", 0, "0", NULL, "\"geneval\": 0, \"ssim\": 0.9", "");
    fclose(f);
    assert_int_equal(run_report(dir, ""), 0);
    const char *out = g_buf;
    json_t *s = load_summary(dir);

    json_t *z = cond_metric(s, "Z", "geneval");
    assert_true(json_is_null(json_object_get(z, "p")) && json_is_null(json_object_get(z, "p_holm")));
    assert_true(json_is_null(json_object_get(z, "tost")));
    assert_string_equal(jstr(z, "verdict"), "no verdict");
    assert_string_equal(jstr(z, "reason"), "zero variance of the paired differences (all 0): t = 0/0, p undefined");
    /* the SSIM of Z is the same 0.75 twice: 1-SSIM has no spread either */
    assert_non_null(strstr(jstr(cond_metric(s, "Z", "shift"), "reason"), "zero variance of the values (all 0.25): t = +inf, p undefined"));

    json_t *sg = cond_metric(s, "S", "geneval");
    assert_true(json_number_value(json_object_get(sg, "mean")) == 1);
    assert_true(json_is_null(json_object_get(sg, "p")) && json_is_null(json_object_get(sg, "tost")));
    assert_string_equal(jstr(sg, "verdict"), "no verdict");
    assert_string_equal(jstr(sg, "reason"), "zero variance of the paired differences (all +1): t = +inf, p undefined");
    assert_true(json_is_number(json_object_get(cond_metric(s, "S", "shift"), "p"))); /* 0.2, 0.3: defined */

    json_t *og = cond_metric(s, "O", "geneval");
    assert_true(json_is_null(json_object_get(og, "p")));
    assert_string_equal(jstr(og, "reason"), "n=1 < 2");
    json_t *ci = json_object_get(og, "ci95"); /* one value: no interval either */
    assert_true(json_is_null(json_array_get(ci, 0)) && json_is_null(json_array_get(ci, 1)));

    json_t *sw = json_array_get(json_object_get(s, "sweeps"), 0);
    assert_non_null(sw);
    json_t *tr = json_object_get(sw, "trend_geneval");
    assert_true(json_is_null(json_object_get(tr, "p")));
    assert_string_equal(jstr(tr, "reason"), "n=2 < 3");
    assert_string_equal(jstr(tr, "spearman_reason"), "n=2 < 3");

    /* the key table printed by the CLI */
    assert_non_null(strstr(out, "no verdict: zero variance of the paired differences (all 0)"));
    assert_non_null(strstr(out, "no verdict: zero variance of the paired differences (all +1)"));
    assert_non_null(strstr(out, "no verdict: n=1 < 2"));
    assert_null(strstr(out, "equivalent (p=0)"));
    /* the CSV and the HTML */
    char *csv = tc_read_all(tc_join(dir, "report/conditions.csv"), NULL);
    assert_non_null(csv);
    assert_non_null(strstr(csv, ",reason\n"));
    assert_non_null(strstr(csv, ",no verdict,"));
    assert_non_null(strstr(csv, "zero variance of the paired differences (all +1): t = +inf, p undefined"));
    assert_null(strstr(csv, ",equivalent,"));
    free(csv);
    csv = tc_read_all(tc_join(dir, "report/dose_trend.csv"), NULL);
    assert_non_null(csv);
    assert_non_null(strstr(csv, "n=2 < 3"));
    free(csv);
    char *html = tc_read_all(tc_join(dir, "report/report.html"), NULL);
    assert_non_null(html);
    assert_non_null(strstr(html, "zero variance of the paired differences (all 0)"));
    assert_non_null(strstr(html, "n=1 &lt; 2"));
    free(html);
    json_decref(s);
}

/* ---- 18: concurrent reports ---- */

static int list_report(const char *dir, char *names, size_t cap) {
    DIR *d = opendir(tc_join(dir, "report"));
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    names[0] = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || !strcmp(e->d_name, "..") || !strcmp(e->d_name, ".lock"))) continue;
        snprintf(names + strlen(names), cap - strlen(names), "%s ", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void test_concurrent_reports(void **st) {
    (void)st;
    const char *dir = new_exp("concurrent", "{\"name\": \"baseline\", \"layers\": []}, {\"name\": \"A\", \"layers\": [1], \"k\": 1}");
    FILE *f = fopen(tc_join(dir, "records.jsonl"), "wb");
    assert_non_null(f);
    for (int p = 0; p < 4; p++)
        for (int r = 0; r < 2; r++) {
            char seed[32], img[128], m[160];
            snprintf(seed, sizeof seed, "%d", p * 2 + r);
            for (int c = 0; c < 2; c++) {
                snprintf(img, sizeof img, "images/%s/%05d_%d.png", c ? "A" : "baseline", p, p * 2 + r);
                /* a large image too: report.html embeds a thumbnail made through a scratch file */
                write_png(dir, img, p == 0 && r == 0 ? 300 : 16, 40 * c + p);
                snprintf(m, sizeof m, "\"geneval\": %d, \"mse\": %g, \"ssim\": %g", (p + r + c) % 2, c ? 0.01 * (p + 1) : 0.0,
                         c ? 1 - 0.02 * (p + r + 1) : 1.0);
                rec(f, c ? "A" : "baseline", p, seed, img, m, "");
            }
        }
    fclose(f);
    assert_int_equal(run_report(dir, "--quiet"), 0);
    char *ref = tc_read_all(tc_join(dir, "report/summary.json"), NULL), *ref_html = tc_read_all(tc_join(dir, "report/report.html"), NULL);
    assert_non_null(ref);
    assert_non_null(ref_html);
    char names0[4096];
    int n0 = list_report(dir, names0, sizeof names0);
    for (int round = 0; round < 8; round++) {
        int rc = tc_run(g_buf, sizeof g_buf,
                        "( for i in 1 2 3 4; do ( %s report %s --quiet --bootstrap 200 || echo REPORT-FAILED ) & done; wait )", tc_bin(),
                        dir);
        if (rc != 0 || strstr(g_buf, "REPORT-FAILED") || strstr(g_buf, "failed")) fail_msg("round %d: %s", round, g_buf);
        /* complete and identical outputs, no leftover temporary files */
        char *s = tc_read_all(tc_join(dir, "report/summary.json"), NULL), *h = tc_read_all(tc_join(dir, "report/report.html"), NULL);
        assert_non_null(s);
        assert_non_null(h);
        assert_string_equal(s, ref);
        assert_true(strcmp(h, ref_html) == 0);
        free(s), free(h);
        char names[4096];
        int n = list_report(dir, names, sizeof names);
        if (n != n0 || strcmp(names, names0)) fail_msg("round %d: report/ holds [%s], expected [%s]", round, names, names0);
    }
    printf("  8 rounds of 4 concurrent reports: all succeeded, outputs identical (%d files)\n", n0);
    free(ref), free(ref_html);
}

/* ---- 19: inputs that are not regular files ---- */

static void test_inputs_not_regular_files(void **st) {
    (void)st;
    const char *dir = new_exp("notfile", "{\"name\": \"baseline\", \"layers\": []}, {\"name\": \"A\", \"layers\": [1]}");
    FILE *f = fopen(tc_join(dir, "records.jsonl"), "wb");
    assert_non_null(f);
    rec(f, "baseline", 0, "0", NULL, "\"geneval\": 1", "");
    rec(f, "A", 0, "0", NULL, "\"geneval\": 0", "");
    fclose(f);
    assert_int_equal(run_report(dir, "--quiet"), 0);
    char *before = tc_read_all(tc_join(dir, "report/summary.json"), NULL);
    assert_non_null(before);

    /* records.jsonl a folder: an error naming it, not "0 records used" */
    char recs[4096];
    snprintf(recs, sizeof recs, "%s", tc_join(dir, "records.jsonl"));
    assert_int_equal(rename(recs, tc_join(dir, "records.keep")), 0);
    assert_int_equal(mkdir(recs, 0777), 0);
    int rc = run_report(dir, "--quiet");
    printf("  %s", g_buf);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_buf, "records.jsonl: is a directory"));
    assert_null(strchr(strchr(g_buf, '\n') + 1, '\n')); /* one line */
    /* the earlier report is still there, unchanged */
    char *after = tc_read_all(tc_join(dir, "report/summary.json"), NULL);
    assert_non_null(after);
    assert_string_equal(after, before);
    free(after);
    rmdir(recs);

    /* a FIFO: refused at once (no hang waiting for a writer) */
    assert_int_equal(mkfifo(recs, 0666), 0);
    rc = tc_run(g_buf, sizeof g_buf, "timeout 20 %s report %s --quiet", tc_bin(), dir);
    printf("  %s", g_buf);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_buf, "records.jsonl: is a special file, not a regular file"));
    unlink(recs);
    assert_int_equal(rename(tc_join(dir, "records.keep"), recs), 0);

    /* experiment.json a folder */
    char ej[4096];
    snprintf(ej, sizeof ej, "%s", tc_join(dir, "experiment.json"));
    assert_int_equal(rename(ej, tc_join(dir, "experiment.keep")), 0);
    assert_int_equal(mkdir(ej, 0777), 0);
    rc = run_report(dir, "--quiet");
    printf("  %s", g_buf);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_buf, "experiment.json: is a directory"));
    rmdir(ej);
    assert_int_equal(rename(tc_join(dir, "experiment.keep"), ej), 0);

    /* the output folder is a file; an output file is a folder */
    char out[4096];
    snprintf(out, sizeof out, "%s", tc_join(g_dir, "outfile"));
    assert_int_equal(tc_write_text(out, "x"), 0);
    rc = tc_run(g_buf, sizeof g_buf, "%s report %s --quiet --out %s", tc_bin(), dir, out);
    printf("  %s", g_buf);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_buf, "outfile"));
    assert_int_equal(unlink(tc_join(dir, "report/summary.json")), 0);
    assert_int_equal(mkdir(tc_join(dir, "report/summary.json"), 0777), 0);
    rc = run_report(dir, "--quiet");
    printf("  %s", g_buf);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_buf, "summary.json: cannot write"));
    rmdir(tc_join(dir, "report/summary.json"));
    /* the folder is left without stray temporary files */
    char names[4096];
    list_report(dir, names, sizeof names);
    assert_null(strstr(names, ".summary.json."));
    assert_null(strstr(names, ".tmp"));
    free(before);
}

/* ---- 6: images ---- */

static void test_image_checks(void **st) {
    (void)st;
    const char *dir = new_exp("images", "{\"name\": \"baseline\", \"layers\": []}, {\"name\": \"A\", \"layers\": [1]}");
    FILE *f = fopen(tc_join(dir, "records.jsonl"), "wb");
    assert_non_null(f);
    /* prompts 0..5: baseline images all fine; A: 0 good (size + digest), 1 wrong size, 2 wrong
     * digest, 3 deleted, 4 old-style record (no fields) with the file, 5 old-style, file missing;
     * 6: a path outside the folder */
    for (int p = 0; p < 7; p++) {
        char seed[16], img[128], m[128], extra[256];
        snprintf(seed, sizeof seed, "%d", p);
        snprintf(img, sizeof img, "images/baseline/%05d_%d.png", p, p);
        long sz = write_png(dir, img, 16, p);
        char hex[DIGEST_HEX];
        assert_int_equal(digest_file(tc_join(dir, "%s", img), hex), 0);
        snprintf(extra, sizeof extra, ", \"image_bytes\": %ld, \"image_sha256\": \"%s\"", sz, hex);
        rec(f, "baseline", p, seed, img, "\"geneval\": 1, \"mse\": 0, \"ssim\": 1", extra);

        snprintf(img, sizeof img, "images/A/%05d_%d.png", p, p);
        sz = write_png(dir, img, 16, 100 + p);
        assert_int_equal(digest_file(tc_join(dir, "%s", img), hex), 0);
        snprintf(extra, sizeof extra, ", \"image_bytes\": %ld, \"image_sha256\": \"%s\"", sz, hex);
        snprintf(m, sizeof m, "\"geneval\": %d, \"mse\": 0.01, \"ssim\": %g", p % 2, 0.9 - 0.01 * p);
        if (p >= 4) extra[0] = 0;
        if (p == 6) snprintf(img, sizeof img, "../images/A/%05d_%d.png", p, p);
        rec(f, "A", p, seed, img, m, extra);
    }
    fclose(f);
    char path[4096];
    snprintf(path, sizeof path, "%s", tc_join(dir, "images/A/00001_1.png"));
    assert_int_equal(truncate(path, 20), 0);
    snprintf(path, sizeof path, "%s", tc_join(dir, "images/A/00002_2.png"));
    f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 40, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 40, SEEK_SET);
    fputc(ch ^ 0x55, f);
    fclose(f);
    assert_int_equal(unlink(tc_join(dir, "images/A/00003_3.png")), 0);
    assert_int_equal(unlink(tc_join(dir, "images/A/00005_5.png")), 0);

    int rc = run_report(dir, "--quiet");
    printf("%s", g_buf);
    assert_int_equal(rc, 0);
    /* a warning line per problem, naming the record and the problem */
    assert_non_null(strstr(g_buf, "warning: records.jsonl:4: image of A/00001/1 (images/A/00001_1.png): wrong size (20 bytes"));
    assert_non_null(strstr(g_buf, "warning: records.jsonl:6: image of A/00002/2 (images/A/00002_2.png): wrong SHA-256"));
    assert_non_null(strstr(g_buf, "warning: records.jsonl:8: image of A/00003/3 (images/A/00003_3.png): missing"));
    assert_non_null(strstr(g_buf, "image of A/00005/5 (images/A/00005_5.png): missing"));
    assert_non_null(strstr(g_buf, "image of A/00006/6 (../images/A/00006_6.png): the image path is not a relative path inside"));
    assert_null(strstr(g_buf, "A/00000/0"));
    assert_null(strstr(g_buf, "A/00004/4"));
    json_t *s = load_summary(dir);
    json_t *im = json_object_get(s, "images");
    assert_int_equal(json_integer_value(json_object_get(im, "checked")), 14);
    assert_int_equal(json_integer_value(json_object_get(im, "flagged")), 5);
    assert_int_equal(json_integer_value(json_object_get(im, "missing")), 2);
    assert_int_equal(json_integer_value(json_object_get(im, "wrong_size")), 1);
    assert_int_equal(json_integer_value(json_object_get(im, "wrong_digest")), 1);
    assert_int_equal(json_integer_value(json_object_get(im, "bad_path")), 1);
    assert_int_equal(json_integer_value(json_object_get(im, "existence_only")), 2);
    assert_int_equal(json_array_size(json_object_get(im, "flagged_records")), 5);
    /* the flagged records are left out of the image metrics: 2 of 7 pairs remain (prompts 0, 4) */
    json_t *g = cond_metric(s, "A", "geneval"), *sh = cond_metric(s, "A", "shift");
    assert_int_equal(json_integer_value(json_object_get(g, "n")), 2);
    assert_int_equal(json_integer_value(json_object_get(g, "n_missing")), 5);
    assert_int_equal(json_integer_value(json_object_get(sh, "n")), 2);
    /* mean 1-SSIM of prompts 0 and 4: (0.1 + 0.14) / 2 */
    assert_true(fabs(json_number_value(json_object_get(sh, "mean")) - 0.12) < 1e-12);
    char *html = tc_read_all(tc_join(dir, "report/report.html"), NULL);
    assert_non_null(html);
    assert_non_null(strstr(html, "5 of 14 images flagged"));
    free(html);
    json_decref(s);
}

/* ---- 6 / 12: duplicates and seeds ---- */

static void test_last_record_wins_and_u64_seeds(void **st) {
    (void)st;
    const char *dir = new_exp("seeds", "{\"name\": \"baseline\", \"layers\": []}, {\"name\": \"A\", \"layers\": [1]}");
    FILE *f = fopen(tc_join(dir, "records.jsonl"), "wb");
    assert_non_null(f);
    /* seeds that only differ below 2^11 at 2^64 (equal as doubles), as integers and as strings */
    rec(f, "baseline", 0, "18446744073709551615", NULL, "\"geneval\": 1", "");
    rec(f, "baseline", 0, "\"18446744073709551614\"", NULL, "\"geneval\": 0", "");
    rec(f, "baseline", 1, "9223372036854775808", NULL, "\"geneval\": 1", "");
    rec(f, "A", 0, "\"18446744073709551615\"", NULL, "\"geneval\": 1", ""); /* pairs with the first */
    rec(f, "A", 1, "\"9223372036854775808\"", NULL, "\"geneval\": 1", "");  /* stale: redone below */
    rec(f, "A", 1, "9223372036854775808", NULL, "\"geneval\": 0", "");      /* the last line of the key */
    rec(f, "A", 2, "-5", NULL, "\"geneval\": 0", "");                      /* a negative seed: invalid */
    rec(f, "A", 3, "18446744073709551616", NULL, "\"geneval\": 0", "");    /* 2^64: invalid */
    fclose(f);
    int rc = run_report(dir, "");
    printf("%s", g_buf);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(g_buf, "key A/00001/9223372036854775808 was already recorded on line 5; the last line (6) is used"));
    json_t *s = load_summary(dir);
    json_t *rs = json_object_get(s, "records");
    assert_int_equal(json_integer_value(json_object_get(rs, "used")), 5);
    assert_int_equal(json_integer_value(json_object_get(rs, "duplicate_keys")), 1);
    assert_int_equal(json_integer_value(json_object_get(rs, "invalid")), 2);
    size_t i;
    json_t *c, *a = NULL;
    json_array_foreach(json_object_get(s, "conditions"), i, c) if (!strcmp(jstr(c, "name"), "A")) a = c;
    assert_non_null(a);
    json_t *pairs = json_object_get(a, "pairs");
    assert_int_equal(json_integer_value(json_object_get(pairs, "n")), 2);
    assert_int_equal(json_integer_value(json_object_get(pairs, "not_run")), 1); /* baseline ...614 */
    json_t *g = json_object_get(json_object_get(a, "metrics"), "geneval");
    /* pairs: (0, 2^64-1) 1 vs 1 and (1, 2^63) 0 (the last record) vs 1 */
    assert_true(json_number_value(json_object_get(g, "condition_accuracy")) == 0.5);
    assert_true(json_number_value(json_object_get(g, "baseline_accuracy")) == 1);
    json_decref(s);
    /* no seed is ever printed negative */
    char *all = tc_read_all(tc_join(dir, "report/summary.json"), NULL);
    assert_non_null(all);
    assert_null(strstr(all, "/-"));
    free(all);
    /* the bootstrap seed takes the whole unsigned range too */
    rc = tc_run(g_buf, sizeof g_buf, "%s report %s --quiet --seed 18446744073709551615", tc_bin(), dir);
    assert_int_equal(rc, 0);
    all = tc_read_all(tc_join(dir, "report/summary.json"), NULL);
    assert_non_null(strstr(all, "\"bootstrap_seed\": 18446744073709551615"));
    free(all);
    rc = tc_run(g_buf, sizeof g_buf, "%s report %s --quiet --seed -1", tc_bin(), dir);
    assert_int_equal(rc, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_variance_and_tiny_n), cmocka_unit_test(test_concurrent_reports),
        cmocka_unit_test(test_inputs_not_regular_files), cmocka_unit_test(test_image_checks),
        cmocka_unit_test(test_last_record_wins_and_u64_seeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
