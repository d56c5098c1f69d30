/* test_report_spiral: the "Spiral to Sink" figures of `sinkscope report` (report/spiral.c,
 * spiral_svg.c; docs/experiment-format.md, section "Spiral to Sink figures in the report").
 *
 * A small experiment folder with hand-written records whose spiral entries have known numbers:
 * the aggregates (unique sinks, IoU stability, means and t intervals, the budget by type, mu per
 * key with its types, the top keys) are checked exactly in the CSVs and summary.json; report.html
 * holds the section with well-formed SVG (a minimal XML check); records without spiral entries
 * (older experiments), entries without the RoPE fields and a condition without spiral entries
 * are handled; the output does not depend on the line order; malformed entries are errors naming
 * the file, the line and the entry. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "common.h"
#include "core/err.h"
#include "io/fsutil.h"
#include "report/report.h"

#define T975_DF2 4.302652729749464 /* scipy.stats.t.ppf(0.975, 2) */

/* ---- the experiment ---- */

/* joint.0 (no RoPE: "qk"), two steps, three baseline images:
 *   step 0 sinks 5, 5, 7; step 1 sinks 5, 5, 5
 *   top keys p0 [5,1,2] -> [5,1,3] (IoU 2/4), p1 [5,2,3] -> [5,2,3] (1), p2 [7,1,2] -> [5,6,8] (0)
 *   ki_x_image at step 1: 10, 20, 30; ki_x_uniform 4, 6, 8 (step 0: 1, 2, 3 and 1, 1, 1)
 *   budget at step 1: {image .6, pad .4}, {image .5, pad .3, eos .2}, {image .7, pad .3}
 *   mu at step 1 (MU: 8 keys; types image x4, word, eos, pad x2, but p2: image x4, word x2, pad x2)
 * joint.1 (RoPE: energy, qk_post, qk_pre, act), no budget and no mu (keys from the top lists);
 *   p2's entries lack energy and qk_pre.
 * A fourth baseline record has no spiral entries (an older runner); condition A1 has joint.0
 * entries in two records with ki_x_image 2 and 4 at step 1; condition A2 has none. */
static const double MU[3][8] = {{1. / 32, 1. / 32, 1. / 32, 1. / 32, 1. / 8, 1. / 2, 1. / 8, 1. / 8},
                                {1. / 32, 1. / 32, 1. / 32, 1. / 32, 1. / 8, 1. / 4, 3. / 8, 1. / 8},
                                {1. / 32, 1. / 32, 1. / 32, 1. / 32, 1. / 8, 3. / 8, 1. / 16, 5. / 16}}; /* dyadic: exact in float */

