#include "text/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/fsutil.h"

#define STRIP_PUNCT ".,;:!?"
#define IN_MEMORY "(in memory)"

struct tok_vocab {
    int n, cap;
    char **words;   /* id -> token; words[n] == NULL so words + 2 is a NULL-terminated list */
    int *slots;     /* open-addressing hash: id + 1, 0 = empty */
    size_t nslots;  /* power of two, > 2 n */
    char *path;
};

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_strip(unsigned char c) { return c && strchr(STRIP_PUNCT, c) != NULL; }

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int tok_vocab_find(const tok_vocab *v, const char *word) {
    if (!v->nslots) return -1;
    for (size_t i = hash_str(word) & (v->nslots - 1);; i = (i + 1) & (v->nslots - 1)) {
        int id = v->slots[i] - 1;
        if (id < 0) return -1;
        if (!strcmp(v->words[id], word)) return id;
    }
}

static void slot_insert(tok_vocab *v, int id) {
    size_t i = hash_str(v->words[id]) & (v->nslots - 1);
    while (v->slots[i]) i = (i + 1) & (v->nslots - 1);
    v->slots[i] = id + 1;
}

/* Why a token could never match a prompt word, or NULL if it is fine. */
static const char *token_problem(const char *w) {
    if (!*w) return "is empty";
    if (is_strip((unsigned char)w[0]) || is_strip((unsigned char)w[strlen(w) - 1]))
        return "starts or ends with punctuation that prompts strip (" STRIP_PUNCT ")";
    for (const unsigned char *p = (const unsigned char *)w; *p; p++) {
        if (is_space(*p)) return "contains whitespace";
        if (*p >= 'A' && *p <= 'Z') return "is not lower-case";
        if (*p < 0x20 || *p == 0x7f) return "contains a control character";
    }
    return NULL;
}

/* Appends a token (assumed new). Keeps the hash table under half full. */
static int vocab_push(tok_vocab *v, const char *w) {
    if (v->n + 2 > v->cap) {
        int cap = v->cap ? 2 * v->cap : 64;
        char **nw = realloc(v->words, (size_t)cap * sizeof *nw);
        if (!nw) return ss_fail(SS_ENOMEM, "tokenizer: out of memory");
        v->words = nw, v->cap = cap;
    }
    if (!(v->words[v->n] = strdup(w))) return ss_fail(SS_ENOMEM, "tokenizer: out of memory");
    v->words[++v->n] = NULL;
    if ((size_t)v->n * 2 >= v->nslots) {
        size_t ns = v->nslots ? 2 * v->nslots : 128;
        int *s = calloc(ns, sizeof *s);
        if (!s) return ss_fail(SS_ENOMEM, "tokenizer: out of memory");
        free(v->slots);
        v->slots = s, v->nslots = ns;
        for (int i = 0; i < v->n; i++) slot_insert(v, i);
    } else {
        slot_insert(v, v->n - 1);
    }
    return 0;
}

static tok_vocab *vocab_new(const char *path) {
    tok_vocab *v = ss_calloc(1, sizeof *v);
    if (v && !(v->path = strdup(path))) {
        free(v);
        ss_fail(SS_ENOMEM, "tokenizer: out of memory");
        return NULL;
    }
    return v;
}

void tok_vocab_free(tok_vocab *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) free(v->words[i]);
    free(v->words), free(v->slots), free(v->path), free(v);
}

int tok_vocab_size(const tok_vocab *v) { return v->n; }
const char *tok_vocab_word(const tok_vocab *v, int id) { return id >= 0 && id < v->n ? v->words[id] : NULL; }
const char *tok_vocab_path(const tok_vocab *v) { return v->path; }

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ss_fail(SS_EIO, "%s: cannot open vocabulary file: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) free(buf);
        buf = nb, cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) ss_fail(SS_ENOMEM, "%s: out of memory reading the vocabulary", path);
    else if (bad) ss_fail(SS_EIO, "%s: read error", path);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int parse_lines(tok_vocab *v, char *buf, size_t len) {
    static const char *const reserved[2] = {"<pad>", "<eos>"};
    const char *path = v->path;
    int line = 0;
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p)), *end = nl ? nl : buf + len;
        line++;
        if (end > p && end[-1] == '\r') end--;
        if (memchr(p, 0, (size_t)(end - p))) return ss_fail(SS_EFORMAT, "%s:%d: NUL byte in line", path, line);
        *end = 0;
        if (line <= 2 && strcmp(p, reserved[line - 1]))
            return ss_fail(SS_EFORMAT, "%s:%d: expected '%s' (id %d), found '%s'", path, line, reserved[line - 1],
                           line - 1, p);
        const char *why = token_problem(p);
        if (why) return ss_fail(SS_EFORMAT, "%s:%d: token '%s' %s", path, line, p, why);
        int prev = tok_vocab_find(v, p);
        if (prev >= 0) return ss_fail(SS_EFORMAT, "%s:%d: duplicate token '%s' (first on line %d)", path, line, p, prev + 1);
        if (vocab_push(v, p) < 0) return SS_ENOMEM;
        p = nl ? nl + 1 : buf + len;
    }
    if (line < 2)
        return ss_fail(SS_EFORMAT, "%s:%d: expected '%s' (id %d), found end of file", path, line + 1,
                       reserved[line], line);
    return 0;
}

