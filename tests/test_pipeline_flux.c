/* Tests for src/sample/fluxpipe (FluxPipeline) through `sinkscope generate`: our diffusers-made
 * pipelines (tests/fixtures/flux-pipeline: FLUX.1-dev style with distilled guidance, schnell style
 * without, another dynamic-shift config with a factor-4 VAE), every stored intermediate at
 * relative L2 <= 1e-5 and the image at max abs <= 1e-4; the tokenizers' ids equal the stored ones;
 * --save-latents / --latents round trip; thread-count independence; guidance on dev only;
 * conditions on double and single blocks, an empty one bit-identical; bad folders give one line
 * naming the folder and the component. */
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
#include "tensorcheck.h"
#include "core/err.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "sample/fluxpipe.h"
#include "text/txtok.h"

#define TOL 1e-5

static const char *const FOLDERS[] = {"dev-b2-16x24-t16", "schnell-b1-24x8-t12", "dev-vae4-b3-t8"};

/* A fixture folder's call from its meta.json: the prompts (one per line) and the options. */
typedef struct {
    char prompts[2048];
    char args[512];
    int n_prompts, guidance_embeds;
} call;

static void read_call(const char *dir, call *c) {
    json_error_t je;
    json_t *m = json_load_file(tc_join(dir, "meta.json"), 0, &je);
    if (!m) fail_msg("%s/meta.json: %s", dir, je.text);
    json_t *pr = json_object_get(m, "prompts");
    assert_true(json_is_array(pr));
    c->prompts[0] = 0;
    c->n_prompts = (int)json_array_size(pr);
    for (size_t i = 0; i < json_array_size(pr); i++) {
        strcat(c->prompts, json_string_value(json_array_get(pr, i)));
        strcat(c->prompts, "\n");
    }
    snprintf(c->args, sizeof c->args, "--steps %lld --guidance %.17g --height %lld --width %lld --max-sequence-length %lld",
             json_integer_value(json_object_get(m, "num_inference_steps")),
             json_number_value(json_object_get(m, "guidance_scale")), json_integer_value(json_object_get(m, "height")),
             json_integer_value(json_object_get(m, "width")),
             json_integer_value(json_object_get(m, "max_sequence_length")));
    c->guidance_embeds = json_is_true(json_object_get(m, "guidance_embeds"));
    json_decref(m);
}

static void check_folder(const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/%s", name));
    call c;
    read_call(dir, &c);
    char *tmp = tc_tmpdir(), buf[8192];
    const char *pf = tc_join(tmp, "prompts.txt"), *dump = tc_join(tmp, "dump.safetensors");
    assert_int_equal(tc_write_text(pf, c.prompts), 0);
    char exp[1200], in[1200];
    snprintf(exp, sizeof exp, "%s/expected.safetensors", dir);
    snprintf(in, sizeof in, "%s/inputs.safetensors", dir);
    const int rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s %s --latents %s --dump %s --out %s/img.png",
                          tc_bin(), dir, pf, c.args, in, dump, tmp);
    if (rc) fail_msg("%s: %s", name, buf);
    double worst = 0;
    const char *always[] = {"prompt_embeds", "pooled_prompt_embeds", "text_ids", "latent_image_ids", "latents.init",
                            "timesteps", "sigmas", "image_raw"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) worst = fmax(worst, tt_cmp(dump, exp, always[i], TOL));
    int steps = 0;
    for (int i = 0; i < 10000; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "latents.%d", i);
        if (!tt_has(exp, nm)) break;
        worst = fmax(worst, tt_cmp(dump, exp, nm, TOL));
        snprintf(nm, sizeof nm, "model_output.%d", i);
        worst = fmax(worst, tt_cmp(dump, exp, nm, TOL));
        steps++;
    }
    assert_true(steps >= 2);
    /* distilled guidance only where the transformer embeds it; never an unconditional pass */
    assert_int_equal(tt_has(exp, "guidance"), c.guidance_embeds);
    assert_int_equal(tt_has(dump, "guidance"), c.guidance_embeds);
    if (c.guidance_embeds) tt_cmp(dump, exp, "guidance", 0);
    assert_false(tt_has(dump, "negative_prompt_embeds"));
    const double ma = tt_max_abs(dump, exp, "image", 1e-4);
    worst = fmax(worst, tt_cmp(dump, exp, "image", TOL));
    printf("  %s: %d steps, worst rel L2 %.2e, image max abs %.2e\n", name, steps, worst, ma);
    /* the PNGs (one per prompt, FILE-b.png for a batch) hold round(image * 255) */
    size_t ni;
    int64_t is[8];
    int nd;
    float *ref = tc_load(exp, "image", &ni, is, &nd);
    assert_non_null(ref);
    const int B = (int)is[0], H = (int)is[1], W = (int)is[2];
    assert_int_equal(B, c.n_prompts);
    for (int b = 0; b < B; b++) {
        uint8_t *px;
        int w, h;
        char png[1200];
        if (B == 1) snprintf(png, sizeof png, "%s/img.png", tmp);
        else snprintf(png, sizeof png, "%s/img-%d.png", tmp, b);
        if (png_read_rgb(png, &w, &h, &px) < 0) fail_msg("%s", ss_err());
        assert_int_equal(w, W), assert_int_equal(h, H);
        for (size_t i = 0; i < (size_t)H * W * 3; i++) {
            const double want = ref[(size_t)b * H * W * 3 + i] * 255.0;
            if (fabs(px[i] - want) > 0.5 + 1e-4 * 255) fail_msg("%s: pixel %zu is %d, diffusers %.4f", png, i, px[i], want);
        }
        free(px);
    }
    free(ref);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_dev(void **state) {
    (void)state;
    check_folder(FOLDERS[0]);
}

