/* txtok: dispatch between the CLIP and T5 tokenizers, and what they share (hash map, special
 * tokens from the config files, the special-token split, token types). */
#include "text/txtok.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "core/err.h"
#include "io/jsonfile.h"
#include "text/clip_bpe.h"
#include "text/t5_spm.h"

const char *txtok_type_name(int type) {
    static const char *const N[TT_COUNT] = {"word", "comma", "punct", "bos", "eos", "pad", "special"};
    return type >= 0 && type < TT_COUNT ? N[type] : "?";
}

void txtok_seq_free(txtok_seq *s) {
    free(s->ids);
    free(s->types);
    free(s->mask);
    memset(s, 0, sizeof *s);
}

int txtok_seq_push(txtok_seq *s, int32_t id, int type) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        if (cap < s->cap) return ss_fail(SS_ENOMEM, "token sequence too long");
        int32_t *ids = realloc(s->ids, (size_t)cap * sizeof *ids);
        if (ids) s->ids = ids;
        uint8_t *ty = realloc(s->types, (size_t)cap);
        if (ty) s->types = ty;
        uint8_t *mk = realloc(s->mask, (size_t)cap);
        if (mk) s->mask = mk;
        if (!ids || !ty || !mk) return ss_fail(SS_ENOMEM, "out of memory (token sequence)");
        s->cap = cap;
    }
    s->ids[s->n] = id;
    s->types[s->n] = (uint8_t)type;
    s->mask[s->n] = type != TT_PAD;
    s->n++;
    return 0;
}

/* ---------------- hash map ---------------- */
struct txtok_map {
    char **keys;
    size_t *klens;
    int32_t *vals;
    size_t cap, n;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

txtok_map *txtok_map_new(size_t expected) {
    txtok_map *m = ss_calloc(1, sizeof *m);
    if (!m) return NULL;
    size_t cap = 64;
    while (cap < expected * 2 + 16) cap *= 2;
    m->cap = cap;
    m->keys = ss_calloc(cap, sizeof *m->keys);
    m->klens = ss_calloc(cap, sizeof *m->klens);
    m->vals = ss_calloc(cap, sizeof *m->vals);
    if (!m->keys || !m->klens || !m->vals) {
        txtok_map_free(m);
        return NULL;
    }
    return m;
}

void txtok_map_free(txtok_map *m) {
    if (!m) return;
    if (m->keys)
        for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->klens);
    free(m->vals);
    free(m);
}

static size_t map_slot(const txtok_map *m, const char *key, size_t klen) {
    size_t i = (size_t)hash_bytes(key, klen) & (m->cap - 1);
    while (m->keys[i] && !(m->klens[i] == klen && !memcmp(m->keys[i], key, klen))) i = (i + 1) & (m->cap - 1);
    return i;
}

static int map_grow(txtok_map *m) {
    txtok_map big = {0};
    big.cap = m->cap * 2;
    big.keys = ss_calloc(big.cap, sizeof *big.keys);
    big.klens = ss_calloc(big.cap, sizeof *big.klens);
    big.vals = ss_calloc(big.cap, sizeof *big.vals);
    if (!big.keys || !big.klens || !big.vals) {
        free(big.keys), free(big.klens), free(big.vals);
        return SS_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t j = map_slot(&big, m->keys[i], m->klens[i]);
            big.keys[j] = m->keys[i], big.klens[j] = m->klens[i], big.vals[j] = m->vals[i];
        }
    free(m->keys), free(m->klens), free(m->vals);
    big.n = m->n;
    *m = big;
    return 0;
}

int txtok_map_put(txtok_map *m, const char *key, size_t klen, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && map_grow(m) < 0) return SS_ENOMEM;
    size_t i = map_slot(m, key, klen);
    if (m->keys[i]) {
        m->vals[i] = val;
        return 1;
    }
    char *k = ss_malloc(klen + 1);
    if (!k) return SS_ENOMEM;
    memcpy(k, key, klen);
    k[klen] = 0;
    m->keys[i] = k, m->klens[i] = klen, m->vals[i] = val;
    m->n++;
    return 0;
}

int txtok_map_get(const txtok_map *m, const char *key, size_t klen, int32_t *val) {
    size_t i = map_slot(m, key, klen);
    if (!m->keys[i]) return 0;
    *val = m->vals[i];
    return 1;
}

