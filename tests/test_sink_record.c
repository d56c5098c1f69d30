/* test_sink_record: the one schema of sink statistics (sink/record.h).
 *   - round trip: an entry written, read back and written again is byte-identical, for the run
 *     records' entries of tests/data/old-records (written by sinkscope before sink/record existed)
 *     and for forward / generate entries (every field: batch, heads, tokens, act_text, NaN);
 *   - the report of tests/data/old-records is identical (SHA-256 of every output) to the report
 *     made of them by sinkscope before the change (report-main.sha256, made by dfa6c0b; the records
 *     come from a run of 1d68c5c, their experiment.json holds relative paths, which the report only prints);
 *   - malformed entries are errors naming the file and line, in the reader and in the report.
 * The report goes through the CLI ($SINKSCOPE_BIN or ./sinkscope). Run from the repository root. */
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
#include "exp/digest.h"
#include "exp/records.h"
#include "sink/record.h"

static char *dump(const json_t *o) { return json_dumps(o, RECORDS_JSON_FLAGS); }

/* read -> write of one probe / verification entry gives the same text as the entry itself */
static void same_probe(json_t *o) {
    sink_probe_entry e;
    if (sink_probe_entry_read_json(&e, o, "t", 1) < 0) fail_msg("%s", ss_err());
    json_t *w = sink_probe_entry_write_json(&e);
    char *a = dump(o), *b = dump(w);
    assert_string_equal(a, b);
    free(a), free(b);
    json_decref(w);
    sink_probe_entry_free(&e);
}

static void same_verif(json_t *o) {
    sink_verif_entry e;
    if (sink_verif_entry_read_json(&e, o, "t", 1) < 0) fail_msg("%s", ss_err());
    json_t *w = sink_verif_entry_write_json(&e);
    char *a = dump(o), *b = dump(w);
    assert_string_equal(a, b);
    free(a), free(b);
    json_decref(w);
    sink_verif_entry_free(&e);
}

static void test_old_records_round_trip(void **st) {
    (void)st;
    size_t len;
    char *txt = tc_read_all(tc_path("data/old-records/records.jsonl"), &len);
    assert_non_null(txt);
    int np = 0, nv = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        assert_non_null(o);
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(o, "probe"), i, x) same_probe(x), np++;
        json_array_foreach(json_object_get(o, "verification"), i, x) same_verif(x), nv++;
        /* the record line as a whole: its probe and verification arrays rebuilt from entries */
        json_t *copy = json_deep_copy(o);
        json_t *pa = json_array(), *va = json_array();
        json_array_foreach(json_object_get(o, "probe"), i, x) {
            sink_probe_entry e;
            assert_int_equal(sink_probe_entry_read_json(&e, x, "t", 1), 0);
            json_array_append_new(pa, sink_probe_entry_write_json(&e));
            sink_probe_entry_free(&e);
        }
        json_array_foreach(json_object_get(o, "verification"), i, x) {
            sink_verif_entry e;
            assert_int_equal(sink_verif_entry_read_json(&e, x, "t", 1), 0);
            json_array_append_new(va, sink_verif_entry_write_json(&e));
            sink_verif_entry_free(&e);
        }
        json_object_set_new(copy, "probe", pa);
        json_object_set_new(copy, "verification", va);
        char *a = dump(o), *b = dump(copy);
        assert_string_equal(a, line); /* jansson itself keeps the line as it is */
        assert_string_equal(a, b);
        free(a), free(b);
        json_decref(copy);
        json_decref(o);
    }
    assert_true(np >= 10 && nv >= 10);
    free(txt);
}

