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
#include "models/sd3.h"
#include "sink/sink.h"

static const char USAGE[] =
    "usage: sinkscope forward --model DIR --inputs IN.safetensors --out OUT.safetensors\n"
    "                         [--dump-blocks] [--probe BLOCKS] [--probe-queries image|text|all]\n"
    "                         [--topk K] [--stats FILE.json] [--condition FILE.json] [--threads N]\n"
    "\n"
    "  --model DIR        diffusers transformer folder (config.json + diffusion_pytorch_model*.safetensors)\n"
    "  --inputs FILE      hidden_states [B,C,H,W], encoder_hidden_states [B,S,J],\n"
    "                     pooled_projections [B,P], timestep [B] (raw scheduler timestep in [0,1000])\n"
    "  --out FILE         writes sample [B,C,H,W]; with --dump-blocks also block.{i} [B,N,D]\n"
    "                     (image stream after block i); with --probe also mass.{i} [B,H,N+S]\n"
    "                     (incoming mass per key averaged over the image queries, keys image first;\n"
    "                     mass.attn2.{i} [B,H,N] for SD3.5's attn2 sites)\n"
    "  --probe SITES      comma-separated sites to probe: joint block indices (e.g. 0,6,12) and/or\n"
    "                     site names joint.{i}, attn2.{i} (SD3.5 dual blocks), e.g. joint.0,attn2.1\n"
    "  --probe-queries Q  query rows the probe statistics average over (default image)\n"
    "  --topk K           sinks recorded per head (default 5)\n"
    "  --stats FILE       probe statistics and intervention verification as JSON\n"
    "                     (default: OUT with .safetensors replaced by .stats.json, when probing or intervening)\n"
    "  --condition FILE   one intervention condition object (schema: README, section Conditions)\n"
    "  --threads N        OpenMP/BLAS threads (default: all cores)\n";

typedef struct {
    sd3_hooks inner;
    float **dump; /* [L] -> [B,N,D] copies, or NULL */
} fwd_hooks;

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

static int fwd_block_output(void *ctx, int block, const float *x, int B, int N, int D) {
    fwd_hooks *f = ctx;
    if (f->dump) {
        f->dump[block] = ss_malloc(sizeof(float) * B * N * D);
        if (!f->dump[block]) return SS_ENOMEM;
        memcpy(f->dump[block], x, sizeof(float) * B * N * D);
    }
    return f->inner.block_output ? f->inner.block_output(f->inner.ctx, block, x, B, N, D) : 0;
}

/* Look up an input tensor and check its dtype and rank from the safetensors header; dims[]
 * receives its shape. Nothing is converted or allocated. */
static int input_find(const st_file *f, const char *path, const char *name, int ndim, int64_t *dims,
                      const st_tensor **out) {
    const st_tensor *t = st_find(f, name);
    if (!t) return ss_fail(SS_EMISSING, "%s: input tensor '%s' is missing", path, name);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        return ss_fail(SS_EFORMAT, "%s: input '%s' has dtype %s, expected a float dtype (F32, F16, BF16, F64)", path,
                       name, st_dtype_name(t->dtype));
    if (t->ndim != ndim) return ss_fail(SS_ESHAPE, "%s: input '%s' has %d dimensions, expected %d", path, name, t->ndim, ndim);
    for (int i = 0; i < ndim; i++) dims[i] = t->shape[i];
    *out = t;
    return SS_OK;
}

