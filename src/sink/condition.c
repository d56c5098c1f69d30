#include "sink/condition.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "eval/geneval.h"

static const char *const TOKENS[] = {"all", "text", "image"};
static const char *const SELECTS[] = {"topk", "fixed", "random"};
static const char *const VALUES[] = {"zero", "mean", "lerp"};

const char *sink_tokens_name(sink_tokens t) { return TOKENS[t]; }

static int enum_field(json_t *v, const char *where, const char *key, const char *const *names, int n, int *out) {
    if (!json_is_string(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a string", where, key);
    for (int i = 0; i < n; i++)
        if (!strcmp(json_string_value(v), names[i])) {
            *out = i;
            return 0;
        }
    char opts[128] = "";
    for (int i = 0; i < n; i++) snprintf(opts + strlen(opts), sizeof opts - strlen(opts), "%s%s", i ? ", " : "", names[i]);
    char shown[80];
    return ss_fail(SS_EFORMAT, "%s: field '%s' is \"%s\"; expected one of: %s", where, key,
                   ss_printable(json_string_value(v), shown, sizeof shown), opts);
}

static int num_field(json_t *v, const char *where, const char *key, double lo, double hi, double *out) {
    if (!json_is_number(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a number", where, key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return ss_fail(SS_EFORMAT, "%s: field '%s' = %g is outside [%g, %g]", where, key, x, lo, hi);
    *out = x;
    return 0;
}

static int int_list(json_t *v, const char *where, const char *key, int maxn, int hi, int *dst, int *n) {
    if (!json_is_array(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a list of integers", where, key);
    if ((int)json_array_size(v) > maxn)
        return ss_fail(SS_EFORMAT, "%s: field '%s' has %zu entries, at most %d allowed", where, key, json_array_size(v), maxn);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > hi)
            return ss_fail(SS_EFORMAT, "%s: field '%s'[%zu] must be an integer in [0, %d]", where, key, i, hi);
        for (size_t j = 0; j < i; j++)
            if (dst[j] == (int)json_integer_value(e))
                return ss_fail(SS_EFORMAT, "%s: field '%s' lists %d twice", where, key, dst[j]);
        dst[i] = (int)json_integer_value(e);
    }
    *n = (int)json_array_size(v);
    return 0;
}

/* [r, c]: two integers, negative ones counting from the end of the grid */
static int pe_coord(json_t *v, const char *where, const char *key, size_t i, int has_i, int out[2]) {
    char at[32] = "";
    if (has_i) snprintf(at, sizeof at, "[%zu]", i);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(json_array_get(v, 0)) ||
        !json_is_integer(json_array_get(v, 1)))
        return ss_fail(SS_EFORMAT, "%s: field '%s'%s must be a grid position [row, col] of two integers (negative: from the end)",
                       where, key, at);
    for (int k = 0; k < 2; k++) {
        const json_int_t x = json_integer_value(json_array_get(v, k));
        if (x < -65536 || x > 65535)
            return ss_fail(SS_EFORMAT, "%s: field '%s'%s %s = %lld is outside [-65536, 65535]", where, key, at,
                           k ? "col" : "row", (long long)x);
        out[k] = (int)x;
    }
    return 0;
}

/* a pattern name or a list of [r, c] */
static int pe_set_field(json_t *v, const char *where, const char *key, sink_pe_set *set) {
    memset(set, 0, sizeof *set);
    if (json_is_string(v)) {
        static const char *const P[] = {"corners", "smiley"};
        int e, rc;
        if ((rc = enum_field(v, where, key, P, 2, &e))) return rc;
        set->pattern = e ? PE_SMILEY : PE_CORNERS;
        return 0;
    }
    if (!json_is_array(v))
        return ss_fail(SS_EFORMAT, "%s: field '%s' must be a pattern name (\"smiley\", \"corners\") or a list of [row, col]",
                       where, key);
    if (json_array_size(v) > COND_MAX_PE)
        return ss_fail(SS_EFORMAT, "%s: field '%s' has %zu positions, at most %d allowed", where, key, json_array_size(v),
                       COND_MAX_PE);
    size_t i;
    json_t *el;
    json_array_foreach(v, i, el) {
        int rc = pe_coord(el, where, key, i, 1, set->rc[i]);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++)
            if (set->rc[j][0] == set->rc[i][0] && set->rc[j][1] == set->rc[i][1])
                return ss_fail(SS_EFORMAT, "%s: field '%s' lists [%d, %d] twice", where, key, set->rc[i][0], set->rc[i][1]);
    }
    set->n = (int)json_array_size(v);
    return 0;
}

/* pad_prompt: N (an integer) or "N" / "N:STRING" (promptx_pad_parse) */
static int pad_field(json_t *v, const char *where, sink_condition *c) {
    char at[700];
    snprintf(at, sizeof at, "%s: field 'pad_prompt'", where);
    c->have_pad = 1;
    c->pad_spec[0] = 0;
    if (json_is_integer(v)) {
        const json_int_t n = json_integer_value(v);
        if (n < 0 || n > PROMPTX_MAX_REPEAT)
            return ss_fail(SS_EFORMAT, "%s = %lld is outside [0, %d]", at, (long long)n, PROMPTX_MAX_REPEAT);
        c->pad = promptx_pad_default();
        c->pad.repeat = (int)n;
        return 0;
    }
    if (!json_is_string(v))
        return ss_fail(SS_EFORMAT, "%s must be a count N (an integer: N commas) or a string \"N\" or \"N:STRING\"", at);
    const char *s = json_string_value(v);
    char shown[80];
    if (strlen(s) >= sizeof c->pad_spec)
        return ss_fail(SS_EFORMAT, "%s = \"%s\": expected N or N:STRING, at most %zu bytes", at, ss_printable(s, shown, sizeof shown),
                       sizeof c->pad_spec - 1);
    const int rc = promptx_pad_parse(&c->pad, s, at);
    if (rc < 0) return rc;
    snprintf(c->pad_spec, sizeof c->pad_spec, "%s", s);
    return 0;
}

int sink_condition_pad_active(const sink_condition *c) { return c->have_pad && c->pad.repeat > 0; }

int sink_condition_from_json(sink_condition *c, const void *vobj, const char *where) {
    json_t *obj = (json_t *)vobj;
    memset(c, 0, sizeof *c);
    c->select = SEL_TOPK;
    c->k = 1;
    c->keys = TOK_ALL;
    c->queries = TOK_IMAGE;
    c->eta = 0.0f;
    c->value = VAL_ZERO;
    c->alpha = 0.5f;
    c->step_hi = 1.0;
    if (!json_is_object(obj)) return ss_fail(SS_EFORMAT, "%s: a condition must be a JSON object", where);
    int have_single = 0, n_single = 0, single[COND_MAX_LAYERS];
    int have_copy_to = 0, have_copy_from = 0;
    int have_layers = 0, have_sites = 0, n_sites = 0, sites[COND_MAX_LAYERS], have_k = 0, have_value = 0, have_alpha = 0, have_eta = 0, have_indices = 0, rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int e = 0;
        double x = 0;
        if (!strcmp(key, "name")) {
            if (!json_is_string(v)) return ss_fail(SS_EFORMAT, "%s: field 'name' must be a string", where);
            if (strlen(json_string_value(v)) >= sizeof c->name)
                return ss_fail(SS_EFORMAT, "%s: field 'name' is longer than %zu characters", where, sizeof c->name - 1);
            for (const char *q = json_string_value(v); *q; q++) /* names go into one-line messages and paths */
                if ((unsigned char)*q < 0x20 || *q == 0x7f)
                    return ss_fail(SS_EFORMAT, "%s: field 'name' contains a control character (0x%02x)", where, (unsigned char)*q);
            snprintf(c->name, sizeof c->name, "%s", json_string_value(v));
        } else if (!strcmp(key, "layers")) {
            if ((rc = int_list(v, where, key, COND_MAX_LAYERS, COND_MAX_LAYERS - 1, c->layers, &c->n_layers))) return rc;
            have_layers = 1;
        } else if (!strcmp(key, "single_layers")) { /* FLUX: single-stream block indices, as sites single.j */
            if ((rc = int_list(v, where, key, COND_MAX_LAYERS, SS_SITE_MAX_BLOCKS - 1, single, &n_single))) return rc;
            have_single = 1;
        } else if (!strcmp(key, "sites")) {
            if (!json_is_array(v) || json_array_size(v) > COND_MAX_LAYERS)
                return ss_fail(SS_EFORMAT, "%s: field 'sites' must be a list of at most %d site names (\"joint.3\", \"attn2.0\")",
                               where, COND_MAX_LAYERS);
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *e1 = json_array_get(v, i);
                char shown[80];
                const int code = json_is_string(e1) ? ss_site_code_parse(json_string_value(e1)) : -1;
                if (code < 0)
                    return ss_fail(SS_EFORMAT,
                                   "%s: field 'sites' entry %zu%s%s%s is not a site name: KIND.BLOCK with KIND one of joint, "
                                   "attn2, double, single, self, cross and BLOCK in 0..%d", where, i,
                                   json_is_string(e1) ? " ('" : "", json_is_string(e1) ? ss_printable(json_string_value(e1), shown, sizeof shown) : "",
                                   json_is_string(e1) ? "')" : "", SS_SITE_MAX_BLOCKS - 1);
                for (int j = 0; j < n_sites; j++)
                    if (sites[j] == code)
                        return ss_fail(SS_EFORMAT, "%s: field 'sites' lists %s twice", where, json_string_value(e1));
                sites[n_sites++] = code;
            }
            have_sites = 1;
        } else if (!strcmp(key, "attn")) { /* PixArt: which attention of the blocks in 'layers' */
            static const char *const A[] = {"self", "cross"};
            if ((rc = enum_field(v, where, key, A, 2, &c->attn))) return rc;
            c->have_attn = 1;
        } else if (!strcmp(key, "select")) {
            if ((rc = enum_field(v, where, key, SELECTS, 3, &e))) return rc;
            c->select = (sink_select)e;
        } else if (!strcmp(key, "k")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > COND_MAX_K)
                return ss_fail(SS_EFORMAT, "%s: field 'k' must be an integer in [1, %d]", where, COND_MAX_K);
            c->k = (int)json_integer_value(v);
            have_k = 1;
        } else if (!strcmp(key, "rank_by")) {
            static const char *const R[] = {"head", "union"};
            if ((rc = enum_field(v, where, key, R, 2, &c->rank_union))) return rc;
        } else if (!strcmp(key, "indices")) {
            if ((rc = int_list(v, where, key, COND_MAX_K, 1 << 30, c->indices, &c->n_indices))) return rc;
            have_indices = 1;
        } else if (!strcmp(key, "keys") || !strcmp(key, "queries")) {
            if ((rc = enum_field(v, where, key, TOKENS, 3, &e))) return rc;
            if (key[0] == 'k') c->keys = (sink_tokens)e;
            else c->queries = (sink_tokens)e;
        } else if (!strcmp(key, "path")) {
            static const char *const P[] = {"score", "value"};
            if ((rc = enum_field(v, where, key, P, 2, &c->value_path))) return rc;
        } else if (!strcmp(key, "eta")) {
            if ((rc = num_field(v, where, key, 0, 1, &x))) return rc;
            c->eta = (float)x;
            have_eta = 1;
        } else if (!strcmp(key, "value")) {
            if ((rc = enum_field(v, where, key, VALUES, 3, &e))) return rc;
            c->value = (sink_value)e;
            have_value = 1;
        } else if (!strcmp(key, "alpha")) {
            if ((rc = num_field(v, where, key, 0, 1, &x))) return rc;
            c->alpha = (float)x;
            have_alpha = 1;
        } else if (!strcmp(key, "steps")) {
            if (!json_is_array(v) || json_array_size(v) != 2)
                return ss_fail(SS_EFORMAT, "%s: field 'steps' must be a list [a, b] of normalized times in [0, 1]", where);
            if ((rc = num_field(json_array_get(v, 0), where, "steps[0]", 0, 1, &c->step_lo)) ||
                (rc = num_field(json_array_get(v, 1), where, "steps[1]", 0, 1, &c->step_hi)))
                return rc;
            if (c->step_lo > c->step_hi)
                return ss_fail(SS_EFORMAT, "%s: field 'steps' = [%g, %g] has a > b", where, c->step_lo, c->step_hi);
        } else if (!strcmp(key, "seed")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return ss_fail(SS_EFORMAT, "%s: field 'seed' must be a non-negative integer", where);
            c->seed = (uint64_t)json_integer_value(v);
        } else if (!strcmp(key, "pe_zero")) {
            if ((rc = pe_set_field(v, where, key, &c->pe_zero))) return rc;
            c->have_pe = c->have_pe_zero = 1;
        } else if (!strcmp(key, "pe_copy_to")) {
            if ((rc = pe_set_field(v, where, key, &c->pe_copy_to))) return rc;
            c->have_pe = 1;
            have_copy_to = 1;
        } else if (!strcmp(key, "pe_copy_from")) {
            if ((rc = pe_coord(v, where, key, 0, 0, c->pe_copy_from))) return rc;
            c->have_pe = 1;
            have_copy_from = 1;
        } else if (!strcmp(key, "pad_prompt")) {
            if ((rc = pad_field(v, where, c))) return rc;
        } else if (!strcmp(key, "min_topk_margin") || !strcmp(key, "description")) {
            /* informational (the fixtures record the ranking margin) */
        } else {
            char shown[80];
            return ss_fail(SS_EFORMAT, "%s: unknown field '%s'", where, ss_printable(key, shown, sizeof shown));
        }
    }
    if (!have_layers && !have_sites && !have_single && !c->have_pe && !c->have_pad)
        return ss_fail(SS_EFORMAT, "%s: missing field 'layers' (use [] for a no-op) or 'sites'", where);
    if (have_copy_to != have_copy_from)
        return ss_fail(SS_EFORMAT, "%s: field '%s' needs field '%s'", where, have_copy_to ? "pe_copy_to" : "pe_copy_from",
                       have_copy_to ? "pe_copy_from" : "pe_copy_to");
    c->have_pe_copy = have_copy_to;
    for (int i = 0; i < n_single; i++) { /* after 'layers', before 'sites' (counted with them) */
        char nm[48];
        const int code = ss_site_code(SS_SITE_SINGLE, single[i]);
        if (sink_condition_has_layer(c, code))
            return ss_fail(SS_EFORMAT, "%s: field 'single_layers' lists %d twice", where, single[i]);
        for (int j = 0; j < n_sites; j++)
            if (sites[j] == code)
                return ss_fail(SS_EFORMAT, "%s: field 'sites' names %s, which 'single_layers' names already", where,
                               ss_site_code_name(code, nm, sizeof nm));
        if (c->n_layers == COND_MAX_LAYERS)
            return ss_fail(SS_EFORMAT, "%s: fields 'layers', 'single_layers' and 'sites' name more than %d sites", where,
                           COND_MAX_LAYERS);
        c->layers[c->n_layers++] = code;
        c->n_from_sites++;
    }
    for (int i = 0; i < n_sites; i++) {
        char nm[48];
        if (sink_condition_has_layer(c, sites[i]))
            return ss_fail(SS_EFORMAT, "%s: field 'sites' names %s, which 'layers' names already", where,
                           ss_site_code_name(sites[i], nm, sizeof nm));
        if (c->n_layers == COND_MAX_LAYERS)
            return ss_fail(SS_EFORMAT, "%s: fields 'layers' and 'sites' name more than %d sites", where, COND_MAX_LAYERS);
        c->layers[c->n_layers++] = sites[i];
        c->n_from_sites++;
    }
    if (c->select == SEL_FIXED) {
        if (!have_indices || c->n_indices == 0)
            return ss_fail(SS_EFORMAT, "%s: select \"fixed\" needs a non-empty field 'indices'", where);
        if (have_k && c->k != c->n_indices)
            return ss_fail(SS_EFORMAT, "%s: field 'k' = %d does not match the %d 'indices'", where, c->k, c->n_indices);
        c->k = c->n_indices;
    } else if (have_indices) {
        return ss_fail(SS_EFORMAT, "%s: field 'indices' is only valid with select \"fixed\"", where);
    }
    if (c->value_path && have_eta) return ss_fail(SS_EFORMAT, "%s: field 'eta' is only valid with path \"score\"", where);
    if (!c->value_path && (have_value || have_alpha))
        return ss_fail(SS_EFORMAT, "%s: fields 'value'/'alpha' are only valid with path \"value\"", where);
    if (c->value_path && !have_value) return ss_fail(SS_EFORMAT, "%s: path \"value\" needs field 'value'", where);
    if (c->value_path && c->value == VAL_LERP && !have_alpha)
        return ss_fail(SS_EFORMAT, "%s: value \"lerp\" needs field 'alpha'", where);
    return 0;
}


