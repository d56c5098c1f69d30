/* detect: connected components + template matching on ShapeWorld images (see detect.h). */
#include "eval/detect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "eval/shapeworld.h"

#define LBL_BG (-2)
#define LBL_NOCOLOR (-1)

sw_detect_opts sw_detect_defaults(void) {
    sw_detect_opts o = {.fg_alpha = 0.5, .color_resid = 0.45, .strong_dist = 80.0,
                        .min_area = 10, .min_score = 0.55};
    return o;
}

static void estimate_background(const uint8_t *rgb, int w, int h, int bg[3]) {
    unsigned hist[3][256];
    memset(hist, 0, sizeof hist);
    long n = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            if (y != 0 && y != h - 1 && x != 0 && x != w - 1) continue;
            const uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            for (int c = 0; c < 3; c++) hist[c][p[c]]++;
            n++;
        }
    int far = 0;
    for (int c = 0; c < 3; c++) {
        long acc = 0;
        int v = 0;
        while (v < 255 && (acc += hist[c][v]) * 2 < n) v++;
        bg[c] = v;
        if (abs(v - SW_BACKGROUND[c]) > 40) far = 1;
    }
    if (far)
        for (int c = 0; c < 3; c++) bg[c] = SW_BACKGROUND[c];
}

/* Label every pixel: LBL_BG, LBL_NOCOLOR (foreground of no palette color) or a palette color. */
static void label_pixels(const uint8_t *rgb, size_t np, const int bg[3], const sw_detect_opts *o,
                         signed char *label) {
    double v[SW_NCOLOR][3], vv[SW_NCOLOR];
    for (int c = 0; c < SW_NCOLOR; c++) {
        vv[c] = 0;
        for (int k = 0; k < 3; k++) {
            v[c][k] = (double)SW_PALETTE[c][k] - bg[k];
            vv[c] += v[c][k] * v[c][k];
        }
        if (vv[c] < 1) vv[c] = 1;
    }
    for (size_t i = 0; i < np; i++) {
        double d[3], dd = 0;
        for (int k = 0; k < 3; k++) {
            d[k] = (double)rgb[3 * i + k] - bg[k];
            dd += d[k] * d[k];
        }
        int best = -1;
        double best_r2 = 0, best_a = 0;
        for (int c = 0; c < SW_NCOLOR; c++) {
            double dot = d[0] * v[c][0] + d[1] * v[c][1] + d[2] * v[c][2];
            double a = dot / vv[c];
            if (a <= 0) continue;
            double ac = a < 1 ? a : 1, r2 = 0;
            for (int k = 0; k < 3; k++) {
                double e = d[k] - ac * v[c][k];
                r2 += e * e;
            }
            if (best < 0 || r2 < best_r2) {
                best = c;
                best_r2 = r2;
                best_a = a;
            }
        }
        int colored = best >= 0 && best_a >= o->fg_alpha &&
                      best_r2 <= o->color_resid * o->color_resid * vv[best];
        if (colored) label[i] = (signed char)best;
        else if (dd >= o->strong_dist * o->strong_dist) label[i] = LBL_NOCOLOR;
        else label[i] = LBL_BG;
    }
}

/* ---- classification on the soft alpha map -------------------------------------------------
 * Blur moves mass across the 0.5 threshold, so the thresholded mask of a small blurred shape loses
 * its corners and tips. The soft alpha map keeps what blur preserves: total mass and centroid. For each
 * class the template box follows from them (mass = class fill x box area; centroid = box
 * center, or 2/3 down for the apex-up triangle); the template is then compared with the alpha
 * map by soft IoU, sharp and at two blur levels (binomial kernels, sigma 0.71 and 1.0), and the
 * best match counts. Alpha is clamped to [-1, 1], not [0, 1], so that background noise around
 * the shape averages out instead of adding mass. */

#define PAD 4 /* evaluation window: component bbox + PAD px on each side */

