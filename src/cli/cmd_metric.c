/* sinkscope metric NAME ...: dispatches to one metric_* function per metric (cli/metric.h). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/metric.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} metric_entry;

static const metric_entry METRICS[] = {
    {"clip-t", metric_clip_t, "the paper's CLIP-T: raw cosine of CLIP image and prompt embeddings"},
    {"clip-score", metric_clip_score, "torchmetrics' CLIPScore convention: max(100 cos, 0)"},
    {"lpips", metric_lpips, "LPIPS (alex, v0.1) of PNG pairs, as the lpips package computes it"},
    {"fid", metric_fid, "FID between two PNG folders, as pytorch-fid or clean-fid computes it"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: sinkscope metric NAME [options]   (sinkscope metric NAME --help for its options)\n\n");
    for (size_t i = 0; i < sizeof METRICS / sizeof METRICS[0]; i++)
        fprintf(f, "  %-11s %s\n", METRICS[i].name, METRICS[i].help);
}

int cmd_metric(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof METRICS / sizeof METRICS[0]; i++)
        if (!strcmp(argv[1], METRICS[i].name)) return METRICS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sinkscope metric: unknown metric '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
