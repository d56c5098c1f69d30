#include "exp/runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nn/dnnl.h"
#include "core/err.h"
#include "eval/geneval.h"
#include "exp/digest.h"
#include "exp/metrics.h"
#include "exp/protocol.h"
#include "exp/records.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "metric/clip_t.h"
#include "metric/fidmode.h"
#include "metric/inception.h"
#include "metric/lpips.h"
#include "sample/pipeline.h" /* SINKSCOPE_VERSION, PIPE_MAX_STEPS */
#include "sink/record.h"
#include "sample/pipes.h"
#include "sink/abspe.h"
#include "sink/sink.h"
#include "sink/spiral.h"
#include "text/promptx.h"

#define PATHLEN 4400

void run_config_default(run_config *c) {
    memset(c, 0, sizeof *c);
    c->seeds_per_prompt = 1;
    c->steps = PIPE_DEFAULT_STEPS;
    c->cfg = PIPE_DEFAULT_CFG;
    c->probe_default = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- learned metrics ---- */

const char *const RUN_METRIC_NAME[RUN_METRIC_N] = {"clip_t", "lpips", "fid"};

int run_parse_metrics(const char *list, const char *option, unsigned *out) {
    *out = 0;
    const char *p = list;
    if (!*p) return ss_fail(SS_EARG, "%s: an empty list (known metrics: clip_t, lpips, fid)", option);
    for (;;) {
        const char *e = strchr(p, ',');
        const size_t n = e ? (size_t)(e - p) : strlen(p);
        int k = -1;
        for (int i = 0; i < RUN_METRIC_N; i++)
            if (strlen(RUN_METRIC_NAME[i]) == n && !strncmp(p, RUN_METRIC_NAME[i], n)) k = i;
        if (k < 0) return ss_fail(SS_EARG, "%s: unknown metric '%.*s' (known: clip_t, lpips, fid)", option, (int)(n > 64 ? 64 : n), p);
        if (*out & (1u << k)) return ss_fail(SS_EARG, "%s: metric '%s' given twice", option, RUN_METRIC_NAME[k]);
        *out |= 1u << k;
        if (!e) return 0;
        p = e + 1;
    }
}

/* The weight files of each metric, relative to --metric-weights (required ones first; the
 * optional ones are digested when present: the tokenizer reads them when they are there). */
typedef struct {
    unsigned metric;
    const char *rel;
    int required;
} weight_file;
static const weight_file WEIGHT_FILES[] = {
    {RUN_METRIC_CLIP_T, "clip/config.json", 1},           {RUN_METRIC_CLIP_T, "clip/model.safetensors", 1},
    {RUN_METRIC_CLIP_T, "clip/vocab.json", 1},            {RUN_METRIC_CLIP_T, "clip/merges.txt", 1},
    {RUN_METRIC_CLIP_T, "clip/tokenizer_config.json", 0}, {RUN_METRIC_CLIP_T, "clip/special_tokens_map.json", 0},
    {RUN_METRIC_CLIP_T, "clip/tokenizer.json", 0},        {RUN_METRIC_LPIPS, "lpips/alexnet.pth", 1},
    {RUN_METRIC_LPIPS, "lpips/alex.pth", 1}};
#define N_WEIGHT_FILES (int)(sizeof WEIGHT_FILES / sizeof WEIGHT_FILES[0])

/* ---- prompts ---- */

typedef struct {
    gv_meta *m; /* m[i].prompt is the text; tag and clauses only when has_meta */
    int n, has_meta;
    int stride; /* entry i is prompt index i * stride of the file */
} prompt_set;

/* The file's prompt index of entry p (what names images, keys and seeds). */
#define PIDX(r, p) ((p) * (r)->ps.stride)

/* The seed of entry p's r-th image: base + prompt_index * seeds_per_prompt + r (setup checked
 * that the largest one fits in 64 bits). */
#define SEED(r, p, s) ((r)->c->base_seed + (uint64_t)PIDX(r, p) * (uint64_t)(r)->c->seeds_per_prompt + (uint64_t)(s))

static int load_prompts(const char *path, prompt_set *ps) {
    memset(ps, 0, sizeof *ps);
    return gv_load_prompts(path, GV_FORMAT_AUTO, &ps->m, &ps->n, &ps->has_meta);
}

/* ---- experiment.json ---- */

static json_t *jreal(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *int_array(const int *x, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(x[i]));
    return a;
}

/* Fields that may differ on resume: where things are, not what they are. */
static int informational(const char *key) {
    return !strcmp(key, "model") || !strcmp(key, "metric_weights") || !strcmp(key, "prompts") || !strcmp(key, "sinkscope_version") ||
           !strcmp(key, "conditions_source");
}

static void show(const json_t *v, char *buf, size_t cap) {
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    if (!s) snprintf(buf, cap, "(absent)");
    else if (strlen(s) > 80) snprintf(buf, cap, "%.77s...", s);
    else snprintf(buf, cap, "%s", s);
    free(s);
}

/* The first difference between two JSON values, as a field path ("conditions[2].eta") plus both
 * values; 0 when equal. Condition entries are named by their index and name. */
static int json_diff(const json_t *a, const json_t *b, const char *path, int top, char *out, size_t cap) {
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            if (top && informational(k)) continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k);
            if (json_diff(v, json_object_get(b, k), sub, 0, out, cap)) return 1;
        }
        json_object_foreach((json_t *)b, k, v) {
            if (top && informational(k)) continue;
            if (!json_object_get(a, k)) {
                char sub[512];
                snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k);
                return json_diff(NULL, v, sub, 0, out, cap);
            }
        }
        return 0;
    }
    if (json_is_array(a) && json_is_array(b) && json_array_size(a) == json_array_size(b)) {
        for (size_t i = 0; i < json_array_size(a); i++) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            if (json_diff(json_array_get(a, i), json_array_get(b, i), sub, 0, out, cap)) return 1;
        }
        return 0;
    }
    if (a && b && json_equal((json_t *)a, (json_t *)b)) return 0;
    char va[100], vb[100];
    show(a, va, sizeof va);
    show(b, vb, sizeof vb);
    if (json_is_array(a) && json_is_array(b))
        snprintf(out, cap, "field '%s' differs: the folder has %zu entries, this run has %zu (%s vs %s)", path,
                 json_array_size(a), json_array_size(b), va, vb);
    else
        snprintf(out, cap, "field '%s' differs: the folder has %s, this run has %s", path, va, vb);
    return 1;
}

/* ---- the run ---- */

/* Images are made by `workers` threads at once, each working through whole (prompt, seed)
 * groups (baseline, then its conditions) with its own sink context and buffers; the model is
 * shared read-only. Appending records, the key set, the progress display and the first error
 * are shared and guarded by the critical section "run_io". */
typedef struct runner runner;

typedef struct {
    runner *r;
    sink_ctx *sk;
    void *ws; /* the pipeline's working memory (ss_pipe_kind.ws_new), reused for every image of this worker */
    uint8_t *rgb, *base;
    int cur_step, cur_steps; /* progress within the image being made */
    char *padded;            /* the padded prompt of the image being made (pad_prompt), or NULL */
    uint8_t *ttypes;         /* [S]: the text key types of the prompt it tokenizes (padded or not) */
    float *emb;              /* [2][emb_n]: the cond and uncond text embeddings of the image being made (pipelines
                                with an encoder stage), read from EXP/text_embeddings */
} worker;

struct runner {
    const run_config *c;
    ss_pipe *pp;
    records_file rf;
    prompt_set ps;
    sink_condition *conds;
    int n_conds, W, H, n_probe, n_workers;
    int probe[RUN_MAX_PROBE];
    char model_digest[DIGEST_HEX], prompts_digest[DIGEST_HEX];
    char (*cond_json)[1024]; /* compact condition JSON for the PNG text chunks */
    uint8_t *types;          /* [n prompts][S]: the text key types of each prompt (ss_pipe_kind.text_types) */
    int S;                   /* text tokens */
    /* the encoder stage (ss_pipe_kind.encode_text): every text's embeddings in EXP/text_embeddings/ */
    int emb_rows, emb_cols, emb_extra;
    size_t emb_n;            /* floats of one text: rows * cols + extra (0: no encoder stage) */
    ss_site *sites;          /* [SS_PIPE_MAX_SITES]: the model's attention sites at the run's image size */
    int n_sites;
    worker *wk;
    /* learned metrics (c->metrics): models shared read-only, the prompts' text embeddings */
    clipt *clip;
    lpips_net *lp;
    float *text_emb; /* [n prompts][clip dim] */
    int clip_dim;
    char weight_digest[N_WEIGHT_FILES][DIGEST_HEX]; /* "" when not used or absent */
    inception_net *inc;                 /* fid */
    char inc_rel[300], inc_digest[DIGEST_HEX]; /* its file ("inception/pt_inception-...pth") and SHA-256 */
    /* shared, under run_io */
    long done, total, made;
    double t0, last_draw;
    int failed, err_code;
    char err[1024];
};

