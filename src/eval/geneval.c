/* geneval: GenEval metadata parsing, scoring and summaries (rules described in geneval.h). */
#include "eval/geneval.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "io/fsutil.h"

static const char *const REL_NAMES[GV_NREL] = {"left of", "right of", "above", "below"};

const char *gv_rel_name(int rel) { return rel >= 0 && rel < GV_NREL ? REL_NAMES[rel] : ""; }

int gv_rel_from_name(const char *s) {
    for (int i = 0; i < GV_NREL; i++)
        if (s && !strcmp(s, REL_NAMES[i])) return i;
    return GV_REL_NONE;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static int copy_name(char *dst, size_t cap, const char *src, const char *path, int line,
                     const char *what) {
    size_t n = strlen(src);
    if (n == 0) return ss_fail(SS_EFORMAT, "%s:%d: %s is empty", path, line, what);
    if (n >= cap)
        return ss_fail(SS_EFORMAT, "%s:%d: %s is too long (%zu chars, at most %zu)", path, line,
                       what, n, cap - 1);
    memcpy(dst, src, n + 1);
    return SS_OK;
}

static int parse_clause(json_t *c, int is_include, int idx, const char *path, int line,
                        gv_clause *out) {
    const char *list = is_include ? "include" : "exclude";
    if (!json_is_object(c))
        return ss_fail(SS_EFORMAT, "%s:%d: %s[%d] is not an object", path, line, list, idx);
    memset(out, 0, sizeof *out);
    out->rel = GV_REL_NONE;
    json_t *cls = json_object_get(c, "class");
    if (!cls) return ss_fail(SS_EFORMAT, "%s:%d: %s[%d] has no \"class\"", path, line, list, idx);
    if (!json_is_string(cls))
        return ss_fail(SS_EFORMAT, "%s:%d: %s[%d].class is not a string", path, line, list, idx);
    char what[64];
    snprintf(what, sizeof what, "%s[%d].class", list, idx);
    int rc = copy_name(out->cls, sizeof out->cls, json_string_value(cls), path, line, what);
    if (rc) return rc;
    json_t *count = json_object_get(c, "count");
    if (!count) return ss_fail(SS_EFORMAT, "%s:%d: %s[%d] has no \"count\"", path, line, list, idx);
    if (!json_is_integer(count))
        return ss_fail(SS_EFORMAT, "%s:%d: %s[%d].count is not an integer", path, line, list, idx);
    json_int_t cv = json_integer_value(count);
    if (cv < 1 || cv > 1000000)
        return ss_fail(SS_EFORMAT, "%s:%d: %s[%d].count = %lld is out of range (1..1000000)", path,
                       line, list, idx, (long long)cv);
    out->count = (int)cv;
    if (!is_include) return SS_OK; /* GenEval reads only class and count of exclude clauses */
    json_t *color = json_object_get(c, "color");
    if (color) {
        if (!json_is_string(color))
            return ss_fail(SS_EFORMAT, "%s:%d: include[%d].color is not a string", path, line, idx);
        snprintf(what, sizeof what, "include[%d].color", idx);
        rc = copy_name(out->color, sizeof out->color, json_string_value(color), path, line, what);
        if (rc) return rc;
    }
    json_t *pos = json_object_get(c, "position");
    if (pos) {
        if (!json_is_array(pos) || json_array_size(pos) != 2 ||
            !json_is_string(json_array_get(pos, 0)) || !json_is_integer(json_array_get(pos, 1)))
            return ss_fail(SS_EFORMAT,
                           "%s:%d: include[%d].position must be [relation string, clause index]",
                           path, line, idx);
        const char *rel = json_string_value(json_array_get(pos, 0));
        out->rel = gv_rel_from_name(rel);
        char shown[80];
        if (out->rel == GV_REL_NONE)
            return ss_fail(SS_EFORMAT,
                           "%s:%d: include[%d].position relation '%s' is not one of "
                           "\"left of\", \"right of\", \"above\", \"below\"",
                           path, line, idx, ss_printable(rel, shown, sizeof shown));
        json_int_t t = json_integer_value(json_array_get(pos, 1));
        if (t < 0 || t >= idx)
            return ss_fail(SS_EFORMAT,
                           "%s:%d: include[%d].position target %lld is not an earlier include "
                           "clause",
                           path, line, idx, (long long)t);
        out->target = (int)t;
    }
    return SS_OK;
}

static int parse_list(json_t *root, int is_include, const char *path, int line, gv_clause *out,
                      int *n) {
    const char *key = is_include ? "include" : "exclude";
    *n = 0;
    json_t *arr = json_object_get(root, key);
    if (!arr) return SS_OK; /* GenEval treats a missing list as empty */
    if (!json_is_array(arr))
        return ss_fail(SS_EFORMAT, "%s:%d: \"%s\" is not an array", path, line, key);
    size_t len = json_array_size(arr);
    if (len > GV_MAX_CLAUSES)
        return ss_fail(SS_EFORMAT, "%s:%d: \"%s\" has %zu clauses (at most %d supported)", path,
                       line, key, len, GV_MAX_CLAUSES);
    for (size_t i = 0; i < len; i++) {
        int rc = parse_clause(json_array_get(arr, i), is_include, (int)i, path, line, &out[i]);
        if (rc) return rc;
    }
    *n = (int)len;
    return SS_OK;
}

int gv_parse_line(const char *text, const char *path, int line, gv_meta *out) {
    if (!path) path = "<metadata>";
    json_error_t jerr;
    char shown[200];
    json_t *root = json_loads(text, 0, &jerr);
    if (!root)
        return ss_fail(SS_EFORMAT, "%s:%d: bad JSON: %s (column %d)", path, line, ss_printable(jerr.text, shown, sizeof shown),
                       jerr.column);
    int rc = SS_OK;
    memset(out, 0, sizeof *out);
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s:%d: record is not a JSON object", path, line);
        goto done;
    }
    json_t *tag = json_object_get(root, "tag");
    json_t *prompt = json_object_get(root, "prompt");
    if (!tag) {
        rc = ss_fail(SS_EFORMAT, "%s:%d: missing \"tag\"", path, line);
        goto done;
    }
    if (!json_is_string(tag)) {
        rc = ss_fail(SS_EFORMAT, "%s:%d: \"tag\" is not a string", path, line);
        goto done;
    }
    if (!prompt) {
        rc = ss_fail(SS_EFORMAT, "%s:%d: missing \"prompt\"", path, line);
        goto done;
    }
    if (!json_is_string(prompt)) {
        rc = ss_fail(SS_EFORMAT, "%s:%d: \"prompt\" is not a string", path, line);
        goto done;
    }
    rc = copy_name(out->tag, sizeof out->tag, json_string_value(tag), path, line, "\"tag\"");
    if (rc) goto done;
    const char *p = json_string_value(prompt);
    if (strlen(p) >= sizeof out->prompt) {
        rc = ss_fail(SS_EFORMAT, "%s:%d: \"prompt\" is too long (%zu chars, at most %zu)", path,
                     line, strlen(p), sizeof out->prompt - 1);
        goto done;
    }
    strcpy(out->prompt, p);
    rc = parse_list(root, 1, path, line, out->include, &out->n_include);
    if (rc) goto done;
    rc = parse_list(root, 0, path, line, out->exclude, &out->n_exclude);
done:
    json_decref(root);
    return rc;
}

