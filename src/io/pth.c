/* pth: PyTorch state-dict reader (zip container and legacy format); see pth.h. */
#include "io/pth.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "core/err.h"

/* ---------------------------------------------------------------------------------------- */
/* pickle values                                                                            */

enum { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR };
enum { G_ODICT, G_REBUILD_V2, G_REBUILD_V1, G_REBUILD_PARAM, G_STORAGE };

typedef struct pv pv;
struct pv {
    int kind;
    int64_t i;        /* INT, BOOL; GLOBAL: G_*; STORAGE: numel */
    double f;         /* FLOAT */
    char *s;          /* STR (NUL-terminated copy), STORAGE: key */
    size_t slen;
    pv **items;       /* TUPLE/LIST: n items; DICT: 2n (key, value) */
    size_t n, cap;
    st_dtype dtype;   /* GLOBAL(G_STORAGE), STORAGE, TENSOR */
    /* TENSOR */
    pv *storage;
    int64_t offset;
    int ndim;
    int64_t shape[ST_MAX_DIMS], stride[ST_MAX_DIMS];
    pv *next_alloc;
};

typedef struct {
    const char *label;
    const uint8_t *p;
    size_t n, pos;
    pv *allocs;
    size_t n_allocs;
    pv **stack;
    size_t sp, scap;
    pv **memo;
    size_t memo_n, memo_set; /* slots allocated, slots set */
    pv **storages; /* distinct storages seen, by key */
    size_t n_storages, storages_cap;
} unpickler;

static pv MARK_OBJ; /* sentinel pushed by MARK */

static pv *pv_new(unpickler *u, int kind) {
    pv *v = calloc(1, sizeof *v);
    if (!v) {
        ss_fail(SS_ENOMEM, "%s: out of memory in the unpickler", u->label);
        return NULL;
    }
    v->kind = kind;
    v->next_alloc = u->allocs;
    u->allocs = v;
    u->n_allocs++;
    return v;
}

static void up_free(unpickler *u) {
    for (pv *v = u->allocs; v;) {
        pv *nx = v->next_alloc;
        free(v->s);
        free(v->items);
        free(v);
        v = nx;
    }
    free(u->stack);
    free(u->memo);
    free(u->storages);
    memset(u, 0, sizeof *u);
}

static int bad(unpickler *u, const char *what) {
    return ss_fail(SS_EFORMAT, "%s: pickle: %s (at byte %zu)", u->label, what, u->pos);
}

static int push(unpickler *u, pv *v) {
    if (!v) return SS_ENOMEM;
    if (u->sp == u->scap) {
        size_t nc = u->scap ? u->scap * 2 : 64;
        pv **ns = realloc(u->stack, nc * sizeof *ns);
        if (!ns) return ss_fail(SS_ENOMEM, "%s: out of memory in the unpickler", u->label);
        u->stack = ns;
        u->scap = nc;
    }
    u->stack[u->sp++] = v;
    return 0;
}

static pv *pop(unpickler *u) {
    if (u->sp == 0 || u->stack[u->sp - 1] == &MARK_OBJ) {
        bad(u, "stack underflow");
        return NULL;
    }
    return u->stack[--u->sp];
}

static int append_item(unpickler *u, pv *c, pv *item) {
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 4;
        pv **ni = realloc(c->items, nc * sizeof *ni);
        if (!ni) return ss_fail(SS_ENOMEM, "%s: out of memory in the unpickler", u->label);
        c->items = ni;
        c->cap = nc;
    }
    c->items[c->n++] = item;
    return 0;
}

/* Index of the topmost MARK, or -1. */
static long find_mark(unpickler *u) {
    for (size_t k = u->sp; k > 0; k--)
        if (u->stack[k - 1] == &MARK_OBJ) return (long)(k - 1);
    return -1;
}

static int need(unpickler *u, size_t k) {
    if (k > u->n - u->pos) return bad(u, "truncated");
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int k) {
    uint64_t x = 0;
    for (int j = k - 1; j >= 0; j--) x = x << 8 | p[j];
    return x;
}

static int make_str(unpickler *u, size_t len) {
    if (need(u, len) < 0) return SS_EFORMAT;
    pv *v = pv_new(u, V_STR);
    if (!v) return SS_ENOMEM;
    v->s = malloc(len + 1);
    if (!v->s) return ss_fail(SS_ENOMEM, "%s: out of memory in the unpickler", u->label);
    memcpy(v->s, u->p + u->pos, len);
    v->s[len] = 0;
    v->slen = len;
    u->pos += len;
    return push(u, v);
}

static const struct {
    const char *name;
    st_dtype dtype;
} STORAGE_TYPES[] = {
    {"FloatStorage", ST_F32}, {"HalfStorage", ST_F16},  {"BFloat16Storage", ST_BF16},
    {"DoubleStorage", ST_F64}, {"LongStorage", ST_I64}, {"IntStorage", ST_I32},
    {"ShortStorage", ST_I16}, {"CharStorage", ST_I8},   {"ByteStorage", ST_U8},
    {"BoolStorage", ST_BOOL},
};

