/* Reliability of the experiment runner and its inputs (sinkscope run, conditions, prompt files):
 * size and seed overflow, uint64 seeds end to end, verification of finished records' images on
 * resume, the model digest over nested/sharded weights, conditions that leave attention rows no
 * mass, non-regular records.jsonl, byte-order marks and invalid UTF-8 in text inputs, and the
 * main job keeping EXP/.lock through its report. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
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
#include "eval/geneval.h"
#include "eval/shapeworld.h"
#include "exp/digest.h"
#include "exp/records.h"
#include "exp/runner.h"
#include "io/safetensors.h"
#include "models/sd3.h"
#include "sample/pipeline.h"
#include "sink/condition.h"
#include "sink/sink.h"

static char *g_root;
static char g_model[512], g_jsonl[512], g_text[512], g_conds[512];

static const char *at(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(g_root, fmt, ap);
    va_end(ap);
    return b;
}

static void write_text(const char *path, const char *text) { assert_int_equal(tc_write_text(path, text), 0); }

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int count_lines(const char *path) {
    char *b = tc_read_all(path, NULL);
    if (!b) return -1;
    int n = 0;
    for (char *p = b; *p; p++) n += *p == '\n';
    free(b);
    return n;
}

/* The records of a file, the last one of each key winning (the superseding rule). */
static json_t *records_by_key(const char *path, int *n_lines) {
    char *b = tc_read_all(path, NULL);
    assert_non_null(b);
    json_t *o = json_object();
    *n_lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *r = json_loads(line, 0, &je);
        if (!r) fail_msg("%s: bad line: %s", path, je.text);
        const char *key = json_string_value(json_object_get(r, "key"));
        assert_non_null(key);
        json_object_set_new(o, key, r);
        (*n_lines)++;
    }
    free(b);
    return o;
}

static void make_model(const char *dir, int size, int layers, uint64_t seed) {
    sd3_config tc = {.sample_size = size, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = layers,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = size / 2, .qk_norm = 1};
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(dir, &tc, &ec, sw_vocabulary(), seed) < 0) fail_msg("pipe_init_random: %s", ss_err());
}

/* baseline (prepended) + A1 + noop: 3 conditions */
static const char CONDS[] = "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1}, {\"name\": \"noop\", \"layers\": []}]\n";

static int setup(void **st) {
    (void)st;
    if (!(g_root = tc_tmpdir())) return -1;
    snprintf(g_model, sizeof g_model, "%s/model", g_root);
    snprintf(g_jsonl, sizeof g_jsonl, "%s/prompts.jsonl", g_root);
    snprintf(g_text, sizeof g_text, "%s/prompts.txt", g_root);
    snprintf(g_conds, sizeof g_conds, "%s/conds.json", g_root);
    sd3_config tc = {.sample_size = 8, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = 4, .qk_norm = 1};
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(g_model, &tc, &ec, sw_vocabulary(), 3) < 0) return -1;
    gv_meta *set = malloc(sizeof *set * SW_EVAL_N);
    if (!set || sw_eval_set(set, SW_EVAL_N) != SW_EVAL_N) return -1;
    FILE *f = fopen(g_jsonl, "w");
    for (int i = 0; i < 2; i++) {
        char line[2048];
        if (gv_meta_to_json(&set[i * SW_EVAL_PER_TAG], line, sizeof line) < 0) return -1;
        fprintf(f, "%s\n", line);
    }
    fclose(f);
    free(set);
    if (tc_write_text(g_text, "a photo of a red circle\na photo of two squares\n") ||
        tc_write_text(g_conds, CONDS))
        return -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tc_rmtree(g_root);
    free(g_root);
    return 0;
}

typedef struct {
    const char *model, *prompts, *conds;
    int seeds, steps;
    uint64_t base;
} run_opts;

static int run_lib(const char *exp, const run_opts *o, run_result *res) {
    sink_condition *l = NULL;
    int n = 0;
    if (sink_condition_list_load(&l, &n, o->conds ? o->conds : g_conds) < 0) return -1;
    run_config c;
    run_config_default(&c);
    c.exp_dir = at("%s", exp);
    c.model_dir = o->model ? o->model : g_model;
    c.prompts_path = o->prompts ? o->prompts : g_text;
    c.conds = l;
    c.n_conds = n;
    c.conditions_source = "test";
    c.seeds_per_prompt = o->seeds ? o->seeds : 1;
    c.base_seed = o->base;
    c.steps = o->steps ? o->steps : 2;
    c.cfg = 1.0;
    c.quiet = 1;
    run_result r;
    int rc = run_experiment(&c, res ? res : &r);
    free(l);
    return rc;
}

static int run_simple(const char *exp) {
    run_opts o = {0};
    run_result res;
    int rc = run_lib(exp, &o, &res);
    return rc < 0 ? rc : (int)res.made;
}

/* ---- item 3: prompts x seeds, seed arithmetic ---- */

static void test_prompts_times_seeds_overflow(void **st) {
    (void)st;
    /* 4096 prompts x 1048577 seeds = 2^32 + 4096 (prompt, seed) pairs: in int that wrapped to
     * 4096, a silently different (and wrong) experiment */
    FILE *f = fopen(at("many.txt"), "w");
    for (int i = 0; i < 4096; i++) fputs("a photo of a red circle\n", f);
    fclose(f);
    run_opts o = {.prompts = at("many.txt"), .seeds = 1048577, .steps = 1};
    assert_true(run_lib("ovf", &o, NULL) < 0);
    if (!strstr(ss_err(), "--seeds 1048577 with 4096 prompts makes 4294971392 (prompt, seed) pairs")) fail_msg("%s", ss_err());
    assert_false(exists(at("ovf/experiment.json")));
    assert_false(exists(at("ovf/records.jsonl")));
    /* through the command line (--seeds is at most 10^6 there): 2200 x 10^6 > 2^31 */
    f = fopen(at("many2.txt"), "w");
    for (int i = 0; i < 2200; i++) fputs("a photo of a red circle\n", f);
    fclose(f);
    char out[4096];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --seeds 1000000 --steps 1",
                    tc_bin(), at("ovf2"), g_model, at("many2.txt"), g_conds);
    assert_int_equal(rc, 1);
    if (!strstr(out, "--seeds 1000000 with 2200 prompts makes 2200000000 (prompt, seed) pairs")) fail_msg("%s", out);
    assert_false(exists(at("ovf2/experiment.json")));
}

