/* ShapeWorld: PNG I/O, GenEval metadata and scoring rules, scene sampling and rendering, the exact
 * detector (clean, noisy, blurred), the evaluation prompt set and the folder scorer. Run from the
 * repository root (data/shapeworld_eval.jsonl is compared byte for byte). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "eval/detect.h"
#include "eval/geneval.h"
#include "eval/score.h"
#include "eval/shapeworld.h"
#include "io/png.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static char g_tmpdir[64];

static int setup_tmp(void **state) {
    (void)state;
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/sw_test_XXXXXX");
    return mkdtemp(g_tmpdir) ? 0 : -1;
}

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            remove(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown_tmp(void **state) {
    (void)state;
    rm_tree(g_tmpdir);
    return 0;
}

static void tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", g_tmpdir, name);
}



/* deterministic noise: splitmix64 + Box-Muller */
static uint64_t g_rs = 0x1234567;
static double urand(void) {
    uint64_t z = (g_rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2 * log(urand())) * cos(2 * M_PI * urand()); }

static void add_noise(uint8_t *p, size_t n, double sigma) {
    for (size_t i = 0; i < n; i++) {
        double v = p[i] + sigma * gauss();
        p[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrint(v));
    }
}

static void box_blur3(uint8_t *p, int w, int h) {
    uint8_t *q = malloc((size_t)w * h * 3);
    assert_non_null(q);
    memcpy(q, p, (size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int s = 0;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int yy = y + dy < 0 ? 0 : y + dy >= h ? h - 1 : y + dy;
                        int xx = x + dx < 0 ? 0 : x + dx >= w ? w - 1 : x + dx;
                        s += q[3 * (yy * w + xx) + c];
                    }
                p[3 * (y * w + x) + c] = (uint8_t)((s + 4) / 9);
            }
    free(q);
}

static gv_det det(const char *cls, const char *color, double x0, double y0, double x1, double y1,
                  double score) {
    gv_det d = {cls, color, x0, y0, x1, y1, score};
    return d;
}

static gv_meta parse(const char *json) {
    gv_meta m;
    int rc = gv_parse_line(json, "inline", 1, &m);
    if (rc) fail_msg("parse failed: %s", ss_err());
    return m;
}

/* ---- PNG ------------------------------------------------------------------------------------ */

static void test_png_roundtrip(void **state) {
    (void)state;
    const int w = 37, h = 23;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    assert_non_null(rgb);
    for (int i = 0; i < w * h * 3; i++)
        rgb[i] = (uint8_t)(i * 7 + (i / 3) * 13);
    const char *kv[] = {
        "prompt", "a photo of a red circle", "parameters", "seed=42 steps=28 cfg=4.5", "empty", ""};
    char p1[256], p2[256], tmp[300];
    tmp_path(p1, sizeof p1, "a.png");
    tmp_path(p2, sizeof p2, "b.png");
    assert_int_equal(png_write_rgb(p1, w, h, rgb, kv, 3), SS_OK);
    assert_int_equal(png_write_rgb(p2, w, h, rgb, kv, 3), SS_OK);
    snprintf(tmp, sizeof tmp, "%s.tmp", p1);
    assert_int_equal(access(tmp, F_OK), -1); /* temporary renamed away */
    { /* and no writer's temporary file (".a.png.XXXXXX") beside the images */
        char dir[256];
        snprintf(dir, sizeof dir, "%s", p1);
        *strrchr(dir, '/') = 0;
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)))
            if (!strncmp(e->d_name, ".a.png.", 7) || !strncmp(e->d_name, ".b.png.", 7)) fail_msg("left behind: %s", e->d_name);
        closedir(d);
    }

    int rw = 0, rh = 0;
    uint8_t *back = NULL;
    assert_int_equal(png_read_rgb(p1, &rw, &rh, &back), SS_OK);
    assert_int_equal(rw, w);
    assert_int_equal(rh, h);
    assert_memory_equal(back, rgb, (size_t)w * h * 3);
    free(back);

    char *v = NULL;
    assert_int_equal(png_read_text(p1, "parameters", &v), SS_OK);
    assert_string_equal(v, "seed=42 steps=28 cfg=4.5");
    free(v);
    assert_int_equal(png_read_text(p1, "empty", &v), SS_OK);
    assert_string_equal(v, "");
    free(v);
    assert_int_equal(png_read_text(p1, "nope", &v), SS_EMISSING);
    assert_null(v);
    assert_non_null(strstr(ss_err(), "a.png"));

    /* equal inputs -> byte-identical files, also when overwriting */
    size_t n1, n2;
    char *b1 = tc_read_all(p1, &n1), *b2 = tc_read_all(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b2);
    assert_int_equal(png_write_rgb(p2, w, h, rgb, kv, 3), SS_OK);
    b2 = tc_read_all(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);

    /* different text -> different bytes */
    const char *kv2[] = {"prompt", "a photo of a blue circle"};
    assert_int_equal(png_write_rgb(p2, w, h, rgb, kv2, 1), SS_OK);
    assert_int_equal(png_read_text(p2, "prompt", &v), SS_OK);
    assert_string_equal(v, "a photo of a blue circle");
    free(v);
    free(rgb);
}

static void test_png_errors(void **state) {
    (void)state;
    char p[256], q[256];
    uint8_t px[12] = {0};
    int w, h;
    uint8_t *rgb = NULL;
    tmp_path(p, sizeof p, "missing.png");
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_EIO);
    assert_non_null(strstr(ss_err(), "missing.png"));
    tmp_path(p, sizeof p, "text.png");
    assert_int_equal(tc_write_text(p, "this is not a png file at all"), 0);
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_EFORMAT);
    assert_non_null(strstr(ss_err(), "text.png"));
    /* truncated PNG */
    tmp_path(q, sizeof q, "full.png");
    assert_int_equal(png_write_rgb(q, 2, 2, px, NULL, 0), SS_OK);
    size_t n;
    char *b = tc_read_all(q, &n);
    tmp_path(p, sizeof p, "trunc.png");
    FILE *f = fopen(p, "wb");
    fwrite(b, 1, n - 20, f);
    fclose(f);
    free(b);
    assert_true(png_read_rgb(p, &w, &h, &rgb) < 0);
    assert_null(rgb);
    assert_non_null(strstr(ss_err(), "trunc.png"));
    /* bad arguments */
    const char *badkey[] = {" lead", "x"};
    assert_int_equal(png_write_rgb(q, 2, 2, px, badkey, 1), SS_EARG);
    assert_int_equal(png_write_rgb(q, 0, 2, px, NULL, 0), SS_EARG);
    tmp_path(p, sizeof p, "no/such/dir/x.png");
    assert_int_equal(png_write_rgb(p, 2, 2, px, NULL, 0), SS_EIO);
    assert_non_null(strstr(ss_err(), "x.png"));
}

