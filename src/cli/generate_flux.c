/* sinkscope generate on a diffusers FluxPipeline folder (cmd_generate hands over when --model
 * names one); the options every family shares are generate_common's. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/generate_common.h"
#include "cli/generate_flux.h"
#include "nn/dnnl.h"
#include "core/err.h"
#include "models/binder.h"
#include "sample/fluxpipe.h"

static const char USAGE[] =
    "usage: sinkscope generate --model FLUX_PIPELINE_DIR (--prompt TEXT | --prompts FILE) [--out FILE.png]\n"
    "                          [--seed N] [--steps N] [--guidance X] [--height N] [--width N]\n"
    "                          [--max-sequence-length N] [--latents FILE] [--save-latents FILE] [--dump FILE]\n"
    "                          [--condition FILE.json] [--threads N]\n"
    "                          [--probe SITES|all [--spiral FIELDS] [--stats FILE.json]] [--scheduler NAME] [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers FluxPipeline folder (model_index.json, transformer/, vae/, scheduler/,\n"
    "                     text_encoder{,_2}/, tokenizer{,_2}/): FLUX.1-dev or FLUX.1-schnell\n"
    "  --prompt TEXT      one prompt; or --prompts FILE: one prompt per line, the batch\n"
    "  --out FILE.png     image (batch > 1: FILE-0.png, FILE-1.png, ...); parameters in tEXt chunks.\n"
    "                     Optional with --dump or --save-latents\n"
    "  --seed N           noise seed (default 0): N(0,1) [C, H/f, W/f] from Philox stream b of the seed for element b\n"
    "  --steps N          FlowMatch Euler steps (default 28; schnell is distilled for 4)\n"
    "  --guidance X       the distilled guidance scale of FLUX.1-dev (default 3.5); a transformer without\n"
    "                     guidance_embeds (schnell) ignores it. There is no classifier-free guidance\n"
    "  --height, --width  pixels (default 128 x VAE factor); multiples of 2 x VAE factor\n"
    "  --max-sequence-length N  T5 tokens (default 512, at most 512)\n"
    "  --latents FILE     start from the tensor 'latents' of this safetensors file: [B, C, H/f, W/f], or packed\n"
    "                     [B, N, 4C] as diffusers' FluxPipeline takes them\n"
    "  --save-latents FILE  write the initial latents there (tensor 'latents', unpacked)\n"
    "  --dump FILE        write every intermediate: prompt_embeds, pooled_prompt_embeds, text_ids, latent_image_ids,\n"
    "                     guidance (dev), timesteps, sigmas, latents.init, model_output.{i}, latents.{i} (packed\n"
    "                     [B, N, 4C]), image_raw, image (as diffusers' FluxPipeline computes them)\n"
    "  --condition FILE   one intervention condition object (README, section Conditions): 'layers' names the\n"
    "                     double blocks, 'single_layers' the single blocks; no pe_* fields (FLUX has RoPE)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores); the images do not depend on it\n"
    "  --probe SITES      the sink probe at these sites on every step: double.i / single.j names, or 'all';\n"
    "                     records (with their step) in the stats JSON. Text keys carry the T5 tokenizer's\n"
    "                     types (word, comma, eos, pad, ...). The images do not change\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields (docs/spiral-measurements.md): 'all' or\n"
    "                     any of keyimp,budget,energy,qk,norms,act (budget: attention by key type)\n"
    "  --stats FILE       the probe's JSON (default: OUT with .png replaced by .stats.json)\n"
    "  --precision P      f32 (default) or bf16: the transformer's Linear weights in bf16, products through oneDNN\n"
    "                     (README, bf16 compute); the text encoders and the VAE stay f32\n"
    "  --scheduler NAME   default (FlowMatch Euler) only: euler and dpm++ are refused, as diffusers' FluxPipeline\n"
    "                     cannot run them (custom sigmas and mu)\n";

/* 'latents' as [B, C, h, w], or packed [B, N, 4C] as diffusers' FluxPipeline takes them (unpacked
 * into dst). */
static int read_latents(const char *path, int B, int C, int h, int w, float *dst) {
    st_file *f;
    int rc = st_open(&f, path);
    if (rc < 0) return rc;
    const st_tensor *t = st_find(f, "latents");
    const int N = (h / 2) * (w / 2);
    if (t && t->ndim == 3) {
        float *tmp = NULL;
        if (t->shape[0] != B || t->shape[1] != N || t->shape[2] != 4 * C)
            rc = ss_fail(SS_ESHAPE, "%s: packed 'latents' must be [%d, %d, %d] for %d prompt(s) at this image size (or "
                         "unpacked [%d, %d, %d, %d])", path, B, N, 4 * C, B, B, C, h, w);
        else if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
            rc = ss_fail(SS_EFORMAT, "%s: 'latents' is %s, expected a float tensor", path, st_dtype_name(t->dtype));
        else if (!(tmp = malloc(sizeof(float) * (size_t)B * N * 4 * C)))
            rc = ss_fail(SS_ENOMEM, "out of memory");
        else if (st_to_f32(tmp, t) < 0)
            rc = SS_EFORMAT;
        else
            fluxpipe_unpack(dst, tmp, B, C, h, w);
        free(tmp);
        st_close(f);
        return rc;
    }
    st_close(f);
    return gen_read_latents(path, B, C, h, w, dst);
}

