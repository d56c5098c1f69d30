#include "sample/euler_discrete.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "sample/flowmatch.h"
#include "sample/schedcfg.h"
#include "sample/sched_common.h"

void euler_config_default(euler_config *c) {
    memset(c, 0, sizeof *c);
    ddpm_betas_default(&c->betas);
    c->prediction_type = EULER_PRED_EPSILON;
    c->sigma_min = c->sigma_max = NAN;
    c->timestep_spacing = DDPM_SPACING_LINSPACE;
}

void euler_config_free(euler_config *c) {
    free(c->trained_betas_buf);
    c->trained_betas_buf = NULL;
    c->betas.trained_betas = NULL;
}

int euler_config_from_json(euler_config *c, json_t *root, const char *path, int check_class) {
    static const char *const pred[] = {"epsilon", "v_prediction", "sample", "original_sample"};
    static const char *const interp[] = {"linear"};
    static const char *const spacing[] = {"linspace", "leading", "trailing"};
    static const char *const ttype[] = {"discrete"};
    static const char *const finals[] = {"zero", "sigma_min"};
    euler_config t;
    euler_config_default(&t);
    if (check_class) {
        const char *cls;
        if (ss_schedcfg_class(root, path, &cls) < 0) return SS_EFORMAT;
        if (cls && strcmp(cls, "EulerDiscreteScheduler"))
            return ss_fail(SS_EARG, "%s: field '_class_name' must be \"EulerDiscreteScheduler\"", path);
    }
    if (ddpm_betas_from_json(&t.betas, &t.trained_betas_buf, root, path) < 0) return SS_EFORMAT;
    int dummy = 0, rc = SS_EFORMAT;
    if (ss_schedcfg_enum(root, path, "prediction_type", pred, 4, 0, &t.prediction_type) < 0 ||
        ss_schedcfg_enum(root, path, "interpolation_type", interp, 1, 0, &dummy) < 0 ||
        ss_schedcfg_bool(root, path, "use_karras_sigmas", &t.use_karras_sigmas) < 0 ||
        ss_schedcfg_number(root, path, "sigma_min", &t.sigma_min) < 0 ||
        ss_schedcfg_number(root, path, "sigma_max", &t.sigma_max) < 0 ||
        ss_schedcfg_enum(root, path, "timestep_spacing", spacing, 3, 0, &t.timestep_spacing) < 0 ||
        ss_schedcfg_enum(root, path, "timestep_type", ttype, 1, 0, &dummy) < 0 ||
        ss_schedcfg_int(root, path, "steps_offset", 0, 1000000, &t.steps_offset) < 0 ||
        ss_schedcfg_enum(root, path, "final_sigmas_type", finals, 2, 0, &t.final_sigma_min) < 0 ||
        sched_refuse_true(root, path, "use_exponential_sigmas") < 0 ||
        sched_refuse_true(root, path, "use_beta_sigmas") < 0)
        goto fail;
    if (t.prediction_type == 3) t.prediction_type = EULER_PRED_SAMPLE;
    if ((!isnan(t.sigma_min) && !(t.sigma_min > 0 && isfinite(t.sigma_min))) ||
        (!isnan(t.sigma_max) && !(t.sigma_max > 0 && isfinite(t.sigma_max)))) {
        rc = ss_fail(SS_EFORMAT, "%s: fields 'sigma_min' and 'sigma_max' must be positive numbers or null", path);
        goto fail;
    }
    if (!t.betas.trained_betas && (!isfinite(t.betas.beta_start) || !isfinite(t.betas.beta_end) ||
                                   t.betas.beta_start < 0 || t.betas.beta_end >= 1)) {
        rc = ss_fail(SS_EFORMAT, "%s: fields 'beta_start' and 'beta_end' must lie in [0, 1)", path);
        goto fail;
    }
    euler_config_free(c);
    *c = t;
    return 0;
fail:
    euler_config_free(&t);
    return rc;
}

int euler_config_load(euler_config *c, const char *path, int check_class) {
    json_t *root;
    int rc = ss_schedcfg_load(path, &root);
    if (rc < 0) return rc;
    rc = euler_config_from_json(c, root, path, check_class);
    json_decref(root);
    return rc;
}

int euler_init(euler_sched *s, const euler_config *c) {
    memset(s, 0, sizeof *s);
    int T = c->betas.num_train_timesteps;
    if (T < 2) return ss_fail(SS_EARG, "euler: num_train_timesteps must be >= 2");
    s->cfg = *c;
    s->cfg.trained_betas_buf = NULL;
    s->cfg.betas.trained_betas = NULL;
    s->alphas_cumprod = ss_malloc((size_t)T * sizeof(float));
    if (!s->alphas_cumprod) return SS_ENOMEM;
    ddpm_alphas_cumprod(&c->betas, s->alphas_cumprod);
    s->step_index = -1;
    return 0;
}

void euler_free(euler_sched *s) {
    free(s->timesteps), free(s->sigmas), free(s->alphas_cumprod);
    s->timesteps = s->sigmas = s->alphas_cumprod = NULL;
    s->num_steps = 0;
}

/* np.interp(x, arange(T), fp) for fp64 x */
static double interp(double x, const float *fp, int T) {
    if (x > T - 1) return fp[T - 1];
    if (x < 0) return fp[0];
    int j = (int)floor(x);
    if (j >= T - 1) return fp[T - 1];
    if ((double)j == x) return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - j) + (double)fp[j];
}

