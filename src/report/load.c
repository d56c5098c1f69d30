/* report/load: experiment.json and records.jsonl into an rp_exp (docs/experiment-format.md).
 *
 * Loading is forgiving where a run can legitimately leave traces (a half-written last line after
 * a crash, items not run yet) and says what it skipped in rp_exp.notes; it fails only when the
 * experiment cannot be interpreted at all (no experiment.json, no baseline, duplicate names). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "exp/digest.h"
#include "io/safetensors.h"
#include "models/site.h"
#include "report/report.h"
#include "report/spiral.h"
#include "sink/record.h"

void rp_note(rp_exp *e, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(e->notes, (size_t)(e->n_notes + 1) * sizeof *n);
    if (!n) return;
    e->notes = n;
    if ((e->notes[e->n_notes] = strdup(buf))) e->n_notes++;
}

void rp_warn(rp_exp *e, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    rp_note(e, "%s", buf);
    if (e->warn) fprintf(e->warn, "sinkscope report: warning: %s\n", buf);
}

/* Opens an input of the experiment folder for reading: it must be a regular file. NULL with
 * ss_err() set ("PATH: cannot open: REASON" / "PATH: is a directory, not a file" / ...); errno
 * is ENOENT (and nothing is set) when the file does not exist and missing_ok. */
static FILE *open_input(const char *path, int missing_ok) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* O_NONBLOCK: a FIFO must not hang us */
    if (fd < 0) {
        int err = errno;
        if (!(missing_ok && err == ENOENT)) ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(err));
        errno = err;
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb)) {
        int err = errno;
        close(fd);
        ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(err));
        errno = err;
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        ss_fail(SS_EIO, "%s: is %s, not a regular file", path, S_ISDIR(sb.st_mode) ? "a directory" : "a special file");
        errno = EISDIR;
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int err = errno;
        close(fd);
        ss_fail(SS_ENOMEM, "out of memory");
        errno = err;
    }
    return f;
}

static void copy_str(char *dst, size_t cap, json_t *v) {
    if (json_is_string(v)) snprintf(dst, cap, "%s", json_string_value(v));
}

static int get_int(json_t *obj, const char *key, long long *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) return -1;
    *out = json_integer_value(v);
    return 0;
}

