/* fidmode: the two FID conventions sinkscope computes, by name, and the per-image pool3 features
 * of each, one call shared by `sinkscope metric fid` and `run --metrics fid`:
 *
 *   pytorch-fid  ToTensor (u8 / 255), the network's own bilinear resize to 299 and 2x - 1
 *                (inception_features_rgb); the paper's FID calibration rows (Tables 9 / 18)
 *   clean-fid    clean-fid's mode="clean": per-channel float bicubic resize to 299, (x - 128) / 128
 *                (cf_preprocess), then the network without its resize (inception_features_raw);
 *                the paper's FID_shift (Table 6)
 *
 * Both then take the Fréchet distance of metric/fid.h (the same eps rule). */
#ifndef SS_FIDMODE_H
#define SS_FIDMODE_H

#include <stdint.h>

#include "metric/inception.h"

typedef enum { FID_MODE_PYTORCH = 0, FID_MODE_CLEAN = 1 } fid_mode;
#define FID_MODE_N 2

/* "pytorch-fid" / "clean-fid" */
const char *fid_mode_name(fid_mode m);
/* 0 and *out for a known name, -1 otherwise (nothing set). */
int fid_mode_parse(const char *name, fid_mode *out);

/* feat[INCEPTION_DIM] of an 8-bit RGB image rgb[h, w, 3] under mode m. */
int fid_features_image(const inception_net *n, fid_mode m, const uint8_t *rgb, int w, int h, float *feat);

#endif
