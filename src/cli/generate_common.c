/* What `sinkscope generate` does alike on every diffusers pipeline family (generate_common.h). */
#include "cli/generate_common.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nn/dnnl.h"
#include "core/err.h"
#include "io/fsutil.h"
#include "io/pathcheck.h"
#include "io/png.h"
#include "sample/pipeline.h" /* SINKSCOPE_VERSION */
#include "sink/abspe.h"

static int fail2(void) {
    fprintf(stderr, "sinkscope generate: %s\n", ss_err());
    return 2;
}

int gen_parse(gen_cmd *g, int argc, char **argv, const gen_family *fam, const cli_opt *extra, int n_extra) {
    memset(g, 0, sizeof *g);
    g->seed_s = "0";
    g->B = 1;
    cli_opt opts[22 + GEN_MAX_EXTRA] = {
        {"model", &g->model, NULL},       {"prompt", &g->prompt, NULL},
        {"prompts", &g->prompts, NULL},   {"out", &g->out, NULL},
        {"seed", &g->seed_s, NULL},       {"steps", &g->steps_s, NULL},
        {fam->scale, &g->scale_s, NULL},  {"height", &g->height_s, NULL},
        {"width", &g->width_s, NULL},     {"max-sequence-length", &g->msl_s, NULL},
        {"latents", &g->latents, NULL},   {"save-latents", &g->save_latents, NULL},
        {"dump", &g->dump, NULL},         {"condition", &g->condition, NULL},
        {"threads", &g->threads, NULL},   {"probe", &g->probe_s, NULL},
        {"spiral", &g->spiral_s, NULL},   {"stats", &g->stats_s, NULL},
        {"scheduler", &g->scheduler, NULL}, {"precision", &g->precision, NULL}};
    int n = 20;
    if (fam->negative) opts[n++] = (cli_opt){"negative-prompt", &g->negative, NULL};
    for (int i = 0; i < n_extra && i < GEN_MAX_EXTRA; i++) opts[n++] = extra[i];
    const int pr = cli_parse(argc, argv, opts, n, fam->usage);
    if (pr) return pr > 0 ? 0 : 2;
    if (!g->model || (!g->prompt == !g->prompts) || (!g->out && !g->dump && !g->save_latents)) {
        fprintf(stderr, "sinkscope generate: --model, one of --prompt / --prompts, and --out (or --dump / --save-latents) "
                        "are required\n%s", fam->usage);
        return 2;
    }
    g->steps = fam->steps, g->msl = fam->msl, g->scale = fam->scale_default;
    if (cli_int("generate", "seed", g->seed_s, 0, 0x7fffffffffffffffL, &g->seed) ||
        (g->steps_s && cli_int("generate", "steps", g->steps_s, 1, 10000, &g->steps)) ||
        (g->scale_s && cli_double("generate", fam->scale, g->scale_s, fam->scale_lo, 1000, &g->scale)) ||
        (g->height_s && cli_int("generate", "height", g->height_s, 1, 16384, &g->height)) ||
        (g->width_s && cli_int("generate", "width", g->width_s, 1, 16384, &g->width)) ||
        (g->msl_s && cli_int("generate", "max-sequence-length", g->msl_s, 1, fam->msl_max, &g->msl)))
        return 2;
    return -1;
}

int gen_check_scheduler(const char *s) {
    if (s && strcmp(s, "default") && strcmp(s, "euler") && strcmp(s, "dpm++")) {
        fprintf(stderr, "sinkscope generate: --scheduler must be default, euler or dpm++, not '%s'\n", s);
        return -1;
    }
    return 0;
}

int gen_parse_finish(gen_cmd *g) {
    if (gen_probe_parse(&g->gp, g->probe_s, g->spiral_s, g->stats_s, g->out) < 0) return fail2();
    if (gen_check_scheduler(g->scheduler) < 0) return 2;
    g->tprec = SS_PREC_F32;
    if (g->precision && ss_precision_parse(g->precision, &g->tprec) < 0) {
        fprintf(stderr, "sinkscope generate: --precision: %s\n", ss_err());
        return 2;
    }
    g->gp.precision = g->precision;
    g->gp.scheduler = g->scheduler; /* recorded only when given: runs without it write what they wrote before */
    if (g->threads) {
        long nt;
        if (cli_int("generate", "threads", g->threads, 1, 4096, &nt)) return 2;
        omp_set_num_threads((int)nt);
    }
    /* no output over an input, nor two outputs on one file */
    const pc_file ins[] = {{"--condition", g->condition}, {"--latents", g->latents}, {"--prompts", g->prompts}};
    const char *outs[4][2] = {{"--out", g->out}, {"--save-latents", g->save_latents}, {"--dump", g->dump},
                              {g->gp.stats == g->gp.def ? "--stats (default)" : "--stats", g->gp.stats}};
    for (int i = 0; i < 4; i++) {
        if (!outs[i][1]) continue;
        if (pc_check_output(outs[i][0], outs[i][1], ins, 3) ||
            pc_check_output_tree(outs[i][0], outs[i][1], "--model", g->model, pc_is_model_file))
            return fail2();
        for (int j = 0; j < i; j++)
            if (outs[j][1] && pc_check_outputs_differ(outs[j][0], outs[j][1], outs[i][0], outs[i][1])) return fail2();
    }
    return -1;
}

