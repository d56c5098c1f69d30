/* sinkscope forward: one transformer forward pass on inputs named like diffusers' arguments. */
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "io/jsonfile.h"
#include "io/pathcheck.h"
#include "io/safetensors.h"
#include "models/family.h"
#include "models/sd3.h"
#include "sink/abspe.h"
#include "sink/qkmean.h"
#include "sink/record.h"
#include "sink/sink.h"
#include "sink/spiral.h"

static const char USAGE[] =
    "usage: sinkscope forward --model DIR --inputs IN.safetensors --out OUT.safetensors\n"
    "                         [--dump-blocks] [--dump-rope-qk] [--probe BLOCKS] [--probe-queries image|text|all]\n"
    "                         [--topk K] [--spiral FIELDS] [--stats FILE.json] [--condition FILE.json] [--threads N] [--precision f32|bf16]\n"
    "\n"
    "  --model DIR        diffusers transformer folder (config.json + diffusion_pytorch_model*.safetensors):\n"
    "                     SD3Transformer2DModel, FluxTransformer2DModel or PixArtTransformer2DModel\n"
    "                     (config.json's _class_name)\n"
    "  --inputs FILE      SD3: hidden_states [B,C,H,W], encoder_hidden_states [B,S,J],\n"
    "                     pooled_projections [B,P], timestep [B] (raw scheduler timestep in [0,1000]);\n"
    "                     FLUX: hidden_states [B,N,C] (packed), encoder_hidden_states [B,S,J],\n"
    "                     pooled_projections [B,P], timestep [B] (sigma), img_ids [N,3], txt_ids [S,3],\n"
    "                     guidance [B] (models with guidance_embeds);\n"
    "                     PixArt: hidden_states [B,C,H,W], encoder_hidden_states [B,S,caption_channels],\n"
    "                     encoder_attention_mask [B,S] (1 keep, 0 padding; optional), timestep [B],\n"
    "                     resolution [B,2] and aspect_ratio [B,1] (only models with additional conditions)\n"
    "  --out FILE         writes sample (SD3 [B,C,H,W], FLUX [B,N,C]); with --dump-blocks also block.{i}\n"
    "                     [B,N,D] (image stream after block i; FLUX: double block i) and FLUX's single.{j}\n"
    "                     [B,S+N,D] (whole stream, text first); with --probe also mass.{i} [B,H,N+S]\n"
    "                     (incoming mass per key averaged over the image queries, in the model's token\n"
    "                     order: SD3 image first, FLUX text first; mass.attn2.{i} [B,H,N] for SD3.5's\n"
    "                     attn2 sites, single_mass.{j} for FLUX's single blocks; PixArt: self_mass.{i}\n"
    "                     [B,H,N] and cross_mass.{i} [B,H,S], 0 for padding)\n"
    "  --dump-rope-qk     (FLUX) also qk_pre.{i}, qk_post.{i}, single_qk_pre.{j}, single_qk_post.{j}\n"
    "                     [B,H,S+N]: <q_i, k_j> averaged over the image queries i, after the QK RMSNorm,\n"
    "                     before and after RoPE, not divided by sqrt(head dim)\n"
    "  --probe SITES      comma-separated sites to probe: joint block indices (e.g. 0,6,12) and/or\n"
    "                     site names joint.{i}, attn2.{i} (SD3.5 dual blocks), double.{i}, single.{j} (FLUX),\n"
    "                     self.{i}, cross.{i} (PixArt); or 'all': every site of the model\n"
    "  --probe-queries Q  query rows the probe statistics average over (default image)\n"
    "  --topk K           sinks recorded per head (default 5)\n"
    "  --spiral FIELDS    with --probe: the \"why sinks form\" fields at every probed site (docs/spiral-\n"
    "                     measurements.md): 'all' or any of keyimp,budget,energy,qk,norms,act; in the stats\n"
    "                     JSON (probe.spiral) and as tensors keyimp.{site} [B,Tk], budget.{site} [B,8],\n"
    "                     kenergy_sink.{site} / kenergy_image.{site} [B,dh/2] (RoPE sites), act_inf.{site} [B,Tk]\n"
    "  --stats FILE       probe statistics and intervention verification as JSON\n"
    "                     (default: OUT with .safetensors replaced by .stats.json, when probing or intervening)\n"
    "  --condition FILE   one intervention condition object (schema: README, section Conditions)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores)\n" CLI_PRECISION_HELP;