/* A forward-style record: B = 2, H = 2, top-3, intervened with k = 2, a NaN and a complete removal. */
static void test_forward_entries(void **st) {
    (void)st;
    int top_idx[12] = {0, 5, 7, 3, 1, 2, 9, 8, 7, 4, 6, 5}, sel[8] = {0, 5, 3, 1, 9, 8, 4, 6};
    float top_mass[12] = {.5f, .25f, .125f, .4f, .3f, .2f, .6f, .1f, .05f, .7f, .2f, .1f};
    float hent[4] = {1.5f, 1.25f, 2, 2.5f}, ht5[4] = {.9f, .8f, .7f, .6f}, mm[2] = {.45f, NAN}, en[2] = {1.375f, 2.25f};
    float t5[2] = {.85f, .65f}, i0[2] = {.5f, 0}, tx[2] = {0, 1}, am[2] = {30, 31}, ap[2] = {20, 21}, atm[2] = {3, 4},
          atp[2] = {1, 2};
    double before[4] = {.75f, .7f, .66f, .8f}, after[4] = {.01, .02, 0, 0};
    sink_record r = {.block = 3, .step = 2, .site = ss_site_code(SS_SITE_SINGLE, 1), .tfrac = 0.25, .B = 2, .H = 2,
                     .T = 12, .n_img = 8, .probed = 1, .topk = 3, .queries = TOK_IMAGE, .top_idx = top_idx,
                     .top_mass = top_mass, .head_entropy = hent, .head_top5 = ht5, .max_mass = mm, .entropy = en,
                     .top5 = t5, .idx0_frac = i0, .text_frac = tx, .act_max = am, .act_p95 = ap, .act_text_max = atm,
                     .act_text_p95 = atp, .intervened = 1, .k = 2, .sel = sel, .before = before, .after = after,
                     .min_margin = 0.125};
    for (int b = 0; b < 2; b++) {
        sink_probe_entry e;
        assert_int_equal(sink_probe_entry_from_record(&e, &r, b, 1, NULL), 0);
        json_t *o = sink_probe_entry_write_json(&e);
        sink_probe_entry_free(&e);
        assert_int_equal(json_integer_value(json_object_get(o, "batch")), b);
        assert_string_equal(json_string_value(json_object_get(o, "site")), "single.1");
        assert_string_equal(json_string_value(json_object_get(o, "queries")), "image");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "tokens"), "text")), 4);
        assert_int_equal(json_array_size(json_object_get(o, "heads")), 2);
        json_t *h1 = json_array_get(json_object_get(o, "heads"), 1);
        assert_int_equal(json_integer_value(json_array_get(json_object_get(h1, "top_keys"), 0)), top_idx[b * 6 + 3]);
        assert_int_equal(json_integer_value(json_array_get(json_object_get(o, "top1_keys"), 1)), top_idx[b * 6 + 3]);
        assert_true(json_real_value(json_object_get(o, "act_text_max")) == atm[b]);
        if (b == 1) assert_true(json_is_null(json_object_get(o, "max_mass"))); /* NaN */
        same_probe(o);
        json_decref(o);
        sink_verif_entry v;
        assert_int_equal(sink_verif_entry_from_record(&v, &r, b, 1), 0);
        o = sink_verif_entry_write_json(&v);
        sink_verif_entry_free(&v);
        assert_int_equal(json_array_size(json_object_get(o, "keys")), 2);
        assert_int_equal(json_integer_value(json_array_get(json_array_get(json_object_get(o, "keys"), 1), 1)), sel[b * 4 + 3]);
        assert_true(b == 0 ? json_is_real(json_object_get(o, "reduction")) : json_is_null(json_object_get(o, "reduction")));
        assert_true(json_real_value(json_object_get(o, "min_topk_margin")) == 0.125);
        same_verif(o);
        json_decref(o);
    }
    /* run records: batch element B - 1 only, no forward fields */
    sink_probe_entry e;
    assert_int_equal(sink_probe_entry_from_record(&e, &r, 1, 0, NULL), 0);
    json_t *o = sink_probe_entry_write_json(&e);
    sink_probe_entry_free(&e);
    assert_null(json_object_get(o, "batch"));
    assert_null(json_object_get(o, "heads"));
    assert_non_null(json_object_get(o, "t_frac"));
    same_probe(o);
    json_decref(o);
}

static void expect_bad(const char *text, int verif, const char *want) {
    json_error_t je;
    json_t *o = json_loads(text, JSON_DECODE_ANY, &je);
    assert_non_null(o);
    ss_err_clear();
    int rc;
    if (verif) {
        sink_verif_entry e;
        rc = sink_verif_entry_read_json(&e, o, "exp/records.jsonl", 7);
    } else {
        sink_probe_entry e;
        rc = sink_probe_entry_read_json(&e, o, "exp/records.jsonl", 7);
    }
    assert_true(rc < 0);
    if (!strstr(ss_err(), "exp/records.jsonl:7: ") || !strstr(ss_err(), want)) fail_msg("for %s got: %s", text, ss_err());
    json_decref(o);
}