int euler_set_timesteps(euler_sched *s, int n) {
    const euler_config *c = &s->cfg;
    int T = c->betas.num_train_timesteps;
    if (n < 1 || n > T) return ss_fail(SS_EARG, "euler: number of steps must be in 1..%d, got %d", T, n);
    size_t cap = (size_t)T + (size_t)n + 2;
    double *grid = ss_malloc(cap * sizeof *grid), *sig = ss_malloc(cap * sizeof *sig);
    float *table = ss_malloc((size_t)T * sizeof *table), *logt = ss_malloc((size_t)T * sizeof *logt);
    float *ts = ss_malloc(cap * sizeof *ts), *sg = NULL;
    int rc = SS_ENOMEM, m = n;
    if (!grid || !sig || !table || !logt || !ts) goto done;
    if (c->timestep_spacing == DDPM_SPACING_LINSPACE) {
        fm_linspace(0.0, (double)T - 1, n, grid);
        for (int i = 0; i < n; i++) ts[i] = (float)grid[n - 1 - i];
    } else if (c->timestep_spacing == DDPM_SPACING_LEADING) {
        int ratio = T / n;
        for (int i = 0; i < n; i++) ts[i] = (float)((double)(n - 1 - i) * ratio) + (float)c->steps_offset;
    } else {
        double ratio = (double)T / n;
        int64_t len = np_arange_f64((double)T, 0.0, -ratio, NULL);
        if (len < 1 || (size_t)len > cap) {
            rc = ss_fail(SS_EARG, "euler: trailing spacing gives %lld steps", (long long)len);
            goto done;
        }
        np_arange_f64((double)T, 0.0, -ratio, grid);
        for (int64_t i = 0; i < len; i++) ts[i] = (float)np_round(grid[i]) - 1.0f;
        m = (int)len;
    }
    ddpm_sigma_table(s->alphas_cumprod, T, table);
    for (int i = 0; i < T; i++) logt[i] = logf(table[i]);
    for (int i = 0; i < m; i++) sig[i] = interp((double)ts[i], table, T);
    if (c->use_karras_sigmas) {
        double lo = isnan(c->sigma_min) ? sig[m - 1] : c->sigma_min;
        double hi = isnan(c->sigma_max) ? sig[0] : c->sigma_max;
        ddpm_karras(lo, hi, n, sig);
        for (int i = 0; i < n; i++) ts[i] = (float)ddpm_sigma_to_t(sig[i], logt, T);
        m = n;
    }
    sig[m] = c->final_sigma_min ? table[0] : 0.0;
    sg = ss_malloc(((size_t)m + 1) * sizeof *sg);
    if (!sg) goto done;
    float mx = 0;
    for (int i = 0; i <= m; i++) {
        sg[i] = (float)sig[i];
        if (i == 0 || sg[i] > mx) mx = sg[i];
    }
    free(s->timesteps), free(s->sigmas);
    s->timesteps = ts, s->sigmas = sg;
    ts = NULL, sg = NULL;
    s->num_steps = m;
    s->step_index = -1;
    s->init_noise_sigma = c->timestep_spacing == DDPM_SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
    rc = 0;
done:
    free(grid), free(sig), free(table), free(logt), free(ts), free(sg);
    return rc;
}

static int init_index(euler_sched *s, double t) {
    if (s->step_index >= 0) return 0;
    if (!s->num_steps) return ss_fail(SS_EARG, "euler: set_timesteps must come before step");
    int first = -1, second = -1;
    for (int i = 0; i < s->num_steps; i++) {
        if ((double)s->timesteps[i] == t) {
            if (first < 0) first = i;
            else if (second < 0) second = i;
        }
    }
    if (first < 0) return ss_fail(SS_EARG, "euler: timestep %g is not in the schedule", t);
    s->step_index = second >= 0 ? second : first;
    return 0;
}

int euler_scale_model_input(euler_sched *s, double t, float *x, size_t n) {
    int rc = init_index(s, t);
    if (rc < 0) return rc;
    if (s->step_index >= s->num_steps) return ss_fail(SS_EARG, "euler: all %d steps are done", s->num_steps);
    float sigma = s->sigmas[s->step_index];
    float d = sqrtf(sigma * sigma + 1.0f);
    for (size_t j = 0; j < n; j++) x[j] = x[j] / d;
    return 0;
}

int euler_step(euler_sched *s, double t, const float *m, float *x, size_t n) {
    int rc = init_index(s, t);
    if (rc < 0) return rc;
    int i = s->step_index;
    if (i >= s->num_steps) return ss_fail(SS_EARG, "euler: all %d steps are done", s->num_steps);
    float sigma = s->sigmas[i];
    float sigma_hat = sigma * (0.0f + 1.0f); /* gamma = 0 */
    float dt = s->sigmas[i + 1] - sigma_hat;
    switch (s->cfg.prediction_type) {
    case EULER_PRED_EPSILON:
        for (size_t j = 0; j < n; j++) {
            float pred = x[j] - sigma_hat * m[j];
            float der = (x[j] - pred) / sigma_hat;
            x[j] = x[j] + der * dt;
        }
        break;
    case EULER_PRED_V: {
        float s2 = sigma * sigma + 1.0f;
        float cm = -sigma / sqrtf(s2);
        for (size_t j = 0; j < n; j++) {
            float pred = m[j] * cm + x[j] / s2;
            float der = (x[j] - pred) / sigma_hat;
            x[j] = x[j] + der * dt;
        }
        break;
    }
    default:
        for (size_t j = 0; j < n; j++) {
            float der = (x[j] - m[j]) / sigma_hat;
            x[j] = x[j] + der * dt;
        }
        break;
    }
    s->step_index++;
    return 0;
}
