/* The AbsPE manipulation (condition fields pe_zero, pe_copy_from, pe_copy_to; sink/abspe.h) against
 * diffusers' own PixArtTransformer2DModel and SD3Transformer2DModel with only their position tables edited
 * (tests/gen/gen_abspe_cases.py, tests/fixtures/abspe-cases): the sample of every case, the
 * resolved positions, the no-op form bit-identical, JSON round trip, errors (grid too small,
 * out-of-range, RoPE family) through the API and the CLI, and where the sink goes (printed). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/family.h"
#include "sink/abspe.h"
#include "sink/sink.h"
#include "sink/spiral.h"

typedef struct {
    const ss_family *fam;
    void *m;
    ss_fwd_inputs io;
} px;

static void px_open(px *f, const char *model, const char *inputs) {
    memset(f, 0, sizeof *f);
    char dir[1024], in_path[1024];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/%s", model));
    snprintf(in_path, sizeof in_path, "%s", inputs);
    assert_int_equal(ss_family_detect(dir, &f->fam), 0);
    if (f->fam->load(&f->m, dir) < 0) fail_msg("%s", ss_err());
    st_file *in;
    assert_int_equal(st_open(&in, in_path), 0);
    if (f->fam->inputs(f->m, in, in_path, &f->io) < 0) fail_msg("%s", ss_err());
    st_close(in);
}

static void px_close(px *f) {
    ss_fwd_inputs_free(&f->io);
    f->fam->free(f->m);
}

static const char *case_model(const char *c) { return !strncmp(c, "sd3", 3) ? "sd3-tiny-a" : "pixart-tiny-a"; }

static const char *case_inputs(const char *c) {
    return !strcmp(c, "a") || !strcmp(c, "sd3") ? tc_path("fixtures/%s/inputs.safetensors", case_model(c))
                                                : tc_path("fixtures/abspe-cases/inputs-%s.safetensors", c);
}

static int hk_attention(void *ctx, const ss_site *site, const attn_args *a) {
    sd3_hooks *h = ctx;
    return h->attention(h->ctx, site, a);
}

static int hk_pos(void *ctx, float *tab, int h, int w, int D) {
    sd3_hooks *hh = ctx;
    return sink_ctx_pos_embed(hh->ctx, tab, h, w, D);
}

/* forward with the condition (NULL: none) and the probe (nprobe sites, spiral keyimp) */
static float *px_run(px *f, const sink_condition *c, sink_ctx **keep, const int *probe, int nprobe) {
    sink_ctx *sk = sink_ctx_new();
    assert_non_null(sk);
    if (c) sink_ctx_set_condition(sk, c);
    if (nprobe) {
        assert_int_equal(sink_ctx_set_probe(sk, probe, nprobe, TOK_IMAGE, 5, 1), 0);
        sink_ctx_set_spiral(sk, SPIRAL_KEYIMP);
    }
    sd3_hooks inner = sink_ctx_hooks(sk);
    ss_model_hooks hk = {.ctx = &inner, .attention = hk_attention, .pos_embed = hk_pos};
    float *out = malloc(sizeof(float) * f->io.out_numel);
    if (f->fam->forward(f->m, out, &f->io, &hk) < 0) fail_msg("%s", ss_err());
    if (keep) *keep = sk;
    else sink_ctx_free(sk);
    return out;
}

static json_t *load_cases(void) {
    json_error_t je;
    json_t *l = json_load_file(tc_path("fixtures/abspe-cases/conditions.json"), 0, &je);
    if (!l) fail_msg("conditions.json: %s", je.text);
    assert_true(json_is_array(l) && json_array_size(l) >= 10);
    return l;
}

