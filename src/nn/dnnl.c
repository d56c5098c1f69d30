#include "nn/dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "core/err.h"
#include "nn/fastmath.h"
#include "nn/blas.h"

SS_BLAS_GUARD /* links the OpenBLAS kernel check (nn/blas.h) into every BLAS user */

int ss_precision_parse(const char *s, int *prec) {
    if (!strcmp(s, "f32") || !strcmp(s, "fp32")) *prec = SS_PREC_F32;
    else if (!strcmp(s, "bf16")) *prec = SS_PREC_BF16;
    else {
        char buf[64];
        return ss_fail(SS_EARG, "precision '%s': expected f32 or bf16", ss_printable(s, buf, sizeof buf));
    }
    return SS_OK;
}

const char *ss_precision_name(int prec) { return prec == SS_PREC_BF16 ? "bf16" : "f32"; }

void ss_bf16_from_f32_rows(uint16_t *y, int ldy, const float *x, int ldx, int M, int N) {
#pragma omp parallel for schedule(static) if ((size_t)M * N > 65536 && !omp_in_parallel())
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * ldx;
        uint16_t *yi = y + (size_t)i * ldy;
#pragma omp simd
        for (int j = 0; j < N; j++) yi[j] = ss_bf16_from_f32(xi[j]);
    }
}

/* ---- the process's one CPU engine (matmul here, convolution in dnnl_conv.c) ---- */

static dnnl_engine_t g_cpu_engine;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;

static void engine_create(void) {
    if (dnnl_engine_create(&g_cpu_engine, dnnl_cpu, 0) != dnnl_success) g_cpu_engine = NULL;
}

void *ss_dnnl_engine(void) {
    pthread_once(&g_engine_once, engine_create);
    return g_cpu_engine;
}

/* ---- the primitive cache ---- */

typedef struct {
    int M, N, K, lda, ldb, ldc, flags, bias, nthr;
} key;

/* Internal key flags, beside the public SS_DNNL_* ones. */
#define K_PACKED (1 << 8)   /* B is a packed Linear weight (ss_dnnl_pack), the whole [N, K] */
#define K_GELU16 (1 << 9)   /* C is bf16 = bf16(gelu_tanh(A B + bias)) (a oneDNN post-op) */
#define K_ACCUM (1 << 10)   /* C += A B (a oneDNN sum post-op): the later K chunks of a packed weight */
#define K_FORCED (1 << 30)  /* ss_dnnl_use_fallback(1): the portable path */

typedef struct {
    key k;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, c, bias;
    size_t scratch;
    int fallback; /* not a brgemm implementation: ss_dnnl_matmul converts to fp32 and calls sgemm */
    char impl[64];
} entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t g_engine; /* ss_dnnl_engine(), once a primitive is made */
static entry **g_cache; /* reachable for the process's lifetime: primitives are never freed */
static int g_n, g_cap;

static int g_force_fallback;

/* Per thread: a stream, the scratchpad of the primitives it runs, the fallback's fp32 blocks and
 * the bf16 copy of an fp32 input. The states are kept in one global list (so they stay reachable
 * and bounded by the most threads ever alive at once): a thread takes a free one on its first
 * call and hands it back when it exits (pthread key destructor). */
typedef struct tstate {
    struct tstate *next;
    int busy;
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_n;
    float *fa, *fb;
    size_t fa_n, fb_n;
    uint16_t *a16;
    size_t a16_n;
    uint16_t *ak; /* one K chunk of a band's input, dense */
    size_t ak_n;
    float *c32; /* a tile's output when C is strided */
    size_t c32_n;
    float *g32; /* the fallback's fp32 sums before GELU */
    size_t g32_n;
    uint16_t *wplain; /* the fallback's unpacked copy of a packed weight */
    size_t wplain_n;
} tstate;
static tstate *g_states;
static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static _Thread_local tstate *t_me;

static void state_release(void *p) {
    pthread_mutex_lock(&g_lock);
    ((tstate *)p)->busy = 0;
    pthread_mutex_unlock(&g_lock);
}
static void key_make(void) { pthread_key_create(&g_key, state_release); }

static tstate *me(void) {
    if (t_me) return t_me;
    pthread_once(&g_key_once, key_make);
    pthread_mutex_lock(&g_lock);
    tstate *t = g_states;
    while (t && t->busy) t = t->next;
    if (!t && (t = calloc(1, sizeof *t))) {
        t->next = g_states;
        g_states = t;
    }
    if (t) t->busy = 1;
    pthread_mutex_unlock(&g_lock);
    if (!t) {
        ss_fail(SS_ENOMEM, "oneDNN: out of memory for a thread's state");
        return NULL;
    }
    pthread_setspecific(g_key, t);
    return t_me = t;
}

void ss_dnnl_use_fallback(int on) { g_force_fallback = on; }

/* A thread buffer of at least n bf16 values, 64-byte aligned (kept between calls). */
static int grow16(uint16_t **p, size_t *have, size_t n) {
    if (n <= *have) return 0;
    free(*p);
    *p = ss_malloc_aligned(sizeof(uint16_t) * n);
    *have = *p ? n : 0;
    return *p ? 0 : ss_fail(SS_ENOMEM, "bf16 matmul: out of memory for a %zu-value bf16 block", n);
}

static int grow(float **p, size_t *have, size_t n) {
    if (n <= *have) return 0;
    free(*p);
    *p = ss_malloc_aligned(sizeof(float) * n); /* 64-byte aligned: see core/err.h */
    *have = *p ? n : 0;
    return *p ? 0 : ss_fail(SS_ENOMEM, "bf16 matmul: out of memory for a %zu-float block", n);
}

