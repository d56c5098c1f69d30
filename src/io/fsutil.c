#include "io/fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"

int ss_mkdir_p(const char *path) {
    char buf[4400];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return ss_fail(SS_EARG, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        const int end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            struct stat sb;
            if (mkdir(buf, 0777) && !(errno == EEXIST && stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode)))
                return ss_fail(SS_EIO, "%s: cannot create the folder: %s", buf, strerror(errno));
            if (end) return 0;
            *p = '/';
        }
    }
}
