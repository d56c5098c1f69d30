/* shapeworld: scenes, captions, rendering and the evaluation set (see shapeworld.h). */
#include "eval/shapeworld.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/rng.h"
#include "io/fsutil.h"
#include "io/png.h"

const uint8_t SW_BACKGROUND[3] = {128, 128, 128};
const uint8_t SW_PALETTE[SW_NCOLOR][3] = {
    {220, 40, 40},  /* red */
    {250, 130, 10}, /* orange */
    {240, 225, 40}, /* yellow */
    {30, 170, 50},  /* green */
    {40, 80, 220},  /* blue */
    {130, 30, 200}, /* purple */
};

static const char *const CLASS_NAMES[SW_NCLASS] = {"circle", "square", "triangle"};
static const char *const CLASS_PLURALS[SW_NCLASS] = {"circles", "squares", "triangles"};
static const char *const COLOR_NAMES[SW_NCOLOR] = {"red",   "orange", "yellow",
                                                   "green", "blue",   "purple"};
static const char *const TAG_NAMES[SW_NTAG] = {"single_object", "two_object", "counting",
                                               "colors",        "position",   "color_attr"};
static const char *const NUMBER_WORDS[5] = {"zero", "one", "two", "three", "four"};

static const char *const VOCAB[] = {
    "a",      "an",     "photo",    "of",      "and",     "left",      "right", "above", "below",
    "two",    "three",  "four",     "red",     "orange",  "yellow",    "green", "blue",  "purple",
    "circle", "square", "triangle", "circles", "squares", "triangles", NULL};

const char *sw_class_name(int c) { return c >= 0 && c < SW_NCLASS ? CLASS_NAMES[c] : NULL; }
const char *sw_class_plural(int c) { return c >= 0 && c < SW_NCLASS ? CLASS_PLURALS[c] : NULL; }
const char *sw_color_name(int c) { return c >= 0 && c < SW_NCOLOR ? COLOR_NAMES[c] : NULL; }
const char *sw_tag_name(int t) { return t >= 0 && t < SW_NTAG ? TAG_NAMES[t] : NULL; }

