/* report/spiral_svg: section 5b of report.html, the "From a Spiral to a Sink" figures, as inline
 * SVG from a small writer of our own (axes with 1-2-5 or decade ticks, categorical site axes,
 * heat maps with a colour bar, stacked and per-key bars, legends). Key types have one colour in
 * every chart (TYPE_COLOR). Every plotted number is in a spiral_*.csv (report/spiral.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "report/spiral.h"

/* colour-blind-safe (Okabe-Ito) per key type, in ss_tok order: image, text, word, eos, pad, comma, bos, other */
static const char *const TYPE_COLOR[SS_TOK_N] = {"#0072B2", "#8C8C8C", "#009E73", "#D55E00",
                                                 "#CC79A7", "#E69F00", "#56B4E9", "#404040"};
static const char *const SERIES[8] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"};

/* ---- axes ---- */

typedef struct {
    FILE *f;
    double L, T, W, H;
    double y0, y1; /* data range (log10 of it with logy) */
    int logy;
    double ystep;
    int ncat; /* categorical x: ncat bands */
    double x0, x1; /* numeric x */
} plot;

static double py(const plot *p, double y) {
    double v = p->logy ? log10(y) : y;
    return p->T + (1 - (v - p->y0) / (p->y1 - p->y0)) * p->H;
}
static double pxc(const plot *p, int i) { return p->L + (i + 0.5) * p->W / p->ncat; }
static double pxn(const plot *p, double x) { return p->L + (x - p->x0) / (p->x1 - p->x0) * p->W; }
static int y_ok(const plot *p, double y) { return isfinite(y) && (!p->logy || y > 0); }

static void grid_h(const plot *p, double yv, const char *label) {
    double y = py(p, yv);
    fprintf(p->f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", p->L, p->L + p->W, y, y);
    rp_svg_text(p->f, p->L - 5, y + 3.5, "end", "fill=\"#444\"", label);
}

/* The y axis from the data range [lo, hi] (finite; > 0 with logy), the frame, title and labels. */
static void axes(plot *p, double lo, double hi, const char *title, const char *ylabel) {
    FILE *f = p->f;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fcfcfc\"/>\n", p->L, p->T, p->W, p->H);
    char b[48];
    if (p->logy) {
        if (!(lo > 0)) lo = hi > 0 ? hi / 10 : 1;
        if (!(hi > 0)) hi = lo * 10;
        p->y0 = floor(log10(lo) + 1e-9), p->y1 = ceil(log10(hi) - 1e-9);
        if (p->y1 <= p->y0) p->y1 = p->y0 + 1;
        int dec = (int)(p->y1 - p->y0);
        for (int e = (int)p->y0; e <= (int)p->y1; e++)
            for (int m = 1; m < 10; m++) {
                double v = m * pow(10, e);
                if (log10(v) > p->y1 + 1e-9) break;
                if (m != 1 && !(dec <= 2 && (m == 2 || m == 5))) continue;
                if (fabs(v) >= 1e4 || fabs(v) < 1e-3) snprintf(b, sizeof b, "%g", v);
                else snprintf(b, sizeof b, "%.*f", e < 0 ? -e : 0, v);
                grid_h(p, v, b);
            }
    } else {
        p->y0 = lo, p->y1 = hi;
        p->ystep = rp_nice_range(&p->y0, &p->y1, 5);
        for (int i = 0;; i++) {
            double v = p->y0 + i * p->ystep;
            if (v > p->y1 + p->ystep * 1e-6) break;
            rp_tick_label(b, sizeof b, v, p->ystep);
            grid_h(p, v, b);
        }
    }
    fprintf(f, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#333\"/>\n", p->L, p->T, p->T + p->H, p->L + p->W);
    if (title) rp_svg_text(f, p->L, p->T - 9, "start", "font-weight=\"600\" font-size=\"12.5\"", title);
    if (ylabel) {
        fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">", p->L - 46, p->T + p->H / 2);
        rp_html_esc(f, ylabel);
        fputs("</text>\n", f);
    }
}

/* categorical x labels (site names), thinned to fit, rotated when many */
static void x_cats(const plot *p, const char *const *labels, const char *xlabel) {
    double band = p->W / p->ncat;
    int rot = band < 52;
    int every = rot ? (int)ceil(13.0 / band) : 1;
    for (int i = 0; i < p->ncat; i += every) {
        double x = pxc(p, i), y = p->T + p->H + 13;
        if (rot) {
            fprintf(p->f, "<text transform=\"translate(%.1f %.1f) rotate(-50)\" text-anchor=\"end\" fill=\"#444\">", x + 3, y - 4);
            rp_html_esc(p->f, labels[i]);
            fputs("</text>\n", p->f);
        } else {
            rp_svg_text(p->f, x, y, "middle", "fill=\"#444\"", labels[i]);
        }
    }
    if (xlabel) rp_svg_text(p->f, p->L + p->W / 2, p->T + p->H + (rot ? 62 : 30), "middle", NULL, xlabel);
}

