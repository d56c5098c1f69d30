/* sched: one interface over the diffusers schedulers sinkscope reproduces, chosen by a
 * scheduler_config.json's _class_name:
 *   FlowMatchEulerDiscreteScheduler -> flowmatch.h (SD3, FLUX)
 *   DPMSolverMultistepScheduler     -> dpmsolver.h (PixArt-alpha's default, DPM-Solver++ 2M)
 *   EulerDiscreteScheduler          -> euler_discrete.h
 *
 *   ss_sched s;
 *   ss_sched_load_dir(&s, "pipe");                    // pipe/scheduler/scheduler_config.json
 *   ss_sched_set_timesteps(&s, 20, NULL, NULL);       // FLUX: sigmas and mu, see flowmatch.h
 *   x *= s.init_noise_sigma;
 *   for (int i = 0; i < s.num_steps; i++) {
 *       double t = s.timesteps[i];
 *       ss_sched_scale_model_input(&s, t, x_in, n);   // a copy of x, as diffusers' pipelines
 *       out = model(x_in, t);
 *       ss_sched_step(&s, t, out, x, n);              // x becomes prev_sample
 *   }
 *   ss_sched_free(&s);
 *
 * Which pipelines use what (diffusers 0.32.1): PixArtAlphaPipeline multiplies the starting noise by
 * init_noise_sigma and calls scale_model_input each step (and with 1 step takes the step's
 * pred_original_sample, which DPMSolverMultistepScheduler does not return: diffusers fails there);
 * StableDiffusion3Pipeline and FluxPipeline use neither, whatever the scheduler, so the E2 swaps
 * below run Euler on unscaled N(0, 1) latents and unscaled model inputs.
 *
 * The paper's sampling-sensitivity table (E2) swaps SD3's scheduler with
 * EulerDiscreteScheduler.from_config(pipe.scheduler.config) and
 * DPMSolverMultistepScheduler.from_config(...): ss_sched_load_as does the same (fields the
 * target class does not take are ignored; so SD3's shift is dropped).
 */
#ifndef SS_SCHED_H
#define SS_SCHED_H

#include <stddef.h>

#include "sample/dpmsolver.h"
#include "sample/euler_discrete.h"
#include "sample/flowmatch.h"

typedef enum { SS_SCHED_FLOWMATCH = 0, SS_SCHED_DPMSOLVER = 1, SS_SCHED_EULER = 2 } ss_sched_kind;

typedef struct {
    ss_sched_kind kind;
    int num_steps;            /* after set_timesteps */
    const float *timesteps;   /* num_steps: what the pipeline passes to the model */
    const float *sigmas;      /* num_steps + 1 */
    float init_noise_sigma;   /* the pipeline scales the starting noise by it (1 but for Euler) */
    int step_index;           /* FlowMatch only: -1 until the first step */
    fm_sched fm;
    dpm_sched dpm;
    euler_sched eu;
} ss_sched;

/* diffusers' class name of a kind, and the kind of a class name (-1 when unsupported). */
const char *ss_sched_class_name(ss_sched_kind k);
int ss_sched_kind_of(const char *class_name);

/* By _class_name ("PATH: field '_class_name' = ... is not supported" otherwise). */
int ss_sched_load(ss_sched *s, const char *config_path);
/* DIR/scheduler/scheduler_config.json */
int ss_sched_load_dir(ss_sched *s, const char *pipeline_dir);
/* as KIND's from_config(config of any class) */
int ss_sched_load_as(ss_sched *s, const char *config_path, ss_sched_kind kind);

/* The E2 table's scheduler names on a pipeline folder: "default" (ss_sched_load_dir), "euler" and
 * "dpm++" (EulerDiscreteScheduler / DPMSolverMultistepScheduler .from_config of the folder's
 * config, as experiments/e2_paper_impl_multi_gpu.py does); an unknown name is an error. */
int ss_sched_load_named(ss_sched *s, const char *pipeline_dir, const char *name);

/* The same with a choice of torch CPU kernel for the DDPM betas (ddpm_table.h): kind -1 picks by
 * _class_name. torch's AVX2 and AVX-512 fp32 linspace differ in the last bit for most betas, and
 * so do the sigma tables built from them (675 of 1000 entries for the linear 0.0001..0.02 betas):
 * match the machine the comparison run used. ss_sched_load and _as use SS_TORCH_CPU_AVX2. */
int ss_sched_load_opts(ss_sched *s, const char *config_path, int kind, ss_torch_cpu cpu);
/* "default", "avx2", "avx512" (the values of torch's ATEN_CPU_CAPABILITY); -1 otherwise. */
int ss_torch_cpu_parse(const char *name);

/* sigmas / mu: FlowMatch only (flowmatch.h); must be NULL for the others. */
int ss_sched_set_timesteps(ss_sched *s, int n, const double *sigmas, const double *mu);
/* In place; the identity for FlowMatch and DPM-Solver. */
int ss_sched_scale_model_input(ss_sched *s, double t, float *x, size_t n);
int ss_sched_step(ss_sched *s, double t, const float *model_output, float *sample, size_t n);
void ss_sched_free(ss_sched *s);

#endif
