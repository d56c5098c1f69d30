/* Robustness of the file-facing code (reliability sweep): outputs that are inputs (pathcheck,
 * forward, generate, score), PNG size and text-chunk bombs (png readers, score), the detector on
 * images that hold no ShapeWorld object (solid colours, half-and-half, frame-filling regions),
 * strict image names in score, and forward's input validation before conversion.
 * Run from the repository root (uses tests/fixtures/sd3-tiny-a and models/shapeworld). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#include <fcntl.h>
#include <png.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "eval/detect.h"
#include "eval/geneval.h"
#include "eval/score.h"
#include "eval/shapeworld.h"
#include "io/pathcheck.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "io/fsutil.h"
#include "report/report.h"
#include "text/tokenizer.h"

#define FIXTURE "tests/fixtures/sd3-tiny-a"

/* ---- helpers -------------------------------------------------------------------------------- */

static int same_bytes(const char *a, const char *b) {
    size_t na, nb;
    char *x = tc_read_all(a, &na), *y = tc_read_all(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *b = tc_read_all(from, &n);
    assert_non_null(b);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(b);
}

static void expect_in(const char *buf, const char *needle) {
    if (!strstr(buf, needle)) fail_msg("expected '%s' in: %s", needle, buf);
}

/* CRC-32 of PNG chunks (zlib's polynomial), so that raw PNG bytes can be crafted here. */
static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static size_t put_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t len, uint32_t claimed) {
    uint8_t *p = out;
    for (int k = 0; k < 4; k++) *p++ = (uint8_t)(claimed >> (24 - 8 * k));
    memcpy(p, type, 4);
    if (len) memcpy(p + 4, data, len);
    uint32_t c = crc32_png(p, 4 + (size_t)len);
    p += 4 + len;
    for (int k = 0; k < 4; k++) *p++ = (uint8_t)(c >> (24 - 8 * k));
    return (size_t)(p - out);
}

/* A PNG whose IHDR claims w x h (8-bit RGB) followed by a tiny, truncated image stream: what a
 * decompression bomb looks like to the header check. Returns the byte count. */
static size_t claimed_png(uint8_t *buf, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    uint8_t ihdr[13] = {0};
    for (int k = 0; k < 4; k++) {
        ihdr[k] = (uint8_t)(w >> (24 - 8 * k));
        ihdr[4 + k] = (uint8_t)(h >> (24 - 8 * k));
    }
    ihdr[8] = 8;
    ihdr[9] = 2;
    size_t n = 8 + put_chunk(buf + 8, "IHDR", ihdr, 13, 13);
    static const uint8_t idat[] = {0x78, 0x9c, 0x63, 0x60, 0x00, 0x00}; /* truncated deflate */
    n += put_chunk(buf + n, "IDAT", idat, sizeof idat, sizeof idat);
    n += put_chunk(buf + n, "IEND", NULL, 0, 0);
    return n;
}

static void write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A w x h PNG of one colour (libpng writer); with an optional zTXt chunk key=value. */
static void solid_png(const char *path, int w, int h, const uint8_t rgb[3], const char *ztxt_key, const char *ztxt_value) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_true(png && info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng write failed");
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 9);
    if (ztxt_key) {
        png_text t = {0};
        t.compression = PNG_TEXT_COMPRESSION_zTXt;
        t.key = (png_charp)ztxt_key;
        t.text = (png_charp)ztxt_value;
        t.text_length = strlen(ztxt_value);
        png_set_text(png, info, &t, 1);
    }
    png_write_info(png, info);
    uint8_t *row = malloc((size_t)w * 3);
    assert_non_null(row);
    for (int x = 0; x < w; x++) memcpy(row + 3 * x, rgb, 3);
    for (int y = 0; y < h; y++) png_write_row(png, row);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(row);
    assert_int_equal(fclose(f), 0);
}

/* ---- item 5: outputs that are inputs -------------------------------------------------------- */

static void test_pathcheck_api(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    assert_non_null(root);
    char in[600], cwd[4096];
    snprintf(in, sizeof in, "%s/in.json", root);
    assert_int_equal(tc_write_text(in, "{}"), 0);
    assert_int_equal(mkdir(tc_join(root, "sub"), 0777), 0);
    assert_int_equal(mkdir(tc_join(root, "model"), 0777), 0);
    assert_int_equal(mkdir(tc_join(root, "model/transformer"), 0777), 0);
    assert_int_equal(tc_write_text(tc_join(root, "model/transformer/w.safetensors"), "weights"), 0);
    assert_int_equal(symlink(in, tc_join(root, "link.json")), 0);
    assert_int_equal(link(in, tc_join(root, "hard.json")), 0);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.jsonl", root);
    pc_file ins[] = {{"--inputs", in}, {"--condition", NULL}, {"--prompts", missing}};
    /* the same file under other names: itself, ./ and ../ spellings, a symlink, a hard link */
    const char *same[] = {"in.json", "./in.json", "sub/../in.json", "link.json", "hard.json"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", root, same[i]);
        ss_err_clear();
        assert_int_equal(pc_check_output("--out", p, ins, 3), SS_EARG);
        expect_in(ss_err(), "--out");
        expect_in(ss_err(), "--inputs");
        expect_in(ss_err(), p);
        assert_int_equal(pc_same_file(p, in), 1);
    }
    /* relative spelling from the current directory */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(root), 0);
    assert_int_equal(pc_check_output("--json", "in.json", ins, 3), SS_EARG);
    assert_int_equal(pc_check_output("--json", "./sub/../in.json", ins, 3), SS_EARG);
    assert_int_equal(pc_check_outputs_differ("--out", "new.json", "--stats", "./sub/../new.json"), SS_EARG);
    assert_int_equal(pc_check_outputs_differ("--out", "new.json", "--stats", "sub/new.json"), SS_OK);
    assert_int_equal(chdir(cwd), 0);
    /* the writers' temporary file "<out>.tmp" may not be an input either */
    char out[600];
    snprintf(out, sizeof out, "%s/x", root);
    pc_file tmp_in[] = {{"--inputs", tc_join(root, "x.tmp")}};
    assert_int_equal(tc_write_text(tmp_in[0].path, "input"), 0);
    tmp_in[0].path = strdup(tmp_in[0].path);
    assert_int_equal(pc_check_output("--out", out, tmp_in, 1), SS_EARG);
    expect_in(ss_err(), "temporary");
    free((void *)tmp_in[0].path);
    /* different files, new files, missing inputs: fine */
    assert_int_equal(pc_check_output("--out", tc_join(root, "other.json"), ins, 3), SS_OK);
    assert_int_equal(tc_write_text(tc_join(root, "other.json"), "x"), 0);
    assert_int_equal(pc_check_output("--out", tc_join(root, "other.json"), ins, 3), SS_OK);
    assert_int_equal(pc_check_output("--out", NULL, ins, 3), SS_OK);
    /* any file under a model folder, at depth, through a symlink too */
    char model[600];
    snprintf(model, sizeof model, "%s/model", root);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "model/transformer/w.safetensors"), "--model", model, pc_is_model_file),
                     SS_EARG);
    expect_in(ss_err(), "--model");
    expect_in(ss_err(), "w.safetensors");
    assert_int_equal(symlink(tc_join(root, "model/transformer/w.safetensors"), tc_join(root, "wlink")), 0);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "wlink"), "--model", model, pc_is_model_file), SS_EARG);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "other.json"), "--model", model, NULL), SS_OK);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "new.png"), "--model", model, NULL), SS_OK);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "new.png"), "--model", tc_join(root, "nowhere"), NULL), SS_OK);
    /* which top-level files of a model folder are the model: config, index, weights; not an
     * earlier run's outputs written next to them */
    assert_int_equal(tc_write_text(tc_join(root, "model/config.json"), "{}"), 0);
    assert_int_equal(tc_write_text(tc_join(root, "model/out.safetensors"), "x"), 0);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "model/config.json"), "--model", model, pc_is_model_file), SS_EARG);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "model/out.safetensors"), "--model", model, pc_is_model_file), SS_OK);
    assert_int_equal(pc_check_output_tree("--out", tc_join(root, "model/out.safetensors"), "--model", model, NULL), SS_EARG);
    const char *model_files[] = {"config.json", "model_index.json", "diffusion_pytorch_model.safetensors",
                                 "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                                 "model.safetensors"};
    for (size_t i = 0; i < sizeof model_files / sizeof model_files[0]; i++) assert_int_equal(pc_is_model_file(model_files[i], 0), 1);
    assert_int_equal(pc_is_model_file("out.safetensors", 0), 0);
    assert_int_equal(pc_is_model_file("out.stats.json", 0), 0);
    assert_int_equal(pc_is_model_file("image.png", 0), 0);
    assert_int_equal(pc_is_model_file("vocab.txt", 1), 1);
    tc_rmtree(root);
    free(root);
}