static void draw_bar(runner *r, int final) {
    const double t = now_s();
    if (!final && t - r->last_draw < 0.1) return; /* redraw at most 10 times a second */
    r->last_draw = t;
    double pos = (double)r->done;
    for (int i = 0; i < r->n_workers && !final; i++)
        if (r->wk[i].cur_steps) pos += (double)r->wk[i].cur_step / r->wk[i].cur_steps;
    const double f = r->total ? pos / r->total : 1;
    char bar[31];
    int fill = (int)(f * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    const double el = t - r->t0, per = r->made ? el / r->made : 0;
    char eta[32] = "--";
    if (r->made) {
        long s = (long)(per * (r->total - pos) + 0.5);
        if (s >= 3600) snprintf(eta, sizeof eta, "%ldh%02ldm", s / 3600, s / 60 % 60);
        else if (s >= 60) snprintf(eta, sizeof eta, "%ldm%02lds", s / 60, s % 60);
        else snprintf(eta, sizeof eta, "%lds", s);
    }
    fprintf(stderr, "\r\033[Ksinkscope run [%s] %ld/%ld %5.1f%%  %.3g s/img  ETA %s", bar, r->done, r->total, 100 * f,
            per, eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static void on_step(void *ctx, int step, int steps) {
    worker *w = ctx;
    /* spiral fields: the per-key vectors are kept for the last step only (the records' "mu") */
    if (w->r->c->spiral && step + 2 == steps) sink_ctx_set_probe(w->sk, w->r->probe, w->r->n_probe, TOK_IMAGE, 5, 1);
    if (!w->r->c->progress_bar) return;
#pragma omp critical(run_io)
    {
        w->cur_step = step + 1;
        w->cur_steps = steps;
        draw_bar(w->r, 0);
    }
}

static void image_rel(char *buf, size_t cap, const char *cond, int p, uint64_t seed) {
    snprintf(buf, cap, "images/%s/%05d_%llu.png", cond, p, (unsigned long long)seed);
}

static void features_rel(char *buf, size_t cap, const char *cond, int p, uint64_t seed) {
    snprintf(buf, cap, "features/%s/%05d_%llu.safetensors", cond, p, (unsigned long long)seed);
}

static void item_key(char *buf, size_t cap, const char *cond, int p, uint64_t seed) {
    snprintf(buf, cap, "%s/%05d/%llu", cond, p, (unsigned long long)seed);
}

/* The pipeline parameters of the run for entry p (p < 0: no prompt). */
static void run_params(const runner *r, ss_pipe_params *q, int p) {
    ss_pipe_params_default(q, r->pp->kind);
    q->prompt = p >= 0 ? r->ps.m[p].prompt : "";
    q->steps = r->c->steps;
    q->cfg = r->c->cfg;
    q->width = r->c->width;
    q->height = r->c->height;
    q->negative = r->c->negative_prompt && *r->c->negative_prompt ? r->c->negative_prompt : NULL;
    q->max_sequence_length = r->c->max_sequence_length;
}

/* ---- text embeddings (the encoder stage) ----
 *
 * EXP/text_embeddings/<name>.f32, name = SHA-256 of the key: "sinkscope text embeddings 1", the
 * pipeline class, the model digest, max_sequence_length, the dimensions and the text, separated by
 * NUL bytes. The file: a 256-byte header (EMB_MAGIC, int32 rows, cols, extra, 0, the name and the
 * SHA-256 of the payload as 64 hex characters each, zero padding), then rows * cols + extra
 * little-endian float32. */
#define EMB_MAGIC "SSTEMB1\n"
#define EMB_HEADER 256
#define EMB_DIR "text_embeddings"

static void emb_name(const runner *r, const char *text, char hex[DIGEST_HEX]) {
    static const char tag[] = "sinkscope text embeddings 1";
    char dims[96];
    const int n = snprintf(dims, sizeof dims, "max_sequence_length=%d rows=%d cols=%d extra=%d", r->c->max_sequence_length,
                           r->emb_rows, r->emb_cols, r->emb_extra);
    sha256_ctx h;
    sha256_init(&h);
    sha256_update(&h, tag, sizeof tag);
    sha256_update(&h, r->pp->kind->class_name, strlen(r->pp->kind->class_name) + 1);
    sha256_update(&h, r->model_digest, strlen(r->model_digest) + 1);
    sha256_update(&h, dims, (size_t)n + 1);
    sha256_update(&h, text, strlen(text));
    sha256_final_hex(&h, hex);
}

static void emb_path(const runner *r, const char *hex, char *path, size_t cap) {
    snprintf(path, cap, "%s/" EMB_DIR "/%s.f32", r->c->exp_dir, hex);
}

static void emb_header(const runner *r, const char *name, const char *payload_hex, uint8_t hdr[EMB_HEADER]) {
    memset(hdr, 0, EMB_HEADER);
    memcpy(hdr, EMB_MAGIC, 8);
    const int32_t d[4] = {r->emb_rows, r->emb_cols, r->emb_extra, 0};
    memcpy(hdr + 8, d, sizeof d);
    memcpy(hdr + 24, name, 64);
    if (payload_hex) memcpy(hdr + 88, payload_hex, 64);
}

/* Reads the payload of the file `name` into emb [emb_n]. check: also its size and the payload's
 * SHA-256 (the encoder stage's test of a file it may reuse). 0, or < 0 with the error naming the
 * file and the problem. */
static int emb_read(const runner *r, const char *name, float *emb, int check) {
    char path[PATHLEN];
    emb_path(r, name, path, sizeof path);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_fail(errno == ENOENT ? SS_EMISSING : SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    const size_t bytes = sizeof(float) * r->emb_n;
    uint8_t hdr[EMB_HEADER], want[EMB_HEADER];
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) rc = ss_fail(SS_EIO, "%s: not a regular file", path);
    else if (check && (uint64_t)sb.st_size != EMB_HEADER + (uint64_t)bytes)
        rc = ss_fail(SS_EFORMAT, "%s: %lld bytes, expected %llu (truncated?)", path, (long long)sb.st_size,
                     (unsigned long long)(EMB_HEADER + bytes));
    else if (pread(fd, hdr, EMB_HEADER, 0) != EMB_HEADER) rc = ss_fail(SS_EFORMAT, "%s: truncated header", path);
    else {
        emb_header(r, name, NULL, want);
        if (memcmp(hdr, want, 88)) rc = ss_fail(SS_EFORMAT, "%s: not the text embeddings this run expects (header)", path);
    }
    size_t got = 0;
    while (!rc && got < bytes) {
        const ssize_t k = pread(fd, (char *)emb + got, bytes - got, (off_t)(EMB_HEADER + got));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) rc = ss_fail(SS_EFORMAT, "%s: truncated: %zu of %zu payload bytes", path, got, bytes);
        else got += (size_t)k;
    }
    close(fd);
    if (!rc && check) {
        char hex[DIGEST_HEX];
        digest_bytes(emb, bytes, hex);
        if (memcmp(hex, hdr + 88, 64)) rc = ss_fail(SS_EFORMAT, "%s: its payload does not match its SHA-256", path);
    }
    return rc;
}

/* Encodes one text (unless its valid file is there) into EXP/text_embeddings, through the one
 * atomic writer. *made: 0 reused, 1 encoded, 2 encoded again (the file was damaged). */
static int emb_ensure(runner *r, const char *text, float *emb, uint8_t *buf, int *made) {
    char name[DIGEST_HEX], path[PATHLEN];
    emb_name(r, text, name);
    emb_path(r, name, path, sizeof path);
    *made = 0;
    struct stat sb;
    if (!stat(path, &sb)) {
        if (!S_ISREG(sb.st_mode))
            return ss_fail(SS_EIO, "%s: not a regular file; move it away and run again", path);
        if (emb_read(r, name, emb, 1) == 0) return 0;
        fprintf(stderr, "sinkscope run: warning: %s; encoding that text again\n", ss_err());
        *made = 2;
    } else
        *made = 1;
    ss_pipe_params q;
    run_params(r, &q, -1);
    q.prompt = text;
    int rc = r->pp->kind->encode_text(r->pp->impl, &q, text, emb);
    if (rc < 0) return rc;
    const size_t bytes = sizeof(float) * r->emb_n;
    char hex[DIGEST_HEX];
    digest_bytes(emb, bytes, hex);
    emb_header(r, name, hex, buf);
    memcpy(buf + EMB_HEADER, emb, bytes);
    return ss_write_atomic(path, buf, EMB_HEADER + bytes);
}

static void clean_tmp(const char *dir);

/* The encoder stage's progress on a terminal (run's progress bar setting). */
static void emb_progress(const run_config *c, long done, long total) {
    if (!c->progress_bar) return;
    fprintf(stderr, "\r\033[Ksinkscope run: text embeddings %ld/%ld", done, total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* The encoder stage: every distinct text the work needs (its prompts, padded as their conditions
 * pad them, and the negative prompt under guidance) encoded once into EXP/text_embeddings (files
 * already there and valid are reused); then the encoders are freed and the transformer loaded.
 * need[p]: prompt entry p has work. */
static int encode_stage(runner *r, const uint8_t *need) {
    const run_config *c = r->c;
    const ss_pipe_kind *kind = r->pp->kind;
    char dir[PATHLEN];
    snprintf(dir, sizeof dir, "%s/" EMB_DIR, c->exp_dir);
    int rc = ss_mkdir_p(dir);
    if (rc < 0) return rc;
    clean_tmp(dir);
    float *emb = ss_malloc(sizeof(float) * r->emb_n);
    uint8_t *buf = ss_malloc(EMB_HEADER + sizeof(float) * r->emb_n);
    if (!emb || !buf) {
        free(emb), free(buf);
        return SS_ENOMEM;
    }
    long n_made = 0, n_reused = 0, n_redone = 0, n_texts = 0, n_pads = 0;
    for (int ci = 0; ci < r->n_conds; ci++) n_pads += sink_condition_pad_active(&r->conds[ci]);
    for (int p = 0; p < r->ps.n; p++) n_texts += need[p] ? 1 + n_pads : 0;
    n_texts += kind->uses_negative && c->cfg > 1.0;
    const double t0 = now_s();
    ss_pipe_params q;
    run_params(r, &q, -1);
    const char *neg = q.negative ? q.negative : "";
    int made;
    if (kind->uses_negative && c->cfg > 1.0 && (rc = emb_ensure(r, neg, emb, buf, &made)) >= 0)
        n_reused += made == 0, n_made += made == 1, n_redone += made == 2, emb_progress(c, n_reused + n_made + n_redone, n_texts);
    for (int p = 0; p < r->ps.n && rc >= 0; p++) {
        if (!need[p]) continue;
        if ((rc = emb_ensure(r, r->ps.m[p].prompt, emb, buf, &made)) < 0) break;
        n_reused += made == 0, n_made += made == 1, n_redone += made == 2, emb_progress(c, n_reused + n_made + n_redone, n_texts);
        for (int ci = 0; ci < r->n_conds && rc >= 0; ci++) {
            if (!sink_condition_pad_active(&r->conds[ci])) continue;
            char *padded = NULL;
            if ((rc = promptx_pad_apply(&padded, r->ps.m[p].prompt, &r->conds[ci].pad)) >= 0 &&
                (rc = emb_ensure(r, padded, emb, buf, &made)) >= 0)
                n_reused += made == 0, n_made += made == 1, n_redone += made == 2, emb_progress(c, n_reused + n_made + n_redone, n_texts);
            free(padded);
        }
    }
    free(emb), free(buf);
    if (rc < 0) return ss_err_prefix(rc, "text embeddings: ");
    if (!c->quiet)
        fprintf(stderr, "sinkscope run: text embeddings in %s: %ld encoded, %ld reused, %ld encoded again, %.1f s\n", dir,
                n_made, n_reused, n_redone, now_s() - t0);
    /* the encoders are not needed any more: peak memory max(encoders, transformer), not the sum */
    kind->release_encoders(r->pp->impl);
    return ss_pipe_load_transformer(r->pp, c->precision);
}

/* The prompt condition ci gives to prompt p: q->prompt padded when the condition's pad_prompt is
 * active (into w->padded), and its text key types into w->ttypes (the pipeline's tokenizers;
 * setup typed and checked every prompt, padded or not). With spiral fields the probe keeps the
 * per-key vectors for the last step only (on_step turns them on before it). */
static int prepare_prompt(worker *w, int ci, int p, ss_pipe_params *q) {
    runner *r = w->r;
    free(w->padded);
    w->padded = NULL;
    int rc = 0;
    if (sink_condition_pad_active(&r->conds[ci])) {
        if ((rc = promptx_pad_apply(&w->padded, q->prompt, &r->conds[ci].pad)) < 0) return rc;
        q->prompt = w->padded;
        const int n = r->pp->kind->text_types(r->pp->impl, q, w->ttypes, r->S);
        if (n < 0) return n;
    } else
        memcpy(w->ttypes, r->types + (size_t)p * r->S, (size_t)r->S);
    if (r->c->spiral) rc = sink_ctx_set_probe(w->sk, r->probe, r->n_probe, TOK_IMAGE, 5, r->c->steps == 1);
    return rc;
}

/* Generates one image of condition ci (0 = baseline) into rgb; the worker's sink context then
 * holds its probe and intervention records. */
static int generate(worker *w, int ci, int p, uint64_t seed, uint8_t *rgb) {
    runner *r = w->r;
    ss_pipe_params pr;
    run_params(r, &pr, p);
    int rc = prepare_prompt(w, ci, p, &pr);
    if (rc < 0) return ss_err_prefix(rc, "condition '%s', prompt %d: ", r->conds[ci].name, PIDX(r, p));
    pr.seed = seed;
    if (r->c->progress_bar || r->c->spiral) {
        pr.progress = on_step;
        pr.progress_ctx = w;
    }
    sink_ctx_clear_records(w->sk);
    /* a condition that acts on no site may still edit the position table (pe_* fields) */
    sink_ctx_set_condition(w->sk, r->conds[ci].n_layers || r->conds[ci].have_pe ? &r->conds[ci] : NULL);
    if (r->emb_n) { /* the encoder stage wrote every text's embeddings */
        const int uncond = r->pp->kind->uses_negative && pr.cfg > 1.0;
        char name[DIGEST_HEX];
        emb_name(r, pr.prompt, name);
        rc = emb_read(r, name, w->emb, 0);
        if (!rc && uncond) {
            emb_name(r, pr.negative ? pr.negative : "", name);
            rc = emb_read(r, name, w->emb + r->emb_n, 0);
        }
        if (!rc) rc = r->pp->kind->generate_emb(r->pp->impl, &pr, w->emb, uncond ? w->emb + r->emb_n : NULL, rgb, w->sk, w->ws);
    } else
        rc = r->pp->kind->generate(r->pp->impl, &pr, rgb, w->sk, w->ws);
    if (rc < 0) ss_err_prefix(rc, "condition '%s', prompt %d, seed %llu: ", r->conds[ci].name, PIDX(r, p), (unsigned long long)seed);
    return rc;
}

/* img (optional) gets the written file's size and SHA-256. */
static int write_image(runner *r, int ci, int p, uint64_t seed, const uint8_t *rgb, record_image *img) {
    char rel[600], path[PATHLEN], key[600], seed_s[32], steps_s[32], cfg_s[48];
    image_rel(rel, sizeof rel, r->conds[ci].name, PIDX(r, p), seed);
    item_key(key, sizeof key, r->conds[ci].name, PIDX(r, p), seed);
    snprintf(path, sizeof path, "%s/%s", r->c->exp_dir, rel);
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)seed);
    snprintf(steps_s, sizeof steps_s, "%d", r->c->steps);
    snprintf(cfg_s, sizeof cfg_s, "%.17g", r->c->cfg);
    const char *kv[] = {"key",       key,    "prompt", r->ps.m[p].prompt, "seed",         seed_s,
                        "steps",     steps_s, "cfg",   cfg_s,             "model_digest", r->model_digest,
                        "condition", r->cond_json[ci], "Software", "sinkscope " SINKSCOPE_VERSION};
    /* png_write_rgb goes through the one atomic writer (unique temporary file, fsync, rename,
     * folder fsync), so the image is durable before its record is appended. */
    int rc = png_write_rgb(path, r->W, r->H, rgb, kv, 8);
    if (!rc && img) { /* what the record will say about it: size and SHA-256 of the file as written */
        struct stat sb;
        if (stat(path, &sb)) rc = ss_fail(SS_EIO, "%s: cannot stat: %s", path, strerror(errno));
        else img->bytes = (long long)sb.st_size;
        if (!rc) rc = digest_file(path, img->sha256);
    }
    return rc;
}

/* `run --metrics fid`: the image's pool3 features into features/<cond>/<p>_<seed>.safetensors
 * (the one atomic writer, via st_writer_save), rel and sha256 getting its name and SHA-256. */
static int write_features(runner *r, int ci, int p, uint64_t seed, const uint8_t *rgb, char *rel, size_t cap,
                          char sha256[DIGEST_HEX]) {
    char path[PATHLEN], key[600];
    features_rel(rel, cap, r->conds[ci].name, PIDX(r, p), seed);
    item_key(key, sizeof key, r->conds[ci].name, PIDX(r, p), seed);
    snprintf(path, sizeof path, "%s/%s", r->c->exp_dir, rel);
    float *feat = ss_malloc(INCEPTION_DIM * sizeof *feat);
    if (!feat) return SS_ENOMEM;
    int rc = fid_features_image(r->inc, (fid_mode)r->c->fid_mode, rgb, r->W, r->H, feat);
    if (rc < 0) ss_err_prefix(rc, "%s: FID features: ", key);
    st_writer *w = rc ? NULL : st_writer_new();
    if (!rc && !w) rc = SS_ENOMEM;
    const int64_t shape[1] = {INCEPTION_DIM};
    if (!rc) rc = st_writer_add(w, "pool3", ST_F32, 1, shape, feat);
    if (!rc) rc = st_writer_set_metadata(w, "mode", fid_mode_name((fid_mode)r->c->fid_mode));
    if (!rc) rc = st_writer_set_metadata(w, "key", key);
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    free(feat);
    if (!rc) rc = digest_file(path, sha256);
    return rc;
}

/* The record of one finished image (json_t *), or NULL with the error set. */
static json_t *make_record(worker *w, int ci, int p, uint64_t seed, const record_image *img, const uint8_t *rgb,
                           const uint8_t *base_rgb, double t0) {
    runner *r = w->r;
    char rel[600], key[600];
    image_rel(rel, sizeof rel, r->conds[ci].name, PIDX(r, p), seed);
    item_key(key, sizeof key, r->conds[ci].name, PIDX(r, p), seed);
    json_t *o = json_object(), *m = json_object();
    json_object_set_new(o, "key", json_string(key));
    json_object_set_new(o, "condition", json_string(r->conds[ci].name));
    json_object_set_new(o, "condition_index", json_integer(ci));
    json_object_set_new(o, "prompt_index", json_integer(PIDX(r, p)));
    json_object_set_new(o, "prompt", json_string(r->ps.m[p].prompt));
    if (w->padded) json_object_set_new(o, "padded_prompt", json_string(w->padded)); /* what was tokenized */
    if (r->ps.has_meta) json_object_set_new(o, "tag", json_string(r->ps.m[p].tag));
    json_object_set_new(o, "seed", exp_json_u64(seed));
    json_object_set_new(o, "image", json_string(rel));
    json_object_set_new(o, "image_bytes", json_integer((json_int_t)img->bytes));
    json_object_set_new(o, "image_sha256", json_string(img->sha256));
    if (img->features) {
        json_object_set_new(o, "features", json_string(img->features));
        json_object_set_new(o, "features_sha256", json_string(img->features_sha256));
    }
    int rc = 0;
    if (r->ps.has_meta && r->pp->kind->shapeworld) { /* the ShapeWorld detector knows ShapeWorld scenes only */
        int g = metric_geneval(&r->ps.m[p], rgb, r->W, r->H, NULL, 0);
        if (g < 0) rc = ss_err_prefix(g, "%s: GenEval scoring: ", key);
        else json_object_set_new(m, "geneval", json_integer(g));
    }
    const double mse = img_mse(rgb, base_rgb, r->W, r->H), ssim = img_ssim(rgb, base_rgb, r->W, r->H);
    if (!rc && isnan(ssim)) rc = ss_err_prefix(SS_ENOMEM, "%s: SSIM: ", key);
    json_object_set_new(m, "mse", json_real(mse));
    json_object_set_new(m, "psnr", jreal(img_psnr(mse))); /* null = +inf (identical images) */
    json_object_set_new(m, "ssim", jreal(ssim));
    if (!rc && (r->c->metrics & RUN_METRIC_CLIP_T)) {
        float *e = ss_malloc(sizeof(float) * (size_t)r->clip_dim);
        if (!e) rc = SS_ENOMEM;
        else if ((rc = clipt_image_embed(r->clip, rgb, r->W, r->H, e, key)) >= 0)
            json_object_set_new(m, "clip_t", jreal(clipt_cosine(e, r->text_emb + (size_t)p * r->clip_dim, r->clip_dim)));
        free(e);
        if (rc < 0) rc = ss_err_prefix(rc, "%s: CLIP-T: ", key);
    }
    if (!rc && ci > 0 && (r->c->metrics & RUN_METRIC_LPIPS)) {
        double d;
        if ((rc = lpips_distance_rgb(r->lp, rgb, base_rgb, r->W, r->H, &d, NULL)) < 0)
            rc = ss_err_prefix(rc, "%s: LPIPS: ", key);
        else json_object_set_new(m, "lpips", jreal(d));
    }
    json_object_set_new(o, "metrics", m);
    const sink_key_types kt = {r->sites, r->n_sites, w->ttypes, r->S, r->pp->kind->tokenizer_types};
    json_object_set_new(o, "probe", sink_record_write_probe_json(w->sk, 0, &kt)); /* sink/record.h */
    json_object_set_new(o, "verification", sink_record_write_verif_json(w->sk, 0));
    if (!rc && r->c->spiral) {
        json_t *sp = metric_spiral_json(w->sk, r->c->steps - 1, r->sites, r->n_sites, w->ttypes, r->S);
        if (!sp) rc = ss_err_prefix(SS_EARG, "%s: ", key);
        else json_object_set_new(o, "spiral", sp);
    }
    json_object_set_new(o, "seconds", json_real(now_s() - t0));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int stopped(runner *r) {
    int f;
#pragma omp atomic read
    f = r->failed;
    return f;
}

/* One item: generate, save the image, append the record. */
static int run_item(worker *w, int ci, int p, uint64_t seed, uint8_t *rgb, const uint8_t *base_rgb) {
    runner *r = w->r;
    const double t0 = now_s();
    record_image img = {.bytes = -1};
    char frel[600];
    int rc = generate(w, ci, p, seed, rgb);
    if (!rc) rc = write_image(r, ci, p, seed, rgb, &img);
    if (!rc && (r->c->metrics & RUN_METRIC_FID)) { /* durable before the record that names them */
        rc = write_features(r, ci, p, seed, rgb, frel, sizeof frel, img.features_sha256);
        img.features = frel;
    }
    json_t *rec = rc ? NULL : make_record(w, ci, p, seed, &img, rgb, base_rgb ? base_rgb : rgb, t0);
    if (!rc && !rec) rc = SS_ENOMEM;
    if (rc) return rc;
#pragma omp critical(run_io)
    {
        rc = records_append(&r->rf, rec); /* on failure the (thread-local) error is this thread's */
        if (!rc) {
            r->done++;
            r->made++;
            w->cur_steps = 0;
            if (r->c->progress_bar) draw_bar(r, 0);
        }
    }
    json_decref(rec);
    return rc;
}

/* The paired baseline image of a finished baseline record: its PNG, or (if unreadable) made
 * again - generation is deterministic, so this is the same image - and saved again. */
static int baseline_image(worker *w, int p, uint64_t seed, uint8_t *rgb) {
    runner *r = w->r;
    char rel[600], path[PATHLEN];
    image_rel(rel, sizeof rel, "baseline", PIDX(r, p), seed);
    snprintf(path, sizeof path, "%s/%s", r->c->exp_dir, rel);
    int iw, ih;
    uint8_t *img = NULL;
    int rc = png_read_rgb_expect(path, r->W, r->H, &iw, &ih, &img); /* refused before decoding unless W x H */
    if (!rc && iw == r->W && ih == r->H) {
        memcpy(rgb, img, (size_t)3 * iw * ih);
        free(img);
        return 0;
    }
    free(img);
#pragma omp critical(run_io)
    {
        if (rc) fprintf(stderr, "%ssinkscope run: warning: %s; making the baseline image again\n", r->c->progress_bar ? "\n" : "",
                        ss_err());
        else fprintf(stderr, "%ssinkscope run: warning: %s: %dx%d, expected %dx%d; making the baseline image again\n",
                     r->c->progress_bar ? "\n" : "", path, iw, ih, r->W, r->H);
    }
    if ((rc = generate(w, 0, p, seed, rgb)) < 0) return rc;
    return write_image(r, 0, p, seed, rgb, NULL);
}

/* Removes the leftovers of an interrupted image write in images/<cond>/: the atomic writer's
 * ".NAME.XXXXXX" temporary files, and "*.tmp" of versions before it. */
static void clean_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if ((n > 4 && !strcmp(e->d_name + n - 4, ".tmp")) || ss_is_atomic_tmp(e->d_name)) {
            char path[PATHLEN + 300];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path) unlink(path);
        }
    }
    closedir(d);
}