/* ---- item 12: seeds are uint64 end to end ---- */

static void test_seeds_uint64(void **st) {
    (void)st;
    write_text(at("one.txt"), "a photo of a red circle\n");
    write_text(at("noop.json"), "[{\"name\": \"noop\", \"layers\": []}]");
    /* the two largest seeds: 2^64 - 2 and 2^64 - 1 */
    run_opts o = {.prompts = at("one.txt"), .conds = at("noop.json"), .seeds = 2, .base = UINT64_MAX - 1};
    run_result res;
    if (run_lib("u64", &o, &res) < 0) fail_msg("%s", ss_err());
    assert_int_equal(res.made, 4);
    int n;
    json_t *recs = records_by_key(at("u64/records.jsonl"), &n);
    assert_int_equal(n, 4);
    static const char *const SEEDS[2] = {"18446744073709551614", "18446744073709551615"};
    for (int r = 0; r < 2; r++) {
        char key[100], img[200];
        snprintf(key, sizeof key, "noop/00000/%s", SEEDS[r]);
        snprintf(img, sizeof img, "images/noop/00000_%s.png", SEEDS[r]);
        json_t *rec = json_object_get(recs, key);
        if (!rec) fail_msg("no record %s", key);
        uint64_t seed = 0;
        assert_int_equal(exp_json_get_u64(json_object_get(rec, "seed"), &seed), 0);
        assert_true(seed == UINT64_MAX - 1 + (uint64_t)r);
        assert_string_equal(json_string_value(json_object_get(rec, "seed")), SEEDS[r]); /* past 2^63: a string */
        assert_string_equal(json_string_value(json_object_get(rec, "image")), img);
        assert_true(exists(at("u64/%s", img)));
    }
    json_decref(recs);
    json_t *cfg = json_load_file(at("u64/experiment.json"), 0, NULL);
    uint64_t base = 0;
    assert_int_equal(exp_json_get_u64(json_object_get(cfg, "base_seed"), &base), 0);
    assert_true(base == UINT64_MAX - 1);
    json_decref(cfg);
    /* resumes as the same configuration; small seeds stay JSON integers */
    assert_int_equal(run_lib("u64", &o, &res), 0);
    assert_int_equal(res.made, 0);
    assert_int_equal(res.before, 4);
    /* one seed too many: refused before anything is written, naming the option */
    run_opts o2 = {.prompts = at("one.txt"), .conds = at("noop.json"), .seeds = 2, .base = UINT64_MAX};
    assert_true(run_lib("u64b", &o2, NULL) < 0);
    if (!strstr(ss_err(), "--base-seed 18446744073709551615: the largest seed") ||
        !strstr(ss_err(), "use a base seed of at most 18446744073709551614"))
        fail_msg("%s", ss_err());
    assert_false(exists(at("u64b/experiment.json")));
    /* prompt index x seeds counts too: prompts 0 and 1, 2 seeds: base + 3 is the largest */
    run_opts o3 = {.conds = at("noop.json"), .seeds = 2, .base = UINT64_MAX - 2};
    assert_true(run_lib("u64c", &o3, NULL) < 0);
    assert_non_null(strstr(ss_err(), "base + prompt index 1 * 2 seeds + 1, is past 2^64 - 1"));
    /* the JSON helpers: integers below 2^63, strings above; nothing else reads back */
    json_t *v = exp_json_u64((uint64_t)INT64_MAX);
    assert_true(json_is_integer(v));
    json_decref(v);
    v = exp_json_u64((uint64_t)INT64_MAX + 1);
    assert_string_equal(json_string_value(v), "9223372036854775808");
    json_decref(v);
    const char *bad[] = {"\"-1\"", "\"18446744073709551616\"", "\"\"", "\"12a\"", "-3", "1.5", "\" 1\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        uint64_t x;
        if (exp_json_get_u64(j, &x) == 0) fail_msg("%s read as a seed", bad[i]);
        json_decref(j);
    }
    /* --base-seed on the command line: the whole uint64 range, nothing past it, no sign */
    char out[4096];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 1 --base-seed 18446744073709551615",
                    tc_bin(), at("u64cli"), g_model, at("one.txt"), at("noop.json"));
    if (rc != 0) fail_msg("%s", out);
    assert_true(exists(at("u64cli/images/noop/00000_18446744073709551615.png")));
    static const char *const BAD_CLI[] = {"18446744073709551616", "-1", "+1", "0x10", " 1", ""};
    for (size_t i = 0; i < sizeof BAD_CLI / sizeof *BAD_CLI; i++) {
        rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --base-seed '%s'", tc_bin(), at("u64bad"),
                    g_model, at("one.txt"), BAD_CLI[i]);
        assert_int_equal(rc, 2);
        if (!strstr(out, "--base-seed must be an integer in [0, 18446744073709551615]")) fail_msg("'%s': %s", BAD_CLI[i], out);
    }
    assert_false(exists(at("u64bad")));
}

/* ---- item 6: finished records' images are verified on resume ---- */

static char *g_saved[16];
static size_t g_saved_n[16];

