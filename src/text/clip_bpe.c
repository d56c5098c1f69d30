/* clip_bpe: CLIP byte-level BPE exactly as transformers' slow CLIPTokenizer (see clip_bpe.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/clip_bpe.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/err.h"
#include "io/jsonfile.h"

#define CLIP_MAX_MERGES (49152 - 256 - 2) /* transformers reads lines [1, 49152-256-2+1) */

struct clip_bpe {
    char *dir;
    txtok_map *vocab;   /* token string -> id */
    char **tokens;      /* id -> token string (NULL for gaps) */
    int n_ids;          /* largest id + 1 (added tokens included) */
    txtok_map *ranks;   /* 8-byte key (left id, right id) -> merge rank */
    int32_t *merged;    /* rank -> id of the merged symbol */
    int n_merges;
    int32_t byte_id[256], byte_id_w[256]; /* byte symbol, byte symbol + "</w>" */
    uint8_t byte_of_cp[512];              /* inverse of bytes_to_unicode (code points < 324) */
    int32_t bos_id, eos_id, pad_id, unk_id;
    txtok_specials sp;
    pcre2_code *re;
};

/* GPT-2's bytes_to_unicode. */
static void bytes_to_unicode(int cp_of[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp_of[b] = printable ? b : 256 + n++;
    }
}

static int32_t vocab_lookup(void *ctx, const char *s) {
    const clip_bpe *c = ctx;
    int32_t id;
    return txtok_map_get(c->vocab, s, strlen(s), &id) ? id : -1;
}

void clip_bpe_free(clip_bpe *c) {
    if (!c) return;
    txtok_map_free(c->vocab);
    txtok_map_free(c->ranks);
    if (c->tokens)
        for (int i = 0; i < c->n_ids; i++) free(c->tokens[i]);
    free(c->tokens);
    free(c->merged);
    txtok_specials_free(&c->sp);
    if (c->re) pcre2_code_free(c->re);
    free(c->dir);
    free(c);
}

static int load_vocab(clip_bpe *c, const char *path) {
    json_t *o = NULL;
    int rc = ss_json_load(path, &o);
    if (rc < 0) return rc;
    if (!json_is_object(o) || json_object_size(o) == 0) {
        json_decref(o);
        return ss_fail(SS_EFORMAT, "%s: not a CLIP vocabulary (a non-empty JSON object of token -> id)", path);
    }
    size_t n = json_object_size(o);
    if (n > (1u << 24)) {
        json_decref(o);
        return ss_fail(SS_EFORMAT, "%s: %zu tokens is more than sinkscope accepts", path, n);
    }
    c->vocab = txtok_map_new(n);
    if (!c->vocab) {
        json_decref(o);
        return SS_ENOMEM;
    }
    const char *key;
    json_t *v;
    int64_t max_id = -1;
    json_object_foreach(o, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (int64_t)n * 4 + 1024) {
            json_decref(o);
            return ss_fail(SS_EFORMAT, "%s: token '%s' has no valid id", path, key);
        }
        if ((rc = txtok_map_put(c->vocab, key, strlen(key), (int32_t)json_integer_value(v))) < 0) {
            json_decref(o);
            return rc;
        }
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    c->n_ids = (int)max_id + 1;
    c->tokens = ss_calloc((size_t)c->n_ids, sizeof *c->tokens);
    if (!c->tokens) {
        json_decref(o);
        return SS_ENOMEM;
    }
    json_object_foreach(o, key, v) {
        int id = (int)json_integer_value(v);
        if (c->tokens[id]) {
            json_decref(o);
            return ss_fail(SS_EFORMAT, "%s: id %d is given to both '%s' and '%s'", path, id, c->tokens[id], key);
        }
        if (!(c->tokens[id] = strdup(key))) {
            json_decref(o);
            return ss_fail(SS_ENOMEM, "out of memory");
        }
    }
    json_decref(o);
    /* Byte symbols. */
    int cp_of[256];
    bytes_to_unicode(cp_of);
    memset(c->byte_of_cp, 0, sizeof c->byte_of_cp);
    for (int b = 0; b < 256; b++) {
        char sym[16];
        utf8proc_ssize_t k = utf8proc_encode_char(cp_of[b], (utf8proc_uint8_t *)sym);
        c->byte_of_cp[cp_of[b]] = (uint8_t)b;
        memcpy(sym + k, "</w>", 5);
        sym[k] = 0;
        if (!txtok_map_get(c->vocab, sym, (size_t)k, &c->byte_id[b]))
            return ss_fail(SS_EFORMAT, "%s: byte symbol '%s' (byte 0x%02x) is missing: not a byte-level BPE vocabulary",
                           path, sym, b);
        memcpy(sym + k, "</w>", 5);
        if (!txtok_map_get(c->vocab, sym, (size_t)k + 4, &c->byte_id_w[b]))
            return ss_fail(SS_EFORMAT, "%s: byte symbol '%s' is missing: not a CLIP BPE vocabulary", path, sym);
    }
    return 0;
}