/* A number, or NaN when absent / null / not a number. */
static double get_num(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A pe_* position set for the description: its pattern name, or up to 4 positions and a count. */
static void put_pe_set(char *d, size_t cap, size_t *pn, const sink_pe_set *set) {
    size_t n = *pn;
    if (set->pattern != PE_LIST) n += (size_t)snprintf(d + n, n < cap ? cap - n : 0, "%s", set->pattern == PE_SMILEY ? "smiley" : "corners");
    else if (set->n == 0) n += (size_t)snprintf(d + n, n < cap ? cap - n : 0, "[]");
    else {
        for (int i = 0; i < set->n && i < 4; i++)
            n += (size_t)snprintf(d + n, n < cap ? cap - n : 0, "%s[%d,%d]", i ? "," : "", set->rc[i][0], set->rc[i][1]);
        if (set->n > 4) n += (size_t)snprintf(d + n, n < cap ? cap - n : 0, ",... (%d)", set->n);
    }
    *pn = n;
}

static void describe(rp_cond *rc, int is_baseline) {
    const sink_condition *c = &rc->c;
    char *d = rc->desc;
    size_t cap = sizeof rc->desc, n = 0;
#define PUT(...) (n += (size_t)snprintf(d + n, n < cap ? cap - n : 0, __VA_ARGS__))
    if (!rc->parsed) {
        PUT("(condition not parsed)");
        return;
    }
    const int pad = sink_condition_pad_active(c);
    if (c->n_layers == 0 && !c->have_pe && !pad) {
        PUT(is_baseline ? "no intervention" : "no-op (no layers)");
        return;
    }
    if (pad) { /* the prompt transform (text/promptx.h) */
        PUT("prompt + %d x '%s'", c->pad.repeat, c->pad.pad);
        if (c->n_layers == 0 && !c->have_pe) return;
        PUT(" · ");
    }
    if (c->have_pe) { /* the AbsPE edit (sink/abspe.h) */
        PUT("PE");
        if (c->have_pe_copy) {
            PUT(" copy [%d,%d] to ", c->pe_copy_from[0], c->pe_copy_from[1]);
            put_pe_set(d, cap, &n, &c->pe_copy_to);
        }
        if (c->have_pe_zero) {
            PUT("%s zero ", c->have_pe_copy ? " ·" : "");
            put_pe_set(d, cap, &n, &c->pe_zero);
        }
        if (c->n_layers == 0) {
            if (c->step_lo > 0 || c->step_hi < 1) PUT(" · t/T∈[%g,%g]", c->step_lo, c->step_hi);
            return;
        }
        PUT(" · ");
    }
    PUT("L");
    for (int i = 0; i < c->n_layers; i++) PUT("%s%d", i ? "+" : "", c->layers[i]);
    if (c->select == SEL_FIXED) {
        PUT(" · fixed [");
        for (int i = 0; i < c->n_indices; i++) PUT("%s%d", i ? "," : "", c->indices[i]);
        PUT("]");
    } else {
        PUT(" · %s-%d%s", c->select == SEL_RANDOM ? "random" : "top", c->k, c->rank_union ? " union" : "/head");
    }
    if (c->value_path) {
        static const char *const V[] = {"zero", "mean", "lerp"};
        PUT(" · value %s", V[c->value]);
        if (c->value == VAL_LERP) PUT(" α=%g", (double)c->alpha);
    } else {
        PUT(" · η=%g", (double)c->eta);
    }
    if (c->keys != TOK_ALL) PUT(" · %s keys", sink_tokens_name(c->keys));
    if (c->queries != TOK_IMAGE) PUT(" · %s queries", sink_tokens_name(c->queries));
    if (c->step_lo > 0 || c->step_hi < 1) PUT(" · t/T∈[%g,%g]", c->step_lo, c->step_hi);
#undef PUT
}

static int load_experiment(rp_exp *e, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/experiment.json", dir);
    json_error_t je;
    FILE *f = open_input(path, 1);
    if (!f) {
        if (errno == ENOENT) return ss_fail(SS_EIO, "%s: cannot open: no such file (is %s an experiment folder?)", path, dir);
        return SS_EIO; /* message set by open_input */
    }
    json_t *root = json_loadf(f, 0, &je);
    int read_err = ferror(f);
    fclose(f);
    if (!root) {
        if (read_err) return ss_fail(SS_EIO, "%s: read error", path);
        return ss_fail(SS_EFORMAT, "%s: not valid JSON (line %d: %s)", path, je.line, je.text);
    }
    int rc = SS_OK;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    copy_str(e->model, sizeof e->model, json_object_get(root, "model"));
    copy_str(e->prompts, sizeof e->prompts, json_object_get(root, "prompts"));
    copy_str(e->model_digest, sizeof e->model_digest, json_object_get(root, "model_digest"));
    copy_str(e->prompts_digest, sizeof e->prompts_digest, json_object_get(root, "prompts_digest"));
    copy_str(e->version, sizeof e->version, json_object_get(root, "sinkscope_version"));
    copy_str(e->precision, sizeof e->precision, json_object_get(root, "precision"));
    long long v;
    e->n_prompts = get_int(root, "n_prompts", &v) == 0 ? (int)v : -1;
    e->seeds_per_prompt = get_int(root, "seeds_per_prompt", &v) == 0 ? (int)v : -1;
    e->steps = get_int(root, "steps", &v) == 0 ? (int)v : -1;
    e->base_seed = get_int(root, "base_seed", &v) == 0 ? v : 0;
    e->cfg = get_num(root, "cfg");
    json_t *metrics = json_object_get(root, "metrics");
    if (json_is_object(metrics)) copy_str(e->fid_mode, sizeof e->fid_mode, json_object_get(metrics, "fid_mode"));
    json_t *probe = json_object_get(root, "probe");
    e->probe_topk = probe && get_int(probe, "topk", &v) == 0 ? (int)v : -1;
    if (probe) copy_str(e->probe_queries, sizeof e->probe_queries, json_object_get(probe, "queries"));

    json_t *conds = json_object_get(root, "conditions");
    if (!json_is_array(conds) || json_array_size(conds) == 0) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'conditions' must be a non-empty list (condition 0 is the baseline)", path);
        goto done;
    }
    e->n_conds = (int)json_array_size(conds);
    if (!(e->conds = ss_calloc((size_t)e->n_conds, sizeof *e->conds))) {
        rc = SS_ENOMEM;
        goto done;
    }
    for (int i = 0; i < e->n_conds; i++) {
        json_t *c = json_array_get(conds, (size_t)i);
        json_t *name = json_object_get(c, "name");
        if (!json_is_string(name) || !*json_string_value(name) || strlen(json_string_value(name)) >= sizeof e->conds[i].name) {
            rc = ss_fail(SS_EFORMAT, "%s: conditions[%d] has no usable 'name'", path, i);
            goto done;
        }
        snprintf(e->conds[i].name, sizeof e->conds[i].name, "%s", json_string_value(name));
        for (int j = 0; j < i; j++)
            if (!strcmp(e->conds[j].name, e->conds[i].name)) {
                rc = ss_fail(SS_EFORMAT, "%s: condition name '%s' appears twice", path, e->conds[i].name);
                goto done;
            }
        char where[300];
        snprintf(where, sizeof where, "experiment.json: conditions[%d]", i);
        if (sink_condition_from_json(&e->conds[i].c, c, where) == 0) {
            e->conds[i].parsed = 1;
        } else {
            /* Still usable for paired deltas; only matching and sweeps need the fields. */
            rp_note(e, "%s (not matched to random controls or sweeps)", ss_err());
            ss_err_clear();
        }
        describe(&e->conds[i], i == 0);
    }
    if (e->conds[0].parsed && e->conds[0].c.n_layers > 0)
        rp_note(e, "condition 0 ('%s') intervenes on %d layer(s); it is still used as the baseline", e->conds[0].name,
                e->conds[0].c.n_layers);
    else if (e->conds[0].parsed && e->conds[0].c.have_pe)
        rp_note(e, "condition 0 ('%s') edits the position embedding (pe_* fields); it is still used as the baseline",
                e->conds[0].name);
done:
    json_decref(root);
    return rc;
}

