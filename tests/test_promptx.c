/* Comma padding (text/promptx.h) on the real CLIP and T5 tokenizers of tests/fixtures against
 * transformers 4.39 (tests/gen/gen_promptx_cases.py, tests/fixtures/promptx-cases): the padded
 * text is the paper's demo's, the ids and masks are transformers', and every position's token type
 * (txtok) is right: BOS, EOS (last, also after truncation), PAD, comma keys; the spec parser. */
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
#include "text/promptx.h"
#include "text/txtok.h"

static const char *ROLE[] = {"bos", "eos", "pad", "comma"};
static const int ROLE_TYPE[] = {TT_BOS, TT_EOS, TT_PAD, TT_COMMA};

static void check_seq(const txtok *t, const char *text, json_t *want, const char *what) {
    const int L = (int)json_integer_value(json_object_get(want, "max_length"));
    json_t *ids = json_object_get(want, "input_ids"), *mask = json_object_get(want, "attention_mask"),
           *roles = json_object_get(want, "roles");
    txtok_seq s = {0};
    if (txtok_encode(t, text, strlen(text), L, &s) < 0) fail_msg("%s", ss_err());
    assert_int_equal(s.n, L);
    assert_int_equal((int)json_array_size(ids), L);
    int count[4] = {0}, last_kept = -1;
    for (int i = 0; i < L; i++) {
        assert_int_equal(s.ids[i], (int)json_integer_value(json_array_get(ids, i)));
        assert_int_equal(s.mask[i], (int)json_integer_value(json_array_get(mask, i)));
        const char *r = json_string_value(json_array_get(roles, i));
        int k = -1;
        for (int j = 0; j < 4; j++)
            if (!strcmp(r, ROLE[j])) k = j;
        if (k >= 0) {
            if (s.types[i] != ROLE_TYPE[k])
                fail_msg("%s L=%d position %d: type %s, transformers' token is %s", what, L, i, txtok_type_name(s.types[i]), r);
            count[k]++;
        } else {
            assert_string_equal(r, "other");
            for (int j = 0; j < 4; j++) assert_int_not_equal(s.types[i], ROLE_TYPE[j]);
        }
        if (s.mask[i]) last_kept = i;
    }
    assert_int_equal(count[1], 1);              /* one EOS ... */
    assert_int_equal(s.types[last_kept], TT_EOS); /* ... the last kept token, also when truncated */
    printf("  %-4s L=%-3d %-32.32s  comma %3d  eos %d  pad %3d\n", what, L, text, count[3], count[1], count[2]);
    txtok_seq_free(&s);
}

static void test_cases_match_transformers(void **state) {
    (void)state;
    json_error_t je;
    json_t *cases = json_load_file(tc_path("fixtures/promptx-cases/cases.json"), 0, &je);
    if (!cases) fail_msg("cases.json: %s", je.text);
    txtok *clip, *t5;
    if (txtok_open(&clip, tc_path("fixtures/clip-tokenizer")) < 0 || txtok_open(&t5, tc_path("fixtures/t5-tokenizer")) < 0)
        fail_msg("%s", ss_err());
    size_t i;
    json_t *c;
    int saw_200 = 0;
    json_array_foreach(cases, i, c) {
        promptx_pad p = promptx_pad_default();
        p.repeat = (int)json_integer_value(json_object_get(c, "repeat"));
        snprintf(p.pad, sizeof p.pad, "%s", json_string_value(json_object_get(c, "pad")));
        snprintf(p.sep, sizeof p.sep, "%s", json_string_value(json_object_get(c, "sep")));
        char *text;
        assert_int_equal(promptx_pad_apply(&text, json_string_value(json_object_get(c, "prompt")), &p), 0);
        assert_string_equal(text, json_string_value(json_object_get(c, "text")));
        saw_200 |= p.repeat == 200 && !strcmp(p.pad, ",");
        check_seq(clip, text, json_object_get(c, "clip"), "clip");
        size_t j;
        json_t *e;
        json_array_foreach(json_object_get(c, "t5"), j, e) check_seq(t5, text, e, "t5");
        free(text);
    }
    assert_true(saw_200);
    txtok_free(clip);
    txtok_free(t5);
    json_decref(cases);
}

