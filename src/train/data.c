/* Data sources for the trainer: a built-in toy world (colored squares) for tests and smoke runs,
 * and ShapeWorld (eval/shapeworld.h) when that module is part of the build. */
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/rng.h"
#include "train/train.h"

/* ---- toy: one or two axis-aligned squares on mid-gray ---- */

static const char *const TOY_COLORS[4] = {"red", "green", "blue", "yellow"};
static const uint8_t TOY_RGB[4][3] = {{220, 40, 40}, {40, 190, 60}, {50, 80, 230}, {235, 215, 40}};
static const char *const TOY_WORDS[] = {"a", "photo", "of", "red", "green", "blue", "yellow", "square",
                                        "left", "right", NULL};

typedef struct {
    int size;
} toy_ctx;

static toy_ctx TOY_SIZES[65]; /* one static context per size (8..64): the struct holds no state */

static void toy_square(uint8_t *rgb, int W, int x0, int y0, int s, int color) {
    for (int y = y0; y < y0 + s; y++)
        for (int x = x0; x < x0 + s; x++) memcpy(rgb + ((size_t)y * W + x) * 3, TOY_RGB[color], 3);
}

static int toy_sample(void *vctx, uint64_t index, uint8_t *rgb, char *caption, size_t cap) {
    const int W = ((toy_ctx *)vctx)->size;
    rng_t r;
    rng_init(&r, 0x70E, index);
    memset(rgb, 128, (size_t)W * W * 3);
    const int two = rng_below(&r, 2), s = W / 4 + (int)rng_below(&r, (uint64_t)(W / 8 + 1));
    const int ca = (int)rng_below(&r, 4);
    if (!two) {
        toy_square(rgb, W, (int)rng_below(&r, (uint64_t)(W - s)), (int)rng_below(&r, (uint64_t)(W - s)), s, ca);
        snprintf(caption, cap, "a photo of a %s square", TOY_COLORS[ca]);
        return 0;
    }
    const int cb = (ca + 1 + (int)rng_below(&r, 3)) % 4, half = W / 2;
    /* a in the left half, b in the right half: "a left of b" (or "b right of a") */
    const int xa = (int)rng_below(&r, (uint64_t)(half - s + 1)), xb = half + (int)rng_below(&r, (uint64_t)(half - s + 1));
    toy_square(rgb, W, xa, (int)rng_below(&r, (uint64_t)(W - s)), s, ca);
    toy_square(rgb, W, xb, (int)rng_below(&r, (uint64_t)(W - s)), s, cb);
    if (rng_below(&r, 2))
        snprintf(caption, cap, "a photo of a %s square left of a %s square", TOY_COLORS[ca], TOY_COLORS[cb]);
    else
        snprintf(caption, cap, "a photo of a %s square right of a %s square", TOY_COLORS[cb], TOY_COLORS[ca]);
    return 0;
}

tr_data tr_data_toy(int size) {
    if (size < 8) size = 8;
    if (size > 64) size = 64;
    TOY_SIZES[size].size = size;
    return (tr_data){.fn = toy_sample, .ctx = &TOY_SIZES[size], .words = TOY_WORDS, .width = size, .height = size,
                     .parallel = 1, .name = "toy-squares"};
}

/* ---- ShapeWorld ---- */

#if defined(__has_include)
#if __has_include("eval/shapeworld.h")
#define HAVE_SHAPEWORLD 1
#endif
#endif

#ifdef HAVE_SHAPEWORLD
#include "eval/shapeworld.h"

typedef struct {
    uint64_t seed;
    int size;
} sw_ctx;

static sw_ctx SW_CTX;
static char SW_NAME[64];

static int sw_train_sample(void *vctx, uint64_t index, uint8_t *rgb, char *caption, size_t cap) {
    const sw_ctx *c = vctx;
    sw_scene scene;
    gv_meta meta;
    int rc = sw_sample(c->seed, index, -1, c->size, c->size, &scene, &meta);
    if (rc < 0 || (rc = sw_render(&scene, rgb)) < 0) return rc;
    if ((size_t)snprintf(caption, cap, "%s", meta.prompt) >= cap)
        return ss_fail(SS_EARG, "ShapeWorld caption longer than %zu bytes", cap);
    return 0;
}

int tr_data_shapeworld(tr_data *out, int size, uint64_t seed) {
    SW_CTX = (sw_ctx){.seed = seed, .size = size};
    snprintf(SW_NAME, sizeof SW_NAME, "shapeworld(seed=%llu)", (unsigned long long)seed);
    *out = (tr_data){.fn = sw_train_sample, .ctx = &SW_CTX, .words = sw_vocabulary(), .width = size, .height = size,
                     .parallel = 1, .name = SW_NAME};
    return 0;
}
#else
int tr_data_shapeworld(tr_data *out, int size, uint64_t seed) {
    memset(out, 0, sizeof *out);
    return ss_fail(SS_EMISSING, "this build has no ShapeWorld (src/eval/shapeworld.c); use --data toy");
}
#endif