/* ---- records ---- */

static int push_probe(rp_exp *e, const rp_probe *p) {
    if (e->n_probes == e->cap_probes) {
        size_t cap = e->cap_probes ? 2 * e->cap_probes : 1024;
        rp_probe *q = realloc(e->probes, cap * sizeof *q);
        if (!q) return ss_fail(SS_ENOMEM, "out of memory");
        e->probes = q;
        e->cap_probes = cap;
    }
    e->probes[e->n_probes++] = *p;
    return 0;
}

static int push_key(rp_exp *e, int k) {
    if (e->n_keys == e->cap_keys) {
        size_t cap = e->cap_keys ? 2 * e->cap_keys : 4096;
        int *q = realloc(e->keys, cap * sizeof *q);
        if (!q) return ss_fail(SS_ENOMEM, "out of memory");
        e->keys = q;
        e->cap_keys = cap;
    }
    e->keys[e->n_keys++] = k;
    return 0;
}

static int push_verif(rp_exp *e, const rp_verif *v) {
    if (e->n_verifs == e->cap_verifs) {
        size_t cap = e->cap_verifs ? 2 * e->cap_verifs : 1024;
        rp_verif *q = realloc(e->verifs, cap * sizeof *q);
        if (!q) return ss_fail(SS_ENOMEM, "out of memory");
        e->verifs = q;
        e->cap_verifs = cap;
    }
    e->verifs[e->n_verifs++] = *v;
    return 0;
}

static int tag_index(rp_exp *e, const char *tag) {
    for (int i = 0; i < e->n_tags; i++)
        if (!strcmp(e->tags[i], tag)) return i;
    char **t = realloc(e->tags, (size_t)(e->n_tags + 1) * sizeof *t);
    if (!t) return ss_fail(SS_ENOMEM, "out of memory");
    e->tags = t;
    if (!(e->tags[e->n_tags] = strdup(tag))) return ss_fail(SS_ENOMEM, "out of memory");
    return e->n_tags++;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Probe entries (sink/record.h): only the baseline's are analysed (sink dynamics without
 * intervention). A malformed entry: 1 with the error (naming the file and line) in ss_err. */
static int parse_probe(rp_exp *e, rp_record *r, json_t *arr, const char *label, int line) {
    r->probe_off = e->n_probes;
    if (!json_is_array(arr)) return 0;
    const size_t key0 = e->n_keys;
    size_t i;
    json_t *p;
    json_array_foreach(arr, i, p) {
        sink_probe_entry pe;
        int rc = sink_probe_entry_read_json(&pe, p, label, line);
        if (rc == SS_ENOMEM) return rc;
        if (rc < 0) {
            e->n_probes = r->probe_off;
            e->n_keys = key0;
            r->n_probe = 0;
            return 1;
        }
        rp_probe q = {.block = pe.block, .step = pe.step, .site = pe.site, .t_frac = pe.has_t_frac ? pe.t_frac : NAN,
                      .max_mass = pe.max_mass, .entropy = pe.entropy, .top5 = pe.top5, .idx0 = pe.idx0, .text = pe.text,
                      .act_max = pe.act_max, .act_p95 = pe.act_p95, .word = pe.n_types ? pe.type[0] : NAN,
                      .eos = pe.n_types ? pe.type[1] : NAN, .pad = pe.n_types ? pe.type[2] : NAN, .key_off = e->n_keys};
        for (int j = 0; j < pe.n_top1 && rc == 0; j++) {
            rc = push_key(e, pe.top1[j]);
            q.n_keys++;
        }
        sink_probe_entry_free(&pe);
        if (rc < 0 || push_probe(e, &q)) return SS_ENOMEM;
        r->n_probe++;
    }
    return 0;
}

static int parse_verif(rp_exp *e, rp_record *r, json_t *arr, const char *label, int line) {
    r->verif_off = e->n_verifs;
    if (!json_is_array(arr)) return 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        sink_verif_entry ve;
        int rc = sink_verif_entry_read_json(&ve, v, label, line);
        if (rc == SS_ENOMEM) return rc;
        if (rc < 0) {
            e->n_verifs = r->verif_off;
            r->n_verif = 0;
            return 1;
        }
        rp_verif q = {.block = ve.block, .step = ve.step, .site = ve.site, .before = ve.mass_before, .after = ve.mass_after};
        /* keys: per head a list of key indices; count them and the distinct ones */
        const int nb = ve.n_heads ? ve.key_off[ve.n_heads] : 0;
        q.n_keys = nb;
        if (nb) qsort(ve.keys, (size_t)nb, sizeof *ve.keys, cmp_int);
        for (int j = 0; j < nb; j++) q.n_distinct += j == 0 || ve.keys[j] != ve.keys[j - 1];
        sink_verif_entry_free(&ve);
        if (push_verif(e, &q)) return SS_ENOMEM;
        r->n_verif++;
    }
    return 0;
}