/* Other PNG flavours (16-bit gray + alpha, palette) come back as 8-bit RGB. */
static void test_png_read_any(void **state) {
    (void)state;
    char p[256];
    tmp_path(p, sizeof p, "ga16.png");
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = 3;
    img.height = 2;
    img.format = PNG_FORMAT_LINEAR_Y_ALPHA; /* 16-bit gray + alpha */
    uint16_t ga[12];
    for (int i = 0; i < 6; i++) {
        ga[2 * i] = (uint16_t)(i * 13000);
        ga[2 * i + 1] = 65535;
    }
    assert_true(png_image_write_to_file(&img, p, 0, ga, 0, NULL));
    int w, h;
    uint8_t *rgb = NULL;
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_OK);
    assert_int_equal(w, 3);
    assert_int_equal(h, 2);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(rgb[3 * i], rgb[3 * i + 1]);
        assert_int_equal(rgb[3 * i], rgb[3 * i + 2]);
    }
    assert_true(rgb[0] < rgb[15]); /* gray ramp survives */
    free(rgb);

    tmp_path(p, sizeof p, "pal.png");
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = 2;
    img.height = 2;
    img.format = PNG_FORMAT_RGB_COLORMAP;
    img.colormap_entries = 2;
    uint8_t cmap[6] = {255, 0, 0, 0, 0, 255}, idx[4] = {0, 1, 1, 0};
    assert_true(png_image_write_to_file(&img, p, 0, idx, 0, cmap));
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_OK);
    uint8_t want[12] = {255, 0, 0, 0, 0, 255, 0, 0, 255, 255, 0, 0};
    assert_memory_equal(rgb, want, 12);
    free(rgb);
}

/* ---- GenEval metadata ------------------------------------------------------------------------ */

static void test_jsonl_errors(void **state) {
    (void)state;
    char p[256];
    gv_meta *m = NULL;
    int n = 0;
    struct {
        const char *text, *want;
    } cases[] = {
        {"{\"tag\": \"colors\", \"prompt\": \"x\", \"include\": []}\n\n{\"tag\": \"colors\",\n",
         ":3: bad JSON"},
        {"{\"prompt\": \"x\", \"include\": []}\n", ":1: missing \"tag\""},
        {"{\"tag\": \"colors\", \"include\": []}\n", ":1: missing \"prompt\""},
        {"{\"tag\": 3, \"prompt\": \"x\"}\n", ":1: \"tag\" is not a string"},
        {"{\"tag\": \"t\", \"prompt\": [\"x\"]}\n", ":1: \"prompt\" is not a string"},
        {"[1, 2]\n", ":1: record is not a JSON object"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": {}}\n",
         ":1: \"include\" is not an array"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": [{\"count\": 1}]}\n",
         ":1: include[0] has no \"class\""},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": [{\"class\": \"a\", \"count\": "
         "\"2\"}]}\n",
         ":1: include[0].count is not an integer"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": [{\"class\": \"a\", \"count\": 0}]}\n",
         "out of range"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": [{\"class\": \"a\", \"count\": 1, "
         "\"color\": 5}]}\n",
         ":1: include[0].color is not a string"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": [{\"class\": \"a\", \"count\": 1}, "
         "{\"class\": \"b\", \"count\": 1, \"position\": [\"near\", 0]}]}\n",
         "relation 'near'"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"include\": [{\"class\": \"a\", \"count\": 1, "
         "\"position\": [\"above\", 0]}]}\n",
         "not an earlier include clause"},
        {"{\"tag\": \"t\", \"prompt\": \"x\", \"exclude\": [{\"class\": 1, \"count\": 1}]}\n",
         ":1: exclude[0].class is not a string"},
        {"\n\n", "no records"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.jsonl", i);
        tmp_path(p, sizeof p, name);
        assert_int_equal(tc_write_text(p, cases[i].text), 0);
        assert_int_equal(gv_load_jsonl(p, &m, &n), SS_EFORMAT);
        assert_null(m);
        if (!strstr(ss_err(), name) || !strstr(ss_err(), cases[i].want))
            fail_msg("case %zu: error '%s' lacks '%s' or the file name", i, ss_err(),
                     cases[i].want);
    }
    tmp_path(p, sizeof p, "absent.jsonl");
    assert_int_equal(gv_load_jsonl(p, &m, &n), SS_EIO);
    assert_non_null(strstr(ss_err(), "absent.jsonl"));

    /* blank lines are skipped; unknown keys ignored; exclude color/position ignored */
    tmp_path(p, sizeof p, "ok.jsonl");
    assert_int_equal(tc_write_text(p, "\n{\"tag\": \"a\", \"prompt\": \"p0\", \"extra\": 1}\n   \n"
                  "{\"tag\": \"b\", \"prompt\": \"p1\", \"include\": [{\"class\": \"circle\", "
                  "\"count\": 2, \"color\": \"red\"}], \"exclude\": [{\"class\": \"circle\", "
                  "\"count\": 3}]}"), 0);
    assert_int_equal(gv_load_jsonl(p, &m, &n), SS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(m[1].prompt, "p1");
    assert_int_equal(m[1].include[0].count, 2);
    assert_string_equal(m[1].include[0].color, "red");
    assert_int_equal(m[1].include[0].rel, GV_REL_NONE);
    assert_int_equal(m[1].n_exclude, 1);
    assert_int_equal(m[0].n_include, 0);
    free(m);
}

/* Our serializer reproduces GenEval's own file (data/geneval, MIT) byte for byte. */
static void test_geneval_file_roundtrip(void **state) {
    (void)state;
    const char *path = "data/geneval/evaluation_metadata.jsonl";
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s", path);
    char line[4096], out[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!len) continue;
        gv_meta m;
        if (gv_parse_line(line, path, n + 1, &m)) fail_msg("%s", ss_err());
        assert_true(gv_meta_to_json(&m, out, sizeof out) > 0);
        if (strcmp(out, line)) fail_msg("line %d differs:\n%s\n%s", n + 1, line, out);
        n++;
    }
    fclose(f);
    assert_true(n >= 500);
}

/* ---- scoring rules ----------------------------------------------------------------------------
 */

