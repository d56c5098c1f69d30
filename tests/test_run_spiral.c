/* The "From a Spiral to a Sink" experiments in `sinkscope run` (docs/experiment-format.md, section
 * Spiral fields; README, the preset table), on the embedded ShapeWorld model:
 *   - `run --preset spiral_dynamics` writes one spiral entry per (site, step) of every record,
 *     equal field for field to the probe's own records (spiral_rec_to_json of the same prompt and
 *     seed made by pipe_generate with every site probed), with mu and the key types at the last
 *     step; the images equal a run without the probe; experiment.json records the setting, and a
 *     resume with another one is refused naming the field;
 *   - comma padding: pad_prompt 0 is bit-identical to the baseline; 200 commas are stripped by the
 *     word tokenizer (no comma keys, the same tokens, the same images, a note says so); a padding
 *     that adds words changes the types' counts as the tokenizer says; padded prompts that do not
 *     tokenize and bad pad_prompt values are refused in one line naming the file, the condition
 *     and the field;
 *   - the preset file format (a bare list, or an object with probe and conditions) and its errors;
 *   - `run --preset pe_corner` runs (the embedded model has SD3's learned pos_embed). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "exp/metrics.h"
#include "exp/protocol.h"
#include "exp/records.h"
#include "io/png.h"
#include "sample/pipeline.h"
#include "sink/sink.h"
#include "sink/spiral.h"
#include "text/tokenizer.h"

#define MODEL "models/shapeworld"
#define STEPS 3

static char *g_root;

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

static int setup(void **st) {
    (void)st;
    return (g_root = tc_tmpdir()) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s: %s", path, je.text);
    return j;
}

/* records.jsonl as a JSON array */
static json_t *load_records(const char *exp) {
    char *text = tc_read_all(tc_join(exp, "records.jsonl"), NULL);
    if (!text) fail_msg("%s/records.jsonl: cannot read", exp);
    json_t *a = json_array();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        if (!r) fail_msg("records.jsonl: %s", je.text);
        json_array_append_new(a, r);
    }
    free(text);
    return a;
}

static const json_t *record_of(const json_t *recs, const char *key) {
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) if (!strcmp(json_string_value(json_object_get(r, "key")), key)) return r;
    fail_msg("no record %s", key);
    return NULL;
}

static const char *str_of(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) fail_msg("field '%s' is not a string", k);
    return json_string_value(v);
}

/* The model's sites at the run's token counts, and its text length. */
static int model_sites(const pipeline *pp, ss_site *sites, int cap) {
    const sd3_config *tc = &pp->transformer->cfg;
    const int n_img = (tc->sample_size / tc->patch_size) * (tc->sample_size / tc->patch_size);
    return sd3_sites(tc, n_img, pp->text_encoder->cfg.max_length, sites, cap);
}

/* The word tokenizer's types as its definition says (text/tokenizer.h): <pad> id 0, <eos> id 1,
 * the prompt's words before them. */
static void word_types(const pipeline *pp, const char *prompt, uint8_t *types, int *n_words) {
    const int S = pp->text_encoder->cfg.max_length;
    int32_t ids[256];
    const int nw = tok_encode(pp->text_encoder->vocab, prompt, S, ids);
    if (nw < 0) fail_msg("%s", ss_err());
    for (int i = 0; i < S; i++) {
        types[i] = i < nw ? SS_TOK_WORD : i == nw ? SS_TOK_EOS : SS_TOK_PAD;
        assert_int_equal(ids[i], i < nw ? ids[i] : i == nw ? TOK_EOS : TOK_PAD);
    }
    if (n_words) *n_words = nw;
}

/* json through the records' text form and back, so reals compare as the file holds them */
static json_t *as_written(const json_t *x) {
    char *s = json_dumps(x, RECORDS_JSON_FLAGS);
    json_t *y = json_loads(s, 0, NULL);
    free(s);
    return y;
}