static int cond_index(const rp_exp *e, const char *name) {
    for (int i = 0; i < e->n_conds; i++)
        if (!strcmp(e->conds[i].name, name)) return i;
    return -1;
}

int rp_seed_value(json_t *v, uint64_t *out) {
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) return -1;
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > 20) return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) return -1;
        x = x * 10 + d;
    }
    if (n > 1 && s[0] == '0') return -1; /* one spelling per seed: no leading zeros */
    *out = x;
    return 0;
}

/* Is the number token at s[i] a plain integer (no sign, fraction or exponent) above
 * LLONG_MAX but not above UINT64_MAX? *end: where the token ends (always > i). */
static int big_uint_at(const char *s, size_t i, size_t len, size_t *end) {
    size_t j = i + (s[i] == '-');
    while (j < len && s[j] >= '0' && s[j] <= '9') j++;
    *end = j > i ? j : i + 1;
    if (s[i] == '-' || (j < len && (s[j] == '.' || s[j] == 'e' || s[j] == 'E'))) return 0;
    size_t nd = j - i;
    if (nd < 19 || nd > 20 || s[i] == '0') return 0;
    static const char LL[] = "9223372036854775807", UL[] = "18446744073709551615";
    return (nd > 19 || memcmp(s + i, LL, 19) > 0) && (nd < 20 || memcmp(s + i, UL, 20) <= 0);
}

/* Plain non-negative integers of JSON text (outside strings) that do not fit in a long long
 * but do in a uint64 are put in quotes, so that jansson (signed 64-bit integers only: "too big
 * integer") reads them as strings instead of refusing the whole line. Returns a malloc'ed,
 * NUL-terminated copy, or NULL when there is nothing to quote (or no memory). */
static char *quote_big_ints(const char *s, size_t len, size_t *out_len) {
    char *o = NULL;
    size_t n = 0, count = 0;
    for (int pass = 0; pass < 2; pass++) {
        int in_str = 0;
        for (size_t i = 0; i < len;) {
            char c = s[i];
            size_t j = i + 1;
            int q = 0;
            if (in_str) {
                if (c == '\\' && i + 1 < len) j = i + 2;
                else if (c == '"') in_str = 0;
            } else if (c == '"') {
                in_str = 1;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                q = big_uint_at(s, i, len, &j);
                count += pass == 0 && q;
            }
            if (pass == 1) {
                if (q) o[n++] = '"';
                memcpy(o + n, s + i, j - i);
                n += j - i;
                if (q) o[n++] = '"';
            }
            i = j;
        }
        if (pass == 0 && (!count || !(o = malloc(len + 2 * count + 1)))) return NULL;
    }
    o[n] = 0;
    *out_len = n;
    return o;
}

json_t *rp_parse_line(const char *line, size_t len, json_error_t *je) {
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, je);
    if (o) return o;
    size_t qlen = 0;
    char *q = quote_big_ints(line, len, &qlen);
    if (!q) return NULL;
    json_error_t je2;
    o = json_loadb(q, qlen, JSON_REJECT_DUPLICATES, &je2);
    free(q);
    if (!o) *je = je2;
    return o;
}

