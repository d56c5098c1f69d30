/* Tests for src/sample/sd3pipe (StableDiffusion3Pipeline) through `sinkscope generate`: the
 * reference set's sd3-pipeline-tiny (diffusers ran it end to end from the prompts) and our own
 * diffusers-made variants (tests/fixtures/sd3-pipeline-variants), every stored intermediate at
 * relative L2 <= 1e-5 and the image at max abs <= 1e-4; the tokenizers' ids equal the stored
 * ones; --save-latents / --latents round trip; thread-count independence; bad folders give one
 * line naming the folder and the component. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "tensorcheck.h"
#include "core/err.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "sample/sd3pipe.h"
#include "text/txtok.h"

#define TOL 1e-5

/* A fixture folder's call, from its meta.json (prompts, negative prompt, steps, cfg, size, T5 length). */
typedef struct {
    char prompts[1024];
    char args[1024];
} call;

static void read_call(const char *dir, call *c) {
    char *txt = tc_read_all(tc_join(dir, "meta.json"), NULL);
    assert_non_null(txt);
    /* the few fields we need, written by the generators as one-level JSON */
    char *p = strstr(txt, "\"prompts\"");
    assert_non_null(p);
    p = strchr(p, '[') + 1;
    char *e = strchr(p, ']');
    c->prompts[0] = 0;
    while (p < e) {
        char *q = strchr(p, '"');
        if (!q || q > e) break;
        char *q2 = strchr(q + 1, '"');
        strncat(c->prompts, q + 1, (size_t)(q2 - q - 1));
        strcat(c->prompts, "\n");
        p = q2 + 1;
    }
    static const char *const keys[][2] = {{"num_inference_steps", "steps"}, {"guidance_scale", "cfg"}, {"height", "height"},
                                          {"width", "width"}, {"max_sequence_length", "max-sequence-length"}};
    c->args[0] = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char k[64];
        snprintf(k, sizeof k, "\"%s\":", keys[i][0]);
        char *v = strstr(txt, k);
        if (!v) continue;
        v += strlen(k);
        while (*v == ' ') v++;
        char num[32];
        size_t n = strcspn(v, ",\n}");
        snprintf(num, sizeof num, "%.*s", (int)n, v);
        snprintf(c->args + strlen(c->args), sizeof c->args - strlen(c->args), " --%s %s", keys[i][1], num);
    }
    char *neg = strstr(txt, "\"negative_prompt\":");
    if (neg) {
        neg = strchr(neg + 18, '"');
        char *ne = strchr(neg + 1, '"');
        if (ne > neg + 1)
            snprintf(c->args + strlen(c->args), sizeof c->args - strlen(c->args), " --negative-prompt '%.*s'",
                     (int)(ne - neg - 1), neg + 1);
    }
    free(txt);
}

static void check_folder(const char *name) {
    const char *dir = tc_path("fixtures/%s", name);
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
    const char *always[] = {"prompt_embeds", "pooled_prompt_embeds", "timesteps", "sigmas", "image_raw"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) tt_cmp(dump, exp, always[i], TOL);
    int checked = 0;
    for (int i = 0; i < 10000; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "latents.%d", i);
        if (!tt_has(exp, nm)) break;
        tt_cmp(dump, exp, nm, TOL);
        snprintf(nm, sizeof nm, "model_output.%d", i);
        tt_cmp(dump, exp, nm, TOL);
        snprintf(nm, sizeof nm, "noise_pred.%d", i);
        if (tt_has(exp, nm)) tt_cmp(dump, exp, nm, TOL);
        checked++;
    }
    assert_true(checked >= 1);
    if (tt_has(exp, "negative_prompt_embeds")) {
        tt_cmp(dump, exp, "negative_prompt_embeds", TOL);
        tt_cmp(dump, exp, "negative_pooled_prompt_embeds", TOL);
    } else {
        assert_false(tt_has(dump, "negative_prompt_embeds")); /* cfg <= 1: no unconditional pass */
    }
    tt_max_abs(dump, exp, "image", 1e-4);
    tt_cmp(dump, exp, "image", TOL);
    /* the PNGs (one per prompt, FILE-b.png for a batch) hold round(image * 255) */
    size_t ni;
    int64_t is[8];
    int nd;
    float *ref = tc_load(exp, "image", &ni, is, &nd);
    assert_non_null(ref);
    const int B = (int)is[0], H = (int)is[1], W = (int)is[2];
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

