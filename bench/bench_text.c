/* Text-encoder benchmark (issue 14): tokens/s of a T5-XXL-width encoder (d_model 4096, 64 heads
 * x 64, d_ff 10240, gated-gelu; 2 blocks, 256 tokens) and a CLIP-L-width one (768, 12 x 64,
 * mlp 3072; 12 layers, 77 tokens), random BF16 weights written to a temporary transformers folder
 * and loaded by txenc_open, each as a fraction of the sgemm rate measured in the same run at the
 * encoder's own layer shapes. Usage: bench_text [t5|clip] (default both). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "text/txenc.h"

static uint64_t g_s = 88172645463325252ull;
static float frand(void) {
    g_s ^= g_s << 13, g_s ^= g_s >> 7, g_s ^= g_s << 17;
    return (float)((g_s >> 11) * 0x1.0p-53 * 2 - 1);
}

static double g_values; /* values written by add() since the run began */
static int add(st_writer *w, const char *name, int64_t d0, int64_t d1, float scale, float offset) {
    size_t n = (size_t)d0 * (d1 ? d1 : 1);
    g_values += (double)n;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = offset + scale * frand();
    int64_t shape[2] = {d0, d1};
    int rc = st_writer_add_f32(w, name, ST_BF16, d1 ? 2 : 1, shape, x);
    free(x);
    return rc;
}

static int sink(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    return 0;
}

