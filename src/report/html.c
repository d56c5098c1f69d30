/* report/html: one self-contained report.html (inline CSS, inline SVG charts drawn here, PNGs as
 * base64 data URIs). Every coordinate is printed with a fixed number of decimals, so the same
 * analysis gives the same bytes. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "io/png.h"
#include "report/report.h"
#include "report/spiral.h"


/* Okabe-Ito: distinguishable with the common colour-vision deficiencies */
static const char *const PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"};
#define C_SINK "#0072B2"
#define C_RAND "#D55E00"
#define C_OTHER "#009E73"

void rp_html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void b64(FILE *f, const unsigned char *d, size_t n) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        fputc(T[v >> 18 & 63], f);
        fputc(T[v >> 12 & 63], f);
        fputc(i + 1 < n ? T[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? T[v & 63] : '=', f);
    }
}

static const char *cond_color(const rp_exp *e, int c) {
    if (!e->conds[c].parsed) return C_OTHER;
    if (!e->conds[c].c.n_layers && (e->conds[c].c.have_pe || sink_condition_pad_active(&e->conds[c].c)))
        return C_OTHER; /* pe_* or pad_prompt only: no key selection */
    if (e->conds[c].c.select == SEL_RANDOM) return C_RAND;
    if (e->conds[c].c.select == SEL_TOPK) return C_SINK;
    return C_OTHER;
}

/* ---- numbers ---- */

static void put_signed(FILE *f, double x, int dec) {
    char b[64];
    rp_fmt_signed(b, sizeof b, x, dec);
    fputs(b, f);
}

static void put_ci(FILE *f, double m, double lo, double hi, int dec, int sign) {
    if (isnan(m)) {
        fputs("–", f);
        return;
    }
    if (isnan(lo) || isnan(hi)) { /* one value: no interval */
        if (sign) put_signed(f, m, dec);
        else fprintf(f, "%.*f", dec, m);
        fputs(" <span class=ci>[–]</span>", f);
        return;
    }
    if (sign) {
        put_signed(f, m, dec);
        fputs(" <span class=ci>[", f);
        put_signed(f, lo, dec);
        fputs(", ", f);
        put_signed(f, hi, dec);
        fputs("]</span>", f);
    } else {
        fprintf(f, "%.*f <span class=ci>[%.*f, %.*f]</span>", dec, m, dec, lo, dec, hi);
    }
}

static void put_p(FILE *f, double p) {
    char b[32];
    if (!isnan(p) && p > 0 && p < 1e-4) {
        fputs("&lt;10<sup>" RP_MINUS "4</sup>", f);
        return;
    }
    rp_fmt_p(b, sizeof b, p);
    fputs(b, f);
}

/* a p-value, or "–" with the reason it is undefined */
static void put_p_why(FILE *f, double p, const char *why) {
    put_p(f, p);
    if (isnan(p) && why && *why) {
        fputs("<br><span class=why>", f);
        rp_html_esc(f, why);
        fputs("</span>", f);
    }
}

/* 1.9×10^8 */
static void put_factor(FILE *f, double x) {
    if (isnan(x)) fputs("–", f);
    else if (isinf(x)) fputs("removed", f);
    else if (x < 1000) fprintf(f, "%.3g×", x);
    else {
        int ex = (int)floor(log10(x));
        fprintf(f, "%.2g×10<sup>%d</sup>", x / pow(10, ex), ex);
    }
}

static void put_pct(FILE *f, double x, int dec) {
    if (isnan(x)) fputs("–", f);
    else fprintf(f, "%.*f%%", dec, 100 * x);
}

/* ---- SVG plotting ---- */

typedef struct {
    FILE *f;
    double L, T, W, H; /* plot area in px */
    double x0, x1, y0, y1;
    int logx;
    double xstep, ystep; /* tick spacing (linear axes) */
} plot;

static double px(const plot *p, double x) {
    if (p->logx) return p->L + (log10(x) - log10(p->x0)) / (log10(p->x1) - log10(p->x0)) * p->W;
    return p->L + (x - p->x0) / (p->x1 - p->x0) * p->W;
}
static double py(const plot *p, double y) { return p->T + (1 - (y - p->y0) / (p->y1 - p->y0)) * p->H; }

/* Round the range out to a 1-2-5 step giving about `target` intervals. */
double rp_nice_range(double *lo, double *hi, int target) {
    if (!isfinite(*lo) || !isfinite(*hi)) *lo = 0, *hi = 1;
    if (*hi - *lo < 1e-12 * (fabs(*lo) + fabs(*hi)) || *hi <= *lo) {
        double c = *lo, d = fabs(c) > 0 ? fabs(c) * 0.1 : 0.5;
        *lo = c - d, *hi = c + d;
    }
    double raw = (*hi - *lo) / target, mag = pow(10, floor(log10(raw))), nrm = raw / mag;
    double step = (nrm < 1.5 ? 1 : nrm < 3 ? 2 : nrm < 7 ? 5 : 10) * mag;
    *lo = floor(*lo / step + 1e-9) * step;
    *hi = ceil(*hi / step - 1e-9) * step;
    return step;
}

void rp_tick_label(char *b, size_t cap, double v, double step) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    if (fabs(v) < step * 1e-6) v = 0;
    char t[48];
    snprintf(t, sizeof t, "%.*f", dec, fabs(v));
    if (snprintf(b, cap, "%s%s", v < 0 ? RP_MINUS : "", t) >= (int)cap && cap) b[cap - 1] = 0;
}

void rp_svg_open(FILE *f, int w, int h, const char *label) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
               "aria-label=\"",
            w, h, w, h);
    rp_html_esc(f, label);
    fputs("\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n", f);
}

void rp_svg_text(FILE *f, double x, double y, const char *anchor, const char *extra, const char *s) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s%s>", x, y, anchor, extra ? " " : "", extra ? extra : "");
    rp_html_esc(f, s);
    fputs("</text>\n", f);
}

/* Axes with grid, ticks, labels and title; sets the data range (rounded to nice ticks). */
static void plot_axes(plot *p, const char *title, const char *xlabel, const char *ylabel) {
    FILE *f = p->f;
    p->ystep = rp_nice_range(&p->y0, &p->y1, 5);
    if (!p->logx && !(p->xstep > 0)) p->xstep = rp_nice_range(&p->x0, &p->x1, 6); /* else: range preset by the caller */
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fcfcfc\" stroke=\"none\"/>\n", p->L, p->T, p->W,
            p->H);
    char b[48];
    for (int i = 0;; i++) {
        double v = p->y0 + i * p->ystep;
        if (v > p->y1 + p->ystep * 1e-6) break;
        double y = py(p, v);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", p->L, p->L + p->W, y, y);
        rp_tick_label(b, sizeof b, v, p->ystep);
        rp_svg_text(f, p->L - 5, y + 3.5, "end", "fill=\"#444\"", b);
    }
    if (p->logx) {
        for (double dec = pow(10, floor(log10(p->x0))); dec <= p->x1 * 1.0000001; dec *= 10)
            for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) {
                double v = dec * m;
                if (v < p->x0 * 0.9999999 || v > p->x1 * 1.0000001) continue;
                double x = px(p, v);
                fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", x, x, p->T, p->T + p->H);
                snprintf(b, sizeof b, "%g", v);
                rp_svg_text(f, x, p->T + p->H + 14, "middle", "fill=\"#444\"", b);
            }
    } else {
        double first = ceil(p->x0 / p->xstep - 1e-9) * p->xstep;
        for (int i = 0;; i++) {
            double v = first + i * p->xstep;
            if (v > p->x1 + p->xstep * 1e-6) break;
            double x = px(p, v);
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", x, x, p->T, p->T + p->H);
            rp_tick_label(b, sizeof b, v, p->xstep);
            rp_svg_text(f, x, p->T + p->H + 14, "middle", "fill=\"#444\"", b);
        }
    }
    fprintf(f, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#333\"/>\n", p->L, p->T, p->T + p->H, p->L + p->W);
    if (title) rp_svg_text(f, p->L, p->T - 8, "start", "font-weight=\"600\" font-size=\"12\"", title);
    if (xlabel) rp_svg_text(f, p->L + p->W / 2, p->T + p->H + 30, "middle", NULL, xlabel);
    if (ylabel) {
        fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">", p->L - 44, p->T + p->H / 2);
        rp_html_esc(f, ylabel);
        fputs("</text>\n", f);
    }
}

static void hline(const plot *p, double y, const char *style) {
    if (y < p->y0 || y > p->y1) return;
    fprintf(p->f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" %s/>\n", p->L, p->L + p->W, py(p, y), py(p, y), style);
}