static void test_reference(void **state) {
    (void)state;
    check_folder("sd3-pipeline-tiny");
}

static void test_variants(void **state) {
    (void)state;
    check_folder("sd3-pipeline-variants/no-t5-vae3-neg");
    check_folder("sd3-pipeline-variants/cfg1-b3-t16");
}

/* The tokenizers give the ids diffusers fed the encoders (positive and negative prompts). */
static void test_token_ids(void **state) {
    (void)state;
    const char *dir = tc_path("fixtures/sd3-pipeline-tiny");
    char in[1200];
    snprintf(in, sizeof in, "%s/inputs.safetensors", dir);
    const char *prompts[] = {"a photo of a red cat", "two dogs"};
    static const char *const sub[] = {"tokenizer", "tokenizer_2", "tokenizer_3"}, *tag[] = {"clip_l", "clip_g", "t5"};
    for (int k = 0; k < 3; k++) {
        txtok *t;
        if (txtok_open(&t, tc_join(dir, "%s", sub[k])) < 0) fail_msg("%s", ss_err());
        for (int neg = 0; neg < 2; neg++) {
            char nm[64];
            snprintf(nm, sizeof nm, "%sinput_ids.%s", neg ? "negative_" : "", tag[k]);
            st_file *f;
            assert_int_equal(st_open(&f, in), 0);
            const st_tensor *ti = st_find(f, nm);
            assert_non_null(ti);
            const int L = (int)ti->shape[1];
            for (int b = 0; b < 2; b++) {
                txtok_seq s = {0};
                const char *text = neg ? "" : prompts[b];
                assert_int_equal(txtok_encode(t, text, strlen(text), L, &s), 0);
                assert_int_equal(s.n, L);
                for (int i = 0; i < L; i++) {
                    int64_t v;
                    memcpy(&v, (const char *)ti->data + 8 * ((size_t)b * L + i), 8);
                    assert_int_equal(s.ids[i], v);
                }
                txtok_seq_free(&s);
            }
            st_close(f);
        }
        txtok_free(t);
    }
}

/* --save-latents writes the seeded start; --latents with it gives the same image bit for bit;
 * 1 and 2 threads agree bit for bit. */
