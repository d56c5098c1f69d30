/* Tests for src/metric/fid (the Fréchet distance): parity with pytorch-fid's
 * calculate_frechet_distance (scipy sqrtm) and an exact float64 eigh reference on feature sets of
 * 16 to 2048 dimensions, most rank-deficient (N < dim), from tests/gen/gen_fid_frechet.py
 * (tests/fixtures/fid/frechet.json); the feature sets are re-created here from the generator's
 * counter-based hash. Also the eps rule's second branch, thread-count independence and errors.
 * And pytorch-fid's InceptionV3 pool3 features (tests/gen/gen_fid_inception.py): random weights
 * under the real pt_inception-2015-12-05 names and shapes, re-created here from the generator's
 * hash formula, on PNGs of several sizes (resized to 299 inside the network). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fid_weights.h"
#include "core/err.h"
#include "io/png.h"
#include "metric/cleanfid.h"
#include "metric/fid.h"
#include "io/safetensors.h"
#include "metric/inception.h"

#define FIX "tests/fixtures/fid"

/* The generator's hash: ((splitmix64(seed * 2^32 + i) >> 40) / 2^24) * 2 - 1. */
static double hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = (seed << 32) + i + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 40) / 16777216.0 * 2.0 - 1.0;
}

/* X[i, j] = u(seed)[i d + j] + 2 u(seed+1)[4 i + j % 4] + shift u(seed+2)[j] (the generator's). */
static double *features(uint64_t seed, int n, int d, double shift, double *sum) {
    double *x = malloc((size_t)n * d * sizeof *x);
    assert_non_null(x);
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double v = hash_uniform(seed, (uint64_t)i * d + j);
            v = v + 2.0 * hash_uniform(seed + 1, (uint64_t)i * 4 + j % 4);
            v = v + shift * hash_uniform(seed + 2, (uint64_t)j);
            x[(size_t)i * d + j] = v;
            s += v;
        }
    *sum = s;
    return x;
}

static json_t *load_cases(void) {
    json_error_t je;
    json_t *e = json_load_file(FIX "/frechet.json", JSON_PRESERVE_ORDER, &je);
    if (!e) fail_msg("%s: %s", FIX "/frechet.json", je.text);
    return e;
}

static double num(json_t *c, const char *k) {
    json_t *v = json_object_get(c, k);
    if (!v) fail_msg("frechet.json: no '%s'", k);
    return json_number_value(v);
}

static void case_stats(json_t *c, fid_stats *a, fid_stats *b) {
    int d = (int)num(c, "dim"), na = (int)num(c, "n_a"), nb = (int)num(c, "n_b");
    double sa, sb;
    double *xa = features((uint64_t)num(c, "seed_a"), na, d, 0.0, &sa);
    double *xb = features((uint64_t)num(c, "seed_b"), nb, d, num(c, "shift_b"), &sb);
    /* the sets are the generator's (a formula mismatch shows here, not as a distance error) */
    if (fabs(sa - num(c, "sum_a")) > 1e-9 * (1 + fabs(sa))) fail_msg("set a checksum %.12g vs %.12g", sa, num(c, "sum_a"));
    if (fabs(sb - num(c, "sum_b")) > 1e-9 * (1 + fabs(sb))) fail_msg("set b checksum %.12g vs %.12g", sb, num(c, "sum_b"));
    if (fid_stats_compute(a, xa, na, d) < 0 || fid_stats_compute(b, xb, nb, d) < 0) fail_msg("%s", ss_err());
    free(xa);
    free(xb);
}

static void check_rel(const char *tag, const char *what, double got, double want, double rel, double abs_floor) {
    double err = fabs(got - want), lim = rel * fabs(want) + abs_floor;
    printf("  %-14s %-10s %.12g  ref %.12g  rel %.2e\n", tag, what, got, want, want ? err / fabs(want) : err);
    if (!(err <= lim)) fail_msg("%s %s: %.15g vs %.15g (|d| %.3g > %.3g)", tag, what, got, want, err, lim);
}

