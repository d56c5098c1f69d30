/* libFuzzer target for the PixArt engine on small and odd configurations: the fuzz bytes choose a
 * PixArtTransformer2DModel config (heads, head_dim, patch, sample_size, channels, layers, cross
 * attention and caption widths or none, additional conditions, affine norms, q/k/v bias,
 * activation, interpolation scale; now and then an invalid field), the weight dtype, a latent
 * size, text length, batch, a key mask (sometimes all padding, sometimes not 0/1), whether the
 * resolution inputs are given, a probe at every site and a condition. It writes config.json and
 * random weights (pixart_enumerate_tensors), loads them and runs pixart_forward on inputs from the
 * bytes (sometimes with a NaN planted).
 *
 * Contract checked: ASan/UBSan clean; what the loader or the forward pass rejects is rejected with
 * a one-line message; a valid config with valid inputs runs and gives finite outputs; an attached
 * probe never changes them. Build with `make fuzz`; run
 *   ./build/fuzz/fuzz_pixart -max_total_time=300 -timeout=5 /tmp/corpus-pixart */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"
#include "models/pixart.h"
#include "sink/sink.h"

static char g_dir[64];

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (g_dir[0] && system(cmd) != 0) fprintf(stderr, "fuzz_pixart: could not remove %s\n", g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    omp_set_num_threads(1);
    strcpy(g_dir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_pixart_XXXXXX" : "/tmp/fuzz_pixart_XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    atexit(cleanup);
    return 0;
}

typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

static int pick(reader *r, int n) {
    if (!r->n) return 0;
    const int v = r->p[0] % n;
    r->p++, r->n--;
    return v;
}

static void check_message(void) {
    const char *msg = ss_err();
    if (!msg[0] || strchr(msg, '\n')) abort();
}

static void fill(float *x, size_t n, uint32_t seed, float a) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = a * ((float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

typedef struct {
    st_writer *w;
    st_dtype dt;
    uint32_t seed;
    int fail;
} wctx;

static void add_tensor(void *ctx, const char *name, int ndim, const int64_t *shape) {
    wctx *c = ctx;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *x = malloc(sizeof(float) * (n ? n : 1));
    if (!x) abort();
    fill(x, n, c->seed++, 0.5f);
    if (st_writer_add_f32(c->w, name, c->dt, ndim, shape, x) < 0) c->fail = 1;
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = {data, size};
    pixart_config c = {0};
    c.num_heads = 1 + pick(&r, 3);
    c.head_dim = 4 * (1 + pick(&r, 3)) + (pick(&r, 8) == 0); /* sometimes D % 4 != 0 */
    c.patch_size = 1 + pick(&r, 2);
    c.sample_size = c.patch_size * (1 + pick(&r, 4)) - (pick(&r, 8) == 0);
    c.in_channels = 1 + pick(&r, 4);
    c.out_channels = 1 + pick(&r, 8);
    c.num_layers = pick(&r, 3);
    const int D = c.num_heads * c.head_dim;
    c.caption_channels = pick(&r, 3) ? 1 + pick(&r, 20) : 0;
    c.cross_attention_dim = pick(&r, 5) ? (c.caption_channels ? D + (pick(&r, 8) == 0) : 1 + pick(&r, 20)) : 0;
    c.use_additional_conditions = pick(&r, 2);
    c.norm_elementwise_affine = pick(&r, 2);
    c.attention_bias = pick(&r, 2);
    c.act = pick(&r, 2) ? OP_ACT_GELU_TANH : OP_ACT_GELU;
    c.norm_eps = 1e-6f;
    c.interpolation_scale = pick(&r, 8) ? 0.5 * (1 + pick(&r, 4)) : -1;
    char dir[128], cfgp[160], wp[200];
    snprintf(dir, sizeof dir, "%s/model", g_dir);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    snprintf(wp, sizeof wp, "%s/diffusion_pytorch_model.safetensors", dir);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) abort();
    const int valid = pixart_config_check(&c, "fuzz") == 0;
    if (pixart_config_save(&c, cfgp) < 0) abort();
    if (valid) {
        static const st_dtype DT[] = {ST_F32, ST_BF16, ST_F16};
        wctx w = {st_writer_new(), DT[pick(&r, 3)], (uint32_t)pick(&r, 256), 0};
        if (!w.w || pixart_enumerate_tensors(&c, add_tensor, &w) < 0 || w.fail) abort();
        if (st_writer_save(w.w, wp) < 0) abort();
        st_writer_free(w.w);
    }
    pixart_model *m = NULL;
    ss_err_clear();
    if (pixart_load(&m, dir) < 0) {
        if (valid) abort(); /* what the config check accepts and we wrote must load */
        check_message();
        return 0;
    }
    if (!valid) abort();
    const int p = c.patch_size, B = 1 + pick(&r, 2), S = 1 + pick(&r, 5);
    const int Hl = p * (1 + pick(&r, 4)) + (pick(&r, 8) == 0), Wl = p * (1 + pick(&r, 4));
    const int J = c.caption_channels ? c.caption_channels : c.cross_attention_dim ? c.cross_attention_dim : D;
    float *x = malloc(sizeof(float) * B * c.in_channels * Hl * Wl), *ctx = malloc(sizeof(float) * B * S * J);
    float *mask = malloc(sizeof(float) * B * S), t[2], res[4], ar[2];
    float *out = malloc(sizeof(float) * B * c.out_channels * Hl * Wl), *out2 = malloc(sizeof(float) * B * c.out_channels * Hl * Wl);
    if (!x || !ctx || !mask || !out || !out2) abort();
    fill(x, (size_t)B * c.in_channels * Hl * Wl, (uint32_t)pick(&r, 256), 2.0f);
    fill(ctx, (size_t)B * S * J, (uint32_t)pick(&r, 256), 2.0f);
    const int mk = pick(&r, 4); /* 0: no mask, 1: padding at the end, 2: all padding, 3: a 0.5 */
    for (int b = 0; b < B; b++)
        for (int j = 0; j < S; j++) mask[b * S + j] = mk == 2 ? 0.0f : j <= (b + S / 2) % S ? 1.0f : 0.0f;
    if (mk == 3) mask[0] = 0.5f;
    for (int b = 0; b < B; b++) {
        t[b] = (float)(pick(&r, 250) * 4);
        res[2 * b] = 8.0f * Hl;
        res[2 * b + 1] = 8.0f * Wl;
        ar[b] = (float)Hl / Wl;
    }
    const int give_res = pick(&r, 4) ? c.use_additional_conditions : !c.use_additional_conditions;
    if (pick(&r, 16) == 0) ctx[0] = NAN;
    ss_err_clear();
    const int rc = pixart_forward(m, out, x, ctx, mk ? mask : NULL, t, give_res ? res : NULL, give_res ? ar : NULL, B, Hl, Wl, S,
                                  NULL);
    if (rc < 0) {
        check_message();
    } else {
        for (size_t i = 0; i < (size_t)B * c.out_channels * Hl * Wl; i++)
            if (!isfinite(out[i])) abort();
        /* the probe at every site leaves the output bit-identical */
        ss_site sites[2 * PIXART_MAX_LAYERS];
        const int ns = pixart_sites(&c, (Hl / p) * (Wl / p), S, sites, 2 * PIXART_MAX_LAYERS);
        int codes[2 * PIXART_MAX_LAYERS];
        for (int i = 0; i < ns; i++) codes[i] = ss_site_code_of(&sites[i]);
        sink_ctx *sk = sink_ctx_new();
        if (!sk || sink_ctx_set_probe(sk, codes, ns, TOK_IMAGE, 1 + pick(&r, 5), 1) < 0) abort();
        sd3_hooks h = sink_ctx_hooks(sk);
        pixart_hooks hk = {.ctx = h.ctx, .attention = h.attention, .block_output = h.block_output};
        if (pixart_forward(m, out2, x, ctx, mk ? mask : NULL, t, give_res ? res : NULL, give_res ? ar : NULL, B, Hl, Wl, S, &hk) < 0)
            abort();
        if (memcmp(out, out2, sizeof(float) * B * c.out_channels * Hl * Wl)) abort();
        sink_ctx_free(sk);
    }
    free(x);
    free(ctx);
    free(mask);
    free(out);
    free(out2);
    pixart_free(m);
    return 0;
}