static json_t *build_config(runner *r, const exp_blocks *bm) {
    const run_config *c = r->c;
    json_t *o = json_object();
    json_object_set_new(o, "sinkscope_version", json_string(SINKSCOPE_VERSION));
    json_object_set_new(o, "model", json_string(c->model_dir));
    json_object_set_new(o, "model_digest", json_string(r->model_digest));
    if (strcmp(r->pp->kind->class_name, PIPE_CLASS_NAME)) { /* only then: pixel-pipeline experiments keep their file */
        json_object_set_new(o, "model_class", json_string(r->pp->kind->class_name));
        json_object_set_new(o, "text_tokens", json_integer(r->S)); /* the text keys (CLIP + T5 rows), their default length */
    }
    json_object_set_new(o, "prompts", json_string(c->prompts_path));
    json_object_set_new(o, "prompts_digest", json_string(r->prompts_digest));
    json_object_set_new(o, "prompts_format", json_string(r->ps.has_meta ? "geneval_jsonl" : "text"));
    json_object_set_new(o, "n_prompts", json_integer(r->ps.n));
    json_object_set_new(o, "prompt_stride", json_integer(r->ps.stride));
    json_object_set_new(o, "seeds_per_prompt", json_integer(c->seeds_per_prompt));
    json_object_set_new(o, "base_seed", exp_json_u64(c->base_seed));
    json_object_set_new(o, "seed_rule", json_string("seed = base_seed + prompt_index * seeds_per_prompt + r, "
                                                    "r = 0 .. seeds_per_prompt - 1; the same seed for every condition"));
    json_object_set_new(o, "steps", json_integer(c->steps));
    json_object_set_new(o, "cfg", json_real(c->cfg));
    if (c->negative_prompt && *c->negative_prompt) /* only then: experiments without one keep their file */
        json_object_set_new(o, "negative_prompt", json_string(c->negative_prompt));
    if (c->precision != SS_PREC_F32) /* only then: f32 experiments keep their experiment.json */
        json_object_set_new(o, "precision", json_string(ss_precision_name(c->precision)));
    json_object_set_new(o, "width", json_integer(r->W));
    json_object_set_new(o, "height", json_integer(r->H));
    json_object_set_new(o, "order", json_string("for each prompt, for each seed: the baseline, then the conditions in order"));
    json_t *bj = json_pack("{s:i, s:i, s:i, s:i, s:s}", "num_layers", bm->num_layers, "early", bm->early, "middle",
                           bm->middle, "late", bm->late, "rule", "early = floor(L/4), middle = floor(L/2), late = floor(3L/4)");
    if (r->pp->kind->layer_kind != SS_SITE_JOINT) /* the blocks are not joint ones (FLUX: double.i) */
        json_object_set_new(bj, "site_kind", json_string(ss_site_kind_name(r->pp->kind->layer_kind)));
    json_object_set_new(o, "blocks", bj);
    int all_joint = 1;
    for (int i = 0; i < r->n_probe; i++) all_joint &= ss_site_code_kind(r->probe[i]) == SS_SITE_JOINT;
    /* joint sites by block index, as before sites existed; else site names */
    json_t *pj = all_joint ? int_array(r->probe, r->n_probe) : json_array();
    for (int i = 0; i < r->n_probe && !all_joint; i++) {
        char nm[48];
        json_array_append_new(pj, json_string(ss_site_code_name(r->probe[i], nm, sizeof nm)));
    }
    json_t *po = json_pack("{s:o, s:s, s:i, s:s}", all_joint ? "blocks" : "sites", pj, "queries", "image", "topk", 5,
                           "batch_element", "conditional");
    if (c->probe_all && all_joint) { /* only then (and spiral only with spiral fields): older experiments keep their file */
        json_t *names = json_array();
        char nm[48];
        for (int i = 0; i < r->n_probe; i++) json_array_append_new(names, json_string(ss_site_code_name(r->probe[i], nm, sizeof nm)));
        json_object_set_new(po, "sites", names);
    }
    if (c->spiral) { /* keyimp is measured with any group: "norms" and "keyimp,norms" are the same setting */
        json_t *names = json_array();
        for (int i = 0; i < 6; i++)
            if ((c->spiral | SPIRAL_KEYIMP) & (1u << i)) json_array_append_new(names, json_string(EXP_SPIRAL_NAMES[i]));
        json_object_set_new(po, "spiral", names);
    }
    json_object_set_new(o, "probe", po);
    json_object_set_new(o, "conditions_source", json_string(c->conditions_source ? c->conditions_source : ""));
    json_t *cl = json_array();
    for (int i = 0; i < r->n_conds; i++) json_array_append_new(cl, sink_condition_to_json(&r->conds[i]));
    json_object_set_new(o, "conditions", cl);
    if (c->metrics) { /* only then: experiments without --metrics keep their experiment.json */
        json_object_set_new(o, "metric_weights", json_string(c->metric_weights));
        json_t *mo = json_object(), *names = json_array(), *wd = json_object();
        for (int i = 0; i < RUN_METRIC_N; i++)
            if (c->metrics & (1u << i)) json_array_append_new(names, json_string(RUN_METRIC_NAME[i]));
        for (int i = 0; i < N_WEIGHT_FILES; i++)
            if (r->weight_digest[i][0]) json_object_set_new(wd, WEIGHT_FILES[i].rel, json_string(r->weight_digest[i]));
        if (r->inc_digest[0]) json_object_set_new(wd, r->inc_rel, json_string(r->inc_digest));
        json_object_set_new(mo, "names", names);
        json_object_set_new(mo, "weights_sha256", wd);
        json_object_set_new(mo, "clip_t", json_string("open_clip ViT validation transform, 77-token CLIP BPE, raw cosine of "
                                                      "the normalised projected embeddings (image vs its prompt)"));
        json_object_set_new(mo, "lpips", json_string("lpips alex v0.1, x/127.5 - 1, full resolution, condition vs its paired "
                                                     "baseline (not for the baseline)"));
        if (c->metrics & RUN_METRIC_FID) { /* only then: experiments with clip_t / lpips alone keep their file */
            json_object_set_new(mo, "fid_mode", json_string(fid_mode_name((fid_mode)c->fid_mode)));
            json_object_set_new(mo, "fid", json_string("pytorch-fid's FID InceptionV3 pool3 features (2048-d) of every image "
                                                       "under fid_mode, in features/<condition>/; the report's FID_shift is "
                                                       "the Frechet distance of a condition's images to their paired baseline "
                                                       "images"));
        }
        json_object_set_new(o, "metrics", mo);
    }
    return o;
}