static void test_score_counting(void **state) {
    (void)state;
    gv_meta m =
        parse("{\"tag\": \"counting\", \"include\": [{\"class\": \"circle\", \"count\": 2}], "
              "\"exclude\": [{\"class\": \"circle\", \"count\": 3}], \"prompt\": \"p\"}");
    gv_det d[4] = {det("circle", "red", 0, 0, 8, 8, .9), det("circle", "blue", 20, 0, 28, 8, .8),
                   det("square", "red", 0, 20, 8, 28, .9),
                   det("circle", "red", 20, 20, 28, 28, .7)};
    char reason[256];
    assert_int_equal(gv_score(&m, d, 1, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "expected circle>=2, found 1"));
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 1);
    assert_string_equal(reason, "");
    assert_int_equal(gv_score(&m, d, 3, reason, sizeof reason),
                     1); /* other classes do not matter */
    assert_int_equal(gv_score(&m, d, 4, reason, sizeof reason), 0); /* 3 circles: excluded */
    assert_non_null(strstr(reason, "expected circle<3, found 3"));
    /* include is ">= count": without the exclude clause, 3 circles satisfy "2 circles" */
    m.n_exclude = 0;
    assert_int_equal(gv_score(&m, d, 4, NULL, 0), 1);
    assert_int_equal(gv_score(&m, NULL, 0, NULL, 0), 0);
}

static void test_score_colors(void **state) {
    (void)state;
    gv_meta m = parse("{\"tag\": \"colors\", \"include\": [{\"class\": \"circle\", \"count\": 1, "
                      "\"color\": \"red\"}], \"prompt\": \"a photo of a red circle\"}");
    gv_det d[2] = {det("circle", "blue", 0, 0, 8, 8, .9), det("circle", "red", 20, 0, 28, 8, .8)};
    char reason[256];
    /* only the most confident circle is checked (GenEval): blue first -> wrong */
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "expected red circle>=1, found 0 red"));
    d[1].score = .95;
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 1);
    gv_det u = det("circle", "", 0, 0, 8, 8, .9); /* unknown color */
    assert_int_equal(gv_score(&m, &u, 1, NULL, 0), 0);
    gv_det sq = det("square", "red", 0, 0, 8, 8, .9);
    assert_int_equal(gv_score(&m, &sq, 1, NULL, 0), 0);
    /* equal scores: input order breaks the tie */
    gv_det t[2] = {det("circle", "red", 0, 0, 8, 8, .5), det("circle", "blue", 20, 0, 28, 8, .5)};
    assert_int_equal(gv_score(&m, t, 2, NULL, 0), 1);
}

static void test_score_color_attr_and_two_object(void **state) {
    (void)state;
    gv_meta m =
        parse("{\"tag\": \"color_attr\", \"include\": [{\"class\": \"circle\", \"count\": 1, "
              "\"color\": \"red\"}, {\"class\": \"square\", \"count\": 1, \"color\": "
              "\"blue\"}], \"prompt\": \"p\"}");
    gv_det d[2] = {det("circle", "red", 0, 0, 8, 8, .9), det("square", "blue", 20, 0, 28, 8, .9)};
    assert_int_equal(gv_score(&m, d, 2, NULL, 0), 1);
    d[0].color = "blue";
    d[1].color = "red"; /* colors swapped: attribute binding fails */
    char reason[256];
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "expected red circle"));
    assert_non_null(strstr(reason, "expected blue square"));

    gv_meta t =
        parse("{\"tag\": \"two_object\", \"include\": [{\"class\": \"circle\", \"count\": 1}, "
              "{\"class\": \"triangle\", \"count\": 1}], \"prompt\": \"p\"}");
    gv_det e[2] = {det("circle", "red", 0, 0, 8, 8, .9), det("square", "blue", 20, 0, 28, 8, .9)};
    assert_int_equal(gv_score(&t, e, 2, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "expected triangle>=1, found 0"));
    e[1].cls = "triangle";
    assert_int_equal(gv_score(&t, e, 2, NULL, 0), 1);

    gv_meta s =
        parse("{\"tag\": \"single_object\", \"include\": [{\"class\": \"square\", \"count\": "
              "1}], \"prompt\": \"p\"}");
    assert_int_equal(gv_score(&s, e, 2, NULL, 0), 0);
    assert_int_equal(gv_score(&s, d, 2, NULL, 0), 1);
}

static void test_score_position(void **state) {
    (void)state;
    /* "a photo of a square right of a circle": clause 0 = circle (target), clause 1 = square */
    gv_meta m =
        parse("{\"tag\": \"position\", \"include\": [{\"class\": \"circle\", \"count\": 1}, "
              "{\"class\": \"square\", \"count\": 1, \"position\": [\"right of\", 0]}], "
              "\"prompt\": \"p\"}");
    gv_det d[2] = {det("circle", "red", 0, 10, 10, 20, .9),
                   det("square", "blue", 20, 10, 30, 20, .9)};
    char reason[256];
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 1);
    /* mirrored: left of, wrong */
    d[1].x0 = -20;
    d[1].x1 = -10;
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "expected square right of target, found left of target"));
    /* margin: offset 2.5 px with boxes 10+10 wide -> shrunk by 0.1*20 = 2 -> 0.5 px left; the
     * direction is then 0.5/2.5 = 0.2 < 0.5 -> no relation */
    d[1].x0 = 2.5;
    d[1].x1 = 12.5;
    assert_int_equal(gv_relations(&d[1], &d[0], GV_POSITION_MARGIN), 0u);
    assert_int_equal(gv_score(&m, d, 2, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "found no relation to target"));
    /* offset exactly the margin: both shrunk components are 0 -> empty set */
    d[1].x0 = 2;
    d[1].x1 = 12;
    assert_int_equal(gv_relations(&d[1], &d[0], GV_POSITION_MARGIN), 0u);
    /* offset 4.5: (4.5 - 2) / 4.5 = 0.56 > 0.5 -> right of */
    d[1].x0 = 4.5;
    d[1].x1 = 14.5;
    assert_int_equal(gv_relations(&d[1], &d[0], GV_POSITION_MARGIN), 1u << GV_RIGHT_OF);
    /* offset 3.5: (3.5 - 2) / 3.5 = 0.43 -> nothing */
    d[1].x0 = 3.5;
    d[1].x1 = 13.5;
    assert_int_equal(gv_relations(&d[1], &d[0], GV_POSITION_MARGIN), 0u);
    /* diagonal: right of and above at once; "right of" is in the set -> correct */
    d[1] = det("square", "blue", 20, -10, 30, 0, .9);
    assert_int_equal(gv_relations(&d[1], &d[0], GV_POSITION_MARGIN),
                     (1u << GV_RIGHT_OF) | (1u << GV_ABOVE));
    assert_int_equal(gv_score(&m, d, 2, NULL, 0), 1);
    /* image y grows downward: smaller y is "above" */
    gv_det top = det("a", "", 0, 0, 10, 10, 1), bottom = det("b", "", 0, 30, 10, 40, 1);
    assert_int_equal(gv_relations(&top, &bottom, GV_POSITION_MARGIN), 1u << GV_ABOVE);
    assert_int_equal(gv_relations(&bottom, &top, GV_POSITION_MARGIN), 1u << GV_BELOW);
    /* target clause failed -> position clause fails with "no target" */
    gv_det only_square = det("square", "blue", 20, 10, 30, 20, .9);
    assert_int_equal(gv_score(&m, &only_square, 1, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "expected circle>=1, found 0"));
    assert_non_null(strstr(reason, "no target for square to be right of"));
    /* every target object must be satisfied: a second, less confident circle is not in the
     * matched group (count 1), so it does not matter */
    gv_det three[3] = {det("circle", "red", 0, 10, 10, 20, .9),
                       det("square", "b", 20, 10, 30, 20, .9),
                       det("circle", "red", 40, 10, 50, 20, .5)};
    assert_int_equal(gv_score(&m, three, 3, NULL, 0), 1);
    three[2].score = .95; /* now the right-most circle is the target: square is left of it */
    assert_int_equal(gv_score(&m, three, 3, NULL, 0), 0);
}