/* The portable path (CPUs where oneDNN has no brgemm bf16 matmul, e.g. AVX2 only): blocks of
 * A and B widened to fp32, products by sgemm. The same bf16 inputs, fp32 accumulation; as
 * deterministic as the fp32 path. */
#define FB_MB 512
#define FB_NB 1024
static int fallback_matmul(float *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb,
                           const float *bias, int M, int N, int K, int flags) {
    const int trans = flags & SS_DNNL_TRANS_B; /* one thread: a tile of ss_dnnl_matmul's */
    const int mb = M < FB_MB ? M : FB_MB, nb = N < FB_NB ? N : FB_NB;
    int rc;
    tstate *ts = me();
    if (!ts) return SS_ENOMEM;
    if ((rc = grow(&ts->fa, &ts->fa_n, (size_t)mb * K)) < 0 || (rc = grow(&ts->fb, &ts->fb_n, (size_t)nb * K)) < 0) return rc;
    float *fa = ts->fa, *fb = ts->fb;
    for (int i0 = 0; i0 < M; i0 += mb) {
        const int m = M - i0 < mb ? M - i0 : mb;
        for (int i = 0; i < m; i++) {
            const uint16_t *ai = a + (size_t)(i0 + i) * lda;
            float *fi = fa + (size_t)i * K;
#pragma omp simd
            for (int k = 0; k < K; k++) fi[k] = ss_bf16_to_f32(ai[k]);
        }
        for (int j0 = 0; j0 < N; j0 += nb) {
            const int n = N - j0 < nb ? N - j0 : nb;
            /* fb: this block of B as [n, K] (op(B)^T rows) */
            for (int j = 0; j < n; j++) {
                float *fj = fb + (size_t)j * K;
                if (trans) {
                    const uint16_t *bj = b + (size_t)(j0 + j) * ldb;
#pragma omp simd
                    for (int k = 0; k < K; k++) fj[k] = ss_bf16_to_f32(bj[k]);
                } else {
                    for (int k = 0; k < K; k++) fj[k] = ss_bf16_to_f32(b[(size_t)k * ldb + j0 + j]);
                }
            }
            float *cb = c + (size_t)i0 * ldc + j0;
            if (bias && !(flags & K_ACCUM))
                for (int i = 0; i < m; i++) memcpy(cb + (size_t)i * ldc, bias + j0, sizeof(float) * n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, K, 1.0f, fa, K, fb, K,
                        bias || (flags & K_ACCUM) ? 1.0f : 0.0f, cb, ldc);
        }
    }
    return 0;
}

static int dnnl_err(dnnl_status_t s, const char *what, const key *k) {
    return ss_fail(s == dnnl_out_of_memory ? SS_ENOMEM : SS_EARG,
                   "oneDNN: %s failed (%s) for a bf16 matmul M=%d N=%d K=%d", what, dnnl_status2str(s), k->M, k->N, k->K);
}

static int md_2d(dnnl_memory_desc_t *md, int rows, int cols, dnnl_dim_t s0, dnnl_dim_t s1, dnnl_data_type_t dt) {
    const dnnl_dims_t dims = {rows, cols}, strides = {s0, s1};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides) == dnnl_success ? 0 : -1;
}

/* ---- packed Linear weights: oneDNN's blocked layout, one per (N, K) ----
 * The layout is the one oneDNN's brgemm matmul picks (weights format `any`) for a one-thread
 * SS_DNNL_TILE_M x N x K product. On AMX and AVX512-BF16 that choice depends on N and K only,
 * and every other tile height accepts it (the primitives are created with it given, not `any`);
 * a tile height that refused it would fail to create, and the product would take the portable
 * path on an unpacked copy. */
typedef struct {
    int N, K, ok;
    dnnl_memory_desc_t md;
} wfmt;
static pthread_mutex_t g_fmt_lock = PTHREAD_MUTEX_INITIALIZER;
static wfmt *g_fmt;
static int g_nfmt, g_capfmt;

static int wfmt_create(wfmt *f) {
    dnnl_engine_t eng = ss_dnnl_engine();
    if (!eng) return 0;
    dnnl_memory_desc_t a, b, c;
    const dnnl_dims_t da = {SS_DNNL_TILE_M, f->K}, db = {f->K, f->N}, dc = {SS_DNNL_TILE_M, f->N};
    if (dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_bf16, dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_bf16, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab))
        return 0;
    dnnl_matmul_desc_t d;
    if (dnnl_matmul_desc_init(&d, &a, &b, NULL, &c) != dnnl_success) return 0;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1); /* as every tile's primitive is created */
    dnnl_primitive_desc_t pd = NULL;
    const dnnl_status_t s = dnnl_primitive_desc_create(&pd, &d, NULL, eng, NULL);
    omp_set_num_threads(saved);
    if (s != dnnl_success) return 0;
    const char *impl = NULL;
    int ok = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
             !strncmp(impl, "brg:", 4);
    const dnnl_memory_desc_t *w = ok ? dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) : NULL;
    if (w) f->md = *w;
    dnnl_primitive_desc_destroy(pd);
    return w != NULL;
}

