/* te_load / te_save: the only part of the text encoder that needs safetensors. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "text/encoder.h"

#define TE_CONFIG "text_encoder/config.json"
#define TE_WEIGHTS "text_encoder/model.safetensors"
#define TE_VOCAB "tokenizer/vocab.txt"

typedef struct {
    char cfg[4096], weights[4096], vocab[4096];
} te_paths;

static int make_paths(te_paths *p, const char *dir) {
    /* the weights path is the longest of the three */
    if ((size_t)snprintf(p->weights, sizeof p->weights, "%s/%s", dir, TE_WEIGHTS) >= sizeof p->weights)
        return ss_fail(SS_EARG, "model folder path too long: %s", dir);
    snprintf(p->cfg, sizeof p->cfg, "%s/%s", dir, TE_CONFIG);
    snprintf(p->vocab, sizeof p->vocab, "%s/%s", dir, TE_VOCAB);
    return 0;
}

static int load_weights(te *m, const char *path) {
    st_set *s;
    int rc = st_set_open(&s, path);
    if (rc < 0) return rc;
    const int64_t tshape[2] = {m->cfg.vocab_size, m->cfg.hidden_size};
    const int64_t pshape[2] = {m->cfg.max_length, m->cfg.hidden_size};
    rc = st_load_f32(&m->tok_emb, s, TE_TOKEN_EMBEDDING, 2, tshape);
    if (rc >= 0) rc = st_load_f32(&m->pos_emb, s, TE_POSITION_EMBEDDING, 2, pshape);
    st_set_close(s);
    return rc < 0 ? rc : 0;
}

int te_load(te **out, const char *model_dir) {
    *out = NULL;
    te_paths p;
    te_config c;
    tok_vocab *v = NULL;
    int rc = make_paths(&p, model_dir);
    if (rc < 0 || (rc = te_config_load(&c, p.cfg)) < 0 || (rc = tok_vocab_load(&v, p.vocab)) < 0) return rc;
    if (tok_vocab_size(v) != c.vocab_size) {
        rc = ss_fail(SS_ESHAPE, "%s has %d tokens but %s says vocab_size %d", p.vocab, tok_vocab_size(v), p.cfg,
                     c.vocab_size);
        tok_vocab_free(v);
        return rc;
    }
    te *m = ss_calloc(1, sizeof *m);
    if (!m) {
        tok_vocab_free(v);
        return SS_ENOMEM;
    }
    m->cfg = c;
    m->vocab = v;
    if ((rc = load_weights(m, p.weights)) < 0) {
        te_free(m);
        return rc;
    }
    *out = m;
    return 0;
}


int te_save(const te *m, const char *model_dir) {
    te_paths p;
    char sub[4096];
    int rc = make_paths(&p, model_dir);
    if (rc < 0 || (rc = te_config_check(&m->cfg, "te_save")) < 0 || (rc = ss_mkdir_p(model_dir)) < 0) return rc;
    snprintf(sub, sizeof sub, "%s/text_encoder", model_dir);
    if ((rc = ss_mkdir_p(sub)) < 0 || (rc = te_config_save(&m->cfg, p.cfg)) < 0) return rc;
    st_writer *w = st_writer_new();
    if (!w) return SS_ENOMEM;
    const int64_t tshape[2] = {m->cfg.vocab_size, m->cfg.hidden_size};
    const int64_t pshape[2] = {m->cfg.max_length, m->cfg.hidden_size};
    if ((rc = st_writer_add_f32(w, TE_TOKEN_EMBEDDING, ST_F32, 2, tshape, m->tok_emb)) >= 0 &&
        (rc = st_writer_add_f32(w, TE_POSITION_EMBEDDING, ST_F32, 2, pshape, m->pos_emb)) >= 0)
        rc = st_writer_save(w, p.weights);
    st_writer_free(w);
    if (rc < 0 || !m->vocab) return rc < 0 ? rc : 0;
    snprintf(sub, sizeof sub, "%s/tokenizer", model_dir);
    if ((rc = ss_mkdir_p(sub)) < 0) return rc;
    return tok_vocab_save(m->vocab, p.vocab);
}
