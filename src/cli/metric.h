/* The `sinkscope metric NAME` sub-commands, one function each; argv[0] is the metric name.
 * Return the process exit code. cmd_metric (cli/commands.h) dispatches to them. */
#ifndef SS_CLI_METRIC_H
#define SS_CLI_METRIC_H
int metric_clip_t(int argc, char **argv);     /* the paper's CLIP-T: raw cosine */
int metric_clip_score(int argc, char **argv); /* torchmetrics' CLIPScore: max(100 cos, 0) */
int metric_lpips(int argc, char **argv);      /* LPIPS alex v0.1 of PNG pairs */
int metric_fid(int argc, char **argv);        /* pytorch-fid's FID between two PNG folders */
#endif
