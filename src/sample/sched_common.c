#include "sample/sched_common.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "sample/schedcfg.h"

void ddpm_betas_default(ddpm_betas *b) {
    memset(b, 0, sizeof *b);
    b->num_train_timesteps = 1000;
    b->beta_start = 0.0001;
    b->beta_end = 0.02;
    b->beta_schedule = DDPM_BETA_LINEAR;
    b->torch_cpu = SS_TORCH_CPU_AVX2;
}

int sched_refuse_true(json_t *root, const char *path, const char *key) {
    int on = 0;
    if (ss_schedcfg_bool(root, path, key, &on) < 0) return SS_EFORMAT;
    if (on) return ss_fail(SS_EARG, "%s: field '%s' = true is not supported", path, key);
    return 0;
}

int ddpm_betas_from_json(ddpm_betas *b, float **buf, json_t *root, const char *path) {
    static const char *const sched[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};
    *buf = NULL;
    if (ss_schedcfg_int(root, path, "num_train_timesteps", 2, 1000000, &b->num_train_timesteps) < 0 ||
        ss_schedcfg_number(root, path, "beta_start", &b->beta_start) < 0 ||
        ss_schedcfg_number(root, path, "beta_end", &b->beta_end) < 0 ||
        ss_schedcfg_enum(root, path, "beta_schedule", sched, 3, 0, &b->beta_schedule) < 0)
        return SS_EFORMAT;
    if (ss_schedcfg_bool(root, path, "rescale_betas_zero_snr", &b->rescale_zero_snr) < 0) return SS_EFORMAT;
    json_t *tb = json_object_get(root, "trained_betas");
    if (tb && !json_is_null(tb)) {
        if (!json_is_array(tb) || json_array_size(tb) != (size_t)b->num_train_timesteps)
            return ss_fail(SS_EFORMAT, "%s: field 'trained_betas' must be null or %d numbers", path,
                           b->num_train_timesteps);
        float *v = ss_malloc(json_array_size(tb) * sizeof *v);
        if (!v) return SS_ENOMEM;
        for (size_t i = 0; i < json_array_size(tb); i++) {
            json_t *e = json_array_get(tb, i);
            double bv = json_is_number(e) ? json_number_value(e) : -1;
            if (!(bv >= 0 && bv < 1)) {
                free(v);
                return ss_fail(SS_EFORMAT, "%s: field 'trained_betas' must be null or %d numbers in [0, 1)",
                               path, b->num_train_timesteps);
            }
            v[i] = (float)bv;
        }
        *buf = v;
        b->trained_betas = v;
    }
    return 0;
}
