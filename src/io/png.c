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
#include <sys/stat.h>

#include "core/err.h"
#include "io/fsutil.h"

typedef struct {
    char msg[256];
    char warn[160]; /* the last warning (e.g. a text chunk dropped for its size) */
} png_errctx;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_errctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    /* warnings (e.g. unknown chunks) are not errors for us; the last one is kept for context */
    png_errctx *ctx = png_get_error_ptr(png);
    if (ctx) snprintf(ctx->warn, sizeof ctx->warn, "%s", msg ? msg : "");
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
    png_text *texts = ss_calloc((size_t)(n_kv > 0 ? n_kv : 1), sizeof *texts);
    if (!texts) return SS_ENOMEM;
    for (int i = 0; i < n_kv; i++) {
        texts[i].compression = PNG_TEXT_COMPRESSION_NONE; /* tEXt */
        texts[i].key = (png_charp)text_kv[2 * i];
        texts[i].text = (png_charp)text_kv[2 * i + 1];
        texts[i].text_length = strlen(text_kv[2 * i + 1]);
    }
    /* the one atomic writer (io/fsutil.h): a unique temporary file, fsync, rename, folder fsync.
     * `out` is set before setjmp and not changed until after the last libpng call. */
    ss_atomic out;
    int rc = ss_atomic_open(&out, path);
    if (rc < 0) {
        free(texts);
        return rc;
    }
    png_errctx ctx = {{0}, {0}};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        ss_atomic_abort(&out);
        free(texts);
        return ss_fail(SS_ENOMEM, "%s: cannot create libpng writer", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        ss_atomic_abort(&out);
        free(texts);
        return ss_fail(SS_EIO, "%s: PNG write failed: %s", path, ctx.msg);
    }
    png_init_io(png, out.fp);
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
    return ss_atomic_commit(&out);
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

/* Where the bytes come from: a file (f; size = its size) or memory (data, size); pos = bytes
 * consumed. The reader also follows the chunk structure of the stream (libpng reads it in
 * order, after the 8-byte signature): hdr collects each chunk's 8-byte header, skip counts the
 * bytes of the chunk's data and CRC still to come. A chunk that claims more bytes than the
 * source has left is refused here, before libpng allocates a buffer of the claimed length. */
typedef struct {
    FILE *f;
    const uint8_t *data;
    size_t size, pos;
    uint8_t hdr[8];
    int nhdr;
    uint64_t skip;
} png_src;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* p, n: the bytes just read; s->pos already counts them. */
static void track_chunks(png_structp png, png_src *s, const uint8_t *p, size_t n) {
    while (n > 0) {
        if (s->skip > 0) {
            size_t k = s->skip < n ? (size_t)s->skip : n;
            s->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        s->hdr[s->nhdr++] = *p++;
        n--;
        if (s->nhdr < 8) continue;
        s->nhdr = 0;
        uint32_t len = be32(s->hdr);
        s->skip = (uint64_t)len + 4; /* data + CRC */
        uint64_t left = (uint64_t)(s->size - s->pos) + n; /* bytes after this chunk header */
        if (s->skip > left) {
            char name[5], msg[160];
            for (int k = 0; k < 4; k++) {
                uint8_t c = s->hdr[4 + k];
                name[k] = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ? (char)c : '?';
            }
            name[4] = 0;
            snprintf(msg, sizeof msg, "chunk '%s' claims %u bytes, but the file has only %llu left",
                     name, (unsigned)len, (unsigned long long)(left >= 4 ? left - 4 : 0));
            png_error(png, msg);
        }
    }
}

static void src_read(png_structp png, png_bytep out, size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "unexpected end of file");
    if (s->f) {
        if (fread(out, 1, n, s->f) != n) png_error(png, "unexpected end of file");
    } else {
        memcpy(out, s->data + s->pos, n);
    }
    s->pos += n;
    track_chunks(png, s, out, n);
}

/* What the caller expects: an exact size (want_w, want_h > 0) and/or a maximum (max_w, max_h
 * > 0). The caps PNG_MAX_SIDE / PNG_MAX_PIXELS always apply. */
typedef struct {
    int want_w, want_h, max_w, max_h;
} png_limits;