static void put_top(FILE *f, const int *k, const double *mu, const char *const *ty, int n) {
    fputs("\"top_keys\": [", f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", k[i]);
    fputs("], \"top_mu\": [", f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.17g", i ? ", " : "", mu[i]);
    fputs("], \"top_types\": [", f);
    for (int i = 0; i < n; i++) fprintf(f, "%s\"%s\"", i ? ", " : "", ty[i]);
    fputs("]", f);
}

static void entry_j0(FILE *f, int p, int step, double xi_a1) {
    static const int top[2][3][3] = {{{5, 1, 2}, {5, 2, 3}, {7, 1, 2}}, {{5, 1, 3}, {5, 2, 3}, {5, 6, 8}}};
    static const int sink[2][3] = {{5, 5, 7}, {5, 5, 5}};
    const double xi = isnan(xi_a1) ? (step ? 10.0 * (p + 1) : p + 1) : xi_a1, xu = step ? 4 + 2 * p : 1;
    const char *stype = sink[step][p] == 7 ? "pad" : p == 2 ? "word" : "eos";
    fprintf(f, "{\"site\": \"joint.0\", \"block\": 0, \"step\": %d, \"t_frac\": %d, \"sink\": %d, \"sink_type\": \"%s\", "
               "\"ki_x_uniform\": %.17g, \"ki_x_image\": %.17g, ",
            step, step, sink[step][p], stype, xu, xi);
    const double tm[3] = {0.5, 0.1, 0.05};
    const char *tt[3] = {stype, "image", "image"};
    put_top(f, top[step][p], tm, tt, 3);
    if (step == 1) {
        static const char *const B[3] = {"{\"image\": 0.6, \"pad\": 0.4}", "{\"image\": 0.5, \"pad\": 0.3, \"eos\": 0.2}",
                                         "{\"image\": 0.7, \"pad\": 0.3}"};
        static const char *const K[3] = {"{\"image\": 4, \"pad\": 2}", "{\"image\": 4, \"pad\": 2, \"eos\": 1}",
                                         "{\"image\": 4, \"pad\": 2}"};
        fprintf(f, ", \"budget\": %s, \"budget_keys\": %s", B[p], K[p]);
    }
    fprintf(f, ", \"qk\": {\"sink\": %d, \"image\": -1}, \"v_norm\": {\"sink\": 0.5, \"image\": 2}, \"k_norm\": {\"sink\": 4, \"image\": 4}",
            3 + p);
    if (step == 1) {
        fputs(", \"mu\": [", f);
        for (int j = 0; j < 8; j++) fprintf(f, "%s%.17g", j ? ", " : "", MU[p][j]);
        fprintf(f, "], \"key_types\": %s", p == 2 ? "[[\"image\", 4], [\"word\", 2], [\"pad\", 2]]"
                                                  : "[[\"image\", 4], [\"word\", 1], [\"eos\", 1], [\"pad\", 2]]");
    }
    fputs("}", f);
}

static void entry_j1(FILE *f, int p, int step) {
    static const int top[3][2] = {{3, 1}, {3, 2}, {1, 3}};
    static const double tmu[3][2] = {{0.5, 0.2}, {0.4, 0.1}, {0.6, 0.3}};
    const char *tt[2] = {"image", "image"};
    fprintf(f, "{\"site\": \"joint.1\", \"block\": 1, \"step\": %d, \"t_frac\": %d, \"sink\": %d, \"sink_type\": \"image\", "
               "\"ki_x_uniform\": 3, \"ki_x_image\": null, ",
            step, step, top[p][0]);
    put_top(f, top[p], tmu[p], tt, 2);
    if (p < 2)
        fprintf(f, ", \"energy\": {\"axes_dims\": [2, 2], \"pair_energy_sink\": [1, 2], \"pair_energy_image\": [1, 1], "
                   "\"axis_share_sink\": [0.5, 0.5], \"axis_share_image\": [0.5, 0.5], \"low_share_sink\": 0.%d, "
                   "\"low_share_image\": 0.5, \"fac\": %d}",
                6 + p, 1 + p);
    fprintf(f, ", \"qk_post\": {\"sink\": 112, \"image\": -62}");
    if (p < 2) fprintf(f, ", \"qk_pre\": {\"sink\": 123, \"image\": 134}");
    fprintf(f, ", \"act\": {\"sink\": 9, \"median\": 1, \"sink_ratio\": %d, \"max_token\": 0, \"max_ratio\": 9, "
               "\"top_channels\": [1], \"top_channel_max\": [9]}}",
            p + 8);
}

/* the records, one string per line; with_spiral 0: none has spiral entries */
static int record_lines(char **lines, int with_spiral) {
    int n = 0;
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 4; p++) {
            char *b = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&b, &len);
            const char *cn = c == 0 ? "baseline" : c == 1 ? "A1" : "A2";
            fprintf(f, "{\"key\": \"%s/%05d/%d\", \"condition\": \"%s\", \"prompt_index\": %d, \"seed\": %d, "
                       "\"metrics\": {\"mse\": %g, \"ssim\": %g}, \"%s\": [{\"block\": 0, \"step\": 0, \"t_frac\": 0, "
                       "\"max_mass\": 0.%d, \"top1_keys\": [5, 5]}]",
                    cn, p, p, cn, p, p, c ? 0.001 * (p + 1) : 0.0, c ? 0.99 - 0.01 * p : 1.0, c ? "verification" : "probe", 2 + p);
            if (with_spiral && ((c == 0 && p < 3) || (c == 1 && p < 2))) {
                fputs(", \"spiral\": [", f);
                for (int s = 0; s < 2; s++) {
                    if (s) fputs(", ", f);
                    entry_j0(f, p, s, c == 1 ? (s ? 2.0 + 2 * p : 1.0) : NAN);
                    if (c == 0) {
                        fputs(", ", f);
                        entry_j1(f, p, s);
                    }
                }
                fputs("]", f);
            }
            fputs("}\n", f);
            fclose(f);
            lines[n++] = b;
        }
    return n;
}

static void write_exp(const char *dir, int with_spiral, int reverse) {
    assert_int_equal(ss_mkdir_p(dir), 0);
    char path[2048];
    snprintf(path, sizeof path, "%s/experiment.json", dir);
    assert_int_equal(tc_write_text(path, "{\"model\": \"m\", \"n_prompts\": 4, \"seeds_per_prompt\": 1, \"steps\": 2, \"cfg\": 1,"
                                         " \"conditions\": [{\"name\": \"baseline\", \"layers\": []},"
                                         " {\"name\": \"A1\", \"layers\": [1], \"k\": 1}, {\"name\": \"A2\", \"layers\": [0], \"k\": 1}]}\n"),
                     0);
    char *lines[32];
    int n = record_lines(lines, with_spiral);
    char *b = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&b, &len);
    for (int i = 0; i < n; i++) fputs(lines[reverse ? n - 1 - i : i], f), free(lines[reverse ? n - 1 - i : i]);
    fclose(f);
    snprintf(path, sizeof path, "%s/records.jsonl", dir);
    assert_int_equal(tc_write_text(path, b), 0);
    free(b);
}