static void test_schnell(void **state) {
    (void)state;
    check_folder(FOLDERS[1]);
}

static void test_dev_vae4(void **state) {
    (void)state;
    check_folder(FOLDERS[2]);
}

/* The tokenizers give the ids diffusers fed the encoders (CLIP 77 tokens, T5 max_sequence_length). */
static void test_token_ids(void **state) {
    (void)state;
    for (size_t f = 0; f < sizeof FOLDERS / sizeof FOLDERS[0]; f++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/%s", FOLDERS[f]));
        call c;
        read_call(dir, &c);
        char in[1200];
        snprintf(in, sizeof in, "%s/inputs.safetensors", dir);
        static const char *const sub[] = {"tokenizer", "tokenizer_2"}, *tag[] = {"input_ids.clip", "input_ids.t5"};
        for (int k = 0; k < 2; k++) {
            txtok *t;
            if (txtok_open(&t, tc_join(dir, "%s", sub[k])) < 0) fail_msg("%s", ss_err());
            st_file *sf;
            assert_int_equal(st_open(&sf, in), 0);
            const st_tensor *ti = st_find(sf, tag[k]);
            assert_non_null(ti);
            assert_int_equal(ti->shape[0], c.n_prompts);
            const int L = (int)ti->shape[1];
            char *p = c.prompts;
            for (int b = 0; b < c.n_prompts; b++) {
                char *e = strchr(p, '\n');
                txtok_seq s = {0};
                assert_int_equal(txtok_encode(t, p, (size_t)(e - p), L, &s), 0);
                assert_int_equal(s.n, L);
                for (int i = 0; i < L; i++) {
                    int64_t v;
                    memcpy(&v, (const char *)ti->data + 8 * ((size_t)b * L + i), 8);
                    assert_int_equal(s.ids[i], v);
                }
                txtok_seq_free(&s);
                p = e + 1;
            }
            st_close(sf);
            txtok_free(t);
        }
    }
}

/* --save-latents writes the seeded (unpacked) start; --latents with it gives the same image bit for
 * bit; 1 and 2 threads agree bit for bit; on dev the guidance changes the image, on schnell not. */
