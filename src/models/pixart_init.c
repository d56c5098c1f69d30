/* Random-weight PixArt-α models (sinkscope init, benchmarks): models/init.c with PixArt's rules
 * (the position table is built at run time, so every tensor is drawn; 1-D norm weights are gains). */
#include <string.h>

#include "models/init.h"
#include "models/pixart.h"

static int pixart_spec_check(const void *cfg, const char *where) { return pixart_config_check(cfg, where); }
static int pixart_spec_enumerate(const void *cfg, ss_tensor_fn fn, void *ctx) { return pixart_enumerate_tensors(cfg, fn, ctx); }
static int pixart_spec_save(const void *cfg, const char *path) { return pixart_config_save(cfg, path); }
static int pixart_spec_is_gain(const char *name) { return strstr(name, "norm") != NULL; }

int pixart_init_random(const pixart_config *cfg, const char *dir, uint64_t seed, int dtype) {
    static const ss_init_spec spec = {pixart_spec_check, pixart_spec_enumerate, pixart_spec_save, pixart_spec_is_gain, NULL};
    return ss_init_random(&spec, cfg, dir, seed, dtype);
}