static int is_hex64(const char *s) {
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* One parsed line into a record. Returns 1 when the record is kept, 0 when skipped (noted),
 * negative on out-of-memory. */
static int parse_record(rp_exp *e, json_t *o, const char *label, int line, rp_record *r) {
    memset(r, 0, sizeof *r);
    r->line = line;
    r->tag = -1;
    r->feat_row = -1;
    r->image_bytes = -1;
    json_t *cn = json_object_get(o, "condition");
    long long pi;
    uint64_t seed;
    if (!json_is_object(o) || !json_is_string(cn) || get_int(o, "prompt_index", &pi) ||
        rp_seed_value(json_object_get(o, "seed"), &seed)) {
        e->n_bad++;
        rp_note(e, "records.jsonl:%d: no 'condition', 'prompt_index' or 'seed' (an integer >= 0, or a decimal string); line skipped",
                line);
        return 0;
    }
    if (pi < 0 || pi > INT_MAX) {
        e->n_bad++;
        rp_note(e, "records.jsonl:%d: prompt_index %lld is out of range; line skipped", line, pi);
        return 0;
    }
    int ci = cond_index(e, json_string_value(cn));
    if (ci < 0) {
        if (e->n_unknown_cond++ == 0)
            rp_note(e, "records.jsonl:%d: condition '%s' is not in experiment.json; its records are skipped", line,
                    json_string_value(cn));
        return 0;
    }
    long long idx;
    if (get_int(o, "condition_index", &idx) == 0 && idx != ci)
        rp_note(e, "records.jsonl:%d: condition_index %lld but '%s' is condition %d; the name is used", line, idx,
                e->conds[ci].name, ci);
    r->cond = ci;
    r->prompt = (int)pi;
    r->seed = seed;
    json_t *tag = json_object_get(o, "tag");
    if (json_is_string(tag) && (r->tag = tag_index(e, json_string_value(tag))) < 0) return SS_ENOMEM;
    json_t *img = json_object_get(o, "image"), *pt = json_object_get(o, "prompt");
    if (json_is_string(img) && !(r->image = strdup(json_string_value(img)))) return ss_fail(SS_ENOMEM, "out of memory");
    if (json_is_string(pt) && !(r->prompt_text = strdup(json_string_value(pt)))) return ss_fail(SS_ENOMEM, "out of memory");
    /* the image's size and digest (runner since 2026-12): malformed values are flagged, not trusted */
    json_t *ib = json_object_get(o, "image_bytes"), *ih = json_object_get(o, "image_sha256");
    if (ib) {
        if (json_is_integer(ib) && json_integer_value(ib) >= 0) r->image_bytes = json_integer_value(ib);
        else r->img_state = RP_IMG_FIELDS;
    }
    if (ih) {
        if (json_is_string(ih) && is_hex64(json_string_value(ih))) memcpy(r->image_sha256, json_string_value(ih), 65);
        else r->img_state = RP_IMG_FIELDS;
    }
    json_t *fp = json_object_get(o, "features"), *fh = json_object_get(o, "features_sha256");
    if (json_is_string(fp)) {
        if (!(r->features = strdup(json_string_value(fp)))) return ss_fail(SS_ENOMEM, "out of memory");
        e->n_fid++;
        if (json_is_string(fh) && is_hex64(json_string_value(fh))) memcpy(r->features_sha256, json_string_value(fh), 65);
        else if (fh) snprintf(r->features_sha256, sizeof r->features_sha256, "?"); /* never matches */
    }
    json_t *m = json_object_get(o, "metrics");
    json_t *gj = json_object_get(m, "geneval");
    double g = json_is_boolean(gj) ? (double)json_is_true(gj) : get_num(m, "geneval");
    r->has_gv = isfinite(g);
    r->gv = g;
    r->mse = get_num(m, "mse");
    r->ssim = get_num(m, "ssim");
    r->clip_t = get_num(m, "clip_t");
    r->lpips = get_num(m, "lpips");
    e->n_clip_t += json_object_get(m, "clip_t") != NULL;
    e->n_lpips += json_object_get(m, "lpips") != NULL;
    if (!isfinite(r->clip_t)) r->clip_t = NAN;
    if (!isfinite(r->lpips)) r->lpips = NAN;
    json_t *ps = json_object_get(m, "psnr");
    r->psnr = get_num(m, "psnr");
    /* JSON has no infinity: accept "inf"/"Infinity", and null/absent PSNR with MSE 0 */
    if (json_is_string(ps) && (!strcmp(json_string_value(ps), "inf") || !strcmp(json_string_value(ps), "Infinity")))
        r->psnr = INFINITY;
    else if (!json_is_number(ps) && r->mse == 0)
        r->psnr = INFINITY;
    if (!isfinite(r->mse)) r->mse = NAN;
    if (!isfinite(r->ssim)) r->ssim = NAN;
    if (isnan(r->psnr) || r->psnr == -INFINITY) r->psnr = NAN;
    int rc;
    if ((ci == 0 && (rc = parse_probe(e, r, json_object_get(o, "probe"), label, line)) != 0) ||
        (ci != 0 && (rc = parse_verif(e, r, json_object_get(o, "verification"), label, line)) != 0)) {
        if (rc < 0) return rc;
        e->n_bad++;
        rp_note(e, "%s; line skipped", ss_err()); /* names the file and line */
        ss_err_clear();
        return 0;
    }
    if ((rc = rp_spiral_parse(e, r, json_object_get(o, "spiral"), label, line)) < 0) return rc;
    return 1;
}

static int cmp_rec(const void *a, const void *b) {
    const rp_record *x = a, *y = b;
    if (x->cond != y->cond) return x->cond < y->cond ? -1 : 1;
    if (x->prompt != y->prompt) return x->prompt < y->prompt ? -1 : 1;
    if (x->seed != y->seed) return x->seed < y->seed ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

static void free_record(rp_record *r) {
    free(r->image);
    free(r->features);
    free(r->prompt_text);
}

/* Tags ordered by the first prompt index that carries them, so that the order does not depend
 * on the order in which records were appended. */
static int sort_tags(rp_exp *e) {
    int nt = e->n_tags;
    if (nt < 2) return 0;
    int *first = ss_malloc((size_t)nt * sizeof *first), *order = ss_malloc((size_t)nt * sizeof *order),
        *remap = ss_malloc((size_t)nt * sizeof *remap);
    char **tags = ss_malloc((size_t)nt * sizeof *tags);
    if (!first || !order || !remap || !tags) {
        free(first), free(order), free(remap), free(tags);
        return SS_ENOMEM;
    }
    for (int t = 0; t < nt; t++) first[t] = 0x7fffffff, order[t] = t;
    for (int i = 0; i < e->n_recs; i++)
        if (e->recs[i].tag >= 0 && e->recs[i].prompt < first[e->recs[i].tag]) first[e->recs[i].tag] = e->recs[i].prompt;
    for (int i = 1; i < nt; i++) /* insertion sort: few tags */
        for (int j = i; j > 0; j--) {
            int a = order[j - 1], b = order[j];
            if (first[a] < first[b] || (first[a] == first[b] && strcmp(e->tags[a], e->tags[b]) <= 0)) break;
            order[j - 1] = b, order[j] = a;
        }
    for (int t = 0; t < nt; t++) tags[t] = e->tags[order[t]], remap[order[t]] = t;
    for (int i = 0; i < e->n_recs; i++)
        if (e->recs[i].tag >= 0) e->recs[i].tag = remap[e->recs[i].tag];
    free(e->tags);
    e->tags = tags;
    free(first), free(order), free(remap);
    return 0;
}

static int read_records(rp_exp *e, FILE *f, const char *label) {
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0, rcap = 0;
    ssize_t len;
    int rc = 0, lineno = 0;
    errno = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (lineno == INT_MAX) break;
        lineno++;
        e->n_lines++;
        int has_nl = line[len - 1] == '\n';
        int blank = 1;
        for (ssize_t i = 0; i < len && blank; i++) blank = line[i] == ' ' || line[i] == '\n' || line[i] == '\r' || line[i] == '\t';
        if (blank) {
            e->n_blank++;
            continue;
        }
        json_error_t je;
        json_t *o = has_nl ? rp_parse_line(line, (size_t)len, &je) : NULL;
        if (!o) {
            /* A last line without its newline is a write cut short by a crash; run redoes it. */
            if (!has_nl) {
                e->n_truncated++;
                rp_note(e, "%s:%d: last line has no newline (interrupted write); ignored", label, lineno);
            } else {
                e->n_bad++;
                rp_note(e, "%s:%d: not valid JSON (%s); skipped", label, lineno, je.text);
            }
            continue;
        }
        if ((size_t)e->n_recs == rcap) {
            rcap = rcap ? 2 * rcap : 256;
            rp_record *q = realloc(e->recs, rcap * sizeof *q);
            if (!q) {
                json_decref(o);
                rc = ss_fail(SS_ENOMEM, "out of memory");
                break;
            }
            e->recs = q;
        }
        int k = parse_record(e, o, label, lineno, &e->recs[e->n_recs]);
        json_decref(o);
        if (k < 0) {
            free_record(&e->recs[e->n_recs]);
            rc = k;
            break;
        }
        if (k == 0) free_record(&e->recs[e->n_recs]);
        else e->n_recs++;
    }
    int err = errno;
    free(line);
    if (rc == 0 && ferror(f)) rc = ss_fail(SS_EIO, "%s: read error: %s", label, strerror(err ? err : EIO));
    if (rc == 0 && len < 0 && err == ENOMEM) rc = ss_fail(SS_ENOMEM, "%s: out of memory reading a line", label);
    return rc;
}

static char *key_str(const rp_exp *e, const rp_record *r, char *b, size_t cap) {
    snprintf(b, cap, "%s/%05d/%" PRIu64, e->conds[r->cond].name, r->prompt, r->seed);
    return b;
}

int rp_load_records_stream(rp_exp *e, FILE *f, const char *label) {
    int rc = read_records(e, f, label);
    if (rc < 0) return rc;
    if (e->n_unknown_cond > 1) rp_note(e, "%d records name conditions that are not in experiment.json", e->n_unknown_cond);

    /* canonical order; a key seen twice keeps its LAST line (the runner appends a redone item
     * after the record it replaces) */
    if (e->n_recs) qsort(e->recs, (size_t)e->n_recs, sizeof *e->recs, cmp_rec);
    int w = 0;
    for (int i = 0; i < e->n_recs; i++) {
        if (w > 0 && e->recs[w - 1].cond == e->recs[i].cond && e->recs[w - 1].prompt == e->recs[i].prompt &&
            e->recs[w - 1].seed == e->recs[i].seed) {
            char k[200];
            if (e->n_dup++ < 3)
                rp_note(e, "%s:%d: key %s was already recorded on line %d; the last line (%d) is used", label, e->recs[i].line,
                        key_str(e, &e->recs[i], k, sizeof k), e->recs[w - 1].line, e->recs[i].line);
            free_record(&e->recs[w - 1]);
            e->recs[w - 1] = e->recs[i];
            continue;
        }
        e->recs[w++] = e->recs[i];
    }
    e->n_recs = w;
    if (e->n_dup > 3) rp_note(e, "%d duplicate keys in all (each time the last line is used)", e->n_dup);
    if ((rc = sort_tags(e)) < 0) return rc;
    free(e->cond_first), free(e->cond_count);
    e->cond_first = ss_calloc((size_t)e->n_conds, sizeof *e->cond_first);
    e->cond_count = ss_calloc((size_t)e->n_conds, sizeof *e->cond_count);
    if (!e->cond_first || !e->cond_count) return SS_ENOMEM;
    for (int i = e->n_recs - 1; i >= 0; i--) {
        e->cond_first[e->recs[i].cond] = i;
        e->cond_count[e->recs[i].cond]++;
    }
    return 0;
}

static int load_records(rp_exp *e, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/records.jsonl", dir);
    FILE *f = open_input(path, 1);
    if (!f && errno != ENOENT) return SS_EIO; /* a folder, a special file, unreadable: message set */
    if (!f) rp_note(e, "records.jsonl is missing: nothing has been run yet");
    int rc = rp_load_records_stream(e, f, "records.jsonl");
    if (f) fclose(f);
    if (rc == SS_EIO || rc == SS_EFORMAT) { /* the read error or a malformed spiral entry, with the whole path */
        char msg[512];
        const char *m = ss_err();
        snprintf(msg, sizeof msg, "%s", strncmp(m, "records.jsonl: ", 15) ? m : m + 15);
        rc = ss_fail(rc, "%s: %s", path, msg);
    }
    return rc;
}

/* ---- images ---- */

static const char *const IMG_PROBLEM[RP_IMG_NSTATE] = {
    "ok", "the record names no image", "the image path is not a relative path inside the experiment folder",
    "missing", "unreadable", "wrong size", "wrong SHA-256", "malformed image_bytes / image_sha256"};

static int safe_rel(const char *p) {
    if (!*p || *p == '/') return 0;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if ((n == 2 && s[0] == '.' && s[1] == '.') || n == 0) return 0;
        s += n + (e != NULL);
        if (!e) break;
    }
    return 1;
}