static void test_parity(void **state) {
    (void)state;
    json_t *cases = load_cases();
    const char *tag;
    json_t *c;
    int n = 0;
    json_object_foreach(cases, tag, c) {
        fid_stats a, b;
        case_stats(c, &a, &b);
        fid_result r, re;
        if (fid_frechet(&a, &b, &r) < 0) fail_msg("%s: %s", tag, ss_err());
        assert_int_equal(r.eps_added, json_is_true(json_object_get(c, "eps_branch")));
        if (fid_frechet_offset(&a, &b, FID_EPS, &re) < 0) fail_msg("%s: %s", tag, ss_err());
        assert_int_equal(re.eps_added, 1);
        /* pytorch-fid (scipy's sqrtm keeps ~1e-6 relative error on rank-deficient products) and
         * the exact float64 reference (what this computes, up to summation order) */
        check_rel(tag, "vs scipy", r.fid, num(c, "fid"), 1e-5, 1e-9);
        check_rel(tag, "vs exact", r.fid, num(c, "fid_exact"), 1e-9, 1e-9);
        check_rel(tag, "eps scipy", re.fid, num(c, "fid_eps"), 1e-5, 1e-9);
        check_rel(tag, "eps exact", re.fid, num(c, "fid_eps_exact"), 1e-9, 1e-9);
        fid_stats_free(&a);
        fid_stats_free(&b);
        n++;
    }
    assert_int_equal(n, 5);
    json_decref(cases);
}

/* the same numbers with 1 thread and with several */
static void test_threads(void **state) {
    (void)state;
    json_t *cases = load_cases();
    json_t *c = json_object_get(cases, "d256_rankdef");
    assert_non_null(c);
    int saved = omp_get_max_threads();
    fid_result r[2];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t == 0 ? 1 : 3);
        fid_stats a, b;
        case_stats(c, &a, &b);
        if (fid_frechet(&a, &b, &r[t]) < 0) fail_msg("%s", ss_err());
        fid_stats_free(&a);
        fid_stats_free(&b);
    }
    omp_set_num_threads(saved);
    if (memcmp(&r[0].fid, &r[1].fid, sizeof(double)))
        fail_msg("1 thread %.17g, 3 threads %.17g", r[0].fid, r[1].fid);
    json_decref(cases);
}

/* hand-checkable: 1-d sets, FID = (mu1-mu2)^2 + (s1 - s2)^2 */
static void test_one_dim(void **state) {
    (void)state;
    const double xa[] = {1, 2, 3, 4}, xb[] = {0, 4, 8};
    fid_stats a, b;
    assert_int_equal(fid_stats_compute(&a, xa, 4, 1), 0);
    assert_int_equal(fid_stats_compute(&b, xb, 3, 1), 0);
    assert_true(fabs(a.mu[0] - 2.5) < 1e-15 && fabs(a.sigma[0] - 5.0 / 3) < 1e-15);
    fid_result r;
    assert_int_equal(fid_frechet(&a, &b, &r), 0);
    double want = (2.5 - 4) * (2.5 - 4) + pow(sqrt(5.0 / 3) - 4.0, 2);
    if (!(fabs(r.fid - want) < 1e-12)) fail_msg("1-d fid %.17g, want %.17g", r.fid, want);
    fid_stats_free(&a);
    fid_stats_free(&b);
}

static void test_errors(void **state) {
    (void)state;
    const double x[] = {1, 2, 3, 4, 5, 6};
    fid_stats a, b;
    assert_true(fid_stats_compute(&a, x, 1, 6) < 0);
    assert_non_null(strstr(ss_err(), "at least 2"));
    assert_true(fid_stats_compute(&a, x, 2, 0) < 0);
    assert_int_equal(fid_stats_compute(&a, x, 3, 2), 0);
    assert_int_equal(fid_stats_compute(&b, x, 2, 3), 0);
    fid_result r;
    assert_true(fid_frechet(&a, &b, &r) < 0);
    assert_non_null(strstr(ss_err(), "dimensions differ"));
    assert_true(fid_frechet_offset(&a, &a, -1, &r) < 0);
    fid_stats_free(&a);
    fid_stats_free(&b);
    const double bad[] = {1, NAN, 3, 4};
    assert_true(fid_stats_compute(&a, bad, 2, 2) < 0);
    assert_non_null(strstr(ss_err(), "not finite"));
}

/* ---- Inception ---- */

