#include "metric/cleanfid.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "metric/inception.h"

static double bicubic(double x) { /* Pillow's bicubic_filter, a = -0.5 */
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct {
    int ksize, *lo, *n;
    double *k; /* [out, ksize] */
} coeffs;

/* Pillow's precompute_coeffs for in_size -> out_size (box 0..in_size). */
static int coeffs_make(coeffs *c, int in_size, int out_size) {
    const double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->lo = malloc((size_t)out_size * sizeof *c->lo);
    c->n = malloc((size_t)out_size * sizeof *c->n);
    c->k = calloc((size_t)out_size * c->ksize, sizeof *c->k);
    if (!c->lo || !c->n || !c->k) {
        free(c->lo), free(c->n), free(c->k);
        return ss_fail(SS_ENOMEM, "cleanfid: out of memory for the resize");
    }
    for (int xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = c->k + (size_t)xx * c->ksize, ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        c->lo[xx] = xmin, c->n[xx] = xmax;
    }
    return 0;
}

static void coeffs_free(coeffs *c) { free(c->lo), free(c->n), free(c->k); }

int cf_resize_bicubic_f32(const float *x, int w, int h, float *y, int ow, int oh) {
    const int lim = 1 << 16;
    if (w < 1 || h < 1 || ow < 1 || oh < 1 || w > lim || h > lim || ow > lim || oh > lim)
        return ss_fail(SS_ESHAPE, "cleanfid: resize %dx%d -> %dx%d out of range", w, h, ow, oh);
    coeffs ch = {0}, cv = {0};
    float *tmp = NULL;
    int rc = 0;
    const float *src = x;
    if (ow != w) { /* horizontal pass into tmp [h, ow] */
        if ((rc = coeffs_make(&ch, w, ow)) < 0) return rc;
        tmp = ss_malloc((size_t)h * ow * sizeof *tmp);
        if (!tmp) {
            coeffs_free(&ch);
            return SS_ENOMEM;
        }
        for (int yy = 0; yy < h; yy++)
            for (int xx = 0; xx < ow; xx++) {
                const double *k = ch.k + (size_t)xx * ch.ksize;
                const float *row = x + (size_t)yy * w + ch.lo[xx];
                double ss = 0.0;
                for (int i = 0; i < ch.n[xx]; i++) ss += row[i] * k[i];
                tmp[(size_t)yy * ow + xx] = (float)ss;
            }
        coeffs_free(&ch);
        src = tmp;
    }
    if (oh != h) { /* vertical pass [h, ow] -> [oh, ow] */
        if ((rc = coeffs_make(&cv, h, oh)) < 0) {
            free(tmp);
            return rc;
        }
        for (int yy = 0; yy < oh; yy++) {
            const double *k = cv.k + (size_t)yy * cv.ksize;
            for (int xx = 0; xx < ow; xx++) {
                double ss = 0.0;
                for (int i = 0; i < cv.n[yy]; i++) ss += src[(size_t)(cv.lo[yy] + i) * ow + xx] * k[i];
                y[(size_t)yy * ow + xx] = (float)ss;
            }
        }
        coeffs_free(&cv);
    } else {
        memcpy(y, src, (size_t)oh * ow * sizeof *y);
    }
    free(tmp);
    return 0;
}

int cf_preprocess(const uint8_t *rgb, int w, int h, float *x) {
    const int S = INCEPTION_SIDE;
    if (w < 1 || h < 1 || w > (1 << 16) || h > (1 << 16))
        return ss_fail(SS_ESHAPE, "cleanfid: image of %dx%d", w, h);
    const size_t plane = (size_t)w * h;
    float *ch = ss_malloc(plane * sizeof *ch);
    if (!ch) return SS_ENOMEM;
    int rc = 0;
    for (int c = 0; c < 3 && rc == 0; c++) {
        for (size_t p = 0; p < plane; p++) ch[p] = rgb[3 * p + c];
        float *y = x + (size_t)c * S * S;
        rc = cf_resize_bicubic_f32(ch, w, h, y, S, S);
        for (size_t p = 0; rc == 0 && p < (size_t)S * S; p++) {
            float v = y[p] < 0.0f ? 0.0f : y[p] > 255.0f ? 255.0f : y[p];
            y[p] = (v - 128.0f) / 128.0f;
        }
    }
    free(ch);
    return rc;
}