static void check_resolved(const sink_condition *c, json_t *res, int h, int w) {
    int pos[COND_MAX_PE];
    struct { const char *key; const sink_pe_set *set; int have; } sets[] = {
        {"copy_to", &c->pe_copy_to, c->have_pe_copy}, {"zero", &c->pe_zero, c->have_pe_zero}};
    for (int s = 0; s < 2; s++) {
        json_t *want = json_object_get(res, sets[s].key);
        assert_int_equal(want != NULL, sets[s].have);
        if (!want) continue;
        const int n = sink_pe_positions(pos, COND_MAX_PE, sets[s].set, h, w, c, sets[s].key, "t");
        assert_int_equal(n, (int)json_array_size(want));
        for (int i = 0; i < n; i++) assert_int_equal(pos[i], (int)json_integer_value(json_array_get(want, i)));
    }
    if (c->have_pe_copy) {
        sink_pe_set from = {.pattern = PE_LIST, .n = 1, .rc = {{c->pe_copy_from[0], c->pe_copy_from[1]}}};
        assert_int_equal(sink_pe_positions(pos, 1, &from, h, w, c, "pe_copy_from", "t"), 1);
        assert_int_equal(pos[0], (int)json_integer_value(json_object_get(res, "copy_from")));
    }
}

static void test_matches_diffusers(void **state) {
    (void)state;
    json_t *l = load_cases();
    char expd[1024];
    snprintf(expd, sizeof expd, "%s", tc_path("fixtures/abspe-cases/expected.safetensors"));
    size_t i;
    json_t *e;
    const char *open_case = "";
    px f = {0};
    float *base = NULL;
    json_array_foreach(l, i, e) {
        const char *cs = json_string_value(json_object_get(e, "case"));
        if (strcmp(cs, open_case)) {
            if (*open_case) {
                px_close(&f);
                free(base);
            }
            px_open(&f, case_model(cs), case_inputs(cs));
            open_case = cs;
            base = px_run(&f, NULL, NULL, NULL, 0);
            char nm[64];
            snprintf(nm, sizeof nm, "sample.%s", cs);
            size_t n;
            float *want = tc_load(expd, nm, &n, NULL, NULL);
            assert_non_null(want);
            assert_int_equal(n, f.io.out_numel);
            const double err = tc_rel_l2(base, want, n);
            printf("  %-8s %-20s grid %dx%d  unedited (%s)   rel L2 %.3e\n", cs, "-", f.io.pe_grid[0], f.io.pe_grid[1], f.fam->name, err);
            assert_true(err <= 1e-4);
            free(want);
        }
        json_t *grid = json_object_get(e, "grid");
        assert_int_equal(f.io.pe_grid[0], (int)json_integer_value(json_array_get(grid, 0)));
        assert_int_equal(f.io.pe_grid[1], (int)json_integer_value(json_array_get(grid, 1)));
        sink_condition c;
        if (sink_condition_from_json(&c, json_object_get(e, "condition"), "conditions.json") < 0) fail_msg("%s", ss_err());
        if (sink_condition_check_pe(&c, f.io.pe_grid[0], f.io.pe_grid[1], f.fam->class_name, "conditions.json") < 0)
            fail_msg("%s", ss_err());
        check_resolved(&c, json_object_get(e, "resolved"), f.io.pe_grid[0], f.io.pe_grid[1]);
        float *got = px_run(&f, &c, NULL, NULL, 0);
        char nm[200];
        snprintf(nm, sizeof nm, "sample.%s.%s", cs, c.name);
        size_t n;
        float *want = tc_load(expd, nm, &n, NULL, NULL);
        assert_non_null(want);
        assert_int_equal(n, f.io.out_numel);
        const double err = tc_rel_l2(got, want, n), moved = tc_rel_l2(got, base, n);
        printf("  %-8s %-20s grid %dx%d  vs diffusers rel L2 %.3e (edit moves the sample by %.3f)\n", cs, c.name,
               f.io.pe_grid[0], f.io.pe_grid[1], err, moved);
        assert_true(err <= 1e-4);
        assert_true(moved > 1e-3);
        free(got);
        free(want);
    }
    px_close(&f);
    free(base);
    json_decref(l);
}