static void test_malformed_entries(void **st) {
    (void)st;
    expect_bad("[1]", 0, "probe entry: not an object");
    expect_bad("{\"step\": 0}", 0, "'block' is missing");
    expect_bad("{\"block\": 1.5, \"step\": 0}", 0, "'block' is not an integer");
    expect_bad("{\"block\": 1, \"step\": 0, \"max_mass\": \"x\"}", 0, "'max_mass' is neither a number nor null");
    expect_bad("{\"block\": 1, \"step\": 0, \"top1_keys\": [0, -1]}", 0, "'top1_keys' holds something other than a key index");
    expect_bad("{\"block\": 1, \"step\": 0, \"site\": \"nowhere.3\"}", 0, "'site' is not a site name");
    expect_bad("{\"block\": 1, \"step\": 0, \"heads\": [{\"head\": 1, \"top_keys\": [], \"top_mass\": []}]}", 0,
               "not in head order");
    expect_bad("{\"block\": 1, \"step\": 0, \"keys\": [[0], [\"a\"]]}", 1, "verification entry: 'keys' holds something");
    expect_bad("{\"block\": 1, \"step\": 0, \"mass_after\": [1]}", 1, "'mass_after' is neither a number nor null");
    /* the old form of verification keys (one integer per head) still reads */
    json_t *o = json_loads("{\"block\": 1, \"step\": 0, \"keys\": [3, 4]}", 0, NULL);
    sink_verif_entry v;
    assert_int_equal(sink_verif_entry_read_json(&v, o, "x", 1), 0);
    assert_int_equal(v.n_heads, 2);
    assert_int_equal(v.keys[1], 4);
    sink_verif_entry_free(&v);
    json_decref(o);
}

static char g_buf[1 << 16];

static void test_report_of_old_records(void **st) {
    (void)st;
    char *tmp = tc_tmpdir();
    assert_non_null(tmp);
    int rc = tc_run(g_buf, sizeof g_buf, "%s report %s --out %s/rep --quiet", tc_bin(), tc_path("data/old-records"), tmp);
    if (rc) fail_msg("%s", g_buf);
    char *list = tc_read_all(tc_path("data/old-records/report-main.sha256"), NULL);
    assert_non_null(list);
    int n = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char want[65], name[256];
        assert_int_equal(sscanf(line, "%64s %255s", want, name), 2);
        char hex[DIGEST_HEX];
        if (digest_file(tc_join(tmp, "rep/%s", name), hex) < 0) fail_msg("the report did not write %s", name);
        if (strcmp(hex, want)) fail_msg("%s differs from main's report of the same records", name);
        n++;
    }
    assert_int_equal(n, 11);
    free(list);
    /* a malformed entry: the report names the file and line and skips that line */
    rc = tc_run(g_buf, sizeof g_buf, "cp -r %s %s/exp", tc_path("data/old-records"), tmp);
    assert_int_equal(rc, 0);
    char *rec = tc_read_all(tc_join(tmp, "exp/records.jsonl"), NULL);
    assert_non_null(rec);
    char *at = strstr(rec, "\"max_mass\":");
    assert_non_null(at);
    char *end = strchr(at, ','); /* line 1's first probe entry: its max_mass becomes "bad" */
    assert_non_null(end);
    FILE *f = fopen(tc_join(tmp, "exp/records.jsonl"), "w");
    assert_non_null(f);
    fprintf(f, "%.*s\"bad\"%s", (int)(at + 11 - rec), rec, end);
    fclose(f);
    free(rec);
    rc = tc_run(g_buf, sizeof g_buf, "%s report %s/exp --out %s/rep2", tc_bin(), tmp, tmp);
    if (!strstr(g_buf, "records.jsonl:1: probe entry: 'max_mass' is neither a number nor null; line skipped"))
        fail_msg("rc %d, got: %s", rc, g_buf);
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_old_records_round_trip),
        cmocka_unit_test(test_forward_entries),
        cmocka_unit_test(test_malformed_entries),
        cmocka_unit_test(test_report_of_old_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