/* `forward` with --out or --stats naming an input, through various spellings: refused, exit
 * non-zero, the input untouched. */
static void test_forward_output_is_input(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char model[600], in[600], keep[600], buf[8192];
    snprintf(model, sizeof model, "%s/model", root);
    assert_int_equal(mkdir(model, 0777), 0);
    copy_file(FIXTURE "/config.json", tc_join(model, "config.json"));
    copy_file(FIXTURE "/diffusion_pytorch_model.safetensors", tc_join(model, "diffusion_pytorch_model.safetensors"));
    snprintf(in, sizeof in, "%s/in.safetensors", root);
    snprintf(keep, sizeof keep, "%s/keep.safetensors", root);
    copy_file(FIXTURE "/inputs.safetensors", in);
    copy_file(FIXTURE "/inputs.safetensors", keep);
    assert_int_equal(symlink(in, tc_join(root, "link.safetensors")), 0);
    assert_int_equal(link(in, tc_join(root, "hard.safetensors")), 0);
    assert_int_equal(mkdir(tc_join(root, "sub"), 0777), 0);
    /* a valid run first: the fixture works */
    int rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s/out.safetensors --probe 0 --threads 1", tc_bin(),
                    model, in, root);
    if (rc) fail_msg("valid forward failed: %s", buf);
    const char *cases[] = {
        "--out %s/in.safetensors",
        "--out %s/./in.safetensors",
        "--out %s/sub/../in.safetensors",
        "--out %s/link.safetensors",
        "--out %s/hard.safetensors",
        "--out %s/o.safetensors --probe 0 --stats %s/in.safetensors",
        "--out %s/o.safetensors --stats %s/sub/../link.safetensors --probe 0",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1400];
        snprintf(args, sizeof args, cases[i], root, root);
        rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s %s --threads 1", tc_bin(), model, in, args);
        printf("  exit %d: %s", rc, buf);
        assert_int_not_equal(rc, 0);
        expect_in(buf, "--inputs");
        expect_in(buf, strstr(cases[i], "--stats %s/in") || strstr(cases[i], "--stats %s/sub") ? "--stats" : "--out");
        if (!same_bytes(in, keep)) fail_msg("case '%s' changed the input file", cases[i]);
    }
    /* the model's weights and config are inputs too */
    char w[700];
    snprintf(w, sizeof w, "%s/diffusion_pytorch_model.safetensors", model);
    copy_file(w, keep);
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s --threads 1", tc_bin(), model, in, w);
    printf("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--model");
    assert_true(same_bytes(w, keep));
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s/o.safetensors --probe 0 --stats %s/config.json --threads 1",
                tc_bin(), model, in, root, model);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--stats");
    assert_true(same_bytes(tc_join(model, "config.json"), FIXTURE "/config.json"));
    /* outputs written next to the model (make demo's layout) are not the model: a second run
     * replaces them */
    for (int run = 0; run < 2; run++) {
        rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s/out.safetensors --probe 0 --threads 1", tc_bin(), model,
                    in, model);
        if (rc) fail_msg("forward run %d writing into the model folder failed: %s", run, buf);
    }
    /* the two outputs may not be one file */
    rc = tc_run(buf, sizeof buf, "%s forward --model %s --inputs %s --out %s/o2.safetensors --probe 0 --stats %s/./o2.safetensors",
                tc_bin(), model, in, root, root);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "same file");
    tc_rmtree(root);
    free(root);
}

/* `generate --out` pointing at a file of the pipeline folder; `score --json` at the prompts or
 * an image. */
