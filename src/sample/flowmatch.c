#include "sample/flowmatch.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/jsonfile.h"

void fm_config_default(fm_config *c) {
    c->num_train_timesteps = 1000;
    c->shift = 1.0;
    c->use_dynamic_shifting = 0;
    c->base_shift = 0.5;
    c->max_shift = 1.15;
    c->base_image_seq_len = 256;
    c->max_image_seq_len = 4096;
}

/* ---- scheduler_config.json ---- */

static int get_number(json_t *root, const char *path, const char *key, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be a number", path, key);
    *out = json_number_value(v);
    return 0;
}

static int get_int(json_t *root, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000000)
        return ss_fail(SS_EFORMAT, "%s: field '%s' must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_bool(json_t *root, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return ss_fail(SS_EFORMAT, "%s: field '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return 0;
}

/* Options that change the schedule but are not implemented: refuse rather than silently differ. */
static int check_unsupported(json_t *root, const char *path, int check_class) {
    static const char *const flags[] = {"invert_sigmas", "use_karras_sigmas", "use_exponential_sigmas",
                                        "use_beta_sigmas", "stochastic_sampling"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        int on = 0;
        if (get_bool(root, path, flags[i], &on) < 0) return SS_EFORMAT;
        if (on) return ss_fail(SS_EARG, "%s: field '%s' = true is not supported", path, flags[i]);
    }
    json_t *v = json_object_get(root, "shift_terminal");
    if (v && !json_is_null(v))
        return ss_fail(SS_EARG, "%s: field 'shift_terminal' is not supported (must be null)", path);
    v = json_object_get(root, "time_shift_type");
    if (v && !(json_is_string(v) && !strcmp(json_string_value(v), "exponential")))
        return ss_fail(SS_EARG, "%s: field 'time_shift_type' must be \"exponential\"", path);
    v = json_object_get(root, "_class_name");
    if (check_class && v && !(json_is_string(v) && !strcmp(json_string_value(v), "FlowMatchEulerDiscreteScheduler")))
        return ss_fail(SS_EARG, "%s: field '_class_name' must be \"FlowMatchEulerDiscreteScheduler\"", path);
    return 0;
}


int fm_config_from_json(fm_config *c, json_t *root, const char *path, int check_class) {
    fm_config t;
    fm_config_default(&t);
    if (!json_is_object(root)) return ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
    if (get_int(root, path, "num_train_timesteps", &t.num_train_timesteps) < 0 ||
        get_number(root, path, "shift", &t.shift) < 0 ||
        get_bool(root, path, "use_dynamic_shifting", &t.use_dynamic_shifting) < 0 ||
        get_number(root, path, "base_shift", &t.base_shift) < 0 ||
        get_number(root, path, "max_shift", &t.max_shift) < 0 ||
        get_int(root, path, "base_image_seq_len", &t.base_image_seq_len) < 0 ||
        get_int(root, path, "max_image_seq_len", &t.max_image_seq_len) < 0)
        return SS_EFORMAT;
    int rc;
    if ((rc = check_unsupported(root, path, check_class)) < 0) return rc;
    if (!(t.shift > 0) || !isfinite(t.shift))
        return ss_fail(SS_EFORMAT, "%s: field 'shift' must be positive, got %g", path, t.shift);
    if (t.max_image_seq_len == t.base_image_seq_len)
        return ss_fail(SS_EFORMAT, "%s: fields 'base_image_seq_len' and 'max_image_seq_len' must differ", path);
    *c = t;
    return 0;
}

int fm_config_load(fm_config *c, const char *path) {
    json_t *root = NULL;
    int err = ss_json_load(path, &root);
    if (err < 0) return err;
    int rc = fm_config_from_json(c, root, path, 1);
    json_decref(root);
    return rc;
}

/* ---- schedule ---- */

void fm_linspace(double start, double stop, int n, double *out) {
    if (n <= 0) return;
    if (n == 1) {
        out[0] = start; /* numpy: step is NaN but 0 * delta + start */
        return;
    }
    double step = (stop - start) / (double)(n - 1);
    for (int i = 0; i < n; i++) out[i] = (double)i * step + start;
    out[n - 1] = stop;
}

