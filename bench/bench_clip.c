/* CLIP-T image path benchmark (issue 16): images per second at 1024^2, open_clip's preprocessing
 * (PIL-exact bicubic resize to 224 + centre crop + normalisation) included, through a vision tower
 * of ViT-B/32's size (openai/clip-vit-base-patch32: 768 wide, 12 layers, 12 heads, mlp 3072,
 * patch 32, projection 512) with random BF16 weights written to a temporary folder; the tower's
 * GFLOP/s as a fraction of the sgemm rate measured in the same run at its layer shapes. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "metric/clip_vision.h"
#include "metric/imgproc.h"

enum { D = 768, F = 3072, L = 12, H = 12, P = 32, S = 224, E = 512, T = (S / P) * (S / P) + 1 };

static int add(st_writer *w, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, float gain,
               unsigned *seed) {
    int64_t sh[4] = {d0, d1, d2, d3};
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)sh[i];
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        x[i] = gain * ((float)(*seed >> 8) / 16777216.0f - 0.5f);
    }
    if (gain == 0) /* LayerNorm weights */
        for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    int rc = st_writer_add_f32(w, name, ST_BF16, ndim, sh, x);
    free(x);
    return rc;
}

static int make_model(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"model_type\": \"clip_vision_model\", \"hidden_size\": %d, \"intermediate_size\": %d, "
               "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"patch_size\": %d, \"image_size\": %d, "
               "\"projection_dim\": %d}\n", D, F, L, H, P, S, E);
    fclose(f);
    st_writer *w = st_writer_new();
    unsigned seed = 1;
    float g = 0.07f;
    int rc = add(w, "vision_model.embeddings.patch_embedding.weight", 4, D, 3, P, P, 0.03f, &seed);
    rc |= add(w, "vision_model.embeddings.class_embedding", 1, D, 0, 0, 0, 1, &seed);
    rc |= add(w, "vision_model.embeddings.position_embedding.weight", 2, T, D, 0, 0, 0.1f, &seed);
    rc |= add(w, "visual_projection.weight", 2, E, D, 0, 0, g, &seed);
    const char *ln[4] = {"vision_model.pre_layrnorm", "vision_model.post_layernorm", NULL, NULL};
    char n[160];
    for (int i = 0; i < 2; i++) {
        snprintf(n, sizeof n, "%s.weight", ln[i]), rc |= add(w, n, 1, D, 0, 0, 0, 0, &seed);
        snprintf(n, sizeof n, "%s.bias", ln[i]), rc |= add(w, n, 1, D, 0, 0, 0, 0.1f, &seed);
    }
    for (int l = 0; l < L; l++) {
        const char *lin[6] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                              "mlp.fc2"};
        int outs[6] = {D, D, D, D, F, D}, ins[6] = {D, D, D, D, D, F};
        for (int j = 0; j < 6; j++) {
            snprintf(n, sizeof n, "vision_model.encoder.layers.%d.%s.weight", l, lin[j]);
            rc |= add(w, n, 2, outs[j], ins[j], 0, 0, 2.0f / sqrtf((float)ins[j]), &seed);
            snprintf(n, sizeof n, "vision_model.encoder.layers.%d.%s.bias", l, lin[j]);
            rc |= add(w, n, 1, outs[j], 0, 0, 0, 0.02f, &seed);
        }
        for (int j = 1; j <= 2; j++) {
            snprintf(n, sizeof n, "vision_model.encoder.layers.%d.layer_norm%d.weight", l, j);
            rc |= add(w, n, 1, D, 0, 0, 0, 0, &seed);
            snprintf(n, sizeof n, "vision_model.encoder.layers.%d.layer_norm%d.bias", l, j);
            rc |= add(w, n, 1, D, 0, 0, 0, 0.1f, &seed);
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc == 0) rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

