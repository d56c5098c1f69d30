/* Word tokenizer (layout, normalisation, errors, vocabulary files) and the tiny text encoder
 * (hand-computed outputs). The safetensors save/load round trip is in test_text_io.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "text/encoder.h"
#include "text/tokenizer.h"

static const char *const WORDS[] = {"a",     "photo", "of",    "red",       "circle", "and",
                                    "blue",  "square", "three", "triangles", "left",   NULL};
/* ids: <pad> 0, <eos> 1, a 2, photo 3, of 4, red 5, circle 6, and 7, blue 8, square 9, three 10,
 * triangles 11, left 12 */

static char g_dir[64];

static const char *tmp_path(const char *name) {
    static char path[160];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return path;
}

static const char *write_tmp(const char *name, const char *text) {
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static int setup(void **st) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ss_text_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **st) {
    const char *names[] = {"vocab.txt", "bad.txt", "config.json", "written.txt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(tmp_path(names[i]));
    return rmdir(g_dir);
}

static void expect_err(int rc, const char *needle) {
    assert_true(rc < 0);
    if (!strstr(ss_err(), needle)) fail_msg("error '%s' lacks '%s'", ss_err(), needle);
}

static void check_ids(const tok_vocab *v, const char *prompt, int S, const int32_t *want, int nwords) {
    int32_t ids[32];
    int n = tok_encode(v, prompt, S, ids);
    if (n < 0) fail_msg("'%s': %s", prompt, ss_err());
    assert_int_equal(n, nwords);
    for (int s = 0; s < S; s++)
        if (ids[s] != want[s]) fail_msg("'%s': position %d is %d, want %d", prompt, s, (int)ids[s], (int)want[s]);
}

static void test_tokenize(void **st) {
    tok_vocab *v;
    assert_int_equal(tok_vocab_from_words(&v, WORDS), 0);
    assert_int_equal(tok_vocab_size(v), 13);
    assert_string_equal(tok_vocab_word(v, 0), "<pad>");
    assert_string_equal(tok_vocab_word(v, 1), "<eos>");
    assert_int_equal(tok_vocab_find(v, "square"), 9);
    assert_int_equal(tok_vocab_find(v, "zebra"), -1);
    assert_null(tok_vocab_word(v, 13));

    const int32_t two[12] = {2, 3, 4, 2, 5, 6, 7, 2, 8, 9, 1, 0};
    check_ids(v, "a photo of a red circle and a blue square", 12, two, 10);
    const int32_t three[8] = {2, 3, 4, 10, 11, 1, 0, 0};
    check_ids(v, "a photo of three triangles", 8, three, 5);
    /* case, runs of whitespace, surrounding punctuation, punctuation-only words */
    check_ids(v, "  A Photo\tof\nTHREE  triangles!! ", 8, three, 5);
    check_ids(v, "a photo , of three... ;triangles?", 8, three, 5);
    const int32_t rel[10] = {2, 3, 4, 2, 6, 12, 4, 2, 9, 1};
    check_ids(v, "a photo of a circle left of a square.", 10, rel, 9); /* exactly S-1 words: no pad */
    tok_vocab_free(v);
}

static void test_empty_prompt(void **st) {
    tok_vocab *v;
    assert_int_equal(tok_vocab_from_words(&v, WORDS), 0);
    const int32_t want[5] = {1, 0, 0, 0, 0};
    check_ids(v, "", 5, want, 0);
    check_ids(v, "   ", 5, want, 0);
    check_ids(v, " ?! .", 5, want, 0);
    const int32_t one[1] = {1};
    check_ids(v, "", 1, one, 0);
    tok_vocab_free(v);
}

static void test_prompt_errors(void **st) {
    tok_vocab *v;
    assert_int_equal(tok_vocab_write(tmp_path("vocab.txt"), WORDS), 0);
    assert_int_equal(tok_vocab_load(&v, tmp_path("vocab.txt")), 0);
    int32_t ids[8];
    char want[400];
    snprintf(want, sizeof want, "unknown word 'zebra' in prompt \"a photo of a Zebra.\" (vocabulary: %s)",
             tmp_path("vocab.txt"));
    expect_err(tok_encode(v, "a photo of a Zebra.", 8, ids), want);
    assert_string_equal(ss_err(), want);
    expect_err(tok_encode(v, "a photo of a red circle", 4, ids), "prompt too long: 6 words, the maximum is 3");
    assert_string_equal(ss_err(), "prompt too long: 6 words, the maximum is 3");
    expect_err(tok_encode(v, "a", 1, ids), "prompt too long: 1 words, the maximum is 0");
    expect_err(tok_encode(v, "a <pad> circle", 8, ids), "reserved token '<pad>'");
    expect_err(tok_encode(v, "a <EOS>", 8, ids), "reserved token '<eos>'");
    expect_err(tok_encode(v, "a", 0, ids), "sequence length");
    tok_vocab_free(v);
}

static void test_vocab_files(void **st) {
    /* the writer: <pad>, <eos>, words deduplicated in first-seen order */
    const char *words[] = {"red", "circle", "red", "<eos>", "blue", "circle", NULL};
    const char *p = tmp_path("written.txt");
    assert_int_equal(tok_vocab_write(p, words), 0);
    char buf[128] = {0};
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    assert_true(fread(buf, 1, sizeof buf - 1, f) > 0);
    fclose(f);
    assert_string_equal(buf, "<pad>\n<eos>\nred\ncircle\nblue\n");
    const char *bad_words[] = {"red", "Blue", NULL};
    expect_err(tok_vocab_write(p, bad_words), "vocabulary word 1 'Blue' is not lower-case");
    assert_non_null(strstr(ss_err(), p));

    tok_vocab *v;
    /* CRLF line ends and a missing final newline are fine */
    assert_int_equal(tok_vocab_load(&v, write_tmp("vocab.txt", "<pad>\r\n<eos>\r\nred\r\ncircle")), 0);
    assert_int_equal(tok_vocab_size(v), 4);
    assert_int_equal(tok_vocab_find(v, "circle"), 3);
    assert_string_equal(tok_vocab_path(v), tmp_path("vocab.txt"));
    tok_vocab_free(v);

    struct { const char *text, *msg; } bad[] = {
        {"", ":1: expected '<pad>' (id 0), found end of file"},
        {"<pad>\n", ":2: expected '<eos>' (id 1), found end of file"},
        {"a\n<eos>\n", ":1: expected '<pad>' (id 0), found 'a'"},
        {"<pad>\n<pad>\n", ":2: expected '<eos>' (id 1), found '<pad>'"},
        {"<pad>\n<eos>\nred\ncircle\nred\n", ":5: duplicate token 'red' (first on line 3)"},
        {"<pad>\n<eos>\nred\n\nblue\n", ":4: token '' is empty"},
        {"<pad>\n<eos>\nred\n\n", ":4: token '' is empty"},
        {"<pad>\n<eos>\nRed\n", ":3: token 'Red' is not lower-case"},
        {"<pad>\n<eos>\nred circle\n", ":3: token 'red circle' contains whitespace"},
        {"<pad>\n<eos>\nred.\n", ":3: token 'red.' starts or ends with punctuation"},
        {"<pad>\n<eos>\nblue\n<eos>\n", ":4: duplicate token '<eos>' (first on line 2)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *bp = write_tmp("bad.txt", bad[i].text);
        char want[300];
        snprintf(want, sizeof want, "%s%s", bp, bad[i].msg);
        assert_true(tok_vocab_load(&v, bp) < 0);
        assert_null(v);
        if (strncmp(ss_err(), want, strlen(want))) fail_msg("case %zu: got '%s', want '%s'", i, ss_err(), want);
    }
    expect_err(tok_vocab_load(&v, "/nonexistent/vocab.txt"), "/nonexistent/vocab.txt: cannot open");
}

/* A 5-token vocabulary with embeddings set by hand: tok[i][j] = i + j/10, pos[s][j] = 100 (s+1). */
static te *hand_model(void) {
    const char *words[] = {"red", "circle", "square", NULL};
    te_config c = {.vocab_size = 5, .max_length = 4, .hidden_size = 2, .pooled_size = 2};
    te *m;
    tok_vocab *v;
    assert_int_equal(te_init_random(&m, &c, 1), 0);
    assert_int_equal(tok_vocab_from_words(&v, words), 0);
    assert_int_equal(te_set_vocab(m, v), 0);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 2; j++) m->tok_emb[i * 2 + j] = (float)i + 0.1f * j;
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < 2; j++) m->pos_emb[s * 2 + j] = 100.0f * (s + 1);
    return m;
}