/* vertical error bar with caps and a dot */
static void ci_bar(const plot *p, double x, double m, double lo, double hi, const char *col) {
    if (isnan(m)) return;
    double X = px(p, x);
    if (!isnan(lo) && !isnan(hi)) {
        fprintf(p->f, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", X,
                py(p, lo), py(p, hi), X - 4, py(p, lo), X + 4, X - 4, py(p, hi), X + 4, col);
    }
    fprintf(p->f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", X, py(p, m), col);
}

static void legend(FILE *f, double x, double y, const char *const *labels, const char *const *colors, int n, int dashed) {
    for (int i = 0; i < n; i++) {
        double yy = y + 15 * i;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", x, x + 16, yy, yy,
                colors[i], dashed ? " stroke-dasharray=\"4 2\"" : "");
        rp_svg_text(f, x + 21, yy + 3.5, "start", NULL, labels[i]);
    }
}

/* ---- figures ---- */

/* Two forest panels sharing the condition labels: Δ alignment (with the equivalence band) and 1−SSIM. */
static void fig_forest(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    int n = e->n_conds - 1;
    if (n < 1) return;
    const int row = 30, top = 40, lab = 230, pw = 330, gap = 50;
    const int h = top + row * n + 46, w = lab + 2 * pw + gap + 20;
    plot p1 = {.f = f, .L = lab, .T = top, .W = pw, .H = row * n};
    plot p2 = {.f = f, .L = lab + pw + gap, .T = top, .W = pw, .H = row * n};
    p1.x0 = -a->o->margin * 1.2, p1.x1 = a->o->margin * 1.2;
    p2.x0 = 0, p2.x1 = 0;
    for (int c = 1; c < e->n_conds; c++) {
        const rp_metric *g = &a->cr[c].m[M_GENEVAL], *s = &a->cr[c].m[M_SHIFT];
        if (!isnan(g->ci_lo)) p1.x0 = fmin(p1.x0, g->ci_lo), p1.x1 = fmax(p1.x1, g->ci_hi);
        if (!isnan(s->ci_hi)) p2.x1 = fmax(p2.x1, s->ci_hi);
    }
    if (p2.x1 <= 0) p2.x1 = 0.01;
    rp_svg_open(f, w, h, "Forest plot of the paired effects per condition");
    char b[48];
    for (int k = 0; k < 2; k++) {
        plot *p = k ? &p2 : &p1;
        p->xstep = rp_nice_range(&p->x0, &p->x1, 5);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fcfcfc\"/>\n", p->L, p->T, p->W, p->H);
        if (!k) { /* equivalence band */
            double x0 = px(p, -a->o->margin), x1 = px(p, a->o->margin);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#e3f2e6\"/>\n", x0, p->T, x1 - x0, p->H);
        }
        for (int i = 0;; i++) {
            double v = p->x0 + i * p->xstep;
            if (v > p->x1 + p->xstep * 1e-6) break;
            double x = px(p, v);
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x, x, p->T, p->T + p->H,
                    fabs(v) < p->xstep * 1e-6 ? "#555" : "#e4e4e4");
            rp_tick_label(b, sizeof b, v, p->xstep);
            rp_svg_text(f, x, p->T + p->H + 14, "middle", "fill=\"#444\"", b);
        }
        fprintf(f, "<path d=\"M%.1f %.1fH%.1f\" stroke=\"#333\"/>\n", p->L, p->T + p->H, p->L + p->W);
        rp_svg_text(f, p->L, 16, "start", "font-weight=\"600\" font-size=\"12\"",
                k ? "(b) perceptual shift 1−SSIM vs paired baseline" : "(a) Δ GenEval accuracy (condition − baseline)");
        rp_svg_text(f, p->L + p->W / 2, p->T + p->H + 32, "middle", NULL,
                k ? "mean 1−SSIM, 95% bootstrap CI" : "mean paired Δ, 95% bootstrap CI; band: equivalence margin");
    }
    for (int c = 1; c < e->n_conds; c++) {
        double y = top + row * (c - 1) + row / 2.0;
        if (c % 2 == 0)
            fprintf(f, "<rect x=\"0\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"#000\" fill-opacity=\"0.03\"/>\n", y - row / 2.0,
                    w, row);
        fprintf(f, "<text x=\"6\" y=\"%.1f\" font-weight=\"600\">", y - 2);
        rp_html_esc(f, e->conds[c].name);
        fprintf(f, "</text><text x=\"6\" y=\"%.1f\" font-size=\"10\" fill=\"#666\">", y + 10);
        rp_html_esc(f, e->conds[c].desc);
        fputs("</text>\n", f);
        const char *col = cond_color(e, c);
        for (int k = 0; k < 2; k++) {
            const plot *p = k ? &p2 : &p1;
            const rp_metric *m = &a->cr[c].m[k ? M_SHIFT : M_GENEVAL];
            if (isnan(m->mean)) continue;
            fprintf(f, "<path d=\"M%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", px(p, m->ci_lo), y, px(p, m->ci_hi), col);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>\n", px(p, m->mean) - 3.5, y - 3.5, col);
        }
    }
    fputs("</svg>\n", f);
}

/* Grouped bars: 1−SSIM of each sink condition next to its random control, with CIs. */
static void fig_dd(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    if (!a->n_dd) return;
    int n = a->n_dd;
    const int gw = 70, w = 90 + gw * n + 220, h = 280;
    plot p = {.f = f, .L = 70, .T = 30, .W = gw * n, .H = 200, .x0 = 0, .x1 = 1, .y0 = 0, .y1 = 0.01};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            const rp_metric *m = &a->cr[k ? a->dd[i].rand : a->dd[i].sink].m[M_SHIFT];
            if (!isnan(m->ci_hi)) p.y1 = fmax(p.y1, m->ci_hi);
        }
    rp_svg_open(f, w, h, "Perceptual shift of sink removal vs equal-budget random removal");
    p.ystep = rp_nice_range(&p.y0, &p.y1, 5);
    char b[48];
    for (int i = 0;; i++) {
        double v = p.y0 + i * p.ystep;
        if (v > p.y1 + p.ystep * 1e-6) break;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", p.L, p.L + p.W, py(&p, v), py(&p, v));
        rp_tick_label(b, sizeof b, v, p.ystep);
        rp_svg_text(f, p.L - 5, py(&p, v) + 3.5, "end", "fill=\"#444\"", b);
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            int c = k ? a->dd[i].rand : a->dd[i].sink;
            const rp_metric *m = &a->cr[c].m[M_SHIFT];
            if (isnan(m->mean)) continue;
            double x = p.L + gw * i + 12 + k * 24;
            const char *col = k ? C_RAND : C_SINK;
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"20\" height=\"%.1f\" fill=\"%s\" fill-opacity=\"0.85\"/>\n", x,
                    py(&p, m->mean), py(&p, 0) - py(&p, m->mean), col);
            fprintf(f, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"#222\"/>\n", x + 10, py(&p, m->ci_lo),
                    py(&p, m->ci_hi), x + 6, py(&p, m->ci_lo), x + 14, x + 6, py(&p, m->ci_hi), x + 14);
        }
        rp_svg_text(f, p.L + gw * i + gw / 2.0, p.T + p.H + 14, "middle", NULL, e->conds[a->dd[i].sink].name);
        if (a->dd[i].shift.ok && a->dd[i].shift.mean_rand > 0) {
            snprintf(b, sizeof b, "%.1f×", a->dd[i].shift.mean_sink / a->dd[i].shift.mean_rand);
            rp_svg_text(f, p.L + gw * i + gw / 2.0, p.T + p.H + 27, "middle", "fill=\"#666\" font-size=\"10\"", b);
        }
    }
    fprintf(f, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#333\"/>\n", p.L, p.T, p.T + p.H, p.L + p.W);
    rp_svg_text(f, p.L, 18, "start", "font-weight=\"600\" font-size=\"12\"", "1−SSIM: sink removal vs random removal");
    fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">mean 1−SSIM (95%% CI)</text>\n",
            p.L - 48, p.T + p.H / 2);
    const char *L[] = {"top-k sinks", "random keys (same budget)"}, *C[] = {C_SINK, C_RAND};
    for (int i = 0; i < 2; i++) {
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", p.L + p.W + 20, p.T + 10 + 18.0 * i, C[i]);
        rp_svg_text(f, p.L + p.W + 38, p.T + 20 + 18.0 * i, "start", NULL, L[i]);
    }
    rp_svg_text(f, p.L + p.W + 20, p.T + 62, "start", "fill=\"#666\" font-size=\"10\"", "below a pair: sink/random ratio");
    fputs("</svg>\n", f);
}

