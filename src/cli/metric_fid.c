/* sinkscope metric fid: FID between two folders of PNG images, pytorch-fid's or clean-fid's
 * convention (the mode is printed with every result). */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/metric.h"
#include "core/err.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "metric/fid.h"
#include "metric/fidmode.h"
#include "metric/inception.h"

static const char FID_USAGE[] =
    "usage: sinkscope metric fid --inception PT_INCEPTION.pth [--mode pytorch-fid|clean-fid] DIR_A DIR_B\n"
    "                            [--features OUT.safetensors]\n"
    "\n"
    "  FID between the *.png images of two folders (at least 2 each), as `python -m pytorch_fid\n"
    "  DIR_A DIR_B` computes it: pytorch-fid's FID InceptionV3 (bilinear resize to 299 inside the\n"
    "  network, inputs scaled to [-1, 1]), 2048-d pool3 features, Frechet distance in float64 with\n"
    "  the exact trace of sqrt(S1 S2) (LAPACK) and pytorch-fid's rule of adding 1e-6 I to both\n"
    "  covariances only when the first square root is not finite (\"eps-if-nonfinite\").\n"
    "  --inception FILE  pt_inception-2015-12-05-6726825d.pth (either .pth format)\n"
    "  --mode MODE       pytorch-fid (default), or clean-fid: clean-fid's mode=\"clean\" preprocessing\n"
    "                    (each channel as a float32 PIL image resized to 299 with BICUBIC, clipped to\n"
    "                    [0, 255], no 8-bit rounding; then (x - 128) / 128) into the same network\n"
    "                    without its own resize, and clean-fid's Frechet distance (the same rule)\n"
    "  --features FILE   also write the features: safetensors with features_a [n_a, 2048] and\n"
    "                    features_b [n_b, 2048] (F32, images in sorted file-name order)\n"
    "  prints {\"fid\": x, \"mode\": ..., \"n_a\": ..., \"n_b\": ..., \"eps_rule\": ..., \"eps_added\": ...}\n";

/* extensions the packages also read (pytorch-fid: these; clean-fid: these and npy, JPEG, JPG,
 * PNG; both match case-sensitively); refused here rather than silently skipped */
static const char *const OTHER_EXT[] = {"bmp", "jpg", "jpeg", "pgm", "ppm", "tif", "tiff", "webp"};
static const char *const CLEAN_EXT[] = {"npy", "JPEG", "JPG"};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The sorted paths of DIR's *.png files (pytorch-fid globs '*.png', not recursive; clean-fid also
 * '*.PNG'). */
