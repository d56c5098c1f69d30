/* libFuzzer target for StableDiffusion3Pipeline folders (sample/sd3pipe): the input is written as
 * the model_index.json of a folder whose components link to tests/fixtures/sd3-pipeline-tiny
 * (run from the repository root); the folder is loaded with the transformer deferred, as
 * `generate` does (every component's folder is the one named by its key).
 *
 * Contract checked: ASan/UBSan clean; a refused folder gets a one-line message naming the folder
 * or its model_index.json; an accepted one is consistent (VAE latent channels = transformer
 * in_channels, T5 present exactly when its tokenizer is). Build with `make fuzz`. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "sample/sd3pipe.h"

static char g_root[64], g_index[128];

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (g_root[0] && system(cmd) != 0) fprintf(stderr, "fuzz_sd3_index: could not remove %s\n", g_root);
}

static void link_to(const char *target, const char *name) {
    char src[PATH_MAX], dst[256];
    if (!realpath(target, src)) {
        fprintf(stderr, "fuzz_sd3_index: run from the repository root (%s is missing)\n", target);
        abort();
    }
    snprintf(dst, sizeof dst, "%s/%s", g_root, name);
    if (symlink(src, dst)) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_root, access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_sd3_XXXXXX" : "/tmp/fuzz_sd3_XXXXXX");
    if (!mkdtemp(g_root)) abort();
    atexit(cleanup);
    static const char *const comps[] = {"transformer", "vae", "scheduler", "text_encoder", "text_encoder_2",
                                        "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3"};
    char t[256];
    for (size_t i = 0; i < sizeof comps / sizeof comps[0]; i++) {
        snprintf(t, sizeof t, "tests/fixtures/sd3-pipeline-tiny/%s", comps[i]);
        link_to(t, comps[i]);
    }
    snprintf(g_index, sizeof g_index, "%s/model_index.json", g_root);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_index, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    sd3pipe *p;
    if (sd3pipe_load_opts(&p, g_root, SD3PIPE_DEFER_TRANSFORMER) < 0) {
        const char *e = ss_err();
        if (!e[0] || strchr(e, '\n') || !strstr(e, g_root)) {
            fprintf(stderr, "fuzz_sd3_index: bad error message: '%s'\n", e);
            abort();
        }
        return 0;
    }
    if (p->vae->cfg.latent_channels != p->tcfg.in_channels || (p->has_t5 != (p->tok[2] != NULL)) ||
        (p->has_t5 != (p->enc[2] != NULL)))
        abort();
    sd3pipe_free(p);
    return 0;
}