int cmd_generate_flux(int argc, char **argv) {
    fluxpipe_params q;
    fluxpipe_params_default(&q);
    const gen_family fam = {.usage = USAGE, .scale = "guidance", .scale_lo = -1000, .msl_max = 512, .negative = 0,
                             .steps = q.steps, .msl = q.max_sequence_length, .scale_default = q.guidance};
    gen_cmd g;
    int ec = gen_parse(&g, argc, argv, &fam, NULL, 0);
    if (ec >= 0 || (ec = gen_parse_finish(&g)) >= 0) return ec;
    q.seed = (uint64_t)g.seed, q.steps = (int)g.steps, q.guidance = g.scale, q.height = (int)g.height, q.width = (int)g.width;
    q.max_sequence_length = (int)g.msl;
    q.scheduler = g.scheduler;

    int rc;
    fluxpipe *p = NULL;
    float *img = NULL, *lat = NULL, *ctx = NULL, *pooled = NULL;
    if ((rc = gen_read_prompts(&g)) < 0) goto done;
    const int B = g.B;
    q.prompts = (const char *const *)g.plist;
    q.n_prompts = B;
    if ((rc = gen_load_condition(&g)) < 0 || (rc = fluxpipe_load_opts(&p, g.model, FLUXPIPE_DEFER_TRANSFORMER)) < 0) goto done;
    int H, W, h, w, N, C;
    if ((rc = fluxpipe_image_size(p, &q, &H, &W)) < 0) goto done;
    fluxpipe_latent_shape(p, H, W, &h, &w, &N, &C);
    const flux_config *tc = &p->tcfg;
    const int T = q.max_sequence_length;
    ss_site sites[2 * FLUX_MAX_LAYERS];
    const int ns = flux_sites(tc, N, T, sites, 2 * FLUX_MAX_LAYERS);
    /* 'layers' names the double blocks, 'single_layers' the single blocks; FLUX has RoPE: no absolute
     * position embedding for pe_* fields to edit */
    if ((rc = gen_set_condition(&g, sites, ns, tc->num_layers, "double blocks", 1, 0, 0, "FluxTransformer2DModel")) < 0 ||
        (g.gp.on && (rc = gen_probe_attach(&g.gp, &g.sk, sites, ns, g.model)) < 0))
        goto done;
    if (!(img = malloc(sizeof(float) * (size_t)B * H * W * 3)) || !(lat = malloc(sizeof(float) * (size_t)B * C * h * w))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if (g.latents) {
        if ((rc = read_latents(g.latents, B, C, h, w, lat)) < 0) goto done;
        q.latents = lat;
    }
    if ((rc = gen_open_dump(&g)) < 0) goto done;
    if (g.dw) q.dump = gen_dump_add, q.dump_ctx = g.dw;
    if (isatty(STDERR_FILENO)) q.progress = gen_progress;
    /* the encoders first, freed before the transformer's weights are loaded */
    if (!(ctx = malloc(sizeof(float) * (size_t)B * T * tc->joint_attention_dim)) ||
        !(pooled = malloc(sizeof(float) * (size_t)B * tc->pooled_projection_dim))) {
        rc = ss_fail(SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = fluxpipe_encode(p, &q, ctx, pooled)) < 0) goto done;
    fluxpipe_release_encoders(p);
    ss_bind_set_precision(g.tprec); /* the transformer's weights only: encoders and VAE stay f32 */
    rc = fluxpipe_load_transformer(p);
    ss_bind_set_precision(SS_PREC_F32);
    if (rc < 0 || (rc = fluxpipe_denoise(p, &q, ctx, pooled, img, lat, g.sk)) < 0 ||
        (rc = gen_write_outputs(&g, lat, C, h, w, B, NULL, q.steps)) < 0)
        goto done;
    char g_v[48];
    gen_format_double(g_v, sizeof g_v, q.guidance);
    rc = gen_write_pngs(&g, img, H, W, q.steps, "guidance", tc->guidance_embeds ? g_v : "none", NULL);
done:
    free(img), free(lat), free(ctx), free(pooled);
    fluxpipe_free(p);
    return gen_end(&g, rc);
}
