/* png: libpng wrappers (see png.h). libpng reports errors through longjmp, so every object that
 * must be released after a failure is created before setjmp and not reassigned afterwards, or
 * is reached through a volatile pointer. */
#include "io/png.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

typedef struct {
    char msg[256];
} png_errctx;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_errctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* warnings (e.g. unknown chunks) are not errors for us */
}

/* PNG keyword rules: 1-79 Latin-1 printable characters (32-126, 161-255), no leading, trailing
 * or consecutive spaces. */
static int valid_keyword(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!((c >= 32 && c <= 126) || c >= 161)) return 0;
        if (c == ' ' && k[i + 1] == ' ') return 0;
    }
    return 1;
}

int png_write_rgb(const char *path, int w, int h, const uint8_t *rgb, const char *const *text_kv,
                  int n_kv) {
    if (!path || !rgb) return ss_fail(SS_EARG, "png_write_rgb: NULL path or pixels");
    if (w <= 0 || h <= 0 || w > (1 << 20) || h > (1 << 20))
        return ss_fail(SS_EARG, "%s: bad image size %dx%d", path, w, h);
    if (n_kv < 0 || (n_kv > 0 && !text_kv))
        return ss_fail(SS_EARG, "%s: bad text chunk list (n_kv=%d)", path, n_kv);
    for (int i = 0; i < n_kv; i++) {
        const char *k = text_kv[2 * i], *v = text_kv[2 * i + 1];
        if (!k || !v) return ss_fail(SS_EARG, "%s: text chunk %d has a NULL key or value", path, i);
        if (!valid_keyword(k))
            return ss_fail(SS_EARG, "%s: invalid PNG text key '%s' (1-79 printable chars)", path,
                           k);
    }
    size_t plen = strlen(path);
    char *tmp = ss_malloc(plen + 5);
    if (!tmp) return SS_ENOMEM;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    png_text *texts = ss_calloc((size_t)(n_kv > 0 ? n_kv : 1), sizeof *texts);
    if (!texts) {
        free(tmp);
        return SS_ENOMEM;
    }
    for (int i = 0; i < n_kv; i++) {
        texts[i].compression = PNG_TEXT_COMPRESSION_NONE; /* tEXt */
        texts[i].key = (png_charp)text_kv[2 * i];
        texts[i].text = (png_charp)text_kv[2 * i + 1];
        texts[i].text_length = strlen(text_kv[2 * i + 1]);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(texts);
        free(tmp);
        return ss_fail(SS_EIO, "%s: cannot open '%s.tmp' for writing: %s", path, path, strerror(e));
    }
    png_errctx ctx = {{0}};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        fclose(f);
        remove(tmp);
        free(texts);
        free(tmp);
        return ss_fail(SS_ENOMEM, "%s: cannot create libpng writer", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(tmp);
        free(texts);
        free(tmp);
        return ss_fail(SS_EIO, "%s: PNG write failed: %s", path, ctx.msg);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_ALL_FILTERS);
    if (n_kv > 0) png_set_text(png, info, texts, n_kv);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(texts);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        remove(tmp);
        free(tmp);
        return ss_fail(SS_EIO, "%s: error writing '%s.tmp'", path, path);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        free(tmp);
        return ss_fail(SS_EIO, "%s: cannot rename '%s.tmp' into place: %s", path, path,
                       strerror(e));
    }
    free(tmp);
    return SS_OK;
}

static int find_text(png_structp png, png_infop info, const char *key, char **value) {
    png_textp t = NULL;
    int n = 0;
    if (!info || !png_get_text(png, info, &t, &n)) return 0;
    for (int i = 0; i < n; i++) {
        if (t[i].key && !strcmp(t[i].key, key)) {
            size_t len =
                t[i].compression >= PNG_ITXT_COMPRESSION_NONE ? t[i].itxt_length : t[i].text_length;
            char *v = malloc(len + 1);
            if (!v) return -1;
            if (len) memcpy(v, t[i].text, len);
            v[len] = 0;
            *value = v;
            return 1;
        }
    }
    return 0;
}

/* Reads the whole file. Pixels go to *rgb when rgb != NULL; the value of `key` to *value when
 * key != NULL (searched before and after the image data). */
static int read_png(const char *path, int *w, int *h, uint8_t **rgb, const char *key,
                    char **value) {
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(f);
        return ss_fail(SS_EFORMAT, "%s: not a PNG file", path);
    }
    png_errctx ctx = {{0}};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop end = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || !end) {
        png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, end ? &end : NULL);
        fclose(f);
        return ss_fail(SS_ENOMEM, "%s: cannot create libpng reader", path);
    }
    uint8_t *volatile img = NULL;
    png_bytep *volatile rows = NULL;
    char *volatile found = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, &end);
        fclose(f);
        free(img);
        free(rows);
        free(found);
        return ss_fail(SS_EFORMAT, "%s: corrupt PNG: %s", path, ctx.msg);
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, 1u << 16, 1u << 16);
    png_read_info(png, info);
    png_uint_32 pw, ph;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &interlace, NULL, NULL);
    if (key) {
        char *v = NULL;
        int r = find_text(png, info, key, &v);
        if (r < 0) png_error(png, "out of memory");
        found = v;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if (ctype & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)pw * 3) png_error(png, "unexpected row size after conversion to RGB");
    img = malloc(rowbytes * ph);
    rows = malloc(sizeof(png_bytep) * ph);
    if (!img || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < ph; y++)
        rows[y] = img + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, end);
    if (key && !found) {
        char *v = NULL;
        int r = find_text(png, end, key, &v);
        if (r < 0) png_error(png, "out of memory");
        found = v;
    }
    png_destroy_read_struct(&png, &info, &end);
    fclose(f);
    free(rows);
    if (w) *w = (int)pw;
    if (h) *h = (int)ph;
    if (rgb)
        *rgb = img;
    else
        free(img);
    if (key) {
        *value = found;
        if (!found) return ss_fail(SS_EMISSING, "%s: no text chunk with key '%s'", path, key);
    }
    return SS_OK;
}

int png_read_rgb(const char *path, int *w, int *h, uint8_t **rgb) {
    if (!path || !w || !h || !rgb) return ss_fail(SS_EARG, "png_read_rgb: NULL argument");
    *rgb = NULL;
    return read_png(path, w, h, rgb, NULL, NULL);
}

int png_read_text(const char *path, const char *key, char **value) {
    if (!path || !key || !value) return ss_fail(SS_EARG, "png_read_text: NULL argument");
    *value = NULL;
    return read_png(path, NULL, NULL, NULL, key, value);
}