static sink_condition parse_ok(const char *text) {
    json_t *o = json_loads(text, 0, NULL);
    assert_non_null(o);
    sink_condition c;
    if (sink_condition_from_json(&c, o, "c.json") < 0) fail_msg("%s: %s", text, ss_err());
    json_decref(o);
    return c;
}

static void expect_parse_error(const char *text, const char *must) {
    json_t *o = json_loads(text, 0, NULL);
    assert_non_null(o);
    sink_condition c;
    const int rc = sink_condition_from_json(&c, o, "c.json");
    json_decref(o);
    printf("  %s -> %s\n", text, rc < 0 ? ss_err() : "(accepted)");
    assert_true(rc < 0);
    assert_non_null(strstr(ss_err(), "c.json"));
    assert_non_null(strstr(ss_err(), must));
}

static void test_noop_bit_identical(void **state) {
    (void)state;
    px f;
    px_open(&f, case_model("big"), case_inputs("big"));
    float *base = px_run(&f, NULL, NULL, NULL, 0);
    const char *noops[] = {"{\"name\": \"n1\", \"pe_zero\": []}", "{\"name\": \"n2\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": []}",
                           "{\"name\": \"n3\", \"layers\": [], \"pe_zero\": [], \"pe_copy_from\": [3, 3], \"pe_copy_to\": [[3, 3]]}",
                           /* outside its steps window, forward outside a sampler is always active: use the window only in sampling */
                           "{\"name\": \"n4\", \"layers\": []}"};
    for (size_t i = 0; i < sizeof noops / sizeof noops[0]; i++) {
        sink_condition c = parse_ok(noops[i]);
        assert_int_equal(sink_condition_check_pe(&c, f.io.pe_grid[0], f.io.pe_grid[1], "PixArtTransformer2DModel", "c.json"), 0);
        float *got = px_run(&f, &c, NULL, NULL, 0);
        assert_memory_equal(got, base, sizeof(float) * f.io.out_numel);
        free(got);
    }
    /* a step window that excludes the current step: no edit */
    sink_condition c = parse_ok("{\"name\": \"late\", \"pe_zero\": \"corners\", \"steps\": [0.5, 1.0]}");
    sink_ctx *sk = sink_ctx_new();
    sink_ctx_set_condition(sk, &c);
    sink_ctx_set_step(sk, 0, 0.0);
    float *tab = calloc(16 * 13 * 14, sizeof(float)), *tab0 = calloc(16 * 13 * 14, sizeof(float));
    for (int i = 0; i < 16 * 13 * 14; i++) tab[i] = tab0[i] = (float)i;
    assert_int_equal(sink_ctx_pos_embed(sk, tab, 14, 13, 16), 0);
    assert_memory_equal(tab, tab0, sizeof(float) * 16 * 13 * 14);
    sink_ctx_set_step(sk, 1, 0.75);
    assert_int_equal(sink_ctx_pos_embed(sk, tab, 14, 13, 16), 0);
    assert_true(tab[0] == 0.0f && tab[16 * 12] == 0.0f && tab[16 * 13 * 14 - 1] == 0.0f && tab[16] == 16.0f);
    sink_ctx_free(sk);
    free(tab);
    free(tab0);
    free(base);
    px_close(&f);
}

