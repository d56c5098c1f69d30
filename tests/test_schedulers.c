/* The DDPM-family schedulers (DPMSolverMultistepScheduler, EulerDiscreteScheduler) and the
 * FlowMatch wrapper behind sample/sched.h, against diffusers 0.32.1's own schedulers
 * (tests/fixtures/scheduler_cases.json, tests/gen/gen_scheduler_cases.py): timesteps and sigmas
 * exactly, init_noise_sigma exactly, every prev_sample of a trajectory with a fixed fake model
 * at relative L2 <= 1e-6; torch.linspace fp32 under its three CPU kernels; malformed configs. */
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
#include "core/err.h"
#include "sample/ddpm_table.h"
#include "sample/sched.h"

#define FIXTURE "tests/fixtures/scheduler_cases.json"

static json_t *g_root;
static char *g_dir;

static int setup(void **st) {
    json_error_t je;
    g_root = json_load_file(FIXTURE, 0, &je);
    if (!g_root) {
        fprintf(stderr, "cannot read %s: %s\n", FIXTURE, je.text);
        return -1;
    }
    g_dir = tc_tmpdir();
    return g_dir ? 0 : -1;
}

static int teardown(void **st) {
    json_decref(g_root);
    tc_rmtree(g_dir);
    free(g_dir);
    return 0;
}

