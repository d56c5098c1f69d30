/* The training loop: data, rectified-flow objective, AdamW, EMA, schedules, checkpoints. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "train/train.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

#define CKPT_FORMAT "sinkscope-train-1"
#define CAPTION_MAX 512
/* Philox streams of the run's seed; counter = sample number (see train.h) */
#define STREAM_NOISE 11
#define STREAM_TIME 12
#define STREAM_DROP 13

void tr_opts_default(tr_opts *o) {
    *o = (tr_opts){.steps = 30000, .batch = 32, .lr = 1e-3, .min_lr = 1e-4, .warmup = 500,
                   .schedule = TR_SCHED_COSINE, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.01,
                   .clip = 1.0, .ema_decay = 0.999, .cfg_drop = 0.1, .logit_mean = 0.0, .logit_std = 1.0,
                   .sample_shift = 1.0, .seed = 0, .log_every = 50, .save_every = 1000, .init = 1};
}

void tr_arch_default(tr_arch *a) {
    memset(a, 0, sizeof *a);
    sd3_config *c = &a->sd3;
    c->sample_size = 32, c->patch_size = 4, c->in_channels = 3, c->out_channels = 3;
    c->num_layers = 6, c->num_heads = 2, c->head_dim = 64, c->qk_norm = 0;
    a->te = (te_config){.vocab_size = 2, .max_length = 16, .hidden_size = 64, .pooled_size = 64};
    tr_arch_check(a);
}

int tr_arch_check(tr_arch *a) {
    sd3_config *c = &a->sd3;
    te_config *t = &a->te;
    if (c->patch_size < 1 || c->sample_size < c->patch_size || c->sample_size % c->patch_size)
        return ss_fail(SS_EARG, "trainer: image size %d must be a positive multiple of the patch size %d", c->sample_size,
                       c->patch_size);
    if (c->num_layers < 1 || c->num_layers > SD3_MAX_LAYERS || c->num_heads < 1 || c->head_dim < 1 ||
        (long)c->num_heads * c->head_dim > 8192)
        return ss_fail(SS_EARG, "trainer: layers %d, heads %d, head_dim %d out of range", c->num_layers, c->num_heads,
                       c->head_dim);
    if ((c->num_heads * c->head_dim) % 4)
        return ss_fail(SS_EARG, "trainer: the hidden size (heads x head_dim = %d) must be a multiple of 4 (sin-cos table)",
                       c->num_heads * c->head_dim);
    if (c->in_channels < 1 || c->out_channels != c->in_channels)
        return ss_fail(SS_EARG, "trainer: in_channels %d and out_channels %d must be equal and positive", c->in_channels,
                       c->out_channels);
    for (int i = c->num_layers; i < SD3_MAX_LAYERS; i++)
        if (c->dual[i]) return ss_fail(SS_EARG, "trainer: dual attention layer %d is past the %d layers", i, c->num_layers);
    if (c->qk_norm != 0 && c->qk_norm != 1) return ss_fail(SS_EARG, "trainer: qk_norm must be none or rms_norm");
    if (t->max_length < 2 || t->hidden_size < 1 || t->max_length > 4096 || t->hidden_size > 8192)
        return ss_fail(SS_EARG, "trainer: text length %d (>= 2) or width %d out of range", t->max_length, t->hidden_size);
    t->pooled_size = t->hidden_size;
    c->caption_projection_dim = c->num_heads * c->head_dim;
    c->joint_attention_dim = c->pooled_projection_dim = t->hidden_size;
    c->pos_embed_max_size = c->sample_size / c->patch_size;
    return 0;
}

double tr_lr_at(const tr_opts *o, long s) {
    if (s < o->warmup) return o->lr * (double)(s + 1) / (double)o->warmup;
    if (o->schedule == TR_SCHED_CONSTANT || o->steps <= o->warmup) return o->lr;
    double f = (double)(s - o->warmup) / (double)(o->steps - o->warmup);
    if (f > 1) f = 1;
    return o->min_lr + 0.5 * (o->lr - o->min_lr) * (1 + cos(M_PI * f));
}

