/* euler_discrete: diffusers 0.32.1's EulerDiscreteScheduler (deterministic: s_churn 0), the
 * "Euler" that the paper's sampling-sensitivity table E2 swaps into SD3 with
 * EulerDiscreteScheduler.from_config. dtypes as diffusers: the training table in torch fp32
 * (ddpm_table.h), timesteps numpy fp32, sigmas interpolated in fp64 and stored fp32, the step
 * in fp32 with 0-d fp32 coefficients.
 *
 * Implemented: prediction_type epsilon, v_prediction, sample (and original_sample);
 * interpolation_type linear; use_karras_sigmas with sigma_min / sigma_max; timestep_spacing
 * linspace, leading, trailing with steps_offset; final_sigmas_type zero / sigma_min;
 * timestep_type discrete; rescale_betas_zero_snr. Refused: exponential and beta sigmas,
 * log_linear interpolation, continuous timesteps.
 */
#ifndef SS_EULER_DISCRETE_H
#define SS_EULER_DISCRETE_H

#include <jansson.h>
#include <stddef.h>

#include "sample/ddpm_table.h"

enum { EULER_PRED_EPSILON = 0, EULER_PRED_V = 1, EULER_PRED_SAMPLE = 2 };

typedef struct {
    ddpm_betas betas;
    int prediction_type;      /* EULER_PRED_EPSILON */
    int use_karras_sigmas;    /* 0 */
    double sigma_min, sigma_max; /* NAN: not set (None) */
    int timestep_spacing;     /* DDPM_SPACING_LINSPACE */
    int steps_offset;         /* 0 */
    int final_sigma_min;      /* final_sigmas_type: 0 "zero", 1 "sigma_min" */
    float *trained_betas_buf;
} euler_config;

typedef struct {
    euler_config cfg;
    float *alphas_cumprod;    /* T */
    int num_steps;
    float *timesteps;         /* num_steps */
    float *sigmas;            /* num_steps + 1 */
    float init_noise_sigma;   /* after euler_set_timesteps */
    int step_index;           /* -1 until scale_model_input or step */
} euler_sched;

void euler_config_default(euler_config *c);
int euler_config_load(euler_config *c, const char *path, int check_class);
int euler_config_from_json(euler_config *c, json_t *root, const char *path, int check_class);
void euler_config_free(euler_config *c);

int euler_init(euler_sched *s, const euler_config *c);
int euler_set_timesteps(euler_sched *s, int n);
/* scale_model_input: x /= sqrt(sigma^2 + 1) (in place). */
int euler_scale_model_input(euler_sched *s, double t, float *x, size_t n);
int euler_step(euler_sched *s, double t, const float *model_output, float *sample, size_t n);
void euler_free(euler_sched *s);

#endif
