/* CLIP vision tower (src/metric/clip_vision.h) against transformers 4.39's
 * CLIPVisionModelWithProjection (random small configs, F32 and BF16 weights, float64 reference)
 * and against open_clip 2.24's own VisionTransformer (ViT-B-32 layout, made small, converted to
 * transformers names): image_embeds (and the hidden states where stored) at relative L2 <= 1e-5.
 * Fixtures: tests/fixtures/clip-t-random (tests/gen/gen_clip_t.py). Bad folders fail cleanly. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/err.h"
#include "metric/clip_vision.h"

#define FIX "fixtures/clip-t-random"

static void check_folder(const char *name, int with_hidden) {
    const char *dir = tc_path(FIX "/%s", name);
    clipv *m;
    if (clipv_open(&m, dir) < 0) fail_msg("%s", ss_err());
    const clipv_config *c = clipv_get_config(m);
    size_t n;
    int64_t shape[8];
    int ndim;
    float *pv = tc_load(tc_path(FIX "/%s/inputs.safetensors", name), "pixel_values", &n, shape, &ndim);
    assert_non_null(pv);
    assert_int_equal(ndim, 4);
    assert_int_equal(shape[1], c->channels);
    assert_int_equal(shape[2], c->image_size);
    int B = (int)shape[0], E = clipv_embed_dim(m);
    const char *ex = tc_path(FIX "/%s/expected.safetensors", name);
    float *want = tc_load(ex, "image_embeds", &n, NULL, NULL);
    assert_non_null(want);
    assert_int_equal(n, (size_t)B * E);
    size_t nh = (size_t)B * c->tokens * c->hidden;
    float *emb = malloc((size_t)B * E * sizeof *emb), *h0 = malloc(nh * 4), *last = malloc(nh * 4);
    assert_int_equal(clipv_run(m, pv, B, emb, h0, last), 0);
    double r = tc_rel_l2(emb, want, n);
    fprintf(stderr, "%s: image_embeds rel L2 %.3g\n", name, r);
    assert_true(r <= 1e-5);
    if (with_hidden) {
        const char *names[2] = {"hidden_states.0", "last_hidden_state"};
        float *got[2] = {h0, last};
        for (int i = 0; i < 2; i++) {
            float *w = tc_load(ex, names[i], &n, NULL, NULL);
            assert_non_null(w);
            assert_int_equal(n, nh);
            r = tc_rel_l2(got[i], w, n);
            fprintf(stderr, "%s: %s rel L2 %.3g\n", name, names[i], r);
            assert_true(r <= 1e-5);
            free(w);
        }
    }
    free(pv), free(want), free(emb), free(h0), free(last);
    clipv_free(m);
}

static void test_vision_p16_s64_f32(void **s) { (void)s, check_folder("vision-p16-s64-f32", 1); }
static void test_vision_p32_s96_gelu_bf16(void **s) { (void)s, check_folder("vision-p32-s96-gelu-bf16", 1); }
static void test_vision_p16_s224_bf16(void **s) { (void)s, check_folder("vision-p16-s224-bf16", 1); }
static void test_openclip_b32_small(void **s) { (void)s, check_folder("openclip-b32-small", 0); }

/* The vision tower of a full CLIPModel folder (model_type "clip", defaults for omitted keys). */
static void test_full_clip_folder(void **s) {
    (void)s;
    clipv *m;
    if (clipv_open(&m, tc_path(FIX "/model")) < 0) fail_msg("%s", ss_err());
    const clipv_config *c = clipv_get_config(m);
    assert_int_equal(c->hidden, 32);
    assert_int_equal(c->image_size, 224); /* omitted by save_pretrained: the default */
    assert_int_equal(c->patch, 32);
    assert_int_equal(c->tokens, 50);
    assert_int_equal(c->proj_dim, 24); /* the top-level projection_dim */
    clipv_free(m);
}

static void test_bad_folders(void **s) {
    (void)s;
    char *d = tc_tmpdir();
    char buf[4096];
    clipv *m = (clipv *)1;
    /* no config */
    assert_true(clipv_open(&m, d) < 0);
    assert_null(m);
    assert_non_null(strstr(ss_err(), "config.json"));
    /* a text config */
    snprintf(buf, sizeof buf, "%s/config.json", d);
    tc_write_text(buf, "{\"model_type\": \"clip_text_model\"}");
    assert_true(clipv_open(&m, d) < 0);
    assert_non_null(strstr(ss_err(), "clip_text_model"));
    /* a bad field */
    tc_write_text(buf, "{\"model_type\": \"clip_vision_model\", \"patch_size\": -3}");
    assert_true(clipv_open(&m, d) < 0);
    assert_non_null(strstr(ss_err(), "patch_size"));
    tc_write_text(buf, "{\"model_type\": \"clip\", \"vision_config\": {\"hidden_size\": 30, \"num_attention_heads\": 4}}");
    assert_true(clipv_open(&m, d) < 0);
    assert_non_null(strstr(ss_err(), "vision_config.hidden_size"));
    /* weights of another shape: the tensor is named */
    tc_write_text(buf, "{\"model_type\": \"clip_vision_model\", \"hidden_size\": 32, \"num_attention_heads\": 2,"
                       " \"intermediate_size\": 37, \"num_hidden_layers\": 2, \"image_size\": 64, \"patch_size\": 8,"
                       " \"projection_dim\": 24}");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp %s %s/model.safetensors", tc_path(FIX "/vision-p16-s64-f32/model.safetensors"), d);
    assert_int_equal(system(cmd), 0);
    assert_true(clipv_open(&m, d) < 0);
    fprintf(stderr, "expected error: %s\n", ss_err());
    assert_non_null(strstr(ss_err(), "patch_embedding.weight"));
    assert_non_null(strstr(ss_err(), "expected [32, 3, 8, 8]"));
    tc_rmtree(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vision_p16_s64_f32),  cmocka_unit_test(test_vision_p32_s96_gelu_bf16),
        cmocka_unit_test(test_vision_p16_s224_bf16), cmocka_unit_test(test_openclip_b32_small),
        cmocka_unit_test(test_full_clip_folder),     cmocka_unit_test(test_bad_folders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
