/* `sinkscope generate` on a StableDiffusion3Pipeline folder (generate_sd3.c); argv as cmd_generate's. */
#ifndef SS_GENERATE_SD3_H
#define SS_GENERATE_SD3_H
#include <stddef.h>
int cmd_generate_sd3(int argc, char **argv);
/* The tensor 'latents' of a safetensors file, which must be [B, C, h, w], into dst (fp32). */
int gen_read_latents(const char *path, int B, int C, int h, int w, float *dst);
/* Writes x [B, C, h, w] as the tensor 'latents'. */
int gen_save_latents(const char *path, int B, int C, int h, int w, const float *x);
/* Splits buf into lines (in place; empty lines skipped) into out[max]; the count, or < 0 naming path. */
int gen_split_lines(char *buf, const char *path, char **out, int max);
/* The PNG of batch element b of B: `out` itself for B == 1, else FILE-b.png. */
void gen_png_name(char *buf, size_t cap, const char *out, int b, int B);
#endif
