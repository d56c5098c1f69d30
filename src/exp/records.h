/* records: the crash-safe files of an experiment folder (docs/experiment-format.md).
 *
 * records.jsonl: one complete JSON line per finished image, appended with a single write() to
 * a descriptor opened with O_APPEND, then fsync. On open, the file is scanned: every key is
 * collected; a last line without its newline, or one that does not parse, is a write cut short
 * by a crash, so the file is truncated to the end of the last good line (and that item is
 * redone). A bad line anywhere else is not a crash artefact and is reported as an error.
 * Several records of one key: the last one (the newest) is the record of that key.
 *
 * Atomic files (experiment.json, images): written by the one atomic writer (io/fsutil.h:
 * ss_write_atomic, png_write_rgb): a unique temporary file, fsync'ed, renamed into place and the
 * folder fsync'ed, so a reader sees the old file or the complete new one.
 */
#ifndef SS_RECORDS_H
#define SS_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* A set of strings (record keys), each with a value (a long; -1 when added by keyset_add). */
typedef struct {
    char **slot;
    long *val;
    size_t cap, n;
} keyset;

void keyset_init(keyset *s);
void keyset_free(keyset *s);
int keyset_has(const keyset *s, const char *key);
/* 1 if added, 0 if already present (value unchanged), negative on allocation failure. */
int keyset_add(keyset *s, const char *key);
/* Adds the key or sets its value: 1 if added, 0 if updated, negative on allocation failure. */
int keyset_put(keyset *s, const char *key, long val);
/* The key's value, or -1 when absent. */
long keyset_get(const keyset *s, const char *key);

/* Seeds are unsigned 64-bit. JSON readers (jansson included) hold integers as signed 64-bit, so
 * a value up to 2^63 - 1 is written as a JSON integer and a larger one as a string of its
 * decimal digits ("18446744073709551615"). exp_json_get_u64 reads either back (0), or returns
 * -1 for anything else (negative, fractional, not digits, past 2^64 - 1). */
json_t *exp_json_u64(uint64_t v);
int exp_json_get_u64(const json_t *v, uint64_t *out);

/* What a record says about its image: "image" (relative path, NULL if absent), "image_bytes"
 * (-1 if absent) and "image_sha256" ("" if absent; records before 2026-12 have neither); and
 * about its Inception features (`run --metrics fid`): "features" (relative path, NULL if absent)
 * and "features_sha256" ("" if absent). */
typedef struct {
    char *image;
    long long bytes;
    char sha256[65];
    char *features;
    char features_sha256[65];
} record_image;

typedef struct {
    int fd;           /* O_APPEND descriptor */
    char *path;
    keyset keys;      /* key -> index into img of its newest record */
    record_image *img;
    size_t n_img, cap_img;
    long n_lines;     /* complete records */
    long truncated;   /* bytes cut off a torn last line at open (0 if none) */
    long duplicates;  /* records superseded by a later record of the same key (run writes one
                         when it redoes an item whose image failed verification) */
} records_file;

/* Opens (creating if missing) and scans `path`, repairing a torn last line. A path that is not
 * a regular file (a folder, FIFO, device...) is an error naming it. */
int records_open(records_file *rf, const char *path);
void records_close(records_file *rf);
/* The image fields of the newest record of `key`, or NULL when there is none. */
const record_image *records_image(const records_file *rf, const char *key);
/* Appends one record (a json_t * object with a string "key"): one write of the compact line
 * with its newline, then fsync. The key is added to rf->keys (superseding an older record). */
int records_append(records_file *rf, const void *record);

/* JSON dump flags: records keep 9 significant digits (exact for the float32 statistics);
 * experiment.json keeps 17 so its numbers read back as the same doubles. */
#define RECORDS_JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
#define CONFIG_JSON_FLAGS (JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17))

#include "io/fsutil.h" /* ss_mkdir_p */

#endif