static inception_net *hash_net(void) {
    inception_net *net;
    int count = 0;
    if (inception_load_with(&net, tc_inception_hash_getter, &count) < 0) fail_msg("%s", ss_err());
    assert_int_equal(count, 94 * 5); /* 94 BasicConv2d: conv.weight + four bn tensors */
    return net;
}

static void test_inception_parity(void **state) {
    (void)state;
    json_error_t je;
    json_t *meta = json_load_file(FIX "/inception.json", 0, &je);
    if (!meta) fail_msg("%s: %s", FIX "/inception.json", je.text);
    json_t *imgs = json_object_get(meta, "images");
    size_t nimg = json_array_size(imgs), flen;
    assert_int_equal(nimg, 5);
    float *ref = (float *)tc_read_all(FIX "/features.f32", &flen);
    assert_non_null(ref);
    assert_int_equal(flen, nimg * INCEPTION_DIM * sizeof(float));
    inception_net *net = hash_net();
    float *got = malloc(nimg * INCEPTION_DIM * sizeof *got);
    assert_non_null(got);
    for (size_t k = 0; k < nimg; k++) {
        json_t *m = json_array_get(imgs, k);
        int w, h;
        uint8_t *rgb;
        const char *file = json_string_value(json_object_get(m, "file"));
        assert_int_equal(png_read_rgb(tc_join(FIX, "%s", file), &w, &h, &rgb), 0);
        assert_int_equal(w, json_integer_value(json_object_get(m, "w")));
        assert_int_equal(h, json_integer_value(json_object_get(m, "h")));
        if (inception_features_rgb(net, rgb, w, h, got + k * INCEPTION_DIM) < 0) fail_msg("%s", ss_err());
        free(rgb);
        double rel = tc_rel_l2(got + k * INCEPTION_DIM, ref + k * INCEPTION_DIM, INCEPTION_DIM);
        printf("  %-9s %2dx%-2d pool3 rel L2 %.2e\n", file, w, h, rel);
        if (!(rel <= 1e-4)) fail_msg("%s: pool3 features rel L2 %.3g > 1e-4", file, rel);
    }
    /* the image-dependent part (features minus their mean over the images) too: the mean of a
     * random network's features dominates, so this is the sharper check */
    for (size_t k = 0; k < nimg; k++) {
        double num = 0, den = 0;
        for (int c = 0; c < INCEPTION_DIM; c++) {
            double mg = 0, mr = 0;
            for (size_t j = 0; j < nimg; j++) mg += got[j * INCEPTION_DIM + c], mr += ref[j * INCEPTION_DIM + c];
            double dg = got[k * INCEPTION_DIM + c] - mg / nimg, dr = ref[k * INCEPTION_DIM + c] - mr / nimg;
            num += (dg - dr) * (dg - dr), den += dr * dr;
        }
        printf("  image %zu: centred features rel L2 %.2e\n", k, sqrt(num / den));
        if (!(sqrt(num / den) <= 1e-3)) fail_msg("image %zu: centred features rel L2 %.3g", k, sqrt(num / den));
    }
    /* and pytorch-fid's FID between a/ (3 images) and b/ (2) from these features */
    fid_stats sa, sb;
    fid_result r;
    assert_int_equal(fid_stats_compute_f32(&sa, got, 3, INCEPTION_DIM), 0);
    assert_int_equal(fid_stats_compute_f32(&sb, got + 3 * INCEPTION_DIM, 2, INCEPTION_DIM), 0);
    if (fid_frechet(&sa, &sb, &r) < 0) fail_msg("%s", ss_err());
    double want = json_real_value(json_object_get(meta, "fid_a_b"));
    check_rel("a vs b", "fid", r.fid, want, 1e-3, 0);
    fid_stats_free(&sa);
    fid_stats_free(&sb);
    free(got);
    free(ref);
    inception_free(net);
    json_decref(meta);
}

/* ---- clean-fid: PIL's float BICUBIC, then the network without its own resize ---- */

