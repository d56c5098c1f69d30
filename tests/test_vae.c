/* Tests for src/vae (AutoencoderKL) and `sinkscope vae`: every expected tensor of the
 * reference set's vae-tiny-16ch / vae-tiny-4ch and of our diffusers-made variants
 * (tests/fixtures/vae-variants: 1 and 3 blocks, 1-3 layers, 1/2/4/8 groups, no mid attention,
 * batch 1-3, non-square latents, odd image sizes, F16/BF16 weights), stage outputs included, at
 * relative L2 <= 1e-5; results bit-identical at 1 and 2 threads; the tiled convolution with the
 * asymmetric pad against a direct loop; damaged folders give one-line errors naming the file and
 * the tensor or field. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn/conv.h"
#include "nn/dnnl_conv.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "vae/vae.h"

#define TOL 1e-5

static double g_worst; /* the largest rel L2 seen, printed */
static const char *g_worst_at = "";
static char g_worst_buf[256];

static void note(double e, const char *exp, const char *name) {
    if (e > g_worst) {
        g_worst = e;
        snprintf(g_worst_buf, sizeof g_worst_buf, "%s %s", exp, name);
        g_worst_at = g_worst_buf;
    }
}

static const char *const FOLDERS[] = {
    "vae-tiny-16ch", "vae-tiny-4ch", "vae-variants/b3-l2-g2-shift", "vae-variants/b2-g8-quant-f16",
    "vae-variants/b3-g4-noattn-bf16", "vae-variants/b1-l3-g1",
};

typedef struct {
    const char *expected;
    int B, checked;
    float *buf[32];
    char name[32][80];
    int n;
} stage_cmp;

static int on_stage(void *ctx, const char *name, int b, const float *x, int C, int H, int W) {
    stage_cmp *s = ctx;
    char full[80];
    snprintf(full, sizeof full, "stage.%s", name);
    int i = 0;
    while (i < s->n && strcmp(s->name[i], full)) i++;
    const size_t n = (size_t)C * H * W;
    if (i == s->n) {
        assert_true(s->n < 32);
        snprintf(s->name[i], sizeof s->name[i], "%s", full);
        s->buf[i] = calloc(n * s->B, sizeof(float));
        s->n++;
    }
    memcpy(s->buf[i] + (size_t)b * n, x, n * sizeof(float));
    if (b == s->B - 1) {
        size_t ne;
        int64_t shp[8];
        int nd;
        float *ref = tc_load(s->expected, full, &ne, shp, &nd);
        if (!ref) fail_msg("%s: no expected '%s'", s->expected, full);
        assert_int_equal(ne, n * s->B);
        assert_int_equal(shp[1], C), assert_int_equal(shp[2], H), assert_int_equal(shp[3], W);
        const double e = tc_rel_l2(s->buf[i], ref, ne);
        note(e, s->expected, full);
        if (!(e <= TOL)) fail_msg("%s %s: rel L2 %.3e", s->expected, full, e);
        s->checked++;
        free(ref);
    }
    return 0;
}

static void stage_cmp_free(stage_cmp *s) {
    for (int i = 0; i < s->n; i++) free(s->buf[i]);
}

static void check(const char *exp, const char *name, const float *x, size_t n) {
    size_t ne;
    float *ref = tc_load(exp, name, &ne, NULL, NULL);
    if (!ref) fail_msg("%s: no expected '%s'", exp, name);
    assert_int_equal(ne, n);
    const double e = tc_rel_l2(x, ref, n);
    note(e, exp, name);
    if (!(e <= TOL)) fail_msg("%s %s: rel L2 %.3e", exp, name, e);
    free(ref);
}