/* ---------------- special tokens ---------------- */
void txtok_specials_free(txtok_specials *sp) {
    for (int i = 0; i < sp->n; i++) free(sp->tok[i].content);
    free(sp->tok);
    free(sp->bos), free(sp->eos), free(sp->unk), free(sp->pad);
    memset(sp, 0, sizeof *sp);
}

const txtok_added *txtok_specials_find(const txtok_specials *sp, const char *s, size_t n) {
    for (int i = 0; i < sp->n; i++)
        if (strlen(sp->tok[i].content) == n && !memcmp(sp->tok[i].content, s, n)) return &sp->tok[i];
    return NULL;
}

int txtok_specials_add(txtok_specials *sp, const char *content, int32_t id, int lstrip, int rstrip) {
    if (!content[0] || txtok_specials_find(sp, content, strlen(content))) return 0;
    txtok_added *t = realloc(sp->tok, (size_t)(sp->n + 1) * sizeof *t);
    if (!t) return ss_fail(SS_ENOMEM, "out of memory (special tokens)");
    sp->tok = t;
    char *c = strdup(content);
    if (!c) return ss_fail(SS_ENOMEM, "out of memory (special tokens)");
    t[sp->n++] = (txtok_added){c, id, lstrip, rstrip};
    return 0;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A special as the config files write it: "text" or {"content": "text", "lstrip": ..}. */
static const char *special_content(json_t *v, int *lstrip, int *rstrip) {
    *lstrip = *rstrip = 0;
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) {
        json_t *c = json_object_get(v, "content");
        if (!json_is_string(c)) return NULL;
        *lstrip = json_is_true(json_object_get(v, "lstrip"));
        *rstrip = json_is_true(json_object_get(v, "rstrip"));
        return json_string_value(c);
    }
    return NULL;
}

static int set_str(char **dst, const char *s) {
    free(*dst);
    *dst = s ? strdup(s) : NULL;
    return s && !*dst ? ss_fail(SS_ENOMEM, "out of memory") : 0;
}

int txtok_specials_load(txtok_specials *sp, const char *dir, int32_t (*lookup)(void *, const char *),
                        void *ctx, const char *const defaults[4]) {
    static const char *const ROLE[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    char **slot[4] = {&sp->bos, &sp->eos, &sp->unk, &sp->pad};
    memset(sp, 0, sizeof *sp);
    int rc = 0;
    for (int r = 0; r < 4; r++)
        if ((rc = set_str(slot[r], defaults[r])) < 0) goto fail;
    char path[4096];
    const char *files[2] = {"special_tokens_map.json", "tokenizer_config.json"};
    /* Stripping flags of specials named in the files but without added_tokens_decoder. */
    for (int fi = 0; fi < 2; fi++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[fi]);
        if (!file_exists(path)) continue;
        json_t *o = NULL;
        if ((rc = ss_json_load(path, &o)) < 0) goto fail;
        if (!json_is_object(o)) {
            json_decref(o);
            rc = ss_fail(SS_EFORMAT, "%s: not a JSON object", path);
            goto fail;
        }
        if (fi == 1) {
            json_t *ml = json_object_get(o, "model_max_length");
            if (json_is_integer(ml) && json_integer_value(ml) > 0 && json_integer_value(ml) < (1 << 24))
                sp->model_max_length = (int)json_integer_value(ml);
            json_t *dec = json_object_get(o, "added_tokens_decoder");
            if (dec && !json_is_object(dec)) {
                json_decref(o);
                rc = ss_fail(SS_EFORMAT, "%s: added_tokens_decoder is not an object", path);
                goto fail;
            }
            const char *key;
            json_t *v;
            json_object_foreach(dec, key, v) {
                char *end;
                long id = strtol(key, &end, 10);
                int ls, rs;
                const char *c = special_content(v, &ls, &rs);
                if (*end || end == key || id < 0 || id > INT32_MAX || !c) {
                    json_decref(o);
                    rc = ss_fail(SS_EFORMAT, "%s: added_tokens_decoder entry '%s' is malformed", path, key);
                    goto fail;
                }
                if ((rc = txtok_specials_add(sp, c, (int32_t)id, ls, rs)) < 0) {
                    json_decref(o);
                    goto fail;
                }
            }
        }
        for (int r = 0; r < 4; r++) {
            json_t *v = json_object_get(o, ROLE[r]);
            if (!v || json_is_null(v)) continue;
            int ls, rs;
            const char *c = special_content(v, &ls, &rs);
            if (!c) {
                json_decref(o);
                rc = ss_fail(SS_EFORMAT, "%s: %s is neither a string nor a token object", path, ROLE[r]);
                goto fail;
            }
            if ((rc = set_str(slot[r], c)) < 0) {
                json_decref(o);
                goto fail;
            }
        }
        json_t *add = json_object_get(o, "additional_special_tokens");
        if (json_is_array(add)) {
            size_t i;
            json_t *v;
            json_array_foreach(add, i, v) {
                int ls, rs;
                const char *c = special_content(v, &ls, &rs);
                if (!c) continue;
                if (txtok_specials_find(sp, c, strlen(c))) continue;
                int32_t id = lookup(ctx, c);
                if (id < 0) {
                    json_decref(o);
                    rc = ss_fail(SS_EFORMAT, "%s: additional special token '%s' is not in the vocabulary", path, c);
                    goto fail;
                }
                if ((rc = txtok_specials_add(sp, c, id, ls, rs)) < 0) {
                    json_decref(o);
                    goto fail;
                }
            }
        }
        json_decref(o);
    }
    /* transformers adds every special token to the split trie (with its vocab id). */
    for (int r = 0; r < 4; r++) {
        const char *c = *slot[r];
        if (!c || txtok_specials_find(sp, c, strlen(c))) continue;
        int32_t id = lookup(ctx, c);
        if (id < 0) {
            rc = ss_fail(SS_EFORMAT, "%s/tokenizer_config.json: %s '%s' is not in the vocabulary", dir, ROLE[r], c);
            goto fail;
        }
        if ((rc = txtok_specials_add(sp, c, id, 0, 0)) < 0) goto fail;
    }
    return 0;
fail:
    txtok_specials_free(sp);
    return rc;
}

