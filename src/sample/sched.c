#include "sample/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "sample/schedcfg.h"

static const char *const k_names[] = {"FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                      "EulerDiscreteScheduler"};

const char *ss_sched_class_name(ss_sched_kind k) {
    return (unsigned)k < 3 ? k_names[k] : "?";
}

int ss_sched_kind_of(const char *class_name) {
    for (int k = 0; k < 3; k++)
        if (class_name && !strcmp(class_name, k_names[k])) return k;
    return -1;
}

static int load_kind(ss_sched *s, const char *path, int kind, int check_class, ss_torch_cpu cpu) {
    memset(s, 0, sizeof *s);
    s->kind = (ss_sched_kind)kind;
    s->init_noise_sigma = 1.0f;
    s->step_index = -1;
    int rc = 0;
    if (kind == SS_SCHED_FLOWMATCH) {
        fm_config c;
        fm_config_default(&c);
        json_t *root;
        if ((rc = ss_schedcfg_load(path, &root)) < 0) return rc;
        rc = fm_config_from_json(&c, root, path, check_class);
        json_decref(root);
        if (rc < 0) return rc;
        return fm_init(&s->fm, &c);
    }
    if (kind == SS_SCHED_DPMSOLVER) {
        dpm_config c;
        dpm_config_default(&c);
        if ((rc = dpm_config_load(&c, path, check_class)) < 0) return rc;
        c.betas.torch_cpu = cpu;
        rc = dpm_init(&s->dpm, &c);
        dpm_config_free(&c);
        return rc;
    }
    euler_config c;
    euler_config_default(&c);
    if ((rc = euler_config_load(&c, path, check_class)) < 0) return rc;
    c.betas.torch_cpu = cpu;
    rc = euler_init(&s->eu, &c);
    euler_config_free(&c);
    return rc;
}

int ss_sched_load_opts(ss_sched *s, const char *path, int kind, ss_torch_cpu cpu) {
    memset(s, 0, sizeof *s);
    if ((unsigned)cpu > SS_TORCH_CPU_AVX512) return ss_fail(SS_EARG, "scheduler: unknown torch CPU kernel %d", (int)cpu);
    if (kind >= 0) {
        if (kind > 2) return ss_fail(SS_EARG, "scheduler: unknown kind %d", kind);
        return load_kind(s, path, kind, 0, cpu);
    }
    json_t *root;
    int rc = ss_schedcfg_load(path, &root);
    if (rc < 0) return rc;
    const char *cls = NULL;
    char buf[80];
    rc = ss_schedcfg_class(root, path, &cls);
    if (rc == 0 && !cls) rc = ss_fail(SS_EMISSING, "%s: field '_class_name' is missing", path);
    if (rc == 0 && (kind = ss_sched_kind_of(cls)) < 0)
        rc = ss_fail(SS_EARG, "%s: field '_class_name' = \"%s\" is not supported (supported: %s, %s, %s)", path,
                     ss_printable(cls, buf, sizeof buf), k_names[0], k_names[1], k_names[2]);
    json_decref(root);
    if (rc < 0) return rc;
    return load_kind(s, path, kind, 1, cpu);
}

int ss_sched_load(ss_sched *s, const char *path) { return ss_sched_load_opts(s, path, -1, SS_TORCH_CPU_AVX2); }

int ss_torch_cpu_parse(const char *name) {
    static const char *const n[] = {"default", "avx2", "avx512"};
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, n[i])) return i;
    return -1;
}

int ss_sched_load_dir(ss_sched *s, const char *dir) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "%s: path too long", dir);
    return ss_sched_load(s, path);
}

int ss_sched_load_named(ss_sched *s, const char *dir, const char *name) {
    memset(s, 0, sizeof *s);
    char path[4096], buf[64];
    if ((size_t)snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "%s: path too long", dir);
    if (name && !strcmp(name, "default")) return ss_sched_load(s, path);
    if (name && !strcmp(name, "euler")) return ss_sched_load_as(s, path, SS_SCHED_EULER);
    if (name && !strcmp(name, "dpm++")) return ss_sched_load_as(s, path, SS_SCHED_DPMSOLVER);
    return ss_fail(SS_EARG, "scheduler '%s' is not one of default, euler, dpm++", name ? ss_printable(name, buf, sizeof buf) : "");
}

