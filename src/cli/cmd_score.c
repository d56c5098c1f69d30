/* sinkscope score: GenEval-style scoring of generated ShapeWorld images. */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "eval/score.h"
#include "io/pathcheck.h"

static void score_usage(FILE *f) {
    fputs("usage: sinkscope score --images DIR --prompts FILE.jsonl [--json OUT.json]\n"
          "\n"
          "Scores generated ShapeWorld images the way GenEval does, with the exact ShapeWorld\n"
          "detector instead of an object detector + CLIP.\n"
          "\n"
          "  --images DIR     folder of PNG images named <prompt index 05d>_<seed>.png:\n"
          "                   <prompt index> is the 0-based record number in FILE.jsonl (blank\n"
          "                   lines not counted), zero-padded to 5 digits (%05d); <seed> is an\n"
          "                   unsigned 64-bit integer without leading zeros. Examples:\n"
          "                   00000_0.png 00000_1.png 00215_3.png. PNG files named otherwise\n"
          "                   (000000_0.png, 00000_00.png) are skipped with a note; other files\n"
          "                   are ignored. Any PNG up to 1024x1024 (gray/palette/16-bit/alpha)\n"
          "                   is accepted.\n"
          "  --prompts FILE   GenEval-schema metadata, one JSON object per line (tag, prompt,\n"
          "                   include, exclude), e.g. data/shapeworld_eval.jsonl\n"
          "  --json OUT.json  also write a JSON report: summary, per-tag table and, per image,\n"
          "                   correctness, reasons and detections\n"
          "\n"
          "Prints % correct images, % correct prompts (any image of the prompt correct), the\n"
          "accuracy per tag and the overall score = mean of the per-tag accuracies.\n",
          f);
}

/* The files of --images that score reads: canonically named PNGs at the top of the folder. */
static int scored_image(const char *name, int depth) {
    int index;
    uint64_t seed;
    return depth == 0 && sw_score_parse_name(name, &index, &seed) == 0;
}

int cmd_score(int argc, char **argv) {
    const char *images = NULL, *prompts = NULL, *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            score_usage(stdout);
            return 0;
        }
        const char **dst = !strcmp(a, "--images")    ? &images
                           : !strcmp(a, "--prompts") ? &prompts
                           : !strcmp(a, "--json")    ? &json
                                                     : NULL;
        if (!dst) {
            fprintf(stderr, "sinkscope score: unknown option '%s'\n\n", a);
            score_usage(stderr);
            return 2;
        }
        if (cli_need_value("score", argc, argv, i) < 0) return 2; /* none, or the next option */
        if (*dst) {
            fprintf(stderr, "sinkscope score: option %s is given more than once\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!images || !prompts) {
        fprintf(stderr, "sinkscope score: --images and --prompts are required\n\n");
        score_usage(stderr);
        return 2;
    }
    /* the JSON report may not overwrite the prompts or any file of the image folder */
    const pc_file inputs[] = {{"--prompts", prompts}};
    if (json && (pc_check_output("--json", json, inputs, 1) || pc_check_output_tree("--json", json, "--images", images, scored_image))) {
        fprintf(stderr, "sinkscope score: %s\n", ss_err());
        return 2;
    }
    sw_score_report rep;
    if (sw_score_dir(images, prompts, NULL, &rep)) {
        fprintf(stderr, "sinkscope score: %s\n", ss_err());
        return 1;
    }
    if (rep.n_skipped)
        fprintf(stderr,
                "sinkscope score: note: %d PNG file%s in %s %s not named <prompt index 05d>_<seed>.png "
                "(e.g. '%s') and %s not scored\n",
                rep.n_skipped, rep.n_skipped > 1 ? "s" : "", images, rep.n_skipped > 1 ? "are" : "is",
                rep.skipped_example, rep.n_skipped > 1 ? "are" : "is");
    int scored = gv_summary_prompts_scored(&rep.sum);
    if (scored < rep.n_meta)
        fprintf(stderr, "sinkscope score: note: %d of %d prompts in %s have no images\n",
                rep.n_meta - scored, rep.n_meta, prompts);
    gv_summary_print(&rep.sum, stdout);
    int rc = 0;
    if (json && sw_score_write_json(&rep, json)) {
        fprintf(stderr, "sinkscope score: %s\n", ss_err());
        rc = 1;
    }
    sw_score_report_free(&rep);
    return rc;
}