double tr_sgemm_gflops(int n, double seconds) {
    float *a = malloc(sizeof(float) * 3 * (size_t)n * n);
    if (!a) return 0;
    float *b = a + (size_t)n * n, *c = b + (size_t)n * n;
    for (size_t i = 0; i < 2 * (size_t)n * n; i++) a[i] = (float)(i % 17) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n); /* warm-up */
    const double t0 = omp_get_wtime();
    long it = 0;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        it++;
    } while (omp_get_wtime() - t0 < seconds);
    const double g = 2.0 * n * n * (double)n * it / (omp_get_wtime() - t0) / 1e9;
    free(a);
    return g;
}

/* ---- trainer ---- */

static int alloc_state(tr_trainer *t) {
    const tr_model *m = t->m;
    const size_t n = (size_t)t->opts.batch * m->cfg.in_channels * m->cfg.sample_size * m->cfg.sample_size;
    t->ema = ss_malloc(sizeof(float) * m->n);
    t->adam_m = ss_calloc(m->n, sizeof(float));
    t->adam_v = ss_calloc(m->n, sizeof(float));
    t->x0 = ss_malloc(sizeof(float) * n);
    t->noise = ss_malloc(sizeof(float) * n);
    t->sigma = ss_malloc(sizeof(float) * t->opts.batch);
    t->ids = ss_malloc(sizeof(int32_t) * t->opts.batch * m->tcfg.max_length);
    t->empty_ids = ss_malloc(sizeof(int32_t) * m->tcfg.max_length);
    if (!t->ema || !t->adam_m || !t->adam_v || !t->x0 || !t->noise || !t->sigma || !t->ids || !t->empty_ids) return SS_ENOMEM;
    memcpy(t->ema, m->param, sizeof(float) * m->n);
    return tok_encode(t->vocab, "", m->tcfg.max_length, t->empty_ids) < 0 ? SS_EARG : 0;
}

static int check_opts(const tr_opts *o) {
    if (o->steps < 0 || o->batch < 1 || o->batch > 65536 || !(o->lr > 0) || o->min_lr < 0 || o->warmup < 0 ||
        !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0) || o->weight_decay < 0 ||
        o->clip < 0 || !(o->ema_decay >= 0 && o->ema_decay < 1) || !(o->cfg_drop >= 0 && o->cfg_drop <= 1) ||
        !(o->logit_std >= 0) || !(o->sample_shift > 0) || o->log_every < 0 || o->save_every < 0 ||
        (o->schedule != TR_SCHED_CONSTANT && o->schedule != TR_SCHED_COSINE))
        return ss_fail(SS_EARG, "trainer: an optimizer or schedule setting is out of range");
    return 0;
}

int tr_trainer_new(tr_trainer **out, const tr_arch *a, const tr_opts *o, const tr_data *d) {
    *out = NULL;
    int rc = check_opts(o);
    if (rc < 0) return rc;
    tr_trainer *t = ss_calloc(1, sizeof *t);
    if (!t) return SS_ENOMEM;
    t->arch = *a;
    t->opts = *o;
    t->data = *d;
    t->saved_step = t->exported_step = -1;
    if ((rc = tok_vocab_from_words(&t->vocab, d->words)) < 0) goto fail;
    t->arch.te.vocab_size = tok_vocab_size(t->vocab);
    if ((rc = tr_arch_check(&t->arch)) < 0) goto fail;
    if (d->width != t->arch.sd3.sample_size || d->height != t->arch.sd3.sample_size) {
        rc = ss_fail(SS_EARG, "trainer: the data is %dx%d but the model's image size is %d", d->width, d->height,
                     t->arch.sd3.sample_size);
        goto fail;
    }
    if ((rc = tr_model_new(&t->m, &t->arch.sd3, &t->arch.te, o->seed, o->init)) < 0 ||
        (rc = tr_ws_new(&t->w, t->m, o->batch)) < 0 || (rc = alloc_state(t)) < 0)
        goto fail;
    *out = t;
    return 0;
fail:
    tr_trainer_free(t);
    return rc;
}

void tr_trainer_free(tr_trainer *t) {
    if (!t) return;
    tr_model_free(t->m);
    tr_ws_free(t->w);
    tok_vocab_free(t->vocab);
    free(t->ema), free(t->adam_m), free(t->adam_v), free(t->x0), free(t->noise), free(t->sigma), free(t->ids);
    free(t->empty_ids);
    free(t);
}

