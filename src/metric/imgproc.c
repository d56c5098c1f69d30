/* imgproc: PIL-exact bicubic resize and open_clip's validation transform (see imgproc.h). */
#include "metric/imgproc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

const float IP_CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float IP_CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

#define IP_BITS 22 /* 32 - 8 - 2: 8 bits of result, two of headroom for negative lobes */

static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

/* One axis: for every output index its first source index, tap count and fixed-point weights
 * (ksize per output). */
typedef struct {
    int ksize;
    int *lo, *n;
    int32_t *k;
} axis;

static void axis_free(axis *a) { free(a->lo), free(a->n), free(a->k); }

static int axis_make(axis *a, int in_size, int out_size) {
    memset(a, 0, sizeof *a);
    /* Pillow passes the box as floats (0, in_size); in1 - in0 is exact. */
    double scale = (double)(float)in_size / out_size, fscale = scale < 1 ? 1 : scale;
    double support = 2.0 * fscale;
    a->ksize = (int)ceil(support) * 2 + 1;
    double *w = ss_malloc((size_t)a->ksize * sizeof *w);
    a->lo = ss_malloc((size_t)out_size * sizeof *a->lo);
    a->n = ss_malloc((size_t)out_size * sizeof *a->n);
    a->k = ss_calloc((size_t)out_size * a->ksize, sizeof *a->k);
    if (!w || !a->lo || !a->n || !a->k) {
        free(w);
        axis_free(a);
        return SS_ENOMEM;
    }
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale, ss = 1.0 / fscale, sum = 0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        for (int x = 0; x < n; x++) sum += w[x] = bicubic((x + lo - center + 0.5) * ss);
        int32_t *k = a->k + (size_t)o * a->ksize;
        for (int x = 0; x < n; x++) {
            double v = sum != 0 ? w[x] / sum : w[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << IP_BITS) : 0.5 + v * (1 << IP_BITS));
        }
        a->lo[o] = lo, a->n[o] = n;
    }
    free(w);
    return 0;
}

