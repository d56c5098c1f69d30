/* fsutil: small file-system helpers shared by the writers. */
#ifndef SS_FSUTIL_H
#define SS_FSUTIL_H

#include <stddef.h>
#include <stdio.h>

/* mkdir -p: create path and any missing parents; an existing folder is fine.
 * Errors name the folder that could not be created. */
int ss_mkdir_p(const char *path);

/* The whole of a regular file (anything else is an error naming it: a folder, FIFO, device),
 * at most `max` bytes (else an error calling it too large for `what`, e.g. "a prompt file"),
 * into *buf (malloc'd, NUL-terminated; *len bytes without the NUL). */
int ss_read_file(const char *path, size_t max, const char *what, char **buf, size_t *len);

/* The one atomic writer of sinkscope. Every output file is written to a fresh temporary file in
 * its own folder with a unique name (".NAME.XXXXXX", mkstemp: O_CREAT | O_EXCL; mode 0644), which
 * is fsync'ed, closed and renamed over path; then the folder is fsync'ed so the rename is durable.
 * Concurrent writers of one path never share a temporary file: each rename installs one complete
 * file, and the last rename wins. On failure the temporary file is removed and an existing path
 * is untouched; the message names path and the failing step ("PATH: cannot write (STEP: REASON)").
 *
 * Streaming writers (libpng, safetensors, line files) use the trio:
 *
 *     ss_atomic a;
 *     if ((rc = ss_atomic_open(&a, path)) < 0) return rc;
 *     fwrite(..., a.fp);                          // or hand a.fp to a library
 *     return bad ? (ss_atomic_abort(&a), rc) : ss_atomic_commit(&a);
 *
 * ss_write_atomic is the one-buffer case. */
typedef struct {
    FILE *fp;  /* the temporary file, open for writing ("wb"); NULL once committed or aborted */
    char *path; /* the target */
    char *tmp;  /* the temporary file's name */
    char *dir;  /* the folder of both */
} ss_atomic;

/* Creates the temporary file beside path. On failure nothing is left and *a needs no abort. */
int ss_atomic_open(ss_atomic *a, const char *path);
/* Flushes, fsyncs and closes the temporary file, renames it over path and fsyncs the folder.
 * Always releases *a; on failure the temporary file is removed and path is untouched. */
int ss_atomic_commit(ss_atomic *a);
/* Closes and removes the temporary file and releases *a; path is untouched. A no-op on a zeroed
 * or already committed/aborted *a. */
void ss_atomic_abort(ss_atomic *a);

/* Atomic replacement of path by len bytes of data (open, write, commit). */
int ss_write_atomic(const char *path, const void *data, size_t len);

/* 1 when name (a file name without its folder) has the shape of one of the writers' temporary
 * files, ".NAME.XXXXXX" (six characters from mkstemp's alphabet after the last dot); for sweeping
 * the leftovers of a killed writer. */
int ss_is_atomic_tmp(const char *name);

/* A unique, newly created empty file named "DIR/.PREFIX.XXXXXX" (mkstemp), its name in buf.
 * For helpers that need a scratch file beside their outputs; the caller unlinks it. */
int ss_mktemp_in(const char *dir, const char *prefix, char *buf, size_t cap);

/* fsync a folder (after a rename in it). */
int ss_fsync_dir(const char *dir);

#endif