static void x_nums(plot *p, const char *xlabel) {
    double lo = p->x0, hi = p->x1;
    double step = rp_nice_range(&lo, &hi, 6);
    char b[48];
    for (int i = 0;; i++) {
        double v = ceil(p->x0 / step - 1e-9) * step + i * step;
        if (v > p->x1 + 1e-9) break;
        double x = pxn(p, v);
        fprintf(p->f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x, x, p->T + p->H, p->T + p->H + 4);
        rp_tick_label(b, sizeof b, v, step);
        rp_svg_text(p->f, x, p->T + p->H + 15, "middle", "fill=\"#444\"", b);
    }
    if (xlabel) rp_svg_text(p->f, p->L + p->W / 2, p->T + p->H + 30, "middle", NULL, xlabel);
}

/* kind: 0 line, 1 dashed line, 2 filled square */
static void legend_item(FILE *f, double x, double y, const char *label, const char *col, int kind) {
    if (kind == 2)
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"11\" height=\"11\" fill=\"%s\"/>\n", x + 2, y - 5.5, col);
    else
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", x, x + 16, y, y,
                col, kind ? " stroke-dasharray=\"5 3\"" : "");
    rp_svg_text(f, x + 21, y + 3.5, "start", NULL, label);
}

/* ---- sites of the chart: the union over the conditions, in model order ---- */

typedef struct {
    int n;
    int block[1024], site[1024];
    char name[1024][48];
    const char *lab[1024];
} sites;

static void site_union(sites *u, const rp_spiral *sp) {
    u->n = 0;
    for (int c = 0; c < sp->n_conds; c++)
        for (int i = 0; i < sp->conds[c].n_sites; i++) {
            const rps_site *s = &sp->conds[c].sites[i];
            int at = 0, dup = 0;
            while (at < u->n && (u->block[at] < s->block || (u->block[at] == s->block && u->site[at] < s->site))) at++;
            dup = at < u->n && u->block[at] == s->block && u->site[at] == s->site;
            if (dup || u->n == 1024) continue;
            memmove(&u->block[at + 1], &u->block[at], (size_t)(u->n - at) * sizeof u->block[0]);
            memmove(&u->site[at + 1], &u->site[at], (size_t)(u->n - at) * sizeof u->site[0]);
            u->block[at] = s->block, u->site[at] = s->site;
            u->n++;
        }
    for (int i = 0; i < u->n; i++) u->lab[i] = rps_site_name(u->name[i], sizeof u->name[i], u->site[i]);
}

static const rps_site *find_site(const rps_cond *c, int block, int site) {
    for (int i = 0; i < c->n_sites; i++)
        if (c->sites[i].block == block && c->sites[i].site == site) return &c->sites[i];
    return NULL;
}

/* the panels of one figure: letters in drawing order, and the caption's pieces */
typedef struct {
    int n;
    char cap[3000];
    size_t len;
} panels;

/* "(c) title" for the next panel; its caption piece is added by panel_done */
static const char *panel_title(const panels *pn, char *buf, size_t cap, const char *title) {
    snprintf(buf, cap, "(%c) %s", 'a' + pn->n, title);
    return buf;
}
static void panel_done(panels *pn, const char *piece) {
    size_t n = pn->len;
    n += (size_t)snprintf(pn->cap + n, n < sizeof pn->cap ? sizeof pn->cap - n : 0, "%s(%c) %s", pn->n ? "; " : "", 'a' + pn->n, piece);
    pn->len = n < sizeof pn->cap ? n : sizeof pn->cap - 1;
    pn->n++;
}

/* ---- depth charts: metric(s) at the last step over the sites ---- */

typedef struct {
    int metric, alt;   /* alt: a second metric plotted in the same series where the first is absent (qk / qk_post), or -1 */
    int cond;          /* index into sp->conds */
    const char *label;
    const char *color;
    int dashed;
} series;

static const rps_stat *series_stat(const rps_site *s, const series *q) {
    if (!s) return NULL;
    if (s->m[q->metric].n) return &s->m[q->metric];
    if (q->alt >= 0 && s->m[q->alt].n) return &s->m[q->alt];
    return NULL;
}