static void test_apply_and_parse(void **state) {
    (void)state;
    char *s;
    promptx_pad p = promptx_pad_default();
    assert_int_equal(p.repeat, 200);
    p.repeat = 3;
    assert_int_equal(promptx_pad_apply(&s, "a red cube", &p), 0); /* pe2sink's own test cases */
    assert_string_equal(s, "a red cube ,,,");
    free(s);
    snprintf(p.sep, sizeof p.sep, "%s", "");
    assert_int_equal(promptx_pad_apply(&s, "a red cube", &p), 0);
    assert_string_equal(s, "a red cube,,,");
    free(s);
    p = promptx_pad_default();
    p.repeat = 0;
    assert_int_equal(promptx_pad_apply(&s, "a red cube", &p), 0);
    assert_string_equal(s, "a red cube");
    free(s);
    p.repeat = 2;
    assert_int_equal(promptx_pad_apply(&s, "a red cube ", &p), 0); /* ends with the separator already */
    assert_string_equal(s, "a red cube ,,");
    free(s);
    p = promptx_pad_default();
    assert_int_equal(promptx_pad_apply(&s, "x", &p), 0);
    assert_int_equal(strlen(s), 202);
    free(s);
    p.pad[0] = 0;
    assert_true(promptx_pad_apply(&s, "x", &p) < 0);
    assert_null(s);
    /* N[:STRING] */
    assert_int_equal(promptx_pad_parse(&p, "200", "--pad-prompt"), 0);
    assert_int_equal(p.repeat, 200);
    assert_string_equal(p.pad, ",");
    assert_string_equal(p.sep, " ");
    assert_int_equal(promptx_pad_parse(&p, "12:;", "--pad-prompt"), 0);
    assert_int_equal(p.repeat, 12);
    assert_string_equal(p.pad, ";");
    assert_int_equal(promptx_pad_parse(&p, "3:, ", "--pad-prompt"), 0);
    assert_string_equal(p.pad, ", ");
    const char *bad[][2] = {{"", "expected N"}, {"-1", "[0, 100000]"}, {"abc", "must be an integer"}, {"100001", "[0, 100000]"},
                            {"5:", "is empty"}, {":,", "expected N"}, {"5:\t", "control character"}, {"+5", "must be an integer"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_true(promptx_pad_parse(&p, bad[i][0], "--pad-prompt") < 0);
        printf("  '%s' -> %s\n", bad[i][0], ss_err());
        assert_non_null(strstr(ss_err(), "--pad-prompt: "));
        assert_non_null(strstr(ss_err(), bad[i][1]));
    }
}

/* generate --pad-prompt N is the same run as the padded prompt typed out, bit for bit */
static void test_generate_pad_prompt(void **state) {
    (void)state;
    char dir[1024]; /* tc_path's buffers rotate */
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/sd3-pipeline-tiny"));
    char *tmp = tc_tmpdir(), buf[8192], commas[64];
    memset(commas, ',', 30);
    commas[30] = 0;
    const char *base = "--steps 1 --cfg 3 --height 16 --width 16 --max-sequence-length 48 --seed 3";
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --prompt 'a red cat' --pad-prompt 30 --dump %s/a.safetensors",
                            tc_bin(), dir, base, tmp), 0);
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --prompt 'a red cat %s' --dump %s/b.safetensors", tc_bin(),
                            dir, base, commas, tmp), 0);
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --prompt 'a red cat' --dump %s/c.safetensors", tc_bin(), dir,
                            base, tmp), 0);
    const char *names[] = {"prompt_embeds", "pooled_prompt_embeds", "image"};
    for (int i = 0; i < 3; i++) {
        size_t na, nb, nc;
        float *a = tc_load(tc_join(tmp, "a.safetensors"), names[i], &na, NULL, NULL);
        float *b = tc_load(tc_join(tmp, "b.safetensors"), names[i], &nb, NULL, NULL);
        float *c = tc_load(tc_join(tmp, "c.safetensors"), names[i], &nc, NULL, NULL);
        assert_non_null(a), assert_non_null(b), assert_non_null(c);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof *a);
        printf("  --pad-prompt 30: %-22s = the typed-out prompt; vs unpadded rel L2 %.3e\n", names[i], tc_rel_l2(a, c, na));
        assert_true(tc_rel_l2(a, c, na) > 1e-4);
        free(a), free(b), free(c);
    }
    int rc = tc_run(buf, sizeof buf, "%s generate --model %s %s --prompt x --pad-prompt 7: --dump %s/d.safetensors", tc_bin(), dir,
                    base, tmp);
    printf("  --pad-prompt 7: -> %s", buf);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(buf, "--pad-prompt: the padding string after ':' is empty"));
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_match_transformers),
        cmocka_unit_test(test_apply_and_parse),
        cmocka_unit_test(test_generate_pad_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
