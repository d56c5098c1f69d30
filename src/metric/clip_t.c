/* clip_t: CLIP-T and CLIPScore (see clip_t.h). */
#include "metric/clip_t.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "metric/clip_vision.h"
#include "metric/imgproc.h"
#include "text/txenc.h"
#include "text/txtok.h"

struct clipt {
    clipv *vision;
    txenc *text;
    txtok *tok;
    int dim;
};

void clipt_free(clipt *m) {
    if (!m) return;
    clipv_free(m->vision);
    txenc_free(m->text);
    txtok_free(m->tok);
    free(m);
}

int clipt_open(clipt **out, const char *model_dir, const char *tokenizer_dir) {
    *out = NULL;
    clipt *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    int rc = clipv_open(&m->vision, model_dir);
    if (rc >= 0) rc = txenc_open(&m->text, model_dir);
    if (rc >= 0) rc = txtok_open(&m->tok, tokenizer_dir ? tokenizer_dir : model_dir);
    if (rc >= 0) rc = txenc_check_tokenizer(m->text, m->tok);
    if (rc >= 0) {
        const txenc_config *tc = txenc_get_config(m->text);
        const clipv_config *vc = clipv_get_config(m->vision);
        if (tc->kind != TXENC_CLIP)
            rc = ss_fail(SS_EFORMAT, "%s/config.json: not a CLIP model (the text tower is T5)", model_dir);
        else if (!tc->proj_dim)
            rc = ss_fail(SS_EMISSING, "%s: model.safetensors has no text_projection.weight (CLIP-T needs both projections)",
                         model_dir);
        else if (!vc->proj_dim)
            rc = ss_fail(SS_EMISSING, "%s: model.safetensors has no visual_projection.weight (CLIP-T needs both projections)",
                         model_dir);
        else if (tc->proj_dim != vc->proj_dim)
            rc = ss_fail(SS_ESHAPE, "%s: text_projection gives %d values but visual_projection %d", model_dir,
                         tc->proj_dim, vc->proj_dim);
        else if (tc->max_positions < CLIPT_CONTEXT)
            rc = ss_fail(SS_ESHAPE, "%s/config.json: max_position_embeddings %d is below CLIP's context of %d tokens",
                         model_dir, tc->max_positions, CLIPT_CONTEXT);
        else if (vc->channels != 3)
            rc = ss_fail(SS_EFORMAT, "%s/config.json: 'num_channels' %d: CLIP-T takes RGB images", model_dir, vc->channels);
        m->dim = tc->proj_dim;
    }
    if (rc < 0) {
        clipt_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int clipt_dim(const clipt *m) { return m->dim; }
int clipt_image_size(const clipt *m) { return clipv_get_config(m->vision)->image_size; }

static int normalise(float *e, int dim, const char *label) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)e[i] * e[i];
    if (!(ss > 0) || !isfinite(ss)) return ss_fail(SS_EFORMAT, "%s: the embedding has norm %g", label, sqrt(ss));
    double inv = 1.0 / sqrt(ss);
    for (int i = 0; i < dim; i++) e[i] = (float)(e[i] * inv);
    return 0;
}

int clipt_image_embed(const clipt *m, const uint8_t *rgb, int w, int h, float *emb, const char *label) {
    int S = clipt_image_size(m);
    float *px = ss_malloc((size_t)3 * S * S * sizeof *px);
    if (!px) return SS_ENOMEM;
    int rc = ip_clip_preprocess(rgb, w, h, S, IP_CLIP_MEAN, IP_CLIP_STD, px, NULL, label);
    if (rc >= 0) rc = clipv_run(m->vision, px, 1, emb, NULL, NULL);
    free(px);
    return rc < 0 ? rc : normalise(emb, m->dim, label);
}

typedef struct {
    float *emb;
    int dim, got;
} text_out;

static int take_text(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    text_out *o = ctx;
    if (strcmp(name, "text_embeds")) return 0;
    if (!is_f32 || ndim != 2 || shape[1] != o->dim) return ss_fail(SS_ESHAPE, "text_embeds: unexpected shape");
    memcpy(o->emb, data, (size_t)o->dim * sizeof *o->emb);
    o->got = 1;
    return 0;
}

int clipt_text_embed(const clipt *m, const char *prompt, size_t len, float *emb, const char *label) {
    txtok_seq s = {0};
    int rc = txtok_encode(m->tok, prompt, len, CLIPT_CONTEXT, &s);
    int64_t ids[CLIPT_CONTEXT], mask[CLIPT_CONTEXT];
    if (rc >= 0 && s.n != CLIPT_CONTEXT)
        rc = ss_fail(SS_ESHAPE, "%s: the tokenizer gave %d tokens, not %d", label, s.n, CLIPT_CONTEXT);
    if (rc >= 0) {
        for (int i = 0; i < CLIPT_CONTEXT; i++) ids[i] = s.ids[i], mask[i] = s.mask[i];
        text_out o = {emb, m->dim, 0};
        rc = txenc_run(m->text, ids, mask, 1, CLIPT_CONTEXT, label, take_text, &o);
        if (rc >= 0 && !o.got) rc = ss_fail(SS_EMISSING, "%s: the text tower gave no text_embeds", label);
    }
    txtok_seq_free(&s);
    return rc < 0 ? rc : normalise(emb, m->dim, label);
}

double clipt_cosine(const float *a, const float *b, int dim) {
    double d = 0;
    for (int i = 0; i < dim; i++) d += (double)a[i] * b[i];
    return d;
}

int clipt_score(const clipt *m, const uint8_t *rgb, int w, int h, const char *prompt, size_t len, double *cos,
                const char *label) {
    float *e = ss_malloc((size_t)2 * m->dim * sizeof *e);
    if (!e) return SS_ENOMEM;
    int rc = clipt_image_embed(m, rgb, w, h, e, label);
    if (rc >= 0) rc = clipt_text_embed(m, prompt, len, e + m->dim, label);
    if (rc >= 0) *cos = clipt_cosine(e, e + m->dim, m->dim);
    free(e);
    return rc;
}

double clipt_clip_score(double cos) {
    double s = 100.0 * cos;
    return s > 0 ? s : 0;
}