/* Writes experiment.json, or checks the configuration against the one already there. */
static int settle_config(runner *r, const exp_blocks *bm) {
    char path[PATHLEN];
    snprintf(path, sizeof path, "%s/experiment.json", r->c->exp_dir);
    json_t *mine = build_config(r, bm);
    /* through text and back, so the comparison sees exactly what the file would hold */
    char *text = json_dumps(mine, CONFIG_JSON_FLAGS);
    json_decref(mine);
    if (!text) return ss_fail(SS_ENOMEM, "out of memory");
    int rc = 0;
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        free(text);
        return ss_fail(SS_EIO, "%s: not a regular file; move it away (or use another --exp folder)", path);
    }
    if (access(path, F_OK) == 0) {
        json_error_t je;
        json_t *old = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *now = json_loads(text, 0, NULL);
        char why[400];
        if (!old)
            rc = ss_fail(SS_EFORMAT, "%s: not valid JSON (line %d: %s); move the folder away to start over", path, je.line,
                         je.text);
        else if (json_diff(old, now, "", 1, why, sizeof why))
            rc = ss_fail(SS_EARG, "%s: the experiment in this folder has a different configuration: %s. Resume it with its "
                         "own settings, or use another --exp folder", path, why);
        json_decref(old);
        json_decref(now);
    } else {
        const size_t n = strlen(text);
        char *full = ss_malloc(n + 1);
        if (!full) rc = SS_ENOMEM;
        else {
            memcpy(full, text, n);
            full[n] = '\n';
            rc = ss_write_atomic(path, full, n + 1);
            free(full);
        }
    }
    free(text);
    return rc;
}