typedef struct {
    char name[32];
    int64_t shape[3];
    float *data;
} dumped;

typedef struct {
    sd3_hooks inner;
    int dump;           /* --dump-blocks */
    int dump_qk;        /* --dump-rope-qk */
    sink_ctx *sink;     /* the probe, for its pre-RoPE <q, k> (--spiral) */
    sink_ctx *pe;       /* the condition's AbsPE edit (pe_* fields) */
    dumped *dumps;      /* block outputs in the order they came */
    int n_dumps, cap_dumps;
} fwd_hooks;

static int fwd_pos_embed(void *ctx, float *tab, int h, int w, int D) {
    fwd_hooks *f = ctx;
    return f->pe ? sink_ctx_pos_embed(f->pe, tab, h, w, D) : 0;
}

static int fwd_attention(void *ctx, const ss_site *site, const attn_args *a) {
    fwd_hooks *f = ctx;
    return f->inner.attention ? f->inner.attention(f->inner.ctx, site, a) : attn_forward(a, NULL);
}

/* --probe: "0,6,12" (joint blocks) and/or site names ("joint.0,attn2.1") into site codes. */
static int parse_probe(const char *s, int *codes, int cap) {
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, "sinkscope forward: --probe: '%s' is not a list of block indices or site names (e.g. 0,6,12 or joint.0,attn2.1)\n", s);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = 0;
        int code = -1;
        if (item[0] >= '0' && item[0] <= '9') {
            char *end;
            long v = strtol(item, &end, 10);
            if (!*end && v >= 0 && v < SS_SITE_MAX_BLOCKS) code = ss_site_code(SS_SITE_JOINT, (int)v);
        } else {
            code = ss_site_code_parse(item);
        }
        if (code < 0) {
            fprintf(stderr, "sinkscope forward: --probe: '%s' is neither a block index (0..%d) nor a site name KIND.BLOCK (joint.3, attn2.0)\n",
                    item, SS_SITE_MAX_BLOCKS - 1);
            return -1;
        }
        if (n == cap) {
            fprintf(stderr, "sinkscope forward: --probe: more than %d sites\n", cap);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (codes[i] == code) {
                char nm[48];
                fprintf(stderr, "sinkscope forward: --probe: '%s' lists %s twice\n", s, ss_site_code_name(code, nm, sizeof nm));
                return -1;
            }
        codes[n++] = code;
        if (!e) break;
        p = e + 1;
    }
    return n;
}

static dumped *dump_slot(fwd_hooks *f) {
    if (f->n_dumps == f->cap_dumps) {
        const int cap = f->cap_dumps ? 2 * f->cap_dumps : 16;
        dumped *d = realloc(f->dumps, sizeof *d * (size_t)cap);
        if (!d) {
            ss_fail(SS_ENOMEM, "forward: out of memory keeping block outputs");
            return NULL;
        }
        f->dumps = d;
        f->cap_dumps = cap;
    }
    return &f->dumps[f->n_dumps];
}

/* block.{i} after a joint or double block, single.{j} after a FLUX single block */
static int fwd_block_output(void *ctx, ss_site_kind kind, int block, const float *x, int B, int N, int D) {
    fwd_hooks *f = ctx;
    if (f->dump) {
        dumped *d = dump_slot(f);
        if (!d) return SS_ENOMEM;
        snprintf(d->name, sizeof d->name, "%s.%d", kind == SS_SITE_SINGLE ? "single" : "block", block);
        d->shape[0] = B;
        d->shape[1] = N;
        d->shape[2] = D;
        d->data = ss_malloc(sizeof(float) * B * N * D);
        if (!d->data) return SS_ENOMEM;
        memcpy(d->data, x, sizeof(float) * B * N * D);
        f->n_dumps++;
    }
    return f->inner.block_output ? f->inner.block_output(f->inner.ctx, block, x, B, N, D) : 0;
}