/* logy: 1 log scale, 2 linear from 0 to at least 1 (shares), 0 linear */
static int depth_chart(FILE *f, panels *pn, const rp_spiral *sp, const sites *u, const series *sr, int ns, int logy, const char *title,
                       const char *ylabel, const char *aria, const char *piece) {
    double lo = INFINITY, hi = -INFINITY;
    int any = 0, has[16] = {0};
    plot p = {.f = f, .L = 70, .T = 30, .W = 560, .H = 250, .logy = logy == 1, .ncat = u->n};
    for (int q = 0; q < ns; q++)
        for (int i = 0; i < u->n; i++) {
            const rps_stat *m = series_stat(find_site(&sp->conds[sr[q].cond], u->block[i], u->site[i]), &sr[q]);
            if (!m) continue;
            double v[3] = {m->mean, m->lo, m->hi};
            for (int k = 0; k < 3; k++)
                if (y_ok(&p, v[k])) lo = fmin(lo, v[k]), hi = fmax(hi, v[k]), any = 1, has[q] = 1;
        }
    if (!any) return 0;
    char tb[200];
    if (logy == 2) lo = fmin(lo, 0), hi = fmax(hi, 1);
    if (!logy && lo > 0 && lo < 0.5 * hi) lo = 0;
    int rot = p.W / p.ncat < 52;
    rp_svg_open(f, 800, (int)(p.T + p.H + (rot ? 72 : 42)), aria);
    axes(&p, lo, hi, panel_title(pn, tb, sizeof tb, title), ylabel);
    x_cats(&p, u->lab, "attention site (model order)");
    if (!p.logy && p.y0 < 0 && p.y1 > 0) {
        double y = py(&p, 0);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#777\" stroke-dasharray=\"3 3\"/>\n", p.L, p.L + p.W, y, y);
    }
    double jit = ns > 1 ? fmin(6.0, p.W / p.ncat / (2.0 * ns)) : 0;
    for (int q = 0, shown = 0; q < ns; q++) {
        if (!has[q]) continue; /* no values: neither line nor legend */
        double dx = (q - (ns - 1) / 2.0) * jit;
        fputs("<path d=\"", f);
        int first = 1;
        for (int i = 0; i < u->n; i++) {
            const rps_stat *m = series_stat(find_site(&sp->conds[sr[q].cond], u->block[i], u->site[i]), &sr[q]);
            if (!m || !y_ok(&p, m->mean)) {
                first = 1;
                continue;
            }
            fprintf(f, "%s%.1f %.1f", first ? "M" : "L", pxc(&p, i) + dx, py(&p, m->mean));
            first = 0;
        }
        fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s/>\n", sr[q].color, sr[q].dashed ? " stroke-dasharray=\"5 3\"" : "");
        for (int i = 0; i < u->n; i++) {
            const rps_stat *m = series_stat(find_site(&sp->conds[sr[q].cond], u->block[i], u->site[i]), &sr[q]);
            if (!m || !y_ok(&p, m->mean)) continue;
            double x = pxc(&p, i) + dx;
            if (y_ok(&p, m->lo) && y_ok(&p, m->hi) && m->hi > m->lo)
                fprintf(f, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"1.2\"/>\n", x,
                        py(&p, m->lo), py(&p, m->hi), x - 3, py(&p, m->lo), x + 3, x - 3, py(&p, m->hi), x + 3, sr[q].color);
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"/>\n", x, py(&p, m->mean), u->n > 30 ? "2" : "3",
                    sr[q].color);
        }
        legend_item(f, p.L + p.W + 14, p.T + 8 + 16 * shown++, sr[q].label, sr[q].color, sr[q].dashed);
    }
    fputs("</svg>\n", f);
    panel_done(pn, piece);
    return 1;
}

/* ---- heat map: sites x steps ---- */

typedef double (*step_val)(const rps_step *);
static double v_unique(const rps_step *s) { return s->n ? s->unique : NAN; }
static double v_iou(const rps_step *s) { return s->iou; }
static double v_ximage(const rps_step *s) { return s->xi_mean; }