int rp_verify_images(rp_exp *e, const char *dir) {
    for (int i = 0; i < e->n_recs; i++) {
        rp_record *r = &e->recs[i];
        if (!r->image && r->img_state == RP_IMG_OK) { /* nothing claimed, nothing to check (hand-made records) */
            e->img_unnamed++;
            continue;
        }
        e->img_checked++;
        char detail[200] = "";
        if (r->img_state == RP_IMG_OK) {
            char path[4400];
            struct stat sb;
            if (!safe_rel(r->image)) r->img_state = RP_IMG_BADPATH;
            else if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, r->image) >= sizeof path) r->img_state = RP_IMG_BADPATH;
            else if (stat(path, &sb)) {
                r->img_state = errno == ENOENT || errno == ENOTDIR ? RP_IMG_MISSING : RP_IMG_UNREADABLE;
                if (r->img_state == RP_IMG_UNREADABLE) snprintf(detail, sizeof detail, " (%s)", strerror(errno));
            } else if (!S_ISREG(sb.st_mode)) {
                r->img_state = RP_IMG_UNREADABLE;
                snprintf(detail, sizeof detail, " (not a regular file)");
            } else if (r->image_bytes >= 0 && (long long)sb.st_size != r->image_bytes) {
                r->img_state = RP_IMG_SIZE;
                snprintf(detail, sizeof detail, " (%lld bytes, the record says %lld)", (long long)sb.st_size, r->image_bytes);
            } else if (r->image_sha256[0]) {
                char hex[DIGEST_HEX];
                if (digest_file(path, hex) < 0) {
                    r->img_state = RP_IMG_UNREADABLE;
                    snprintf(detail, sizeof detail, " (%.150s)", ss_err());
                    ss_err_clear();
                } else if (strcmp(hex, r->image_sha256)) {
                    r->img_state = RP_IMG_DIGEST;
                }
            }
        }
        if (r->img_state == RP_IMG_OK || r->img_state == RP_IMG_MISSING || r->img_state == RP_IMG_SIZE ||
            r->img_state == RP_IMG_DIGEST || r->img_state == RP_IMG_UNREADABLE) {
            if (r->image_sha256[0] || r->image_bytes >= 0) e->img_with_digest++;
            else e->img_existence_only++;
        }
        if (r->img_state == RP_IMG_OK) continue;
        e->img_count[r->img_state]++;
        e->img_flagged++;
        char k[200];
        rp_warn(e, "records.jsonl:%d: image of %s (%s): %s%s; left out of the image metrics and panels", r->line,
                key_str(e, r, k, sizeof k), r->image ? r->image : "none", IMG_PROBLEM[r->img_state], detail);
        /* the metrics were computed from an image that is not there (any more): not used */
        r->has_gv = 0;
        r->gv = r->mse = r->psnr = r->ssim = r->clip_t = r->lpips = NAN;
    }
    if (e->img_unnamed) rp_note(e, "%d records name no image; their images are not checked", e->img_unnamed);
    return 0;
}