/* Every expected tensor of one folder; also returns the raw decode and moments for the thread check. */
static void run_folder(const char *folder, int with_stages, float **raw_out, float **mom_out, size_t *nraw, size_t *nmom) {
    const char *dir = tc_path("fixtures/%s", folder);
    char in[1200], exp[1200];
    snprintf(in, sizeof in, "%s/inputs.safetensors", dir);
    snprintf(exp, sizeof exp, "%s/expected.safetensors", dir);
    vae_model *m;
    if (vae_load(&m, dir) < 0) fail_msg("%s", ss_err());
    size_t nl, ni;
    int64_t ls[8], is[8];
    int nd;
    float *lat = tc_load(in, "latents", &nl, ls, &nd), *img = tc_load(in, "image", &ni, is, &nd);
    assert_non_null(lat), assert_non_null(img);
    const int f = vae_factor(m), B = (int)ls[0], h = (int)ls[2], w = (int)ls[3];
    const size_t n = (size_t)B * m->cfg.out_channels * h * f * w * f;
    float *out = malloc(n * sizeof *out);
    stage_cmp sc = {.expected = exp, .B = B};
    assert_int_equal(vae_decode(m, out, lat, B, h, w, with_stages ? on_stage : NULL, &sc), 0);
    check(exp, "decoded_raw", out, n);
    float *raw = malloc(n * sizeof *raw);
    memcpy(raw, out, n * sizeof *raw);
    vae_unscale(m, lat, nl);
    assert_int_equal(vae_decode(m, out, lat, B, h, w, NULL, NULL), 0);
    check(exp, "decoded", out, n);
    const int Bi = (int)is[0], H = (int)is[2], W = (int)is[3];
    int eh, ew;
    vae_encoded_size(m, H, W, &eh, &ew);
    const size_t nm = (size_t)Bi * m->cfg.latent_channels * eh * ew;
    float *mom = malloc(2 * nm * sizeof *mom), *mean = malloc(nm * sizeof *mean), *lv = malloc(nm * sizeof *lv),
          *scl = malloc(nm * sizeof *scl);
    sc.B = Bi;
    assert_int_equal(vae_encode(m, mom, img, Bi, H, W, with_stages ? on_stage : NULL, &sc), 0);
    vae_moments_split(m, mom, Bi, eh, ew, mean, lv, scl);
    check(exp, "encoded_moments", mom, 2 * nm);
    check(exp, "encoded_mean", mean, nm);
    check(exp, "encoded_logvar", lv, nm);
    check(exp, "encoded_mean_scaled", scl, nm);
    if (with_stages) assert_int_equal(sc.checked, 2 + m->cfg.n_blocks + 2 + m->cfg.n_blocks);
    stage_cmp_free(&sc);
    if (raw_out) *raw_out = raw, *nraw = n;
    else free(raw);
    if (mom_out) *mom_out = mom, *nmom = 2 * nm;
    else free(mom);
    free(out), free(mean), free(lv), free(scl), free(lat), free(img);
    vae_free(m);
}