/* --dump-rope-qk: the image-query mean <q, k> before and after RoPE */
static int fwd_rope_qk(void *ctx, const ss_site *site, int post, const attn_args *a) {
    fwd_hooks *f = ctx;
    if (f->sink) {
        int rc = sink_ctx_rope_qk(f->sink, site, post, a);
        if (rc < 0) return rc;
    }
    if (!f->dump_qk) return 0;
    int lo, hi;
    if (ss_site_range(site, 0, 0, &lo, &hi) < 0 || hi <= lo) return 0; /* no image queries */
    dumped *d = dump_slot(f);
    if (!d) return SS_ENOMEM;
    const int Tk = a->Tk ? a->Tk : a->T;
    snprintf(d->name, sizeof d->name, "%sqk_%s.%d", site->kind == SS_SITE_SINGLE ? "single_" : "", post ? "post" : "pre",
             site->block);
    d->shape[0] = a->B;
    d->shape[1] = a->H;
    d->shape[2] = Tk;
    d->data = ss_malloc(sizeof(float) * a->B * a->H * Tk);
    if (!d->data) return SS_ENOMEM;
    f->n_dumps++;
    return ss_qk_mean(d->data, a, lo, hi);
}

/* spiral_rec_tensors' callback: one F32 tensor into the output file */
static int fwd_add_tensor(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data) {
    return st_writer_add_f32(ctx, name, ST_F32, ndim, shape, data);
}

/* Is key j of this record's site a text token? (from the site's spans: SD3 image first, FLUX text first) */
static int key_is_text(const ss_site *sites, int n, const sink_record *r, int j) {
    const ss_site *s = ss_site_find(sites, n, r->site);
    for (int g = 0; s && g < s->n_kspan; g++)
        if (j >= s->kspan[g].start && j < s->kspan[g].start + s->kspan[g].len) return ss_tok_is_text(s->kspan[g].type);
    return j >= r->n_img;
}