/* A condition file's JSON: read whole, a leading UTF-8 byte-order mark skipped (jansson refuses
 * one), every line checked for well-formed UTF-8 and a stray U+FEFF first (so those errors name
 * the line), duplicate keys rejected. */
static int parse_json_text(const char *buf, size_t len, const char *path, json_t **out) {
    *out = NULL;
    const size_t bom = gv_bom_len(buf, len);
    long line = 0;
    for (size_t pos = bom; pos < len;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - buf) : len;
        int rc = gv_check_text_line(buf + pos, end - pos, path, ++line);
        if (rc) return rc;
        pos = end + 1;
    }
    json_error_t je;
    *out = json_loadb(buf + bom, len - bom, JSON_REJECT_DUPLICATES, &je);
    char shown[200];
    if (!*out)
        return ss_fail(SS_EFORMAT, "%s: not valid JSON (line %d, column %d: %s)", path, je.line, je.column,
                       ss_printable(je.text, shown, sizeof shown));
    return 0;
}

static int load_json_file(const char *path, json_t **out) {
    *out = NULL;
    char *buf;
    size_t len;
    int rc = ss_read_file(path, (size_t)1 << 30, "a condition file", &buf, &len);
    if (rc < 0) return rc;
    rc = parse_json_text(buf, len, path, out);
    free(buf);
    return rc;
}

