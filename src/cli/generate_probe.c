/* generate --probe on pipeline folders (generate_probe.h). */
#include "cli/generate_probe.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "io/jsonfile.h"
#include "sink/record.h"
#include "sink/spiral.h"

/* "0,6,12" (joint blocks) and/or site names ("double.0,single.3") into codes. */
static int parse_sites(gen_probe *g, const char *s) {
    for (const char *p = s;;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[64];
        if (!len || len >= sizeof item)
            return ss_fail(SS_EARG, "--probe: '%s' is not a list of block indices or site names (e.g. 0,1 or double.0,single.1)", s);
        memcpy(item, p, len);
        item[len] = 0;
        int code = -1;
        if (item[0] >= '0' && item[0] <= '9') {
            char *end;
            const long v = strtol(item, &end, 10);
            if (!*end && v >= 0 && v < SS_SITE_MAX_BLOCKS) code = ss_site_code(SS_SITE_JOINT, (int)v);
        } else {
            code = ss_site_code_parse(item);
        }
        if (code < 0)
            return ss_fail(SS_EARG, "--probe: '%s' is neither a block index (0..%d) nor a site name KIND.BLOCK (joint.1, double.0, "
                           "single.2)", item, SS_SITE_MAX_BLOCKS - 1);
        if (g->n == GEN_PROBE_MAX) return ss_fail(SS_EARG, "--probe: more than %d sites", GEN_PROBE_MAX);
        for (int i = 0; i < g->n; i++)
            if (g->codes[i] == code) return ss_fail(SS_EARG, "--probe: '%s' lists %s twice", s, item);
        g->codes[g->n++] = code;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

int gen_probe_parse(gen_probe *g, const char *probe_s, const char *spiral_s, const char *stats_s, const char *out) {
    memset(g, 0, sizeof *g);
    if (!probe_s) {
        if (spiral_s || stats_s) return ss_fail(SS_EARG, "%s needs --probe (the sites to measure)", spiral_s ? "--spiral" : "--stats");
        return 0;
    }
    g->on = 1;
    g->all = !strcmp(probe_s, "all");
    int rc;
    if (!g->all && (rc = parse_sites(g, probe_s)) < 0) return rc;
    if (spiral_s && spiral_fields_parse(spiral_s, &g->spiral) < 0) return ss_err_prefix(SS_EARG, "--spiral: ");
    if (stats_s) {
        g->stats = stats_s;
        return 0;
    }
    if (!out) return ss_fail(SS_EARG, "--probe needs --stats FILE.json (or --out, whose name it then takes)");
    const size_t L = strlen(out);
    const int ext = L > 4 && !strcasecmp(out + L - 4, ".png");
    if ((size_t)snprintf(g->def, sizeof g->def, "%.*s.stats.json", (int)(ext ? L - 4 : L), out) >= sizeof g->def)
        return ss_fail(SS_EARG, "--out path too long: %s", out);
    g->stats = g->def;
    return 0;
}

int gen_probe_attach(gen_probe *g, sink_ctx **sk, const ss_site *sites, int ns, const char *model) {
    if (!g->on) return 0;
    char nm[48], list[2048];
    if (g->all) {
        g->n = 0;
        for (int i = 0; i < ns && g->n < GEN_PROBE_MAX; i++) g->codes[g->n++] = ss_site_code_of(&sites[i]);
    }
    for (int i = 0; i < g->n; i++)
        if (!ss_site_find(sites, ns, g->codes[i]))
            return ss_fail(SS_EARG, "--probe: site %s does not exist in %s (its sites: %s)",
                           ss_site_code_name(g->codes[i], nm, sizeof nm), model, ss_site_list(sites, ns, list, sizeof list));
    if (!*sk && !(*sk = sink_ctx_new())) return ss_fail(SS_ENOMEM, "out of memory");
    int rc = sink_ctx_set_probe(*sk, g->codes, g->n, TOK_IMAGE, 5, 0);
    if (rc < 0) return rc;
    sink_ctx_set_spiral(*sk, g->spiral);
    return 0;
}

int gen_probe_save(const gen_probe *g, const sink_ctx *sk, const char *model, const char *const *batch_prompts, int BB,
                   int steps, const char *cond_json) {
    if (!g->on) return 0;
    json_t *root = json_object(), *pr = json_array();
    json_object_set_new(root, "model", json_string(model));
    for (int b = 0; b < BB; b++) json_array_append_new(pr, json_string(batch_prompts[b]));
    json_object_set_new(root, "batch_prompts", pr);
    json_object_set_new(root, "steps", json_integer(steps));
    if (g->scheduler) json_object_set_new(root, "scheduler", json_string(g->scheduler));
    if (g->precision) json_object_set_new(root, "precision", json_string(g->precision));
    json_t *cj = cond_json ? json_loads(cond_json, 0, NULL) : NULL;
    json_object_set_new(root, "condition", cj ? cj : json_null());
    json_t *pe = sink_record_write_probe_json(sk, 1, NULL), *ve = sink_record_write_verif_json(sk, 1);
    json_object_set_new(root, "probe", pe); /* sink/record.h: one entry per site, step and batch element */
    json_object_set_new(root, "verification", ve);
    if (!pe || !ve) {
        json_decref(root);
        return SS_ENOMEM;
    }
    const int rc = ss_json_save(g->stats, root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)); /* takes root */
    return rc < 0 ? rc : 0;
}