static void test_json_round_trip(void **state) {
    (void)state;
    const char *texts[] = {
        "{\"name\": \"pe_corner\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": \"smiley\", \"pe_zero\": [[0, -1]]}",
        "{\"name\": \"z\", \"layers\": [1], \"pe_zero\": \"corners\"}",
        "{\"name\": \"l\", \"sites\": [\"self.0\"], \"attn\": \"self\", \"pe_copy_from\": [2, 1], \"pe_copy_to\": [[0, 0], [-1, 3]]}",
        "{\"name\": \"e\", \"pe_zero\": []}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        sink_condition a = parse_ok(texts[i]), b;
        json_t *j = sink_condition_to_json(&a);
        char *s = json_dumps(j, JSON_COMPACT);
        printf("  %s\n", s);
        assert_int_equal(sink_condition_from_json(&b, j, "rt"), 0);
        json_t *j2 = sink_condition_to_json(&b);
        char *s2 = json_dumps(j2, JSON_COMPACT);
        assert_string_equal(s, s2);
        assert_int_equal(a.have_pe, 1);
        assert_int_equal(b.have_pe_zero, a.have_pe_zero);
        assert_int_equal(b.have_pe_copy, a.have_pe_copy);
        assert_memory_equal(&a.pe_zero, &b.pe_zero, sizeof a.pe_zero);
        assert_memory_equal(&a.pe_copy_to, &b.pe_copy_to, sizeof a.pe_copy_to);
        free(s);
        free(s2);
        json_decref(j);
        json_decref(j2);
    }
    /* a condition without pe fields writes none (records read as before) */
    sink_condition c = parse_ok("{\"name\": \"x\", \"layers\": [0]}");
    json_t *j = sink_condition_to_json(&c);
    char *s = json_dumps(j, 0);
    assert_null(strstr(s, "pe_"));
    free(s);
    json_decref(j);
}

static void test_errors(void **state) {
    (void)state;
    expect_parse_error("{\"name\": \"x\", \"pe_zero\": \"frown\"}", "field 'pe_zero' is \"frown\"");
    expect_parse_error("{\"name\": \"x\", \"pe_zero\": [[1, 2, 3]]}", "field 'pe_zero'[0]");
    expect_parse_error("{\"name\": \"x\", \"pe_zero\": [[1, 2], [1, 2]]}", "lists [1, 2] twice");
    expect_parse_error("{\"name\": \"x\", \"pe_zero\": 3}", "field 'pe_zero' must be");
    expect_parse_error("{\"name\": \"x\", \"pe_copy_to\": \"smiley\"}", "field 'pe_copy_to' needs field 'pe_copy_from'");
    expect_parse_error("{\"name\": \"x\", \"pe_copy_from\": [0, 0]}", "field 'pe_copy_from' needs field 'pe_copy_to'");
    expect_parse_error("{\"name\": \"x\", \"pe_copy_from\": \"corners\", \"pe_copy_to\": []}", "field 'pe_copy_from' must be");
    expect_parse_error("{\"name\": \"x\", \"pe_copy_from\": [0, 99999], \"pe_copy_to\": []}", "col = 99999");
    expect_parse_error("{\"name\": \"x\", \"pe_zero\": [[0, 1.5]]}", "field 'pe_zero'[0]");
    /* against a grid */
    struct { const char *text; int h, w; const char *family, *must1, *must2; } g[] = {
        {"{\"name\": \"s\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": \"smiley\"}", 4, 4, "P", "field 'pe_copy_to' = \"smiley\"", "4x4"},
        {"{\"name\": \"s\", \"pe_zero\": \"smiley\"}", 12, 12, "P", "at least 13x12", "12x12"},
        {"{\"name\": \"s\", \"pe_zero\": \"corners\"}", 1, 5, "P", "at least 2x2", "1x5"},
        {"{\"name\": \"o\", \"pe_zero\": [[0, 0], [4, 0]]}", 4, 4, "P", "field 'pe_zero'[1] = [4, 0] is outside", "4x4"},
        {"{\"name\": \"o\", \"pe_zero\": [[0, -5]]}", 4, 4, "P", "field 'pe_zero'[0] = [0, -5]", "4x4"},
        {"{\"name\": \"o\", \"pe_copy_from\": [0, 4], \"pe_copy_to\": []}", 4, 4, "P", "field 'pe_copy_from'", "outside"},
        {"{\"name\": \"d\", \"pe_copy_from\": [0, 0], \"pe_copy_to\": [[0, 3], [0, -1]]}", 4, 4, "P", "names grid position [0, 3] twice", "'pe_copy_to'"},
        {"{\"name\": \"r\", \"pe_zero\": []}", 0, 0, "FluxTransformer2DModel", "FluxTransformer2DModel has none", "RoPE"},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        sink_condition c = parse_ok(g[i].text);
        const int rc = sink_condition_check_pe(&c, g[i].h, g[i].w, g[i].family, "c.json");
        printf("  %s on %dx%d -> %s\n", g[i].text, g[i].h, g[i].w, rc < 0 ? ss_err() : "(accepted)");
        assert_true(rc < 0);
        assert_non_null(strstr(ss_err(), "c.json: condition '"));
        assert_non_null(strstr(ss_err(), g[i].must1));
        assert_non_null(strstr(ss_err(), g[i].must2));
        assert_null(strchr(ss_err(), '\n'));
    }
    /* the smallest grids the patterns fit */
    sink_condition c = parse_ok("{\"name\": \"s\", \"pe_zero\": \"smiley\"}");
    int pos[COND_MAX_PE];
    assert_int_equal(sink_pe_positions(pos, COND_MAX_PE, &c.pe_zero, 13, 12, &c, "pe_zero", "t"), SINK_PE_SMILEY_N);
    for (int i = 0; i < SINK_PE_SMILEY_N; i++) /* distinct */
        for (int j = 0; j < i; j++) assert_int_not_equal(pos[i], pos[j]);
}