/* The FID Inception of --metric-weights: the one regular file DIR/inception/pt_inception-2015-12-05*.pth
 * (pytorch-fid names it pt_inception-2015-12-05-6726825d.pth), into r->inc_rel. */
#define INCEPTION_GLOB "pt_inception-2015-12-05"
static int find_inception(runner *r) {
    char dir[PATHLEN];
    if ((size_t)snprintf(dir, sizeof dir, "%s/inception", r->c->metric_weights) >= sizeof dir)
        return ss_fail(SS_EARG, "--metric-weights %s: path too long", r->c->metric_weights);
    DIR *d = opendir(dir);
    if (!d) return ss_fail(SS_EMISSING, "--metric-weights: %s/" INCEPTION_GLOB "*.pth is missing (metric fid needs it; layout "
                           "in docs/experiment-format.md)", dir);
    int n = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) && !rc) {
        const size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, INCEPTION_GLOB, strlen(INCEPTION_GLOB)) || len < 4 || strcmp(e->d_name + len - 4, ".pth")) continue;
        char path[PATHLEN + 300];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) continue;
        if (n++) rc = ss_fail(SS_EARG, "--metric-weights: %s holds two FID Inception files (%s and %s); keep one", dir,
                              r->inc_rel + strlen("inception/"), e->d_name);
        else if ((size_t)snprintf(r->inc_rel, sizeof r->inc_rel, "inception/%s", e->d_name) >= sizeof r->inc_rel)
            rc = ss_fail(SS_EARG, "%s: file name too long", path);
    }
    closedir(d);
    if (!rc && !n)
        rc = ss_fail(SS_EMISSING, "--metric-weights: %s/" INCEPTION_GLOB "*.pth is missing (metric fid needs it; layout in "
                     "docs/experiment-format.md)", dir);
    return rc;
}

/* The learned metrics: weight files checked and digested, models loaded, prompts embedded, all
 * before any image is made. */
static int setup_metrics(runner *r) {
    const run_config *c = r->c;
    if (!c->metrics) return 0;
    if (c->metrics & ~((1u << RUN_METRIC_N) - 1)) return ss_fail(SS_EARG, "--metrics: unknown metric bits 0x%x", c->metrics);
    if (!c->metric_weights || !*c->metric_weights)
        return ss_fail(SS_EARG, "--metrics needs --metric-weights DIR (clip/, lpips/ and inception/ weights: "
                       "docs/experiment-format.md)");
    char path[PATHLEN];
    int rc;
    for (int i = 0; i < N_WEIGHT_FILES; i++) {
        if (!(c->metrics & WEIGHT_FILES[i].metric)) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", c->metric_weights, WEIGHT_FILES[i].rel) >= sizeof path)
            return ss_fail(SS_EARG, "--metric-weights %s: path too long", c->metric_weights);
        struct stat sb;
        const int missing = stat(path, &sb) != 0;
        if (missing || !S_ISREG(sb.st_mode)) {
            if (!WEIGHT_FILES[i].required) continue;
            const char *m = WEIGHT_FILES[i].metric == RUN_METRIC_CLIP_T ? "clip_t" : "lpips";
            return ss_fail(SS_EMISSING, "--metric-weights: %s is %s (metric %s needs it; layout in docs/experiment-format.md)",
                           path, missing ? "missing" : "not a regular file", m);
        }
        if ((rc = digest_file(path, r->weight_digest[i])) < 0) return rc;
    }
    if (c->metrics & RUN_METRIC_FID) {
        if (c->fid_mode != FID_MODE_PYTORCH && c->fid_mode != FID_MODE_CLEAN)
            return ss_fail(SS_EARG, "--fid-mode: unknown mode %d", c->fid_mode);
        if ((rc = find_inception(r)) < 0) return rc;
        snprintf(path, sizeof path, "%s/%s", c->metric_weights, r->inc_rel);
        if ((rc = digest_file(path, r->inc_digest)) < 0) return rc;
        if ((rc = inception_load(&r->inc, path)) < 0) return ss_err_prefix(rc, "--metric-weights: ");
    }
    if (c->metrics & RUN_METRIC_LPIPS) {
        if (r->W < LPIPS_MIN_SIDE || r->H < LPIPS_MIN_SIDE)
            return ss_fail(SS_EARG, "--metrics lpips: the model makes %dx%d images; LPIPS needs both sides >= %d", r->W, r->H,
                           LPIPS_MIN_SIDE);
        char a[PATHLEN], b[PATHLEN];
        snprintf(a, sizeof a, "%s/lpips/alexnet.pth", c->metric_weights);
        snprintf(b, sizeof b, "%s/lpips/alex.pth", c->metric_weights);
        if ((rc = lpips_load(&r->lp, a, b)) < 0) return ss_err_prefix(rc, "--metric-weights: ");
    }
    if (c->metrics & RUN_METRIC_CLIP_T) {
        snprintf(path, sizeof path, "%s/clip", c->metric_weights);
        if ((rc = clipt_open(&r->clip, path, NULL)) < 0) return ss_err_prefix(rc, "--metric-weights: ");
        r->clip_dim = clipt_dim(r->clip);
        if (!(r->text_emb = ss_malloc(sizeof(float) * (size_t)r->clip_dim * (size_t)(r->ps.n ? r->ps.n : 1))))
            return SS_ENOMEM;
        for (int p = 0; p < r->ps.n; p++) {
            char label[PATHLEN];
            snprintf(label, sizeof label, "%s: prompt %d", c->prompts_path, PIDX(r, p));
            const char *t = r->ps.m[p].prompt;
            if ((rc = clipt_text_embed(r->clip, t, strlen(t), r->text_emb + (size_t)p * r->clip_dim, label)) < 0)
                return ss_err_prefix(rc, "CLIP-T: ");
        }
    }
    return 0;
}

