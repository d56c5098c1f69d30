/* sinkscope tokenize: a real tokenizer folder (CLIP BPE or T5 SentencePiece) on one JSON string
 * per input line; one JSON array of ids per output line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "text/txtok.h"

static const char USAGE[] =
    "usage: sinkscope tokenize --tokenizer DIR [--max-length N] [--input FILE] [--types]\n"
    "\n"
    "  --tokenizer DIR   a pipeline's tokenizer folder: vocab.json + merges.txt (CLIP BPE) or\n"
    "                    spiece.model (T5), with tokenizer_config.json / special_tokens_map.json\n"
    "  --max-length N    pad and truncate as diffusers calls the tokenizer\n"
    "                    (padding=\"max_length\", max_length=N, truncation=True); without it the ids\n"
    "                    are unpadded and untruncated, with the special tokens\n"
    "  --input FILE      one JSON string per line (default: standard input)\n"
    "  --types           print {\"ids\": [...], \"types\": [...]} per line; types are word, comma,\n"
    "                    punct, bos, eos, pad, special (a special token written in the text)\n";

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL, *maxlen_s = NULL, *input = NULL;
    int types = 0;
    cli_opt opts[] = {
        {"tokenizer", &dir, NULL}, {"max-length", &maxlen_s, NULL}, {"input", &input, NULL}, {"types", NULL, &types}};
    int pr = cli_parse(argc, argv, opts, 4, USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!dir) {
        fprintf(stderr, "sinkscope tokenize: --tokenizer is required\n%s", USAGE);
        return 2;
    }
    long maxlen = 0;
    if (maxlen_s && cli_int("tokenize", "--max-length", maxlen_s, 1, 1 << 20, &maxlen) < 0) return 2;
    txtok *t;
    if (txtok_open(&t, dir) < 0) {
        fprintf(stderr, "sinkscope tokenize: %s\n", ss_err());
        return 1;
    }
    FILE *in = input ? fopen(input, "rb") : stdin;
    if (!in) {
        fprintf(stderr, "sinkscope tokenize: %s: cannot open\n", input);
        txtok_free(t);
        return 1;
    }
    const char *label = input ? input : "<stdin>";
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    txtok_seq s = {0};
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!j || !json_is_string(j)) {
            fprintf(stderr, "sinkscope tokenize: %s: line %ld is not a JSON string%s%s\n", label, lineno,
                    j ? "" : ": ", j ? "" : je.text);
            json_decref(j);
            rc = 1;
            break;
        }
        if (txtok_encode(t, json_string_value(j), json_string_length(j), (int)maxlen, &s) < 0) {
            fprintf(stderr, "sinkscope tokenize: %s: line %ld: %s\n", label, lineno, ss_err());
            json_decref(j);
            rc = 1;
            break;
        }
        json_decref(j);
        fputs(types ? "{\"ids\": [" : "[", stdout);
        for (int i = 0; i < s.n; i++) printf(i ? ", %d" : "%d", s.ids[i]);
        if (types) {
            fputs("], \"types\": [", stdout);
            for (int i = 0; i < s.n; i++) printf(i ? ", \"%s\"" : "\"%s\"", txtok_type_name(s.types[i]));
            fputs("]}\n", stdout);
        } else
            fputs("]\n", stdout);
    }
    if (!rc && ferror(in)) {
        fprintf(stderr, "sinkscope tokenize: %s: read error\n", label);
        rc = 1;
    }
    if (fflush(stdout) != 0) rc = 1;
    txtok_seq_free(&s);
    free(line);
    if (input) fclose(in);
    txtok_free(t);
    return rc;
}