static void test_resume_verifies_images(void **st) {
    (void)st;
    assert_int_equal(run_simple("ver"), 6);
    static const char *const IMG[6] = {"baseline/00000_0", "A1/00000_0", "noop/00000_0",
                                       "baseline/00001_1", "A1/00001_1", "noop/00001_1"};
    int n;
    json_t *recs = records_by_key(at("ver/records.jsonl"), &n);
    assert_int_equal(n, 6);
    const char *key;
    json_t *rec;
    json_object_foreach(recs, key, rec) { /* the record states the file's size and SHA-256 */
        const char *rel = json_string_value(json_object_get(rec, "image"));
        struct stat sb;
        char hex[DIGEST_HEX];
        assert_int_equal(stat(at("ver/%s", rel), &sb), 0);
        assert_int_equal(json_integer_value(json_object_get(rec, "image_bytes")), sb.st_size);
        assert_int_equal(digest_file(at("ver/%s", rel), hex), 0);
        assert_string_equal(json_string_value(json_object_get(rec, "image_sha256")), hex);
    }
    json_decref(recs);
    for (int i = 0; i < 6; i++) assert_non_null(g_saved[i] = tc_read_all(at("ver/images/%s.png", IMG[i]), &g_saved_n[i]));
    /* deleted; one byte changed (same size); cut short */
    assert_int_equal(unlink(at("ver/images/%s.png", IMG[0])), 0);
    char *b = malloc(g_saved_n[1]);
    memcpy(b, g_saved[1], g_saved_n[1]);
    b[g_saved_n[1] / 2] ^= 0x40;
    write_bytes(at("ver/images/%s.png", IMG[1]), b, g_saved_n[1]);
    free(b);
    assert_int_equal(truncate(at("ver/images/%s.png", IMG[5]), (off_t)g_saved_n[5] - 10), 0);
    run_opts o = {0};
    run_result res;
    if (run_lib("ver", &o, &res) < 0) fail_msg("%s", ss_err());
    assert_int_equal(res.made, 3);
    assert_int_equal(res.redone, 3);
    assert_int_equal(res.before, 3);
    assert_int_equal(res.redo[RUN_REDO_MISSING], 1);
    assert_int_equal(res.redo[RUN_REDO_DIGEST], 1);
    assert_int_equal(res.redo[RUN_REDO_SIZE], 1);
    /* the same images again (generation is deterministic); the newer records supersede */
    for (int i = 0; i < 6; i++) {
        size_t m;
        char *now = tc_read_all(at("ver/images/%s.png", IMG[i]), &m);
        if (!now || m != g_saved_n[i] || memcmp(now, g_saved[i], m)) fail_msg("%s differs after the redo", IMG[i]);
        free(now);
    }
    assert_int_equal(count_lines(at("ver/records.jsonl")), 9);
    recs = records_by_key(at("ver/records.jsonl"), &n);
    assert_int_equal((int)json_object_size(recs), 6);
    json_decref(recs);
    assert_int_equal(run_simple("ver"), 0); /* whole again */
    /* a folder where an image should be: refused, naming it, nothing written */
    assert_int_equal(unlink(at("ver/images/%s.png", IMG[4])), 0);
    assert_int_equal(mkdir(at("ver/images/%s.png", IMG[4]), 0755), 0);
    size_t n0, n1;
    char *r0 = tc_read_all(at("ver/records.jsonl"), &n0);
    assert_true(run_simple("ver") < 0);
    if (!strstr(ss_err(), "ver/images/A1/00001_1.png: the image of a finished record is not a regular file"))
        fail_msg("%s", ss_err());
    char *r1 = tc_read_all(at("ver/records.jsonl"), &n1);
    assert_true(n0 == n1 && !memcmp(r0, r1, n0));
    free(r0);
    free(r1);
    assert_int_equal(rmdir(at("ver/images/%s.png", IMG[4])), 0);
    /* through the command line: a warning naming the first image per reason, and the summary */
    char out[4096];
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --steps 2 --cfg 1",
                    tc_bin(), at("ver"), g_model, g_text, g_conds);
    assert_int_equal(rc, 0);
    if (!strstr(out, "1 finished image no longer matches its record and will be made again: 1 missing (first: "
                     "images/A1/00001_1.png)") ||
        !strstr(out, "6/6 images (1 new, 5 already done, 1 redone (image failed verification))"))
        fail_msg("%s", out);
    for (int i = 0; i < 6; i++) free(g_saved[i]);
}

/* Records written before image_bytes / image_sha256: the image must exist and be a PNG of the
 * run's size. */
static void test_resume_checks_old_records(void **st) {
    (void)st;
    assert_int_equal(run_simple("old"), 6);
    int n;
    json_t *recs = records_by_key(at("old/records.jsonl"), &n);
    FILE *f = fopen(at("old/records.jsonl"), "w");
    const char *key;
    json_t *rec;
    json_object_foreach(recs, key, rec) {
        json_object_del(rec, "image_bytes");
        json_object_del(rec, "image_sha256");
        char *s = json_dumps(rec, RECORDS_JSON_FLAGS);
        fprintf(f, "%s\n", s);
        free(s);
    }
    fclose(f);
    json_decref(recs);
    assert_int_equal(run_simple("old"), 0); /* intact old records are accepted as they are */
    size_t sz;
    char *orig = tc_read_all(at("old/images/noop/00001_1.png"), &sz);
    assert_int_equal(truncate(at("old/images/noop/00001_1.png"), (off_t)sz / 2), 0);
    run_opts o = {0};
    run_result res;
    if (run_lib("old", &o, &res) < 0) fail_msg("%s", ss_err());
    assert_int_equal(res.made, 1);
    assert_int_equal(res.redo[RUN_REDO_PNG], 1);
    size_t sz2;
    char *again = tc_read_all(at("old/images/noop/00001_1.png"), &sz2);
    assert_true(again && sz == sz2 && !memcmp(orig, again, sz));
    free(orig);
    free(again);
    recs = records_by_key(at("old/records.jsonl"), &n);
    assert_int_equal(n, 7);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(recs, "noop/00001/1"), "image_bytes")), sz);
    json_decref(recs);
}

/* ---- item 7: the model digest covers nested folders and shards ---- */

