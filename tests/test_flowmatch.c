/* FlowMatchEulerDiscreteScheduler against diffusers' own sigmas/timesteps (fixture), plus the
 * step, the forward process and config parsing. */
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

#include "core/err.h"
#include "sample/flowmatch.h"

#define FIXTURE "tests/fixtures/flowmatch_schedules.json"

static double max_err(const float *got, json_t *want, int n) {
    assert_int_equal((int)json_array_size(want), n);
    double e = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)got[i] - json_number_value(json_array_get(want, i)));
        if (d > e) e = d;
    }
    return e;
}

static void check_entry(json_t *ent, int *n_sd3, int *n_flux) {
    const char *fam = json_string_value(json_object_get(ent, "family"));
    int steps = (int)json_integer_value(json_object_get(ent, "steps"));
    assert_non_null(fam);
    assert_true(steps >= 1);
    fm_config c;
    fm_config_default(&c);
    fm_sched s;
    double *sig = NULL, mu = 0;
    if (!strcmp(fam, "sd3")) {
        c.shift = json_number_value(json_object_get(ent, "shift"));
        assert_int_equal(fm_init(&s, &c), 0);
        assert_int_equal(fm_set_timesteps(&s, steps, NULL, NULL), 0);
        (*n_sd3)++;
    } else if (!strncmp(fam, "flux", 4)) {
        c.shift = 3.0;
        c.use_dynamic_shifting = 1;
        mu = json_number_value(json_object_get(ent, "mu"));
        int L = (int)json_integer_value(json_object_get(ent, "image_seq_len"));
        assert_true(fabs(fm_calculate_shift(&c, L) - mu) < 1e-12);
        sig = malloc((size_t)steps * sizeof *sig);
        fm_flux_sigmas(steps, sig);
        assert_int_equal(fm_init(&s, &c), 0);
        assert_int_equal(fm_set_timesteps(&s, steps, sig, &mu), 0);
        (*n_flux)++;
    } else {
        fail_msg("unknown family %s", fam);
        return;
    }
    double es = max_err(s.sigmas, json_object_get(ent, "sigmas"), steps + 1);
    double et = max_err(s.timesteps, json_object_get(ent, "timesteps"), steps);
    printf("  %-9s steps=%-3d mu=%-5g max|dsigma|=%.3g max|dtimestep|=%.3g\n", fam, steps, mu, es, et);
    assert_true(es <= 1e-6);
    assert_true(et <= 1e-6);
    assert_true(s.sigmas[steps] == 0.0f);
    free(sig);
    fm_free(&s);
}

/* Given sigmas without dynamic shifting (FluxPipeline on a scheduler with use_dynamic_shifting
 * false): diffusers' sigmas and timesteps exactly (numpy computes the shift in the given sigmas'
 * float32), for shift 1 (FLUX.1-schnell) and others. */
static void test_given_sigmas(void **st) {
    (void)st;
    const char *path = "tests/fixtures/flowmatch_given_sigmas.json";
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) fail_msg("cannot read %s: %s", path, je.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 8);
    int differ = 0;
    for (size_t k = 0; k < json_array_size(cases); k++) {
        json_t *c = json_array_get(cases, k);
        const int n = (int)json_integer_value(json_object_get(c, "steps"));
        fm_config cfg;
        fm_config_default(&cfg);
        cfg.shift = json_number_value(json_object_get(c, "shift"));
        double *sig = malloc(sizeof *sig * n);
        fm_flux_sigmas(n, sig);
        json_t *given = json_object_get(c, "given");
        for (int i = 0; i < n; i++) assert_true(sig[i] == json_number_value(json_array_get(given, i)));
        fm_sched s;
        assert_int_equal(fm_init(&s, &cfg), 0);
        assert_int_equal(fm_set_timesteps(&s, n, sig, NULL), 0);
        json_t *ws = json_object_get(c, "sigmas"), *wt = json_object_get(c, "timesteps");
        for (int i = 0; i <= n; i++)
            if (s.sigmas[i] != (float)json_number_value(json_array_get(ws, i)))
                fail_msg("shift %g, %d steps: sigma %d is %.9g, diffusers %.9g", cfg.shift, n, i, s.sigmas[i],
                         json_number_value(json_array_get(ws, i)));
        for (int i = 0; i < n; i++) assert_true(s.timesteps[i] == (float)json_number_value(json_array_get(wt, i)));
        /* the fp64 formula would differ somewhere for shift != 1 */
        for (int i = 0; i < n; i++) {
            const double d = (float)sig[i];
            differ += (float)(cfg.shift * d / (1.0 + (cfg.shift - 1.0) * d)) != s.sigmas[i];
        }
        free(sig);
        fm_free(&s);
    }
    printf("  %zu given-sigma schedules bit-exact (%d sigmas where fp64 arithmetic would differ)\n",
           json_array_size(cases), differ);
    json_decref(root);
}