/* Compares one record's spiral array with the probe's records for the same prompt and seed. */
static void check_against_probe(const pipeline *pp, const json_t *rec) {
    ss_site sites[64];
    const int ns = model_sites(pp, sites, 64), S = pp->text_encoder->cfg.max_length;
    int codes[64];
    for (int i = 0; i < ns; i++) codes[i] = ss_site_code_of(&sites[i]);
    sink_ctx *sk = sink_ctx_new();
    assert_int_equal(sink_ctx_set_probe(sk, codes, ns, TOK_IMAGE, 5, 1), 0);
    sink_ctx_set_spiral(sk, SPIRAL_ALL);
    uint8_t types[2 * 256];
    int n_words;
    word_types(pp, "", types, NULL);
    word_types(pp, str_of(rec, "prompt"), types + S, &n_words);
    assert_int_equal(sink_ctx_set_text_types(sk, types, 2, S), 0);
    pipe_params p;
    pipe_params_default(&p);
    p.prompt = str_of(rec, "prompt");
    p.seed = (uint64_t)json_integer_value(json_object_get(rec, "seed"));
    p.steps = STEPS;
    const int H = pp->transformer->cfg.sample_size;
    uint8_t *rgb = malloc((size_t)3 * H * H);
    if (pipe_generate(pp, &p, rgb, sk, NULL) < 0) fail_msg("%s", ss_err());
    free(rgb);
    const json_t *sp = json_object_get(rec, "spiral");
    assert_true(json_is_array(sp));
    assert_int_equal((int)json_array_size(sp), ns * STEPS);
    int n_checked = 0;
    for (int i = 0; i < sink_ctx_record_count(sk); i++) {
        const sink_record *r = sink_ctx_record(sk, i);
        if (!r->probed) continue;
        assert_non_null(r->spiral);
        char nm[40];
        ss_site_code_name(r->site, nm, sizeof nm);
        const json_t *e = NULL, *x;
        size_t k;
        int found = 0;
        json_array_foreach(sp, k, x) if (!strcmp(str_of(x, "site"), nm) && json_integer_value(json_object_get(x, "step")) == r->step) {
            e = x;
            found++;
        }
        if (found != 1) fail_msg("%s step %d: %d spiral entries", nm, r->step, found);
        /* the probe's own fields, in spiral_rec_to_json's order after site, block, step, t_frac */
        const int b = r->B - 1;
        json_t *want = json_object(), *f = spiral_rec_to_json(r->spiral, b);
        json_object_set_new(want, "site", json_string(nm));
        json_object_set_new(want, "block", json_integer(r->block));
        json_object_set_new(want, "step", json_integer(r->step));
        json_object_set_new(want, "t_frac", json_real(r->tfrac));
        const char *key;
        json_t *v;
        json_object_foreach(f, key, v) json_object_set(want, key, v);
        json_decref(f);
        json_t *got = json_deep_copy(e), *w2 = as_written(want);
        const int last = r->step == STEPS - 1;
        assert_int_equal(json_object_get(got, "mu") != NULL, last);
        assert_int_equal(json_object_get(got, "key_types") != NULL, last);
        if (last) {
            /* mu: the record's vector, every float exact */
            const json_t *mu = json_object_get(got, "mu");
            assert_int_equal((int)json_array_size(mu), r->spiral->Tk);
            for (int j = 0; j < r->spiral->Tk; j++)
                assert_true((float)json_number_value(json_array_get(mu, j)) == r->spiral->mu[(size_t)b * r->spiral->Tk + j]);
            /* key types: 64 image keys, then the prompt's words, <eos>, <pad> */
            const json_t *kt = json_object_get(got, "key_types");
            const ss_site *site = ss_site_find(sites, ns, r->site);
            int j = 0;
            json_array_foreach(kt, k, x) {
                const char *tn = json_string_value(json_array_get(x, 0));
                const int cnt = (int)json_integer_value(json_array_get(x, 1));
                assert_true(cnt > 0);
                for (int q = 0; q < cnt; q++, j++) {
                    const int ti = j - site->kspan[1].start;
                    const ss_tok t = j < site->kspan[1].start ? SS_TOK_IMAGE : (ss_tok)types[S + ti];
                    assert_string_equal(tn, ss_tok_name(t));
                }
            }
            assert_int_equal(j, site->Tk);
            json_object_del(got, "mu");
            json_object_del(got, "key_types");
        }
        if (!json_equal(got, w2)) {
            char *a = json_dumps(got, RECORDS_JSON_FLAGS), *c = json_dumps(w2, RECORDS_JSON_FLAGS);
            fail_msg("%s step %d:\n run   %.600s\n probe %.600s", nm, r->step, a, c);
        }
        /* the budget's key counts follow the tokenizer: 64 image keys, the words, one <eos>, the pads */
        const json_t *bk = json_object_get(e, "budget_keys");
        assert_int_equal(json_integer_value(json_object_get(bk, "image")), 64);
        assert_int_equal(json_integer_value(json_object_get(bk, "word")), n_words);
        assert_int_equal(json_integer_value(json_object_get(bk, "eos")), 1);
        assert_int_equal(json_integer_value(json_object_get(bk, "pad")), S - n_words - 1);
        assert_null(json_object_get(bk, "comma"));
        /* the entry's keys start as the format says */
        const char *k0 = json_object_iter_key(json_object_iter((json_t *)e));
        assert_string_equal(k0, "site");
        json_decref(got);
        json_decref(w2);
        json_decref(want);
        n_checked++;
    }
    assert_int_equal(n_checked, ns * STEPS);
    sink_ctx_free(sk);
}

