#include "sink/record.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "sink/spiral.h"

static const char *TYPE_KEY[SINK_NTYPES] = {"top1_is_word", "top1_is_eos", "top1_is_pad",
                                            "top1_is_comma", "top1_is_bos", "top1_is_other"};

/* JSON has no NaN or infinity: those become null. */
static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* ---- from a sink record ---- */

/* The type of key j of a record: its site's key span, the text span's token from kt->text. */
static ss_tok key_type(const sink_key_types *kt, const sink_record *r, int j) {
    const ss_site *site = ss_site_find(kt->sites, kt->n_sites, r->site);
    if (!site) return SS_TOK_TEXT;
    for (int i = 0; i < site->n_kspan; i++) {
        const ss_span *sp = &site->kspan[i];
        if (j < sp->start || j >= sp->start + sp->len) continue;
        if (sp->type == SS_TOK_IMAGE) return SS_TOK_IMAGE;
        return j - sp->start < kt->S ? (ss_tok)kt->text[j - sp->start] : SS_TOK_TEXT;
    }
    return SS_TOK_TEXT;
}

static int site_field(const sink_record *r) { return ss_site_code_kind(r->site) == SS_SITE_JOINT ? -1 : r->site; }

int sink_probe_entry_from_record(sink_probe_entry *e, const sink_record *r, int b, int full, const sink_key_types *kt) {
    memset(e, 0, sizeof *e);
    e->block = r->block;
    e->site = site_field(r);
    e->step = r->step;
    e->has_t_frac = !full || r->tfrac >= 0;
    e->t_frac = r->tfrac;
    e->batch = full ? b : -1;
    e->max_mass = r->max_mass[b];
    e->entropy = r->entropy[b];
    e->top5 = r->top5[b];
    e->idx0 = r->idx0_frac[b];
    e->text = r->text_frac[b];
    if (kt) {
        int kind[SS_TOK_N] = {0};
        for (int h = 0; h < r->H; h++) kind[key_type(kt, r, r->top_idx[((size_t)b * r->H + h) * r->topk])]++;
        e->n_types = kt->all_types ? 6 : 3;
        e->type[0] = (double)kind[SS_TOK_WORD] / r->H;
        e->type[1] = (double)kind[SS_TOK_EOS] / r->H;
        e->type[2] = (double)kind[SS_TOK_PAD] / r->H;
        e->type[3] = (double)kind[SS_TOK_COMMA] / r->H;
        e->type[4] = (double)kind[SS_TOK_BOS] / r->H;
        e->type[5] = (double)(kind[SS_TOK_OTHER] + kind[SS_TOK_TEXT]) / r->H;
    }
    e->act_max = r->act_max[b];
    e->act_p95 = r->act_p95[b];
    e->n_top1 = r->H;
    if (!(e->top1 = malloc(sizeof(int) * (size_t)(r->H ? r->H : 1)))) return ss_fail(SS_ENOMEM, "out of memory");
    for (int h = 0; h < r->H; h++) e->top1[h] = r->top_idx[((size_t)b * r->H + h) * r->topk];
    e->tok_image = e->tok_text = -1;
    if (!full) return 0;
    snprintf(e->queries, sizeof e->queries, "%s", sink_tokens_name(r->queries));
    e->tok_image = r->n_img;
    e->tok_text = r->T - r->n_img;
    if (r->act_text_max) {
        e->has_act_text = 1;
        e->act_text_max = r->act_text_max[b];
        e->act_text_p95 = r->act_text_p95[b];
    }
    e->n_heads = r->H;
    e->topk = r->topk;
    const size_t nk = (size_t)r->H * r->topk + 1;
    e->top_keys = malloc(sizeof(int) * nk);
    e->top_mass = malloc(sizeof(double) * nk);
    e->head_entropy = malloc(sizeof(double) * (size_t)(r->H + 1));
    e->head_top5 = malloc(sizeof(double) * (size_t)(r->H + 1));
    if (!e->top_keys || !e->top_mass || !e->head_entropy || !e->head_top5) return ss_fail(SS_ENOMEM, "out of memory");
    for (int h = 0; h < r->H; h++) {
        const size_t bh = (size_t)b * r->H + h;
        for (int t = 0; t < r->topk; t++) {
            e->top_keys[(size_t)h * r->topk + t] = r->top_idx[bh * r->topk + t];
            e->top_mass[(size_t)h * r->topk + t] = r->top_mass[bh * r->topk + t];
        }
        e->head_entropy[h] = r->head_entropy[bh];
        e->head_top5[h] = r->head_top5[bh];
    }
    if (r->spiral && !(e->spiral = spiral_rec_to_json(r->spiral, b))) return ss_fail(SS_ENOMEM, "out of memory");
    return 0;
}

