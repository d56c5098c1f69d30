/* fsutil: small file-system helpers shared by the writers. */
#ifndef SS_FSUTIL_H
#define SS_FSUTIL_H

/* mkdir -p: create path and any missing parents; an existing folder is fine.
 * Errors name the folder that could not be created. */
int ss_mkdir_p(const char *path);

#endif
