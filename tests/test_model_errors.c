/* Damaged checkpoints and bad inputs: one clear error naming the file (and tensor), a non-zero
 * exit, and an existing output left untouched. Parser-level damage is in test_safetensors.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "models/sd3.h"

static const char CONFIG[] =
    "{\"_class_name\": \"SD3Transformer2DModel\", \"sample_size\": 8, \"patch_size\": 2, \"in_channels\": 4,"
    " \"out_channels\": 4, \"num_layers\": 2, \"attention_head_dim\": 8, \"num_attention_heads\": 2,"
    " \"joint_attention_dim\": 12, \"caption_projection_dim\": 16, \"pooled_projection_dim\": 6,"
    " \"pos_embed_max_size\": 6, \"dual_attention_layers\": [0], \"qk_norm\": \"rms_norm\"}";


static char *make_model(const char *root, const char *name) {
    char *dir = malloc(1024), cfg[1100];
    snprintf(dir, 1024, "%s/%s", root, name);
    snprintf(cfg, sizeof cfg, "%s/cfg.json", root);
    assert_int_equal(tc_write_text(cfg, CONFIG), 0);
    sd3_config c;
    assert_int_equal(sd3_config_load(&c, cfg), 0);
    assert_int_equal(sd3_init_random(&c, dir, 1, ST_BF16), 0);
    return dir;
}

/* Rewrite dir's checkpoint keeping all tensors but `drop`, and with `reshape` given a wrong shape. */
static void rewrite(const char *dir, const char *drop, const char *reshape) {
    char path[1200];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    st_file *f;
    assert_int_equal(st_open(&f, path), 0);
    st_writer *w = st_writer_new();
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (reshape && !strcmp(t->name, reshape)) {
            int64_t sh[2] = {t->numel / 2, 2};
            assert_int_equal(st_writer_add(w, t->name, t->dtype, 2, sh, t->data), 0);
        } else {
            assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
        }
    }
    st_close(f);
    assert_int_equal(st_writer_save(w, path), 0);
    st_writer_free(w);
}

static void expect_load_error(const char *dir, const char *needle1, const char *needle2) {
    sd3_model *m = NULL;
    int rc = sd3_load(&m, dir);
    assert_true(rc < 0);
    assert_null(m);
    printf("  error: %s\n", ss_err());
    if (!strstr(ss_err(), needle1) || (needle2 && !strstr(ss_err(), needle2))) fail_msg("unexpected message: %s", ss_err());
    assert_null(strchr(ss_err(), '\n'));
}

static void test_load_errors(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char *ok = make_model(root, "ok");
    sd3_model *m;
    assert_int_equal(sd3_load(&m, ok), 0);
    assert_int_equal(m->blocks[0].dual, 1);
    sd3_free(m);

    char *d = make_model(root, "missing");
    rewrite(d, "transformer_blocks.1.attn.norm_added_k.weight", NULL);
    expect_load_error(d, "transformer_blocks.1.attn.norm_added_k.weight", "missing");
    free(d);

    d = make_model(root, "shape");
    rewrite(d, NULL, "transformer_blocks.0.attn2.to_q.weight");
    expect_load_error(d, "transformer_blocks.0.attn2.to_q.weight", "diffusion_pytorch_model.safetensors");
    free(d);

    d = make_model(root, "cfgjson");
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", d);
    assert_int_equal(tc_write_text(p, "{\"num_layers\": 2,, }"), 0);
    expect_load_error(d, "config.json", "not valid JSON");
    assert_int_equal(tc_write_text(p, "[1, 2]"), 0);
    expect_load_error(d, "config.json", "object");
    assert_int_equal(tc_write_text(p, "{\"num_layers\": \"two\"}"), 0);
    expect_load_error(d, "config.json", "num_layers");
    /* config and weights disagree: more layers than the checkpoint has */
    assert_int_equal(tc_write_text(p, "{\"sample_size\": 8, \"in_channels\": 4, \"out_channels\": 4, \"num_layers\": 3, \"attention_head_dim\": 8,"
                  " \"num_attention_heads\": 2, \"joint_attention_dim\": 12, \"caption_projection_dim\": 16,"
                  " \"pooled_projection_dim\": 6, \"pos_embed_max_size\": 6, \"dual_attention_layers\": [0], \"qk_norm\": \"rms_norm\"}"), 0);
    expect_load_error(d, "transformer_blocks.", NULL);
    /* width disagrees: the shape check names the tensor */
    assert_int_equal(tc_write_text(p, "{\"sample_size\": 8, \"in_channels\": 4, \"out_channels\": 4, \"num_layers\": 2, \"attention_head_dim\": 8,"
                  " \"num_attention_heads\": 2, \"joint_attention_dim\": 10, \"caption_projection_dim\": 16,"
                  " \"pooled_projection_dim\": 6, \"pos_embed_max_size\": 6, \"dual_attention_layers\": [0], \"qk_norm\": \"rms_norm\"}"), 0);
    expect_load_error(d, "context_embedder.weight", "[16, 10]");
    free(d);

    d = make_model(root, "trunc");
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", d);
    struct stat sb;
    stat(p, &sb);
    assert_int_equal(truncate(p, sb.st_size - 100), 0);
    expect_load_error(d, "diffusion_pytorch_model.safetensors", NULL);
    free(d);

    d = make_model(root, "nofile");
    remove(p);
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", d);
    remove(p);
    expect_load_error(d, "nofile", NULL);
    free(d);
    free(ok);
    tc_rmtree(root);
    free(root);
}

