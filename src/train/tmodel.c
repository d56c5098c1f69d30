/* tr_model: the trainable parameter set (one fp32 arena, diffusers names), its sd3_model view,
 * initialisation, and the pipeline-folder writer. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "io/jsonfile.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "train/train.h"

#define ALIGN 16 /* floats: every tensor starts on a 64-byte boundary */
#define POS_NAME "pos_embed.pos_embed"
#define TE_PREFIX "text_encoder."

typedef struct {
    tr_model *m;
    int cap, rc;
} table_ctx;

static void add_entry(table_ctx *c, const char *name, int ndim, const int64_t *shape) {
    if (c->rc) return;
    if (c->m->nt == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        tr_tensor *t = realloc(c->m->t, sizeof *t * cap);
        if (!t) {
            c->rc = ss_fail(SS_ENOMEM, "trainer: out of memory for the tensor table");
            return;
        }
        c->m->t = t;
        c->cap = cap;
    }
    tr_tensor *e = &c->m->t[c->m->nt++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->n = 1;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i], e->n *= (size_t)shape[i];
    e->off = c->m->n;
    c->m->n += (e->n + ALIGN - 1) / ALIGN * ALIGN;
    const size_t len = strlen(name);
    const int is_weight = len > 7 && !strcmp(name + len - 7, ".weight");
    e->decay = ndim >= 2 && is_weight && strncmp(name, TE_PREFIX, strlen(TE_PREFIX)) != 0;
}

static void enum_cb(void *ctx, const char *name, int ndim, const int64_t *shape) {
    if (!strcmp(name, POS_NAME)) return; /* frozen, kept outside the arenas */
    add_entry(ctx, name, ndim, shape);
}

int tr_model_find(const tr_model *m, const char *name) {
    for (int i = 0; i < m->nt; i++)
        if (!strcmp(m->t[i].name, name)) return i;
    return -1;
}

/* The storage of tensor `name` in m->param (the frozen position table outside it), when its
 * shape is the one asked for; NULL otherwise. */
static const float *lookup(void *ctx, const char *name, int ndim, const int64_t *shape) {
    const tr_model *m = ctx;
    if (!strcmp(name, POS_NAME)) return m->pos_table;
    const int i = tr_model_find(m, name);
    if (i < 0 || m->t[i].ndim != ndim) return NULL;
    for (int d = 0; d < ndim; d++)
        if (m->t[i].shape[d] != shape[d]) return NULL;
    return m->param + m->t[i].off;
}

/* The same slot in m->grad (the gradient view; the frozen position table has none: its slot is
 * the table itself, which the backward never writes). */
static const float *grad_lookup(void *ctx, const char *name, int ndim, const int64_t *shape) {
    const tr_model *m = ctx;
    const float *p = lookup(ctx, name, ndim, shape);
    return !p || p == m->pos_table ? p : m->grad + (p - m->param);
}

/* Points the sd3_model view's weights into m->param and the gradient view's into m->grad,
 * through the SD3 loader's name table. */