/* Every active pad_prompt condition's padded prompts, before any image: the pipeline's tokenizers
 * must take them (the word tokenizer refuses unknown words and more than S - 1 words; errors name
 * the conditions source, the condition, the field and the prompt). A padding that leaves every
 * prompt's text key types unchanged (the word tokenizer strips punctuation, so commas vanish; a
 * prompt at the tokenizers' length cuts the padding off) is said once per condition. */
static int check_pads(runner *r, const char *what) {
    uint8_t *types = ss_malloc((size_t)r->S);
    if (!types) return SS_ENOMEM;
    int rc = 0;
    for (int ci = 0; ci < r->n_conds && !rc; ci++) {
        const sink_condition *c = &r->conds[ci];
        if (!sink_condition_pad_active(c)) continue;
        int same = 1;
        char spec[96];
        if (c->pad_spec[0]) snprintf(spec, sizeof spec, "\"%s\"", c->pad_spec);
        else snprintf(spec, sizeof spec, "%d", c->pad.repeat);
        for (int p = 0; p < r->ps.n && !rc; p++) {
            char *s = NULL;
            if ((rc = promptx_pad_apply(&s, r->ps.m[p].prompt, &c->pad)) < 0) break;
            ss_pipe_params q;
            run_params(r, &q, p);
            q.prompt = s;
            const int n = r->pp->kind->text_types(r->pp->impl, &q, types, r->S);
            free(s);
            if (n < 0) {
                rc = ss_err_prefix(n, "%s: condition '%s': field 'pad_prompt' = %s: prompt %d padded: ", what, c->name, spec,
                                   PIDX(r, p));
                break;
            }
            same &= !memcmp(types, r->types + (size_t)p * r->S, (size_t)r->S);
        }
        if (!rc && same && r->ps.n > 0)
            fprintf(stderr, "sinkscope run: note: condition '%s': pad_prompt %s leaves every prompt's tokens unchanged (%s): its "
                    "images equal the baseline's\n", c->name, spec,
                    r->pp->kind->tokenizer_types ? "the tokenizers cut the padding off" :
                                                   "this model's word tokenizer strips punctuation");
    }
    free(types);
    return rc;
}

static int setup(runner *r, exp_blocks *bm) {
    const run_config *c = r->c;
    int rc;
    if (c->seeds_per_prompt < 1) return ss_fail(SS_EARG, "--seeds must be >= 1");
    if (c->n_conds < 0 || c->n_conds > COND_MAX_LIST)
        return ss_fail(SS_EARG, "%d conditions: at most %d allowed", c->n_conds, COND_MAX_LIST);
    if (!c->probe_default && (c->n_probe < 0 || c->n_probe > RUN_MAX_PROBE))
        return ss_fail(SS_EARG, "--probe: %d blocks, at most %d allowed", c->n_probe, RUN_MAX_PROBE);
    if (c->steps < 1 || c->steps > PIPE_MAX_STEPS) return ss_fail(SS_EARG, "steps must be in [1, %d]", PIPE_MAX_STEPS);
    if (!isfinite(c->cfg)) return ss_fail(SS_EARG, "the guidance scale must be finite");
    if (c->precision != SS_PREC_F32 && c->precision != SS_PREC_BF16)
        return ss_fail(SS_EARG, "--precision: unknown precision %d", c->precision);
    if (c->width < 0 || c->height < 0) return ss_fail(SS_EARG, "--width and --height must be positive");
    /* with an encoder stage the transformer's weights come after it (encode_stage) */
    if ((rc = ss_pipe_open(&r->pp, c->model_dir, c->precision, SS_PIPE_DEFER_TRANSFORMER)) < 0) return rc;
    const ss_pipe_kind *kind = r->pp->kind;
    if (c->negative_prompt && *c->negative_prompt && !kind->uses_negative)
        return ss_fail(SS_EARG, "--negative-prompt: %s: a %s takes no negative prompt%s", c->model_dir, kind->class_name,
                       kind->encode_text ? " (FLUX.1's guidance is distilled)" : "");
    if (c->max_sequence_length && !kind->tokenizer_types)
        return ss_fail(SS_EARG, "--max-sequence-length: %s: a %s has no T5 encoder (its word tokenizer's length is fixed)",
                       c->model_dir, kind->class_name);
    if (c->max_sequence_length < 0) return ss_fail(SS_EARG, "--max-sequence-length must be positive");
    if ((rc = digest_pipeline(c->model_dir, r->model_digest)) < 0) return rc;
    if ((rc = load_prompts(c->prompts_path, &r->ps)) < 0) return rc;
    if ((rc = digest_file(c->prompts_path, r->prompts_digest)) < 0) return rc;
    r->ps.stride = c->prompt_stride > 1 ? c->prompt_stride : 1;
    if (r->ps.stride > 1) { /* keep prompts 0, stride, 2 stride, ... */
        int n = 0;
        for (int i = 0; i < r->ps.n; i += r->ps.stride) r->ps.m[n++] = r->ps.m[i];
        r->ps.n = n;
    }
    if (c->limit_prompts > 0 && c->limit_prompts < r->ps.n) r->ps.n = c->limit_prompts;
    /* sizes: (prompt, seed) groups are counted in int, seeds in uint64 */
    const long long groups = (long long)r->ps.n * c->seeds_per_prompt;
    if (groups > INT_MAX)
        return ss_fail(SS_EARG, "--seeds %d with %d prompts makes %lld (prompt, seed) pairs, more than %d; use fewer seeds "
                       "or prompts (--seeds, --limit-prompts, --prompt-stride)", c->seeds_per_prompt, r->ps.n, groups, INT_MAX);
    const uint64_t last_idx = (uint64_t)PIDX(r, r->ps.n - 1), S = (uint64_t)c->seeds_per_prompt;
    if (last_idx * S + (S - 1) > UINT64_MAX - c->base_seed) /* last_idx * S < 2^31 * 2^31: no overflow */
        return ss_fail(SS_EARG, "--base-seed %llu: the largest seed, base + prompt index %llu * %llu seeds + %llu, is past "
                       "2^64 - 1; use a base seed of at most %llu", (unsigned long long)c->base_seed,
                       (unsigned long long)last_idx, (unsigned long long)S, (unsigned long long)(S - 1),
                       (unsigned long long)(UINT64_MAX - (last_idx * S + (S - 1))));
    /* the image size first: a run's --width / --height are checked before the prompts */
    ss_pipe_params pr;
    run_params(r, &pr, -1);
    if ((rc = kind->image_size(r->pp->impl, &pr, &r->H, &r->W)) < 0) return rc;
    /* every prompt's text key types, from the pipeline's tokenizers: also checks every prompt */
    if ((r->S = kind->text_types(r->pp->impl, &pr, NULL, 0)) < 1) return r->S < 0 ? r->S : ss_fail(SS_EARG, "no text tokens");
    r->types = ss_malloc((size_t)r->S * (size_t)(r->ps.n ? r->ps.n : 1));
    if (!r->types) return SS_ENOMEM;
    for (int i = 0; i < r->ps.n && !rc; i++) {
        run_params(r, &pr, i);
        const int n = kind->text_types(r->pp->impl, &pr, r->types + (size_t)i * r->S, r->S);
        if (n >= 0 && n != r->S) rc = ss_fail(SS_EARG, "%s: prompt %d: %d text tokens, expected %d", c->prompts_path, PIDX(r, i), n, r->S);
        else if (n < 0) {
            char shown[GV_PROMPT_MAX]; /* one line: a JSONL prompt may hold escaped control characters */
            size_t k = 0;
            for (const char *q = r->ps.m[i].prompt; *q && k + 1 < sizeof shown; q++) shown[k++] = (unsigned char)*q < 0x20 ? '?' : *q;
            shown[k] = 0;
            rc = ss_err_prefix(n, "%s: prompt %d (\"%s\"): ", c->prompts_path, PIDX(r, i), shown);
        }
    }
    if (rc < 0) return rc;
    run_params(r, &pr, -1);
    if (!(r->sites = ss_malloc(sizeof *r->sites * SS_PIPE_MAX_SITES))) return SS_ENOMEM;
    r->n_sites = kind->sites(r->pp->impl, &pr, r->H, r->W, r->sites, SS_PIPE_MAX_SITES);
    if (r->n_sites < 0) return r->n_sites;
    if (r->n_sites > SS_PIPE_MAX_SITES) return ss_fail(SS_EARG, "%s: %d attention sites, at most %d", c->model_dir, r->n_sites, SS_PIPE_MAX_SITES);
    if (kind->encode_text) {
        if ((rc = kind->text_dims(r->pp->impl, &pr, &r->emb_rows, &r->emb_cols, &r->emb_extra)) < 0) return rc;
        r->emb_n = (size_t)r->emb_rows * (size_t)r->emb_cols + (size_t)r->emb_extra;
    }
    const int num_layers = ss_pipe_layer_count(kind, r->sites, r->n_sites);
    *bm = exp_block_map(num_layers);
    /* conditions: a private copy with the baseline first */
    if (c->core_protocol) {
        if ((rc = exp_core_conditions(bm, &r->conds, &r->n_conds)) < 0) return rc;
    } else {
        r->conds = ss_malloc(sizeof *r->conds * (c->n_conds ? c->n_conds : 1));
        if (!r->conds) return SS_ENOMEM;
        memcpy(r->conds, c->conds, sizeof *r->conds * c->n_conds);
        r->n_conds = c->n_conds;
    }
    const char *what = c->conditions_source ? c->conditions_source : "conditions";
    if ((rc = exp_conditions_prepare(&r->conds, &r->n_conds, what)) < 0) return rc;
    for (int i = 0; i < r->n_conds; i++) /* 'layers' names the model's blocks (SD3 joint.i, FLUX double.i) */
        if ((rc = sink_condition_resolve(&r->conds[i], r->sites, r->n_sites, what)) < 0) return rc;
    if ((rc = exp_conditions_check(r->conds, r->n_conds, r->sites, r->n_sites, what)) < 0) return rc;
    int grid_r, grid_c;
    kind->pos_grid(r->pp->impl, r->H, r->W, &grid_r, &grid_c);
    for (int i = 0; i < r->n_conds; i++) /* pe_* positions on the run's patch grid, before any image */
        if ((rc = sink_condition_check_pe(&r->conds[i], grid_r, grid_c, kind->transformer_class, what)) < 0) return rc;
    if ((rc = check_pads(r, what)) < 0) return rc;
    if (c->spiral & ~(unsigned)SPIRAL_ALL) return ss_fail(SS_EARG, "--spiral: unknown field bits 0x%x", c->spiral);
    if (c->probe_all) {
        if (r->n_sites > RUN_MAX_PROBE)
            return ss_fail(SS_EARG, "--probe all: the model has %d sites, at most %d", r->n_sites, RUN_MAX_PROBE);
        for (int i = 0; i < r->n_sites; i++) r->probe[r->n_probe++] = ss_site_code_of(&r->sites[i]);
    } else if (c->probe_default) {
        const int three[3] = {bm->early, bm->middle, bm->late};
        for (int i = 0; i < 3; i++) {
            const int code = ss_site_code(kind->layer_kind, three[i]);
            if (!r->n_probe || r->probe[r->n_probe - 1] != code) r->probe[r->n_probe++] = code;
        }
    } else {
        for (int i = 0; i < c->n_probe; i++) {
            /* a block number names the model's blocks (as 'layers'); a site code any site */
            const int b = c->probe_blocks[i];
            const int code = b >= 0 && b < SS_SITE_MAX_BLOCKS ? ss_site_code(kind->layer_kind, b) : b;
            if (b >= 0 && b < SS_SITE_MAX_BLOCKS && b >= num_layers)
                return ss_fail(SS_EARG, "probe: block %d does not exist (the model has %d blocks, 0-%d)", b, num_layers,
                               num_layers - 1);
            if (b < 0 || !ss_site_find(r->sites, r->n_sites, code)) {
                char nm[48], list[1024];
                return ss_fail(SS_EARG, "probe: site %s does not exist (the model's sites are %s)",
                               b < 0 ? "(negative)" : ss_site_code_name(code, nm, sizeof nm),
                               ss_site_list(r->sites, r->n_sites, list, sizeof list));
            }
            r->probe[r->n_probe++] = code;
        }
    }
    if (c->spiral && !r->n_probe) return ss_fail(SS_EARG, "--spiral needs probed sites (--probe is none)");
    r->cond_json = ss_calloc((size_t)r->n_conds, sizeof *r->cond_json);
    if (!r->cond_json) return SS_ENOMEM;
    for (int i = 0; i < r->n_conds; i++) {
        json_t *j = sink_condition_to_json(&r->conds[i]);
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        json_decref(j);
        if (!s) return ss_fail(SS_ENOMEM, "out of memory");
        snprintf(r->cond_json[i], sizeof r->cond_json[i], "%s", s);
        free(s);
    }
    return setup_metrics(r);
}

