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
    sw_detect_opts o = {
        .fg_alpha = 0.5, .color_resid = 0.45, .strong_dist = 80.0, .min_area = 8, .min_score = 0.6};
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
            for (int c = 0; c < 3; c++)
                hist[c][p[c]]++;
            n++;
        }
    int far = 0;
    for (int c = 0; c < 3; c++) {
        long acc = 0;
        int v = 0;
        while (v < 255 && (acc += hist[c][v]) * 2 < n)
            v++;
        bg[c] = v;
        if (abs(v - SW_BACKGROUND[c]) > 40) far = 1;
    }
    if (far)
        for (int c = 0; c < 3; c++)
            bg[c] = SW_BACKGROUND[c];
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
        if (colored)
            label[i] = (signed char)best;
        else if (dd >= o->strong_dist * o->strong_dist)
            label[i] = LBL_NOCOLOR;
        else
            label[i] = LBL_BG;
    }
}

/* ---- classification on the soft alpha map -------------------------------------------------
 * Blur moves mass across the 0.5 threshold, so the thresholded mask of a small blurred shape
 * loses its corners and tips. The soft alpha map keeps what blur preserves: total mass and
 * centroid. For each template the box follows from them (mass = fill x box area; centroid =
 * box center, or 2/3 down for the apex-up triangle) and from the x/y spread of the mass; the
 * template is then compared with the alpha map by soft IoU, sharp and at two blur levels
 * (binomial kernels, sigma 0.71 and 1.0), and the best match counts. Alpha is clamped to
 * [-1, 1], not [0, 1], so that background noise around the shape averages out instead of
 * adding mass. */

#define PAD 4 /* evaluation window: component bbox + PAD px on each side */

/* Templates: the ShapeWorld classes, then shapes that are NOT ShapeWorld classes but resemble
 * them (an upside-down triangle, a diamond). A component matching one of those best is not
 * reported: the detector must not turn every blob into the nearest class. */
enum { T_INV_TRIANGLE = SW_NCLASS, T_DIAMOND, NTEMPLATE };
/* fill of the box; centroid's depth in the box (fraction of H); variance of x and of y over
 * the shape, in units of W^2 and H^2 */
static const double T_FILL[NTEMPLATE] = {0.785398163397448, 1.0, 0.5, 0.5, 0.5};
static const double T_CY[NTEMPLATE] = {0.5, 0.5, 2.0 / 3, 1.0 / 3, 0.5};
static const double T_VARX[NTEMPLATE] = {1.0 / 16, 1.0 / 12, 1.0 / 24, 1.0 / 24, 1.0 / 24};
static const double T_VARY[NTEMPLATE] = {1.0 / 16, 1.0 / 12, 1.0 / 18, 1.0 / 18, 1.0 / 24};

static int template_contains(int t, int64_t X, int64_t Y, int64_t W, int64_t H, int64_t u,
                             int64_t v) {
    if (t < SW_NCLASS) return sw_shape_contains(t, X, Y, W, H, u, v);
    if (u < X || u >= X + W || v < Y || v >= Y + H) return 0;
    int64_t du = 2 * (u - X) - W, dv = 2 * (v - Y) - H;
    int64_t adu = du < 0 ? -du : du, adv = dv < 0 ? -dv : dv;
    if (t == T_INV_TRIANGLE) return adu * H <= (Y + H - v) * W;
    return adu * H + adv * W <= W * H; /* diamond */
}

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

