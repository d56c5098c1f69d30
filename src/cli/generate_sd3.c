/* sinkscope generate on a diffusers StableDiffusion3Pipeline folder (cmd_generate hands over
 * when --model names one); the options every family shares are generate_common's. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/generate_common.h"
#include "cli/generate_sd3.h"
#include "nn/dnnl.h"
#include "core/err.h"
#include "models/binder.h"
#include "sample/sd3pipe.h"
#include "text/promptx.h"

static const char USAGE[] =
    "usage: sinkscope generate --model SD3_PIPELINE_DIR (--prompt TEXT | --prompts FILE) [--out FILE.png]\n"
    "                          [--negative-prompt TEXT] [--seed N] [--steps N] [--cfg X] [--height N] [--width N]\n"
    "                          [--max-sequence-length N] [--latents FILE] [--save-latents FILE] [--dump FILE]\n"
    "                          [--condition FILE.json] [--pad-prompt N[:STRING]] [--threads N]\n"
    "                          [--probe SITES|all [--spiral FIELDS] [--stats FILE.json]] [--scheduler NAME] [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers StableDiffusion3Pipeline folder (model_index.json, transformer/, vae/,\n"
    "                     scheduler/, text_encoder{,_2,_3}/, tokenizer{,_2,_3}/; the T5 pair may be null)\n"
    "  --prompt TEXT      one prompt; or --prompts FILE: one prompt per line, the batch\n"
    "  --out FILE.png     image (batch > 1: FILE-0.png, FILE-1.png, ...); parameters in tEXt chunks.\n"
    "                     Optional with --dump or --save-latents\n"
    "  --negative-prompt  the unconditional prompt of classifier-free guidance (default \"\")\n"
    "  --seed N           noise seed (default 0): N(0,1) from Philox stream b of the seed for element b\n"
    "  --steps N          FlowMatch Euler steps (default 28)\n"
    "  --cfg X            guidance scale, on when > 1 (default 7)\n"
    "  --height, --width  pixels (default: transformer sample_size x VAE factor); multiples of VAE factor x patch\n"
    "  --max-sequence-length N  T5 tokens (default 256)\n"
    "  --latents FILE     start from the tensor 'latents' [B, C, H/f, W/f] of this safetensors file\n"
    "  --save-latents FILE  write the initial latents there (tensor 'latents')\n"
    "  --dump FILE        write every intermediate: prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,\n"
    "                     negative_pooled_prompt_embeds, timesteps, sigmas, latents.init, model_output.{i},\n"
    "                     noise_pred.{i}, latents.{i}, image_raw, image (as diffusers' pipeline computes them)\n"
    "  --condition FILE   one intervention condition object (README, section Conditions)\n"
    "  --pad-prompt N[:STRING]  comma padding: append N copies of STRING (default \",\") after a space to every\n"
    "                     prompt before tokenization (not the negative prompt; text/promptx.h)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the images do not depend on it\n"
    "  --probe SITES      the sink probe at these sites on every step: joint block indices (0,1) and/or site\n"
    "                     names (joint.0, attn2.1), or 'all'; records (with their step) in the stats JSON.\n"
    "                     Text keys carry the tokenizers' types (CLIP-L's for the 77 CLIP rows, then T5's;\n"
    "                     the unconditional half the negative prompt's). The images do not change\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields (docs/spiral-measurements.md): 'all' or\n"
    "                     any of keyimp,budget,energy,qk,norms,act (budget: attention by key type)\n"
    "  --stats FILE       the probe's JSON (default: OUT with .png replaced by .stats.json)\n"
    "  --precision P      f32 (default) or bf16: the transformer's Linear weights in bf16, products through oneDNN\n"
    "                     (README, bf16 compute); the text encoders and the VAE stay f32\n"
    "  --scheduler NAME   default (the folder's FlowMatch Euler), euler or dpm++ (EulerDiscreteScheduler /\n"
    "                     DPMSolverMultistepScheduler .from_config, as the paper's E2 swaps; recorded in the PNG and stats)\n";

int cmd_generate_sd3(int argc, char **argv) {
    sd3pipe_params q;
    sd3pipe_params_default(&q);
    const gen_family fam = {.usage = USAGE, .scale = "cfg", .scale_lo = 0, .msl_max = 4096, .negative = 1,
                             .steps = q.steps, .msl = q.max_sequence_length, .scale_default = q.cfg};
    const char *pad_s = NULL;
    const cli_opt extra[] = {{"pad-prompt", &pad_s, NULL}};
    gen_cmd g;
    int ec = gen_parse(&g, argc, argv, &fam, extra, 1);
    if (ec >= 0) return ec;
    promptx_pad pad = {0};
    if (pad_s && promptx_pad_parse(&pad, pad_s, "--pad-prompt") < 0) {
        fprintf(stderr, "sinkscope generate: %s\n", ss_err());
        return 2;
    }
    if ((ec = gen_parse_finish(&g)) >= 0) return ec;
    q.seed = (uint64_t)g.seed, q.steps = (int)g.steps, q.cfg = g.scale, q.height = (int)g.height, q.width = (int)g.width;
    q.max_sequence_length = (int)g.msl;
    q.scheduler = g.scheduler;
    if (g.negative) q.negative = g.negative;

    int rc;
    sd3pipe *p = NULL;
    char *padded[GEN_MAX_PROMPTS] = {0};
    float *img = NULL, *lat = NULL, *ctx = NULL, *pooled = NULL;
    if ((rc = gen_read_prompts(&g)) < 0) goto done;
    for (int b = 0; pad_s && b < g.B; b++) {
        if ((rc = promptx_pad_apply(&padded[b], g.plist[b], &pad)) < 0) goto done;
        g.plist[b] = padded[b];
    }
    const int B = g.B;
    q.prompts = (const char *const *)g.plist;
    q.n_prompts = B;
    if ((rc = gen_load_condition(&g)) < 0 || (rc = sd3pipe_load_opts(&p, g.model, SD3PIPE_DEFER_TRANSFORMER)) < 0) goto done;
    int H, W;
    if ((rc = sd3pipe_image_size(p, &q, &H, &W)) < 0) goto done;
    const sd3_config *tc = &p->tcfg;
    const int f = vae_factor(p->vae), C = tc->in_channels, h = H / f, w = W / f;
    const int ph = h / tc->patch_size, pw = w / tc->patch_size;
    ss_site sites[2 * SD3_MAX_LAYERS];
    if (g.has_cond) {
        const int S = p->clip_len + (p->enc[2] ? q.max_sequence_length : p->clip_len);
        const int ns = sd3_sites(tc, ph * pw, S, sites, 2 * SD3_MAX_LAYERS);
        if ((rc = gen_set_condition(&g, sites, ns, tc->num_layers, "blocks", 0, ph, pw, "SD3Transformer2DModel")) < 0)
            goto done;
    }
    if (g.gp.on) {
        const int ns = sd3_sites(tc, ph * pw, sd3pipe_text_len(p, &q), sites, 2 * SD3_MAX_LAYERS);
        if ((rc = gen_probe_attach(&g.gp, &g.sk, sites, ns, g.model)) < 0) goto done;
    }
    if (!(img = malloc(sizeof(float) * (size_t)B * H * W * 3)) || !(lat = malloc(sizeof(float) * (size_t)B * C * h * w))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if (g.latents) {
        if ((rc = gen_read_latents(g.latents, B, C, h, w, lat)) < 0) goto done;
        q.latents = lat;
    }
    if ((rc = gen_open_dump(&g)) < 0) goto done;
    if (g.dw) q.dump = gen_dump_add, q.dump_ctx = g.dw;
    if (isatty(STDERR_FILENO)) q.progress = gen_progress;
    /* the encoders first, freed before the transformer's weights are loaded */
    const int BB = (q.cfg > 1.0 ? 2 : 1) * B, S = sd3pipe_text_len(p, &q);
    if (!(ctx = malloc(sizeof(float) * (size_t)BB * S * tc->joint_attention_dim)) ||
        !(pooled = malloc(sizeof(float) * (size_t)BB * tc->pooled_projection_dim))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sd3pipe_encode(p, &q, ctx, pooled)) < 0) goto done;
    sd3pipe_release_encoders(p);
    ss_bind_set_precision(g.tprec); /* the transformer's weights only: encoders and VAE stay f32 */
    rc = sd3pipe_load_transformer(p);
    ss_bind_set_precision(SS_PREC_F32);
    if (rc < 0 || (rc = sd3pipe_denoise(p, &q, ctx, pooled, img, lat, g.sk)) < 0 ||
        (rc = gen_write_outputs(&g, lat, C, h, w, BB, q.negative, q.steps)) < 0)
        goto done;
    char cfg_v[48];
    gen_format_double(cfg_v, sizeof cfg_v, q.cfg);
    rc = gen_write_pngs(&g, img, H, W, q.steps, "cfg", cfg_v, NULL);
done:
    free(img), free(lat), free(ctx), free(pooled);
    for (int b = 0; b < GEN_MAX_PROMPTS; b++) free(padded[b]);
    sd3pipe_free(p);
    return gen_end(&g, rc);
}
