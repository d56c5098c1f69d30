#include "sample/pipeline.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "io/jsonfile.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "text/tokenizer.h"

#define PATH_MAX_LEN 4096
#define PIPE_MAX_SIDE 16384 /* keeps 3*H*W and the token counts far from int overflow */

/* The component table of model_index.json: key, library, class. */
static const struct {
    const char *key, *lib, *cls;
} COMPONENTS[] = {
    {"transformer", "diffusers", "SD3Transformer2DModel"},
    {"text_encoder", "sinkscope", "WordEmbeddingTextEncoder"},
    {"tokenizer", "sinkscope", "WordTokenizer"},
    {"scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"},
};
#define N_COMPONENTS (sizeof COMPONENTS / sizeof COMPONENTS[0])

static int join(char *buf, const char *dir, const char *rel) {
    if ((size_t)snprintf(buf, PATH_MAX_LEN, "%s/%s", dir, rel) >= PATH_MAX_LEN)
        return ss_fail(SS_EARG, "pipeline folder path too long: %s", dir);
    return 0;
}

void pipe_params_default(pipe_params *p) {
    memset(p, 0, sizeof *p);
    p->steps = PIPE_DEFAULT_STEPS;
    p->cfg = PIPE_DEFAULT_CFG;
}

/* ---- model_index.json ---- */

