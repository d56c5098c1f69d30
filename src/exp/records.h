/* records: the crash-safe files of an experiment folder (docs/experiment-format.md).
 *
 * records.jsonl: one complete JSON line per finished image, appended with a single write() to
 * a descriptor opened with O_APPEND, then fsync. On open, the file is scanned: every key is
 * collected; a last line without its newline, or one that does not parse, is a write cut short
 * by a crash, so the file is truncated to the end of the last good line (and that item is
 * redone). A bad line anywhere else is not a crash artefact and is reported as an error.
 *
 * Atomic files (experiment.json, images): written to "<path>.tmp", fsync'ed, renamed into place
 * and the folder fsync'ed, so a reader sees the old file or the complete new one.
 */
#ifndef SS_RECORDS_H
#define SS_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* A set of strings (record keys). */
typedef struct {
    char **slot;
    size_t cap, n;
} keyset;

void keyset_init(keyset *s);
void keyset_free(keyset *s);
int keyset_has(const keyset *s, const char *key);
/* 1 if added, 0 if already present, negative on allocation failure. */
int keyset_add(keyset *s, const char *key);

typedef struct {
    int fd;           /* O_APPEND descriptor */
    char *path;
    keyset keys;
    long n_lines;     /* complete records */
    long truncated;   /* bytes cut off a torn last line at open (0 if none) */
    long duplicates;  /* keys seen more than once at open (never written by run; reported) */
} records_file;

/* Opens (creating if missing) and scans `path`, repairing a torn last line. */
int records_open(records_file *rf, const char *path);
void records_close(records_file *rf);
/* Appends one record (a json_t * object with a string "key"): one write of the compact line
 * with its newline, then fsync. The key is added to rf->keys. */
int records_append(records_file *rf, const void *record);

/* mkdir -p. */
/* fsync a folder (makes a rename inside it durable). */
int fsync_dir(const char *dir);
/* Writes bytes atomically (tmp + fsync + rename + folder fsync). */
int write_file_atomic(const char *path, const void *data, size_t n);
/* Makes an existing "<path>.tmp" durable and renames it to path (+ folder fsync). */
int commit_tmp(const char *path);

/* JSON dump flags: records keep 9 significant digits (exact for the float32 statistics);
 * experiment.json keeps 17 so its numbers read back as the same doubles. */
#define RECORDS_JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
#define CONFIG_JSON_FLAGS (JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17))

#include "io/fsutil.h" /* ss_mkdir_p */

#endif
