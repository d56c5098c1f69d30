/* sinkscope report: the statistics report of an experiment folder written by `sinkscope run`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "report/report.h"

static const char USAGE[] =
    "usage: sinkscope report EXP [--margin X] [--clip-t-margin X] [--bootstrap N] [--fid-bootstrap N] [--seed N]\n"
    "                        [--out DIR] [--quiet]\n"
    "\n"
    "Reads EXP/experiment.json and EXP/records.jsonl (docs/experiment-format.md), pairs every condition with\n"
    "the baseline by (prompt index, seed) and writes summary.json, CSV files and a self-contained report.html.\n"
    "\n"
    "  EXP              experiment folder\n"
    "  --margin X       equivalence margin for GenEval accuracy, TOST at alpha 0.05 (default 0.05 = 5 points)\n"
    "  --clip-t-margin X  equivalence margin for the paired ΔCLIP-T of `run --metrics clip_t` (default 0.002,\n"
    "                   the paper's)\n"
    "  --bootstrap N    percentile bootstrap resamples for every 95% CI (default 1000)\n"
    "  --fid-bootstrap N  resamples for the CI of FID_shift and its calibration rows (`run --metrics fid`;\n"
    "                   default 200, 0: no CI); each is an exact FID of N pairs, O(N^3) (about 0.1 s at N = 553)\n"
    "  --seed N         bootstrap seed (default 0); each CI mixes it with its analysis' name\n"
    "  --out DIR        output folder (default EXP/report)\n"
    "  --quiet          do not print the tables\n"
    "\n"
    "Analyses: per condition and metric (geneval, 1-SSIM, MSE, PSNR, SSIM) the mean paired effect with CI,\n"
    "t-test p and Holm p; TOST equivalence on alignment; sink vs equal-budget random control (a select=random\n"
    "condition equal in every other field), difference of differences with one-sided p; dose trends over\n"
    "conditions that differ only in eta or only in k; per-tag breakdown; baseline sink dynamics (MaxMass,\n"
    "entropy, top-5, index-0 overlap, text share, top-1 key locality) and intervention verification.\n";

int cmd_report(int argc, char **argv) {
    const char *margin_s = NULL, *cmargin_s = NULL, *boot_s = NULL, *fboot_s = NULL, *seed_s = NULL, *out = NULL, *exp = NULL;
    int quiet = 0;
    cli_opt opts[] = {{"margin", &margin_s, NULL}, {"clip-t-margin", &cmargin_s, NULL}, {"bootstrap", &boot_s, NULL},
                      {"fid-bootstrap", &fboot_s, NULL}, {"seed", &seed_s, NULL},
                      {"out", &out, NULL},         {"quiet", NULL, &quiet}};
    /* the one positional argument (EXP) goes first or anywhere between options */
    char *rest[64];
    int nrest = 0;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        int takes_value = 0;
        for (size_t j = 0; j < sizeof opts / sizeof opts[0]; j++)
            if (argv[i][0] == '-' && argv[i][1] == '-' && !strcmp(argv[i] + 2, opts[j].name)) takes_value = opts[j].value != NULL;
        if (argv[i][0] != '-' && !exp) {
            exp = argv[i];
            continue;
        }
        if (nrest >= 62) {
            fprintf(stderr, "sinkscope report: too many arguments\n%s", USAGE);
            return 2;
        }
        rest[nrest++] = argv[i];
        if (takes_value && i + 1 < argc) rest[nrest++] = argv[++i];
    }
    int pr = cli_parse(nrest, rest, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!exp) {
        fprintf(stderr, "sinkscope report: no experiment folder given\n%s", USAGE);
        return 2;
    }
    report_opts o;
    report_opts_default(&o);
    o.exp_dir = exp;
    o.out_dir = out;
    o.print_table = !quiet;
    long v;
    if (margin_s && cli_double("report", "margin", margin_s, 1e-9, 0.999999, &o.margin)) return 2;
    if (cmargin_s && cli_double("report", "clip-t-margin", cmargin_s, 1e-9, 2, &o.margin_clip_t)) return 2;
    if (boot_s) {
        if (cli_int("report", "bootstrap", boot_s, 1, 10000000, &v)) return 2;
        o.bootstrap = (int)v;
    }
    if (fboot_s) {
        if (cli_int("report", "fid-bootstrap", fboot_s, 0, 10000000, &v)) return 2;
        o.fid_bootstrap = (int)v;
    }
    if (seed_s) { /* any unsigned 64-bit value, like the run's seeds */
        char *end;
        errno = 0;
        unsigned long long s = strtoull(seed_s, &end, 10);
        if (seed_s[0] < '0' || seed_s[0] > '9' || *end || errno) {
            fprintf(stderr, "sinkscope report: --seed '%s' is not an integer in [0, 18446744073709551615]\n", seed_s);
            return 2;
        }
        o.seed = (uint64_t)s;
    }
    if (report_run(&o) < 0) {
        fprintf(stderr, "sinkscope report: %s\n", ss_err());
        return 1;
    }
    return 0;
}