static void test_cli(void **state) {
    (void)state;
    char *dir = tc_tmpdir();
    char buf[8192], fx[1024], out[1024], cond[1024], flux[1024], big[1024], expd[1024];
    snprintf(fx, sizeof fx, "%s", tc_path("fixtures/pixart-tiny-a"));
    snprintf(flux, sizeof flux, "%s", tc_path("fixtures/flux-tiny-a"));
    snprintf(big, sizeof big, "%s", tc_path("fixtures/abspe-cases/inputs-big.safetensors"));
    snprintf(expd, sizeof expd, "%s", tc_path("fixtures/abspe-cases/expected.safetensors"));
    snprintf(out, sizeof out, "%s", tc_join(dir, "out.safetensors"));
    snprintf(cond, sizeof cond, "%s", tc_join(dir, "c.json"));
    tc_write_text(cond, "{\"name\": \"smiley\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": \"smiley\", \"pe_zero\": [[0, -1]]}");
    int rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --condition %s --probe all --spiral keyimp",
                    tc_bin(), fx, big, out, cond);
    if (rc) fail_msg("%s", buf);
    size_t n;
    float *got = tc_load(out, "sample", &n, NULL, NULL), *want = tc_load(expd, "sample.big.smiley", NULL, NULL, NULL);
    assert_non_null(got);
    assert_non_null(want);
    const double err = tc_rel_l2(got, want, n);
    printf("  CLI forward --condition smiley: rel L2 %.3e vs diffusers\n", err);
    assert_true(err <= 1e-4);
    free(got);
    free(want);
    char *stats = tc_read_all(tc_join(dir, "out.stats.json"), NULL);
    assert_non_null(stats);
    assert_non_null(strstr(stats, "\"pe_copy_to\": \"smiley\""));
    assert_non_null(strstr(stats, "\"pe_zero\": [[0, -1]]") ? (void *)1 : strstr(stats, "\"pe_zero\""));
    free(stats);
    /* the fixture's own 4x4 grid is too small for the smiley: one line naming the file and field */
    snprintf(big, sizeof big, "%s", tc_join(fx, "inputs.safetensors"));
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --condition %s", tc_bin(), fx, big, out, cond);
    printf("  smiley on 4x4 -> %s", buf);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, cond));
    assert_non_null(strstr(buf, "field 'pe_copy_to'"));
    tc_write_text(cond, "{\"name\": \"far\", \"pe_zero\": [[4, 0]]}");
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --condition %s", tc_bin(), fx, big, out, cond);
    printf("  [4, 0] on 4x4 -> %s", buf);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, cond));
    assert_non_null(strstr(buf, "field 'pe_zero'[0]"));
    /* SD3 (the cropped table) through the CLI */
    char sd3[1024];
    snprintf(sd3, sizeof sd3, "%s", tc_path("fixtures/sd3-tiny-a"));
    tc_write_text(cond, "{\"name\": \"corner-to-corners\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": \"corners\", \"pe_zero\": [[0, -1]]}");
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s", tc_bin(), sd3, sd3,
                out, cond);
    if (rc) fail_msg("%s", buf);
    got = tc_load(out, "sample", &n, NULL, NULL);
    want = tc_load(expd, "sample.sd3.corner-to-corners", NULL, NULL, NULL);
    assert_non_null(got);
    assert_non_null(want);
    printf("  CLI forward SD3 corner-to-corners: rel L2 %.3e vs diffusers\n", tc_rel_l2(got, want, n));
    assert_true(tc_rel_l2(got, want, n) <= 1e-4);
    free(got);
    free(want);
    /* FLUX (RoPE) refuses */
    tc_write_text(cond, "{\"name\": \"rope\", \"pe_zero\": \"corners\"}");
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s/inputs.safetensors --out %s --condition %s", tc_bin(), flux,
                flux, out, cond);
    printf("  FLUX -> %s", buf);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, cond));
    assert_non_null(strstr(buf, "RoPE"));
    tc_rmtree(dir);
    free(dir);
}