static const double CLASS_FILL[SW_NCLASS] = {0.785398163397448, 1.0, 0.5};
/* variance of x and of y over the shape, in units of W^2 and H^2 */
static const double CLASS_VARX[SW_NCLASS] = {1.0 / 16, 1.0 / 12, 1.0 / 24};
static const double CLASS_VARY[SW_NCLASS] = {1.0 / 16, 1.0 / 12, 1.0 / 18};

typedef struct {
    int gx, gy, gw, gh; /* window origin and size in px */
    double *a, *t, *tmp;
} window;

/* Separable blur of t (gw x gh) with a symmetric kernel of radius r: k[0..r]. */
static void blur_window(window *wd, const double *k, int r) {
    int gw = wd->gw, gh = wd->gh;
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            double s = 0;
            for (int i = -r; i <= r; i++) {
                int xx = x + i;
                if (xx >= 0 && xx < gw) s += k[i < 0 ? -i : i] * wd->t[y * gw + xx];
            }
            wd->tmp[y * gw + x] = s;
        }
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            double s = 0;
            for (int i = -r; i <= r; i++) {
                int yy = y + i;
                if (yy >= 0 && yy < gh) s += k[i < 0 ? -i : i] * wd->tmp[yy * gw + x];
            }
            wd->t[y * gw + x] = s;
        }
}

static double soft_iou(const window *wd, const double *t) {
    double inter = 0, uni = 0;
    for (int i = 0; i < wd->gw * wd->gh; i++) {
        double a = wd->a[i], b = t[i];
        inter += a < b ? a : b;
        uni += a < b ? b : a;
    }
    return uni > 0 ? inter / uni : 0;
}

/* Best soft IoU of class `cls` with the alpha map of the window. */
static double class_iou(window *wd, int cls, double mass, double mx, double my, double vx,
                        double vy) {
    /* box aspect W/H from the spread of the mass along x and y, as this class would have it */
    double aspect = sqrt((vx / CLASS_VARX[cls]) / (vy / CLASS_VARY[cls]));
    aspect = aspect < 0.5 ? 0.5 : aspect > 2 ? 2 : aspect;
    double area = mass / CLASS_FILL[cls];
    double W = sqrt(area * aspect), H = sqrt(area / aspect);
    double X = mx - W / 2, Y = cls == SW_TRIANGLE ? my - 2 * H / 3 : my - H / 2;
    int64_t X8 = (int64_t)floor(8 * X + 0.5), Y8 = (int64_t)floor(8 * Y + 0.5);
    int64_t W8 = (int64_t)floor(8 * W + 0.5), H8 = (int64_t)floor(8 * H + 0.5);
    if (W8 < 1) W8 = 1;
    if (H8 < 1) H8 = 1;
    int gw = wd->gw, gh = wd->gh;
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            int64_t px = wd->gx + x, py = wd->gy + y;
            int k = 0;
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++)
                    k += sw_shape_contains(cls, X8, Y8, W8, H8, 8 * px + 2 * sx + 1,
                                           8 * py + 2 * sy + 1);
            wd->t[y * gw + x] = k / 16.0;
        }
    double best = soft_iou(wd, wd->t);
    static const double K1[2] = {0.5, 0.25}; /* [1 2 1] / 4, sigma 0.71 */
    blur_window(wd, K1, 1);
    double iou = soft_iou(wd, wd->t);
    if (iou > best) best = iou;
    /* K1 applied twice = [1 4 6 4 1] / 16 (sigma 1.0) */
    blur_window(wd, K1, 1);
    iou = soft_iou(wd, wd->t);
    if (iou > best) best = iou;
    return best;
}

static int det_cmp(const void *pa, const void *pb) {
    const sw_det *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->y0 != b->y0) return a->y0 < b->y0 ? -1 : 1;
    return (a->x0 > b->x0) - (a->x0 < b->x0);
}