/* ---- prompt files ------------------------------------------------------------------------- */

size_t gv_bom_len(const char *buf, size_t len) {
    return len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF ? 3
                                                                                                                           : 0;
}

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 when it is not well-formed
 * (overlong forms, surrogates and code points past U+10FFFF are not well-formed). */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp) {
    const unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    unsigned v, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

int gv_check_text_line(const char *s, size_t n, const char *path, long line) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned cp = 0;
        if (u[i] == 0) return ss_fail(SS_EFORMAT, "%s:%ld: NUL byte at column %zu", path, line, i + 1);
        const size_t k = utf8_seq(u + i, n - i, &cp);
        if (!k) return ss_fail(SS_EFORMAT, "%s:%ld: invalid UTF-8 (byte 0x%02x at column %zu)", path, line, u[i], i + 1);
        if (cp == 0xFEFF)
            return ss_fail(SS_EFORMAT, "%s:%ld: a byte-order mark (U+FEFF) at column %zu; only one at the very start of "
                           "the file is allowed", path, line, i + 1);
        i += k;
    }
    return 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int gv_parse_prompts(const char *buf, size_t len, const char *path, int format, gv_meta **out, int *n, int *has_meta) {
    *out = NULL;
    *n = 0;
    if (!path) path = "<prompts>";
    size_t pos = gv_bom_len(buf, len);
    if (format == GV_FORMAT_AUTO) { /* JSONL when the first non-blank character (past a BOM) is '{' */
        size_t i = pos;
        while (i < len && is_blank(buf[i])) i++;
        format = i < len && buf[i] == '{' ? GV_FORMAT_JSONL : GV_FORMAT_TEXT;
    }
    if (has_meta) *has_meta = format == GV_FORMAT_JSONL;
    gv_meta *arr = NULL;
    int count = 0, cap = 0, rc = SS_OK;
    long lineno = 0;
    char *tmp = NULL;
    size_t tcap = 0;
    while (pos < len && !rc) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - buf) : len;
        const char *s = buf + pos, *e = buf + end;
        pos = nl ? end + 1 : len;
        if (++lineno > INT_MAX) {
            rc = ss_fail(SS_EFORMAT, "%s: more than %d lines", path, INT_MAX);
            break;
        }
        if ((rc = gv_check_text_line(s, (size_t)(e - s), path, lineno))) break;
        while (s < e && is_blank(*s)) s++;
        while (e > s && is_blank(e[-1])) e--;
        if (s == e) continue;
        if (count == cap) {
            if (cap > INT_MAX / 2) {
                rc = ss_fail(SS_ENOMEM, "%s: more than %d prompts", path, INT_MAX / 2);
                break;
            }
            const int ncap = cap ? cap * 2 : 64;
            gv_meta *na = realloc(arr, (size_t)ncap * sizeof *na);
            if (!na) {
                rc = ss_fail(SS_ENOMEM, "%s: out of memory at line %ld", path, lineno);
                break;
            }
            arr = na;
            cap = ncap;
        }
        const size_t m = (size_t)(e - s);
        if (format == GV_FORMAT_JSONL) {
            if (m + 1 > tcap) {
                char *nt = realloc(tmp, m + 1);
                if (!nt) {
                    rc = ss_fail(SS_ENOMEM, "%s: out of memory at line %ld", path, lineno);
                    break;
                }
                tmp = nt;
                tcap = m + 1;
            }
            memcpy(tmp, s, m);
            tmp[m] = 0;
            rc = gv_parse_line(tmp, path, (int)lineno, &arr[count]);
        } else if (m >= GV_PROMPT_MAX) {
            rc = ss_fail(SS_EFORMAT, "%s:%ld: prompt longer than %d characters", path, lineno, GV_PROMPT_MAX - 1);
        } else {
            memset(&arr[count], 0, sizeof arr[count]);
            memcpy(arr[count].prompt, s, m);
        }
        if (!rc) count++;
    }
    free(tmp);
    if (!rc && count == 0) rc = ss_fail(SS_EFORMAT, "%s: no %s", path, format == GV_FORMAT_JSONL ? "records" : "prompts");
    if (rc) {
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return SS_OK;
}

