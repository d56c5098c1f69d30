/* inception: pytorch-fid's FID Inception network (`InceptionV3([3], resize_input=True,
 * normalize_input=True, use_fid_inception=True)`), the 2048-d pool3 features, fp32.
 *
 *   input x[3, h, w] in [0, 1] (torchvision's ToTensor of an 8-bit image: u8 / 255 in float32)
 *   bilinear resize to 299 x 299 as F.interpolate(align_corners=False) on the CPU computes it:
 *     scale = (float)in / (float)out, source position (double)scale * (dst + 0.5) - 0.5 in double,
 *     clamped at 0, truncated; lambda1 = (float)(src - i0), lambda0 = 1 - lambda1 (float);
 *     out = l0h (l0w x00 + l1w x01) + l1h (l0w x10 + l1w x11)
 *   x = 2 x - 1
 *   Conv2d_1a_3x3 (s2), Conv2d_2a_3x3, Conv2d_2b_3x3 (p1), max-pool 3/2, Conv2d_3b_1x1,
 *   Conv2d_4a_3x3, max-pool 3/2, Mixed_5b/5c/5d (FIDInceptionA), Mixed_6a (InceptionB),
 *   Mixed_6b..6e (FIDInceptionC), Mixed_7a (InceptionD), Mixed_7b (FIDInceptionE_1),
 *   Mixed_7c (FIDInceptionE_2), adaptive average pool to 1 x 1.
 *   Every BasicConv2d is conv (no bias) + BatchNorm2d(eps=1e-3, running statistics) + ReLU.
 *   FIDInceptionA/C/E_1's pool branch: avg_pool2d(3, 1, 1, count_include_pad=False);
 *   FIDInceptionE_2's: max_pool2d(3, 1, 1); InceptionB/D's: max_pool2d(3, 2).
 *
 * Weights: the state dict of pt_inception-2015-12-05-6726825d.pth (torchvision's Inception3 names:
 * Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_var, ...); fc.* and
 * num_batches_tracked are not used. Convolutions go through nn/conv (fixed sgemm blocks), so
 * the features do not depend on the thread count.
 */
#ifndef SS_INCEPTION_H
#define SS_INCEPTION_H

#include <stdint.h>

#define INCEPTION_DIM 2048
#define INCEPTION_SIDE 299
#define INCEPTION_MIN_SIDE 75 /* smallest input side the network (without its resize) accepts */

typedef struct inception_net inception_net;

/* A source of weights: fill *out with a malloc'ed fp32 copy of tensor `name`, which must have
 * the given shape; negative SS_E* code (with the error set) otherwise. */
typedef int (*inception_getter)(void *ctx, const char *name, int ndim, const int64_t *shape, float **out);

int inception_load(inception_net **out, const char *pth);
int inception_load_with(inception_net **out, inception_getter get, void *ctx);
void inception_free(inception_net *n);

/* feat[2048] from x[3, h, w] (CHW, values in [0, 1]); h, w >= 1. */
int inception_features(const inception_net *n, const float *x, int w, int h, float *feat);
/* The network alone (no resize, no scaling) on an already prepared x[3, h, w] (e.g. clean-fid's
 * (x - 128) / 128 of a 299 x 299 resize); sides >= INCEPTION_MIN_SIDE. */
int inception_features_raw(const inception_net *n, const float *x, int w, int h, float *feat);
/* The same from an 8-bit RGB image (HWC), mapped u8 / 255 as ToTensor does. */
int inception_features_rgb(const inception_net *n, const uint8_t *rgb, int w, int h, float *feat);
/* The in-network resize on its own: y[3, oh, ow] from x[3, h, w] (torch's bilinear, above). */
int inception_resize_bilinear(float *y, int ow, int oh, const float *x, int w, int h);

#endif
