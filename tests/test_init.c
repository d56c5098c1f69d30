/* init: `sinkscope init` for every family (models/init.c): random-weight folders and forward
 * inputs that `sinkscope forward` runs; bits pinned for SD3 and FLUX (what the per-family writers
 * wrote before they shared models/init.c), seeds reproducible, bad requests refused by name. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "exp/digest.h"
#include "io/safetensors.h"
#include "models/family.h"
#include "models/flux.h"
#include "models/pixart.h"
#include "models/sd3.h"

static void file_sha(const char *path, char hex[DIGEST_HEX]) {
    if (digest_file(path, hex) < 0) fail_msg("%s", ss_err());
}

/* Pins: the SD3 writer's bytes (sd3-tiny-a's config, seed 3, BF16, with inputs) and FLUX's
 * (flux-tiny-a, seed 9, BF16), as written by sd3_init.c / flux_init.c before models/init.c. */
static void test_pinned_bits(void **st) {
    char *root = tc_tmpdir(), buf[4096], hex[DIGEST_HEX];
    const char *m = tc_join(root, "sd3"), *in = tc_join(root, "in.safetensors");
    int rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s --seed 3 --dtype bf16 --inputs %s", tc_bin(),
                    tc_path("fixtures/sd3-tiny-a/config.json"), m, in);
    if (rc) fail_msg("init: %s", buf);
    file_sha(tc_join(m, "diffusion_pytorch_model.safetensors"), hex);
    assert_string_equal(hex, "51da7cd487a45dc1bce6c9a985284b85144f7b8d7a7adc2350acd51bad297c78");
    file_sha(in, hex);
    assert_string_equal(hex, "dc15bc09bc33fe408a356e8b9a8984c5d1bbc047b3af8824de876c9086b932e3");
    flux_config c;
    assert_int_equal(flux_config_load(&c, tc_path("fixtures/flux-tiny-a/config.json")), 0);
    const char *fm = tc_join(root, "flux");
    if (flux_init_random(&c, fm, 9, ST_BF16) < 0) fail_msg("%s", ss_err());
    file_sha(tc_join(fm, "diffusion_pytorch_model.safetensors"), hex);
    assert_string_equal(hex, "37614e05576f5d49d878fef53bae76a570c3b04c789ce8408742cc68396729aa");
    tc_rmtree(root);
    free(root);
}

/* init then forward with --probe all for one family's config; returns the output's numel. */
static size_t init_and_forward(const char *root, const char *fixture, const char *extra, int seed) {
    char buf[8192];
    const char *m = tc_join(root, "%s-%d", fixture, seed);
    char in[4096], out[4096];
    snprintf(in, sizeof in, "%s/in.safetensors", m);
    snprintf(out, sizeof out, "%s/out.safetensors", m);
    int rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s --seed %d --inputs %s %s", tc_bin(),
                    tc_path("fixtures/%s/config.json", fixture), m, seed, in, extra);
    if (rc) fail_msg("init %s: %s", fixture, buf);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --probe all", tc_bin(), m, in, out);
    if (rc) fail_msg("forward %s: %s", fixture, buf);
    size_t n;
    float *y = tc_load(out, "sample", &n, NULL, NULL);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(y[i])) fail_msg("%s: sample[%zu] is not finite", fixture, i);
    free(y);
    return n;
}

static void test_every_family_runs(void **st) {
    char *root = tc_tmpdir();
    /* SD3 (and SD3.5 with dual attention), FLUX dev (guidance) with an 8x6 latent, PixArt with a
     * batch of 3 (masks of 0, 1 and 2 padded tokens) and a non-square latent */
    assert_int_equal(init_and_forward(root, "sd3-tiny-a", "--batch 2 --text-len 5", 1), 2 * 4 * 8 * 8);
    assert_true(init_and_forward(root, "sd35-tiny-b", "--batch 1 --text-len 3", 1) > 0);
    size_t nf = init_and_forward(root, "flux-tiny-a", "--batch 2 --latent 8x6 --text-len 7", 1);
    assert_int_equal(nf % (2 * 4 * 3), 0); /* [2, 12 tokens, out channels] */
    assert_true(init_and_forward(root, "pixart-tiny-a", "--batch 3 --latent 8x12 --text-len 6", 1) > 0);
    assert_true(init_and_forward(root, "pixart-tiny-b", "--batch 2 --text-len 4", 1) > 0);
    /* the PixArt mask: batch element b masks its last b tokens */
    size_t n;
    int64_t shape[4];
    int nd;
    float *mask = tc_load(tc_join(root, "pixart-tiny-a-1/in.safetensors"), "encoder_attention_mask", &n, shape, &nd);
    assert_non_null(mask);
    assert_int_equal(nd, 2);
    assert_int_equal(shape[0], 3);
    assert_int_equal(shape[1], 6);
    float sum[3] = {0};
    for (int b = 0; b < 3; b++)
        for (int s = 0; s < 6; s++) sum[b] += mask[b * 6 + s];
    assert_true(sum[0] == 6 && sum[1] == 5 && sum[2] == 4);
    free(mask);
    /* same seed, same bytes; another seed, other weights */
    init_and_forward(root, "pixart-tiny-a", "--batch 3 --latent 8x12 --text-len 6", 2);
    char a[DIGEST_HEX], b[DIGEST_HEX];
    file_sha(tc_join(root, "pixart-tiny-a-1/diffusion_pytorch_model.safetensors"), a);
    file_sha(tc_join(root, "pixart-tiny-a-2/diffusion_pytorch_model.safetensors"), b);
    assert_string_not_equal(a, b);
    char buf[4096];
    int rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s --seed 1", tc_bin(),
                    tc_path("fixtures/pixart-tiny-a/config.json"), tc_join(root, "again"));
    if (rc) fail_msg("%s", buf);
    file_sha(tc_join(root, "again/diffusion_pytorch_model.safetensors"), b);
    assert_string_equal(a, b);
    tc_rmtree(root);
    free(root);
}

