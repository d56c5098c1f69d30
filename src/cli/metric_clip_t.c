/* sinkscope metric clip-t | clip-score: CLIP-T (raw cosine, the paper's) or torchmetrics'
 * CLIPScore (max(100 cos, 0)) of image/prompt pairs; one JSON object per pair. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/metric.h"
#include "core/err.h"
#include "io/png.h"
#include "metric/clip_t.h"

static const char USAGE_FMT[] =
    "usage: sinkscope metric %s --model CLIP_DIR --pairs PAIRS.jsonl [--tokenizer DIR]\n"
    "\n"
    "  --model DIR       a transformers CLIPModel folder (config.json + model.safetensors), e.g.\n"
    "                    openai/clip-vit-base-patch32 (the paper's CLIP-T model)%s\n"
    "  --pairs FILE      one {\"image\": PATH, \"prompt\": TEXT} per line (PNG paths relative to the\n"
    "                    current folder)\n"
    "  --tokenizer DIR   the CLIP BPE tokenizer folder (vocab.json + merges.txt); default: --model\n"
    "\n"
    "Prints {\"image\": ..., \"prompt\": ..., \"%s\": x} per pair. %s\n";

static int run(int argc, char **argv, int clip_score) {
    const char *name = clip_score ? "clip-score" : "clip-t", *key = clip_score ? "clip_score" : "clip_t";
    char usage[2048];
    snprintf(usage, sizeof usage, USAGE_FMT, name,
             clip_score ? "; torchmetrics' default is\n                    openai/clip-vit-large-patch14" : "", key,
             clip_score ? "x = max(100 cos, 0), torchmetrics' CLIPScore\nconvention (per pair; torchmetrics averages them)."
                        : "x = cos of the normalised projected\nembeddings (open_clip's transform, 77 tokens with truncation): raw, no x100, no clamp.");
    const char *model = NULL, *pairs = NULL, *tok = NULL;
    cli_opt opts[] = {{"model", &model, NULL}, {"pairs", &pairs, NULL}, {"tokenizer", &tok, NULL}};
    int pr = cli_parse(argc, argv, opts, 3, usage);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model || !pairs) {
        fprintf(stderr, "sinkscope metric %s: --model and --pairs are required\n%s", name, usage);
        return 2;
    }
    FILE *in = fopen(pairs, "rb");
    if (!in) {
        fprintf(stderr, "sinkscope metric %s: %s: cannot open\n", name, pairs);
        return 1;
    }
    clipt *m;
    if (clipt_open(&m, model, tok) < 0) {
        fprintf(stderr, "sinkscope metric %s: %s\n", name, ss_err());
        fclose(in);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, n = 0;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &je);
        json_t *ji = json_object_get(j, "image"), *jp = json_object_get(j, "prompt");
        if (!j || !json_is_object(j)) {
            fprintf(stderr, "sinkscope metric %s: %s: line %ld is not a JSON object%s%s\n", name, pairs, lineno,
                    j ? "" : ": ", j ? "" : je.text);
            rc = 1;
        } else if (!json_is_string(ji) || !json_is_string(jp)) {
            fprintf(stderr, "sinkscope metric %s: %s: line %ld: '%s' is missing or not a string\n", name, pairs, lineno,
                    json_is_string(ji) ? "prompt" : "image");
            rc = 1;
        } else {
            const char *img = json_string_value(ji);
            int w, h;
            uint8_t *rgb = NULL;
            double cos = 0;
            if (png_read_rgb(img, &w, &h, &rgb) < 0 ||
                clipt_score(m, rgb, w, h, json_string_value(jp), json_string_length(jp), &cos, img) < 0) {
                fprintf(stderr, "sinkscope metric %s: %s: line %ld: %s\n", name, pairs, lineno, ss_err());
                rc = 1;
            } else {
                json_t *o = json_pack("{s:O, s:O, s:f}", "image", ji, "prompt", jp, key,
                                      clip_score ? clipt_clip_score(cos) : cos);
                char *s = o ? json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
                if (!s) {
                    fprintf(stderr, "sinkscope metric %s: out of memory\n", name);
                    rc = 1;
                } else {
                    puts(s);
                    n++;
                }
                free(s);
                json_decref(o);
            }
            free(rgb);
        }
        json_decref(j);
    }
    if (rc == 0 && ferror(in)) {
        fprintf(stderr, "sinkscope metric %s: %s: read error\n", name, pairs);
        rc = 1;
    }
    if (rc == 0 && n == 0) {
        fprintf(stderr, "sinkscope metric %s: %s: no pairs\n", name, pairs);
        rc = 1;
    }
    if (fflush(stdout) != 0 && rc == 0) {
        fprintf(stderr, "sinkscope metric %s: cannot write the output\n", name);
        rc = 1;
    }
    free(line);
    fclose(in);
    clipt_free(m);
    return rc;
}

int metric_clip_t(int argc, char **argv) { return run(argc, argv, 0); }
int metric_clip_score(int argc, char **argv) { return run(argc, argv, 1); }
