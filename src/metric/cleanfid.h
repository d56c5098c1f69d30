/* cleanfid: clean-fid's preprocessing (GaParmar/clean-fid, mode="clean"), the paper's FID_shift:
 *
 *   each channel of the 8-bit RGB image as a float32 PIL image (mode "F"), resized to 299 x 299
 *   with Image.BICUBIC (Pillow's Resample.c float path: the bicubic kernel a = -0.5, support 2
 *   widened by the scale when shrinking, truncated at the borders and renormalised, weights in
 *   double; horizontal pass first, then vertical, each summed in double and stored as float32;
 *   a pass is skipped when its side is unchanged), clipped to [0, 255] (no 8-bit quantisation),
 *   then (x - 128) / 128 in float32 as clean-fid's InceptionV3W does before its network.
 *
 * The network is then the FID Inception without its own resize and scaling
 * (inception_features_raw); clean-fid's TF-ported torchscript (inception-2015-12-05.pt) and
 * pytorch-fid's pt_inception-2015-12-05 are ports of the same TensorFlow graph.
 */
#ifndef SS_CLEANFID_H
#define SS_CLEANFID_H

#include <stdint.h>

/* One float channel x[h, w] -> y[oh, ow] (caller's buffer), PIL's BICUBIC in mode "F". Sides in
 * [1, 1 << 16]. */
int cf_resize_bicubic_f32(const float *x, int w, int h, float *y, int ow, int oh);
/* rgb[h, w, 3] -> x[3, 299, 299] (caller's buffer): the resize, clip, (x - 128) / 128. */
int cf_preprocess(const uint8_t *rgb, int w, int h, float *x);

#endif
