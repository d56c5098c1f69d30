/* fsutil: small file-system helpers shared by the writers. */
#ifndef SS_FSUTIL_H
#define SS_FSUTIL_H

#include <stddef.h>

/* mkdir -p: create path and any missing parents; an existing folder is fine.
 * Errors name the folder that could not be created. */
int ss_mkdir_p(const char *path);

/* Atomic replacement of path by len bytes of data: the bytes go to a fresh temporary file in the
 * same folder with a unique name (".NAME.XXXXXX", mkstemp: O_CREAT | O_EXCL; the result has mode 0644),
 * which is fsync'ed, closed and renamed over path; then the folder is fsync'ed so the rename is
 * durable. Concurrent writers of one path never share a temporary file: each rename installs one
 * complete file. On failure the temporary file is removed and an existing path is untouched;
 * the message names path and the failing step ("PATH: cannot write: REASON"). */
int ss_write_atomic(const char *path, const void *data, size_t len);

/* A unique, newly created empty file named "DIR/.PREFIX.XXXXXX" (mkstemp), its name in buf.
 * For helpers that need a scratch file beside their outputs; the caller unlinks it. */
int ss_mktemp_in(const char *dir, const char *prefix, char *buf, size_t cap);

/* fsync a folder (after a rename in it). */
int ss_fsync_dir(const char *dir);

#endif