static void test_encoder_hand(void **st) {
    te *m = hand_model();
    float ehs[8], pooled[2];
    /* "red square": ids 2, 4, <eos> 1, <pad> 0 */
    assert_int_equal(te_encode(m, "Red square", ehs, pooled), 0);
    const float want[8] = {2 + 100, 2.1f + 100, 4 + 200, 4.1f + 200, 1 + 300, 1.1f + 300, 0 + 400, 0.1f + 400};
    for (int k = 0; k < 8; k++) assert_true(fabsf(ehs[k] - want[k]) < 1e-4f);
    /* pooled: mean of tok[2], tok[4], tok[1] (the pad is excluded, positions are not added) */
    assert_true(fabsf(pooled[0] - 7.0f / 3) < 1e-6f);
    assert_true(fabsf(pooled[1] - 7.3f / 3) < 1e-6f);
    /* unconditional input: <eos> then pads; pooled is the <eos> embedding */
    assert_int_equal(te_encode(m, "", ehs, pooled), 0);
    assert_true(ehs[0] == 1 + 100.0f && ehs[2] == 0 + 200.0f && ehs[7] == 0.1f + 400);
    assert_true(pooled[0] == m->tok_emb[2] && pooled[1] == m->tok_emb[3]);
    /* errors come through from the tokenizer; bad ids are rejected */
    expect_err(te_encode(m, "red red red red", ehs, pooled), "prompt too long: 4 words, the maximum is 3");
    expect_err(te_encode(m, "blue", ehs, pooled), "unknown word 'blue'");
    const int32_t ids[4] = {2, 5, 1, 0};
    expect_err(te_encode_ids(m, ids, ehs, pooled), "token id 5 at position 1");
    te_free(m);
}