static int bind_view(tr_model *m) {
    int rc = sd3_bind_view(&m->view, &m->cfg, lookup, m, "trainer: parameter table");
    if (rc >= 0) rc = sd3_bind_view(&m->gview, &m->cfg, grad_lookup, m, "trainer: gradient table");
    const int it = tr_model_find(m, TE_PREFIX TE_TOKEN_EMBEDDING), ip = tr_model_find(m, TE_PREFIX TE_POSITION_EMBEDDING);
    if (rc < 0) return rc;
    if (it < 0 || ip < 0) return ss_fail(SS_EMISSING, "trainer: the text encoder's tensors are missing from the parameter table");
    m->tok_emb = m->param + m->t[it].off;
    m->pos_emb = m->param + m->t[ip].off;
    return 0;
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Uniform in [-a, a) from element j of stream `stream`. */
static float unif(uint64_t seed, uint64_t stream, size_t j, double a) {
    return (float)(a * (2.0 * (double)(rng_uniform_u64(seed, stream, j) >> 11) * 0x1.0p-53 - 1.0));
}

static void init_tensor(const tr_model *m, int i, uint64_t seed, int mode, float *x) {
    const tr_tensor *t = &m->t[i];
    const uint64_t stream = 1000 + (uint64_t)i;
    const int is_bias = has_suffix(t->name, ".bias"), is_te = !strncmp(t->name, TE_PREFIX, strlen(TE_PREFIX));
    const int is_norm_w = t->ndim == 1 && !is_bias; /* RMSNorm gains */
    const size_t fan_in = t->ndim >= 2 ? t->n / (size_t)t->shape[0] : 1, fan_out = t->ndim >= 2 ? (size_t)t->shape[0] : 1;
    if (mode == 0) { /* every tensor non-zero and of moderate size: good for gradient checks */
        double a = is_te ? 0.5 : is_bias ? 0.1 : is_norm_w ? 0.2 : 1.0 / sqrt((double)fan_in);
        for (size_t j = 0; j < t->n; j++) x[j] = (is_norm_w ? 1.0f : 0.0f) + unif(seed, stream, j, a);
        return;
    }
    /* training init (DiT/SD3 practice): adaLN-Zero modulation and output layer start at zero,
     * so every block starts as the identity and the output as 0 */
    const int zero = strstr(t->name, "norm1.linear") || strstr(t->name, "norm1_context.linear") ||
                     strstr(t->name, "norm_out.linear") || !strncmp(t->name, "proj_out.", 9);
    if (zero || is_bias) {
        memset(x, 0, sizeof(float) * t->n);
    } else if (is_norm_w) {
        for (size_t j = 0; j < t->n; j++) x[j] = 1.0f;
    } else if (is_te || strstr(t->name, "timestep_embedder") || strstr(t->name, "text_embedder")) {
        rng_normal_fill(x, t->n, seed, stream);
        for (size_t j = 0; j < t->n; j++) x[j] *= 0.02f;
    } else { /* xavier uniform */
        const double a = sqrt(6.0 / (double)(fan_in + fan_out));
        for (size_t j = 0; j < t->n; j++) x[j] = unif(seed, stream, j, a);
    }
}

int tr_model_new(tr_model **out, const sd3_config *c, const te_config *tc, uint64_t seed, int init) {
    *out = NULL;
    if (c->joint_attention_dim != tc->hidden_size || c->pooled_projection_dim != tc->pooled_size)
        return ss_fail(SS_EARG, "trainer: text width %d/%d must equal joint_attention_dim %d and pooled_projection_dim %d",
                       tc->hidden_size, tc->pooled_size, c->joint_attention_dim, c->pooled_projection_dim);
    tr_model *m = ss_calloc(1, sizeof *m);
    if (!m) return SS_ENOMEM;
    m->cfg = *c;
    m->tcfg = *tc;
    m->D = c->num_heads * c->head_dim;
    table_ctx tcx = {.m = m};
    int rc = sd3_enumerate_tensors(c, enum_cb, &tcx);
    const int64_t ts[2] = {tc->vocab_size, tc->hidden_size}, ps[2] = {tc->max_length, tc->hidden_size};
    add_entry(&tcx, TE_PREFIX TE_TOKEN_EMBEDDING, 2, ts);
    add_entry(&tcx, TE_PREFIX TE_POSITION_EMBEDDING, 2, ps);
    if (!rc) rc = tcx.rc;
    const int M = c->pos_embed_max_size;
    if (!rc) {
        m->param = ss_calloc(m->n, sizeof(float));
        m->grad = ss_calloc(m->n, sizeof(float));
        m->pos_table = ss_malloc(sizeof(float) * M * M * m->D);
        if (!m->param || !m->grad || !m->pos_table) rc = SS_ENOMEM;
    }
    if (!rc) rc = bind_view(m);
    if (rc) {
        tr_model_free(m);
        return rc;
    }
    sd3_sincos_table(m->pos_table, M, m->D, (double)c->sample_size / c->patch_size, 1.0);
    for (int i = 0; i < m->nt; i++) init_tensor(m, i, seed, init, m->param + m->t[i].off);
    *out = m;
    return 0;
}

void tr_model_free(tr_model *m) {
    if (!m) return;
    free(m->t);
    free(m->param);
    free(m->grad);
    free(m->pos_table);
    free(m->view.blocks);
    free(m->gview.blocks);
    free(m);
}

/* ---- pipeline folder ---- */

/* buf = a/b; fails (instead of truncating) when it does not fit */
static int join(char *buf, size_t size, const char *a, const char *b) {
    if ((size_t)snprintf(buf, size, "%s/%s", a, b) >= size) return ss_fail(SS_EARG, "trainer: path too long: %s/%s", a, b);
    return 0;
}


static int save_transformer(const tr_model *m, const float *w, const char *dir) {
    char path[4200];
    int rc = join(path, sizeof path, dir, "config.json");
    if (rc >= 0) rc = sd3_config_save(&m->cfg, path);
    if (rc < 0) return rc;
    st_writer *wr = st_writer_new();
    if (!wr) return SS_ENOMEM;
    const int M = m->cfg.pos_embed_max_size;
    const int64_t ps[3] = {1, (int64_t)M * M, m->D};
    rc = st_writer_add_f32(wr, POS_NAME, ST_F32, 3, ps, m->pos_table);
    for (int i = 0; i < m->nt && rc >= 0; i++)
        if (strncmp(m->t[i].name, TE_PREFIX, strlen(TE_PREFIX)))
            rc = st_writer_add_f32(wr, m->t[i].name, ST_F32, m->t[i].ndim, m->t[i].shape, w + m->t[i].off);
    if (rc >= 0) rc = st_writer_set_metadata(wr, "format", "pt");
    if (rc >= 0) rc = join(path, sizeof path, dir, "diffusion_pytorch_model.safetensors");
    if (rc >= 0) rc = st_writer_save(wr, path);
    st_writer_free(wr);
    return rc < 0 ? rc : 0;
}

/* Writes every file of the folder into `dir` (which exists). */
static int save_into(const tr_model *m, const float *w, const tok_vocab *vocab, double shift, const char *dir) {
    char path[4200];
    int rc;
    if ((rc = join(path, sizeof path, dir, "transformer")) < 0 || (rc = ss_mkdir_p(path)) < 0 ||
        (rc = save_transformer(m, w, path)) < 0)
        return rc;
    /* te_save wants a te; this one borrows the arena and the vocabulary (never te_free'd) */
    te tmp = {.cfg = m->tcfg,
              .tok_emb = (float *)w + (m->tok_emb - m->param),
              .pos_emb = (float *)w + (m->pos_emb - m->param),
              .vocab = (tok_vocab *)vocab};
    if ((rc = te_save(&tmp, dir)) < 0) return rc;
    if ((rc = join(path, sizeof path, dir, "scheduler")) < 0 || (rc = ss_mkdir_p(path)) < 0 ||
        (rc = join(path, sizeof path, dir, "scheduler/scheduler_config.json")) < 0)
        return rc;
    json_t *s = json_object();
    json_object_set_new(s, "_class_name", json_string("FlowMatchEulerDiscreteScheduler"));
    json_object_set_new(s, "num_train_timesteps", json_integer(1000));
    json_object_set_new(s, "shift", json_real(shift));
    json_object_set_new(s, "use_dynamic_shifting", json_false());
    if ((rc = ss_json_save(path, s, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17))) < 0 || (rc = join(path, sizeof path, dir, "model_index.json")) < 0) return rc;
    static const char *const comp[4][3] = {{"transformer", "diffusers", "SD3Transformer2DModel"},
                                           {"text_encoder", "sinkscope", "WordEmbeddingTextEncoder"},
                                           {"tokenizer", "sinkscope", "WordTokenizer"},
                                           {"scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"}};
    json_t *o = json_object();
    json_object_set_new(o, "_class_name", json_string("SinkscopePixelPipeline"));
    json_object_set_new(o, "_trained_by", json_string("sinkscope train"));
    for (int i = 0; i < 4; i++) json_object_set_new(o, comp[i][0], json_pack("[s, s]", comp[i][1], comp[i][2]));
    json_object_set_new(o, "vae", json_null());
    return ss_json_save(path, o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
}

/* ---- crash-safe replacement of the folder ---- */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)ftw;
    if ((type == FTW_DP ? rmdir(path) : unlink(path)) && errno != ENOENT)
        return ss_fail(SS_EIO, "%s: cannot remove: %s", path, strerror(errno)), -1;
    return 0;
}

