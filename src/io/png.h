/* png: small libpng wrappers for 8-bit RGB images with tEXt metadata.
 *
 * png_write_rgb writes an 8-bit RGB PNG with optional tEXt chunks (generation parameters go
 * there). Equal inputs give byte-identical files on the same machine (fixed zlib level and
 * filter, no tIME chunk). The file is written to "<path>.tmp" and renamed into place, so a
 * crash never leaves a half-written <path>.
 *
 * png_read_rgb reads any PNG (palette, gray, 16-bit, alpha, interlaced) and returns 8-bit RGB
 * (alpha is dropped, not composited). png_read_text returns one tEXt/zTXt/iTXt value.
 * All functions return SS_OK or a negative SS_E* code with a message naming the file.
 */
#ifndef SS_PNG_H
#define SS_PNG_H

#include <stdint.h>

/* text_kv holds n_kv key/value pairs flattened: {key0, value0, key1, value1, ...}.
 * Keys: 1-79 printable Latin-1 characters, no leading/trailing/double spaces (PNG rules). */
int png_write_rgb(const char *path, int w, int h, const uint8_t *rgb, const char *const *text_kv,
                  int n_kv);

/* *rgb is malloc'd (w*h*3 bytes, row-major); the caller frees it. */
int png_read_rgb(const char *path, int *w, int *h, uint8_t **rgb);

/* *value is a malloc'd NUL-terminated copy of the first text chunk whose key equals `key`.
 * Returns SS_EMISSING (with *value = NULL) when the file has no such key. */
int png_read_text(const char *path, const char *key, char **value);

#endif