static void test_cleanfid_resize(void **state) {
    (void)state;
    json_error_t je;
    json_t *r = json_load_file(FIX "/cleanfid-resize.json", 0, &je);
    if (!r) fail_msg("%s: %s", FIX "/cleanfid-resize.json", je.text);
    json_t *cases = json_object_get(r, "cases");
    size_t i;
    json_t *c;
    int exact_cases = 0;
    json_array_foreach(cases, i, c) {
        int w, h;
        uint8_t *rgb;
        const char *file = json_string_value(json_object_get(c, "file"));
        assert_int_equal(png_read_rgb(tc_join(FIX, "%s", file), &w, &h, &rgb), 0);
        float *ch = malloc((size_t)w * h * sizeof *ch);
        assert_non_null(ch);
        for (size_t p = 0; p < (size_t)w * h; p++) ch[p] = rgb[3 * p];
        int ow = (int)json_integer_value(json_object_get(c, "ow")), oh = (int)json_integer_value(json_object_get(c, "oh"));
        float *y = malloc((size_t)ow * oh * sizeof *y);
        assert_non_null(y);
        assert_int_equal(cf_resize_bicubic_f32(ch, w, h, y, ow, oh), 0);
        double sum = 0, sumsq = 0;
        for (size_t p = 0; p < (size_t)ow * oh; p++) sum += y[p], sumsq += (double)y[p] * y[p];
        json_t *vals = json_object_get(c, "values");
        size_t nbad = 0;
        if (vals) {
            assert_int_equal(json_array_size(vals), (size_t)ow * oh);
            for (size_t p = 0; p < (size_t)ow * oh; p++)
                if (y[p] != (float)json_real_value(json_array_get(vals, p))) nbad++;
            exact_cases++;
        }
        printf("  %s -> %dx%d: sum %.9g (PIL %.9g)%s\n", file, ow, oh, sum, json_real_value(json_object_get(c, "sum")),
               vals ? (nbad ? "  values differ" : "  values bit-exact") : "");
        if (nbad) fail_msg("%s -> %dx%d: %zu values differ from PIL", file, ow, oh, nbad);
        if (!(fabs(sum - json_real_value(json_object_get(c, "sum"))) <= 1e-9 * fabs(sum)) ||
            !(fabs(sumsq - json_real_value(json_object_get(c, "sumsq"))) <= 1e-9 * sumsq))
            fail_msg("%s -> %dx%d: checksums differ from PIL", file, ow, oh);
        free(y);
        free(ch);
        free(rgb);
    }
    assert_int_equal(exact_cases, 4);
    /* a float ramp with fractional values, 300x200 -> 299x299 (shrinks one side, enlarges the other) */
    json_t *rp = json_object_get(r, "ramp");
    float *x = malloc(300 * 200 * sizeof *x), *y = malloc(299 * 299 * sizeof *y);
    assert_non_null(x), assert_non_null(y);
    for (int a = 0; a < 200; a++)
        for (int b = 0; b < 300; b++) x[a * 300 + b] = (float)fmod(a * 1.3 + b * 0.7, 255.0);
    assert_int_equal(cf_resize_bicubic_f32(x, 300, 200, y, 299, 299), 0);
    double sum = 0, sumsq = 0;
    for (int p = 0; p < 299 * 299; p++) sum += y[p], sumsq += (double)y[p] * y[p];
    if (!(fabs(sum - json_real_value(json_object_get(rp, "sum"))) <= 1e-9 * fabs(sum)) ||
        !(fabs(sumsq - json_real_value(json_object_get(rp, "sumsq"))) <= 1e-9 * sumsq))
        fail_msg("ramp: sum %.12g sumsq %.12g, PIL %.12g %.12g", sum, sumsq, json_real_value(json_object_get(rp, "sum")),
                 json_real_value(json_object_get(rp, "sumsq")));
    assert_true(cf_resize_bicubic_f32(x, 0, 5, y, 3, 3) < 0);
    free(x), free(y);
    json_decref(r);
}