static int make_global(unpickler *u, const char *mod, const char *name) {
    pv *v = pv_new(u, V_GLOBAL);
    if (!v) return SS_ENOMEM;
    if (!strcmp(mod, "collections") && !strcmp(name, "OrderedDict")) {
        v->i = G_ODICT;
    } else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_tensor_v2")) {
        v->i = G_REBUILD_V2;
    } else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_tensor")) {
        v->i = G_REBUILD_V1; /* torch < 1.0 (2018 and earlier checkpoints) */
    } else if (!strcmp(mod, "torch._utils") && !strcmp(name, "_rebuild_parameter")) {
        v->i = G_REBUILD_PARAM;
    } else {
        int found = 0;
        if (!strcmp(mod, "torch"))
            for (size_t k = 0; k < sizeof STORAGE_TYPES / sizeof STORAGE_TYPES[0]; k++)
                if (!strcmp(name, STORAGE_TYPES[k].name)) {
                    v->i = G_STORAGE;
                    v->dtype = STORAGE_TYPES[k].dtype;
                    found = 1;
                }
        if (!found) {
            char a[64], b[64];
            return ss_fail(SS_EFORMAT, "%s: pickle: unsupported global '%s.%s' (not a state dict?)",
                           u->label, ss_printable(mod, a, sizeof a), ss_printable(name, b, sizeof b));
        }
    }
    return push(u, v);
}

/* A line terminated by '\n' (GLOBAL's arguments), copied into buf. */
static int read_line(unpickler *u, char *buf, size_t cap) {
    size_t k = 0;
    while (1) {
        if (u->pos >= u->n) return bad(u, "truncated GLOBAL");
        char c = (char)u->p[u->pos++];
        if (c == '\n') break;
        if (k + 1 >= cap || c == 0) return bad(u, "GLOBAL name too long or invalid");
        buf[k++] = c;
    }
    buf[k] = 0;
    return 0;
}

static int is_int(const pv *v) { return v && v->kind == V_INT; }
static int is_seq(const pv *v) { return v && (v->kind == V_TUPLE || v->kind == V_LIST); }

static int tensor_dims(unpickler *u, pv *t, const pv *size, const pv *stride) {
    if (!is_seq(size) || !is_seq(stride) || size->n != stride->n)
        return bad(u, "_rebuild_tensor_v2: size and stride must be tuples of one length");
    if (size->n > ST_MAX_DIMS) return bad(u, "_rebuild_tensor_v2: too many dimensions");
    t->ndim = (int)size->n;
    for (size_t k = 0; k < size->n; k++) {
        if (!is_int(size->items[k]) || !is_int(stride->items[k]) || size->items[k]->i < 0 ||
            stride->items[k]->i < 0)
            return bad(u, "_rebuild_tensor_v2: size/stride entries must be non-negative ints");
        t->shape[k] = size->items[k]->i;
        t->stride[k] = stride->items[k]->i;
    }
    return 0;
}

static int reduce(unpickler *u) {
    pv *args = pop(u), *fn = pop(u);
    if (!args || !fn) return SS_EFORMAT;
    if (fn->kind != V_GLOBAL || args->kind != V_TUPLE) return bad(u, "REDUCE of a non-global");
    if (fn->i == G_ODICT) {
        pv *d = pv_new(u, V_DICT);
        if (!d) return SS_ENOMEM;
        if (args->n > 1) return bad(u, "OrderedDict with more than one argument");
        if (args->n == 1) {
            pv *l = args->items[0];
            if (!is_seq(l)) return bad(u, "OrderedDict argument is not a list");
            for (size_t k = 0; k < l->n; k++) {
                pv *pair = l->items[k];
                if (!is_seq(pair) || pair->n != 2) return bad(u, "OrderedDict item is not a pair");
                if (append_item(u, d, pair->items[0]) < 0 || append_item(u, d, pair->items[1]) < 0)
                    return SS_ENOMEM;
            }
        }
        return push(u, d);
    }
    if (fn->i == G_REBUILD_V2 || fn->i == G_REBUILD_V1) {
        /* v2: (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]);
         * v1: (storage, storage_offset, size, stride) */
        if (fn->i == G_REBUILD_V2 ? args->n < 6 || args->n > 7 : args->n != 4)
            return bad(u, "_rebuild_tensor: wrong argument count");
        pv *st = args->items[0];
        if (!st || st->kind != V_STORAGE) return bad(u, "_rebuild_tensor_v2: first argument is not a storage");
        if (!is_int(args->items[1]) || args->items[1]->i < 0)
            return bad(u, "_rebuild_tensor_v2: bad storage offset");
        pv *t = pv_new(u, V_TENSOR);
        if (!t) return SS_ENOMEM;
        t->storage = st;
        t->dtype = st->dtype;
        t->offset = args->items[1]->i;
        int rc = tensor_dims(u, t, args->items[2], args->items[3]);
        if (rc < 0) return rc;
        return push(u, t);
    }
    if (fn->i == G_REBUILD_PARAM) {
        if (args->n != 3 || !args->items[0] || args->items[0]->kind != V_TENSOR)
            return bad(u, "_rebuild_parameter: bad arguments");
        return push(u, args->items[0]);
    }
    return bad(u, "REDUCE of a storage type");
}

