/* pipeindex: a diffusers pipeline folder's model_index.json, checked against the components a
 * pipeline class has (shared by sd3pipe, fluxpipe and pixartpipe).
 *
 *   static const pipe_component C[] = {{"transformer", {"SD3Transformer2DModel"}, 0}, ...};
 *   int present[n]; if (pipe_index_read(dir, "StableDiffusion3Pipeline", C, n, present) < 0) ...
 */
#ifndef SS_PIPEINDEX_H
#define SS_PIPEINDEX_H

#include "vae/vae.h"
#include "sample/flowmatch.h"
#include "text/txenc.h"
#include "text/txtok.h"

typedef struct {
    const char *key;    /* "text_encoder_3" */
    const char *cls[2]; /* accepted class names; {NULL}: the component must be null */
    int nullable;       /* may be null (or absent) */
} pipe_component;

/* Reads DIR/model_index.json: an object whose `_class_name` is class_name, every other key not
 * starting with '_' one of comp[0..n), each [library, class] with an accepted class or null where
 * nullable; every non-nullable component present. present[i] = 1 when component i is set. Errors
 * name the file and the component. */
int pipe_index_read(const char *dir, const char *class_name, const pipe_component *comp, int n, int *present);

/* DIR/key into buf (PIPE_PATH_LEN bytes); SS_EARG when it does not fit. */
#define PIPE_PATH_LEN 4096
int pipe_subpath(char *buf, const char *dir, const char *key);

/* DIR/tok_key as a tokenizer and DIR/enc_key as its text encoder, checked against each other;
 * errors name the folder and the component. On error *tok and *enc may be set (the caller frees). */
int pipe_open_text(const char *dir, const char *tok_key, const char *enc_key, txtok **tok, txenc **enc);
/* DIR/scheduler/scheduler_config.json as a FlowMatch Euler configuration, checked by building a
 * schedule from it; errors name the folder and the component. */
int pipe_open_flowmatch(const char *dir, fm_config *cfg);
/* DIR/vae as an AutoencoderKL; errors name the folder and the component. */
int pipe_open_vae(const char *dir, vae_model **vae);

#endif