/* viridis, 9 anchors (matplotlib's colour map values) */
static void ramp(double t, char *out) {
    static const unsigned char A[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                          {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i > 7) i = 7;
    double w = x - i;
    int c[3];
    for (int k = 0; k < 3; k++) c[k] = (int)lround(A[i][k] * (1 - w) + A[i + 1][k] * w);
    sprintf(out, "#%02x%02x%02x", c[0], c[1], c[2]);
}

/* fmt: cell text format ("%.0f", "%.2f", "%.3g"); fix_lo / fix_hi: a fixed colour range (NaN: the data's) */
static int heatmap(FILE *f, panels *pn, const rps_cond *c, step_val val, int logc, const char *fmt, double fix_lo, double fix_hi,
                   const char *title, const char *unit, const char *aria, const char *piece) {
    /* the union of the steps, ascending */
    int steps[4096], nst = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < c->n_sites; i++)
        for (int k = 0; k < c->sites[i].n_steps; k++) {
            const rps_step *s = &c->sites[i].steps[k];
            double v = val(s);
            if (isfinite(v) && (!logc || v > 0)) lo = fmin(lo, v), hi = fmax(hi, v);
            int at = 0;
            while (at < nst && steps[at] < s->step) at++;
            if ((at < nst && steps[at] == s->step) || nst == 4096) continue;
            memmove(&steps[at + 1], &steps[at], (size_t)(nst - at) * sizeof *steps);
            steps[at] = s->step;
            nst++;
        }
    if (!(lo <= hi) || !nst) return 0;
    if (isfinite(fix_lo) && fix_lo < lo) lo = fix_lo;
    if (isfinite(fix_hi) && fix_hi > hi) hi = fix_hi;
    double tl = logc ? log10(lo) : lo, th = logc ? log10(hi) : hi;
    if (th - tl < 1e-12) tl -= 0.5, th += 0.5;
    const double L = 78, T = 30, W = 570;
    double cw = W / nst, ch = c->n_sites > 40 ? 560.0 / c->n_sites : 14;
    if (ch > 22) ch = 22;
    double H = ch * c->n_sites;
    rp_svg_open(f, 800, (int)(T + H + 48), aria);
    char col[16], b[48], nm[48], tb[200];
    rp_svg_text(f, L, T - 9, "start", "font-weight=\"600\" font-size=\"12.5\"", panel_title(pn, tb, sizeof tb, title));
    int labels_every = ch >= 10 ? 1 : (int)ceil(10 / ch);
    fputs("<g shape-rendering=\"crispEdges\">\n", f);
    for (int i = 0; i < c->n_sites; i++) {
        const rps_site *s = &c->sites[i];
        double y = T + i * ch;
        if (i % labels_every == 0) rp_svg_text(f, L - 5, y + ch / 2 + 3.5, "end", "fill=\"#444\"", rps_site_name(nm, sizeof nm, s->site));
        for (int k = 0; k < s->n_steps; k++) {
            double v = val(&s->steps[k]);
            int at = 0;
            while (steps[at] != s->steps[k].step) at++;
            double x = L + at * cw;
            if (!isfinite(v) || (logc && !(v > 0))) continue;
            double t = ((logc ? log10(v) : v) - tl) / (th - tl);
            ramp(t, col);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>", x, y, cw, ch, col);
            fprintf(f, "%s step %d: %.4g</title></rect>\n", nm, s->steps[k].step, v);
            snprintf(b, sizeof b, fmt, v);
            if (ch >= 13 && cw >= 5.6 * strlen(b) + 4) {
                rp_svg_text(f, x + cw / 2, y + ch / 2 + 3.5, "middle", t > 0.6 ? "font-size=\"9.5\" fill=\"#000\"" : "font-size=\"9.5\" fill=\"#fff\"", b);
            }
        }
    }
    fputs("</g>\n", f);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, W, H);
    int every = (int)ceil(nst / 12.0);
    for (int k = 0; k < nst; k += every) {
        snprintf(b, sizeof b, "%d", steps[k]);
        rp_svg_text(f, L + (k + 0.5) * cw, T + H + 14, "middle", "fill=\"#444\"", b);
    }
    rp_svg_text(f, L + W / 2, T + H + 32, "middle", NULL, "denoising step");
    /* colour bar */
    const double bx = L + W + 26, bh = H < 120 ? H : 120;
    for (int i = 0; i < 24; i++) {
        ramp((23 - i) / 23.0, col);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"%.2f\" fill=\"%s\"/>\n", bx, T + i * bh / 24, bh / 24 + 0.3, col);
    }
    snprintf(b, sizeof b, fmt, hi);
    rp_svg_text(f, bx + 16, T + 8, "start", NULL, b);
    snprintf(b, sizeof b, fmt, lo);
    rp_svg_text(f, bx + 16, T + bh, "start", NULL, b);
    rp_svg_text(f, bx, T + bh + 16, "start", "fill=\"#444\"", unit);
    fputs("</svg>\n", f);
    panel_done(pn, piece);
    return 1;
}

/* ---- stacked budget bars ---- */

static int budget_chart(FILE *f, const rp_exp *e, const rps_cond *c) {
    int any = 0, used[SS_TOK_N] = {0};
    for (int i = 0; i < c->n_sites; i++)
        if (c->sites[i].budget_n) {
            any = 1;
            for (int t = 0; t < SS_TOK_N; t++) used[t] |= c->sites[i].has_type[t];
        }
    if (!any) return 0;
    plot p = {.f = f, .L = 70, .T = 30, .W = 560, .H = 230, .ncat = c->n_sites};
    int rot = p.W / p.ncat < 52;
    char title[300], nm[48];
    snprintf(title, sizeof title, "%s: attention budget by key type (last step)", e->conds[c->cond].name);
    rp_svg_open(f, 800, (int)(p.T + p.H + (rot ? 72 : 42)), title);
    axes(&p, 0, 1, title, "share of Key Importance Σμ");
    sites *u = malloc(sizeof *u); /* the condition's sites as x categories */
    int n = c->n_sites < 1024 ? c->n_sites : 1024;
    if (u) {
        for (int i = 0; i < n; i++) u->lab[i] = rps_site_name(u->name[i], sizeof u->name[i], c->sites[i].site);
        p.ncat = n;
        x_cats(&p, u->lab, "attention site (model order)");
        free(u);
    }
    double bw = p.W / n * 0.72;
    for (int i = 0; i < n; i++) {
        const rps_site *s = &c->sites[i];
        if (!s->budget_n) continue;
        double acc = 0;
        for (int t = 0; t < SS_TOK_N; t++) {
            if (!s->has_type[t] || !(s->budget[t] > 0)) continue;
            double y0 = py(&p, fmin(acc, 1)), y1 = py(&p, fmin(acc + s->budget[t], 1));
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s %s: %.4g</title></rect>\n",
                    pxc(&p, i) - bw / 2, y1, bw, y0 - y1, TYPE_COLOR[t], rps_site_name(nm, sizeof nm, s->site), ss_tok_name((ss_tok)t),
                    s->budget[t]);
            acc += s->budget[t];
        }
    }
    int k = 0;
    for (int t = 0; t < SS_TOK_N; t++)
        if (used[t]) legend_item(f, p.L + p.W + 14, p.T + 8 + 16 * k++, ss_tok_name((ss_tok)t), TYPE_COLOR[t], 2);
    fputs("</svg>\n", f);
    return 1;
}