static int load_merges(clip_bpe *c, const char *path, const char *vocab_path) {
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open", path);
    c->ranks = txtok_map_new(CLIP_MAX_MERGES);
    c->merged = ss_malloc(CLIP_MAX_MERGES * sizeof *c->merged);
    if (!c->ranks || !c->merged) {
        fclose(f);
        return SS_ENOMEM;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    /* transformers: read().strip().split("\n")[1:48895]; leading blank lines are stripped. */
    int started = 0, line_no_merge = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!started) {
            if (len == 0) continue;
            started = 1; /* the first line (#version) is skipped unconditionally */
            continue;
        }
        if (line_no_merge++ >= CLIP_MAX_MERGES) break;
        if (memchr(line, 0, (size_t)len)) {
            rc = ss_fail(SS_EFORMAT, "%s: line %ld holds a NUL byte", path, lineno);
            break;
        }
        char *a = strtok(line, " \t"), *b = a ? strtok(NULL, " \t") : NULL, *extra = b ? strtok(NULL, " \t") : NULL;
        if (!a || !b || extra) {
            if (!a) break; /* a blank line ends the file (it can only be trailing) */
            rc = ss_fail(SS_EFORMAT, "%s: line %ld is not a merge 'left right'", path, lineno);
            break;
        }
        int32_t ia, ib, im;
        size_t la = strlen(a), lb = strlen(b);
        char *m = ss_malloc(la + lb + 1);
        if (!m) {
            rc = SS_ENOMEM;
            break;
        }
        memcpy(m, a, la);
        memcpy(m + la, b, lb + 1);
        int ok = txtok_map_get(c->vocab, a, la, &ia) && txtok_map_get(c->vocab, b, lb, &ib) &&
                 txtok_map_get(c->vocab, m, la + lb, &im);
        free(m);
        if (!ok) {
            rc = ss_fail(SS_EFORMAT, "%s: line %ld: merge '%s %s' uses a symbol not in %s", path, lineno, a, b,
                         vocab_path);
            break;
        }
        int32_t key[2] = {ia, ib};
        /* dict(zip(merges, range(...))): a repeated merge keeps its last rank. */
        c->merged[c->n_merges] = im;
        if ((rc = txtok_map_put(c->ranks, (const char *)key, sizeof key, c->n_merges)) < 0) break;
        c->n_merges++;
    }
    free(line);
    if (rc == 0 && ferror(f)) rc = ss_fail(SS_EIO, "%s: read error", path);
    fclose(f);
    if (rc == 0 && c->n_merges == 0) rc = ss_fail(SS_EFORMAT, "%s: no merges", path);
    return rc;
}

