/* protocol: the paper's experiment conditions (Wu & Summa 2026, sections 3.1-3.5, appendix A.5),
 * resolved for a model of any depth.
 *
 * Block mapping for a model with L joint-attention blocks (SD3-medium: L = 24 -> 6, 12, 18):
 *   early = floor(L / 4), middle = floor(L / 2), late = floor(3 L / 4)
 * (a 6-block model: 1, 3, 4; a 4-block model: 1, 2, 3).
 *
 * Core protocol (`sinkscope run` with no arguments, and configs/presets/core.json for L = 6):
 *   baseline  layers []
 *   A1        middle block, per-head top-1, score path, eta 0 (remove)
 *   A2        early, middle and late blocks, per-head top-1
 *   A3        middle block, per-head top-5
 *   A1_rand   A1's budget drawn at random (select random, rank_by head, k 1)
 *   A3_rand   A3's budget drawn at random (k 5)
 *   U1_sink, U1_rand, U5_sink, U5_rand
 *             union-budget protocol (Table 7): the top-k keys of the head-averaged mass removed
 *             in every head, vs k random keys shared by the heads, k = 1 and 5, middle block
 * All remove over the whole sampling trajectory (steps [0, 1]); random draws use seed 0.
 */
#ifndef SS_PROTOCOL_H
#define SS_PROTOCOL_H

#include "sink/condition.h"

typedef struct {
    int num_layers;
    int early, middle, late;
} exp_blocks;

exp_blocks exp_block_map(int num_layers);

/* The baseline condition (name "baseline", layers []). */
void exp_baseline(sink_condition *c);

/* The core protocol for this mapping; *out malloc'ed, baseline first. */
int exp_core_conditions(const exp_blocks *b, sink_condition **out, int *n);

/* A condition list ready for a run: condition 0 must be the baseline ("baseline", layers []); it
 * is prepended when the list has none. Names must be unique and safe as folder names
 * ([A-Za-z0-9._-], not starting with '.'); a "baseline" anywhere but first, or with layers, pe_*
 * or pad_prompt fields, is an error. *list is realloc'ed. `what` names the source in errors. */
int exp_conditions_prepare(sink_condition **list, int *n, const char *what);

/* A conditions file or preset (configs/presets/NAME.json; README, the preset table): either a JSON
 * list of condition objects (or one object), as sink_condition_list_load reads it, or an object
 *   {"description": "...", "probe": {"sites": "all", "spiral": "all"}, "conditions": [ ... ]}
 * with "conditions" required and the others optional. probe.sites: "all" (every attention site),
 * "none" or a list of block indices (as `run --probe`); probe.spiral: "all", a comma-separated
 * list of field groups ("keyimp,budget", spiral_fields_parse) or a list of their names. Unknown
 * keys are errors naming the file and the key. *probe (optional) gets what the file says. */
#define EXP_MAX_PROBE 256
typedef struct {
    int have_sites;  /* probe.sites given */
    int all_sites;   /* "all": every attention site of the model */
    int n_sites;     /* otherwise these block indices ("none": 0) */
    int sites[EXP_MAX_PROBE];
    int have_spiral; /* probe.spiral given */
    unsigned spiral; /* SPIRAL_* bits (sink/spiral.h) */
} exp_probe_spec;
int exp_conditions_load(const char *path, sink_condition **out, int *n, exp_probe_spec *probe);

/* The spiral field groups' names in bit order ("keyimp", "budget", "energy", "qk", "norms", "act"). */
extern const char *const EXP_SPIRAL_NAMES[6];

/* sink_condition_check_sites for every condition of the list against the model's sites (sd3_sites
 * at the run's token counts): the blocks and sites exist, k fits the candidate keys, no query row
 * is left without attention mass. Errors name the source, the condition and the field. */
int exp_conditions_check(const sink_condition *list, int n, const ss_site *sites, int n_sites, const char *what);

#endif