/* ---- per-key bars: mu per key (Figure 3) and the top keys (Figure 10), one panel per site ---- */

static void type_legend(FILE *f, double x, double y, const int *used) {
    for (int t = 0, k = 0; t < SS_TOK_N; t++)
        if (used[t]) {
            legend_item(f, x + 70 * k, y, ss_tok_name((ss_tok)t), TYPE_COLOR[t], 2);
            k++;
        }
}

static void keys_panel(FILE *f, const rps_site *s) {
    char title[160], nm[48];
    int used[SS_TOK_N] = {0};
    int kmax = 0;
    double hi = 0;
    for (int i = 0; i < s->n_keys; i++) {
        used[s->keys[i].type] = 1;
        kmax = s->keys[i].key > kmax ? s->keys[i].key : kmax;
        hi = fmax(hi, s->keys[i].mu);
    }
    plot p = {.f = f, .L = 58, .T = 28, .W = 300, .H = 150, .x0 = -0.5, .x1 = kmax + 0.5};
    snprintf(title, sizeof title, "%s: μ per key (step %d)", rps_site_name(nm, sizeof nm, s->site), s->last);
    rp_svg_open(f, 380, 250, title);
    axes(&p, 0, hi > 0 ? hi : 1, title, "Key Importance μ");
    x_nums(&p, "key index (model order)");
    /* one bar per key; with more keys than pixels, the largest mu of each pixel column */
    int cols = (int)p.W;
    if (kmax + 1 <= cols) {
        double bw = p.W / (kmax + 1);
        for (int i = 0; i < s->n_keys; i++) {
            const rps_key *q = &s->keys[i];
            if (!(q->mu > 0)) continue;
            double y = py(&p, q->mu);
            fprintf(f, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\"/>\n", pxn(&p, q->key) - bw / 2, y,
                    bw > 1.5 ? bw * 0.85 : bw, py(&p, 0) - y, TYPE_COLOR[q->type]);
        }
    } else {
        int cur = -1;
        const rps_key *best = NULL;
        for (int i = 0; i <= s->n_keys; i++) {
            int col = i < s->n_keys ? (int)((double)s->keys[i].key / (kmax + 1) * cols) : -2;
            if (col != cur && best && best->mu > 0) {
                double y = py(&p, best->mu);
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"1\" height=\"%.1f\" fill=\"%s\"/>\n", p.L + cur, y, py(&p, 0) - y,
                        TYPE_COLOR[best->type]);
            }
            if (col != cur) cur = col, best = NULL;
            if (i < s->n_keys && (!best || s->keys[i].mu > best->mu)) best = &s->keys[i];
        }
    }
    type_legend(f, p.L, p.T + p.H + 46, used);
    fputs("</svg>\n", f);
}

static void top_panel(FILE *f, const rps_site *s) {
    char title[160], nm[48], b[24];
    int used[SS_TOK_N] = {0};
    double hi = 0;
    for (int i = 0; i < s->n_top; i++) used[s->top[i].type] = 1, hi = fmax(hi, s->top[i].mu);
    plot p = {.f = f, .L = 58, .T = 28, .W = 300, .H = 150, .ncat = RPS_TOP};
    snprintf(title, sizeof title, "%s: top-%d keys by mean μ", rps_site_name(nm, sizeof nm, s->site), RPS_TOP);
    rp_svg_open(f, 380, 262, title);
    axes(&p, 0, hi > 0 ? hi : 1, title, "mean μ");
    double bw = p.W / RPS_TOP;
    for (int i = 0; i < s->n_top; i++) {
        const rps_key *q = &s->top[i];
        double y = py(&p, q->mu > 0 ? q->mu : 0);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>key %d (%s): %.4g</title></rect>\n",
                pxc(&p, i) - bw * 0.4, y, bw * 0.8, py(&p, 0) - y, TYPE_COLOR[q->type], q->key, ss_tok_name((ss_tok)q->type), q->mu);
        snprintf(b, sizeof b, "%d", q->key);
        fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"end\" font-size=\"8.5\" fill=\"#444\">%s</text>\n",
                pxc(&p, i) + 3, p.T + p.H + 4, b);
    }
    rp_svg_text(f, p.L + p.W / 2, p.T + p.H + 40, "middle", NULL, "key index, by rank");
    type_legend(f, p.L, p.T + p.H + 58, used);
    fputs("</svg>\n", f);
}

