/* sinkscope: the command-line program. Dispatches to one cmd_* function per sub-command. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command COMMANDS[] = {
    {"forward", cmd_forward, "run one transformer forward pass on inputs from a safetensors file"},
    {"init", cmd_init, "create a random-weight model folder from a config.json"},
    {"generate", cmd_generate, "text to PNG with a pipeline folder, optionally under a sink intervention"},
    {"score", cmd_score, "GenEval-style score of generated ShapeWorld images (exact detector)"},
    {"report", cmd_report, "statistics report of an experiment folder: tables, CSV, summary.json, report.html"},
    {"run", cmd_run, "run an experiment: seed-paired images, metrics and sink probes for a list of conditions"},
    {"train", cmd_train, "train a pixel-space model and its text encoder (rectified flow)"},
    {"tokenize", cmd_tokenize, "CLIP BPE / T5 SentencePiece token ids of JSON-string prompts, one per line"},
    {"encode", cmd_encode, "run a CLIP or T5 text encoder (transformers folder) on input_ids"},
    {"vae", cmd_vae, "AutoencoderKL (diffusers vae/ folder): decode latents and encode images"},
    {"metric", cmd_metric, "image metrics of the paper: clip-t (and clip-score), lpips, one JSON object per line"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: sinkscope COMMAND [options]   (sinkscope COMMAND --help for its options)\n\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sinkscope: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