static int workers_new(runner *r, int n) {
    if (!(r->wk = ss_calloc((size_t)n, sizeof *r->wk))) return SS_ENOMEM;
    r->n_workers = n;
    const size_t npx = (size_t)3 * r->W * r->H;
    for (int i = 0; i < n; i++) {
        worker *w = &r->wk[i];
        w->r = r;
        if (!(w->sk = sink_ctx_new()) || !(w->rgb = ss_malloc(npx)) || !(w->base = ss_malloc(npx)) ||
            !(w->ttypes = ss_calloc((size_t)r->S, 1)) || (r->emb_n && !(w->emb = ss_malloc(sizeof(float) * 2 * r->emb_n))))
            return SS_ENOMEM;
        int wrc = r->pp->kind->ws_new ? r->pp->kind->ws_new(&w->ws) : 0;
        if (wrc < 0) return wrc;
        int rc = sink_ctx_set_probe(w->sk, r->probe, r->n_probe, TOK_IMAGE, 5, 0);
        if (rc < 0) return rc;
        sink_ctx_set_spiral(w->sk, r->c->spiral);
    }
    return 0;
}

static void workers_free(runner *r) {
    for (int i = 0; i < r->n_workers; i++) {
        sink_ctx_free(r->wk[i].sk);
        if (r->wk[i].ws) r->pp->kind->ws_free(r->wk[i].ws);
        free(r->wk[i].rgb);
        free(r->wk[i].base);
        free(r->wk[i].padded);
        free(r->wk[i].ttypes);
        free(r->wk[i].emb);
    }
    free(r->wk);
}

/* The missing items of one (prompt, seed) group, baseline first. */
static int run_group(worker *w, int p, uint64_t seed, const uint8_t *todo) {
    runner *r = w->r;
    int rc = todo[0] ? run_item(w, 0, p, seed, w->base, NULL) : baseline_image(w, p, seed, w->base);
    for (int ci = 1; ci < r->n_conds && !rc && !stopped(r); ci++)
        if (todo[ci]) rc = run_item(w, ci, p, seed, w->rgb, w->base);
    return rc;
}

int run_lock(const char *exp_dir, int *fd) {
    *fd = -1;
    char path[PATHLEN];
    int rc;
    if ((rc = ss_mkdir_p(exp_dir)) < 0) return rc;
    if ((size_t)snprintf(path, sizeof path, "%s/.lock", exp_dir) >= sizeof path) return ss_fail(SS_EARG, "%s: path too long", exp_dir);
    const int lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (flock(lfd, LOCK_EX | LOCK_NB)) {
        close(lfd);
        return ss_fail(SS_EIO, "%s: another sinkscope run is working in this folder (%s is locked)", exp_dir, path);
    }
    *fd = lfd;
    return 0;
}

void run_unlock(int fd) {
    if (fd >= 0) close(fd);
}

const char *run_redo_reason(int why) {
    static const char *const R[RUN_REDO_N] = {"", "missing", "not a regular file", "of another size than recorded",
                                              "with another SHA-256 than recorded", "not a readable PNG of the run's size",
                                              "named differently in its record",
                                              "without its FID features (missing, or not as recorded)"};
    return why > 0 && why < RUN_REDO_N ? R[why] : "";
}

/* Does the image of a finished record still hold what the record says? 0 when it does, else a
 * RUN_REDO_* reason. Records with image_bytes and image_sha256: the file's size and digest;
 * older records: a PNG that decodes to the run's image size. */
static int verify_features(const runner *r, const record_image *ri, const char *frel) {
    char path[PATHLEN], hex[DIGEST_HEX];
    struct stat sb;
    if (!ri->features || strcmp(ri->features, frel) || !ri->features_sha256[0]) return RUN_REDO_FEATURES;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", r->c->exp_dir, frel) >= sizeof path) return RUN_REDO_FEATURES;
    if (stat(path, &sb) || !S_ISREG(sb.st_mode)) return RUN_REDO_FEATURES;
    if (digest_file(path, hex) < 0 || strcmp(hex, ri->features_sha256)) return RUN_REDO_FEATURES;
    return 0;
}