/* Exact agreement with the formula on a random model, in the order a caller would compute it. */
static void test_encoder_random(void **st) {
    te_config c = {.vocab_size = 13, .max_length = 12, .hidden_size = 8, .pooled_size = 8};
    te *m, *m2;
    tok_vocab *v;
    assert_int_equal(te_init_random(&m, &c, 7), 0);
    assert_int_equal(te_init_random(&m2, &c, 7), 0);
    assert_memory_equal(m->tok_emb, m2->tok_emb, 13 * 8 * sizeof(float));
    assert_memory_equal(m->pos_emb, m2->pos_emb, 12 * 8 * sizeof(float));
    te_free(m2);
    assert_int_equal(tok_vocab_from_words(&v, WORDS), 0);
    assert_int_equal(te_set_vocab(m, v), 0);
    float ehs[12 * 8], pooled[8];
    assert_int_equal(te_encode(m, "a photo of three triangles", ehs, pooled), 0);
    const int ids[12] = {2, 3, 4, 10, 11, 1, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < 8; j++) {
        double acc = 0;
        for (int s = 0; s < 12; s++) {
            assert_true(ehs[s * 8 + j] == m->tok_emb[ids[s] * 8 + j] + m->pos_emb[s * 8 + j]);
            if (s < 6) acc += m->tok_emb[ids[s] * 8 + j];
        }
        assert_true(pooled[j] == (float)(acc / 6));
    }
    te_free(m);
    /* the initialisation scale: std 0.02 for tokens, 0.01 for positions */
    te_config big = {.vocab_size = 1000, .max_length = 100, .hidden_size = 100, .pooled_size = 100};
    assert_int_equal(te_init_random(&m, &big, 3), 0);
    double s2 = 0, p2 = 0;
    for (int i = 0; i < 100000; i++) s2 += (double)m->tok_emb[i] * m->tok_emb[i];
    for (int i = 0; i < 10000; i++) p2 += (double)m->pos_emb[i] * m->pos_emb[i];
    assert_true(fabs(sqrt(s2 / 100000) - 0.02) < 0.0005);
    assert_true(fabs(sqrt(p2 / 10000) - 0.01) < 0.0005);
    te_free(m);
}