/* The packed layout of a [N, K] weight, NULL when there is none (no brgemm bf16 matmul here). */
static const dnnl_memory_desc_t *packed_md(int N, int K) {
    const dnnl_memory_desc_t *md = NULL;
    pthread_mutex_lock(&g_fmt_lock);
    int i = 0;
    while (i < g_nfmt && !(g_fmt[i].N == N && g_fmt[i].K == K)) i++;
    if (i == g_nfmt) { /* entries are kept: the array only grows (pointers into it are not kept) */
        if (g_nfmt == g_capfmt) {
            const int cap = g_capfmt ? 2 * g_capfmt : 32;
            wfmt *f = realloc(g_fmt, sizeof *f * (size_t)cap);
            if (!f) goto done;
            g_fmt = f;
            g_capfmt = cap;
        }
        g_fmt[i] = (wfmt){.N = N, .K = K};
        g_fmt[i].ok = wfmt_create(&g_fmt[i]);
        g_nfmt++;
    }
    if (g_fmt[i].ok) {
        static _Thread_local dnnl_memory_desc_t copy; /* the array may move; callers copy at once */
        copy = g_fmt[i].md;
        md = &copy;
    }
done:
    pthread_mutex_unlock(&g_fmt_lock);
    return md;
}

/* A packed weight with a long K is stored as chunks of at most SS_DNNL_KCHUNK columns of W, each
 * packed on its own and multiplied in turn into the same fp32 output (the sum post-op): measured
 * on the AMX Xeon (one thread, 256 x 1536 products, best of 7), K 1024 and 1536 ran at 920-980
 * GFLOP/s, K 2048 and 3072 at 760-820 and K 6144 at 720-760. The chunking depends on K alone. */
#define SS_DNNL_KCHUNK 1536
#define SS_DNNL_KSPLIT_MIN 2048 /* K above this is chunked */
static int kchunks(int K, int *kc) {
    if (K <= SS_DNNL_KSPLIT_MIN) {
        *kc = K;
        return 1;
    }
    const int n = (K + SS_DNNL_KCHUNK - 1) / SS_DNNL_KCHUNK, c = ((K + n - 1) / n + 63) / 64 * 64;
    *kc = c;
    return (K + c - 1) / c;
}

/* bf16 elements of chunk c's packed part (rounded up to 64 bytes; 0: no packed layout), and the
 * chunk's first column and width. */
static size_t chunk_elems(int N, int K, int c, int *k0, int *kn) {
    int kc;
    const int n = kchunks(K, &kc);
    *k0 = c * kc;
    *kn = c == n - 1 ? K - *k0 : kc;
    const dnnl_memory_desc_t *md = packed_md(N, *kn);
    return md ? ((dnnl_memory_desc_get_size(md) + 1) / 2 + 31) & ~(size_t)31 : 0;
}

size_t ss_dnnl_packed_elems(int N, int K) {
    if (g_force_fallback || N <= 0 || K <= 0) return 0;
    int kc, k0, kn;
    const int n = kchunks(K, &kc);
    size_t total = 0;
    for (int c = 0; c < n; c++) {
        const size_t e = chunk_elems(N, K, c, &k0, &kn);
        if (!e) return 0;
        total += e;
    }
    return total;
}

/* Reorder one chunk between W's plain columns (kn of them, row stride K) and its packed layout. */
static int repack1(uint16_t *packed_p, uint16_t *plain_p, int N, int K, int kn, int to_packed) {
    const dnnl_memory_desc_t *pm = packed_md(N, kn);
    dnnl_engine_t eng = ss_dnnl_engine();
    if (!pm || !eng) return ss_fail(SS_EARG, "oneDNN: no packed layout for a %d x %d weight", N, kn);
    dnnl_memory_desc_t plain, packed = *pm;
    md_2d(&plain, kn, N, 1, K, dnnl_bf16); /* W [N, K] row-major is B [K, N] with strides (1, K) */
    const dnnl_memory_desc_t *from = to_packed ? &plain : &packed, *to = to_packed ? &packed : &plain;
    void *src = to_packed ? (void *)plain_p : (void *)packed_p, *dst = to_packed ? (void *)packed_p : (void *)plain_p;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_memory_t ms = NULL, md = NULL;
    dnnl_stream_t st = NULL;
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&rpd, from, eng, to, eng, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&r, rpd);
    if (s == dnnl_success) s = dnnl_memory_create(&ms, from, eng, src);
    if (s == dnnl_success) s = dnnl_memory_create(&md, to, eng, dst);
    if (s == dnnl_success) s = dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
        s = dnnl_primitive_execute(r, st, 2, args);
        if (s == dnnl_success) s = dnnl_stream_wait(st);
    }
    if (st) dnnl_stream_destroy(st);
    if (md) dnnl_memory_destroy(md);
    if (ms) dnnl_memory_destroy(ms);
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    return s == dnnl_success ? 0
                             : ss_fail(s == dnnl_out_of_memory ? SS_ENOMEM : SS_EARG,
                                       "oneDNN: reordering a %d x %d weight failed (%s)", N, kn, dnnl_status2str(s));
}

/* The whole weight, chunk by chunk (to_packed: plain src -> packed dst; else packed src -> plain dst). */
static int repack(uint16_t *dst, const uint16_t *src, int N, int K, int to_packed) {
    int kc, k0, kn, rc = 0;
    const int n = kchunks(K, &kc);
    size_t off = 0;
    for (int c = 0; c < n && rc == 0; c++) {
        const size_t e = chunk_elems(N, K, c, &k0, &kn);
        if (!e) return ss_fail(SS_EARG, "oneDNN: no packed layout for a %d x %d weight", N, kn);
        rc = to_packed ? repack1(dst + off, (uint16_t *)src + k0, N, K, kn, 1)
                       : repack1((uint16_t *)src + off, dst + k0, N, K, kn, 0);
        off += e;
    }
    return rc;
}