int sink_verif_entry_from_record(sink_verif_entry *e, const sink_record *r, int b, int full) {
    memset(e, 0, sizeof *e);
    e->block = r->block;
    e->site = site_field(r);
    e->step = r->step;
    e->has_t_frac = !full || r->tfrac >= 0;
    e->t_frac = r->tfrac;
    e->batch = full ? b : -1;
    e->n_heads = r->H;
    e->key_off = malloc(sizeof(int) * (size_t)(r->H + 1));
    e->keys = malloc(sizeof(int) * ((size_t)r->H * r->k + 1));
    if (!e->key_off || !e->keys) return ss_fail(SS_ENOMEM, "out of memory");
    double before = 0, after = 0;
    for (int h = 0; h < r->H; h++) {
        const size_t bh = (size_t)b * r->H + h;
        before += r->before[bh] / r->H;
        after += r->after[bh] / r->H;
        e->key_off[h] = h * r->k;
        for (int t = 0; t < r->k; t++) e->keys[h * r->k + t] = r->sel[bh * r->k + t];
    }
    e->key_off[r->H] = r->H * r->k;
    e->mass_before = before;
    e->mass_after = after;
    if (full) {
        e->has_reduction = 1;
        e->reduction = after > 0 ? before / after : NAN; /* a complete removal: null */
        e->has_margin = r->min_margin >= 0;
        e->margin = r->min_margin;
    }
    return 0;
}

void sink_probe_entry_free(sink_probe_entry *e) {
    free(e->top1);
    free(e->top_keys);
    free(e->top_mass);
    free(e->head_entropy);
    free(e->head_top5);
    json_decref(e->spiral);
    memset(e, 0, sizeof *e);
}

void sink_verif_entry_free(sink_verif_entry *e) {
    free(e->key_off);
    free(e->keys);
    memset(e, 0, sizeof *e);
}

/* ---- writing ---- */

static void put_head(json_t *o, int block, int site, int step, int has_t, double t) {
    json_object_set_new(o, "block", json_integer(block));
    if (site >= 0) {
        char nm[40];
        json_object_set_new(o, "site", json_string(ss_site_code_name(site, nm, sizeof nm)));
    }
    json_object_set_new(o, "step", json_integer(step));
    if (has_t) json_object_set_new(o, "t_frac", jnum(t));
}

static json_t *iarr(const int *x, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(x[i]));
    return a;
}

static json_t *darr(const double *x, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, jnum(x[i]));
    return a;
}

void *sink_probe_entry_write_json(const sink_probe_entry *e) {
    json_t *o = json_object();
    if (!o) return NULL;
    put_head(o, e->block, e->site, e->step, e->has_t_frac, e->t_frac);
    json_object_set_new(o, "max_mass", jnum(e->max_mass));
    json_object_set_new(o, "entropy", jnum(e->entropy));
    json_object_set_new(o, "top5", jnum(e->top5));
    json_object_set_new(o, "top1_is_index0", jnum(e->idx0));
    json_object_set_new(o, "top1_is_text", jnum(e->text));
    for (int i = 0; i < e->n_types; i++) json_object_set_new(o, TYPE_KEY[i], jnum(e->type[i]));
    json_object_set_new(o, "act_max", jnum(e->act_max));
    json_object_set_new(o, "act_p95", jnum(e->act_p95));
    json_object_set_new(o, "top1_keys", iarr(e->top1, e->n_top1));
    if (e->batch >= 0) json_object_set_new(o, "batch", json_integer(e->batch));
    if (e->queries[0]) json_object_set_new(o, "queries", json_string(e->queries));
    if (e->tok_image >= 0)
        json_object_set_new(o, "tokens", json_pack("{s:i, s:i}", "image", e->tok_image, "text", e->tok_text));
    if (e->has_act_text) {
        json_object_set_new(o, "act_text_max", jnum(e->act_text_max));
        json_object_set_new(o, "act_text_p95", jnum(e->act_text_p95));
    }
    if (e->n_heads > 0) {
        json_t *heads = json_array();
        for (int h = 0; h < e->n_heads; h++) {
            json_t *x = json_object();
            json_object_set_new(x, "head", json_integer(h));
            json_object_set_new(x, "top_keys", iarr(e->top_keys + (size_t)h * e->topk, e->topk));
            json_object_set_new(x, "top_mass", darr(e->top_mass + (size_t)h * e->topk, e->topk));
            json_object_set_new(x, "entropy", jnum(e->head_entropy[h]));
            json_object_set_new(x, "top5_concentration", jnum(e->head_top5[h]));
            json_array_append_new(heads, x);
        }
        json_object_set_new(o, "heads", heads);
    }
    if (e->spiral) json_object_set(o, "spiral", e->spiral);
    return o;
}