static void test_cleanfid_features(void **state) {
    (void)state;
    json_error_t je;
    json_t *meta = json_load_file(FIX "/inception.json", 0, &je), *cf = json_load_file(FIX "/cleanfid.json", 0, &je);
    assert_non_null(meta), assert_non_null(cf);
    json_t *imgs = json_object_get(meta, "images");
    size_t nimg = json_array_size(imgs), flen;
    float *ref = (float *)tc_read_all(FIX "/cleanfid.f32", &flen);
    assert_non_null(ref);
    assert_int_equal(flen, nimg * INCEPTION_DIM * sizeof(float));
    inception_net *net = hash_net();
    float *got = malloc(nimg * INCEPTION_DIM * sizeof *got), *x = malloc(3 * 299 * 299 * sizeof *x);
    assert_non_null(got), assert_non_null(x);
    for (size_t k = 0; k < nimg; k++) {
        int w, h;
        uint8_t *rgb;
        const char *file = json_string_value(json_object_get(json_array_get(imgs, k), "file"));
        assert_int_equal(png_read_rgb(tc_join(FIX, "%s", file), &w, &h, &rgb), 0);
        if (cf_preprocess(rgb, w, h, x) < 0 || inception_features_raw(net, x, 299, 299, got + k * INCEPTION_DIM) < 0)
            fail_msg("%s", ss_err());
        free(rgb);
        double rel = tc_rel_l2(got + k * INCEPTION_DIM, ref + k * INCEPTION_DIM, INCEPTION_DIM);
        printf("  clean-fid %-9s pool3 rel L2 %.2e\n", file, rel);
        if (!(rel <= 1e-4)) fail_msg("%s: clean-fid features rel L2 %.3g > 1e-4", file, rel);
    }
    fid_stats sa, sb;
    fid_result r;
    assert_int_equal(fid_stats_compute_f32(&sa, got, 3, INCEPTION_DIM), 0);
    assert_int_equal(fid_stats_compute_f32(&sb, got + 3 * INCEPTION_DIM, 2, INCEPTION_DIM), 0);
    if (fid_frechet(&sa, &sb, &r) < 0) fail_msg("%s", ss_err());
    check_rel("clean a vs b", "fid", r.fid, json_real_value(json_object_get(cf, "fid_a_b")), 1e-3, 0);
    assert_true(inception_features_raw(net, x, 74, 299, got) < 0);
    /* the features do not depend on the thread count */
    int saved = omp_get_max_threads();
    float f1[INCEPTION_DIM], f3[INCEPTION_DIM];
    omp_set_num_threads(1);
    assert_int_equal(inception_features_raw(net, x, 299, 299, f1), 0);
    omp_set_num_threads(3);
    assert_int_equal(inception_features_raw(net, x, 299, 299, f3), 0);
    omp_set_num_threads(saved);
    assert_memory_equal(f1, f3, sizeof f1);
    fid_stats_free(&sa);
    fid_stats_free(&sb);
    free(got), free(x), free(ref);
    inception_free(net);
    json_decref(meta);
    json_decref(cf);
}

/* ---- a .pth with those weights (tests/fid_weights.c), for the command line ---- */