static void test_latents_roundtrip(void **state) {
    (void)state;
    const char *dir = tc_path("fixtures/sd3-pipeline-tiny");
    char *tmp = tc_tmpdir(), buf[8192];
    const char *base = "--steps 2 --cfg 3 --height 16 --width 16 --max-sequence-length 8 --prompt 'a red cat'";
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --seed 5 --save-latents %s/l.safetensors --dump %s/a.safetensors --threads 1",
                            tc_bin(), dir, base, tmp, tmp), 0);
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --latents %s/l.safetensors --dump %s/b.safetensors --out %s/b.png --threads 2",
                            tc_bin(), dir, base, tmp, tmp, tmp), 0);
    size_t n1, n2, nl;
    int64_t shp[8];
    int nd;
    float *a = tc_load(tc_join(tmp, "a.safetensors"), "image", &n1, NULL, NULL);
    float *b = tc_load(tc_join(tmp, "b.safetensors"), "image", &n2, NULL, NULL);
    float *l = tc_load(tc_join(tmp, "l.safetensors"), "latents", &nl, shp, &nd);
    float *li = tc_load(tc_join(tmp, "a.safetensors"), "latents.init", NULL, NULL, NULL);
    assert_non_null(a), assert_non_null(b), assert_non_null(l), assert_non_null(li);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1 * sizeof *a);
    assert_int_equal(nd, 4);
    assert_int_equal(shp[0], 1), assert_int_equal(shp[1], 16), assert_int_equal(shp[2], 8), assert_int_equal(shp[3], 8);
    assert_memory_equal(l, li, nl * sizeof *l);
    double s = 0, s2 = 0; /* the seeded start is N(0, 1)-like */
    for (size_t i = 0; i < nl; i++) s += l[i], s2 += (double)l[i] * l[i];
    assert_true(fabs(s / nl) < 0.3 && fabs(s2 / nl - 1) < 0.4);
    /* another seed gives other latents */
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --seed 6 --save-latents %s/l6.safetensors", tc_bin(),
                            dir, base, tmp), 0);
    float *l6 = tc_load(tc_join(tmp, "l6.safetensors"), "latents", NULL, NULL, NULL);
    assert_non_null(l6);
    assert_true(memcmp(l, l6, nl * sizeof *l) != 0);
    /* latents of the wrong shape are refused naming the file */
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s --steps 2 --cfg 3 --height 32 --width 16 --prompt 'a red cat' "
                                "--max-sequence-length 8 --latents %s/l.safetensors --out %s/c.png", tc_bin(), dir, tmp, tmp), 0);
    if (!strstr(buf, "l.safetensors") || !strstr(buf, "'latents' must be [1, 16, 16, 8]")) fail_msg("got: %s", buf);
    free(a), free(b), free(l), free(li), free(l6);
    tc_rmtree(tmp);
    free(tmp);
}