/* tables: when not NULL, the terminal tables (malloc'ed) */
static int run_report_tables(const char *dir, char **tables) {
    report_opts o;
    report_opts_default(&o);
    o.exp_dir = dir;
    o.bootstrap = 50;
    char *t = NULL;
    size_t tl = 0;
    if (tables) {
        o.print_table = 1;
        o.log = open_memstream(&t, &tl);
    }
    int rc = report_run(&o);
    if (tables) {
        fclose(o.log);
        *tables = t;
    }
    return rc;
}
static int run_report(const char *dir) { return run_report_tables(dir, NULL); }

static char *read_rel(const char *dir, const char *rel) {
    char path[2048];
    snprintf(path, sizeof path, "%s/report/%s", dir, rel);
    return tc_read_all(path, NULL);
}

/* the CSV line that starts with prefix (NULL when none) */
static const char *csv_line(const char *csv, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *p = csv; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, prefix, n)) return p;
    return NULL;
}

/* field i (0-based) of the CSV line as a double (NaN when empty) */
static double csv_field(const char *line, int i) {
    const char *p = line;
    for (int k = 0; k < i; k++) {
        p = strpbrk(p, ",\n");
        assert_non_null(p);
        assert_true(*p == ',');
        p++;
    }
    if (*p == ',' || *p == '\n') return NAN;
    return strtod(p, NULL);
}

static void near(double got, double want, const char *what) {
    if (!(fabs(got - want) <= 1e-12 * fmax(1, fabs(want)))) fail_msg("%s: %.17g, expected %.17g", what, got, want);
}

static const char *need_line(const char *csv, const char *prefix, const char *file) {
    const char *l = csv_line(csv, prefix);
    if (!l) fail_msg("%s has no line '%s':\n%s", file, prefix, csv);
    return l;
}

/* ---- a minimal XML well-formedness check of one SVG element ---- */

static int xml_name(const char **p) {
    const char *s = *p;
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) return 0;
    while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == ':' || *s == '_') s++;
    int n = (int)(s - *p);
    *p = s;
    return n;
}

static int xml_text_ok(const char *s, const char *end) {
    for (; s < end; s++) {
        if (*s == '<' || *s == '>') return 0;
        if (*s == '&') {
            const char *e = memchr(s, ';', (size_t)(end - s));
            if (!e) return 0;
            size_t n = (size_t)(e - s + 1);
            if (!((n == 4 && (!strncmp(s, "&lt;", 4) || !strncmp(s, "&gt;", 4))) || (n == 5 && !strncmp(s, "&amp;", 5)) ||
                  (n == 6 && (!strncmp(s, "&quot;", 6) || !strncmp(s, "&apos;", 6))) || (n > 3 && s[1] == '#')))
                return 0;
        }
    }
    return 1;
}

/* 0 when [s, end) is one well-formed element; else the offset of the problem + 1 */
static long xml_check(const char *s, const char *end) {
    const char *stack[64];
    int len[64], depth = 0, roots = 0;
    const char *p = s;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt) lt = end;
        if (!xml_text_ok(p, lt)) return p - s + 1;
        if (depth == 0 && lt > p) {
            for (const char *q = p; q < lt; q++)
                if (*q != ' ' && *q != '\n') return q - s + 1;
        }
        if (lt == end) break;
        p = lt + 1;
        if (*p == '/') {
            p++;
            const char *nm = p;
            int n = xml_name(&p);
            if (!n || *p != '>' || depth == 0 || len[depth - 1] != n || strncmp(stack[depth - 1], nm, (size_t)n)) return p - s + 1;
            depth--;
            p++;
            continue;
        }
        const char *nm = p;
        int n = xml_name(&p);
        if (!n) return p - s + 1;
        if (depth == 0 && roots++) return p - s + 1;
        for (;;) {
            while (*p == ' ' || *p == '\n') p++;
            if (*p == '/' && p[1] == '>') {
                p += 2;
                break;
            }
            if (*p == '>') {
                if (depth == 64) return p - s + 1;
                stack[depth] = nm, len[depth++] = n;
                p++;
                break;
            }
            if (!xml_name(&p) || *p != '=' || p[1] != '"') return p - s + 1;
            p += 2;
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!q || !xml_text_ok(p, q)) return p - s + 1;
            p = q + 1;
            if (*p != ' ' && *p != '/' && *p != '>' && *p != '\n') return p - s + 1;
        }
    }
    return depth == 0 && roots == 1 ? 0 : (end - s) + 1;
}

