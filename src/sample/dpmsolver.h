/* dpmsolver: diffusers 0.32.1's DPMSolverMultistepScheduler (DPM-Solver++ multistep, the
 * PixArt-alpha default, and what the paper's sampling-sensitivity table E2 swaps into SD3 with
 * DPMSolverMultistepScheduler.from_config), reproduced with diffusers' dtypes: the training
 * table in torch fp32 (see ddpm_table.h), the inference grid in numpy fp64 and int64 timesteps,
 * sigmas stored fp32, and every step in fp32 with diffusers' operation order (the scalar
 * coefficients are 0-d fp32 tensors in diffusers, so they are fp32 here too).
 *
 * Implemented: algorithm_type dpmsolver++ (and "deis", which diffusers maps to it); solver_order
 * 1, 2, 3; solver_type midpoint / heun (logrho, bh1, bh2 map to midpoint as in diffusers);
 * prediction_type epsilon, sample, v_prediction, flow_prediction; beta_schedule linear,
 * scaled_linear, squaredcos_cap_v2 or trained_betas; timestep_spacing linspace, leading,
 * trailing with steps_offset; use_karras_sigmas; use_flow_sigmas with flow_shift;
 * final_sigmas_type zero / sigma_min; lower_order_final; euler_at_final; lambda_min_clipped;
 * rescale_betas_zero_snr.
 * Refused with an error naming the file and field: the SDE and plain dpmsolver algorithms,
 * thresholding, a learned variance_type, exponential / beta / Lu-lambda sigmas.
 */
#ifndef SS_DPMSOLVER_H
#define SS_DPMSOLVER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sample/ddpm_table.h"

enum { DPM_PRED_EPSILON = 0, DPM_PRED_SAMPLE = 1, DPM_PRED_V = 2, DPM_PRED_FLOW = 3 };
enum { DPM_SOLVER_MIDPOINT = 0, DPM_SOLVER_HEUN = 1 };
enum { DPM_FINAL_ZERO = 0, DPM_FINAL_SIGMA_MIN = 1 };

typedef struct {
    ddpm_betas betas;         /* num_train_timesteps 1000, linear 0.0001..0.02 */
    int solver_order;         /* 2 */
    int prediction_type;      /* DPM_PRED_EPSILON */
    int solver_type;          /* DPM_SOLVER_MIDPOINT */
    int lower_order_final;    /* 1 */
    int euler_at_final;       /* 0 */
    int use_karras_sigmas;    /* 0 */
    int use_flow_sigmas;      /* 0 */
    double flow_shift;        /* 1.0 */
    int final_sigmas_type;    /* DPM_FINAL_ZERO */
    double lambda_min_clipped;/* -inf */
    int timestep_spacing;     /* DDPM_SPACING_LINSPACE */
    int steps_offset;         /* 0 */
    float *trained_betas_buf; /* owned copy of trained_betas (dpm_config_free) */
} dpm_config;

typedef struct {
    dpm_config cfg;
    float *alphas_cumprod;    /* T */
    int num_steps;
    int64_t *timesteps;       /* num_steps */
    float *timesteps_f;       /* the same as floats */
    float *sigmas;            /* num_steps + 1 */
    /* multistep state */
    int step_index;           /* -1 until the first step */
    int lower_order_nums;
    size_t n;                 /* element count of the buffers below (0: none yet) */
    float *model_outputs[3];  /* converted outputs, [order-1] is the newest */
} dpm_sched;

void dpm_config_default(dpm_config *c);
/* Reads the fields DPMSolverMultistepScheduler's constructor takes; other fields are ignored as
 * diffusers' from_config ignores them. check_class: require _class_name (when present) to be
 * DPMSolverMultistepScheduler (0 to build it from another scheduler's config, as E2 does). */
int dpm_config_load(dpm_config *c, const char *path, int check_class);
int dpm_config_from_json(dpm_config *c, json_t *root, const char *path, int check_class);
void dpm_config_free(dpm_config *c);

/* Takes a copy of c (including trained betas). */
int dpm_init(dpm_sched *s, const dpm_config *c);
/* Replaces the schedule and resets the multistep state. num_steps may differ from n for
 * trailing spacing, as in diffusers. */
int dpm_set_timesteps(dpm_sched *s, int n);
/* One scheduler.step(model_output, t, sample): sample (n values) becomes prev_sample. The step
 * index is found from t on the first call (diffusers' index_for_timestep), then counts up; n
 * must stay the same within one schedule (the multistep history has n values per order).
 *
 * Precision: timesteps and sigmas are diffusers' values exactly. The step matches diffusers'
 * operation for operation in fp32, but torch evaluates exp (and log) of the 0-d coefficients with
 * SLEEF's vector code even for one element, which differs from libm's expf by an ulp at some
 * steps; trajectories then agree to ~2e-7 relative L2 rather than bit for bit. */
int dpm_step(dpm_sched *s, double t, const float *model_output, float *sample, size_t n);
void dpm_free(dpm_sched *s);

#endif
