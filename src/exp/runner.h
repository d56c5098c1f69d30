/* runner: `sinkscope run` as a library call. Generates seed-paired images for every condition
 * over a prompt set into an experiment folder (docs/experiment-format.md), resumably.
 *
 * Work order: prompt-major; for each prompt, for each of its seeds: the baseline first, then the
 * conditions in list order. So every condition image is made right after (or, on resume, next
 * to a saved copy of) its paired baseline, which the pixel metrics need.
 *
 * Seeds: seed = base_seed + prompt_index * seeds_per_prompt + r, r = 0 .. seeds_per_prompt - 1
 * (distinct for every (prompt, r), identical across conditions: the pairing).
 *
 * Resume: the configuration is written to experiment.json once; a later run with a different
 * configuration (model digest, prompts digest, prompt count, seeds, steps, cfg, image size, probe,
 * conditions, precision...) is refused with the differing field named. Records already present are never
 * recomputed or written twice (unless their image fails verification: see run_experiment); a
 * torn last line is cut off and redone. One run per folder at a time (an flock on EXP/.lock).
 *
 * Parallelism: `jobs` worker threads each take whole (prompt, seed) groups in turn and make
 * their images one at a time; the model is shared read-only. For small models this beats
 * threading inside one image (no barrier per layer, and it degrades gracefully when other
 * processes compete for the cores). Images do not depend on it (the engine is deterministic
 * whatever the thread count); only the order of the lines in records.jsonl does.
 */
#ifndef SS_RUNNER_H
#define SS_RUNNER_H

#include <stdint.h>

#include "sink/condition.h"

#define RUN_MAX_PROBE 256

typedef struct {
    const char *exp_dir;         /* created if missing */
    const char *model_dir;       /* pipeline folder: any class of sample/pipes.h (ShapeWorld, SD3, FLUX) */
    const char *prompts_path;    /* GenEval-schema JSONL, or plain text (one prompt per line) */
    const sink_condition *conds; /* the conditions; the baseline is prepended when absent */
    int n_conds;
    int core_protocol;           /* 1: conds ignored; the core protocol (exp_core_conditions) for the model's depth */
    const char *conditions_source; /* informational: "core protocol (built in)", a preset or file name */
    int seeds_per_prompt;        /* >= 1 */
    uint64_t base_seed;
    int steps;                   /* >= 1 */
    double cfg;
    int width, height;           /* pixels; 0: the pipeline folder's default size */
    int probe_default;           /* 1: probe the early, middle and late blocks (protocol.h) */
    int probe_blocks[RUN_MAX_PROBE]; /* used when probe_default == 0 (n_probe may be 0: no probe): block numbers
                                    (< SS_SITE_MAX_BLOCKS) name the pipeline's blocks as a condition's 'layers' do
                                    (SD3 joint.i, FLUX double.i); larger values are site codes (models/site.h) */
    int n_probe;
    int probe_all;               /* 1: probe every attention site of the model (run --probe all; experiment.json
                                    probe.sites lists them); overrides probe_default and probe_blocks */
    unsigned spiral;             /* SPIRAL_* field groups (sink/spiral.h) measured at every probed site and step,
                                    written to the records' "spiral" arrays (0: none; then experiment.json has no
                                    probe.spiral, as before) */
    int prompt_stride;           /* 1: every prompt; N: prompts 0, N, 2N, ... (indices and seeds kept) */
    int limit_prompts;           /* 0: all prompts; else the first N (after the stride) */
    int jobs;                    /* images made at once, each by one thread (0: one per OpenMP thread);
                                    with jobs > 0, each image gets max_threads / jobs threads */
    int quiet;                   /* no progress bar, only the summary line */
    int progress_bar;            /* draw a progress bar with ETA on stderr (a terminal) */
    int lock_held;               /* the caller holds EXP/.lock (run_lock), e.g. to keep it through a report */
    unsigned metrics;            /* RUN_METRIC_* bits: learned metrics added to the records (0: none) */
    int fid_mode;                /* with RUN_METRIC_FID: FID_MODE_PYTORCH (0, the default) or FID_MODE_CLEAN
                                    (metric/fidmode.h) */
    const char *metric_weights;  /* folder of their weights (RUN_METRIC_* layout below); needed when metrics != 0 */
    const char *negative_prompt; /* the unconditional prompt of classifier-free guidance (SD3, PixArt; NULL or "":
                                    the empty prompt); recorded in experiment.json ("negative_prompt") when given */
    int max_sequence_length;     /* T5 tokens (SD3, FLUX, PixArt; 0: the pipeline's default); experiment.json's
                                    text_tokens follows it */
    int precision;               /* SS_PREC_F32 (0, the default) or SS_PREC_BF16 (nn/dnnl.h): the model is loaded
                                    in it (ss_bind_set_precision). Recorded in experiment.json ("precision") only
                                    when not f32, so f32 experiments keep their file; a resume in another precision
                                    is refused naming the field. */
} run_config;