static void test_generate_score_output_is_input(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char buf[8192], model[600], w[800], keep[600];
    snprintf(model, sizeof model, "%s/pipe", root);
    assert_int_equal(tc_run(buf, sizeof buf, "cp -r models/shapeworld %s", model), 0);
    snprintf(w, sizeof w, "%s/transformer/diffusion_pytorch_model.safetensors", model);
    snprintf(keep, sizeof keep, "%s/keep", root);
    copy_file(w, keep);
    int rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a photo of a red circle' --steps 2 --threads 1 --out %s",
                    tc_bin(), model, w);
    printf("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--model");
    expect_in(buf, "--out");
    assert_true(same_bytes(w, keep));
    /* through a symlink and a ../ spelling too */
    assert_int_equal(symlink(w, tc_join(root, "w.png")), 0);
    rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a photo of a red circle' --steps 2 --threads 1 --out %s/w.png",
                tc_bin(), model, root);
    assert_int_not_equal(rc, 0);
    rc = tc_run(buf, sizeof buf,
                "%s generate --model %s --prompt 'a photo of a red circle' --steps 2 --threads 1 --out %s/pipe/scheduler/../model_index.json",
                tc_bin(), model, root);
    assert_int_not_equal(rc, 0);
    assert_true(same_bytes(w, keep));
    assert_true(same_bytes(tc_join(model, "model_index.json"), "models/shapeworld/model_index.json"));
    /* a new file next to it is fine, also inside the model folder, twice */
    rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a photo of a red circle' --steps 2 --threads 1 --out %s/ok.png",
                tc_bin(), model, root);
    if (rc) fail_msg("valid generate failed: %s", buf);
    for (int run = 0; run < 2; run++) {
        rc = tc_run(buf, sizeof buf, "%s generate --model %s --prompt 'a photo of a red circle' --steps 2 --threads 1 --out %s/ok.png",
                    tc_bin(), model, model);
        if (rc) fail_msg("generate run %d writing into the model folder failed: %s", run, buf);
    }

    /* score: --json equal to --prompts, or to one of the images */
    char imgs[600], prompts[600], pkeep[600];
    snprintf(imgs, sizeof imgs, "%s/imgs", root);
    assert_int_equal(sw_write_dataset(imgs, 3, 4, 32, 32), SS_OK);
    snprintf(prompts, sizeof prompts, "%s/prompts.jsonl", root);
    snprintf(pkeep, sizeof pkeep, "%s/prompts.keep", root);
    copy_file(tc_join(imgs, "metadata.jsonl"), prompts);
    copy_file(prompts, pkeep);
    const char *jsons[] = {"%s/prompts.jsonl", "%s/imgs/../prompts.jsonl", "%s/imgs/00001_0.png"};
    copy_file(tc_join(imgs, "00001_0.png"), tc_join(root, "img.keep"));
    for (size_t i = 0; i < 3; i++) {
        char js[700];
        snprintf(js, sizeof js, jsons[i], root);
        rc = tc_run(buf, sizeof buf, "%s score --images %s --prompts %s --json %s", tc_bin(), imgs, prompts, js);
        printf("  exit %d: %s", rc, buf);
        assert_int_not_equal(rc, 0);
        expect_in(buf, "--json");
        assert_true(same_bytes(prompts, pkeep));
        assert_true(same_bytes(tc_join(imgs, "00001_0.png"), tc_join(root, "img.keep")));
    }
    rc = tc_run(buf, sizeof buf, "%s score --images %s --prompts %s --json %s/report.json", tc_bin(), imgs, prompts, root);
    if (rc) fail_msg("valid score failed: %s", buf);
    /* a report inside the image folder is not an image: a second run replaces it */
    for (int run = 0; run < 2; run++) {
        rc = tc_run(buf, sizeof buf, "%s score --images %s --prompts %s --json %s/report.json", tc_bin(), imgs, prompts, imgs);
        if (rc) fail_msg("score run %d writing into the image folder failed: %s", run, buf);
    }
    char *rep = tc_read_all(tc_join(root, "report.json"), NULL);
    assert_non_null(rep);
    expect_in(rep, "\"overall\"");
    free(rep);
    tc_rmtree(root);
    free(root);
}

/* ---- item 15: forward checks every input against the model before converting any ----------- */

/* A safetensors file with the four inputs, encoder_hidden_states of shape [1, S, J] F32 in a
 * sparse file (its data is a hole: no disk, no memory until read). */
