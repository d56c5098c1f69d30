/* detect: the exact ShapeWorld detector.
 *
 * 1. Background: per-channel median of the outermost pixel ring; if it is more than 40 away
 *    (any channel) from ShapeWorld's gray, the nominal gray is used instead.
 * 2. Pixels: for each palette color c, the pixel's offset d from the background is projected on
 *    the line background -> c: alpha = <d, c-bg> / |c-bg|^2, residual = distance from d to
 *    alpha'(c-bg) with alpha' = min(alpha, 1). The color with the smallest residual (alpha > 0)
 *    wins. This is what blur does (mixes a color with the background), so blurred edges keep
 *    their color. A pixel is foreground when the winner's alpha >= fg_alpha and its residual
 *    <= color_resid * |c-bg|, or when |d| >= strong_dist whatever its hue (a shape in a
 *    non-palette color is still a shape; its pixels get no color).
 * 3. Objects: 4-connected components of foreground pixels; smaller than min_area (scaled with
 *    the image area, relative to 32x32) are dropped.
 * 4. Class: each ShapeWorld shape is drawn into the component's bounding box (the renderer's
 *    own geometry) and compared with the component's mask by soft IoU; the best class wins.
 *    score = IoU x aspect penalty (1 for width/height ratio >= 0.75, ratio/0.75 below);
 *    components scoring < min_score are not shapes and are dropped.
 * 5. Color: the palette color of most of the component's pixels; unknown (-1) if it has fewer
 *    than half of them.
 * Detections come sorted by score (highest first), then top-to-bottom, left-to-right.
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
    int min_area;       /* 10 px at 32x32, scaled by W*H/1024 (at least 4) */
    double min_score;   /* 0.55 */
} sw_detect_opts;

sw_detect_opts sw_detect_defaults(void);

/* Detect objects in a W x H RGB image. Writes up to `cap` detections (the best ones) and returns
 * how many, or a negative code. opts may be NULL (defaults). */
int sw_detect(const uint8_t *rgb, int w, int h, const sw_detect_opts *opts, sw_det *out, int cap);

/* View detections as GenEval detections (names point to static strings). */
void sw_dets_to_gv(const sw_det *d, int n, gv_det *out);

#endif