/* BINPERSID: ('storage', <type>, key, location, numel[, view_metadata]) */
static int persid(unpickler *u) {
    pv *pid = pop(u);
    if (!pid) return SS_EFORMAT;
    if (pid->kind != V_TUPLE || pid->n < 5 || pid->n > 6 || !pid->items[0] ||
        pid->items[0]->kind != V_STR || strcmp(pid->items[0]->s, "storage"))
        return bad(u, "persistent id is not a ('storage', ...) tuple");
    pv *ty = pid->items[1], *key = pid->items[2], *loc = pid->items[3], *numel = pid->items[4];
    if (!ty || ty->kind != V_GLOBAL || ty->i != G_STORAGE) return bad(u, "persistent id: not a storage type");
    if (!key || key->kind != V_STR || !loc || loc->kind != V_STR) return bad(u, "persistent id: bad key");
    if (!is_int(numel) || numel->i < 0) return bad(u, "persistent id: bad storage size");
    if (pid->n == 6 && pid->items[5]->kind != V_NONE) return bad(u, "storage views are not supported");
    for (size_t k = 0; k < u->n_storages; k++) {
        pv *s = u->storages[k];
        if (!strcmp(s->s, key->s)) {
            if (s->dtype != ty->dtype || s->i != numel->i)
                return bad(u, "storage key reused with another type or size");
            return push(u, s);
        }
    }
    pv *s = pv_new(u, V_STORAGE);
    if (!s) return SS_ENOMEM;
    s->dtype = ty->dtype;
    s->i = numel->i;
    s->s = strdup(key->s);
    if (!s->s) return ss_fail(SS_ENOMEM, "%s: out of memory", u->label);
    if (u->n_storages == u->storages_cap) {
        size_t nc = u->storages_cap ? u->storages_cap * 2 : 16;
        pv **ns = realloc(u->storages, nc * sizeof *ns);
        if (!ns) return ss_fail(SS_ENOMEM, "%s: out of memory", u->label);
        u->storages = ns;
        u->storages_cap = nc;
    }
    u->storages[u->n_storages++] = s;
    return push(u, s);
}

static int memo_put(unpickler *u, uint64_t idx) {
    if (u->sp == 0 || u->stack[u->sp - 1] == &MARK_OBJ) return bad(u, "memo put of an empty stack");
    /* torch numbers memo slots sequentially: an index can never exceed the pickle's length. */
    if (idx >= u->n) return bad(u, "memo index out of range");
    if (idx >= u->memo_n) {
        size_t nn = u->memo_n ? u->memo_n : 64;
        while (nn <= idx) nn *= 2;
        if (nn > u->n) nn = u->n;
        pv **nm = realloc(u->memo, nn * sizeof *nm);
        if (!nm) return ss_fail(SS_ENOMEM, "%s: out of memory", u->label);
        memset(nm + u->memo_n, 0, (nn - u->memo_n) * sizeof *nm);
        u->memo = nm;
        u->memo_n = nn;
    }
    if (!u->memo[idx]) u->memo_set++;
    u->memo[idx] = u->stack[u->sp - 1];
    return 0;
}

static int memo_get(unpickler *u, uint64_t idx) {
    if (idx >= u->memo_n || !u->memo[idx]) return bad(u, "memo get of an unset slot");
    return push(u, u->memo[idx]);
}

static int build_seq(unpickler *u, int kind) {
    long m = find_mark(u);
    if (m < 0) return bad(u, "no MARK");
    pv *t = pv_new(u, kind);
    if (!t) return SS_ENOMEM;
    for (size_t k = (size_t)m + 1; k < u->sp; k++)
        if (append_item(u, t, u->stack[k]) < 0) return SS_ENOMEM;
    u->sp = (size_t)m;
    return push(u, t);
}

static int tuple_n(unpickler *u, size_t k) {
    if (u->sp < k) return bad(u, "stack underflow");
    for (size_t j = 0; j < k; j++)
        if (u->stack[u->sp - 1 - j] == &MARK_OBJ) return bad(u, "stack underflow");
    pv *t = pv_new(u, V_TUPLE);
    if (!t) return SS_ENOMEM;
    for (size_t j = u->sp - k; j < u->sp; j++)
        if (append_item(u, t, u->stack[j]) < 0) return SS_ENOMEM;
    u->sp -= k;
    return push(u, t);
}

static int setitems(unpickler *u, int many) {
    size_t from;
    if (many) {
        long m = find_mark(u);
        if (m < 0) return bad(u, "no MARK");
        from = (size_t)m;
        if ((u->sp - from - 1) % 2) return bad(u, "SETITEMS with an odd count");
    } else {
        if (u->sp < 3) return bad(u, "stack underflow");
        from = u->sp - 3; /* [.., dict, key, value] */
        if (u->stack[from + 1] == &MARK_OBJ || u->stack[from + 2] == &MARK_OBJ)
            return bad(u, "stack underflow");
        pv *d = u->stack[from];
        if (d == &MARK_OBJ || d->kind != V_DICT) return bad(u, "SETITEM on a non-dict");
        if (append_item(u, d, u->stack[from + 1]) < 0 || append_item(u, d, u->stack[from + 2]) < 0)
            return SS_ENOMEM;
        u->sp = from + 1;
        return 0;
    }
    if (from == 0) return bad(u, "SETITEMS without a dict");
    pv *d = u->stack[from - 1];
    if (d == &MARK_OBJ || d->kind != V_DICT) return bad(u, "SETITEMS on a non-dict");
    for (size_t k = from + 1; k < u->sp; k++)
        if (append_item(u, d, u->stack[k]) < 0) return SS_ENOMEM;
    u->sp = from;
    return 0;
}

static int appends(unpickler *u, int many) {
    size_t from;
    if (many) {
        long m = find_mark(u);
        if (m < 0) return bad(u, "no MARK");
        from = (size_t)m + 1;
    } else {
        if (u->sp < 2 || u->stack[u->sp - 1] == &MARK_OBJ) return bad(u, "stack underflow");
        from = u->sp - 1;
    }
    size_t li = many ? from - 2 : from - 1;
    if (from < (many ? 2u : 1u)) return bad(u, "APPENDS without a list");
    pv *l = u->stack[li];
    if (l == &MARK_OBJ || l->kind != V_LIST) return bad(u, "APPEND on a non-list");
    for (size_t k = from; k < u->sp; k++)
        if (append_item(u, l, u->stack[k]) < 0) return SS_ENOMEM;
    u->sp = li + 1;
    return 0;
}

