/* imgproc: image preprocessing of the metric networks, exact to the packages they come from.
 *
 * ip_resize_bicubic_u8: PIL's Image.resize((ow, oh), Image.BICUBIC) on an 8-bit RGB image
 * (Pillow 9.x libImaging/Resample.c): the bicubic kernel (a = -0.5, support 2) widened by the
 * scale factor when shrinking, truncated at the borders and renormalised per output pixel, in
 * double; the weights then rounded to 22-bit fixed point (away from zero at .5), each channel
 * summed in int32 from a half-unit bias, shifted right 22 bits and clamped to [0, 255]. The
 * horizontal pass runs first (skipped when the width is unchanged), then the vertical pass
 * (skipped when the height is unchanged), each rounding to 8 bits.
 *
 * ip_clip_preprocess: open_clip's validation transform (resize_mode "shortest"), i.e. torchvision
 * Resize(size) on a PIL image (shorter side to `size`, the longer to int(size * long / short); no
 * resize when the image already has that size), CenterCrop(size) (offsets int(round((h - size) / 2))
 * with Python's round half to even), ToTensor (x / 255 in float32) and Normalize with CLIP's mean
 * and std (float32 (x - mean) / std). Output: [3, size, size] float32, channel-major.
 *
 * Scope: exact for what sinkscope writes and most PNGs, 8-bit RGB (and grey, whose channels PIL
 * resizes identically). open_clip converts to RGB only after resizing, so for RGBA PNGs PIL
 * resizes premultiplied colour and for palette PNGs it resizes with NEAREST: the io/png readers
 * hand over plain RGB, and those two kinds of input are not reproduced to the byte.
 */
#ifndef SS_IMGPROC_H
#define SS_IMGPROC_H

#include <stdint.h>

/* CLIP's normalisation constants (OpenAI), as open_clip and transformers state them. */
extern const float IP_CLIP_MEAN[3], IP_CLIP_STD[3];

/* rgb [h, w, 3] -> out [oh, ow, 3] (malloc'd, caller frees). Sides must be in [1, 1 << 16]. */
int ip_resize_bicubic_u8(const uint8_t *rgb, int w, int h, int ow, int oh, uint8_t **out);

/* The size torchvision's Resize(size) gives an image of w x h (shorter side = size). */
void ip_resize_shorter_size(int w, int h, int size, int *ow, int *oh);

/* Centre-crop offsets of torchvision's center_crop (crop not larger than the image). */
void ip_center_crop_offsets(int w, int h, int cw, int ch, int *left, int *top);

/* The open_clip validation transform: rgb [h, w, 3] -> out [3, size, size] (caller's buffer).
 * If resized8 is not NULL it receives a malloc'd copy of the 8-bit cropped image [size, size, 3]
 * (for tests). `label` names the image in errors. */
int ip_clip_preprocess(const uint8_t *rgb, int w, int h, int size, const float mean[3], const float std[3],
                       float *out, uint8_t **resized8, const char *label);

#endif