static void test_cli_errors_keep_outputs(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char *ok = make_model(root, "ok");
    char out[1200], buf[8192], in[1200], bad[1200];
    snprintf(out, sizeof out, "%s/out.safetensors", root);
    assert_int_equal(tc_write_text(out, "previous results"), 0);
    /* inputs: right names, one wrong shape */
    snprintf(in, sizeof in, "%s/in.safetensors", root);
    st_writer *w = st_writer_new();
    float z[4 * 8 * 8 * 2] = {0};
    int64_t sx[4] = {1, 4, 8, 8}, sc[3] = {1, 5, 12}, sp[2] = {1, 6}, st1[1] = {1};
    st_writer_add_f32(w, "hidden_states", ST_F32, 4, sx, z);
    st_writer_add_f32(w, "encoder_hidden_states", ST_F32, 3, sc, z);
    st_writer_add_f32(w, "pooled_projections", ST_F32, 2, sp, z);
    st_writer_add_f32(w, "timestep", ST_F32, 1, st1, z);
    assert_int_equal(st_writer_save(w, in), 0);
    st_writer_free(w);
    int rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --probe 0,1 --dump-blocks", tc_bin(), ok, in, out);
    assert_int_equal(rc, 0);
    assert_int_equal(tc_write_text(out, "previous results"), 0);

    snprintf(bad, sizeof bad, "%s/bad_in.safetensors", root);
    w = st_writer_new();
    int64_t sc2[3] = {1, 5, 11};
    st_writer_add_f32(w, "hidden_states", ST_F32, 4, sx, z);
    st_writer_add_f32(w, "encoder_hidden_states", ST_F32, 3, sc2, z);
    st_writer_add_f32(w, "pooled_projections", ST_F32, 2, sp, z);
    st_writer_add_f32(w, "timestep", ST_F32, 1, st1, z);
    st_writer_save(w, bad);
    st_writer_free(w);
    struct { const char *args, *needle; } cases[] = {
        {"--inputs %s/bad_in.safetensors", "bad_in.safetensors"},
        {"--inputs %s/none.safetensors", "none.safetensors"},
        {"--inputs %s/in.safetensors --probe 7", "block 7"},
        {"--inputs %s/in.safetensors --condition %s/cond.json", "cond.json"},
        {"--inputs %s/in.safetensors --probe x", "--probe"},
    };
    char cond[1200];
    snprintf(cond, sizeof cond, "%s/cond.json", root);
    assert_int_equal(tc_write_text(cond, "{\"layers\": [1], \"eta\": 2}"), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[2048];
        snprintf(args, sizeof args, cases[i].args, root, root);
        rc = tc_run(buf, sizeof buf, "%s forward --model %s %s --out %s", tc_bin(), ok, args, out);
        printf("  exit %d: %s", rc, buf);
        assert_int_not_equal(rc, 0);
        if (!strstr(buf, cases[i].needle)) fail_msg("expected '%s' in: %s", cases[i].needle, buf);
        FILE *f = fopen(out, "rb");
        char got[64] = {0};
        assert_true(fread(got, 1, sizeof got - 1, f) > 0);
        fclose(f);
        assert_string_equal(got, "previous results");
    }
    free(ok);
    tc_rmtree(root);
    free(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_cli_errors_keep_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
