/* shapeworld: a synthetic text-to-image world where alignment can be measured exactly.
 *
 * Images are W x H RGB (default 32 x 32) on a plain mid-gray background (128,128,128) holding
 * 1-4 flat, non-overlapping shapes. Classes: circle, square, triangle (apex up, base = height),
 * each drawn inside a square box of side `size` px (8-12 px at 32 px for 1-2 objects, 7-11 for 3,
 * 7-10 for 4; scaled with min(W,H)/32), at least 2 px apart (scaled) and 1 px from the border.
 * Colors (GenEval color words): red, orange, yellow, green, blue, purple. Edges are
 * anti-aliased by 4x4 supersampling in integer arithmetic, so rendering is bit-exact
 * everywhere, and so is sampling (splitmix64, integer geometry).
 *
 * Captions follow GenEval's six tags and wording ("a photo of ..."):
 *   single_object  "a photo of a circle"
 *   two_object     "a photo of a circle and a square"
 *   counting       "a photo of three triangles"  (2-4 objects; exclude count+1, as GenEval)
 *   colors         "a photo of an orange circle"
 *   position       "a photo of a circle right of a square"  (left of, right of, above, below)
 *   color_attr     "a photo of a red circle and a blue square"
 * and come with GenEval-schema metadata (gv_meta). Scenes hold exactly the objects the caption
 * names; objects whose color the caption leaves open get a random color. Position scenes
 * satisfy the relation with margin 0.2 (GenEval scores with 0.1) and no other relation.
 */
#ifndef SS_SHAPEWORLD_H
#define SS_SHAPEWORLD_H

#include <stdint.h>

#include "eval/geneval.h"

enum { SW_CIRCLE, SW_SQUARE, SW_TRIANGLE, SW_NCLASS };
enum { SW_RED, SW_ORANGE, SW_YELLOW, SW_GREEN, SW_BLUE, SW_PURPLE, SW_NCOLOR };
enum {
    SW_SINGLE_OBJECT,
    SW_TWO_OBJECT,
    SW_COUNTING,
    SW_COLORS,
    SW_POSITION,
    SW_COLOR_ATTR,
    SW_NTAG
};

#define SW_MAX_OBJ 4
#define SW_DEFAULT_SIZE 32
#define SW_MIN_SIZE 16   /* smallest supported W or H */
#define SW_MAX_SIZE 1024 /* largest supported W or H */
#define SW_EVAL_PER_TAG 36
#define SW_EVAL_N (SW_EVAL_PER_TAG * SW_NTAG)

extern const uint8_t SW_BACKGROUND[3];
extern const uint8_t SW_PALETTE[SW_NCOLOR][3];

typedef struct {
    int cls, color;     /* SW_CIRCLE.., SW_RED.. */
    int x0, y0, x1, y1; /* bounding box in px, x1/y1 exclusive (x1 - x0 = y1 - y0 = size) */
    double cx, cy;      /* center of the box */
} sw_object;

typedef struct {
    int w, h, n;
    sw_object obj[SW_MAX_OBJ];
} sw_scene;

const char *sw_class_name(int cls);    /* "circle" ... (NULL when out of range) */
const char *sw_class_plural(int cls);  /* "circles" ... */
const char *sw_color_name(int color);  /* "red" ... */
const char *sw_tag_name(int tag);      /* "single_object" ... (GenEval's tag names) */
int sw_class_from_name(const char *s); /* -1 when unknown; same for the two below */
int sw_color_from_name(const char *s);
int sw_tag_from_name(const char *s);

/* Every word a caption can contain: NULL-terminated, lower case, no punctuation, no repeats. */
const char *const *sw_vocabulary(void);

/* Random GenEval metadata + caption for `tag`, reproducible from (seed, index). */
int sw_random_meta(uint64_t seed, uint64_t index, int tag, gv_meta *out);
/* Build m->prompt from m's tag and clauses (the caption templates above). */
int sw_make_prompt(gv_meta *m);
/* A random W x H layout that satisfies metadata `m` (ShapeWorld classes/colors only),
 * reproducible from seed. Checks itself by scoring its own ground truth. */
int sw_scene_for_meta(const gv_meta *m, uint64_t seed, int w, int h, sw_scene *out);
/* Draw a scene; rgb holds w*h*3 bytes. */
int sw_render(const sw_scene *s, uint8_t *rgb);
/* sw_scene_for_meta + sw_render. scene may be NULL. */
int sw_render_meta(const gv_meta *m, uint64_t seed, int w, int h, uint8_t *rgb, sw_scene *scene);
/* One training example from (seed, index): tag < 0 picks tag = index % SW_NTAG (balanced).
 * Fills the scene (render it with sw_render) and the metadata (caption = meta->prompt). */
int sw_sample(uint64_t seed, uint64_t index, int tag, int w, int h, sw_scene *scene, gv_meta *meta);
/* Shape geometry, shared by the renderer and the detector's templates. Is the point (u, v) (in
 * 1/8 px) inside shape `cls` drawn in the box [X, X+W) x [Y, Y+H) (same units)? Circles become
 * ellipses; triangles point up, apex at the top edge's midpoint. Exact integer tests. */
int sw_shape_contains(int cls, int64_t X, int64_t Y, int64_t W, int64_t H, int64_t u, int64_t v);
/* Coverage 0..16 (4x4 sub-samples) of pixel (px, py) by the shape in box x, y, bw, bh (px). */
int sw_shape_coverage(int cls, int x, int y, int bw, int bh, int px, int py);

/* Ground-truth detections of a scene (score 1, class/color names), for gv_score. */
void sw_scene_dets(const sw_scene *s, gv_det *out);

/* The fixed, balanced evaluation prompt set (SW_EVAL_PER_TAG per tag, GenEval tag order).
 * Returns the count (SW_EVAL_N) or a negative code when cap is too small. */
int sw_eval_set(gv_meta *out, int cap);
/* Write it as JSONL in GenEval's format (data/shapeworld_eval.jsonl is this output). */
int sw_write_eval_jsonl(const char *path);

/* Write a training set: DIR/<index, 5+ digits>_0.png for index 0..n-1 (sw_sample with tag
 * index % 6) with tEXt keys prompt, tag, metadata (GenEval JSON) and sample ("seed=S index=I"),
 * plus DIR/metadata.jsonl whose line i is image i's metadata, so that
 * `sinkscope score --images DIR --prompts DIR/metadata.jsonl` scores it. DIR is created if
 * missing. */
int sw_write_dataset(const char *dir, uint64_t seed, long n, int w, int h);

#endif