static void test_spiral_dynamics(void **st) {
    (void)st;
    char out[16384];
    char E[1024];
    snprintf(E, sizeof E, "%s", at("dyn"));
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset spiral_dynamics --limit-prompts 2 --seeds 1 --steps %d --quiet 2>&1",
                    tc_bin(), E, STEPS);
    if (rc) fail_msg("run: %s", out);
    pipeline *pp;
    if (pipe_load(&pp, MODEL) < 0) fail_msg("%s", ss_err());
    ss_site sites[64];
    const int ns = model_sites(pp, sites, 64);
    assert_int_equal(ns, 6);
    /* experiment.json: every site by name, every field group */
    json_t *ex = load_json(tc_join(E, "experiment.json"));
    const json_t *probe = json_object_get(ex, "probe");
    json_t *want_sp = json_pack("[s,s,s,s,s,s]", "keyimp", "budget", "energy", "qk", "norms", "act");
    assert_true(json_equal(json_object_get(probe, "spiral"), want_sp));
    json_decref(want_sp);
    const json_t *names = json_object_get(probe, "sites");
    assert_int_equal((int)json_array_size(names), ns);
    for (int i = 0; i < ns; i++) {
        char nm[40];
        assert_string_equal(json_string_value(json_array_get(names, (size_t)i)), ss_site_code_name(ss_site_code_of(&sites[i]), nm, sizeof nm));
    }
    assert_string_equal(str_of(ex, "conditions_source"), "preset spiral_dynamics");
    assert_int_equal((int)json_array_size(json_object_get(ex, "conditions")), 1); /* baseline only */
    json_decref(ex);
    json_t *recs = load_records(E);
    assert_int_equal((int)json_array_size(recs), 2);
    size_t i;
    const json_t *r;
    json_array_foreach(recs, i, r) check_against_probe(pp, r);
    /* two images at once on two threads: the same spiral entries */
    char J[1024];
    snprintf(J, sizeof J, "%s", at("jobs"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset spiral_dynamics --limit-prompts 2 --seeds 1 --steps %d --threads 2 "
                "--jobs 2 --quiet 2>&1", tc_bin(), J, STEPS);
    if (rc) fail_msg("run --jobs 2: %s", out);
    json_t *jr = load_records(J);
    json_array_foreach(jr, i, r) assert_true(json_equal(json_object_get(r, "spiral"),
                                                        json_object_get(record_of(recs, str_of(r, "key")), "spiral")));
    json_decref(jr);
    /* the probe leaves the images as they are: a run without it makes the same files */
    char P[1024];
    snprintf(P, sizeof P, "%s", at("plain"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset baseline --limit-prompts 2 --seeds 1 --steps %d --quiet 2>&1", tc_bin(),
                P, STEPS);
    if (rc) fail_msg("run: %s", out);
    json_t *plain = load_records(P);
    json_array_foreach(plain, i, r) {
        const json_t *s = record_of(recs, str_of(r, "key"));
        assert_string_equal(str_of(r, "image_sha256"), str_of(s, "image_sha256"));
        assert_null(json_object_get(r, "spiral")); /* and no spiral fields without the setting */
    }
    ex = load_json(tc_join(P, "experiment.json"));
    assert_null(json_object_get(json_object_get(ex, "probe"), "spiral"));
    assert_null(json_object_get(json_object_get(ex, "probe"), "sites"));
    json_decref(ex);
    json_decref(plain);
    /* resume: the same setting continues, another one is refused naming the field */
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset spiral_dynamics --limit-prompts 2 --seeds 1 --steps %d --quiet 2>&1",
                tc_bin(), E, STEPS);
    if (rc) fail_msg("resume: %s", out);
    assert_non_null(strstr(out, "0 new"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset spiral_dynamics --spiral keyimp,budget --limit-prompts 2 --seeds 1 "
                "--steps %d --quiet 2>&1", tc_bin(), E, STEPS);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "field 'probe.spiral'")) fail_msg("%s", out);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset spiral_dynamics --probe 1,3 --limit-prompts 2 --seeds 1 --steps %d "
                "--quiet 2>&1", tc_bin(), E, STEPS);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "field 'probe.")) fail_msg("%s", out);
    /* an experiment without the setting refuses a resume that asks for it */
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset baseline --spiral all --limit-prompts 2 --seeds 1 --steps %d --quiet 2>&1",
                tc_bin(), P, STEPS);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "field 'probe.spiral' differs: the folder has (absent)")) fail_msg("%s", out);
    json_decref(recs);
    pipe_free(pp);
}

/* --spiral and --probe errors */
static void test_options(void **st) {
    (void)st;
    char out[16384];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset baseline --spiral keyimp,bogus --limit-prompts 1 --steps 1 --quiet 2>&1",
                    tc_bin(), at("opt"));
    assert_int_equal(rc, 2);
    if (!strstr(out, "--spiral") || !strstr(out, "bogus")) fail_msg("%s", out);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset baseline --spiral all --probe none --limit-prompts 1 --steps 1 --quiet 2>&1",
                tc_bin(), at("opt"));
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "--spiral needs probed sites")) fail_msg("%s", out);
    /* --probe all alone: every site named, no spiral fields; cfg 1 (batch of one) with spiral fields */
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset baseline --probe all --limit-prompts 1 --steps 2 --quiet 2>&1", tc_bin(),
                at("all"));
    if (rc) fail_msg("%s", out);
    json_t *ex = load_json(at("all/experiment.json"));
    assert_int_equal((int)json_array_size(json_object_get(json_object_get(ex, "probe"), "sites")), 6);
    assert_int_equal((int)json_array_size(json_object_get(json_object_get(ex, "probe"), "blocks")), 6);
    assert_null(json_object_get(json_object_get(ex, "probe"), "spiral"));
    json_decref(ex);
    json_t *recs = load_records(at("all"));
    assert_int_equal((int)json_array_size(json_object_get(json_array_get(recs, 0), "probe")), 6 * 2);
    assert_null(json_object_get(json_array_get(recs, 0), "spiral"));
    json_decref(recs);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset baseline --probe 2 --spiral keyimp --cfg 1 --limit-prompts 1 --steps 1 "
                "--quiet 2>&1", tc_bin(), at("cfg1"));
    if (rc) fail_msg("%s", out);
    recs = load_records(at("cfg1"));
    const json_t *sp = json_object_get(json_array_get(recs, 0), "spiral");
    assert_int_equal((int)json_array_size(sp), 1);
    const json_t *e = json_array_get(sp, 0);
    assert_string_equal(str_of(e, "site"), "joint.2");
    assert_int_equal((int)json_array_size(json_object_get(e, "mu")), 80); /* one step: it is the last */
    assert_null(json_object_get(e, "budget"));                           /* only keyimp asked for */
    json_decref(recs);
}

