/* score: scoring a folder of generated images (see score.h). */
#include "eval/score.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "eval/shapeworld.h"
#include "io/jsonfile.h"
#include "io/png.h"

int sw_score_parse_name(const char *name, int *index, uint64_t *sample) {
    const char *p = name;
    /* prompt index, as %05d writes it: exactly 5 digits below 100000, otherwise no leading 0 */
    int nd = 0;
    long long idx = 0;
    while (p[nd] >= '0' && p[nd] <= '9') {
        if (nd >= 9) return -1; /* beyond an int's worth of prompts */
        idx = idx * 10 + (p[nd] - '0');
        nd++;
    }
    if (nd < 5 || (nd > 5 && p[0] == '0')) return -1;
    p += nd;
    if (*p++ != '_') return -1;
    /* seed, as %llu writes a uint64_t: no sign, no leading 0 unless the value is 0, no overflow */
    nd = 0;
    uint64_t smp = 0;
    while (p[nd] >= '0' && p[nd] <= '9') {
        unsigned dgt = (unsigned)(p[nd] - '0');
        if (smp > (UINT64_MAX - dgt) / 10) return -1;
        smp = smp * 10 + dgt;
        nd++;
    }
    if (nd < 1 || (nd > 1 && p[0] == '0')) return -1;
    p += nd;
    if (strcmp(p, ".png") != 0) return -1;
    *index = (int)idx;
    *sample = smp;
    return 0;
}

static int cmp_result(const void *pa, const void *pb) {
    const sw_image_result *a = pa, *b = pb;
    if (a->index != b->index) return a->index < b->index ? -1 : 1;
    if (a->sample != b->sample) return a->sample < b->sample ? -1 : 1;
    return strcmp(a->file, b->file);
}

void sw_score_report_free(sw_score_report *r) {
    free(r->meta);
    free(r->img);
    gv_summary_free(&r->sum);
    memset(r, 0, sizeof *r);
}

/* List the conventionally named files of dir, sorted. */
static int list_images(const char *dir, sw_image_result **out, int *n_out, int *n_skipped,
                       char *skipped) {
    DIR *d = opendir(dir);
    if (!d) return ss_fail(SS_EIO, "%s: cannot open image folder: %s", dir, strerror(errno));
    sw_image_result *arr = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int index;
        uint64_t sample;
        if (sw_score_parse_name(e->d_name, &index, &sample)) {
            /* a PNG that is not named canonically is not counted (so that no (prompt, seed) can
             * be counted twice under two spellings); the caller reports how many */
            size_t nl = strlen(e->d_name);
            if (nl >= 4 && !strcmp(e->d_name + nl - 4, ".png")) {
                if (!*n_skipped || strcmp(e->d_name, skipped) < 0) /* the first by name */
                    snprintf(skipped, SW_SCORE_NAME_MAX, "%s", e->d_name);
                (*n_skipped)++;
            }
            continue;
        }
        /* canonical names are at most 9 + 1 + 20 + 4 characters */
        if (n == cap) {
            int ncap = cap ? 2 * cap : 256;
            sw_image_result *na = realloc(arr, (size_t)ncap * sizeof *na);
            if (!na) {
                free(arr);
                closedir(d);
                return ss_fail(SS_ENOMEM, "%s: out of memory listing images", dir);
            }
            arr = na;
            cap = ncap;
        }
        memset(&arr[n], 0, sizeof arr[n]);
        snprintf(arr[n].file, sizeof arr[n].file, "%s", e->d_name);
        arr[n].index = index;
        arr[n].sample = sample;
        n++;
    }
    closedir(d);
    if (n > 1) qsort(arr, (size_t)n, sizeof *arr, cmp_result);
    *out = arr;
    *n_out = n;
    return SS_OK;
}

