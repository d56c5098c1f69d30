#include "sample/dpmsolver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "sample/flowmatch.h"
#include "sample/schedcfg.h"
#include "sample/sched_common.h"

void dpm_config_default(dpm_config *c) {
    memset(c, 0, sizeof *c);
    ddpm_betas_default(&c->betas);
    c->solver_order = 2;
    c->prediction_type = DPM_PRED_EPSILON;
    c->solver_type = DPM_SOLVER_MIDPOINT;
    c->lower_order_final = 1;
    c->flow_shift = 1.0;
    c->final_sigmas_type = DPM_FINAL_ZERO;
    c->lambda_min_clipped = -INFINITY;
    c->timestep_spacing = DDPM_SPACING_LINSPACE;
}

void dpm_config_free(dpm_config *c) {
    free(c->trained_betas_buf);
    c->trained_betas_buf = NULL;
    c->betas.trained_betas = NULL;
}

int dpm_config_from_json(dpm_config *c, json_t *root, const char *path, int check_class) {
    static const char *const algo[] = {"dpmsolver++", "deis"};
    static const char *const solver[] = {"midpoint", "heun", "logrho", "bh1", "bh2"};
    static const char *const pred[] = {"epsilon", "sample", "v_prediction", "flow_prediction"};
    static const char *const finals[] = {"zero", "sigma_min"};
    static const char *const spacing[] = {"linspace", "leading", "trailing"};
    dpm_config t;
    dpm_config_default(&t);
    if (check_class) {
        const char *cls;
        if (ss_schedcfg_class(root, path, &cls) < 0) return SS_EFORMAT;
        if (cls && strcmp(cls, "DPMSolverMultistepScheduler"))
            return ss_fail(SS_EARG, "%s: field '_class_name' must be \"DPMSolverMultistepScheduler\"", path);
    }
    int algo_i = 0, solver_i = 0;
    if (ddpm_betas_from_json(&t.betas, &t.trained_betas_buf, root, path) < 0) return SS_EFORMAT;
    int rc = SS_EFORMAT;
    if (ss_schedcfg_int(root, path, "solver_order", 1, 3, &t.solver_order) < 0 ||
        ss_schedcfg_enum(root, path, "prediction_type", pred, 4, 0, &t.prediction_type) < 0 ||
        ss_schedcfg_enum(root, path, "algorithm_type", algo, 2, 0, &algo_i) < 0 ||
        ss_schedcfg_enum(root, path, "solver_type", solver, 5, 0, &solver_i) < 0 ||
        ss_schedcfg_bool(root, path, "lower_order_final", &t.lower_order_final) < 0 ||
        ss_schedcfg_bool(root, path, "euler_at_final", &t.euler_at_final) < 0 ||
        ss_schedcfg_bool(root, path, "use_karras_sigmas", &t.use_karras_sigmas) < 0 ||
        ss_schedcfg_bool(root, path, "use_flow_sigmas", &t.use_flow_sigmas) < 0 ||
        ss_schedcfg_number(root, path, "flow_shift", &t.flow_shift) < 0 ||
        ss_schedcfg_enum(root, path, "final_sigmas_type", finals, 2, 0, &t.final_sigmas_type) < 0 ||
        ss_schedcfg_number(root, path, "lambda_min_clipped", &t.lambda_min_clipped) < 0 ||
        ss_schedcfg_enum(root, path, "timestep_spacing", spacing, 3, 0, &t.timestep_spacing) < 0 ||
        ss_schedcfg_int(root, path, "steps_offset", 0, 1000000, &t.steps_offset) < 0 ||
        /* read only when thresholding is on, which is refused below */
        sched_refuse_true(root, path, "thresholding") < 0 ||
        sched_refuse_true(root, path, "use_exponential_sigmas") < 0 ||
        sched_refuse_true(root, path, "use_beta_sigmas") < 0 || sched_refuse_true(root, path, "use_lu_lambdas") < 0)
        goto fail;
    t.solver_type = solver_i == 1 ? DPM_SOLVER_HEUN : DPM_SOLVER_MIDPOINT; /* logrho/bh1/bh2: midpoint */
    (void)algo_i; /* deis: registered as dpmsolver++ by diffusers */
    json_t *vt = json_object_get(root, "variance_type");
    if (vt && !json_is_null(vt)) {
        rc = ss_fail(SS_EARG, "%s: field 'variance_type' is not supported (must be null)", path);
        goto fail;
    }
    if (t.use_karras_sigmas && t.use_flow_sigmas) {
        /* diffusers takes the karras branch first; flow sigmas would then only change alpha/sigma */
        rc = ss_fail(SS_EARG, "%s: fields 'use_karras_sigmas' and 'use_flow_sigmas' cannot both be true", path);
        goto fail;
    }
    if (!isfinite(t.flow_shift) || !(t.flow_shift > 0)) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'flow_shift' must be a positive number", path);
        goto fail;
    }
    if (isnan(t.lambda_min_clipped)) {
        rc = ss_fail(SS_EFORMAT, "%s: field 'lambda_min_clipped' must not be NaN", path);
        goto fail;
    }
    if (!t.betas.trained_betas && (!isfinite(t.betas.beta_start) || !isfinite(t.betas.beta_end) ||
                                   t.betas.beta_start < 0 || t.betas.beta_end >= 1)) {
        rc = ss_fail(SS_EFORMAT, "%s: fields 'beta_start' and 'beta_end' must lie in [0, 1)", path);
        goto fail;
    }
    dpm_config_free(c);
    *c = t;
    return 0;
