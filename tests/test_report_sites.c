/* test_report_sites: the report's dynamics and verification rows of named attention sites.
 * Records of sites other than joint.i carry "site" and, in "block", the site's flat index
 * (SD3.5: attn2.i after the joint blocks; FLUX: double.i, then single.j). The report gives each
 * site its own row labelled by its name, in flat-index order; joint rows of experiments without
 * sites keep their plain block numbers and the CSVs their columns. */
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

/* an experiment of baseline + one condition, 2 prompts; probe and verification entries at the
 * given (block, site) pairs (site NULL: a joint block without "site") */
typedef struct {
    int block;
    const char *site;
    double mass; /* max_mass of the probe entries and mass_before of the verification entries */
} entry;

static void write_exp(const char *dir, const entry *en, int n) {
    assert_int_equal(ss_mkdir_p(dir), 0);
    char path[2048];
    snprintf(path, sizeof path, "%s/experiment.json", dir);
    assert_int_equal(tc_write_text(path, "{\"model\": \"m\", \"n_prompts\": 2, \"seeds_per_prompt\": 1, \"steps\": 2, \"cfg\": 1,"
                                         " \"conditions\": [{\"name\": \"baseline\", \"layers\": []},"
                                         " {\"name\": \"A1\", \"layers\": [1], \"k\": 1}]}\n"), 0);
    char *b = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&b, &len);
    for (int c = 0; c < 2; c++)
        for (int p = 0; p < 2; p++) {
            fprintf(f, "{\"key\": \"%s/%05d/%d\", \"condition\": \"%s\", \"prompt_index\": %d, \"seed\": %d, "
                       "\"metrics\": {\"mse\": 0, \"ssim\": 1}, \"%s\": [",
                    c ? "A1" : "baseline", p, p, c ? "A1" : "baseline", p, p, c ? "verification" : "probe");
            for (int i = 0; i < n; i++)
                for (int s = 0; s < 2; s++) {
                    fprintf(f, "%s{\"block\": %d, ", i + s ? ", " : "", en[i].block);
                    if (en[i].site) fprintf(f, "\"site\": \"%s\", ", en[i].site);
                    if (c == 0)
                        fprintf(f, "\"step\": %d, \"t_frac\": %d, \"max_mass\": %.17g, \"entropy\": 3, \"top5\": 0.4, "
                                   "\"top1_is_index0\": 0, \"top1_is_text\": 0.5, \"act_max\": 9, \"act_p95\": 4, "
                                   "\"top1_keys\": [%d, %d]}",
                                s, s, en[i].mass + 0.01 * p, 3 + i, 7);
                    else
                        fprintf(f, "\"step\": %d, \"t_frac\": %d, \"mass_before\": %.17g, \"mass_after\": 0, "
                                   "\"keys\": [[3], [4]]}",
                                s, s, en[i].mass);
                }
            fputs("]}\n", f);
        }
    fclose(f);
    snprintf(path, sizeof path, "%s/records.jsonl", dir);
    assert_int_equal(tc_write_text(path, b), 0);
    free(b);
}

static char *report(const char *dir, char **tables) {
    report_opts o;
    report_opts_default(&o);
    o.exp_dir = dir;
    o.bootstrap = 50;
    o.print_table = 1;
    char *t = NULL;
    size_t tl = 0;
    o.log = open_memstream(&t, &tl);
    if (report_run(&o) < 0) fail_msg("report: %s", ss_err());
    fclose(o.log);
    *tables = t;
    char path[2048];
    snprintf(path, sizeof path, "%s/report/summary.json", dir);
    return tc_read_all(path, NULL);
}

static char *read_rel(const char *dir, const char *rel) {
    char path[2048];
    snprintf(path, sizeof path, "%s/report/%s", dir, rel);
    char *s = tc_read_all(path, NULL);
    assert_non_null(s);
    return s;
}