int sink_condition_load(sink_condition *c, const char *path) {
    json_t *root;
    int lrc = load_json_file(path, &root);
    if (lrc < 0) return lrc;
    int rc = sink_condition_from_json(c, root, path);
    json_decref(root);
    return rc;
}

static int list_from_json(sink_condition **out, int *n, json_t *root, const char *path) {
    int rc = 0;
    if (json_is_object(root)) {
        *out = ss_malloc(sizeof **out);
        if (!*out) rc = SS_ENOMEM;
        else if ((rc = sink_condition_from_json(*out, root, path)) == 0) *n = 1;
    } else if (json_is_array(root)) {
        size_t m = json_array_size(root);
        if (m > COND_MAX_LIST) return ss_fail(SS_EFORMAT, "%s: %zu conditions, at most %d allowed", path, m, COND_MAX_LIST);
        *out = ss_calloc(m ? m : 1, sizeof **out);
        if (!*out) rc = SS_ENOMEM;
        for (size_t i = 0; rc == 0 && i < m; i++) {
            char where[600];
            snprintf(where, sizeof where, "%s: condition %zu", path, i);
            rc = sink_condition_from_json(&(*out)[i], json_array_get(root, i), where);
        }
        if (rc == 0) *n = (int)m;
    } else {
        rc = ss_fail(SS_EFORMAT, "%s: expected a condition object or a list of them", path);
    }
    return rc;
}

