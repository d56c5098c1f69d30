/* sinkscope init: a random-weight model folder from a config.json (benchmarks, tests). */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/sd3.h"

static const char USAGE[] =
    "usage: sinkscope init --config CONFIG.json --out DIR [--seed N] [--dtype f32|bf16|f16]\n"
    "  Writes DIR/config.json and DIR/diffusion_pytorch_model.safetensors with random weights\n"
    "  (fan-in scaled uniform; the position table is the 2D sin-cos table diffusers builds).\n";

int cmd_init(int argc, char **argv) {
    const char *cfg_path = NULL, *out = NULL, *seed_s = "0", *dtype_s = "f32";
    cli_opt opts[] = {{"config", &cfg_path, NULL}, {"out", &out, NULL}, {"seed", &seed_s, NULL}, {"dtype", &dtype_s, NULL}};
    int pr = cli_parse(argc, argv, opts, 4, USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!cfg_path || !out) {
        fprintf(stderr, "sinkscope init: --config and --out are required\n%s", USAGE);
        return 2;
    }
    long seed;
    if (cli_int("init", "seed", seed_s, 0, 0x7fffffffL, &seed)) return 2;
    int dt = !strcmp(dtype_s, "f32") ? ST_F32 : !strcmp(dtype_s, "bf16") ? ST_BF16 : !strcmp(dtype_s, "f16") ? ST_F16 : -1;
    if (dt < 0) {
        fprintf(stderr, "sinkscope init: --dtype must be f32, bf16 or f16\n");
        return 2;
    }
    sd3_config c;
    if (sd3_config_load(&c, cfg_path) < 0 || sd3_init_random(&c, out, (uint64_t)seed, dt) < 0) {
        fprintf(stderr, "sinkscope init: %s\n", ss_err());
        return 1;
    }
    return 0;
}