/* Batch of samples [samples, samples + B): images, captions (or the empty one), noise, sigmas. */
static int load_batch(tr_trainer *t) {
    const tr_model *m = t->m;
    const int B = t->opts.batch, C = m->cfg.in_channels, W = m->cfg.sample_size, S = m->tcfg.max_length;
    const size_t n = (size_t)C * W * W;
    const uint64_t seed = t->opts.seed;
    int rc = 0;
    char err[256] = "";
#pragma omp parallel for schedule(dynamic) if (t->data.parallel && B > 1)
    for (int b = 0; b < B; b++) {
        const uint64_t idx = t->samples + (uint64_t)b;
        uint8_t *rgb = malloc((size_t)W * W * 3);
        char cap[CAPTION_MAX];
        int r = rgb ? t->data.fn(t->data.ctx, idx, rgb, cap, sizeof cap) : SS_ENOMEM;
        if (r >= 0) {
            float *x = t->x0 + b * n;
            for (int c = 0; c < C; c++) /* [y][x][c] bytes -> [c][y][x] in [-1, 1] */
                for (int p = 0; p < W * W; p++) x[(size_t)c * W * W + p] = rgb[(size_t)p * 3 + (c < 3 ? c : 2)] / 127.5f - 1.0f;
            const double u = (double)(rng_uniform_u64(seed, STREAM_DROP, idx) >> 11) * 0x1.0p-53;
            if (u < t->opts.cfg_drop) memcpy(t->ids + (size_t)b * S, t->empty_ids, sizeof(int32_t) * S);
            else if (tok_encode(t->vocab, cap, S, t->ids + (size_t)b * S) < 0) r = SS_EARG;
            float z;
            rng_normal_fill_at(&z, 1, seed, STREAM_TIME, idx);
            t->sigma[b] = (float)(1.0 / (1.0 + exp(-(t->opts.logit_mean + t->opts.logit_std * z))));
            rng_normal_fill_at(t->noise + b * n, n, seed, STREAM_NOISE, idx * n);
        }
        free(rgb);
        if (r < 0) {
#pragma omp critical(tr_batch_err)
            if (!rc) {
                rc = r;
                snprintf(err, sizeof err, "sample %llu: %s", (unsigned long long)idx, ss_err());
            }
        }
    }
    if (rc < 0) return ss_fail(rc, "trainer: data %s", err);
    return 0;
}