static float *floats(json_t *a, size_t *n) {
    *n = json_array_size(a);
    float *v = malloc((*n ? *n : 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (float)json_number_value(json_array_get(a, i));
    return v;
}

static void test_torch_linspace(void **st) {
    static const char *const caps[] = {"default", "avx2", "avx512"};
    json_t *sets = json_object_get(g_root, "linspace");
    assert_true(json_array_size(sets) >= 5);
    int checked = 0, differ = 0;
    for (size_t i = 0; i < json_array_size(sets); i++) {
        json_t *e = json_array_get(sets, i);
        float a = (float)json_number_value(json_object_get(e, "start"));
        float b = (float)json_number_value(json_object_get(e, "end"));
        int n = (int)json_integer_value(json_object_get(e, "n"));
        float *got = malloc((size_t)n * sizeof *got), *first = NULL;
        for (int c = 0; c < 3; c++) {
            size_t m;
            float *want = floats(json_object_get(e, caps[c]), &m);
            assert_int_equal((int)m, n);
            ss_torch_linspace_f32(a, b, n, (ss_torch_cpu)c, got);
            for (int k = 0; k < n; k++)
                if (got[k] != want[k]) fail_msg("linspace(%g, %g, %d) %s [%d]: %.9g != %.9g", a, b, n, caps[c], k, got[k], want[k]);
            if (!first) first = want;
            else {
                if (memcmp(first, want, (size_t)n * sizeof *want)) differ++;
                free(want);
            }
            checked++;
        }
        free(first);
        free(got);
    }
    printf("  %d torch.linspace runs bit-exact (%d differ from the default kernel)\n", checked, differ);
    assert_true(differ > 0); /* the kernels do differ, so matching all three means something */
}

static const char *write_cfg(const char *name, const char *text) {
    const char *p = tc_join(g_dir, "%s", name);
    assert_int_equal(tc_write_text(p, text), 0);
    return p;
}

typedef struct {
    double worst_rel;
    int n_runs, n_traj, n_steps;
} tally;

static void check_run(const char *name, ss_sched *s, json_t *run, tally *ty) {
    int steps = (int)json_integer_value(json_object_get(run, "steps"));
    assert_int_equal(ss_sched_set_timesteps(s, steps, NULL, NULL), 0);
    json_t *jt = json_object_get(run, "timesteps"), *js = json_object_get(run, "sigmas");
    if ((int)json_array_size(jt) != s->num_steps)
        fail_msg("%s steps=%d: %d timesteps, diffusers %zu", name, steps, s->num_steps, json_array_size(jt));
    assert_int_equal((int)json_array_size(js), s->num_steps + 1);
    for (int i = 0; i < s->num_steps; i++) {
        json_t *v = json_array_get(jt, i);
        if (json_is_integer(v)) {
            if (s->kind != SS_SCHED_DPMSOLVER || s->dpm.timesteps[i] != json_integer_value(v))
                fail_msg("%s steps=%d: timestep[%d] %g != %lld", name, steps, i, s->timesteps[i],
                         (long long)json_integer_value(v));
        } else if (s->timesteps[i] != (float)json_number_value(v)) {
            fail_msg("%s steps=%d: timestep[%d] %.9g != %.9g", name, steps, i, s->timesteps[i], json_number_value(v));
        }
    }
    for (int i = 0; i <= s->num_steps; i++)
        if (s->sigmas[i] != (float)json_number_value(json_array_get(js, i)))
            fail_msg("%s steps=%d: sigma[%d] %.9g != %.9g", name, steps, i, s->sigmas[i],
                     json_number_value(json_array_get(js, i)));
    float ins = (float)json_number_value(json_object_get(run, "init_noise_sigma"));
    if (s->init_noise_sigma != ins) fail_msg("%s: init_noise_sigma %.9g != %.9g", name, s->init_noise_sigma, ins);
    ty->n_runs++;
    json_t *traj = json_object_get(run, "trajectory");
    if (!traj) return;
    size_t n, nu;
    float *x = floats(json_object_get(g_root, "x0"), &n), *u = floats(json_object_get(g_root, "u"), &nu);
    float *xi = malloc(n * sizeof *xi), *out = malloc(n * sizeof *out);
    assert_int_equal((int)n, (int)nu);
    assert_int_equal((int)json_array_size(traj), s->num_steps);
    for (size_t j = 0; j < n; j++) x[j] = x[j] * s->init_noise_sigma;
    double worst = 0;
    for (int i = 0; i < s->num_steps; i++) {
        double t = s->timesteps[i];
        memcpy(xi, x, n * sizeof *x);
        assert_int_equal(ss_sched_scale_model_input(s, t, xi, n), 0);
        for (size_t j = 0; j < n; j++) {
            float a = 0.9f * xi[j], b = 0.25f * u[j];
            out[j] = a - b;
        }
        if (ss_sched_step(s, t, out, x, n) < 0) fail_msg("%s step %d: %s", name, i, ss_err());
        size_t m;
        float *want = floats(json_array_get(traj, i), &m);
        assert_int_equal((int)m, (int)n);
        double r = tc_rel_l2(x, want, n);
        if (!(r <= 1e-6)) fail_msg("%s steps=%d: prev_sample %d rel L2 %.3g", name, steps, i, r);
        if (r > worst) worst = r;
        if (getenv("SCHED_DEBUG") && r > 0) printf("    %s steps=%d step %d t=%g rel %.3g\n", name, steps, i, t, r);
        free(want);
        ty->n_steps++;
    }
    if (worst > ty->worst_rel) ty->worst_rel = worst;
    ty->n_traj++;
    printf("  %-22s %-3d steps: trajectory worst rel L2 %.2g\n", name, steps, worst);
    free(x), free(u), free(xi), free(out);
}

static void test_cases(void **st) {
    json_t *cases = json_object_get(g_root, "cases");
    assert_true(json_array_size(cases) >= 20);
    tally ty = {0};
    int kinds[3] = {0}, n_other = 0;
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *name = json_string_value(json_object_get(cs, "name"));
        const char *cls = json_string_value(json_object_get(cs, "class"));
        const char *load = json_string_value(json_object_get(cs, "load"));
        const char *p = write_cfg("scheduler_config.json", json_string_value(json_object_get(cs, "config_text")));
        int kind = ss_sched_kind_of(cls);
        assert_true(kind >= 0);
        ss_sched s;
        const char *cpu_name = json_string_value(json_object_get(cs, "torch_cpu"));
        int cpu = ss_torch_cpu_parse(cpu_name);
        assert_true(cpu >= 0);
        int rc;
        if (cpu == SS_TORCH_CPU_AVX2) /* the plain entry points */
            rc = !strcmp(load, "native") ? ss_sched_load(&s, p) : ss_sched_load_as(&s, p, (ss_sched_kind)kind);
        else
            rc = ss_sched_load_opts(&s, p, !strcmp(load, "native") ? -1 : kind, (ss_torch_cpu)cpu), n_other++;
        if (rc < 0) fail_msg("%s: %s", name, ss_err());
        assert_int_equal((int)s.kind, kind);
        kinds[kind]++;
        json_t *runs = json_object_get(cs, "runs");
        for (size_t r = 0; r < json_array_size(runs); r++) check_run(name, &s, json_array_get(runs, r), &ty);
        ss_sched_free(&s);
    }
    printf("  %d schedules exact (timesteps, sigmas, init_noise_sigma; %d configs under other torch kernels); "
           "%d trajectories, %d steps, worst rel L2 %.2g\n", ty.n_runs, n_other, ty.n_traj, ty.n_steps, ty.worst_rel);
    assert_true(kinds[0] >= 1 && kinds[1] >= 10 && kinds[2] >= 5);
    assert_true(ty.n_traj >= 30);
    assert_true(n_other >= 4); /* schedules under torch's default and AVX-512 kernels */
}

/* The state is per schedule: set_timesteps again restarts the multistep history, and a second
 * scheduler run gives the same result as the first (no leak under ASan). */
static void test_restart(void **st) {
    const char *p = write_cfg("dpm.json", "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": 3}");
    ss_sched s;
    assert_int_equal(ss_sched_load(&s, p), 0);
    float a[4], b[4];
    for (int rep = 0; rep < 2; rep++) {
        float *x = rep ? b : a;
        for (int j = 0; j < 4; j++) x[j] = (float)j - 1.5f;
        assert_int_equal(ss_sched_set_timesteps(&s, 6, NULL, NULL), 0);
        for (int i = 0; i < s.num_steps; i++) {
            float m[4];
            for (int j = 0; j < 4; j++) m[j] = 0.5f * x[j];
            assert_int_equal(ss_sched_step(&s, s.timesteps[i], m, x, 4), 0);
        }
        float m[4] = {0};
        assert_true(ss_sched_step(&s, 0, m, x, 4) < 0); /* past the end */
    }
    assert_memory_equal(a, b, sizeof a);
    /* the multistep history is per sample size */
    assert_int_equal(ss_sched_set_timesteps(&s, 6, NULL, NULL), 0);
    float m4[4] = {0};
    assert_int_equal(ss_sched_step(&s, s.timesteps[0], m4, a, 4), 0);
    assert_true(ss_sched_step(&s, s.timesteps[1], m4, a, 3) < 0);
    assert_non_null(strstr(ss_err(), "3 values"));
    assert_true(ss_sched_set_timesteps(&s, 0, NULL, NULL) < 0);
    double mu = 1.0;
    assert_true(ss_sched_set_timesteps(&s, 4, NULL, &mu) < 0);
    ss_sched_free(&s);
    /* Euler: a timestep that is not in the schedule */
    p = write_cfg("eu.json", "{\"_class_name\": \"EulerDiscreteScheduler\"}");
    assert_int_equal(ss_sched_load(&s, p), 0);
    assert_int_equal(ss_sched_set_timesteps(&s, 4, NULL, NULL), 0);
    float x[1] = {1}, m[1] = {1};
    assert_true(ss_sched_step(&s, 12.5, m, x, 1) < 0);
    assert_non_null(strstr(ss_err(), "12.5"));
    ss_sched_free(&s);
}

static void test_load_dir(void **st) {
    ss_sched s;
    assert_int_equal(ss_sched_load_dir(&s, "tests/fixtures/sd3-pipeline-tiny"), 0);
    assert_int_equal((int)s.kind, SS_SCHED_FLOWMATCH);
    assert_int_equal(ss_sched_set_timesteps(&s, 4, NULL, NULL), 0);
    /* the wrapper hands out flowmatch's own arrays */
    fm_config c;
    fm_config_default(&c);
    c.shift = 3.0;
    fm_sched f;
    assert_int_equal(fm_init(&f, &c), 0);
    assert_int_equal(fm_set_timesteps(&f, 4, NULL, NULL), 0);
    assert_memory_equal(s.sigmas, f.sigmas, 5 * sizeof(float));
    fm_free(&f);
    /* FLUX path through the wrapper: given sigmas and mu, stepped by timestep */
    double sig[5], mu = 0.8;
    fm_flux_sigmas(5, sig);
    fm_config_default(&c);
    c.shift = 3.0;
    assert_int_equal(fm_init(&f, &c), 0);
    assert_int_equal(fm_set_timesteps(&f, 5, sig, NULL), 0);
    assert_int_equal(ss_sched_set_timesteps(&s, 5, sig, NULL), 0);
    assert_memory_equal(s.timesteps, f.timesteps, 5 * sizeof(float));
    float x[3] = {1, 2, 3}, y[3] = {1, 2, 3}, v[3] = {0.5f, -1, 2};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ss_sched_step(&s, s.timesteps[i], v, x, 3), 0);
        assert_int_equal(fm_step(&f, i, y, v, 3), 0);
    }
    assert_memory_equal(x, y, sizeof x);
    assert_true(ss_sched_step(&s, s.timesteps[4], v, x, 3) < 0); /* past the end */
    fm_free(&f);
    (void)mu;
    ss_sched_free(&s);
    /* E2's names on SD3's folder: the swapped schedulers take num_train_timesteps and nothing else */
    static const char *const names[] = {"default", "euler", "dpm++"};
    static const int want_kind[] = {SS_SCHED_FLOWMATCH, SS_SCHED_EULER, SS_SCHED_DPMSOLVER};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(ss_sched_load_named(&s, "tests/fixtures/sd3-pipeline-tiny", names[k]), 0);
        assert_int_equal((int)s.kind, want_kind[k]);
        assert_int_equal(ss_sched_set_timesteps(&s, 20, NULL, NULL), 0);
        assert_int_equal(s.num_steps, 20);
        assert_true(s.timesteps[0] == (k == 0 ? 1000.0f : 999.0f));
        ss_sched_free(&s);
    }
    assert_true(ss_sched_load_named(&s, "tests/fixtures/sd3-pipeline-tiny", "heun") < 0);
    assert_non_null(strstr(ss_err(), "'heun' is not one of"));
    assert_true(ss_sched_load_dir(&s, "tests/fixtures/no-such-pipeline") < 0);
    assert_non_null(strstr(ss_err(), "tests/fixtures/no-such-pipeline/scheduler/scheduler_config.json"));
}