static void test_latents_guidance(void **state) {
    (void)state;
    char *tmp = tc_tmpdir(), buf[8192];
    for (int f = 0; f < 2; f++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/%s", FOLDERS[f]));
        const char *base = "--steps 2 --height 8 --width 16 --max-sequence-length 6 --prompt 'a red cat'";
        if (tc_run(buf, sizeof buf, "%s generate --model %s %s --seed 5 --guidance 3.5 --save-latents %s/l.safetensors "
                   "--dump %s/a.safetensors --threads 1", tc_bin(), dir, base, tmp, tmp))
            fail_msg("%s", buf);
        if (tc_run(buf, sizeof buf, "%s generate --model %s %s --guidance 3.5 --latents %s/l.safetensors --dump "
                   "%s/b.safetensors --out %s/b.png --threads 2", tc_bin(), dir, base, tmp, tmp, tmp))
            fail_msg("%s", buf);
        if (tc_run(buf, sizeof buf, "%s generate --model %s %s --seed 5 --guidance 6 --dump %s/c.safetensors", tc_bin(), dir,
                   base, tmp))
            fail_msg("%s", buf);
        size_t n1, n2, nl;
        int64_t shp[8];
        int nd;
        float *a = tc_load(tc_join(tmp, "a.safetensors"), "image", &n1, NULL, NULL);
        float *b = tc_load(tc_join(tmp, "b.safetensors"), "image", &n2, NULL, NULL);
        float *cc = tc_load(tc_join(tmp, "c.safetensors"), "image", NULL, NULL, NULL);
        float *l = tc_load(tc_join(tmp, "l.safetensors"), "latents", &nl, shp, &nd);
        assert_non_null(a), assert_non_null(b), assert_non_null(cc), assert_non_null(l);
        assert_int_equal(n1, n2);
        assert_memory_equal(a, b, n1 * sizeof *a);
        assert_int_equal(nd, 4);
        assert_int_equal(shp[0], 1), assert_int_equal(shp[1], 16), assert_int_equal(shp[2], 4), assert_int_equal(shp[3], 8);
        double s = 0, s2 = 0; /* the seeded start is N(0, 1)-like */
        for (size_t i = 0; i < nl; i++) s += l[i], s2 += (double)l[i] * l[i];
        assert_true(fabs(s / nl) < 0.3 && fabs(s2 / nl - 1) < 0.4);
        if (f == 0) assert_true(tc_rel_l2(cc, a, n1) > 1e-4); /* dev: guidance 6 vs 3.5 */
        else assert_memory_equal(cc, a, n1 * sizeof *a);      /* schnell: no guidance embedding */
        free(a), free(b), free(cc), free(l);
    }
    /* latents of the wrong shape are refused naming the file */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/%s", FOLDERS[0]));
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s --steps 1 --height 16 --width 16 --prompt 'a red cat' "
                                "--max-sequence-length 6 --latents %s/l.safetensors --out %s/c.png", tc_bin(), dir, tmp, tmp), 0);
    if (!strstr(buf, "l.safetensors") || !strstr(buf, "'latents' must be [1, 16, 8, 8]")) fail_msg("got: %s", buf);
    /* packed latents [B, N, 4C] as diffusers' FluxPipeline takes them give the same run bit for bit */
    {
        call c;
        read_call(dir, &c);
        const char *pf = tc_join(tmp, "p.txt");
        assert_int_equal(tc_write_text(pf, c.prompts), 0);
        size_t n;
        int64_t shp[8];
        int nd;
        float *init = tc_load(tc_join(dir, "expected.safetensors"), "latents.init", &n, shp, &nd);
        assert_non_null(init);
        assert_int_equal(nd, 3);
        st_writer *sw = st_writer_new();
        assert_non_null(sw);
        assert_int_equal(st_writer_add_f32(sw, "latents", ST_F32, 3, shp, init), 0);
        assert_int_equal(st_writer_save(sw, tc_join(tmp, "packed.safetensors")), 0);
        st_writer_free(sw);
        for (int k = 0; k < 2; k++)
            if (tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s/p.txt %s --latents %s --dump %s/r%d.safetensors",
                       tc_bin(), dir, tmp, c.args, k ? tc_join(tmp, "packed.safetensors") : tc_join(dir, "inputs.safetensors"),
                       tmp, k))
                fail_msg("%s", buf);
        size_t n0;
        float *r0 = tc_load(tc_join(tmp, "r0.safetensors"), "image", &n0, NULL, NULL);
        float *r1 = tc_load(tc_join(tmp, "r1.safetensors"), "image", NULL, NULL, NULL);
        assert_non_null(r0), assert_non_null(r1);
        assert_memory_equal(r0, r1, n0 * sizeof *r0);
        free(r0), free(r1), free(init);
        /* a packed start of the wrong size */
        assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s --prompts %s/p.txt --steps 1 --height 16 "
                                    "--width 16 --latents %s/packed.safetensors --out %s/c.png", tc_bin(), dir, tmp, tmp, tmp), 0);
        if (!strstr(buf, "packed.safetensors: packed 'latents' must be [2, 16, 64]")) fail_msg("got: %s", buf);
    }
    /* sizes that do not pack, and a T5 length above diffusers' 512 */
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s --steps 1 --height 18 --width 16 --prompt 'a' --out %s/c.png",
                                tc_bin(), dir, tmp), 0);
    if (!strstr(buf, "multiples of 4")) fail_msg("got: %s", buf);
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s --steps 1 --height 8 --width 8 --prompt 'a' "
                                "--max-sequence-length 513 --out %s/c.png", tc_bin(), dir, tmp), 0);
    tc_rmtree(tmp);
    free(tmp);
}