int gv_load_prompts(const char *path, int format, gv_meta **out, int *n, int *has_meta) {
    *out = NULL;
    *n = 0;
    char *buf;
    size_t len;
    int rc = ss_read_file(path, (size_t)1 << 40, "a prompt file", &buf, &len);
    if (rc < 0) return rc;
    rc = gv_parse_prompts(buf, len, path, format, out, n, has_meta);
    free(buf);
    return rc;
}

int gv_load_jsonl(const char *path, gv_meta **out, int *n) { return gv_load_prompts(path, GV_FORMAT_JSONL, out, n, NULL); }

/* ---- serialization ------------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t cap, len;
} sbuf;

static void put(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (b->len + 1 < b->cap) b->buf[b->len] = *s;
        b->len++;
    }
}

static void put_str(sbuf *b, const char *s) {
    put(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        if (c == '"')
            put(b, "\\\"");
        else if (c == '\\')
            put(b, "\\\\");
        else if (c == '\n')
            put(b, "\\n");
        else if (c == '\t')
            put(b, "\\t");
        else if (c == '\r')
            put(b, "\\r");
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            put(b, tmp);
        } else {
            tmp[0] = (char)c;
            tmp[1] = 0;
            put(b, tmp);
        }
    }
    put(b, "\"");
}

static void put_int(sbuf *b, int v) {
    char tmp[16];
    snprintf(tmp, sizeof tmp, "%d", v);
    put(b, tmp);
}

static void put_clauses(sbuf *b, const gv_clause *c, int n, int with_extras) {
    put(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) put(b, ", ");
        put(b, "{\"class\": ");
        put_str(b, c[i].cls);
        put(b, ", \"count\": ");
        put_int(b, c[i].count);
        if (with_extras && c[i].color[0]) {
            put(b, ", \"color\": ");
            put_str(b, c[i].color);
        }
        if (with_extras && c[i].rel != GV_REL_NONE) {
            put(b, ", \"position\": [");
            put_str(b, gv_rel_name(c[i].rel));
            put(b, ", ");
            put_int(b, c[i].target);
            put(b, "]");
        }
        put(b, "}");
    }
    put(b, "]");
}

int gv_meta_to_json(const gv_meta *m, char *buf, size_t cap) {
    sbuf b = {buf, cap, 0};
    put(&b, "{\"tag\": ");
    put_str(&b, m->tag);
    put(&b, ", \"include\": ");
    put_clauses(&b, m->include, m->n_include, 1);
    if (m->n_exclude > 0) {
        put(&b, ", \"exclude\": ");
        put_clauses(&b, m->exclude, m->n_exclude, 0);
    }
    put(&b, ", \"prompt\": ");
    put_str(&b, m->prompt);
    put(&b, "}");
    if (b.len + 1 > cap || b.len > 0x7fffffff) {
        if (cap) buf[cap - 1] = 0;
        return ss_fail(SS_ENOMEM, "metadata JSON needs %zu bytes, buffer has %zu", b.len + 1, cap);
    }
    buf[b.len] = 0;
    return (int)b.len;
}

/* ---- scoring ------------------------------------------------------------------------------ */

