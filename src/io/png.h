/* png: small libpng wrappers for 8-bit RGB images with tEXt metadata.
 *
 * png_write_rgb writes an 8-bit RGB PNG with optional tEXt chunks (generation parameters go
 * there). Equal inputs give byte-identical files on the same machine (fixed zlib level and
 * filter, no tIME chunk). The file goes through the one atomic writer
 * (io/fsutil.h: a unique temporary file in the same folder, fsync, rename, folder fsync), so a
 * crash never leaves a half-written <path> and concurrent writers never share a temporary file.
 *
 * The readers accept any PNG (palette, gray, 16-bit, alpha, interlaced) and return 8-bit RGB
 * (alpha is dropped, not composited). png_read_text returns one tEXt/zTXt/iTXt value.
 * All functions return SS_OK or a negative SS_E* code with a one-line message naming the file.
 *
 * Memory is bounded by what the caller expects, not by what the file claims. The image size is
 * read from the IHDR header and checked before libpng decodes or allocates anything:
 *   - png_read_rgb_expect refuses any size but want_w x want_h (SS_ESHAPE);
 *   - png_read_rgb_max refuses images wider than max_w or taller than max_h (SS_ESHAPE);
 *   - every reader (png_read_rgb and png_read_text too) refuses images with a side above
 *     PNG_MAX_SIDE or more than PNG_MAX_PIXELS pixels (SS_ESHAPE).
 * Ancillary chunks are bounded too (a zTXt/iTXt "text bomb" is the same fault): a chunk that
 * claims more bytes than the file has left is an error (found before libpng allocates the
 * claimed length), text decompresses to at most PNG_MAX_TEXT_BYTES per chunk (a larger one is
 * dropped, as if absent), and at most PNG_MAX_CACHED_CHUNKS text/sPLT chunks are kept (the rest
 * are ignored): text costs at most 8 MiB beyond the file's own size. png_read_text decodes the
 * image data row by row into one row buffer (text after the image data is still found) and
 * never holds the whole image.
 */
#ifndef SS_PNG_H
#define SS_PNG_H

#include <stddef.h>
#include <stdint.h>

#define PNG_MAX_SIDE 16384                 /* largest width or height any reader accepts */
#define PNG_MAX_PIXELS (4096LL * 4096LL)   /* largest w*h any reader accepts (48 MiB of RGB) */
#define PNG_MAX_TEXT_BYTES (256 * 1024)    /* largest text chunk after decompression */
#define PNG_MAX_CACHED_CHUNKS 32           /* text (and sPLT) chunks kept per file */

/* text_kv holds n_kv key/value pairs flattened: {key0, value0, key1, value1, ...}.
 * Keys: 1-79 printable Latin-1 characters, no leading/trailing/double spaces (PNG rules). */
int png_write_rgb(const char *path, int w, int h, const uint8_t *rgb, const char *const *text_kv,
                  int n_kv);

/* *rgb is malloc'd (w*h*3 bytes, row-major); the caller frees it. Any size within the caps. */
int png_read_rgb(const char *path, int *w, int *h, uint8_t **rgb);
/* Exactly want_w x want_h (both > 0), checked before decoding. On a size mismatch *w and *h
 * still receive the header's size (*rgb stays NULL). */
int png_read_rgb_expect(const char *path, int want_w, int want_h, int *w, int *h, uint8_t **rgb);
/* At most max_w x max_h (both > 0; the caps apply as well), checked before decoding. *w and *h as
 * for png_read_rgb_expect. */
int png_read_rgb_max(const char *path, int max_w, int max_h, int *w, int *h, uint8_t **rgb);

/* *value is a malloc'd NUL-terminated copy of the first text chunk whose key equals `key`.
 * Returns SS_EMISSING (with *value = NULL) when the file has no such key. */
int png_read_text(const char *path, const char *key, char **value);

/* The same readers on a PNG held in memory; `label` names it in messages. For the rgb reader,
 * want_w/want_h > 0 asks for an exact size and max_w/max_h > 0 for a maximum (0: not asked). */
int png_mem_read_rgb(const uint8_t *data, size_t size, const char *label, int want_w, int want_h,
                     int max_w, int max_h, int *w, int *h, uint8_t **rgb);
int png_mem_read_text(const uint8_t *data, size_t size, const char *label, const char *key,
                      char **value);

#endif
