/* jsonfile: read a whole JSON file with jansson, with the project's error messages:
 * "PATH: cannot open: REASON" (SS_EIO; also for a folder or other non-regular file) or
 * "PATH: not valid JSON (line L, column C: TEXT)" (SS_EFORMAT). Duplicate object keys are
 * rejected. */
#ifndef SS_JSONFILE_H
#define SS_JSONFILE_H

#include <jansson.h>

int ss_json_load(const char *path, json_t **out);
/* Write o plus a newline atomically (ss_write_atomic: a unique temporary file in path's folder,
 * fsync, rename over path, fsync of the folder), so an existing file is never left half-written
 * and concurrent writers never collide. Takes the reference to o (decref'ed here, also on
 * failure). flags: jansson dump flags. */
int ss_json_save(const char *path, json_t *o, size_t flags);

#endif
