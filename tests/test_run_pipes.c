/* sinkscope run / report on diffusers pipeline folders through the pipeline table
 * (src/sample/pipes.h): detection on every fixture; `run` on sd3-pipeline-tiny and a FluxPipeline
 * folder (baseline + one top-1 removal, the default probe, 2 prompts x 2 seeds) makes, for every
 * record, the very image `sinkscope generate` writes for that prompt, seed and condition; the
 * records' top-1 key types are the tokenizers' types of the keys; a resume after losing the last
 * record line makes exactly that item again; the report reads the experiment (per-site rows);
 * an unknown pipeline class is refused naming the file and the class. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "nn/dnnl.h"
#include "core/err.h"
#include "exp/runner.h"
#include "io/png.h"
#include "models/flux.h"
#include "models/pixart.h"
#include "models/sd3.h"
#include "sample/fluxpipe.h"
#include "sample/pipeline.h"
#include "sample/pipes.h"
#include "sample/pixartpipe.h"
#include "sample/sd3pipe.h"

#define SD3_DIR "fixtures/sd3-pipeline-tiny"
#define FLUX_DIR "fixtures/flux-pipeline/dev-b2-16x24-t16"

static const char *const PROMPTS[2] = {"a photo of a red cat", "two dogs, a ball"};
static const char TOP1[] = "{\"name\": \"top1\", \"layers\": [1], \"select\": \"topk\", \"k\": 1, \"queries\": \"image\", "
                           "\"path\": \"score\", \"eta\": 0.0}";

/* ---- the table ---- */

static void test_detect(void **st) {
    (void)st;
    static const struct {
        const char *dir, *cls;
    } F[] = {{SD3_DIR, SD3PIPE_CLASS_NAME},
             {"fixtures/sd3-pipeline-variants/cfg1-b3-t16", SD3PIPE_CLASS_NAME},
             {"fixtures/sd3-pipeline-variants/no-t5-vae3-neg", SD3PIPE_CLASS_NAME},
             {"fixtures/flux-pipeline/dev-b2-16x24-t16", FLUXPIPE_CLASS_NAME},
             {"fixtures/flux-pipeline/schnell-b1-24x8-t12", FLUXPIPE_CLASS_NAME},
             {"fixtures/flux-pipeline/dev-vae4-b3-t8", FLUXPIPE_CLASS_NAME},
             {"fixtures/pixart-pipeline/bin256-sigma", PIXARTPIPE_CLASS_NAME},
             {"fixtures/pixart-pipeline/addcond-nobin", PIXARTPIPE_CLASS_NAME}};
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) {
        const ss_pipe_kind *k = NULL;
        if (ss_pipe_detect(tc_path("%s", F[i].dir), &k) < 0) fail_msg("%s: %s", F[i].dir, ss_err());
        assert_non_null(k);
        assert_string_equal(k->class_name, F[i].cls);
        assert_ptr_equal(ss_pipe_find(F[i].cls), k);
    }
    /* the embedded model, and folders the pixel loader then reports on */
    const ss_pipe_kind *k = NULL;
    assert_int_equal(ss_pipe_detect("models/shapeworld", &k), 0);
    assert_string_equal(k->class_name, PIPE_CLASS_NAME);
    assert_int_equal(ss_pipe_detect("/nonexistent/folder", &k), 0);
    assert_string_equal(k->class_name, PIPE_CLASS_NAME);
    ss_pipe *p = NULL;
    assert_true(ss_pipe_open(&p, "/nonexistent/folder", SS_PREC_F32, 0) < 0);
    assert_null(p);
    assert_non_null(strstr(ss_err(), "/nonexistent/folder"));
    assert_null(ss_pipe_find("FooPipeline"));
    /* every entry is complete, and the known classes are listed */
    char list[512];
    ss_pipe_class_list(list, sizeof list);
    assert_non_null(strstr(list, "StableDiffusion3Pipeline, FluxPipeline, "));
    assert_non_null(strstr(list, PIPE_CLASS_NAME));
    int n = 0;
    for (; ss_pipe_kinds[n]; n++) {
        const ss_pipe_kind *e = ss_pipe_kinds[n];
        assert_non_null(e->load), assert_non_null(e->free), assert_non_null(e->image_size), assert_non_null(e->sites);
        assert_non_null(e->pos_grid), assert_non_null(e->text_types), assert_non_null(e->generate);
        assert_true(!e->ws_new == !e->ws_free);
        /* the encoder stage: all of its entries or none (the pixel pipeline) */
        const int stage = !!e->encode_text;
        assert_int_equal(!!e->text_dims, stage), assert_int_equal(!!e->release_encoders, stage);
        assert_int_equal(!!e->load_transformer, stage), assert_int_equal(!!e->generate_emb, stage);
        assert_int_equal(stage, !!e->tokenizer_types);
        assert_true(e->default_steps >= 1);
        assert_non_null(strstr(list, e->class_name));
    }
    assert_true(n >= 3);
}

