/* Text encoder model folders: te_save / te_load round trip and load errors. Needs
 * src/io/safetensors.c (the st branch); kept apart from test_text.c so that one links without it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"
#include "text/encoder.h"

static const char *const WORDS[] = {"a", "photo", "of", "red", "circle", "and", "blue", "square", NULL};
static char g_dir[64], g_model[100]; /* g_model: the model folder inside g_dir */

static const char *path_in(const char *rel) {
    static char p[4][200];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, rel);
    return p[k];
}

static void cleanup(void) {
    const char *files[] = {"m/text_encoder/config.json", "m/text_encoder/model.safetensors", "m/tokenizer/vocab.txt"};
    for (size_t i = 0; i < 3; i++) unlink(path_in(files[i]));
    rmdir(path_in("m/text_encoder")), rmdir(path_in("m/tokenizer")), rmdir(path_in("m"));
}

static int setup(void **st) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ss_textio_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_model, sizeof g_model, "%s/m", g_dir);
    return 0;
}

static int teardown(void **st) {
    cleanup();
    return rmdir(g_dir);
}

static te *random_model(int J) {
    te_config c = {.vocab_size = 10, .max_length = 6, .hidden_size = J, .pooled_size = J};
    te *m;
    tok_vocab *v;
    assert_int_equal(te_init_random(&m, &c, 11), 0);
    assert_int_equal(tok_vocab_from_words(&v, WORDS), 0);
    assert_int_equal(te_set_vocab(m, v), 0);
    return m;
}

static void expect_err(int rc, const char *a, const char *b) {
    assert_true(rc < 0);
    printf("  expected error: %s\n", ss_err());
    if (!strstr(ss_err(), a) || (b && !strstr(ss_err(), b))) fail_msg("error '%s' lacks '%s' / '%s'", ss_err(), a, b ? b : "");
}

static void test_round_trip(void **st) {
    te *m = random_model(4), *r;
    const char *dir = g_model;
    assert_int_equal(te_save(m, dir), 0);
    if (te_load(&r, dir) < 0) fail_msg("%s", ss_err());
    assert_memory_equal(&m->cfg, &r->cfg, sizeof m->cfg);
    assert_memory_equal(m->tok_emb, r->tok_emb, 10 * 4 * sizeof(float));
    assert_memory_equal(m->pos_emb, r->pos_emb, 6 * 4 * sizeof(float));
    assert_int_equal(tok_vocab_size(r->vocab), 10);
    for (int i = 0; i < 10; i++) assert_string_equal(tok_vocab_word(r->vocab, i), tok_vocab_word(m->vocab, i));
    float e1[24], p1[4], e2[24], p2[4];
    assert_int_equal(te_encode(m, "a red circle", e1, p1), 0);
    assert_int_equal(te_encode(r, "a red circle", e2, p2), 0);
    assert_memory_equal(e1, e2, sizeof e1);
    assert_memory_equal(p1, p2, sizeof p1);
    /* saving over an existing folder works (a trainer checkpoints repeatedly) */
    r->tok_emb[0] += 1.0f;
    assert_int_equal(te_save(r, dir), 0);
    te_free(m);
    assert_int_equal(te_load(&m, dir), 0);
    assert_true(m->tok_emb[0] == r->tok_emb[0]);
    te_free(m), te_free(r);
    cleanup();
}

static void test_load_errors(void **st) {
    te *m = random_model(4), *r;
    const char *dir = g_model;
    expect_err(te_load(&r, dir), "text_encoder/config.json", NULL);
    assert_null(r);
    assert_int_equal(te_save(m, dir), 0);

    /* the vocabulary does not fit the config */
    FILE *f = fopen(path_in("m/tokenizer/vocab.txt"), "a");
    fputs("zebra\n", f);
    fclose(f);
    expect_err(te_load(&r, dir), "tokenizer/vocab.txt has 11 tokens but", "config.json says vocab_size 10");
    unlink(path_in("m/tokenizer/vocab.txt"));
    expect_err(te_load(&r, dir), "tokenizer/vocab.txt", NULL);

    /* weights of another width under the same config: the shape check names tensor and file */
    te *w = random_model(5);
    assert_int_equal(te_save(w, dir), 0);
    te_config c = m->cfg;
    assert_int_equal(te_config_save(&c, path_in("m/text_encoder/config.json")), 0);
    expect_err(te_load(&r, dir), "token_embedding.weight", "model.safetensors");
    te_free(w);

    /* a missing tensor */
    st_writer *sw = st_writer_new();
    const int64_t shape[2] = {10, 4};
    assert_int_equal(st_writer_add_f32(sw, "token_embedding.weight", ST_F32, 2, shape, m->tok_emb), 0);
    assert_int_equal(st_writer_save(sw, path_in("m/text_encoder/model.safetensors")), 0);
    st_writer_free(sw);
    expect_err(te_load(&r, dir), "position_embedding.weight", "model.safetensors");

    unlink(path_in("m/text_encoder/model.safetensors"));
    expect_err(te_load(&r, dir), "model.safetensors", NULL);
    assert_null(r);
    te_free(m);
    cleanup();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
