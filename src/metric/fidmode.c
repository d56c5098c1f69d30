#include "metric/fidmode.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "metric/cleanfid.h"

static const char *const NAME[FID_MODE_N] = {"pytorch-fid", "clean-fid"};

const char *fid_mode_name(fid_mode m) { return (unsigned)m < FID_MODE_N ? NAME[m] : "?"; }

int fid_mode_parse(const char *name, fid_mode *out) {
    for (int i = 0; i < FID_MODE_N; i++)
        if (name && !strcmp(name, NAME[i])) {
            *out = (fid_mode)i;
            return 0;
        }
    return -1;
}

int fid_features_image(const inception_net *n, fid_mode m, const uint8_t *rgb, int w, int h, float *feat) {
    if (m == FID_MODE_PYTORCH) return inception_features_rgb(n, rgb, w, h, feat);
    if (m != FID_MODE_CLEAN) return ss_fail(SS_EARG, "fid: unknown mode %d", (int)m);
    float *x = ss_malloc((size_t)3 * INCEPTION_SIDE * INCEPTION_SIDE * sizeof *x);
    if (!x) return SS_ENOMEM;
    int rc = cf_preprocess(rgb, w, h, x);
    if (rc == 0) rc = inception_features_raw(n, x, INCEPTION_SIDE, INCEPTION_SIDE, feat);
    free(x);
    return rc;
}
