#include "exp/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/err.h"
#include "sink/spiral.h"

exp_blocks exp_block_map(int L) {
    exp_blocks b = {.num_layers = L, .early = L / 4, .middle = L / 2, .late = 3 * L / 4};
    if (b.late >= L) b.late = L - 1;
    return b;
}

static sink_condition base(const char *name) {
    sink_condition c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", name);
    c.select = SEL_TOPK;
    c.k = 1;
    c.keys = TOK_ALL;
    c.queries = TOK_IMAGE;
    c.value = VAL_ZERO;
    c.alpha = 0.5f; /* the parser's default; unused on the score path */
    c.step_hi = 1.0;
    return c;
}

void exp_baseline(sink_condition *c) { *c = base("baseline"); }

static sink_condition at(const char *name, const int *layers, int nl, sink_select sel, int k, int uni) {
    sink_condition c = base(name);
    for (int i = 0; i < nl; i++)
        if (!sink_condition_has_layer(&c, layers[i])) c.layers[c.n_layers++] = layers[i];
    c.select = sel;
    c.k = k;
    c.rank_union = uni;
    return c;
}

int exp_core_conditions(const exp_blocks *b, sink_condition **out, int *n) {
    const int mid[1] = {b->middle}, three[3] = {b->early, b->middle, b->late};
    const sink_condition list[] = {
        base("baseline"),
        at("A1", mid, 1, SEL_TOPK, 1, 0),
        at("A2", three, 3, SEL_TOPK, 1, 0),
        at("A3", mid, 1, SEL_TOPK, 5, 0),
        at("A1_rand", mid, 1, SEL_RANDOM, 1, 0),
        at("A3_rand", mid, 1, SEL_RANDOM, 5, 0),
        at("U1_sink", mid, 1, SEL_TOPK, 1, 1),
        at("U1_rand", mid, 1, SEL_RANDOM, 1, 1),
        at("U5_sink", mid, 1, SEL_TOPK, 5, 1),
        at("U5_rand", mid, 1, SEL_RANDOM, 5, 1),
    };
    const int m = (int)(sizeof list / sizeof list[0]);
    *out = ss_malloc(sizeof list);
    if (!*out) return SS_ENOMEM;
    memcpy(*out, list, sizeof list);
    *n = m;
    return 0;
}