int ss_dnnl_pack(uint16_t *dst, const uint16_t *w, int N, int K) { return repack(dst, w, N, K, 1); }
int ss_dnnl_unpack(uint16_t *dst, const uint16_t *packed, int N, int K) { return repack(dst, packed, N, K, 0); }

/* Create the primitive for k into e (the lock is held). */
static int entry_create(entry *e, const key *k) {
    memset(e, 0, sizeof *e);
    e->k = *k;
    dnnl_status_t s;
    if (k->flags & K_FORCED) {
        e->fallback = 1;
        snprintf(e->impl, sizeof e->impl, "fallback:sgemm (forced)");
        return 0;
    }
    if (!g_engine && !(g_engine = ss_dnnl_engine())) return dnnl_err(dnnl_runtime_error, "creating the CPU engine", k);
    const dnnl_memory_desc_t *packed = NULL;
    if ((k->flags & K_PACKED) && !(packed = packed_md(k->N, k->K)))
        return dnnl_err(dnnl_invalid_arguments, "finding the packed weight layout", k);
    if (md_2d(&e->a, k->M, k->K, k->lda, 1, dnnl_bf16) ||
        (packed                      ? (e->b = *packed, 0)
         : k->flags & SS_DNNL_TRANS_B ? md_2d(&e->b, k->K, k->N, 1, k->ldb, dnnl_bf16)
                                      : md_2d(&e->b, k->K, k->N, k->ldb, 1, dnnl_bf16)) ||
        md_2d(&e->c, k->M, k->N, k->ldc, 1, k->flags & K_GELU16 ? dnnl_bf16 : dnnl_f32) ||
        (k->bias && md_2d(&e->bias, 1, k->N, k->N, 1, dnnl_f32)))
        return dnnl_err(dnnl_invalid_arguments, "describing the operands", k);
    dnnl_matmul_desc_t d;
    if ((s = dnnl_matmul_desc_init(&d, &e->a, &e->b, k->bias ? &e->bias : NULL, &e->c)) != dnnl_success)
        return dnnl_err(s, "describing the matmul", k);
    dnnl_primitive_attr_t attr;
    if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success) return dnnl_err(s, "creating attributes", k);
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (k->flags & K_ACCUM) { /* C += A B */
        dnnl_post_ops_t po = NULL;
        if ((s = dnnl_post_ops_create(&po)) == dnnl_success && (s = dnnl_post_ops_append_sum(po, 1.0f)) == dnnl_success)
            s = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
        if (s != dnnl_success) {
            dnnl_primitive_attr_destroy(attr);
            return dnnl_err(s, "adding the sum post-op", k);
        }
    }
    if (k->flags & K_GELU16) { /* GELU (tanh form) on the fp32 sum, then the bf16 store */
        dnnl_post_ops_t po = NULL;
        if ((s = dnnl_post_ops_create(&po)) == dnnl_success &&
            (s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_tanh, 0.0f, 0.0f)) == dnnl_success)
            s = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
        if (s != dnnl_success) {
            dnnl_primitive_attr_destroy(attr);
            return dnnl_err(s, "adding the GELU post-op", k);
        }
    }
    /* oneDNN sizes its blocking by omp_get_max_threads() at creation: one thread (k->nthr) */
    const int saved = omp_get_max_threads();
    omp_set_num_threads(k->nthr);
    dnnl_primitive_desc_t pd = NULL;
    s = dnnl_primitive_desc_create(&pd, &d, attr, g_engine, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&e->prim, pd);
    omp_set_num_threads(saved);
    dnnl_primitive_attr_destroy(attr);
    if (s == dnnl_unimplemented) { /* no bf16 matmul on this CPU */
        if (pd) dnnl_primitive_desc_destroy(pd);
        e->fallback = 1;
        snprintf(e->impl, sizeof e->impl, "fallback:sgemm (oneDNN: none)");
        return 0;
    }
    if (s != dnnl_success) {
        if (pd) dnnl_primitive_desc_destroy(pd);
        return dnnl_err(s, "creating the primitive", k);
    }
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) impl = "?";
    /* oneDNN's gemm-based and reference bf16 matmuls are slower than sgemm on fp32 copies, and the
     * jit gemm driver may split K across threads: only brgemm implementations are used */
    if (strncmp(impl, "brg:", 4)) {
        e->fallback = 1;
        snprintf(e->impl, sizeof e->impl, "fallback:sgemm (oneDNN: %.30s)", impl);
        dnnl_primitive_destroy(e->prim);
        e->prim = NULL;
    } else {
        snprintf(e->impl, sizeof e->impl, "%s", impl);
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch = smd ? dnnl_memory_desc_get_size(smd) : 0;
    dnnl_primitive_desc_destroy(pd);
    return 0;
}

static int key_eq(const key *a, const key *b) { return !memcmp(a, b, sizeof *a); }

static int lookup_locked(const key *k, const entry **out);

/* The cache entry for k, created on first use. Entries are never freed or moved. */
static int lookup(const key *k, const entry **out) {
    /* the thread's last few entries first, without the lock (entries never change once made):
     * attention runs hundreds of products of one shape in a row */
    static _Thread_local const entry *recent[4];
    static _Thread_local unsigned next;
    for (int i = 0; i < 4; i++)
        if (recent[i] && key_eq(&recent[i]->k, k)) {
            *out = recent[i];
            return 0;
        }
    int rc = lookup_locked(k, out);
    if (rc == 0) recent[next++ % 4] = *out;
    return rc;
}