static void test_summary(void **state) {
    (void)state;
    gv_summary s;
    assert_int_equal(gv_summary_init(&s, 4), SS_OK);
    /* tag a: 3/4 correct, tag b: 0/1 -> overall = (0.75 + 0) / 2 */
    assert_int_equal(gv_summary_add(&s, 0, "a", 1), SS_OK);
    assert_int_equal(gv_summary_add(&s, 0, "a", 0), SS_OK);
    assert_int_equal(gv_summary_add(&s, 1, "a", 1), SS_OK);
    assert_int_equal(gv_summary_add(&s, 1, "a", 1), SS_OK);
    assert_int_equal(gv_summary_add(&s, 2, "b", 0), SS_OK);
    assert_int_equal(gv_summary_add(&s, 4, "b", 0), SS_EARG);
    assert_int_equal(s.n_tags, 2);
    assert_string_equal(s.tag[0], "a");
    assert_true(fabs(gv_summary_tag_accuracy(&s, 0) - 0.75) < 1e-12);
    assert_true(fabs(gv_summary_overall(&s) - 0.375) < 1e-12);
    assert_int_equal(gv_summary_prompts_scored(&s), 3);
    assert_int_equal(gv_summary_prompts_correct(&s), 2);
    char buf[2048];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    gv_summary_print(&s, f);
    fclose(f);
    assert_non_null(strstr(buf, "Overall score (avg. over tasks): 0.37500"));
    assert_non_null(strstr(buf, "% correct images: 60.00%"));
    assert_non_null(strstr(buf, "a                =  75.00% (3 / 4)"));
    gv_summary_free(&s);
}

/* ---- ShapeWorld: captions, vocabulary, sampling -------------------------------------------------
 */

static void check_words_in_vocab(const char *prompt) {
    const char *const *v = sw_vocabulary();
    char buf[GV_PROMPT_MAX];
    snprintf(buf, sizeof buf, "%s", prompt);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
        int found = 0;
        for (int i = 0; v[i]; i++)
            found |= !strcmp(v[i], tok);
        if (!found) fail_msg("word '%s' of '%s' is not in sw_vocabulary()", tok, prompt);
    }
}

static void test_captions(void **state) {
    (void)state;
    static const char *const want[SW_NTAG][2] = {
        {"{\"tag\": \"single_object\", \"include\": [{\"class\": \"circle\", \"count\": 1}], "
         "\"prompt\": \"\"}",
         "a photo of a circle"},
        {"{\"tag\": \"two_object\", \"include\": [{\"class\": \"circle\", \"count\": 1}, "
         "{\"class\": "
         "\"square\", \"count\": 1}], \"prompt\": \"\"}",
         "a photo of a circle and a square"},
        {"{\"tag\": \"counting\", \"include\": [{\"class\": \"triangle\", \"count\": 3}], "
         "\"exclude\": [{\"class\": \"triangle\", \"count\": 4}], \"prompt\": \"\"}",
         "a photo of three triangles"},
        {"{\"tag\": \"colors\", \"include\": [{\"class\": \"circle\", \"count\": 1, \"color\": "
         "\"orange\"}], \"prompt\": \"\"}",
         "a photo of an orange circle"},
        {"{\"tag\": \"position\", \"include\": [{\"class\": \"square\", \"count\": 1}, {\"class\": "
         "\"circle\", \"count\": 1, \"position\": [\"right of\", 0]}], \"prompt\": \"\"}",
         "a photo of a circle right of a square"},
        {"{\"tag\": \"color_attr\", \"include\": [{\"class\": \"circle\", \"count\": 1, \"color\": "
         "\"red\"}, {\"class\": \"square\", \"count\": 1, \"color\": \"blue\"}], \"prompt\": \"\"}",
         "a photo of a red circle and a blue square"},
    };
    for (int t = 0; t < SW_NTAG; t++) {
        gv_meta m = parse(want[t][0]);
        assert_int_equal(sw_make_prompt(&m), SS_OK);
        assert_string_equal(m.prompt, want[t][1]);
    }
    /* random metadata of every tag has GenEval's shape */
    for (int i = 0; i < 600; i++) {
        gv_meta m;
        int tag = i % SW_NTAG;
        assert_int_equal(sw_random_meta(7, (uint64_t)i, tag, &m), SS_OK);
        assert_string_equal(m.tag, sw_tag_name(tag));
        assert_int_equal(strncmp(m.prompt, "a photo of ", 11), 0);
        check_words_in_vocab(m.prompt);
        switch (tag) {
        case SW_COUNTING:
            assert_int_equal(m.n_exclude, 1);
            assert_int_equal(m.exclude[0].count, m.include[0].count + 1);
            assert_true(m.include[0].count >= 2 && m.include[0].count <= 4);
            break;
        case SW_POSITION:
            assert_int_equal(m.include[1].target, 0);
            assert_true(m.include[1].rel >= 0 && m.include[1].rel < GV_NREL);
            assert_string_not_equal(m.include[0].cls, m.include[1].cls);
            break;
        case SW_COLOR_ATTR:
            assert_string_not_equal(m.include[0].color, m.include[1].color);
            assert_string_not_equal(m.include[0].cls, m.include[1].cls);
            break;
        case SW_TWO_OBJECT: assert_string_not_equal(m.include[0].cls, m.include[1].cls); break;
        default: break;
        }
    }
}