static int safe_name(const char *s) {
    if (!*s || *s == '.') return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

int exp_conditions_prepare(sink_condition **list, int *n, const char *what) {
    sink_condition *l = *list;
    for (int i = 0; i < *n; i++) {
        if (!safe_name(l[i].name))
            return ss_fail(SS_EFORMAT, "%s: condition %d: field 'name' (\"%s\") must be a non-empty folder name of letters, "
                           "digits, '.', '_' and '-', not starting with '.'", what, i, l[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(l[i].name, l[j].name))
                return ss_fail(SS_EFORMAT, "%s: conditions %d and %d have the same 'name' \"%s\"", what, j, i, l[i].name);
        if (!strcmp(l[i].name, "baseline") && (i > 0 || l[i].n_layers > 0 || l[i].have_pe || l[i].have_pad))
            return ss_fail(SS_EFORMAT, "%s: condition %d: the name \"baseline\" is reserved for condition 0 with layers [] "
                           "and no pe_* or pad_prompt fields", what, i);
    }
    if (*n > 0 && !strcmp(l[0].name, "baseline")) return 0;
    sink_condition *nl = realloc(l, sizeof *nl * (*n + 1));
    if (!nl) return ss_fail(SS_ENOMEM, "out of memory");
    memmove(nl + 1, nl, sizeof *nl * *n);
    exp_baseline(&nl[0]);
    *list = nl;
    (*n)++;
    return 0;
}

int exp_conditions_check(const sink_condition *l, int n, const ss_site *sites, int n_sites, const char *what) {
    for (int i = 0; i < n; i++) {
        int rc = sink_condition_check_sites(&l[i], sites, n_sites, what);
        if (rc < 0) return rc;
    }
    return 0;
}

const char *const EXP_SPIRAL_NAMES[6] = {"keyimp", "budget", "energy", "qk", "norms", "act"};

static int probe_spec(json_t *p, const char *path, exp_probe_spec *ps) {
    if (!json_is_object(p)) return ss_fail(SS_EFORMAT, "%s: field 'probe' must be an object {\"sites\": ..., \"spiral\": ...}", path);
    const char *key;
    json_t *v;
    char shown[80];
    json_object_foreach(p, key, v) {
        if (!strcmp(key, "sites")) {
            ps->have_sites = 1;
            if (json_is_string(v) && !strcmp(json_string_value(v), "all")) ps->all_sites = 1;
            else if (json_is_string(v) && !strcmp(json_string_value(v), "none")) ps->n_sites = 0;
            else if (json_is_array(v) && json_array_size(v) <= EXP_MAX_PROBE) {
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e) {
                    if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= SS_SITE_MAX_BLOCKS)
                        return ss_fail(SS_EFORMAT, "%s: field 'probe.sites'[%zu] must be a block index in [0, %d]", path, i,
                                       SS_SITE_MAX_BLOCKS - 1);
                    for (size_t j = 0; j < i; j++)
                        if (ps->sites[j] == (int)json_integer_value(e))
                            return ss_fail(SS_EFORMAT, "%s: field 'probe.sites' lists block %d twice", path, ps->sites[j]);
                    ps->sites[i] = (int)json_integer_value(e);
                }
                ps->n_sites = (int)json_array_size(v);
            } else
                return ss_fail(SS_EFORMAT, "%s: field 'probe.sites' must be \"all\", \"none\" or a list of at most %d block "
                               "indices", path, EXP_MAX_PROBE);
        } else if (!strcmp(key, "spiral")) {
            ps->have_spiral = 1;
            ps->spiral = 0;
            if (json_is_string(v)) {
                if (spiral_fields_parse(json_string_value(v), &ps->spiral) < 0)
                    return ss_err_prefix(SS_EFORMAT, "%s: field 'probe.spiral': ", path);
            } else if (json_is_array(v) && json_array_size(v) > 0) {
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e) {
                    unsigned f;
                    if (!json_is_string(e))
                        return ss_fail(SS_EFORMAT, "%s: field 'probe.spiral'[%zu] must be a field group name", path, i);
                    if (spiral_fields_parse(json_string_value(e), &f) < 0)
                        return ss_err_prefix(SS_EFORMAT, "%s: field 'probe.spiral'[%zu]: ", path, i);
                    ps->spiral |= f;
                }
            } else
                return ss_fail(SS_EFORMAT, "%s: field 'probe.spiral' must be \"all\", a comma-separated list of field groups "
                               "(keyimp, budget, energy, qk, norms, act) or a non-empty list of their names", path);
            ps->spiral |= SPIRAL_KEYIMP; /* always measured with any group */
        } else {
            return ss_fail(SS_EFORMAT, "%s: unknown field 'probe.%s' (known: sites, spiral)", path,
                           ss_printable(key, shown, sizeof shown));
        }
    }
    return 0;
}

int exp_conditions_load(const char *path, sink_condition **out, int *n, exp_probe_spec *probe) {
    *out = NULL;
    *n = 0;
    exp_probe_spec ps;
    memset(&ps, 0, sizeof ps);
    void *vroot;
    int rc = sink_condition_json_load(path, &vroot);
    if (rc < 0) return rc;
    json_t *root = vroot, *list = root;
    if (json_is_object(root) && json_object_get(root, "conditions")) { /* a preset object */
        const char *key;
        json_t *v;
        char shown[80];
        json_object_foreach(root, key, v) {
            if (!strcmp(key, "conditions")) {
                if (!json_is_array(v)) rc = ss_fail(SS_EFORMAT, "%s: field 'conditions' must be a list of condition objects", path);
            } else if (!strcmp(key, "probe")) {
                rc = probe_spec(v, path, &ps);
            } else if (!strcmp(key, "description")) {
                if (!json_is_string(v)) rc = ss_fail(SS_EFORMAT, "%s: field 'description' must be a string", path);
            } else {
                rc = ss_fail(SS_EFORMAT, "%s: unknown field '%s' (a preset object has conditions, probe and description)", path,
                             ss_printable(key, shown, sizeof shown));
            }
            if (rc < 0) break;
        }
        list = json_object_get(root, "conditions");
    }
    if (!rc) rc = sink_condition_list_from_json(out, n, list, path);
    json_decref(root);
    if (!rc && probe) *probe = ps;
    return rc;
}