/* Run one pickle from p[0..n) (n: bytes available); *used receives its length. */
static int unpickle(unpickler *u, const uint8_t *p, size_t n, pv **result, size_t *used) {
    u->p = p;
    u->n = n;
    u->pos = 0;
    u->sp = 0;
    free(u->memo);
    u->memo = NULL;
    u->memo_n = 0;
    u->memo_set = 0;
    int rc = 0;
    while (1) {
        if (u->pos >= u->n) return bad(u, "truncated (no STOP)");
        uint8_t op = u->p[u->pos++];
        switch (op) {
        case 0x80: /* PROTO */
            if ((rc = need(u, 1)) < 0) return rc;
            if (u->p[u->pos] < 2 || u->p[u->pos] > 5) return bad(u, "unsupported protocol");
            u->pos++;
            break;
        case 0x95: /* FRAME */
            if ((rc = need(u, 8)) < 0) return rc;
            u->pos += 8;
            break;
        case '.': /* STOP */
            if (u->sp != 1 || u->stack[0] == &MARK_OBJ) return bad(u, "STOP with a stack not of one object");
            *result = u->stack[0];
            *used = u->pos;
            return 0;
        case 'c': { /* GLOBAL */
            char mod[128], name[128];
            if ((rc = read_line(u, mod, sizeof mod)) < 0 || (rc = read_line(u, name, sizeof name)) < 0)
                return rc;
            rc = make_global(u, mod, name);
            break;
        }
        case 0x93: { /* STACK_GLOBAL */
            pv *name = pop(u), *mod = name ? pop(u) : NULL;
            if (!name || !mod) return SS_EFORMAT;
            if (name->kind != V_STR || mod->kind != V_STR) return bad(u, "STACK_GLOBAL of non-strings");
            rc = make_global(u, mod->s, name->s);
            break;
        }
        case 'q': /* BINPUT */
            if ((rc = need(u, 1)) < 0) return rc;
            rc = memo_put(u, u->p[u->pos++]);
            break;
        case 'r': /* LONG_BINPUT */
            if ((rc = need(u, 4)) < 0) return rc;
            rc = memo_put(u, rd_le(u->p + u->pos, 4));
            u->pos += 4;
            break;
        case 0x94: /* MEMOIZE */
            rc = memo_put(u, u->memo_set); /* memo[len(memo)] */
            break;
        case 'h': /* BINGET */
            if ((rc = need(u, 1)) < 0) return rc;
            rc = memo_get(u, u->p[u->pos++]);
            break;
        case 'j': /* LONG_BINGET */
            if ((rc = need(u, 4)) < 0) return rc;
            rc = memo_get(u, rd_le(u->p + u->pos, 4));
            u->pos += 4;
            break;
        case '}': rc = push(u, pv_new(u, V_DICT)); break;
        case ']': rc = push(u, pv_new(u, V_LIST)); break;
        case ')': rc = push(u, pv_new(u, V_TUPLE)); break;
        case '(': rc = push(u, &MARK_OBJ); break;
        case 't': rc = build_seq(u, V_TUPLE); break;
        case 'l': rc = build_seq(u, V_LIST); break;
        case 0x85: rc = tuple_n(u, 1); break;
        case 0x86: rc = tuple_n(u, 2); break;
        case 0x87: rc = tuple_n(u, 3); break;
        case 'N': rc = push(u, pv_new(u, V_NONE)); break;
        case 0x88:
        case 0x89: {
            pv *v = pv_new(u, V_BOOL);
            if (v) v->i = op == 0x88;
            rc = push(u, v);
            break;
        }
        case 'K': case 'M': case 'J': {
            int k = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            if ((rc = need(u, (size_t)k)) < 0) return rc;
            pv *v = pv_new(u, V_INT);
            if (v) {
                uint64_t x = rd_le(u->p + u->pos, k);
                v->i = k == 4 ? (int64_t)(int32_t)(uint32_t)x : (int64_t)x;
            }
            u->pos += (size_t)k;
            rc = push(u, v);
            break;
        }
        case 0x8a: { /* LONG1 */
            if ((rc = need(u, 1)) < 0) return rc;
            size_t k = u->p[u->pos++];
            if ((rc = need(u, k)) < 0) return rc;
            if (k > 8) {
                /* the legacy magic number (10 bytes) is the only long this wide torch writes */
                static const uint8_t MAGIC[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
                if (k != 10 || memcmp(u->p + u->pos, MAGIC, 10)) return bad(u, "integer too large");
                pv *v = pv_new(u, V_INT);
                if (v) v->i = INT64_MIN;
                u->pos += k;
                rc = push(u, v);
                break;
            }
            uint64_t x = k ? rd_le(u->p + u->pos, (int)k) : 0;
            if (k && k < 8 && (u->p[u->pos + k - 1] & 0x80)) x |= ~0ULL << (8 * k); /* sign */
            pv *v = pv_new(u, V_INT);
            if (v) v->i = (int64_t)x;
            u->pos += k;
            rc = push(u, v);
            break;
        }
        case 'G': { /* BINFLOAT, big-endian */
            if ((rc = need(u, 8)) < 0) return rc;
            uint64_t x = 0;
            for (int j = 0; j < 8; j++) x = x << 8 | u->p[u->pos + (size_t)j];
            u->pos += 8;
            pv *v = pv_new(u, V_FLOAT);
            if (v) memcpy(&v->f, &x, 8);
            rc = push(u, v);
            break;
        }
        case 'X': case 'T': { /* BINUNICODE, BINSTRING: 4-byte length */
            if ((rc = need(u, 4)) < 0) return rc;
            uint64_t len = rd_le(u->p + u->pos, 4);
            u->pos += 4;
            rc = make_str(u, (size_t)len);
            break;
        }
        case 'U': case 0x8c: { /* SHORT_BINSTRING, SHORT_BINUNICODE */
            if ((rc = need(u, 1)) < 0) return rc;
            size_t len = u->p[u->pos++];
            rc = make_str(u, len);
            break;
        }
        case 'B': { /* BINBYTES */
            if ((rc = need(u, 4)) < 0) return rc;
            uint64_t len = rd_le(u->p + u->pos, 4);
            u->pos += 4;
            rc = make_str(u, (size_t)len);
            break;
        }
        case 'C': { /* SHORT_BINBYTES */
            if ((rc = need(u, 1)) < 0) return rc;
            size_t len = u->p[u->pos++];
            rc = make_str(u, len);
            break;
        }
        case 'R': rc = reduce(u); break;
        case 'Q': rc = persid(u); break;
        case 'b': { /* BUILD: state dicts carry `_metadata` this way; it is not needed */
            pv *state = pop(u);
            if (!state) return SS_EFORMAT;
            if (u->sp == 0 || u->stack[u->sp - 1] == &MARK_OBJ) return bad(u, "BUILD without an object");
            pv *obj = u->stack[u->sp - 1];
            if (obj->kind != V_DICT && obj->kind != V_TENSOR) return bad(u, "BUILD on an unexpected object");
            break;
        }
        case 's': rc = setitems(u, 0); break;
        case 'u': rc = setitems(u, 1); break;
        case 'a': rc = appends(u, 0); break;
        case 'e': rc = appends(u, 1); break;
        case '0': /* POP */
            if (!pop(u)) return SS_EFORMAT;
            break;
        default: {
            char what[64];
            snprintf(what, sizeof what, "unsupported opcode 0x%02x", op);
            return bad(u, what);
        }
        }
        if (rc < 0) return rc;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* the file                                                                                 */

typedef struct {
    uint8_t *data; /* storage bytes (owned) */
    size_t nbytes;
} storage_buf;

struct pth_file {
    char *label;
    int zip;
    int n;
    st_tensor *t;
    char **names;
    void **copies;      /* per tensor: its own contiguous data */
};

void pth_close(pth_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->names[i]);
        free(f->copies[i]);
    }
    free(f->t);
    free(f->names);
    free(f->copies);
    free(f->label);
    free(f);
}

int pth_count(const pth_file *f) { return f ? f->n : 0; }
const st_tensor *pth_get(const pth_file *f, int i) {
    return f && i >= 0 && i < f->n ? &f->t[i] : NULL;
}
const st_tensor *pth_find(const pth_file *f, const char *name) {
    if (!f) return NULL;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) return &f->t[i];
    return NULL;
}
int pth_is_zip(const pth_file *f) { return f->zip; }

