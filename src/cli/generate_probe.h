/* generate_probe: `generate --probe SITES|all [--spiral FIELDS] [--stats FILE.json]` on pipeline
 * folders (SD3, FLUX): the sink probe at the named sites on every denoising step, its records
 * written as JSON in the run records' schema (sink/record.h): "probe" and "verification" entries,
 * one per site, step and batch element, with "step", "t_frac" and "batch" in each.
 * The pipelines give the probe the true type of every text key (sink_ctx_set_text_types), so the
 * spiral budget splits the text keys into word / comma / eos / pad / bos / other. */
#ifndef SS_GENERATE_PROBE_H
#define SS_GENERATE_PROBE_H

#include <stddef.h>

#include "models/site.h"
#include "sink/sink.h"

#define GEN_PROBE_MAX 512

typedef struct {
    int on, all, n;
    int codes[GEN_PROBE_MAX];
    unsigned spiral;
    const char *stats; /* the JSON file: --stats, or OUT with .png replaced by .stats.json */
    char def[4200];
    const char *scheduler; /* set after gen_probe_parse: written as "scheduler" when not NULL */
    const char *precision; /* likewise, "precision" */
} gen_probe;

/* The options (probe_s NULL: no probe, then spiral_s and stats_s must be NULL too); out: --out,
 * for the default stats path. 0, or < 0 with ss_err saying why. */
int gen_probe_parse(gen_probe *g, const char *probe_s, const char *spiral_s, const char *stats_s, const char *out);
/* Checks the sites against the model's (ns sites; `all` takes every one) and sets the probe on *sk,
 * made when NULL. model names the folder in errors. */
int gen_probe_attach(gen_probe *g, sink_ctx **sk, const ss_site *sites, int ns, const char *model);
/* The stats JSON: model, the prompt of each of the BB batch elements the model ran (uncond first
 * under classifier-free guidance), steps, the condition (JSON text or NULL) and every record. */
int gen_probe_save(const gen_probe *g, const sink_ctx *sk, const char *model, const char *const *batch_prompts, int BB,
                   int steps, const char *cond_json);

#endif