int main(void) {
    char dir[] = "/tmp/sinkscope-bench-clip-XXXXXX";
    if (!mkdtemp(dir) || make_model(dir) < 0) {
        fprintf(stderr, "bench_clip: cannot write the model: %s\n", ss_err());
        return 1;
    }
    clipv *m;
    if (clipv_open(&m, dir) < 0) {
        fprintf(stderr, "bench_clip: %s\n", ss_err());
        return 1;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_clip: could not remove %s\n", dir);
    printf("threads: %d; CLIP ViT-B/32-size vision tower (%d wide, %d layers, %d tokens), 1024x1024 RGB input\n",
           omp_get_max_threads(), D, L, T);
    const int W = 1024, R = 8;
    uint8_t *img = malloc((size_t)W * W * 3);
    for (size_t i = 0; i < (size_t)W * W * 3; i++) img[i] = (uint8_t)((i * 2654435761u) >> 24);
    float *px = malloc((size_t)R * 3 * S * S * sizeof *px), emb[R * E];
    /* warm-up */
    ip_clip_preprocess(img, W, W, S, IP_CLIP_MEAN, IP_CLIP_STD, px, NULL, "bench");
    clipv_run(m, px, 1, emb, NULL, NULL);
    double best_pre = 1e30, best_fwd = 1e30, best_b = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = bu_now();
        for (int i = 0; i < R; i++) ip_clip_preprocess(img, W, W, S, IP_CLIP_MEAN, IP_CLIP_STD, px + (size_t)i * 3 * S * S, NULL, "bench");
        double t1 = bu_now();
        for (int i = 0; i < R; i++) clipv_run(m, px + (size_t)i * 3 * S * S, 1, emb + i * E, NULL, NULL);
        double t2 = bu_now();
        clipv_run(m, px, R, emb, NULL, NULL);
        double t3 = bu_now();
        best_pre = fmin(best_pre, (t1 - t0) / R), best_fwd = fmin(best_fwd, (t2 - t1) / R), best_b = fmin(best_b, (t3 - t2) / R);
    }
    double gemm = 2.0 * T * (4.0 * D * D + 2.0 * D * F) * L + 2.0 * (T - 1) * (3.0 * P * P) * D + 2.0 * E * D;
    double attn = 4.0 * T * T * D * L;
    double flops = gemm + attn;
    /* sgemm at the tower's layer shapes (batch 1), weighted by their flops */
    double g_qkvo = bu_sgemm_gflops(T, D, D, 3), g_fc1 = bu_sgemm_gflops(T, F, D, 3), g_fc2 = bu_sgemm_gflops(T, D, F, 3);
    double t_ref = 2.0 * T * L * (4.0 * D * D / g_qkvo + D * F / g_fc1 + D * F / g_fc2) / 1e9;
    double g_ref = 2.0 * T * L * (4.0 * D * D + 2.0 * D * F) / t_ref / 1e9;
    printf("sgemm %d x %d x %d: %.1f GFLOP/s; %d x %d x %d: %.1f; %d x %d x %d: %.1f; weighted %.1f GFLOP/s\n", T, D, D,
           g_qkvo, T, F, D, g_fc1, T, D, F, g_fc2, g_ref);
    printf("preprocess 1024^2 -> 224 (PIL bicubic, crop, normalise): %.2f ms/image\n", best_pre * 1e3);
    printf("vision tower, batch 1: %.2f ms/image, %.1f GFLOP/s = %.0f%% of the sgemm rate\n", best_fwd * 1e3,
           flops / best_fwd / 1e9, 100 * flops / best_fwd / 1e9 / g_ref);
    printf("vision tower, batch %d: %.2f ms/image, %.1f GFLOP/s\n", R, best_b * 1e3, flops / best_b / 1e9);
    printf("CLIP-T image path at 1024^2 incl. preprocessing (best of 3): %.1f images/s (batch 1), %.1f images/s "
           "(batch %d)\n", 1.0 / (best_pre + best_fwd), 1.0 / (best_pre + best_b), R);
    free(img), free(px);
    clipv_free(m);
    return 0;
}
