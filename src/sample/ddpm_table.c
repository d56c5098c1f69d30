#include "sample/ddpm_table.h"

#include <math.h>
#include <stdlib.h>

#include "sample/flowmatch.h"

/* torch's linspace_kernel: step = (end - start) / (n - 1); elements before n/2 are
 * start + step*i, the others end - step*(n - 1 - i). The vectorised loop fills blocks of two
 * vectors of W lanes: each vector starts from that formula at its first index and adds k*step
 * per lane (Vectorized::arange); the tail after the last full block is scalar. The AVX2 and
 * AVX-512 kernels were compiled with fused multiply-add (start + step*i is one fma), the
 * default kernel was not. */
void ss_torch_linspace_f32(float start, float end, int64_t n, ss_torch_cpu cpu, float *out) {
    if (n <= 0) return;
    if (n == 1) {
        out[0] = start;
        return;
    }
    int W = cpu == SS_TORCH_CPU_AVX512 ? 16 : 8, fused = cpu != SS_TORCH_CPU_DEFAULT;
    float step = (end - start) / (float)(n - 1);
    int64_t half = n / 2, nvec = n / (2 * W) * (2 * W);
    for (int64_t p = 0; p < n; p++) {
        int64_t b = p < nvec ? p / W * W : p;
        float base;
        if (b < half)
            base = fused ? fmaf(step, (float)b, start) : start + step * (float)b;
        else
            base = fused ? fmaf(-step, (float)(n - b - 1), end) : end - step * (float)(n - b - 1);
        int k = (int)(p - b);
        out[p] = k ? base + (float)k * step : base;
    }
}

static double alpha_bar_cos(double t) {
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

void ddpm_alphas_cumprod(const ddpm_betas *b, float *ac) {
    int T = b->num_train_timesteps;
    float *beta = ac; /* computed in place */
    if (b->trained_betas) {
        for (int i = 0; i < T; i++) beta[i] = b->trained_betas[i];
    } else if (b->beta_schedule == DDPM_BETA_LINEAR) {
        ss_torch_linspace_f32((float)b->beta_start, (float)b->beta_end, T, b->torch_cpu, beta);
    } else if (b->beta_schedule == DDPM_BETA_SCALED_LINEAR) {
        ss_torch_linspace_f32((float)sqrt(b->beta_start), (float)sqrt(b->beta_end), T, b->torch_cpu, beta);
        for (int i = 0; i < T; i++) beta[i] = beta[i] * beta[i]; /* ** 2 */
    } else {
        /* betas_for_alpha_bar (Python floats), then torch.tensor(float32) */
        for (int i = 0; i < T; i++) {
            double t1 = (double)i / T, t2 = (double)(i + 1) / T;
            double v = 1 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
            beta[i] = (float)(v < 0.999 ? v : 0.999);
        }
    }
    if (b->rescale_zero_snr) {
        /* rescale_zero_terminal_snr, in torch fp32: sqrt of the cumprod, shifted so the last is
         * 0 and scaled so the first is kept, squared, back to betas */
        double acc = 1.0;
        for (int i = 0; i < T; i++) {
            acc *= (double)(1.0f - beta[i]);
            ac[i] = sqrtf((float)acc); /* alphas_bar_sqrt, in place of the betas */
        }
        float a0 = ac[0], aT = ac[T - 1];
        float scale = a0 / (a0 - aT);
        for (int i = 0; i < T; i++) {
            float v = (ac[i] - aT) * scale;
            ac[i] = v * v; /* alphas_bar */
        }
        float prev = ac[0];
        for (int i = 1; i < T; i++) {
            float cur = ac[i];
            ac[i] = 1.0f - cur / prev; /* betas = 1 - alphas_bar[i] / alphas_bar[i-1] */
            prev = cur;
        }
        ac[0] = 1.0f - ac[0]; /* alphas[0] = alphas_bar[0] */
    }
    double acc = 1.0; /* torch's CPU cumprod accumulates in double */
    for (int i = 0; i < T; i++) {
        float alpha = 1.0f - beta[i];
        acc *= (double)alpha;
        ac[i] = (float)acc;
    }
    if (b->rescale_zero_snr) ac[T - 1] = 0x1p-24f; /* "close to 0 without being 0" */
}

void ddpm_sigma_table(const float *ac, int T, float *sigma) {
    for (int i = 0; i < T; i++) sigma[i] = sqrtf((1.0f - ac[i]) / ac[i]);
}

int64_t np_arange_f64(double start, double stop, double step, double *out) {
    double len = ceil((stop - start) / step);
    if (!(len > 0)) return 0;
    int64_t n = (int64_t)len;
    if (out) {
        double delta = (start + step) - start;
        out[0] = start;
        if (n > 1) out[1] = start + step;
        for (int64_t i = 2; i < n; i++) out[i] = start + (double)i * delta;
    }
    return n;
}

double np_round(double x) { return nearbyint(x); }

double ddpm_sigma_to_t(double sigma, const float *log_sigmas, int T) {
    double log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    /* numpy 1.x value-based casting: a float64 scalar minus a float32 array is float32 */
    float ls = (float)log_sigma;
    int low = 0, count = 0, best = 0;
    for (int i = 0; i < T; i++) {
        if (ls - log_sigmas[i] >= 0.0f) count++;
        if (count > best) best = count, low = i; /* argmax of the cumsum: first maximum */
    }
    if (low > T - 2) low = T - 2;
    /* low_idx is a 1-element array, so low/high are float32 arrays and w is float32 too; the
     * int64 indices promote the final sum to float64 */
    float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    float w = (lo - ls) / (lo - hi);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (double)(1.0f - w) * low + (double)w * (low + 1);
}

void ddpm_karras(double sigma_min, double sigma_max, int n, double *out) {
    double rho = 7.0;
    double min_inv = pow(sigma_min, 1 / rho), max_inv = pow(sigma_max, 1 / rho);
    fm_linspace(0.0, 1.0, n, out);
    for (int i = 0; i < n; i++) out[i] = pow(max_inv + out[i] * (min_inv - max_inv), rho);
}
