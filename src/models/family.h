/* family: the model families sinkscope runs, by diffusers class name (config.json's `_class_name`).
 *
 * A tiny table: each entry loads and frees its model, checks and converts the inputs a forward
 * pass needs (named as diffusers' arguments, from a safetensors file), lists the attention sites
 * and runs the forward pass with family-neutral hooks.
 *
 *   const ss_family *fam; void *m; ss_fwd_inputs io;
 *   if (ss_family_detect(dir, &fam) < 0 || fam->load(&m, dir) < 0) die(ss_err());
 *   fam->inputs(m, in, in_path, &io);  fam->forward(m, out, &io, &hooks);
 *   ss_fwd_inputs_free(&io); fam->free(m);
 */
#ifndef SS_FAMILY_H
#define SS_FAMILY_H

#include <stddef.h>
#include <stdint.h>

#include "nn/attn.h"
#include "io/safetensors.h"
#include "models/site.h"

#define SS_FWD_MAX_IN 8

/* The converted inputs of one forward pass (the family's own order) and the output's shape. */
typedef struct {
    int B, N, S;                 /* batch, image tokens, text tokens */
    int pe_grid[2];              /* the absolute position embedding's patch grid (rows, cols); 0, 0: none (RoPE) */
    int D;                       /* model width (the dumped streams' last dimension) */
    float *in[SS_FWD_MAX_IN];    /* malloc'ed fp32 arrays; NULL where absent */
    int out_ndim;
    int64_t out_shape[4];
    size_t out_numel;
} ss_fwd_inputs;

/* Hooks every family calls. block_output: after block `block` of a site kind, the stream the
 * family names for it: SD3 joint.i and FLUX double.i the image stream [B, rows = N, D], FLUX
 * single.j the whole stream [B, rows = S+N, D] (text first). */
typedef struct {
    void *ctx;
    int (*attention)(void *ctx, const ss_site *site, const attn_args *a);
    int (*block_output)(void *ctx, ss_site_kind kind, int block, const float *x, int B, int rows, int D);
    /* Families with RoPE (ss_family.rope): q and k of a site before (post = 0) and after (1) RoPE. */
    int (*rope_qk)(void *ctx, const ss_site *site, int post, const attn_args *a);
    /* Families with an absolute position embedding (io.pe_grid): its table [h*w, D] for the actual
     * grid, before it is added to the patch embeddings; the hook may edit it (sink/abspe.h). */
    int (*pos_embed)(void *ctx, float *tab, int h, int w, int D);
} ss_model_hooks;

typedef struct ss_family {
    const char *class_name; /* "SD3Transformer2DModel" */
    const char *name;       /* "sd3" */
    int rope;               /* rotary position embedding on q and k (ss_model_hooks.rope_qk is called) */
    int (*load)(void **model, const char *dir);
    void (*free)(void *model);
    /* Find every input in `in` (path names it in errors), check its shape against the model
     * before converting any, then convert; io is zeroed first and may be freed on error too. */
    int (*inputs)(const void *model, const st_file *in, const char *path, ss_fwd_inputs *io);
    /* Sites for N image and S text tokens (models/site.h), at most cap into out (may be NULL). */
    int (*sites)(const void *model, int N, int S, ss_site *out, int cap);
    int (*forward)(const void *model, float *out, const ss_fwd_inputs *io, const ss_model_hooks *hk);
    /* The floating-point operations of that forward pass (matrix products and attention). */
    double (*flops)(const void *model, const ss_fwd_inputs *io);
} ss_family;

/* The entry for a diffusers class name, or NULL. */
const ss_family *ss_family_find(const char *class_name);
/* The family of a model folder from DIR/config.json's `_class_name` (absent: SD3, as before
 * families existed). Errors name the file and list the known classes. */
int ss_family_detect(const char *dir, const ss_family **out);
/* The same for a config file's path. */
int ss_family_detect_config(const char *path, const ss_family **out);
void ss_fwd_inputs_free(ss_fwd_inputs *io);

#endif