int gen_read_prompts(gen_cmd *g) {
    if (!g->prompts) {
        g->plist[0] = (char *)g->prompt;
        g->B = 1;
        return 0;
    }
    size_t len;
    int rc;
    if ((rc = ss_read_file(g->prompts, (size_t)1 << 24, "prompts", &g->pbuf, &len)) < 0) return rc;
    if ((rc = gen_split_lines(g->pbuf, g->prompts, g->plist, GEN_MAX_PROMPTS)) < 0) return rc;
    g->B = rc;
    return 0;
}

int gen_load_condition(gen_cmd *g) {
    if (!g->condition) return 0;
    int rc;
    if ((rc = sink_condition_load(&g->cond, g->condition)) < 0) return rc;
    g->has_cond = 1;
    json_t *cj = sink_condition_to_json(&g->cond);
    g->cond_json = json_dumps(cj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(cj);
    return g->cond_json ? 0 : ss_fail(SS_ENOMEM, "out of memory");
}

int gen_set_condition(gen_cmd *g, const ss_site *sites, int ns, int num_layers, const char *blocks, int resolve,
                      int pe_h, int pe_w, const char *cls) {
    if (!g->has_cond) return 0;
    sink_condition *c = &g->cond;
    int rc;
    for (int i = 0; i < c->n_layers - c->n_from_sites; i++) /* before resolve binds them to sites */
        if (c->layers[i] >= num_layers)
            return ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d %s", g->condition,
                           c->layers[i], num_layers, blocks);
    if ((resolve && (rc = sink_condition_resolve(c, sites, ns, g->condition)) < 0) ||
        (rc = sink_condition_check_sites(c, sites, ns, g->condition)) < 0 ||
        (rc = sink_condition_check_pe(c, pe_h, pe_w, cls, g->condition)) < 0)
        return rc;
    if (!(g->sk = sink_ctx_new())) return ss_fail(SS_ENOMEM, "out of memory");
    sink_ctx_set_condition(g->sk, c);
    return 0;
}

int gen_open_dump(gen_cmd *g) {
    if (g->dump && !(g->dw = st_writer_new())) return ss_fail(SS_ENOMEM, "out of memory");
    return 0;
}

int gen_dump_add(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape) {
    return st_writer_add_f32(ctx, name, ST_F32, ndim, shape, x);
}

void gen_progress(void *ctx, int step, int steps) {
    (void)ctx;
    fprintf(stderr, "\rsinkscope generate: step %d/%d", step + 1, steps);
    if (step + 1 == steps) fputc('\n', stderr);
}

int gen_write_outputs(gen_cmd *g, const float *lat, int C, int h, int w, int BB, const char *negative, int steps) {
    int rc;
    if (g->save_latents && (rc = gen_save_latents(g->save_latents, g->B, C, h, w, lat)) < 0) return rc;
    if (g->dw && (rc = st_writer_save(g->dw, g->dump)) < 0) return rc;
    if (!g->gp.on) return 0;
    const char *bp[2 * GEN_MAX_PROMPTS];
    for (int b = 0; b < BB; b++) bp[b] = BB > g->B && b < g->B ? negative : g->plist[b % g->B];
    return gen_probe_save(&g->gp, g->sk, g->model, bp, BB, steps, g->cond_json);
}

