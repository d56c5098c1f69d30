/* lpips: the LPIPS perceptual distance of Zhang et al., exactly as the `lpips` package computes
 * `lpips.LPIPS(net="alex", version="0.1")(in0, in1)` with normalize=False:
 *
 *   ScalingLayer  x' = (x - shift) / scale, shift (-.030, -.088, -.188), scale (.458, .448, .450)
 *   AlexNet features (torchvision): conv11/4 p2 -> relu1 | pool3/2, conv5 p2 -> relu2 |
 *     pool3/2, conv3 p1 -> relu3 | conv3 p1 -> relu4 | conv3 p1 -> relu5
 *   per tap: unit-normalise over channels f = x / (||x|| + 1e-10), d = (f0 - f1)^2,
 *     the 1x1 linear head (lin{k}.model.1.weight [1, C, 1, 1], no bias), spatial mean
 *   distance = sum over the five taps.
 *
 * Inputs are 8-bit RGB images at full resolution mapped as lpips' im2tensor does: x/127.5 - 1
 * computed in double, then rounded to float32. The networks run in fp32 (nn/conv); the
 * normalisation, heads and means in double.
 *
 * Weights as users have them: torchvision's AlexNet state dict (features.{0,3,6,8,10}.weight/
 * .bias; the classifier, if present, is ignored) and lpips' weights/v0.1/alex.pth
 * (lin0..lin4.model.1.weight), either .pth serialization (io/pth).
 */
#ifndef SS_LPIPS_H
#define SS_LPIPS_H

#include <stdint.h>

#define LPIPS_LAYERS 5
#define LPIPS_MIN_SIDE 31 /* smallest side for which relu5 is not empty */

typedef struct lpips_net lpips_net;

int lpips_load(lpips_net **out, const char *alexnet_pth, const char *lin_pth);
void lpips_free(lpips_net *n);

/* x[3, h, w] (CHW) from rgb[h, w, 3] the way lpips.im2tensor maps it. */
void lpips_im2tensor(float *x, const uint8_t *rgb, int w, int h);
/* Distance between two CHW images of h x w (both sides >= LPIPS_MIN_SIDE). per_layer (optional)
 * receives the five terms. SS_OK or a negative SS_E* code. */
int lpips_distance(const lpips_net *n, const float *x0, const float *x1, int w, int h,
                   double *out, double per_layer[LPIPS_LAYERS]);
/* The same from two 8-bit RGB images. */
int lpips_distance_rgb(const lpips_net *n, const uint8_t *a, const uint8_t *b, int w, int h,
                       double *out, double per_layer[LPIPS_LAYERS]);

#endif