int clip_bpe_open(clip_bpe **out, const char *dir) {
    *out = NULL;
    clip_bpe *c = ss_calloc(1, sizeof *c);
    if (!c) return SS_ENOMEM;
    c->dir = strdup(dir);
    char vp[4096], mp[4096];
    snprintf(vp, sizeof vp, "%s/vocab.json", dir);
    snprintf(mp, sizeof mp, "%s/merges.txt", dir);
    int rc = load_vocab(c, vp);
    if (rc >= 0) rc = load_merges(c, mp, vp);
    static const char *const DEF[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"};
    if (rc >= 0) rc = txtok_specials_load(&c->sp, dir, vocab_lookup, c, DEF);
    if (rc >= 0) {
        const char *names[4] = {c->sp.bos, c->sp.eos, c->sp.pad, c->sp.unk};
        int32_t *ids[4] = {&c->bos_id, &c->eos_id, &c->pad_id, &c->unk_id};
        for (int r = 0; r < 4 && rc >= 0; r++) {
            const txtok_added *a = names[r] ? txtok_specials_find(&c->sp, names[r], strlen(names[r])) : NULL;
            if (!a)
                rc = ss_fail(SS_EFORMAT, "%s/tokenizer_config.json: no %s token", dir,
                             (const char *[]){"bos", "eos", "pad", "unk"}[r]);
            else
                *ids[r] = a->id;
        }
        for (int i = 0; i < c->sp.n && rc >= 0; i++)
            if (c->sp.tok[i].id >= c->n_ids) c->n_ids = c->sp.tok[i].id + 1;
    }
    if (rc >= 0) {
        int err;
        PCRE2_SIZE off;
        static const char PAT[] =
            "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
        c->re = pcre2_compile((PCRE2_SPTR)PAT, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &err,
                              &off, NULL);
        if (!c->re) rc = ss_fail(SS_EFORMAT, "CLIP pre-tokenizer regex does not compile (PCRE2 error %d)", err);
    }
    if (rc < 0) {
        clip_bpe_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int clip_bpe_vocab_size(const clip_bpe *c) { return c->n_ids; }
int clip_bpe_model_max_length(const clip_bpe *c) { return c->sp.model_max_length; }

/* ---------------- text cleanup (BasicTokenizer) ---------------- */
typedef struct {
    utf8proc_int32_t *cp;
    size_t n, cap;
} cpbuf;

static int cp_push(cpbuf *b, utf8proc_int32_t c) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        utf8proc_int32_t *p = realloc(b->cp, cap * sizeof *p);
        if (!p) return ss_fail(SS_ENOMEM, "out of memory (text)");
        b->cp = p, b->cap = cap;
    }
    b->cp[b->n++] = c;
    return 0;
}

static int is_cjk(utf8proc_int32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Python's str.isspace. */
static int py_isspace(utf8proc_int32_t cp) {
    if (cp == ' ' || (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x1F) || cp == 0x85) return 1;
    if (cp < 0x80) return 0;
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

static int is_cased(utf8proc_int32_t cp) {
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

static int is_case_ignorable(utf8proc_int32_t cp) {
    switch (cp) {
    case 0x27: case 0x2E: case 0x3A: case 0x5E: case 0x60: case 0xA8: case 0xAD: case 0xAF: case 0xB4:
    case 0xB7: case 0xB8: case 0x387: case 0x5F4: case 0x2018: case 0x2019: case 0x2024: case 0x2027:
    case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
        return 1;
    default: break;
    }
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_CF ||
           c == UTF8PROC_CATEGORY_LM || c == UTF8PROC_CATEGORY_SK;
}

/* Python str.lower() of w[0..n) appended to out. */
static int py_lower(const utf8proc_int32_t *w, size_t n, cpbuf *out) {
    for (size_t i = 0; i < n; i++) {
        utf8proc_int32_t c = w[i];
        int rc;
        if (c == 0x130) {
            if ((rc = cp_push(out, 'i')) < 0 || (rc = cp_push(out, 0x307)) < 0) return rc;
            continue;
        }
        if (c == 0x3A3) {
            size_t j = i;
            int before = 0, after = 0;
            while (j > 0 && is_case_ignorable(w[j - 1])) j--;
            before = j > 0 && is_cased(w[j - 1]);
            j = i + 1;
            while (j < n && is_case_ignorable(w[j])) j++;
            after = j < n && is_cased(w[j]);
            if ((rc = cp_push(out, before && !after ? 0x3C2 : 0x3C3)) < 0) return rc;
            continue;
        }
        if ((rc = cp_push(out, utf8proc_tolower(c))) < 0) return rc;
    }
    return 0;
}

static int decode_utf8(const char *s, size_t n, cpbuf *out, const char *what) {
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return ss_fail(SS_EFORMAT, "%s: invalid UTF-8 at byte %zu", what, i);
        int rc = cp_push(out, cp);
        if (rc < 0) return rc;
        i += (size_t)k;
    }
    return 0;
}

/* The cleaned, lower-cased text as NUL-terminated UTF-8 (malloc'ed). */
static int basic_clean(const char *s, size_t n, char **out) {
    *out = NULL;
    cpbuf a = {0}, b = {0};
    int rc = decode_utf8(s, n, &a, "prompt");
    for (size_t i = 0; i < a.n && rc >= 0; i++) {
        utf8proc_int32_t cp = a.cp[i];
        if (cp == 0 || cp == 0xFFFD) continue;
        int ws = cp == '\t' || cp == '\n' || cp == '\r';
        utf8proc_category_t cat = utf8proc_category(cp);
        /* C*: Cc Cf Cs Co, and Cn (unassigned; utf8proc numbers it 0) */
        if (!ws && ((cat >= UTF8PROC_CATEGORY_CC && cat <= UTF8PROC_CATEGORY_CO) || cat == UTF8PROC_CATEGORY_CN))
            continue;
        if (ws || cp == ' ' || cat == UTF8PROC_CATEGORY_ZS) cp = ' ';
        if (is_cjk(cp)) {
            if ((rc = cp_push(&b, ' ')) < 0 || (rc = cp_push(&b, cp)) < 0 || (rc = cp_push(&b, ' ')) < 0) break;
        } else if ((rc = cp_push(&b, cp)) < 0)
            break;
    }
    utf8proc_uint8_t *nfc = NULL;
    if (rc >= 0) {
        size_t cap;
        if (ss_mul_size(b.n, 4, &cap) < 0 || ss_add_size(cap, 1, &cap) < 0) rc = ss_fail(SS_ENOMEM, "prompt too long");
        utf8proc_uint8_t *u8 = rc >= 0 ? ss_malloc(cap) : NULL;
        if (rc >= 0 && !u8) rc = SS_ENOMEM;
        if (rc >= 0) {
            size_t k = 0;
            for (size_t i = 0; i < b.n; i++) k += (size_t)utf8proc_encode_char(b.cp[i], u8 + k);
            u8[k] = 0;
            nfc = utf8proc_NFC(u8);
            free(u8);
            if (!nfc) rc = ss_fail(SS_EFORMAT, "prompt: Unicode normalisation failed");
        }
    }
    a.n = 0;
    if (rc >= 0) rc = decode_utf8((const char *)nfc, strlen((const char *)nfc), &a, "prompt");
    free(nfc);
    /* Split on whitespace, lower-case each word, join with single spaces. */
    b.n = 0;
    for (size_t i = 0; i < a.n && rc >= 0;) {
        while (i < a.n && py_isspace(a.cp[i])) i++;
        size_t j = i;
        while (j < a.n && !py_isspace(a.cp[j])) j++;
        if (j > i) {
            if (b.n && (rc = cp_push(&b, ' ')) < 0) break;
            rc = py_lower(a.cp + i, j - i, &b);
        }
        i = j;
    }
    if (rc >= 0) {
        char *u8 = ss_malloc(b.n * 4 + 1);
        if (!u8) rc = SS_ENOMEM;
        else {
            size_t k = 0;
            for (size_t i = 0; i < b.n; i++) k += (size_t)utf8proc_encode_char(b.cp[i], (utf8proc_uint8_t *)u8 + k);
            u8[k] = 0;
            *out = u8;
        }
    }
    free(a.cp);
    free(b.cp);
    return rc;
}

/* ---------------- BPE ---------------- */
static int token_type(const clip_bpe *c, int32_t id, int match_type) {
    const char *t = id >= 0 && id < c->n_ids ? c->tokens[id] : NULL;
    if (!t) return match_type;
    char bytes[1024];
    size_t n = 0, len = strlen(t);
    if (len >= 4 && !strcmp(t + len - 4, "</w>")) len -= 4;
    size_t i = 0;
    while (i < len && n < sizeof bytes) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)t + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0 || cp < 0 || cp >= 512) return match_type;
        bytes[n++] = (char)c->byte_of_cp[cp];
        i += (size_t)k;
    }
    if (i < len) return match_type;
    /* Valid UTF-8 on its own: type by surface; a piece of a multi-byte character: by the match. */
    size_t p = 0;
    while (p < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)bytes + p, (utf8proc_ssize_t)(n - p), &cp);
        if (k <= 0) return match_type;
        p += (size_t)k;
    }
    return txtok_surface_type(bytes, n);
}