/* Sum of squares of the gradient arena in fixed chunks: independent of the thread count. */
static double grad_norm(const tr_model *m) {
    enum { CH = 64 };
    double part[CH];
    const size_t step = (m->n + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (m->n > 65536)
    for (int c = 0; c < CH; c++) {
        double s = 0;
        const size_t lo = (size_t)c * step, hi = lo + step < m->n ? lo + step : m->n;
        for (size_t i = lo; i < hi; i++) s += (double)m->grad[i] * m->grad[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < CH; c++) s += part[c];
    return sqrt(s);
}

int tr_trainer_step(tr_trainer *t) {
    const double t0 = omp_get_wtime();
    tr_model *m = t->m;
    const tr_opts *o = &t->opts;
    int rc = load_batch(t);
    if (rc < 0) return rc;
    const double loss = tr_loss_grad(m, t->w, t->x0, t->noise, t->sigma, t->ids, o->batch, 1);
    if (loss < 0) return ss_err_prefix((int)loss, "step %ld: ", t->step);
    if (!isfinite(loss)) return ss_fail(SS_EARG, "trainer: the loss is %g at step %ld (lower the learning rate?)", loss, t->step);
    const double gn = grad_norm(m);
    const float gscale = (float)(o->clip > 0 && gn > o->clip ? o->clip / gn : 1.0);
    /* AdamW (decoupled weight decay, bias-corrected moments) */
    const double lr = tr_lr_at(o, t->step), tstep = (double)(t->step + 1);
    const float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    const float c1 = (float)(1.0 / (1.0 - pow(o->beta1, tstep))), c2 = (float)(1.0 / (1.0 - pow(o->beta2, tstep)));
    const float flr = (float)lr;
    const double ed = fmin(o->ema_decay, (1.0 + t->step) / (10.0 + t->step));
    const float fe = (float)ed;
    for (int i = 0; i < m->nt; i++) {
        const tr_tensor *tt = &m->t[i];
        const float wd = tt->decay ? (float)(lr * o->weight_decay) : 0.0f;
        float *p = m->param + tt->off, *g = m->grad + tt->off, *mm = t->adam_m + tt->off, *vv = t->adam_v + tt->off;
        float *e = t->ema + tt->off;
        const long n = (long)tt->n;
#pragma omp parallel for simd schedule(static) if (n > 16384)
        for (long j = 0; j < n; j++) {
            const float gj = g[j] * gscale;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
            p[j] -= flr * (mm[j] * c1) / (sqrtf(vv[j] * c2) + eps) + wd * p[j];
            e[j] = fe * e[j] + (1.0f - fe) * p[j];
        }
    }
    t->last_loss = loss;
    t->last_gnorm = gn;
    t->loss_ema = t->step == 0 ? loss : 0.98 * t->loss_ema + 0.02 * loss;
    t->step++;
    t->samples += (uint64_t)o->batch;
    t->wall += omp_get_wtime() - t0;
    return 0;
}

/* ---- checkpoints ---- */

static json_t *arch_json(const tr_arch *a) {
    const sd3_config *c = &a->sd3;
    json_t *j = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "sample_size", c->sample_size,
                     "patch_size", c->patch_size, "in_channels", c->in_channels, "out_channels", c->out_channels,
                     "num_layers", c->num_layers, "num_heads", c->num_heads, "head_dim", c->head_dim, "qk_norm",
                     c->qk_norm, "vocab_size", a->te.vocab_size, "text_len", a->te.max_length, "text_dim",
                     a->te.hidden_size);
    json_t *dual = NULL; /* only with dual-attention (SD3.5 attn2) blocks: other checkpoints keep their bytes */
    for (int i = 0; i < c->num_layers; i++)
        if (c->dual[i]) {
            if (!dual) dual = json_array();
            json_array_append_new(dual, json_integer(i));
        }
    if (j && dual) json_object_set_new(j, "dual_attention_layers", dual);
    else json_decref(dual);
    return j;
}

static json_t *opts_json(const tr_opts *o) {
    json_t *j = json_object();
    json_object_set_new(j, "steps", json_integer(o->steps));
    json_object_set_new(j, "batch", json_integer(o->batch));
    json_object_set_new(j, "lr", json_real(o->lr));
    json_object_set_new(j, "min_lr", json_real(o->min_lr));
    json_object_set_new(j, "warmup", json_integer(o->warmup));
    json_object_set_new(j, "schedule", json_string(o->schedule == TR_SCHED_COSINE ? "cosine" : "constant"));
    json_object_set_new(j, "beta1", json_real(o->beta1));
    json_object_set_new(j, "beta2", json_real(o->beta2));
    json_object_set_new(j, "eps", json_real(o->eps));
    json_object_set_new(j, "weight_decay", json_real(o->weight_decay));
    json_object_set_new(j, "clip", json_real(o->clip));
    json_object_set_new(j, "ema_decay", json_real(o->ema_decay));
    json_object_set_new(j, "cfg_drop", json_real(o->cfg_drop));
    json_object_set_new(j, "logit_mean", json_real(o->logit_mean));
    json_object_set_new(j, "logit_std", json_real(o->logit_std));
    json_object_set_new(j, "sample_shift", json_real(o->sample_shift));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(j, "log_every", json_integer(o->log_every));
    json_object_set_new(j, "save_every", json_integer(o->save_every));
    json_object_set_new(j, "init", json_integer(o->init));
    return j;
}

static int set_json_meta(st_writer *w, const char *key, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (!s) return SS_ENOMEM;
    int rc = st_writer_set_metadata(w, key, s);
    free(s);
    return rc;
}

int tr_trainer_save(const tr_trainer *t, const char *path) {
    const tr_model *m = t->m;
    st_writer *w = st_writer_new();
    if (!w) return SS_ENOMEM;
    static const char *const kinds[4] = {"param", "ema", "adam_m", "adam_v"};
    const float *arenas[4] = {m->param, t->ema, t->adam_m, t->adam_v};
    char name[200], num[64];
    int rc = 0;
    for (int k = 0; k < 4 && rc >= 0; k++)
        for (int i = 0; i < m->nt && rc >= 0; i++) {
            snprintf(name, sizeof name, "%s/%s", kinds[k], m->t[i].name);
            rc = st_writer_add_f32(w, name, ST_F32, m->t[i].ndim, m->t[i].shape, arenas[k] + m->t[i].off);
        }
    if (rc >= 0) rc = st_writer_set_metadata(w, "format", CKPT_FORMAT);
    snprintf(num, sizeof num, "%ld", t->step);
    if (rc >= 0) rc = st_writer_set_metadata(w, "step", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)t->samples);
    if (rc >= 0) rc = st_writer_set_metadata(w, "samples", num);
    snprintf(num, sizeof num, "%a", t->loss_ema); /* hex float: exact */
    if (rc >= 0) rc = st_writer_set_metadata(w, "loss_ema", num);
    snprintf(num, sizeof num, "%d", omp_get_max_threads());
    if (rc >= 0) rc = st_writer_set_metadata(w, "threads", num);
    if (rc >= 0) rc = st_writer_set_metadata(w, "data", t->data.name ? t->data.name : "");
    if (rc >= 0) rc = set_json_meta(w, "arch", arch_json(&t->arch));
    if (rc >= 0) rc = set_json_meta(w, "opts", opts_json(&t->opts));
    if (rc >= 0) {
        json_t *words = json_array();
        for (int i = 0; i < tok_vocab_size(t->vocab); i++) json_array_append_new(words, json_string(tok_vocab_word(t->vocab, i)));
        rc = set_json_meta(w, "vocab", words);
    }
    if (rc >= 0) rc = st_writer_save(w, path); /* the one atomic writer: unique tmp, fsync, rename, folder fsync */
    st_writer_free(w);
    return rc < 0 ? rc : 0;
}