fail:
    dpm_config_free(&t);
    return rc;
}

int dpm_config_load(dpm_config *c, const char *path, int check_class) {
    json_t *root;
    int rc = ss_schedcfg_load(path, &root);
    if (rc < 0) return rc;
    rc = dpm_config_from_json(c, root, path, check_class);
    json_decref(root);
    return rc;
}

static void free_state(dpm_sched *s) {
    for (int k = 0; k < 3; k++) free(s->model_outputs[k]), s->model_outputs[k] = NULL;
    s->n = 0;
}

static void free_schedule(dpm_sched *s) {
    free(s->timesteps), free(s->timesteps_f), free(s->sigmas);
    s->timesteps = NULL, s->timesteps_f = NULL, s->sigmas = NULL;
    s->num_steps = 0;
}

int dpm_init(dpm_sched *s, const dpm_config *c) {
    memset(s, 0, sizeof *s);
    int T = c->betas.num_train_timesteps;
    if (T < 2) return ss_fail(SS_EARG, "dpmsolver: num_train_timesteps must be >= 2");
    if (c->solver_order < 1 || c->solver_order > 3) return ss_fail(SS_EARG, "dpmsolver: solver_order must be 1, 2 or 3");
    s->cfg = *c;
    s->cfg.trained_betas_buf = NULL;
    s->cfg.betas.trained_betas = NULL;
    s->alphas_cumprod = ss_malloc((size_t)T * sizeof(float));
    if (!s->alphas_cumprod) return SS_ENOMEM;
    ddpm_alphas_cumprod(&c->betas, s->alphas_cumprod);
    s->step_index = -1;
    return 0;
}

void dpm_free(dpm_sched *s) {
    free_schedule(s);
    free_state(s);
    free(s->alphas_cumprod);
    s->alphas_cumprod = NULL;
}

