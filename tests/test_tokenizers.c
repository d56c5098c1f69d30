/* Real tokenizers (src/text/txtok.h): token ids exactly as transformers 4.39's slow CLIPTokenizer
 * (both SD3 pad variants) and T5Tokenizer produce them, on the reference cases of
 * fixtures/clip-tokenizer and fixtures/t5-tokenizer and on our own generated cases
 * (fixtures/tokenizer-cases, tests/gen/gen_tokenizer_cases.py); token types; the CLI. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "text/txtok.h"

static json_t *load_cases(const char *path) {
    json_error_t e;
    json_t *o = json_load_file(path, JSON_ALLOW_NUL, &e);
    if (!o) fail_msg("%s: %s", path, e.text);
    json_t *c = json_object_get(o, "cases");
    assert_true(json_is_array(c));
    json_incref(c);
    json_decref(o);
    return c;
}

/* Compares s with the JSON int array want; prints the case on mismatch. Returns 1 if equal. */
static int same_ids(const txtok_seq *s, json_t *want, const char *text, const char *what) {
    if (!json_is_array(want)) fail_msg("case '%s': no field %s", text, what);
    int ok = (size_t)s->n == json_array_size(want);
    for (int i = 0; ok && i < s->n; i++) ok = s->ids[i] == json_integer_value(json_array_get(want, (size_t)i));
    if (!ok) {
        fprintf(stderr, "MISMATCH %s on %s\n  got :", what, text);
        for (int i = 0; i < s->n; i++) fprintf(stderr, " %d", s->ids[i]);
        fprintf(stderr, "\n  want:");
        for (size_t i = 0; i < json_array_size(want); i++)
            fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
        fprintf(stderr, "\n");
    }
    return ok;
}

static void enc(const txtok *t, json_t *c, int L, txtok_seq *s) {
    json_t *tx = json_object_get(c, "text");
    if (txtok_encode(t, json_string_value(tx), json_string_length(tx), L, s) < 0) fail_msg("%s", ss_err());
}

/* A folder with the parent's vocab.json/merges.txt and tokenizer_2's config files (SD3 ships
 * tokenizer_2 complete; the fixture keeps only what differs). */
static char *clip_g_dir(void) {
    char *d = tc_tmpdir();
    const char *root = tc_path("fixtures/clip-tokenizer");
    char cwd[4096], src[8192], dst[8192];
    assert_non_null(getcwd(cwd, sizeof cwd));
    const char *names[4] = {"vocab.json", "merges.txt", "tokenizer_2/tokenizer_config.json",
                            "tokenizer_2/special_tokens_map.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s/%s/%s", cwd, root, names[i]);
        const char *base = strrchr(names[i], '/') ? strrchr(names[i], '/') + 1 : names[i];
        snprintf(dst, sizeof dst, "%s/%s", d, base);
        assert_int_equal(symlink(src, dst), 0);
    }
    return d;
}

static void test_clip_cases(void **st) {
    txtok *l, *g;
    if (txtok_open(&l, tc_path("fixtures/clip-tokenizer")) < 0) fail_msg("%s", ss_err());
    char *gd = clip_g_dir();
    if (txtok_open(&g, gd) < 0) fail_msg("%s", ss_err());
    assert_int_equal(txtok_get_kind(l), TXTOK_CLIP);
    assert_int_equal(txtok_vocab_size(l), 49408);
    assert_int_equal(txtok_model_max_length(l), 77);
    const char *files[2] = {"fixtures/clip-tokenizer/cases.json", "fixtures/tokenizer-cases/clip_cases.json"};
    int bad = 0, total = 0;
    txtok_seq s = {0};
    for (int f = 0; f < 2; f++) {
        json_t *cases = load_cases(tc_path("%s", files[f]));
        size_t i;
        json_t *c;
        json_array_foreach(cases, i, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            json_t *bang = json_object_get(c, "ids_pad_bang");
            enc(l, c, 0, &s), bad += !same_ids(&s, json_object_get(c, "ids"), text, "ids");
            enc(l, c, 77, &s), bad += !same_ids(&s, json_object_get(c, "input_ids"), text, "input_ids");
            enc(g, c, 0, &s), bad += !same_ids(&s, bang ? bang : json_object_get(c, "ids"), text, "ids_pad_bang");
            enc(g, c, 77, &s), bad += !same_ids(&s, json_object_get(c, "input_ids_pad_bang"), text, "input_ids_pad_bang");
            /* the attention mask is 1 up to and including the added EOS */
            for (int k = 0; k < s.n; k++) assert_int_equal(s.mask[k], s.types[k] != TT_PAD);
            total += 4;
        }
        json_decref(cases);
    }
    fprintf(stderr, "clip: %d of %d id sequences equal\n", total - bad, total);
    assert_int_equal(bad, 0);
    assert_true(total >= 240);
    txtok_seq_free(&s);
    txtok_free(l);
    txtok_free(g);
    tc_rmtree(gd);
    free(gd);
}