int cmd_forward(int argc, char **argv) {
    const char *model_dir = NULL, *in_path = NULL, *out_path = NULL, *probe_s = NULL, *pq_s = "image", *topk_s = "5",
               *stats_path = NULL, *cond_path = NULL, *threads_s = NULL, *spiral_s = NULL, *prec_s = NULL;
    int dump_blocks = 0, dump_qk = 0;
    cli_opt opts[] = {{"model", &model_dir, NULL},     {"inputs", &in_path, NULL},      {"out", &out_path, NULL},
                      {"dump-blocks", NULL, &dump_blocks}, {"dump-rope-qk", NULL, &dump_qk}, {"probe", &probe_s, NULL},   {"probe-queries", &pq_s, NULL},
                      {"topk", &topk_s, NULL}, {"spiral", &spiral_s, NULL},         {"stats", &stats_path, NULL},    {"condition", &cond_path, NULL},
                      {"threads", &threads_s, NULL},   {"precision", &prec_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
    if (pr == 0 && cli_precision("forward", prec_s)) return 2;
    if (pr) return pr > 0 ? 0 : 2;
    if (!model_dir || !in_path || !out_path) {
        fprintf(stderr, "sinkscope forward: --model, --inputs and --out are required\n%s", USAGE);
        return 2;
    }
    long topk, nthreads;
    if (cli_int("forward", "topk", topk_s, 1, 64, &topk)) return 2;
    if (threads_s) {
        if (cli_int("forward", "threads", threads_s, 1, 4096, &nthreads)) return 2;
        omp_set_num_threads((int)nthreads);
    }
    sink_tokens pq = !strcmp(pq_s, "image") ? TOK_IMAGE : !strcmp(pq_s, "text") ? TOK_TEXT : !strcmp(pq_s, "all") ? TOK_ALL : (sink_tokens)-1;
    if ((int)pq < 0) {
        fprintf(stderr, "sinkscope forward: --probe-queries must be image, text or all\n");
        return 2;
    }
    unsigned spiral = 0;
    if (spiral_s && spiral_fields_parse(spiral_s, &spiral) < 0) {
        fprintf(stderr, "sinkscope forward: --spiral: %s\n", ss_err());
        return 2;
    }
    if (spiral_s && !probe_s) {
        fprintf(stderr, "sinkscope forward: --spiral needs --probe (the sites to measure)\n");
        return 2;
    }
    enum { MAX_SITES = 2 * SS_SITE_MAX_BLOCKS };
    int probe_blocks[MAX_SITES], nprobe = 0;
    const int probe_all = probe_s && !strcmp(probe_s, "all");
    if (probe_s && !probe_all && (nprobe = parse_probe(probe_s, probe_blocks, COND_MAX_LAYERS)) < 0) return 2;

    /* the statistics file: --stats, or by default OUT with .safetensors replaced by .stats.json */
    char def[4200];
    if (!stats_path && (nprobe || probe_all || cond_path)) {
        size_t L = strlen(out_path);
        const char *ext = ".safetensors";
        size_t el = strlen(ext);
        int cut = L > el && !strcmp(out_path + L - el, ext);
        if ((size_t)snprintf(def, sizeof def, "%.*s.stats.json", (int)(cut ? L - el : L), out_path) >= sizeof def) {
            fprintf(stderr, "sinkscope forward: --out: path too long\n");
            return 2;
        }
        stats_path = def;
    }
    /* no output may overwrite an input (or the other output) */
    const pc_file inputs[] = {{"--inputs", in_path}, {"--condition", cond_path}};
    const int n_inputs = sizeof inputs / sizeof inputs[0];
    if (pc_check_output("--out", out_path, inputs, n_inputs) || pc_check_output_tree("--out", out_path, "--model", model_dir, pc_is_model_file) ||
        pc_check_output(stats_path == def ? "--stats (default)" : "--stats", stats_path, inputs, n_inputs) ||
        pc_check_output_tree(stats_path == def ? "--stats (default)" : "--stats", stats_path, "--model", model_dir, pc_is_model_file) ||
        pc_check_outputs_differ("--out", out_path, "--stats", stats_path)) {
        fprintf(stderr, "sinkscope forward: %s\n", ss_err());
        return 2;
    }

    int rc = 0, exit_code = 1;
    const ss_family *fam = NULL;
    void *m = NULL;
    st_file *in = NULL;
    sink_ctx *sk = NULL;
    st_writer *w = NULL;
    float *out = NULL;
    ss_fwd_inputs io = {0};
    fwd_hooks fh = {0};
    sink_condition cond;
    if (cond_path && (rc = sink_condition_load(&cond, cond_path)) < 0) goto done;
    if ((rc = ss_family_detect(model_dir, &fam)) < 0 || (rc = fam->load(&m, model_dir)) < 0) goto done;
    ss_site all_sites[MAX_SITES];
    char list[1024], nm[48];
    const int n_sites = fam->sites(m, 0, 0, all_sites, MAX_SITES);
    if (dump_qk && !fam->rope) {
        rc = ss_fail(SS_EARG, "--dump-rope-qk: %s is a %s model, which has no RoPE", model_dir, fam->name);
        goto done;
    }
    int n_joint = 0;
    for (int i = 0; i < n_sites; i++) n_joint += all_sites[i].kind == SS_SITE_JOINT;
    for (int i = 0; probe_all && i < n_sites && i < MAX_SITES; i++) probe_blocks[nprobe++] = ss_site_code_of(&all_sites[i]);
    for (int i = 0; i < nprobe; i++) {
        if (ss_site_code_kind(probe_blocks[i]) == SS_SITE_JOINT && n_joint && probe_blocks[i] >= n_joint) {
            rc = ss_fail(SS_EARG, "--probe: block %d does not exist (%s has %d blocks)", probe_blocks[i], model_dir, n_joint);
            goto done;
        }
        if (!ss_site_find(all_sites, n_sites, probe_blocks[i])) {
            rc = ss_fail(SS_EARG, "--probe: site %s does not exist in %s (its sites: %s)", ss_site_code_name(probe_blocks[i], nm, sizeof nm),
                         model_dir, ss_site_list(all_sites, n_sites, list, sizeof list));
            goto done;
        }
    }
    /* 'layers' names the model's joint attention blocks: SD3 joint.i, FLUX double.i */
    if (cond_path && (rc = sink_condition_resolve(&cond, all_sites, n_sites, cond_path)) < 0) goto done;
    if (cond_path && n_joint)
        for (int i = 0; i < cond.n_layers - cond.n_from_sites; i++)
            if (cond.layers[i] >= n_joint) {
                rc = ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d blocks", cond_path,
                             cond.layers[i], n_joint);
                goto done;
            }
    if ((rc = st_open(&in, in_path)) < 0) goto done;
    /* every input is checked against the model before any of them is converted */
    if ((rc = fam->inputs(m, in, in_path, &io)) < 0) goto done;
    const int N = io.N, S = io.S;
    int n_now = n_sites;
    if (cond_path || nprobe) n_now = fam->sites(m, N, S, all_sites, MAX_SITES);
    if (cond_path && (rc = sink_condition_check_sites(&cond, all_sites, n_now, cond_path)) < 0) goto done;
    if (cond_path && (rc = sink_condition_check_pe(&cond, io.pe_grid[0], io.pe_grid[1], fam->class_name, cond_path)) < 0) goto done;
    out = ss_malloc(sizeof(float) * (io.out_numel ? io.out_numel : 1));
    sk = sink_ctx_new();
    if (!out || !sk) { rc = SS_ENOMEM; goto done; }
    if ((rc = sink_ctx_set_probe(sk, probe_blocks, nprobe, pq, (int)topk, 1)) < 0) goto done;
    if (cond_path) sink_ctx_set_condition(sk, &cond);
    if (spiral) sink_ctx_set_spiral(sk, spiral);
    fh.inner = sink_ctx_hooks(sk);
    fh.sink = spiral ? sk : NULL;
    fh.pe = cond_path && cond.have_pe ? sk : NULL;
    fh.dump = dump_blocks;
    fh.dump_qk = dump_qk;
    ss_model_hooks hk = {.ctx = &fh, .attention = fwd_attention, .block_output = fwd_block_output, .rope_qk = fwd_rope_qk,
                        .pos_embed = fwd_pos_embed};
    if ((rc = fam->forward(m, out, &io, &hk)) < 0) goto done;

    w = st_writer_new();
    if (!w) { rc = SS_ENOMEM; goto done; }
    if ((rc = st_writer_add_f32(w, "sample", ST_F32, io.out_ndim, io.out_shape, out)) < 0) goto done;
    char name[64];
    for (int i = 0; i < fh.n_dumps; i++)
        if ((rc = st_writer_add_f32(w, fh.dumps[i].name, ST_F32, 3, fh.dumps[i].shape, fh.dumps[i].data)) < 0) goto done;
    for (int i = 0; i < sink_ctx_record_count(sk); i++) {
        const sink_record *r = sink_ctx_record(sk, i);
        if (!r->mass) continue;
        int64_t sm[3] = {r->B, r->H, r->T};
        const ss_site_kind kind = ss_site_code_kind(r->site);
        if (kind == SS_SITE_JOINT || kind == SS_SITE_DOUBLE) snprintf(name, sizeof name, "mass.%d", ss_site_code_block(r->site));
        else if (kind == SS_SITE_SINGLE) snprintf(name, sizeof name, "single_mass.%d", ss_site_code_block(r->site));
        else if (kind == SS_SITE_SELF) snprintf(name, sizeof name, "self_mass.%d", ss_site_code_block(r->site));
        else if (kind == SS_SITE_CROSS) snprintf(name, sizeof name, "cross_mass.%d", ss_site_code_block(r->site));
        else snprintf(name, sizeof name, "mass.%s", ss_site_code_name(r->site, nm, sizeof nm));
        if ((rc = st_writer_add_f32(w, name, ST_F32, 3, sm, r->mass)) < 0) goto done;
    }
    for (int i = 0; i < sink_ctx_record_count(sk); i++) {
        const sink_record *r = sink_ctx_record(sk, i);
        if (r->spiral && (rc = spiral_rec_tensors(r->spiral, ss_site_code_name(r->site, nm, sizeof nm), fwd_add_tensor, w)) < 0)
            goto done;
    }
    if ((rc = st_writer_save(w, out_path)) < 0) goto done;
    for (int i = 0; i < sink_ctx_record_count(sk); i++) {
        const sink_record *r = sink_ctx_record(sk, i);
        char label[64]; /* "block  3" as before for joint sites, "attn2.1 " otherwise */
        if (ss_site_code_kind(r->site) == SS_SITE_JOINT) snprintf(label, sizeof label, "block %2d", r->block);
        else snprintf(label, sizeof label, "%s", ss_site_code_name(r->site, nm, sizeof nm));
        for (int b = 0; b < r->B; b++) {
            if (r->probed)
                printf("%s batch %d: MaxMass %.4f  entropy %.3f  top-5 conc. %.3f  head 0 top-1 sink: key %d (%s, mass %.4f; "
                       "top-1 is text in %.0f%% of heads, index 0 in %.0f%%)  activation max %.2f p95 %.2f\n",
                       label, b, r->max_mass[b], r->entropy[b], r->top5[b], r->top_idx[(size_t)b * r->H * r->topk],
                       key_is_text(all_sites, n_now, r, r->top_idx[(size_t)b * r->H * r->topk]) ? "text" : "image", r->top_mass[(size_t)b * r->H * r->topk],
                       100 * r->text_frac[b], 100 * r->idx0_frac[b], r->act_max[b], r->act_p95[b]);
            if (r->intervened) {
                double sb = 0, sa = 0;
                for (int h = 0; h < r->H; h++) {
                    sb += r->before[(size_t)b * r->H + h] / r->H;
                    sa += r->after[(size_t)b * r->H + h] / r->H;
                }
                if (sa > 0)
                    printf("%s batch %d: intervention: suppressed keys' mass %.3e -> %.3e (reduction %.3g x)\n", label, b, sb, sa, sb / sa);
                else
                    printf("%s batch %d: intervention: suppressed keys' mass %.3e -> 0 (removed)\n", label, b, sb);
            }
        }
    }
    if (nprobe || cond_path) {
        json_t *root = json_object();
        json_object_set_new(root, "model", json_string(model_dir));
        json_object_set_new(root, "inputs", json_string(in_path));
        json_object_set_new(root, "condition", cond_path ? (json_t *)sink_condition_to_json(&cond) : json_null());
        json_t *pj = sink_record_write_probe_json(sk, 1, NULL), *vr = sink_record_write_verif_json(sk, 1);
        json_object_set_new(root, "probe", pj); /* sink/record.h: one entry per site, step and batch element */
        json_object_set_new(root, "verification", vr);
        if (!pj || !vr) {
            json_decref(root);
            rc = SS_ENOMEM;
            goto done;
        }
        if ((rc = ss_json_save(stats_path, root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))) < 0) goto done;
    }
    exit_code = 0;
done:
    if (rc < 0) fprintf(stderr, "sinkscope forward: %s\n", ss_err());
    for (int i = 0; i < fh.n_dumps; i++) free(fh.dumps[i].data);
    free(fh.dumps);
    st_writer_free(w);
    sink_ctx_free(sk);
    ss_fwd_inputs_free(&io);
    free(out);
    st_close(in);
    if (m) fam->free(m);
    return exit_code;
}