static inline uint8_t clip8(int32_t s) {
    int32_t v = s >> IP_BITS; /* arithmetic shift, as Pillow's table lookup */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

int ip_resize_bicubic_u8(const uint8_t *rgb, int w, int h, int ow, int oh, uint8_t **out) {
    *out = NULL;
    if (w < 1 || h < 1 || ow < 1 || oh < 1 || w > 65536 || h > 65536 || ow > 65536 || oh > 65536)
        return ss_fail(SS_EARG, "bicubic resize: sizes %dx%d -> %dx%d out of range [1, 65536]", w, h, ow, oh);
    axis ax, ay;
    int rc = axis_make(&ax, w, ow);
    if (rc < 0) return rc;
    if ((rc = axis_make(&ay, h, oh)) < 0) {
        axis_free(&ax);
        return rc;
    }
    /* Horizontal pass over the source rows the vertical pass reads. */
    int y0 = ay.lo[0], y1 = ay.lo[oh - 1] + ay.n[oh - 1], th = y1 - y0;
    uint8_t *tmp = NULL, *dst = ss_malloc((size_t)ow * oh * 3);
    const uint8_t *src = rgb;
    int sw = w, soff = 0;
    if (!dst) rc = SS_ENOMEM;
    if (rc >= 0 && ow != w) {
        if (!(tmp = ss_malloc((size_t)ow * th * 3))) rc = SS_ENOMEM;
        else {
#pragma omp parallel for schedule(static) if ((size_t)ow * th > 65536)
            for (int y = 0; y < th; y++) {
                const uint8_t *row = rgb + (size_t)(y + y0) * w * 3;
                for (int o = 0; o < ow; o++) {
                    const int32_t *k = ax.k + (size_t)o * ax.ksize;
                    const uint8_t *p = row + (size_t)ax.lo[o] * 3;
                    int32_t s0 = 1 << (IP_BITS - 1), s1 = s0, s2 = s0;
                    for (int x = 0; x < ax.n[o]; x++) {
                        s0 += p[3 * x] * k[x], s1 += p[3 * x + 1] * k[x], s2 += p[3 * x + 2] * k[x];
                    }
                    uint8_t *q = tmp + ((size_t)y * ow + o) * 3;
                    q[0] = clip8(s0), q[1] = clip8(s1), q[2] = clip8(s2);
                }
            }
            src = tmp, sw = ow, soff = y0;
        }
    }
    if (rc >= 0 && oh != h) {
#pragma omp parallel for schedule(static) if ((size_t)ow * oh > 65536)
        for (int o = 0; o < oh; o++) {
            const int32_t *k = ay.k + (size_t)o * ay.ksize;
            int lo = ay.lo[o] - soff;
            for (int x = 0; x < sw * 3; x++) {
                int32_t s = 1 << (IP_BITS - 1);
                for (int y = 0; y < ay.n[o]; y++) s += src[((size_t)(lo + y) * sw) * 3 + x] * k[y];
                dst[(size_t)o * sw * 3 + x] = clip8(s);
            }
        }
    } else if (rc >= 0) {
        memcpy(dst, src + (size_t)soff * sw * 3, (size_t)ow * oh * 3);
    }
    free(tmp);
    axis_free(&ax), axis_free(&ay);
    if (rc < 0) {
        free(dst);
        return rc;
    }
    *out = dst;
    return 0;
}

void ip_resize_shorter_size(int w, int h, int size, int *ow, int *oh) {
    int s = w < h ? w : h, l = w < h ? h : w;
    int nl = (int)((double)size * l / s); /* Python int(size * long / short) */
    if (w <= h) *ow = size, *oh = nl;
    else *ow = nl, *oh = size;
}

/* int(round(d / 2.0)) with round half to even (d an integer, so d/2 is exact). */
static int half_round_even(int d) {
    if (d % 2 == 0) return d / 2;
    int f = (int)floor(d / 2.0); /* d/2 = f + 0.5 */
    return f % 2 == 0 ? f : f + 1;
}

void ip_center_crop_offsets(int w, int h, int cw, int ch, int *left, int *top) {
    *left = half_round_even(w - cw);
    *top = half_round_even(h - ch);
}

int ip_clip_preprocess(const uint8_t *rgb, int w, int h, int size, const float mean[3], const float std[3],
                       float *out, uint8_t **resized8, const char *label) {
    if (resized8) *resized8 = NULL;
    if (w < 1 || h < 1 || size < 1 || w > 65536 || h > 65536 || size > 65536)
        return ss_fail(SS_ESHAPE, "%s: image %dx%d (or crop %d) out of range", label, w, h, size);
    int ow, oh;
    ip_resize_shorter_size(w, h, size, &ow, &oh);
    uint8_t *r = NULL;
    const uint8_t *img = rgb;
    if (ow != w || oh != h) {
        int rc = ip_resize_bicubic_u8(rgb, w, h, ow, oh, &r);
        if (rc < 0) return ss_err_prefix(rc, "%s: ", label);
        img = r;
    }
    int left, top;
    ip_center_crop_offsets(ow, oh, size, size, &left, &top);
    uint8_t *crop = NULL;
    if (resized8 && !(crop = ss_malloc((size_t)size * size * 3))) {
        free(r);
        return SS_ENOMEM;
    }
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            const uint8_t *p = img + ((size_t)(y + top) * ow + (x + left)) * 3;
            for (int c = 0; c < 3; c++) {
                float v = (float)p[c] / 255.0f;
                out[((size_t)c * size + y) * size + x] = (v - mean[c]) / std[c];
                if (crop) crop[((size_t)y * size + x) * 3 + c] = p[c];
            }
        }
    free(r);
    if (resized8) *resized8 = crop;
    return 0;
}