static void sparse_inputs(const char *path, long long S, int J, const char *ts_dtype) {
    char hdr[1024];
    long long e_bytes = S * J * 4;
    long long o0 = 0, o1 = 4 * 8 * 8 * 4, o2 = o1 + e_bytes, o3 = o2 + 20 * 4, o4 = o3 + 8;
    int n = snprintf(hdr, sizeof hdr,
                     "{\"hidden_states\":{\"dtype\":\"F32\",\"shape\":[1,4,8,8],\"data_offsets\":[%lld,%lld]},"
                     "\"encoder_hidden_states\":{\"dtype\":\"F32\",\"shape\":[1,%lld,%d],\"data_offsets\":[%lld,%lld]},"
                     "\"pooled_projections\":{\"dtype\":\"F32\",\"shape\":[1,20],\"data_offsets\":[%lld,%lld]},"
                     "\"timestep\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[%lld,%lld]}}",
                     o0, o1, S, J, o1, o2, o2, o3, ts_dtype, o3, strcmp(ts_dtype, "F32") ? o4 : o3 + 4);
    while (n % 8) hdr[n++] = ' ';
    hdr[n] = 0;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t len = (uint64_t)n;
    uint8_t le[8];
    for (int k = 0; k < 8; k++) le[k] = (uint8_t)(len >> (8 * k));
    assert_int_equal(fwrite(le, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fclose(f), 0);
    long long end = strcmp(ts_dtype, "F32") ? o4 : o3 + 4;
    assert_int_equal(truncate(path, (off_t)(8 + n + end)), 0);
}

static void test_forward_validates_before_converting(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char in[600], buf[8192];
    snprintf(in, sizeof in, "%s/big.safetensors", root);
    /* 1 GiB of encoder_hidden_states whose width (4096) is not the model's joint_attention_dim
     * (24): the shape error, not "out of memory". The memory limit (not under AddressSanitizer,
     * which needs a large address space) leaves room for the mapping but not for a converted
     * copy, so converting before checking fails. */
    sparse_inputs(in, 65536, 4096, "F32");
#if defined(__SANITIZE_ADDRESS__)
    const char *limit = "";
#else
    const char *limit = "ulimit -v 1800000; ";
#endif
    int rc = tc_run(buf, sizeof buf, "%s%s forward --model " FIXTURE " --inputs %s --out %s/o.safetensors --threads 1", limit,
                    tc_bin(), in, root);
    printf("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "big.safetensors");
    expect_in(buf, "encoder_hidden_states");
    expect_in(buf, "joint_attention_dim");
    if (strstr(buf, "out of memory")) fail_msg("converted before checking: %s", buf);
    /* an integer timestep: named, before any conversion */
    snprintf(in, sizeof in, "%s/int.safetensors", root);
    sparse_inputs(in, 5, 24, "I64");
    rc = tc_run(buf, sizeof buf, "%s forward --model " FIXTURE " --inputs %s --out %s/o.safetensors --threads 1", tc_bin(), in, root);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "timestep");
    expect_in(buf, "I64");
    /* a latent that is not a multiple of the patch size / larger than pos_embed_max_size */
    snprintf(in, sizeof in, "%s/lat.safetensors", root);
    st_writer *w = st_writer_new();
    static float z[4 * 16 * 16];
    int64_t sx[4] = {1, 4, 16, 16}, sc[3] = {1, 5, 24}, sp[2] = {1, 20}, st1[1] = {1};
    st_writer_add_f32(w, "hidden_states", ST_F32, 4, sx, z);
    st_writer_add_f32(w, "encoder_hidden_states", ST_F32, 3, sc, z);
    st_writer_add_f32(w, "pooled_projections", ST_F32, 2, sp, z);
    st_writer_add_f32(w, "timestep", ST_F32, 1, st1, z);
    assert_int_equal(st_writer_save(w, in), 0);
    st_writer_free(w);
    rc = tc_run(buf, sizeof buf, "%s forward --model " FIXTURE " --inputs %s --out %s/o.safetensors --threads 1", tc_bin(), in, root);
    printf("  exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "hidden_states");
    expect_in(buf, "pos_embed_max_size");
    tc_rmtree(root);
    free(root);
}

/* ---- item 16: PNG size and text bombs -------------------------------------------------------- */

static void test_png_size_checked_before_decoding(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    uint8_t b[256];
    int w = 0, h = 0;
    uint8_t *rgb = (uint8_t *)1;
    char p[600];
    /* IHDR claims 20000 x 20000 (1.2 GB of RGB) over a few bytes: refused from the header */
    snprintf(p, sizeof p, "%s/claim.png", root);
    write_bytes(p, b, claimed_png(b, 20000, 20000));
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_ESHAPE);
    assert_null(rgb);
    expect_in(ss_err(), "claim.png");
    expect_in(ss_err(), "20000x20000");
    char *v = (char *)1;
    assert_int_equal(png_read_text(p, "prompt", &v), SS_ESHAPE);
    assert_null(v);
    /* the default cap counts pixels too: 8000 x 3000 = 24 Mpx */
    write_bytes(p, b, claimed_png(b, 8000, 3000));
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_ESHAPE);
    expect_in(ss_err(), "8000x3000");
    /* the exact-size reader: refuses anything else, reports the header's size */
    write_bytes(p, b, claimed_png(b, 64, 32));
    assert_int_equal(png_read_rgb_expect(p, 32, 32, &w, &h, &rgb), SS_ESHAPE);
    assert_int_equal(w, 64);
    assert_int_equal(h, 32);
    assert_null(rgb);
    expect_in(ss_err(), "expected 32x32");
    assert_int_equal(png_read_rgb_max(p, 48, 48, &w, &h, &rgb), SS_ESHAPE);
    expect_in(ss_err(), "48x48");
    assert_int_equal(png_read_rgb_expect(p, 0, 32, &w, &h, &rgb), SS_EARG);
    /* a real compressed bomb for score: 2000 x 2000 of one colour is ~12 kB of PNG */
    const uint8_t red[3] = {220, 40, 40};
    char dir[600];
    snprintf(dir, sizeof dir, "%s/imgs", root);
    assert_int_equal(mkdir(dir, 0777), 0);
    snprintf(p, sizeof p, "%s/imgs/00000_0.png", root);
    solid_png(p, 2000, 2000, red, NULL, NULL);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_size < 100000);
    char prompts[600];
    snprintf(prompts, sizeof prompts, "%s/p.jsonl", root);
    assert_int_equal(tc_write_text(prompts, "{\"tag\": \"single_object\", \"include\": [{\"class\": \"square\", \"count\": 1}], "
                                            "\"prompt\": \"a photo of a square\"}\n"),
                     0);
    sw_score_report rep;
    assert_int_equal(sw_score_dir(dir, prompts, NULL, &rep), SS_ESHAPE);
    expect_in(ss_err(), "00000_0.png");
    expect_in(ss_err(), "2000x2000");
    /* within the limits, every reader agrees with the memory reader */
    snprintf(p, sizeof p, "%s/ok.png", root);
    uint8_t img[24 * 16 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 7);
    const char *kv[] = {"prompt", "a photo of a circle"};
    assert_int_equal(png_write_rgb(p, 24, 16, img, kv, 1), SS_OK);
    assert_int_equal(png_read_rgb_expect(p, 24, 16, &w, &h, &rgb), SS_OK);
    assert_memory_equal(rgb, img, sizeof img);
    free(rgb);
    assert_int_equal(png_read_rgb_max(p, 24, 16, &w, &h, &rgb), SS_OK);
    free(rgb);
    size_t n;
    char *bytes = tc_read_all(p, &n);
    assert_int_equal(png_mem_read_rgb((const uint8_t *)bytes, n, "mem", 24, 16, 0, 0, &w, &h, &rgb), SS_OK);
    assert_memory_equal(rgb, img, sizeof img);
    free(rgb);
    assert_int_equal(png_mem_read_rgb((const uint8_t *)bytes, n, "mem", 0, 0, 16, 16, &w, &h, &rgb), SS_ESHAPE);
    expect_in(ss_err(), "mem: ");
    assert_int_equal(png_mem_read_text((const uint8_t *)bytes, n, "mem", "prompt", &v), SS_OK);
    assert_string_equal(v, "a photo of a circle");
    free(v);
    assert_int_equal(png_mem_read_rgb((const uint8_t *)bytes, n / 2, "half", 0, 0, 0, 0, &w, &h, &rgb), SS_EFORMAT);
    expect_in(ss_err(), "half: ");
    free(bytes);
    tc_rmtree(root);
    free(root);
}

