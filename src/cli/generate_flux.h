/* `sinkscope generate` on a FluxPipeline folder (generate_flux.c); argv as cmd_generate's. */
#ifndef SS_GENERATE_FLUX_H
#define SS_GENERATE_FLUX_H
int cmd_generate_flux(int argc, char **argv);
#endif