/* Python's str.isspace for the characters that can precede or follow a special. */
static size_t ws_len_at(const char *s, size_t n) {
    if (!n) return 0;
    unsigned char c = (unsigned char)s[0];
    if (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c < 0x80) return 0;
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (k <= 0) return 0;
    if (cp == 0x85 || cp == 0x2028 || cp == 0x2029 || utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS) return (size_t)k;
    return 0;
}

static size_t ws_len_before(const char *s, size_t n) {
    if (!n) return 0;
    size_t k = 1;
    while (k < n && k < 4 && ((unsigned char)s[n - k] & 0xC0) == 0x80) k++;
    return ws_len_at(s + n - k, k) == k ? k : 0;
}

typedef struct {
    const char *p;
    size_t n;
    const txtok_added *sp;
} seg;

int txtok_split_specials(const txtok_specials *sp, const char *text, size_t len,
                         int (*cb)(void *, const char *, size_t, const txtok_added *), void *ctx) {
    size_t cap = 8, ns = 0;
    seg *segs = ss_malloc(cap * sizeof *segs);
    if (!segs) return SS_ENOMEM;
    size_t start = 0, i = 0;
    int rc = 0;
    while (i < len) {
        const txtok_added *best = NULL;
        size_t bl = 0;
        for (int k = 0; k < sp->n; k++) {
            size_t cl = strlen(sp->tok[k].content);
            if (cl > bl && cl <= len - i && !memcmp(text + i, sp->tok[k].content, cl)) best = &sp->tok[k], bl = cl;
        }
        if (!best) {
            i++;
            continue;
        }
        if (ns + 2 > cap) {
            cap *= 2;
            seg *g = realloc(segs, cap * sizeof *g);
            if (!g) {
                free(segs);
                return ss_fail(SS_ENOMEM, "out of memory");
            }
            segs = g;
        }
        segs[ns++] = (seg){text + start, i - start, NULL};
        segs[ns++] = (seg){text + i, bl, best};
        i += bl;
        start = i;
    }
    if (ns + 1 > cap) {
        seg *g = realloc(segs, (cap + 1) * sizeof *g);
        if (!g) {
            free(segs);
            return ss_fail(SS_ENOMEM, "out of memory");
        }
        segs = g;
    }
    segs[ns++] = (seg){text + start, len - start, NULL};
    for (size_t k = 0; k < ns; k++) {
        if (!segs[k].sp) continue;
        if (segs[k].sp->rstrip && k + 1 < ns && !segs[k + 1].sp) {
            size_t w;
            while ((w = ws_len_at(segs[k + 1].p, segs[k + 1].n)) > 0) segs[k + 1].p += w, segs[k + 1].n -= w;
        }
        if (segs[k].sp->lstrip && k > 0 && !segs[k - 1].sp) {
            size_t w;
            while ((w = ws_len_before(segs[k - 1].p, segs[k - 1].n)) > 0) segs[k - 1].n -= w;
        }
    }
    for (size_t k = 0; k < ns && rc >= 0; k++)
        if (segs[k].n) rc = cb(ctx, segs[k].p, segs[k].n, segs[k].sp);
    free(segs);
    return rc < 0 ? rc : 0;
}