/* A copy of a fixture folder (components linked, not copied) with `edit` run inside it. */
static void expect_bad(const char *folder, const char *edit, const char *want1, const char *want2) {
    char *tmp = tc_tmpdir(), buf[8192];
    const char *src = tc_path("fixtures/flux-pipeline/%s", folder);
    char abs[2048];
    assert_non_null(realpath(src, abs));
    assert_int_equal(tc_run(buf, sizeof buf,
                            "cd %s && mkdir p && cd p && cp %s/model_index.json . && for c in transformer vae scheduler text_encoder "
                            "text_encoder_2 tokenizer tokenizer_2; do ln -s %s/$c $c; done && %s",
                            tmp, abs, abs, edit), 0);
    const int rc = tc_run(buf, sizeof buf, "%s generate --model %s/p --prompt 'a cat' --steps 1 --height 16 --width 16 --out %s/x.png",
                          tc_bin(), tmp, tmp);
    assert_int_not_equal(rc, 0);
    if (!strstr(buf, want1) || (want2 && !strstr(buf, want2))) fail_msg("edit '%s': got: %s", edit, buf);
    if (!strstr(buf, "/p")) fail_msg("edit '%s': the folder is not named: %s", edit, buf);
    int lines = 0;
    for (const char *p = buf; *p; p++) lines += *p == '\n';
    if (lines != 1) fail_msg("edit '%s': expected one line, got: %s", edit, buf);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_bad_folders(void **state) {
    (void)state;
    char t5w[2048], clipg[2048], vae4[2048], sd3tr[2048], cmd[6000];
    assert_non_null(realpath(tc_path("fixtures/sd3-pipeline-tiny/text_encoder_3"), t5w)); /* T5 d_model 64 */
    assert_non_null(realpath(tc_path("fixtures/clip-text-tiny-gelu"), clipg));            /* CLIP 24 wide */
    assert_non_null(realpath(tc_path("fixtures/vae-tiny-4ch"), vae4));
    assert_non_null(realpath(tc_path("fixtures/sd3-pipeline-tiny/transformer"), sd3tr));
    const char *dev = FOLDERS[0], *sch = FOLDERS[1];
    /* a missing component: in the index, and on disk */
    expect_bad(dev, "sed -i 's/\"vae\":/\"_vae\":/' model_index.json", "model_index.json", "component 'vae' is missing");
    expect_bad(dev, "rm text_encoder_2", "component 'text_encoder_2'", NULL);
    expect_bad(sch, "rm tokenizer", "component 'tokenizer'", NULL);
    expect_bad(sch, "rm transformer", "component 'transformer'", "config.json");
    expect_bad(dev, "sed -i '/\"text_encoder\": \\[/,/\\]/c\\  \"text_encoder\": [null, null],' model_index.json",
               "component 'text_encoder' is null", NULL);
    /* an unsupported class, an unknown component */
    expect_bad(dev, "sed -i 's/\"AutoencoderKL\"/\"AutoencoderTiny\"/' model_index.json", "component 'vae'", "AutoencoderTiny");
    expect_bad(dev, "sed -i 's/\"FluxTransformer2DModel\"/\"SD3Transformer2DModel\"/' model_index.json",
               "component 'transformer'", "SD3Transformer2DModel");
    expect_bad(dev, "sed -i 's/\"FluxPipeline\"/\"FluxImg2ImgPipeline\"/' model_index.json",
               "pipeline class 'FluxImg2ImgPipeline' is not supported", "FluxPipeline,");
    expect_bad(dev, "sed -i 's/\"transformer\": \\[/\"transformer2\": [/' model_index.json", "unknown component 'transformer2'",
               NULL);
    /* width mismatches: T5 64 wide for joint_attention_dim 32; CLIP 24 wide for pooled_projection_dim 32 */
    snprintf(cmd, sizeof cmd, "rm text_encoder_2 && ln -s %s text_encoder_2", t5w);
    expect_bad(dev, cmd, "component 'text_encoder_2' has d_model 64", "joint_attention_dim is 32");
    snprintf(cmd, sizeof cmd, "rm text_encoder && ln -s %s text_encoder", clipg);
    expect_bad(sch, cmd, "component 'text_encoder' gives a pooled output 24 wide", "pooled_projection_dim is 32");
    /* a VAE whose latent channels do not pack into the transformer's in_channels */
    snprintf(cmd, sizeof cmd, "rm vae && ln -s %s vae", vae4);
    expect_bad(dev, cmd, "component 'vae' has latent_channels 4", "in_channels 64");
    /* an SD3 transformer under the FLUX class name */
    snprintf(cmd, sizeof cmd, "rm transformer && ln -s %s transformer", sd3tr);
    expect_bad(dev, cmd, "component 'transformer'", "FluxTransformer2DModel");
}

/* Conditions: an empty one leaves every output bit-identical, a top-1 removal in a double block
 * and one in a single block change the image, blocks the model lacks are refused naming the file. */
static void test_conditions(void **state) {
    (void)state;
    char dir[1024]; /* tc_path's buffers are reused */
    snprintf(dir, sizeof dir, "%s", tc_path("fixtures/flux-pipeline/%s", FOLDERS[0]));
    char *tmp = tc_tmpdir(), buf[8192];
    assert_int_equal(tc_write_text(tc_join(tmp, "c0.json"), "{\"name\": \"noop\", \"layers\": [], \"single_layers\": []}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c1.json"), "{\"name\": \"rm\", \"layers\": [1], \"k\": 1}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c2.json"), "{\"name\": \"rms\", \"layers\": [], \"single_layers\": [0], \"k\": 1}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c9.json"), "{\"name\": \"bad\", \"layers\": [9]}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c8.json"), "{\"name\": \"bad\", \"layers\": [], \"single_layers\": [5]}"), 0);
    const char *base = "--prompt 'a photo of a red cat' --steps 2 --height 16 --width 24 --max-sequence-length 8";
    const char *tags[] = {"none", "c0", "c1", "c2"};
    for (int i = 0; i < 4; i++) {
        char cond[1200] = "";
        if (i) snprintf(cond, sizeof cond, "--condition %s/%s.json", tmp, tags[i]);
        if (tc_run(buf, sizeof buf, "%s generate --model %s %s %s --dump %s/%s.safetensors", tc_bin(), dir, base, cond, tmp,
                   tags[i]))
            fail_msg("%s: %s", tags[i], buf);
    }
    size_t n;
    float *a = tc_load(tc_join(tmp, "none.safetensors"), "image", &n, NULL, NULL);
    float *b = tc_load(tc_join(tmp, "c0.safetensors"), "image", NULL, NULL, NULL);
    float *c = tc_load(tc_join(tmp, "c1.safetensors"), "image", NULL, NULL, NULL);
    float *d = tc_load(tc_join(tmp, "c2.safetensors"), "image", NULL, NULL, NULL);
    float *ma = tc_load(tc_join(tmp, "none.safetensors"), "model_output.1", NULL, NULL, NULL);
    float *mb = tc_load(tc_join(tmp, "c0.safetensors"), "model_output.1", NULL, NULL, NULL);
    assert_non_null(a), assert_non_null(b), assert_non_null(c), assert_non_null(d), assert_non_null(ma), assert_non_null(mb);
    assert_memory_equal(a, b, n * sizeof *a);
    assert_memory_equal(ma, mb, 2 * 24 * 64 / 2 * sizeof *ma); /* [1, 6*4, 64] */
    const double e1 = tc_rel_l2(c, a, n), e2 = tc_rel_l2(d, a, n);
    printf("  double.1 top-1 removal changes the image by %.2e, single.0 top-1 by %.2e\n", e1, e2);
    assert_true(e1 > 1e-4);
    assert_true(e2 > 1e-4);
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s/c9.json --out %s/x.png", tc_bin(),
                                dir, base, tmp, tmp), 0);
    if (!strstr(buf, "c9.json") || !strstr(buf, "block 9")) fail_msg("got: %s", buf);
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s/c8.json --out %s/x.png", tc_bin(),
                                dir, base, tmp, tmp), 0);
    if (!strstr(buf, "c8.json") || !strstr(buf, "single")) fail_msg("got: %s", buf);
    free(a), free(b), free(c), free(d), free(ma), free(mb);
    tc_rmtree(tmp);
    free(tmp);
}

