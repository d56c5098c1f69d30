/* `sinkscope generate` on a PixArtAlphaPipeline folder (generate_pixart.c); argv as cmd_generate's. */
#ifndef SS_GENERATE_PIXART_H
#define SS_GENERATE_PIXART_H
int cmd_generate_pixart(int argc, char **argv);
#endif
