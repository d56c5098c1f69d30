/* score: GenEval-style scoring of a folder of generated ShapeWorld images.
 *
 * Naming convention: DIR/<prompt index>_<sample>.png, where <prompt index> is the 0-based index
 * of the record in the prompts JSONL (blank lines do not count), written with at least 5 digits
 * (zero padded, e.g. 00012_0.png, 00012_1.png), and <sample> is any non-negative integer
 * (sample number or seed). Other files in DIR are ignored. Each image is run through sw_detect
 * and scored with gv_score against its prompt's metadata; results are summarized like GenEval.
 */
#ifndef SS_SCORE_H
#define SS_SCORE_H

#include "eval/detect.h"
#include "eval/geneval.h"

#define SW_SCORE_MAX_DET 16 /* detections kept per image in the report (scoring uses all) */

typedef struct {
    char file[256]; /* file name inside DIR */
    int index;      /* prompt index */
    long long sample;
    int correct;
    char reason[512];
    int w, h;
    int n_det; /* detections stored below (at most SW_SCORE_MAX_DET) */
    sw_det det[SW_SCORE_MAX_DET];
} sw_image_result;

typedef struct {
    gv_meta *meta; /* the prompts */
    int n_meta;
    sw_image_result *img; /* sorted by (index, sample) */
    int n_img;
    gv_summary sum;
} sw_score_report;

/* Parse a file name of the convention; 0 on success. */
int sw_score_parse_name(const char *name, int *index, long long *sample);

/* Score every conventionally named image in `dir` against `prompts_path`. Fails (naming the file)
 * when the folder or prompts file cannot be read, an image is unreadable, an image's index has no
 * prompt, or there are no images at all. opts may be NULL. Free with sw_score_report_free. */
int sw_score_dir(const char *dir, const char *prompts_path, const sw_detect_opts *opts,
                 sw_score_report *out);
void sw_score_report_free(sw_score_report *r);

/* Write the report as JSON: summary, per-tag table, and one entry per image with its
 * detections. */
int sw_score_write_json(const sw_score_report *r, const char *path);

#endif