static int lookup(const char *const *names, int n, const char *s) {
    for (int i = 0; s && i < n; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}
int sw_class_from_name(const char *s) { return lookup(CLASS_NAMES, SW_NCLASS, s); }
int sw_color_from_name(const char *s) { return lookup(COLOR_NAMES, SW_NCOLOR, s); }
int sw_tag_from_name(const char *s) { return lookup(TAG_NAMES, SW_NTAG, s); }
const char *const *sw_vocabulary(void) { return VOCAB; }

/* ---- random numbers: splitmix64 keyed by (seed, index, stream), core/rng.h ---------------- */

static int rng_range(rng_splitmix64 *r, int lo, int hi) { return lo + rng_splitmix64_below32(r, hi - lo + 1); }

/* ---- captions ----------------------------------------------------------------------------- */

static const char *article(const char *word) { return strchr("aeiou", word[0]) ? "an" : "a"; }

/* "a red circle" / "a circle" */
static int noun_phrase(char *buf, size_t cap, const gv_clause *c) {
    if (c->color[0]) return snprintf(buf, cap, "%s %s %s", article(c->color), c->color, c->cls);
    return snprintf(buf, cap, "%s %s", article(c->cls), c->cls);
}

int sw_make_prompt(gv_meta *m) {
    int tag = sw_tag_from_name(m->tag);
    if (tag < 0) return ss_fail(SS_EARG, "'%s' is not a ShapeWorld tag", m->tag);
    char a[GV_PROMPT_MAX / 2], b[GV_PROMPT_MAX / 2];
    int need = (tag == SW_TWO_OBJECT || tag == SW_POSITION || tag == SW_COLOR_ATTR) ? 2 : 1;
    if (m->n_include != need)
        return ss_fail(SS_EARG, "%s metadata needs %d include clause(s), has %d", m->tag, need,
                       m->n_include);
    noun_phrase(a, sizeof a, &m->include[0]);
    if (need == 2) noun_phrase(b, sizeof b, &m->include[1]);
    int n;
    switch (tag) {
    case SW_COUNTING: {
        int k = m->include[0].count, c = sw_class_from_name(m->include[0].cls);
        if (k < 2 || k > 4 || c < 0)
            return ss_fail(SS_EARG, "counting metadata needs 2-4 ShapeWorld objects");
        n = snprintf(m->prompt, sizeof m->prompt, "a photo of %s %s", NUMBER_WORDS[k],
                     CLASS_PLURALS[c]);
        break;
    }
    case SW_POSITION:
        if (m->include[1].rel == GV_REL_NONE || m->include[1].target != 0)
            return ss_fail(SS_EARG, "position metadata needs include[1].position = [rel, 0]");
        n = snprintf(m->prompt, sizeof m->prompt, "a photo of %s %s %s", b,
                     gv_rel_name(m->include[1].rel), a);
        break;
    case SW_TWO_OBJECT:
    case SW_COLOR_ATTR:
        n = snprintf(m->prompt, sizeof m->prompt, "a photo of %s and %s", a, b);
        break;
    default: n = snprintf(m->prompt, sizeof m->prompt, "a photo of %s", a);
    }
    if (n < 0 || (size_t)n >= sizeof m->prompt) return ss_fail(SS_EARG, "prompt too long");
    return SS_OK;
}

static void set_clause(gv_clause *c, int cls, int count, int color) {
    memset(c, 0, sizeof *c);
    snprintf(c->cls, sizeof c->cls, "%s", CLASS_NAMES[cls]);
    c->count = count;
    if (color >= 0) snprintf(c->color, sizeof c->color, "%s", COLOR_NAMES[color]);
    c->rel = GV_REL_NONE;
}

/* Fill metadata for a tag from explicit choices; b / rel / color fields unused by a tag are
 * ignored. */
static int build_meta(gv_meta *m, int tag, int cls_a, int cls_b, int count, int col_a, int col_b,
                      int rel) {
    memset(m, 0, sizeof *m);
    snprintf(m->tag, sizeof m->tag, "%s", TAG_NAMES[tag]);
    switch (tag) {
    case SW_SINGLE_OBJECT:
        m->n_include = 1;
        set_clause(&m->include[0], cls_a, 1, -1);
        break;
    case SW_TWO_OBJECT:
        m->n_include = 2;
        set_clause(&m->include[0], cls_a, 1, -1);
        set_clause(&m->include[1], cls_b, 1, -1);
        break;
    case SW_COUNTING:
        m->n_include = 1;
        m->n_exclude = 1;
        set_clause(&m->include[0], cls_a, count, -1);
        set_clause(&m->exclude[0], cls_a, count + 1, -1);
        break;
    case SW_COLORS:
        m->n_include = 1;
        set_clause(&m->include[0], cls_a, 1, col_a);
        break;
    case SW_POSITION: /* "a photo of a B rel a A": A is the target (clause 0) */
        m->n_include = 2;
        set_clause(&m->include[0], cls_a, 1, -1);
        set_clause(&m->include[1], cls_b, 1, -1);
        m->include[1].rel = rel;
        m->include[1].target = 0;
        break;
    case SW_COLOR_ATTR:
        m->n_include = 2;
        set_clause(&m->include[0], cls_a, 1, col_a);
        set_clause(&m->include[1], cls_b, 1, col_b);
        break;
    default: return ss_fail(SS_EARG, "bad ShapeWorld tag %d", tag);
    }
    return sw_make_prompt(m);
}

static int meta_from_rng(rng_splitmix64 *r, int tag, gv_meta *out) {
    int a = rng_splitmix64_below32(r, SW_NCLASS);
    int b = (a + 1 + rng_splitmix64_below32(r, SW_NCLASS - 1)) % SW_NCLASS; /* != a */
    int ca = rng_splitmix64_below32(r, SW_NCOLOR);
    int cb = (ca + 1 + rng_splitmix64_below32(r, SW_NCOLOR - 1)) % SW_NCOLOR; /* != ca */
    int count = rng_range(r, 2, 4);
    int rel = rng_splitmix64_below32(r, GV_NREL);
    return build_meta(out, tag, a, b, count, ca, cb, rel);
}

int sw_random_meta(uint64_t seed, uint64_t index, int tag, gv_meta *out) {
    if (tag < 0 || tag >= SW_NTAG) return ss_fail(SS_EARG, "bad ShapeWorld tag %d", tag);
    rng_splitmix64 r = rng_splitmix64_keyed(seed, index, 1);
    return meta_from_rng(&r, tag, out);
}

/* ---- layout ------------------------------------------------------------------------------- */

/* Relations of box a relative to box b (GenEval's rule) with margin num/den, in exact integer
 * arithmetic (coordinates doubled so centers are integers). */
static unsigned int_relations(const sw_object *a, const sw_object *b, int num, int den) {
    int64_t off[2] = {(int64_t)(a->x0 + a->x1) - (b->x0 + b->x1),
                      (int64_t)(a->y0 + a->y1) - (b->y0 + b->y1)};
    int64_t dim[2] = {(int64_t)(a->x1 - a->x0) + (b->x1 - b->x0),
                      (int64_t)(a->y1 - a->y0) + (b->y1 - b->y0)};
    int64_t rev[2], o[2];
    for (int k = 0; k < 2; k++) {
        int64_t mag = (off[k] < 0 ? -off[k] : off[k]) * den - 2 * num * dim[k];
        if (mag < 0) mag = 0;
        rev[k] = off[k] < 0 ? -mag : mag;
        o[k] = off[k] * den;
    }
    if (rev[0] == 0 && rev[1] == 0) return 0;
    int64_t n2 = o[0] * o[0] + o[1] * o[1];
    unsigned r = 0;
    if (4 * rev[0] * rev[0] > n2) r |= 1u << (rev[0] < 0 ? GV_LEFT_OF : GV_RIGHT_OF);
    if (4 * rev[1] * rev[1] > n2) r |= 1u << (rev[1] < 0 ? GV_ABOVE : GV_BELOW);
    return r;
}

static int scale_px(int base, int m) { return (base * m + 16) / 32; }

int sw_scene_for_meta(const gv_meta *m, uint64_t seed, int w, int h, sw_scene *out) {
    if (w < SW_MIN_SIZE || h < SW_MIN_SIZE || w > SW_MAX_SIZE || h > SW_MAX_SIZE)
        return ss_fail(SS_EARG, "ShapeWorld image size %dx%d outside %d..%d", w, h, SW_MIN_SIZE,
                       SW_MAX_SIZE);
    int cls[SW_MAX_OBJ], col[SW_MAX_OBJ], clause_of[SW_MAX_OBJ], n = 0;
    for (int i = 0; i < m->n_include; i++) {
        const gv_clause *c = &m->include[i];
        int k = sw_class_from_name(c->cls);
        if (k < 0) return ss_fail(SS_EARG, "'%s' is not a ShapeWorld class", c->cls);
        int color = -1;
        if (c->color[0] && (color = sw_color_from_name(c->color)) < 0)
            return ss_fail(SS_EARG, "'%s' is not a ShapeWorld color", c->color);
        if (c->count < 1 || n + c->count > SW_MAX_OBJ)
            return ss_fail(SS_EARG, "metadata asks for more than %d objects", SW_MAX_OBJ);
        for (int j = 0; j < c->count; j++, n++) {
            cls[n] = k;
            col[n] = color;
            clause_of[n] = i;
        }
    }
    if (n == 0) return ss_fail(SS_EARG, "metadata asks for no objects");
    rng_splitmix64 r = rng_splitmix64_keyed(seed, 0, 2);
    for (int i = 0; i < n; i++)
        if (col[i] < 0) col[i] = rng_splitmix64_below32(&r, SW_NCOLOR);
    int mdim = w < h ? w : h;
    static const int SMIN[SW_MAX_OBJ + 1] = {0, 8, 8, 7, 7},
                                       SMAX[SW_MAX_OBJ + 1] = {0, 12, 12, 11, 10};
    int smin = scale_px(SMIN[n], mdim), smax = scale_px(SMAX[n], mdim);
    int gap = scale_px(2, mdim), border = scale_px(1, mdim);
    if (border < 1) border = 1;
    memset(out, 0, sizeof *out);
    out->w = w;
    out->h = h;
    out->n = n;
    for (int attempt = 0; attempt < 4000; attempt++) {
        int ok = 1;
        for (int i = 0; i < n && ok; i++) {
            sw_object *o = &out->obj[i];
            o->cls = cls[i];
            o->color = col[i];
            int placed = 0;
            for (int t = 0; t < 100 && !placed; t++) {
                int s = rng_range(&r, smin, smax);
                if (s + 2 * border > w || s + 2 * border > h) continue;
                o->x0 = rng_range(&r, border, w - border - s);
                o->y0 = rng_range(&r, border, h - border - s);
                o->x1 = o->x0 + s;
                o->y1 = o->y0 + s;
                placed = 1;
                for (int j = 0; j < i && placed; j++) {
                    const sw_object *p = &out->obj[j];
                    if (o->x0 < p->x1 + gap && p->x0 < o->x1 + gap && o->y0 < p->y1 + gap &&
                        p->y0 < o->y1 + gap)
                        placed = 0;
                }
            }
            ok = placed;
        }
        /* position clauses: each object vs each target object, exactly the asked relation with
         * a safety margin of 0.2 (GenEval scores with 0.1) */
        for (int i = 0; i < n && ok; i++) {
            const gv_clause *c = &m->include[clause_of[i]];
            if (c->rel == GV_REL_NONE) continue;
            for (int j = 0; j < n && ok; j++)
                if (clause_of[j] == c->target &&
                    int_relations(&out->obj[i], &out->obj[j], 1, 5) != (1u << c->rel))
                    ok = 0;
        }
        if (!ok) continue;
        for (int i = 0; i < n; i++) {
            sw_object *o = &out->obj[i];
            o->cx = (o->x0 + o->x1) / 2.0;
            o->cy = (o->y0 + o->y1) / 2.0;
        }
        gv_det dets[SW_MAX_OBJ];
        sw_scene_dets(out, dets);
        int sc = gv_score(m, dets, n, NULL, 0);
        if (sc < 0) return sc;
        if (!sc)
            return ss_fail(SS_EARG, "metadata '%s' cannot be satisfied in ShapeWorld", m->prompt);
        return SS_OK;
    }
    return ss_fail(SS_EARG, "could not place the objects of '%s' in %dx%d", m->prompt, w, h);
}

void sw_scene_dets(const sw_scene *s, gv_det *out) {
    for (int i = 0; i < s->n; i++) {
        const sw_object *o = &s->obj[i];
        out[i] =
            (gv_det){CLASS_NAMES[o->cls], COLOR_NAMES[o->color], o->x0, o->y0, o->x1, o->y1, 1.0};
    }
}

/* ---- rendering ---------------------------------------------------------------------------- */

int sw_shape_contains(int cls, int64_t X, int64_t Y, int64_t W, int64_t H, int64_t u, int64_t v) {
    if (u < X || u >= X + W || v < Y || v >= Y + H) return 0;
    int64_t du = 2 * (u - X) - W, dv = 2 * (v - Y) - H; /* doubled offsets from the center */
    int64_t adu = du < 0 ? -du : du;
    switch (cls) {
    case SW_CIRCLE: return du * du * H * H + dv * dv * W * W <= W * W * H * H;
    case SW_SQUARE: return 1;
    case SW_TRIANGLE: return adu * H <= (v - Y) * W;
    default: return 0;
    }
}

int sw_shape_coverage(int cls, int x, int y, int bw, int bh, int px, int py) {
    int k = 0;
    for (int sy = 0; sy < 4; sy++)
        for (int sx = 0; sx < 4; sx++)
            k += sw_shape_contains(cls, 8 * (int64_t)x, 8 * (int64_t)y, 8 * (int64_t)bw,
                                   8 * (int64_t)bh, 8 * (int64_t)px + 2 * sx + 1,
                                   8 * (int64_t)py + 2 * sy + 1);
    return k;
}

int sw_render(const sw_scene *s, uint8_t *rgb) {
    if (s->w < 1 || s->h < 1 || s->w > SW_MAX_SIZE || s->h > SW_MAX_SIZE || s->n < 0 ||
        s->n > SW_MAX_OBJ)
        return ss_fail(SS_EARG, "sw_render: bad scene (%dx%d, %d objects)", s->w, s->h, s->n);
    size_t np = (size_t)s->w * (size_t)s->h;
    for (size_t i = 0; i < np; i++)
        memcpy(rgb + 3 * i, SW_BACKGROUND, 3);
    for (int i = 0; i < s->n; i++) {
        const sw_object *o = &s->obj[i];
        if (o->cls < 0 || o->cls >= SW_NCLASS || o->color < 0 || o->color >= SW_NCOLOR)
            return ss_fail(SS_EARG, "sw_render: object %d has a bad class or color", i);
        const uint8_t *c = SW_PALETTE[o->color];
        int bw = o->x1 - o->x0, bh = o->y1 - o->y0;
        for (int py = o->y0 < 0 ? 0 : o->y0; py < o->y1 && py < s->h; py++)
            for (int px = o->x0 < 0 ? 0 : o->x0; px < o->x1 && px < s->w; px++) {
                int k = sw_shape_coverage(o->cls, o->x0, o->y0, bw, bh, px, py);
                if (!k) continue;
                uint8_t *p = rgb + 3 * ((size_t)py * s->w + px);
                for (int ch = 0; ch < 3; ch++)
                    p[ch] = (uint8_t)((p[ch] * (16 - k) + c[ch] * k + 8) / 16);
            }
    }
    return SS_OK;
}

int sw_render_meta(const gv_meta *m, uint64_t seed, int w, int h, uint8_t *rgb, sw_scene *scene) {
    sw_scene tmp;
    sw_scene *s = scene ? scene : &tmp;
    int rc = sw_scene_for_meta(m, seed, w, h, s);
    return rc ? rc : sw_render(s, rgb);
}

int sw_sample(uint64_t seed, uint64_t index, int tag, int w, int h, sw_scene *scene,
              gv_meta *meta) {
    if (tag < 0) tag = (int)(index % SW_NTAG);
    if (tag >= SW_NTAG) return ss_fail(SS_EARG, "bad ShapeWorld tag %d", tag);
    rng_splitmix64 r = rng_splitmix64_keyed(seed, index, 3);
    int rc = meta_from_rng(&r, tag, meta);
    if (rc) return rc;
    return sw_scene_for_meta(meta, rng_splitmix64_next(&r), w, h, scene);
}

/* ---- evaluation set ------------------------------------------------------------------------ */

int sw_eval_set(gv_meta *out, int cap) {
    if (cap < SW_EVAL_N)
        return ss_fail(SS_EARG, "sw_eval_set needs room for %d records", SW_EVAL_N);
    enum { NPAIR = SW_NCLASS * (SW_NCLASS - 1) };
    int pairs[NPAIR][2], np = 0; /* ordered pairs of distinct classes */
    for (int a = 0; a < SW_NCLASS; a++)
        for (int b = 0; b < SW_NCLASS; b++)
            if (a != b) {
                pairs[np][0] = a;
                pairs[np][1] = b;
                np++;
            }
    /* 36 per tag; every marginal below is exactly balanced (checked by the tests) */
    int n = 0, rc = SS_OK;
    for (int tag = 0; tag < SW_NTAG && !rc; tag++)
        for (int i = 0; i < SW_EVAL_PER_TAG && !rc; i++, n++) {
            const int *p = pairs[i % NPAIR];
            switch (tag) {
            case SW_SINGLE_OBJECT: /* each class 12 times */
                rc = build_meta(&out[n], tag, i % SW_NCLASS, 0, 1, -1, -1, 0);
                break;
            case SW_TWO_OBJECT: /* each ordered pair 6 times */
                rc = build_meta(&out[n], tag, p[0], p[1], 1, -1, -1, 0);
                break;
            case SW_COUNTING: /* each class x count (2, 3, 4) 4 times */
                rc = build_meta(&out[n], tag, i % SW_NCLASS, 0, 2 + (i / SW_NCLASS) % 3, -1, -1, 0);
                break;
            case SW_COLORS: /* each class x color twice */
                rc = build_meta(&out[n], tag, i % SW_NCLASS, 0, 1, (i / SW_NCLASS) % SW_NCOLOR, -1,
                                0);
                break;
            case SW_POSITION: { /* all 24 pair x relation combos, then 12 more: each pair 6 times,
                                   each relation 9 times */
                int rel = i < 24 ? i / NPAIR : ((i - 24) / NPAIR) * 2 + (i - 24) % 2;
                rc = build_meta(&out[n], tag, p[0], p[1], 1, -1, -1, rel);
                break;
            }
            case SW_COLOR_ATTR: { /* each ordered pair 6 times, each pair x first color once, each
                                     color 6 times in each slot, the two colors differ */
                int ca = i / NPAIR, cb = (ca + 1 + (i % NPAIR) % (SW_NCOLOR - 1)) % SW_NCOLOR;
                rc = build_meta(&out[n], tag, p[0], p[1], 1, ca, cb, 0);
                break;
            }
            }
        }
    return rc ? rc : n;
}

int sw_write_eval_jsonl(const char *path) {
    gv_meta *set = ss_malloc(sizeof *set * SW_EVAL_N);
    if (!set) return SS_ENOMEM;
    int n = sw_eval_set(set, SW_EVAL_N);
    if (n < 0) {
        free(set);
        return n;
    }
    ss_atomic out; /* the one atomic writer (io/fsutil.h) */
    int rc = ss_atomic_open(&out, path);
    if (rc < 0) {
        free(set);
        return rc;
    }
    char line[2048];
    for (int i = 0; i < n && !rc; i++) {
        int len = gv_meta_to_json(&set[i], line, sizeof line);
        if (len < 0)
            rc = len;
        else if (fprintf(out.fp, "%s\n", line) < 0)
            rc = ss_fail(SS_EIO, "%s: cannot write (write: %s)", path, strerror(errno));
    }
    free(set);
    if (rc) ss_atomic_abort(&out);
    else rc = ss_atomic_commit(&out);
    return rc;
}

/* ---- training set -------------------------------------------------------------------------- */

int sw_write_dataset(const char *dir, uint64_t seed, long n, int w, int h) {
    if (n < 0) return ss_fail(SS_EARG, "negative dataset size %ld", n);
    int mrc = ss_mkdir_p(dir);
    if (mrc < 0) return mrc;
    size_t plen = strlen(dir) + 64;
    char *path = ss_malloc(plen);
    uint8_t *rgb = ss_malloc((size_t)w * (size_t)h * 3);
    if (!path || !rgb) {
        free(path);
        free(rgb);
        return SS_ENOMEM;
    }
    /* metadata.jsonl through the one atomic writer: it appears, complete, after the last image */
    snprintf(path, plen, "%s/metadata.jsonl", dir);
    ss_atomic meta;
    int rc = ss_atomic_open(&meta, path);
    if (rc < 0) {
        free(path);
        free(rgb);
        return rc;
    }
    char json[2048], sample[96];
    for (long i = 0; i < n && !rc; i++) {
        sw_scene s;
        gv_meta m;
        rc = sw_sample(seed, (uint64_t)i, -1, w, h, &s, &m);
        if (!rc) rc = sw_render(&s, rgb);
        int len = rc ? rc : gv_meta_to_json(&m, json, sizeof json);
        if (len < 0) {
            rc = len;
            break;
        }
        snprintf(sample, sizeof sample, "seed=%llu index=%ld", (unsigned long long)seed, i);
        const char *kv[] = {"prompt", m.prompt, "tag", m.tag, "metadata", json, "sample", sample};
        snprintf(path, plen, "%s/%05ld_0.png", dir, i);
        rc = png_write_rgb(path, w, h, rgb, kv, 4);
        if (!rc && fprintf(meta.fp, "%s\n", json) < 0)
            rc = ss_fail(SS_EIO, "%s/metadata.jsonl: cannot write (write: %s)", dir, strerror(errno));
    }
    if (rc) ss_atomic_abort(&meta);
    else rc = ss_atomic_commit(&meta);
    free(path);
    free(rgb);
    return rc;
}