static int check_size(const char *label, uint32_t pw, uint32_t ph, const png_limits *lim) {
    if (lim->want_w > 0 && (pw != (uint32_t)lim->want_w || ph != (uint32_t)lim->want_h))
        return ss_fail(SS_ESHAPE, "%s: image is %ux%u, expected %dx%d", label, (unsigned)pw,
                       (unsigned)ph, lim->want_w, lim->want_h);
    if (lim->max_w > 0 && (pw > (uint32_t)lim->max_w || ph > (uint32_t)lim->max_h))
        return ss_fail(SS_ESHAPE, "%s: image is %ux%u, larger than the %dx%d allowed here", label,
                       (unsigned)pw, (unsigned)ph, lim->max_w, lim->max_h);
    if (pw > PNG_MAX_SIDE || ph > PNG_MAX_SIDE || (long long)pw * ph > PNG_MAX_PIXELS)
        return ss_fail(SS_ESHAPE,
                       "%s: image is %ux%u, larger than any image this program reads (at most "
                       "%d px a side and %lld pixels)",
                       label, (unsigned)pw, (unsigned)ph, PNG_MAX_SIDE, (long long)PNG_MAX_PIXELS);
    return SS_OK;
}

/* Check the size in the IHDR chunk (bytes 8..32 of a PNG) against the limits, before libpng
 * reads anything else. A malformed IHDR is left to libpng to report. */
static int check_header(const char *label, const uint8_t *head, size_t n, const png_limits *lim,
                        int *w, int *h) {
    if (n < 24 || be32(head + 8) != 13 || memcmp(head + 12, "IHDR", 4) != 0) return SS_OK;
    uint32_t pw = be32(head + 16), ph = be32(head + 20);
    if (pw == 0 || ph == 0 || pw > 0x7fffffffu || ph > 0x7fffffffu) return SS_OK; /* libpng's */
    if (w) *w = (int)pw;
    if (h) *h = (int)ph;
    return check_size(label, pw, ph, lim);
}

/* Reads the whole PNG. Pixels go to *rgb when rgb != NULL (otherwise the image data is decoded
 * row by row into one row buffer and dropped); the value of `key` to *value when key != NULL
 * (searched before and after the image data). */
static int read_png(const char *label, png_src *src, const png_limits *lim, int *w, int *h,
                    uint8_t **rgb, const char *key, char **value) {
    uint8_t head[33];
    size_t nhead;
    if (src->f) {
        nhead = fread(head, 1, sizeof head, src->f);
        if (fseek(src->f, 8, SEEK_SET) != 0) nhead = 0;
    } else {
        nhead = src->size < sizeof head ? src->size : sizeof head;
        if (nhead) memcpy(head, src->data, nhead);
    }
    src->pos = 8;
    if (nhead < 8 || png_sig_cmp(head, 0, 8)) return ss_fail(SS_EFORMAT, "%s: not a PNG file", label);
    int rc = check_header(label, head, nhead, lim, w, h);
    if (rc) return rc;
    png_errctx ctx = {{0}, {0}};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop end = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || !end) {
        png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, end ? &end : NULL);
        return ss_fail(SS_ENOMEM, "%s: cannot create libpng reader", label);
    }
    uint8_t *volatile img = NULL;
    png_bytep *volatile rows = NULL;
    char *volatile found = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, &end);
        free(img);
        free(rows);
        free(found);
        return ss_fail(SS_EFORMAT, "%s: corrupt PNG: %s", label, ctx.msg);
    }
    png_set_read_fn(png, src, src_read);
    png_set_sig_bytes(png, 8);
    /* Second line of defence (check_header already refused these sizes with a clear message),
     * and the bounds on ancillary chunks (text bombs). */
    png_set_user_limits(png, PNG_MAX_SIDE, PNG_MAX_SIDE);
    png_set_chunk_cache_max(png, PNG_MAX_CACHED_CHUNKS);
    png_set_chunk_malloc_max(png, PNG_MAX_TEXT_BYTES);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_read_info(png, info);
    png_uint_32 pw, ph;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &interlace, NULL, NULL);
    /* check_header saw this IHDR already; this only catches a disagreement with libpng */
    if (check_size(label, pw, ph, lim)) {
        snprintf(ctx.msg, sizeof ctx.msg, "%s", ss_err());
        png_destroy_read_struct(&png, &info, &end);
        return ss_fail(SS_ESHAPE, "%s", ctx.msg);
    }
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
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)pw * 3) png_error(png, "unexpected row size after conversion to RGB");
    if (rgb) {
        img = malloc(rowbytes * ph);
        rows = malloc(sizeof(png_bytep) * ph);
        if (!img || !rows) png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < ph; y++)
            rows[y] = img + (size_t)y * rowbytes;
        png_read_image(png, rows);
    } else { /* text only: the rows pass through one buffer */
        img = malloc(rowbytes);
        if (!img) png_error(png, "out of memory");
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < ph; y++)
                png_read_row(png, img, NULL);
    }
    png_read_end(png, end);
    if (key && !found) {
        char *v = NULL;
        int r = find_text(png, end, key, &v);
        if (r < 0) png_error(png, "out of memory");
        found = v;
    }
    png_destroy_read_struct(&png, &info, &end);
    free(rows);
    if (w) *w = (int)pw;
    if (h) *h = (int)ph;
    if (rgb)
        *rgb = img;
    else
        free(img);
    if (key) {
        *value = found;
        if (!found && ctx.warn[0])
            return ss_fail(SS_EMISSING, "%s: no text chunk with key '%s' (libpng: %s)", label, key,
                           ctx.warn);
        if (!found) return ss_fail(SS_EMISSING, "%s: no text chunk with key '%s'", label, key);
    }
    return SS_OK;
}