/* The table's sites, text types and image size are the pipelines' own. */
static void test_table_ops(void **st) {
    (void)st;
    ss_pipe *p;
    if (ss_pipe_open(&p, tc_path(SD3_DIR), SS_PREC_F32, 0) < 0) fail_msg("%s", ss_err());
    ss_pipe_params q;
    ss_pipe_params_default(&q, p->kind);
    assert_int_equal(q.steps, 28);
    q.prompt = PROMPTS[1];
    int H, W;
    assert_int_equal(p->kind->image_size(p->impl, &q, &H, &W), 0);
    const sd3pipe *sp = p->impl;
    const int f = vae_factor(sp->vae);
    assert_int_equal(H, sp->tcfg.sample_size * f), assert_int_equal(W, sp->tcfg.sample_size * f);
    ss_site sites[SS_PIPE_MAX_SITES];
    const int ns = p->kind->sites(p->impl, &q, H, W, sites, SS_PIPE_MAX_SITES);
    int n_dual = 0;
    for (int i = 0; i < sp->tcfg.num_layers; i++) n_dual += sp->tcfg.dual[i] != 0;
    assert_int_equal(ns, sp->tcfg.num_layers + n_dual);
    assert_int_equal(ss_pipe_layer_count(p->kind, sites, ns), sp->tcfg.num_layers);
    const int S = p->kind->text_types(p->impl, &q, NULL, 0);
    assert_int_equal(S, sp->clip_len + SD3PIPE_DEFAULT_MAX_SEQ);
    assert_int_equal(sites[0].kspan[1].len, S);
    uint8_t *ty = malloc((size_t)S), *want = malloc((size_t)S);
    assert_int_equal(p->kind->text_types(p->impl, &q, ty, S), S);
    sd3pipe_params s;
    sd3pipe_params_default(&s);
    s.prompts = &q.prompt, s.n_prompts = 1, s.cfg = 1.0;
    assert_int_equal(sd3pipe_text_types(sp, &s, want), 0);
    assert_memory_equal(ty, want, (size_t)S);
    assert_int_equal(ty[0], SS_TOK_BOS); /* CLIP's BOS, a comma and pads are typed, not placed */
    assert_non_null(memchr(ty, SS_TOK_COMMA, (size_t)S));
    assert_int_equal(ty[S - 1], SS_TOK_PAD);
    assert_true(p->kind->text_types(p->impl, &q, ty, S - 1) < 0); /* no room */
    q.prompt = NULL;
    assert_true(p->kind->text_types(p->impl, &q, ty, S) < 0);
    assert_non_null(strstr(ss_err(), "no prompt"));
    uint8_t rgb[3];
    assert_true(p->kind->generate(p->impl, &q, rgb, NULL, NULL) < 0);
    assert_non_null(strstr(ss_err(), "no prompt"));
    free(ty), free(want);
    ss_pipe_close(p);

    /* the ShapeWorld pipeline: the word tokenizer's layout (words, <eos>, <pad>), its sites */
    if (ss_pipe_open(&p, "models/shapeworld", SS_PREC_F32, 0) < 0) fail_msg("%s", ss_err());
    ss_pipe_params_default(&q, p->kind);
    assert_int_equal(q.steps, PIPE_DEFAULT_STEPS);
    q.prompt = "a photo of a circle";
    const int Sp = p->kind->text_types(p->impl, &q, NULL, 0);
    const pipeline *pp = p->impl;
    assert_int_equal(Sp, pp->text_encoder->cfg.max_length);
    uint8_t *tp = malloc((size_t)Sp);
    assert_int_equal(p->kind->text_types(p->impl, &q, tp, Sp), Sp);
    for (int j = 0; j < Sp; j++) assert_int_equal(tp[j], j < 5 ? SS_TOK_WORD : j == 5 ? SS_TOK_EOS : SS_TOK_PAD);
    q.prompt = "a photo of a zebra"; /* not in the vocabulary */
    assert_true(p->kind->text_types(p->impl, &q, tp, Sp) < 0);
    assert_non_null(strstr(ss_err(), "zebra"));
    free(tp);
    assert_int_equal(p->kind->image_size(p->impl, &q, &H, &W), 0);
    assert_int_equal(p->kind->sites(p->impl, &q, H, W, sites, SS_PIPE_MAX_SITES), pp->transformer->cfg.num_layers);
    ss_pipe_close(p);

    if (ss_pipe_open(&p, tc_path(FLUX_DIR), SS_PREC_F32, 0) < 0) fail_msg("%s", ss_err());
    assert_int_equal(p->kind->layer_kind, SS_SITE_DOUBLE);
    ss_pipe_params_default(&q, p->kind);
    q.prompt = PROMPTS[0], q.width = 24, q.height = 16, q.max_sequence_length = 16;
    assert_int_equal(p->kind->image_size(p->impl, &q, &H, &W), 0);
    assert_int_equal(H, 16), assert_int_equal(W, 24);
    const fluxpipe *fp = p->impl;
    const int nf = p->kind->sites(p->impl, &q, H, W, sites, SS_PIPE_MAX_SITES);
    assert_int_equal(nf, fp->tcfg.num_layers + fp->tcfg.num_single_layers);
    assert_int_equal(ss_pipe_layer_count(p->kind, sites, nf), fp->tcfg.num_layers);
    assert_int_equal(sites[0].kspan[0].type, SS_TOK_TEXT); /* text first */
    assert_int_equal(p->kind->text_types(p->impl, &q, NULL, 0), 16);
    int rows = -1, cols = -1;
    p->kind->pos_grid(p->impl, H, W, &rows, &cols);
    assert_int_equal(rows, 0), assert_int_equal(cols, 0);
    q.prompt = NULL;
    uint8_t one[3];
    assert_true(p->kind->generate(p->impl, &q, one, NULL, NULL) < 0);
    assert_non_null(strstr(ss_err(), "no prompt"));
    q.width = 25; /* not a multiple of 2 x the VAE factor */
    assert_true(p->kind->image_size(p->impl, &q, &H, &W) < 0);
    ss_pipe_close(p);
}