static void fig_sweep(FILE *f, const rp_analysis *a, const rp_sweep *s) {
    fputs("<div class=panels>\n", f);
    for (int w = 0; w < 2; w++) {
        int k = w ? M_SHIFT : M_GENEVAL;
        plot p = {.f = f, .L = 64, .T = 28, .W = 330, .H = 190};
        if (s->param == 0) { /* eta lives in [0, 1]: show all of it */
            p.x0 = -0.04, p.x1 = 1.04, p.xstep = 0.2;
        } else if (s->dose[0] > 0 && s->dose[s->n - 1] / s->dose[0] >= 10) {
            p.logx = 1;
            p.x0 = s->dose[0] / 1.5, p.x1 = s->dose[s->n - 1] * 1.5;
        } else {
            p.x0 = 0, p.x1 = s->dose[s->n - 1] * 1.1;
        }
        p.y0 = 0, p.y1 = 0;
        for (int j = 0; j < s->n; j++) {
            const rp_metric *m = &a->cr[s->conds[j]].m[k];
            if (!isnan(m->ci_lo)) p.y0 = fmin(p.y0, m->ci_lo), p.y1 = fmax(p.y1, m->ci_hi);
        }
        if (!w) p.y0 = fmin(p.y0, -a->o->margin), p.y1 = fmax(p.y1, a->o->margin);
        rp_svg_open(f, 420, 290, w ? "Dose-response: perceptual shift" : "Dose-response: alignment");
        char title[96];
        snprintf(title, sizeof title, "(%c) %s vs %s", 'a' + w, w ? "1−SSIM" : "Δ GenEval accuracy", s->param ? "k" : "η");
        plot_axes(&p, title, s->param ? "k (keys per head)" : "η (score scale; 0 = full removal)",
                  w ? "mean 1−SSIM" : "mean paired Δ");
        if (!w) {
            double y0 = py(&p, a->o->margin), y1 = py(&p, -a->o->margin);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#2a9d4b\" fill-opacity=\"0.10\"/>\n", p.L,
                    y0, p.W, y1 - y0);
        }
        hline(&p, 0, "stroke=\"#555\" stroke-dasharray=\"4 3\"");
        fputs("<path d=\"", f);
        int first = 1;
        for (int j = 0; j < s->n; j++) {
            const rp_metric *m = &a->cr[s->conds[j]].m[k];
            if (isnan(m->mean)) continue;
            fprintf(f, "%s%.1f %.1f", first ? "M" : "L", px(&p, s->dose[j]), py(&p, m->mean));
            first = 0;
        }
        fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", PALETTE[0]);
        for (int j = 0; j < s->n; j++) {
            const rp_metric *m = &a->cr[s->conds[j]].m[k];
            ci_bar(&p, s->dose[j], m->mean, m->ci_lo, m->ci_hi, PALETTE[0]);
        }
        if (s->has_trend[w]) {
            char b[160], pp[32], sl[48], rho[48];
            rp_fmt_p(pp, sizeof pp, s->trend[w].p);
            rp_fmt_signed(sl, sizeof sl, s->trend[w].slope, 4);
            rp_fmt_signed(rho, sizeof rho, s->trend[w].rho, 2);
            if (snprintf(b, sizeof b, "trend: slope %s per unit (p = %s), Spearman ρ = %s", sl, pp, rho) >= (int)sizeof b)
                b[sizeof b - 1] = 0;
            rp_svg_text(f, p.L + p.W / 2, p.T + p.H + 48, "middle", "fill=\"#333\" font-size=\"10.5\"", b);
        }
        fputs("</svg>\n", f);
    }
    fputs("</div>\n", f);
}

static const char *const DYN_LABEL[RP_NSTAT] = {"MaxMass (mean over heads of max incoming mass)", "attention entropy (nats)",
                                         "top-5 concentration", "top-1 sink is key 0 (fraction of heads)",
                                         "top-1 sink is a text key (fraction)", "activation max (L2 norm)",
                                         "activation p95 (L2 norm)", "top-1 sink is a word (fraction)",
                                         "top-1 sink is <eos> (fraction)", "top-1 sink is <pad> (fraction)"};
static const char *const DYN_SHORT[RP_NSTAT] = {"MaxMass", "entropy", "top-5 concentration", "index-0 overlap", "text share",
                                         "activation max", "activation p95", "word share", "<eos> share", "<pad> share"};

static void fig_dynamics(FILE *f, const rp_analysis *a) {
    int use_step = 0;
    for (int b = 0; b < a->n_dyn; b++)
        for (int k = 0; k < a->dyn[b].n_steps; k++) use_step |= !isfinite(a->dyn[b].t_frac[k]);
    const int stats[4] = {0, 1, 2, 5};
    fputs("<div class=panels>\n", f);
    int panel = 0;
    for (int q = 0; q < 4; q++) {
        int s = stats[q];
        int any = 0;
        plot p = {.f = f, .L = 64, .T = 28, .W = 340, .H = 190, .x0 = 0, .x1 = 1, .y0 = INFINITY, .y1 = -INFINITY};
        for (int b = 0; b < a->n_dyn; b++)
            for (int k = 0; k < a->dyn[b].n_steps; k++) {
                double v = a->dyn[b].mean[s][k];
                if (!isfinite(v)) continue;
                any = 1;
                p.y0 = fmin(p.y0, v), p.y1 = fmax(p.y1, v);
                if (use_step) p.x1 = fmax(p.x1, a->dyn[b].steps[k]);
            }
        if (!any) continue;
        if (s != 1) p.y0 = fmin(p.y0, 0); /* masses and norms from 0; entropy zoomed */
        rp_svg_open(f, 500, 270, DYN_LABEL[s]);
        char title[128];
        snprintf(title, sizeof title, "(%c) %s", 'a' + panel++, DYN_SHORT[s]);
        plot_axes(&p, title, use_step ? "denoising step" : "t/T (0 = noisiest step)", DYN_SHORT[s]);
        const char *labels[8], *colors[8];
        char lab[8][32];
        int nl = 0;
        for (int b = 0; b < a->n_dyn; b++) {
            const rp_block_dyn *d = &a->dyn[b];
            const char *col = PALETTE[b % 8];
            fputs("<path d=\"", f);
            int first = 1;
            for (int k = 0; k < d->n_steps; k++) {
                double v = d->mean[s][k];
                if (!isfinite(v)) continue;
                fprintf(f, "%s%.1f %.1f", first ? "M" : "L", px(&p, use_step ? d->steps[k] : d->t_frac[k]), py(&p, v));
                first = 0;
            }
            fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s/>\n", col, b >= 8 ? " stroke-dasharray=\"5 3\"" : "");
            if (d->n_steps <= 30)
                for (int k = 0; k < d->n_steps; k++)
                    if (isfinite(d->mean[s][k]))
                        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.2\" fill=\"%s\"/>\n",
                                px(&p, use_step ? d->steps[k] : d->t_frac[k]), py(&p, d->mean[s][k]), col);
            if (nl < 8) {
                char sl[48];
                if (d->site >= 0) snprintf(lab[nl], sizeof lab[nl], "%s", rp_site_label(sl, sizeof sl, d->block, d->site, 1));
                else snprintf(lab[nl], sizeof lab[nl], "block %d", d->block);
                labels[nl] = lab[nl], colors[nl] = col, nl++;
            }
        }
        legend(f, p.L + p.W + 12, p.T + 8, labels, colors, nl, 0);
        fputs("</svg>\n", f);
    }
    fputs("</div>\n", f);
}