static double sgn(double v) { return v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0; }

unsigned gv_relations(const gv_det *a, const gv_det *b, double margin) {
    double off[2] = {(a->x0 + a->x1) / 2 - (b->x0 + b->x1) / 2,
                     (a->y0 + a->y1) / 2 - (b->y0 + b->y1) / 2};
    double dim[2] = {fabs(a->x1 - a->x0) + fabs(b->x1 - b->x0),
                     fabs(a->y1 - a->y0) + fabs(b->y1 - b->y0)};
    double rev[2];
    for (int k = 0; k < 2; k++)
        rev[k] = fmax(fabs(off[k]) - margin * dim[k], 0.0) * sgn(off[k]);
    if (fabs(rev[0]) < 1e-3 && fabs(rev[1]) < 1e-3) return 0;
    double norm = hypot(off[0], off[1]);
    double dx = rev[0] / norm, dy = rev[1] / norm;
    unsigned r = 0;
    if (dx < -0.5) r |= 1u << GV_LEFT_OF;
    if (dx > 0.5) r |= 1u << GV_RIGHT_OF;
    if (dy < -0.5) r |= 1u << GV_ABOVE;
    if (dy > 0.5) r |= 1u << GV_BELOW;
    return r;
}

static void reason_add(char *reason, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reason_add(char *reason, size_t cap, const char *fmt, ...) {
    if (!reason || cap == 0) return;
    size_t len = strlen(reason);
    if (len && len + 2 < cap) {
        strcpy(reason + len, "; ");
        len += 2;
    }
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason + len, cap - len, fmt, ap);
    va_end(ap);
}

