/* generate_common: what `sinkscope generate` does the same way on every diffusers pipeline family
 * (generate_sd3.c, generate_flux.c, generate_pixart.c): the common options and their checks, the
 * prompt list, the condition, the output-path checks, --latents / --save-latents, the --dump
 * writer, the progress line, the probe's stats JSON and the PNGs with their tEXt chunks. A family
 * file keeps its usage text, its own options, its pipeline's params and the sizes and sites of
 * its transformer.
 *
 * A family command runs: gen_parse (its extra options given as cli_opt entries), its own option
 * checks, gen_parse_finish, then its pipeline between gen_read_prompts / gen_load_condition and
 * gen_write_outputs / gen_write_pngs, and returns gen_end. */
#ifndef SS_GENERATE_COMMON_H
#define SS_GENERATE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "cli/args.h"
#include "cli/generate_probe.h"
#include "io/safetensors.h"
#include "models/site.h"
#include "sink/sink.h"

#define GEN_MAX_PROMPTS 256
#define GEN_MAX_EXTRA 4

/* What differs between the families in the common options. */
typedef struct {
    const char *usage;
    const char *scale;       /* the guidance option: "cfg" or "guidance" */
    double scale_lo;         /* its lower bound (the upper one is 1000) */
    long msl_max;            /* --max-sequence-length's upper bound */
    int negative;            /* takes --negative-prompt */
    long steps, msl;         /* the defaults of the family's params */
    double scale_default;
} gen_family;

typedef struct {
    /* the options as given (NULL: not given); seed_s defaults to "0" */
    const char *model, *prompt, *prompts, *out, *negative, *seed_s, *steps_s, *scale_s, *height_s, *width_s, *msl_s,
        *latents, *save_latents, *dump, *condition, *threads, *probe_s, *spiral_s, *stats_s, *scheduler, *precision;
    /* parsed by gen_parse / gen_parse_finish */
    long seed, steps, height, width, msl;
    double scale;
    int tprec; /* the transformer's weights: SS_PREC_F32 or _BF16 */
    gen_probe gp;
    /* the run */
    char *plist[GEN_MAX_PROMPTS];
    int B;
    char *pbuf, *cond_json;
    int has_cond;
    sink_condition cond;
    sink_ctx *sk;
    st_writer *dw;
} gen_cmd;

/* cli_parse with the common options and the family's extra ones (at most GEN_MAX_EXTRA), the
 * required options, then seed, steps, the guidance scale, height, width and max-sequence-length.
 * -1 to go on, else the exit status (0 after --help). */
int gen_parse(gen_cmd *g, int argc, char **argv, const gen_family *fam, const cli_opt *extra, int n_extra);
/* --scheduler is default, euler or dpm++ (s NULL: default); else prints why and returns -1. */
int gen_check_scheduler(const char *s);
/* --probe / --spiral / --stats, --scheduler, --precision, --threads, and that no output overwrites
 * an input, the model folder or another output. -1 to go on, else the exit status. */
int gen_parse_finish(gen_cmd *g);

/* --prompt, or the lines of --prompts, into g->plist / g->B. 0 or < 0 (ss_err). */
int gen_read_prompts(gen_cmd *g);
/* --condition into g->cond and its compact JSON into g->cond_json (PNG chunk, stats). */
int gen_load_condition(gen_cmd *g);
/* The loaded condition against the model: the 'layers' it names exist (num_layers; blocks: "blocks"
 * or "double blocks" in the error), resolved to sites when resolve, checked against the sites and
 * the pe grid (pe_h x pe_w, 0 x 0 for RoPE models; cls names the transformer), then set on g->sk. */
int gen_set_condition(gen_cmd *g, const ss_site *sites, int ns, int num_layers, const char *blocks, int resolve,
                      int pe_h, int pe_w, const char *cls);
/* The --dump writer (g->dw) when --dump is given. */
int gen_open_dump(gen_cmd *g);
/* The pipelines' dump callback (ctx: g->dw) and progress line (stderr when it is a terminal). */
int gen_dump_add(void *ctx, const char *name, const float *x, int ndim, const int64_t *shape);
void gen_progress(void *ctx, int step, int steps);

/* After denoising: --save-latents (lat [B, C, h, w]), the --dump file and the probe's stats JSON
 * (the BB batch prompts the model ran: with BB > B the negative prompt first). */
int gen_write_outputs(gen_cmd *g, const float *lat, int C, int h, int w, int BB, const char *negative, int steps);
/* The PNG of each batch element of img [B, H, W, 3] in [0, 1]: chunks prompt, seed, steps,
 * scale_key (scale_text), model, latents, then `scheduler` when fixed_sched (the family always
 * records it), Software, then the given --scheduler (unless fixed), --precision and condition. */
int gen_write_pngs(const gen_cmd *g, const float *img, int H, int W, int steps, const char *scale_key,
                   const char *scale_text, const char *fixed_sched);
/* The shortest "%.*g" text of x that reads back as x. */
void gen_format_double(char *buf, size_t cap, double x);
/* Prints the error when rc < 0, frees what gen_* made; the exit status (rc < 0: 1). */
int gen_end(gen_cmd *g, int rc);

/* The tensor 'latents' of a safetensors file, which must be [B, C, h, w], into dst (fp32). */
int gen_read_latents(const char *path, int B, int C, int h, int w, float *dst);
/* Writes x [B, C, h, w] as the tensor 'latents'. */
int gen_save_latents(const char *path, int B, int C, int h, int w, const float *x);
/* Splits buf into lines (in place; empty lines skipped) into out[max]; the count, or < 0 naming path. */
int gen_split_lines(char *buf, const char *path, char **out, int max);
/* The PNG of batch element b of B: `out` itself for B == 1, else FILE-b.png. */
void gen_png_name(char *buf, size_t cap, const char *out, int b, int B);

#endif