static int list_pngs(const char *dir, int clean, char ***out, int *n_out) {
    *out = NULL, *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return ss_fail(SS_EIO, "%s: cannot open folder", dir);
    char **v = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (!dot || dot == e->d_name) continue;
        if (strcmp(dot + 1, "png") && !(clean && !strcmp(dot + 1, "PNG"))) {
            for (size_t k = 0; k < sizeof OTHER_EXT / sizeof OTHER_EXT[0] + (clean ? 3 : 0); k++)
                if (!strcmp(dot + 1, k < 8 ? OTHER_EXT[k] : CLEAN_EXT[k - 8])) {
                    rc = ss_fail(SS_EFORMAT, "%s/%s: only PNG images are read (%s would include this file)", dir,
                                 e->d_name, clean ? "clean-fid" : "pytorch-fid");
                    break;
                }
            if (rc) break;
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                rc = ss_fail(SS_ENOMEM, "%s: out of memory listing the folder", dir);
                break;
            }
            v = nv;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        v[n] = ss_malloc(len);
        if (!v[n]) {
            rc = SS_ENOMEM;
            break;
        }
        snprintf(v[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (rc == 0 && n < 2) rc = ss_fail(SS_EMISSING, "%s: %d PNG image(s); the covariance needs at least 2", dir, n);
    if (rc < 0) {
        free_list(v, n);
        return rc;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v, *n_out = n;
    return 0;
}

static int folder_features(const inception_net *net, fid_mode mode, char **files, int n, float **out) {
    float *f = ss_malloc((size_t)n * INCEPTION_DIM * sizeof *f);
    int rc = f ? 0 : SS_ENOMEM;
    for (int i = 0; i < n && rc == 0; i++) {
        int w, h;
        uint8_t *rgb;
        rc = png_read_rgb(files[i], &w, &h, &rgb);
        if (rc == 0) {
            rc = fid_features_image(net, mode, rgb, w, h, f + (size_t)i * INCEPTION_DIM);
            if (rc < 0) ss_err_prefix(rc, "%s: ", files[i]);
            free(rgb);
        }
    }
    if (rc < 0) {
        free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int metric_fid(int argc, char **argv) {
    const char *inc_p = NULL, *mode = "pytorch-fid", *feat_p = NULL, *dirs[2] = {NULL, NULL};
    int ndirs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(FID_USAGE, stdout);
            return 0;
        }
        const char **dst = !strcmp(a, "--inception") ? &inc_p
                           : !strcmp(a, "--mode")    ? &mode
                           : !strcmp(a, "--features") ? &feat_p
                                                      : NULL;
        if (dst) {
            if (cli_need_value("metric fid", argc, argv, i) < 0) {
                fputs(FID_USAGE, stderr);
                return 2;
            }
            *dst = argv[++i];
        } else if (!strncmp(a, "--", 2) || ndirs == 2) {
            fprintf(stderr, "sinkscope metric fid: unexpected argument '%s'\n%s", a, FID_USAGE);
            return 2;
        } else {
            dirs[ndirs++] = a;
        }
    }
    if (!inc_p || ndirs != 2) {
        fprintf(stderr, "sinkscope metric fid: --inception and two folders are required\n%s", FID_USAGE);
        return 2;
    }
    fid_mode fm;
    if (fid_mode_parse(mode, &fm) < 0) {
        fprintf(stderr, "sinkscope metric fid: --mode must be pytorch-fid or clean-fid, not '%s'\n", mode);
        return 2;
    }
    const int clean = fm == FID_MODE_CLEAN;
    char **files[2] = {NULL, NULL};
    int nf[2] = {0, 0};
    float *feat[2] = {NULL, NULL};
    fid_stats st[2];
    memset(st, 0, sizeof st);
    inception_net *net = NULL;
    fid_result r;
    int rc = list_pngs(dirs[0], clean, &files[0], &nf[0]);
    if (rc == 0) rc = list_pngs(dirs[1], clean, &files[1], &nf[1]);
    if (rc == 0) rc = inception_load(&net, inc_p);
    for (int s = 0; s < 2 && rc == 0; s++) {
        rc = folder_features(net, fm, files[s], nf[s], &feat[s]);
        if (rc == 0) rc = fid_stats_compute_f32(&st[s], feat[s], nf[s], INCEPTION_DIM);
    }
    if (rc == 0) rc = fid_frechet(&st[0], &st[1], &r);
    if (rc == 0 && feat_p) {
        st_writer *w = st_writer_new();
        const int64_t sa[2] = {nf[0], INCEPTION_DIM}, sb[2] = {nf[1], INCEPTION_DIM};
        rc = w ? 0 : SS_ENOMEM;
        if (rc == 0) rc = st_writer_add(w, "features_a", ST_F32, 2, sa, feat[0]);
        if (rc == 0) rc = st_writer_add(w, "features_b", ST_F32, 2, sb, feat[1]);
        if (rc == 0) rc = st_writer_set_metadata(w, "mode", mode);
        if (rc == 0) rc = st_writer_save(w, feat_p);
        st_writer_free(w);
    }
    if (rc == 0) {
        json_t *o = json_pack("{s:f, s:s, s:i, s:i, s:s, s:b}", "fid", r.fid, "mode", mode, "n_a", nf[0], "n_b",
                              nf[1], "eps_rule", FID_RULE_EPS_IF_NONFINITE, "eps_added", r.eps_added);
        char *s = o ? json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
        if (s) puts(s);
        else rc = ss_fail(SS_ENOMEM, "out of memory");
        free(s);
        json_decref(o);
    }
    if (rc < 0) fprintf(stderr, "sinkscope metric fid: %s\n", ss_err());
    if (fflush(stdout) != 0 && rc == 0) rc = -1;
    for (int s = 0; s < 2; s++) {
        free_list(files[s], nf[s]);
        free(feat[s]);
        fid_stats_free(&st[s]);
    }
    inception_free(net);
    return rc < 0 ? 1 : 0;
}