/* Values of condition `cond`'s image of prompt p (seed p) that differ from the baseline's. */
static int n_differ(const char *exp, const char *cond, int p) {
    uint8_t *a = NULL, *b = NULL;
    int w, h, w2, h2;
    if (png_read_rgb(tc_join(exp, "images/baseline/%05d_%d.png", p, p), &w, &h, &a) < 0 ||
        png_read_rgb(tc_join(exp, "images/%s/%05d_%d.png", cond, p, p), &w2, &h2, &b) < 0)
        fail_msg("%s", ss_err());
    assert_int_equal(w, w2);
    assert_int_equal(h, h2);
    int n = 0;
    for (int i = 0; i < 3 * w * h; i++) n += a[i] != b[i];
    free(a);
    free(b);
    return n;
}

static int n_entries_with(const json_t *rec, const char *field) {
    size_t i;
    const json_t *e;
    int n = 0;
    json_array_foreach(json_object_get(rec, "spiral"), i, e) n += json_object_get(e, field) != NULL;
    return n;
}

static void test_comma_padding(void **st) {
    (void)st;
    char out[16384];
    pipeline *pp;
    if (pipe_load(&pp, MODEL) < 0) fail_msg("%s", ss_err());
    const int S = pp->text_encoder->cfg.max_length;
    /* pad 0 (the no-op form), 200 commas, two more words (" circle" twice) */
    char C[1024];
    snprintf(C, sizeof C, "%s", at("pads.json"));
    assert_int_equal(tc_write_text(C, "{\"probe\": {\"spiral\": \"keyimp,budget\"}, \"conditions\": ["
                                      "{\"name\": \"pad0\", \"pad_prompt\": 0}, {\"name\": \"comma200\", \"pad_prompt\": 200},"
                                      " {\"name\": \"words2\", \"pad_prompt\": \"2: circle\"}]}\n"), 0);
    char E[1024];
    snprintf(E, sizeof E, "%s", at("pad"));
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --conditions '%s' --limit-prompts 2 --seeds 1 --steps 2 --quiet 2>&1", tc_bin(),
                    E, C);
    if (rc) fail_msg("run: %s", out);
    if (!strstr(out, "condition 'comma200': pad_prompt 200 leaves every prompt's tokens unchanged")) fail_msg("%s", out);
    assert_null(strstr(out, "condition 'pad0'"));
    json_t *ex = load_json(tc_join(E, "experiment.json"));
    const json_t *conds = json_object_get(ex, "conditions");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(conds, 1), "pad_prompt")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(conds, 2), "pad_prompt")), 200);
    assert_string_equal(str_of(json_array_get(conds, 3), "pad_prompt"), "2: circle");
    assert_null(json_object_get(json_array_get(conds, 0), "pad_prompt"));
    json_decref(ex);
    json_t *recs = load_records(E);
    assert_int_equal((int)json_array_size(recs), 2 * 4);
    for (int p = 0; p < 2; p++) {
        char k[64];
        snprintf(k, sizeof k, "baseline/%05d/%d", p, p);
        const json_t *base = record_of(recs, k);
        const char *prompt = str_of(base, "prompt");
        int nw;
        uint8_t types[256];
        word_types(pp, prompt, types, &nw);
        snprintf(k, sizeof k, "pad0/%05d/%d", p, p);
        const json_t *r0 = record_of(recs, k);
        assert_int_equal(n_differ(E, "pad0", p), 0); /* bit-identical pixels */
        assert_true(json_real_value(json_object_get(json_object_get(r0, "metrics"), "mse")) == 0);
        assert_null(json_object_get(r0, "padded_prompt"));
        assert_null(json_object_get(base, "padded_prompt"));
        snprintf(k, sizeof k, "comma200/%05d/%d", p, p);
        const json_t *rc200 = record_of(recs, k);
        assert_string_equal(str_of(rc200, "prompt"), prompt); /* the user's prompt stays */
        char want[1024];
        int n = snprintf(want, sizeof want, "%s ", prompt);
        for (int i = 0; i < 200; i++) want[n++] = ',';
        want[n] = 0;
        assert_string_equal(str_of(rc200, "padded_prompt"), want);
        /* the word tokenizer strips the commas: the same tokens and images, no comma keys */
        assert_int_equal(n_differ(E, "comma200", p), 0);
        snprintf(k, sizeof k, "words2/%05d/%d", p, p);
        const json_t *rw = record_of(recs, k);
        snprintf(want, sizeof want, "%s  circle circle", prompt);
        assert_string_equal(str_of(rw, "padded_prompt"), want);
        assert_true(n_differ(E, "words2", p) > 0);
        const json_t *which[3] = {base, rc200, rw};
        const int words[3] = {nw, nw, nw + 2};
        for (int c = 0; c < 3; c++) {
            const json_t *sp = json_object_get(which[c], "spiral");
            assert_int_equal((int)json_array_size(sp), 3 * 2); /* default blocks 1, 3, 4; 2 steps */
            assert_int_equal(n_entries_with(which[c], "budget"), 6);
            assert_int_equal(n_entries_with(which[c], "mu"), 3);
            size_t i;
            const json_t *e;
            json_array_foreach(sp, i, e) {
                const json_t *bk = json_object_get(e, "budget_keys");
                assert_int_equal(json_integer_value(json_object_get(bk, "word")), words[c]);
                assert_int_equal(json_integer_value(json_object_get(bk, "eos")), 1);
                assert_int_equal(json_integer_value(json_object_get(bk, "pad")), S - words[c] - 1);
                assert_null(json_object_get(bk, "comma"));
            }
        }
        /* the probe's word / eos / pad split follows the padded prompt's words */
        const json_t *pr0 = json_array_get(json_object_get(rw, "probe"), 0);
        assert_non_null(json_object_get(pr0, "top1_is_word"));
    }
    json_decref(recs);
    /* the report names the prompt transform (pad 0 is the no-op form) */
    rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), E);
    if (rc) fail_msg("report: %s", out);
    char *csv = tc_read_all(tc_join(E, "report/conditions.csv"), NULL);
    assert_non_null(csv);
    if (!strstr(csv, "comma200,2,\"prompt + 200 x ','\"") || !strstr(csv, "words2,3,prompt + 2 x ' circle',") ||
        !strstr(csv, "pad0,1,no-op (no layers),"))
        fail_msg("conditions.csv:\n%.2000s", csv);
    free(csv);
    /* padded prompts that do not tokenize: refused before any image, naming file, condition, field, prompt */
    static const char *const BAD_RUN[][2] = {{"20: circle", "prompt too long: 25 words, the maximum is 15"}, {"3:x", "xxx"}};
    for (int i = 0; i < 2; i++) {
        char text[256];
        snprintf(text, sizeof text, "[{\"name\": \"bad%d\", \"pad_prompt\": \"%s\"}]\n", i, BAD_RUN[i][0]);
        assert_int_equal(tc_write_text(at("badrun.json"), text), 0);
        rc = tc_run(out, sizeof out, "%s run --exp '%s' --conditions '%s' --limit-prompts 2 --steps 1 --quiet 2>&1", tc_bin(),
                    at("badrun%d", i), at("badrun.json"));
        assert_int_not_equal(rc, 0);
        char want[128];
        snprintf(want, sizeof want, "badrun.json: condition 'bad%d': field 'pad_prompt' = \"%s\": prompt 0 padded: ", i, BAD_RUN[i][0]);
        if (!strstr(out, want) || !strstr(out, BAD_RUN[i][1])) fail_msg("%s\nwanted: %s", out, want);
        assert_null(strchr(strchr(out, '\n') + 1, '\n')); /* one line */
        size_t len = 0;
        char *t = tc_read_all(at("badrun%d/records.jsonl", i), &len);
        assert_true(!t || len == 0); /* no image made */
        free(t);
    }
    pipe_free(pp);
}

