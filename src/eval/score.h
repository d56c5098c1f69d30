/* score: GenEval-style scoring of a folder of generated ShapeWorld images.
 *
 * Naming convention (docs/experiment-format.md): DIR/<prompt index 05d>_<seed>.png, where
 * <prompt index> is the 0-based index of the record in the prompts JSONL (blank lines do not
 * count) as printf's %05d writes it (exactly 5 digits below 100000, no leading zero above), and
 * <seed> is an unsigned 64-bit integer as %llu writes it (no sign, no leading zero unless it is
 * 0). Names are parsed strictly, so one (prompt, seed) has exactly one name and is never counted
 * twice: a .png file not in this form (000000_0.png, 00000_00.png, 12_0.png) is skipped and
 * counted in n_skipped. Other files in DIR are ignored. Each image is run through sw_detect and
 * scored with gv_score against its prompt's metadata; results are summarized like GenEval.
 * Images larger than SW_MAX_SIZE a side are refused before they are decoded.
 */
#ifndef SS_SCORE_H
#define SS_SCORE_H

#include "eval/detect.h"
#include "eval/geneval.h"

#include <stdint.h>

#define SW_SCORE_MAX_DET 16  /* detections kept per image in the report (scoring uses all) */
#define SW_SCORE_NAME_MAX 256

typedef struct {
    char file[SW_SCORE_NAME_MAX]; /* file name inside DIR */
    int index;                    /* prompt index */
    uint64_t sample;              /* seed */
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
    int n_skipped;                            /* .png files not named canonically */
    char skipped_example[SW_SCORE_NAME_MAX]; /* the first of them */
} sw_score_report;

/* Parse a file name of the convention (strictly: canonical spelling only); 0 on success, -1
 * (outputs untouched) otherwise. */
int sw_score_parse_name(const char *name, int *index, uint64_t *sample);

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