static void test_vocabulary(void **state) {
    (void)state;
    const char *const *v = sw_vocabulary();
    int n = 0;
    for (; v[n]; n++) {
        assert_true(strlen(v[n]) > 0);
        for (const char *c = v[n]; *c; c++)
            assert_true(*c >= 'a' && *c <= 'z');
        for (int j = 0; j < n; j++)
            assert_string_not_equal(v[j], v[n]);
    }
    /* every word is used by some caption: collect the words of many captions */
    int *used = calloc((size_t)n, sizeof *used);
    for (int i = 0; i < 3000; i++) {
        gv_meta m;
        assert_int_equal(sw_random_meta(11, (uint64_t)i, i % SW_NTAG, &m), SS_OK);
        char buf[GV_PROMPT_MAX];
        snprintf(buf, sizeof buf, "%s", m.prompt);
        for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " "))
            for (int j = 0; j < n; j++)
                if (!strcmp(v[j], tok)) used[j] = 1;
    }
    for (int j = 0; j < n; j++)
        if (!used[j]) fail_msg("vocabulary word '%s' never used", v[j]);
    free(used);
    for (int c = 0; c < SW_NCOLOR; c++) /* colors are GenEval color words */
        assert_true(strstr("red orange yellow green blue purple pink brown black white",
                           sw_color_name(c)) != NULL);
}

static void test_sampling(void **state) {
    (void)state;
    int tag_count[SW_NTAG] = {0};
    uint8_t a[SW_DEFAULT_SIZE * SW_DEFAULT_SIZE * 3], b[sizeof a];
    for (int i = 0; i < 1200; i++) {
        sw_scene s1, s2;
        gv_meta m1, m2;
        assert_int_equal(sw_sample(3, (uint64_t)i, -1, 32, 32, &s1, &m1), SS_OK);
        assert_int_equal(sw_sample(3, (uint64_t)i, -1, 32, 32, &s2, &m2), SS_OK);
        assert_memory_equal(&s1, &s2, sizeof s1);
        assert_string_equal(m1.prompt, m2.prompt);
        assert_int_equal(sw_render(&s1, a), SS_OK);
        assert_int_equal(sw_render(&s2, b), SS_OK);
        assert_memory_equal(a, b, sizeof a);
        tag_count[sw_tag_from_name(m1.tag)]++;
        assert_int_equal(sw_tag_from_name(m1.tag), i % SW_NTAG);
        /* objects inside the image, sizes 7-12, no overlap (2 px gap), square boxes */
        for (int k = 0; k < s1.n; k++) {
            const sw_object *o = &s1.obj[k];
            int sz = o->x1 - o->x0;
            assert_int_equal(sz, o->y1 - o->y0);
            assert_true(sz >= 7 && sz <= 12);
            assert_true(o->x0 >= 1 && o->y0 >= 1 && o->x1 <= 31 && o->y1 <= 31);
            for (int j = 0; j < k; j++) {
                const sw_object *p = &s1.obj[j];
                int apart = o->x0 >= p->x1 + 2 || p->x0 >= o->x1 + 2 || o->y0 >= p->y1 + 2 ||
                            p->y0 >= o->y1 + 2;
                assert_true(apart);
            }
        }
        /* the ground truth satisfies the metadata */
        gv_det gt[SW_MAX_OBJ];
        sw_scene_dets(&s1, gt);
        assert_int_equal(gv_score(&m1, gt, s1.n, NULL, 0), 1);
    }
    for (int t = 0; t < SW_NTAG; t++)
        assert_int_equal(tag_count[t], 200);
    /* different seeds give different data */
    sw_scene s3;
    gv_meta m3;
    int differ = 0;
    for (int i = 0; i < 20; i++) {
        sw_scene s4;
        gv_meta m4;
        sw_sample(3, (uint64_t)i, -1, 32, 32, &s3, &m3);
        sw_sample(4, (uint64_t)i, -1, 32, 32, &s4, &m4);
        differ += memcmp(&s3, &s4, sizeof s3) != 0;
    }
    assert_true(differ >= 18);
    /* metadata that ShapeWorld cannot satisfy or does not know */
    gv_meta bad =
        parse("{\"tag\": \"single_object\", \"include\": [{\"class\": \"zebra\", \"count\": "
              "1}], \"prompt\": \"p\"}");
    assert_int_equal(sw_scene_for_meta(&bad, 1, 32, 32, &s3), SS_EARG);
    assert_non_null(strstr(ss_err(), "zebra"));
    bad = parse("{\"tag\": \"counting\", \"include\": [{\"class\": \"circle\", \"count\": 5}], "
                "\"prompt\": \"p\"}");
    assert_int_equal(sw_scene_for_meta(&bad, 1, 32, 32, &s3), SS_EARG);
    bad =
        parse("{\"tag\": \"x\", \"include\": [{\"class\": \"circle\", \"count\": 1}], \"exclude\": "
              "[{\"class\": \"circle\", \"count\": 1}], \"prompt\": \"p\"}");
    assert_int_equal(sw_scene_for_meta(&bad, 1, 32, 32, &s3), SS_EARG);
    bad = parse(
        "{\"tag\": \"colors\", \"include\": [{\"class\": \"circle\", \"count\": 1, \"color\": "
        "\"pink\"}], \"prompt\": \"p\"}");
    assert_int_equal(sw_scene_for_meta(&bad, 1, 32, 32, &s3), SS_EARG);
    assert_int_equal(sw_sample(1, 0, -1, 8, 8, &s3, &m3), SS_EARG);
}

static void test_render(void **state) {
    (void)state;
    sw_scene s = {.w = 16, .h = 16, .n = 1};
    s.obj[0] = (sw_object){SW_SQUARE, SW_BLUE, 2, 3, 10, 11, 6, 7};
    uint8_t rgb[16 * 16 * 3];
    assert_int_equal(sw_render(&s, rgb), SS_OK);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            const uint8_t *want =
                (x >= 2 && x < 10 && y >= 3 && y < 11) ? SW_PALETTE[SW_BLUE] : SW_BACKGROUND;
            assert_memory_equal(rgb + 3 * (y * 16 + x), want, 3);
        }
    /* circle: exact area up to anti-aliasing; triangle: half the box; apex up */
    int area[SW_NCLASS];
    for (int c = 0; c < SW_NCLASS; c++) {
        s.obj[0] = (sw_object){c, SW_RED, 0, 0, 16, 16, 8, 8};
        int k = 0;
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
                k += sw_shape_coverage(c, 0, 0, 16, 16, x, y);
        area[c] = k;
    }
    assert_true(abs(area[SW_SQUARE] - 256 * 16) == 0);
    assert_true(fabs(area[SW_CIRCLE] / 16.0 - M_PI * 64) < 3);
    assert_true(fabs(area[SW_TRIANGLE] / 16.0 - 128) < 3);
    assert_true(sw_shape_coverage(SW_TRIANGLE, 0, 0, 16, 16, 0, 0) == 0);
    assert_true(sw_shape_coverage(SW_TRIANGLE, 0, 0, 16, 16, 0, 15) > 0);
    assert_true(sw_shape_coverage(SW_TRIANGLE, 0, 0, 16, 16, 7, 0) > 0);
}