/* Best soft IoU of template `t` with the alpha map of the window. */
static double class_iou(window *wd, int t, double mass, double mx, double my, double vx, double vy,
                        double *aspect_out) {
    /* box aspect W/H from the spread of the mass along x and y, as this class would have it */
    double aspect = sqrt((vx / T_VARX[t]) / (vy / T_VARY[t]));
    aspect = aspect < 0.5 ? 0.5 : aspect > 2 ? 2 : aspect;
    *aspect_out = aspect;
    double area = mass / T_FILL[t];
    double W = sqrt(area * aspect), H = sqrt(area / aspect);
    double X = mx - W / 2, Y = my - T_CY[t] * H;
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
                    k += template_contains(t, X8, Y8, W8, H8, 8 * px + 2 * sx + 1,
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

/* Raw strength of pixel q: its projection on the background -> palette color line (in units of
 * that color), or, for a component of no palette color, its distance from the background. */
static double raw_alpha(const uint8_t *rgb, size_t q, const int bg[3], int color) {
    double d[3];
    for (int k = 0; k < 3; k++)
        d[k] = (double)rgb[3 * q + k] - bg[k];
    if (color < 0) return sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    double dot = 0, vv = 0;
    for (int k = 0; k < 3; k++) {
        double v = (double)SW_PALETTE[color][k] - bg[k];
        dot += d[k] * v;
        vv += v * v;
    }
    return vv > 0 ? dot / vv : 0;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* Fill wd->a with the alpha map of component `id`: the pixels it owns (its own and the ring of
 * background pixels nearest to it, see own_pixels); everything else is 0. Alpha is the raw
 * strength divided by the component's plateau (75th percentile of its pixels' strengths; for
 * palette colors kept within [0.5, 1]), so a faded but otherwise right shape still reads as
 * alpha ~1 inside. `scratch` holds `area` doubles. */
static void alpha_window(window *wd, const uint8_t *rgb, int w, int h, const int bg[3],
                         const int *comp, const int *owner, int id, int color, int area,
                         double *scratch) {
    int n = 0;
    for (int y = 0; y < wd->gh; y++)
        for (int x = 0; x < wd->gw; x++) {
            int px = wd->gx + x, py = wd->gy + y;
            if (px >= 0 && py >= 0 && px < w && py < h && comp[(size_t)py * w + px] == id &&
                n < area)
                scratch[n++] = raw_alpha(rgb, (size_t)py * w + px, bg, color);
        }
    double plateau = 1;
    if (n > 0) {
        qsort(scratch, (size_t)n, sizeof *scratch, cmp_double);
        plateau = scratch[(3 * (n - 1)) / 4];
    }
    if (color >= 0)
        plateau = plateau < 0.5 ? 0.5 : plateau > 1 ? 1 : plateau;
    else if (plateau < 1)
        plateau = 1;
    for (int y = 0; y < wd->gh; y++)
        for (int x = 0; x < wd->gw; x++) {
            int px = wd->gx + x, py = wd->gy + y;
            double a = 0;
            if (px >= 0 && py >= 0 && px < w && py < h) {
                size_t q = (size_t)py * w + px;
                if (owner[q] == id) {
                    a = raw_alpha(rgb, q, bg, color) / plateau;
                    a = a < -1 ? -1 : a > 1 ? 1 : a;
                }
            }
            wd->a[y * wd->gw + x] = a;
        }
}

#define RING 2 /* background pixels up to this far (Chebyshev) from a component are its ring */

/* owner[p] = the component that pixel p belongs to for the soft analysis: its own component, or
 * for a background pixel the single nearest component within RING px (-1 when none is that
 * close, or when two are equally near). Multi-source breadth-first search, 8-connected. */
static void own_pixels(const int *comp, int w, int h, int *owner, int *dist, int *queue) {
    size_t np = (size_t)w * (size_t)h, head = 0, tail = 0;
    for (size_t i = 0; i < np; i++) {
        owner[i] = comp[i];
        dist[i] = comp[i] >= 0 ? 0 : -1;
        if (comp[i] >= 0) queue[tail++] = (int)i;
    }
    while (head < tail) {
        int p = queue[head++];
        if (dist[p] >= RING || owner[p] < 0) continue; /* contested pixels do not spread */
        int px = p % w, py = p / w;
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int nx = px + dx, ny = py + dy;
                if ((!dx && !dy) || nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                int q = ny * w + nx;
                if (dist[q] < 0) {
                    dist[q] = dist[p] + 1;
                    owner[q] = owner[p];
                    queue[tail++] = q;
                } else if (dist[q] == dist[p] + 1 && owner[q] != owner[p]) {
                    owner[q] = -1; /* equally near to two components */
                }
            }
    }
}

static int det_cmp(const void *pa, const void *pb) {
    const sw_det *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->y0 != b->y0) return a->y0 < b->y0 ? -1 : 1;
    return (a->x0 > b->x0) - (a->x0 < b->x0);
}

typedef struct {
    int x0, y0, x1, y1; /* inclusive */
    int area;
    int votes[SW_NCOLOR];
} comp_info;

/* 4-connected components of foreground pixels. Components smaller than min_area are erased
 * (comp = -1). Returns the number of components kept (ids 0..n-1), or a negative code. */
static int find_components(const signed char *label, int w, int h, int min_area, int *comp,
                           int *stack, comp_info **info_out) {
    size_t np = (size_t)w * (size_t)h;
    comp_info *info = NULL;
    int n = 0, cap = 0;
    for (size_t i = 0; i < np; i++)
        comp[i] = -1;
    for (size_t seed = 0; seed < np; seed++) {
        if (label[seed] == LBL_BG || comp[seed] != -1) continue;
        comp_info ci = {w, h, -1, -1, 0, {0}};
        int top = 0;
        comp[seed] = n;
        stack[top++] = (int)seed;
        while (top > 0) {
            int p = stack[--top];
            int px = p % w, py = p / w;
            ci.area++;
            if (label[p] >= 0) ci.votes[label[p]]++;
            if (px < ci.x0) ci.x0 = px;
            if (px > ci.x1) ci.x1 = px;
            if (py < ci.y0) ci.y0 = py;
            if (py > ci.y1) ci.y1 = py;
            int nb[4] = {px > 0 ? p - 1 : -1, px < w - 1 ? p + 1 : -1, py > 0 ? p - w : -1,
                         py < h - 1 ? p + w : -1};
            for (int k = 0; k < 4; k++) {
                int q = nb[k];
                if (q >= 0 && label[q] != LBL_BG && comp[q] == -1) {
                    comp[q] = n;
                    stack[top++] = q;
                }
            }
        }
        if (ci.area < min_area) { /* erase it: mark its pixels as visited but owned by none */
            for (int py = ci.y0; py <= ci.y1; py++)
                for (int px = ci.x0; px <= ci.x1; px++)
                    if (comp[(size_t)py * w + px] == n) comp[(size_t)py * w + px] = -3;
            continue;
        }
        if (n == cap) {
            int ncap = cap ? 2 * cap : 16;
            comp_info *ni = realloc(info, (size_t)ncap * sizeof *ni);
            if (!ni) {
                free(info);
                return ss_fail(SS_ENOMEM, "sw_detect: out of memory");
            }
            info = ni;
            cap = ncap;
        }
        info[n++] = ci;
    }
    for (size_t i = 0; i < np; i++)
        if (comp[i] == -3) comp[i] = -1;
    *info_out = info;
    return n;
}

/* Classify component `id`; returns 0 and fills *d, or 1 when it is not a shape, or < 0. */
static int classify(const uint8_t *rgb, int w, int h, const int bg[3], const int *comp,
                    const int *owner, int id, const comp_info *ci, const sw_detect_opts *o,
                    sw_det *d) {
    int bw = ci->x1 - ci->x0 + 1, bh = ci->y1 - ci->y0 + 1;
    int color = -1, bestv = 0;
    for (int c = 0; c < SW_NCOLOR; c++)
        if (ci->votes[c] > bestv) {
            bestv = ci->votes[c];
            color = c;
        }
    if (2 * bestv < ci->area) color = -1;
    window wd = {ci->x0 - PAD, ci->y0 - PAD, bw + 2 * PAD, bh + 2 * PAD, NULL, NULL, NULL};
    size_t wn = (size_t)wd.gw * (size_t)wd.gh;
    wd.a = malloc((3 * wn + (size_t)ci->area) * sizeof(double));
    if (!wd.a) return ss_fail(SS_ENOMEM, "sw_detect: out of memory");
    wd.t = wd.a + wn;
    wd.tmp = wd.t + wn;
    alpha_window(&wd, rgb, w, h, bg, comp, owner, id, color, ci->area, wd.tmp + wn);
    double mass = 0, mx = 0, my = 0;
    for (int y = 0; y < wd.gh; y++)
        for (int x = 0; x < wd.gw; x++) {
            double a = wd.a[y * wd.gw + x];
            mass += a;
            mx += a * (wd.gx + x + 0.5);
            my += a * (wd.gy + y + 0.5);
        }
    int best_cls = -1;
    double best_iou = -1, best_aspect = 1;
    if (mass > 0) {
        mx /= mass;
        my /= mass;
        double vx = 0, vy = 0;
        for (int y = 0; y < wd.gh; y++)
            for (int x = 0; x < wd.gw; x++) {
                double a = wd.a[y * wd.gw + x];
                double ex = wd.gx + x + 0.5 - mx, ey = wd.gy + y + 0.5 - my;
                vx += a * ex * ex;
                vy += a * ey * ey;
            }
        vx = vx > 0 ? vx / mass : 1e-9;
        vy = vy > 0 ? vy / mass : 1e-9;
        for (int t = 0; t < NTEMPLATE; t++) {
            double aspect;
            double iou = class_iou(&wd, t, mass, mx, my, vx, vy, &aspect);
            if (iou > best_iou) {
                best_iou = iou;
                best_cls = t;
                best_aspect = aspect;
            }
        }
    }
    free(wd.a);
    /* ShapeWorld shapes have square boxes: penalize fitted aspect ratios below 0.8 */
    double ratio = best_aspect < 1 ? best_aspect : 1 / best_aspect;
    double score = best_iou * (ratio >= 0.8 ? 1.0 : (ratio / 0.8) * (ratio / 0.8));
    if (best_cls < 0 || best_cls >= SW_NCLASS || score < o->min_score) return 1;
    *d = (sw_det){.cls = best_cls,
                  .color = color,
                  .x0 = ci->x0,
                  .y0 = ci->y0,
                  .x1 = ci->x1 + 1,
                  .y1 = ci->y1 + 1,
                  .cx = (ci->x0 + ci->x1 + 1) / 2.0,
                  .cy = (ci->y0 + ci->y1 + 1) / 2.0,
                  .area = ci->area,
                  .iou = best_iou,
                  .score = score};
    return 0;
}

/* ShapeWorld's geometry (shapeworld.c, sw_scene_for_meta): an object is a square box of at most
 * 12 px a side at 32 px, scaled by min(W,H)/32 like the renderer scales it, and lies at least
 * 1 px (scaled) inside every border. */
#define SW_OBJ_MAX_32 12
#define SIZE_SLACK_32 2 /* blur and noise can grow a thresholded box by a pixel a side */

static int scale32(int base, int m) { return (base * m + 16) / 32; }

static int largest_object_side(int w, int h) {
    int m = w < h ? w : h, s = scale32(SW_OBJ_MAX_32, m);
    return s < 1 ? 1 : s;
}

/* Can the component be an object at all? Not when it is the background itself or a band through
 * the frame (its box spans the whole width or height: a solid-colour or half-and-half image), not
 * when it touches the border and is larger than any object (plus slack for blur: a frame, a
 * corner region), and not when it fills most of the frame anywhere (a side longer than twice the
 * largest object: 24 px at 32, 3/4 of the frame). */
static int object_sized(const comp_info *ci, int w, int h, int max_obj) {
    int bw = ci->x1 - ci->x0 + 1, bh = ci->y1 - ci->y0 + 1;
    if (bw >= w || bh >= h) return 0;
    int slack = scale32(SIZE_SLACK_32, w < h ? w : h);
    if (slack < 1) slack = 1;
    int touches = ci->x0 == 0 || ci->y0 == 0 || ci->x1 == w - 1 || ci->y1 == h - 1;
    if (touches && (bw > max_obj + slack || bh > max_obj + slack)) return 0;
    if (bw > 2 * max_obj || bh > 2 * max_obj) return 0;
    return 1;
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
    int *owner = ss_malloc(np * sizeof *owner);
    int *dist = ss_malloc(np * sizeof *dist);
    int *queue = ss_malloc(np * sizeof *queue);
    comp_info *info = NULL;
    sw_det *dets = NULL;
    int n = 0, rc = SS_OK;
    if (!label || !comp || !owner || !dist || !queue) {
        rc = SS_ENOMEM;
        goto done;
    }
    int bg[3];
    estimate_background(rgb, w, h, bg);
    label_pixels(rgb, np, bg, &o, label);
    int ncomp = find_components(label, w, h, min_area, comp, queue, &info);
    if (ncomp < 0) {
        rc = ncomp;
        goto done;
    }
    own_pixels(comp, w, h, owner, dist, queue);
    dets = ss_malloc((size_t)(ncomp > 0 ? ncomp : 1) * sizeof *dets);
    if (!dets) {
        rc = SS_ENOMEM;
        goto done;
    }
    const int max_obj = largest_object_side(w, h);
    for (int id = 0; id < ncomp; id++) {
        if (!object_sized(&info[id], w, h, max_obj)) continue;
        int r = classify(rgb, w, h, bg, comp, owner, id, &info[id], &o, &dets[n]);
        if (r < 0) {
            rc = r;
            goto done;
        }
        if (r == 0) n++;
    }
    if (n > 1) qsort(dets, (size_t)n, sizeof *dets, det_cmp);
    if (n > cap) n = cap;
    if (n > 0) memcpy(out, dets, (size_t)n * sizeof *dets);
done:
    free(label);
    free(comp);
    free(owner);
    free(dist);
    free(queue);
    free(info);
    free(dets);
    return rc ? rc : n;
}

void sw_dets_to_gv(const sw_det *d, int n, gv_det *out) {
    for (int i = 0; i < n; i++) {
        const char *color = sw_color_name(d[i].color);
        out[i] = (gv_det){sw_class_name(d[i].cls),
                          color ? color : "",
                          d[i].x0,
                          d[i].y0,
                          d[i].x1,
                          d[i].y1,
                          d[i].score};
    }
}