static int check_index(const char *path) {
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc == SS_EIO) return ss_err_prefix(rc, "not a sinkscope pipeline folder? ");
    if (rc < 0) return rc;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    json_t *cls = json_object_get(root, "_class_name");
    if (!json_is_string(cls) || strcmp(json_string_value(cls), PIPE_CLASS_NAME)) {
        rc = ss_fail(SS_EFORMAT, "%s: field '_class_name' must be \"%s\"", path, PIPE_CLASS_NAME);
        goto done;
    }
    for (size_t i = 0; i < N_COMPONENTS; i++) {
        json_t *v = json_object_get(root, COMPONENTS[i].key);
        if (!v) {
            rc = ss_fail(SS_EMISSING, "%s: missing field '%s'", path, COMPONENTS[i].key);
            goto done;
        }
        json_t *lib = json_array_get(v, 0), *cl = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(lib) || !json_is_string(cl) ||
            strcmp(json_string_value(lib), COMPONENTS[i].lib) || strcmp(json_string_value(cl), COMPONENTS[i].cls)) {
            rc = ss_fail(SS_EFORMAT, "%s: field '%s' must be [\"%s\", \"%s\"]", path, COMPONENTS[i].key,
                         COMPONENTS[i].lib, COMPONENTS[i].cls);
            goto done;
        }
    }
    /* strict about everything else, so a folder for another pipeline class is not half-used */
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (key[0] == '_') continue;
        if (!strcmp(key, "vae")) {
            if (!json_is_null(v)) {
                rc = ss_fail(SS_EFORMAT, "%s: field 'vae' must be null (this pipeline samples in pixel space)", path);
                goto done;
            }
            continue;
        }
        int known = 0;
        for (size_t i = 0; i < N_COMPONENTS; i++) known |= !strcmp(key, COMPONENTS[i].key);
        if (!known) {
            rc = ss_fail(SS_EFORMAT, "%s: unknown field '%s'", path, key);
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

int pipe_write_index(const char *dir) {
    char path[PATH_MAX_LEN];
    int rc = join(path, dir, "model_index.json");
    if (rc < 0) return rc;
    json_t *o = json_object();
    json_object_set_new(o, "_class_name", json_string(PIPE_CLASS_NAME));
    json_object_set_new(o, "_sinkscope_version", json_string(SINKSCOPE_VERSION));
    for (size_t i = 0; i < N_COMPONENTS; i++)
        json_object_set_new(o, COMPONENTS[i].key, json_pack("[s, s]", COMPONENTS[i].lib, COMPONENTS[i].cls));
    json_object_set_new(o, "vae", json_null());
    return ss_json_save(path, o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}

/* ---- consistency ---- */

/* tpath / tepath: the two config files, named in the errors. */
static int check_consistent(const sd3_config *tc, const te_config *tec, const char *tpath, const char *tepath) {
    if (tc->in_channels != PIPE_CHANNELS || tc->out_channels != PIPE_CHANNELS)
        return ss_fail(SS_ESHAPE, "%s: in_channels %d / out_channels %d, but this pixel-space pipeline needs %d (RGB)",
                       tpath, tc->in_channels, tc->out_channels, PIPE_CHANNELS);
    if (tec->hidden_size != tc->joint_attention_dim)
        return ss_fail(SS_ESHAPE, "%s: hidden_size %d does not match joint_attention_dim %d in %s", tepath,
                       tec->hidden_size, tc->joint_attention_dim, tpath);
    if (tec->pooled_size != tc->pooled_projection_dim)
        return ss_fail(SS_ESHAPE, "%s: pooled_size %d does not match pooled_projection_dim %d in %s", tepath,
                       tec->pooled_size, tc->pooled_projection_dim, tpath);
    if (tc->sample_size % tc->patch_size || tc->sample_size / tc->patch_size > tc->pos_embed_max_size ||
        tc->sample_size > PIPE_MAX_SIDE)
        return ss_fail(SS_ESHAPE, "%s: sample_size %d must be a multiple of patch_size %d with at most pos_embed_max_size %d "
                       "patches per side (and <= %d)", tpath, tc->sample_size, tc->patch_size, tc->pos_embed_max_size,
                       PIPE_MAX_SIDE);
    return 0;
}

/* ---- load ---- */

int pipe_load(pipeline **out, const char *dir) {
    *out = NULL;
    char path[PATH_MAX_LEN], tpath[PATH_MAX_LEN], tepath[PATH_MAX_LEN];
    int rc;
    if ((rc = join(path, dir, "model_index.json")) < 0 || (rc = check_index(path)) < 0) return rc;
    pipeline *pp = ss_calloc(1, sizeof *pp);
    if (!pp) return SS_ENOMEM;
    if (!(pp->dir = strdup(dir))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = join(path, dir, "scheduler/scheduler_config.json")) < 0 || (rc = fm_config_load(&pp->scheduler, path)) < 0)
        goto fail;
    /* fm_init validates what the loader does not (e.g. num_train_timesteps) */
    fm_sched probe;
    if ((rc = fm_init(&probe, &pp->scheduler)) < 0) {
        ss_err_prefix(rc, "%s: ", path);
        goto fail;
    }
    if ((rc = te_load(&pp->text_encoder, dir)) < 0) goto fail;
    if ((rc = join(path, dir, "transformer")) < 0 || (rc = sd3_load(&pp->transformer, path)) < 0) goto fail;
    join(tpath, dir, "transformer/config.json");
    join(tepath, dir, "text_encoder/config.json");
    if ((rc = check_consistent(&pp->transformer->cfg, &pp->text_encoder->cfg, tpath, tepath)) < 0) goto fail;
    *out = pp;
    return 0;
fail:
    pipe_free(pp);
    return rc;
}

void pipe_free(pipeline *pp) {
    if (!pp) return;
    sd3_free(pp->transformer);
    te_free(pp->text_encoder);
    free(pp->dir);
    free(pp);
}

/* ---- sampling ---- */

int pipe_image_size(const pipeline *pp, const pipe_params *p, int *H, int *W) {
    const sd3_config *c = &pp->transformer->cfg;
    const int h = p->height ? p->height : c->sample_size, w = p->width ? p->width : c->sample_size;
    const int ps = c->patch_size, M = c->pos_embed_max_size;
    if (h < ps || w < ps || h % ps || w % ps || h > PIPE_MAX_SIDE || w > PIPE_MAX_SIDE)
        return ss_fail(SS_EARG, "image size %dx%d: height and width must be positive multiples of the patch size %d (at most %d)",
                       w, h, ps, PIPE_MAX_SIDE);
    if (h / ps > M || w / ps > M)
        return ss_fail(SS_EARG, "image size %dx%d: at most %d patches of %d pixels per side (pos_embed_max_size)", w, h, M, ps);
    *H = h;
    *W = w;
    return 0;
}

void pipe_decode(uint8_t *rgb, const float *sample, int H, int W) {
    const size_t plane = (size_t)H * W;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < PIPE_CHANNELS; c++) {
            float y = sample[(size_t)c * plane + i] / 2.0f + 0.5f;
            y = fminf(fmaxf(y, 0.0f), 1.0f); /* also maps NaN to 0 */
            rgb[i * PIPE_CHANNELS + c] = (uint8_t)nearbyintf(y * 255.0f); /* numpy round: half to even */
        }
}