/* ---- run on pipeline folders ---- */

/* Raw pixels of a PNG. */
static uint8_t *pixels(const char *path, int *w, int *h) {
    uint8_t *px = NULL;
    if (png_read_rgb(path, w, h, &px) < 0) fail_msg("%s", ss_err());
    return px;
}

/* Remove the last line of EXP/records.jsonl (as a crash before its write completed would) and
 * return that record, parsed. */
static json_t *drop_last_record(const char *exp) {
    const char *rp = tc_join(exp, "records.jsonl");
    size_t len;
    char *all = tc_read_all(rp, &len);
    assert_non_null(all);
    char *last = all + len - 1;
    while (last > all && last[-1] != '\n') last--;
    json_t *lost = json_loads(last, 0, NULL);
    assert_non_null(lost);
    *last = 0;
    assert_int_equal(tc_write_text(rp, all), 0);
    free(all);
    return lost;
}

static json_t *read_records(const char *path, int *n) {
    char *b = tc_read_all(path, NULL);
    assert_non_null(b);
    json_t *a = json_array();
    char *save = NULL;
    for (char *l = strtok_r(b, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *r = json_loads(l, 0, &je);
        if (!r) fail_msg("%s: %s", path, je.text);
        json_array_append_new(a, r);
    }
    free(b);
    *n = (int)json_array_size(a);
    return a;
}

/* Expected top-1 key type shares of a probe entry from the sites and the prompt's tokenizer types. */
static void check_types(json_t *e, const ss_site *sites, int ns, const uint8_t *ty, int S, int *n_text) {
    json_t *sn = json_object_get(e, "site");
    const int code = json_is_string(sn) ? ss_site_code_parse(json_string_value(sn)) : (int)json_integer_value(json_object_get(e, "block"));
    const ss_site *s = ss_site_find(sites, ns, code);
    assert_non_null(s);
    json_t *keys = json_object_get(e, "top1_keys");
    const int H = (int)json_array_size(keys);
    assert_true(H > 0);
    int cnt[SS_TOK_N] = {0};
    for (int h = 0; h < H; h++) {
        const int j = (int)json_integer_value(json_array_get(keys, h));
        ss_tok t = SS_TOK_IMAGE;
        for (int i = 0; i < s->n_kspan; i++)
            if (j >= s->kspan[i].start && j < s->kspan[i].start + s->kspan[i].len && s->kspan[i].type != SS_TOK_IMAGE) {
                assert_true(j - s->kspan[i].start < S);
                t = (ss_tok)ty[j - s->kspan[i].start];
            }
        cnt[t]++;
    }
    static const struct {
        const char *f;
        ss_tok t;
    } F[] = {{"top1_is_word", SS_TOK_WORD}, {"top1_is_eos", SS_TOK_EOS}, {"top1_is_pad", SS_TOK_PAD},
             {"top1_is_comma", SS_TOK_COMMA}, {"top1_is_bos", SS_TOK_BOS}};
    double text = 0;
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) {
        json_t *v = json_object_get(e, F[i].f);
        if (!json_is_number(v)) fail_msg("probe entry without %s", F[i].f);
        assert_true(fabs(json_number_value(v) - (double)cnt[F[i].t] / H) < 1e-12);
        text += json_number_value(v);
        *n_text += cnt[F[i].t];
    }
    text += json_number_value(json_object_get(e, "top1_is_other"));
    assert_true(fabs(text - json_number_value(json_object_get(e, "top1_is_text"))) < 1e-9);
}

enum { FAM_SD3, FAM_FLUX, FAM_PIXART };
typedef struct {
    const char *dir;   /* fixture, under tests/ */
    const char *size;  /* run and generate options for the image size */
    int msl;           /* T5 tokens (the pipeline's default: generate uses it too) */
    int kind;          /* FAM_* */
    const char *probe; /* run's --probe option ("" for the default blocks) */
} family;

