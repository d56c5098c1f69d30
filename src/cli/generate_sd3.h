/* `sinkscope generate` on a StableDiffusion3Pipeline folder (generate_sd3.c); argv as cmd_generate's. */
#ifndef SS_GENERATE_SD3_H
#define SS_GENERATE_SD3_H
#include "cli/generate_common.h" /* gen_read_latents, gen_save_latents (cmd_generate.c) */
int cmd_generate_sd3(int argc, char **argv);
#endif
