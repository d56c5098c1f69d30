/* sinkscope generate on a diffusers PixArtAlphaPipeline folder (cmd_generate hands over when --model
 * names one); the options every family shares are generate_common's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/generate_common.h"
#include "cli/generate_pixart.h"
#include "nn/dnnl.h"
#include "core/err.h"
#include "models/binder.h"
#include "sample/pixartpipe.h"

static const char USAGE[] =
    "usage: sinkscope generate --model PIXART_PIPELINE_DIR (--prompt TEXT | --prompts FILE) [--out FILE.png]\n"
    "                          [--negative-prompt TEXT] [--seed N] [--steps N] [--cfg X] [--height N] [--width N]\n"
    "                          [--resolution-binning on|off] [--scheduler default|euler|dpm++]\n"
    "                          [--max-sequence-length N] [--latents FILE] [--save-latents FILE] [--dump FILE]\n"
    "                          [--condition FILE.json] [--threads N] [--probe SITES|all [--spiral FIELDS] [--stats FILE.json]]\n"
    "                          [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers PixArtAlphaPipeline folder (model_index.json, transformer/, vae/, scheduler/,\n"
    "                     text_encoder/ (T5), tokenizer/)\n"
    "  --prompt TEXT      one prompt; or --prompts FILE: one prompt per line, the batch. Prompts are lower-cased and\n"
    "                     stripped (diffusers' _text_preprocessing without bs4/ftfy)\n"
    "  --out FILE.png     image (batch > 1: FILE-0.png, FILE-1.png, ...); parameters in tEXt chunks.\n"
    "                     Optional with --dump or --save-latents\n"
    "  --negative-prompt  the unconditional prompt of classifier-free guidance (default \"\")\n"
    "  --seed N           noise seed (default 0): N(0,1) from Philox stream b of the seed for element b\n"
    "  --steps N          scheduler steps (default 20)\n"
    "  --cfg X            guidance scale, on when > 1 (default 4.5)\n"
    "  --height, --width  pixels (default: transformer sample_size x VAE factor)\n"
    "  --resolution-binning on|off  on (default, as diffusers): run at the closest aspect-ratio bin and resize the\n"
    "                     image back (sample_size 32, 64 or 128); off: run at the requested size\n"
    "  --scheduler NAME   default (the folder's scheduler_config.json), euler or dpm++ (EulerDiscreteScheduler /\n"
    "                     DPMSolverMultistepScheduler .from_config of it)\n"
    "  --max-sequence-length N  T5 tokens (default 120; longer prompts are truncated, as diffusers does)\n"
    "  --latents FILE     start from the tensor 'latents' [B, C, Hb/f, Wb/f] (Hb x Wb: the binned size)\n"
    "  --save-latents FILE  write the initial latents there (tensor 'latents')\n"
    "  --dump FILE        write every intermediate: input_ids, attention_mask, prompt_embeds, prompt_attention_mask,\n"
    "                     negative_*, timesteps, sigmas, latents.init, resolution, aspect_ratio, model_output.{i},\n"
    "                     noise_pred.{i}, latents.{i}, image_raw, image\n"
    "  --condition FILE   one intervention condition object (README, section Conditions; 'attn' self or cross)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the images do not depend on it\n"
    "  --probe SITES      the sink probe at these sites on every step: self.i, cross.i, or 'all'; cross sites'\n"
    "                     text keys carry T5's token types (the unconditional half the negative prompt's)\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields (docs/spiral-measurements.md)\n"
    "  --stats FILE       the probe's JSON (default: OUT with .png replaced by .stats.json)\n"
    "  --precision P      f32 (default) or bf16: the transformer's Linear weights in bf16, products through oneDNN\n"
    "                     (README, bf16 compute); the text encoders and the VAE stay f32\n";

int cmd_generate_pixart(int argc, char **argv) {
    pixartpipe_params q;
    pixartpipe_params_default(&q);
    const gen_family fam = {.usage = USAGE, .scale = "cfg", .scale_lo = 0, .msl_max = 4096, .negative = 1,
                             .steps = q.steps, .msl = q.max_sequence_length, .scale_default = q.cfg};
    const char *bin_s = NULL;
    const cli_opt extra[] = {{"resolution-binning", &bin_s, NULL}};
    gen_cmd g;
    int ec = gen_parse(&g, argc, argv, &fam, extra, 1);
    if (ec >= 0) return ec;
    if (bin_s && strcmp(bin_s, "on") && strcmp(bin_s, "off")) {
        fprintf(stderr, "sinkscope generate: --resolution-binning must be on or off, not '%s'\n", bin_s);
        return 2;
    }
    if (gen_check_scheduler(g.scheduler) < 0) return 2; /* before the probe's options, as it always was */
    if ((ec = gen_parse_finish(&g)) >= 0) return ec;
    const char *sched_name = g.scheduler ? g.scheduler : "default";
    g.gp.scheduler = sched_name; /* always recorded */
    q.seed = (uint64_t)g.seed, q.steps = (int)g.steps, q.cfg = g.scale, q.height = (int)g.height, q.width = (int)g.width;
    q.max_sequence_length = (int)g.msl;
    q.resolution_binning = !bin_s || !strcmp(bin_s, "on");
    q.scheduler = sched_name;
    if (g.negative) q.negative = g.negative;

    int rc;
    pixartpipe *p = NULL;
    float *img = NULL, *lat = NULL, *ctx = NULL, *mask = NULL;
    if ((rc = gen_read_prompts(&g)) < 0) goto done;
    const int B = g.B;
    q.prompts = (const char *const *)g.plist;
    q.n_prompts = B;
    if ((rc = gen_load_condition(&g)) < 0 || (rc = pixartpipe_load_opts(&p, g.model, PIXARTPIPE_DEFER_TRANSFORMER)) < 0)
        goto done;
    int H, W, Hb, Wb;
    if ((rc = pixartpipe_image_size(p, &q, &H, &W, &Hb, &Wb)) < 0) goto done;
    const pixart_config *tc = &p->tcfg;
    const int f = vae_factor(p->vae), C = tc->in_channels, h = Hb / f, w = Wb / f, S = q.max_sequence_length;
    const int ph = h / tc->patch_size, pw = w / tc->patch_size;
    ss_site sites[2 * PIXART_MAX_LAYERS];
    const int ns = pixart_sites(tc, ph * pw, S, sites, 2 * PIXART_MAX_LAYERS);
    if ((rc = gen_set_condition(&g, sites, ns, tc->num_layers, "blocks", 1, ph, pw, "PixArtTransformer2DModel")) < 0 ||
        (g.gp.on && (rc = gen_probe_attach(&g.gp, &g.sk, sites, ns, g.model)) < 0))
        goto done;
    if (!(img = malloc(sizeof(float) * (size_t)B * H * W * 3)) || !(lat = malloc(sizeof(float) * (size_t)B * C * h * w))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if (g.latents) {
        if ((rc = gen_read_latents(g.latents, B, C, h, w, lat)) < 0) {
            if (Hb != H || Wb != W) ss_err_prefix(rc, "%dx%d runs at the resolution bin %dx%d: ", W, H, Wb, Hb);
            goto done;
        }
        q.latents = lat;
    }
    if ((rc = gen_open_dump(&g)) < 0) goto done;
    if (g.dw) q.dump = gen_dump_add, q.dump_ctx = g.dw;
    if (isatty(STDERR_FILENO)) q.progress = gen_progress;
    const int nt5 = pixartpipe_truncated(p, &q);
    if (nt5 < 0) {
        rc = nt5;
        goto done;
    }
    if (nt5)
        fprintf(stderr, "sinkscope generate: warning: %d prompt(s) truncated to %d T5 tokens (--max-sequence-length), as "
                        "diffusers truncates them\n", nt5, S);
    /* the encoder first, freed before the transformer's weights are loaded */
    const int BB = (q.cfg > 1.0 ? 2 : 1) * B, J = tc->caption_channels ? tc->caption_channels : tc->cross_attention_dim;
    if (!(ctx = malloc(sizeof(float) * (size_t)BB * S * J)) || !(mask = malloc(sizeof(float) * (size_t)BB * S))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = pixartpipe_encode(p, &q, ctx, mask)) < 0) goto done;
    pixartpipe_release_encoders(p);
    ss_bind_set_precision(g.tprec); /* the transformer's weights only: encoders and VAE stay f32 */
    rc = pixartpipe_load_transformer(p);
    ss_bind_set_precision(SS_PREC_F32);
    if (rc < 0 || (rc = pixartpipe_denoise(p, &q, ctx, mask, img, lat, g.sk)) < 0 ||
        (rc = gen_write_outputs(&g, lat, C, h, w, BB, q.negative, q.steps)) < 0)
        goto done;
    char cfg_v[48];
    gen_format_double(cfg_v, sizeof cfg_v, q.cfg);
    rc = gen_write_pngs(&g, img, H, W, q.steps, "cfg", cfg_v, sched_name);
done:
    free(img), free(lat), free(ctx), free(mask);
    pixartpipe_free(p);
    return gen_end(&g, rc);
}