static void test_pad_values(void **st) {
    (void)st;
    static const char *const BAD[][2] = {
        {"-1", "field 'pad_prompt' = -1 is outside [0, 100000]"},
        {"100001", "field 'pad_prompt' = 100001 is outside [0, 100000]"},
        {"2.5", "field 'pad_prompt' must be a count N"},
        {"true", "field 'pad_prompt' must be a count N"},
        {"[200]", "field 'pad_prompt' must be a count N"},
        {"\"\"", "field 'pad_prompt': expected N or N:STRING"},
        {"\"abc\"", "field 'pad_prompt': the count 'abc' must be an integer"},
        {"\"-3\"", "field 'pad_prompt': the count '-3' must be an integer"},
        {"\"5:\"", "field 'pad_prompt': the padding string after ':' is empty"},
        {"\"5:a\\tb\"", "field 'pad_prompt': the padding string contains a control character"},
        {"\"5:" "0123456789012345678901234567890123456789012345678901234567890123456789012345678\"",
         "field 'pad_prompt' = \"5:0123456789"},
        {"\"5:" "0123456789012345678901234567890123456789012345678901234567890123\"",
         "field 'pad_prompt': the padding string is longer than 63 bytes"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "[{\"name\": \"p\", \"layers\": []}, {\"name\": \"q\", \"pad_prompt\": %s}]", BAD[i][0]);
        sink_condition *l;
        int n;
        assert_true(sink_condition_list_parse(&l, &n, text, strlen(text), "bad.json") < 0);
        if (!strstr(ss_err(), "bad.json: condition 1: ") || !strstr(ss_err(), BAD[i][1])) fail_msg("%s: %s", BAD[i][0], ss_err());
        assert_null(strchr(ss_err(), '\n'));
        assert_null(l);
    }
    /* good ones: written back as given; active only when N > 0; no 'layers' needed */
    const char *good = "[{\"name\": \"a\", \"pad_prompt\": 0}, {\"name\": \"b\", \"pad_prompt\": 200},"
                       " {\"name\": \"c\", \"pad_prompt\": \"3:;\"}, {\"name\": \"d\", \"pad_prompt\": \"7\", \"layers\": [1]}]";
    sink_condition *l;
    int n;
    if (sink_condition_list_parse(&l, &n, good, strlen(good), "good.json") < 0) fail_msg("%s", ss_err());
    assert_int_equal(n, 4);
    assert_false(sink_condition_pad_active(&l[0]));
    assert_true(sink_condition_pad_active(&l[1]));
    assert_int_equal(l[1].pad.repeat, 200);
    assert_string_equal(l[1].pad.pad, ",");
    assert_string_equal(l[2].pad.pad, ";");
    assert_int_equal(l[2].pad.repeat, 3);
    assert_int_equal(l[3].pad.repeat, 7);
    assert_int_equal(l[3].n_layers, 1);
    json_t *j = sink_condition_to_json(&l[1]);
    assert_int_equal(json_integer_value(json_object_get(j, "pad_prompt")), 200);
    json_decref(j);
    j = sink_condition_to_json(&l[2]);
    assert_string_equal(json_string_value(json_object_get(j, "pad_prompt")), "3:;");
    sink_condition back;
    assert_int_equal(sink_condition_from_json(&back, j, "back"), 0);
    assert_int_equal(back.pad.repeat, 3);
    assert_string_equal(back.pad_spec, "3:;");
    json_decref(j);
    j = sink_condition_to_json(&l[3]);
    assert_string_equal(json_string_value(json_object_get(j, "pad_prompt")), "7");
    json_decref(j);
    j = sink_condition_to_json(&l[0]);
    assert_int_equal(json_integer_value(json_object_get(j, "pad_prompt")), 0);
    json_decref(j);
    /* conditions without it write no pad_prompt (older experiments compare equal) */
    sink_condition base;
    exp_baseline(&base);
    j = sink_condition_to_json(&base);
    assert_null(json_object_get(j, "pad_prompt"));
    json_decref(j);
    free(l);
    /* the baseline may not pad */
    const char *bl = "[{\"name\": \"baseline\", \"layers\": [], \"pad_prompt\": 0}]";
    assert_int_equal(sink_condition_list_parse(&l, &n, bl, strlen(bl), "bl.json"), 0);
    assert_true(exp_conditions_prepare(&l, &n, "bl.json") < 0);
    assert_non_null(strstr(ss_err(), "reserved for condition 0 with layers [] and no pe_* or pad_prompt fields"));
    free(l);
    /* the command line says it in one line naming the file */
    assert_int_equal(tc_write_text(at("badpad.json"), "[{\"name\": \"c200\", \"pad_prompt\": -5}]\n"), 0);
    char out[4096];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --conditions '%s' --limit-prompts 1 --steps 1 --quiet 2>&1", tc_bin(),
                    at("badpad"), at("badpad.json"));
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "badpad.json: condition 0: field 'pad_prompt' = -5 is outside [0, 100000]")) fail_msg("%s", out);
}