static void run_family(const family *fam) {
    char *tmp = tc_tmpdir(), out[16384];
    char model[1024];
    snprintf(model, sizeof model, "%s", tc_path("%s", fam->dir));
    char exp[1024], prompts[1024], conds[1024], cond1[1024];
    snprintf(exp, sizeof exp, "%s/exp", tmp);
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", tmp);
    snprintf(conds, sizeof conds, "%s/conds.json", tmp);
    snprintf(cond1, sizeof cond1, "%s/top1.json", tmp);
    char text[256], list[1024];
    snprintf(text, sizeof text, "%s\n%s\n", PROMPTS[0], PROMPTS[1]);
    snprintf(list, sizeof list, "[{\"name\": \"baseline\", \"layers\": []}, %s]", TOP1);
    assert_int_equal(tc_write_text(prompts, text), 0);
    assert_int_equal(tc_write_text(conds, list), 0);
    assert_int_equal(tc_write_text(cond1, TOP1), 0);
    const int flux = fam->kind == FAM_FLUX, pixart = fam->kind == FAM_PIXART;
    const char *run_fmt = "%s run --exp '%s' --model '%s' --prompts '%s' --conditions '%s' --seeds 2 --steps 3 --jobs 2 %s %s --quiet";
    int rc = tc_run(out, sizeof out, run_fmt, tc_bin(), exp, model, prompts, conds, fam->size, fam->probe);
    if (rc) fail_msg("run: %s", out);
    int n;
    json_t *recs = read_records(tc_join(exp, "records.jsonl"), &n);
    assert_int_equal(n, 2 * 2 * 2);
    /* experiment.json: the class and, for FLUX, the double blocks the probe names */
    json_error_t je;
    json_t *ej = json_load_file(tc_join(exp, "experiment.json"), 0, &je);
    assert_non_null(ej);
    assert_string_equal(json_string_value(json_object_get(ej, "model_class")),
                        flux ? FLUXPIPE_CLASS_NAME : pixart ? PIXARTPIPE_CLASS_NAME : SD3PIPE_CLASS_NAME);
    assert_int_equal(json_integer_value(json_object_get(ej, "text_tokens")), fam->msl + (fam->kind == FAM_SD3 ? 77 : 0));
    json_t *probe = json_object_get(ej, "probe");
    assert_non_null(json_object_get(probe, fam->kind == FAM_SD3 ? "blocks" : "sites"));
    json_decref(ej);

    /* the sites and every prompt's tokenizer types, straight from the pipelines */
    ss_site sites[SS_PIPE_MAX_SITES];
    int ns, S = fam->msl + (fam->kind == FAM_SD3 ? 77 : 0);
    uint8_t *types = malloc((size_t)2 * S);
    if (pixart) { /* 48 x 40 is binned to 272 x 224 (the 256 table) */
        pixartpipe *pp;
        if (pixartpipe_load_opts(&pp, model, PIXARTPIPE_DEFER_TRANSFORMER) < 0) fail_msg("%s", ss_err());
        const int m = vae_factor(pp->vae) * pp->tcfg.patch_size;
        ns = pixart_sites(&pp->tcfg, (272 / m) * (224 / m), S, sites, SS_PIPE_MAX_SITES);
        for (int i = 0; i < 2; i++) {
            pixartpipe_params q;
            pixartpipe_params_default(&q);
            q.prompts = &PROMPTS[i], q.n_prompts = 1, q.cfg = 1.0;
            assert_int_equal(pixartpipe_text_types(pp, &q, types + (size_t)i * S), 0);
        }
        pixartpipe_free(pp);
    } else if (flux) {
        fluxpipe *fp;
        if (fluxpipe_load_opts(&fp, model, FLUXPIPE_DEFER_TRANSFORMER) < 0) fail_msg("%s", ss_err());
        int h, w, N, C;
        fluxpipe_latent_shape(fp, 16, 24, &h, &w, &N, &C);
        ns = flux_sites(&fp->tcfg, N, S, sites, SS_PIPE_MAX_SITES);
        for (int i = 0; i < 2; i++) {
            fluxpipe_params q;
            fluxpipe_params_default(&q);
            q.prompts = &PROMPTS[i], q.n_prompts = 1, q.max_sequence_length = fam->msl;
            assert_int_equal(fluxpipe_text_types(fp, &q, types + (size_t)i * S), 0);
        }
        fluxpipe_free(fp);
    } else {
        sd3pipe *sp;
        if (sd3pipe_load_opts(&sp, model, SD3PIPE_DEFER_TRANSFORMER) < 0) fail_msg("%s", ss_err());
        assert_int_equal(sp->clip_len, 77);
        const int f = vae_factor(sp->vae), g = sp->tcfg.sample_size / sp->tcfg.patch_size;
        (void)f;
        ns = sd3_sites(&sp->tcfg, g * g, S, sites, SS_PIPE_MAX_SITES);
        for (int i = 0; i < 2; i++) {
            sd3pipe_params q;
            sd3pipe_params_default(&q);
            q.prompts = &PROMPTS[i], q.n_prompts = 1, q.cfg = 1.0;
            assert_int_equal(sd3pipe_text_types(sp, &q, types + (size_t)i * S), 0);
        }
        sd3pipe_free(sp);
    }

    int n_text = 0, n_entries = 0;
    for (int i = 0; i < n; i++) {
        json_t *r = json_array_get(recs, (size_t)i);
        const int p = (int)json_integer_value(json_object_get(r, "prompt_index"));
        const long long seed = json_integer_value(json_object_get(r, "seed"));
        const char *cond = json_string_value(json_object_get(r, "condition"));
        assert_string_equal(json_string_value(json_object_get(r, "prompt")), PROMPTS[p]);
        /* the probe ran on every image; its key types are the tokenizer's */
        json_t *pr = json_object_get(r, "probe");
        assert_true(json_array_size(pr) >= 2 * 3); /* two blocks, three steps */
        for (size_t k = 0; k < json_array_size(pr); k++, n_entries++)
            check_types(json_array_get(pr, k), sites, ns, types + (size_t)p * S, S, &n_text);
        if (strcmp(cond, "baseline")) assert_true(json_array_size(json_object_get(r, "verification")) > 0);
        /* generate's image for the same prompt, seed and condition, bit for bit */
        char png[1200];
        snprintf(png, sizeof png, "%s/gen.png", tmp);
        rc = tc_run(out, sizeof out, "%s generate --model '%s' --prompt '%s' --seed %lld --steps 3 %s %s%s%s --out '%s'", tc_bin(),
                    model, PROMPTS[p], seed, flux ? "--guidance 3.5" : pixart ? "--cfg 4.5" : "--cfg 7", fam->size,
                    strcmp(cond, "baseline") ? " --condition " : "", strcmp(cond, "baseline") ? cond1 : "", png);
        if (rc) fail_msg("generate: %s", out);
        int w1, h1, w2, h2;
        uint8_t *a = pixels(png, &w1, &h1), *b = pixels(tc_join(exp, "%s", json_string_value(json_object_get(r, "image"))), &w2, &h2);
        assert_int_equal(w1, w2), assert_int_equal(h1, h2);
        if (flux) assert_int_equal(w1, 24), assert_int_equal(h1, 16);
        if (pixart) assert_int_equal(w1, 40), assert_int_equal(h1, 48);
        if (memcmp(a, b, (size_t)w1 * h1 * 3)) fail_msg("%s: the run's image differs from generate's", json_string_value(json_object_get(r, "key")));
        free(a), free(b);
    }
    printf("  %s: %d records, %d probe entries, %d top-1 keys on text\n", fam->dir, n, n_entries, n_text);
    assert_true(n_text > 0); /* the type shares were exercised */
    free(types);

    /* resume after losing the last record line: exactly that item is made again */
    json_t *lost = drop_last_record(exp);
    const char *rp = tc_join(exp, "records.jsonl");
    rc = tc_run(out, sizeof out, run_fmt, tc_bin(), exp, model, prompts, conds, fam->size, fam->probe);
    if (rc) fail_msg("resume: %s", out);
    assert_non_null(strstr(out, "(1 new, 7 already done)"));
    json_decref(recs);
    recs = read_records(rp, &n);
    assert_int_equal(n, 8);
    json_t *again = json_array_get(recs, 7);
    assert_string_equal(json_string_value(json_object_get(again, "key")), json_string_value(json_object_get(lost, "key")));
    assert_string_equal(json_string_value(json_object_get(again, "image_sha256")),
                        json_string_value(json_object_get(lost, "image_sha256")));
    assert_true(json_equal(json_object_get(again, "probe"), json_object_get(lost, "probe")));
    json_decref(lost);
    json_decref(recs);

    /* the report: paired rows and one sink-dynamics row per probed site */
    rc = tc_run(out, sizeof out, "%s report '%s'", tc_bin(), exp);
    if (rc) fail_msg("report: %s", out);
    assert_non_null(strstr(out, "top1"));
    assert_non_null(strstr(out, flux ? "double.1" : pixart ? "cross.1" : "Sink dynamics"));
    assert_int_equal(access(tc_join(exp, "report/summary.json"), F_OK), 0);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_run_sd3(void **st) {
    (void)st;
    const family f = {SD3_DIR, "", SD3PIPE_DEFAULT_MAX_SEQ, FAM_SD3, ""};
    run_family(&f);
}

static void test_run_flux(void **st) {
    (void)st;
    const family f = {FLUX_DIR, "--width 24 --height 16", FLUXPIPE_DEFAULT_MAX_SEQ, FAM_FLUX, ""};
    run_family(&f);
}

/* PixArt-alpha: a binned non-square size; every site probed (the cross sites hold the text keys) */
static void test_run_pixart(void **st) {
    (void)st;
    const family f = {"fixtures/pixart-pipeline/bin256-sigma", "--width 40 --height 48", PIXARTPIPE_DEFAULT_MAX_SEQ, FAM_PIXART,
                      "--probe all"};
    run_family(&f);
}

/* GenEval metadata on a diffusers folder: every record gets its tag, none a "geneval" verdict (the
 * ShapeWorld detector knows ShapeWorld scenes only) */
static void test_geneval_prompts_real_pipeline(void **st) {
    (void)st;
    char *tmp = tc_tmpdir(), out[8192], exp[1024];
    snprintf(exp, sizeof exp, "%s/gv", tmp);
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts data/geneval/evaluation_metadata.jsonl "
                    "--limit-prompts 2 --seeds 1 --steps 1 --conditions configs/presets/noop.json --quiet 2>&1", tc_bin(), exp,
                    tc_path(SD3_DIR));
    if (rc) fail_msg("run: %s", out);
    int n;
    json_t *recs = read_records(tc_join(exp, "records.jsonl"), &n);
    assert_int_equal(n, 4);
    for (int i = 0; i < n; i++) {
        json_t *r = json_array_get(recs, (size_t)i);
        assert_non_null(json_string_value(json_object_get(r, "tag")));
        assert_non_null(json_object_get(r, "metrics"));
        assert_null(json_object_get(json_object_get(r, "metrics"), "geneval"));
    }
    json_decref(recs);
    tc_rmtree(tmp);
    free(tmp);
}