/* Indices of detections of class `cls`, most confident first (ties: input order). */
static int ranked(const gv_det *d, int n, const char *cls, int *idx) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!d[i].cls || strcmp(d[i].cls, cls)) continue;
        int j = k++;
        while (j > 0 && d[idx[j - 1]].score < d[i].score) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    return k;
}

static void rel_list(unsigned rels, char *buf, size_t cap) {
    buf[0] = 0;
    for (int r = 0; r < GV_NREL; r++) {
        if (!(rels & (1u << r))) continue;
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", len ? " and " : "", REL_NAMES[r]);
    }
    if (!buf[0]) snprintf(buf, cap, "no relation to");
}

int gv_score(const gv_meta *m, const gv_det *dets, int n_dets, char *reason, size_t reason_cap) {
    if (reason && reason_cap) reason[0] = 0;
    if (n_dets < 0 || (n_dets > 0 && !dets)) return ss_fail(SS_EARG, "gv_score: bad detections");
    int *idx = ss_malloc(sizeof(int) * (size_t)(n_dets + 1) * (GV_MAX_CLAUSES + 1));
    if (!idx) return SS_ENOMEM;
    int *group[GV_MAX_CLAUSES]; /* matched detections of each include clause, NULL if failed */
    int group_n[GV_MAX_CLAUSES];
    int correct = 1;
    for (int i = 0; i < m->n_include; i++) {
        const gv_clause *c = &m->include[i];
        int *r = idx + (size_t)i * (size_t)(n_dets + 1);
        int found = ranked(dets, n_dets, c->cls, r);
        int matched = 1;
        int k = found < c->count ? found : c->count; /* the `count` most confident */
        if (found < c->count) {
            matched = 0;
            reason_add(reason, reason_cap, "expected %s>=%d, found %d", c->cls, c->count, found);
        } else {
            if (c->color[0]) {
                int ok = 0;
                for (int j = 0; j < k; j++)
                    if (dets[r[j]].color && !strcmp(dets[r[j]].color, c->color)) ok++;
                if (ok < c->count) {
                    matched = 0;
                    reason_add(reason, reason_cap, "expected %s %s>=%d, found %d %s", c->color,
                               c->cls, c->count, ok, c->color);
                }
            }
            if (c->rel != GV_REL_NONE && matched) {
                if (c->target < 0 || c->target >= i || !group[c->target]) {
                    matched = 0;
                    reason_add(reason, reason_cap, "no target for %s to be %s", c->cls,
                               gv_rel_name(c->rel));
                } else {
                    for (int j = 0; j < k && matched; j++)
                        for (int t = 0; t < group_n[c->target]; t++) {
                            const gv_det *tg = &dets[group[c->target][t]];
                            unsigned rels = gv_relations(&dets[r[j]], tg, GV_POSITION_MARGIN);
                            if (!(rels & (1u << c->rel))) {
                                char rl[64];
                                rel_list(rels, rl, sizeof rl);
                                matched = 0;
                                reason_add(reason, reason_cap,
                                           "expected %s %s target, found %s target", c->cls,
                                           gv_rel_name(c->rel), rl);
                                break;
                            }
                        }
                }
            }
        }
        if (!matched) correct = 0;
        group[i] = matched ? r : NULL;
        group_n[i] = matched ? k : 0;
    }
    for (int i = 0; i < m->n_exclude; i++) {
        const gv_clause *c = &m->exclude[i];
        int found = 0;
        for (int j = 0; j < n_dets; j++)
            if (dets[j].cls && !strcmp(dets[j].cls, c->cls)) found++;
        if (found >= c->count) {
            correct = 0;
            reason_add(reason, reason_cap, "expected %s<%d, found %d", c->cls, c->count, found);
        }
    }
    free(idx);
    return correct;
}