static void test_fixture(void **st) {
    json_error_t je;
    json_t *root = json_load_file(FIXTURE, 0, &je);
    if (!root) fail_msg("cannot read %s: %s", FIXTURE, je.text);
    assert_true(json_is_array(root));
    int n_sd3 = 0, n_flux = 0;
    for (size_t i = 0; i < json_array_size(root); i++) check_entry(json_array_get(root, i), &n_sd3, &n_flux);
    printf("  %d sd3 and %d flux entries checked\n", n_sd3, n_flux);
    assert_true(n_sd3 >= 1);
    json_decref(root);
}

/* Values quoted in dit-spec.md §6 (computed there by emulating diffusers). */
static void test_spec_values(void **st) {
    fm_config c;
    fm_config_default(&c);
    c.shift = 3.0;
    fm_sched s;
    assert_int_equal(fm_init(&s, &c), 0);
    assert_true(s.sigma_max == 1.0);
    assert_true(fabs(s.sigma_min - 0.002994012087583542) < 1e-15);
    assert_int_equal(fm_set_timesteps(&s, 28, NULL, NULL), 0);
    assert_true(fabs(s.sigmas[1] - 0.98738062) < 1e-8);
    assert_true(fabs(s.sigmas[27] - 0.00892857) < 1e-8);
    assert_true(fabs(s.timesteps[27] - 8.928572) < 1e-5);
    fm_free(&s);
    /* schnell: no dynamic shift, shift 1 -> plain linear sigmas */
    fm_config_default(&c);
    double sig[4], mu = 1.15;
    fm_flux_sigmas(4, sig);
    assert_int_equal(fm_init(&s, &c), 0);
    assert_int_equal(fm_set_timesteps(&s, 4, sig, &mu), 0);
    const float want[5] = {1.0f, 0.75f, 0.5f, 0.25f, 0.0f};
    for (int i = 0; i < 5; i++) assert_true(s.sigmas[i] == want[i]);
    assert_true(s.timesteps[1] == 750.0f);
    /* setting again replaces the schedule (no leak under ASan) */
    assert_int_equal(fm_set_timesteps(&s, 2, NULL, NULL), 0);
    assert_int_equal(s.num_steps, 2);
    fm_free(&s);
}

static void test_errors(void **st) {
    fm_config c;
    fm_config_default(&c);
    c.use_dynamic_shifting = 1;
    fm_sched s;
    assert_int_equal(fm_init(&s, &c), 0);
    assert_true(fm_set_timesteps(&s, 10, NULL, NULL) < 0);
    assert_non_null(strstr(ss_err(), "mu"));
    double mu = 0.5;
    assert_true(fm_set_timesteps(&s, 0, NULL, &mu) < 0);
    assert_int_equal(fm_set_timesteps(&s, 3, NULL, &mu), 0);
    float x[1] = {0}, v[1] = {1};
    assert_true(fm_step(&s, 3, x, v, 1) < 0);
    assert_true(fm_step(&s, -1, x, v, 1) < 0);
    fm_free(&s);
}