int ss_sched_load_as(ss_sched *s, const char *path, ss_sched_kind kind) {
    if ((unsigned)kind > 2) {
        memset(s, 0, sizeof *s);
        return ss_fail(SS_EARG, "scheduler: unknown kind %d", (int)kind);
    }
    return ss_sched_load_opts(s, path, (int)kind, SS_TORCH_CPU_AVX2);
}

int ss_sched_set_timesteps(ss_sched *s, int n, const double *sigmas, const double *mu) {
    int rc;
    if (s->kind != SS_SCHED_FLOWMATCH && (sigmas || mu))
        return ss_fail(SS_EARG, "%s: custom sigmas or mu are not supported", ss_sched_class_name(s->kind));
    switch (s->kind) {
    case SS_SCHED_FLOWMATCH:
        if ((rc = fm_set_timesteps(&s->fm, n, sigmas, mu)) < 0) return rc;
        s->num_steps = s->fm.num_steps, s->timesteps = s->fm.timesteps, s->sigmas = s->fm.sigmas;
        s->step_index = -1;
        break;
    case SS_SCHED_DPMSOLVER:
        if ((rc = dpm_set_timesteps(&s->dpm, n)) < 0) return rc;
        s->num_steps = s->dpm.num_steps, s->timesteps = s->dpm.timesteps_f, s->sigmas = s->dpm.sigmas;
        break;
    default:
        if ((rc = euler_set_timesteps(&s->eu, n)) < 0) return rc;
        s->num_steps = s->eu.num_steps, s->timesteps = s->eu.timesteps, s->sigmas = s->eu.sigmas;
        s->init_noise_sigma = s->eu.init_noise_sigma;
        break;
    }
    return 0;
}

int ss_sched_scale_model_input(ss_sched *s, double t, float *x, size_t n) {
    if (s->kind == SS_SCHED_EULER) return euler_scale_model_input(&s->eu, t, x, n);
    return 0;
}

int ss_sched_step(ss_sched *s, double t, const float *m, float *x, size_t n) {
    if (s->kind == SS_SCHED_DPMSOLVER) return dpm_step(&s->dpm, t, m, x, n);
    if (s->kind == SS_SCHED_EULER) return euler_step(&s->eu, t, m, x, n);
    if (s->step_index < 0) {
        /* FlowMatchEulerDiscreteScheduler.index_for_timestep: the second match if several */
        int first = -1, second = -1;
        for (int i = 0; i < s->num_steps; i++)
            if ((double)s->timesteps[i] == t) {
                if (first < 0) first = i;
                else if (second < 0) second = i;
            }
        if (first < 0) return ss_fail(SS_EARG, "flowmatch: timestep %g is not in the schedule", t);
        s->step_index = second >= 0 ? second : first;
    }
    if (s->step_index >= s->num_steps) /* only when timesteps repeat: diffusers raises IndexError there */
        return ss_fail(SS_EARG, "flowmatch: the schedule's %d timesteps repeat (t = %g occurs more than once; e.g. a "
                       "dynamic shift from an image far past max_image_seq_len makes every sigma 1), so the step index, "
                       "which starts at the second match as in diffusers' index_for_timestep, runs past the last step "
                       "(diffusers fails here too); use a smaller image or another scheduler config", s->num_steps, t);
    int rc = fm_step(&s->fm, s->step_index, x, m, n);
    if (rc == 0) s->step_index++;
    return rc;
}

void ss_sched_free(ss_sched *s) {
    fm_free(&s->fm);
    dpm_free(&s->dpm);
    euler_free(&s->eu);
    s->num_steps = 0;
    s->timesteps = s->sigmas = NULL;
}