static int bpe_word(const clip_bpe *c, const unsigned char *w, size_t n, int match_type, txtok_seq *out) {
    int32_t *sym = ss_malloc(n * sizeof *sym);
    if (!sym) return SS_ENOMEM;
    for (size_t i = 0; i < n; i++) sym[i] = i + 1 < n ? c->byte_id[w[i]] : c->byte_id_w[w[i]];
    size_t len = n;
    while (len > 1) {
        int32_t best = INT32_MAX, a = -1, b = -1;
        for (size_t i = 0; i + 1 < len; i++) {
            int32_t key[2] = {sym[i], sym[i + 1]}, r;
            if (txtok_map_get(c->ranks, (const char *)key, sizeof key, &r) && r < best) best = r, a = sym[i], b = sym[i + 1];
        }
        if (best == INT32_MAX) break;
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            if (i + 1 < len && sym[i] == a && sym[i + 1] == b) {
                sym[o++] = c->merged[best];
                i += 2;
            } else
                sym[o++] = sym[i++];
        }
        len = o;
    }
    int rc = 0;
    for (size_t i = 0; i < len && rc >= 0; i++) rc = txtok_seq_push(out, sym[i], token_type(c, sym[i], match_type));
    free(sym);
    return rc;
}

static int bpe_text(const clip_bpe *c, const char *text, size_t len, txtok_seq *out) {
    char *clean;
    int rc = basic_clean(text, len, &clean);
    if (rc < 0) return rc;
    size_t n = strlen(clean);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(c->re, NULL);
    if (!md) {
        free(clean);
        return ss_fail(SS_ENOMEM, "out of memory (regex)");
    }
    size_t off = 0;
    while (off < n && rc >= 0) {
        int m = pcre2_match(c->re, (PCRE2_SPTR)clean, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            rc = ss_fail(SS_EFORMAT, "prompt: regex match failed (PCRE2 error %d)", m);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) { /* cannot happen with this pattern; never loop forever */
            off = s + 1;
            continue;
        }
        off = e;
        const char *mt = clean + s;
        size_t ml = e - s;
        if ((ml == 15 && !memcmp(mt, "<|startoftext|>", 15)) || (ml == 13 && !memcmp(mt, "<|endoftext|>", 13))) {
            int32_t id;
            if (!txtok_map_get(c->vocab, mt, ml, &id)) id = c->unk_id;
            rc = txtok_seq_push(out, id, ml == 15 ? TT_BOS : TT_EOS);
            continue;
        }
        rc = bpe_word(c, (const unsigned char *)mt, ml, txtok_surface_type(mt, ml), out);
    }
    pcre2_match_data_free(md);
    free(clean);
    return rc;
}