int sink_condition_list_parse(sink_condition **out, int *n, const char *buf, size_t len, const char *path) {
    *out = NULL;
    *n = 0;
    json_t *root;
    int rc = parse_json_text(buf, len, path, &root);
    if (rc < 0) return rc;
    if ((rc = list_from_json(out, n, root, path))) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    json_decref(root);
    return rc;
}

int sink_condition_json_load(const char *path, void **root) {
    json_t *j = NULL;
    const int rc = load_json_file(path, &j);
    *root = j;
    return rc;
}

int sink_condition_list_from_json(sink_condition **out, int *n, const void *root, const char *path) {
    *out = NULL;
    *n = 0;
    const int rc = list_from_json(out, n, (json_t *)root, path);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int sink_condition_list_load(sink_condition **out, int *n, const char *path) {
    *out = NULL;
    *n = 0;
    json_t *root;
    int rc = load_json_file(path, &root);
    if (rc < 0) return rc;
    if ((rc = list_from_json(out, n, root, path))) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    json_decref(root);
    return rc;
}

int sink_condition_check_model(const sink_condition *c, int num_layers, int n_img, int n_txt, const char *where) {
    const char *sep = where && *where ? ": " : "";
    if (!where) where = "";
    for (int j = 0; j < c->n_layers; j++) {
        char nm[48];
        if (ss_site_code_kind(c->layers[j]) != SS_SITE_JOINT)
            return ss_fail(SS_EARG, "%s%scondition '%s': field 'sites' names %s, but only joint blocks can be checked here", where,
                           sep, c->name, ss_site_code_name(c->layers[j], nm, sizeof nm));
        if (c->layers[j] < 0 || c->layers[j] >= num_layers)
            return ss_fail(SS_EARG, "%s%scondition '%s': field '%s' names block %d, but the model has %d blocks (0-%d)",
                           where, sep, c->name, j < c->n_layers - c->n_from_sites ? "layers" : "sites", c->layers[j], num_layers, num_layers - 1);
    }
    if (!c->n_layers) return 0; /* a no-op: nothing else matters */
    const int total = n_img + n_txt;
    const int cand = c->keys == TOK_TEXT ? n_txt : c->keys == TOK_IMAGE ? n_img : total;
    if (c->select != SEL_FIXED && c->k > cand)
        return ss_fail(SS_EARG, "%s%scondition '%s': field 'k' = %d, but the model has only %d candidate %s keys", where, sep,
                       c->name, c->k, cand, sink_tokens_name(c->keys));
    for (int j = 0; c->select == SEL_FIXED && j < c->n_indices; j++)
        if (c->indices[j] >= total)
            return ss_fail(SS_EARG, "%s%scondition '%s': field 'indices' names key %d, but there are %d keys", where, sep,
                           c->name, c->indices[j], total);
    /* Keys are distinct, so k >= total selects every key of every query row; with eta 0 on the
     * score path the rows keep no attention mass at all (0/0: the sample would be all NaN). */
    if (!c->value_path && c->eta == 0.0f && c->k >= total)
        return ss_fail(SS_EARG, "%s%scondition '%s': field '%s' removes every one of the model's %d keys (%d image + %d "
                       "text) with eta 0, leaving the attention rows no mass at all; keep at least one key or use eta > 0",
                       where, sep, c->name, c->select == SEL_FIXED ? "indices" : "k", total, n_img, n_txt);
    return 0;
}

int sink_condition_check_sites(const sink_condition *c, const ss_site *sites, int n_sites, const char *where) {
    const char *sep = where && *where ? ": " : "";
    if (!where) where = "";
    char nm[48], list[1024];
    int joint_only = 1, n_joint = 0, n_self = 0;
    for (int j = 0; j < c->n_layers; j++) joint_only &= ss_site_code_kind(c->layers[j]) == SS_SITE_JOINT;
    for (int j = 0; j < n_sites; j++) n_joint += sites[j].kind == SS_SITE_JOINT;
    for (int j = 0; j < n_sites; j++) n_self += sites[j].kind == SS_SITE_SELF || sites[j].kind == SS_SITE_CROSS;
    if (c->have_attn && !n_self)
        return ss_fail(SS_EARG, "%s%scondition '%s': field 'attn' is for PixArt models (self.i and cross.i sites); this model's "
                       "sites are %s", where, sep, c->name, ss_site_list(sites, n_sites, list, sizeof list));
    if (joint_only && n_joint > 0) { /* joint blocks only: the checks and messages from before sites existed */
        int img = 0, txt = 0;
        const ss_site *j0 = ss_site_find(sites, n_sites, ss_site_code(SS_SITE_JOINT, 0));
        for (int g = 0; j0 && g < j0->n_kspan; g++) *(ss_tok_is_text(j0->kspan[g].type) ? &txt : &img) += j0->kspan[g].len;
        return sink_condition_check_model(c, n_joint, img, txt, where[0] ? where : NULL);
    }
    for (int j = 0; j < c->n_layers; j++) {
        if (ss_site_find(sites, n_sites, c->layers[j])) continue;
        if (j < c->n_layers - c->n_from_sites)
            return ss_fail(SS_EARG, "%s%scondition '%s': field 'layers' names block %d, but the model has no %s (its sites: %s)",
                           where, sep, c->name, ss_site_code_block(c->layers[j]), ss_site_code_name(c->layers[j], nm, sizeof nm),
                           ss_site_list(sites, n_sites, list, sizeof list));
        return ss_fail(SS_EARG, "%s%scondition '%s': field 'sites' names %s, but the model has no such site (its sites: %s)",
                       where, sep, c->name, ss_site_code_name(c->layers[j], nm, sizeof nm),
                       ss_site_list(sites, n_sites, list, sizeof list));
    }
    static const int WANT[] = {2, 1, 0}; /* TOK_ALL, TOK_TEXT, TOK_IMAGE as ss_site_range's want */
    for (int j = 0; j < c->n_layers; j++) {
        const ss_site *s = ss_site_find(sites, n_sites, c->layers[j]);
        ss_site_code_name(c->layers[j], nm, sizeof nm);
        int qlo, qhi, klo, khi;
        if (ss_site_range(s, 0, WANT[c->queries], &qlo, &qhi) < 0 || ss_site_range(s, 1, WANT[c->keys], &klo, &khi) < 0)
            return ss_fail(SS_EARG, "%s%scondition '%s': site %s: its %s query rows or %s keys are not contiguous (not supported)",
                           where, sep, c->name, nm, TOKENS[c->queries], TOKENS[c->keys]);
        if (qhi <= qlo)
            return ss_fail(SS_EARG, "%s%scondition '%s': field 'queries' = %s, but site %s has no %s query rows", where, sep,
                           c->name, TOKENS[c->queries], nm, TOKENS[c->queries]);
        if (c->select != SEL_FIXED && c->k > khi - klo)
            return ss_fail(SS_EARG, "%s%scondition '%s': field 'k' = %d, but site %s has only %d candidate %s keys", where, sep,
                           c->name, c->k, nm, khi - klo, TOKENS[c->keys]);
        for (int i = 0; c->select == SEL_FIXED && i < c->n_indices; i++)
            if (c->indices[i] >= s->Tk)
                return ss_fail(SS_EARG, "%s%scondition '%s': field 'indices' names key %d, but site %s has %d keys", where, sep,
                               c->name, c->indices[i], nm, s->Tk);
        if (!c->value_path && c->eta == 0.0f && c->k >= s->Tk)
            return ss_fail(SS_EARG, "%s%scondition '%s': field '%s' removes every one of site %s's %d keys with eta 0, leaving "
                           "the attention rows no mass at all; keep at least one key or use eta > 0",
                           where, sep, c->name, c->select == SEL_FIXED ? "indices" : "k", nm, s->Tk);
    }
    return 0;
}

static json_t *pe_set_json(const sink_pe_set *set) {
    if (set->pattern != PE_LIST) return json_string(set->pattern == PE_SMILEY ? "smiley" : "corners");
    json_t *a = json_array();
    for (int i = 0; i < set->n; i++) {
        json_t *p = json_array();
        json_array_append_new(p, json_integer(set->rc[i][0]));
        json_array_append_new(p, json_integer(set->rc[i][1]));
        json_array_append_new(a, p);
    }
    return a;
}

void *sink_condition_to_json(const sink_condition *c) {
    json_t *o = json_object(), *layers = json_array(), *sites = NULL;
    json_object_set_new(o, "name", json_string(c->name));
    for (int i = 0; i < c->n_layers; i++) {
        if (ss_site_code_kind(c->layers[i]) == SS_SITE_JOINT) {
            json_array_append_new(layers, json_integer(c->layers[i]));
            continue;
        }
        char nm[48];
        if (!sites) sites = json_array();
        json_array_append_new(sites, json_string(ss_site_code_name(c->layers[i], nm, sizeof nm)));
    }
    json_object_set_new(o, "layers", layers);
    if (sites) json_object_set_new(o, "sites", sites); /* only when needed: today's conditions read as before */
    if (c->have_attn) json_object_set_new(o, "attn", json_string(c->attn ? "cross" : "self"));
    json_object_set_new(o, "select", json_string(SELECTS[c->select]));
    json_object_set_new(o, "k", json_integer(c->k));
    json_object_set_new(o, "rank_by", json_string(c->rank_union ? "union" : "head"));
    if (c->select == SEL_FIXED) {
        json_t *ix = json_array();
        for (int i = 0; i < c->n_indices; i++) json_array_append_new(ix, json_integer(c->indices[i]));
        json_object_set_new(o, "indices", ix);
    }
    json_object_set_new(o, "keys", json_string(TOKENS[c->keys]));
    json_object_set_new(o, "queries", json_string(TOKENS[c->queries]));
    json_object_set_new(o, "path", json_string(c->value_path ? "value" : "score"));
    if (c->value_path) {
        json_object_set_new(o, "value", json_string(VALUES[c->value]));
        if (c->value == VAL_LERP) json_object_set_new(o, "alpha", json_real(c->alpha));
    } else {
        json_object_set_new(o, "eta", json_real(c->eta));
    }
    json_t *st = json_array();
    json_array_append_new(st, json_real(c->step_lo));
    json_array_append_new(st, json_real(c->step_hi));
    json_object_set_new(o, "steps", st);
    json_object_set_new(o, "seed", json_integer((json_int_t)c->seed));
    if (c->have_pe_zero) json_object_set_new(o, "pe_zero", pe_set_json(&c->pe_zero));
    if (c->have_pe_copy) {
        json_t *f = json_array();
        json_array_append_new(f, json_integer(c->pe_copy_from[0]));
        json_array_append_new(f, json_integer(c->pe_copy_from[1]));
        json_object_set_new(o, "pe_copy_from", f);
        json_object_set_new(o, "pe_copy_to", pe_set_json(&c->pe_copy_to));
    }
    if (c->have_pad) /* as given: an integer, or the string */
        json_object_set_new(o, "pad_prompt", c->pad_spec[0] ? json_string(c->pad_spec) : json_integer(c->pad.repeat));
    return o;
}

int sink_condition_resolve(sink_condition *c, const ss_site *sites, int n_sites, const char *where) {
    int n_joint = 0, n_double = 0, n_self = 0;
    for (int i = 0; i < n_sites; i++) {
        n_joint += sites[i].kind == SS_SITE_JOINT;
        n_double += sites[i].kind == SS_SITE_DOUBLE;
        n_self += sites[i].kind == SS_SITE_SELF || sites[i].kind == SS_SITE_CROSS;
    }
    const char *sep = where && *where ? ": " : "";
    if (!where) where = "";
    if (c->have_attn && !n_self) {
        char list[1024];
        return ss_fail(SS_EARG, "%s%scondition '%s': field 'attn' is for PixArt models (self.i and cross.i sites); this model's "
                       "sites are %s", where, sep, c->name, ss_site_list(sites, n_sites, list, sizeof list));
    }
    if (n_joint || (!n_double && !n_self)) return 0;
    const ss_site_kind to = n_double ? SS_SITE_DOUBLE : c->attn ? SS_SITE_CROSS : SS_SITE_SELF;
    for (int j = 0; j < c->n_layers - c->n_from_sites; j++) {
        if (ss_site_code_kind(c->layers[j]) != SS_SITE_JOINT) continue;
        const int code = ss_site_code(to, ss_site_code_block(c->layers[j]));
        char nm[48];
        if (sink_condition_has_layer(c, code))
            return ss_fail(SS_EARG, "%s%scondition '%s': field 'layers' names block %d, and %s is listed already", where, sep,
                           c->name, ss_site_code_block(code), ss_site_code_name(code, nm, sizeof nm));
        c->layers[j] = code;
    }
    return 0;
}

int sink_condition_has_layer(const sink_condition *c, int code) {
    for (int i = 0; i < c->n_layers; i++)
        if (c->layers[i] == code) return 1;
    return 0;
}

int sink_condition_active(const sink_condition *c, double tfrac) {
    return tfrac < 0 || (tfrac >= c->step_lo - 1e-12 && tfrac <= c->step_hi + 1e-12);
}