/* The digest as sinkscope computed it for the classic layout: the four component folders'
 * files, "<sub>/<name>\n<size>\n" and the bytes. Existing experiments must keep resuming. */
static void classic_digest(const char *dir, char hex[DIGEST_HEX]) {
    static const char *const SUBS[] = {"scheduler", "text_encoder", "tokenizer", "transformer"};
    sha256_ctx c;
    sha256_init(&c);
    for (int s = 0; s < 4; s++) {
        char cmd[1200], name[512];
        snprintf(cmd, sizeof cmd, "cd '%s/%s' && LC_ALL=C ls -1", dir, SUBS[s]);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(name, sizeof name, p)) {
            name[strcspn(name, "\n")] = 0;
            size_t len;
            char *b = tc_read_all(tc_join(dir, "%s/%s", SUBS[s], name), &len);
            assert_non_null(b);
            char head[1024];
            int hl = snprintf(head, sizeof head, "%s/%s\n%zu\n", SUBS[s], name, len);
            sha256_update(&c, head, (size_t)hl);
            sha256_update(&c, b, len);
            free(b);
        }
        pclose(p);
    }
    sha256_final_hex(&c, hex);
}

/* Splits dir/transformer's weights into two shards at shard1 / shard2 (relative to
 * transformer/) with an index, removing the single file. */
static void shard_transformer(const char *dir, const char *shard1, const char *shard2) {
    const char *tdir = tc_join(dir, "transformer");
    char single[1024];
    snprintf(single, sizeof single, "%s/diffusion_pytorch_model.safetensors", tdir);
    st_set *s;
    if (st_set_open(&s, single) < 0) fail_msg("%s", ss_err());
    st_writer *w[2] = {st_writer_new(), st_writer_new()};
    json_t *wm = json_object();
    const int n = st_set_count(s);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_set_get(s, i);
        const int half = i >= n / 2;
        assert_int_equal(st_writer_add(w[half], t->name, t->dtype, t->ndim, t->shape, t->data), 0);
        json_object_set_new(wm, t->name, json_string(half ? shard2 : shard1));
    }
    const char *names[2] = {shard1, shard2};
    for (int h = 0; h < 2; h++) {
        char path[1200], cmd[1400];
        snprintf(path, sizeof path, "%s/%s", tdir, names[h]);
        snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s')\"", path);
        assert_int_equal(system(cmd), 0);
        if (st_writer_save(w[h], path) < 0) fail_msg("%s", ss_err());
        st_writer_free(w[h]);
    }
    st_set_close(s);
    json_t *idx = json_pack("{s:{}, s:o}", "metadata", "weight_map", wm);
    char ip[1200];
    snprintf(ip, sizeof ip, "%s/diffusion_pytorch_model.safetensors.index.json", tdir);
    assert_int_equal(json_dump_file(idx, ip, JSON_INDENT(1)), 0);
    json_decref(idx);
    assert_int_equal(unlink(single), 0);
}

/* Changes one byte of a safetensors file's data (not its header). */
static void poke_weights(const char *path) {
    size_t len;
    unsigned char *b = (unsigned char *)tc_read_all(path, &len);
    assert_non_null(b);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    assert_true(8 + hl + 4 < len);
    b[8 + hl + 1] ^= 0x01;
    write_bytes(path, b, len);
    free(b);
}

static void test_digest_nested_shards(void **st) {
    (void)st;
    char d0[DIGEST_HEX], d1[DIGEST_HEX], d2[DIGEST_HEX];
    /* the classic layout keeps its digest */
    classic_digest(g_model, d0);
    assert_int_equal(digest_pipeline(g_model, d1), 0);
    assert_string_equal(d0, d1);
    /* sharded weights two folders down */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", g_model, at("smodel"));
    assert_int_equal(system(cmd), 0);
    shard_transformer(at("smodel"), "shards/a/part-1.safetensors", "shards/a/part-2.safetensors");
    pipeline *pp;
    if (pipe_load(&pp, at("smodel")) < 0) fail_msg("%s", ss_err());
    pipe_free(pp);
    assert_int_equal(digest_pipeline(at("smodel"), d1), 0);
    /* leftovers and hidden files are not part of the model */
    write_text(at("smodel/transformer/shards/a/part-2.safetensors.tmp"), "partial");
    write_text(at("smodel/transformer/shards/.cache"), "x");
    assert_int_equal(digest_pipeline(at("smodel"), d2), 0);
    assert_string_equal(d1, d2);
    run_opts o = {.model = at("smodel")};
    assert_int_equal(run_lib("shard", &o, NULL), 0);
    /* another shard content: another digest, and the resume is refused */
    poke_weights(at("smodel/transformer/shards/a/part-2.safetensors"));
    assert_int_equal(digest_pipeline(at("smodel"), d2), 0);
    assert_string_not_equal(d1, d2);
    assert_true(run_lib("shard", &o, NULL) < 0);
    if (!strstr(ss_err(), "field 'model_digest' differs")) fail_msg("%s", ss_err());
    /* a file in a nested folder of another component, and a new component folder */
    assert_int_equal(digest_pipeline(at("smodel"), d1), 0);
    assert_int_equal(ss_mkdir_p(at("smodel/text_encoder/extra/deep")), 0);
    write_text(at("smodel/text_encoder/extra/deep/x.json"), "{}");
    assert_int_equal(digest_pipeline(at("smodel"), d2), 0);
    assert_string_not_equal(d1, d2);
    /* a shard the index names outside the pipeline folder is refused by the loader (so the
     * digest, which covers what the loader may read, need not follow it) */
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", g_model, at("omodel"));
    assert_int_equal(system(cmd), 0);
    shard_transformer(at("omodel"), "part-1.safetensors", "../../outside/part-2.safetensors");
    assert_true(pipe_load(&pp, at("omodel")) < 0);
    if (!strstr(ss_err(), "has a '..' component")) fail_msg("%s", ss_err());
    /* a folder link loop is an error, not a hang */
    snprintf(cmd, sizeof cmd, "ln -s .. '%s'", at("omodel/tokenizer/loop"));
    assert_int_equal(system(cmd), 0);
    assert_true(digest_pipeline(at("omodel"), d2) < 0);
    assert_non_null(strstr(ss_err(), "symbolic link loop"));
}