static int jint(json_t *o, const char *k, long *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) return -1;
    *out = (long)json_integer_value(v);
    return 0;
}

static int jnum(json_t *o, const char *k, double *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

static int parse_meta(const st_file *f, const char *path, tr_arch *a, tr_opts *o) {
    const char *fmt = st_metadata(f, "format"), *as = st_metadata(f, "arch"), *os = st_metadata(f, "opts");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) || !as || !os)
        return ss_fail(SS_EFORMAT, "%s: not a sinkscope training checkpoint (format %s)", path, fmt ? fmt : "missing");
    json_t *ja = json_loads(as, 0, NULL), *jo = json_loads(os, 0, NULL);
    long v[11];
    static const char *const ak[11] = {"sample_size", "patch_size", "in_channels", "out_channels", "num_layers", "num_heads",
                                       "head_dim", "qk_norm", "vocab_size", "text_len", "text_dim"};
    int bad = !ja || !jo;
    for (int i = 0; i < 11 && !bad; i++) bad = jint(ja, ak[i], &v[i]) || v[i] < 0 || v[i] > (1L << 24);
    if (!bad) {
        memset(a, 0, sizeof *a);
        a->sd3.sample_size = (int)v[0], a->sd3.patch_size = (int)v[1], a->sd3.in_channels = (int)v[2];
        a->sd3.out_channels = (int)v[3], a->sd3.num_layers = (int)v[4], a->sd3.num_heads = (int)v[5];
        a->sd3.head_dim = (int)v[6], a->sd3.qk_norm = (int)v[7];
        json_t *dual = json_object_get(ja, "dual_attention_layers"), *e;
        size_t k;
        int bad_dual = dual && !json_is_array(dual);
        json_array_foreach(dual, k, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= v[4] ||
                json_integer_value(e) >= SD3_MAX_LAYERS) {
                bad_dual = 1;
                break;
            }
            a->sd3.dual[json_integer_value(e)] = 1;
        }
        a->te = (te_config){(int)v[8], (int)v[9], (int)v[10], (int)v[10]};
        long l = 0;
        tr_opts_default(o);
        const char *sch = json_string_value(json_object_get(jo, "schedule"));
        bad = jint(jo, "steps", &o->steps) || jint(jo, "batch", &l) || jnum(jo, "lr", &o->lr) || jnum(jo, "min_lr", &o->min_lr) ||
              jint(jo, "warmup", &o->warmup) || !sch || jnum(jo, "beta1", &o->beta1) || jnum(jo, "beta2", &o->beta2) ||
              jnum(jo, "eps", &o->eps) || jnum(jo, "weight_decay", &o->weight_decay) || jnum(jo, "clip", &o->clip) ||
              jnum(jo, "ema_decay", &o->ema_decay) || jnum(jo, "cfg_drop", &o->cfg_drop) ||
              jnum(jo, "logit_mean", &o->logit_mean) || jnum(jo, "logit_std", &o->logit_std) ||
              jnum(jo, "sample_shift", &o->sample_shift) || jint(jo, "log_every", &o->log_every) ||
              jint(jo, "save_every", &o->save_every);
        o->batch = (int)l;
        o->schedule = sch && !strcmp(sch, "constant") ? TR_SCHED_CONSTANT : TR_SCHED_COSINE;
        json_t *sd = json_object_get(jo, "seed");
        bad = bad || !json_is_integer(sd) || jint(jo, "init", &l);
        if (!bad) o->seed = (uint64_t)json_integer_value(sd), o->init = (int)l;
        bad = bad || bad_dual;
    }
    json_decref(ja);
    json_decref(jo);
    if (bad) return ss_fail(SS_EFORMAT, "%s: malformed 'arch' or 'opts' metadata", path);
    return 0;
}