static void test_png_text_bomb(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char p[600];
    /* a zTXt chunk of a few kB that inflates to 4 MiB: not kept (at most PNG_MAX_TEXT_BYTES) */
    size_t big = 4u << 20;
    char *val = malloc(big + 1);
    assert_non_null(val);
    memset(val, 'A', big);
    val[big] = 0;
    snprintf(p, sizeof p, "%s/bomb.png", root);
    const uint8_t gray[3] = {128, 128, 128};
    solid_png(p, 4, 4, gray, "prompt", val);
    free(val);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_size < 64 * 1024);
    char *v = NULL;
    int rc = png_read_text(p, "prompt", &v);
    assert_int_equal(rc, SS_EMISSING);
    assert_null(v);
    expect_in(ss_err(), "bomb.png");
    /* the image itself still reads */
    int w, h;
    uint8_t *rgb;
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_OK);
    free(rgb);
    /* a modest zTXt is read; the limit is PNG_MAX_TEXT_BYTES after decompression */
    snprintf(p, sizeof p, "%s/fine.png", root);
    solid_png(p, 4, 4, gray, "prompt", "a photo of a blue triangle");
    assert_int_equal(png_read_text(p, "prompt", &v), SS_OK);
    assert_string_equal(v, "a photo of a blue triangle");
    free(v);
    for (int k = 0; k < 2; k++) {
        size_t len = k ? PNG_MAX_TEXT_BYTES + 4096 : PNG_MAX_TEXT_BYTES - 4096;
        char *t = malloc(len + 1);
        assert_non_null(t);
        memset(t, 'b', len);
        t[len] = 0;
        solid_png(p, 4, 4, gray, "condition", t);
        free(t);
        rc = png_read_text(p, "condition", &v);
        if (k) {
            assert_int_equal(rc, SS_EMISSING);
        } else {
            assert_int_equal(rc, SS_OK);
            assert_int_equal(strlen(v), len);
            free(v);
        }
    }
    /* a chunk claiming 1.5 GB in a tiny file: refused before libpng allocates it */
    uint8_t b[256];
    size_t n = claimed_png(b, 2, 2);
    size_t iend = n - 12;
    uint8_t tail[12];
    memcpy(tail, b + iend, 12);
    uint8_t txt[] = "prompt\0hello";
    n = iend + put_chunk(b + iend, "tEXt", txt, sizeof txt - 1, 0x5c000000u);
    memcpy(b + n, tail, 12);
    n += 12;
    snprintf(p, sizeof p, "%s/claimchunk.png", root);
    write_bytes(p, b, n);
    assert_true(png_read_text(p, "prompt", &v) < 0);
    assert_null(v);
    expect_in(ss_err(), "claimchunk.png");
    expect_in(ss_err(), "tEXt");
    tc_rmtree(root);
    free(root);
}

/* ---- item 9: the detector only counts what can be a ShapeWorld object ---------------------- */

static void fill(uint8_t *rgb, int w, int h, const uint8_t c[3]) {
    for (int i = 0; i < w * h; i++) memcpy(rgb + 3 * i, c, 3);
}

static void rect(uint8_t *rgb, int w, int x0, int y0, int x1, int y1, const uint8_t c[3]) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) memcpy(rgb + 3 * (y * w + x), c, 3);
}

static void expect_nothing(const uint8_t *rgb, int w, int h, const char *what) {
    sw_det d[16];
    int n = sw_detect(rgb, w, h, NULL, d, 16);
    assert_true(n >= 0);
    if (n) fail_msg("%dx%d %s: detected a %s (%s) at %d,%d-%d,%d", w, h, what, sw_class_name(d[0].cls),
                    d[0].color >= 0 ? sw_color_name(d[0].color) : "no colour", d[0].x0, d[0].y0, d[0].x1, d[0].y1);
}

static void test_detect_no_object(void **state) {
    (void)state;
    static uint8_t rgb[64 * 64 * 3];
    const uint8_t other[][3] = {{0, 0, 0}, {255, 255, 255}, {200, 30, 30}, {30, 60, 200}, {90, 90, 90}, {170, 70, 70}};
    const int sizes[] = {32, 64};
    for (int si = 0; si < 2; si++) {
        const int S = sizes[si];
        char what[96];
        /* solid frames: every palette colour, black, white, off-palette colours */
        for (int c = 0; c < SW_NCOLOR; c++) {
            fill(rgb, S, S, SW_PALETTE[c]);
            snprintf(what, sizeof what, "solid %s", sw_color_name(c));
            expect_nothing(rgb, S, S, what);
        }
        for (size_t c = 0; c < sizeof other / sizeof other[0]; c++) {
            fill(rgb, S, S, other[c]);
            snprintf(what, sizeof what, "solid colour %zu", c);
            expect_nothing(rgb, S, S, what);
        }
        /* half-and-half (left/right, top/bottom), palette on palette and on the background */
        for (int a = 0; a < SW_NCOLOR; a++)
            for (int bgc = -1; bgc < SW_NCOLOR; bgc++) {
                const uint8_t *second = bgc < 0 ? SW_BACKGROUND : SW_PALETTE[bgc];
                if (bgc == a) continue;
                fill(rgb, S, S, second);
                rect(rgb, S, 0, 0, S / 2, S, SW_PALETTE[a]);
                snprintf(what, sizeof what, "left %s / right %d", sw_color_name(a), bgc);
                expect_nothing(rgb, S, S, what);
                fill(rgb, S, S, second);
                rect(rgb, S, 0, 0, S, S / 3, SW_PALETTE[a]);
                snprintf(what, sizeof what, "top third %s / %d", sw_color_name(a), bgc);
                expect_nothing(rgb, S, S, what);
            }
        /* the background is the colour, a gray "hole" in it */
        fill(rgb, S, S, SW_PALETTE[SW_RED]);
        rect(rgb, S, S / 3, S / 3, 2 * S / 3, 2 * S / 3, SW_BACKGROUND);
        expect_nothing(rgb, S, S, "red frame with a gray hole");
        /* squares much larger than any ShapeWorld object (12 px at 32), touching the border */
        for (int k = 16; k <= 32; k += 4) {
            int s = k * S / 32;
            fill(rgb, S, S, SW_BACKGROUND);
            rect(rgb, S, 0, 0, s, s, SW_PALETTE[SW_BLUE]);
            snprintf(what, sizeof what, "corner square %d", s);
            expect_nothing(rgb, S, S, what);
            fill(rgb, S, S, SW_BACKGROUND);
            rect(rgb, S, S - s, (S - s) / 2, S, (S - s) / 2 + s, SW_PALETTE[SW_GREEN]);
            snprintf(what, sizeof what, "right-edge square %d", s);
            expect_nothing(rgb, S, S, what);
        }
        /* frame-filling squares anywhere (sides beyond 3/4 of the frame) */
        for (int k = 26; k <= 30; k += 2) {
            int s = k * S / 32, o = (S - s) / 2;
            fill(rgb, S, S, SW_BACKGROUND);
            rect(rgb, S, o, o, o + s, o + s, SW_PALETTE[SW_YELLOW]);
            snprintf(what, sizeof what, "centred square %d", s);
            expect_nothing(rgb, S, S, what);
        }
    }
    /* what is still an object: the largest ShapeWorld object 1 px from the border; a square cut
     * by the border at object size */
    fill(rgb, 32, 32, SW_BACKGROUND);
    rect(rgb, 32, 1, 1, 13, 13, SW_PALETTE[SW_RED]);
    sw_det d[4];
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 4), 1);
    assert_int_equal(d[0].cls, SW_SQUARE);
    fill(rgb, 32, 32, SW_BACKGROUND);
    rect(rgb, 32, 0, 10, 10, 20, SW_PALETTE[SW_BLUE]);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 4), 1);

    /* through score: a solid red frame is not "a photo of a red square" */
    char *root = tc_tmpdir();
    char p[600], prompts[600];
    snprintf(p, sizeof p, "%s/00000_0.png", root);
    fill(rgb, 32, 32, SW_PALETTE[SW_RED]);
    assert_int_equal(png_write_rgb(p, 32, 32, rgb, NULL, 0), SS_OK);
    snprintf(p, sizeof p, "%s/00001_0.png", root);
    fill(rgb, 32, 32, (const uint8_t[3]){0, 0, 0});
    assert_int_equal(png_write_rgb(p, 32, 32, rgb, NULL, 0), SS_OK);
    snprintf(prompts, sizeof prompts, "%s/p.jsonl", root);
    assert_int_equal(tc_write_text(prompts, "{\"tag\": \"colors\", \"include\": [{\"class\": \"square\", \"count\": 1, \"color\": \"red\"}], "
                                            "\"prompt\": \"a photo of a red square\"}\n"
                                            "{\"tag\": \"single_object\", \"include\": [{\"class\": \"square\", \"count\": 1}], "
                                            "\"prompt\": \"a photo of a square\"}\n"),
                     0);
    sw_score_report rep;
    assert_int_equal(sw_score_dir(root, prompts, NULL, &rep), SS_OK);
    assert_int_equal(rep.n_img, 2);
    assert_int_equal(rep.sum.images_correct, 0);
    sw_score_report_free(&rep);
    tc_rmtree(root);
    free(root);
}