/* "[2,16,32,32]" */
static const char *shape_str(char *buf, size_t cap, const int64_t *d, int n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? "," : "[", (long long)d[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* Every input's shape against the model's config, before anything is sized from it. */
static int check_input_shapes(const char *path, const sd3_config *c, const int64_t *dx, const int64_t *dc,
                              const int64_t *dp, const int64_t *dt) {
    char s[128];
    const int64_t B = dx[0], p = c->patch_size, M = c->pos_embed_max_size;
    if (B < 1 || B > 4096)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s: batch size %lld outside 1..4096", path,
                       shape_str(s, sizeof s, dx, 4), (long long)B);
    if (dx[1] != c->in_channels)
        return ss_fail(SS_ESHAPE, "%s: input 'hidden_states' has shape %s, expected [%lld, %d, H, W] (batch, in_channels)", path,
                       shape_str(s, sizeof s, dx, 4), (long long)B, c->in_channels);
    if (dx[2] < p || dx[3] < p || dx[2] % p || dx[3] % p || dx[2] / p > M || dx[3] / p > M)
        return ss_fail(SS_ESHAPE,
                       "%s: input 'hidden_states' has shape %s: height and width must be positive multiples of the patch "
                       "size %lld, at most %lld (pos_embed_max_size %lld patches)",
                       path, shape_str(s, sizeof s, dx, 4), (long long)p, (long long)(p * M), (long long)M);
    if (dc[0] != B || dc[1] < 1 || dc[1] > 1 << 20 || dc[2] != c->joint_attention_dim)
        return ss_fail(SS_ESHAPE,
                       "%s: input 'encoder_hidden_states' has shape %s, expected [%lld, S, %d] (batch, 1 <= S <= %d, "
                       "joint_attention_dim)",
                       path, shape_str(s, sizeof s, dc, 3), (long long)B, c->joint_attention_dim, 1 << 20);
    if (dp[0] != B || dp[1] != c->pooled_projection_dim)
        return ss_fail(SS_ESHAPE, "%s: input 'pooled_projections' has shape %s, expected [%lld, %d] (batch, pooled_projection_dim)",
                       path, shape_str(s, sizeof s, dp, 2), (long long)B, c->pooled_projection_dim);
    if (dt[0] != B)
        return ss_fail(SS_ESHAPE, "%s: input 'timestep' has shape %s, expected [%lld] (batch)", path,
                       shape_str(s, sizeof s, dt, 1), (long long)B);
    return SS_OK;
}

/* Convert a checked input tensor to fp32. */
static int input_convert(const char *path, const st_tensor *t, float **out) {
    size_t n = (size_t)(t->numel ? t->numel : 1);
    *out = malloc(sizeof(float) * n);
    if (!*out)
        return ss_fail(SS_ENOMEM, "%s: input '%s': out of memory converting %zu values to fp32", path, t->name, n);
    return st_to_f32(*out, t);
}

int cmd_forward(int argc, char **argv) {
    const char *model_dir = NULL, *in_path = NULL, *out_path = NULL, *probe_s = NULL, *pq_s = "image", *topk_s = "5",
               *stats_path = NULL, *cond_path = NULL, *threads_s = NULL;
    int dump_blocks = 0;
    cli_opt opts[] = {{"model", &model_dir, NULL},     {"inputs", &in_path, NULL},      {"out", &out_path, NULL},
                      {"dump-blocks", NULL, &dump_blocks}, {"probe", &probe_s, NULL},   {"probe-queries", &pq_s, NULL},
                      {"topk", &topk_s, NULL},         {"stats", &stats_path, NULL},    {"condition", &cond_path, NULL},
                      {"threads", &threads_s, NULL}};
    int pr = cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], USAGE);
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
    int probe_blocks[COND_MAX_LAYERS], nprobe = 0;
    if (probe_s && (nprobe = parse_probe(probe_s, probe_blocks, COND_MAX_LAYERS)) < 0) return 2;

    /* the statistics file: --stats, or by default OUT with .safetensors replaced by .stats.json */
    char def[4200];
    if (!stats_path && (nprobe || cond_path)) {
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
    sd3_model *m = NULL;
    st_file *in = NULL;
    sink_ctx *sk = NULL;
    st_writer *w = NULL;
    float *x = NULL, *ctx = NULL, *pooled = NULL, *t = NULL, *out = NULL, **dump = NULL;
    sink_condition cond;
    if (cond_path && (rc = sink_condition_load(&cond, cond_path)) < 0) goto done;
    if ((rc = sd3_load(&m, model_dir)) < 0) goto done;
    const sd3_config *c = &m->cfg;
    ss_site all_sites[2 * SD3_MAX_LAYERS];
    char list[1024], nm[48];
    const int n_sites = sd3_sites(c, 0, 0, all_sites, 2 * SD3_MAX_LAYERS);
    for (int i = 0; i < nprobe; i++) {
        if (ss_site_code_kind(probe_blocks[i]) == SS_SITE_JOINT && probe_blocks[i] >= c->num_layers) {
            rc = ss_fail(SS_EARG, "--probe: block %d does not exist (%s has %d blocks)", probe_blocks[i], model_dir, c->num_layers);
            goto done;
        }
        if (!ss_site_find(all_sites, n_sites, probe_blocks[i])) {
            rc = ss_fail(SS_EARG, "--probe: site %s does not exist in %s (its sites: %s)", ss_site_code_name(probe_blocks[i], nm, sizeof nm),
                         model_dir, ss_site_list(all_sites, n_sites, list, sizeof list));
            goto done;
        }
    }
    if (cond_path)
        for (int i = 0; i < cond.n_layers - cond.n_from_sites; i++)
            if (cond.layers[i] >= c->num_layers) {
                rc = ss_fail(SS_EARG, "%s: field 'layers' names block %d, but the model has %d blocks", cond_path,
                             cond.layers[i], c->num_layers);
                goto done;
            }
    if ((rc = st_open(&in, in_path)) < 0) goto done;
    int64_t dx[4] = {0}, dc[3] = {0}, dp[2] = {0}, dt[1] = {0};
    const st_tensor *tx, *tc, *tp, *tt;
    /* every input is checked against the model before any of them is converted */
    if ((rc = input_find(in, in_path, "hidden_states", 4, dx, &tx)) < 0 ||
        (rc = input_find(in, in_path, "encoder_hidden_states", 3, dc, &tc)) < 0 ||
        (rc = input_find(in, in_path, "pooled_projections", 2, dp, &tp)) < 0 ||
        (rc = input_find(in, in_path, "timestep", 1, dt, &tt)) < 0 ||
        (rc = check_input_shapes(in_path, c, dx, dc, dp, dt)) < 0)
        goto done;
    if ((rc = input_convert(in_path, tx, &x)) < 0 || (rc = input_convert(in_path, tc, &ctx)) < 0 ||
        (rc = input_convert(in_path, tp, &pooled)) < 0 || (rc = input_convert(in_path, tt, &t)) < 0)
        goto done;
    const int64_t B = dx[0];
    const int Hl = (int)dx[2], Wl = (int)dx[3], S = (int)dc[1], D = m->D, p = c->patch_size, N = (Hl / p) * (Wl / p);
    if (cond_path) {
        const int ns = sd3_sites(c, N, S, all_sites, 2 * SD3_MAX_LAYERS);
        if ((rc = sink_condition_check_sites(&cond, all_sites, ns, cond_path)) < 0) goto done;
    }
    out = ss_malloc(sizeof(float) * B * c->out_channels * Hl * Wl);
    sk = sink_ctx_new();
    if (!out || !sk) { rc = SS_ENOMEM; goto done; }
    if ((rc = sink_ctx_set_probe(sk, probe_blocks, nprobe, pq, (int)topk, 1)) < 0) goto done;
    if (cond_path) sink_ctx_set_condition(sk, &cond);
    if (dump_blocks && !(dump = ss_calloc((size_t)c->num_layers, sizeof *dump))) { rc = SS_ENOMEM; goto done; }
    fwd_hooks fh = {.inner = sink_ctx_hooks(sk), .dump = dump};
    sd3_hooks hk = {.ctx = &fh, .attention = fwd_attention, .block_output = fwd_block_output};
    if ((rc = sd3_forward(m, out, x, ctx, pooled, t, (int)B, Hl, Wl, S, &hk)) < 0) goto done;

    w = st_writer_new();
    if (!w) { rc = SS_ENOMEM; goto done; }
    int64_t so[4] = {B, c->out_channels, Hl, Wl};
    if ((rc = st_writer_add_f32(w, "sample", ST_F32, 4, so, out)) < 0) goto done;
    char name[64];
    for (int i = 0; dump && i < c->num_layers; i++) {
        int64_t sb[3] = {B, N, D};
        snprintf(name, sizeof name, "block.%d", i);
        if ((rc = st_writer_add_f32(w, name, ST_F32, 3, sb, dump[i])) < 0) goto done;
    }
    for (int i = 0; i < sink_ctx_record_count(sk); i++) {
        const sink_record *r = sink_ctx_record(sk, i);
        if (!r->mass) continue;
        int64_t sm[3] = {r->B, r->H, r->T};
        if (ss_site_code_kind(r->site) == SS_SITE_JOINT) snprintf(name, sizeof name, "mass.%d", r->block);
        else snprintf(name, sizeof name, "mass.%s", ss_site_code_name(r->site, nm, sizeof nm));
        if ((rc = st_writer_add_f32(w, name, ST_F32, 3, sm, r->mass)) < 0) goto done;
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
                       r->top_idx[(size_t)b * r->H * r->topk] >= r->n_img ? "text" : "image", r->top_mass[(size_t)b * r->H * r->topk],
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
        json_t *root = json_object(), *recs = json_array();
        json_object_set_new(root, "model", json_string(model_dir));
        json_object_set_new(root, "inputs", json_string(in_path));
        json_object_set_new(root, "condition", cond_path ? (json_t *)sink_condition_to_json(&cond) : json_null());
        for (int i = 0; i < sink_ctx_record_count(sk); i++)
            json_array_append_new(recs, (json_t *)sink_record_to_json(sink_ctx_record(sk, i)));
        json_object_set_new(root, "records", recs);
        if ((rc = ss_json_save(stats_path, root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))) < 0) goto done;
    }
    exit_code = 0;
done:
    if (rc < 0) fprintf(stderr, "sinkscope forward: %s\n", ss_err());
    for (int i = 0; dump && m && i < m->cfg.num_layers; i++) free(dump[i]);
    free(dump);
    st_writer_free(w);
    sink_ctx_free(sk);
    free(x); free(ctx); free(pooled); free(t); free(out);
    st_close(in);
    sd3_free(m);
    return exit_code;
}