/* ---- summary ------------------------------------------------------------------------------ */

int gv_summary_init(gv_summary *s, int n_prompts) {
    memset(s, 0, sizeof *s);
    if (n_prompts < 0) return ss_fail(SS_EARG, "gv_summary_init: negative prompt count");
    s->n_prompts = n_prompts;
    s->prompt_seen = ss_calloc((size_t)n_prompts + 1, 1);
    s->prompt_ok = ss_calloc((size_t)n_prompts + 1, 1);
    if (!s->prompt_seen || !s->prompt_ok) {
        gv_summary_free(s);
        return SS_ENOMEM;
    }
    return SS_OK;
}

void gv_summary_free(gv_summary *s) {
    free(s->prompt_seen);
    free(s->prompt_ok);
    s->prompt_seen = s->prompt_ok = NULL;
}

int gv_summary_add(gv_summary *s, int prompt_index, const char *tag, int correct) {
    if (prompt_index < 0 || prompt_index >= s->n_prompts)
        return ss_fail(SS_EARG, "prompt index %d out of range (0..%d)", prompt_index,
                       s->n_prompts - 1);
    int t = 0;
    while (t < s->n_tags && strcmp(s->tag[t], tag))
        t++;
    if (t == s->n_tags) {
        if (t == (int)(sizeof s->tag / sizeof s->tag[0]))
            return ss_fail(SS_EARG, "too many distinct tags (at most %d)", t);
        snprintf(s->tag[t], sizeof s->tag[t], "%s", tag);
        s->n_tags++;
    }
    s->tag_total[t]++;
    s->images++;
    s->prompt_seen[prompt_index] = 1;
    if (correct) {
        s->tag_correct[t]++;
        s->images_correct++;
        s->prompt_ok[prompt_index] = 1;
    }
    return SS_OK;
}

double gv_summary_tag_accuracy(const gv_summary *s, int t) {
    return s->tag_total[t] ? (double)s->tag_correct[t] / (double)s->tag_total[t] : 0.0;
}

double gv_summary_overall(const gv_summary *s) {
    if (s->n_tags == 0) return 0.0;
    double sum = 0;
    for (int t = 0; t < s->n_tags; t++)
        sum += gv_summary_tag_accuracy(s, t);
    return sum / s->n_tags;
}

int gv_summary_prompts_scored(const gv_summary *s) {
    int n = 0;
    for (int i = 0; i < s->n_prompts; i++)
        n += s->prompt_seen[i];
    return n;
}

int gv_summary_prompts_correct(const gv_summary *s) {
    int n = 0;
    for (int i = 0; i < s->n_prompts; i++)
        n += s->prompt_ok[i];
    return n;
}

void gv_summary_print(const gv_summary *s, FILE *f) {
    int ps = gv_summary_prompts_scored(s), pc = gv_summary_prompts_correct(s);
    fprintf(f, "Summary\n=======\n");
    fprintf(f, "Total images: %ld\n", s->images);
    fprintf(f, "Total prompts: %d\n", ps);
    fprintf(f, "%% correct images: %.2f%%\n",
            s->images ? 100.0 * (double)s->images_correct / (double)s->images : 0.0);
    fprintf(f, "%% correct prompts: %.2f%%\n\n", ps ? 100.0 * pc / ps : 0.0);
    fprintf(f, "Task breakdown\n==============\n");
    for (int t = 0; t < s->n_tags; t++)
        fprintf(f, "%-16s = %6.2f%% (%ld / %ld)\n", s->tag[t],
                100.0 * gv_summary_tag_accuracy(s, t), s->tag_correct[t], s->tag_total[t]);
    fprintf(f, "\nOverall score (avg. over tasks): %.5f\n", gv_summary_overall(s));
}
