/* Tests for the probe's text key types on pipeline folders (`sinkscope generate --probe ... --spiral
 * budget` on tests/fixtures/sd3-pipeline-tiny and flux-pipeline/dev-b2-16x24-t16): in every record
 * (each probed site, each step) the spiral budget's key count per type equals the counts the
 * tokenizers themselves give for the same prompts (computed here with txtok: SD3 = CLIP-L's 77
 * tokens then T5's, the unconditional half from the negative prompt; FLUX = T5's), commas show up
 * as comma keys (also after --pad-prompt), the images and model outputs are bit-identical with and
 * without the probe, the records do not depend on the thread count, bad probe options fail with
 * one line, and FLUX refuses pe_* conditions. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "models/site.h"
#include "sample/fluxpipe.h"
#include "sample/sd3pipe.h"
#include "sink/sink.h"
#include "text/promptx.h"
#include "text/txtok.h"

/* The probe's type names (models/site.h ss_tok_name) of a tokenizer type: punctuation and
 * special tokens are "other". */
static const char *key_name(int tt) {
    switch (tt) {
    case TT_WORD: return "word";
    case TT_COMMA: return "comma";
    case TT_BOS: return "bos";
    case TT_EOS: return "eos";
    case TT_PAD: return "pad";
    default: return "other";
    }
}

static const char *const NAMES[] = {"image", "word", "comma", "bos", "eos", "pad", "other", "text"};
#define NNAMES 8

static int name_index(const char *s) {
    for (int i = 0; i < NNAMES; i++)
        if (!strcmp(s, NAMES[i])) return i;
    fail_msg("unknown key type '%s' in the budget", s);
    return -1;
}

/* Add the typed tokens of `text` through the tokenizer in `dir` (max_length n) into cnt. */
static void count_tokens(int cnt[NNAMES], const char *dir, const char *text, int n) {
    txtok *t;
    if (txtok_open(&t, dir) < 0) fail_msg("%s", ss_err());
    txtok_seq s = {0};
    if (txtok_encode(t, text, strlen(text), n, &s) < 0) fail_msg("%s", ss_err());
    assert_int_equal(s.n, n);
    for (int j = 0; j < n; j++) cnt[name_index(key_name(s.types[j]))]++;
    txtok_seq_free(&s);
    txtok_free(t);
}

/* Every probe entry's budget_keys (one entry per site, step and batch element: sink/record.h)
 * equals want[batch]; returns the number of (site, step) pairs, checking that each appears once
 * per batch element and every step 0..steps-1 is there. */
static int check_stats(const char *path, int BB, int want[][NNAMES], int steps, int n_sites) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) fail_msg("%s: %s", path, je.text);
    json_t *recs = json_object_get(root, "probe");
    assert_true(json_is_array(recs));
    assert_int_equal((int)json_array_size(json_object_get(root, "batch_prompts")), BB);
    const int nr = (int)json_array_size(recs);
    assert_int_equal(nr, steps * n_sites * BB);
    int *seen = calloc((size_t)steps * BB, sizeof *seen);
    for (int i = 0; i < nr; i++) {
        json_t *r = json_array_get(recs, i), *sp = json_object_get(r, "spiral");
        const int step = (int)json_integer_value(json_object_get(r, "step"));
        const int b = (int)json_integer_value(json_object_get(r, "batch"));
        assert_true(step >= 0 && step < steps);
        assert_true(b >= 0 && b < BB);
        seen[step * BB + b]++;
        json_t *bk = json_object_get(sp, "budget_keys");
        assert_true(json_is_object(bk));
        int got[NNAMES] = {0};
        const char *k;
        json_t *v;
        json_object_foreach(bk, k, v) got[name_index(k)] = (int)json_integer_value(v);
        for (int t = 0; t < NNAMES; t++)
            if (got[t] != want[b][t])
                fail_msg("%s: entry %d (step %d), batch %d: %d '%s' keys, the tokenizers give %d", path, i, step, b, got[t],
                         NAMES[t], want[b][t]);
    }
    for (int s = 0; s < steps * BB; s++) assert_int_equal(seen[s], n_sites);
    free(seen);
    json_decref(root);
    return nr / BB;
}

static void same_tensor(const char *a, const char *b, const char *name) {
    size_t n, m;
    float *x = tc_load(a, name, &n, NULL, NULL), *y = tc_load(b, name, &m, NULL, NULL);
    if (!x || !y) fail_msg("tensor %s missing", name);
    assert_int_equal(n, m);
    assert_memory_equal(x, y, n * sizeof *x);
    free(x), free(y);
}