/* ---- run's --negative-prompt and --max-sequence-length, as generate takes them ---- */

/* Pixels of `run`'s image of prompt 0, seed 0 (baseline) with `opts` and of `generate` with the same
 * options must be equal, and differ from generate's without them (so the options took effect). */
static void run_vs_generate(const char *dir, const char *size, const char *scale, const char *opts, const char *want_json) {
    char *tmp = tc_tmpdir(), out[16384], exp[1024], prompts[1024], png[1024], png0[1024], model[1024];
    snprintf(model, sizeof model, "%s", tc_path("%s", dir));
    snprintf(exp, sizeof exp, "%s/exp", tmp);
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", tmp);
    snprintf(png, sizeof png, "%s/gen.png", tmp);
    snprintf(png0, sizeof png0, "%s/gen0.png", tmp);
    assert_int_equal(tc_write_text(prompts, "a photo of a red cat\n"), 0);
    int rc = tc_run(out, sizeof out, "%s run --exp '%s' --model '%s' --prompts '%s' --preset baseline --steps 2 %s %s --quiet",
                    tc_bin(), exp, model, prompts, size, opts);
    if (rc) fail_msg("run: %s", out);
    rc = tc_run(out, sizeof out, "%s generate --model '%s' --prompt 'a photo of a red cat' --seed 0 --steps 2 %s %s %s --out '%s'",
                tc_bin(), model, scale, size, opts, png);
    if (rc) fail_msg("generate: %s", out);
    rc = tc_run(out, sizeof out, "%s generate --model '%s' --prompt 'a photo of a red cat' --seed 0 --steps 2 %s %s --out '%s'",
                tc_bin(), model, scale, size, png0);
    if (rc) fail_msg("generate: %s", out);
    int w1, h1, w2, h2, w3, h3;
    uint8_t *a = pixels(tc_join(exp, "images/baseline/00000_0.png"), &w1, &h1), *b = pixels(png, &w2, &h2),
            *c = pixels(png0, &w3, &h3);
    assert_int_equal(w1, w2), assert_int_equal(h1, h2), assert_int_equal(w1, w3), assert_int_equal(h1, h3);
    if (memcmp(a, b, (size_t)w1 * h1 * 3)) fail_msg("%s %s: run's image differs from generate's", dir, opts);
    if (!memcmp(b, c, (size_t)w1 * h1 * 3)) fail_msg("%s %s: the options changed nothing", dir, opts);
    free(a), free(b), free(c);
    char *ej = tc_read_all(tc_join(exp, "experiment.json"), NULL);
    assert_non_null(ej);
    if (!strstr(ej, want_json)) fail_msg("experiment.json has no %s", want_json);
    free(ej);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_run_options(void **st) {
    (void)st;
    run_vs_generate(SD3_DIR, "", "--cfg 7", "--negative-prompt 'blurry, low quality' --max-sequence-length 16",
                    "\"negative_prompt\": \"blurry, low quality\"");
    run_vs_generate(SD3_DIR, "", "--cfg 7", "--max-sequence-length 16", "\"text_tokens\": 93");
    run_vs_generate("fixtures/pixart-pipeline/bin256-sigma", "--width 40 --height 48", "--cfg 4.5",
                    "--negative-prompt 'blurry' --max-sequence-length 24", "\"text_tokens\": 24");
    run_vs_generate(FLUX_DIR, "--width 24 --height 16", "--guidance 3.5", "--max-sequence-length 8", "\"text_tokens\": 8");
    /* refused where the pipeline has no such input */
    char *tmp = tc_tmpdir(), out[8192];
    assert_int_equal(tc_write_text(tc_join(tmp, "p.txt"), "a circle\n"), 0);
    int rc = tc_run(out, sizeof out, "%s run --exp '%s/e1' --model '%s' --prompts '%s/p.txt' --negative-prompt blurry --width 24 "
                    "--height 16 --quiet", tc_bin(), tmp, tc_path(FLUX_DIR), tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "--negative-prompt: "));
    assert_non_null(strstr(out, "FluxPipeline takes no negative prompt"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e2' --model models/shapeworld --prompts '%s/p.txt' --max-sequence-length 8 "
                "--quiet", tc_bin(), tmp, tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "--max-sequence-length: models/shapeworld: a SinkscopePixelPipeline has no T5 encoder"));
    tc_rmtree(tmp);
    free(tmp);
}