static void test_t5_cases(void **st) {
    txtok *t;
    if (txtok_open(&t, tc_path("fixtures/t5-tokenizer")) < 0) fail_msg("%s", ss_err());
    assert_int_equal(txtok_get_kind(t), TXTOK_T5);
    assert_int_equal(txtok_vocab_size(t), 1800);
    const char *files[2] = {"fixtures/t5-tokenizer/cases.json", "fixtures/tokenizer-cases/t5_cases.json"};
    int bad = 0, total = 0;
    txtok_seq s = {0};
    for (int f = 0; f < 2; f++) {
        json_t *cases = load_cases(tc_path("%s", files[f]));
        size_t i;
        json_t *c;
        json_array_foreach(cases, i, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            enc(t, c, 0, &s), bad += !same_ids(&s, json_object_get(c, "ids"), text, "ids");
            int Ls[2] = {32, 16};
            for (int k = 0; k < 2; k++) {
                char f1[32], f2[32];
                snprintf(f1, sizeof f1, "input_ids_%d", Ls[k]);
                snprintf(f2, sizeof f2, "attention_mask_%d", Ls[k]);
                enc(t, c, Ls[k], &s), bad += !same_ids(&s, json_object_get(c, f1), text, f1);
                json_t *m = json_object_get(c, f2);
                for (int j = 0; j < s.n && m; j++) assert_int_equal(s.mask[j], json_integer_value(json_array_get(m, j)));
            }
            total += 3;
        }
        json_decref(cases);
    }
    fprintf(stderr, "t5: %d of %d id sequences equal\n", total - bad, total);
    assert_int_equal(bad, 0);
    assert_true(total >= 90);
    txtok_seq_free(&s);
    txtok_free(t);
}

static void check_types(const txtok *t, const char *text, int L, const char *want) {
    txtok_seq s = {0};
    if (txtok_encode(t, text, strlen(text), L, &s) < 0) fail_msg("%s", ss_err());
    char got[1024] = "";
    for (int i = 0; i < s.n; i++) {
        strcat(got, i ? " " : "");
        strcat(got, txtok_type_name(s.types[i]));
    }
    if (strcmp(got, want)) fail_msg("'%s': types '%s', want '%s'", text, got, want);
    txtok_seq_free(&s);
}

static void test_types(void **st) {
    txtok *l, *t, *g;
    assert_int_equal(txtok_open(&l, tc_path("fixtures/clip-tokenizer")), 0);
    assert_int_equal(txtok_open(&t, tc_path("fixtures/t5-tokenizer")), 0);
    char *gd = clip_g_dir();
    assert_int_equal(txtok_open(&g, gd), 0);
    check_types(l, "two dogs, a cat.", 8, "bos word word comma word word punct eos");
    check_types(l, "a cat", 6, "bos word word eos pad pad");
    check_types(l, "wow!!!", 0, "bos word punct eos");
    check_types(g, "wow!!!", 0, "bos word punct punct punct eos");
    check_types(l, "x <|endoftext|> y", 0, "bos word eos word eos");
    check_types(t, "a cat,,", 7, "word word comma comma eos pad pad");
    check_types(t, "a <extra_id_0> b </s>", 0, "word special word eos");
    txtok_free(l), txtok_free(t), txtok_free(g);
    tc_rmtree(gd);
    free(gd);
}

/* The CLI on a few lines, both kinds, with and without --max-length. */
static void test_cli(void **st) {
    char *d = tc_tmpdir();
    char in[4200], buf[8192];
    snprintf(in, sizeof in, "%s/in.txt", d);
    assert_int_equal(tc_write_text(in, "\"a photo of a red cat\"\n\"two dogs\"\n"), 0);
    int rc = tc_run(buf, sizeof buf, "%s tokenize --tokenizer %s --input %s", tc_bin(),
                    tc_path("fixtures/clip-tokenizer"), in);
    assert_int_equal(rc, 0);
    assert_string_equal(buf, "[49406, 320, 1125, 539, 320, 736, 2368, 49407]\n[49406, 1237, 3255, 49407]\n");
    rc = tc_run(buf, sizeof buf, "%s tokenize --tokenizer %s --max-length 6 --types < %s", tc_bin(),
                tc_path("fixtures/t5-tokenizer"), in);
    assert_int_equal(rc, 0);
    assert_string_equal(buf, "{\"ids\": [3, 7, 4, 6, 3, 1], \"types\": [\"word\", \"word\", \"word\", \"word\", "
                             "\"word\", \"eos\"]}\n{\"ids\": [4, 27, 615, 1, 0, 0], \"types\": [\"word\", \"word\", "
                             "\"word\", \"eos\", \"pad\", \"pad\"]}\n");
    /* a line that is not a JSON string: one line naming the input, non-zero exit */
    assert_int_equal(tc_write_text(in, "\"ok\"\nnot json\n"), 0);
    rc = tc_run(buf, sizeof buf, "{ %s tokenize --tokenizer %s --input %s 2>&1 >/dev/null; }", tc_bin(),
                tc_path("fixtures/t5-tokenizer"), in);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "in.txt: line 2"));
    tc_rmtree(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip_cases),
        cmocka_unit_test(test_t5_cases),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