static const char *short_name(const char *s, char *buf, size_t cap) { return ss_printable(s, buf, cap); }

/* Copy every tensor of the state dict `sd` out of its storage (bufs[k] for storage k). */
static int materialize(pth_file *f, unpickler *u, pv *sd, storage_buf *bufs) {
    if (!sd || sd->kind != V_DICT) return ss_fail(SS_EFORMAT, "%s: the pickle is not a state dict (dict of tensors)", f->label);
    if (sd->n > INT_MAX / 2) return ss_fail(SS_EFORMAT, "%s: too many tensors", f->label);
    int n = (int)(sd->n / 2); /* items hold (key, value) pairs */
    /* Views may overlap (tied weights, expanded tensors), so their copies can exceed the
     * storages; bound them to 16x the storages (+1 MiB) so memory stays linear in the input. */
    size_t budget = 1u << 20, spent = 0;
    for (size_t k = 0; k < u->n_storages; k++) {
        size_t b16;
        if (ss_mul_size(bufs[k].nbytes, 16, &b16) < 0 || ss_add_size(budget, b16, &budget) < 0) budget = SIZE_MAX;
    }
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    f->names = calloc((size_t)n + 1, sizeof *f->names);
    f->copies = calloc((size_t)n + 1, sizeof *f->copies);
    if (!f->t || !f->names || !f->copies) return ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
    for (int i = 0; i < n; i++) {
        pv *k = sd->items[2 * i], *v = sd->items[2 * i + 1];
        char nb[96];
        if (!k || k->kind != V_STR || strlen(k->s) != k->slen || k->slen == 0)
            return ss_fail(SS_EFORMAT, "%s: state-dict key %d is not a non-empty string", f->label, i);
        if (!v || v->kind != V_TENSOR)
            return ss_fail(SS_EFORMAT, "%s: '%s' is not a tensor", f->label, short_name(k->s, nb, sizeof nb));
        for (int j = 0; j < i; j++)
            if (!strcmp(f->names[j], k->s))
                return ss_fail(SS_EFORMAT, "%s: tensor '%s' appears twice", f->label, short_name(k->s, nb, sizeof nb));
        f->names[i] = strdup(k->s);
        if (!f->names[i]) return ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
        f->n = i + 1;
        size_t si = 0;
        while (si < u->n_storages && u->storages[si] != v->storage) si++;
        if (si == u->n_storages) return ss_fail(SS_EFORMAT, "%s: tensor '%s': unknown storage", f->label, short_name(k->s, nb, sizeof nb));
        size_t esz = st_dtype_size(v->dtype);
        uint64_t snumel = (uint64_t)v->storage->i;
        /* numel and the largest element index the view touches, overflow-checked */
        size_t numel = 1, last = (size_t)v->offset;
        for (int d = 0; d < v->ndim; d++) {
            if (ss_mul_size(numel, (size_t)v->shape[d], &numel) < 0)
                return ss_fail(SS_EFORMAT, "%s: tensor '%s': size overflows", f->label, short_name(k->s, nb, sizeof nb));
        }
        size_t nbytes;
        if (ss_mul_size(numel, esz, &nbytes) < 0 || nbytes > PTH_MAX_FILE_BYTES)
            return ss_fail(SS_EFORMAT, "%s: tensor '%s': size overflows", f->label, short_name(k->s, nb, sizeof nb));
        if (ss_add_size(spent, nbytes, &spent) < 0 || spent > budget)
            return ss_fail(SS_EFORMAT,
                           "%s: tensor '%s': the views need more than 16x the bytes of the storages "
                           "(overlapping strides?)",
                           f->label, short_name(k->s, nb, sizeof nb));
        if (numel > 0) {
            for (int d = 0; d < v->ndim; d++) {
                size_t step;
                if (ss_mul_size((size_t)(v->shape[d] - 1), (size_t)v->stride[d], &step) < 0 ||
                    ss_add_size(last, step, &last) < 0)
                    return ss_fail(SS_EFORMAT, "%s: tensor '%s': strides overflow", f->label, short_name(k->s, nb, sizeof nb));
            }
            if (last >= snumel)
                return ss_fail(SS_EFORMAT,
                               "%s: tensor '%s': view (offset %lld, shape and strides) reaches element %zu "
                               "of a storage of %llu",
                               f->label, short_name(k->s, nb, sizeof nb), (long long)v->offset, last,
                               (unsigned long long)snumel);
        }
        st_tensor *t = &f->t[i];
        t->name = f->names[i];
        t->dtype = v->dtype;
        t->ndim = v->ndim;
        for (int d = 0; d < v->ndim; d++) t->shape[d] = v->shape[d];
        t->numel = (int64_t)numel;
        t->nbytes = nbytes;
        t->file = f->label;
        uint8_t *dst = malloc(nbytes ? nbytes : 1);
        if (!dst) return ss_fail(SS_ENOMEM, "%s: tensor '%s': out of memory", f->label, short_name(k->s, nb, sizeof nb));
        f->copies[i] = dst;
        t->data = dst;
        if (numel == 0) continue;
        const uint8_t *src = bufs[si].data;
        /* odometer over the view */
        int64_t idx[ST_MAX_DIMS] = {0};
        size_t off = (size_t)v->offset;
        for (size_t e = 0; e < numel; e++) {
            memcpy(dst + e * esz, src + off * esz, esz);
            for (int d = v->ndim - 1; d >= 0; d--) {
                if (++idx[d] < v->shape[d]) {
                    off += (size_t)v->stride[d];
                    break;
                }
                off -= (size_t)(v->shape[d] - 1) * (size_t)v->stride[d];
                idx[d] = 0;
            }
        }
    }
    return 0;
}

