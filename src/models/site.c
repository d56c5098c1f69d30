#include "models/site.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const KINDS[SS_SITE_NKIND] = {"joint", "attn2", "double", "single", "self", "cross"};

const char *ss_site_kind_name(ss_site_kind k) { return (unsigned)k < SS_SITE_NKIND ? KINDS[k] : "?"; }

static const char *const TOKS[SS_TOK_N] = {"image", "text", "word", "eos", "pad", "comma", "bos", "other"};

const char *ss_tok_name(ss_tok t) { return (unsigned)t < SS_TOK_N ? TOKS[t] : "?"; }

ss_tok ss_site_key_type(const ss_site *s, int b, int j) {
    if (s->key_type) return (ss_tok)s->key_type[(size_t)b * s->Tk + j];
    for (int i = 0; i < s->n_kspan; i++)
        if (j >= s->kspan[i].start && j < s->kspan[i].start + s->kspan[i].len) return s->kspan[i].type;
    return SS_TOK_OTHER;
}

void ss_site_set_hidden(ss_site *s, const float *x, size_t bstride, int dim, int ld) {
    s->hidden_dim = dim;
    s->hidden_ld = ld;
    for (int i = 0; i < s->n_kspan; i++) s->hidden[i] = (ss_rows){x + (size_t)s->kspan[i].start * ld, bstride};
}

const char *ss_site_code_name(int code, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%d", ss_site_kind_name(ss_site_code_kind(code)), ss_site_code_block(code));
    return buf;
}

int ss_site_code_parse(const char *name) {
    const char *dot = strchr(name, '.');
    if (!dot) return -1;
    for (int k = 0; k < SS_SITE_NKIND; k++) {
        size_t n = strlen(KINDS[k]);
        if ((size_t)(dot - name) != n || strncmp(name, KINDS[k], n)) continue;
        const char *p = dot + 1;
        if (*p < '0' || *p > '9' || (p[0] == '0' && p[1])) return -1;
        long v = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9') return -1;
            v = v * 10 + (*p - '0');
            if (v >= SS_SITE_MAX_BLOCKS) return -1;
        }
        return ss_site_code((ss_site_kind)k, (int)v);
    }
    return -1;
}

const ss_site *ss_site_find(const ss_site *sites, int n, int code) {
    for (int i = 0; i < n; i++)
        if (ss_site_code_of(&sites[i]) == code) return &sites[i];
    return NULL;
}

const char *ss_site_list(const ss_site *sites, int n, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < cap;) {
        int j = i; /* a run of consecutive blocks of one kind */
        while (j + 1 < n && sites[j + 1].kind == sites[i].kind && sites[j + 1].block == sites[j].block + 1) j++;
        const char *kn = ss_site_kind_name(sites[i].kind);
        if (j > i)
            k += (size_t)snprintf(buf + k, cap - k, "%s%s.%d-%d", k ? ", " : "", kn, sites[i].block, sites[j].block);
        else
            k += (size_t)snprintf(buf + k, cap - k, "%s%s.%d", k ? ", " : "", kn, sites[i].block);
        i = j + 1;
    }
    if (!n) snprintf(buf, cap, "(none)");
    return buf;
}

int ss_site_range(const ss_site *s, int keys, int want, int *lo, int *hi) {
    const int n = keys ? s->n_kspan : s->n_qspan;
    const ss_span *sp = keys ? s->kspan : s->qspan;
    int a = -1, b = -1;
    for (int i = 0; i < n; i++) {
        const int match = want == 2 || (want == 1) == ss_tok_is_text(sp[i].type);
        if (!match || !sp[i].len) continue;
        if (a < 0) a = sp[i].start;
        else if (sp[i].start != b) return -1;
        b = sp[i].start + sp[i].len;
    }
    *lo = a < 0 ? 0 : a;
    *hi = a < 0 ? 0 : b;
    return 0;
}
