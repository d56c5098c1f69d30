/* ddpm_table: the discrete noise schedule that diffusers' DDPM-family schedulers
 * (DPMSolverMultistepScheduler, EulerDiscreteScheduler) build in their constructors and in
 * set_timesteps, reproduced with diffusers' dtypes: betas, alphas and alphas_cumprod are torch
 * fp32 (cumprod accumulates in fp64 as torch's CPU kernel does), the sigma table
 * sqrt((1 - a) / a) is fp32, the inference timestep grids are numpy fp64/int64.
 *
 * torch.linspace in fp32 depends on the CPU kernel torch picked (its vector width and whether
 * the build fused a multiply-add), so betas can differ by an ulp between machines;
 * ss_torch_linspace_f32 reproduces each of torch's three CPU kernels. SS_TORCH_CPU_AVX2 is what
 * torch uses on x86-64 unless told otherwise (ATEN_CPU_CAPABILITY), and is the default.
 */
#ifndef SS_DDPM_TABLE_H
#define SS_DDPM_TABLE_H

#include <stdint.h>

typedef enum { SS_TORCH_CPU_DEFAULT = 0, SS_TORCH_CPU_AVX2 = 1, SS_TORCH_CPU_AVX512 = 2 } ss_torch_cpu;

enum { DDPM_BETA_LINEAR = 0, DDPM_BETA_SCALED_LINEAR = 1, DDPM_BETA_SQUAREDCOS = 2 };
enum { DDPM_SPACING_LINSPACE = 0, DDPM_SPACING_LEADING = 1, DDPM_SPACING_TRAILING = 2 };

typedef struct {
    int num_train_timesteps; /* 1000 */
    double beta_start, beta_end;
    int beta_schedule;       /* DDPM_BETA_* */
    float *trained_betas;    /* NULL, or num_train_timesteps values (owned by the caller) */
    int rescale_zero_snr;    /* rescale_betas_zero_snr (then alphas_cumprod[-1] = 2^-24) */
    ss_torch_cpu torch_cpu;
} ddpm_betas;

void ss_torch_linspace_f32(float start, float end, int64_t n, ss_torch_cpu cpu, float *out);

/* alphas_cumprod[T] as the constructor computes it. */
void ddpm_alphas_cumprod(const ddpm_betas *b, float *ac);
/* sigma[t] = ((1 - ac) / ac) ** 0.5 in fp32, t = 0..T-1. */
void ddpm_sigma_table(const float *ac, int T, float *sigma);

/* numpy: np.arange(start, stop, step) in fp64 (first value start, then start + i*delta with
 * delta = (start + step) - start). Returns the length (out may be NULL to ask). */
int64_t np_arange_f64(double start, double stop, double step, double *out);
/* Round half to even (numpy .round()). */
double np_round(double x);

/* EulerDiscreteScheduler._sigma_to_t: log_sigmas[T] fp32 (np.log of the fp32 table). */
double ddpm_sigma_to_t(double sigma, const float *log_sigmas, int T);
/* _convert_to_karras: n sigmas from sigma_max down to sigma_min (fp64, rho 7). */
void ddpm_karras(double sigma_min, double sigma_max, int n, double *out);

#endif