void *sink_verif_entry_write_json(const sink_verif_entry *e) {
    json_t *o = json_object();
    if (!o) return NULL;
    put_head(o, e->block, e->site, e->step, e->has_t_frac, e->t_frac);
    json_object_set_new(o, "mass_before", jnum(e->mass_before));
    json_object_set_new(o, "mass_after", jnum(e->mass_after));
    json_t *keys = json_array();
    for (int h = 0; h < e->n_heads; h++)
        json_array_append_new(keys, iarr(e->keys + e->key_off[h], e->key_off[h + 1] - e->key_off[h]));
    json_object_set_new(o, "keys", keys);
    if (e->batch >= 0) json_object_set_new(o, "batch", json_integer(e->batch));
    if (e->has_reduction) json_object_set_new(o, "reduction", jnum(e->reduction));
    if (e->has_margin) json_object_set_new(o, "min_topk_margin", jnum(e->margin));
    return o;
}

/* One record's entry for batch element b: a probe entry, or (verif) a verification entry. */
static json_t *entry_json(const sink_record *r, int b, int full, const sink_key_types *kt, int verif) {
    json_t *o = NULL;
    if (verif) {
        sink_verif_entry e;
        if (sink_verif_entry_from_record(&e, r, b, full) >= 0) o = sink_verif_entry_write_json(&e);
        sink_verif_entry_free(&e);
    } else {
        sink_probe_entry e;
        if (sink_probe_entry_from_record(&e, r, b, full, kt) >= 0) o = sink_probe_entry_write_json(&e);
        sink_probe_entry_free(&e);
    }
    return o;
}

/* The entries of every probed (or, verif, intervened) record, each batch element (full) or the last. */
static void *write_entries(const sink_ctx *s, int full, const sink_key_types *kt, int verif) {
    json_t *arr = json_array();
    for (int i = 0; i < sink_ctx_record_count(s) && arr; i++) {
        const sink_record *r = sink_ctx_record(s, i);
        if (!(verif ? r->intervened : r->probed)) continue;
        for (int b = full ? 0 : r->B - 1; b < r->B; b++) {
            json_t *o = entry_json(r, b, full, kt, verif);
            if (!o || json_array_append_new(arr, o)) {
                json_decref(arr);
                arr = NULL;
                ss_fail(SS_ENOMEM, "out of memory");
                break;
            }
        }
    }
    return arr;
}

void *sink_record_write_probe_json(const sink_ctx *s, int full, const sink_key_types *kt) {
    return write_entries(s, full, kt, 0);
}

void *sink_record_write_verif_json(const sink_ctx *s, int full) { return write_entries(s, full, NULL, 1); }

/* ---- reading ---- */

typedef struct {
    const char *file;
    long line;
    const char *what; /* "probe entry" / "verification entry" */
} where;

static int bad(const where *w, const char *fmt, const char *key) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, key);
    if (w->line > 0) return ss_fail(SS_EFORMAT, "%s:%ld: %s: %s", w->file, w->line, w->what, msg);
    return ss_fail(SS_EFORMAT, "%s: %s: %s", w->file, w->what, msg);
}