static int run(int t5) {
    g_values = 0;
    const int D = t5 ? 4096 : 768, H = t5 ? 64 : 12, dh = 64, F = t5 ? 10240 : 3072, NL = t5 ? 2 : 12;
    const int L = t5 ? 256 : 77, V = 1000, NI = H * dh;
    char dir[] = "/tmp/bench_text_XXXXXX", path[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (t5)
        fprintf(f, "{\"model_type\": \"t5\", \"vocab_size\": %d, \"d_model\": %d, \"d_kv\": %d, \"d_ff\": %d, "
                   "\"num_layers\": %d, \"num_heads\": %d, \"feed_forward_proj\": \"gated-gelu\"}\n", V, D, dh, F, NL, H);
    else
        fprintf(f, "{\"model_type\": \"clip_text_model\", \"vocab_size\": %d, \"hidden_size\": %d, "
                   "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
                   "\"max_position_embeddings\": 77, \"hidden_act\": \"quick_gelu\", \"eos_token_id\": 2}\n", V, D, F, NL, H);
    fclose(f);
    st_writer *w = st_writer_new();
    float ws = 1.0f / 64;
    char n[160];
    if (t5) {
        add(w, "shared.weight", V, D, 1, 0);
        add(w, "encoder.final_layer_norm.weight", D, 0, 0.1f, 1);
        add(w, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 32, H, 0.5f, 0);
        for (int l = 0; l < NL; l++) {
            const char *qn[4] = {"q", "k", "v", "o"};
            for (int k = 0; k < 4; k++) {
                snprintf(n, sizeof n, "encoder.block.%d.layer.0.SelfAttention.%s.weight", l, qn[k]);
                add(w, n, k < 3 ? NI : D, k < 3 ? D : NI, ws, 0);
            }
            snprintf(n, sizeof n, "encoder.block.%d.layer.1.DenseReluDense.wi_0.weight", l), add(w, n, F, D, ws, 0);
            snprintf(n, sizeof n, "encoder.block.%d.layer.1.DenseReluDense.wi_1.weight", l), add(w, n, F, D, ws, 0);
            snprintf(n, sizeof n, "encoder.block.%d.layer.1.DenseReluDense.wo.weight", l), add(w, n, D, F, ws, 0);
            snprintf(n, sizeof n, "encoder.block.%d.layer.0.layer_norm.weight", l), add(w, n, D, 0, 0.1f, 1);
            snprintf(n, sizeof n, "encoder.block.%d.layer.1.layer_norm.weight", l), add(w, n, D, 0, 0.1f, 1);
        }
    } else {
        add(w, "text_model.embeddings.token_embedding.weight", V, D, 1, 0);
        add(w, "text_model.embeddings.position_embedding.weight", 77, D, 1, 0);
        add(w, "text_model.final_layer_norm.weight", D, 0, 0.1f, 1);
        add(w, "text_model.final_layer_norm.bias", D, 0, 0.1f, 0);
        for (int l = 0; l < NL; l++) {
            const char *qn[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
            for (int k = 0; k < 4; k++) {
                snprintf(n, sizeof n, "text_model.encoder.layers.%d.self_attn.%s.weight", l, qn[k]), add(w, n, D, D, ws, 0);
                snprintf(n, sizeof n, "text_model.encoder.layers.%d.self_attn.%s.bias", l, qn[k]), add(w, n, D, 0, 0.1f, 0);
            }
            snprintf(n, sizeof n, "text_model.encoder.layers.%d.mlp.fc1.weight", l), add(w, n, F, D, ws, 0);
            snprintf(n, sizeof n, "text_model.encoder.layers.%d.mlp.fc1.bias", l), add(w, n, F, 0, 0.1f, 0);
            snprintf(n, sizeof n, "text_model.encoder.layers.%d.mlp.fc2.weight", l), add(w, n, D, F, ws, 0);
            snprintf(n, sizeof n, "text_model.encoder.layers.%d.mlp.fc2.bias", l), add(w, n, D, 0, 0.1f, 0);
            const char *ln[2] = {"layer_norm1", "layer_norm2"};
            for (int k = 0; k < 2; k++) {
                snprintf(n, sizeof n, "text_model.encoder.layers.%d.%s.weight", l, ln[k]), add(w, n, D, 0, 0.1f, 1);
                snprintf(n, sizeof n, "text_model.encoder.layers.%d.%s.bias", l, ln[k]), add(w, n, D, 0, 0.1f, 0);
            }
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (st_writer_save(w, path) < 0) {
        fprintf(stderr, "%s\n", ss_err());
        return 1;
    }
    st_writer_free(w);
    /* sgemm at the encoder's layer shapes, weighted by their flops */
    struct { int N, K, cnt; } sh[3] = {{NI, D, 3}, {D, NI, 1}, {F, D, t5 ? 2 : 1}};
    double fl_lin = 0, t_lin = 0;
    for (int i = 0; i < 3; i++) {
        double g = bu_sgemm_gflops(L, sh[i].N, sh[i].K, 3);
        double fl = 2.0 * L * sh[i].N * sh[i].K * sh[i].cnt;
        fl_lin += fl, t_lin += fl / (g * 1e9);
        printf("sgemm %4d x %5d x %5d : %7.1f GFLOP/s\n", L, sh[i].N, sh[i].K, g);
    }
    {
        double g = bu_sgemm_gflops(L, D, F, 3);
        double fl = 2.0 * L * D * F;
        fl_lin += fl, t_lin += fl / (g * 1e9);
        printf("sgemm %4d x %5d x %5d : %7.1f GFLOP/s\n", L, D, F, g);
    }
    double peak = fl_lin / t_lin / 1e9;
    long rss0 = bu_mem_reset();
    double t0 = bu_now();
    txenc *e;
    if (txenc_open(&e, dir) < 0) {
        fprintf(stderr, "%s\n", ss_err());
        return 1;
    }
    double t_load = bu_now() - t0;
    const long rss_load = bu_mem_peak() - rss0;
    int64_t *ids = malloc(sizeof *ids * L);
    for (int i = 0; i < L; i++) ids[i] = (i * 37) % V;
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = bu_now();
        if (txenc_run(e, ids, NULL, 1, L, "bench", sink, NULL) < 0) {
            fprintf(stderr, "%s\n", ss_err());
            return 1;
        }
        t = bu_now() - t;
        if (t < best) best = t;
    }
    double flops = NL * (fl_lin + 2.0 * 2.0 * L * L * NI);
    printf("%s-width encoder (%d x %d heads x %d, ff %d, %d layers, %d tokens): load %.2f s, forward %.3f s "
           "(best of 3) = %.0f tokens/s, %.1f GFLOP/s = %.0f%% of the sgemm rate %.1f GFLOP/s\n",
           t5 ? "T5-XXL" : "CLIP-L", D, H, dh, F, NL, L, t_load, best, L / best, flops / best / 1e9,
           100 * flops / best / 1e9 / peak, peak);
    printf("  BF16 weights held narrow: %.1f MiB (fp32 would be %.1f MiB); load peak +%.1f MiB, forward peak +%.1f MiB\n\n",
           txenc_weight_bytes(e) / 1048576.0, g_values * 4 / 1048576.0, rss_load / 1024.0,
           (bu_mem_peak() - rss0) / 1024.0);
    free(ids);
    txenc_free(e);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 0;
    if (argc < 2 || !strcmp(argv[1], "clip")) rc |= run(0);
    if (argc < 2 || !strcmp(argv[1], "t5")) rc |= run(1);
    return rc;
}