int pipe_generate(const pipeline *pp, const pipe_params *p, uint8_t *rgb_out, sink_ctx *sk, float *final_sample) {
    return pipe_generate_ws(pp, p, rgb_out, sk, final_sample, NULL);
}

int pipe_generate_ws(const pipeline *pp, const pipe_params *p, uint8_t *rgb_out, sink_ctx *sk, float *final_sample,
                     sd3_workspace *ws) {
    if (!p->prompt) return ss_fail(SS_EARG, "generate: no prompt given");
    if (p->steps < 1 || p->steps > PIPE_MAX_STEPS)
        return ss_fail(SS_EARG, "generate: steps must be in [1, %d], got %d", PIPE_MAX_STEPS, p->steps);
    if (!isfinite(p->cfg)) return ss_fail(SS_EARG, "generate: the guidance scale must be finite");
    int H, W, rc;
    if ((rc = pipe_image_size(pp, p, &H, &W)) < 0) return rc;
    const sd3_model *tr = pp->transformer;
    const te_config *tc = &pp->text_encoder->cfg;
    const int S = tc->max_length, J = tc->hidden_size, P = tc->pooled_size, ps = tr->cfg.patch_size;
    const int guided = p->cfg > 1.0, B = guided ? 2 : 1;
    const size_t n = (size_t)PIPE_CHANNELS * H * W;

    float *x = ss_malloc(sizeof(float) * n), *xin = guided ? ss_malloc(sizeof(float) * n * 2) : x;
    float *v = ss_malloc(sizeof(float) * n * B), *ctx = ss_malloc(sizeof(float) * (size_t)B * S * J);
    float *pooled = ss_malloc(sizeof(float) * (size_t)B * P);
    fm_sched sched = {0};
    sd3_workspace *own = NULL; /* the workspace of this call when the caller gives none */
    if (!x || !xin || !v || !ctx || !pooled) {
        rc = SS_ENOMEM;
        goto done;
    }
    /* the transformer's working memory, sized once for every step */
    rc = ws ? sd3_workspace_reserve(ws, tr, B, H, W, S) : sd3_workspace_new(&own, tr, B, H, W, S);
    if (rc < 0) goto done;
    if (!ws) ws = own;
    /* batch order as diffusers: [uncond, cond] */
    if (guided && (rc = te_encode(pp->text_encoder, "", ctx, pooled)) < 0) goto done;
    if ((rc = te_encode(pp->text_encoder, p->prompt, ctx + (size_t)(B - 1) * S * J, pooled + (size_t)(B - 1) * P)) < 0)
        goto done;
    if (p->latents)
        memcpy(x, p->latents, sizeof(float) * n);
    else
        rng_normal_fill(x, n, p->seed, 0);
    if (p->latents_out) memcpy(p->latents_out, x, sizeof(float) * n);
    if ((rc = fm_init(&sched, &pp->scheduler)) < 0) goto done;
    double mu = 0;
    if (pp->scheduler.use_dynamic_shifting) mu = fm_calculate_shift(&pp->scheduler, (H / ps) * (W / ps));
    if ((rc = fm_set_timesteps(&sched, p->steps, NULL, pp->scheduler.use_dynamic_shifting ? &mu : NULL)) < 0) goto done;

    sd3_hooks hk;
    if (sk) hk = sink_ctx_hooks(sk);
    const float g = (float)p->cfg; /* torch casts the Python scalar to the tensor's fp32 */
    for (int i = 0; i < p->steps; i++) {
        if (sk) sink_ctx_set_step(sk, i, p->steps > 1 ? (double)i / (p->steps - 1) : 0.0);
        const float t[2] = {sched.timesteps[i], sched.timesteps[i]};
        if (guided) {
            memcpy(xin, x, sizeof(float) * n);
            memcpy(xin + n, x, sizeof(float) * n);
        }
        if ((rc = sd3_forward_ws(tr, ws, v, xin, ctx, pooled, t, B, H, W, S, sk ? &hk : NULL)) < 0) {
            ss_err_prefix(rc, "generate: denoising step %d of %d: ", i, p->steps);
            goto done;
        }
        if (guided) {
            /* v_u + g * (v_c - v_u), each operation rounded to fp32 like the torch expression */
            const float *vc = v + n;
            for (size_t j = 0; j < n; j++) {
                const float d = vc[j] - v[j], gd = g * d;
                v[j] = v[j] + gd;
            }
        }
        if ((rc = fm_step(&sched, i, x, v, n)) < 0) goto done;
        /* the model's output was finite (sd3_forward checks); the guidance or the step can still
         * overflow, and a non-finite sample must not be decoded into a plausible image */
        const long long bad = op_first_nonfinite(x, n);
        if (bad >= 0) {
            rc = ss_fail(SS_EFORMAT, "generate: denoising step %d of %d: the sample is %s at index %lld after the "
                         "update (guidance scale %g)", i, p->steps, isnan(x[bad]) ? "NaN" : "infinite", bad, p->cfg);
            goto done;
        }
        if (p->progress) p->progress(p->progress_ctx, i, p->steps, x);
    }
    pipe_decode(rgb_out, x, H, W);
    if (final_sample) memcpy(final_sample, x, sizeof(float) * n);
    rc = 0;
done:
    if (sk) sink_ctx_set_step(sk, 0, -1.0);
    sd3_workspace_free(own);
    fm_free(&sched);
    if (xin != x) free(xin);
    free(x);
    free(v);
    free(ctx);
    free(pooled);
    return rc;
}