static int storage_bytes(const pth_file *f, const pv *s, size_t *out) {
    if (ss_mul_size((size_t)s->i, st_dtype_size(s->dtype), out) < 0 || *out > PTH_MAX_FILE_BYTES) {
        char kb[64];
        return ss_fail(SS_EFORMAT, "%s: storage '%s': size overflows", f->label, ss_printable(s->s, kb, sizeof kb));
    }
    return 0;
}

static int open_legacy(pth_file *f, const uint8_t *p, size_t n) {
    unpickler u = {0};
    u.label = f->label;
    pv *obj = NULL;
    size_t used, pos = 0;
    int rc;
    storage_buf *bufs = NULL;
    /* magic number, protocol version, sys_info */
    for (int k = 0; k < 3; k++) {
        if ((rc = unpickle(&u, p + pos, n - pos, &obj, &used)) < 0) goto done;
        pos += used;
        if (k == 0 && (obj->kind != V_INT || obj->i != INT64_MIN)) {
            rc = ss_fail(SS_EFORMAT, "%s: not a PyTorch file (no legacy magic number)", f->label);
            goto done;
        }
        if (k == 1 && (obj->kind != V_INT || obj->i != 1001)) {
            rc = ss_fail(SS_EFORMAT, "%s: unsupported legacy protocol version", f->label);
            goto done;
        }
        if (k == 2 && obj->kind != V_DICT) {
            rc = ss_fail(SS_EFORMAT, "%s: legacy sys_info is not a dict", f->label);
            goto done;
        }
    }
    /* sys_info must say little-endian */
    for (size_t k = 0; k < obj->n / 2; k++)
        if (obj->items[2 * k]->kind == V_STR && !strcmp(obj->items[2 * k]->s, "little_endian") &&
            !(obj->items[2 * k + 1]->kind == V_BOOL && obj->items[2 * k + 1]->i == 1)) {
            rc = ss_fail(SS_EFORMAT, "%s: big-endian files are not supported", f->label);
            goto done;
        }
    pv *sd;
    if ((rc = unpickle(&u, p + pos, n - pos, &sd, &used)) < 0) goto done;
    pos += used;
    pv *keys;
    if ((rc = unpickle(&u, p + pos, n - pos, &keys, &used)) < 0) goto done;
    pos += used;
    if (!is_seq(keys) || keys->n != u.n_storages) {
        rc = ss_fail(SS_EFORMAT, "%s: the storage key list does not match the storages used", f->label);
        goto done;
    }
    bufs = calloc(u.n_storages + 1, sizeof *bufs);
    if (!bufs) {
        rc = ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
        goto done;
    }
    for (size_t k = 0; k < keys->n; k++) {
        pv *key = keys->items[k];
        if (!key || key->kind != V_STR) {
            rc = ss_fail(SS_EFORMAT, "%s: storage key %zu is not a string", f->label, k);
            goto done;
        }
        size_t si = 0;
        while (si < u.n_storages && strcmp(u.storages[si]->s, key->s)) si++;
        char kb[64];
        if (si == u.n_storages || bufs[si].data) {
            rc = ss_fail(SS_EFORMAT, "%s: storage key '%s' unknown or repeated", f->label, ss_printable(key->s, kb, sizeof kb));
            goto done;
        }
        pv *s = u.storages[si];
        size_t nbytes;
        if ((rc = storage_bytes(f, s, &nbytes)) < 0) goto done;
        if (n - pos < 8 || rd_le(p + pos, 8) != (uint64_t)s->i || n - pos - 8 < nbytes) {
            rc = ss_fail(SS_EFORMAT, "%s: storage '%s': truncated or wrong element count", f->label,
                         ss_printable(key->s, kb, sizeof kb));
            goto done;
        }
        pos += 8;
        bufs[si].data = malloc(nbytes ? nbytes : 1);
        if (!bufs[si].data) {
            rc = ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
            goto done;
        }
        memcpy(bufs[si].data, p + pos, nbytes);
        bufs[si].nbytes = nbytes;
        pos += nbytes;
    }
    rc = materialize(f, &u, sd, bufs);
done:
    if (bufs)
        for (size_t k = 0; k < u.n_storages; k++) free(bufs[k].data);
    free(bufs);
    up_free(&u);
    return rc;
}

