/* pathcheck: refusing outputs that are inputs (see pathcheck.h). */
#include "io/pathcheck.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"

#define PC_MAX_DEPTH 8

typedef struct {
    int exists;
    dev_t dev;
    ino_t ino;
} file_id;

static file_id id_of(const char *path) {
    struct stat st;
    file_id id = {0, 0, 0};
    if (path && stat(path, &st) == 0) id = (file_id){1, st.st_dev, st.st_ino};
    return id;
}

static int same_id(file_id a, file_id b) { return a.exists && b.exists && a.dev == b.dev && a.ino == b.ino; }

/* Canonical spelling of a path that may not exist: realpath of its folder + last component.
 * Returns 0, or -1 when the folder cannot be resolved (then nothing can be said). */
static int canonical(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--; /* "a/b/" names a/b */
    const char *slash = NULL;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/') slash = path + i;
    char dir[PATH_MAX], real[PATH_MAX];
    const char *base;
    size_t bl;
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
        base = path;
        bl = n;
    } else {
        size_t dl = (size_t)(slash - path);
        if (dl >= sizeof dir) return -1;
        memcpy(dir, path, dl ? dl : 1); /* "/x": the folder is "/" */
        dir[dl ? dl : 1] = 0;
        base = slash + 1;
        bl = n - (size_t)(slash + 1 - path);
    }
    if (!realpath(dir, real)) return -1;
    if (bl == 0 || (bl == 1 && base[0] == '.') || (bl == 2 && base[0] == '.' && base[1] == '.')) {
        /* "x/." or "x/..": resolve the whole thing */
        char whole[PATH_MAX];
        if (n >= sizeof whole) return -1;
        memcpy(whole, path, n);
        whole[n] = 0;
        if (!realpath(whole, real)) return -1;
        return snprintf(out, cap, "%s", real) < (int)cap ? 0 : -1;
    }
    int k = snprintf(out, cap, "%s%s%.*s", real, strcmp(real, "/") ? "/" : "", (int)bl, base);
    return k >= 0 && (size_t)k < cap ? 0 : -1;
}

int pc_same_file(const char *a, const char *b) {
    if (!a || !b) return 0;
    file_id ia = id_of(a), ib = id_of(b);
    if (ia.exists && ib.exists) return same_id(ia, ib);
    if (ia.exists != ib.exists) return 0; /* one exists, the other does not */
    char ca[PATH_MAX + 256], cb[PATH_MAX + 256];
    return canonical(a, ca, sizeof ca) == 0 && canonical(b, cb, sizeof cb) == 0 && !strcmp(ca, cb);
}

/* "<path>.tmp" (the model folder's DIR.tmp; older versions' file writers); 0 or -1 when it does not fit. */
static int tmp_name(const char *path, char *out, size_t cap) {
    int k = snprintf(out, cap, "%s.tmp", path);
    return k >= 0 && (size_t)k < cap ? 0 : -1;
}

int pc_check_output(const char *opt, const char *path, const pc_file *inputs, int n) {
    if (!path) return SS_OK;
    char tmp[PATH_MAX + 8];
    int have_tmp = tmp_name(path, tmp, sizeof tmp) == 0;
    file_id out = id_of(path), out_tmp = have_tmp ? id_of(tmp) : (file_id){0, 0, 0};
    for (int i = 0; i < n; i++) {
        if (!inputs[i].path) continue;
        file_id in = id_of(inputs[i].path);
        if (!in.exists) continue;
        if (same_id(out, in))
            return ss_fail(SS_EARG, "%s '%s' is the same file as %s '%s'; refusing to overwrite an input", opt, path,
                           inputs[i].opt, inputs[i].path);
        if (same_id(out_tmp, in))
            return ss_fail(SS_EARG,
                           "%s '%s': its temporary file '%s' is the same file as %s '%s'; refusing to overwrite an input",
                           opt, path, tmp, inputs[i].opt, inputs[i].path);
    }
    return SS_OK;
}

/* Walk dir (depth levels left); returns SS_OK, or SS_EARG naming the file found. */
static int walk(const char *opt, const char *path, file_id out, file_id out_tmp, const char *tmp, const char *dir_opt,
                const char *root, const char *dir, int depth, int (*is_input)(const char *, int)) {
    DIR *d = opendir(dir);
    if (!d) return SS_OK;
    struct dirent *e;
    int rc = SS_OK;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        int k = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (k < 0 || (size_t)k >= sizeof p) continue;
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < PC_MAX_DEPTH) rc = walk(opt, path, out, out_tmp, tmp, dir_opt, root, p, depth + 1, is_input);
            continue;
        }
        if (is_input && !is_input(e->d_name, depth)) continue;
        file_id in = {1, st.st_dev, st.st_ino};
        if (same_id(out, in) && !strcmp(path, p))
            rc = ss_fail(SS_EARG, "%s '%s' is a file of %s '%s'; refusing to overwrite an input", opt, path, dir_opt,
                         root);
        else if (same_id(out, in))
            rc = ss_fail(SS_EARG, "%s '%s' is the same file as '%s' in %s '%s'; refusing to overwrite an input", opt,
                         path, p, dir_opt, root);
        else if (same_id(out_tmp, in))
            rc = ss_fail(SS_EARG,
                         "%s '%s': its temporary file '%s' is the same file as '%s' in %s '%s'; refusing to "
                         "overwrite an input",
                         opt, path, tmp, p, dir_opt, root);
    }
    closedir(d);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int pc_is_model_file(const char *name, int depth) {
    if (depth > 0) return 1;
    if (!strcmp(name, "config.json") || !strcmp(name, "model_index.json") || ends_with(name, ".index.json")) return 1;
    return ends_with(name, ".safetensors") &&
           (!strncmp(name, "diffusion_pytorch_model", 23) || !strncmp(name, "model", 5));
}

int pc_check_output_tree(const char *opt, const char *path, const char *dir_opt, const char *dir,
                         int (*is_input)(const char *name, int depth)) {
    if (!path || !dir) return SS_OK;
    char tmp[PATH_MAX + 8];
    int have_tmp = tmp_name(path, tmp, sizeof tmp) == 0;
    file_id out = id_of(path), out_tmp = have_tmp ? id_of(tmp) : (file_id){0, 0, 0};
    if (!out.exists && !out_tmp.exists) return SS_OK; /* a new file cannot be an existing one */
    file_id d = id_of(dir);
    if (same_id(out, d))
        return ss_fail(SS_EARG, "%s '%s' is the folder %s '%s'", opt, path, dir_opt, dir);
    return walk(opt, path, out, out_tmp, tmp, dir_opt, dir, dir, 0, is_input);
}

int pc_check_outputs_differ(const char *opt_a, const char *a, const char *opt_b, const char *b) {
    if (!a || !b) return SS_OK;
    if (pc_same_file(a, b))
        return ss_fail(SS_EARG, "%s '%s' and %s '%s' are the same file; one output would replace the other", opt_a, a,
                       opt_b, b);
    return SS_OK;
}