/* ---- item 13: strict image names in score ---------------------------------------------------- */

static void test_score_names_strict(void **state) {
    (void)state;
    int idx = -7;
    uint64_t smp = 7;
    struct {
        const char *name;
        int ok, index;
        uint64_t seed;
    } cases[] = {
        {"00000_0.png", 1, 0, 0},
        {"00012_49.png", 1, 12, 49},
        {"99999_1.png", 1, 99999, 1},
        {"100000_3.png", 1, 100000, 3},
        {"123456789_0.png", 1, 123456789, 0},
        {"00000_18446744073709551615.png", 1, 0, UINT64_MAX},
        {"00000_9223372036854775808.png", 1, 0, 9223372036854775808ull},
        {"000000_0.png", 0, 0, 0},      /* 6 digits with a leading zero */
        {"0100000_0.png", 0, 0, 0},
        {"0000_0.png", 0, 0, 0},        /* fewer than 5 */
        {"00000_00.png", 0, 0, 0},      /* seed with a leading zero */
        {"00000_01.png", 0, 0, 0},
        {"00000_18446744073709551616.png", 0, 0, 0}, /* 2^64 */
        {"00000_99999999999999999999.png", 0, 0, 0},
        {"00000_-1.png", 0, 0, 0},
        {"00000_+1.png", 0, 0, 0},
        {"-0000_1.png", 0, 0, 0},
        {"00000_ 1.png", 0, 0, 0},
        {"00000_1.PNG", 0, 0, 0},
        {"00000_1.png.tmp", 0, 0, 0},
        {"00000__1.png", 0, 0, 0},
        {"00000_.png", 0, 0, 0},
        {"1234567890_0.png", 0, 0, 0}, /* more prompts than an int holds */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = sw_score_parse_name(cases[i].name, &idx, &smp);
        if ((r == 0) != cases[i].ok) fail_msg("%s: parse returned %d", cases[i].name, r);
        if (cases[i].ok) {
            assert_int_equal(idx, cases[i].index);
            assert_true(smp == cases[i].seed);
        }
    }
    /* one image under three spellings: counted once, the others skipped with a note */
    char *root = tc_tmpdir();
    char dir[600], buf[8192];
    snprintf(dir, sizeof dir, "%s/imgs", root);
    assert_int_equal(sw_write_dataset(dir, 9, 2, 32, 32), SS_OK);
    copy_file(tc_join(dir, "00000_0.png"), tc_join(dir, "000000_0.png"));
    copy_file(tc_join(dir, "00000_0.png"), tc_join(dir, "00000_00.png"));
    copy_file(tc_join(dir, "00001_0.png"), tc_join(dir, "00001_18446744073709551615.png"));
    sw_score_report rep;
    assert_int_equal(sw_score_dir(dir, tc_join(dir, "metadata.jsonl"), NULL, &rep), SS_OK);
    assert_int_equal(rep.n_img, 3);
    assert_int_equal(rep.sum.images, 3);
    assert_int_equal(rep.n_skipped, 2);
    assert_string_equal(rep.skipped_example, "000000_0.png");
    for (int i = 1; i < rep.n_img; i++)
        assert_true(rep.img[i - 1].index != rep.img[i].index || rep.img[i - 1].sample != rep.img[i].sample);
    assert_true(rep.img[2].sample == UINT64_MAX);
    sw_score_report_free(&rep);
    int rc = tc_run(buf, sizeof buf, "%s score --images %s --prompts %s/metadata.jsonl --json %s/r.json", tc_bin(), dir, dir, root);
    printf("  exit %d: %s", rc, buf);
    assert_int_equal(rc, 0);
    expect_in(buf, "2 PNG files");
    expect_in(buf, "000000_0.png");
    char *js = tc_read_all(tc_join(root, "r.json"), NULL);
    assert_non_null(js);
    expect_in(js, "\"images\": 3");
    expect_in(js, "\"18446744073709551615\"");
    free(js);
    /* only non-canonical names: an error that says what was skipped */
    char only[600];
    snprintf(only, sizeof only, "%s/only", root);
    assert_int_equal(mkdir(only, 0777), 0);
    copy_file(tc_join(dir, "00000_0.png"), tc_join(only, "0_0.png"));
    assert_int_equal(sw_score_dir(only, tc_join(dir, "metadata.jsonl"), NULL, &rep), SS_EMISSING);
    expect_in(ss_err(), "0_0.png");
    tc_rmtree(root);
    free(root);
}


/* The other commands that write files: init, run, report and train refuse an output that is one
 * of their inputs, and leave the input as it was. */
