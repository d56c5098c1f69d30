#include "text/encoder.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/jsonfile.h"
#include "core/rng.h"

static const char *const FIELDS[4] = {"vocab_size", "max_length", "hidden_size", "pooled_size"};

static int *field_ptr(te_config *c, int i) {
    int *p[4] = {&c->vocab_size, &c->max_length, &c->hidden_size, &c->pooled_size};
    return p[i];
}

int te_config_check(const te_config *c, const char *where) {
    te_config t = *c;
    for (int i = 0; i < 4; i++)
        if (*field_ptr(&t, i) < 1) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a positive integer", where, FIELDS[i]);
    if (c->vocab_size < 2)
        return ss_fail(SS_EFORMAT, "%s: field 'vocab_size' must be >= 2 (<pad> and <eos>)", where);
    if (c->pooled_size != c->hidden_size)
        return ss_fail(SS_EFORMAT, "%s: field 'pooled_size' (%d) must equal 'hidden_size' (%d)", where,
                       c->pooled_size, c->hidden_size);
    return 0;
}


int te_config_load(te_config *c, const char *path) {
    json_t *root = NULL;
    int err = ss_json_load(path, &root);
    if (err < 0) return err;
    int rc = 0;
    te_config t;
    if (!json_is_object(root)) rc = ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
    for (int i = 0; i < 4 && rc == 0; i++) {
        json_t *v = json_object_get(root, FIELDS[i]);
        if (!v) rc = ss_fail(SS_EMISSING, "%s: missing field '%s'", path, FIELDS[i]);
        else if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 0x7fffffff)
            rc = ss_fail(SS_EFORMAT, "%s: field '%s' must be a positive integer", path, FIELDS[i]);
        else *field_ptr(&t, i) = (int)json_integer_value(v);
    }
    json_decref(root);
    if (rc == 0) rc = te_config_check(&t, path);
    if (rc == 0) *c = t;
    return rc;
}

int te_config_save(const te_config *c, const char *path) {
    json_t *root = json_object();
    te_config t = *c;
    for (int i = 0; i < 4; i++) json_object_set_new(root, FIELDS[i], json_integer(*field_ptr(&t, i)));
    int bad = json_dump_file(root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return bad ? ss_fail(SS_EIO, "%s: cannot write config", path) : 0;
}

/* Allocates the struct and both embedding arrays (contents uninitialised). */
static int te_alloc(te **out, const te_config *c) {
    size_t nt, np;
    *out = NULL;
    if (ss_mul_size((size_t)c->vocab_size, (size_t)c->hidden_size, &nt) ||
        ss_mul_size((size_t)c->max_length, (size_t)c->hidden_size, &np) || ss_mul_size(nt, sizeof(float), &nt) ||
        ss_mul_size(np, sizeof(float), &np))
        return ss_fail(SS_ENOMEM, "text encoder: embedding size overflows");
    te *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    m->cfg = *c;
    m->tok_emb = ss_malloc(nt);
    m->pos_emb = ss_malloc(np);
    if (!m->tok_emb || !m->pos_emb) {
        te_free(m);
        return SS_ENOMEM;
    }
    *out = m;
    return 0;
}

int te_init_random(te **out, const te_config *c, uint64_t seed) {
    *out = NULL;
    int rc = te_config_check(c, "te_init_random");
    if (rc < 0 || (rc = te_alloc(out, c)) < 0) return rc;
    te *m = *out;
    size_t nt = (size_t)c->vocab_size * c->hidden_size, np = (size_t)c->max_length * c->hidden_size;
    rng_normal_fill(m->tok_emb, nt, seed, 0);
    rng_normal_fill(m->pos_emb, np, seed, 1);
    for (size_t i = 0; i < nt; i++) m->tok_emb[i] *= 0.02f;
    for (size_t i = 0; i < np; i++) m->pos_emb[i] *= 0.01f;
    return 0;
}

int te_set_vocab(te *m, tok_vocab *v) {
    if (tok_vocab_size(v) != m->cfg.vocab_size)
        return ss_fail(SS_ESHAPE, "%s has %d tokens but the text encoder's vocab_size is %d", tok_vocab_path(v),
                       tok_vocab_size(v), m->cfg.vocab_size);
    tok_vocab_free(m->vocab);
    m->vocab = v;
    return 0;
}

void te_free(te *m) {
    if (!m) return;
    free(m->tok_emb), free(m->pos_emb);
    tok_vocab_free(m->vocab);
    free(m);
}

int te_encode_ids(const te *m, const int32_t *ids, float *ehs, float *pooled) {
    const int S = m->cfg.max_length, J = m->cfg.hidden_size, V = m->cfg.vocab_size;
    for (int s = 0; s < S; s++)
        if (ids[s] < 0 || ids[s] >= V)
            return ss_fail(SS_EARG, "text encoder: token id %d at position %d outside 0..%d", (int)ids[s], s, V - 1);
    double *acc = ss_calloc((size_t)J, sizeof *acc);
    if (!acc) return SS_ENOMEM;
    int count = 0;
    for (int s = 0; s < S; s++) {
        const float *t = m->tok_emb + (size_t)ids[s] * J, *p = m->pos_emb + (size_t)s * J;
        float *o = ehs + (size_t)s * J;
        for (int j = 0; j < J; j++) o[j] = t[j] + p[j];
        if (ids[s] != TOK_PAD) {
            for (int j = 0; j < J; j++) acc[j] += t[j];
            count++;
        }
    }
    for (int j = 0; j < J; j++) pooled[j] = count ? (float)(acc[j] / count) : 0.0f;
    free(acc);
    return 0;
}

int te_encode(const te *m, const char *prompt, float *ehs, float *pooled) {
    if (!m->vocab) return ss_fail(SS_EMISSING, "text encoder: no vocabulary attached");
    int32_t *ids = ss_malloc((size_t)m->cfg.max_length * sizeof *ids);
    if (!ids) return SS_ENOMEM;
    int rc = tok_encode(m->vocab, prompt, m->cfg.max_length, ids);
    if (rc >= 0) rc = te_encode_ids(m, ids, ehs, pooled);
    free(ids);
    return rc < 0 ? rc : 0;
}
