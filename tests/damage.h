/* Damaged copies of a model folder for the loaders' error tests (cmocka asserts inside). */
#ifndef SS_TEST_DAMAGE_H
#define SS_TEST_DAMAGE_H

#include <jansson.h>

/* dir/config.json = src/config.json with `key` set to `val` (stolen; NULL: the key removed). */
void td_write_config(const char *dir, const char *src, const char *key, json_t *val);
/* dir/diffusion_pytorch_model.safetensors = src's weights without tensor `drop` and with tensor
 * `reshape`'s first dimension one larger (its data zero-padded); either may be NULL. */
void td_write_weights(const char *dir, const char *src, const char *drop, const char *reshape);

#endif