static void test_step_and_noise(void **st) {
    fm_config c;
    fm_config_default(&c);
    c.shift = 3.0;
    fm_sched s;
    assert_int_equal(fm_init(&s, &c), 0);
    assert_int_equal(fm_set_timesteps(&s, 4, NULL, NULL), 0);
    float x[3] = {1.0f, -2.0f, 0.5f}, v[3] = {0.25f, 1.0f, -4.0f};
    float dt = s.sigmas[2] - s.sigmas[1];
    float want[3];
    for (int j = 0; j < 3; j++) want[j] = x[j] + dt * v[j];
    assert_int_equal(fm_step(&s, 1, x, v, 3), 0);
    for (int j = 0; j < 3; j++) assert_true(x[j] == want[j]);
    /* Following the exact velocity eps - x0 from x_1 = eps lands on x0 (up to rounding). */
    float x0[2] = {0.3f, -0.7f}, eps[2] = {1.5f, 0.2f}, xt[2], vel[2];
    fm_scale_noise(s.sigmas[0], x0, eps, xt, 2);
    for (int j = 0; j < 2; j++) vel[j] = eps[j] - x0[j];
    for (int i = 0; i < s.num_steps; i++) assert_int_equal(fm_step(&s, i, xt, vel, 2), 0);
    for (int j = 0; j < 2; j++) assert_true(fabsf(xt[j] - x0[j]) < 1e-6f);
    float out[2];
    fm_scale_noise(0.25f, x0, eps, out, 2);
    assert_true(out[0] == 0.25f * 1.5f + 0.75f * 0.3f);
    fm_free(&s);
}

static char g_dir[64];

static const char *write_tmp(const char *name, const char *text) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_config(void **st) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ss_fm_XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    fm_config c;
    const char *p = write_tmp("flux.json",
                              "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"base_image_seq_len\": 256,"
                              " \"base_shift\": 0.5, \"max_image_seq_len\": 4096, \"max_shift\": 1.15,"
                              " \"num_train_timesteps\": 1000, \"shift\": 3.0, \"use_dynamic_shifting\": true,"
                              " \"shift_terminal\": null}");
    assert_int_equal(fm_config_load(&c, p), 0);
    assert_true(c.use_dynamic_shifting && c.shift == 3.0 && c.max_image_seq_len == 4096);
    p = write_tmp("sd3.json", "{\"num_train_timesteps\": 1000, \"shift\": 3.0}");
    assert_int_equal(fm_config_load(&c, p), 0);
    assert_true(!c.use_dynamic_shifting && c.shift == 3.0 && c.base_shift == 0.5);

    struct { const char *text, *needle; } bad[] = {
        {"{\"shift\": \"3\"}", "field 'shift' must be a number"},
        {"{\"num_train_timesteps\": 0}", "field 'num_train_timesteps' must be a positive integer"},
        {"{\"use_dynamic_shifting\": 1}", "field 'use_dynamic_shifting' must be true or false"},
        {"{\"use_karras_sigmas\": true}", "field 'use_karras_sigmas' = true is not supported"},
        {"{\"shift_terminal\": 0.02}", "field 'shift_terminal'"},
        {"{\"_class_name\": \"DDIMScheduler\"}", "field '_class_name'"},
        {"{\"shift\": -1}", "field 'shift' must be positive"},
        {"[1, 2]", "expected a JSON object"},
        {"{\"shift\": ", "not valid JSON (line 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_tmp("bad.json", bad[i].text);
        assert_true(fm_config_load(&c, p) < 0);
        if (!strstr(ss_err(), bad[i].needle) || !strstr(ss_err(), p))
            fail_msg("case %zu: error '%s' lacks '%s' or the path", i, ss_err(), bad[i].needle);
    }
    assert_true(fm_config_load(&c, "/nonexistent/scheduler_config.json") < 0);
    assert_non_null(strstr(ss_err(), "/nonexistent/scheduler_config.json"));
    unlink(write_tmp("bad.json", "")), unlink(write_tmp("flux.json", "")), unlink(write_tmp("sd3.json", ""));
    rmdir(g_dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture),      cmocka_unit_test(test_given_sigmas),
        cmocka_unit_test(test_spec_values),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_step_and_noise),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