const char *rp_img_problem(int state) { return state >= 0 && state < RP_IMG_NSTATE ? IMG_PROBLEM[state] : "?"; }

/* ---- FID features ---- */

/* One record's features into row (RP_FID_DIM floats); 0, or a reason in why. */
static int read_features(const rp_exp *e, const rp_record *r, const char *dir, float *row, char *why, size_t cap) {
    char path[4400], hex[DIGEST_HEX];
    struct stat sb;
    if (!safe_rel(r->features) || (size_t)snprintf(path, sizeof path, "%s/%s", dir, r->features) >= sizeof path)
        return snprintf(why, cap, "the path is not a relative path inside the experiment folder"), -1;
    if (stat(path, &sb)) return snprintf(why, cap, "%s", errno == ENOENT ? "missing" : strerror(errno)), -1;
    if (!S_ISREG(sb.st_mode)) return snprintf(why, cap, "not a regular file"), -1;
    if (r->features_sha256[0]) {
        if (digest_file(path, hex) < 0) {
            snprintf(why, cap, "%.300s", ss_err());
            ss_err_clear();
            return -1;
        }
        if (strcmp(hex, r->features_sha256)) return snprintf(why, cap, "wrong SHA-256"), -1;
    }
    st_file *f;
    if (st_open(&f, path) < 0) {
        snprintf(why, cap, "%.300s", ss_err());
        ss_err_clear();
        return -1;
    }
    const st_tensor *t = st_find(f, "pool3");
    const char *mode = st_metadata(f, "mode");
    int rc = 0;
    if (!t || t->dtype != ST_F32 || t->ndim != 1 || t->shape[0] != RP_FID_DIM)
        rc = -1, snprintf(why, cap, "no tensor pool3 F32 [%d]", RP_FID_DIM);
    else if (e->fid_mode[0] && (!mode || strcmp(mode, e->fid_mode)))
        rc = -1, snprintf(why, cap, "features of mode '%s', the experiment's is '%s'", mode ? mode : "(none)", e->fid_mode);
    else if (st_to_f32(row, t) < 0)
        rc = -1, snprintf(why, cap, "%.300s", ss_err()), ss_err_clear();
    for (int i = 0; i < RP_FID_DIM && rc == 0; i++)
        if (!isfinite(row[i])) rc = -1, snprintf(why, cap, "feature %d is not finite", i);
    st_close(f);
    return rc;
}