typedef struct {
    const clip_bpe *c;
    txtok_seq *out;
} seg_ctx;

static int on_segment(void *ctx, const char *p, size_t n, const txtok_added *sp) {
    seg_ctx *g = ctx;
    if (sp) {
        int type = sp->id == g->c->bos_id ? TT_BOS : sp->id == g->c->eos_id ? TT_EOS : TT_SPECIAL;
        if (type == TT_SPECIAL) {
            int st = txtok_surface_type(sp->content, strlen(sp->content));
            if (st != TT_WORD) type = st; /* SD3 CLIP-G's pad "!" written in the prompt */
        }
        return txtok_seq_push(g->out, sp->id, type);
    }
    return bpe_text(g->c, p, n, g->out);
}

int clip_bpe_encode(const clip_bpe *c, const char *text, size_t len, int max_length, txtok_seq *s) {
    if (max_length > 0 && max_length < 2)
        return ss_fail(SS_EARG, "max_length %d is too short for <|startoftext|> and <|endoftext|>", max_length);
    txtok_seq body = {0};
    seg_ctx g = {c, &body};
    int rc = txtok_split_specials(&c->sp, text, len, on_segment, &g);
    s->n = 0;
    if (rc >= 0) rc = txtok_seq_push(s, c->bos_id, TT_BOS);
    int keep = body.n;
    if (max_length > 0 && keep > max_length - 2) keep = max_length - 2;
    for (int i = 0; i < keep && rc >= 0; i++) rc = txtok_seq_push(s, body.ids[i], body.types[i]);
    if (rc >= 0) rc = txtok_seq_push(s, c->eos_id, TT_EOS);
    while (rc >= 0 && max_length > 0 && s->n < max_length) rc = txtok_seq_push(s, c->pad_id, TT_PAD);
    txtok_seq_free(&body);
    return rc;
}

int clip_py_lower_strip(const char *s, size_t n, char **out) {
    *out = NULL;
    cpbuf a = {0}, b = {0};
    int rc = decode_utf8(s, n, &a, "prompt");
    size_t i = 0, j = a.n;
    while (i < j && py_isspace(a.cp[i])) i++;
    while (j > i && py_isspace(a.cp[j - 1])) j--;
    if (rc >= 0) rc = py_lower(a.cp + i, j - i, &b);
    char *u8 = rc >= 0 ? ss_malloc(b.n * 4 + 1) : NULL;
    if (rc >= 0 && !u8) rc = SS_ENOMEM;
    if (rc >= 0) {
        size_t k = 0;
        for (size_t m = 0; m < b.n; m++) k += (size_t)utf8proc_encode_char(b.cp[m], (utf8proc_uint8_t *)u8 + k);
        u8[k] = 0;
        *out = u8;
    }
    free(a.cp), free(b.cp);
    return rc < 0 ? rc : 0;
}
