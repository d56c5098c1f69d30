/* flowmatch: diffusers' FlowMatchEulerDiscreteScheduler (deterministic Euler), reproduced
 * operation by operation so the sigmas match diffusers bit for bit (see dit-spec.md §6).
 *
 *   fm_config c; fm_config_default(&c); c.shift = 3.0;        // or fm_config_load(&c, path)
 *   fm_sched s; fm_init(&s, &c);
 *   fm_set_timesteps(&s, 28, NULL, NULL);                      // SD3 path
 *   for (int i = 0; i < s.num_steps; i++) { v = model(x, s.timesteps[i]); fm_step(&s, i, x, v, n); }
 *   fm_free(&s);
 *
 * Precision follows diffusers: the init-time table is fp32 (torch), the SD3 linspace and shift are
 * fp64 (numpy), the shift of given sigmas (dynamic or not) is fp32 (numpy on a float32 array);
 * sigmas and timesteps are stored as fp32.
 */
#ifndef SS_FLOWMATCH_H
#define SS_FLOWMATCH_H

#include <stddef.h>

typedef struct {
    int num_train_timesteps;  /* 1000 */
    double shift;             /* 1.0 by default; SD3 uses 3.0 */
    int use_dynamic_shifting; /* FLUX-dev: 1, and set_timesteps then needs mu */
    double base_shift, max_shift;
    int base_image_seq_len, max_image_seq_len;
} fm_config;

typedef struct {
    fm_config cfg;
    double sigma_min, sigma_max; /* fp32 values from the init table (as .item() gives them) */
    int num_steps;               /* after fm_set_timesteps */
    float *sigmas;               /* num_steps + 1 entries, the last is 0 */
    float *timesteps;            /* num_steps entries: sigmas * num_train_timesteps in fp32 */
} fm_sched;

/* diffusers' constructor defaults. */
void fm_config_default(fm_config *c);
/* Reads a diffusers scheduler_config.json. Missing fields keep the defaults; options this port
 * does not implement (karras/exponential/beta sigmas, shift_terminal, invert_sigmas,
 * stochastic_sampling, a non-exponential time_shift_type) are rejected when set. */
int fm_config_load(fm_config *c, const char *path);
/* The same from a parsed object; check_class 0 accepts any _class_name (from_config). */
struct json_t;
int fm_config_from_json(fm_config *c, struct json_t *root, const char *path, int check_class);

/* Starts an empty schedule (does not free a previous one: call fm_free first). */
int fm_init(fm_sched *s, const fm_config *c);
/* sigmas: NULL (SD3 path: linspace between sigma_max and sigma_min) or n explicit sigmas
 * (FLUX path). mu: required iff use_dynamic_shifting. Replaces any previous schedule. */
int fm_set_timesteps(fm_sched *s, int n, const double *sigmas, const double *mu);
void fm_free(fm_sched *s);

/* Euler step i (0-based) in place: x += (sigma[i+1] - sigma[i]) * v, in fp32. */
int fm_step(const fm_sched *s, int i, float *x, const float *v, size_t n);
/* Forward process: out = sigma * noise + (1 - sigma) * x0 (out may alias x0 or noise). */
void fm_scale_noise(float sigma, const float *x0, const float *noise, float *out, size_t n);

/* The FLUX pipeline's inputs: sigmas = linspace(1, 1/n, n) in fp64 (out: n entries), and
 * mu = calculate_shift(image_seq_len) from the config's base/max fields, in fp64. */
void fm_flux_sigmas(int n, double *out);
double fm_calculate_shift(const fm_config *c, int image_seq_len);

/* numpy.linspace(start, stop, n) in fp64, same arithmetic (i*step + start, last = stop). */
void fm_linspace(double start, double stop, int n, double *out);

#endif
