/* libFuzzer target for the PNG readers: the input is read from memory as a PNG, with an exact
 * expected size, with a maximum, with the default caps, and for a text key. Checks the contract:
 * a failure leaves a one-line message naming the input and no pixels; a success returns a size
 * within what was asked, pixels that are all readable, and a NUL-terminated text value.
 * Memory stays bounded by the limits (libFuzzer's -rss_limit_mb catches a bomb). Build with
 * `make fuzz`; seeds in fuzz/seeds-png/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/png.h"

#define LABEL "fuzz.png"

static void check_error_message(void) {
    const char *msg = ss_err();
    if (strncmp(msg, LABEL ": ", strlen(LABEL) + 2) != 0) abort();
    if (strchr(msg, '\n')) abort();
}

static void check_rgb(int rc, int w, int h, const uint8_t *rgb, int want_w, int want_h, int max_w,
                      int max_h) {
    if (rc < 0) {
        if (rgb) abort();
        check_error_message();
        return;
    }
    if (!rgb || w < 1 || h < 1 || w > PNG_MAX_SIDE || h > PNG_MAX_SIDE ||
        (long long)w * h > PNG_MAX_PIXELS)
        abort();
    if (want_w && (w != want_w || h != want_h)) abort();
    if (max_w && (w > max_w || h > max_h)) abort();
    const volatile uint8_t *p = rgb;
    uint8_t acc = 0;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) acc ^= p[i];
    (void)acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int w = 0, h = 0;
    uint8_t *rgb = NULL;
    ss_err_clear();
    /* exact size: what score/run ask for (32x32 ShapeWorld images) */
    int rc = png_mem_read_rgb(data, size, LABEL, 32, 32, 0, 0, &w, &h, &rgb);
    check_rgb(rc, w, h, rgb, 32, 32, 0, 0);
    free(rgb);
    /* a maximum */
    rgb = NULL;
    ss_err_clear();
    rc = png_mem_read_rgb(data, size, LABEL, 0, 0, 256, 256, &w, &h, &rgb);
    check_rgb(rc, w, h, rgb, 0, 0, 256, 256);
    free(rgb);
    /* the default caps only (up to 4096x4096: decoding may take a while, memory stays ~48 MiB) */
    rgb = NULL;
    ss_err_clear();
    rc = png_mem_read_rgb(data, size, LABEL, 0, 0, 0, 0, &w, &h, &rgb);
    check_rgb(rc, w, h, rgb, 0, 0, 0, 0);
    free(rgb);
    /* text: the keys sinkscope writes */
    static const char *const KEYS[] = {"prompt", "condition"};
    for (int k = 0; k < 2; k++) {
        char *v = NULL;
        ss_err_clear();
        rc = png_mem_read_text(data, size, LABEL, KEYS[k], &v);
        if (rc < 0) {
            if (v) abort();
            check_error_message();
        } else {
            if (!v) abort();
            (void)strlen(v);
            free(v);
        }
    }
    return 0;
}