static void test_other_commands_output_is_input(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char buf[8192], a[900], b[900];
    /* init: --out's config.json a symlink to --config; --inputs the same file as --config */
    snprintf(a, sizeof a, "%s/cfg.json", root);
    copy_file("configs/sd3-tiny.json", a);
    assert_int_equal(mkdir(tc_join(root, "m"), 0755), 0);
    assert_int_equal(symlink(a, tc_join(root, "m/config.json")), 0);
    int rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s/m", tc_bin(), a, root);
    printf("  init: exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--config");
    rc = tc_run(buf, sizeof buf, "%s init --config %s --out %s/m2 --inputs %s/./cfg.json", tc_bin(), a, root, root);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--inputs");
    assert_true(same_bytes(a, "configs/sd3-tiny.json"));
    /* run: EXP/records.jsonl a hard link to the prompt file */
    snprintf(a, sizeof a, "%s/prompts.txt", root);
    assert_int_equal(tc_write_text(a, "a photo of a red circle\n"), 0);
    assert_int_equal(mkdir(tc_join(root, "exp"), 0755), 0);
    assert_int_equal(link(a, tc_join(root, "exp/records.jsonl")), 0);
    rc = tc_run(buf, sizeof buf, "%s run --exp %s/exp --prompts %s --preset noop --steps 2 --threads 1 --quiet", tc_bin(), root, a);
    printf("  run: exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--prompts");
    expect_in(buf, "--exp");
    size_t n;
    char *t = tc_read_all(a, &n);
    assert_non_null(t);
    assert_string_equal(t, "a photo of a red circle\n");
    free(t);
    /* report: a real experiment, then an output that is a symlink to its records */
    rc = tc_run(buf, sizeof buf, "%s run --exp %s/e2 --prompts %s --preset noop --steps 2 --threads 1 --quiet", tc_bin(), root, a);
    if (rc) fail_msg("run failed: %s", buf);
    snprintf(b, sizeof b, "%s/e2/records.jsonl", root);
    char *rec = tc_read_all(b, &n);
    assert_non_null(rec);
    assert_int_equal(mkdir(tc_join(root, "out"), 0755), 0);
    assert_int_equal(symlink(b, tc_join(root, "out/summary.json")), 0);
    rc = tc_run(buf, sizeof buf, "%s report %s/e2 --out %s/out --quiet", tc_bin(), root, root);
    printf("  report: exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--out");
    size_t n2;
    char *rec2 = tc_read_all(b, &n2);
    assert_true(rec2 && n2 == n && !memcmp(rec, rec2, n));
    free(rec);
    free(rec2);
    /* every file the report writes is in the list it checks */
    rc = tc_run(buf, sizeof buf, "%s report %s/e2 --out %s/fresh --quiet", tc_bin(), root, root);
    if (rc) fail_msg("report failed: %s", buf);
    DIR *d = opendir(tc_join(root, "fresh"));
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int listed = 0;
        for (int i = 0; RP_OUTPUT_FILES[i]; i++) listed |= !strcmp(RP_OUTPUT_FILES[i], e->d_name);
        if (!listed) fail_msg("report wrote %s, which RP_OUTPUT_FILES does not list", e->d_name);
    }
    closedir(d);
    /* train: --config inside the model folder the export replaces */
    assert_int_equal(ss_mkdir_p(tc_join(root, "t/model")), 0);
    snprintf(a, sizeof a, "%s/t/model/train.json", root);
    assert_int_equal(tc_write_text(a, "{\"steps\": 1}\n"), 0);
    rc = tc_run(buf, sizeof buf, "%s train --out %s/t --config %s --threads 1", tc_bin(), root, a);
    printf("  train: exit %d: %s", rc, buf);
    assert_int_not_equal(rc, 0);
    expect_in(buf, "--config");
    t = tc_read_all(a, &n);
    assert_non_null(t);
    assert_string_equal(t, "{\"steps\": 1}\n");
    free(t);
    tc_rmtree(root);
    free(root);
}

/* ---- the one atomic writer (io/fsutil.h) ---------------------------------------------------- */

/* The names in dir other than those listed (NULL-terminated), one per line, in buf ("" if none). */
static const char *other_names(const char *dir, const char *const *keep, char *buf, size_t cap) {
    buf[0] = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    size_t used = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int kept = 0;
        for (const char *const *k = keep; *k; k++) kept |= !strcmp(*k, e->d_name);
        if (!kept) used += (size_t)snprintf(buf + used, used < cap ? cap - used : 0, "%s\n", e->d_name);
        if (used >= cap) used = cap - 1;
    }
    closedir(d);
    return buf;
}

#define IMG_W 96
#define IMG_H 64
#define ST_N 40000

typedef struct {
    const char *path; /* the shared target */
    int kind;         /* 0: png_write_rgb, 1: st_writer_save */
    int seed;
    int rounds;
    int failures;
    char err[512];
} writer_job;

static void fill_rgb(uint8_t *rgb, int seed) {
    for (int i = 0; i < IMG_W * IMG_H * 3; i++) rgb[i] = (uint8_t)((i * (7 + seed)) ^ (i / 5) ^ (seed * 31));
}

static int write_one(const char *path, int kind, int seed) {
    if (kind == 0) {
        uint8_t rgb[IMG_W * IMG_H * 3];
        fill_rgb(rgb, seed);
        const char *kv[] = {"writer", seed ? "b" : "a"};
        return png_write_rgb(path, IMG_W, IMG_H, rgb, kv, 1);
    }
    float *x = malloc(sizeof(float) * ST_N);
    if (!x) return SS_ENOMEM;
    for (int i = 0; i < ST_N; i++) x[i] = (float)(i % 977) * (seed ? -1.0f : 1.0f);
    st_writer *w = st_writer_new();
    int rc = w ? st_writer_add_f32(w, "x", ST_F32, 1, (int64_t[]){ST_N}, x) : SS_ENOMEM;
    if (rc >= 0) rc = st_writer_set_metadata(w, "writer", seed ? "b" : "a");
    if (rc >= 0) rc = st_writer_save(w, path);
    st_writer_free(w);
    free(x);
    return rc;
}

static void *writer_thread(void *arg) {
    writer_job *j = arg;
    for (int r = 0; r < j->rounds; r++)
        if (write_one(j->path, j->kind, j->seed) < 0) {
            if (!j->failures++) snprintf(j->err, sizeof j->err, "%s", ss_err());
        }
    return NULL;
}

/* Two writers of one target at once: every write succeeds (they never share a temporary file),
 * the result is one complete file, byte-identical to what one of them writes alone, and nothing
 * else is left in the folder. */