/* Every folder through oneDNN's convolution (nn/dnnl_conv.h) and through the im2col path. */
static void test_fixtures(void **state) {
    (void)state;
    const ss_conv2d c3 = {.cin = 32, .cout = 32, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
    print_message("oneDNN conv for 32->32 3x3 on 16x16: %s\n", ss_dnnl_conv_impl(&c3, 16, 16, 0));
    for (int path = 0; path < 2; path++) {
        ss_dnnl_conv_enable(path == 0);
        g_worst = 0, g_worst_at = "";
        for (size_t i = 0; i < sizeof FOLDERS / sizeof FOLDERS[0]; i++) run_folder(FOLDERS[i], 1, NULL, NULL, NULL, NULL);
        print_message("%s: worst rel L2 vs diffusers %.3e (%s)\n", path == 0 ? "oneDNN conv" : "im2col conv", g_worst,
                      g_worst_at);
    }
    ss_dnnl_conv_enable(1);
}

static void test_threads(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    for (int i = 0; i < 3; i++) {
        float *r1, *m1, *r2, *m2;
        size_t nr, nm;
        omp_set_num_threads(1);
        run_folder(FOLDERS[i], 0, &r1, &m1, &nr, &nm);
        for (int t = 2; t <= 3; t++) {
            omp_set_num_threads(t);
            run_folder(FOLDERS[i], 0, &r2, &m2, &nr, &nm);
            assert_memory_equal(r1, r2, nr * sizeof *r1);
            assert_memory_equal(m1, m2, nm * sizeof *m1);
            free(r2), free(m2);
        }
        free(r1), free(m1);
    }
    omp_set_num_threads(saved);
}

/* op_conv2d_tiled (several column tiles, the asymmetric pad) against a direct double loop. */
static void test_tiled_conv(void **state) {
    (void)state;
    const struct { int cin, cout, k, s, p, pe, H, W; } cases[] = {
        {3, 5, 3, 1, 1, 0, 23, 29}, {4, 6, 3, 2, 0, 1, 17, 24}, {6, 4, 1, 1, 0, 0, 19, 31}, {2, 3, 3, 2, 0, 1, 8, 9},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        ss_conv2d c = {0};
        c.cin = cases[ci].cin, c.cout = cases[ci].cout, c.kh = c.kw = cases[ci].k, c.stride = cases[ci].s, c.pad = cases[ci].p;
        const int H = cases[ci].H, W = cases[ci].W, pe = cases[ci].pe;
        const int Ho = conv_out_size(H + pe, c.kh, c.stride, c.pad), Wo = conv_out_size(W + pe, c.kw, c.stride, c.pad);
        const size_t nw = (size_t)c.cout * c.cin * c.kh * c.kw, nx = (size_t)c.cin * H * W, ny = (size_t)c.cout * Ho * Wo;
        float *w = malloc(nw * 4), *b = malloc(c.cout * 4), *x = malloc(nx * 4), *y = malloc(ny * 4), *y2 = malloc(ny * 4);
        tc_fill(w, nw, 11 + ci, 0.5f), tc_fill(b, c.cout, 12 + ci, 0.5f), tc_fill(x, nx, 13 + ci, 1.0f);
        c.w = w, c.b = b;
        omp_set_num_threads(1);
        assert_int_equal(op_conv2d_tiled(y, x, &c, H, W, pe), 0);
        omp_set_num_threads(2);
        assert_int_equal(op_conv2d_tiled(y2, x, &c, H, W, pe), 0);
        assert_memory_equal(y, y2, ny * 4);
        double err = 0, nrm = 0;
        for (int o = 0; o < c.cout; o++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = b[o];
                    for (int i = 0; i < c.cin; i++)
                        for (int ky = 0; ky < c.kh; ky++)
                            for (int kx = 0; kx < c.kw; kx++) {
                                const int iy = oy * c.stride - c.pad + ky, ix = ox * c.stride - c.pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue; /* zero pad incl. the end pad */
                                s += (double)w[((o * c.cin + i) * c.kh + ky) * c.kw + kx] * x[((size_t)i * H + iy) * W + ix];
                            }
                    const double d = y[((size_t)o * Ho + oy) * Wo + ox] - s;
                    err += d * d, nrm += s * s;
                }
        assert_true(sqrt(err / nrm) < 1e-6);
        free(w), free(b), free(x), free(y), free(y2);
    }
}

/* A copy of vae-tiny-4ch with one file replaced or edited by `edit` (a shell command run in the copy). */
static void expect_error(const char *edit, const char *want1, const char *want2) {
    char *tmp = tc_tmpdir(), buf[4096];
    assert_int_equal(tc_run(buf, sizeof buf, "cp %s/config.json %s/diffusion_pytorch_model.safetensors %s/inputs.safetensors %s/ && cd %s && %s",
                            tc_path("fixtures/vae-tiny-4ch"), tc_path("fixtures/vae-tiny-4ch"), tc_path("fixtures/vae-tiny-4ch"),
                            tmp, tmp, edit), 0);
    const int rc = tc_run(buf, sizeof buf, "%s vae --model %s --inputs %s/inputs.safetensors --out %s/out.safetensors", tc_bin(),
                          tmp, tmp, tmp);
    assert_int_not_equal(rc, 0);
    if (!strstr(buf, want1) || (want2 && !strstr(buf, want2))) fail_msg("edit '%s': got: %s", edit, buf);
    int lines = 0;
    for (const char *p = buf; *p; p++) lines += *p == '\n';
    if (lines != 1) fail_msg("edit '%s': expected one line, got: %s", edit, buf);
    tc_rmtree(tmp);
    free(tmp);
}

static void test_damaged(void **state) {
    (void)state;
    /* wrong widths: every tensor is checked against the config */
    expect_error("sed -i 's/\"latent_channels\": 4/\"latent_channels\": 8/' config.json", "encoder.conv_out.weight",
                 "the config implies");
    expect_error("sed -i 's/\"norm_num_groups\": 4/\"norm_num_groups\": 3/' config.json", "config.json",
                 "norm_num_groups");
    expect_error("sed -i 's/\"use_quant_conv\": true/\"use_quant_conv\": 1/' config.json", "config.json", "use_quant_conv");
    expect_error("sed -i 's/\"act_fn\": \"silu\"/\"act_fn\": \"gelu\"/' config.json", "config.json", "act_fn");
    expect_error("sed -i 's/\"UpDecoderBlock2D\"/\"AttnUpDecoderBlock2D\"/' config.json", "config.json", "up_block_types");
    expect_error("sed -i 's/\"DownEncoderBlock2D\",/\"DownEncoderBlock2D\",\"DownEncoderBlock2D\",/' config.json",
                 "config.json", "down_block_types");
    /* a tensor renamed away: missing */
    expect_error("sed -i 's/post_quant_conv.bias/post_quant_conv.bia0/' diffusion_pytorch_model.safetensors",
                 "post_quant_conv.bias", "missing");
    /* truncated weights */
    expect_error("head -c 100000 diffusion_pytorch_model.safetensors > t && mv t diffusion_pytorch_model.safetensors",
                 "diffusion_pytorch_model.safetensors", NULL);
    expect_error("rm config.json", "config.json", NULL);
}

static void test_cli(void **state) {
    (void)state;
    char *tmp = tc_tmpdir(), buf[4096], out[1200];
    const char *dir = tc_path("fixtures/vae-tiny-16ch");
    snprintf(out, sizeof out, "%s/out.safetensors", tmp);
    assert_int_equal(tc_run(buf, sizeof buf, "%s vae --model %s --inputs %s/inputs.safetensors --out %s --stages --threads 1",
                            tc_bin(), dir, dir, out), 0);
    char exp[1200];
    snprintf(exp, sizeof exp, "%s/expected.safetensors", dir);
    static const char *const names[] = {"decoded", "decoded_raw", "encoded_moments", "encoded_mean", "encoded_logvar",
                                        "encoded_mean_scaled", "stage.dec.conv_in", "stage.dec.mid_block",
                                        "stage.dec.up_blocks.0", "stage.dec.up_blocks.1", "stage.enc.conv_in",
                                        "stage.enc.down_blocks.0", "stage.enc.down_blocks.1", "stage.enc.mid_block"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t n, ne;
        float *x = tc_load(out, names[i], &n, NULL, NULL), *r = tc_load(exp, names[i], &ne, NULL, NULL);
        if (!x) fail_msg("sinkscope vae wrote no '%s'", names[i]);
        assert_int_equal(n, ne);
        const double e = tc_rel_l2(x, r, n);
        if (!(e <= TOL)) fail_msg("cli %s: rel L2 %.3e", names[i], e);
        free(x), free(r);
    }
    /* the output may not overwrite the inputs; an input of the wrong width is refused naming it */
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s vae --model %s --inputs %s/inputs.safetensors --out %s/inputs.safetensors",
                                tc_bin(), dir, dir, dir), 0);
    assert_non_null(strstr(buf, "refusing"));
    const char *dir4 = tc_path("fixtures/vae-tiny-4ch");
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s vae --model %s --inputs %s/inputs.safetensors --out %s", tc_bin(), dir4,
                                dir, out), 0);
    if (!strstr(buf, "'latents' must be [B, 4, H, W]")) fail_msg("got: %s", buf);
    /* a NaN in the inputs is refused naming the tensor, not decoded into an image */
    char nanin[1200];
    snprintf(nanin, sizeof nanin, "%s/nan.safetensors", tmp);
    {
        float lat[16 * 2 * 2];
        for (int i = 0; i < 64; i++) lat[i] = 0.1f * i;
        lat[37] = NAN;
        st_writer *w = st_writer_new();
        assert_int_equal(st_writer_add_f32(w, "latents", ST_F32, 4, (int64_t[]){1, 16, 2, 2}, lat), 0);
        assert_int_equal(st_writer_save(w, nanin), 0);
        st_writer_free(w);
    }
    assert_int_not_equal(tc_run(buf, sizeof buf, "%s vae --model %s --inputs %s --out %s", tc_bin(), dir, nanin, out), 0);
    if (!strstr(buf, "nan.safetensors: 'latents' has a non-finite value (NaN) at flat index 37")) fail_msg("got: %s", buf);
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiled_conv), cmocka_unit_test(test_fixtures), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_damaged),    cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