static void test_bad_requests(void **st) {
    char *root = tc_tmpdir(), buf[4096];
    /* FLUX packs 2x2: an odd latent is refused before anything is written */
    int rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s --inputs %s --latent 5x4", tc_bin(),
                    tc_path("fixtures/flux-tiny-a/config.json"), tc_join(root, "f"), tc_join(root, "f.safetensors"));
    assert_int_equal(rc, 2);
    assert_non_null(strstr(buf, "must be even"));
    assert_int_equal(access(tc_join(root, "f"), F_OK), -1); /* no model folder either */
    rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s --inputs %s --latent 6x7", tc_bin(),
                tc_path("fixtures/pixart-tiny-a/config.json"), tc_join(root, "q"), tc_join(root, "q.safetensors"));
    assert_int_equal(rc, 2);
    assert_non_null(strstr(buf, "multiples of the patch size"));
    assert_int_equal(access(tc_join(root, "q"), F_OK), -1);
    /* an unknown class names the file and the classes sinkscope runs */
    const char *cfg = tc_join(root, "bad.json");
    assert_int_equal(tc_write_text(cfg, "{\"_class_name\": \"UNet2DConditionModel\"}"), 0);
    rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s", tc_bin(), cfg, tc_join(root, "u"));
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "bad.json"));
    assert_non_null(strstr(buf, "UNet2DConditionModel"));
    assert_non_null(strstr(buf, "FluxTransformer2DModel"));
    /* a PixArt config with a broken field names the field */
    assert_int_equal(tc_write_text(cfg, "{\"_class_name\": \"PixArtTransformer2DModel\", \"num_layers\": -2}"), 0);
    rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s", tc_bin(), cfg, tc_join(root, "p"));
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(buf, "num_layers"));
    tc_rmtree(root);
    free(root);
}

/* The family table's flops entry: the family's own count for the fixture's inputs (forward's
 * shapes), positive, and proportional to the batch. */
static void test_family_flops(void **st) {
    const char *fx[] = {"sd3-tiny-a", "sd35-tiny-b", "flux-tiny-a", "pixart-tiny-a"};
    for (int i = 0; i < 4; i++) {
        const char *dir = tc_path("fixtures/%s", fx[i]);
        const ss_family *fam;
        void *m;
        if (ss_family_detect(dir, &fam) < 0 || fam->load(&m, dir) < 0) fail_msg("%s: %s", fx[i], ss_err());
        st_file *in;
        if (st_open(&in, tc_path("fixtures/%s/inputs.safetensors", fx[i])) < 0) fail_msg("%s", ss_err());
        ss_fwd_inputs io;
        if (fam->inputs(m, in, "inputs", &io) < 0) fail_msg("%s: %s", fx[i], ss_err());
        const double f = fam->flops(m, &io);
        double want;
        if (!strcmp(fam->name, "flux"))
            want = flux_forward_flops(&((const flux_model *)m)->cfg, io.B, io.N, io.S);
        else if (!strcmp(fam->name, "pixart"))
            want = pixart_forward_flops(&((const pixart_model *)m)->cfg, io.B, (int)io.out_shape[2], (int)io.out_shape[3], io.S);
        else
            want = sd3_forward_flops(&((const sd3_model *)m)->cfg, io.B, (int)io.out_shape[2], (int)io.out_shape[3], io.S);
        assert_true(f > 0 && f == want);
        const int B = io.B;
        io.B = 2 * B;
        assert_true(fabs(fam->flops(m, &io) - 2 * f) <= 1e-9 * f);
        io.B = B;
        print_message("%s (%s): %.3g flops for batch %d, %d image + %d text tokens\n", fx[i], fam->name, f, B, io.N, io.S);
        ss_fwd_inputs_free(&io);
        st_close(in);
        fam->free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pinned_bits),
        cmocka_unit_test(test_every_family_runs),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_family_flops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
