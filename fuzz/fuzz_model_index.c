/* libFuzzer target for the sharded-checkpoint index (diffusion_pytorch_model.safetensors.index.json):
 * the input is written as the index of a model folder holding a few real shards (one in a
 * subfolder), next to a valid shard lying outside the folder, and the folder is opened with
 * st_set_open, as sd3_load does.
 *
 * Contract checked: ASan/UBSan clean; a refused index gets a one-line message naming the index
 * file; an accepted one only ever opened shards inside the folder (no tensor comes from the
 * outside shard, no path has a ".." component), every weight_map entry is found in the set, and
 * every tensor converts. Build with `make fuzz`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"

static char g_root[64], g_dir[128], g_index[192];

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (g_root[0] && system(cmd) != 0) fprintf(stderr, "fuzz_model_index: could not remove %s\n", g_root);
}

static void shard(const char *rel, const char *n1, const char *n2) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    const float v[4] = {1, 2, 3, 4};
    st_writer *w = st_writer_new();
    if (!w || st_writer_add_f32(w, n1, ST_F32, 1, (int64_t[]){4}, v) < 0 ||
        (n2 && st_writer_add_f32(w, n2, ST_BF16, 2, (int64_t[]){2, 2}, v) < 0) || st_writer_save(w, path) < 0) {
        fprintf(stderr, "fuzz_model_index: %s\n", ss_err());
        abort();
    }
    st_writer_free(w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_root, access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_index_XXXXXX" : "/tmp/fuzz_index_XXXXXX");
    if (!mkdtemp(g_root)) abort();
    atexit(cleanup);
    snprintf(g_dir, sizeof g_dir, "%s/model", g_root);
    char sub[160];
    snprintf(sub, sizeof sub, "%s/sub", g_dir);
    if (mkdir(g_dir, 0700) || mkdir(sub, 0700)) abort();
    shard("s-00001.safetensors", "a", "b");
    shard("s-00002.safetensors", "c", NULL);
    shard("sub/s-00003.safetensors", "d", NULL);
    shard("../outside.safetensors", "secret", "a"); /* must never be opened */
    snprintf(g_index, sizeof g_index, "%s/diffusion_pytorch_model.safetensors.index.json", g_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_index, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    st_set *s = (st_set *)1;
    ss_err_clear();
    if (st_set_open(&s, g_dir) < 0) {
        if (s) abort();
        const char *msg = ss_err();
        if (strncmp(msg, g_index, strlen(g_index)) != 0 && strncmp(msg, "out of memory", 13) != 0) abort();
        if (strchr(msg, '\n')) abort();
        return 0;
    }
    const size_t dl = strlen(g_dir);
    for (int i = 0; i < st_set_count(s); i++) {
        const st_tensor *t = st_set_get(s, i);
        if (strncmp(t->file, g_dir, dl) != 0 || t->file[dl] != '/' || strstr(t->file, "/../") ||
            !strcmp(t->name, "secret"))
            abort(); /* a shard from outside the folder */
        if (st_set_find(s, t->name) != t) abort();
        float buf[4];
        if (t->numel > 4 || st_to_f32(buf, t) < 0) abort();
    }
    st_set_close(s);
    return 0;
}