int sw_detect(const uint8_t *rgb, int w, int h, const sw_detect_opts *opts, sw_det *out, int cap) {
    if (!rgb || w < 1 || h < 1 || w > 8192 || h > 8192 || cap < 0 || (cap > 0 && !out))
        return ss_fail(SS_EARG, "sw_detect: bad arguments (%dx%d image)", w, h);
    sw_detect_opts o = opts ? *opts : sw_detect_defaults();
    size_t np = (size_t)w * (size_t)h;
    int min_area = (int)((long)o.min_area * (long)np / 1024);
    if (min_area < 4) min_area = 4;
    signed char *label = ss_malloc(np);
    int *comp = ss_malloc(np * sizeof *comp);
    int *stack = ss_malloc(np * sizeof *stack);
    sw_det *dets = NULL;
    int n = 0, dcap = 0, rc = SS_OK;
    if (!label || !comp || !stack) {
        rc = SS_ENOMEM;
        goto done;
    }
    int bg[3];
    estimate_background(rgb, w, h, bg);
    label_pixels(rgb, np, bg, &o, label);
    for (size_t i = 0; i < np; i++) comp[i] = -1;
    int ncomp = 0;
    for (size_t seed = 0; seed < np; seed++) {
        if (label[seed] == LBL_BG || comp[seed] >= 0) continue;
        int id = ncomp++;
        int votes[SW_NCOLOR] = {0};
        int area = 0, x0 = w, y0 = h, x1 = -1, y1 = -1, top = 0;
        comp[seed] = id;
        stack[top++] = (int)seed;
        while (top > 0) {
            int p = stack[--top];
            int px = p % w, py = p / w;
            area++;
            if (label[p] >= 0) votes[label[p]]++;
            if (px < x0) x0 = px;
            if (px > x1) x1 = px;
            if (py < y0) y0 = py;
            if (py > y1) y1 = py;
            int nb[4] = {px > 0 ? p - 1 : -1, px < w - 1 ? p + 1 : -1, py > 0 ? p - w : -1,
                         py < h - 1 ? p + w : -1};
            for (int k = 0; k < 4; k++) {
                int q = nb[k];
                if (q >= 0 && label[q] != LBL_BG && comp[q] < 0) {
                    comp[q] = id;
                    stack[top++] = q;
                }
            }
        }
        if (area < min_area) continue;
        int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
        int color = -1, bestv = 0;
        for (int c = 0; c < SW_NCOLOR; c++)
            if (votes[c] > bestv) {
                bestv = votes[c];
                color = c;
            }
        if (2 * bestv < area) color = -1;
        /* alpha map over the window: the component and the ring of pixels around it that belong
         * to no other component */
        window wd = {x0 - PAD, y0 - PAD, bw + 2 * PAD, bh + 2 * PAD, NULL, NULL, NULL};
        size_t wn = (size_t)wd.gw * (size_t)wd.gh;
        wd.a = malloc(3 * wn * sizeof(double));
        if (!wd.a) {
            rc = ss_fail(SS_ENOMEM, "sw_detect: out of memory");
            goto done;
        }
        wd.t = wd.a + wn;
        wd.tmp = wd.t + wn;
        double v[3] = {0, 0, 0}, vv = 0, dmax = 1;
        if (color >= 0) {
            for (int k = 0; k < 3; k++) {
                v[k] = (double)SW_PALETTE[color][k] - bg[k];
                vv += v[k] * v[k];
            }
        } else { /* no palette color: scale by the strongest pixel of the component */
            for (int py = y0; py <= y1; py++)
                for (int px = x0; px <= x1; px++) {
                    size_t q = (size_t)py * w + px;
                    if (comp[q] != id) continue;
                    double dd = 0;
                    for (int k = 0; k < 3; k++) dd += ((double)rgb[3 * q + k] - bg[k]) * ((double)rgb[3 * q + k] - bg[k]);
                    if (sqrt(dd) > dmax) dmax = sqrt(dd);
                }
        }
        double mass = 0, mx = 0, my = 0;
        for (int y = 0; y < wd.gh; y++)
            for (int x = 0; x < wd.gw; x++) {
                int px = wd.gx + x, py = wd.gy + y;
                double a = 0;
                if (px >= 0 && py >= 0 && px < w && py < h) {
                    size_t q = (size_t)py * w + px;
                    int in = comp[q] == id;
                    if (!in && comp[q] < 0 && label[q] == LBL_BG) /* ring: touches the component */
                        for (int dy = -1; dy <= 1 && !in; dy++)
                            for (int dx = -1; dx <= 1 && !in; dx++) {
                                int nx = px + dx, ny = py + dy;
                                in = nx >= 0 && ny >= 0 && nx < w && ny < h &&
                                     comp[(size_t)ny * w + nx] == id;
                            }
                    if (in) {
                        double d[3];
                        for (int k = 0; k < 3; k++) d[k] = (double)rgb[3 * q + k] - bg[k];
                        if (color >= 0) a = (d[0] * v[0] + d[1] * v[1] + d[2] * v[2]) / vv;
                        else a = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) / dmax;
                        a = a < -1 ? -1 : a > 1 ? 1 : a;
                    }
                }
                wd.a[y * wd.gw + x] = a;
                mass += a;
                mx += a * (px + 0.5);
                my += a * (py + 0.5);
            }
        int best_cls = -1;
        double best_iou = -1;
        if (mass > 0) {
            mx /= mass;
            my /= mass;
            double vx = 0, vy = 0;
            for (int y = 0; y < wd.gh; y++)
                for (int x = 0; x < wd.gw; x++) {
                    double a = wd.a[y * wd.gw + x], ex = wd.gx + x + 0.5 - mx, ey = wd.gy + y + 0.5 - my;
                    vx += a * ex * ex;
                    vy += a * ey * ey;
                }
            vx = vx / mass + 1e-9;
            vy = vy / mass + 1e-9;
            for (int cls = 0; cls < SW_NCLASS; cls++) {
                double iou = class_iou(&wd, cls, mass, mx, my, vx, vy);
                if (iou > best_iou) {
                    best_iou = iou;
                    best_cls = cls;
                }
            }
        }
        free(wd.a);
        double ratio = bw < bh ? (double)bw / bh : (double)bh / bw;
        double score = best_iou * (ratio >= 0.75 ? 1.0 : ratio / 0.75);
        if (best_cls < 0 || score < o.min_score) continue;
        if (n == dcap) {
            int ncap = dcap ? 2 * dcap : 16;
            sw_det *nd = realloc(dets, (size_t)ncap * sizeof *nd);
            if (!nd) {
                rc = ss_fail(SS_ENOMEM, "sw_detect: out of memory");
                goto done;
            }
            dets = nd;
            dcap = ncap;
        }
        dets[n++] = (sw_det){.cls = best_cls, .color = color, .x0 = x0, .y0 = y0, .x1 = x1 + 1,
                             .y1 = y1 + 1, .cx = (x0 + x1 + 1) / 2.0, .cy = (y0 + y1 + 1) / 2.0,
                             .area = area, .iou = best_iou, .score = score};
    }
    if (n > 1) qsort(dets, (size_t)n, sizeof *dets, det_cmp);
    if (n > cap) n = cap;
    if (n > 0) memcpy(out, dets, (size_t)n * sizeof *dets);
done:
    free(label);
    free(comp);
    free(stack);
    free(dets);
    return rc ? rc : n;
}

void sw_dets_to_gv(const sw_det *d, int n, gv_det *out) {
    for (int i = 0; i < n; i++) {
        const char *color = sw_color_name(d[i].color);
        out[i] = (gv_det){sw_class_name(d[i].cls), color ? color : "", d[i].x0, d[i].y0,
                          d[i].x1, d[i].y1, d[i].score};
    }
}
