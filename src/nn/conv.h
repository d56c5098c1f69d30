/* conv: the convolution layers of image networks (LPIPS' AlexNet; VAE encoders and decoders),
 * fp32, one image at a time in CHW layout, output first and dimensions last (like nn/ops.h).
 *
 * conv2d is im2col followed by BLAS sgemm (W[Cout, Cin*kh*kw] . col[Cin*kh*kw, Ho*Wo]), one
 * single-threaded sgemm per fixed block of 256 output columns, the blocks spread over the
 * OpenMP threads (a multithreaded sgemm partitions by the thread count, and its edge tiles round
 * differently); the other loops write each output once. Results do not depend on the thread
 * count.
 */
#ifndef SS_CONV_H
#define SS_CONV_H

#include <stddef.h>

/* A Conv2d(cin, cout, (kh, kw), stride, padding, groups=1) as torch stores it:
 * w [cout, cin, kh, kw] row-major, b [cout] or NULL. */
typedef struct {
    const float *w, *b;
    int cin, cout, kh, kw;
    int stride, pad; /* the same along both axes */
} ss_conv2d;

/* Output size along one axis (torch's floor rule); <= 0 when the input is too small. */
static inline int conv_out_size(int in, int k, int stride, int pad) {
    return in + 2 * pad < k ? 0 : (in + 2 * pad - k) / stride + 1;
}
/* Floats of workspace op_conv2d needs for an H x W input (0 for 1x1, stride-1, unpadded
 * convolutions, which need none). */
size_t op_conv2d_work(const ss_conv2d *c, int H, int W);
/* y[cout, Ho, Wo] = conv(x[cin, H, W]); work holds op_conv2d_work(c, H, W) floats. */
void op_conv2d(float *y, const float *x, const ss_conv2d *c, int H, int W, float *work);
/* In place, y = max(y, 0) (NaN stays NaN, as torch.relu). */
void op_relu(float *x, size_t n);
/* y[C, Ho, Wo] = max over k x k windows of x[C, H, W] (stride, zero-size padding of -inf,
 * floor mode: torch.nn.MaxPool2d(k, stride, pad)). Ho = conv_out_size(H, k, stride, pad). */
void op_maxpool2d(float *y, const float *x, int C, int H, int W, int k, int stride, int pad);


/* The VAE's layers (vae/vae.c), for large images: ----------------------------------------
 * y[cout, Ho, Wo] = conv(x[cin, H, W]) with the input first zero-padded by c->pad on every side
 * and by pad_end more on the bottom and the right (diffusers' Downsample2D: F.pad(x, (0, 1, 0, 1))
 * then a stride-2 unpadded conv, pad_end = 1); Ho = conv_out_size(H + pad_end, kh, stride, pad).
 * The im2col matrix is never built whole: each fixed block of CONV_TILE_NB output columns gathers
 * its own columns into a per-thread buffer (cin*kh*kw x CONV_TILE_NB floats) and runs one
 * single-threaded sgemm, so memory stays small at 1024^2 and results do not depend on the thread
 * count. 0, or SS_ENOMEM. */
#define CONV_TILE_NB 256
int op_conv2d_tiled(float *y, const float *x, const ss_conv2d *c, int H, int W, int pad_end);
/* torch.nn.GroupNorm(G, C, eps) on x[C, HW] in place (mean and biased variance of each group in
 * double, two passes), then y * w[c] + b[c]; silu: then x * sigmoid(x) (= x / (1 + exp(-x))). */
void op_group_norm(float *x, int C, size_t HW, int G, const float *w, const float *b, float eps, int silu);
/* y[C, 2H, 2W] = nearest 2x upsampling of x[C, H, W] (F.interpolate(scale_factor=2, mode="nearest")). */
void op_upsample_nearest2x(float *y, const float *x, int C, int H, int W);

#endif
