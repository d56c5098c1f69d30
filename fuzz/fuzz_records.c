/* libFuzzer target for the records.jsonl reader of `sinkscope report`: the input is the content
 * of records.jsonl, read through rp_load_records_stream (the code `report` uses: line splitting,
 * jansson plus the quoting of unsigned 64-bit integers, record fields, last-line-wins dedup,
 * sorting, per-condition slices), then analysed (every statistic, on whatever degenerate data the
 * fuzzer makes) and printed. Checks the invariants: records sorted by (condition, prompt, seed)
 * with unique keys, every record found by rp_find, slices consistent, one-line error messages.
 * The experiment is fixed (a baseline, a top-k condition, its random control, an eta sweep).
 * Build with `make fuzz`; seeds in fuzz/seeds-records/. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "report/report.h"

#define LABEL "fuzz.jsonl"

static const char *const CONDS[] = {
    "{\"name\": \"baseline\", \"layers\": []}",
    "{\"name\": \"A1\", \"layers\": [2], \"select\": \"topk\", \"k\": 1, \"path\": \"score\", \"eta\": 0.0}",
    "{\"name\": \"R1\", \"layers\": [2], \"select\": \"random\", \"k\": 1, \"path\": \"score\", \"eta\": 0.0, \"seed\": 7}",
    "{\"name\": \"A1e05\", \"layers\": [2], \"select\": \"topk\", \"k\": 1, \"eta\": 0.5}",
    "{\"name\": \"X\", \"layers\": [0], \"select\": \"sideways\"}",
};
#define NCOND (int)(sizeof CONDS / sizeof CONDS[0])

static void check_error_message(void) {
    const char *msg = ss_err();
    if (strncmp(msg, LABEL ": ", strlen(LABEL) + 2) != 0 && strncmp(msg, "out of memory", 13) != 0) abort();
    if (strchr(msg, '\n')) abort();
}

static int setup(rp_exp *e) {
    memset(e, 0, sizeof *e);
    e->steps = 5;
    e->n_conds = NCOND;
    if (!(e->conds = calloc(NCOND, sizeof *e->conds))) return -1;
    for (int i = 0; i < NCOND; i++) {
        json_t *c = json_loads(CONDS[i], 0, NULL);
        if (!c) abort();
        snprintf(e->conds[i].name, sizeof e->conds[i].name, "%s", json_string_value(json_object_get(c, "name")));
        e->conds[i].parsed = sink_condition_from_json(&e->conds[i].c, c, "fuzz") == 0;
        ss_err_clear();
        json_decref(c);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_err_clear();
    /* the whole input as one line too: rp_parse_line must never crash, and accepts no more than
     * jansson would after the documented quoting */
    json_error_t je;
    json_t *one = rp_parse_line((const char *)data, size, &je);
    json_decref(one);

    rp_exp e;
    if (setup(&e) < 0) return 0;
    static const char empty[1] = {0};
    FILE *f = fmemopen(size ? (void *)data : (void *)empty, size ? size : 1, "rb");
    if (!f) abort();
    if (!size) fgetc(f); /* an empty stream */
    int rc = rp_load_records_stream(&e, f, LABEL);
    fclose(f);
    if (rc < 0) {
        check_error_message();
        rp_exp_free(&e);
        return 0;
    }
    /* invariants of the loaded records */
    int total = 0;
    for (int c = 0; c < e.n_conds; c++) {
        if (e.cond_count[c] < 0 || (e.cond_count[c] && (e.cond_first[c] < 0 || e.cond_first[c] + e.cond_count[c] > e.n_recs))) abort();
        total += e.cond_count[c];
    }
    if (total != e.n_recs) abort();
    for (int i = 0; i < e.n_recs; i++) {
        const rp_record *r = &e.recs[i], *q = i ? &e.recs[i - 1] : NULL;
        if (r->cond < 0 || r->cond >= e.n_conds || r->prompt < 0) abort();
        if (q && !(q->cond < r->cond || (q->cond == r->cond && (q->prompt < r->prompt || (q->prompt == r->prompt && q->seed < r->seed)))))
            abort(); /* sorted, unique keys */
        if (rp_find(&e, r->cond, r->prompt, r->seed) != i) abort();
        if (r->tag >= e.n_tags || r->tag < -1) abort();
        if ((size_t)r->probe_off + (size_t)r->n_probe > e.n_probes && r->n_probe) abort();
        if ((size_t)r->verif_off + (size_t)r->n_verif > e.n_verifs && r->n_verif) abort();
    }
    if (e.n_lines < e.n_blank + e.n_bad + e.n_truncated) abort();

    report_opts o;
    report_opts_default(&o);
    o.exp_dir = "/nonexistent";
    o.bootstrap = 20;
    rp_analysis a;
    if (rp_analyze(&a, &e, &o) == 0) {
        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);
        if (out) {
            rp_print_tables(&a, out);
            fclose(out);
        }
        free(buf);
        rp_analysis_free(&a);
    } else {
        const char *msg = ss_err();
        if (strncmp(msg, "out of memory", 13) != 0 || strchr(msg, '\n')) abort();
    }
    rp_exp_free(&e);
    return 0;
}