/* ---- item 8b: conditions that leave a query row no attention mass ---- */

static void test_no_mass_conditions(void **st) {
    (void)st;
    /* the test model: 8x8 pixels, patch 2: 16 image tokens; 16 text tokens; 32 keys in all */
    static const struct {
        const char *json, *msg;
    } BAD[] = {
        {"[{\"name\": \"all\", \"layers\": [0], \"k\": 32}]",
         "condition 'all': field 'k' removes every one of the model's 32 keys (16 image + 16 text) with eta 0"},
        {"[{\"name\": \"fx\", \"layers\": [1], \"select\": \"fixed\", \"indices\": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,"
         "17,18,19,20,21,22,23,24,25,26,27,28,29,30,31]}]",
         "condition 'fx': field 'indices' removes every one of the model's 32 keys"},
        {"[{\"name\": \"rnd\", \"layers\": [0], \"select\": \"random\", \"k\": 32, \"rank_by\": \"union\", \"eta\": 0}]",
         "condition 'rnd': field 'k' removes every one"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        write_text(at("nomass.json"), BAD[i].json);
        run_opts o = {.conds = at("nomass.json")};
        assert_true(run_lib("nomass", &o, NULL) < 0);
        if (!strstr(ss_err(), BAD[i].msg)) fail_msg("%s", ss_err());
        assert_false(exists(at("nomass/experiment.json")));
    }
    /* what keeps some mass is allowed: eta > 0, only the text or image keys, the value path */
    write_text(at("mass.json"), "[{\"name\": \"e\", \"layers\": [0], \"k\": 32, \"eta\": 0.5},"
                                " {\"name\": \"t\", \"layers\": [0], \"k\": 16, \"keys\": \"text\"},"
                                " {\"name\": \"i\", \"layers\": [1], \"k\": 16, \"keys\": \"image\"},"
                                " {\"name\": \"v\", \"layers\": [0], \"k\": 32, \"path\": \"value\", \"value\": \"zero\"}]");
    run_opts o = {.conds = at("mass.json")};
    run_result res;
    if (run_lib("mass", &o, &res) < 0) fail_msg("%s", ss_err());
    assert_int_equal(res.made, 10);
    int n;
    json_t *recs = records_by_key(at("mass/records.jsonl"), &n);
    const char *key;
    json_t *rec;
    json_object_foreach(recs, key, rec) {
        json_t *m = json_object_get(rec, "metrics");
        assert_true(json_is_number(json_object_get(m, "mse")) && isfinite(json_number_value(json_object_get(m, "mse"))));
    }
    json_decref(recs);
    /* the check itself, for forward and generate */
    sink_condition c;
    json_t *j = json_loads("{\"name\": \"x\", \"layers\": [2], \"k\": 4}", 0, NULL);
    assert_int_equal(sink_condition_from_json(&c, j, "x.json"), 0);
    json_decref(j);
    assert_true(sink_condition_check_model(&c, 2, 2, 2, "x.json") < 0);
    assert_non_null(strstr(ss_err(), "x.json: condition 'x': field 'layers' names block 2, but the model has 2 blocks"));
    assert_true(sink_condition_check_model(&c, 3, 2, 2, "x.json") < 0);
    assert_non_null(strstr(ss_err(), "field 'k' removes every one of the model's 4 keys"));
    assert_int_equal(sink_condition_check_model(&c, 3, 4, 1, "x.json"), 0);
    c.eta = 0.25f;
    assert_int_equal(sink_condition_check_model(&c, 3, 2, 2, "x.json"), 0);
    /* sinkscope generate refuses it before making an image */
    write_text(at("all1.json"), "{\"name\": \"all\", \"layers\": [0], \"k\": 32}");
    char out[4096];
    int rc = tc_run(out, sizeof out, "%s generate --model '%s' --prompt 'a photo of a red circle' --steps 2 --condition '%s' --out '%s'",
                    tc_bin(), g_model, at("all1.json"), at("all1.png"));
    assert_int_equal(rc, 1);
    if (!strstr(out, "all1.json: condition 'all': field 'k' removes every one")) fail_msg("%s", out);
    assert_false(exists(at("all1.png")));
    /* and the intervention itself refuses to produce NaN when called without the check */
    pipeline *pp;
    assert_int_equal(pipe_load(&pp, g_model), 0);
    sink_condition all;
    j = json_loads("{\"name\": \"all\", \"layers\": [0], \"k\": 32}", 0, NULL);
    assert_int_equal(sink_condition_from_json(&all, j, "all"), 0);
    json_decref(j);
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_condition(sk, &all);
    pipe_params pr;
    pipe_params_default(&pr);
    pr.prompt = "a photo of a red circle";
    pr.steps = 2;
    uint8_t rgb[8 * 8 * 3];
    assert_true(pipe_generate(pp, &pr, rgb, sk, NULL) < 0);
    assert_non_null(strstr(ss_err(), "leaves the attention rows no mass at all"));
    sink_ctx_free(sk);
    pipe_free(pp);
}

/* ---- item 19: records.jsonl must be a regular file ---- */

static void test_records_not_regular(void **st) {
    (void)st;
    assert_int_equal(ss_mkdir_p(at("rdir/records.jsonl")), 0);
    assert_true(run_simple("rdir") < 0);
    if (!strstr(ss_err(), "rdir/records.jsonl: is a folder, not a regular file")) fail_msg("%s", ss_err());
    /* a link to /dev/null would swallow every record: each resume would start over */
    assert_int_equal(ss_mkdir_p(at("rnull")), 0);
    assert_int_equal(symlink("/dev/null", at("rnull/records.jsonl")), 0);
    assert_true(run_simple("rnull") < 0);
    if (!strstr(ss_err(), "rnull/records.jsonl: is a character device, not a regular file")) fail_msg("%s", ss_err());
    assert_false(exists(at("rnull/images/A1/00000_0.png")));
    assert_int_equal(ss_mkdir_p(at("rfifo")), 0);
    assert_int_equal(mkfifo(at("rfifo/records.jsonl"), 0644), 0);
    assert_true(run_simple("rfifo") < 0);
    if (!strstr(ss_err(), "rfifo/records.jsonl: is a FIFO, not a regular file")) fail_msg("%s", ss_err());
    /* experiment.json likewise */
    assert_int_equal(ss_mkdir_p(at("xdir/experiment.json")), 0);
    assert_true(run_simple("xdir") < 0);
    if (!strstr(ss_err(), "xdir/experiment.json: not a regular file")) fail_msg("%s", ss_err());
    /* and nothing written before is lost: a finished experiment whose records.jsonl is replaced */
    assert_int_equal(run_simple("rlate"), 6);
    assert_int_equal(rename(at("rlate/records.jsonl"), at("rlate/records.saved")), 0);
    assert_int_equal(mkfifo(at("rlate/records.jsonl"), 0644), 0);
    size_t n0, n1;
    char *x0 = tc_read_all(at("rlate/experiment.json"), &n0);
    assert_true(run_simple("rlate") < 0);
    char *x1 = tc_read_all(at("rlate/experiment.json"), &n1);
    assert_true(n0 == n1 && !memcmp(x0, x1, n0));
    free(x0);
    free(x1);
}

/* ---- item 20: byte-order marks and invalid UTF-8 in text inputs ---- */

#define BOM "\xef\xbb\xbf"

static void test_prompt_files_bom_utf8(void **st) {
    (void)st;
    char *jl = tc_read_all(g_jsonl, NULL);
    char *buf = malloc(strlen(jl) + 64);
    /* JSONL with a BOM is still JSONL (GenEval metadata kept) */
    snprintf(buf, strlen(jl) + 64, BOM "%s", jl);
    write_text(at("bom.jsonl"), buf);
    gv_meta *m;
    int n, meta;
    if (gv_load_prompts(at("bom.jsonl"), GV_FORMAT_AUTO, &m, &n, &meta) < 0) fail_msg("%s", ss_err());
    assert_int_equal(meta, 1);
    assert_int_equal(n, 2);
    assert_true(m[0].tag[0] && m[0].n_include > 0);
    free(m);
    assert_int_equal(gv_load_jsonl(at("bom.jsonl"), &m, &n), 0); /* sinkscope score's reader */
    free(m);
    /* BOM, blank lines and CR LF before the first record */
    snprintf(buf, strlen(jl) + 64, BOM "\r\n  \n%s", jl);
    write_text(at("bom2.jsonl"), buf);
    assert_int_equal(gv_load_prompts(at("bom2.jsonl"), GV_FORMAT_AUTO, &m, &n, &meta), 0);
    assert_int_equal(meta, 1);
    free(m);
    /* a run on it: tags and GenEval scores, as without the BOM */
    run_opts o = {.prompts = at("bom.jsonl")};
    if (run_lib("bomrun", &o, NULL) < 0) fail_msg("%s", ss_err());
    int nl;
    json_t *recs = records_by_key(at("bomrun/records.jsonl"), &nl);
    json_t *r0 = json_object_get(recs, "A1/00000/0");
    assert_non_null(json_string_value(json_object_get(r0, "tag")));
    assert_non_null(json_object_get(json_object_get(r0, "metrics"), "geneval"));
    json_decref(recs);
    free(buf);
    free(jl);
    /* plain text with a BOM and CR LF: the BOM is not part of the first prompt */
    write_text(at("bom.txt"), BOM "a photo of a red circle\r\na photo of two squares\r\n");
    assert_int_equal(gv_load_prompts(at("bom.txt"), GV_FORMAT_AUTO, &m, &n, &meta), 0);
    assert_int_equal(meta, 0);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].prompt, "a photo of a red circle");
    assert_string_equal(m[1].prompt, "a photo of two squares");
    free(m);
    run_opts ot = {.prompts = at("bom.txt")};
    if (run_lib("bomtxt", &ot, NULL) < 0) fail_msg("%s", ss_err());
    /* errors name the file, the line and the column */
    static const struct {
        const char *text, *msg;
    } BAD[] = {
        {"a photo of a red circle\n" BOM "a photo of two squares\n", "bad.txt:2: a byte-order mark (U+FEFF) at column 1"},
        {"{\"tag\": \"x\", \"prompt\": \"a\"}\n" BOM "{\"tag\": \"x\", \"prompt\": \"b\"}\n", "bad.txt:2: a byte-order mark"},
        {BOM BOM "a photo\n", "bad.txt:1: a byte-order mark (U+FEFF) at column 1"},
        {"a photo " BOM "of a circle\n", "bad.txt:1: a byte-order mark (U+FEFF) at column 9"},
        {"a\nb\na photo \xff\n", "bad.txt:3: invalid UTF-8 (byte 0xff at column 9)"},
        {"a \xc0\xaf\n", "bad.txt:1: invalid UTF-8 (byte 0xc0 at column 3)"},         /* overlong */
        {"a \xed\xa0\x80\n", "bad.txt:1: invalid UTF-8 (byte 0xed at column 3)"},     /* surrogate */
        {"a \xf4\x90\x80\x80\n", "bad.txt:1: invalid UTF-8 (byte 0xf4 at column 3)"}, /* past U+10FFFF */
        {"a \xe2\x82\n", "bad.txt:1: invalid UTF-8 (byte 0xe2 at column 3)"},         /* cut short */
        {"{\"tag\": \"x\", \"prompt\": \"caf\xe9\"}\n", "bad.txt:1: invalid UTF-8 (byte 0xe9 at column 28)"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        write_text(at("bad.txt"), BAD[i].text);
        assert_true(gv_load_prompts(at("bad.txt"), GV_FORMAT_AUTO, &m, &n, &meta) < 0);
        if (!strstr(ss_err(), BAD[i].msg)) fail_msg("case %zu: %s", i, ss_err());
    }
    /* NUL bytes, from memory; well-formed multi-byte text is fine */
    assert_true(gv_parse_prompts("a\0b\n", 4, "mem.txt", GV_FORMAT_AUTO, &m, &n, &meta) < 0);
    assert_non_null(strstr(ss_err(), "mem.txt:1: NUL byte at column 2"));
    const char ok[] = BOM "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n";
    assert_int_equal(gv_parse_prompts(ok, sizeof ok - 1, "mem.txt", GV_FORMAT_AUTO, &m, &n, &meta), 0);
    assert_string_equal(m[0].prompt, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    free(m);
    /* a BOM alone is an empty file */
    assert_true(gv_parse_prompts(BOM, 3, "mem.txt", GV_FORMAT_AUTO, &m, &n, &meta) < 0);
    assert_non_null(strstr(ss_err(), "mem.txt: no prompts"));
    /* a prompts path that is a folder */
    assert_true(gv_load_prompts(g_root, GV_FORMAT_AUTO, &m, &n, &meta) < 0);
    assert_non_null(strstr(ss_err(), "not a regular file"));
}

static void test_condition_files_bom_utf8(void **st) {
    (void)st;
    write_text(at("bomc.json"), BOM "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1}]\n");
    sink_condition *l;
    int n;
    if (sink_condition_list_load(&l, &n, at("bomc.json")) < 0) fail_msg("%s", ss_err());
    assert_int_equal(n, 1);
    assert_string_equal(l[0].name, "A1");
    free(l);
    write_text(at("bomone.json"), BOM "{\"name\": \"A1\", \"layers\": [1]}");
    sink_condition c;
    if (sink_condition_load(&c, at("bomone.json")) < 0) fail_msg("%s", ss_err());
    /* a run with a BOM'ed condition list */
    run_opts o = {.conds = at("bomc.json")};
    if (run_lib("bomc", &o, NULL) < 0) fail_msg("%s", ss_err());
    static const struct {
        const char *text, *msg;
    } BAD[] = {
        {"[{\"name\": \"A1\",\n" BOM "\"layers\": [1]}]", "bad.json:2: a byte-order mark (U+FEFF) at column 1"},
        {"[{\"name\": \"A\xff\", \"layers\": [1]}]", "bad.json:1: invalid UTF-8 (byte 0xff at column 13)"},
        {"[{\"name\": \"A1\"\n\n, \"layers\": [1]]", "bad.json: not valid JSON (line 3"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        write_text(at("bad.json"), BAD[i].text);
        assert_true(sink_condition_list_load(&l, &n, at("bad.json")) < 0);
        if (!strstr(ss_err(), BAD[i].msg)) fail_msg("case %zu: %s", i, ss_err());
        assert_true(sink_condition_load(&c, at("bad.json")) < 0);
    }
    assert_true(sink_condition_list_load(&l, &n, g_root) < 0);
    assert_non_null(strstr(ss_err(), "not a regular file"));
}

/* ---- item 18: the main job holds EXP/.lock through its report ---- */

/* 1 when another open file description cannot take the lock (someone holds it), 0 when it
 * could (it is released again at once). */
static int lock_is_held(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    const int got = flock(fd, LOCK_EX | LOCK_NB) == 0;
    const int e = errno;
    close(fd);
    if (!got) assert_int_equal(e, EWOULDBLOCK);
    return !got;
}

static void test_main_job_keeps_lock_through_report(void **st) {
    (void)st;
    /* The main job (no arguments) on a tiny embedded model next to a copy of the executable. Its
     * stdout is a pipe filled to the brim, so the report's table blocks it inside the report
     * phase until the test drains it; its stderr is read line by line. */
    char dir[1024], cmd[2600];
    snprintf(dir, sizeof dir, "%s", at("mainjob"));
    assert_int_equal(ss_mkdir_p(at("mainjob/models")), 0);
    make_model(at("mainjob/models/shapeworld"), 4, 1, 11);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/sinkscope'", tc_bin(), dir);
    assert_int_equal(system(cmd), 0);
    int out[2], err[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(err), 0);
    fcntl(out[1], F_SETFL, O_NONBLOCK);
    char fill[4096];
    memset(fill, 'x', sizeof fill);
    long filled = 0;
    for (;;) {
        ssize_t w = write(out[1], fill, sizeof fill);
        if (w <= 0) break;
        filled += w;
    }
    for (;;) { /* the last bytes that fit */
        ssize_t w = write(out[1], fill, 1);
        if (w <= 0) break;
        filled += w;
    }
    fcntl(out[1], F_SETFL, 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        if (chdir(dir)) _exit(126);
        execl("./sinkscope", "./sinkscope", "run", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    FILE *ef = fdopen(err[0], "r");
    char line[4096], lock[1100];
    snprintf(lock, sizeof lock, "%s/exp/main/.lock", dir);
    int summary = 0, held_after_run = -1, held_in_report = -1;
    while (fgets(line, sizeof line, ef)) {
        if (strstr(line, "sinkscope run: exp/main: ") && strstr(line, " images (")) {
            summary = 1;
            /* the run phase is over: the report phase must still hold the lock */
            held_after_run = lock_is_held(lock);
            struct timespec ts = {0, 300 * 1000000L};
            nanosleep(&ts, NULL); /* by now it is in the report (or blocked on its table) */
            held_in_report = lock_is_held(lock);
            break;
        }
    }
    /* drain both pipes and collect the exit status */
    long got = 0;
    ssize_t r;
    char buf[8192];
    while ((r = read(out[0], buf, sizeof buf)) > 0) got += r;
    while (fgets(line, sizeof line, ef)) {
    }
    fclose(ef);
    close(out[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(summary);
    assert_int_equal(held_after_run, 1);
    assert_int_equal(held_in_report, 1);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(got > filled); /* the report printed its table */
    assert_true(exists(at("mainjob/exp/main/report/summary.json")));
    assert_int_equal(lock_is_held(lock), 0); /* and let it go at the end */
}


/* ---- run addresses attention sites: attn2 of a dual-attention block, joint.i == layers [i] ---- */

static void test_run_sites(void **st) {
    (void)st;
    sd3_config tc = {.sample_size = 8, .patch_size = 2, .in_channels = 3, .out_channels = 3, .num_layers = 2,
                     .head_dim = 8, .num_heads = 2, .joint_attention_dim = 16, .caption_projection_dim = 16,
                     .pooled_projection_dim = 16, .pos_embed_max_size = 4, .qk_norm = 1};
    tc.dual[0] = 1;
    te_config ec = {.vocab_size = 0, .max_length = 16, .hidden_size = 16, .pooled_size = 16};
    if (pipe_init_random(at("dmodel"), &tc, &ec, sw_vocabulary(), 5) < 0) fail_msg("pipe_init_random: %s", ss_err());
    write_text(at("c_attn2.json"), "[{\"name\": \"S\", \"sites\": [\"attn2.0\"], \"k\": 1}]\n");
    write_text(at("c_bad.json"), "[{\"name\": \"S\", \"sites\": [\"attn2.1\"], \"k\": 1}]\n");
    write_text(at("c_joint.json"), "[{\"name\": \"A\", \"sites\": [\"joint.1\"], \"k\": 1}]\n");
    write_text(at("c_layers.json"), "[{\"name\": \"A\", \"layers\": [1], \"k\": 1}]\n");
    run_opts o = {.model = at("dmodel"), .conds = at("c_bad.json")};
    assert_true(run_lib("sbad", &o, NULL) < 0);
    if (!strstr(ss_err(), "attn2.1") || !strstr(ss_err(), "joint.0-1, attn2.0")) fail_msg("%s", ss_err());
    o.conds = at("c_attn2.json");
    run_result res;
    if (run_lib("s2", &o, &res) < 0) fail_msg("%s", ss_err());
    assert_int_equal(res.made, 4); /* baseline + S, 2 prompts */
    size_t n;
    char *rec = tc_read_all(at("s2/records.jsonl"), &n);
    assert_non_null(rec);
    if (!strstr(rec, "\"site\": \"attn2.0\"") && !strstr(rec, "\"site\":\"attn2.0\"")) fail_msg("no attn2.0 site in the records:\n%.2000s", rec);
    free(rec);
    /* the intervention changes the image at the attn2 site */
    char *a = tc_read_all(at("s2/images/baseline/00000_0.png"), &n), *b;
    size_t m;
    b = tc_read_all(at("s2/images/S/00000_0.png"), &m);
    assert_true(a && b && (n != m || memcmp(a, b, n)));
    free(a);
    free(b);
    /* sites ["joint.1"] is layers [1] */
    o.model = NULL;
    o.conds = at("c_joint.json");
    if (run_lib("sj", &o, NULL) < 0) fail_msg("%s", ss_err());
    o.conds = at("c_layers.json");
    if (run_lib("sl", &o, NULL) < 0) fail_msg("%s", ss_err());
    a = tc_read_all(at("sj/images/A/00001_1.png"), &n);
    b = tc_read_all(at("sl/images/A/00001_1.png"), &m);
    assert_true(a && b && n == m && !memcmp(a, b, n));
    free(a);
    free(b);
}


/* ---- a run allocates the transformer's workspace once per worker, not per image or step ---- */

static void test_run_workspace_once(void **st) {
    (void)st;
    write_text(at("c_ws.json"), "[{\"name\": \"A1\", \"layers\": [1], \"k\": 1}, {\"name\": \"R\", \"layers\": [0], \"select\": \"random\"}]\n");
    sink_condition *l = NULL;
    int n = 0;
    if (sink_condition_list_load(&l, &n, at("c_ws.json")) < 0) fail_msg("%s", ss_err());
    run_config c;
    run_config_default(&c);
    c.exp_dir = at("ws");
    c.model_dir = g_model;
    c.prompts_path = g_text;
    c.conds = l;
    c.n_conds = n;
    c.conditions_source = "test";
    c.seeds_per_prompt = 2;
    c.steps = 4;
    c.cfg = 2.0; /* guided: two forward passes per step */
    c.quiet = 1;
    c.jobs = 1;
    run_result res;
    const long before = sd3_workspace_allocs(NULL);
    if (run_experiment(&c, &res) < 0) fail_msg("%s", ss_err());
    const long allocs = sd3_workspace_allocs(NULL) - before;
    free(l);
    assert_int_equal(res.made, 12); /* 2 prompts x 2 seeds x 3 conditions, 4 steps each */
    printf("  12 images x 4 steps: %ld workspace allocation(s)\n", allocs);
    assert_int_equal(allocs, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompts_times_seeds_overflow),
        cmocka_unit_test(test_seeds_uint64),
        cmocka_unit_test(test_resume_verifies_images),
        cmocka_unit_test(test_resume_checks_old_records),
        cmocka_unit_test(test_digest_nested_shards),
        cmocka_unit_test(test_no_mass_conditions),
        cmocka_unit_test(test_records_not_regular),
        cmocka_unit_test(test_prompt_files_bom_utf8),
        cmocka_unit_test(test_condition_files_bom_utf8),
        cmocka_unit_test(test_main_job_keeps_lock_through_report),
        cmocka_unit_test(test_run_sites),
        cmocka_unit_test(test_run_workspace_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
