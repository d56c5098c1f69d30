/* t5_spm: the T5 SentencePiece tokenizer (see t5_spm.h). */
#include "text/t5_spm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "text/spm_shim.h"

struct t5_spm {
    char *path; /* spiece.model */
    spm_shim *sp;
    txtok_specials specials;
    int32_t eos_id, pad_id, unk_id;
    int n_ids;
};

static int32_t piece_lookup(void *ctx, const char *s) {
    const t5_spm *t = ctx;
    int unk, eos, pad;
    spm_shim_special_ids(t->sp, &unk, &eos, &pad);
    int id = spm_shim_piece_to_id(t->sp, s, strlen(s));
    if (id != unk || !strcmp(s, "<unk>")) return id;
    /* T5Tokenizer's extra ids follow the pieces: <extra_id_k> = pieces + 99 - k. */
    int k, used = 0;
    if (sscanf(s, "<extra_id_%d>%n", &k, &used) == 1 && used == (int)strlen(s) && k >= 0 && k < 100)
        return spm_shim_piece_size(t->sp) + 99 - k;
    return -1;
}

void t5_spm_free(t5_spm *t) {
    if (!t) return;
    spm_shim_free(t->sp);
    txtok_specials_free(&t->specials);
    free(t->path);
    free(t);
}

int t5_spm_open(t5_spm **out, const char *dir) {
    *out = NULL;
    t5_spm *t = ss_calloc(1, sizeof *t);
    if (!t) return SS_ENOMEM;
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    t->path = strdup(path);
    struct stat st;
    int rc = 0;
    if (stat(path, &st) != 0) rc = ss_fail(SS_EIO, "%s: cannot open", path);
    else if (st.st_size == 0) rc = ss_fail(SS_EFORMAT, "%s: empty file, not a SentencePiece model", path);
    else if (spm_shim_load(&t->sp, path, err, sizeof err) < 0)
        rc = ss_fail(SS_EFORMAT, "%s: not a valid SentencePiece model (%s)", path, err);
    if (rc >= 0) {
        int n = spm_shim_piece_size(t->sp);
        t->n_ids = n;
        /* T5Tokenizer(extra_ids=100) defaults when the folder has no config files. */
        static const char *const DEF[4] = {NULL, "</s>", "<unk>", "<pad>"};
        rc = txtok_specials_load(&t->specials, dir, piece_lookup, t, DEF);
        char cfg[4096];
        snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
        if (rc >= 0 && stat(cfg, &st) != 0) {
            for (int k = 0; k < 100 && rc >= 0; k++) {
                char name[32];
                snprintf(name, sizeof name, "<extra_id_%d>", k);
                rc = txtok_specials_add(&t->specials, name, n + 99 - k, 1, 1);
            }
        }
        for (int i = 0; i < t->specials.n && rc >= 0; i++)
            if (t->specials.tok[i].id >= t->n_ids) t->n_ids = t->specials.tok[i].id + 1;
        const char *names[3] = {t->specials.eos, t->specials.pad, t->specials.unk};
        int32_t *ids[3] = {&t->eos_id, &t->pad_id, &t->unk_id};
        for (int r = 0; r < 3 && rc >= 0; r++) {
            const txtok_added *a = names[r] ? txtok_specials_find(&t->specials, names[r], strlen(names[r])) : NULL;
            if (!a)
                rc = ss_fail(SS_EFORMAT, "%s/tokenizer_config.json: no %s token", dir,
                             (const char *[]){"eos", "pad", "unk"}[r]);
            else
                *ids[r] = a->id;
        }
    }
    if (rc < 0) {
        t5_spm_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int t5_spm_vocab_size(const t5_spm *t) { return t->n_ids; }
int t5_spm_model_max_length(const t5_spm *t) { return t->specials.model_max_length; }

typedef struct {
    const t5_spm *t;
    txtok_seq *out;
} ctx_t;

static int on_piece(void *vc, const char *p, size_t n) {
    ctx_t *g = vc;
    const txtok_added *a = txtok_specials_find(&g->t->specials, p, n);
    if (a) return txtok_seq_push(g->out, a->id, a->id == g->t->eos_id ? TT_EOS : TT_SPECIAL);
    int id = spm_shim_piece_to_id(g->t->sp, p, n);
    const char *s = p;
    size_t k = n;
    while (k >= 3 && !memcmp(s, "\xe2\x96\x81", 3)) s += 3, k -= 3; /* U+2581 */
    return txtok_seq_push(g->out, id, txtok_surface_type(s, k));
}

static int on_segment(void *vc, const char *p, size_t n, const txtok_added *a) {
    ctx_t *g = vc;
    if (a) return txtok_seq_push(g->out, a->id, a->id == g->t->eos_id ? TT_EOS : TT_SPECIAL);
    char err[512] = "";
    int rc = spm_shim_encode(g->t->sp, p, n, on_piece, g, err, sizeof err);
    if (rc == -1 && err[0]) return ss_fail(SS_EFORMAT, "%s: cannot encode the prompt (%s)", g->t->path, err);
    return rc;
}

int t5_spm_encode(const t5_spm *t, const char *text, size_t len, int max_length, txtok_seq *s) {
    if (max_length > 0 && max_length < 1) return ss_fail(SS_EARG, "max_length %d is too short", max_length);
    txtok_seq body = {0};
    ctx_t g = {t, &body};
    int rc = txtok_split_specials(&t->specials, text, len, on_segment, &g);
    s->n = 0;
    int keep = body.n;
    if (max_length > 0 && keep + 1 > max_length) keep = max_length - 1;
    for (int i = 0; i < keep && rc >= 0; i++) rc = txtok_seq_push(s, body.ids[i], body.types[i]);
    if (rc >= 0 && (s->n == 0 || s->ids[s->n - 1] != t->eos_id)) rc = txtok_seq_push(s, t->eos_id, TT_EOS);
    while (rc >= 0 && max_length > 0 && s->n < max_length) rc = txtok_seq_push(s, t->pad_id, TT_PAD);
    txtok_seq_free(&body);
    return rc;
}