/* ---- EXP/text_embeddings: one file per distinct text, reused on resume, damaged ones redone ---- */

static int count_files(const char *dir, long *size) {
    char cmd[2048], line[64];
    snprintf(cmd, sizeof cmd, "ls '%s' | wc -l; cat '%s'/*.f32 | wc -c", dir, dir);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    int n = -1;
    if (fgets(line, sizeof line, f)) n = atoi(line);
    if (fgets(line, sizeof line, f)) *size = atol(line);
    pclose(f);
    return n;
}

static void test_text_embeddings(void **st) {
    (void)st;
    char *tmp = tc_tmpdir(), out[16384], exp[1024], prompts[1024], model[1024], emb[1200], cmd[4096];
    snprintf(model, sizeof model, "%s", tc_path(SD3_DIR));
    snprintf(exp, sizeof exp, "%s/exp", tmp);
    snprintf(emb, sizeof emb, "%s/text_embeddings", exp);
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", tmp);
    /* two prompts, one of them twice: 2 distinct prompts + the empty negative prompt */
    assert_int_equal(tc_write_text(prompts, "a photo of a red cat\ntwo dogs, a ball\na photo of a red cat\n"), 0);
    const char *fmt = "%s run --exp '%s' --model '%s' --prompts '%s' --preset baseline --steps 1 2>&1";
    int rc = tc_run(out, sizeof out, fmt, tc_bin(), exp, model, prompts);
    if (rc) fail_msg("run: %s", out);
    assert_non_null(strstr(out, "3 encoded, 1 reused, 0 encoded again")); /* the repeated prompt's file is there already */
    long bytes = 0;
    assert_int_equal(count_files(emb, &bytes), 3);
    assert_true(bytes % 3 == 0 && bytes / 3 > 256);
    const long file_bytes = bytes / 3;
    /* lose the last record and truncate every embeddings file: the resume encodes again exactly the
     * texts that work needs (that prompt and the negative prompt) and makes the same image */
    json_t *lost = drop_last_record(exp);
    const char *rp = tc_join(exp, "records.jsonl");
    snprintf(cmd, sizeof cmd, "for f in '%s'/*.f32; do truncate -s 1000 \"$f\"; done", emb);
    assert_int_equal(system(cmd), 0);
    rc = tc_run(out, sizeof out, fmt, tc_bin(), exp, model, prompts);
    if (rc) fail_msg("resume: %s", out);
    assert_non_null(strstr(out, "(1 new, 2 already done)"));
    assert_non_null(strstr(out, "0 encoded, 0 reused, 2 encoded again"));
    assert_non_null(strstr(out, "bytes, expected"));
    int n;
    json_t *recs = read_records(rp, &n);
    assert_int_equal(n, 3);
    json_t *again = json_array_get(recs, 2);
    assert_string_equal(json_string_value(json_object_get(again, "key")), json_string_value(json_object_get(lost, "key")));
    assert_string_equal(json_string_value(json_object_get(again, "image_sha256")),
                        json_string_value(json_object_get(lost, "image_sha256")));
    json_decref(recs);
    json_decref(lost);
    /* a finished experiment encodes nothing and loads no transformer */
    rc = tc_run(out, sizeof out, fmt, tc_bin(), exp, model, prompts);
    if (rc) fail_msg("rerun: %s", out);
    assert_non_null(strstr(out, "(0 new, 3 already done)"));
    assert_null(strstr(out, "text embeddings in"));
    /* a file with a changed payload byte is found out by its SHA-256 and redone */
    snprintf(cmd, sizeof cmd, "rm '%s'; f=$(ls '%s'/*.f32 | head -1); truncate -s %ld \"$f\"; "
             "for g in '%s'/*.f32; do [ $(stat -c %%s \"$g\") = %ld ] || rm \"$g\"; done; "
             "printf 'X' | dd of=\"$f\" bs=1 seek=300 conv=notrunc 2>/dev/null", rp, emb, file_bytes, emb, file_bytes);
    assert_int_equal(system(cmd), 0);
    rc = tc_run(out, sizeof out, fmt, tc_bin(), exp, model, prompts);
    if (rc) fail_msg("rerun: %s", out);
    assert_non_null(strstr(out, "(3 new, 0 already done)"));
    assert_non_null(strstr(out, "1 encoded again"));
    assert_non_null(strstr(out, "does not match its SHA-256"));
    assert_int_equal(count_files(emb, &bytes), 3);
    assert_int_equal(bytes, 3 * file_bytes);
    tc_rmtree(tmp);
    free(tmp);
}