static void test_xml_checker(void **st) {
    (void)st;
    const char *good[] = {"<svg a=\"1\"><g><text x=\"1\">a &amp; b &#8722;</text></g><rect/></svg>", "<svg><title>x</title></svg>"};
    const char *badx[] = {"<svg><g></svg>", "<svg a=1></svg>", "<svg>a < b</svg>", "<svg>a & b</svg>", "<svg></svg><svg></svg>",
                          "<svg><text>x</txt></svg>", "<svg a=\"x\"b=\"y\"></svg>"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) assert_int_equal(xml_check(good[i], good[i] + strlen(good[i])), 0);
    for (size_t i = 0; i < sizeof badx / sizeof *badx; i++)
        if (xml_check(badx[i], badx[i] + strlen(badx[i])) == 0) fail_msg("accepted: %s", badx[i]);
}

/* ---- the tests ---- */

static void test_aggregates(void **st) {
    (void)st;
    char *root = tc_tmpdir();
    char d[1024];
    snprintf(d, sizeof d, "%s", tc_join(root, "exp"));
    write_exp(d, 1, 0);
    char *tables;
    if (run_report_tables(d, &tables) < 0) fail_msg("report: %s", ss_err());
    /* the terminal: the key figures of the baseline */
    if (!strstr(tables, "\nWhy sinks form (baseline, 3 images, last step;") ||
        !strstr(tables, "\njoint.0    20 [-4.84, 44.8]       6 [1.03, 11]                1 5 eos (100%)          0.500  image 60.0%, "
                        "eos 6.7%, pad 33.3%\n"))
        fail_msg("tables:\n%s", tables);
    free(tables);

    /* spiral_steps.csv */
    char *csv = read_rel(d, "spiral_steps.csv");
    assert_non_null(csv);
    assert_int_equal(strncmp(csv, "condition,site,block,step,t_frac,n,unique_sinks,mode_sink,mode_sink_type,mode_sink_share,iou_n,"
                                  "iou_mean,ki_x_image_n,ki_x_image_mean,ki_x_image_sd,ki_x_uniform_n,ki_x_uniform_mean,"
                                  "ki_x_uniform_sd\n",
                             strlen("condition,site,block,step,")),
                     0);
    const char *l = need_line(csv, "baseline,joint.0,0,0,0,3,2,5,eos,", "spiral_steps.csv"); /* 2 distinct, mode 5 (eos) */
    near(csv_field(l, 9), 2.0 / 3, "mode share");
    assert_true(isnan(csv_field(l, 11))); /* no IoU at the first step */
    near(csv_field(l, 13), 2, "step 0 ki_x_image mean");
    near(csv_field(l, 14), 1, "step 0 ki_x_image sd");
    l = need_line(csv, "baseline,joint.0,0,1,1,3,1,5,eos,1,3,", "spiral_steps.csv");
    near(csv_field(l, 11), 0.5, "IoU at step 1"); /* (2/4 + 1 + 0) / 3 */
    near(csv_field(l, 13), 20, "ki_x_image mean");
    near(csv_field(l, 14), 10, "ki_x_image sd");
    near(csv_field(l, 16), 6, "ki_x_uniform mean");
    need_line(csv, "baseline,joint.1,1,1,1,3,2,3,image,", "spiral_steps.csv"); /* sinks 3, 3, 1 */
    l = need_line(csv, "baseline,joint.1,1,0,", "spiral_steps.csv");
    assert_int_equal((int)csv_field(l, 12), 0); /* ki_x_image null everywhere: n 0, mean empty */
    assert_true(isnan(csv_field(l, 13)));
    need_line(csv, "A1,joint.0,0,1,", "spiral_steps.csv");
    assert_null(csv_line(csv, "A2,")); /* no spiral entries: no rows */
    /* joint.0 before joint.1; baseline before A1 */
    assert_true(csv_line(csv, "baseline,joint.0,") < csv_line(csv, "baseline,joint.1,"));
    assert_true(csv_line(csv, "baseline,joint.1,") < csv_line(csv, "A1,"));
    free(csv);

    /* spiral_depth.csv: the last step, mean and 95% t interval over images */
    csv = read_rel(d, "spiral_depth.csv");
    assert_non_null(csv);
    assert_int_equal(strncmp(csv, "condition,site,block,step,metric,n,mean,ci_lo,ci_hi\n", 52), 0);
    l = need_line(csv, "baseline,joint.0,0,1,ki_x_image,3,", "spiral_depth.csv");
    near(csv_field(l, 6), 20, "ki_x_image");
    near(csv_field(l, 7), 20 - T975_DF2 * 10 / sqrt(3), "ci_lo");
    near(csv_field(l, 8), 20 + T975_DF2 * 10 / sqrt(3), "ci_hi");
    l = need_line(csv, "baseline,joint.0,0,1,qk_sink,3,", "spiral_depth.csv");
    near(csv_field(l, 6), 4, "qk sink");
    assert_null(csv_line(csv, "baseline,joint.0,0,1,fac,")); /* no RoPE fields at joint.0 */
    assert_null(csv_line(csv, "baseline,joint.0,0,1,qk_post_sink,"));
    assert_null(csv_line(csv, "baseline,joint.1,1,1,ki_x_image,")); /* null in every entry */
    l = need_line(csv, "baseline,joint.1,1,1,fac,2,", "spiral_depth.csv"); /* p2 lacks energy */
    near(csv_field(l, 6), 1.5, "fac");
    l = need_line(csv, "baseline,joint.1,1,1,low_share_sink,2,", "spiral_depth.csv");
    near(csv_field(l, 6), 0.65, "low_share_sink");
    need_line(csv, "baseline,joint.1,1,1,qk_pre_sink,2,123,", "spiral_depth.csv");
    need_line(csv, "baseline,joint.1,1,1,qk_post_image,3,-62,-62,-62", "spiral_depth.csv");
    l = need_line(csv, "baseline,joint.1,1,1,act_sink_ratio,3,", "spiral_depth.csv");
    near(csv_field(l, 6), 9, "act_sink_ratio");
    l = need_line(csv, "A1,joint.0,0,1,ki_x_image,2,", "spiral_depth.csv");
    near(csv_field(l, 6), 3, "A1 ki_x_image");
    free(csv);

    /* spiral_budget.csv: means over the images, a type absent from an entry counts 0 */
    csv = read_rel(d, "spiral_budget.csv");
    assert_non_null(csv);
    assert_int_equal(strncmp(csv, "condition,site,block,step,type,n,budget_mean,keys_mean\n", 55), 0);
    l = need_line(csv, "baseline,joint.0,0,1,image,3,", "spiral_budget.csv");
    near(csv_field(l, 6), (0.6 + 0.5 + 0.7) / 3, "budget image");
    near(csv_field(l, 7), 4, "keys image");
    l = need_line(csv, "baseline,joint.0,0,1,eos,3,", "spiral_budget.csv");
    near(csv_field(l, 6), 0.2 / 3, "budget eos");
    near(csv_field(l, 7), 1.0 / 3, "keys eos");
    l = need_line(csv, "baseline,joint.0,0,1,pad,3,", "spiral_budget.csv");
    near(csv_field(l, 6), (0.4 + 0.3 + 0.3) / 3, "budget pad");
    assert_null(csv_line(csv, "baseline,joint.0,0,1,word,")); /* no keys of that type */
    assert_null(csv_line(csv, "baseline,joint.1,")); /* no budget fields */
    /* types in ss_tok order: image, ..., eos, pad */
    assert_true(csv_line(csv, "baseline,joint.0,0,1,image,") < csv_line(csv, "baseline,joint.0,0,1,eos,"));
    assert_true(csv_line(csv, "baseline,joint.0,0,1,eos,") < csv_line(csv, "baseline,joint.0,0,1,pad,"));
    free(csv);

    /* spiral_keys.csv: mu per key and its most frequent type */
    csv = read_rel(d, "spiral_keys.csv");
    assert_non_null(csv);
    l = need_line(csv, "baseline,joint.0,0,1,5,eos,", "spiral_keys.csv");
    near(csv_field(l, 6), 2.0 / 3, "type share of key 5");
    assert_int_equal((int)csv_field(l, 7), 3);
    near(csv_field(l, 8), (0.5 + 0.25 + 0.375) / 3, "mu of key 5");
    assert_non_null(strstr(l, ",mu\n"));
    l = need_line(csv, "baseline,joint.0,0,1,7,pad,1,3,", "spiral_keys.csv");
    near(csv_field(l, 8), (0.125 + 0.125 + 0.3125) / 3, "mu of key 7");
    /* joint.1 has no mu: keys from the top lists, absent keys counting 0 */
    l = need_line(csv, "baseline,joint.1,1,1,3,image,1,3,", "spiral_keys.csv");
    near(csv_field(l, 8), (0.5 + 0.4 + 0.3) / 3, "top-list mu of key 3");
    assert_non_null(strstr(l, ",top_keys\n"));
    l = need_line(csv, "baseline,joint.1,1,1,2,image,1,1,", "spiral_keys.csv");
    near(csv_field(l, 8), 0.1 / 3, "top-list mu of key 2");
    assert_null(csv_line(csv, "baseline,joint.1,1,1,0,"));
    free(csv);

    /* spiral_top.csv: ranks by mean mu, ties the lower key */
    csv = read_rel(d, "spiral_top.csv");
    assert_non_null(csv);
    need_line(csv, "baseline,joint.0,0,1,1,5,eos,", "spiral_top.csv");
    need_line(csv, "baseline,joint.0,0,1,2,6,pad,", "spiral_top.csv"); /* 0.1875, tied with key 7: the lower key first */
    need_line(csv, "baseline,joint.0,0,1,3,7,pad,", "spiral_top.csv"); /* 0.1875 */
    need_line(csv, "baseline,joint.0,0,1,4,4,word,", "spiral_top.csv"); /* 0.125 */
    need_line(csv, "baseline,joint.0,0,1,5,0,image,", "spiral_top.csv"); /* 1/32 each, by key */
    need_line(csv, "baseline,joint.0,0,1,8,3,image,", "spiral_top.csv");
    assert_null(csv_line(csv, "baseline,joint.0,0,1,9,"));
    need_line(csv, "baseline,joint.1,1,1,1,3,", "spiral_top.csv");
    need_line(csv, "baseline,joint.1,1,1,2,1,", "spiral_top.csv");
    need_line(csv, "baseline,joint.1,1,1,3,2,", "spiral_top.csv");
    free(csv);

    /* summary.json */
    char *sm = read_rel(d, "summary.json");
    json_error_t je;
    json_t *j = json_loads(sm, 0, &je);
    if (!j) fail_msg("summary.json: %s", je.text);
    const json_t *sp = json_object_get(j, "spiral");
    assert_non_null(sp);
    assert_int_equal(json_integer_value(json_object_get(sp, "iou_k")), 10);
    const json_t *conds = json_object_get(sp, "conditions");
    assert_int_equal(json_array_size(conds), 2);
    const json_t *c0 = json_array_get(conds, 0);
    assert_string_equal(json_string_value(json_object_get(c0, "condition")), "baseline");
    assert_int_equal(json_integer_value(json_object_get(c0, "images")), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(conds, 1), "condition")), "A1");
    const json_t *s0 = json_array_get(json_object_get(c0, "sites"), 0), *s1 = json_array_get(json_object_get(c0, "sites"), 1);
    assert_string_equal(json_string_value(json_object_get(s0, "site")), "joint.0");
    assert_int_equal(json_integer_value(json_object_get(s0, "last_step")), 1);
    const json_t *u = json_object_get(s0, "unique_sinks");
    assert_int_equal(json_integer_value(json_object_get(u, "last_step")), 1);
    assert_int_equal(json_integer_value(json_object_get(u, "max")), 2);
    near(json_number_value(json_object_get(u, "mean_over_steps")), 1.5, "unique mean");
    near(json_number_value(json_object_get(s0, "iou_mean")), 0.5, "iou_mean");
    near(json_number_value(json_object_get(json_object_get(s0, "ki_x_image"), "mean")), 20, "summary ki_x_image");
    near(json_number_value(json_object_get(json_object_get(s0, "ki_x_image"), "ci_hi")), 20 + T975_DF2 * 10 / sqrt(3), "summary ci");
    near(json_number_value(json_object_get(json_object_get(s0, "budget"), "pad")), 1.0 / 3, "summary budget pad");
    assert_null(json_object_get(json_object_get(s0, "budget"), "word"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s0, "top_sink_last_step"), "key")), 5);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(s0, "top_keys"), 0), "key")), 5);
    assert_null(json_object_get(s0, "fac"));
    near(json_number_value(json_object_get(json_object_get(s1, "fac"), "mean")), 1.5, "summary fac");
    assert_null(json_object_get(s1, "ki_x_image"));
    assert_null(json_object_get(s1, "budget"));
    json_decref(j);
    free(sm);

    /* report.html: the section, its SVG charts well-formed */
    char *h = read_rel(d, "report.html");
    const char *a = strstr(h, "<h2>5b. Why sinks form"), *b = strstr(h, "<h2>6.");
    assert_non_null(a);
    assert_non_null(b);
    int svgs = 0;
    for (const char *p = a; (p = strstr(p, "<svg")) && p < b; p++) {
        const char *e = strstr(p, "</svg>");
        assert_non_null(e);
        e += 6;
        long bad = xml_check(p, e);
        if (bad) fail_msg("SVG %d is not well-formed near: %.80s", svgs, p + bad - 1);
        svgs++;
    }
    printf("  section 5b: %d SVG charts, %ld bytes\n", svgs, (long)(b - a));
    /* depth (2), steps (3), mu per key (2 sites), top keys (2), budget (2 conditions), mechanism (FAC, shares, qk, norms, act) */
    assert_int_equal(svgs, 2 + 3 + 2 + 2 + 2 + 5);
    const char *must[] = {"sink-to-random ratio by depth", "unique top-1 sinks", "IoU stability", "joint.0: μ per key (step 1)",
                          "joint.1: top-32 keys by mean μ", "baseline: attention budget by key type", "A1: attention budget",
                          "Frequency-Aware Concentration", "before RoPE", "massive activations", "#D55E00"};
    for (size_t i = 0; i < sizeof must / sizeof *must; i++)
        if (!strstr(a, must[i]) || strstr(a, must[i]) > b) fail_msg("section 5b lacks '%s'", must[i]);
    free(h);
    tc_rmtree(root);
    free(root);
}