static void test_preset_format(void **st) {
    (void)st;
    /* every preset loads through the preset reader; the new ones carry their probe settings */
    static const char *const P[] = {"core", "dose_score", "value_sweep", "phases", "text_vs_image", "k_sweep", "noop",
                                    "baseline", "spiral_dynamics", "comma_padding", "pe_corner"};
    static const int COUNT[] = {9, 5, 4, 3, 3, 10, 1, 0, 0, 1, 3};
    for (size_t i = 0; i < sizeof P / sizeof P[0]; i++) {
        char path[200];
        snprintf(path, sizeof path, "configs/presets/%s.json", P[i]);
        sink_condition *l;
        int n;
        exp_probe_spec ps;
        if (exp_conditions_load(path, &l, &n, &ps) < 0) fail_msg("%s", ss_err());
        assert_int_equal(n, COUNT[i]);
        const int spiral_preset = i >= 8;
        assert_int_equal(ps.have_spiral, spiral_preset);
        assert_int_equal(ps.have_sites, spiral_preset);
        assert_int_equal(ps.all_sites, spiral_preset);
        if (i == 8) assert_int_equal(ps.spiral, SPIRAL_ALL);
        if (i > 8) assert_int_equal(ps.spiral, SPIRAL_KEYIMP | SPIRAL_BUDGET);
        if (i == 9) assert_true(sink_condition_pad_active(&l[0]) && l[0].pad.repeat == 200 && !strcmp(l[0].pad.pad, ","));
        if (i == 10)
            for (int c = 0; c < 3; c++) assert_true(l[c].have_pe_zero && l[c].n_layers == 0);
        free(l);
    }
    static const char *const BAD[][2] = {
        {"{\"conditions\": [], \"probes\": {}}", "bad.json: unknown field 'probes'"},
        {"{\"conditions\": {}}", "bad.json: field 'conditions' must be a list"},
        {"{\"conditions\": [], \"probe\": []}", "bad.json: field 'probe' must be an object"},
        {"{\"conditions\": [], \"probe\": {\"site\": \"all\"}}", "bad.json: unknown field 'probe.site'"},
        {"{\"conditions\": [], \"probe\": {\"sites\": \"every\"}}", "bad.json: field 'probe.sites' must be \"all\""},
        {"{\"conditions\": [], \"probe\": {\"sites\": [1, 1]}}", "bad.json: field 'probe.sites' lists block 1 twice"},
        {"{\"conditions\": [], \"probe\": {\"sites\": [-1]}}", "bad.json: field 'probe.sites'[0] must be a block index"},
        {"{\"conditions\": [], \"probe\": {\"spiral\": \"keyimp,fac\"}}", "bad.json: field 'probe.spiral': "},
        {"{\"conditions\": [], \"probe\": {\"spiral\": []}}", "bad.json: field 'probe.spiral' must be"},
        {"{\"conditions\": [], \"probe\": {\"spiral\": [1]}}", "bad.json: field 'probe.spiral'[0] must be a field group name"},
        {"{\"conditions\": [], \"description\": 3}", "bad.json: field 'description' must be a string"},
        {"{\"conditions\": [{\"name\": \"x\"}]}", "bad.json: condition 0: missing field 'layers'"},
        {"{\"name\": \"x\", \"probe\": {}}", "bad.json: unknown field 'probe'"}, /* one condition object, as before */
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        const char *path = at("bad.json");
        assert_int_equal(tc_write_text(path, BAD[i][0]), 0);
        sink_condition *l;
        int n;
        exp_probe_spec ps;
        assert_true(exp_conditions_load(path, &l, &n, &ps) < 0);
        if (!strstr(ss_err(), BAD[i][1])) fail_msg("%s: %s", BAD[i][0], ss_err());
        assert_null(l);
    }
    /* an object with a list of blocks and a list of field names; one condition object still loads */
    char path[1024];
    snprintf(path, sizeof path, "%s", at("ok.json"));
    assert_int_equal(tc_write_text(path, "{\"probe\": {\"sites\": [4, 1], \"spiral\": [\"norms\", \"qk\"]}, \"conditions\": "
                                         "[{\"name\": \"A\", \"layers\": [1]}]}"), 0);
    sink_condition *l;
    int n;
    exp_probe_spec ps;
    assert_int_equal(exp_conditions_load(path, &l, &n, &ps), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ps.n_sites, 2);
    assert_int_equal(ps.sites[0], 4);
    assert_false(ps.all_sites);
    assert_int_equal(ps.spiral, SPIRAL_KEYIMP | SPIRAL_NORMS | SPIRAL_QK);
    free(l);
    assert_int_equal(tc_write_text(path, "{\"name\": \"A\", \"layers\": [1]}"), 0);
    assert_int_equal(exp_conditions_load(path, &l, &n, &ps), 0);
    assert_int_equal(n, 1);
    assert_false(ps.have_sites || ps.have_spiral);
    free(l);
    /* the command line takes the file's probe settings, and overrides them */
    char out[16384];
    assert_int_equal(tc_write_text(path, "{\"probe\": {\"sites\": [4, 1], \"spiral\": \"norms\"}, \"conditions\": []}"), 0);
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --conditions '%s' --limit-prompts 1 --steps 1 --quiet 2>&1", tc_bin(),
                    at("ok1"), path);
    if (rc) fail_msg("%s", out);
    json_t *ex = load_json(at("ok1/experiment.json"));
    json_t *want = json_pack("{s:[i,i], s:s, s:i, s:s, s:[s,s]}", "blocks", 4, 1, "queries", "image", "topk", 5, "batch_element",
                             "conditional", "spiral", "keyimp", "norms");
    assert_true(json_equal(json_object_get(ex, "probe"), want));
    json_decref(want);
    json_decref(ex);
    rc = tc_run(out, sizeof out, "%s run --exp '%s' --conditions '%s' --probe 2 --spiral budget --limit-prompts 1 --steps 1 --quiet "
                "2>&1", tc_bin(), at("ok2"), path);
    if (rc) fail_msg("%s", out);
    ex = load_json(at("ok2/experiment.json"));
    want = json_pack("{s:[i], s:s, s:i, s:s, s:[s,s]}", "blocks", 2, "queries", "image", "topk", 5, "batch_element", "conditional",
                     "spiral", "keyimp", "budget");
    assert_true(json_equal(json_object_get(ex, "probe"), want));
    json_decref(want);
    json_decref(ex);
}