/* SD3 with classifier-free guidance: uncond (negative prompt) first, then the prompts. pad: the
 * --pad-prompt value or NULL. */
static void sd3_case(const char *pad) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/sd3-pipeline-tiny"));
    char *tmp = tc_tmpdir(), buf[8192];
    const char *prompts[] = {"a red cat, a dog, a hat", "two dogs"};
    const char *neg = "blurry, dark";
    const int B = 2, T = 16, L = 77, steps = 2, N = (16 / 2 / 2) * (24 / 2 / 2);
    char pf[1200], plain[1200], probed[1200], stats[1200], padopt[64] = "";
    snprintf(pf, sizeof pf, "%s", tc_join(tmp, "p.txt"));
    snprintf(plain, sizeof plain, "%s", tc_join(tmp, "plain.safetensors"));
    snprintf(probed, sizeof probed, "%s", tc_join(tmp, "probed.safetensors"));
    snprintf(stats, sizeof stats, "%s", tc_join(tmp, "s.json"));
    if (pad) snprintf(padopt, sizeof padopt, "--pad-prompt %s", pad);
    assert_int_equal(tc_write_text(pf, "a red cat, a dog, a hat\ntwo dogs\n"), 0);
    const char *base = "--steps 2 --height 16 --width 24 --max-sequence-length 16 --cfg 4 --seed 3";
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s %s --negative-prompt '%s' --dump %s", tc_bin(), dir,
               pf, base, padopt, neg, plain))
        fail_msg("%s", buf);
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s %s --negative-prompt '%s' --dump %s --probe all "
               "--spiral budget --stats %s", tc_bin(), dir, pf, base, padopt, neg, probed, stats))
        fail_msg("%s", buf);
    same_tensor(plain, probed, "image");
    for (int i = 0; i < steps; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "model_output.%d", i);
        same_tensor(plain, probed, nm);
    }
    /* what the tokenizers say: CLIP-L's 77 tokens, then T5's 16; CLIP-G agrees on these prompts */
    int want[4][NNAMES] = {{0}}, clipg[NNAMES];
    char tl[1100], tg[1100], t5[1100];
    snprintf(tl, sizeof tl, "%s/tokenizer", dir);
    snprintf(tg, sizeof tg, "%s/tokenizer_2", dir);
    snprintf(t5, sizeof t5, "%s/tokenizer_3", dir);
    promptx_pad pp = {0};
    if (pad) assert_int_equal(promptx_pad_parse(&pp, pad, "--pad-prompt"), 0);
    for (int b = 0; b < 2 * B; b++) {
        char *text = NULL;
        if (b < B) text = strdup(neg);
        else if (pad) assert_int_equal(promptx_pad_apply(&text, prompts[b - B], &pp), 0);
        else text = strdup(prompts[b - B]);
        int cl[NNAMES] = {0};
        count_tokens(cl, tl, text, L);
        memset(clipg, 0, sizeof clipg);
        count_tokens(clipg, tg, text, L);
        assert_memory_equal(cl, clipg, sizeof cl);
        for (int t = 0; t < NNAMES; t++) want[b][t] = cl[t];
        count_tokens(want[b], t5, text, T);
        want[b][0] = N;
        free(text);
    }
    /* two commas in prompt 0, seen by CLIP and T5; more with the padding (CLIP's BPE merges runs
     * of commas into one piece, T5 truncates at 16) */
    if (pad) assert_true(want[B][2] > 2 * 2);
    else assert_true(want[B][2] >= 2 * 2);
    assert_true(want[0][2] >= 2);
    assert_int_equal(want[B][3], 1);
    const int nr = check_stats(stats, 2 * B, want, steps, 2);
    printf("  SD3%s: %d records; prompt 0 keys: word %d comma %d bos %d eos %d pad %d other %d\n", pad ? " --pad-prompt" : "",
           nr, want[B][1], want[B][2], want[B][3], want[B][4], want[B][5], want[B][6]);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_sd3(void **state) {
    (void)state;
    sd3_case(NULL);
}

static void test_sd3_pad(void **state) {
    (void)state;
    sd3_case("8");
}