static void test_atomic_concurrent_writers(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char names[4096];
    static const char *const file_name[2] = {"img.png", "w.safetensors"};
    for (int kind = 0; kind < 2; kind++) {
        char dir[600], target[700], ref[2][700];
        snprintf(dir, sizeof dir, "%s/k%d", root, kind);
        assert_int_equal(mkdir(dir, 0755), 0);
        char refdir[600];
        snprintf(refdir, sizeof refdir, "%s/ref%d", root, kind);
        assert_int_equal(mkdir(refdir, 0755), 0);
        for (int s = 0; s < 2; s++) {
            snprintf(ref[s], sizeof ref[s], "%s/%d", refdir, s);
            if (write_one(ref[s], kind, s) < 0) fail_msg("%s", ss_err());
        }
        assert_false(same_bytes(ref[0], ref[1])); /* the two writers are told apart */
        snprintf(target, sizeof target, "%s/%s", dir, file_name[kind]);
        writer_job job[2];
        pthread_t th[2];
        for (int s = 0; s < 2; s++) {
            job[s] = (writer_job){.path = target, .kind = kind, .seed = s, .rounds = 60};
            assert_int_equal(pthread_create(&th[s], NULL, writer_thread, &job[s]), 0);
        }
        for (int s = 0; s < 2; s++) assert_int_equal(pthread_join(th[s], NULL), 0);
        for (int s = 0; s < 2; s++)
            if (job[s].failures) fail_msg("%s: writer %d failed %d of %d times: %s", file_name[kind], s, job[s].failures, job[s].rounds, job[s].err);
        if (!same_bytes(target, ref[0]) && !same_bytes(target, ref[1]))
            fail_msg("%s: the result is neither writer's complete file", target);
        const char *keep[] = {file_name[kind], NULL};
        other_names(dir, keep, names, sizeof names);
        if (names[0]) fail_msg("%s: left behind:\n%s", dir, names);
        /* and it reads back */
        if (kind == 0) {
            int w = 0, h = 0;
            uint8_t *back = NULL;
            if (png_read_rgb(target, &w, &h, &back) < 0) fail_msg("%s", ss_err());
            assert_int_equal(w, IMG_W);
            free(back);
        } else {
            st_file *f;
            if (st_open(&f, target) < 0) fail_msg("%s", ss_err());
            st_close(f);
        }
    }
    tc_rmtree(root);
    free(root);
}

/* Every writer leaves only its target in the folder after a completed write (no "*.tmp", no
 * ".NAME.XXXXXX"), and the target is readable by others (0644). */
static void test_atomic_no_leftovers(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char names[4096];
    if (write_one(tc_join(root, "a.png"), 0, 0) < 0) fail_msg("%s", ss_err());
    if (write_one(tc_join(root, "a.png"), 0, 1) < 0) fail_msg("%s", ss_err()); /* replacing, too */
    if (write_one(tc_join(root, "b.safetensors"), 1, 0) < 0) fail_msg("%s", ss_err());
    if (write_one(tc_join(root, "b.safetensors"), 1, 1) < 0) fail_msg("%s", ss_err());
    if (ss_write_atomic(tc_join(root, "c.json"), "{}\n", 3) < 0) fail_msg("%s", ss_err());
    static const char *const words[] = {"<pad>", "<eos>", "red", "circle", NULL};
    if (tok_vocab_write(tc_join(root, "vocab.txt"), words) < 0) fail_msg("%s", ss_err());
    if (sw_write_eval_jsonl(tc_join(root, "eval.jsonl")) < 0) fail_msg("%s", ss_err());
    if (sw_write_dataset(tc_join(root, "ds"), 3, 2, 32, 32) < 0) fail_msg("%s", ss_err());
    const char *keep[] = {"a.png", "b.safetensors", "c.json", "vocab.txt", "eval.jsonl", "ds", NULL};
    other_names(root, keep, names, sizeof names);
    if (names[0]) fail_msg("%s: left behind:\n%s", root, names);
    const char *keep_ds[] = {"metadata.jsonl", "00000_0.png", "00001_0.png", NULL};
    other_names(tc_join(root, "ds"), keep_ds, names, sizeof names);
    if (names[0]) fail_msg("ds: left behind:\n%s", names);
    for (int i = 0; keep[i]; i++) {
        struct stat sb;
        assert_int_equal(stat(tc_join(root, "%s", keep[i]), &sb), 0);
        if (S_ISREG(sb.st_mode) && (sb.st_mode & 0777) != 0644) fail_msg("%s: mode %o", keep[i], (unsigned)(sb.st_mode & 0777));
    }
    /* the helper that sweeps leftovers knows the temporary names, and only them */
    assert_true(ss_is_atomic_tmp(".a.png.Ab12xZ"));
    assert_false(ss_is_atomic_tmp("a.png"));
    assert_false(ss_is_atomic_tmp(".a.png"));
    assert_false(ss_is_atomic_tmp(".a.png.Ab12x"));
    assert_false(ss_is_atomic_tmp("a.png.Ab12xZ"));
    tc_rmtree(root);
    free(root);
}

/* A write that fails half-way (the file-size limit cuts it short) leaves the old file intact,
 * no temporary file behind, and a message naming the target. */
static void test_atomic_failed_write(void **state) {
    (void)state;
    char *root = tc_tmpdir();
    char names[4096];
    static const char *const file_name[3] = {"img.png", "w.safetensors", "big.json"};
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    for (int kind = 0; kind < 3; kind++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", root, file_name[kind]);
        assert_int_equal(tc_write_text(path, "precious"), 0);
        struct rlimit old, lim;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
        lim = old;
        lim.rlim_cur = 100;
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
        int rc;
        if (kind < 2) rc = write_one(path, kind, 0);
        else {
            char big[4096];
            memset(big, 'x', sizeof big);
            rc = ss_write_atomic(path, big, sizeof big);
        }
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
        if (rc >= 0) fail_msg("%s: a write past the file-size limit succeeded", file_name[kind]);
        expect_in(ss_err(), path);
        size_t n;
        char *b = tc_read_all(path, &n);
        assert_non_null(b);
        if (n != 8 || memcmp(b, "precious", 8)) fail_msg("%s: the old file was changed", file_name[kind]);
        free(b);
        const char *keep[] = {"img.png", "w.safetensors", "big.json", NULL};
        other_names(root, keep, names, sizeof names);
        if (names[0]) fail_msg("%s: left behind:\n%s", file_name[kind], names);
    }
    signal(SIGXFSZ, old_handler);
    /* a folder in the way of the rename: the tmp is written, then removed */
    assert_int_equal(mkdir(tc_join(root, "isdir.png"), 0755), 0);
    assert_true(write_one(tc_join(root, "isdir.png"), 0, 0) < 0);
    expect_in(ss_err(), "isdir.png");
    const char *keep[] = {"img.png", "w.safetensors", "big.json", "isdir.png", NULL};
    other_names(root, keep, names, sizeof names);
    if (names[0]) fail_msg("rename over a folder: left behind:\n%s", names);
    tc_rmtree(root);
    free(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pathcheck_api),
        cmocka_unit_test(test_forward_output_is_input),
        cmocka_unit_test(test_generate_score_output_is_input),
        cmocka_unit_test(test_forward_validates_before_converting),
        cmocka_unit_test(test_png_size_checked_before_decoding),
        cmocka_unit_test(test_png_text_bomb),
        cmocka_unit_test(test_detect_no_object),
        cmocka_unit_test(test_score_names_strict),
        cmocka_unit_test(test_other_commands_output_is_input),
        cmocka_unit_test(test_atomic_concurrent_writers),
        cmocka_unit_test(test_atomic_no_leftovers),
        cmocka_unit_test(test_atomic_failed_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