int sw_score_dir(const char *dir, const char *prompts_path, const sw_detect_opts *opts,
                 sw_score_report *out) {
    memset(out, 0, sizeof *out);
    int rc = gv_load_jsonl(prompts_path, &out->meta, &out->n_meta);
    if (rc) return rc;
    rc = list_images(dir, &out->img, &out->n_img, &out->n_skipped, out->skipped_example);
    if (rc) goto fail;
    if (out->n_img == 0) {
        rc = ss_fail(
            SS_EMISSING,
            "%s: no images named <prompt index %%05d>_<seed>.png (e.g. 00000_0.png)%s%s", dir,
            out->n_skipped ? "; skipped, not in that form: " : "", out->skipped_example);
        goto fail;
    }
    rc = gv_summary_init(&out->sum, out->n_meta);
    if (rc) goto fail;
    size_t plen = strlen(dir) + 300;
    char *path = ss_malloc(plen);
    if (!path) {
        rc = SS_ENOMEM;
        goto fail;
    }
    sw_det *dets = NULL;
    gv_det *gdets = NULL;
    int dcap = 0;
    for (int i = 0; i < out->n_img && !rc; i++) {
        sw_image_result *r = &out->img[i];
        snprintf(path, plen, "%s/%s", dir, r->file);
        if (r->index >= out->n_meta) {
            rc = ss_fail(SS_EARG, "%s: prompt index %d, but %s has %d prompts (0..%d)", path,
                         r->index, prompts_path, out->n_meta, out->n_meta - 1);
            break;
        }
        uint8_t *rgb = NULL;
        /* ShapeWorld images are at most SW_MAX_SIZE a side: refused before decoding */
        rc = png_read_rgb_max(path, SW_MAX_SIZE, SW_MAX_SIZE, &r->w, &r->h, &rgb);
        if (rc) break;
        int want = r->w * r->h / 4 + 1; /* more components than this cannot exist (min area 4) */
        if (want > dcap) {
            free(dets);
            free(gdets);
            dets = malloc((size_t)want * sizeof *dets);
            gdets = malloc((size_t)want * sizeof *gdets);
            dcap = want;
            if (!dets || !gdets) {
                free(rgb);
                rc = ss_fail(SS_ENOMEM, "%s: out of memory", path);
                break;
            }
        }
        int n = sw_detect(rgb, r->w, r->h, opts, dets, dcap);
        free(rgb);
        if (n < 0) {
            rc = ss_err_prefix(n, "%s: ", path);
            break;
        }
        sw_dets_to_gv(dets, n, gdets);
        const gv_meta *m = &out->meta[r->index];
        int c = gv_score(m, gdets, n, r->reason, sizeof r->reason);
        if (c < 0) {
            rc = ss_err_prefix(c, "%s: ", path);
            break;
        }
        r->correct = c;
        r->n_det = n < SW_SCORE_MAX_DET ? n : SW_SCORE_MAX_DET;
        memcpy(r->det, dets, (size_t)r->n_det * sizeof *dets);
        rc = gv_summary_add(&out->sum, r->index, m->tag, c);
    }
    free(dets);
    free(gdets);
    free(path);
    if (!rc) return SS_OK;
fail:
    sw_score_report_free(out);
    return rc;
}

int sw_score_write_json(const sw_score_report *r, const char *path) {
    const gv_summary *s = &r->sum;
    json_t *root = json_object();
    int ps = gv_summary_prompts_scored(s), pc = gv_summary_prompts_correct(s);
    json_object_set_new(root, "images", json_integer(s->images));
    json_object_set_new(root, "images_correct", json_integer(s->images_correct));
    json_object_set_new(root, "prompts_total", json_integer(r->n_meta));
    json_object_set_new(root, "prompts_scored", json_integer(ps));
    json_object_set_new(root, "prompts_correct", json_integer(pc));
    json_object_set_new(root, "correct_images",
                        json_real(s->images ? (double)s->images_correct / (double)s->images : 0));
    json_object_set_new(root, "correct_prompts", json_real(ps ? (double)pc / ps : 0));
    json_t *tags = json_array();
    for (int t = 0; t < s->n_tags; t++) {
        json_t *o = json_object();
        json_object_set_new(o, "tag", json_string(s->tag[t]));
        json_object_set_new(o, "correct", json_integer(s->tag_correct[t]));
        json_object_set_new(o, "total", json_integer(s->tag_total[t]));
        json_object_set_new(o, "accuracy", json_real(gv_summary_tag_accuracy(s, t)));
        json_array_append_new(tags, o);
    }
    json_object_set_new(root, "tags", tags);
    json_object_set_new(root, "overall", json_real(gv_summary_overall(s)));
    json_t *imgs = json_array();
    for (int i = 0; i < r->n_img; i++) {
        const sw_image_result *im = &r->img[i];
        const gv_meta *m = &r->meta[im->index];
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(im->file));
        json_object_set_new(o, "index", json_integer(im->index));
        /* JSON integers are signed 64-bit here: larger seeds are written as decimal strings */
        json_object_set_new(o, "sample", im->sample <= (uint64_t)INT64_MAX
                                             ? json_integer((json_int_t)im->sample)
                                             : json_sprintf("%llu", (unsigned long long)im->sample));
        json_object_set_new(o, "tag", json_string(m->tag));
        json_object_set_new(o, "prompt", json_string(m->prompt));
        json_object_set_new(o, "correct", json_boolean(im->correct));
        json_object_set_new(o, "reason", json_string(im->reason));
        json_t *dl = json_array();
        for (int k = 0; k < im->n_det; k++) {
            const sw_det *d = &im->det[k];
            json_t *dj = json_object();
            json_object_set_new(dj, "class", json_string(sw_class_name(d->cls)));
            const char *cn = sw_color_name(d->color);
            json_object_set_new(dj, "color", cn ? json_string(cn) : json_null());
            json_object_set_new(dj, "box", json_pack("[iiii]", d->x0, d->y0, d->x1, d->y1));
            json_object_set_new(dj, "score", json_real(d->score));
            json_array_append_new(dl, dj);
        }
        json_object_set_new(o, "detections", dl);
        json_array_append_new(imgs, o);
    }
    json_object_set_new(root, "results", imgs);
    /* path.tmp + rename: an existing report is never left half-written */
    return ss_json_save(path, root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
}