/* Where the sink (Key Importance top-1 of self.i over the image queries) is before and after the
 * paper's manipulation (the top-right corner's embedding copied to the smiley, the corner zeroed).
 * Printed, not asserted: the weights are random. */
static void test_sink_moves(void **state) {
    (void)state;
    px f;
    px_open(&f, case_model("big"), case_inputs("big"));
    const int h = f.io.pe_grid[0], w = f.io.pe_grid[1];
    ss_site sites[16];
    const int ns = f.fam->sites(f.m, f.io.N, f.io.S, sites, 16);
    int probe[16], np = 0;
    for (int i = 0; i < ns; i++)
        if (sites[i].kind == SS_SITE_SELF) probe[np++] = ss_site_code_of(&sites[i]);
    sink_condition c = parse_ok("{\"name\": \"pe_corner\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": \"smiley\", \"pe_zero\": [[0, -1]]}");
    sink_condition cs = c; /* the same with the unedited run's own sink of self.0 as the source (set below) */
    int smiley[COND_MAX_PE];
    const int nsm = sink_pe_positions(smiley, COND_MAX_PE, &c.pe_copy_to, h, w, &c, "pe_copy_to", "t");
    assert_int_equal(nsm, SINK_PE_SMILEY_N);
    static const char *const PASS[] = {"original", "smiley PE", "sink PE"};
    for (int pass = 0; pass < 3; pass++) {
        sink_ctx *sk;
        float *o = px_run(&f, pass == 1 ? &c : pass == 2 ? &cs : NULL, &sk, probe, np);
        free(o);
        assert_int_equal(sink_ctx_record_count(sk), np);
        for (int i = 0; i < sink_ctx_record_count(sk); i++) {
            const sink_record *r = sink_ctx_record(sk, i);
            assert_non_null(r->spiral);
            const spiral_rec *sp = r->spiral;
            const int s = sp->sink[0];
            assert_true(s >= 0 && s < f.io.N);
            if (pass == 0 && i == 0) {
                cs.pe_copy_from[0] = cs.pe_zero.rc[0][0] = s / w;
                cs.pe_copy_from[1] = cs.pe_zero.rc[0][1] = s % w;
            }
            const int src = pass == 2 ? cs.pe_copy_from[0] * w + cs.pe_copy_from[1] : w - 1;
            double mu_sm = 0, mu_src = sp->mu[src];
            for (int j = 0; j < nsm; j++) mu_sm += sp->mu[smiley[j]];
            int in = 0;
            for (int j = 0; j < nsm; j++) in |= smiley[j] == s;
            char nm[48];
            if (i == 0 && pass) printf("  -- %s\n", pass == 1 ? "paper: top-right corner PE copied to the smiley, corner zeroed"
                                                           : "the original self.0 sink's PE copied to the smiley, sink zeroed");
            printf("  %-9s self.%d: sink key %3d = [%2d, %2d]%s, x uniform %.2f; mean mu on the smiley x N %.3f, "
                   "source [%d, %d] mu x N %.3f\n", PASS[pass], ss_site_code_block(r->site), s, s / w, s % w,
                   in ? " (in the smiley)" : s == src ? " (the source)" : "", sp->x_uniform[0], mu_sm / nsm * f.io.N, src / w, src % w,
                   mu_src * f.io.N);
            (void)nm;
        }
        sink_ctx_free(sk);
    }
    px_close(&f);
}