static void test_bad_configs(void **st) {
    struct { const char *text, *needle; } bad[] = {
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"sde-dpmsolver++\"}",
         "field 'algorithm_type' = \"sde-dpmsolver++\" is not supported"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"dpmsolver\"}", "field 'algorithm_type'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": 4}", "field 'solver_order' must be an integer in 1..3"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": 2.0}", "field 'solver_order'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"thresholding\": true}", "field 'thresholding' = true is not supported"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"prediction_type\": \"eps\"}", "field 'prediction_type' = \"eps\""},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"timestep_spacing\": 3}", "field 'timestep_spacing' must be a string"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"beta_schedule\": \"sigmoid\"}", "field 'beta_schedule'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"variance_type\": \"learned_range\"}", "field 'variance_type'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_lu_lambdas\": true}", "field 'use_lu_lambdas'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_exponential_sigmas\": true}", "field 'use_exponential_sigmas'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"rescale_betas_zero_snr\": 1}", "field 'rescale_betas_zero_snr' must be true or false"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"final_sigmas_type\": \"one\"}", "field 'final_sigmas_type'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\": NaN}", "field 'lambda_min_clipped'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\": \"-inf\"}", "field 'lambda_min_clipped' must be a number"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"trained_betas\": [0.1, 0.2]}", "field 'trained_betas'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"num_train_timesteps\": 3, \"trained_betas\": [0.1, 1.0, 0.2]}",
         "field 'trained_betas' must be null or 3 numbers in [0, 1)"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"num_train_timesteps\": 1}", "field 'num_train_timesteps'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"beta_end\": 1.5}", "fields 'beta_start' and 'beta_end'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"flow_shift\": 0}", "field 'flow_shift'"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_karras_sigmas\": \"yes\"}", "field 'use_karras_sigmas' must be true or false"},
        {"{\"_class_name\": \"EulerDiscreteScheduler\", \"interpolation_type\": \"log_linear\"}", "field 'interpolation_type'"},
        {"{\"_class_name\": \"EulerDiscreteScheduler\", \"timestep_type\": \"continuous\"}", "field 'timestep_type'"},
        {"{\"_class_name\": \"EulerDiscreteScheduler\", \"use_beta_sigmas\": true}", "field 'use_beta_sigmas'"},
        {"{\"_class_name\": \"EulerDiscreteScheduler\", \"sigma_min\": -1}", "fields 'sigma_min' and 'sigma_max'"},
        {"{\"_class_name\": \"EulerDiscreteScheduler\", \"prediction_type\": \"flow_prediction\"}", "field 'prediction_type'"},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": -3}", "field 'shift'"},
        {"{\"_class_name\": \"DDIMScheduler\"}", "field '_class_name' = \"DDIMScheduler\" is not supported"},
        {"{\"_class_name\": 7}", "field '_class_name' must be a string"},
        {"{\"num_train_timesteps\": 1000}", "field '_class_name' is missing"},
        {"[1, 2]", "expected a JSON object"},
        {"{\"_class_name\": \"EulerDiscreteScheduler\", ", "not valid JSON (line 1"},
        {"", "not valid JSON"},
        {"NaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaNNaN", "not valid JSON"},
        {"{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": NaN}", "field 'solver_order'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = write_cfg("bad.json", bad[i].text);
        ss_sched s;
        assert_true(ss_sched_load(&s, p) < 0);
        if (!strstr(ss_err(), bad[i].needle) || !strstr(ss_err(), p) || strchr(ss_err(), '\n'))
            fail_msg("case %zu: error '%s' lacks '%s' or the path", i, ss_err(), bad[i].needle);
    }
    /* -Infinity / Infinity tokens outside strings are numbers (diffusers writes them), inside
     * strings they stay text */
    const char *p = write_cfg("inf.json", "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"x\": \"-Infinity NaN\","
                                          " \"lambda_min_clipped\": -Infinity, \"sample_max_value\": Infinity}");
    ss_sched s;
    assert_int_equal(ss_sched_load(&s, p), 0);
    assert_true(isinf(s.dpm.cfg.lambda_min_clipped) && s.dpm.cfg.lambda_min_clipped < 0);
    ss_sched_free(&s);
    /* load_as ignores the class of the file and the fields the target does not take */
    p = write_cfg("as.json", "{\"_class_name\": \"DDIMScheduler\", \"clip_sample\": true, \"prediction_type\": \"v_prediction\"}");
    assert_int_equal(ss_sched_load_as(&s, p, SS_SCHED_EULER), 0);
    assert_int_equal(s.eu.cfg.prediction_type, EULER_PRED_V);
    ss_sched_free(&s);
    assert_int_equal(ss_sched_load_as(&s, p, SS_SCHED_FLOWMATCH), 0);
    ss_sched_free(&s);
    assert_true(ss_sched_load(&s, "/nonexistent/scheduler_config.json") < 0);
    assert_non_null(strstr(ss_err(), "/nonexistent/scheduler_config.json"));
}