static int rd_int(const where *w, json_t *o, const char *key, int *out, int optional) {
    json_t *v = json_object_get(o, key);
    if (!v && optional) return 0;
    if (!json_is_integer(v)) return bad(w, v ? "'%s' is not an integer" : "'%s' is missing", key);
    if (json_integer_value(v) < -0x7fffffffLL || json_integer_value(v) > 0x7fffffffLL) return bad(w, "'%s' is out of range", key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* A number or null (NaN); absent: NaN, *present = 0. */
static int rd_num(const where *w, json_t *o, const char *key, double *out, int *present) {
    json_t *v = json_object_get(o, key);
    *out = NAN;
    if (present) *present = v != NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return bad(w, "'%s' is neither a number nor null", key);
    *out = json_number_value(v);
    return 0;
}

/* A list of non-negative integers appended to *buf (grown); n: how many. */
static int rd_keys(const where *w, json_t *a, const char *key, int **buf, int *n, int *cap) {
    if (!json_is_array(a)) return bad(w, "'%s' is not a list", key);
    size_t i;
    json_t *k;
    json_array_foreach(a, i, k) {
        if (!json_is_integer(k) || json_integer_value(k) < 0 || json_integer_value(k) > 0x7fffffff)
            return bad(w, "'%s' holds something other than a key index (a non-negative integer)", key);
        if (*n == *cap) {
            int c = *cap ? 2 * *cap : 16, *q = realloc(*buf, sizeof(int) * (size_t)c);
            if (!q) return ss_fail(SS_ENOMEM, "out of memory");
            *buf = q;
            *cap = c;
        }
        (*buf)[(*n)++] = (int)json_integer_value(k);
    }
    return 0;
}

static int rd_head(const where *w, json_t *o, int *block, int *site, int *step, int *has_t, double *t, int *batch) {
    if (!json_is_object(o)) return bad(w, "%s", "not an object");
    int rc;
    if ((rc = rd_int(w, o, "block", block, 0)) < 0 || (rc = rd_int(w, o, "step", step, 0)) < 0) return rc;
    *site = -1;
    json_t *s = json_object_get(o, "site");
    if (s) {
        if (!json_is_string(s) || (*site = ss_site_code_parse(json_string_value(s))) < 0) {
            ss_err_clear();
            return bad(w, "'%s' is not a site name (such as attn2.0)", "site");
        }
    }
    if ((rc = rd_num(w, o, "t_frac", t, has_t)) < 0) return rc;
    *batch = -1;
    if ((rc = rd_int(w, o, "batch", batch, 1)) < 0) return rc;
    if (json_object_get(o, "batch") && *batch < 0) return bad(w, "'%s' is negative", "batch");
    return 0;
}

int sink_probe_entry_read_json(sink_probe_entry *e, const void *json, const char *file, long line) {
    json_t *o = (json_t *)json;
    const where w = {file, line, "probe entry"};
    memset(e, 0, sizeof *e);
    e->tok_image = e->tok_text = -1;
    int rc, cap = 0, present;
    if ((rc = rd_head(&w, o, &e->block, &e->site, &e->step, &e->has_t_frac, &e->t_frac, &e->batch)) < 0) goto fail;
    if ((rc = rd_num(&w, o, "max_mass", &e->max_mass, NULL)) < 0 || (rc = rd_num(&w, o, "entropy", &e->entropy, NULL)) < 0 ||
        (rc = rd_num(&w, o, "top5", &e->top5, NULL)) < 0 || (rc = rd_num(&w, o, "top1_is_index0", &e->idx0, NULL)) < 0 ||
        (rc = rd_num(&w, o, "top1_is_text", &e->text, NULL)) < 0 || (rc = rd_num(&w, o, "act_max", &e->act_max, NULL)) < 0 ||
        (rc = rd_num(&w, o, "act_p95", &e->act_p95, NULL)) < 0)
        goto fail;
    for (int i = 0; i < SINK_NTYPES; i++) {
        if ((rc = rd_num(&w, o, TYPE_KEY[i], &e->type[i], &present)) < 0) goto fail;
        if (present) e->n_types = i < 3 ? 3 : 6;
    }
    json_t *k = json_object_get(o, "top1_keys");
    if (k && (rc = rd_keys(&w, k, "top1_keys", &e->top1, &e->n_top1, &cap)) < 0) goto fail;
    json_t *q = json_object_get(o, "queries");
    if (q) {
        if (!json_is_string(q) || json_string_length(q) >= sizeof e->queries) {
            rc = bad(&w, "'%s' is not image, text or all", "queries");
            goto fail;
        }
        snprintf(e->queries, sizeof e->queries, "%s", json_string_value(q));
    }
    json_t *tk = json_object_get(o, "tokens");
    if (tk) {
        const where wt = {file, line, "probe entry 'tokens'"};
        if ((rc = rd_int(&wt, tk, "image", &e->tok_image, 0)) < 0 || (rc = rd_int(&wt, tk, "text", &e->tok_text, 0)) < 0)
            goto fail;
        if (e->tok_image < 0 || e->tok_text < 0) {
            rc = bad(&wt, "%s", "a negative count");
            goto fail;
        }
    }
    int p2;
    if ((rc = rd_num(&w, o, "act_text_max", &e->act_text_max, &present)) < 0 ||
        (rc = rd_num(&w, o, "act_text_p95", &e->act_text_p95, &p2)) < 0)
        goto fail;
    e->has_act_text = present || p2;
    json_t *heads = json_object_get(o, "heads");
    if (heads) {
        const size_t nh = json_array_size(heads);
        if (!json_is_array(heads) || nh == 0 || nh > 4096) {
            rc = bad(&w, "'%s' is not a list of 1 to 4096 heads", "heads");
            goto fail;
        }
        e->n_heads = (int)nh;
        e->topk = (int)json_array_size(json_object_get(json_array_get(heads, 0), "top_keys"));
        const size_t nk = nh * (size_t)e->topk + 1;
        e->top_keys = malloc(sizeof(int) * nk);
        e->top_mass = malloc(sizeof(double) * nk);
        e->head_entropy = malloc(sizeof(double) * nh);
        e->head_top5 = malloc(sizeof(double) * nh);
        if (!e->top_keys || !e->top_mass || !e->head_entropy || !e->head_top5) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto fail;
        }
        for (size_t h = 0; h < nh; h++) {
            char what[64];
            snprintf(what, sizeof what, "probe entry, head %zu", h);
            const where wh = {file, line, what};
            json_t *x = json_array_get(heads, h), *tk2 = json_object_get(x, "top_keys"), *tm = json_object_get(x, "top_mass");
            int hi = -1;
            if (!json_is_object(x)) {
                rc = bad(&wh, "%s", "not an object");
                goto fail;
            }
            if ((rc = rd_int(&wh, x, "head", &hi, 0)) < 0) goto fail;
            if (hi != (int)h || json_array_size(tk2) != (size_t)e->topk || json_array_size(tm) != (size_t)e->topk) {
                rc = bad(&wh, "%s", "not in head order, or top_keys / top_mass not of the first head's length");
                goto fail;
            }
            int n = 0, c = e->topk, *dst = e->top_keys + h * e->topk;
            if ((rc = rd_keys(&wh, tk2, "top_keys", &dst, &n, &c)) < 0) goto fail;
            for (int t = 0; t < e->topk; t++) {
                json_t *v = json_array_get(tm, (size_t)t);
                if (!json_is_number(v) && !json_is_null(v)) {
                    rc = bad(&wh, "'%s' holds something other than numbers", "top_mass");
                    goto fail;
                }
                e->top_mass[h * e->topk + t] = json_is_number(v) ? json_number_value(v) : NAN;
            }
            if ((rc = rd_num(&wh, x, "entropy", &e->head_entropy[h], NULL)) < 0 ||
                (rc = rd_num(&wh, x, "top5_concentration", &e->head_top5[h], NULL)) < 0)
                goto fail;
        }
    }
    json_t *sp = json_object_get(o, "spiral");
    if (sp) {
        if (!json_is_object(sp)) {
            rc = bad(&w, "'%s' is not an object", "spiral");
            goto fail;
        }
        e->spiral = json_incref(sp);
    }
    return 0;
fail:
    sink_probe_entry_free(e);
    return rc;
}

int sink_verif_entry_read_json(sink_verif_entry *e, const void *json, const char *file, long line) {
    json_t *o = (json_t *)json;
    const where w = {file, line, "verification entry"};
    memset(e, 0, sizeof *e);
    int rc, cap = 0, n = 0;
    if ((rc = rd_head(&w, o, &e->block, &e->site, &e->step, &e->has_t_frac, &e->t_frac, &e->batch)) < 0) goto fail;
    if ((rc = rd_num(&w, o, "mass_before", &e->mass_before, NULL)) < 0 ||
        (rc = rd_num(&w, o, "mass_after", &e->mass_after, NULL)) < 0)
        goto fail;
    json_t *keys = json_object_get(o, "keys");
    if (keys) {
        if (!json_is_array(keys)) {
            rc = bad(&w, "'%s' is not a list", "keys");
            goto fail;
        }
        const size_t nh = json_array_size(keys);
        if (!(e->key_off = malloc(sizeof(int) * (nh + 1)))) {
            rc = ss_fail(SS_ENOMEM, "out of memory");
            goto fail;
        }
        size_t h;
        json_t *hk;
        json_array_foreach(keys, h, hk) {
            e->key_off[h] = n;
            if (json_is_integer(hk)) { /* the old form: one key per head */
                json_t *one = json_pack("[O]", hk);
                rc = one ? rd_keys(&w, one, "keys", &e->keys, &n, &cap) : ss_fail(SS_ENOMEM, "out of memory");
                json_decref(one);
            } else {
                rc = rd_keys(&w, hk, "keys", &e->keys, &n, &cap);
            }
            if (rc < 0) goto fail;
        }
        e->key_off[nh] = n;
        e->n_heads = (int)nh;
    }
    if ((rc = rd_num(&w, o, "reduction", &e->reduction, &e->has_reduction)) < 0 ||
        (rc = rd_num(&w, o, "min_topk_margin", &e->margin, &e->has_margin)) < 0)
        goto fail;
    return 0;
fail:
    sink_verif_entry_free(e);
    return rc;
}