/* A copy of sd3-pipeline-tiny (components linked, not copied) with `edit` run inside it. */
static void expect_bad(const char *edit, const char *want1, const char *want2) {
    char *tmp = tc_tmpdir(), buf[8192];
    const char *src = tc_path("fixtures/sd3-pipeline-tiny");
    char abs[2048];
    assert_non_null(realpath(src, abs));
    assert_int_equal(tc_run(buf, sizeof buf,
                            "cd %s && mkdir p && cd p && cp %s/model_index.json . && for c in transformer vae scheduler text_encoder "
                            "text_encoder_2 text_encoder_3 tokenizer tokenizer_2 tokenizer_3; do ln -s %s/$c $c; done && %s",
                            tmp, abs, abs, edit), 0);
    const int rc = tc_run(buf, sizeof buf, "%s generate --model %s/p --prompt 'a cat' --steps 1 --height 16 --width 16 --out %s/x.png",
                          tc_bin(), tmp, tmp);
    assert_int_not_equal(rc, 0);
    if (!strstr(buf, want1) || (want2 && !strstr(buf, want2))) fail_msg("edit '%s': got: %s", edit, buf);
    int lines = 0;
    for (const char *p = buf; *p; p++) lines += *p == '\n';
    if (lines != 1) fail_msg("edit '%s': expected one line, got: %s", edit, buf);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_bad_folders(void **state) {
    (void)state;
    const char *t5 = tc_path("fixtures/t5-encoder-tiny"), *vae4 = tc_path("fixtures/vae-tiny-4ch");
    char a5[2048], a4[2048], cmd[6000];
    assert_non_null(realpath(t5, a5));
    assert_non_null(realpath(vae4, a4));
    /* a missing component: in the index, and on disk */
    expect_bad("sed -i 's/\"vae\":/\"_vae\":/' model_index.json", "model_index.json", "component 'vae' is missing");
    expect_bad("rm vae", "component 'vae'", "config.json");
    expect_bad("rm text_encoder_2", "component 'text_encoder_2'", NULL);
    /* an unsupported class */
    expect_bad("sed -i 's/\"AutoencoderKL\"/\"AutoencoderTiny\"/' model_index.json", "component 'vae'", "AutoencoderTiny");
    expect_bad("sed -i 's/\"FlowMatchEulerDiscreteScheduler\"/\"DDIMScheduler\"/' model_index.json", "component 'scheduler'",
               "DDIMScheduler");
    expect_bad("sed -i 's/\"StableDiffusion3Pipeline\"/\"StableDiffusion3Img2ImgPipeline\"/' model_index.json",
               "model_index.json", "pipeline class 'StableDiffusion3Img2ImgPipeline' is not supported");
    expect_bad("sed -i 's/\"transformer\": \\[/\"transformer2\": [/' model_index.json", "unknown component 'transformer2'", NULL);
    /* encoder / transformer width mismatch: a T5 of d_model 32 for joint_attention_dim 64 */
    snprintf(cmd, sizeof cmd, "rm text_encoder_3 && ln -s %s text_encoder_3", a5);
    expect_bad(cmd, "component 'text_encoder_3' has d_model 32", "joint_attention_dim is 64");
    /* a VAE whose latent channels differ from the transformer's */
    snprintf(cmd, sizeof cmd, "rm vae && ln -s %s vae", a4);
    expect_bad(cmd, "component 'vae' has latent_channels 4", "in_channels 16");
    /* T5 set but its tokenizer null */
    expect_bad("sed -i '/\"tokenizer_3\": \\[/,/\\]/c\\  \"tokenizer_3\": [null, null],' model_index.json", "tokenizer_3", NULL);
}

/* The ShapeWorld pixel pipeline takes --latents / --save-latents too: the saved start reproduces
 * the seeded image; a start of the wrong shape is refused naming the file. */
static void test_shapeworld_latents(void **state) {
    (void)state;
    char *tmp = tc_tmpdir(), buf[8192];
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --prompt 'a red circle' --steps 3 --seed 9 --out %s/a.png "
                            "--save-latents %s/l.safetensors", tc_bin(), tmp, tmp), 0);
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --prompt 'a red circle' --steps 3 --seed 1 --out %s/b.png "
                            "--latents %s/l.safetensors", tc_bin(), tmp, tmp), 0);
    assert_int_equal(tc_run(buf, sizeof buf, "%s generate --prompt 'a red circle' --steps 3 --seed 1 --out %s/c.png", tc_bin(),
                            tmp), 0);
    size_t nl;
    int64_t shp[8];
    int nd;
    float *l = tc_load(tc_join(tmp, "l.safetensors"), "latents", &nl, shp, &nd);
    assert_non_null(l);
    assert_int_equal(nd, 4), assert_int_equal(shp[0], 1), assert_int_equal(shp[1], 3);
    free(l);
    /* a.png (seed 9) and b.png (seed 1 but a's start) hold the same pixels; c.png (seed 1) differs */
    uint8_t *pa, *pb, *pc;
    int w1, h1, w2, h2, w3, h3;
    assert_int_equal(png_read_rgb(tc_join(tmp, "a.png"), &w1, &h1, &pa), 0);
    assert_int_equal(png_read_rgb(tc_join(tmp, "b.png"), &w2, &h2, &pb), 0);
    assert_int_equal(png_read_rgb(tc_join(tmp, "c.png"), &w3, &h3, &pc), 0);
    assert_int_equal(w1, w2), assert_int_equal(h1, h2), assert_int_equal(w1, w3), assert_int_equal(h1, h3);
    assert_memory_equal(pa, pb, (size_t)w1 * h1 * 3);
    assert_true(memcmp(pa, pc, (size_t)w1 * h1 * 3) != 0);
    char *lt = NULL;
    assert_int_equal(png_read_text(tc_join(tmp, "b.png"), "latents", &lt), 0);
    assert_non_null(strstr(lt, "l.safetensors"));
    free(lt), free(pa), free(pb), free(pc);
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --prompt 'a red circle' --steps 1 --out %s/d.png --latents %s",
                                tc_bin(), tmp, tc_path("fixtures/sd3-pipeline-tiny/inputs.safetensors")), 0);
    if (!strstr(buf, "inputs.safetensors: 'latents' must be [1, 3, ")) fail_msg("got: %s", buf);
    tc_rmtree(tmp);
    free(tmp);
}