int dpm_set_timesteps(dpm_sched *s, int n) {
    const dpm_config *c = &s->cfg;
    int T = c->betas.num_train_timesteps;
    if (n < 1 || n > T) return ss_fail(SS_EARG, "dpmsolver: number of steps must be in 1..%d, got %d", T, n);
    const float *ac = s->alphas_cumprod;
    /* lambda_min_clipped: searchsorted(flip(lambda_t), v) counts the lambdas below v */
    int clipped = 0;
    if (c->lambda_min_clipped > -INFINITY) {
        for (int i = 0; i < T; i++) {
            float a = sqrtf(ac[i]), sg = sqrtf(1.0f - ac[i]);
            if ((double)(logf(a) - logf(sg)) < c->lambda_min_clipped) clipped++;
        }
    }
    int last = T - clipped;
    size_t cap = (size_t)T + (size_t)n + 2;
    double *grid = ss_malloc(cap * sizeof *grid), *sig = ss_malloc(cap * sizeof *sig);
    float *table = ss_malloc((size_t)T * sizeof *table), *logt = ss_malloc((size_t)T * sizeof *logt);
    int64_t *ts = ss_malloc(cap * sizeof *ts);
    float *tsf = NULL, *sg = NULL;
    int rc = SS_ENOMEM, m = 0;
    if (!grid || !sig || !table || !logt || !ts) goto done;
    if (c->timestep_spacing == DDPM_SPACING_LINSPACE) {
        fm_linspace(0.0, (double)last - 1, n + 1, grid);
        for (int i = 0; i < n; i++) ts[i] = (int64_t)np_round(grid[n - i]);
        m = n;
    } else if (c->timestep_spacing == DDPM_SPACING_LEADING) {
        int64_t ratio = last / (n + 1);
        for (int i = 0; i < n; i++) ts[i] = (int64_t)(n - i) * ratio + c->steps_offset;
        m = n;
    } else {
        double ratio = (double)T / n;
        int64_t len = np_arange_f64((double)last, 0.0, -ratio, NULL);
        if (len < 1 || (size_t)len > cap) {
            rc = ss_fail(SS_EARG, "dpmsolver: trailing spacing gives %lld steps", (long long)len);
            goto done;
        }
        np_arange_f64((double)last, 0.0, -ratio, grid);
        for (int64_t i = 0; i < len; i++) ts[i] = (int64_t)np_round(grid[i]) - 1;
        m = (int)len;
    }
    ddpm_sigma_table(ac, T, table);
    for (int i = 0; i < T; i++) logt[i] = logf(table[i]);
    if (c->use_karras_sigmas) {
        ddpm_karras(table[0], table[T - 1], n, sig);
        for (int i = 0; i < n; i++) ts[i] = (int64_t)np_round(ddpm_sigma_to_t(sig[i], logt, T));
        m = n;
    } else if (c->use_flow_sigmas) {
        fm_linspace(1.0, 1.0 / T, n + 1, grid);
        double sh = c->flow_shift;
        for (int i = 0; i <= n; i++) {
            double x = 1.0 - grid[i];
            grid[i] = sh * x / (1 + (sh - 1) * x);
        }
        for (int i = 0; i < n; i++) {
            sig[i] = grid[n - i];
            ts[i] = (int64_t)(sig[i] * T); /* torch .to(int64) truncates */
        }
        m = n;
    } else {
        for (int i = 0; i < m; i++) {
            int64_t t = ts[i];
            sig[i] = t < 0 ? table[0] : t > T - 1 ? table[T - 1] : table[t]; /* np.interp at integers */
        }
    }
    sig[m] = c->final_sigmas_type == DPM_FINAL_SIGMA_MIN ? table[0] : 0.0;
    tsf = ss_malloc((size_t)m * sizeof *tsf);
    sg = ss_malloc(((size_t)m + 1) * sizeof *sg);
    if (!tsf || !sg) goto done;
    for (int i = 0; i < m; i++) tsf[i] = (float)ts[i];
    for (int i = 0; i <= m; i++) sg[i] = (float)sig[i];
    free_schedule(s);
    free_state(s);
    s->timesteps = ts, s->timesteps_f = tsf, s->sigmas = sg;
    ts = NULL, tsf = NULL, sg = NULL;
    s->num_steps = m;
    s->step_index = -1;
    s->lower_order_nums = 0;
    rc = 0;
done:
    free(grid), free(sig), free(table), free(logt), free(ts), free(tsf), free(sg);
    return rc;
}

/* _sigma_to_alpha_sigma_t on a 0-d fp32 tensor */
static void alpha_sigma(const dpm_config *c, float sigma, float *alpha_t, float *sigma_t) {
    if (c->use_flow_sigmas) {
        *alpha_t = 1.0f - sigma;
        *sigma_t = sigma;
    } else {
        *alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
        *sigma_t = sigma * *alpha_t;
    }
}

static float lambda_of(float alpha_t, float sigma_t) { return logf(alpha_t) - logf(sigma_t); }

static int index_for_timestep(const dpm_sched *s, double t) {
    int first = -1;
    for (int i = 0; i < s->num_steps; i++) {
        if ((double)s->timesteps[i] == t) {
            if (first >= 0) return i; /* the second match, as diffusers picks */
            first = i;
        }
    }
    return first >= 0 ? first : s->num_steps - 1;
}

