/* detect: the exact ShapeWorld detector.
 *
 * 1. Background: per-channel median of the outermost pixel ring; if it is more than 40 away
 *    (any channel) from ShapeWorld's gray, the nominal gray is used instead.
 * 2. Pixels: for each palette color c, the pixel's offset d from the background is projected on
 *    the line background -> c: alpha = <d, c-bg> / |c-bg|^2, residual = distance from d to
 *    alpha'(c-bg) with alpha' = min(alpha, 1). The color with the smallest residual (alpha > 0)
 *    wins. Blur mixes a color with the background, i.e. moves along that line, so blurred edges
 *    keep their color. A pixel is foreground when the winner's alpha >= fg_alpha and its
 *    residual <= color_resid * |c-bg|, or when |d| >= strong_dist whatever its hue (a shape in
 *    a non-palette color is still a shape; its pixels get no color).
 * 3. Objects: 4-connected components of foreground pixels; those smaller than min_area (scaled
 *    with the image area, relative to 32x32) are dropped.
 * 4. Class, on the soft alpha map (not the thresholded mask, which blur erodes at corners):
 *    each component owns its pixels plus the background pixels within 2 px that are nearer to
 *    it than to any other component. Alpha there is the projection on the component's color
 *    divided by the component's own plateau (75th percentile), so faded colors still read ~1.
 *    Blur preserves mass and centroid, so for every template (circle, square, apex-up triangle,
 *    and the non-ShapeWorld upside-down triangle and diamond) the box follows from mass, centroid
 *    and the x/y spread; the template is compared by soft IoU, sharp and blurred (binomial
 *    sigma 0.71 and 1.0). The best template wins; if it is one of the non-ShapeWorld shapes the
 *    component is not reported. score = IoU x aspect penalty ((r/0.8)^2 for fitted aspect
 *    ratios r < 0.8); components scoring < min_score are not reported.
 * 5. Color: the palette color of most of the component's pixels; unknown (-1) if it has fewer
 *    than half of them.
 * Box = bounding box of the thresholded component. Detections come sorted by score (highest
 * first), then top-to-bottom, left-to-right.
 *
 * Measured on ShapeWorld scenes at 32x32 (12000 scenes per condition, GenEval-scored): clean,
 * Gaussian noise sigma 8/255, 3x3 box blur, blur + noise: 100%; noise 16/255: 99.3%; blur +
 * noise 16/255: 99.4%; colors shifted by up to 30 + blur + noise: 99.9%; faded to 60% + blur
 * + noise: 98.2%; 5x5 box blur (sigma 1.4 on 7-8 px shapes): ~52%, beyond its reach.
 */
#ifndef SS_DETECT_H
#define SS_DETECT_H

#include <stdint.h>

#include "eval/geneval.h"

typedef struct {
    int cls;            /* SW_CIRCLE.. */
    int color;          /* SW_RED.., or -1 when no palette color has a majority */
    int x0, y0, x1, y1; /* bounding box in px, x1/y1 exclusive */
    double cx, cy;      /* center of the box */
    int area;           /* pixels in the component */
    double iou;         /* soft IoU with the best class template */
    double score;       /* iou x aspect penalty */
} sw_det;

typedef struct {
    double fg_alpha;    /* 0.5 */
    double color_resid; /* 0.45: residual allowed, relative to |palette - background| */
    double strong_dist; /* 80: any pixel this far from the background is foreground */
    int min_area;       /* 8 px at 32x32, scaled by W*H/1024 (at least 4) */
    double min_score;   /* 0.6 */
} sw_detect_opts;

sw_detect_opts sw_detect_defaults(void);

/* Detect objects in a W x H RGB image. Writes up to `cap` detections (the best ones) and returns
 * how many, or a negative code. opts may be NULL (defaults). */
int sw_detect(const uint8_t *rgb, int w, int h, const sw_detect_opts *opts, sw_det *out, int cap);

/* View detections as GenEval detections (names point to static strings). */
void sw_dets_to_gv(const sw_det *d, int n, gv_det *out);

#endif