/* The library's one-call API (everything loaded at once) gives the reference image too; the staged
 * path refuses to encode after the encoders were released; flux_forward_t1000 equals flux_forward
 * where t x 1000 is exact in fp32. */
static void test_library(void **state) {
    (void)state;
    const char *dir = tc_path("fixtures/flux-pipeline/%s", FOLDERS[0]);
    char in[1200], exp[1200];
    snprintf(in, sizeof in, "%s/inputs.safetensors", dir);
    snprintf(exp, sizeof exp, "%s/expected.safetensors", dir);
    fluxpipe *p;
    if (fluxpipe_load(&p, dir) < 0) fail_msg("%s", ss_err());
    assert_non_null(p->transformer);
    const char *prompts[] = {"a photo of a red cat", "two dogs"};
    fluxpipe_params q;
    fluxpipe_params_default(&q);
    assert_int_equal(q.steps, 28), assert_int_equal(q.max_sequence_length, 512);
    assert_true(q.guidance == 3.5);
    q.prompts = prompts, q.n_prompts = 2, q.steps = 3, q.height = 16, q.width = 24, q.max_sequence_length = 16;
    size_t nl, ni;
    q.latents = tc_load(in, "latents", &nl, NULL, NULL);
    float *ref = tc_load(exp, "image", &ni, NULL, NULL), *img = malloc(ni * sizeof *img);
    assert_int_equal(fluxpipe_generate(p, &q, img, NULL, NULL), 0);
    double m = 0;
    for (size_t i = 0; i < ni; i++) m = fmax(m, fabs((double)img[i] - ref[i]));
    assert_true(m <= 1e-4);
    /* t1000 vs t: 0.5 x 1000 is exact */
    const flux_model *tr = p->transformer;
    const int N = 6, S = 3, B = 1, Cin = tr->cfg.in_channels, J = tr->cfg.joint_attention_dim;
    float *hs = malloc(sizeof(float) * N * Cin), *ctx = malloc(sizeof(float) * S * J), pooled[64];
    float *o1 = malloc(sizeof(float) * N * Cin), *o2 = malloc(sizeof(float) * N * Cin), ids[3 * 9] = {0};
    tc_fill(hs, (size_t)N * Cin, 1, 1.0f), tc_fill(ctx, (size_t)S * J, 2, 1.0f), tc_fill(pooled, 32, 3, 1.0f);
    for (int i = 0; i < N; i++) ids[3 * (S + i) + 2] = (float)i;
    const float t = 0.5f, t1000 = 500.0f, g = 3.5f;
    assert_int_equal(flux_forward(tr, o1, hs, ctx, pooled, &t, &g, ids + 3 * S, ids, B, N, S, NULL), 0);
    assert_int_equal(flux_forward_t1000(tr, o2, hs, ctx, pooled, &t1000, &g, ids + 3 * S, ids, B, N, S, NULL), 0);
    assert_memory_equal(o1, o2, sizeof(float) * N * Cin);
    float ctxb[1], pooledb[1];
    fluxpipe_release_encoders(p);
    assert_true(fluxpipe_encode(p, &q, ctxb, pooledb) < 0);
    assert_non_null(strstr(ss_err(), "released"));
    free((void *)q.latents), free(ref), free(img), free(hs), free(ctx), free(o1), free(o2);
    fluxpipe_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_ids),   cmocka_unit_test(test_dev),          cmocka_unit_test(test_schnell),
        cmocka_unit_test(test_dev_vae4),    cmocka_unit_test(test_latents_guidance), cmocka_unit_test(test_bad_folders),
        cmocka_unit_test(test_conditions),  cmocka_unit_test(test_library),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