int dpm_step(dpm_sched *s, double t, const float *m_in, float *x, size_t n) {
    const dpm_config *c = &s->cfg;
    if (!s->num_steps) return ss_fail(SS_EARG, "dpmsolver: set_timesteps must come before step");
    if (s->step_index < 0) s->step_index = index_for_timestep(s, t);
    int i = s->step_index, N = s->num_steps, order = c->solver_order;
    if (i >= N) return ss_fail(SS_EARG, "dpmsolver: all %d steps are done", N);
    if (s->n != n && s->lower_order_nums > 0)
        return ss_fail(SS_EARG, "dpmsolver: the sample has %zu values, the previous steps had %zu", n, s->n);
    if (s->n != n) {
        free_state(s);
        for (int k = 0; k < order; k++) {
            s->model_outputs[k] = ss_calloc(n ? n : 1, sizeof(float));
            if (!s->model_outputs[k]) {
                free_state(s);
                return SS_ENOMEM;
            }
        }
        s->n = n;
    }
    int lower_final = i == N - 1 && (c->euler_at_final || (c->lower_order_final && N < 15) ||
                                     c->final_sigmas_type == DPM_FINAL_ZERO);
    int lower_second = i == N - 2 && c->lower_order_final && N < 15;

    /* convert_model_output: the data prediction x0 */
    float *x0 = s->model_outputs[0]; /* the oldest buffer is recycled as the newest */
    for (int k = 0; k < order - 1; k++) s->model_outputs[k] = s->model_outputs[k + 1];
    s->model_outputs[order - 1] = x0;
    {
        float sigma = s->sigmas[i], a, sgm;
        alpha_sigma(c, sigma, &a, &sgm);
        switch (c->prediction_type) {
        case DPM_PRED_EPSILON:
            for (size_t j = 0; j < n; j++) x0[j] = (x[j] - sgm * m_in[j]) / a;
            break;
        case DPM_PRED_SAMPLE:
            for (size_t j = 0; j < n; j++) x0[j] = m_in[j];
            break;
        case DPM_PRED_V:
            for (size_t j = 0; j < n; j++) x0[j] = a * x[j] - sgm * m_in[j];
            break;
        default: /* flow_prediction: sigma_t = sigmas[i] */
            for (size_t j = 0; j < n; j++) x0[j] = x[j] - sigma * m_in[j];
            break;
        }
    }
    float at, st, a0, s0;
    alpha_sigma(c, s->sigmas[i + 1], &at, &st);
    alpha_sigma(c, s->sigmas[i], &a0, &s0);
    float lt = lambda_of(at, st), l0 = lambda_of(a0, s0);
    float h = lt - l0;
    float em1 = expf(-h) - 1.0f;
    float cs = st / s0, cd = at * em1;
    float *M0 = s->model_outputs[order - 1];
    if (order == 1 || s->lower_order_nums < 1 || lower_final) {
        for (size_t j = 0; j < n; j++) x[j] = cs * x[j] - cd * M0[j];
    } else if (order == 2 || s->lower_order_nums < 2 || lower_second) {
        float a1, s1;
        alpha_sigma(c, s->sigmas[i - 1], &a1, &s1);
        float l1 = lambda_of(a1, s1);
        float h0 = l0 - l1, r0 = h0 / h, ir0 = 1.0f / r0;
        const float *M1 = s->model_outputs[order - 2];
        if (c->solver_type == DPM_SOLVER_MIDPOINT) {
            float half = 0.5f * cd;
            for (size_t j = 0; j < n; j++) {
                float d1 = ir0 * (M0[j] - M1[j]);
                x[j] = (cs * x[j] - cd * M0[j]) - half * d1;
            }
        } else {
            float ch = at * (em1 / h + 1.0f);
            for (size_t j = 0; j < n; j++) {
                float d1 = ir0 * (M0[j] - M1[j]);
                x[j] = (cs * x[j] - cd * M0[j]) + ch * d1;
            }
        }
    } else {
        float a1, s1, a2, s2;
        alpha_sigma(c, s->sigmas[i - 1], &a1, &s1);
        alpha_sigma(c, s->sigmas[i - 2], &a2, &s2);
        float l1 = lambda_of(a1, s1), l2 = lambda_of(a2, s2);
        float h0 = l0 - l1, h1 = l1 - l2;
        float r0 = h0 / h, r1 = h1 / h;
        float ir0 = 1.0f / r0, ir1 = 1.0f / r1, q = r0 / (r0 + r1), ir01 = 1.0f / (r0 + r1);
        float c1 = at * (em1 / h + 1.0f);
        float c2 = at * ((em1 + h) / (h * h) - 0.5f);
        const float *M1 = s->model_outputs[1], *M2 = s->model_outputs[0];
        for (size_t j = 0; j < n; j++) {
            float d10 = ir0 * (M0[j] - M1[j]), d11 = ir1 * (M1[j] - M2[j]);
            float dd = d10 - d11;
            float d1 = d10 + q * dd, d2 = ir01 * dd;
            x[j] = ((cs * x[j] - cd * M0[j]) + c1 * d1) - c2 * d2;
        }
    }
    if (s->lower_order_nums < order) s->lower_order_nums++;
    s->step_index++;
    return 0;
}