/* ---- detector -----------------------------------------------------------------------------------
 */

enum { COND_CLEAN, COND_NOISE, COND_BLUR, COND_BLUR_NOISE, NCOND };
static const char *const COND_NAMES[NCOND] = {"clean", "noise 8/255", "3x3 box blur",
                                              "blur + noise"};

/* Render n_per_tag scenes per tag, degrade, detect, score. Returns scene accuracy; also checks
 * object-level agreement (class, color, box within 2 px). */
static double detection_accuracy(int cond, int n_per_tag, int size, uint64_t seed,
                                 double *obj_acc) {
    int ok = 0, total = 0, obj_ok = 0, obj_total = 0;
    uint8_t *rgb = malloc((size_t)size * size * 3);
    sw_det d[64];
    gv_det g[64];
    assert_non_null(rgb);
    for (int i = 0; i < n_per_tag * SW_NTAG; i++) {
        sw_scene s;
        gv_meta m;
        assert_int_equal(sw_sample(seed, (uint64_t)i, -1, size, size, &s, &m), SS_OK);
        assert_int_equal(sw_render(&s, rgb), SS_OK);
        if (cond == COND_BLUR || cond == COND_BLUR_NOISE) box_blur3(rgb, size, size);
        if (cond == COND_NOISE || cond == COND_BLUR_NOISE)
            add_noise(rgb, (size_t)size * size * 3, 8);
        int n = sw_detect(rgb, size, size, NULL, d, 64);
        assert_true(n >= 0);
        sw_dets_to_gv(d, n, g);
        char reason[256];
        int c = gv_score(&m, g, n, reason, sizeof reason);
        ok += c;
        total++;
        if (!c && cond == COND_CLEAN) print_message("clean miss: %s: %s\n", m.prompt, reason);
        for (int k = 0; k < s.n; k++) {
            const sw_object *o = &s.obj[k];
            int hit = 0;
            for (int j = 0; j < n && !hit; j++)
                hit = d[j].cls == o->cls && d[j].color == o->color && abs(d[j].x0 - o->x0) <= 2 &&
                      abs(d[j].x1 - o->x1) <= 2 && abs(d[j].y0 - o->y0) <= 2 &&
                      abs(d[j].y1 - o->y1) <= 2;
            obj_ok += hit;
            obj_total++;
        }
        obj_ok -= n > s.n ? n - s.n : 0; /* spurious detections count against */
    }
    free(rgb);
    *obj_acc = (double)obj_ok / obj_total;
    return (double)ok / total;
}

static void test_detect_conditions(void **state) {
    (void)state;
    for (int cond = 0; cond < NCOND; cond++) {
        double obj;
        double acc = detection_accuracy(cond, 100, 32, 1000 + (uint64_t)cond, &obj);
        print_message("32x32 %-13s: %.2f%% of 600 scenes scored correct, %.2f%% of objects exact\n",
                      COND_NAMES[cond], 100 * acc, 100 * obj);
        assert_true(acc >= 0.99);
        assert_true(obj >= 0.99);
        if (cond == COND_CLEAN) assert_true(acc == 1.0);
    }
}

static void test_detect_64(void **state) {
    (void)state;
    for (int cond = 0; cond < NCOND; cond += 3) {
        double obj;
        double acc = detection_accuracy(cond, 20, 64, 77, &obj);
        print_message("64x64 %-13s: %.2f%% of 120 scenes scored correct\n", COND_NAMES[cond],
                      100 * acc);
        assert_true(acc >= 0.99);
    }
}

static void fill_bg(uint8_t *rgb, int w, int h) {
    for (int i = 0; i < w * h; i++)
        memcpy(rgb + 3 * i, SW_BACKGROUND, 3);
}

static void test_detect_rejects(void **state) {
    (void)state;
    uint8_t rgb[32 * 32 * 3];
    sw_det d[8];
    /* empty and noise-only images: nothing */
    fill_bg(rgb, 32, 32);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 0);
    add_noise(rgb, sizeof rgb, 12);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 0);
    /* an upside-down triangle, a diamond and a plus are not ShapeWorld shapes */
    for (int kind = 0; kind < 3; kind++) {
        fill_bg(rgb, 32, 32);
        for (int y = 0; y < 12; y++)
            for (int x = 0; x < 12; x++) {
                double cx = x + 0.5 - 6, cy = y + 0.5 - 6;
                int in = kind == 0   ? fabs(cx) * 2 <= 12 - (y + 0.5)
                         : kind == 1 ? fabs(cx) + fabs(cy) <= 6
                                     : (fabs(cx) <= 2 || fabs(cy) <= 2);
                if (in) memcpy(rgb + 3 * ((y + 10) * 32 + x + 10), SW_PALETTE[SW_RED], 3);
            }
        assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 0);
    }
    /* a 2:1 bar is not a square */
    fill_bg(rgb, 32, 32);
    for (int y = 10; y < 16; y++)
        for (int x = 6; x < 18; x++)
            memcpy(rgb + 3 * (y * 32 + x), SW_PALETTE[SW_GREEN], 3);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 0);
    /* a pink square is a square of no palette color: it counts as a square, not as red */
    fill_bg(rgb, 32, 32);
    const uint8_t pink[3] = {240, 130, 180};
    for (int y = 10; y < 20; y++)
        for (int x = 10; x < 20; x++)
            memcpy(rgb + 3 * (y * 32 + x), pink, 3);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 1);
    assert_int_equal(d[0].cls, SW_SQUARE);
    assert_int_equal(d[0].color, -1);
    gv_det g;
    sw_dets_to_gv(d, 1, &g);
    gv_meta red = parse("{\"tag\": \"colors\", \"include\": [{\"class\": \"square\", \"count\": 1, "
                        "\"color\": \"red\"}], \"prompt\": \"p\"}");
    assert_int_equal(gv_score(&red, &g, 1, NULL, 0), 0);
    /* a faded (darker) red square is still red */
    fill_bg(rgb, 32, 32);
    const uint8_t dark[3] = {170, 70, 70};
    for (int y = 10; y < 20; y++)
        for (int x = 10; x < 20; x++)
            memcpy(rgb + 3 * (y * 32 + x), dark, 3);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 1);
    assert_int_equal(d[0].color, SW_RED);
    assert_int_equal(d[0].cls, SW_SQUARE);
    /* a slightly different background (model drift) is estimated */
    sw_scene s = {.w = 32, .h = 32, .n = 2};
    s.obj[0] = (sw_object){SW_CIRCLE, SW_PURPLE, 3, 3, 12, 12, 7.5, 7.5};
    s.obj[1] = (sw_object){SW_TRIANGLE, SW_YELLOW, 16, 18, 26, 28, 21, 23};
    assert_int_equal(sw_render(&s, rgb), SS_OK);
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(rgb[i] + (i % 3 == 0 ? 12 : 0));
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 8), 2);
    /* capacity: keep the best */
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, d, 1), 1);
    assert_int_equal(sw_detect(rgb, 32, 32, NULL, NULL, 0), 0);
    assert_int_equal(sw_detect(NULL, 32, 32, NULL, d, 8), SS_EARG);
}