int fm_init(fm_sched *s, const fm_config *c) {
    memset(s, 0, sizeof *s);
    if (c->num_train_timesteps < 1) return ss_fail(SS_EARG, "flowmatch: num_train_timesteps must be >= 1");
    if (!(c->shift > 0)) return ss_fail(SS_EARG, "flowmatch: shift must be positive");
    s->cfg = *c;
    /* torch fp32: t = T..1, sigma = t / T, optionally shifted; only the two ends are kept. */
    float T = (float)c->num_train_timesteps, sh = (float)c->shift;
    float ends[2] = {T / T, 1.0f / T};
    for (int k = 0; k < 2; k++) {
        if (!c->use_dynamic_shifting) {
            float num = sh * ends[k], den = 1.0f + (sh - 1.0f) * ends[k];
            ends[k] = num / den;
        }
    }
    s->sigma_max = ends[0];
    s->sigma_min = ends[1];
    return 0;
}

void fm_free(fm_sched *s) {
    free(s->sigmas);
    free(s->timesteps);
    s->sigmas = s->timesteps = NULL;
    s->num_steps = 0;
}

int fm_set_timesteps(fm_sched *s, int n, const double *sigmas, const double *mu) {
    const fm_config *c = &s->cfg;
    if (n < 1) return ss_fail(SS_EARG, "flowmatch: number of steps must be >= 1, got %d", n);
    if (c->use_dynamic_shifting && !mu)
        return ss_fail(SS_EARG, "flowmatch: use_dynamic_shifting needs a value for mu");
    float *sg = ss_malloc(((size_t)n + 1) * sizeof *sg), *ts = ss_malloc((size_t)n * sizeof *ts);
    double *d = ss_malloc((size_t)n * sizeof *d);
    if (!sg || !ts || !d) {
        free(sg), free(ts), free(d);
        return SS_ENOMEM;
    }
    double T = c->num_train_timesteps;
    if (!sigmas) {
        /* numpy fp64: linspace over "timesteps" sigma*T, then back to sigmas. */
        fm_linspace(s->sigma_max * T, s->sigma_min * T, n, d);
        for (int i = 0; i < n; i++) d[i] /= T;
    } else {
        for (int i = 0; i < n; i++) d[i] = (float)sigmas[i]; /* astype(float32) */
    }
    if (c->use_dynamic_shifting) {
        /* exp(mu) / (exp(mu) + (1/t - 1) ** 1.0): numpy keeps the array's precision, so fp32 for
         * given sigmas (a float32 array) and fp64 on the linspace path. x ** 1.0 is exact. */
        double e = exp(*mu);
        float ef = (float)e;
        for (int i = 0; i < n; i++) {
            if (sigmas) {
                float t = (float)d[i];
                sg[i] = ef / (ef + (1.0f / t - 1.0f));
            } else {
                sg[i] = (float)(e / (e + (1.0 / d[i] - 1.0)));
            }
        }
    } else if (sigmas) {
        /* shift * s / (1 + (shift - 1) * s) on the given float32 array: numpy stays in fp32, the
         * Python scalars shift and shift - 1 cast to float32 */
        volatile float sh = (float)c->shift, shm1 = (float)(c->shift - 1.0);
        for (int i = 0; i < n; i++) {
            const float t = (float)d[i];
            volatile float num = sh * t, den = shm1 * t;
            den = 1.0f + den;
            sg[i] = num / den;
        }
    } else {
        /* applied again on the SD3 path, on top of the shifted sigma_min (as diffusers does) */
        for (int i = 0; i < n; i++) sg[i] = (float)(c->shift * d[i] / (1.0 + (c->shift - 1.0) * d[i]));
    }
    float Tf = (float)c->num_train_timesteps;
    for (int i = 0; i < n; i++) ts[i] = sg[i] * Tf;
    sg[n] = 0.0f;
    free(d);
    fm_free(s);
    s->sigmas = sg;
    s->timesteps = ts;
    s->num_steps = n;
    return 0;
}

int fm_step(const fm_sched *s, int i, float *x, const float *v, size_t n) {
    if (i < 0 || i >= s->num_steps)
        return ss_fail(SS_EARG, "flowmatch: step index %d outside 0..%d", i, s->num_steps - 1);
    float dt = s->sigmas[i + 1] - s->sigmas[i];
    for (size_t j = 0; j < n; j++) x[j] = x[j] + dt * v[j];
    return 0;
}

void fm_scale_noise(float sigma, const float *x0, const float *noise, float *out, size_t n) {
    float keep = 1.0f - sigma;
    for (size_t j = 0; j < n; j++) out[j] = sigma * noise[j] + keep * x0[j];
}

void fm_flux_sigmas(int n, double *out) { fm_linspace(1.0, 1.0 / n, n, out); }

double fm_calculate_shift(const fm_config *c, int image_seq_len) {
    double m = (c->max_shift - c->base_shift) / (double)(c->max_image_seq_len - c->base_image_seq_len);
    double b = c->base_shift - m * c->base_image_seq_len;
    return image_seq_len * m + b;
}
