/* libFuzzer target for the condition parser (sink_condition_list_parse: a JSON condition object
 * or a list of them, UTF-8, optional BOM). On success every condition must survive the round
 * trip through sink_condition_to_json, and the list goes through the runner's preparation and
 * the model checks; on failure the error is one line naming the file. Build with `make fuzz`. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "exp/protocol.h"
#include "models/sd3.h"
#include "sink/condition.h"

#define LABEL "fuzz.json"

static void check_error(const char *label) {
    const char *msg = ss_err();
    if (strncmp(msg, label, strlen(label)) != 0 && strncmp(msg, "out of memory", 13) != 0) abort();
    if (strchr(msg, '\n')) abort();
}

static void round_trip(const sink_condition *c) {
    json_t *j = sink_condition_to_json(c);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (!s) abort();
    json_t *back = json_loads(s, 0, NULL);
    if (!back) abort();
    sink_condition d;
    if (sink_condition_from_json(&d, back, "again") != 0) abort();
    json_decref(back);
    json_t *a = sink_condition_to_json(c), *b = sink_condition_to_json(&d);
    if (!json_equal(a, b)) abort();
    json_decref(a);
    json_decref(b);
    free(s);
    /* invariants the hooks rely on */
    if (c->n_layers < 0 || c->n_layers > COND_MAX_LAYERS || c->k < 1 || c->k > COND_MAX_K) abort();
    if (c->select == SEL_FIXED && c->k != c->n_indices) abort();
    if (!(c->step_lo >= 0 && c->step_lo <= c->step_hi && c->step_hi <= 1)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sink_condition *l = NULL;
    int n = -1;
    ss_err_clear();
    if (sink_condition_list_parse(&l, &n, (const char *)data, size, LABEL) < 0) {
        if (l || n != 0) abort();
        check_error(LABEL);
        return 0;
    }
    if (n < 0 || n > COND_MAX_LIST) abort();
    for (int i = 0; i < n; i++) round_trip(&l[i]);
    /* the runner's preparation (baseline first, names) and the checks against two models */
    if (exp_conditions_prepare(&l, &n, LABEL) == 0) {
        if (n < 1 || strcmp(l[0].name, "baseline") || l[0].n_layers) abort();
        static const int M[][3] = {{6, 256, 16}, {1, 4, 2}, {24, 4096, 77}};
        for (int m = 0; m < 3; m++) {
            ss_site sites[SD3_MAX_LAYERS];
            sd3_config cfg = {.num_layers = M[m][0]};
            const int ns = sd3_sites(&cfg, M[m][1], M[m][2], sites, SD3_MAX_LAYERS);
            if (exp_conditions_check(l, n, sites, ns, LABEL) < 0) check_error(LABEL);
            else
                for (int i = 0; i < n; i++) {
                    const int T = M[m][1] + M[m][2];
                    /* what passed leaves every row some mass and names only existing blocks */
                    if (!l[i].value_path && l[i].eta == 0 && l[i].n_layers && l[i].k >= T) abort();
                    for (int j = 0; j < l[i].n_layers; j++)
                        if (l[i].layers[j] >= M[m][0]) abort();
                }
        }
    } else {
        check_error(LABEL);
    }
    free(l);
    return 0;
}