static int verify_image(const runner *r, const record_image *ri, const char *rel, const char *frel) {
    if (!ri->image || strcmp(ri->image, rel)) return RUN_REDO_NAME;
    const int fw = frel ? verify_features(r, ri, frel) : 0;
    char path[PATHLEN];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", r->c->exp_dir, rel) >= sizeof path) return RUN_REDO_MISSING;
    struct stat sb;
    if (stat(path, &sb)) return RUN_REDO_MISSING;
    if (!S_ISREG(sb.st_mode)) return RUN_REDO_NOT_REGULAR;
    if (ri->bytes != -1 || ri->sha256[0]) {
        if (ri->bytes != (long long)sb.st_size) return RUN_REDO_SIZE;
        char hex[DIGEST_HEX];
        if (digest_file(path, hex) < 0 || strcmp(hex, ri->sha256)) return RUN_REDO_DIGEST;
        return fw;
    }
    int iw = 0, ih = 0;
    uint8_t *img = NULL;
    const int rc = png_read_rgb(path, &iw, &ih, &img);
    free(img);
    return rc < 0 || iw != r->W || ih != r->H ? RUN_REDO_PNG : fw;
}

int run_experiment(const run_config *c, run_result *res) {
    memset(res, 0, sizeof *res);
    runner r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.rf.fd = -1;
    int lock_fd = -1, rc, *work = NULL;
    uint8_t *todo = NULL;
    size_t *check = NULL;
    exp_blocks bm = {0};
    char path[PATHLEN];
    if (!c->lock_held && (rc = run_lock(c->exp_dir, &lock_fd)) < 0) return rc;
    if ((rc = setup(&r, &bm)) < 0 || (rc = settle_config(&r, &bm)) < 0) goto done;
    snprintf(path, sizeof path, "%s/records.jsonl", c->exp_dir);
    if ((rc = records_open(&r.rf, path)) < 0) goto done;
    res->repaired = r.rf.truncated;
    for (int i = 0; i < r.n_conds; i++) {
        snprintf(path, sizeof path, "%s/images/%s", c->exp_dir, r.conds[i].name);
        if ((rc = ss_mkdir_p(path)) < 0) goto done;
        clean_tmp(path);
        if (c->metrics & RUN_METRIC_FID) {
            snprintf(path, sizeof path, "%s/features/%s", c->exp_dir, r.conds[i].name);
            if ((rc = ss_mkdir_p(path)) < 0) goto done;
            clean_tmp(path);
        }
    }
    /* what is missing, decided once here: the workers never read the key set. setup bounded
     * n_groups (int) and the seeds (uint64). */
    const int S = c->seeds_per_prompt, n_groups = r.ps.n * S, NC = r.n_conds;
    const size_t n_items = (size_t)n_groups * (size_t)NC;
    todo = ss_malloc(n_items ? n_items : 1);
    work = ss_malloc(sizeof *work * (n_groups ? n_groups : 1));
    check = ss_malloc(sizeof *check * (r.rf.keys.n ? r.rf.keys.n : 1)); /* finished items have distinct keys */
    if (!todo || !work || !check) {
        rc = SS_ENOMEM;
        goto done;
    }
    char key[600];
    size_t n_check = 0;
    for (size_t it = 0; it < n_items; it++) {
        const int g = (int)(it / (size_t)NC), ci = (int)(it % (size_t)NC);
        item_key(key, sizeof key, r.conds[ci].name, PIDX(&r, g / S), SEED(&r, g / S, g % S));
        todo[it] = !keyset_has(&r.rf.keys, key);
        if (!todo[it] && n_check < r.rf.keys.n) check[n_check++] = it;
    }
    /* the images of finished records: missing or changed ones are made again (their new record
     * supersedes the old one); in parallel, the result does not depend on it */
    long why_n[RUN_REDO_N] = {0};
    char why_first[RUN_REDO_N][600];
    memset(why_first, 0, sizeof why_first);
    uint8_t *why = ss_calloc(n_check ? n_check : 1, 1);
    if (!why) {
        rc = SS_ENOMEM;
        goto done;
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (long i = 0; i < (long)n_check; i++) {
        const size_t it = check[i];
        const int g = (int)(it / (size_t)NC), ci = (int)(it % (size_t)NC);
        char k2[600], r2[600], f2[600];
        item_key(k2, sizeof k2, r.conds[ci].name, PIDX(&r, g / S), SEED(&r, g / S, g % S));
        image_rel(r2, sizeof r2, r.conds[ci].name, PIDX(&r, g / S), SEED(&r, g / S, g % S));
        features_rel(f2, sizeof f2, r.conds[ci].name, PIDX(&r, g / S), SEED(&r, g / S, g % S));
        const record_image *ri = records_image(&r.rf, k2);
        why[i] = (uint8_t)(ri ? verify_image(&r, ri, r2, (c->metrics & RUN_METRIC_FID) ? f2 : NULL) : RUN_REDO_MISSING);
    }
    for (size_t i = 0; i < n_check && !rc; i++) /* never replace what is not a file: refuse, naming it */
        if (why[i] == RUN_REDO_NOT_REGULAR) {
            const size_t it = check[i];
            const int g = (int)(it / (size_t)NC), ci = (int)(it % (size_t)NC);
            char rel[600];
            image_rel(rel, sizeof rel, r.conds[ci].name, PIDX(&r, g / S), SEED(&r, g / S, g % S));
            rc = ss_fail(SS_EIO, "%s/%s: the image of a finished record is not a regular file; move it away and run again",
                         c->exp_dir, rel);
        }
    if (rc) {
        free(why);
        goto done;
    }
    for (size_t i = 0; i < n_check; i++) {
        if (!why[i]) continue;
        const size_t it = check[i];
        const int g = (int)(it / (size_t)NC), ci = (int)(it % (size_t)NC);
        todo[it] = 1;
        if (!why_n[why[i]]++) image_rel(why_first[why[i]], sizeof why_first[why[i]], r.conds[ci].name, PIDX(&r, g / S), SEED(&r, g / S, g % S));
        res->redone++;
    }
    free(why);
    for (int k = 0; k < RUN_REDO_N; k++) res->redo[k] = why_n[k];
    if (res->redone) {
        char msg[2048];
        size_t m = 0;
        for (int k = 1; k < RUN_REDO_N && m < sizeof msg; k++)
            if (why_n[k])
                m += (size_t)snprintf(msg + m, sizeof msg - m, "%s%ld %s (first: %s)", m ? "; " : "", why_n[k],
                                      run_redo_reason(k), why_first[k]);
        fprintf(stderr, "sinkscope run: warning: %s: %ld finished image%s no longer match%s %s record%s and will be made "
                "again: %s\n", c->exp_dir, res->redone, res->redone == 1 ? "" : "s", res->redone == 1 ? "es" : "",
                res->redone == 1 ? "its" : "their", res->redone == 1 ? "" : "s", msg);
    }
    int n_work = 0;
    for (int g = 0; g < n_groups; g++) {
        int any = 0;
        for (int ci = 0; ci < NC; ci++) {
            any |= todo[(size_t)g * NC + ci];
            r.done += !todo[(size_t)g * NC + ci];
        }
        if (any) work[n_work++] = g;
    }
    r.total = (long)n_groups * NC;
    res->total = r.total;
    res->before = r.done;
    if (r.emb_n && n_work > 0) {
        uint8_t *need = ss_calloc((size_t)(r.ps.n ? r.ps.n : 1), 1);
        if (!need) {
            rc = SS_ENOMEM;
            goto done;
        }
        for (int i = 0; i < n_work; i++) need[work[i] / S] = 1;
        rc = encode_stage(&r, need);
        free(need);
        if (rc < 0) goto done;
    }
    const int max_threads = omp_get_max_threads();
    int jobs = c->jobs > 0 ? c->jobs : max_threads;
    if (jobs > n_work) jobs = n_work > 0 ? n_work : 1;
    const int per_image = c->jobs > 0 && max_threads / jobs > 1 ? max_threads / jobs : 1;
    if ((rc = workers_new(&r, jobs)) < 0) goto done;
    r.t0 = now_s();
    if (c->progress_bar) draw_bar(&r, 0);
    const int saved_levels = omp_get_max_active_levels();
    if (per_image > 1) omp_set_max_active_levels(2);
#pragma omp parallel num_threads(jobs)
    {
        worker *w = &r.wk[omp_get_thread_num()];
        omp_set_num_threads(per_image); /* threads inside each image (this task's setting only) */
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n_work; i++) {
            if (stopped(&r)) continue;
            const int g = work[i];
            const int grc = run_group(w, g / S, SEED(&r, g / S, g % S), todo + (size_t)g * NC);
            if (grc < 0) {
#pragma omp critical(run_io)
                if (!r.err_code) {
                    r.err_code = grc;
                    snprintf(r.err, sizeof r.err, "%s", ss_err());
#pragma omp atomic write
                    r.failed = 1; /* read without the lock by stopped() */
                }
            }
        }
    }
    omp_set_max_active_levels(saved_levels);
    if (r.failed) rc = ss_fail(r.err_code, "%s", r.err);
    res->made = r.made;
    res->seconds = now_s() - r.t0;
    if (c->progress_bar) {
        if (rc) fputc('\n', stderr);
        else draw_bar(&r, 1);
    }
done:
    free(todo);
    free(work);
    free(check);
    workers_free(&r);
    records_close(&r.rf);
    free(r.cond_json);
    free(r.types);
    free(r.sites);
    free(r.conds);
    free(r.ps.m);
    free(r.text_emb);
    clipt_free(r.clip);
    lpips_free(r.lp);
    inception_free(r.inc);
    ss_pipe_close(r.pp);
    run_unlock(lock_fd);
    return rc < 0 ? rc : 0;
}