static void test_pe_corner(void **st) {
    (void)st;
    char out[16384];
    char E[1024];
    snprintf(E, sizeof E, "%s", at("pe"));
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --preset pe_corner --limit-prompts 1 --seeds 1 --steps 2 --quiet 2>&1",
                    tc_bin(), E);
    if (rc) fail_msg("run: %s", out);
    json_t *recs = load_records(E);
    assert_int_equal((int)json_array_size(recs), 4);
    static const char *const C[] = {"pe_zero_corner", "pe_corner_face", "pe_corner_random"};
    for (int c = 0; c < 3; c++) {
        char k[64];
        snprintf(k, sizeof k, "%s/00000/0", C[c]);
        const json_t *r = record_of(recs, k);
        assert_true(n_differ(E, C[c], 0) > 0); /* the edit acts */
        assert_int_equal((int)json_array_size(json_object_get(r, "spiral")), 6 * 2);
        assert_int_equal(n_entries_with(r, "mu"), 6);
    }
    json_decref(recs);
    rc = tc_run(out, sizeof out, "%s report '%s' --quiet 2>&1", tc_bin(), E);
    if (rc) fail_msg("report: %s", out);
}

/* metric_spiral_json on its own: the key types' runs follow the text types the probe saw, comma
 * keys included (what CLIP / T5 tokenizers give a comma-padded prompt); its errors. */