/* SD3.5: joint.1 and attn2.0 (flat index 2 with 2 joint blocks); probes of both, verification of both */
static void test_sd35_attn2_rows(void **st) {
    (void)st;
    char *root = tc_tmpdir();
    const char *dir = tc_join(root, "sd35");
    char d[1024];
    snprintf(d, sizeof d, "%s", dir);
    const entry en[] = {{1, NULL, 0.2}, {2, "attn2.0", 0.05}};
    write_exp(d, en, 2);
    char *tables, *sm = report(d, &tables);
    json_t *j = json_loads(sm, 0, NULL);
    assert_non_null(j);
    const json_t *rows = json_object_get(json_object_get(j, "dynamics"), "blocks");
    assert_int_equal(json_array_size(rows), 2);
    const json_t *r0 = json_array_get(rows, 0), *r1 = json_array_get(rows, 1);
    assert_int_equal(json_integer_value(json_object_get(r0, "block")), 1);
    assert_null(json_object_get(r0, "site")); /* joint rows are written as before */
    assert_int_equal(json_integer_value(json_object_get(r1, "block")), 2);
    assert_string_equal(json_string_value(json_object_get(r1, "site")), "attn2.0");
    /* each row has its own entries: 2 prompts x 2 steps, mean MaxMass of that site only */
    assert_int_equal(json_integer_value(json_object_get(r1, "entries")), 4);
    assert_true(fabs(json_number_value(json_object_get(json_object_get(r1, "mean"), "max_mass")) - 0.055) < 1e-12);
    assert_true(fabs(json_number_value(json_object_get(json_object_get(r0, "mean"), "max_mass")) - 0.205) < 1e-12);
    const json_t *vr = json_object_get(json_array_get(json_object_get(j, "verification"), 0), "blocks");
    assert_int_equal(json_array_size(vr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(vr, 1), "site")), "attn2.0");
    assert_true(json_number_value(json_object_get(json_array_get(vr, 1), "mass_before")) == 0.05);
    json_decref(j);
    /* the CSVs gain a site column; the terminal tables name the sites */
    char *csv = read_rel(d, "dynamics_blocks.csv");
    if (strncmp(csv, "block,site,entries,", 19) || !strstr(csv, "\n1,joint.1,4,") || !strstr(csv, "\n2,attn2.0,4,"))
        fail_msg("dynamics_blocks.csv:\n%s", csv);
    free(csv);
    csv = read_rel(d, "verification.csv");
    if (!strstr(csv, "condition,block,site,n,") || !strstr(csv, "\nA1,2,attn2.0,4,")) fail_msg("verification.csv:\n%s", csv);
    free(csv);
    csv = read_rel(d, "dynamics.csv");
    if (!strstr(csv, "\n2,attn2.0,0,")) fail_msg("dynamics.csv:\n%s", csv);
    free(csv);
    if (!strstr(tables, "\nattn2.0 ") || !strstr(tables, "\njoint.1 ")) fail_msg("tables:\n%s", tables);
    char *html = read_rel(d, "report.html");
    assert_non_null(strstr(html, "<td class=l>attn2.0</td>"));
    assert_non_null(strstr(html, "attn2.0: top-1 key index"));
    free(html);
    free(tables), free(sm);
    tc_rmtree(root);
    free(root);
}

/* FLUX: double.1 (flat 1) and single.0 (flat 19 of a 19-double-block model), both named */
static void test_flux_rows(void **st) {
    (void)st;
    char *root = tc_tmpdir();
    char d[1024];
    snprintf(d, sizeof d, "%s", tc_join(root, "flux"));
    const entry en[] = {{19, "single.0", 0.3}, {1, "double.1", 0.1}};
    write_exp(d, en, 2);
    char *tables, *sm = report(d, &tables);
    json_t *j = json_loads(sm, 0, NULL);
    const json_t *rows = json_object_get(json_object_get(j, "dynamics"), "blocks");
    assert_int_equal(json_array_size(rows), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "site")), "double.1");
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 1), "site")), "single.0");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 1), "block")), 19);
    json_decref(j);
    if (!strstr(tables, "\nsingle.0 ") || !strstr(tables, "\ndouble.1 ")) fail_msg("tables:\n%s", tables);
    free(tables), free(sm);
    tc_rmtree(root);
    free(root);
}

/* joint blocks only (records without "site"): plain block numbers, no site column anywhere */
static void test_joint_only_unchanged(void **st) {
    (void)st;
    char *root = tc_tmpdir();
    char d[1024];
    snprintf(d, sizeof d, "%s", tc_join(root, "sd3"));
    const entry en[] = {{0, NULL, 0.2}, {1, NULL, 0.1}};
    write_exp(d, en, 2);
    char *tables, *sm = report(d, &tables);
    assert_null(strstr(sm, "\"site\""));
    assert_null(strstr(tables, "joint."));
    char *csv = read_rel(d, "dynamics_blocks.csv");
    assert_int_equal(strncmp(csv, "block,entries,", 14), 0);
    assert_non_null(strstr(csv, "\n1,4,"));
    free(csv);
    csv = read_rel(d, "verification.csv");
    assert_int_equal(strncmp(csv, "condition,block,n,", 18), 0);
    free(csv);
    free(tables), free(sm);
    tc_rmtree(root);
    free(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd35_attn2_rows),
        cmocka_unit_test(test_flux_rows),
        cmocka_unit_test(test_joint_only_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