/* Conditions on an SD3 pipeline: an empty one leaves every output bit-identical, a top-1 removal
 * changes the image, a block the model lacks is refused naming the condition file. */
static void test_conditions(void **state) {
    (void)state;
    const char *dir = tc_path("fixtures/sd3-pipeline-tiny");
    char *tmp = tc_tmpdir(), buf[8192];
    assert_int_equal(tc_write_text(tc_join(tmp, "c0.json"), "{\"name\": \"noop\", \"layers\": []}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c1.json"), "{\"name\": \"rm\", \"layers\": [1], \"k\": 1}"), 0);
    assert_int_equal(tc_write_text(tc_join(tmp, "c9.json"), "{\"name\": \"bad\", \"layers\": [9]}"), 0);
    const char *base = "--prompt 'a photo of a red cat' --steps 2 --cfg 4 --height 16 --width 24 --max-sequence-length 8";
    const char *tags[] = {"none", "c0", "c1"};
    for (int i = 0; i < 3; i++) {
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
    assert_non_null(a), assert_non_null(b), assert_non_null(c);
    assert_memory_equal(a, b, n * sizeof *a);
    assert_true(tc_rel_l2(c, a, n) > 1e-4);
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s generate --model %s %s --condition %s/c9.json --out %s/x.png", tc_bin(),
                                dir, base, tmp, tmp), 0);
    if (!strstr(buf, "c9.json") || !strstr(buf, "block 9")) fail_msg("got: %s", buf);
    free(a), free(b), free(c);
    tc_rmtree(tmp);
    free(tmp);
}

/* The library's one-call API (everything loaded at once) gives the reference image too, and the
 * staged path refuses to encode after the encoders were released. */
static void test_library(void **state) {
    (void)state;
    const char *dir = tc_path("fixtures/sd3-pipeline-tiny");
    char in[1200], exp[1200];
    snprintf(in, sizeof in, "%s/inputs.safetensors", dir);
    snprintf(exp, sizeof exp, "%s/expected.safetensors", dir);
    sd3pipe *p;
    if (sd3pipe_load(&p, dir) < 0) fail_msg("%s", ss_err());
    assert_non_null(p->transformer);
    const char *prompts[] = {"a photo of a red cat", "two dogs"};
    sd3pipe_params q;
    sd3pipe_params_default(&q);
    assert_int_equal(q.steps, 28);
    q.prompts = prompts, q.n_prompts = 2, q.steps = 4, q.cfg = 4.0, q.height = 16, q.width = 24, q.max_sequence_length = 32;
    size_t nl, ni;
    q.latents = tc_load(in, "latents", &nl, NULL, NULL);
    float *ref = tc_load(exp, "image", &ni, NULL, NULL), *img = malloc(ni * sizeof *img);
    assert_int_equal(sd3pipe_generate(p, &q, img, NULL, NULL), 0);
    double m = 0;
    for (size_t i = 0; i < ni; i++) m = fmax(m, fabs((double)img[i] - ref[i]));
    assert_true(m <= 1e-4);
    float ctx[1], pooled[1];
    sd3pipe_release_encoders(p);
    assert_true(sd3pipe_encode(p, &q, ctx, pooled) < 0);
    assert_non_null(strstr(ss_err(), "released"));
    free((void *)q.latents), free(ref), free(img);
    sd3pipe_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_ids),      cmocka_unit_test(test_reference),  cmocka_unit_test(test_variants),
        cmocka_unit_test(test_latents_roundtrip), cmocka_unit_test(test_bad_folders), cmocka_unit_test(test_shapeworld_latents), cmocka_unit_test(test_library), cmocka_unit_test(test_conditions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