/* rm -rf of a folder this writer owns (DIR.tmp / DIR.old, or the replaced DIR); absent is fine. */
static int rm_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb)) return errno == ENOENT ? 0 : ss_fail(SS_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return unlink(path) ? ss_fail(SS_EIO, "%s: cannot remove: %s", path, strerror(errno)) : 0;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) ? SS_EIO : 0;
}

/* fsync one file or folder (by name); a file system that cannot sync folders (EINVAL) is fine */
static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: cannot open to sync: %s", path, strerror(errno));
    const int bad = fsync(fd) && errno != EINVAL;
    const int e = errno;
    close(fd);
    return bad ? ss_fail(SS_EIO, "%s: fsync failed: %s", path, strerror(e)) : 0;
}

static int sync_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)ftw;
    return (type == FTW_F || type == FTW_DP) && fsync_path(path) < 0 ? -1 : 0;
}

int tr_sync_parent(const char *path) {
    char *d = strdup(path);
    if (!d) return ss_fail(SS_ENOMEM, "out of memory");
    char *slash = strrchr(d, '/');
    while (slash && slash > d && slash[1] == 0) { /* "a/b/" -> parent of b */
        *slash = 0;
        slash = strrchr(d, '/');
    }
    const char *dir = !slash ? "." : slash == d ? "/" : (*slash = 0, d);
    const int rc = fsync_path(dir);
    free(d);
    return rc;
}