int rp_load_features(rp_exp *e, const char *dir) {
    if (!e->n_fid) return 0;
    int rows = 0;
    for (int i = 0; i < e->n_recs; i++) rows += e->recs[i].features && e->recs[i].img_state == RP_IMG_OK;
    if (!(e->feat = ss_malloc(((size_t)rows + 1) * RP_FID_DIM * sizeof *e->feat))) return SS_ENOMEM;
    for (int i = 0; i < e->n_recs; i++) {
        rp_record *r = &e->recs[i];
        if (!r->features || r->img_state != RP_IMG_OK) continue;
        char why[400], k[200];
        if (read_features(e, r, dir, e->feat + (size_t)e->n_feat_rows * RP_FID_DIM, why, sizeof why) == 0) {
            r->feat_row = e->n_feat_rows++;
            continue;
        }
        e->n_feat_flagged++;
        rp_warn(e, "records.jsonl:%d: features of %s (%s): %s; left out of FID_shift", r->line, key_str(e, r, k, sizeof k),
                r->features, why);
    }
    return 0;
}

int rp_load(rp_exp *e, const char *dir, FILE *warn) {
    memset(e, 0, sizeof *e);
    e->warn = warn;
    int rc = load_experiment(e, dir);
    if (rc == 0) rc = load_records(e, dir);
    if (rc == 0) rc = rp_verify_images(e, dir);
    if (rc == 0) rc = rp_load_features(e, dir);
    if (rc < 0) rp_exp_free(e);
    return rc;
}

int rp_find(const rp_exp *e, int cond, int prompt, uint64_t seed) {
    int lo = e->cond_first[cond], hi = lo + e->cond_count[cond] - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const rp_record *r = &e->recs[mid];
        int c = r->prompt != prompt ? (r->prompt < prompt ? -1 : 1) : (r->seed != seed ? (r->seed < seed ? -1 : 1) : 0);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void rp_exp_free(rp_exp *e) {
    for (int i = 0; i < e->n_recs; i++) free_record(&e->recs[i]);
    free(e->recs);
    for (int i = 0; i < e->n_tags; i++) free(e->tags[i]);
    free(e->tags);
    for (int i = 0; i < e->n_notes; i++) free(e->notes[i]);
    free(e->notes);
    free(e->conds);
    free(e->cond_first);
    free(e->cond_count);
    free(e->probes);
    free(e->keys);
    free(e->verifs);
    free(e->feat);
    rp_spiral_data_free(e->spiral);
    memset(e, 0, sizeof *e);
}