/* ---- evaluation set, dataset, folder scoring --------------------------------------------------
 */

static void test_eval_set(void **state) {
    (void)state;
    gv_meta *set = malloc(sizeof *set * SW_EVAL_N);
    assert_non_null(set);
    assert_int_equal(sw_eval_set(set, SW_EVAL_N - 1), SS_EARG);
    assert_int_equal(sw_eval_set(set, SW_EVAL_N), SW_EVAL_N);
    assert_true(SW_EVAL_N >= 96);
    int per_tag[SW_NTAG] = {0}, single[SW_NCLASS] = {0}, count_cls[SW_NCLASS][5] = {{0}};
    int col_cls[SW_NCLASS][SW_NCOLOR] = {{0}}, rel[GV_NREL] = {0}, attr1[SW_NCOLOR] = {0},
        attr2[SW_NCOLOR] = {0}, pos_pair[SW_NCLASS][SW_NCLASS] = {{0}};
    for (int i = 0; i < SW_EVAL_N; i++) {
        const gv_meta *m = &set[i];
        int t = sw_tag_from_name(m->tag);
        assert_int_equal(t, i / SW_EVAL_PER_TAG); /* grouped by tag, GenEval order */
        per_tag[t]++;
        check_words_in_vocab(m->prompt);
        int a = sw_class_from_name(m->include[0].cls);
        int b = m->n_include > 1 ? sw_class_from_name(m->include[1].cls) : -1;
        switch (t) {
        case SW_SINGLE_OBJECT: single[a]++; break;
        case SW_COUNTING: count_cls[a][m->include[0].count]++; break;
        case SW_COLORS: col_cls[a][sw_color_from_name(m->include[0].color)]++; break;
        case SW_POSITION:
            rel[m->include[1].rel]++;
            pos_pair[a][b]++;
            break;
        case SW_COLOR_ATTR:
            attr1[sw_color_from_name(m->include[0].color)]++;
            attr2[sw_color_from_name(m->include[1].color)]++;
            break;
        default: break;
        }
    }
    for (int t = 0; t < SW_NTAG; t++)
        assert_int_equal(per_tag[t], SW_EVAL_PER_TAG);
    for (int c = 0; c < SW_NCLASS; c++) {
        assert_int_equal(single[c], SW_EVAL_PER_TAG / SW_NCLASS);
        for (int k = 2; k <= 4; k++)
            assert_int_equal(count_cls[c][k], SW_EVAL_PER_TAG / 9);
        for (int k = 0; k < SW_NCOLOR; k++)
            assert_int_equal(col_cls[c][k], SW_EVAL_PER_TAG / 18);
        for (int k = 0; k < SW_NCLASS; k++)
            if (k != c) assert_int_equal(pos_pair[c][k], SW_EVAL_PER_TAG / 6);
    }
    for (int r = 0; r < GV_NREL; r++)
        assert_int_equal(rel[r], SW_EVAL_PER_TAG / 4);
    for (int k = 0; k < SW_NCOLOR; k++) {
        assert_int_equal(attr1[k], SW_EVAL_PER_TAG / 6);
        assert_int_equal(attr2[k], SW_EVAL_PER_TAG / 6);
    }
    /* every prompt can be rendered and is then scored correct */
    uint8_t rgb[32 * 32 * 3];
    for (int i = 0; i < SW_EVAL_N; i++) {
        sw_scene s;
        assert_int_equal(sw_render_meta(&set[i], (uint64_t)i, 32, 32, rgb, &s), SS_OK);
        sw_det d[16];
        gv_det g[16];
        int n = sw_detect(rgb, 32, 32, NULL, d, 16);
        sw_dets_to_gv(d, n, g);
        assert_int_equal(gv_score(&set[i], g, n, NULL, 0), 1);
    }
    free(set);

    /* the shipped file is this generator's output, byte for byte */
    char p[256];
    tmp_path(p, sizeof p, "eval.jsonl");
    assert_int_equal(sw_write_eval_jsonl(p), SS_OK);
    const char *shipped = "data/shapeworld_eval.jsonl";
    if (getenv("SINKSCOPE_REGEN_EVAL")) assert_int_equal(sw_write_eval_jsonl(shipped), SS_OK);
    size_t n1, n2;
    char *gen = tc_read_all(p, &n1), *file = tc_read_all(shipped, &n2);
    if (!file) fail_msg("cannot read %s (run the test from the repository root)", shipped);
    assert_int_equal(n1, n2);
    assert_memory_equal(gen, file, n1);
    free(gen);
    free(file);
    gv_meta *loaded;
    int nl;
    assert_int_equal(gv_load_jsonl(shipped, &loaded, &nl), SS_OK);
    assert_int_equal(nl, SW_EVAL_N);
    free(loaded);
}