static int lookup_locked(const key *k, const entry **out) {
    pthread_mutex_lock(&g_lock);
    int rc = 0;
    for (int i = 0; i < g_n; i++)
        if (key_eq(&g_cache[i]->k, k)) {
            *out = g_cache[i];
            goto done;
        }
    if (g_n == g_cap) {
        const int cap = g_cap ? 2 * g_cap : 64;
        entry **c = realloc(g_cache, sizeof *c * (size_t)cap);
        if (!c) {
            rc = ss_fail(SS_ENOMEM, "oneDNN: out of memory for the primitive cache");
            goto done;
        }
        g_cache = c;
        g_cap = cap;
    }
    entry *e = malloc(sizeof *e);
    if (!e) {
        rc = ss_fail(SS_ENOMEM, "oneDNN: out of memory for the primitive cache");
        goto done;
    }
    if ((rc = entry_create(e, k)) < 0) {
        free(e);
        goto done;
    }
    g_cache[g_n++] = e;
    *out = e;
done:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

static key make_key(int M, int N, int K, int lda, int ldb, int ldc, int flags, int bias) {
    key k;
    memset(&k, 0, sizeof k); /* compared with memcmp */
    k.M = M, k.N = N, k.K = K, k.lda = lda, k.ldb = ldb, k.ldc = ldc, k.flags = flags, k.bias = bias;
    if (g_force_fallback) k.flags |= K_FORCED;
    k.nthr = 1;
    return k;
}

/* The portable path for any key: a packed weight is unpacked first (into a buffer of the thread;
 * only when the fallback is forced after a model was packed, or a tile shape has no brgemm), and a GELU -> bf16 output is applied to the fp32
 * sums (the same tanh form as oneDNN's gelu_tanh; not the same bits, as every fallback). */
static int fallback_any(void *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb, const float *bias,
                        int M, int N, int K, int flags) {
    tstate *ts = me();
    if (!ts) return SS_ENOMEM;
    int rc;
    if (flags & K_PACKED) { /* unpacked at every call (a weight's address may be reused by another) */
        if (grow16(&ts->wplain, &ts->wplain_n, (size_t)N * K) < 0)
            return ss_fail(SS_ENOMEM, "bf16 matmul: out of memory unpacking a %d x %d weight", N, K);
        if ((rc = repack(ts->wplain, b, N, K, 0)) < 0) return rc;
        b = ts->wplain, ldb = K, flags |= SS_DNNL_TRANS_B;
    }
    if (!(flags & K_GELU16)) return fallback_matmul(c, ldc, a, lda, b, ldb, bias, M, N, K, flags);
    if ((rc = grow(&ts->g32, &ts->g32_n, (size_t)M * N)) < 0) return rc;
    float *f = ts->g32;
    if ((rc = fallback_matmul(f, N, a, lda, b, ldb, bias, M, N, K, flags)) < 0) return rc;
    for (int i = 0; i < M; i++) {
        uint16_t *ci = (uint16_t *)c + (size_t)i * ldc;
        const float *fi = f + (size_t)i * N;
#pragma omp simd
        for (int j = 0; j < N; j++) ci[j] = ss_bf16_from_f32(ss_gelu_tanh(fi[j]));
    }
    return 0;
}

/* One product on the calling thread (a primitive created for one thread). */
static int matmul_serial1(void *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb, const float *bias,
                          int M, int N, int K, int flags) {
    flags |= SS_DNNL_SERIAL;
    const key k = make_key(M, N, K, lda, ldb, ldc, flags, bias != NULL);
    const entry *ep;
    int rc = lookup(&k, &ep);
    if (rc < 0) return rc;
    if (ep->fallback || g_force_fallback) return fallback_any(c, ldc, a, lda, b, ldb, bias, M, N, K, flags);
    dnnl_status_t s;
    tstate *ts = me();
    if (!ts) return SS_ENOMEM;
    if (!ts->stream && (s = dnnl_stream_create(&ts->stream, g_engine, dnnl_stream_default_flags)) != dnnl_success)
        return dnnl_err(s, "creating a stream", &k);
    if (ep->scratch > ts->scratch_n) {
        free(ts->scratch);
        ts->scratch = ss_malloc_aligned(ep->scratch);
        ts->scratch_n = ts->scratch ? ep->scratch : 0;
        if (!ts->scratch) return ss_fail(SS_ENOMEM, "oneDNN: out of memory for a %zu-byte scratchpad", ep->scratch);
    }
    dnnl_memory_t m[5] = {0};
    dnnl_exec_arg_t args[5];
    int n = 0;
    struct {
        int arg;
        const dnnl_memory_desc_t *md;
        const void *p;
    } ops[5] = {{DNNL_ARG_SRC, &ep->a, a}, {DNNL_ARG_WEIGHTS, &ep->b, b}, {DNNL_ARG_DST, &ep->c, c},
                {DNNL_ARG_BIAS, &ep->bias, bias}, {DNNL_ARG_SCRATCHPAD, NULL, ts->scratch}};
    dnnl_memory_desc_t smd;
    if (ep->scratch) {
        const dnnl_dims_t sd = {(dnnl_dim_t)ep->scratch};
        dnnl_memory_desc_init_by_tag(&smd, 1, sd, dnnl_u8, dnnl_a);
        ops[4].md = &smd;
    }
    s = dnnl_success;
    for (int i = 0; i < 5 && s == dnnl_success; i++) {
        if (!ops[i].md || !ops[i].p) continue;
        s = dnnl_memory_create(&m[n], ops[i].md, g_engine, (void *)ops[i].p);
        args[n].arg = ops[i].arg;
        args[n].memory = m[n];
        if (s == dnnl_success) n++;
    }
    if (s == dnnl_success) s = dnnl_primitive_execute(ep->prim, ts->stream, n, args);
    if (s == dnnl_success) s = dnnl_stream_wait(ts->stream);
    for (int i = 0; i < n; i++) dnnl_memory_destroy(m[i]);
    return s == dnnl_success ? 0 : dnnl_err(s, "executing the primitive", &k);
}

/* A tile failed on some thread: its reason (ss_err is per thread) into why, the first one only. */
static void keep_reason(char *why, size_t cap, int rc) {
#pragma omp critical(ss_dnnl_reason)
    if (!why[0]) snprintf(why, cap, "%s", ss_err()[0] ? ss_err() : rc == SS_ENOMEM ? "out of memory" : "no reason given");
}

int ss_dnnl_tile_n(int K) {
    const int n = (int)(SS_DNNL_TILE_B_BYTES / (2 * (long)(K > 0 ? K : 1))) / 64 * 64;
    return n < 64 ? 64 : n > SS_DNNL_TILE_N ? SS_DNNL_TILE_N : n;
}

/* oneDNN also reads the thread count when it runs: with the same primitive, a strided B gave
 * other bits under 3 OpenMP threads than under 1. Every call runs as it was created, on one. */
static int matmul_serial(void *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb, const float *bias,
                         int M, int N, int K, int flags) {
    const int saved = omp_get_max_threads();
    if (saved != 1) omp_set_num_threads(1);
    const size_t es = flags & K_GELU16 ? sizeof(uint16_t) : sizeof(float);
    int rc;
    tstate *ts;
    if (ldc == N || M == 1) {
        rc = matmul_serial1(c, ldc == N ? ldc : N, a, lda, b, ldb, bias, M, N, K, flags);
    } else if (!(ts = me()) || grow(&ts->c32, &ts->c32_n, (size_t)M * N) < 0) {
        rc = SS_ENOMEM;
    } else {
        /* oneDNN 2.6's brgemm matmul takes no strided output (it would pick gemm:jit): a dense
         * tile (holding C's values first when the product adds to them), then copied */
        if (flags & K_ACCUM)
            for (int i = 0; i < M; i++)
                memcpy((char *)ts->c32 + (size_t)i * N * es, (char *)c + (size_t)i * ldc * es, es * N);
        rc = matmul_serial1(ts->c32, N, a, lda, b, ldb, bias, M, N, K, flags);
        for (int i = 0; i < M && rc == 0; i++)
            memcpy((char *)c + (size_t)i * ldc * es, (char *)ts->c32 + (size_t)i * N * es, es * N);
    }
    if (saved != 1) omp_set_num_threads(saved);
    return rc;
}

int ss_dnnl_matmul(float *c, int ldc, const uint16_t *a, int lda, const uint16_t *b, int ldb, const float *bias,
                   int M, int N, int K, int flags) {
    if (M <= 0 || N <= 0) return 0;
    if (flags & SS_DNNL_SERIAL) return matmul_serial(c, ldc, a, lda, b, ldb, bias, M, N, K, flags);
    /* Fixed tiles, each a one-thread product: the tiles' shapes, hence every output's summation
     * order, do not depend on how many threads share them out. */
    const int trans = flags & SS_DNNL_TRANS_B, TN = ss_dnnl_tile_n(K);
    const int tm = (M + SS_DNNL_TILE_M - 1) / SS_DNNL_TILE_M, tn = (N + TN - 1) / TN;
    int rc = 0;
    char why[256] = "";
#pragma omp parallel for schedule(dynamic, 1) if (tm * tn > 1) reduction(min : rc)
    for (int t = 0; t < tm * tn; t++) {
        /* column tiles outer: consecutive tiles share their slice of B (kept in L2) */
        const int i0 = t % tm * SS_DNNL_TILE_M, j0 = t / tm * TN;
        const int m = M - i0 < SS_DNNL_TILE_M ? M - i0 : SS_DNNL_TILE_M, n = N - j0 < TN ? N - j0 : TN;
        const int r = matmul_serial(c + (size_t)i0 * ldc + j0, ldc, a + (size_t)i0 * lda, lda,
                                    trans ? b + (size_t)j0 * ldb : b + j0, ldb, bias ? bias + j0 : NULL, m, n, K, flags);
        if (r < 0) keep_reason(why, sizeof why, r);
        if (r < rc) rc = r;
    }
    return rc < 0 ? ss_fail(rc, "oneDNN: a bf16 matmul M=%d N=%d K=%d failed: %s", M, N, K, why) : 0;
}


int ss_dnnl_matmul_f32a(float *c, int ldc, const float *a, int lda, const uint16_t *b, int ldb, const float *bias,
                        int M, int N, int K, int flags) {
    if (M <= 0 || N <= 0) return 0;
    const size_t n = (size_t)M * K;
    tstate *ts = me();
    if (!ts) return SS_ENOMEM;
    if (grow16(&ts->a16, &ts->a16_n, n) < 0)
        return ss_fail(SS_ENOMEM, "bf16 matmul: out of memory rounding a %d x %d input", M, K);
    ss_bf16_from_f32_rows(ts->a16, K, a, lda, M, K);
    return ss_dnnl_matmul(c, ldc, ts->a16, K, b, ldb, bias, M, N, K, flags);
}

int ss_dnnl_linear_bands(int M, int *rows) {
    const int nb = M > 0 ? (M + SS_DNNL_TILE_M - 1) / SS_DNNL_TILE_M : 0;
    *rows = nb ? (M + nb - 1) / nb : 0;
    return nb;
}

/* Column tiles. A product of one band (M <= SS_DNNL_TILE_M rows: the modulation Linears at M =
 * batch, short text streams) would run on one thread; its columns are cut into tiles of
 * SS_DNNL_COL_TILE instead (a function of M and N alone). A packed weight is stored in blocks of
 * columns (oneDNN's BA16a64b2a on AMX and AVX512-BF16: each block of 64 columns holds all of K),
 * so a tile of whole blocks is a contiguous part of it, in the layout packed_md gives for the
 * tile's width; col_offset checks that and says where the tile starts (-1: no such tiling). */
#define SS_DNNL_COL_TILE 768
static long col_offset(int N, int kn, int j0, int n) {
    const dnnl_memory_desc_t *pf = packed_md(N, kn);
    if (!pf) return -1;
    const dnnl_memory_desc_t full = *pf, *pt = packed_md(n, kn);
    if (!pt || full.format_kind != dnnl_blocked || pt->format_kind != dnnl_blocked) return -1;
    const dnnl_blocking_desc_t *bf = &full.format_desc.blocking, *bt = &pt->format_desc.blocking;
    int nblk = 1; /* the columns' inner block */
    for (int i = 0; i < bf->inner_nblks; i++)
        if (bf->inner_idxs[i] == 1) nblk *= (int)bf->inner_blks[i];
    if (bf->inner_nblks != bt->inner_nblks || j0 % nblk || n % nblk || full.padded_dims[0] != pt->padded_dims[0] ||
        bf->strides[0] != bt->strides[0] || bf->strides[1] != bt->strides[1] || bf->strides[1] < bf->strides[0] ||
        full.offset0 || pt->offset0)
        return -1;
    for (int i = 0; i < bf->inner_nblks; i++)
        if (bf->inner_blks[i] != bt->inner_blks[i] || bf->inner_idxs[i] != bt->inner_idxs[i]) return -1;
    return (long)(j0 / nblk) * (long)bf->strides[1];
}

/* Column tiles of an M x N product on a weight (packed or not) with K columns: their count, and
 * (*width) the width of all but the last. 1 when the product has several bands, or the tiling does
 * not fit the packed layout. */
static int col_tiles(int M, int N, int K, int packed, int *width) {
    int rows;
    *width = N;
    if (ss_dnnl_linear_bands(M, &rows) > 1 || N < 2 * SS_DNNL_COL_TILE) return 1;
    const int nt = (N + SS_DNNL_COL_TILE - 1) / SS_DNNL_COL_TILE;
    if (packed) {
        int kc, k0, kn;
        const int nk = kchunks(K, &kc);
        for (int c = 0; c < nk; c++) { /* every chunk: whole tiles and the last one */
            chunk_elems(N, K, c, &k0, &kn);
            if (col_offset(N, kn, SS_DNNL_COL_TILE, SS_DNNL_COL_TILE) < 0 ||
                col_offset(N, kn, (nt - 1) * SS_DNNL_COL_TILE, N - (nt - 1) * SS_DNNL_COL_TILE) < 0)
                return 1;
        }
    }
    *width = SS_DNNL_COL_TILE;
    return nt;
}

int ss_dnnl_linear_col_tiles(int M, int N, int K, int packed) {
    int width;
    return M > 0 && N > 0 && K > 0 ? col_tiles(M, N, K, packed, &width) : 0;
}

static int tile_refused(int N, int K, int j0, int n) {
    return ss_fail(SS_EARG, "oneDNN: columns [%d, %d) of a packed %d x %d weight are not a tile of its layout", j0, j0 + n,
                   N, K);
}

/* Rows [i0, i0 + m) and columns [j0, j0 + n) of a Linear on the calling thread: one product, or
 * with a K-chunked packed weight one product per chunk adding into the same fp32 outputs (with
 * GELU -> bf16, the chunks' fp32 sums first go to a buffer of the thread, then GELU and the bf16
 * store run here). */
static int band(void *y, int ldy, size_t es, const uint16_t *a, int lda, const uint16_t *w, int packed,
                const float *bias, int i0, int m, int j0, int n, int N, int K, int f) {
    int kc;
    const int nk = packed ? kchunks(K, &kc) : 1;
    char *yb = (char *)y + ((size_t)i0 * ldy + j0) * es;
    const float *bj = bias ? bias + j0 : NULL;
    if (nk == 1) {
        const long wo = packed ? (n == N ? 0 : col_offset(N, K, j0, n)) : (long)j0 * K;
        return wo < 0 ? tile_refused(N, K, j0, n) : matmul_serial(yb, ldy, a, lda, w + wo, K, bj, m, n, K, f);
    }
    float *acc = (float *)yb;
    int lacc = ldy, rc = 0;
    tstate *ts = me();
    if (!ts) return SS_ENOMEM;
    if (f & K_GELU16) {
        if (grow(&ts->g32, &ts->g32_n, (size_t)m * n) < 0) return SS_ENOMEM;
        acc = ts->g32, lacc = n;
    }
    size_t off = 0;
    for (int c = 0; c < nk && rc == 0; c++) {
        int k0, kn;
        const size_t e = chunk_elems(N, K, c, &k0, &kn);
        const long wo = n == N ? 0 : col_offset(N, kn, j0, n);
        if (wo < 0) return tile_refused(N, kn, j0, n);
        /* the chunk's columns of A, dense: oneDNN 2.6's brgemm matmul takes no strided A either */
        if (grow16(&ts->ak, &ts->ak_n, (size_t)m * kn) < 0) return SS_ENOMEM;
        for (int i = 0; i < m; i++) memcpy(ts->ak + (size_t)i * kn, a + (size_t)i * lda + k0, sizeof(uint16_t) * kn);
        rc = matmul_serial(acc, lacc, ts->ak, kn, w + off + wo, kn, c ? NULL : bj, m, n, kn,
                           (f & ~K_GELU16) | (c ? K_ACCUM : 0));
        off += e;
    }
    if (rc == 0 && (f & K_GELU16))
        for (int i = 0; i < m; i++) {
            uint16_t *yi = (uint16_t *)yb + (size_t)i * ldy;
            const float *ai = acc + (size_t)i * n;
#pragma omp simd
            for (int jj = 0; jj < n; jj++) yi[jj] = ss_bf16_from_f32(ss_gelu_tanh(ai[jj]));
        }
    return rc;
}

int ss_dnnl_linear(void *y, int ldy, const uint16_t *x16, const float *x32, int ldx, const uint16_t *w, int packed,
                   const float *bias, int M, int N, int K, int flags) {
    if (M <= 0 || N <= 0) return 0;
    int rows, width;
    const int nb = ss_dnnl_linear_bands(M, &rows), nt = col_tiles(M, N, K, packed, &width);
    const int f = (flags & SS_DNNL_GELU_BF16 ? K_GELU16 : 0) | (packed ? K_PACKED : SS_DNNL_TRANS_B);
    const size_t es = flags & SS_DNNL_GELU_BF16 ? sizeof(uint16_t) : sizeof(float);
    const uint16_t *a1 = x16; /* one band's fp32 input, rounded once for all its column tiles */
    int rc = 0;
    char why[256] = "";
    if (!x16 && nt > 1) {
        tstate *ts = me();
        if (!ts || grow16(&ts->a16, &ts->a16_n, (size_t)M * K) < 0)
            return ss_fail(SS_ENOMEM, "bf16 matmul: out of memory rounding a %d x %d input", M, K);
        ss_bf16_from_f32_rows(ts->a16, K, x32, ldx, M, K);
        a1 = ts->a16, ldx = K;
    }
#pragma omp parallel for schedule(dynamic, 1) if (nb * nt > 1) reduction(min : rc)
    for (int t = 0; t < nb * nt; t++) {
        const int i0 = t / nt * rows, m = M - i0 < rows ? M - i0 : rows;
        const int j0 = t % nt * width, n = N - j0 < width ? N - j0 : width;
        const uint16_t *a = a1 ? a1 + (size_t)i0 * ldx : NULL;
        int lda = ldx, r = 0;
        if (!a) { /* fp32 input: this band's rows rounded into the thread's buffer */
            tstate *ts = me();
            if (!ts || grow16(&ts->a16, &ts->a16_n, (size_t)m * K) < 0) r = SS_ENOMEM;
            else {
                ss_bf16_from_f32_rows(ts->a16, K, x32 + (size_t)i0 * ldx, ldx, m, K);
                a = ts->a16, lda = K;
            }
        }
        if (!r) r = band(y, ldy, es, a, lda, w, packed, bias, i0, m, j0, n, N, K, f);
        if (r < 0) keep_reason(why, sizeof why, r);
        if (r < rc) rc = r;
    }
    return rc < 0 ? ss_fail(rc, "oneDNN: a bf16 linear M=%d N=%d K=%d failed: %s", M, N, K, why) : 0;
}

const char *ss_dnnl_linear_impl(int M, int N, int K, int packed, int flags) {
    int rows, kc;
    ss_dnnl_linear_bands(M, &rows);
    const int nk = packed ? kchunks(K, &kc) : 1, f = (flags & SS_DNNL_GELU_BF16 ? K_GELU16 : 0) |
                                                      (packed ? K_PACKED : SS_DNNL_TRANS_B) | SS_DNNL_SERIAL;
    if (nk == 1) {
        const key k = make_key(rows, N, K, K, K, N, f, 0);
        const entry *e;
        return lookup(&k, &e) < 0 ? "unavailable" : e->impl;
    }
    const char *impl = "unavailable";
    for (int c = 0; c < 2; c++) { /* the first chunk and a later (adding) one: both must be what runs */
        const key k = make_key(rows, N, kc, kc, kc, N, (f & ~K_GELU16) | (c ? K_ACCUM : 0), 0);
        const entry *e;
        if (lookup(&k, &e) < 0) return "unavailable";
        if (c == 0 || strncmp(e->impl, "brg:", 4)) impl = e->impl;
    }
    return impl;
}

const char *ss_dnnl_impl(int M, int N, int K, int flags) {
    const int trans = flags & SS_DNNL_TRANS_B;
    if (!(flags & SS_DNNL_SERIAL)) { /* the first tile's */
        M = M < SS_DNNL_TILE_M ? M : SS_DNNL_TILE_M;
        N = N < ss_dnnl_tile_n(K) ? N : ss_dnnl_tile_n(K);
    }
    const key k = make_key(M, N, K, K, trans ? K : N, N, flags | SS_DNNL_SERIAL, 0);
    const entry *e;
    return lookup(&k, &e) < 0 ? "unavailable" : e->impl;
}

int ss_dnnl_primitives(void) {
    pthread_mutex_lock(&g_lock);
    const int n = g_n;
    pthread_mutex_unlock(&g_lock);
    return n;
}
