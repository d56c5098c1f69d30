/* dnnl_conv: fp32 2-D convolution through oneDNN's direct convolution primitive (the VAE's convs).
 *
 * ss_dnnl_conv2d computes what nn/conv.h's op_conv2d_tiled computes (same arguments: CHW
 * input, the input zero-padded by c->pad on every side and pad_end more on the bottom and right)
 * with oneDNN's f32 direct convolution (dnnl_convolution_direct; src, weights and dst in the
 * layouts oneDNN chooses).
 *
 * Bands. The output is cut into fixed bands of output rows (ss_dnnl_conv_band_rows: a function
 * of the shape only, about 4 MiB of output and of input per band); each band is one oneDNN
 * convolution created for one thread on its slice of input rows (with the rows above and below
 * it; zero padding only where the image ends), its input reordered into a per-thread buffer in
 * oneDNN's layout and its output reordered back into y. OpenMP threads share out the bands
 * (dynamic schedule). So memory stays bounded at 1024^2 (per thread: one band in, one band out,
 * the scratchpad), and since every output is computed by a primitive of the same shape whatever
 * the thread count, results do not depend on it (oneDNN sizes its blocking by the thread count it
 * is created and run under; each runs under one).
 *
 * Caches. Primitives are created once per band shape and kept in a process-wide cache (mutex
 * protected, never freed). Weights are reordered once per layer: the copy in oneDNN's layout is
 * cached under the weight pointer and its layout; ss_dnnl_conv_forget(w) drops it (call it before
 * freeing or reusing weights: vae_free does). Bias is read as given.
 *
 * Fallback. ss_dnnl_conv2d returns 1, having written nothing, when oneDNN has no direct
 * convolution for the shape (or only its reference one), when it fails, or when disabled
 * (ss_dnnl_conv_enable(0)): the caller then runs op_conv2d_tiled. ss_dnnl_conv_impl names what
 * oneDNN runs for a shape (its impl_info_str, or why it is not used).
 */
#ifndef SS_DNNL_CONV_H
#define SS_DNNL_CONV_H

#include <stddef.h>

#include "nn/conv.h"

/* Output floats (and input floats) per band that the band height aims at. */
#define SS_DNNL_CONV_BAND_FLOATS (1 << 20)

/* Tests: the band target in floats (0: SS_DNNL_CONV_BAND_FLOATS), to get many bands on small images. */
void ss_dnnl_conv_set_band_floats(long n);
/* 0: y written; 1: not available for this shape (nothing written; fall back); never < 0. */
int ss_dnnl_conv2d(float *y, const float *x, const ss_conv2d *c, int H, int W, int pad_end);
/* Output rows per band for this shape (the last band may be shorter). */
int ss_dnnl_conv_band_rows(const ss_conv2d *c, int H, int W, int pad_end);
/* oneDNN's implementation name for the first band of this shape, or a reason it is not used. */
const char *ss_dnnl_conv_impl(const ss_conv2d *c, int H, int W, int pad_end);
/* Drops the cached reordered copies of weights w. */
void ss_dnnl_conv_forget(const float *w);
/* on = 0 makes ss_dnnl_conv2d return 1 (the old path; tests and benchmarks); default on. */
void ss_dnnl_conv_enable(int on);
/* Bytes held by the reordered weight copies now. */
size_t ss_dnnl_conv_weight_bytes(void);
/* oneDNN's own rate on a conv: one primitive for the whole cin x H x W -> cout image (k x k,
 * stride 1, pad k/2, bias), created for every thread, in its own layouts (reorders untimed),
 * best of reps runs, in GFLOP/s (2 x multiply-adds); impl receives its name. < 0 on failure. */
double ss_dnnl_conv_peak_gflops(int cin, int cout, int k, int H, int W, int reps, char *impl, size_t impl_n);

#endif