static void test_cli(void **state) {
    (void)state;
    tc_tensors *rec = calloc(1, sizeof *rec);
    assert_non_null(rec);
    if (tc_inception_tensors(rec) < 0) fail_msg("%s", ss_err()); /* with the real file's unused fc layer */
    char *tmp = tc_tmpdir();
    const char *pth = tc_join(tmp, "pt_inception.pth");
    char pth_s[512], out[8192];
    snprintf(pth_s, sizeof pth_s, "%s", pth);
    assert_int_equal(tc_write_pth(pth_s, rec->t, rec->n, 0), 0);
    const char *bin = tc_bin();
    char feat_s[512];
    snprintf(feat_s, sizeof feat_s, "%s", tc_join(tmp, "feat.safetensors"));
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s %s/a %s/b --features %s", bin, pth_s, FIX,
                            FIX, feat_s), 0);
    json_error_t je;
    json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, &je);
    if (!o) fail_msg("not JSON: %s", out);
    json_t *meta = json_load_file(FIX "/inception.json", 0, &je);
    assert_non_null(meta);
    check_rel("cli a vs b", "fid", json_real_value(json_object_get(o, "fid")),
              json_real_value(json_object_get(meta, "fid_a_b")), 1e-3, 0);
    assert_string_equal(json_string_value(json_object_get(o, "mode")), "pytorch-fid");
    assert_int_equal(json_integer_value(json_object_get(o, "n_a")), 3);
    assert_int_equal(json_integer_value(json_object_get(o, "n_b")), 2);
    assert_string_equal(json_string_value(json_object_get(o, "eps_rule")), FID_RULE_EPS_IF_NONFINITE);
    json_decref(o);
    json_decref(meta);
    size_t flen, na, nb;
    int64_t shp[4];
    int nd;
    float *ref = (float *)tc_read_all(FIX "/features.f32", &flen);
    float *fa = tc_load(feat_s, "features_a", &na, shp, &nd), *fb = tc_load(feat_s, "features_b", &nb, shp, &nd);
    assert_non_null(ref), assert_non_null(fa), assert_non_null(fb);
    assert_int_equal(na, 3 * INCEPTION_DIM);
    assert_int_equal(nb, 2 * INCEPTION_DIM);
    assert_true(nd == 2 && shp[0] == 2 && shp[1] == INCEPTION_DIM);
    assert_true(tc_rel_l2(fa, ref, na) <= 1e-4);
    assert_true(tc_rel_l2(fb, ref + na, nb) <= 1e-4);
    free(ref), free(fa), free(fb);

    /* errors users meet */
    /* clean-fid mode through the same file */
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s --mode clean-fid %s/a %s/b", bin, pth_s,
                            FIX, FIX), 0);
    o = json_loads(out, JSON_DISABLE_EOF_CHECK, &je);
    if (!o) fail_msg("not JSON: %s", out);
    meta = json_load_file(FIX "/cleanfid.json", 0, &je);
    assert_non_null(meta);
    check_rel("cli clean", "fid", json_real_value(json_object_get(o, "fid")),
              json_real_value(json_object_get(meta, "fid_a_b")), 1e-3, 0);
    assert_string_equal(json_string_value(json_object_get(o, "mode")), "clean-fid");
    json_decref(o);
    json_decref(meta);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s --mode tf %s/a %s/b 2>&1", bin, pth_s,
                            FIX, FIX), 2);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s %s/a 2>&1", bin, pth_s, FIX), 2);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s %s/a %s/nosuch 2>&1", bin, pth_s, FIX,
                            FIX), 1);
    assert_non_null(strstr(out, "nosuch"));
    const char *one = tc_join(tmp, "one");
    char one_s[512];
    snprintf(one_s, sizeof one_s, "%s", one);
    assert_int_equal(tc_run(out, sizeof out, "mkdir %s && cp %s/a/a0.png %s/", one_s, FIX, one_s), 0);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s %s %s/b 2>&1", bin, pth_s, one_s, FIX), 1);
    assert_non_null(strstr(out, "at least 2"));
    assert_int_equal(tc_run(out, sizeof out, "cp %s/a/a1.png %s/ && touch %s/x.jpg", FIX, one_s, one_s), 0);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s %s %s/b 2>&1", bin, pth_s, one_s, FIX), 1);
    assert_non_null(strstr(out, "x.jpg"));
    /* clean-fid also reads *.PNG: with one there, that folder has 3 images in clean-fid mode */
    assert_int_equal(tc_run(out, sizeof out, "rm %s/x.jpg && cp %s/a/a2.png %s/c.PNG && touch %s/y.JPG", one_s, FIX,
                            one_s, one_s), 0);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s --mode clean-fid %s %s/b 2>&1", bin, pth_s,
                            one_s, FIX), 1);
    assert_non_null(strstr(out, "y.JPG"));
    assert_int_equal(tc_run(out, sizeof out, "rm %s/y.JPG", one_s), 0);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s --mode clean-fid %s %s/b", bin, pth_s, one_s,
                            FIX), 0);
    assert_non_null(strstr(out, "\"n_a\": 3"));
    /* a state dict without the first convolution: the error names the tensor and the file */
    assert_int_equal(tc_write_pth(pth_s, rec->t, rec->n, 1), 0);
    assert_int_equal(tc_run(out, sizeof out, "%s metric fid --inception %s %s/a %s/b 2>&1", bin, pth_s, FIX, FIX), 1);
    assert_non_null(strstr(out, "Conv2d_1a_3x3.conv.weight"));
    assert_non_null(strstr(out, "pt_inception.pth"));
    tc_tensors_free(rec);
    free(rec);
    tc_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_one_dim),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_inception_parity),
        cmocka_unit_test(test_cleanfid_resize),
        cmocka_unit_test(test_cleanfid_features),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