static void fig_locality(FILE *f, const rp_analysis *a) {
    fputs("<div class=panels>\n", f);
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        if (!d->n_keys) continue;
        long mx = 1;
        for (int i = 0; i < d->n_bins; i++) mx = d->bins[i] > mx ? d->bins[i] : mx;
        plot p = {.f = f, .L = 56, .T = 28, .W = 280, .H = 140, .x0 = d->bin_lo, .x1 = d->bin_lo + (double)d->n_bins * d->bin_w,
                  .y0 = 0, .y1 = (double)mx / d->n_keys};
        p.xstep = rp_nice_range(&(double){p.x0}, &(double){p.x1}, 5); /* ticks only; the window stays exact */
        rp_svg_open(f, 360, 230, "Histogram of top-1 sink key indices");
        char title[96];
        char sl[48];
        if (d->site >= 0) snprintf(title, sizeof title, "%s: top-1 key index", rp_site_label(sl, sizeof sl, d->block, d->site, 1));
        else snprintf(title, sizeof title, "block %d: top-1 key index", d->block);
        plot_axes(&p, title, "key index (image tokens first, then text)", "share");
        double bw = p.W / d->n_bins;
        for (int i = 0; i < d->n_bins; i++) {
            if (!d->bins[i]) continue;
            double x = px(&p, d->bin_lo + (double)i * d->bin_w), y = py(&p, (double)d->bins[i] / d->n_keys);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x + 0.5, y,
                    bw > 2 ? bw - 1 : bw, py(&p, 0) - y, PALETTE[b % 8]);
        }
        snprintf(title, sizeof title, "keys %d–%d hold %.1f%% of the top-1 sinks", d->bin_lo, d->bin_lo + d->n_bins * d->bin_w - 1,
                 100.0 * d->n_in_window / d->n_keys);
        rp_svg_text(f, p.L + p.W / 2, p.T + p.H + 46, "middle", "fill=\"#333\" font-size=\"10.5\"", title);
        fputs("</svg>\n", f);
    }
    fputs("</div>\n", f);
}

/* ---- qualitative panel ---- */

/* The PNG as base64: small images as they are, large ones box-filtered to at most 256 px. */
static int embed_png(FILE *f, const char *exp_dir, const char *out_dir, const char *rel, int *disp_w) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", exp_dir, rel);
    int w, h;
    uint8_t *rgb = NULL;
    if (png_read_rgb(path, &w, &h, &rgb) < 0) {
        ss_err_clear();
        return -1;
    }
    char src[4400];
    snprintf(src, sizeof src, "%s", path);
    int fac = 1;
    while (w / fac > 256 || h / fac > 256) fac++;
    int thumb = fac > 1;
    if (thumb) {
        int tw = w / fac, th = h / fac;
        uint8_t *t = malloc((size_t)tw * th * 3);
        if (!t) {
            free(rgb);
            return -1;
        }
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++)
                for (int ch = 0; ch < 3; ch++) {
                    unsigned s = 0;
                    for (int dy = 0; dy < fac; dy++)
                        for (int dx = 0; dx < fac; dx++) s += rgb[((size_t)(y * fac + dy) * w + (x * fac + dx)) * 3 + ch];
                    t[((size_t)y * tw + x) * 3 + ch] = (uint8_t)((s + (unsigned)(fac * fac) / 2) / (unsigned)(fac * fac));
                }
        /* a unique scratch name: concurrent reports of one folder must not share it */
        int rc = ss_mktemp_in(out_dir, "thumb", src, sizeof src);
        if (rc == 0 && (rc = png_write_rgb(src, tw, th, t, NULL, 0)) < 0) unlink(src);
        free(t);
        if (rc < 0) {
            free(rgb);
            ss_err_clear();
            return -1;
        }
        w = tw;
    }
    free(rgb);
    FILE *in = fopen(src, "rb");
    if (!in) {
        if (thumb) unlink(src);
        return -1;
    }
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *buf = n > 0 ? malloc((size_t)n) : NULL;
    int ok = buf && fread(buf, 1, (size_t)n, in) == (size_t)n;
    fclose(in);
    if (thumb) unlink(src);
    if (ok) {
        fputs("data:image/png;base64,", f);
        b64(f, buf, (size_t)n);
    }
    free(buf);
    *disp_w = w;
    return ok ? 0 : -1;
}

static int image_ok(const rp_record *r) { return r->image && r->img_state == RP_IMG_OK; }