/* ---- random pipeline folders ---- */


static int write_scheduler(const char *dir) {
    char path[PATH_MAX_LEN];
    int rc;
    if ((rc = join(path, dir, "scheduler")) < 0 || (rc = ss_mkdir_p(path)) < 0) return rc;
    if ((rc = join(path, dir, "scheduler/scheduler_config.json")) < 0) return rc;
    json_t *o = json_pack("{s:s, s:i, s:f}", "_class_name", "FlowMatchEulerDiscreteScheduler", "num_train_timesteps", 1000,
                          "shift", 3.0);
    return ss_json_save(path, o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
}

int pipe_init_random(const char *dir, const sd3_config *tcfg, const te_config *tecfg, const char *const *words,
                     uint64_t seed) {
    tok_vocab *voc = NULL;
    te *enc = NULL;
    char path[PATH_MAX_LEN];
    int rc = tok_vocab_from_words(&voc, words);
    if (rc < 0) return rc;
    te_config c = *tecfg;
    if (c.vocab_size == 0) c.vocab_size = tok_vocab_size(voc);
    if (c.vocab_size != tok_vocab_size(voc)) {
        rc = ss_fail(SS_EARG, "pipe_init_random: vocab_size %d, but <pad>, <eos> and the words make %d tokens", c.vocab_size,
                     tok_vocab_size(voc));
        goto done;
    }
    if ((rc = sd3_config_check(tcfg, "pipe_init_random: transformer config")) < 0 ||
        (rc = te_config_check(&c, "pipe_init_random: text encoder config")) < 0 ||
        (rc = check_consistent(tcfg, &c, "pipe_init_random: transformer config", "pipe_init_random: text encoder config")) < 0)
        goto done;
    if ((rc = ss_mkdir_p(dir)) < 0 || (rc = join(path, dir, "transformer")) < 0 ||
        (rc = sd3_init_random(tcfg, path, seed, ST_F32)) < 0)
        goto done;
    if ((rc = te_init_random(&enc, &c, seed)) < 0 || (rc = te_set_vocab(enc, voc)) < 0) goto done;
    voc = NULL; /* owned by enc now */
    if ((rc = te_save(enc, dir)) < 0 || (rc = write_scheduler(dir)) < 0) goto done;
    /* the index last: a folder is only a pipeline once everything else is in place */
    rc = pipe_write_index(dir);
done:
    te_free(enc);
    tok_vocab_free(voc);
    return rc;
}