static void test_dataset_and_score_dir(void **state) {
    (void)state;
    char dir[256], meta[300], p[400];
    tmp_path(dir, sizeof dir, "train");
    assert_int_equal(sw_write_dataset(dir, 5, 30, 32, 32), SS_OK);
    snprintf(meta, sizeof meta, "%s/metadata.jsonl", dir);
    gv_meta *m;
    int n;
    assert_int_equal(gv_load_jsonl(meta, &m, &n), SS_OK);
    assert_int_equal(n, 30);
    /* image 7 equals sw_sample(5, 7) and carries its caption */
    sw_scene s;
    gv_meta m7;
    uint8_t want[32 * 32 * 3];
    assert_int_equal(sw_sample(5, 7, -1, 32, 32, &s, &m7), SS_OK);
    assert_int_equal(sw_render(&s, want), SS_OK);
    assert_string_equal(m[7].prompt, m7.prompt);
    snprintf(p, sizeof p, "%s/00007_0.png", dir);
    int w, h;
    uint8_t *rgb;
    assert_int_equal(png_read_rgb(p, &w, &h, &rgb), SS_OK);
    assert_memory_equal(rgb, want, sizeof want);
    free(rgb);
    char *v;
    assert_int_equal(png_read_text(p, "prompt", &v), SS_OK);
    assert_string_equal(v, m7.prompt);
    free(v);
    assert_int_equal(png_read_text(p, "metadata", &v), SS_OK);
    gv_meta back;
    assert_int_equal(gv_parse_line(v, p, 1, &back), SS_OK);
    assert_string_equal(back.prompt, m7.prompt);
    free(v);

    /* the rendered training set scores 100% */
    sw_score_report rep;
    assert_int_equal(sw_score_dir(dir, meta, NULL, &rep), SS_OK);
    assert_int_equal(rep.n_img, 30);
    assert_int_equal(rep.sum.images_correct, 30);
    assert_true(fabs(gv_summary_overall(&rep.sum) - 1.0) < 1e-12);
    sw_score_report_free(&rep);

    /* replace one image by another prompt's image: that one becomes wrong */
    char q[400];
    snprintf(q, sizeof q, "%s/00001_0.png", dir); /* two_object prompt */
    snprintf(p, sizeof p, "%s/00000_0.png", dir); /* single_object image */
    size_t len;
    char *bytes = tc_read_all(p, &len);
    FILE *f = fopen(q, "wb");
    fwrite(bytes, 1, len, f);
    fclose(f);
    free(bytes);
    /* a second sample of prompt 0, plus files that do not follow the convention */
    snprintf(q, sizeof q, "%s/00000_17.png", dir);
    f = fopen(q, "wb");
    bytes = tc_read_all(p, &len);
    fwrite(bytes, 1, len, f);
    fclose(f);
    free(bytes);
    snprintf(q, sizeof q, "%s/notes.txt", dir);
    assert_int_equal(tc_write_text(q, "ignored"), 0);
    snprintf(q, sizeof q, "%s/12_0.png", dir);
    assert_int_equal(tc_write_text(q, "ignored: fewer than 5 digits"), 0);
    assert_int_equal(sw_score_dir(dir, meta, NULL, &rep), SS_OK);
    assert_int_equal(rep.n_img, 31);
    assert_int_equal(rep.sum.images_correct, 30);
    assert_int_equal(rep.img[1].index, 0);
    assert_int_equal(rep.img[1].sample, 17);
    assert_int_equal(rep.img[2].correct, 0);
    assert_int_equal(gv_summary_prompts_scored(&rep.sum), 30);
    assert_int_equal(gv_summary_prompts_correct(&rep.sum), 29);
    /* two_object: 4 of 5 right; overall = mean over the 6 tags */
    for (int t = 0; t < rep.sum.n_tags; t++)
        if (!strcmp(rep.sum.tag[t], "two_object"))
            assert_true(fabs(gv_summary_tag_accuracy(&rep.sum, t) - 0.8) < 1e-12);
    double expect = (1.0 + 0.8 + 4) / 6;
    assert_true(fabs(gv_summary_overall(&rep.sum) - expect) < 1e-12);
    char js[300];
    tmp_path(js, sizeof js, "report.json");
    assert_int_equal(sw_score_write_json(&rep, js), SS_OK);
    char *txt = tc_read_all(js, &len);
    assert_non_null(strstr(txt, "\"overall\""));
    assert_non_null(strstr(txt, "\"00001_0.png\""));
    assert_non_null(strstr(txt, "expected "));
    free(txt);
    sw_score_report_free(&rep);

    /* errors: image index without prompt, missing folder, unreadable image, no images */
    snprintf(q, sizeof q, "%s/00030_0.png", dir);
    f = fopen(q, "wb");
    bytes = tc_read_all(p, &len);
    fwrite(bytes, 1, len, f);
    fclose(f);
    free(bytes);
    assert_int_equal(sw_score_dir(dir, meta, NULL, &rep), SS_EARG);
    assert_non_null(strstr(ss_err(), "00030_0.png"));
    remove(q);
    snprintf(q, sizeof q, "%s/00002_0.png", dir);
    assert_int_equal(tc_write_text(q, "garbage"), 0);
    assert_int_equal(sw_score_dir(dir, meta, NULL, &rep), SS_EFORMAT);
    assert_non_null(strstr(ss_err(), "00002_0.png"));
    tmp_path(q, sizeof q, "nowhere");
    assert_int_equal(sw_score_dir(q, meta, NULL, &rep), SS_EIO);
    assert_non_null(strstr(ss_err(), "nowhere"));
    tmp_path(q, sizeof q, "empty");
    mkdir(q, 0777);
    assert_int_equal(sw_score_dir(q, meta, NULL, &rep), SS_EMISSING);
    assert_int_equal(sw_score_dir(dir, "/nonexistent/prompts.jsonl", NULL, &rep), SS_EIO);
    assert_non_null(strstr(ss_err(), "prompts.jsonl"));
    free(m);

    int idx;
    uint64_t smp;
    assert_int_equal(sw_score_parse_name("00012_3.png", &idx, &smp), 0);
    assert_int_equal(idx, 12);
    assert_int_equal(smp, 3);
    assert_int_equal(sw_score_parse_name("123456_0.png", &idx, &smp), 0);
    assert_int_equal(idx, 123456);
    assert_int_equal(sw_score_parse_name("0012_3.png", &idx, &smp), -1);
    assert_int_equal(sw_score_parse_name("00012_.png", &idx, &smp), -1);
    assert_int_equal(sw_score_parse_name("00012_3.png.tmp", &idx, &smp), -1);
    assert_int_equal(sw_score_parse_name("00012_3.jpg", &idx, &smp), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_roundtrip),
        cmocka_unit_test(test_png_errors),
        cmocka_unit_test(test_png_read_any),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_geneval_file_roundtrip),
        cmocka_unit_test(test_score_counting),
        cmocka_unit_test(test_score_colors),
        cmocka_unit_test(test_score_color_attr_and_two_object),
        cmocka_unit_test(test_score_position),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_captions),
        cmocka_unit_test(test_vocabulary),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_detect_conditions),
        cmocka_unit_test(test_detect_64),
        cmocka_unit_test(test_detect_rejects),
        cmocka_unit_test(test_eval_set),
        cmocka_unit_test(test_dataset_and_score_dir),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