/* Read a whole zip entry (bounded: stored entries must match their compressed size, deflated
 * ones may not claim more than the deflate limit of ~1032x). */
static int zip_read_entry(pth_file *f, zip_t *z, zip_int64_t idx, const char *name, size_t want,
                          uint8_t **out, size_t *out_n) {
    zip_stat_t st;
    char nb[96];
    if (zip_stat_index(z, (zip_uint64_t)idx, 0, &st) < 0 || !(st.valid & ZIP_STAT_SIZE) ||
        !(st.valid & ZIP_STAT_COMP_SIZE))
        return ss_fail(SS_EFORMAT, "%s: zip entry '%s' unreadable", f->label, ss_printable(name, nb, sizeof nb));
    if (want != SIZE_MAX && st.size != want)
        return ss_fail(SS_EFORMAT, "%s: zip entry '%s' holds %llu bytes, the tensor needs %zu", f->label,
                       ss_printable(name, nb, sizeof nb), (unsigned long long)st.size, want);
    if (st.size > PTH_MAX_FILE_BYTES || (st.valid & ZIP_STAT_COMP_METHOD && st.comp_method == ZIP_CM_STORE
                                             ? st.size != st.comp_size
                                             : st.size / 1100 > st.comp_size + 4096))
        return ss_fail(SS_EFORMAT, "%s: zip entry '%s' claims an impossible size", f->label,
                       ss_printable(name, nb, sizeof nb));
    size_t sz = (size_t)st.size;
    uint8_t *buf = malloc(sz ? sz : 1);
    if (!buf) return ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
    zip_file_t *zf = zip_fopen_index(z, (zip_uint64_t)idx, 0);
    if (!zf) {
        free(buf);
        return ss_fail(SS_EFORMAT, "%s: zip entry '%s': %s", f->label, ss_printable(name, nb, sizeof nb),
                       zip_strerror(z));
    }
    zip_int64_t got = sz ? zip_fread(zf, buf, sz) : 0;
    zip_fclose(zf);
    if (got < 0 || (size_t)got != sz) {
        free(buf);
        return ss_fail(SS_EFORMAT, "%s: zip entry '%s' truncated or corrupt", f->label, ss_printable(name, nb, sizeof nb));
    }
    *out = buf;
    *out_n = sz;
    return 0;
}