static void test_encoder_config(void **st) {
    te_config c = {.vocab_size = 13, .max_length = 16, .hidden_size = 32, .pooled_size = 32}, r;
    const char *p = tmp_path("config.json");
    assert_int_equal(te_config_save(&c, p), 0);
    assert_int_equal(te_config_load(&r, p), 0);
    assert_memory_equal(&c, &r, sizeof c);
    struct { const char *text, *msg; } bad[] = {
        {"{\"vocab_size\": 13, \"max_length\": 16, \"hidden_size\": 32}", ": missing field 'pooled_size'"},
        {"{\"vocab_size\": 13, \"max_length\": 16.5, \"hidden_size\": 32, \"pooled_size\": 32}",
         ": field 'max_length' must be a positive integer"},
        {"{\"vocab_size\": 13, \"max_length\": 0, \"hidden_size\": 32, \"pooled_size\": 32}",
         ": field 'max_length' must be a positive integer"},
        {"{\"vocab_size\": 13, \"max_length\": 16, \"hidden_size\": 32, \"pooled_size\": 64}",
         ": field 'pooled_size' (64) must equal 'hidden_size' (32)"},
        {"{\"vocab_size\": 1, \"max_length\": 16, \"hidden_size\": 32, \"pooled_size\": 32}",
         ": field 'vocab_size' must be >= 2"},
        {"[]", ": expected a JSON object"},
        {"{\"vocab_size\": ", ": not valid JSON (line 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_tmp("config.json", bad[i].text);
        char want[300];
        snprintf(want, sizeof want, "%s%s", p, bad[i].msg);
        assert_true(te_config_load(&r, p) < 0);
        if (strncmp(ss_err(), want, strlen(want))) fail_msg("case %zu: got '%s', want '%s'", i, ss_err(), want);
    }
    expect_err(te_config_load(&r, "/nonexistent/config.json"), "/nonexistent/config.json");
    te *m;
    c.pooled_size = 8;
    expect_err(te_init_random(&m, &c, 1), "must equal 'hidden_size'");
    assert_null(m);
    c.pooled_size = 32;
    assert_int_equal(te_init_random(&m, &c, 1), 0);
    float ehs[16 * 32], pooled[32];
    expect_err(te_encode(m, "a", ehs, pooled), "no vocabulary attached");
    tok_vocab *v;
    const char *few[] = {"a", NULL};
    assert_int_equal(tok_vocab_from_words(&v, few), 0);
    expect_err(te_set_vocab(m, v), "has 3 tokens but the text encoder's vocab_size is 13");
    tok_vocab_free(v);
    te_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenize),     cmocka_unit_test(test_empty_prompt),
        cmocka_unit_test(test_prompt_errors), cmocka_unit_test(test_vocab_files),
        cmocka_unit_test(test_encoder_hand), cmocka_unit_test(test_encoder_random),
        cmocka_unit_test(test_encoder_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