static void test_flux(void **state) {
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/dev-b2-16x24-t16"));
    char *tmp = tc_tmpdir(), buf[8192];
    const char *prompts[] = {"a red cat, a dog, a hat", "two dogs"};
    const int B = 2, T = 16, steps = 2, N = (16 / 2 / 2) * (24 / 2 / 2);
    char pf[1200], plain[1200], probed[1200], stats[1200];
    snprintf(pf, sizeof pf, "%s", tc_join(tmp, "p.txt"));
    snprintf(plain, sizeof plain, "%s", tc_join(tmp, "plain.safetensors"));
    snprintf(probed, sizeof probed, "%s", tc_join(tmp, "probed.safetensors"));
    snprintf(stats, sizeof stats, "%s", tc_join(tmp, "s.json"));
    assert_int_equal(tc_write_text(pf, "a red cat, a dog, a hat\ntwo dogs\n"), 0);
    const char *base = "--steps 2 --height 16 --width 24 --max-sequence-length 16 --seed 5";
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s --dump %s", tc_bin(), dir, pf, base, plain))
        fail_msg("%s", buf);
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s --dump %s --probe all --spiral all --stats %s",
               tc_bin(), dir, pf, base, probed, stats))
        fail_msg("%s", buf);
    same_tensor(plain, probed, "image");
    for (int i = 0; i < steps; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "model_output.%d", i);
        same_tensor(plain, probed, nm);
    }
    int want[2][NNAMES] = {{0}};
    char t5[1100];
    snprintf(t5, sizeof t5, "%s/tokenizer_2", dir);
    for (int b = 0; b < B; b++) {
        count_tokens(want[b], t5, prompts[b], T);
        want[b][0] = N;
    }
    assert_true(want[0][2] >= 2);
    assert_int_equal(want[1][2], 0);
    assert_int_equal(want[0][3], 0); /* T5 has no BOS */
    /* the fixture's transformer: 2 double and 2 single blocks (flux-pipeline/README) */
    json_error_t je;
    json_t *cfg = json_load_file(tc_join(dir, "transformer/config.json"), 0, &je);
    assert_non_null(cfg);
    const int ns = (int)(json_integer_value(json_object_get(cfg, "num_layers")) +
                         json_integer_value(json_object_get(cfg, "num_single_layers")));
    json_decref(cfg);
    const int nr = check_stats(stats, B, want, steps, ns);
    /* the records do not depend on the thread count */
    char stats1[1200];
    snprintf(stats1, sizeof stats1, "%s", tc_join(tmp, "s1.json"));
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s --dump %s --probe all --spiral all --stats %s "
               "--threads 1", tc_bin(), dir, pf, base, probed, stats1))
        fail_msg("%s", buf);
    size_t n0, n1;
    char *j0 = tc_read_all(stats, &n0), *j1 = tc_read_all(stats1, &n1);
    assert_non_null(j0), assert_non_null(j1);
    assert_int_equal(n0, n1);
    assert_memory_equal(j0, j1, n0);
    free(j0), free(j1);
    printf("  FLUX: %d records over %d sites; prompt 0 keys: word %d comma %d eos %d pad %d other %d\n", nr, ns, want[0][1],
           want[0][2], want[0][4], want[0][5], want[0][6]);
    /* one site, by name */
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s --dump %s --probe single.1 --spiral budget --stats %s",
               tc_bin(), dir, pf, base, probed, stats))
        fail_msg("%s", buf);
    check_stats(stats, B, want, steps, 1);
    tc_rmtree(tmp);
    free(tmp);
}

/* One-line errors: --spiral without --probe, a site the model lacks, a bad field; FLUX refuses
 * AbsPE conditions (it has RoPE). */