static int open_zip(pth_file *f, const uint8_t *p, size_t n) {
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(p, n, 0, &ze);
    if (!src) {
        zip_error_fini(&ze);
        return ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
    }
    zip_t *z = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!z) {
        int rc = ss_fail(SS_EFORMAT, "%s: not a valid zip container: %s", f->label, zip_error_strerror(&ze));
        zip_source_free(src);
        zip_error_fini(&ze);
        return rc;
    }
    zip_error_fini(&ze);
    int rc = 0;
    unpickler u = {0};
    u.label = f->label;
    uint8_t *pkl = NULL;
    storage_buf *bufs = NULL;
    char prefix[256] = "";
    zip_int64_t ne = zip_get_num_entries(z, 0), pkl_idx = -1;
    for (zip_int64_t k = 0; k < ne; k++) {
        const char *nm = zip_get_name(z, (zip_uint64_t)k, 0);
        size_t L = nm ? strlen(nm) : 0;
        if (L >= 9 && !strcmp(nm + L - 9, "/data.pkl") && !memchr(nm, '/', L - 9)) {
            if (pkl_idx >= 0 || L - 8 >= sizeof prefix) {
                rc = ss_fail(SS_EFORMAT, "%s: zip holds more than one data.pkl", f->label);
                goto done;
            }
            pkl_idx = k;
            memcpy(prefix, nm, L - 8);
            prefix[L - 8] = 0;
        }
    }
    if (pkl_idx < 0) {
        rc = ss_fail(SS_EFORMAT, "%s: zip has no <archive>/data.pkl (not a torch.save file)", f->label);
        goto done;
    }
    {
        char bo[300];
        snprintf(bo, sizeof bo, "%sbyteorder", prefix);
        zip_int64_t bi = zip_name_locate(z, bo, 0);
        if (bi >= 0) {
            uint8_t *b = NULL;
            size_t bn;
            if ((rc = zip_read_entry(f, z, bi, bo, SIZE_MAX, &b, &bn)) < 0) goto done;
            int little = bn == 6 && !memcmp(b, "little", 6);
            free(b);
            if (!little) {
                rc = ss_fail(SS_EFORMAT, "%s: big-endian files are not supported", f->label);
                goto done;
            }
        }
    }
    size_t pkl_n;
    if ((rc = zip_read_entry(f, z, pkl_idx, "data.pkl", SIZE_MAX, &pkl, &pkl_n)) < 0) goto done;
    pv *sd;
    size_t used;
    if ((rc = unpickle(&u, pkl, pkl_n, &sd, &used)) < 0) goto done;
    bufs = calloc(u.n_storages + 1, sizeof *bufs);
    if (!bufs) {
        rc = ss_fail(SS_ENOMEM, "%s: out of memory", f->label);
        goto done;
    }
    for (size_t k = 0; k < u.n_storages; k++) {
        pv *s = u.storages[k];
        char en[600], kb[64];
        if (snprintf(en, sizeof en, "%sdata/%s", prefix, s->s) >= (int)sizeof en) {
            rc = ss_fail(SS_EFORMAT, "%s: storage key too long", f->label);
            goto done;
        }
        zip_int64_t ei = zip_name_locate(z, en, 0);
        if (ei < 0) {
            rc = ss_fail(SS_EFORMAT, "%s: storage '%s' missing from the zip", f->label, ss_printable(s->s, kb, sizeof kb));
            goto done;
        }
        size_t nbytes;
        if ((rc = storage_bytes(f, s, &nbytes)) < 0) goto done;
        if ((rc = zip_read_entry(f, z, ei, en, nbytes, &bufs[k].data, &bufs[k].nbytes)) < 0) goto done;
    }
    rc = materialize(f, &u, sd, bufs);
done:
    if (bufs)
        for (size_t k = 0; k < u.n_storages; k++) free(bufs[k].data);
    free(bufs);
    free(pkl);
    up_free(&u);
    zip_close(z); /* read-only: discards; also frees src */
    return rc;
}

int pth_open_memory(pth_file **out, const void *buf, size_t n, const char *label) {
    *out = NULL;
    pth_file *f = calloc(1, sizeof *f);
    if (!f) return ss_fail(SS_ENOMEM, "out of memory");
    f->label = strdup(label ? label : "(memory)");
    if (!f->label) {
        free(f);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    const uint8_t *p = buf;
    int rc;
    if (n >= 4 && !memcmp(p, "PK\x03\x04", 4)) {
        f->zip = 1;
        rc = open_zip(f, p, n);
    } else if (n >= 2 && p[0] == 0x80) {
        rc = open_legacy(f, p, n);
    } else {
        rc = ss_fail(SS_EFORMAT, "%s: not a PyTorch .pth file (neither a zip nor a pickle)", f->label);
    }
    if (rc < 0) {
        pth_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int pth_open(pth_file **out, const char *path) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ss_fail(SS_EIO, "%s: cannot open", path);
    uint8_t *buf = NULL;
    long len = -1;
    if (fseek(fp, 0, SEEK_END) == 0) len = ftell(fp);
    if (len < 0 || (unsigned long long)len > PTH_MAX_FILE_BYTES || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return ss_fail(SS_EIO, "%s: cannot determine the size (or larger than 64 GiB)", path);
    }
    buf = malloc((size_t)len + 1);
    if (!buf) {
        fclose(fp);
        return ss_fail(SS_ENOMEM, "%s: out of memory reading %ld bytes", path, len);
    }
    size_t got = fread(buf, 1, (size_t)len, fp);
    fclose(fp);
    if (got != (size_t)len) {
        free(buf);
        return ss_fail(SS_EIO, "%s: read error", path);
    }
    int rc = pth_open_memory(out, buf, (size_t)len, path);
    free(buf);
    return rc;
}

int pth_load_f32(float **out, const pth_file *f, const char *name, int ndim, const int64_t *shape) {
    *out = NULL;
    const st_tensor *t = pth_find(f, name);
    char nb[96];
    if (!t) return ss_fail(SS_EMISSING, "%s: tensor '%s' not found", f->label, ss_printable(name, nb, sizeof nb));
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char want[128] = "", have[128] = "";
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "", (long long)shape[d]);
        for (int d = 0; d < t->ndim; d++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? "," : "", (long long)t->shape[d]);
        return ss_fail(SS_ESHAPE, "%s: tensor '%s' has shape [%s], expected [%s]", f->label,
                       ss_printable(name, nb, sizeof nb), have, want);
    }
    float *buf = ss_malloc((size_t)t->numel * sizeof(float) + 1);
    if (!buf) return SS_ENOMEM;
    int rc = st_to_f32(buf, t);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}