/* generate on an SD3 pipeline folder: the condition's edit in every step of the sampler; an empty
 * edit is bit-identical; a grid the pattern does not fit is refused naming the file */
static void test_generate_sd3(void **state) {
    (void)state;
    char dir[1024], buf[8192], cond[1200];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/sd3-pipeline-tiny"));
    char *tmp = tc_tmpdir();
    snprintf(cond, sizeof cond, "%s/c.json", tmp);
    const char *base = "--steps 2 --cfg 3 --height 16 --width 16 --max-sequence-length 8 --seed 4 --prompt 'a red cat'";
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --dump %s/a.safetensors", tc_bin(), dir, base, tmp), 0);
    tc_write_text(cond, "{\"name\": \"noop\", \"pe_zero\": [], \"pe_copy_from\": [0, 0], \"pe_copy_to\": []}");
    int rc = tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s --dump %s/b.safetensors", tc_bin(), dir, base, cond, tmp);
    if (rc) fail_msg("%s", buf);
    tc_write_text(cond, "{\"name\": \"corners\", \"pe_copy_from\": [0, -1], \"pe_copy_to\": \"corners\", \"pe_zero\": [[0, -1]]}");
    rc = tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s --dump %s/c.safetensors", tc_bin(), dir, base, cond, tmp);
    if (rc) fail_msg("%s", buf);
    size_t na, nb, nc;
    float *a = tc_load(tc_join(tmp, "a.safetensors"), "image", &na, NULL, NULL);
    float *b = tc_load(tc_join(tmp, "b.safetensors"), "image", &nb, NULL, NULL);
    float *c = tc_load(tc_join(tmp, "c.safetensors"), "image", &nc, NULL, NULL);
    assert_non_null(a), assert_non_null(b), assert_non_null(c);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    printf("  generate SD3: empty edit bit-identical; corners edit moves the image by rel L2 %.3e\n", tc_rel_l2(c, a, na));
    assert_true(tc_rel_l2(c, a, na) > 1e-4);
    free(a), free(b), free(c);
    tc_write_text(cond, "{\"name\": \"sm\", \"pe_zero\": \"smiley\"}");
    rc = tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s --dump %s/d.safetensors", tc_bin(), dir, base, cond, tmp);
    printf("  generate smiley on a small grid -> %s", buf);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, cond));
    assert_non_null(strstr(buf, "field 'pe_zero' = \"smiley\""));
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_diffusers), cmocka_unit_test(test_noop_bit_identical),
        cmocka_unit_test(test_json_round_trip),   cmocka_unit_test(test_errors),
        cmocka_unit_test(test_cli),               cmocka_unit_test(test_sink_moves),
        cmocka_unit_test(test_generate_sd3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