int txtok_surface_type(const char *s, size_t n) {
    if (!n) return TT_WORD;
    int all_comma = 1, all_punct = 1;
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return TT_WORD; /* a partial UTF-8 sequence (byte-level piece) */
        if (cp != ',') all_comma = 0;
        utf8proc_category_t c = utf8proc_category(cp);
        if (!(c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_SO)) all_punct = 0;
        i += (size_t)k;
    }
    return all_comma ? TT_COMMA : all_punct ? TT_PUNCT : TT_WORD;
}

/* ---------------- dispatch ---------------- */
struct txtok {
    txtok_kind kind;
    clip_bpe *clip;
    t5_spm *t5;
    char *dir;
};

int txtok_open(txtok **out, const char *dir) {
    *out = NULL;
    char p1[4096], p2[4096], p3[4096];
    snprintf(p1, sizeof p1, "%s/vocab.json", dir);
    snprintf(p2, sizeof p2, "%s/merges.txt", dir);
    snprintf(p3, sizeof p3, "%s/spiece.model", dir);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ss_fail(SS_EIO, "%s: not a tokenizer folder (no such directory)", dir);
    txtok *t = ss_calloc(1, sizeof *t);
    if (!t) return SS_ENOMEM;
    t->dir = strdup(dir);
    int rc;
    if (file_exists(p1) || file_exists(p2)) {
        t->kind = TXTOK_CLIP;
        rc = clip_bpe_open(&t->clip, dir);
    } else if (file_exists(p3)) {
        t->kind = TXTOK_T5;
        rc = t5_spm_open(&t->t5, dir);
    } else {
        char p4[4096];
        snprintf(p4, sizeof p4, "%s/tokenizer.json", dir);
        rc = file_exists(p4) ? ss_fail(SS_EFORMAT, "%s: only tokenizer.json (the fast tokenizer); sinkscope reads "
                                                   "vocab.json + merges.txt (CLIP) or spiece.model (T5)", p4)
                             : ss_fail(SS_EMISSING, "%s: unknown tokenizer: neither vocab.json + merges.txt nor "
                                                    "spiece.model", dir);
    }
    if (rc < 0) {
        txtok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void txtok_free(txtok *t) {
    if (!t) return;
    clip_bpe_free(t->clip);
    t5_spm_free(t->t5);
    free(t->dir);
    free(t);
}

txtok_kind txtok_get_kind(const txtok *t) { return t->kind; }
const char *txtok_dir(const txtok *t) { return t->dir; }

int txtok_vocab_size(const txtok *t) {
    return t->kind == TXTOK_CLIP ? clip_bpe_vocab_size(t->clip) : t5_spm_vocab_size(t->t5);
}

int txtok_model_max_length(const txtok *t) {
    return t->kind == TXTOK_CLIP ? clip_bpe_model_max_length(t->clip) : t5_spm_model_max_length(t->t5);
}

int txtok_encode(const txtok *t, const char *text, size_t len, int max_length, txtok_seq *s) {
    s->n = 0;
    return t->kind == TXTOK_CLIP ? clip_bpe_encode(t->clip, text, len, max_length, s)
                                 : t5_spm_encode(t->t5, text, len, max_length, s);
}
