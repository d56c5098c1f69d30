/* libFuzzer target for the prompt file parser (gv_parse_prompts): the input is read as GenEval
 * JSONL, as plain text and with format detection. On success every entry must be a bounded,
 * NUL-terminated prompt (plain text: trimmed, well-formed UTF-8), and JSONL entries must survive the round trip
 * through gv_meta_to_json and gv_parse_line; on failure the error is one line naming the file.
 * Build with `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "eval/geneval.h"

#define LABEL "fuzz.txt"

static void check_error(void) {
    const char *msg = ss_err();
    if (strncmp(msg, LABEL, strlen(LABEL)) != 0 && strncmp(msg, "out of memory", 13) != 0) abort();
    if (strchr(msg, '\n')) abort();
}

static int same_clause(const gv_clause *a, const gv_clause *b, int extras) {
    return !strcmp(a->cls, b->cls) && a->count == b->count &&
           (!extras || (!strcmp(a->color, b->color) && a->rel == b->rel && (a->rel == GV_REL_NONE || a->target == b->target)));
}

static void check_entry(const gv_meta *m, int meta) {
    const size_t len = strnlen(m->prompt, GV_PROMPT_MAX);
    if (len >= GV_PROMPT_MAX) abort();
    if (!meta) { /* plain text: the line itself, trimmed, non-empty, checked UTF-8 */
        if (len == 0 || m->prompt[0] == ' ' || m->prompt[len - 1] == ' ') abort();
        if (gv_check_text_line(m->prompt, len, "entry", 1) != 0) abort();
        return;
    }
    if (m->n_include < 0 || m->n_include > GV_MAX_CLAUSES || m->n_exclude < 0 || m->n_exclude > GV_MAX_CLAUSES) abort();
    for (int i = 0; i < m->n_include; i++)
        if (m->include[i].rel != GV_REL_NONE && (m->include[i].target < 0 || m->include[i].target >= i)) abort();
    static char buf[1 << 16];
    if (gv_meta_to_json(m, buf, sizeof buf) < 0) abort();
    gv_meta b;
    if (gv_parse_line(buf, "again", 1, &b) != 0) abort();
    if (strcmp(m->tag, b.tag) || strcmp(m->prompt, b.prompt) || m->n_include != b.n_include || m->n_exclude != b.n_exclude)
        abort();
    for (int i = 0; i < m->n_include; i++)
        if (!same_clause(&m->include[i], &b.include[i], 1)) abort();
    for (int i = 0; i < m->n_exclude; i++)
        if (!same_clause(&m->exclude[i], &b.exclude[i], 0)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int FORMATS[] = {GV_FORMAT_AUTO, GV_FORMAT_JSONL, GV_FORMAT_TEXT};
    for (int f = 0; f < 3; f++) {
        gv_meta *m = NULL;
        int n = -1, meta = -1;
        ss_err_clear();
        if (gv_parse_prompts((const char *)data, size, LABEL, FORMATS[f], &m, &n, &meta) < 0) {
            if (m || n != 0) abort();
            check_error();
            continue;
        }
        if (n < 1 || (meta != 0 && meta != 1)) abort();
        if (FORMATS[f] != GV_FORMAT_AUTO && meta != (FORMATS[f] == GV_FORMAT_JSONL)) abort();
        for (int i = 0; i < n; i++) check_entry(&m[i], meta);
        free(m);
    }
    return 0;
}