/* records without spiral entries: no spiral output at all, and everything else is what it is
 * with them */
static void test_without_spiral(void **st) {
    (void)st;
    char *root = tc_tmpdir();
    char d0[1024], d1[1024];
    snprintf(d0, sizeof d0, "%s", tc_join(root, "plain"));
    snprintf(d1, sizeof d1, "%s", tc_join(root, "spiral"));
    write_exp(d0, 0, 0);
    write_exp(d1, 1, 0);
    char *t0 = NULL, *t1 = NULL;
    if (run_report_tables(d0, &t0) < 0 || run_report_tables(d1, &t1) < 0) fail_msg("report: %s", ss_err());
    assert_null(strstr(t0, "Why sinks form"));
    char *w = strstr(t1, "\nWhy sinks form");
    assert_non_null(w);
    *w = 0; /* the tables before it are the same; the closing line too */
    assert_int_equal(strncmp(t0, t1, strlen(t1)), 0);
    free(t0), free(t1);
    const char *sp[] = {"spiral_steps.csv", "spiral_depth.csv", "spiral_budget.csv", "spiral_keys.csv", "spiral_top.csv"};
    for (size_t i = 0; i < 5; i++) {
        char *s = read_rel(d0, sp[i]);
        if (s) fail_msg("%s written without spiral entries", sp[i]);
    }
    const char *same[] = {"conditions.csv", "dd.csv", "tags.csv", "dynamics.csv", "dynamics_blocks.csv", "locality.csv",
                          "verification.csv"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        char *x = read_rel(d0, same[i]), *y = read_rel(d1, same[i]);
        assert_non_null(x);
        assert_non_null(y);
        if (strcmp(x, y)) fail_msg("%s differs with spiral entries", same[i]);
        free(x), free(y);
    }
    char *x = read_rel(d0, "summary.json"), *y = read_rel(d1, "summary.json");
    assert_null(strstr(x, "\"spiral\""));
    json_t *jx = json_loads(x, 0, NULL), *jy = json_loads(y, 0, NULL);
    assert_non_null(jy);
    assert_int_equal(json_object_del(jy, "spiral"), 0);
    assert_true(json_equal(jx, jy));
    json_decref(jx), json_decref(jy);
    free(x), free(y);
    x = read_rel(d0, "report.html");
    y = read_rel(d1, "report.html");
    assert_null(strstr(x, "5b."));
    assert_null(strstr(x, "spiral"));
    /* the page with spiral entries is the page without, plus section 5b (figure numbers after it shift) */
    const char *a = strstr(y, "<h2>5b."), *b = strstr(y, "<h2>6.");
    assert_non_null(a);
    assert_int_equal(strncmp(x, y, (size_t)(a - y)), 0);
    const char *x6 = strstr(x, "<h2>6.");
    assert_non_null(x6);
    assert_int_equal(strncmp(x6, b, strlen("<h2>6. Intervention verification</h2>")), 0);
    free(x), free(y);
    /* an earlier report's spiral files in the same folder do not survive a report without entries */
    for (size_t i = 0; i < 5; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/report/%s", d0, sp[i]);
        assert_int_equal(tc_write_text(path, "stale\n"), 0);
    }
    if (run_report(d0) < 0) fail_msg("report: %s", ss_err());
    for (size_t i = 0; i < 5; i++) {
        char *s = read_rel(d0, sp[i]);
        if (s) fail_msg("stale %s left in the report folder", sp[i]);
    }
    tc_rmtree(root);
    free(root);
}

