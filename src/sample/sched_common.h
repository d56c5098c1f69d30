/* sched_common: config fields shared by the DDPM-family schedulers (betas and training table),
 * read with diffusers' defaults. Internal to src/sample. */
#ifndef SS_SCHED_COMMON_H
#define SS_SCHED_COMMON_H

#include <jansson.h>

#include "sample/ddpm_table.h"

void ddpm_betas_default(ddpm_betas *b);
/* num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas (copied into *buf,
 * which the caller frees), rescale_betas_zero_snr. */
int ddpm_betas_from_json(ddpm_betas *b, float **buf, json_t *root, const char *path);
/* Refuses `key` = true ("PATH: field 'KEY' = true is not supported"). */
int sched_refuse_true(json_t *root, const char *path, const char *key);

#endif