void gen_format_double(char *buf, size_t cap, double x) {
    for (int prec = 1; prec <= 17; prec++) { /* shortest text that reads back as the same double */
        snprintf(buf, cap, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
}

int gen_write_pngs(const gen_cmd *g, const float *img, int H, int W, int steps, const char *scale_key,
                   const char *scale_text, const char *fixed_sched) {
    if (!g->out) return 0;
    uint8_t *rgb = malloc((size_t)H * W * 3);
    if (!rgb) return ss_fail(SS_ENOMEM, "out of memory");
    char seed_v[32], steps_v[32], path[4200];
    snprintf(seed_v, sizeof seed_v, "%lld", (long long)g->seed);
    snprintf(steps_v, sizeof steps_v, "%d", steps);
    int rc = 0;
    for (int b = 0; b < g->B && rc >= 0; b++) {
        const float *ib = img + (size_t)b * H * W * 3;
        for (size_t i = 0; i < (size_t)H * W * 3; i++) rgb[i] = (uint8_t)nearbyintf(ib[i] * 255.0f);
        gen_png_name(path, sizeof path, g->out, b, g->B);
        const char *kv[20] = {"prompt", g->plist[b], "seed", seed_v, "steps", steps_v, scale_key, scale_text,
                              "model", g->model, "latents", g->latents ? g->latents : "seeded"};
        int nkv = 6;
        if (fixed_sched) kv[2 * nkv] = "scheduler", kv[2 * nkv + 1] = fixed_sched, nkv++;
        kv[2 * nkv] = "Software", kv[2 * nkv + 1] = "sinkscope " SINKSCOPE_VERSION, nkv++;
        if (!fixed_sched && g->scheduler) kv[2 * nkv] = "scheduler", kv[2 * nkv + 1] = g->scheduler, nkv++;
        if (g->precision) kv[2 * nkv] = "precision", kv[2 * nkv + 1] = g->precision, nkv++;
        if (g->cond_json) kv[2 * nkv] = "condition", kv[2 * nkv + 1] = g->cond_json, nkv++;
        rc = png_write_rgb(path, W, H, rgb, kv, nkv);
    }
    free(rgb);
    return rc < 0 ? rc : 0;
}

int gen_end(gen_cmd *g, int rc) {
    if (rc < 0) fprintf(stderr, "sinkscope generate: %s\n", ss_err());
    st_writer_free(g->dw);
    free(g->cond_json), free(g->pbuf);
    sink_ctx_free(g->sk);
    return rc < 0 ? 1 : 0;
}

int gen_split_lines(char *buf, const char *path, char **out, int max) {
    int n = 0;
    for (char *s = buf; *s;) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        size_t len = strlen(s);
        if (len && s[len - 1] == '\r') s[--len] = 0;
        if (len) {
            if (n == max) return ss_fail(SS_EARG, "%s: more than %d prompts", path, max);
            out[n++] = s;
        }
        if (!e) break;
        s = e + 1;
    }
    if (!n) return ss_fail(SS_EARG, "%s: no prompt in the file", path);
    return n;
}

int gen_read_latents(const char *path, int B, int C, int h, int w, float *dst) {
    st_file *f;
    int rc = st_open(&f, path);
    if (rc < 0) return rc;
    const st_tensor *t = st_find(f, "latents");
    if (!t)
        rc = ss_fail(SS_EMISSING, "%s: tensor 'latents' is missing", path);
    else if (t->ndim != 4 || t->shape[0] != B || t->shape[1] != C || t->shape[2] != h || t->shape[3] != w)
        rc = ss_fail(SS_ESHAPE, "%s: 'latents' must be [%d, %d, %d, %d] for %d prompt(s) at this image size", path, B, C, h, w, B);
    else if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        rc = ss_fail(SS_EFORMAT, "%s: 'latents' is %s, expected a float tensor", path, st_dtype_name(t->dtype));
    else if (st_to_f32(dst, t) < 0)
        rc = SS_EFORMAT;
    st_close(f);
    return rc;
}

int gen_save_latents(const char *path, int B, int C, int h, int w, const float *x) {
    st_writer *sw = st_writer_new();
    const int64_t shp[4] = {B, C, h, w};
    int rc = sw ? st_writer_add_f32(sw, "latents", ST_F32, 4, shp, x) : ss_fail(SS_ENOMEM, "out of memory");
    if (rc >= 0) rc = st_writer_save(sw, path);
    st_writer_free(sw);
    return rc;
}

void gen_png_name(char *buf, size_t cap, const char *out, int b, int B) {
    if (B == 1) {
        snprintf(buf, cap, "%s", out);
        return;
    }
    const size_t n = strlen(out);
    const int ext = n > 4 && !strcasecmp(out + n - 4, ".png");
    snprintf(buf, cap, "%.*s-%d.png", (int)(ext ? n - 4 : n), out, b);
}