int tok_vocab_load(tok_vocab **out, const char *path) {
    *out = NULL;
    size_t len;
    char *buf = read_all(path, &len);
    if (!buf) return SS_EIO;
    tok_vocab *v = vocab_new(path);
    int rc = v ? parse_lines(v, buf, len) : SS_ENOMEM;
    free(buf);
    if (rc < 0) {
        tok_vocab_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

int tok_vocab_from_words(tok_vocab **out, const char *const *words) {
    *out = NULL;
    tok_vocab *v = vocab_new(IN_MEMORY);
    int rc = SS_ENOMEM;
    if (!v || vocab_push(v, "<pad>") < 0 || vocab_push(v, "<eos>") < 0) goto fail;
    for (int i = 0; words && words[i]; i++) {
        const char *why = token_problem(words[i]);
        if (why) {
            rc = ss_fail(SS_EARG, "vocabulary word %d '%s' %s", i, words[i], why);
            goto fail;
        }
        if (tok_vocab_find(v, words[i]) < 0 && vocab_push(v, words[i]) < 0) goto fail;
    }
    *out = v;
    return 0;
fail:
    tok_vocab_free(v);
    return rc;
}

int tok_vocab_save(const tok_vocab *v, const char *path) {
    ss_atomic out; /* the one atomic writer (io/fsutil.h): unique tmp, fsync, rename, folder fsync */
    int rc = ss_atomic_open(&out, path);
    if (rc < 0) return rc;
    for (int i = 0; i < v->n; i++)
        if (fprintf(out.fp, "%s\n", v->words[i]) < 0) {
            const int e = errno;
            ss_atomic_abort(&out);
            return ss_fail(SS_EIO, "%s: cannot write the vocabulary file: %s", path, strerror(e));
        }
    return ss_atomic_commit(&out);
}

int tok_vocab_write(const char *path, const char *const *words) {
    tok_vocab *v;
    int rc = tok_vocab_from_words(&v, words);
    if (rc < 0) return ss_err_prefix(rc, "%s: ", path);
    rc = tok_vocab_save(v, path);
    tok_vocab_free(v);
    return rc;
}

int tok_encode(const tok_vocab *v, const char *prompt, int S, int32_t *ids) {
    if (S < 1) return ss_fail(SS_EARG, "tokenizer: sequence length must be >= 1, got %d", S);
    size_t len = strlen(prompt);
    char *buf = ss_malloc(len + 1);
    int32_t *tmp = ss_malloc((len / 2 + 1) * sizeof *tmp); /* words need a separator: <= (len+1)/2 */
    int rc = SS_ENOMEM, nw = 0;
    if (!buf || !tmp) goto done;
    for (size_t i = 0; i <= len; i++) {
        char c = prompt[i];
        buf[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    for (char *p = buf; *p;) {
        while (is_space((unsigned char)*p)) p++;
        if (!*p) break;
        char *w = p;
        while (*p && !is_space((unsigned char)*p)) p++;
        char *end = p;
        if (*p) p++;
        *end = 0;
        while (is_strip((unsigned char)*w)) w++;
        while (end > w && is_strip((unsigned char)end[-1])) *--end = 0;
        if (!*w) continue; /* only punctuation */
        int id = tok_vocab_find(v, w);
        if (id < 0) {
            rc = ss_fail(SS_EARG, "unknown word '%s' in prompt \"%s\" (vocabulary: %s)", w, prompt, v->path);
            goto done;
        }
        if (id == TOK_PAD || id == TOK_EOS) {
            rc = ss_fail(SS_EARG, "reserved token '%s' in prompt \"%s\"", w, prompt);
            goto done;
        }
        tmp[nw++] = id;
    }
    if (nw > S - 1) {
        rc = ss_fail(SS_EARG, "prompt too long: %d words, the maximum is %d", nw, S - 1);
        goto done;
    }
    for (int s = 0; s < S; s++) ids[s] = s < nw ? tmp[s] : s == nw ? TOK_EOS : TOK_PAD;
    rc = nw;
done:
    free(buf), free(tmp);
    return rc;
}