static void test_errors(void **state) {
    (void)state;
    char sd3[1024], flux[1024];
    snprintf(sd3, sizeof sd3, "%s", tc_path("fixtures/sd3-pipeline-tiny"));
    snprintf(flux, sizeof flux, "%s", tc_path("fixtures/flux-pipeline/dev-b2-16x24-t16"));
    char *tmp = tc_tmpdir(), buf[8192];
    const char *base = "--prompt 'a cat' --steps 1 --height 16 --width 24 --max-sequence-length 8";
    struct {
        const char *model, *opts, *want1, *want2;
    } cases[] = {
        {sd3, "--spiral budget", "--spiral", "--probe"},
        {sd3, "--probe joint.7", "joint.7", "joint.0"},
        {sd3, "--probe 0,0", "twice", "0,0"},
        {flux, "--probe double.5", "double.5", "single.0"},
        {flux, "--probe all --spiral bogus", "--spiral", "bogus"},
        {flux, "--probe frob.1", "frob.1", "site name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int rc = tc_run(buf, sizeof buf, "%s generate --model %s %s %s --out %s/x.png", tc_bin(), cases[i].model, base,
                              cases[i].opts, tmp);
        assert_int_not_equal(rc, 0);
        if (!strstr(buf, cases[i].want1) || !strstr(buf, cases[i].want2)) fail_msg("%s: got: %s", cases[i].opts, buf);
        int lines = 0;
        for (const char *c = buf; *c; c++) lines += *c == '\n';
        if (lines > 1) fail_msg("%s: more than one line: %s", cases[i].opts, buf);
    }
    /* pe_* on FLUX */
    const char *cj = tc_join(tmp, "pe.json");
    char cpath[1200];
    snprintf(cpath, sizeof cpath, "%s", cj);
    assert_int_equal(tc_write_text(cpath, "{\"name\": \"pez\", \"layers\": [], \"pe_zero\": \"corners\"}"), 0);
    assert_int_not_equal(
        tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s --out %s/x.png", tc_bin(), flux, base, cpath, tmp), 0);
    if (!strstr(buf, "pe.json") || !strstr(buf, "RoPE") || !strstr(buf, "FluxTransformer2DModel")) fail_msg("got: %s", buf);
    /* the same condition runs on SD3 (AbsPE) */
    if (tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s --out %s/x.png", tc_bin(), sd3, base, cpath, tmp))
        fail_msg("SD3 with pe_zero: %s", buf);
    tc_rmtree(tmp);
    free(tmp);
}

/* Position by position: row r of the types is the tokenizer's token r (SD3: CLIP-L then T5, the
 * negative prompt in the unconditional half; FLUX: T5). */
static void expect_rows(const uint8_t *types, const char *dir, const char *text, int off, int n) {
    txtok *t;
    if (txtok_open(&t, dir) < 0) fail_msg("%s", ss_err());
    txtok_seq s = {0};
    if (txtok_encode(t, text, strlen(text), n, &s) < 0) fail_msg("%s", ss_err());
    for (int j = 0; j < n; j++)
        if (strcmp(ss_tok_name((ss_tok)types[off + j]), key_name(s.types[j])))
            fail_msg("%s, '%s': row %d is '%s', token %d of the tokenizer is '%s'", dir, text, off + j,
                     ss_tok_name((ss_tok)types[off + j]), j, key_name(s.types[j]));
    txtok_seq_free(&s);
    txtok_free(t);
}

static void test_library(void **state) {
    (void)state;
    char dir[1024], sub[1100], sub3[1100];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/sd3-pipeline-tiny"));
    const char *prompts[] = {"a red cat, a dog, a hat", "two dogs"};
    sd3pipe *p;
    if (sd3pipe_load_opts(&p, dir, SD3PIPE_DEFER_TRANSFORMER) < 0) fail_msg("%s", ss_err());
    sd3pipe_params q;
    sd3pipe_params_default(&q);
    q.prompts = prompts, q.n_prompts = 2, q.cfg = 4.0, q.negative = "blurry, dark", q.max_sequence_length = 16;
    const int S = sd3pipe_text_len(p, &q), L = p->clip_len;
    assert_int_equal(S, L + 16);
    uint8_t *ty = malloc((size_t)4 * S);
    assert_int_equal(sd3pipe_text_types(p, &q, ty), 0);
    snprintf(sub, sizeof sub, "%s/tokenizer", dir);
    snprintf(sub3, sizeof sub3, "%s/tokenizer_3", dir);
    for (int b = 0; b < 4; b++) {
        const char *text = b < 2 ? q.negative : prompts[b - 2];
        expect_rows(ty + (size_t)b * S, sub, text, 0, L);
        expect_rows(ty + (size_t)b * S, sub3, text, L, 16);
        assert_int_equal(ty[(size_t)b * S], SS_TOK_BOS);
    }
    /* without guidance: just the prompts */
    q.cfg = 1.0;
    assert_int_equal(sd3pipe_text_types(p, &q, ty), 0);
    for (int b = 0; b < 2; b++) expect_rows(ty + (size_t)b * S, sub, prompts[b], 0, L);
    free(ty);
    sd3pipe_free(p);

    /* without T5: the 77 zero rows after CLIP's are pad, and generate --probe runs on it */
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/sd3-pipeline-variants/no-t5-vae3-neg"));
    if (sd3pipe_load_opts(&p, dir, SD3PIPE_DEFER_TRANSFORMER) < 0) fail_msg("%s", ss_err());
    q.cfg = 5.5, q.n_prompts = 1;
    const int S2 = sd3pipe_text_len(p, &q), L2 = p->clip_len;
    assert_int_equal(S2, 2 * L2);
    ty = malloc((size_t)2 * S2);
    assert_int_equal(sd3pipe_text_types(p, &q, ty), 0);
    snprintf(sub, sizeof sub, "%s/tokenizer", dir);
    for (int b = 0; b < 2; b++) {
        expect_rows(ty + (size_t)b * S2, sub, b ? prompts[0] : q.negative, 0, L2);
        for (int j = L2; j < S2; j++) assert_int_equal(ty[(size_t)b * S2 + j], SS_TOK_PAD);
    }
    free(ty);
    sd3pipe_free(p);
    char *tmp = tc_tmpdir(), buf[8192], stats[1200];
    snprintf(stats, sizeof stats, "%s", tc_join(tmp, "s.json"));
    if (tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a cat, a hat' --negative-prompt 'blurry, dark' --steps 1 "
               "--height 32 --width 16 --cfg 5.5 --probe 0 --spiral budget --stats %s --out %s/x.png", tc_bin(), dir, stats, tmp))
        fail_msg("%s", buf);
    int want[2][NNAMES] = {{0}};
    count_tokens(want[0], sub, "blurry, dark", L2);
    count_tokens(want[1], sub, "a cat, a hat", L2);
    for (int b = 0; b < 2; b++) want[b][0] = (32 / 4 / 2) * (16 / 4 / 2), want[b][5] += L2;
    check_stats(stats, 2, want, 1, 1);
    tc_rmtree(tmp);
    free(tmp);

    fluxpipe *fp;
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/dev-b2-16x24-t16"));
    if (fluxpipe_load_opts(&fp, dir, FLUXPIPE_DEFER_TRANSFORMER) < 0) fail_msg("%s", ss_err());
    fluxpipe_params fq;
    fluxpipe_params_default(&fq);
    fq.prompts = prompts, fq.n_prompts = 2, fq.max_sequence_length = 12;
    uint8_t fty[2 * 12];
    assert_int_equal(fluxpipe_text_types(fp, &fq, fty), 0);
    snprintf(sub, sizeof sub, "%s/tokenizer_2", dir);
    for (int b = 0; b < 2; b++) expect_rows(fty + (size_t)b * 12, sub, prompts[b], 0, 12);
    fluxpipe_free(fp);

    /* the probe refuses image or unknown types among text types, and a site whose text keys do not
     * match them (named) */
    sink_ctx *sk = sink_ctx_new();
    assert_non_null(sk);
    uint8_t bad[5] = {SS_TOK_WORD, SS_TOK_IMAGE, SS_TOK_PAD, SS_TOK_PAD, SS_TOK_PAD};
    assert_true(sink_ctx_set_text_types(sk, bad, 1, 5) < 0);
    assert_non_null(strstr(ss_err(), "not a text type"));
    bad[1] = SS_TOK_N;
    assert_true(sink_ctx_set_text_types(sk, bad, 1, 5) < 0);
    bad[1] = SS_TOK_COMMA;
    assert_int_equal(sink_ctx_set_text_types(sk, bad, 1, 5), 0);
    const int code = ss_site_code(SS_SITE_JOINT, 0);
    assert_int_equal(sink_ctx_set_probe(sk, &code, 1, TOK_IMAGE, 2, 0), 0);
    ss_site site = {.index = 0, .block = 0, .kind = SS_SITE_JOINT, .Tq = 7, .Tk = 7, .n_qspan = 2, .n_kspan = 2};
    site.qspan[0] = site.kspan[0] = (ss_span){0, 4, SS_TOK_IMAGE};
    site.qspan[1] = site.kspan[1] = (ss_span){4, 3, SS_TOK_TEXT};
    attn_args a = {.B = 1, .H = 1, .dh = 2, .T = 7};
    sd3_hooks hk = sink_ctx_hooks(sk);
    assert_true(hk.attention(hk.ctx, &site, &a) < 0);
    if (!strstr(ss_err(), "joint.0") || !strstr(ss_err(), "1 x 5")) fail_msg("got: %s", ss_err());
    assert_int_equal(sink_ctx_record_count(sk), 0);
    assert_int_equal(sink_ctx_set_text_types(sk, NULL, 0, 0), 0);
    sink_ctx_free(sk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd3),
        cmocka_unit_test(test_sd3_pad),
        cmocka_unit_test(test_flux),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_library),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
