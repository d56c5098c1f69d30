#include "exp/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

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
        if (!strcmp(l[i].name, "baseline") && (i > 0 || l[i].n_layers > 0 || l[i].have_pe))
            return ss_fail(SS_EFORMAT, "%s: condition %d: the name \"baseline\" is reserved for condition 0 with layers [] "
                           "and no pe_* fields", what, i);
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