/* Learned per-image metrics (`run --metrics clip_t,lpips --metric-weights DIR`):
 *   clip_t  the paper's CLIP-T (metric/clip_t.h) of the image and its prompt; weights
 *           DIR/clip/: a transformers CLIPModel folder (config.json, model.safetensors) holding
 *           its CLIP BPE tokenizer too (vocab.json, merges.txt), as save_pretrained of the model
 *           and its processor into one folder writes them.
 *   lpips   LPIPS alex v0.1 (metric/lpips.h) of a condition image against its paired baseline
 *           (not recorded for the baseline itself); weights DIR/lpips/alexnet.pth (torchvision
 *           AlexNet) and DIR/lpips/alex.pth (the lpips package's v0.1 linear heads).
 *   fid     the 2048-d Inception pool3 features of every image (metric/fidmode.h, mode
 *           c->fid_mode), for the report's FID_shift; weights: the one file
 *           DIR/inception/pt_inception-2015-12-05*.pth (pytorch-fid's FID Inception). Each image's
 *           features go to features/<condition>/<prompt:05d>_<seed>.safetensors ("pool3" F32
 *           [2048]; metadata "mode" and "key"), written atomically after the image and before its
 *           record, which names the file ("features") and its SHA-256 ("features_sha256"). A
 *           resume verifies them like the images (a missing or changed file: the item is made
 *           again); finished features are never recomputed.
 * The selection, the FID mode ("fid_mode") and the SHA-256 of every weight file go into
 * experiment.json ("metrics"), so a resume with other metrics, another mode or other weights is
 * refused naming the field. */
enum { RUN_METRIC_CLIP_T = 1u << 0, RUN_METRIC_LPIPS = 1u << 1, RUN_METRIC_FID = 1u << 2 };
#define RUN_METRIC_N 3
extern const char *const RUN_METRIC_NAME[RUN_METRIC_N]; /* "clip_t", "lpips", "fid" (bit i) */
/* Parses "clip_t,lpips,fid" into RUN_METRIC_* bits; an unknown or repeated name is an error
 * naming `option` and the name. */
int run_parse_metrics(const char *list, const char *option, unsigned *out);

void run_config_default(run_config *c); /* 1 seed, base 0, 20 steps, cfg 4, default probe */

/* Why a finished record's image is made again on resume (run_result.redo). */
enum { RUN_REDO_OK = 0, RUN_REDO_MISSING, RUN_REDO_NOT_REGULAR, RUN_REDO_SIZE, RUN_REDO_DIGEST, RUN_REDO_PNG,
       RUN_REDO_NAME, RUN_REDO_FEATURES, RUN_REDO_N };
const char *run_redo_reason(int why); /* "missing", "of another size than recorded", ... */

typedef struct {
    long total;      /* images in the plan */
    long before;     /* already recorded (and verified) when the run started */
    long made;       /* new records this run */
    long redone;     /* finished records whose image failed verification: made again */
    long redo[RUN_REDO_N]; /* redone, by reason */
    long repaired;   /* bytes cut off a torn last line */
    double seconds;  /* wall time of the generation loop */
} run_result;

/* Runs (or resumes) the experiment. On failure returns a negative code with ss_err() set.
 * Limits, checked before anything is written (errors name the option): prompts x seeds at most
 * INT_MAX (prompt, seed) pairs; every seed base + prompt_index * seeds + r at most 2^64 - 1.
 * Resume verifies the image of every finished record first: records with "image_bytes" and
 * "image_sha256" need a regular file of that size and SHA-256; older records a PNG of the run's
 * size. An image that fails is made again and a new record of the same key appended: the last
 * record of a key supersedes the earlier ones (docs/experiment-format.md). */
int run_experiment(const run_config *c, run_result *res);

/* EXP/.lock (created, with EXP, if missing), held with flock until run_unlock: one run per
 * folder at a time. Fails, naming the folder, when another process holds it. */
int run_lock(const char *exp_dir, int *fd);
void run_unlock(int fd);

#endif