/* the same records in another line order give the same bytes */
static void test_order_independent(void **st) {
    (void)st;
    char *root = tc_tmpdir();
    char d0[1024], d1[1024];
    snprintf(d0, sizeof d0, "%s", tc_join(root, "fwd"));
    snprintf(d1, sizeof d1, "%s", tc_join(root, "rev"));
    write_exp(d0, 1, 0);
    write_exp(d1, 1, 1);
    if (run_report(d0) < 0 || run_report(d1) < 0) fail_msg("report: %s", ss_err());
    const char *files[] = {"spiral_steps.csv", "spiral_depth.csv", "spiral_budget.csv", "spiral_keys.csv", "spiral_top.csv",
                           "summary.json", "report.html"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *x = read_rel(d0, files[i]), *y = read_rel(d1, files[i]);
        assert_non_null(x);
        assert_non_null(y);
        if (strcmp(x, y)) fail_msg("%s depends on the order of the records", files[i]);
        free(x), free(y);
    }
    tc_rmtree(root);
    free(root);
}

/* malformed entries: an error naming records.jsonl, the line and the entry */
static void test_malformed(void **st) {
    (void)st;
    static const struct {
        const char *spiral, *want;
    } cases[] = {
        {"{\"site\": \"joint.0\"}", "'spiral' must be a list"},
        {"[3]", "spiral[0]: not a JSON object"},
        {"[{\"site\": \"joint.0\", \"block\": 0}]", "spiral[0]: no 'step'"},
        {"[{\"site\": \"nowhere.0\", \"block\": 0, \"step\": 0}]", "spiral[0]: 'site' must be a site name"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"lava\"}]",
         "spiral[0] (joint.0 step 1): 'sink_type' must be a key type"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"ki_x_image\": \"big\"}]",
         "spiral[0] (joint.0 step 1): 'ki_x_uniform' and 'ki_x_image' must be numbers or null"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2, 1], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\", \"image\"]}]",
         "spiral[0] (joint.0 step 1): 'top_keys' has 2 values, 'top_mu' 1 and 'top_types' 2"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"], \"budget\": {\"pad\": 0.5}}]",
         "'budget' and 'budget_keys' must be objects, both present"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"], \"budget\": {\"lava\": 0.5}, \"budget_keys\": {}}]",
         "budget: 'lava' is not a key type"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"], \"energy\": {\"fac\": \"x\"}}]",
         "'energy' must be an object"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"], \"qk_pre\": [1, 2]}]",
         "'qk_pre' must be an object {\"sink\": number, \"image\": number}"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"], \"mu\": [0.1, 0.9], \"key_types\": [[\"image\", 1]]}]",
         "key_types covers 1 keys, 'mu' has 2"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"], \"mu\": [0.1, 0.9]}]",
         "'mu' and 'key_types' must be lists, both present"},
        {"[{\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, \"sink_type\": \"pad\", \"top_keys\": [2], "
         "\"top_mu\": [0.5], \"top_types\": [\"pad\"]}, {\"site\": \"joint.0\", \"block\": 0, \"step\": 1, \"sink\": 2, "
         "\"sink_type\": \"pad\", \"top_keys\": [2], \"top_mu\": [0.5], \"top_types\": [\"pad\"]}]",
         "'spiral' has two entries for joint.0 step 1"},
    };
    char *root = tc_tmpdir();
    char d[1024], path[2048];
    snprintf(d, sizeof d, "%s", tc_join(root, "bad"));
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_exp(d, 1, 0);
        snprintf(path, sizeof path, "%s/records.jsonl", d);
        char *recs = tc_read_all(path, NULL);
        char *b = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&b, &len);
        fprintf(f, "%s{\"key\": \"baseline/00009/9\", \"condition\": \"baseline\", \"prompt_index\": 9, \"seed\": 9, "
                   "\"metrics\": {\"mse\": 0, \"ssim\": 1}, \"spiral\": %s}\n",
                recs, cases[i].spiral);
        fclose(f);
        assert_int_equal(tc_write_text(path, b), 0);
        free(b), free(recs);
        ss_err_clear();
        int rc = run_report(d);
        char want[2200];
        snprintf(want, sizeof want, "%s: line 13: ", path);
        if (rc != SS_EFORMAT || strncmp(ss_err(), want, strlen(want)) || !strstr(ss_err(), cases[i].want))
            fail_msg("case %zu: rc %d, error '%s', expected '%s...%s'", i, rc, ss_err(), want, cases[i].want);
        if (strchr(ss_err(), '\n')) fail_msg("case %zu: a multi-line error", i);
    }
    tc_rmtree(root);
    free(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xml_checker),    cmocka_unit_test(test_aggregates), cmocka_unit_test(test_without_spiral),
        cmocka_unit_test(test_order_independent), cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
