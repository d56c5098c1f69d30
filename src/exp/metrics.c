#include "exp/metrics.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "core/err.h"
#include "eval/detect.h"
#include "sink/spiral.h"
#include "text/tokenizer.h"

double img_mse(const uint8_t *a, const uint8_t *b, int w, int h) {
    const size_t n = (size_t)w * h * 3;
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = ((double)a[i] - b[i]) / 255.0;
        s += d * d;
    }
    return n ? s / n : 0;
}

double img_psnr(double mse) { return mse > 0 ? 10.0 * log10(1.0 / mse) : INFINITY; }

int img_ssim_window(int w, int h) {
    int m = w < h ? w : h;
    if (m > 11) m = 11;
    return m % 2 ? m : m - 1;
}

/* Separable "valid" Gaussian filter: src [h][w] -> dst [h-win+1][w-win+1]; tmp [h][w-win+1]. */
static void filter_valid(const double *src, double *dst, double *tmp, int w, int h, const double *g, int win) {
    const int ow = w - win + 1, oh = h - win + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < ow; x++) {
            double s = 0;
            for (int k = 0; k < win; k++) s += g[k] * src[(size_t)y * w + x + k];
            tmp[(size_t)y * ow + x] = s;
        }
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            double s = 0;
            for (int k = 0; k < win; k++) s += g[k] * tmp[(size_t)(y + k) * ow + x];
            dst[(size_t)y * ow + x] = s;
        }
}

double img_ssim(const uint8_t *a, const uint8_t *b, int w, int h) {
    const int win = img_ssim_window(w, h);
    if (w < 1 || h < 1 || win < 1) return NAN;
    double g[11], gs = 0;
    for (int k = 0; k < win; k++) {
        const double d = k - (win - 1) / 2.0;
        gs += g[k] = exp(-d * d / (2 * 1.5 * 1.5));
    }
    for (int k = 0; k < win; k++) g[k] /= gs;
    const size_t np = (size_t)w * h, no = (size_t)(w - win + 1) * (h - win + 1);
    /* inputs x, y, x^2, y^2, xy; their filtered maps; one scratch plane */
    double *buf = ss_malloc(sizeof(double) * (5 * np + 5 * no + np));
    if (!buf) return NAN;
    double *in[5], *out[5], *tmp = buf + 5 * np + 5 * no;
    for (int i = 0; i < 5; i++) {
        in[i] = buf + i * np;
        out[i] = buf + 5 * np + i * no;
    }
    const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03;
    double total = 0;
    for (int c = 0; c < 3; c++) {
        for (size_t i = 0; i < np; i++) {
            const double x = a[i * 3 + c] / 255.0, y = b[i * 3 + c] / 255.0;
            in[0][i] = x, in[1][i] = y, in[2][i] = x * x, in[3][i] = y * y, in[4][i] = x * y;
        }
        for (int i = 0; i < 5; i++) filter_valid(in[i], out[i], tmp, w, h, g, win);
        double s = 0;
        for (size_t i = 0; i < no; i++) {
            const double mx = out[0][i], my = out[1][i];
            const double vx = out[2][i] - mx * mx, vy = out[3][i] - my * my, cxy = out[4][i] - mx * my;
            s += ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2));
        }
        total += s / no;
    }
    free(buf);
    return total / 3;
}

int metric_geneval(const gv_meta *m, const uint8_t *rgb, int w, int h, char *reason, size_t reason_cap) {
    enum { CAP = 64 };
    sw_det det[CAP];
    gv_det gd[CAP];
    int n = sw_detect(rgb, w, h, NULL, det, CAP);
    if (n < 0) return n;
    sw_dets_to_gv(det, n, gd);
    return gv_score(m, gd, n, reason, reason_cap);
}

/* JSON has no NaN or infinity: those become null. */
static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* key j's type at a site: its key span's, or for the one text span the given text types */
static ss_tok key_type_of(const ss_site *site, int j, const uint8_t *tt, int S) {
    for (int g = 0; g < site->n_kspan; g++) {
        const ss_span *sp = &site->kspan[g];
        if (j < sp->start || j >= sp->start + sp->len) continue;
        if (tt && ss_tok_is_text(sp->type) && sp->len == S) return (ss_tok)tt[j - sp->start];
        return sp->type;
    }
    return SS_TOK_OTHER;
}

void *metric_spiral_json(const sink_ctx *s, int last_step, const ss_site *sites, int n_sites, const uint8_t *text_types,
                         int S) {
    json_t *arr = json_array();
    for (int i = 0; i < sink_ctx_record_count(s) && arr; i++) {
        const sink_record *r = sink_ctx_record(s, i);
        if (!r->probed || !r->spiral) continue;
        const spiral_rec *sp = r->spiral;
        const int b = sp->B - 1;
        char nm[40];
        ss_site_code_name(r->site, nm, sizeof nm);
        json_t *o = json_object(), *f = spiral_rec_to_json(sp, b);
        json_object_set_new(o, "site", json_string(nm));
        json_object_set_new(o, "block", json_integer(r->block));
        json_object_set_new(o, "step", json_integer(r->step));
        json_object_set_new(o, "t_frac", jnum(r->tfrac));
        const char *k;
        json_t *v;
        json_object_foreach(f, k, v) json_object_set(o, k, v); /* insertion order: spiral_rec_to_json's */
        json_decref(f);
        if (r->step == last_step) {
            const ss_site *site = ss_site_find(sites, n_sites, r->site);
            if (!sp->mu || !site || site->Tk != sp->Tk) {
                ss_fail(SS_EARG, "spiral record of %s, step %d: %s", nm, r->step,
                        !sp->mu ? "the probe kept no Key Importance vector" : "the site does not match the model's sites");
                json_decref(o);
                json_decref(arr);
                return NULL;
            }
            json_t *mu = json_array(), *kt = json_array();
            for (int j = 0; j < sp->Tk; j++) json_array_append_new(mu, jnum(sp->mu[(size_t)b * sp->Tk + j]));
            for (int j = 0; j < sp->Tk;) {
                const ss_tok t = key_type_of(site, j, text_types, S);
                int e = j + 1;
                while (e < sp->Tk && key_type_of(site, e, text_types, S) == t) e++;
                json_array_append_new(kt, json_pack("[s, i]", ss_tok_name(t), e - j));
                j = e;
            }
            json_object_set_new(o, "mu", mu);
            json_object_set_new(o, "key_types", kt);
        }
        json_array_append_new(arr, o);
    }
    return arr;
}