/* ---- errors ---- */

static void test_errors(void **st) {
    (void)st;
    char *tmp = tc_tmpdir(), out[8192];
    char model[1024], cmd[2048];
    snprintf(model, sizeof model, "%s", tc_join(tmp, "m"));
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", model);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(tc_write_text(tc_join(model, "model_index.json"), "{\"_class_name\": \"FooBarPipeline\"}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "p.txt"), "a cat\n"), 0);
    /* run, generate and the table refuse the class, naming the file and the class */
    int rc = tc_run(out, sizeof out, "%s run --exp '%s/e' --model '%s' --prompts '%s/p.txt' --quiet", tc_bin(), tmp, model, tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "model_index.json"));
    assert_non_null(strstr(out, "pipeline class 'FooBarPipeline' is not supported"));
    char list[512];
    assert_non_null(strstr(out, ss_pipe_class_list(list, sizeof list)));
    assert_null(strchr(strchr(out, '\n') + 1, '\n')); /* one line */
    rc = tc_run(out, sizeof out, "%s generate --model '%s' --prompt 'a cat' --out '%s/x.png'", tc_bin(), model, tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "pipeline class 'FooBarPipeline' is not supported"));
    const ss_pipe_kind *k;
    assert_true(ss_pipe_detect(model, &k) < 0);
    assert_non_null(strstr(ss_err(), model));
    /* a probe site the model does not have, and a block past its depth */
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e2' --model '%s' --prompts '%s/p.txt' --probe single.9 --width 24 --height 16 "
                "--steps 1 --quiet", tc_bin(), tmp, tc_path(FLUX_DIR), tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "probe: site single.9 does not exist"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e3' --model '%s' --prompts '%s/p.txt' --probe 2 --steps 1 --quiet", tc_bin(),
                tmp, tc_path(SD3_DIR), tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "probe: block 2 does not exist (the model has 2 blocks, 0-1)"));
    /* --probe lists: an unknown kind, a site twice */
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e6' --model '%s' --prompts '%s/p.txt' --probe bogus.1 --quiet", tc_bin(), tmp,
                tc_path(SD3_DIR), tmp);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--probe: 'bogus.1' is neither a block index"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e6' --model '%s' --prompts '%s/p.txt' --probe double.0,double.0 --quiet", tc_bin(),
                tmp, tc_path(FLUX_DIR), tmp);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "lists double.0 twice"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e6' --model '%s' --prompts '%s/p.txt' --probe 1,all --quiet", tc_bin(), tmp,
                tc_path(SD3_DIR), tmp);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--probe: 'all' is neither a block index"));
    /* the library refuses a negative size before loading anything */
    run_config c;
    run_config_default(&c);
    char e7[1024], pf[1024];
    snprintf(e7, sizeof e7, "%s/e7", tmp);
    snprintf(pf, sizeof pf, "%s/p.txt", tmp);
    c.exp_dir = e7, c.model_dir = tc_path(SD3_DIR), c.prompts_path = pf, c.width = -8, c.quiet = 1;
    run_result res;
    assert_true(run_experiment(&c, &res) < 0);
    assert_non_null(strstr(ss_err(), "--width and --height must be positive"));
    /* FLUX conditions: 'layers' past the double blocks, pe_* edits on a RoPE model */
    assert_int_equal(tc_write_text(tc_join(tmp, "c1.json"), "[{\"name\": \"x\", \"layers\": [5], \"select\": \"topk\", \"k\": 1}]"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c2.json"), "[{\"name\": \"x\", \"layers\": [1], \"pe_zero\": \"corners\"}]"), 0);
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e8' --model '%s' --prompts '%s/p.txt' --conditions '%s/c1.json' --width 24 "
                "--height 16 --quiet", tc_bin(), tmp, tc_path(FLUX_DIR), tmp, tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "c1.json: condition 'x': field 'layers' names block 5, but the model has no double.5"));
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e9' --model '%s' --prompts '%s/p.txt' --conditions '%s/c2.json' --width 24 "
                "--height 16 --quiet", tc_bin(), tmp, tc_path(FLUX_DIR), tmp, tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "FluxTransformer2DModel has none (it uses RoPE)"));
    /* a FLUX image size the pipeline cannot make */
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e4' --model '%s' --prompts '%s/p.txt' --width 25 --height 16 --steps 1 --quiet",
                tc_bin(), tmp, tc_path(FLUX_DIR), tmp);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "25x16"));
    /* the probe by site name works: FLUX's single blocks */
    rc = tc_run(out, sizeof out, "%s run --exp '%s/e5' --model '%s' --prompts '%s/p.txt' --probe single.0,1 --width 24 --height 16 "
                "--steps 1 --quiet", tc_bin(), tmp, tc_path(FLUX_DIR), tmp);
    if (rc) fail_msg("%s", out);
    char *rec = tc_read_all(tc_join(tmp, "e5/records.jsonl"), NULL);
    assert_non_null(rec);
    assert_non_null(strstr(rec, "\"site\":\"single.0\""));
    assert_non_null(strstr(rec, "\"site\":\"double.1\""));
    free(rec);
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_table_ops),
        cmocka_unit_test(test_run_sd3),
        cmocka_unit_test(test_run_flux),
        cmocka_unit_test(test_run_pixart),
        cmocka_unit_test(test_geneval_prompts_real_pipeline),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_run_options),
        cmocka_unit_test(test_text_embeddings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