static int read_file(const char *path, const png_limits *lim, int *w, int *h, uint8_t **rgb,
                     const char *key, char **value) {
    FILE *f = fopen(path, "rb");
    if (!f) return ss_fail(SS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ss_fail(SS_EIO, "%s: not a regular file", path);
    }
    png_src src = {.f = f, .size = (size_t)st.st_size};
    int rc = read_png(path, &src, lim, w, h, rgb, key, value);
    fclose(f);
    return rc;
}

int png_read_rgb(const char *path, int *w, int *h, uint8_t **rgb) {
    if (!path || !w || !h || !rgb) return ss_fail(SS_EARG, "png_read_rgb: NULL argument");
    *rgb = NULL;
    png_limits lim = {0, 0, 0, 0};
    return read_file(path, &lim, w, h, rgb, NULL, NULL);
}

int png_read_rgb_expect(const char *path, int want_w, int want_h, int *w, int *h, uint8_t **rgb) {
    if (!path || !w || !h || !rgb) return ss_fail(SS_EARG, "png_read_rgb_expect: NULL argument");
    *rgb = NULL;
    if (want_w < 1 || want_h < 1)
        return ss_fail(SS_EARG, "%s: bad expected image size %dx%d", path, want_w, want_h);
    png_limits lim = {want_w, want_h, 0, 0};
    return read_file(path, &lim, w, h, rgb, NULL, NULL);
}

int png_read_rgb_max(const char *path, int max_w, int max_h, int *w, int *h, uint8_t **rgb) {
    if (!path || !w || !h || !rgb) return ss_fail(SS_EARG, "png_read_rgb_max: NULL argument");
    *rgb = NULL;
    if (max_w < 1 || max_h < 1)
        return ss_fail(SS_EARG, "%s: bad maximum image size %dx%d", path, max_w, max_h);
    png_limits lim = {0, 0, max_w, max_h};
    return read_file(path, &lim, w, h, rgb, NULL, NULL);
}

int png_read_text(const char *path, const char *key, char **value) {
    if (!path || !key || !value) return ss_fail(SS_EARG, "png_read_text: NULL argument");
    *value = NULL;
    png_limits lim = {0, 0, 0, 0};
    return read_file(path, &lim, NULL, NULL, NULL, key, value);
}

int png_mem_read_rgb(const uint8_t *data, size_t size, const char *label, int want_w, int want_h,
                     int max_w, int max_h, int *w, int *h, uint8_t **rgb) {
    if ((!data && size) || !label || !w || !h || !rgb)
        return ss_fail(SS_EARG, "png_mem_read_rgb: NULL argument");
    *rgb = NULL;
    if (want_w < 0 || want_h < 0 || (want_w > 0) != (want_h > 0) || max_w < 0 || max_h < 0 ||
        (max_w > 0) != (max_h > 0))
        return ss_fail(SS_EARG, "%s: bad image size limits", label);
    png_limits lim = {want_w, want_h, max_w, max_h};
    png_src src = {.data = data, .size = size};
    return read_png(label, &src, &lim, w, h, rgb, NULL, NULL);
}

int png_mem_read_text(const uint8_t *data, size_t size, const char *label, const char *key,
                      char **value) {
    if ((!data && size) || !label || !key || !value)
        return ss_fail(SS_EARG, "png_mem_read_text: NULL argument");
    *value = NULL;
    png_limits lim = {0, 0, 0, 0};
    png_src src = {.data = data, .size = size};
    return read_png(label, &src, &lim, NULL, NULL, NULL, key, value);
}