static void fig_qualitative(FILE *f, const rp_analysis *a, const char *out_dir) {
    const rp_exp *e = a->e;
    int cols[4] = {0}, nc = 1;
    if (a->n_dd) cols[nc++] = a->dd[0].sink, cols[nc++] = a->dd[0].rand;
    else
        for (int c = 1; c < e->n_conds && nc < 3; c++) cols[nc++] = c;
    if (nc < 2 || !e->cond_count[0]) {
        fputs("<p class=muted>No images to compare.</p>\n", f);
        return;
    }
    /* rows: the first complete (prompt, seed) of each tag, then further prompts, up to 6 */
    int rows[6], nr = 0;
    const int b0 = e->cond_first[0], b1 = b0 + e->cond_count[0];
    for (int pass = 0; pass < 2 && nr < 6; pass++)
        for (int t = pass ? -1 : 0; t < (pass ? 0 : e->n_tags) && nr < 6; t++)
            for (int i = b0; i < b1 && nr < 6; i++) {
                const rp_record *r = &e->recs[i];
                if ((!pass && r->tag != t) || !r->image) continue;
                int dup = 0;
                for (int j = 0; j < nr && !dup; j++) dup = e->recs[rows[j]].prompt == r->prompt;
                if (dup) continue;
                /* only images that passed the check (rp_verify_images) */
                int full = image_ok(r);
                for (int c = 1; c < nc && full; c++) {
                    int k = rp_find(e, cols[c], r->prompt, r->seed);
                    full = k >= 0 && image_ok(&e->recs[k]);
                }
                if (!full) continue;
                rows[nr++] = i;
                if (!pass) break; /* one per tag in the first pass */
            }
    if (!nr) {
        fputs("<p class=muted>No (prompt, seed) has images for all the compared conditions yet.</p>\n", f);
        return;
    }
    fputs("<table class=qual><thead><tr><th class=l>prompt (seed)</th>", f);
    for (int c = 0; c < nc; c++) {
        fputs("<th>", f);
        rp_html_esc(f, e->conds[cols[c]].name);
        fputs("<br><span class=muted>", f);
        rp_html_esc(f, e->conds[cols[c]].desc);
        fputs("</span></th>", f);
    }
    fputs("</tr></thead><tbody>\n", f);
    for (int r = 0; r < nr; r++) {
        const rp_record *base = &e->recs[rows[r]];
        fputs("<tr><td class=l style=\"max-width:220px;white-space:normal\">", f);
        rp_html_esc(f, base->prompt_text ? base->prompt_text : "");
        fprintf(f, "<br><span class=muted>#%d, seed %" PRIu64, base->prompt, base->seed);
        if (base->tag >= 0) {
            fputs(", ", f);
            rp_html_esc(f, e->tags[base->tag]);
        }
        fputs("</span></td>", f);
        for (int c = 0; c < nc; c++) {
            const rp_record *x = c ? &e->recs[rp_find(e, cols[c], base->prompt, base->seed)] : base;
            fputs("<td><img alt=\"", f);
            rp_html_esc(f, e->conds[cols[c]].name);
            fputs("\" src=\"", f);
            int dw = 0;
            if (embed_png(f, a->o->exp_dir, out_dir, x->image, &dw) < 0) {
                fputs("\" class=missing>", f);
            } else {
                fprintf(f, "\"%s>", dw < 144 ? " class=px" : "");
            }
            fputs("<span class=muted>", f);
            if (x->has_gv) fprintf(f, "GenEval %s", x->gv >= 0.5 ? "✓" : "✗");
            if (c && isfinite(x->ssim)) fprintf(f, " · 1−SSIM %.3f", 1 - x->ssim);
            fputs("</span></td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

/* ---- tables ---- */

static void th(FILE *f, const char *s, int left) { fprintf(f, "<th%s>%s</th>", left ? " class=l" : "", s); }

static void cond_cell(FILE *f, const rp_exp *e, int c) {
    fputs("<td class=l><b>", f);
    rp_html_esc(f, e->conds[c].name);
    fputs("</b><br><span class=muted>", f);
    rp_html_esc(f, e->conds[c].desc);
    fputs("</span></td>", f);
}

static void table_key(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    fprintf(f, "<table><caption><b>Table 1.</b> Paired effects against the baseline <i>%s</i> (same prompt and seed). "
               "Alignment = GenEval accuracy; Δ with 95%% percentile bootstrap CI (%d resamples); p: paired t-test; Holm "
               "across the %d conditions; equivalence: TOST within ±%g at α = 0.05; 1−SSIM against the paired baseline image; "
               "ΔΔ = 1−SSIM(sink) − 1−SSIM(random control), one-sided p (H1: sink &gt; random).</caption>\n<thead><tr>",
            e->conds[0].name, a->o->bootstrap, e->n_conds - 1, a->o->margin);
    th(f, "condition", 1), th(f, "pairs", 0), th(f, "accuracy<br>base → cond", 0), th(f, "Δ alignment [95% CI]", 0),
        th(f, "p", 0), th(f, "Holm p", 0), th(f, "equivalence<br>(TOST p)", 0), th(f, "1−SSIM [95% CI]", 0),
        th(f, "ΔΔ 1−SSIM vs random<br>[95% CI]", 0), th(f, "p", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int c = 1; c < e->n_conds; c++) {
        const rp_cond_res *r = &a->cr[c];
        const rp_metric *g = &r->m[M_GENEVAL], *s = &r->m[M_SHIFT];
        fputs("<tr>", f);
        cond_cell(f, e, c);
        fprintf(f, "<td>%d", r->n_pairs);
        if (r->n_no_baseline + r->n_not_run)
            fprintf(f, " <span class=muted title=\"skipped: %d without baseline, %d not run\">(" RP_MINUS "%d)</span>", r->n_no_baseline,
                    r->n_not_run, r->n_no_baseline + r->n_not_run);
        fputs("</td><td>", f);
        if (isnan(g->base_mean)) fputs("–", f);
        else fprintf(f, "%.3f → %.3f", g->base_mean, g->cond_mean);
        fprintf(f, "</td><td%s>", !isnan(g->ci_lo) && (g->ci_lo > 0 || g->ci_hi < 0) ? " class=sig" : "");
        put_ci(f, g->mean, g->ci_lo, g->ci_hi, 3, 1);
        fputs("</td><td>", f);
        put_p_why(f, g->p, g->why);
        fputs("</td><td>", f);
        put_p(f, g->p_holm);
        if (g->has_tost) {
            fprintf(f, "</td><td class=\"%s\">%s<br><span class=muted>TOST p = ", g->tost.equivalent ? "eq" : !strcmp(g->verdict, "different") ? "sig" : "",
                    g->verdict);
            put_p(f, g->tost.p);
            fputs("</span>", f);
        } else {
            fprintf(f, "</td><td>%s", g->verdict);
            if (g->why[0]) {
                fputs("<br><span class=why>", f);
                rp_html_esc(f, g->why);
                fputs("</span>", f);
            }
        }
        fputs("</td><td>", f);
        put_ci(f, s->mean, s->ci_lo, s->ci_hi, 4, 0);
        fputs("</td>", f);
        int found = 0;
        for (int i = 0; i < a->n_dd; i++)
            if (a->dd[i].sink == c && a->dd[i].shift.ok) {
                const rp_dd_metric *x = &a->dd[i].shift;
                fputs("<td>", f);
                put_ci(f, x->dd.mean, x->dd.ci_lo, x->dd.ci_hi, 4, 1);
                fputs("<br><span class=muted>vs ", f);
                rp_html_esc(f, e->conds[a->dd[i].rand].name);
                fputs("</span></td><td>", f);
                put_p_why(f, x->p_one, x->why);
                fputs("</td>", f);
                found = 1;
            }
        if (!found) fputs("<td>–</td><td>–</td>", f);
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

/* FID_shift [CI] and N cells */
static void fid_cells(FILE *f, const rp_metric *m) {
    fputs("<td>", f);
    if (m->identical) fputs("0 <span class=muted>(identical features)</span>", f);
    else put_ci(f, m->mean, m->ci_lo, m->ci_hi, 1, 0);
    if (isnan(m->mean) && m->why[0]) {
        fputs("<br><span class=why>", f);
        rp_html_esc(f, m->why);
        fputs("</span>", f);
    }
    fprintf(f, "</td><td>%d</td>", m->n);
}

/* Only for experiments whose records have clip_t, lpips or features (run --metrics). */
static void table_learned(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    const int has_c = rp_metric_present(e, M_CLIP_T), has_l = rp_metric_present(e, M_LPIPS), has_f = rp_metric_present(e, M_FID);
    if (!has_c && !has_l && !has_f) return;
    fprintf(f, "<table><caption><b>Table 1b.</b> Learned metrics (<code>run --metrics</code>). ΔCLIP-T = CLIP-T(condition) − "
               "CLIP-T(baseline) per pair (raw cosine, open_clip transform), 95%% bootstrap CI, paired t-test, Holm; "
               "equivalence: TOST within ±%g at α = 0.05. LPIPS (alex v0.1) against the paired baseline image; ΔΔ = "
               "LPIPS(sink) − LPIPS(random control), one-sided p (H1: sink &gt; random).",
            a->o->margin_clip_t);
    if (has_f) {
        fputs(" FID_shift: Fréchet distance of the condition's images to their paired baseline images on <b>", f);
        rp_html_esc(f, e->fid_mode);
        fprintf(f, "</b> Inception pool3 features, N pairs (N &lt; 2048: rank-deficient covariances; FID grows as N shrinks), "
                   "95%% percentile bootstrap CI over pairs (%d resamples); 1e-6·I added only if the first square root is not "
                   "finite. Calibration rows (no intervention) show the noise floor:", a->o->fid_bootstrap);
        for (int i = 0; i < a->n_fid_cal; i++) {
            fprintf(f, " <i>%s</i>: ", a->fid_cal[i].label);
            rp_html_esc(f, a->fid_cal[i].definition);
            fputc('.', f);
        }
    }
    fputs("</caption>\n<thead><tr>", f);
    th(f, "condition", 1), th(f, "CLIP-T<br>base → cond", 0), th(f, "ΔCLIP-T [95% CI]", 0), th(f, "p", 0), th(f, "Holm p", 0),
        th(f, "equivalence<br>(TOST p)", 0), th(f, "LPIPS [95% CI]", 0), th(f, "ΔΔ LPIPS vs random<br>[95% CI]", 0),
        th(f, "p", 0);
    if (has_f) th(f, "FID_shift [95% CI]", 0), th(f, "N", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int c = 1; c < e->n_conds; c++) {
        const rp_metric *g = &a->cr[c].m[M_CLIP_T], *s = &a->cr[c].m[M_LPIPS];
        fputs("<tr>", f);
        cond_cell(f, e, c);
        if (!has_c) {
            fputs("<td>–</td><td>–</td><td>–</td><td>–</td><td>–</td>", f);
        } else {
            fputs("<td>", f);
            if (isnan(g->base_mean)) fputs("–", f);
            else fprintf(f, "%.4f → %.4f", g->base_mean, g->cond_mean);
            fprintf(f, "</td><td%s>", !isnan(g->ci_lo) && (g->ci_lo > 0 || g->ci_hi < 0) ? " class=sig" : "");
            put_ci(f, g->mean, g->ci_lo, g->ci_hi, 4, 1);
            fputs("</td><td>", f);
            put_p_why(f, g->p, g->why);
            fputs("</td><td>", f);
            put_p(f, g->p_holm);
            if (g->has_tost) {
                fprintf(f, "</td><td class=\"%s\">%s<br><span class=muted>TOST p = ",
                        g->tost.equivalent ? "eq" : !strcmp(g->verdict, "different") ? "sig" : "", g->verdict);
                put_p(f, g->tost.p);
                fputs("</span></td>", f);
            } else {
                fprintf(f, "</td><td>%s", g->verdict);
                if (g->why[0]) {
                    fputs("<br><span class=why>", f);
                    rp_html_esc(f, g->why);
                    fputs("</span>", f);
                }
                fputs("</td>", f);
            }
        }
        fputs("<td>", f);
        if (has_l) put_ci(f, s->mean, s->ci_lo, s->ci_hi, 4, 0);
        else fputs("–", f);
        fputs("</td>", f);
        int found = 0;
        for (int i = 0; i < a->n_dd && has_l; i++)
            if (a->dd[i].sink == c && a->dd[i].lpips.ok) {
                const rp_dd_metric *x = &a->dd[i].lpips;
                fprintf(f, "<td%s>", x->dd.ci_lo > 0 ? " class=sig" : "");
                put_ci(f, x->dd.mean, x->dd.ci_lo, x->dd.ci_hi, 4, 1);
                fputs("<br><span class=muted>vs ", f);
                rp_html_esc(f, e->conds[a->dd[i].rand].name);
                fputs("</span></td><td>", f);
                put_p_why(f, x->p_one, x->why);
                fputs("</td>", f);
                found = 1;
            }
        if (!found) fputs("<td>–</td><td>–</td>", f);
        if (has_f) fid_cells(f, &a->cr[c].m[M_FID]);
        fputs("</tr>\n", f);
    }
    for (int i = 0; i < a->n_fid_cal; i++) {
        fprintf(f, "<tr><td class=l>calibration: %s</td><td colspan=8 class=muted>baseline vs baseline, no intervention</td>",
                a->fid_cal[i].label);
        fid_cells(f, &a->fid_cal[i].m);
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void table_dd(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    fputs("<table><caption><b>Table 3.</b> Sink removal against its equal-budget random control, per (prompt, seed) present in "
          "the baseline, the sink condition and the control. ΔΔ = sink − random; 1−SSIM: one-sided H1 ΔΔ &gt; 0 (sink "
          "removal moves the image more); alignment: ΔΔ of the paired accuracy deltas, one-sided H1 ΔΔ &lt; 0 (sink removal "
          "loses more accuracy).</caption>\n<thead><tr>",
          f);
    th(f, "sink", 1), th(f, "random control", 1), th(f, "n", 0), th(f, "1−SSIM sink", 0), th(f, "1−SSIM random", 0),
        th(f, "ratio", 0), th(f, "ΔΔ 1−SSIM [95% CI]", 0), th(f, "p (&gt;)", 0), th(f, "ΔΔ alignment [95% CI]", 0),
        th(f, "p (&lt;)", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int i = 0; i < a->n_dd; i++) {
        const rp_dd *d = &a->dd[i];
        fputs("<tr><td class=l><b>", f);
        rp_html_esc(f, e->conds[d->sink].name);
        fputs("</b></td><td class=l>", f);
        rp_html_esc(f, e->conds[d->rand].name);
        fprintf(f, "</td><td>%d</td>", d->n);
        if (d->shift.ok) {
            fprintf(f, "<td>%.4f</td><td>%.4f</td><td>", d->shift.mean_sink, d->shift.mean_rand);
            if (d->shift.mean_rand > 0) fprintf(f, "%.1f×", d->shift.mean_sink / d->shift.mean_rand);
            else fputs("–", f);
            fprintf(f, "</td><td%s>", d->shift.dd.ci_lo > 0 ? " class=sig" : "");
            put_ci(f, d->shift.dd.mean, d->shift.dd.ci_lo, d->shift.dd.ci_hi, 4, 1);
            fputs("</td><td>", f);
            put_p_why(f, d->shift.p_one, d->shift.why);
            fputs("</td>", f);
        } else {
            fputs("<td>–</td><td>–</td><td>–</td><td>–</td><td>", f);
            put_p_why(f, NAN, d->shift.why);
            fputs("</td>", f);
        }
        if (d->align.ok) {
            fprintf(f, "<td%s>", d->align.dd.ci_hi < 0 ? " class=sig" : "");
            put_ci(f, d->align.dd.mean, d->align.dd.ci_lo, d->align.dd.ci_hi, 3, 1);
            fputs("</td><td>", f);
            put_p_why(f, d->align.p_one, d->align.why);
            fputs("</td>", f);
        } else {
            fputs("<td>–</td><td>", f);
            put_p_why(f, NAN, d->align.why);
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void table_secondary(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    fputs("<table><caption><b>Table 2.</b> Image similarity to the paired baseline image (mean with 95% bootstrap CI). "
          "PSNR averages the finite values; identical images (infinite PSNR) are counted separately. p: one-sample t-test "
          "of 1−SSIM against 0, Holm-corrected.</caption>\n<thead><tr>",
          f);
    th(f, "condition", 1), th(f, "pairs", 0), th(f, "MSE [95% CI]", 0), th(f, "PSNR dB [95% CI]", 0), th(f, "identical", 0),
        th(f, "SSIM [95% CI]", 0), th(f, "1−SSIM Holm p", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int c = 1; c < e->n_conds; c++) {
        const rp_cond_res *r = &a->cr[c];
        fputs("<tr><td class=l><b>", f);
        rp_html_esc(f, e->conds[c].name);
        fprintf(f, "</b></td><td>%d</td><td>", r->n_pairs);
        const rp_metric *m = &r->m[M_MSE];
        if (isnan(m->mean)) fputs("–", f);
        else fprintf(f, "%.3g <span class=ci>[%.3g, %.3g]</span>", m->mean, m->ci_lo, m->ci_hi);
        fputs("</td><td>", f);
        put_ci(f, r->m[M_PSNR].mean, r->m[M_PSNR].ci_lo, r->m[M_PSNR].ci_hi, 2, 0);
        fprintf(f, "</td><td>%d</td><td>", r->m[M_PSNR].n_inf);
        put_ci(f, r->m[M_SSIM].mean, r->m[M_SSIM].ci_lo, r->m[M_SSIM].ci_hi, 4, 0);
        fputs("</td><td>", f);
        put_p_why(f, r->m[M_SHIFT].p_holm, r->m[M_SHIFT].why);
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void table_sweeps(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    fputs("<table><caption><b>Table 4.</b> Dose trends: OLS slope of the per-pair outcome on the dose (t-test p) and "
          "Spearman's ρ, over all pairs of the sweep's conditions.</caption>\n<thead><tr>",
          f);
    th(f, "sweep", 1), th(f, "conditions (dose)", 1), th(f, "outcome", 1), th(f, "n", 0), th(f, "slope ± se", 0), th(f, "p", 0),
        th(f, "Spearman ρ", 0), th(f, "p", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int i = 0; i < a->n_sw; i++) {
        const rp_sweep *s = &a->sw[i];
        for (int w = 0; w < 2; w++) {
            fprintf(f, "<tr><td class=l>%d (%s)</td><td class=l>", i + 1, s->param ? "k" : "η");
            for (int j = 0; j < s->n; j++) {
                if (j) fputs(", ", f);
                rp_html_esc(f, e->conds[s->conds[j]].name);
                fprintf(f, " (%g)", s->dose[j]);
            }
            fprintf(f, "</td><td class=l>%s</td>", w ? "1−SSIM" : "Δ alignment");
            if (s->has_trend[w]) {
                const stats_trend *t = &s->trend[w];
                fprintf(f, "<td>%d</td><td>", t->n);
                put_signed(f, t->slope, 4);
                fprintf(f, " ± %.4f</td><td>", t->slope_se);
                put_p_why(f, t->p, s->why[w]);
                fputs("</td><td>", f);
                put_signed(f, t->rho, 3);
                fputs("</td><td>", f);
                put_p_why(f, t->rho_p, s->rho_why[w]);
                fputs("</td>", f);
            } else {
                fprintf(f, "<td>%d</td><td>–</td><td>", s->n_points[w]);
                put_p_why(f, NAN, s->why[w]);
                fputs("</td><td>–</td><td>–</td>", f);
            }
            fputs("</tr>\n", f);
        }
    }
    fputs("</tbody></table>\n", f);
}

static void table_tags(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    fputs("<div class=scroll><table class=tags><caption><b>Table 5.</b> Per GenEval tag: baseline accuracy (n images), then per "
          "condition Δ alignment with 95% bootstrap CI (uncorrected) and, below, the mean 1−SSIM. Shaded: CI excludes 0."
          "</caption>\n<thead><tr>",
          f);
    th(f, "condition", 1);
    for (int t = 0; t < e->n_tags; t++) {
        fputs("<th>", f);
        rp_html_esc(f, e->tags[t]);
        fputs("</th>", f);
    }
    fputs("</tr></thead><tbody>\n<tr><td class=l><b>", f);
    rp_html_esc(f, e->conds[0].name);
    fputs("</b> <span class=muted>accuracy</span></td>", f);
    for (int t = 0; t < e->n_tags; t++) {
        const rp_tag_cell *b = &a->tags[t];
        if (isnan(b->mean)) fprintf(f, "<td>– <span class=muted>(%d)</span></td>", b->n);
        else fprintf(f, "<td>%.3f <span class=muted>(%d)</span></td>", b->mean, b->n);
    }
    fputs("</tr>\n", f);
    for (int c = 1; c < e->n_conds; c++) {
        fputs("<tr><td class=l><b>", f);
        rp_html_esc(f, e->conds[c].name);
        fputs("</b></td>", f);
        for (int t = 0; t < e->n_tags; t++) {
            const rp_tag_cell *x = &a->tags[c * e->n_tags + t];
            int sig = !isnan(x->ci_lo) && (x->ci_lo > 0 || x->ci_hi < 0);
            fprintf(f, "<td%s>", sig ? " class=sig" : "");
            put_ci(f, x->mean, x->ci_lo, x->ci_hi, 3, 1);
            if (x->n < 2 && x->why[0]) {
                fputs("<br><span class=why>", f);
                rp_html_esc(f, x->why);
                fputs("</span>", f);
            }
            if (!isnan(x->shift)) fprintf(f, "<br><span class=muted>1−SSIM %.3f</span>", x->shift);
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table></div>\n", f);
}

static void table_dynamics(FILE *f, const rp_analysis *a) {
    fprintf(f, "<table><caption><b>Table 6.</b> Attention concentration of the baseline per probed block (%d images; means "
               "over images, heads and steps). Peak: the step with the largest mean MaxMass. Index-0: share of heads whose "
               "top-1 sink is key 0; text: share whose top-1 sink is a text token, split into words, &lt;eos&gt; and &lt;pad&gt; "
               "when the records say which.</caption>\n<thead><tr>",
            a->n_dyn_images);
    th(f, "block", 1), th(f, "MaxMass", 0), th(f, "peak MaxMass (t/T)", 0), th(f, "entropy", 0), th(f, "top-5", 0),
        th(f, "index-0 overlap", 0), th(f, "text share", 0), th(f, "word", 0), th(f, "&lt;eos&gt;", 0), th(f, "&lt;pad&gt;", 0),
        th(f, "act. max", 0), th(f, "act. p95", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        int pk = -1;
        for (int k = 0; k < d->n_steps; k++)
            if (isfinite(d->mean[0][k]) && (pk < 0 || d->mean[0][k] > d->mean[0][pk])) pk = k;
        char sl[48];
        fprintf(f, "<tr><td class=l>%s</td><td>", rp_site_label(sl, sizeof sl, d->block, d->site, rp_has_sites(a)));
        put_pct(f, d->all_mean[0], 2);
        fputs("</td><td>", f);
        if (pk >= 0) {
            put_pct(f, d->mean[0][pk], 2);
            fprintf(f, " (%.2f)", d->t_frac[pk]);
        } else {
            fputs("–", f);
        }
        fprintf(f, "</td><td>%.3f</td><td>%.3f</td><td>", d->all_mean[1], d->all_mean[2]);
        put_pct(f, d->all_mean[3], 2);
        fputs("</td><td>", f);
        put_pct(f, d->all_mean[4], 1);
        for (int s = 7; s < 10; s++) fputs("</td><td>", f), put_pct(f, d->all_mean[s], 1);
        fprintf(f, "</td><td>%.3g</td><td>%.3g</td></tr>\n", d->all_mean[5], d->all_mean[6]);
    }
    fputs("</tbody></table>\n", f);
}

static void table_locality(FILE *f, const rp_analysis *a) {
    fputs("<table><caption><b>Table 7.</b> Position locality of the top-1 sinks (one key per head, step and image; keys in "
          "the model's order, image tokens first, then text).</caption>\n<thead><tr>",
          f);
    th(f, "block", 1), th(f, "n", 0), th(f, "range", 0), th(f, "5–95th pct", 0), th(f, "median", 0), th(f, "distinct keys", 0),
        th(f, "most frequent keys (share)", 1);
    fputs("</tr></thead><tbody>\n", f);
    for (int b = 0; b < a->n_dyn; b++) {
        const rp_block_dyn *d = &a->dyn[b];
        if (!d->n_keys) continue;
        char sl[48];
        fprintf(f, "<tr><td class=l>%s</td><td>%ld</td><td>%d–%d</td><td>%g–%g</td><td>%g</td><td>%d</td><td class=l>",
                rp_site_label(sl, sizeof sl, d->block, d->site, rp_has_sites(a)), d->n_keys, d->key_min, d->key_max, d->key_p05, d->key_p95, d->key_p50, d->n_distinct);
        for (int q = 0; q < d->n_top; q++)
            fprintf(f, "%s%d <span class=muted>(%.1f%%)</span>", q ? ", " : "", d->top_key[q], 100.0 * d->top_count[q] / d->n_keys);
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void table_verification(FILE *f, const rp_analysis *a) {
    const rp_exp *e = a->e;
    fputs("<table><caption><b>Table 8.</b> Intervention verification per condition and intervened block: incoming mass of the "
          "selected keys before and after the intervention (mean over heads, steps inside the window and images), reduction "
          "factor before/after (“removed”: after = 0 in every entry; value-path interventions keep the attention mass "
          "by design, factor 1×), and the keys selected per entry over all heads (distinct keys in parentheses).</caption>\n<thead><tr>",
          f);
    th(f, "condition", 1), th(f, "block", 0), th(f, "entries", 0), th(f, "mass before", 0), th(f, "mass after", 0),
        th(f, "max after", 0), th(f, "reduction", 0), th(f, "keys / entry", 0);
    fputs("</tr></thead><tbody>\n", f);
    for (int i = 0; i < a->n_ver; i++)
        for (int b = 0; b < a->ver[i].n_rows; b++) {
            const rp_verif_row *r = &a->ver[i].rows[b];
            fputs("<tr><td class=l>", f);
            if (b == 0) {
                fputs("<b>", f);
                rp_html_esc(f, e->conds[a->ver[i].cond].name);
                fputs("</b>", f);
            }
            char sl[48];
            fprintf(f, "</td><td>%s</td><td>%d</td><td>", rp_site_label(sl, sizeof sl, r->block, r->site, rp_has_sites(a)), r->n);
            put_pct(f, r->before, 3);
            fputs("</td><td>", f);
            if (r->after == 0) fputs("0", f);
            else if (r->after < 1e-5) fprintf(f, "%.2e", r->after);
            else put_pct(f, r->after, 4);
            fputs("</td><td>", f);
            if (r->max_after == 0) fputs("0", f);
            else put_pct(f, r->max_after, 4);
            fputs("</td><td>", f);
            put_factor(f, r->n && r->n_zero == r->n ? INFINITY : r->factor);
            fprintf(f, "</td><td>%.1f (%.1f)</td></tr>\n", r->keys, r->distinct);
        }
    fputs("</tbody></table>\n", f);
}

static const char CSS[] =
    "body{font:14px/1.45 'Helvetica Neue',Helvetica,Arial,sans-serif;color:#1d1d1d;max-width:1200px;margin:24px auto;"
    "padding:0 24px;background:#fff}\n"
    "h1{font-size:23px;margin:0 0 4px}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin:34px 0 8px}\n"
    "h3{font-size:14px;margin:18px 0 4px}p{max-width:980px}\n"
    "table{border-collapse:collapse;font-size:12.5px;margin:6px 0 14px;border-top:1.5px solid #222;border-bottom:1.5px solid "
    "#222}\n"
    "caption{caption-side:top;text-align:left;font-size:12.5px;color:#333;padding:0 0 6px;max-width:1100px}\n"
    "th,td{padding:3px 9px;text-align:right;white-space:nowrap;vertical-align:top}th{border-bottom:1px solid #222;"
    "font-weight:600;vertical-align:bottom}\n"
    "tbody tr:nth-child(even){background:#f7f7f7}.l{text-align:left}.muted{color:#777;font-size:11.5px}.ci{color:#555}\n"
    "td.sig{background:#fbe3d6}td.eq{background:#dff1e3}.scroll{overflow-x:auto}\n"
    "figure{margin:10px 0 18px}figcaption{font-size:12.5px;color:#333;max-width:1100px;margin-top:4px}\n"
    ".panels{display:flex;flex-wrap:wrap;gap:6px 14px}.meta{color:#444;font-size:13px}\n"
    "table.qual img{width:144px;height:auto;display:block;margin:0 auto 2px;border:1px solid #ccc}"
    "table.qual img.px{image-rendering:pixelated}table.qual td,table.qual th{text-align:center;vertical-align:middle}"
    "table.qual td.l,table.qual th.l{text-align:left}\n"
    "img.missing{width:144px;height:40px;border:1px dashed #c33}.why{color:#a33;font-size:11px}.warn{color:#a33}\n"
    "ul.notes{font-size:12.5px;color:#444}code{font-size:12px}table.tags td,table.tags th{padding:3px 6px;font-size:12px}\n";

int rp_write_html(const rp_analysis *a, const char *out_dir) {
    const rp_exp *e = a->e;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return ss_fail(SS_ENOMEM, "out of memory");
    fputs("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n<title>sinkscope report</title>\n<style>\n", f);
    fputs(CSS, f);
    fputs("</style></head><body>\n<h1>Attention-sink interventions: paired report</h1>\n<p class=meta>Model <code>", f);
    rp_html_esc(f, *e->model ? e->model : "?");
    fputs("</code>", f);
    if (*e->model_digest) {
        fputs(" <span class=muted>(", f);
        rp_html_esc(f, e->model_digest);
        fputs(")</span>", f);
    }
    fputs(" · prompts <code>", f);
    rp_html_esc(f, *e->prompts ? e->prompts : "?");
    fputs("</code>", f);
    /* fields experiment.json may lack are left out rather than shown as -1 / nan */
    if (e->n_prompts > 0 && e->seeds_per_prompt > 0) fprintf(f, " · %d prompts × %d seeds", e->n_prompts, e->seeds_per_prompt);
    if (e->steps > 0) fprintf(f, " · %d steps", e->steps);
    if (isfinite(e->cfg)) fprintf(f, " · CFG %g", e->cfg);
    if (e->precision[0]) {
        fputs(" · precision ", f);
        rp_html_esc(f, e->precision);
    }
    fprintf(f, " · %d conditions · %d records used of %d lines", e->n_conds, e->n_recs, e->n_lines);
    if (e->img_flagged)
        fprintf(f, " · <b class=warn>%d of %d images flagged</b> (%d missing, %d wrong size, %d wrong SHA-256, %d other; "
                   "left out of the image metrics and panels, see the notes)",
                e->img_flagged, e->img_checked, e->img_count[RP_IMG_MISSING], e->img_count[RP_IMG_SIZE], e->img_count[RP_IMG_DIGEST],
                e->img_flagged - e->img_count[RP_IMG_MISSING] - e->img_count[RP_IMG_SIZE] - e->img_count[RP_IMG_DIGEST]);
    fputs(" · sinkscope ", f);
    rp_html_esc(f, *e->version ? e->version : "?");
    fputs("</p>\n", f);

    fputs("<h2>1. Effects of each intervention</h2>\n", f);
    if (e->n_conds > 1) {
        table_key(f, a);
        table_learned(f, a);
        fputs("<figure>", f);
        fig_forest(f, a);
        fprintf(f, "<figcaption><b>Figure 1.</b> (a) Paired change in GenEval accuracy per condition with its 95%% bootstrap "
                   "CI; the green band is the equivalence margin ±%g. (b) Perceptual shift 1−SSIM against the paired baseline "
                   "image. Blue: top-k sink removal; orange: random keys; green: other selections.</figcaption></figure>\n",
                a->o->margin);
        table_secondary(f, a);
    } else {
        fputs("<p>Only the baseline has been run.</p>\n", f);
    }

    fputs("<h2>2. Sink-specific shift: sink vs equal-budget random removal</h2>\n", f);
    if (a->n_dd) {
        table_dd(f, a);
        fputs("<figure>", f);
        fig_dd(f, a);
        fputs("<figcaption><b>Figure 2.</b> Mean 1−SSIM to the baseline image when the top-k sinks are removed (blue) and "
              "when the same number of random keys is removed (orange), with 95% bootstrap CIs.</figcaption></figure>\n",
              f);
    } else {
        fputs("<p class=muted>No top-k condition has a matching random control (a <code>select: random</code> condition equal "
              "in every other field).</p>\n",
              f);
    }

    fputs("<h2>3. Dose–response</h2>\n", f);
    if (a->n_sw) {
        table_sweeps(f, a);
        for (int i = 0; i < a->n_sw; i++) {
            const rp_sweep *s = &a->sw[i];
            fprintf(f, "<figure><h3>Sweep %d: %s over ", i + 1, s->param ? "k" : "η");
            for (int j = 0; j < s->n; j++) {
                fputs(j ? ", " : "", f);
                rp_html_esc(f, e->conds[s->conds[j]].name);
                fprintf(f, " (%g)", s->dose[j]);
            }
            fputs("</h3>", f);
            fig_sweep(f, a, s);
            fprintf(f, "<figcaption><b>Figure %d.</b> Mean paired Δ GenEval accuracy and mean 1−SSIM per dose with 95%% "
                       "bootstrap CIs (shaded: equivalence margin; dashed: no change).</figcaption></figure>\n",
                    3 + i);
        }
    } else {
        fputs("<p class=muted>No sweep: no two conditions differ only in η or only in k.</p>\n", f);
    }
    int fig = 3 + a->n_sw;

    fputs("<h2>4. Breakdown by GenEval tag</h2>\n", f);
    if (e->n_tags && e->n_conds > 1) table_tags(f, a);
    else fputs("<p class=muted>No tags in the records.</p>\n", f);

    fputs("<h2>5. Sink dynamics (baseline)</h2>\n", f);
    if (a->n_dyn) {
        table_dynamics(f, a);
        fputs("<figure>", f);
        fig_dynamics(f, a);
        fprintf(f, "<figcaption><b>Figure %d.</b> Attention concentration of the un-intervened baseline per probed block against "
                   "normalized denoising time (means over %d images and the heads): (a) MaxMass, the mean over heads of the largest "
                   "incoming key mass; (b) attention entropy; (c) top-5 concentration; (d) activation magnitude.</figcaption>"
                   "</figure>\n",
                fig++, a->n_dyn_images);
        table_locality(f, a);
        fputs("<figure>", f);
        fig_locality(f, a);
        fprintf(f, "<figcaption><b>Figure %d.</b> Where the top-1 sinks sit: histogram of the top-1 key index per block.</figcaption>"
                   "</figure>\n",
                fig++);
    } else {
        fputs("<p class=muted>The baseline records carry no probe entries.</p>\n", f);
    }

    if (a->spiral && (fig = rp_spiral_write_html(f, a, fig)) < 0) { /* section 5b, only with spiral entries */
        fclose(f);
        free(buf);
        return fig;
    }

    fputs("<h2>6. Intervention verification</h2>\n", f);
    if (a->n_ver) table_verification(f, a);
    else fputs("<p class=muted>No verification entries in the records.</p>\n", f);

    fputs("<h2>7. Qualitative comparison</h2>\n", f);
    fprintf(f, "<figure>");
    fig_qualitative(f, a, out_dir);
    fprintf(f, "<figcaption><b>Figure %d.</b> Same prompt and seed under the baseline, ", fig++);
    if (a->n_dd) {
        fputs("top-k sink removal and the equal-budget random control", f);
    } else {
        fputs("and the first interventions", f);
    }
    fputs(" (one prompt per tag first).</figcaption></figure>\n", f);

    fputs("<h2>Methods and notes</h2>\n<ul class=notes>\n", f);
    fprintf(f, "<li>Pairs: a condition's record and the baseline's record with the same (prompt index, seed); pairs missing "
               "on either side are skipped and counted in the <i>pairs</i> column.</li>\n"
               "<li>Δ alignment: mean of per-pair GenEval correctness (condition − baseline). CIs: percentile bootstrap of the "
               "mean, %d resamples, seed %llu mixed with the analysis name (deterministic). p: paired t-test (two-sided); Holm "
               "across conditions, per metric.</li>\n"
               "<li>Equivalence: TOST at α = 0.05 within ±%g GenEval accuracy (%g = %g percentage points), the smallest change "
               "we treat as practically relevant for a 0/1 accuracy over this prompt set (set with <code>--margin</code>). "
               "Verdict: equivalent (TOST p &lt; 0.05), different (Holm p &lt; 0.05, not equivalent), both, or inconclusive.</li>\n"
               "<li>MSE, PSNR and SSIM are computed by the runner against the paired baseline image; 1−SSIM is the perceptual "
               "shift.</li>\n"
               "<li>Random controls: a <code>select: random</code> condition matches a <code>select: topk</code> condition when "
               "every other field is equal (layers as a set, k, rank_by, keys, queries, path, η, value, α, steps window); the first "
               "in experiment order is used.</li>\n"
               "<li>Sweeps: conditions equal in every field except their name and η (score path) or k; the trend is the OLS "
               "slope over all pairs (t-test) and Spearman's ρ. The baseline is not a dose.</li>\n"
               "<li>Dynamics use the baseline's probe entries (conditional batch element); verification uses each condition's "
               "verification entries.</li>\n"
               "<li>Undefined statistics: a test needs at least 2 values (a trend 3) and a non-zero standard deviation; "
               "otherwise its p, Holm p and verdict are left out (–, <i>no verdict</i>) and the reason is given. "
               "A key recorded twice (an item redone) is taken from its last line.</li>\n",
            a->o->bootstrap, (unsigned long long)a->o->seed, a->o->margin, a->o->margin, 100 * a->o->margin);
    fprintf(f, "<li>Images: %d records checked (%d against their recorded size / SHA-256, %d for existence only, "
               "recorded by older runners); %d flagged.</li>\n",
            e->img_checked, e->img_with_digest, e->img_existence_only, e->img_flagged);
    for (int i = 0; i < e->n_notes; i++) {
        fputs("<li>", f);
        rp_html_esc(f, e->notes[i]);
        fputs("</li>\n", f);
    }
    fputs("</ul>\n<p class=muted>Generated by <code>sinkscope report</code>; numbers in <code>summary.json</code> and the CSV "
          "files beside this page.</p>\n</body></html>\n",
          f);
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? ss_fail(SS_ENOMEM, "out of memory writing report.html") : 0;
    if (rc == 0) {
        char path[4300];
        snprintf(path, sizeof path, "%s/report.html", out_dir);
        rc = rp_write_file(path, buf, len);
    }
    free(buf);
    return rc;
}