/* ---- the section ---- */

static void put_num(FILE *f, double x, int sig) {
    if (!isfinite(x)) {
        fputs("–", f);
        return;
    }
    char b[48];
    snprintf(b, sizeof b, "%.*g", sig, fabs(x));
    fprintf(f, "%s%s", x < 0 ? RP_MINUS : "", b);
}

static void table_sites(FILE *f, const rp_exp *e, const rps_cond *c) {
    char nm[48];
    fputs("<div class=scroll><table><caption>", f);
    fputs("Per site at the last denoising step, over the images of ", f);
    rp_html_esc(f, e->conds[c->cond].name);
    fprintf(f, " (%d): sink-to-random ratio μ<sub>sink</sub> / mean μ over image keys and × uniform (μ<sub>sink</sub> · keys), "
               "mean with its 95%% t interval; distinct top-1 sinks over the images; the most frequent sink; mean IoU of the top-%d "
               "sets between consecutive steps; the largest budget share by key type.</caption>\n",
            c->n_images, RPS_IOU_K);
    fputs("<thead><tr><th class=l>site</th><th>images</th><th>× random image key</th><th>× uniform</th><th>unique sinks</th>"
          "<th class=l>top sink (share)</th><th>IoU</th><th class=l>largest budget</th><th>FAC</th><th>act. sink / median</th>"
          "</tr></thead><tbody>\n",
          f);
    for (int i = 0; i < c->n_sites; i++) {
        const rps_site *s = &c->sites[i];
        const rps_step *L = s->n_steps ? &s->steps[s->n_steps - 1] : NULL;
        fprintf(f, "<tr><td class=l>%s</td><td>%d</td>", rps_site_name(nm, sizeof nm, s->site), s->n_last);
        for (int q = 0; q < 2; q++) {
            const rps_stat *m = &s->m[q == 0 ? RPS_M_XIMAGE : RPS_M_XUNIF];
            fputs("<td>", f);
            put_num(f, m->mean, 4);
            if (isfinite(m->lo)) {
                fputs(" <span class=ci>[", f);
                put_num(f, m->lo, 3);
                fputs(", ", f);
                put_num(f, m->hi, 3);
                fputs("]</span>", f);
            }
            fputs("</td>", f);
        }
        fprintf(f, "<td>%d</td><td class=l>", L ? L->unique : 0);
        if (L && L->n) fprintf(f, "%d %s (%.0f%%)", L->mode_sink, ss_tok_name((ss_tok)L->mode_type), 100.0 * L->mode_count / L->n);
        fputs("</td><td>", f);
        put_num(f, s->iou_all, 3);
        fputs("</td><td class=l>", f);
        int bt = -1;
        for (int t = 0; t < SS_TOK_N && s->budget_n; t++)
            if (s->has_type[t] && (bt < 0 || s->budget[t] > s->budget[bt])) bt = t;
        if (bt >= 0) fprintf(f, "%s %.1f%%", ss_tok_name((ss_tok)bt), 100 * s->budget[bt]);
        else fputs("–", f);
        fputs("</td><td>", f);
        put_num(f, s->m[RPS_M_FAC].mean, 3);
        fputs("</td><td>", f);
        put_num(f, s->m[RPS_M_ACT_SINK].mean, 3);
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody></table></div>\n", f);
}

static int fig_open(FILE *f) { return fputs("<figure><div class=panels>\n", f); }
static int fig_close(FILE *f, int fig, const char *caption) {
    fprintf(f, "</div><figcaption><b>Figure %d.</b> %s</figcaption></figure>\n", fig, caption);
    return fig + 1;
}

int rp_spiral_write_html(FILE *f, const rp_analysis *a, int fig) {
    const rp_spiral *sp = a->spiral;
    const rp_exp *e = a->e;
    if (!sp || !sp->n_conds) return fig;
    const rps_cond *c0 = &sp->conds[0]; /* the baseline when it has spiral entries */
    sites *up = malloc(sizeof *up);
    if (!up) return ss_fail(SS_ENOMEM, "out of memory writing report.html");
    sites *const u = up;
    site_union(u, sp);
    fputs("<h2>5b. Why sinks form: the “Spiral to Sink” measurements</h2>\n<p>", f);
    fputs("Key Importance μ (the attention mass a key receives, averaged over heads and the probed query rows), by site in model "
          "order, from the records' <code>spiral</code> entries (Yang et al. 2026; definitions in docs/spiral-measurements.md). "
          "Charts of one condition show <b>", f);
    rp_html_esc(f, e->conds[c0->cond].name);
    fputs("</b>; charts by depth show every condition with spiral entries. Numbers: <code>spiral_*.csv</code> beside this page "
          "and <code>summary.json</code> <code>spiral</code>.</p>\n", f);
    table_sites(f, e, c0);

    /* sink-to-random over depth (Figure 2b) */
    series sr[16];
    int ns = 0;
    char lab[16][160], cap[3400];
    for (int c = 0; c < sp->n_conds && ns < 8; c++) {
        snprintf(lab[ns], sizeof lab[ns], "%s", e->conds[sp->conds[c].cond].name);
        sr[ns] = (series){RPS_M_XIMAGE, -1, c, lab[ns], SERIES[c % 8], 0};
        ns++;
    }
    panels pn = {0};
    fig_open(f);
    depth_chart(f, &pn, sp, u, sr, ns, 1, "sink-to-random ratio by depth", "μ_sink / mean μ of image keys",
                "Sink-to-random Key Importance ratio by site", "the top-1 sink's μ against the mean μ of the image keys");
    for (int q = 0; q < ns; q++) sr[q].metric = RPS_M_XUNIF;
    depth_chart(f, &pn, sp, u, sr, ns, 1, "sink Key Importance × uniform by depth", "μ_sink × number of keys",
                "Sink Key Importance times uniform by site", "against uniform attention (μ_sink × keys)");
    snprintf(cap, sizeof cap, "Sink strength over depth at the last denoising step (the paper's Figure 2b): %s; mean over images "
                              "with its 95%% t interval, one line per condition, log scale (<code>spiral_depth.csv</code>, metrics "
                              "ki_x_image, ki_x_uniform).", pn.cap);
    if (pn.n) fig = fig_close(f, fig, cap);
    else fputs("</div></figure>\n", f);

    /* over denoising steps (Figure 2a), unique sinks, IoU */
    pn = (panels){0};
    fig_open(f);
    heatmap(f, &pn, c0, v_ximage, 1, "%.3g", NAN, NAN, "sink-to-random ratio per denoising step", "× image key (log)",
            "Sink-to-random ratio per site and denoising step", "the sink-to-random ratio, mean over images (the paper's Figure 2a, "
            "log colour scale)");
    heatmap(f, &pn, c0, v_unique, 0, "%.0f", 1, NAN, "unique top-1 sinks across images", "distinct keys", "Unique sinks per site and step",
            "how many distinct top-1 sink keys the images have (1: the same key for every prompt and seed)");
    char piece[200];
    snprintf(piece, sizeof piece, "mean over images of the IoU of the top-%d key sets at this step and the step before", RPS_IOU_K);
    heatmap(f, &pn, c0, v_iou, 0, "%.2f", 0, 1, "IoU stability of the top-k keys with the previous step", "mean IoU",
            "IoU of the top-k key sets between consecutive steps", piece);
    snprintf(cap, sizeof cap, "Sinks over denoising time, sites in model order (rows) and steps (columns): %s "
                              "(<code>spiral_steps.csv</code>).", pn.cap);
    if (pn.n) fig = fig_close(f, fig, cap);
    else fputs("</div></figure>\n", f);

    /* mu per key (Figure 3) */
    int any = 0;
    for (int i = 0; i < c0->n_sites; i++) any |= c0->sites[i].n_keys > 0;
    if (any) {
        fig_open(f);
        for (int i = 0; i < c0->n_sites; i++)
            if (c0->sites[i].n_keys) keys_panel(f, &c0->sites[i]);
        fig = fig_close(f, fig, "Key Importance μ per key at the last denoising step, mean over images, coloured by the key's token "
                                "type (the most frequent over the images; the paper's Figure 3). Keys in the model's order; with more "
                                "keys than pixels each column shows its largest μ (<code>spiral_keys.csv</code>).");
    }
    /* top-32 and the budget (Figure 10) */
    any = 0;
    for (int i = 0; i < c0->n_sites; i++) any |= c0->sites[i].n_top > 0;
    if (any) {
        fig_open(f);
        for (int i = 0; i < c0->n_sites; i++)
            if (c0->sites[i].n_top) top_panel(f, &c0->sites[i]);
        fig = fig_close(f, fig, "The 32 keys with the largest mean μ at the last step, by rank, coloured by token type (the paper's "
                                "Figure 10, left; <code>spiral_top.csv</code>).");
    }
    fig_open(f);
    int drawn = 0;
    for (int c = 0; c < sp->n_conds && c < 8; c++) drawn += budget_chart(f, e, &sp->conds[c]);
    if (drawn)
        fig = fig_close(f, fig, "The attention budget by key type: Σμ over the keys of each type at the last step, mean over images, "
                                "per site, one chart per condition (the paper's Figure 10, right; <code>spiral_budget.csv</code>).");
    else
        fputs("<p class=muted>No budget fields in the spiral entries.</p></div></figure>\n", f);

    /* FAC and <q,k> (Figures 6-8), norms, massive activations (Figure 5) */
    pn = (panels){0};
    fig_open(f);
    ns = 0;
    for (int c = 0; c < sp->n_conds && ns < 8; c++) {
        snprintf(lab[ns], sizeof lab[ns], "FAC %s", e->conds[sp->conds[c].cond].name);
        sr[ns] = (series){RPS_M_FAC, -1, c, lab[ns], SERIES[c % 8], 0};
        ns++;
    }
    depth_chart(f, &pn, sp, u, sr, ns, 0, "Frequency-Aware Concentration by depth", "FAC = low share sink / image", "FAC by site",
                "FAC, the sink key's low-frequency energy share over the mean image key's (RoPE sites; the paper's Figures 7-8)");
    sr[0] = (series){RPS_M_LOW_SINK, -1, 0, "sink key", TYPE_COLOR[SS_TOK_PAD], 0};
    sr[1] = (series){RPS_M_LOW_IMAGE, -1, 0, "mean image key", TYPE_COLOR[SS_TOK_IMAGE], 0};
    depth_chart(f, &pn, sp, u, sr, 2, 2, "share of key energy in the low-frequency band", "low-band energy share",
                "Low-frequency energy share of sink and image keys by site", "those low-band shares");
    int has_rope = 0;
    for (int i = 0; i < c0->n_sites; i++) has_rope |= c0->sites[i].m[RPS_M_QKPOST_SINK].n > 0 || c0->sites[i].m[RPS_M_QKPRE_SINK].n > 0;
    sr[0] = (series){RPS_M_QKPOST_SINK, RPS_M_QK_SINK, 0, has_rope ? "sink, after RoPE" : "sink", TYPE_COLOR[SS_TOK_PAD], 0};
    sr[1] = (series){RPS_M_QKPOST_IMAGE, RPS_M_QK_IMAGE, 0, has_rope ? "image key, after RoPE" : "mean image key", TYPE_COLOR[SS_TOK_IMAGE], 0};
    sr[2] = (series){RPS_M_QKPRE_SINK, -1, 0, "sink, before RoPE", TYPE_COLOR[SS_TOK_PAD], 1};
    sr[3] = (series){RPS_M_QKPRE_IMAGE, -1, 0, "image key, before RoPE", TYPE_COLOR[SS_TOK_IMAGE], 1};
    depth_chart(f, &pn, sp, u, sr, 4, 0, "mean ⟨q, k⟩: sink vs mean image key", "mean ⟨q, k⟩ (not / √d)",
                "Mean query-key dot product of the sink and the mean image key",
                has_rope ? "mean ⟨q, k⟩ of the sink and of the mean image key as the attention sees them (solid: after RoPE, or "
                           "the only logits at sites without RoPE) and before RoPE (dashed; the paper's Figure 6)"
                         : "mean ⟨q, k⟩ of the sink and of the mean image key as the attention sees them (no RoPE sites)");
    sr[0] = (series){RPS_M_VN_SINK, -1, 0, "‖v‖ sink", TYPE_COLOR[SS_TOK_PAD], 0};
    sr[1] = (series){RPS_M_VN_IMAGE, -1, 0, "‖v‖ image key", TYPE_COLOR[SS_TOK_IMAGE], 0};
    sr[2] = (series){RPS_M_KN_SINK, -1, 0, "‖k‖ sink", TYPE_COLOR[SS_TOK_PAD], 1};
    sr[3] = (series){RPS_M_KN_IMAGE, -1, 0, "‖k‖ image key", TYPE_COLOR[SS_TOK_IMAGE], 1};
    depth_chart(f, &pn, sp, u, sr, 4, 0, "value and key norms: sink vs mean image key", "L2 norm (mean over heads)",
                "Value and key norms of the sink and the mean image key by site",
                "value norms (solid) and post-QK-norm key norms (dashed), sink vs mean image key");
    ns = 0;
    for (int c = 0; c < sp->n_conds && ns < 4; c++) {
        snprintf(lab[ns], sizeof lab[ns], "sink / median %s", e->conds[sp->conds[c].cond].name);
        sr[ns] = (series){RPS_M_ACT_SINK, -1, c, lab[ns], SERIES[c % 8], 0};
        ns++;
        snprintf(lab[ns], sizeof lab[ns], "max / median %s", e->conds[sp->conds[c].cond].name);
        sr[ns] = (series){RPS_M_ACT_MAX, -1, c, lab[ns], SERIES[c % 8], 1};
        ns++;
    }
    depth_chart(f, &pn, sp, u, sr, ns, 1, "massive activations by depth", "‖h‖∞ / median token",
                "Massive activations of the sink token and the largest token by site",
                "massive activations: ‖h‖∞ of the sink token's input hidden state (solid) and of the largest token (dashed) over "
                "the median token (the paper's Figure 5, log scale)");
    snprintf(cap, sizeof cap, "Mechanism by depth at the last step, mean over images with 95%% t intervals, only the sites that "
                              "measure each quantity: %s (<code>spiral_depth.csv</code>).", pn.cap);
    if (pn.n) fig = fig_close(f, fig, cap);
    else fputs("<p class=muted>No energy, ⟨q,k⟩, norm or activation fields in the spiral entries.</p></div></figure>\n", f);
    free(up);
    return fig;
}