/* Repeating FlowMatch timesteps (every sigma 1: a dynamic shift far past max_image_seq_len, as at
 * the dev-vae4-b3-t8 fixture's default size): diffusers' index_for_timestep starts at the second
 * match and raises IndexError at the last step; we refuse that step with an error saying why,
 * after the steps diffusers makes. */
static void test_repeating_timesteps(void **st) {
    (void)st;
    ss_sched s;
    assert_int_equal(ss_sched_load(&s, tc_path("fixtures/flux-pipeline/dev-vae4-b3-t8/scheduler/scheduler_config.json")), 0);
    const double sig[4] = {1.0, 0.75, 0.5, 0.25}, mu = 0.3 + (1.4 - 0.3) / (64 - 4) * (4096 - 4);
    assert_int_equal(ss_sched_set_timesteps(&s, 4, sig, &mu), 0);
    for (int i = 1; i < 4; i++) assert_true(s.timesteps[i] == s.timesteps[0]);
    float x[2] = {0, 0}, v[2] = {1, 1};
    int i = 0, rc = 0;
    for (; i < 4 && rc == 0; i++) rc = ss_sched_step(&s, s.timesteps[i], v, x, 2);
    assert_int_equal(i, 4); /* steps 0-2 made (indices 1-3), the 4th refused */
    assert_true(rc < 0);
    assert_non_null(strstr(ss_err(), "timesteps repeat"));
    ss_sched_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch_linspace), cmocka_unit_test(test_cases), cmocka_unit_test(test_restart),
        cmocka_unit_test(test_load_dir),       cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_repeating_timesteps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