int tr_model_save(const tr_model *m, const float *weights, const tok_vocab *vocab, double shift, const char *dir) {
    if (!vocab) return ss_fail(SS_EARG, "trainer: saving a model needs the vocabulary");
    /* DIR.tmp is built completely and made durable (every file and folder fsynced), then swapped
     * with DIR in one atomic rename (RENAME_EXCHANGE): at every instant DIR is either the old
     * complete folder or the new complete one. The old one (now at DIR.tmp) is removed after. */
    const size_t len = strlen(dir);
    char *tmp = malloc(len + 5), *old = malloc(len + 5);
    if (!tmp || !old) {
        free(tmp), free(old);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    snprintf(tmp, len + 5, "%s.tmp", dir);
    snprintf(old, len + 5, "%s.old", dir);
    struct stat sb;
    const int have = lstat(dir, &sb) == 0;
    int rc = 0;
    if (have && !S_ISDIR(sb.st_mode)) rc = ss_fail(SS_EIO, "%s: exists and is not a folder; not replacing it", dir);
    if (rc >= 0) rc = rm_tree(tmp); /* a leftover of an interrupted export */
    if (rc >= 0 && !have && lstat(old, &sb) == 0) rc = rm_tree(old);
    if (rc >= 0) rc = ss_mkdir_p(tmp);
    if (rc >= 0) rc = save_into(m, weights, vocab, shift, tmp);
    if (rc >= 0 && nftw(tmp, sync_entry, 16, FTW_DEPTH | FTW_PHYS)) rc = SS_EIO;
    if (rc >= 0 && have) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
            if ((rc = tr_sync_parent(dir)) >= 0) rc = rm_tree(tmp); /* the old model */
        } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
            /* no atomic exchange on this file system: DIR is missing for a moment (a resume
             * redoes the export from the checkpoint) */
            if (rename(dir, old)) rc = ss_fail(SS_EIO, "%s: cannot move the previous model aside: %s", dir, strerror(errno));
            else if (rename(tmp, dir)) rc = ss_fail(SS_EIO, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
            else if ((rc = tr_sync_parent(dir)) >= 0) rc = rm_tree(old);
        } else {
            rc = ss_fail(SS_EIO, "%s: cannot swap %s into place: %s", dir, tmp, strerror(errno));
        }
    } else if (rc >= 0) {
        if (rename(tmp, dir)) rc = ss_fail(SS_EIO, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
    }
    if (rc >= 0) rc = tr_sync_parent(dir);
    free(tmp);
    free(old);
    return rc < 0 ? rc : 0;
}
