/* libFuzzer target for the real tokenizers (txtok_encode): arbitrary bytes (invalid UTF-8, NULs,
 * special tokens written in the text, huge runs) as a prompt, through the CLIP BPE tokenizer
 * (both pad variants) and the T5 SentencePiece tokenizer of tests/fixtures, unpadded and with
 * max_length 77 / 16. Checks: ids inside the vocabulary, one type per id, padded sequences of
 * exactly max_length with the mask 0 exactly on padding, and the same ids twice. Run from the
 * repository root (the tokenizer folders are read at start-up). Build with `make fuzz`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "text/txtok.h"

static txtok *g_tok[3];
static const char *DIRS[3] = {"tests/fixtures/clip-tokenizer", NULL, "tests/fixtures/t5-tokenizer"};

/* SD3's tokenizer_2 folder holds only its two config files: link the parent's vocabulary in. */
static const char *clip_g_folder(void) {
    static char dir[] = "/tmp/fuzz-tokenize-XXXXXX";
    static const char *const FILES[][2] = {{"vocab.json", ""}, {"merges.txt", ""},
                                           {"tokenizer_config.json", "/tokenizer_2"},
                                           {"special_tokens_map.json", "/tokenizer_2"}};
    char cwd[2048], from[4096], to[4096];
    if (!mkdtemp(dir) || !getcwd(cwd, sizeof cwd)) return NULL;
    for (int i = 0; i < 4; i++) {
        snprintf(from, sizeof from, "%s/tests/fixtures/clip-tokenizer%s/%s", cwd, FILES[i][1], FILES[i][0]);
        snprintf(to, sizeof to, "%s/%s", dir, FILES[i][0]);
        if (symlink(from, to)) return NULL;
    }
    return dir;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    DIRS[1] = clip_g_folder();
    for (int i = 0; i < 3; i++)
        if (!DIRS[i] || txtok_open(&g_tok[i], DIRS[i]) < 0) {
            fprintf(stderr, "fuzz_tokenize: %s (run from the repository root)\n", ss_err());
            exit(1);
        }
    return 0;
}

static void check(const txtok *t, const uint8_t *data, size_t size, int max_length) {
    txtok_seq s = {0}, s2 = {0};
    int rc = txtok_encode(t, (const char *)data, size, max_length, &s);
    if (rc < 0) {
        if (strchr(ss_err(), '\n')) abort(); /* errors are one line */
        txtok_seq_free(&s);
        return;
    }
    const int V = txtok_vocab_size(t);
    if (max_length > 0 && s.n != max_length) abort();
    for (int i = 0; i < s.n; i++) {
        if (s.ids[i] < 0 || s.ids[i] >= V || s.types[i] >= TT_COUNT) abort();
        if (max_length > 0 && (s.mask[i] == 0) != (s.types[i] == TT_PAD)) abort();
    }
    if (txtok_encode(t, (const char *)data, size, max_length, &s2) < 0 || s2.n != s.n ||
        memcmp(s.ids, s2.ids, sizeof(int32_t) * (size_t)s.n) || memcmp(s.types, s2.types, (size_t)s.n))
        abort(); /* deterministic */
    txtok_seq_free(&s);
    txtok_seq_free(&s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    check(g_tok[0], data, size, 0);
    check(g_tok[0], data, size, 77);
    check(g_tok[1], data, size, 77);
    check(g_tok[2], data, size, 0);
    check(g_tok[2], data, size, 16);
    return 0;
}
