/* schedcfg: reading a diffusers scheduler_config.json field by field, with diffusers' rules.
 *
 * diffusers writes configs with Python's json (allow_nan), so a saved DPMSolverMultistepScheduler
 * carries `"lambda_min_clipped": -Infinity`; ss_schedcfg_load accepts the bare tokens Infinity,
 * -Infinity and NaN outside strings (as Python's json.load does) and the number getter returns
 * them as IEEE values. Every getter leaves *out unchanged when the field is absent or null, and
 * fails with "PATH: field 'KEY' ..." on a value of the wrong kind.
 */
#ifndef SS_SCHEDCFG_H
#define SS_SCHEDCFG_H

#include <jansson.h>

int ss_schedcfg_load(const char *path, json_t **out);
int ss_schedcfg_number(json_t *root, const char *path, const char *key, double *out);
/* An integer in [lo, hi]. */
int ss_schedcfg_int(json_t *root, const char *path, const char *key, long lo, long hi, int *out);
int ss_schedcfg_bool(json_t *root, const char *path, const char *key, int *out);
/* A string that must be one of names[0..n) (the error lists them); *out = its index. A null
 * value keeps *out when null_ok, else is an error. */
int ss_schedcfg_enum(json_t *root, const char *path, const char *key, const char *const *names, int n,
                     int null_ok, int *out);
/* "_class_name" or NULL when absent (error when not a string). */
int ss_schedcfg_class(json_t *root, const char *path, const char **out);

#endif