int tr_checkpoint_info(const char *path, tr_arch *a, tr_opts *o, char *data_name, size_t cap) {
    st_file *f = NULL;
    tr_arch ta;
    tr_opts to;
    int rc = st_open(&f, path);
    if (rc < 0 || (rc = parse_meta(f, path, &ta, &to)) < 0) {
        st_close(f);
        return rc;
    }
    if (a) *a = ta;
    if (o) *o = to;
    const char *dn = st_metadata(f, "data");
    if (data_name && cap && (size_t)snprintf(data_name, cap, "%s", dn ? dn : "") >= cap) {
        rc = ss_fail(SS_EFORMAT, "%s: the 'data' metadata is longer than %zu bytes", path, cap - 1);
        st_close(f);
        return rc;
    }
    st_close(f);
    return 0;
}

int tr_trainer_resume(tr_trainer **out, const char *path, const tr_opts *ov, const tr_data *d) {
    *out = NULL;
    st_file *f = NULL;
    tr_trainer *t = NULL;
    tr_arch a;
    tr_opts o;
    int rc = st_open(&f, path);
    if (rc < 0 || (rc = parse_meta(f, path, &a, &o)) < 0) goto done;
    if (ov) o.steps = ov->steps, o.log_every = ov->log_every, o.save_every = ov->save_every;
    const char *dn = st_metadata(f, "data");
    if (!dn || strcmp(dn, d->name ? d->name : "")) {
        rc = ss_fail(SS_EARG, "%s: trained on data '%s', resumed with '%s'", path, dn ? dn : "?", d->name ? d->name : "");
        goto done;
    }
    if ((rc = tr_trainer_new(&t, &a, &o, d)) < 0) goto done;
    /* the vocabulary must be the same list in the same order (token ids index the embeddings) */
    json_t *words = json_loads(st_metadata(f, "vocab") ? st_metadata(f, "vocab") : "", 0, NULL);
    int same = json_is_array(words) && (int)json_array_size(words) == tok_vocab_size(t->vocab);
    for (int i = 0; same && i < tok_vocab_size(t->vocab); i++) {
        const char *w = json_string_value(json_array_get(words, i));
        same = w && !strcmp(w, tok_vocab_word(t->vocab, i));
    }
    json_decref(words);
    if (!same) {
        rc = ss_fail(SS_EARG, "%s: the data's vocabulary differs from the checkpoint's", path);
        goto done;
    }
    static const char *const kinds[4] = {"param", "ema", "adam_m", "adam_v"};
    float *arenas[4] = {t->m->param, t->ema, t->adam_m, t->adam_v};
    char name[200];
    for (int k = 0; k < 4 && rc >= 0; k++)
        for (int i = 0; i < t->m->nt && rc >= 0; i++) {
            const tr_tensor *tt = &t->m->t[i];
            snprintf(name, sizeof name, "%s/%s", kinds[k], tt->name);
            const st_tensor *s = st_find(f, name);
            int ok = s && s->dtype == ST_F32 && s->ndim == tt->ndim;
            for (int j = 0; ok && j < tt->ndim; j++) ok = s->shape[j] == tt->shape[j];
            if (!ok) rc = ss_fail(SS_EFORMAT, "%s: tensor '%s' missing or of the wrong shape", path, name);
            else rc = st_to_f32(arenas[k] + tt->off, s);
        }
    if (rc < 0) goto done;
    const char *st = st_metadata(f, "step"), *sm = st_metadata(f, "samples"), *le = st_metadata(f, "loss_ema");
    if (!st || !sm || !le) {
        rc = ss_fail(SS_EFORMAT, "%s: missing step/samples/loss_ema metadata", path);
        goto done;
    }
    char *e1, *e2, *e3;
    errno = 0;
    t->step = strtol(st, &e1, 10);
    t->samples = strtoull(sm, &e2, 10);
    t->loss_ema = strtod(le, &e3);
    if (errno || e1 == st || *e1 || t->step < 0 || e2 == sm || *e2 || *sm == '-' || e3 == le || *e3) {
        rc = ss_fail(SS_EFORMAT, "%s: malformed step/samples/loss_ema metadata ('%s', '%s', '%s')", path, st, sm, le);
        goto done;
    }
    if (t->samples != (uint64_t)t->step * (uint64_t)t->opts.batch) {
        rc = ss_fail(SS_EFORMAT, "%s: samples %s is not step %ld x batch %d", path, sm, t->step, t->opts.batch);
        goto done;
    }
    t->saved_step = t->step;
    const char *th = st_metadata(f, "threads");
    if (th && atoi(th) != omp_get_max_threads())
        fprintf(stderr, "sinkscope train: note: the checkpoint was written with %s threads, this run has %d; "
                "the continuation is exact only with the same thread count\n", th, omp_get_max_threads());
done:
    st_close(f);
    if (rc < 0) {
        tr_trainer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- the loop ---- */

static void fmt_time(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

static int export_model(tr_trainer *t, const char *dir) {
    char *path = malloc(strlen(dir) + 8);
    if (!path) return ss_fail(SS_ENOMEM, "out of memory");
    sprintf(path, "%s/model", dir);
    const int rc = tr_model_save(t->m, t->ema, t->vocab, t->opts.sample_shift, path);
    free(path);
    if (rc >= 0) t->exported_step = t->step;
    return rc;
}

/* DIR/checkpoint.safetensors, then DIR/model from the same state */
static int checkpoint(tr_trainer *t, const char *dir) {
    char *path = malloc(strlen(dir) + 32);
    if (!path) return ss_fail(SS_ENOMEM, "out of memory");
    sprintf(path, "%s/checkpoint.safetensors", dir);
    const int rc = tr_trainer_save(t, path);
    free(path);
    if (rc < 0) return rc;
    t->saved_step = t->step;
    return export_model(t, dir);
}

int tr_trainer_run(tr_trainer *t, const char *dir) {
    int mk = ss_mkdir_p(dir); /* parents too: `make model` on a fresh clone has no out/ yet */
    if (mk < 0) return mk;
    const tr_opts *o = &t->opts;
    const double flops = tr_step_flops(t->m, o->batch);
    const double w0 = t->wall;
    const long s0 = t->step;
    int rc = 0, stopped = 0;
    while (t->step < o->steps) {
        if (t->stop && *t->stop) {
            stopped = 1;
            break;
        }
        if ((rc = tr_trainer_step(t)) < 0) return rc;
        const int last = t->step == o->steps;
        if (o->log_every && (t->step % o->log_every == 0 || last)) {
            const double dt = t->wall - w0, sps = (double)(t->step - s0) * o->batch / dt;
            char eta[32];
            fmt_time(eta, sizeof eta, (double)(o->steps - t->step) * o->batch / sps);
            fprintf(stderr, "step %ld/%ld  loss %.4f (avg %.4f)  |g| %.3f  lr %.2e  %.1f samples/s  %.1f GFLOP/s  ETA %s\n",
                    t->step, o->steps, t->last_loss, t->loss_ema, t->last_gnorm, tr_lr_at(o, t->step - 1), sps,
                    flops * (t->step - s0) / dt / 1e9, eta);
        }
        if ((o->save_every && t->step % o->save_every == 0) || last) {
            if ((rc = checkpoint(t, dir)) < 0) return rc;
        }
    }
    /* The state on disk is this step's: a new checkpoint (and model) when the step moved on
     * since the last one (or none was ever written: steps 0, or stopped before the first step),
     * else the model alone when this process has not written it (a resume with nothing left to
     * train: DIR/model may be missing, stale or half-written after a crash). */
    if (t->saved_step != t->step) rc = checkpoint(t, dir);
    else if (t->exported_step != t->step) rc = export_model(t, dir);
    if (rc < 0) return rc;
    return stopped ? 1 : 0;
}