static void test_spiral_json(void **st) {
    (void)st;
    pipeline *pp;
    if (pipe_load(&pp, MODEL) < 0) fail_msg("%s", ss_err());
    ss_site sites[64];
    const int ns = model_sites(pp, sites, 64), S = pp->text_encoder->cfg.max_length;
    /* words, commas, a word, <eos>, pads: as a T5 tokenizer would type "a b c ,,, d" */
    enum { S16 = 16 };
    uint8_t types[2 * S16];
    assert_int_equal(S, S16);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < S16; i++)
            types[b * S16 + i] = i < 3 ? SS_TOK_WORD : i < 6 ? SS_TOK_COMMA : i == 6 ? SS_TOK_WORD : i == 7 ? SS_TOK_EOS : SS_TOK_PAD;
    for (int keep = 0; keep < 2; keep++) {
        sink_ctx *sk = sink_ctx_new();
        const int codes[2] = {1, 4};
        assert_int_equal(sink_ctx_set_probe(sk, codes, 2, TOK_IMAGE, 5, keep), 0);
        sink_ctx_set_spiral(sk, SPIRAL_KEYIMP | SPIRAL_BUDGET);
        assert_int_equal(sink_ctx_set_text_types(sk, types, 2, S), 0);
        pipe_params p;
        pipe_params_default(&p);
        p.prompt = "a photo of a circle";
        p.steps = 2;
        uint8_t rgb[3 * 32 * 32];
        if (pipe_generate(pp, &p, rgb, sk, NULL) < 0) fail_msg("%s", ss_err());
        json_t *a = metric_spiral_json(sk, 1, sites, ns, types + S, S);
        if (!keep) { /* the last step's mu was not kept */
            assert_null(a);
            assert_non_null(strstr(ss_err(), "spiral record of joint.1, step 1: the probe kept no Key Importance vector"));
            /* without a last step in the records nothing is needed */
            a = metric_spiral_json(sk, 5, sites, ns, types + S, S);
            assert_int_equal((int)json_array_size(a), 4);
            json_decref(a);
            sink_ctx_free(sk);
            continue;
        }
        assert_int_equal((int)json_array_size(a), 4);
        json_t *want = json_pack("[[s,i],[s,i],[s,i],[s,i],[s,i],[s,i]]", "image", 64, "word", 3, "comma", 3, "word", 1, "eos", 1,
                                 "pad", 8);
        size_t i;
        json_t *e;
        json_array_foreach(a, i, e) {
            const json_t *bk = json_object_get(e, "budget_keys");
            assert_int_equal(json_integer_value(json_object_get(bk, "comma")), 3);
            assert_int_equal(json_integer_value(json_object_get(bk, "word")), 4);
            if (json_integer_value(json_object_get(e, "step")) == 1) assert_true(json_equal(json_object_get(e, "key_types"), want));
            else assert_null(json_object_get(e, "key_types"));
        }
        json_decref(want);
        json_decref(a);
        /* without text types: the spans' own types (the probe's were finer: only the runs change) */
        a = metric_spiral_json(sk, 1, sites, ns, NULL, S);
        want = json_pack("[[s,i],[s,i]]", "image", 64, "text", 16);
        assert_true(json_equal(json_object_get(json_array_get(a, 3), "key_types"), want));
        json_decref(want);
        json_decref(a);
        /* a record whose site the list lacks */
        assert_null(metric_spiral_json(sk, 1, sites, 1, types + S, S));
        assert_non_null(strstr(ss_err(), "spiral record of joint.1, step 1: the site does not match the model's sites"));
        sink_ctx_free(sk);
    }
    pipe_free(pp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spiral_dynamics), cmocka_unit_test(test_options),    cmocka_unit_test(test_comma_padding),
        cmocka_unit_test(test_pad_values),      cmocka_unit_test(test_preset_format), cmocka_unit_test(test_pe_corner),
        cmocka_unit_test(test_spiral_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
